//! Image-to-image metrics inside a brain mask: gradient-magnitude correlation (edges kept), 3D
//! SSIM with a Gaussian window (Wang et al. 2004, computed as scikit-image's
//! `structural_similarity`) and PSNR against a ground-truth image, and [`fidelity`], which puts
//! both images through one shared affine map first so that SSIM's luminance term cannot depend
//! on a method's units.
//!
//! The Gaussian filter is written here to reproduce SciPy's `gaussian_filter` exactly (kernel
//! radius `int(truncate·σ + 0.5)`, half-sample symmetric "reflect" borders) so SSIM agrees with
//! scikit-image; no Rust crate filters 3D arrays with those conventions.

use rayon::prelude::*;

use crate::volume::Volume;

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

/// The voxels of `mask` whose 6 face neighbours are in `mask` too: the mask eroded by one voxel,
/// where a central difference reads only brain voxels. Voxels on the grid's edge are left out.
pub fn mask_interior(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let mut out = vec![false; mask.len()];
    if mask.len() != nx * ny * nz || nx < 3 || ny < 3 || nz < 3 {
        return out;
    }
    for z in 1..nz - 1 {
        for y in 1..ny - 1 {
            for x in 1..nx - 1 {
                let i = x + nx * (y + ny * z);
                out[i] = mask[i]
                    && mask[i - 1]
                    && mask[i + 1]
                    && mask[i - nx]
                    && mask[i + nx]
                    && mask[i - nx * ny]
                    && mask[i + nx * ny];
            }
        }
    }
    out
}

/// Correlation of the gradient-magnitude maps of `source` and `harmonised` inside `mask` (the
/// brain) eroded by one voxel: 1 when the edges (anatomy) are where they were, whatever the
/// intensity scale or offset. The erosion matters: outputs are zero outside the mask, so at the
/// mask's boundary a central difference reads the background, and an offset (a z-score moves
/// zero) would change those gradients without any change of anatomy.
pub fn gradient_correlation(source: &Volume, harmonised: &Volume, mask: &[bool]) -> f64 {
    masked_correlation(
        &gradient_magnitude(source),
        &gradient_magnitude(harmonised),
        &mask_interior(mask, source.dims()),
    )
}

/// SSIM and PSNR of `test` against `reference` inside `mask`, after one affine map shared by
/// both images that sends the reference's brain range (its minimum and maximum in the mask) to
/// [0, 1], with both images set to 0 outside the mask; SSIM then uses a data range of 1. SSIM's luminance term is not invariant to an offset
/// (two z-scored copies of a pair score lower than the same pair shifted into positive values),
/// so without this shared map a method's units would change its score. `None` when the
/// reference is constant in the mask.
pub fn fidelity(
    reference: &[f32],
    test: &[f32],
    dims: [usize; 3],
    mask: &[bool],
) -> Option<(f64, f64)> {
    let (lo, hi) = reference
        .iter()
        .zip(mask)
        .filter(|p| *p.1)
        .fold((f64::MAX, f64::MIN), |(l, h), (&v, _)| {
            (l.min(v as f64), h.max(v as f64))
        });
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return None;
    }
    // Outside the mask both images get 0 (the reference's brain minimum): a method's own zero
    // (a z-score's background is its brain mean) would otherwise enter the SSIM windows that
    // straddle the mask's edge.
    let unit = |v: &[f32]| -> Vec<f32> {
        v.iter()
            .zip(mask)
            .map(|(&x, &m)| {
                if m {
                    ((x as f64 - lo) / span) as f32
                } else {
                    0.0
                }
            })
            .collect()
    };
    let (r, t) = (unit(reference), unit(test));
    let ssim = masked_ssim(&r, &t, dims, mask, &SsimOptions::new(1.0));
    let psnr = masked_psnr(&r, &t, mask, 1.0);
    Some((ssim, psnr))
}

