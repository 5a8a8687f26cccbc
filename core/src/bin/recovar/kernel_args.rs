//! Flags shared by the commands that generate volumes by kernel regression.

use anyhow::{bail, Result};
use recovar_core::dataset::Dataset;
use recovar_core::generate::KernelOptions;

#[derive(clap::Args, Clone, Debug)]
pub struct KernelArgs {
    /// B-factor for sharpening locres_filtered.mrc (Å²); 0: no sharpening
    #[arg(long = "Bfactor", alias = "bfactor", default_value_t = 0.0)]
    pub bfactor: f64,
    /// Number of bins (candidate neighbourhood sizes) for kernel regression
    #[arg(long = "n-bins", default_value_t = 50)]
    pub n_bins: usize,
    /// Radius of the local windows: box side / this many voxels
    #[arg(long = "maskrad-fraction", default_value_t = 20.0)]
    pub maskrad_fraction: f64,
    /// Images in the smallest neighbourhood
    #[arg(
        long = "n-min-images",
        alias = "n-min-particles",
        default_value_t = 100
    )]
    pub n_min_images: usize,
    /// Stream images from disk (always on: images are read in batches)
    #[arg(long)]
    pub lazy: bool,
    /// Working memory for image batches, in GB (changes batch sizes, never results)
    #[arg(long = "memory-budget", default_value_t = 2.0)]
    pub memory_budget: f64,
}

impl KernelArgs {
    pub fn options(&self, ds: &Dataset) -> Result<KernelOptions> {
        if !(self.memory_budget.is_finite() && self.memory_budget > 0.0) {
            bail!("--memory-budget must be a positive number of GB");
        }
        if self.n_bins == 0 {
            bail!("--n-bins must be at least 1");
        }
        if !self.bfactor.is_finite() {
            bail!("--Bfactor must be a finite number");
        }
        let batch = KernelOptions::batch_size_for(
            ds.box_size(),
            ds.len(),
            (self.memory_budget * 1e9) as u64,
        );
        Ok(KernelOptions {
            n_bins: self.n_bins,
            maskrad_fraction: self.maskrad_fraction,
            n_min_images: self.n_min_images,
            bfactor: self.bfactor,
            batch_size: batch,
        })
    }
}

/// Print one line per generated volume.
pub fn print_summaries(
    outdir: &std::path::Path,
    s: &[recovar_core::generate::output::VolumeSummary],
) {
    for v in s {
        println!(
            "  vol{:04}: {} images nearest, {} within the widest bin, median local resolution {:.1} Å ({:.1} s)",
            v.index, v.images_nearest, v.images_used, v.median_local_resolution, v.seconds
        );
    }
    println!(
        "{} volumes in {} (filtered: all_volumes/vol****.mrc)",
        s.len(),
        outdir.display()
    );
}
