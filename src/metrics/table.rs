//! The harmonisation metric table: one row per method, written as TSV (BIDS tabular style,
//! `n/a` for missing values) and JSON (`null`), with a description of every column.

use serde::Serialize;

/// One method's metrics (`None` when it does not apply: no ground truth, no ages, too few
/// subjects).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodMetrics {
    /// `none`, `zscore`, `whitestripe`, `nyul` or `hcld`.
    pub method: String,
    /// Images with an output of this method.
    pub images: usize,
    /// Sites among them.
    pub sites: usize,
    /// Leave-one-subject-out site-classifier accuracy (lower is better).
    pub site_accuracy: Option<f64>,
    /// Its chance level: 1 / sites.
    pub site_chance: Option<f64>,
    /// Mean pairwise Wasserstein-1 distance between sites (lower is better).
    pub mean_pairwise_w1: Option<f64>,
    /// Mean gradient-magnitude correlation with the preprocessed image (higher is better).
    pub gradient_correlation: Option<f64>,
    /// Mean CSF/GM/WM Dice against the segmentation of the preprocessed image (higher is better).
    pub tissue_dice_vs_source: Option<f64>,
    /// Images scored against a traveling-subject ground truth.
    pub ground_truth_images: usize,
    /// Mean SSIM against the ground truth at the target site (higher is better).
    pub ssim: Option<f64>,
    /// Mean PSNR (dB) against the ground truth (higher is better).
    pub psnr: Option<f64>,
    /// Mean CSF/GM/WM Dice against the ground truth's segmentation (higher is better).
    pub tissue_dice: Option<f64>,
    /// Correlation of leave-one-subject-out age predictions with the ages (should not drop).
    pub age_r: Option<f64>,
    /// Their mean absolute error (years).
    pub age_mae: Option<f64>,
}

/// Every column: (name, description), in the order of [`MethodMetrics`].
pub const COLUMNS: &[(&str, &str)] = &[
    ("method", "Harmonisation method."),
    ("images", "Images with an output of this method."),
    ("sites", "Sites among those images."),
    (
        "site_accuracy",
        "Leave-one-subject-out accuracy of a shrinkage LDA predicting the site from each image's brain histogram (64 bins), tissue peaks, GM/WM contrast and tissue fractions. Lower is better.",
    ),
    ("site_chance", "Chance level of site_accuracy: 1 / sites."),
    (
        "mean_pairwise_w1",
        "Mean pairwise Wasserstein-1 distance between the sites' pooled brain intensities, in units of the method's pooled 1st-99th percentile range. Lower is better.",
    ),
    (
        "gradient_correlation",
        "Mean correlation of gradient-magnitude maps of the preprocessed and the harmonised image inside the brain. Higher is better.",
    ),
    (
        "tissue_dice_vs_source",
        "Mean CSF/GM/WM Dice between 3-class GMM-MRF segmentations of the harmonised and the preprocessed image. Higher is better.",
    ),
    (
        "ground_truth_images",
        "Images from another site than the target with a traveling-subject ground truth at the target site.",
    ),
    (
        "ssim",
        "Mean 3D SSIM (Gaussian window sigma 1.5 voxels) inside the brain between the harmonised image and the ground truth at the target site in the method's units. Higher is better.",
    ),
    (
        "psnr",
        "Mean PSNR (dB) inside the brain against the same ground truth, peak = its intensity range. Higher is better.",
    ),
    (
        "tissue_dice",
        "Mean CSF/GM/WM Dice between segmentations of the harmonised image and of the ground truth. Higher is better.",
    ),
    (
        "age_r",
        "Correlation of leave-one-subject-out ridge-regression age predictions (same features) with the ages. Should not drop after harmonisation.",
    ),
    (
        "age_mae",
        "Mean absolute error of those predictions (years).",
    ),
];

impl MethodMetrics {
    /// An empty row for `method`.
    pub fn new(method: &str) -> MethodMetrics {
        MethodMetrics {
            method: method.to_string(),
            images: 0,
            sites: 0,
            site_accuracy: None,
            site_chance: None,
            mean_pairwise_w1: None,
            gradient_correlation: None,
            tissue_dice_vs_source: None,
            ground_truth_images: 0,
            ssim: None,
            psnr: None,
            tissue_dice: None,
            age_r: None,
            age_mae: None,
        }
    }

