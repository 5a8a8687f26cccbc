//! Particle poses: rotation matrices and in-plane translations, and their conversion from
//! RELION and cryoSPARC metadata.
//!
//! Conventions (the ones that bite, stated once):
//! - **Rotations** are 3×3 matrices in **cryoDRGN's convention**, stored row-major. An image
//!   pixel at 2-D frequency `(k0, k1)` (column, row) lies at `[k0, k1, 0] · R` in the volume's
//!   Fourier space, so the projection (viewing) direction is the third row of `R`.
//! - From RELION Euler angles (rot, tilt, psi in degrees): `R = A(psi)ᵀ · B(tilt)ᵀ · A(rot)ᵀ`
//!   with `A(x) = [[cos x, −sin x, 0], [sin x, cos x, 0], [0, 0, 1]]` and
//!   `B(x) = [[cos x, 0, −sin x], [0, 1, 0], [sin x, 0, cos x]]`, then the signs of
//!   `R[0,2], R[2,0], R[1,2], R[2,1]` flipped (cryoDRGN `utils.R_from_relion`). This is not
//!   the plain ZYZ matrix.
//! - From cryoSPARC: `alignments3D/pose` is an axis-angle vector; Rodrigues' formula gives a
//!   matrix, which is then **transposed** (cryoDRGN `parse_pose_csparc`).
//! - **Translations in poses.pkl are a fraction of the box** (pixels / D), so they survive
//!   downsampling; the dataset multiplies them by the current box size to get pixels. RELION
//!   `_rlnOriginX/Y` are pixels, `_rlnOriginX/YAngst` are Å (divided by the pixel size); no
//!   sign flip. cryoSPARC `alignments3D/shift` is in pixels (×2 with `--hetrefine`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::cs::CsFile;
use crate::io::pickle::{self, NdArray, PyValue};
use crate::io::star::StarFile;

/// Rotations (cryoDRGN convention) and translations as a fraction of the box, as stored in
/// a cryoDRGN `poses.pkl`. Values are f64 here; [`PoseTable::write_pickle`] chooses the
/// on-disk dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct PoseTable {
    /// Row-major 3×3 rotation matrices.
    pub rotations: Vec<[f64; 9]>,
    /// In-plane shifts `(x, y)` as a fraction of the box size. `None` for a rotations-only
    /// file (`(rot,)` or a bare array), which means zero shifts.
    pub translations: Option<Vec<[f64; 2]>>,
}

/// Numeric type of the arrays written to a poses.pkl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoseDtype {
    /// float32, as `parse_pose_csparc` writes.
    F32,
    /// float64, as `parse_pose_star` writes.
    F64,
}

/// Rotation matrix from RELION Euler angles in degrees (see the module docs).
pub fn rotation_from_relion(rot_deg: f64, tilt_deg: f64, psi_deg: f64) -> [f64; 9] {
    let (sa, ca) = rot_deg.to_radians().sin_cos();
    let (sb, cb) = tilt_deg.to_radians().sin_cos();
    let (sy, cy) = psi_deg.to_radians().sin_cos();
    // Transposes of A(rot), B(tilt), A(psi).
    let at = [[ca, sa, 0.0], [-sa, ca, 0.0], [0.0, 0.0, 1.0]];
    let bt = [[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]];
    let yt = [[cy, sy, 0.0], [-sy, cy, 0.0], [0.0, 0.0, 1.0]];
    let m = matmul3(&matmul3(&yt, &bt), &at);
    let mut r = [0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            r[3 * i + j] = m[i][j];
        }
    }
    for k in [2, 6, 5, 7] {
        r[k] = -r[k];
    }
    r
}

