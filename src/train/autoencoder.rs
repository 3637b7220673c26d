//! Stage 1: the autoencoder (L1 + KL, optional patch-GAN), then encoding every image and the
//! latent scale.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::model::autoencoder::AutoencoderKl;
use crate::model::config::HcldConfig;
use crate::model::device::ComputeDevice;
use crate::model::discriminator::{Discriminator, DiscriminatorConfig};
use crate::model::losses;

use super::TrainOptions;
use super::checkpoint::*;
use super::data::*;
use super::stage::*;
use crate::model::artefact::StageReport;
use crate::model::tensor::{grid_tensor, tensor_values};

/// Stage 1: trains the autoencoder from scratch (or from its checkpoint) and returns it ready for
/// inference.
// One piece: a training loop; its optimiser, discriminator, curve and checkpoint state live
// across iterations, and what both stages share is already in `stage`.
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
    let ckpt = Checkpoint::new(options, "autoencoder", config, &set_digest(set));

    let mut model = ComputeDevice::init_seeded(&ad, config.seed, |d| config.autoencoder.init(d));
    if let Some(start) = &options.initial_autoencoder {
        // Training continues from these weights (a checkpoint, when there is one, still wins).
        model = model.load_record(start.clone().into_record());
    }
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
    let (curve_dir, within) = (ckpt.dir.clone(), ckpt.within.clone());
    let mut run = StageRun::start("autoencoder", ckpt, model, optim, disc, disc_optim)?;
    let mut curve = Curve::open(&curve_dir, &within, AutoencoderLosses::columns(), run.step);
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
        let mut losses = AutoencoderLosses {
            loss: scalar(loss.clone()),
            l1: scalar(l1),
            kl: scalar(kl),
            adversarial: adv_value,
            discriminator: 0.0,
        };
        losses.check_finite("autoencoder", indices.iter().map(|&i| set.id(i)))?;
        let grads = GradientsParams::from_grads(loss.backward(), &run.model);
        run.accumulator.accumulate(&run.model, grads);

        if let Some(d) = &run.disc {
            let fake = losses::least_squares_adversarial(d.forward(reconstruction.detach()), false);
            let real = losses::least_squares_adversarial(d.forward(x.detach()), true);
            let d_loss = (fake + real).mul_scalar(0.5 * tc.adversarial_weight);
            losses.discriminator = scalar(d_loss.clone()) / tc.adversarial_weight;
            let grads = GradientsParams::from_grads(d_loss.backward(), d);
            run.disc_accumulator.accumulate(d, grads);
        }

        run = run.end_forward(&plan, options, &mut curve, epoch, &losses)?;
    }
    let report = run.finish(&plan, &curve, started)?;
    Ok((to_inference(run.model, config, device), report))
}

/// The trained autoencoder on the plain (non-autodiff) device.
pub(crate) fn to_inference(
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

/// The autoencoder stage's losses of one forward pass.
struct AutoencoderLosses {
    loss: f64,
    l1: f64,
    kl: f64,
    adversarial: f64,
    discriminator: f64,
}

impl LossRow for AutoencoderLosses {
    const COLUMNS: &'static [&'static str] = &["loss", "l1", "kl", "adversarial", "discriminator"];

    fn total(&self) -> f64 {
        self.loss
    }

    fn values(&self) -> Vec<f64> {
        vec![
            self.loss,
            self.l1,
            self.kl,
            self.adversarial,
            self.discriminator,
        ]
    }

    fn summary(&self) -> String {
        format!("loss {:.4} (L1 {:.4})", self.loss, self.l1)
    }
}
