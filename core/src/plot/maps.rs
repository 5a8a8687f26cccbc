//! Maps of a 2-D latent plane: the points themselves, a 2-D histogram of them, or a density
//! on a grid, with numbered marks (k-means centers) on top.

use std::path::Path;

use plotters::element::{Circle, PathElement, Rectangle};
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{Color, RGBColor, BLACK, WHITE};

use super::color::{palette, viridis};
use super::common::{
    bad, build_chart, draw_polyline, finite_range, fmt_tick, frame_box, nice_ticks, pad_linear,
    pixel_map, render, Area, Axis, Chart, DrawResult, Frame, DESC_SIZE, HEIGHT, TICK_SIZE, WIDTH,
};
use super::font::{draw_text, text_size, Anchor};
use crate::error::Result;

/// What fills the plane of a [`MarkedMap`].
#[derive(Clone, Copy, Debug)]
pub enum MapBackground<'a> {
    /// Each point `(x[i], y[i])` as a small translucent dot (smaller and fainter for more
    /// points).
    Scatter { x: &'a [f64], y: &'a [f64] },
    /// The points counted in square cells, `bins` across the plot, on a logarithmic white
    /// to blue scale (empty cells white), with a colour bar of the counts.
    Histogram {
        x: &'a [f64],
        y: &'a [f64],
        bins: usize,
    },
    /// Values at the nodes of a regular `nx × ny` grid, `values[iy·nx + ix]` at
    /// `(x_range.0 + ix·(x_range.1 − x_range.0)/(nx − 1), ...)`, each drawn as the cell
    /// around its node, on the viridis scale from the smallest to the largest finite value,
    /// with a colour bar.
    Grid {
        values: &'a [f64],
        nx: usize,
        ny: usize,
        x_range: (f64, f64),
        y_range: (f64, f64),
    },
}

/// A map of the plane with marks on top, drawn by [`marked_map`].
#[derive(Clone, Copy, Debug)]
pub struct MarkedMap<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub background: MapBackground<'a>,
    /// Points drawn on top as red dots with a black rim (e.g. k-means centers). Over a
    /// [`MapBackground::Grid`], marks outside the grid are drawn hollow at its edge.
    pub marks: &'a [(f64, f64)],
    /// Write each mark's index (0, 1, ...) beside it, white on a black outline.
    pub numbered: bool,
}

/// Red of the marks.
const MARK: RGBColor = RGBColor(214, 39, 40);
/// Width of the colour-bar column on the right of maps with a colour scale.
const BAR_COLUMN: u32 = 150;
/// Label size of the marks.
const MARK_LABEL_SIZE: f64 = 15.0;

/// Matplotlib's "Blues" (9 classes).
const BLUES: [(u8, u8, u8); 9] = [
    (247, 251, 255),
    (222, 235, 247),
    (198, 219, 239),
    (158, 202, 225),
    (107, 174, 214),
    (66, 146, 198),
    (33, 113, 181),
    (8, 81, 156),
    (8, 48, 107),
];

