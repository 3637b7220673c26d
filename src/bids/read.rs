//! Reading metadata files with a size bound, so a huge file named `.json` or `.tsv` is refused
//! before it is read.

use std::path::Path;

use super::BidsError;

/// The largest JSON file hcld reads (sidecars, dataset_description.json, filter files): real ones
/// are kilobytes; a file of hundreds of MB named `.json` is a mistake, refused before reading it.
pub(super) const MAX_JSON_BYTES: u64 = 16 << 20;
/// The largest TSV table (participants.tsv of a million subjects is ~100 MB).
pub(super) const MAX_TSV_BYTES: u64 = 512 << 20;

/// Reads a metadata file whole after checking its size against `limit` (bytes).
pub(super) fn read_bounded(
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, BidsError> {
    let io = |e| BidsError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limit {
        return Err(BidsError::TooLarge {
            path: path.to_path_buf(),
            size_mb: size.div_ceil(1 << 20),
            limit_mb: limit >> 20,
            what,
        });
    }
    std::fs::read(path).map_err(io)
}
