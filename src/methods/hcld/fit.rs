//! HCLD's group level: refuse a cohort it cannot learn site styles from, train the model on every
//! preprocessed image (or find the one already trained on exactly these images and this
//! configuration), write it to the model store, and cache each site's representative latent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bids::sites::{site_slug, site_summary};
use crate::model::artefact::{load_digest, read_manifest};
use crate::model::config::{GridConfig, HcldConfig};
use crate::model::device::{ComputeDevice, DeviceKind};
use crate::model::grid::to_model_grid;
use crate::model::harmonize::{TargetKind, TargetLatent, representative};
use crate::model::pretrained::PretrainedAutoencoder;
use crate::train::{FitError, TrainOptions, TrainingError, TrainingSet, fit};
use crate::volume::{Volume, read_nifti};

use super::setup::{brain_quantiles, load_harmonizer, network_pool, save_target};
use crate::methods::{FitImage, GroupContext, MethodError};

/// Refuses to train with fewer than two sites or a site with fewer than `--min-site-subjects`
/// subjects; warns about sites with very few.
pub(super) fn check_sites(ctx: &GroupContext) -> Result<(), MethodError> {
    let settings = ctx.run.settings;
    let summary = site_summary(
        ctx.images
            .iter()
            .map(|i| (i.subject.as_str(), i.site.as_str())),
    );
    if summary.len() < 2 {
        return Err(MethodError::BadData(format!(
            "HCLD needs images from at least 2 sites to learn site styles, found {} ({}); check the '{}' column of participants.tsv (--site-column), or pass --model to use a model trained elsewhere",
            summary.len(),
            summary.keys().cloned().collect::<Vec<_>>().join(", "),
            settings.selection.site_column
        )));
    }
    let min = settings.model.min_site_subjects;
    let few: Vec<String> = summary
        .iter()
        .filter(|(_, c)| c.subjects < min)
        .map(|(s, c)| format!("{s} ({} subjects)", c.subjects))
        .collect();
    if !few.is_empty() {
        return Err(MethodError::BadData(format!(
            "too few subjects to train on at {} (--min-site-subjects {min}); add subjects, merge sites in the site column, or lower --min-site-subjects",
            few.join(", "),
        )));
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
    images: &'a [FitImage],
    grid: GridConfig,
}

impl DatasetTrainingSet<'_> {
    fn on_grid(&self, i: usize, path: &Path) -> Result<Vec<f32>, TrainingError> {
        let data = |message: String| TrainingError::Data {
            id: self.images[i].id.clone(),
            message,
        };
        let (v, _) = read_nifti(path).map_err(|e| data(e.to_string()))?;
        to_model_grid(&v, &self.grid).map_err(data)
    }
}

impl TrainingSet for DatasetTrainingSet<'_> {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn id(&self, i: usize) -> &str {
        &self.images[i].id
    }
    fn site(&self, i: usize) -> &str {
        &self.images[i].site
    }
    fn image(&self, i: usize) -> Result<Vec<f32>, TrainingError> {
        self.on_grid(i, &self.images[i].template)
    }
    fn brain_mask(&self, i: usize) -> Result<Option<Vec<f32>>, TrainingError> {
        let m = self.on_grid(i, &self.images[i].mask)?;
        Ok(Some(
            m.into_iter()
                .map(|x| if x > 0.5 { 1.0 } else { 0.0 })
                .collect(),
        ))
    }
}

/// The identity of a training run: configuration, the pretrained autoencoder when one is used,
/// and the (image, site, preprocessing) list.
fn training_key(config: &HcldConfig, pretrained: Option<&str>, images: &[FitImage]) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_string(config).unwrap_or_default().as_bytes());
    if let Some(sha) = pretrained {
        h.update(b"pretrained autoencoder ");
        h.update(sha.as_bytes());
    }
    for i in images {
        for part in [&i.id, &i.site, &i.fingerprint] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
    }
    format!("{:x}", h.finalize())
}

/// Scaled latents of the training images, in image order.
pub(super) type Latents = Vec<Vec<f32>>;

/// The model already trained on exactly this set with this configuration, if any.
fn current_model(ctx: &GroupContext, key: &str) -> Option<PathBuf> {
    let store = ctx.run.out.models();
    store.artefacts().into_iter().find(|p| {
        let recorded =
            crate::input::read_regular(&store.training_inputs(p), crate::input::TEXT_LIMIT)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v.get("TrainingKey")?.as_str().map(str::to_string));
        recorded.as_deref() == Some(key)
    })
}

