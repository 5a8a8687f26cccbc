//! What all figures share: drawing into an RGB buffer, PNG encoding and atomic writing,
//! error messages, axis ranges, tick labels, text styles and the plot frame.

use std::path::Path;

use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::element::Rectangle;
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{Color, RGBColor, BLACK, WHITE};

use super::font::{self, draw_text, fit_text, text_size, Anchor};
use crate::error::{Error, Result};

/// Default figure size in pixels.
pub(crate) const WIDTH: u32 = 1000;
pub(crate) const HEIGHT: u32 = 700;

/// Font sizes (pixels per em) for the title, axis descriptions, tick labels and
/// legends.
pub(crate) const TITLE_SIZE: f64 = 23.0;
pub(crate) const DESC_SIZE: f64 = 18.0;
pub(crate) const TICK_SIZE: f64 = 15.0;
pub(crate) const LEGEND_SIZE: f64 = 15.0;

/// Gray of secondary text and legend borders.
pub(crate) const GRAY: RGBColor = RGBColor(110, 110, 110);

/// Light gray of the grid lines.
pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);

/// The drawing area handed to the figure code.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// What the figure code returns; any plotters error converts into it with `?`.
pub(crate) type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// An invalid-argument error that names the figure being written.
pub(crate) fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("cannot plot {}: {msg}", path.display()))
}

/// Draw a `w`×`h` figure on white with `draw`, then let `post` edit the RGB pixels
/// (row-major, 3 bytes a pixel), encode to PNG and write `path` atomically.
pub(crate) fn render_with(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
    post: impl FnOnce(&mut [u8]),
) -> Result<()> {
    font::ensure_loaded()?;
    if w == 0 || h == 0 || (w as u64) * (h as u64) > 100_000_000 {
        return Err(bad(path, format!("figure size {w}×{h} px is out of range")));
    }
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into));
        drawn.map_err(|e| bad(path, format!("drawing failed: {e}")))?;
    }
    post(&mut rgb);
    let png = encode_png(path, w, h, &rgb)?;
    crate::io::atomic::write_bytes(path, &png)
}

/// [`render_with`] without pixel post-processing.
pub(crate) fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<()> {
    render_with(path, size, draw, |_| {})
}

/// Encode 8-bit RGB pixels as PNG in memory.
fn encode_png(path: &Path, w: u32, h: u32, rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let fail = |e: png::EncodingError| bad(path, format!("PNG encoding failed: {e}"));
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(fail)?;
        writer.write_image_data(rgb).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    Ok(out)
}

