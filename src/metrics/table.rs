//! The harmonisation metric table: one row per method, written as TSV (BIDS tabular style,
//! `n/a` for missing values) and JSON (`null`), with a description of every column.

use serde::Serialize;

/// One method's metrics (`None` when it does not apply: no ground truth, no ages, too few
/// subjects).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodMetrics {
    /// A method's name (`crate::methods::Method`), or `hcld-recon` (the autoencoder round trip).
    pub method: String,
    /// Images with an output of this method.
    pub images: usize,
    /// Sites among them.
    pub sites: usize,
    /// What the site classifier holds out together: `source` (every subject made from one
    /// source scan) or `subject`.
    pub site_cv: Option<String>,
    /// Leave-one-group-out site-classifier accuracy (lower is better).
    pub site_accuracy: Option<f64>,
    /// Its chance level: 1 / sites.
    pub site_chance: Option<f64>,
    /// Lower end of the central 95 % binomial interval of accuracies reached by chance.
    pub site_chance_low: Option<f64>,
    /// Upper end of that interval: an accuracy at or below it shows no site effect.
    pub site_chance_high: Option<f64>,
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
    /// Mean absolute relative change (%) of the CSF, GM and WM volumes against the ground
    /// truth's segmentation (lower is better).
    pub volume_change: Option<f64>,
    /// Images compared with their own input: target-site images harmonised to their own site
    /// (methods with a target), or every image's autoencoder round trip (`hcld-recon`).
    pub identity_images: usize,
    /// Their mean SSIM with their own input (higher is better; 1 = unchanged).
    pub identity_ssim: Option<f64>,
    /// Correlation of held-out age predictions with the ages (should not drop).
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
        "site_cv",
        "What the site classifier's cross-validation holds out together: 'source' (leave-one-source-out: every simulated subject made from one real source scan, deformed twins included, so that anatomy and the source scanner's texture cannot name the site; from the simulation's manifest) or 'subject' (leave-one-subject-out, when no source is known).",
    ),
    (
        "site_accuracy",
        "Accuracy of a shrinkage LDA predicting the site from each image's brain histogram (64 bins) and its 3-class mixture's tissue peaks, GM/WM contrast, tissue fractions and peak widths (features standardised, Ledoit-Wolf shrinkage), each held-out group (site_cv) predicted by a model fitted on the others. Lower is better; read it against site_chance_low/high.",
    ),
    ("site_chance", "Chance level of site_accuracy: 1 / sites."),
    (
        "site_chance_low",
        "2.5th percentile of Binomial(images, site_chance) / images: the lower end of the accuracies a classifier reaches by chance.",
    ),
    (
        "site_chance_high",
        "97.5th percentile of Binomial(images, site_chance) / images: an accuracy at or below it does not show a site effect at the 95 % level.",
    ),
    (
        "mean_pairwise_w1",
        "Mean pairwise Wasserstein-1 distance between the sites' pooled brain intensities, in units of the method's pooled 1st-99th percentile range. Lower is better.",
    ),
    (
        "gradient_correlation",
        "Mean correlation of gradient-magnitude maps (central differences) of the preprocessed and the harmonised image inside the brain mask eroded by one voxel, where no difference reads the zero background (so an intensity offset is not mistaken for an anatomy change). Higher is better.",
    ),
    (
        "tissue_dice_vs_source",
        "Mean CSF/GM/WM Dice between 3-class GMM-MRF segmentations of the harmonised and the preprocessed image. Higher is better.",
    ),
    (
        "ground_truth_images",
        "Images from another site than the target with a reference of the same brain at the target site: the traveling-subject ground truth of a simulation (put through the image's own registration and brain mask), or on real data the same participant's image acquired at the target site (preprocessed with the image's registration when both share a voxel grid, else its own, compared where both brain masks agree).",
    ),
    (
        "ssim",
        "Mean 3D SSIM (Gaussian window sigma 1.5 voxels) inside the brain between the harmonised image and the reference at the target site, the reference in the method's units; both images go through one shared affine map sending the reference's brain range (min, max) to [0, 1], and SSIM uses a data range of 1, so a method's units or offset cannot change the score. Higher is better.",
    ),
    (
        "psnr",
        "Mean PSNR (dB) inside the brain against the same reference after the same shared map (peak 1 = the reference's brain range). Higher is better.",
    ),
    (
        "tissue_dice",
        "Mean CSF/GM/WM Dice between segmentations of the harmonised image and of the reference. Higher is better.",
    ),
    (
        "volume_change",
        "Mean absolute relative change (%) of the CSF, GM and WM volumes of the harmonised image's segmentation against the reference's: what a volumetric (VBM, FreeSurfer) analysis would see. Lower is better.",
    ),
    (
        "identity_images",
        "Images compared with their own input: for a method with a target (hcld), the target site's own images harmonised to their own site; for hcld-recon, every image (the autoencoder's round trip).",
    ),
    (
        "identity_ssim",
        "Mean SSIM (same shared map, the input's brain range) of those outputs with their own input: a target-site image should come back nearly unchanged, and the round trip's SSIM is the compression loss the harmonised images carry. Higher is better.",
    ),
    (
        "age_r",
        "Correlation of ridge-regression age predictions (same features, the same held-out groups as site_cv) with the ages. Should not drop after harmonisation.",
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
            site_cv: None,
            site_accuracy: None,
            site_chance: None,
            site_chance_low: None,
            site_chance_high: None,
            mean_pairwise_w1: None,
            gradient_correlation: None,
            tissue_dice_vs_source: None,
            ground_truth_images: 0,
            ssim: None,
            psnr: None,
            tissue_dice: None,
            volume_change: None,
            identity_images: 0,
            identity_ssim: None,
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
            self.site_cv.clone().unwrap_or_else(|| "n/a".into()),
            f(self.site_accuracy, 3),
            f(self.site_chance, 3),
            f(self.site_chance_low, 3),
            f(self.site_chance_high, 3),
            f(self.mean_pairwise_w1, 4),
            f(self.gradient_correlation, 4),
            f(self.tissue_dice_vs_source, 4),
            self.ground_truth_images.to_string(),
            f(self.ssim, 4),
            f(self.psnr, 2),
            f(self.tissue_dice, 4),
            f(self.volume_change, 2),
            self.identity_images.to_string(),
            f(self.identity_ssim, 4),
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
    /// Where the references came from (a simulation's ground truth, or traveling-subject pairs).
    pub ground_truth: Option<String>,
    /// What the site classifier holds out together (`source` or `subject`).
    pub site_cv: Option<String>,
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
                site_chance_low: clean(r.site_chance_low),
                site_chance_high: clean(r.site_chance_high),
                mean_pairwise_w1: clean(r.mean_pairwise_w1),
                gradient_correlation: clean(r.gradient_correlation),
                tissue_dice_vs_source: clean(r.tissue_dice_vs_source),
                ssim: clean(r.ssim),
                psnr: clean(r.psnr),
                tissue_dice: clean(r.tissue_dice),
                volume_change: clean(r.volume_change),
                identity_ssim: clean(r.identity_ssim),
                age_r: clean(r.age_r),
                age_mae: clean(r.age_mae),
                ..r.clone()
            })
            .collect();
        let value = serde_json::json!({
            "sites": self.sites,
            "target_site": self.target_site,
            "ground_truth": self.ground_truth,
            "site_cv": self.site_cv,
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
            site_cv: None,
            rows: vec![r],
        };
        let tsv = t.to_tsv();
        let lines: Vec<&str> = tsv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split('\t').count(), COLUMNS.len());
        assert!(
            lines[1].starts_with("zscore\t4\t0\tn/a\t0.500\tn/a"),
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
