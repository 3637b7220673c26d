//! The dataset index: one walk over a BIDS dataset (and its derivative datasets) that records every
//! file with its parsed name, plus the dataset-level tables and description.
//!
//! The walk follows symlinks (DataLad datasets are symlink trees), records dangling links instead
//! of failing on them, skips what BIDS says tools skip (hidden files, `sourcedata/`, `code/`,
//! `stimuli/`, `.bidsignore` patterns) and indexes `derivatives/` as separate datasets. Subject
//! folders are walked in parallel.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;
use serde_json::{Map, Value};

use super::BidsError;
use super::description::{DatasetDescription, DatasetType};
use super::entities::Entity;
use super::file::BidsFile;
use super::query::Query;
use super::read::{MAX_JSON_BYTES, read_bounded};
use super::tables::Table;

/// Top-level folders that are not part of the indexed data (`derivatives/` is indexed separately).
const SKIPPED_TOP_LEVEL: [&str; 4] = ["sourcedata", "code", "stimuli", "derivatives"];

/// How to index a dataset.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    /// Extra derivative datasets to index (`--derivatives`).
    pub derivatives: Vec<PathBuf>,
    /// Folders never to index as derivatives (hcld's own OUTPUT_DIR when it sits under `derivatives/`).
    pub exclude: Vec<PathBuf>,
    /// When false, a missing or broken `dataset_description.json` or `participants.tsv` is recorded
    /// as a warning instead of failing (`--skip-bids-validation`).
    pub strict: bool,
}

/// A read-only index of one BIDS dataset and the derivative datasets attached to it.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    description: Option<DatasetDescription>,
    participants: Option<Table>,
    files: Vec<BidsFile>,
    json_by_dir: HashMap<String, Vec<usize>>,
    derivatives: Vec<Layout>,
    warnings: Vec<String>,
}

impl Layout {
    /// Indexes the dataset at `root` and its derivative datasets (`root/derivatives/*` holding a
    /// `dataset_description.json`, plus `options.derivatives`).
    pub fn index(root: &Path, options: &IndexOptions) -> Result<Layout, BidsError> {
        if !root.is_dir() {
            return Err(BidsError::NoDataset {
                path: root.to_path_buf(),
            });
        }
        let mut layout = Layout::index_one(root, options.strict)?;
        // (root, strict): derivatives found under BIDS_DIR/derivatives are auxiliary, so their
        // problems are warnings; folders the user named are checked like the input.
        let mut derivative_roots: Vec<(PathBuf, bool)> = Vec::new();
        derivative_roots.extend(
            bids_validator::nested_derivatives(root)
                .into_iter()
                .map(|d| (d, false)),
        );
        for d in &options.derivatives {
            if !d.is_dir() {
                return Err(BidsError::Derivatives {
                    path: d.clone(),
                    reason: "--derivatives folder not found; give the root of a derivatives dataset (e.g. .../derivatives/smriprep)".into(),
                });
            }
            if !d.join("dataset_description.json").is_file() {
                return Err(BidsError::Derivatives {
                    path: d.clone(),
                    reason: "no dataset_description.json: give the root of a BIDS derivatives dataset (the folder holding dataset_description.json and sub-*/)".into(),
                });
            }
            // A raw dataset (BIDS_DIR itself, say) holds no masks or transforms to reuse; as the
            // validator does, a GeneratedBy without DatasetType still marks derivatives.
            let description = super::DatasetDescription::read(d)?;
            if description.dataset_type != super::DatasetType::Derivative
                && description.pipeline.is_none()
            {
                return Err(BidsError::Derivatives {
                    path: d.clone(),
                    reason: "a raw BIDS dataset (DatasetType is not \"derivative\"), not derivatives: give the root of a derivatives dataset (e.g. .../derivatives/smriprep)".into(),
                });
            }
            derivative_roots.push((d.clone(), options.strict));
        }
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let exclude: Vec<PathBuf> = options.exclude.iter().map(|p| canon(p)).collect();
        let mut seen = BTreeSet::new();
        for (d, strict) in derivative_roots {
            let c = canon(&d);
            if exclude.contains(&c) || !seen.insert(c) {
                continue;
            }
            if !strict && let Err(e) = DatasetDescription::read(&d) {
                layout
                    .warnings
                    .push(format!("{e}; derivatives folder skipped"));
                continue;
            }
            let derivative = Layout::index_one(&d, strict)?;
            layout.warnings.extend(derivative.warnings.iter().cloned());
            layout.derivatives.push(derivative);
        }
        Ok(layout)
    }

