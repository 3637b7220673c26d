//! `group --evaluate`: the harmonisation metric table of `../shared/design/evaluation.md` for
//! every method with outputs, from what is on disk. Site predictability (leave-one-source-out on
//! simulated data, so anatomy cannot name the site), histogram distance, gradient correlation,
//! tissue Dice against the preprocessed image and age predictability need only the outputs.
//! Images from another site than the target are also compared with a reference of the same
//! brain at the target site (SSIM, PSNR, tissue Dice, tissue-volume change): the traveling-subject
//! ground truth of a simulation (`hcld-simulate`), put through this image's own registration and
//! brain mask, or, on real data, the same participant's image acquired at the target site (a
//! traveling-subject pair). Images of the target site itself give the identity check of methods
//! that have a target. With an HCLD model, an `hcld-recon` row scores the autoencoder's round
//! trip alone (encode → decode, no diffusion): its identity columns compare every image's round
//! trip with its input (the compression loss), its reference columns read against `none`'s. The
//! numbers are `metrics`'; writing is `derivatives`'.

mod reference;

use std::path::PathBuf;

use rayon::prelude::*;

use crate::bids::Layout;
use crate::derivatives::DerivativesDataset;
use crate::methods::{
    Method, MethodError, ReferenceUnits, RunContext, find_model, load_harmonizer, network_pool,
};
use crate::metrics::{
    MethodMetrics, MetricTable, SegmentationOptions, SiteSample, chance_interval, fidelity,
    gradient_correlation, image_features, index_labels, regression_score, ridge_logo_predictions,
    segment_tissues, site_effect, tissue_dice, volume_change,
};
use crate::model::baselines::brain_values;
use crate::model::grid::{from_model_grid, to_model_grid};
use crate::preprocess::resample::Grid;
use crate::settings::{Harmonisation, Paths, Settings};
use crate::simulate::dataset::GroundTruth;
use crate::volume::{Volume, read_nifti};

use super::PipelineError;
use super::items::GroupItem;
use super::outputs::template_paths;
use reference::{Reference, Target, pair_reference, partner_at, simulated_reference, target};

/// Every ~`SUBSAMPLE`-th brain voxel feeds the distributions (as the group report).
const SUBSAMPLE: usize = 5;
/// Ridge penalty of the age regressor (per sample, on standardised features).
const AGE_RIDGE_LAMBDA: f64 = 1.0;
/// The coverage of the chance interval reported next to the site accuracy.
const CHANCE_LEVEL: f64 = 0.95;

fn eval_err(message: String) -> PipelineError {
    PipelineError::Evaluation(message)
}

/// What the site classifier holds out together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CvGroups {
    /// Every subject made from one source scan (simulated data: they share anatomy and texture).
    Source,
    /// Every image of one subject.
    Subject,
}

impl CvGroups {
    /// The name written to the table.
    pub fn name(self) -> &'static str {
        match self {
            CvGroups::Source => "source",
            CvGroups::Subject => "subject",
        }
    }
}

/// The site classifier's cross-validation group of every item: its source scan when a
/// simulation's manifest gives one for every item, else its subject. (A `source` column of a
/// real dataset's `participants.tsv` may mean a cohort, which can coincide with the site, so
/// only the simulator's own record is trusted.)
pub fn cv_groups(items: &[GroupItem], truth: Option<&GroundTruth>) -> (CvGroups, Vec<usize>) {
    let sources: Option<Vec<String>> = truth.and_then(|t| {
        items
            .iter()
            .map(|item| {
                t.subject(item.job.subject())
                    .map(|s| (s.params.source + 1).to_string())
            })
            .collect()
    });
    match sources {
        Some(s) if !items.is_empty() => (CvGroups::Source, index_labels(&s).1),
        _ => {
            let subjects: Vec<&str> = items.iter().map(|i| i.job.subject()).collect();
            (CvGroups::Subject, index_labels(&subjects).1)
        }
    }
}

