//! Participant-level harmonisation: the methods of a run prepared once ([`prepare`]), and each
//! applied to one job's preprocessed image ([`apply`]): template-space and native-space outputs
//! with provenance sidecars, a before/after figure and intensity histograms against the target.
//! An output whose preprocessed input, method parameters, model and target are unchanged is kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::derivatives::{DerivativeName, DerivativesDataset, PROVENANCE_KEY, Sidecar};
use crate::methods::{
    ApplyError, Harmonised, Harmoniser, MethodProvenance, PreprocessedImage, RunContext,
};
use crate::model::baselines::brain_values;
use crate::model::harmonize::quantiles;
use crate::preprocess::itk::WorldAffine;
use crate::preprocess::template::SPACE;
use crate::report::comparison_figure;
use crate::report::plots::{Panel, Series, density, line_panels};
use crate::settings::Settings;
use crate::volume::{OutputDtype, Volume, XformCode, read_nifti};

use super::outputs::{MethodNames, OutputNames};
use super::participant::{JobError, recorded_fingerprint};
use super::{Job, PipelineError};

/// What every participant job of a run shares: the prepared methods (without the identity,
/// which writes nothing), in report order.
#[derive(Debug)]
pub struct MethodSetup {
    /// The prepared methods.
    pub harmonisers: Vec<Box<dyn Harmoniser>>,
}

impl MethodSetup {
    /// The target's brain-intensity quantiles, from the first method that has a target.
    fn target_intensities(&self) -> Option<&[f32]> {
        self.harmonisers.iter().find_map(|h| h.target_intensities())
    }
}

/// Prepares what the participant jobs share (each method's model, target or landmarks). Fails
/// the run (before any job) when something asked for is missing.
pub fn prepare(
    settings: &Settings,
    out: &DerivativesDataset,
    stop: &Arc<AtomicBool>,
) -> Result<MethodSetup, PipelineError> {
    let ctx = RunContext {
        settings: &settings.run,
        out,
        stop,
    };
    let mut harmonisers = Vec::new();
    for method in &settings.methods {
        if let Some(h) = method.prepare(&ctx)? {
            harmonisers.push(h);
        }
    }
    Ok(MethodSetup { harmonisers })
}

/// The fingerprint of one method's output: the preprocessed input, the method and its content
/// parameters, the hcld version and the output resolution.
fn method_fingerprint(preproc_fp: &str, harmoniser: &dyn Harmoniser, resolution: u8) -> String {
    let mut h = Sha256::new();
    for part in [
        preproc_fp,
        harmoniser.method().name(),
        &harmoniser.content_parameters().to_string(),
        crate::VERSION,
        &resolution.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("sha256:{:x}", h.finalize())
}

/// Applies every method of `setup` to one job's preprocessed outputs. Returns the paths and
/// whether anything was written.
pub fn apply(
    job: &Job,
    settings: &Settings,
    out: &DerivativesDataset,
    setup: &MethodSetup,
    stop: &AtomicBool,
) -> Result<(Vec<PathBuf>, bool), JobError> {
    if setup.harmonisers.is_empty() {
        return Ok((Vec::new(), false));
    }
    let resolution = settings.preprocessing.output_resolution;
    let names = OutputNames::new(job, resolution);
    let _lock = out.lock(&names.native_t1w)?;
    let preproc_fp = recorded_fingerprint(out, &names.native_t1w).ok_or_else(|| {
        JobError::Harmonize(
            job.path.clone(),
            "its preprocessed output has no fingerprint; run again with --force".into(),
        )
    })?;
    let mut inputs: Option<PreprocessedImage> = None;
    let mut paths = Vec::new();
    let mut written = false;
    for harmoniser in &setup.harmonisers {
        let method = harmoniser.method();
        if stop.load(Ordering::SeqCst) {
            return Err(JobError::Interrupted(job.path.clone()));
        }
        let mn = MethodNames::new(method, &names);
        let fingerprint = method_fingerprint(&preproc_fp, harmoniser.as_ref(), resolution);
        let files = vec![
            out.path(&mn.template)?,
            out.path(&mn.template.with_extension(".json"))?,
            out.path(&mn.native)?,
            out.path(&mn.native.with_extension(".json"))?,
            out.figure_path(job.subject(), &mn.figure)?,
            out.figure_path(job.subject(), &mn.histogram)?,
        ];
        let recorded = recorded_fingerprint(out, &mn.native);
        if !settings.resources.force
            && recorded.as_deref() == Some(fingerprint.as_str())
            && files.iter().all(|p| p.is_file())
        {
            paths.extend(files);
            continue;
        }
        if inputs.is_none() {
            inputs = Some(read_inputs(job, out, &names)?);
        }
        let inp = inputs.as_ref().expect("just read");
        let started = std::time::Instant::now();
        let result = harmoniser.apply(inp, stop).map_err(|e| match e {
            ApplyError::Interrupted => JobError::Interrupted(job.path.clone()),
            ApplyError::Failed(m) => JobError::Harmonize(job.path.clone(), m),
        })?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!("{}: {method} in {seconds:.1} s", job.label());
        let provenance = MethodProvenance {
            version: crate::VERSION.to_string(),
            fingerprint,
            method,
            units: method.units().to_string(),
            preprocessing_fingerprint: preproc_fp.clone(),
            parameters: harmoniser.parameters(),
            fit: result.fit.clone(),
        };
        let output = MethodOutput {
            names: &names,
            method_names: &mn,
            harmoniser: harmoniser.as_ref(),
            result: &result,
            provenance: &provenance,
        };
        write_method(job, out, setup, inp, &output, resolution)?;
        paths.extend(files);
        written = true;
    }
    Ok((paths, written))
}

/// One method's result for one job, with what its files are called and record.
struct MethodOutput<'a> {
    names: &'a OutputNames,
    method_names: &'a MethodNames,
    harmoniser: &'a dyn Harmoniser,
    result: &'a Harmonised,
    provenance: &'a MethodProvenance,
}

