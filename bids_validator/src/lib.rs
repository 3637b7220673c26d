//! A BIDS validator driven by the official BIDS schema.
//!
//! The rules come from the embedded schema ([`schema`]): which file names exist (`rules.files`),
//! which sidecar and `dataset_description.json` fields are required or recommended
//! (`rules.sidecars`, `rules.dataset_metadata`), which TSV columns (`rules.tabular_data`), and the
//! dataset checks (`rules.checks`), whose selectors and checks are evaluated with the schema
//! expression language ([`expr`]). What the schema cannot say is written here: empty files,
//! unreadable NIfTI headers, JSON that does not parse, sidecars without a data file.
//! Issue codes are the official validator's.
//!
//! ```no_run
//! let report = bids_validator::validate(std::path::Path::new("/data/bids"), &Default::default()).unwrap();
//! for issue in report.errors() {
//!     eprintln!("{} {}: {}", issue.code, issue.location.as_deref().unwrap_or("/"), issue.message);
//! }
//! ```
//!
//! This file runs a dataset's validation; the pieces live in one file each: `report` (issues,
//! configuration, the report), `files` (the walk and bounded reads), `names` (file names and
//! folders), `dataset` (what every file's checks share, sidecar inheritance), `file` (the checks
//! of one file), `rules` (file-name and field rules), `columns` (table rules), `nifti` (headers).
#![deny(missing_docs)]

mod columns;
mod dataset;
pub mod expr;
mod file;
mod files;
mod names;
mod nifti;
mod report;
mod rules;
pub mod schema;

pub use report::{Config, Issue, IssueFilter, Options, Report, Severity, Summary, ValidatorError};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{Map, Value, json};

use dataset::DatasetInfo;
use files::{FileEntry, bidsignore, read_tsv, walk};
use names::{NameParts, invalid_dirs, name_parts};
use report::issue;
use schema::Schema;

/// Validates the dataset at `root`.
pub fn validate(root: &Path, options: &Options) -> Result<Report, ValidatorError> {
    validate_inner(root, options, &mut HashSet::new())
}

/// The derivative datasets nested in a dataset: `root/derivatives/<name>/` folders (not hidden)
/// that hold a `dataset_description.json`, sorted by name.
pub fn nested_derivatives(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join("derivatives")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            !hidden && p.is_dir() && p.join("dataset_description.json").is_file()
        })
        .collect();
    dirs.sort();
    dirs
}

/// `visited` holds the canonical roots already validated, so a `derivatives/x -> ..` link cannot
/// make `-r` recurse.
fn validate_inner(
    root: &Path,
    options: &Options,
    visited: &mut HashSet<PathBuf>,
) -> Result<Report, ValidatorError> {
    if !root.is_dir() {
        return Err(ValidatorError::NotADirectory(root.to_path_buf()));
    }
    visited.insert(std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()));
    let schema = Schema::embedded();
    let ignore = bidsignore(root);
    let files = walk(root, schema, &ignore);
    // Every file name is parsed once: sidecar lookups consult the same names for every data file.
    let names: Vec<NameParts> = files.iter().map(|f| name_parts(schema, &f.path)).collect();

    let (description, mut issues) = read_description(root);
    let is_derivative = description["DatasetType"] == "derivative";
    let facts = DatasetFacts::of(&files, &names);
    issues.extend(missing_sessions(&files));
    let dataset = dataset_context(schema, root, description, &facts);
    let info = DatasetInfo::new(schema, root, files, names, dataset, is_derivative);

    let per_file: Vec<(Vec<Issue>, Vec<String>)> = info
        .files
        .par_iter()
        .zip(info.names.par_iter())
        .map(|(entry, parts)| file::validate_file(&info, entry, parts, options))
        .collect();
    let mut used_sidecars = HashSet::new();
    for (file_issues, used) in per_file {
        issues.extend(file_issues);
        used_sidecars.extend(used);
    }
    issues.extend(orphan_sidecars(&info, &used_sidecars));
    for i in &mut issues {
        options.config.apply(i);
    }
    issues.sort_by(|a, b| {
        (a.location.as_deref(), &a.code, &a.sub_code).cmp(&(
            b.location.as_deref(),
            &b.code,
            &b.sub_code,
        ))
    });
    issues
        .dedup_by(|a, b| a.location == b.location && a.code == b.code && a.sub_code == b.sub_code);

    let mut derivatives = Vec::new();
    if options.recursive {
        for d in nested_derivatives(root) {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let canonical = std::fs::canonicalize(&d).unwrap_or_else(|_| d.clone());
            if visited.contains(&canonical) {
                continue;
            }
            let rep = validate_inner(&d, options, visited)?;
            derivatives.push((format!("/derivatives/{name}/"), rep));
        }
    }
    let summary = Summary {
        total_files: info.files.len(),
        subjects: facts
            .subjects
            .iter()
            .map(|s| s.trim_start_matches("sub-").to_string())
            .collect(),
        sessions: facts.sessions.into_iter().collect(),
        datatypes: facts.datatypes.into_iter().collect(),
        data_processed: is_derivative,
        schema_version: schema.schema_version().to_string(),
    };
    Ok(Report {
        issues,
        summary,
        derivatives,
    })
}

