//! Smooth random diffeomorphisms that turn one brain into a new anatomy: a stationary velocity
//! field (white noise smoothed by a Gaussian, scaled to the wanted largest displacement)
//! integrated by scaling and squaring (Arsigny et al. 2006), plus an age-dependent expansion
//! around the lateral ventricles. The map is checked by its smallest Jacobian determinant.
//!
//! Fields live on the axis-aligned model grid the sources are preprocessed onto, in millimetres.

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::metrics::gaussian_filter_axes;
use crate::volume::Volume;

/// What makes one deformation (written to the ground truth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeformationParams {
    /// Seed of the velocity field.
    pub seed: u64,
    /// Largest displacement of the random part (mm); 0 keeps the source anatomy.
    pub max_displacement_mm: f64,
    /// Gaussian σ (mm) smoothing the velocity field.
    pub smoothness_mm: f64,
    /// Relative expansion α of the ventricles: the map pulls points towards the ventricular
    /// centre by α·(x − c)·exp(−|x − c|²/2R²), R = 25 mm (positive α: larger ventricles).
    pub ventricle_expansion: f64,
}

/// Where the expansion is centred: the lateral ventricles in MNI152 (world mm).
const VENTRICLE_CENTRE_MM: [f64; 3] = [0.0, -5.0, 15.0];
const VENTRICLE_RADIUS_MM: f64 = 25.0;
/// Scaling-and-squaring steps: the velocity is divided by 2⁶ before composing.
const SQUARINGS: u32 = 6;

/// A dense displacement field: the output voxel at x samples the source at x + u(x).
#[derive(Debug, Clone)]
pub struct Deformation {
    dims: [usize; 3],
    voxel_mm: [f64; 3],
    /// Displacement (mm) per voxel and axis.
    u: Vec<[f64; 3]>,
    /// Smallest Jacobian determinant of x ↦ x + u(x) (> 0: one-to-one).
    pub min_jacobian: f64,
    /// Largest displacement (mm).
    pub max_displacement_mm: f64,
}

fn trilinear_vec(u: &[[f64; 3]], dims: [usize; 3], p: [f64; 3]) -> [f64; 3] {
    let [nx, ny, nz] = dims;
    let c = [
        p[0].clamp(0.0, (nx - 1) as f64),
        p[1].clamp(0.0, (ny - 1) as f64),
        p[2].clamp(0.0, (nz - 1) as f64),
    ];
    let i0 = [
        c[0].floor() as usize,
        c[1].floor() as usize,
        c[2].floor() as usize,
    ];
    let i1 = [
        (i0[0] + 1).min(nx - 1),
        (i0[1] + 1).min(ny - 1),
        (i0[2] + 1).min(nz - 1),
    ];
    let f = [
        c[0] - i0[0] as f64,
        c[1] - i0[1] as f64,
        c[2] - i0[2] as f64,
    ];
    let mut out = [0.0; 3];
    for (dz, wz) in [(i0[2], 1.0 - f[2]), (i1[2], f[2])] {
        for (dy, wy) in [(i0[1], 1.0 - f[1]), (i1[1], f[1])] {
            for (dx, wx) in [(i0[0], 1.0 - f[0]), (i1[0], f[0])] {
                let w = wx * wy * wz;
                let v = u[dx + nx * (dy + ny * dz)];
                for a in 0..3 {
                    out[a] += w * v[a];
                }
            }
        }
    }
    out
}

impl Deformation {
    /// The deformation of `params` on the grid of `reference`.
    pub fn new(reference: &Volume, params: &DeformationParams) -> Deformation {
        let dims = reference.dims();
        let voxel_mm = reference.voxel_sizes();
        let n = dims.iter().product::<usize>();
        let mut u = vec![[0.0f64; 3]; n];
        if params.max_displacement_mm > 0.0 {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            let sigmas = [0, 1, 2].map(|a| params.smoothness_mm / voxel_mm[a]);
            let comps: Vec<Vec<f64>> = (0..3)
                .map(|_| {
                    let noise: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
                    gaussian_filter_axes(&noise, dims, sigmas, 3.5)
                })
                .collect();
            let peak = (0..n)
                .map(|i| (comps[0][i].powi(2) + comps[1][i].powi(2) + comps[2][i].powi(2)).sqrt())
                .fold(0.0, f64::max)
                .max(1e-12);
            let k = params.max_displacement_mm / peak / 2f64.powi(SQUARINGS as i32);
            for (i, v) in u.iter_mut().enumerate() {
                *v = [comps[0][i] * k, comps[1][i] * k, comps[2][i] * k];
            }
            // φ = exp(v): φ_{1/2^N} ≈ id + v/2^N, then φ ← φ ∘ φ N times.
            let [nx, ny, _] = dims;
            for _ in 0..SQUARINGS {
                let prev = u.clone();
                for (i, v) in u.iter_mut().enumerate() {
                    let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
                    let p = [
                        x as f64 + prev[i][0] / voxel_mm[0],
                        y as f64 + prev[i][1] / voxel_mm[1],
                        z as f64 + prev[i][2] / voxel_mm[2],
                    ];
                    let w = trilinear_vec(&prev, dims, p);
                    *v = [prev[i][0] + w[0], prev[i][1] + w[1], prev[i][2] + w[2]];
                }
            }
        }
        if params.ventricle_expansion != 0.0 {
            let [nx, ny, _] = dims;
            for (i, v) in u.iter_mut().enumerate() {
                let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
                let w = reference.voxel_to_world(x as f64, y as f64, z as f64);
                let d = [0, 1, 2].map(|a| w[a] - VENTRICLE_CENTRE_MM[a]);
                let r2 = d.iter().map(|x| x * x).sum::<f64>();
                let g = (-r2 / (2.0 * VENTRICLE_RADIUS_MM * VENTRICLE_RADIUS_MM)).exp();
                for a in 0..3 {
                    v[a] -= params.ventricle_expansion * d[a] * g;
                }
            }
        }
        let mut d = Deformation {
            dims,
            voxel_mm,
            max_displacement_mm: u
                .iter()
                .map(|v| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt())
                .fold(0.0, f64::max),
            u,
            min_jacobian: 1.0,
        };
        d.min_jacobian = d.jacobian_min();
        d
    }

