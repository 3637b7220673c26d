//! Everything about the command line: the clap types ([`Args`], mirroring the BIDS-App contract),
//! their validation into [`Settings`] (labels without prefixes, resolved paths, the parsed filter
//! file), the exit-code table ([`ExitStatus`], from the BIDS execution spec), and log/progress setup
//! ([`logging`]).

pub mod logging;

use std::path::{Path, PathBuf};

use clap::{ArgAction, Parser};

use crate::bids::{Query, is_label};
use crate::model::baselines::Method;
use crate::model::config::HcldConfig;
use crate::model::device::{Backend, DeviceKind};
use crate::model::sampler::DdimConfig;
use crate::preprocess::intensity::IntensityScaling;

/// Exit codes of the BIDS execution specification (and sysexits for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything selected was processed.
    Success = 0,
    /// 1: some subjects failed (the others completed).
    SomeFailed = 1,
    /// 16: the input dataset failed validation.
    InvalidInput = 16,
    /// 17: unknown analysis level.
    UnknownLevel = 17,
    /// 18: the participant/session labels or filters selected nothing.
    NothingSelected = 18,
    /// 64: command-line usage error.
    Usage = 64,
    /// 65: input data unusable.
    DataError = 65,
    /// 66: an input file or folder does not exist.
    NoInput = 66,
    /// 73: an output cannot be created.
    CannotCreate = 73,
    /// 74: an I/O error.
    IoError = 74,
    /// 130: stopped by Ctrl-C or SIGTERM; finished outputs are kept, a re-run resumes.
    Interrupted = 130,
}

