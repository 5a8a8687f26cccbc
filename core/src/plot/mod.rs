//! PNG figures for the pipeline's reports: FSC curves, eigenvalue spectra, histograms,
//! scatter plots of latent coordinates, density maps with paths, maps of a latent plane
//! with numbered k-means centers, and grids of volume slices.
//!
//! Every figure is drawn in memory with the `plotters` crate's bitmap backend, encoded
//! to PNG by the pure-Rust `png` crate, and written with
//! [`crate::io::atomic::write_bytes`], so a figure appears whole or not at all. Text is
//! rasterized by `ab_glyph` from DejaVu Sans, embedded in the library
//! (`core/assets/fonts/`, license beside it): no system fonts or C libraries are used,
//! and the same input always gives the same bytes.
//!
//! Conventions shared by all functions:
//! - Figures are about 1000×700 px on white ([`image_grid`] is sized to its tiles).
//! - Non-finite values (NaN, ±inf) are skipped; on a logarithmic axis, values ≤ 0 are
//!   skipped too. A line is broken where a point is skipped.
//! - Empty inputs, inputs with nothing left to draw, and inconsistent lengths are
//!   errors ([`crate::Error::InvalidArgument`]) whose message names the output file and
//!   the problem; a missing output folder is an [`crate::Error::Io`] naming the file.

mod color;
mod common;
mod font;
mod images;
mod lines;
mod maps;
mod points;

pub use images::{density_image, heatmap_grid, image_grid, DensityMap};
pub use lines::{bar_plot, fsc_plot, histogram, line_plot, LinePlot, Series};
pub use maps::{marked_map, MapBackground, MarkedMap};
pub use points::scatter;

#[cfg(test)]
mod tests;
