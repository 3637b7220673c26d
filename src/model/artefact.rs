//! The model artefact: a folder holding `config.json` (the whole [`HcldConfig`], the latent scale,
//! a summary of the training data and the software that made it) and one burnpack per network
//! (`autoencoder.bpk`, `unet.bpk`). Its SHA-256 identifies the model in every output sidecar and
//! names the folder (`hcld-<first 12 hex>`); loading recomputes it, so a modified file is noticed.
//! The digest covers what the model *is* (format, configuration, latent scale, both networks'
//! weights), not how it came about (training times, resumes, the hcld version), and the weight
//! files carry sequential parameter ids instead of burn's random ones: the same training on the
//! same data gives the same model id in any OUTPUT_DIR, run by hand or by a workflow engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use super::autoencoder::AutoencoderKl;
use super::config::HcldConfig;
use super::device::ComputeDevice;
use super::storage::{StorageError, read, sha256_of_parts, write_atomic};
use super::unet::DiffusionUnet;

/// The artefact format this hcld writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const CONFIG_FILE: &str = "config.json";
const AUTOENCODER_FILE: &str = "autoencoder.bpk";
const UNET_FILE: &str = "unet.bpk";

/// What a model was trained on and how long.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainingSummary {
    /// Images per site.
    pub images_per_site: BTreeMap<String, usize>,
    /// Stage 1, if this hcld trained it.
    pub autoencoder: Option<StageReport>,
    /// SHA-256 of the pretrained autoencoder's weights, when stage 1 was not trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained_autoencoder: Option<String>,
    /// Stage 2, if this hcld trained it.
    pub diffusion: Option<StageReport>,
    /// "flex on cpu", …
    pub backend: String,
}

/// The `config.json` of an artefact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtefactManifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// hcld version that wrote it.
    pub hcld_version: String,
    /// The whole configuration.
    pub config: HcldConfig,
    /// s = 1/std(z) of the training latents; latents are multiplied by it before diffusion.
    pub latent_scale: f64,
    /// The 99.9th percentile of |s·z| over the training latents: where `--clip-x0 latents`
    /// clips. `None` in artefacts written before it was recorded.
    #[serde(default)]
    pub latent_range: Option<f64>,
    /// What the model was trained on.
    pub training: TrainingSummary,
}

/// Why an artefact cannot be written or used.
#[derive(Debug, thiserror::Error)]
pub enum ArtefactError {
    /// A file could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// `config.json` is not an hcld model configuration.
    #[error(
        "{path}: not an hcld model configuration ({message}); point --model at a folder hcld wrote"
    )]
    Manifest {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The folder holds no model (`--model BIDS_DIR`, say).
    #[error(
        "{0}: not an hcld model folder (no {CONFIG_FILE}); give --model an hcld-<id> folder from OUTPUT_DIR/models of a group run"
    )]
    NotAModel(PathBuf),
    /// The folder's name promises another model than its files are (files edited or mixed).
    #[error(
        "{dir}: the folder is named for model {named}, but its files are model {actual}; they were changed after training or mixed from two models: use the folder as hcld wrote it, or train again"
    )]
    Tampered {
        /// The folder.
        dir: PathBuf,
        /// The id its name gives.
        named: String,
        /// The first 12 hex digits of the files' SHA-256.
        actual: String,
    },
    /// The weights do not fit the configuration (e.g. a tensor of another shape).
    #[error(
        "{path}: the weights do not match {CONFIG_FILE} ({message}); the folder mixes files of different models, re-export or retrain it"
    )]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// burn's account, naming the tensor.
        message: String,
    },
}

/// A loaded model, ready for inference.
#[derive(Debug)]
pub struct LoadedModel {
    /// Its manifest.
    pub manifest: ArtefactManifest,
    /// Stage-1 network.
    pub autoencoder: AutoencoderKl,
    /// Stage-2 network.
    pub unet: DiffusionUnet,
    /// The artefact's SHA-256.
    pub sha256: String,
    /// Where it was loaded from.
    pub dir: PathBuf,
}

/// Gives every parameter the id of its position in the module (burn draws random ids at
/// initialisation, which would make two saves of equal weights differ byte for byte).
#[derive(Default)]
struct SequentialParamIds {
    next: u64,
}

impl SequentialParamIds {
    fn renumber<T: burn::module::Parameter>(
        &mut self,
        param: burn::module::Param<T>,
    ) -> burn::module::Param<T> {
        let (_, value, mapper) = param.consume();
        self.next += 1;
        burn::module::Param::from_mapped_value(self.next.into(), value, mapper)
    }
}

impl burn::module::ModuleMapper for SequentialParamIds {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<D>> {
        self.renumber(param)
    }

