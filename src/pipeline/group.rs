//! The group level = fit: preprocess whatever is not yet preprocessed, assign sites, fit the
//! Nyúl landmarks and train (or reuse) the HCLD model on every selected image, pick and cache
//! each site's representative target latent, and write the group report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bids::Layout;
use crate::bids::sites::{Site, site_of, site_summary};
use crate::cli::{ExitStatus, Settings};
use crate::derivatives::DerivativesDataset;
use crate::model::baselines::{Method, NyulLandmarks, brain_values};
use crate::model::config::{GridConfig, HcldConfig};
use crate::model::device::ComputeDevice;
use crate::model::harmonize::{TargetLatent, representative};
use crate::model::training::{FitError, TrainOptions, TrainingError, TrainingSet, fit};
use crate::volume::read_nifti;

use super::harmonize::{
    brain_quantiles, find_model, load_harmonizer, site_target_stem, to_model_grid,
};
use super::participant::{JobError, OutputNames, recorded_fingerprint};
use super::{Job, Outcome, PipelineError, RunSummary};

/// One preprocessed image the group level works with.
#[derive(Debug, Clone)]
pub struct GroupItem {
    /// The job (source image).
    pub job: Job,
    /// Its site.
    pub site: Site,
    /// Template-space preprocessed image.
    pub template: PathBuf,
    /// Its brain mask.
    pub mask: PathBuf,
    /// The preprocessing fingerprint.
    pub fingerprint: String,
}

fn group_err(status: ExitStatus, message: String) -> PipelineError {
    PipelineError::Setup { status, message }
}

/// Collects the preprocessed images of the jobs that succeeded, with their sites. A job whose site
/// cannot be found becomes a failure naming the fix.
pub fn collect_items(
    summary: &mut RunSummary,
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Vec<GroupItem> {
    let mut items = Vec::new();
    for report in &mut summary.reports {
        if !matches!(report.outcome, Outcome::Written(_) | Outcome::UpToDate(_)) {
            continue;
        }
        let job = &report.job;
        let names = OutputNames::new(job, settings.output_resolution);
        let item = (|| -> Result<GroupItem, JobError> {
            let metadata = layout.metadata(&job.source)?;
            let site = site_of(layout, &job.source, &metadata, &settings.site_column)
                .map_err(|e| JobError::Harmonize(job.path.clone(), e.to_string()))?;
            let fingerprint = recorded_fingerprint(out, &names.native_t1w)
                .ok_or_else(|| JobError::MissingOutput(job.path.clone()))?;
            Ok(GroupItem {
                job: job.clone(),
                site,
                template: out.path(&names.template_t1w)?,
                mask: out.path(&names.template_mask)?,
                fingerprint,
            })
        })();
        match item {
            Ok(i) => items.push(i),
            Err(e) => {
                tracing::error!("{}: {e}", job.label());
                report.outcome = Outcome::Failed(e);
            }
        }
    }
    items
}

/// Logs subjects and images per site; refuses to train with fewer than two sites or a site with
/// fewer than `--min-site-subjects` subjects.
fn check_sites(
    items: &[GroupItem],
    settings: &Settings,
    training: bool,
) -> Result<(), PipelineError> {
    let summary = site_summary(
        items
            .iter()
            .map(|i| (i.job.subject(), i.site.label.as_str())),
    );
    let sources: std::collections::BTreeSet<&str> =
        items.iter().map(|i| i.site.source.as_str()).collect();
    tracing::info!(
        "sites (from {}): {}",
        sources.into_iter().collect::<Vec<_>>().join("; "),
        summary
            .iter()
            .map(|(s, c)| format!("{s}: {} subjects, {} images", c.subjects, c.images))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !training {
        return Ok(());
    }
    if summary.len() < 2 {
        return Err(group_err(
            ExitStatus::DataError,
            format!(
                "HCLD needs images from at least 2 sites to learn site styles, found {} ({}); check the '{}' column of participants.tsv (--site-column), or pass --model to use a model trained elsewhere",
                summary.len(),
                summary.keys().cloned().collect::<Vec<_>>().join(", "),
                settings.site_column
            ),
        ));
    }
    let few: Vec<String> = summary
        .iter()
        .filter(|(_, c)| c.subjects < settings.min_site_subjects)
        .map(|(s, c)| format!("{s} ({} subjects)", c.subjects))
        .collect();
    if !few.is_empty() {
        return Err(group_err(
            ExitStatus::DataError,
            format!(
                "too few subjects to train on at {} (--min-site-subjects {}); add subjects, merge sites in the site column, or lower --min-site-subjects",
                few.join(", "),
                settings.min_site_subjects
            ),
        ));
    }
    for (s, c) in &summary {
        if c.subjects < 3 {
            tracing::warn!(
                "site {s} has {} subject(s): its style is learned from very few images",
                c.subjects
            );
        }
    }
    Ok(())
}

/// Images read from the derivatives on demand, on the model grid.
struct DatasetTrainingSet<'a> {
    items: &'a [GroupItem],
    ids: Vec<String>,
    grid: GridConfig,
}

impl TrainingSet for DatasetTrainingSet<'_> {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }
    fn site(&self, i: usize) -> &str {
        &self.items[i].site.label
    }
    fn image(&self, i: usize) -> Result<Vec<f32>, TrainingError> {
        let (v, _) = read_nifti(&self.items[i].template).map_err(|e| TrainingError::Data {
            id: self.ids[i].clone(),
            message: e.to_string(),
        })?;
        to_model_grid(&v, &self.grid).map_err(|m| TrainingError::Data {
            id: self.ids[i].clone(),
            message: m,
        })
    }
    fn brain_mask(&self, i: usize) -> Result<Option<Vec<f32>>, TrainingError> {
        let (v, _) = read_nifti(&self.items[i].mask).map_err(|e| TrainingError::Data {
            id: self.ids[i].clone(),
            message: e.to_string(),
        })?;
        let m = to_model_grid(&v, &self.grid).map_err(|m| TrainingError::Data {
            id: self.ids[i].clone(),
            message: m,
        })?;
        Ok(Some(
            m.into_iter()
                .map(|x| if x > 0.5 { 1.0 } else { 0.0 })
                .collect(),
        ))
    }
}

