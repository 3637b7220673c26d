//! A multi-site simulator with traveling subjects (`../shared/design/evaluation.md`): real brains,
//! preprocessed into MNI space, become subjects (the real anatomies, and new ones made by smooth
//! random diffeomorphic deformations of them, with an age effect), and every subject is rendered
//! as if scanned at each of K synthetic sites. A site is a seeded, documented parameter set
//! ([`SiteParams`]): a monotone intensity response moving the CSF/GM/WM levels (WM/GM contrast
//! 1.15–1.6) with a gamma, a smooth multiplicative receive bias (±5–25 %), Gaussian blur (σ 0–1.2
//! voxel, per axis), a global scanner scale and Rician noise (σ 1–5 % of WM).
//!
//! Everything is a pure function of the seed: rendering subject i at site k twice gives the same
//! bits, and the image a subject's BIDS file holds is exactly its rendering at its own site.
//! Writing the dataset is [`dataset`]'s job.

pub mod dataset;
pub mod deform;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::metrics::gaussian_filter_axes;
use crate::metrics::tissue::fit_tissue_mixture;
use crate::preprocess::t1w::{T1wOptions, preprocess_t1w};
use crate::volume::{Volume, to_closest_canonical};

pub use deform::{Deformation, DeformationParams};

/// Why a simulation cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A source image could not be read or preprocessed.
    #[error("{path}: {reason}")]
    Source {
        /// The file.
        path: String,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// Settings out of range.
    #[error("{0}")]
    Settings(String),
    /// Writing the dataset failed.
    #[error("{path}: {reason}")]
    Write {
        /// The file or folder.
        path: String,
        /// Why.
        reason: String,
    },
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationConfig {
    /// Subjects in the BIDS dataset.
    pub subjects: usize,
    /// Sites.
    pub sites: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Largest displacement (mm) of the random deformations making new anatomies.
    pub deformation_mm: f64,
    /// Smoothness (Gaussian σ, mm) of those deformations.
    pub deformation_smoothness_mm: f64,
    /// Age range of the subjects (uniform).
    pub age_range: [f64; 2],
    /// How far the sites are apart: every site parameter is moved from the middle of its
    /// range by this multiple of its drawn deviation ([`SiteParams::with_effect`]). 1 = the
    /// documented ranges; 0 = every site identical (no site effect: calibrates the site
    /// classifier against chance); up to 3 for deliberately strong sites.
    #[serde(default = "unit_site_effect")]
    pub site_effect: f64,
}

fn unit_site_effect() -> f64 {
    1.0
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            subjects: 8,
            sites: 4,
            seed: 0,
            deformation_mm: 3.0,
            deformation_smoothness_mm: 12.0,
            age_range: [20.0, 80.0],
            site_effect: 1.0,
        }
    }
}

impl SimulationConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), SimulateError> {
        let bad = |m: String| Err(SimulateError::Settings(m));
        if self.sites < 2 || self.sites > 26 {
            return bad(format!("--sites {}: give 2 to 26 sites", self.sites));
        }
        if self.subjects < self.sites {
            return bad(format!(
                "--subjects {} is fewer than --sites {}: every site needs a subject",
                self.subjects, self.sites
            ));
        }
        if self.subjects > 999 {
            return bad(format!("--subjects {}: at most 999", self.subjects));
        }
        if !(0.0..=10.0).contains(&self.deformation_mm) {
            return bad(format!(
                "--deformation-mm {}: give 0 to 10 mm",
                self.deformation_mm
            ));
        }
        if !(self.deformation_smoothness_mm >= 4.0 && self.deformation_smoothness_mm <= 40.0) {
            return bad(format!(
                "deformation smoothness {} mm: give 4 to 40 mm",
                self.deformation_smoothness_mm
            ));
        }
        if !(0.0..=3.0).contains(&self.site_effect) {
            return bad(format!(
                "--site-effect {}: give 0 (identical sites) to 3 (three times the documented spread)",
                self.site_effect
            ));
        }
        if !(self.age_range[0] >= 0.0 && self.age_range[1] >= self.age_range[0]) {
            return bad(format!("age range {:?} is not a range", self.age_range));
        }
        Ok(())
    }
}

/// A seed for one purpose (`stream`) of one object (`index`), SplitMix64-mixed so that nearby
/// seeds give unrelated streams.
pub fn derived_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const STREAM_SITE: u64 = 1;
const STREAM_SUBJECT: u64 = 2;
const STREAM_NOISE: u64 = 3;
const STREAM_DESIGN: u64 = 4;

