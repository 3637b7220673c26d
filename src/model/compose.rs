//! How HCLD's output image is composed from what the networks give on the model grid: the
//! decoded harmonised latent, the decoded source latent (the autoencoder's reconstruction of the
//! input) and the full-resolution input.
//!
//! The decoder's own image (`generative`, the paper's output) carries every error of the
//! autoencoder and loses every detail finer than the model grid; the other two modes take only the
//! model's *change* and bring it onto the input, so the autoencoder's error cancels:
//! - `residual`: input + (decode(harmonised) − decode(source)), the difference interpolated
//!   onto the input's grid;
//! - `intensity-map`: a monotone intensity transfer fitted inside the brain from decode(source) to
//!   decode(harmonised), applied to the input's intensities: the anatomy is the input's by
//!   construction, only its contrast changes.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::baselines::IntensityMap;

/// How the output image is composed (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputMode {
    /// The decoded harmonised latent itself (the paper's output; what artefacts written before
    /// this setting did).
    #[default]
    Generative,
    /// The input plus the model's change.
    Residual,
    /// The input through a monotone intensity map fitted from the model's change.
    IntensityMap,
}

impl OutputMode {
    /// Every mode, in the order the command line lists them.
    pub const ALL: [OutputMode; 3] = [
        OutputMode::IntensityMap,
        OutputMode::Residual,
        OutputMode::Generative,
    ];

    /// The command-line and sidecar name.
    pub fn name(self) -> &'static str {
        match self {
            OutputMode::Generative => "generative",
            OutputMode::Residual => "residual",
            OutputMode::IntensityMap => "intensity-map",
        }
    }

    /// Whether the mode needs the decoded source latent (one more decoder pass).
    pub fn needs_reconstruction(self) -> bool {
        self != OutputMode::Generative
    }
}

impl std::fmt::Display for OutputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OutputMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OutputMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown output mode '{s}'; use one of {}",
                    OutputMode::ALL.map(OutputMode::name).join(", ")
                )
            })
    }
}

