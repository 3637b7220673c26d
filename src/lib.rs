//! hcld: a BIDS-App that harmonises T1-weighted MRI across scanners and sites.
//!
//! The binary (`src/main.rs`) is thin: it parses the command line with [`cli`], hands the
//! validated [`settings::Settings`] to [`pipeline::run`], and maps the outcome to an exit code.
//! Dependencies point one way (no two files import each other, a `mod.rs` and its own files
//! aside):
//! `cli → pipeline → methods → {train → model, derivatives, preprocess, report, metrics} →
//! {bids, volume} → input`, with [`settings`] read by all below `cli`.
//!
//! - [`cli`] turns arguments into [`settings::Settings`] (typed, grouped by concern).
//! - [`settings`] holds those settings and the exit-code table.
//! - [`logging`] sets up log lines, the log file and the progress bar.
//! - [`pipeline`] runs the participant and group levels and returns per-subject outcomes.
//! - [`methods`] holds each harmonisation method as a value: names, units, group fit, apply,
//!   sidecar provenance, report label.
//! - [`train`] trains the HCLD networks; [`model`] runs them (it never imports `train`).
//! - [`metrics`] holds pure evaluation functions; [`report`] renders QC figures and HTML.
//! - [`simulate`] renders real brains as a multi-site dataset with a traveling-subject ground truth.
//! - [`derivatives`] writes every byte under OUTPUT_DIR (names, sidecars, the model store) and owns
//!   the crate's one atomic writer.
//! - [`preprocess`] holds pure `Volume → Volume` steps (registration, bias correction, masks).
//! - [`bids`] indexes a BIDS dataset read-only; [`volume`] owns the image type and NIfTI I/O.
//! - [`input`] opens the files hcld is given: regular files only, with byte limits;
//!   [`os_error`] says what to do about an operating-system error.
#![deny(missing_docs)]

pub mod bids;
pub mod cli;
pub mod derivatives;
pub mod input;
pub mod logging;
pub mod methods;
pub mod metrics;
pub mod model;
pub mod os_error;
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
