//! `hcld-pretrain`: trains the autoencoder of an HCLD configuration once, on random augmented
//! brain patches of preprocessed images (`hcld::train::PatchSet`), and writes its weights with a
//! model card: the generic, pretrained autoencoder the paper describes, which the group level can
//! reuse instead of retraining stage 1 on every cohort. Thin: parse, read, call the library.
//! Resumable: checkpoints go to the work directory, and the same command continues them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;

use hcld::metrics::image::fidelity;
use hcld::model::artefact::{autoencoder_bytes, load_autoencoder};
use hcld::model::config::HcldConfig;
use hcld::model::device::{Backend, ComputeDevice, DeviceKind};
use hcld::model::grid::to_model_grid;
use hcld::model::storage::{sha256_hex, write_atomic};
use hcld::train::{
    InMemoryTrainingSet, PatchSet, TrainOptions, TrainingSet, grid_tensor, tensor_values,
    train_autoencoder,
};
use hcld::volume::read_nifti;

/// Train an HCLD configuration's autoencoder on random brain patches of preprocessed
/// template-space T1w images (what `hcld BIDS_DIR OUT participant` writes as
/// `*_space-MNI152NLin2009aSym_res-2_desc-preproc_T1w.nii.gz`), then score its round trip on
/// held-out images. Writes OUTPUT_DIR/autoencoder.bpk and OUTPUT_DIR/autoencoder.json.
#[derive(Debug, Parser)]
#[command(name = "hcld-pretrain", version)]
struct Args {
    /// Where the weights and their model card go.
    output_dir: PathBuf,
    /// Training images: preprocessed template-space T1w files, or folders searched for them.
    #[arg(long, num_args = 1.., required = true)]
    images: Vec<PathBuf>,
    /// Held-out images (never trained on) for the round-trip scores.
    #[arg(long, num_args = 1..)]
    holdout: Vec<PathBuf>,
    /// The configuration whose autoencoder and grid are used (a preset or a JSON file).
    #[arg(long, default_value = "cpu")]
    config: String,
    /// Patch edge in voxels (a multiple of the autoencoder's downsampling).
    #[arg(long, default_value_t = 32)]
    patch: usize,
    /// Patches per forward pass.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Forward passes (optimiser steps).
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 2e-4)]
    learning_rate: f64,
    /// Patch gammas are drawn log-uniformly from [1/G, G] (1 = no augmentation).
    #[arg(long, default_value_t = 1.4)]
    gamma: f64,
    /// Seed of initialisation, patches and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start from these weights (an `autoencoder.bpk` of an earlier run, e.g. the shipped one)
    /// instead of a random initialisation: training continues, with a new optimiser state.
    #[arg(long, value_name = "BPK")]
    init: Option<PathBuf>,
    /// Work directory of the checkpoints (the same command resumes from them).
    #[arg(short = 'w', long = "work-dir", default_value = "hcld-pretrain-work")]
    work_dir: PathBuf,
    /// Checkpoint every N optimiser steps.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Backend: flex or tch.
    #[arg(long, default_value = "flex")]
    backend: Backend,
    /// Threads (default: all CPUs).
    #[arg(long)]
    nprocs: Option<usize>,
}

const SUFFIX: &str = "_desc-preproc_T1w.nii.gz";

/// Length of the patch sequence every run draws from (in order, shuffled in one pass).
const PATCHES: usize = 200_000;

/// Training images whose round trip is scored (the first ones): enough to compare with the
/// held-out figure, a fraction of the time.
const SCORED_TRAINING_IMAGES: usize = 8;

fn find_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() {
            out.push(p.clone());
        } else if p.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(p)
                .into_iter()
                .filter_map(|e| e.ok())
                .map(|e| e.into_path())
                .filter(|f| {
                    let n = f
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default();
                    n.contains("_space-") && n.ends_with(SUFFIX)
                })
                .collect();
            if found.is_empty() {
                bail!(
                    "{}: no *_space-*{SUFFIX} images in this folder",
                    p.display()
                );
            }
            found.sort();
            out.extend(found);
        } else {
            bail!("{}: not found", p.display());
        }
    }
    Ok(out)
}

/// The images on the model grid, as a training set (id = file name).
fn load(paths: &[PathBuf], config: &HcldConfig) -> Result<InMemoryTrainingSet> {
    let mut set = InMemoryTrainingSet::default();
    for p in paths {
        let (volume, _) = read_nifti(p).with_context(|| format!("{}: cannot read", p.display()))?;
        let grid = to_model_grid(&volume, &config.grid)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        set.items.push((name.clone(), name, grid));
    }
    Ok(set)
}

/// SSIM and PSNR of each image's round trip inside its brain (values above the patch threshold).
fn round_trip_scores(
    ae: &hcld::model::autoencoder::AutoencoderKl,
    set: &InMemoryTrainingSet,
    config: &HcldConfig,
    device: &ComputeDevice,
) -> Vec<serde_json::Value> {
    set.items
        .iter()
        .map(|(id, _, image)| {
            let x = grid_tensor(&[image], config.grid.shape, &device.device);
            let recon = tensor_values(ae.reconstruct(x)).remove(0);
            let mask: Vec<bool> = image
                .iter()
                .map(|&v| v > hcld::train::PATCH_BRAIN_THRESHOLD)
                .collect();
            let (ssim, psnr) =
                fidelity(image, &recon, config.grid.shape, &mask).unwrap_or((f64::NAN, f64::NAN));
            eprintln!("round trip {id}: SSIM {ssim:.4}, PSNR {psnr:.2} dB");
            json!({"image": id, "ssim": ssim, "psnr": psnr})
        })
        .collect()
}

