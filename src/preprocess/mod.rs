//! Pure preprocessing steps, `Volume → Volume (+ transform)`: they never walk directories or
//! choose file names.
//!
//! - [`filter`]: Gaussian smoothing, resolution pyramids, robust percentiles.
//! - [`resample`]: world-coordinate resampling (nearest, trilinear, cubic B-spline).
//! - [`mattes`] and [`register`]: Mattes mutual information and multi-resolution affine
//!   registration.
//! - [`itk`]: ITK affine transform text files.
//! - [`template`]: the embedded MNI template, its head template and the model grids.
//! - [`intensity`]: robust intensity scaling.

pub mod bias;
pub mod bspline_fit;
pub mod filter;
pub mod intensity;
pub mod itk;
pub mod mask;
pub mod mattes;
pub mod morphology;
pub mod register;
pub mod resample;
pub mod t1w;
pub mod template;
pub mod template_registration;