/// Counts scale: `t` in [0, 1] from light blue (one point) to dark blue; the palest
/// classes are skipped so that single points stand out from the white background.
fn blues(t: f64) -> RGBColor {
    let t = 0.25 + 0.75 * t.clamp(0.0, 1.0);
    let f = t * (BLUES.len() - 1) as f64;
    let i = (f.floor() as usize).min(BLUES.len() - 2);
    let w = f - i as f64;
    let (a, b) = (BLUES[i], BLUES[i + 1]);
    let mix = |x: u8, y: u8| (x as f64 + w * (y as f64 - x as f64)).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Draw `map` to the PNG file `path`.
///
/// Non-finite points and marks are skipped. The axes span the points and the marks (a grid:
/// its cells).
///
/// Errors: no point (or no finite one), `x` and `y` of different lengths, `bins` = 0, an
/// empty grid or `values.len() ≠ nx·ny`, a grid with fewer than 2 nodes along an axis or a
/// range that is not finite and increasing, no finite grid value, or the file cannot be
/// written.
pub fn marked_map(path: &Path, map: &MarkedMap<'_>) -> Result<()> {
    // Finite marks and their indices (the numbers written beside them).
    let (mark_ids, marks): (Vec<usize>, Vec<(f64, f64)>) = map
        .marks
        .iter()
        .enumerate()
        .filter(|(_, p)| p.0.is_finite() && p.1.is_finite())
        .map(|(i, &p)| (i, p))
        .unzip();
    match map.background {
        MapBackground::Scatter { x, y } | MapBackground::Histogram { x, y, .. } => {
            let pts = finite_points(path, x, y)?;
            let xr = finite_range(pts.iter().chain(&marks).map(|p| p.0)).unwrap_or((0.0, 1.0));
            let yr = finite_range(pts.iter().chain(&marks).map(|p| p.1)).unwrap_or((0.0, 1.0));
            let frame = frame_for(map, pad_linear(xr, 0.04), pad_linear(yr, 0.04));
            if let MapBackground::Histogram { bins, .. } = map.background {
                if bins == 0 {
                    return Err(bad(path, "the number of histogram bins must be at least 1"));
                }
                draw_histogram(path, &frame, &pts, bins, &marks, &mark_ids, map.numbered)
            } else {
                draw_scatter(path, &frame, &pts, &marks, &mark_ids, map.numbered)
            }
        }
        MapBackground::Grid {
            values,
            nx,
            ny,
            x_range,
            y_range,
        } => {
            if nx < 2 || ny < 2 {
                return Err(bad(
                    path,
                    format!("a grid needs at least 2×2 nodes, got {nx}×{ny}"),
                ));
            }
            if nx.checked_mul(ny) != Some(values.len()) {
                return Err(bad(
                    path,
                    format!(
                        "a {nx}×{ny} grid needs {} values, got {}",
                        nx.saturating_mul(ny),
                        values.len()
                    ),
                ));
            }
            for (what, (lo, hi)) in [("x range", x_range), ("y range", y_range)] {
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return Err(bad(
                        path,
                        format!("{what} ({lo}, {hi}) must be finite and increasing"),
                    ));
                }
            }
            let (vmin, vmax) = finite_range(values.iter().copied())
                .ok_or_else(|| bad(path, "no finite value in the grid"))?;
            let hx = (x_range.1 - x_range.0) / (nx - 1) as f64;
            let hy = (y_range.1 - y_range.0) / (ny - 1) as f64;
            let xr = (x_range.0 - hx / 2.0, x_range.1 + hx / 2.0);
            let yr = (y_range.0 - hy / 2.0, y_range.1 + hy / 2.0);
            let frame = frame_for(map, xr, yr);
            let grid = GridBg {
                values,
                nx,
                ny,
                xr,
                yr,
                vmin,
                vmax,
            };
            draw_grid(path, &frame, &grid, &marks, &mark_ids, map.numbered)
        }
    }
}

fn finite_points(path: &Path, x: &[f64], y: &[f64]) -> Result<Vec<(f64, f64)>> {
    if x.is_empty() && y.is_empty() {
        return Err(bad(path, "no points to draw"));
    }
    if x.len() != y.len() {
        return Err(bad(
            path,
            format!("{} x values but {} y values", x.len(), y.len()),
        ));
    }
    let pts: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(&a, &b)| (a, b))
        .collect();
    if pts.is_empty() {
        return Err(bad(path, "no point with finite x and y to draw"));
    }
    Ok(pts)
}

fn frame_for<'t>(map: &MarkedMap<'t>, xr: (f64, f64), yr: (f64, f64)) -> Frame<'t> {
    Frame {
        title: map.title,
        x_label: map.x_label,
        y_label: map.y_label,
        x: Axis::linear(xr, 8),
        y: Axis::linear(yr, 8),
        top: None,
        x_grid: false,
        y_grid: false,
        right_extra: 0,
    }
}

