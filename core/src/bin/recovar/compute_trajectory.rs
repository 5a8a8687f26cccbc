//! `recovar compute_trajectory result_dir -o out --zdim Z (--endpts f [--ind i,j] | --z_st a
//!  --z_end b) [--density d.pkl] [--n-vols-along-path 6] [--Bfactor ...]`
//!
//! A low-free-energy path between two latent points and kernel-regression volumes along it
//! (see `recovar_core::pipeline::trajectory`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use recovar_core::generate::output::read_latent_points;
use recovar_core::pipeline::load::PipelineResult;
use recovar_core::pipeline::trajectory::{run_compute_trajectory, ComputeTrajectoryOptions};

use crate::common::{start_output_dir, DeviceArgs, ProgressBar};
use crate::kernel_args::{print_summaries, KernelArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Output directory of `recovar pipeline`
    result_dir: PathBuf,
    /// Output directory
    #[arg(short = 'o', long = "outdir")]
    pub outdir: PathBuf,
    /// Latent dimension (must be one the pipeline computed; default: the only one)
    #[arg(long)]
    zdim: Option<usize>,
    /// Endpoints file (.txt, one point per line); the first two lines unless --ind says otherwise
    #[arg(long = "endpts")]
    endpts: Option<PathBuf>,
    /// Lines of --endpts to use as start and end, e.g. --ind 0,1
    #[arg(long, value_delimiter = ',')]
    ind: Option<Vec<usize>>,
    /// Start point file (.txt, one line)
    #[arg(long = "z_st", alias = "z-st")]
    z_st: Option<PathBuf>,
    /// End point file (.txt, one line)
    #[arg(long = "z_end", alias = "z-end")]
    z_end: Option<PathBuf>,
    /// Density (.pkl with 'density' and 'latent_space_bounds', e.g. density/deconv_density_knee.pkl);
    /// without it the path follows the embedding's own density, one axis at a time
    #[arg(long)]
    density: Option<PathBuf>,
    /// Volumes along the path (0: only the path)
    #[arg(long = "n-vols-along-path", default_value_t = 6)]
    n_vols_along_path: usize,
    /// The points are 1-D (every value in the files is one point)
    #[arg(long)]
    zdim1: bool,
    /// Use the unregularized embedding (the default here, as densities are estimated on it)
    #[arg(long = "no-z-regularization")]
    no_z_regularization: bool,
    /// Use the regularized embedding instead of the unregularized one
    #[arg(
        long = "override_z_regularization",
        alias = "override-z-regularization"
    )]
    override_z_regularization: bool,
    /// Particle stack to use instead of the pipeline's (e.g. a higher-resolution one of the same particles)
    #[arg(long)]
    particles: Option<PathBuf>,
    /// Folder of the stacks named in a .star/.cs/.txt given with --particles
    #[arg(long)]
    datadir: Option<PathBuf>,
    #[command(flatten)]
    kernel: KernelArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

fn one_point(path: &Path, zdim1: bool) -> Result<Vec<f32>> {
    let pts = read_latent_points(path, zdim1)?;
    match pts.as_slice() {
        [p] => Ok(p.clone()),
        _ => bail!(
            "{} holds {} points; it should hold exactly one",
            path.display(),
            pts.len()
        ),
    }
}

fn endpoints(a: &Args) -> Result<(Vec<f32>, Vec<f32>)> {
    match (&a.endpts, &a.z_st, &a.z_end) {
        (Some(f), None, None) => {
            let pts = read_latent_points(f, a.zdim1)?;
            let ind = a.ind.clone().unwrap_or_else(|| vec![0, 1]);
            let [i, j] = ind[..] else {
                bail!("--ind takes two line numbers (e.g. --ind 0,1), got {ind:?}");
            };
            let get = |k: usize| {
                pts.get(k).cloned().with_context(|| {
                    format!(
                        "--ind {k}: {} has only {} points (lines are numbered from 0)",
                        f.display(),
                        pts.len()
                    )
                })
            };
            Ok((get(i)?, get(j)?))
        }
        (None, Some(s), Some(e)) => {
            if a.ind.is_some() {
                bail!("--ind goes with --endpts, not with --z_st/--z_end");
            }
            Ok((one_point(s, a.zdim1)?, one_point(e, a.zdim1)?))
        }
        _ => bail!(
            "give the endpoints either with --endpts (and --ind) or with both --z_st and --z_end"
        ),
    }
}

pub fn run(a: Args) -> Result<()> {
    if a.no_z_regularization && a.override_z_regularization {
        bail!("--no-z-regularization and --override_z_regularization contradict each other");
    }
    let device = a.device.select()?;
    let (start, end) = endpoints(&a)?;
    let pr = PipelineResult::load(&a.result_dir)?;
    let zdim = match a.zdim {
        Some(z) => z,
        None => match pr.zdims.as_slice() {
            [z] => *z,
            many => bail!("choose the embedding with --zdim (the pipeline computed {many:?})"),
        },
    };
    let ds = pr.open_dataset(a.particles.as_deref(), a.datadir.as_deref())?;
    let kernel = a.kernel.options(&ds)?;
    drop(ds);
    start_output_dir(&a.outdir)?;
    for (what, p) in [("start", &start), ("end", &end)] {
        if p.len() != zdim {
            tracing::info!(
                "the {what} point has {} coordinates: {} to {zdim}",
                p.len(),
                if p.len() < zdim {
                    "padded with zeros"
                } else {
                    "truncated"
                }
            );
        }
    }
    let opts = ComputeTrajectoryOptions {
        result_dir: a.result_dir,
        outdir: a.outdir.clone(),
        zdim,
        start,
        end,
        density: a.density,
        n_vols_along_path: a.n_vols_along_path,
        regularized: a.override_z_regularization,
        particles: a.particles,
        datadir: a.datadir,
        kernel,
    };
    let bar = ProgressBar::new("trajectory");
    let s = run_compute_trajectory(&opts, &*device.backend, &bar)?;
    bar.finish();
    println!(
        "path of {} points; mean density along it {:.3} (straight segment {:.3})",
        s.path_points, s.mean_density_path, s.mean_density_segment
    );
    print_summaries(&a.outdir, &s.volumes);
    println!("path.json, density/ and volumes in {}", a.outdir.display());
    Ok(())
}
