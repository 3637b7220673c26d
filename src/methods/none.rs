//! The identity: the preprocessed image, scored beside the methods as the unharmonised baseline.
//! It writes nothing; its outputs are the `desc-preproc` images.

use super::{Harmoniser, MethodError, MethodSpec, RunContext};

/// The identity.
#[derive(Debug)]
pub(super) struct Identity;

impl MethodSpec for Identity {
    fn name(&self) -> &'static str {
        "none"
    }

    fn desc(&self) -> &'static str {
        "preproc"
    }

    fn units(&self) -> &'static str {
        "preprocessed: brain percentiles to [0, 1]"
    }

    fn keeps_preprocessed_units(&self) -> bool {
        true
    }

    fn is_identity(&self) -> bool {
        true
    }

    fn prepare(&self, _ctx: &RunContext) -> Result<Option<Box<dyn Harmoniser>>, MethodError> {
        Ok(None)
    }
}
