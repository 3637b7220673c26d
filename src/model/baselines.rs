//! The classical intensity-standardisation baselines hcld ships next to HCLD, each a monotone
//! [`IntensityMap`] fitted from one image's brain intensities (z-score, WhiteStripe) or from a
//! group of images (Nyúl's standard histogram, fitted once and saved). The methods that use them
//! (`crate::methods`) decide when they are fitted and where they are stored.
//!
//! A map is a value, not an image operation, so the same fitted map is applied to the
//! template-space and the native-space image (and to a target site's intensities for the
//! report's histograms).

use serde::{Deserialize, Serialize};

/// Why a baseline could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BaselineError {
    /// Too few brain voxels, or no spread.
    #[error("{0}")]
    Degenerate(String),
    /// A landmark file that does not fit.
    #[error("{0}")]
    Landmarks(String),
}

/// A monotone intensity mapping fitted to one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Kind")]
pub enum IntensityMap {
    /// `(x − Offset) / Scale`.
    Affine {
        /// Subtracted first (a mean).
        #[serde(rename = "Offset")]
        offset: f64,
        /// Then divided by (a standard deviation).
        #[serde(rename = "Scale")]
        scale: f64,
    },
    /// Piecewise linear through (`From[i]`, `To[i]`), extended linearly beyond both ends.
    PiecewiseLinear {
        /// The image's landmarks (increasing).
        #[serde(rename = "From")]
        from: Vec<f64>,
        /// The standard scale's landmarks.
        #[serde(rename = "To")]
        to: Vec<f64>,
    },
}

impl IntensityMap {
    /// Maps one intensity.
    pub fn apply(&self, x: f32) -> f32 {
        let x = x as f64;
        let y = match self {
            IntensityMap::Affine { offset, scale } => (x - offset) / scale,
            IntensityMap::PiecewiseLinear { from, to } => {
                let n = from.len();
                // Segment index: the last landmark ≤ x, clamped so the end segments extrapolate.
                let i = from.partition_point(|&f| f <= x).clamp(1, n - 1) - 1;
                let (x0, x1, y0, y1) = (from[i], from[i + 1], to[i], to[i + 1]);
                y0 + (x - x0) * (y1 - y0) / (x1 - x0)
            }
        };
        y as f32
    }

    /// Maps the voxels inside `mask`; voxels outside become 0 (outputs are skull-stripped).
    pub fn apply_masked(&self, values: &[f32], mask: &[bool]) -> Vec<f32> {
        values
            .iter()
            .zip(mask)
            .map(|(&v, &m)| if m { self.apply(v) } else { 0.0 })
            .collect()
    }
}

/// Finite intensities inside the mask.
pub fn brain_values(values: &[f32], mask: &[bool]) -> Vec<f32> {
    values
        .iter()
        .zip(mask)
        .filter(|(v, m)| **m && v.is_finite())
        .map(|(v, _)| *v)
        .collect()
}

/// Fewest brain voxels a fit accepts (a 2 mm brain has ~150 000).
const MIN_VOXELS: usize = 1000;

fn check(values: &[f32]) -> Result<(), BaselineError> {
    if values.len() < MIN_VOXELS {
        return Err(BaselineError::Degenerate(format!(
            "only {} brain voxels (at least {MIN_VOXELS} needed); check the brain mask",
            values.len()
        )));
    }
    Ok(())
}