fn write_method(
    job: &Job,
    out: &DerivativesDataset,
    setup: &MethodSetup,
    inp: &PreprocessedImage,
    output: &MethodOutput,
    res: u8,
) -> Result<(), JobError> {
    let (names, mn) = (output.names, output.method_names);
    let method = output.harmoniser.method();
    let (template_out, native_out) = (&output.result.template, &output.result.native);
    let provenance = output.provenance.to_value();
    let uri = |n: &DerivativeName| -> Result<String, JobError> {
        Ok(format!("bids::{}", n.rel_path()?.display()))
    };
    let what = output.harmoniser.description();
    let dims = inp.template.dims();
    let resolution = format!(
        "{res} mm isotropic on hcld's model grid ({}×{}×{} voxels in {SPACE} world coordinates, centred on the template brain)",
        dims[0], dims[1], dims[2]
    );
    let mut sources = vec![uri(&names.template_t1w)?, uri(&names.template_mask)?];
    sources.extend(output.harmoniser.extra_sources());
    out.write_image(
        &mn.template,
        template_out,
        OutputDtype::Float32,
        XformCode::Mni152,
        &Sidecar::new(
            &format!("Preprocessed T1w in {SPACE} space {what}; brain only (zero outside the brain mask). Intensities: {}.", method.units()),
            &sources,
            true,
        )
        .insert("Resolution", json!(resolution))
        .insert(PROVENANCE_KEY, provenance.clone()),
    )?;
    // Figures before the native image, whose sidecar marks this method complete.
    write_figures(job, out, mn, output.harmoniser, setup, inp, template_out)?;
    out.write_image(
        &mn.native,
        native_out,
        OutputDtype::Float32,
        XformCode::ScannerAnat,
        &Sidecar::new(
            &format!("T1w {what}, on the native grid of the preprocessed T1w (RAS+); brain only. Intensities: {}.", method.units()),
            &[uri(&mn.template)?, uri(&names.t1w_to_template)?, uri(&names.native_mask)?, uri(&names.native_t1w)?],
            true,
        )
        .insert(PROVENANCE_KEY, provenance.clone()),
    )?;
    Ok(())
}

