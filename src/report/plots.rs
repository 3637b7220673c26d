//! Plots for the QC reports (intensity densities, scatter by site, training curves), drawn with
//! plotters into an RGB buffer and encoded as PNG. Text uses the embedded DejaVu Sans through
//! plotters' `ab_glyph` backend, so no system font (fontconfig) is needed in slim containers.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{FigureError, encode_png};

/// DejaVu Sans 2.37 (Bitstream Vera licence with the DejaVu changes in the public domain;
/// `data/fonts/README.md`).
const FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");

static FONT_ONCE: Once = Once::new();

fn ensure_font() {
    FONT_ONCE.call_once(|| {
        // Registration only fails on a font that does not parse, which the test below rules out.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A colour per series (Tableau 10), cycling.
pub fn palette(i: usize) -> RGBColor {
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

/// One line of a line plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Colour index into [`palette`] (`None`: black).
    pub colour: Option<usize>,
    /// Dashed (drawn as points every few samples) instead of solid.
    pub dashed: bool,
    /// The points, x increasing.
    pub points: Vec<(f64, f64)>,
}

fn err(e: impl std::fmt::Display) -> FigureError {
    FigureError::Encode(format!("plot: {e}"))
}

fn bounds(series: &[Series], log_y: bool) -> (f64, f64, f64, f64) {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, if log_y { 1e-3 } else { 0.0 }, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if log_y {
        (x0, x1, y0 / 1.5, y1 * 1.5)
    } else {
        let y0 = y0.min(0.0);
        (x0, x1, y0, if y1 > y0 { y1 * 1.05 } else { y0 + 1.0 })
    }
}

/// One panel of a line figure.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Caption above the panel.
    pub title: String,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// A line plot (densities, loss curves) `width`×`height` pixels as PNG.
pub fn line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
    size: (u32, u32),
) -> Result<Vec<u8>, FigureError> {
    line_panels(
        &[Panel {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: series.to_vec(),
        }],
        log_y,
        size,
    )
}

/// Line-plot panels side by side, `width`×`height` pixels in all, as PNG.
pub fn line_panels(
    panels: &[Panel],
    log_y: bool,
    (width, height): (u32, u32),
) -> Result<Vec<u8>, FigureError> {
    ensure_font();
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, log_y)?;
        }
        root.present().map_err(err)?;
    }
    encode_png(&buf, width as usize, height as usize)
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    log_y: bool,
) -> Result<(), FigureError> {
    let series = &panel.series;
    let (x0, x1, y0, y1) = bounds(series, log_y);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(52);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(panel.x_label.as_str())
                .y_desc(panel.y_label.as_str())
                .label_style(("sans-serif", 11))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(err)?;
            for s in series {
                let colour = s.colour.map(palette).unwrap_or(BLACK);
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                    .collect();
                let anno = if s.dashed {
                    let step = (pts.len() / 40).max(1);
                    chart
                        .draw_series(
                            pts.iter()
                                .step_by(step)
                                .map(|&p| Circle::new(p, 2, colour.filled())),
                        )
                        .map_err(err)?
                } else {
                    chart
                        .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                        .map_err(err)?
                };
                if !s.label.is_empty() {
                    anno.label(s.label.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
                }
            }
            if series.iter().any(|s| !s.label.is_empty()) {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(200, 200, 200))
                    .label_font(("sans-serif", 11))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(err)?;
            }
        }};
    }
    if log_y {
        draw!(
            builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(err)?
        );
    } else {
        draw!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?);
    }
    Ok(())
}

