//! Finding, loading and targeting an HCLD model for a run: `--model` or the store's one model,
//! the backend and device, the DDIM path that will run, and the target latent (a site's cached
//! representative, or a `--target-image` encoded once and cached).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::bids::sites::site_slug;
use crate::model::artefact::load_artefact;
use crate::model::baselines::brain_values;
use crate::model::device::ComputeDevice;
use crate::model::grid::to_model_grid;
use crate::model::harmonize::{Harmonizer, TargetKind, TargetLatent, quantiles};
use crate::preprocess::template::SPACE;
use crate::settings::run::{DdimOverrides, Resources, TargetSpec};
use crate::volume::read_nifti;

use super::harmoniser::HcldHarmoniser;
use crate::methods::provenance::{DdimRecord, HcldParameters, ModelRecord, TargetRecord};
use crate::methods::{MethodError, RunContext};

/// A thread pool of `--nprocs` threads for network computations (flex runs on the current rayon
/// pool).
pub fn network_pool(resources: &Resources) -> Result<rayon::ThreadPool, MethodError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(resources.nprocs)
        .thread_name(|i| format!("hcld-network-{i}"))
        .build()
        .map_err(|e| MethodError::Io(format!("cannot start worker threads: {e}")))
}

/// The HCLD model folder: `--model`, else the single `hcld-*` folder under `OUTPUT_DIR/models`.
pub fn find_model(ctx: &RunContext) -> Result<PathBuf, MethodError> {
    if let Some(m) = &ctx.settings.model.dir {
        return Ok(m.clone());
    }
    let store = ctx.out.models();
    let dir = store.dir();
    let mut found = store.artefacts();
    match found.len() {
        0 => Err(MethodError::Missing(format!(
            "{}: no HCLD model; train one with the group level first (hcld BIDS_DIR OUTPUT_DIR group), or pass --model DIR",
            dir.display()
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(MethodError::Usage(format!(
            "{}: several HCLD models ({}); choose one with --model",
            dir.display(),
            found
                .iter()
                .map(|p| folder_name(p))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The default target site of a model: the one with the most training images (ties: first by
/// name).
fn default_site(images_per_site: &BTreeMap<String, usize>) -> Option<String> {
    images_per_site
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(s, _)| s.clone())
}

/// Loads the model, chooses the backend and device, and builds the harmoniser.
pub fn load_harmonizer(
    resources: &Resources,
    ddim: &DdimOverrides,
    dir: &Path,
) -> Result<Harmonizer, MethodError> {
    let device = ComputeDevice::select(resources.backend, resources.device)
        .map_err(|e| MethodError::Usage(e.to_string()))?;
    let model = load_artefact(dir, &device).map_err(|e| MethodError::BadData(format!("{e}")))?;
    let config = &model.manifest.config;
    if config.grid.space != SPACE {
        return Err(MethodError::BadData(format!(
            "{}: the model works in {} space; hcld registers to {SPACE}, use a model trained by hcld",
            dir.display(),
            config.grid.space
        )));
    }
    let asked = ddim.apply(&config.ddim);
    let harmonizer = Harmonizer::new(model, device, asked.clone())
        .map_err(|e| MethodError::Usage(e.to_string()))?;
    let runs = harmonizer.ddim();
    if (runs.inversion_steps, runs.sampling_steps) != (asked.inversion_steps, asked.sampling_steps)
    {
        tracing::warn!(
            "strength {} inverts to timestep {}: {} inversion and {} sampling steps run (asked {} and {}); the sidecars record what runs",
            runs.strength,
            harmonizer.target_timestep(),
            runs.inversion_steps,
            runs.sampling_steps,
            asked.inversion_steps,
            asked.sampling_steps
        );
    }
    Ok(harmonizer)
}

/// Loads the model and its target for a participant run.
pub(super) fn prepare(ctx: &RunContext) -> Result<HcldHarmoniser, MethodError> {
    let settings = ctx.settings;
    let dir = find_model(ctx)?;
    let harmonizer = load_harmonizer(&settings.resources, &settings.harmonisation.ddim, &dir)?;
    let pool = network_pool(&settings.resources)?;
    let (target, latent) = pool.install(|| resolve_target(ctx, &harmonizer))?;
    let model = harmonizer.model();
    let ddim = harmonizer.ddim();
    let output_mode = settings
        .harmonisation
        .output_mode
        .unwrap_or(model.manifest.config.output_mode);
    tracing::info!(
        "HCLD model {} ({}, config {}), target {} {} (representative {}), strength {}, {}+{} DDIM steps, x̂₀ clipping {}, output {output_mode}, {}",
        model.dir.display(),
        &model.sha256[..12],
        model.manifest.config.name,
        target.kind,
        target.label,
        target.representative,
        ddim.strength,
        ddim.inversion_steps,
        ddim.sampling_steps,
        harmonizer
            .clip_bound()
            .map_or_else(|| "off".to_string(), |b| format!("±{b:.3}")),
        harmonizer.device().describe()
    );
    let parameters = HcldParameters {
        model: ModelRecord {
            sha256: model.sha256.clone(),
            path: ctx.out.models().shown_path(&model.dir),
            config: model.manifest.config.name.clone(),
            grid: model.manifest.config.grid.clone(),
        },
        target: TargetRecord {
            kind: target.kind,
            label: target.label.clone(),
            representative: target.representative.clone(),
            latent_sha256: target.latent_sha256.clone(),
        },
        ddim: DdimRecord {
            strength: ddim.strength,
            inversion_steps: ddim.inversion_steps,
            sampling_steps: ddim.sampling_steps,
            target_timestep: harmonizer.target_timestep(),
            clip: ddim.clip,
            clip_bound: harmonizer.clip_bound(),
        },
        output_mode,
        seed: settings.harmonisation.seed,
        backend: harmonizer.device().describe(),
    };
    Ok(HcldHarmoniser {
        model_folder: folder_name(&model.dir),
        parameters,
        harmonizer: Mutex::new(harmonizer),
        target_latent: latent,
        target_quantiles: target.intensity_quantiles,
        pool,
    })
}

/// The target named by `--target-site` / `--target-image` (default: the model's largest site).
fn resolve_target(
    ctx: &RunContext,
    harmonizer: &Harmonizer,
) -> Result<(TargetLatent, Vec<f32>), MethodError> {
    let model = harmonizer.model();
    let store = ctx.out.models();
    let site = match &ctx.settings.harmonisation.target {
        Some(TargetSpec::Image(path)) => {
            return target_from_image(ctx, harmonizer, path);
        }
        Some(TargetSpec::Site(s)) => s.clone(),
        None => default_site(&model.manifest.training.images_per_site).ok_or_else(|| {
            MethodError::Usage("the model records no training sites; choose a target with --target-site or --target-image".into(),
            )
        })?,
    };
    let stem = store.site_target(&model.sha256, &site_slug(&site));
    if !stem.with_extension("json").is_file() {
        let dir = store.targets_dir(&model.sha256);
        let known: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let p = e.path();
                        (p.extension().is_some_and(|x| x == "json"))
                            .then(|| TargetLatent::load(&p.with_extension("")).ok())
                            .flatten()
                            .map(|(t, _)| t.label)
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Err(MethodError::Missing(format!(
            "no cached target for site '{site}' with model {} ({}); run the group level with this model first (it picks each site's representative), choose one of: {}, or pass --target-image",
            &model.sha256[..12],
            stem.with_extension("json").display(),
            if known.is_empty() {
                "(none cached)".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    TargetLatent::load(&stem).map_err(|e| MethodError::BadData(e.to_string()))
}

/// Encodes a target image (preprocessed like every input) once per model and image, cached.
fn target_from_image(
    ctx: &RunContext,
    harmonizer: &Harmonizer,
    path: &Path,
) -> Result<(TargetLatent, Vec<f32>), MethodError> {
    let model = harmonizer.model();
    let bytes = crate::input::read_regular(path, crate::input::IMAGE_LIMIT).map_err(|e| {
        MethodError::Missing(format!(
            "{}: cannot read --target-image: {}",
            path.display(),
            crate::input::reason(&e)
        ))
    })?;
    let opts = ctx
        .settings
        .preprocessing
        .t1w_options(&serde_json::Map::new());
    let params = json!({ "Preprocessing": opts });
    let mut h = Sha256::new();
    h.update(&bytes);
    h.update(params.to_string().as_bytes());
    let key = format!("{:x}", h.finalize());
    let stem = ctx.out.models().image_target(&model.sha256, &key);
    let _lock = ctx.out.lock_named(&format!("target-{}", &key[..16]))?;
    if let (Some(dir), Some(name)) = (stem.parent(), stem.file_name()) {
        ctx.out
            .models()
            .remove_temporaries(dir, &format!("{}.", name.to_string_lossy()));
    }
    if let Ok(found) = TargetLatent::load(&stem) {
        return Ok(found);
    }
    if ctx.stop.load(Ordering::SeqCst) {
        return Err(MethodError::Interrupted);
    }
    tracing::info!(
        "preprocessing and encoding --target-image {}",
        path.display()
    );
    let bad = |m: String| MethodError::BadData(format!("--target-image {}: {m}", path.display()));
    let (volume, _) = read_nifti(path).map_err(|e| bad(e.to_string()))?;
    // A brain mask or label map given by mistake would be encoded as a "style" and silently
    // restyle every image towards it: a T1w has hundreds of distinct intensities.
    let mut distinct: Vec<u32> = Vec::new();
    for v in volume.data().iter().filter(|v| v.is_finite()) {
        if !distinct.contains(&v.to_bits()) {
            distinct.push(v.to_bits());
            if distinct.len() > MAX_LABELS {
                break;
            }
        }
    }
    if (2..=MAX_LABELS).contains(&distinct.len()) {
        return Err(bad(format!(
            "it holds only {} distinct values, so it is a mask or label map, not a T1w; give a T1w image of the target site",
            distinct.len()
        )));
    }
    let canonical = crate::volume::to_closest_canonical(&volume);
    let result = crate::preprocess::t1w::preprocess_t1w(&canonical, None, None, &opts)
        .map_err(|e| bad(e.to_string()))?;
    let mask: Vec<bool> = result
        .template_mask
        .data()
        .iter()
        .map(|&v| v > 0.5)
        .collect();
    let grid_image = to_model_grid(&result.template, &model.manifest.config.grid).map_err(bad)?;
    let latent = harmonizer.encode(&grid_image);
    let meta = TargetLatent {
        kind: TargetKind::Image,
        label: path.display().to_string(),
        representative: path.display().to_string(),
        candidates: 1,
        model_sha256: model.sha256.clone(),
        latent_shape: model.manifest.config.latent_shape(),
        latent_sha256: String::new(),
        intensity_quantiles: brain_quantiles(result.template.data(), &mask),
    }
    .with_latent(&latent);
    save_target(ctx, &stem, &meta, &latent)?;
    Ok((meta, latent))
}

/// The most distinct values a mask or label map has (a T1w has hundreds).
const MAX_LABELS: usize = 16;

/// Writes a target's latent, then its JSON (which names the latent's digest, so a JSON on disk
/// implies a complete latent).
pub(super) fn save_target(
    ctx: &RunContext,
    stem: &Path,
    meta: &TargetLatent,
    latent: &[f32],
) -> Result<(), MethodError> {
    let (json, bin) = meta.to_bytes(latent);
    let name = |ext: &str| {
        stem.with_extension(ext)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let dir = stem.parent().unwrap_or(Path::new("."));
    ctx.out.models().write_files(
        dir,
        &[
            (name("f32").as_str(), &bin[..]),
            (name("json").as_str(), &json[..]),
        ],
    )?;
    Ok(())
}

/// 2001 quantiles of the brain intensities: enough samples to fit a baseline map to the target
/// for the report's histograms.
pub(super) fn brain_quantiles(values: &[f32], mask: &[bool]) -> Vec<f32> {
    let brain = brain_values(values, mask);
    let q = quantiles(&brain);
    if q.is_empty() {
        return q;
    }
    // Interpolate the 101 quantiles to 2001 points (piecewise linear quantile function).
    (0..=2000)
        .map(|i| {
            let u = i as f64 / 20.0;
            let (lo, hi) = (u.floor() as usize, (u.ceil() as usize).min(100));
            let w = (u - lo as f64) as f32;
            q[lo] * (1.0 - w) + q[hi] * w
        })
        .collect()
}

/// The folder name of a model directory.
pub(super) fn folder_name(dir: &std::path::Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