/// The bias pattern of the middle site ([`SiteParams::with_effect`]): a left-right and
/// front-back ramp with a little curvature, as a head coil's receive profile.
pub const MIDDLE_BIAS: [f64; 9] = [0.5, 0.5, 0.0, -0.3, -0.3, 0.0, 0.0, 0.0, 0.0];

/// One synthetic site (every field is written to the ground truth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteParams {
    /// BIDS label (`A`, `B`, ...).
    pub label: String,
    /// WM/GM intensity ratio of this site's images (1.15–1.6), after the gamma.
    pub wm_gm_ratio: f64,
    /// CSF/GM intensity ratio before the gamma (0.2–0.5).
    pub csf_gm_ratio: f64,
    /// Gamma of the response (0.7–1.4): y = w·(x/w)^γ on the landmark-mapped intensity x.
    pub gamma: f64,
    /// Largest relative deviation of the receive bias inside the brain (0.05–0.25).
    pub bias_amplitude: f64,
    /// Coefficients of the log-bias in the 9 monomials x, y, z, x², y², z², xy, xz, yz of
    /// coordinates normalised to [−1, 1] over the grid, before scaling to `bias_amplitude`.
    pub bias_coefficients: [f64; 9],
    /// Rician noise σ as a fraction of the WM intensity (0.01–0.05).
    pub noise_fraction: f64,
    /// Gaussian blur σ per voxel axis (0–1.2 voxel).
    pub blur_voxels: [f64; 3],
    /// Global scale (scanner units per GM level).
    pub scale: f64,
}

impl SiteParams {
    /// Site `index` of a simulation seeded with `seed`.
    pub fn draw(seed: u64, index: usize) -> SiteParams {
        let mut rng = ChaCha8Rng::seed_from_u64(derived_seed(seed, STREAM_SITE, index as u64));
        let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.random::<f64>();
        let wm_gm_ratio = u(1.15, 1.6);
        let csf_gm_ratio = u(0.2, 0.5);
        let gamma = u(0.7, 1.4);
        let bias_amplitude = u(0.05, 0.25);
        let mut bias_coefficients = [0.0; 9];
        for c in &mut bias_coefficients {
            *c = u(-1.0, 1.0);
        }
        let noise_fraction = u(0.01, 0.05);
        let anisotropic = u(0.0, 1.0) < 0.5;
        let b = u(0.0, 1.2);
        let blur_voxels = if anisotropic {
            [b, u(0.0, 1.2), u(0.0, 1.2)]
        } else {
            [b; 3]
        };
        let scale = u(300.0, 3000.0).round();
        SiteParams {
            label: site_label(index),
            wm_gm_ratio,
            csf_gm_ratio,
            gamma,
            bias_amplitude,
            bias_coefficients,
            noise_fraction,
            blur_voxels,
            scale,
        }
    }

    /// The site `effect` times as far from the middle site as drawn: each parameter becomes
    /// mid + effect·(drawn − mid), mid the middle of its documented range (the scale in log
    /// units; the bias field's pattern moves from a fixed middle pattern, [`MIDDLE_BIAS`]). 0
    /// gives the middle site for every site (no site effect: the same response, blur, noise and
    /// bias field everywhere), 1 leaves the site as drawn; values are kept physically valid (WM
    /// brighter than GM, CSF darker, positive gamma, noise and blur), so large effects are a
    /// little less than `effect` times the drawn spread where a bound clips them.
    pub fn with_effect(&self, effect: f64) -> SiteParams {
        let toward = |drawn: f64, mid: f64| mid + effect * (drawn - mid);
        SiteParams {
            label: self.label.clone(),
            wm_gm_ratio: toward(self.wm_gm_ratio, 1.375).max(1.02),
            csf_gm_ratio: toward(self.csf_gm_ratio, 0.35).clamp(0.05, 0.9),
            gamma: toward(self.gamma, 1.05).max(0.3),
            bias_amplitude: toward(self.bias_amplitude, 0.15).clamp(0.0, 0.6),
            bias_coefficients: std::array::from_fn(|i| {
                toward(self.bias_coefficients[i], MIDDLE_BIAS[i])
            }),
            noise_fraction: toward(self.noise_fraction, 0.03).max(0.0),
            blur_voxels: self.blur_voxels.map(|b| toward(b, 0.6).max(0.0)),
            scale: toward(self.scale.ln(), (300.0f64 * 3000.0).sqrt().ln())
                .exp()
                .round()
                .max(1.0),
        }
    }

