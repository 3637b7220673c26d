//! What every method output's sidecar records under `"hcld"`: one typed struct, written and read
//! back through the two functions here (reports and the evaluation read targets and models from
//! it; re-runs read the fingerprint).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::derivatives::{DerivativeName, DerivativesDataset};

use super::hcld::TargetRecord;
use super::{HcldParameters, Method};
use crate::model::harmonize::TargetKind;

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

/// The sidecar key provenance sits under.
pub const SIDECAR_KEY: &str = "hcld";

impl MethodProvenance {
    /// As the sidecar records it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("provenance serialises")
    }

    /// The provenance recorded in the sidecar of `name`, if it has one that parses.
    pub fn read(out: &DerivativesDataset, name: &DerivativeName) -> Option<MethodProvenance> {
        let sidecar = out.read_sidecar(name)?;
        serde_json::from_value(sidecar.get(SIDECAR_KEY)?.clone()).ok()
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
