//! Smooth 3D fields as uniform cubic tensor-product B-splines fitted to scattered values by
//! multilevel B-spline approximation (Lee, Wolberg & Shin 1997, the BSA that N4 uses): each value
//! spreads over its 4×4×4 control points in proportion to the basis weights, and each control point
//! takes the weighted mean of what it received. Smoothness comes from the lattice spacing.
//!
//! Written here: no maintained Rust crate fits B-spline volumes to scattered data.

/// Uniform cubic B-spline basis weights at fractional position `f` ∈ [0, 1).
#[inline]
fn basis(f: f64) -> [f64; 4] {
    let g = 1.0 - f;
    [
        g * g * g / 6.0,
        (3.0 * f * f * f - 6.0 * f * f + 4.0) / 6.0,
        (-3.0 * f * f * f + 3.0 * f * f + 3.0 * f + 1.0) / 6.0,
        f * f * f / 6.0,
    ]
}

/// Precomputed basis weights of a set of points on a lattice of given spans.
#[derive(Debug, Clone)]
pub struct PointBasis {
    spans: [usize; 3],
    /// Linear index of each point's first (lowest) control point.
    first: Vec<usize>,
    /// Per point, the 4 basis weights along x, y and z.
    weights: Vec<[[f64; 4]; 3]>,
}

/// A control lattice with `spans` B-spline spans per axis over a voxel grid of `dims`.
#[derive(Debug, Clone)]
pub struct BsplineField {
    dims: [usize; 3],
    spans: [usize; 3],
    /// `(spans + 3)` control points per axis, x fastest.
    control: Vec<f64>,
}

impl BsplineField {
    /// A zero field.
    pub fn zeros(dims: [usize; 3], spans: [usize; 3]) -> Self {
        let n = (spans[0] + 3) * (spans[1] + 3) * (spans[2] + 3);
        BsplineField {
            dims,
            spans,
            control: vec![0.0; n],
        }
    }

    /// Spans per axis.
    pub fn spans(&self) -> [usize; 3] {
        self.spans
    }

    /// Parametric position of voxel `i` along `axis`: `[0, spans)`.
    #[inline]
    fn param(&self, axis: usize, i: usize) -> (usize, f64) {
        let n = self.dims[axis];
        let s = if n > 1 {
            i as f64 / (n - 1) as f64 * self.spans[axis] as f64 * (1.0 - 1e-9)
        } else {
            0.0
        };
        let k = s.floor() as usize;
        (k, s - k as f64)
    }

    #[inline]
    fn cidx(&self, a: usize, b: usize, c: usize) -> usize {
        a + (self.spans[0] + 3) * (b + (self.spans[1] + 3) * c)
    }

    /// The basis weights of `points` (linear voxel indices) on this lattice, computed once and
    /// reused by [`BsplineField::fit_at`] and [`BsplineField::values_at`] while the spans stay the
    /// same (N4 fits the same points dozens of times per level).
    pub fn basis_at(&self, points: &[usize]) -> PointBasis {
        let [nx, ny, _] = self.dims;
        let mut first = Vec::with_capacity(points.len());
        let mut weights = Vec::with_capacity(points.len());
        for &p in points {
            let (i, j, k) = (p % nx, (p / nx) % ny, p / (nx * ny));
            let (ki, fi) = self.param(0, i);
            let (kj, fj) = self.param(1, j);
            let (kk, fk) = self.param(2, k);
            first.push(self.cidx(ki, kj, kk));
            weights.push([basis(fi), basis(fj), basis(fk)]);
        }
        PointBasis {
            spans: self.spans,
            first,
            weights,
        }
    }

