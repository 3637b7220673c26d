//! Benchmark helper for `bench/bias_vs_sitk.sh`: registers a T1w to the template to get a brain
//! mask and a white-matter mask (template WM probability > 0.9, on the T1w grid), runs hcld's
//! bias correction inside the brain mask (dilated 4 mm, as the participant level does), and writes
//! the canonical input, both masks and the corrected image to OUT_DIR, printing the correction's
//! wall time as JSON.
//!
//! With a third argument (a reference image of the same acquisition), that image is written
//! reoriented the same way as `scanner.nii.gz`.
//!
//! `cargo run --release --example bias_correct -- T1w.nii.gz OUT_DIR [REFERENCE.nii.gz]`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use hcld::preprocess::bias::{BiasConfig, correct_bias};
use hcld::preprocess::morphology::dilate;
use hcld::preprocess::resample::{Grid, Interpolation, resample_mapped};
use hcld::preprocess::template::TemplateImage;
use hcld::preprocess::template_registration::{InputKind, register_to_template};
use hcld::volume::{OutputDtype, Volume, XformCode, read_nifti, to_closest_canonical, write_nifti};

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (input, out, reference) = match args.as_slice() {
        [i, o] => (i, o, None),
        [i, o, r] => (i, o, Some(r)),
        _ => anyhow::bail!("usage: bias_correct T1w.nii.gz OUT_DIR [REFERENCE.nii.gz]"),
    };
    std::fs::create_dir_all(out)?;
    let raw = to_closest_canonical(&read_nifti(input).context("reading the T1w")?.0);
    let fit = register_to_template(&raw, InputKind::FullHead, None)?;
    let inverse = fit.template_to_t1w.inverse().context("singular fit")?.0;
    let on_grid = |image: TemplateImage, threshold: f32| -> Result<Vec<bool>> {
        let v = resample_mapped(
            &image.load()?,
            &Grid::of(&raw),
            &inverse,
            Interpolation::Linear,
            0.0,
        )?;
        Ok(v.data().iter().map(|&x| x > threshold).collect())
    };
    let brain = on_grid(TemplateImage::BrainMask, 0.5)?;
    let wm = on_grid(TemplateImage::WhiteMatter, 0.9)?;
    let n4_mask = dilate(&brain, raw.dims(), raw.voxel_sizes(), 4.0);
    let start = Instant::now();
    let (corrected, _field, report) = correct_bias(&raw, &n4_mask, &BiasConfig::default())?;
    let seconds = start.elapsed().as_secs_f64();
    let write = |name: &str, v: &Volume, dtype| {
        write_nifti(&out.join(name), v, dtype, XformCode::ScannerAnat, "")
    };
    let as_volume = |m: &[bool]| {
        raw.with_data(m.iter().map(|&b| b as u8 as f32).collect())
            .map_err(anyhow::Error::msg)
    };
    write("raw.nii.gz", &raw, OutputDtype::Float32)?;
    write("n4mask.nii.gz", &as_volume(&n4_mask)?, OutputDtype::Uint8)?;
    write("brain.nii.gz", &as_volume(&brain)?, OutputDtype::Uint8)?;
    write("wm.nii.gz", &as_volume(&wm)?, OutputDtype::Uint8)?;
    write("hcld.nii.gz", &corrected, OutputDtype::Float32)?;
    if let Some(r) = reference {
        let scanner = to_closest_canonical(&read_nifti(r).context("reading the reference")?.0);
        anyhow::ensure!(
            scanner.dims() == raw.dims(),
            "the reference is on another grid"
        );
        write("scanner.nii.gz", &scanner, OutputDtype::Float32)?;
    }
    println!(
        "{}",
        serde_json::json!({"seconds": seconds, "report": report})
    );
    Ok(())
}
