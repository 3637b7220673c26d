//! Single-head spatial self-attention over the voxels of a 3D feature map (MONAI's
//! `SpatialAttentionBlock`: GroupNorm, q/k/v/projection linear maps over channels, scale 1/√C,
//! residual), computed so that the N×N score matrix is never built: queries are processed in
//! chunks, and within a chunk keys are streamed in chunks with an online softmax (running maximum
//! and normaliser, as in FlashAttention). At the reference grid the latent has 36 864 voxels, and
//! the full matrix would take 5.4 GB.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::prelude::*;

/// Configuration of [`SpatialAttention`].
#[derive(Config, Debug)]
pub struct SpatialAttentionConfig {
    /// Feature channels C.
    pub channels: usize,
    /// GroupNorm groups.
    #[config(default = 8)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Queries per chunk.
    #[config(default = 1024)]
    pub query_chunk: usize,
    /// Keys per chunk of the online softmax.
    #[config(default = 4096)]
    pub key_chunk: usize,
}

/// Spatial self-attention with a residual connection.
#[derive(Module, Debug)]
pub struct SpatialAttention {
    norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    proj: Linear,
    query_chunk: usize,
    key_chunk: usize,
}

impl SpatialAttentionConfig {
    /// Checks the numbers (they come from model files): channels divisible by the groups, chunks
    /// of at least one voxel.
    pub fn validate(&self) -> Result<(), String> {
        if self.channels == 0
            || self.norm_groups == 0
            || !self.channels.is_multiple_of(self.norm_groups)
        {
            return Err(format!(
                "attention: {} channels cannot be split into {} groups",
                self.channels, self.norm_groups
            ));
        }
        if self.query_chunk == 0 || self.key_chunk == 0 {
            return Err("attention: chunk sizes must be at least 1".into());
        }
        Ok(())
    }

    /// Builds the module (call [`SpatialAttentionConfig::validate`] first).
    pub fn init(&self, device: &Device) -> SpatialAttention {
        let linear = || LinearConfig::new(self.channels, self.channels).init(device);
        SpatialAttention {
            norm: GroupNormConfig::new(self.norm_groups, self.channels)
                .with_epsilon(self.norm_eps)
                .init(device),
            to_q: linear(),
            to_k: linear(),
            to_v: linear(),
            proj: linear(),
            query_chunk: self.query_chunk,
            key_chunk: self.key_chunk,
        }
    }
}

impl SpatialAttention {
    /// # Shapes
    /// - input `[batch, channels, d, h, w]`
    /// - output the same
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let [b, c, d, h, w] = x.dims();
        let n = d * h * w;
        // [b, c, d, h, w] -> [b, n, c]
        let tokens = self
            .norm
            .forward(x.clone())
            .reshape([b, c, n])
            .swap_dims(1, 2);
        let q = self.to_q.forward(tokens.clone());
        let k = self.to_k.forward(tokens.clone());
        let v = self.to_v.forward(tokens);
        let attended = chunked_attention(
            q,
            k,
            v,
            1.0 / (c as f64).sqrt(),
            self.query_chunk,
            self.key_chunk,
        );
        // [b, n, c] -> [b, c, d, h, w]
        let out = self
            .proj
            .forward(attended)
            .swap_dims(1, 2)
            .reshape([b, c, d, h, w]);
        x + out
    }
}

/// softmax(q·kᵀ·scale)·v without materialising more than `query_chunk × key_chunk` scores.
///
/// # Shapes
/// - q, k, v `[batch, tokens, channels]`
/// - output `[batch, tokens, channels]`
pub fn chunked_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    scale: f64,
    query_chunk: usize,
    key_chunk: usize,
) -> Tensor<3> {
    let n = q.dims()[1];
    let m = k.dims()[1];
    let kt = k.swap_dims(1, 2); // [b, c, m]
    let mut outputs = Vec::new();
    for qs in (0..n).step_by(query_chunk.max(1)) {
        let qi = q.clone().narrow(1, qs, query_chunk.min(n - qs)); // [b, lq, c]
        let mut state: Option<(Tensor<3>, Tensor<3>, Tensor<3>)> = None; // (max, sum, acc)
        for ks in (0..m).step_by(key_chunk.max(1)) {
            let len = key_chunk.min(m - ks);
            let kj = kt.clone().narrow(2, ks, len); // [b, c, lk]
            let vj = v.clone().narrow(1, ks, len); // [b, lk, c]
            let scores = qi.clone().matmul(kj).mul_scalar(scale); // [b, lq, lk]
            let chunk_max = scores.clone().max_dim(2); // [b, lq, 1]
            state = Some(match state {
                None => {
                    let p = (scores - chunk_max.clone()).exp();
                    (chunk_max, p.clone().sum_dim(2), p.matmul(vj))
                }
                Some((max, sum, acc)) => {
                    let new_max = max.clone().max_pair(chunk_max);
                    let p = (scores - new_max.clone()).exp();
                    let correction = (max - new_max.clone()).exp();
                    let sum = sum * correction.clone() + p.clone().sum_dim(2);
                    let acc = acc * correction + p.matmul(vj);
                    (new_max, sum, acc)
                }
            });
        }
        let (_, sum, acc) = state.expect("at least one key");
        outputs.push(acc / sum);
    }
    Tensor::cat(outputs, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::softmax;

    fn naive(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, scale: f64) -> Tensor<3> {
        softmax(q.matmul(k.swap_dims(1, 2)).mul_scalar(scale), 2).matmul(v)
    }

    fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        let a: Vec<f32> = a.into_data().convert::<f32>().try_into_vec().unwrap();
        let b: Vec<f32> = b.into_data().convert::<f32>().try_into_vec().unwrap();
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn chunked_equals_naive_attention() {
        let device = Device::default();
        let shape = [2, 60, 8];
        let q = Tensor::<3>::random(shape, Distribution::Normal(0.0, 2.0), &device);
        let k = Tensor::<3>::random(shape, Distribution::Normal(0.0, 2.0), &device);
        let v = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let scale = 1.0 / 8f64.sqrt();
        let reference = naive(q.clone(), k.clone(), v.clone(), scale);
        // Uneven chunks on both axes, one chunk, and chunks larger than the input.
        for (qc, kc) in [(7, 11), (60, 60), (1, 1), (100, 13)] {
            let chunked = chunked_attention(q.clone(), k.clone(), v.clone(), scale, qc, kc);
            let diff = max_abs_diff(chunked, reference.clone());
            assert!(diff < 1e-5, "chunks ({qc}, {kc}): max diff {diff}");
        }
    }

    #[test]
    fn block_keeps_the_shape_and_adds_a_residual() {
        let device = Device::default();
        let config = SpatialAttentionConfig::new(16)
            .with_query_chunk(10)
            .with_key_chunk(17);
        config.validate().unwrap();
        let block = config.init(&device);
        let x = Tensor::<5>::random([1, 16, 3, 4, 5], Distribution::Normal(0.0, 1.0), &device);
        let y = block.forward(x.clone());
        assert_eq!(y.dims(), [1, 16, 3, 4, 5]);
        // The same block with one chunk gives the same result.
        let whole = SpatialAttention {
            query_chunk: 1000,
            key_chunk: 1000,
            ..block
        };
        let z = whole.forward(x);
        let diff = max_abs_diff(y.reshape([1, 16, 60]), z.reshape([1, 16, 60]));
        assert!(diff < 1e-5, "{diff}");
        assert!(SpatialAttentionConfig::new(12).validate().is_err());
        assert!(
            SpatialAttentionConfig::new(16)
                .with_key_chunk(0)
                .validate()
                .is_err()
        );
    }
}
