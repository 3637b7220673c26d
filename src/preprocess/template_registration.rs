//! Registration of one subject's T1w to the embedded MNI152NLin2009aSym template, with the fixed
//! image chosen by what the input is (`../shared/design/preprocessing.md`: a head must be fitted to
//! a head, a brain to a brain):
//!
//! - **full head**: moments initialisation and rigid → affine (8, 4 mm) against the full-head
//!   template, then an affine refinement (4, 2 mm) against the ICBM brain restricted to the brain
//!   mask dilated by 8 mm, which pins the fit to the brain rather than the scalp;
//! - **skull-stripped**: moments initialisation and rigid → affine (8, 4, 2 mm) against the ICBM
//!   brain.
//!
//! The fixed images are prepared once per process and shared by every subject. The fit is checked:
//! implausible scales are an error, a low brain correlation with the template a QC warning.

use std::sync::OnceLock;

use nalgebra::Matrix3;
use serde::Serialize;

use super::itk::WorldAffine;
use super::morphology::dilate;
use super::register::{
    FixedImage, LevelReport, MovingPyramid, RegistrationConfig, RegistrationError, centre_of_mass,
    register, translation,
};
use super::resample::{Interpolation, resample_mapped};
use super::template::{TemplateImage, template_grid};
use crate::volume::Volume;

/// What the input image contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum InputKind {
    /// Head with skull and scalp (raw T1w).
    FullHead,
    /// Brain only (skull-stripped).
    SkullStripped,
}

/// Scale factors (T1w mm per template mm) outside this range mean the fit failed. Adult brains fit
/// at 0.75–1.0 (the real scans here: 0.76–0.98, MNI brains being larger than most); a head
/// squeezed into the brain template gives 1.1–1.8 (ANTs' failures in preprocessing.md). The lower
/// bound leaves room for children.
pub const PLAUSIBLE_SCALES: (f64, f64) = (0.55, 1.3);

/// Below this brain correlation with the template (after bias correction) a fit gets a QC warning:
/// the ten real scans in `../shared/data/t1w` reach 0.40–0.64 before bias correction, and ANTs'
/// failed head-to-brain fits 0.05–0.17 (docs/benchmarks.md).
pub const LOW_CORRELATION: f64 = 0.3;

/// Below this brain correlation the image is not a brain T1w at all (noise, another body part, a
/// T2w named T1w): an error, not a warning. Uniform noise gives 0.00, a featureless ball 0.24.
pub const FAILED_CORRELATION: f64 = 0.1;

/// A fitted template registration and its checks.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateFit {
    /// Template → T1w point map (what `from-T1w_to-MNI152NLin2009aSym_mode-image_xfm` stores).
    #[serde(skip)]
    pub template_to_t1w: WorldAffine,
    /// The input kind that chose the fixed images.
    pub input_kind: InputKind,
    /// Per-level optimiser reports.
    pub levels: Vec<LevelReport>,
    /// Scale factors of the fit (singular values of its matrix, T1w mm per template mm).
    pub scales: [f64; 3],
    /// Whether the last level converged.
    pub converged: bool,
    /// QC warnings (empty when the fit looks right).
    pub warnings: Vec<String>,
}

/// Why no usable fit was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateFitError {
    /// The input holds no anatomy.
    #[error(
        "the image is blank or constant: there is no anatomy to register (check that the file holds the T1w you meant)"
    )]
    NoAnatomy,
    /// The optimiser could not run.
    #[error(transparent)]
    Registration(RegistrationError),
    /// After registration the image does not resemble a brain T1w.
    #[error(
        "after registration the image does not resemble a brain T1w (correlation with the template brain r = {0:.2}, below {FAILED_CORRELATION}); check that it is a T1-weighted brain image with a correct header"
    )]
    NotABrain(f64),
    /// The fit is implausible.
    #[error(
        "registration to the template failed: scale factors {0:.2?} are implausible for a brain (is this a brain T1w, and is its header's voxel size right?)"
    )]
    Implausible([f64; 3]),
    /// The embedded template could not be decoded (a build problem).
    #[error("embedded template: {0}")]
    Template(String),
}

