//! The checks of one file: its folders, its name against the schema's file rules, its content
//! (NIfTI header, JSON, TSV) as the schema's expressions see it, its metadata against the field
//! and table rules, and the schema's checks.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::columns::check_columns;
use crate::dataset::{AMBIGUOUS_SIDECARS, DatasetInfo, FileContext, sidecar};
use crate::expr::{self, eval, truthy};
use crate::files::{FileEntry, NOT_UTF8, read_text, read_tsv};
use crate::names::{NameParts, invalid_dirs, location_and_order};
use crate::nifti;
use crate::report::{Issue, Options, Severity, issue};
use crate::rules::{check_types, field_level_issue, rule_matches};
use crate::schema::Schema;

/// Validates one file; returns its issues and the sidecars its metadata came from. The issues
/// come in a fixed order (the report keeps the first of equal ones).
pub(crate) fn validate_file(
    info: &DatasetInfo,
    entry: &FileEntry,
    parts: &NameParts,
    options: &Options,
) -> (Vec<Issue>, Vec<String>) {
    let schema = info.schema;
    let loc = entry.path.as_str();
    // Inside a folder BIDS does not know, the folder is the finding (as the reference reports it).
    let bad_dirs = invalid_dirs(schema, loc, info.is_derivative);
    if !bad_dirs.is_empty() {
        return (unknown_folder_issues(entry, &bad_dirs), Vec::new());
    }
    let mut out = Vec::new();
    if let Some(kind) = entry.special {
        // The reference sees size 0 here; the message says what the path really is.
        out.push(issue(
            "EMPTY_FILE",
            Severity::Error,
            Some(loc),
            format!("This is {kind}, not a regular file: it holds no data."),
            "Replace it with the real file (a regular file, or a link to one).",
        ));
    } else if entry.size == 0 && !entry.dangling {
        out.push(issue(
            "EMPTY_FILE",
            Severity::Error,
            Some(loc),
            "Empty files are not allowed.".into(),
            "Replace the 0-byte file with the real data (placeholders must be fetched, e.g. `datalad get`).",
        ));
    }
    let mut values = name_values(schema, entry, parts);
    let is_json = parts.extension == ".json";
    let (sidecar_fields, sidecar_origin, used_sidecars) = if is_json {
        (Map::new(), HashMap::new(), Vec::new())
    } else {
        sidecar(info, loc, parts)
    };
    values.insert("sidecar".into(), Value::Object(sidecar_fields.clone()));
    if let Some(first) = sidecar_origin.get(AMBIGUOUS_SIDECARS) {
        // Reported at the first competing sidecar, as the reference does.
        out.push(issue(
            "MULTIPLE_INHERITABLE_FILES",
            Severity::Error,
            Some(first),
            "Several sidecars at one folder level apply to this file and none matches its entities exactly.".into(),
            "Keep one sidecar per level, or add one named exactly like the data file.",
        ));
    }
    let abs = info.root.join(loc.trim_start_matches('/'));
    read_image_headers(&abs, entry, parts, options, &mut values, &mut out);
    let json_content = read_json(&abs, entry, parts, &mut values, &mut out);
    let tsv_header = read_table(&abs, entry, parts, &mut values, &mut out);
    let ctx = FileContext {
        info,
        entry,
        values,
    };

    let (included, name_issues) = name_issues(schema, loc, parts, &ctx);
    out.extend(name_issues);
    if included && !is_json {
        // Derivative datasets answer to the derivative sidecar rules only (as the reference
        // validator does): a preprocessed BOLD need not repeat the raw acquisition fields.
        let applicable = schema.sidecar_rules.iter().filter(|r| {
            !r.unbuildable && r.name.starts_with("sidecars.derivatives.") == info.is_derivative
        });
        for rule in applicable.filter(|r| holds(&r.selectors, &ctx)) {
            out.extend(field_level_issue(rule, &sidecar_fields, loc, "SIDECAR"));
            let mut typed = check_types(schema, &sidecar_fields, rule, loc);
            for i in &mut typed {
                // Report a bad value where it is written: the sidecar that set it.
                if let Some(o) = i.sub_code.as_ref().and_then(|f| sidecar_origin.get(f)) {
                    i.location = Some(o.clone());
                }
            }
            out.extend(typed);
        }
    }
    if let Some(Value::Object(content)) = &json_content {
        for rule in schema
            .dataset_rules
            .iter()
            .filter(|r| holds(&r.selectors, &ctx))
        {
            out.extend(field_level_issue(rule, content, loc, "JSON"));
            out.extend(check_types(schema, content, rule, loc));
        }
    }
    if let Some(Value::Object(cols)) = ctx.values.get("columns") {
        for rule in schema
            .table_rules
            .iter()
            .filter(|r| !r.unbuildable && holds(&r.selectors, &ctx))
        {
            out.extend(check_columns(info, rule, cols, &tsv_header, loc));
        }
    }
    out.extend(schema_check_issues(schema, loc, &ctx));
    (out, used_sidecars)
}

