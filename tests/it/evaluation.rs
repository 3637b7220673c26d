//! Issue 7: the multi-site simulator (`hcld-simulate`) and `group --evaluate`, on the real
//! fixtures, driving both binaries.

use std::path::{Path, PathBuf};

use crate::args;
use crate::it::util::{assert_valid_bids, data, run, tree_state};

fn sources() -> [PathBuf; 2] {
    let t1w = data().join("t1w");
    [
        t1w.join("philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm.nii.gz"),
        t1w.join("siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm.nii.gz"),
    ]
}

fn simulate(out: &Path, extra: &[&str]) -> (i32, String) {
    let [a, b] = sources();
    let o = assert_cmd::Command::cargo_bin("hcld-simulate")
        .unwrap()
        .arg(out)
        .arg("--source")
        .arg(&a)
        .arg(&b)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// group → participant → group --evaluate with `methods` to `target` site (the participant
/// level skipped when `participant` is false: `none` needs only the group level's images);
/// returns `evaluation/evaluation.json`.
fn evaluate_with(
    bids: &Path,
    out: &Path,
    work: &Path,
    methods: &[&str],
    target: &str,
    participant: bool,
) -> serde_json::Value {
    let levels: &[&str] = if participant {
        &["group", "participant"]
    } else {
        &["group"]
    };
    let method_args = || {
        std::iter::once("--method")
            .chain(methods.iter().copied())
            .map(std::ffi::OsString::from)
    };
    for level in levels {
        let mut a = args![bids, out, level, "-w", work];
        a.extend(method_args());
        let (code, err) = run(a);
        assert_eq!(code, 0, "{level}: {err}");
    }
    let mut a = args![
        bids,
        out,
        "group",
        "-w",
        work,
        "--evaluate",
        "--target-site",
        target
    ];
    a.extend(method_args());
    let (code, err) = run(a);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&std::fs::read_to_string(out.join("evaluation/evaluation.json")).unwrap())
        .unwrap()
}

#[test]
fn simulator_ground_truth_is_exact_and_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, other) = (
        tmp.path().join("one"),
        tmp.path().join("two"),
        tmp.path().join("other"),
    );
    // 2 sources x 4 sites: 8 subjects are the smallest balanced design.
    let settings = ["--subjects", "8", "--sites", "4", "--seed", "5"];
    for dir in [&one, &two] {
        let (code, err) = simulate(dir, &settings);
        assert_eq!(code, 0, "{err}");
    }
    // Same seed: the same bits everywhere (mtimes aside).
    let strip = |m: std::collections::BTreeMap<PathBuf, String>| -> Vec<(PathBuf, String)> {
        m.into_iter()
            .map(|(p, s)| (p, s.split(' ').take(2).collect::<Vec<_>>().join(" ")))
            .collect()
    };
    assert_eq!(strip(tree_state(&one)), strip(tree_state(&two)));
    // Another seed: other sites and noise.
    let (code, err) = simulate(&other, &["--subjects", "8", "--sites", "4", "--seed", "6"]);
    assert_eq!(code, 0, "{err}");
    // Compared by hash: a failing assert_eq on raw bytes would print megabytes.
    let hash = |p: PathBuf| {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(p).unwrap()))
    };
    let gt = |root: &Path, s: &str, k: &str| {
        hash(root.join(format!(
            "sourcedata/ground-truth/sub-{s}/sub-{s}_site-{k}_T1w.nii.gz"
        )))
    };
    assert_ne!(gt(&one, "03", "B"), gt(&other, "03", "B"));
    // participants.tsv has site, age and sex; each subject's BIDS image is its rendering at its
    // own site; every rendering has its parameters beside it.
    let tsv = std::fs::read_to_string(one.join("participants.tsv")).unwrap();
    let mut lines = tsv.lines();
    assert_eq!(lines.next(), Some("participant_id\tsite\tsource\tage\tsex"));
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split('\t').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 8);
    let mut sites_seen = std::collections::BTreeSet::new();
    // The design is balanced: each of the 2 sources at each of the 4 sites, once.
    let mut cells = std::collections::BTreeSet::new();
    for r in &rows {
        let s = r[0].strip_prefix("sub-").unwrap();
        let site = &r[1];
        sites_seen.insert(site.clone());
        assert!(cells.insert((r[2].clone(), site.clone())), "{rows:?}");
        assert!(r[2] == "1" || r[2] == "2", "{rows:?}");
        let age: f64 = r[3].parse().unwrap();
        assert!((20.0..=80.0).contains(&age));
        assert!(r[4] == "M" || r[4] == "F");
        let bids = hash(one.join(format!("sub-{s}/anat/sub-{s}_T1w.nii.gz")));
        assert_eq!(
            bids,
            gt(&one, s, site),
            "sub-{s} is not its own-site rendering"
        );
        for k in ["A", "B", "C", "D"] {
            let p = one.join(format!(
                "sourcedata/ground-truth/sub-{s}/sub-{s}_site-{k}_T1w.json"
            ));
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            assert_eq!(v["Site"]["label"], k);
            assert!(v["Site"]["wm_gm_ratio"].as_f64().unwrap() >= 1.15);
            assert!(
                v["NoiseSeed"].is_u64() && v["Subject"]["min_jacobian"].as_f64().unwrap() > 0.0
            );
        }
        // Renderings of one subject at two sites differ (that is the site effect).
        assert_ne!(gt(&one, s, "A"), gt(&one, s, "B"));
    }
    assert_eq!(sites_seen.len(), 4);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(one.join("sourcedata/ground-truth/simulation.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sites"].as_array().unwrap().len(), 4);
    assert_eq!(manifest["config"]["seed"], 5);
    assert_eq!(manifest["balanced"], true);
    // Subjects 3 to 8 are new anatomies (deformed), 1 and 2 the real ones.
    let disp = |i: usize| {
        manifest["subjects"][i]["deformation"]["max_displacement_mm"]
            .as_f64()
            .unwrap()
    };
    assert_eq!((disp(0), disp(1)), (0.0, 0.0));
    assert!((2..8).all(|i| disp(i) > 0.0));
}

