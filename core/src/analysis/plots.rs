//! The figures `analyze` writes (algorithms.md §8 step 7; seed README "Output Structure"):
//!
//! - `PCA/PC_{i}{j}.png` and `PCA/PC_{i}{j}no_annotate.png`: the latent coordinates on the
//!   plane of axes `i` and `j`, as a 2-D histogram, with the k-means centers numbered (or
//!   not); the axis pairs are RECOVAR's, see [`pca_axis_pairs`];
//! - `umap/sns.png`, `umap/sns_hex.png`, `umap/kmeans_centers.png`,
//!   `umap/kmeans_centers_no_annotate.png`: the 2-D UMAP embedding as points, as a 2-D
//!   histogram, and with the centers;
//! - `density_plots/density_{i}{j}.png` (density summed over the other axes) and
//!   `density_plots_sliced/density_{i}{j}.png` (through the middle of the other axes);
//! - `contrast_histogram.png`.
//!
//! Axes are labelled from 1 (`PC 1` is coordinate 0), as RECOVAR's figures do; file names
//! count from 0, as RECOVAR's do.

use std::path::{Path, PathBuf};

use super::kde::DensityGrid;
use crate::error::{Error, Result};
use crate::plot::{histogram, marked_map, MapBackground, MarkedMap};

/// The axis pairs of RECOVAR's `kmeans_analysis` plots: `(0, k)` for every other axis `k`,
/// then `(1, 2)` when there are more than two axes.
pub fn pca_axis_pairs(zdim: usize) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(usize, usize)> = (1..zdim).map(|k| (0, k)).collect();
    if zdim > 2 {
        pairs.push((1, 2));
    }
    pairs
}

/// The axis pairs of RECOVAR's density plots: `(k1, k2)` with `k1 < min(dim, 3)` and
/// `k1 < k2 < dim`.
pub fn density_axis_pairs(dim: usize) -> Vec<(usize, usize)> {
    (0..dim.min(3))
        .flat_map(|a| (a + 1..dim).map(move |b| (a, b)))
        .collect()
}

/// Histogram cells across a 2-D histogram of `n` points: about √n, between 40 and 120.
fn histogram_bins(n: usize) -> usize {
    ((n as f64).sqrt().round() as usize).clamp(40, 120)
}

fn make_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Coordinate `axis` of the `n × dim` rows of `data`.
fn column(data: &[f32], dim: usize, axis: usize) -> Vec<f64> {
    data.chunks_exact(dim).map(|r| r[axis] as f64).collect()
}

fn check_shape(what: &str, data: &[f32], dim: usize) -> Result<()> {
    if dim == 0 || data.is_empty() || !data.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "{what}: {} values are not rows of {dim} coordinates",
            data.len()
        )));
    }
    Ok(())
}

