//! Scatter plots of 2-D coordinates (latent space), optionally coloured by cluster.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::element::Circle;
use plotters::style::{Color, RGBColor};

use super::color::palette;
use super::common::{
    bad, build_chart, finite_range, pad_linear, render, Axis, Frame, Legend, Marker, HEIGHT, WIDTH,
};
use crate::error::Result;

/// Clusters listed in the legend at most; with more, the legend is left out.
const MAX_LEGEND: usize = 20;

/// A scatter plot of the points `(x[i], y[i])`.
///
/// With `labels`, point `i` is coloured by cluster `labels[i]` (colours cycle through a
/// 10-colour palette) and, for at most 20 clusters, a legend gives each cluster's size.
/// Points and marker opacity shrink as the number of points grows, so dense clouds
/// still show their structure. Points with a non-finite coordinate are skipped.
///
/// Errors: no points, `x`/`y`/`labels` of different lengths, no finite point, or the
/// file cannot be written.
pub fn scatter(
    path: &Path,
    title: &str,
    x: &[f64],
    y: &[f64],
    labels: Option<&[usize]>,
    x_label: &str,
    y_label: &str,
) -> Result<()> {
    if x.is_empty() && y.is_empty() {
        return Err(bad(path, "no points to draw"));
    }
    if x.len() != y.len() {
        return Err(bad(
            path,
            format!("{} x values but {} y values", x.len(), y.len()),
        ));
    }
    if let Some(l) = labels {
        if l.len() != x.len() {
            return Err(bad(
                path,
                format!("{} points but {} cluster labels", x.len(), l.len()),
            ));
        }
    }
    // Points grouped by cluster (one group when unlabelled), in cluster order.
    let mut groups: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, (&a, &b)) in x.iter().zip(y).enumerate() {
        if a.is_finite() && b.is_finite() {
            let k = labels.map_or(0, |l| l[i]);
            groups.entry(k).or_default().push((a, b));
        }
    }
    let n: usize = groups.values().map(Vec::len).sum();
    if n == 0 {
        return Err(bad(path, "no point with finite x and y to draw"));
    }
    let xr = finite_range(groups.values().flatten().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let yr = finite_range(groups.values().flatten().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let x_axis = Axis::linear(pad_linear(xr, 0.04), 10);
    let y_axis = Axis::linear(pad_linear(yr, 0.04), 8);
    let (radius, alpha) = match n {
        0..=1_000 => (4, 0.8),
        1_001..=10_000 => (3, 0.5),
        10_001..=100_000 => (2, 0.3),
        _ => (1, 0.2),
    };
    let show_legend = labels.is_some() && groups.len() <= MAX_LEGEND;
    let entries = if show_legend {
        groups
            .iter()
            .map(|(&k, pts)| {
                (
                    format!("cluster {k} ({})", pts.len()),
                    Marker::Dot(palette(k)),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let fractions: Vec<(f64, f64)> = groups
        .values()
        .flatten()
        .map(|&(a, b)| (x_axis.fraction(a), y_axis.fraction(b)))
        .collect();
    let legend = Legend::new(entries, &fractions, n / 500);
    let frame = Frame {
        title,
        x_label,
        y_label,
        x: x_axis,
        y: y_axis,
        top: None,
        x_grid: true,
        y_grid: true,
        right_extra: legend.right_margin(),
    };
    render(path, (WIDTH, HEIGHT), |root| {
        let mut chart = build_chart(root, &frame)?;
        for (&k, pts) in &groups {
            let color: RGBColor = palette(k);
            chart.draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, radius, color.mix(alpha).filled())),
            )?;
        }
        legend.draw(root, &chart)?;
        Ok(())
    })
}
