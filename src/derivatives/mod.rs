//! The only writer into OUTPUT_DIR, which it keeps a valid BIDS derivatives dataset.
//!
//! It owns output names ([`DerivativeName`], one pattern table), JSON sidecars ([`Sidecar`]),
//! `dataset_description.json` and `.bidsignore`, the per-output locks that keep parallel jobs
//! (one process per participant, SLURM arrays) from interleaving, and atomic writes: every file is
//! written to a hidden temporary name in its final folder, synced, then renamed into place, so an
//! interrupted run never leaves a file that looks finished. Image encoding is delegated to
//! [`crate::volume`].

mod atomic;
mod error;
mod models;
mod names;
mod sidecar;
mod work_dir;

pub use atomic::{remove_temporaries, write_atomic, write_atomic_with, write_within};
pub use error::DerivativesError;
pub use models::ModelStore;
pub use names::DerivativeName;
pub use sidecar::{PROVENANCE_KEY, Sidecar, source_uri};
pub use work_dir::{default_work_dir_name, prepare_work_dir};

use atomic::{
    TMP_PREFIX, create_dir_contained, remove_temporaries_in, temp_builder, write_contained,
};

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::bids::Entity;
use crate::volume::{OutputDtype, Volume, VolumeError, XformCode, write_nifti};

/// The BIDS version our outputs follow.
pub const BIDS_VERSION: &str = "1.10.0";

/// What goes into `.bidsignore`: things a person needs that BIDS has no name for (reports, their
/// figure folders, ITK transforms, which BIDS 1.11 does not cover). `figures` has no trailing slash
/// because bids-validator 3 otherwise still reports the folder itself.
const BIDSIGNORE: &str = "*.html\nfigures\n*_xfm.*\nmodels\nevaluation\n";

/// The dataset README: what the outputs are, for whoever opens OUTPUT_DIR.
const README: &str = "# hcld derivatives\n\n\
Written by hcld, a BIDS-App that harmonises T1-weighted MRI across scanners and sites.\n\n\
- `sub-<label>[/ses-<label>]/anat/*_desc-preproc_T1w.nii.gz`: the T1w reoriented to RAS+ and\n  \
intensity-scaled (float32); `*_space-MNI152NLin2009aSym_res-<r>_desc-preproc_T1w.nii.gz`: the same,\n  \
registered to the template, skull-stripped, on the model grid; brain masks and ITK transforms beside them.\n\
- `*_desc-harmonized_T1w.nii.gz` (HCLD) and `*_desc-{nyul,whitestripe,zscore}_T1w.nii.gz` (baselines):\n  \
harmonised images, in template space (`space-…_res-<r>`) and back on the native grid.\n\
- `sub-<label>.html` and `group.html`: QC reports; `sub-<label>/figures/`: their figures.\n\
- `evaluation/`: the metric table of `group --evaluate` (`metrics.tsv`, its column descriptions `metrics.json`, and `evaluation.json`).\n\
- `models/`: the trained HCLD model (`hcld-<sha>/`), Nyúl landmarks (`nyul.json`) and cached targets.\n\
- `logs/`: one log per run.\n\n\
Each sidecar's `hcld` field records the hcld version, the input's SHA-256 and every parameter.\n";

/// The dataset the outputs are derived from (named `raw` in BIDS URIs).
#[derive(Debug, Clone)]
pub struct SourceDataset {
    /// Absolute path of the source dataset root.
    pub root: PathBuf,
    /// Its `Name`.
    pub name: String,
}

/// An exclusive lock on one output stem, held while a job writes it; released on drop.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
}

/// OUTPUT_DIR as a BIDS derivatives dataset.
#[derive(Debug, Clone)]
pub struct DerivativesDataset {
    root: PathBuf,
    /// `root` with every symlink resolved: each write's folder must resolve to a path under it.
    resolved_root: PathBuf,
}

