//! The harmonisation pipeline end to end on the example dataset: `group` trains a tiny HCLD
//! configuration and fits the Nyúl landmarks, `participant` harmonises every image with every
//! method, `group` again writes the report; outputs pass both validators, re-runs keep them,
//! parallel and killed jobs equal a serial run, and the reports load in headless Chromium.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hcld::volume::read_nifti;
use serde_json::Value;

use super::util::{
    assert_valid_bids, assert_visible_outputs_complete, copy_tree, example, files_under,
    model_folder, no_temporaries, run, run_all_at_once, tree_state,
};
use super::validator::{errors, validate, validator};
use crate::args;

/// Every image of the example dataset, as (folder, file key).
const IMAGES: [(&str, &str); 4] = [
    ("sub-01/anat", "sub-01"),
    ("sub-02/anat", "sub-02"),
    ("sub-03/ses-1/anat", "sub-03_ses-1"),
    ("sub-03/ses-2/anat", "sub-03_ses-2"),
];

const DESCS: [&str; 4] = ["harmonized", "nyul", "whitestripe", "zscore"];

/// The harmonised outputs (images, sidecars, figures) of a `--method all` run.
fn harmonised_outputs() -> Vec<String> {
    let mut v = Vec::new();
    for (dir, key) in IMAGES {
        let subject = &key[..6];
        for desc in DESCS {
            for ext in ["nii.gz", "json"] {
                v.push(format!(
                    "{dir}/{key}_space-MNI152NLin2009aSym_res-2_desc-{desc}_T1w.{ext}"
                ));
                v.push(format!("{dir}/{key}_desc-{desc}_T1w.{ext}"));
            }
            v.push(format!(
                "{subject}/figures/{key}_space-MNI152NLin2009aSym_desc-{desc}_T1w.png"
            ));
            v.push(format!(
                "{subject}/figures/{key}_desc-{desc}histogram_T1w.png"
            ));
        }
    }
    v.sort();
    v
}

/// An OUTPUT_DIR in which `group --config tiny --method all` has run once (preprocessed images,
/// a trained model, Nyúl landmarks, cached site targets), shared by the tests of this module;
/// each test copies it.
/// The training settings of [`trained`]: a later group run with the same ones finds its model
/// current.
const TRAINING: [&str; 6] = ["--config", "tiny", "--epochs-ae", "3", "--epochs-ldm", "6"];

fn trained() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("harmonization-trained");
        let _ = std::fs::remove_dir_all(&root);
        let out = root.join("out");
        let mut a = args![example(), out, "group"];
        a.extend(TRAINING.iter().map(std::ffi::OsString::from));
        a.extend(args![
            "--method",
            "all",
            "-w",
            root.join("work"),
            "--checkpoint-every",
            "2"
        ]);
        let (code, stderr) = run(a);
        assert_eq!(code, 0, "{stderr}");
        out
    })
}

/// The group level again on a copy of [`trained`] with the same settings and `extra` arguments
/// after `--method`: the model must be found current, not retrained.
fn group_with_the_trained_model(out: &Path, extra: &[&str]) {
    let mut a = args![example(), out, "group"];
    a.extend(
        TRAINING
            .iter()
            .chain(&["--method"])
            .chain(extra)
            .map(std::ffi::OsString::from),
    );
    let (code, stderr) = run(a);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("is current for these images"),
        "the model was retrained: {stderr}"
    );
}

fn fresh_copy(into: &Path) -> PathBuf {
    let out = into.join("out");
    copy_tree(trained(), &out);
    out
}

