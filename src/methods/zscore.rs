//! Z-score: the brain's mean → 0, its standard deviation → 1.

use serde_json::json;

use crate::model::baselines::fit_zscore;

use super::intensity::MapHarmoniser;
use super::{Harmoniser, Method, MethodError, MethodSpec, ReferenceUnits, RunContext};

/// The brain z-score baseline.
#[derive(Debug)]
pub(super) struct ZScore;

impl MethodSpec for ZScore {
    fn name(&self) -> &'static str {
        "zscore"
    }

    fn desc(&self) -> &'static str {
        "zscore"
    }

    fn units(&self) -> &'static str {
        "z-scores of the brain (0 = brain mean, 1 = brain standard deviation)"
    }

    fn prepare(&self, _ctx: &RunContext) -> Result<Option<Box<dyn Harmoniser>>, MethodError> {
        Ok(Some(Box::new(MapHarmoniser {
            method: Method(&ZScore),
            parameters: json!({}),
            content_parameters: json!({}),
            description: "z-scored with the brain mean and standard deviation",
            fit: Box::new(|brain| {
                let m = fit_zscore(brain)?;
                Ok((m.clone(), json!({ "Map": m })))
            }),
        })))
    }

    fn reference_units(&self, _ctx: &RunContext) -> ReferenceUnits {
        ReferenceUnits::Map(Box::new(|brain| fit_zscore(brain).ok()))
    }
}
