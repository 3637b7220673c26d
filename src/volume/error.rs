//! Errors raised while reading or writing images.

use std::path::PathBuf;

/// Why an image could not be read or written. Every variant names the file and, in its
/// message, what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The file does not exist (or a dangling symlink points nowhere).
    #[error(
        "{path}: annexed content not present (dangling symlink); run `datalad get {path}` or replace the link with the real file"
    )]
    DanglingSymlink {
        /// The link.
        path: PathBuf,
    },
    /// A git-annex pointer file stands where the image should be.
    #[error(
        "{path}: git-annex placeholder, the image content is not present; run `datalad get {path}`"
    )]
    AnnexPlaceholder {
        /// The placeholder.
        path: PathBuf,
    },
    /// A zero-byte file (bids-examples placeholder, failed download).
    #[error(
        "{path}: file is empty (0 bytes), a placeholder or failed download; replace it with the real image"
    )]
    Empty {
        /// The empty file.
        path: PathBuf,
    },
    /// The bytes are not a NIfTI-1 or NIfTI-2 image.
    #[error("{path}: not a NIfTI image ({reason}); convert it with dcm2niix or replace it")]
    NotNifti {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The header is readable but describes something unusable.
    #[error("{path}: invalid NIfTI header: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The file ends before the voxel data does.
    #[error(
        "{path}: truncated: {reason}; the download or copy is incomplete, fetch the file again"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// How much was missing.
        reason: String,
    },
    /// The image is not a single 3D volume.
    #[error("{path}: {reason}")]
    NotThreeD {
        /// The file.
        path: PathBuf,
        /// The dimensions found and the fix.
        reason: String,
    },
    /// The voxel data cannot be used (NaN everywhere, ...).
    #[error("{path}: unusable voxel data: {reason}")]
    BadData {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An operating-system error while reading.
    #[error(
        "{path}: cannot read: {source}; check that the file exists and is readable by this user"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An operating-system or encoder error while writing; `reason` ends with what to do.
    #[error("{path}: cannot write: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
}

impl VolumeError {
    /// True when the problem lies in the input data (exit code 65), false for I/O (74).
    pub fn is_bad_data(&self) -> bool {
        !matches!(self, VolumeError::Read { .. } | VolumeError::Write { .. })
    }
}
