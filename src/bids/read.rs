//! Reading metadata files with a size bound, so a huge file named `.json` or `.tsv` is refused
//! before it is read.

use std::path::Path;

use super::BidsError;
use crate::input::InputError;

/// The largest JSON file hcld reads (sidecars, dataset_description.json, filter files): real ones
/// are kilobytes; a file of hundreds of MB named `.json` is a mistake, refused before reading it.
pub(super) const MAX_JSON_BYTES: u64 = 16 << 20;
/// The largest TSV table (participants.tsv of a million subjects is ~100 MB).
pub(super) const MAX_TSV_BYTES: u64 = 512 << 20;

/// Reads a metadata file whole after checking that it is a regular file of at most `limit`
/// bytes.
pub(super) fn read_bounded(
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, BidsError> {
    crate::input::read_regular(path, limit).map_err(|e| match e {
        InputError::Io { path, source } => BidsError::Io { path, source },
        InputError::TooLarge {
            path,
            size_mb,
            limit_mb,
        } => BidsError::TooLarge {
            path,
            size_mb,
            limit_mb,
            what,
        },
        e @ InputError::NotRegular { .. } => BidsError::NotRegular(e),
    })
}
