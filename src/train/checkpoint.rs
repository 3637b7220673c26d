//! Checkpoints (modules, optimisers and the step, written every N optimiser steps so an
//! interrupted run resumes exactly) and the CSV loss curve of a stage.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::derivatives::{remove_temporaries, write_within};
use crate::model::config::HcldConfig;
use crate::model::storage::{StorageError, read, sha256_hex};

use super::data::*;

/// A stage's checkpoint folder: `state.json` plus one burnpack per module and optimiser.
#[derive(Clone)]
pub(crate) struct Checkpoint {
    pub(crate) dir: PathBuf,
    /// The folder writes must stay inside ([`super::TrainOptions::within`]).
    pub(crate) within: PathBuf,
    pub(crate) config_digest: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    pub(crate) step: usize,
    pub(crate) optimizer_steps: usize,
    pub(crate) config_digest: String,
    pub(crate) hcld_version: String,
}

impl Checkpoint {
    /// The checkpoint of `stage` under `options.checkpoint_dir`. Temporaries a killed run left
    /// there are removed (the caller holds the training lock, so no live writer owns one).
    pub(crate) fn new(
        options: &super::TrainOptions,
        stage: &str,
        config: &HcldConfig,
        extra: &str,
    ) -> Self {
        let json = serde_json::to_string(config).expect("config serialises");
        let dir = options.checkpoint_dir.join(stage);
        remove_temporaries(&dir);
        Checkpoint {
            within: options.within.clone(),
            dir,
            config_digest: sha256_hex(format!("{json}\n{extra}").as_bytes()),
        }
    }

    pub(crate) fn state(&self) -> Result<Option<CheckpointState>, TrainingError> {
        let p = self.dir.join("state.json");
        if !p.exists() {
            return Ok(None);
        }
        let state: CheckpointState =
            serde_json::from_slice(&read(&p)?).map_err(|e| TrainingError::Checkpoint {
                path: self.dir.clone(),
                message: format!("state.json is unreadable ({e})"),
            })?;
        if state.config_digest != self.config_digest {
            return Err(TrainingError::Checkpoint {
                path: self.dir.clone(),
                message: "it was made with a different configuration or training set".into(),
            });
        }
        Ok(Some(state))
    }

    pub(crate) fn load_module<M: Module>(&self, name: &str, module: M) -> Result<M, TrainingError> {
        let p = self.dir.join(format!("{name}.bpk"));
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(read(&p)?)).map_err(|e| {
            TrainingError::Checkpoint {
                path: p.clone(),
                message: e.to_string(),
            }
        })?;
        module
            .try_load_record(record)
            .map_err(|e| TrainingError::Checkpoint {
                path: p,
                message: e.to_string(),
            })
    }

    pub(crate) fn load_optimizer(
        &self,
        name: &str,
        optim: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, TrainingError> {
        let p = self.dir.join(format!("{name}.bpk"));
        optim
            .from_bytes(Bytes::from_bytes_vec(read(&p)?))
            .map_err(|e| TrainingError::Checkpoint {
                path: p,
                message: e.to_string(),
            })
    }

    /// Writes modules and optimisers first and `state.json` last, so a checkpoint is only
    /// visible once all its parts are in place.
    pub(crate) fn save(
        &self,
        step: usize,
        optimizer_steps: usize,
        modules: Vec<(&str, ModuleRecord)>,
        optimizers: Vec<(&str, &ModuleOptimizer)>,
    ) -> Result<(), TrainingError> {
        let fail = |p: &Path, e: String| TrainingError::Checkpoint {
            path: p.to_path_buf(),
            message: e,
        };
        for (name, record) in modules {
            let p = self.dir.join(format!("{name}.bpk"));
            let bytes = record.into_bytes().map_err(|e| fail(&p, e.to_string()))?;
            write_within(&self.within, &p, &bytes)?;
        }
        for (name, optim) in optimizers {
            let p = self.dir.join(format!("{name}.bpk"));
            let bytes = optim.into_bytes().map_err(|e| fail(&p, e.to_string()))?;
            write_within(&self.within, &p, &bytes)?;
        }
        let state = CheckpointState {
            step,
            optimizer_steps,
            config_digest: self.config_digest.clone(),
            hcld_version: crate::VERSION.into(),
        };
        write_within(
            &self.within,
            &self.dir.join("state.json"),
            serde_json::to_string_pretty(&state)
                .expect("serialises")
                .as_bytes(),
        )?;
        Ok(())
    }
}

/// The loss curve of a stage: `loss.csv` with one row per forward pass. Rows past the last
/// checkpoint are dropped on resume, so the curve never repeats a step.
#[derive(Clone)]
pub(crate) struct Curve {
    pub(crate) path: PathBuf,
    /// The folder writes must stay inside.
    pub(crate) within: PathBuf,
    pub(crate) columns: Vec<&'static str>,
    pub(crate) rows: Vec<Vec<f64>>,
}

impl Curve {
    /// The curve `dir/loss.csv` (written inside `within`), keeping the rows up to `keep_until`.
    pub(crate) fn open(
        dir: &Path,
        within: &Path,
        columns: Vec<&'static str>,
        keep_until: usize,
    ) -> Self {
        let path = dir.join("loss.csv");
        let mut rows = Vec::new();
        if let Ok(mut r) = csv::Reader::from_path(&path) {
            for rec in r.records().flatten() {
                let row: Vec<f64> = rec.iter().filter_map(|v| v.parse().ok()).collect();
                if row.len() == columns.len() && (row[0] as usize) <= keep_until {
                    rows.push(row);
                }
            }
        }
        Curve {
            path,
            within: within.to_path_buf(),
            columns,
            rows,
        }
    }

    /// Adds a row as the file stores it (losses to 7 significant digits), so the summary of a
    /// run resumed from the file equals that of an uninterrupted one.
    pub(crate) fn push(&mut self, row: Vec<f64>) {
        debug_assert_eq!(row.len(), self.columns.len());
        let row = row
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i < 2 { v } else { Self::stored(v) })
            .collect();
        self.rows.push(row);
    }

    /// A loss as written to the CSV and read back.
    pub(crate) fn stored(v: f64) -> f64 {
        format!("{v:.6e}").parse().unwrap_or(v)
    }

    /// Rewrites the file atomically (called with each checkpoint and at the end).
    pub(crate) fn save(&self) -> Result<(), TrainingError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let fail = |e: csv::Error| StorageError::new(&self.path, e.to_string());
        w.write_record(&self.columns).map_err(fail)?;
        for row in &self.rows {
            let fields: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if i < 2 {
                        format!("{v}")
                    } else {
                        format!("{v:.6e}")
                    }
                })
                .collect();
            w.write_record(&fields).map_err(fail)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| StorageError::new(&self.path, e.to_string()))?;
        write_within(&self.within, &self.path, &bytes)?;
        Ok(())
    }

    /// Mean total loss (column 2) of the first and last 10 % of rows.
    pub(crate) fn first_last(&self) -> (f64, f64) {
        let n = self.rows.len();
        if n == 0 {
            return (f64::NAN, f64::NAN);
        }
        let k = (n / 10).max(1);
        let mean = |rows: &[Vec<f64>]| rows.iter().map(|r| r[2]).sum::<f64>() / rows.len() as f64;
        (mean(&self.rows[..k]), mean(&self.rows[n - k..]))
    }
}
