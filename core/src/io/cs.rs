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
//!
//! [`write_subset`] writes a `.cs` file holding some of another one's rows, with the
//! original header (dtype, field order, padding) and only the shape changed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::atomic::{read_bytes, write_bytes};
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

/// Write a cryoSPARC `.cs` file holding only `rows` (0-based, in the order given; an index
/// may repeat) of the `.cs` file `original`, and return how many rows were written.
///
/// The output is the original `.npy` header with only its `'shape'` entry changed (so the
/// dtype, field order, padding fields and format version stay exactly as cryoSPARC wrote
/// them), re-padded to the original's alignment (64 bytes, or 16 for files from numpy
/// before 1.14), followed by the selected rows' bytes copied verbatim. `numpy.load` and [`CsFile::read`] read it back.
///
/// Errors: the original is not a valid `.cs` file, `rows` is empty, or an index is out of
/// range (naming the file, its row count and how many indices are out of range). The
/// output is written atomically, and only after it has been parsed back successfully.
pub fn write_subset(original: &Path, rows: &[usize], out: &Path) -> Result<usize> {
    let bytes = read_bytes(original)?;
    let bytes = subset_bytes(bytes, rows).map_err(|e| e.in_file(original))?;
    write_bytes(out, &bytes)?;
    Ok(rows.len())
}

/// The bytes of the subset file; errors are [`Error::Malformed`] (no file name yet).
fn subset_bytes(bytes: Vec<u8>, rows: &[usize]) -> Result<Vec<u8>> {
    let (major, header, align) = npy_header(&bytes)?;
    let cs = CsFile::from_vec(bytes)?;
    let n = cs.len();
    if rows.is_empty() {
        return Err(bad(format!(
            "no rows selected: refusing to write a subset without particles (the file has {n} rows)"
        )));
    }
    let out_of_range: Vec<usize> = rows.iter().copied().filter(|&r| r >= n).collect();
    if let Some(&first) = out_of_range.first() {
        let largest = out_of_range.iter().copied().max().unwrap_or(first);
        return Err(bad(format!(
            "{} of the {} row indices are out of range (first {first}, largest {largest}): \
             the file has {n} rows (indices 0..={})",
            out_of_range.len(),
            rows.len(),
            n.saturating_sub(1)
        )));
    }
    let header = with_shape(&header, rows.len())?;
    // Version 1 stores the header length in 16 bits; numpy itself moves to 2.0 when a
    // header outgrows it, and so do we (the shape can only add a few digits).
    let mut major = major;
    let aligned = |prefix: usize| {
        let unpadded = prefix + header.len() + 1;
        unpadded + (align - unpadded % align) % align - prefix
    };
    if major == 1 && aligned(10) > usize::from(u16::MAX) {
        major = 2;
    }
    let prefix = if major == 1 { 10 } else { 12 };
    let header_len = aligned(prefix);
    let itemsize = cs.array().itemsize();
    let data = cs.array().data();
    let mut out = Vec::with_capacity(prefix + header_len + rows.len() * itemsize);
    out.extend_from_slice(b"\x93NUMPY");
    out.push(major);
    out.push(0);
    if major == 1 {
        let len = u16::try_from(header_len).map_err(|_| bad("header too long"))?;
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        let len = u32::try_from(header_len).map_err(|_| bad("header too long"))?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&header);
    out.resize(prefix + header_len - 1, b' ');
    out.push(b'\n');
    for &r in rows {
        let row = r
            .checked_mul(itemsize)
            .and_then(|start| data.get(start..start + itemsize))
            .ok_or_else(|| bad(format!("internal: row {r} is outside the data")))?;
        out.extend_from_slice(row);
    }
    // Parse the result before it is written: same dtype, the new row count.
    let back = CsFile::from_bytes(&out)?;
    if back.len() != rows.len() || back.array().dtype() != cs.array().dtype() {
        return Err(bad(format!(
            "internal: the subset header does not read back as {} rows of the same dtype",
            rows.len()
        )));
    }
    Ok(out)
}

/// The format major version, the header text of a `.npy` file without its padding
/// (trailing blanks and newline), and the alignment of the data start to keep: numpy pads
/// to 64 bytes, numpy before 1.14 (and the cryoSPARC files it wrote) to 16; keeping the
/// original's makes a subset of every row a byte-identical copy. The full parse
/// ([`CsFile::from_vec`]) validates the rest.
fn npy_header(bytes: &[u8]) -> Result<(u8, Vec<u8>, usize)> {
    let truncated = || bad("truncated .npy header");
    if bytes.get(..6) != Some(b"\x93NUMPY".as_slice()) {
        return Err(bad("not a .npy file: it does not start with \\x93NUMPY"));
    }
    let major = *bytes.get(6).ok_or_else(truncated)?;
    let (len, start) = match major {
        1 => {
            let b = bytes.get(8..10).ok_or_else(truncated)?;
            (usize::from(u16::from_le_bytes([b[0], b[1]])), 10)
        }
        2 | 3 => {
            let b = bytes.get(8..12).ok_or_else(truncated)?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (usize::try_from(len).map_err(|_| truncated())?, 12)
        }
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    let header = bytes.get(start..start + len).ok_or_else(truncated)?;
    let end = header
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let align = if (start + len).is_multiple_of(64) {
        64
    } else {
        16
    };
    Ok((major, header[..end].to_vec(), align))
}

/// The header dict with its `'shape'` value replaced by `(n,)`. numpy writes the keys in
/// sorted order, so `'shape'` is the last key; searching from the end also keeps a field
/// named like the key (which would appear inside the `'descr'` list) out of the way.
fn with_shape(header: &[u8], n: usize) -> Result<Vec<u8>> {
    let key = b"'shape':";
    let at = header
        .windows(key.len())
        .rposition(|w| w == key)
        .ok_or_else(|| bad("the .npy header has no 'shape' entry"))?;
    let after_key = at + key.len();
    let open = header
        .iter()
        .skip(after_key)
        .position(|&b| !b.is_ascii_whitespace())
        .map(|i| after_key + i)
        .filter(|&i| header.get(i) == Some(&b'('))
        .ok_or_else(|| bad("the .npy header's 'shape' is not a tuple"))?;
    let close = header
        .iter()
        .skip(open)
        .position(|&b| b == b')')
        .map(|i| open + i)
        .ok_or_else(|| bad("the .npy header's 'shape' tuple is not closed"))?;
    let mut out = header[..open].to_vec();
    out.extend_from_slice(format!("({n},)").as_bytes());
    out.extend_from_slice(&header[close + 1..]);
    Ok(out)
}
