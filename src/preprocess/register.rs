//! Affine registration of a moving image (a subject's T1w) to a fixed image (the template):
//! centre-of-mass initialisation, then rigid → affine, each over a resolution pyramid (e.g. 8, 4,
//! 2 mm), maximising Mattes mutual information ([`super::mattes`]) with regular-step gradient
//! descent (ITK's `RegularStepGradientDescentOptimizer`: fixed-length steps along the gradient,
//! halved whenever the gradient turns back).
//!
//! The result is the point map from fixed (template) world space to moving (subject) world space,
//! the ITK/ANTs convention: resampling the subject onto the template grid uses exactly this map,
//! and it is what `from-T1w_to-<template>_mode-image_xfm.txt` stores.
//!
//! Parameters are scaled so that one unit moves a point at the sample cloud's radius by about a
//! millimetre, which makes rotations, scales and translations comparable for the optimiser.
//!
//! Written here: no maintained Rust crate registers 3D images.

use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3};
use serde::{Deserialize, Serialize};

use super::filter::downsample;
use super::itk::WorldAffine;
use super::mattes::{FixedSamples, MattesMi, bin_fixed};
use super::resample::{Interpolation, resample};
use crate::volume::Volume;

/// Which transform family a stage optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Rotation and translation (6 parameters).
    Rigid,
    /// Full affine (12 parameters).
    Affine,
}

/// Registration settings (serialised into the output sidecar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationConfig {
    /// Pyramid levels (voxel size in mm) of the rigid stage, coarse to fine.
    pub rigid_levels_mm: Vec<f64>,
    /// Pyramid levels of the affine stage.
    pub affine_levels_mm: Vec<f64>,
    /// Histogram bins per image.
    pub bins: usize,
    /// At most this many fixed-image samples per level (regular subsampling beyond it).
    pub max_samples: usize,
    /// Iteration cap per level.
    pub max_iterations: usize,
    /// First step length per level, as a fraction of the level's voxel size (mm).
    pub initial_step: f64,
    /// A level has converged when the step falls below this fraction of its voxel size.
    pub min_step: f64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            rigid_levels_mm: vec![8.0, 4.0],
            affine_levels_mm: vec![8.0, 4.0, 2.0],
            bins: 32,
            max_samples: 40_000,
            max_iterations: 150,
            initial_step: 0.5,
            min_step: 0.01,
        }
    }
}

/// What happened at one level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Rigid or affine.
    pub stage: Stage,
    /// Voxel size of the level (mm).
    pub resolution_mm: f64,
    /// Iterations run.
    pub iterations: usize,
    /// Mutual information (nats) before and after.
    pub initial_mi: f64,
    /// After.
    pub final_mi: f64,
    /// Whether the step shrank below the threshold before the iteration cap.
    pub converged: bool,
}

/// A registration result.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    /// Fixed-to-moving point map (RAS mm).
    #[serde(skip)]
    pub fixed_to_moving: WorldAffine,
    /// Per-level reports, in order.
    pub levels: Vec<LevelReport>,
}

impl Registration {
    /// Whether the final level converged.
    pub fn converged(&self) -> bool {
        self.levels.last().is_some_and(|l| l.converged)
    }
}

/// Why a registration could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistrationError {
    /// An image has no structure to register (blank or constant).
    #[error("the {0} image is blank or constant; nothing to register")]
    Blank(&'static str),
    /// The images do not overlap at all under the initial transform.
    #[error("the images do not overlap after initialisation (check the header affines)")]
    NoOverlap,
}

/// The centre of mass of the voxels above a low intensity threshold (10 % of the 99th percentile),
/// in world mm: robust to background noise, and what moments initialisation aligns.
pub fn centre_of_mass(volume: &Volume) -> Option<[f64; 3]> {
    let data = volume.data();
    let step = (data.len() / 200_000).max(1);
    let sub: Vec<f32> = data.iter().step_by(step).cloned().collect();
    let p99 = super::filter::percentiles(&sub, |_| true, &[99.0])?[0];
    if p99 <= 0.0 {
        return None;
    }
    let thr = 0.1 * p99;
    let [nx, ny, nz] = volume.dims();
    let (mut sw, mut si, mut sj, mut sk) = (0f64, 0f64, 0f64, 0f64);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = volume.get(i, j, k);
                if v > thr && v.is_finite() {
                    let w = v as f64;
                    sw += w;
                    si += w * i as f64;
                    sj += w * j as f64;
                    sk += w * k as f64;
                }
            }
        }
    }
    (sw > 0.0).then(|| volume.voxel_to_world(si / sw, sj / sw, sk / sw))
}

