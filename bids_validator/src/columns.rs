//! Tabular files against the schema's table rules: required, ordered and unique columns, values
//! against the column definitions, and columns nobody describes.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::dataset::DatasetInfo;
use crate::expr;
use crate::files::read_text;
use crate::report::{Issue, Severity, issue};
use crate::rules::conforms;
use crate::schema::FieldRule;

/// Checks a table against a tabular rule: required columns (`TSV_COLUMN_MISSING`), the order of
/// the initial columns (`TSV_COLUMN_ORDER_INCORRECT`), unique index values
/// (`TSV_INDEX_VALUE_NOT_UNIQUE`), values against the column definitions (`TSV_VALUE_INCORRECT_TYPE`,
/// first bad value per column; a definition in the table's JSON sidecar replaces the schema's, so
/// such columns are not checked against the schema), and extra columns nobody describes
/// (`TSV_ADDITIONAL_COLUMNS_UNDEFINED`, a warning).
pub(crate) fn check_columns(
    info: &DatasetInfo,
    rule: &FieldRule,
    cols: &Map<String, Value>,
    header: &[String],
    loc: &str,
) -> Vec<Issue> {
    let mut out = structure_issues(rule, cols, header, loc);
    // Columns the table's own JSON sidecar defines.
    let sidecar_path = info
        .root
        .join(loc.trim_start_matches('/'))
        .with_extension("json");
    let defined: Map<String, Value> = read_text(&sidecar_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    for (name, _, key) in &rule.fields {
        let (Some(Value::Array(values)), Some(def)) = (
            cols.get(name),
            info.schema.value()["objects"]["columns"].get(key),
        ) else {
            continue;
        };
        if defined.contains_key(name) {
            continue;
        }
        out.extend(value_issues(name, values, def, loc));
    }
    out.extend(undefined_columns(rule, cols, &defined, loc));
    out
}

/// Required columns, the order of the initial columns, unique index values.
fn structure_issues(
    rule: &FieldRule,
    cols: &Map<String, Value>,
    header: &[String],
    loc: &str,
) -> Vec<Issue> {
    let mut out = Vec::new();
    for (col, level, _) in &rule.fields {
        if level == "required" && !cols.contains_key(col) {
            out.push(
                issue(
                    "TSV_COLUMN_MISSING",
                    Severity::Error,
                    Some(loc),
                    format!("A required column '{col}' is missing."),
                    &format!("Add the column '{col}' (rule {}).", rule.name),
                )
                .with_sub_code(col),
            );
        }
    }
    for (pos, want) in rule.initial_columns.iter().enumerate() {
        if cols.contains_key(want) && header.get(pos) != Some(want) {
            out.push(
                issue(
                    "TSV_COLUMN_ORDER_INCORRECT",
                    Severity::Error,
                    Some(loc),
                    format!("Column '{want}' must be column {} of the table.", pos + 1),
                    "Reorder the columns.",
                )
                .with_sub_code(want),
            );
        }
    }
    for col in &rule.index_columns {
        if let Some(Value::Array(values)) = cols.get(col) {
            let mut seen = HashSet::new();
            if let Some(dup) = values
                .iter()
                .filter_map(Value::as_str)
                .find(|v| !seen.insert(*v))
            {
                out.push(
                    issue(
                        "TSV_INDEX_VALUE_NOT_UNIQUE",
                        Severity::Error,
                        Some(loc),
                        format!("'{dup}' appears more than once in the index column '{col}'."),
                        "Keep one row per index value.",
                    )
                    .with_sub_code(col),
                );
            }
        }
    }
    out
}

/// One column's values against its schema definition: the first bad value, and the deprecated
/// pseudo-age `89+`.
fn value_issues(name: &str, values: &[Value], def: &Value, loc: &str) -> Vec<Issue> {
    // Columns are defined either JSON-schema style (`type`, `pattern`) or sidecar style
    // (`definition.Format`, `Minimum`, `Maximum`).
    let sidecar_style = &def["definition"];
    let format = def["type"]
        .as_str()
        .or_else(|| sidecar_style["Format"].as_str());
    let numeric = matches!(format, Some("number") | Some("integer"));
    let pattern = def["pattern"].as_str();
    let (min, max) = (
        sidecar_style["Minimum"].as_f64(),
        sidecar_style["Maximum"].as_f64(),
    );
    let mut pseudo_age = false;
    let bad = values.iter().enumerate().find(|(_, v)| {
        let Some(text) = v.as_str() else { return false };
        if text == "n/a" {
            return false;
        }
        if name == "age" && text == "89+" {
            pseudo_age = true;
            return false;
        }
        let value = if numeric {
            match text.parse::<f64>() {
                Ok(x) if x.is_finite() => serde_json::Number::from_f64(x)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                _ => return true,
            }
        } else {
            Value::String(text.to_string())
        };
        let out_of_range = value.as_f64().is_some_and(|x| {
            min.is_some_and(|m| x < m)
                || max.is_some_and(|m| x > m)
                || (format == Some("integer") && x.fract() != 0.0)
        });
        out_of_range
            || !conforms(&value, def)
            || pattern.is_some_and(|p| !expr::regex_match(&format!("^(?:{p})$"), text))
    });
    let mut out = Vec::new();
    if pseudo_age {
        out.push(
            issue(
                "TSV_PSEUDO_AGE_DEPRECATED",
                Severity::Warning,
                Some(loc),
                "The age '89+' is deprecated.".into(),
                "Write 89 for ages of 89 and above.",
            )
            .with_sub_code(name),
        );
    }
    if let Some((row, v)) = bad {
        out.push(
            issue(
                "TSV_VALUE_INCORRECT_TYPE",
                Severity::Error,
                Some(loc),
                format!("Value {v} in column '{name}' (line {}) does not match the column's definition.", row + 2),
                &format!(
                    "See the definition of the '{name}' column in the BIDS specification (or define it in the table's JSON sidecar); write n/a for unknown values."
                ),
            )
            .with_sub_code(name),
        );
    }
    out
}

/// Extra columns are fine where allowed, but should be described (a warning, as the reference).
fn undefined_columns(
    rule: &FieldRule,
    cols: &Map<String, Value>,
    defined: &Map<String, Value>,
    loc: &str,
) -> Vec<Issue> {
    if !matches!(
        rule.additional_columns.as_deref(),
        Some("allowed") | Some("allowed_if_defined")
    ) {
        return Vec::new();
    }
    cols.keys()
        .filter(|col| !rule.fields.iter().any(|(n, _, _)| n == *col) && !defined.contains_key(*col))
        .map(|col| {
            issue(
                "TSV_ADDITIONAL_COLUMNS_UNDEFINED",
                Severity::Warning,
                Some(loc),
                format!("Column '{col}' is not defined by BIDS or in the table's JSON sidecar."),
                "Describe the column in the .json file next to the table.",
            )
            .with_sub_code(col)
        })
        .collect()
}
