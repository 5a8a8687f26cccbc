//! `recovar compute_trajectory` and the trajectories of `analyze` (algorithms.md §10): a
//! low-free-energy path between two latent points, kernel-regression volumes along it, and
//! its figures, in the seed's layout:
//!
//! ```text
//! out/path.json              {"density", "path", "density_subsampled", "path_subsampled", ...}
//! out/density/density_{a}{b}.png   the density of each axis pair with the path drawn over it
//! out/vol****/, all_volumes/, latent_coords.txt   volumes at the subsampled points
//! ```
//!
//! With a density (from `estimate_conformational_density`, `d` axes) the path is the
//! travel-time geodesic through it (§10A) in its first `d` coordinates. When the embedding
//! has more coordinates than the density (`zdim > d`), the remaining ones go in a straight
//! line from the start's to the end's, in proportion to the arc length travelled in the
//! first `d` — so the path still joins the two given points exactly (the Python tool pads
//! the path with zeros there, which moves the volumes away from both endpoints). Without a
//! density the path is found in the embedding itself (§10B), one more axis at a time.
//! A 1-D embedding has a single path: the segment between the endpoints.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::analysis::kde::{self, DensityGrid};
use crate::analysis::trajectory::{self, PathOptions, TrajectoryPath};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::generate::output::{generate_and_write, VolumeSummary};
use crate::generate::{KernelOptions, Latent};
use crate::plot::{density_image, DensityMap};
use crate::progress::Progress;

use super::load::PipelineResult;

/// Points of the path written to path.json for a 1-D embedding (the segment).
const SEGMENT_POINTS: usize = 200;

/// The low-free-energy path from `start` to `end` (each with at least `zdim` coordinates;
/// the first `zdim` are used) through `density` if given, else through the embedding `zs`
/// (`n × zdim`). The returned points have `zdim` coordinates; `density` holds the density
/// along the path (the given one, or the KDE of the first `min(4, zdim)` axes).
/// `embedding_kde` is that KDE (`kde::kde_grid(zs, zdim, 50, min(4, zdim))`) when the
/// caller already has it; it is computed when needed otherwise.
///
/// Errors: endpoints with too few or non-finite coordinates, a density with more axes than
/// the embedding, or the path search failing (see [`trajectory`]).
pub fn latent_path(
    zs: &[f32],
    zdim: usize,
    density: Option<&DensityGrid>,
    embedding_kde: Option<&DensityGrid>,
    start: &[f32],
    end: &[f32],
    opts: &PathOptions,
) -> Result<TrajectoryPath> {
    for (what, p) in [("start", start), ("end", end)] {
        if p.len() < zdim || p[..zdim].iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "trajectory {what} point {p:?} needs {zdim} finite coordinates"
            )));
        }
    }
    let (start, end) = (&start[..zdim], &end[..zdim]);
    if zdim == 1 {
        let points: Vec<Vec<f32>> =
            crate::analysis::pairs::straight_line(start, end, SEGMENT_POINTS)
                .into_iter()
                .map(|v| vec![v])
                .collect();
        let density = match density {
            Some(g) => points
                .iter()
                .map(|p| g.value_at(p).unwrap_or(0.0))
                .collect(),
            None => vec![f32::NAN; points.len()],
        };
        return Ok(TrajectoryPath { points, density });
    }
    let Some(grid) = density else {
        return match embedding_kde {
            Some(kde) => trajectory::high_dimensional_path_on(kde, zs, zdim, start, end, opts),
            None => trajectory::high_dimensional_path(zs, zdim, start, end, opts),
        };
    };
    let d = grid.dim;
    if d > zdim {
        return Err(Error::invalid(format!(
            "the density has {d} axes but the embedding only {zdim}: use an embedding with zdim ≥ {d}"
        )));
    }
    let mut path = trajectory::fixed_dimensional_path(grid, start, end, opts)?;
    if d < zdim {
        // Arc-length fraction along the first d coordinates.
        let mut cum = vec![0.0f64; path.points.len()];
        for i in 1..path.points.len() {
            let step: f64 = path.points[i]
                .iter()
                .zip(&path.points[i - 1])
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            cum[i] = cum[i - 1] + step;
        }
        let total = cum.last().copied().unwrap_or(0.0);
        let last = path.points.len().saturating_sub(1).max(1);
        for (i, p) in path.points.iter_mut().enumerate() {
            let t = if total > 0.0 {
                cum[i] / total
            } else {
                i as f64 / last as f64
            };
            p.truncate(d);
            p.extend(
                (d..zdim).map(|k| (start[k] as f64 + t * (end[k] as f64 - start[k] as f64)) as f32),
            );
        }
    }
    Ok(path)
}