impl ExitStatus {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

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

/// `hcld BIDS_DIR OUTPUT_DIR {participant,group} [options]`
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hcld",
    version,
    about = "Harmonise T1-weighted MRI across scanners and sites (a BIDS-App)",
    long_about = "Harmonise T1-weighted MRI across scanners and sites (a BIDS-App).\n\n\
        Reads a BIDS dataset (never writes to it) and writes a BIDS derivatives dataset to OUTPUT_DIR. \
        Multi-word options accept both spellings (--participant-label and --participant_label).",
    after_help = "Exit codes: 0 ok, 1 some subjects failed, 16 input failed validation, 17 unknown analysis level, \
        18 labels/filters selected nothing, 64 usage, 65 bad data, 66 missing input, 73 cannot create output, 74 I/O error, \
        130 interrupted (re-run to resume).\n\n\
        Typical flow: `group` (preprocess and fit the models), `participant` (harmonise each subject; one job per \
        subject may run at once), `group` again (the group report with every method's outputs)."
)]
pub struct Args {
    /// The root of the BIDS dataset (raw, or sMRIPrep/fMRIPrep derivatives). Read only.
    #[arg(value_name = "BIDS_DIR")]
    pub bids_dir: PathBuf,
    /// Where derivatives go (created if missing; may be BIDS_DIR/derivatives/hcld).
    #[arg(value_name = "OUTPUT_DIR")]
    pub output_dir: PathBuf,
    /// `participant` (preprocess/harmonise each subject) or `group` (dataset-wide steps).
    #[arg(value_name = "ANALYSIS_LEVEL")]
    pub analysis_level: String,
    /// Subjects to process, with or without `sub-` (default: all).
    #[arg(long = "participant-label", alias = "participant_label", num_args = 1.., value_name = "LABEL")]
    pub participant_label: Vec<String>,
    /// Sessions to process, with or without `ses-` (default: all).
    #[arg(long = "session-label", alias = "session_label", num_args = 1.., value_name = "LABEL")]
    pub session_label: Vec<String>,
    /// JSON file of pybids-style filters, e.g. {"t1w": {"acquisition": "mprage", "run": 1}}.
    #[arg(
        long = "bids-filter-file",
        alias = "bids_filter_file",
        value_name = "FILE"
    )]
    pub bids_filter_file: Option<PathBuf>,
    /// Existing derivatives (sMRIPrep/fMRIPrep) to reuse; BIDS_DIR/derivatives/* are also searched.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub derivatives: Vec<PathBuf>,
    /// Work directory for intermediate files (default: $TMPDIR/hcld-work); created and checked at start.
    #[arg(short = 'w', long = "work-dir", alias = "work_dir", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Skip validation of BIDS_DIR (a missing dataset_description.json or broken participants.tsv
    /// become warnings).
    #[arg(
        long = "skip-bids-validation",
        aliases = ["skip_bids_validation", "skip-bids-validator", "skip_bids_validator"]
    )]
    pub skip_bids_validation: bool,
    /// Issue configuration for the BIDS validator ({"ignore": [{"code": "EMPTY_FILE"}], ...});
    /// default: BIDS_DIR/.bids-validator-config.json when it exists.
    #[arg(
        long = "bids-validator-config",
        alias = "bids_validator_config",
        value_name = "FILE"
    )]
    pub bids_validator_config: Option<PathBuf>,
    /// Maximum number of threads (default: all CPUs; at most 4 per CPU the process may use).
    #[arg(long, aliases = ["n-cpus", "n_cpus", "nthreads"], value_name = "N")]
    pub nprocs: Option<usize>,
    /// Maximum threads per subject (default: 1 when several subjects run at once).
    #[arg(long = "omp-nthreads", alias = "omp_nthreads", value_name = "N")]
    pub omp_nthreads: Option<usize>,
    /// Memory budget, in MB or with a unit (16000, 16GB); bounds how many subjects run at once.
    #[arg(long, aliases = ["mem-mb", "mem_mb"], value_name = "MEM")]
    pub mem: Option<String>,
    /// Stop at the first subject that fails instead of continuing with the others.
    #[arg(long = "stop-on-first-crash", alias = "stop_on_first_crash")]
    pub stop_on_first_crash: bool,
    /// Accepted for compatibility; hcld never sends anything anywhere.
    #[arg(long)]
    pub notrack: bool,
    /// More log output on stderr (-v debug, -vv trace); the log file in OUTPUT_DIR/logs is always at debug.
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
    /// Random seed for the stochastic steps (harmonisation sampling); today's steps are deterministic.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Redo outputs that are already complete and current.
    #[arg(long)]
    pub force: bool,
    /// Foreground percentiles mapped to 0 and 1 by intensity scaling.
    #[arg(
        long = "intensity-percentiles",
        alias = "intensity_percentiles",
        num_args = 2,
        value_names = ["LOW", "HIGH"],
        default_values_t = [0.5, 99.5]
    )]
    pub intensity_percentiles: Vec<f64>,
    /// Upper clip of scaled intensities.
    #[arg(
        long = "intensity-clip",
        alias = "intensity_clip",
        default_value_t = 1.5,
        value_name = "MAX"
    )]
    pub intensity_clip: f64,
    /// Skip bias-field (N4-class) correction, e.g. for inputs that are already corrected.
    #[arg(long = "no-bias-correction", alias = "no_bias_correction")]
    pub no_bias_correction: bool,
    /// Treat every input T1w as skull-stripped (otherwise decided from the sidecar's
    /// `SkullStripped`, a mask in --derivatives, or the image itself).
    #[arg(long = "skull-stripped", alias = "skull_stripped")]
    pub skull_stripped: bool,
    /// Voxel size (mm) of the template-space outputs and the model grid: 1 (192×224×192) or
    /// 2 (96×112×96).
    #[arg(
        long = "output-resolution",
        alias = "output_resolution",
        default_value_t = 2,
        value_parser = clap::value_parser!(u8).range(1..=2),
        value_name = "MM"
    )]
    pub output_resolution: u8,
    /// Backend for the networks: flex (pure Rust, CPU) or tch (LibTorch: CPU or CUDA; needs a
    /// build with `--features tch`). Default: tch when built in, else flex.
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// Device for the networks: cpu, cuda (GPU 0) or cuda:N. GPUs need --backend tch.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
    /// Harmonisation methods (one or more): hcld (conditional latent diffusion to a target
    /// site), nyul (histogram standardisation, landmarks fitted at group level), whitestripe,
    /// zscore, none (the preprocessed image), or all.
    /// Default: hcld, at the participant level only when a model exists (else preprocessing only).
    #[arg(long, num_args = 1.., value_name = "METHOD")]
    pub method: Vec<String>,
    /// Column of participants.tsv (or sessions.tsv) holding the site label.
    #[arg(
        long = "site-column",
        alias = "site_column",
        default_value = "site",
        value_name = "NAME"
    )]
    pub site_column: String,
    /// Group level: refuse to train when a site has fewer subjects than this.
    #[arg(
        long = "min-site-subjects",
        alias = "min_site_subjects",
        default_value_t = 1,
        value_name = "N"
    )]
    pub min_site_subjects: usize,
    /// HCLD configuration for training: a preset (cpu, reference, tiny) or a JSON file.
    #[arg(long, default_value = "cpu", value_name = "PRESET|FILE")]
    pub config: String,
    /// Group level: autoencoder training epochs (default: the configuration's).
    #[arg(long = "epochs-ae", alias = "epochs_ae", value_name = "N")]
    pub epochs_ae: Option<usize>,
    /// Group level: latent-diffusion training epochs (default: the configuration's).
    #[arg(long = "epochs-ldm", alias = "epochs_ldm", value_name = "N")]
    pub epochs_ldm: Option<usize>,
    /// Group level: checkpoint training every N optimiser steps.
    #[arg(
        long = "checkpoint-every",
        alias = "checkpoint_every",
        default_value_t = 50,
        value_name = "N"
    )]
    pub checkpoint_every: usize,
    /// An existing HCLD model folder (hcld-<sha>/) to use instead of training one, or to choose
    /// between several under OUTPUT_DIR/models.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Harmonise to this site (a label from the site column; default: the site with the most
    /// training images).
    #[arg(
        long = "target-site",
        alias = "target_site",
        value_name = "LABEL",
        conflicts_with = "target_image"
    )]
    pub target_site: Option<String>,
    /// Harmonise to the style of this T1w image (any NIfTI; preprocessed like the inputs).
    #[arg(long = "target-image", alias = "target_image", value_name = "PATH")]
    pub target_image: Option<PathBuf>,
    /// DDIM inversion depth as a fraction of the schedule (default: the model's, 0.6).
    #[arg(long, value_name = "F")]
    pub strength: Option<f64>,
    /// DDIM inversion steps (default: the model's, 30).
    #[arg(long = "inversion-steps", alias = "inversion_steps", value_name = "N")]
    pub inversion_steps: Option<usize>,
    /// DDIM sampling steps (default: the model's, 10).
    #[arg(long = "sampling-steps", alias = "sampling_steps", value_name = "N")]
    pub sampling_steps: Option<usize>,
    /// Nyúl landmarks file (default: OUTPUT_DIR/models/nyul.json, written by the group level).
    #[arg(long = "nyul-landmarks", alias = "nyul_landmarks", value_name = "FILE")]
    pub nyul_landmarks: Option<PathBuf>,
    /// Group level: compute the harmonisation metric table for every method with outputs and
    /// write it to OUTPUT_DIR/evaluation/ (TSV + JSON) and the group report; with a simulated
    /// dataset's ground truth, also SSIM, PSNR and tissue Dice against it.
    #[arg(long)]
    pub evaluate: bool,
    /// Ground truth for --evaluate (default: BIDS_DIR/sourcedata/ground-truth when present, as
    /// hcld-simulate writes it).
    #[arg(long = "ground-truth", alias = "ground_truth", value_name = "DIR")]
    pub ground_truth: Option<PathBuf>,
}

