//! The participant level on real data: outputs, resume, bad inputs, parallel jobs, and the rule
//! that BIDS_DIR is never written to.

use std::path::Path;

use hcld::volume::{axcodes, read_nifti};
use serde_json::Value;

use super::util::{
    assert_valid_bids, assert_visible_outputs_complete, bids_example, copy_tree, data, example,
    failure_line, files_under, no_temporaries, run, run_all_at_once, tree_state,
};
use crate::args;

/// Every derivative a participant run writes for the example dataset, sorted.
fn expected_outputs() -> Vec<String> {
    let mut all = Vec::new();
    for (anat, key) in [
        ("sub-01/anat", "sub-01"),
        ("sub-02/anat", "sub-02"),
        ("sub-03/ses-1/anat", "sub-03_ses-1"),
        ("sub-03/ses-2/anat", "sub-03_ses-2"),
    ] {
        let subject = &key[..6];
        for suffix in [
            "desc-brain_mask.json",
            "desc-brain_mask.nii.gz",
            "desc-preproc_T1w.json",
            "desc-preproc_T1w.nii.gz",
            "from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.txt",
            "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt",
            "space-MNI152NLin2009aSym_res-2_desc-brain_mask.json",
            "space-MNI152NLin2009aSym_res-2_desc-brain_mask.nii.gz",
            "space-MNI152NLin2009aSym_res-2_desc-preproc_T1w.json",
            "space-MNI152NLin2009aSym_res-2_desc-preproc_T1w.nii.gz",
        ] {
            all.push(format!("{anat}/{key}_{suffix}"));
        }
        for figure in [
            "desc-brain_mask.png",
            "space-MNI152NLin2009aSym_desc-registration_T1w.png",
        ] {
            all.push(format!("{subject}/figures/{key}_{figure}"));
        }
    }
    for subject in ["sub-01", "sub-02", "sub-03"] {
        all.push(format!("{subject}.html"));
    }
    all.sort();
    all
}

/// Derivative files (images and sidecars), without logs, locks and dataset-level files.
fn derivative_files(out: &Path) -> Vec<String> {
    files_under(out)
        .into_iter()
        .filter(|f| f.starts_with("sub-"))
        .collect()
}

