//! What every method output's sidecar records under `"hcld"`: one typed struct, written and read
//! back through the two functions here (reports and the evaluation read targets and models from
//! it; re-runs read the fingerprint), with the typed parameters of methods that record a model
//! and a target ([`HcldParameters`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::derivatives::{DerivativeName, DerivativesDataset, PROVENANCE_KEY};
use crate::model::compose::OutputMode;
use crate::model::config::GridConfig;
use crate::model::harmonize::TargetKind;
use crate::model::sampler::X0Clip;

use super::Method;

/// The provenance of one method output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodProvenance {
    /// hcld version that wrote it.
    #[serde(rename = "Version")]
    pub version: String,
    /// Digest of everything that decides the output (a re-run with the same one keeps it).
    #[serde(rename = "Fingerprint")]
    pub fingerprint: String,
    /// The method.
    #[serde(rename = "Method")]
    pub method: Method,
    /// What the intensities mean.
    #[serde(rename = "Units")]
    pub units: String,
    /// Fingerprint of the preprocessed input.
    #[serde(rename = "PreprocessingFingerprint")]
    pub preprocessing_fingerprint: String,
    /// The method's parameters (see [`HcldParameters`] for HCLD's).
    #[serde(rename = "Parameters")]
    pub parameters: Value,
    /// What was fitted to this image.
    #[serde(rename = "Fit")]
    pub fit: Value,
}

impl MethodProvenance {
    /// As the sidecar records it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("provenance serialises")
    }

    /// The provenance recorded in the sidecar of `name`, if it has one that parses.
    pub fn read(out: &DerivativesDataset, name: &DerivativeName) -> Option<MethodProvenance> {
        let sidecar = out.read_sidecar(name)?;
        serde_json::from_value(sidecar.get(PROVENANCE_KEY)?.clone()).ok()
    }

    /// The target recorded by a method that harmonises towards one: (kind, label).
    pub fn target(&self) -> Option<(TargetKind, String)> {
        #[derive(Deserialize)]
        struct WithTarget {
            #[serde(rename = "Target")]
            target: TargetRecord,
        }
        let t = serde_json::from_value::<WithTarget>(self.parameters.clone()).ok()?;
        Some((t.target.kind, t.target.label))
    }

    /// HCLD's parameters, when this is an HCLD output.
    pub fn hcld_parameters(&self) -> Option<HcldParameters> {
        serde_json::from_value(self.parameters.clone()).ok()
    }
}

/// What an HCLD output's sidecar records as its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HcldParameters {
    /// The model.
    #[serde(rename = "Model")]
    pub model: ModelRecord,
    /// The target.
    #[serde(rename = "Target")]
    pub target: TargetRecord,
    /// The DDIM path that ran.
    #[serde(rename = "DDIM")]
    pub ddim: DdimRecord,
    /// How the output image was composed (sidecars written before the setting: the decoded
    /// image).
    #[serde(rename = "OutputMode", default)]
    pub output_mode: OutputMode,
    /// `--seed`.
    #[serde(rename = "Seed")]
    pub seed: u64,
    /// Backend and device.
    #[serde(rename = "Backend")]
    pub backend: String,
}

/// The model an output was harmonised with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Its SHA-256.
    #[serde(rename = "SHA256")]
    pub sha256: String,
    /// Its folder, relative to OUTPUT_DIR when inside it.
    #[serde(rename = "Path")]
    pub path: String,
    /// Its configuration's name.
    #[serde(rename = "Config")]
    pub config: String,
    /// The grid its networks see.
    #[serde(rename = "Grid")]
    pub grid: GridConfig,
}

/// The target an output was harmonised to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// A site, or an image.
    #[serde(rename = "Kind")]
    pub kind: TargetKind,
    /// The site label, or the image path.
    #[serde(rename = "Label")]
    pub label: String,
    /// The image its latent was encoded from.
    #[serde(rename = "Representative")]
    pub representative: String,
    /// SHA-256 of the latent.
    #[serde(rename = "LatentSHA256")]
    pub latent_sha256: String,
}

/// The DDIM path that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdimRecord {
    /// Inversion depth as a fraction of the schedule.
    #[serde(rename = "Strength")]
    pub strength: f64,
    /// Inversion steps that ran.
    #[serde(rename = "InversionSteps")]
    pub inversion_steps: usize,
    /// Sampling steps that ran.
    #[serde(rename = "SamplingSteps")]
    pub sampling_steps: usize,
    /// The timestep inverted to.
    #[serde(rename = "TargetTimestep")]
    pub target_timestep: usize,
    /// The x̂₀ clipping asked for.
    #[serde(rename = "ClipX0", default)]
    pub clip: X0Clip,
    /// The bound it clipped to (`null`: not clipped).
    #[serde(rename = "ClipBound", default)]
    pub clip_bound: Option<f64>,
}