fn json_row(v: &[f32]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|x| {
            if x.is_finite() {
                format!("{x:e}")
            } else {
                "NaN".to_string()
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Write `path.json`: the path and the density along it, full and subsampled (the Python
/// tool's keys), plus where it starts and ends and how it was found.
pub fn write_path_json(
    path: &Path,
    traj: &TrajectoryPath,
    subsampled: &[usize],
    method: &str,
) -> Result<()> {
    let rows = |idx: &mut dyn Iterator<Item = usize>| -> String {
        idx.map(|i| json_row(&traj.points[i]))
            .collect::<Vec<_>>()
            .join(",\n    ")
    };
    let dens = |idx: &mut dyn Iterator<Item = usize>| -> String {
        let v: Vec<f32> = idx.map(|i| traj.density[i]).collect();
        json_row(&v)
    };
    let n = traj.points.len();
    let mut s = String::from("{\n");
    let _ = writeln!(s, "  \"method\": \"{method}\",");
    if let (Some(a), Some(b)) = (traj.points.first(), traj.points.last()) {
        let _ = writeln!(s, "  \"start\": {},", json_row(a));
        let _ = writeln!(s, "  \"end\": {},", json_row(b));
    }
    let _ = writeln!(s, "  \"density\": {},", dens(&mut (0..n)));
    let _ = writeln!(s, "  \"path\": [\n    {}\n  ],", rows(&mut (0..n)));
    let _ = writeln!(
        s,
        "  \"density_subsampled\": {},",
        dens(&mut subsampled.iter().copied())
    );
    let _ = writeln!(
        s,
        "  \"path_subsampled\": [\n    {}\n  ]",
        rows(&mut subsampled.iter().copied())
    );
    s.push_str("}\n");
    crate::io::atomic::write_bytes(path, s.as_bytes())
}

/// `dir/density_{a}{b}.png` for each axis pair of `grid`: the density summed over the other
/// axes with the path (its first coordinates) drawn over it; nothing for a 1-D grid.
pub fn path_density_plots(dir: &Path, grid: &DensityGrid, traj: &TrajectoryPath) -> Result<()> {
    if grid.dim < 2 {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let m = grid.n_grid;
    for (a, b) in crate::analysis::plots::density_axis_pairs(grid.dim) {
        let values: Vec<f64> = grid.marginal_2d(a, b).iter().map(|&v| v as f64).collect();
        let line: Vec<(f64, f64)> = traj
            .points
            .iter()
            .filter(|p| p.len() > a.max(b))
            .map(|p| (p[a] as f64, p[b] as f64))
            .collect();
        let (xl, yl) = (format!("PC {}", a + 1), format!("PC {}", b + 1));
        density_image(
            &dir.join(format!("density_{a}{b}.png")),
            &DensityMap {
                title: "Latent density and the trajectory",
                x_label: &xl,
                y_label: &yl,
                values: &values,
                nx: m,
                ny: m,
                x_range: (grid.bounds[a][0] as f64, grid.bounds[a][1] as f64),
                y_range: (grid.bounds[b][0] as f64, grid.bounds[b][1] as f64),
                overlay_path: Some(&line),
            },
        )?;
    }
    Ok(())
}

/// Everything a trajectory needs besides its endpoints.
pub struct TrajectoryContext<'a> {
    pub ds: &'a crate::dataset::Dataset,
    pub backend: &'a dyn Backend,
    pub noise: &'a [f64],
    pub latent: Latent<'a>,
    /// The density the path follows (None: §10B in the embedding).
    pub density: Option<&'a DensityGrid>,
    pub kernel: &'a KernelOptions,
    pub n_vols_along_path: usize,
    pub progress: &'a dyn Progress,
}

/// What one trajectory produced.
#[derive(Clone, Debug)]
pub struct TrajectorySummary {
    pub outdir: PathBuf,
    /// Points of the full path.
    pub path_points: usize,
    /// The latent points where volumes were generated.
    pub volume_points: Vec<Vec<f32>>,
    pub volumes: Vec<VolumeSummary>,
    /// Mean density along the path, and along the straight segment between the same
    /// endpoints, on the same density (a path through populated regions has the larger).
    pub mean_density_path: f64,
    pub mean_density_segment: f64,
}

/// Find the path from `start` to `end`, write path.json, the figures and the volumes at
/// `n_vols_along_path` points evenly spaced (by index) along it into `outdir`.
pub fn write_trajectory(
    outdir: &Path,
    ctx: &TrajectoryContext<'_>,
    start: &[f32],
    end: &[f32],
) -> Result<TrajectorySummary> {
    let zdim = ctx.latent.zdim;
    std::fs::create_dir_all(outdir).map_err(|e| Error::io(outdir, e))?;
    // The grid drawn in the figures and used for the segment comparison; without a given
    // density it is also the first pass of the path search.
    let grid_owned;
    let grid = match ctx.density {
        Some(g) => g,
        None => {
            grid_owned = kde::kde_grid(ctx.latent.zs, zdim, 50, zdim.min(4))?;
            &grid_owned
        }
    };
    let traj = latent_path(
        ctx.latent.zs,
        zdim,
        ctx.density,
        Some(grid),
        start,
        end,
        &PathOptions::default(),
    )?;
    let subsampled = trajectory::subsample_indices(traj.points.len(), ctx.n_vols_along_path);
    let method = match (zdim, ctx.density) {
        (1, _) => "segment (1-D embedding)",
        (_, Some(_)) => "travel time through the given density (fast marching)",
        (_, None) => "travel time through the embedding's density, one axis at a time",
    };
    let mut traj = traj;
    if traj.density.iter().all(|v| v.is_nan()) {
        traj.density = traj
            .points
            .iter()
            .map(|p| grid.value_at(p).unwrap_or(0.0))
            .collect();
    }
    write_path_json(&outdir.join("path.json"), &traj, &subsampled, method)?;
    path_density_plots(&outdir.join("density"), grid, &traj)?;
    let mean = |v: &mut dyn Iterator<Item = f32>| -> f64 {
        let (s, n) = v.fold((0.0f64, 0usize), |(s, n), x| (s + x as f64, n + 1));
        s / n.max(1) as f64
    };
    let mean_density_path = mean(&mut traj.points.iter().map(|p| grid.value_at(p).unwrap_or(0.0)));
    let segment = crate::analysis::pairs::straight_line(start, end, traj.points.len().max(2));
    let mean_density_segment = mean(
        &mut segment
            .chunks(zdim)
            .map(|p| grid.value_at(p).unwrap_or(0.0)),
    );
    tracing::info!(
        "trajectory of {} points ({method}); mean density along it {mean_density_path:.3}, along the straight segment {mean_density_segment:.3}",
        traj.points.len()
    );
    let volume_points: Vec<Vec<f32>> = subsampled.iter().map(|&i| traj.points[i].clone()).collect();
    let volumes = if volume_points.is_empty() {
        Vec::new()
    } else {
        generate_and_write(
            outdir,
            ctx.ds,
            ctx.backend,
            ctx.noise,
            ctx.latent,
            &volume_points,
            ctx.kernel,
            ctx.progress,
        )?
    };
    Ok(TrajectorySummary {
        outdir: outdir.to_path_buf(),
        path_points: traj.points.len(),
        volume_points,
        volumes,
        mean_density_path,
        mean_density_segment,
    })
}

/// Options of `recovar compute_trajectory`.
#[derive(Clone, Debug)]
pub struct ComputeTrajectoryOptions {
    pub result_dir: PathBuf,
    pub outdir: PathBuf,
    pub zdim: usize,
    pub start: Vec<f32>,
    pub end: Vec<f32>,
    /// A density pickle (from estimate_conformational_density or the Python tool).
    pub density: Option<PathBuf>,
    pub n_vols_along_path: usize,
    /// Use the regularized embedding (`--override_z_regularization`); the default is the
    /// unregularized one, on which densities are estimated.
    pub regularized: bool,
    pub particles: Option<PathBuf>,
    pub datadir: Option<PathBuf>,
    pub kernel: KernelOptions,
}

/// Run compute_trajectory: endpoints padded with zeros or truncated to `zdim`, then
/// [`write_trajectory`].
pub fn run_compute_trajectory(
    opts: &ComputeTrajectoryOptions,
    backend: &dyn Backend,
    progress: &dyn Progress,
) -> Result<TrajectorySummary> {
    let pr = PipelineResult::load(&opts.result_dir)?;
    let zdim = opts.zdim;
    let emb = pr.embedding(zdim, !opts.regularized)?;
    let mut ds = pr.open_dataset(opts.particles.as_deref(), opts.datadir.as_deref())?;
    let noise = pr.noise_for(&mut ds, backend, opts.kernel.batch_size, progress)?;
    let (zs, precisions, contrasts) = emb.for_dataset(&ds)?;
    ds.multiply_contrasts(&contrasts)?;
    let density = match &opts.density {
        Some(p) => Some(crate::analysis::density::read_density(p)?),
        None => None,
    };
    let fit = |p: &[f32]| -> Vec<f32> {
        (0..zdim)
            .map(|k| p.get(k).copied().unwrap_or(0.0))
            .collect()
    };
    let ctx = TrajectoryContext {
        ds: &ds,
        backend,
        noise: &noise,
        latent: Latent {
            zdim,
            zs: &zs,
            precisions: &precisions,
        },
        density: density.as_ref(),
        kernel: &opts.kernel,
        n_vols_along_path: opts.n_vols_along_path,
        progress,
    };
    write_trajectory(&opts.outdir, &ctx, &fit(&opts.start), &fit(&opts.end))
}
