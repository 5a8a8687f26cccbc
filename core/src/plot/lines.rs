//! Line plots (general and FSC curves) and bar charts (eigenvalue spectra, histograms).

use std::path::Path;

use plotters::element::{DashedPathElement, Rectangle};
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{Color, BLACK, WHITE};

use super::color::palette;
use super::common::{
    bad, build_chart, clip_polyline, draw_polyline, finite_range, pad_linear, pad_log, render,
    Area, Axis, Chart, DrawResult, Frame, Legend, Marker, GRAY, HEIGHT, LEGEND_SIZE, TICK_SIZE,
    WIDTH,
};
use super::font::{draw_text, Anchor};
use crate::error::Result;

/// One curve of a [`LinePlot`]: points `(x[i], y[i])` joined in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend text; an empty label leaves the curve out of the legend.
    pub label: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

impl Series {
    /// A series from its label and coordinates.
    pub fn new(label: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Series {
        Series {
            label: label.into(),
            x,
            y,
        }
    }
}

/// A figure of one or more curves, drawn by [`line_plot`].
///
/// Build it with struct-update syntax: `LinePlot { title: ..., series: ..., ..Default::default() }`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Dashed horizontal reference lines `(y, label)`, e.g. FSC thresholds 0.5 and 0.143;
    /// the label is written at the right end of the line.
    pub hlines: Vec<(f64, String)>,
    /// Fixed x range; by default the data's, with a small margin.
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range; by default the data's and the reference lines', with a margin.
    /// Curves are clipped to it.
    pub y_range: Option<(f64, f64)>,
    /// Logarithmic y axis (points with y ≤ 0 are skipped).
    pub log_y: bool,
}

/// Draw `plot` to the PNG file `path`: one coloured line per series (points with a
/// non-finite coordinate break the line; isolated points are drawn as dots), a legend
/// placed in the emptiest corner, and the reference lines.
///
/// Errors: no series, an empty series, `x`/`y` of different lengths, an invalid fixed
/// range, nothing finite to draw, or the file cannot be written.
pub fn line_plot(path: &Path, plot: &LinePlot) -> Result<()> {
    draw_line_plot(path, plot, None)
}

/// Fourier shell correlation curves against spatial frequency.
///
/// `curves` are `(name, fsc)` with `fsc[i]` the correlation in shell `i` (0 = DC), for a
/// box of `box_size` voxels of `voxel_size` Å, so shell `i` lies at `i / (box·voxel)` Å⁻¹.
/// The bottom axis is spatial frequency (1/Å), the top axis the matching resolution in
/// Å; dashed lines mark FSC = 0.5 and 0.143, and each legend entry gives the resolution
/// where that curve crosses 0.143 ([`crate::fourier::resolution_at`]; "≤ Nyquist" when
/// it never does).
pub fn fsc_plot(
    path: &Path,
    curves: &[(String, Vec<f64>)],
    box_size: usize,
    voxel_size: f64,
) -> Result<()> {
    let (plot, top) = fsc_figure(path, curves, box_size, voxel_size)?;
    draw_line_plot(path, &plot, Some(("resolution (Å)".into(), top)))
}

/// The line plot and top-axis ticks of [`fsc_plot`].
pub(crate) fn fsc_figure(
    path: &Path,
    curves: &[(String, Vec<f64>)],
    box_size: usize,
    voxel_size: f64,
) -> Result<(LinePlot, Vec<(f64, String)>)> {
    if curves.is_empty() {
        return Err(bad(path, "no FSC curve to draw"));
    }
    if box_size == 0 {
        return Err(bad(path, "box size must be at least 1 voxel"));
    }
    if !(voxel_size.is_finite() && voxel_size > 0.0) {
        return Err(bad(
            path,
            format!("voxel size must be a positive number of Å, got {voxel_size}"),
        ));
    }
    let extent = box_size as f64 * voxel_size;
    let mut series = Vec::with_capacity(curves.len());
    for (name, fsc) in curves {
        if fsc.is_empty() {
            return Err(bad(path, format!("FSC curve '{name}' is empty")));
        }
        let res = crate::fourier::resolution_at(fsc, 0.143, box_size, voxel_size);
        let label = match crate::fourier::fsc_crossing(fsc, 0.143) {
            Some(_) => format!("{name}: {res:.2} Å at 0.143"),
            None => format!("{name}: ≤ {res:.2} Å (never below 0.143)"),
        };
        let x = (0..fsc.len()).map(|i| i as f64 / extent).collect();
        series.push(Series::new(label, x, fsc.clone()));
    }
    let longest = curves.iter().map(|c| c.1.len()).max().unwrap_or(1);
    let x_max = (longest.max(2) - 1) as f64 / extent;
    let (lo, hi) = finite_range(curves.iter().flat_map(|c| c.1.iter().copied()))
        .ok_or_else(|| bad(path, "no finite FSC value to draw"))?;
    let plot = LinePlot {
        title: "Fourier shell correlation".into(),
        x_label: "spatial frequency (1/Å)".into(),
        y_label: "FSC".into(),
        series,
        hlines: vec![(0.5, "0.5".into()), (0.143, "0.143".into())],
        x_range: Some((0.0, x_max)),
        y_range: Some((lo.min(0.0) - 0.05, hi.max(1.0) + 0.05)),
        log_y: false,
    };
    Ok((plot, resolution_ticks(x_max)))
}