/// SSIM parameters (scikit-image's names and defaults for `gaussian_weights=True`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SsimOptions {
    /// Gaussian window σ in voxels (1.5, Wang et al.).
    pub sigma: f64,
    /// Window radius in σ (SciPy's `truncate`, scikit-image uses 3.5: an 11-voxel window at σ 1.5).
    pub truncate: f64,
    /// Luminance constant: C1 = (K1·L)².
    pub k1: f64,
    /// Contrast constant: C2 = (K2·L)².
    pub k2: f64,
    /// Scale local variances by N/(N−1), N the window's voxel count (scikit-image's
    /// `use_sample_covariance`; Wang et al.'s SSIM does not).
    pub sample_covariance: bool,
    /// L: the dynamic range of the images (max − min of the reference).
    pub data_range: f64,
}

impl SsimOptions {
    /// Wang et al.'s settings (σ 1.5, K1 0.01, K2 0.03, population covariance) for images
    /// spanning `data_range`.
    pub fn new(data_range: f64) -> SsimOptions {
        SsimOptions {
            sigma: 1.5,
            truncate: 3.5,
            k1: 0.01,
            k2: 0.03,
            sample_covariance: false,
            data_range,
        }
    }

    fn radius(&self) -> usize {
        (self.truncate * self.sigma + 0.5) as usize
    }
}

/// Index of `i` in `0..n` under SciPy's "reflect" extension (d c b a | a b c d | d c b a).
fn reflect(mut i: isize, n: isize) -> usize {
    let period = 2 * n;
    i = i.rem_euclid(period);
    if i >= n {
        (period - 1 - i) as usize
    } else {
        i as usize
    }
}

/// SciPy's `gaussian_filter(data, sigma, mode="reflect", truncate=truncate)` on an x-fastest
/// 3D array. Not `preprocess::filter::gaussian_smooth`: this one reproduces SciPy's reflected
/// edges and truncation in f64, so that SSIM and the simulator match the scikit-image/SciPy
/// values the tests compare with; that one smooths a `Volume` in millimetres, in f32, with
/// replicated edges, as the preprocessing was measured against ITK. One kernel for both would
/// change one side's numbers.
pub fn gaussian_filter(data: &[f64], dims: [usize; 3], sigma: f64, truncate: f64) -> Vec<f64> {
    gaussian_filter_axes(data, dims, [sigma; 3], truncate)
}

/// [`gaussian_filter`] with its own σ (voxels) per axis; an axis with σ ≤ 0 is left alone.
pub fn gaussian_filter_axes(
    data: &[f64],
    dims: [usize; 3],
    sigmas: [f64; 3],
    truncate: f64,
) -> Vec<f64> {
    let mut current = data.to_vec();
    let [nx, ny, nz] = dims;
    for axis in 0..3 {
        let sigma = sigmas[axis];
        if sigma <= 0.0 {
            continue;
        }
        let radius = (truncate * sigma + 0.5) as usize;
        let mut kernel: Vec<f64> = (-(radius as isize)..=radius as isize)
            .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
            .collect();
        let s: f64 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= s);
        let (n, stride) = match axis {
            0 => (nx, 1),
            1 => (ny, nx),
            _ => (nz, nx * ny),
        };
        let src = &current;
        // Every line along `axis` starts at a voxel whose `axis` coordinate is 0.
        let starts: Vec<usize> = (0..nx * ny * nz)
            .filter(|&i| {
                let c = [i % nx, (i / nx) % ny, i / (nx * ny)];
                c[axis] == 0
            })
            .collect();
        let lines: Vec<(usize, Vec<f64>)> = starts
            .par_iter()
            .map(|&start| {
                let line: Vec<f64> = (0..n).map(|k| src[start + k * stride]).collect();
                let out: Vec<f64> = (0..n as isize)
                    .map(|k| {
                        kernel
                            .iter()
                            .enumerate()
                            .map(|(t, w)| {
                                w * line[reflect(k + t as isize - radius as isize, n as isize)]
                            })
                            .sum()
                    })
                    .collect();
                (start, out)
            })
            .collect();
        let mut next = vec![0.0; current.len()];
        for (start, out) in lines {
            for (k, v) in out.into_iter().enumerate() {
                next[start + k * stride] = v;
            }
        }
        current = next;
    }
    current
}