/// RELION Euler angles (rot, tilt, psi) in degrees for a cryoDRGN rotation matrix: the
/// inverse of [`rotation_from_relion`] (tilt in [0, 180]; when tilt is 0 or 180, psi is 0).
///
/// Undoing the sign flips gives `G = Rz(rot)·Ry(−tilt)·Rz(psi)` (transposed); its third
/// column is `(−sin t·cos r, −sin t·sin r, cos t)` and its third row
/// `(sin t·cos p, −sin t·sin p, cos t)`.
pub fn relion_from_rotation(r: &[f64; 9]) -> (f64, f64, f64) {
    // M = R with the four signs flipped back; G = Mᵀ.
    let mut m = *r;
    for k in [2, 6, 5, 7] {
        m[k] = -m[k];
    }
    let g = |i: usize, j: usize| m[3 * j + i];
    let tilt = g(2, 2).clamp(-1.0, 1.0).acos();
    let (rot, psi) = if tilt.sin().abs() > 1e-9 {
        ((-g(1, 2)).atan2(-g(0, 2)), (-g(2, 1)).atan2(g(2, 0)))
    } else {
        // Gimbal lock: only rot ± psi is defined; put it all in rot. With psi = 0,
        // G = Rz(rot)·Ry(−tilt) has G00 = cos rot·cos tilt and G10 = sin rot·cos tilt.
        let sign = tilt.cos().signum();
        ((g(1, 0) * sign).atan2(g(0, 0) * sign), 0.0)
    };
    (rot.to_degrees(), tilt.to_degrees(), psi.to_degrees())
}

/// Rotation matrix from a cryoSPARC axis-angle vector (Rodrigues, then transposed).
/// A zero vector gives the identity (cryoDRGN would produce NaN there).
pub fn rotation_from_cryosparc(v: [f64; 3]) -> [f64; 9] {
    let theta = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if theta == 0.0 {
        return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    }
    let (x, y, z) = (v[0] / theta, v[1] / theta, v[2] / theta);
    // K = hat(axis); R = I + sinθ K + (1 − cosθ) K².
    let k = [[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]];
    let k2 = matmul3(&k, &k);
    let (s, c) = theta.sin_cos();
    let mut r = [0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            let id = if i == j { 1.0 } else { 0.0 };
            // transposed: element (j, i)
            r[3 * j + i] = id + s * k[i][j] + (1.0 - c) * k2[i][j];
        }
    }
    r
}

