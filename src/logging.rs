//! Log and progress output: human-readable lines on stderr (level from `-v`), a complete debug log
//! in `OUTPUT_DIR/logs/`, and an indicatif progress bar when stderr is a terminal (log lines are
//! printed above it, never through it). On a pipe or in a batch job there is no bar: every finished
//! file is logged as a plain line instead.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn active_bar() -> Option<ProgressBar> {
    BAR.get()
        .and_then(|m| m.lock().ok().and_then(|b| b.clone()))
}

/// Stderr that pauses the progress bar while a log line is written.
struct BarAwareStderr;

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match active_bar() {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

struct StderrMaker;

impl<'a> MakeWriter<'a> for StderrMaker {
    type Writer = BarAwareStderr;
    fn make_writer(&'a self) -> Self::Writer {
        BarAwareStderr
    }
}

/// Why the logger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `HCLD_LOG` is not a filter (a usage error).
    #[error("HCLD_LOG '{0}' is not a log filter: {1}")]
    Filter(String, String),
    /// A logger was installed already.
    #[error("logger already installed: {0}")]
    Installed(String),
}

/// Installs the global logger: stderr at `info`/`debug`/`trace` for verbosity 0/1/2+ (info by
/// default, so batch logs show each file), and, when `log_file` is given, a debug-level copy there.
/// `HCLD_LOG` (an `EnvFilter` string such as `hcld=debug`) overrides the stderr level.
pub fn init(verbosity: u8, log_file: Option<std::fs::File>) -> Result<(), LoggingError> {
    let level = match verbosity {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let stderr_filter = match std::env::var("HCLD_LOG") {
        Ok(s) => {
            EnvFilter::try_new(&s).map_err(|e| LoggingError::Filter(s.clone(), e.to_string()))?
        }
        Err(_) => EnvFilter::default()
            .add_directive(LevelFilter::WARN.into())
            .add_directive(
                format!("hcld={level}")
                    .parse()
                    .map_err(|e| LoggingError::Filter(format!("hcld={level}"), format!("{e}")))?,
            ),
    };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(StderrMaker)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(stderr_filter);
    let file_layer = log_file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(Mutex::new(f))
            .with_ansi(false)
            .with_target(false)
            .with_filter(LevelFilter::DEBUG)
    });
    tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .map_err(|e| LoggingError::Installed(e.to_string()))
}

/// Progress over a known number of jobs: a bar on a terminal, nothing otherwise (callers log
/// each finished job, which is what batch logs need).
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts progress over `len` jobs.
    pub fn new(len: u64, what: &str) -> Progress {
        if !std::io::stderr().is_terminal() || len == 0 {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(len);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {wide_msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        if let Ok(mut slot) = BAR.get_or_init(|| Mutex::new(None)).lock() {
            *slot = Some(bar.clone());
        }
        Progress { bar: Some(bar) }
    }

    /// Marks one job finished.
    pub fn inc(&self, message: &str) {
        if let Some(b) = &self.bar {
            b.set_message(message.to_string());
            b.inc(1);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            if let Some(Ok(mut slot)) = BAR.get().map(|m| m.lock()) {
                *slot = None;
            }
        }
    }
}
