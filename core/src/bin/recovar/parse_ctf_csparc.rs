//! `recovar parse_ctf_csparc particles.cs -o ctf.pkl [-D --Apix]`
//!
//! cryoSPARC `ctf/*` fields → a cryoDRGN ctf.pkl (float32 N×9; radians converted to
//! degrees), as `cryodrgn parse_ctf_csparc`.

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::dataset::{CsCtfOptions, CtfTable};
use recovar_core::io::cs::CsFile;

use crate::common::{log_ctf_row, prepare_output, require_ext};

#[derive(clap::Args)]
pub struct Args {
    /// cryoSPARC .cs file
    cs: PathBuf,
    /// Output CTF parameters (.pkl)
    #[arg(short = 'o', value_name = "PKL")]
    out: PathBuf,
    /// Image size in pixels (used only when the file has no blob/shape)
    #[arg(short = 'D')]
    d: Option<usize>,
    /// Pixel size in Å (used only when the file has no blob/psize_A)
    #[arg(long = "Apix")]
    apix: Option<f64>,
}

pub fn run(a: Args) -> Result<()> {
    require_ext(&a.cs, &["cs"], "input")?;
    let out = prepare_output(&a.out, &["pkl"])?;
    let cs = CsFile::read(&a.cs)?;
    let ctf = CtfTable::from_cs(
        &cs,
        &a.cs,
        &CsCtfOptions {
            box_size: a.d,
            apix: a.apix,
        },
    )?;
    tracing::info!("{} particles", ctf.len());
    if let Some(r) = ctf.rows.first() {
        log_ctf_row(r);
    }
    ctf.write_pickle(&out)?;
    tracing::info!("wrote {}", out.display());
    Ok(())
}
