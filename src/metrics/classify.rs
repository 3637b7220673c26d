//! Classifiers and regressors scored by leave-one-group-out cross-validation (a group is every
//! image made from one source scan on simulated data, one subject otherwise): a shrinkage linear
//! discriminant for site predictability, with the binomial interval of chance it must be read
//! against, and ridge regression for age predictability (`../shared/design/evaluation.md`).
//! Linear algebra through nalgebra.

use nalgebra::{DMatrix, DVector};

/// Leave-one-group-out accuracy of a shrinkage linear discriminant predicting `labels` from
/// `features`: all images of a group (`groups`: a source scan, or a subject) are held out
/// together, so that nothing the held-out images share with each other (anatomy, texture) can
/// help name their site. Each fold standardises the features by their pooled within-class
/// spread and shrinks their within-class covariance towards a scaled identity by
/// `shrinkage` (0–1), or by the Ledoit–Wolf estimate when `None` (similar to scikit-learn's
/// `LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")`, which estimates it per class
/// and averages; here it is estimated once on the pooled within-class residuals): a
/// few dozen images with ~75 features of very different scales need both. A held-out image whose
/// class has no training image left counts as wrong, as it must. `None` when there are fewer
/// than two groups or classes.
pub fn lda_logo_accuracy(
    features: &[Vec<f64>],
    labels: &[usize],
    groups: &[usize],
    shrinkage: Option<f64>,
) -> Option<f64> {
    let n = features.len();
    let classes = labels.iter().max()? + 1;
    let mut held_out: Vec<usize> = groups.to_vec();
    held_out.sort();
    held_out.dedup();
    if held_out.len() < 2 || classes < 2 || n == 0 {
        return None;
    }
    let mut correct = 0usize;
    for &held in &held_out {
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

/// The Ledoit–Wolf shrinkage intensity of the covariance of the rows of `z` (centred, n × p)
/// towards μ·I, μ its mean variance (Ledoit & Wolf 2004; scikit-learn's
/// `ledoit_wolf_shrinkage` without the centring).
fn ledoit_wolf_shrinkage(z: &DMatrix<f64>) -> f64 {
    let (n, p) = (z.nrows() as f64, z.ncols() as f64);
    if n < 1.0 || p < 1.0 {
        return 1.0;
    }
    let z2 = z.map(|v| v * v);
    let emp_trace: Vec<f64> = (0..z.ncols()).map(|j| z2.column(j).sum() / n).collect();
    let mu = emp_trace.iter().sum::<f64>() / p;
    let beta_sum = (z2.transpose() * &z2).sum();
    let delta_sum = (z.transpose() * z).map(|v| v * v).sum() / (n * n);
    let beta = (beta_sum / n - delta_sum) / (p * n);
    let delta = (delta_sum - 2.0 * mu * emp_trace.iter().sum::<f64>() + p * mu * mu) / p;
    let beta = beta.min(delta);
    if delta <= 0.0 { 1.0 } else { beta / delta }
}

/// A fitted shrinkage LDA on standardised features.
struct Lda {
    /// Per feature: 1 / its pooled within-class standard deviation (its total one when that is
    /// 0; 0 for a constant feature).
    inv_scale: DVector<f64>,
    means: Vec<Option<DVector<f64>>>,
    precision: DMatrix<f64>,
    log_priors: Vec<f64>,
}

impl Lda {
    fn fit(x: &[&[f64]], y: &[usize], classes: usize, shrinkage: Option<f64>) -> Option<Lda> {
        let d = x.first()?.len();
        let mut sums = vec![DVector::<f64>::zeros(d); classes];
        let mut counts = vec![0usize; classes];
        for (row, &c) in x.iter().zip(y) {
            sums[c] += DVector::from_column_slice(row);
            counts[c] += 1;
        }
        let raw_means: Vec<Option<DVector<f64>>> = sums
            .into_iter()
            .zip(&counts)
            .map(|(s, &n)| (n > 0).then(|| s / n as f64))
            .collect();
        // Each feature scaled by its pooled within-class standard deviation, so that features of
        // very different units weigh alike; a feature constant within every class but not
        // between classes (the most telling kind) has no within-class spread and is scaled by
        // its total spread instead; a constant feature drops out (scale 0).
        let n = x.len().max(1) as f64;
        let mut residuals = DMatrix::<f64>::zeros(x.len(), d);
        for (i, (row, &c)) in x.iter().zip(y).enumerate() {
            let m = raw_means[c].as_ref()?;
            for j in 0..d {
                residuals[(i, j)] = row[j] - m[j];
            }
        }
        let inv_scale = DVector::from_iterator(
            d,
            (0..d).map(|j| {
                let within = residuals.column(j).map(|v| v * v).sum() / n;
                let var = if within > 1e-24 {
                    within
                } else {
                    let mean = x.iter().map(|r| r[j]).sum::<f64>() / n;
                    x.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n
                };
                if var > 1e-24 { 1.0 / var.sqrt() } else { 0.0 }
            }),
        );
        for j in 0..d {
            let s = inv_scale[j];
            residuals.column_mut(j).iter_mut().for_each(|v| *v *= s);
        }
        let alpha = shrinkage
            .unwrap_or_else(|| ledoit_wolf_shrinkage(&residuals))
            .clamp(1e-3, 1.0);
        let cov = residuals.transpose() * &residuals / n;
        let mean_var = cov.trace() / d as f64;
        let floor = if mean_var > 0.0 { mean_var } else { 1.0 };
        let shrunk = cov * (1.0 - alpha) + DMatrix::identity(d, d) * (alpha * floor + 1e-12);
        let precision = shrunk.try_inverse()?;
        let total: usize = counts.iter().sum();
        let log_priors = counts
            .iter()
            .map(|&n| ((n.max(1)) as f64 / total as f64).ln())
            .collect();
        let means = raw_means
            .into_iter()
            .map(|m| m.map(|m| m.component_mul(&inv_scale)))
            .collect();
        Some(Lda {
            inv_scale,
            means,
            precision,
            log_priors,
        })
    }

    fn predict(&self, x: &[f64]) -> Option<usize> {
        let x = DVector::from_column_slice(x).component_mul(&self.inv_scale);
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

/// The central `level` (e.g. 0.95) interval of the accuracy a classifier reaches by chance on
/// `n` images when each is right with probability `p` (1/sites): the 2.5th and 97.5th
/// percentiles of Binomial(n, p) / n. An accuracy inside it does not show a site effect.
pub fn chance_interval(n: usize, p: f64, level: f64) -> (f64, f64) {
    if n == 0 || !(0.0..=1.0).contains(&p) {
        return (f64::NAN, f64::NAN);
    }
    if p == 0.0 || p == 1.0 {
        return (p, p);
    }
    let tail = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    // The probability mass function in log space: (1 − p)^n underflows past n ≈ 2500.
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_pmf = n as f64 * lq;
    let mut cdf = 0.0;
    let (mut lo, mut hi) = (None, None);
    for k in 0..=n {
        if k > 0 {
            log_pmf += ((n - k + 1) as f64).ln() - (k as f64).ln() + lp - lq;
        }
        cdf += log_pmf.exp();
        if lo.is_none() && cdf >= tail {
            lo = Some(k);
        }
        if hi.is_none() && cdf >= 1.0 - tail - 1e-12 {
            hi = Some(k);
            break;
        }
    }
    let f = |k: Option<usize>| k.unwrap_or(n) as f64 / n as f64;
    (f(lo), f(hi))
}

/// How well a biological variable (age) is predicted from image features.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RegressionScore {
    /// Mean absolute error of the held-out predictions (the target's units, years for age).
    pub mae: f64,
    /// Pearson correlation of held-out predictions with the truth (higher keeps more biology).
    pub r: f64,
}

/// Leave-one-group-out predictions of `targets` from `features` by ridge regression on
/// standardised features (columns z-scored on each training fold; constant columns dropped by
/// their zero scale) with penalty `lambda` per training sample; the images of a group
/// (`groups`: a source scan, or a subject) are predicted together. `None` with fewer than three
/// groups.
pub fn ridge_logo_predictions(
    features: &[Vec<f64>],
    targets: &[f64],
    groups: &[usize],
    lambda: f64,
) -> Option<Vec<f64>> {
    let n = features.len();
    let d = features.first()?.len();
    let mut subjects: Vec<usize> = groups.to_vec();
    subjects.sort();
    subjects.dedup();
    if subjects.len() < 3 || targets.len() != n || groups.len() != n {
        return None;
    }
    let mut predictions = vec![f64::NAN; n];
    for &held in &subjects {
        let train: Vec<usize> = (0..n).filter(|&i| groups[i] != held).collect();
        let m = train.len() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|j| train.iter().map(|&i| features[i][j]).sum::<f64>() / m)
            .collect();
        let scale: Vec<f64> = (0..d)
            .map(|j| {
                let v = train
                    .iter()
                    .map(|&i| (features[i][j] - mean[j]).powi(2))
                    .sum::<f64>()
                    / m;
                if v > 1e-24 { 1.0 / v.sqrt() } else { 0.0 }
            })
            .collect();
        let x = DMatrix::from_fn(train.len(), d, |r, j| {
            (features[train[r]][j] - mean[j]) * scale[j]
        });
        let y_mean = train.iter().map(|&i| targets[i]).sum::<f64>() / m;
        let y = DVector::from_iterator(train.len(), train.iter().map(|&i| targets[i] - y_mean));
        // Dual form (n ≪ d here): w = Xᵀ (X Xᵀ + λ n I)⁻¹ y.
        let gram = &x * x.transpose() + DMatrix::identity(train.len(), train.len()) * (lambda * m);
        let alpha = gram.cholesky()?.solve(&y);
        let w = x.transpose() * alpha;
        for i in (0..n).filter(|&i| groups[i] == held) {
            let xi = DVector::from_fn(d, |j, _| (features[i][j] - mean[j]) * scale[j]);
            predictions[i] = y_mean + xi.dot(&w);
        }
    }
    Some(predictions)
}

/// Scores predictions against the truth.
pub fn regression_score(predictions: &[f64], truth: &[f64]) -> RegressionScore {
    let n = predictions.len().min(truth.len()) as f64;
    let mae = predictions
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t).abs())
        .sum::<f64>()
        / n;
    let (mp, mt) = (
        predictions.iter().sum::<f64>() / n,
        truth.iter().sum::<f64>() / n,
    );
    let (mut spt, mut spp, mut stt) = (0.0, 0.0, 0.0);
    for (p, t) in predictions.iter().zip(truth) {
        spt += (p - mp) * (t - mt);
        spp += (p - mp) * (p - mp);
        stt += (t - mt) * (t - mt);
    }
    RegressionScore {
        mae,
        r: spt / (spp * stt).sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        }
    }

    #[test]
    fn lda_separates_separable_sites_and_not_identical_ones() {
        // 24 subjects, 3 sites; features = a site-dependent shift + subject noise.
        let mut rnd = lcg(12345);
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
        let sep = lda_logo_accuracy(&f, &lab, &grp, None).unwrap();
        let chance = lda_logo_accuracy(&same, &lab, &grp, None).unwrap();
        assert!(sep > 0.99, "{sep}");
        assert!((chance - 1.0 / 3.0).abs() < 0.2, "{chance}");
        // Too few subjects or classes: no score rather than a misleading one.
        assert_eq!(lda_logo_accuracy(&f[..1], &lab[..1], &grp[..1], None), None);
        assert_eq!(lda_logo_accuracy(&f, &[0; 24], &grp, None), None);
    }

    #[test]
    fn lda_keeps_images_of_one_subject_out_together() {
        // Two images per subject, identical features: leave-one-image-out would see its twin and
        // score 100 %; leaving the subject out must not. Sites are unrelated to the features.
        let mut rnd = lcg(7);
        let (mut f, mut lab, mut grp) = (vec![], vec![], vec![]);
        for s in 0..16 {
            let x: Vec<f64> = (0..4).map(|_| rnd()).collect();
            for _ in 0..2 {
                f.push(x.clone());
                lab.push(s % 2);
                grp.push(s);
            }
        }
        let acc = lda_logo_accuracy(&f, &lab, &grp, None).unwrap();
        assert!(acc < 0.8, "{acc}");
    }

    #[test]
    fn ridge_predicts_a_linear_target_and_not_noise() {
        let mut rnd = lcg(99);
        let f: Vec<Vec<f64>> = (0..30).map(|_| (0..6).map(|_| rnd()).collect()).collect();
        let age: Vec<f64> = f.iter().map(|x| 50.0 + 40.0 * x[0] - 20.0 * x[3]).collect();
        // Targets from SplitMix64, a generator unrelated to the features' LCG (a second LCG
        // stream happened to correlate with one feature at r = 0.6).
        let splitmix = |i: u64| {
            let mut z = i.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(1);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let noise: Vec<f64> = (0..30).map(|i| 50.0 + 40.0 * splitmix(i)).collect();
        let groups: Vec<usize> = (0..30).collect();
        let p = ridge_logo_predictions(&f, &age, &groups, 0.01).unwrap();
        let good = regression_score(&p, &age);
        assert!(good.r > 0.95 && good.mae < 3.0, "{good:?}");
        let p = ridge_logo_predictions(&f, &noise, &groups, 0.01).unwrap();
        let bad = regression_score(&p, &noise);
        assert!(bad.r < 0.3, "{bad:?}");
        assert_eq!(
            ridge_logo_predictions(&f[..2], &age[..2], &groups[..2], 1.0),
            None
        );
    }

    #[test]
    fn chance_interval_is_the_binomial_central_interval() {
        // binom.ppf([0.025, 0.975], n, p) (SciPy's definition: the smallest k with CDF ≥ q),
        // computed exactly with Python's math.comb: (40, 0.25) → [5, 16]; (16, 0.25) → [1, 8];
        // (100, 0.5) → [40, 60].
        assert_eq!(chance_interval(40, 0.25, 0.95), (5.0 / 40.0, 16.0 / 40.0));
        assert_eq!(chance_interval(16, 0.25, 0.95), (1.0 / 16.0, 8.0 / 16.0));
        assert_eq!(chance_interval(100, 0.5, 0.95), (0.40, 0.60));
        // Large n does not underflow; the interval narrows around p.
        let (lo, hi) = chance_interval(5000, 0.25, 0.95);
        assert!(
            lo > 0.23 && hi < 0.27 && lo < 0.25 && hi > 0.25,
            "{lo} {hi}"
        );
        assert!(chance_interval(0, 0.25, 0.95).0.is_nan());
    }
}
