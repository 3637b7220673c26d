//! The two training stages: the autoencoder (L1 + KL, optional patch-GAN), then, with the encoder
//! frozen, the conditional latent diffusion UNet on (source, random target) pairs (ε-MSE + content +
//! Gram style, optional adversarial style and gradient-map terms). Both use Adam with gradient
//! accumulation, a data order and noise that are pure functions of (seed, step), checkpoints
//! every N optimiser steps from which an interrupted run resumes exactly, and a CSV loss curve.
//!
//! Images come through [`TrainingSet`] on the model grid, in [`crate::volume::Volume`] memory
//! order (x fastest); [`grid_tensor`] turns them into `[b, 1, z, y, x]` tensors (the networks are
//! symmetric in the axes, so the order only has to be consistent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::autoencoder::AutoencoderKl;
use super::config::HcldConfig;
use super::device::ComputeDevice;
use super::discriminator::{Discriminator, DiscriminatorConfig};
use super::latent_ops::adain;
use super::losses;
use super::storage::{StorageError, read, sha256_hex, write_atomic};
use super::unet::DiffusionUnet;

/// The images a model is trained on.
pub trait TrainingSet: Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A name for messages (e.g. the BIDS file).
    fn id(&self, i: usize) -> &str;
    /// The acquisition site of image `i`.
    fn site(&self, i: usize) -> &str;
    /// Image `i` on the model grid (x fastest), intensities normalised as the pipeline does.
    fn image(&self, i: usize) -> Result<Vec<f32>, TrainingError>;
    /// Brain mask of image `i` on the grid (1 inside), for the gradient-map loss; `None` = no
    /// mask (the whole grid counts).
    fn brain_mask(&self, _i: usize) -> Result<Option<Vec<f32>>, TrainingError> {
        Ok(None)
    }
}

/// A [`TrainingSet`] held in memory: (id, site, image) triples.
#[derive(Debug, Clone, Default)]
pub struct InMemoryTrainingSet {
    /// The images.
    pub items: Vec<(String, String, Vec<f32>)>,
}

impl TrainingSet for InMemoryTrainingSet {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn id(&self, i: usize) -> &str {
        &self.items[i].0
    }
    fn site(&self, i: usize) -> &str {
        &self.items[i].1
    }
    fn image(&self, i: usize) -> Result<Vec<f32>, TrainingError> {
        Ok(self.items[i].2.clone())
    }
}

/// Why training stopped without a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// An image could not be used.
    #[error("{id}: {message}")]
    Data {
        /// The image.
        id: String,
        /// What is wrong with it.
        message: String,
    },
    /// Too few images (or sites) for this stage.
    #[error("cannot train: {0}")]
    TooFew(String),
    /// A checkpoint or curve file.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A checkpoint exists but cannot be resumed.
    #[error(
        "{path}: {message}; delete the folder to start this stage again, or restore the \
         configuration it was made with"
    )]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// Why it cannot be used.
        message: String,
    },
    /// The stop flag was raised; the last checkpoint holds the progress.
    #[error("training interrupted at step {step} of {stage}; run again to resume")]
    Interrupted {
        /// Which stage.
        stage: &'static str,
        /// The forward passes completed and checkpointed.
        step: usize,
    },
}

/// How a training run is driven (as opposed to what it trains: that is the config).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Folder of this run's checkpoints and loss curves (one sub-folder per stage).
    pub checkpoint_dir: PathBuf,
    /// Checkpoint every this many optimiser steps (and always at the end).
    pub checkpoint_every: usize,
    /// Stop after this many forward passes (`None`: the configured epochs).
    pub max_steps: Option<usize>,
    /// Raised by a signal handler: checkpoint and return [`TrainingError::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
    /// burn's gradient checkpointing: memory-bound operations (the element-wise pieces of
    /// GroupNorm, SiLU, additions) are recomputed in the backward pass instead of kept. Same
    /// gradients, a fraction of the memory (docs/benchmarks.md); on by default.
    pub gradient_checkpointing: bool,
}

impl TrainOptions {
    /// Checkpoints in `dir` every 50 optimiser steps, the configured epochs.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TrainOptions {
            checkpoint_dir: dir.into(),
            checkpoint_every: 50,
            max_steps: None,
            stop: None,
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

/// What one stage did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageReport {
    /// Forward passes done in total (including before a resume).
    pub steps: usize,
    /// Optimiser steps done in total.
    pub optimizer_steps: usize,
    /// Epochs covered (fractional when stopped by `max_steps`).
    pub epochs: f64,
    /// The forward pass this run resumed after, if it resumed.
    pub resumed_from: Option<usize>,
    /// Mean total loss of the first and last 10 % of the recorded curve.
    pub first_loss: f64,
    /// See `first_loss`.
    pub last_loss: f64,
    /// Wall time of this run (not counting earlier runs).
    pub seconds: f64,
}