/// The translation that maps the fixed image's centre of mass onto the moving image's.
pub fn moments_initialisation(
    fixed: &Volume,
    moving: &Volume,
) -> Result<WorldAffine, RegistrationError> {
    let cf = centre_of_mass(fixed).ok_or(RegistrationError::Blank("fixed"))?;
    let cm = centre_of_mass(moving).ok_or(RegistrationError::Blank("moving"))?;
    Ok(translation(cf, cm))
}

/// The translation taking point `from` to point `to` (world mm).
pub fn translation(from: [f64; 3], to: [f64; 3]) -> WorldAffine {
    let mut m = Matrix4::identity();
    for r in 0..3 {
        m[(r, 3)] = to[r] - from[r];
    }
    WorldAffine(m)
}

/// A fixed image prepared for registration: its pyramid and optional mask, built once and reused
/// for every subject (the template).
pub struct FixedImage {
    levels: Vec<(f64, FixedSamples)>,
    centre: Vector3<f64>,
    radius: f64,
}

impl FixedImage {
    /// Builds samples at each resolution in `resolutions_mm`; with a mask, only voxels inside it
    /// (value > 0.5 after resampling) are sampled.
    pub fn new(
        image: &Volume,
        mask: Option<&Volume>,
        resolutions_mm: &[f64],
        config: &RegistrationConfig,
    ) -> Result<FixedImage, RegistrationError> {
        let mut centre_acc = Vector3::zeros();
        let mut raw_levels = Vec::new();
        // Levels built finest first, each from the previous one (one big smoothing, not three).
        let pyramid = MovingPyramid::new(image, resolutions_mm);
        for &res in resolutions_mm {
            let level = pyramid.level(res).expect("built above").clone();
            let mask_level = mask.map(|m| {
                resample(
                    m,
                    &super::resample::Grid::of(&level),
                    Interpolation::Linear,
                    0.0,
                )
                .expect("level grids are valid")
            });
            let dims = level.dims();
            let n = level.data().len();
            let inside: Vec<usize> = (0..n)
                .filter(|&i| mask_level.as_ref().is_none_or(|m| m.data()[i] > 0.5))
                .collect();
            let stride = inside.len().div_ceil(config.max_samples).max(1);
            let mut points = Vec::new();
            let mut values = Vec::new();
            for &idx in inside.iter().step_by(stride) {
                let (i, j, k) = (
                    idx % dims[0],
                    (idx / dims[0]) % dims[1],
                    idx / (dims[0] * dims[1]),
                );
                let w = level.voxel_to_world(i as f64, j as f64, k as f64);
                points.push(w);
                values.push(level.data()[idx]);
            }
            if values.len() < 64 {
                return Err(RegistrationError::Blank("fixed"));
            }
            raw_levels.push((res, points, values));
        }
        // Centre and radius of the finest level's sample cloud.
        let (_, pts, _) = raw_levels.last().ok_or(RegistrationError::Blank("fixed"))?;
        for p in pts {
            centre_acc += Vector3::new(p[0], p[1], p[2]);
        }
        let centre = centre_acc / pts.len() as f64;
        let radius = (pts
            .iter()
            .map(|p| (Vector3::new(p[0], p[1], p[2]) - centre).norm_squared())
            .sum::<f64>()
            / pts.len() as f64)
            .sqrt()
            .max(1.0);
        let levels = raw_levels
            .into_iter()
            .map(|(res, points, values)| {
                let bins = bin_fixed(&values, config.bins);
                let points = points
                    .iter()
                    .map(|p| {
                        [
                            (p[0] - centre[0]) as f32,
                            (p[1] - centre[1]) as f32,
                            (p[2] - centre[2]) as f32,
                        ]
                    })
                    .collect();
                (res, FixedSamples { points, bins })
            })
            .collect();
        Ok(FixedImage {
            levels,
            centre,
            radius,
        })
    }

    fn level(&self, res: f64) -> Option<&FixedSamples> {
        self.levels
            .iter()
            .find(|(r, _)| (r - res).abs() < 1e-9)
            .map(|(_, s)| s)
    }

    /// All resolutions prepared.
    pub fn resolutions(&self) -> Vec<f64> {
        self.levels.iter().map(|(r, _)| *r).collect()
    }
}

/// Current transform in the centred form `y = A·(x − c) + c + t`.
#[derive(Debug, Clone, Copy)]
struct Centred {
    a: Matrix3<f64>,
    t: Vector3<f64>,
}

