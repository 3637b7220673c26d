//! The group level = fit: preprocess whatever is not yet preprocessed, assign sites, let each
//! method fit what it needs on every selected image (Nyúl's landmarks; HCLD's model and site
//! targets), evaluate when asked, and write the group report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::bids::Layout;
use crate::bids::sites::{Site, site_of, site_summary};
use crate::derivatives::DerivativesDataset;
use crate::methods::{FitImage, GroupContext, RunContext};
use crate::settings::{ExitStatus, Settings};

use super::outputs::OutputNames;
use super::participant::{JobError, recorded_fingerprint};
use super::{Job, Outcome, PipelineError, RunSummary};

/// One preprocessed image the group level works with.
#[derive(Debug, Clone)]
pub struct GroupItem {
    /// The job (source image).
    pub job: Job,
    /// Its site.
    pub site: Site,
    /// Template-space preprocessed image.
    pub template: PathBuf,
    /// Its brain mask.
    pub mask: PathBuf,
    /// The preprocessing fingerprint.
    pub fingerprint: String,
}

fn group_err(status: ExitStatus, message: String) -> PipelineError {
    PipelineError::Setup { status, message }
}

/// Collects the preprocessed images of the jobs that succeeded, with their sites. A job whose site
/// cannot be found becomes a failure naming the fix.
pub fn collect_items(
    summary: &mut RunSummary,
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Vec<GroupItem> {
    let mut items = Vec::new();
    for report in &mut summary.reports {
        if !matches!(report.outcome, Outcome::Written(_) | Outcome::UpToDate(_)) {
            continue;
        }
        let job = &report.job;
        let names = OutputNames::new(job, settings.preprocessing.output_resolution);
        let item = (|| -> Result<GroupItem, JobError> {
            let metadata = layout.metadata(&job.source)?;
            let site = site_of(
                layout,
                &job.source,
                &metadata,
                &settings.selection.site_column,
            )
            .map_err(|e| JobError::Harmonize(job.path.clone(), e.to_string()))?;
            let fingerprint = recorded_fingerprint(out, &names.native_t1w)
                .ok_or_else(|| JobError::MissingOutput(job.path.clone()))?;
            Ok(GroupItem {
                job: job.clone(),
                site,
                template: out.path(&names.template_t1w)?,
                mask: out.path(&names.template_mask)?,
                fingerprint,
            })
        })();
        match item {
            Ok(i) => items.push(i),
            Err(e) => {
                tracing::error!("{}: {e}", job.label());
                report.outcome = Outcome::Failed(e);
            }
        }
    }
    items
}

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
        return Err(group_err(
            ExitStatus::SomeFailed,
            "no image was preprocessed successfully; nothing to fit (see the errors above)".into(),
        ));
    }
    log_sites(&items);
    let images = fit_images(&items);
    let ctx = GroupContext {
        run: RunContext {
            settings,
            out,
            stop,
        },
        images: &images,
    };
    // Every method checks the cohort before any fits, so a refusal writes nothing.
    for method in &settings.harmonisation.methods {
        method.check_group(&ctx)?;
    }
    for method in &settings.harmonisation.methods {
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