/// Whether a rule's selectors all hold for the file.
fn holds(selectors: &[expr::Expr], ctx: &FileContext) -> bool {
    selectors.iter().all(|s| truthy(&eval(s, ctx)))
}

/// A file inside folders BIDS does not allow (`bad_dirs`, outermost first): each folder, and the
/// file itself (as an empty file of the innermost folder when it is empty).
fn unknown_folder_issues(entry: &FileEntry, bad_dirs: &[String]) -> Vec<Issue> {
    let loc = entry.path.as_str();
    let mut out: Vec<Issue> = bad_dirs
        .iter()
        .map(|d| {
            issue(
                "NOT_INCLUDED",
                Severity::Error,
                Some(d),
                "Folders with such names are not part of BIDS specification.".into(),
                "Move the folder out of the dataset, or list it in .bidsignore.",
            )
        })
        .collect();
    let parent = bad_dirs.last().map(String::as_str);
    if entry.size == 0 && !entry.dangling {
        out.push(issue(
            "EMPTY_FILE",
            Severity::Error,
            parent,
            format!("Empty files are not allowed ({loc})."),
            "Replace the 0-byte file with the real data.",
        ));
    } else {
        out.push(issue(
            "NOT_INCLUDED",
            Severity::Error,
            Some(loc),
            "Files with such naming scheme are not part of BIDS specification.".into(),
            "Move the file out of the dataset, or list it in .bidsignore.",
        ));
    }
    out
}

/// What the schema's expressions know of a file from its name: `path`, `size`, `stem`,
/// `extension`, `suffix`, `datatype`, `modality`, and `entities` by file-name key.
fn name_values(schema: &Schema, entry: &FileEntry, parts: &NameParts) -> Map<String, Value> {
    let optional = |v: Option<String>| v.map(Value::String).unwrap_or(Value::Null);
    let mut values = Map::new();
    values.insert("path".into(), json!(entry.path));
    values.insert("size".into(), json!(entry.size));
    values.insert("stem".into(), json!(parts.stem));
    values.insert("extension".into(), json!(parts.extension));
    values.insert("suffix".into(), optional(parts.suffix.clone()));
    values.insert("datatype".into(), optional(parts.datatype.clone()));
    let modality = parts
        .datatype
        .as_ref()
        .and_then(|d| schema.modality_of.get(d).cloned());
    values.insert("modality".into(), optional(modality));
    // Entities by file-name key (`entities.res`, `"res" in entities`), as the reference builds them.
    let mut entities = Map::new();
    for (long, v) in &parts.entities {
        if let Some((key, _)) = schema.entity_info.get(long) {
            entities.insert(key.clone(), json!(v));
        }
    }
    values.insert("entities".into(), Value::Object(entities));
    values
}