fn sidecar(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Headless Chromium opens a report: its figures decode, no script error or console message, and
/// a screenshot goes to `HCLD_ARTIFACTS_DIR` (CI keeps it). Skipped without Chromium unless
/// `HCLD_REQUIRE_CHROMIUM=1`.
fn check_in_chromium(report: &Path, screenshot_name: &str) {
    let chromium = std::env::var_os("HCLD_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .flat_map(|d| {
                    [
                        d.join("chromium"),
                        d.join("chromium-browser"),
                        d.join("google-chrome"),
                    ]
                })
                .find(|p| p.is_file())
        });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var("HCLD_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "HCLD_REQUIRE_CHROMIUM=1 but chromium was not found (apt install chromium)"
        );
        eprintln!("SKIPPED: chromium not installed (apt install chromium)");
        return;
    };
    let url = format!("file://{}", report.display());
    let profile = tempfile::tempdir().unwrap();
    let common = |c: &mut std::process::Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
        ]);
    };
    let mut dump = std::process::Command::new(&chromium);
    common(&mut dump);
    let o = dump
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    let body = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split('>').next())
        .unwrap_or_else(|| panic!("no <body> in {dom}"));
    let attr = |name: &str| -> usize {
        body.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!("{name} missing in <body{body}>: the report's script did not run")
            })
    };
    let (total, loaded, errors) = (
        attr("data-figures-total"),
        attr("data-figures-loaded"),
        attr("data-errors"),
    );
    assert!(
        total > 0 && loaded == total,
        "{}: {loaded} of {total} figures loaded",
        report.display()
    );
    assert_eq!(errors, 0, "{}: script or resource errors", report.display());
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "{}: console messages: {console:#?}",
        report.display()
    );
    let dir = std::env::var_os("HCLD_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join(screenshot_name);
    let mut cap = std::process::Command::new(&chromium);
    common(&mut cap);
    let o = cap
        .arg("--window-size=1280,4000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "{}: {loaded}/{total} figures, screenshot {}",
        report.display(),
        shot.display()
    );
}

