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
//! - [`pretrained`]: the autoencoder hcld ships, embedded;
//! - [`config`] (every number, presets), [`device`] (backend and device chosen at run time),
//!   [`artefact`] (the saved model as bytes and its SHA-256) and [`storage`] (reads and digests
//!   for those files); training lives in `crate::train`, which this module never imports;
//! - [`tensor`] (the tensor layout training and inference share) and [`grid`] (images onto the
//!   model grid and back);
//! - inference: [`harmonize`] (encode, translate, decode; site representatives and cached
//!   target latents), [`compose`] (the output image from the decoded images and the input:
//!   generative, residual or intensity map) and the intensity maps of the classical
//!   [`baselines`].

pub mod artefact;
pub mod attention;
pub mod autoencoder;
pub mod baselines;
pub mod blocks;
pub mod compose;
pub mod config;
pub mod device;
pub mod diffusion;
pub mod discriminator;
pub mod grid;
pub mod harmonize;
pub mod latent_ops;
pub mod losses;
pub mod pretrained;
pub mod sampler;
pub mod schedule;
pub mod storage;
pub mod tensor;
pub mod time_embedding;
pub mod unet;