/// `--mem` (else the cgroup's limit or the machine's available memory): refuses a training that
/// cannot fit rather than be killed by the OOM killer hours later, or abort allocating (a
/// 4096³ grid did). A GPU's memory is its own: the estimate is for CPU training.
fn check_memory(
    ctx: &GroupContext,
    device: &ComputeDevice,
    trains_autoencoder: bool,
) -> Result<(), MethodError> {
    let config = &ctx.run.settings.model.config;
    let Some((limit, from)) = ctx.run.settings.resources.memory_budget_mb() else {
        return Ok(());
    };
    if device.kind != DeviceKind::Cpu {
        return Ok(());
    }
    // Stage 1 is what needs the memory; with the pretrained autoencoder, encoding every image
    // once (the diffusion stage on cached latents needs little).
    let need = if trains_autoencoder {
        config.training_memory_estimate_mb(device.backend)
    } else {
        config.inference_memory_estimate_mb()
    };
    if need > limit {
        return Err(MethodError::Usage(format!(
            "training the '{}' HCLD configuration (grid {:?}) needs about {need} MB on {}, and {from} allows {limit} MB; use a smaller --config (tiny needs {} MB), train on a larger machine and pass the model with --model, or raise --mem if more memory is free",
            config.name,
            config.grid.shape,
            device.backend.name(),
            HcldConfig::preset("tiny")
                .map(|t| t.training_memory_estimate_mb(device.backend))
                .unwrap_or(0),
        )));
    }
    tracing::info!(
        "training needs about {need} MB on {}; {from} allows {limit} MB",
        device.backend.name()
    );
    Ok(())
}

/// A progress bar per training stage on a terminal (steps, loss, ETA); nothing in batch jobs,
/// whose log has the stage's own lines.
fn training_bar() -> crate::train::ProgressReport {
    let current: std::sync::Mutex<Option<(String, crate::logging::Progress)>> =
        std::sync::Mutex::new(None);
    crate::train::ProgressReport::new(move |stage, step, total, summary| {
        let Ok(mut slot) = current.lock() else {
            return;
        };
        if slot.as_ref().is_none_or(|(s, _)| s != stage) {
            // A new stage (or the first report after a resume): a bar over what is left.
            *slot = None;
            let left = (total + 1).saturating_sub(step) as u64;
            *slot = Some((
                stage.to_string(),
                crate::logging::Progress::new(left, stage),
            ));
        }
        if let Some((_, bar)) = slot.as_ref() {
            bar.inc(summary);
        }
    })
}