#[test]
fn group_fits_participant_harmonises_with_every_method_and_the_reports_load() {
    let before = tree_state(&example());
    let d = tempfile::tempdir().unwrap();
    let out = fresh_copy(d.path());
    // The group level left a model, its training curves and inputs, landmarks and site targets.
    let models = files_under(&out.join("models"));
    let model_dir = models
        .iter()
        .find(|f| f.ends_with("/config.json") && f.starts_with("hcld-"))
        .expect("a model")
        .trim_end_matches("/config.json")
        .to_string();
    for f in [
        "autoencoder.bpk",
        "unet.bpk",
        "training/autoencoder_loss.csv",
        "training/diffusion_loss.csv",
        "training/inputs.json",
    ] {
        assert!(
            models.contains(&format!("{model_dir}/{f}")),
            "{f} missing in {models:?}"
        );
    }
    assert!(models.contains(&"nyul.json".to_string()));
    let sha12 = &model_dir["hcld-".len()..];
    for site in ["HH", "IU"] {
        for ext in ["json", "f32"] {
            assert!(
                models.contains(&format!("targets/hcld-{sha12}/site-{site}.{ext}")),
                "{models:?}"
            );
        }
    }

    let (code, stderr) = run(args![example(), out, "participant", "--method", "all"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tree_state(&example()), before, "BIDS_DIR was modified");
    let all = files_under(&out);
    let missing: Vec<String> = harmonised_outputs()
        .into_iter()
        .filter(|f| !all.contains(f))
        .collect();
    assert!(missing.is_empty(), "missing outputs: {missing:?}");
    // `none` writes nothing of its own.
    assert!(!all.iter().any(|f| f.contains("desc-none")), "{all:?}");
    no_temporaries(&out);

    for (dir, key) in IMAGES {
        let mask = read_nifti(&out.join(format!(
            "{dir}/{key}_space-MNI152NLin2009aSym_res-2_desc-brain_mask.nii.gz"
        )))
        .unwrap()
        .0;
        let inside: Vec<bool> = mask.data().iter().map(|&v| v > 0.5).collect();
        for desc in DESCS {
            let stem = out.join(format!(
                "{dir}/{key}_space-MNI152NLin2009aSym_res-2_desc-{desc}_T1w"
            ));
            let (v, header) = read_nifti(&stem.with_extension("nii.gz")).unwrap();
            assert_eq!(v.dims(), [96, 112, 96]);
            assert_eq!(header.datatype, "float32");
            let brain: Vec<f32> = v
                .data()
                .iter()
                .zip(&inside)
                .filter(|(_, m)| **m)
                .map(|(x, _)| *x)
                .collect();
            assert!(
                v.data().iter().all(|x| x.is_finite()),
                "{desc}: non-finite values"
            );
            assert!(
                v.data().iter().zip(&inside).all(|(x, m)| *m || *x == 0.0),
                "{desc}: values outside the brain"
            );
            let mean = brain.iter().map(|&x| x as f64).sum::<f64>() / brain.len() as f64;
            let sd = (brain
                .iter()
                .map(|&x| (x as f64 - mean).powi(2))
                .sum::<f64>()
                / brain.len() as f64)
                .sqrt();
            assert!(sd > 1e-3, "{key} {desc}: flat output (sd {sd})");
            if desc == "zscore" {
                assert!(
                    mean.abs() < 1e-3 && (sd - 1.0).abs() < 1e-3,
                    "{key}: z-score mean {mean} sd {sd}"
                );
            }
            let sc = sidecar(&PathBuf::from(format!("{}.json", stem.display())));
            assert_eq!(sc["SkullStripped"], true);
            assert!(sc["Resolution"].is_string());
            assert!(
                sc["Sources"][0].as_str().unwrap().starts_with("bids::"),
                "{sc}"
            );
            let h = &sc["hcld"];
            assert_eq!(h["Version"], env!("CARGO_PKG_VERSION"));
            assert!(h["Fingerprint"].as_str().unwrap().starts_with("sha256:"));
            if desc == "harmonized" {
                let p = &h["Parameters"];
                assert_eq!(p["Model"]["SHA256"].as_str().unwrap()[..12], *sha12);
                assert_eq!(p["Model"]["Path"], format!("models/{model_dir}"));
                // The default target: the site with the most training images (a tie: HH first).
                assert_eq!(p["Target"]["Kind"], "site");
                assert_eq!(p["Target"]["Label"], "HH");
                assert_eq!(p["DDIM"]["Strength"], 0.05);
                assert_eq!(p["DDIM"]["InversionSteps"], 10);
                assert_eq!(p["DDIM"]["SamplingSteps"], 10);
                assert_eq!(p["DDIM"]["TargetTimestep"], 50);
                assert_eq!(p["DDIM"]["ClipX0"], "off");
                assert_eq!(p["OutputMode"], "intensity-map");
                assert_eq!(p["Seed"], 0);
                assert!(p["Backend"].as_str().unwrap().contains("on cpu"));
            }
        }
    }

    // A re-run keeps every output (same bytes and times).
    let state = tree_state(&out.join("sub-01"));
    let (code, stderr) = run(args![example(), out, "participant", "--method", "all"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("up to date"), "{stderr}");
    assert_eq!(
        tree_state(&out.join("sub-01")),
        state,
        "a current output was rewritten"
    );

    // Another DDIM path redoes the HCLD outputs only.
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--method",
        "hcld",
        "--participant-label",
        "01",
        "--strength",
        "0.4",
        "--sampling-steps",
        "5"
    ]);
    assert_eq!(code, 0, "{stderr}");
    let sc = sidecar(&out.join("sub-01/anat/sub-01_desc-harmonized_T1w.json"));
    assert_eq!(sc["hcld"]["Parameters"]["DDIM"]["Strength"], 0.4);
    assert_eq!(sc["hcld"]["Parameters"]["DDIM"]["SamplingSteps"], 5);

    // The group report now covers every method.
    group_with_the_trained_model(&out, &["all"]);
    let html = std::fs::read_to_string(out.join("group.html")).unwrap();
    for m in ["none", "zscore", "whitestripe", "nyul", "hcld"] {
        assert!(
            html.contains(&format!("<td>{m}</td>")),
            "{m} missing from the metric table"
        );
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the report fetches something"
    );

    assert_valid_bids(&out);
    if let Some(v) = validator() {
        assert_eq!(
            errors(&validate(&v, &out, true)),
            Vec::<String>::new(),
            "not valid BIDS"
        );
    } else {
        assert!(
            std::env::var("HCLD_REQUIRE_BIDS_VALIDATOR").as_deref() != Ok("1"),
            "bids-validator-deno not found"
        );
    }
    check_in_chromium(&out.join("group.html"), "group-report.png");
    check_in_chromium(&out.join("sub-03.html"), "sub-03-report.png");
}