/// A thin black frame around the pixel rectangle of a chart's plotting area.
pub(crate) fn frame_box(
    root: &Area,
    (xs, ys): (std::ops::Range<i32>, std::ops::Range<i32>),
) -> DrawResult {
    root.draw(&Rectangle::new(
        [(xs.start, ys.start), (xs.end - 1, ys.end - 1)],
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

/// The finite minimum and maximum of `values`, or `None` if none is finite.
pub(crate) fn finite_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Widen `(lo, hi)` by `frac` of its width on each side; a zero-width range gets a
/// width of its own (10% of the value, or 1 around zero).
pub(crate) fn pad_linear((lo, hi): (f64, f64), frac: f64) -> (f64, f64) {
    let w = hi - lo;
    if w > f64::EPSILON * (lo.abs() + hi.abs()).max(f64::MIN_POSITIVE) && w.is_finite() {
        (lo - frac * w, hi + frac * w)
    } else {
        let d = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
        (lo - d, hi + d)
    }
}

/// Widen a positive `(lo, hi)` by `frac` of its width in log space; a zero-width range
/// is widened by a factor 2 each way.
pub(crate) fn pad_log((lo, hi): (f64, f64), frac: f64) -> (f64, f64) {
    let (a, b) = (lo.log10(), hi.log10());
    let w = b - a;
    if w > 1e-9 {
        (10f64.powf(a - frac * w), 10f64.powf(b + frac * w))
    } else {
        (lo / 2.0, hi * 2.0)
    }
}

/// Compact tick label: at most 4 significant digits, trailing zeros dropped, scientific
/// notation for very large or small magnitudes, and "0" for round-off around zero.
pub(crate) fn fmt_tick(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let a = v.abs();
    if a < 1e-12 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = trim_zeros(mant);
        return format!("{mant}e{exp}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(2.7e-17), "0");
        assert_eq!(fmt_tick(0.30000000000000004), "0.3");
        assert_eq!(fmt_tick(1.0), "1");
        assert_eq!(fmt_tick(-2.5), "-2.5");
        assert_eq!(fmt_tick(1234.0), "1234");
        assert_eq!(fmt_tick(0.0125), "0.0125");
        assert_eq!(fmt_tick(1e-4), "1e-4");
        assert_eq!(fmt_tick(2.5e6), "2.5e6");
        assert_eq!(fmt_tick(f64::NAN), "");
    }

    #[test]
    fn ranges() {
        assert_eq!(
            finite_range([f64::NAN, 2.0, -1.0, f64::INFINITY]),
            Some((-1.0, 2.0))
        );
        assert_eq!(finite_range([f64::NAN]), None);
        assert_eq!(pad_linear((0.0, 10.0), 0.1), (-1.0, 11.0));
        assert_eq!(pad_linear((5.0, 5.0), 0.1), (4.5, 5.5));
        assert_eq!(pad_linear((0.0, 0.0), 0.1), (-1.0, 1.0));
        let (a, b) = pad_log((1.0, 100.0), 0.5);
        assert!((a - 0.1).abs() < 1e-12 && (b - 1000.0).abs() < 1e-9);
        assert_eq!(pad_log((3.0, 3.0), 0.1), (1.5, 6.0));
    }

    #[test]
    fn legend_avoids_data() {
        let entries = vec![("a".to_string(), Marker::Line(BLACK))];
        let upper_right = [(0.95, 0.95), (0.9, 0.97)];
        let l = Legend::new(entries.clone(), &upper_right, 0);
        assert_eq!(l.place, Place::Inside(Corner::UpperLeft));
        assert_eq!(l.right_margin(), 0);
        let l = Legend::new(entries.clone(), &upper_right, 2);
        assert_eq!(l.place, Place::Inside(Corner::UpperRight));
        let everywhere = [(0.02, 0.02), (0.98, 0.02), (0.02, 0.98), (0.98, 0.98)];
        let l = Legend::new(entries, &everywhere, 0);
        assert_eq!(l.place, Place::Right);
        assert!(l.right_margin() > 40);
    }
}

// ---------------------------------------------------------------------------------
// Axes and the chart frame
// ---------------------------------------------------------------------------------

use plotters::chart::{ChartBuilder, ChartContext};
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::element::PathElement;

/// A linear `f64` axis whose ticks (grid lines and labels) we choose.
#[derive(Clone, Debug)]
pub(crate) struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (a, b): (i32, i32)) -> i32 {
        // As plotters' own f64 axis.
        let f = (v - self.lo) / (self.hi - self.lo);
        let len = b - a;
        if len == 0 || !f.is_finite() {
            return if f.is_finite() || f > 0.0 { b } else { a };
        }
        if len > 0 {
            a + (len as f64 * f + 1e-3).floor() as i32
        } else {
            a + (len as f64 * f - 1e-3).ceil() as i32
        }
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// The coordinate system of every chart: two [`Ticked`] axes. A logarithmic axis is a
/// linear axis over `log10` of the values.
pub(crate) type Coord = Cartesian2d<Ticked, Ticked>;

/// A chart being drawn.
pub(crate) type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Coord>;

/// One axis: its range in plot coordinates (`log10` of the values on a logarithmic
/// axis) and its ticks with their labels.
#[derive(Clone, Debug)]
pub(crate) struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A linear axis over `(lo, hi)` with about `target` nicely rounded ticks.
    pub(crate) fn linear((lo, hi): (f64, f64), target: usize) -> Axis {
        let ticks = nice_ticks(lo, hi, target)
            .into_iter()
            .map(|t| (t, fmt_tick(t)))
            .collect();
        Axis {
            lo,
            hi,
            log: false,
            ticks,
        }
    }

    /// A logarithmic axis over the positive values `(lo, hi)`.
    pub(crate) fn log((lo, hi): (f64, f64)) -> Axis {
        let (a, b) = (lo.log10(), hi.log10());
        let ticks = log_ticks(lo, hi)
            .into_iter()
            .map(|t| (t.log10(), fmt_tick(t)))
            .collect();
        Axis {
            lo: a,
            hi: b,
            log: true,
            ticks,
        }
    }

    /// An axis with ticks only at whole numbers `1..=n` (bar positions).
    pub(crate) fn integers(n: usize) -> Axis {
        let step = nice_step_at_least(n as f64 / 12.0, 1.0);
        let mut ticks: Vec<f64> = nice_ticks_with_step(1.0, n as f64, step);
        if step >= 5.0 && n >= 1 {
            ticks.insert(0, 1.0);
        }
        ticks.dedup();
        Axis {
            lo: 0.5,
            hi: n as f64 + 0.5,
            log: false,
            ticks: ticks.into_iter().map(|t| (t, fmt_tick(t))).collect(),
        }
    }

    /// A value in plot coordinates (`log10` on a log axis; NaN for values ≤ 0 there).
    pub(crate) fn to_plot(&self, v: f64) -> f64 {
        if self.log {
            if v > 0.0 {
                v.log10()
            } else {
                f64::NAN
            }
        } else {
            v
        }
    }

    /// Where `v` (in plot coordinates) lies along the axis, 0 at `lo` and 1 at `hi`.
    pub(crate) fn fraction(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    fn coord(&self) -> Ticked {
        Ticked {
            lo: self.lo,
            hi: self.hi,
            ticks: self.ticks.iter().map(|t| t.0).collect(),
        }
    }
}

/// A "nice" step (1, 2, 2.5 or 5 times a power of 10) giving about `target` intervals
/// over a width `w`.
fn nice_step(w: f64, target: usize) -> f64 {
    let raw = w / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    let m = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 2.5 {
        2.5
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The smallest step of the form 1, 2, 5 × 10^k that is ≥ `raw` and ≥ `min`.
fn nice_step_at_least(raw: f64, min: f64) -> f64 {
    let raw = raw.max(min);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw - 1e-9 * raw)
        .unwrap_or(10.0 * mag)
}

fn nice_ticks_with_step(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(step > 0.0 && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last.max(first - 1))
        .take(1000)
        .map(|k| k as f64 * step)
        .collect()
}

/// Nicely rounded ticks inside `[lo, hi]`, about `target` of them.
pub(crate) fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    nice_ticks_with_step(lo, hi, nice_step(hi - lo, target))
}

/// Ticks for a logarithmic axis over positive `[lo, hi]`: powers of ten (every k-th
/// one over many decades), with 2× and 5× added over a few decades, and linear ticks
/// within less than one decade.
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10(), hi.log10());
    let decades = b - a;
    if decades < 1.0 {
        let t = nice_ticks(lo, hi, 6);
        return t.into_iter().filter(|&v| v > 0.0).collect();
    }
    let every = (decades / 8.0).ceil().max(1.0) as i64;
    let (k0, k1) = (a.floor() as i64, b.ceil() as i64);
    let mut ticks = Vec::new();
    for k in k0..=k1 {
        if k.rem_euclid(every) != 0 {
            continue;
        }
        let p = 10f64.powi(k as i32);
        let mults: &[f64] = if decades <= 3.0 {
            &[1.0, 2.0, 5.0]
        } else {
            &[1.0]
        };
        for m in mults {
            let v = m * p;
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                ticks.push(v);
            }
        }
    }
    ticks
}

