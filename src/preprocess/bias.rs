//! Intensity non-uniformity (bias field) correction, N4-class (Tustison et al. 2010, after Sled's
//! N3): in the log domain, repeatedly sharpen the intensity histogram by Wiener deconvolution of a
//! Gaussian, take the difference between the image and its sharpened version as a bias residual,
//! and fit a smooth cubic B-spline to it; the lattice is refined (spans doubled) at each of several
//! levels. Works on a copy shrunk to about 4 mm (as N4 is run with a shrink factor), inside a mask;
//! the fitted field is then interpolated back to the full grid.
//!
//! Written here: no maintained Rust crate corrects MRI bias fields.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;
use serde::{Deserialize, Serialize};

use super::bspline_fit::BsplineField;
use super::filter::downsample;
use super::resample::{Grid, Interpolation, resample};
use crate::volume::Volume;

/// N4 settings (ANTs/SimpleITK defaults where they have one); serialised into sidecars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BiasConfig {
    /// Voxel size (mm) of the working copy (N4's shrink factor, expressed in mm).
    pub working_resolution_mm: f64,
    /// Maximum iterations at each fitting level; the number of entries is the number of levels.
    pub iterations: Vec<usize>,
    /// Stop a level when the coefficient of variation of the field update falls below this.
    pub convergence_threshold: f64,
    /// B-spline spans per axis at the first level (doubled at each level).
    pub initial_spans: usize,
    /// Histogram bins for sharpening.
    pub histogram_bins: usize,
    /// Full width at half maximum of the bias's blur of the log histogram.
    pub fwhm: f64,
    /// Wiener filter noise.
    pub wiener_noise: f64,
}

impl Default for BiasConfig {
    fn default() -> Self {
        BiasConfig {
            working_resolution_mm: 4.0,
            iterations: vec![50, 50, 50, 50],
            convergence_threshold: 0.001,
            initial_spans: 1,
            histogram_bins: 200,
            fwhm: 0.15,
            wiener_noise: 0.01,
        }
    }
}

/// What the correction did.
#[derive(Debug, Clone, Serialize)]
pub struct BiasReport {
    /// Iterations run at each level.
    pub iterations: Vec<usize>,
    /// Whether each level reached the convergence threshold.
    pub converged: Vec<bool>,
    /// Range of the multiplicative field inside the mask (min, max).
    pub field_range: [f64; 2],
}

/// Why correction could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BiasError {
    /// Too few positive voxels in the mask.
    #[error("bias correction needs at least 100 positive voxels inside the mask, found {0}")]
    TooFewVoxels(usize),
}

