//! The whole preprocessing of one T1w, as the participant level runs it: decide whether the image
//! is a head or a brain, register it to the template (or reuse a registration), correct the bias
//! field, build the brain mask, scale intensities inside it, and resample onto the model grid.
//! Also the way back ([`to_native`]): any template-space image onto the native T1w grid.
//!
//! Pure: volumes in, volumes and a report out. Files, names and `--derivatives` lookups belong to
//! the pipeline.

use serde::Serialize;

use super::bias::{BiasConfig, BiasError, BiasReport, correct_bias};
use super::intensity::{IntensityScaling, ScalingError, ScalingReport, scale_intensity_in};
use super::itk::WorldAffine;
use super::mask::{
    BrainMask, MaskRefinement, MaskSource, looks_skull_stripped, mask_from_skull_stripped,
    refine_template_mask, template_prior,
};
use super::morphology::{dice, dilate};
use super::resample::{Grid, Interpolation, ResampleError, resample_mapped};
use super::template::{TemplateImage, model_grid};
use super::template_registration::{
    InputKind, TemplateFit, TemplateFitError, check_brain_correlation, register_to_template,
};
use crate::volume::Volume;

/// Below this Dice between the subject's brain mask (in template space) and the template's, the
/// output gets a QC warning (the real scans reach 0.93–0.97).
pub const LOW_MASK_DICE: f64 = 0.9;

/// Options of [`preprocess_t1w`].
#[derive(Debug, Clone, Serialize)]
pub struct T1wOptions {
    /// Run bias-field correction.
    pub bias_correction: bool,
    /// Bias-field settings.
    pub bias: BiasConfig,
    /// The input is known to be skull-stripped (`--skull-stripped` or sidecar `SkullStripped`).
    pub skull_stripped: Option<String>,
    /// Output voxel size on the model grid (mm): 1 or 2.
    pub resolution_mm: f64,
    /// Intensity scaling inside the brain.
    pub intensity: IntensityScaling,
    /// Refinement of a template-propagated mask.
    pub mask_refinement: MaskRefinement,
}

impl Default for T1wOptions {
    fn default() -> Self {
        T1wOptions {
            bias_correction: true,
            bias: BiasConfig::default(),
            skull_stripped: None,
            resolution_mm: 2.0,
            intensity: IntensityScaling::default(),
            mask_refinement: MaskRefinement::default(),
        }
    }
}

/// A registration that already exists.
#[derive(Debug, Clone)]
pub enum KnownRegistration {
    /// The input is already in MNI152 space (`space-MNI152…`): identity.
    InTemplateSpace {
        /// Its space label.
        space: String,
    },
    /// A template → T1w affine from `--derivatives`.
    Transform {
        /// The map.
        template_to_t1w: WorldAffine,
        /// The file it came from.
        file: String,
    },
}

/// How the registration was obtained (sidecar).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "Source")]
pub enum RegistrationProvenance {
    /// Computed by hcld.
    Computed {
        /// The fit and its checks.
        #[serde(rename = "Fit")]
        fit: TemplateFit,
    },
    /// Reused from `--derivatives`.
    Reused {
        /// The transform file.
        #[serde(rename = "File")]
        file: String,
    },
    /// None needed: the input is in template space already.
    Identity {
        /// The input's space label.
        #[serde(rename = "Space")]
        space: String,
    },
}

/// What preprocessing did (the `hcld` block of the output sidecars).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PreprocessReport {
    /// Head or brain, and why.
    pub input_kind: InputKind,
    /// Why the input counts as skull-stripped, if it does.
    pub skull_stripped_because: Option<String>,
    /// Registration provenance and QC.
    pub registration: RegistrationProvenance,
    /// Correlation of the registered, bias-corrected brain with the template.
    pub brain_correlation: f64,
    /// Bias correction settings and outcome (absent with `--no-bias-correction`).
    pub bias_correction: Option<(BiasConfig, BiasReport)>,
    /// Brain mask provenance.
    pub brain_mask: MaskSource,
    /// Brain volume (mL) in native space.
    pub brain_volume_ml: f64,
    /// Dice of the subject's mask (in template space) with the template brain mask.
    pub brain_mask_dice_with_template: f64,
    /// Intensity scaling inside the brain.
    pub intensity_scaling: ScalingReport,
    /// Model-grid voxel size (mm).
    pub resolution_mm: f64,
    /// QC warnings; empty when everything looked right.
    pub warnings: Vec<String>,
}

