//! Regenerates hcld's embedded full-head template,
//! `data/template/tpl-MNI152NLin2009aSym_res-02_desc-head_T1w.nii.gz`, from Colin27 (MRIcron's
//! `ch2.nii.gz`, BSD-2, MNI permissive notice; see `data/template/README.md`).
//!
//! Full-head T1w images must be registered to a full-head template (`../shared/design/
//! preprocessing.md`); the ICBM 2009a template hcld embeds is skull-stripped, and the only other
//! full-head MNI template at hand (SPM12's avg152) comes GPL-packaged. Colin27 is a full-head
//! single-subject average already near MNI space; here it is affinely aligned to the ICBM 2009a
//! brain (fixed mask: the brain mask dilated by 8 mm, so the skull does not drive the fit) and
//! resampled onto the 2 mm template grid, which makes it share world coordinates with the rest of
//! the embedded template.
//!
//! `cargo run --release --example make_head_template -- PATH/TO/colin27.nii.gz OUT.nii.gz`

use std::path::PathBuf;

use anyhow::{Context, Result};
use hcld::preprocess::filter::percentiles;
use hcld::preprocess::itk::WorldAffine;
use hcld::preprocess::morphology::dilate;
use hcld::preprocess::register::{FixedImage, MovingPyramid, RegistrationConfig, register};
use hcld::preprocess::resample::{Interpolation, resample_mapped};
use hcld::preprocess::template::{TemplateImage, template_grid};
use hcld::volume::{OutputDtype, XformCode, read_nifti, to_closest_canonical, write_nifti};

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [colin_path, out] = args.as_slice() else {
        anyhow::bail!("usage: make_head_template COLIN27.nii.gz OUT.nii.gz");
    };
    let (colin, _) = read_nifti(colin_path).context("reading Colin27")?;
    let colin = to_closest_canonical(&colin);
    let t1 = TemplateImage::T1w.load()?;
    let mask = TemplateImage::BrainMask.load()?;
    let inside: Vec<bool> = mask.data().iter().map(|&v| v > 0.5).collect();
    let wide = dilate(&inside, mask.dims(), mask.voxel_sizes(), 8.0);
    let wide = mask
        .with_data(wide.iter().map(|&b| b as u8 as f32).collect())
        .map_err(anyhow::Error::msg)?;
    let config = RegistrationConfig {
        rigid_levels_mm: vec![4.0],
        affine_levels_mm: vec![4.0, 2.0],
        ..RegistrationConfig::default()
    };
    let fixed = FixedImage::new(&t1, Some(&wide), &[4.0, 2.0], &config)?;
    let pyramid = MovingPyramid::new(&colin, &[4.0, 2.0]);
    let reg = register(
        &fixed,
        &pyramid,
        &WorldAffine(nalgebra::Matrix4::identity()),
        &config,
    )?;
    eprintln!("{}", serde_json::to_string_pretty(&reg.levels)?);
    eprintln!("Colin27 -> ICBM 2009a map:\n{}", reg.fixed_to_moving.0);
    let grid = template_grid(&t1, 2.0);
    let head = resample_mapped(
        &colin,
        &grid,
        &reg.fixed_to_moving.0,
        Interpolation::Linear,
        0.0,
    )?;
    let p = percentiles(head.data(), |_| true, &[99.5]).context("empty image")?[0];
    let scaled: Vec<f32> = head
        .data()
        .iter()
        .map(|&v| (v / p * 255.0).clamp(0.0, 255.0))
        .collect();
    let head = head.with_data(scaled).map_err(anyhow::Error::msg)?;
    write_nifti(
        out,
        &head,
        OutputDtype::Uint8,
        XformCode::Mni152,
        "hcld head template (Colin27)",
    )?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