/// Corrects `image` inside `mask` (same grid, true = use). Returns the corrected image, the
/// multiplicative field (corrected = image / field; field mean 1 inside the mask) and a report.
pub fn correct_bias(
    image: &Volume,
    mask: &[bool],
    config: &BiasConfig,
) -> Result<(Volume, Volume, BiasReport), BiasError> {
    let finest = image
        .voxel_sizes()
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min);
    let work_res = config.working_resolution_mm.max(finest);
    let small = downsample(image, work_res);
    let mask_volume = image
        .with_data(mask.iter().map(|&m| m as u8 as f32).collect())
        .expect("mask on the image grid");
    let small_mask =
        resample(&mask_volume, &Grid::of(&small), Interpolation::Linear, 0.0).expect("valid grid");
    let dims = small.dims();
    let points: Vec<usize> = (0..small.data().len())
        .filter(|&i| small_mask.data()[i] > 0.5 && small.data()[i] > 0.0)
        .collect();
    if points.len() < 100 {
        return Err(BiasError::TooFewVoxels(points.len()));
    }
    let log_image: Vec<f64> = points
        .iter()
        .map(|&p| (small.data()[p] as f64).ln())
        .collect();
    let mut field = BsplineField::zeros(dims, [config.initial_spans; 3]);
    let mut log_bias = vec![0f64; points.len()];
    let mut iterations = Vec::new();
    let mut converged = Vec::new();
    for (level, &max_iter) in config.iterations.iter().enumerate() {
        if level > 0 {
            field = field.refined();
        }
        let basis = field.basis_at(&points);
        let mut done = false;
        let mut it = 0;
        while it < max_iter {
            it += 1;
            let corrected: Vec<f64> = log_image
                .iter()
                .zip(&log_bias)
                .map(|(v, b)| v - b)
                .collect();
            let sharpened = sharpen(&corrected, config);
            let residual: Vec<f64> = corrected
                .iter()
                .zip(&sharpened)
                .map(|(u, s)| u - s)
                .collect();
            let mut delta = BsplineField::zeros(dims, field.spans());
            delta.fit_at(&basis, &residual);
            field.add(&delta);
            let update = delta.values_at(&basis);
            for (b, d) in log_bias.iter_mut().zip(&update) {
                *b += d;
            }
            // N4's convergence measure: the coefficient of variation of exp(update) in the mask.
            let e: Vec<f64> = update.iter().map(|d| d.exp()).collect();
            let mean = e.iter().sum::<f64>() / e.len() as f64;
            let sd = (e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / e.len() as f64).sqrt();
            if sd / mean < config.convergence_threshold {
                done = true;
                break;
            }
        }
        iterations.push(it);
        converged.push(done);
    }
    // Field on the working grid, normalised to geometric mean 1 inside the mask so corrected
    // intensities keep their overall scale.
    let mean_log = log_bias.iter().sum::<f64>() / log_bias.len() as f64;
    let small_field: Vec<f32> = field
        .evaluate()
        .into_iter()
        .map(|b| (b - mean_log) as f32)
        .collect();
    let small_field = small
        .with_data(small_field)
        .expect("field on the working grid");
    // Trilinear is enough for a field with ≥ 25 mm control spacing sampled every 4 mm, and ten
    // times cheaper than cubic on a 1 mm grid.
    let log_full =
        resample(&small_field, &Grid::of(image), Interpolation::Linear, 0.0).expect("valid grid");
    let multiplicative: Vec<f32> = log_full.data().iter().map(|b| b.exp()).collect();
    let corrected: Vec<f32> = image
        .data()
        .iter()
        .zip(&multiplicative)
        .map(|(v, f)| v / f)
        .collect();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (f, &m) in multiplicative.iter().zip(mask) {
        if m {
            lo = lo.min(*f as f64);
            hi = hi.max(*f as f64);
        }
    }
    Ok((
        image.with_data(corrected).expect("same grid"),
        image.with_data(multiplicative).expect("same grid"),
        BiasReport {
            iterations,
            converged,
            field_range: [lo, hi],
        },
    ))
}

