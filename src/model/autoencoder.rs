//! The KL-regularised 3D autoencoder (MONAI `AutoencoderKL`, the reference configuration of
//! `../shared/design/hcld-method.md`): channels (32, 64, 64), 2 ResBlocks per level, GroupNorm(8,
//! eps 1e-6), 2 downsamplings, attention after each ResBlock of the deepest level and in the
//! middle blocks, a 6-channel latent at ¼ resolution with μ / log σ² heads (log σ² clamped to
//! [−30, 20]). Inference encodes with μ.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv3d;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::attention::{SpatialAttention, SpatialAttentionConfig};
use super::blocks::{
    Downsample, Level, Middle, ResBlock, ResBlockConfig, Upsample, conv1, conv3, validate_levels,
    validate_numerics,
};

/// Configuration of [`AutoencoderKl`] (every architecture number is a field).
#[derive(Config, Debug)]
pub struct AutoencoderConfig {
    /// Image channels in and out.
    #[config(default = 1)]
    pub image_channels: usize,
    /// Channels per level.
    #[config(default = "vec![32, 64, 64]")]
    pub channels: Vec<usize>,
    /// ResBlocks per level.
    #[config(default = 2)]
    pub res_blocks: usize,
    /// Which levels have attention after their ResBlocks.
    #[config(default = "vec![false, false, true]")]
    pub attention_levels: Vec<bool>,
    /// ResBlock → attention → ResBlock between encoder and latent (and latent and decoder).
    #[config(default = true)]
    pub middle_attention: bool,
    /// Latent channels.
    #[config(default = 6)]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[config(default = 8)]
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
    /// A SiLU between the final GroupNorm and the final convolution of encoder and decoder.
    /// MONAI's AutoencoderKL (and so the reference) has none; hcld's first networks had one.
    /// `None` (configurations written before the field) means `true`, so those models load as
    /// trained; the presets set `Some(false)`.
    pub final_activation: Option<bool>,
}

impl AutoencoderConfig {
    /// Checks the configuration (it comes from model files): one attention flag per level, group
    /// counts dividing every channel count.
    pub fn validate(&self) -> Result<(), String> {
        validate_levels(
            "autoencoder",
            &self.channels,
            &self.attention_levels,
            self.norm_groups,
        )?;
        validate_numerics(
            "autoencoder",
            self.norm_eps,
            self.attention_query_chunk,
            self.attention_key_chunk,
        )?;
        if self.latent_channels == 0 || self.image_channels == 0 || self.res_blocks == 0 {
            return Err("autoencoder: channel and block counts must be positive".into());
        }
        Ok(())
    }

    /// The factor by which the latent is smaller than the image on each axis.
    pub fn downsampling_factor(&self) -> usize {
        1 << (self.channels.len() - 1)
    }

    fn res(&self, i: usize, o: usize, device: &Device) -> ResBlock {
        ResBlockConfig::new(i, o, self.norm_groups)
            .with_norm_eps(self.norm_eps)
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

    fn norm(&self, c: usize, device: &Device) -> GroupNorm {
        GroupNormConfig::new(self.norm_groups, c)
            .with_epsilon(self.norm_eps)
            .init(device)
    }

    fn middle(&self, c: usize, device: &Device) -> Option<Middle> {
        self.middle_attention.then(|| Middle {
            first: self.res(c, c, device),
            attention: self.attention(c, device),
            second: self.res(c, c, device),
        })
    }

    /// Builds the model (call [`AutoencoderConfig::validate`] first).
    pub fn init(&self, device: &Device) -> AutoencoderKl {
        let levels = self.channels.len();
        let last = *self.channels.last().expect("validated");
        // Encoder.
        let mut down = Vec::new();
        let mut input = self.channels[0];
        for (level, &out) in self.channels.iter().enumerate() {
            let mut blocks = Vec::new();
            let mut attentions = Vec::new();
            for _ in 0..self.res_blocks {
                blocks.push(self.res(input, out, device));
                input = out;
                if self.attention_levels[level] {
                    attentions.push(self.attention(out, device));
                }
            }
            down.push(Level {
                blocks,
                attentions,
                downsample: (level + 1 < levels).then(|| Downsample::new(out, device)),
                upsample: None,
            });
        }
        // Decoder: the levels in reverse.
        let reversed: Vec<usize> = self.channels.iter().rev().copied().collect();
        let reversed_attention: Vec<bool> = self.attention_levels.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut input = reversed[0];
        for (level, &out) in reversed.iter().enumerate() {
            let mut blocks = Vec::new();
            let mut attentions = Vec::new();
            for _ in 0..self.res_blocks {
                blocks.push(self.res(input, out, device));
                input = out;
                if reversed_attention[level] {
                    attentions.push(self.attention(out, device));
                }
            }
            up.push(Level {
                blocks,
                attentions,
                downsample: None,
                upsample: (level + 1 < levels).then(|| Upsample::new(out, device)),
            });
        }
        let first = self.channels[0];
        AutoencoderKl {
            encoder_in: conv3(self.image_channels, first, device),
            down,
            encoder_middle: self.middle(last, device),
            encoder_norm: self.norm(last, device),
            encoder_out: conv3(last, self.latent_channels, device),
            mu: conv1(self.latent_channels, self.latent_channels, device),
            log_var: conv1(self.latent_channels, self.latent_channels, device),
            post_quant: conv1(self.latent_channels, self.latent_channels, device),
            decoder_in: conv3(self.latent_channels, reversed[0], device),
            decoder_middle: self.middle(reversed[0], device),
            up,
            decoder_norm: self.norm(first, device),
            decoder_out: conv3(first, self.image_channels, device),
            final_activation: self.final_activation.unwrap_or(true),
        }
    }
}

/// The KL autoencoder.
#[derive(Module, Debug)]
pub struct AutoencoderKl {
    encoder_in: Conv3d,
    down: Vec<Level>,
    encoder_middle: Option<Middle>,
    encoder_norm: GroupNorm,
    encoder_out: Conv3d,
    mu: Conv3d,
    log_var: Conv3d,
    post_quant: Conv3d,
    decoder_in: Conv3d,
    decoder_middle: Option<Middle>,
    up: Vec<Level>,
    decoder_norm: GroupNorm,
    decoder_out: Conv3d,
    final_activation: bool,
}

impl AutoencoderKl {
    /// The posterior's mean and log-variance (clamped to [−30, 20]).
    ///
    /// # Shapes
    /// - x `[b, image_channels, d, h, w]` (each divisible by the downsampling factor)
    /// - μ, log σ² `[b, latent_channels, d/f, h/f, w/f]`
    pub fn encode(&self, x: Tensor<5>) -> (Tensor<5>, Tensor<5>) {
        let mut h = self.encoder_in.forward(x);
        for level in &self.down {
            h = level.forward(h, None);
        }
        if let Some(m) = &self.encoder_middle {
            h = m.forward(h, None);
        }
        let h = self
            .encoder_out
            .forward(self.final_act(self.encoder_norm.forward(h)));
        let mu = self.mu.forward(h.clone());
        let log_var = self.log_var.forward(h).clamp(-30.0, 20.0);
        (mu, log_var)
    }