/// The identity of a training run: configuration and (image, site, preprocessing) list.
fn training_key(config: &HcldConfig, items: &[GroupItem]) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_string(config).unwrap_or_default().as_bytes());
    for i in items {
        for part in [i.job.source.rel_path(), &i.site.label, &i.fingerprint] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
    }
    format!("{:x}", h.finalize())
}

/// Runs the group level after preprocessing: fits what `--method` needs and writes the report.
pub fn fit_and_report(
    mut summary: RunSummary,
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
    stop: &Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    let items = collect_items(&mut summary, layout, settings, out);
    if items.is_empty() {
        return Err(group_err(
            ExitStatus::SomeFailed,
            "no image was preprocessed successfully; nothing to fit (see the errors above)".into(),
        ));
    }
    let train_hcld = settings.methods.contains(&Method::Hcld) && settings.model.is_none();
    check_sites(&items, settings, train_hcld)?;
    if settings.methods.contains(&Method::Nyul) {
        fit_nyul(&items, settings, out)?;
    }
    if settings.methods.contains(&Method::Hcld) {
        if stop.load(Ordering::SeqCst) {
            return Err(PipelineError::Interrupted);
        }
        let (model_dir, latents) = if train_hcld {
            train(&items, settings, out, stop)?
        } else {
            (find_model(settings, out)?, None)
        };
        cache_site_targets(&items, settings, out, &model_dir, latents, stop)?;
    }
    let evaluation = if settings.evaluate {
        let table = super::evaluate::evaluate(&items, layout, settings, out)?;
        for path in super::evaluate::write_table(&table, out)? {
            tracing::info!("evaluation: wrote {}", path.display());
        }
        Some(table)
    } else {
        None
    };
    super::reports::group(&items, layout, settings, out, evaluation.as_ref())?;
    Ok(summary)
}

