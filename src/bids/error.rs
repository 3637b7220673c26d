//! Errors raised while indexing or querying a BIDS dataset.

use std::path::PathBuf;

/// Why a dataset (or one of its files) could not be indexed. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BidsError {
    /// The dataset root does not exist or is not a directory.
    #[error("{path}: BIDS dataset not found (no such directory); check the BIDS_DIR argument")]
    NoDataset {
        /// The path given.
        path: PathBuf,
    },
    /// `dataset_description.json` is missing.
    #[error(
        "{path}: missing; every BIDS dataset needs dataset_description.json with Name and BIDSVersion (or pass --skip-bids-validation)"
    )]
    MissingDescription {
        /// Where it was expected.
        path: PathBuf,
    },
    /// A JSON file cannot be read or parsed.
    #[error("{path}: invalid JSON: {reason}; fix the file (e.g. `python -m json.tool {path}`)")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A JSON file is valid JSON but has the wrong shape.
    #[error("{path}: {reason}")]
    JsonContent {
        /// The file.
        path: PathBuf,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A TSV table is malformed.
    #[error("{path}: {reason}")]
    Table {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number) and what is expected.
        reason: String,
    },
    /// The BIDS filter file is unusable.
    #[error("{path}: invalid BIDS filter file: {reason}")]
    Filter {
        /// The filter file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A derivatives folder given with `--derivatives` is unusable.
    #[error("{path}: {reason}")]
    Derivatives {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A metadata file is far larger than any real one (read in full, it could exhaust memory).
    #[error(
        "{path}: {size_mb} MB is too large for a BIDS {what} (hcld reads at most {limit_mb} MB); check that it is the right file, or list it in .bidsignore"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in MB (rounded up).
        size_mb: u64,
        /// The limit in MB.
        limit_mb: u64,
        /// What kind of file it is ("JSON sidecar", "TSV table").
        what: &'static str,
    },
    /// A FIFO, device or folder where a metadata file was expected.
    #[error(transparent)]
    NotRegular(crate::input::InputError),
    /// Reading the file system failed.
    #[error("{path}: cannot read: {source}; check that it exists and is readable by this user")]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl BidsError {
    /// True when the dataset content is at fault (validation/bad data), false for OS errors.
    pub fn is_io(&self) -> bool {
        matches!(self, BidsError::Io { .. })
    }
}
