//! cryoSPARC `.cs` particle files, on top of the [`npy`](crate::io::npy) reader.
//!
//! A `.cs` file is a numpy structured array saved with `np.save`: one row per particle,
//! fields named `group/field` (`blob/path`, `blob/idx`, `ctf/df1_A`,
//! `alignments3D/pose`, ...). This module names the fields the pipeline uses and
//! applies cryoDRGN's conventions (`cryodrgn/source.py` `CsSource`,
//! `parse_pose_csparc.py`, `parse_ctf_csparc.py`):
//! - `blob/path` is the image stack; one leading `>` (cryoSPARC's marker for exported
//!   paths) is stripped. Resolving it against a data folder is the dataset layer's job.
//! - `blob/idx` is the **0-based** index of the image in its stack.
//! - `blob/shape` is `(ny, nx)` in pixels, `blob/psize_A` Å/pixel.
//! - `alignments3D/pose` is an axis-angle rotation vector (radians); converting it to a
//!   matrix (Rodrigues, then transposed, as cryoDRGN does) is the pose layer's job.
//! - `alignments3D/shift` is in pixels of the `blob/shape` box.
//! - `ctf/df_angle_rad` and `ctf/phase_shift_rad` are radians (cryoDRGN's ctf.pkl
//!   holds degrees); read them with [`NpyArray::field_f64`] via [`CsFile::array`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::atomic::read_bytes;
use crate::io::npy::NpyArray;

fn bad(msg: impl Into<String>) -> Error {
    Error::malformed("cryoSPARC .cs", msg)
}

/// A cryoSPARC `.cs` file: a 1-D structured numpy array, and where it came from.
#[derive(Debug, Clone)]
pub struct CsFile {
    array: NpyArray,
    path: Option<PathBuf>,
}

impl CsFile {
    /// Read a `.cs` file; errors name the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_bytes(path)?;
        let mut f = Self::from_vec(bytes).map_err(|e| e.in_file(path))?;
        f.path = Some(path.to_path_buf());
        Ok(f)
    }

    /// Parse a `.cs` file held in memory (the bytes are copied).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_vec(bytes.to_vec())
    }

    /// Parse a `.cs` file, taking ownership of the bytes.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self> {
        let array = NpyArray::from_vec(bytes)?;
        if !array.is_structured() {
            return Err(bad(format!(
                "a .cs file holds a structured array (named fields), this one is a plain array of shape {:?}",
                array.shape()
            )));
        }
        if array.shape().len() != 1 {
            return Err(bad(format!(
                "a .cs file holds a 1-D array (one row per particle), this one has shape {:?}",
                array.shape()
            )));
        }
        Ok(CsFile { array, path: None })
    }

    /// The file this was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Number of particles (rows).
    pub fn len(&self) -> usize {
        self.array.n_rows()
    }

    /// Whether the file has no particles.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The underlying structured array, for any other field.
    pub fn array(&self) -> &NpyArray {
        &self.array
    }

    fn attach(&self, e: Error) -> Error {
        match &self.path {
            Some(p) => e.in_file(p),
            None => e,
        }
    }

    /// Check that `name` exists and has `width` elements per row.
    fn require(&self, name: &str, width: usize) -> Result<()> {
        match self.array.field_width(name) {
            None => Err(self.attach(bad(format!(
                "no field {name:?}; the fields are: {}",
                self.array.field_names().join(", ")
            )))),
            Some(w) if w != width => Err(self.attach(bad(format!(
                "field {name:?} has {w} values per particle, expected {width}"
            )))),
            Some(_) => Ok(()),
        }
    }

    /// Image stack paths (`blob/path`), one leading `>` stripped.
    pub fn blob_paths(&self) -> Result<Vec<String>> {
        self.require("blob/path", 1)?;
        let mut v = self
            .array
            .field_bytes_str("blob/path")
            .map_err(|e| self.attach(e))?;
        for p in &mut v {
            if p.starts_with('>') {
                p.remove(0);
            }
        }
        Ok(v)
    }

    /// 0-based image indices within their stacks (`blob/idx`).
    pub fn blob_indices(&self) -> Result<Vec<u64>> {
        self.require("blob/idx", 1)?;
        self.array.field_u64("blob/idx").map_err(|e| self.attach(e))
    }

    /// Image shapes `(ny, nx)` in pixels (`blob/shape`); `None` if absent.
    pub fn blob_shape(&self) -> Result<Option<Vec<[u32; 2]>>> {
        if !self.array.has_field("blob/shape") {
            return Ok(None);
        }
        self.require("blob/shape", 2)?;
        let v = self
            .array
            .field_u64("blob/shape")
            .map_err(|e| self.attach(e))?;
        v.chunks_exact(2)
            .map(|c| {
                let y = u32::try_from(c[0]);
                let x = u32::try_from(c[1]);
                match (y, x) {
                    (Ok(y), Ok(x)) => Ok([y, x]),
                    _ => Err(self.attach(bad(format!(
                        "blob/shape ({}, {}) is out of range",
                        c[0], c[1]
                    )))),
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Pixel sizes in Å (`blob/psize_A`); `None` if absent.
    pub fn pixel_sizes(&self) -> Result<Option<Vec<f64>>> {
        if !self.array.has_field("blob/psize_A") {
            return Ok(None);
        }
        self.require("blob/psize_A", 1)?;
        self.array
            .field_f64("blob/psize_A")
            .map(Some)
            .map_err(|e| self.attach(e))
    }

    /// Axis-angle rotation vectors (radians) from a pose field such as
    /// `"alignments3D/pose"` or `"alignments_class_0/pose"`. If the field is missing,
    /// the error lists the alignment fields the file does have (an exported 2D job has
    /// only `alignments2D/*`, whose pose is a single in-plane angle).
    pub fn poses(&self, key: &str) -> Result<Vec<[f64; 3]>> {
        self.alignment_field(key, 3)?;
        let v = self.array.field_f64(key).map_err(|e| self.attach(e))?;
        Ok(v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect())
    }

    /// In-plane shifts in pixels from a shift field such as `"alignments3D/shift"`.
    pub fn shifts(&self, key: &str) -> Result<Vec<[f64; 2]>> {
        self.alignment_field(key, 2)?;
        let v = self.array.field_f64(key).map_err(|e| self.attach(e))?;
        Ok(v.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
    }

    fn alignment_field(&self, key: &str, width: usize) -> Result<()> {
        if self.array.has_field(key) {
            return self.require(key, width);
        }
        let have: Vec<&str> = self
            .array
            .field_names()
            .into_iter()
            .filter(|n| n.starts_with("alignments"))
            .collect();
        let listing = if have.is_empty() {
            "the file has no alignment fields at all (no poses were refined)".to_string()
        } else {
            format!("the alignment fields present are: {}", have.join(", "))
        };
        Err(self.attach(bad(format!("no field {key:?}; {listing}"))))
    }
}
