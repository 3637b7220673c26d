//! The dataset's files: the walk (hidden files, `.bidsignore` and opaque folders left out, dangling
//! links kept) and bounded reads of the text files the checks parse (JSON, TSV).

use std::io::Read;
use std::path::{Path, PathBuf};

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
    /// What the path is when it is not a regular file (a named pipe, a device, a folder named
    /// like a data file): listed, never read, reported.
    pub(crate) special: Option<&'static str>,
}

/// What a file type is, when it is not a regular file or a folder.
fn special_kind(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    let _ = t;
    "not a regular file"
}

/// A folder named like a data file (`sub-01_T1w.nii.gz/`): a file in the wrong shape, listed as
/// one (and reported) rather than walked into.
fn named_like_data(name: &str) -> bool {
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

pub(crate) fn bidsignore(root: &Path) -> Gitignore {
    let mut b = GitignoreBuilder::new(root);
    let p = root.join(".bidsignore");
    if p.is_file() {
        let _ = b.add(&p);
    }
    b.build().unwrap_or_else(|_| Gitignore::empty())
}

/// The dataset's files, sorted. Symbolic links are followed, except a link to a folder outside
/// the dataset (`sub-05 -> /` would have the walk read the whole file system); links to files
/// (DataLad's into `.git/annex`) and links within the dataset are followed.
pub(crate) fn walk(root: &Path, schema: &Schema, ignore: &Gitignore) -> Vec<FileEntry> {
    let mut out = Vec::new();
    let resolved_root: PathBuf = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let misshapen = std::cell::RefCell::new(Vec::new());
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
            if e.file_type().is_dir() && named_like_data(&name) {
                // Listed after the walk, not walked into.
                misshapen.borrow_mut().push(e.path().to_path_buf());
                return false;
            }
            if e.path_is_symlink()
                && e.file_type().is_dir()
                && std::fs::canonicalize(e.path()).is_ok_and(|t| !t.starts_with(&resolved_root))
            {
                return false;
            }
            !ignore.matched(e.path(), e.file_type().is_dir()).is_ignore()
        });
    let entries = walker.into_iter().map(|entry| match entry {
        Ok(e) if e.file_type().is_dir() => None,
        Ok(e) => {
            // FIFOs, sockets and devices are not data: they are listed (and reported), never
            // read (a FIFO would block forever, /dev/zero never end).
            let md = e.metadata().ok()?;
            Some(if md.is_file() {
                (e.path().to_path_buf(), md.len(), false, None)
            } else {
                (
                    e.path().to_path_buf(),
                    0,
                    false,
                    Some(special_kind(md.file_type())),
                )
            })
        }
        Err(err) => {
            let p = err.path()?;
            let is_link = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !is_link || p.exists() || hidden || ignore.matched(p, false).is_ignore() {
                return None;
            }
            Some((p.to_path_buf(), 0, true, None))
        }
    });
    let found: Vec<_> = entries.flatten().collect();
    let folders = misshapen
        .into_inner()
        .into_iter()
        .map(|p| (p, 0, false, Some("a folder")));
    for (path, size, dangling, special) in found.into_iter().chain(folders) {
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let rel = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
        out.push(FileEntry {
            path: rel,
            size,
            dangling,
            special,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The error text of a file that is not UTF-8.
pub(crate) const NOT_UTF8: &str = "not UTF-8 text";

/// Largest JSON or TSV file read (larger ones are reported, not loaded).
const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Reads a small text file, refusing oversized ones and anything but a regular file (a FIFO
/// would block the open, a device such as `/dev/zero` never end; both report size 0).
pub(crate) fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let len = meta.len();
    if len > MAX_TEXT_BYTES {
        return Err(format!(
            "file is {len} bytes, larger than the {MAX_TEXT_BYTES}-byte limit for metadata"
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TEXT_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(format!(
            "file is larger than the {MAX_TEXT_BYTES}-byte limit for metadata"
        ));
    }
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
