//! `recovar analyze result_dir --zdim Z [--n-clusters 40] [--n-trajectories 0] [--skip-umap]
//!  [--skip-centers] [--normalize-kmeans] [--n-vols-along-path 6] [--no-z-regularization] ...`
//!
//! k-means, volumes at the centers, trajectories and figures (see
//! `recovar_core::pipeline::analyze`).

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::pipeline::analyze::{run_analyze, AnalyzeOptions};
use recovar_core::pipeline::load::PipelineResult;

use crate::common::{start_output_dir, DeviceArgs, ProgressBar};
use crate::kernel_args::KernelArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Output directory of `recovar pipeline`
    pub result_dir: PathBuf,
    /// Latent dimension to analyze (required when the pipeline computed several)
    #[arg(long)]
    pub zdim: Option<usize>,
    /// Output directory (default: result_dir/analysis_{zdim}[_noreg])
    #[arg(short = 'o', long = "outdir")]
    pub outdir: Option<PathBuf>,
    /// Number of k-means clusters
    #[arg(long = "n-clusters", default_value_t = 40)]
    n_clusters: usize,
    /// Number of trajectories between pairs of k-means centers (low-free-energy paths; see compute_trajectory)
    #[arg(long = "n-trajectories", default_value_t = 0)]
    n_trajectories: usize,
    /// Skip the 2-D UMAP embedding (slow for very large datasets)
    #[arg(long = "skip-umap")]
    skip_umap: bool,
    /// Skip the volumes at the k-means centers
    #[arg(long = "skip-centers")]
    skip_centers: bool,
    /// Divide each latent axis by its standard deviation before k-means
    #[arg(long = "normalize-kmeans")]
    normalize_kmeans: bool,
    /// Volumes along each trajectory
    #[arg(long = "n-vols-along-path", default_value_t = 6)]
    n_vols_along_path: usize,
    /// Use the unregularized embedding
    #[arg(long = "no-z-regularization")]
    no_z_regularization: bool,
    /// Deconvolved density (.pkl with 'density' and 'latent_space_bounds', e.g.
    /// density/deconv_density_knee.pkl from estimate_conformational_density): trajectories
    /// follow it and the density figures show it
    #[arg(long)]
    density: Option<PathBuf>,
    #[command(flatten)]
    kernel: KernelArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Args {
    /// Where the outputs (and run.log) go.
    pub fn log_dir(&self) -> PathBuf {
        if let Some(o) = &self.outdir {
            return o.clone();
        }
        let zdim = self.zdim.or_else(|| {
            PipelineResult::load(&self.result_dir)
                .ok()
                .and_then(|p| (p.zdims.len() == 1).then(|| p.zdims[0]))
        });
        match zdim {
            Some(z) => self.result_dir.join(format!(
                "analysis_{z}{}",
                if self.no_z_regularization {
                    "_noreg"
                } else {
                    ""
                }
            )),
            None => self.result_dir.clone(),
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.select()?;
    let pr = PipelineResult::load(&a.result_dir)?;
    let ds = pr.open_dataset(None, None)?;
    let kernel = a.kernel.options(&ds)?;
    drop(ds);
    let outdir = a.log_dir();
    start_output_dir(&outdir)?;
    let opts = AnalyzeOptions {
        result_dir: a.result_dir,
        zdim: a.zdim,
        outdir: Some(outdir),
        n_clusters: a.n_clusters,
        n_trajectories: a.n_trajectories,
        skip_umap: a.skip_umap,
        skip_centers: a.skip_centers,
        normalize_kmeans: a.normalize_kmeans,
        n_vols_along_path: a.n_vols_along_path,
        no_z_regularization: a.no_z_regularization,
        density: a.density,
        kernel,
        seed: 0,
    };
    let bar = ProgressBar::new("analyze");
    let s = run_analyze(&opts, &*device.backend, &bar)?;
    bar.finish();
    println!(
        "zdim {}: {} k-means clusters (sizes {:?}); {} volumes, {} trajectories",
        s.zdim, s.n_clusters, s.cluster_sizes, s.volumes, s.trajectories
    );
    println!("outputs in {}", s.outdir.display());
    Ok(())
}
