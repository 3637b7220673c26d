//! Command-line arguments validated into [`Settings`]: one function per settings group, each
//! checking its own arguments (files exist, numbers in range, paths contained) and naming the
//! argument and the fix in its error.

use std::path::{Path, PathBuf};

use crate::bids::{Query, is_label};
use crate::methods::Method;
use crate::model::config::HcldConfig;
use crate::model::device::Backend;
use crate::model::sampler::DdimConfig;
use crate::preprocess::intensity::IntensityScaling;
use crate::settings::{
    AnalysisLevel, DdimOverrides, ExitStatus, Harmonisation, MAX_THREADS_PER_CPU, ModelSettings,
    Paths, Preprocessing, Resources, RunSettings, Selection, Settings, SettingsError, TargetSpec,
};

use super::args::{Args, ConfigSource, MethodChoice};

type Result<T> = std::result::Result<T, SettingsError>;

/// Validates parsed arguments into settings.
pub fn settings(args: &Args) -> Result<Settings> {
    let level = level(&args.analysis_level)?;
    let paths = paths(args)?;
    let selection = selection(args)?;
    let resources = resources(args)?;
    let preprocessing = preprocessing(args)?;
    let model = model(args)?;
    let (methods, harmonisation) = harmonisation(args, level)?;
    Ok(Settings {
        methods,
        run: RunSettings {
            level,
            paths,
            selection,
            resources,
            preprocessing,
            model,
            harmonisation,
        },
    })
}

fn level(name: &str) -> Result<AnalysisLevel> {
    match name {
        "participant" => Ok(AnalysisLevel::Participant),
        "group" => Ok(AnalysisLevel::Group),
        other => Err(SettingsError::new(
            ExitStatus::UnknownLevel,
            format!("unknown analysis level '{other}'; use 'participant' or 'group'"),
        )),
    }
}

/// BIDS_DIR, OUTPUT_DIR, the work directory and `--derivatives`, resolved and checked so that
/// nothing is ever written into BIDS_DIR.
fn paths(args: &Args) -> Result<Paths> {
    if !args.bids_dir.is_dir() {
        return Err(SettingsError::no_input(format!(
            "{}: BIDS_DIR not found or not a directory",
            args.bids_dir.display()
        )));
    }
    let bids_dir = std::fs::canonicalize(&args.bids_dir).map_err(|e| {
        SettingsError::no_input(format!(
            "{}: cannot resolve BIDS_DIR: {e}",
            args.bids_dir.display()
        ))
    })?;
    let output_dir = resolve(&args.output_dir);
    if output_dir == bids_dir {
        return Err(SettingsError::usage(format!(
            "{}: OUTPUT_DIR is BIDS_DIR; hcld never writes into the input dataset, use e.g. {}/derivatives/hcld",
            output_dir.display(),
            bids_dir.display()
        )));
    }
    let derivatives_dir = bids_dir.join("derivatives");
    let under_derivatives =
        output_dir.starts_with(&derivatives_dir) && output_dir != derivatives_dir;
    if output_dir.starts_with(&bids_dir) && !under_derivatives {
        return Err(SettingsError::usage(format!(
            "{}: OUTPUT_DIR lies inside BIDS_DIR; hcld never writes into the input dataset, use a folder outside it or under {}/derivatives/",
            output_dir.display(),
            bids_dir.display()
        )));
    }
    if bids_dir.starts_with(&output_dir) {
        return Err(SettingsError::usage(format!(
            "{}: OUTPUT_DIR contains BIDS_DIR; choose a separate folder",
            output_dir.display()
        )));
    }
    let mut derivatives = Vec::new();
    for d in &args.derivatives {
        if !d.is_dir() {
            return Err(SettingsError::no_input(format!(
                "{}: --derivatives folder not found",
                d.display()
            )));
        }
        derivatives.push(resolve(d));
    }
    let work_dir =
        args.work_dir.as_deref().map(resolve).unwrap_or_else(|| {
            std::env::temp_dir().join(crate::derivatives::default_work_dir_name())
        });
    let work_dir_is_default = args.work_dir.is_none();
    if work_dir.starts_with(&bids_dir) {
        return Err(SettingsError::usage(format!(
            "{}: the work directory lies inside BIDS_DIR; hcld never writes into the input dataset, give -w a folder outside it",
            work_dir.display()
        )));
    }
    // The work dir's checkpoints and caches are not derivatives: in OUTPUT_DIR itself they
    // would sit among the subjects and fail BIDS validation. (A subfolder is tolerated, as
    // containers often bind one output folder: `-w /out/work`.)
    if work_dir == output_dir {
        return Err(SettingsError::usage(format!(
            "{}: -w is OUTPUT_DIR itself; its training checkpoints and caches would land among the derivatives, give -w another folder (e.g. {})",
            work_dir.display(),
            output_dir.join("work").display()
        )));
    }
    let default_validator_config = bids_dir.join(".bids-validator-config.json");
    let validator_config = match &args.bids_validator_config {
        Some(p) if !p.is_file() => {
            return Err(SettingsError::no_input(format!(
                "{}: --bids-validator-config not found",
                p.display()
            )));
        }
        Some(p) => Some(resolve(p)),
        None => Some(default_validator_config).filter(|p| p.is_file()),
    };
    if let Some(p) = &validator_config {
        bids_validator::Config::read(p).map_err(|e| {
            SettingsError::usage(format!(
                "{e}; expected {{\"ignore\": [{{\"code\": \"EMPTY_FILE\"}}], \"warning\": [...], \"error\": [...]}}"
            ))
        })?;
    }
    Ok(Paths {
        bids_dir,
        output_dir,
        derivatives,
        work_dir,
        work_dir_is_default,
        validator_config,
    })
}