    /// The smallest determinant of the Jacobian of x ↦ x + u(x) (central differences).
    fn jacobian_min(&self) -> f64 {
        let [nx, ny, nz] = self.dims;
        let mut min = f64::INFINITY;
        let at = |x: usize, y: usize, z: usize| self.u[x + nx * (y + ny * z)];
        for z in 1..nz.saturating_sub(1) {
            for y in 1..ny.saturating_sub(1) {
                for x in 1..nx.saturating_sub(1) {
                    let mut j = [[0.0; 3]; 3];
                    let pairs = [
                        (at(x + 1, y, z), at(x - 1, y, z)),
                        (at(x, y + 1, z), at(x, y - 1, z)),
                        (at(x, y, z + 1), at(x, y, z - 1)),
                    ];
                    for (b, (p, m)) in pairs.iter().enumerate() {
                        for a in 0..3 {
                            j[a][b] = (p[a] - m[a]) / (2.0 * self.voxel_mm[b])
                                + if a == b { 1.0 } else { 0.0 };
                        }
                    }
                    let det = j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
                        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
                        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]);
                    min = min.min(det);
                }
            }
        }
        if min.is_finite() { min } else { 1.0 }
    }

    /// `source` (on the same grid) resampled through the map, trilinear, 0 outside.
    pub fn warp(&self, source: &Volume) -> Volume {
        let [nx, ny, nz] = self.dims;
        let d = source.data();
        let sample = |p: [f64; 3]| -> f32 {
            if p.iter()
                .zip(self.dims)
                .any(|(&c, n)| c < 0.0 || c > (n - 1) as f64)
            {
                return 0.0;
            }
            let i0 = p.map(|c| c.floor() as usize);
            let f = [0, 1, 2].map(|a| p[a] - i0[a] as f64);
            let mut acc = 0.0;
            for dz in 0..2 {
                for dy in 0..2 {
                    for dx in 0..2 {
                        let (x, y, z) = (
                            (i0[0] + dx).min(nx - 1),
                            (i0[1] + dy).min(ny - 1),
                            (i0[2] + dz).min(nz - 1),
                        );
                        let w = (if dx == 1 { f[0] } else { 1.0 - f[0] })
                            * (if dy == 1 { f[1] } else { 1.0 - f[1] })
                            * (if dz == 1 { f[2] } else { 1.0 - f[2] });
                        acc += w * d[x + nx * (y + ny * z)] as f64;
                    }
                }
            }
            acc as f32
        };
        let data: Vec<f32> = (0..nx * ny * nz)
            .map(|i| {
                let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
                let u = self.u[i];
                sample([
                    x as f64 + u[0] / self.voxel_mm[0],
                    y as f64 + u[1] / self.voxel_mm[1],
                    z as f64 + u[2] / self.voxel_mm[2],
                ])
            })
            .collect();
        source.with_data(data).expect("same grid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(dims: [usize; 3]) -> Volume {
        let mut a = nalgebra::Matrix4::identity() * 2.0;
        a[(3, 3)] = 1.0;
        a[(0, 3)] = -(dims[0] as f64);
        a[(1, 3)] = -(dims[1] as f64);
        a[(2, 3)] = -(dims[2] as f64);
        let n = dims.iter().product();
        Volume::new(dims, a, (0..n).map(|i| (i % 7) as f32).collect()).unwrap()
    }

    #[test]
    fn identity_params_keep_the_image() {
        let v = grid([12, 10, 8]);
        let d = Deformation::new(
            &v,
            &DeformationParams {
                seed: 1,
                max_displacement_mm: 0.0,
                smoothness_mm: 10.0,
                ventricle_expansion: 0.0,
            },
        );
        assert_eq!(d.warp(&v).data(), v.data());
        assert_eq!(d.min_jacobian, 1.0);
    }

    #[test]
    fn random_deformations_are_diffeomorphic_seeded_and_bounded() {
        let v = grid([32, 36, 30]);
        let p = DeformationParams {
            seed: 42,
            max_displacement_mm: 4.0,
            smoothness_mm: 10.0,
            ventricle_expansion: 0.15,
        };
        let a = Deformation::new(&v, &p);
        let b = Deformation::new(&v, &p);
        assert_eq!(a.warp(&v).data(), b.warp(&v).data());
        assert!(a.min_jacobian > 0.2, "{}", a.min_jacobian);
        assert!(a.max_displacement_mm > 1.0 && a.max_displacement_mm < 8.0);
        let c = Deformation::new(&v, &DeformationParams { seed: 43, ..p });
        assert_ne!(a.warp(&v).data(), c.warp(&v).data());
    }
}
