//! The image type every other module works with, and all NIfTI file handling.
//!
//! A [`Volume`] is a 3D scalar image in `f32` with its voxel-to-world affine (RAS+ millimetres,
//! NIfTI convention). Every call into the `nifti` crate lives in this module ([`nifti_io`]), so a
//! swap or patch of the crate stays local. [`orientation`] reorients volumes to the closest
//! canonical (RAS+) voxel grid, as nibabel's `as_closest_canonical` does.

mod error;
mod nifti_header;
pub mod nifti_io;
pub mod orientation;

pub use error::VolumeError;
pub use nifti_io::{
    HeaderSummary, OutputDtype, XformCode, open_input, read_nifti, read_nifti_bytes, write_nifti,
};
pub use orientation::{axcodes, to_closest_canonical};

use nalgebra::{Matrix4, Vector4};

/// A 3D scalar image: voxel values in NIfTI (Fortran) order, `x` fastest, and the affine that maps
/// voxel indices `(i, j, k, 1)` to world coordinates in millimetres.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    dims: [usize; 3],
    affine: Matrix4<f64>,
    data: Vec<f32>,
}

impl Volume {
    /// Builds a volume, checking that `data` has `dims[0] * dims[1] * dims[2]` values and that the
    /// affine is finite and invertible.
    pub fn new(dims: [usize; 3], affine: Matrix4<f64>, data: Vec<f32>) -> Result<Self, String> {
        if dims.contains(&0) {
            return Err(format!("dimensions {dims:?} contain a zero"));
        }
        let n = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
        if data.len() != n {
            return Err(format!(
                "{} voxel values for dimensions {dims:?} ({n} expected)",
                data.len()
            ));
        }
        if affine.iter().any(|v| !v.is_finite()) {
            return Err("affine has non-finite entries".into());
        }
        if affine.fixed_view::<3, 3>(0, 0).determinant().abs() < 1e-12 {
            return Err("affine is singular (zero voxel size or collinear axes)".into());
        }
        Ok(Volume { dims, affine, data })
    }

    /// Number of voxels along each axis.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// The voxel-to-world affine.
    pub fn affine(&self) -> &Matrix4<f64> {
        &self.affine
    }

    /// Voxel sizes in millimetres (the column norms of the affine's 3×3 part).
    pub fn voxel_sizes(&self) -> [f64; 3] {
        let m = self.affine.fixed_view::<3, 3>(0, 0);
        [m.column(0).norm(), m.column(1).norm(), m.column(2).norm()]
    }

    /// The voxel values, `x` fastest.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable voxel values, `x` fastest.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the volume, returning its voxel values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Linear index of voxel `(i, j, k)`.
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// Value of voxel `(i, j, k)`; panics when out of range (indices come from `dims`).
    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[self.index(i, j, k)]
    }

    /// A volume on the same grid with new values (same length required).
    pub fn with_data(&self, data: Vec<f32>) -> Result<Self, String> {
        Volume::new(self.dims, self.affine, data)
    }

    /// World coordinate (mm) of the centre of voxel `(i, j, k)`.
    pub fn voxel_to_world(&self, i: f64, j: f64, k: f64) -> [f64; 3] {
        let p = self.affine * Vector4::new(i, j, k, 1.0);
        [p[0], p[1], p[2]]
    }
}