fn draw_scatter(
    path: &Path,
    frame: &Frame,
    pts: &[(f64, f64)],
    marks: &[(f64, f64)],
    ids: &[usize],
    numbered: bool,
) -> Result<()> {
    let (radius, alpha) = match pts.len() {
        0..=1_000 => (3, 0.7),
        1_001..=10_000 => (2, 0.4),
        10_001..=100_000 => (1, 0.3),
        _ => (1, 0.12),
    };
    let color = palette(0);
    render(path, (WIDTH, HEIGHT), |root| {
        let mut chart = build_chart(root, frame)?;
        chart.draw_series(
            pts.iter()
                .map(|&p| Circle::new(p, radius, color.mix(alpha).filled())),
        )?;
        draw_marks(root, &chart, marks, &[], ids, numbered)
    })
}

/// Where each of `pts` falls on the `nx × ny` cells over `xr × yr`, counted.
fn count_cells(
    pts: &[(f64, f64)],
    (nx, ny): (usize, usize),
    xr: (f64, f64),
    yr: (f64, f64),
) -> Vec<u32> {
    let mut counts = vec![0u32; nx * ny];
    for &(x, y) in pts {
        let fx = (x - xr.0) / (xr.1 - xr.0);
        let fy = (y - yr.0) / (yr.1 - yr.0);
        if (0.0..=1.0).contains(&fx) && (0.0..=1.0).contains(&fy) {
            let ix = ((fx * nx as f64) as usize).min(nx - 1);
            let iy = ((fy * ny as f64) as usize).min(ny - 1);
            counts[iy * nx + ix] += 1;
        }
    }
    counts
}

fn draw_histogram(
    path: &Path,
    frame: &Frame,
    pts: &[(f64, f64)],
    bins: usize,
    marks: &[(f64, f64)],
    ids: &[usize],
    numbered: bool,
) -> Result<()> {
    let xr = (frame.x.lo, frame.x.hi);
    let yr = (frame.y.lo, frame.y.hi);
    render(path, (WIDTH, HEIGHT), |root| {
        let (left, right) = root.split_horizontally(WIDTH - BAR_COLUMN);
        let chart = build_chart(&left, frame)?;
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let (w, h) = ((xs.end - xs.start) as f64, (ys.end - ys.start) as f64);
        // Square cells on screen.
        let nx = bins;
        let ny = ((bins as f64 * h / w).round() as usize).max(1);
        let counts = count_cells(pts, (nx, ny), xr, yr);
        let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
        // log(count) / log(max); a single point at 0.
        let level = |c: u32| {
            if max > 1.0 {
                (c as f64).ln() / max.ln()
            } else {
                1.0
            }
        };
        fill_plot(&left, &chart, |fx, fy| {
            let ix = ((fx * nx as f64) as usize).min(nx - 1);
            let iy = ((fy * ny as f64) as usize).min(ny - 1);
            let c = counts[iy * nx + ix];
            (c > 0).then(|| blues(level(c)))
        })?;
        let mut ticks: Vec<(f64, String)> = count_ticks(max as u64)
            .into_iter()
            .map(|c| (level(c as u32), c.to_string()))
            .collect();
        // Label the top of the bar too, unless a tick is already close to it.
        if ticks.last().is_some_and(|t| t.0 < 0.85) {
            ticks.push((1.0, (max as u64).to_string()));
        }
        let (_, ry) = right.get_base_pixel();
        let (_, ys) = chart.plotting_area().get_pixel_range();
        colour_bar(
            &right,
            (ys.start - ry, ys.end - 1 - ry),
            blues,
            &ticks,
            "points per cell",
        )?;
        draw_marks(&left, &chart, marks, &[], ids, numbered)
    })
}

/// Colour-bar ticks for counts 1..=max on a log scale: powers of ten (with 2 and 5 times
/// them over few decades), and max itself if no tick is near it.
fn count_ticks(max: u64) -> Vec<u64> {
    let max = max.max(1);
    let decades = (max as f64).log10();
    let mults: &[u64] = if decades < 2.0 { &[1, 2, 5] } else { &[1] };
    let mut ticks = Vec::new();
    let mut p = 1u64;
    while p <= max {
        for &m in mults {
            if m * p <= max {
                ticks.push(m * p);
            }
        }
        p = p.saturating_mul(10);
    }
    ticks.dedup();
    ticks
}

