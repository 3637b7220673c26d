//! What every file's checks share: the dataset's files and names, the expression context of one
//! file, and sidecar inheritance (which JSON files a data file's metadata comes from).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::expr::Context;
use crate::files::{FileEntry, read_text};
use crate::names::NameParts;
use crate::schema::Schema;

/// Everything known about the dataset, shared by every file's context.
pub(crate) struct DatasetInfo<'a> {
    pub(crate) schema: &'a Schema,
    pub(crate) root: PathBuf,
    pub(crate) files: Vec<FileEntry>,
    /// Every file's path, for existence checks.
    pub(crate) paths: HashSet<String>,
    /// Parsed names, parallel to `files`.
    pub(crate) names: Vec<NameParts>,
    /// The `.json` files of each folder (indices into `files`), for sidecar inheritance.
    pub(crate) json_by_dir: HashMap<String, Vec<usize>>,
    /// The `dataset` object of the schema's expressions.
    pub(crate) dataset: Value,
    /// Whether the dataset is a derivative dataset.
    pub(crate) is_derivative: bool,
}

impl<'a> DatasetInfo<'a> {
    /// The shared facts of a dataset's `files` (sorted paths) and their parsed `names`.
    pub(crate) fn new(
        schema: &'a Schema,
        root: &Path,
        files: Vec<FileEntry>,
        names: Vec<NameParts>,
        dataset: Value,
        is_derivative: bool,
    ) -> DatasetInfo<'a> {
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
        DatasetInfo {
            schema,
            root: root.to_path_buf(),
            files,
            paths,
            names,
            json_by_dir,
            dataset,
            is_derivative,
        }
    }
}

/// The expression context of one file.
pub(crate) struct FileContext<'a> {
    pub(crate) info: &'a DatasetInfo<'a>,
    pub(crate) entry: &'a FileEntry,
    pub(crate) values: Map<String, Value>,
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

/// Marker in a sidecar's origin map: several sidecars at one level applied and none matched the
/// file exactly (reported as `MULTIPLE_INHERITABLE_FILES`).
pub(crate) const AMBIGUOUS_SIDECARS: &str = "\u{0}ambiguous";

/// The inherited sidecar of a data file: per folder level from the root down, the `.json` with the
/// same suffix whose entities are a subset of the file's (deeper levels override).
pub(crate) fn sidecar(
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
