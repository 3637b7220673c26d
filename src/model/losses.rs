//! The training losses of both stages as plain tensor functions (the training loops weight and sum
//! them): stage 1 L1 reconstruction and the KL divergence of the posterior, stage 2 ε-MSE, the
//! content loss on instance-normalised latents, the Gram style loss, the gradient-map loss, and
//! the least-squares / logistic adversarial terms. Formulas follow the reference code
//! (`../shared/design/hcld-method.md`).

use burn::prelude::*;

use super::latent_ops::{gram, instance_norm};

/// Mean absolute difference.
pub fn l1<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<1> {
    (a - b).abs().mean()
}

/// Mean squared difference.
pub fn mse<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<1> {
    (a - b).powf_scalar(2.0).mean()
}

/// KL(N(μ, σ²) ‖ N(0, 1)) summed over a latent's voxels and channels and averaged over the batch
/// (MONAI's and the reference's `0.5·Σ(μ² + σ² − log σ² − 1)`), from μ and log σ².
pub fn kl_divergence(mu: Tensor<5>, log_var: Tensor<5>) -> Tensor<1> {
    let batch = mu.dims()[0] as f64;
    let per = mu.powf_scalar(2.0) + log_var.clone().exp() - log_var - 1.0;
    per.sum().mul_scalar(0.5 / batch)
}

/// Content loss: MSE between the instance-normalised fused latent and x̂₀ (eps 1e-6).
pub fn content(fused: Tensor<5>, x0: Tensor<5>) -> Tensor<1> {
    mse(instance_norm(fused, 1e-6), instance_norm(x0, 1e-6))
}

/// Style loss: MSE between the Gram matrices of x̂₀ and the target latent.
pub fn gram_style(x0: Tensor<5>, target: Tensor<5>) -> Tensor<1> {
    mse(gram(x0), gram(target))
}

/// The reference's gradient map: the mean of the forward differences along the three axes,
/// zero-padded at the start of each axis back to the input's shape.
///
/// # Shapes
/// - x `[b, c, d, h, w]` → `[b, c, d, h, w]`
pub fn gradient_map(x: Tensor<5>) -> Tensor<5> {
    let [b, c, d, h, w] = x.dims();
    let s = |t: &Tensor<5>, r: [std::ops::Range<usize>; 3]| {
        t.clone()
            .slice([0..b, 0..c, r[0].clone(), r[1].clone(), r[2].clone()])
    };
    // Differences on the common (d−1)×(h−1)×(w−1) corner, as the reference crops them.
    let dw = s(&x, [1..d, 1..h, 1..w]) - s(&x, [1..d, 1..h, 0..w - 1]);
    let dh = s(&x, [1..d, 1..h, 1..w]) - s(&x, [1..d, 0..h - 1, 1..w]);
    let dd = s(&x, [1..d, 1..h, 1..w]) - s(&x, [0..d - 1, 1..h, 1..w]);
    let g = (dw + dh + dd).div_scalar(3.0);
    g.pad(
        [(0, 0), (0, 0), (1, 0), (1, 0), (1, 0)],
        burn::tensor::ops::PadMode::Constant(0.0),
    )
}

/// Least-squares GAN loss (MONAI's `PatchAdversarialLoss(criterion="least_squares")`): mean of
/// (logits − 1)² for "real", logits² for "fake".
pub fn least_squares_adversarial<const D: usize>(logits: Tensor<D>, real: bool) -> Tensor<1> {
    if real {
        logits.sub_scalar(1.0).powf_scalar(2.0).mean()
    } else {
        logits.powf_scalar(2.0).mean()
    }
}

