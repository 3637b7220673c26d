//! Harmonisation metrics as pure functions over intensities, features and volumes
//! (`../shared/design/evaluation.md`): site predictability (leave-one-subject-out accuracy of a
//! shrinkage LDA on histogram features), mean pairwise Wasserstein-1 distance between sites'
//! intensity distributions, gradient-magnitude correlation (anatomy kept), and the PCA used to
//! draw feature space. Linear algebra through nalgebra.

use nalgebra::{DMatrix, DVector};

use crate::volume::Volume;

/// Exact Wasserstein-1 distance between two empirical distributions (equal weights per sample):
/// ∫ |F_a(x) − F_b(x)| dx, integrated between consecutive values of the merged samples, as
/// SciPy's `wasserstein_distance` does.
pub fn wasserstein1(a: &[f32], b: &[f32]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let mut sa: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let mut sb: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    sa.sort_by(f64::total_cmp);
    sb.sort_by(f64::total_cmp);
    let mut all: Vec<f64> = sa.iter().chain(&sb).copied().collect();
    all.sort_by(f64::total_cmp);
    let (na, nb) = (sa.len() as f64, sb.len() as f64);
    let (mut ia, mut ib) = (0usize, 0usize);
    let mut total = 0.0;
    for w in all.windows(2) {
        let x = w[0];
        while ia < sa.len() && sa[ia] <= x {
            ia += 1;
        }
        while ib < sb.len() && sb[ib] <= x {
            ib += 1;
        }
        total += (ia as f64 / na - ib as f64 / nb).abs() * (w[1] - w[0]);
    }
    total
}

/// Mean Wasserstein-1 distance over every pair of groups (`NaN` with fewer than two).
pub fn mean_pairwise_w1(groups: &[Vec<f32>]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for i in 0..groups.len() {
        for j in i + 1..groups.len() {
            sum += wasserstein1(&groups[i], &groups[j]);
            n += 1;
        }
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

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

/// Leave-one-subject-out accuracy of a shrinkage linear discriminant predicting `labels` from
/// `features`: all images of a subject (`groups`) are held out together. The within-class
/// covariance is shrunk towards its mean variance (`shrinkage` 0–1; 0.5 suits a few dozen
/// images with 64 features). A held-out image whose class has no training image left counts as
/// wrong, as it must. `None` when there are fewer than two subjects or classes.
pub fn lda_loso_accuracy(
    features: &[Vec<f64>],
    labels: &[usize],
    groups: &[usize],
    shrinkage: f64,
) -> Option<f64> {
    let n = features.len();
    let classes = labels.iter().max()? + 1;
    let mut subjects: Vec<usize> = groups.to_vec();
    subjects.sort();
    subjects.dedup();
    if subjects.len() < 2 || classes < 2 || n == 0 {
        return None;
    }
    let mut correct = 0usize;
    for &held in &subjects {
        let train: Vec<usize> = (0..n).filter(|&i| groups[i] != held).collect();
        let test: Vec<usize> = (0..n).filter(|&i| groups[i] == held).collect();
        let model = Lda::fit(
            &train
                .iter()
                .map(|&i| features[i].as_slice())
                .collect::<Vec<_>>(),
            &train.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
            classes,
            shrinkage,
        );
        for &i in &test {
            if model.as_ref().and_then(|m| m.predict(&features[i])) == Some(labels[i]) {
                correct += 1;
            }
        }
    }
    Some(correct as f64 / n as f64)
}

/// A fitted shrinkage LDA.
struct Lda {
    means: Vec<Option<DVector<f64>>>,
    precision: DMatrix<f64>,
    log_priors: Vec<f64>,
}

impl Lda {
    fn fit(x: &[&[f64]], y: &[usize], classes: usize, shrinkage: f64) -> Option<Lda> {
        let d = x.first()?.len();
        let mut sums = vec![DVector::<f64>::zeros(d); classes];
        let mut counts = vec![0usize; classes];
        for (row, &c) in x.iter().zip(y) {
            sums[c] += DVector::from_column_slice(row);
            counts[c] += 1;
        }
        let means: Vec<Option<DVector<f64>>> = sums
            .into_iter()
            .zip(&counts)
            .map(|(s, &n)| (n > 0).then(|| s / n as f64))
            .collect();
        let mut cov = DMatrix::<f64>::zeros(d, d);
        for (row, &c) in x.iter().zip(y) {
            let m = means[c].as_ref()?;
            let r = DVector::from_column_slice(row) - m;
            cov += &r * r.transpose();
        }
        cov /= x.len().max(1) as f64;
        let mean_var = cov.trace() / d as f64;
        let floor = if mean_var > 0.0 { mean_var } else { 1e-6 };
        let shrunk =
            cov * (1.0 - shrinkage) + DMatrix::identity(d, d) * (shrinkage * floor + 1e-12);
        let precision = shrunk.try_inverse()?;
        let total: usize = counts.iter().sum();
        let log_priors = counts
            .iter()
            .map(|&n| ((n.max(1)) as f64 / total as f64).ln())
            .collect();
        Some(Lda {
            means,
            precision,
            log_priors,
        })
    }

    fn predict(&self, x: &[f64]) -> Option<usize> {
        let x = DVector::from_column_slice(x);
        let mut best: Option<(usize, f64)> = None;
        for (c, m) in self.means.iter().enumerate() {
            let Some(m) = m else { continue };
            let pm = &self.precision * m;
            let score = x.dot(&pm) - 0.5 * m.dot(&pm) + self.log_priors[c];
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((c, score));
            }
        }
        best.map(|b| b.0)
    }
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

/// Gradient magnitude (central differences in voxel units) of a volume.
pub fn gradient_magnitude(v: &Volume) -> Vec<f32> {
    let [nx, ny, nz] = v.dims();
    let d = v.data();
    let at = |x: usize, y: usize, z: usize| d[x + nx * (y + ny * z)];
    let mut out = vec![0.0f32; d.len()];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let g = |a: f32, b: f32, span: f32| (a - b) / span;
                let gx = g(
                    at((x + 1).min(nx - 1), y, z),
                    at(x.saturating_sub(1), y, z),
                    2.0,
                );
                let gy = g(
                    at(x, (y + 1).min(ny - 1), z),
                    at(x, y.saturating_sub(1), z),
                    2.0,
                );
                let gz = g(
                    at(x, y, (z + 1).min(nz - 1)),
                    at(x, y, z.saturating_sub(1)),
                    2.0,
                );
                out[x + nx * (y + ny * z)] = (gx * gx + gy * gy + gz * gz).sqrt();
            }
        }
    }
    out
}

