//! `recovar pipeline particles -o out --poses poses.pkl --ctf ctf.pkl [--mask M] [--zdim 1,2,4,10,20]
//!  [--correct-contrast] [--only-mean] ...`
//!
//! Arguments turned into [`recovar_core::pipeline::run_pipeline`]; outputs in the Python
//! tool's layout (see the library docs).

use std::path::PathBuf;

use anyhow::{bail, Result};
use recovar_core::dataset::{DatasetOptions, Uninvert};
use recovar_core::heterogeneity::CovarianceOptions;
use recovar_core::pipeline::{run_pipeline, PipelineOptions};
use recovar_core::reconstruct::mask::{MaskOption, MaskSettings};
use recovar_core::reconstruct::mean::MeanFn;
use recovar_core::reconstruct::noise::NoiseModel;

use crate::common::{DeviceArgs, ProgressBar};

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
    /// Solvent mask: a .mrc file, or from_halfmaps, sphere, none
    #[arg(long, default_value = "from_halfmaps")]
    mask: String,
    /// Focus mask (.mrc)
    #[arg(long = "focus-mask", alias = "focus_mask")]
    focus_mask: Option<PathBuf>,
    /// Dilate the solvent and focus masks this many times before softening
    #[arg(
        long = "mask-dilate-iter",
        alias = "dilate-mask-iter",
        default_value_t = 0
    )]
    mask_dilate_iter: usize,
    /// Compute only the mean, masks and noise model
    #[arg(long = "only-mean")]
    only_mean: bool,
    /// Latent dimensions to embed, comma-separated
    #[arg(long, default_value = "1,2,4,10,20", value_delimiter = ',')]
    zdim: Vec<usize>,
    /// Estimate and correct per-image amplitude (contrast) variation; runs the pipeline twice
    #[arg(long = "correct-contrast")]
    correct_contrast: bool,
    /// With --correct-contrast: run again once contrast is estimated (the default; accepted for compatibility)
    #[arg(long = "do-over-with-contrast")]
    do_over_with_contrast: bool,
    /// Ignore the zero frequency (multiply its noise variance by 1e16): for images normalized to zero mean
    #[arg(long = "ignore-zero-frequency")]
    ignore_zero_frequency: bool,
    /// Fewer covariance columns (50), sketch 100, 100 PCs
    #[arg(long = "low-memory-option")]
    low_memory_option: bool,
    /// Fewest covariance columns (25), sketch 35, 30 PCs
    #[arg(long = "very-low-memory-option")]
    very_low_memory_option: bool,
    /// Do not mask images with the projected dilated mask in the covariance estimation
    #[arg(long = "dont-use-image-mask")]
    dont_use_image_mask: bool,
    /// Also save the covariance columns (model/covariance_cols.pkl and .npy)
    #[arg(long = "keep-intermediate")]
    keep_intermediate: bool,
    /// Filter particles by these indices (.pkl)
    #[arg(long, value_name = "PKL")]
    ind: Option<PathBuf>,
    /// Invert data sign: true, false or automatic (flip if the mean's density is negative)
    #[arg(long = "uninvert-data", default_value = "automatic")]
    uninvert_data: String,
    /// Stream images from disk (always on: images are read in batches)
    #[arg(long)]
    lazy: bool,
    /// Folder of the stacks named in a .star/.cs/.txt file
    #[arg(long)]
    datadir: Option<PathBuf>,
    /// Use only the first N images
    #[arg(long = "n-images")]
    n_images: Option<usize>,
    /// Halfsets (.pkl with two index arrays)
    #[arg(long)]
    halfsets: Option<PathBuf>,
    /// Noise model: radial or white
    #[arg(long = "noise-model", default_value = "radial")]
    noise_model: String,
    /// Mean: triangular (average of unregularized halves) or triangular_reg
    #[arg(long = "mean-fn", default_value = "triangular")]
    mean_fn: String,
    /// Working memory for image batches, in GB (changes batch sizes, never results)
    #[arg(long = "memory-budget", default_value_t = 2.0)]
    memory_budget: f64,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(a: Args) -> Result<()> {
    if a.do_over_with_contrast && !a.correct_contrast {
        bail!("--do-over-with-contrast needs --correct-contrast");
    }
    if a.low_memory_option && a.very_low_memory_option {
        bail!("give at most one of --low-memory-option and --very-low-memory-option");
    }
    let mut covariance = if a.very_low_memory_option {
        CovarianceOptions::very_low_memory()
    } else if a.low_memory_option {
        CovarianceOptions::low_memory()
    } else {
        CovarianceOptions::default()
    };
    covariance.mask_images = !a.dont_use_image_mask;
    if !(a.memory_budget.is_finite() && a.memory_budget > 0.0) {
        bail!("--memory-budget must be a positive number of GB");
    }
    let device = a.device.select()?;
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let opts = PipelineOptions {
        dataset: DatasetOptions {
            particles: a.particles,
            poses: a.poses,
            ctf: a.ctf,
            datadir: a.datadir,
            ind: a.ind,
            n_images: a.n_images,
            halfsets: a.halfsets,
            uninvert: a.uninvert_data.parse::<Uninvert>()?,
            ..Default::default()
        },
        outdir: a.outdir,
        mask: a.mask.parse::<MaskOption>()?,
        mask_settings: MaskSettings {
            mask_dilate_iter: a.mask_dilate_iter,
            ..Default::default()
        },
        focus_mask: a.focus_mask,
        noise_model: a.noise_model.parse::<NoiseModel>()?,
        mean_fn: a.mean_fn.parse::<MeanFn>()?,
        only_mean: a.only_mean,
        zdims: a.zdim,
        correct_contrast: a.correct_contrast,
        ignore_zero_frequency: a.ignore_zero_frequency,
        covariance,
        keep_intermediate: a.keep_intermediate,
        memory_budget: (a.memory_budget * 1e9) as u64,
        seed: 0,
        command_line,
    };
    let bar = ProgressBar::new("pipeline");
    let summary = run_pipeline(&opts, &*device.backend, &bar)?;
    bar.finish();
    println!(
        "{} images, {}px at {:.3} Å: half-map FSC resolution {:.2} Å (0.5), {:.2} Å (0.143){}",
        summary.n_images,
        summary.box_size,
        summary.voxel_size,
        summary.resolution.at_0_5,
        summary.resolution.at_0_143,
        if summary.flipped {
            "; data sign flipped"
        } else {
            ""
        }
    );
    if !summary.eigenvalues.is_empty() {
        let top: Vec<String> = summary
            .eigenvalues
            .iter()
            .take(5)
            .map(|v| format!("{v:.3e}"))
            .collect();
        println!(
            "{} principal components; top eigenvalues {}",
            summary.eigenvalues.len(),
            top.join(", ")
        );
    }
    if !summary.resumed.is_empty() {
        println!("resumed from checkpoints: {}", summary.resumed.join(", "));
    }
    for t in &summary.timings {
        println!(
            "  {:<18} {:>8.2} s{}",
            t.name,
            t.wall_seconds,
            t.peak_rss_mib
                .map(|m| format!("  peak {m:.0} MiB"))
                .unwrap_or_default()
        );
    }
    println!("outputs in {}", opts.outdir.display());
    Ok(())
}
