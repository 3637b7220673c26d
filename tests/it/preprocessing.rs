//! Registration-aware preprocessing through the real binary: reuse of masks and transforms from
//! `--derivatives`, skull-stripped inputs, and inputs that must fail or warn (blank, not a brain,
//! a template-space mask with no transform).

use std::path::{Path, PathBuf};

use hcld::volume::{OutputDtype, Volume, XformCode, read_nifti, write_nifti};
use nalgebra::Matrix4;
use serde_json::Value;

use super::util::{copy_tree, example, failure_line, run, tree_state};
use crate::args;

fn sidecar(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The preprocessing report in the template-space T1w sidecar of sub-01.
fn report(out: &Path) -> Value {
    sidecar(&out.join(
        "sub-01/anat/sub-01_space-MNI152NLin2009aSym_res-2_desc-preproc_T1w.json",
    ))["hcld"]["Preprocessing"]
        .clone()
}

/// Preprocesses sub-01 of the example into `dir/first` and returns that folder.
fn first_run(dir: &Path) -> PathBuf {
    let first = dir.join("first");
    let (code, stderr) = run(args![
        example(),
        first,
        "participant",
        "--participant-label",
        "01"
    ]);
    assert_eq!(code, 0, "{stderr}");
    first
}

/// A copy of the example dataset with sub-01's T1w replaced (sidecar kept unless `sidecar` given).
fn dataset_with_sub01(dir: &Path, image: &Volume, sidecar: Option<&str>) -> PathBuf {
    let bids = dir.join("bids");
    copy_tree(&example(), &bids);
    let t1w = bids.join("sub-01/anat/sub-01_T1w.nii.gz");
    write_nifti(
        &t1w,
        image,
        OutputDtype::Float32,
        XformCode::ScannerAnat,
        "test",
    )
    .unwrap();
    if let Some(s) = sidecar {
        std::fs::write(bids.join("sub-01/anat/sub-01_T1w.json"), s).unwrap();
    }
    bids
}

#[test]
fn reuses_masks_and_transforms_from_derivatives() {
    let d = tempfile::tempdir().unwrap();
    let first = first_run(d.path());
    // A second run given the first one's outputs as --derivatives reuses its mask and transform.
    let second = d.path().join("second");
    let (code, stderr) = run(args![
        example(),
        second,
        "participant",
        "--participant-label",
        "01",
        "--derivatives",
        first
    ]);
    assert_eq!(code, 0, "{stderr}");
    let r = report(&second);
    assert_eq!(r["Registration"]["Source"], "Reused", "{r}");
    assert!(
        r["Registration"]["File"]
            .as_str()
            .unwrap()
            .ends_with("sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt"),
        "{r}"
    );
    assert_eq!(r["BrainMask"]["Source"], "Derivatives", "{r}");
    assert_eq!(r["InputKind"], "SkullStripped", "{r}");
    assert!(
        r["BrainMaskDiceWithTemplate"].as_f64().unwrap() > 0.9,
        "{r}"
    );
    // The reused transform is the one written out again, unchanged.
    let xfm = "sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt";
    assert_eq!(
        std::fs::read(first.join(xfm)).unwrap(),
        std::fs::read(second.join(xfm)).unwrap()
    );
    // The native mask is the given one (the first run's, same grid).
    let mask = "sub-01/anat/sub-01_desc-brain_mask.nii.gz";
    assert_eq!(
        read_nifti(&first.join(mask)).unwrap().0.data(),
        read_nifti(&second.join(mask)).unwrap().0.data()
    );

    // A mask in template space with no transform to bring it back is refused, naming the file.
    let partial = d.path().join("partial");
    copy_tree(&first, &partial);
    for f in [
        xfm,
        "sub-01/anat/sub-01_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.txt",
        mask,
        "sub-01/anat/sub-01_desc-brain_mask.json",
    ] {
        std::fs::remove_file(partial.join(f)).unwrap();
    }
    let third = d.path().join("third");
    let (code, stderr) = run(args![
        example(),
        third,
        "participant",
        "--participant-label",
        "01",
        "--derivatives",
        partial
    ]);
    assert_eq!(code, 1, "{stderr}");
    let line = failure_line(&stderr, "sub-01");
    assert!(
        line.contains("sub-01_space-MNI152NLin2009aSym_res-2_desc-brain_mask.nii.gz")
            && line.contains("no from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt"),
        "{line}"
    );
}

#[test]
fn skull_stripped_inputs_use_their_own_foreground() {
    let d = tempfile::tempdir().unwrap();
    let first = first_run(d.path());
    // Strip sub-01 with the first run's mask, declare it in the sidecar.
    let (t1w, _) = read_nifti(&first.join("sub-01/anat/sub-01_desc-preproc_T1w.nii.gz")).unwrap();
    let (mask, _) = read_nifti(&first.join("sub-01/anat/sub-01_desc-brain_mask.nii.gz")).unwrap();
    let stripped: Vec<f32> = t1w
        .data()
        .iter()
        .zip(mask.data())
        .map(|(v, m)| v * m * 1000.0)
        .collect();
    let stripped = t1w.with_data(stripped).unwrap();
    let bids = dataset_with_sub01(
        d.path(),
        &stripped,
        Some(r#"{"SkullStripped": true, "Manufacturer": "Philips"}"#),
    );
    let out = d.path().join("out");
    let (code, stderr) = run(args![bids, out, "participant", "--participant-label", "01"]);
    assert_eq!(code, 0, "{stderr}");
    let r = report(&out);
    assert_eq!(r["InputKind"], "SkullStripped", "{r}");
    assert_eq!(r["SkullStrippedBecause"], "sidecar SkullStripped: true");
    assert_eq!(r["BrainMask"]["Source"], "Input", "{r}");
    assert!(
        r["BrainMaskDiceWithTemplate"].as_f64().unwrap() > 0.9,
        "{r}"
    );
    // The brain-to-brain fit agrees with the head fit of the original to within a millimetre or two.
    let xfm = |dir: &Path| {
        hcld::preprocess::itk::WorldAffine::from_itk_text(
            &std::fs::read_to_string(
                dir.join("sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt"),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let points: Vec<[f64; 3]> = (0..100)
        .map(|i| {
            let f = i as f64;
            [
                (f * 7.3) % 100.0 - 50.0,
                (f * 3.1) % 130.0 - 80.0,
                (f * 5.7) % 90.0 - 30.0,
            ]
        })
        .collect();
    let error = hcld::preprocess::register::mean_point_distance(&xfm(&first), &xfm(&out), &points);
    assert!(error < 2.0, "{error} mm");
    // Without the sidecar field, the image is recognised as stripped by its zero background.
    let d2 = tempfile::tempdir().unwrap();
    let bids = dataset_with_sub01(d2.path(), &stripped, Some("{}"));
    let out = d2.path().join("out");
    let (code, stderr) = run(args![bids, out, "participant", "--participant-label", "01"]);
    assert_eq!(code, 0, "{stderr}");
    let r = report(&out);
    assert!(
        r["SkullStrippedBecause"]
            .as_str()
            .unwrap()
            .starts_with("looks skull-stripped"),
        "{r}"
    );
}

/// A 2 mm volume in a 192 × 224 × 192 mm field of view, centred on the world origin.
fn synthetic(f: impl Fn(usize, usize, usize) -> f32) -> Volume {
    let dims = [96, 112, 96];
    let mut affine = Matrix4::identity() * 2.0;
    affine[(3, 3)] = 1.0;
    affine[(0, 3)] = -96.0;
    affine[(1, 3)] = -112.0;
    affine[(2, 3)] = -96.0;
    let mut data = Vec::with_capacity(96 * 112 * 96);
    for k in 0..96 {
        for j in 0..112 {
            for i in 0..96 {
                data.push(f(i, j, k));
            }
        }
    }
    Volume::new(dims, affine, data).unwrap()
}

#[test]
fn blank_and_non_brain_images_fail_with_a_reason_and_odd_ones_warn() {
    // Deterministic noise: a hash of the voxel index.
    let noise = |i: usize, j: usize, k: usize| {
        let mut h = (i * 73856093) ^ (j * 19349663) ^ (k * 83492791);
        h = h.wrapping_mul(0x9E37_79B9);
        100.0 + (h % 1000) as f32 / 25.0
    };
    let ball = |i: usize, j: usize, k: usize| {
        let r2 = (i as f32 - 48.0).powi(2) + (j as f32 - 56.0).powi(2) + (k as f32 - 48.0).powi(2);
        (if r2 < 900.0 { 100.0 } else { 0.0 }) + noise(i, j, k) / 50.0
    };
    let cases: [(&str, Volume, Option<&str>); 3] = [
        ("blank", synthetic(|_, _, _| 0.0), Some("blank or constant")),
        (
            "noise",
            synthetic(noise),
            Some("does not resemble a brain T1w"),
        ),
        ("ball", synthetic(ball), None),
    ];
    for (what, image, error) in cases {
        let d = tempfile::tempdir().unwrap();
        let bids = dataset_with_sub01(d.path(), &image, None);
        let before = tree_state(&bids);
        let out = d.path().join("out");
        let (code, stderr) = run(args![
            bids,
            out,
            "participant",
            "--participant-label",
            "01",
            "02",
            "--skip-bids-validation"
        ]);
        assert_eq!(tree_state(&bids), before);
        // The other subject completes either way.
        assert!(
            out.join("sub-02/anat/sub-02_desc-preproc_T1w.json")
                .is_file(),
            "{what}: {stderr}"
        );
        match error {
            Some(reason) => {
                assert_eq!(code, 1, "{what}: {stderr}");
                let line = failure_line(&stderr, "sub-01");
                assert!(
                    line.contains("sub-01_T1w.nii.gz") && line.contains(reason),
                    "{what}: {line}"
                );
                assert!(!out.join("sub-01").exists(), "{what}: partial outputs");
            }
            None => {
                // A featureless ball registers to something, but the QC says it is suspicious.
                assert_eq!(code, 0, "{what}: {stderr}");
                let r = report(&out);
                let warnings = r["Warnings"].as_array().unwrap();
                assert!(
                    warnings
                        .iter()
                        .any(|w| w.as_str().unwrap().contains("correlates poorly")),
                    "{what}: {r}"
                );
                assert!(
                    stderr.contains("QC: the registered brain correlates poorly"),
                    "{stderr}"
                );
            }
        }
    }
}

#[test]
fn inputs_already_in_mni_space_are_not_registered_again() {
    // A derivatives dataset as BIDS_DIR (hcld's own output, as sMRIPrep's would be) where sub-01
    // has only its MNI152NLin2009aSym preprocessed T1w: that image is used with an identity
    // registration, and its mask in the same space is reused.
    let d = tempfile::tempdir().unwrap();
    let first = first_run(d.path());
    for f in [
        "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
        "sub-01/anat/sub-01_desc-preproc_T1w.json",
        "sub-01/anat/sub-01_desc-brain_mask.nii.gz",
        "sub-01/anat/sub-01_desc-brain_mask.json",
    ] {
        std::fs::remove_file(first.join(f)).unwrap();
    }
    let out = d.path().join("out");
    let (code, stderr) = run(args![first, out, "participant", "--skip-bids-validation"]);
    assert_eq!(code, 0, "{stderr}");
    let r = report(&out);
    assert_eq!(r["Registration"]["Source"], "Identity", "{r}");
    assert_eq!(r["Registration"]["Space"], "MNI152NLin2009aSym", "{r}");
    assert_eq!(r["BrainMask"]["Source"], "Derivatives", "{r}");
    assert!(
        r["BrainMaskDiceWithTemplate"].as_f64().unwrap() > 0.9,
        "{r}"
    );
    let identity = hcld::preprocess::itk::WorldAffine(Matrix4::identity()).to_itk_text();
    assert_eq!(
        std::fs::read_to_string(
            out.join("sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt")
        )
        .unwrap(),
        identity
    );
}

#[test]
fn one_millimetre_model_grid() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--participant-label",
        "01",
        "--output-resolution",
        "1"
    ]);
    assert_eq!(code, 0, "{stderr}");
    let stem = "sub-01/anat/sub-01_space-MNI152NLin2009aSym_res-1";
    let (t1w, _) = read_nifti(&out.join(format!("{stem}_desc-preproc_T1w.nii.gz"))).unwrap();
    assert_eq!(t1w.dims(), [192, 224, 192]);
    assert_eq!(t1w.voxel_sizes(), [1.0, 1.0, 1.0]);
    let sc = sidecar(&out.join(format!("{stem}_desc-preproc_T1w.json")));
    assert!(
        sc["Resolution"].as_str().unwrap().starts_with("1 mm"),
        "{sc}"
    );
    assert!(
        sc["hcld"]["Preprocessing"]["BrainMaskDiceWithTemplate"]
            .as_f64()
            .unwrap()
            > 0.9
    );
    // Only 1 and 2 mm are model grids.
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--output-resolution",
        "3"
    ]);
    assert_eq!(code, 64, "{stderr}");
}