/// Fits a monotone (non-decreasing) piecewise-linear map `to ≈ f(from)` over the pairs where
/// `inside` holds: `bins` equal-count bins of the source value (their mean source and mean target
/// values, ties merged), made non-decreasing by pool-adjacent-violators with the bins' counts as
/// weights. Beyond the fitted range the map continues with the least-squares slope of all pairs
/// (kept in [0.1, 10]) through one more knot on each side, so a value outside the range keeps its
/// distance to it, rescaled as the whole map rescales. `None` when fewer than `bins` pairs are
/// usable or their source values do not spread.
///
/// Written here because isotonic regression on a few dozen weighted points is twenty lines and
/// no maintained Rust crate offers it with weights.
pub fn fit_monotone_map(
    from: &[f32],
    to: &[f32],
    inside: &[bool],
    bins: usize,
) -> Option<IntensityMap> {
    let mut pairs: Vec<(f64, f64)> = from
        .iter()
        .zip(to)
        .zip(inside)
        .filter(|&((a, b), &i)| i && a.is_finite() && b.is_finite())
        .map(|((&a, &b), _)| (f64::from(a), f64::from(b)))
        .collect();
    let bins = bins.max(2);
    if pairs.len() < bins {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    // (mean from, mean to, count) per bin, merged where the mean source value does not increase.
    let mut knots: Vec<(f64, f64, f64)> = Vec::with_capacity(bins);
    for b in 0..bins {
        let chunk = &pairs[b * pairs.len() / bins..(b + 1) * pairs.len() / bins];
        let n = chunk.len() as f64;
        let x = chunk.iter().map(|p| p.0).sum::<f64>() / n;
        let y = chunk.iter().map(|p| p.1).sum::<f64>() / n;
        match knots.last_mut() {
            Some(last) if x <= last.0 + 1e-9 => {
                let m = last.2 + n;
                *last = (
                    (last.0 * last.2 + x * n) / m,
                    (last.1 * last.2 + y * n) / m,
                    m,
                );
            }
            _ => knots.push((x, y, n)),
        }
    }
    if knots.len() < 2 {
        return None;
    }
    // Pool adjacent violators: blocks of (mean y, weight, knots).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for &(_, y, w) in &knots {
        blocks.push((y, w, 1));
        while let [.., (y1, w1, k1), (y2, w2, k2)] = blocks[..] {
            if y1 <= y2 {
                break;
            }
            blocks.pop();
            *blocks.last_mut().expect("two blocks") =
                ((y1 * w1 + y2 * w2) / (w1 + w2), w1 + w2, k1 + k2);
        }
    }
    let mut ys: Vec<f64> = blocks
        .iter()
        .flat_map(|&(y, _, k)| std::iter::repeat_n(y, k))
        .collect();
    let mut xs: Vec<f64> = knots.iter().map(|k| k.0).collect();
    let n = pairs.len() as f64;
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = pairs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pairs.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 1.0 }.clamp(0.1, 10.0);
    // One knot a whole range beyond each end carries the outer slope.
    let span = xs[xs.len() - 1] - xs[0];
    xs.insert(0, xs[0] - span);
    ys.insert(0, ys[0] - span * slope);
    xs.push(xs[xs.len() - 1] + span);
    ys.push(ys[ys.len() - 1] + span * slope);
    Some(IntensityMap::PiecewiseLinear { from: xs, to: ys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_their_names() {
        for m in OutputMode::ALL {
            assert_eq!(m.name().parse::<OutputMode>().unwrap(), m);
            assert_eq!(
                serde_json::to_value(m).unwrap(),
                serde_json::json!(m.name())
            );
        }
        let e = "direct".parse::<OutputMode>().unwrap_err();
        assert!(e.contains("intensity-map"), "{e}");
        assert!(!OutputMode::Generative.needs_reconstruction());
    }

    #[test]
    fn a_monotone_map_recovers_a_monotone_transfer_and_smooths_noise_away() {
        // 4000 pairs of a gamma-like transfer with noise in (−0.05, 0.05): the fit stays within
        // the bins' width of the truth, is non-decreasing, and extrapolates with the overall
        // slope.
        let truth = |v: f32| 0.1 + 0.8 * v.powf(1.3);
        let from: Vec<f32> = (0..4000).map(|i| i as f32 / 4000.0).collect();
        let to: Vec<f32> = from
            .iter()
            .enumerate()
            .map(|(i, &v)| truth(v) + 0.05 * ((i as f32 * 12.9898).sin() * 43758.547).fract())
            .collect();
        let inside = vec![true; from.len()];
        let map = fit_monotone_map(&from, &to, &inside, 32).unwrap();
        let IntensityMap::PiecewiseLinear { from: xs, to: ys } = &map else {
            panic!("{map:?}")
        };
        assert!(ys.windows(2).all(|w| w[0] <= w[1]), "{map:?}");
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{map:?}");
        for v in [0.1f32, 0.3, 0.5, 0.7, 0.9] {
            assert!(
                (map.apply(v) - truth(v)).abs() < 0.03,
                "{v}: {}",
                map.apply(v)
            );
        }
        assert!(map.apply(1.5) > map.apply(1.0) + 0.3 && map.apply(-0.5) < map.apply(0.0) - 0.3);
        // A decreasing relation cannot be followed: inside the range the fit is flat.
        let down: Vec<f32> = from.iter().map(|v| 1.0 - v).collect();
        let flat = fit_monotone_map(&from, &down, &inside, 8).unwrap();
        assert!((flat.apply(0.2) - flat.apply(0.8)).abs() < 1e-6, "{flat:?}");
        // Voxels outside the mask do not count; too few pairs, or no spread, is no fit.
        assert!(fit_monotone_map(&from, &to, &vec![false; from.len()], 8).is_none());
        assert!(fit_monotone_map(&[0.5; 100], &to[..100], &[true; 100], 8).is_none());
    }
}
