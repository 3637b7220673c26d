//! The command line: the clap types ([`Args`], mirroring the BIDS-App contract) and their
//! validation into the [`Settings`](crate::settings::Settings) the pipeline runs with
//! ([`settings`]). Nothing below the binary imports this module.

mod args;
mod build;

pub use args::{Args, ConfigSource, MethodChoice};
pub use build::settings;

use clap::Parser;

use crate::settings::ExitStatus;

/// Parses a binary's command line; on `--help`/`--version` or a usage error prints clap's message
/// and gives the exit code to return (0, or 64 for bad usage).
pub fn parse_command_line<P: Parser>() -> Result<P, std::process::ExitCode> {
    P::try_parse().map_err(|e| {
        let _ = e.print();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                std::process::ExitCode::SUCCESS
            }
            _ => std::process::ExitCode::from(ExitStatus::Usage.code()),
        }
    })
}