/// N3/N4 histogram sharpening: the expected "true" log intensity of each value, given that the
/// observed histogram is the true one blurred by a Gaussian of `fwhm` (Wiener deconvolution).
fn sharpen(values: &[f64], config: &BiasConfig) -> Vec<f64> {
    let bins = config.histogram_bins;
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if hi - lo < 1e-12 {
        return values.to_vec();
    }
    let width = (hi - lo) / (bins - 1) as f64;
    // Histogram with linear splatting.
    let mut h = vec![0f64; bins];
    for &v in values {
        let c = (v - lo) / width;
        let i = (c.floor() as usize).min(bins - 1);
        let f = c - i as f64;
        h[i] += 1.0 - f;
        if i + 1 < bins {
            h[i + 1] += f;
        }
    }
    let padded = (2 * bins).next_power_of_two();
    let offset = (padded - bins) / 2;
    let mut planner = FftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(padded);
    let ifft = planner.plan_fft_inverse(padded);
    let mut hf: Vec<Complex<f64>> = vec![Complex::new(0.0, 0.0); padded];
    for (i, v) in h.iter().enumerate() {
        hf[i + offset].re = *v;
    }
    fft.process(&mut hf);
    // Gaussian kernel, centred at 0 with wrap-around, in bin units.
    // FWHM = σ·√(8 ln 2).
    let sigma = (config.fwhm / width / (8.0 * 2f64.ln()).sqrt()).max(1e-3);
    let mut g: Vec<Complex<f64>> = vec![Complex::new(0.0, 0.0); padded];
    let mut gsum = 0.0;
    for (i, gi) in g.iter_mut().enumerate() {
        let d = if i <= padded / 2 {
            i as f64
        } else {
            padded as f64 - i as f64
        };
        let w = (-(d * d) / (2.0 * sigma * sigma)).exp();
        gi.re = w;
        gsum += w;
    }
    g.iter_mut().for_each(|x| x.re /= gsum);
    fft.process(&mut g);
    // Wiener deconvolution: F = H · conj(G) / (|G|² + z).
    let mut f: Vec<Complex<f64>> = hf
        .iter()
        .zip(&g)
        .map(|(h, g)| h * g.conj() / (g.norm_sqr() + config.wiener_noise))
        .collect();
    ifft.process(&mut f);
    let n = padded as f64;
    let est: Vec<f64> = f.iter().map(|c| (c.re / n).max(0.0)).collect();
    // E[true | observed] = (g * (u·f)) / (g * f), convolutions by FFT.
    let centre = |i: usize| lo + (i as f64 - offset as f64) * width;
    let mut num: Vec<Complex<f64>> = est
        .iter()
        .enumerate()
        .map(|(i, &e)| Complex::new(e * centre(i), 0.0))
        .collect();
    let mut den: Vec<Complex<f64>> = est.iter().map(|&e| Complex::new(e, 0.0)).collect();
    fft.process(&mut num);
    fft.process(&mut den);
    for ((a, b), gk) in num.iter_mut().zip(den.iter_mut()).zip(&g) {
        *a *= gk;
        *b *= gk;
    }
    ifft.process(&mut num);
    ifft.process(&mut den);
    let map: Vec<f64> = (0..bins)
        .map(|i| {
            let d = den[i + offset].re / n;
            if d > 1e-12 {
                num[i + offset].re / n / d
            } else {
                centre(i + offset)
            }
        })
        .collect();
    values
        .iter()
        .map(|&v| {
            let c = (v - lo) / width;
            let i = (c.floor() as usize).min(bins - 1);
            let f = c - i as f64;
            if i + 1 < bins {
                map[i] * (1.0 - f) + map[i + 1] * f
            } else {
                map[i]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix4;

    /// Two tissue classes in a sphere, multiplied by a smooth known field.
    fn phantom() -> (Volume, Vec<bool>, Vec<f32>) {
        let n = 48;
        let mut data = vec![0f32; n * n * n];
        let mut truth = vec![0f32; n * n * n];
        let mut mask = vec![false; n * n * n];
        for k in 0..n {
            for j in 0..n {
                for i in 0..n {
                    let (x, y, z) = (i as f64 - 24.0, j as f64 - 24.0, k as f64 - 24.0);
                    let r = (x * x + y * y + z * z).sqrt();
                    if r < 20.0 {
                        let idx = i + n * (j + n * k);
                        // Stripes of two tissues with a little texture.
                        let t: f64 = if ((x / 5.0).sin() + (y / 6.0).cos()) > 0.0 {
                            100.0
                        } else {
                            60.0
                        };
                        let bias =
                            (0.25 * x / 20.0 - 0.15 * z / 20.0 + 0.1 * (y / 20.0).powi(2)).exp();
                        truth[idx] = t as f32;
                        data[idx] = (t * bias) as f32;
                        mask[idx] = true;
                    }
                }
            }
        }
        let mut a = Matrix4::identity() * 2.0;
        a[(3, 3)] = 1.0;
        (Volume::new([n, n, n], a, data).unwrap(), mask, truth)
    }

    fn class_cv(values: &[f32], truth: &[f32], mask: &[bool], class: f32) -> f64 {
        let v: Vec<f64> = values
            .iter()
            .zip(truth)
            .zip(mask)
            .filter(|((_, t), m)| **m && **t == class)
            .map(|((v, _), _)| *v as f64)
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt() / mean
    }

    #[test]
    fn removes_a_smooth_field_from_a_two_class_phantom() {
        let (image, mask, truth) = phantom();
        let before = class_cv(image.data(), &truth, &mask, 100.0);
        let config = BiasConfig {
            working_resolution_mm: 4.0,
            ..BiasConfig::default()
        };
        let (corrected, field, report) = correct_bias(&image, &mask, &config).unwrap();
        let after = class_cv(corrected.data(), &truth, &mask, 100.0);
        assert!(
            after < 0.5 * before,
            "CV {before:.4} -> {after:.4}; {report:?}"
        );
        assert!(field.data().iter().all(|f| f.is_finite() && *f > 0.0));
    }

    #[test]
    fn refuses_an_empty_mask() {
        let (image, mask, _) = phantom();
        let none = vec![false; mask.len()];
        assert!(matches!(
            correct_bias(&image, &none, &BiasConfig::default()),
            Err(BiasError::TooFewVoxels(0))
        ));
    }
}
