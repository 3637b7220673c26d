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
#![deny(missing_docs)]

pub mod expr;
mod nifti;
pub mod schema;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value, json};

use expr::{Context, eval, truthy};
use schema::{FieldRule, FileRule, Schema};

/// How serious an issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The dataset is not valid BIDS.
    Error,
    /// Valid, but something recommended is missing or odd.
    Warning,
    /// Silenced by the configuration.
    Ignore,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// The official validator's code (`NOT_INCLUDED`, `SIDECAR_KEY_REQUIRED`, ...).
    pub code: String,
    /// The field or column concerned, when there is one.
    #[serde(rename = "subCode", skip_serializing_if = "Option::is_none")]
    pub sub_code: Option<String>,
    /// Severity after configuration.
    pub severity: Severity,
    /// The file, as a path from the dataset root (`/sub-01/anat/sub-01_T1w.nii.gz`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// What is wrong.
    #[serde(rename = "issueMessage")]
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// Which issues to silence or re-level (the format of `.bids-validator-config.json`:
/// `{"ignore": [{"code": "EMPTY_FILE"}], "warning": [...], "error": [...]}`; a filter may also
/// give `location`, matched as a prefix of the issue's location).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct Config {
    /// Issues to silence.
    #[serde(default)]
    pub ignore: Vec<IssueFilter>,
    /// Issues to report as warnings.
    #[serde(default)]
    pub warning: Vec<IssueFilter>,
    /// Issues to report as errors.
    #[serde(default)]
    pub error: Vec<IssueFilter>,
}

/// Selects issues by code, subCode and/or location. A location starting with `/` matches as a
/// prefix (`/sub-01/`); otherwise it is a glob against the path without its leading slash
/// (`sub-01/**`, `**/*_bold.json`), as in the reference's configuration files.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueFilter {
    /// Issue code.
    pub code: Option<String>,
    /// Issue subCode (a field or column name).
    #[serde(rename = "subCode")]
    pub sub_code: Option<String>,
    /// Location prefix or glob.
    pub location: Option<String>,
    /// Severity the filter applies to (`error`, `warning`).
    pub severity: Option<Severity>,
}

impl IssueFilter {
    fn matches(&self, i: &Issue) -> bool {
        let location_ok = match (&self.location, i.location.as_deref()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(l), Some(loc)) if l.starts_with('/') => loc.starts_with(l.as_str()),
            (Some(l), Some(loc)) => globset::Glob::new(l)
                .map(|g| g.compile_matcher().is_match(loc.trim_start_matches('/')))
                .unwrap_or(false),
        };
        location_ok
            && self.code.as_ref().is_none_or(|c| *c == i.code)
            && self
                .sub_code
                .as_ref()
                .is_none_or(|c| i.sub_code.as_ref() == Some(c))
            && self.severity.is_none_or(|s| s == i.severity)
    }
}

impl Config {
    /// Reads a configuration file.
    pub fn read(path: &Path) -> Result<Config, ValidatorError> {
        let text = std::fs::read_to_string(path).map_err(|e| ValidatorError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| ValidatorError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Applies the filters in the reference's order: ignore, then warning, then error (the last
    /// matching list wins).
    fn apply(&self, issue: &mut Issue) {
        let original = issue.clone();
        if self.ignore.iter().any(|f| f.matches(&original)) {
            issue.severity = Severity::Ignore;
        }
        if self.warning.iter().any(|f| f.matches(&original)) {
            issue.severity = Severity::Warning;
        }
        if self.error.iter().any(|f| f.matches(&original)) {
            issue.severity = Severity::Error;
        }
    }
}

/// Validation options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also validate each dataset under `derivatives/` (like `bids-validator-deno -r`).
    pub recursive: bool,
    /// Do not read NIfTI headers.
    pub ignore_nifti_headers: bool,
    /// Issue configuration.
    pub config: Config,
}

/// Why validation could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidatorError {
    /// The dataset folder does not exist.
    #[error("{0}: not a directory; give the root of a BIDS dataset")]
    NotADirectory(PathBuf),
    /// The configuration file is unusable.
    #[error("{path}: invalid validator configuration: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The result of validating one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every issue found (including silenced ones, with severity `ignore`).
    pub issues: Vec<Issue>,
    /// Counts and facts.
    pub summary: Summary,
    /// Reports of nested derivative datasets (`-r`), keyed by `/derivatives/<name>/`.
    #[serde(rename = "derivativesSummary", skip_serializing_if = "Vec::is_empty")]
    pub derivatives: Vec<(String, Report)>,
}

/// Dataset facts.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Files validated.
    #[serde(rename = "totalFiles")]
    pub total_files: usize,
    /// Subject labels found.
    pub subjects: Vec<String>,
    /// Session labels found.
    pub sessions: Vec<String>,
    /// Datatypes found.
    pub datatypes: Vec<String>,
    /// True when the dataset is a derivative dataset.
    #[serde(rename = "dataProcessed")]
    pub data_processed: bool,
    /// Schema version used.
    #[serde(rename = "schemaVersion")]
    pub schema_version: String,
}

impl Report {
    /// Issues with severity error, in this dataset and (with `-r`) its derivatives.
    pub fn errors(&self) -> Vec<&Issue> {
        self.all()
            .filter(|i| i.severity == Severity::Error)
            .collect()
    }

    /// Issues with severity warning.
    pub fn warnings(&self) -> Vec<&Issue> {
        self.all()
            .filter(|i| i.severity == Severity::Warning)
            .collect()
    }

    fn all(&self) -> Box<dyn Iterator<Item = &Issue> + '_> {
        Box::new(
            self.issues
                .iter()
                .chain(self.derivatives.iter().flat_map(|(_, r)| r.all())),
        )
    }

    fn json_view(&self) -> JsonReport<'_> {
        JsonReport {
            issues: JsonIssues {
                issues: &self.issues,
            },
            summary: &self.summary,
            derivatives: self
                .derivatives
                .iter()
                .map(|(k, r)| (k.as_str(), r.json_view()))
                .collect(),
        }
    }

    /// The report as JSON, shaped like `bids-validator-deno --format json`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.json_view()).unwrap_or(Value::Null)
    }

    /// Writes the JSON report, streaming (no intermediate tree: large datasets have ~10^6 issues).
    pub fn write_json(&self, writer: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(writer, &self.json_view()).map_err(std::io::Error::other)
    }
}

