//! Training the HCLD model's networks (`crate::model`, which never imports this module) in two
//! stages: the autoencoder (L1 + KL, optional patch-GAN), then, with the encoder frozen, the
//! conditional latent diffusion UNet on (source, random target) pairs (ε-MSE + content + Gram
//! style, optional adversarial style and gradient-map terms). Both use Adam with gradient
//! accumulation, a data order and noise that are pure functions of (seed, step), checkpoints
//! every N optimiser steps from which an interrupted run resumes exactly, and a CSV loss curve.
//!
//! Images come through [`TrainingSet`] on the model grid, in [`crate::volume::Volume`] memory
//! order (x fastest); [`grid_tensor`] turns them into `[b, 1, z, y, x]` tensors (the networks
//! are symmetric in the axes, so the order only has to be consistent).
//!
//! Files: `data` (the training-set interface, batches, seeded order and noise),
//! `checkpoint` (checkpoints and loss curves), `stage` (what both stages share), `autoencoder`
//! and `diffusion` (the two stages), `patches` (random augmented patches for pretraining the
//! autoencoder, `hcld-pretrain`), and here [`fit`] (both stages into an artefact's bytes).

mod autoencoder;
mod checkpoint;
mod data;
mod diffusion;
mod patches;
mod prompt_stop;
mod stage;

pub use crate::model::artefact::StageReport;
use crate::model::artefact::{ArtefactFiles, artefact_files};
pub use crate::model::tensor::{grid_tensor, latent_tensor, tensor_values};
pub use autoencoder::{encode_all, latent_scale, reconstruction_error, train_autoencoder};
pub use data::{InMemoryTrainingSet, TrainingError, TrainingSet};
pub use diffusion::{noise_prediction_error, train_diffusion};
pub use patches::{BRAIN_THRESHOLD as PATCH_BRAIN_THRESHOLD, PatchSet};
pub use prompt_stop::StopHandler;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::Device;

use crate::model::config::HcldConfig;
use crate::model::device::ComputeDevice;

/// What a [`ProgressReport`] calls: (stage, step, total steps, loss summary).
type ReportFn = dyn Fn(&str, usize, usize, &str) + Send + Sync;

/// See [`TrainOptions::progress`].
#[derive(Clone)]
pub struct ProgressReport(Arc<ReportFn>);

impl ProgressReport {
    /// Reports with `f(stage, step, total, loss summary)`.
    pub fn new(f: impl Fn(&str, usize, usize, &str) + Send + Sync + 'static) -> Self {
        ProgressReport(Arc::new(f))
    }

    pub(crate) fn report(&self, stage: &str, step: usize, total: usize, summary: &str) {
        (self.0)(stage, step, total, summary)
    }
}

impl std::fmt::Debug for ProgressReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressReport")
    }
}

/// How a training run is driven (as opposed to what it trains: that is the config).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Folder of this run's checkpoints and loss curves (one sub-folder per stage).
    pub checkpoint_dir: PathBuf,
    /// The folder every checkpoint write must stay inside once symbolic links are resolved (the
    /// work directory; by default the checkpoint folder itself).
    pub within: PathBuf,
    /// Checkpoint every this many optimiser steps (and always at the end).
    pub checkpoint_every: usize,
    /// Stop after this many forward passes (`None`: the configured epochs).
    pub max_steps: Option<usize>,
    /// Raised by a signal handler: checkpoint and return [`TrainingError::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
    /// With `stop`: called within a second of the flag going up, once the last optimiser step's
    /// checkpoint is written, instead of waiting for the pass under way (minutes on a CPU) to
    /// end; it ends the process. `None`: the stop is seen at the next optimiser step.
    pub on_stop: Option<StopHandler>,
    /// Where a stage leaves its checkpoint-to-be for the watcher (set by [`fit`]).
    pub(crate) slot: Option<prompt_stop::CheckpointSlot>,
    /// Stage 1's network, already trained (the pretrained autoencoder hcld ships): stage 1 is
    /// skipped and the model records its SHA-256.
    pub pretrained_autoencoder: Option<(crate::model::autoencoder::AutoencoderKl, String)>,
    /// Weights stage 1 starts from instead of a seeded initialisation (`hcld-pretrain --init`:
    /// continuing a shipped autoencoder's training). Callers make it part of the checkpoint's
    /// identity (the configuration's name), so another start never resumes this one's checkpoint.
    pub initial_autoencoder: Option<crate::model::autoencoder::AutoencoderKl>,
    /// Called after every forward pass with (stage, step, total steps, loss summary): where a
    /// caller draws its progress bar.
    pub progress: Option<ProgressReport>,
    /// burn's gradient checkpointing: memory-bound operations (the element-wise pieces of
    /// GroupNorm, SiLU, additions) are recomputed in the backward pass instead of kept. Same
    /// gradients, a fraction of the memory (docs/benchmarks.md); on by default.
    pub gradient_checkpointing: bool,
}

