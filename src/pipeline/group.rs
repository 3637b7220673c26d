//! The group level = fit: preprocess whatever is not yet preprocessed, assign sites, let each
//! method fit what it needs on every selected image (Nyúl's landmarks; HCLD's model and site
//! targets), evaluate when asked, and write the group report.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::bids::Layout;
use crate::bids::sites::site_summary;
use crate::derivatives::DerivativesDataset;
use crate::methods::{FitImage, GroupContext, RunContext};
use crate::settings::Settings;

use super::items::{GroupItem, collect_items};
use super::{PipelineError, RunSummary};

/// Logs subjects and images per site.
fn log_sites(items: &[GroupItem]) {
    let summary = site_summary(
        items
            .iter()
            .map(|i| (i.job.subject(), i.site.label.as_str())),
    );
    let sources: std::collections::BTreeSet<&str> =
        items.iter().map(|i| i.site.source.as_str()).collect();
    tracing::info!(
        "sites (from {}): {}",
        sources.into_iter().collect::<Vec<_>>().join("; "),
        summary
            .iter()
            .map(|(s, c)| format!("{s}: {} subjects, {} images", c.subjects, c.images))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// What the methods fit on: each item's image, mask, site and fingerprint.
fn fit_images(items: &[GroupItem]) -> Vec<FitImage> {
    items
        .iter()
        .map(|i| FitImage {
            id: i.job.source.rel_path().to_string(),
            subject: i.job.subject().to_string(),
            site: i.site.label.clone(),
            template: i.template.clone(),
            mask: i.mask.clone(),
            fingerprint: i.fingerprint.clone(),
        })
        .collect()
}

/// Runs the group level after preprocessing: fits what `--method` needs and writes the report.
pub fn fit_and_report(
    mut summary: RunSummary,
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
    stop: &Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    let items = collect_items(&mut summary, layout, settings, out);
    if items.is_empty() {
        return Err(PipelineError::NothingPreprocessed);
    }
    log_sites(&items);
    let images = fit_images(&items);
    let ctx = GroupContext {
        run: RunContext {
            settings: &settings.run,
            out,
            stop,
        },
        images: &images,
    };
    // Every method checks the cohort before any fits, so a refusal writes nothing.
    for method in &settings.methods {
        method.check_group(&ctx)?;
    }
    for method in &settings.methods {
        method.fit_group(&ctx)?;
    }
    let evaluation = if settings.harmonisation.evaluate {
        let table = super::evaluate::evaluate(&items, layout, settings, out)?;
        for path in super::evaluate::write_table(&table, out)? {
            tracing::info!("evaluation: wrote {}", path.display());
        }
        Some(table)
    } else {
        None
    };
    super::reports::group(&items, layout, settings, out, evaluation.as_ref())?;
    Ok(summary)
}
