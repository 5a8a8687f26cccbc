//! `recovar info particles [--poses poses.pkl --ctf ctf.pkl --ind ind.pkl --datadir dir]`
//!
//! Prints the number of images, box and pixel size, CTF ranges, shifts and how well the
//! viewing directions cover the sphere; fails with a clear message when the parts do not
//! agree (counts differ, NaN in the CTF, odd box, missing stack, ...).

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::dataset::{Dataset, DatasetOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Particles (.mrcs, .star, .cs or .txt)
    particles: PathBuf,
    /// Image poses (.pkl); taken from a .star/.cs particle file when omitted
    #[arg(long)]
    poses: Option<PathBuf>,
    /// CTF parameters (.pkl); taken from a .star/.cs particle file when omitted
    #[arg(long, value_name = "PKL")]
    ctf: Option<PathBuf>,
    /// Keep only these particles (pickle of 0-based indices)
    #[arg(long, value_name = "PKL")]
    ind: Option<PathBuf>,
    /// Folder of the stacks named in a .star/.cs/.txt file
    #[arg(long)]
    datadir: Option<PathBuf>,
    /// Use only the first N images
    #[arg(long = "n-images")]
    n_images: Option<usize>,
    /// Halfsets (.pkl with two index arrays)
    #[arg(long)]
    halfsets: Option<PathBuf>,
    /// Read one image per stack to check the data are readable and finite
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    check_images: bool,
}

pub fn run(a: Args) -> Result<()> {
    let ds = Dataset::open(&DatasetOptions {
        particles: a.particles,
        poses: a.poses,
        ctf: a.ctf,
        datadir: a.datadir,
        ind: a.ind,
        n_images: a.n_images,
        halfsets: a.halfsets,
        ..Default::default()
    })?;
    if a.check_images {
        ds.check_images_readable()?;
    }
    print!("{}", ds.summary());
    Ok(())
}
