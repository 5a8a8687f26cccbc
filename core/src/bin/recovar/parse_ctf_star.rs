//! `recovar parse_ctf_star particles.star -o ctf.pkl [-D 300 --Apix 1.03 --kv --cs -w --ps]`
//!
//! RELION CTF columns (optics table first) → a cryoDRGN ctf.pkl (float32 N×9), as
//! `cryodrgn parse_ctf_star`. `-D` and `--Apix` are the box and pixel size of the images the
//! CTF was estimated on (before any downsampling).

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::dataset::{CtfTable, StarCtfOptions};
use recovar_core::io::star::StarFile;

use crate::common::{log_ctf_row, prepare_output, require_ext};

#[derive(clap::Args)]
pub struct Args {
    /// RELION .star file
    star: PathBuf,
    /// Output CTF parameters (.pkl)
    #[arg(short = 'o', value_name = "PKL")]
    out: PathBuf,
    /// Image size in pixels (overrides _rlnImageSize)
    #[arg(short = 'D')]
    d: Option<usize>,
    /// Pixel size in Å (overrides _rlnImagePixelSize)
    #[arg(long = "Apix")]
    apix: Option<f64>,
    /// Accelerating voltage in kV (overrides _rlnVoltage)
    #[arg(long)]
    kv: Option<f64>,
    /// Spherical aberration in mm (overrides _rlnSphericalAberration)
    #[arg(long)]
    cs: Option<f64>,
    /// Amplitude contrast ratio (overrides _rlnAmplitudeContrast)
    #[arg(short = 'w')]
    w: Option<f64>,
    /// Phase shift in degrees (overrides _rlnPhaseShift; 0 when the file has none)
    #[arg(long)]
    ps: Option<f64>,
}

pub fn run(a: Args) -> Result<()> {
    require_ext(&a.star, &["star"], "input")?;
    let out = prepare_output(&a.out, &["pkl"])?;
    let star = StarFile::read(&a.star)?;
    let ctf = CtfTable::from_star(
        &star,
        &a.star,
        &StarCtfOptions {
            box_size: a.d,
            apix: a.apix,
            voltage_kv: a.kv,
            cs_mm: a.cs,
            amp_contrast: a.w,
            phase_shift_deg: a.ps,
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
