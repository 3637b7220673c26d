//! Inference with a loaded HCLD artefact (the `LatentDiffusionInferer` role): encode an image on
//! the model grid to its scaled posterior-mean latent, translate it towards a target latent with
//! DDIM, decode. Also the choice of a site's representative target (the image whose latent
//! statistics are closest to the site's mean statistics) and the small file format that caches a
//! target latent.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::artefact::LoadedModel;
use super::device::ComputeDevice;
use super::diffusion::translate_until;
use super::sampler::{DdimConfig, DdimSampler, SamplerError};
use super::storage::{StorageError, read, sha256_hex};
use super::tensor::{grid_tensor, latent_tensor, tensor_values};

/// A model ready to harmonise images on one device with one DDIM setting.
#[derive(Debug)]
pub struct Harmonizer {
    model: LoadedModel,
    sampler: DdimSampler,
    ddim: DdimConfig,
    device: ComputeDevice,
}

/// What [`Harmonizer::harmonize`] decodes, on the model grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The decoded harmonised latent.
    pub harmonised: Vec<f32>,
    /// The decoded source latent, when asked for.
    pub source: Option<Vec<f32>>,
}

/// The stop flag was raised during a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("harmonisation interrupted")]
pub struct Interrupted;

impl Harmonizer {
    /// Wraps a loaded model with the DDIM path `ddim` (strength and step counts; step counts
    /// above the target timestep become the counts that can run, see [`Self::ddim`]).
    pub fn new(
        model: LoadedModel,
        device: ComputeDevice,
        ddim: DdimConfig,
    ) -> Result<Harmonizer, SamplerError> {
        let schedule = model
            .manifest
            .config
            .schedule
            .build()
            .map_err(|e| SamplerError::Invalid(e.to_string()))?;
        let timesteps = schedule.len();
        let sampler = DdimSampler::with_latent_range(schedule, ddim, model.manifest.latent_range)?;
        if let Some(limit) = model.manifest.config.diffusion_training.max_timestep {
            let tk = sampler.target_timestep();
            if tk >= limit {
                return Err(SamplerError::Invalid(format!(
                    "strength {} inverts to t_k = {tk}, but this model's UNet was trained only on t < \
                     {limit} (diffusion_training.max_timestep): use --strength below {} or a model \
                     trained on the whole schedule",
                    sampler.effective().strength,
                    limit as f64 / timesteps as f64
                )));
            }
        }
        // What runs, which the sidecars then record: more steps than t_k cannot be taken.
        let ddim = sampler.effective();
        Ok(Harmonizer {
            model,
            sampler,
            ddim,
            device,
        })
    }

    /// The loaded model.
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// The DDIM path used, with the step counts that run.
    pub fn ddim(&self) -> &DdimConfig {
        &self.ddim
    }

    /// The device.
    pub fn device(&self) -> &ComputeDevice {
        &self.device
    }

    /// The bound x̂₀ is clipped to while sampling (`None`: not clipped).
    pub fn clip_bound(&self) -> Option<f64> {
        self.sampler.clip_bound()
    }

    /// The sampler's t_k (the model timestep the latent is inverted to).
    pub fn target_timestep(&self) -> usize {
        self.sampler.target_timestep()
    }

    /// Voxels per axis of the model grid.
    pub fn grid_shape(&self) -> [usize; 3] {
        self.model.manifest.config.grid.shape
    }

    /// The latent shape `[c, x, y, z]`.
    pub fn latent_shape(&self) -> [usize; 4] {
        self.model.manifest.config.latent_shape()
    }