/// The ground truth of a simulated BIDS_DIR (`--ground-truth`, else
/// `BIDS_DIR/sourcedata/ground-truth`), if there is one.
pub fn ground_truth(
    harmonisation: &Harmonisation,
    paths: &Paths,
) -> Result<Option<GroundTruth>, PipelineError> {
    match harmonisation
        .ground_truth
        .clone()
        .or_else(|| GroundTruth::find(&paths.bids_dir))
    {
        Some(dir) => Ok(Some(
            GroundTruth::open(&dir).map_err(|e| eval_err(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// One image's template-space inputs, read once for every method.
struct ItemData {
    preproc: Volume,
    mask: Vec<bool>,
    source_labels: Vec<u8>,
    reference: Option<Reference>,
    /// The image was acquired at the target site (identity check).
    at_target: bool,
}

fn read_item(
    item: &GroupItem,
    items: &[GroupItem],
    truth: Option<&GroundTruth>,
    target: Option<&str>,
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
    let reference = match (truth, target) {
        (Some(t), Some(site)) => simulated_reference(item, t, site, &mask, settings, out)?,
        (None, Some(site)) if item.site.label != site => match partner_at(item, items, site) {
            // A pair that cannot be compared costs this image its reference, not the table.
            Some(p) => match pair_reference(item, &preproc, p, &mask, settings, out) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(
                        "evaluation: {}: no reference from {}: {e}",
                        item.job.label(),
                        p.job.label()
                    );
                    None
                }
            },
            None => None,
        },
        _ => None,
    };
    Ok(ItemData {
        at_target: target == Some(item.site.label.as_str()),
        preproc,
        mask,
        source_labels,
        reference,
    })
}

/// A row of the table: a method's outputs, or the autoencoder's round trip.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    Method(Method),
    /// `hcld-recon`: decode(encode(image)), no diffusion.
    Reconstruction,
}

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::Method(m) => m.name(),
            Row::Reconstruction => "hcld-recon",
        }
    }
}

/// Per image and row: what the table aggregates.
struct Scored {
    item: usize,
    values: Vec<f32>,
    gradient: f64,
    dice_vs_source: f64,
    truth: Option<TruthScores>,
    /// SSIM of the output with its own input: for HCLD, of a target-site image harmonised to
    /// its own site; for the round trip, of every image.
    identity: Option<f64>,
}

/// An output against the reference of the same brain at the target site.
#[derive(Debug, Clone, Copy)]
struct TruthScores {
    ssim: f64,
    psnr: f64,
    dice: f64,
    volume_change: Option<f64>,
}

