//! QC figures as PNG bytes: three orthogonal slices of a volume with outlines drawn over them
//! (template edges over a registered image, a brain-mask outline over a T1w). Placing the files is
//! the `derivatives` module's job; this module only renders. Also the before/after comparison
//! figures of harmonisation, the plots ([`plots`]) and the HTML reports ([`html`]).

pub mod html;
pub mod plots;

use crate::volume::Volume;

/// An outline to draw: where a boolean map on the image's grid changes, in an RGB colour.
pub struct Outline<'a> {
    /// `true` inside, on the image's grid.
    pub inside: &'a [bool],
    /// Line colour.
    pub rgb: [u8; 3],
}

/// Why a figure could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

/// Renders the middle sagittal, coronal and axial slices through `centre` (voxel indices; the
/// grid centre when `None`) side by side, greyscale between the 1st and 99.5th percentiles, with
/// outlines, each panel scaled to square millimetres and up by `zoom`.
pub fn orthogonal_slices(
    image: &Volume,
    outlines: &[Outline],
    centre: Option<[usize; 3]>,
    zoom: usize,
) -> Result<Vec<u8>, FigureError> {
    let grey = grey_window(image, None);
    let (rgb, w, h) = render_slices(image, outlines, centre, zoom, &|i| grey(image.data()[i]));
    encode_png(&rgb, w, h)
}

