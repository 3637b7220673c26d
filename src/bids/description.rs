//! `dataset_description.json`: what kind of dataset this is (raw or derivative) and who made it.

use std::path::Path;

use serde_json::{Map, Value};

use super::BidsError;

/// Whether a dataset holds raw data or derivatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetType {
    /// Raw data (the default when `DatasetType` is absent).
    Raw,
    /// Derivatives of other datasets.
    Derivative,
}

/// The parsed `dataset_description.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetDescription {
    /// `Name`.
    pub name: String,
    /// `BIDSVersion`.
    pub bids_version: Option<String>,
    /// `DatasetType`.
    pub dataset_type: DatasetType,
    /// The `Name` of the first `GeneratedBy` entry (derivatives), e.g. `fMRIPrep`.
    pub pipeline: Option<String>,
    /// Every field as written.
    pub fields: Map<String, Value>,
}

impl DatasetDescription {
    /// Reads and checks `dataset_description.json` in `root`.
    pub fn read(root: &Path) -> Result<DatasetDescription, BidsError> {
        let path = root.join("dataset_description.json");
        let bytes = match super::read::read_bounded(
            &path,
            super::read::MAX_JSON_BYTES,
            "dataset_description.json",
        ) {
            Ok(t) => t,
            Err(BidsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(BidsError::MissingDescription { path });
            }
            Err(e) => return Err(e),
        };
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| BidsError::Json {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let Value::Object(fields) = value else {
            return Err(BidsError::JsonContent {
                path,
                reason: "must be a JSON object with Name and BIDSVersion".into(),
            });
        };
        let name = fields
            .get("Name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let bids_version = fields
            .get("BIDSVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let dataset_type = match fields.get("DatasetType").and_then(Value::as_str) {
            Some("derivative") => DatasetType::Derivative,
            Some("raw") | None => DatasetType::Raw,
            Some(other) => {
                return Err(BidsError::JsonContent {
                    path,
                    reason: format!("DatasetType is '{other}'; it must be 'raw' or 'derivative'"),
                });
            }
        };
        let pipeline = match fields.get("GeneratedBy") {
            Some(Value::Array(a)) => a
                .first()
                .and_then(|g| g.get("Name"))
                .and_then(Value::as_str),
            _ => fields
                .get("PipelineDescription")
                .and_then(|p| p.get("Name"))
                .and_then(Value::as_str),
        }
        .map(str::to_string);
        Ok(DatasetDescription {
            name,
            bids_version,
            dataset_type,
            pipeline,
            fields,
        })
    }
}