    /// The intensity response: anatomy intensity (landmarks `tissue` = CSF, GM, WM peaks of the
    /// anatomy) → site intensity in GM units (before scale and bias). Piecewise linear through
    /// (0, 0), (CSF, csf_gm_ratio), (GM, 1), (WM, w), extended past WM with the last slope, then
    /// y ↦ w·(y/w)^γ, where w = wm_gm_ratio^(1/γ) so that GM → 1^… keeps WM/GM = `wm_gm_ratio`.
    pub fn response(&self, x: f64, tissue: [f64; 3]) -> f64 {
        let w = self.wm_gm_ratio.powf(1.0 / self.gamma);
        let points = [
            (0.0, 0.0),
            (tissue[0], self.csf_gm_ratio),
            (tissue[1], 1.0),
            (tissue[2], w),
        ];
        let y = piecewise_linear(x, &points).max(0.0);
        // GM (y = 1) maps to w^(1−γ); WM (y = w) to w: ratio w^γ = wm_gm_ratio.
        w * (y / w).powf(self.gamma)
    }
}

/// The label of site `index`: A, B, ... Z.
pub fn site_label(index: usize) -> String {
    ((b'A' + (index % 26) as u8) as char).to_string()
}

/// Linear interpolation through increasing `points`, extrapolated with the end segments' slopes.
fn piecewise_linear(x: f64, points: &[(f64, f64)]) -> f64 {
    let seg = points
        .windows(2)
        .position(|w| x <= w[1].0)
        .unwrap_or(points.len() - 2);
    let ((x0, y0), (x1, y1)) = (points[seg], points[seg + 1]);
    let slope = (y1 - y0) / (x1 - x0).max(1e-12);
    y0 + slope * (x - x0)
}

/// The site of subject `i` under the balanced design: subject i = q·S + s comes from source s
/// (S sources) in round q and is scanned at site `(offset[s] + q) mod K`, where `offset` is a
/// seeded permutation of the sources taken mod K. Over any K consecutive rounds every source is
/// scanned at every site exactly once, so site is independent of anatomy (and a source's
/// subjects of consecutive rounds sit at different sites); `subjects = S·K·m` gives every
/// (source, site) cell exactly m subjects. The seeded offsets make which source starts where a
/// property of the seed, not of the file order.
pub fn balanced_site(seed: u64, sources: usize, sites: usize, i: usize) -> usize {
    let sources = sources.max(1);
    let (q, s) = (i / sources, i % sources);
    (source_offsets(seed, sources)[s] + q) % sites.max(1)
}

/// A seeded permutation of `0..sources` (Fisher–Yates on the design stream).
fn source_offsets(seed: u64, sources: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(derived_seed(seed, STREAM_DESIGN, 0));
    let mut p: Vec<usize> = (0..sources).collect();
    for j in (1..sources).rev() {
        let k = rng.random_range(0..=j);
        p.swap(j, k);
    }
    p
}

/// Whether every source appears at every site: true when there are at least `sources · sites`
/// subjects (the design then covers every cell; see [`balanced_site`]).
pub fn design_is_balanced(subjects: usize, sources: usize, sites: usize) -> bool {
    subjects >= sources.max(1) * sites
}

/// One simulated subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectParams {
    /// BIDS label (`01`, ...).
    pub label: String,
    /// Index of the source brain in [`Simulation::sources`].
    pub source: usize,
    /// The site the subject is scanned at in the BIDS dataset.
    pub site: String,
    /// Age (years).
    pub age: f64,
    /// `M` or `F` (random: the simulation has no sex effect).
    pub sex: String,
    /// The deformation making this anatomy.
    pub deformation: DeformationParams,
    /// WM intensity moves towards GM by this fraction of their difference (the age effect on
    /// contrast, 0.4 % per year from 50).
    pub contrast_loss: f64,
}

/// A source brain: a real T1w preprocessed into MNI space.
#[derive(Debug, Clone)]
pub struct SourceBrain {
    /// Where it came from.
    pub path: String,
    /// Skull-stripped, intensity-scaled brain on the 2 mm model grid.
    pub image: Volume,
    /// Its brain mask.
    pub mask: Vec<bool>,
    /// CSF, GM and WM peaks of a 3-class mixture fitted to it.
    pub tissue: [f64; 3],
}

/// Source information written to the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The file.
    pub path: String,
    /// Its CSF/GM/WM peaks in preprocessed units.
    pub tissue: [f64; 3],
}

