//! `recovar generate_from_embedding particles --poses P --ctf C --embedding z.pkl --target t.txt
//!  -o out [--zdim1 --ind --n-bins --Bfactor ...]`
//!
//! Kernel-regression volumes from an embedding made by another method (e.g. cryoDRGN's
//! z.pkl), without a pipeline run: the noise is estimated from the images; every image gets
//! the identity precision (the embedding has no uncertainties) and contrast 1.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use recovar_core::dataset::{Dataset, DatasetOptions, Uninvert};
use recovar_core::generate::output::{generate_and_write, read_embedding, read_latent_points};
use recovar_core::generate::Latent;
use recovar_core::pipeline::load::estimate_noise_profile;
use recovar_core::pipeline::model::embedding_rows;
use recovar_core::reconstruct::noise::NoiseModel;
use recovar_core::Error;

use crate::common::{start_output_dir, DeviceArgs, ProgressBar};
use crate::kernel_args::{print_summaries, KernelArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Input particles (.mrcs, .star, .cs or .txt)
    particles: PathBuf,
    /// Output directory
    #[arg(short = 'o', long = "outdir")]
    pub outdir: PathBuf,
    /// Image poses (.pkl); taken from a .star/.cs particle file when omitted
    #[arg(long)]
    poses: Option<PathBuf>,
    /// CTF parameters (.pkl); taken from a .star/.cs particle file when omitted
    #[arg(long, value_name = "PKL")]
    ctf: Option<PathBuf>,
    /// Image embeddings: cryoDRGN z.pkl, .npy or .txt, one row per image (after --ind), or one per particle of the file
    #[arg(long)]
    embedding: PathBuf,
    /// Latent points at which to generate volumes (.txt)
    #[arg(long)]
    target: PathBuf,
    /// The target points are 1-D
    #[arg(long)]
    zdim1: bool,
    /// Check that the embedding has this dimension
    #[arg(long)]
    zdim: Option<usize>,
    /// Filter particles by these indices (.pkl)
    #[arg(long, value_name = "PKL")]
    ind: Option<PathBuf>,
    /// Invert data sign: true, false or automatic (flip if the mean's density is negative)
    #[arg(long = "uninvert-data", default_value = "automatic")]
    uninvert_data: String,
    /// Folder of the stacks named in a .star/.cs/.txt file
    #[arg(long)]
    datadir: Option<PathBuf>,
    /// Use only the first N images
    #[arg(long = "n-images")]
    n_images: Option<usize>,
    /// Halfsets (.pkl with two index arrays)
    #[arg(long)]
    halfsets: Option<PathBuf>,
    /// Noise model: radial (from outside the mask) or white
    #[arg(long = "noise-model", default_value = "radial")]
    noise_model: String,
    #[command(flatten)]
    kernel: KernelArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.select()?;
    start_output_dir(&a.outdir)?;
    let (values, _, zdim) = read_embedding(&a.embedding, a.zdim1)?;
    if let Some(z) = a.zdim {
        if z != zdim {
            bail!(
                "{}: the embedding has dimension {zdim}, not --zdim {z}",
                a.embedding.display()
            );
        }
    }
    let targets = read_latent_points(&a.target, a.zdim1)?;
    let mut ds = Dataset::open(&DatasetOptions {
        particles: a.particles,
        poses: a.poses,
        ctf: a.ctf,
        datadir: a.datadir,
        ind: a.ind,
        n_images: a.n_images,
        halfsets: a.halfsets,
        uninvert: a.uninvert_data.parse::<Uninvert>()?,
        require_poses: true,
        require_ctf: true,
        ..Default::default()
    })?;
    ds.check_images_readable()?;
    let (zs, _) = embedding_rows(&ds, &values, zdim, &[]).map_err(|e| {
        let hint = match e {
            Error::Inconsistent(_) => " (pass the same --ind the embedding was made with)",
            _ => "",
        };
        anyhow!("{}: {e}{hint}", a.embedding.display())
    })?;
    let backend = &*device.backend;
    let opts = a.kernel.options(&ds)?;
    let bar = ProgressBar::new("volumes");
    let noise = estimate_noise_profile(
        &mut ds,
        backend,
        a.noise_model.parse::<NoiseModel>()?,
        opts.batch_size,
        &bar,
    )?;
    tracing::info!(
        "{} target points; embedding of dimension {zdim} for {} images of {} px",
        targets.len(),
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
            precisions: &[],
        },
        &targets,
        &opts,
        &bar,
    )?;
    bar.finish();
    print_summaries(&a.outdir, &summaries);
    Ok(())
}
