//! Harmonisation models, built as separate small pieces the way diffusers and MONAI keep them:
//! the noise [`schedule`] (β, ᾱ and closed-form coefficients), the DDIM [`sampler`] (inversion and
//! sampling paths over the training schedule, one move at a time as coefficients, never calling a
//! network), and burn building blocks: chunked spatial [`attention`], the UNet's
//! [`time_embedding`], and [`latent_ops`] (AdaIN fusion, instance norm, Gram matrices). The
//! autoencoder, UNet, training loops and model artefact join here with the HCLD-model issue.

pub mod attention;
pub mod autoencoder;
pub mod blocks;
pub mod diffusion;
pub mod latent_ops;
pub mod sampler;
pub mod schedule;
pub mod time_embedding;
pub mod unet;
