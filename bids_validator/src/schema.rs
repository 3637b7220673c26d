//! The embedded official BIDS schema (bidsschematools 1.2.7, BIDS 1.11.1; the same schema
//! `bids-validator-deno` 3.0.2 bundles), and typed views of the parts the validator interprets:
//! entities, filename rules, and the rule sets with selectors (sidecars, dataset metadata, tabular
//! data, checks).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::expr::{Expr, parse};

/// The schema text, pinned (see `data/README.md` for version and licence).
const SCHEMA_JSON: &str = include_str!("../data/schema.json");

/// A filename rule (`rules.files.*`).
#[derive(Debug, Clone)]
pub struct FileRule {
    /// Dotted rule name (`raw.anat.nonparametric`).
    pub name: String,
    /// Exact path from the root (`dataset_description.json`).
    pub path: Option<String>,
    /// File stem (`README`, `participants`, `*`).
    pub stem: Option<String>,
    /// Allowed suffixes.
    pub suffixes: Vec<String>,
    /// Allowed extensions (`""` for none).
    pub extensions: Vec<String>,
    /// Allowed datatype folders.
    pub datatypes: Vec<String>,
    /// Allowed entities (long names) and whether each is required.
    pub entities: Vec<(String, bool)>,
    /// Extra conditions (derivative rules apply to derivative datasets).
    pub selectors: Vec<Expr>,
}

/// A rule with selectors and required/recommended fields or columns (`rules.sidecars.*`,
/// `rules.dataset_metadata.*`, `rules.tabular_data.*`).
#[derive(Debug, Clone)]
pub struct FieldRule {
    /// Dotted rule name.
    pub name: String,
    /// When the rule applies.
    pub selectors: Vec<Expr>,
    /// (field or column name, level `required`/`recommended`/`optional`/`deprecated`, schema
    /// object key). Several object keys can share one name with different definitions.
    pub fields: Vec<(String, String, String)>,
    /// For tables: the columns that must come first, in order.
    pub initial_columns: Vec<String>,
    /// For tables: `allowed`, `allowed_if_defined` or `not_allowed`.
    pub additional_columns: Option<String>,
    /// For tables: columns whose values must be unique.
    pub index_columns: Vec<String>,
    /// True when a selector needs context this validator does not build (see [`UNBUILT_CONTEXT`]).
    pub unbuildable: bool,
}

/// Context the validator does not build: `associations` (events, bval/bvec, aslcontext, ... of a
/// file), OME and TIFF metadata, NIfTI axis codes. Rules that read them are skipped, never guessed.
pub const UNBUILT_CONTEXT: [&str; 4] = ["associations", "ome", "tiff", "axis_codes"];

fn unbuildable(exprs: &[Expr]) -> bool {
    exprs
        .iter()
        .any(|e| crate::expr::mentions(e, &UNBUILT_CONTEXT))
}

/// A check (`rules.checks.*`): when the selectors hold, every check must hold, else `issue`.
#[derive(Debug, Clone)]
pub struct CheckRule {
    /// Dotted rule name.
    pub name: String,
    /// Issue code.
    pub code: String,
    /// `error` or `warning`.
    pub level: String,
    /// Issue message.
    pub message: String,
    /// When the rule applies.
    pub selectors: Vec<Expr>,
    /// What must hold.
    pub checks: Vec<Expr>,
    /// True when a selector or check needs context this validator does not build.
    pub unbuildable: bool,
}