/// Images (x fastest, each `shape`) as a `[b, 1, z, y, x]` tensor.
pub fn grid_tensor(images: &[&[f32]], shape: [usize; 3], device: &Device) -> Tensor<5> {
    let n = shape[0] * shape[1] * shape[2];
    let mut data = Vec::with_capacity(n * images.len());
    for im in images {
        assert_eq!(im.len(), n, "image size does not match the grid");
        data.extend_from_slice(im);
    }
    Tensor::from_data(
        TensorData::new(data, [images.len(), 1, shape[2], shape[1], shape[0]]),
        device,
    )
}

/// The inverse of [`grid_tensor`] for any channel count: one `Vec` per batch item.
pub fn tensor_values(t: Tensor<5>) -> Vec<Vec<f32>> {
    let b = t.dims()[0];
    let all: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32 data");
    let per = all.len() / b.max(1);
    all.chunks(per.max(1)).map(|c| c.to_vec()).collect()
}

/// Latents `[c, z', y', x']` values (as [`tensor_values`] gives them) back to a tensor.
pub fn latent_tensor(latents: &[&[f32]], shape: [usize; 4], device: &Device) -> Tensor<5> {
    let mut data = Vec::new();
    for l in latents {
        data.extend_from_slice(l);
    }
    Tensor::from_data(
        TensorData::new(
            data,
            [latents.len(), shape[0], shape[3], shape[2], shape[1]],
        ),
        device,
    )
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 data")[0]
}

/// The seed of the random numbers of one step of one stage (SplitMix64 finaliser, so nearby
/// steps get unrelated streams).
fn step_seed(seed: u64, stage: u64, step: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stage.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The images of forward pass `step`: epoch `step / steps_per_epoch` visits a seeded permutation
/// in batches (the last one smaller).
fn batch_indices(
    seed: u64,
    stage: u64,
    n: usize,
    batch: usize,
    step: usize,
) -> (usize, Vec<usize>) {
    let per_epoch = n.div_ceil(batch);
    let (epoch, k) = (step / per_epoch, step % per_epoch);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(step_seed(seed, stage + 100, epoch as u64));
    order.shuffle(&mut rng);
    (epoch, order[k * batch..((k + 1) * batch).min(n)].to_vec())
}

fn normal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// A stage's checkpoint folder: `state.json` plus one burnpack per module and optimiser.
struct Checkpoint {
    dir: PathBuf,
    config_digest: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    optimizer_steps: usize,
    config_digest: String,
    hcld_version: String,
}

impl Checkpoint {
    fn new(root: &Path, stage: &str, config: &HcldConfig, extra: &str) -> Self {
        let json = serde_json::to_string(config).expect("config serialises");
        Checkpoint {
            dir: root.join(stage),
            config_digest: sha256_hex(format!("{json}\n{extra}").as_bytes()),
        }
    }

    fn state(&self) -> Result<Option<CheckpointState>, TrainingError> {
        let p = self.dir.join("state.json");
        if !p.exists() {
            return Ok(None);
        }
        let state: CheckpointState =
            serde_json::from_slice(&read(&p)?).map_err(|e| TrainingError::Checkpoint {
                path: self.dir.clone(),
                message: format!("state.json is unreadable ({e})"),
            })?;
        if state.config_digest != self.config_digest {
            return Err(TrainingError::Checkpoint {
                path: self.dir.clone(),
                message: "it was made with a different configuration or training set".into(),
            });
        }
        Ok(Some(state))
    }

    fn load_module<M: Module>(&self, name: &str, module: M) -> Result<M, TrainingError> {
        let p = self.dir.join(format!("{name}.bpk"));
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(read(&p)?)).map_err(|e| {
            TrainingError::Checkpoint {
                path: p.clone(),
                message: e.to_string(),
            }
        })?;
        module
            .try_load_record(record)
            .map_err(|e| TrainingError::Checkpoint {
                path: p,
                message: e.to_string(),
            })
    }

    fn load_optimizer(
        &self,
        name: &str,
        optim: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, TrainingError> {
        let p = self.dir.join(format!("{name}.bpk"));
        optim
            .from_bytes(Bytes::from_bytes_vec(read(&p)?))
            .map_err(|e| TrainingError::Checkpoint {
                path: p,
                message: e.to_string(),
            })
    }

    /// Writes modules and optimisers first and `state.json` last, so a checkpoint is only
    /// visible once all its parts are in place.
    fn save(
        &self,
        step: usize,
        optimizer_steps: usize,
        modules: Vec<(&str, ModuleRecord)>,
        optimizers: Vec<(&str, &ModuleOptimizer)>,
    ) -> Result<(), TrainingError> {
        let fail = |p: &Path, e: String| TrainingError::Checkpoint {
            path: p.to_path_buf(),
            message: e,
        };
        for (name, record) in modules {
            let p = self.dir.join(format!("{name}.bpk"));
            let bytes = record.into_bytes().map_err(|e| fail(&p, e.to_string()))?;
            write_atomic(&p, &bytes)?;
        }
        for (name, optim) in optimizers {
            let p = self.dir.join(format!("{name}.bpk"));
            let bytes = optim.into_bytes().map_err(|e| fail(&p, e.to_string()))?;
            write_atomic(&p, &bytes)?;
        }
        let state = CheckpointState {
            step,
            optimizer_steps,
            config_digest: self.config_digest.clone(),
            hcld_version: crate::VERSION.into(),
        };
        write_atomic(
            &self.dir.join("state.json"),
            serde_json::to_string_pretty(&state)
                .expect("serialises")
                .as_bytes(),
        )?;
        Ok(())
    }
}

/// The loss curve of a stage: `loss.csv` with one row per forward pass. Rows past the last
/// checkpoint are dropped on resume, so the curve never repeats a step.
struct Curve {
    path: PathBuf,
    columns: Vec<&'static str>,
    rows: Vec<Vec<f64>>,
}

impl Curve {
    fn open(dir: &Path, columns: Vec<&'static str>, keep_until: usize) -> Self {
        let path = dir.join("loss.csv");
        let mut rows = Vec::new();
        if let Ok(mut r) = csv::Reader::from_path(&path) {
            for rec in r.records().flatten() {
                let row: Vec<f64> = rec.iter().filter_map(|v| v.parse().ok()).collect();
                if row.len() == columns.len() && (row[0] as usize) <= keep_until {
                    rows.push(row);
                }
            }
        }
        Curve {
            path,
            columns,
            rows,
        }
    }

    /// Adds a row as the file stores it (losses to 7 significant digits), so the summary of a
    /// run resumed from the file equals that of an uninterrupted one.
    fn push(&mut self, row: Vec<f64>) {
        debug_assert_eq!(row.len(), self.columns.len());
        let row = row
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i < 2 { v } else { Self::stored(v) })
            .collect();
        self.rows.push(row);
    }

    /// A loss as written to the CSV and read back.
    fn stored(v: f64) -> f64 {
        format!("{v:.6e}").parse().unwrap_or(v)
    }

    /// Rewrites the file atomically (called with each checkpoint and at the end).
    fn save(&self) -> Result<(), TrainingError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let fail = |e: csv::Error| StorageError::new(&self.path, e.to_string());
        w.write_record(&self.columns).map_err(fail)?;
        for row in &self.rows {
            let fields: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if i < 2 {
                        format!("{v}")
                    } else {
                        format!("{v:.6e}")
                    }
                })
                .collect();
            w.write_record(&fields).map_err(fail)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| StorageError::new(&self.path, e.to_string()))?;
        write_atomic(&self.path, &bytes)?;
        Ok(())
    }

    /// Mean total loss (column 2) of the first and last 10 % of rows.
    fn first_last(&self) -> (f64, f64) {
        let n = self.rows.len();
        if n == 0 {
            return (f64::NAN, f64::NAN);
        }
        let k = (n / 10).max(1);
        let mean = |rows: &[Vec<f64>]| rows.iter().map(|r| r[2]).sum::<f64>() / rows.len() as f64;
        (mean(&self.rows[..k]), mean(&self.rows[n - k..]))
    }
}