/// A grid background with its ranges and value span.
struct GridBg<'a> {
    values: &'a [f64],
    nx: usize,
    ny: usize,
    xr: (f64, f64),
    yr: (f64, f64),
    vmin: f64,
    vmax: f64,
}

impl GridBg<'_> {
    /// The value at fractions `(fx, fy)` of the cells' extent, interpolated bilinearly
    /// between the nodes (at the cell centres); the nearest node where a neighbour is not
    /// finite.
    fn bilinear(&self, fx: f64, fy: f64) -> f64 {
        let pos = |f: f64, n: usize| (f * n as f64 - 0.5).clamp(0.0, (n - 1) as f64);
        let (u, v) = (pos(fx, self.nx), pos(fy, self.ny));
        let (i, j) = ((u as usize).min(self.nx - 2), (v as usize).min(self.ny - 2));
        let (tu, tv) = (u - i as f64, v - j as f64);
        let at = |a: usize, b: usize| self.values[b * self.nx + a];
        let c = [at(i, j), at(i + 1, j), at(i, j + 1), at(i + 1, j + 1)];
        if c.iter().all(|x| x.is_finite()) {
            (1.0 - tv) * ((1.0 - tu) * c[0] + tu * c[1]) + tv * ((1.0 - tu) * c[2] + tu * c[3])
        } else {
            at(u.round() as usize, v.round() as usize)
        }
    }
}

fn draw_grid(
    path: &Path,
    frame: &Frame,
    g: &GridBg,
    marks: &[(f64, f64)],
    ids: &[usize],
    numbered: bool,
) -> Result<()> {
    let scale = |v: f64| {
        if g.vmax > g.vmin {
            (v - g.vmin) / (g.vmax - g.vmin)
        } else {
            0.5
        }
    };
    // Marks outside the grid are put on its edge and drawn hollow.
    let inside = |p: &(f64, f64)| p.0 >= g.xr.0 && p.0 <= g.xr.1 && p.1 >= g.yr.0 && p.1 <= g.yr.1;
    let shown: Vec<(f64, f64)> = marks
        .iter()
        .map(|p| (p.0.clamp(g.xr.0, g.xr.1), p.1.clamp(g.yr.0, g.yr.1)))
        .collect();
    let hollow: Vec<bool> = marks.iter().map(|p| !inside(p)).collect();
    render(path, (WIDTH, HEIGHT), |root| {
        let (left, right) = root.split_horizontally(WIDTH - BAR_COLUMN);
        let chart = build_chart(&left, frame)?;
        fill_plot(&left, &chart, |fx, fy| {
            let v = g.bilinear(fx, fy);
            v.is_finite().then(|| viridis(scale(v)))
        })?;
        let ticks: Vec<(f64, String)> = if g.vmax > g.vmin {
            nice_ticks(g.vmin, g.vmax, 6)
                .into_iter()
                .map(|t| (scale(t), fmt_tick(t)))
                .collect()
        } else {
            vec![(0.5, fmt_tick(g.vmin))]
        };
        let (_, ry) = right.get_base_pixel();
        let (_, ys) = chart.plotting_area().get_pixel_range();
        colour_bar(
            &right,
            (ys.start - ry, ys.end - 1 - ry),
            viridis,
            &ticks,
            "relative density",
        )?;
        draw_marks(&left, &chart, &shown, &hollow, ids, numbered)
    })
}

/// Colour each pixel of `chart`'s plotting area by `color(fx, fy)` (fractions of the width
/// and height from the lower left; `None` leaves it white), then frame it.
fn fill_plot(
    area: &Area,
    chart: &Chart,
    color: impl Fn(f64, f64) -> Option<RGBColor>,
) -> DrawResult {
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let (bx, by) = area.get_base_pixel();
    let (w, h) = ((xs.end - xs.start) as f64, (ys.end - ys.start) as f64);
    for py in ys.clone() {
        let fy = 1.0 - ((py - ys.start) as f64 + 0.5) / h;
        for px in xs.clone() {
            let fx = ((px - xs.start) as f64 + 0.5) / w;
            if let Some(c) = color(fx, fy) {
                area.draw_pixel((px - bx, py - by), &c)?;
            }
        }
    }
    frame_box(
        area,
        (xs.start - bx..xs.end - bx, ys.start - by..ys.end - by),
    )
}

