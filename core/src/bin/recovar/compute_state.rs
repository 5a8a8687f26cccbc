//! `recovar compute_state result_dir -o out --latent-points pts.txt [--zdim1] [--Bfactor B]
//!  [--n-bins 50] [--no-z-regularization] [--particles P --datadir D]`
//!
//! Kernel-regression volumes at given latent points, from a pipeline run.

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::generate::output::{generate_and_write, read_latent_points};
use recovar_core::generate::Latent;
use recovar_core::pipeline::load::PipelineResult;

use crate::common::{start_output_dir, DeviceArgs, ProgressBar};
use crate::kernel_args::{print_summaries, KernelArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Output directory of `recovar pipeline`
    result_dir: PathBuf,
    /// Output directory
    #[arg(short = 'o', long = "outdir")]
    pub outdir: PathBuf,
    /// Latent points (.txt readable by np.loadtxt): one point per line, zdim columns
    #[arg(long = "latent-points")]
    latent_points: PathBuf,
    /// The points are 1-D (every value in the file is one point)
    #[arg(long)]
    zdim1: bool,
    /// Use the unregularized embedding (zdim_{z}/latent_coords_noreg.npy)
    #[arg(long = "no-z-regularization")]
    no_z_regularization: bool,
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

pub fn run(a: Args) -> Result<()> {
    let device = a.device.select()?;
    start_output_dir(&a.outdir)?;
    let points = read_latent_points(&a.latent_points, a.zdim1)?;
    let zdim = points[0].len();
    let pr = PipelineResult::load(&a.result_dir)?;
    let emb = pr.embedding(zdim, a.no_z_regularization)?;
    let mut ds = pr.open_dataset(a.particles.as_deref(), a.datadir.as_deref())?;
    let opts = a.kernel.options(&ds)?;
    let backend = &*device.backend;
    let bar = ProgressBar::new("volumes");
    let noise = pr.noise_for(&mut ds, backend, opts.batch_size, &bar)?;
    let (zs, precisions, contrasts) = emb.for_dataset(&ds)?;
    ds.multiply_contrasts(&contrasts)?;
    tracing::info!(
        "{} latent points of dimension {zdim}; {} images of {} px",
        points.len(),
        ds.len(),
        ds.box_size()
    );
    let summaries = generate_and_write(
        &a.outdir,
        &ds,
        backend,
        &noise,
        Latent {
            zdim,
            zs: &zs,
            precisions: &precisions,
        },
        &points,
        &opts,
        &bar,
    )?;
    bar.finish();
    print_summaries(&a.outdir, &summaries);
    Ok(())
}
