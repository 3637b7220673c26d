//! The convolutional building blocks shared by the autoencoder and the UNet (MONAI's
//! `ResBlock`, `Downsample`, `Upsample` for 3D): GroupNorm → SiLU → conv residual blocks (with an
//! optional timestep-embedding projection for the UNet), stride-2 downsampling after an asymmetric
//! (0, 1) pad, and nearest-neighbour ×2 upsampling followed by a 3³ convolution.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig3d};
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::ops::PadMode;

use super::attention::SpatialAttention;

/// Checks a multi-level network's shape parameters (they come from model files): one attention
/// flag per level, and a GroupNorm group count that divides every level's channels. `network`
/// names the model in the message.
pub fn validate_levels(
    network: &str,
    channels: &[usize],
    attention_levels: &[bool],
    norm_groups: usize,
) -> Result<(), String> {
    if channels.is_empty() || attention_levels.len() != channels.len() {
        return Err(format!(
            "{network}: {} channel levels but {} attention flags",
            channels.len(),
            attention_levels.len()
        ));
    }
    if norm_groups == 0
        || channels
            .iter()
            .any(|c| *c == 0 || !c.is_multiple_of(norm_groups))
    {
        return Err(format!(
            "{network}: channels {channels:?} must be multiples of the {norm_groups} norm groups"
        ));
    }
    Ok(())
}

/// Checks a network's numeric settings: a GroupNorm epsilon that is positive and finite (0 divides
/// by zero on a flat patch) and attention chunk sizes of at least 1 (a chunk of 0 makes no
/// progress: burn panics on it).
pub fn validate_numerics(
    network: &str,
    norm_eps: f64,
    query_chunk: usize,
    key_chunk: usize,
) -> Result<(), String> {
    if !(norm_eps > 0.0 && norm_eps.is_finite()) {
        return Err(format!(
            "{network}: norm_eps {norm_eps} must be positive; give a small value such as 1e-6"
        ));
    }
    if query_chunk == 0 || key_chunk == 0 {
        return Err(format!(
            "{network}: attention_query_chunk {query_chunk} and attention_key_chunk {key_chunk}: \
             give chunk sizes of at least 1 (e.g. 1024 and 4096)"
        ));
    }
    Ok(())
}

/// A 3³ convolution with "same" padding.
pub fn conv3(in_channels: usize, out_channels: usize, device: &Device) -> Conv3d {
    Conv3dConfig::new([in_channels, out_channels], [3, 3, 3])
        .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
        .init(device)
}

/// A 1³ convolution.
pub fn conv1(in_channels: usize, out_channels: usize, device: &Device) -> Conv3d {
    Conv3dConfig::new([in_channels, out_channels], [1, 1, 1]).init(device)
}

/// Configuration of [`ResBlock`].
#[derive(Config, Debug)]
pub struct ResBlockConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// GroupNorm groups.
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Timestep-embedding width, for UNet blocks.
    #[config(default = "None")]
    pub time_embedding_channels: Option<usize>,
    /// Start the second convolution at zero (MONAI's diffusion UNet does), so a new block is the
    /// identity.
    #[config(default = false)]
    pub zero_init_output: bool,
}

/// GN → SiLU → conv, (+ time embedding), GN → SiLU → conv, plus a (1³-projected) shortcut.
#[derive(Module, Debug)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv3d,
    time_projection: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv3d,
    shortcut: Option<Conv3d>,
}

impl ResBlockConfig {
    /// Builds the block.
    pub fn init(&self, device: &Device) -> ResBlock {
        let norm = |c: usize| {
            GroupNormConfig::new(self.norm_groups, c)
                .with_epsilon(self.norm_eps)
                .init(device)
        };
        ResBlock {
            norm1: norm(self.in_channels),
            conv1: conv3(self.in_channels, self.out_channels, device),
            time_projection: self
                .time_embedding_channels
                .map(|t| LinearConfig::new(t, self.out_channels).init(device)),
            norm2: norm(self.out_channels),
            conv2: if self.zero_init_output {
                Conv3dConfig::new([self.out_channels, self.out_channels], [3, 3, 3])
                    .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            } else {
                conv3(self.out_channels, self.out_channels, device)
            },
            shortcut: (self.in_channels != self.out_channels)
                .then(|| conv1(self.in_channels, self.out_channels, device)),
        }
    }
}

impl ResBlock {
    /// # Shapes
    /// - x `[b, in, d, h, w]`, time embedding `[b, t]` (UNet blocks only) → `[b, out, d, h, w]`
    pub fn forward(&self, x: Tensor<5>, time: Option<Tensor<2>>) -> Tensor<5> {
        let mut h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        if let (Some(projection), Some(t)) = (&self.time_projection, time) {
            let [b, c, _, _, _] = h.dims();
            // [b, t] -> [b, out, 1, 1, 1], broadcast over the voxels.
            h = h + projection.forward(silu(t)).reshape([b, c, 1, 1, 1]);
        }
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}

/// ResBlock → attention → ResBlock: the middle of both the autoencoder and the UNet.
#[derive(Module, Debug)]
pub struct Middle {
    /// First block.
    pub first: ResBlock,
    /// Attention between them.
    pub attention: SpatialAttention,
    /// Second block.
    pub second: ResBlock,
}

impl Middle {
    /// # Shapes
    /// - x `[b, c, d, h, w]`, time embedding `[b, t]` (UNet only) → `[b, c, d, h, w]`
    pub fn forward(&self, x: Tensor<5>, time: Option<Tensor<2>>) -> Tensor<5> {
        let x = self.first.forward(x, time.clone());
        let x = self.attention.forward(x);
        self.second.forward(x, time)
    }
}

/// One resolution level of either network: ResBlocks (each followed by attention where the level
/// has it), then a resampling step. The UNet walks the fields itself to keep its skip connections;
/// the autoencoder calls [`Level::forward`].
#[derive(Module, Debug)]
pub struct Level {
    /// The ResBlocks, in order.
    pub blocks: Vec<ResBlock>,
    /// Attention after block `i` (empty where the level has none).
    pub attentions: Vec<SpatialAttention>,
    /// Downsampling at the end (encoder side).
    pub downsample: Option<Downsample>,
    /// Upsampling at the end (decoder side).
    pub upsample: Option<Upsample>,
}

impl Level {
    /// # Shapes
    /// - x `[b, in, d, h, w]` → `[b, out, d', h', w']` (halved, doubled or kept)
    pub fn forward(&self, mut x: Tensor<5>, time: Option<Tensor<2>>) -> Tensor<5> {
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, time.clone());
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x);
            }
        }
        if let Some(d) = &self.downsample {
            x = d.forward(x);
        }
        if let Some(u) = &self.upsample {
            x = u.forward(x);
        }
        x
    }
}