#[test]
fn parallel_and_killed_participant_jobs_equal_a_serial_run() {
    let d = tempfile::tempdir().unwrap();
    let serial = fresh_copy(&d.path().join("serial"));
    let started = std::time::Instant::now();
    let (code, stderr) = run(args![
        example(),
        serial,
        "participant",
        "--method",
        "all",
        "--nprocs",
        "2"
    ]);
    assert_eq!(code, 0, "{stderr}");
    let took = started.elapsed();
    let compare = |out: &Path, what: &str| {
        no_temporaries(out);
        for f in harmonised_outputs() {
            assert_eq!(
                std::fs::read(out.join(&f)).unwrap_or_default(),
                std::fs::read(serial.join(&f)).unwrap(),
                "{f} differs between the serial run and {what}"
            );
        }
        assert_valid_bids(out);
    };

    // 4 participant jobs at once into one OUTPUT_DIR (one per subject, and sub-03 twice).
    let parallel = fresh_copy(&d.path().join("parallel"));
    run_all_at_once(
        ["01", "02", "03", "03"]
            .iter()
            .map(|l| {
                args![
                    example(),
                    parallel,
                    "participant",
                    "--method",
                    "all",
                    "--nprocs",
                    "1",
                    "--participant-label",
                    l
                ]
            })
            .collect(),
    );
    compare(&parallel, "4 parallel jobs");

    // SIGKILL mid-run (while preprocessing, harmonising, writing), then a re-run. The kills land
    // at fractions of the serial run's time, and the process must die by the signal: a kill after
    // the run had finished would test nothing.
    for (i, fraction) in [0.15, 0.45, 0.7].into_iter().enumerate() {
        let delay_ms = (took.as_secs_f64() * 1000.0 * fraction) as u64;
        let out = fresh_copy(&d.path().join(format!("killed{i}")));
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("hcld"))
            .args([example().as_os_str(), out.as_os_str()])
            .args(["participant", "--method", "all", "--nprocs", "2"])
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
        assert_visible_outputs_complete(&out, &format!("after a kill at {delay_ms} ms"));
        let (code, stderr) = run(args![
            example(),
            out,
            "participant",
            "--method",
            "all",
            "--nprocs",
            "2"
        ]);
        assert_eq!(code, 0, "{stderr}");
        compare(&out, &format!("a run killed at {delay_ms} ms and resumed"));
    }
}

