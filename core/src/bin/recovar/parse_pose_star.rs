//! `recovar parse_pose_star particles.star -o poses.pkl [-D 300] [--Apix 1.03]`
//!
//! RELION Euler angles and origins → a cryoDRGN poses.pkl (float64 rotations and
//! translations as a fraction of the box), exactly as `cryodrgn parse_pose_star`.

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::dataset::{PoseDtype, PoseTable, StarPoseOptions};
use recovar_core::io::star::StarFile;

use crate::common::{prepare_output, require_ext};

#[derive(clap::Args)]
pub struct Args {
    /// RELION .star file
    input: PathBuf,
    /// Output poses (.pkl)
    #[arg(short = 'o', long = "outpkl", value_name = "PKL")]
    out: PathBuf,
    /// Box size of the reconstruction in pixels (overrides _rlnImageSize)
    #[arg(short = 'D')]
    d: Option<usize>,
    /// Pixel size in Å, to convert _rlnOriginX/YAngst (overrides _rlnImagePixelSize)
    #[arg(long = "Apix")]
    apix: Option<f64>,
}

pub fn run(a: Args) -> Result<()> {
    require_ext(&a.input, &["star"], "input")?;
    let out = prepare_output(&a.out, &["pkl"])?;
    let star = StarFile::read(&a.input)?;
    let poses = PoseTable::from_star(
        &star,
        &a.input,
        &StarPoseOptions {
            box_size: a.d,
            apix: a.apix,
        },
    )?;
    tracing::info!("{} particles", poses.len());
    if let Some(r) = poses.rotations.first() {
        tracing::info!("first rotation: {:?}", r);
    }
    poses.write_pickle(&out, PoseDtype::F64)?;
    tracing::info!("wrote {}", out.display());
    Ok(())
}