    /// [`BsplineField::fit`] with precomputed basis weights.
    pub fn fit_at(&mut self, basis: &PointBasis, values: &[f64]) {
        assert_eq!(
            basis.spans, self.spans,
            "basis computed for another lattice"
        );
        let sx = self.spans[0] + 3;
        let sxy = sx * (self.spans[1] + 3);
        let mut num = vec![0f64; self.control.len()];
        let mut den = vec![0f64; self.control.len()];
        for ((&first, [wi, wj, wk]), &v) in basis.first.iter().zip(&basis.weights).zip(values) {
            let mut sum_sq = 0.0;
            for c in wk {
                for b in wj {
                    for a in wi {
                        let w = a * b * c;
                        sum_sq += w * w;
                    }
                }
            }
            if sum_sq <= 0.0 {
                continue;
            }
            let scale = v / sum_sq;
            for (c, wc) in wk.iter().enumerate() {
                for (b, wb) in wj.iter().enumerate() {
                    let row = first + b * sx + c * sxy;
                    for (a, wa) in wi.iter().enumerate() {
                        let w = wa * wb * wc;
                        let w2 = w * w;
                        // w² · φ_c with φ_c = w·v / Σw².
                        num[row + a] += w2 * w * scale;
                        den[row + a] += w2;
                    }
                }
            }
        }
        for ((c, n), d) in self.control.iter_mut().zip(&num).zip(&den) {
            *c = if *d > 0.0 { n / d } else { 0.0 };
        }
    }

    /// The field at the points of `basis`.
    pub fn values_at(&self, basis: &PointBasis) -> Vec<f64> {
        assert_eq!(
            basis.spans, self.spans,
            "basis computed for another lattice"
        );
        let sx = self.spans[0] + 3;
        let sxy = sx * (self.spans[1] + 3);
        basis
            .first
            .iter()
            .zip(&basis.weights)
            .map(|(&first, [wi, wj, wk])| {
                let mut s = 0.0;
                for (c, wc) in wk.iter().enumerate() {
                    for (b, wb) in wj.iter().enumerate() {
                        let row = first + b * sx + c * sxy;
                        let mut r = 0.0;
                        for (a, wa) in wi.iter().enumerate() {
                            r += wa * self.control[row + a];
                        }
                        s += wc * wb * r;
                    }
                }
                s
            })
            .collect()
    }

    /// Fits the lattice to `values` at voxel indices `points` (linear indices into `dims`),
    /// replacing its control points.
    pub fn fit(&mut self, points: &[usize], values: &[f64]) {
        let basis = self.basis_at(points);
        self.fit_at(&basis, values);
    }

    /// Adds another lattice of the same shape.
    pub fn add(&mut self, other: &BsplineField) {
        for (a, b) in self.control.iter_mut().zip(&other.control) {
            *a += b;
        }
    }

    /// The same field on a lattice with twice the spans (exact B-spline subdivision), so levels
    /// can be refined without losing what earlier levels fitted.
    pub fn refined(&self) -> BsplineField {
        let spans = self.spans.map(|s| 2 * s);
        let mut out = BsplineField::zeros(self.dims, spans);
        // Subdivision along one axis at a time: new[2i] = (c[i-1] + 6c[i] + c[i+1]) / 8,
        // new[2i+1] = (c[i] + c[i+1]) / 2, on control indices shifted by the B-spline support.
        let mut cur = self.control.clone();
        let mut cdims = self.spans.map(|s| s + 3);
        for axis in 0..3 {
            let old_n = cdims[axis];
            let new_n = spans[axis] + 3;
            let mut ndims = cdims;
            ndims[axis] = new_n;
            let mut next = vec![0f64; ndims.iter().product()];
            let index = |i: [usize; 3]| i[0] + cdims[0] * (i[1] + cdims[1] * i[2]);
            for c in 0..ndims[2] {
                for b in 0..ndims[1] {
                    for a in 0..ndims[0] {
                        let t = [a, b, c][axis];
                        let at = |k: usize| {
                            let mut idx = [a, b, c];
                            idx[axis] = k.min(old_n - 1);
                            cur[index(idx)]
                        };
                        // New control t is centred at old knot position (t - 1) / 2.
                        let value = if t % 2 == 1 {
                            // On an old knot: vertex rule around old control i.
                            let i = (t - 1) / 2 + 1;
                            (at(i - 1) + 6.0 * at(i) + at(i + 1)) / 8.0
                        } else {
                            // Midway between old knots: edge rule.
                            let i = t / 2;
                            (at(i) + at(i + 1)) / 2.0
                        };
                        next[a + ndims[0] * (b + ndims[1] * c)] = value;
                    }
                }
            }
            cur = next;
            cdims = ndims;
        }
        out.control = cur;
        out
    }