/// The analysis level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisLevel {
    /// Per-subject processing.
    Participant,
    /// Dataset-wide processing.
    Group,
}

/// `--nprocs` is capped at this many threads per CPU the process may use (its affinity mask and
/// cgroup quota, as `std::thread::available_parallelism` reports them).
pub const MAX_THREADS_PER_CPU: usize = 4;

/// Validated settings: what the pipeline runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Canonical BIDS_DIR.
    pub bids_dir: PathBuf,
    /// Absolute OUTPUT_DIR (may not exist yet).
    pub output_dir: PathBuf,
    /// Analysis level.
    pub level: AnalysisLevel,
    /// Subject labels without `sub-` (empty = all).
    pub participants: Vec<String>,
    /// Session labels without `ses-` (empty = all).
    pub sessions: Vec<String>,
    /// The T1w query from `--bids-filter-file`, if given.
    pub t1w_filter: Option<Query>,
    /// `--derivatives` folders, resolved.
    pub derivatives: Vec<PathBuf>,
    /// Work directory.
    pub work_dir: PathBuf,
    /// `--skip-bids-validation`.
    pub skip_validation: bool,
    /// Validator issue configuration, if any.
    pub validator_config: Option<PathBuf>,
    /// Threads in total.
    pub nprocs: usize,
    /// Threads per subject.
    pub omp_nthreads: usize,
    /// Memory budget in MB.
    pub mem_mb: Option<u64>,
    /// `--stop-on-first-crash`.
    pub stop_on_first_crash: bool,
    /// Verbosity (0 = warnings and summary).
    pub verbosity: u8,
    /// Random seed.
    pub seed: u64,
    /// Redo current outputs.
    pub force: bool,
    /// Intensity scaling parameters.
    pub intensity: IntensityScaling,
    /// Run bias-field correction.
    pub bias_correction: bool,
    /// `--skull-stripped`.
    pub skull_stripped: bool,
    /// Template-space voxel size in mm (1 or 2).
    pub output_resolution: u8,
    /// Backend asked for (`None`: the preferred compiled one).
    pub backend: Option<Backend>,
    /// Device for the networks.
    pub device: DeviceKind,
    /// Harmonisation methods, in report order, without duplicates.
    pub methods: Vec<Method>,
    /// Whether `--method` was given (otherwise HCLD runs only when a model exists).
    pub methods_explicit: bool,
    /// Site column of participants.tsv / sessions.tsv.
    pub site_column: String,
    /// Fewest subjects a site may have for training.
    pub min_site_subjects: usize,
    /// The training configuration (`--config`, with `--epochs-*` applied).
    pub model_config: HcldConfig,
    /// Checkpoint interval (optimiser steps).
    pub checkpoint_every: usize,
    /// `--model`.
    pub model: Option<PathBuf>,
    /// `--target-site` / `--target-image`.
    pub target: Option<TargetSpec>,
    /// DDIM overrides.
    pub ddim: DdimOverrides,
    /// `--nyul-landmarks`.
    pub nyul_landmarks: Option<PathBuf>,
    /// `--evaluate`.
    pub evaluate: bool,
    /// `--ground-truth` (absolute).
    pub ground_truth: Option<PathBuf>,
}