impl SourceBrain {
    /// Preprocesses a real T1w (reorientation, registration to MNI, bias correction, brain mask,
    /// intensity scaling) onto the 2 mm model grid.
    pub fn from_t1w(t1w: &Volume, path: &str) -> Result<SourceBrain, SimulateError> {
        let err = |reason: String| SimulateError::Source {
            path: path.to_string(),
            reason,
        };
        let canonical = to_closest_canonical(t1w);
        let pre = preprocess_t1w(&canonical, None, None, &T1wOptions::default()).map_err(|e| {
            err(format!(
                "cannot preprocess: {e}; give a T1w of a human brain"
            ))
        })?;
        let mask: Vec<bool> = pre.template_mask.data().iter().map(|&v| v > 0.5).collect();
        let image = pre
            .template
            .with_data(
                pre.template
                    .data()
                    .iter()
                    .zip(&mask)
                    .map(|(&v, &m)| if m { v.max(0.0) } else { 0.0 })
                    .collect(),
            )
            .map_err(err)?;
        let brain: Vec<f32> = image
            .data()
            .iter()
            .zip(&mask)
            .filter(|p| *p.1)
            .map(|p| *p.0)
            .collect();
        let m = fit_tissue_mixture(&brain).map_err(|e| err(e.to_string()))?;
        Ok(SourceBrain {
            path: path.to_string(),
            image,
            mask,
            tissue: m.means,
        })
    }
}

/// A subject's anatomy: noise-free, site-free, in its source's preprocessed units.
#[derive(Debug, Clone)]
pub struct Anatomy {
    /// The image.
    pub image: Volume,
    /// Its brain mask.
    pub mask: Vec<bool>,
    /// CSF/GM/WM landmarks (the source's).
    pub tissue: [f64; 3],
}

/// A whole simulation: settings, sources, sites and subjects (everything but the images, which
/// are rendered on demand).
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The settings.
    pub config: SimulationConfig,
    /// Source brains.
    pub sources: Vec<SourceBrain>,
    /// Sites.
    pub sites: Vec<SiteParams>,
    /// Subjects.
    pub subjects: Vec<SubjectParams>,
}

impl Simulation {
    /// Draws sites and subjects for `sources`. Subject i comes from source i mod S and is scanned
    /// at the site of the balanced design ([`balanced_site`]); the first S subjects keep their real
    /// anatomy, the others are deformed.
    pub fn new(
        config: SimulationConfig,
        sources: Vec<SourceBrain>,
    ) -> Result<Simulation, SimulateError> {
        config.validate()?;
        if sources.is_empty() {
            return Err(SimulateError::Settings(
                "no source T1w: give --source with at least one T1w file or BIDS dataset".into(),
            ));
        }
        let sites: Vec<SiteParams> = (0..config.sites)
            .map(|k| {
                let drawn = SiteParams::draw(config.seed, k);
                if config.site_effect == 1.0 {
                    drawn
                } else {
                    drawn.with_effect(config.site_effect)
                }
            })
            .collect();
        let width = if config.subjects > 99 { 3 } else { 2 };
        let subjects = (0..config.subjects)
            .map(|i| {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(derived_seed(config.seed, STREAM_SUBJECT, i as u64));
                let [a0, a1] = config.age_range;
                let age = (a0 + (a1 - a0) * rng.random::<f64>()).round();
                let sex = if rng.random::<f64>() < 0.5 { "F" } else { "M" };
                let deformation = DeformationParams {
                    seed: rng.random::<u64>(),
                    max_displacement_mm: if i < sources.len() {
                        0.0
                    } else {
                        config.deformation_mm
                    },
                    smoothness_mm: config.deformation_smoothness_mm,
                    ventricle_expansion: 0.006 * (age - 50.0),
                };
                SubjectParams {
                    label: format!("{:0width$}", i + 1),
                    source: i % sources.len(),
                    site: sites[balanced_site(config.seed, sources.len(), config.sites, i)]
                        .label
                        .clone(),
                    age,
                    sex: sex.into(),
                    deformation,
                    contrast_loss: 0.004 * (age - 50.0),
                }
            })
            .collect();
        Ok(Simulation {
            config,
            sources,
            sites,
            subjects,
        })
    }

