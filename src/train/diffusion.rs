//! Stage 2: with the encoder frozen, the conditional latent diffusion UNet on (source, random
//! target) pairs (ε-MSE + content + Gram style, optional adversarial style and gradient-map terms).

use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::model::autoencoder::AutoencoderKl;
use crate::model::config::HcldConfig;
use crate::model::device::ComputeDevice;
use crate::model::discriminator::DiscriminatorConfig;
use crate::model::latent_ops::adain;
use crate::model::losses;
use crate::model::unet::DiffusionUnet;

use super::TrainOptions;
use super::checkpoint::*;
use super::data::*;
use super::stage::*;
use crate::model::artefact::StageReport;
use crate::model::tensor::{grid_tensor, latent_tensor};

/// For each source image, a target image: a uniformly chosen site, then one of its images other
/// than the source when the site has another.
pub(crate) fn choose_targets(
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
pub(crate) fn per_sample(values: &[f64], device: &Device) -> Tensor<5> {
    let v: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    Tensor::<1>::from_floats(v.as_slice(), device).reshape([values.len(), 1, 1, 1, 1])
}

/// Stage 2: trains the UNet on the frozen autoencoder's latents. `latents` are the scaled
/// posterior means of every image of `set` (same order).
// One piece: a training loop; its optimiser, discriminators, curve and checkpoint state live
// across iterations, and what both stages share is already in `stage`.
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
    let total = options
        .max_steps
        .unwrap_or_else(|| tc.forward_passes(set.len()));
    let extra = format!("{}\n{latent_scale}", set_digest(set));
    let ckpt = Checkpoint::new(options, "diffusion", config, &extra);
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
    let (curve_dir, within) = (ckpt.dir.clone(), ckpt.within.clone());
    let mut run = StageRun::start("diffusion", ckpt, model, optim, disc, disc_optim)?;
    let mut curve = Curve::open(&curve_dir, &within, DiffusionLosses::columns(), run.step);
    let plan = StepPlan {
        learning_rate: tc.learning_rate,
        discriminator_learning_rate: tc.discriminator_learning_rate,
        accumulation_steps: tc.accumulation_steps,
        total,
        per_epoch: set.len().div_ceil(tc.batch_size),
    };
    let clip = schedule.config().clip_sample_range;
    let timestep_limit = tc
        .max_timestep
        .map_or(schedule.len(), |t| t.min(schedule.len()));
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
            .map(|_| rng.random_range(0..timestep_limit))
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
            losses::content(fused.clone(), x0.clone())
        } else {
            losses::content(fused.clone(), x0_raw)
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
        if let Some(d) = run
            .disc
            .as_ref()
            .filter(|_| epoch >= tc.adversarial_burn_in_epochs)
        {
            let adv = losses::logistic_adversarial(d.forward(x0.clone()), true);
            adv_value = scalar(adv.clone());
            loss = loss + adv.mul_scalar(tc.adversarial_style_weight);
        }
        let mut losses = DiffusionLosses {
            loss: scalar(loss.clone()),
            noise: scalar(noise_loss),
            content: scalar(content),
            style: scalar(style),
            adversarial_style: adv_value,
            gradient_map: grad_value,
            discriminator: 0.0,
        };
        losses.check_finite("diffusion", sources.iter().map(|&i| set.id(i)))?;
        let grads = GradientsParams::from_grads(loss.backward(), &run.model);
        run.accumulator.accumulate(&run.model, grads);
        if let Some(d) = &run.disc {
            // The reference's style discriminator: target latents are "real", the fused
            // (AdaIN) latents the UNet starts from "fake".
            let real = losses::logistic_adversarial(d.forward(z_tar.detach()), true);
            let fake = losses::logistic_adversarial(d.forward(fused.detach()), false);
            let d_loss = real + fake;
            losses.discriminator = scalar(d_loss.clone());
            let grads = GradientsParams::from_grads(d_loss.backward(), d);
            run.disc_accumulator.accumulate(d, grads);
        }

        run = run.end_forward(&plan, options, &mut curve, epoch, &losses)?;
    }
    let report = run.finish(&plan, &curve, started)?;
    let unet = config
        .unet
        .init(&device.device)
        .load_record(run.model.valid().into_record());
    Ok((unet, report))
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

/// The diffusion stage's losses of one forward pass.
struct DiffusionLosses {
    loss: f64,
    noise: f64,
    content: f64,
    style: f64,
    adversarial_style: f64,
    gradient_map: f64,
    discriminator: f64,
}

impl LossRow for DiffusionLosses {
    const COLUMNS: &'static [&'static str] = &[
        "loss",
        "noise",
        "content",
        "style",
        "adversarial_style",
        "gradient_map",
        "discriminator",
    ];

    fn total(&self) -> f64 {
        self.loss
    }

    fn values(&self) -> Vec<f64> {
        vec![
            self.loss,
            self.noise,
            self.content,
            self.style,
            self.adversarial_style,
            self.gradient_map,
            self.discriminator,
        ]
    }

    fn summary(&self) -> String {
        format!("loss {:.4} (ε {:.4})", self.loss, self.noise)
    }
}