    fn index_one(root: &Path, strict: bool) -> Result<Layout, BidsError> {
        let mut warnings = Vec::new();
        let description = match DatasetDescription::read(root) {
            Ok(d) => Some(d),
            Err(e) if !strict => {
                warnings.push(e.to_string());
                None
            }
            Err(e) => return Err(e),
        };
        let participants_path = root.join("participants.tsv");
        let participants = if participants_path.is_file() {
            match Table::read(&participants_path, "participant_id") {
                Ok(t) => Some(t),
                Err(e) if !strict => {
                    warnings.push(e.to_string());
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let ignore = bidsignore(root, &mut warnings);
        let (files, walk_warnings) = walk(root, &ignore)?;
        warnings.extend(walk_warnings);
        let mut json_by_dir: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            if f.extension == ".json" {
                json_by_dir.entry(f.dir().to_string()).or_default().push(i);
            }
        }
        Ok(Layout {
            root: root.to_path_buf(),
            description,
            participants,
            files,
            json_by_dir,
            derivatives: Vec::new(),
            warnings,
        })
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute path of an indexed file.
    pub fn path_of(&self, file: &BidsFile) -> PathBuf {
        self.root.join(&file.rel)
    }

    /// The parsed `dataset_description.json` (absent only when indexing was not strict).
    pub fn description(&self) -> Option<&DatasetDescription> {
        self.description.as_ref()
    }

    /// True when this is a derivatives dataset.
    pub fn is_derivative(&self) -> bool {
        self.description
            .as_ref()
            .is_some_and(|d| d.dataset_type == DatasetType::Derivative)
    }

    /// `participants.tsv`, when present.
    pub fn participants(&self) -> Option<&Table> {
        self.participants.as_ref()
    }

    /// Problems found while indexing that did not stop it (unreadable folders, symlink loops, a
    /// broken table under `--skip-bids-validation`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Every indexed file, sorted by relative path.
    pub fn files(&self) -> &[BidsFile] {
        &self.files
    }

    /// The derivative datasets indexed with this one.
    pub fn derivatives(&self) -> &[Layout] {
        &self.derivatives
    }

    /// Files matching `query`, sorted by relative path.
    pub fn get(&self, query: &Query) -> Vec<&BidsFile> {
        self.files.iter().filter(|f| query.matches(f)).collect()
    }

    /// Sorted distinct values of `entity` over all files (pybids' `get_subjects()` etc.).
    pub fn entity_values(&self, entity: Entity) -> Vec<String> {
        let set: BTreeSet<&str> = self.files.iter().filter_map(|f| f.entity(entity)).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// Subject labels (without `sub-`) found in file names.
    pub fn subjects(&self) -> Vec<String> {
        self.entity_values(Entity::Subject)
    }

    /// Session labels (without `ses-`) found in file names.
    pub fn sessions(&self) -> Vec<String> {
        self.entity_values(Entity::Session)
    }

    /// `sub-<label>/sub-<label>_sessions.tsv`, when present and readable.
    pub fn sessions_table(&self, subject: &str) -> Result<Option<Table>, BidsError> {
        let p = self
            .root
            .join(format!("sub-{subject}"))
            .join(format!("sub-{subject}_sessions.tsv"));
        if p.is_file() {
            Table::read(&p, "session_id").map(Some)
        } else {
            Ok(None)
        }
    }

    /// The metadata of `file`: for raw datasets the merged sidecars of the inheritance principle
    /// (every `.json` with the same suffix in the file's folder or above whose entities are a subset
    /// of the file's, less specific first); for derivatives only the sidecar with the exact same stem
    /// (fMRIPrep keeps native and template-space sidecars side by side, so inheritance would mix them).
    pub fn metadata(&self, file: &BidsFile) -> Result<Map<String, Value>, BidsError> {
        let stem_end = file.rel.len() - file.extension.len();
        let exact = format!("{}.json", &file.rel[..stem_end]);
        if self.is_derivative() {
            let p = self.root.join(&exact);
            return if p.is_file() {
                read_json_object(&p)
            } else {
                Ok(Map::new())
            };
        }
        let Some(suffix) = file.suffix() else {
            return Ok(Map::new());
        };
        let mut dirs = vec![""];
        let dir = file.dir();
        for (i, c) in dir.char_indices() {
            if c == '/' {
                dirs.push(&dir[..i]);
            }
        }
        if !dir.is_empty() {
            dirs.push(dir);
        }
        let mut candidates: Vec<(usize, usize, &BidsFile)> = Vec::new();
        for (depth, d) in dirs.iter().enumerate() {
            for &i in self.json_by_dir.get(*d).map(Vec::as_slice).unwrap_or(&[]) {
                let j = &self.files[i];
                if j.suffix() != Some(suffix) || j.rel == file.rel {
                    continue;
                }
                let subset = j
                    .entities
                    .iter()
                    .all(|(e, v)| file.entity(*e) == Some(v.as_str()));
                if subset {
                    candidates.push((depth, j.entities.len(), j));
                }
            }
        }
        candidates.sort_by_key(|(d, n, _)| (*d, *n));
        let mut merged = Map::new();
        for (_, _, j) in candidates {
            for (k, v) in read_json_object(&self.path_of(j))? {
                merged.insert(k, v);
            }
        }
        Ok(merged)
    }
}

/// Reads a JSON file that must hold an object.
pub fn read_json_object(path: &Path) -> Result<Map<String, Value>, BidsError> {
    let bytes = read_bounded(path, MAX_JSON_BYTES, "JSON sidecar")?;
    parse_json_object(path, &bytes)
}

/// [`read_json_object`] on bytes already read from `path` (named in errors).
pub fn parse_json_object(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, BidsError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(BidsError::JsonContent {
            path: path.to_path_buf(),
            reason: "a sidecar must be a JSON object ({\"Key\": value, ...})".into(),
        }),
        Err(e) => Err(BidsError::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn bidsignore(root: &Path, warnings: &mut Vec<String>) -> Gitignore {
    let mut b = GitignoreBuilder::new(root);
    let p = root.join(".bidsignore");
    if p.is_file()
        && let Some(e) = b.add(&p)
    {
        warnings.push(format!("{}: some patterns ignored: {e}", p.display()));
    }
    b.build().unwrap_or_else(|_| Gitignore::empty())
}

/// Walks the dataset: top-level entries first, then each top-level folder in parallel.
fn walk(root: &Path, ignore: &Gitignore) -> Result<(Vec<BidsFile>, Vec<String>), BidsError> {
    let rd = std::fs::read_dir(root).map_err(|e| BidsError::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    let resolved_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut top_dirs = Vec::new();
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| BidsError::Io {
            path: root.to_path_buf(),
            source: e,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            warnings.push(format!(
                "{}: skipped (file name is not UTF-8)",
                entry.path().display()
            ));
            continue;
        };
        if name.starts_with('.') || SKIPPED_TOP_LEVEL.contains(&name) {
            continue;
        }
        let path = entry.path();
        let is_dir = path.is_dir();
        if ignore.matched(&path, is_dir).is_ignore() {
            continue;
        }
        if is_dir && let Some(w) = link_out_of(&resolved_root, &path) {
            warnings.push(w);
            continue;
        }
        if is_dir {
            top_dirs.push(path);
        } else {
            let dangling = !path.exists();
            files.push(BidsFile::from_rel(name.to_string(), dangling));
        }
    }
    let results: Vec<(Vec<BidsFile>, Vec<String>)> = top_dirs
        .par_iter()
        .map(|d| walk_folder(root, &resolved_root, d, ignore))
        .collect();
    for (f, w) in results {
        files.extend(f);
        warnings.extend(w);
    }
    files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok((files, warnings))
}

/// A warning when `dir` is a symbolic link to a folder outside the dataset (`resolved_root`):
/// such links are not followed, so that `sub-05 -> /` cannot make the index walk the whole file
/// system. Links inside the dataset, and links to files (DataLad's into `.git/annex`), are kept.
fn link_out_of(resolved_root: &Path, dir: &Path) -> Option<String> {
    let is_link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return None;
    }
    let target = std::fs::canonicalize(dir).ok()?;
    (!target.starts_with(resolved_root)).then(|| {
        format!(
            "{}: a link to the folder {} outside the dataset, not followed; copy the data into the dataset or link its files",
            dir.display(),
            target.display()
        )
    })
}

/// A file name that only a data file has (an image), so a folder by that name is a file put in
/// the wrong shape: it is listed as a file, to fail when read with a message naming it.
fn looks_like_a_data_file(name: &str) -> bool {
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

fn walk_folder(
    root: &Path,
    resolved_root: &Path,
    dir: &Path,
    ignore: &Gitignore,
) -> (Vec<BidsFile>, Vec<String>) {
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    // Filled while filtering (which may not borrow `files` and `warnings` the loop uses).
    let skipped = std::cell::RefCell::new(Vec::new());
    let misshapen = std::cell::RefCell::new(Vec::new());
    let rel_of = |p: &Path| -> Option<String> {
        let r = p.strip_prefix(root).ok()?.to_str()?;
        Some(if std::path::MAIN_SEPARATOR == '/' {
            r.to_string()
        } else {
            r.replace('\\', "/")
        })
    };
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| {
            let hidden =
                e.depth() > 0 && e.file_name().to_str().is_some_and(|n| n.starts_with('.'));
            if hidden || ignore.matched(e.path(), e.file_type().is_dir()).is_ignore() {
                return false;
            }
            if e.depth() > 0 && e.file_type().is_dir() {
                if e.path_is_symlink()
                    && let Some(w) = link_out_of(resolved_root, e.path())
                {
                    skipped.borrow_mut().push(w);
                    return false;
                }
                if e.file_name().to_str().is_some_and(looks_like_a_data_file) {
                    misshapen.borrow_mut().push(e.path().to_path_buf());
                    return false;
                }
            }
            true
        });
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_dir() => {}
            Ok(e) => match rel_of(e.path()) {
                Some(rel) => files.push(BidsFile::from_rel(rel, false)),
                None => warnings.push(format!(
                    "{}: skipped (file name is not UTF-8)",
                    e.path().display()
                )),
            },
            Err(err) => {
                let path = err
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.to_path_buf());
                let is_link =
                    std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                if err.loop_ancestor().is_some() {
                    warnings.push(format!("{}: symlink loop, skipped", path.display()));
                } else if is_link && !path.exists() && ignore.matched(&path, false).is_ignore() {
                    // Ignored by .bidsignore, like any other file.
                } else if is_link && !path.exists() {
                    let hidden = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'));
                    if let (Some(rel), false) = (rel_of(&path), hidden) {
                        files.push(BidsFile::from_rel(rel, true));
                    }
                } else {
                    warnings.push(format!("{}: cannot read ({err}), skipped", path.display()));
                }
            }
        }
    }
    warnings.extend(skipped.into_inner());
    for p in misshapen.into_inner() {
        if let Some(rel) = rel_of(&p) {
            files.push(BidsFile::from_rel(rel, false));
        }
    }
    (files, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_comes_from_the_folder() {
        let f = BidsFile::from_rel("sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz".into(), false);
        assert_eq!(f.datatype(), Some("anat"));
        let f = BidsFile::from_rel("sub-01/anat/sub-01_T1w.nii.gz".into(), false);
        assert_eq!(f.datatype(), Some("anat"));
        let f = BidsFile::from_rel("sub-10/figures/sub-10_dseg.svg".into(), false);
        assert_eq!(f.datatype(), None);
        let f = BidsFile::from_rel("T1w.json".into(), false);
        assert_eq!(f.suffix(), Some("T1w"));
    }
}
