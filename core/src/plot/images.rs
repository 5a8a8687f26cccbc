//! Raster figures: a density heat map with an optional path over it, and a grid of
//! grayscale images (central slices or projections of volumes).

use std::path::Path;

use plotters::element::{PathElement, Rectangle};
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{Color, RGBColor, BLACK, WHITE};

use super::color::viridis;
use super::common::{
    bad, build_chart, clip_polyline, draw_polyline, draw_title, finite_range, fmt_tick, frame_box,
    nice_ticks, render, render_with, Axis, Frame, HEIGHT, LEGEND_SIZE, TICK_SIZE, TITLE_BAND,
    TITLE_SIZE, WIDTH,
};
use super::font::{draw_text, fit_text, text_size, Anchor};
use crate::error::Result;

/// A heat map on a regular grid, drawn by [`density_image`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DensityMap<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// `nx·ny` values, row-major from the bottom: `values[iy·nx + ix]` is the cell
    /// `ix` along x (from `x_range.0`) and `iy` along y (from `y_range.0`).
    pub values: &'a [f64],
    pub nx: usize,
    pub ny: usize,
    /// The x extent of the grid: cell `ix` covers `x0 + [ix, ix+1]·(x1−x0)/nx`.
    pub x_range: (f64, f64),
    /// The y extent of the grid.
    pub y_range: (f64, f64),
    /// A polyline in the same coordinates drawn over the map (e.g. a path between
    /// states); its start is marked by a hollow circle, its end by a filled one.
    pub overlay_path: Option<&'a [(f64, f64)]>,
}