/// The before/after/difference figure and the intensity histograms (this image before and after,
/// and the target's brain intensities under the same method, dashed).
fn write_figures(
    job: &Job,
    out: &DerivativesDataset,
    mn: &MethodNames,
    harmoniser: &dyn Harmoniser,
    setup: &MethodSetup,
    inp: &PreprocessedImage,
    template_out: &Volume,
) -> Result<(), JobError> {
    let method = harmoniser.method();
    let fig = |e: crate::report::FigureError| JobError::Figure(job.path.clone(), e.to_string());
    let zoom = (4.0 / inp.template.voxel_sizes()[0]).round().max(1.0) as usize;
    let comparison =
        comparison_figure(&inp.template, template_out, &inp.template_mask, zoom).map_err(fig)?;
    out.write_bytes(&out.figure_path(job.subject(), &mn.figure)?, &comparison)?;
    let before = brain_values(inp.template.data(), &inp.template_mask);
    let after = brain_values(template_out.data(), &inp.template_mask);
    // The target's intensities: the cached target of HCLD when there is one, mapped by the same
    // method fitted to the target itself.
    let target_before: Option<Vec<f32>> = setup.target_intensities().map(<[f32]>::to_vec);
    let target_after: Option<Vec<f32>> = target_before
        .as_ref()
        .and_then(|q| harmoniser.map_intensities(q));
    let range = |vals: &[&[f32]]| -> (f64, f64) {
        let all: Vec<f32> = vals.iter().flat_map(|v| v.iter().copied()).collect();
        let q = quantiles(&all);
        if q.is_empty() {
            (0.0, 1.0)
        } else {
            // 1st–99th percentile of everything shown: z-scores of a few bright voxels would squash the plot.
            let (a, b) = (q[1] as f64, q[99] as f64);
            let m = (b - a).max(1e-6) * 0.05;
            (a - m, b + m)
        }
    };
    let panel =
        |title: String, x: &str, own: &[f32], target: Option<&Vec<f32>>, colour: usize| -> Panel {
            let mut vals: Vec<&[f32]> = vec![own];
            if let Some(t) = target {
                vals.push(t);
            }
            let (lo, hi) = range(&vals);
            let mut series = vec![Series {
                label: "this image".into(),
                colour: Some(colour),
                dashed: false,
                points: density(own, lo, hi, 100),
            }];
            if let Some(t) = target {
                series.push(Series {
                    label: "target".into(),
                    colour: None,
                    dashed: true,
                    points: density(t, lo, hi, 100),
                });
            }
            Panel {
                title,
                x_label: x.into(),
                y_label: "density".into(),
                series,
            }
        };
    let hist = line_panels(
        &[
            panel(
                "before (preprocessed)".into(),
                "intensity",
                &before,
                target_before.as_ref(),
                7,
            ),
            panel(
                format!("after ({method})"),
                "intensity",
                &after,
                target_after.as_ref(),
                0,
            ),
        ],
        false,
        (760, 260),
    )
    .map_err(fig)?;
    out.write_bytes(&out.figure_path(job.subject(), &mn.histogram)?, &hist)?;
    Ok(())
}

/// Reads a job's preprocessed outputs.
fn read_inputs(
    job: &Job,
    out: &DerivativesDataset,
    names: &OutputNames,
) -> Result<PreprocessedImage, JobError> {
    let read =
        |n: &DerivativeName| -> Result<Volume, JobError> { Ok(read_nifti(&out.path(n)?)?.0) };
    let bools = |v: &Volume| v.data().iter().map(|&x| x > 0.5).collect::<Vec<bool>>();
    let template = read(&names.template_t1w)?;
    let template_mask = bools(&read(&names.template_mask)?);
    let native = read(&names.native_t1w)?;
    let native_mask = bools(&read(&names.native_mask)?);
    let xfm = out.path(&names.t1w_to_template)?;
    let text = crate::input::read_regular_text(&xfm, crate::input::TEXT_LIMIT).map_err(|e| {
        JobError::Harmonize(
            xfm.clone(),
            format!(
                "cannot read: {}; run again with --force",
                crate::input::reason(&e)
            ),
        )
    })?;
    let template_to_t1w = WorldAffine::from_itk_text(&text)
        .map_err(|e| JobError::Harmonize(xfm.clone(), format!("{e}; run again with --force")))?;
    if template_mask.len() != template.data().len() || native_mask.len() != native.data().len() {
        return Err(JobError::Harmonize(
            job.path.clone(),
            "preprocessed image and mask grids differ; run again with --force".into(),
        ));
    }
    Ok(PreprocessedImage {
        template,
        template_mask,
        native,
        native_mask,
        template_to_t1w,
    })
}
