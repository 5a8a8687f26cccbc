//! `recovar make_test_dataset <outdir> [--image-size 64 --n-images 1000 --noise-level 0.1
//!  --seed 0 --tilt-series --n-tilts 27]`
//!
//! Simulates a heterogeneous dataset with known answers into `<outdir>/test_dataset/` (the
//! Python tool's layout): three discrete states and one continuous hinge motion of a
//! synthetic molecule, uniform random poses, small shifts, defocus 15 000–30 000 Å at
//! 300 kV, per-image contrast 1 + 0.1·N(0,1) and radially coloured noise.

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::simulate::{write_test_dataset, SimulationOptions};

use crate::common::{DeviceArgs, ProgressBar};
use recovar_core::backend::Device;

#[derive(clap::Args)]
pub struct Args {
    /// Output folder; the dataset is written to <outdir>/test_dataset/
    #[arg(default_value = ".")]
    outdir: PathBuf,
    /// Image side in pixels (even)
    #[arg(long = "image-size", default_value_t = 64)]
    image_size: usize,
    /// Number of images (tilt series: particles × tilts)
    #[arg(long = "n-images", default_value_t = 1000)]
    n_images: usize,
    /// Noise level; the images' signal-to-noise ratio is 0.1 / noise-level
    #[arg(long = "noise-level", default_value_t = 0.1)]
    noise_level: f64,
    /// Seed of every random choice (poses, states, CTF, noise)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Simulate tilt series (cryo-ET): each particle seen at --n-tilts tilts
    #[arg(long = "tilt-series")]
    tilt_series: bool,
    /// Tilts per particle (with --tilt-series)
    #[arg(long = "n-tilts", alias = "ntilts", default_value_t = 27)]
    n_tilts: usize,
    /// Hold the hinged arm at rest: only the three discrete lid states vary
    #[arg(long = "discrete-only")]
    discrete_only: bool,
    /// Compute device: cpu (default, so that a seed gives the same bytes on every machine),
    /// auto, cuda (= cuda:0) or cuda:N; a GPU's projections agree with the CPU's to rounding
    #[arg(
        long,
        value_name = "cpu|auto|cuda[:N]",
        default_value = "cpu",
        value_parser = clap::value_parser!(Device)
    )]
    device: Device,
}

pub fn run(a: Args) -> Result<()> {
    let device = DeviceArgs { device: a.device }.select()?;
    let out = a.outdir.join("test_dataset");
    let opts = SimulationOptions {
        image_size: a.image_size,
        n_images: a.n_images,
        noise_level: a.noise_level,
        seed: a.seed,
        tilt_series: a.tilt_series,
        n_tilts: a.n_tilts,
        hinge: !a.discrete_only,
        ..Default::default()
    };
    let bar = ProgressBar::new("simulate");
    let written = write_test_dataset(&out, &opts, &*device.backend, &bar)?;
    bar.finish();
    tracing::info!(
        "simulated {} images (states 0/1/2: {}/{}/{}), SNR {:.3}",
        written.state_counts.iter().sum::<usize>(),
        written.state_counts[0],
        written.state_counts[1],
        written.state_counts[2],
        written.snr
    );
    for f in &written.files {
        println!("{}", f.display());
    }
    Ok(())
}