    /// The row as text cells in [`COLUMNS`] order (`n/a` for missing values).
    pub fn cells(&self) -> Vec<String> {
        let f = |v: Option<f64>, digits: usize| match v {
            Some(x) if x.is_finite() => format!("{x:.digits$}"),
            Some(x) if x == f64::INFINITY => "inf".into(),
            _ => "n/a".into(),
        };
        vec![
            self.method.clone(),
            self.images.to_string(),
            self.sites.to_string(),
            f(self.site_accuracy, 3),
            f(self.site_chance, 3),
            f(self.mean_pairwise_w1, 4),
            f(self.gradient_correlation, 4),
            f(self.tissue_dice_vs_source, 4),
            self.ground_truth_images.to_string(),
            f(self.ssim, 4),
            f(self.psnr, 2),
            f(self.tissue_dice, 4),
            f(self.age_r, 3),
            f(self.age_mae, 2),
        ]
    }
}

/// The table with what it was computed on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricTable {
    /// Sites of the evaluated images.
    pub sites: Vec<String>,
    /// The site ground-truth metrics compare against, when there is a ground truth.
    pub target_site: Option<String>,
    /// Where the ground truth came from.
    pub ground_truth: Option<String>,
    /// One row per method with outputs.
    pub rows: Vec<MethodMetrics>,
}

impl MetricTable {
    /// Tab-separated values with a header row.
    pub fn to_tsv(&self) -> String {
        let mut w = csv::WriterBuilder::new()
            .delimiter(b'\t')
            .quote_style(csv::QuoteStyle::Never)
            .from_writer(Vec::new());
        // Writing into a Vec cannot fail.
        let _ = w.write_record(COLUMNS.iter().map(|c| c.0));
        for r in &self.rows {
            let _ = w.write_record(r.cells());
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    /// The BIDS-style JSON sidecar of the TSV: a description per column.
    pub fn tsv_sidecar(&self) -> String {
        let mut m = serde_json::Map::new();
        for (name, description) in COLUMNS {
            m.insert(
                name.to_string(),
                serde_json::json!({ "Description": description }),
            );
        }
        serde_json::to_string_pretty(&m).unwrap_or_default() + "\n"
    }

    /// The table, its context and the column descriptions as JSON (`null` for missing values).
    pub fn to_json(&self) -> String {
        let clean = |v: Option<f64>| v.filter(|x| x.is_finite());
        let rows: Vec<MethodMetrics> = self
            .rows
            .iter()
            .map(|r| MethodMetrics {
                site_accuracy: clean(r.site_accuracy),
                site_chance: clean(r.site_chance),
                mean_pairwise_w1: clean(r.mean_pairwise_w1),
                gradient_correlation: clean(r.gradient_correlation),
                tissue_dice_vs_source: clean(r.tissue_dice_vs_source),
                ssim: clean(r.ssim),
                psnr: clean(r.psnr),
                tissue_dice: clean(r.tissue_dice),
                age_r: clean(r.age_r),
                age_mae: clean(r.age_mae),
                ..r.clone()
            })
            .collect();
        let value = serde_json::json!({
            "sites": self.sites,
            "target_site": self.target_site,
            "ground_truth": self.ground_truth,
            "methods": rows,
            "columns": COLUMNS.iter().map(|(n, d)| serde_json::json!({"name": n, "description": d})).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_and_json_agree_on_missing_values() {
        let mut r = MethodMetrics::new("zscore");
        r.images = 4;
        r.site_accuracy = Some(0.5);
        r.psnr = Some(f64::NAN);
        let t = MetricTable {
            sites: vec!["A".into(), "B".into()],
            target_site: None,
            ground_truth: None,
            rows: vec![r],
        };
        let tsv = t.to_tsv();
        let lines: Vec<&str> = tsv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split('\t').count(), COLUMNS.len());
        assert!(
            lines[1].starts_with("zscore\t4\t0\t0.500\tn/a"),
            "{}",
            lines[1]
        );
        let j: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
        assert_eq!(j["methods"][0]["psnr"], serde_json::Value::Null);
        assert_eq!(j["methods"][0]["site_accuracy"], 0.5);
        let sidecar: serde_json::Value = serde_json::from_str(&t.tsv_sidecar()).unwrap();
        assert_eq!(sidecar.as_object().unwrap().len(), COLUMNS.len());
        assert_eq!(MethodMetrics::new("x").cells().len(), COLUMNS.len());
    }
}