    /// The field's value at voxel `(i, j, k)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize, k: usize) -> f64 {
        let (ki, fi) = self.param(0, i);
        let (kj, fj) = self.param(1, j);
        let (kk, fk) = self.param(2, k);
        let (wi, wj, wk) = (basis(fi), basis(fj), basis(fk));
        let mut s = 0.0;
        for (c, wc) in wk.iter().enumerate() {
            for (b, wb) in wj.iter().enumerate() {
                let mut row = 0.0;
                for (a, wa) in wi.iter().enumerate() {
                    row += wa * self.control[self.cidx(ki + a, kj + b, kk + c)];
                }
                s += wc * wb * row;
            }
        }
        s
    }

    /// The field at every voxel of its grid, x fastest.
    pub fn evaluate(&self) -> Vec<f64> {
        let [nx, ny, nz] = self.dims;
        let mut out = Vec::with_capacity(nx * ny * nz);
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    out.push(self.at(i, j, k));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_basis_gives_the_same_fit_and_values() {
        let dims = [9, 8, 7];
        let points: Vec<usize> = (0..9 * 8 * 7).step_by(3).collect();
        let values: Vec<f64> = points.iter().map(|&p| (p as f64 * 0.37).sin()).collect();
        let mut a = BsplineField::zeros(dims, [2, 2, 1]);
        let mut b = a.clone();
        a.fit(&points, &values);
        let basis = b.basis_at(&points);
        b.fit_at(&basis, &values);
        let va = points.iter().map(|&p| a.at(p % 9, (p / 9) % 8, p / 72));
        for (x, y) in va.zip(b.values_at(&basis)) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn basis_is_a_partition_of_unity() {
        for f in [0.0, 0.3, 0.77] {
            assert!((basis(f).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn fits_a_smooth_field_and_refinement_preserves_it() {
        let dims = [20, 18, 16];
        let field = |i: usize, j: usize, k: usize| {
            0.3 * (i as f64 / 19.0) - 0.2 * (j as f64 / 17.0).powi(2) + 0.1 * (k as f64 / 15.0)
        };
        let points: Vec<usize> = (0..20 * 18 * 16).collect();
        let values: Vec<f64> = points
            .iter()
            .map(|&p| field(p % 20, (p / 20) % 18, p / 360))
            .collect();
        // Multilevel: coarse fit, then refine and fit the residual.
        let mut f = BsplineField::zeros(dims, [1, 1, 1]);
        f.fit(&points, &values);
        for _ in 0..2 {
            let mut fine = f.refined();
            let before: Vec<f64> = points
                .iter()
                .map(|&p| fine.at(p % 20, (p / 20) % 18, p / 360))
                .collect();
            let coarse: Vec<f64> = points
                .iter()
                .map(|&p| f.at(p % 20, (p / 20) % 18, p / 360))
                .collect();
            let drift = before
                .iter()
                .zip(&coarse)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(drift < 1e-9, "refinement changed the field by {drift}");
            let residual: Vec<f64> = values.iter().zip(&before).map(|(v, b)| v - b).collect();
            let mut delta = BsplineField::zeros(dims, fine.spans());
            delta.fit(&points, &residual);
            fine.add(&delta);
            f = fine;
        }
        let errors: Vec<f64> = points
            .iter()
            .zip(&values)
            .map(|(&p, v)| (f.at(p % 20, (p / 20) % 18, p / 360) - v).abs())
            .collect();
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        // The field spans 0.5; the approximation (not interpolation) keeps within a few percent.
        assert!(mean < 0.01, "mean error {mean}");
        assert!(errors.iter().cloned().fold(0.0, f64::max) < 0.06);
    }
}
