//! Orientation: which world axis each voxel axis points along, and reorientation of a volume to the
//! closest canonical RAS+ grid by axis permutation and flips only (no resampling), as nibabel's
//! `io_orientation` / `as_closest_canonical` do. nalgebra provides the SVD.

use nalgebra::{Matrix3, Matrix4};

use super::Volume;

/// For each voxel axis: the world axis (0 = x/R, 1 = y/A, 2 = z/S) it is closest to, and whether it
/// runs along (+1) or against (-1) that world axis.
pub type Orientation = [(usize, i8); 3];

/// Orientation of the voxel axes of `affine` (nibabel's `io_orientation` algorithm: normalise the
/// columns, take the nearest orthogonal matrix via SVD, then assign each voxel axis greedily to
/// the world axis with the largest component, never reusing a world axis).
pub fn io_orientation(affine: &Matrix4<f64>) -> Orientation {
    let mut rs: Matrix3<f64> = affine.fixed_view::<3, 3>(0, 0).into_owned();
    for mut c in rs.column_iter_mut() {
        let n = c.norm();
        if n > 0.0 {
            c /= n;
        }
    }
    let svd = rs.svd(true, true);
    let mut r = match (svd.u, svd.v_t) {
        (Some(u), Some(vt)) => u * vt,
        _ => Matrix3::identity(),
    };
    let mut out = [(0usize, 1i8); 3];
    let mut used = [false; 3];
    for (in_ax, slot) in out.iter_mut().enumerate() {
        let col = r.column(in_ax).into_owned();
        let mut best = None;
        for out_ax in 0..3 {
            if used[out_ax] {
                continue;
            }
            let v = col[out_ax];
            if best.is_none_or(|(_, b): (usize, f64)| v.abs() > b.abs()) {
                best = Some((out_ax, v));
            }
        }
        let (out_ax, v) = best.unwrap_or((in_ax, 1.0));
        used[out_ax] = true;
        *slot = (out_ax, if v < 0.0 { -1 } else { 1 });
        r.row_mut(out_ax).fill(0.0);
    }
    out
}

/// Axis codes such as `['R', 'A', 'S']` or `['P', 'S', 'R']` (nibabel's `aff2axcodes`).
pub fn axcodes(affine: &Matrix4<f64>) -> [char; 3] {
    const POS: [char; 3] = ['R', 'A', 'S'];
    const NEG: [char; 3] = ['L', 'P', 'I'];
    io_orientation(affine).map(|(ax, sign)| if sign > 0 { POS[ax] } else { NEG[ax] })
}

/// Reorients `volume` so that voxel axes run along R, A, S (in that order) by permuting and
/// flipping axes; the affine is updated so every voxel keeps its world position. Returns the input
/// unchanged (cloned) when it is already RAS+.
pub fn to_closest_canonical(volume: &Volume) -> Volume {
    let ornt = io_orientation(volume.affine());
    if ornt == [(0, 1), (1, 1), (2, 1)] {
        return volume.clone();
    }
    let old_dims = volume.dims();
    // For each new (RAS) axis: the old axis feeding it and whether it is flipped.
    let mut src = [(0usize, false); 3];
    for (old_ax, &(new_ax, sign)) in ornt.iter().enumerate() {
        src[new_ax] = (old_ax, sign < 0);
    }
    let new_dims = [old_dims[src[0].0], old_dims[src[1].0], old_dims[src[2].0]];
    // Voxel transform: old index = T · new index.
    let mut t = Matrix4::<f64>::zeros();
    t[(3, 3)] = 1.0;
    for (new_ax, &(old_ax, flip)) in src.iter().enumerate() {
        if flip {
            t[(old_ax, new_ax)] = -1.0;
            t[(old_ax, 3)] = (old_dims[old_ax] - 1) as f64;
        } else {
            t[(old_ax, new_ax)] = 1.0;
        }
    }
    let affine = volume.affine() * t;
    let mut data = vec![0f32; volume.data().len()];
    let old = volume.data();
    let stride = [1, old_dims[0], old_dims[0] * old_dims[1]];
    let mut n = 0;
    for k in 0..new_dims[2] {
        for j in 0..new_dims[1] {
            for i in 0..new_dims[0] {
                let new_idx = [i, j, k];
                let mut o = 0;
                for (new_ax, &(old_ax, flip)) in src.iter().enumerate() {
                    let v = new_idx[new_ax];
                    let v = if flip { old_dims[old_ax] - 1 - v } else { v };
                    o += v * stride[old_ax];
                }
                data[n] = old[o];
                n += 1;
            }
        }
    }
    // Permuting axes of a valid volume keeps it valid.
    Volume::new(new_dims, affine, data).unwrap_or_else(|_| volume.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(dims: [usize; 3], affine: Matrix4<f64>) -> Volume {
        let n = dims.iter().product::<usize>();
        Volume::new(dims, affine, (0..n).map(|v| v as f32).collect()).unwrap()
    }

    #[test]
    fn ras_is_unchanged() {
        let v = vol([2, 3, 4], Matrix4::identity());
        assert_eq!(axcodes(v.affine()), ['R', 'A', 'S']);
        assert_eq!(to_closest_canonical(&v), v);
    }

    #[test]
    fn reorientation_keeps_world_positions() {
        // PSR: voxel x runs posterior, y superior, z right (the IXI fixtures' layout).
        #[rustfmt::skip]
        let a = Matrix4::new(
            0.0, 0.0, 2.0, -10.0,
            -2.0, 0.0, 0.0, 30.0,
            0.0, 2.0, 0.0, -5.0,
            0.0, 0.0, 0.0, 1.0,
        );
        let v = vol([3, 4, 5], a);
        assert_eq!(axcodes(v.affine()), ['P', 'S', 'R']);
        let c = to_closest_canonical(&v);
        assert_eq!(axcodes(c.affine()), ['R', 'A', 'S']);
        assert_eq!(c.dims(), [5, 3, 4]);
        let sum = |v: &Volume| v.data().iter().map(|&x| x as f64).sum::<f64>();
        assert_eq!(sum(&c), sum(&v));
        for (i, j, k) in [(0, 0, 0), (1, 2, 3), (2, 3, 4)] {
            let w = v.voxel_to_world(i as f64, j as f64, k as f64);
            let inv = c.affine().try_inverse().unwrap();
            let p = inv * nalgebra::Vector4::new(w[0], w[1], w[2], 1.0);
            let (ci, cj, ck) = (
                p[0].round() as usize,
                p[1].round() as usize,
                p[2].round() as usize,
            );
            assert_eq!(c.get(ci, cj, ck), v.get(i, j, k));
        }
    }
}
