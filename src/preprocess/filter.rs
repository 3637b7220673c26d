//! Linear filters and resolution pyramids: separable Gaussian smoothing in millimetres, and the
//! smoothed, isotropic downsampled copies that multi-resolution registration and bias correction
//! work on. Also robust intensity statistics (percentiles) shared by those steps.
//!
//! Written here: a separable 3D Gaussian on an anisotropic voxel grid is a few dozen lines, and no
//! maintained crate does it on our `Volume` (with its affine) without copying into another type.

use nalgebra::Matrix4;
use rayon::prelude::*;

use super::resample::{Grid, Interpolation, resample};
use crate::volume::Volume;

/// Smooths with an isotropic Gaussian of standard deviation `sigma_mm` (millimetres), separably
/// along the three voxel axes with each axis's own voxel size; edges repeat the border voxel.
pub fn gaussian_smooth(volume: &Volume, sigma_mm: f64) -> Volume {
    if sigma_mm <= 0.0 {
        return volume.clone();
    }
    let dims = volume.dims();
    let vs = volume.voxel_sizes();
    let mut data = volume.data().to_vec();
    for axis in 0..3 {
        let sigma = sigma_mm / vs[axis];
        if sigma < 0.1 || dims[axis] < 2 {
            continue;
        }
        data = convolve_axis(&data, dims, axis, &gaussian_kernel(sigma));
    }
    volume
        .with_data(data)
        .expect("smoothing keeps the grid and length")
}

/// Normalised Gaussian taps from `-r` to `r`, `r = ceil(3σ)`.
fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as i64;
    let mut k: Vec<f64> = (-r..=r)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k.into_iter().map(|v| v as f32).collect()
}

/// Convolves along one axis; output planes (constant `k`) are computed in parallel.
fn convolve_axis(data: &[f32], dims: [usize; 3], axis: usize, kernel: &[f32]) -> Vec<f32> {
    let [nx, ny, _] = dims;
    let r = (kernel.len() / 2) as i64;
    let n = dims[axis] as i64;
    let stride = [1, nx, nx * ny][axis];
    let plane = nx * ny;
    let mut out = vec![0f32; data.len()];
    out.par_chunks_mut(plane).enumerate().for_each(|(k, o)| {
        for j in 0..ny {
            for i in 0..nx {
                let base = i + nx * (j + ny * k);
                let pos = [i, j, k][axis] as i64;
                let mut acc = 0f32;
                if pos >= r && pos + r < n {
                    // Interior: no clamping, a plain strided dot product.
                    let start = base - r as usize * stride;
                    for (t, w) in kernel.iter().enumerate() {
                        acc += w * data[start + t * stride];
                    }
                } else {
                    for (t, w) in kernel.iter().enumerate() {
                        let q = (pos + t as i64 - r).clamp(0, n - 1);
                        let idx = base as i64 + (q - pos) * stride as i64;
                        acc += w * data[idx as usize];
                    }
                }
                o[i + nx * j] = acc;
            }
        }
    });
    out
}

/// An isotropic grid of `res_mm` voxels covering `volume`'s field of view, with axes along the
/// volume's own voxel axes (so no reorientation happens) and the outer corner kept in place.
pub fn iso_grid(volume: &Volume, res_mm: f64) -> Grid {
    let dims = volume.dims();
    let vs = volume.voxel_sizes();
    let a = volume.affine();
    let new_dims =
        [0, 1, 2].map(|ax| ((dims[ax] as f64 * vs[ax] / res_mm).round() as usize).max(1));
    let mut affine = Matrix4::identity();
    let corner = volume.voxel_to_world(-0.5, -0.5, -0.5);
    for ax in 0..3 {
        let dir = a.fixed_view::<3, 1>(0, ax) / vs[ax];
        for r in 0..3 {
            affine[(r, ax)] = dir[r] * res_mm;
        }
    }
    for r in 0..3 {
        let half: f64 = (0..3).map(|ax| affine[(r, ax)] * 0.5).sum();
        affine[(r, 3)] = corner[r] + half;
    }
    Grid {
        dims: new_dims,
        affine,
    }
}

