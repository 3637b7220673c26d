//! The reference an output is compared with: the same brain at the target site. On simulated
//! data, the traveling-subject ground truth put through the image's own registration and brain
//! mask; on real data, the same participant's image acquired at the target site (a
//! traveling-subject pair). Also which site is the target.

use std::collections::BTreeMap;
use std::path::Path;

use crate::derivatives::DerivativesDataset;
use crate::methods::{Method, MethodProvenance};
use crate::metrics::masked_correlation;
use crate::model::harmonize::TargetKind;
use crate::preprocess::itk::WorldAffine;
use crate::preprocess::mask::{BrainMask, MaskSource};
use crate::preprocess::resample::Grid;
use crate::preprocess::t1w::{KnownRegistration, preprocess_t1w};
use crate::settings::{Settings, TargetSpec};
use crate::simulate::dataset::GroundTruth;
use crate::volume::{Volume, read_nifti, to_closest_canonical};

use super::super::PipelineError;
use super::super::items::GroupItem;
use super::super::outputs::{MethodNames, OutputNames};
use super::eval_err;

/// The same brain at the target site, on this image's template grid.
pub(super) struct Reference {
    pub(super) image: Volume,
    /// Where the two are compared (this image's mask, or both masks when the reference has its
    /// own registration).
    pub(super) mask: Vec<bool>,
}

/// The target of the evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    /// The site references are taken at.
    pub(super) site: Option<String>,
    /// Whether HCLD's outputs were harmonised towards that site (not to another site or to a
    /// `--target-image`): only then is a target-site image's HCLD output an identity check.
    pub(super) hcld_to_site: bool,
}

/// The site references are taken at: `--target-site`, else the site HCLD outputs were
/// harmonised to, else the site with the most images.
pub(super) fn target(items: &[GroupItem], settings: &Settings, out: &DerivativesDataset) -> Target {
    // What the outputs of a method with a target record (their provenance's target).
    let recorded = items.iter().find_map(|item| {
        Method::ALL
            .iter()
            .filter(|m| m.has_target())
            .find_map(|&m| {
                let names = OutputNames::new(&item.job, settings.preprocessing.output_resolution);
                let name = MethodNames::new(m, &names).template;
                MethodProvenance::read(out, &name)?.target()
            })
    });
    let recorded_site = recorded
        .as_ref()
        .filter(|(kind, _)| *kind == TargetKind::Site)
        .map(|(_, label)| label.clone());
    let site = match &settings.harmonisation.target {
        Some(TargetSpec::Site(s)) => Some(s.clone()),
        _ => recorded_site.clone().or_else(|| {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for i in items {
                *counts.entry(i.site.label.as_str()).or_default() += 1;
            }
            counts
                .iter()
                .max_by_key(|(l, n)| (**n, std::cmp::Reverse(**l)))
                .map(|(l, _)| l.to_string())
        }),
    };
    let hcld_to_site = match &recorded {
        Some(_) => recorded_site.is_some() && recorded_site == site,
        None => !matches!(settings.harmonisation.target, Some(TargetSpec::Image(_))),
    };
    Target { site, hcld_to_site }
}

/// Two reconstructions of one acquisition may differ in their headers' rounding, not more.
const SAME_ACQUISITION_TOLERANCE_MM: f64 = 1e-3;