/// What both stages share: the network being trained with its optimiser and gradient
/// accumulator, the optional discriminator with its own, the step counters, and the checkpoint
/// they resume from and are saved to.
struct StageRun<M: Module> {
    name: &'static str,
    ckpt: Checkpoint,
    model: M,
    optim: ModuleOptimizer,
    accumulator: GradientsAccumulator<M>,
    disc: Option<Discriminator>,
    disc_optim: ModuleOptimizer,
    disc_accumulator: GradientsAccumulator<Discriminator>,
    step: usize,
    optimizer_steps: usize,
    resumed_from: Option<usize>,
}

/// How a stage steps its optimisers.
struct StepPlan {
    learning_rate: f64,
    discriminator_learning_rate: f64,
    accumulation_steps: usize,
    total: usize,
    per_epoch: usize,
}

impl<M: Module> StageRun<M> {
    /// New networks, or those of the stage's checkpoint when it has one.
    fn start(
        name: &'static str,
        ckpt: Checkpoint,
        model: M,
        optim: ModuleOptimizer,
        disc: Option<Discriminator>,
        disc_optim: ModuleOptimizer,
    ) -> Result<Self, TrainingError> {
        let mut run = StageRun {
            name,
            model,
            optim,
            accumulator: GradientsAccumulator::new(),
            disc,
            disc_optim,
            disc_accumulator: GradientsAccumulator::new(),
            step: 0,
            optimizer_steps: 0,
            resumed_from: None,
            ckpt,
        };
        if let Some(state) = run.ckpt.state()? {
            run.model = run.ckpt.load_module("model", run.model)?;
            run.optim = run.ckpt.load_optimizer("optimizer", run.optim)?;
            if let Some(d) = run.disc.take() {
                run.disc = Some(run.ckpt.load_module("discriminator", d)?);
                run.disc_optim = run
                    .ckpt
                    .load_optimizer("discriminator_optimizer", run.disc_optim)?;
            }
            tracing::info!(
                "{name}: resuming after step {} from {}",
                state.step,
                run.ckpt.dir.display()
            );
            (run.step, run.optimizer_steps, run.resumed_from) =
                (state.step, state.optimizer_steps, Some(state.step));
        }
        Ok(run)
    }

