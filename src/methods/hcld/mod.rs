//! HCLD: 3D conditional latent diffusion towards a target site (or image). The group level trains
//! the model (`fit.rs`) and caches each site's representative latent; a participant run loads the
//! model and its target once (`setup.rs`) and harmonises each image on the model grid, brings the
//! result back onto the template and native grids, and masks it (`harmoniser.rs`).

mod fit;
mod harmoniser;
mod setup;

pub use setup::{find_model, load_harmonizer, network_pool};

use std::sync::atomic::Ordering;

use super::{GroupContext, Harmoniser, MethodError, MethodProvenance, MethodSpec, RunContext};

/// The HCLD method.
#[derive(Debug)]
pub(super) struct Hcld;

impl MethodSpec for Hcld {
    fn name(&self) -> &'static str {
        "hcld"
    }

    /// `harmonized`, as the BIDS contract names HCLD's outputs.
    fn desc(&self) -> &'static str {
        "harmonized"
    }

    fn units(&self) -> &'static str {
        "the target site's intensity scale (preprocessed: brain percentiles to [0, 1])"
    }

    fn has_target(&self) -> bool {
        true
    }

    fn keeps_preprocessed_units(&self) -> bool {
        true
    }

    fn check_group(&self, ctx: &GroupContext) -> Result<(), MethodError> {
        if ctx.run.settings.model.dir.is_none() {
            fit::check_sites(ctx)?;
        }
        Ok(())
    }

    fn fit_group(&self, ctx: &GroupContext) -> Result<(), MethodError> {
        if ctx.run.stop.load(Ordering::SeqCst) {
            return Err(MethodError::Interrupted);
        }
        let (model_dir, latents) = if ctx.run.settings.model.dir.is_none() {
            fit::train(ctx)?
        } else {
            (find_model(&ctx.run)?, None)
        };
        fit::cache_site_targets(ctx, &model_dir, latents)
    }

    fn prepare(&self, ctx: &RunContext) -> Result<Option<Box<dyn Harmoniser>>, MethodError> {
        let settings = ctx.settings;
        let implicit_without_model = !settings.harmonisation.methods_explicit
            && settings.model.dir.is_none()
            && matches!(find_model(ctx), Err(MethodError::Missing(_)));
        if implicit_without_model {
            tracing::info!(
                "no HCLD model in {} yet: preprocessing only (train one with the group level, then run the participant level again to harmonise)",
                ctx.out.models().dir().display()
            );
            return Ok(None);
        }
        Ok(Some(Box::new(setup::prepare(ctx)?)))
    }

    fn report_label(&self, provenance: Option<&MethodProvenance>) -> String {
        // Only the two fields shown are read, so that a sidecar missing another field (an older
        // version's) still gives its label.
        #[derive(serde::Deserialize)]
        struct Shown {
            #[serde(rename = "Model")]
            model: Option<ShownModel>,
            #[serde(rename = "Target")]
            target: Option<ShownTarget>,
        }
        #[derive(serde::Deserialize)]
        struct ShownModel {
            #[serde(rename = "SHA256")]
            sha256: String,
        }
        #[derive(serde::Deserialize)]
        struct ShownTarget {
            #[serde(rename = "Label")]
            label: String,
        }
        let shown =
            provenance.and_then(|p| serde_json::from_value::<Shown>(p.parameters.clone()).ok());
        let target = shown
            .as_ref()
            .and_then(|s| s.target.as_ref())
            .map_or_else(|| "?".into(), |t| t.label.clone());
        let model: String = shown
            .as_ref()
            .and_then(|s| s.model.as_ref())
            .map_or_else(|| "?".into(), |m| m.sha256.chars().take(12).collect());
        format!("HCLD to target {target} (model {model})")
    }
}
