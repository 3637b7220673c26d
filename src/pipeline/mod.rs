//! The participant and group levels: build the job list from the BIDS index, run jobs in parallel
//! (bounded by `--nprocs`, `--omp-nthreads` and `--mem`), skip outputs that are already current,
//! and return one outcome per job as a value. Printing the summary and choosing the exit code is
//! the caller's business ([`RunSummary::exit_status`] gives the code the BIDS execution spec wants).

mod evaluate;
mod group;
mod harmonize;
mod items;
mod jobs;
mod outputs;
mod participant;
mod reports;
mod reuse;

pub use jobs::{Job, select_jobs};
pub use outputs::preproc_name;
pub use participant::JobError;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::bids::{BidsError, IndexOptions, Layout};
use crate::derivatives::{DerivativesDataset, DerivativesError, SourceDataset};
use crate::logging::Progress;
use crate::methods::MethodError;
use crate::settings::{AnalysisLevel, ExitStatus, Settings};

/// Memory one subject needs at most today (a 1 mm 256³ volume in several f32 copies), in MB; used
/// to bound concurrency under `--mem`.
const MB_PER_SUBJECT: u64 = 1000;

/// A failure that stops the whole run (as opposed to one subject).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input dataset could not be indexed or failed validation.
    #[error(transparent)]
    Input(#[from] BidsError),
    /// Labels or filters selected nothing.
    #[error("{0}")]
    NothingSelected(String),
    /// The input is not a usable BIDS dataset (found after indexing).
    #[error("{0}")]
    Invalid(String),
    /// OUTPUT_DIR could not be prepared.
    #[error(transparent)]
    Output(#[from] DerivativesError),
    /// The thread pool could not start.
    #[error("cannot start worker threads: {0}")]
    Threads(String),
    /// A method's run-wide step (its model, target, landmarks, training) failed.
    #[error(transparent)]
    Method(MethodError),
    /// No image was preprocessed, so the group level has nothing to fit.
    #[error("no image was preprocessed successfully; nothing to fit (see the errors above)")]
    NothingPreprocessed,
    /// The evaluation cannot be computed (its message names the file and the fix).
    #[error("{0}")]
    Evaluation(String),
    /// A figure of the group report cannot be drawn.
    #[error("group report: {0}")]
    Report(String),
    /// Ctrl-C or SIGTERM.
    #[error(
        "interrupted; finished outputs and training checkpoints are kept, run the same command again to resume"
    )]
    Interrupted,
}

impl From<MethodError> for PipelineError {
    fn from(e: MethodError) -> Self {
        match e {
            MethodError::Output(e) => PipelineError::Output(e),
            MethodError::Interrupted => PipelineError::Interrupted,
            other => PipelineError::Method(other),
        }
    }
}

impl PipelineError {
    /// The exit status for this failure.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            PipelineError::Input(BidsError::NoDataset { .. }) => ExitStatus::NoInput,
            PipelineError::Input(e) if e.is_io() => ExitStatus::IoError,
            PipelineError::Input(_) => ExitStatus::InvalidInput,
            PipelineError::NothingSelected(_) => ExitStatus::NothingSelected,
            PipelineError::Invalid(_) => ExitStatus::InvalidInput,
            PipelineError::Output(
                DerivativesError::Write { .. } | DerivativesError::Elsewhere { .. },
            ) => ExitStatus::IoError,
            PipelineError::Output(_) => ExitStatus::CannotCreate,
            PipelineError::Threads(_) => ExitStatus::IoError,
            PipelineError::Method(e) => e.exit_status(),
            PipelineError::NothingPreprocessed => ExitStatus::SomeFailed,
            PipelineError::Evaluation(_) => ExitStatus::DataError,
            PipelineError::Report(_) => ExitStatus::CannotCreate,
            PipelineError::Interrupted => ExitStatus::Interrupted,
        }
    }
}

