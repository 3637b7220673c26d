//! Output names: typed entities → a BIDS derivatives path, from one table of allowed entities per
//! suffix, in specification order. Naming is a pure function; nothing here touches the disk.

use std::path::PathBuf;

use crate::bids::{BidsFile, Entity, is_label};

use super::DerivativesError;

/// Entities carried from a source T1w to its derivatives: every entity BIDS allows on an
/// anatomical image, so two different inputs (echoes, magnitude/phase parts, runs) never map to
/// one output name.
const INHERITED: [Entity; 10] = crate::bids::ANAT_ENTITIES;

/// The pattern table: for each suffix we write, its datatype folder, allowed extensions and the
/// entities allowed in its name besides the inherited ones (`sub` is always required). Names are
/// assembled in specification order.
const PATTERNS: [(&str, &str, &[&str], &[Entity]); 5] = [
    (
        "T1w",
        "anat",
        &[".nii.gz", ".json"],
        &[
            Entity::Space,
            Entity::Cohort,
            Entity::Resolution,
            Entity::Description,
        ],
    ),
    (
        "mask",
        "anat",
        &[".nii.gz", ".json"],
        &[
            Entity::Space,
            Entity::Cohort,
            Entity::Resolution,
            Entity::Label,
            Entity::Description,
        ],
    ),
    (
        "dseg",
        "anat",
        &[".nii.gz", ".json", ".tsv"],
        &[
            Entity::Space,
            Entity::Cohort,
            Entity::Resolution,
            Entity::Description,
        ],
    ),
    (
        "probseg",
        "anat",
        &[".nii.gz", ".json"],
        &[
            Entity::Space,
            Entity::Cohort,
            Entity::Resolution,
            Entity::Label,
            Entity::Description,
        ],
    ),
    (
        "xfm",
        "anat",
        &[".txt", ".h5", ".json"],
        &[Entity::From, Entity::To, Entity::Mode],
    ),
];

/// A derivative file's name as typed parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivativeName {
    entities: Vec<(Entity, String)>,
    suffix: String,
    extension: String,
}

impl DerivativeName {
    /// Starts a name from a source file: its inherited entities (subject, session, task,
    /// acquisition, contrast agent, reconstruction, run, echo, part, chunk), with the given suffix
    /// and extension.
    pub fn from_source(source: &BidsFile, suffix: &str, extension: &str) -> DerivativeName {
        let entities = source
            .entities()
            .iter()
            .filter(|(e, _)| INHERITED.contains(e))
            .cloned()
            .collect();
        DerivativeName {
            entities,
            suffix: suffix.to_string(),
            extension: extension.to_string(),
        }
    }

    /// Sets (or replaces) an entity.
    pub fn with(mut self, entity: Entity, value: impl Into<String>) -> Self {
        self.entities.retain(|(e, _)| *e != entity);
        self.entities.push((entity, value.into()));
        self.entities.sort_by_key(|(e, _)| *e);
        self
    }

    /// The same name with another extension (e.g. `.json` for the sidecar).
    pub fn with_extension(&self, extension: &str) -> Self {
        DerivativeName {
            extension: extension.to_string(),
            ..self.clone()
        }
    }

    /// The value of `entity`, if set.
    pub fn entity(&self, entity: Entity) -> Option<&str> {
        self.entities
            .iter()
            .find(|(e, _)| *e == entity)
            .map(|(_, v)| v.as_str())
    }

    /// The suffix.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// The path relative to the derivatives root, checked against the pattern table:
    /// `sub-<L>[/ses-<S>]/<datatype>/sub-<L>[_ses-<S>][_<key>-<value>...]_<suffix><extension>`.
    pub fn rel_path(&self) -> Result<PathBuf, DerivativesError> {
        let fail = |reason: String| DerivativesError::Naming {
            name: self.debug_name(),
            reason,
        };
        let Some((_, datatype, extensions, allowed)) = PATTERNS.iter().find(|p| p.0 == self.suffix)
        else {
            return Err(fail(format!(
                "no output pattern for suffix '{}'",
                self.suffix
            )));
        };
        if !extensions.contains(&self.extension.as_str()) {
            return Err(fail(format!(
                "extension '{}' not allowed for {}",
                self.extension, self.suffix
            )));
        }
        let subject = self
            .entity(Entity::Subject)
            .ok_or_else(|| fail("no subject".into()))?;
        for (e, v) in &self.entities {
            if !allowed.contains(e) && !INHERITED.contains(e) {
                return Err(fail(format!(
                    "entity '{e}' not allowed for suffix {}",
                    self.suffix
                )));
            }
            if !is_label(v) {
                return Err(fail(format!(
                    "value '{v}' of '{e}' is not a BIDS label ([a-zA-Z0-9]+)"
                )));
            }
        }
        let mut path = PathBuf::from(format!("sub-{subject}"));
        if let Some(s) = self.entity(Entity::Session) {
            path.push(format!("ses-{s}"));
        }
        path.push(datatype);
        path.push(self.debug_name());
        Ok(path)
    }

