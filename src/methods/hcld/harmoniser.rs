//! HCLD prepared for a run: the loaded model and its target, applied to one image on the model
//! grid and brought back onto the template and native grids.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::methods::provenance::HcldParameters;
use crate::methods::{ApplyError, Harmonised, Harmoniser, Method, PreprocessedImage, masked};
use crate::model::compose::{OutputMode, fit_monotone_map};
use crate::model::grid::{from_model_grid, to_model_grid};
use crate::model::harmonize::Harmonizer;
use crate::preprocess::resample::{Grid, Interpolation};
use crate::preprocess::t1w::to_native;

/// Bins of the intensity-map fit: at the `cpu` grid's ~150 000 brain voxels, ~2300 per bin,
/// so a bin's mean is exact to a fraction of a percent while 64 knots follow any tissue contrast.
const MAP_BINS: usize = 64;

/// The loaded HCLD model with the target it harmonises to.
#[derive(Debug)]
pub(super) struct HcldHarmoniser {
    /// The model; one harmonisation at a time (each already uses every thread it is given, and
    /// this bounds memory to one network's activations).
    pub(super) harmonizer: Mutex<Harmonizer>,
    /// What sidecars record.
    pub(super) parameters: HcldParameters,
    /// The model folder's name (for `Sources`).
    pub(super) model_folder: String,
    /// The target latent (scaled).
    pub(super) target_latent: Vec<f32>,
    /// The target image's brain-intensity quantiles.
    pub(super) target_quantiles: Vec<f32>,
    /// The threads the networks run on: all of `--nprocs`. Harmonisations take turns (the
    /// mutex), so one job's network gets every thread even when the job pool has one worker
    /// (one participant per process, as cluster arrays run it).
    pub(super) pool: rayon::ThreadPool,
}

impl Harmoniser for HcldHarmoniser {
    fn method(&self) -> Method {
        Method::HCLD
    }

    fn parameters(&self) -> Value {
        serde_json::to_value(&self.parameters).expect("parameters serialise")
    }

    fn content_parameters(&self) -> Value {
        // Where the model sits is provenance, not content (its digest is in). Removed, not
        // rebuilt, so that fingerprints stay those earlier versions recorded.
        let mut content = self.parameters();
        if let Some(m) = content.get_mut("Model").and_then(Value::as_object_mut) {
            m.remove("Path");
        }
        content
    }

    fn description(&self) -> String {
        format!(
            "harmonised with HCLD (model {}, target {} {}; DDIM inversion and sampling in latent space)",
            &self.parameters.model.sha256[..12],
            self.parameters.target.kind,
            self.parameters.target.label
        )
    }

    fn extra_sources(&self) -> Vec<String> {
        vec![format!("bids::models/{}", self.model_folder)]
    }

    fn apply(&self, inp: &PreprocessedImage, stop: &AtomicBool) -> Result<Harmonised, ApplyError> {
        let fail = |m: String| ApplyError::Failed(format!("hcld: {m}"));
        let grid = &self.parameters.model.grid;
        let mode = self.parameters.output_mode;
        let grid_image = to_model_grid(&inp.template, grid).map_err(fail)?;
        let decoded = {
            let harmonizer = self.harmonizer.lock().unwrap_or_else(|p| p.into_inner());
            // From a plain thread, not from this job-pool worker: a rayon worker that enters
            // another pool steals jobs of its own pool while it waits, and a stolen job would
            // block on the mutex this thread holds (a deadlock seen with 4 images, 2 workers).
            let joined = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        self.pool.install(|| {
                            harmonizer.harmonize(
                                &grid_image,
                                &self.target_latent,
                                mode.needs_reconstruction(),
                                &|| stop.load(Ordering::SeqCst),
                            )
                        })
                    })
                    .join()
            });
            // A panic in the network thread stays a panic (run_jobs turns it into this job's
            // failure).
            let harmonised = match joined {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            harmonised.map_err(|_| ApplyError::Interrupted)?
        };
        let finite = |v: &[f32]| v.iter().all(|v| v.is_finite());
        if !finite(&decoded.harmonised) || !decoded.source.as_deref().is_none_or(finite) {
            return Err(fail("the model produced NaN or infinite values; the model may be broken (retrain) or the input unusual".into()));
        }
        let on_template =
            |values: Vec<f32>| from_model_grid(values, grid, &Grid::of(&inp.template));
        // A template-space volume through the inverse registration onto the native grid.
        let on_native = |v: &crate::volume::Volume| {
            to_native(
                v,
                &inp.template_to_t1w,
                &Grid::of(&inp.native),
                Interpolation::Linear,
            )
            .map_err(|e| fail(e.to_string()))
        };
        let (template, native, fit) = match (mode, decoded.source) {
            (OutputMode::Residual, Some(source)) => {
                // The model's change, brought onto the input in both spaces.
                let change: Vec<f32> = decoded
                    .harmonised
                    .iter()
                    .zip(&source)
                    .map(|(h, s)| h - s)
                    .collect();
                let change = on_template(change).map_err(fail)?;
                let native_change = on_native(&change)?;
                let add = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, d)| x + d).collect();
                (
                    add(inp.template.data(), change.data()),
                    add(inp.native.data(), native_change.data()),
                    json!({}),
                )
            }
            (OutputMode::IntensityMap, Some(source)) => {
                // The model's change as an intensity transfer, fitted where the brain is on the
                // model grid and applied to the input's own voxels.
                let mask_volume = inp
                    .template
                    .with_data(
                        inp.template_mask
                            .iter()
                            .map(|&m| f32::from(u8::from(m)))
                            .collect(),
                    )
                    .map_err(fail)?;
                let inside: Vec<bool> = to_model_grid(&mask_volume, grid)
                    .map_err(fail)?
                    .into_iter()
                    .map(|m| m > 0.5)
                    .collect();
                let map = fit_monotone_map(&source, &decoded.harmonised, &inside, MAP_BINS)
                    .ok_or_else(|| {
                        fail(format!(
                            "fewer than {MAP_BINS} brain voxels on the model grid to fit the intensity map; the brain mask is nearly empty"
                        ))
                    })?;
                let apply = |v: &[f32]| v.iter().map(|&x| map.apply(x)).collect::<Vec<f32>>();
                (
                    apply(inp.template.data()),
                    apply(inp.native.data()),
                    json!({ "IntensityMap": map }),
                )
            }
            _ => {
                let template = on_template(decoded.harmonised).map_err(fail)?;
                let native = on_native(&template)?;
                (template.data().to_vec(), native.data().to_vec(), json!({}))
            }
        };
        let template = inp
            .template
            .with_data(masked(&template, &inp.template_mask))
            .map_err(fail)?;
        let native = inp
            .native
            .with_data(masked(&native, &inp.native_mask))
            .map_err(fail)?;
        Ok(Harmonised {
            template,
            native,
            fit,
        })
    }

    fn target_intensities(&self) -> Option<&[f32]> {
        Some(&self.target_quantiles)
            .filter(|q| !q.is_empty())
            .map(Vec::as_slice)
    }

    fn map_intensities(&self, values: &[f32]) -> Option<Vec<f32>> {
        Some(values.to_vec())
    }
}
