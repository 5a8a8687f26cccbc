//! `recovar parse_pose_csparc particles.cs -o poses.pkl [--abinit] [--hetrefine] [-D 300]`
//!
//! cryoSPARC axis-angle poses and pixel shifts → a cryoDRGN poses.pkl (float32), exactly as
//! `cryodrgn parse_pose_csparc`.

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::dataset::{CsPoseOptions, PoseDtype, PoseTable};
use recovar_core::io::cs::CsFile;

use crate::common::{prepare_output, require_ext};

#[derive(clap::Args)]
pub struct Args {
    /// cryoSPARC .cs file
    input: PathBuf,
    /// Output poses (.pkl)
    #[arg(short = 'o', value_name = "PKL")]
    out: PathBuf,
    /// Results are from an ab-initio reconstruction (reads alignments_class_0/*)
    #[arg(long)]
    abinit: bool,
    /// Results are from a heterogeneous refinement (shifts are multiplied by 2)
    #[arg(long)]
    hetrefine: bool,
    /// Image size in pixels (used only when the file has no blob/shape)
    #[arg(short = 'D')]
    d: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    require_ext(&a.input, &["cs"], "input")?;
    let out = prepare_output(&a.out, &["pkl"])?;
    let cs = CsFile::read(&a.input)?;
    let poses = PoseTable::from_cs(
        &cs,
        &a.input,
        &CsPoseOptions {
            abinit: a.abinit,
            hetrefine: a.hetrefine,
            box_size: a.d,
        },
    )?;
    tracing::info!("{} particles", poses.len());
    poses.write_pickle(&out, PoseDtype::F32)?;
    tracing::info!("wrote {}", out.display());
    Ok(())
}
