//! The schema's file-name rules and metadata field rules applied to one file: whether a rule
//! matches its name, which required or recommended fields are missing, and whether values have
//! their defined types.

use serde_json::{Map, Value};

use crate::dataset::FileContext;
use crate::expr::{eval, truthy};
use crate::names::NameParts;
use crate::report::{Issue, Severity, issue};
use crate::schema::{FieldRule, FileRule, Schema};

/// Whether a file-name rule matches the file. `ignore_datatype` drops the datatype-folder condition
/// (to tell a misplaced file from an unknown one); `ignore_required` drops the required entities
/// (to tell a name lacking one from an unknown one).
pub(crate) fn rule_matches(
    rule: &FileRule,
    path: &str,
    parts: &NameParts,
    ctx: &FileContext,
    ignore_datatype: bool,
    ignore_required: bool,
) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let depth = path.matches('/').count();
    if let Some(p) = &rule.path {
        return path.trim_start_matches('/') == p;
    }
    if !rule.selectors.iter().all(|s| truthy(&eval(s, ctx))) {
        return false;
    }
    if let Some(stem) = &rule.stem {
        let in_place = if rule.datatypes.is_empty() {
            depth == 1
        } else {
            rule.datatypes
                .iter()
                .any(|d| path.starts_with(&format!("/{d}/")) && depth == 2)
        };
        let stem_ok = stem == "*" || name.split('.').next() == Some(stem.as_str());
        return in_place && stem_ok && rule.extensions.contains(&parts.extension);
    }
    let Some(suffix) = &parts.suffix else {
        return false;
    };
    if parts.unknown_entity
        || !rule.suffixes.contains(suffix)
        || !rule.extensions.contains(&parts.extension)
    {
        return false;
    }
    // Sidecars above the datatype folder (inheritance principle) have no datatype and may omit
    // subject/session.
    let inherited_sidecar = [".json", ".tsv", ".bval", ".bvec"].contains(&parts.extension.as_str())
        && parts.datatype.is_none();
    // Files at the root (inheritance-level metadata such as `/bold.json`) need no entity at all.
    let at_root = depth == 1;
    if !rule.datatypes.is_empty() && !inherited_sidecar && !ignore_datatype {
        match &parts.datatype {
            Some(d) if rule.datatypes.contains(d) => {}
            _ => return false,
        }
    }
    for (e, _) in &parts.entities {
        if !rule.entities.iter().any(|(r, _)| r == e) {
            return false;
        }
    }
    rule.entities
        .iter()
        .filter(|(_, required)| *required)
        .all(|(e, _)| {
            parts.entities.iter().any(|(x, _)| x == e)
                            || (inherited_sidecar && (at_root || e == "subject" || e == "session"))
                        // Derivative datasets are not held to raw required entities (as the reference).
            || ignore_required
            || ctx.info.is_derivative
        })
}

/// `<kind>_KEY_REQUIRED` / `<kind>_KEY_RECOMMENDED` for each field of the rule missing from
/// `present` (`kind` is `SIDECAR` or `JSON`).
pub(crate) fn field_level_issue(
    rule: &FieldRule,
    present: &Map<String, Value>,
    location: &str,
    kind: &str,
) -> Vec<Issue> {
    let mut out = Vec::new();
    for (field, level, _) in &rule.fields {
        if present.contains_key(field) {
            continue;
        }
        let (code, severity) = match level.as_str() {
            "required" => (format!("{kind}_KEY_REQUIRED"), Severity::Error),
            "recommended" => (format!("{kind}_KEY_RECOMMENDED"), Severity::Warning),
            _ => continue,
        };
        out.push(
            issue(
                &code,
                severity,
                Some(location),
                format!(
                    "{} field '{field}' is missing.",
                    if severity == Severity::Error {
                        "A required"
                    } else {
                        "A recommended"
                    }
                ),
                &format!("Add \"{field}\" to the JSON (rule {}).", rule.name),
            )
            .with_sub_code(field),
        );
    }
    out
}

/// Type-checks present metadata values against their schema definitions.
pub(crate) fn check_types(
    schema: &Schema,
    fields: &Map<String, Value>,
    rule: &FieldRule,
    location: &str,
) -> Vec<Issue> {
    let mut out = Vec::new();
    for (field, _, key) in &rule.fields {
        let (Some(v), Some(def)) = (fields.get(field), schema.metadata_definition(key)) else {
            continue;
        };
        if !conforms(v, def) {
            out.push(
                issue(
                    "JSON_SCHEMA_VALIDATION_ERROR",
                    Severity::Error,
                    Some(location),
                    format!(
                        "'{field}' has a value of the wrong type or outside the allowed values: {v}"
                    ),
                    &format!("See the definition of {field} in the BIDS specification."),
                )
                .with_sub_code(field),
            );
        }
    }
    out
}

/// A small JSON-schema check: `type`, `enum`, `anyOf`, `items`, `minimum`/`maximum`.
pub(crate) fn conforms(v: &Value, def: &Value) -> bool {
    if let Some(any) = def["anyOf"].as_array() {
        return any.iter().any(|d| conforms(v, d));
    }
    if let Some(options) = def["enum"].as_array()
        && !options.contains(v)
    {
        return false;
    }
    let type_ok = match def["type"].as_str() {
        Some("string") => v.is_string(),
        Some("number") => v.is_number(),
        Some("integer") => v.as_f64().is_some_and(|x| x.fract() == 0.0),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("object") => v.is_object(),
        Some("null") => v.is_null(),
        _ => true,
    };
    if !type_ok {
        return false;
    }
    if let (Some(x), Some(min)) = (v.as_f64(), def["minimum"].as_f64())
        && x < min
    {
        return false;
    }
    if let (Some(x), Some(max)) = (v.as_f64(), def["maximum"].as_f64())
        && x > max
    {
        return false;
    }
    if let (Some(items), Some(d)) = (v.as_array(), def.get("items"))
        && d.is_object()
        && !items.iter().all(|x| conforms(x, d))
    {
        return false;
    }
    true
}