/// Labels, the filter file and the site column.
fn selection(args: &Args) -> Result<Selection> {
    let participants = labels(&args.participant_label, "sub-", "--participant-label")?;
    let sessions = labels(&args.session_label, "ses-", "--session-label")?;
    let t1w_filter = match &args.bids_filter_file {
        None => None,
        Some(p) if !p.is_file() => {
            return Err(SettingsError::no_input(format!(
                "{}: --bids-filter-file not found",
                p.display()
            )));
        }
        Some(p) => {
            Query::from_filter_file(p, "t1w").map_err(|e| SettingsError::usage(e.to_string()))?
        }
    };
    if args.site_column.trim().is_empty() {
        return Err(SettingsError::usage("--site-column is empty"));
    }
    Ok(Selection {
        participants,
        sessions,
        t1w_filter,
        skip_validation: args.skip_bids_validation,
        site_column: args.site_column.clone(),
    })
}

/// Threads, memory, failure policy, backend and device.
fn resources(args: &Args) -> Result<Resources> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let nprocs = match args.nprocs {
        Some(0) => return Err(SettingsError::usage("--nprocs must be at least 1")),
        // Threads past a few per CPU only add overhead, and a typo (`--nprocs 100000`)
        // would spawn threads until the process limit; main logs the cap.
        Some(n) => n.min(MAX_THREADS_PER_CPU * cpus),
        None => cpus,
    };
    let omp_nthreads = match args.omp_nthreads {
        Some(0) => return Err(SettingsError::usage("--omp-nthreads must be at least 1")),
        Some(n) => n.min(nprocs),
        None => 1,
    };
    let mem_mb = args
        .mem
        .as_deref()
        .map(parse_mem)
        .transpose()
        .map_err(SettingsError::usage)?;
    // Impossible combinations fail here, before any work; whether a GPU is really there is
    // only known when the model is loaded.
    Backend::check(args.backend, args.device).map_err(|e| SettingsError::usage(e.to_string()))?;
    Ok(Resources {
        nprocs,
        omp_nthreads,
        mem_mb,
        stop_on_first_crash: args.stop_on_first_crash,
        force: args.force,
        verbosity: args.verbose,
        backend: args.backend,
        device: args.device,
    })
}

