//! Pure preprocessing steps, `Volume → Volume`: they never walk directories or choose file names.
//!
//! Today: robust intensity scaling ([`intensity`]), world-coordinate resampling ([`resample`]),
//! ITK affine transform files ([`itk`]) and the embedded MNI template with its model grids
//! ([`template`]). Registration, bias correction and masking join here as they land.

pub mod intensity;
pub mod itk;
pub mod resample;
pub mod template;
