//! The harmonisation methods, as values. Each method is one file holding everything that is
//! particular to it: its names and units ([`MethodSpec`]), what the group level fits for it
//! ([`MethodSpec::fit_group`]), what a participant run prepares once ([`MethodSpec::prepare`],
//! giving a [`Harmoniser`]), how it maps one preprocessed image, its sidecar parameters and
//! description, and its report label. The pipeline, the reports and the evaluation only iterate
//! [`Method::ALL`]; none of them names a method.
//!
//! Adding a method: one new file implementing [`MethodSpec`] (and [`Harmoniser`] for what it
//! prepares; it names itself as `Method(&Self)`), its `mod` line, and one line in
//! [`Method::ALL`].

mod hcld;
mod intensity;
mod none;
mod nyul;
mod provenance;
mod whitestripe;
mod zscore;

pub use hcld::{find_model, load_harmonizer, network_pool};
pub use provenance::{DdimRecord, HcldParameters, MethodProvenance, ModelRecord, TargetRecord};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::Value;

use crate::derivatives::{DerivativesDataset, DerivativesError};
use crate::model::baselines::IntensityMap;
use crate::preprocess::itk::WorldAffine;
use crate::settings::exit::ExitStatus;
use crate::settings::run::RunSettings;
use crate::volume::Volume;

/// What a harmonisation method is, independent of any run: its names, its units, and the steps
/// the pipeline calls. Implemented once per method, by a unit struct in the method's file.
pub trait MethodSpec: Sync + std::fmt::Debug {
    /// The name on the command line and in tables.
    fn name(&self) -> &'static str;

    /// The `desc-` label of its outputs.
    fn desc(&self) -> &'static str;

    /// What its output intensities mean, for sidecars and reports.
    fn units(&self) -> &'static str;

    /// Whether the method harmonises towards a target (a site or an image), so that an image of
    /// the target itself should come back unchanged (the evaluation's identity check). The
    /// baselines map every image to a fixed standard instead.
    fn has_target(&self) -> bool {
        false
    }

    /// Whether the method's outputs are in the preprocessed units (so a reference image needs no
    /// map into them).
    fn keeps_preprocessed_units(&self) -> bool {
        false
    }

    /// Whether the method is the identity: it writes nothing, its output is the preprocessed
    /// image itself (`desc-preproc`).
    fn is_identity(&self) -> bool {
        false
    }

    /// Group level, before anything is fitted: refuse a dataset the method cannot be fitted on.
    fn check_group(&self, _ctx: &GroupContext) -> Result<(), MethodError> {
        Ok(())
    }

    /// Group level: fits what the method needs from the whole dataset and stores it under
    /// `OUTPUT_DIR/models/`.
    fn fit_group(&self, _ctx: &GroupContext) -> Result<(), MethodError> {
        Ok(())
    }

    /// Participant level: loads what every job of the run shares (`None`: nothing to apply,
    /// as for the identity, or for an implicit HCLD without a model yet).
    fn prepare(&self, ctx: &RunContext) -> Result<Option<Box<dyn Harmoniser>>, MethodError>;

    /// How a reference image (the evaluation's ground truth) is brought into this method's
    /// output units.
    fn reference_units(&self, _ctx: &RunContext) -> ReferenceUnits {
        ReferenceUnits::Preprocessed
    }

    /// The label of its figures in reports, from an output's recorded provenance.
    fn report_label(&self, _provenance: Option<&MethodProvenance>) -> String {
        self.name().to_string()
    }
}

/// A harmonisation method: a handle on its [`MethodSpec`], compared, ordered, parsed and
/// serialised by name. Ordered as in [`Method::ALL`] (the report order).
#[derive(Clone, Copy)]
pub struct Method(&'static dyn MethodSpec);

impl Method {
    /// HCLD, the default method.
    pub const HCLD: Method = Method(&hcld::Hcld);

    /// Every method, in report order: the registry (a new method is one more line here).
    pub const ALL: &'static [Method] = &[
        Method(&none::Identity),
        Method(&zscore::ZScore),
        Method(&whitestripe::WhiteStripe),
        Method(&nyul::Nyul),
        Method::HCLD,
    ];

    fn position(self) -> usize {
        Method::ALL
            .iter()
            .position(|m| m.name() == self.name())
            .unwrap_or(usize::MAX)
    }
}

impl std::ops::Deref for Method {
    type Target = dyn MethodSpec;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Method {}

impl std::hash::Hash for Method {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl PartialOrd for Method {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Method {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.position().cmp(&other.position())
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Method::ALL
            .iter()
            .copied()
            .find(|m| m.name() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown method '{s}'; use one of {}, or all (every method)",
                    names.join(", ")
                )
            })
    }
}

impl serde::Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a participant run's steps share: the settings, the output dataset and the stop flag.
#[derive(Clone, Copy)]
pub struct RunContext<'a> {
    /// The run's settings.
    pub settings: &'a RunSettings,
    /// OUTPUT_DIR.
    pub out: &'a DerivativesDataset,
    /// Set by Ctrl-C / SIGTERM.
    pub stop: &'a Arc<AtomicBool>,
}

/// One preprocessed image the group level fits on.
#[derive(Debug, Clone)]
pub struct FitImage {
    /// Its BIDS path relative to BIDS_DIR (its identity in training records).
    pub id: String,
    /// Its subject label.
    pub subject: String,
    /// Its site label.
    pub site: String,
    /// The template-space preprocessed image.
    pub template: PathBuf,
    /// Its brain mask.
    pub mask: PathBuf,
    /// Its preprocessing fingerprint.
    pub fingerprint: String,
}

