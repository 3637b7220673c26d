//! Harmonisation metrics as pure functions over intensities, features and volumes
//! (`../shared/design/evaluation.md`), one concern per file:
//! - [`distance`]: exact Wasserstein-1 between intensity samples, mean over site pairs;
//! - [`classify`]: leave-one-group-out site classifier (shrinkage LDA) with its chance interval, and age
//!   regressor (ridge);
//! - [`features`]: per-image histogram + tissue features, PCA for plots;
//! - [`image`]: gradient-magnitude correlation, 3D SSIM and PSNR inside a mask;
//! - [`tissue`]: 3-class GMM/MRF tissue segmentation and Dice;
//! - [`site`]: site effect of one method (W1 between sites, site-classifier accuracy) on a common scale;
//! - [`table`]: the per-method table as TSV and JSON.
//!
//! Nothing here reads BIDS or chooses paths: the pipeline gathers the images and writes the
//! table. Linear algebra through nalgebra.

pub mod classify;
pub mod distance;
pub mod features;
pub mod image;
pub mod site;
pub mod table;
pub mod tissue;

pub use classify::{
    RegressionScore, chance_interval, lda_logo_accuracy, regression_score, ridge_logo_predictions,
};
pub use distance::{mean_pairwise_w1, wasserstein1};
pub use features::{HISTOGRAM_BINS, histogram_features, image_features, pca_2d};
pub use image::{
    SsimOptions, fidelity, gaussian_filter, gaussian_filter_axes, gradient_correlation,
    gradient_magnitude, mask_interior, masked_correlation, masked_psnr, masked_ssim, ssim,
    ssim_map,
};
pub use site::{SiteEffect, SiteSample, index_labels, robust_range, site_effect};
pub use table::{MethodMetrics, MetricTable};
pub use tissue::{SegmentationOptions, TissueMixture, segment_tissues, tissue_dice, volume_change};

/// Reference values computed by `scripts/metrics_expected.py` (SciPy, scikit-image).
#[cfg(test)]
mod fixtures {
    pub fn expected() -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/metrics/expected.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("expected.json parses")
    }

    pub fn floats(v: &serde_json::Value) -> Vec<f32> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|x| x.as_f64().expect("a number") as f32)
            .collect()
    }
}
