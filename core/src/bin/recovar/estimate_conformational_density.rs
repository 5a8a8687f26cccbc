//! `recovar estimate_conformational_density result_dir [--pca_dim 4] [--z_dim_used Z]
//!  [--output_dir D] [--percentile_reject 10] [--num_disc_points M] [--alphas a b ...]
//!  [--percentile_bound 1]`
//!
//! The conformational density of a pipeline run by deconvolution (see
//! `recovar_core::pipeline::density`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use recovar_core::analysis::density::DensityOptions;
use recovar_core::pipeline::density::{run_density, DensityRunOptions};

use crate::common::{start_output_dir, ProgressBar};

/// Practical sizes (2 cores; see BENCHMARKS.md), printed in --help.
const SIZES: &str = "The grid has num_disc_points^pca_dim nodes and every alpha solves a deconvolution on it, so the runtime grows exponentially with --pca_dim. Defaults: 1000 points for pca_dim 1, 200 for 2, 100 for 3, 50 for 4 and more. Measured on 2 cores with 5000 images: pca_dim 2 (200^2) 15-30 s; pca_dim 3 (100^3) about 8 min; pca_dim 4 (50^4) about 4 min per alpha, 40-60 min for the 11 default alphas and 2-3 GB (pass fewer --alphas or --num_disc_points). Grids above 2^24 nodes are refused. Look at all_densities.png and Lcurve.png: if the knee's density looks over-fitted, pass another all_densities/deconv_density_{i}.pkl to compute_trajectory or analyze --density.";

#[derive(clap::Args)]
#[command(after_help = SIZES)]
pub struct Args {
    /// Output directory of `recovar pipeline`
    result_dir: PathBuf,
    /// Dimension of the PCA space in which the density is estimated (1–6; ≤ 4 recommended)
    #[arg(long = "pca_dim", alias = "pca-dim", default_value_t = 4)]
    pca_dim: usize,
    /// Embedding dimension used (default: the smallest computed zdim ≥ pca_dim)
    #[arg(long = "z_dim_used", alias = "z-dim-used")]
    z_dim_used: Option<usize>,
    /// Output directory (default: result_dir/density)
    #[arg(long = "output_dir", alias = "output-dir", short = 'o')]
    pub output_dir: Option<PathBuf>,
    /// Percentile of images rejected for their low information (small precision norm)
    #[arg(
        long = "percentile_reject",
        alias = "percentile-reject",
        default_value_t = 10.0
    )]
    percentile_reject: f64,
    /// Grid points per axis (default: 1000, 200, 100, 50 for pca_dim 1, 2, 3, ≥4)
    #[arg(long = "num_disc_points", alias = "num-disc-points")]
    num_disc_points: Option<usize>,
    /// Regularization weights to try, e.g. --alphas 1e-9 1e-8 1e-7 1e-1 (default: 10, 1, ..., 1e-9)
    #[arg(long, num_args = 1..)]
    alphas: Option<Vec<f64>>,
    /// Percentile of each coordinate left outside the grid on either side
    #[arg(
        long = "percentile_bound",
        alias = "percentile-bound",
        default_value_t = 1.0
    )]
    percentile_bound: f64,
}

impl Args {
    /// Where the outputs (and run.log) go.
    pub fn log_dir(&self) -> PathBuf {
        self.output_dir
            .clone()
            .unwrap_or_else(|| self.result_dir.join("density"))
    }
}

pub fn run(a: Args) -> Result<()> {
    if !(1..=6).contains(&a.pca_dim) {
        bail!("--pca_dim must be between 1 and 6, got {}", a.pca_dim);
    }
    if !(0.0..100.0).contains(&a.percentile_reject) {
        bail!(
            "--percentile_reject must be in [0, 100), got {}",
            a.percentile_reject
        );
    }
    if !(0.0..50.0).contains(&a.percentile_bound) {
        bail!(
            "--percentile_bound must be in [0, 50), got {}",
            a.percentile_bound
        );
    }
    if let Some(al) = &a.alphas {
        if al.is_empty() || al.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
            bail!("--alphas must be positive numbers, got {al:?}");
        }
    }
    if a.num_disc_points.is_some_and(|m| m < 3) {
        bail!("--num_disc_points must be at least 3");
    }
    let output_dir = a.log_dir();
    start_output_dir(&output_dir)?;
    let density = DensityOptions {
        pca_dim: a.pca_dim,
        percentile_reject: a.percentile_reject,
        num_disc_points: a.num_disc_points,
        alphas: a.alphas,
        percentile_bound: a.percentile_bound,
        ..Default::default()
    };
    let opts = DensityRunOptions {
        result_dir: a.result_dir,
        output_dir: Some(output_dir),
        z_dim_used: a.z_dim_used,
        density,
    };
    let bar = ProgressBar::new("density");
    let s = run_density(&opts, &bar)?;
    bar.finish();
    println!(
        "density of {} of {} images on {}^{} points (zdim {}); knee at alpha {:e} (index {})",
        s.n_used, s.n_images, s.grid_points, s.pca_dim, s.zdim, s.alphas[s.knee], s.knee
    );
    println!(
        "outputs in {} (deconv_density_knee.pkl, all_densities/, all_densities.png, Lcurve.png)",
        s.output_dir.display()
    );
    Ok(())
}