/// Greyscale between the 1st and 99.5th percentiles of the voxels (of those inside `mask` when
/// given).
fn grey_window(image: &Volume, mask: Option<&[bool]>) -> impl Fn(f32) -> [u8; 3] + use<> {
    let p = match mask {
        Some(m) => crate::preprocess::filter::percentiles(image.data(), |i| m[i], &[1.0, 99.5]),
        None => crate::preprocess::filter::percentiles(image.data(), |_| true, &[1.0, 99.5]),
    }
    .unwrap_or(vec![0.0, 1.0]);
    let (lo, hi) = (p[0], if p[1] > p[0] { p[1] } else { p[0] + 1.0 });
    move |v: f32| {
        let g = (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
        [g, g, g]
    }
}

/// Blue (−`range`) → white (0) → red (+`range`).
fn diverging(range: f32) -> impl Fn(f32) -> [u8; 3] {
    move |v: f32| {
        let t = (v / range).clamp(-1.0, 1.0);
        let fade = |t: f32| (255.0 * (1.0 - t.abs())) as u8;
        if t >= 0.0 {
            [255, fade(t), fade(t)]
        } else {
            [fade(t), fade(t), 255]
        }
    }
}

/// Three rows of orthogonal slices: `before`, `after` (each greyscale in its own brain window,
/// so methods with other units compare), and their difference after scaling each by its brain
/// 1st–99th percentile range (blue = darker after, red = brighter, ±25 % of that range). The
/// mask outline is drawn in green on the first two rows. Same grid for all three.
pub fn comparison_figure(
    before: &Volume,
    after: &Volume,
    mask: &[bool],
    zoom: usize,
) -> Result<Vec<u8>, FigureError> {
    let norm = |v: &Volume| -> Vec<f32> {
        let p = crate::preprocess::filter::percentiles(v.data(), |i| mask[i], &[1.0, 99.0])
            .unwrap_or(vec![0.0, 1.0]);
        let span = (p[1] - p[0]).max(1e-6);
        v.data()
            .iter()
            .zip(mask)
            .map(|(&x, &m)| if m { (x - p[0]) / span } else { 0.0 })
            .collect()
    };
    let (nb, na) = (norm(before), norm(after));
    let diff = before
        .with_data(na.iter().zip(&nb).map(|(a, b)| a - b).collect())
        .map_err(FigureError::Encode)?;
    let centre = mask_centre(mask, before.dims());
    let outline = [Outline {
        inside: mask,
        rgb: [40, 220, 40],
    }];
    // Outside the brain is black in every row (z-scored outputs have negative brain values, so
    // a window alone would paint the background grey).
    let masked = |colour: &dyn Fn(f32) -> [u8; 3], v: &Volume, i: usize| {
        if mask[i] {
            colour(v.data()[i])
        } else {
            [0, 0, 0]
        }
    };
    let (gb, ga, dv) = (
        grey_window(before, Some(mask)),
        grey_window(after, Some(mask)),
        diverging(0.25),
    );
    let rows = [
        render_slices(before, &outline, centre, zoom, &|i| masked(&gb, before, i)),
        render_slices(after, &outline, centre, zoom, &|i| masked(&ga, after, i)),
        render_slices(&diff, &[], centre, zoom, &|i| masked(&dv, &diff, i)),
    ];
    let width = rows[0].1;
    let height: usize = rows.iter().map(|r| r.2).sum();
    let mut rgb = Vec::with_capacity(width * height * 3);
    for (r, _, _) in &rows {
        rgb.extend_from_slice(r);
    }
    encode_png(&rgb, width, height)
}

/// Voxel index of a mask's centre of mass.
pub fn mask_centre(inside: &[bool], dims: [usize; 3]) -> Option<[usize; 3]> {
    let (mut n, mut s) = (0usize, [0usize; 3]);
    for (i, &b) in inside.iter().enumerate() {
        if b {
            n += 1;
            s[0] += i % dims[0];
            s[1] += (i / dims[0]) % dims[1];
            s[2] += i / (dims[0] * dims[1]);
        }
    }
    (n > 0).then(|| s.map(|v| v / n))
}

/// Renders the three panels into an RGB buffer: (pixels, width, height).
fn render_slices(
    image: &Volume,
    outlines: &[Outline],
    centre: Option<[usize; 3]>,
    zoom: usize,
    colour_of: &dyn Fn(usize) -> [u8; 3],
) -> (Vec<u8>, usize, usize) {
    let dims = image.dims();
    let c = centre.unwrap_or([dims[0] / 2, dims[1] / 2, dims[2] / 2]);
    let vs = image.voxel_sizes();
    // Each panel: (horizontal axis, vertical axis, fixed axis, fixed index).
    let panels = [
        (1usize, 2usize, 0usize, c[0]),
        (0, 2, 1, c[1]),
        (0, 1, 2, c[2]),
    ];
    let panel_size = |h: usize, v: usize| {
        (
            ((dims[h] as f64 * vs[h]).round() as usize).max(1) * zoom / 2,
            ((dims[v] as f64 * vs[v]).round() as usize).max(1) * zoom / 2,
        )
    };
    let width: usize = panels.iter().map(|&(h, v, _, _)| panel_size(h, v).0).sum();
    let height: usize = panels
        .iter()
        .map(|&(h, v, _, _)| panel_size(h, v).1)
        .max()
        .unwrap_or(1);
    let mut rgb = vec![0u8; width * height * 3];
    let mut x0 = 0;
    for &(h, v, f, fi) in &panels {
        let (pw, ph) = panel_size(h, v);
        let voxel = |px: usize, py: usize| -> usize {
            let mut idx = [0usize; 3];
            idx[h] = (px * dims[h] / pw).min(dims[h] - 1);
            // Image rows go top-down; anatomy goes bottom-up.
            idx[v] = ((ph - 1 - py) * dims[v] / ph).min(dims[v] - 1);
            idx[f] = fi.min(dims[f] - 1);
            image.index(idx[0], idx[1], idx[2])
        };
        for py in 0..ph {
            for px in 0..pw {
                let i = voxel(px, py);
                let mut colour = colour_of(i);
                for o in outlines {
                    let here = o.inside[i];
                    let edge = [(px + 1, py), (px, py + 1)]
                        .iter()
                        .any(|&(qx, qy)| qx < pw && qy < ph && o.inside[voxel(qx, qy)] != here);
                    if edge {
                        colour = o.rgb;
                    }
                }
                let o = 3 * ((x0 + px) + width * py);
                rgb[o..o + 3].copy_from_slice(&colour);
            }
        }
        x0 += pw;
    }
    (rgb, width, height)
}

/// Encodes 8-bit RGB pixels as PNG.
pub fn encode_png(rgb: &[u8], width: usize, height: usize) -> Result<Vec<u8>, FigureError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| FigureError::Encode(e.to_string()))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| FigureError::Encode(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix4;

    #[test]
    fn renders_a_decodable_png_with_the_outline_colour() {
        let n = 20;
        let data: Vec<f32> = (0..n * n * n).map(|i| (i % 17) as f32).collect();
        let mut a = Matrix4::identity() * 2.0;
        a[(3, 3)] = 1.0;
        let v = Volume::new([n, n, n], a, data).unwrap();
        let inside: Vec<bool> = (0..n * n * n)
            .map(|i| {
                let (x, y, z) = (i % n, (i / n) % n, i / (n * n));
                (5..15).contains(&x) && (5..15).contains(&y) && (5..15).contains(&z)
            })
            .collect();
        let png_bytes = orthogonal_slices(
            &v,
            &[Outline {
                inside: &inside,
                rgb: [255, 0, 0],
            }],
            None,
            2,
        )
        .unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (120, 40));
        let red = buf[..info.buffer_size()]
            .chunks(3)
            .filter(|p| p == &[255, 0, 0])
            .count();
        assert!(red > 50, "{red} outline pixels");
    }
}