/// `dataset_description.json` (an empty object when it is missing or not a JSON object, with the
/// issue saying so). As the reference: without DatasetType, a GeneratedBy field marks a
/// derivative dataset.
fn read_description(root: &Path) -> (Value, Vec<Issue>) {
    let mut issues = Vec::new();
    let mut description = match files::read_text(&root.join("dataset_description.json")) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) | Err(_) => {
                issues.push(issue(
                    "JSON_INVALID",
                    Severity::Error,
                    Some("/dataset_description.json"),
                    "Not a valid JSON object.".into(),
                    "Fix the JSON syntax (e.g. `python -m json.tool dataset_description.json`).",
                ));
                Value::Object(Map::new())
            }
        },
        Err(_) => {
            issues.push(issue(
                "MISSING_DATASET_DESCRIPTION",
                Severity::Error,
                None,
                "A dataset_description.json file is required in the root of the dataset.".into(),
                "Add dataset_description.json with at least Name and BIDSVersion.",
            ));
            Value::Object(Map::new())
        }
    };
    if description.get("DatasetType").is_none() && description.get("GeneratedBy").is_some() {
        description["DatasetType"] = json!("derivative");
    }
    (description, issues)
}

/// The subjects (`sub-<label>` folders holding files), sessions and datatypes found.
struct DatasetFacts {
    subjects: BTreeSet<String>,
    sessions: BTreeSet<String>,
    datatypes: BTreeSet<String>,
}

impl DatasetFacts {
    fn of(files: &[FileEntry], names: &[NameParts]) -> DatasetFacts {
        let mut facts = DatasetFacts {
            subjects: BTreeSet::new(),
            sessions: BTreeSet::new(),
            datatypes: BTreeSet::new(),
        };
        for (f, p) in files.iter().zip(names) {
            let mut dirs = f.path.trim_start_matches('/').split('/');
            if let (Some(s), Some(_)) = (dirs.next(), f.path.matches('/').nth(1))
                && s.starts_with("sub-")
            {
                facts.subjects.insert(s.to_string());
            }
            if let Some(dt) = &p.datatype {
                facts.datatypes.insert(dt.clone());
            }
            if let Some((_, ses)) = p.entities.iter().find(|(e, _)| e == "session") {
                facts.sessions.insert(ses.clone());
            }
        }
        facts
    }
}

/// Subjects missing a session others have (the legacy validator's MISSING_SESSION warning):
/// the schema has no rule for it, and BIDS-Apps that pair sessions need to hear it.
fn missing_sessions(files: &[FileEntry]) -> Vec<Issue> {
    let mut sessions_of: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for f in files {
        let mut segs = f.path.trim_start_matches('/').split('/');
        if let (Some(sub), Some(ses), Some(_)) = (segs.next(), segs.next(), segs.next())
            && sub.starts_with("sub-")
        {
            let entry = sessions_of.entry(sub).or_default();
            if ses.starts_with("ses-") {
                entry.insert(ses);
            }
        }
    }
    let all_sessions: BTreeSet<&str> = sessions_of.values().flatten().copied().collect();
    let mut issues = Vec::new();
    if all_sessions.is_empty() {
        return issues;
    }
    let mut subs: Vec<_> = sessions_of.iter().collect();
    subs.sort();
    // Subjects without any session folder are a legal mix (sessions are optional per subject).
    for (sub, have) in subs.into_iter().filter(|(_, have)| !have.is_empty()) {
        for missing in all_sessions.difference(have) {
            issues.push(issue(
                "MISSING_SESSION",
                Severity::Warning,
                Some(&format!("/{sub}/")),
                format!("{sub} has no {missing} folder, which other subjects have."),
                "Check that the session was not lost in transfer; if it was never acquired, this is fine.",
            ));
        }
    }
    issues
}

/// The `dataset` object of the schema's expressions.
fn dataset_context(
    schema: &Schema,
    root: &Path,
    description: Value,
    facts: &DatasetFacts,
) -> Value {
    let modalities: BTreeSet<String> = facts
        .datatypes
        .iter()
        .filter_map(|d| schema.modality_of.get(d).cloned())
        .collect();
    let participant_ids = read_tsv(&root.join("participants.tsv"))
        .ok()
        .and_then(|t| t.columns.get("participant_id").cloned())
        .unwrap_or(Value::Null);
    json!({
        "dataset_description": description,
        "datatypes": facts.datatypes,
        "modalities": modalities,
        "subjects": {"sub_dirs": facts.subjects, "participant_id": participant_ids, "phenotype": Value::Null},
        "tree": {},
        "ignored": [],
    })
}

/// A JSON that no data file inherits from is an orphan (the reference's rule: what matters is
/// use, not a data file with the same stem), except the standalone files
/// (`dataset_description.json`, `genetic_info.json`) and JSON-only data (`*_coordsystem.json`).
fn orphan_sidecars(info: &DatasetInfo, used_sidecars: &HashSet<String>) -> Vec<Issue> {
    info.files
        .iter()
        .zip(&info.names)
        .filter(|(f, _)| f.path.ends_with(".json") && !used_sidecars.contains(&f.path))
        .filter(|(f, parts)| {
            let standalone =
                ["/dataset_description.json", "/genetic_info.json"].contains(&f.path.as_str());
            let json_only = parts
                .suffix
                .as_ref()
                .is_some_and(|s| info.schema.json_only_suffixes.contains(s));
            !standalone
                && !json_only
                && invalid_dirs(info.schema, &f.path, info.is_derivative).is_empty()
        })
        .map(|(f, _)| {
            issue(
                "SIDECAR_WITHOUT_DATAFILE",
                Severity::Error,
                Some(&f.path),
                "A JSON sidecar was found without a corresponding data file.".into(),
                "Remove the sidecar or add the data file it describes.",
            )
        })
        .collect()
}
