//! Statistics-based operations on latents `[batch, channels, d, h, w]`, per channel over all
//! voxels: AdaIN latent fusion (the source's content with the target's channel statistics), instance
//! normalisation (the content loss compares instance-normalised latents) and the Gram matrix (the
//! style loss). Numbers from `../shared/design/hcld-method.md`: eps 1e-6, Gram divided by b·c·h·w·d.

use burn::prelude::*;

/// Per-channel mean and standard deviation √(var + eps) over the voxels (population variance).
///
/// # Shapes
/// - z `[b, c, d, h, w]` → mean, std `[b, c, 1, 1, 1]`
pub fn channel_stats(z: Tensor<5>, eps: f64) -> (Tensor<5>, Tensor<5>) {
    let [b, c, d, h, w] = z.dims();
    let flat = z.reshape([b, c, d * h * w]);
    let mean = flat.clone().mean_dim(2);
    let var = (flat - mean.clone()).powf_scalar(2.0).mean_dim(2);
    let std = var.add_scalar(eps).sqrt();
    (mean.reshape([b, c, 1, 1, 1]), std.reshape([b, c, 1, 1, 1]))
}

/// Instance normalisation without affine parameters: zero mean, unit std per channel.
pub fn instance_norm(z: Tensor<5>, eps: f64) -> Tensor<5> {
    let (mean, std) = channel_stats(z.clone(), eps);
    (z - mean) / std
}

/// AdaIN: `source` normalised per channel, then given `target`'s per-channel mean and std.
pub fn adain(source: Tensor<5>, target: Tensor<5>, eps: f64) -> Tensor<5> {
    let (mean_t, std_t) = channel_stats(target, eps);
    instance_norm(source, eps) * std_t + mean_t
}

/// Gram matrix of the channels over the voxels, divided by b·c·d·h·w.
///
/// # Shapes
/// - z `[b, c, d, h, w]` → `[b, c, c]`
pub fn gram(z: Tensor<5>) -> Tensor<3> {
    let [b, c, d, h, w] = z.dims();
    let flat = z.reshape([b, c, d * h * w]);
    flat.clone()
        .matmul(flat.swap_dims(1, 2))
        .div_scalar((b * c * d * h * w) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec().unwrap()
    }

    #[test]
    fn adain_transfers_channel_statistics() {
        let device = Device::default();
        let src = Tensor::<5>::random([1, 3, 4, 5, 6], Distribution::Normal(2.0, 3.0), &device);
        let tar = Tensor::<5>::random([1, 3, 4, 5, 6], Distribution::Normal(-1.0, 0.5), &device)
            + Tensor::<1>::from_floats([0.0, 5.0, -5.0], &device).reshape([1, 3, 1, 1, 1]);
        let fused = adain(src.clone(), tar.clone(), 1e-6);
        let (mf, sf) = channel_stats(fused.clone(), 0.0);
        let (mt, st) = channel_stats(tar, 0.0);
        for (a, b) in values(mf).iter().zip(values(mt)) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        for (a, b) in values(sf).iter().zip(values(st)) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        // The content (the normalised source) is unchanged.
        let diff = values(instance_norm(fused, 1e-6))
            .iter()
            .zip(values(instance_norm(src, 1e-6)))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn gram_matches_a_hand_computation() {
        let device = Device::default();
        // b = 1, c = 2, 2 voxels: channels (1, 2) and (3, 4).
        let z = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0], &device).reshape([1, 2, 1, 1, 2]);
        let g = values(gram(z));
        // [[1+4, 3+8], [3+8, 9+16]] / (1·2·1·1·2)
        assert_eq!(g, vec![5.0 / 4.0, 11.0 / 4.0, 11.0 / 4.0, 25.0 / 4.0]);
    }
}