/// A vertical colour bar between the pixel rows `top..=bottom` of `area`, with `ticks`
/// (`(t in [0, 1], label)`) and a vertical `title` on its right.
fn colour_bar(
    area: &Area,
    (top, bottom): (i32, i32),
    color: impl Fn(f64) -> RGBColor,
    ticks: &[(f64, String)],
    title: &str,
) -> DrawResult {
    let (bar_x0, bar_x1) = (16, 42);
    let span = (bottom - top).max(1) as f64;
    for py in top..=bottom {
        let t = 1.0 - (py - top) as f64 / span;
        area.draw(&PathElement::new(
            vec![(bar_x0, py), (bar_x1, py)],
            color(t).stroke_width(1),
        ))?;
    }
    area.draw(&Rectangle::new(
        [(bar_x0, top), (bar_x1, bottom)],
        BLACK.stroke_width(1),
    ))?;
    let mut widest = 0;
    for (t, label) in ticks {
        let py = bottom - (t.clamp(0.0, 1.0) * span).round() as i32;
        area.draw(&PathElement::new(
            vec![(bar_x1, py), (bar_x1 + 5, py)],
            BLACK.stroke_width(1),
        ))?;
        draw_text(
            area,
            label,
            (bar_x1 + 9, py),
            TICK_SIZE,
            BLACK,
            Anchor::new(HPos::Left, VPos::Center),
        )?;
        widest = widest.max(text_size(label, TICK_SIZE).0 as i32);
    }
    draw_text(
        area,
        title,
        (bar_x1 + 9 + widest + 8, (top + bottom) / 2),
        DESC_SIZE,
        BLACK,
        Anchor {
            h: HPos::Center,
            v: VPos::Top,
            vertical: true,
        },
    )
}