/// The interpreted schema.
#[derive(Debug)]
pub struct Schema {
    value: Value,
    /// Entity key (`sub`) → long name (`subject`).
    pub entity_by_key: HashMap<String, String>,
    /// Long name → (key, format `label`/`index`).
    pub entity_info: HashMap<String, (String, String)>,
    /// Entity long names in filename order.
    pub entity_order: Vec<String>,
    /// Filename rules.
    pub file_rules: Vec<FileRule>,
    /// Sidecar field rules.
    pub sidecar_rules: Vec<FieldRule>,
    /// `dataset_description.json` field rules.
    pub dataset_rules: Vec<FieldRule>,
    /// TSV column rules.
    pub table_rules: Vec<FieldRule>,
    /// Checks.
    pub checks: Vec<CheckRule>,
    /// Datatype → modality (`anat` → `mri`).
    pub modality_of: HashMap<String, String>,
    /// Top-level folders whose content is not validated (`code`, `sourcedata`, ...).
    pub opaque_dirs: Vec<String>,
    /// Suffixes and stems whose files are JSON only (`coordsystem`, ...): such a JSON is data in its
    /// own right, never an orphaned sidecar.
    pub json_only_suffixes: std::collections::HashSet<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn exprs(v: &Value, rule: &str) -> Vec<Expr> {
    // The embedded schema's expressions are all parsed in a unit test; one that still fails (a
    // newer schema) is dropped with the rule's other selectors kept, never a panic.
    strings(v)
        .iter()
        .filter_map(|s| {
            parse(s)
                .map_err(|e| eprintln!("schema rule {rule}: {e}"))
                .ok()
        })
        .collect()
}

/// Visits every object under `v` that has key `marker`, with its dotted path.
fn collect<'a>(v: &'a Value, path: String, marker: &str, out: &mut Vec<(String, &'a Value)>) {
    if let Value::Object(m) = v {
        if m.contains_key(marker) {
            out.push((path, v));
            return;
        }
        for (k, x) in m {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            collect(x, p, marker, out);
        }
    }
}

/// `objects.<kind>.<key>.name`: the real field or column name behind a rule's key
/// (`name__segmentations` is the column `name`).
fn real_name<'a>(objects: &'a Value, kind: &str, key: &'a str) -> &'a str {
    objects[kind][key]["name"].as_str().unwrap_or(key)
}

fn field_rules(v: &Value, objects: &Value, kind: &str, prefix: &str, key: &str) -> Vec<FieldRule> {
    let mut found = Vec::new();
    collect(v, prefix.to_string(), key, &mut found);
    found
        .into_iter()
        .map(|(name, r)| {
            let fields = r[key]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(f, lvl)| {
                    let level = lvl
                        .as_str()
                        .or_else(|| lvl["level"].as_str())
                        .unwrap_or("optional");
                    (
                        real_name(objects, kind, f).to_string(),
                        level.to_string(),
                        f.clone(),
                    )
                })
                .collect();
            let selectors = exprs(&r["selectors"], &name);
            FieldRule {
                unbuildable: unbuildable(&selectors),
                index_columns: strings(&r["index_columns"]),
                selectors,
                fields,
                initial_columns: strings(&r["initial_columns"]),
                additional_columns: r["additional_columns"].as_str().map(str::to_string),
                name,
            }
        })
        .collect()
}

impl Schema {
    /// The embedded schema, parsed once.
    pub fn embedded() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            Schema::from_value(serde_json::from_str(SCHEMA_JSON).unwrap_or(Value::Null))
        })
    }

    fn from_value(value: Value) -> Schema {
        let objects = &value["objects"];
        let rules = &value["rules"];
        let mut entity_by_key = HashMap::new();
        let mut entity_info = HashMap::new();
        for (name, e) in objects["entities"].as_object().into_iter().flatten() {
            let key = e["name"].as_str().unwrap_or(name).to_string();
            entity_by_key.insert(key.clone(), name.clone());
            entity_info.insert(
                name.clone(),
                (key, e["format"].as_str().unwrap_or("label").to_string()),
            );
        }
        let entity_order = strings(&rules["entities"]);
        let file_rules = file_rules(rules);
        let checks = check_rules(rules);
        let mut modality_of = HashMap::new();
        for (m, v) in rules["modalities"].as_object().into_iter().flatten() {
            for d in strings(&v["datatypes"]) {
                modality_of.insert(d, m.clone());
            }
        }
        let opaque_dirs = rules["directories"]["raw"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, d)| d["opaque"].as_bool() == Some(true))
            .filter_map(|(_, d)| d["name"].as_str().map(str::to_string))
            .collect();
        let json_only_suffixes = json_only_suffixes(&file_rules);
        Schema {
            json_only_suffixes,
            entity_by_key,
            entity_info,
            entity_order,
            file_rules,
            sidecar_rules: field_rules(
                &rules["sidecars"],
                objects,
                "metadata",
                "sidecars",
                "fields",
            ),
            dataset_rules: field_rules(
                &rules["dataset_metadata"],
                objects,
                "metadata",
                "dataset_metadata",
                "fields",
            ),
            table_rules: field_rules(
                &rules["tabular_data"],
                objects,
                "columns",
                "tabular_data",
                "columns",
            ),
            checks,
            modality_of,
            opaque_dirs,
            value,
        }
    }

    /// The whole schema as JSON (the `schema` name in expressions).
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// `schema_version` (e.g. `1.2.7`).
    pub fn schema_version(&self) -> &str {
        self.value["schema_version"].as_str().unwrap_or("unknown")
    }

    /// `bids_version` (e.g. `1.11.1`).
    pub fn bids_version(&self) -> &str {
        self.value["bids_version"].as_str().unwrap_or("unknown")
    }

    /// The definition of a metadata object (`objects.metadata.<key>`), a JSON-schema fragment.
    pub fn metadata_definition(&self, key: &str) -> Option<&Value> {
        self.value["objects"]["metadata"].get(key)
    }
}