/// The outputs of [`preprocess_t1w`].
#[derive(Debug, Clone)]
pub struct PreprocessedT1w {
    /// Bias-corrected, intensity-scaled T1w on the native grid (full field of view).
    pub native: Volume,
    /// The brain mask on the native grid.
    pub native_mask: BrainMask,
    /// Skull-stripped, scaled T1w on the model grid.
    pub template: Volume,
    /// The brain mask on the model grid (0/1).
    pub template_mask: Volume,
    /// Template → T1w point map.
    pub template_to_t1w: WorldAffine,
    /// What was done.
    pub report: PreprocessReport,
}

/// Why preprocessing failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    /// Registration failed.
    #[error(transparent)]
    Registration(#[from] TemplateFitError),
    /// Bias correction failed.
    #[error(transparent)]
    Bias(#[from] BiasError),
    /// No usable intensities.
    #[error(transparent)]
    Scaling(#[from] ScalingError),
    /// A given mask does not cover the brain of this image.
    #[error("{0}")]
    Mask(String),
    /// Internal resampling failure.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// The header describes no head scan (voxel size or field of view), or the values are not
    /// numbers: refused before any allocation that scales with them.
    #[error("{0}")]
    Implausible(String),
}

/// Voxel sizes hcld accepts (mm): from ultra-high-field research scans to thick clinical slices.
pub const VOXEL_MM: (f64, f64) = (0.1, 10.0);
/// Field of view per axis hcld accepts (mm): a head (with neck) fits in 500 mm; less than 40 mm
/// holds no brain to register.
pub const FIELD_OF_VIEW_MM: (f64, f64) = (40.0, 500.0);

/// Refuses an image whose geometry is not that of a head scan, or whose values overflow, with
/// what is wrong. Registration allocates grids that scale with the field of view
/// over the voxel size, so a header with 1000 mm voxels would otherwise ask for petabytes.
pub fn check_plausible(t1w: &Volume) -> Result<(), PreprocessError> {
    let vs = t1w.voxel_sizes();
    let dims = t1w.dims();
    let fov: Vec<f64> = (0..3).map(|i| vs[i] * dims[i] as f64).collect();
    let mm = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" × ")
    };
    let fix = "check the header's voxel size (pixdim, qform/sform) or convert the image again (e.g. dcm2niix)";
    if vs
        .iter()
        .any(|v| !v.is_finite() || *v < VOXEL_MM.0 || *v > VOXEL_MM.1)
    {
        return Err(PreprocessError::Implausible(format!(
            "voxel size {} mm is not that of a head scan (hcld accepts {}–{} mm); {fix}",
            mm(&vs),
            VOXEL_MM.0,
            VOXEL_MM.1
        )));
    }
    if fov
        .iter()
        .any(|f| *f < FIELD_OF_VIEW_MM.0 || *f > FIELD_OF_VIEW_MM.1)
    {
        return Err(PreprocessError::Implausible(format!(
            "field of view {} mm ({} voxels) cannot be a head scan (hcld accepts {}–{} mm per axis); {fix}",
            mm(&fov),
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" × "),
            FIELD_OF_VIEW_MM.0,
            FIELD_OF_VIEW_MM.1
        )));
    }
    // NaN backgrounds are common, and a few infinite voxels are read as 0 with a warning; a tenth
    // of the image infinite is values or a scl_slope that overflow 32-bit floats.
    let data = t1w.data();
    let infinite = data.iter().filter(|v| v.is_infinite()).count();
    if infinite * 10 > data.len() {
        return Err(PreprocessError::Implausible(format!(
            "{:.1} % of the voxel values are infinite once scaled (they overflow 32-bit floats); check scl_slope/scl_inter and the data type in the header, or convert the image again",
            100.0 * infinite as f64 / data.len().max(1) as f64
        )));
    }
    Ok(())
}

