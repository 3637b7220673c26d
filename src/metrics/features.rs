//! Per-image feature vectors for the site and age predictors (`../shared/design/evaluation.md`:
//! a 64-bin normalised brain histogram, the tissue peak positions and the GM/WM contrast) and the
//! PCA that draws them.

use nalgebra::{DMatrix, DVector};

use super::tissue::fit_tissue_mixture;

/// A normalised histogram of `values` over `[lo, hi]` (`bins` bins summing to 1; values outside
/// are clamped into the end bins).
pub fn histogram_features(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let mut h = vec![0.0; bins];
    let span = (hi - lo).max(1e-12);
    for &v in values {
        if v.is_finite() {
            let b = (((v as f64 - lo) / span) * bins as f64).floor();
            h[(b.max(0.0) as usize).min(bins - 1)] += 1.0;
        }
    }
    let n: f64 = h.iter().sum();
    if n > 0.0 {
        h.iter_mut().for_each(|x| *x /= n);
    }
    h
}

/// Bins of the histogram part of [`image_features`].
pub const HISTOGRAM_BINS: usize = 64;

/// The feature vector of one image's brain intensities, on a method's common range `[lo, hi]`
/// (e.g. its pooled 1st–99th percentiles, so features compare across images):
/// - the 64-bin normalised histogram;
/// - the CSF, GM and WM peak positions of a 3-class Gaussian mixture, as fractions of `[lo, hi]`;
/// - the GM/WM contrast (μ_WM − μ_GM) / (μ_GM − μ_CSF), free of any affine intensity map;
/// - the three tissue fractions (the mixture weights: atrophy shows here);
/// - the three peak widths (class standard deviations as fractions of `[lo, hi]`: noise, blur).
///
/// When the mixture cannot be fitted (fewer than a few hundred distinct values), its 10 entries
/// are 0 so the vector keeps its length.
pub fn image_features(values: &[f32], lo: f64, hi: f64) -> Vec<f64> {
    let mut f = histogram_features(values, lo, hi, HISTOGRAM_BINS);
    let span = (hi - lo).max(1e-12);
    match fit_tissue_mixture(values) {
        Ok(m) => {
            f.extend(m.means.iter().map(|mu| (mu - lo) / span));
            f.push(m.contrast());
            f.extend(m.weights);
            // Peak widths: noise and blur are site effects too.
            f.extend(m.sds.iter().map(|sd| sd / span));
        }
        Err(_) => f.extend([0.0; 10]),
    }
    f
}

/// The first two principal-component scores of each row (centred; rows are observations).
pub fn pca_2d(features: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let n = features.len();
    if n == 0 {
        return Vec::new();
    }
    let d = features[0].len();
    let mut m = DMatrix::<f64>::from_fn(n, d, |i, j| features[i][j]);
    let mean = m.row_mean();
    for mut r in m.row_iter_mut() {
        r -= &mean;
    }
    if n < 2 {
        return vec![(0.0, 0.0); n];
    }
    let svd = m.clone().svd(false, true);
    let Some(vt) = svd.v_t else {
        return vec![(0.0, 0.0); n];
    };
    // Sort components by singular value (nalgebra does not promise an order).
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let comp = |k: usize| -> Option<DVector<f64>> {
        order.get(k).map(|&i| vt.row(i).transpose().into_owned())
    };
    let (c1, c2) = (comp(0), comp(1));
    (0..n)
        .map(|i| {
            let r = m.row(i).transpose();
            (
                c1.as_ref().map(|c| r.dot(c)).unwrap_or(0.0),
                c2.as_ref().map(|c| r.dot(c)).unwrap_or(0.0),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_main_axis() {
        let f: Vec<Vec<f64>> = (0..10)
            .map(|i| vec![i as f64, 2.0 * i as f64, 1.0])
            .collect();
        let p = pca_2d(&f);
        let spread1 = p.iter().map(|q| q.0.abs()).fold(0.0, f64::max);
        let spread2 = p.iter().map(|q| q.1.abs()).fold(0.0, f64::max);
        assert!(spread1 > 5.0 && spread2 < 1e-6, "{spread1} {spread2}");
    }

    #[test]
    fn histogram_sums_to_one_and_clamps() {
        let h = histogram_features(&[-1.0, 0.1, 0.5, 0.9, 2.0, f32::NAN], 0.0, 1.0, 4);
        assert_eq!(h.len(), 4);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(h, vec![0.4, 0.0, 0.2, 0.4]);
    }

    #[test]
    fn image_features_see_contrast_but_not_scale() {
        // Three tissues at 0.3 / 0.7 / 1.0 with a little spread.
        let tissue = |c: f32, w: f32, n: usize| -> Vec<f32> {
            let mut v = Vec::new();
            for (mu, frac) in [(c, 0.2), (0.7, 0.45), (w, 0.35)] {
                for i in 0..(frac * n as f64) as usize {
                    v.push(mu + 0.03 * (((i * 7919) % 1000) as f32 / 1000.0 - 0.5));
                }
            }
            v
        };
        let a = image_features(&tissue(0.3, 1.0, 20000), 0.0, 1.2);
        let scaled: Vec<f32> = tissue(0.3, 1.0, 20000)
            .iter()
            .map(|x| 3.0 * x + 5.0)
            .collect();
        let b = image_features(&scaled, 5.0, 8.6);
        assert_eq!(a.len(), HISTOGRAM_BINS + 10);
        // Contrast (0.3 / 0.4 = 0.75) and fractions are the same after an affine map.
        let c = HISTOGRAM_BINS + 3;
        assert!((a[c] - 0.75).abs() < 0.02, "{}", a[c]);
        for k in c..c + 4 {
            assert!((a[k] - b[k]).abs() < 1e-3, "{k}: {} {}", a[k], b[k]);
        }
        let low_contrast = image_features(&tissue(0.3, 0.85, 20000), 0.0, 1.2);
        assert!(low_contrast[c] < 0.5, "{}", low_contrast[c]);
    }
}
