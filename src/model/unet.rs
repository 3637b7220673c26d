//! The latent diffusion UNet ε_θ(concat[z_t, z_target], t) (MONAI `DiffusionModelUNet`, the
//! reference configuration of `../shared/design/hcld-method.md`): channels (32, 64, 64), 1 ResBlock
//! per level on the way down and 2 on the way up (each taking a skip connection), GroupNorm(32),
//! single-head attention at levels 2 and 3 and in the middle, a sinusoidal timestep embedding
//! 32 → 128 → 128 added in every ResBlock, strided-conv down and nearest + conv up; input 12
//! channels (noisy latent and target latent), output ε with 6. No cross-attention.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, PaddingConfig3d};
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::attention::{SpatialAttention, SpatialAttentionConfig};
use super::blocks::{
    Downsample, Level, Middle, ResBlock, ResBlockConfig, Upsample, conv3, validate_levels,
    validate_numerics,
};
use super::time_embedding::{TimeEmbedding, TimeEmbeddingConfig};

/// Configuration of [`DiffusionUnet`].
#[derive(Config, Debug)]
pub struct UnetConfig {
    /// Input channels: noisy latent + condition latent.
    #[config(default = 12)]
    pub in_channels: usize,
    /// Output channels: ε for the latent.
    #[config(default = 6)]
    pub out_channels: usize,
    /// Channels per level.
    #[config(default = "vec![32, 64, 64]")]
    pub channels: Vec<usize>,
    /// ResBlocks per level on the way down (one more on the way up).
    #[config(default = 1)]
    pub res_blocks: usize,
    /// Attention after the ResBlocks of these levels.
    #[config(default = "vec![false, true, true]")]
    pub attention_levels: Vec<bool>,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Attention query chunk.
    #[config(default = 1024)]
    pub attention_query_chunk: usize,
    /// Attention key chunk.
    #[config(default = 4096)]
    pub attention_key_chunk: usize,
    /// Start the output convolution and each ResBlock's second convolution at zero (MONAI does:
    /// a new network predicts ε̂ = 0). Off gives a random non-zero network, for tests.
    #[config(default = true)]
    pub zero_init_output: bool,
}

impl UnetConfig {
    /// Checks the configuration: one attention flag per level, group counts dividing every channel
    /// count.
    pub fn validate(&self) -> Result<(), String> {
        validate_levels(
            "UNet",
            &self.channels,
            &self.attention_levels,
            self.norm_groups,
        )?;
        validate_numerics(
            "UNet",
            self.norm_eps,
            self.attention_query_chunk,
            self.attention_key_chunk,
        )?;
        if self.in_channels == 0 || self.out_channels == 0 || self.res_blocks == 0 {
            return Err("UNet: channel and block counts must be positive".into());
        }
        Ok(())
    }

    /// The timestep-embedding width: 4 × the first level's channels.
    pub fn time_channels(&self) -> usize {
        4 * self.channels[0]
    }

    fn res(&self, i: usize, o: usize, device: &Device) -> ResBlock {
        ResBlockConfig::new(i, o, self.norm_groups)
            .with_norm_eps(self.norm_eps)
            .with_time_embedding_channels(Some(self.time_channels()))
            .with_zero_init_output(self.zero_init_output)
            .init(device)
    }

    fn attention(&self, c: usize, device: &Device) -> SpatialAttention {
        SpatialAttentionConfig::new(c)
            .with_norm_groups(self.norm_groups)
            .with_norm_eps(self.norm_eps)
            .with_query_chunk(self.attention_query_chunk)
            .with_key_chunk(self.attention_key_chunk)
            .init(device)
    }