#[test]
fn sigterm_stops_cleanly_with_exit_130() {
    let d = tempfile::tempdir().unwrap();
    let out = fresh_copy(d.path());
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("hcld"))
        .args([example().as_os_str(), out.as_os_str()])
        .args(["participant", "--method", "all", "--nprocs", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The signal goes once the run has started work (every log line is written after the handlers
    // are installed): a fixed delay raced the binary's start-up on a loaded machine
    // (loading LibTorch under `--features tch`), and a SIGTERM before the handlers kills the
    // process by the default action, which is not what this test is about.
    let stderr_pipe = child.stderr.take().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        let mut started = Some(started_tx);
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            let Ok(line) = line else { break };
            // "N jobs, k at a time": the job pool has started.
            if line.contains("at a time")
                && let Some(tx) = started.take()
            {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    started_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the run logged no work within 120 s");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SIGTERM as a scheduler sends it (through kill(1): the tests use no libc bindings).
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    no_temporaries(&out);
    // Resuming completes the run.
    let (code, stderr) = run(args![example(), out, "participant", "--method", "all"]);
    assert_eq!(code, 0, "{stderr}");
    let all = files_under(&out);
    assert!(harmonised_outputs().iter().all(|f| all.contains(f)));
}

#[test]
fn clear_errors_for_missing_models_targets_and_too_few_sites() {
    let d = tempfile::tempdir().unwrap();
    // An explicit --method hcld with no model.
    let (code, stderr) = run(args![
        example(),
        d.path().join("empty"),
        "participant",
        "--method",
        "hcld"
    ]);
    assert_eq!(code, 66, "{stderr}");
    assert!(
        stderr.contains("no HCLD model") && stderr.contains("group"),
        "{stderr}"
    );
    // Without --method and without a model, the participant level preprocesses only.
    let (code, stderr) = run(args![
        example(),
        d.path().join("pre"),
        "participant",
        "--participant-label",
        "01"
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("preprocessing only"), "{stderr}");
    // An unknown target site names the cached ones.
    let out = fresh_copy(&d.path().join("t"));
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--method",
        "hcld",
        "--target-site",
        "XX"
    ]);
    assert_eq!(code, 66, "{stderr}");
    assert!(
        stderr.contains("'XX'") && stderr.contains("HH") && stderr.contains("IU"),
        "{stderr}"
    );
    // One site only: training is refused with the fix.
    let (code, stderr) = run(args![
        example(),
        d.path().join("one"),
        "group",
        "--config",
        "tiny",
        "--participant-label",
        "01",
        "02"
    ]);
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("at least 2 sites"), "{stderr}");
    let (code, stderr) = run(args![
        example(),
        d.path().join("few"),
        "group",
        "--config",
        "tiny",
        "--min-site-subjects",
        "2"
    ]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("too few subjects") && stderr.contains("IU (1 subjects)"),
        "{stderr}"
    );
    // Bad method names and DDIM settings are usage errors.
    let (code, stderr) = run(args![
        example(),
        d.path().join("u"),
        "participant",
        "--method",
        "combat"
    ]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("unknown method 'combat'"), "{stderr}");
    let (code, _) = run(args![
        example(),
        d.path().join("u"),
        "participant",
        "--strength",
        "1.5"
    ]);
    assert_eq!(code, 64);
    // --model given a folder that holds no model (BIDS_DIR, say): named, with the fix.
    let (code, stderr) = run(args![
        example(),
        d.path().join("m"),
        "participant",
        "--method",
        "hcld",
        "--model",
        example()
    ]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("not an hcld model folder") && stderr.contains("give --model"),
        "{stderr}"
    );
    // A model folder whose files no longer are the model its name says (the latent scale edited
    // after training): refused, not run under the old id.
    let out = fresh_copy(&d.path().join("tampered"));
    let model = model_folder(&out);
    let config_path = model.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let scale = config["latent_scale"].as_f64().unwrap();
    config["latent_scale"] = serde_json::json!(scale * 2.0);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--method",
        "hcld",
        "--participant-label",
        "01"
    ]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("its files are model") && stderr.contains("train again"),
        "{stderr}"
    );
    // A brain mask given as the target image: refused, not encoded as a style.
    let out = fresh_copy(&d.path().join("masktarget"));
    let mask = files_under(&out)
        .into_iter()
        .find(|f| f.starts_with("sub-02/") && f.ends_with("desc-brain_mask.nii.gz"))
        .expect("the trained fixture has sub-02's brain mask");
    let (code, stderr) = run(args![
        example(),
        &out,
        "participant",
        "--method",
        "hcld",
        "--participant-label",
        "01",
        "--target-image",
        out.join(&mask)
    ]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("mask or label map") && stderr.contains("give a T1w image"),
        "{stderr}"
    );
}

#[test]
fn a_target_image_is_encoded_once_and_used() {
    let d = tempfile::tempdir().unwrap();
    let out = fresh_copy(d.path());
    let target = example().join("sub-03/ses-2/anat/sub-03_ses-2_T1w.nii.gz");
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--method",
        "hcld",
        "--participant-label",
        "01",
        "--target-image",
        target
    ]);
    assert_eq!(code, 0, "{stderr}");
    let sc = sidecar(&out.join("sub-01/anat/sub-01_desc-harmonized_T1w.json"));
    assert_eq!(sc["hcld"]["Parameters"]["Target"]["Kind"], "image");
    let cached: Vec<String> = files_under(&out.join("models/targets"))
        .into_iter()
        .filter(|f| f.contains("/image-"))
        .collect();
    assert_eq!(cached.len(), 2, "{cached:?}");
    // The second use reads the cache.
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--method",
        "hcld",
        "--participant-label",
        "02",
        "--target-image",
        target
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains("preprocessing and encoding --target-image"),
        "{stderr}"
    );
}