/// What the group level's steps share.
#[derive(Clone, Copy)]
pub struct GroupContext<'a> {
    /// Settings, output dataset, stop flag.
    pub run: RunContext<'a>,
    /// Every preprocessed image, with its site.
    pub images: &'a [FitImage],
}

/// A job's preprocessed outputs, read once when a method needs computing.
#[derive(Debug, Clone)]
pub struct PreprocessedImage {
    /// Template-space T1w.
    pub template: Volume,
    /// Its brain mask.
    pub template_mask: Vec<bool>,
    /// Native-space T1w.
    pub native: Volume,
    /// Its brain mask.
    pub native_mask: Vec<bool>,
    /// Template → T1w world transform.
    pub template_to_t1w: WorldAffine,
}

/// One method's result for one image.
#[derive(Debug, Clone)]
pub struct Harmonised {
    /// Template space.
    pub template: Volume,
    /// Native space.
    pub native: Volume,
    /// What was fitted to this image (for the sidecar).
    pub fit: Value,
}

/// A method prepared for a run: applies itself to each job's image.
pub trait Harmoniser: Send + Sync + std::fmt::Debug {
    /// Which method this is.
    fn method(&self) -> Method;

    /// The parameters that decide its outputs, as sidecars record them.
    fn parameters(&self) -> Value;

    /// The parameters that decide its outputs' content, hashed into their fingerprint: without
    /// where files sit (moving OUTPUT_DIR or naming the same model by another path keeps outputs
    /// current; the files' digests are in).
    fn content_parameters(&self) -> Value {
        self.parameters()
    }

    /// What was done, for sidecar descriptions ("harmonised with …").
    fn description(&self) -> String;

    /// Sources beyond the preprocessed image and mask (BIDS URIs).
    fn extra_sources(&self) -> Vec<String> {
        Vec::new()
    }

    /// Maps one preprocessed image.
    fn apply(&self, image: &PreprocessedImage, stop: &AtomicBool)
    -> Result<Harmonised, ApplyError>;

    /// The target's brain-intensity quantiles, when the method harmonises towards one.
    fn target_intensities(&self) -> Option<&[f32]> {
        None
    }

    /// Intensities (a target's quantiles) under this method, for the report's histograms.
    fn map_intensities(&self, values: &[f32]) -> Option<Vec<f32>>;
}

/// Fits a method's intensity map to a reference's brain intensities.
pub type ReferenceMap = Box<dyn Fn(&[f32]) -> Option<IntensityMap> + Send + Sync>;

/// How a reference image is brought into a method's output units.
pub enum ReferenceUnits {
    /// The outputs are in the preprocessed units: the reference is used as it is.
    Preprocessed,
    /// A map fitted on the reference's brain intensities, as on any image.
    Map(ReferenceMap),
    /// No map can be fitted (why): the method is scored without a reference.
    Unavailable(String),
}

/// Why one image could not be harmonised.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The method failed on this image (why, and the fix).
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

/// A run-wide step of a method (fit, prepare) that failed; each kind maps to its exit status in
/// [`MethodError::exit_status`], and every message names the file or option and the fix.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// Something the method needs does not exist (66): no model, no landmarks, no cached target.
    #[error("{0}")]
    Missing(String),
    /// The data cannot be used (65): too few sites, a broken model or landmarks file, a failed
    /// training.
    #[error("{0}")]
    BadData(String),
    /// The request does not fit (64): several models and none chosen, a backend that cannot run,
    /// a training larger than `--mem`.
    #[error("{0}")]
    Usage(String),
    /// The system refused (74): threads that cannot start, a file that cannot be written.
    #[error("{0}")]
    Io(String),
    /// Writing under OUTPUT_DIR failed.
    #[error(transparent)]
    Output(#[from] DerivativesError),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

impl MethodError {
    /// The exit status of a run stopped by this error.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            MethodError::Missing(_) => ExitStatus::NoInput,
            MethodError::BadData(_) => ExitStatus::DataError,
            MethodError::Usage(_) => ExitStatus::Usage,
            MethodError::Io(_) => ExitStatus::IoError,
            MethodError::Output(
                DerivativesError::Write { .. } | DerivativesError::Elsewhere { .. },
            ) => ExitStatus::IoError,
            MethodError::Output(_) => ExitStatus::CannotCreate,
            MethodError::Interrupted => ExitStatus::Interrupted,
        }
    }
}

/// Values inside `mask`, zero outside (outputs are skull-stripped).
fn masked(values: &[f32], mask: &[bool]) -> Vec<f32> {
    values
        .iter()
        .zip(mask)
        .map(|(&v, &m)| if m { v } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for &m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(
                Method::ALL.iter().filter(|x| x.name() == m.name()).count(),
                1
            );
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
        }
        assert_eq!(Method::HCLD.desc(), "harmonized");
        assert_eq!("none".parse::<Method>().unwrap().desc(), "preproc");
        assert!("combat".parse::<Method>().unwrap_err().contains("all"));
    }

    #[test]
    fn order_is_the_report_order() {
        let m = |n: &str| n.parse::<Method>().unwrap();
        let mut v = vec![m("hcld"), m("none"), m("nyul")];
        v.sort();
        assert_eq!(v, [m("none"), m("nyul"), m("hcld")]);
    }
}