/// Draw `map` as a viridis heat map scaled between the minimum and maximum finite
/// value, with a colour bar, and the overlay path if any. Non-finite cells stay white.
///
/// Errors: `nx` or `ny` zero, `values.len() ≠ nx·ny`, invalid ranges, no finite value,
/// or the file cannot be written.
pub fn density_image(path: &Path, map: &DensityMap<'_>) -> Result<()> {
    let (nx, ny) = (map.nx, map.ny);
    if nx == 0 || ny == 0 {
        return Err(bad(path, format!("empty grid ({nx}×{ny} cells)")));
    }
    if nx.checked_mul(ny) != Some(map.values.len()) {
        return Err(bad(
            path,
            format!(
                "a {nx}×{ny} grid needs {} values, got {}",
                nx.saturating_mul(ny),
                map.values.len()
            ),
        ));
    }
    for (what, (lo, hi)) in [("x range", map.x_range), ("y range", map.y_range)] {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(bad(
                path,
                format!("{what} ({lo}, {hi}) must be finite and increasing"),
            ));
        }
    }
    let (vmin, vmax) = finite_range(map.values.iter().copied())
        .ok_or_else(|| bad(path, "no finite value in the density map"))?;
    let x_axis = Axis::linear(map.x_range, 8);
    let y_axis = Axis::linear(map.y_range, 8);
    let path_pieces: Vec<Vec<(f64, f64)>> = map
        .overlay_path
        .map(|p| {
            p.split(|q| !(q.0.is_finite() && q.1.is_finite()))
                .flat_map(|run| clip_polyline(run, map.x_range, map.y_range))
                .collect()
        })
        .unwrap_or_default();
    let ends = map.overlay_path.and_then(|p| {
        let mut f = p.iter().filter(|q| q.0.is_finite() && q.1.is_finite());
        let first = *f.next()?;
        Some((first, *f.next_back().unwrap_or(&first)))
    });
    let frame = Frame {
        title: map.title,
        x_label: map.x_label,
        y_label: map.y_label,
        x: x_axis,
        y: y_axis,
        top: None,
        x_grid: false,
        y_grid: false,
        right_extra: 0,
    };
    let scale = |v: f64| {
        if vmax > vmin {
            (v - vmin) / (vmax - vmin)
        } else {
            0.5
        }
    };
    let bar_ticks = if vmax > vmin {
        nice_ticks(vmin, vmax, 6)
    } else {
        vec![vmin]
    };
    render(path, (WIDTH, HEIGHT), |root| {
        let (left, right) = root.split_horizontally(WIDTH as i32 - 140);
        let chart = build_chart(&left, &frame)?;
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let (bx, by) = left.get_base_pixel();
        let (w, h) = ((xs.end - xs.start) as f64, (ys.end - ys.start) as f64);
        for py in ys.clone() {
            // Pixel centre → data → cell (y grows upwards).
            let fy = 1.0 - ((py - ys.start) as f64 + 0.5) / h;
            let iy = ((fy * ny as f64) as usize).min(ny - 1);
            for px in xs.clone() {
                let fx = ((px - xs.start) as f64 + 0.5) / w;
                let ix = ((fx * nx as f64) as usize).min(nx - 1);
                let v = map.values[iy * nx + ix];
                if v.is_finite() {
                    left.draw_pixel((px - bx, py - by), &viridis(scale(v)))?;
                }
            }
        }
        frame_box(
            &left,
            (xs.start - bx..xs.end - bx, ys.start - by..ys.end - by),
        )?;
        let red = RGBColor(214, 39, 40);
        for piece in &path_pieces {
            draw_polyline(&left, &chart, piece, WHITE, 6.0)?;
        }
        for piece in &path_pieces {
            draw_polyline(&left, &chart, piece, red, 3.0)?;
        }
        if let Some((first, last)) = ends {
            let ((x0, x1), (y0, y1)) = (map.x_range, map.y_range);
            let inside = |p: (f64, f64)| p.0 >= x0 && p.0 <= x1 && p.1 >= y0 && p.1 <= y1;
            // End: a filled red dot; start: a hollow one (drawn last, on top).
            if inside(last) {
                draw_polyline(&left, &chart, &[last], WHITE, 17.0)?;
                draw_polyline(&left, &chart, &[last], red, 12.0)?;
            }
            if inside(first) {
                draw_polyline(&left, &chart, &[first], red, 17.0)?;
                draw_polyline(&left, &chart, &[first], WHITE, 9.0)?;
            }
        }
        // Colour bar, level with the plotting area.
        let (_, ry) = right.get_base_pixel();
        let (top, bottom) = (ys.start - ry, ys.end - 1 - ry);
        let (bar_x0, bar_x1) = (16, 42);
        let span = (bottom - top).max(1) as f64;
        for py in top..=bottom {
            let t = 1.0 - (py - top) as f64 / span;
            right.draw(&PathElement::new(
                vec![(bar_x0, py), (bar_x1, py)],
                viridis(t).stroke_width(1),
            ))?;
        }
        right.draw(&Rectangle::new(
            [(bar_x0, top), (bar_x1, bottom)],
            BLACK.stroke_width(1),
        ))?;
        for t in &bar_ticks {
            let f = if vmax > vmin { scale(*t) } else { 0.5 };
            let py = bottom - (f * span).round() as i32;
            right.draw(&PathElement::new(
                vec![(bar_x1, py), (bar_x1 + 5, py)],
                BLACK.stroke_width(1),
            ))?;
            draw_text(
                &right,
                &fmt_tick(*t),
                (bar_x1 + 9, py),
                TICK_SIZE,
                BLACK,
                Anchor::new(HPos::Left, VPos::Center),
            )?;
        }
        Ok(())
    })
}

/// Gap between tiles and around the grid, in pixels.
const GAP: u32 = 14;
/// Height of the label band above each tile.
const LABEL_BAND: u32 = 28;
/// Target display size of the largest tile side.
const TILE: usize = 256;

