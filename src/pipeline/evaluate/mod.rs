//! `group --evaluate`: the harmonisation metric table of `../shared/design/evaluation.md` for
//! every method with outputs, from what is on disk. Site predictability, histogram distance,
//! gradient correlation, tissue Dice against the preprocessed image and age predictability need
//! only the outputs; with a traveling-subject ground truth (`hcld-simulate`), each image from
//! another site is also compared with the same subject rendered at the target site, put through
//! the same preprocessing (this image's registration and brain mask reused) and into the method's
//! units (SSIM, PSNR, tissue Dice). The numbers are `metrics`'; writing is `derivatives`'.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;
use serde_json::Value;

use crate::bids::Layout;
use crate::cli::{ExitStatus, Settings, TargetSpec};
use crate::derivatives::DerivativesDataset;
use crate::metrics::{
    MethodMetrics, MetricTable, SegmentationOptions, SiteSample, SsimOptions, gradient_correlation,
    image_features, index_labels, masked_psnr, masked_ssim, regression_score,
    ridge_loso_predictions, segment_tissues, site_effect, tissue_dice,
};
use crate::model::baselines::{Method, NyulLandmarks, brain_values, fit_map};
use crate::preprocess::itk::WorldAffine;
use crate::preprocess::mask::{BrainMask, MaskSource};
use crate::preprocess::t1w::{KnownRegistration, preprocess_t1w};
use crate::simulate::dataset::GroundTruth;
use crate::volume::{Volume, read_nifti, to_closest_canonical};

use super::PipelineError;
use super::group::GroupItem;
use super::harmonize::{read_nyul, template_paths};
use super::participant::{OutputNames, options};

/// Every ~`SUBSAMPLE`-th brain voxel feeds the distributions (as the group report).
const SUBSAMPLE: usize = 5;
/// Ridge penalty of the age regressor (per sample, on standardised features).
const AGE_RIDGE_LAMBDA: f64 = 1.0;

fn eval_err(message: String) -> PipelineError {
    PipelineError::Setup {
        status: ExitStatus::DataError,
        message,
    }
}

/// One image's template-space inputs, read once for every method.
struct ItemData {
    preproc: Volume,
    mask: Vec<bool>,
    source_labels: Vec<u8>,
    /// The ground truth at the target site, preprocessed like this image (when there is one and
    /// the image is from another site).
    reference: Option<Volume>,
}

/// A first Target → Label found in a sidecar (HCLD outputs record the target there).
fn target_label(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(t)) = m.get("Target")
                && t.get("Kind").and_then(Value::as_str) == Some("site")
                && let Some(Value::String(l)) = t.get("Label")
            {
                return Some(l.clone());
            }
            m.values().find_map(target_label)
        }
        _ => None,
    }
}

