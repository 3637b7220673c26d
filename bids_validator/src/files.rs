//! The dataset's files: the walk (hidden files, `.bidsignore` and opaque folders left out, dangling
//! links kept) and bounded reads of the text files the checks parse (JSON, TSV).

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde_json::{Map, Value};

use crate::schema::Schema;

/// One file of the dataset.
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    /// `/sub-01/anat/sub-01_T1w.nii.gz`
    pub(crate) path: String,
    pub(crate) size: u64,
    pub(crate) dangling: bool,
}

pub(crate) fn bidsignore(root: &Path) -> Gitignore {
    let mut b = GitignoreBuilder::new(root);
    let p = root.join(".bidsignore");
    if p.is_file() {
        let _ = b.add(&p);
    }
    b.build().unwrap_or_else(|_| Gitignore::empty())
}

pub(crate) fn walk(root: &Path, schema: &Schema, ignore: &Gitignore) -> Vec<FileEntry> {
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
pub(crate) const NOT_UTF8: &str = "not UTF-8 text";

/// Largest JSON or TSV file read (larger ones are reported, not loaded).
const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Reads a small text file, refusing oversized ones.
pub(crate) fn read_text(path: &Path) -> Result<String, String> {
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
pub(crate) struct Tsv {
    pub(crate) header: Vec<String>,
    pub(crate) columns: Map<String, Value>,
    pub(crate) empty_line: Option<usize>,
}

/// Reads a TSV into column name → array of values (strings).
pub(crate) fn read_tsv(path: &Path) -> Result<Tsv, String> {
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