    fn map_int<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<D, burn::tensor::Int>>,
    ) -> burn::module::Param<burn::tensor::Tensor<D, burn::tensor::Int>> {
        self.renumber(param)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<D, burn::tensor::Bool>>,
    ) -> burn::module::Param<burn::tensor::Tensor<D, burn::tensor::Bool>> {
        self.renumber(param)
    }
}

fn record_bytes<M: Module>(module: &M, path: &Path) -> Result<Vec<u8>, ArtefactError> {
    let bytes = module
        .clone()
        .map(&mut SequentialParamIds::default())
        .into_record()
        .into_bytes()
        .map_err(|e| StorageError::new(path, e.to_string()))?;
    Ok(bytes.to_vec())
}

/// An autoencoder's weights as the bytes an artefact stores (sequential parameter ids, so equal
/// weights give equal bytes): what `hcld-pretrain` ships.
pub fn autoencoder_bytes(autoencoder: &AutoencoderKl) -> Result<Vec<u8>, ArtefactError> {
    record_bytes(autoencoder, Path::new(AUTOENCODER_FILE))
}

/// An autoencoder of `config` with the weights of [`autoencoder_bytes`]; `path` names the bytes
/// in errors.
pub fn load_autoencoder(
    config: &super::autoencoder::AutoencoderConfig,
    bytes: Vec<u8>,
    path: &Path,
    device: &ComputeDevice,
) -> Result<AutoencoderKl, ArtefactError> {
    load_weights(config.init(&device.device), path, bytes)
}

/// The model's identity: format, configuration and latent scale (not the training history or
/// the hcld version that wrote it) and the two weight files.
fn digest(manifest: &ArtefactManifest, ae: &[u8], unet: &[u8]) -> String {
    let identity = serde_json::to_vec(&serde_json::json!({
        "format_version": manifest.format_version,
        "config": manifest.config,
        "latent_scale": manifest.latent_scale,
    }))
    .expect("manifest serialises");
    sha256_of_parts([
        (CONFIG_FILE, identity.as_slice()),
        (AUTOENCODER_FILE, ae),
        (UNET_FILE, unet),
    ])
}

/// An artefact serialised: its SHA-256 and its files in writing order (the config last: a folder
/// without it is not an artefact, so a half-written one is never loaded).
#[derive(Debug, Clone)]
pub struct ArtefactFiles {
    /// The model's SHA-256.
    pub sha256: String,
    /// (file name, bytes), in writing order.
    pub files: Vec<(&'static str, Vec<u8>)>,
}

impl ArtefactFiles {
    /// The folder name, `hcld-<sha12>`.
    pub fn folder_name(&self) -> String {
        format!("hcld-{}", &self.sha256[..12])
    }

    /// (file name, bytes) pairs, for a writer.
    pub fn as_slices(&self) -> Vec<(&str, &[u8])> {
        self.files.iter().map(|(n, b)| (*n, b.as_slice())).collect()
    }

    /// Writes the artefact into `parent/hcld-<sha12>/` (outside OUTPUT_DIR: tests, a model kept
    /// elsewhere; OUTPUT_DIR's model store writes through `crate::derivatives`).
    pub fn save(&self, parent: &Path) -> Result<PathBuf, ArtefactError> {
        let dir = parent.join(self.folder_name());
        for (name, bytes) in &self.files {
            write_atomic(&dir.join(name), bytes)?;
        }
        Ok(dir)
    }
}

/// Serialises an artefact. The same model gives the same bytes and SHA-256.
pub fn artefact_files(
    manifest: &ArtefactManifest,
    autoencoder: &AutoencoderKl,
    unet: &DiffusionUnet,
) -> Result<ArtefactFiles, ArtefactError> {
    let config = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
    let ae = record_bytes(autoencoder, Path::new(AUTOENCODER_FILE))?;
    let un = record_bytes(unet, Path::new(UNET_FILE))?;
    let sha256 = digest(manifest, &ae, &un);
    Ok(ArtefactFiles {
        sha256,
        files: vec![
            (AUTOENCODER_FILE, ae),
            (UNET_FILE, un),
            (CONFIG_FILE, config),
        ],
    })
}

/// Writes an artefact into `parent/hcld-<sha12>/` and returns (folder, SHA-256). Writing the
/// same model again finds the same folder; a folder of that name is replaced file by file
/// atomically.
pub fn save_artefact(
    parent: &Path,
    manifest: &ArtefactManifest,
    autoencoder: &AutoencoderKl,
    unet: &DiffusionUnet,
) -> Result<(PathBuf, String), ArtefactError> {
    let files = artefact_files(manifest, autoencoder, unet)?;
    Ok((files.save(parent)?, files.sha256))
}

/// What one stage did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageReport {
    /// Forward passes done in total (including before a resume).
    pub steps: usize,
    /// Optimiser steps done in total.
    pub optimizer_steps: usize,
    /// Epochs covered (fractional when stopped by `max_steps`).
    pub epochs: f64,
    /// The forward pass this run resumed after, if it resumed.
    pub resumed_from: Option<usize>,
    /// Mean total loss of the first and last 10 % of the recorded curve.
    pub first_loss: f64,
    /// See `first_loss`.
    pub last_loss: f64,
    /// Wall time of this run (not counting earlier runs).
    pub seconds: f64,
}

