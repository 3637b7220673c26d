//! The preprocessed images a group run works with ([`GroupItem`]): each succeeded job's
//! template-space image and mask, its site and its preprocessing fingerprint.

use std::path::PathBuf;

use crate::bids::Layout;
use crate::bids::sites::{Site, site_of};
use crate::derivatives::DerivativesDataset;
use crate::settings::Settings;

use super::outputs::OutputNames;
use super::participant::{JobError, recorded_fingerprint};
use super::{Job, Outcome, RunSummary};

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