/// A scatter plot of labelled groups (one colour per group, in the given order).
pub fn scatter_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    groups: &[(String, Vec<(f64, f64)>)],
    (width, height): (u32, u32),
) -> Result<Vec<u8>, FigureError> {
    ensure_font();
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let all: Vec<Series> = groups
            .iter()
            .map(|(l, p)| Series {
                label: l.clone(),
                colour: None,
                dashed: false,
                points: p.clone(),
            })
            .collect();
        let (mut x0, mut x1, _, _) = bounds(&all, false);
        let ys = groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.1));
        let (mut y0, mut y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        if y0 > y1 {
            (y0, y1) = (0.0, 1.0);
        }
        let pad = |a: &mut f64, b: &mut f64| {
            let m = ((*b - *a) * 0.1).max(1e-3);
            *a -= m;
            *b += m;
        };
        pad(&mut x0, &mut x1);
        pad(&mut y0, &mut y1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 11))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        for (i, (label, pts)) in groups.iter().enumerate() {
            let colour = palette(i);
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 5, colour.filled())))
                .map_err(err)?
                .label(label.clone())
                .legend(move |(x, y)| Circle::new((x + 6, y), 5, colour.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 11))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    encode_png(&buf, width as usize, height as usize)
}

/// A density curve of some values over `[lo, hi]` with `bins` bins (normalised to unit area),
/// lightly smoothed; the x of each point is its bin centre.
pub fn density(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<(f64, f64)> {
    let mut h = vec![0.0f64; bins];
    let width = (hi - lo) / bins as f64;
    let mut n = 0.0;
    for &v in values {
        let b = ((v as f64 - lo) / width).floor();
        if b >= 0.0 && (b as usize) < bins {
            h[b as usize] += 1.0;
            n += 1.0;
        }
    }
    let smooth: Vec<f64> = (0..bins)
        .map(|i| {
            let (a, b) = (i.saturating_sub(1), (i + 1).min(bins - 1));
            (h[a] + 2.0 * h[i] + h[b]) / 4.0
        })
        .collect();
    (0..bins)
        .map(|i| {
            (
                lo + (i as f64 + 0.5) * width,
                if n > 0.0 {
                    smooth[i] / (n * width)
                } else {
                    0.0
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes.to_vec()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        (info.width, info.height, buf)
    }

    #[test]
    fn plots_render_text_and_lines() {
        let s = vec![
            Series {
                label: "site A".into(),
                colour: Some(0),
                dashed: false,
                points: (0..50)
                    .map(|i| (i as f64, (i as f64 / 5.0).sin() + 1.5))
                    .collect(),
            },
            Series {
                label: "target".into(),
                colour: None,
                dashed: true,
                points: (0..50).map(|i| (i as f64, 1.0)).collect(),
            },
        ];
        let png_bytes = line_plot("title", "x", "y", &s, false, (320, 200)).unwrap();
        let (w, h, px) = decode(&png_bytes);
        assert_eq!((w, h), (320, 200));
        // The blue series is drawn, and text (dark grey anti-aliased glyphs) exists.
        let blue = px.chunks(3).filter(|p| p == &[31, 119, 180]).count();
        assert!(blue > 50, "{blue}");
        // On a log axis the series is drawn too (a constant 1.0 series sits at log 0).
        let log = line_plot("loss", "step", "loss", &s, true, (320, 200)).unwrap();
        let (lw, lh, lpx) = decode(&log);
        assert_eq!((lw, lh), (320, 200));
        let blue = lpx.chunks(3).filter(|p| p == &[31, 119, 180]).count();
        assert!(blue > 50, "log axis: {blue}");
        let sc = scatter_plot(
            "pca",
            "pc1",
            "pc2",
            &[
                ("HH".into(), vec![(0.0, 1.0), (1.0, 2.0)]),
                ("IU".into(), vec![(3.0, -1.0)]),
            ],
            (300, 240),
        )
        .unwrap();
        let (_, _, px) = decode(&sc);
        assert!(px.chunks(3).any(|p| p == [255, 127, 14]));
    }

    #[test]
    fn density_has_unit_area() {
        let v: Vec<f32> = (0..1000).map(|i| (i % 100) as f32 / 100.0).collect();
        let d = density(&v, 0.0, 1.0, 50);
        let area: f64 = d.iter().map(|p| p.1 * 0.02).sum();
        assert!((area - 1.0).abs() < 0.02, "{area}");
    }
}