    /// The scaled posterior-mean latent of an image on the model grid (x fastest).
    pub fn encode(&self, image: &[f32]) -> Vec<f32> {
        let x = grid_tensor(&[image], self.grid_shape(), &self.device.device);
        let (mu, _) = self.model.autoencoder.encode(x);
        let s = self.model.manifest.latent_scale;
        tensor_values(mu.mul_scalar(s))
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// The autoencoder's round trip of an image on the model grid: decode(encode(image)) from
    /// the posterior mean, no diffusion. What the evaluation's `hcld-recon` row scores: the part
    /// of HCLD's error that is compression, not harmonisation.
    pub fn reconstruct(&self, image: &[f32]) -> Vec<f32> {
        let x = grid_tensor(&[image], self.grid_shape(), &self.device.device);
        let (mu, _) = self.model.autoencoder.encode(x);
        let decoded = self.model.autoencoder.decode(mu);
        tensor_values(decoded)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// Harmonises an image on the model grid towards `target` (a scaled latent from
    /// [`Self::encode`]): AdaIN, DDIM inversion to t_k, sampling back conditioned on the target,
    /// decode. With `with_source`, also decodes the source latent (the autoencoder's own
    /// reconstruction, which the residual and intensity-map outputs subtract). `stop` is checked
    /// before each UNet call.
    pub fn harmonize(
        &self,
        image: &[f32],
        target: &[f32],
        with_source: bool,
        stop: &dyn Fn() -> bool,
    ) -> Result<Decoded, Interrupted> {
        let s = self.model.manifest.latent_scale;
        let device = &self.device.device;
        let source = latent_tensor(&[&self.encode(image)], self.latent_shape(), device);
        let target = latent_tensor(&[target], self.latent_shape(), device);
        let decode = |z: burn::prelude::Tensor<5>| {
            let image = self.model.autoencoder.decode(z.div_scalar(s));
            tensor_values(image).into_iter().next().unwrap_or_default()
        };
        let source_image = with_source.then(|| decode(source.clone()));
        let z = translate_until(&self.model.unet, &self.sampler, source, target, stop)
            .ok_or(Interrupted)?;
        if stop() {
            return Err(Interrupted);
        }
        Ok(Decoded {
            harmonised: decode(z),
            source: source_image,
        })
    }
}

/// Per-channel mean and standard deviation of a latent laid out `[c, …]`: what AdaIN transfers,
/// and what "latent statistics" means for choosing a representative.
pub fn latent_statistics(latent: &[f32], channels: usize) -> Vec<f64> {
    let per = latent.len() / channels.max(1);
    let mut out = Vec::with_capacity(2 * channels);
    for c in latent.chunks(per.max(1)).take(channels) {
        let n = c.len() as f64;
        let mean = c.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = c.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        out.push(mean);
        out.push(var.sqrt());
    }
    out
}

/// The index of a site's representative: the latent whose statistics ([`latent_statistics`]) are
/// closest (Euclidean) to the mean statistics of all the site's latents. One real image, not an
/// average, because the UNet was trained to condition on real latents. Ties go to the first.
pub fn representative(latents: &[&[f32]], channels: usize) -> Option<usize> {
    if latents.is_empty() {
        return None;
    }
    let stats: Vec<Vec<f64>> = latents
        .iter()
        .map(|l| latent_statistics(l, channels))
        .collect();
    let k = stats[0].len();
    let mean: Vec<f64> = (0..k)
        .map(|j| stats.iter().map(|s| s[j]).sum::<f64>() / stats.len() as f64)
        .collect();
    let dist = |s: &Vec<f64>| -> f64 { s.iter().zip(&mean).map(|(a, b)| (a - b).powi(2)).sum() };
    (0..stats.len()).min_by(|&a, &b| dist(&stats[a]).total_cmp(&dist(&stats[b])))
}

/// What a target is: a site's representative, or a `--target-image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A site's representative image.
    Site,
    /// An image given with `--target-image`.
    Image,
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetKind::Site => "site",
            TargetKind::Image => "image",
        })
    }
}

/// A cached target: the latent one harmonisation conditions on, where it came from, and a
/// quantile summary of the target image's brain intensities (for report histograms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetLatent {
    /// A site or an image.
    #[serde(rename = "Kind")]
    pub kind: TargetKind,
    /// The site label, or the image path.
    #[serde(rename = "Label")]
    pub label: String,
    /// The image the latent was encoded from (its BIDS path or file name).
    #[serde(rename = "Representative")]
    pub representative: String,
    /// How many images of the site were candidates.
    #[serde(rename = "Candidates")]
    pub candidates: usize,
    /// SHA-256 of the model it was encoded with.
    #[serde(rename = "ModelSHA256")]
    pub model_sha256: String,
    /// Latent shape `[c, x, y, z]`.
    #[serde(rename = "LatentShape")]
    pub latent_shape: [usize; 4],
    /// SHA-256 of the latent's little-endian f32 bytes (the `.f32` file next to this JSON).
    #[serde(rename = "LatentSHA256")]
    pub latent_sha256: String,
    /// 101 quantiles (0 %, 1 %, …, 100 %) of the representative's preprocessed brain intensities.
    #[serde(rename = "IntensityQuantiles")]
    pub intensity_quantiles: Vec<f32>,
}

