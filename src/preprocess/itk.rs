//! ITK affine transform text files (`#Insight Transform File V1.0`), the format ANTs, SimpleITK
//! and fMRIPrep use for `_from-<A>_to-<B>_mode-image_xfm.txt`.
//!
//! Conventions, stated once because they are easy to get wrong:
//! - ITK works in LPS physical coordinates; hcld's affines are RAS (NIfTI). The two differ by
//!   `F = diag(-1, -1, 1)`, so a point map `M` in RAS is `F·M·F` in LPS.
//! - An ITK transform maps points of the *fixed* (reference) space to the *moving* space:
//!   `y = A·(x − c) + c + t`, with `Parameters: A (row-major), t` and `FixedParameters: c`.
//!   In BIDS/fMRIPrep naming, `from-T1w_to-MNI..._mode-image_xfm` is the transform that resamples a
//!   T1w image onto the MNI grid, i.e. it maps MNI points to T1w points.
//!
//! Written here: the format is a few lines of text and no maintained Rust crate reads it.

use nalgebra::{Matrix3, Matrix4, Vector3};

/// An affine point map in RAS world coordinates (millimetres), stored as a 4×4 matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorldAffine(pub Matrix4<f64>);

/// Why a transform file cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ItkError {
    /// The text is not an ITK affine transform file.
    #[error("not an ITK affine transform: {0}")]
    Format(String),
}

const FLIP: [f64; 3] = [-1.0, -1.0, 1.0];

fn flip(m: &Matrix4<f64>) -> Matrix4<f64> {
    let f = Matrix4::from_diagonal(&nalgebra::Vector4::new(FLIP[0], FLIP[1], FLIP[2], 1.0));
    f * m * f
}

impl WorldAffine {
    /// The inverse map (`None` when singular).
    pub fn inverse(&self) -> Option<WorldAffine> {
        self.0.try_inverse().map(WorldAffine)
    }

    /// Applies the map to a RAS point.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let q = self.0 * nalgebra::Vector4::new(p[0], p[1], p[2], 1.0);
        [q[0], q[1], q[2]]
    }

    /// The ITK text of this map (written with a zero centre, as ANTs does for its outputs).
    pub fn to_itk_text(&self) -> String {
        let lps = flip(&self.0);
        let a: Matrix3<f64> = lps.fixed_view::<3, 3>(0, 0).into_owned();
        let t = Vector3::new(lps[(0, 3)], lps[(1, 3)], lps[(2, 3)]);
        let mut params: Vec<String> = Vec::with_capacity(12);
        for r in 0..3 {
            for c in 0..3 {
                params.push(fmt(a[(r, c)]));
            }
        }
        params.extend(t.iter().map(|v| fmt(*v)));
        format!(
            "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: {}\nFixedParameters: 0 0 0\n",
            params.join(" ")
        )
    }

    /// Reads an ITK affine (`AffineTransform_double_3_3`, `AffineTransform_float_3_3`,
    /// `MatrixOffsetTransformBase_double_3_3`) from text, honouring a non-zero centre.
    pub fn from_itk_text(text: &str) -> Result<WorldAffine, ItkError> {
        let err = |m: &str| ItkError::Format(m.to_string());
        if !text.trim_start().starts_with("#Insight Transform File") {
            return Err(err("missing '#Insight Transform File' header"));
        }
        let field = |name: &str| -> Option<&str> {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
        };
        let kind = field("Transform:").ok_or_else(|| err("no 'Transform:' line"))?;
        let known = [
            "AffineTransform_double_3_3",
            "AffineTransform_float_3_3",
            "MatrixOffsetTransformBase_double_3_3",
        ];
        if !known.contains(&kind) {
            return Err(ItkError::Format(format!(
                "transform type '{kind}' is not a 3D affine"
            )));
        }
        let numbers = |s: &str| -> Result<Vec<f64>, ItkError> {
            s.split_whitespace()
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| ItkError::Format(format!("'{v}' is not a number")))
                })
                .collect()
        };
        let p = numbers(field("Parameters:").ok_or_else(|| err("no 'Parameters:' line"))?)?;
        let c = match field("FixedParameters:") {
            Some(s) => numbers(s)?,
            None => vec![0.0; 3],
        };
        if p.len() != 12 || c.len() != 3 || p.iter().chain(&c).any(|v| !v.is_finite()) {
            return Err(err("expected 12 finite parameters and 3 fixed parameters"));
        }
        let a = Matrix3::from_row_slice(&p[..9]);
        let t = Vector3::new(p[9], p[10], p[11]);
        let center = Vector3::new(c[0], c[1], c[2]);
        // y = A (x - c) + c + t  =>  offset = t + c - A c
        let offset = t + center - a * center;
        let mut lps = Matrix4::identity();
        lps.fixed_view_mut::<3, 3>(0, 0).copy_from(&a);
        lps[(0, 3)] = offset[0];
        lps[(1, 3)] = offset[1];
        lps[(2, 3)] = offset[2];
        Ok(WorldAffine(flip(&lps)))
    }
}

/// Shortest text that reads back as the same f64.
fn fmt(v: f64) -> String {
    let s = format!("{v:?}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation_affine() -> WorldAffine {
        let r = nalgebra::Rotation3::from_euler_angles(0.1, -0.2, 0.3);
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0)
            .copy_from(&(r.matrix() * 1.1));
        m[(0, 3)] = 4.5;
        m[(1, 3)] = -12.25;
        m[(2, 3)] = 7.0;
        WorldAffine(m)
    }

    #[test]
    fn round_trips_exactly() {
        let a = rotation_affine();
        let back = WorldAffine::from_itk_text(&a.to_itk_text()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn lps_and_centre_conventions() {
        // A pure RAS translation of +10 mm in x (towards the right) is -10 in LPS.
        let mut m = Matrix4::identity();
        m[(0, 3)] = 10.0;
        let text = WorldAffine(m).to_itk_text();
        assert!(
            text.contains("Parameters: 1 0 0 0 1 0 0 0 1 -10 0 0"),
            "{text}"
        );
        // A centred ITK rotation (ANTs writes centres) maps its centre to centre + t.
        let text = "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n\
                    Parameters: 0 -1 0 1 0 0 0 0 1 1 2 3\nFixedParameters: 10 20 30\n";
        let a = WorldAffine::from_itk_text(text).unwrap();
        // Centre (10, 20, 30) LPS is (-10, -20, 30) RAS; it maps to (11, 22, 33) LPS = (-11, -22, 33) RAS.
        let y = a.apply([-10.0, -20.0, 30.0]);
        for (got, want) in y.iter().zip([-11.0, -22.0, 33.0]) {
            assert!((got - want).abs() < 1e-12, "{y:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_an_affine() {
        for bad in [
            "hello",
            "#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\nParameters: 1\n",
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0\n",
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0 x\n",
        ] {
            assert!(WorldAffine::from_itk_text(bad).is_err(), "{bad}");
        }
    }
}
