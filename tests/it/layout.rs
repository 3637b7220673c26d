//! The dataset index agrees with pybids 0.22.0 on every bids-examples copy
//! (`tests/data/bids-examples/EXPECTED_pybids-0.22.0.json`), and handles sidecar inheritance,
//! `.bidsignore`, symlinked (DataLad-style) datasets and dangling links.

use hcld::bids::{Entity, IndexOptions, Layout, Query, brain_mask_query, t1w_query};
use serde_json::Value;

use super::util::{bids_example, copy_tree, data, example};

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn rels(files: Vec<&hcld::bids::BidsFile>) -> Vec<String> {
    files
        .into_iter()
        .map(|f| f.rel_path().to_string())
        .collect()
}

fn index(path: &std::path::Path) -> Layout {
    Layout::index(
        path,
        &IndexOptions {
            strict: true,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn agrees_with_pybids_on_bids_examples() {
    let text =
        std::fs::read_to_string(data().join("bids-examples/EXPECTED_pybids-0.22.0.json")).unwrap();
    let expected: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(expected.len(), 5);
    for (name, want) in &expected {
        let layout = index(&bids_example(name));
        assert_eq!(
            layout.subjects(),
            strings(&want["subjects"]),
            "{name}: subjects"
        );
        if let Some(s) = want.get("sessions") {
            assert_eq!(layout.sessions(), strings(s), "{name}: sessions");
        }
        if let Some(t1w) = want.get("raw_T1w") {
            assert!(!layout.is_derivative());
            assert_eq!(
                rels(layout.get(&t1w_query(&layout))),
                strings(t1w),
                "{name}: T1w"
            );
        }
        if let Some(p) = want.get("derivative_pipelines") {
            let got: Vec<String> = layout
                .derivatives()
                .iter()
                .map(|d| {
                    d.root()
                        .strip_prefix(layout.root())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            assert_eq!(got, strings(p), "{name}: derivative datasets");
        }
        if let Some(m) = want.get("anat_brain_masks") {
            assert!(layout.is_derivative());
            assert_eq!(
                rels(layout.get(&brain_mask_query())),
                strings(m),
                "{name}: masks"
            );
        }
        if let Some(t) = want.get("native_preproc_T1w") {
            assert_eq!(
                rels(layout.get(&t1w_query(&layout))),
                strings(t),
                "{name}: preproc T1w"
            );
        }
    }
}

#[test]
fn derivatives_are_found_nested_and_given() {
    let d = tempfile::tempdir().unwrap();
    copy_tree(&example(), d.path());
    let layout = Layout::index(
        d.path(),
        &IndexOptions {
            strict: true,
            derivatives: vec![bids_example("ds000001-fmriprep")],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(layout.derivatives().len(), 1);
    let fmriprep = &layout.derivatives()[0];
    assert_eq!(
        fmriprep.description().unwrap().pipeline.as_deref(),
        Some("fMRIPrep")
    );
    let masks = fmriprep.get(
        &brain_mask_query()
            .entity(Entity::Subject, &["10"])
            .without(Entity::Space),
    );
    assert_eq!(rels(masks), ["sub-10/anat/sub-10_desc-brain_mask.nii.gz"]);
    // Exact-stem sidecars in derivatives: the native mask's sidecar, not the MNI one.
    let f = fmriprep.get(
        &brain_mask_query()
            .entity(Entity::Subject, &["10"])
            .without(Entity::Space),
    )[0]
    .clone();
    let md = fmriprep.metadata(&f).unwrap();
    assert_eq!(md["RawSources"][0], "sub-10/anat/sub-10_T1w.nii.gz");
    assert_eq!(md["Type"], "Brain");
    let bad = Layout::index(
        d.path(),
        &IndexOptions {
            strict: true,
            derivatives: vec![d.path().join("sub-01")],
            ..Default::default()
        },
    );
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("no dataset_description.json")
    );
}

#[test]
fn sidecars_inherit_in_raw_data() {
    let d = tempfile::tempdir().unwrap();
    copy_tree(&example(), d.path());
    std::fs::write(
        d.path().join("T1w.json"),
        r#"{"RepetitionTime": 2.0, "Manufacturer": "Top"}"#,
    )
    .unwrap();
    std::fs::write(
        d.path().join("sub-03/ses-1/sub-03_ses-1_T1w.json"),
        r#"{"RepetitionTime": 2.3, "SessionLevel": true, "Manufacturer": "Session"}"#,
    )
    .unwrap();
    let layout = index(d.path());
    let files = layout.get(
        &t1w_query(&layout)
            .entity(Entity::Subject, &["03"])
            .entity(Entity::Session, &["1"]),
    );
    let md = layout.metadata(files[0]).unwrap();
    // The file's own sidecar (deepest) wins over session level, which wins over the top level.
    assert_eq!(md["Manufacturer"], "Siemens");
    assert_eq!(md["RepetitionTime"], 1.8);
    assert_eq!(md["SessionLevel"], true);
    let files = layout.get(&t1w_query(&layout).entity(Entity::Subject, &["01"]));
    let md = layout.metadata(files[0]).unwrap();
    assert_eq!(md["RepetitionTime"], 2.0);
    assert_eq!(md["Manufacturer"], "Philips");
    // A sidecar that is not an object is an error naming it.
    std::fs::write(d.path().join("T1w.json"), "[1, 2]").unwrap();
    let layout = index(d.path());
    let files = layout.get(&t1w_query(&layout).entity(Entity::Subject, &["01"]));
    let e = layout.metadata(files[0]).unwrap_err().to_string();
    assert!(e.contains("T1w.json") && e.contains("JSON object"), "{e}");
}

#[test]
fn skips_what_bids_skips() {
    let d = tempfile::tempdir().unwrap();
    copy_tree(&example(), d.path());
    for dir in [
        "sourcedata/sub-09/anat",
        "code",
        ".git",
        "sub-01/.cache",
        "extra/sub-07/anat",
    ] {
        std::fs::create_dir_all(d.path().join(dir)).unwrap();
    }
    std::fs::write(
        d.path().join("sourcedata/sub-09/anat/sub-09_T1w.nii.gz"),
        b"",
    )
    .unwrap();
    std::fs::write(d.path().join("code/run.sh"), b"").unwrap();
    std::fs::write(d.path().join("sub-01/.cache/sub-01_T1w.nii.gz"), b"").unwrap();
    std::fs::write(d.path().join("extra/sub-07/anat/sub-07_T1w.nii.gz"), b"").unwrap();
    std::fs::write(d.path().join(".bidsignore"), "extra/\n").unwrap();
    let layout = index(d.path());
    assert_eq!(layout.subjects(), ["01", "02", "03"]);
    assert!(
        layout
            .files()
            .iter()
            .all(|f| !f.rel_path().contains(".cache") && !f.rel_path().starts_with("code"))
    );
    assert_eq!(
        layout
            .get(&Query::new().suffix("T1w").extensions(&[".nii.gz"]))
            .len(),
        4
    );
}

#[test]
fn symlink_trees_are_followed_and_dangling_links_recorded() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    copy_tree(&example(), &store);
    let ds = d.path().join("ds");
    // A DataLad-like dataset: real folders, every file a symlink into an object store.
    for f in super::util::files_under(&store) {
        let dest = ds.join(&f);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(store.join(&f), &dest).unwrap();
    }
    std::fs::create_dir_all(ds.join("sub-04/anat")).unwrap();
    std::os::unix::fs::symlink(
        ds.join(".git/annex/objects/missing"),
        ds.join("sub-04/anat/sub-04_T1w.nii.gz"),
    )
    .unwrap();
    // A symlinked subject folder inside the dataset (followed), one that leaves it (not followed,
    // with a warning: `sub-05 -> /` would walk the whole file system), and a loop.
    std::os::unix::fs::symlink(ds.join("sub-02"), ds.join("sub-06")).unwrap();
    std::os::unix::fs::symlink(store.join("sub-02"), ds.join("sub-05")).unwrap();
    std::os::unix::fs::symlink(ds.join("sub-01"), ds.join("sub-01/anat/loop")).unwrap();
    let layout = index(&ds);
    let t1w = layout.get(&t1w_query(&layout));
    assert_eq!(t1w.len(), 6, "{:?}", rels(t1w.clone()));
    assert!(
        t1w.iter().any(|f| f.rel_path().starts_with("sub-06/"))
            && !t1w.iter().any(|f| f.rel_path().starts_with("sub-05/")),
        "{:?}",
        rels(t1w.clone())
    );
    assert!(
        layout
            .warnings()
            .iter()
            .any(|w| w.contains("sub-05") && w.contains("outside the dataset")),
        "{:?}",
        layout.warnings()
    );
    let dangling: Vec<_> = t1w
        .iter()
        .filter(|f| f.is_dangling())
        .map(|f| f.rel_path())
        .collect();
    assert_eq!(dangling, ["sub-04/anat/sub-04_T1w.nii.gz"]);
    assert!(
        layout.warnings().iter().any(|w| w.contains("symlink loop")),
        "{:?}",
        layout.warnings()
    );
}

#[test]
fn participants_and_sessions_tables() {
    let layout = index(&example());
    let p = layout.participants().unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), ["sub-01", "sub-02", "sub-03"]);
    assert_eq!(p.get("sub-03", "site"), Some("IU"));
    assert_eq!(p.get("sub-02", "age"), None, "n/a is a missing value");
    let s = layout.sessions_table("03").unwrap().unwrap();
    assert_eq!(s.keys().collect::<Vec<_>>(), ["ses-1", "ses-2"]);
    assert_eq!(s.get("ses-2", "prescan_normalize"), Some("true"));
    assert!(layout.sessions_table("01").unwrap().is_none());
}