/// Borrowed view of a report in the reference validator's JSON layout.
#[derive(Serialize)]
struct JsonReport<'a> {
    issues: JsonIssues<'a>,
    summary: &'a Summary,
    #[serde(
        rename = "derivativesSummary",
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    derivatives: std::collections::BTreeMap<&'a str, JsonReport<'a>>,
}

#[derive(Serialize)]
struct JsonIssues<'a> {
    issues: &'a [Issue],
}

/// One file of the dataset.
#[derive(Debug, Clone)]
struct FileEntry {
    /// `/sub-01/anat/sub-01_T1w.nii.gz`
    path: String,
    size: u64,
    dangling: bool,
}

/// A file name split into BIDS parts, with entity long names.
#[derive(Debug, Clone, Default)]
struct NameParts {
    entities: Vec<(String, String)>,
    unknown_entity: bool,
    suffix: Option<String>,
    extension: String,
    stem: String,
    datatype: Option<String>,
}

fn name_parts(schema: &Schema, path: &str) -> NameParts {
    let name = path.rsplit('/').next().unwrap_or(path);
    let (stem, extension) = match name.find('.') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    let mut parts = NameParts {
        stem: stem.to_string(),
        extension: extension.to_string(),
        ..Default::default()
    };
    let pieces: Vec<&str> = stem.split('_').collect();
    for (i, p) in pieces.iter().enumerate() {
        match p.split_once('-') {
            Some((k, v)) => match schema.entity_by_key.get(k) {
                Some(long) => parts.entities.push((long.clone(), v.to_string())),
                None => parts.unknown_entity = true,
            },
            None if i + 1 == pieces.len() => parts.suffix = Some(p.to_string()),
            None => parts.unknown_entity = true,
        }
    }
    let dirs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let dt = match dirs.as_slice() {
        [s, d, _] if s.starts_with("sub-") || s.starts_with("tpl-") => Some(*d),
        [s, ses, d, _]
            if (s.starts_with("sub-") || s.starts_with("tpl-"))
                && (ses.starts_with("ses-") || ses.starts_with("cohort-")) =>
        {
            Some(*d)
        }
        _ => None,
    };
    parts.datatype = dt
        .filter(|d| {
            schema.value()["objects"]["datatypes"]
                .as_object()
                .is_some_and(|m| m.contains_key(*d))
        })
        .map(str::to_string);
    parts
}

/// Everything known about the dataset, shared by every file's context.
struct DatasetInfo<'a> {
    schema: &'a Schema,
    root: PathBuf,
    files: Vec<FileEntry>,
    paths: HashSet<String>,

    /// Parsed names, parallel to `files`.
    names: Vec<NameParts>,
    json_by_dir: HashMap<String, Vec<usize>>,
    dataset: Value,
    is_derivative: bool,
}

/// The expression context of one file.
struct FileContext<'a> {
    info: &'a DatasetInfo<'a>,
    entry: &'a FileEntry,
    values: Map<String, Value>,
}

impl Context for FileContext<'_> {
    fn lookup(&self, name: &str) -> Option<&Value> {
        match name {
            "schema" => Some(self.info.schema.value()),
            "dataset" => Some(&self.info.dataset),
            other => self.values.get(other),
        }
    }

    fn exists(&self, paths: &[String], rule: &str) -> usize {
        let dir = self
            .entry
            .path
            .rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or("");
        let subject = self
            .entry
            .path
            .split('/')
            .nth(1)
            .filter(|s| s.starts_with("sub-"));
        paths
            .iter()
            .filter(|p| {
                let full = match rule {
                    "dataset" => format!("/{}", p.trim_start_matches('/')),
                    "subject" => match subject {
                        Some(s) => format!("/{s}/{}", p.trim_start_matches('/')),
                        None => return false,
                    },
                    "stimuli" => format!("/stimuli/{}", p.trim_start_matches('/')),
                    "file" => format!("{dir}/{p}"),
                    // As the reference: BIDS URIs count as present (other datasets cannot be
                    // resolved here, and the reference does not resolve its own either).
                    "bids-uri" => return p.starts_with("bids:"),
                    _ => return false,
                };
                self.info.paths.contains(&full)
                    || self.info.root.join(full.trim_start_matches('/')).exists()
            })
            .count()
    }
}