/// Ticks at round resolutions (Å) for a frequency axis `[0, x_max]` (1/Å), at least 7%
/// of the axis apart.
pub(crate) fn resolution_ticks(x_max: f64) -> Vec<(f64, String)> {
    const NICE: [f64; 30] = [
        1000.0, 500.0, 200.0, 100.0, 50.0, 40.0, 30.0, 25.0, 20.0, 15.0, 12.0, 10.0, 9.0, 8.0, 7.0,
        6.0, 5.0, 4.5, 4.0, 3.5, 3.0, 2.8, 2.6, 2.4, 2.2, 2.0, 1.8, 1.6, 1.4, 1.2,
    ];
    let mut ticks: Vec<(f64, String)> = Vec::new();
    // Also keep the first tick off the left edge (where the resolution is infinite).
    let mut last = 0.0;
    for a in NICE {
        let f = 1.0 / a;
        if f > x_max * (1.0 + 1e-9) {
            break;
        }
        if f - last >= 0.07 * x_max {
            ticks.push((f, super::common::fmt_tick(a)));
            last = f;
        }
    }
    ticks
}

fn check_range(path: &Path, what: &str, r: Option<(f64, f64)>, log: bool) -> Result<()> {
    if let Some((lo, hi)) = r {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(bad(
                path,
                format!("{what} ({lo}, {hi}) must be finite and increasing"),
            ));
        }
        if log && lo <= 0.0 {
            return Err(bad(
                path,
                format!("{what} ({lo}, {hi}) must be positive on a logarithmic axis"),
            ));
        }
    }
    Ok(())
}

