//! Robust, percentile-based intensity scaling.
//!
//! Scanner intensities are in arbitrary units (the fixtures range from 0..254 to 0..158 917), so
//! every volume is mapped to a common range before anything else: the `low` percentile of the
//! foreground (voxels > 0, background air and padding excluded) goes to 0, the `high` percentile to
//! 1, values below 0 are clipped and bright outliers (vessels, fat) are clipped at `clip_max`.
//! Percentiles, not min/max, so a few hot voxels cannot squash the brain into a narrow band.

use serde::Serialize;

use crate::volume::Volume;

/// Parameters of [`scale_intensity`], recorded in every sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IntensityScaling {
    /// Percentile (0-100) of the foreground mapped to 0.
    pub low_percentile: f64,
    /// Percentile (0-100) of the foreground mapped to 1.
    pub high_percentile: f64,
    /// Upper clip after scaling (values above become `clip_max`).
    pub clip_max: f64,
}

impl Default for IntensityScaling {
    fn default() -> Self {
        IntensityScaling {
            low_percentile: 0.5,
            high_percentile: 99.5,
            clip_max: 1.5,
        }
    }
}

impl IntensityScaling {
    /// Checks the parameters: `0 ≤ low < high ≤ 100`, `clip_max ≥ 1`.
    pub fn validate(&self) -> Result<(), String> {
        let (l, h) = (self.low_percentile, self.high_percentile);
        if !((0.0..100.0).contains(&l) && l < h && h <= 100.0) {
            return Err(format!(
                "percentiles must satisfy 0 ≤ low < high ≤ 100, got {l} and {h}"
            ));
        }
        if !(self.clip_max >= 1.0 && self.clip_max.is_finite()) {
            return Err(format!("clip maximum must be ≥ 1, got {}", self.clip_max));
        }
        Ok(())
    }
}

/// What scaling did to one volume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScalingReport {
    /// Input intensity mapped to 0.
    pub low_value: f64,
    /// Input intensity mapped to 1.
    pub high_value: f64,
    /// Number of foreground voxels the percentiles came from.
    pub foreground_voxels: usize,
    /// Non-finite input voxels, set to 0.
    pub non_finite_voxels: usize,
}

/// Why a volume cannot be scaled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScalingError {
    /// No voxel above zero.
    #[error("the image has no voxel above 0 (all background, zero or NaN); it holds no anatomy")]
    NoForeground,
    /// The foreground has a single intensity.
    #[error("the image foreground is constant ({0}); it holds no anatomy")]
    Constant(f64),
}

/// Scales `volume` as described in the module doc. Non-finite voxels become 0.
pub fn scale_intensity(
    volume: &Volume,
    params: &IntensityScaling,
) -> Result<(Volume, ScalingReport), ScalingError> {
    scale_intensity_in(volume, None, params)
}

/// [`scale_intensity`] with the percentiles taken inside `mask` (the brain) instead of the whole
/// foreground, so that scalp and neck do not move the brain's range.
pub fn scale_intensity_in(
    volume: &Volume,
    mask: Option<&[bool]>,
    params: &IntensityScaling,
) -> Result<(Volume, ScalingReport), ScalingError> {
    let data = volume.data();
    let non_finite = data.iter().filter(|v| !v.is_finite()).count();
    let mut fg: Vec<f32> = data
        .iter()
        .enumerate()
        .filter(|(i, v)| v.is_finite() && **v > 0.0 && mask.is_none_or(|m| m[*i]))
        .map(|(_, v)| *v)
        .collect();
    if fg.is_empty() {
        return Err(ScalingError::NoForeground);
    }
    let n = fg.len();
    let lo = percentile(&mut fg, params.low_percentile) as f64;
    let hi = percentile(&mut fg, params.high_percentile) as f64;
    if hi <= lo {
        return Err(ScalingError::Constant(lo));
    }
    let scale = 1.0 / (hi - lo);
    let clip = params.clip_max;
    let out: Vec<f32> = data
        .iter()
        .map(|&v| {
            if v.is_finite() {
                ((v as f64 - lo) * scale).clamp(0.0, clip) as f32
            } else {
                0.0
            }
        })
        .collect();
    let report = ScalingReport {
        low_value: lo,
        high_value: hi,
        foreground_voxels: n,
        non_finite_voxels: non_finite,
    };
    // Same grid, same length: cannot fail.
    let scaled = volume
        .with_data(out)
        .map_err(|_| ScalingError::NoForeground)?;
    Ok((scaled, report))
}

/// The `p`-th percentile (0-100) by the nearest-rank method on a selection (O(n), reorders `values`).
fn percentile(values: &mut [f32], p: f64) -> f32 {
    let n = values.len();
    let rank = ((p / 100.0) * (n - 1) as f64).round() as usize;
    let rank = rank.min(n - 1);
    let (_, v, _) = values.select_nth_unstable_by(rank, |a, b| a.total_cmp(b));
    *v
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix4;

    #[test]
    fn maps_percentiles_to_zero_and_one() {
        // Foreground 1..=1000 plus background zeros.
        let mut data: Vec<f32> = (1..=1000).map(|v| v as f32).collect();
        data.extend(std::iter::repeat_n(0.0, 1000));
        let v = Volume::new([10, 20, 10], Matrix4::identity(), data).unwrap();
        let p = IntensityScaling {
            low_percentile: 0.0,
            high_percentile: 100.0,
            clip_max: 1.0,
        };
        let (s, r) = scale_intensity(&v, &p).unwrap();
        assert_eq!(
            (r.low_value, r.high_value, r.foreground_voxels),
            (1.0, 1000.0, 1000)
        );
        assert_eq!(s.data()[0], 0.0);
        assert_eq!(s.data()[999], 1.0);
        assert!((s.data()[499] - 499.0 / 999.0).abs() < 1e-6);
        let (s, r) = scale_intensity(&v, &IntensityScaling::default()).unwrap();
        assert!(r.low_value > 1.0 && r.high_value < 1000.0);
        assert!(s.data().iter().all(|&x| (0.0..=1.5).contains(&x)));
    }

    #[test]
    fn rejects_empty_and_constant_images() {
        let v = Volume::new([2, 2, 2], Matrix4::identity(), vec![0.0; 8]).unwrap();
        assert_eq!(
            scale_intensity(&v, &IntensityScaling::default()).unwrap_err(),
            ScalingError::NoForeground
        );
        let v = Volume::new([2, 2, 2], Matrix4::identity(), vec![5.0; 8]).unwrap();
        assert_eq!(
            scale_intensity(&v, &IntensityScaling::default()).unwrap_err(),
            ScalingError::Constant(5.0)
        );
        let bad = IntensityScaling {
            low_percentile: 50.0,
            high_percentile: 10.0,
            clip_max: 1.0,
        };
        assert!(bad.validate().is_err());
    }
}