fn issue(
    code: &str,
    severity: Severity,
    location: Option<&str>,
    message: String,
    hint: &str,
) -> Issue {
    Issue {
        code: code.to_string(),
        sub_code: None,
        severity,
        location: location.map(str::to_string),
        message,
        hint: hint.to_string(),
    }
}

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
    let mut issues = Vec::new();
    let ignore = bidsignore(root);
    let files = walk(root, schema, &ignore);
    // Every file name is parsed once: sidecar lookups consult the same names for every data file.
    let names: Vec<NameParts> = files.iter().map(|f| name_parts(schema, &f.path)).collect();
    let paths: HashSet<String> = files.iter().map(|f| f.path.clone()).collect();
    let mut json_by_dir: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        if f.path.ends_with(".json") {
            let dir = f
                .path
                .rsplit_once('/')
                .map(|(d, _)| d.to_string())
                .unwrap_or_default();
            json_by_dir.entry(dir).or_default().push(i);
        }
    }

    let description_path = root.join("dataset_description.json");
    let description = match std::fs::read_to_string(&description_path) {
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
    // As the reference: without DatasetType, a GeneratedBy field marks a derivative dataset.
    let mut description = description;
    if description.get("DatasetType").is_none() && description.get("GeneratedBy").is_some() {
        description["DatasetType"] = json!("derivative");
    }
    let is_derivative = description["DatasetType"] == "derivative";

    // Dataset-level context.
    let mut subjects = BTreeSet::new();
    let mut sessions = BTreeSet::new();
    let mut datatypes = BTreeSet::new();
    for (f, p) in files.iter().zip(&names) {
        let mut dirs = f.path.trim_start_matches('/').split('/');
        if let (Some(s), Some(_)) = (dirs.next(), f.path.matches('/').nth(1))
            && s.starts_with("sub-")
        {
            subjects.insert(s.to_string());
        }
        if let Some(dt) = &p.datatype {
            datatypes.insert(dt.clone());
        }
        if let Some((_, ses)) = p.entities.iter().find(|(e, _)| e == "session") {
            sessions.insert(ses.clone());
        }
    }
    // Subjects missing a session others have (the legacy validator's MISSING_SESSION warning):
    // the schema has no rule for it, and BIDS-Apps that pair sessions need to hear it.
    let mut sessions_of: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for f in &files {
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
    if !all_sessions.is_empty() {
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
    }
    let modalities: BTreeSet<String> = datatypes
        .iter()
        .filter_map(|d| schema.modality_of.get(d).cloned())
        .collect();
    let participant_ids = read_tsv(&root.join("participants.tsv"))
        .ok()
        .and_then(|t| t.columns.get("participant_id").cloned())
        .unwrap_or(Value::Null);
    let dataset = json!({
        "dataset_description": description,
        "datatypes": datatypes,
        "modalities": modalities,
        "subjects": {"sub_dirs": subjects, "participant_id": participant_ids, "phenotype": Value::Null},
        "tree": {},
        "ignored": [],
    });

    let info = DatasetInfo {
        schema,
        root: root.to_path_buf(),
        paths,

        json_by_dir,
        dataset,
        is_derivative,
        files,
        names,
    };
    let per_file: Vec<(Vec<Issue>, Vec<String>)> = info
        .files
        .par_iter()
        .zip(info.names.par_iter())
        .map(|(entry, parts)| validate_file(&info, entry, parts, options))
        .collect();
    let mut used_sidecars = HashSet::new();
    for (file_issues, used) in per_file {
        issues.extend(file_issues);
        used_sidecars.extend(used);
    }
    // A JSON that no data file inherits from is an orphan (the reference's rule: what matters is
    // use, not a data file with the same stem).
    for (f, parts) in info
        .files
        .iter()
        .zip(&info.names)
        .filter(|(f, _)| f.path.ends_with(".json") && !used_sidecars.contains(&f.path))
    {
        // As the reference: every JSON no data file inherited from, except the standalone files
        // (`dataset_description.json`, `genetic_info.json`) and JSON-only data (`*_coordsystem.json`).
        let standalone =
            ["/dataset_description.json", "/genetic_info.json"].contains(&f.path.as_str());
        let json_only = parts
            .suffix
            .as_ref()
            .is_some_and(|s| schema.json_only_suffixes.contains(s));
        if !standalone && !json_only && invalid_dirs(schema, &f.path, is_derivative).is_empty() {
            issues.push(issue(
                "SIDECAR_WITHOUT_DATAFILE",
                Severity::Error,
                Some(&f.path),
                "A JSON sidecar was found without a corresponding data file.".into(),
                "Remove the sidecar or add the data file it describes.",
            ));
        }
    }
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
        subjects: subjects
            .iter()
            .map(|s| s.trim_start_matches("sub-").to_string())
            .collect(),
        sessions: sessions.into_iter().collect(),
        datatypes: datatypes.into_iter().collect(),
        data_processed: is_derivative,
        schema_version: schema.schema_version().to_string(),
    };
    Ok(Report {
        issues,
        summary,
        derivatives,
    })
}

fn bidsignore(root: &Path) -> Gitignore {
    let mut b = GitignoreBuilder::new(root);
    let p = root.join(".bidsignore");
    if p.is_file() {
        let _ = b.add(&p);
    }
    b.build().unwrap_or_else(|_| Gitignore::empty())
}

