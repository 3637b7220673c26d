//! The command line: spellings, `--version`/`--help`, and the execution-spec exit codes for
//! usage errors, with one-line messages that name the problem.

use super::util::{example, run};
use crate::args;

#[test]
fn version_and_help_exit_zero() {
    let out = super::util::hcld().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hcld "));
    let out = super::util::hcld().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--participant-label",
        "--session-label",
        "--bids-filter-file",
        "--derivatives",
        "--work-dir",
        "--nprocs",
        "--omp-nthreads",
        "--mem",
        "--stop-on-first-crash",
        "--notrack",
        "--skip-bids-validation",
        "--seed",
        "--backend",
        "--device",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn usage_errors_have_their_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let ex = example();
    let before = super::util::tree_state(&ex);
    let cases: Vec<(Vec<std::ffi::OsString>, i32, &str)> = vec![
        (
            args![ex, out, "subject"],
            17,
            "unknown analysis level 'subject'",
        ),
        (args![ex, out], 64, "ANALYSIS_LEVEL"),
        (
            args![ex, out, "participant", "--no-such-flag"],
            64,
            "--no-such-flag",
        ),
        (
            args![
                ex,
                out,
                "participant",
                "--backend",
                "flex",
                "--device",
                "cuda:1"
            ],
            64,
            "the flex backend runs on the CPU only; use --backend tch",
        ),
        (
            args![ex, out, "participant", "--device", "tpu"],
            64,
            "unknown device \"tpu\": use cpu, cuda or cuda:N",
        ),
        (
            args![ex, out, "participant", "--backend", "ndarray"],
            64,
            "unknown backend \"ndarray\": use flex or tch",
        ),
        (
            args![ex, out, "participant", "--participant-label", "../x"],
            64,
            "'../x' is not a BIDS label",
        ),
        (
            args![ex, out, "participant", "--participant-label", "99"],
            18,
            "sub-99 not found",
        ),
        (
            args![ex, out, "participant", "--session-label", "7"],
            18,
            "ses-7 not found",
        ),
        (
            args![d.path().join("nope"), out, "participant"],
            66,
            "BIDS_DIR not found",
        ),
        (
            args![ex, ex.join("sub-01"), "participant"],
            64,
            "OUTPUT_DIR lies inside BIDS_DIR",
        ),
        (args![ex, ex, "participant"], 64, "OUTPUT_DIR is BIDS_DIR"),
        (
            args![ex, ex.join("derivatives"), "participant"],
            64,
            "OUTPUT_DIR lies inside BIDS_DIR",
        ),
        (
            args![ex, ex.join("new/../sub-99"), "participant"],
            64,
            "OUTPUT_DIR lies inside BIDS_DIR",
        ),
        (
            args![ex, out, "participant", "-w", ex.join("work")],
            64,
            "work directory lies inside BIDS_DIR",
        ),
        (
            args![ex, out, "participant", "--nprocs", "0"],
            64,
            "--nprocs",
        ),
        (args![ex, out, "participant", "--mem", "lots"], 64, "--mem"),
        (
            args![
                ex,
                out,
                "participant",
                "--intensity-percentiles",
                "90",
                "10"
            ],
            64,
            "percentiles",
        ),
        (
            args![
                ex,
                out,
                "participant",
                "--bids-filter-file",
                d.path().join("none.json")
            ],
            66,
            "none.json",
        ),
    ];
    for (a, code, want) in cases {
        let (got, stderr) = run(a.clone());
        assert_eq!(got, code, "{a:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{a:?}: stderr lacks '{want}': {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.contains("error:")).count(),
            1,
            "{stderr}"
        );
    }
    assert_eq!(
        super::util::tree_state(&ex),
        before,
        "BIDS_DIR was modified"
    );
}

#[test]
fn filter_files_select_and_reject() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("filter.json");
    std::fs::write(&f, r#"{"t1w": {"session": "2"}}"#).unwrap();
    let out = d.path().join("out");
    let (code, stderr) = run(args![
        example(),
        out,
        "participant",
        "--bids-filter-file",
        f
    ]);
    assert_eq!(code, 0, "{stderr}");
    let written = super::util::files_under(&out);
    let images: Vec<_> = written
        .iter()
        .filter(|f| f.ends_with("_T1w.nii.gz") && !f.contains("space-"))
        .collect();
    assert_eq!(
        images,
        ["sub-03/ses-2/anat/sub-03_ses-2_desc-preproc_T1w.nii.gz"]
    );
    super::util::assert_valid_bids(&out);
    std::fs::write(&f, r#"{"t1w": {"acquisition": "nothing"}}"#).unwrap();
    let (code, stderr) = run(args![
        example(),
        d.path().join("o2"),
        "participant",
        "--bids_filter_file",
        f
    ]);
    assert_eq!(code, 18, "{stderr}");
    assert!(
        stderr.contains("no T1w image matches") && stderr.contains("acquisition=nothing"),
        "{stderr}"
    );
    std::fs::write(&f, r#"{"t1w": {"acqusition": "x"}}"#).unwrap();
    let (code, stderr) = run(args![
        example(),
        d.path().join("o3"),
        "participant",
        "--bids-filter-file",
        f
    ]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("filter.json") && stderr.contains("acqusition"),
        "{stderr}"
    );
}

/// Issue 20: `--nprocs` far beyond the CPUs is capped with a warning, not obeyed until the
/// process limit.
#[test]
fn nprocs_is_capped_at_a_few_threads_per_cpu() {
    let d = tempfile::tempdir().unwrap();
    let (code, stderr) = run(args![
        example(),
        d.path().join("out"),
        "participant",
        "--participant-label",
        "01",
        "--method",
        "none",
        "-w",
        d.path().join("work"),
        "--nprocs",
        "100000"
    ]);
    assert_eq!(code, 0, "{stderr}");
    let cpus = std::thread::available_parallelism().unwrap().get();
    let cap = hcld::settings::MAX_THREADS_PER_CPU * cpus;
    assert!(
        stderr.contains(&format!(
            "--nprocs 100000: using {cap} threads, 4 per CPU this process may use"
        )),
        "{stderr}"
    );
}