    /// Builds the network (call [`UnetConfig::validate`] first).
    pub fn init(&self, device: &Device) -> DiffusionUnet {
        let levels = self.channels.len();
        let first = self.channels[0];
        let mut down = Vec::new();
        let mut output = first;
        for (level, &c) in self.channels.iter().enumerate() {
            let input = output;
            output = c;
            let mut blocks = Vec::new();
            let mut attentions = Vec::new();
            for r in 0..self.res_blocks {
                blocks.push(self.res(if r == 0 { input } else { output }, output, device));
                if self.attention_levels[level] {
                    attentions.push(self.attention(output, device));
                }
            }
            down.push(Level {
                blocks,
                attentions,
                downsample: (level + 1 < levels).then(|| Downsample::strided(output, device)),
                upsample: None,
            });
        }
        let last = *self.channels.last().expect("validated");
        let middle = Middle {
            first: self.res(last, last, device),
            attention: self.attention(last, device),
            second: self.res(last, last, device),
        };
        // Up path: each level takes res_blocks + 1 blocks, each fed a skip connection.
        let reversed: Vec<usize> = self.channels.iter().rev().copied().collect();
        let reversed_attention: Vec<bool> = self.attention_levels.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut output = reversed[0];
        for level in 0..levels {
            let previous = output;
            output = reversed[level];
            let input = reversed[(level + 1).min(levels - 1)];
            let mut blocks = Vec::new();
            let mut attentions = Vec::new();
            for r in 0..=self.res_blocks {
                let skip = if r == self.res_blocks { input } else { output };
                let incoming = if r == 0 { previous } else { output };
                blocks.push(self.res(incoming + skip, output, device));
                if reversed_attention[level] {
                    attentions.push(self.attention(output, device));
                }
            }
            up.push(Level {
                blocks,
                attentions,
                downsample: None,
                upsample: (level + 1 < levels).then(|| Upsample::new(output, device)),
            });
        }
        DiffusionUnet {
            time: TimeEmbeddingConfig::new(first, self.time_channels()).init(device),
            conv_in: conv3(self.in_channels, first, device),
            down,
            middle,
            up,
            out_norm: GroupNormConfig::new(self.norm_groups, first)
                .with_epsilon(self.norm_eps)
                .init(device),
            conv_out: if self.zero_init_output {
                Conv3dConfig::new([first, self.out_channels], [3, 3, 3])
                    .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            } else {
                conv3(first, self.out_channels, device)
            },
        }
    }
}

/// The conditional latent diffusion UNet.
#[derive(Module, Debug)]
pub struct DiffusionUnet {
    time: TimeEmbedding,
    conv_in: Conv3d,
    down: Vec<Level>,
    middle: Middle,
    up: Vec<Level>,
    out_norm: GroupNorm,
    conv_out: Conv3d,
}

impl DiffusionUnet {
    /// ε̂ for a batch of inputs at the given timesteps (one per batch item).
    ///
    /// # Shapes
    /// - x `[b, in_channels, d, h, w]` (each divisible by 2^(levels − 1)), timesteps `[b]`
    /// - output `[b, out_channels, d, h, w]`
    pub fn forward(&self, x: Tensor<5>, timesteps: &[f32]) -> Tensor<5> {
        let device = x.device();
        let t = self.time.forward(timesteps, &device); // [b, time_channels]
        let mut h = self.conv_in.forward(x);
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (i, block) in level.blocks.iter().enumerate() {
                h = block.forward(h, Some(t.clone()));
                if let Some(a) = level.attentions.get(i) {
                    h = a.forward(h);
                }
                skips.push(h.clone());
            }
            if let Some(d) = &level.downsample {
                h = d.forward(h);
                skips.push(h.clone());
            }
        }
        h = self.middle.forward(h, Some(t.clone()));
        for level in &self.up {
            for (i, block) in level.blocks.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up block");
                h = block.forward(Tensor::cat(vec![h, skip], 1), Some(t.clone()));
                if let Some(a) = level.attentions.get(i) {
                    h = a.forward(h);
                }
            }
            if let Some(u) = &level.upsample {
                h = u.forward(h);
            }
        }
        self.conv_out.forward(silu(self.out_norm.forward(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn reference_configuration_has_monais_parameter_count() {
        let config = UnetConfig::new();
        config.validate().unwrap();
        let model = config.init(&Device::default());
        // MONAI 1.6.1 DiffusionModelUNet(spatial_dims=3, in 12, out 6, channels (32, 64, 64),
        // attention (False, True, True), 1 res block, 32 groups, 64 head channels): 2 984 422.
        println!(
            "DiffusionUnet (reference configuration): {} parameters; MONAI 1.6.1: 2_984_422",
            model.num_params()
        );
        assert_eq!(model.num_params(), 2_984_422);
    }

    #[test]
    fn predicts_noise_of_the_latent_shape() {
        let device = Device::default();
        let model = UnetConfig::new()
            .with_attention_query_chunk(9)
            .with_attention_key_chunk(4)
            .init(&device);
        let x = Tensor::<5>::random([2, 12, 8, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let eps = model.forward(x, &[10.0, 700.0]);
        assert_eq!(eps.dims(), [2, 6, 8, 4, 4]);
        // A new network starts at ε̂ = 0 (zero-initialised output convolution, as MONAI).
        let v: Vec<f32> = eps.into_data().convert::<f32>().try_into_vec().unwrap();
        assert!(v.iter().all(|x| *x == 0.0));
        assert!(UnetConfig::new().with_norm_groups(24).validate().is_err());
    }
}
