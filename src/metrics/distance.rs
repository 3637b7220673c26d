//! Distances between intensity distributions: the exact Wasserstein-1 distance of two empirical
//! samples (HCLD's own histogram metric) and its mean over every pair of sites.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasserstein_of_shifted_samples_is_the_shift() {
        let a: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let b: Vec<f32> = a.iter().map(|v| v + 0.25).collect();
        assert!((wasserstein1(&a, &b) - 0.25).abs() < 1e-6);
        assert_eq!(wasserstein1(&a, &a), 0.0);
        assert!((mean_pairwise_w1(&[a.clone(), b.clone(), a.clone()]) - 0.5 / 3.0).abs() < 1e-6);
        assert!(wasserstein1(&a, &[]).is_nan());
        assert!(mean_pairwise_w1(&[a]).is_nan());
    }

    /// Values from SciPy's `scipy.stats.wasserstein_distance`, written by
    /// `scripts/metrics_expected.py` into `tests/data/metrics/expected.json`.
    #[test]
    fn wasserstein_equals_scipy() {
        let expected = super::super::fixtures::expected();
        let cases = expected["wasserstein"]
            .as_array()
            .expect("wasserstein cases");
        assert!(cases.len() >= 4);
        for case in cases {
            let a = super::super::fixtures::floats(&case["a"]);
            let b = super::super::fixtures::floats(&case["b"]);
            let want = case["scipy"].as_f64().unwrap();
            let got = wasserstein1(&a, &b);
            assert!(
                (got - want).abs() < 1e-6,
                "{}: hcld {got}, SciPy {want}",
                case["name"]
            );
        }
    }
}