impl DerivativesDataset {
    /// Opens (creating if needed) the derivatives dataset at `root`. `dataset_description.json` is
    /// created atomically without overwriting, so N jobs started at once agree on one file; an
    /// existing description from another pipeline is an error.
    pub fn open(
        root: &Path,
        source: &SourceDataset,
    ) -> Result<DerivativesDataset, DerivativesError> {
        std::fs::create_dir_all(root).map_err(|e| DerivativesError::CannotCreate {
            path: root.to_path_buf(),
            source: e,
        })?;
        let resolved_root =
            std::fs::canonicalize(root).map_err(|e| DerivativesError::CannotCreate {
                path: root.to_path_buf(),
                source: e,
            })?;
        let ds = DerivativesDataset {
            root: root.to_path_buf(),
            resolved_root,
        };
        // Dataset-level files are written under one lock, which also makes it safe to remove the
        // temporaries a killed job left at the root (no live writer can own one meanwhile).
        let _dataset_lock = ds.lock_key("dataset")?;
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let desc_path = root.join("dataset_description.json");
        let url = file_url(&source.root);
        let description = json!({
            "Name": format!("hcld derivatives of {}", if source.name.is_empty() { "a BIDS dataset" } else { &source.name }),
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{
                "Name": "hcld",
                "Version": crate::VERSION,
                "CodeURL": crate::CODE_URL,
                "Description": "T1w harmonisation across scanners and sites with 3D conditional latent diffusion (HCLD)"
            }],
            "SourceDatasets": [{"URL": url}],
            "DatasetLinks": {"raw": url},
        });
        match crate::input::read_regular(&desc_path, crate::input::TEXT_LIMIT) {
            Ok(bytes) => ds.check_existing_description(&desc_path, &bytes, &url)?,
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => {
                let text = pretty(&description);
                let mut tmp = temp_builder().tempfile_in(root).map_err(|e| {
                    DerivativesError::CannotCreate {
                        path: root.to_path_buf(),
                        source: e,
                    }
                })?;
                std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|e| {
                    DerivativesError::Write {
                        path: desc_path.clone(),
                        reason: crate::os_error::describe_write(&e),
                    }
                })?;
                match tmp.persist_noclobber(&desc_path) {
                    Ok(_) => {}
                    // Another job created it first: fine if it is ours.
                    Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                        let bytes =
                            crate::input::read_regular(&desc_path, crate::input::TEXT_LIMIT)
                                .map_err(|e| DerivativesError::Write {
                                    path: desc_path.clone(),
                                    reason: format!(
                                        "{}; it must be a readable regular file",
                                        crate::input::reason(&e)
                                    ),
                                })?;
                        ds.check_existing_description(&desc_path, &bytes, &url)?;
                    }
                    Err(e) => {
                        return Err(DerivativesError::Write {
                            path: desc_path,
                            reason: crate::os_error::describe_write(&e.error),
                        });
                    }
                }
            }
            Err(e) => {
                return Err(DerivativesError::Write {
                    path: desc_path,
                    reason: format!(
                        "{}; it must be a readable regular file",
                        crate::input::reason(&e)
                    ),
                });
            }
        }
        ds.write_text_if_changed(&root.join(".bidsignore"), BIDSIGNORE)?;
        ds.write_text_if_changed(&root.join("README.md"), README)?;
        let logs = ds.logs_dir();
        create_dir_contained(&ds.resolved_root, &logs, &logs)?;
        Ok(ds)
    }

    fn check_existing_description(
        &self,
        path: &Path,
        bytes: &[u8],
        source_url: &str,
    ) -> Result<(), DerivativesError> {
        let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let name = v
            .get("GeneratedBy")
            .and_then(|g| g.get(0))
            .and_then(|g| g.get("Name"))
            .and_then(Value::as_str)
            .unwrap_or("an unknown tool (unreadable dataset_description.json)");
        if name != "hcld" {
            return Err(DerivativesError::ForeignDataset {
                path: path.to_path_buf(),
                pipeline: name.to_string(),
            });
        }
        // The same OUTPUT_DIR reached from another mount point (containers) is fine; a different
        // dataset name would mix two datasets' outputs, worth a word.
        let recorded = v
            .get("SourceDatasets")
            .and_then(|s| s.get(0))
            .and_then(|s| s.get("URL"))
            .and_then(Value::as_str);
        if let Some(r) = recorded
            && r != source_url
        {
            tracing::warn!(
                "{}: OUTPUT_DIR was made from {r}, this run reads {source_url}; outputs of both land together",
                path.display()
            );
        }
        Ok(())
    }

    /// The dataset root (OUTPUT_DIR).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where run logs go (`OUTPUT_DIR/logs`, listed in `.bidsignore`).
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Creates this run's log file, `logs/hcld_<level>_<UTC time>_<random>.log`: a new file every
    /// time (never truncating another job's log, even for jobs started in the same second).
    pub fn create_log(&self, level: &str) -> Result<(PathBuf, File), DerivativesError> {
        let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let prefix = format!("hcld_{level}_{stamp}_");
        let logs = self.logs_dir();
        // Created with O_EXCL under a fresh name, so only the folder can lead elsewhere.
        create_dir_contained(&self.resolved_root, &logs, &logs)?;
        let mut b = temp_builder();
        b.prefix(&prefix).suffix(".log").rand_bytes(6);
        let file = b
            .tempfile_in(&logs)
            .map_err(|e| DerivativesError::CannotCreate {
                path: logs.clone(),
                source: e,
            })?;
        let (file, path) = file.keep().map_err(|e| DerivativesError::CannotCreate {
            path: logs,
            source: e.error,
        })?;
        Ok((path, file))
    }

    /// Absolute path of a named output.
    pub fn path(&self, name: &DerivativeName) -> Result<PathBuf, DerivativesError> {
        Ok(self.root.join(name.rel_path()?))
    }

    /// Where a QC figure of subject `subject` goes: `sub-<subject>/figures/<file_name>` (the
    /// fMRIPrep layout; `figures` is listed in `.bidsignore`). `file_name` must be a plain name.
    pub fn figure_path(&self, subject: &str, file_name: &str) -> Result<PathBuf, DerivativesError> {
        let plain = !file_name.is_empty()
            && !file_name.starts_with('.')
            && !file_name.contains(['/', '\\'])
            && crate::bids::is_label(subject);
        if !plain {
            return Err(DerivativesError::Naming {
                name: format!("sub-{subject}/figures/{file_name}"),
                reason: "figure names must be plain file names under a valid subject".into(),
            });
        }
        Ok(self
            .root
            .join(format!("sub-{subject}"))
            .join("figures")
            .join(file_name))
    }

    /// Writes bytes atomically (figures), creating the folder.
    pub fn write_bytes(&self, path: &Path, bytes: &[u8]) -> Result<(), DerivativesError> {
        write_contained(&self.resolved_root, path, |tmp| {
            std::fs::write(tmp, bytes).map_err(|e| crate::os_error::describe_write(&e))
        })
    }

    /// Takes the exclusive lock for the outputs of one source file, waiting while another process
    /// (or thread) holds it. Locks live in `OUTPUT_DIR/.hcld/locks/`.
    pub fn lock(&self, name: &DerivativeName) -> Result<OutputLock, DerivativesError> {
        self.lock_key(&name.source_key())
    }

    /// Takes a lock on a dataset-level resource (a model's cached target, the group report),
    /// waiting while another process holds it. `key` must be a plain file name.
    pub fn lock_named(&self, key: &str) -> Result<OutputLock, DerivativesError> {
        self.lock_key(&format!("_{key}"))
    }

    /// `OUTPUT_DIR/models`: model artefacts, Nyúl landmarks and cached targets (in `.bidsignore`).
    pub fn models(&self) -> ModelStore<'_> {
        ModelStore::new(self)
    }

    /// A report at the root of OUTPUT_DIR (`sub-<L>.html`, `group.html`), written atomically.
    pub fn write_report(&self, file_name: &str, html: &str) -> Result<PathBuf, DerivativesError> {
        if file_name.contains('/') || !file_name.ends_with(".html") {
            return Err(DerivativesError::Naming {
                name: file_name.to_string(),
                reason: "a report is an .html file at the root of OUTPUT_DIR".into(),
            });
        }
        let path = self.root.join(file_name);
        self.write_text_if_changed(&path, html)?;
        Ok(path)
    }

    /// Takes the lock named `key` (a file in `OUTPUT_DIR/.hcld/locks/`), waiting for it.
    fn lock_key(&self, key: &str) -> Result<OutputLock, DerivativesError> {
        let dir = self.root.join(".hcld").join("locks");
        let path = dir.join(format!("{key}.lock"));
        create_dir_contained(&self.resolved_root, &dir, &path)?;
        // A lock file is opened, not replaced: a symbolic link planted in its place would be
        // followed (and its target created), so one is refused.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            let resolved = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            return Err(DerivativesError::OutsideOutputDir {
                path,
                resolved,
                root: self.resolved_root.clone(),
            });
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DerivativesError::CannotCreate {
                path: path.clone(),
                source: e,
            })?;
        let cannot_lock = |e: std::io::Error| DerivativesError::Write {
            path: path.clone(),
            reason: format!("cannot lock: {}", crate::os_error::describe_write(&e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // Said once, so a job waiting on another (or on a stopped one: `kill -CONT` it or
                // let it end) is not silent.
                tracing::info!(
                    "waiting for {}: another hcld job holds it (the same outputs, or a model or target being made); this job goes on when that one finishes",
                    path.display()
                );
                file.lock().map_err(cannot_lock)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(cannot_lock(e)),
        }
        Ok(OutputLock { _file: file })
    }

    /// Reads the sidecar of a named output, if it exists and parses.
    pub fn read_sidecar(&self, name: &DerivativeName) -> Option<Map<String, Value>> {
        let p = self.path(&name.with_extension(".json")).ok()?;
        match serde_json::from_slice(
            &crate::input::read_regular(&p, crate::input::TEXT_LIMIT).ok()?,
        )
        .ok()?
        {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// Writes an image and then its sidecar, each atomically. The sidecar is written last, so a
    /// sidecar on disk means its image is complete. A `res-` entity requires a `Resolution` field.
    pub fn write_image(
        &self,
        name: &DerivativeName,
        volume: &Volume,
        dtype: OutputDtype,
        code: XformCode,
        sidecar: &Sidecar,
    ) -> Result<PathBuf, DerivativesError> {
        if name.entity(Entity::Resolution).is_some() && sidecar.get("Resolution").is_none() {
            return Err(DerivativesError::Naming {
                name: format!("{name:?}"),
                reason: "res- is used but the sidecar has no Resolution field".into(),
            });
        }
        let image_path = self.path(name)?;
        let json_path = self.path(&name.with_extension(".json"))?;
        let descrip = format!("hcld {}", crate::VERSION);
        write_contained(&self.resolved_root, &image_path, |tmp| {
            // The reason alone: the temporary's name in the message would only confuse.
            write_nifti(tmp, volume, dtype, code, &descrip).map_err(|e| match e {
                VolumeError::Write { reason, .. } => reason,
                other => other.to_string(),
            })
        })?;
        self.write_text_if_changed(&json_path, &pretty(&Value::Object(sidecar.fields.clone())))?;
        Ok(image_path)
    }

    /// Writes a text file atomically unless it already has exactly this content (re-runs keep
    /// mtimes, and N jobs writing the same content never clash).
    pub fn write_text_if_changed(&self, path: &Path, text: &str) -> Result<(), DerivativesError> {
        if crate::input::read_regular(path, crate::input::TEXT_LIMIT.max(text.len() as u64))
            .is_ok_and(|b| b == text.as_bytes())
        {
            return Ok(());
        }
        write_contained(&self.resolved_root, path, |tmp| {
            std::fs::write(tmp, text).map_err(|e| crate::os_error::describe_write(&e))
        })
    }

    /// Removes temporary files left by killed runs for the outputs of `name`'s source. Call only
    /// while holding that source's lock: temporaries of other sources (another run of the same
    /// subject, written concurrently) are never touched.
    pub fn remove_stale_temporaries(&self, name: &DerivativeName) {
        let Ok(path) = self.path(name) else { return };
        let prefix = format!("{}_", name.source_key());
        if let Some(dir) = path.parent() {
            remove_temporaries_in(dir, &prefix);
        }
        // QC figures live in `sub-<L>/figures/` under the same source prefix.
        if let Some(subject) = name.entity(Entity::Subject) {
            remove_temporaries_in(
                &self.root.join(format!("sub-{subject}")).join("figures"),
                &prefix,
            );
        }
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// `file://` URL of an absolute path.
fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bids::BidsFile;

    fn source() -> SourceDataset {
        SourceDataset {
            root: PathBuf::from("/data/bids"),
            name: "test".into(),
        }
    }

    #[test]
    fn description_is_created_once_and_foreign_datasets_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        DerivativesDataset::open(&out, &source()).unwrap();
        let first = std::fs::read(out.join("dataset_description.json")).unwrap();
        DerivativesDataset::open(&out, &source()).unwrap();
        assert_eq!(
            std::fs::read(out.join("dataset_description.json")).unwrap(),
            first
        );
        let v: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(v["DatasetType"], "derivative");
        assert_eq!(v["GeneratedBy"][0]["Name"], "hcld");
        std::fs::write(
            out.join("dataset_description.json"),
            r#"{"GeneratedBy":[{"Name":"fMRIPrep"}]}"#,
        )
        .unwrap();
        let e = DerivativesDataset::open(&out, &source()).unwrap_err();
        assert!(matches!(e, DerivativesError::ForeignDataset { .. }), "{e}");
    }

    #[test]
    fn concurrent_opens_agree() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| DerivativesDataset::open(&out, &source()).unwrap());
            }
        });
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty());
        let v: Value =
            serde_json::from_slice(&std::fs::read(out.join("dataset_description.json")).unwrap())
                .unwrap();
        assert_eq!(v["Name"], "hcld derivatives of test");
    }

    #[test]
    fn stale_temporaries_of_other_sources_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let ds = DerivativesDataset::open(d.path(), &source()).unwrap();
        let anat = d.path().join("sub-01/anat");
        std::fs::create_dir_all(&anat).unwrap();
        let mine = anat.join(".hcldtmp-AbC123xyz0-sub-01_run-1_desc-preproc_T1w.nii.gz");
        let other_run = anat.join(".hcldtmp-QwE456rty0-sub-01_run-10_desc-preproc_T1w.nii.gz");
        let unrelated = anat.join("sub-01_run-1_desc-preproc_T1w.json");
        for p in [&mine, &other_run, &unrelated] {
            std::fs::write(p, "x").unwrap();
        }
        let src = BidsFile::from_rel("sub-01/anat/sub-01_run-1_T1w.nii.gz".into(), false);
        let name = DerivativeName::from_source(&src, "T1w", ".nii.gz")
            .with(Entity::Description, "preproc");
        ds.remove_stale_temporaries(&name);
        assert!(!mine.exists() && other_run.exists() && unrelated.exists());
    }

    #[test]
    fn failed_writes_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x.json");
        let root = std::fs::canonicalize(d.path()).unwrap();
        let r = write_contained(&root, &dest, |tmp| {
            std::fs::write(tmp, "partial").unwrap();
            Err("boom".into())
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_in_output_dir_never_lead_outside() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let elsewhere = d.path().join("bids").join("sub-01");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let ds = DerivativesDataset::open(&out, &source()).unwrap();
        // A planted link: OUTPUT_DIR/sub-01 -> the BIDS subject folder.
        std::os::unix::fs::symlink(&elsewhere, out.join("sub-01")).unwrap();
        for path in [
            out.join("sub-01").join("x.json"),
            out.join("sub-01").join("anat").join("x.json"),
        ] {
            let e = ds.write_text_if_changed(&path, "{}").unwrap_err();
            let message = e.to_string();
            assert!(
                matches!(e, DerivativesError::OutsideOutputDir { .. })
                    && message.contains("outside OUTPUT_DIR")
                    && message.contains("remove the symbolic link"),
                "{message}"
            );
        }
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // Ordinary folders are still created and written.
        ds.write_text_if_changed(&out.join("sub-02").join("anat").join("x.json"), "{}")
            .unwrap();
    }

    #[test]
    fn image_and_sidecar_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let ds = DerivativesDataset::open(d.path(), &source()).unwrap();
        let src = BidsFile::from_rel("sub-01/anat/sub-01_T1w.nii.gz".into(), false);
        let name = DerivativeName::from_source(&src, "T1w", ".nii.gz")
            .with(Entity::Description, "preproc");
        let vol = Volume::new(
            [2, 3, 4],
            nalgebra::Matrix4::identity(),
            (0..24).map(|v| v as f32 * 0.5).collect(),
        )
        .unwrap();
        let sc = Sidecar::new("test", &[source_uri(src.rel_path())], false);
        let _lock = ds.lock(&name).unwrap();
        let p = ds
            .write_image(
                &name,
                &vol,
                OutputDtype::Float32,
                XformCode::ScannerAnat,
                &sc,
            )
            .unwrap();
        assert!(p.ends_with("sub-01/anat/sub-01_desc-preproc_T1w.nii.gz"));
        let (back, _) = crate::volume::read_nifti(&p).unwrap();
        assert_eq!(back.data(), vol.data());
        assert_eq!(
            ds.read_sidecar(&name).unwrap()["Sources"][0],
            "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
        );
        let res = name.clone().with(Entity::Resolution, "2");
        assert!(
            ds.write_image(&res, &vol, OutputDtype::Float32, XformCode::Mni152, &sc)
                .is_err()
        );
    }
}
