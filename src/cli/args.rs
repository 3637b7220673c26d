//! The clap types of the command line ([`Args`], mirroring the BIDS-App contract), with typed
//! parsers for the closed choices (backend, device, method, configuration source).

use std::path::PathBuf;

use clap::{ArgAction, Parser};

use crate::methods::Method;
use crate::model::compose::OutputMode;
use crate::model::config::HcldConfig;
use crate::model::device::{Backend, DeviceKind};
use crate::model::sampler::X0Clip;

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
    // A string, not a clap enum: an unknown level must exit with the BIDS-App code 17, not clap's
    // usage code (see `build::level`).
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
    /// Work directory for intermediate files (default: $TMPDIR/hcld-work-<uid>, private to the user); created and checked at start.
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
    pub backend: Option<Backend>,
    /// Device for the networks: cpu, cuda (GPU 0) or cuda:N. GPUs need --backend tch.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceKind,
    /// Harmonisation methods (one or more): hcld (conditional latent diffusion to a target
    /// site), nyul (histogram standardisation, landmarks fitted at group level), whitestripe,
    /// zscore, none (the preprocessed image), or all.
    /// Default: hcld, at the participant level only when a model exists (else preprocessing only).
    #[arg(long, num_args = 1.., value_delimiter = ',', value_name = "METHOD")]
    pub method: Vec<MethodChoice>,
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
    pub config: ConfigSource,
    /// Group level: autoencoder training epochs (default: the configuration's; only when the
    /// autoencoder is trained, see --train-autoencoder).
    #[arg(long = "epochs-ae", alias = "epochs_ae", value_name = "N")]
    pub epochs_ae: Option<usize>,
    /// Group level: train the autoencoder on the cohort even when the configuration's
    /// pretrained one ships with hcld (the `cpu` preset's does; then only the latent diffusion
    /// model is trained).
    #[arg(long = "train-autoencoder", alias = "train_autoencoder")]
    pub train_autoencoder: bool,
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
    /// DDIM inversion depth as a fraction of the schedule (default: the model's).
    #[arg(long, value_name = "F")]
    pub strength: Option<f64>,
    /// DDIM inversion steps (default: the model's).
    #[arg(long = "inversion-steps", alias = "inversion_steps", value_name = "N")]
    pub inversion_steps: Option<usize>,
    /// DDIM sampling steps (default: the model's).
    #[arg(long = "sampling-steps", alias = "sampling_steps", value_name = "N")]
    pub sampling_steps: Option<usize>,
    /// Clipping of the x̂₀ estimate while sampling: off, schedule (±1, the reference's), or
    /// latents (the range the training latents span). Default: the model's.
    #[arg(long = "clip-x0", alias = "clip_x0", value_name = "HOW")]
    pub clip_x0: Option<X0Clip>,
    /// How HCLD's output is composed: intensity-map (the input through a monotone intensity
    /// map fitted from the model's change: anatomy untouched), residual (the input plus the
    /// model's change) or generative (the decoded image itself, the paper's output). Default:
    /// the model's.
    #[arg(long = "output-mode", alias = "output_mode", value_name = "MODE")]
    pub output_mode: Option<OutputMode>,
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

/// One `--method` value: a method, or `all` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodChoice {
    /// Every method, in report order.
    All,
    /// One method.
    One(Method),
    /// An empty item of a comma list (`--method hcld,`), ignored as it always was.
    Empty,
}

impl std::str::FromStr for MethodChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(MethodChoice::Empty);
        }
        if s.eq_ignore_ascii_case("all") {
            return Ok(MethodChoice::All);
        }
        s.parse().map(MethodChoice::One)
    }
}

/// Where `--config` comes from: a named preset, or a JSON file (anything that is not a preset's
/// name; whether it exists is checked when it is read, so a missing file exits 66, not 64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A preset of [`HcldConfig::preset`].
    Preset(String),
    /// A JSON file.
    File(PathBuf),
}

impl std::str::FromStr for ConfigSource {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if HcldConfig::preset(s).is_some() {
            ConfigSource::Preset(s.to_string())
        } else {
            ConfigSource::File(PathBuf::from(s))
        })
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Preset(p) => f.write_str(p),
            ConfigSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}