/// What to harmonise towards.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    /// A site label.
    Site(String),
    /// A T1w image (absolute path).
    Image(PathBuf),
}

/// `--strength`, `--inversion-steps`, `--sampling-steps`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DdimOverrides {
    /// Inversion depth.
    pub strength: Option<f64>,
    /// Inversion steps.
    pub inversion_steps: Option<usize>,
    /// Sampling steps.
    pub sampling_steps: Option<usize>,
}

impl DdimOverrides {
    /// The model's DDIM defaults with these overrides.
    pub fn apply(&self, base: &DdimConfig) -> DdimConfig {
        DdimConfig {
            strength: self.strength.unwrap_or(base.strength),
            inversion_steps: self.inversion_steps.unwrap_or(base.inversion_steps),
            sampling_steps: self.sampling_steps.unwrap_or(base.sampling_steps),
        }
    }
}

/// A command-line problem, with the exit status it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Exit status.
    pub status: ExitStatus,
    /// One-line message naming the argument or file and the fix.
    pub message: String,
}

fn cli_err(status: ExitStatus, message: String) -> CliError {
    CliError { status, message }
}

impl Settings {
    /// Validates parsed arguments.
    pub fn from_args(args: &Args) -> Result<Settings, CliError> {
        let level = match args.analysis_level.as_str() {
            "participant" => AnalysisLevel::Participant,
            "group" => AnalysisLevel::Group,
            other => {
                return Err(cli_err(
                    ExitStatus::UnknownLevel,
                    format!("unknown analysis level '{other}'; use 'participant' or 'group'"),
                ));
            }
        };
        if !args.bids_dir.is_dir() {
            return Err(cli_err(
                ExitStatus::NoInput,
                format!(
                    "{}: BIDS_DIR not found or not a directory",
                    args.bids_dir.display()
                ),
            ));
        }
        let bids_dir = std::fs::canonicalize(&args.bids_dir).map_err(|e| {
            cli_err(
                ExitStatus::NoInput,
                format!("{}: cannot resolve BIDS_DIR: {e}", args.bids_dir.display()),
            )
        })?;
        let output_dir = resolve(&args.output_dir);
        if output_dir == bids_dir {
            return Err(cli_err(
                ExitStatus::Usage,
                format!(
                    "{}: OUTPUT_DIR is BIDS_DIR; hcld never writes into the input dataset, use e.g. {}/derivatives/hcld",
                    output_dir.display(),
                    bids_dir.display()
                ),
            ));
        }
        let derivatives_dir = bids_dir.join("derivatives");
        let under_derivatives =
            output_dir.starts_with(&derivatives_dir) && output_dir != derivatives_dir;
        if output_dir.starts_with(&bids_dir) && !under_derivatives {
            return Err(cli_err(
                ExitStatus::Usage,
                format!(
                    "{}: OUTPUT_DIR lies inside BIDS_DIR; hcld never writes into the input dataset, use a folder outside it or under {}/derivatives/",
                    output_dir.display(),
                    bids_dir.display()
                ),
            ));
        }
        if bids_dir.starts_with(&output_dir) {
            return Err(cli_err(
                ExitStatus::Usage,
                format!(
                    "{}: OUTPUT_DIR contains BIDS_DIR; choose a separate folder",
                    output_dir.display()
                ),
            ));
        }
        let participants = labels(&args.participant_label, "sub-", "--participant-label")?;
        let sessions = labels(&args.session_label, "ses-", "--session-label")?;
        let t1w_filter = match &args.bids_filter_file {
            None => None,
            Some(p) if !p.is_file() => {
                return Err(cli_err(
                    ExitStatus::NoInput,
                    format!("{}: --bids-filter-file not found", p.display()),
                ));
            }
            Some(p) => Query::from_filter_file(p, "t1w")
                .map_err(|e| cli_err(ExitStatus::Usage, e.to_string()))?,
        };
        let mut derivatives = Vec::new();
        for d in &args.derivatives {
            if !d.is_dir() {
                return Err(cli_err(
                    ExitStatus::NoInput,
                    format!("{}: --derivatives folder not found", d.display()),
                ));
            }
            derivatives.push(resolve(d));
        }
        let work_dir = args
            .work_dir
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| std::env::temp_dir().join("hcld-work"));
        if work_dir.starts_with(&bids_dir) {
            return Err(cli_err(
                ExitStatus::Usage,
                format!(
                    "{}: the work directory lies inside BIDS_DIR; hcld never writes into the input dataset, give -w a folder outside it",
                    work_dir.display()
                ),
            ));
        }
        // The work dir's checkpoints and caches are not derivatives: in OUTPUT_DIR itself they
        // would sit among the subjects and fail BIDS validation. (A subfolder is tolerated, as
        // containers often bind one output folder: `-w /out/work`.)
        if work_dir == output_dir {
            return Err(cli_err(
                ExitStatus::Usage,
                format!(
                    "{}: -w is OUTPUT_DIR itself; its training checkpoints and caches would land among the derivatives, give -w another folder (e.g. {})",
                    work_dir.display(),
                    output_dir.join("work").display()
                ),
            ));
        }
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let nprocs = match args.nprocs {
            Some(0) => {
                return Err(cli_err(
                    ExitStatus::Usage,
                    "--nprocs must be at least 1".into(),
                ));
            }
            // Threads past a few per CPU only add overhead, and a typo (`--nprocs 100000`)
            // would spawn threads until the process limit; main logs the cap.
            Some(n) => n.min(MAX_THREADS_PER_CPU * cpus),
            None => cpus,
        };
        let omp_nthreads = match args.omp_nthreads {
            Some(0) => {
                return Err(cli_err(
                    ExitStatus::Usage,
                    "--omp-nthreads must be at least 1".into(),
                ));
            }
            Some(n) => n.min(nprocs),
            None => 1,
        };
        let mem_mb = args
            .mem
            .as_deref()
            .map(parse_mem)
            .transpose()
            .map_err(|m| cli_err(ExitStatus::Usage, m))?;
        let intensity = IntensityScaling {
            low_percentile: args.intensity_percentiles[0],
            high_percentile: args.intensity_percentiles[1],
            clip_max: args.intensity_clip,
        };
        intensity.validate().map_err(|m| {
            cli_err(
                ExitStatus::Usage,
                format!("--intensity-percentiles/--intensity-clip: {m}"),
            )
        })?;
        let default_validator_config = bids_dir.join(".bids-validator-config.json");
        let validator_config = match &args.bids_validator_config {
            Some(p) if !p.is_file() => {
                return Err(cli_err(
                    ExitStatus::NoInput,
                    format!("{}: --bids-validator-config not found", p.display()),
                ));
            }
            Some(p) => Some(resolve(p)),
            None => Some(default_validator_config).filter(|p| p.is_file()),
        };
        if let Some(p) = &validator_config {
            bids_validator::Config::read(p).map_err(|e| {
                cli_err(
                    ExitStatus::Usage,
                    format!("{e}; expected {{\"ignore\": [{{\"code\": \"EMPTY_FILE\"}}], \"warning\": [...], \"error\": [...]}}"),
                )
            })?;
        }
        let usage =
            |e: crate::model::device::DeviceError| cli_err(ExitStatus::Usage, e.to_string());
        let backend = args
            .backend
            .as_deref()
            .map(str::parse::<Backend>)
            .transpose()
            .map_err(usage)?;
        let device: DeviceKind = args.device.parse().map_err(usage)?;
        // Impossible combinations fail here, before any work; whether a GPU is really there is
        // only known when the model is loaded.
        Backend::check(backend, device).map_err(usage)?;
        let mut methods: Vec<Method> = Vec::new();
        let default_method = ["hcld".to_string()];
        let requested: &[String] = if args.method.is_empty() {
            &default_method
        } else {
            &args.method
        };
        for m in requested {
            for part in m.split(',').filter(|p| !p.is_empty()) {
                if part.eq_ignore_ascii_case("all") {
                    for method in Method::ALL {
                        if !methods.contains(&method) {
                            methods.push(method);
                        }
                    }
                    continue;
                }
                let method: Method = part
                    .parse()
                    .map_err(|e: String| cli_err(ExitStatus::Usage, format!("--method: {e}")))?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
        }
        methods.sort_by_key(|m| Method::ALL.iter().position(|x| x == m));
        let mut model_config = HcldConfig::from_preset_or_file(&args.config).map_err(|e| {
            cli_err(
                if Path::new(&args.config).exists() || HcldConfig::preset(&args.config).is_some() {
                    ExitStatus::Usage
                } else {
                    ExitStatus::NoInput
                },
                format!("--config {}: {e}", args.config),
            )
        })?;
        for (flag, value) in [
            ("--epochs-ae", args.epochs_ae),
            ("--epochs-ldm", args.epochs_ldm),
        ] {
            if value == Some(0) {
                return Err(cli_err(
                    ExitStatus::Usage,
                    format!("{flag} must be at least 1"),
                ));
            }
        }
        if let Some(e) = args.epochs_ae {
            model_config.autoencoder_training.epochs = e;
        }
        if let Some(e) = args.epochs_ldm {
            model_config.diffusion_training.epochs = e;
        }
        if args.checkpoint_every == 0 {
            return Err(cli_err(
                ExitStatus::Usage,
                "--checkpoint-every must be at least 1".into(),
            ));
        }
        let model = match &args.model {
            Some(p) if !p.is_dir() => {
                return Err(cli_err(
                    ExitStatus::NoInput,
                    format!(
                        "{}: --model folder not found (expected an hcld-<sha>/ folder with config.json)",
                        p.display()
                    ),
                ));
            }
            Some(p) => Some(resolve(p)),
            None => None,
        };
        let target = match (&args.target_site, &args.target_image) {
            (Some(s), _) if s.trim().is_empty() => {
                return Err(cli_err(ExitStatus::Usage, "--target-site is empty".into()));
            }
            (Some(s), _) => Some(TargetSpec::Site(s.clone())),
            (None, Some(p)) if !p.is_file() => {
                return Err(cli_err(
                    ExitStatus::NoInput,
                    format!("{}: --target-image not found", p.display()),
                ));
            }
            (None, Some(p)) => Some(TargetSpec::Image(resolve(p))),
            (None, None) => None,
        };
        let ddim = DdimOverrides {
            strength: args.strength,
            inversion_steps: args.inversion_steps,
            sampling_steps: args.sampling_steps,
        };
        let check_ddim = ddim.apply(&DdimConfig::default());
        crate::model::sampler::DdimSampler::new(
            crate::model::schedule::ScheduleConfig::default()
                .build()
                .map_err(|e| cli_err(ExitStatus::Usage, e.to_string()))?,
            check_ddim,
        )
        .map_err(|e| {
            cli_err(
                ExitStatus::Usage,
                format!("--strength/--inversion-steps/--sampling-steps: {e}"),
            )
        })?;
        let nyul_landmarks = match &args.nyul_landmarks {
            Some(p) if !p.is_file() => {
                return Err(cli_err(
                    ExitStatus::NoInput,
                    format!("{}: --nyul-landmarks file not found", p.display()),
                ));
            }
            Some(p) => Some(resolve(p)),
            None => None,
        };
        let ground_truth = match &args.ground_truth {
            Some(p) if !p.join("simulation.json").is_file() => {
                return Err(cli_err(
                    ExitStatus::NoInput,
                    format!(
                        "{}: --ground-truth has no simulation.json; give the sourcedata/ground-truth folder hcld-simulate wrote",
                        p.display()
                    ),
                ));
            }
            Some(p) => Some(resolve(p)),
            None => None,
        };
        if (args.evaluate || ground_truth.is_some()) && level != AnalysisLevel::Group {
            return Err(cli_err(
                ExitStatus::Usage,
                "--evaluate and --ground-truth belong to the group level: run 'hcld BIDS_DIR OUTPUT_DIR group --evaluate' after the participant level".into(),
            ));
        }
        if args.site_column.trim().is_empty() {
            return Err(cli_err(ExitStatus::Usage, "--site-column is empty".into()));
        }
        Ok(Settings {
            bids_dir,
            output_dir,
            level,
            participants,
            sessions,
            t1w_filter,
            derivatives,
            work_dir,
            skip_validation: args.skip_bids_validation,
            validator_config,
            nprocs,
            omp_nthreads,
            mem_mb,
            stop_on_first_crash: args.stop_on_first_crash,
            verbosity: args.verbose,
            seed: args.seed,
            force: args.force,
            intensity,
            bias_correction: !args.no_bias_correction,
            skull_stripped: args.skull_stripped,
            output_resolution: args.output_resolution,
            backend,
            device,
            methods,
            methods_explicit: !args.method.is_empty(),
            site_column: args.site_column.clone(),
            min_site_subjects: args.min_site_subjects.max(1),
            model_config,
            checkpoint_every: args.checkpoint_every,
            model,
            target,
            ddim,
            nyul_landmarks,
            evaluate: args.evaluate || ground_truth.is_some(),
            ground_truth,
        })
    }
}