    /// The image for a latent.
    ///
    /// # Shapes
    /// - z `[b, latent_channels, d, h, w]` → `[b, image_channels, d·f, h·f, w·f]`
    pub fn decode(&self, z: Tensor<5>) -> Tensor<5> {
        let mut h = self.decoder_in.forward(self.post_quant.forward(z));
        if let Some(m) = &self.decoder_middle {
            h = m.forward(h, None);
        }
        for level in &self.up {
            h = level.forward(h, None);
        }
        self.decoder_out
            .forward(self.final_act(self.decoder_norm.forward(h)))
    }

    fn final_act(&self, h: Tensor<5>) -> Tensor<5> {
        if self.final_activation { silu(h) } else { h }
    }

    /// Deterministic reconstruction through the posterior mean.
    pub fn reconstruct(&self, x: Tensor<5>) -> Tensor<5> {
        let (mu, _) = self.encode(x);
        self.decode(mu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn reference_configuration_has_monais_parameter_count() {
        let device = Device::default();
        let config = AutoencoderConfig::new();
        config.validate().unwrap();
        let model = config.init(&device);
        // MONAI 1.6.1 AutoencoderKL(spatial_dims=3, in/out 1, channels (32, 64, 64), 2 res blocks,
        // attention (False, False, True), latent 6, 8 groups): 3 340 453 parameters (3.340 M).
        println!(
            "AutoencoderKl (reference configuration): {} parameters; MONAI 1.6.1: 3_340_453",
            model.num_params()
        );
        assert_eq!(model.num_params(), 3_340_453);
    }

    #[test]
    fn encodes_to_a_quarter_resolution_latent_and_decodes_back() {
        let device = Device::default();
        let config = AutoencoderConfig::new()
            .with_attention_query_chunk(7)
            .with_attention_key_chunk(5);
        let model = config.init(&device);
        assert_eq!(config.downsampling_factor(), 4);
        let x = Tensor::<5>::random([1, 1, 16, 12, 8], Distribution::Uniform(0.0, 1.0), &device);
        let (mu, log_var) = model.encode(x.clone());
        assert_eq!(mu.dims(), [1, 6, 4, 3, 2]);
        assert_eq!(log_var.dims(), [1, 6, 4, 3, 2]);
        assert_eq!(model.decode(mu).dims(), [1, 1, 16, 12, 8]);
        assert_eq!(model.reconstruct(x).dims(), [1, 1, 16, 12, 8]);
    }

    #[test]
    fn models_written_before_the_final_activation_setting_keep_their_silu() {
        // A configuration as earlier hcld versions wrote it (no `final_activation`): those
        // networks were trained with a SiLU before the final convolutions and must load with it.
        let mut old = serde_json::to_value(AutoencoderConfig::new()).unwrap();
        old.as_object_mut().unwrap().remove("final_activation");
        let old: AutoencoderConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.final_activation, None);
        // The SiLU changes the function: the same weights decode differently without it.
        let device = Device::default();
        let config = AutoencoderConfig::new()
            .with_channels(vec![4, 8])
            .with_norm_groups(2)
            .with_res_blocks(1)
            .with_attention_levels(vec![false, false])
            .with_middle_attention(false);
        let with = config.init(&device);
        let without = config
            .clone()
            .with_final_activation(Some(false))
            .init(&device)
            .load_record(with.clone().into_record());
        let z = Tensor::<5>::random([1, 6, 2, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        let (a, b) = (with.decode(z.clone()), without.decode(z));
        let gap: f32 = (a - b).abs().max().into_scalar::<f32>();
        assert!(gap > 1e-4, "{gap}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(
            AutoencoderConfig::new()
                .with_norm_groups(7)
                .validate()
                .is_err()
        );
        assert!(
            AutoencoderConfig::new()
                .with_attention_levels(vec![true])
                .validate()
                .is_err()
        );
        assert!(
            AutoencoderConfig::new()
                .with_res_blocks(0)
                .validate()
                .is_err()
        );
    }
}
