//! Images onto a model configuration's grid and back: the brain-centred template-space grid the
//! networks see, reached by Gaussian anti-aliasing and linear resampling.

use crate::preprocess::filter::gaussian_smooth;
use crate::preprocess::resample::{Grid, Interpolation, resample};
use crate::preprocess::template::brain_centred_grid;
use crate::volume::Volume;

use super::config::GridConfig;

/// The image resampled onto a configuration's grid (smoothed first when the grid is coarser).
pub fn to_model_grid(image: &Volume, grid: &GridConfig) -> Result<Vec<f32>, String> {
    let target = brain_centred_grid(grid.shape, grid.voxel_size_mm);
    if Grid::of(image).matches(&target, 1e-6) {
        return Ok(image.data().to_vec());
    }
    let src = image
        .voxel_sizes()
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min);
    let smoothed;
    let source = if grid.voxel_size_mm > src * 1.01 {
        // Gaussian anti-aliasing for the resolution change: σ² = (r_new² − r_old²) / (8 ln 2).
        let sigma = ((grid.voxel_size_mm.powi(2) - src.powi(2)) / (8.0 * 2f64.ln())).sqrt();
        smoothed = gaussian_smooth(image, sigma);
        &smoothed
    } else {
        image
    };
    resample(source, &target, Interpolation::Linear, 0.0)
        .map(Volume::into_data)
        .map_err(|e| e.to_string())
}

/// Values on a configuration's grid back onto `onto` (linear).
pub fn from_model_grid(values: Vec<f32>, grid: &GridConfig, onto: &Grid) -> Result<Volume, String> {
    let g = brain_centred_grid(grid.shape, grid.voxel_size_mm);
    let v = Volume::new(g.dims, g.affine, values)?;
    if g.matches(onto, 1e-6) {
        return Ok(v);
    }
    resample(&v, onto, Interpolation::Linear, 0.0).map_err(|e| e.to_string())
}
