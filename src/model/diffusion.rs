//! The loop that drives the UNet along a DDIM path (diffusers' pipeline role: the sampler plans,
//! this calls the network and applies each move to burn tensors), and HCLD's latent translation:
//! AdaIN fusion of source and target latents, DDIM inversion of the fused latent to t_k, DDIM
//! sampling back conditioned on the target latent.

use burn::prelude::*;

use super::latent_ops::adain;
use super::sampler::{DdimMove, DdimSampler};
use super::unet::DiffusionUnet;

/// [`DdimMove::apply`] on tensors.
pub fn apply_move(m: &DdimMove, x: Tensor<5>, eps: Tensor<5>) -> Tensor<5> {
    let (from, to, clip) = m.coefficients();
    let (sa, sb) = (from.sqrt(), (1.0 - from).sqrt());
    let (ta, tb) = (to.sqrt(), (1.0 - to).sqrt());
    let mut x0 = (x.clone() - eps.clone().mul_scalar(sb)).div_scalar(sa);
    let mut eps = eps;
    if let Some(c) = clip {
        x0 = x0.clamp(-c, c);
        if sb > 0.0 {
            eps = (x - x0.clone().mul_scalar(sa)).div_scalar(sb);
        }
    }
    x0.mul_scalar(ta) + eps.mul_scalar(tb)
}

/// Runs `moves` from `x`, predicting ε̂ with the UNet on `concat[x, condition]`.
///
/// # Shapes
/// - x, condition `[b, latent_channels, d, h, w]` → `[b, latent_channels, d, h, w]`
pub fn run_path(
    unet: &DiffusionUnet,
    moves: &[DdimMove],
    mut x: Tensor<5>,
    condition: &Tensor<5>,
) -> Tensor<5> {
    let batch = x.dims()[0];
    for m in moves {
        let timesteps = vec![m.model_timestep as f32; batch];
        let eps = unet.forward(
            Tensor::cat(vec![x.clone(), condition.clone()], 1),
            &timesteps,
        );
        x = apply_move(m, x, eps);
    }
    x
}

/// HCLD's latent translation: AdaIN(source → target statistics), invert to t_k, sample back
/// conditioned on the target. Latents are already multiplied by the latent scale.
pub fn translate(
    unet: &DiffusionUnet,
    sampler: &DdimSampler,
    source: Tensor<5>,
    target: Tensor<5>,
) -> Tensor<5> {
    translate_until(unet, sampler, source, target, &|| false)
        .expect("a translation that is never stopped completes")
}

/// [`translate`], checking `stop` before every UNet call (a call takes about a second at the
/// CPU grid): `None` when it was raised, so a signal never waits for a whole translation.
pub fn translate_until(
    unet: &DiffusionUnet,
    sampler: &DdimSampler,
    source: Tensor<5>,
    target: Tensor<5>,
    stop: &dyn Fn() -> bool,
) -> Option<Tensor<5>> {
    let mut x = adain(source, target.clone(), 1e-6);
    for path in [sampler.inversion(), sampler.sampling()] {
        for m in &path {
            if stop() {
                return None;
            }
            x = run_path(unet, std::slice::from_ref(m), x, &target);
        }
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sampler::DdimConfig;
    use crate::model::schedule::ScheduleConfig;
    use crate::model::unet::UnetConfig;
    use burn::tensor::Distribution;

    fn values(t: Tensor<5>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec().unwrap()
    }

    #[test]
    fn tensor_moves_equal_the_reference_arithmetic() {
        let device = Device::default();
        let schedule = ScheduleConfig::default().build().unwrap();
        let sampler = DdimSampler::new(schedule, DdimConfig::default()).unwrap();
        let x = Tensor::<5>::random([1, 2, 3, 3, 3], Distribution::Normal(0.0, 2.0), &device);
        let eps = Tensor::<5>::random([1, 2, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        for m in sampler
            .inversion()
            .iter()
            .chain(&sampler.sampling())
            .take(45)
        {
            let (xv, ev) = (values(x.clone()), values(eps.clone()));
            let mut want = vec![0.0; xv.len()];
            m.apply(&xv, &ev, &mut want);
            let got = values(apply_move(m, x.clone(), eps.clone()));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()), "{m:?}: {g} vs {w}");
            }
        }
    }

    /// Relative error of inverting `latent` and sampling back with `steps` moves each way.
    fn round_trip(
        unet: &DiffusionUnet,
        latent: &Tensor<5>,
        condition: &Tensor<5>,
        steps: usize,
    ) -> f32 {
        let schedule = ScheduleConfig {
            clip_sample: false,
            ..ScheduleConfig::default()
        }
        .build()
        .unwrap();
        let sampler = DdimSampler::new(
            schedule,
            DdimConfig {
                strength: 0.6,
                inversion_steps: steps,
                sampling_steps: steps,
                ..DdimConfig::default()
            },
        )
        .unwrap();
        let inverted = run_path(unet, &sampler.inversion(), latent.clone(), condition);
        let back = run_path(unet, &sampler.sampling(), inverted, condition);
        let (a, b) = (values(back), values(latent.clone()));
        let num: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f32 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    #[test]
    fn inversion_then_sampling_reconstructs_with_an_untrained_unet() {
        let device = Device::default();
        let latent = Tensor::<5>::random([1, 6, 8, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let condition =
            Tensor::<5>::random([1, 6, 8, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        // A small UNet (same topology, narrow channels), initialised as MONAI does: ε̂ = 0, and the
        // round trip is exact.
        let small = UnetConfig::new()
            .with_channels(vec![8, 16, 16])
            .with_norm_groups(8);
        let monai_init = small.init(&device);
        assert!(round_trip(&monai_init, &latent, &condition, 30) < 1e-5);
        // Randomly initialised all through, ε̂ is far from zero (rms ≈ 0.3) and depends on x and t:
        // DDIM inversion is then approximate, and the error must fall as the moves get finer.
        let random = small.with_zero_init_output(false).init(&device);
        let eps = random.forward(
            Tensor::cat(vec![latent.clone(), condition.clone()], 1),
            &[300.0],
        );
        let eps_rms = (values(eps).iter().map(|v| v * v).sum::<f32>() / (6.0 * 512.0)).sqrt();
        assert!(eps_rms > 0.05, "ε̂ rms {eps_rms}");
        let errors: Vec<f32> = [30, 60, 120]
            .iter()
            .map(|&n| round_trip(&random, &latent, &condition, n))
            .collect();
        eprintln!("round-trip errors at 30/60/120 steps: {errors:?}, ε̂ rms {eps_rms}");
        assert!(
            errors[1] < 0.6 * errors[0] && errors[2] < 0.6 * errors[1] && errors[2] < 2e-2,
            "relative errors at 30/60/120 steps: {errors:?} (ε̂ rms {eps_rms})"
        );
    }

    #[test]
    fn translation_keeps_the_latent_shape() {
        let device = Device::default();
        let unet = UnetConfig::new()
            .with_channels(vec![8, 16, 16])
            .with_norm_groups(8)
            .init(&device);
        let sampler = DdimSampler::new(
            ScheduleConfig::default().build().unwrap(),
            DdimConfig {
                strength: 0.3,
                inversion_steps: 3,
                sampling_steps: 2,
                ..DdimConfig::default()
            },
        )
        .unwrap();
        let s = Tensor::<5>::random([1, 6, 4, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<5>::random([1, 6, 4, 4, 4], Distribution::Normal(1.0, 2.0), &device);
        assert_eq!(translate(&unet, &sampler, s, t).dims(), [1, 6, 4, 4, 4]);
    }
}