/// Titles and axes of a chart.
pub(crate) struct Frame<'t> {
    pub title: &'t str,
    pub x_label: &'t str,
    pub y_label: &'t str,
    pub x: Axis,
    pub y: Axis,
    /// Extra tick labels along the top edge, at positions of the x axis, with a
    /// description (e.g. resolution in Å above spatial frequency).
    pub top: Option<(String, Vec<(f64, String)>)>,
    /// Vertical grid lines at the x ticks.
    pub x_grid: bool,
    /// Horizontal grid lines at the y ticks.
    pub y_grid: bool,
    /// Extra room on the right, for a legend beside the plot.
    pub right_extra: u32,
}

/// Height of the title band at the top of a figure.
pub(crate) const TITLE_BAND: u32 = 50;

/// Draw `title` centered in the top band of `area`.
pub(crate) fn draw_title(area: &Area, title: &str) -> DrawResult {
    let (w, _) = area.dim_in_pixel();
    let t = fit_text(title, TITLE_SIZE, w.saturating_sub(20));
    draw_text(
        area,
        &t,
        (w as i32 / 2, 12),
        TITLE_SIZE,
        BLACK,
        Anchor::new(HPos::Center, VPos::Top),
    )
}

/// Draw the title, grid, frame, ticks, tick labels and axis descriptions of `frame`
/// on `area` and return the chart to draw data on.
pub(crate) fn build_chart<'a, 'b>(
    area: &'a Area<'b>,
    frame: &Frame,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    draw_title(area, frame.title)?;
    let y_label_w = frame
        .y
        .ticks
        .iter()
        .map(|t| text_size(&t.1, TICK_SIZE).0)
        .max()
        .unwrap_or(0) as i32;
    let tick_h = text_size("0", TICK_SIZE).1 as i32;
    let desc_h = text_size("0", DESC_SIZE).1 as i32;
    let top_extra = if frame.top.is_some() {
        (tick_h + desc_h + 20) as u32
    } else {
        0
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(TITLE_BAND + top_extra)
        .margin_bottom(10)
        .margin_left(10)
        .margin_right(30 + frame.right_extra)
        .x_label_area_size(tick_h + desc_h + 26)
        .y_label_area_size(y_label_w + desc_h + 26);
    let chart = builder.build_cartesian_2d(frame.x.coord(), frame.y.coord())?;
    // Pixel ranges are absolute; `area` draws relative to its own corner.
    let (bx, by) = area.get_base_pixel();
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let (xs, ys) = (xs.start - bx..xs.end - bx, ys.start - by..ys.end - by);
    let (left, right, top, bottom) = (xs.start, xs.end - 1, ys.start, ys.end - 1);
    let px = |x: f64| chart.backend_coord(&(x, frame.y.lo)).0 - bx;
    let py = |y: f64| chart.backend_coord(&(frame.x.lo, y)).1 - by;
    let grid = GRID.stroke_width(1);
    if frame.x_grid {
        for (x, _) in &frame.x.ticks {
            let p = px(*x);
            if p > left && p < right {
                area.draw(&PathElement::new(vec![(p, top), (p, bottom)], grid))?;
            }
        }
    }
    if frame.y_grid {
        for (y, _) in &frame.y.ticks {
            let p = py(*y);
            if p > top && p < bottom {
                area.draw(&PathElement::new(vec![(left, p), (right, p)], grid))?;
            }
        }
    }
    frame_box(area, (xs.clone(), ys.clone()))?;
    let black = BLACK.stroke_width(1);
    for (x, label) in &frame.x.ticks {
        let p = px(*x);
        if p < left || p > right {
            continue;
        }
        area.draw(&PathElement::new(vec![(p, bottom), (p, bottom + 5)], black))?;
        let at = (p, bottom + 8);
        draw_text(
            area,
            label,
            at,
            TICK_SIZE,
            BLACK,
            Anchor::new(HPos::Center, VPos::Top),
        )?;
    }
    for (y, label) in &frame.y.ticks {
        let p = py(*y);
        if p < top || p > bottom {
            continue;
        }
        area.draw(&PathElement::new(vec![(left - 5, p), (left, p)], black))?;
        let at = (left - 8, p);
        draw_text(
            area,
            label,
            at,
            TICK_SIZE,
            BLACK,
            Anchor::new(HPos::Right, VPos::Center),
        )?;
    }
    let mid_x = (left + right) / 2;
    let mid_y = (top + bottom) / 2;
    draw_text(
        area,
        frame.x_label,
        (mid_x, bottom + 8 + tick_h + 10),
        DESC_SIZE,
        BLACK,
        Anchor::new(HPos::Center, VPos::Top),
    )?;
    let y_desc = fit_text(frame.y_label, DESC_SIZE, (bottom - top).max(0) as u32);
    draw_text(
        area,
        &y_desc,
        (left - 8 - y_label_w - 10, mid_y),
        DESC_SIZE,
        BLACK,
        Anchor {
            h: HPos::Center,
            v: VPos::Bottom,
            vertical: true,
        },
    )?;
    if let Some((desc, ticks)) = &frame.top {
        for (x, label) in ticks {
            let p = px(*x);
            if p < left || p > right {
                continue;
            }
            area.draw(&PathElement::new(vec![(p, top), (p, top - 5)], black))?;
            let at = (p, top - 8);
            draw_text(
                area,
                label,
                at,
                TICK_SIZE,
                BLACK,
                Anchor::new(HPos::Center, VPos::Bottom),
            )?;
        }
        let at = (mid_x, top - 8 - tick_h - 8);
        draw_text(
            area,
            desc,
            at,
            DESC_SIZE,
            BLACK,
            Anchor::new(HPos::Center, VPos::Bottom),
        )?;
    }
    Ok(chart)
}

/// What a legend entry shows beside its text.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Marker {
    /// A short line of the curve's colour.
    Line(RGBColor),
    /// A dot of the points' colour.
    Dot(RGBColor),
}

