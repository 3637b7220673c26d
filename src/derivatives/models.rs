//! `OUTPUT_DIR/models/`: where every fitted thing lives, with one typed path per kind of file.
//!
//! ```text
//! models/nyul.json                          Nyúl landmarks
//! models/hcld-<sha12>/{config.json, *.bpk}  an HCLD artefact (config last: it marks completion)
//! models/hcld-<sha12>/training/             inputs.json, <stage>_loss.csv
//! models/targets/hcld-<sha12>/site-<slug>.{json,f32}, image-<key16>.{json,f32}
//! ```
//!
//! Nothing else spells these paths under OUTPUT_DIR (`model::artefact` names the files inside an
//! artefact, and its folder when a model is saved elsewhere); writes go through the dataset's
//! contained atomic writer.

use std::path::{Path, PathBuf};

use super::{DerivativesDataset, DerivativesError};

/// The model store of one derivatives dataset.
#[derive(Debug, Clone, Copy)]
pub struct ModelStore<'a> {
    out: &'a DerivativesDataset,
}

/// The file that marks a folder as a complete HCLD artefact.
pub const ARTEFACT_CONFIG: &str = "config.json";

impl<'a> ModelStore<'a> {
    pub(super) fn new(out: &'a DerivativesDataset) -> Self {
        ModelStore { out }
    }

    /// `OUTPUT_DIR/models`.
    pub fn dir(&self) -> PathBuf {
        self.out.root().join("models")
    }

    /// The Nyúl landmarks the group level fits.
    pub fn nyul_landmarks(&self) -> PathBuf {
        self.dir().join("nyul.json")
    }

    /// The folder of the artefact whose SHA-256 is `sha`.
    pub fn artefact_dir(&self, sha: &str) -> PathBuf {
        self.dir().join(format!("hcld-{}", short(sha, 12)))
    }

    /// Every complete HCLD artefact folder (`hcld-*` with its config), sorted.
    pub fn artefacts(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("hcld-"))
                            && p.join(ARTEFACT_CONFIG).is_file()
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// What an artefact was trained on (`training/inputs.json`: the training key and images).
    pub fn training_inputs(&self, artefact: &Path) -> PathBuf {
        artefact.join("training").join("inputs.json")
    }

    /// The loss curve of one training stage of an artefact (`training/<stage>_loss.csv`).
    pub fn loss_curve(&self, artefact: &Path, stage: &str) -> PathBuf {
        artefact.join("training").join(format!("{stage}_loss.csv"))
    }

    /// Where the cached targets of a model live.
    pub fn targets_dir(&self, model_sha: &str) -> PathBuf {
        self.dir()
            .join("targets")
            .join(format!("hcld-{}", short(model_sha, 12)))
    }

    /// The cache stem (`.json` + `.f32`) of a site's target; `site_slug` is a file-name-safe
    /// form of the label.
    pub fn site_target(&self, model_sha: &str, site_slug: &str) -> PathBuf {
        self.targets_dir(model_sha)
            .join(format!("site-{site_slug}"))
    }

    /// The cache stem of a `--target-image`'s target, keyed by the image and its preprocessing.
    pub fn image_target(&self, model_sha: &str, key: &str) -> PathBuf {
        self.targets_dir(model_sha)
            .join(format!("image-{}", short(key, 16)))
    }

    /// Writes the files of one folder in order (the last marks the folder complete), each
    /// atomically, after removing the temporaries of these files a killed run left. Callers hold
    /// the lock under which these files are written, so no live writer owns such a temporary.
    pub fn write_files(&self, dir: &Path, files: &[(&str, &[u8])]) -> Result<(), DerivativesError> {
        for (name, _) in files {
            self.remove_temporaries(dir, name);
        }
        for (name, bytes) in files {
            self.out.write_bytes(&dir.join(name), bytes)?;
        }
        Ok(())
    }

    /// Removes the temporaries a killed run left in `dir` for files whose names start with
    /// `prefix` (`""`: all). Callers hold the lock under which those files are written, so no live
    /// writer owns one.
    pub fn remove_temporaries(&self, dir: &Path, prefix: &str) {
        super::atomic::remove_temporaries_in(dir, prefix);
    }

    /// `path` as sidecars record it: relative to OUTPUT_DIR when inside it (so outputs do not
    /// depend on where OUTPUT_DIR is mounted), absolute otherwise.
    pub fn shown_path(&self, path: &Path) -> String {
        let root = std::fs::canonicalize(self.out.root())
            .unwrap_or_else(|_| self.out.root().to_path_buf());
        let p = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        match p.strip_prefix(&root) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }
}

fn short(s: &str, n: usize) -> &str {
    &s[..n.min(s.len())]
}
