//! Shared test helpers: fixture paths, running the binary, hashing trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `tests/data`.
pub fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
}

/// `examples/multisite`.
pub fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join("multisite")
}

/// A fixture copy of a bids-examples dataset.
pub fn bids_example(name: &str) -> PathBuf {
    data().join("bids-examples").join(name)
}

/// The `hcld` binary under test.
pub fn hcld() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("hcld").expect("hcld binary");
    c.env_remove("HCLD_LOG");
    c
}

/// Runs hcld and returns (exit code, stderr).
pub fn run(args: Vec<std::ffi::OsString>) -> (i32, String) {
    let out = hcld().args(args).output().expect("run hcld");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts one hcld process per argument list at once (as a SLURM array or a workflow engine
/// would) and asserts that every one exits 0.
pub fn run_all_at_once(arg_lists: Vec<Vec<std::ffi::OsString>>) {
    let children: Vec<_> = arg_lists
        .into_iter()
        .map(|a| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("hcld"))
                .args(a)
                .env_remove("HCLD_LOG")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start hcld")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("wait for hcld");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Shorthand for building argument lists from paths and strings.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(std::ffi::OsStr::new(&$a).to_os_string()),*] };
}

/// Copies a directory tree (following symlinks), making the copy writable.
pub fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).follow_links(true) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        let dest = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
            let mut p = std::fs::metadata(&dest).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            p.set_readonly(false);
            std::fs::set_permissions(&dest, p).unwrap();
        }
    }
}

/// Path → (kind, content hash, mtime) for every entry under `root` (symlinks not followed; a
/// folder with its mtime, so a file created and removed in it shows; a FIFO or device by its
/// type, never read), so a test can prove a tree was not modified.
pub fn tree_state(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let what = if md.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(e.path()).unwrap())
        } else if md.is_dir() {
            format!("dir {:?}", md.modified().ok())
        } else if !md.is_file() {
            format!("special {:?} {:?}", md.file_type(), md.modified().ok())
        } else {
            let bytes = std::fs::read(e.path()).unwrap();
            format!("file {:x} {:?}", Sha256::digest(&bytes), md.modified().ok())
        };
        m.insert(rel, what);
    }
    m
}

/// Asserts that no hidden temporary (`.hcldtmp-*`, a write in progress) is left under `out`.
pub fn no_temporaries(out: &Path) {
    let left: Vec<String> = files_under(out)
        .into_iter()
        .filter(|f| f.contains(".hcldtmp-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// What a killed run may leave in `out`: hidden temporaries (removed by the next run) and files
/// that are complete. Every visible image reads whole, every JSON parses and an image sidecar's
/// image is there (it is written first), every ITK transform parses, every PNG ends with its
/// IEND chunk; inside subject folders nothing else may appear. Run logs are not outputs.
pub fn assert_visible_outputs_complete(out: &Path, what: &str) {
    for f in files_under(out) {
        let name = f.rsplit('/').next().unwrap_or(&f);
        if name.starts_with('.') || f.starts_with("logs/") {
            continue;
        }
        let p = out.join(&f);
        let bytes = std::fs::read(&p).unwrap();
        if f.ends_with(".nii.gz") {
            hcld::volume::read_nifti(&p).unwrap_or_else(|e| panic!("{what}: {f}: {e}"));
        } else if f.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{what}: {f} is not complete JSON: {e}"));
            for kind in ["_T1w", "_mask"] {
                if let Some(stem) = f.strip_suffix(&format!("{kind}.json")) {
                    let image = format!("{stem}{kind}.nii.gz");
                    assert!(out.join(&image).is_file(), "{what}: {f} without {image}");
                }
            }
        } else if f.ends_with(".txt") {
            hcld::preprocess::itk::WorldAffine::from_itk_text(&String::from_utf8_lossy(&bytes))
                .unwrap_or_else(|e| panic!("{what}: {f}: {e}"));
        } else if f.ends_with(".png") {
            // Complete PNGs start with the signature and end with the IEND chunk.
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.ends_with(&[0xAE, 0x42, 0x60, 0x82]),
                "{what}: {f} is incomplete"
            );
        } else if f.starts_with("sub-") && f.contains('/') {
            panic!("{what}: unexpected output {f}");
        }
    }
}

/// All files under `root`, relative, sorted.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Asserts that hcld's own validator finds no error in a dataset hcld wrote (with `-r`).
pub fn assert_valid_bids(dataset: &Path) {
    let options = bids_validator::Options {
        recursive: true,
        ..Default::default()
    };
    let report = bids_validator::validate(dataset, &options).unwrap();
    let errors: Vec<String> = report
        .errors()
        .iter()
        .map(|i| {
            format!(
                "{} {} {}",
                i.code,
                i.location.as_deref().unwrap_or("/"),
                i.message
            )
        })
        .collect();
    assert!(
        errors.is_empty(),
        "{}: not valid BIDS: {errors:#?}",
        dataset.display()
    );
    assert!(
        report.summary.data_processed,
        "{}: not read as a derivative dataset",
        dataset.display()
    );
}

/// A Python interpreter for an optional cross-check, from `HCLD_<TOOL>_PYTHON`. `None` (the test
/// then says it skipped) unless `HCLD_REQUIRE_<TOOL>=1`, as `.ci/run` sets, where it must exist.
pub fn optional_python(tool: &str) -> Option<std::ffi::OsString> {
    let var = format!("HCLD_{tool}_PYTHON");
    let require = format!("HCLD_REQUIRE_{tool}");
    let found = std::env::var_os(&var);
    if found.is_none() {
        assert!(
            std::env::var(&require).as_deref() != Ok("1"),
            "{require}=1 but {var} is not set"
        );
        eprintln!("SKIPPED: set {var} to a python with the {tool} package");
    }
    found
}

/// The log line reporting `subject`'s failure (`failed: sub-01: <file>: <reason>`); panics with the
/// whole log when there is none.
pub fn failure_line<'a>(stderr: &'a str, subject: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.contains(&format!("failed: {subject}")))
        .unwrap_or_else(|| panic!("no failure line for {subject}:\n{stderr}"))
}

/// The trained model's folder in `out` (`models/hcld-<id>`).
pub fn model_folder(out: &Path) -> PathBuf {
    std::fs::read_dir(out.join("models"))
        .unwrap_or_else(|e| panic!("{}: {e}", out.join("models").display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("hcld-"))
        })
        .unwrap_or_else(|| panic!("no hcld-* model folder in {}", out.display()))
}
