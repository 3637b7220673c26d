//! One participant-level job: load a T1w, reorient it to RAS+, scale intensities robustly, and
//! write `desc-preproc_T1w` with its sidecar, unless a current output already exists.

use std::io::Read;
use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bids::{BidsError, Entity, Layout};
use crate::cli::{ExitStatus, Settings};
use crate::derivatives::{
    DerivativeName, DerivativesDataset, DerivativesError, Sidecar, source_uri,
};
use crate::preprocess::intensity::{ScalingError, scale_intensity};
use crate::volume::{VolumeError, XformCode, axcodes, read_nifti, to_closest_canonical};

use super::{Job, Outcome};

/// Why one job failed. Messages name the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The image could not be read.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The image has no usable intensities.
    #[error("{path}: {source}")]
    Scaling {
        /// The image.
        path: PathBuf,
        /// Why.
        source: ScalingError,
    },
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
            JobError::Scaling { .. } => ExitStatus::DataError,
            JobError::Metadata(e) if e.is_io() => ExitStatus::IoError,
            JobError::Metadata(_) => ExitStatus::DataError,
            JobError::Output(DerivativesError::CannotCreate { .. }) => ExitStatus::CannotCreate,
            JobError::Output(_) => ExitStatus::IoError,
            JobError::DuplicateOutput { .. } => ExitStatus::DataError,
            JobError::MissingOutput(_) | JobError::Internal(..) => ExitStatus::SomeFailed,
        }
    }
}

/// The name of the native-space preprocessed T1w for a source.
pub fn preproc_name(job: &Job) -> DerivativeName {
    DerivativeName::from_source(&job.source, "T1w", ".nii.gz").with(Entity::Description, "preproc")
}

/// Everything that determines the output: input bytes, parameters, hcld version.
fn fingerprint(
    job: &Job,
    settings: &Settings,
    metadata: &serde_json::Map<String, Value>,
) -> Result<(String, Value), JobError> {
    let mut file = std::fs::File::open(&job.path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && job.source.is_dangling() {
            VolumeError::DanglingSymlink {
                path: job.path.clone(),
            }
        } else {
            VolumeError::Read {
                path: job.path.clone(),
                source: e,
            }
        }
    })?;
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
        "IntensityScaling": {
            "LowPercentile": settings.intensity.low_percentile,
            "HighPercentile": settings.intensity.high_percentile,
            "ClipMax": settings.intensity.clip_max,
        },
        "Reorientation": "closest canonical RAS+ (axis permutation and flips, no resampling)",
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
    let recorded = out.read_sidecar(name).and_then(|sidecar| {
        sidecar
            .get("hcld")?
            .get("Fingerprint")?
            .as_str()
            .map(str::to_string)
    });
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
    let name = preproc_name(job);
    let image_path = out.path(&name)?;
    let json_path = out.path(&name.with_extension(".json"))?;
    if let Some(other) = &job.duplicate_of {
        return Err(JobError::DuplicateOutput {
            path: job.path.clone(),
            other: other.clone(),
        });
    }
    let _lock = out.lock(&name)?;
    out.remove_stale_temporaries(&name);
    let Freshness {
        metadata,
        fingerprint: fp,
        input_info,
        current,
    } = freshness(job, &name, layout, settings, out)?;
    if current && !settings.force {
        return Ok(Outcome::UpToDate(vec![image_path, json_path]));
    }
    let (volume, header) = read_nifti(&job.path)?;
    let input_orientation: String = axcodes(volume.affine()).iter().collect();
    let canonical = to_closest_canonical(&volume);
    drop(volume);
    let (scaled, report) =
        scale_intensity(&canonical, &settings.intensity).map_err(|source| JobError::Scaling {
            path: job.path.clone(),
            source,
        })?;
    if report.non_finite_voxels > 0 {
        tracing::warn!(
            "{}: {} NaN/Inf voxels set to 0",
            job.path.display(),
            report.non_finite_voxels
        );
    }
    let skull_stripped = metadata
        .get("SkullStripped")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let p = &settings.intensity;
    let description = format!(
        "T1w reoriented to RAS+ and intensity-scaled: foreground percentile {} mapped to 0 and {} to 1, clipped to [0, {}]{}.",
        p.low_percentile,
        p.high_percentile,
        p.clip_max,
        if skull_stripped {
            "; skull-stripped at input"
        } else {
            "; not skull-stripped"
        }
    );
    let mut input = input_info;
    if let Value::Object(m) = &mut input {
        m.insert("Orientation".into(), json!(input_orientation));
        m.insert(
            "Header".into(),
            serde_json::to_value(&header).unwrap_or(Value::Null),
        );
    }
    let sidecar = Sidecar::new(
        &description,
        &[source_uri(job.source.rel_path())],
        skull_stripped,
    )
    .insert(
        "hcld",
        json!({
            "Version": crate::VERSION,
            "Fingerprint": fp,
            "Steps": ["reorient", "intensity-scaling"],
            "Input": input,
            "IntensityScaling": {
                "LowValue": report.low_value,
                "HighValue": report.high_value,
                "ForegroundVoxels": report.foreground_voxels,
                "NonFiniteVoxels": report.non_finite_voxels,
            },
        }),
    );
    let code = match header.xform_code() {
        XformCode::Unknown => XformCode::ScannerAnat,
        c => c,
    };
    let written = out.write_image(
        &name,
        &scaled,
        crate::volume::OutputDtype::Float32,
        code,
        &sidecar,
    )?;
    Ok(Outcome::Written(vec![written, json_path]))
}

/// Group level (until model fitting lands): checks that each job's participant output exists and
/// is current for this input and these parameters.
pub fn check_current(
    job: &Job,
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<Outcome, JobError> {
    let name = preproc_name(job);
    let path = out.path(&name)?;
    if freshness(job, &name, layout, settings, out)?.current {
        Ok(Outcome::UpToDate(vec![path]))
    } else {
        Err(JobError::MissingOutput(path))
    }
}
