//! Every file name a job writes, in one place (the way sMRIPrep keeps its outputs): the
//! preprocessing outputs ([`OutputNames`]) and each method's outputs ([`MethodNames`]).

use std::path::PathBuf;

use crate::bids::Entity;
use crate::derivatives::{DerivativeName, DerivativesDataset};
use crate::methods::Method;
use crate::preprocess::template::SPACE;

use super::{Job, JobError};

/// The name of the native-space preprocessed T1w for a source. Its sidecar is written last of
/// all a job's outputs and carries the fingerprint, so it marks the job complete.
pub fn preproc_name(job: &Job) -> DerivativeName {
    DerivativeName::from_source(&job.source, "T1w", ".nii.gz").with(Entity::Description, "preproc")
}

/// Every output of one job's preprocessing.
pub(super) struct OutputNames {
    pub(super) native_t1w: DerivativeName,
    pub(super) native_mask: DerivativeName,
    pub(super) template_t1w: DerivativeName,
    pub(super) template_mask: DerivativeName,
    pub(super) t1w_to_template: DerivativeName,
    pub(super) template_to_t1w: DerivativeName,
    pub(super) registration_figure: String,
    pub(super) mask_figure: String,
}

impl OutputNames {
    pub(super) fn new(job: &Job, resolution: u8) -> OutputNames {
        let res = resolution.to_string();
        let mask = DerivativeName::from_source(&job.source, "mask", ".nii.gz")
            .with(Entity::Description, "brain");
        let xfm = |from: &str, to: &str| {
            DerivativeName::from_source(&job.source, "xfm", ".txt")
                .with(Entity::From, from)
                .with(Entity::To, to)
                .with(Entity::Mode, "image")
        };
        let key = preproc_name(job).source_key();
        OutputNames {
            native_t1w: preproc_name(job),
            native_mask: mask.clone(),
            template_t1w: preproc_name(job)
                .with(Entity::Space, SPACE)
                .with(Entity::Resolution, res.clone()),
            template_mask: mask
                .with(Entity::Space, SPACE)
                .with(Entity::Resolution, res),
            t1w_to_template: xfm("T1w", SPACE),
            template_to_t1w: xfm(SPACE, "T1w"),
            registration_figure: format!("{key}_space-{SPACE}_desc-registration_T1w.png"),
            mask_figure: format!("{key}_desc-brain_mask.png"),
        }
    }

    /// The files, for reporting: the native T1w (the completeness marker) first.
    pub(super) fn paths(
        &self,
        out: &DerivativesDataset,
        subject: &str,
    ) -> Result<Vec<PathBuf>, JobError> {
        let mut paths = Vec::new();
        for n in [
            &self.native_t1w,
            &self.native_mask,
            &self.template_t1w,
            &self.template_mask,
        ] {
            paths.push(out.path(n)?);
            paths.push(out.path(&n.with_extension(".json"))?);
        }
        paths.push(out.path(&self.t1w_to_template)?);
        paths.push(out.path(&self.template_to_t1w)?);
        paths.push(out.figure_path(subject, &self.registration_figure)?);
        paths.push(out.figure_path(subject, &self.mask_figure)?);
        Ok(paths)
    }
}

/// The outputs of one method for one job.
pub(super) struct MethodNames {
    pub(super) template: DerivativeName,
    pub(super) native: DerivativeName,
    pub(super) figure: String,
    pub(super) histogram: String,
}

impl MethodNames {
    pub(super) fn new(method: Method, names: &OutputNames) -> MethodNames {
        let desc = method.desc();
        let key = names.native_t1w.source_key();
        MethodNames {
            template: names.template_t1w.clone().with(Entity::Description, desc),
            native: names.native_t1w.clone().with(Entity::Description, desc),
            figure: format!("{key}_space-{SPACE}_desc-{desc}_T1w.png"),
            histogram: format!("{key}_desc-{desc}histogram_T1w.png"),
        }
    }
}

/// The figure and histogram file names of a method's outputs for one job (for reports).
pub(super) fn figure_names(job: &Job, method: Method, resolution: u8) -> (String, String) {
    let mn = MethodNames::new(method, &OutputNames::new(job, resolution));
    (mn.figure, mn.histogram)
}

/// Paths of a method's template-space output and of the preprocessed template image and mask
/// (the identity's output is the preprocessed image itself).
pub(super) fn template_paths(
    job: &Job,
    method: Method,
    resolution: u8,
    out: &DerivativesDataset,
) -> Result<(PathBuf, PathBuf, PathBuf), JobError> {
    let names = OutputNames::new(job, resolution);
    let mn = MethodNames::new(method, &names);
    Ok((
        out.path(&mn.template)?,
        out.path(&names.template_t1w)?,
        out.path(&names.template_mask)?,
    ))
}
