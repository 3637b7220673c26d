//! Opening the files hcld is given (images, sidecars, tables, configurations, models,
//! transforms) for reading: regular files only. A FIFO blocks `open` forever and a device such as
//! `/dev/zero` never ends, while both report a size of 0, so a size check does not bound them:
//! they are refused before they are opened, saying what they are. Symbolic links are followed
//! (DataLad datasets are made of them); what counts is what they point to.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most hcld reads of a JSON or text file it is given (configurations, landmarks,
/// transforms, records): real ones are kilobytes.
pub const TEXT_LIMIT: u64 = 16 << 20;
/// The most hcld reads of one file of a model (weights of the largest configuration are a few
/// hundred MB).
pub const MODEL_FILE_LIMIT: u64 = 16 << 30;
/// The most hcld reads of an image file whole (a 0.5 mm whole-head float image is ~600 MB).
pub const IMAGE_LIMIT: u64 = 8 << 30;

/// The reason alone (without the path), for messages that name the file themselves.
pub fn reason(e: &InputError) -> String {
    match e {
        InputError::Io { source, .. } => source.to_string(),
        InputError::NotRegular { kind, .. } => format!("it is {kind}, not a regular file"),
        InputError::TooLarge {
            size_mb, limit_mb, ..
        } => format!("{size_mb} MB is more than the {limit_mb} MB hcld reads for such a file"),
    }
}

/// Why a given file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The OS refused (missing, unreadable).
    #[error("{path}: cannot read: {source}; check that it exists and is readable by this user")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A FIFO, device, socket or folder where a file was expected.
    #[error(
        "{path}: not a regular file but {kind}; give the file itself (hcld reads only regular files, through symbolic links too)"
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is ("a named pipe (FIFO)", "a character device", ...).
        kind: &'static str,
    },
    /// Larger than any real file of its kind.
    #[error(
        "{path}: {size_mb} MB is more than the {limit_mb} MB hcld reads for such a file; check that it is the right file"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in MB (rounded up).
        size_mb: u64,
        /// The limit in MB.
        limit_mb: u64,
    },
}

impl InputError {
    /// The OS error kind for `Io`, `None` otherwise.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            InputError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// What a file that is not a regular one is, for messages (`None` for a regular file).
pub fn not_regular_kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a file")
}

/// The metadata of `path` (symbolic links followed) once it is known to be a regular file.
pub fn regular_metadata(path: &Path) -> Result<Metadata, InputError> {
    let meta = std::fs::metadata(path).map_err(|e| InputError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    match not_regular_kind(&meta) {
        None => Ok(meta),
        Some(kind) => Err(InputError::NotRegular {
            path: path.to_path_buf(),
            kind,
        }),
    }
}

/// Opens a regular file; returns it with its size.
pub fn open_regular(path: &Path) -> Result<(File, u64), InputError> {
    let len = regular_metadata(path)?.len();
    let file = File::open(path).map_err(|e| InputError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok((file, len))
}

/// Reads a regular file of at most `limit` bytes whole. The limit also holds for a file that
/// grows while it is read.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let (file, len) = open_regular(path)?;
    let too_large = |size: u64| InputError::TooLarge {
        path: path.to_path_buf(),
        size_mb: size.div_ceil(1 << 20),
        limit_mb: limit >> 20,
    };
    if len > limit {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| InputError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads a regular UTF-8 text file of at most `limit` bytes.
pub fn read_regular_text(path: &Path, limit: u64) -> Result<String, InputError> {
    String::from_utf8(read_regular(path, limit)?).map_err(|_| InputError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_folders_are_refused_before_opening() {
        let d = tempfile::tempdir().unwrap();
        // /dev/zero through a link, as a planted T1w would be.
        let zero = d.path().join("sub-01_T1w.nii.gz");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_regular(&zero, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        // A FIFO: opening it would block this test forever.
        let fifo = d.path().join("sidecar.json");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = open_regular(&fifo).unwrap_err().to_string();
            assert!(e.contains("named pipe"), "{e}");
        }
        let e = read_regular(d.path(), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
    }

    #[test]
    fn the_limit_holds_and_regular_files_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        std::fs::write(&p, vec![b'x'; 3000]).unwrap();
        assert_eq!(read_regular(&p, 3000).unwrap().len(), 3000);
        let e = read_regular(&p, 2999).unwrap_err();
        assert!(matches!(e, InputError::TooLarge { .. }), "{e}");
        assert!(matches!(
            read_regular(&d.path().join("missing"), 10)
                .unwrap_err()
                .io_kind(),
            Some(std::io::ErrorKind::NotFound)
        ));
    }
}