fn mean_std(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// Z-score: brain mean → 0, brain standard deviation → 1.
pub fn fit_zscore(brain: &[f32]) -> Result<IntensityMap, BaselineError> {
    check(brain)?;
    let (mean, std) = mean_std(brain);
    if std <= 1e-12 {
        return Err(BaselineError::Degenerate(
            "the brain has a single intensity; z-scoring is undefined".into(),
        ));
    }
    Ok(IntensityMap::Affine {
        offset: mean,
        scale: std,
    })
}

/// Sorted copy of the values.
fn sorted(values: &[f32]) -> Vec<f32> {
    let mut s = values.to_vec();
    s.sort_by(f32::total_cmp);
    s
}

/// The `p`-th percentile (0–100) of sorted values, linearly interpolated (NumPy's default).
fn percentile_sorted(sorted: &[f32], p: f64) -> f64 {
    let pos = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let w = pos - lo as f64;
    sorted[lo] as f64 * (1.0 - w) + sorted[hi] as f64 * w
}

/// WhiteStripe's parameters: the stripe half-width in quantiles (Shinohara et al. use 0.05).
pub const WHITE_STRIPE_WIDTH: f64 = 0.05;

/// WhiteStripe for T1w (Shinohara et al. 2014, NeuroImage Clin 6:9): the white-matter mode is
/// the highest-intensity peak of the smoothed brain histogram; the "white stripe" is the voxels
/// whose quantile lies within ±`WHITE_STRIPE_WIDTH` of the mode's quantile; the image is
/// z-scored by the stripe's mean and standard deviation.
pub fn fit_whitestripe(brain: &[f32]) -> Result<(IntensityMap, f64), BaselineError> {
    check(brain)?;
    let s = sorted(brain);
    // Histogram between robust limits, smoothed with a Gaussian kernel of 2 bins (KDE-like).
    let (lo, hi) = (percentile_sorted(&s, 0.5), percentile_sorted(&s, 99.5));
    if hi - lo <= 1e-12 {
        return Err(BaselineError::Degenerate(
            "the brain has no intensity spread; WhiteStripe is undefined".into(),
        ));
    }
    const BINS: usize = 200;
    let mut hist = vec![0.0f64; BINS];
    for &v in &s {
        let b = ((v as f64 - lo) / (hi - lo) * BINS as f64).floor();
        if (0.0..BINS as f64).contains(&b) {
            hist[b as usize] += 1.0;
        }
    }
    let smooth: Vec<f64> = (0..BINS)
        .map(|i| {
            let mut acc = 0.0;
            let mut w_sum = 0.0;
            for d in -6i64..=6 {
                let j = i as i64 + d;
                if (0..BINS as i64).contains(&j) {
                    let w = (-(d * d) as f64 / (2.0 * 2.0 * 2.0)).exp();
                    acc += w * hist[j as usize];
                    w_sum += w;
                }
            }
            acc / w_sum
        })
        .collect();
    let max = smooth.iter().cloned().fold(0.0, f64::max);
    // Peaks at least 10 % of the tallest, so a noise bump at the bright end is not taken for WM.
    let mode_bin = (1..BINS - 1)
        .rev()
        .find(|&i| {
            smooth[i] >= smooth[i - 1] && smooth[i] > smooth[i + 1] && smooth[i] >= 0.1 * max
        })
        .unwrap_or_else(|| {
            (0..BINS)
                .max_by(|&a, &b| smooth[a].total_cmp(&smooth[b]))
                .unwrap_or(0)
        });
    let mode = lo + (mode_bin as f64 + 0.5) / BINS as f64 * (hi - lo);
    let q = s.partition_point(|&v| (v as f64) <= mode) as f64 / s.len() as f64;
    let (q0, q1) = (
        (q - WHITE_STRIPE_WIDTH).max(0.0),
        (q + WHITE_STRIPE_WIDTH).min(1.0),
    );
    let (a, b) = (
        percentile_sorted(&s, q0 * 100.0),
        percentile_sorted(&s, q1 * 100.0),
    );
    let stripe: Vec<f32> = s
        .iter()
        .copied()
        .filter(|&v| (v as f64) >= a && (v as f64) <= b)
        .collect();
    let (mean, std) = mean_std(&stripe);
    if stripe.len() < 10 || std <= 1e-12 {
        return Err(BaselineError::Degenerate(
            "the white stripe has no spread; WhiteStripe is undefined for this image".into(),
        ));
    }
    Ok((
        IntensityMap::Affine {
            offset: mean,
            scale: std,
        },
        mode,
    ))
}

/// Nyúl–Udupa landmark percentiles (intensity-normalization's defaults: 1, 10, 20, …, 90, 99).
pub const NYUL_PERCENTILES: [f64; 11] = [
    1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0,
];

/// A fitted Nyúl standard histogram: the mean landmarks of the training images after mapping each
/// image's percentile 1 → 0 and 99 → 1. Saved to a file at group level, read at participant level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NyulLandmarks {
    /// Brain-intensity percentiles the landmarks are taken at.
    #[serde(rename = "Percentiles")]
    pub percentiles: Vec<f64>,
    /// The standard scale's landmark intensities (first 0, last 1).
    #[serde(rename = "StandardScale")]
    pub standard: Vec<f64>,
    /// How many images the standard scale was averaged over.
    #[serde(rename = "Images")]
    pub images: usize,
}

