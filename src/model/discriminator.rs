//! The convolutional discriminators of the optional adversarial terms: stage 1's patch
//! discriminator on images (MONAI `PatchDiscriminator`: 4³ stride-2 convolutions, LeakyReLU 0.2,
//! a logit per patch) and stage 2's latent-style discriminator (the reference's
//! `Style_Discriminator_3d`: three 4³ stride-2 convolutions 64 → 128 → 256, one logit per volume).
//!
//! Two deliberate differences from the reference, both because hcld trains with one or two
//! volumes per step on any grid: normalisation is per instance (GroupNorm with one group per
//! channel) instead of BatchNorm, whose batch statistics mean little at batch size 1–2; and the
//! style discriminator pools its last feature map globally instead of flattening it into a linear
//! layer sized for one grid (256·6·6·2 in the reference), so it works on every grid.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig3d};
use burn::prelude::*;
use burn::tensor::activation::leaky_relu;

/// What the discriminator outputs.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum DiscriminatorHead {
    /// A logit per patch (a final 4³ stride-1 convolution to one channel).
    Patch,
    /// One logit per volume (global average pooling, then a linear layer).
    Global,
}

/// Configuration of [`Discriminator`].
#[derive(Config, Debug)]
pub struct DiscriminatorConfig {
    /// Input channels (1 for images, the latent channels for latents).
    pub in_channels: usize,
    /// Channels of the first layer; each further layer doubles them.
    pub channels: usize,
    /// Stride-2 layers.
    pub layers: usize,
    /// Output head.
    pub head: DiscriminatorHead,
}

/// A 4³ convolution layer with optional instance normalisation.
#[derive(Module, Debug)]
struct DiscriminatorLayer {
    conv: Conv3d,
    norm: Option<GroupNorm>,
}

/// See the module docs.
#[derive(Module, Debug)]
pub struct Discriminator {
    layers: Vec<DiscriminatorLayer>,
    patch_out: Option<Conv3d>,
    global_out: Option<Linear>,
}

impl DiscriminatorConfig {
    /// The patch discriminator of stage 1 (the reference: 32 channels, 3 layers, one image
    /// channel).
    pub fn patch(in_channels: usize, channels: usize, layers: usize) -> Self {
        DiscriminatorConfig::new(in_channels, channels, layers, DiscriminatorHead::Patch)
    }

    /// The latent-style discriminator of stage 2 (the reference: 64 channels, 3 layers).
    pub fn style(latent_channels: usize) -> Self {
        DiscriminatorConfig::new(latent_channels, 64, 3, DiscriminatorHead::Global)
    }

    /// Builds the network.
    pub fn init(&self, device: &Device) -> Discriminator {
        let mut layers = Vec::new();
        let mut input = self.in_channels;
        for l in 0..self.layers {
            let out = self.channels << l;
            let conv = Conv3dConfig::new([input, out], [4, 4, 4])
                .with_stride([2, 2, 2])
                .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                .with_bias(l == 0)
                .init(device);
            // The first layer has no normalisation (as both references).
            let norm = (l > 0).then(|| GroupNormConfig::new(out, out).init(device));
            layers.push(DiscriminatorLayer { conv, norm });
            input = out;
        }
        let (patch_out, global_out) = match self.head {
            DiscriminatorHead::Patch => (
                Some(
                    Conv3dConfig::new([input, 1], [3, 3, 3])
                        .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                        .init(device),
                ),
                None,
            ),
            DiscriminatorHead::Global => (None, Some(LinearConfig::new(input, 1).init(device))),
        };
        Discriminator {
            layers,
            patch_out,
            global_out,
        }
    }
}

impl Discriminator {
    /// Logits: `[b, 1, d', h', w']` per patch, or `[b, 1]` per volume, flattened to `[n]`.
    ///
    /// # Shapes
    /// - x `[b, in_channels, d, h, w]` (each divisible by 2^layers) → `[n]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<1> {
        let mut h = x;
        for layer in &self.layers {
            h = layer.conv.forward(h);
            if let Some(norm) = &layer.norm {
                h = norm.forward(h);
            }
            h = leaky_relu(h, 0.2);
        }
        if let Some(conv) = &self.patch_out {
            let out = conv.forward(h);
            let n = out.shape().num_elements();
            return out.reshape([n]);
        }
        let [b, c, d, hh, w] = h.dims();
        let pooled = h.reshape([b, c, d * hh * w]).mean_dim(2).reshape([b, c]);
        let linear = self.global_out.as_ref().expect("one head is always built");
        linear.forward(pooled).reshape([b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn heads_have_the_expected_shapes() {
        let device = Device::default();
        let x = Tensor::<5>::random([2, 1, 32, 32, 16], Distribution::Normal(0.0, 1.0), &device);
        let patch = DiscriminatorConfig::patch(1, 8, 3).init(&device);
        // Three stride-2 layers: 4×4×2 patches per volume.
        assert_eq!(patch.forward(x).dims(), [2 * 4 * 4 * 2]);
        let z = Tensor::<5>::random([2, 6, 16, 16, 8], Distribution::Normal(0.0, 1.0), &device);
        let style = DiscriminatorConfig::style(6).init(&device);
        assert_eq!(style.forward(z).dims(), [2]);
    }
}
