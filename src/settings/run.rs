//! The settings groups (paths, selection, resources, preprocessing, model, harmonisation) that
//! the pipeline and the methods are given. They name no method, so the methods can take them
//! without an import cycle; the list of methods sits one level up, in `Settings`.

use std::path::PathBuf;

use crate::bids::Query;
use crate::model::compose::OutputMode;
use crate::model::config::HcldConfig;
use crate::model::device::{Backend, DeviceKind};
use crate::model::sampler::{DdimConfig, X0Clip};
use crate::preprocess::intensity::IntensityScaling;
use crate::preprocess::t1w::T1wOptions;

/// The analysis level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisLevel {
    /// Per-subject processing.
    Participant,
    /// Dataset-wide processing.
    Group,
}

impl AnalysisLevel {
    /// The level as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            AnalysisLevel::Participant => "participant",
            AnalysisLevel::Group => "group",
        }
    }
}

/// `--nprocs` is capped at this many threads per CPU the process may use (its affinity mask and
/// cgroup quota, as `std::thread::available_parallelism` reports them).
pub const MAX_THREADS_PER_CPU: usize = 4;

/// Every setting but the list of methods: what the methods themselves are given.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Analysis level.
    pub level: AnalysisLevel,
    /// Where things are read and written.
    pub paths: Paths,
    /// Which images are processed.
    pub selection: Selection,
    /// Threads, memory, failure policy.
    pub resources: Resources,
    /// How each T1w is preprocessed.
    pub preprocessing: Preprocessing,
    /// The HCLD model: which one, or how to train it.
    pub model: ModelSettings,
    /// Towards what the methods harmonise, and whether the group level evaluates them.
    pub harmonisation: Harmonisation,
}

/// Where things are read and written (all absolute).
#[derive(Debug, Clone)]
pub struct Paths {
    /// Canonical BIDS_DIR.
    pub bids_dir: PathBuf,
    /// OUTPUT_DIR (may not exist yet).
    pub output_dir: PathBuf,
    /// `--derivatives` folders.
    pub derivatives: Vec<PathBuf>,
    /// Work directory.
    pub work_dir: PathBuf,
    /// True when `work_dir` is the default under `$TMPDIR`, which other users of the machine can
    /// reach too: it is then created private and refused when it is not this user's.
    pub work_dir_is_default: bool,
    /// Validator issue configuration, if any.
    pub validator_config: Option<PathBuf>,
}

/// Which images are processed.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Subject labels without `sub-` (empty = all).
    pub participants: Vec<String>,
    /// Session labels without `ses-` (empty = all).
    pub sessions: Vec<String>,
    /// The T1w query from `--bids-filter-file`, if given.
    pub t1w_filter: Option<Query>,
    /// `--skip-bids-validation`.
    pub skip_validation: bool,
    /// Site column of participants.tsv / sessions.tsv.
    pub site_column: String,
}

/// Threads, memory, failure policy and the compute device.
#[derive(Debug, Clone)]
pub struct Resources {
    /// Threads in total.
    pub nprocs: usize,
    /// Threads per subject.
    pub omp_nthreads: usize,
    /// Memory budget in MB.
    pub mem_mb: Option<u64>,
    /// `--stop-on-first-crash`.
    pub stop_on_first_crash: bool,
    /// Redo current outputs.
    pub force: bool,
    /// Verbosity (0 = warnings and summary).
    pub verbosity: u8,
    /// Backend asked for (`None`: the preferred compiled one).
    pub backend: Option<Backend>,
    /// Device for the networks.
    pub device: DeviceKind,
}

impl Resources {
    /// The memory a training may use: `--mem`, else what this process may have, its cgroup's
    /// limit (containers, SLURM) or, without one, the machine's available memory; with where the
    /// figure comes from, for messages. `None` when neither is known.
    pub fn memory_budget_mb(&self) -> Option<(u64, &'static str)> {
        if let Some(m) = self.mem_mb {
            return Some((m, "--mem"));
        }
        let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|t| cgroup_limit_mb(&t));
        let available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| meminfo_available_mb(&t));
        match (cgroup, available) {
            (Some(c), Some(a)) if c < a => Some((c, "the cgroup's memory.max")),
            (_, Some(a)) => Some((a, "the machine's available memory")),
            (Some(c), None) => Some((c, "the cgroup's memory.max")),
            (None, None) => None,
        }
    }
}

/// A cgroup v2 `memory.max` in MB (`max`: no limit).
fn cgroup_limit_mb(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().map(|b| b >> 20)
}

/// `MemAvailable` of `/proc/meminfo` in MB.
fn meminfo_available_mb(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb >> 10)
}

/// How each T1w is preprocessed.
#[derive(Debug, Clone)]
pub struct Preprocessing {
    /// Intensity scaling parameters.
    pub intensity: IntensityScaling,
    /// Run bias-field correction.
    pub bias_correction: bool,
    /// `--skull-stripped`.
    pub skull_stripped: bool,
    /// Template-space voxel size in mm (1 or 2).
    pub output_resolution: u8,
}

impl Preprocessing {
    /// The preprocessing options of one T1w, given its sidecar (`SkullStripped`).
    pub fn t1w_options(&self, metadata: &serde_json::Map<String, serde_json::Value>) -> T1wOptions {
        let skull_stripped = if self.skull_stripped {
            Some("--skull-stripped".to_string())
        } else if metadata
            .get("SkullStripped")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
        {
            Some("sidecar SkullStripped: true".to_string())
        } else {
            None
        };
        T1wOptions {
            bias_correction: self.bias_correction,
            skull_stripped,
            resolution_mm: self.output_resolution as f64,
            intensity: self.intensity,
            ..T1wOptions::default()
        }
    }
}

/// The HCLD model: an existing one, or how the group level trains one.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// `--model`: an existing model folder.
    pub dir: Option<PathBuf>,
    /// The training configuration (`--config`, with `--epochs-*` applied).
    pub config: HcldConfig,
    /// Checkpoint interval (optimiser steps).
    pub checkpoint_every: usize,
    /// Fewest subjects a site may have for training.
    pub min_site_subjects: usize,
    /// `--train-autoencoder`: train stage 1 on the cohort even when the shipped pretrained
    /// autoencoder fits the configuration.
    pub train_autoencoder: bool,
}

/// Which methods run, towards what, and whether the group level evaluates them.
#[derive(Debug, Clone)]
pub struct Harmonisation {
    /// Whether `--method` was given (otherwise HCLD runs only when a model exists).
    pub methods_explicit: bool,
    /// `--target-site` / `--target-image`.
    pub target: Option<TargetSpec>,
    /// DDIM overrides.
    pub ddim: DdimOverrides,
    /// `--output-mode` (default: the model's).
    pub output_mode: Option<OutputMode>,
    /// `--nyul-landmarks`.
    pub nyul_landmarks: Option<PathBuf>,
    /// Random seed.
    pub seed: u64,
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

/// `--strength`, `--inversion-steps`, `--sampling-steps`, `--clip-x0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DdimOverrides {
    /// x̂₀ clipping.
    pub clip: Option<X0Clip>,
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
            clip: self.clip.unwrap_or(base.clip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_are_read_from_cgroup_and_meminfo() {
        assert_eq!(cgroup_limit_mb("max\n"), None);
        assert_eq!(cgroup_limit_mb("8589934592\n"), Some(8192));
        let meminfo =
            "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   16384000 kB\n";
        assert_eq!(meminfo_available_mb(meminfo), Some(16000));
        assert_eq!(meminfo_available_mb("MemTotal: 1 kB\n"), None);
    }
}