#[test]
fn simulator_refuses_bad_settings_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = simulate(&tmp.path().join("x"), &["--sites", "1"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--sites 1"), "{err}");
    let not_sim = tmp.path().join("busy");
    std::fs::create_dir_all(&not_sim).unwrap();
    std::fs::write(not_sim.join("keep.txt"), "mine").unwrap();
    let (code, err) = simulate(&not_sim, &["--subjects", "2", "--sites", "2"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("not an hcld simulation"), "{err}");
    assert_eq!(
        std::fs::read_to_string(not_sim.join("keep.txt")).unwrap(),
        "mine"
    );
    let o = assert_cmd::Command::cargo_bin("hcld-simulate")
        .unwrap()
        .arg(tmp.path().join("y"))
        .args(["--source", "/nonexistent/t1w.nii.gz"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/t1w.nii.gz"));
}

#[test]
fn evaluate_scores_every_method_against_the_simulated_ground_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let (bids, out, work) = (
        tmp.path().join("sim"),
        tmp.path().join("out"),
        tmp.path().join("work"),
    );
    let (code, err) = simulate(&bids, &["--subjects", "6", "--sites", "3", "--seed", "1"]);
    assert_eq!(code, 0, "{err}");
    let before = tree_state(&bids);
    let table = evaluate_with(
        &bids,
        &out,
        &work,
        &["nyul", "whitestripe", "zscore", "none"],
        "A",
        true,
    );
    assert_eq!(before, tree_state(&bids), "BIDS_DIR changed");
    assert_eq!(table["target_site"], "A");
    let rows = table["methods"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(names, ["none", "zscore", "whitestripe", "nyul"]);
    let num = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    for r in rows {
        let m = r["method"].as_str().unwrap();
        assert_eq!(r["images"], 6, "{m}");
        // Subjects 2, 3, 5, 6 are scanned at B or C: each has a ground truth at A.
        assert_eq!(r["ground_truth_images"], 4, "{m}");
        let (ssim, psnr, dice) = (num(r, "ssim"), num(r, "psnr"), num(r, "tissue_dice"));
        assert!(ssim > 0.5 && ssim < 1.0, "{m}: SSIM {ssim}");
        assert!(psnr > 10.0 && psnr < 60.0, "{m}: PSNR {psnr}");
        assert!(dice > 0.5 && dice <= 1.0, "{m}: Dice {dice}");
        assert_eq!(r["site_cv"], "source", "{m}");
        // A leave-one-out accuracy over 6 images is a multiple of 1/6 in [0, 1].
        let accuracy = num(r, "site_accuracy");
        assert!(
            (0.0..=1.0).contains(&accuracy)
                && (accuracy * 6.0 - (accuracy * 6.0).round()).abs() < 1e-9,
            "{m}: site accuracy {accuracy}"
        );
        assert_eq!(num(r, "site_chance"), 1.0 / 3.0, "{m}");
        // Binomial(6, 1/3): 2.5th and 97.5th percentiles 0 and 4 of 6.
        assert_eq!(
            (num(r, "site_chance_low"), num(r, "site_chance_high")),
            (0.0, 4.0 / 6.0),
            "{m}"
        );
        let v = num(r, "volume_change");
        assert!((0.0..100.0).contains(&v), "{m}: volume change {v}");
        // No baseline has a target: no identity check.
        assert_eq!(r["identity_images"], 0, "{m}");
        // Three simulated sites differ: their intensity distributions are never identical.
        let w1 = num(r, "mean_pairwise_w1");
        assert!(w1 > 0.0 && w1.is_finite(), "{m}: W1 {w1}");
        assert!(r["age_r"].is_number() || r["age_r"].is_null());
    }
    // Intensity standardisation brings sites closer than the raw preprocessed images.
    let w1 = |name: &str| {
        num(
            rows.iter().find(|r| r["method"] == name).unwrap(),
            "mean_pairwise_w1",
        )
    };
    assert!(w1("nyul") < w1("none"), "{} vs {}", w1("nyul"), w1("none"));
    assert_eq!(num(&rows[0], "tissue_dice_vs_source"), 1.0);
    // TSV with its column sidecar; the group report shows the table; outputs stay valid BIDS.
    let tsv = std::fs::read_to_string(out.join("evaluation/metrics.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 5);
    assert!(tsv.starts_with("method\timages\tsites\tsite_cv\tsite_accuracy"));
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("evaluation/metrics.json")).unwrap(),
    )
    .unwrap();
    assert!(sidecar["ssim"]["Description"].is_string());
    let html = std::fs::read_to_string(out.join("group.html")).unwrap();
    assert!(html.contains("Evaluation (group --evaluate)"));
    assert_valid_bids(&out);
}

#[test]
fn evaluate_belongs_to_the_group_level() {
    let tmp = tempfile::tempdir().unwrap();
    let example = crate::it::util::example();
    let (code, err) = run(args![
        example,
        tmp.path().join("o"),
        "participant",
        "--evaluate"
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("group level"), "{err}");
    let (code, err) = run(args![
        example,
        tmp.path().join("o"),
        "group",
        "--ground-truth",
        tmp.path()
    ]);
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("simulation.json"), "{err}");
}

/// Three fixture brains as simulation sources: the two IXI scans and the Siemens Prisma scan
/// with the scanner's bias correction (its uncorrected twin is left out: its strong receive bias
/// still pulls its registration and brain mask, issue 21, so its renderings carry non-brain
/// tissue that no site explains).
fn three_sources() -> Vec<PathBuf> {
    let t1w = data().join("t1w");
    [
        "philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm.nii.gz",
        "philips-intera3T_ixi-hh_IXI132-HH-1415_t1w2mm.nii.gz",
        "siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm.nii.gz",
    ]
    .iter()
    .map(|f| t1w.join(f))
    .collect()
}

/// Issue 17: the site classifier is calibrated. With every source at every site and the images
/// of a source held out together, `none` sits inside the binomial chance interval when all sites
/// are identical (`--site-effect 0`), and names the site when the sites are strong
/// (`--site-effect 3`: three times the documented spread).
#[test]
fn site_classifier_is_at_chance_without_site_effects_and_finds_strong_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut accuracy = std::collections::BTreeMap::new();
    for (name, effect) in [("identical", "0"), ("strong", "3")] {
        let (bids, out, work) = (
            tmp.path().join(name),
            tmp.path().join(format!("{name}-out")),
            tmp.path().join(format!("{name}-work")),
        );
        // 3 sources x 4 sites x 2: every source twice at every site.
        let o = assert_cmd::Command::cargo_bin("hcld-simulate")
            .unwrap()
            .arg(&bids)
            .arg("--source")
            .args(three_sources())
            .args(["--subjects", "24", "--sites", "4", "--seed", "5"])
            .args(["--site-effect", effect])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let table = evaluate_with(&bids, &out, &work, &["none"], "A", false);
        let none = &table["methods"][0];
        assert_eq!(none["method"], "none");
        assert_eq!(none["site_cv"], "source", "{none}");
        assert_eq!(none["images"], 24);
        // Binomial(24, 1/4): 2.5th and 97.5th percentiles 2 and 10 of 24.
        assert_eq!(none["site_chance_low"], 2.0 / 24.0);
        assert_eq!(none["site_chance_high"], 10.0 / 24.0);
        accuracy.insert(name, none["site_accuracy"].as_f64().unwrap());
    }
    let same = accuracy["identical"];
    assert!(
        (2.0 / 24.0..=10.0 / 24.0).contains(&same),
        "no site effect, yet accuracy {same} is outside the chance interval"
    );
    let strong = accuracy["strong"];
    assert!(strong >= 0.9, "strong site effects, yet accuracy {strong}");
}

/// Issue 17: a real pair with a known answer. The same acquisition with and without the
/// scanner's bias correction, each reconstruction its own site: the one at the target site is
/// the other's reference, preprocessed with the other's registration (one voxel grid). The
/// corrected reconstruction is the one harmonised: its registration and mask are sound, while
/// the uncorrected one's strong receive bias still pulls its fit (issue 21).
#[test]
fn a_traveling_subject_pair_is_scored_against_its_partner() {
    let tmp = tempfile::tempdir().unwrap();
    let (bids, out, work) = (
        tmp.path().join("pair"),
        tmp.path().join("out"),
        tmp.path().join("work"),
    );
    let t1w = data().join("t1w");
    for (ses, file) in [
        (
            "1",
            "siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm.nii.gz",
        ),
        (
            "2",
            "siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm.nii.gz",
        ),
    ] {
        let anat = bids.join(format!("sub-01/ses-{ses}/anat"));
        std::fs::create_dir_all(&anat).unwrap();
        std::fs::copy(
            t1w.join(file),
            anat.join(format!("sub-01_ses-{ses}_T1w.nii.gz")),
        )
        .unwrap();
    }
    // A second participant at the other site, with no partner.
    let anat = bids.join("sub-02/anat");
    std::fs::create_dir_all(&anat).unwrap();
    std::fs::copy(
        t1w.join("philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm.nii.gz"),
        anat.join("sub-02_T1w.nii.gz"),
    )
    .unwrap();
    std::fs::write(
        bids.join("dataset_description.json"),
        r#"{"Name": "pair", "BIDSVersion": "1.10.0"}"#,
    )
    .unwrap();
    std::fs::write(
        bids.join("participants.tsv"),
        "participant_id\tsite\nsub-01\tn/a\nsub-02\tNorm\n",
    )
    .unwrap();
    std::fs::write(
        bids.join("sub-01/sub-01_sessions.tsv"),
        "session_id\tsite\nses-1\tNorm\nses-2\tRaw\n",
    )
    .unwrap();
    let table = evaluate_with(&bids, &out, &work, &["none", "zscore", "nyul"], "Raw", true);
    assert_eq!(table["ground_truth"], "traveling-subject pairs in BIDS_DIR");
    assert_eq!(table["target_site"], "Raw");
    assert_eq!(table["site_cv"], "subject");
    for r in table["methods"].as_array().unwrap() {
        let m = r["method"].as_str().unwrap();
        // Only ses-1 has a partner at the target site; sub-02 has none.
        assert_eq!(r["ground_truth_images"], 1, "{m}");
        let ssim = r["ssim"].as_f64().unwrap();
        // One brain on one voxel grid: close, but not identical (the bias differs).
        assert!(ssim > 0.9 && ssim < 1.0, "{m}: SSIM {ssim}");
        // The tissue figures exist; on this 2 mm scan, whose GM and WM peaks overlap, the
        // mixture segmentation is unstable, so their values are the benchmark's to report.
        let dice = r["tissue_dice"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&dice), "{m}: Dice {dice}");
        assert!(r["volume_change"].as_f64().unwrap() >= 0.0, "{m}");
    }
}