    /// Ends a forward pass whose gradients are accumulated: records its curve row (`values`
    /// after step and epoch), steps the optimisers every `accumulation_steps` passes and at the
    /// last, checkpoints when due or asked to stop, and stops with
    /// [`TrainingError::Interrupted`] when asked.
    fn end_forward(
        mut self,
        plan: &StepPlan,
        options: &TrainOptions,
        curve: &mut Curve,
        epoch: usize,
        values: &[f64],
    ) -> Result<Self, TrainingError> {
        self.step += 1;
        let mut row = vec![self.step as f64, epoch as f64];
        row.extend_from_slice(values);
        curve.push(row);
        let step = self.step;
        if step.is_multiple_of(plan.accumulation_steps) || step == plan.total {
            self.model = self
                .optim
                .step(plan.learning_rate, self.model, self.accumulator.grads());
            if let Some(d) = self.disc.take() {
                self.disc = Some(self.disc_optim.step(
                    plan.discriminator_learning_rate,
                    d,
                    self.disc_accumulator.grads(),
                ));
            }
            self.optimizer_steps += 1;
            let stop = options.stopped();
            if self
                .optimizer_steps
                .is_multiple_of(options.checkpoint_every.max(1))
                || step == plan.total
                || stop
            {
                let mut modules = vec![("model", self.model.clone().into_record())];
                let mut optimizers = vec![("optimizer", &self.optim)];
                if let Some(d) = &self.disc {
                    modules.push(("discriminator", d.clone().into_record()));
                    optimizers.push(("discriminator_optimizer", &self.disc_optim));
                }
                self.ckpt
                    .save(step, self.optimizer_steps, modules, optimizers)?;
                curve.save()?;
            }
            if stop && step < plan.total {
                return Err(TrainingError::Interrupted {
                    stage: self.name,
                    step,
                });
            }
        }
        Ok(self)
    }