/// The site ground-truth metrics compare against: `--target-site`, else the site HCLD outputs
/// were harmonised to, else the site with the most images.
fn target_site(
    items: &[GroupItem],
    settings: &Settings,
    out: &DerivativesDataset,
) -> Option<String> {
    if let Some(TargetSpec::Site(s)) = &settings.target {
        return Some(s.clone());
    }
    for item in items {
        if let Ok((output, _, _)) =
            template_paths(&item.job, Method::Hcld, settings.output_resolution, out)
        {
            let sidecar = output.with_file_name(
                output
                    .file_name()
                    .map(|n| n.to_string_lossy().replace(".nii.gz", ".json"))
                    .unwrap_or_default(),
            );
            if let Ok(text) = std::fs::read_to_string(&sidecar)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && let Some(l) = target_label(&v)
            {
                return Some(l);
            }
        }
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in items {
        *counts.entry(i.site.label.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .max_by_key(|(l, n)| (**n, std::cmp::Reverse(**l)))
        .map(|(l, _)| l.to_string())
}

/// The ground truth of `item` at `site`, preprocessed with the item's own registration and brain
/// mask (read from OUTPUT_DIR), so it differs from the item only by the site.
fn reference_for(
    item: &GroupItem,
    truth: &GroundTruth,
    site: &str,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<Option<Volume>, PipelineError> {
    if item.site.label == site {
        return Ok(None);
    }
    let Some(path) = truth.image(item.job.subject(), site) else {
        return Ok(None);
    };
    let names = OutputNames::new(&item.job, settings.output_resolution);
    let shown = |p: &PathBuf| p.display().to_string();
    let (gt, _) = read_nifti(&path)
        .map_err(|e| eval_err(format!("{}: {e}; regenerate the simulation", shown(&path))))?;
    let gt = to_closest_canonical(&gt);
    let mask_path = out.path(&names.native_mask)?;
    let (mask, _) = read_nifti(&mask_path).map_err(|e| {
        eval_err(format!(
            "{}: {e}; rerun the participant level",
            shown(&mask_path)
        ))
    })?;
    let xfm_path = out.path(&names.t1w_to_template)?;
    let text = std::fs::read_to_string(&xfm_path).map_err(|e| {
        eval_err(format!(
            "{}: {e}; rerun the participant level",
            shown(&xfm_path)
        ))
    })?;
    let template_to_t1w = WorldAffine::from_itk_text(&text)
        .map_err(|e| eval_err(format!("{}: {e}", shown(&xfm_path))))?;
    if mask.dims() != gt.dims() {
        return Err(eval_err(format!(
            "{}: grid {:?} differs from the subject's image {:?}; the ground truth belongs to another dataset",
            shown(&path),
            gt.dims(),
            mask.dims()
        )));
    }
    let given = BrainMask {
        voxels: mask.data().iter().map(|&v| v > 0.5).collect(),
        source: MaskSource::Derivatives {
            file: shown(&mask_path),
        },
    };
    let metadata = serde_json::Map::new();
    let mut opts = options(settings, &metadata);
    opts.skull_stripped = Some("ground truth of a skull-stripped simulation".into());
    let pre = preprocess_t1w(
        &gt,
        Some(given),
        Some(KnownRegistration::Transform {
            template_to_t1w,
            file: shown(&xfm_path),
        }),
        &opts,
    )
    .map_err(|e| eval_err(format!("{}: {e}", shown(&path))))?;
    Ok(Some(pre.template))
}

fn read_item(
    item: &GroupItem,
    truth: Option<(&GroundTruth, &str)>,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<ItemData, PipelineError> {
    let (preproc, _) = read_nifti(&item.template)
        .map_err(|e| eval_err(format!("{}: {e}", item.template.display())))?;
    let (m, _) =
        read_nifti(&item.mask).map_err(|e| eval_err(format!("{}: {e}", item.mask.display())))?;
    let mask: Vec<bool> = m.data().iter().map(|&v| v > 0.5).collect();
    let (source_labels, _) = segment_tissues(
        preproc.data(),
        preproc.dims(),
        &mask,
        &SegmentationOptions::default(),
    )
    .map_err(|e| eval_err(format!("{}: {e}", item.template.display())))?;
    let reference = match truth {
        Some((t, site)) => reference_for(item, t, site, settings, out)?,
        None => None,
    };
    Ok(ItemData {
        preproc,
        mask,
        source_labels,
        reference,
    })
}

/// Per image and method: what the table aggregates.
struct Scored {
    item: usize,
    values: Vec<f32>,
    gradient: f64,
    dice_vs_source: f64,
    /// (SSIM, PSNR, tissue Dice) against the ground truth.
    truth: Option<(f64, f64, f64)>,
}

fn score(
    method: Method,
    k: usize,
    item: &GroupItem,
    data: &ItemData,
    nyul: Option<&NyulLandmarks>,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Option<Scored> {
    let image = if method == Method::None {
        data.preproc.clone()
    } else {
        let (output, _, _) =
            template_paths(&item.job, method, settings.output_resolution, out).ok()?;
        read_nifti(&output).ok()?.0
    };
    if image.data().len() != data.mask.len() {
        return None;
    }
    let seg = SegmentationOptions::default();
    let (labels, _) = segment_tissues(image.data(), image.dims(), &data.mask, &seg).ok()?;
    let dice_vs_source = tissue_dice(&labels, &data.source_labels).1;
    let gradient = if method == Method::None {
        1.0
    } else {
        gradient_correlation(&data.preproc, &image, &data.mask)
    };
    let truth = data.reference.as_ref().and_then(|r| {
        // The ground truth in the method's units: intensity maps are fitted on it as on any image.
        let reference: Vec<f32> = match method {
            Method::None | Method::Hcld => r.data().to_vec(),
            m => {
                let (map, _) = fit_map(m, &brain_values(r.data(), &data.mask), nyul).ok()?;
                map.apply_masked(r.data(), &data.mask)
            }
        };
        let brain = brain_values(&reference, &data.mask);
        let (lo, hi) = brain
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let range = (hi - lo) as f64;
        if range <= 0.0 {
            return None;
        }
        let o = SsimOptions::new(range);
        let ssim = masked_ssim(&reference, image.data(), image.dims(), &data.mask, &o);
        let psnr = masked_psnr(&reference, image.data(), &data.mask, range);
        let (ref_labels, _) = segment_tissues(&reference, image.dims(), &data.mask, &seg).ok()?;
        Some((ssim, psnr, tissue_dice(&labels, &ref_labels).1))
    });
    let values = brain_values(image.data(), &data.mask)
        .into_iter()
        .step_by(SUBSAMPLE)
        .collect();
    Some(Scored {
        item: k,
        values,
        gradient,
        dice_vs_source,
        truth,
    })
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Computes the table over `items` (the group level's preprocessed images).
pub fn evaluate(
    items: &[GroupItem],
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<MetricTable, PipelineError> {
    let truth = match settings
        .ground_truth
        .clone()
        .or_else(|| GroundTruth::find(&settings.bids_dir))
    {
        Some(dir) => Some(GroundTruth::open(&dir).map_err(|e| eval_err(e.to_string()))?),
        None => None,
    };
    let target = truth
        .as_ref()
        .and_then(|_| target_site(items, settings, out));
    if let (Some(t), Some(site)) = (&truth, &target)
        && !t.manifest.sites.iter().any(|s| &s.label == site)
    {
        return Err(eval_err(format!(
            "target site '{site}' is not a site of the ground truth in {} (its sites: {}); pass --target-site",
            t.root().display(),
            t.manifest
                .sites
                .iter()
                .map(|s| s.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let nyul_path = settings
        .nyul_landmarks
        .clone()
        .unwrap_or_else(|| out.models_dir().join("nyul.json"));
    let nyul = read_nyul(&nyul_path).ok().map(|n| n.landmarks);
    let started = std::time::Instant::now();
    let data: Vec<ItemData> = items
        .par_iter()
        .map(|item| read_item(item, truth.as_ref().zip(target.as_deref()), settings, out))
        .collect::<Result<_, _>>()?;
    tracing::info!(
        "evaluation: {} images read{} in {:.1} s",
        items.len(),
        if truth.is_some() {
            " with their ground truth"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    );
    let site_labels: Vec<&str> = items.iter().map(|i| i.site.label.as_str()).collect();
    let (sites, site_of) = index_labels(&site_labels);
    let subject_labels: Vec<&str> = items.iter().map(|i| i.job.subject()).collect();
    let (_, subject_of) = index_labels(&subject_labels);
    let ages: Vec<Option<f64>> = items
        .iter()
        .map(|i| {
            let key = format!("sub-{}", i.job.subject());
            layout
                .participants()
                .and_then(|t| t.get(&key, "age"))
                .and_then(|a| a.trim().parse::<f64>().ok())
                .filter(|a| a.is_finite())
        })
        .collect();
    let mut rows = Vec::new();
    for &method in Method::ALL.iter() {
        if method == Method::Nyul && nyul.is_none() && data.iter().any(|d| d.reference.is_some()) {
            tracing::warn!(
                "evaluation: {}: no Nyúl landmarks, so nyul is scored without ground truth",
                nyul_path.display()
            );
        }
        let scored: Vec<Scored> = items
            .par_iter()
            .zip(&data)
            .enumerate()
            .filter_map(|(k, (item, d))| score(method, k, item, d, nyul.as_ref(), settings, out))
            .collect();
        if scored.is_empty() {
            continue;
        }
        let mut row = MethodMetrics::new(method.name());
        row.images = scored.len();
        let samples: Vec<SiteSample<'_>> = scored
            .iter()
            .map(|s| SiteSample {
                values: &s.values,
                site: site_of[s.item],
                subject: subject_of[s.item],
            })
            .collect();
        let effect = site_effect(&samples, image_features);
        row.sites = effect.sites;
        row.site_chance = Some(1.0 / effect.sites.max(1) as f64);
        row.mean_pairwise_w1 = Some(effect.mean_pairwise_w1).filter(|v| v.is_finite());
        row.site_accuracy = effect.site_accuracy;
        let features = effect.features;
        row.gradient_correlation = mean(scored.iter().map(|s| s.gradient));
        row.tissue_dice_vs_source = mean(scored.iter().map(|s| s.dice_vs_source));
        let truths: Vec<(f64, f64, f64)> = scored.iter().filter_map(|s| s.truth).collect();
        row.ground_truth_images = truths.len();
        row.ssim = mean(truths.iter().map(|t| t.0));
        row.psnr = mean(truths.iter().map(|t| t.1));
        row.tissue_dice = mean(truths.iter().map(|t| t.2));
        let with_age: Vec<usize> = (0..scored.len())
            .filter(|&j| ages[scored[j].item].is_some())
            .collect();
        if with_age.len() >= 3 {
            let f: Vec<Vec<f64>> = with_age.iter().map(|&j| features[j].clone()).collect();
            let a: Vec<f64> = with_age
                .iter()
                .map(|&j| ages[scored[j].item].unwrap_or_default())
                .collect();
            let g: Vec<usize> = with_age.iter().map(|&j| samples[j].subject).collect();
            if let Some(p) = ridge_loso_predictions(&f, &a, &g, AGE_RIDGE_LAMBDA) {
                let s = regression_score(&p, &a);
                row.age_r = Some(s.r).filter(|v| v.is_finite());
                row.age_mae = Some(s.mae);
            }
        }
        rows.push(row);
    }
    tracing::info!(
        "evaluation: {} methods scored in {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(MetricTable {
        sites,
        target_site: target,
        ground_truth: truth.map(|t| t.root().display().to_string()),
        rows,
    })
}

/// Writes `evaluation/metrics.tsv` (+ its column sidecar `metrics.json`) and
/// `evaluation/evaluation.json` under OUTPUT_DIR.
pub fn write_table(
    table: &MetricTable,
    out: &DerivativesDataset,
) -> Result<Vec<PathBuf>, PipelineError> {
    let dir = out.root().join("evaluation");
    let files = [
        (dir.join("metrics.tsv"), table.to_tsv()),
        (dir.join("metrics.json"), table.tsv_sidecar()),
        (dir.join("evaluation.json"), table.to_json()),
    ];
    let mut written = Vec::new();
    for (path, text) in files {
        out.write_bytes(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