/// Red dots with a black rim at `marks` (hollow where `hollow[i]`), numbered by `ids` if
/// `numbered`.
fn draw_marks(
    area: &Area,
    chart: &Chart,
    marks: &[(f64, f64)],
    hollow: &[bool],
    ids: &[usize],
    numbered: bool,
) -> DrawResult {
    for (i, &p) in marks.iter().enumerate() {
        draw_polyline(area, chart, &[p], BLACK, 14.0)?;
        let fill = if hollow.get(i).copied().unwrap_or(false) {
            WHITE
        } else {
            MARK
        };
        draw_polyline(area, chart, &[p], fill, 10.0)?;
    }
    if !numbered {
        return Ok(());
    }
    let to_px = pixel_map(area, chart);
    for (&p, &id) in marks.iter().zip(ids) {
        let (x, y) = to_px(p);
        let at = (x.round() as i32 + 7, y.round() as i32 - 5);
        let label = id.to_string();
        let anchor = Anchor::new(HPos::Left, VPos::Bottom);
        // A black outline, then the white text: readable on any background.
        for (dx, dy) in [
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
            (2, 0),
            (-2, 0),
            (0, 2),
            (0, -2),
        ] {
            draw_text(
                area,
                &label,
                (at.0 + dx, at.1 + dy),
                MARK_LABEL_SIZE,
                BLACK,
                anchor,
            )?;
        }
        draw_text(area, &label, at, MARK_LABEL_SIZE, WHITE, anchor)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_ticks_are_round() {
        assert_eq!(count_ticks(1), vec![1]);
        assert_eq!(count_ticks(7), vec![1, 2, 5]);
        assert_eq!(count_ticks(60), vec![1, 2, 5, 10, 20, 50]);
        assert_eq!(count_ticks(5000), vec![1, 10, 100, 1000]);
    }

    #[test]
    fn cells_count_points() {
        let pts = [(0.0, 0.0), (0.99, 0.99), (1.0, 1.0), (0.5, 0.1), (2.0, 0.5)];
        // (0.5, 0.1) falls in the right half; the upper edge belongs to the last cell;
        // (2.0, 0.5) is outside.
        let c = count_cells(&pts, (2, 2), (0.0, 1.0), (0.0, 1.0));
        assert_eq!(c, vec![1, 1, 0, 2]);
    }

    /// RGB pixels of a PNG written by the plot room.
    fn pixels(path: &Path) -> Vec<[u8; 3]> {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf[..info.buffer_size()]
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect()
    }

    fn count(px: &[[u8; 3]], c: RGBColor) -> usize {
        px.iter().filter(|p| **p == [c.0, c.1, c.2]).count()
    }

    #[test]
    fn maps_draw_marks_and_refuse_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let x: Vec<f64> = (0..400).map(|i| (i as f64 * 0.37).sin()).collect();
        let y: Vec<f64> = (0..400).map(|i| (i as f64 * 0.11).cos()).collect();
        let marks = [(0.0, 0.0), (0.5, -0.5), (f64::NAN, 1.0)];
        let base = MarkedMap {
            title: "t",
            x_label: "x",
            y_label: "y",
            background: MapBackground::Scatter { x: &x, y: &y },
            marks: &marks,
            numbered: true,
        };
        let with = dir.path().join("with.png");
        marked_map(&with, &base).unwrap();
        let without = dir.path().join("without.png");
        marked_map(&without, &MarkedMap { marks: &[], ..base }).unwrap();
        // Two finite marks: two discs of solid red (the NaN mark is skipped).
        let red = count(&pixels(&with), MARK);
        assert!(red > 2 * 40 && red < 2 * 120, "{red} red pixels");
        assert_eq!(count(&pixels(&without), MARK), 0);

        let hist = dir.path().join("hist.png");
        let h = MapBackground::Histogram {
            x: &x,
            y: &y,
            bins: 40,
        };
        marked_map(
            &hist,
            &MarkedMap {
                background: h,
                ..base
            },
        )
        .unwrap();
        assert!(count(&pixels(&hist), RGBColor(255, 255, 255)) > 0);

        // A grid with one mark inside and one outside (drawn hollow at the edge).
        let values: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let grid = MapBackground::Grid {
            values: &values,
            nx: 4,
            ny: 3,
            x_range: (0.0, 3.0),
            y_range: (0.0, 2.0),
        };
        let g = dir.path().join("grid.png");
        let gm = [(1.0, 1.0), (10.0, 1.0)];
        marked_map(
            &g,
            &MarkedMap {
                background: grid,
                marks: &gm,
                ..base
            },
        )
        .unwrap();
        let red = count(&pixels(&g), MARK);
        assert!(red > 40 && red < 120, "one solid mark: {red}");

        let bad = |b: MapBackground| {
            marked_map(
                &dir.path().join("bad.png"),
                &MarkedMap {
                    background: b,
                    ..base
                },
            )
            .is_err()
        };
        assert!(bad(MapBackground::Scatter { x: &x, y: &y[..3] }));
        assert!(bad(MapBackground::Scatter { x: &[], y: &[] }));
        assert!(bad(MapBackground::Scatter {
            x: &[f64::NAN],
            y: &[1.0]
        }));
        assert!(bad(MapBackground::Histogram {
            x: &x,
            y: &y,
            bins: 0
        }));
        assert!(bad(MapBackground::Grid {
            values: &values[..11],
            nx: 4,
            ny: 3,
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0)
        }));
        assert!(bad(MapBackground::Grid {
            values: &values,
            nx: 4,
            ny: 3,
            x_range: (1.0, 1.0),
            y_range: (0.0, 1.0)
        }));
        assert!(bad(MapBackground::Grid {
            values: &values[..4],
            nx: 4,
            ny: 1,
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0)
        }));
    }

    #[test]
    fn blues_runs_light_to_dark() {
        let (a, b) = (blues(0.0), blues(1.0));
        assert!(a.0 > b.0 && a.1 > b.1 && a.2 > b.2);
        assert_eq!(b, RGBColor(8, 48, 107));
    }
}