/// The file-name rules (`rules.files`), one per rule that names a path, stem or suffixes.
fn file_rules(rules: &Value) -> Vec<FileRule> {
    let mut file_rules = Vec::new();
    let mut found = Vec::new();
    for marker in ["path", "stem", "suffixes"] {
        collect(&rules["files"], String::new(), marker, &mut found);
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.dedup_by(|a, b| a.0 == b.0);
    for (name, r) in found {
        let entities = r["entities"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(e, lvl)| {
                let level = lvl
                    .as_str()
                    .or_else(|| lvl["level"].as_str())
                    .unwrap_or("optional");
                (e.clone(), level == "required")
            })
            .collect();
        file_rules.push(FileRule {
            path: r["path"].as_str().map(str::to_string),
            stem: r["stem"].as_str().map(str::to_string),
            suffixes: strings(&r["suffixes"]),
            extensions: strings(&r["extensions"]),
            datatypes: strings(&r["datatypes"]),
            entities,
            selectors: exprs(&r["selectors"], &name),
            name,
        });
    }
    file_rules
}

/// The dataset checks (`rules.checks`); those reading context this validator does not build
/// are marked unbuildable.
fn check_rules(rules: &Value) -> Vec<CheckRule> {
    let mut checks_found = Vec::new();
    collect(&rules["checks"], String::new(), "checks", &mut checks_found);
    checks_found
        .into_iter()
        .map(|(name, r)| CheckRule {
            code: r["issue"]["code"]
                .as_str()
                .unwrap_or("CHECK_ERROR")
                .to_string(),
            level: r["issue"]["level"].as_str().unwrap_or("error").to_string(),
            message: r["issue"]["message"]
                .as_str()
                .unwrap_or("")
                .trim()
                .to_string(),
            unbuildable: unbuildable(&exprs(&r["selectors"], &name))
                || unbuildable(&exprs(&r["checks"], &name)),
            selectors: exprs(&r["selectors"], &name),
            checks: exprs(&r["checks"], &name),
            name,
        })
        .collect()
}

/// Suffixes and stems that only ever name `.json` files (`*_coordsystem.json`): JSON data, not
/// sidecars.
fn json_only_suffixes(file_rules: &[FileRule]) -> std::collections::HashSet<String> {
    let names = |r: &FileRule| {
        r.suffixes
            .iter()
            .cloned()
            .chain(r.stem.iter().cloned())
            .collect::<Vec<_>>()
    };
    let with_data: std::collections::HashSet<String> = file_rules
        .iter()
        .filter(|r| r.extensions.iter().any(|e| e != ".json"))
        .flat_map(names)
        .collect();
    file_rules
        .iter()
        .flat_map(names)
        .filter(|n| !with_data.contains(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_is_interpreted() {
        let s = Schema::embedded();
        assert_eq!(s.schema_version(), "1.2.7");
        assert_eq!(s.entity_by_key["sub"], "subject");
        assert_eq!(s.entity_info["run"].1, "index");
        assert_eq!(s.entity_order.first().map(String::as_str), Some("subject"));
        assert!(
            s.file_rules
                .iter()
                .any(|r| r.name == "raw.anat.nonparametric" && r.suffixes.contains(&"T1w".into()))
        );
        assert!(
            s.file_rules
                .iter()
                .any(|r| r.path.as_deref() == Some("dataset_description.json"))
        );
        assert!(s.sidecar_rules.iter().any(|r| {
            r.fields
                .iter()
                .any(|(f, l, _)| f == "SkullStripped" && l == "required")
        }));
        assert!(
            s.checks
                .iter()
                .any(|c| c.code == "T1W_FILE_WITH_TOO_MANY_DIMENSIONS")
        );
        assert_eq!(s.modality_of["anat"], "mri");
        assert!(s.opaque_dirs.contains(&"sourcedata".to_string()));
        assert!(s.metadata_definition("SkullStripped").is_some());
    }
}
