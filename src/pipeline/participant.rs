//! One participant-level job: load a T1w, reorient it to RAS+, reuse what `--derivatives` offer,
//! run the preprocessing chain (registration to MNI152NLin2009aSym, bias correction, brain mask,
//! intensity scaling, model-grid resampling) and write its derivatives, transforms and QC figures,
//! unless current outputs already exist.

use std::io::Read;
use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bids::{BidsError, Layout};
use crate::derivatives::{
    DerivativeName, DerivativesDataset, DerivativesError, PROVENANCE_KEY, Sidecar, source_uri,
};
use crate::preprocess::mask::MaskSource;
use crate::preprocess::morphology::dilate;
use crate::preprocess::register::RegistrationConfig;
use crate::preprocess::t1w::{PreprocessError, PreprocessedT1w, preprocess_t1w};
use crate::preprocess::template::{SPACE, TemplateImage};
use crate::report::{Outline, mask_centre, orthogonal_slices};
use crate::settings::{ExitStatus, Settings};
use crate::volume::{
    OutputDtype, Volume, VolumeError, XformCode, axcodes, read_nifti, to_closest_canonical,
};

use super::outputs::OutputNames;
use super::reuse::{ReuseError, find_reusable};
use super::{Job, Outcome};

/// Why one job failed. Messages name the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The image could not be read.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// Preprocessing could not produce a trustworthy output.
    #[error("{path}: {source}")]
    Preprocess {
        /// The image.
        path: PathBuf,
        /// Why.
        source: PreprocessError,
    },
    /// Derivatives offered for reuse do not fit.
    #[error(transparent)]
    Reuse(#[from] ReuseError),
    /// A QC figure could not be rendered.
    #[error("{0}: {1}")]
    Figure(PathBuf, String),
    /// Its sidecar metadata is broken.
    #[error(transparent)]
    Metadata(#[from] BidsError),
    /// Outputs could not be written.
    #[error(transparent)]
    Output(#[from] DerivativesError),
    /// Two selected inputs would write the same output.
    #[error(
        "{path}: would write the same outputs as {other}; keep one of them (or tell them apart with a run- or acq- entity)"
    )]
    DuplicateOutput {
        /// This input.
        path: PathBuf,
        /// The input that keeps the outputs.
        other: String,
    },
    /// A harmonisation method could not be applied to this image.
    #[error("{0}: {1}")]
    Harmonize(PathBuf, String),
    /// Ctrl-C or SIGTERM: the job stopped before writing anything more.
    #[error("{0}: interrupted; finished outputs are kept, run again to resume")]
    Interrupted(PathBuf),
    /// A bug in hcld (a panic), contained to this job.
    #[error("{0}: internal error in hcld ({1}); please report it with the log file")]
    Internal(PathBuf, String),
    /// The group level found no current participant output.
    #[error(
        "{0}: no current preprocessed output; run the participant level for this subject first"
    )]
    MissingOutput(PathBuf),
}

impl JobError {
    /// The exit status for this failure alone.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            JobError::Volume(e) if e.is_bad_data() => ExitStatus::DataError,
            JobError::Volume(_) => ExitStatus::IoError,
            JobError::Preprocess { source, .. } => match source {
                PreprocessError::Registration(
                    crate::preprocess::template_registration::TemplateFitError::Template(_),
                )
                | PreprocessError::Resample(_) => ExitStatus::SomeFailed,
                _ => ExitStatus::DataError,
            },
            JobError::Reuse(ReuseError::Volume(e)) if !e.is_bad_data() => ExitStatus::IoError,
            JobError::Reuse(_) => ExitStatus::DataError,
            JobError::Figure(..) => ExitStatus::SomeFailed,
            JobError::Metadata(e) if e.is_io() => ExitStatus::IoError,
            JobError::Metadata(_) => ExitStatus::DataError,
            JobError::Output(DerivativesError::CannotCreate { .. }) => ExitStatus::CannotCreate,
            JobError::Output(_) => ExitStatus::IoError,
            JobError::DuplicateOutput { .. } => ExitStatus::DataError,
            JobError::MissingOutput(_) | JobError::Internal(..) => ExitStatus::SomeFailed,
            JobError::Harmonize(..) => ExitStatus::DataError,
            JobError::Interrupted(_) => ExitStatus::Interrupted,
        }
    }
}

