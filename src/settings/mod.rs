//! What a run is asked to do, validated and typed: the [`Settings`] the pipeline runs with,
//! grouped by concern ([`run`]: paths, selection, resources, preprocessing, model,
//! harmonisation) so that a function takes the group it needs, and the exit-code table
//! ([`ExitStatus`], from the BIDS execution spec) every typed error maps to. The command line
//! (`cli`) builds these values; the pipeline never sees the command line itself.

pub mod exit;
pub mod run;

pub use exit::{ExitStatus, SettingsError};
pub use run::{
    AnalysisLevel, DdimOverrides, Harmonisation, MAX_THREADS_PER_CPU, ModelSettings, Paths,
    Preprocessing, Resources, RunSettings, Selection, TargetSpec,
};

use crate::methods::Method;

/// Validated settings: the harmonisation methods asked for, and every other group (reached
/// through `Deref`, so `settings.paths.bids_dir` reads as it says).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Harmonisation methods, in report order, without duplicates.
    pub methods: Vec<Method>,
    /// The other groups.
    pub run: RunSettings,
}

impl std::ops::Deref for Settings {
    type Target = RunSettings;
    fn deref(&self) -> &RunSettings {
        &self.run
    }
}