/// Trains (or finds the current) model; returns its folder and, when trained now, the latents.
pub(super) fn train(ctx: &GroupContext) -> Result<(PathBuf, Option<Latents>), MethodError> {
    let (settings, out, images) = (ctx.run.settings, ctx.run.out, ctx.images);
    let config = &settings.model.config;
    // The shipped autoencoder, unless the cohort's own is asked for or it does not fit.
    let pretrained = (!settings.model.train_autoencoder)
        .then(PretrainedAutoencoder::embedded)
        .flatten()
        .filter(|p| p.fits(config));
    let key = training_key(
        config,
        pretrained.as_ref().map(|p| p.sha256.as_str()),
        images,
    );
    // Two group runs into one OUTPUT_DIR train once: the second waits, then finds the model.
    let _training_lock = out.lock_named(&format!("train-{}", &key[..16]))?;
    if !settings.resources.force
        && let Some(p) = current_model(ctx, &key)
    {
        tracing::info!(
            "HCLD model {} is current for these images and this configuration",
            p.display()
        );
        // Its files are written under the training lock held here.
        out.models().remove_temporaries(&p, "");
        return Ok((p, None));
    }
    let device = ComputeDevice::select(settings.resources.backend, settings.resources.device)
        .map_err(|e| MethodError::Usage(e.to_string()))?;
    check_memory(ctx, &device, pretrained.is_none())?;
    // Checkpoints belong to one OUTPUT_DIR and one backend (flex and LibTorch round differently,
    // so a stage-1 checkpoint of one would give stage 2 other latents on the other), whatever
    // work directory runs share (the default is $TMPDIR/hcld-work-<uid>).
    let checkpoint_key = {
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update(device.backend.name().as_bytes());
        let root = std::fs::canonicalize(out.root()).unwrap_or_else(|_| out.root().to_path_buf());
        h.update(root.to_string_lossy().as_bytes());
        format!("{:x}", h.finalize())
    };
    let checkpoints = settings
        .paths
        .work_dir
        .join("train")
        .join(format!("hcld-{}", &checkpoint_key[..16]));
    let mut options = TrainOptions::new(&checkpoints);
    if let Some(p) = &pretrained {
        let network = p
            .load(&device)
            .map_err(|e| MethodError::BadData(format!("the pretrained autoencoder: {e}")))?;
        options.pretrained_autoencoder = Some((network, p.sha256.clone()));
    }
    options.within = settings.paths.work_dir.clone();
    options.checkpoint_every = settings.model.checkpoint_every;
    options.stop = Some(Arc::clone(ctx.run.stop));
    // A pass under way cannot be interrupted and takes minutes on a CPU, while schedulers kill 30 s
    // after SIGTERM: on a stop, the watcher writes the last optimiser step's checkpoint and this
    // ends the process at once (locks are released by the OS; temporaries are removed next run).
    let shown = checkpoints.display().to_string();
    options.on_stop = Some(crate::train::StopHandler::new(move |step| {
        match step {
            Some(step) => tracing::warn!(
                "training stopped: checkpoint of step {step} written in {shown}; run the group level again to resume"
            ),
            None => tracing::warn!(
                "training stopped: no optimiser step since the last checkpoint in {shown}; run the group level again to resume"
            ),
        }
        // `_exit`, not `std::process::exit`: this runs on the watcher thread while the training
        // thread may be inside a LibTorch kernel, and exit()'s atexit handlers and static
        // destructors tear LibTorch's thread pools down under it (seen on CI: the process died
        // by a signal instead of exiting 130). Nothing is left to flush: the log writers are
        // unbuffered and the checkpoint was renamed into place before this handler ran.
        signal_hook::low_level::exit(i32::from(
            crate::settings::exit::ExitStatus::Interrupted.code(),
        ));
    }));
    options.progress = Some(training_bar());
    let set = DatasetTrainingSet {
        images,
        grid: config.grid.clone(),
    };
    tracing::info!(
        "training HCLD (config {}, grid {:?} at {} mm) on {} images: autoencoder {}, latent diffusion {}, on {}; checkpoints in {}",
        config.name,
        config.grid.shape,
        config.grid.voxel_size_mm,
        images.len(),
        match &pretrained {
            Some(_) =>
                "pretrained (shipped with hcld; --train-autoencoder trains the cohort's own)"
                    .to_string(),
            None => format!("{} epochs", config.autoencoder_training.epochs),
        },
        diffusion_budget(&config.diffusion_training, images.len()),
        device.describe(),
        checkpoints.display()
    );
    // Training runs on --nprocs threads (flex uses the current rayon pool).
    let pool = network_pool(&settings.resources)?;
    let fitted = match pool.install(|| fit(config, &set, &device, &options)) {
        Ok(f) => f,
        Err(FitError::Training(TrainingError::Interrupted { stage, step })) => {
            tracing::warn!(
                "training interrupted at step {step} of {stage}; checkpoints in {}; run the group level again to resume",
                checkpoints.display()
            );
            return Err(MethodError::Interrupted);
        }
        // Checkpoints that cannot be written (a full or read-only work directory, a link out of
        // it) are the work directory's problem, not the data's.
        Err(FitError::Training(TrainingError::Write(e))) => return Err(MethodError::Output(e)),
        Err(FitError::Training(TrainingError::Storage(e))) => {
            return Err(MethodError::Io(format!("training: {e}")));
        }
        Err(e) => {
            return Err(MethodError::BadData(format!("training failed: {e}")));
        }
    };
    let store = out.models();
    let dir = store.artefact_dir(&fitted.files.sha256);
    store.write_files(&dir, &fitted.files.as_slices())?;
    for stage in ["autoencoder", "diffusion"] {
        let src = checkpoints.join(stage).join("loss.csv");
        if let Ok(bytes) = std::fs::read(&src) {
            out.write_bytes(&store.loss_curve(&dir, stage), &bytes)?;
        }
    }
    let inputs = json!({
        "TrainingKey": key,
        "Images": images.iter().map(|i| json!({
            "Path": i.id,
            "Site": i.site,
            "PreprocessingFingerprint": i.fingerprint,
        })).collect::<Vec<_>>(),
    });
    out.write_text_if_changed(
        &store.training_inputs(&dir),
        &(serde_json::to_string_pretty(&inputs).unwrap_or_default() + "\n"),
    )?;
    let m = &fitted.manifest.training;
    let losses = |stage: &str, r: &Option<crate::model::artefact::StageReport>| match r {
        Some(r) => format!("{stage} loss {:.4} → {:.4}", r.first_loss, r.last_loss),
        None => format!("{stage} not trained"),
    };
    let autoencoder = match (&m.autoencoder, &m.pretrained_autoencoder) {
        (None, Some(sha)) => format!("autoencoder pretrained ({})", &sha[..sha.len().min(12)]),
        (r, _) => losses("autoencoder", r),
    };
    tracing::info!(
        "trained HCLD model {} (latent scale {:.4}; {autoencoder}, {})",
        dir.display(),
        fitted.manifest.latent_scale,
        losses("diffusion", &m.diffusion),
    );
    Ok((dir, Some(fitted.latents)))
}

