//! BIDS filename entities: the entity table in specification order, and the parser that splits a
//! file name into entities, suffix and extension.

use std::fmt;

/// A BIDS entity, in the order the specification (1.10, Appendix "Entities") places them in file
/// names, followed by the derivative entities used by fMRIPrep/sMRIPrep transforms
/// (`from`, `to`, `mode`). The derived `Ord` is that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    /// `sub`
    Subject,
    /// `ses`
    Session,
    /// `sample`
    Sample,
    /// `task`
    Task,
    /// `tracksys`
    TrackingSystem,
    /// `acq`
    Acquisition,
    /// `nuc`
    Nucleus,
    /// `voi`
    Volume,
    /// `ce`
    Ceagent,
    /// `trc`
    Tracer,
    /// `stain`
    Stain,
    /// `rec`
    Reconstruction,
    /// `dir`
    Direction,
    /// `run`
    Run,
    /// `mod`
    Modality,
    /// `echo`
    Echo,
    /// `flip`
    Flip,
    /// `inv`
    Inversion,
    /// `mt`
    Mtransfer,
    /// `part`
    Part,
    /// `proc`
    Processing,
    /// `hemi`
    Hemisphere,
    /// `space`
    Space,
    /// `cohort`
    Cohort,
    /// `split`
    Split,
    /// `recording`
    Recording,
    /// `chunk`
    Chunk,
    /// `seg`
    Segmentation,
    /// `res`
    Resolution,
    /// `den`
    Density,
    /// `label`
    Label,
    /// `desc`
    Description,
    /// `from` (transforms)
    From,
    /// `to` (transforms)
    To,
    /// `mode` (transforms)
    Mode,
}

impl Entity {
    /// Every entity, in specification order.
    pub const ALL: [Entity; 35] = [
        Entity::Subject,
        Entity::Session,
        Entity::Sample,
        Entity::Task,
        Entity::TrackingSystem,
        Entity::Acquisition,
        Entity::Nucleus,
        Entity::Volume,
        Entity::Ceagent,
        Entity::Tracer,
        Entity::Stain,
        Entity::Reconstruction,
        Entity::Direction,
        Entity::Run,
        Entity::Modality,
        Entity::Echo,
        Entity::Flip,
        Entity::Inversion,
        Entity::Mtransfer,
        Entity::Part,
        Entity::Processing,
        Entity::Hemisphere,
        Entity::Space,
        Entity::Cohort,
        Entity::Split,
        Entity::Recording,
        Entity::Chunk,
        Entity::Segmentation,
        Entity::Resolution,
        Entity::Density,
        Entity::Label,
        Entity::Description,
        Entity::From,
        Entity::To,
        Entity::Mode,
    ];