/// A NIfTI file's header (`nifti_header`, or `NIFTI_HEADER_UNREADABLE`) and a gzip file's header
/// (`gzip`).
fn read_image_headers(
    abs: &Path,
    entry: &FileEntry,
    parts: &NameParts,
    options: &Options,
    values: &mut Map<String, Value>,
    out: &mut Vec<Issue>,
) {
    let is_nifti = parts.extension == ".nii" || parts.extension == ".nii.gz";
    if is_nifti && !options.ignore_nifti_headers && !entry.dangling && entry.special.is_none() {
        match nifti::nifti_header(abs) {
            Ok(h) => {
                values.insert("nifti_header".into(), h);
            }
            Err(e) => out.push(issue(
                "NIFTI_HEADER_UNREADABLE",
                Severity::Error,
                Some(&entry.path),
                format!("NIfTI file's header is corrupted or incorrectly formatted ({e})."),
                "Re-export the image (e.g. with dcm2niix) or fetch the complete file.",
            )),
        }
    }
    if parts.extension.ends_with(".gz")
        && entry.size > 0
        && let Some(g) = nifti::gzip_header(abs)
    {
        values.insert("gzip".into(), g);
    }
}

/// A JSON file's object (`json`), or `JSON_INVALID`.
fn read_json(
    abs: &Path,
    entry: &FileEntry,
    parts: &NameParts,
    values: &mut Map<String, Value>,
    out: &mut Vec<Issue>,
) -> Option<Value> {
    if parts.extension != ".json" || entry.size == 0 {
        return None;
    }
    match read_text(abs)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        Some(v @ Value::Object(_)) => {
            values.insert("json".into(), v.clone());
            Some(v)
        }
        _ => {
            out.push(issue(
                "JSON_INVALID",
                Severity::Error,
                Some(&entry.path),
                "Not a valid JSON object.".into(),
                "Fix the JSON syntax; a sidecar must be an object ({\"Key\": value}).",
            ));
            None
        }
    }
}

/// A TSV file's columns (`columns`) and header, or why it cannot be read; a duplicated header or
/// an empty line is reported.
fn read_table(
    abs: &Path,
    entry: &FileEntry,
    parts: &NameParts,
    values: &mut Map<String, Value>,
    out: &mut Vec<Issue>,
) -> Vec<String> {
    if parts.extension != ".tsv" || entry.size == 0 {
        return Vec::new();
    }
    let loc = entry.path.as_str();
    match read_tsv(abs) {
        Ok(t) => {
            let mut seen = HashSet::new();
            if let Some(dup) = t.header.iter().find(|h| !seen.insert(h.as_str())) {
                out.push(
                    issue(
                        "TSV_COLUMN_HEADER_DUPLICATE",
                        Severity::Error,
                        Some(loc),
                        format!("The column '{dup}' appears twice in the header."),
                        "Give every column a unique name.",
                    )
                    .with_sub_code(dup),
                );
            }
            if let Some(line) = t.empty_line {
                out.push(issue(
                    "TSV_EMPTY_LINE",
                    Severity::Error,
                    Some(loc),
                    format!("Line {line} is empty."),
                    "Remove empty lines from the table.",
                ));
            }
            values.insert("columns".into(), Value::Object(t.columns));
            t.header
        }
        Err(e) => {
            out.push(if e == NOT_UTF8 {
                issue(
                    "INVALID_FILE_ENCODING",
                    Severity::Error,
                    Some(loc),
                    "The file is not UTF-8 text.".into(),
                    "Save the table as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).",
                )
            } else {
                issue(
                    "TSV_EQUAL_ROWS",
                    Severity::Error,
                    Some(loc),
                    format!("TSV file is malformed: {e}."),
                    "Separate cells with tabs, one row per line, n/a for missing values.",
                )
            });
            Vec::new()
        }
    }
}

