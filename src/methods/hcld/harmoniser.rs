//! HCLD prepared for a run: the loaded model and its target, applied to one image on the model
//! grid and brought back onto the template and native grids.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::methods::provenance::HcldParameters;
use crate::methods::{ApplyError, Harmonised, Harmoniser, Method, PreprocessedImage, masked};
use crate::model::grid::{from_model_grid, to_model_grid};
use crate::model::harmonize::Harmonizer;
use crate::preprocess::resample::{Grid, Interpolation};
use crate::preprocess::t1w::to_native;

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
        let grid_image = to_model_grid(&inp.template, grid).map_err(fail)?;
        let values = {
            let harmonizer = self.harmonizer.lock().unwrap_or_else(|p| p.into_inner());
            // From a plain thread, not from this job-pool worker: a rayon worker that enters
            // another pool steals jobs of its own pool while it waits, and a stolen job would
            // block on the mutex this thread holds (a deadlock seen with 4 images, 2 workers).
            let joined = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        self.pool.install(|| {
                            harmonizer.harmonize(&grid_image, &self.target_latent, &|| {
                                stop.load(Ordering::SeqCst)
                            })
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
        if values.iter().any(|v| !v.is_finite()) {
            return Err(fail("the model produced NaN or infinite values; the model may be broken (retrain) or the input unusual".into()));
        }
        let on_output = from_model_grid(values, grid, &Grid::of(&inp.template)).map_err(fail)?;
        let template = inp
            .template
            .with_data(masked(on_output.data(), &inp.template_mask))
            .map_err(fail)?;
        let native = to_native(
            &template,
            &inp.template_to_t1w,
            &Grid::of(&inp.native),
            Interpolation::Linear,
        )
        .map_err(|e| fail(e.to_string()))?;
        let native = inp
            .native
            .with_data(masked(native.data(), &inp.native_mask))
            .map_err(fail)?;
        Ok(Harmonised {
            template,
            native,
            fit: serde_json::json!({}),
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
