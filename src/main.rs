//! The `hcld` binary: parse the command line, run the requested level, map the outcome to an exit
//! code. Everything else lives in the library.

use std::process::ExitCode;

use anyhow::Context;

use hcld::cli::{self, Args};
use hcld::pipeline::{self, PipelineError};
use hcld::settings::{ExitStatus, MAX_THREADS_PER_CPU, SettingsError};

fn main() -> ExitCode {
    let args: Args = match hcld::cli::parse_command_line() {
        Ok(a) => a,
        Err(code) => return code,
    };
    match run(&args) {
        Ok(status) => ExitCode::from(status.code()),
        Err(e) => {
            eprintln!("hcld: error: {e:#}");
            ExitCode::from(status_of(&e).code())
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitStatus> {
    let settings = cli::settings(args)?;
    pipeline::install_signal_handlers().context("cannot install signal handlers")?;
    let (out, log_file, log) = pipeline::prepare_output(&settings)?;
    hcld::logging::init(settings.resources.verbosity, Some(log)).map_err(|e| {
        let status = match e {
            hcld::logging::LoggingError::Filter(..) => ExitStatus::Usage,
            hcld::logging::LoggingError::Installed(_) => ExitStatus::IoError,
        };
        SettingsError {
            status,
            message: e.to_string(),
        }
    })?;
    tracing::info!(
        "hcld {} {}",
        hcld::VERSION,
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    tracing::debug!("settings: {settings:?}");
    if let Some(asked) = args.nprocs
        && asked > settings.resources.nprocs
    {
        tracing::warn!(
            "--nprocs {asked}: using {} threads, {} per CPU this process may use (more only add overhead)",
            settings.resources.nprocs,
            MAX_THREADS_PER_CPU
        );
    }
    let summary = pipeline::run(&settings, &out).context("run stopped")?;
    let failed = summary.failures().count();
    let total = summary.reports.len();
    for (job, e) in summary.failures() {
        tracing::error!("failed: sub-{}: {e}", job.subject());
    }
    let status = summary.exit_status();
    if failed == 0 {
        tracing::info!(
            "done: {total} of {total} succeeded; outputs in {}",
            out.root().display()
        );
    } else {
        let others = match total - failed {
            0 => "none completed".to_string(),
            n => format!("the other {n} completed"),
        };
        tracing::error!(
            "{failed} of {total} failed (exit {}); {others}; log: {}",
            status.code(),
            log_file.display()
        );
    }
    Ok(status)
}

/// The exit status of a run-stopping error: the first typed error in the chain decides.
fn status_of(e: &anyhow::Error) -> ExitStatus {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<SettingsError>() {
            return c.status;
        }
        if let Some(p) = cause.downcast_ref::<PipelineError>() {
            return p.exit_status();
        }
    }
    ExitStatus::IoError
}