fn preprocessing(args: &Args) -> Result<Preprocessing> {
    let intensity = IntensityScaling {
        low_percentile: args.intensity_percentiles[0],
        high_percentile: args.intensity_percentiles[1],
        clip_max: args.intensity_clip,
    };
    intensity.validate().map_err(|m| {
        SettingsError::usage(format!("--intensity-percentiles/--intensity-clip: {m}"))
    })?;
    Ok(Preprocessing {
        intensity,
        bias_correction: !args.no_bias_correction,
        skull_stripped: args.skull_stripped,
        output_resolution: args.output_resolution,
    })
}

/// `--model`, or the configuration the group level trains with.
fn model(args: &Args) -> Result<ModelSettings> {
    let spec = args.config.to_string();
    let mut config = HcldConfig::from_preset_or_file(&spec).map_err(|e| {
        let status = match &args.config {
            ConfigSource::File(path) if !path.exists() => ExitStatus::NoInput,
            _ => ExitStatus::Usage,
        };
        SettingsError::new(status, format!("--config {spec}: {e}"))
    })?;
    for (flag, value) in [
        ("--epochs-ae", args.epochs_ae),
        ("--epochs-ldm", args.epochs_ldm),
    ] {
        if value == Some(0) {
            return Err(SettingsError::usage(format!("{flag} must be at least 1")));
        }
    }
    if let Some(e) = args.epochs_ae {
        config.autoencoder_training.epochs = e;
    }
    if let Some(e) = args.epochs_ldm {
        // Epochs asked for are epochs run: the configuration's step budget is lifted.
        config.diffusion_training.epochs = e;
        config.diffusion_training.max_optimizer_steps = None;
    }
    if args.checkpoint_every == 0 {
        return Err(SettingsError::usage(
            "--checkpoint-every must be at least 1",
        ));
    }
    let dir = match &args.model {
        Some(p) if !p.is_dir() => {
            return Err(SettingsError::no_input(format!(
                "{}: --model folder not found (expected an hcld-<sha>/ folder with config.json)",
                p.display()
            )));
        }
        Some(p) => Some(resolve(p)),
        None => None,
    };
    Ok(ModelSettings {
        dir,
        config,
        checkpoint_every: args.checkpoint_every,
        min_site_subjects: args.min_site_subjects.max(1),
        train_autoencoder: args.train_autoencoder,
    })
}

/// Methods (in report order, without duplicates), target, DDIM overrides, Nyúl landmarks and
/// the evaluation.
fn harmonisation(args: &Args, level: AnalysisLevel) -> Result<(Vec<Method>, Harmonisation)> {
    let mut methods: Vec<Method> = Vec::new();
    let requested: &[MethodChoice] = if args.method.is_empty() {
        &[MethodChoice::One(Method::HCLD)]
    } else {
        &args.method
    };
    for choice in requested {
        let chosen: &[Method] = match choice {
            MethodChoice::All => Method::ALL,
            MethodChoice::One(m) => std::slice::from_ref(m),
            MethodChoice::Empty => &[],
        };
        for m in chosen {
            if !methods.contains(m) {
                methods.push(*m);
            }
        }
    }
    methods.sort();
    let target = match (&args.target_site, &args.target_image) {
        (Some(s), _) if s.trim().is_empty() => {
            return Err(SettingsError::usage("--target-site is empty"));
        }
        (Some(s), _) => Some(TargetSpec::Site(s.clone())),
        (None, Some(p)) if !p.is_file() => {
            return Err(SettingsError::no_input(format!(
                "{}: --target-image not found",
                p.display()
            )));
        }
        (None, Some(p)) => Some(TargetSpec::Image(resolve(p))),
        (None, None) => None,
    };
    let ddim = DdimOverrides {
        strength: args.strength,
        inversion_steps: args.inversion_steps,
        sampling_steps: args.sampling_steps,
        clip: args.clip_x0,
    };
    // A bad value fails before any work; the model's own defaults are filled in when it is
    // loaded.
    ddim.apply(&DdimConfig::default()).validate().map_err(|e| {
        SettingsError::usage(format!(
            "--strength/--inversion-steps/--sampling-steps: {e}"
        ))
    })?;
    let nyul_landmarks = match &args.nyul_landmarks {
        Some(p) if !p.is_file() => {
            return Err(SettingsError::no_input(format!(
                "{}: --nyul-landmarks file not found",
                p.display()
            )));
        }
        Some(p) => Some(resolve(p)),
        None => None,
    };
    let ground_truth = match &args.ground_truth {
        Some(p) if !p.join("simulation.json").is_file() => {
            return Err(SettingsError::no_input(format!(
                "{}: --ground-truth has no simulation.json; give the sourcedata/ground-truth folder hcld-simulate wrote",
                p.display()
            )));
        }
        Some(p) => Some(resolve(p)),
        None => None,
    };
    if (args.evaluate || ground_truth.is_some()) && level != AnalysisLevel::Group {
        return Err(SettingsError::usage(
            "--evaluate and --ground-truth belong to the group level: run 'hcld BIDS_DIR OUTPUT_DIR group --evaluate' after the participant level",
        ));
    }
    Ok((
        methods,
        Harmonisation {
            methods_explicit: !args.method.is_empty(),
            target,
            ddim,
            output_mode: args.output_mode,
            nyul_landmarks,
            seed: args.seed,
            evaluate: args.evaluate || ground_truth.is_some(),
            ground_truth,
        },
    ))
}