impl TrainOptions {
    /// Checkpoints in `dir` every 50 optimiser steps, the configured epochs.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        TrainOptions {
            within: dir.clone(),
            checkpoint_dir: dir,
            checkpoint_every: 50,
            max_steps: None,
            stop: None,
            on_stop: None,
            slot: None,
            pretrained_autoencoder: None,
            initial_autoencoder: None,
            progress: None,
            gradient_checkpointing: true,
        }
    }

    fn autodiff(&self, device: &Device) -> Device {
        let ad = device.clone().autodiff();
        if self.gradient_checkpointing {
            ad.gradient_checkpointing()
        } else {
            ad
        }
    }

    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// What [`fit`] produced.
#[derive(Debug)]
pub struct FittedModel {
    /// The artefact, serialised (its SHA-256 and files); the caller writes it.
    pub files: ArtefactFiles,
    /// Its manifest (configuration, latent scale, training summary).
    pub manifest: crate::model::artefact::ArtefactManifest,
    /// The scaled posterior-mean latent of every training image, in set order (stage 2 trained on
    /// them; callers choose site representatives from them without encoding again).
    pub latents: Vec<Vec<f32>>,
}

/// Both stages and the artefact: trains the autoencoder, encodes every image once (posterior
/// mean), computes the latent scale, trains the UNet on the scaled latents and writes the model
/// as bytes. Each stage resumes from its checkpoint under `options.checkpoint_dir`.
pub fn fit(
    config: &HcldConfig,
    set: &dyn TrainingSet,
    device: &ComputeDevice,
    options: &TrainOptions,
) -> Result<FittedModel, FitError> {
    config
        .validate()
        .map_err(|e| TrainingError::TooFew(e.to_string()))?;
    let mut options = options.clone();
    let _watcher = match (&options.stop, &options.on_stop) {
        (Some(stop), Some(handler)) => {
            let slot = prompt_stop::CheckpointSlot::default();
            options.slot = Some(slot.clone());
            Some(prompt_stop::Watcher::start(
                Arc::clone(stop),
                slot,
                handler.clone(),
            ))
        }
        _ => None,
    };
    let options = &options;
    let stage_done = || {
        // The stage's final checkpoint is written: nothing newer to save on a stop.
        if let Some(slot) = &options.slot {
            slot.clear();
        }
    };
    let (autoencoder, ae_report) = match &options.pretrained_autoencoder {
        Some((autoencoder, sha256)) => {
            tracing::info!(
                "autoencoder: the pretrained one (weights {}), stage 1 not trained",
                &sha256[..12.min(sha256.len())]
            );
            (autoencoder.clone(), None)
        }
        None => {
            let (autoencoder, report) = train_autoencoder(config, set, device, options)?;
            stage_done();
            (autoencoder, Some(report))
        }
    };
    let raw = encode_all(&autoencoder, config, set, device)?;
    let scale = latent_scale(&raw);
    tracing::info!(
        "latent scale s = 1/std(z) = {scale:.5} over {} images",
        raw.len()
    );
    let scaled: Vec<Vec<f32>> = raw
        .into_iter()
        .map(|l| l.into_iter().map(|v| v * scale as f32).collect())
        .collect();
    let range = latent_range(&scaled);
    tracing::info!("scaled latents span ±{range:.3} (99.9th percentile of |s·z|)");
    let (unet, ldm_report) =
        train_diffusion(config, set, &autoencoder, &scaled, scale, device, options)?;
    stage_done();
    let mut images_per_site = BTreeMap::new();
    for i in 0..set.len() {
        *images_per_site.entry(set.site(i).to_string()).or_insert(0) += 1;
    }
    let manifest = crate::model::artefact::ArtefactManifest {
        format_version: crate::model::artefact::FORMAT_VERSION,
        hcld_version: crate::VERSION.into(),
        config: config.clone(),
        latent_scale: scale,
        latent_range: Some(range),
        training: crate::model::artefact::TrainingSummary {
            images_per_site,
            autoencoder: ae_report,
            pretrained_autoencoder: options
                .pretrained_autoencoder
                .as_ref()
                .map(|(_, sha)| sha.clone()),
            diffusion: Some(ldm_report),
            backend: device.describe(),
        },
    };
    let files = artefact_files(&manifest, &autoencoder, &unet)?;
    Ok(FittedModel {
        files,
        manifest,
        latents: scaled,
    })
}

