//! Brain masks on the subject's native grid, and where they came from: a mask given in
//! `--derivatives`, the input's own foreground when it is already skull-stripped, or the template
//! brain mask carried back through the registration and refined by intensity (tissue threshold and
//! morphological clean-up). Also the test for "does this image look skull-stripped".

use serde::Serialize;

use super::filter::percentiles;
use super::itk::WorldAffine;
use super::morphology::{close, dilate, erode, fill_holes, largest_component, open};
use super::resample::{Grid, Interpolation, resample_mapped};
use super::template::TemplateImage;
use crate::volume::Volume;

/// Where a brain mask came from (recorded in sidecars).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "Source")]
pub enum MaskSource {
    /// A `desc-brain_mask` from `--derivatives` (path relative to its dataset).
    Derivatives {
        /// The mask file.
        #[serde(rename = "File")]
        file: String,
    },
    /// The input was already skull-stripped; the mask is its foreground.
    Input {
        /// Why the input counts as skull-stripped.
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// The template brain mask mapped through the inverse registration, refined by intensity.
    Template,
}

/// A binary brain mask on a volume's grid.
#[derive(Debug, Clone)]
pub struct BrainMask {
    /// `true` inside the brain, x fastest.
    pub voxels: Vec<bool>,
    /// Where it came from.
    pub source: MaskSource,
}

impl BrainMask {
    /// Volume in millilitres on `grid`'s voxel size.
    pub fn volume_ml(&self, like: &Volume) -> f64 {
        let vs = like.voxel_sizes();
        self.voxels.iter().filter(|&&b| b).count() as f64 * vs[0] * vs[1] * vs[2] / 1000.0
    }