/// Strips an optional prefix and checks the BIDS label grammar (this also rules out `../x`).
fn labels(raw: &[String], prefix: &str, option: &str) -> Result<Vec<String>, CliError> {
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        let l = r.strip_prefix(prefix).unwrap_or(r);
        if !is_label(l) {
            return Err(cli_err(
                ExitStatus::Usage,
                format!(
                    "{option} '{r}' is not a BIDS label: use letters and digits only, e.g. 01 or {prefix}01"
                ),
            ));
        }
        if !out.iter().any(|x| x == l) {
            out.push(l.to_string());
        }
    }
    Ok(out)
}

/// `16000`, `16000MB`, `16GB`, `16G`, `1.5TB` → megabytes.
fn parse_mem(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("--mem '{s}': expected a number with an optional unit (MB, GB)"))?;
    let mult = match unit.trim() {
        "" | "M" | "MB" => 1.0,
        "G" | "GB" => 1000.0,
        "T" | "TB" => 1_000_000.0,
        "K" | "KB" => 0.001,
        _ => return Err(format!("--mem '{s}': unknown unit (use MB or GB)")),
    };
    let mb = (v * mult).round();
    if mb < 1.0 {
        return Err(format!("--mem '{s}' is less than 1 MB"));
    }
    Ok(mb as u64)
}