    /// The anatomy of subject `i` (deformed source with the age effects).
    pub fn anatomy(&self, i: usize) -> Result<(Anatomy, Deformation), SimulateError> {
        let s = &self.subjects[i];
        let src = &self.sources[s.source];
        let deformation = Deformation::new(&src.image, &s.deformation);
        let warped = deformation.warp(&src.image);
        let mask_f: Vec<f32> = src.mask.iter().map(|&b| b as u8 as f32).collect();
        let warped_mask = deformation.warp(
            &src.image
                .with_data(mask_f)
                .map_err(|e| SimulateError::Settings(format!("internal: {e}")))?,
        );
        let mask: Vec<bool> = warped_mask.data().iter().map(|&v| v >= 0.5).collect();
        // Age effect on contrast: WM moves towards GM.
        let [c, g, w] = src.tissue;
        let points = [
            (0.0, 0.0),
            (c, c),
            (g, g),
            (w, w - (w - g) * s.contrast_loss),
        ];
        let data: Vec<f32> = warped
            .data()
            .iter()
            .zip(&mask)
            .map(|(&v, &m)| {
                if m {
                    piecewise_linear(v as f64, &points).max(0.0) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let image = warped
            .with_data(data)
            .map_err(|e| SimulateError::Settings(format!("internal: {e}")))?;
        Ok((
            Anatomy {
                image,
                mask,
                tissue: src.tissue,
            },
            deformation,
        ))
    }

    /// The seed of the noise of subject `i` at site `k`.
    pub fn noise_seed(&self, i: usize, k: usize) -> u64 {
        derived_seed(self.config.seed, STREAM_NOISE, (i as u64) << 8 | k as u64)
    }

    /// Subject `i`'s anatomy rendered at site `k`: response, blur, bias, scale, Rician noise,
    /// zero outside the brain (a skull-stripped scan).
    pub fn render(&self, anatomy: &Anatomy, i: usize, k: usize) -> Volume {
        render_at_site(anatomy, &self.sites[k], self.noise_seed(i, k))
    }
}

/// The bias field of `site` on a grid of `dims` (1 + deviation, |deviation| ≤ amplitude inside
/// `mask`).
pub fn bias_field(site: &SiteParams, dims: [usize; 3], mask: &[bool]) -> Vec<f64> {
    let [nx, ny, nz] = dims;
    let norm = |i: usize, n: usize| 2.0 * i as f64 / (n.max(2) - 1) as f64 - 1.0;
    let c = &site.bias_coefficients;
    let mut log: Vec<f64> = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let (a, b, d) = (norm(x, nx), norm(y, ny), norm(z, nz));
                log.push(
                    c[0] * a
                        + c[1] * b
                        + c[2] * d
                        + c[3] * a * a
                        + c[4] * b * b
                        + c[5] * d * d
                        + c[6] * a * b
                        + c[7] * a * d
                        + c[8] * b * d,
                );
            }
        }
    }
    let mean = {
        let (s, n) = log
            .iter()
            .zip(mask)
            .filter(|p| *p.1)
            .fold((0.0, 0usize), |(s, n), (v, _)| (s + v, n + 1));
        if n > 0 { s / n as f64 } else { 0.0 }
    };
    let peak = log
        .iter()
        .zip(mask)
        .filter(|p| *p.1)
        .map(|(v, _)| (v - mean).abs())
        .fold(0.0, f64::max)
        .max(1e-12);
    // Largest |log b| = ln(1 + amplitude): the field stays within ±amplitude (up to 1/(1+a)).
    let k = (1.0 + site.bias_amplitude).ln() / peak;
    log.iter().map(|v| ((v - mean) * k).exp()).collect()
}

/// Renders `anatomy` at `site` with the noise of `noise_seed`.
pub fn render_at_site(anatomy: &Anatomy, site: &SiteParams, noise_seed: u64) -> Volume {
    let dims = anatomy.image.dims();
    let response: Vec<f64> = anatomy
        .image
        .data()
        .iter()
        .zip(&anatomy.mask)
        .map(|(&v, &m)| {
            if m {
                site.response(v as f64, anatomy.tissue)
            } else {
                0.0
            }
        })
        .collect();
    let blurred = gaussian_filter_axes(&response, dims, site.blur_voxels, 3.5);
    let bias = bias_field(site, dims, &anatomy.mask);
    let wm = site.wm_gm_ratio.powf(1.0 / site.gamma);
    let sigma = site.noise_fraction * wm * site.scale;
    let mut rng = ChaCha8Rng::seed_from_u64(noise_seed);
    let data: Vec<f32> = blurred
        .iter()
        .zip(&bias)
        .zip(&anatomy.mask)
        .map(|((&v, &b), &m)| {
            // Draw for every voxel so the noise of a voxel does not depend on the mask.
            let n1: f64 = StandardNormal.sample(&mut rng);
            let n2: f64 = StandardNormal.sample(&mut rng);
            if !m {
                return 0.0;
            }
            let s = v * b * site.scale;
            ((s + sigma * n1).powi(2) + (sigma * n2).powi(2)).sqrt() as f32
        })
        .collect();
    anatomy.image.with_data(data).expect("same grid")
}

#[cfg(test)]
mod tests;
