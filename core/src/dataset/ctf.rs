//! CTF parameter tables in cryoDRGN's `ctf.pkl` layout, and their conversion from RELION
//! and cryoSPARC metadata.
//!
//! A table is N rows of 9 values: `D (px), Apix (Å/px), DefocusU (Å), DefocusV (Å),
//! DefocusAngle (°), Voltage (kV), Cs (mm), amplitude contrast w, phase shift (°)`. On disk
//! it is a float32 N×9 array. `D` and `Apix` describe the images the CTF was fitted on; when
//! the particle stack was downsampled, the pixel size of the stack is `D·Apix / D_stack`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::cs::CsFile;
use crate::io::pickle::{self, NdArray, PyValue};
use crate::io::star::StarFile;

/// Column names, in order, for messages and printing.
pub const CTF_COLUMNS: [&str; 9] = [
    "D (px)",
    "Apix (Å/px)",
    "DefocusU (Å)",
    "DefocusV (Å)",
    "DefocusAngle (°)",
    "Voltage (kV)",
    "Cs (mm)",
    "amplitude contrast",
    "phase shift (°)",
];

/// One CTF row per particle (cryoDRGN layout; see module docs). f64 in memory; written as
/// float32 like cryoDRGN.
#[derive(Clone, Debug, PartialEq)]
pub struct CtfTable {
    pub rows: Vec<[f64; 9]>,
}

/// Optional overrides of `parse_ctf_star` (cryoDRGN flags `-D --Apix --kv --cs -w --ps`).
#[derive(Clone, Debug, Default)]
pub struct StarCtfOptions {
    pub box_size: Option<usize>,
    pub apix: Option<f64>,
    pub voltage_kv: Option<f64>,
    pub cs_mm: Option<f64>,
    pub amp_contrast: Option<f64>,
    pub phase_shift_deg: Option<f64>,
}

/// Optional overrides of `parse_ctf_csparc` (`-D --Apix`, used when `blob/shape` or
/// `blob/psize_A` are missing).
#[derive(Clone, Debug, Default)]
pub struct CsCtfOptions {
    pub box_size: Option<usize>,
    pub apix: Option<f64>,
}

impl CtfTable {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// CTF parameters from a RELION .star file, as `cryodrgn parse_ctf_star`: optics-table
    /// values win over particle columns; overrides win over both. Unlike cryoDRGN, a missing
    /// `_rlnPhaseShift` is 0 (cryoDRGN silently writes NaN there), and any other missing
    /// field is an error that names the flag to supply it.
    pub fn from_star(star: &StarFile, path: &Path, opts: &StarCtfOptions) -> Result<Self> {
        let n = star.particles().map_err(|e| e.in_file(path))?.n_rows();
        let field = |name: &str| -> Result<Option<Vec<f64>>> {
            star.optics_values_f64(name).map_err(|e| e.in_file(path))
        };
        let need = |name: &str, flag: &str| -> Result<Vec<f64>> {
            field(name)?.ok_or_else(|| {
                Error::format(path, format!("no {name} in the file: give it with {flag}"))
            })
        };
        let or_override = |over: Option<f64>, name: &str, flag: &str| -> Result<Vec<f64>> {
            match over {
                Some(v) => Ok(vec![v; n]),
                None => need(name, flag),
            }
        };
        // cryoDRGN reads the file's D and Apix as float32 (D then truncated to an integer).
        let d = match opts.box_size {
            Some(d) => vec![d as f64; n],
            None => need("_rlnImageSize", "-D")?
                .iter()
                .map(|&x| (x as f32).trunc() as f64)
                .collect(),
        };
        let apix = match opts.apix {
            Some(a) => vec![a; n],
            None => need("_rlnImagePixelSize", "--Apix")?
                .iter()
                .map(|&x| x as f32 as f64)
                .collect(),
        };
        let dfu = need("_rlnDefocusU", "a _rlnDefocusU column")?;
        let dfv = need("_rlnDefocusV", "a _rlnDefocusV column")?;
        let dfang = need("_rlnDefocusAngle", "a _rlnDefocusAngle column")?;
        let kv = or_override(opts.voltage_kv, "_rlnVoltage", "--kv")?;
        let cs = or_override(opts.cs_mm, "_rlnSphericalAberration", "--cs")?;
        let w = or_override(opts.amp_contrast, "_rlnAmplitudeContrast", "-w")?;
        let ps = match opts.phase_shift_deg {
            Some(v) => vec![v; n],
            None => match field("_rlnPhaseShift")? {
                Some(v) => v,
                None => {
                    tracing::info!("{}: no _rlnPhaseShift; using 0°", path.display());
                    vec![0.0; n]
                }
            },
        };
        let rows = (0..n)
            .map(|i| {
                [
                    d[i], apix[i], dfu[i], dfv[i], dfang[i], kv[i], cs[i], w[i], ps[i],
                ]
            })
            .collect();
        let t = CtfTable { rows };
        t.validate(path)?;
        Ok(t)
    }

