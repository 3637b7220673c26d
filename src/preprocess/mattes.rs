//! Mattes mutual information (Mattes et al. 2003, as in ITK/ANTs `MattesMutualInformation`) between
//! fixed-image samples and a moving image seen through an affine map, with its analytic gradient
//! with respect to the map's matrix and translation.
//!
//! The joint histogram uses a zero-order (box) Parzen window for the fixed image and a cubic
//! B-spline window for the moving image, so the metric is differentiable in the moving intensity;
//! the moving image is interpolated trilinearly and its spatial gradient is the exact gradient of
//! that interpolant. Intensities are clamped to robust (0.5/99.5 percentile) ranges first, so a
//! few very bright voxels (vessels, fat) do not squeeze all tissue into a few bins.
//!
//! Written here: no maintained Rust crate implements image registration metrics.

use nalgebra::{Matrix3, Vector3};
use rayon::prelude::*;

use super::filter::percentiles;
use crate::volume::Volume;

/// Histogram bins on each side beyond the intensity range, so the B-spline window never falls off.
const PAD: f64 = 2.0;

/// Fixed-image samples: world positions (relative to `centre`) and fixed intensity bins.
pub struct FixedSamples {
    /// World points minus the transform centre, mm.
    pub points: Vec<[f32; 3]>,
    /// Fixed-image histogram bin of each point.
    pub bins: Vec<u16>,
}

/// The metric's value and gradient at one transform.
#[derive(Debug, Clone)]
pub struct MetricValue {
    /// Mutual information in nats (higher is better).
    pub mi: f64,
    /// ∂MI/∂A (row-major 3×3 of the affine's matrix).
    pub grad_matrix: Matrix3<f64>,
    /// ∂MI/∂t.
    pub grad_translation: Vector3<f64>,
    /// Fraction of samples that fell inside the moving image.
    pub overlap: f64,
}

/// Mattes MI of fixed samples against one moving image.
pub struct MattesMi<'a> {
    samples: &'a FixedSamples,
    fixed_bins: usize,
    moving: &'a Volume,
    moving_inv: nalgebra::Matrix4<f64>,
    moving_min: f32,
    moving_bin_width: f32,
    moving_bins: usize,
}

/// Bins fixed-image values with a robust range: returns the bin of each value.
pub fn bin_fixed(values: &[f32], bins: usize) -> Vec<u16> {
    let (lo, hi) = robust_range(values);
    let width = (hi - lo) / (bins as f64 - 2.0 * PAD);
    values
        .iter()
        .map(|&v| {
            let c = ((v as f64).clamp(lo, hi) - lo) / width + PAD;
            (c.floor() as usize).min(bins - 1 - PAD as usize) as u16
        })
        .collect()
}

fn robust_range(values: &[f32]) -> (f64, f64) {
    let p = percentiles(values, |_| true, &[0.5, 99.5]).unwrap_or(vec![0.0, 1.0]);
    let (lo, hi) = (p[0] as f64, p[1] as f64);
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}

impl<'a> MattesMi<'a> {
    /// Prepares the metric; `bins` is the histogram size on each axis (32 in ANTs).
    pub fn new(samples: &'a FixedSamples, moving: &'a Volume, bins: usize) -> Self {
        // Range from a regular subsample: sorting millions of voxels at every level is wasteful.
        let data = moving.data();
        let step = (data.len() / 200_000).max(1);
        let sub: Vec<f32> = data.iter().step_by(step).cloned().collect();
        let (lo, hi) = robust_range(&sub);
        MattesMi {
            samples,
            fixed_bins: bins,
            moving,
            moving_inv: moving
                .affine()
                .try_inverse()
                .expect("volume affines are invertible"),
            moving_min: lo as f32,
            moving_bin_width: ((hi - lo) / (bins as f64 - 2.0 * PAD)) as f32,
            moving_bins: bins,
        }
    }

