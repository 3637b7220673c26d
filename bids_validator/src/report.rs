//! What validation returns: issues and their severities, the configuration that silences or
//! re-levels them, and the report with its JSON form (the reference validator's layout).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

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
    pub(crate) fn apply(&self, issue: &mut Issue) {
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

impl Issue {
    /// The issue about one field or column (its subCode).
    pub(crate) fn with_sub_code(mut self, sub_code: &str) -> Issue {
        self.sub_code = Some(sub_code.to_string());
        self
    }
}

/// An issue with no subCode.
pub(crate) fn issue(
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