    /// CTF parameters from a cryoSPARC .cs file, as `cryodrgn parse_ctf_csparc` (radians
    /// converted to degrees).
    pub fn from_cs(cs: &CsFile, path: &Path, opts: &CsCtfOptions) -> Result<Self> {
        let n = cs.len();
        let arr = cs.array();
        let shape = cs.blob_shape().map_err(|e| e.in_file(path))?;
        let psize = cs.pixel_sizes().map_err(|e| e.in_file(path))?;
        let (d, apix): (Vec<f64>, Vec<f64>) = match (shape, psize) {
            (Some(s), Some(p)) if !s.is_empty() => (vec![s[0][0] as f64; n], p),
            _ => {
                let d = opts.box_size.ok_or_else(|| {
                    Error::format(path, "no blob/shape in the file: give the box size with -D")
                })?;
                let a = opts.apix.ok_or_else(|| {
                    Error::format(
                        path,
                        "no blob/psize_A in the file: give the pixel size with --Apix",
                    )
                })?;
                (vec![d as f64; n], vec![a; n])
            }
        };
        let get =
            |name: &str| -> Result<Vec<f64>> { arr.field_f64(name).map_err(|e| e.in_file(path)) };
        let deg = |v: Vec<f64>| -> Vec<f64> {
            v.iter().map(|x| x * 180.0 / std::f64::consts::PI).collect()
        };
        let dfu = get("ctf/df1_A")?;
        let dfv = get("ctf/df2_A")?;
        let ang = deg(get("ctf/df_angle_rad")?);
        let kv = get("ctf/accel_kv")?;
        let csmm = get("ctf/cs_mm")?;
        let w = get("ctf/amp_contrast")?;
        let ps = deg(get("ctf/phase_shift_rad")?);
        let rows = (0..n)
            .map(|i| {
                [
                    d[i], apix[i], dfu[i], dfv[i], ang[i], kv[i], csmm[i], w[i], ps[i],
                ]
            })
            .collect();
        let t = CtfTable { rows };
        t.validate(path)?;
        Ok(t)
    }

    /// Read a cryoDRGN ctf.pkl (an N×9 float array).
    pub fn read_pickle(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let value = pickle::load(path)?;
        let arr = match &value {
            PyValue::Array(a) => a,
            other => {
                return Err(Error::format(
                    path,
                    format!(
                        "expected a CTF pickle: an N×9 numpy array; found a {}",
                        other.type_name()
                    ),
                ))
            }
        };
        if arr.ndim() != 2 || arr.shape()[1] != 9 {
            return Err(Error::format(
                path,
                format!(
                    "expected a CTF pickle: an N×9 array (D, Apix, dfU, dfV, dfang, kV, Cs, w, \
                     phase shift); found shape {:?}",
                    arr.shape()
                ),
            ));
        }
        let rows = arr
            .to_f64_vec()
            .chunks_exact(9)
            .map(|c| {
                let mut r = [0.0; 9];
                r.copy_from_slice(c);
                r
            })
            .collect();
        let t = CtfTable { rows };
        t.validate(path)?;
        Ok(t)
    }

    /// Write as cryoDRGN does: a float32 N×9 array.
    pub fn write_pickle(&self, path: impl AsRef<Path>) -> Result<()> {
        let data: Vec<f32> = self.rows.iter().flatten().map(|&v| v as f32).collect();
        let arr = NdArray::from_f32(vec![self.len(), 9], data)?;
        pickle::dump(path, &PyValue::Array(arr))
    }

    /// Every value finite; D and Apix positive; voltage positive; |w| ≤ 1.
    pub fn validate(&self, path: &Path) -> Result<()> {
        for (i, r) in self.rows.iter().enumerate() {
            for (j, v) in r.iter().enumerate() {
                if !v.is_finite() {
                    return Err(Error::format(
                        path,
                        format!(
                            "CTF row {i} (0-based), column {j} ({}) is {v}: every CTF value \
                             must be a finite number",
                            CTF_COLUMNS[j]
                        ),
                    ));
                }
            }
            let bad = |j: usize, why: &str| {
                Err(Error::format(
                    path,
                    format!(
                        "CTF row {i} (0-based), column {j} ({}) = {}: {why}",
                        CTF_COLUMNS[j], r[j]
                    ),
                ))
            };
            if r[0] <= 0.0 {
                return bad(0, "the image size must be positive");
            }
            if r[1] <= 0.0 {
                return bad(1, "the pixel size must be positive");
            }
            if r[5] <= 0.0 {
                return bad(5, "the voltage must be positive");
            }
            if !(0.0..=1.0).contains(&r[7].abs()) {
                return bad(7, "the amplitude contrast must be between -1 and 1");
            }
        }
        Ok(())
    }
}