/// The PCA figures into `dir` (created if needed): for each pair `(i, j)` of
/// [`pca_axis_pairs`], `PC_{i}{j}.png` (2-D histogram of `zs` with the `centers` numbered)
/// and `PC_{i}{j}no_annotate.png` (the centers as plain dots). With one coordinate, RECOVAR
/// draws nothing; here `PC_0.png` is a histogram of it, without the centers. Rows with a
/// non-finite value (NaN padding) are left out. Returns the files written.
///
/// `zs` is `n × zdim` and `centers` `k × zdim`, row-major.
///
/// Errors: `zs` or `centers` not made of rows of `zdim`, no finite row, or a file cannot
/// be written.
pub fn pca_scatter_plots(
    dir: &Path,
    zs: &[f32],
    zdim: usize,
    centers: Option<&[f32]>,
) -> Result<Vec<PathBuf>> {
    check_shape("PCA plots: latent coordinates", zs, zdim)?;
    if let Some(c) = centers {
        if !c.is_empty() {
            check_shape("PCA plots: centers", c, zdim)?;
        }
    }
    make_dir(dir)?;
    let mut written = Vec::new();
    if zdim == 1 {
        let path = dir.join("PC_0.png");
        let values = column(zs, 1, 0);
        histogram(&path, "Latent coordinate PC 1", "PC 1", &values, 50)?;
        written.push(path);
        return Ok(written);
    }
    let n = zs.len() / zdim;
    for (i, j) in pca_axis_pairs(zdim) {
        let x = column(zs, zdim, i);
        let y = column(zs, zdim, j);
        let marks: Vec<(f64, f64)> = centers
            .map(|c| {
                c.chunks_exact(zdim)
                    .map(|r| (r[i] as f64, r[j] as f64))
                    .collect()
            })
            .unwrap_or_default();
        let (xl, yl) = (format!("PC {}", i + 1), format!("PC {}", j + 1));
        for numbered in [true, false] {
            let name = if numbered {
                format!("PC_{i}{j}.png")
            } else {
                format!("PC_{i}{j}no_annotate.png")
            };
            let title = if marks.is_empty() {
                format!("Latent coordinates, {n} images")
            } else if numbered {
                format!("Latent coordinates, {n} images, k-means centers numbered")
            } else {
                format!("Latent coordinates, {n} images, k-means centers")
            };
            let path = dir.join(name);
            marked_map(
                &path,
                &MarkedMap {
                    title: &title,
                    x_label: &xl,
                    y_label: &yl,
                    background: MapBackground::Histogram {
                        x: &x,
                        y: &y,
                        bins: histogram_bins(n),
                    },
                    marks: &marks,
                    numbered,
                },
            )?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The UMAP figures into `dir` (created if needed): `sns.png` (the embedded points),
/// `sns_hex.png` (their 2-D histogram) and, with `centers` (the embedded k-means centers),
/// `kmeans_centers.png` (numbered) and `kmeans_centers_no_annotate.png`. Points with a
/// non-finite coordinate are left out.
///
/// Errors: no finite point, or a file cannot be written.
pub fn umap_plots(dir: &Path, emb: &[[f32; 2]], centers: Option<&[[f32; 2]]>) -> Result<()> {
    make_dir(dir)?;
    let x: Vec<f64> = emb.iter().map(|p| p[0] as f64).collect();
    let y: Vec<f64> = emb.iter().map(|p| p[1] as f64).collect();
    let n = emb.len();
    let map = |title: &str, background, marks: &[(f64, f64)], numbered, name: &str| {
        marked_map(
            &dir.join(name),
            &MarkedMap {
                title,
                x_label: "UMAP 1",
                y_label: "UMAP 2",
                background,
                marks,
                numbered,
            },
        )
    };
    let scatter = MapBackground::Scatter { x: &x, y: &y };
    map(
        &format!("UMAP of the latent coordinates, {n} images"),
        scatter,
        &[],
        false,
        "sns.png",
    )?;
    map(
        &format!("UMAP of the latent coordinates, {n} images"),
        MapBackground::Histogram {
            x: &x,
            y: &y,
            bins: histogram_bins(n),
        },
        &[],
        false,
        "sns_hex.png",
    )?;
    if let Some(c) = centers {
        let marks: Vec<(f64, f64)> = c.iter().map(|p| (p[0] as f64, p[1] as f64)).collect();
        map(
            "UMAP, k-means centers numbered",
            scatter,
            &marks,
            true,
            "kmeans_centers.png",
        )?;
        map(
            "UMAP, k-means centers",
            scatter,
            &marks,
            false,
            "kmeans_centers_no_annotate.png",
        )?;
    }
    Ok(())
}

/// The density figures into `dir/density_plots/` (the density summed over the other axes)
/// and `dir/density_plots_sliced/` (through the middle node of the other axes), one
/// `density_{i}{j}.png` per pair of [`density_axis_pairs`]; nothing for a 1-D grid.
///
/// Errors: a malformed grid, or a file cannot be written.
pub fn density_plots(dir: &Path, grid: &DensityGrid) -> Result<()> {
    density_plots_with_centers(dir, grid, &[], grid.dim)
}

/// [`density_plots`] with the `centers` (`k × center_dim`, row-major, `center_dim ≥
/// grid.dim`; the first `grid.dim` coordinates are used) numbered on every figure, as
/// `analyze --density` draws them; centers outside the grid are drawn hollow at its edge.
///
/// Errors: a malformed grid, centers not made of rows of `center_dim` or with fewer
/// coordinates than the grid has axes, or a file cannot be written.
pub fn density_plots_with_centers(
    dir: &Path,
    grid: &DensityGrid,
    centers: &[f32],
    center_dim: usize,
) -> Result<()> {
    let m = grid.n_grid;
    let cells = m.checked_pow(grid.dim as u32);
    if grid.dim == 0 || m < 2 || grid.bounds.len() != grid.dim || cells != Some(grid.values.len()) {
        return Err(Error::invalid(format!(
            "density plots: a {}-D grid of {m} nodes per axis with {} bounds cannot hold {} values",
            grid.dim,
            grid.bounds.len(),
            grid.values.len()
        )));
    }
    if !centers.is_empty() {
        check_shape("density plots: centers", centers, center_dim)?;
        if center_dim < grid.dim {
            return Err(Error::invalid(format!(
                "density plots: centers have {center_dim} coordinates, the density {}",
                grid.dim
            )));
        }
    }
    let summed = dir.join("density_plots");
    let sliced = dir.join("density_plots_sliced");
    make_dir(&summed)?;
    make_dir(&sliced)?;
    for (a, b) in density_axis_pairs(grid.dim) {
        let marks: Vec<(f64, f64)> = centers
            .chunks_exact(center_dim.max(1))
            .map(|r| (r[a] as f64, r[b] as f64))
            .collect();
        let range = |k: usize| (grid.bounds[k][0] as f64, grid.bounds[k][1] as f64);
        let (xl, yl) = (format!("PC {}", a + 1), format!("PC {}", b + 1));
        let others = grid.dim > 2;
        for (folder, values, title) in [
            (
                &summed,
                grid.marginal_2d(a, b),
                if others {
                    "Latent density, summed over the other axes"
                } else {
                    "Latent density"
                },
            ),
            (
                &sliced,
                grid.slice_2d(a, b),
                if others {
                    "Latent density, sliced through the middle of the other axes"
                } else {
                    "Latent density"
                },
            ),
        ] {
            let values: Vec<f64> = values.iter().map(|&v| v as f64).collect();
            marked_map(
                &folder.join(format!("density_{a}{b}.png")),
                &MarkedMap {
                    title,
                    x_label: &xl,
                    y_label: &yl,
                    background: MapBackground::Grid {
                        values: &values,
                        nx: m,
                        ny: m,
                        x_range: range(a),
                        y_range: range(b),
                    },
                    marks: &marks,
                    numbered: true,
                },
            )?;
        }
    }
    Ok(())
}

/// `contrast_histogram.png`: a 50-bin histogram of the per-image contrasts (non-finite
/// values left out).
///
/// Errors: no finite contrast, or the file cannot be written.
pub fn contrast_histogram(path: &Path, contrasts: &[f32]) -> Result<()> {
    let values: Vec<f64> = contrasts.iter().map(|&v| v as f64).collect();
    histogram(
        path,
        "Estimated contrast per image",
        "contrast",
        &values,
        50,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::embed2d::{umap_2d, Umap2dOptions};
    use crate::analysis::kde::kde_grid;
    use crate::analysis::kmeans::{kmeans, KmeansOptions};
    use crate::rng::Rng;

    fn png_size(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
        (be(&b[16..20]), be(&b[20..24]))
    }

    /// Latent coordinates like RECOVAR's: a few blobs and an arc, decreasing spread along
    /// later axes, in `zdim` dimensions.
    fn latent(n: usize, zdim: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(n * zdim);
        for i in 0..n {
            let kind = i % 4;
            let t = rng.uniform_in(0.0, std::f64::consts::PI);
            for k in 0..zdim {
                let scale = 1.0 / (1.0 + k as f64);
                let v = match (kind, k) {
                    (0, 0) => 3.0 * t.cos(),
                    (0, 1) => 3.0 * t.sin() - 1.0,
                    (1, 0) => -2.5,
                    (1, 1) => 2.0,
                    (2, 0) => 2.0,
                    (2, 2) => 1.5,
                    _ => 0.0,
                };
                out.push((v + 0.35 * scale * rng.normal()) as f32);
            }
        }
        out
    }

    #[test]
    fn axis_pairs_are_recovars() {
        assert_eq!(pca_axis_pairs(1), vec![]);
        assert_eq!(pca_axis_pairs(2), vec![(0, 1)]);
        assert_eq!(pca_axis_pairs(4), vec![(0, 1), (0, 2), (0, 3), (1, 2)]);
        assert_eq!(density_axis_pairs(2), vec![(0, 1)]);
        assert_eq!(
            density_axis_pairs(4),
            vec![(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
        );
        assert_eq!(density_axis_pairs(1), vec![]);
    }

    #[test]
    fn pca_plots_are_written_with_recovars_names() {
        let dir = tempfile::tempdir().unwrap();
        let zs = latent(600, 3, 1);
        let centers = &zs[..4 * 3];
        let pca = dir.path().join("PCA");
        let files = pca_scatter_plots(&pca, &zs, 3, Some(centers)).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "PC_01.png",
                "PC_01no_annotate.png",
                "PC_02.png",
                "PC_02no_annotate.png",
                "PC_12.png",
                "PC_12no_annotate.png"
            ]
        );
        for f in &files {
            assert_eq!(png_size(f), (1000, 700));
        }
        // Numbers change the picture.
        assert_ne!(
            std::fs::read(&files[0]).unwrap(),
            std::fs::read(&files[1]).unwrap()
        );
        let one = pca_scatter_plots(&dir.path().join("one"), &zs[..100], 1, None).unwrap();
        assert!(one[0].ends_with("PC_0.png") && one[0].exists());
        assert!(pca_scatter_plots(&pca, &zs[..10], 3, None).is_err());
        assert!(pca_scatter_plots(&pca, &zs, 3, Some(&zs[..5])).is_err());
        let nan = vec![f32::NAN; 6];
        assert!(pca_scatter_plots(&pca, &nan, 3, None).is_err());
    }

    #[test]
    fn umap_density_and_contrast_plots_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(2);
        let emb: Vec<[f32; 2]> = (0..500)
            .map(|_| [rng.normal() as f32, (2.0 * rng.normal()) as f32])
            .collect();
        let umap = dir.path().join("umap");
        umap_plots(&umap, &emb, Some(&emb[..3])).unwrap();
        for f in [
            "sns.png",
            "sns_hex.png",
            "kmeans_centers.png",
            "kmeans_centers_no_annotate.png",
        ] {
            assert_eq!(png_size(&umap.join(f)), (1000, 700), "{f}");
        }
        let bare = dir.path().join("bare");
        umap_plots(&bare, &emb, None).unwrap();
        assert!(bare.join("sns.png").exists() && !bare.join("kmeans_centers.png").exists());

        let zs = latent(800, 3, 3);
        let grid = kde_grid(&zs, 3, 20, 3).unwrap();
        density_plots_with_centers(dir.path(), &grid, &zs[..6], 3).unwrap();
        for sub in ["density_plots", "density_plots_sliced"] {
            for f in ["density_01.png", "density_02.png", "density_12.png"] {
                assert_eq!(png_size(&dir.path().join(sub).join(f)), (1000, 700));
            }
        }
        let a = std::fs::read(dir.path().join("density_plots/density_01.png")).unwrap();
        let b = std::fs::read(dir.path().join("density_plots_sliced/density_01.png")).unwrap();
        assert_ne!(a, b, "marginal and slice differ in 3-D");
        assert!(density_plots_with_centers(dir.path(), &grid, &zs[..4], 2).is_err());
        let mut broken = grid.clone();
        broken.values.pop();
        assert!(density_plots(dir.path(), &broken).is_err());

        let path = dir.path().join("contrast_histogram.png");
        let contrasts: Vec<f32> = (0..300).map(|i| 0.8 + (i % 17) as f32 * 0.02).collect();
        contrast_histogram(&path, &contrasts).unwrap();
        assert_eq!(png_size(&path), (1000, 700));
        assert!(contrast_histogram(&path, &[f32::NAN]).is_err());
    }

    /// `RECOVAR_PLOT_SAMPLES=/some/folder cargo test -p recovar-core --lib
    /// analysis::plots -- --ignored` writes a realistic set of analyze figures there.
    #[test]
    #[ignore = "writes sample figures to $RECOVAR_PLOT_SAMPLES"]
    fn write_samples() {
        let Some(dest) = std::env::var_os("RECOVAR_PLOT_SAMPLES") else {
            return;
        };
        let dest = PathBuf::from(dest).join("analysis");
        let zdim = 4;
        let zs = latent(20_000, zdim, 7);
        let km = kmeans(
            &zs,
            zdim,
            &KmeansOptions {
                n_clusters: 20,
                ..Default::default()
            },
        )
        .unwrap();
        pca_scatter_plots(&dest.join("PCA"), &zs, zdim, Some(&km.centers)).unwrap();
        let grid = kde_grid(&zs, zdim, 50, 4).unwrap();
        density_plots_with_centers(&dest, &grid, &km.centers, zdim).unwrap();
        let sub = &zs[..3000 * zdim];
        let emb = umap_2d(sub, zdim, &Umap2dOptions::default()).unwrap();
        let km_sub = kmeans(
            sub,
            zdim,
            &KmeansOptions {
                n_clusters: 20,
                ..Default::default()
            },
        )
        .unwrap();
        let centers: Vec<[f32; 2]> = km_sub.center_points.iter().map(|&i| emb[i]).collect();
        umap_plots(&dest.join("umap"), &emb, Some(&centers)).unwrap();
        let mut rng = Rng::new(3);
        let contrasts: Vec<f32> = (0..20_000)
            .map(|_| (1.0 + 0.15 * rng.normal()) as f32)
            .collect();
        contrast_histogram(&dest.join("contrast_histogram.png"), &contrasts).unwrap();
    }
}