    /// MI and its gradient for the map `y = A·x + c + t` applied to the samples' `x` (already
    /// relative to the centre `c`): `matrix = A`, `offset = c + t`.
    pub fn evaluate(&self, matrix: &Matrix3<f64>, offset: &Vector3<f64>) -> MetricValue {
        let inv = self.moving_inv;
        let to_vox_m: Matrix3<f64> = inv.fixed_view::<3, 3>(0, 0).into_owned();
        let to_vox_t = Vector3::new(inv[(0, 3)], inv[(1, 3)], inv[(2, 3)]);
        // Combined: fixed point (relative to centre) -> moving voxel.
        let m = to_vox_m * matrix;
        let o = to_vox_m * offset + to_vox_t;
        // Voxel-space gradient -> world gradient.
        let grad_to_world = to_vox_m.transpose();
        let dims = self.moving.dims();
        let data = self.moving.data();
        let lo = self.moving_min;
        let width = self.moving_bin_width;
        let hi_bin = self.moving_bins as f32 - PAD as f32 - 1e-3;
        // Pass 1: sample the moving image.
        let sampled: Vec<Option<(f32, [f32; 3])>> = self
            .samples
            .points
            .par_iter()
            .map(|p| {
                let x = Vector3::new(p[0] as f64, p[1] as f64, p[2] as f64);
                let v = m * x + o;
                let (val, g) = trilinear_with_gradient(data, dims, v[0], v[1], v[2])?;
                let kappa = ((val - lo) / width + PAD as f32).clamp(PAD as f32, hi_bin);
                Some((kappa, g))
            })
            .collect();
        let nb = self.moving_bins;
        let nf = self.fixed_bins;
        let mut joint = vec![0f64; nf * nb];
        let mut count = 0usize;
        for (s, &fb) in sampled.iter().zip(&self.samples.bins) {
            if let Some((kappa, _)) = s {
                count += 1;
                let k0 = kappa.floor() as i64;
                let row = &mut joint[fb as usize * nb..(fb as usize + 1) * nb];
                for b in (k0 - 1)..=(k0 + 2) {
                    row[b as usize] += bspline3(b as f64 - *kappa as f64);
                }
            }
        }
        let overlap = count as f64 / self.samples.points.len().max(1) as f64;
        if count < 16 {
            return MetricValue {
                mi: 0.0,
                grad_matrix: Matrix3::zeros(),
                grad_translation: Vector3::zeros(),
                overlap,
            };
        }
        let n = count as f64;
        joint.iter_mut().for_each(|v| *v /= n);
        let mut pf = vec![0f64; nf];
        let mut pm = vec![0f64; nb];
        for f in 0..nf {
            for b in 0..nb {
                pf[f] += joint[f * nb + b];
                pm[b] += joint[f * nb + b];
            }
        }
        let mut mi = 0.0;
        // log(p / pm), the weight of each histogram cell in the gradient.
        let mut weight = vec![0f64; nf * nb];
        for f in 0..nf {
            for b in 0..nb {
                let p = joint[f * nb + b];
                if p > 1e-16 {
                    mi += p * (p / (pf[f] * pm[b])).ln();
                    weight[f * nb + b] = (p / pm[b]).ln();
                }
            }
        }
        // Pass 2: dMI/dμ = Σ_x −(1/(N·Δm)) Σ_b w(ι_x, b)·β3'(b − κ_x) · ∇m(T(x)) · ∂T/∂μ.
        let scale = -1.0 / (n * width as f64);
        // Fixed-size chunks summed in order: the result does not depend on how rayon schedules
        // the work, so registrations (and outputs) are bit-reproducible.
        const CHUNK: usize = 4096;
        let partial: Vec<(Matrix3<f64>, Vector3<f64>)> = self
            .samples
            .points
            .par_chunks(CHUNK)
            .zip(sampled.par_chunks(CHUNK))
            .zip(self.samples.bins.par_chunks(CHUNK))
            .map(|((points, sampled), bins)| {
                let mut ga = Matrix3::<f64>::zeros();
                let mut gt = Vector3::<f64>::zeros();
                for ((p, s), &fb) in points.iter().zip(sampled).zip(bins) {
                    if let Some((kappa, g)) = s {
                        let k0 = kappa.floor() as i64;
                        let row = &weight[fb as usize * nb..(fb as usize + 1) * nb];
                        let mut d = 0.0;
                        for b in (k0 - 1)..=(k0 + 2) {
                            d += row[b as usize] * bspline3_derivative(b as f64 - *kappa as f64);
                        }
                        let w = scale * d;
                        let gw =
                            grad_to_world * Vector3::new(g[0] as f64, g[1] as f64, g[2] as f64) * w;
                        let x = Vector3::new(p[0] as f64, p[1] as f64, p[2] as f64);
                        ga += gw * x.transpose();
                        gt += gw;
                    }
                }
                (ga, gt)
            })
            .collect();
        let (ga, gt) = partial
            .into_iter()
            .fold((Matrix3::zeros(), Vector3::zeros()), |a, b| {
                (a.0 + b.0, a.1 + b.1)
            });
        MetricValue {
            mi,
            grad_matrix: ga,
            grad_translation: gt,
            overlap,
        }
    }
}

/// Centred cubic B-spline.
#[inline]
fn bspline3(u: f64) -> f64 {
    let a = u.abs();
    if a < 1.0 {
        2.0 / 3.0 - a * a + 0.5 * a * a * a
    } else if a < 2.0 {
        let t = 2.0 - a;
        t * t * t / 6.0
    } else {
        0.0
    }
}

/// Derivative of [`bspline3`].
#[inline]
fn bspline3_derivative(u: f64) -> f64 {
    let a = u.abs();
    if a < 1.0 {
        -2.0 * u + 1.5 * u * a
    } else if a < 2.0 {
        let t = 2.0 - a;
        -0.5 * t * t * u.signum()
    } else {
        0.0
    }
}