/// The volume smoothed to `res_mm` and resampled onto [`iso_grid`]: the Gaussian's σ is chosen so
/// the result has about the blur of a `res_mm` acquisition (σ² = (res/2)² − (voxel/2)²), which
/// keeps coarse registration levels free of aliasing.
pub fn downsample(volume: &Volume, res_mm: f64) -> Volume {
    let vs = volume.voxel_sizes();
    let finest = vs.iter().cloned().fold(f64::INFINITY, f64::min);
    let sigma = ((0.5 * res_mm).powi(2) - (0.5 * finest).powi(2))
        .max(0.0)
        .sqrt();
    let smooth = gaussian_smooth(volume, sigma);
    resample(
        &smooth,
        &iso_grid(volume, res_mm),
        Interpolation::Linear,
        0.0,
    )
    .expect("a volume's own affine is invertible")
}

/// Percentiles (0..100) of the values selected by `keep`, by sorting a copy; `None` when nothing
/// is selected. Non-finite values are ignored.
pub fn percentiles(values: &[f32], keep: impl Fn(usize) -> bool, ps: &[f64]) -> Option<Vec<f32>> {
    let mut v: Vec<f32> = values
        .iter()
        .enumerate()
        .filter(|&(i, x)| x.is_finite() && keep(i))
        .map(|(_, &x)| x)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f32::total_cmp);
    Some(
        ps.iter()
            .map(|p| {
                let pos = (p / 100.0 * (v.len() - 1) as f64).round() as usize;
                v[pos.min(v.len() - 1)]
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn impulse(dims: [usize; 3], vs: f64) -> Volume {
        let mut affine = Matrix4::identity() * vs;
        affine[(3, 3)] = 1.0;
        let mut data = vec![0f32; dims.iter().product()];
        data[dims[0] / 2 + dims[0] * (dims[1] / 2 + dims[1] * (dims[2] / 2))] = 1.0;
        Volume::new(dims, affine, data).unwrap()
    }

    #[test]
    fn gaussian_preserves_mass_and_has_the_requested_width() {
        let v = impulse([41, 41, 41], 2.0);
        let s = gaussian_smooth(&v, 4.0);
        let total: f64 = s.data().iter().map(|&x| x as f64).sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        // Second moment along x, in mm², equals σ².
        let mut m2 = 0.0;
        for i in 0..41 {
            let line: f64 = (0..41)
                .flat_map(|j| (0..41).map(move |k| (j, k)))
                .map(|(j, k)| s.get(i, j, k) as f64)
                .sum();
            m2 += line * ((i as f64 - 20.0) * 2.0).powi(2);
        }
        assert!((m2.sqrt() - 4.0).abs() < 0.05, "{}", m2.sqrt());
    }

    #[test]
    fn iso_grid_keeps_the_field_of_view() {
        let v = impulse([40, 30, 20], 1.0);
        let g = iso_grid(&v, 4.0);
        assert_eq!(g.dims, [10, 8, 5]);
        // Outer corner unchanged.
        let c = g.affine * nalgebra::Vector4::new(-0.5, -0.5, -0.5, 1.0);
        assert!((c[0] + 0.5).abs() < 1e-9 && (c[2] + 0.5).abs() < 1e-9);
        let d = downsample(&v, 4.0);
        assert_eq!(d.dims(), [10, 8, 5]);
    }

    #[test]
    fn percentiles_ignore_masked_and_non_finite_values() {
        let v = [5.0, f32::NAN, 1.0, 3.0, 100.0, 2.0, 4.0];
        let p = percentiles(&v, |i| i != 4, &[0.0, 50.0, 100.0]).unwrap();
        assert_eq!(p, vec![1.0, 3.0, 5.0]);
        assert!(percentiles(&v, |_| false, &[50.0]).is_none());
    }
}