/// A corner of the plotting area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Corner {
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
}

/// Where a legend goes: inside the plot in a corner free of data, or beside it on the
/// right when no corner is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    Inside(Corner),
    Right,
}

/// A legend: entries and their place.
#[derive(Clone, Debug)]
pub(crate) struct Legend {
    entries: Vec<(String, Marker)>,
    pub place: Place,
}

const LEGEND_PAD: i32 = 10;
const LEGEND_GAP: i32 = 8;
const LEGEND_MARK: i32 = 26;
const LEGEND_INSET: i32 = 12;
/// Longest legend text, in pixels; longer texts are shortened with an ellipsis.
const LEGEND_MAX_TEXT: u32 = 300;

impl Legend {
    /// A legend for `entries`, placed in the first corner (upper right, upper left,
    /// lower right, lower left) whose legend-sized box holds at most `tolerate` of
    /// `points` (fractions of the plot width and height, 0 at the left and bottom), or
    /// on the right of the plot if none does.
    pub(crate) fn new(
        entries: Vec<(String, Marker)>,
        points: &[(f64, f64)],
        tolerate: usize,
    ) -> Legend {
        let mut legend = Legend {
            entries,
            place: Place::Right,
        };
        let (w, h) = legend.size();
        // The plotting area of a standard figure is roughly 870×560 px.
        let bw = (w + 2 * LEGEND_INSET) as f64 / 870.0;
        let bh = (h + 2 * LEGEND_INSET) as f64 / 560.0;
        let corners = [
            Corner::UpperRight,
            Corner::UpperLeft,
            Corner::LowerRight,
            Corner::LowerLeft,
        ];
        for corner in corners {
            let inside = |&&(u, v): &&(f64, f64)| {
                let x_ok = match corner {
                    Corner::UpperLeft | Corner::LowerLeft => u <= bw,
                    _ => u >= 1.0 - bw,
                };
                let y_ok = match corner {
                    Corner::UpperLeft | Corner::UpperRight => v >= 1.0 - bh,
                    _ => v <= bh,
                };
                x_ok && y_ok
            };
            if points.iter().filter(inside).count() <= tolerate {
                legend.place = Place::Inside(corner);
                break;
            }
        }
        legend
    }