/// The SHA-256 of an artefact (its identity in `config.json` and both weight files), without
/// loading the networks.
pub fn load_digest(dir: &Path) -> Result<String, ArtefactError> {
    let manifest = read_manifest(dir)?;
    let ae = read(&dir.join(AUTOENCODER_FILE))?;
    let un = read(&dir.join(UNET_FILE))?;
    Ok(digest(&manifest, &ae, &un))
}

/// Reads `dir/config.json` only (no weights): what a model is, cheaply.
pub fn read_manifest(dir: &Path) -> Result<ArtefactManifest, ArtefactError> {
    let path = dir.join(CONFIG_FILE);
    if !path.exists() {
        return Err(ArtefactError::NotAModel(dir.to_path_buf()));
    }
    let bytes = read(&path)?;
    parse_manifest(&path, &bytes)
}

fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<ArtefactManifest, ArtefactError> {
    let manifest: ArtefactManifest =
        serde_json::from_slice(bytes).map_err(|e| ArtefactError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if manifest.format_version > FORMAT_VERSION {
        return Err(ArtefactError::Manifest {
            path: path.to_path_buf(),
            message: format!(
                "format {} is newer than this hcld reads ({FORMAT_VERSION}); upgrade hcld",
                manifest.format_version
            ),
        });
    }
    manifest
        .config
        .validate()
        .map_err(|e| ArtefactError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if !(manifest.latent_scale.is_finite() && manifest.latent_scale > 0.0) {
        return Err(ArtefactError::Manifest {
            path: path.to_path_buf(),
            message: format!("latent_scale {} must be positive", manifest.latent_scale),
        });
    }
    Ok(manifest)
}

fn load_weights<M: Module>(module: M, path: &Path, bytes: Vec<u8>) -> Result<M, ArtefactError> {
    let weights_error = |message: String| ArtefactError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| weights_error(e.to_string()))?;
    module
        .try_load_record(record)
        .map_err(|e| weights_error(summarise_record_error(&e.to_string())))
}

/// burn lists every mismatched tensor in one long message; keep the first and count the rest.
fn summarise_record_error(message: &str) -> String {
    let items: Vec<&str> = message
        .split('"')
        .filter(|s| s.contains(": shape mismatch") || s.contains("Missing"))
        .collect();
    match items.as_slice() {
        [] => message.to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first}, and {} more tensors", rest.len()),
    }
}

/// A folder named as hcld names models (`hcld-` and 12 hex digits) must hold that model: its
/// name is the id sidecars record, so files changed after training (a tampered latent scale) or
/// mixed from two models would otherwise pass under another model's id. Other names (a model
/// copied elsewhere under a name of the user's) are not checked.
fn check_folder_name(dir: &Path, sha256: &str) -> Result<(), ArtefactError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(named) = name.strip_prefix("hcld-") else {
        return Ok(());
    };
    let is_id = named.len() == 12 && named.chars().all(|c| c.is_ascii_hexdigit());
    if is_id && !sha256.starts_with(&named.to_ascii_lowercase()) {
        return Err(ArtefactError::Tampered {
            dir: dir.to_path_buf(),
            named: named.to_string(),
            actual: sha256[..12].to_string(),
        });
    }
    Ok(())
}