fn fit_nyul(
    items: &[GroupItem],
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<(), PipelineError> {
    let mut brains = Vec::with_capacity(items.len());
    for i in items {
        let read = |p: &PathBuf| {
            read_nifti(p)
                .map(|v| v.0)
                .map_err(|e| group_err(ExitStatus::DataError, e.to_string()))
        };
        let (image, mask) = (read(&i.template)?, read(&i.mask)?);
        let m: Vec<bool> = mask.data().iter().map(|&v| v > 0.5).collect();
        brains.push(brain_values(image.data(), &m));
    }
    let landmarks = NyulLandmarks::fit(brains.iter().map(Vec::as_slice))
        .map_err(|e| group_err(ExitStatus::DataError, format!("Nyúl landmarks: {e}")))?;
    let path = settings
        .nyul_landmarks
        .clone()
        .unwrap_or_else(|| out.models_dir().join("nyul.json"));
    if settings.nyul_landmarks.is_some() {
        tracing::info!(
            "Nyúl landmarks given with --nyul-landmarks ({}); not refitted",
            path.display()
        );
        return Ok(());
    }
    let text = serde_json::to_string_pretty(&json!({
        "Percentiles": landmarks.percentiles,
        "StandardScale": landmarks.standard,
        "Images": landmarks.images,
        "FittedOn": items.iter().map(|i| i.job.source.rel_path().to_string()).collect::<Vec<_>>(),
        "hcldVersion": crate::VERSION,
    }))
    .unwrap_or_default();
    out.write_text_if_changed(&path, &(text + "\n"))?;
    tracing::info!(
        "Nyúl standard scale over {} images: {:?} → {}",
        landmarks.images,
        landmarks
            .standard
            .iter()
            .map(|v| (v * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>(),
        path.display()
    );
    Ok(())
}

/// Scaled latents of the training images, in item order.
type Latents = Vec<Vec<f32>>;

/// Trains (or finds the current) model; returns its folder and, when trained now, the latents.
fn train(
    items: &[GroupItem],
    settings: &Settings,
    out: &DerivativesDataset,
    stop: &Arc<AtomicBool>,
) -> Result<(PathBuf, Option<Latents>), PipelineError> {
    let config = &settings.model_config;
    let key = training_key(config, items);
    // Two group runs into one OUTPUT_DIR train once: the second waits, then finds the model.
    let _training_lock = out.lock_named(&format!("train-{}", &key[..16]))?;
    // A model trained on exactly this set with this configuration is current.
    if !settings.force
        && let Ok(rd) = std::fs::read_dir(out.models_dir())
    {
        for e in rd.flatten() {
            let p = e.path();
            let inputs = p.join("training").join("inputs.json");
            let recorded = std::fs::read(&inputs)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v.get("TrainingKey")?.as_str().map(str::to_string));
            if recorded.as_deref() == Some(key.as_str()) && p.join("config.json").is_file() {
                tracing::info!(
                    "HCLD model {} is current for these images and this configuration",
                    p.display()
                );
                return Ok((p, None));
            }
        }
    }
    let device = ComputeDevice::select(settings.backend, settings.device)
        .map_err(|e| group_err(ExitStatus::Usage, e.to_string()))?;
    // --mem: refuse a training that cannot fit rather than be killed by the OOM killer hours
    // later (a GPU's memory is its own: the estimate is for CPU training).
    if let Some(limit) = settings.mem_mb
        && device.kind == crate::model::device::DeviceKind::Cpu
    {
        let need = config.training_memory_estimate_mb(device.backend);
        if need > limit {
            return Err(group_err(
                ExitStatus::Usage,
                format!(
                    "training the '{}' HCLD configuration (grid {:?}) needs about {need} MB on {}, and --mem allows {limit} MB; raise --mem, use a smaller --config (tiny needs {} MB), or train elsewhere and pass the model with --model",
                    config.name,
                    config.grid.shape,
                    device.backend.name(),
                    HcldConfig::preset("tiny")
                        .map(|t| t.training_memory_estimate_mb(device.backend))
                        .unwrap_or(0),
                ),
            ));
        }
        tracing::info!(
            "training needs about {need} MB on {}; --mem allows {limit} MB",
            device.backend.name()
        );
    }
    // Checkpoints belong to one OUTPUT_DIR and one backend (flex and LibTorch round differently,
    // so a stage-1 checkpoint of one would give stage 2 other latents on the other), whatever
    // work directory runs share (the default is $TMPDIR/hcld-work).
    let checkpoint_key = {
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update(device.backend.name().as_bytes());
        let root = std::fs::canonicalize(out.root()).unwrap_or_else(|_| out.root().to_path_buf());
        h.update(root.to_string_lossy().as_bytes());
        format!("{:x}", h.finalize())
    };
    let checkpoints = settings
        .work_dir
        .join("train")
        .join(format!("hcld-{}", &checkpoint_key[..16]));
    let mut options = TrainOptions::new(&checkpoints);
    options.checkpoint_every = settings.checkpoint_every;
    options.stop = Some(stop.clone());
    let set = DatasetTrainingSet {
        items,
        ids: items
            .iter()
            .map(|i| i.job.source.rel_path().to_string())
            .collect(),
        grid: config.grid.clone(),
    };
    tracing::info!(
        "training HCLD (config {}, grid {:?} at {} mm) on {} images: autoencoder {} epochs, latent diffusion {} epochs, on {}; checkpoints in {}",
        config.name,
        config.grid.shape,
        config.grid.voxel_size_mm,
        items.len(),
        config.autoencoder_training.epochs,
        config.diffusion_training.epochs,
        device.describe(),
        checkpoints.display()
    );
    // Training runs on --nprocs threads (flex uses the current rayon pool).
    let pool = super::harmonize::network_pool(settings)?;
    let fitted = match pool.install(|| fit(config, &set, &device, &options, &out.models_dir())) {
        Ok(f) => f,
        Err(FitError::Training(TrainingError::Interrupted { stage, step })) => {
            tracing::warn!(
                "training interrupted at step {step} of {stage}; checkpoints in {}; run the group level again to resume",
                checkpoints.display()
            );
            return Err(PipelineError::Interrupted);
        }
        Err(e) => {
            return Err(group_err(
                ExitStatus::DataError,
                format!("training failed: {e}"),
            ));
        }
    };
    let training = fitted.dir.join("training");
    for stage in ["autoencoder", "diffusion"] {
        let src = checkpoints.join(stage).join("loss.csv");
        if let Ok(bytes) = std::fs::read(&src) {
            out.write_bytes(&training.join(format!("{stage}_loss.csv")), &bytes)?;
        }
    }
    let inputs = json!({
        "TrainingKey": key,
        "Images": items.iter().map(|i| json!({
            "Path": i.job.source.rel_path(),
            "Site": i.site.label,
            "PreprocessingFingerprint": i.fingerprint,
        })).collect::<Vec<_>>(),
    });
    out.write_text_if_changed(
        &training.join("inputs.json"),
        &(serde_json::to_string_pretty(&inputs).unwrap_or_default() + "\n"),
    )?;
    let m = &fitted.manifest.training;
    tracing::info!(
        "trained HCLD model {} (latent scale {:.4}; autoencoder loss {:.4} → {:.4}, diffusion loss {:.4} → {:.4})",
        fitted.dir.display(),
        fitted.manifest.latent_scale,
        m.autoencoder
            .as_ref()
            .map(|r| r.first_loss)
            .unwrap_or(f64::NAN),
        m.autoencoder
            .as_ref()
            .map(|r| r.last_loss)
            .unwrap_or(f64::NAN),
        m.diffusion
            .as_ref()
            .map(|r| r.first_loss)
            .unwrap_or(f64::NAN),
        m.diffusion
            .as_ref()
            .map(|r| r.last_loss)
            .unwrap_or(f64::NAN),
    );
    Ok((fitted.dir, Some(fitted.latents)))
}

/// Chooses each site's representative (the image whose latent statistics are closest to the
/// site's mean) and caches its latent under `models/targets/`.
fn cache_site_targets(
    items: &[GroupItem],
    settings: &Settings,
    out: &DerivativesDataset,
    model_dir: &std::path::Path,
    latents: Option<Latents>,
    stop: &AtomicBool,
) -> Result<(), PipelineError> {
    let manifest = crate::model::artefact::read_manifest(model_dir)
        .map_err(|e| group_err(ExitStatus::DataError, e.to_string()))?;
    let config = &manifest.config;
    let read = |p: &PathBuf| {
        read_nifti(p)
            .map(|v| v.0)
            .map_err(|e| group_err(ExitStatus::DataError, e.to_string()))
    };
    let latents = match latents {
        Some(l) => l,
        None => {
            let harmonizer = load_harmonizer(settings, model_dir)?;
            let pool = super::harmonize::network_pool(settings)?;
            let mut l = Vec::with_capacity(items.len());
            for i in items {
                if stop.load(Ordering::SeqCst) {
                    return Err(PipelineError::Interrupted);
                }
                let v = read(&i.template)?;
                let grid = to_model_grid(&v, &config.grid)
                    .map_err(|m| group_err(ExitStatus::DataError, m))?;
                l.push(pool.install(|| harmonizer.encode(&grid)));
            }
            l
        }
    };
    let sha = crate::model::artefact::load_digest(model_dir)
        .map_err(|e| group_err(ExitStatus::DataError, e.to_string()))?;
    let mut by_site: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, i) in items.iter().enumerate() {
        by_site.entry(&i.site.label).or_default().push(k);
    }
    for (site, idx) in by_site {
        let lat: Vec<&[f32]> = idx.iter().map(|&k| latents[k].as_slice()).collect();
        let Some(r) = representative(&lat, config.autoencoder.latent_channels) else {
            continue;
        };
        let k = idx[r];
        let image = read(&items[k].template)?;
        let mask: Vec<bool> = read(&items[k].mask)?
            .data()
            .iter()
            .map(|&v| v > 0.5)
            .collect();
        let meta = TargetLatent {
            kind: "site".into(),
            label: site.to_string(),
            representative: items[k].job.source.rel_path().to_string(),
            candidates: idx.len(),
            model_sha256: sha.clone(),
            latent_shape: config.latent_shape(),
            latent_sha256: String::new(),
            intensity_quantiles: brain_quantiles(image.data(), &mask),
        }
        .with_latent(&latents[k]);
        let stem = site_target_stem(out, &sha, site);
        let _lock = out.lock_named(&format!(
            "target-site-{}",
            crate::bids::sites::site_slug(site)
        ))?;
        let current = TargetLatent::load(&stem).is_ok_and(|(m, l)| m == meta && l == latents[k]);
        if !current {
            meta.save(&stem, &latents[k])
                .map_err(|e| group_err(ExitStatus::IoError, e.to_string()))?;
        }
        tracing::info!(
            "target for site {site}: {} (of {} images)",
            meta.representative,
            idx.len()
        );
    }
    Ok(())
}
