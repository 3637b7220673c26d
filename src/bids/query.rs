//! Queries over an indexed dataset: conditions on entities, datatype, suffix and extension, built
//! in code or read from a pybids-style BIDS filter file (`--bids-filter-file`).

use std::path::Path;

use serde_json::Value;

use super::file::BidsFile;
use super::{BidsError, Entity};

/// What a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A filename entity.
    Entity(Entity),
    /// The datatype folder (`anat`, `func`, ...).
    Datatype,
    /// The suffix (`T1w`, `mask`, ...).
    Suffix,
    /// The extension (`.nii.gz`, ...).
    Extension,
}

/// What a field must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Present with any value.
    Any,
    /// Absent (pybids `None` / `null` in a filter file).
    Absent,
    /// One of these values (index entities compare numerically: `1` matches `01`).
    OneOf(Vec<String>),
}

/// A conjunction of conditions; a field has at most one condition (setting it again replaces it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    conditions: Vec<(Field, Filter)>,
}

impl Query {
    /// The same query without any condition on `field`.
    pub fn dropping(mut self, field: Field) -> Self {
        self.conditions.retain(|(f, _)| *f != field);
        self
    }

    /// A query matching every file.
    pub fn new() -> Self {
        Query::default()
    }

    /// Sets the condition on `field`, replacing an earlier one.
    pub fn with(mut self, field: Field, filter: Filter) -> Self {
        self.conditions.retain(|(f, _)| *f != field);
        self.conditions.push((field, filter));
        self
    }

    /// Requires `entity` to be one of `values`.
    pub fn entity<S: AsRef<str>>(self, entity: Entity, values: &[S]) -> Self {
        self.with(Field::Entity(entity), one_of(values))
    }

    /// Requires `entity` to be absent.
    pub fn without(self, entity: Entity) -> Self {
        self.with(Field::Entity(entity), Filter::Absent)
    }

    /// Requires the suffix to be `suffix`.
    pub fn suffix(self, suffix: &str) -> Self {
        self.with(Field::Suffix, one_of(&[suffix]))
    }

    /// Requires the datatype to be `datatype`.
    pub fn datatype(self, datatype: &str) -> Self {
        self.with(Field::Datatype, one_of(&[datatype]))
    }

    /// Requires the extension to be one of `extensions`.
    pub fn extensions<S: AsRef<str>>(self, extensions: &[S]) -> Self {
        self.with(Field::Extension, one_of(extensions))
    }

    /// The conditions, in the order they were set.
    pub fn conditions(&self) -> &[(Field, Filter)] {
        &self.conditions
    }

    /// Adds every condition of `other`, replacing conditions on the same fields.
    pub fn merged(mut self, other: &Query) -> Self {
        for (f, v) in &other.conditions {
            self = self.with(*f, v.clone());
        }
        self
    }

    /// True when `file` satisfies every condition.
    pub fn matches(&self, file: &BidsFile) -> bool {
        self.conditions.iter().all(|(field, filter)| {
            let (value, numeric) = match field {
                Field::Entity(e) => (file.entity(*e), e.is_index()),
                Field::Datatype => (file.datatype(), false),
                Field::Suffix => (file.suffix(), false),
                Field::Extension => (Some(file.extension()), false),
            };
            match (filter, value) {
                (Filter::Any, v) => v.is_some(),
                (Filter::Absent, v) => v.is_none(),
                (Filter::OneOf(_), None) => false,
                (Filter::OneOf(vals), Some(v)) => vals.iter().any(|w| same_value(v, w, numeric)),
            }
        })
    }

