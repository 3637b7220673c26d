//! File names and folders: a name split into BIDS parts, and the checks of where a file sits
//! (`INVALID_LOCATION`, `FILENAME_MISMATCH`, folders BIDS does not allow).

use std::collections::HashSet;

use crate::report::{Issue, Severity, issue};
use crate::schema::Schema;

/// A file name split into BIDS parts, with entity long names.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameParts {
    pub(crate) entities: Vec<(String, String)>,
    pub(crate) unknown_entity: bool,
    pub(crate) suffix: Option<String>,
    pub(crate) extension: String,
    pub(crate) stem: String,
    pub(crate) datatype: Option<String>,
}

pub(crate) fn name_parts(schema: &Schema, path: &str) -> NameParts {
    let name = path.rsplit('/').next().unwrap_or(path);
    let (stem, extension) = match name.find('.') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    let mut parts = NameParts {
        stem: stem.to_string(),
        extension: extension.to_string(),
        ..Default::default()
    };
    let pieces: Vec<&str> = stem.split('_').collect();
    for (i, p) in pieces.iter().enumerate() {
        match p.split_once('-') {
            Some((k, v)) => match schema.entity_by_key.get(k) {
                Some(long) => parts.entities.push((long.clone(), v.to_string())),
                None => parts.unknown_entity = true,
            },
            None if i + 1 == pieces.len() => parts.suffix = Some(p.to_string()),
            None => parts.unknown_entity = true,
        }
    }
    let dirs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let dt = match dirs.as_slice() {
        [s, d, _] if s.starts_with("sub-") || s.starts_with("tpl-") => Some(*d),
        [s, ses, d, _]
            if (s.starts_with("sub-") || s.starts_with("tpl-"))
                && (ses.starts_with("ses-") || ses.starts_with("cohort-")) =>
        {
            Some(*d)
        }
        _ => None,
    };
    parts.datatype = dt
        .filter(|d| {
            schema.value()["objects"]["datatypes"]
                .as_object()
                .is_some_and(|m| m.contains_key(*d))
        })
        .map(str::to_string);
    parts
}

/// `INVALID_LOCATION` (a file whose `sub`/`ses` entities disagree with its folders, so its data
/// would be attributed to another subject) and `FILENAME_MISMATCH` (entities out of the
/// specification's order), as the reference checks them.
pub(crate) fn location_and_order(schema: &Schema, path: &str, parts: &NameParts) -> Vec<Issue> {
    let mut out = Vec::new();
    let value = |long: &str| {
        parts
            .entities
            .iter()
            .find(|(e, _)| e == long)
            .map(|(_, v)| v.as_str())
    };
    for (top, sub) in [("subject", "session"), ("template", "cohort")] {
        let (tk, sk) = (
            schema
                .entity_info
                .get(top)
                .map(|x| x.0.as_str())
                .unwrap_or(top),
            schema
                .entity_info
                .get(sub)
                .map(|x| x.0.as_str())
                .unwrap_or(sub),
        );
        let Some(tv) = value(top) else { continue };
        let mut expected = format!("/{tk}-{tv}/");
        if let Some(sv) = value(sub) {
            expected.push_str(&format!("{sk}-{sv}/"));
        }
        let misplaced = !path.starts_with(&expected)
            || (value(sub).is_none() && path.contains(&format!("/{sk}-")));
        if misplaced {
            out.push(issue(
                "INVALID_LOCATION",
                Severity::Error,
                Some(path),
                format!("The file's entities say it belongs under {expected}."),
                "Move the file to the folder its sub-/ses- entities name, or fix its name.",
            ));
        }
    }
    let mut ordered: Vec<&(String, String)> = parts.entities.iter().collect();
    let rank = |e: &str| {
        schema
            .entity_order
            .iter()
            .position(|x| x == e)
            .unwrap_or(usize::MAX)
    };
    ordered.sort_by_key(|(e, _)| rank(e));
    let duplicated = {
        let mut seen = HashSet::new();
        parts.entities.iter().any(|(e, _)| !seen.insert(e.as_str()))
    };
    if duplicated || ordered.iter().zip(&parts.entities).any(|(a, b)| *a != b) {
        out.push(issue(
            "FILENAME_MISMATCH",
            Severity::Error,
            Some(path),
            "Entities are repeated or not in the order the specification gives.".into(),
            "Rename the file with each entity once, in specification order (sub, ses, task, acq, ce, rec, run, ...).",
        ));
    }
    out
}

/// The folders on `path` that BIDS does not allow, from the first such folder down to the file's
/// own (`/sub-10/log/`, `/sub-10/log/2020.../`): top level `sub-*` and `phenotype`, then `ses-*`
/// or a datatype, then a datatype.
pub(crate) fn invalid_dirs(schema: &Schema, path: &str, derivative: bool) -> Vec<String> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let dirs = &segs[..segs.len().saturating_sub(1)];
    let is_datatype = |d: &str| {
        schema.value()["objects"]["datatypes"]
            .as_object()
            .is_some_and(|m| m.contains_key(d))
    };
    let mut first_bad = None;
    for (i, d) in dirs.iter().enumerate() {
        // Derivative datasets may also hold templates: tpl-<label>[/cohort-<label>]/<datatype>/.
        let top = dirs[0].starts_with("sub-") || (derivative && dirs[0].starts_with("tpl-"));
        let second = |x: &str| x.starts_with("ses-") || (derivative && x.starts_with("cohort-"));
        let ok = match i {
            0 => top || *d == "phenotype",
            1 => top && (second(d) || is_datatype(d)),
            2 => top && second(dirs[1]) && is_datatype(d),
            _ => false,
        };
        if !ok {
            first_bad = Some(i);
            break;
        }
    }
    let Some(first) = first_bad else {
        return Vec::new();
    };
    (first..dirs.len())
        .map(|k| format!("/{}/", dirs[..=k].join("/")))
        .collect()
}