/// Preprocesses a canonical (RAS+) T1w. `given_mask` is a brain mask on the T1w grid from
/// `--derivatives`; `known` a registration to reuse.
// One piece: the steps hand each other intermediate volumes and the provenance record is
// filled as they run; split, each helper would take and return most of this state.
pub fn preprocess_t1w(
    t1w: &Volume,
    given_mask: Option<BrainMask>,
    known: Option<KnownRegistration>,
    options: &T1wOptions,
) -> Result<PreprocessedT1w, PreprocessError> {
    check_plausible(t1w)?;
    let mut warnings = Vec::new();
    // Non-finite voxels would poison every sum below.
    let clean = t1w
        .with_data(
            t1w.data()
                .iter()
                .map(|v| if v.is_finite() { *v } else { 0.0 })
                .collect(),
        )
        .expect("same grid");
    // Head or brain?
    let (stripped_look, litres) = looks_skull_stripped(&clean);
    let skull_stripped_because = if let Some(m) = &given_mask {
        Some(format!("brain mask given ({})", source_name(&m.source)))
    } else if let Some(reason) = &options.skull_stripped {
        Some(reason.clone())
    } else if stripped_look {
        Some(format!(
            "looks skull-stripped: zero background around {litres:.2} L of non-zero voxels"
        ))
    } else {
        None
    };
    let kind = if skull_stripped_because.is_some() {
        InputKind::SkullStripped
    } else {
        InputKind::FullHead
    };
    // The image registration sees: masked when a mask is given.
    let for_registration = match &given_mask {
        Some(m) => clean
            .with_data(
                clean
                    .data()
                    .iter()
                    .zip(&m.voxels)
                    .map(|(v, &b)| if b { *v } else { 0.0 })
                    .collect(),
            )
            .expect("same grid"),
        None => clean.clone(),
    };
    let (template_to_t1w, mut provenance) = match known {
        Some(KnownRegistration::InTemplateSpace { space }) => (
            WorldAffine(nalgebra::Matrix4::identity()),
            RegistrationProvenance::Identity { space },
        ),
        Some(KnownRegistration::Transform {
            template_to_t1w,
            file,
        }) => (template_to_t1w, RegistrationProvenance::Reused { file }),
        None => {
            let fit = register_to_template(&for_registration, kind, None)?;
            (
                fit.template_to_t1w,
                RegistrationProvenance::Computed { fit },
            )
        }
    };
    let grid = Grid::of(&clean);
    // Brain mask (first version) and bias correction.
    let prior = template_prior(&grid, &template_to_t1w);
    let provisional: Vec<bool> = match (&given_mask, kind) {
        (Some(m), _) => m.voxels.clone(),
        (None, InputKind::SkullStripped) => mask_from_skull_stripped(&clean, "").voxels,
        (None, InputKind::FullHead) => prior.data().iter().map(|&p| p > 0.5).collect(),
    };
    if provisional.iter().filter(|&&b| b).count() < 100 {
        return Err(PreprocessError::Mask(
            "the brain mask holds (almost) no voxels of this image: the mask or the registration does not match the image".into(),
        ));
    }
    let (corrected, bias_report) = if options.bias_correction {
        // N4 sees the brain plus a margin, as ANTs' brain-extraction workflow runs it.
        let n4_mask = dilate(&provisional, grid.dims, clean.voxel_sizes(), 4.0);
        let (c, _field, report) = correct_bias(&clean, &n4_mask, &options.bias)?;
        (c, Some((options.bias.clone(), report)))
    } else {
        (clean.clone(), None)
    };
    let native_mask = match (given_mask, kind) {
        (Some(m), _) => m,
        (None, InputKind::SkullStripped) => mask_from_skull_stripped(
            &clean,
            skull_stripped_because.as_deref().unwrap_or_default(),
        ),
        (None, InputKind::FullHead) => {
            refine_template_mask(&corrected, &prior, &options.mask_refinement)
        }
    };
    // Registration QC on the corrected image.
    let brain_correlation = match &mut provenance {
        // A computed fit keeps its own QC in its report, and the output's warnings repeat it.
        RegistrationProvenance::Computed { fit } => {
            let r = check_brain_correlation(&corrected, &fit.template_to_t1w, &mut fit.warnings)?;
            warnings.extend(fit.warnings.iter().cloned());
            r
        }
        _ => check_brain_correlation(&corrected, &template_to_t1w, &mut warnings)?,
    };
    // Intensities: brain percentiles to [0, 1].
    let (scaled, scaling) =
        scale_intensity_in(&corrected, Some(&native_mask.voxels), &options.intensity)?;
    drop(corrected);
    // Model grid: image (cubic, no negative overshoot) and mask.
    let target = model_grid(options.resolution_mm);
    let mask_volume = native_mask.to_volume(&clean);
    let template_mask = resample_mapped(
        &mask_volume,
        &target,
        &template_to_t1w.0,
        Interpolation::Linear,
        0.0,
    )?;
    let template_mask = template_mask
        .with_data(
            template_mask
                .data()
                .iter()
                .map(|&m| (m > 0.5) as u8 as f32)
                .collect(),
        )
        .expect("same grid");
    let moved = resample_mapped(
        &scaled,
        &target,
        &template_to_t1w.0,
        Interpolation::CubicBSpline,
        0.0,
    )?;
    let clip = options.intensity.clip_max as f32;
    let template = moved
        .with_data(
            moved
                .data()
                .iter()
                .zip(template_mask.data())
                .map(|(v, m)| if *m > 0.5 { v.clamp(0.0, clip) } else { 0.0 })
                .collect(),
        )
        .expect("same grid");
    let dice_with_template = template_mask_dice(&template_mask)?;
    if dice_with_template < LOW_MASK_DICE {
        warnings.push(format!(
            "the brain mask overlaps the template's poorly (Dice {dice_with_template:.2} < {LOW_MASK_DICE}); check the mask and registration figures"
        ));
    }
    let brain_volume_ml = native_mask.volume_ml(&clean);
    if !(600.0..=2300.0).contains(&brain_volume_ml) {
        warnings.push(format!(
            "brain volume {brain_volume_ml:.0} mL is outside the adult range (600–2300 mL); check the mask figure"
        ));
    }
    let report = PreprocessReport {
        input_kind: kind,
        skull_stripped_because,
        registration: provenance,
        brain_correlation,
        bias_correction: bias_report,
        brain_mask: native_mask.source.clone(),
        brain_volume_ml,
        brain_mask_dice_with_template: dice_with_template,
        intensity_scaling: scaling,
        resolution_mm: options.resolution_mm,
        warnings,
    };
    Ok(PreprocessedT1w {
        native: scaled,
        native_mask,
        template,
        template_mask,
        template_to_t1w,
        report,
    })
}

