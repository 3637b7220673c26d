//! JSON sidecars of derivative files: the fields every hcld sidecar carries (`Description`,
//! `Sources`, `SkullStripped` or `Type`) and the fields a writer adds.

use serde_json::{Map, Value, json};

/// The sidecar key under which hcld records its provenance (fingerprint, parameters, what was
/// fitted): one object per output, read back by re-runs, reports and the evaluation.
pub const PROVENANCE_KEY: &str = "hcld";

/// JSON metadata written beside an image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sidecar {
    pub(super) fields: Map<String, Value>,
}

impl Sidecar {
    /// A sidecar with the BIDS fields every hcld image carries.
    pub fn new(description: &str, sources: &[String], skull_stripped: bool) -> Sidecar {
        let mut fields = Map::new();
        fields.insert("Description".into(), json!(description));
        fields.insert("Sources".into(), json!(sources));
        fields.insert("SkullStripped".into(), json!(skull_stripped));
        Sidecar { fields }
    }

    /// A mask's sidecar (BIDS derivatives "Masks": `Type`, `Sources`; no `SkullStripped`).
    pub fn mask(description: &str, sources: &[String], mask_type: &str) -> Sidecar {
        let mut fields = Map::new();
        fields.insert("Description".into(), json!(description));
        fields.insert("Sources".into(), json!(sources));
        fields.insert("Type".into(), json!(mask_type));
        Sidecar { fields }
    }

    /// Adds or replaces a field.
    pub fn insert(mut self, key: &str, value: Value) -> Sidecar {
        self.fields.insert(key.to_string(), value);
        self
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The fields.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

/// A BIDS URI for a file of the source dataset (`bids:raw:sub-01/anat/sub-01_T1w.nii.gz`).
pub fn source_uri(rel_path: &str) -> String {
    format!("bids:raw:{rel_path}")
}