/// Issue 17: with a model, `--evaluate` adds the autoencoder's round trip (`hcld-recon`) and the
/// identity check of HCLD (the target site's images harmonised to their own site).
#[test]
fn evaluate_scores_the_autoencoder_round_trip_and_the_identity_check() {
    let d = tempfile::tempdir().unwrap();
    let out = fresh_copy(d.path());
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--method",
        "hcld",
        "zscore"
    ]);
    assert_eq!(code, 0, "{stderr}");
    group_with_the_trained_model(&out, &["hcld", "zscore", "--evaluate"]);
    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("evaluation/evaluation.json")).unwrap(),
    )
    .unwrap();
    let rows = table["methods"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(names, ["none", "zscore", "hcld", "hcld-recon"]);
    // HCLD's target is HH (sub-01, sub-02): both are identity images; the baselines have none.
    let row = |n: &str| rows.iter().find(|r| r["method"] == n).unwrap();
    assert_eq!(row("hcld")["identity_images"], 2);
    // The identity check: an image of the target site harmonised to its own site comes back
    // nearly unchanged. The bar is what scanner noise alone costs: two noise draws of one
    // simulated subject score SSIM 0.96 (docs/benchmarks.md, calibration), so a harmonisation
    // that changes a same-site image more than a rescan would is not "nearly unchanged".
    let identity = row("hcld")["identity_ssim"].as_f64().unwrap();
    assert!((0.96..=1.0).contains(&identity), "identity SSIM {identity}");
    assert_eq!(row("zscore")["identity_images"], 0);
    assert!(row("zscore")["identity_ssim"].is_null());
    // The round trip covers every image, in the preprocessed units.
    let recon = row("hcld-recon");
    assert_eq!(recon["images"], 4);
    let g = recon["gradient_correlation"].as_f64().unwrap();
    assert!(g.is_finite() && g > -1.0 && g < 1.0, "{g}");
    let tsv = std::fs::read_to_string(out.join("evaluation/metrics.tsv")).unwrap();
    assert!(
        tsv.lines().any(|l| l.starts_with("hcld-recon\t4\t")),
        "{tsv}"
    );
}

#[test]
fn output_modes_bring_the_models_change_onto_the_input() {
    let d = tempfile::tempdir().unwrap();
    let out = fresh_copy(d.path());
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--participant-label",
        "02"
    ]);
    assert_eq!(code, 0, "{stderr}");
    let stem = |desc: &str, space: bool| {
        out.join(format!(
            "sub-02/anat/sub-02{}_desc-{desc}",
            if space {
                "_space-MNI152NLin2009aSym_res-2"
            } else {
                ""
            }
        ))
    };
    let read = |p: PathBuf| read_nifti(&p).unwrap().0.data().to_vec();
    let preprocessed = |space| {
        read(PathBuf::from(format!(
            "{}_T1w.nii.gz",
            stem("preproc", space).display()
        )))
    };
    let mask = |space| -> Vec<bool> {
        read(PathBuf::from(format!(
            "{}_mask.nii.gz",
            stem("brain", space).display()
        )))
        .into_iter()
        .map(|v| v > 0.5)
        .collect()
    };
    let mut correlations = Vec::new();
    for mode in ["intensity-map", "residual", "generative"] {
        let (code, stderr) = run(args![
            example(),
            out,
            "participant",
            "--participant-label",
            "02",
            "--method",
            "hcld",
            "--output-mode",
            mode,
            "--clip-x0",
            "off",
            "--strength",
            "0.3"
        ]);
        assert_eq!(code, 0, "{mode}: {stderr}");
        for space in [true, false] {
            let harmonised = stem("harmonized", space);
            let output = read(PathBuf::from(format!(
                "{}_T1w.nii.gz",
                harmonised.display()
            )));
            let sc = sidecar(&PathBuf::from(format!("{}_T1w.json", harmonised.display())));
            let p = &sc["hcld"]["Parameters"];
            assert_eq!(p["OutputMode"], mode, "{sc}");
            assert_eq!(p["DDIM"]["ClipX0"], "off", "{sc}");
            assert!(p["DDIM"]["ClipBound"].is_null(), "{sc}");
            let (input, inside) = (preprocessed(space), mask(space));
            assert!(output.iter().all(|v| v.is_finite()), "{mode}");
            assert!(
                output.iter().zip(&inside).all(|(v, m)| *m || *v == 0.0),
                "{mode}: values outside the brain"
            );
            let r = hcld::metrics::image::masked_correlation(&input, &output, &inside);
            match mode {
                "intensity-map" => {
                    // The output is the recorded monotone map applied to the input's own voxels,
                    // in both spaces: anatomy untouched by construction.
                    let map: hcld::model::baselines::IntensityMap =
                        serde_json::from_value(sc["hcld"]["Fit"]["IntensityMap"].clone())
                            .unwrap_or_else(|e| panic!("{e}: {sc}"));
                    let hcld::model::baselines::IntensityMap::PiecewiseLinear { to, .. } = &map
                    else {
                        panic!("{map:?}")
                    };
                    assert!(to.windows(2).all(|w| w[0] <= w[1]), "not monotone: {map:?}");
                    for ((o, i), m) in output.iter().zip(&input).zip(&inside) {
                        if *m {
                            assert!((o - map.apply(*i)).abs() < 1e-5, "{o} vs f({i})");
                        }
                    }
                }
                "residual" => {
                    // The input plus a change the model made on its coarse grid: what the input
                    // has that the grid cannot hold stays, so the output keeps its anatomy.
                    assert!(output.iter().zip(&input).any(|(o, i)| (o - i).abs() > 1e-4));
                    assert!(r > 0.8, "residual output correlates {r} with the input");
                }
                _ => {}
            }
            if space {
                correlations.push((mode, r));
            }
        }
    }
    // The decoded image carries the (tiny, 6 mm) autoencoder's loss; the two modes that bring only
    // the model's change onto the input keep far more of the input.
    let r = |m: &str| correlations.iter().find(|c| c.0 == m).unwrap().1;
    assert!(
        r("intensity-map") > r("generative") && r("residual") > r("generative"),
        "{correlations:?}"
    );
}