/// A grid of grayscale images with a label above each, `columns` to a row, sized to
/// its content (the largest image side is shown at about 256 px: small images are
/// enlarged by a whole factor, pixel-exact; large ones reduced by averaging).
///
/// Each entry is `(label, data, width, height)` with `data[row·width + col]`, row 0 at
/// the top. Each tile is scaled on its own from its minimum (black) to its maximum
/// (white) finite value; non-finite pixels are drawn red.
///
/// Errors: no images, `columns` = 0, an empty image, `data.len() ≠ width·height`, or
/// the file cannot be written.
pub fn image_grid(
    path: &Path,
    title: &str,
    images: &[(String, Vec<f32>, usize, usize)],
    columns: usize,
) -> Result<()> {
    tile_grid(path, title, images, columns, Tiles::Gray, None)
}

/// [`image_grid`] in colour, for small multiples of a density (e.g. one per
/// regularization weight): each tile on the viridis scale from its own minimum to its
/// maximum finite value (non-finite pixels white), and the tile `highlight` (if any)
/// framed in red with its label in red.
///
/// Errors: as [`image_grid`], and `highlight` not the index of an image.
pub fn heatmap_grid(
    path: &Path,
    title: &str,
    images: &[(String, Vec<f32>, usize, usize)],
    columns: usize,
    highlight: Option<usize>,
) -> Result<()> {
    if let Some(h) = highlight.filter(|&h| h >= images.len()) {
        return Err(bad(
            path,
            format!(
                "tile {h} to highlight, but there are {} images",
                images.len()
            ),
        ));
    }
    tile_grid(path, title, images, columns, Tiles::Viridis, highlight)
}

/// How [`tile_grid`] colours its tiles.
#[derive(Clone, Copy)]
enum Tiles {
    Gray,
    Viridis,
}

fn tile_grid(
    path: &Path,
    title: &str,
    images: &[(String, Vec<f32>, usize, usize)],
    columns: usize,
    colours: Tiles,
    highlight: Option<usize>,
) -> Result<()> {
    if images.is_empty() {
        return Err(bad(path, "no images to draw"));
    }
    if columns == 0 {
        return Err(bad(path, "the number of columns must be at least 1"));
    }
    for (i, (label, data, w, h)) in images.iter().enumerate() {
        if *w == 0 || *h == 0 {
            return Err(bad(
                path,
                format!("image {i} ('{label}') is empty ({w}×{h})"),
            ));
        }
        if w.checked_mul(*h) != Some(data.len()) {
            return Err(bad(
                path,
                format!(
                    "image {i} ('{label}') is {w}×{h} but has {} values",
                    data.len()
                ),
            ));
        }
    }
    let max_side = images.iter().map(|im| im.2.max(im.3)).max().unwrap_or(1);
    let scale = if max_side <= TILE {
        (TILE / max_side) as f64
    } else {
        TILE as f64 / max_side as f64
    };
    let shown = |w: usize| ((w as f64 * scale).round() as u32).max(1);
    let cell_w = images.iter().map(|im| shown(im.2)).max().unwrap_or(1) + GAP;
    let cell_h = images.iter().map(|im| shown(im.3)).max().unwrap_or(1) + LABEL_BAND + GAP;
    let cols = columns.min(images.len()) as u32;
    let rows = images.len().div_ceil(cols as usize) as u32;
    let title_w = text_size(title, TITLE_SIZE).0 + 2 * GAP;
    let width = (cols * cell_w + GAP).max(title_w).max(320);
    let height = TITLE_BAND + rows * cell_h + GAP / 2;
    let x_off = (width - (cols * cell_w + GAP)) / 2;
    // Where each tile goes: top-left pixel and shown size.
    let placed: Vec<(u32, u32, u32, u32)> = images
        .iter()
        .enumerate()
        .map(|(i, im)| {
            let (r, c) = (i as u32 / cols, i as u32 % cols);
            let (tw, th) = (shown(im.2), shown(im.3));
            let x = x_off + GAP + c * cell_w + (cell_w - GAP - tw) / 2;
            let y = TITLE_BAND + r * cell_h + LABEL_BAND;
            (x, y, tw, th)
        })
        .collect();
    render_with(
        path,
        (width, height),
        |root| {
            draw_title(root, title)?;
            let gray = RGBColor(150, 150, 150);
            let red = RGBColor(214, 39, 40);
            for (i, ((label, ..), &(x, y, tw, th))) in images.iter().zip(&placed).enumerate() {
                let (x, y, tw, th) = (x as i32, y as i32, tw as i32, th as i32);
                let marked = highlight == Some(i);
                if marked {
                    root.draw(&Rectangle::new(
                        [(x - 4, y - 4), (x + tw + 3, y + th + 3)],
                        red.filled(),
                    ))?;
                } else {
                    root.draw(&Rectangle::new(
                        [(x - 1, y - 1), (x + tw, y + th)],
                        gray.stroke_width(1),
                    ))?;
                }
                let label = fit_text(label, LEGEND_SIZE, cell_w - 6);
                draw_text(
                    root,
                    &label,
                    (x + tw / 2, y - 6),
                    LEGEND_SIZE,
                    if marked { red } else { BLACK },
                    Anchor::new(HPos::Center, VPos::Bottom),
                )?;
            }
            Ok(())
        },
        |rgb| {
            for ((_, data, w, h), &(x, y, tw, th)) in images.iter().zip(&placed) {
                blit(rgb, width as usize, data, (*w, *h), (x, y, tw, th), colours);
            }
        },
    )
}