/// Strips an optional prefix and checks the BIDS label grammar (this also rules out `../x`).
fn labels(raw: &[String], prefix: &str, option: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        let l = r.strip_prefix(prefix).unwrap_or(r);
        if !is_label(l) {
            return Err(SettingsError::usage(format!(
                "{option} '{r}' is not a BIDS label: use letters and digits only, e.g. 01 or {prefix}01"
            )));
        }
        if !out.iter().any(|x| x == l) {
            out.push(l.to_string());
        }
    }
    Ok(out)
}

/// `16000`, `16000MB`, `16GB`, `16G`, `1.5TB` → megabytes.
fn parse_mem(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("--mem '{s}': expected a number with an optional unit (MB, GB)"))?;
    let mult = match unit.trim() {
        "" | "M" | "MB" => 1.0,
        "G" | "GB" => 1000.0,
        "T" | "TB" => 1_000_000.0,
        "K" | "KB" => 0.001,
        _ => return Err(format!("--mem '{s}': unknown unit (use MB or GB)")),
    };
    let mb = (v * mult).round();
    if mb < 1.0 {
        return Err(format!("--mem '{s}' is less than 1 MB"));
    }
    Ok(mb as u64)
}

/// Absolute, `..` and `.` removed lexically, then symlinks resolved as far as the path exists
/// (OUTPUT_DIR may not exist yet), so containment checks cannot be fooled by `missing/../`.
fn resolve(p: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                existing = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn labels_drop_prefixes_and_reject_paths() {
        assert_eq!(
            labels(&["sub-01".into(), "02".into(), "01".into()], "sub-", "x").unwrap(),
            ["01", "02"]
        );
        assert!(labels(&["../x".into()], "sub-", "x").is_err());
        assert!(labels(&["sub-".into()], "sub-", "x").is_err());
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_mem("16000").unwrap(), 16000);
        assert_eq!(parse_mem("16GB").unwrap(), 16000);
        assert_eq!(parse_mem("1.5g").unwrap(), 1500);
        assert!(parse_mem("lots").is_err());
        assert!(parse_mem("5XB").is_err());
    }

    #[test]
    fn both_spellings_parse() {
        let a = Args::try_parse_from([
            "hcld",
            "in",
            "out",
            "participant",
            "--participant_label",
            "01",
            "--skip_bids_validation",
            "--omp_nthreads",
            "2",
        ])
        .unwrap();
        assert_eq!(a.participant_label, ["01"]);
        assert!(a.skip_bids_validation);
        let b = Args::try_parse_from([
            "hcld",
            "in",
            "out",
            "participant",
            "--participant-label",
            "01",
            "02",
            "-vv",
        ])
        .unwrap();
        assert_eq!(b.participant_label, ["01", "02"]);
        assert_eq!(b.verbose, 2);
    }
}