    /// The file name, without checks.
    fn debug_name(&self) -> String {
        let mut s: Vec<String> = self
            .entities
            .iter()
            .map(|(e, v)| format!("{}-{v}", e.key()))
            .collect();
        s.push(self.suffix.clone());
        format!("{}{}", s.join("_"), self.extension)
    }
}

impl DerivativeName {
    /// The inherited (source-identifying) entities joined as in a file name (`sub-01_ses-1_run-2`):
    /// every output of one source starts with this followed by `_`.
    pub fn source_key(&self) -> String {
        let parts: Vec<String> = self
            .entities
            .iter()
            .filter(|(e, _)| INHERITED.contains(e))
            .map(|(e, v)| format!("{}-{v}", e.key()))
            .collect();
        parts.join("_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(rel: &str) -> BidsFile {
        BidsFile::from_rel(rel.to_string(), false)
    }

    #[test]
    fn names_follow_the_pattern_table() {
        let cases = [
            (
                "sub-01/anat/sub-01_T1w.nii.gz",
                DerivativeName::from_source(
                    &src("sub-01/anat/sub-01_T1w.nii.gz"),
                    "T1w",
                    ".nii.gz",
                )
                .with(Entity::Description, "preproc"),
                "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
            ),
            (
                "with session, acq, run, space, res",
                DerivativeName::from_source(
                    &src("sub-02/ses-1/anat/sub-02_ses-1_acq-mprage_run-2_T1w.nii.gz"),
                    "T1w",
                    ".nii.gz",
                )
                .with(Entity::Description, "preproc")
                .with(Entity::Resolution, "2")
                .with(Entity::Space, "MNI152NLin2009aSym"),
                "sub-02/ses-1/anat/sub-02_ses-1_acq-mprage_run-2_space-MNI152NLin2009aSym_res-2_desc-preproc_T1w.nii.gz",
            ),
            (
                "multi-echo, magnitude part",
                DerivativeName::from_source(
                    &src("sub-04/anat/sub-04_run-1_echo-2_part-mag_T1w.nii.gz"),
                    "T1w",
                    ".nii.gz",
                )
                .with(Entity::Description, "preproc"),
                "sub-04/anat/sub-04_run-1_echo-2_part-mag_desc-preproc_T1w.nii.gz",
            ),
            (
                "mask",
                DerivativeName::from_source(
                    &src("sub-03/anat/sub-03_rec-norm_T1w.nii.gz"),
                    "mask",
                    ".json",
                )
                .with(Entity::Description, "brain"),
                "sub-03/anat/sub-03_rec-norm_desc-brain_mask.json",
            ),
            (
                "xfm",
                DerivativeName::from_source(&src("sub-03/anat/sub-03_T1w.nii.gz"), "xfm", ".txt")
                    .with(Entity::From, "T1w")
                    .with(Entity::To, "MNI152NLin2009aSym")
                    .with(Entity::Mode, "image"),
                "sub-03/anat/sub-03_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt",
            ),
        ];
        for (what, name, want) in cases {
            assert_eq!(name.rel_path().unwrap(), PathBuf::from(want), "{what}");
        }
    }

    #[test]
    fn bad_names_fail_loudly() {
        let base =
            DerivativeName::from_source(&src("sub-01/anat/sub-01_T1w.nii.gz"), "T1w", ".nii.gz");
        assert!(
            base.clone()
                .with(Entity::Description, "pre-proc")
                .rel_path()
                .is_err()
        );
        assert!(base.clone().with(Entity::From, "T1w").rel_path().is_err());
        assert!(base.with_extension(".txt").rel_path().is_err());
        let other =
            DerivativeName::from_source(&src("sub-01/anat/sub-01_T1w.nii.gz"), "bold", ".nii.gz");
        assert!(other.rel_path().is_err());
    }
}
