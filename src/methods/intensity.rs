//! What the intensity-map baselines share: a [`Harmoniser`] that fits a monotone
//! [`IntensityMap`] to each image's brain intensities and applies it to the template-space and
//! the native-space image alike.

use std::sync::atomic::AtomicBool;

use serde_json::Value;

use crate::model::baselines::{BaselineError, IntensityMap, brain_values};

use super::{ApplyError, Harmonised, Harmoniser, Method, PreprocessedImage};

/// Fits one image's map from its brain intensities; gives the map and what the sidecar records.
pub(super) type FitMap =
    Box<dyn Fn(&[f32]) -> Result<(IntensityMap, Value), BaselineError> + Send + Sync>;

/// A baseline prepared for a run.
pub(super) struct MapHarmoniser {
    pub(super) method: Method,
    pub(super) parameters: Value,
    pub(super) content_parameters: Value,
    pub(super) description: &'static str,
    pub(super) fit: FitMap,
}

impl std::fmt::Debug for MapHarmoniser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapHarmoniser")
            .field("method", &self.method)
            .field("parameters", &self.parameters)
            .finish()
    }
}

impl Harmoniser for MapHarmoniser {
    fn method(&self) -> Method {
        self.method
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    fn content_parameters(&self) -> Value {
        self.content_parameters.clone()
    }

    fn description(&self) -> String {
        self.description.to_string()
    }

    fn apply(
        &self,
        image: &PreprocessedImage,
        _stop: &AtomicBool,
    ) -> Result<Harmonised, ApplyError> {
        let fail = |m: String| ApplyError::Failed(format!("{}: {m}", self.method));
        let brain = brain_values(image.template.data(), &image.template_mask);
        let (map, fit) = (self.fit)(&brain).map_err(|e| fail(e.to_string()))?;
        let template = image
            .template
            .with_data(map.apply_masked(image.template.data(), &image.template_mask))
            .map_err(fail)?;
        let native = image
            .native
            .with_data(map.apply_masked(image.native.data(), &image.native_mask))
            .map_err(fail)?;
        Ok(Harmonised {
            template,
            native,
            fit,
        })
    }

    fn map_intensities(&self, values: &[f32]) -> Option<Vec<f32>> {
        let (map, _) = (self.fit)(values).ok()?;
        Some(values.iter().map(|&v| map.apply(v)).collect())
    }
}
