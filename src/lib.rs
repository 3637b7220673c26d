//! hcld: a BIDS-App that harmonises T1-weighted MRI across scanners and sites.
//!
//! The binary (`src/main.rs`) is thin: it parses the command line with [`cli`], hands the
//! validated [`cli::Settings`] to [`pipeline::run`], and maps the outcome to an exit code.
//! Dependencies point one way:
//! `cli → pipeline → {bids, preprocess, model, report, derivatives} → volume`.
//!
//! - [`bids`] indexes a BIDS dataset read-only (entities, sidecars, tables, derivatives).
//! - [`volume`] owns the in-memory image type and every call into the `nifti` crate.
//! - [`preprocess`] holds pure `Volume → Volume` steps (registration, bias correction, masks).
//! - [`model`] holds the harmonisation model's pieces (schedule, sampler, burn modules).
//! - [`report`] renders QC figures.
//! - [`derivatives`] is the only writer into OUTPUT_DIR (names, sidecars, atomic writes).
//! - [`simulate`] renders real brains as a multi-site dataset with a traveling-subject ground truth.
//! - [`pipeline`] runs the participant and group levels and returns per-subject outcomes.
#![deny(missing_docs)]

pub mod bids;
pub mod cli;
pub mod derivatives;
pub mod logging;
pub mod methods;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod report;
pub mod settings;
pub mod simulate;
pub mod train;
pub mod volume;

/// The hcld version, as written into every sidecar and `dataset_description.json`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the source code lives (the `CodeURL` of `GeneratedBy`).
pub const CODE_URL: &str = env!("CARGO_PKG_REPOSITORY");