/// What happened to one job.
#[derive(Debug)]
pub enum Outcome {
    /// Outputs were written.
    Written(Vec<PathBuf>),
    /// Outputs were already complete for the same input, parameters and version.
    UpToDate(Vec<PathBuf>),
    /// The job failed; others went on.
    Failed(JobError),
    /// Not started, because an earlier job failed under `--stop-on-first-crash`.
    NotRun,
}

/// One job's report.
#[derive(Debug)]
pub struct JobReport {
    /// The job.
    pub job: Job,
    /// Its outcome.
    pub outcome: Outcome,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunSummary {
    /// One report per job, in job order.
    pub reports: Vec<JobReport>,
    /// Whether `--stop-on-first-crash` was set.
    pub stop_on_first_crash: bool,
}

impl RunSummary {
    /// Jobs that failed.
    pub fn failures(&self) -> impl Iterator<Item = (&Job, &JobError)> {
        self.reports.iter().filter_map(|r| match &r.outcome {
            Outcome::Failed(e) => Some((&r.job, e)),
            _ => None,
        })
    }

    /// 0 when nothing failed; 1 when any job failed (the BIDS-App rule: the others completed or
    /// were tried); under `--stop-on-first-crash`, the failure's own code (65 bad data, 74 I/O, ...).
    pub fn exit_status(&self) -> ExitStatus {
        match self.failures().next() {
            None => ExitStatus::Success,
            Some((_, first)) if self.stop_on_first_crash => first.exit_status(),
            Some(_) => ExitStatus::SomeFailed,
        }
    }
}

/// Opens OUTPUT_DIR as hcld's derivatives dataset, creates the work directory, and creates this
/// run's log file (`logs/hcld_<level>_<UTC time>_<random>.log`).
pub fn prepare_output(
    settings: &Settings,
) -> Result<(DerivativesDataset, PathBuf, std::fs::File), PipelineError> {
    let name = crate::bids::DatasetDescription::read(&settings.paths.bids_dir)
        .map(|d| d.name)
        .unwrap_or_default();
    let source = SourceDataset {
        root: settings.paths.bids_dir.clone(),
        name,
    };
    let out = DerivativesDataset::open(&settings.paths.output_dir, &source)?;
    crate::derivatives::prepare_work_dir(
        &settings.paths.work_dir,
        settings.paths.work_dir_is_default,
    )?;
    let (log_path, log_file) = out.create_log(settings.level.name())?;
    Ok((out, log_path, log_file))
}

/// Runs the analysis level in `settings`, writing into `out`.
pub fn run(settings: &Settings, out: &DerivativesDataset) -> Result<RunSummary, PipelineError> {
    let options = IndexOptions {
        derivatives: settings.paths.derivatives.clone(),
        exclude: vec![settings.paths.output_dir.clone()],
        strict: !settings.selection.skip_validation,
    };
    let started = std::time::Instant::now();
    // Indexing walks subject folders in parallel: keep it within --nprocs too.
    let index_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(settings.resources.nprocs)
        .build()
        .map_err(|e| PipelineError::Threads(e.to_string()))?;
    if !settings.selection.skip_validation {
        index_pool.install(|| validate_input(settings))?;
    }
    let layout = index_pool.install(|| Layout::index(&settings.paths.bids_dir, &options))?;
    tracing::info!(
        "indexed {} ({} files, {} subjects, {} derivative datasets) in {:.2} s",
        settings.paths.bids_dir.display(),
        layout.files().len(),
        layout.subjects().len(),
        layout.derivatives().len(),
        started.elapsed().as_secs_f64()
    );
    for w in layout.warnings() {
        tracing::warn!("{w}");
    }
    let jobs = select_jobs(&layout, &settings.selection)?;
    let stop = stop_flag();
    let result = match settings.level {
        AnalysisLevel::Participant => {
            // Load what every job shares first: a missing model or target fails the run at once.
            let setup = harmonize::prepare(settings, out, &stop)?;
            let summary = run_jobs(settings, &jobs, "participant", &stop, |job| {
                let pre = participant::preprocess(job, &layout, settings, out)?;
                let (paths, written) = harmonize::apply(job, settings, out, &setup, &stop)?;
                Ok(match pre {
                    Outcome::Written(mut p) => {
                        p.extend(paths);
                        Outcome::Written(p)
                    }
                    Outcome::UpToDate(mut p) => {
                        p.extend(paths);
                        if written {
                            Outcome::Written(p)
                        } else {
                            Outcome::UpToDate(p)
                        }
                    }
                    other => other,
                })
            })?;
            write_subject_reports(&summary, settings, out);
            Ok(summary)
        }
        AnalysisLevel::Group => {
            let summary = run_jobs(settings, &jobs, "preprocess", &stop, |job| {
                participant::preprocess(job, &layout, settings, out)
            })?;
            if stop.load(Ordering::SeqCst) {
                return Err(PipelineError::Interrupted);
            }
            group::fit_and_report(summary, &layout, settings, out, &stop)
        }
    };
    if stop.load(Ordering::SeqCst) {
        return Err(PipelineError::Interrupted);
    }
    result
}

/// The process-wide stop flag, raised by Ctrl-C or SIGTERM once [`install_signal_handlers`] ran.
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// SIGINT and SIGTERM raise [`stop_flag`]: running steps finish or stop at their next check
/// (between jobs, between DDIM steps, at training checkpoints), nothing half-written is left,
/// and the run exits with 130. A second signal exits at once (the temporaries a kill leaves are
/// hidden and removed by the next run).
pub fn install_signal_handlers() -> std::io::Result<()> {
    let flag = stop_flag();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            sig,
            ExitStatus::Interrupted.code() as i32,
            flag.clone(),
        )?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

/// `sub-<L>.html` for every subject with at least one image that did not fail.
fn write_subject_reports(summary: &RunSummary, settings: &Settings, out: &DerivativesDataset) {
    let mut by_subject: std::collections::BTreeMap<&str, Vec<&Job>> =
        std::collections::BTreeMap::new();
    for r in &summary.reports {
        if matches!(r.outcome, Outcome::Written(_) | Outcome::UpToDate(_)) {
            by_subject.entry(r.job.subject()).or_default().push(&r.job);
        }
    }
    for (subject, jobs) in by_subject {
        // Reports are for people; a failure to write one is logged, not fatal.
        let all: Vec<&Job> = summary
            .reports
            .iter()
            .map(|r| &r.job)
            .filter(|j| j.subject() == subject)
            .collect();
        let _ = jobs;
        match reports::subject(subject, &all, settings, out) {
            Ok(p) => tracing::info!("sub-{subject}: report {}", p.display()),
            Err(e) => tracing::warn!("sub-{subject}: no report: {e}"),
        }
    }
}

/// Validates BIDS_DIR with the schema-driven validator: errors stop the run (exit 16) with each
/// listed (file, code, what to do); warnings are summarised.
fn validate_input(settings: &Settings) -> Result<(), PipelineError> {
    let started = std::time::Instant::now();
    let config = match &settings.paths.validator_config {
        Some(p) => {
            bids_validator::Config::read(p).map_err(|e| PipelineError::Invalid(e.to_string()))?
        }
        None => bids_validator::Config::default(),
    };
    let options = bids_validator::Options {
        config,
        ..Default::default()
    };
    let report = bids_validator::validate(&settings.paths.bids_dir, &options)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    let errors = report.errors();
    let warnings = report.warnings();
    let mut by_code: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for w in &warnings {
        *by_code.entry(w.code.as_str()).or_default() += 1;
        tracing::debug!(
            "BIDS validator warning: {} {}: {}",
            w.code,
            w.location.as_deref().unwrap_or("/"),
            w.message
        );
    }
    tracing::info!(
        "BIDS validation of {} ({} files, schema {}): {} errors, {} warnings in {:.2} s",
        settings.paths.bids_dir.display(),
        report.summary.total_files,
        report.summary.schema_version,
        errors.len(),
        warnings.len(),
        started.elapsed().as_secs_f64()
    );
    if !by_code.is_empty() {
        let list: Vec<String> = by_code.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
        tracing::warn!(
            "BIDS validator warnings (details at -v): {}",
            list.join(", ")
        );
    }
    if errors.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 20;
    for e in errors.iter().take(SHOWN) {
        let field = e
            .sub_code
            .as_deref()
            .map(|s| format!(" [{s}]"))
            .unwrap_or_default();
        tracing::error!(
            "{}{}: {}{field}: {} {}",
            settings.paths.bids_dir.display(),
            e.location.as_deref().unwrap_or("/"),
            e.code,
            e.message.lines().next().unwrap_or(""),
            e.hint
        );
    }
    if errors.len() > SHOWN {
        tracing::error!("… and {} more validation errors", errors.len() - SHOWN);
    }
    let first = errors[0];
    Err(PipelineError::Invalid(format!(
        "{}: BIDS validation failed with {} error(s), first {} at {}; fix them, silence codes with --bids-validator-config, or pass --skip-bids-validation",
        settings.paths.bids_dir.display(),
        errors.len(),
        first.code,
        first.location.as_deref().unwrap_or("/")
    )))
}

/// Runs `work` over `jobs` on a bounded pool, honouring `--stop-on-first-crash`.
fn run_jobs<F>(
    settings: &Settings,
    jobs: &[Job],
    what: &str,
    interrupt: &AtomicBool,
    work: F,
) -> Result<RunSummary, PipelineError>
where
    F: Fn(&Job) -> Result<Outcome, JobError> + Sync,
{
    let by_threads = (settings.resources.nprocs / settings.resources.omp_nthreads).max(1);
    let by_mem = settings
        .resources
        .mem_mb
        .map(|m| (m / MB_PER_SUBJECT).max(1) as usize)
        .unwrap_or(usize::MAX);
    let workers = by_threads.min(by_mem).min(jobs.len().max(1));
    if let Some(mem) = settings.resources.mem_mb {
        if mem < MB_PER_SUBJECT {
            tracing::warn!(
                "--mem {mem} MB is below what one subject may need (~{MB_PER_SUBJECT} MB for a 1 mm 256³ scan); running one at a time, large scans may exceed it"
            );
        } else if by_mem < by_threads && by_mem < jobs.len() {
            tracing::info!(
                "--mem {mem} MB: {by_mem} subject(s) at a time (each may need ~{MB_PER_SUBJECT} MB) instead of {by_threads}"
            );
        }
    }
    tracing::info!("{} jobs, {} at a time", jobs.len(), workers);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .map_err(|e| PipelineError::Threads(e.to_string()))?;
    let stop = AtomicBool::new(false);
    let progress = Progress::new(jobs.len() as u64, what);
    let outcomes: Vec<Outcome> = pool.install(|| {
        jobs.par_iter()
            .map(|job| {
                if stop.load(Ordering::SeqCst) || interrupt.load(Ordering::SeqCst) {
                    return Outcome::NotRun;
                }
                // A bug must cost one subject, not the run: a panic becomes that job's failure.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job)));
                let outcome = match result {
                    Ok(Ok(o)) => o,
                    Ok(Err(e)) => Outcome::Failed(e),
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Outcome::Failed(JobError::Internal(job.path.clone(), what))
                    }
                };
                match &outcome {
                    Outcome::Written(p) => tracing::info!("{}: wrote {}", job.label(), list(p)),
                    Outcome::UpToDate(p) => {
                        tracing::info!("{}: up to date, kept {}", job.label(), list(p))
                    }
                    Outcome::Failed(e) => {
                        tracing::error!("{}: {e}", job.label());
                        if settings.resources.stop_on_first_crash {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    Outcome::NotRun => {}
                }
                progress.inc(&job.label());
                outcome
            })
            .collect()
    });
    drop(progress);
    let reports = jobs
        .iter()
        .cloned()
        .zip(outcomes)
        .map(|(job, outcome)| JobReport { job, outcome })
        .collect();
    Ok(RunSummary {
        reports,
        stop_on_first_crash: settings.resources.stop_on_first_crash,
    })
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(", ")
}