/// The local SSIM of every voxel of two x-fastest 3D images.
pub fn ssim_map(a: &[f32], b: &[f32], dims: [usize; 3], options: &SsimOptions) -> Vec<f64> {
    let x: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let f = |v: &[f64]| gaussian_filter(v, dims, options.sigma, options.truncate);
    let (ux, uy) = (f(&x), f(&y));
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
    let (uxx, uyy, uxy) = (f(&xx), f(&yy), f(&xy));
    let window = (2 * options.radius() + 1).pow(3) as f64;
    let cov_norm = if options.sample_covariance {
        window / (window - 1.0)
    } else {
        1.0
    };
    let c1 = (options.k1 * options.data_range).powi(2);
    let c2 = (options.k2 * options.data_range).powi(2);
    (0..x.len())
        .map(|i| {
            let vx = cov_norm * (uxx[i] - ux[i] * ux[i]);
            let vy = cov_norm * (uyy[i] - uy[i] * uy[i]);
            let vxy = cov_norm * (uxy[i] - ux[i] * uy[i]);
            ((2.0 * ux[i] * uy[i] + c1) * (2.0 * vxy + c2))
                / ((ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2))
        })
        .collect()
}

/// Mean SSIM over the whole image minus a border of the window radius, exactly as
/// scikit-image's `structural_similarity(..., gaussian_weights=True)` reports it.
pub fn ssim(a: &[f32], b: &[f32], dims: [usize; 3], options: &SsimOptions) -> f64 {
    let map = ssim_map(a, b, dims, options);
    let r = options.radius();
    let [nx, ny, nz] = dims;
    let (mut sum, mut n) = (0.0, 0usize);
    for z in r..nz.saturating_sub(r) {
        for y in r..ny.saturating_sub(r) {
            for x in r..nx.saturating_sub(r) {
                sum += map[x + nx * (y + ny * z)];
                n += 1;
            }
        }
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Mean local SSIM over the voxels of `mask` (the brain).
pub fn masked_ssim(
    a: &[f32],
    b: &[f32],
    dims: [usize; 3],
    mask: &[bool],
    options: &SsimOptions,
) -> f64 {
    let map = ssim_map(a, b, dims, options);
    let (mut sum, mut n) = (0.0, 0usize);
    for (v, &m) in map.iter().zip(mask) {
        if m {
            sum += v;
            n += 1;
        }
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Peak signal-to-noise ratio 10·log10(L² / MSE) of `test` against `reference` over `mask`
/// (scikit-image's `peak_signal_noise_ratio` restricted to the mask); +∞ when identical.
pub fn masked_psnr(reference: &[f32], test: &[f32], mask: &[bool], data_range: f64) -> f64 {
    let (mut se, mut n) = (0.0, 0usize);
    for ((&r, &t), &m) in reference.iter().zip(test).zip(mask) {
        if m {
            se += (r as f64 - t as f64).powi(2);
            n += 1;
        }
    }
    if n == 0 {
        return f64::NAN;
    }
    10.0 * (data_range * data_range / (se / n as f64)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::read_nifti;

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

    /// A brain-like masked image (zero outside a ball) and a copy under an affine map applied
    /// inside the mask only, as a z-score or WhiteStripe does.
    fn masked_ball(n: usize) -> (Volume, Vec<bool>) {
        let mut a = nalgebra::Matrix4::identity();
        a[(3, 3)] = 1.0;
        let c = (n as f32 - 1.0) / 2.0;
        let mask: Vec<bool> = (0..n * n * n)
            .map(|i| {
                let (x, y, z) = ((i % n) as f32, ((i / n) % n) as f32, (i / (n * n)) as f32);
                (x - c).powi(2) + (y - c).powi(2) + (z - c).powi(2) < (0.4 * n as f32).powi(2)
            })
            .collect();
        let data: Vec<f32> = (0..n * n * n)
            .map(|i| {
                let (x, y, z) = ((i % n) as f32, ((i / n) % n) as f32, (i / (n * n)) as f32);
                if mask[i] {
                    0.6 + 0.3 * (0.5 * x).sin() * (0.4 * y).cos() + 0.05 * z / n as f32
                } else {
                    0.0
                }
            })
            .collect();
        (Volume::new([n, n, n], a, data).unwrap(), mask)
    }

    fn affine_in_mask(v: &Volume, mask: &[bool], scale: f32, offset: f32) -> Volume {
        v.with_data(
            v.data()
                .iter()
                .zip(mask)
                .map(|(&x, &m)| if m { scale * x + offset } else { 0.0 })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn gradient_correlation_is_not_fooled_by_a_moved_zero() {
        // A z-score-like map moves zero: inside the mask the image changes by an affine map,
        // outside it stays 0. Only the mask boundary's gradients see the jump.
        let (v, mask) = masked_ball(24);
        for (scale, offset) in [(4.0, -2.5), (0.2, 3.0), (-1.0, 1.0), (10.0, 0.0)] {
            let w = affine_in_mask(&v, &mask, scale, offset);
            let g = gradient_correlation(&v, &w, &mask);
            assert!(g >= 0.999, "scale {scale}, offset {offset}: {g}");
        }
        // The full mask reads the boundary: the artefact the erosion removes.
        let w = affine_in_mask(&v, &mask, 4.0, -2.5);
        let full = masked_correlation(&gradient_magnitude(&v), &gradient_magnitude(&w), &mask);
        assert!(full < 0.95, "{full}");
        // Anatomy that moved is still seen: a shifted copy correlates much less.
        let shifted = v
            .with_data(
                (0..v.data().len())
                    .map(|i| v.data()[(i + 3) % v.data().len()])
                    .collect(),
            )
            .unwrap();
        assert!(gradient_correlation(&v, &shifted, &mask) < 0.8);
    }

    #[test]
    fn mask_interior_is_the_six_neighbour_erosion() {
        let dims = [5, 5, 5];
        let mask = vec![true; 125];
        let inner = mask_interior(&mask, dims);
        assert_eq!(inner.iter().filter(|&&b| b).count(), 27);
        let mut one_hole = mask.clone();
        one_hole[2 + 5 * (2 + 5 * 2)] = false;
        let inner = mask_interior(&one_hole, dims);
        // The hole and its 6 neighbours leave the 27-voxel core.
        assert_eq!(inner.iter().filter(|&&b| b).count(), 27 - 7);
    }

    #[test]
    fn fidelity_is_invariant_to_a_shared_affine_map() {
        let (v, mask) = masked_ball(24);
        // A degraded copy: gamma and an added pattern.
        let degraded: Vec<f32> = v
            .data()
            .iter()
            .enumerate()
            .zip(&mask)
            .map(|((i, &x), &m)| {
                if m {
                    x.powf(0.8) + 0.03 * ((i * 7919 % 97) as f32 / 97.0 - 0.5)
                } else {
                    0.0
                }
            })
            .collect();
        let dims = v.dims();
        let (s0, p0) = fidelity(v.data(), &degraded, dims, &mask).unwrap();
        assert!(s0 < 0.99 && s0 > 0.3, "{s0}");
        // The same pair under z-score-like maps, ground truth mapped alike.
        for (scale, offset) in [(4.0f32, -2.5f32), (0.01, 5.0), (300.0, 1000.0)] {
            let f = |d: &[f32]| -> Vec<f32> {
                d.iter()
                    .zip(&mask)
                    .map(|(&x, &m)| if m { scale * x + offset } else { 0.0 })
                    .collect()
            };
            let (s, p) = fidelity(&f(v.data()), &f(&degraded), dims, &mask).unwrap();
            assert!((s - s0).abs() < 1e-4, "{scale} {offset}: {s} vs {s0}");
            assert!((p - p0).abs() < 1e-3, "{scale} {offset}: {p} vs {p0}");
            // An image against itself under the map: 1.
            let (same, _) = fidelity(&f(v.data()), &f(v.data()), dims, &mask).unwrap();
            assert!(same >= 0.999, "{same}");
        }
        // The plain SSIM in the method's units is not invariant (what the shared map fixes).
        let o = SsimOptions::new(1.0);
        let shifted: Vec<f32> = v.data().iter().map(|x| x - 0.6).collect();
        let shifted_d: Vec<f32> = degraded.iter().map(|x| x - 0.6).collect();
        let raw = masked_ssim(v.data(), &degraded, dims, &mask, &o);
        let raw_shifted = masked_ssim(&shifted, &shifted_d, dims, &mask, &o);
        assert!((raw - raw_shifted).abs() > 0.01, "{raw} {raw_shifted}");
        assert!(fidelity(&vec![1.0; v.data().len()], v.data(), dims, &mask).is_none());
    }

    #[test]
    fn reflect_is_half_sample_symmetric() {
        let idx: Vec<usize> = (-4..8).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
        assert_eq!(reflect(-9, 4), 0);
    }

    #[test]
    fn gaussian_filter_keeps_constants_and_mass() {
        let dims = [7, 5, 13];
        let ones = vec![2.0; 7 * 5 * 13];
        let f = gaussian_filter(&ones, dims, 1.5, 3.5);
        assert!(f.iter().all(|v| (v - 2.0).abs() < 1e-12));
    }

    #[test]
    fn ssim_of_an_image_with_itself_is_one() {
        let dims = [16, 14, 12];
        let a: Vec<f32> = (0..16 * 14 * 12)
            .map(|i| ((i * 37 % 101) as f32).sin())
            .collect();
        let o = SsimOptions::new(2.0);
        assert!((ssim(&a, &a, dims, &o) - 1.0).abs() < 1e-12);
        let mask = vec![true; a.len()];
        assert!((masked_ssim(&a, &a, dims, &mask, &o) - 1.0).abs() < 1e-12);
        assert!(masked_psnr(&a, &a, &mask, 2.0).is_infinite());
        // An unrelated image has SSIM near 0.
        let b: Vec<f32> = (0..a.len())
            .map(|i| {
                (((i as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 40) as f32 / 16777216.0) - 0.5
            })
            .collect();
        let s = ssim(&a, &b, dims, &o);
        assert!(s.abs() < 0.2, "{s}");
    }

    /// Against scikit-image 0.25's `structural_similarity` and `peak_signal_noise_ratio` on a real
    /// T1w crop and a degraded copy (`scripts/metrics_expected.py`).
    #[test]
    fn ssim_and_psnr_match_scikit_image() {
        let expected = super::super::fixtures::expected();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/metrics");
        let (a, _) = read_nifti(&dir.join("ssim-reference.nii.gz")).unwrap();
        let (b, _) = read_nifti(&dir.join("ssim-degraded.nii.gz")).unwrap();
        let e = &expected["ssim"];
        let range = e["data_range"].as_f64().unwrap();
        for (key, sample) in [("population", false), ("sample", true)] {
            let o = SsimOptions {
                sample_covariance: sample,
                ..SsimOptions::new(range)
            };
            let got = ssim(a.data(), b.data(), a.dims(), &o);
            let want = e[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-3,
                "{key}: hcld {got}, skimage {want}"
            );
            let same = ssim(a.data(), a.data(), a.dims(), &o);
            assert!((same - 1.0).abs() < 1e-12);
        }
        let mask = vec![true; a.data().len()];
        let psnr = masked_psnr(a.data(), b.data(), &mask, range);
        let want = e["psnr"].as_f64().unwrap();
        assert!(
            (psnr - want).abs() < 1e-3,
            "PSNR hcld {psnr}, skimage {want}"
        );
    }
}
