//! The official BIDS validator (`bids-validator-deno`, PyPI) accepts the example dataset and the
//! derivatives hcld writes from it with zero errors. The validator is found through
//! `HCLD_BIDS_VALIDATOR` (a path) or on `PATH`; without it the test says so and passes, unless
//! `HCLD_REQUIRE_BIDS_VALIDATOR=1` (set by `.ci/run`), where a missing validator is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::util::{example, run};
use crate::args;

pub(super) fn validator() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HCLD_BIDS_VALIDATOR") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bids-validator-deno"))
        .find(|p| p.is_file())
}

/// Runs the validator (recursively, as `bids-validator-deno -r`) and returns its issues.
pub(super) fn validate(validator: &Path, dataset: &Path, expect_derivative: bool) -> Vec<Value> {
    let out = Command::new(validator)
        .args(["--format", "json", "-r"])
        .arg(dataset)
        .env("NO_COLOR", "1")
        .output()
        .expect("run bids-validator-deno");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "validator output is not JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        report["summary"]["dataProcessed"],
        expect_derivative,
        "{}: dataset type misread",
        dataset.display()
    );
    let mut issues = report["issues"]["issues"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // With -r, nested derivative datasets are reported separately.
    if let Some(nested) = report["derivativesSummary"].as_object() {
        for v in nested.values() {
            issues.extend(
                v["issues"]["issues"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    issues
}

pub(super) fn errors(issues: &[Value]) -> Vec<String> {
    issues
        .iter()
        .filter(|i| i["severity"] == "error")
        .map(|i| format!("{} {} {}", i["code"], i["location"], i["issueMessage"]))
        .collect()
}

#[test]
fn outputs_pass_the_bids_validator() {
    let Some(validator) = validator() else {
        assert!(
            std::env::var("HCLD_REQUIRE_BIDS_VALIDATOR").as_deref() != Ok("1"),
            "HCLD_REQUIRE_BIDS_VALIDATOR=1 but bids-validator-deno was not found (install: pip install bids-validator-deno)"
        );
        eprintln!("SKIPPED: bids-validator-deno not installed (pip install bids-validator-deno)");
        return;
    };
    let input_issues = validate(&validator, &example(), false);
    assert_eq!(
        errors(&input_issues),
        Vec::<String>::new(),
        "the example dataset is not valid BIDS"
    );

    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("hcld");
    let (code, stderr) = run(args![example(), out, "participant"]);
    assert_eq!(code, 0, "{stderr}");
    let issues = validate(&validator, &out, true);
    assert_eq!(
        errors(&issues),
        Vec::<String>::new(),
        "hcld's derivatives are not valid BIDS"
    );
    let warnings: Vec<&Value> = issues
        .iter()
        .filter(|i| i["severity"] == "warning")
        .map(|i| &i["code"])
        .collect();
    eprintln!("validator warnings on the derivatives: {warnings:?}");
    assert!(!warnings.iter().any(|c| *c == "README_FILE_MISSING"));
}