/// Runs of consecutive points that `keep` accepts.
fn runs(x: &[f64], y: &[f64], keep: impl Fn(f64, f64) -> bool) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (&a, &b) in x.iter().zip(y) {
        if keep(a, b) {
            cur.push((a, b));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn draw_line_plot(
    path: &Path,
    plot: &LinePlot,
    top: Option<(String, Vec<(f64, String)>)>,
) -> Result<()> {
    if plot.series.is_empty() {
        return Err(bad(path, "no series to draw"));
    }
    for s in &plot.series {
        if s.x.len() != s.y.len() {
            return Err(bad(
                path,
                format!(
                    "series '{}' has {} x values but {} y values",
                    s.label,
                    s.x.len(),
                    s.y.len()
                ),
            ));
        }
        if s.x.is_empty() {
            return Err(bad(path, format!("series '{}' is empty", s.label)));
        }
    }
    check_range(path, "x range", plot.x_range, false)?;
    check_range(path, "y range", plot.y_range, plot.log_y)?;
    let log = plot.log_y;
    let keep = |x: f64, y: f64| x.is_finite() && y.is_finite() && (!log || y > 0.0);
    let data: Vec<Vec<Vec<(f64, f64)>>> =
        plot.series.iter().map(|s| runs(&s.x, &s.y, keep)).collect();
    let all = || data.iter().flatten().flatten();
    let Some(xr) = plot.x_range.or_else(|| finite_range(all().map(|p| p.0))) else {
        let why = if log {
            "no point with finite x and positive finite y to draw on the logarithmic axis"
        } else {
            "no point with finite x and y to draw"
        };
        return Err(bad(path, why));
    };
    if all().next().is_none() {
        return Err(bad(path, "no point with finite x and y to draw"));
    }
    let xr = if plot.x_range.is_some() {
        xr
    } else {
        pad_linear(xr, 0.02)
    };
    let hline_ys = plot
        .hlines
        .iter()
        .map(|h| h.0)
        .filter(|&v| v.is_finite() && (!log || v > 0.0));
    let y_axis = match (plot.y_range, log) {
        (Some(r), false) => Axis::linear(r, 8),
        (Some(r), true) => Axis::log(r),
        (None, _) => {
            // Non-empty: `all()` has a point and its y passed `keep`.
            let r = finite_range(all().map(|p| p.1).chain(hline_ys)).unwrap_or((0.0, 1.0));
            if log {
                Axis::log(pad_log(r, 0.05))
            } else {
                Axis::linear(pad_linear(r, 0.05), 8)
            }
        }
    };
    let x_axis = Axis::linear(xr, 10);
    // Curves in plot coordinates, clipped to the axes.
    let curves: Vec<Vec<Vec<(f64, f64)>>> = data
        .iter()
        .map(|runs| {
            runs.iter()
                .flat_map(|run| {
                    let pts: Vec<(f64, f64)> =
                        run.iter().map(|&(x, y)| (x, y_axis.to_plot(y))).collect();
                    clip_polyline(&pts, (x_axis.lo, x_axis.hi), (y_axis.lo, y_axis.hi))
                })
                .collect()
        })
        .collect();
    let hlines: Vec<(f64, &str)> = plot
        .hlines
        .iter()
        .map(|(v, l)| (y_axis.to_plot(*v), l.as_str()))
        .filter(|(v, _)| v.is_finite() && *v >= y_axis.lo && *v <= y_axis.hi)
        .collect();
    // Legend corner: avoid the curves (sampled densely along each segment) and the
    // reference-line labels at the right end.
    let mut occupied: Vec<(f64, f64)> = Vec::new();
    for run in curves.iter().flatten() {
        for (i, &(x, y)) in run.iter().enumerate() {
            occupied.push((x_axis.fraction(x), y_axis.fraction(y)));
            if let Some(&(x2, y2)) = run.get(i + 1) {
                for k in 1..8 {
                    let t = k as f64 / 8.0;
                    occupied.push((
                        x_axis.fraction(x + t * (x2 - x)),
                        y_axis.fraction(y + t * (y2 - y)),
                    ));
                }
            }
        }
    }
    for (v, _) in &hlines {
        occupied.push((0.97, y_axis.fraction(*v)));
    }
    let entries = plot
        .series
        .iter()
        .zip(&curves)
        .enumerate()
        .filter(|(_, (s, _))| !s.label.is_empty())
        .map(|(i, (s, runs))| {
            let color = palette(i);
            let marker = if runs.iter().all(|r| r.len() == 1) {
                Marker::Dot(color)
            } else {
                Marker::Line(color)
            };
            (s.label.clone(), marker)
        })
        .collect();
    let legend = Legend::new(entries, &occupied, 0);
    let frame = Frame {
        title: &plot.title,
        x_label: &plot.x_label,
        y_label: &plot.y_label,
        x: x_axis.clone(),
        y: y_axis.clone(),
        top,
        x_grid: true,
        y_grid: true,
        right_extra: legend.right_margin(),
    };
    render(path, (WIDTH, HEIGHT), |root| {
        let mut chart = build_chart(root, &frame)?;
        for (v, label) in &hlines {
            chart.draw_series(std::iter::once(DashedPathElement::new(
                vec![(x_axis.lo, *v), (x_axis.hi, *v)],
                10,
                6,
                GRAY.stroke_width(1),
            )))?;
            label_at(root, &chart, (x_axis.hi, *v), label)?;
        }
        for (i, runs) in curves.iter().enumerate() {
            for r in runs {
                let width = if r.len() == 1 { 8.0 } else { 2.5 };
                draw_polyline(root, &chart, r, palette(i), width)?;
            }
        }
        legend.draw(root, &chart)?;
        Ok(())
    })
}

/// Write `label` just above and left of the plot point `at`.
fn label_at(root: &Area, chart: &Chart, at: (f64, f64), label: &str) -> DrawResult {
    let (bx, by) = root.get_base_pixel();
    let (px, py) = chart.backend_coord(&at);
    draw_text(
        root,
        label,
        (px - bx - 6, py - by - 3),
        TICK_SIZE,
        GRAY,
        Anchor::new(HPos::Right, VPos::Bottom),
    )
}

/// A bar chart of `values` at positions 1, 2, ..., n (e.g. eigenvalues by index), on a
/// linear axis from 0 or a logarithmic one (`log_y`; values ≤ 0 are then skipped).
///
/// Errors: no values, nothing drawable (all non-finite, or all ≤ 0 with `log_y`), or the
/// file cannot be written.
pub fn bar_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    values: &[f64],
    log_y: bool,
) -> Result<()> {
    if values.is_empty() {
        return Err(bad(path, "no values to draw"));
    }
    let keep = |v: f64| v.is_finite() && (!log_y || v > 0.0);
    let Some(r) = finite_range(values.iter().copied().filter(|&v| keep(v))) else {
        let why = if log_y {
            "no positive finite value to draw on the logarithmic axis"
        } else {
            "no finite value to draw"
        };
        return Err(bad(path, why));
    };
    let y_axis = if log_y {
        Axis::log(pad_log(r, 0.05))
    } else {
        let (lo, hi) = (r.0.min(0.0), r.1.max(0.0));
        let (plo, phi) = pad_linear((lo, hi), 0.05);
        // Bars start at 0: no margin below 0 unless there are negative bars.
        let range = match (lo < 0.0, hi > 0.0) {
            (false, false) => (0.0, 1.0),
            (neg, pos) => (if neg { plo } else { 0.0 }, if pos { phi } else { 0.0 }),
        };
        Axis::linear(range, 8)
    };
    let x_axis = Axis::integers(values.len());
    let base = if log_y { y_axis.lo } else { 0.0 };
    let bars: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, &v)| keep(v))
        .map(|(i, &v)| ((i + 1) as f64, y_axis.to_plot(v)))
        .collect();
    let half = if values.len() > 150 { 0.5 } else { 0.4 };
    let frame = Frame {
        title,
        x_label,
        y_label,
        x: x_axis,
        y: y_axis,
        top: None,
        x_grid: false,
        y_grid: true,
        right_extra: 0,
    };
    render(path, (WIDTH, HEIGHT), |root| {
        let mut chart = build_chart(root, &frame)?;
        let fill = palette(0);
        chart.draw_series(
            bars.iter()
                .map(|&(x, v)| Rectangle::new([(x - half, base), (x + half, v)], fill.filled())),
        )?;
        Ok(())
    })
}