/// Draw `data` (`w`×`h`, row 0 at the top) into the RGB buffer `rgb` (`stride` pixels
/// a row) at `(x, y)`, resized to `tw`×`th`, scaled from its finite min (black or dark
/// violet) to max (white or yellow).
fn blit(
    rgb: &mut [u8],
    stride: usize,
    data: &[f32],
    (w, h): (usize, usize),
    (x, y, tw, th): (u32, u32, u32, u32),
    colours: Tiles,
) {
    let (lo, hi) = finite_range(data.iter().map(|&v| v as f64)).unwrap_or((0.0, 0.0));
    let gray = |v: f64| -> [u8; 3] {
        match colours {
            Tiles::Gray => {
                if !v.is_finite() {
                    return [200, 30, 30];
                }
                let g = if hi > lo {
                    ((v - lo) / (hi - lo) * 255.0).round().clamp(0.0, 255.0) as u8
                } else {
                    128
                };
                [g, g, g]
            }
            Tiles::Viridis => {
                if !v.is_finite() {
                    return [255, 255, 255];
                }
                let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                let c = viridis(t);
                [c.0, c.1, c.2]
            }
        }
    };
    let (tw, th) = (tw as usize, th as usize);
    // Source span of destination pixel `d` along an axis of `n` source pixels shown as
    // `m` pixels: [d·n/m, (d+1)·n/m), at least one source pixel.
    let span = |d: usize, n: usize, m: usize| {
        let a = d * n / m;
        let b = ((d + 1) * n / m).max(a + 1).min(n);
        (a.min(n - 1), b)
    };
    for dy in 0..th {
        let (sy0, sy1) = span(dy, h, th);
        for dx in 0..tw {
            let (sx0, sx1) = span(dx, w, tw);
            let (mut sum, mut count, mut bad) = (0.0f64, 0usize, false);
            for sy in sy0..sy1 {
                for sx in sx0..sx1 {
                    let v = data[sy * w + sx] as f64;
                    if v.is_finite() {
                        sum += v;
                        count += 1;
                    } else {
                        bad = true;
                    }
                }
            }
            let px = if count > 0 {
                gray(sum / count as f64)
            } else if bad {
                gray(f64::NAN)
            } else {
                gray(lo)
            };
            let o = ((y as usize + dy) * stride + x as usize + dx) * 3;
            if let Some(dst) = rgb.get_mut(o..o + 3) {
                dst.copy_from_slice(&px);
            }
        }
    }
}