#[test]
fn example_dataset_end_to_end() {
    let bids = example();
    let before = tree_state(&bids);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("derivatives").join("hcld");
    let (code, stderr) = run(args![bids, out, "participant"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tree_state(&bids), before, "BIDS_DIR was modified");
    assert_eq!(derivative_files(&out), expected_outputs());
    no_temporaries(&out);
    assert_valid_bids(&out);
    let all = files_under(&out);
    assert!(
        all.iter()
            .any(|f| f.starts_with("logs/hcld_participant_") && f.ends_with(".log")),
        "{all:?}"
    );
    assert!(
        all.contains(&".bidsignore".to_string())
            && all.contains(&"dataset_description.json".to_string())
    );

    let desc: Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset_description.json")).unwrap())
            .unwrap();
    assert_eq!(desc["DatasetType"], "derivative");
    assert_eq!(desc["GeneratedBy"][0]["Name"], "hcld");
    assert_eq!(desc["GeneratedBy"][0]["Version"], env!("CARGO_PKG_VERSION"));

    for stem in ["sub-01/anat/sub-01", "sub-03/ses-2/anat/sub-03_ses-2"] {
        let (vol, header) =
            read_nifti(&out.join(format!("{stem}_desc-preproc_T1w.nii.gz"))).unwrap();
        assert_eq!(axcodes(vol.affine()), ['R', 'A', 'S']);
        assert_eq!(header.datatype, "float32");
        let max = vol.data().iter().cloned().fold(f32::MIN, f32::max);
        let min = vol.data().iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            min == 0.0 && max > 1.0 && max <= 1.5,
            "{stem}: range {min}..{max}"
        );
        let sc: Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("{stem}_desc-preproc_T1w.json"))).unwrap(),
        )
        .unwrap();
        let raw = stem.replace("_desc-preproc", "");
        assert_eq!(sc["Sources"][0], format!("bids:raw:{raw}_T1w.nii.gz"));
        assert_eq!(sc["SkullStripped"], false);
        assert_eq!(sc["hcld"]["Version"], env!("CARGO_PKG_VERSION"));
        assert!(
            sc["hcld"]["Fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }
    // Template space: the model grid, skull-stripped image in [0, 1.5], a brain mask that
    // overlaps the template's, transforms that invert each other, figures that are PNGs.
    let a = "sub-01/anat/sub-01";
    let (t1, _) = read_nifti(&out.join(format!(
        "{a}_space-MNI152NLin2009aSym_res-2_desc-preproc_T1w.nii.gz"
    )))
    .unwrap();
    assert_eq!(t1.dims(), [96, 112, 96]);
    assert_eq!(axcodes(t1.affine()), ['R', 'A', 'S']);
    assert!(t1.data().iter().all(|v| (0.0..=1.5).contains(v)));
    let (mask, mh) = read_nifti(&out.join(format!(
        "{a}_space-MNI152NLin2009aSym_res-2_desc-brain_mask.nii.gz"
    )))
    .unwrap();
    assert_eq!(mh.datatype, "uint8");
    let outside_mask = t1
        .data()
        .iter()
        .zip(mask.data())
        .filter(|(v, m)| **m == 0.0 && **v != 0.0)
        .count();
    assert_eq!(
        outside_mask, 0,
        "the template-space image is not skull-stripped"
    );
    let sc: Value = serde_json::from_slice(
        &std::fs::read(out.join(format!(
            "{a}_space-MNI152NLin2009aSym_res-2_desc-preproc_T1w.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(sc["SkullStripped"], true);
    assert!(sc["Resolution"].as_str().unwrap().starts_with("2 mm"));
    let report = &sc["hcld"]["Preprocessing"];
    assert_eq!(report["InputKind"], "FullHead");
    assert_eq!(report["Registration"]["Source"], "Computed");
    assert_eq!(report["BrainMask"]["Source"], "Template");
    assert!(
        report["BrainMaskDiceWithTemplate"].as_f64().unwrap() > 0.9,
        "{report}"
    );
    assert!(report["BiasCorrection"].is_array(), "{report}");
    assert_eq!(report["Warnings"], serde_json::json!([]));
    // Every real scan's brain mask overlaps the template's after registration (acceptance: ≥ 0.90).
    for stem in [
        "sub-01/anat/sub-01",
        "sub-02/anat/sub-02",
        "sub-03/ses-1/anat/sub-03_ses-1",
        "sub-03/ses-2/anat/sub-03_ses-2",
    ] {
        let sc: Value = serde_json::from_slice(
            &std::fs::read(out.join(format!(
                "{stem}_space-MNI152NLin2009aSym_res-2_desc-brain_mask.json"
            )))
            .unwrap(),
        )
        .unwrap();
        let dice = sc["hcld"]["Preprocessing"]["BrainMaskDiceWithTemplate"]
            .as_f64()
            .unwrap();
        assert!(dice >= 0.9, "{stem}: Dice {dice}");
    }
    let read_xfm = |name: &str| {
        hcld::preprocess::itk::WorldAffine::from_itk_text(
            &std::fs::read_to_string(out.join(format!("{a}_{name}_mode-image_xfm.txt"))).unwrap(),
        )
        .unwrap()
    };
    let forward = read_xfm("from-T1w_to-MNI152NLin2009aSym");
    let backward = read_xfm("from-MNI152NLin2009aSym_to-T1w");
    assert!(
        ((forward.0 * backward.0) - nalgebra::Matrix4::identity())
            .abs()
            .max()
            < 1e-9
    );
    for f in [
        "desc-brain_mask.png",
        "space-MNI152NLin2009aSym_desc-registration_T1w.png",
    ] {
        let png = std::fs::read(out.join(format!("sub-01/figures/sub-01_{f}"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{f}"
        );
    }

    // The IXI scan is stored PSR: the output is its RAS permutation, same world positions.
    let (input, _) = read_nifti(&bids.join("sub-01/anat/sub-01_T1w.nii.gz")).unwrap();
    let (output, _) = read_nifti(&out.join("sub-01/anat/sub-01_desc-preproc_T1w.nii.gz")).unwrap();
    assert_eq!(axcodes(input.affine()), ['P', 'S', 'R']);
    assert_eq!(
        output.dims(),
        [input.dims()[2], input.dims()[0], input.dims()[1]]
    );

    // Resume: a second run keeps every output as it is.
    let outputs_before = tree_state(&out.join("sub-01"));
    let (code, stderr) = run(args![bids, out, "participant"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("up to date"), "{stderr}");
    assert_eq!(
        tree_state(&out.join("sub-01")),
        outputs_before,
        "a current output was rewritten"
    );
    // Changed parameters make outputs stale; --force redoes current ones.
    let (code, stderr) = run(args![
        bids,
        out,
        "participant",
        "--participant-label",
        "sub-01",
        "--intensity-clip",
        "1.2"
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("wrote sub-01_desc-preproc_T1w.nii.gz"),
        "{stderr}"
    );
    let (code, stderr) = run(args![
        bids,
        out,
        "participant",
        "--participant_label",
        "02",
        "--force"
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("wrote sub-02_desc-preproc_T1w.nii.gz"),
        "{stderr}"
    );
    // The group level keeps sub-02 and sub-03, redoes sub-01 (stale for the default parameters),
    // then fits (a tiny model here).
    let (code, stderr) = run(args![
        bids,
        out,
        "group",
        "--config",
        "tiny",
        "--epochs-ae",
        "1",
        "--epochs-ldm",
        "1"
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("sub-01/anat/sub-01_T1w.nii.gz: wrote sub-01_desc-preproc_T1w.nii.gz"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sub-02/anat/sub-02_T1w.nii.gz: up to date"),
        "{stderr}"
    );
    assert!(stderr.contains("trained HCLD model"), "{stderr}");
    assert_eq!(tree_state(&bids), before, "BIDS_DIR was modified");
}

#[test]
fn empty_placeholders_fail_validation_or_per_subject() {
    let bids = bids_example("ds003");
    let before = tree_state(&bids);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // Validation catches the placeholders first: exit 16, each file named.
    let (code, stderr) = run(args![bids, out, "participant", "--participant-label", "01"]);
    assert_eq!(code, 16, "{stderr}");
    assert!(
        stderr.contains("sub-01/anat/sub-01_T1w.nii.gz: EMPTY_FILE"),
        "{stderr}"
    );
    assert!(
        stderr.contains("BIDS validation failed with 78 error(s)"),
        "{stderr}"
    );
    // Without validation each subject fails on its own, the run exits 1.
    let skip = "--skip-bids-validation";
    let (code, stderr) = run(args![
        bids,
        out,
        "participant",
        "--participant-label",
        "01",
        "02",
        skip
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("sub-01_T1w.nii.gz: file is empty (0 bytes)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 of 2 failed (exit 1); none completed"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    // --stop-on-first-crash reports the failure's own code: bad data.
    let (code, stderr) = run(args![
        bids,
        out,
        "participant",
        "--participant-label",
        "01",
        "--stop-on-first-crash",
        skip
    ]);
    assert_eq!(code, 65, "{stderr}");
    assert_eq!(tree_state(&bids), before);
    assert!(derivative_files(&out).is_empty());
}

#[test]
fn missing_session_dataset_is_rejected() {
    let bids = bids_example("ds006_missing-session");
    let d = tempfile::tempdir().unwrap();
    let (code, stderr) = run(args![bids, d.path().join("out"), "participant"]);
    assert_eq!(code, 16, "{stderr}");
    assert!(stderr.contains("MISSING_SESSION"), "{stderr}");
    assert!(
        stderr.contains("sub-01/ses-post/anat/sub-01_ses-post_T1w.nii.gz: EMPTY_FILE"),
        "{stderr}"
    );
    // Codes can be silenced with a validator configuration (here: the placeholders).
    let config = d.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"ignore": [{"code": "EMPTY_FILE"}, {"code": "NIFTI_HEADER_UNREADABLE"}]}"#,
    )
    .unwrap();
    let (code, stderr) = run(args![
        bids,
        d.path().join("out"),
        "participant",
        "--bids-validator-config",
        config
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("0 errors"), "{stderr}");
    // A configuration that is not one is a usage error, named.
    std::fs::write(&config, r#"{"ignore": [{"cod": "EMPTY_FILE"}]}"#).unwrap();
    let (code, stderr) = run(args![
        bids,
        d.path().join("out"),
        "participant",
        "--bids-validator-config",
        config
    ]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("config.json") && stderr.contains("cod"),
        "{stderr}"
    );
}

/// A writable copy of the example dataset with one file replaced.
fn example_with(d: &Path, rel: &str, bytes: &[u8]) -> std::path::PathBuf {
    let bids = d.join("bids");
    copy_tree(&example(), &bids);
    std::fs::write(bids.join(rel), bytes).unwrap();
    bids
}

#[test]
fn one_bad_subject_does_not_stop_the_others() {
    let good = std::fs::read(example().join("sub-02/anat/sub-02_T1w.nii.gz")).unwrap();
    let four_d = std::fs::read(data().join("nifti-variants/4d-int16.nii.gz")).unwrap();
    // (file, content, hcld's message, exit code with validation, the validator's code if it sees it)
    let cases: [(&str, Vec<u8>, &str, i32, &str); 2] = [
        (
            "sub-02/anat/sub-02_T1w.nii.gz",
            good[..good.len() * 2 / 3].to_vec(),
            "truncated",
            1,
            "",
        ),
        (
            "sub-02/anat/sub-02_T1w.nii.gz",
            four_d,
            "4D image with 2 volumes",
            16,
            "T1W_FILE_WITH_TOO_MANY_DIMENSIONS",
        ),
    ];
    for (rel, bytes, want, validated_code, validator_code) in cases {
        let d = tempfile::tempdir().unwrap();
        let bids = example_with(d.path(), rel, &bytes);
        let before = tree_state(&bids);
        let (code, stderr) = run(args![bids, d.path().join("validated"), "participant"]);
        assert_eq!(code, validated_code, "{stderr}");
        assert!(stderr.contains(validator_code), "{stderr}");
        // Past validation (or where it cannot see the problem), the subject fails on its own.
        let out = d.path().join("out");
        let (code, stderr) = run(args![bids, out, "participant", "--skip-bids-validation"]);
        assert_eq!(code, 1, "{stderr}");
        let line = failure_line(&stderr, "sub-02");
        assert!(
            line.contains(&bids.join(rel).display().to_string()) && line.contains(want),
            "{line}"
        );
        let written = derivative_files(&out);
        assert_eq!(written.len(), 38, "{written:?}");
        assert!(written.iter().all(|f| !f.starts_with("sub-02")));
        no_temporaries(&out);
        assert_eq!(tree_state(&bids), before);
        // --stop-on-first-crash: the failure's own code, and later jobs are not started.
        let out2 = d.path().join("out2");
        let (code, stderr) = run(args![
            bids,
            out2,
            "participant",
            "--stop-on-first-crash",
            "--nprocs",
            "1",
            "--skip-bids-validation"
        ]);
        assert_eq!(code, 65, "{stderr}");
        assert!(derivative_files(&out2).len() < 38);
        assert_valid_bids(&out2);
    }
}

#[test]
fn broken_participants_tsv_fails_validation() {
    let d = tempfile::tempdir().unwrap();
    let bids = example_with(d.path(), "participants.tsv", b"subject\tsite\nsub-01\tHH\n");
    let (code, stderr) = run(args![bids, d.path().join("out"), "participant"]);
    assert_eq!(code, 16, "{stderr}");
    assert!(
        stderr.contains("participants.tsv: TSV_COLUMN_MISSING [participant_id]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("BIDS validation failed with 2 error(s)"),
        "{stderr}"
    );
    // Skipping validation turns it into a warning and the run proceeds.
    let (code, stderr) = run(args![
        bids,
        d.path().join("out"),
        "participant",
        "--skip-bids-validation"
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("participant_id"),
        "{stderr}"
    );
    // A missing dataset_description.json.
    std::fs::remove_file(bids.join("dataset_description.json")).unwrap();
    let (code, stderr) = run(args![bids, d.path().join("out3"), "participant"]);
    assert_eq!(code, 16, "{stderr}");
    assert!(stderr.contains("dataset_description.json"), "{stderr}");
}

#[test]
fn dangling_symlink_names_datalad_get() {
    let d = tempfile::tempdir().unwrap();
    let bids = d.path().join("bids");
    copy_tree(&example(), &bids);
    let t1w = bids.join("sub-01/anat/sub-01_T1w.nii.gz");
    std::fs::remove_file(&t1w).unwrap();
    std::os::unix::fs::symlink("../../.git/annex/objects/Xx/yy/SHA256E-s1--0.nii.gz", &t1w)
        .unwrap();
    let (code, stderr) = run(args![
        bids,
        d.path().join("out"),
        "participant",
        "--participant-label",
        "01"
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("annexed content not present") && stderr.contains("datalad get"),
        "{stderr}"
    );
}

#[test]
fn parallel_jobs_share_one_output_dir() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // One process per participant, as a SLURM array would start them, plus two for the same subject.
    let labels = ["01", "02", "03", "03", "01"];
    run_all_at_once(
        labels
            .iter()
            .map(|l| {
                args![
                    example(),
                    out,
                    "participant",
                    "--participant-label",
                    l,
                    "--nprocs",
                    "1"
                ]
            })
            .collect(),
    );
    assert_eq!(derivative_files(&out), expected_outputs());
    no_temporaries(&out);
    assert_valid_bids(&out);
    let desc: Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset_description.json")).unwrap())
            .unwrap();
    assert_eq!(desc["GeneratedBy"][0]["Name"], "hcld");
    for f in expected_outputs().iter().filter(|f| f.ends_with(".nii.gz")) {
        read_nifti(&out.join(f)).unwrap();
    }
}

#[test]
fn output_under_bids_derivatives_is_not_read_back_as_input() {
    let d = tempfile::tempdir().unwrap();
    let bids = d.path().join("bids");
    copy_tree(&example(), &bids);
    // An unrelated, broken derivatives folder only warns.
    std::fs::create_dir_all(bids.join("derivatives/other")).unwrap();
    std::fs::write(
        bids.join("derivatives/other/dataset_description.json"),
        "{oops",
    )
    .unwrap();
    let out = bids.join("derivatives").join("hcld");
    // OUTPUT_DIR, and the `derivatives` folder that gains it (its modification time changes),
    // are the one place hcld writes.
    let outside = |p: &std::path::PathBuf| {
        !p.starts_with("derivatives/hcld") && p != std::path::Path::new("derivatives")
    };
    let before: Vec<_> = tree_state(&bids)
        .into_iter()
        .filter(|(p, _)| outside(p))
        .collect();
    for _ in 0..2 {
        let (code, stderr) = run(args![bids, out, "participant"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains("dataset_description.json: invalid JSON"),
            "{stderr}"
        );
        assert!(stderr.contains("0 derivative datasets"), "{stderr}");
    }
    let after: Vec<_> = tree_state(&bids)
        .into_iter()
        .filter(|(p, _)| outside(p))
        .collect();
    assert_eq!(before, after);
    assert_eq!(derivative_files(&out), expected_outputs());
    assert_valid_bids(&out);
}

#[test]
fn inputs_that_would_share_an_output_and_malformed_names() {
    let d = tempfile::tempdir().unwrap();
    let bids = d.path().join("bids");
    copy_tree(&example(), &bids);
    // The same image as .nii next to .nii.gz would both become sub-01_desc-preproc_T1w.
    let raw = std::process::Command::new("gzip")
        .args(["-dc"])
        .arg(bids.join("sub-01/anat/sub-01_T1w.nii.gz"))
        .output()
        .unwrap()
        .stdout;
    std::fs::write(bids.join("sub-01/anat/sub-01_T1w.nii"), raw).unwrap();
    // A name outside the BIDS grammar is skipped with a warning, not guessed at.
    std::fs::copy(
        bids.join("sub-02/anat/sub-02_T1w.nii.gz"),
        bids.join("sub-02/anat/sub-02_acq-MPRAGE-iso_T1w.nii.gz"),
    )
    .unwrap();
    let out = d.path().join("out");
    // The validator rejects both (DUPLICATE_FILES, INVALID_ENTITY_LABEL) ...
    let (code, stderr) = run(args![bids, d.path().join("validated"), "participant"]);
    assert_eq!(code, 16, "{stderr}");
    assert!(
        stderr.contains("DUPLICATE_FILES") && stderr.contains("INVALID_ENTITY_LABEL"),
        "{stderr}"
    );
    // ... and without validation hcld still refuses to let one overwrite the other.
    let (code, stderr) = run(args![bids, out, "participant", "--skip-bids-validation"]);
    assert_eq!(code, 1, "{stderr}");
    let line = failure_line(&stderr, "sub-01");
    assert!(
        line.contains(
            "sub-01_T1w.nii.gz: would write the same outputs as sub-01/anat/sub-01_T1w.nii"
        ),
        "{line}"
    );
    assert!(
        stderr.contains("sub-02_acq-MPRAGE-iso_T1w.nii.gz: not a valid BIDS file name"),
        "{stderr}"
    );
    assert_eq!(derivative_files(&out), expected_outputs());
    assert_valid_bids(&out);
}

#[test]
fn killed_runs_leave_no_partial_outputs_and_resume_to_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let reference = d.path().join("reference");
    let started = std::time::Instant::now();
    let (code, stderr) = run(args![example(), reference, "participant"]);
    assert_eq!(code, 0, "{stderr}");
    let took = started.elapsed();
    // SIGKILL at several points of a run (startup, registration, bias correction, writing), as
    // fractions of the uninterrupted run's time; the process must die by the signal (a kill after
    // the run had finished would test nothing).
    for (i, fraction) in [0.001, 0.1, 0.3, 0.5, 0.7].into_iter().enumerate() {
        let delay_ms = (took.as_secs_f64() * 1000.0 * fraction) as u64;
        let out = d.path().join(format!("killed{i}"));
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("hcld"))
            .args([example().as_os_str(), out.as_os_str()])
            .args(["participant", "--nprocs", "2"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "the run ended before the kill at {delay_ms} ms: {status:?}"
            );
        }
        // Whatever is visible is complete. (Hidden `.hcldtmp-*` files of the killed writer may
        // remain; the re-run removes them.)
        assert_visible_outputs_complete(&out, &format!("after kill at {delay_ms} ms"));
        // A re-run completes and equals an uninterrupted run, byte for byte.
        let (code, stderr) = run(args![example(), out, "participant"]);
        assert_eq!(code, 0, "{stderr}");
        no_temporaries(&out);
        assert_eq!(derivative_files(&out), expected_outputs());
        for f in expected_outputs() {
            assert_eq!(
                std::fs::read(out.join(&f)).unwrap(),
                std::fs::read(reference.join(&f)).unwrap(),
                "{f} differs after a kill at {delay_ms} ms and a re-run"
            );
        }
    }
}