/// The image at `path` (the same brain as `item`, at another site) preprocessed with `item`'s
/// own registration and native brain mask (read from OUTPUT_DIR), so that it differs from the
/// item only by the site. `None` when the image is not on the item's native grid (another
/// acquisition: the pair has no common voxel grid).
fn with_item_registration(
    item: &GroupItem,
    path: &Path,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<Option<Volume>, PipelineError> {
    let names = OutputNames::new(&item.job, settings.preprocessing.output_resolution);
    let shown = |p: &Path| p.display().to_string();
    let (image, _) = read_nifti(path)
        .map_err(|e| eval_err(format!("{}: {e}; check the reference image", shown(path))))?;
    let image = to_closest_canonical(&image);
    let mask_path = out.path(&names.native_mask)?;
    let (mask, _) = read_nifti(&mask_path).map_err(|e| {
        eval_err(format!(
            "{}: {e}; rerun the participant level",
            shown(&mask_path)
        ))
    })?;
    if !Grid::of(&mask).matches(&Grid::of(&image), SAME_ACQUISITION_TOLERANCE_MM) {
        return Ok(None);
    }
    let xfm_path = out.path(&names.t1w_to_template)?;
    let text =
        crate::input::read_regular_text(&xfm_path, crate::input::TEXT_LIMIT).map_err(|e| {
            eval_err(format!(
                "{}: {}; rerun the participant level",
                shown(&xfm_path),
                crate::input::reason(&e)
            ))
        })?;
    let template_to_t1w = WorldAffine::from_itk_text(&text)
        .map_err(|e| eval_err(format!("{}: {e}", shown(&xfm_path))))?;
    let given = BrainMask {
        voxels: mask.data().iter().map(|&v| v > 0.5).collect(),
        source: MaskSource::Derivatives {
            file: shown(&mask_path),
        },
    };
    let metadata = serde_json::Map::new();
    let mut opts = settings.preprocessing.t1w_options(&metadata);
    opts.skull_stripped = Some("the reference shares the image's brain mask".into());
    let pre = preprocess_t1w(
        &image,
        Some(given),
        Some(KnownRegistration::Transform {
            template_to_t1w,
            file: shown(&xfm_path),
        }),
        &opts,
    )
    .map_err(|e| eval_err(format!("{}: {e}", shown(path))))?;
    Ok(Some(pre.template))
}

/// The simulated ground truth of `item` at `site` (none for an image of that site).
pub(super) fn simulated_reference(
    item: &GroupItem,
    truth: &GroundTruth,
    site: &str,
    mask: &[bool],
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<Option<Reference>, PipelineError> {
    if item.site.label == site {
        return Ok(None);
    }
    let Some(path) = truth.image(item.job.subject(), site) else {
        return Ok(None);
    };
    match with_item_registration(item, &path, settings, out)? {
        Some(image) => Ok(Some(Reference {
            image,
            mask: mask.to_vec(),
        })),
        None => Err(eval_err(format!(
            "{}: its grid differs from the subject's image {}; the ground truth belongs to another dataset",
            path.display(),
            item.job.path.display()
        ))),
    }
}

/// The same participant's image at the target site (a traveling-subject pair), on `item`'s
/// template grid: the partner's own preprocessed image, compared where both brain masks agree,
/// or, when both share the native voxel grid (the same acquisition reconstructed twice), the
/// partner preprocessed with `item`'s registration and mask, if that agrees better with `item`'s
/// image (a rescan planned on the same grid has moved: its own registration fits it better).
pub(super) fn pair_reference(
    item: &GroupItem,
    preproc: &Volume,
    partner: &GroupItem,
    mask: &[bool],
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<Reference, PipelineError> {
    let (image, _) = read_nifti(&partner.template)
        .map_err(|e| eval_err(format!("{}: {e}", partner.template.display())))?;
    let (m, _) = read_nifti(&partner.mask)
        .map_err(|e| eval_err(format!("{}: {e}", partner.mask.display())))?;
    if m.data().len() != mask.len() || image.data().len() != mask.len() {
        return Err(eval_err(format!(
            "{}: another template grid than {}; rerun the group level with one --output-resolution",
            partner.mask.display(),
            item.mask.display()
        )));
    }
    let both: Vec<bool> = m
        .data()
        .iter()
        .zip(mask)
        .map(|(&v, &a)| a && v > 0.5)
        .collect();
    let own = Reference { image, mask: both };
    let Some(shared) = with_item_registration(item, &partner.job.path, settings, out)? else {
        return Ok(own);
    };
    let agreement = |r: &Reference| masked_correlation(preproc.data(), r.image.data(), &r.mask);
    let shared = Reference {
        image: shared,
        mask: mask.to_vec(),
    };
    Ok(if agreement(&shared) >= agreement(&own) {
        shared
    } else {
        own
    })
}

/// The first other image of the same participant acquired at `site`.
pub(super) fn partner_at<'a>(
    item: &GroupItem,
    items: &'a [GroupItem],
    site: &str,
) -> Option<&'a GroupItem> {
    items.iter().find(|o| {
        o.site.label == site && o.job.subject() == item.job.subject() && o.job.path != item.job.path
    })
}