    /// Saves the curve and sums the stage up.
    fn finish(
        &self,
        plan: &StepPlan,
        curve: &Curve,
        started: Instant,
    ) -> Result<StageReport, TrainingError> {
        curve.save()?;
        let (first_loss, last_loss) = curve.first_last();
        Ok(StageReport {
            steps: self.step,
            optimizer_steps: self.optimizer_steps,
            epochs: self.step as f64 / plan.per_epoch as f64,
            resumed_from: self.resumed_from,
            first_loss,
            last_loss,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

fn load_images(
    set: &dyn TrainingSet,
    indices: &[usize],
    n: usize,
) -> Result<Vec<Vec<f32>>, TrainingError> {
    indices
        .iter()
        .map(|&i| {
            let im = set.image(i)?;
            if im.len() != n {
                return Err(TrainingError::Data {
                    id: set.id(i).into(),
                    message: format!(
                        "has {} voxels but the model grid has {n}; preprocess it onto the grid",
                        im.len()
                    ),
                });
            }
            if im.iter().any(|v| !v.is_finite()) {
                return Err(TrainingError::Data {
                    id: set.id(i).into(),
                    message: "contains NaN or infinite values; re-run preprocessing".into(),
                });
            }
            Ok(im)
        })
        .collect()
}

fn total_steps(config_epochs: usize, n: usize, batch: usize, max_steps: Option<usize>) -> usize {
    let per_epoch = n.div_ceil(batch);
    match max_steps {
        Some(m) => m,
        None => config_epochs * per_epoch,
    }
}

/// A digest of what the training set is (ids, sites, order), so a checkpoint of another set is
/// not resumed.
fn set_digest(set: &dyn TrainingSet) -> String {
    let mut s = String::new();
    for i in 0..set.len() {
        s.push_str(set.id(i));
        s.push('\t');
        s.push_str(set.site(i));
        s.push('\n');
    }
    sha256_hex(s.as_bytes())
}

/// Stage 1: trains the autoencoder from scratch (or from its checkpoint) and returns it ready for
/// inference.
pub fn train_autoencoder(
    config: &HcldConfig,
    set: &dyn TrainingSet,
    device: &ComputeDevice,
    options: &TrainOptions,
) -> Result<(AutoencoderKl, StageReport), TrainingError> {
    let tc = &config.autoencoder_training;
    if set.is_empty() {
        return Err(TrainingError::TooFew(
            "no images to train the autoencoder on".into(),
        ));
    }
    let started = Instant::now();
    let ad = options.autodiff(&device.device);
    let shape = config.grid.shape;
    let voxels = shape.iter().product::<usize>();
    let total = total_steps(tc.epochs, set.len(), tc.batch_size, options.max_steps);
    let ckpt = Checkpoint::new(
        &options.checkpoint_dir,
        "autoencoder",
        config,
        &set_digest(set),
    );

    let model = ComputeDevice::init_seeded(&ad, config.seed, |d| config.autoencoder.init(d));
    let optim = AdamConfig::new().init();
    let adversarial = tc.adversarial_weight > 0.0;
    let disc: Option<Discriminator> = adversarial.then(|| {
        ComputeDevice::init_seeded(&ad, config.seed.wrapping_add(1), |d| {
            DiscriminatorConfig::patch(
                config.autoencoder.image_channels,
                tc.discriminator_channels,
                tc.discriminator_layers,
            )
            .init(d)
        })
    });
    let disc_optim = AdamConfig::new().init();
    let curve_dir = ckpt.dir.clone();
    let mut run = StageRun::start("autoencoder", ckpt, model, optim, disc, disc_optim)?;
    let mut curve = Curve::open(
        &curve_dir,
        vec![
            "step",
            "epoch",
            "loss",
            "l1",
            "kl",
            "adversarial",
            "discriminator",
        ],
        run.step,
    );
    let plan = StepPlan {
        learning_rate: tc.learning_rate,
        discriminator_learning_rate: tc.discriminator_learning_rate,
        accumulation_steps: tc.accumulation_steps,
        total,
        per_epoch: set.len().div_ceil(tc.batch_size),
    };

    while run.step < total {
        let (epoch, indices) = batch_indices(config.seed, 1, set.len(), tc.batch_size, run.step);
        let images = load_images(set, &indices, voxels)?;
        let refs: Vec<&[f32]> = images.iter().map(|v| v.as_slice()).collect();
        let x = grid_tensor(&refs, shape, &ad);
        let mut rng = ChaCha8Rng::seed_from_u64(step_seed(config.seed, 1, run.step as u64));

        let (mu, log_var) = run.model.encode(x.clone());
        let dims = mu.dims();
        let noise = Tensor::<5>::from_data(
            TensorData::new(normal(&mut rng, dims.iter().product()), dims),
            &ad,
        );
        let z = mu.clone() + log_var.clone().mul_scalar(0.5).exp() * noise;
        let reconstruction = run.model.decode(z);
        let l1 = losses::l1(reconstruction.clone(), x.clone());
        let kl = losses::kl_divergence(mu, log_var);
        let mut loss = l1.clone() + kl.clone().mul_scalar(tc.kl_weight);
        let mut adv_value = 0.0;
        if let Some(d) = &run.disc {
            let generator =
                losses::least_squares_adversarial(d.forward(reconstruction.clone()), true);
            adv_value = scalar(generator.clone());
            loss = loss + generator.mul_scalar(tc.adversarial_weight);
        }
        let loss_value = scalar(loss.clone());
        let (l1_value, kl_value) = (scalar(l1), scalar(kl));
        if !loss_value.is_finite() {
            return Err(TrainingError::Data {
                id: indices
                    .iter()
                    .map(|&i| set.id(i))
                    .collect::<Vec<_>>()
                    .join(", "),
                message: "the autoencoder loss became non-finite; lower the learning rate".into(),
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &run.model);
        run.accumulator.accumulate(&run.model, grads);

        let mut disc_value = 0.0;
        if let Some(d) = &run.disc {
            let fake = losses::least_squares_adversarial(d.forward(reconstruction.detach()), false);
            let real = losses::least_squares_adversarial(d.forward(x.detach()), true);
            let d_loss = (fake + real).mul_scalar(0.5 * tc.adversarial_weight);
            disc_value = scalar(d_loss.clone()) / tc.adversarial_weight;
            let grads = GradientsParams::from_grads(d_loss.backward(), d);
            run.disc_accumulator.accumulate(d, grads);
        }

        run = run.end_forward(
            &plan,
            options,
            &mut curve,
            epoch,
            &[loss_value, l1_value, kl_value, adv_value, disc_value],
        )?;
        let step = run.step;
        if step % plan.per_epoch.max(1) == 0 || step == total {
            tracing::info!(
                "autoencoder: step {step}/{total} (epoch {}), loss {loss_value:.4} (L1 {l1_value:.4})",
                epoch + 1
            );
        }
    }
    let report = run.finish(&plan, &curve, started)?;
    Ok((to_inference(run.model, config, device), report))
}

/// The trained autoencoder on the plain (non-autodiff) device.
fn to_inference(
    model: AutoencoderKl,
    config: &HcldConfig,
    device: &ComputeDevice,
) -> AutoencoderKl {
    config
        .autoencoder
        .init(&device.device)
        .load_record(model.valid().into_record())
}

/// Posterior means μ of every image (unscaled), in [`tensor_values`] layout.
pub fn encode_all(
    ae: &AutoencoderKl,
    config: &HcldConfig,
    set: &dyn TrainingSet,
    device: &ComputeDevice,
) -> Result<Vec<Vec<f32>>, TrainingError> {
    let voxels = config.grid.shape.iter().product::<usize>();
    let mut out = Vec::with_capacity(set.len());
    for i in 0..set.len() {
        let image = load_images(set, &[i], voxels)?.remove(0);
        let x = grid_tensor(&[&image], config.grid.shape, &device.device);
        let (mu, _) = ae.encode(x);
        out.push(tensor_values(mu).remove(0));
    }
    Ok(out)
}

/// The latent scale s = 1/std(z) over all values of the training latents (stored in the model).
pub fn latent_scale(latents: &[Vec<f32>]) -> f64 {
    let n: usize = latents.iter().map(|l| l.len()).sum();
    if n < 2 {
        return 1.0;
    }
    let mean = latents.iter().flatten().map(|v| *v as f64).sum::<f64>() / n as f64;
    let var = latents
        .iter()
        .flatten()
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    if var > 0.0 { 1.0 / var.sqrt() } else { 1.0 }
}

/// For each source image, a target image: a uniformly chosen site, then one of its images other
/// than the source when the site has another.
fn choose_targets(
    rng: &mut ChaCha8Rng,
    sources: &[usize],
    by_site: &BTreeMap<String, Vec<usize>>,
) -> Vec<usize> {
    let sites: Vec<&Vec<usize>> = by_site.values().collect();
    sources
        .iter()
        .map(|&s| {
            let members = sites[rng.random_range(0..sites.len())];
            let others: Vec<usize> = members.iter().copied().filter(|&m| m != s).collect();
            if others.is_empty() {
                members[0]
            } else {
                others[rng.random_range(0..others.len())]
            }
        })
        .collect()
}

/// Per-sample `[b, 1, 1, 1, 1]` coefficients.
fn per_sample(values: &[f64], device: &Device) -> Tensor<5> {
    let v: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    Tensor::<1>::from_floats(v.as_slice(), device).reshape([values.len(), 1, 1, 1, 1])
}

/// Stage 2: trains the UNet on the frozen autoencoder's latents. `latents` are the scaled
/// posterior means of every image of `set` (same order).
pub fn train_diffusion(
    config: &HcldConfig,
    set: &dyn TrainingSet,
    autoencoder: &AutoencoderKl,
    latents: &[Vec<f32>],
    latent_scale: f64,
    device: &ComputeDevice,
    options: &TrainOptions,
) -> Result<(DiffusionUnet, StageReport), TrainingError> {
    let tc = &config.diffusion_training;
    if set.len() < 2 {
        return Err(TrainingError::TooFew(
            "the diffusion stage needs at least two images (source and target)".into(),
        ));
    }
    assert_eq!(latents.len(), set.len(), "one latent per image");
    let started = Instant::now();
    let schedule = config
        .schedule
        .build()
        .map_err(|e| TrainingError::TooFew(e.to_string()))?;
    let ad = options.autodiff(&device.device);
    let latent_shape = config.latent_shape();
    let total = total_steps(tc.epochs, set.len(), tc.batch_size, options.max_steps);
    let extra = format!("{}\n{latent_scale}", set_digest(set));
    let ckpt = Checkpoint::new(&options.checkpoint_dir, "diffusion", config, &extra);
    let mut by_site: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in 0..set.len() {
        by_site.entry(set.site(i).to_string()).or_default().push(i);
    }

    let model =
        ComputeDevice::init_seeded(&ad, config.seed.wrapping_add(2), |d| config.unet.init(d));
    let optim = AdamConfig::new().init();
    let adversarial = tc.adversarial_style_weight > 0.0;
    let disc = adversarial.then(|| {
        ComputeDevice::init_seeded(&ad, config.seed.wrapping_add(3), |d| {
            DiscriminatorConfig::style(config.autoencoder.latent_channels).init(d)
        })
    });
    let disc_optim = AdamConfig::new().with_beta_1(0.5).init();
    // The decoder is needed (with gradients to its input only) for the gradient-map loss.
    let decoder = (tc.gradient_map_weight > 0.0).then(|| {
        config
            .autoencoder
            .init(&ad)
            .load_record(autoencoder.clone().into_record())
            .no_grad()
    });
    let curve_dir = ckpt.dir.clone();
    let mut run = StageRun::start("diffusion", ckpt, model, optim, disc, disc_optim)?;
    let mut curve = Curve::open(
        &curve_dir,
        vec![
            "step",
            "epoch",
            "loss",
            "noise",
            "content",
            "style",
            "adversarial_style",
            "gradient_map",
            "discriminator",
        ],
        run.step,
    );
    let plan = StepPlan {
        learning_rate: tc.learning_rate,
        discriminator_learning_rate: tc.discriminator_learning_rate,
        accumulation_steps: tc.accumulation_steps,
        total,
        per_epoch: set.len().div_ceil(tc.batch_size),
    };
    let clip = schedule.config().clip_sample_range;
    let voxels = config.grid.shape.iter().product::<usize>();

    while run.step < total {
        let (epoch, sources) = batch_indices(config.seed, 2, set.len(), tc.batch_size, run.step);
        let mut rng = ChaCha8Rng::seed_from_u64(step_seed(config.seed, 2, run.step as u64));
        let targets = choose_targets(&mut rng, &sources, &by_site);
        let b = sources.len();
        let src_refs: Vec<&[f32]> = sources.iter().map(|&i| latents[i].as_slice()).collect();
        let tar_refs: Vec<&[f32]> = targets.iter().map(|&i| latents[i].as_slice()).collect();
        let z_src = latent_tensor(&src_refs, latent_shape, &ad);
        let z_tar = latent_tensor(&tar_refs, latent_shape, &ad);
        let fused = adain(z_src.clone(), z_tar.clone(), 1e-6);

        let timesteps: Vec<usize> = (0..b)
            .map(|_| rng.random_range(0..schedule.len()))
            .collect();
        let dims = fused.dims();
        let noise = Tensor::<5>::from_data(
            TensorData::new(normal(&mut rng, dims.iter().product()), dims),
            &ad,
        );
        let (a, s): (Vec<f64>, Vec<f64>) = timesteps
            .iter()
            .map(|&t| schedule.q_sample_coefficients(t))
            .unzip();
        let (ca, cs) = (per_sample(&a, &ad), per_sample(&s, &ad));
        let noisy = fused.clone() * ca.clone() + noise.clone() * cs.clone();
        let t_f32: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        let eps = run
            .model
            .forward(Tensor::cat(vec![noisy.clone(), z_tar.clone()], 1), &t_f32);
        let x0_raw = (noisy - eps.clone() * cs) / ca;
        let x0 = x0_raw.clone().clamp(-clip, clip);
        let noise_loss = losses::mse(eps, noise);
        let content = if tc.clip_x0_in_content_loss {
            losses::content(fused, x0.clone())
        } else {
            losses::content(fused, x0_raw)
        };
        let style = losses::gram_style(x0.clone(), z_tar.clone());
        let mut loss = noise_loss.clone().mul_scalar(tc.noise_weight)
            + content.clone().mul_scalar(tc.content_weight)
            + style.clone().mul_scalar(tc.style_weight);
        let mut grad_value = 0.0;
        if let Some(dec) = &decoder {
            let images = load_images(set, &sources, voxels)?;
            let refs: Vec<&[f32]> = images.iter().map(|v| v.as_slice()).collect();
            let x = grid_tensor(&refs, config.grid.shape, &ad);
            let masks: Vec<Vec<f32>> = sources
                .iter()
                .map(|&i| Ok(set.brain_mask(i)?.unwrap_or_else(|| vec![1.0; voxels])))
                .collect::<Result<_, TrainingError>>()?;
            let mrefs: Vec<&[f32]> = masks.iter().map(|v| v.as_slice()).collect();
            let mask = grid_tensor(&mrefs, config.grid.shape, &ad);
            let decoded = dec.decode(x0.clone().div_scalar(latent_scale));
            let g = losses::mse(
                losses::gradient_map(x * mask.clone()),
                losses::gradient_map(decoded * mask),
            );
            grad_value = scalar(g.clone());
            loss = loss + g.mul_scalar(tc.gradient_map_weight);
        }
        let mut adv_value = 0.0;
        let mut disc_value = 0.0;
        if let Some(d) = run
            .disc
            .as_ref()
            .filter(|_| epoch >= tc.adversarial_burn_in_epochs)
        {
            let adv = losses::logistic_adversarial(d.forward(x0.clone()), true);
            adv_value = scalar(adv.clone());
            loss = loss + adv.mul_scalar(tc.adversarial_style_weight);
        }
        let loss_value = scalar(loss.clone());
        let (noise_value, content_value, style_value) =
            (scalar(noise_loss), scalar(content), scalar(style));
        if !loss_value.is_finite() {
            return Err(TrainingError::Data {
                id: sources
                    .iter()
                    .map(|&i| set.id(i))
                    .collect::<Vec<_>>()
                    .join(", "),
                message: "the diffusion loss became non-finite; lower the learning rate".into(),
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &run.model);
        run.accumulator.accumulate(&run.model, grads);
        if let Some(d) = &run.disc {
            // The reference's style discriminator: target latents are "real", source latents
            // "fake".
            let real = losses::logistic_adversarial(d.forward(z_tar.detach()), true);
            let fake = losses::logistic_adversarial(d.forward(z_src.detach()), false);
            let d_loss = real + fake;
            disc_value = scalar(d_loss.clone());
            let grads = GradientsParams::from_grads(d_loss.backward(), d);
            run.disc_accumulator.accumulate(d, grads);
        }

        run = run.end_forward(
            &plan,
            options,
            &mut curve,
            epoch,
            &[
                loss_value,
                noise_value,
                content_value,
                style_value,
                adv_value,
                grad_value,
                disc_value,
            ],
        )?;
        let step = run.step;
        if step % plan.per_epoch.max(1) == 0 || step == total {
            tracing::info!(
                "diffusion: step {step}/{total} (epoch {}), loss {loss_value:.4} (ε {noise_value:.4})",
                epoch + 1
            );
        }
    }
    let report = run.finish(&plan, &curve, started)?;
    let unet = config
        .unet
        .init(&device.device)
        .load_record(run.model.valid().into_record());
    Ok((unet, report))
}

/// What [`fit`] produced.
#[derive(Debug)]
pub struct FittedModel {
    /// The artefact folder (`models_dir/hcld-<sha12>`).
    pub dir: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Its manifest (configuration, latent scale, training summary).
    pub manifest: super::artefact::ArtefactManifest,
    /// The scaled posterior-mean latent of every training image, in set order (stage 2 trained on
    /// them; callers choose site representatives from them without encoding again).
    pub latents: Vec<Vec<f32>>,
}

/// Both stages and the artefact: trains the autoencoder, encodes every image once (posterior
/// mean), computes the latent scale, trains the UNet on the scaled latents and writes the model
/// into `models_dir`. Each stage resumes from its checkpoint under `options.checkpoint_dir`.
pub fn fit(
    config: &HcldConfig,
    set: &dyn TrainingSet,
    device: &ComputeDevice,
    options: &TrainOptions,
    models_dir: &Path,
) -> Result<FittedModel, FitError> {
    config
        .validate()
        .map_err(|e| TrainingError::TooFew(e.to_string()))?;
    let (autoencoder, ae_report) = train_autoencoder(config, set, device, options)?;
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
    let (unet, ldm_report) =
        train_diffusion(config, set, &autoencoder, &scaled, scale, device, options)?;
    let mut images_per_site = BTreeMap::new();
    for i in 0..set.len() {
        *images_per_site.entry(set.site(i).to_string()).or_insert(0) += 1;
    }
    let manifest = super::artefact::ArtefactManifest {
        format_version: super::artefact::FORMAT_VERSION,
        hcld_version: crate::VERSION.into(),
        config: config.clone(),
        latent_scale: scale,
        training: super::artefact::TrainingSummary {
            images_per_site,
            autoencoder: Some(ae_report),
            diffusion: Some(ldm_report),
            backend: device.describe(),
        },
    };
    let (dir, sha256) = super::artefact::save_artefact(models_dir, &manifest, &autoencoder, &unet)?;
    Ok(FittedModel {
        dir,
        sha256,
        manifest,
        latents: scaled,
    })
}

/// Why [`fit`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// A training stage.
    #[error(transparent)]
    Training(#[from] TrainingError),
    /// Writing the artefact.
    #[error(transparent)]
    Artefact(#[from] super::artefact::ArtefactError),
}

/// Mean L1 reconstruction error (through μ) over `set`: the stage-1 figure the learning tests
/// and reports use.
pub fn reconstruction_error(
    ae: &AutoencoderKl,
    config: &HcldConfig,
    set: &dyn TrainingSet,
    device: &ComputeDevice,
) -> Result<f64, TrainingError> {
    let voxels = config.grid.shape.iter().product::<usize>();
    let mut sum = 0.0;
    for i in 0..set.len() {
        let image = load_images(set, &[i], voxels)?.remove(0);
        let x = grid_tensor(&[&image], config.grid.shape, &device.device);
        sum += scalar(losses::l1(ae.reconstruct(x.clone()), x));
    }
    Ok(sum / set.len().max(1) as f64)
}

/// Mean ε-prediction MSE of `unet` over a fixed, seeded set of (source, target, t, ε) draws
/// (`draws` per image): the stage-2 figure the learning tests use. A new UNet (zero output)
/// scores 1.
pub fn noise_prediction_error(
    unet: &DiffusionUnet,
    config: &HcldConfig,
    sites: &[&str],
    latents: &[Vec<f32>],
    draws: usize,
    device: &ComputeDevice,
) -> f64 {
    let schedule = config.schedule.build().expect("validated config");
    let mut by_site: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in sites.iter().enumerate() {
        by_site.entry(s.to_string()).or_default().push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(step_seed(config.seed, 3, 0));
    let mut sum = 0.0;
    let mut count = 0;
    for _ in 0..draws {
        for i in 0..latents.len() {
            let target = choose_targets(&mut rng, &[i], &by_site)[0];
            let shape = config.latent_shape();
            let z_src = latent_tensor(&[&latents[i]], shape, &device.device);
            let z_tar = latent_tensor(&[&latents[target]], shape, &device.device);
            let fused = adain(z_src, z_tar.clone(), 1e-6);
            let t = rng.random_range(0..schedule.len());
            let (a, s) = schedule.q_sample_coefficients(t);
            let dims = fused.dims();
            let noise = Tensor::<5>::from_data(
                TensorData::new(normal(&mut rng, dims.iter().product()), dims),
                &device.device,
            );
            let noisy = fused.mul_scalar(a) + noise.clone().mul_scalar(s);
            let eps = unet.forward(Tensor::cat(vec![noisy, z_tar], 1), &[t as f32]);
            sum += scalar(losses::mse(eps, noise));
            count += 1;
        }
    }
    sum / count.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Pure function of (seed, step): resuming replays the same batches.
        assert_eq!(batch_indices(7, 1, 7, 2, 5), batch_indices(7, 1, 7, 2, 5));
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