fn matmul3(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut c = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

/// Options of `parse_pose_star` (cryoDRGN's flags).
#[derive(Clone, Debug, Default)]
pub struct StarPoseOptions {
    /// `-D`: box size of the refinement, overriding `_rlnImageSize`.
    pub box_size: Option<usize>,
    /// `--Apix`: pixel size, overriding `_rlnImagePixelSize` (needed for `_rlnOriginXAngst`).
    pub apix: Option<f64>,
}

/// Options of `parse_pose_csparc` (cryoDRGN's flags).
#[derive(Clone, Debug, Default)]
pub struct CsPoseOptions {
    /// `--abinit`: read `alignments_class_0/*` instead of `alignments3D/*`.
    pub abinit: bool,
    /// `--hetrefine`: shifts are in half-size pixels; multiply by 2.
    pub hetrefine: bool,
    /// `-D`: box size, used only when the file has no `blob/shape`.
    pub box_size: Option<usize>,
}

impl PoseTable {
    /// Number of poses.
    pub fn len(&self) -> usize {
        self.rotations.len()
    }

    /// True when there are no poses.
    pub fn is_empty(&self) -> bool {
        self.rotations.is_empty()
    }

    /// Poses from a RELION .star file, exactly as `cryodrgn parse_pose_star`.
    pub fn from_star(star: &StarFile, path: &Path, opts: &StarPoseOptions) -> Result<Self> {
        let table = star.particles().map_err(|e| e.in_file(path))?;
        let n = table.n_rows();
        let col = |name: &str| -> Result<Vec<f64>> {
            table
                .column_f64(name)
                .map_err(|e| e.in_file(path))?
                .ok_or_else(|| {
                    Error::format(
                        path,
                        format!(
                            "particle table `{}` has no column {name}; poses need \
                             _rlnAngleRot, _rlnAngleTilt and _rlnAnglePsi",
                            table.name()
                        ),
                    )
                })
        };
        let (rot, tilt, psi) = (
            col("_rlnAngleRot")?,
            col("_rlnAngleTilt")?,
            col("_rlnAnglePsi")?,
        );
        let rotations: Vec<[f64; 9]> = (0..n)
            .map(|i| rotation_from_relion(rot[i], tilt[i], psi[i]))
            .collect();

        // Box size per particle: -D, else _rlnImageSize (read as float32 then truncated to
        // an integer, as cryoDRGN does).
        let boxes: Vec<f64> = match opts.box_size {
            Some(d) => vec![d as f64; n],
            None => star
                .optics_values_f64("_rlnImageSize")
                .map_err(|e| e.in_file(path))?
                .map(|v| v.iter().map(|&x| (x as f32).trunc() as f64).collect())
                .ok_or_else(|| {
                    Error::format(
                        path,
                        "no _rlnImageSize in the file: give the refinement box size with -D",
                    )
                })?,
        };

        let has = |name: &str| table.has_column(name);
        let mut trans = vec![[0.0f64; 2]; n];
        if has("_rlnOriginX") && has("_rlnOriginY") {
            let (x, y) = (col("_rlnOriginX")?, col("_rlnOriginY")?);
            for i in 0..n {
                trans[i] = [x[i], y[i]];
            }
        } else if has("_rlnOriginXAngst") && has("_rlnOriginYAngst") {
            let apix: Vec<f64> = match opts.apix {
                Some(a) => vec![a; n],
                // cryoDRGN reads the file's pixel size as float32.
                None => star
                    .optics_values_f64("_rlnImagePixelSize")
                    .map_err(|e| e.in_file(path))?
                    .map(|v| v.iter().map(|&x| x as f32 as f64).collect())
                    .ok_or_else(|| {
                        Error::format(
                            path,
                            "translations are in Å (_rlnOriginXAngst) but the file has no \
                             _rlnImagePixelSize: give the pixel size with --Apix",
                        )
                    })?,
            };
            let (x, y) = (col("_rlnOriginXAngst")?, col("_rlnOriginYAngst")?);
            for i in 0..n {
                trans[i] = [x[i] / apix[i], y[i] / apix[i]];
            }
        } else {
            tracing::warn!(
                "{}: neither _rlnOriginX/Y nor _rlnOriginX/YAngst found; translations are 0",
                path.display()
            );
        }
        for i in 0..n {
            if boxes[i] <= 0.0 {
                return Err(Error::format(
                    path,
                    format!("particle {}: box size {} is not positive", i + 1, boxes[i]),
                ));
            }
            trans[i][0] /= boxes[i];
            trans[i][1] /= boxes[i];
        }
        let table = PoseTable {
            rotations,
            translations: Some(trans),
        };
        table.validate(path)?;
        Ok(table)
    }

    /// Poses from a cryoSPARC .cs file, exactly as `cryodrgn parse_pose_csparc`.
    pub fn from_cs(cs: &CsFile, path: &Path, opts: &CsPoseOptions) -> Result<Self> {
        let (rkey, tkey) = if opts.abinit {
            ("alignments_class_0/pose", "alignments_class_0/shift")
        } else {
            ("alignments3D/pose", "alignments3D/shift")
        };
        let poses = cs.poses(rkey).map_err(|e| e.in_file(path))?;
        let shifts = cs.shifts(tkey).map_err(|e| e.in_file(path))?;
        // Box size: blob/shape[0][0] when present (-D is ignored then, as in cryoDRGN).
        let d = match cs.blob_shape().map_err(|e| e.in_file(path))? {
            Some(shapes) if !shapes.is_empty() => shapes[0][0] as f64,
            _ => opts.box_size.map(|d| d as f64).ok_or_else(|| {
                Error::format(path, "no blob/shape in the file: give the box size with -D")
            })?,
        };
        if d <= 0.0 {
            return Err(Error::format(path, format!("box size {d} is not positive")));
        }
        let scale = if opts.hetrefine { 2.0 } else { 1.0 };
        let table = PoseTable {
            rotations: poses.iter().map(|&v| rotation_from_cryosparc(v)).collect(),
            translations: Some(
                shifts
                    .iter()
                    .map(|s| [s[0] * scale / d, s[1] * scale / d])
                    .collect(),
            ),
        };
        table.validate(path)?;
        Ok(table)
    }

    /// Read a cryoDRGN poses.pkl: a tuple `(rot, trans)`, a tuple `(rot,)`, or a bare
    /// `rot` array (N×3×3, any float dtype).
    pub fn read_pickle(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let value = pickle::load(path)?;
        let bad = |msg: String| Error::format(path, msg);
        let (rot, trans) = match &value {
            PyValue::Tuple(items) | PyValue::List(items) => match items.as_slice() {
                [r] => (r, None),
                [r, t] => (r, Some(t)),
                _ => {
                    return Err(bad(format!(
                        "expected a poses pickle: a tuple (rotations N×3×3, translations N×2); \
                         found a tuple of {} items",
                        items.len()
                    )))
                }
            },
            v @ PyValue::Array(_) => (v, None),
            other => {
                return Err(bad(format!(
                    "expected a poses pickle: a tuple (rotations N×3×3, translations N×2); \
                     found a {}",
                    other.type_name()
                )))
            }
        };
        let rot = float_array(rot, "rotations", path)?;
        if rot.ndim() != 3 || rot.shape()[1..] != [3, 3] {
            return Err(bad(format!(
                "rotations must have shape (N, 3, 3); found {:?}",
                rot.shape()
            )));
        }
        let n = rot.shape()[0];
        let rv = rot.to_f64_vec();
        let rotations = rv
            .chunks_exact(9)
            .map(|c| {
                let mut m = [0.0; 9];
                m.copy_from_slice(c);
                m
            })
            .collect();
        let translations = match trans {
            None => None,
            Some(t) => {
                let t = float_array(t, "translations", path)?;
                if t.shape() != [n, 2] {
                    return Err(bad(format!(
                        "translations must have shape ({n}, 2) to match {n} rotations; found {:?}",
                        t.shape()
                    )));
                }
                Some(
                    t.to_f64_vec()
                        .chunks_exact(2)
                        .map(|c| [c[0], c[1]])
                        .collect(),
                )
            }
        };
        let table = PoseTable {
            rotations,
            translations,
        };
        table.validate(path)?;
        Ok(table)
    }

    /// Write a cryoDRGN poses.pkl: tuple `(rot N×3×3, trans N×2)` in the given dtype.
    pub fn write_pickle(&self, path: impl AsRef<Path>, dtype: PoseDtype) -> Result<()> {
        let n = self.len();
        let rot: Vec<f64> = self.rotations.iter().flatten().copied().collect();
        let trans: Vec<f64> = match &self.translations {
            Some(t) => t.iter().flatten().copied().collect(),
            None => vec![0.0; 2 * n],
        };
        let arr = |shape: Vec<usize>, v: Vec<f64>| -> Result<PyValue> {
            Ok(PyValue::Array(match dtype {
                PoseDtype::F64 => NdArray::from_f64(shape, v)?,
                PoseDtype::F32 => NdArray::from_f32(shape, v.iter().map(|&x| x as f32).collect())?,
            }))
        };
        let value = PyValue::Tuple(vec![arr(vec![n, 3, 3], rot)?, arr(vec![n, 2], trans)?]);
        pickle::dump(path, &value)
    }

    /// Check every value is finite, every matrix is a rotation, and translations are a
    /// fraction of the box (cryoDRGN rejects |t| > 1 as the old pixel format).
    pub fn validate(&self, path: &Path) -> Result<()> {
        for (i, r) in self.rotations.iter().enumerate() {
            if r.iter().any(|v| !v.is_finite()) {
                return Err(Error::format(
                    path,
                    format!("rotation {i} (0-based) contains NaN or infinity"),
                ));
            }
            // RᵀR = I to float32 accuracy.
            for a in 0..3 {
                for b in 0..3 {
                    let dot: f64 = (0..3).map(|k| r[3 * k + a] * r[3 * k + b]).sum();
                    let want = if a == b { 1.0 } else { 0.0 };
                    if (dot - want).abs() > 1e-3 {
                        return Err(Error::format(
                            path,
                            format!(
                                "matrix {i} (0-based) is not a rotation (columns {a},{b} have \
                                 dot product {dot:.4}, expected {want})"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(t) = &self.translations {
            for (i, s) in t.iter().enumerate() {
                if !s[0].is_finite() || !s[1].is_finite() {
                    return Err(Error::format(
                        path,
                        format!("translation {i} (0-based) contains NaN or infinity"),
                    ));
                }
                if s[0].abs() > 1.0 || s[1].abs() > 1.0 {
                    return Err(Error::format(
                        path,
                        format!(
                            "translation {i} (0-based) is ({}, {}): translations must be a \
                             fraction of the box (|t| ≤ 1); this looks like the old pixel format. \
                             Re-create the file with `recovar parse_pose_star/parse_pose_csparc`",
                            s[0], s[1]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn float_array<'a>(v: &'a PyValue, what: &str, path: &Path) -> Result<&'a NdArray> {
    match v {
        PyValue::Array(a) => Ok(a),
        other => Err(Error::format(
            path,
            format!(
                "{what}: expected a numpy array, found a {}",
                other.type_name()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn relion_identity_and_orthonormal() {
        let r = rotation_from_relion(0.0, 0.0, 0.0);
        // A(0)=I, B(0)=I, so R=I before sign flips (which touch zeros only).
        assert!(close(&r, &[1., 0., 0., 0., 1., 0., 0., 0., 1.], 1e-15));
        let r = rotation_from_relion(98.22569, 16.09353, 86.352776);
        for a in 0..3 {
            for b in 0..3 {
                let dot: f64 = (0..3).map(|k| r[3 * k + a] * r[3 * k + b]).sum();
                assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn relion_matches_cryodrgn_scipy_form() {
        // cryoDRGN's R_from_relion_scipy: zxz extrinsic with rot+90, psi-90, then a sign mask.
        // Build the same with plain rotations about fixed axes and compare.
        fn rz(t: f64) -> [[f64; 3]; 3] {
            let (s, c) = t.sin_cos();
            [[c, -s, 0.], [s, c, 0.], [0., 0., 1.]]
        }
        fn rx(t: f64) -> [[f64; 3]; 3] {
            let (s, c) = t.sin_cos();
            [[1., 0., 0.], [0., c, -s], [0., s, c]]
        }
        for &(a, b, y) in &[
            (10.0, 20.0, 30.0),
            (-120.5, 75.25, 200.0),
            (98.2, 16.1, 86.4),
        ] {
            let (a2, y2) = ((a + 90.0f64).to_radians(), (y - 90.0f64).to_radians());
            // extrinsic zxz (a2, b, y2) = Rz(y2) Rx(b) Rz(a2)
            let m = matmul3(&matmul3(&rz(y2), &rx(f64::to_radians(b))), &rz(a2));
            let f = [[1., -1., 1.], [-1., 1., -1.], [1., -1., 1.]];
            let r = rotation_from_relion(a, b, y);
            for i in 0..3 {
                for j in 0..3 {
                    assert!(
                        (r[3 * i + j] - m[i][j] * f[i][j]).abs() < 1e-12,
                        "{a} {b} {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn relion_angles_round_trip() {
        let mut rng = crate::rng::Rng::new(11);
        for k in 0..2000 {
            let r = if k < 4 {
                // the gimbal-lock cases
                rotation_from_relion(
                    37.0,
                    [0.0, 180.0, 0.0, 180.0][k],
                    [0.0, 0.0, 20.0, -45.0][k],
                )
            } else {
                rng.rotation()
            };
            let (a, b, c) = relion_from_rotation(&r);
            assert!((0.0..=180.0).contains(&b));
            let back = rotation_from_relion(a, b, c);
            assert!(
                close(&back, &r, 1e-9),
                "{k}: {r:?} -> ({a}, {b}, {c}) -> {back:?}"
            );
        }
    }

    #[test]
    fn cryosparc_zero_and_quarter_turn() {
        let r = rotation_from_cryosparc([0.0, 0.0, 0.0]);
        assert!(close(&r, &[1., 0., 0., 0., 1., 0., 0., 0., 1.], 0.0));
        // 90° about z: Rodrigues gives [[0,-1,0],[1,0,0],[0,0,1]]; transposed:
        let r = rotation_from_cryosparc([0.0, 0.0, std::f64::consts::FRAC_PI_2]);
        assert!(close(&r, &[0., 1., 0., -1., 0., 0., 0., 0., 1.], 1e-15));
    }
}
