//! The embedded MNI template: ICBM 2009a symmetric nonlinear MNI152 (BIDS label
//! `MNI152NLin2009aSym`), its brain mask and GM/WM probability maps, shipped inside the binary so
//! hcld needs no data files and no network (`data/template/README.md` has the provenance and the
//! MNI copyright notice). Model grids at 1 mm and 2 mm are derived from the template's field of view.

use std::path::Path;

use nalgebra::Matrix4;

use super::resample::Grid;
use crate::volume::{Volume, VolumeError, read_nifti_bytes};

/// The template's BIDS space label.
pub const SPACE: &str = "MNI152NLin2009aSym";

const T1: &[u8] =
    include_bytes!("../../data/template/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz");
const BRAIN_MASK: &[u8] =
    include_bytes!("../../data/template/mni_icbm152_brain_mask_1mm_thr0.2.nii.gz");
const GM: &[u8] =
    include_bytes!("../../data/template/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz");
const WM: &[u8] =
    include_bytes!("../../data/template/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz");
const HEAD: &[u8] =
    include_bytes!("../../data/template/tpl-MNI152NLin2009aSym_res-02_desc-head_T1w.nii.gz");

/// Which embedded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateImage {
    /// Skull-stripped T1w, intensities 0..255.
    T1w,
    /// Binary brain mask (0/1).
    BrainMask,
    /// Grey-matter probability (0..1).
    GreyMatter,
    /// White-matter probability (0..1).
    WhiteMatter,
    /// Full-head T1w at 2 mm (Colin27 aligned to the ICBM brain; made by
    /// `examples/make_head_template.rs`), the fixed image for inputs that still have a skull.
    HeadT1w,
}

impl TemplateImage {
    fn bytes_and_name(self) -> (&'static [u8], &'static str) {
        match self {
            TemplateImage::T1w => (T1, "tpl-MNI152NLin2009aSym_T1w (embedded)"),
            TemplateImage::BrainMask => (
                BRAIN_MASK,
                "tpl-MNI152NLin2009aSym_desc-brain_mask (embedded)",
            ),
            TemplateImage::GreyMatter => (GM, "tpl-MNI152NLin2009aSym_label-GM_probseg (embedded)"),
            TemplateImage::WhiteMatter => {
                (WM, "tpl-MNI152NLin2009aSym_label-WM_probseg (embedded)")
            }
            TemplateImage::HeadT1w => (
                HEAD,
                "tpl-MNI152NLin2009aSym_res-02_desc-head_T1w (embedded)",
            ),
        }
    }

    /// Decodes the image (about 10 ms per image at 1 mm).
    pub fn load(self) -> Result<Volume, VolumeError> {
        let (bytes, name) = self.bytes_and_name();
        let (mut v, _) = read_nifti_bytes(Path::new(name), bytes)?;
        if matches!(self, TemplateImage::GreyMatter | TemplateImage::WhiteMatter) {
            // Stored as uint8 probability × 255.
            let data = v.data_mut();
            let max = data.iter().cloned().fold(0f32, f32::max);
            if max > 1.0 {
                data.iter_mut().for_each(|x| *x /= 255.0);
            }
        }
        Ok(v)
    }
}

/// A grid of isotropic `res_mm` voxels covering the template's whole field of view (head and
/// neck included), RAS+, with the first voxel's outer corner where the template has it (so `res-1`
/// is the template grid itself).
pub fn template_grid(template: &Volume, res_mm: f64) -> Grid {
    let dims = template.dims();
    let vs = template.voxel_sizes();
    let extent = [
        dims[0] as f64 * vs[0],
        dims[1] as f64 * vs[1],
        dims[2] as f64 * vs[2],
    ];
    let new_dims = extent.map(|e| (e / res_mm).round().max(1.0) as usize);
    // Keep the first voxel's outer corner fixed: centre moves by half the size change.
    let corner = template.voxel_to_world(-0.5, -0.5, -0.5);
    let mut affine = Matrix4::identity();
    for ax in 0..3 {
        affine[(ax, ax)] = res_mm;
        affine[(ax, 3)] = corner[ax] + res_mm / 2.0;
    }
    Grid {
        dims: new_dims,
        affine,
    }
}

/// Field of view of the model grid (mm): 192 × 224 × 192 holds every brain in MNI space with a
/// margin, and gives dimensions divisible by 16 (the autoencoder's ×4 and the UNet's ×4) at both
/// 1 mm (192×224×192) and 2 mm (96×112×96).
pub const MODEL_EXTENT_MM: [f64; 3] = [192.0, 224.0, 192.0];