/// The mean of a score over images (NaN without images: written as `null`).
fn mean(scores: &[serde_json::Value], key: &str) -> f64 {
    let v: Vec<f64> = scores.iter().filter_map(|s| s[key].as_f64()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

fn run(args: Args) -> Result<()> {
    let config = HcldConfig::from_preset_or_file(&args.config)?;
    let f = config.autoencoder.downsampling_factor();
    if args.patch == 0 || !args.patch.is_multiple_of(f) {
        bail!("--patch {} must be a positive multiple of {f}", args.patch);
    }
    let device = ComputeDevice::select(Some(args.backend), DeviceKind::Cpu)?;
    let train_paths = find_images(&args.images)?;
    let holdout_paths = find_images(&args.holdout)?;
    if let Some(both) = holdout_paths.iter().find(|h| train_paths.contains(h)) {
        bail!("{}: both a training and a held-out image", both.display());
    }
    let volumes = load(&train_paths, &config)?;
    let holdout = load(&holdout_paths, &config)?;
    eprintln!(
        "{} training images, {} held out; grid {:?} at {} mm; {} steps of {} patches of {}³",
        volumes.len(),
        holdout.len(),
        config.grid.shape,
        config.grid.voxel_size_mm,
        args.steps,
        args.batch,
        args.patch
    );
    // The patch sequence does not depend on --steps, so a run can be continued with more steps
    // (or ended early with fewer) from its checkpoints.
    if args.steps * args.batch > PATCHES {
        bail!("--steps × --batch must be at most {PATCHES}");
    }
    let patches = PatchSet::new(
        &volumes,
        config.grid.shape,
        [args.patch; 3],
        PATCHES,
        args.seed,
        args.gamma,
    )?;
    let mut patch_config = config.clone();
    patch_config.grid.shape = [args.patch; 3];
    patch_config.seed = args.seed;
    patch_config.autoencoder_training.batch_size = args.batch;
    patch_config.autoencoder_training.accumulation_steps = 1;
    patch_config.autoencoder_training.epochs = 1;
    patch_config.autoencoder_training.learning_rate = args.learning_rate;
    // Another start is another run: its checkpoints live in their own folder, under another
    // identity, so neither resumes the other's.
    let (initial, checkpoints) = match &args.init {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            let start = sha256_hex(&bytes)[..12].to_string();
            patch_config.name = format!("{} (from {start})", config.name);
            let network = load_autoencoder(&config.autoencoder, bytes, path, &device)?;
            (Some(network), format!("autoencoder-from-{start}"))
        }
        None => (None, "autoencoder".to_string()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut options = TrainOptions::new(args.work_dir.join(checkpoints));
    options.checkpoint_every = args.checkpoint_every;
    options.max_steps = Some(args.steps);
    options.initial_autoencoder = initial;
    // Patches are small: keeping the activations is affordable and a third faster than
    // recomputing them.
    options.gradient_checkpointing = false;
    options.stop = Some(stop);
    let (ae, report) = train_autoencoder(&patch_config, &patches, &device, &options)?;
    let scored = InMemoryTrainingSet {
        items: volumes
            .items
            .iter()
            .take(SCORED_TRAINING_IMAGES)
            .cloned()
            .collect(),
    };
    let train_scores = round_trip_scores(&ae, &scored, &config, &device);
    let holdout_scores = round_trip_scores(&ae, &holdout, &config, &device);
    let weights = autoencoder_bytes(&ae)?;
    let card = json!({
        "Description": "HCLD autoencoder pretrained by hcld-pretrain on random brain patches",
        "HcldVersion": hcld::VERSION,
        "Autoencoder": config.autoencoder,
        "Grid": config.grid,
        "WeightsSHA256": sha256_hex(&weights),
        "Training": {
            "Command": std::env::args().collect::<Vec<_>>().join(" "),
            "Images": volumes.items.iter().map(|i| &i.0).collect::<Vec<_>>(),
            "Patch": args.patch,
            "Batch": args.batch,
            "Steps": args.steps,
            "LearningRate": args.learning_rate,
            "Gamma": args.gamma,
            "Seed": args.seed,
            "StartedFrom": args.init.as_ref().map(|p| p.display().to_string()),
            "KLWeight": config.autoencoder_training.kl_weight,
            "Report": report,
            "Backend": device.describe(),
        },
        "RoundTrip": {
            "Training": {"MeanSSIM": mean(&train_scores, "ssim"), "MeanPSNR": mean(&train_scores, "psnr"), "Images": train_scores},
            "HeldOut": {"MeanSSIM": mean(&holdout_scores, "ssim"), "MeanPSNR": mean(&holdout_scores, "psnr"), "Images": holdout_scores},
        },
    });
    let out: &Path = &args.output_dir;
    write_atomic(&out.join("autoencoder.bpk"), &weights)?;
    write_atomic(
        &out.join("autoencoder.json"),
        serde_json::to_string_pretty(&card)?.as_bytes(),
    )?;
    eprintln!(
        "wrote {}: held-out round trip SSIM {:.4}, PSNR {:.2} dB",
        out.display(),
        mean(&holdout_scores, "ssim"),
        mean(&holdout_scores, "psnr")
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Progress lines of the training stage (steps, loss, ETA) on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(n) = args.nprocs
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
    {
        eprintln!("hcld-pretrain: {e}");
        return ExitCode::from(1);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hcld-pretrain: {e:#}");
            ExitCode::from(1)
        }
    }
}