fn walk(root: &Path, schema: &Schema, ignore: &Gitignore) -> Vec<FileEntry> {
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 0 {
                return true;
            }
            let name = e.file_name().to_string_lossy();
            if name.starts_with('.') {
                return false;
            }
            if e.depth() == 1
                && e.file_type().is_dir()
                && schema.opaque_dirs.iter().any(|d| *d == name)
            {
                return false;
            }
            !ignore.matched(e.path(), e.file_type().is_dir()).is_ignore()
        });
    for entry in walker {
        let (path, size, dangling) = match entry {
            Ok(e) if e.file_type().is_dir() => continue,
            Ok(e) => {
                // FIFOs, sockets and devices are not data: reading them could block forever.
                let Ok(md) = e.metadata() else { continue };
                if !md.is_file() {
                    continue;
                }
                (e.path().to_path_buf(), md.len(), false)
            }
            Err(err) => {
                let Some(p) = err.path() else { continue };
                let is_link =
                    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !is_link || p.exists() || hidden || ignore.matched(p, false).is_ignore() {
                    continue;
                }
                (p.to_path_buf(), 0, true)
            }
        };
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let rel = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
        out.push(FileEntry {
            path: rel,
            size,
            dangling,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The error text of a file that is not UTF-8.
const NOT_UTF8: &str = "not UTF-8 text";

/// Largest JSON or TSV file read (larger ones are reported, not loaded).
const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Reads a small text file, refusing oversized ones.
fn read_text(path: &Path) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_TEXT_BYTES {
        return Err(format!(
            "file is {len} bytes, larger than the {MAX_TEXT_BYTES}-byte limit for metadata"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| NOT_UTF8.to_string())?;
    // Spreadsheet exports start with a byte-order mark; it is not part of the first header.
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

/// A parsed TSV: header, columns, and structural problems found on the way.
struct Tsv {
    header: Vec<String>,
    columns: Map<String, Value>,
    empty_line: Option<usize>,
}

/// Reads a TSV into column name → array of values (strings).
fn read_tsv(path: &Path) -> Result<Tsv, String> {
    let text = read_text(path)?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or("empty file")?
        .split('\t')
        .map(|s| s.trim().to_string())
        .collect();
    let mut cols: Vec<Vec<Value>> = vec![Vec::new(); header.len()];
    let mut empty_line = None;
    let mut pending_empty = None;
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            pending_empty.get_or_insert(n + 2);
            continue;
        }
        // Trailing blank lines are tolerated (as the reference); one followed by data is not.
        if let Some(e) = pending_empty.take() {
            empty_line.get_or_insert(e);
        }
        let cells: Vec<&str> = line.split('\t').collect();
        if cells.len() != header.len() {
            return Err(format!(
                "line {} has {} cells, the header has {}",
                n + 2,
                cells.len(),
                header.len()
            ));
        }
        for (c, v) in cols.iter_mut().zip(cells) {
            c.push(Value::String(v.trim().to_string()));
        }
    }
    let columns = header
        .iter()
        .cloned()
        .zip(cols)
        .map(|(h, c)| (h, Value::Array(c)))
        .collect();
    Ok(Tsv {
        header,
        columns,
        empty_line,
    })
}

/// Marker in a sidecar's origin map: several sidecars at one level applied and none matched the
/// file exactly (reported as `MULTIPLE_INHERITABLE_FILES`).
const AMBIGUOUS_SIDECARS: &str = "\u{0}ambiguous";

/// The inherited sidecar of a data file: per folder level from the root down, the `.json` with the
/// same suffix whose entities are a subset of the file's (deeper levels override).
fn sidecar(
    info: &DatasetInfo,
    path: &str,
    parts: &NameParts,
) -> (Map<String, Value>, HashMap<String, String>, Vec<String>) {
    let mut merged = Map::new();
    let mut origin = HashMap::new();
    let Some(suffix) = &parts.suffix else {
        return (merged, origin, Vec::new());
    };
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mut dirs = vec![String::new()];
    let mut acc = String::new();
    for seg in dir.split('/').filter(|s| !s.is_empty()) {
        acc.push('/');
        acc.push_str(seg);
        dirs.push(acc.clone());
    }
    let mut candidates: Vec<(usize, usize, &str)> = Vec::new();
    for (depth, d) in dirs.iter().enumerate() {
        for &i in info.json_by_dir.get(d).map(Vec::as_slice).unwrap_or(&[]) {
            let j = &info.files[i];
            if j.path == path {
                continue;
            }
            let jp = &info.names[i];
            if jp.suffix.as_ref() != Some(suffix) || jp.unknown_entity {
                continue;
            }
            if jp.entities.iter().all(|e| parts.entities.contains(e)) {
                candidates.push((depth, jp.entities.len(), &j.path));
            }
        }
    }
    candidates.sort();
    // As the reference: at each folder level one sidecar applies. Several candidates at one level
    // resolve to the one with exactly the file's entities; without one the metadata is ambiguous.
    let mut chosen: Vec<(usize, usize, &str)> = Vec::new();
    let mut ambiguous: Option<&str> = None;
    for depth in 0..dirs.len() {
        let level: Vec<_> = candidates
            .iter()
            .filter(|c| c.0 == depth)
            .copied()
            .collect();
        match level.as_slice() {
            [] => {}
            [one] => chosen.push(*one),
            many => match many.iter().find(|c| c.1 == parts.entities.len()) {
                Some(exact) => chosen.push(*exact),
                None => ambiguous = ambiguous.or(Some(many[0].2)),
            },
        }
    }
    let used: Vec<String> = chosen.iter().map(|(_, _, p)| p.to_string()).collect();
    if let Some(first) = ambiguous {
        origin.insert(AMBIGUOUS_SIDECARS.to_string(), first.to_string());
    }
    for (_, _, p) in chosen {
        if let Ok(Value::Object(m)) = read_text(&info.root.join(p.trim_start_matches('/')))
            .map_err(|_| ())
            .and_then(|t| serde_json::from_str(&t).map_err(|_| ()))
        {
            for (k, v) in m {
                origin.insert(k.clone(), p.to_string());
                merged.insert(k, v);
            }
        }
    }
    (merged, origin, used)
}

fn rule_matches(
    rule: &FileRule,
    path: &str,
    parts: &NameParts,
    ctx: &FileContext,
    ignore_datatype: bool,
    ignore_required: bool,
) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let depth = path.matches('/').count();
    if let Some(p) = &rule.path {
        return path.trim_start_matches('/') == p;
    }
    if !rule.selectors.iter().all(|s| truthy(&eval(s, ctx))) {
        return false;
    }
    if let Some(stem) = &rule.stem {
        let in_place = if rule.datatypes.is_empty() {
            depth == 1
        } else {
            rule.datatypes
                .iter()
                .any(|d| path.starts_with(&format!("/{d}/")) && depth == 2)
        };
        let stem_ok = stem == "*" || name.split('.').next() == Some(stem.as_str());
        return in_place && stem_ok && rule.extensions.contains(&parts.extension);
    }
    let Some(suffix) = &parts.suffix else {
        return false;
    };
    if parts.unknown_entity
        || !rule.suffixes.contains(suffix)
        || !rule.extensions.contains(&parts.extension)
    {
        return false;
    }
    // Sidecars above the datatype folder (inheritance principle) have no datatype and may omit
    // subject/session.
    let inherited_sidecar = [".json", ".tsv", ".bval", ".bvec"].contains(&parts.extension.as_str())
        && parts.datatype.is_none();
    // Files at the root (inheritance-level metadata such as `/bold.json`) need no entity at all.
    let at_root = depth == 1;
    if !rule.datatypes.is_empty() && !inherited_sidecar && !ignore_datatype {
        match &parts.datatype {
            Some(d) if rule.datatypes.contains(d) => {}
            _ => return false,
        }
    }
    for (e, _) in &parts.entities {
        if !rule.entities.iter().any(|(r, _)| r == e) {
            return false;
        }
    }
    rule.entities
        .iter()
        .filter(|(_, required)| *required)
        .all(|(e, _)| {
            parts.entities.iter().any(|(x, _)| x == e)
                            || (inherited_sidecar && (at_root || e == "subject" || e == "session"))
                        // Derivative datasets are not held to raw required entities (as the reference).
            || ignore_required
            || ctx.info.is_derivative
        })
}

fn field_level_issue(
    rule: &FieldRule,
    present: &Map<String, Value>,
    location: &str,
    kind: &str,
) -> Vec<Issue> {
    let mut out = Vec::new();
    for (field, level, _) in &rule.fields {
        if present.contains_key(field) {
            continue;
        }
        let (code, severity) = match level.as_str() {
            "required" => (format!("{kind}_KEY_REQUIRED"), Severity::Error),
            "recommended" => (format!("{kind}_KEY_RECOMMENDED"), Severity::Warning),
            _ => continue,
        };
        let mut i = issue(
            &code,
            severity,
            Some(location),
            format!(
                "{} field '{field}' is missing.",
                if severity == Severity::Error {
                    "A required"
                } else {
                    "A recommended"
                }
            ),
            &format!("Add \"{field}\" to the JSON (rule {}).", rule.name),
        );
        i.sub_code = Some(field.clone());
        out.push(i);
    }
    out
}

/// Type-checks present metadata values against their schema definitions.
fn check_types(
    schema: &Schema,
    fields: &Map<String, Value>,
    rule: &FieldRule,
    location: &str,
) -> Vec<Issue> {
    let mut out = Vec::new();
    for (field, _, key) in &rule.fields {
        let (Some(v), Some(def)) = (fields.get(field), schema.metadata_definition(key)) else {
            continue;
        };
        if !conforms(v, def) {
            let mut i = issue(
                "JSON_SCHEMA_VALIDATION_ERROR",
                Severity::Error,
                Some(location),
                format!(
                    "'{field}' has a value of the wrong type or outside the allowed values: {v}"
                ),
                &format!("See the definition of {field} in the BIDS specification."),
            );
            i.sub_code = Some(field.clone());
            out.push(i);
        }
    }
    out
}

/// Checks a table against a tabular rule: required columns (`TSV_COLUMN_MISSING`), the order of
/// the initial columns (`TSV_COLUMN_ORDER_INCORRECT`), unique index values
/// (`TSV_INDEX_VALUE_NOT_UNIQUE`), values against the column definitions (`TSV_VALUE_INCORRECT_TYPE`,
/// first bad value per column; a definition in the table's JSON sidecar replaces the schema's, so
/// such columns are not checked against the schema), and extra columns nobody describes
/// (`TSV_ADDITIONAL_COLUMNS_UNDEFINED`, a warning).
fn check_columns(
    info: &DatasetInfo,
    rule: &FieldRule,
    cols: &Map<String, Value>,
    header: &[String],
    loc: &str,
) -> Vec<Issue> {
    let schema = info.schema;
    let mut out = Vec::new();
    let with_sub = |mut i: Issue, sub: &str| {
        i.sub_code = Some(sub.to_string());
        i
    };
    for (col, level, _) in &rule.fields {
        if level == "required" && !cols.contains_key(col) {
            out.push(with_sub(
                issue(
                    "TSV_COLUMN_MISSING",
                    Severity::Error,
                    Some(loc),
                    format!("A required column '{col}' is missing."),
                    &format!("Add the column '{col}' (rule {}).", rule.name),
                ),
                col,
            ));
        }
    }
    for (pos, want) in rule.initial_columns.iter().enumerate() {
        if cols.contains_key(want) && header.get(pos) != Some(want) {
            out.push(with_sub(
                issue(
                    "TSV_COLUMN_ORDER_INCORRECT",
                    Severity::Error,
                    Some(loc),
                    format!("Column '{want}' must be column {} of the table.", pos + 1),
                    "Reorder the columns.",
                ),
                want,
            ));
        }
    }
    for col in &rule.index_columns {
        if let Some(Value::Array(values)) = cols.get(col) {
            let mut seen = HashSet::new();
            if let Some(dup) = values
                .iter()
                .filter_map(Value::as_str)
                .find(|v| !seen.insert(*v))
            {
                out.push(with_sub(
                    issue(
                        "TSV_INDEX_VALUE_NOT_UNIQUE",
                        Severity::Error,
                        Some(loc),
                        format!("'{dup}' appears more than once in the index column '{col}'."),
                        "Keep one row per index value.",
                    ),
                    col,
                ));
            }
        }
    }
    let sidecar_path = info
        .root
        .join(loc.trim_start_matches('/'))
        .with_extension("json");
    let defined: Map<String, Value> = read_text(&sidecar_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    for (name, _, key) in &rule.fields {
        let (Some(Value::Array(values)), Some(def)) = (
            cols.get(name),
            schema.value()["objects"]["columns"].get(key),
        ) else {
            continue;
        };
        if defined.contains_key(name) {
            continue;
        }
        // Columns are defined either JSON-schema style (`type`, `pattern`) or sidecar style
        // (`definition.Format`, `Minimum`, `Maximum`).
        let sidecar_style = &def["definition"];
        let format = def["type"]
            .as_str()
            .or_else(|| sidecar_style["Format"].as_str());
        let numeric = matches!(format, Some("number") | Some("integer"));
        let pattern = def["pattern"].as_str();
        let (min, max) = (
            sidecar_style["Minimum"].as_f64(),
            sidecar_style["Maximum"].as_f64(),
        );
        let mut pseudo_age = false;
        let bad = values.iter().enumerate().find(|(_, v)| {
            let Some(text) = v.as_str() else { return false };
            if text == "n/a" {
                return false;
            }
            if name == "age" && text == "89+" {
                pseudo_age = true;
                return false;
            }
            let value = if numeric {
                match text.parse::<f64>() {
                    Ok(x) if x.is_finite() => serde_json::Number::from_f64(x)
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                    _ => return true,
                }
            } else {
                Value::String(text.to_string())
            };
            let out_of_range = value.as_f64().is_some_and(|x| {
                min.is_some_and(|m| x < m)
                    || max.is_some_and(|m| x > m)
                    || (format == Some("integer") && x.fract() != 0.0)
            });
            out_of_range
                || !conforms(&value, def)
                || pattern.is_some_and(|p| !expr::regex_match(&format!("^(?:{p})$"), text))
        });
        if pseudo_age {
            out.push(with_sub(
                issue(
                    "TSV_PSEUDO_AGE_DEPRECATED",
                    Severity::Warning,
                    Some(loc),
                    "The age '89+' is deprecated.".into(),
                    "Write 89 for ages of 89 and above.",
                ),
                name,
            ));
        }
        if let Some((row, v)) = bad {
            out.push(with_sub(
                issue(
                    "TSV_VALUE_INCORRECT_TYPE",
                    Severity::Error,
                    Some(loc),
                    format!("Value {v} in column '{name}' (line {}) does not match the column's definition.", row + 2),
                    &format!(
                        "See the definition of the '{name}' column in the BIDS specification (or define it in the table's JSON sidecar); write n/a for unknown values."
                    ),
                ),
                name,
            ));
        }
    }
    // Extra columns are fine where allowed, but should be described (a warning, as the reference).
    if matches!(
        rule.additional_columns.as_deref(),
        Some("allowed") | Some("allowed_if_defined")
    ) {
        for col in cols.keys() {
            if !rule.fields.iter().any(|(n, _, _)| n == col) && !defined.contains_key(col) {
                out.push(with_sub(
                    issue(
                        "TSV_ADDITIONAL_COLUMNS_UNDEFINED",
                        Severity::Warning,
                        Some(loc),
                        format!(
                            "Column '{col}' is not defined by BIDS or in the table's JSON sidecar."
                        ),
                        "Describe the column in the .json file next to the table.",
                    ),
                    col,
                ));
            }
        }
    }
    out
}

/// A small JSON-schema check: `type`, `enum`, `anyOf`, `items`, `minimum`/`maximum`.
fn conforms(v: &Value, def: &Value) -> bool {
    if let Some(any) = def["anyOf"].as_array() {
        return any.iter().any(|d| conforms(v, d));
    }
    if let Some(options) = def["enum"].as_array()
        && !options.contains(v)
    {
        return false;
    }
    let type_ok = match def["type"].as_str() {
        Some("string") => v.is_string(),
        Some("number") => v.is_number(),
        Some("integer") => v.as_f64().is_some_and(|x| x.fract() == 0.0),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("object") => v.is_object(),
        Some("null") => v.is_null(),
        _ => true,
    };
    if !type_ok {
        return false;
    }
    if let (Some(x), Some(min)) = (v.as_f64(), def["minimum"].as_f64())
        && x < min
    {
        return false;
    }
    if let (Some(x), Some(max)) = (v.as_f64(), def["maximum"].as_f64())
        && x > max
    {
        return false;
    }
    if let (Some(items), Some(d)) = (v.as_array(), def.get("items"))
        && d.is_object()
        && !items.iter().all(|x| conforms(x, d))
    {
        return false;
    }
    true
}

/// `INVALID_LOCATION` (a file whose `sub`/`ses` entities disagree with its folders, so its data
/// would be attributed to another subject) and `FILENAME_MISMATCH` (entities out of the
/// specification's order), as the reference checks them.
fn location_and_order(schema: &Schema, path: &str, parts: &NameParts) -> Vec<Issue> {
    let mut out = Vec::new();
    let value = |long: &str| {
        parts
            .entities
            .iter()
            .find(|(e, _)| e == long)
            .map(|(_, v)| v.as_str())
    };
    for (top, sub) in [("subject", "session"), ("template", "cohort")] {
        let (tk, sk) = (
            schema
                .entity_info
                .get(top)
                .map(|x| x.0.as_str())
                .unwrap_or(top),
            schema
                .entity_info
                .get(sub)
                .map(|x| x.0.as_str())
                .unwrap_or(sub),
        );
        let Some(tv) = value(top) else { continue };
        let mut expected = format!("/{tk}-{tv}/");
        if let Some(sv) = value(sub) {
            expected.push_str(&format!("{sk}-{sv}/"));
        }
        let misplaced = !path.starts_with(&expected)
            || (value(sub).is_none() && path.contains(&format!("/{sk}-")));
        if misplaced {
            out.push(issue(
                "INVALID_LOCATION",
                Severity::Error,
                Some(path),
                format!("The file's entities say it belongs under {expected}."),
                "Move the file to the folder its sub-/ses- entities name, or fix its name.",
            ));
        }
    }
    let mut ordered: Vec<&(String, String)> = parts.entities.iter().collect();
    let rank = |e: &str| {
        schema
            .entity_order
            .iter()
            .position(|x| x == e)
            .unwrap_or(usize::MAX)
    };
    ordered.sort_by_key(|(e, _)| rank(e));
    let duplicated = {
        let mut seen = HashSet::new();
        parts.entities.iter().any(|(e, _)| !seen.insert(e.as_str()))
    };
    if duplicated || ordered.iter().zip(&parts.entities).any(|(a, b)| *a != b) {
        out.push(issue(
            "FILENAME_MISMATCH",
            Severity::Error,
            Some(path),
            "Entities are repeated or not in the order the specification gives.".into(),
            "Rename the file with each entity once, in specification order (sub, ses, task, acq, ce, rec, run, ...).",
        ));
    }
    out
}

/// The folders on `path` that BIDS does not allow, from the first such folder down to the file's
/// own (`/sub-10/log/`, `/sub-10/log/2020.../`): top level `sub-*` and `phenotype`, then `ses-*`
/// or a datatype, then a datatype.
fn invalid_dirs(schema: &Schema, path: &str, derivative: bool) -> Vec<String> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let dirs = &segs[..segs.len().saturating_sub(1)];
    let is_datatype = |d: &str| {
        schema.value()["objects"]["datatypes"]
            .as_object()
            .is_some_and(|m| m.contains_key(d))
    };
    let mut first_bad = None;
    for (i, d) in dirs.iter().enumerate() {
        // Derivative datasets may also hold templates: tpl-<label>[/cohort-<label>]/<datatype>/.
        let top = dirs[0].starts_with("sub-") || (derivative && dirs[0].starts_with("tpl-"));
        let second = |x: &str| x.starts_with("ses-") || (derivative && x.starts_with("cohort-"));
        let ok = match i {
            0 => top || *d == "phenotype",
            1 => top && (second(d) || is_datatype(d)),
            2 => top && second(dirs[1]) && is_datatype(d),
            _ => false,
        };
        if !ok {
            first_bad = Some(i);
            break;
        }
    }
    let Some(first) = first_bad else {
        return Vec::new();
    };
    (first..dirs.len())
        .map(|k| format!("/{}/", dirs[..=k].join("/")))
        .collect()
}

/// Validates one file; returns its issues and the sidecars its metadata came from.
fn validate_file(
    info: &DatasetInfo,
    entry: &FileEntry,
    parts: &NameParts,
    options: &Options,
) -> (Vec<Issue>, Vec<String>) {
    let schema = info.schema;
    let loc = entry.path.as_str();
    let mut out = Vec::new();
    // Inside a folder BIDS does not know, the folder is the finding (as the reference reports it).
    let bad_dirs = invalid_dirs(schema, loc, info.is_derivative);
    if let Some(parent) = bad_dirs.last() {
        for d in &bad_dirs {
            out.push(issue(
                "NOT_INCLUDED",
                Severity::Error,
                Some(d),
                "Folders with such names are not part of BIDS specification.".into(),
                "Move the folder out of the dataset, or list it in .bidsignore.",
            ));
        }
        if entry.size == 0 && !entry.dangling {
            out.push(issue(
                "EMPTY_FILE",
                Severity::Error,
                Some(parent),
                format!("Empty files are not allowed ({loc})."),
                "Replace the 0-byte file with the real data.",
            ));
        } else {
            out.push(issue(
                "NOT_INCLUDED",
                Severity::Error,
                Some(loc),
                "Files with such naming scheme are not part of BIDS specification.".into(),
                "Move the file out of the dataset, or list it in .bidsignore.",
            ));
        }
        return (out, Vec::new());
    }
    let is_nifti = parts.extension == ".nii" || parts.extension == ".nii.gz";
    let abs = info.root.join(loc.trim_start_matches('/'));
    if entry.size == 0 && !entry.dangling {
        out.push(issue(
            "EMPTY_FILE",
            Severity::Error,
            Some(loc),
            "Empty files are not allowed.".into(),
            "Replace the 0-byte file with the real data (placeholders must be fetched, e.g. `datalad get`).",
        ));
    }
    let mut values = Map::new();
    values.insert("path".into(), json!(loc));
    values.insert("size".into(), json!(entry.size));
    values.insert("stem".into(), json!(parts.stem));
    values.insert("extension".into(), json!(parts.extension));
    values.insert(
        "suffix".into(),
        parts
            .suffix
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null),
    );
    values.insert(
        "datatype".into(),
        parts
            .datatype
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null),
    );
    let modality = parts
        .datatype
        .as_ref()
        .and_then(|d| schema.modality_of.get(d).cloned());
    values.insert(
        "modality".into(),
        modality.map(Value::String).unwrap_or(Value::Null),
    );
    // Entities by file-name key (`entities.res`, `"res" in entities`), as the reference builds them.
    let mut entities = Map::new();
    for (long, v) in &parts.entities {
        if let Some((key, _)) = schema.entity_info.get(long) {
            entities.insert(key.clone(), json!(v));
        }
    }
    values.insert("entities".into(), Value::Object(entities));
    let is_json = parts.extension == ".json";
    let (sidecar_fields, sidecar_origin, used_sidecars) = if is_json {
        (Map::new(), HashMap::new(), Vec::new())
    } else {
        sidecar(info, loc, parts)
    };
    values.insert("sidecar".into(), Value::Object(sidecar_fields.clone()));
    if let Some(first) = sidecar_origin.get(AMBIGUOUS_SIDECARS) {
        // Reported at the first competing sidecar, as the reference does.
        out.push(issue(
            "MULTIPLE_INHERITABLE_FILES",
            Severity::Error,
            Some(first),
            "Several sidecars at one folder level apply to this file and none matches its entities exactly.".into(),
            "Keep one sidecar per level, or add one named exactly like the data file.",
        ));
    }
    if is_nifti && !options.ignore_nifti_headers && !entry.dangling {
        match nifti::nifti_header(&abs) {
            Ok(h) => {
                values.insert("nifti_header".into(), h);
            }
            Err(e) => out.push(issue(
                "NIFTI_HEADER_UNREADABLE",
                Severity::Error,
                Some(loc),
                format!("NIfTI file's header is corrupted or incorrectly formatted ({e})."),
                "Re-export the image (e.g. with dcm2niix) or fetch the complete file.",
            )),
        }
    }
    if parts.extension.ends_with(".gz")
        && entry.size > 0
        && let Some(g) = nifti::gzip_header(&abs)
    {
        values.insert("gzip".into(), g);
    }
    let mut json_content = None;
    if is_json && entry.size > 0 {
        match read_text(&abs)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            Some(v @ Value::Object(_)) => {
                values.insert("json".into(), v.clone());
                json_content = Some(v);
            }
            _ => out.push(issue(
                "JSON_INVALID",
                Severity::Error,
                Some(loc),
                "Not a valid JSON object.".into(),
                "Fix the JSON syntax; a sidecar must be an object ({\"Key\": value}).",
            )),
        }
    }
    let mut tsv_header: Vec<String> = Vec::new();
    if parts.extension == ".tsv" && entry.size > 0 {
        match read_tsv(&abs) {
            Ok(t) => {
                let mut seen = HashSet::new();
                if let Some(dup) = t.header.iter().find(|h| !seen.insert(h.as_str())) {
                    let mut i = issue(
                        "TSV_COLUMN_HEADER_DUPLICATE",
                        Severity::Error,
                        Some(loc),
                        format!("The column '{dup}' appears twice in the header."),
                        "Give every column a unique name.",
                    );
                    i.sub_code = Some(dup.clone());
                    out.push(i);
                }
                if let Some(line) = t.empty_line {
                    out.push(issue(
                        "TSV_EMPTY_LINE",
                        Severity::Error,
                        Some(loc),
                        format!("Line {line} is empty."),
                        "Remove empty lines from the table.",
                    ));
                }
                tsv_header = t.header;
                values.insert("columns".into(), Value::Object(t.columns));
            }
            Err(e) if e == NOT_UTF8 => out.push(issue(
                "INVALID_FILE_ENCODING",
                Severity::Error,
                Some(loc),
                "The file is not UTF-8 text.".into(),
                "Save the table as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).",
            )),
            Err(e) => out.push(issue(
                "TSV_EQUAL_ROWS",
                Severity::Error,
                Some(loc),
                format!("TSV file is malformed: {e}."),
                "Separate cells with tabs, one row per line, n/a for missing values.",
            )),
        }
    }
    let ctx = FileContext {
        info,
        entry,
        values,
    };

    // Filename rules.
    let matches = |ignore_datatype, ignore_required| {
        schema
            .file_rules
            .iter()
            .any(|r| rule_matches(r, loc, parts, &ctx, ignore_datatype, ignore_required))
    };
    let strict = matches(false, false);
    // A name that would be valid but lacks an entity its rule requires is still identified (so its
    // sidecar and checks apply) and reported as such, as the reference does.
    let missing_required = !strict && matches(false, true);
    let included = strict || missing_required;
    let wrong_folder = !included && matches(true, false);
    if missing_required {
        out.push(issue(
            "MISSING_REQUIRED_ENTITY",
            Severity::Error,
            Some(loc),
            "The file's name lacks an entity its suffix requires (e.g. inv- for MP2RAGE, echo- for MEGRE).".into(),
            "Add the required entity to the file name.",
        ));
    }
    if wrong_folder {
        out.push(issue(
            "DATATYPE_MISMATCH",
            Severity::Error,
            Some(loc),
            format!(
                "The file's name is valid, but not in the '{}' folder.",
                parts.datatype.as_deref().unwrap_or("(none)")
            ),
            "Move the file to the datatype folder its suffix belongs to (e.g. T1w in anat/).",
        ));
    } else if !included {
        out.push(issue(
            "NOT_INCLUDED",
            Severity::Error,
            Some(loc),
            "Files with such naming scheme are not part of BIDS specification.".into(),
            "Rename the file following the BIDS naming rules, or list it in .bidsignore.",
        ));
    }
    // Entity values must follow their format (label: letters and digits; index: digits).
    for (long, value) in &parts.entities {
        let format = schema
            .entity_info
            .get(long)
            .map(|(_, f)| f.as_str())
            .unwrap_or("label");
        let pattern = schema.value()["objects"]["formats"][format]["pattern"]
            .as_str()
            .unwrap_or("[0-9a-zA-Z]+");
        let ok = expr::regex_match(&format!("^(?:{pattern})$"), value);
        if !ok && included {
            let code = if value.is_empty() {
                "ENTITY_WITH_NO_LABEL"
            } else {
                "INVALID_ENTITY_LABEL"
            };
            let mut i = issue(
                code,
                Severity::Error,
                Some(loc),
                format!(
                    "The value '{value}' of entity '{long}' does not match its format ({format})."
                ),
                "Follow the entity's format: labels are letters and digits (no '-' or '_'), indices are digits.",
            );
            i.sub_code = Some(long.clone());
            out.push(i);
        }
    }
    if included {
        out.extend(location_and_order(schema, loc, parts));
    }
    let holds =
        |rule_selectors: &[expr::Expr]| rule_selectors.iter().all(|s| truthy(&eval(s, &ctx)));
    if included && !is_json {
        // Derivative datasets answer to the derivative sidecar rules only (as the reference
        // validator does): a preprocessed BOLD need not repeat the raw acquisition fields.
        let applicable = schema.sidecar_rules.iter().filter(|r| {
            !r.unbuildable && r.name.starts_with("sidecars.derivatives.") == info.is_derivative
        });
        for rule in applicable.filter(|r| holds(&r.selectors)) {
            out.extend(field_level_issue(rule, &sidecar_fields, loc, "SIDECAR"));
            let mut typed = check_types(schema, &sidecar_fields, rule, loc);
            for i in &mut typed {
                // Report a bad value where it is written: the sidecar that set it.
                if let Some(o) = i.sub_code.as_ref().and_then(|f| sidecar_origin.get(f)) {
                    i.location = Some(o.clone());
                }
            }
            out.extend(typed);
        }
    }
    if let Some(Value::Object(content)) = &json_content {
        for rule in schema.dataset_rules.iter().filter(|r| holds(&r.selectors)) {
            out.extend(field_level_issue(rule, content, loc, "JSON"));
            out.extend(check_types(schema, content, rule, loc));
        }
    }
    if let Some(Value::Object(cols)) = ctx.values.get("columns") {
        for rule in schema
            .table_rules
            .iter()
            .filter(|r| !r.unbuildable && holds(&r.selectors))
        {
            out.extend(check_columns(info, rule, cols, &tsv_header, loc));
        }
    }
    // Checks: a check that evaluates to null could not be decided from what this validator knows
    // (e.g. associations it does not build), so only a definite false raises the issue.
    for check in schema
        .checks
        .iter()
        .filter(|c| !c.unbuildable && holds(&c.selectors))
    {
        let failed = check.checks.iter().any(|c| {
            let v = eval(c, &ctx);
            !v.is_null() && !truthy(&v)
        });
        if failed {
            let severity = if check.level == "error" {
                Severity::Error
            } else {
                Severity::Warning
            };
            out.push(issue(
                &check.code,
                severity,
                Some(loc),
                check.message.clone(),
                &format!("Schema check {}.", check.name),
            ));
        }
    }
    (out, used_sidecars)
}
