//! Benchmark helper: registers each T1w given on the command line to the embedded template (as
//! the participant level does, full-head path unless `--skull-stripped`), writes the registered
//! image on the 2 mm template grid to OUT_DIR, and prints one JSON line per image with the
//! registration wall time (reading excluded). `bench/registration_vs_ants.sh` compares these
//! outputs with ANTsPy's.
//!
//! `cargo run --release --example register_to_template -- OUT_DIR [--skull-stripped] T1w.nii.gz...`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use hcld::preprocess::resample::{Interpolation, resample_mapped};
use hcld::preprocess::template::{TemplateImage, template_grid};
use hcld::preprocess::template_registration::{
    InputKind, check_brain_correlation, register_to_template,
};
use hcld::volume::{OutputDtype, XformCode, read_nifti, to_closest_canonical, write_nifti};

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let kind = if let Some(i) = args.iter().position(|a| a == "--skull-stripped") {
        args.remove(i);
        InputKind::SkullStripped
    } else {
        InputKind::FullHead
    };
    let (out_dir, inputs) = args.split_first().context("usage: OUT_DIR T1w...")?;
    let out_dir = PathBuf::from(out_dir);
    std::fs::create_dir_all(&out_dir)?;
    let t1 = TemplateImage::T1w.load()?;
    let grid = template_grid(&t1, 2.0);
    // Prepare the shared fixed images before timing (once per process in the pipeline too).
    let warm = read_nifti(std::path::Path::new(&inputs[0]))?.0;
    let start = Instant::now();
    let _ = register_to_template(&to_closest_canonical(&warm), kind, None);
    eprintln!(
        "{}",
        serde_json::json!({"prepare_seconds_including_one_registration": start.elapsed().as_secs_f64()})
    );
    for input in inputs {
        let (v, _) = read_nifti(std::path::Path::new(input))?;
        let v = to_closest_canonical(&v);
        let start = Instant::now();
        let fit = register_to_template(&v, kind, None);
        let seconds = start.elapsed().as_secs_f64();
        let name = std::path::Path::new(input)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".nii.gz", "");
        match fit {
            Ok(mut fit) => {
                let r = check_brain_correlation(&v, &fit.template_to_t1w, &mut fit.warnings)?;
                let moved = resample_mapped(
                    &v,
                    &grid,
                    &fit.template_to_t1w.0,
                    Interpolation::Linear,
                    0.0,
                )?;
                write_nifti(
                    &out_dir.join(format!("{name}_hcld.nii.gz")),
                    &moved,
                    OutputDtype::Float32,
                    XformCode::Mni152,
                    "",
                )?;
                std::fs::write(
                    out_dir.join(format!("{name}_hcld.txt")),
                    fit.template_to_t1w.to_itk_text(),
                )?;
                println!(
                    "{}",
                    serde_json::json!({"file": name, "seconds": seconds, "brain_correlation": r, "fit": fit})
                );
            }
            Err(e) => println!(
                "{}",
                serde_json::json!({"file": name, "seconds": seconds, "error": e.to_string()})
            ),
        }
    }
    Ok(())
}