    /// The mask as a 0/1 volume on `like`'s grid.
    pub fn to_volume(&self, like: &Volume) -> Volume {
        like.with_data(self.voxels.iter().map(|&b| b as u8 as f32).collect())
            .expect("mask made on this grid")
    }
}

/// Voxels above the image's minimum (+ a hair): the non-background of a skull-stripped image.
fn nonzero(volume: &Volume) -> Vec<bool> {
    let min = volume
        .data()
        .iter()
        .cloned()
        .filter(|v| v.is_finite())
        .fold(f32::INFINITY, f32::min);
    volume
        .data()
        .iter()
        .map(|&v| v.is_finite() && v > min + 1e-6 * min.abs().max(1.0))
        .collect()
}

/// Whether an image looks skull-stripped: at least 30 % of voxels at exactly the minimum (air is
/// noisy in a raw scan, zero-filled after stripping) and a non-background volume of 0.6–2.3 L (a
/// brain; a head with neck is 3–6 L). Returns the measured volume in litres with the verdict.
pub fn looks_skull_stripped(volume: &Volume) -> (bool, f64) {
    let inside = nonzero(volume);
    let n = inside.len() as f64;
    let count = inside.iter().filter(|&&b| b).count() as f64;
    let vs = volume.voxel_sizes();
    let litres = count * vs[0] * vs[1] * vs[2] / 1e6;
    (
        (n - count) / n >= 0.3 && (0.6..=2.3).contains(&litres),
        litres,
    )
}

/// The mask of an already skull-stripped image: its non-background, largest component, holes filled.
pub fn mask_from_skull_stripped(volume: &Volume, reason: &str) -> BrainMask {
    let dims = volume.dims();
    let voxels = fill_holes(&largest_component(&nonzero(volume), dims), dims);
    BrainMask {
        voxels,
        source: MaskSource::Input {
            reason: reason.to_string(),
        },
    }
}

/// The template brain mask on `grid` (soft, 0..1) through `template_to_t1w`.
pub fn template_prior(grid: &Grid, template_to_t1w: &WorldAffine) -> Volume {
    let mask = TemplateImage::BrainMask
        .load()
        .expect("the embedded brain mask decodes");
    let inverse = template_to_t1w
        .inverse()
        .expect("fits are checked to have plausible, invertible scales");
    resample_mapped(&mask, grid, &inverse.0, Interpolation::Linear, 0.0).expect("valid grid")
}

/// Settings of the intensity refinement of a propagated template mask.
#[derive(Debug, Clone, Serialize)]
pub struct MaskRefinement {
    /// The prior eroded by this much is kept whatever its intensity (mm).
    pub core_erosion_mm: f64,
    /// Tissue may extend this far beyond the prior (registration error, mm).
    pub search_margin_mm: f64,
    /// Opening radius that cuts bridges to scalp and dura (mm).
    pub opening_mm: f64,
    /// Closing radius that restores sulci (mm).
    pub closing_mm: f64,
}

impl Default for MaskRefinement {
    fn default() -> Self {
        MaskRefinement {
            core_erosion_mm: 4.0,
            search_margin_mm: 4.0,
            opening_mm: 2.0,
            closing_mm: 4.0,
        }
    }
}

/// Refines the propagated template mask (`prior`, soft) by the bias-corrected `image`: inside a
/// band around the prior's edge a voxel is brain when it is brighter than the CSF/bone threshold
/// (30 % of the way from the dark class to the brain's tissue level), then bridges are opened, the
/// largest component kept, sulci closed and holes filled.
pub fn refine_template_mask(
    image: &Volume,
    prior: &Volume,
    settings: &MaskRefinement,
) -> BrainMask {
    // Work in the prior's bounding box plus a margin: a 1 mm head's field of view is about twice
    // the brain's, and every step below is a pass over the whole grid.
    let vs = image.voxel_sizes();
    let margin_mm = 12.0 + settings.search_margin_mm.max(settings.closing_mm);
    let Some(bbox) = bounding_box(prior, 0.5, margin_mm) else {
        return BrainMask {
            voxels: vec![false; prior.data().len()],
            source: MaskSource::Template,
        };
    };
    let sub_image = crop(image.data(), image.dims(), &bbox);
    let sub_prior = crop(prior.data(), prior.dims(), &bbox);
    let sub = refine_in_box(&sub_image, &sub_prior, bbox.dims, vs, settings);
    let mut voxels = vec![false; prior.data().len()];
    paste(&sub, &mut voxels, image.dims(), &bbox);
    BrainMask {
        voxels,
        source: MaskSource::Template,
    }
}

/// A box of voxels: start and size per axis.
struct BoundingBox {
    start: [usize; 3],
    dims: [usize; 3],
}

/// The box holding every voxel above `threshold`, grown by `margin_mm` and clipped to the grid.
fn bounding_box(volume: &Volume, threshold: f32, margin_mm: f64) -> Option<BoundingBox> {
    let d = volume.dims();
    let vs = volume.voxel_sizes();
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for (idx, &v) in volume.data().iter().enumerate() {
        if v > threshold {
            let p = [idx % d[0], (idx / d[0]) % d[1], idx / (d[0] * d[1])];
            for ax in 0..3 {
                lo[ax] = lo[ax].min(p[ax]);
                hi[ax] = hi[ax].max(p[ax]);
            }
        }
    }
    if lo[0] == usize::MAX {
        return None;
    }
    let mut start = [0; 3];
    let mut dims = [0; 3];
    for ax in 0..3 {
        let m = (margin_mm / vs[ax]).ceil() as usize;
        start[ax] = lo[ax].saturating_sub(m);
        let end = (hi[ax] + m).min(d[ax] - 1);
        dims[ax] = end - start[ax] + 1;
    }
    Some(BoundingBox { start, dims })
}

fn crop<T: Copy>(data: &[T], dims: [usize; 3], b: &BoundingBox) -> Vec<T> {
    let mut out = Vec::with_capacity(b.dims.iter().product());
    for k in 0..b.dims[2] {
        for j in 0..b.dims[1] {
            let row = b.start[0] + dims[0] * (b.start[1] + j + dims[1] * (b.start[2] + k));
            out.extend_from_slice(&data[row..row + b.dims[0]]);
        }
    }
    out
}

fn paste<T: Copy>(sub: &[T], data: &mut [T], dims: [usize; 3], b: &BoundingBox) {
    for k in 0..b.dims[2] {
        for j in 0..b.dims[1] {
            let row = b.start[0] + dims[0] * (b.start[1] + j + dims[1] * (b.start[2] + k));
            let from = b.dims[0] * (j + b.dims[1] * k);
            data[row..row + b.dims[0]].copy_from_slice(&sub[from..from + b.dims[0]]);
        }
    }
}

fn refine_in_box(
    data: &[f32],
    prior: &[f32],
    dims: [usize; 3],
    vs: [f64; 3],
    settings: &MaskRefinement,
) -> Vec<bool> {
    let inside: Vec<bool> = prior.iter().map(|&p| p > 0.5).collect();
    let core = erode(&inside, dims, vs, settings.core_erosion_mm);
    let band = dilate(&inside, dims, vs, settings.search_margin_mm);
    // Tissue level: the median of the core (mostly WM and GM). Dark level: the 10th percentile
    // of a 10 mm shell outside the prior (CSF, bone, air; scalp lies further out).
    let shell = dilate(&inside, dims, vs, 10.0);
    let tissue = percentiles(data, |i| core[i], &[50.0]).map(|p| p[0]);
    let dark = percentiles(data, |i| shell[i] && !inside[i], &[10.0]).map(|p| p[0]);
    let (Some(tissue), Some(dark)) = (tissue, dark) else {
        return inside;
    };
    // 30 % of the way from dark to tissue: above CSF (about a third of WM in T1w), below GM.
    let threshold = dark + 0.3 * (tissue - dark);
    let candidate: Vec<bool> = (0..data.len())
        .map(|i| core[i] || (band[i] && data[i] > threshold))
        .collect();
    let opened = open(&candidate, dims, vs, settings.opening_mm);
    let with_core: Vec<bool> = opened.iter().zip(&core).map(|(a, b)| *a || *b).collect();
    let main = largest_component(&with_core, dims);
    let closed = close(&main, dims, vs, settings.closing_mm);
    fill_holes(&closed, dims)
        .iter()
        .zip(&band)
        .map(|(a, b)| *a && *b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix4;

    fn sphere(n: usize, r: f64, inside: f32, outside: f32) -> Volume {
        let mut data = vec![outside; n * n * n];
        for k in 0..n {
            for j in 0..n {
                for i in 0..n {
                    let c = n as f64 / 2.0;
                    let d =
                        ((i as f64 - c).powi(2) + (j as f64 - c).powi(2) + (k as f64 - c).powi(2))
                            .sqrt();
                    if d < r {
                        data[i + n * (j + n * k)] = inside;
                    }
                }
            }
        }
        let mut a = Matrix4::identity() * 2.0;
        a[(3, 3)] = 1.0;
        Volume::new([n, n, n], a, data).unwrap()
    }

    #[test]
    fn skull_stripped_detection() {
        // A 2 mm grid of 80³ with a 1.3 L ball, zeros outside: stripped.
        let brain = sphere(80, 34.0, 100.0, 0.0);
        let (yes, litres) = looks_skull_stripped(&brain);
        assert!(yes, "{litres}");
        // The same with noisy air: not stripped.
        let mut noisy = brain.clone();
        noisy
            .data_mut()
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v += (i % 7) as f32 + 1.0);
        assert!(!looks_skull_stripped(&noisy).0);
        let m = mask_from_skull_stripped(&brain, "test");
        assert!((m.volume_ml(&brain) - litres * 1000.0).abs() < 1.0);
    }

    #[test]
    fn refinement_follows_the_tissue_edge() {
        // Tissue ball r = 14 voxels in dark CSF; the prior is too small (r = 13) and offset by a voxel.
        let image = sphere(48, 14.0, 100.0, 10.0);
        let mut prior = sphere(48, 13.0, 1.0, 0.0);
        let shifted: Vec<f32> = (0..prior.data().len())
            .map(|i| if i % 48 > 0 { prior.data()[i - 1] } else { 0.0 })
            .collect();
        prior = prior.with_data(shifted).unwrap();
        let refined = refine_template_mask(&image, &prior, &MaskRefinement::default());
        let truth: Vec<bool> = image.data().iter().map(|&v| v > 50.0).collect();
        let raw: Vec<bool> = prior.data().iter().map(|&v| v > 0.5).collect();
        let (d_raw, d_ref) = (
            super::super::morphology::dice(&raw, &truth),
            super::super::morphology::dice(&refined.voxels, &truth),
        );
        assert!(d_ref > d_raw && d_ref > 0.97, "{d_raw} -> {d_ref}");
    }
}
