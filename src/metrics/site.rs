//! How much site information a method's outputs still carry: the mean pairwise Wasserstein-1
//! between the sites' pooled brain intensities and the leave-one-group-out site-classifier
//! accuracy (a group: the images of one source scan, or of one subject), both computed on one common scale per method so that methods with other units
//! (z-scores, Nyúl's landmark scale, raw scanner units) compare.

use rayon::prelude::*;

use super::{lda_logo_accuracy, mean_pairwise_w1};

/// One image of a method: its brain intensities, site index and cross-validation group.
#[derive(Debug, Clone, Copy)]
pub struct SiteSample<'a> {
    /// Intensities inside the brain mask.
    pub values: &'a [f32],
    /// Index of the image's site.
    pub site: usize,
    /// Index of the image's cross-validation group: its source scan on simulated data (every
    /// subject made from one real scan shares its anatomy), else its subject. The images of a
    /// group are held out together.
    pub group: usize,
}

/// The site-effect figures of one method.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteEffect {
    /// The pooled 1st and 99th percentiles: the method's common scale, mapped to [0, 1].
    pub range: (f64, f64),
    /// Mean pairwise W1 between sites on that scale (NaN with fewer than two sites).
    pub mean_pairwise_w1: f64,
    /// Leave-one-group-out LDA accuracy on the per-image features (None when it cannot be
    /// estimated: one site, or fewer than two groups).
    pub site_accuracy: Option<f64>,
    /// Number of sites with at least one image.
    pub sites: usize,
    /// The classifier's per-image features, in the order of the samples (reused by other
    /// predictors, such as age).
    pub features: Vec<Vec<f64>>,
}

/// The 1st and 99th percentiles of the finite values (nearest rank), `(0, 1)` when none are.
pub fn robust_range(values: &[f32]) -> (f64, f64) {
    let mut s: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return (0.0, 1.0);
    }
    s.sort_by(f32::total_cmp);
    let at = |p: f64| s[(p * (s.len() - 1) as f64).round() as usize] as f64;
    (at(0.01), at(0.99))
}

/// Site effect of one method's images. `features(values, lo, hi)` gives the classifier's input
/// for one image on the common scale `[lo, hi]` (for example `histogram_features` or
/// `image_features`).
pub fn site_effect<F>(samples: &[SiteSample<'_>], features: F) -> SiteEffect
where
    F: Fn(&[f32], f64, f64) -> Vec<f64> + Sync,
{
    let pooled: Vec<f32> = samples
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .collect();
    let (lo, hi) = robust_range(&pooled);
    let span = (hi - lo).max(1e-9);
    let n_sites = samples.iter().map(|s| s.site + 1).max().unwrap_or(0);
    let mut per_site: Vec<Vec<f32>> = vec![Vec::new(); n_sites];
    for s in samples {
        per_site[s.site].extend(s.values.iter().map(|&x| ((x as f64 - lo) / span) as f32));
    }
    let groups: Vec<Vec<f32>> = per_site.into_iter().filter(|v| !v.is_empty()).collect();
    let feats: Vec<Vec<f64>> = samples
        .par_iter()
        .map(|s| features(s.values, lo, hi))
        .collect();
    let labels: Vec<usize> = samples.iter().map(|s| s.site).collect();
    let groups_of: Vec<usize> = samples.iter().map(|s| s.group).collect();
    SiteEffect {
        range: (lo, hi),
        mean_pairwise_w1: mean_pairwise_w1(&groups),
        site_accuracy: lda_logo_accuracy(&feats, &labels, &groups_of, None),
        sites: groups.len(),
        features: feats,
    }
}

/// Dense indices for labels: the sorted distinct labels and each item's index into them.
pub fn index_labels<S: AsRef<str>>(labels: &[S]) -> (Vec<String>, Vec<usize>) {
    let mut distinct: Vec<String> = labels.iter().map(|l| l.as_ref().to_string()).collect();
    distinct.sort();
    distinct.dedup();
    let index = labels
        .iter()
        .map(|l| {
            distinct
                .binary_search_by(|d| d.as_str().cmp(l.as_ref()))
                .unwrap_or(0)
        })
        .collect();
    (distinct, index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram_features;

    #[test]
    fn labels_are_indexed_in_sorted_order() {
        let (distinct, index) = index_labels(&["b", "a", "b", "c"]);
        assert_eq!(distinct, ["a", "b", "c"]);
        assert_eq!(index, [1, 0, 1, 2]);
    }

    #[test]
    fn robust_range_is_the_1st_and_99th_percentile() {
        let v: Vec<f32> = (0..=100).map(|i| i as f32).chain([f32::NAN]).collect();
        assert_eq!(robust_range(&v), (1.0, 99.0));
        assert_eq!(robust_range(&[]), (0.0, 1.0));
    }

    #[test]
    fn shifted_sites_are_found_and_identical_sites_are_not() {
        // 4 subjects per site, 2 sites; site 1 is site 0 shifted by a quarter of the range.
        let base: Vec<Vec<f32>> = (0..8)
            .map(|k| {
                (0..2000)
                    .map(|i| ((i * 7 + k * 13) % 1000) as f32)
                    .collect()
            })
            .collect();
        let shifted: Vec<Vec<f32>> = base
            .iter()
            .enumerate()
            .map(|(k, v)| {
                v.iter()
                    .map(|&x| if k % 2 == 1 { x + 250.0 } else { x })
                    .collect()
            })
            .collect();
        fn samples(vals: &[Vec<f32>]) -> Vec<SiteSample<'_>> {
            vals.iter()
                .enumerate()
                .map(|(k, v)| SiteSample {
                    values: v,
                    site: k % 2,
                    group: k,
                })
                .collect()
        }
        let hist = |v: &[f32], lo: f64, hi: f64| histogram_features(v, lo, hi, 32);
        let apart = site_effect(&samples(&shifted), hist);
        let same = site_effect(&samples(&base), hist);
        assert_eq!(apart.sites, 2);
        assert!(apart.mean_pairwise_w1 > 0.15, "{apart:?}");
        assert!(same.mean_pairwise_w1 < 0.01, "{same:?}");
        assert!(apart.site_accuracy.unwrap() > 0.99, "{apart:?}");
    }
}