    /// Box size in pixels.
    fn size(&self) -> (i32, i32) {
        let row_h = text_size("0", LEGEND_SIZE).1 as i32 + 6;
        let text_w = self
            .entries
            .iter()
            .map(|e| text_size(&fit_text(&e.0, LEGEND_SIZE, LEGEND_MAX_TEXT), LEGEND_SIZE).0)
            .max()
            .unwrap_or(0) as i32;
        (
            2 * LEGEND_PAD + LEGEND_MARK + LEGEND_GAP + text_w,
            2 * LEGEND_PAD + row_h * self.entries.len() as i32 - 6,
        )
    }

    /// Extra room the chart must leave on its right for the legend.
    pub(crate) fn right_margin(&self) -> u32 {
        if self.entries.is_empty() || self.place != Place::Right {
            0
        } else {
            (self.size().0 + LEGEND_INSET) as u32
        }
    }

    /// Draw the legend for `chart`, built on `area`.
    pub(crate) fn draw(&self, area: &Area, chart: &Chart) -> DrawResult {
        if self.entries.is_empty() {
            return Ok(());
        }
        let (bx, by) = area.get_base_pixel();
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let (xs, ys) = (xs.start - bx..xs.end - bx, ys.start - by..ys.end - by);
        let (w, h) = self.size();
        let (x0, y0) = match self.place {
            Place::Right => (xs.end + LEGEND_INSET, ys.start),
            Place::Inside(c) => (
                match c {
                    Corner::UpperLeft | Corner::LowerLeft => xs.start + LEGEND_INSET,
                    _ => xs.end - 1 - LEGEND_INSET - w,
                },
                match c {
                    Corner::UpperLeft | Corner::UpperRight => ys.start + LEGEND_INSET,
                    _ => ys.end - 1 - LEGEND_INSET - h,
                },
            ),
        };
        let rect = [(x0, y0), (x0 + w, y0 + h)];
        area.draw(&Rectangle::new(rect, WHITE.mix(0.9).filled()))?;
        area.draw(&Rectangle::new(rect, GRAY.stroke_width(1)))?;
        let row_h = text_size("0", LEGEND_SIZE).1 as i32 + 6;
        for (k, (label, marker)) in self.entries.iter().enumerate() {
            let cy = y0 + LEGEND_PAD + row_h * k as i32 + (row_h - 6) / 2;
            let mx = x0 + LEGEND_PAD;
            match *marker {
                Marker::Line(c) => {
                    let bar = [(mx, cy - 1), (mx + LEGEND_MARK, cy + 1)];
                    area.draw(&Rectangle::new(bar, c.filled()))?;
                }
                Marker::Dot(c) => {
                    let centre = (mx + LEGEND_MARK / 2, cy);
                    area.draw(&plotters::element::Circle::new(centre, 5, c.filled()))?;
                }
            }
            let label = fit_text(label, LEGEND_SIZE, LEGEND_MAX_TEXT);
            let at = (mx + LEGEND_MARK + LEGEND_GAP, cy);
            let anchor = Anchor::new(HPos::Left, VPos::Center);
            draw_text(area, &label, at, LEGEND_SIZE, BLACK, anchor)?;
        }
        Ok(())
    }
}

