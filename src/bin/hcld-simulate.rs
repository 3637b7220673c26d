//! `hcld-simulate`: renders real T1w brains as a multi-site BIDS dataset with traveling subjects
//! and a ground truth (`hcld::simulate`). Thin: parse, read the sources, call the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use hcld::simulate::dataset::{GROUND_TRUTH_DIR, write_dataset};
use hcld::simulate::{SimulateError, Simulation, SimulationConfig, SourceBrain};
use hcld::volume::read_nifti;

/// Render real T1w brains as if scanned at several synthetic sites: a BIDS dataset of N
/// subjects (participants.tsv with site, age, sex) plus a ground truth of every subject at every
/// site with the parameters used. Deterministic for a seed.
#[derive(Debug, Parser)]
#[command(name = "hcld-simulate", version)]
struct Args {
    /// The BIDS dataset to write (new, empty, or an earlier simulation to overwrite).
    output_dir: PathBuf,
    /// Source T1w images: NIfTI files, or folders searched for `*_T1w.nii[.gz]` (BIDS datasets;
    /// `derivatives/`, `sourcedata/` and hidden folders are skipped).
    #[arg(long, num_args = 1.., required = true)]
    source: Vec<PathBuf>,
    /// Subjects (the first ones keep the real anatomies, the others are deformed).
    #[arg(long, default_value_t = 8)]
    subjects: usize,
    /// Sites.
    #[arg(long, default_value_t = 4)]
    sites: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Largest displacement of the new anatomies' random deformations (mm).
    #[arg(long, default_value_t = 3.0)]
    deformation_mm: f64,
    /// How far apart the sites are: each site parameter moves from the middle of its range by
    /// this multiple of its drawn deviation. 1 = the documented ranges; 0 = identical sites (no
    /// site effect, only the labels and the noise draws differ: calibrates the evaluation's site
    /// classifier against chance); up to 3 for deliberately strong sites.
    #[arg(long, default_value_t = 1.0)]
    site_effect: f64,
    /// Threads (default: all CPUs).
    #[arg(long)]
    nprocs: Option<usize>,
}

fn sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>, SimulateError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() {
            out.push(p.clone());
        } else if p.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(p)
                .follow_links(true)
                .into_iter()
                .filter_entry(|e| {
                    let n = e.file_name().to_string_lossy();
                    e.depth() == 0
                        || !(n.starts_with('.') || n == "derivatives" || n == "sourcedata")
                })
                .filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name().to_string_lossy();
                    e.file_type().is_file()
                        && (n.ends_with("_T1w.nii.gz") || n.ends_with("_T1w.nii"))
                })
                .map(|e| e.into_path())
                .collect();
            if found.is_empty() {
                return Err(SimulateError::Source {
                    path: p.display().to_string(),
                    reason: "no *_T1w.nii[.gz] in this folder; give T1w files or a BIDS dataset"
                        .into(),
                });
            }
            found.sort();
            out.extend(found);
        } else {
            return Err(SimulateError::Source {
                path: p.display().to_string(),
                reason: "does not exist; check the --source path".into(),
            });
        }
    }
    Ok(out)
}

fn run(args: &Args) -> Result<(), SimulateError> {
    let config = SimulationConfig {
        subjects: args.subjects,
        sites: args.sites,
        seed: args.seed,
        deformation_mm: args.deformation_mm,
        site_effect: args.site_effect,
        ..SimulationConfig::default()
    };
    config.validate()?;
    let files = sources(&args.source)?;
    let mut brains = Vec::new();
    for f in &files {
        let shown = f.display().to_string();
        let (v, _) = read_nifti(f).map_err(|e| SimulateError::Source {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let started = std::time::Instant::now();
        brains.push(SourceBrain::from_t1w(&v, &shown)?);
        eprintln!(
            "hcld-simulate: source {shown} preprocessed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let sim = Simulation::new(config, brains)?;
    if !hcld::simulate::design_is_balanced(sim.subjects.len(), sim.sources.len(), sim.sites.len()) {
        eprintln!(
            "hcld-simulate: warning: {} subjects cannot put each of the {} sources at each of the {} sites; \
             give --subjects {} (sources x sites) or a multiple of it for a balanced design",
            sim.subjects.len(),
            sim.sources.len(),
            sim.sites.len(),
            sim.sources.len() * sim.sites.len()
        );
    }
    let started = std::time::Instant::now();
    write_dataset(&sim, &args.output_dir, &|label| {
        eprintln!("hcld-simulate: sub-{label} rendered at every site")
    })?;
    eprintln!(
        "hcld-simulate: {} subjects x {} sites in {:.1} s: {} (ground truth in {})",
        sim.subjects.len(),
        sim.sites.len(),
        started.elapsed().as_secs_f64(),
        args.output_dir.display(),
        Path::new(GROUND_TRUTH_DIR).display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Args = match hcld::cli::parse_command_line() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(n) = args.nprocs {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hcld-simulate: error: {e}");
            ExitCode::from(match e {
                SimulateError::Settings(_) => 64,
                SimulateError::Source { .. } => 65,
                SimulateError::Write { .. } => 73,
            })
        }
    }
}
