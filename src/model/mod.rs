//! The HCLD harmonisation model, built as separate small pieces the way diffusers and MONAI keep
//! them:
//! - the noise [`schedule`] (β, ᾱ and closed-form coefficients) and the DDIM [`sampler`]
//!   (inversion and sampling paths over the training schedule, as coefficients, never calling a
//!   network);
//! - burn networks: [`autoencoder`] and [`unet`] from the shared [`blocks`], chunked
//!   [`attention`], the [`time_embedding`], and the [`discriminator`]s of the optional
//!   adversarial terms;
//! - [`latent_ops`] (AdaIN fusion, instance norm, Gram matrices), [`losses`], and [`diffusion`]
//!   (the DDIM loop on tensors and HCLD's latent translation);
//! - [`config`] (every number, presets), [`device`] (backend and device chosen at run time),
//!   [`training`] (both stages, checkpoints, curves), [`artefact`] (the saved model and its
//!   SHA-256) and [`storage`] (atomic writes and digests for those files);
//! - inference: [`harmonize`] (encode, translate, decode; site representatives and cached
//!   target latents) and the classical [`baselines`] behind the same `--method` choice.

pub mod artefact;
pub mod attention;
pub mod autoencoder;
pub mod baselines;
pub mod blocks;
pub mod config;
pub mod device;
pub mod diffusion;
pub mod discriminator;
pub mod harmonize;
pub mod latent_ops;
pub mod losses;
pub mod sampler;
pub mod schedule;
pub mod storage;
pub mod time_embedding;
pub mod training;
pub mod unet;