impl NyulLandmarks {
    /// Fits the standard scale to brain intensities of several images.
    pub fn fit<'a>(
        images: impl IntoIterator<Item = &'a [f32]>,
    ) -> Result<NyulLandmarks, BaselineError> {
        let k = NYUL_PERCENTILES.len();
        let mut sum = vec![0.0; k];
        let mut n = 0usize;
        for brain in images {
            check(brain)?;
            let s = sorted(brain);
            let l: Vec<f64> = NYUL_PERCENTILES
                .iter()
                .map(|&p| percentile_sorted(&s, p))
                .collect();
            let (a, b) = (l[0], l[k - 1]);
            if b - a <= 1e-12 {
                return Err(BaselineError::Degenerate(
                    "an image has no intensity spread between its 1st and 99th percentiles".into(),
                ));
            }
            for (acc, v) in sum.iter_mut().zip(&l) {
                *acc += (v - a) / (b - a);
            }
            n += 1;
        }
        if n == 0 {
            return Err(BaselineError::Degenerate(
                "no images to fit Nyúl landmarks to".into(),
            ));
        }
        Ok(NyulLandmarks {
            percentiles: NYUL_PERCENTILES.to_vec(),
            standard: sum.into_iter().map(|v| v / n as f64).collect(),
            images: n,
        })
    }

    /// Checks a loaded landmark set is usable (increasing, matching percentiles).
    pub fn validate(&self) -> Result<(), BaselineError> {
        let ok = self.percentiles.len() == self.standard.len()
            && self.standard.len() >= 2
            && self.standard.windows(2).all(|w| w[1] > w[0])
            && self.percentiles.windows(2).all(|w| w[1] > w[0])
            && self.percentiles.iter().all(|p| (0.0..=100.0).contains(p));
        if ok {
            Ok(())
        } else {
            Err(BaselineError::Landmarks(
                "percentiles and standard scale must be increasing lists of the same length; \
                 fit them again with the group level"
                    .into(),
            ))
        }
    }

    /// The map of one image's brain intensities onto the standard scale.
    pub fn map_for(&self, brain: &[f32]) -> Result<IntensityMap, BaselineError> {
        check(brain)?;
        let s = sorted(brain);
        let mut from: Vec<f64> = self
            .percentiles
            .iter()
            .map(|&p| percentile_sorted(&s, p))
            .collect();
        // Ties (large flat regions) would make a zero-width segment: nudge to strictly increasing.
        for i in 1..from.len() {
            if from[i] <= from[i - 1] {
                from[i] = from[i - 1] + 1e-6;
            }
        }
        Ok(IntensityMap::PiecewiseLinear {
            from,
            to: self.standard.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    /// A T1-like brain: CSF, GM and WM populations at 0.2, 0.55, 0.8 with 5 % noise.
    fn brain(seed: u64, gain: f32, offset: f32) -> Vec<f32> {
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
        let noise = Normal::new(0.0f32, 0.04).unwrap();
        (0..30_000)
            .map(|i| {
                let base = match i % 10 {
                    0 | 1 => 0.2,
                    2..=5 => 0.55,
                    _ => 0.8,
                };
                (base + noise.sample(&mut rng)) * gain + offset
            })
            .collect()
    }

    #[test]
    fn zscore_gives_zero_mean_unit_std() {
        let b = brain(1, 2.0, 0.3);
        let m = fit_zscore(&b).unwrap();
        let out: Vec<f32> = b.iter().map(|&v| m.apply(v)).collect();
        let (mean, std) = mean_std(&out);
        assert!(
            mean.abs() < 1e-4 && (std - 1.0).abs() < 1e-4,
            "{mean} {std}"
        );
    }

    #[test]
    fn whitestripe_finds_the_white_matter_peak_and_is_scale_invariant() {
        let a = brain(2, 1.0, 0.0);
        let (ma, mode) = fit_whitestripe(&a).unwrap();
        assert!((mode - 0.8).abs() < 0.03, "mode {mode}");
        // The same brain at another gain and offset maps to the same z-values.
        let b: Vec<f32> = a.iter().map(|v| v * 3.0 + 0.5).collect();
        let (mb, _) = fit_whitestripe(&b).unwrap();
        for (x, y) in a.iter().zip(&b).step_by(997) {
            assert!(
                (ma.apply(*x) - mb.apply(*y)).abs() < 0.05,
                "{} vs {}",
                ma.apply(*x),
                mb.apply(*y)
            );
        }
        // WM maps to ~0.
        assert!(ma.apply(0.8).abs() < 0.3);
    }

    #[test]
    fn nyul_maps_differently_scaled_images_onto_one_scale() {
        let a = brain(3, 1.0, 0.0);
        let b: Vec<f32> = brain(4, 1.0, 0.0).iter().map(|v| v * 0.5 + 0.2).collect();
        let l = NyulLandmarks::fit([a.as_slice(), b.as_slice()]).unwrap();
        l.validate().unwrap();
        assert_eq!(l.standard.first().copied(), Some(0.0));
        assert!((l.standard.last().unwrap() - 1.0).abs() < 1e-12);
        let (ma, mb) = (l.map_for(&a).unwrap(), l.map_for(&b).unwrap());
        for &p in &[10.0, 50.0, 90.0] {
            let (sa, sb) = (sorted(&a), sorted(&b));
            let (xa, xb) = (percentile_sorted(&sa, p), percentile_sorted(&sb, p));
            assert!((ma.apply(xa as f32) - mb.apply(xb as f32)).abs() < 1e-3);
        }
        // Linear extrapolation beyond the landmarks, monotone everywhere.
        let ys: Vec<f32> = (-10..30).map(|i| ma.apply(i as f32 * 0.05)).collect();
        assert!(ys.windows(2).all(|w| w[1] > w[0]));
        // Serialises and reloads exactly.
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<NyulLandmarks>(&text).unwrap(), l);
    }

    #[test]
    fn degenerate_images_are_refused_with_a_reason() {
        assert!(fit_zscore(&[0.5; 5000]).is_err());
        assert!(fit_whitestripe(&[0.5; 5000]).is_err());
        assert!(
            fit_zscore(&[0.5; 10])
                .unwrap_err()
                .to_string()
                .contains("brain voxels")
        );
        let bad = NyulLandmarks {
            percentiles: vec![1.0, 99.0],
            standard: vec![1.0, 0.0],
            images: 1,
        };
        assert!(bad.validate().is_err());
    }
}