    /// The key used in file names (`sub`, `ses`, `acq`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Entity::Subject => "sub",
            Entity::Session => "ses",
            Entity::Sample => "sample",
            Entity::Task => "task",
            Entity::TrackingSystem => "tracksys",
            Entity::Acquisition => "acq",
            Entity::Nucleus => "nuc",
            Entity::Volume => "voi",
            Entity::Ceagent => "ce",
            Entity::Tracer => "trc",
            Entity::Stain => "stain",
            Entity::Reconstruction => "rec",
            Entity::Direction => "dir",
            Entity::Run => "run",
            Entity::Modality => "mod",
            Entity::Echo => "echo",
            Entity::Flip => "flip",
            Entity::Inversion => "inv",
            Entity::Mtransfer => "mt",
            Entity::Part => "part",
            Entity::Processing => "proc",
            Entity::Hemisphere => "hemi",
            Entity::Space => "space",
            Entity::Cohort => "cohort",
            Entity::Split => "split",
            Entity::Recording => "recording",
            Entity::Chunk => "chunk",
            Entity::Segmentation => "seg",
            Entity::Resolution => "res",
            Entity::Density => "den",
            Entity::Label => "label",
            Entity::Description => "desc",
            Entity::From => "from",
            Entity::To => "to",
            Entity::Mode => "mode",
        }
    }

    /// The long name pybids and filter files use (`subject`, `session`, `acquisition`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Entity::Subject => "subject",
            Entity::Session => "session",
            Entity::Sample => "sample",
            Entity::Task => "task",
            Entity::TrackingSystem => "tracksys",
            Entity::Acquisition => "acquisition",
            Entity::Nucleus => "nucleus",
            Entity::Volume => "volume",
            Entity::Ceagent => "ceagent",
            Entity::Tracer => "tracer",
            Entity::Stain => "stain",
            Entity::Reconstruction => "reconstruction",
            Entity::Direction => "direction",
            Entity::Run => "run",
            Entity::Modality => "modality",
            Entity::Echo => "echo",
            Entity::Flip => "flip",
            Entity::Inversion => "inv",
            Entity::Mtransfer => "mt",
            Entity::Part => "part",
            Entity::Processing => "processing",
            Entity::Hemisphere => "hemisphere",
            Entity::Space => "space",
            Entity::Cohort => "cohort",
            Entity::Split => "split",
            Entity::Recording => "recording",
            Entity::Chunk => "chunk",
            Entity::Segmentation => "segmentation",
            Entity::Resolution => "resolution",
            Entity::Density => "density",
            Entity::Label => "label",
            Entity::Description => "desc",
            Entity::From => "from",
            Entity::To => "to",
            Entity::Mode => "mode",
        }
    }

    /// True for entities whose value is a non-negative integer (compared numerically: `run-1`
    /// equals `run-01`).
    pub fn is_index(self) -> bool {
        matches!(
            self,
            Entity::Run
                | Entity::Echo
                | Entity::Flip
                | Entity::Inversion
                | Entity::Split
                | Entity::Chunk
        )
    }

    /// Looks an entity up by file-name key (`acq`) or long name (`acquisition`).
    pub fn parse(s: &str) -> Option<Entity> {
        Entity::ALL
            .iter()
            .copied()
            .find(|e| e.key() == s || e.name() == s)
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// True when `s` is a valid BIDS label (`[0-9a-zA-Z]+`).
pub fn is_label(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A file name split into its BIDS parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedName {
    /// Known entities, sorted in specification order.
    pub entities: Vec<(Entity, String)>,
    /// `key-value` pairs with keys outside the entity table, in file order.
    pub unknown: Vec<(String, String)>,
    /// The suffix (`T1w`, `mask`, ...), if the name has one.
    pub suffix: Option<String>,
    /// The extension from the first dot (`.nii.gz`, `.json`), or empty.
    pub extension: String,
    /// False when some part does not follow the `key-value` grammar.
    pub well_formed: bool,
}

/// Splits a BIDS file name into entities, suffix and extension. Never fails: parts that do not
/// follow the grammar make `well_formed` false.
pub fn parse_filename(name: &str) -> ParsedName {
    let (stem, extension) = match name.find('.') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    let mut out = ParsedName {
        extension: extension.to_string(),
        well_formed: true,
        ..Default::default()
    };
    let parts: Vec<&str> = stem.split('_').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match part.split_once('-') {
            Some((k, v)) => {
                if !is_label(k) || !is_label(v) {
                    out.well_formed = false;
                }
                match Entity::parse_key(k) {
                    Some(e) if !out.entities.iter().any(|(x, _)| *x == e) => {
                        out.entities.push((e, v.to_string()))
                    }
                    Some(_) => out.well_formed = false,
                    None => out.unknown.push((k.to_string(), v.to_string())),
                }
            }
            None if last && is_label(part) => out.suffix = Some(part.to_string()),
            None => out.well_formed = false,
        }
    }
    out.entities.sort_by_key(|(e, _)| *e);
    out
}

impl Entity {
    /// Looks an entity up by its file-name key only.
    pub fn parse_key(key: &str) -> Option<Entity> {
        Entity::ALL.iter().copied().find(|e| e.key() == key)
    }
}

/// Every entity BIDS allows on an anatomical image (`anat.yaml`), in specification order: what
/// identifies one T1w, so what its derivatives inherit and what a reusable derivative must match.
pub const ANAT_ENTITIES: [Entity; 10] = [
    Entity::Subject,
    Entity::Session,
    Entity::Task,
    Entity::Acquisition,
    Entity::Ceagent,
    Entity::Reconstruction,
    Entity::Run,
    Entity::Echo,
    Entity::Part,
    Entity::Chunk,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_raw_t1w() {
        let p = parse_filename("sub-01_ses-retest_acq-mprage_run-02_T1w.nii.gz");
        assert!(p.well_formed);
        assert_eq!(
            p.entities,
            vec![
                (Entity::Subject, "01".into()),
                (Entity::Session, "retest".into()),
                (Entity::Acquisition, "mprage".into()),
                (Entity::Run, "02".into())
            ]
        );
        assert_eq!(p.suffix.as_deref(), Some("T1w"));
        assert_eq!(p.extension, ".nii.gz");
    }

    #[test]
    fn parses_derivative_transform_and_odd_names() {
        let p = parse_filename("sub-10_from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5");
        assert_eq!(p.entities.len(), 4);
        assert_eq!(p.suffix.as_deref(), Some("xfm"));
        let p = parse_filename("sub-10.html");
        assert_eq!(p.entities, vec![(Entity::Subject, "10".into())]);
        assert_eq!(p.suffix, None);
        let p = parse_filename("sub-01_foo-bar_T1w.nii");
        assert_eq!(p.unknown, vec![("foo".into(), "bar".into())]);
        assert!(!parse_filename("sub-01__T1w.nii").well_formed);
        assert!(!parse_filename("sub-01_acq-x-y_T1w.nii").well_formed);
        assert!(!parse_filename("sub-01_sub-02_T1w.nii").well_formed);
    }

    #[test]
    fn entity_order_follows_the_specification() {
        let mut v = Entity::ALL.to_vec();
        v.sort();
        assert_eq!(v, Entity::ALL.to_vec());
        assert!(Entity::Space < Entity::Resolution && Entity::Resolution < Entity::Description);
        assert_eq!(Entity::parse("acquisition"), Some(Entity::Acquisition));
        assert_eq!(Entity::parse("acq"), Some(Entity::Acquisition));
    }
}
