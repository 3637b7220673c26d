//! One indexed file of a BIDS dataset ([`BidsFile`]): its path, entities, suffix and extension.

use super::entities::{Entity, parse_filename};

/// BIDS datatype folder names.
const DATATYPES: [&str; 15] = [
    "anat", "beh", "dwi", "eeg", "fmap", "func", "ieeg", "meg", "micr", "motion", "mrs", "nirs",
    "perf", "pet", "emg",
];

/// One indexed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidsFile {
    pub(super) rel: String,
    pub(super) entities: Vec<(Entity, String)>,
    pub(super) suffix: Option<String>,
    pub(super) extension: String,
    pub(super) datatype: Option<&'static str>,
    pub(super) dangling: bool,
    pub(super) valid_name: bool,
}

impl BidsFile {
    /// Builds the record for a path relative to the dataset root (`/`-separated).
    pub fn from_rel(rel: String, dangling: bool) -> BidsFile {
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        let parsed = parse_filename(name);
        let parts: Vec<&str> = rel.split('/').collect();
        let datatype_dir = match parts.as_slice() {
            [s, d, _] if s.starts_with("sub-") => Some(*d),
            [s, ses, d, _] if s.starts_with("sub-") && ses.starts_with("ses-") => Some(*d),
            _ => None,
        };
        let datatype = datatype_dir.and_then(|d| DATATYPES.iter().copied().find(|t| *t == d));
        BidsFile {
            entities: parsed.entities,
            suffix: parsed.suffix,
            extension: parsed.extension,
            datatype,
            dangling,
            valid_name: parsed.well_formed && parsed.unknown.is_empty(),
            rel,
        }
    }

    /// Path relative to the dataset root, `/`-separated (`sub-01/anat/sub-01_T1w.nii.gz`).
    pub fn rel_path(&self) -> &str {
        &self.rel
    }

    /// The file name.
    pub fn filename(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or(&self.rel)
    }

    /// The value of `entity`, if the name has it.
    pub fn entity(&self, entity: Entity) -> Option<&str> {
        self.entities
            .iter()
            .find(|(e, _)| *e == entity)
            .map(|(_, v)| v.as_str())
    }

    /// All known entities, in specification order.
    pub fn entities(&self) -> &[(Entity, String)] {
        &self.entities
    }

    /// The suffix (`T1w`), if any.
    pub fn suffix(&self) -> Option<&str> {
        self.suffix.as_deref()
    }

    /// The extension from the first dot (`.nii.gz`).
    pub fn extension(&self) -> &str {
        &self.extension
    }

    /// The datatype folder the file sits in (`anat`), if any.
    pub fn datatype(&self) -> Option<&str> {
        self.datatype
    }

    /// True when the name follows the BIDS grammar (`key-value` pairs of known entities, letters
    /// and digits only, then a suffix).
    pub fn is_valid_name(&self) -> bool {
        self.valid_name
    }

    /// True for a symlink whose target is missing (un-fetched DataLad/git-annex content).
    pub fn is_dangling(&self) -> bool {
        self.dangling
    }

    /// The folder part of the relative path (`""` at the root).
    pub(super) fn dir(&self) -> &str {
        self.rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
    }
}