impl Centred {
    fn from_world(m: &WorldAffine, c: &Vector3<f64>) -> Centred {
        let a: Matrix3<f64> = m.0.fixed_view::<3, 3>(0, 0).into_owned();
        let off = Vector3::new(m.0[(0, 3)], m.0[(1, 3)], m.0[(2, 3)]);
        // y = A x + off = A (x − c) + c + t  ⇒  t = off + A c − c.
        Centred {
            a,
            t: off + a * c - c,
        }
    }

    fn to_world(self, c: &Vector3<f64>) -> WorldAffine {
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0).copy_from(&self.a);
        let off = self.t + c - self.a * c;
        for r in 0..3 {
            m[(r, 3)] = off[r];
        }
        WorldAffine(m)
    }
}

/// A moving image's resolution pyramid, built finest level first, each level from the previous
/// one (so the full-resolution image is smoothed only once), and reusable across stages.
pub struct MovingPyramid {
    levels: Vec<(f64, Volume)>,
}

impl MovingPyramid {
    /// Builds the levels in `resolutions_mm` (any order).
    pub fn new(moving: &Volume, resolutions_mm: &[f64]) -> MovingPyramid {
        let mut res: Vec<f64> = resolutions_mm.to_vec();
        res.sort_by(f64::total_cmp);
        res.dedup();
        let mut levels: Vec<(f64, Volume)> = Vec::with_capacity(res.len());
        for r in res {
            let level = match levels.last() {
                Some((_, finer)) => downsample(finer, r),
                None => downsample(moving, r),
            };
            levels.push((r, level));
        }
        MovingPyramid { levels }
    }

    fn level(&self, res: f64) -> Option<&Volume> {
        self.levels
            .iter()
            .find(|(r, _)| (r - res).abs() < 1e-9)
            .map(|(_, v)| v)
    }
}

/// Registers the `moving` pyramid to `fixed`, starting from `initial` (fixed → moving), with the
/// levels of `config` (each must have been prepared in both pyramids).
pub fn register(
    fixed: &FixedImage,
    moving: &MovingPyramid,
    initial: &WorldAffine,
    config: &RegistrationConfig,
) -> Result<Registration, RegistrationError> {
    let c = fixed.centre;
    let mut current = Centred::from_world(initial, &c);
    let mut levels = Vec::new();
    let stages = config
        .rigid_levels_mm
        .iter()
        .map(|&r| (Stage::Rigid, r))
        .chain(config.affine_levels_mm.iter().map(|&r| (Stage::Affine, r)));
    for (stage, res) in stages {
        let (Some(samples), Some(moving_level)) = (fixed.level(res), moving.level(res)) else {
            continue;
        };
        let metric = MattesMi::new(samples, moving_level, config.bins);
        let (next, report) = optimise(&metric, current, stage, res, (c, fixed.radius), config)?;
        current = next;
        levels.push(report);
    }
    Ok(Registration {
        fixed_to_moving: current.to_world(&c),
        levels,
    })
}