/// The file's name against the schema's file rules (`MISSING_REQUIRED_ENTITY`,
/// `DATATYPE_MISMATCH`, `NOT_INCLUDED`), its entity values against their formats, and its place
/// (`INVALID_LOCATION`, `FILENAME_MISMATCH`). Returns whether a rule identifies the file, and the
/// issues.
fn name_issues(
    schema: &Schema,
    loc: &str,
    parts: &NameParts,
    ctx: &FileContext,
) -> (bool, Vec<Issue>) {
    let mut out = Vec::new();
    let matches = |ignore_datatype, ignore_required| {
        schema
            .file_rules
            .iter()
            .any(|r| rule_matches(r, loc, parts, ctx, ignore_datatype, ignore_required))
    };
    let strict = matches(false, false);
    // A name that would be valid but lacks an entity its rule requires is still identified (so its
    // sidecar and checks apply) and reported as such, as the reference does.
    let missing_required = !strict && matches(false, true);
    let included = strict || missing_required;
    let wrong_folder = !included && matches(true, false);
    if missing_required {
        out.push(issue(
            "MISSING_REQUIRED_ENTITY",
            Severity::Error,
            Some(loc),
            "The file's name lacks an entity its suffix requires (e.g. inv- for MP2RAGE, echo- for MEGRE).".into(),
            "Add the required entity to the file name.",
        ));
    }
    if wrong_folder {
        out.push(issue(
            "DATATYPE_MISMATCH",
            Severity::Error,
            Some(loc),
            format!(
                "The file's name is valid, but not in the '{}' folder.",
                parts.datatype.as_deref().unwrap_or("(none)")
            ),
            "Move the file to the datatype folder its suffix belongs to (e.g. T1w in anat/).",
        ));
    } else if !included {
        out.push(issue(
            "NOT_INCLUDED",
            Severity::Error,
            Some(loc),
            "Files with such naming scheme are not part of BIDS specification.".into(),
            "Rename the file following the BIDS naming rules, or list it in .bidsignore.",
        ));
    }
    if included {
        out.extend(entity_label_issues(schema, loc, parts));
        out.extend(location_and_order(schema, loc, parts));
    }
    (included, out)
}

/// Entity values must follow their format (label: letters and digits; index: digits).
fn entity_label_issues(schema: &Schema, loc: &str, parts: &NameParts) -> Vec<Issue> {
    let mut out = Vec::new();
    for (long, value) in &parts.entities {
        let format = schema
            .entity_info
            .get(long)
            .map(|(_, f)| f.as_str())
            .unwrap_or("label");
        let pattern = schema.value()["objects"]["formats"][format]["pattern"]
            .as_str()
            .unwrap_or("[0-9a-zA-Z]+");
        if expr::regex_match(&format!("^(?:{pattern})$"), value) {
            continue;
        }
        let code = if value.is_empty() {
            "ENTITY_WITH_NO_LABEL"
        } else {
            "INVALID_ENTITY_LABEL"
        };
        out.push(
            issue(
                code,
                Severity::Error,
                Some(loc),
                format!(
                    "The value '{value}' of entity '{long}' does not match its format ({format})."
                ),
                "Follow the entity's format: labels are letters and digits (no '-' or '_'), indices are digits.",
            )
            .with_sub_code(long),
        );
    }
    out
}

/// The schema's checks. A check that evaluates to null could not be decided from what this
/// validator knows (e.g. associations it does not build), so only a definite false raises the
/// issue.
fn schema_check_issues(schema: &Schema, loc: &str, ctx: &FileContext) -> Vec<Issue> {
    schema
        .checks
        .iter()
        .filter(|c| !c.unbuildable && holds(&c.selectors, ctx))
        .filter(|check| {
            check.checks.iter().any(|c| {
                let v = eval(c, ctx);
                !v.is_null() && !truthy(&v)
            })
        })
        .map(|check| {
            let severity = if check.level == "error" {
                Severity::Error
            } else {
                Severity::Warning
            };
            issue(
                &check.code,
                severity,
                Some(loc),
                check.message.clone(),
                &format!("Schema check {}.", check.name),
            )
        })
        .collect()
}