/// Everything that determines the output: input bytes, parameters, hcld version.
fn fingerprint(
    job: &Job,
    settings: &Settings,
    metadata: &serde_json::Map<String, Value>,
) -> Result<(String, Value), JobError> {
    let (mut file, _) = crate::volume::open_input(&job.path)?;
    let mut input = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| VolumeError::Read {
            path: job.path.clone(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        input.update(&buf[..n]);
    }
    let input_sha = format!("{:x}", input.finalize());
    let params = json!({
        "Preprocessing": settings.preprocessing.t1w_options(metadata),
        "Registration": RegistrationConfig::default(),
        "Reorientation": "closest canonical RAS+ (axis permutation and flips, no resampling)",
        "Derivatives": settings.paths.derivatives,
    });
    let mut all = Sha256::new();
    all.update(input_sha.as_bytes());
    all.update(params.to_string().as_bytes());
    // Sidecar metadata decides output content too (SkullStripped today, more later).
    all.update(Value::Object(metadata.clone()).to_string().as_bytes());
    all.update(crate::VERSION.as_bytes());
    Ok((
        format!("sha256:{:x}", all.finalize()),
        json!({ "SHA256": input_sha, "Parameters": params }),
    ))
}

/// The `hcld.Fingerprint` recorded in an output's sidecar (written last, so it implies a complete
/// image), if any.
pub(super) fn recorded_fingerprint(
    out: &DerivativesDataset,
    name: &DerivativeName,
) -> Option<String> {
    out.read_sidecar(name)?
        .get(PROVENANCE_KEY)?
        .get("Fingerprint")?
        .as_str()
        .map(str::to_string)
}

/// What decides a job's output, and whether the output on disk already matches it.
struct Freshness {
    metadata: serde_json::Map<String, Value>,
    fingerprint: String,
    input_info: Value,
    current: bool,
}

/// Reads the source's metadata, fingerprints input, metadata, parameters and version, and compares
/// with the fingerprint in the output's sidecar (written last, so it implies a complete image).
fn freshness(
    job: &Job,
    name: &DerivativeName,
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<Freshness, JobError> {
    let metadata = layout.metadata(&job.source)?;
    let (fingerprint, input_info) = fingerprint(job, settings, &metadata)?;
    let recorded = recorded_fingerprint(out, name);
    let image_exists = out.path(name).is_ok_and(|p| p.is_file());
    let current = image_exists && recorded.as_deref() == Some(fingerprint.as_str());
    Ok(Freshness {
        metadata,
        fingerprint,
        input_info,
        current,
    })
}

/// Runs the participant-level steps for one T1w.
pub fn preprocess(
    job: &Job,
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<Outcome, JobError> {
    let names = OutputNames::new(job, settings.preprocessing.output_resolution);
    let paths = names.paths(out, job.subject())?;
    if let Some(other) = &job.duplicate_of {
        return Err(JobError::DuplicateOutput {
            path: job.path.clone(),
            other: other.clone(),
        });
    }
    let _lock = out.lock(&names.native_t1w)?;
    out.remove_stale_temporaries(&names.native_t1w);
    let Freshness {
        metadata,
        fingerprint: fp,
        input_info,
        current,
    } = freshness(job, &names.native_t1w, layout, settings, out)?;
    if current && paths.iter().all(|p| p.is_file()) && !settings.resources.force {
        return Ok(Outcome::UpToDate(paths));
    }
    let (volume, header) = read_nifti(&job.path)?;
    let input_orientation: String = axcodes(volume.affine()).iter().collect();
    let canonical = to_closest_canonical(&volume);
    drop(volume);
    let non_finite = canonical.data().iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        tracing::warn!(
            "{}: {non_finite} NaN/Inf voxels set to 0",
            job.path.display()
        );
    }
    let reuse = find_reusable(layout, job, &canonical)?;
    let opts = settings.preprocessing.t1w_options(&metadata);
    let result =
        preprocess_t1w(&canonical, reuse.mask, reuse.registration, &opts).map_err(|source| {
            JobError::Preprocess {
                path: job.path.clone(),
                source,
            }
        })?;
    for w in &result.report.warnings {
        tracing::warn!("{}: QC: {w}", job.label());
    }
    let mut input = input_info;
    if let Value::Object(m) = &mut input {
        m.insert("Orientation".into(), json!(input_orientation));
        m.insert("NonFiniteVoxels".into(), json!(non_finite));
        m.insert(
            "Header".into(),
            serde_json::to_value(&header).unwrap_or(Value::Null),
        );
    }
    let provenance = json!({
        "Version": crate::VERSION,
        "Fingerprint": fp,
        "Input": input,
        "Options": opts,
        "Preprocessing": result.report,
    });
    write_outputs(job, out, &names, &result, &provenance, header.xform_code())?;
    Ok(Outcome::Written(paths))
}

/// Writes a job's outputs: transforms, masks, template-space image, figures, and last the native
/// T1w whose sidecar marks the job complete.
fn write_outputs(
    job: &Job,
    out: &DerivativesDataset,
    names: &OutputNames,
    result: &PreprocessedT1w,
    provenance: &Value,
    input_code: XformCode,
) -> Result<(), JobError> {
    let raw = source_uri(job.source.rel_path());
    let own = |n: &DerivativeName| -> Result<String, JobError> {
        Ok(format!("bids::{}", n.rel_path()?.display()))
    };
    let native_code = match input_code {
        XformCode::Unknown => XformCode::ScannerAnat,
        c => c,
    };
    let report = &result.report;
    let skull_stripped_input = report.skull_stripped_because.is_some();
    // Transforms (ITK text, LPS), both directions.
    out.write_text_if_changed(
        &out.path(&names.t1w_to_template)?,
        &result.template_to_t1w.to_itk_text(),
    )?;
    let inverse = result
        .template_to_t1w
        .inverse()
        .expect("fits are checked to be invertible");
    out.write_text_if_changed(&out.path(&names.template_to_t1w)?, &inverse.to_itk_text())?;
    let mask_source = match &report.brain_mask {
        MaskSource::Derivatives { file } => format!("the brain mask {file} from --derivatives, resampled to this grid"),
        MaskSource::Input { reason } => format!("the input's own foreground (skull-stripped input: {reason})"),
        MaskSource::Template => "the MNI152NLin2009aSym brain mask mapped through the inverse registration and refined by intensity (tissue threshold, opening, largest component, closing, hole filling)".to_string(),
    };
    // Native brain mask.
    let native_mask = result.native_mask.to_volume(&result.native);
    out.write_image(
        &names.native_mask,
        &native_mask,
        OutputDtype::Uint8,
        native_code,
        &Sidecar::mask(
            &format!("Brain mask: {mask_source}."),
            std::slice::from_ref(&raw),
            "Brain",
        )
        .insert(PROVENANCE_KEY, provenance.clone()),
    )?;
    // Template space.
    let resolution = format!(
        "{r} mm isotropic on hcld's model grid ({d0}×{d1}×{d2} voxels in {SPACE} world coordinates, centred on the template brain)",
        r = report.resolution_mm,
        d0 = result.template.dims()[0],
        d1 = result.template.dims()[1],
        d2 = result.template.dims()[2],
    );
    let xfm_source = own(&names.t1w_to_template)?;
    out.write_image(
        &names.template_mask,
        &result.template_mask,
        OutputDtype::Uint8,
        XformCode::Mni152,
        &Sidecar::mask(
            &format!("Brain mask in {SPACE} space: the native brain mask resampled through the affine registration."),
            &[own(&names.native_mask)?, xfm_source.clone()],
            "Brain",
        )
        .insert("Resolution", json!(resolution))
        .insert(PROVENANCE_KEY, provenance.clone()),
    )?;
    let bias = if report.bias_correction.is_some() {
        "bias-field corrected (N4-class), "
    } else {
        ""
    };
    out.write_image(
        &names.template_t1w,
        &result.template,
        OutputDtype::Float32,
        XformCode::Mni152,
        &Sidecar::new(
            &format!("T1w {bias}skull-stripped, brain intensities scaled to [0, 1], affinely registered to {SPACE} and resampled (cubic B-spline) onto the model grid: the harmonisation input."),
            &[raw.clone(), xfm_source],
            true,
        )
        .insert("Resolution", json!(resolution))
        .insert(PROVENANCE_KEY, provenance.clone()),
    )?;
    write_figures(job, out, names, result)?;
    // Native T1w last: its sidecar marks the job complete.
    out.write_image(
        &names.native_t1w,
        &result.native,
        OutputDtype::Float32,
        native_code,
        &Sidecar::new(
            &format!("T1w reoriented to RAS+, {bias}brain intensities scaled to [0, 1] (not resampled; full field of view)."),
            &[raw],
            skull_stripped_input,
        )
        .insert(PROVENANCE_KEY, provenance.clone()),
    )?;
    Ok(())
}

/// QC figures: template edges (brain outline in red, white-matter boundary in yellow) over the
/// registered image, and the brain-mask outline over the native image.
fn write_figures(
    job: &Job,
    out: &DerivativesDataset,
    names: &OutputNames,
    result: &PreprocessedT1w,
) -> Result<(), JobError> {
    let fig_err = |e: String| JobError::Figure(job.path.clone(), e);
    let grid = crate::preprocess::resample::Grid::of(&result.template);
    let on_grid = |image: TemplateImage| -> Result<Volume, JobError> {
        let v = image.load()?;
        crate::preprocess::resample::resample(
            &v,
            &grid,
            crate::preprocess::resample::Interpolation::Linear,
            0.0,
        )
        .map_err(|e| fig_err(e.to_string()))
    };
    let brain: Vec<bool> = on_grid(TemplateImage::BrainMask)?
        .data()
        .iter()
        .map(|&v| v > 0.5)
        .collect();
    let wm: Vec<bool> = on_grid(TemplateImage::WhiteMatter)?
        .data()
        .iter()
        .map(|&v| v > 0.5)
        .collect();
    // The registered image with its skull (not the masked output), so a bad fit shows.
    let unmasked = crate::preprocess::resample::resample_mapped(
        &result.native,
        &grid,
        &result.template_to_t1w.0,
        crate::preprocess::resample::Interpolation::Linear,
        0.0,
    )
    .map_err(|e| fig_err(e.to_string()))?;
    let zoom = (4.0 / result.report.resolution_mm).round() as usize;
    let registration = orthogonal_slices(
        &unmasked,
        &[
            Outline {
                inside: &brain,
                rgb: [255, 40, 40],
            },
            Outline {
                inside: &wm,
                rgb: [255, 220, 0],
            },
        ],
        None,
        zoom,
    )
    .map_err(|e| fig_err(e.to_string()))?;
    out.write_bytes(
        &out.figure_path(job.subject(), &names.registration_figure)?,
        &registration,
    )?;
    // Native mask outline, through the mask's centre; thickened on fine grids to stay visible.
    let native = &result.native;
    let vs = native.voxel_sizes();
    let inside = &result.native_mask.voxels;
    let centre = mask_centre(inside, native.dims());
    let thick = if vs.iter().cloned().fold(f64::INFINITY, f64::min) < 1.5 {
        dilate(inside, native.dims(), vs, 1.0)
    } else {
        inside.clone()
    };
    let mask_figure = orthogonal_slices(
        native,
        &[Outline {
            inside: &thick,
            rgb: [40, 255, 40],
        }],
        centre,
        2,
    )
    .map_err(|e| fig_err(e.to_string()))?;
    out.write_bytes(
        &out.figure_path(job.subject(), &names.mask_figure)?,
        &mask_figure,
    )?;
    Ok(())
}