/// Regular-step gradient ascent on MI at one level.
fn optimise(
    metric: &MattesMi,
    start: Centred,
    stage: Stage,
    res: f64,
    (centre, radius): (Vector3<f64>, f64),
    config: &RegistrationConfig,
) -> Result<(Centred, LevelReport), RegistrationError> {
    // Parameters q: rigid = (3 rotation angles × radius, 3 translations); affine = (9 matrix
    // entries × radius, 3 translations). Both relative to `start`.
    let nparams = if stage == Stage::Rigid { 6 } else { 12 };
    let build = |q: &[f64]| -> Centred {
        match stage {
            Stage::Rigid => {
                let r = Rotation3::from_euler_angles(q[0] / radius, q[1] / radius, q[2] / radius);
                Centred {
                    a: r.matrix() * start.a,
                    t: start.t + Vector3::new(q[3], q[4], q[5]),
                }
            }
            Stage::Affine => {
                let d = Matrix3::from_row_slice(&q[0..9]) / radius;
                Centred {
                    a: start.a + d,
                    t: start.t + Vector3::new(q[9], q[10], q[11]),
                }
            }
        }
    };
    let eval = |q: &[f64]| {
        let t = build(q);
        let v = metric.evaluate(&t.a, &(t.t + centre));
        (t, v)
    };
    let gradient = |q: &[f64], ga: &Matrix3<f64>, gt: &Vector3<f64>| -> Vec<f64> {
        match stage {
            Stage::Rigid => {
                let mut g = vec![0.0; 6];
                let h = 1e-6;
                for ax in 0..3 {
                    let mut qp = q.to_vec();
                    qp[ax] += h * radius;
                    let mut qm = q.to_vec();
                    qm[ax] -= h * radius;
                    let da = (build(&qp).a - build(&qm).a) / (2.0 * h * radius);
                    g[ax] = ga.component_mul(&da).sum();
                }
                g[3..6].copy_from_slice(gt.as_slice());
                g
            }
            Stage::Affine => {
                let mut g: Vec<f64> = (0..9).map(|i| ga[(i / 3, i % 3)] / radius).collect();
                g.extend_from_slice(gt.as_slice());
                g
            }
        }
    };
    let mut q = vec![0.0; nparams];
    let (_, first) = eval(&q);
    if first.overlap < 0.05 {
        return Err(RegistrationError::NoOverlap);
    }
    let initial_mi = first.mi;
    let mut best = (first.mi, q.clone());
    let mut step = config.initial_step * res;
    let min_step = config.min_step * res;
    let mut previous: Option<Vec<f64>> = None;
    let mut value = first;
    let mut iterations = 0;
    let mut converged = false;
    while iterations < config.max_iterations {
        iterations += 1;
        let g = gradient(&q, &value.grad_matrix, &value.grad_translation);
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            converged = true;
            break;
        }
        if let Some(p) = &previous
            && p.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>() < 0.0
        {
            step *= 0.5;
        }
        if step < min_step {
            converged = true;
            break;
        }
        for (qi, gi) in q.iter_mut().zip(&g) {
            *qi += step * gi / norm;
        }
        previous = Some(g);
        let (_, v) = eval(&q);
        if v.mi > best.0 {
            best = (v.mi, q.clone());
        }
        value = v;
    }
    let result = build(&best.1);
    Ok((
        result,
        LevelReport {
            stage,
            resolution_mm: res,
            iterations,
            initial_mi,
            final_mi: best.0,
            converged,
        },
    ))
}

/// Mean distance (mm) between two fixed→moving maps over a set of fixed-space points: the
/// registration error measure of the acceptance tests and QC.
pub fn mean_point_distance(a: &WorldAffine, b: &WorldAffine, points: &[[f64; 3]]) -> f64 {
    let total: f64 = points
        .iter()
        .map(|p| {
            let (x, y) = (a.apply(*p), b.apply(*p));
            ((x[0] - y[0]).powi(2) + (x[1] - y[1]).powi(2) + (x[2] - y[2]).powi(2)).sqrt()
        })
        .sum();
    total / points.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::resample::{Grid, resample_mapped};
    use crate::preprocess::template::TemplateImage;

    #[test]
    fn recovers_a_known_affine_of_the_template() {
        let t1 = TemplateImage::T1w.load().unwrap();
        let t1 = downsample(&t1, 2.0);
        let config = RegistrationConfig::default();
        let mut levels = config.rigid_levels_mm.clone();
        levels.extend(&config.affine_levels_mm);
        levels.sort_by(|a, b| b.total_cmp(a));
        levels.dedup();
        let fixed = FixedImage::new(&t1, None, &levels, &config).unwrap();
        // Known map: 8° about z, 5° about x, 4 % scale, 10 mm shift.
        let r = Rotation3::from_euler_angles(0.09, 0.0, 0.14);
        let mut truth = Matrix4::identity();
        truth
            .fixed_view_mut::<3, 3>(0, 0)
            .copy_from(&(r.matrix() * 1.04));
        truth[(0, 3)] = 10.0;
        truth[(1, 3)] = -6.0;
        // The moving image is the template seen through the inverse map, so that registering it
        // back yields `truth` as the fixed → moving map.
        let inv = truth.try_inverse().unwrap();
        let moving =
            resample_mapped(&t1, &Grid::of(&t1), &inv, Interpolation::Linear, 0.0).unwrap();
        let init = moments_initialisation(&t1, &moving).unwrap();
        let pyramid = MovingPyramid::new(&moving, &levels);
        let reg = register(&fixed, &pyramid, &init, &config).unwrap();
        let pts: Vec<[f64; 3]> = (0..200)
            .map(|i| {
                let f = i as f64;
                [
                    (f * 7.3) % 120.0 - 60.0,
                    (f * 3.1) % 150.0 - 90.0,
                    (f * 5.7) % 100.0 - 40.0,
                ]
            })
            .collect();
        let err = mean_point_distance(&reg.fixed_to_moving, &WorldAffine(truth), &pts);
        assert!(err < 0.5, "mean error {err} mm; {:?}", reg.levels);
    }
}