/// The model grid at `res_mm` (1 or 2): [`MODEL_EXTENT_MM`] centred on the template brain mask's
/// bounding box, on the template's voxel lattice (so res-1 is a crop of the template grid).
pub fn model_grid(res_mm: f64) -> Grid {
    let dims = MODEL_EXTENT_MM.map(|e| (e / res_mm).round() as usize);
    brain_centred_grid(dims, res_mm)
}

/// A grid of `dims` voxels of `res_mm` centred on the template brain (as [`model_grid`], for any
/// shape: a network configuration's grid).
pub fn brain_centred_grid(dims: [usize; 3], res_mm: f64) -> Grid {
    // The bounding box of the embedded brain mask, measured once with nibabel (voxels x 26..170,
    // y 27..207, z 0..154 of the 1 mm template: 145 × 181 × 155 mm, centre at world (0, -17, 5)),
    // written as world mm so no image has to be decoded to build a grid; a test checks it.
    let brain_centre = [0.0, -17.0, 5.0];
    let mut affine = Matrix4::identity();
    for ax in 0..3 {
        affine[(ax, ax)] = res_mm;
        // First voxel centre: half the extent below the centre, plus half a voxel, rounded to the
        // template lattice (integer mm).
        let extent = dims[ax] as f64 * res_mm;
        let first = brain_centre[ax] - extent / 2.0 + res_mm / 2.0;
        affine[(ax, 3)] = first.round();
    }
    Grid { dims, affine }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::axcodes;

    #[test]
    fn embedded_template_loads_with_its_known_properties() {
        let t1 = TemplateImage::T1w.load().unwrap();
        assert_eq!(t1.dims(), [197, 233, 189]);
        assert_eq!(axcodes(t1.affine()), ['R', 'A', 'S']);
        let mask = TemplateImage::BrainMask.load().unwrap();
        assert_eq!(mask.dims(), t1.dims());
        // 1.883 L of brain (SOURCE.md), 1 mm voxels.
        let litres = mask.data().iter().filter(|&&v| v > 0.5).count() as f64 / 1e6;
        assert!((litres - 1.883).abs() < 0.01, "{litres}");
        let gm = TemplateImage::GreyMatter.load().unwrap();
        assert!(gm.data().iter().all(|v| (0.0..=1.0).contains(v)));
        // Symmetric about x = 0: the world origin lies on the midline.
        let centre =
            t1.affine().try_inverse().unwrap() * nalgebra::Vector4::new(0.0, 0.0, 0.0, 1.0);
        assert!((centre[0] - 98.0).abs() < 1e-6, "{centre}");
    }

    #[test]
    fn model_grids_cover_the_template() {
        let t1 = TemplateImage::T1w.load().unwrap();
        let g1 = template_grid(&t1, 1.0);
        assert_eq!(g1.dims, t1.dims());
        assert!((g1.affine - t1.affine()).abs().max() < 1e-9);
        let g2 = template_grid(&t1, 2.0);
        assert_eq!(g2.dims, [99, 117, 95]);
        let r = crate::preprocess::resample::resample(
            &t1,
            &g2,
            crate::preprocess::resample::Interpolation::Linear,
            0.0,
        )
        .unwrap();
        let mean =
            |v: &Volume| v.data().iter().map(|&x| x as f64).sum::<f64>() / v.data().len() as f64;
        assert!((mean(&r) - mean(&t1)).abs() / mean(&t1) < 0.02);
    }

    #[test]
    fn model_grids_hold_the_whole_brain_with_dimensions_divisible_by_16() {
        let mask = TemplateImage::BrainMask.load().unwrap();
        for (res, want) in [(1.0, [192, 224, 192]), (2.0, [96, 112, 96])] {
            let g = model_grid(res);
            assert_eq!(g.dims, want);
            let inv = g.affine.try_inverse().unwrap();
            let [nx, ny, nz] = mask.dims();
            for k in 0..nz {
                for j in 0..ny {
                    for i in 0..nx {
                        if mask.get(i, j, k) > 0.5 {
                            let w = mask.voxel_to_world(i as f64, j as f64, k as f64);
                            let v = inv * nalgebra::Vector4::new(w[0], w[1], w[2], 1.0);
                            for ax in 0..3 {
                                assert!(
                                    v[ax] > 0.0 && v[ax] < want[ax] as f64 - 1.0,
                                    "{res} mm: {w:?}"
                                );
                            }
                        }
                    }
                }
            }
            // On the template lattice: voxel centres at integer (1 mm) or odd (2 mm) mm.
            assert_eq!(g.affine[(0, 3)].fract(), 0.0);
        }
    }
}
