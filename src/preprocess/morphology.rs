//! Binary morphology on voxel masks (`Vec<bool>` on a volume's grid): exact Euclidean distance
//! transforms in millimetres (so erosion and dilation use true balls on anisotropic grids),
//! connected components and hole filling.
//!
//! Written here: the Rust image crates are 2D; the one 3D candidate (`ndarray-ndimage`) uses
//! voxel-count structuring elements, not millimetre balls, and would need a copy into ndarray.

use rayon::prelude::*;

/// Squared Euclidean distance (mm²) from each voxel to the nearest `true` voxel (0 on the set),
/// by the separable algorithm of Felzenszwalb & Huttenlocher (2012), exact, O(N).
pub fn distance_to(mask: &[bool], dims: [usize; 3], voxel_mm: [f64; 3]) -> Vec<f64> {
    let big = 1e20;
    let mut d: Vec<f64> = mask.iter().map(|&m| if m { 0.0 } else { big }).collect();
    let [nx, ny, nz] = dims;
    // Along x: contiguous lines.
    d.par_chunks_mut(nx)
        .for_each(|line| edt_1d(line, voxel_mm[0]));
    // Along y and z: gather lines per plane/column in parallel over the other axis.
    let plane = nx * ny;
    d.par_chunks_mut(plane).for_each(|p| {
        let mut line = vec![0f64; ny];
        for i in 0..nx {
            for (j, v) in line.iter_mut().enumerate() {
                *v = p[i + nx * j];
            }
            edt_1d(&mut line, voxel_mm[1]);
            for (j, v) in line.iter().enumerate() {
                p[i + nx * j] = *v;
            }
        }
    });
    let columns: Vec<Vec<f64>> = (0..plane)
        .into_par_iter()
        .map(|c| {
            let mut line: Vec<f64> = (0..nz).map(|k| d[c + plane * k]).collect();
            edt_1d(&mut line, voxel_mm[2]);
            line
        })
        .collect();
    for (c, line) in columns.into_iter().enumerate() {
        for (k, v) in line.into_iter().enumerate() {
            d[c + plane * k] = v;
        }
    }
    d
}

/// One-dimensional squared distance transform of a sampled function (lower envelope of parabolas).
fn edt_1d(f: &mut [f64], spacing: f64) {
    let n = f.len();
    if n == 0 {
        return;
    }
    let s2 = spacing * spacing;
    let mut v = vec![0usize; n];
    let mut z = vec![0f64; n + 1];
    let mut k = 0usize;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let src = f.to_vec();
    for q in 1..n {
        loop {
            let p = v[k];
            let s = ((src[q] + s2 * (q * q) as f64) - (src[p] + s2 * (p * p) as f64))
                / (2.0 * s2 * (q as f64 - p as f64));
            if s <= z[k] && k > 0 {
                k -= 1;
                continue;
            }
            if s <= z[k] {
                // k == 0: replace the first parabola.
                v[0] = q;
                z[1] = f64::INFINITY;
                break;
            }
            k += 1;
            v[k] = q;
            z[k] = s;
            z[k + 1] = f64::INFINITY;
            break;
        }
    }
    k = 0;
    for (q, out) in f.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f64 - p as f64;
        *out = s2 * dq * dq + src[p];
    }
}

/// Dilation by a ball of `radius_mm`.
pub fn dilate(mask: &[bool], dims: [usize; 3], voxel_mm: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let r2 = radius_mm * radius_mm + 1e-9;
    distance_to(mask, dims, voxel_mm)
        .into_iter()
        .map(|d| d <= r2)
        .collect()
}

/// Erosion by a ball of `radius_mm`.
pub fn erode(mask: &[bool], dims: [usize; 3], voxel_mm: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let inverse: Vec<bool> = mask.iter().map(|m| !m).collect();
    let r2 = radius_mm * radius_mm + 1e-9;
    distance_to(&inverse, dims, voxel_mm)
        .into_iter()
        .map(|d| d > r2)
        .collect()
}

/// Opening (erode, then dilate): removes thin bridges and specks narrower than the ball.
pub fn open(mask: &[bool], dims: [usize; 3], voxel_mm: [f64; 3], radius_mm: f64) -> Vec<bool> {
    dilate(
        &erode(mask, dims, voxel_mm, radius_mm),
        dims,
        voxel_mm,
        radius_mm,
    )
}

/// Closing (dilate, then erode): fills narrow gaps and sulci narrower than the ball.
pub fn close(mask: &[bool], dims: [usize; 3], voxel_mm: [f64; 3], radius_mm: f64) -> Vec<bool> {
    erode(
        &dilate(mask, dims, voxel_mm, radius_mm),
        dims,
        voxel_mm,
        radius_mm,
    )
}

/// 6-connected component labels (0 = background, 1.. = components) and each component's size.
fn label(mask: &[bool], dims: [usize; 3]) -> (Vec<u32>, Vec<usize>) {
    let [nx, ny, nz] = dims;
    let mut labels = vec![0u32; mask.len()];
    let mut sizes = vec![0usize];
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0;
        labels[start] = id;
        stack.push(start);
        while let Some(idx) = stack.pop() {
            size += 1;
            let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
            let mut visit = |n: usize| {
                if mask[n] && labels[n] == 0 {
                    labels[n] = id;
                    stack.push(n);
                }
            };
            if i > 0 {
                visit(idx - 1);
            }
            if i + 1 < nx {
                visit(idx + 1);
            }
            if j > 0 {
                visit(idx - nx);
            }
            if j + 1 < ny {
                visit(idx + nx);
            }
            if k > 0 {
                visit(idx - nx * ny);
            }
            if k + 1 < nz {
                visit(idx + nx * ny);
            }
        }
        sizes.push(size);
    }
    (labels, sizes)
}

