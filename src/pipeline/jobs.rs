//! The job list: one job per selected T1w image, from the participant/session labels, the BIDS
//! filter file and the dataset index.

use std::path::PathBuf;

use crate::bids::{BidsFile, Entity, Filter, Layout, Query, t1w_query};
use crate::settings::Selection;

use super::PipelineError;

/// One T1w image to process.
#[derive(Debug, Clone)]
pub struct Job {
    /// The indexed source file.
    pub source: BidsFile,
    /// Its absolute path.
    pub path: PathBuf,
    /// Another selected input that maps to the same output name (this job then fails instead of
    /// overwriting it).
    pub duplicate_of: Option<String>,
}

impl Job {
    /// Subject label (without `sub-`).
    pub fn subject(&self) -> &str {
        self.source.entity(Entity::Subject).unwrap_or_default()
    }

    /// `sub-01 sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz`-style label for logs.
    pub fn label(&self) -> String {
        format!("sub-{} {}", self.subject(), self.source.rel_path())
    }
}

/// In an sMRIPrep/fMRIPrep dataset given as BIDS_DIR, preprocessed T1w images already in an MNI152
/// space (`space-MNI152…_desc-preproc_T1w`) for acquisitions that have no native-space one: they
/// are used as they are, with an identity registration. `native_query` is the selection's query
/// (which excludes `space-`); the same filters apply, with `space-` allowed.
fn template_space_inputs<'a>(
    layout: &'a Layout,
    native_query: &Query,
    native: &[&'a BidsFile],
) -> Vec<&'a BidsFile> {
    let key = |f: &BidsFile| -> Vec<(Entity, String)> {
        f.entities()
            .iter()
            .filter(|(e, _)| !matches!(e, Entity::Space | Entity::Resolution | Entity::Cohort))
            .cloned()
            .collect()
    };
    let native_keys: Vec<_> = native.iter().map(|f| key(f)).collect();
    let relaxed = native_query
        .clone()
        .dropping(crate::bids::Field::Entity(Entity::Space));
    let mut seen = Vec::new();
    layout
        .get(&relaxed)
        .into_iter()
        .filter(|f| {
            f.entity(Entity::Space)
                .is_some_and(|s| s.starts_with("MNI152"))
        })
        .filter(|f| {
            let k = key(f);
            let fresh = !native_keys.contains(&k) && !seen.contains(&k);
            if fresh {
                seen.push(k);
            }
            fresh
        })
        .collect()
}

/// Selects the T1w images to process. Requested labels that do not exist, and selections that
/// match no T1w image, are errors (exit 18) that say what is available.
// One piece: the selection is a single pass over the index whose filters (labels, sessions,
// the filter file, duplicates) share the counts its 'selected nothing' message reports.
pub fn select_jobs(layout: &Layout, selection: &Selection) -> Result<Vec<Job>, PipelineError> {
    let root = layout.root().display();
    let subjects = layout.subjects();
    if subjects.is_empty() {
        return Err(PipelineError::Invalid(format!(
            "{root}: no sub-* folders; is BIDS_DIR the root of a BIDS dataset?"
        )));
    }
    let missing: Vec<&String> = selection
        .participants
        .iter()
        .filter(|p| !subjects.contains(p))
        .collect();
    if !missing.is_empty() {
        return Err(PipelineError::NothingSelected(format!(
            "{root}: --participant-label {} not found; choose from: {}",
            missing
                .iter()
                .map(|m| format!("sub-{m}"))
                .collect::<Vec<_>>()
                .join(" "),
            preview(&subjects, "sub-")
        )));
    }
    if let Some(t) = layout.participants() {
        let listed: Vec<&str> = t.keys().collect();
        let unlisted: Vec<String> = subjects
            .iter()
            .filter(|s| !listed.contains(&format!("sub-{s}").as_str()))
            .cloned()
            .collect();
        if !unlisted.is_empty() {
            tracing::warn!(
                "{}: {} subject folder(s) not listed: {}",
                t.path().display(),
                unlisted.len(),
                preview(&unlisted, "sub-")
            );
        }
    }
    let mut query = t1w_query(layout);
    if let Some(user) = &selection.t1w_filter {
        query = query.merged(user);
    }
    if !selection.participants.is_empty() {
        query = query.entity(Entity::Subject, &selection.participants);
    }
    if !selection.sessions.is_empty() {
        let sessions = layout.sessions();
        let unknown: Vec<&String> = selection
            .sessions
            .iter()
            .filter(|s| !sessions.contains(s))
            .collect();
        if !unknown.is_empty() {
            return Err(PipelineError::NothingSelected(format!(
                "{root}: --session-label {} not found; choose from: {}",
                unknown
                    .iter()
                    .map(|m| format!("ses-{m}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                if sessions.is_empty() {
                    "none (the dataset has no sessions)".into()
                } else {
                    preview(&sessions, "ses-")
                }
            )));
        }
        query = query.with(
            crate::bids::Field::Entity(Entity::Session),
            Filter::OneOf(selection.sessions.clone()),
        );
    }
    let mut found = layout.get(&query);
    if layout.is_derivative() {
        found.extend(template_space_inputs(layout, &query, &found));
    }
    let (files, malformed): (Vec<_>, Vec<_>) = found.into_iter().partition(|f| f.is_valid_name());
    for f in malformed {
        tracing::warn!(
            "{}: not a valid BIDS file name (entities are key-value with letters and digits only); skipped, rename it to use it",
            layout.path_of(f).display()
        );
    }
    if files.is_empty() {
        return Err(PipelineError::NothingSelected(format!(
            "{root}: no T1w image matches the selection ({}); check the labels and --bids-filter-file",
            describe(&query)
        )));
    }
    let selected: Vec<&str> = files
        .iter()
        .filter_map(|f| f.entity(Entity::Subject))
        .collect();
    let wanted = if selection.participants.is_empty() {
        &subjects
    } else {
        &selection.participants
    };
    for s in wanted {
        if !selected.contains(&s.as_str()) {
            tracing::warn!("sub-{s}: no T1w image matches the selection; skipped");
        }
    }
    let mut owners: std::collections::HashMap<PathBuf, String> = std::collections::HashMap::new();
    let mut jobs = Vec::with_capacity(files.len());
    for f in files {
        let mut job = Job {
            path: layout.path_of(f),
            source: f.clone(),
            duplicate_of: None,
        };
        if let Ok(out) = super::preproc_name(&job).rel_path() {
            match owners.get(&out) {
                Some(first) => job.duplicate_of = Some(first.clone()),
                None => {
                    owners.insert(out, f.rel_path().to_string());
                }
            }
        }
        jobs.push(job);
    }
    Ok(jobs)
}

fn preview(labels: &[String], prefix: &str) -> String {
    let mut s: Vec<String> = labels
        .iter()
        .take(10)
        .map(|l| format!("{prefix}{l}"))
        .collect();
    if labels.len() > 10 {
        s.push(format!("… ({} in all)", labels.len()));
    }
    s.join(" ")
}

fn describe(q: &Query) -> String {
    q.conditions()
        .iter()
        .map(|(f, v)| {
            let field = match f {
                crate::bids::Field::Entity(e) => e.name().to_string(),
                other => format!("{other:?}").to_lowercase(),
            };
            let value = match v {
                Filter::Any => "any".to_string(),
                Filter::Absent => "none".to_string(),
                Filter::OneOf(v) => v.join("|"),
            };
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
