//! Participant-level harmonisation: what every job of a run shares (the loaded HCLD model and its
//! target latent, the Nyúl landmarks), prepared once by [`prepare`], and applying each
//! `--method` to one preprocessed image ([`apply`]): template-space and native-space outputs with
//! provenance sidecars, a before/after figure and intensity histograms against the target. An
//! output whose preprocessed input, method parameters, model and target are unchanged is kept.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bids::Entity;
use crate::bids::sites::site_slug;
use crate::cli::{ExitStatus, Settings, TargetSpec};
use crate::derivatives::{DerivativeName, DerivativesDataset, Sidecar};
use crate::model::artefact::load_artefact;
use crate::model::baselines::{IntensityMap, Method, NyulLandmarks, brain_values, fit_map};
use crate::model::config::GridConfig;
use crate::model::device::ComputeDevice;
use crate::model::harmonize::{Harmonizer, TargetLatent, quantiles};
use crate::preprocess::filter::gaussian_smooth;
use crate::preprocess::itk::WorldAffine;
use crate::preprocess::resample::{Grid, Interpolation, resample};
use crate::preprocess::t1w::to_native;
use crate::preprocess::template::{SPACE, brain_centred_grid};
use crate::report::comparison_figure;
use crate::report::plots::{Panel, Series, density, line_panels};
use crate::volume::{OutputDtype, Volume, XformCode, read_nifti};

use super::participant::{JobError, OutputNames, recorded_fingerprint};
use super::{Job, PipelineError};

/// The loaded HCLD model with the target it harmonises to.
#[derive(Debug)]
pub struct HcldSetup {
    /// The model; one harmonisation at a time (each already uses every thread it is given, and
    /// this bounds memory to one network's activations).
    pub harmonizer: Mutex<Harmonizer>,
    /// Where the target came from.
    pub target: TargetLatent,
    /// The target latent (scaled).
    pub target_latent: Vec<f32>,
    /// Model SHA-256, for fingerprints without taking the lock.
    pub model_sha256: String,
    /// Model folder.
    pub model_dir: PathBuf,
    /// Model config name and grid.
    pub config_name: String,
    /// The grid the networks see.
    pub grid: GridConfig,
    /// DDIM path used, as JSON.
    pub ddim: Value,
    /// Backend and device description.
    pub backend: String,
    /// The threads the networks run on: all of `--nprocs`. Harmonisations take turns (the
    /// mutex), so one job's network gets every thread even when the job pool has one worker
    /// (one participant per process, as cluster arrays run it).
    pub pool: rayon::ThreadPool,
}

/// A thread pool of `--nprocs` threads for network computations (flex runs on the current rayon
/// pool).
pub fn network_pool(settings: &Settings) -> Result<rayon::ThreadPool, PipelineError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(settings.nprocs)
        .thread_name(|i| format!("hcld-network-{i}"))
        .build()
        .map_err(|e| PipelineError::Threads(e.to_string()))
}

/// Nyúl landmarks read from their file.
#[derive(Debug, Clone)]
pub struct NyulFile {
    /// The landmarks.
    pub landmarks: NyulLandmarks,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Where they came from.
    pub path: PathBuf,
}

/// What every participant job of a run shares.
#[derive(Debug)]
pub struct MethodSetup {
    /// The methods to apply (without `none`, which writes nothing).
    pub methods: Vec<Method>,
    /// HCLD, when asked for.
    pub hcld: Option<HcldSetup>,
    /// Nyúl landmarks, when asked for.
    pub nyul: Option<NyulFile>,
}

fn setup_err(status: ExitStatus, message: String) -> PipelineError {
    PipelineError::Setup { status, message }
}

