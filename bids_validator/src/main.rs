//! `bids-validator-rs DATASET`: validate a BIDS dataset against the embedded BIDS schema.
//! Exit 0 when valid, 16 when there are errors (the BIDS-App code), 64 on usage errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Validate a BIDS dataset against the official BIDS schema (embedded).
#[derive(Parser)]
#[command(name = "bids-validator-rs", version)]
struct Args {
    /// The dataset root.
    dataset: PathBuf,
    /// Print the report as JSON (shaped like `bids-validator-deno --format json`).
    #[arg(long)]
    json: bool,
    /// Issue configuration: {"ignore": [{"code": "EMPTY_FILE"}], "warning": [...], "error": [...]}.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also validate derivative datasets under derivatives/.
    #[arg(short, long)]
    recursive: bool,
    /// Do not read NIfTI headers.
    #[arg(long = "ignore-nifti-headers", alias = "ignoreNiftiHeaders")]
    ignore_nifti_headers: bool,
    /// Print errors only.
    #[arg(long = "ignore-warnings", alias = "ignoreWarnings")]
    ignore_warnings: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    let config = match args
        .config
        .as_deref()
        .map(bids_validator::Config::read)
        .transpose()
    {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            eprintln!("bids-validator-rs: {e}");
            return ExitCode::from(64);
        }
    };
    let options = bids_validator::Options {
        recursive: args.recursive,
        ignore_nifti_headers: args.ignore_nifti_headers,
        config,
    };
    let report = match bids_validator::validate(&args.dataset, &options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bids-validator-rs: {e}");
            return ExitCode::from(66);
        }
    };
    // Write errors (a closed pipe, e.g. `| head`) end the output quietly; the exit code stands.
    let _ = print_report(&report, args.json, args.ignore_warnings);
    ExitCode::from(if report.errors().is_empty() { 0 } else { 16 })
}

fn print_report(
    report: &bids_validator::Report,
    json: bool,
    ignore_warnings: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        report.write_json(&mut out)?;
        writeln!(out)?;
        return out.flush();
    }
    let errors = report.errors();
    let warnings = report.warnings();
    let shown = errors.iter().chain(if ignore_warnings {
        [].iter()
    } else {
        warnings.iter()
    });
    for i in shown {
        let sub = i
            .sub_code
            .as_deref()
            .map(|s| format!(" [{s}]"))
            .unwrap_or_default();
        writeln!(
            out,
            "{:?} {}{sub} {}: {} {}",
            i.severity,
            i.code,
            i.location.as_deref().unwrap_or("/"),
            i.message.lines().next().unwrap_or(""),
            i.hint
        )?;
    }
    writeln!(
        out,
        "{} errors, {} warnings ({} files)",
        errors.len(),
        warnings.len(),
        report.summary.total_files
    )?;
    out.flush()
}