/// Halves each spatial axis with a stride-2 3³ convolution: after a zero pad of (0, 1) and no
/// padding (MONAI's autoencoder), or with padding 1 on both sides (MONAI's diffusion UNet).
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv3d,
    asymmetric: bool,
}

impl Downsample {
    /// The autoencoder's downsampling (pad (0, 1), no padding), keeping `channels`.
    pub fn new(channels: usize, device: &Device) -> Downsample {
        Downsample {
            conv: Conv3dConfig::new([channels, channels], [3, 3, 3])
                .with_stride([2, 2, 2])
                .with_padding(PaddingConfig3d::Valid)
                .init(device),
            asymmetric: true,
        }
    }

    /// The UNet's downsampling (padding 1), keeping `channels`.
    pub fn strided(channels: usize, device: &Device) -> Downsample {
        Downsample {
            conv: Conv3dConfig::new([channels, channels], [3, 3, 3])
                .with_stride([2, 2, 2])
                .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                .init(device),
            asymmetric: false,
        }
    }

    /// # Shapes
    /// - `[b, c, d, h, w]` → `[b, c, d/2, h/2, w/2]` (even sizes)
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        if self.asymmetric {
            let padded = x.pad([(0, 1), (0, 1), (0, 1)], PadMode::Constant(0.0));
            self.conv.forward(padded)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Doubles each spatial axis: nearest-neighbour ×2, then a 3³ convolution.
#[derive(Module, Debug)]
pub struct Upsample {
    conv: Conv3d,
}

impl Upsample {
    /// An upsampling block keeping `channels`.
    pub fn new(channels: usize, device: &Device) -> Upsample {
        Upsample {
            conv: conv3(channels, channels, device),
        }
    }

    /// # Shapes
    /// - `[b, c, d, h, w]` → `[b, c, 2d, 2h, 2w]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.conv.forward(nearest_upsample_2x(x))
    }
}

/// Nearest-neighbour ×2 upsampling of the three spatial axes.
pub fn nearest_upsample_2x(x: Tensor<5>) -> Tensor<5> {
    let [b, c, d, h, w] = x.dims();
    // [b, c, d, 1, h, 1, w, 1] -> [b, c, d, 2, h, 2, w, 2] -> [b, c, 2d, 2h, 2w]
    x.reshape([b, c, d, 1, h, 1, w, 1])
        .expand([b, c, d, 2, h, 2, w, 2])
        .reshape([b, c, 2 * d, 2 * h, 2 * w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn shapes_and_parameter_counts() {
        let device = Device::default();
        let x = Tensor::<5>::random([2, 32, 8, 6, 4], Distribution::Normal(0.0, 1.0), &device);
        let same = ResBlockConfig::new(32, 32, 8).init(&device);
        assert_eq!(same.forward(x.clone(), None).dims(), [2, 32, 8, 6, 4]);
        // GN 64 + conv 27 680 + GN 64 + conv 27 680.
        assert_eq!(same.num_params(), 55_488);
        let wider = ResBlockConfig::new(32, 64, 8)
            .with_time_embedding_channels(Some(128))
            .init(&device);
        let t = Tensor::<2>::random([2, 128], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(wider.forward(x.clone(), Some(t)).dims(), [2, 64, 8, 6, 4]);
        // + 1³ shortcut 2 112 + time projection 128·64 + 64.
        assert_eq!(wider.num_params(), 168_320 + 8_256);
        assert_eq!(
            Downsample::new(32, &device).forward(x.clone()).dims(),
            [2, 32, 4, 3, 2]
        );
        assert_eq!(
            Downsample::strided(32, &device).forward(x.clone()).dims(),
            [2, 32, 4, 3, 2]
        );
        assert_eq!(
            Upsample::new(32, &device).forward(x).dims(),
            [2, 32, 16, 12, 8]
        );
    }

    #[test]
    fn nearest_upsampling_repeats_each_voxel() {
        let device = Device::default();
        let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &device)
            .reshape([1, 1, 2, 2, 2]);
        let up = nearest_upsample_2x(x);
        let v: Vec<f32> = up.into_data().convert::<f32>().try_into_vec().unwrap();
        // Voxel (i, j, k) of the output is input voxel (i/2, j/2, k/2); row-major [d, h, w].
        for i in 0..4 {
            for j in 0..4 {
                for k in 0..4 {
                    let want = 1.0 + ((i / 2) * 4 + (j / 2) * 2 + k / 2) as f32;
                    assert_eq!(v[i * 16 + j * 4 + k], want);
                }
            }
        }
    }
}
