//! What can go wrong writing derivatives, each with the path and the fix.

use std::path::PathBuf;

use crate::volume::VolumeError;

/// Why something could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DerivativesError {
    /// A folder or file could not be created (exit 73).
    #[error("{path}: cannot create: {}", crate::os_error::describe_write(.source))]
    CannotCreate {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file outside OUTPUT_DIR (the work directory, a simulated dataset) could not be written
    /// (exit 74).
    #[error("{path}: cannot write: {reason}")]
    Elsewhere {
        /// The path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Writing or renaming failed part-way (exit 74); `reason` ends with what to do.
    #[error("{path}: write failed: {reason}")]
    Write {
        /// The path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// An output name does not fit the pattern table (a bug in hcld, reported loudly).
    #[error("cannot name output '{name}': {reason}")]
    Naming {
        /// The name as far as it was built.
        name: String,
        /// Why it is not a valid derivatives name.
        reason: String,
    },
    /// OUTPUT_DIR already holds another pipeline's derivatives.
    #[error(
        "{path}: OUTPUT_DIR already holds derivatives made by '{pipeline}'; give hcld its own OUTPUT_DIR (e.g. derivatives/hcld)"
    )]
    ForeignDataset {
        /// The existing `dataset_description.json`.
        path: PathBuf,
        /// Who made it.
        pipeline: String,
    },
    /// A write would land outside OUTPUT_DIR (a symlink inside it points elsewhere).
    #[error(
        "{path}: resolves to {resolved}, outside OUTPUT_DIR {root}; hcld writes only inside OUTPUT_DIR: remove the symbolic link (or give a fresh OUTPUT_DIR)"
    )]
    OutsideOutputDir {
        /// The output path as hcld built it.
        path: PathBuf,
        /// Where its folder really is.
        resolved: PathBuf,
        /// OUTPUT_DIR, resolved.
        root: PathBuf,
    },
    /// A write would land outside the folder it belongs in (the work directory: a symlink inside
    /// it points elsewhere).
    #[error(
        "{path}: resolves to {resolved}, outside {root}; hcld writes only inside OUTPUT_DIR and its work directory: remove the symbolic link (or give another work directory with -w)"
    )]
    OutsideFolder {
        /// The path as hcld built it.
        path: PathBuf,
        /// Where its folder really is.
        resolved: PathBuf,
        /// The folder it belongs in, resolved.
        root: PathBuf,
    },
    /// The default work directory under `$TMPDIR` is not this user's private folder (exit 73).
    #[error(
        "{path}: the default work directory is unsafe to use: {reason}; give a folder of your own with -w (e.g. -w $HOME/hcld-work), or remove this one if it is yours"
    )]
    UnsafeWorkDir {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Encoding an image failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
}