/// Split the polyline `pts` into the pieces inside the rectangle `[x0, x1]×[y0, y1]`
/// (Liang–Barsky clipping of each segment). Lone points inside are kept as
/// one-point pieces.
pub(crate) fn clip_polyline(
    pts: &[(f64, f64)],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Vec<Vec<(f64, f64)>> {
    let inside = |p: (f64, f64)| p.0 >= x0 && p.0 <= x1 && p.1 >= y0 && p.1 <= y1;
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    if pts.len() == 1 {
        if inside(pts[0]) {
            out.push(vec![pts[0]]);
        }
        return out;
    }
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for w in pts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let mut visible = true;
        for (p, q) in [
            (-dx, a.0 - x0),
            (dx, x1 - a.0),
            (-dy, a.1 - y0),
            (dy, y1 - a.1),
        ] {
            if p == 0.0 {
                if q < 0.0 {
                    visible = false;
                    break;
                }
            } else {
                let r = q / p;
                if p < 0.0 {
                    t0 = t0.max(r);
                } else {
                    t1 = t1.min(r);
                }
            }
        }
        if !visible || t0 > t1 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let pa = (a.0 + t0 * dx, a.1 + t0 * dy);
        let pb = (a.0 + t1 * dx, a.1 + t1 * dy);
        if cur.is_empty() {
            cur.push(pa);
        } else if cur.last() != Some(&pa) {
            out.push(std::mem::take(&mut cur));
            cur.push(pa);
        }
        cur.push(pb);
        if t1 < 1.0 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Draw an anti-aliased polyline `width` pixels wide through `pts` (plot coordinates of
/// `chart`) onto `area`, the area the chart was built on. One point draws a disc of
/// diameter `width`. Each pixel is blended once, with the largest coverage of any
/// segment, so joints do not darken.
pub(crate) fn draw_polyline(
    area: &Area,
    chart: &Chart,
    pts: &[(f64, f64)],
    color: RGBColor,
    width: f64,
) -> DrawResult {
    if pts.is_empty() {
        return Ok(());
    }
    let to_px = pixel_map(area, chart);
    let px: Vec<(f64, f64)> = pts.iter().map(|&p| to_px(p)).collect();
    let r = width / 2.0;
    let pad = r + 1.0;
    let (w, h) = area.dim_in_pixel();
    let clamp_x = |v: f64| (v.max(0.0).min(w as f64 - 1.0)) as i64;
    let clamp_y = |v: f64| (v.max(0.0).min(h as f64 - 1.0)) as i64;
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in &px {
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let (bx0, by0) = (clamp_x((x0 - pad).floor()), clamp_y((y0 - pad).floor()));
    let (bx1, by1) = (clamp_x((x1 + pad).ceil()), clamp_y((y1 + pad).ceil()));
    if bx1 < bx0 || by1 < by0 {
        return Ok(());
    }
    let bw = (bx1 - bx0 + 1) as usize;
    let mut cover = vec![0f32; bw * (by1 - by0 + 1) as usize];
    let segs: Vec<((f64, f64), (f64, f64))> = if px.len() == 1 {
        vec![(px[0], px[0])]
    } else {
        px.windows(2).map(|s| (s[0], s[1])).collect()
    };
    for (a, b) in segs {
        let sx0 = clamp_x(a.0.min(b.0) - pad);
        let sx1 = clamp_x(a.0.max(b.0) + pad);
        let sy0 = clamp_y(a.1.min(b.1) - pad);
        let sy1 = clamp_y(a.1.max(b.1) + pad);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        for y in sy0..=sy1 {
            for x in sx0..=sx1 {
                let (qx, qy) = (x as f64 - a.0, y as f64 - a.1);
                let t = if len2 > 0.0 {
                    ((qx * dx + qy * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (ex, ey) = (qx - t * dx, qy - t * dy);
                let c = (r + 0.5 - (ex * ex + ey * ey).sqrt()).clamp(0.0, 1.0) as f32;
                let i = (y - by0) as usize * bw + (x - bx0) as usize;
                if c > cover[i] {
                    cover[i] = c;
                }
            }
        }
    }
    for (i, &c) in cover.iter().enumerate() {
        if c > 0.0 {
            let (x, y) = (bx0 + (i % bw) as i64, by0 + (i / bw) as i64);
            area.draw_pixel((x as i32, y as i32), &color.mix(c as f64))?;
        }
    }
    Ok(())
}

/// The map from `chart`'s plot coordinates to fractional pixel coordinates of `area`.
pub(crate) fn pixel_map(area: &Area, chart: &Chart) -> impl Fn((f64, f64)) -> (f64, f64) {
    let (bx, by) = area.get_base_pixel();
    let (xr, yr) = (chart.x_range(), chart.y_range());
    let a = chart.backend_coord(&(xr.start, yr.start));
    let b = chart.backend_coord(&(xr.end, yr.end));
    let (ax, ay) = ((a.0 - bx) as f64, (a.1 - by) as f64);
    let (sx, sy) = (
        (b.0 - a.0) as f64 / (xr.end - xr.start),
        (b.1 - a.1) as f64 / (yr.end - yr.start),
    );
    move |(x, y)| (ax + (x - xr.start) * sx, ay + (y - yr.start) * sy)
}