/// Loads an artefact onto `device`, checking the configuration, every tensor's shape, and
/// recomputing the SHA-256 (which must match a folder name of hcld's).
pub fn load_artefact(dir: &Path, device: &ComputeDevice) -> Result<LoadedModel, ArtefactError> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        return Err(ArtefactError::NotAModel(dir.to_path_buf()));
    }
    let config_bytes = read(&config_path)?;
    let manifest = parse_manifest(&config_path, &config_bytes)?;
    let ae_path = dir.join(AUTOENCODER_FILE);
    let unet_path = dir.join(UNET_FILE);
    let ae_bytes = read(&ae_path)?;
    let unet_bytes = read(&unet_path)?;
    let sha256 = digest(&manifest, &ae_bytes, &unet_bytes);
    check_folder_name(dir, &sha256)?;
    let autoencoder = load_weights(
        manifest.config.autoencoder.init(&device.device),
        &ae_path,
        ae_bytes,
    )?;
    let unet = load_weights(
        manifest.config.unet.init(&device.device),
        &unet_path,
        unet_bytes,
    )?;
    Ok(LoadedModel {
        manifest,
        autoencoder,
        unet,
        sha256,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tensor::grid_tensor;
    use burn::prelude::*;

    fn values(t: Tensor<5>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec().unwrap()
    }

    fn tiny() -> HcldConfig {
        let mut c = HcldConfig::preset("tiny").unwrap();
        c.grid.shape = [16, 16, 16];
        c.unet.zero_init_output = false;
        c
    }

    #[test]
    fn save_then_load_gives_identical_outputs_and_the_same_digest() {
        let device = ComputeDevice::cpu();
        let config = tiny();
        let ae = config.autoencoder.init(&device.device);
        let unet = config.unet.init(&device.device);
        let manifest = ArtefactManifest {
            format_version: FORMAT_VERSION,
            hcld_version: crate::VERSION.into(),
            config: config.clone(),
            // A value whose shortest decimal form needs all 17 digits: it must come back exactly.
            latent_scale: 1.3058291700501479,
            latent_range: None,
            training: TrainingSummary::default(),
        };
        let parent = tempfile::tempdir().unwrap();
        let (dir, sha) = save_artefact(parent.path(), &manifest, &ae, &unet).unwrap();
        assert!(dir.ends_with(format!("hcld-{}", &sha[..12])));
        let loaded = load_artefact(&dir, &device).unwrap();
        assert_eq!(loaded.sha256, sha);
        assert_eq!(loaded.manifest.latent_scale, 1.3058291700501479);

        let im: Vec<f32> = (0..4096).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        let x = grid_tensor(&[&im], [16, 16, 16], &device.device);
        assert_eq!(
            values(ae.reconstruct(x.clone())),
            values(loaded.autoencoder.reconstruct(x))
        );
        let z = Tensor::<5>::ones([1, 6, 4, 4, 4], &device.device);
        assert_eq!(
            values(unet.forward(z.clone(), &[10.0])),
            values(loaded.unet.forward(z, &[10.0]))
        );
        // Saving again lands in the same folder with the same digest, also from copies of the
        // networks with other (random) parameter ids and another training history: the id says
        // what the model is, not how it was made.
        assert_eq!(
            save_artefact(parent.path(), &manifest, &ae, &unet)
                .unwrap()
                .1,
            sha
        );
        struct RandomIds;
        impl burn::module::ModuleMapper for RandomIds {
            fn map_float<const D: usize>(
                &mut self,
                param: burn::module::Param<Tensor<D>>,
            ) -> burn::module::Param<Tensor<D>> {
                let (_, value, mapper) = param.consume();
                burn::module::Param::from_mapped_value(burn::module::ParamId::new(), value, mapper)
            }
        }
        let mut retrained = manifest.clone();
        retrained.training.backend = "another run".into();
        retrained.hcld_version = "0.0.0".into();
        let (dir2, sha2) = save_artefact(
            parent.path(),
            &retrained,
            &ae.clone().map(&mut RandomIds),
            &unet.clone().map(&mut RandomIds),
        )
        .unwrap();
        assert_eq!((dir2, sha2), (dir.clone(), sha.clone()));
        // Other weights are another model.
        let other = config.unet.init(&device.device);
        assert_ne!(
            save_artefact(parent.path(), &manifest, &ae, &other)
                .unwrap()
                .1,
            sha
        );
    }

    #[test]
    fn weights_of_another_shape_name_the_tensor() {
        let device = ComputeDevice::cpu();
        let config = tiny();
        let mut wider = config.clone();
        wider.autoencoder.channels = vec![8, 16, 24];
        let manifest = ArtefactManifest {
            format_version: FORMAT_VERSION,
            hcld_version: crate::VERSION.into(),
            config: config.clone(),
            latent_scale: 1.0,
            latent_range: None,
            training: TrainingSummary::default(),
        };
        // Weights of the wider autoencoder under the narrow config.
        let parent = tempfile::tempdir().unwrap();
        let (dir, _) = save_artefact(
            parent.path(),
            &manifest,
            &wider.autoencoder.init(&device.device),
            &config.unet.init(&device.device),
        )
        .unwrap();
        let e = load_artefact(&dir, &device).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ArtefactError::Weights { .. }), "{msg}");
        assert!(
            msg.contains("autoencoder.bpk") && msg.contains("shape"),
            "{msg}"
        );
        assert!(msg.contains("down."), "the tensor is named: {msg}");
        assert!(msg.len() < 400, "one readable line: {msg}");
    }

    #[test]
    fn a_foreign_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), b"{\"name\": 3}").unwrap();
        let e = load_artefact(dir.path(), &ComputeDevice::cpu()).unwrap_err();
        assert!(
            e.to_string().contains("not an hcld model configuration"),
            "{e}"
        );
    }
}