/// A histogram of the finite `values` in `bins` equal bins between their minimum and
/// maximum, with the count, mean and standard deviation written in a corner.
///
/// Errors: no values, `bins` = 0, no finite value, or the file cannot be written.
pub fn histogram(
    path: &Path,
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
) -> Result<()> {
    if values.is_empty() {
        return Err(bad(path, "no values to draw"));
    }
    if bins == 0 {
        return Err(bad(path, "the number of bins must be at least 1"));
    }
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let Some((lo, hi)) = finite_range(finite.iter().copied()) else {
        return Err(bad(path, "no finite value to draw"));
    };
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        pad_linear((lo, hi), 0.0)
    };
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in &finite {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let sd = (finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    let skipped = values.len() - finite.len();
    let max_count = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let x_axis = Axis::linear(pad_linear((lo, hi), 0.02), 10);
    let y_axis = Axis::linear((0.0, max_count * 1.08), 8);
    // Put the summary where the bars are lowest: compare the outer fifths.
    let fifth = (bins / 5).max(1);
    let left_mass: usize = counts[..fifth].iter().sum();
    let right_mass: usize = counts[bins - fifth..].iter().sum();
    let on_right = right_mass <= left_mass;
    let mut lines = vec![
        format!("n = {}", finite.len()),
        format!("mean = {}", fmt_stat(mean)),
        format!("sd = {}", fmt_stat(sd)),
    ];
    if skipped > 0 {
        lines.push(format!("{skipped} non-finite skipped"));
    }
    let frame = Frame {
        title,
        x_label,
        y_label: "count",
        x: x_axis,
        y: y_axis,
        top: None,
        x_grid: false,
        y_grid: true,
        right_extra: 0,
    };
    render(path, (WIDTH, HEIGHT), |root| {
        let mut chart = build_chart(root, &frame)?;
        let fill = palette(0);
        chart.draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| {
                    let x0 = lo + i as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], fill.filled())
                }),
        )?;
        if bins <= 200 {
            chart.draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(
                |(i, &c)| {
                    let x0 = lo + i as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], WHITE.stroke_width(1))
                },
            ))?;
        }
        let (bx, by) = root.get_base_pixel();
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let (x, anchor) = if on_right {
            (xs.end - bx - 14, HPos::Right)
        } else {
            (xs.start - bx + 14, HPos::Left)
        };
        for (k, line) in lines.iter().enumerate() {
            draw_text(
                root,
                line,
                (x, ys.start - by + 12 + 22 * k as i32),
                LEGEND_SIZE,
                BLACK,
                Anchor::new(anchor, VPos::Top),
            )?;
        }
        Ok(())
    })
}

/// A statistic with 4 significant digits.
fn fmt_stat(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.3e}")
    } else {
        let d = (3 - a.max(1e-3).log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.d$}")
    }
}