#[test]
fn pretraining_writes_weights_with_their_card_resumes_and_continues_from_weights() {
    let d = tempfile::tempdir().unwrap();
    let preprocessed = trained();
    let pretrain = |out: &Path, extra: &[&str]| {
        let o = assert_cmd::Command::cargo_bin("hcld-pretrain")
            .unwrap()
            .arg(out)
            .arg("--images")
            .arg(preprocessed.join("sub-01"))
            .arg(preprocessed.join("sub-03"))
            .arg("--holdout")
            .arg(preprocessed.join("sub-02"))
            .args([
                "--config", "tiny", "--patch", "16", "--batch", "2", "--nprocs", "2",
            ])
            .arg("-w")
            .arg(d.path().join("work"))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{err}");
        let card: Value =
            serde_json::from_slice(&std::fs::read(out.join("autoencoder.json")).unwrap()).unwrap();
        let weights = std::fs::read(out.join("autoencoder.bpk")).unwrap();
        assert_eq!(
            card["WeightsSHA256"].as_str().unwrap(),
            hcld::model::storage::sha256_hex(&weights)
        );
        card
    };
    let first = d.path().join("first");
    let card = pretrain(&first, &["--steps", "4"]);
    let training = &card["Training"];
    assert_eq!(training["Steps"], 4);
    assert_eq!(training["Report"]["steps"], 4);
    // sub-01 and the two sessions of sub-03 are trained on, sub-02 only scored.
    assert_eq!(training["Images"].as_array().unwrap().len(), 3);
    let held = card["RoundTrip"]["HeldOut"]["Images"].as_array().unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0]["image"].as_str().unwrap().starts_with("sub-02_"));
    assert!(held[0]["ssim"].as_f64().unwrap().is_finite());
    assert_eq!(
        card["Autoencoder"]["channels"],
        serde_json::json!([8, 16, 16])
    );
    // The same command with more steps continues from the checkpoint of step 4.
    let card = pretrain(&d.path().join("more"), &["--steps", "6"]);
    assert_eq!(card["Training"]["Report"]["resumed_from"], 4);
    assert_eq!(card["Training"]["Report"]["steps"], 6);
    // Starting from weights is another run: it does not resume that checkpoint.
    let card = pretrain(
        &d.path().join("continued"),
        &[
            "--steps",
            "2",
            "--init",
            first.join("autoencoder.bpk").to_str().unwrap(),
        ],
    );
    assert!(
        card["Training"]["Report"]["resumed_from"].is_null(),
        "{card}"
    );
    assert!(
        card["Training"]["StartedFrom"]
            .as_str()
            .unwrap()
            .ends_with("autoencoder.bpk")
    );
}