/// The 99.9th percentile of |z| over scaled latents: the range real latents span, where
/// `--clip-x0 latents` clips x̂₀.
pub fn latent_range(latents: &[Vec<f32>]) -> f64 {
    let mut all: Vec<f32> = latents.iter().flatten().map(|v| v.abs()).collect();
    if all.is_empty() {
        return 1.0;
    }
    let k = ((all.len() - 1) as f64 * 0.999).round() as usize;
    let (_, v, _) = all.select_nth_unstable_by(k, f32::total_cmp);
    f64::from(*v)
}

/// Why [`fit`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// A training stage.
    #[error(transparent)]
    Training(#[from] TrainingError),
    /// Serialising the artefact.
    #[error(transparent)]
    Artefact(#[from] crate::model::artefact::ArtefactError),
}

#[cfg(test)]
mod tests {
    use super::data::batch_indices;
    use super::diffusion::choose_targets;
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    #[test]
    fn data_order_is_a_seeded_permutation_per_epoch() {
        let mut seen = Vec::new();
        for step in 0..4 {
            let (epoch, idx) = batch_indices(7, 1, 7, 2, step);
            assert_eq!(epoch, 0);
            seen.extend(idx);
        }
        seen.sort();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        assert_eq!(batch_indices(7, 1, 7, 2, 3).1.len(), 1);
        assert_eq!(batch_indices(7, 1, 7, 2, 4).0, 1);
        // A function of (seed, step) alone, pinned: resuming (in another process, another
        // version) replays the same batches; a change of the shuffle or the seeding fails here.
        assert_eq!(batch_indices(7, 1, 7, 2, 5), (1, vec![6, 2]));
        assert_ne!(
            batch_indices(7, 1, 7, 7, 0).1,
            batch_indices(7, 1, 7, 7, 1).1,
            "epochs are shuffled differently"
        );
    }

    #[test]
    fn targets_come_from_sites_and_avoid_the_source() {
        let mut by_site = BTreeMap::new();
        by_site.insert("a".to_string(), vec![0, 1]);
        by_site.insert("b".to_string(), vec![2]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut sites_hit = [0; 2];
        for _ in 0..200 {
            let t = choose_targets(&mut rng, &[0], &by_site)[0];
            assert_ne!(t, 0);
            sites_hit[usize::from(t == 2)] += 1;
        }
        assert!(sites_hit[0] > 60 && sites_hit[1] > 60, "{sites_hit:?}");
    }

    #[test]
    fn the_latent_range_is_the_999th_permille_of_magnitudes() {
        let l: Vec<Vec<f32>> = vec![(0..1000).map(|i| -(i as f32) / 100.0).collect(), vec![0.5]];
        // 1001 magnitudes 0.00 … 9.99 and 0.5: the 999th permille is index 1000·0.999 = 999 of
        // the sorted 1001, i.e. 9.98.
        assert!(
            (latent_range(&l) - 9.98).abs() < 1e-5,
            "{}",
            latent_range(&l)
        );
        assert_eq!(latent_range(&[]), 1.0);
    }

    #[test]
    fn latent_scale_is_one_over_std() {
        let l = vec![vec![1.0, -1.0], vec![1.0, -1.0]];
        // Sample std of [1, −1, 1, −1] = √(4/3).
        assert!((latent_scale(&l) - (0.75f64).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn grid_tensors_round_trip_in_volume_order() {
        let device = Device::default();
        let im: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let t = grid_tensor(&[&im], [2, 3, 4], &device);
        assert_eq!(t.dims(), [1, 1, 4, 3, 2]);
        assert_eq!(tensor_values(t), vec![im]);
    }
}