/// Binary cross-entropy on logits (PyTorch's `BCEWithLogitsLoss`), written in the stable form
/// max(x, 0) − x·y + log(1 + e^−|x|).
pub fn logistic_adversarial<const D: usize>(logits: Tensor<D>, real: bool) -> Tensor<1> {
    let y = if real { 1.0 } else { 0.0 };
    let softplus = logits.clone().abs().neg().exp().add_scalar(1.0).log();
    (logits.clone().clamp_min(0.0) - logits.mul_scalar(y) + softplus).mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap()[0]
    }

    fn vol(values: &[f32], shape: [usize; 5]) -> Tensor<5> {
        Tensor::<1>::from_floats(values, &Device::default()).reshape(shape)
    }

    #[test]
    fn kl_matches_the_closed_form() {
        // μ = 1, log σ² = 0 on 2 voxels, batch 1: 0.5·Σ(1 + 1 − 0 − 1) = 1.
        let mu = vol(&[1.0, 1.0], [1, 1, 2, 1, 1]);
        let lv = vol(&[0.0, 0.0], [1, 1, 2, 1, 1]);
        assert!((scalar(kl_divergence(mu, lv)) - 1.0).abs() < 1e-6);
        // A standard normal posterior has zero KL.
        let mu = vol(&[0.0; 4], [2, 1, 2, 1, 1]);
        let lv = vol(&[0.0; 4], [2, 1, 2, 1, 1]);
        assert!(scalar(kl_divergence(mu, lv)).abs() < 1e-7);
        // log σ² = ln 2, μ = 0: 0.5·(2 − ln 2 − 1) per voxel.
        let mu = vol(&[0.0], [1, 1, 1, 1, 1]);
        let lv = vol(&[2f32.ln()], [1, 1, 1, 1, 1]);
        let expected = 0.5 * (1.0 - 2f64.ln());
        assert!((scalar(kl_divergence(mu, lv)) - expected).abs() < 1e-6);
    }

    #[test]
    fn l1_and_mse_are_means() {
        let a = vol(&[1.0, 2.0, 3.0, 4.0], [1, 1, 4, 1, 1]);
        let b = vol(&[1.0, 0.0, 3.0, 0.0], [1, 1, 4, 1, 1]);
        assert!((scalar(l1(a.clone(), b.clone())) - 1.5).abs() < 1e-6);
        assert!((scalar(mse(a, b)) - 5.0).abs() < 1e-6);
    }

    #[test]
    fn content_ignores_channel_statistics_and_style_ignores_layout() {
        let a = vol(&[1.0, 2.0, 3.0, 5.0], [1, 1, 4, 1, 1]);
        let scaled = a.clone().mul_scalar(3.0).add_scalar(7.0);
        assert!(scalar(content(a.clone(), scaled)) < 1e-8);
        // A permutation of voxels keeps the Gram matrix.
        let permuted = vol(&[5.0, 3.0, 2.0, 1.0], [1, 1, 4, 1, 1]);
        assert!(scalar(gram_style(a, permuted)) < 1e-8);
    }

    #[test]
    fn gradient_map_of_a_ramp_is_constant_inside() {
        // x along the last axis: forward difference 1 along w, 0 along d and h → mean 1/3.
        let mut v = Vec::new();
        for _ in 0..3 {
            for _ in 0..3 {
                for k in 0..3 {
                    v.push(k as f32);
                }
            }
        }
        let g = gradient_map(vol(&v, [1, 1, 3, 3, 3]));
        assert_eq!(g.dims(), [1, 1, 3, 3, 3]);
        let g: Vec<f32> = g.into_data().convert::<f32>().try_into_vec().unwrap();
        // Padded first plane is 0, the rest 1/3.
        assert_eq!(g[0], 0.0);
        assert!((g[13] - 1.0 / 3.0).abs() < 1e-6);
        assert!((g[26] - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn adversarial_losses_match_their_definitions() {
        let logits = Tensor::<1>::from_floats([0.0, 2.0], &Device::default());
        assert!((scalar(least_squares_adversarial(logits.clone(), true)) - 1.0).abs() < 1e-6);
        assert!((scalar(least_squares_adversarial(logits.clone(), false)) - 2.0).abs() < 1e-6);
        let bce_real = (2f64.ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((scalar(logistic_adversarial(logits.clone(), true)) - bce_real).abs() < 1e-6);
        let bce_fake = (2f64.ln() + 2.0 + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((scalar(logistic_adversarial(logits, false)) - bce_fake).abs() < 1e-6);
    }
}
