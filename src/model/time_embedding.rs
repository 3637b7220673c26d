//! Sinusoidal timestep embedding and its MLP, as the latent diffusion UNet conditions every
//! ResBlock on the timestep (MONAI `DiffusionModelUNet`: `[cos | sin]` of t·10000^(−i/half),
//! then Linear(32, 128) → SiLU → Linear(128, 128) in the reference configuration).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

/// `[cos(t·f_0), …, cos(t·f_{h−1}), sin(t·f_0), …, sin(t·f_{h−1})]` with
/// `f_i = max_period^(−i/h)` and `h = dim / 2`.
///
/// # Shapes
/// - timesteps `[batch]` → `[batch, dim]`
pub fn sinusoidal_embedding(
    timesteps: &[f32],
    dim: usize,
    max_period: f64,
    device: &Device,
) -> Tensor<2> {
    let half = dim / 2;
    let mut values = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f64> = (0..half)
            .map(|i| t as f64 * (-(max_period.ln()) * i as f64 / half as f64).exp())
            .collect();
        values.extend(args.iter().map(|a| a.cos() as f32));
        values.extend(args.iter().map(|a| a.sin() as f32));
        // An odd dimension is padded with a zero, as MONAI does.
        if dim % 2 == 1 {
            values.push(0.0);
        }
    }
    Tensor::<1>::from_floats(values.as_slice(), device).reshape([timesteps.len(), dim])
}

/// Configuration of [`TimeEmbedding`].
#[derive(Config, Debug)]
pub struct TimeEmbeddingConfig {
    /// Sinusoid dimension (the UNet's first channel count, 32 in the reference).
    pub sinusoid_dim: usize,
    /// Output dimension (4 × the first channel count, 128 in the reference).
    pub embedding_dim: usize,
    /// The longest period.
    #[config(default = 10000.0)]
    pub max_period: f64,
}

/// Sinusoidal embedding followed by Linear → SiLU → Linear.
#[derive(Module, Debug)]
pub struct TimeEmbedding {
    first: Linear,
    second: Linear,
    sinusoid_dim: usize,
    max_period: f64,
}

impl TimeEmbeddingConfig {
    /// Builds the module.
    pub fn init(&self, device: &Device) -> TimeEmbedding {
        TimeEmbedding {
            first: LinearConfig::new(self.sinusoid_dim, self.embedding_dim).init(device),
            second: LinearConfig::new(self.embedding_dim, self.embedding_dim).init(device),
            sinusoid_dim: self.sinusoid_dim,
            max_period: self.max_period,
        }
    }
}

impl TimeEmbedding {
    /// # Shapes
    /// - timesteps `[batch]` → `[batch, embedding_dim]`
    pub fn forward(&self, timesteps: &[f32], device: &Device) -> Tensor<2> {
        let s = sinusoidal_embedding(timesteps, self.sinusoid_dim, self.max_period, device);
        self.second.forward(silu(self.first.forward(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoids_match_the_closed_form() {
        let device = Device::default();
        let e = sinusoidal_embedding(&[0.0, 3.0, 999.0], 8, 10000.0, &device);
        assert_eq!(e.dims(), [3, 8]);
        let v: Vec<f32> = e.into_data().convert::<f32>().try_into_vec().unwrap();
        // t = 0: cos = 1, sin = 0.
        assert_eq!(&v[0..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        for (row, t) in [(1usize, 3.0f64), (2, 999.0)] {
            for i in 0..4 {
                let f = (-(10000f64.ln()) * i as f64 / 4.0).exp();
                assert!((v[row * 8 + i] as f64 - (t * f).cos()).abs() < 1e-5);
                assert!((v[row * 8 + 4 + i] as f64 - (t * f).sin()).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn mlp_maps_to_the_embedding_dimension() {
        let device = Device::default();
        let m = TimeEmbeddingConfig::new(32, 128).init(&device);
        assert_eq!(m.forward(&[1.0, 500.0], &device).dims(), [2, 128]);
    }
}