/// The output of `row` for item `k`, on the template grid.
fn output_image(
    row: Row,
    k: usize,
    item: &GroupItem,
    data: &ItemData,
    reconstructions: Option<&[Volume]>,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Option<Volume> {
    match row {
        Row::Method(m) if m.is_identity() => Some(data.preproc.clone()),
        Row::Method(m) => {
            let (output, _, _) =
                template_paths(&item.job, m, settings.preprocessing.output_resolution, out).ok()?;
            read_nifti(&output).ok().map(|r| r.0)
        }
        Row::Reconstruction => reconstructions.and_then(|r| r.get(k).cloned()),
    }
}

fn score(
    row: Row,
    k: usize,
    image: &Volume,
    data: &ItemData,
    units: &ReferenceUnits,
    hcld_to_site: bool,
) -> Option<Scored> {
    if image.data().len() != data.mask.len() {
        return None;
    }
    let seg = SegmentationOptions::default();
    let (labels, _) = segment_tissues(image.data(), image.dims(), &data.mask, &seg).ok()?;
    let dice_vs_source = tissue_dice(&labels, &data.source_labels).1;
    let gradient = if matches!(row, Row::Method(m) if m.is_identity()) {
        1.0
    } else {
        gradient_correlation(&data.preproc, image, &data.mask)
    };
    let truth = data.reference.as_ref().and_then(|r| {
        // The reference in the method's units: intensity maps are fitted on it as on any image.
        let reference: Vec<f32> = match units {
            ReferenceUnits::Preprocessed => r.image.data().to_vec(),
            ReferenceUnits::Map(fit) => {
                let map = fit(&brain_values(r.image.data(), &r.mask))?;
                map.apply_masked(r.image.data(), &r.mask)
            }
            ReferenceUnits::Unavailable(_) => return None,
        };
        let (ssim, psnr) = fidelity(&reference, image.data(), image.dims(), &r.mask)?;
        let own_labels = if r.mask == data.mask {
            labels.clone()
        } else {
            segment_tissues(image.data(), image.dims(), &r.mask, &seg)
                .ok()?
                .0
        };
        let (ref_labels, _) = segment_tissues(&reference, image.dims(), &r.mask, &seg).ok()?;
        Some(TruthScores {
            ssim,
            psnr,
            dice: tissue_dice(&own_labels, &ref_labels).1,
            volume_change: volume_change(&own_labels, &ref_labels),
        })
    });
    let identity_check = match row {
        Row::Method(m) => m.has_target() && hcld_to_site && data.at_target,
        Row::Reconstruction => true,
    };
    let identity = identity_check
        .then(|| fidelity(data.preproc.data(), image.data(), image.dims(), &data.mask))
        .flatten()
        .map(|(ssim, _)| ssim);
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
        identity,
    })
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// The autoencoder round trip of every image with the HCLD model of OUTPUT_DIR (or `--model`),
/// masked like HCLD's outputs; `None` when there is no model (or several and none chosen).
fn reconstructions(
    data: &[ItemData],
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<Option<Vec<Volume>>, PipelineError> {
    let stop = super::stop_flag();
    let ctx = RunContext {
        settings: &settings.run,
        out,
        stop: &stop,
    };
    let dir = match find_model(&ctx) {
        Ok(d) => d,
        Err(MethodError::Missing(message) | MethodError::Usage(message)) => {
            tracing::info!("evaluation: no hcld-recon row: {message}");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let started = std::time::Instant::now();
    let harmonizer = load_harmonizer(&settings.resources, &settings.harmonisation.ddim, &dir)?;
    let grid = harmonizer.model().manifest.config.grid.clone();
    let pool = network_pool(&settings.resources)?;
    let recon = pool.install(|| {
        data.iter()
            .map(|d| -> Result<Volume, String> {
                let input = to_model_grid(&d.preproc, &grid)?;
                let values = harmonizer.reconstruct(&input);
                let on = from_model_grid(values, &grid, &Grid::of(&d.preproc))?;
                let masked = on
                    .data()
                    .iter()
                    .zip(&d.mask)
                    .map(|(&v, &m)| if m { v } else { 0.0 })
                    .collect();
                d.preproc.with_data(masked)
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let recon = recon.map_err(|e| eval_err(format!("{}: hcld-recon: {e}", dir.display())))?;
    tracing::info!(
        "evaluation: {} autoencoder round trips with {} in {:.1} s",
        recon.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(Some(recon))
}

/// The ages of `participants.tsv`, per item.
fn ages(items: &[GroupItem], layout: &Layout) -> Vec<Option<f64>> {
    items
        .iter()
        .map(|i| {
            let key = format!("sub-{}", i.job.subject());
            layout
                .participants()
                .and_then(|t| t.get(&key, "age"))
                .and_then(|a| a.trim().parse::<f64>().ok())
                .filter(|a| a.is_finite())
        })
        .collect()
}

/// The table row of one method from its scored images.
fn aggregate(
    row: Row,
    scored: &[Scored],
    site_of: &[usize],
    groups: (CvGroups, &[usize]),
    ages: &[Option<f64>],
) -> MethodMetrics {
    let mut m = MethodMetrics::new(row.name());
    m.images = scored.len();
    let samples: Vec<SiteSample<'_>> = scored
        .iter()
        .map(|s| SiteSample {
            values: &s.values,
            site: site_of[s.item],
            group: groups.1[s.item],
        })
        .collect();
    let effect = site_effect(&samples, image_features);
    m.sites = effect.sites;
    let chance = 1.0 / effect.sites.max(1) as f64;
    m.site_chance = Some(chance);
    if effect.site_accuracy.is_some() {
        let (lo, hi) = chance_interval(scored.len(), chance, CHANCE_LEVEL);
        m.site_chance_low = Some(lo);
        m.site_chance_high = Some(hi);
        m.site_cv = Some(groups.0.name().to_string());
    }
    m.mean_pairwise_w1 = Some(effect.mean_pairwise_w1).filter(|v| v.is_finite());
    m.site_accuracy = effect.site_accuracy;
    m.gradient_correlation = mean(scored.iter().map(|s| s.gradient));
    m.tissue_dice_vs_source = mean(scored.iter().map(|s| s.dice_vs_source));
    let truths: Vec<TruthScores> = scored.iter().filter_map(|s| s.truth).collect();
    m.ground_truth_images = truths.len();
    m.ssim = mean(truths.iter().map(|t| t.ssim));
    m.psnr = mean(truths.iter().map(|t| t.psnr));
    m.tissue_dice = mean(truths.iter().map(|t| t.dice));
    m.volume_change = mean(truths.iter().filter_map(|t| t.volume_change));
    let identity: Vec<f64> = scored.iter().filter_map(|s| s.identity).collect();
    m.identity_images = identity.len();
    m.identity_ssim = mean(identity.into_iter());
    // Age is predicted with the same held-out groups: subjects made from one source share
    // anatomy, which must not carry an age from training into the held-out fold.
    let with_age: Vec<usize> = (0..scored.len())
        .filter(|&j| ages[scored[j].item].is_some())
        .collect();
    if with_age.len() >= 3 {
        let f: Vec<Vec<f64>> = with_age
            .iter()
            .map(|&j| effect.features[j].clone())
            .collect();
        let a: Vec<f64> = with_age
            .iter()
            .map(|&j| ages[scored[j].item].unwrap_or_default())
            .collect();
        let g: Vec<usize> = with_age.iter().map(|&j| groups.1[scored[j].item]).collect();
        if let Some(p) = ridge_logo_predictions(&f, &a, &g, AGE_RIDGE_LAMBDA) {
            let s = regression_score(&p, &a);
            m.age_r = Some(s.r).filter(|v| v.is_finite());
            m.age_mae = Some(s.mae);
        }
    }
    m
}

/// Computes the table over `items` (the group level's preprocessed images).
pub fn evaluate(
    items: &[GroupItem],
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<MetricTable, PipelineError> {
    let truth = ground_truth(&settings.harmonisation, &settings.paths)?;
    let Target {
        site: target,
        hcld_to_site,
    } = target(items, settings, out);
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
    let stop = super::stop_flag();
    let ctx = RunContext {
        settings: &settings.run,
        out,
        stop: &stop,
    };
    let started = std::time::Instant::now();
    let data: Vec<ItemData> = items
        .par_iter()
        .map(|item| {
            read_item(
                item,
                items,
                truth.as_ref(),
                target.as_deref(),
                settings,
                out,
            )
        })
        .collect::<Result<_, _>>()?;
    let references = data.iter().filter(|d| d.reference.is_some()).count();
    tracing::info!(
        "evaluation: {} images read in {:.1} s; {references} have a reference at target site {} ({})",
        items.len(),
        started.elapsed().as_secs_f64(),
        target.as_deref().unwrap_or("n/a"),
        if truth.is_some() {
            "simulated ground truth"
        } else {
            "traveling-subject pairs of BIDS_DIR"
        }
    );
    let site_labels: Vec<&str> = items.iter().map(|i| i.site.label.as_str()).collect();
    let (sites, site_of) = index_labels(&site_labels);
    let (cv, groups) = cv_groups(items, truth.as_ref());
    let ages = ages(items, layout);
    // A model that cannot be loaded or run costs the table its hcld-recon row only.
    let reconstructions = reconstructions(&data, settings, out).unwrap_or_else(|e| {
        tracing::warn!("evaluation: no hcld-recon row: {e}");
        None
    });
    let mut rows = Vec::new();
    let all_rows = Method::ALL
        .iter()
        .map(|&m| Row::Method(m))
        .chain(std::iter::once(Row::Reconstruction));
    for row in all_rows {
        let units = match row {
            Row::Method(m) => m.reference_units(&ctx),
            Row::Reconstruction => ReferenceUnits::Preprocessed,
        };
        if let ReferenceUnits::Unavailable(why) = &units
            && references > 0
        {
            tracing::warn!(
                "evaluation: {why}, so {} is scored without a reference",
                row.name()
            );
        }
        let scored: Vec<Scored> = items
            .par_iter()
            .zip(&data)
            .enumerate()
            .filter_map(|(k, (item, d))| {
                let image =
                    output_image(row, k, item, d, reconstructions.as_deref(), settings, out)?;
                score(row, k, &image, d, &units, hcld_to_site)
            })
            .collect();
        if scored.is_empty() {
            continue;
        }
        rows.push(aggregate(row, &scored, &site_of, (cv, &groups), &ages));
        tracing::info!(
            "evaluation: {} scored ({} images, {:.1} s so far)",
            row.name(),
            scored.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(MetricTable {
        sites,
        target_site: target,
        ground_truth: match &truth {
            Some(t) => Some(t.root().display().to_string()),
            None if references > 0 => Some("traveling-subject pairs in BIDS_DIR".into()),
            None => None,
        },
        site_cv: Some(cv.name().to_string()),
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
