//! Read-only access to BIDS datasets: file-name entities, the dataset index ([`Layout`]),
//! queries and BIDS filter files, sidecar metadata (inheritance for raw data, exact stems for
//! derivatives), `participants.tsv`/`sessions.tsv`, and finding the inputs hcld needs (T1w
//! images, reusable brain masks) in raw and derivative datasets.
//!
//! Nothing here writes to disk.

mod description;
mod entities;
mod error;
mod file;
mod layout;
mod query;
mod read;
pub mod sites;
mod tables;

pub use description::{DatasetDescription, DatasetType};
pub use entities::{ANAT_ENTITIES, Entity, ParsedName, is_label, parse_filename};
pub use error::BidsError;
pub use file::BidsFile;
pub use layout::{IndexOptions, Layout, parse_json_object, read_json_object};
pub use query::{Field, Filter, Query};
pub use tables::Table;

/// Image extensions hcld reads.
pub const NIFTI_EXTENSIONS: [&str; 2] = [".nii", ".nii.gz"];

/// The T1w images to process in `layout`: in raw data `anat/*_T1w.nii[.gz]`; in a derivatives
/// dataset (sMRIPrep/fMRIPrep given as input) the native-space `desc-preproc_T1w` (no `space-`).
pub fn t1w_query(layout: &Layout) -> Query {
    let q = Query::new()
        .datatype("anat")
        .suffix("T1w")
        .extensions(&NIFTI_EXTENSIONS);
    if layout.is_derivative() {
        q.entity(Entity::Description, &["preproc"])
            .without(Entity::Space)
    } else {
        q
    }
}

/// Brain masks a derivatives dataset offers (sMRIPrep's query: `anat`, `desc-brain`, `mask`, any
/// or no `space-`; a mask without `space-` lies on that derivative's native T1w grid).
pub fn brain_mask_query() -> Query {
    Query::new()
        .datatype("anat")
        .entity(Entity::Description, &["brain"])
        .suffix("mask")
        .extensions(&NIFTI_EXTENSIONS)
}
