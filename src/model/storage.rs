//! Reading the model's files, their SHA-256 digests, and writing the ones that live outside
//! OUTPUT_DIR (training checkpoints and curves in the work directory) through the crate's one
//! atomic writer. Files under OUTPUT_DIR/models are serialised to bytes here and written by
//! `crate::derivatives`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A file the model layer could not read or write.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StorageError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong (and what to do, where known).
    pub message: String,
}

impl StorageError {
    /// An error about `path`.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        StorageError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Writes `bytes` to `path` atomically through the crate's one writer
/// (`crate::derivatives::write_atomic`), for files outside OUTPUT_DIR (work-directory
/// checkpoints, a model saved elsewhere).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    crate::derivatives::write_atomic(path, bytes)
        .map_err(|e| StorageError::new(path, e.to_string()))
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>, StorageError> {
    crate::input::read_regular(path, crate::input::MODEL_FILE_LIMIT)
        .map_err(|e| StorageError::new(path, crate::input::reason(&e)))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 over named parts, each framed by its name and length so that moving bytes between
/// parts changes the digest.
pub fn sha256_of_parts<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in parts {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex(&h.finalize())
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_and_framed() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let a = sha256_of_parts([("x", &b"ab"[..]), ("y", &b"c"[..])]);
        let b = sha256_of_parts([("x", &b"a"[..]), ("y", &b"bc"[..])]);
        assert_ne!(a, b);
    }
}
