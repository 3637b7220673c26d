//! WhiteStripe (Shinohara et al. 2014): z-scores against normal-appearing white matter.

use serde_json::json;

use crate::model::baselines::{WHITE_STRIPE_WIDTH, fit_whitestripe};

use super::intensity::MapHarmoniser;
use super::{Harmoniser, Method, MethodError, MethodSpec, ReferenceUnits, RunContext};

/// The WhiteStripe baseline.
#[derive(Debug)]
pub(super) struct WhiteStripe;

impl MethodSpec for WhiteStripe {
    fn name(&self) -> &'static str {
        "whitestripe"
    }

    fn desc(&self) -> &'static str {
        "whitestripe"
    }

    fn units(&self) -> &'static str {
        "WhiteStripe z-scores (0 = mean of normal-appearing white matter, 1 = its standard deviation)"
    }

    fn prepare(&self, _ctx: &RunContext) -> Result<Option<Box<dyn Harmoniser>>, MethodError> {
        let parameters = json!({ "StripeHalfWidthQuantile": WHITE_STRIPE_WIDTH });
        Ok(Some(Box::new(MapHarmoniser {
            method: Method(&WhiteStripe),
            content_parameters: parameters.clone(),
            parameters,
            description: "normalised with WhiteStripe (z-score against normal-appearing white matter)",
            fit: Box::new(|brain| {
                let (m, mode) = fit_whitestripe(brain)?;
                Ok((
                    m.clone(),
                    json!({ "Map": m, "WhiteMatterMode": mode, "StripeHalfWidthQuantile": WHITE_STRIPE_WIDTH }),
                ))
            }),
        })))
    }

    fn reference_units(&self, _ctx: &RunContext) -> ReferenceUnits {
        ReferenceUnits::Map(Box::new(|brain| {
            fit_whitestripe(brain).ok().map(|(m, _)| m)
        }))
    }
}