/// The HCLD model folder: `--model`, else the single `hcld-*` folder under `OUTPUT_DIR/models`.
pub fn find_model(settings: &Settings, out: &DerivativesDataset) -> Result<PathBuf, PipelineError> {
    if let Some(m) = &settings.model {
        return Ok(m.clone());
    }
    let dir = out.models_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("hcld-"))
                        && p.join("config.json").is_file()
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        0 => Err(setup_err(
            ExitStatus::NoInput,
            format!(
                "{}: no HCLD model; train one with the group level first (hcld BIDS_DIR OUTPUT_DIR group), or pass --model DIR",
                dir.display()
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => Err(setup_err(
            ExitStatus::Usage,
            format!(
                "{}: several HCLD models ({}); choose one with --model",
                dir.display(),
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Where cached targets of a model live.
pub fn targets_dir(out: &DerivativesDataset, model_sha: &str) -> PathBuf {
    out.models_dir()
        .join("targets")
        .join(format!("hcld-{}", &model_sha[..12.min(model_sha.len())]))
}

/// The cache stem of a site's target.
pub fn site_target_stem(out: &DerivativesDataset, model_sha: &str, site: &str) -> PathBuf {
    targets_dir(out, model_sha).join(format!("site-{}", site_slug(site)))
}

/// The default target site of a model: the one with the most training images (ties: first by
/// name).
pub fn default_site(images_per_site: &std::collections::BTreeMap<String, usize>) -> Option<String> {
    images_per_site
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(s, _)| s.clone())
}

/// Reads the Nyúl landmarks file.
pub fn read_nyul(path: &Path) -> Result<NyulFile, PipelineError> {
    let bytes = std::fs::read(path).map_err(|e| {
        setup_err(
            ExitStatus::NoInput,
            format!(
                "{}: cannot read Nyúl landmarks ({e}); fit them with the group level and --method nyul, or pass --nyul-landmarks FILE",
                path.display()
            ),
        )
    })?;
    let landmarks: NyulLandmarks = serde_json::from_slice(&bytes).map_err(|e| {
        setup_err(
            ExitStatus::DataError,
            format!(
                "{}: not a Nyúl landmarks file ({e}); fit it again with the group level",
                path.display()
            ),
        )
    })?;
    landmarks
        .validate()
        .map_err(|e| setup_err(ExitStatus::DataError, format!("{}: {e}", path.display())))?;
    Ok(NyulFile {
        landmarks,
        sha256: format!("{:x}", Sha256::digest(&bytes)),
        path: path.to_path_buf(),
    })
}

/// Loads the model, chooses the backend and device, and builds the harmoniser.
pub fn load_harmonizer(settings: &Settings, dir: &Path) -> Result<Harmonizer, PipelineError> {
    let device = ComputeDevice::select(settings.backend, settings.device)
        .map_err(|e| setup_err(ExitStatus::Usage, e.to_string()))?;
    let model = load_artefact(dir, &device)
        .map_err(|e| setup_err(ExitStatus::DataError, format!("{e}")))?;
    let config = &model.manifest.config;
    if config.grid.space != SPACE {
        return Err(setup_err(
            ExitStatus::DataError,
            format!(
                "{}: the model works in {} space; hcld registers to {SPACE}, use a model trained by hcld",
                dir.display(),
                config.grid.space
            ),
        ));
    }
    let asked = settings.ddim.apply(&config.ddim);
    let harmonizer = Harmonizer::new(model, device, asked.clone())
        .map_err(|e| setup_err(ExitStatus::Usage, e.to_string()))?;
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

/// Prepares what the participant jobs share: loads the model and its target, reads the Nyúl
/// landmarks. Fails the run (before any job) when something asked for is missing.
pub fn prepare(
    settings: &Settings,
    out: &DerivativesDataset,
    stop: &AtomicBool,
) -> Result<MethodSetup, PipelineError> {
    let methods: Vec<Method> = settings
        .methods
        .iter()
        .copied()
        .filter(|m| *m != Method::None)
        .collect();
    let nyul = if methods.contains(&Method::Nyul) {
        let path = settings
            .nyul_landmarks
            .clone()
            .unwrap_or_else(|| out.models_dir().join("nyul.json"));
        Some(read_nyul(&path)?)
    } else {
        None
    };
    let mut methods = methods;
    let implicit_without_model = !settings.methods_explicit
        && settings.model.is_none()
        && matches!(
            find_model(settings, out),
            Err(PipelineError::Setup {
                status: ExitStatus::NoInput,
                ..
            })
        );
    if implicit_without_model {
        tracing::info!(
            "no HCLD model in {} yet: preprocessing only (train one with the group level, then run the participant level again to harmonise)",
            out.models_dir().display()
        );
        methods.retain(|m| *m != Method::Hcld);
    }
    let hcld = if methods.contains(&Method::Hcld) {
        let dir = find_model(settings, out)?;
        let harmonizer = load_harmonizer(settings, &dir)?;
        let pool = network_pool(settings)?;
        let (target, latent) = pool.install(|| resolve_target(settings, out, &harmonizer, stop))?;
        let model = harmonizer.model();
        tracing::info!(
            "HCLD model {} ({}, config {}), target {} {} (representative {}), strength {}, {}+{} DDIM steps, {}",
            model.dir.display(),
            &model.sha256[..12],
            model.manifest.config.name,
            target.kind,
            target.label,
            target.representative,
            harmonizer.ddim().strength,
            harmonizer.ddim().inversion_steps,
            harmonizer.ddim().sampling_steps,
            harmonizer.device().describe()
        );
        Some(HcldSetup {
            model_sha256: model.sha256.clone(),
            model_dir: model.dir.clone(),
            config_name: model.manifest.config.name.clone(),
            grid: model.manifest.config.grid.clone(),
            ddim: json!({
                "Strength": harmonizer.ddim().strength,
                "InversionSteps": harmonizer.ddim().inversion_steps,
                "SamplingSteps": harmonizer.ddim().sampling_steps,
                "TargetTimestep": harmonizer.target_timestep(),
            }),
            backend: harmonizer.device().describe(),
            pool,
            harmonizer: Mutex::new(harmonizer),
            target,
            target_latent: latent,
        })
    } else {
        None
    };
    Ok(MethodSetup {
        methods,
        hcld,
        nyul,
    })
}

/// The target named by `--target-site` / `--target-image` (default: the model's largest site).
fn resolve_target(
    settings: &Settings,
    out: &DerivativesDataset,
    harmonizer: &Harmonizer,
    stop: &AtomicBool,
) -> Result<(TargetLatent, Vec<f32>), PipelineError> {
    let model = harmonizer.model();
    let site = match &settings.target {
        Some(TargetSpec::Image(path)) => {
            return target_from_image(settings, out, harmonizer, path, stop);
        }
        Some(TargetSpec::Site(s)) => s.clone(),
        None => default_site(&model.manifest.training.images_per_site).ok_or_else(|| {
            setup_err(
                ExitStatus::Usage,
                "the model records no training sites; choose a target with --target-site or --target-image".into(),
            )
        })?,
    };
    let stem = site_target_stem(out, &model.sha256, &site);
    if !stem.with_extension("json").is_file() {
        let dir = targets_dir(out, &model.sha256);
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
        return Err(setup_err(
            ExitStatus::NoInput,
            format!(
                "no cached target for site '{site}' with model {} ({}); run the group level with this model first (it picks each site's representative), choose one of: {}, or pass --target-image",
                &model.sha256[..12],
                stem.with_extension("json").display(),
                if known.is_empty() {
                    "(none cached)".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    TargetLatent::load(&stem).map_err(|e| setup_err(ExitStatus::DataError, e.to_string()))
}

/// Encodes a target image (preprocessed like every input) once per model and image, cached.
fn target_from_image(
    settings: &Settings,
    out: &DerivativesDataset,
    harmonizer: &Harmonizer,
    path: &Path,
    stop: &AtomicBool,
) -> Result<(TargetLatent, Vec<f32>), PipelineError> {
    let model = harmonizer.model();
    let bytes = std::fs::read(path).map_err(|e| {
        setup_err(
            ExitStatus::NoInput,
            format!("{}: cannot read --target-image: {e}", path.display()),
        )
    })?;
    let params = json!({
        "Preprocessing": super::participant::options(settings, &serde_json::Map::new()),
    });
    let mut h = Sha256::new();
    h.update(&bytes);
    h.update(params.to_string().as_bytes());
    let key = format!("{:x}", h.finalize());
    let stem = targets_dir(out, &model.sha256).join(format!("image-{}", &key[..16]));
    let _lock = out
        .lock_named(&format!("target-{}", &key[..16]))
        .map_err(PipelineError::Output)?;
    if let Ok(found) = TargetLatent::load(&stem) {
        return Ok(found);
    }
    if stop.load(Ordering::SeqCst) {
        return Err(PipelineError::Interrupted);
    }
    tracing::info!(
        "preprocessing and encoding --target-image {}",
        path.display()
    );
    let bad = |m: String| {
        setup_err(
            ExitStatus::DataError,
            format!("--target-image {}: {m}", path.display()),
        )
    };
    let (volume, _) = read_nifti(path).map_err(|e| bad(e.to_string()))?;
    let canonical = crate::volume::to_closest_canonical(&volume);
    let opts = super::participant::options(settings, &serde_json::Map::new());
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
        kind: "image".into(),
        label: path.display().to_string(),
        representative: path.display().to_string(),
        candidates: 1,
        model_sha256: model.sha256.clone(),
        latent_shape: model.manifest.config.latent_shape(),
        latent_sha256: String::new(),
        intensity_quantiles: brain_quantiles(result.template.data(), &mask),
    }
    .with_latent(&latent);
    meta.save(&stem, &latent)
        .map_err(|e| setup_err(ExitStatus::IoError, e.to_string()))?;
    Ok((meta, latent))
}

/// 2001 quantiles of the brain intensities: enough samples to fit a baseline map to the target
/// for the report's histograms.
pub fn brain_quantiles(values: &[f32], mask: &[bool]) -> Vec<f32> {
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

/// The image resampled onto a configuration's grid (smoothed first when the grid is coarser).
pub fn to_model_grid(image: &Volume, grid: &GridConfig) -> Result<Vec<f32>, String> {
    let target = brain_centred_grid(grid.shape, grid.voxel_size_mm);
    if Grid::of(image).matches(&target, 1e-6) {
        return Ok(image.data().to_vec());
    }
    let src = image
        .voxel_sizes()
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min);
    let smoothed;
    let source = if grid.voxel_size_mm > src * 1.01 {
        // Gaussian anti-aliasing for the resolution change: σ² = (r_new² − r_old²) / (8 ln 2).
        let sigma = ((grid.voxel_size_mm.powi(2) - src.powi(2)) / (8.0 * 2f64.ln())).sqrt();
        smoothed = gaussian_smooth(image, sigma);
        &smoothed
    } else {
        image
    };
    resample(source, &target, Interpolation::Linear, 0.0)
        .map(Volume::into_data)
        .map_err(|e| e.to_string())
}

/// Values on a configuration's grid back onto `onto` (linear).
pub fn from_model_grid(values: Vec<f32>, grid: &GridConfig, onto: &Grid) -> Result<Volume, String> {
    let g = brain_centred_grid(grid.shape, grid.voxel_size_mm);
    let v = Volume::new(g.dims, g.affine, values)?;
    if g.matches(onto, 1e-6) {
        return Ok(v);
    }
    resample(&v, onto, Interpolation::Linear, 0.0).map_err(|e| e.to_string())
}

/// The outputs of one method for one job.
struct MethodNames {
    template: DerivativeName,
    native: DerivativeName,
    figure: String,
    histogram: String,
}

fn method_names(method: Method, names: &OutputNames) -> MethodNames {
    let desc = method.desc();
    let key = names.native_t1w.source_key();
    MethodNames {
        template: names.template_t1w.clone().with(Entity::Description, desc),
        native: names.native_t1w.clone().with(Entity::Description, desc),
        figure: format!("{key}_space-{SPACE}_desc-{desc}_T1w.png"),
        histogram: format!("{key}_desc-{desc}histogram_T1w.png"),
    }
}

/// A path as sidecars record it: relative to OUTPUT_DIR when inside it (so outputs do not depend
/// on where OUTPUT_DIR is mounted), absolute otherwise.
fn shown_path(path: &Path, out: &DerivativesDataset) -> String {
    let root = std::fs::canonicalize(out.root()).unwrap_or_else(|_| out.root().to_path_buf());
    let p = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match p.strip_prefix(&root) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// What a job's preprocessed outputs hold, read once when a method needs computing.
struct Inputs {
    template: Volume,
    template_mask: Vec<bool>,
    native: Volume,
    native_mask: Vec<bool>,
    template_to_t1w: WorldAffine,
}

fn read_inputs(
    job: &Job,
    out: &DerivativesDataset,
    names: &OutputNames,
) -> Result<Inputs, JobError> {
    let read =
        |n: &DerivativeName| -> Result<Volume, JobError> { Ok(read_nifti(&out.path(n)?)?.0) };
    let bools = |v: &Volume| v.data().iter().map(|&x| x > 0.5).collect::<Vec<bool>>();
    let template = read(&names.template_t1w)?;
    let template_mask = bools(&read(&names.template_mask)?);
    let native = read(&names.native_t1w)?;
    let native_mask = bools(&read(&names.native_mask)?);
    let xfm = out.path(&names.t1w_to_template)?;
    let text = std::fs::read_to_string(&xfm).map_err(|e| {
        JobError::Harmonize(
            xfm.clone(),
            format!("cannot read: {e}; run again with --force"),
        )
    })?;
    let template_to_t1w = WorldAffine::from_itk_text(&text)
        .map_err(|e| JobError::Harmonize(xfm.clone(), format!("{e}; run again with --force")))?;
    if template_mask.len() != template.data().len() || native_mask.len() != native.data().len() {
        return Err(JobError::Harmonize(
            job.path.clone(),
            "preprocessed image and mask grids differ; run again with --force".into(),
        ));
    }
    Ok(Inputs {
        template,
        template_mask,
        native,
        native_mask,
        template_to_t1w,
    })
}

/// The parameters that decide a method's output (hashed into its fingerprint, and written to
/// the sidecar).
fn method_parameters(
    method: Method,
    setup: &MethodSetup,
    settings: &Settings,
    out: &DerivativesDataset,
) -> Value {
    match method {
        Method::Hcld => {
            let h = setup.hcld.as_ref().expect("prepared with the method");
            json!({
                "Model": {
                    "SHA256": h.model_sha256,
                    "Path": shown_path(&h.model_dir, out),
                    "Config": h.config_name,
                    "Grid": h.grid,
                },
                "Target": {
                    "Kind": h.target.kind,
                    "Label": h.target.label,
                    "Representative": h.target.representative,
                    "LatentSHA256": h.target.latent_sha256,
                },
                "DDIM": h.ddim,
                "Seed": settings.seed,
                "Backend": h.backend,
            })
        }
        Method::Nyul => {
            let n = setup.nyul.as_ref().expect("prepared with the method");
            json!({
                "Landmarks": n.landmarks,
                "LandmarksFile": shown_path(&n.path, out),
                "LandmarksSHA256": n.sha256,
            })
        }
        Method::WhiteStripe => {
            json!({ "StripeHalfWidthQuantile": crate::model::baselines::WHITE_STRIPE_WIDTH })
        }
        Method::ZScore | Method::None => json!({}),
    }
}

/// Applies every method of `setup` to one job's preprocessed outputs. Returns the paths and
/// whether anything was written.
pub fn apply(
    job: &Job,
    settings: &Settings,
    out: &DerivativesDataset,
    setup: &MethodSetup,
    stop: &AtomicBool,
) -> Result<(Vec<PathBuf>, bool), JobError> {
    if setup.methods.is_empty() {
        return Ok((Vec::new(), false));
    }
    let names = OutputNames::new(job, settings.output_resolution);
    let _lock = out.lock(&names.native_t1w)?;
    let preproc_fp = recorded_fingerprint(out, &names.native_t1w).ok_or_else(|| {
        JobError::Harmonize(
            job.path.clone(),
            "its preprocessed output has no fingerprint; run again with --force".into(),
        )
    })?;
    let mut inputs: Option<Inputs> = None;
    let mut paths = Vec::new();
    let mut written = false;
    for &method in &setup.methods {
        if stop.load(Ordering::SeqCst) {
            return Err(JobError::Interrupted(job.path.clone()));
        }
        let mn = method_names(method, &names);
        let params = method_parameters(method, setup, settings, out);
        // Where the model or landmarks sit is provenance, not content (their digests are in):
        // moving OUTPUT_DIR or naming the same model by another path keeps outputs current.
        let mut content = params.clone();
        if let Some(m) = content.get_mut("Model").and_then(Value::as_object_mut) {
            m.remove("Path");
        }
        if let Some(m) = content.as_object_mut() {
            m.remove("LandmarksFile");
        }
        let mut h = Sha256::new();
        for part in [
            preproc_fp.as_str(),
            method.name(),
            &content.to_string(),
            crate::VERSION,
            &settings.output_resolution.to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let fingerprint = format!("sha256:{:x}", h.finalize());
        let files = vec![
            out.path(&mn.template)?,
            out.path(&mn.template.with_extension(".json"))?,
            out.path(&mn.native)?,
            out.path(&mn.native.with_extension(".json"))?,
            out.figure_path(job.subject(), &mn.figure)?,
            out.figure_path(job.subject(), &mn.histogram)?,
        ];
        let recorded = recorded_fingerprint(out, &mn.native);
        if !settings.force
            && recorded.as_deref() == Some(fingerprint.as_str())
            && files.iter().all(|p| p.is_file())
        {
            paths.extend(files);
            continue;
        }
        if inputs.is_none() {
            inputs = Some(read_inputs(job, out, &names)?);
        }
        let inp = inputs.as_ref().expect("just read");
        let started = std::time::Instant::now();
        let (template_out, native_out, report) = compute(job, method, setup, inp, stop)?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!("{}: {method} in {seconds:.1} s", job.label());
        let provenance = json!({
            "Version": crate::VERSION,
            "Fingerprint": fingerprint,
            "Method": method.name(),
            "Units": method.units(),
            "PreprocessingFingerprint": preproc_fp,
            "Parameters": params,
            "Fit": report,
        });
        write_method(
            job,
            out,
            &names,
            &mn,
            method,
            setup,
            inp,
            &template_out,
            &native_out,
            &provenance,
            settings,
        )?;
        paths.extend(files);
        written = true;
    }
    Ok((paths, written))
}

/// One method's images: (template space, native space, fit report).
fn compute(
    job: &Job,
    method: Method,
    setup: &MethodSetup,
    inp: &Inputs,
    stop: &AtomicBool,
) -> Result<(Volume, Volume, Value), JobError> {
    let fail = |m: String| JobError::Harmonize(job.path.clone(), format!("{method}: {m}"));
    let brain = brain_values(inp.template.data(), &inp.template_mask);
    match method {
        Method::Hcld => {
            let h = setup.hcld.as_ref().expect("prepared");
            let grid_image = to_model_grid(&inp.template, &h.grid).map_err(fail)?;
            let values = {
                let harmonizer = h.harmonizer.lock().unwrap_or_else(|p| p.into_inner());
                // From a plain thread, not from this job-pool worker: a rayon worker that enters
                // another pool steals jobs of its own pool while it waits, and a stolen job would
                // block on the mutex this thread holds (a deadlock seen with 4 images, 2 workers).
                let joined = std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            h.pool.install(|| {
                                harmonizer.harmonize(&grid_image, &h.target_latent, &|| {
                                    stop.load(Ordering::SeqCst)
                                })
                            })
                        })
                        .join()
                });
                // A panic in the network thread stays a panic (run_jobs turns it into this job's
                // failure).
                let harmonised = match joined {
                    Ok(r) => r,
                    Err(panic) => std::panic::resume_unwind(panic),
                };
                harmonised.map_err(|_| JobError::Interrupted(job.path.clone()))?
            };
            if values.iter().any(|v| !v.is_finite()) {
                return Err(fail("the model produced NaN or infinite values; the model may be broken (retrain) or the input unusual".into()));
            }
            let on_output =
                from_model_grid(values, &h.grid, &Grid::of(&inp.template)).map_err(fail)?;
            let masked: Vec<f32> = on_output
                .data()
                .iter()
                .zip(&inp.template_mask)
                .map(|(&v, &m)| if m { v } else { 0.0 })
                .collect();
            let template_out = inp.template.with_data(masked).map_err(fail)?;
            let native = to_native(
                &template_out,
                &inp.template_to_t1w,
                &Grid::of(&inp.native),
                Interpolation::Linear,
            )
            .map_err(|e| fail(e.to_string()))?;
            let native_masked: Vec<f32> = native
                .data()
                .iter()
                .zip(&inp.native_mask)
                .map(|(&v, &m)| if m { v } else { 0.0 })
                .collect();
            let native_out = inp.native.with_data(native_masked).map_err(fail)?;
            Ok((template_out, native_out, json!({})))
        }
        _ => {
            let (map, report) = fit_map(method, &brain, setup.nyul.as_ref().map(|n| &n.landmarks))
                .map_err(|e| fail(e.to_string()))?;
            let template_out = inp
                .template
                .with_data(map.apply_masked(inp.template.data(), &inp.template_mask))
                .map_err(fail)?;
            let native_out = inp
                .native
                .with_data(map.apply_masked(inp.native.data(), &inp.native_mask))
                .map_err(fail)?;
            Ok((template_out, native_out, report))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_method(
    job: &Job,
    out: &DerivativesDataset,
    names: &OutputNames,
    mn: &MethodNames,
    method: Method,
    setup: &MethodSetup,
    inp: &Inputs,
    template_out: &Volume,
    native_out: &Volume,
    provenance: &Value,
    settings: &Settings,
) -> Result<(), JobError> {
    let uri = |n: &DerivativeName| -> Result<String, JobError> {
        Ok(format!("bids::{}", n.rel_path()?.display()))
    };
    let what = match method {
        Method::Hcld => {
            let h = setup.hcld.as_ref().expect("prepared");
            format!(
                "harmonised with HCLD (model {}, target {} {}; DDIM inversion and sampling in latent space)",
                &h.model_sha256[..12],
                h.target.kind,
                h.target.label
            )
        }
        Method::Nyul => "standardised with Nyúl–Udupa piecewise-linear histogram landmarks fitted at group level".into(),
        Method::WhiteStripe => "normalised with WhiteStripe (z-score against normal-appearing white matter)".into(),
        Method::ZScore => "z-scored with the brain mean and standard deviation".into(),
        Method::None => "unchanged".into(),
    };
    let res = settings.output_resolution;
    let dims = inp.template.dims();
    let resolution = format!(
        "{res} mm isotropic on hcld's model grid ({}×{}×{} voxels in {SPACE} world coordinates, centred on the template brain)",
        dims[0], dims[1], dims[2]
    );
    let mut sources = vec![uri(&names.template_t1w)?, uri(&names.template_mask)?];
    if method == Method::Hcld {
        sources.push(format!(
            "bids::models/{}",
            setup
                .hcld
                .as_ref()
                .and_then(|h| h
                    .model_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default()
        ));
    }
    out.write_image(
        &mn.template,
        template_out,
        OutputDtype::Float32,
        XformCode::Mni152,
        &Sidecar::new(
            &format!("Preprocessed T1w in {SPACE} space {what}; brain only (zero outside the brain mask). Intensities: {}.", method.units()),
            &sources,
            true,
        )
        .insert("Resolution", json!(resolution))
        .insert("hcld", provenance.clone()),
    )?;
    // Figures before the native image, whose sidecar marks this method complete.
    write_figures(job, out, mn, method, setup, inp, template_out)?;
    out.write_image(
        &mn.native,
        native_out,
        OutputDtype::Float32,
        XformCode::ScannerAnat,
        &Sidecar::new(
            &format!("T1w {what}, on the native grid of the preprocessed T1w (RAS+); brain only. Intensities: {}.", method.units()),
            &[uri(&mn.template)?, uri(&names.t1w_to_template)?, uri(&names.native_mask)?, uri(&names.native_t1w)?],
            true,
        )
        .insert("hcld", provenance.clone()),
    )?;
    Ok(())
}

/// The before/after/difference figure and the intensity histograms (this image before and after,
/// and the target's brain intensities under the same method, dashed).
#[allow(clippy::too_many_arguments)]
fn write_figures(
    job: &Job,
    out: &DerivativesDataset,
    mn: &MethodNames,
    method: Method,
    setup: &MethodSetup,
    inp: &Inputs,
    template_out: &Volume,
) -> Result<(), JobError> {
    let fig = |e: crate::report::FigureError| JobError::Figure(job.path.clone(), e.to_string());
    let zoom = (4.0 / inp.template.voxel_sizes()[0]).round().max(1.0) as usize;
    let comparison =
        comparison_figure(&inp.template, template_out, &inp.template_mask, zoom).map_err(fig)?;
    out.write_bytes(&out.figure_path(job.subject(), &mn.figure)?, &comparison)?;
    let before = brain_values(inp.template.data(), &inp.template_mask);
    let after = brain_values(template_out.data(), &inp.template_mask);
    // The target's intensities: the cached target of HCLD when there is one, mapped by the same
    // method fitted to the target itself.
    let target_before: Option<Vec<f32>> = setup
        .hcld
        .as_ref()
        .map(|h| h.target.intensity_quantiles.clone())
        .filter(|q| !q.is_empty());
    let target_after: Option<Vec<f32>> = target_before.as_ref().and_then(|q| match method {
        Method::Hcld | Method::None => Some(q.clone()),
        m => fit_map(m, q, setup.nyul.as_ref().map(|n| &n.landmarks))
            .ok()
            .map(|(map, _): (IntensityMap, _)| q.iter().map(|&v| map.apply(v)).collect()),
    });
    let range = |vals: &[&[f32]]| -> (f64, f64) {
        let all: Vec<f32> = vals.iter().flat_map(|v| v.iter().copied()).collect();
        let q = quantiles(&all);
        if q.is_empty() {
            (0.0, 1.0)
        } else {
            // 1st–99th percentile of everything shown: z-scores of a few bright voxels would squash the plot.
            let (a, b) = (q[1] as f64, q[99] as f64);
            let m = (b - a).max(1e-6) * 0.05;
            (a - m, b + m)
        }
    };
    let panel =
        |title: String, x: &str, own: &[f32], target: Option<&Vec<f32>>, colour: usize| -> Panel {
            let mut vals: Vec<&[f32]> = vec![own];
            if let Some(t) = target {
                vals.push(t);
            }
            let (lo, hi) = range(&vals);
            let mut series = vec![Series {
                label: "this image".into(),
                colour: Some(colour),
                dashed: false,
                points: density(own, lo, hi, 100),
            }];
            if let Some(t) = target {
                series.push(Series {
                    label: "target".into(),
                    colour: None,
                    dashed: true,
                    points: density(t, lo, hi, 100),
                });
            }
            Panel {
                title,
                x_label: x.into(),
                y_label: "density".into(),
                series,
            }
        };
    let hist = line_panels(
        &[
            panel(
                "before (preprocessed)".into(),
                "intensity",
                &before,
                target_before.as_ref(),
                7,
            ),
            panel(
                format!("after ({method})"),
                "intensity",
                &after,
                target_after.as_ref(),
                0,
            ),
        ],
        false,
        (760, 260),
    )
    .map_err(fig)?;
    out.write_bytes(&out.figure_path(job.subject(), &mn.histogram)?, &hist)?;
    Ok(())
}

/// The figure and histogram file names of a method's outputs for one job (for reports).
pub fn figure_names(job: &Job, method: Method, resolution: u8) -> (String, String) {
    let names = OutputNames::new(job, resolution);
    let mn = method_names(method, &names);
    (mn.figure, mn.histogram)
}

/// Paths of a method's template-space output and of the preprocessed template image and mask.
pub fn template_paths(
    job: &Job,
    method: Method,
    resolution: u8,
    out: &DerivativesDataset,
) -> Result<(PathBuf, PathBuf, PathBuf), JobError> {
    let names = OutputNames::new(job, resolution);
    let mn = method_names(method, &names);
    Ok((
        out.path(&mn.template)?,
        out.path(&names.template_t1w)?,
        out.path(&names.template_mask)?,
    ))
}