/// Keeps only the largest 6-connected component (empty stays empty).
pub fn largest_component(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let (labels, sizes) = label(mask, dims);
    let Some((best, _)) = sizes.iter().enumerate().skip(1).max_by_key(|(_, s)| **s) else {
        return mask.to_vec();
    };
    labels.iter().map(|&l| l == best as u32).collect()
}

/// Fills every background region that does not touch the grid's border.
pub fn fill_holes(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let background: Vec<bool> = mask.iter().map(|m| !m).collect();
    let (labels, sizes) = label(&background, dims);
    let [nx, ny, nz] = dims;
    let mut touches = vec![false; sizes.len()];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if i == 0 || j == 0 || k == 0 || i == nx - 1 || j == ny - 1 || k == nz - 1 {
                    touches[labels[i + nx * (j + ny * k)] as usize] = true;
                }
            }
        }
    }
    labels
        .iter()
        .zip(mask)
        .map(|(&l, &m)| m || (l != 0 && !touches[l as usize]))
        .collect()
}

/// Sørensen–Dice overlap of two masks (1 when both are empty).
pub fn dice(a: &[bool], b: &[bool]) -> f64 {
    dice_of(a.iter().copied().zip(b.iter().copied()))
}

/// Sørensen–Dice overlap 2|A∩B| / (|A| + |B|) of voxel pairs (in A, in B); 1 when both are empty.
pub fn dice_of(pairs: impl Iterator<Item = (bool, bool)>) -> f64 {
    let (mut both, mut na, mut nb) = (0usize, 0usize, 0usize);
    for (x, y) in pairs {
        na += x as usize;
        nb += y as usize;
        both += (x && y) as usize;
    }
    if na + nb == 0 {
        1.0
    } else {
        2.0 * both as f64 / (na + nb) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ball(dims: [usize; 3], c: [f64; 3], r: f64, vs: [f64; 3]) -> Vec<bool> {
        let mut m = vec![false; dims.iter().product()];
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let d2 = ((i as f64 - c[0]) * vs[0]).powi(2)
                        + ((j as f64 - c[1]) * vs[1]).powi(2)
                        + ((k as f64 - c[2]) * vs[2]).powi(2);
                    m[i + dims[0] * (j + dims[1] * k)] = d2 <= r * r;
                }
            }
        }
        m
    }

    #[test]
    fn distance_transform_is_exact_on_anisotropic_grids() {
        let dims = [21, 17, 9];
        let vs = [1.0, 1.5, 3.0];
        let mut m = vec![false; 21 * 17 * 9];
        m[10 + 21 * (8 + 17 * 4)] = true;
        let d = distance_to(&m, dims, vs);
        for (idx, v) in d.iter().enumerate() {
            let (i, j, k) = (idx % 21, (idx / 21) % 17, idx / (21 * 17));
            let want = ((i as f64 - 10.0) * 1.0).powi(2)
                + ((j as f64 - 8.0) * 1.5).powi(2)
                + ((k as f64 - 4.0) * 3.0).powi(2);
            assert!((v - want).abs() < 1e-9, "{i} {j} {k}: {v} vs {want}");
        }
    }

    #[test]
    fn dilating_a_point_gives_a_ball_and_erosion_undoes_it() {
        let dims = [31, 31, 31];
        let vs = [1.0; 3];
        let mut point = vec![false; 31 * 31 * 31];
        point[15 + 31 * (15 + 31 * 15)] = true;
        let b = dilate(&point, dims, vs, 6.0);
        assert_eq!(b, ball(dims, [15.0; 3], 6.0, vs));
        let big = ball(dims, [15.0; 3], 10.0, vs);
        let e = erode(&big, dims, vs, 4.0);
        let small = ball(dims, [15.0; 3], 6.0, vs);
        assert!(dice(&e, &small) > 0.95, "{}", dice(&e, &small));
    }

    #[test]
    fn components_and_holes() {
        let dims = [30, 30, 30];
        let vs = [1.0; 3];
        let mut m = ball(dims, [10.0, 15.0, 15.0], 6.0, vs);
        let other = ball(dims, [24.0, 15.0, 15.0], 3.0, vs);
        m.iter_mut().zip(&other).for_each(|(a, b)| *a |= b);
        let hole = ball(dims, [10.0, 15.0, 15.0], 2.0, vs);
        m.iter_mut().zip(&hole).for_each(|(a, h)| *a &= !h);
        let big = largest_component(&m, dims);
        assert!(!big[24 + 30 * (15 + 30 * 15)]);
        assert!(!big[10 + 30 * (15 + 30 * 15)]);
        let filled = fill_holes(&big, dims);
        assert_eq!(filled, ball(dims, [10.0, 15.0, 15.0], 6.0, vs));
        // Dice against hand-counted overlaps: the filled ball against the holed one is
        // 2(N−H)/(2N−H) for N ball and H hole voxels; disjoint masks 0; two empty masks 1.
        let (n, h) = (
            filled.iter().filter(|&&v| v).count() as f64,
            hole.iter().filter(|&&v| v).count() as f64,
        );
        let holed: Vec<bool> = filled.iter().zip(&hole).map(|(a, h)| *a && !h).collect();
        assert!((dice(&filled, &holed) - 2.0 * (n - h) / (2.0 * n - h)).abs() < 1e-12);
        assert_eq!(dice(&filled, &other), 0.0);
        assert_eq!(dice(&[false; 4], &[false; 4]), 1.0);
    }
}