/// Trilinear value and exact gradient (per voxel index) of the interpolant at a voxel position;
/// `None` outside the outer voxel centres.
#[inline]
pub fn trilinear_with_gradient(
    data: &[f32],
    dims: [usize; 3],
    x: f64,
    y: f64,
    z: f64,
) -> Option<(f32, [f32; 3])> {
    let inside = |c: f64, n: usize| c >= 0.0 && c <= (n - 1) as f64;
    if !(inside(x, dims[0]) && inside(y, dims[1]) && inside(z, dims[2])) {
        return None;
    }
    let i0 = (x.floor() as usize).min(dims[0].saturating_sub(2));
    let j0 = (y.floor() as usize).min(dims[1].saturating_sub(2));
    let k0 = (z.floor() as usize).min(dims[2].saturating_sub(2));
    let i1 = (i0 + 1).min(dims[0] - 1);
    let j1 = (j0 + 1).min(dims[1] - 1);
    let k1 = (k0 + 1).min(dims[2] - 1);
    let (fx, fy, fz) = (
        (x - i0 as f64) as f32,
        (y - j0 as f64) as f32,
        (z - k0 as f64) as f32,
    );
    let at = |i: usize, j: usize, k: usize| data[i + dims[0] * (j + dims[1] * k)];
    let (c000, c100, c010, c110) = (
        at(i0, j0, k0),
        at(i1, j0, k0),
        at(i0, j1, k0),
        at(i1, j1, k0),
    );
    let (c001, c101, c011, c111) = (
        at(i0, j0, k1),
        at(i1, j0, k1),
        at(i0, j1, k1),
        at(i1, j1, k1),
    );
    let c00 = c000 + (c100 - c000) * fx;
    let c10 = c010 + (c110 - c010) * fx;
    let c01 = c001 + (c101 - c001) * fx;
    let c11 = c011 + (c111 - c011) * fx;
    let c0 = c00 + (c10 - c00) * fy;
    let c1 = c01 + (c11 - c01) * fy;
    let value = c0 + (c1 - c0) * fz;
    let dx0 = (c100 - c000) + ((c110 - c010) - (c100 - c000)) * fy;
    let dx1 = (c101 - c001) + ((c111 - c011) - (c101 - c001)) * fy;
    let dx = dx0 + (dx1 - dx0) * fz;
    let dy = (c10 - c00) + ((c11 - c01) - (c10 - c00)) * fz;
    let dz = c1 - c0;
    Some((value, [dx, dy, dz]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix4;

    #[test]
    fn bspline_window_is_a_partition_of_unity_with_matching_derivative() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let s: f64 = (-2..=2).map(|b| bspline3(b as f64 - t)).sum();
            assert!((s - 1.0).abs() < 1e-12);
            let h = 1e-6;
            let num = (bspline3(t + 0.3 + h) - bspline3(t + 0.3 - h)) / (2.0 * h);
            assert!((num - bspline3_derivative(t + 0.3)).abs() < 1e-6);
        }
    }

    fn blob(shift: f64) -> Volume {
        let dims = [32, 32, 32];
        let mut data = vec![0f32; 32 * 32 * 32];
        for k in 0..32 {
            for j in 0..32 {
                for i in 0..32 {
                    let (x, y, z) = (i as f64 - 16.0 - shift, j as f64 - 15.0, k as f64 - 14.0);
                    let r2 = x * x / 60.0 + y * y / 40.0 + z * z / 30.0;
                    data[i + 32 * (j + 32 * k)] =
                        (100.0 * (-r2).exp() + 30.0 * (x / 5.0).sin().abs()) as f32;
                }
            }
        }
        let mut a = Matrix4::identity();
        a.fixed_view_mut::<3, 1>(0, 3)
            .copy_from(&Vector3::new(-16.0, -16.0, -16.0));
        Volume::new(dims, a, data).unwrap()
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let fixed = blob(0.0);
        let moving = blob(1.5);
        let mut points = Vec::new();
        let mut values = Vec::new();
        for k in (4..28).step_by(2) {
            for j in (4..28).step_by(2) {
                for i in (4..28).step_by(2) {
                    let w = fixed.voxel_to_world(i as f64, j as f64, k as f64);
                    points.push([w[0] as f32, w[1] as f32, w[2] as f32]);
                    values.push(fixed.get(i, j, k));
                }
            }
        }
        let samples = FixedSamples {
            bins: bin_fixed(&values, 32),
            points,
        };
        let metric = MattesMi::new(&samples, &moving, 32);
        let a = Matrix3::identity();
        let t = Vector3::new(0.3, -0.2, 0.1);
        let v = metric.evaluate(&a, &t);
        let h = 1e-3;
        for ax in 0..3 {
            let mut tp = t;
            tp[ax] += h;
            let mut tm = t;
            tm[ax] -= h;
            let num = (metric.evaluate(&a, &tp).mi - metric.evaluate(&a, &tm).mi) / (2.0 * h);
            let ana = v.grad_translation[ax];
            assert!(
                (num - ana).abs() < 0.05 * num.abs().max(1e-3),
                "axis {ax}: numeric {num}, analytic {ana}"
            );
        }
        // Moving toward the true shift (+1.5 along x) increases MI.
        assert!(v.grad_translation[0] > 0.0, "{:?}", v.grad_translation);
    }
}