/// Pearson correlation of two value lists over the voxels where `mask` is true.
pub fn masked_correlation(a: &[f32], b: &[f32], mask: &[bool]) -> f64 {
    let (mut n, mut sa, mut sb) = (0.0, 0.0, 0.0);
    for ((&x, &y), &m) in a.iter().zip(b).zip(mask) {
        if m {
            n += 1.0;
            sa += x as f64;
            sb += y as f64;
        }
    }
    if n < 2.0 {
        return f64::NAN;
    }
    let (ma, mb) = (sa / n, sb / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for ((&x, &y), &m) in a.iter().zip(b).zip(mask) {
        if m {
            let (dx, dy) = (x as f64 - ma, y as f64 - mb);
            sab += dx * dy;
            saa += dx * dx;
            sbb += dy * dy;
        }
    }
    sab / (saa * sbb).sqrt()
}

/// Correlation of the gradient-magnitude maps of `source` and `harmonised` inside `mask` (the
/// brain): 1 when the edges (anatomy) are where they were, whatever the intensity scale.
pub fn gradient_correlation(source: &Volume, harmonised: &Volume, mask: &[bool]) -> f64 {
    masked_correlation(
        &gradient_magnitude(source),
        &gradient_magnitude(harmonised),
        mask,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasserstein_of_shifted_samples_is_the_shift() {
        let a: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let b: Vec<f32> = a.iter().map(|v| v + 0.25).collect();
        assert!((wasserstein1(&a, &b) - 0.25).abs() < 1e-6);
        assert_eq!(wasserstein1(&a, &a), 0.0);
        // SciPy 1.x (scipy.stats.wasserstein_distance, checked in the ANTsPy venv):
        // ([0, 1, 3], [5, 6, 8]) = 5.0; ([0, 1], [0, 0, 4]) = 1.1666666666666665
        assert!((wasserstein1(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]) - 5.0).abs() < 1e-9);
        assert!((wasserstein1(&[0.0, 1.0], &[0.0, 0.0, 4.0]) - 1.1666666666666665).abs() < 1e-9);
        assert!((mean_pairwise_w1(&[a.clone(), b.clone(), a.clone()]) - 0.5 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn lda_separates_separable_sites_and_not_identical_ones() {
        // 12 subjects, 3 sites; features = a site-dependent shift + subject noise.
        let mut state = 12345u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let (mut f, mut lab, mut grp, mut same) = (vec![], vec![], vec![], vec![]);
        for s in 0..24 {
            let site = s % 3;
            let noise: Vec<f64> = (0..8).map(|_| rnd() * 0.2).collect();
            f.push(
                noise
                    .iter()
                    .enumerate()
                    .map(|(j, v)| v + if j == site { 1.0 } else { 0.0 })
                    .collect::<Vec<_>>(),
            );
            same.push(noise);
            lab.push(site);
            grp.push(s);
        }
        let sep = lda_loso_accuracy(&f, &lab, &grp, 0.5).unwrap();
        let chance = lda_loso_accuracy(&same, &lab, &grp, 0.5).unwrap();
        assert!(sep > 0.95, "{sep}");
        assert!(chance < 0.6, "{chance}");
    }

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
    fn gradient_correlation_ignores_intensity_scale() {
        let n = 12;
        let mut a = nalgebra::Matrix4::identity();
        a[(3, 3)] = 1.0;
        let data: Vec<f32> = (0..n * n * n)
            .map(|i| ((i % n) as f32 * 0.7).sin() + (i / (n * n)) as f32 * 0.1)
            .collect();
        let v = Volume::new([n, n, n], a, data.clone()).unwrap();
        let w = v
            .with_data(data.iter().map(|x| 3.0 * x + 1.0).collect())
            .unwrap();
        let mask = vec![true; n * n * n];
        assert!((gradient_correlation(&v, &w, &mask) - 1.0).abs() < 1e-6);
    }
}
