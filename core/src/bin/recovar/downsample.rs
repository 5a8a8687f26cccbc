//! `recovar downsample particles.{mrcs,star,cs,txt} -D 128 -o particles.128.mrcs
//!  [--chunk 10000] [--datadir dir] [--ind ind.pkl] [-b 5000] [--is-vol]`
//!
//! Fourier-crops images (or a volume with `--is-vol`) as `cryodrgn downsample` does, so the
//! output can be used with the same poses.pkl and ctf.pkl. Output pixels are float32 and the
//! header carries the new pixel size `Apix·D/d` (also for volumes, where cryoDRGN writes 1).

use std::path::PathBuf;

use anyhow::{bail, Result};
use recovar_core::dataset::downsample::{
    downsample_stack, downsample_volume, downsampled_pixel_size, StackOutput,
};
use recovar_core::dataset::{read_index_file, ImageSource, ParticleMetadata};

use crate::common::{prepare_output, ProgressBar};

#[derive(clap::Args)]
pub struct Args {
    /// Input particles (.mrcs, .mrc, .star, .cs or .txt) or, with --is-vol, a volume (.mrc)
    input: PathBuf,
    /// New box size in pixels (even)
    #[arg(short = 'D')]
    d: usize,
    /// Output image stack (.mrcs) or volume (.mrc)
    #[arg(short = 'o', long = "outfile", value_name = "MRCS")]
    out: PathBuf,
    /// The input .mrc is a volume
    #[arg(long)]
    is_vol: bool,
    /// Split the output into files of this many images (out.0.mrcs, out.1.mrcs, ... and out.txt)
    #[arg(long)]
    chunk: Option<usize>,
    /// Folder of the stacks named in a .star/.cs/.txt file
    #[arg(long)]
    datadir: Option<PathBuf>,
    /// Keep only these particles (pickle of 0-based indices)
    #[arg(long, value_name = "PKL")]
    ind: Option<PathBuf>,
    /// Images processed per batch (bounds memory)
    #[arg(short = 'b', long = "batch-size", default_value_t = 5000)]
    batch_size: usize,
}

pub fn run(a: Args) -> Result<()> {
    if a.is_vol {
        if a.ind.is_some() || a.chunk.is_some() {
            bail!("--ind and --chunk apply to image stacks, not to a volume (--is-vol)");
        }
        let out = prepare_output(&a.out, &["mrc", "mrcs", "map"])?;
        downsample_volume(&a.input, a.d, &out)?;
        tracing::info!("wrote {}", out.display());
        return Ok(());
    }
    if a.chunk == Some(0) {
        bail!("--chunk must be at least 1");
    }
    let out = prepare_output(&a.out, &["mrcs", "mrc"])?;
    let (source, meta) = ImageSource::open(&a.input, a.datadir.as_deref())?;
    let ids: Vec<usize> = match &a.ind {
        Some(p) => read_index_file(p, source.len())?,
        None => (0..source.len()).collect(),
    };
    let (_, d_in) = source.image_shape();
    let apix_in = match &meta {
        ParticleMetadata::Star(star) => star
            .optics_values_f64("_rlnImagePixelSize")?
            .and_then(|v| v.first().copied()),
        ParticleMetadata::Cs(cs) => cs.pixel_sizes()?.and_then(|v| v.first().copied()),
        ParticleMetadata::None => None,
    }
    .or(source.header_voxel_size())
    .unwrap_or_else(|| {
        tracing::warn!("no pixel size in {}; assuming 1 Å/px", a.input.display());
        1.0
    });
    let apix_out = downsampled_pixel_size(apix_in, d_in, a.d);
    tracing::info!(
        "downsampling {} images {d_in}→{} px; pixel size {apix_in} → {apix_out} Å",
        ids.len(),
        a.d
    );
    let bar = ProgressBar::new("downsample");
    let written = downsample_stack(
        &source,
        &ids,
        a.d,
        apix_out,
        &StackOutput {
            path: out,
            chunk: a.chunk,
            batch_size: a.batch_size,
        },
        &bar,
    )?;
    bar.finish();
    for w in written {
        tracing::info!("wrote {}", w.display());
    }
    Ok(())
}