struct FixedImages {
    head: FixedImage,
    brain_in_wide_mask: FixedImage,
    brain: FixedImage,
    /// Centres of mass of the head and brain templates (moments initialisation).
    head_centre: [f64; 3],
    brain_centre: [f64; 3],
    /// ICBM T1 and brain mask on the 2 mm grid, for the correlation check.
    check_t1: Volume,
    check_mask: Vec<bool>,
}

fn head_config() -> RegistrationConfig {
    RegistrationConfig {
        rigid_levels_mm: vec![8.0, 4.0],
        affine_levels_mm: vec![8.0, 4.0],
        ..RegistrationConfig::default()
    }
}

fn refine_config() -> RegistrationConfig {
    RegistrationConfig {
        rigid_levels_mm: vec![],
        affine_levels_mm: vec![4.0, 2.0],
        max_samples: 100_000,
        ..RegistrationConfig::default()
    }
}

fn brain_config() -> RegistrationConfig {
    RegistrationConfig::default()
}

fn fixed_images() -> Result<&'static FixedImages, TemplateFitError> {
    static FIXED: OnceLock<Result<FixedImages, TemplateFitError>> = OnceLock::new();
    FIXED
        .get_or_init(|| {
            let err = |e: &dyn std::fmt::Display| TemplateFitError::Template(e.to_string());
            let t1 = TemplateImage::T1w.load().map_err(|e| err(&e))?;
            let mask = TemplateImage::BrainMask.load().map_err(|e| err(&e))?;
            let head = TemplateImage::HeadT1w.load().map_err(|e| err(&e))?;
            let inside: Vec<bool> = mask.data().iter().map(|&v| v > 0.5).collect();
            let wide = dilate(&inside, mask.dims(), mask.voxel_sizes(), 8.0);
            let wide = mask
                .with_data(wide.iter().map(|&b| b as u8 as f32).collect())
                .map_err(|e| err(&e))?;
            let grid = template_grid(&t1, 2.0);
            let check_t1 = resample_mapped(
                &t1,
                &grid,
                &nalgebra::Matrix4::identity(),
                Interpolation::Linear,
                0.0,
            )
            .map_err(|e| err(&e))?;
            let check_mask = resample_mapped(
                &mask,
                &grid,
                &nalgebra::Matrix4::identity(),
                Interpolation::Linear,
                0.0,
            )
            .map_err(|e| err(&e))?
            .data()
            .iter()
            .map(|&v| v > 0.5)
            .collect();
            let centre = |v: &Volume| {
                centre_of_mass(v).ok_or_else(|| TemplateFitError::Template("blank template".into()))
            };
            Ok(FixedImages {
                head_centre: centre(&head)?,
                brain_centre: centre(&t1)?,
                head: FixedImage::new(&head, None, &[8.0, 4.0], &head_config())?,
                brain_in_wide_mask: FixedImage::new(
                    &t1,
                    Some(&wide),
                    &[4.0, 2.0],
                    &refine_config(),
                )?,
                brain: FixedImage::new(&t1, None, &[8.0, 4.0, 2.0], &brain_config())?,
                check_t1,
                check_mask,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl From<RegistrationError> for TemplateFitError {
    fn from(e: RegistrationError) -> Self {
        match e {
            RegistrationError::Blank("moving") => TemplateFitError::NoAnatomy,
            other => TemplateFitError::Registration(other),
        }
    }
}

/// Registers `t1w` to the template. `initial` replaces moments initialisation when given (e.g.
/// a transform from `--derivatives` to refine).
pub fn register_to_template(
    t1w: &Volume,
    kind: InputKind,
    initial: Option<&WorldAffine>,
) -> Result<TemplateFit, TemplateFitError> {
    let fixed = fixed_images()?;
    let (stages, template_centre) = match kind {
        InputKind::FullHead => (
            vec![
                (&fixed.head, head_config()),
                (&fixed.brain_in_wide_mask, refine_config()),
            ],
            fixed.head_centre,
        ),
        InputKind::SkullStripped => (vec![(&fixed.brain, brain_config())], fixed.brain_centre),
    };
    let mut template_to_t1w = match initial {
        Some(t) => *t,
        None => translation(
            template_centre,
            centre_of_mass(t1w).ok_or(TemplateFitError::NoAnatomy)?,
        ),
    };
    let pyramid = MovingPyramid::new(t1w, &[8.0, 4.0, 2.0]);
    let mut levels = Vec::new();
    for (fixed_image, config) in stages {
        let fit = register(fixed_image, &pyramid, &template_to_t1w, &config)?;
        levels.extend(fit.levels);
        template_to_t1w = fit.fixed_to_moving;
    }
    let m: Matrix3<f64> = template_to_t1w.0.fixed_view::<3, 3>(0, 0).into_owned();
    let sv = m.svd(false, false).singular_values;
    let scales = [sv[0], sv[1], sv[2]];
    if scales
        .iter()
        .any(|s| !s.is_finite() || *s < PLAUSIBLE_SCALES.0 || *s > PLAUSIBLE_SCALES.1)
    {
        return Err(TemplateFitError::Implausible(scales));
    }
    let converged = levels.last().is_some_and(|l| l.converged);
    let warnings = convergence_warnings(&levels);
    Ok(TemplateFit {
        template_to_t1w,
        input_kind: kind,
        levels,
        scales,
        converged,
        warnings,
    })
}

/// A QC warning when the finest level stopped at its iteration cap instead of converging.
fn convergence_warnings(levels: &[LevelReport]) -> Vec<String> {
    match levels.last() {
        Some(l) if !l.converged => vec![format!(
            "registration did not converge at the finest level ({} mm, stopped at the cap of {} iterations); check the registration figure",
            l.resolution_mm, l.iterations
        )],
        _ => vec![],
    }
}

/// Pearson correlation, inside the template brain mask on the 2 mm grid, of the template T1w with
/// `t1w` seen through `template_to_t1w`: the registration QC number. Low values flag a failed fit
/// (or a badly biased image): below [`FAILED_CORRELATION`] it is an error, below
/// [`LOW_CORRELATION`] a warning is added to `warnings`.
pub fn check_brain_correlation(
    t1w: &Volume,
    template_to_t1w: &WorldAffine,
    warnings: &mut Vec<String>,
) -> Result<f64, TemplateFitError> {
    let fixed = fixed_images()?;
    let grid = super::resample::Grid::of(&fixed.check_t1);
    let moved = resample_mapped(t1w, &grid, &template_to_t1w.0, Interpolation::Linear, 0.0)
        .map_err(|e| TemplateFitError::Template(e.to_string()))?;
    // A constant (or empty) image has no correlation: NaN, scored as 0 (not a brain).
    let r =
        crate::metrics::masked_correlation(moved.data(), fixed.check_t1.data(), &fixed.check_mask);
    let r = if r.is_finite() { r } else { 0.0 };
    if r < FAILED_CORRELATION {
        return Err(TemplateFitError::NotABrain(r));
    }
    if r < LOW_CORRELATION {
        warnings.push(format!(
            "the registered brain correlates poorly with the template (r = {r:.2} < {LOW_CORRELATION}); check the registration figure"
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::register::{MovingPyramid, Stage};

    #[test]
    fn an_iteration_cap_is_reported_as_not_converged() {
        let t1 = TemplateImage::T1w.load().unwrap();
        let config = RegistrationConfig {
            rigid_levels_mm: vec![],
            affine_levels_mm: vec![8.0],
            max_iterations: 2,
            ..RegistrationConfig::default()
        };
        let fixed = FixedImage::new(&t1, None, &[8.0], &config).unwrap();
        let mut shifted = nalgebra::Matrix4::identity();
        shifted[(0, 3)] = 15.0;
        let moving = resample_mapped(
            &t1,
            &super::super::resample::Grid::of(&t1),
            &shifted,
            Interpolation::Linear,
            0.0,
        )
        .unwrap();
        let pyramid = MovingPyramid::new(&moving, &[8.0]);
        let reg = register(
            &fixed,
            &pyramid,
            &WorldAffine(nalgebra::Matrix4::identity()),
            &config,
        )
        .unwrap();
        assert_eq!(reg.levels[0].stage, Stage::Affine);
        assert!(!reg.converged());
        let warnings = convergence_warnings(&reg.levels);
        assert!(warnings[0].contains("did not converge"), "{warnings:?}");
        // With room to converge, no warning.
        let reg = register(
            &fixed,
            &pyramid,
            &WorldAffine(nalgebra::Matrix4::identity()),
            &RegistrationConfig {
                max_iterations: 300,
                ..config
            },
        )
        .unwrap();
        assert!(reg.converged() && convergence_warnings(&reg.levels).is_empty());
    }
}