/// Absolute, `..` and `.` removed lexically, then symlinks resolved as far as the path exists
/// (OUTPUT_DIR may not exist yet), so containment checks cannot be fooled by `missing/../`.
fn resolve(p: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                existing = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_prefixes_and_reject_paths() {
        assert_eq!(
            labels(&["sub-01".into(), "02".into(), "01".into()], "sub-", "x").unwrap(),
            ["01", "02"]
        );
        assert!(labels(&["../x".into()], "sub-", "x").is_err());
        assert!(labels(&["sub-".into()], "sub-", "x").is_err());
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_mem("16000").unwrap(), 16000);
        assert_eq!(parse_mem("16GB").unwrap(), 16000);
        assert_eq!(parse_mem("1.5g").unwrap(), 1500);
        assert!(parse_mem("lots").is_err());
        assert!(parse_mem("5XB").is_err());
    }

    #[test]
    fn both_spellings_parse() {
        let a = Args::try_parse_from([
            "hcld",
            "in",
            "out",
            "participant",
            "--participant_label",
            "01",
            "--skip_bids_validation",
            "--omp_nthreads",
            "2",
        ])
        .unwrap();
        assert_eq!(a.participant_label, ["01"]);
        assert!(a.skip_bids_validation);
        let b = Args::try_parse_from([
            "hcld",
            "in",
            "out",
            "participant",
            "--participant-label",
            "01",
            "02",
            "-vv",
        ])
        .unwrap();
        assert_eq!(b.participant_label, ["01", "02"]);
        assert_eq!(b.verbose, 2);
    }
}