/// Chooses each site's representative (the image whose latent statistics are closest to the
/// site's mean) and caches its latent in the model store.
pub(super) fn cache_site_targets(
    ctx: &GroupContext,
    model_dir: &Path,
    latents: Option<Latents>,
) -> Result<(), MethodError> {
    let (settings, out, images) = (ctx.run.settings, ctx.run.out, ctx.images);
    let manifest = read_manifest(model_dir).map_err(|e| MethodError::BadData(e.to_string()))?;
    let config = &manifest.config;
    let read = |p: &PathBuf| -> Result<Volume, MethodError> {
        read_nifti(p)
            .map(|v| v.0)
            .map_err(|e| MethodError::BadData(e.to_string()))
    };
    let latents = match latents {
        Some(l) => l,
        None => {
            let harmonizer =
                load_harmonizer(&settings.resources, &settings.harmonisation.ddim, model_dir)?;
            let pool = network_pool(&settings.resources)?;
            let mut l = Vec::with_capacity(images.len());
            for i in images {
                if ctx.run.stop.load(Ordering::SeqCst) {
                    return Err(MethodError::Interrupted);
                }
                let v = read(&i.template)?;
                let grid = to_model_grid(&v, &config.grid).map_err(MethodError::BadData)?;
                l.push(pool.install(|| harmonizer.encode(&grid)));
            }
            l
        }
    };
    let sha = load_digest(model_dir).map_err(|e| MethodError::BadData(e.to_string()))?;
    let mut by_site: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, i) in images.iter().enumerate() {
        by_site.entry(&i.site).or_default().push(k);
    }
    for (site, idx) in by_site {
        let lat: Vec<&[f32]> = idx.iter().map(|&k| latents[k].as_slice()).collect();
        let Some(r) = representative(&lat, config.autoencoder.latent_channels) else {
            continue;
        };
        let k = idx[r];
        let image = read(&images[k].template)?;
        let mask: Vec<bool> = read(&images[k].mask)?
            .data()
            .iter()
            .map(|&v| v > 0.5)
            .collect();
        let meta = TargetLatent {
            kind: TargetKind::Site,
            label: site.to_string(),
            representative: images[k].id.clone(),
            candidates: idx.len(),
            model_sha256: sha.clone(),
            latent_shape: config.latent_shape(),
            latent_sha256: String::new(),
            intensity_quantiles: brain_quantiles(image.data(), &mask),
        }
        .with_latent(&latents[k]);
        let stem = out.models().site_target(&sha, &site_slug(site));
        let _lock = out.lock_named(&format!("target-site-{}", site_slug(site)))?;
        if let (Some(dir), Some(name)) = (stem.parent(), stem.file_name()) {
            out.models()
                .remove_temporaries(dir, &format!("{}.", name.to_string_lossy()));
        }
        let current = TargetLatent::load(&stem).is_ok_and(|(m, l)| m == meta && l == latents[k]);
        if !current {
            save_target(&ctx.run, &stem, &meta, &latents[k])?;
        }
        tracing::info!(
            "target for site {site}: {} (of {} images)",
            meta.representative,
            idx.len()
        );
    }
    Ok(())
}

/// What the diffusion stage will run, in the unit that bounds it: epochs, or the configuration's
/// optimiser-step budget when that ends training first (the `cpu` preset's 150 steps, so the
/// cost does not grow with the cohort).
fn diffusion_budget(tc: &crate::model::config::DiffusionTrainingConfig, images: usize) -> String {
    let accumulation = tc.accumulation_steps.max(1);
    let passes = tc.forward_passes(images);
    let steps = passes / accumulation;
    if passes < tc.epochs * images.div_ceil(tc.batch_size.max(1)) {
        format!(
            "{steps} optimiser steps (the configuration's budget; --epochs-ldm N trains N whole epochs instead)"
        )
    } else {
        format!("{} epochs ({steps} optimiser steps)", tc.epochs)
    }
}