fn latent_bytes(latent: &[f32]) -> Vec<u8> {
    latent.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl TargetLatent {
    /// The two files of a cached target: `<stem>.json` (this, naming the latent's digest) and
    /// `<stem>.f32` (the latent, little-endian). Write the latent first: a JSON on disk then
    /// implies a complete latent.
    pub fn to_bytes(&self, latent: &[f32]) -> (Vec<u8>, Vec<u8>) {
        let json = serde_json::to_string_pretty(self).expect("a target serialises");
        (json.into_bytes(), latent_bytes(latent))
    }

    /// Reads a cached target, checking the latent's size and digest.
    pub fn load(stem: &Path) -> Result<(TargetLatent, Vec<f32>), StorageError> {
        let json = stem.with_extension("json");
        let meta: TargetLatent = serde_json::from_slice(&read(&json)?)
            .map_err(|e| StorageError::new(&json, format!("not a target file: {e}")))?;
        let bin = stem.with_extension("f32");
        let bytes = read(&bin)?;
        if sha256_hex(&bytes) != meta.latent_sha256 {
            return Err(StorageError::new(
                &bin,
                "does not match the digest in its .json; delete both to recompute".to_string(),
            ));
        }
        let latent: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if latent.len() != meta.latent_shape.iter().product::<usize>() {
            return Err(StorageError::new(
                &bin,
                "has the wrong size for its latent shape; delete both to recompute".to_string(),
            ));
        }
        Ok((meta, latent))
    }

    /// Fills in the digest of `latent`.
    pub fn with_latent(mut self, latent: &[f32]) -> TargetLatent {
        self.latent_sha256 = sha256_hex(&latent_bytes(latent));
        self
    }
}

/// 101 quantiles of some intensities (0 %, 1 %, …, 100 %), for [`TargetLatent`].
pub fn quantiles(values: &[f32]) -> Vec<f32> {
    let mut s: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return Vec::new();
    }
    s.sort_by(f32::total_cmp);
    (0..=100)
        .map(|p| s[((p as f64 / 100.0) * (s.len() - 1) as f64).round() as usize])
        .collect()
}

/// Mapping an image onto the model grid is the pipeline's job; this checks the result fits.
pub fn check_grid(image: &[f32], shape: [usize; 3]) -> Result<(), String> {
    let n: usize = shape.iter().product();
    if image.len() != n {
        return Err(format!(
            "image has {} voxels, the model grid {}×{}×{} has {n}",
            image.len(),
            shape[0],
            shape[1],
            shape[2]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_representative_is_the_most_typical_latent() {
        // Three latents, 2 channels of 4 values: the middle one sits at the mean statistics.
        let a = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let b = [1.0, 1.1, 0.9, 1.0, 2.0, 2.1, 1.9, 2.0];
        let c = [2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0];
        assert_eq!(representative(&[&a, &b, &c], 2), Some(1));
        assert_eq!(representative(&[&a], 2), Some(0));
        assert_eq!(representative(&[], 2), None);
        let st = latent_statistics(&b, 2);
        assert!((st[0] - 1.0).abs() < 1e-6 && (st[2] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn a_model_trained_on_shallow_timesteps_refuses_a_deeper_inversion() {
        let device = ComputeDevice::cpu();
        let mut config = crate::model::config::HcldConfig::preset("tiny").unwrap();
        config.diffusion_training.max_timestep = Some(200);
        let model = |config: &crate::model::config::HcldConfig| LoadedModel {
            manifest: crate::model::artefact::ArtefactManifest {
                format_version: 1,
                hcld_version: crate::VERSION.into(),
                config: config.clone(),
                latent_scale: 1.0,
                latent_range: None,
                training: Default::default(),
            },
            autoencoder: config.autoencoder.init(&device.device),
            unet: config.unet.init(&device.device),
            sha256: "ab".into(),
            dir: "model".into(),
        };
        let path = |strength| DdimConfig {
            strength,
            ..config.ddim.clone()
        };
        // t_k = round(0.19 · 999) = 190 < 200: asked about trained noise levels only.
        assert!(Harmonizer::new(model(&config), device.clone(), path(0.19)).is_ok());
        let e = Harmonizer::new(model(&config), device.clone(), path(0.3))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("t_k = 300") && e.contains("t < 200") && e.contains("--strength below 0.2"),
            "{e}"
        );
        // A model trained on the whole schedule takes any depth.
        config.diffusion_training.max_timestep = None;
        assert!(Harmonizer::new(model(&config), device, path(0.9)).is_ok());
    }

    #[test]
    fn a_target_round_trips_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("site-HH");
        let latent: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 1.0).collect();
        let meta = TargetLatent {
            kind: TargetKind::Site,
            label: "HH".into(),
            representative: "sub-01/anat/sub-01_T1w.nii.gz".into(),
            candidates: 2,
            model_sha256: "ab".into(),
            latent_shape: [3, 2, 2, 2],
            latent_sha256: String::new(),
            intensity_quantiles: quantiles(&[0.1, 0.5, 0.9]),
        }
        .with_latent(&latent);
        let (json, bin) = meta.to_bytes(&latent);
        std::fs::write(stem.with_extension("f32"), bin).unwrap();
        std::fs::write(stem.with_extension("json"), json).unwrap();
        let (m2, l2) = TargetLatent::load(&stem).unwrap();
        assert_eq!((m2, l2), (meta, latent));
        std::fs::write(stem.with_extension("f32"), [0u8; 96]).unwrap();
        let e = TargetLatent::load(&stem).unwrap_err().to_string();
        assert!(e.contains("digest"), "{e}");
    }
}
