//! Which site (scanner) each image was acquired at, for training and for choosing a target:
//! `sessions.tsv` (per session, most specific), then `participants.tsv` (the `--site-column`,
//! default `site`), then the image's sidecar (InstitutionName, Manufacturer,
//! ManufacturersModelName, MagneticFieldStrength), and a per-site summary.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{BidsError, BidsFile, Entity, Layout};

/// An image's site and where the label came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    /// The label (as written in the table, or built from the sidecar).
    #[serde(rename = "Label")]
    pub label: String,
    /// Where it came from (`participants.tsv column site`, …).
    #[serde(rename = "Source")]
    pub source: String,
}

/// Why no site could be given.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A table or sidecar could not be read.
    #[error(transparent)]
    Bids(#[from] BidsError),
    /// Nothing names the site.
    #[error(
        "{0}: no site: participants.tsv has no '{1}' value for this subject, sessions.tsv none for this session, \
         and the sidecar has none of InstitutionName, Manufacturer, ManufacturersModelName, MagneticFieldStrength; \
         add a '{1}' column to participants.tsv (or name the column with --site-column)"
    )]
    Unknown(String, String),
}

/// The site of `file`, looked up as the module documentation says.
pub fn site_of(
    layout: &Layout,
    file: &BidsFile,
    metadata: &Map<String, Value>,
    column: &str,
) -> Result<Site, SiteError> {
    let subject = file.entity(Entity::Subject).unwrap_or_default();
    if let Some(session) = file.entity(Entity::Session)
        && let Some(table) = layout.sessions_table(subject)?
        && let Some(v) = table.get(&format!("ses-{session}"), column)
    {
        return Ok(Site {
            label: v.to_string(),
            source: format!("sub-{subject}_sessions.tsv column {column}"),
        });
    }
    if let Some(table) = layout.participants()
        && let Some(v) = table.get(&format!("sub-{subject}"), column)
    {
        return Ok(Site {
            label: v.to_string(),
            source: format!("participants.tsv column {column}"),
        });
    }
    if let Some(label) = sidecar_site(metadata) {
        return Ok(Site {
            label,
            source: "sidecar InstitutionName, Manufacturer, ManufacturersModelName, MagneticFieldStrength"
                .into(),
        });
    }
    Err(SiteError::Unknown(
        file.rel_path().to_string(),
        column.to_string(),
    ))
}

/// `Institution / Manufacturer Model / 3T` from whichever of the four fields are present.
pub fn sidecar_site(metadata: &Map<String, Value>) -> Option<String> {
    let text = |k: &str| {
        metadata
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let field = metadata
        .get("MagneticFieldStrength")
        .and_then(Value::as_f64)
        .map(|t| format!("{t}T"));
    let scanner: Vec<String> = [text("Manufacturer"), text("ManufacturersModelName"), field]
        .into_iter()
        .flatten()
        .collect();
    let parts: Vec<String> = [text("InstitutionName"), Some(scanner.join(" "))]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" / "))
}

/// A file-name-safe form of a site label: ASCII letters and digits kept, runs of anything else
/// become one `-`, plus 8 hex digits of the label's SHA-256 when anything was changed (so
/// `Site A` and `Site-A` never share a cache file).
pub fn site_slug(label: &str) -> String {
    let mut s = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-').to_string();
    if s == label && !s.is_empty() {
        return s;
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(label.as_bytes());
    let hex: String = h.iter().take(4).map(|b| format!("{b:02x}")).collect();
    if s.is_empty() {
        hex
    } else {
        format!("{s}-{hex}")
    }
}

/// Subjects and images per site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SiteCount {
    /// Distinct subjects.
    #[serde(rename = "Subjects")]
    pub subjects: usize,
    /// Images.
    #[serde(rename = "Images")]
    pub images: usize,
}

/// Counts subjects and images per site from (subject, site) pairs, one per image.
pub fn site_summary<'a>(
    images: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, SiteCount> {
    let mut subjects: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut out: BTreeMap<String, SiteCount> = BTreeMap::new();
    for (subject, site) in images {
        subjects
            .entry(site.to_string())
            .or_default()
            .insert(subject.to_string());
        out.entry(site.to_string()).or_default().images += 1;
    }
    for (site, s) in subjects {
        if let Some(c) = out.get_mut(&site) {
            c.subjects = s.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sidecar_sites_join_the_fields_present() {
        let m = json!({"InstitutionName": "IU", "Manufacturer": "Siemens", "ManufacturersModelName": "Prisma_fit", "MagneticFieldStrength": 3});
        assert_eq!(
            sidecar_site(m.as_object().unwrap()).as_deref(),
            Some("IU / Siemens Prisma_fit 3T")
        );
        let m = json!({"Manufacturer": "Philips"});
        assert_eq!(
            sidecar_site(m.as_object().unwrap()).as_deref(),
            Some("Philips")
        );
        assert_eq!(sidecar_site(json!({}).as_object().unwrap()), None);
    }

    #[test]
    fn slugs_are_safe_and_distinct() {
        assert_eq!(site_slug("HH"), "HH");
        let a = site_slug("Site A");
        let b = site_slug("Site-A");
        assert!(
            a.starts_with("Site-A-") && b == "Site-A" && a != b,
            "{a} {b}"
        );
        assert!(
            site_slug("../x")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        );
        assert_eq!(site_slug("é").len(), 8);
    }

    #[test]
    fn summary_counts_subjects_and_images() {
        let s = site_summary([("01", "HH"), ("02", "HH"), ("03", "IU"), ("03", "IU")]);
        assert_eq!(
            s["HH"],
            SiteCount {
                subjects: 2,
                images: 2
            }
        );
        assert_eq!(
            s["IU"],
            SiteCount {
                subjects: 1,
                images: 2
            }
        );
    }
}