fn source_name(source: &MaskSource) -> String {
    match source {
        MaskSource::Derivatives { file } => file.clone(),
        MaskSource::Input { reason } => reason.clone(),
        MaskSource::Template => "template".into(),
    }
}

/// Dice of a model-grid mask with the template brain mask on the same grid.
fn template_mask_dice(mask: &Volume) -> Result<f64, PreprocessError> {
    let template = TemplateImage::BrainMask
        .load()
        .map_err(|e| PreprocessError::Registration(TemplateFitError::Template(e.to_string())))?;
    let on_grid = resample_mapped(
        &template,
        &Grid::of(mask),
        &nalgebra::Matrix4::identity(),
        Interpolation::Linear,
        0.0,
    )?;
    let a: Vec<bool> = mask.data().iter().map(|&v| v > 0.5).collect();
    let b: Vec<bool> = on_grid.data().iter().map(|&v| v > 0.5).collect();
    Ok(dice(&a, &b))
}

/// Back-projection: a template-space image onto the native T1w `grid` through the registration
/// (cubic B-spline for images, nearest for masks and labels).
pub fn to_native(
    template_image: &Volume,
    template_to_t1w: &WorldAffine,
    grid: &Grid,
    interpolation: Interpolation,
) -> Result<Volume, ResampleError> {
    let inverse = template_to_t1w
        .inverse()
        .ok_or(ResampleError::SingularAffine)?;
    resample_mapped(template_image, grid, &inverse.0, interpolation, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_projection_inverts_the_forward_resampling() {
        // A smooth native image, a known registration, forward to the template grid and back.
        let t1 = TemplateImage::T1w.load().unwrap();
        let native = super::super::filter::downsample(&t1, 2.0);
        let r = nalgebra::Rotation3::from_euler_angles(0.1, -0.05, 0.2);
        let mut m = nalgebra::Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0)
            .copy_from(&(r.matrix() * 0.95));
        m[(0, 3)] = 5.0;
        let map = WorldAffine(m);
        let forward = resample_mapped(
            &native,
            &model_grid(2.0),
            &map.0,
            Interpolation::CubicBSpline,
            0.0,
        )
        .unwrap();
        let back = to_native(
            &forward,
            &map,
            &Grid::of(&native),
            Interpolation::CubicBSpline,
        )
        .unwrap();
        // Compare inside the brain (the native image is the template, so its mask is known).
        let mask = TemplateImage::BrainMask.load().unwrap();
        let mask = super::super::filter::downsample(&mask, 2.0);
        let (mut err, mut n) = (0f64, 0f64);
        for i in 0..native.data().len() {
            if mask.data()[i] > 0.99 {
                err += (back.data()[i] - native.data()[i]).abs() as f64;
                n += 1.0;
            }
        }
        let mean_abs = err / n;
        // Two cubic resamplings of a 0..255 image: a few intensity units at most.
        assert!(n > 1000.0 && mean_abs < 4.0, "{mean_abs} over {n} voxels");
    }
}