    /// Reads the query for `key` (e.g. `t1w`) from a pybids-style BIDS filter file:
    /// `{"t1w": {"datatype": "anat", "suffix": "T1w", "acquisition": "mprage", "run": [1, 2],
    /// "reconstruction": null}}`. Values may be strings, integers, lists of those, `null` (the
    /// entity must be absent) or `"*"` (present with any value). Unknown keys are errors.
    pub fn from_filter_file(path: &Path, key: &str) -> Result<Option<Query>, BidsError> {
        let err = |reason: String| BidsError::Filter {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = super::read::read_bounded(path, super::read::MAX_JSON_BYTES, "filter file")?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("not valid JSON ({e})")))?;
        let Value::Object(top) = value else {
            return Err(err(
                "must be a JSON object such as {\"t1w\": {\"acquisition\": \"mprage\"}}".into(),
            ));
        };
        // Other queries (bold, t2w, asl, ...) belong to other apps sharing the file: not ours to judge.
        let Some(spec) = top.get(key) else {
            return Ok(None);
        };
        let Value::Object(spec) = spec else {
            return Err(err(format!(
                "'{key}' must be an object of entity: value pairs"
            )));
        };
        let mut q = Query::new();
        for (name, v) in spec {
            let field = match name.as_str() {
                "datatype" => Field::Datatype,
                "suffix" => Field::Suffix,
                "extension" => Field::Extension,
                other => Field::Entity(Entity::parse(other).ok_or_else(|| {
                    err(format!("'{key}.{other}' is not a BIDS entity (e.g. subject, session, acquisition, reconstruction, run)"))
                })?),
            };
            let filter = filter_from_json(v).ok_or_else(|| {
                err(format!(
                    "'{key}.{name}' must be a string, integer, list, null or \"*\""
                ))
            })?;
            let filter = match (field, filter) {
                // pybids accepts extensions with or without the dot.
                (Field::Extension, Filter::OneOf(v)) => Filter::OneOf(
                    v.into_iter()
                        .map(|e| {
                            if e.starts_with('.') {
                                e
                            } else {
                                format!(".{e}")
                            }
                        })
                        .collect(),
                ),
                (_, f) => f,
            };
            q = q.with(field, filter);
        }
        Ok(Some(q))
    }
}

fn one_of<S: AsRef<str>>(values: &[S]) -> Filter {
    Filter::OneOf(values.iter().map(|v| v.as_ref().to_string()).collect())
}

fn filter_from_json(v: &Value) -> Option<Filter> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    };
    match v {
        Value::Null => Some(Filter::Absent),
        Value::String(s) if s == "*" => Some(Filter::Any),
        Value::Array(a) => a
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(Filter::OneOf),
        other => scalar(other).map(|s| Filter::OneOf(vec![s])),
    }
}

fn same_value(a: &str, b: &str, numeric: bool) -> bool {
    if numeric && let (Ok(x), Ok(y)) = (a.parse::<u64>(), b.parse::<u64>()) {
        return x == y;
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str) -> BidsFile {
        BidsFile::from_rel(rel.to_string(), false)
    }

    #[test]
    fn conditions_match_entities_and_absence() {
        let f = file("sub-01/anat/sub-01_acq-mprage_run-01_T1w.nii.gz");
        let q = Query::new()
            .suffix("T1w")
            .datatype("anat")
            .extensions(&[".nii", ".nii.gz"]);
        assert!(q.matches(&f));
        assert!(q.clone().entity(Entity::Run, &["1"]).matches(&f));
        assert!(!q.clone().entity(Entity::Run, &["2"]).matches(&f));
        assert!(!q.clone().without(Entity::Acquisition).matches(&f));
        assert!(q.clone().without(Entity::Space).matches(&f));
        assert!(
            !q.clone()
                .with(Field::Entity(Entity::Space), Filter::Any)
                .matches(&f)
        );
    }

    #[test]
    fn reads_filter_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        std::fs::write(&p, r#"{"t1w": {"acquisition": "mprage", "run": [1, 2], "reconstruction": null, "extension": "nii.gz"}}"#).unwrap();
        let q = Query::from_filter_file(&p, "t1w").unwrap().unwrap();
        assert!(q.matches(&file("sub-01/anat/sub-01_acq-mprage_run-2_T1w.nii.gz")));
        assert!(!q.matches(&file(
            "sub-01/anat/sub-01_acq-mprage_rec-norm_run-2_T1w.nii.gz"
        )));
        assert!(!q.matches(&file("sub-01/anat/sub-01_acq-mprage_run-2_T1w.nii")));
        std::fs::write(&p, r#"{"t1w": {"acqusition": "x"}}"#).unwrap();
        let e = Query::from_filter_file(&p, "t1w").unwrap_err().to_string();
        assert!(e.contains("f.json") && e.contains("acqusition"), "{e}");
        std::fs::write(&p, r#"{"bold": {"task": "rest"}, "t1w": {"run": 1}}"#).unwrap();
        assert!(Query::from_filter_file(&p, "t1w").unwrap().is_some());
        std::fs::write(&p, "[1]").unwrap();
        assert!(Query::from_filter_file(&p, "t1w").is_err());
    }
}
