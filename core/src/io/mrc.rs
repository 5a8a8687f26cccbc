//! MRC / MRCS files: 3-D maps (volumes) and particle-image stacks.
//!
//! # The format, as this module reads it
//!
//! A file is a 1024-byte header, then `nsymbt` bytes of extended header (skipped: nothing
//! in this project needs it), then `nx·ny·nz` values of one data type, columns fastest.
//! Header layout (0-based byte offsets, 4-byte words unless noted; MRC2014):
//!
//! | offset | field | | offset | field |
//! |---|---|---|---|---|
//! | 0 | nx, ny, nz (columns, rows, sections) | | 88 | ispg (space group) |
//! | 12 | mode (data type) | | 92 | nsymbt (extended header bytes) |
//! | 16 | nxstart, nystart, nzstart | | 104 | exttyp (4 chars) |
//! | 28 | mx, my, mz (sampling along X, Y, Z) | | 108 | nversion (20140 = MRC2014) |
//! | 40 | cella (cell size in Å, f32 ×3) | | 152 | IMOD stamp 1146047817, 156 IMOD flags |
//! | 52 | cellb (cell angles, f32 ×3) | | 196 | origin (Å, f32 ×3, along X, Y, Z) |
//! | 64 | mapc, mapr, maps (axis of cols/rows/secs) | | 208 | `MAP ` |
//! | 76 | dmin, dmax, dmean (f32) | | 212 | machine stamp (4 bytes) |
//! | | | | 216 | rms (f32); 220 nlabl; 224 ten 80-byte labels |
//!
//! (cryoDRGN's notes say "machine stamp at byte 213": that is 1-based; it is offset 212.)
//!
//! # Decisions
//!
//! - **Byte order** comes from the machine stamp (`44 44` or `44 41` little-endian,
//!   `11 11` big-endian). Old writers leave it zero (cryoDRGN's `hand.5.mrcs`,
//!   `toy_projections.mrcs`), so when the stamp is unrecognised, or when it contradicts a
//!   header that only makes sense the other way round, the order is decided by plausibility:
//!   the order in which the mode is a known MRC mode, nx/ny/nz are in 1..=2²⁴ and
//!   mapc/mapr/maps are a permutation of 1,2,3 (or all zero) wins; little-endian when both do.
//! - **Modes read**: 0 (8-bit integer, see below), 1 (int16), 2 (float32), 6 (uint16),
//!   12 (float16) and 17 (int8, cryoDRGN's extension). Everything is converted to `f32`.
//!   Modes 3 and 4 (complex), 16 (RGB), 101 (4-bit) and unknown numbers are refused with a
//!   message naming the mode and why it cannot be used.
//! - **Mode 0 signedness** is ambiguous in the wild: MRC2014 says signed, IMOD (and cryoDRGN)
//!   read it as unsigned unless IMOD marked it signed. Rule used here, in order:
//!   1. IMOD stamp 1146047817 at offset 152 present: signed iff bit 0 of the IMOD flags
//!      (offset 156) is set, unsigned otherwise (IMOD's own convention for its files);
//!   2. else, nversion declares MRC2014 (20140..=20149, e.g. every `mrcfile` file): signed;
//!   3. else (an old, pre-2014 file with no IMOD stamp): unsigned, the historical convention.
//! - **Axes**: mapc/mapr/maps must be a permutation of 1,2,3; all zero (old writers) means
//!   1,2,3; anything else is an error. [`read_volume`] permutes the data so that
//!   [`Volume::shape`] is `[nz, ny, nx]` in *logical* (Z, Y, X) order, x fastest (C order).
//!   A stack ([`MrcStack`]) needs maps = 3 (each section is one image); mapc,mapr = 2,1 means
//!   each image is stored transposed, and it is transposed back on read.
//! - **Voxel size** is `cella / (mx, my, mz)` per axis. A cell or sampling of 0 means
//!   "unknown" and is tolerated (recovar's bundled volumes have cella = 0): the size is
//!   `None` / `0.0` then. For stacks nz is the number of images and only the X size matters.
//! - **Sizes** are checked before any allocation: dimensions must be positive, the data size
//!   is overflow-checked, and the file (or byte slice) must hold `1024 + nsymbt + data`
//!   bytes. Longer files are accepted (trailing bytes ignored). The in-memory reader never
//!   allocates more than the input length justifies, so it is safe to fuzz.
//! - **Writers** produce MRC2014 little-endian float32 (mode 2) with `MAP `, machine stamp
//!   `44 44 00 00`, nversion 20140, mapc/r/s = 1,2,3, dmin/dmax/dmean/rms of the data and
//!   one label `recovar-rs`. Volumes: ispg 1, mx/my/mz = nx/ny/nz, cella = n·voxel size,
//!   origin from the [`Volume`]. Stacks: ispg 0, mz = 1 and cella.z = voxel size (what
//!   Python `mrcfile` does for image stacks, so its `voxel_size` is right), origin 0.
//!   Every write goes to a temporary file renamed into place, so an interrupted run never
//!   leaves a complete-looking file.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
#[cfg(unix)]
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::atomic::AtomicFile;

/// Positioned reads come from Unix's `FileExt`. Other targets the core is built for
/// (wasm32-unknown-unknown, which has no file system: the wasm binding) get reads that
/// fail with `Unsupported`, so the crate compiles there.
#[cfg(not(unix))]
trait FileExt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

#[cfg(not(unix))]
impl FileExt for File {
    fn read_at(&self, _: &mut [u8], _: u64) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
    fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Size of the fixed MRC header in bytes.
pub const HEADER_LEN: usize = 1024;

/// IMOD's stamp at offset 152; when present, bit 0 of the flags at offset 156 says
/// whether mode-0 bytes are signed.
pub const IMOD_STAMP: i32 = 1_146_047_817;

/// The label written by this crate's writers.
pub const WRITER_LABEL: &str = "recovar-rs";

/// Dimensions above this are taken as a sign of the wrong byte order when guessing it.
const PLAUSIBLE_DIM_MAX: i32 = 1 << 24;

/// Bytes read from a file in one system call at most (bounds the scratch buffer; small
/// enough that the 8 MB test stack is read in several chunks, large enough to be fast).
const READ_CHUNK_BYTES: usize = 4 << 20;

/// Floats converted per write call in the writers (bounds the scratch buffer).
const WRITE_CHUNK_VALUES: usize = 1 << 16;

fn bad(msg: impl Into<String>) -> Error {
    Error::malformed("MRC", msg)
}

/// The data types we can read, after the mode number has been interpreted.
/// All are converted to `f32` on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Signed 8-bit integer: mode 0 when signed (see the module notes), or mode 17.
    Int8,
    /// Unsigned 8-bit integer: mode 0 in IMOD-unsigned or pre-2014 files.
    UInt8,
    /// Mode 1.
    Int16,
    /// Mode 2; the only mode this crate writes.
    Float32,
    /// Mode 6.
    UInt16,
    /// Mode 12 (IEEE half precision), used by recovar for simulated particles.
    Float16,
}

impl Mode {
    /// Bytes per stored value.
    pub fn bytes_per_voxel(self) -> usize {
        match self {
            Mode::Int8 | Mode::UInt8 => 1,
            Mode::Int16 | Mode::UInt16 | Mode::Float16 => 2,
            Mode::Float32 => 4,
        }
    }

    /// A short name of the type, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Int8 => "int8",
            Mode::UInt8 => "uint8",
            Mode::Int16 => "int16",
            Mode::Float32 => "float32",
            Mode::UInt16 => "uint16",
            Mode::Float16 => "float16",
        }
    }
}

/// Why a mode number cannot be used, or `None` when it can.
fn unusable_mode_reason(mode: i32) -> Option<String> {
    let why = match mode {
        0 | 1 | 2 | 6 | 12 | 17 => return None,
        3 => "mode 3 (pairs of 16-bit integers) is a complex-valued map (a Fourier transform); only real-valued maps can be used".to_string(),
        4 => "mode 4 (pairs of 32-bit floats) is a complex-valued map (a Fourier transform); only real-valued maps can be used".to_string(),
        16 => "mode 16 is an RGB colour image (3 bytes per pixel), not a density map".to_string(),
        101 => "mode 101 (4-bit packed integers) is not supported".to_string(),
        m => format!("unknown mode {m} (modes that can be read: 0, 1, 2, 6, 12, 17)"),
    };
    Some(why)
}

/// Mode numbers that exist in some MRC dialect; used only to guess the byte order.
fn is_known_mode_number(mode: i32) -> bool {
    matches!(mode, 0 | 1 | 2 | 3 | 4 | 6 | 12 | 16 | 17 | 101)
}

/// The parsed 1024-byte header. Field names follow MRC2014. `nx, ny, nz` count columns,
/// rows and sections as stored; `mxyz`, `cella`, `origin` are along the logical X, Y, Z.
#[derive(Debug, Clone, PartialEq)]
pub struct MrcHeader {
    /// Columns (fastest-varying in the file).
    pub nx: usize,
    /// Rows.
    pub ny: usize,
    /// Sections; for a particle stack, the number of images.
    pub nz: usize,
    /// The data type, interpreted (mode 0 resolved to signed or unsigned).
    pub mode: Mode,
    /// The mode number as stored.
    pub mode_number: i32,
    /// nxstart, nystart, nzstart.
    pub nstart: [i32; 3],
    /// Sampling along X, Y, Z (mx, my, mz).
    pub mxyz: [i32; 3],
    /// Cell size in Å along X, Y, Z.
    pub cella: [f32; 3],
    /// Cell angles in degrees.
    pub cellb: [f32; 3],
    /// Which logical axis (1 = X, 2 = Y, 3 = Z) the columns, rows and sections run along.
    /// Always a permutation of 1,2,3: an all-zero field in the file is reported as 1,2,3.
    pub mapcrs: [i32; 3],
    /// Minimum density as stored (not recomputed; old writers put placeholders here).
    pub dmin: f32,
    /// Maximum density as stored.
    pub dmax: f32,
    /// Mean density as stored.
    pub dmean: f32,
    /// Space group: 0 image stack, 1 volume, 401+ volume stack (not interpreted here).
    pub ispg: i32,
    /// Extended-header length in bytes (skipped on reading).
    pub nsymbt: usize,
    /// Extended-header type (`CCP4`, `FEI1`, ...), as stored.
    pub exttyp: [u8; 4],
    /// Format version: 20140/20141 for MRC2014 files, 0 for older ones.
    pub nversion: i32,
    /// IMOD stamp (offset 152), as stored; [`IMOD_STAMP`] in files IMOD wrote.
    pub imod_stamp: i32,
    /// IMOD flags (offset 156), as stored; bit 0 set = mode-0 bytes are signed.
    pub imod_flags: i32,
    /// Origin in Å along X, Y, Z (the MRC2014 origin field, offset 196).
    pub origin: [f32; 3],
    /// The 4 bytes at offset 208 (`MAP ` in MRC2014 files).
    pub map_id: [u8; 4],
    /// Machine stamp as stored (may be zero in old files).
    pub machst: [u8; 4],
    /// RMS deviation of the densities from their mean, as stored.
    pub rms: f32,
    /// Number of labels in use, as stored.
    pub nlabl: i32,
    /// The labels in use (at most 10), trailing spaces and NULs removed.
    pub labels: Vec<String>,
    /// Whether the numbers in this file are big-endian.
    pub big_endian: bool,
}

/// Reads 4-byte words from a fixed-size header in a given byte order.
struct Words<'a> {
    h: &'a [u8; HEADER_LEN],
    big: bool,
}

impl Words<'_> {
    /// The 4 bytes at `off`; `off` is always a constant below 1021.
    fn raw(&self, off: usize) -> [u8; 4] {
        let mut w = [0u8; 4];
        if let Some(src) = self.h.get(off..off + 4) {
            w.copy_from_slice(src);
        }
        w
    }
    fn i32(&self, off: usize) -> i32 {
        let w = self.raw(off);
        if self.big {
            i32::from_be_bytes(w)
        } else {
            i32::from_le_bytes(w)
        }
    }
    fn f32(&self, off: usize) -> f32 {
        let w = self.raw(off);
        if self.big {
            f32::from_be_bytes(w)
        } else {
            f32::from_le_bytes(w)
        }
    }
    fn i32x3(&self, off: usize) -> [i32; 3] {
        [self.i32(off), self.i32(off + 4), self.i32(off + 8)]
    }
    fn f32x3(&self, off: usize) -> [f32; 3] {
        [self.f32(off), self.f32(off + 4), self.f32(off + 8)]
    }
}

fn is_axis_permutation(m: [i32; 3]) -> bool {
    let mut sorted = m;
    sorted.sort_unstable();
    sorted == [1, 2, 3]
}

/// Whether the header makes sense when read in the given byte order.
fn plausible(h: &[u8; HEADER_LEN], big: bool) -> bool {
    let w = Words { h, big };
    let dims_ok = w
        .i32x3(0)
        .iter()
        .all(|&n| (1..=PLAUSIBLE_DIM_MAX).contains(&n));
    let map = w.i32x3(64);
    dims_ok && is_known_mode_number(w.i32(12)) && (is_axis_permutation(map) || map == [0, 0, 0])
}

/// Decide the byte order: the machine stamp when it is recognised and not contradicted,
/// otherwise plausibility (little-endian on ties, and when nothing is plausible so that
/// the validation below reports what is wrong).
fn detect_big_endian(h: &[u8; HEADER_LEN]) -> bool {
    let stamp = match (h[212], h[213]) {
        (0x44, 0x44) | (0x44, 0x41) => Some(false),
        (0x11, 0x11) => Some(true),
        _ => None,
    };
    if let Some(big) = stamp {
        if plausible(h, big) {
            return big;
        }
    }
    if plausible(h, false) {
        false
    } else if plausible(h, true) {
        true
    } else {
        stamp.unwrap_or(false)
    }
}

impl MrcHeader {
    /// Parse and validate a header from the first 1024 bytes of `bytes` (more is allowed
    /// and ignored). Checks that the dimensions are positive, the mode is usable, the axis
    /// mapping is valid and the data size does not overflow; it cannot check the file
    /// length (see [`MrcHeader::check_length`]).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let h: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                bad(format!(
                    "truncated header: {} bytes, but an MRC header is {HEADER_LEN} bytes",
                    bytes.len()
                ))
            })?;
        let big = detect_big_endian(h);
        let w = Words { h, big };
        let order = if big { "big-endian" } else { "little-endian" };

        let dims = w.i32x3(0);
        if dims.iter().any(|&n| n <= 0) {
            return Err(bad(format!(
                "invalid dimensions nx={}, ny={}, nz={} (read as {order}): all must be positive",
                dims[0], dims[1], dims[2]
            )));
        }
        let mode_number = w.i32(12);
        if let Some(why) = unusable_mode_reason(mode_number) {
            return Err(bad(format!("{why} (header read as {order})")));
        }
        let nsymbt_raw = w.i32(92);
        let nsymbt = usize::try_from(nsymbt_raw).map_err(|_| {
            bad(format!(
                "negative extended-header length nsymbt={nsymbt_raw}"
            ))
        })?;
        let map_raw = w.i32x3(64);
        let mapcrs = if map_raw == [0, 0, 0] {
            [1, 2, 3]
        } else if is_axis_permutation(map_raw) {
            map_raw
        } else {
            return Err(bad(format!(
                "invalid axis mapping mapc,mapr,maps = {},{},{}: must be a permutation of 1,2,3",
                map_raw[0], map_raw[1], map_raw[2]
            )));
        };
        let nversion = w.i32(108);
        let imod_stamp = w.i32(152);
        let imod_flags = w.i32(156);
        let mode = match mode_number {
            1 => Mode::Int16,
            2 => Mode::Float32,
            6 => Mode::UInt16,
            12 => Mode::Float16,
            17 => Mode::Int8,
            _ => {
                // Mode 0: see the module notes for this rule.
                let signed = if imod_stamp == IMOD_STAMP {
                    imod_flags & 1 == 1
                } else {
                    (20140..=20149).contains(&nversion)
                };
                if signed {
                    Mode::Int8
                } else {
                    Mode::UInt8
                }
            }
        };
        // Positive i32 always fit in usize on the 64-bit targets this crate builds for;
        // the conversion still goes through try_from to stay panic-free elsewhere.
        let to_usize = |n: i32| usize::try_from(n).map_err(|_| bad("dimension does not fit"));
        let nlabl = w.i32(220);
        let labels = (0..usize::try_from(nlabl.clamp(0, 10)).unwrap_or(0))
            .filter_map(|i| h.get(224 + 80 * i..224 + 80 * (i + 1)))
            .map(|l| {
                String::from_utf8_lossy(l)
                    .trim_end_matches(['\0', ' '])
                    .to_string()
            })
            .collect();
        let header = MrcHeader {
            nx: to_usize(dims[0])?,
            ny: to_usize(dims[1])?,
            nz: to_usize(dims[2])?,
            mode,
            mode_number,
            nstart: w.i32x3(16),
            mxyz: w.i32x3(28),
            cella: w.f32x3(40),
            cellb: w.f32x3(52),
            mapcrs,
            dmin: w.f32(76),
            dmax: w.f32(80),
            dmean: w.f32(84),
            ispg: w.i32(88),
            nsymbt,
            exttyp: w.raw(104),
            nversion,
            imod_stamp,
            imod_flags,
            origin: w.f32x3(196),
            map_id: w.raw(208),
            machst: w.raw(212),
            rms: w.f32(216),
            nlabl,
            labels,
            big_endian: big,
        };
        // Overflow check of the whole file size, once, so later arithmetic is safe.
        header.file_size_needed().ok_or_else(|| {
            bad(format!(
                "dimensions {} are too large: the data size overflows 64 bits",
                header.dims_text()
            ))
        })?;
        Ok(header)
    }

    /// Byte offset of the first data value: 1024 + the extended header.
    pub fn data_offset(&self) -> u64 {
        HEADER_LEN as u64 + self.nsymbt as u64
    }

    /// Bytes per stored value.
    pub fn bytes_per_voxel(&self) -> usize {
        self.mode.bytes_per_voxel()
    }

    /// Number of stored values, nx·ny·nz (`None` on overflow).
    pub fn num_values(&self) -> Option<u64> {
        (self.nx as u64)
            .checked_mul(self.ny as u64)?
            .checked_mul(self.nz as u64)
    }

    /// Size of the data block in bytes (`None` on overflow; [`MrcHeader::parse`] refuses
    /// headers for which this overflows).
    pub fn data_size(&self) -> Option<u64> {
        self.num_values()?
            .checked_mul(self.bytes_per_voxel() as u64)
    }

    /// The smallest file length that holds the header, extended header and data.
    pub fn file_size_needed(&self) -> Option<u64> {
        self.data_offset().checked_add(self.data_size()?)
    }

    /// Voxel size in Å along X, Y, Z: `cella / (mx, my, mz)`. `None` when any cell length
    /// or sampling is 0 (or not positive and finite): "unknown", as in recovar's assets.
    pub fn voxel_size(&self) -> Option<[f32; 3]> {
        let mut out = [0f32; 3];
        for (o, (&c, &m)) in out.iter_mut().zip(self.cella.iter().zip(&self.mxyz)) {
            *o = axis_voxel_size(c, m)?;
        }
        Some(out)
    }

    /// Voxel (pixel) size along X alone; what a particle stack needs, since its Z
    /// sampling is often meaningless.
    pub fn voxel_size_x(&self) -> Option<f32> {
        axis_voxel_size(self.cella[0], self.mxyz[0])
    }

    /// Check that a file (or buffer) of `len` bytes holds all the data.
    pub fn check_length(&self, len: u64) -> Result<()> {
        let need = self.data_size().unwrap_or(u64::MAX);
        let have = len.saturating_sub(self.data_offset());
        if have < need {
            return Err(bad(format!(
                "truncated data: expected {need} bytes of data for {} mode {} ({}) after the {}-byte header, file has {have} ({len} bytes in all)",
                self.dims_text(),
                self.mode_number,
                self.mode.name(),
                self.data_offset()
            )));
        }
        Ok(())
    }

    /// `nx×ny×nz` for messages.
    fn dims_text(&self) -> String {
        format!("{}×{}×{}", self.nx, self.ny, self.nz)
    }

    /// A little-endian MRC2014 float32 header for our writers.
    fn for_writing(
        dims: [usize; 3],
        mxyz: [usize; 3],
        cella: [f32; 3],
        ispg: i32,
        origin: [f32; 3],
        stats: &Stats,
    ) -> Result<Self> {
        let (dmin, dmax, dmean, rms) = stats.finish();
        let mut mx = [0i32; 3];
        for (m, &n) in mx.iter_mut().zip(&mxyz) {
            *m = fits_i32(n)?;
        }
        for &n in &dims {
            fits_i32(n)?;
        }
        Ok(MrcHeader {
            nx: dims[0],
            ny: dims[1],
            nz: dims[2],
            mode: Mode::Float32,
            mode_number: 2,
            nstart: [0; 3],
            mxyz: mx,
            cella,
            cellb: [90.0; 3],
            mapcrs: [1, 2, 3],
            dmin,
            dmax,
            dmean,
            ispg,
            nsymbt: 0,
            exttyp: [0; 4],
            nversion: 20140,
            imod_stamp: 0,
            imod_flags: 0,
            origin,
            map_id: *b"MAP ",
            machst: [0x44, 0x44, 0, 0],
            rms,
            nlabl: 1,
            labels: vec![WRITER_LABEL.to_string()],
            big_endian: false,
        })
    }

    /// Encode as a little-endian header (machine stamp `44 44 00 00`, whatever
    /// `big_endian` says). Only our writers use this; their values all fit.
    fn to_le_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let mut put = |off: usize, w: [u8; 4]| {
            if let Some(dst) = h.get_mut(off..off + 4) {
                dst.copy_from_slice(&w);
            }
        };
        let dim = |n: usize| i32::try_from(n).unwrap_or(i32::MAX).to_le_bytes();
        put(0, dim(self.nx));
        put(4, dim(self.ny));
        put(8, dim(self.nz));
        put(12, self.mode_number.to_le_bytes());
        for k in 0..3 {
            put(16 + 4 * k, self.nstart[k].to_le_bytes());
            put(28 + 4 * k, self.mxyz[k].to_le_bytes());
            put(40 + 4 * k, self.cella[k].to_le_bytes());
            put(52 + 4 * k, self.cellb[k].to_le_bytes());
            put(64 + 4 * k, self.mapcrs[k].to_le_bytes());
            put(196 + 4 * k, self.origin[k].to_le_bytes());
        }
        put(76, self.dmin.to_le_bytes());
        put(80, self.dmax.to_le_bytes());
        put(84, self.dmean.to_le_bytes());
        put(88, self.ispg.to_le_bytes());
        put(92, dim(self.nsymbt));
        put(104, self.exttyp);
        put(108, self.nversion.to_le_bytes());
        put(152, self.imod_stamp.to_le_bytes());
        put(156, self.imod_flags.to_le_bytes());
        put(208, self.map_id);
        put(212, [0x44, 0x44, 0, 0]);
        put(216, self.rms.to_le_bytes());
        let labels: Vec<&String> = self.labels.iter().take(10).collect();
        put(220, (labels.len() as i32).to_le_bytes());
        for (i, label) in labels.iter().enumerate() {
            if let Some(dst) = h.get_mut(224 + 80 * i..224 + 80 * (i + 1)) {
                dst.fill(b' ');
                for (d, s) in dst.iter_mut().zip(label.bytes()) {
                    *d = s;
                }
            }
        }
        h
    }
}

fn axis_voxel_size(cell: f32, m: i32) -> Option<f32> {
    if m > 0 && cell.is_finite() && cell > 0.0 {
        Some(cell / m as f32)
    } else {
        None
    }
}

fn fits_i32(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        Error::invalid(format!(
            "dimension {n} is too large for an MRC header (at most {})",
            i32::MAX
        ))
    })
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Convert `src` (stored values of `mode` in the given byte order) to `f32` into `dst`.
/// Converts `min(dst.len(), src.len() / bytes_per_voxel)` values; callers pass matching
/// lengths.
fn decode(mode: Mode, big: bool, src: &[u8], dst: &mut [f32]) {
    fn each<const N: usize>(src: &[u8], dst: &mut [f32], f: impl Fn([u8; N]) -> f32) {
        for (d, c) in dst.iter_mut().zip(src.chunks_exact(N)) {
            if let Ok(a) = <[u8; N]>::try_from(c) {
                *d = f(a);
            }
        }
    }
    match (mode, big) {
        (Mode::Int8, _) => each::<1>(src, dst, |[b]| b as i8 as f32),
        (Mode::UInt8, _) => each::<1>(src, dst, |[b]| b as f32),
        (Mode::Int16, false) => each(src, dst, |a| i16::from_le_bytes(a) as f32),
        (Mode::Int16, true) => each(src, dst, |a| i16::from_be_bytes(a) as f32),
        (Mode::UInt16, false) => each(src, dst, |a| u16::from_le_bytes(a) as f32),
        (Mode::UInt16, true) => each(src, dst, |a| u16::from_be_bytes(a) as f32),
        (Mode::Float16, false) => each(src, dst, |a| half::f16::from_le_bytes(a).to_f32()),
        (Mode::Float16, true) => each(src, dst, |a| half::f16::from_be_bytes(a).to_f32()),
        (Mode::Float32, false) => each(src, dst, f32::from_le_bytes),
        (Mode::Float32, true) => each(src, dst, f32::from_be_bytes),
    }
}

// ---------------------------------------------------------------------------------------
// Volumes

/// A 3-D map in logical order: `data[(z * ny + y) * nx + x]`, x fastest (C order),
/// `shape = [nz, ny, nx]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub data: Vec<f32>,
    /// `[nz, ny, nx]`.
    pub shape: [usize; 3],
    /// Voxel size in Å along X; 0.0 when the file does not say (cella or mx is 0).
    pub voxel_size: f32,
    /// Origin in Å along X, Y, Z (the MRC2014 origin field at offset 196).
    pub origin: [f32; 3],
}

impl Volume {
    /// A volume with origin 0; checks that `data.len()` matches `shape`.
    pub fn new(data: Vec<f32>, shape: [usize; 3], voxel_size: f32) -> Result<Self> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| Error::invalid(format!("volume shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(Error::invalid(format!(
                "volume shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Volume {
            data,
            shape,
            voxel_size,
            origin: [0.0; 3],
        })
    }
}

/// Read a volume from the bytes of a whole MRC file. Honours mapc/mapr/maps (the result is
/// in logical Z, Y, X order). Allocates only after checking that `bytes` holds all the data.
pub fn read_volume_bytes(bytes: &[u8]) -> Result<Volume> {
    let header = MrcHeader::parse(bytes)?;
    header.check_length(bytes.len() as u64)?;
    let start = usize::try_from(header.data_offset()).map_err(|_| bad("offset too large"))?;
    let size = usize::try_from(header.data_size().unwrap_or(u64::MAX))
        .map_err(|_| bad("data too large"))?;
    let data = start
        .checked_add(size)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| bad("truncated data"))?;
    volume_from_data(&header, data)
}

/// Read a whole MRC file as a volume (see [`read_volume_bytes`]). Reads the header first,
/// so a file whose header promises more data than it holds is refused before allocating.
pub fn read_volume(path: impl AsRef<Path>) -> Result<Volume> {
    let path = path.as_ref();
    let (file, header) = open_with_header(path)?;
    let n = usize::try_from(header.num_values().unwrap_or(u64::MAX))
        .map_err(|_| bad("data too large for memory").in_file(path))?;
    let mut stored = vec![0f32; n];
    read_values_at(&file, path, header.data_offset(), &header, &mut stored)?;
    finish_volume(&header, stored).map_err(|e| e.in_file(path))
}

/// Fill `out` with the values stored from byte `offset` on, reading a bounded chunk at a
/// time (so a large map needs no second full-size byte buffer).
fn read_values_at(
    file: &File,
    path: &Path,
    offset: u64,
    header: &MrcHeader,
    out: &mut [f32],
) -> Result<()> {
    let bpv = header.bytes_per_voxel();
    let per_chunk = (READ_CHUNK_BYTES / bpv).clamp(1, out.len().max(1));
    let mut raw = vec![0u8; per_chunk * bpv];
    let mut pos = offset;
    for dst in out.chunks_mut(per_chunk) {
        let raw = raw
            .get_mut(..dst.len() * bpv)
            .ok_or_else(|| Error::invalid("internal: read buffer too small"))?;
        file.read_exact_at(raw, pos)
            .map_err(|e| Error::io(path, e))?;
        decode(header.mode, header.big_endian, raw, dst);
        pos += raw.len() as u64;
    }
    Ok(())
}

/// Read only the header (1024 bytes) of an MRC file and check that the file is long
/// enough for the data it announces.
pub fn read_header(path: impl AsRef<Path>) -> Result<MrcHeader> {
    open_with_header(path.as_ref()).map(|(_, h)| h)
}

/// Decode `raw` (exactly the data block) and permute it into logical (Z, Y, X) order.
fn volume_from_data(header: &MrcHeader, raw: &[u8]) -> Result<Volume> {
    let n = usize::try_from(header.num_values().unwrap_or(u64::MAX))
        .map_err(|_| bad("data too large"))?;
    if raw.len() / header.bytes_per_voxel() < n {
        return Err(bad("truncated data"));
    }
    let mut stored = vec![0f32; n];
    decode(header.mode, header.big_endian, raw, &mut stored);
    finish_volume(header, stored)
}

/// Permute decoded values (in stored order) into logical (Z, Y, X) order and attach the
/// voxel size and origin.
fn finish_volume(header: &MrcHeader, stored: Vec<f32>) -> Result<Volume> {
    let file_dims = [header.nx, header.ny, header.nz];
    let (data, shape) = if header.mapcrs == [1, 2, 3] {
        (stored, [header.nz, header.ny, header.nx])
    } else {
        permute_to_logical(&stored, file_dims, header.mapcrs)?
    };
    Ok(Volume {
        data,
        shape,
        voxel_size: header.voxel_size_x().unwrap_or(0.0),
        origin: header.origin,
    })
}

/// Reorder data stored as (sections, rows, columns) with columns along axis `map[0]`,
/// rows along `map[1]`, sections along `map[2]` (1 = X, 2 = Y, 3 = Z) into (Z, Y, X).
fn permute_to_logical(
    stored: &[f32],
    file_dims: [usize; 3],
    map: [i32; 3],
) -> Result<(Vec<f32>, [usize; 3])> {
    // Logical extent along X, Y, Z, and for each file axis its logical axis.
    let mut extent = [0usize; 3];
    let mut axis = [0usize; 3];
    for k in 0..3 {
        let a = usize::try_from(map[k] - 1)
            .ok()
            .filter(|&a| a < 3)
            .ok_or_else(|| bad("invalid axis mapping"))?;
        axis[k] = a;
        extent[a] = file_dims[k];
    }
    let logical_stride = [1, extent[0], extent[0] * extent[1]];
    let stride = [
        logical_stride[axis[0]],
        logical_stride[axis[1]],
        logical_stride[axis[2]],
    ];
    let mut out = vec![0f32; stored.len()];
    let [nc, nr, ns] = file_dims;
    let mut values = stored.iter();
    for s in 0..ns {
        for r in 0..nr {
            let base = s * stride[2] + r * stride[1];
            for c in 0..nc {
                let v = values.next().ok_or_else(|| bad("truncated data"))?;
                let slot = out
                    .get_mut(base + c * stride[0])
                    .ok_or_else(|| bad("axis mapping out of range"))?;
                *slot = *v;
            }
        }
    }
    Ok((out, [extent[2], extent[1], extent[0]]))
}

/// Open `path`, read and validate its header, and check the file length.
fn open_with_header(path: &Path) -> Result<(File, MrcHeader)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = [0u8; HEADER_LEN];
    let mut got = 0usize;
    while let Some(rest) = buf.get_mut(got..) {
        if rest.is_empty() {
            break;
        }
        match file.read_at(rest, got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let header = MrcHeader::parse(buf.get(..got).unwrap_or(&[])).map_err(|e| e.in_file(path))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    header.check_length(len).map_err(|e| e.in_file(path))?;
    Ok((file, header))
}

/// Running statistics for the writers' header fields (Chan et al. pairwise update, so
/// streaming a stack gives the same mean/rms as one pass over everything).
#[derive(Debug, Clone)]
struct Stats {
    n: u64,
    mean: f64,
    m2: f64,
    min: f32,
    max: f32,
}

impl Stats {
    fn new() -> Self {
        Stats {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }

    fn push(&mut self, xs: &[f32]) {
        if xs.is_empty() {
            return;
        }
        let nb = xs.len() as f64;
        let mean_b = xs.iter().map(|&x| x as f64).sum::<f64>() / nb;
        let m2_b = xs
            .iter()
            .map(|&x| {
                let d = x as f64 - mean_b;
                d * d
            })
            .sum::<f64>();
        let (min_b, max_b) = xs
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        let na = self.n as f64;
        let n = na + nb;
        let delta = mean_b - self.mean;
        self.mean += delta * nb / n;
        self.m2 += m2_b + delta * delta * na * nb / n;
        self.n += xs.len() as u64;
        self.min = self.min.min(min_b);
        self.max = self.max.max(max_b);
    }

    /// (dmin, dmax, dmean, rms), rms being the population standard deviation (numpy's
    /// `std()`, which `mrcfile.validate` compares with).
    fn finish(&self) -> (f32, f32, f32, f32) {
        if self.n == 0 {
            return (0.0, 0.0, 0.0, 0.0);
        }
        let (lo, hi) = if self.min <= self.max {
            (self.min, self.max)
        } else {
            (f32::NAN, f32::NAN) // all values were NaN
        };
        (
            lo,
            hi,
            self.mean as f32,
            (self.m2 / self.n as f64).sqrt() as f32,
        )
    }
}

fn check_voxel_size(voxel_size: f32) -> Result<()> {
    if voxel_size.is_finite() && voxel_size >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "voxel size {voxel_size} is invalid: it must be a finite number ≥ 0 (0 = unknown)"
        )))
    }
}

/// Write `values` as little-endian f32, a bounded chunk at a time.
fn write_f32s(out: &mut AtomicFile, values: &[f32]) -> Result<()> {
    let mut buf = Vec::with_capacity(WRITE_CHUNK_VALUES.min(values.len()) * 4);
    for chunk in values.chunks(WRITE_CHUNK_VALUES) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        out.write_all(&buf)?;
    }
    Ok(())
}

/// Write a volume as an MRC2014 float32 little-endian map (ispg 1), atomically.
/// `cella = n · voxel_size` per axis with mx,my,mz = nx,ny,nz; origin from the volume.
pub fn write_volume(path: impl AsRef<Path>, vol: &Volume) -> Result<()> {
    let path = path.as_ref();
    let [nz, ny, nx] = vol.shape;
    let n = nx
        .checked_mul(ny)
        .and_then(|v| v.checked_mul(nz))
        .ok_or_else(|| Error::invalid(format!("volume shape {:?} overflows", vol.shape)))?;
    if n == 0 || n != vol.data.len() {
        return Err(Error::invalid(format!(
            "{}: volume shape {:?} does not match its {} values (all dimensions must be positive)",
            path.display(),
            vol.shape,
            vol.data.len()
        )));
    }
    check_voxel_size(vol.voxel_size)?;
    let mut stats = Stats::new();
    stats.push(&vol.data);
    let vs = vol.voxel_size;
    let header = MrcHeader::for_writing(
        [nx, ny, nz],
        [nx, ny, nz],
        [nx as f32 * vs, ny as f32 * vs, nz as f32 * vs],
        1,
        vol.origin,
        &stats,
    )?;
    let mut out = AtomicFile::create(path)?;
    out.write_all(&header.to_le_bytes())?;
    write_f32s(&mut out, &vol.data)?;
    out.commit()
}

// ---------------------------------------------------------------------------------------
// Stacks

/// A lazily read particle stack: opening reads only the header; images are read on demand
/// with positioned reads, so one `MrcStack` can serve many rayon threads at once.
///
/// Images are returned row-major, `out[y * nx + x]`, in logical orientation (a stack stored
/// with mapc,mapr = 2,1 is transposed back).
#[derive(Debug)]
pub struct MrcStack {
    path: PathBuf,
    file: File,
    header: MrcHeader,
    /// Logical (ny, nx) of one image.
    ny: usize,
    nx: usize,
    transposed: bool,
    /// Bytes of one stored image.
    image_bytes: usize,
}

impl MrcStack {
    /// Open a stack: reads and checks the header and file length, nothing else.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (file, header) = open_with_header(path)?;
        let (ny, nx, transposed) = match header.mapcrs {
            [1, 2, 3] => (header.ny, header.nx, false),
            [2, 1, 3] => (header.nx, header.ny, true),
            [c, r, s] => {
                return Err(bad(format!(
                    "axis mapping mapc,mapr,maps = {c},{r},{s} cannot be a particle stack: sections must be images (maps = 3)"
                ))
                .in_file(path))
            }
        };
        let image_bytes = header
            .nx
            .checked_mul(header.ny)
            .and_then(|v| v.checked_mul(header.bytes_per_voxel()))
            .ok_or_else(|| bad("image size overflows").in_file(path))?;
        Ok(MrcStack {
            path: path.to_path_buf(),
            file,
            header,
            ny,
            nx,
            transposed,
            image_bytes,
        })
    }

    /// The file this stack reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn header(&self) -> &MrcHeader {
        &self.header
    }

    /// Number of images (the header's nz).
    pub fn len(&self) -> usize {
        self.header.nz
    }

    /// Whether the stack holds no images (never true for a file that opened).
    pub fn is_empty(&self) -> bool {
        self.header.nz == 0
    }

    /// `(ny, nx)` of one image, in logical orientation.
    pub fn image_shape(&self) -> (usize, usize) {
        (self.ny, self.nx)
    }

    /// Values per image, ny·nx.
    pub fn image_len(&self) -> usize {
        self.ny * self.nx
    }

    /// Pixel size in Å along X (`cella.x / mx`), `None` when the header does not say.
    pub fn voxel_size(&self) -> Option<f32> {
        self.header.voxel_size_x()
    }

    /// Read image `index` into `out` (`out.len() == ny * nx`, row-major, row = y).
    pub fn read_image(&self, index: usize, out: &mut [f32]) -> Result<()> {
        self.read_range(index, 1, out)
    }

    /// Read images `start..start + count` into `out` (`count · ny · nx` values) with as few
    /// system calls as the bounded scratch buffer allows.
    pub fn read_range(&self, start: usize, count: usize, out: &mut [f32]) -> Result<()> {
        let img = self.image_len();
        let end = start.saturating_add(count);
        if end > self.len() {
            return Err(self.out_of_range(end.saturating_sub(1)));
        }
        if Some(out.len()) != count.checked_mul(img) {
            return Err(Error::invalid(format!(
                "{}: output buffer holds {} values, {count} images of {}×{} need {}",
                self.path.display(),
                out.len(),
                self.ny,
                self.nx,
                count.saturating_mul(img)
            )));
        }
        if count == 0 {
            return Ok(());
        }
        let per_chunk = (READ_CHUNK_BYTES / self.image_bytes).clamp(1, count);
        let mut raw = vec![0u8; per_chunk * self.image_bytes];
        let mut scratch = if self.transposed {
            vec![0f32; img]
        } else {
            Vec::new()
        };
        let (mode, big) = (self.header.mode, self.header.big_endian);
        for (i, dst) in out.chunks_mut(per_chunk * img).enumerate() {
            let k = dst.len() / img;
            let first = (start + i * per_chunk) as u64;
            let offset = self.header.data_offset() + first * self.image_bytes as u64;
            let raw = raw
                .get_mut(..k * self.image_bytes)
                .ok_or_else(|| Error::invalid("internal: read buffer too small"))?;
            self.file
                .read_exact_at(raw, offset)
                .map_err(|e| Error::io(&self.path, e))?;
            if self.transposed {
                // Stored image: rows run along X (nx rows of ny values).
                for (src, dst) in raw
                    .chunks_exact(self.image_bytes)
                    .zip(dst.chunks_exact_mut(img))
                {
                    decode(mode, big, src, &mut scratch);
                    for (x, row) in scratch.chunks_exact(self.ny).enumerate() {
                        for (y, &v) in row.iter().enumerate() {
                            if let Some(d) = dst.get_mut(y * self.nx + x) {
                                *d = v;
                            }
                        }
                    }
                }
            } else {
                decode(mode, big, raw, dst);
            }
        }
        Ok(())
    }

    /// Read the images at `indices` (any order, repeats allowed) into `out`, image `i` of
    /// the batch at `out[i * ny * nx..]`. Runs of consecutive indices are read in one call.
    pub fn read_images(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let img = self.image_len();
        if Some(out.len()) != indices.len().checked_mul(img) {
            return Err(Error::invalid(format!(
                "{}: output buffer holds {} values, {} images of {}×{} need {}",
                self.path.display(),
                out.len(),
                indices.len(),
                self.ny,
                self.nx,
                indices.len().saturating_mul(img)
            )));
        }
        if let Some(&bad_index) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(self.out_of_range(bad_index));
        }
        let mut rest = out;
        let mut i = 0;
        while let Some(&first) = indices.get(i) {
            let mut run = 1;
            while indices.get(i + run) == Some(&(first + run)) {
                run += 1;
            }
            let (dst, tail) = rest.split_at_mut(run * img);
            self.read_range(first, run, dst)?;
            rest = tail;
            i += run;
        }
        Ok(())
    }

    /// Read every image into one `Vec` (`len · ny · nx` values): the explicit "all in RAM".
    pub fn read_all(&self) -> Result<Vec<f32>> {
        let n = self
            .len()
            .checked_mul(self.image_len())
            .ok_or_else(|| bad("stack too large").in_file(&self.path))?;
        let mut out = vec![0f32; n];
        self.read_range(0, self.len(), &mut out)?;
        Ok(out)
    }

    fn out_of_range(&self, index: usize) -> Error {
        Error::invalid(format!(
            "{}: image index {index} is out of range (the stack holds {} images)",
            self.path.display(),
            self.len()
        ))
    }
}

/// A streaming `.mrcs` writer: images are appended as they are computed, and the file
/// appears under its final name only on [`StackWriter::finish`] (dropping the writer
/// discards it). Output is MRC2014 float32 little-endian, ispg 0, mz = 1, cella.z = voxel
/// size, origin 0.
pub struct StackWriter {
    out: AtomicFile,
    ny: usize,
    nx: usize,
    voxel_size: f32,
    count: usize,
    stats: Stats,
}

impl StackWriter {
    /// Start a stack of `ny × nx` images with pixel size `voxel_size` Å (0 = unknown).
    pub fn create(path: impl AsRef<Path>, ny: usize, nx: usize, voxel_size: f32) -> Result<Self> {
        let path = path.as_ref();
        if ny == 0 || nx == 0 {
            return Err(Error::invalid(format!(
                "{}: image size {ny}×{nx} must be positive",
                path.display()
            )));
        }
        fits_i32(ny)?;
        fits_i32(nx)?;
        check_voxel_size(voxel_size)?;
        let mut out = AtomicFile::create(path)?;
        // Placeholder; the real header is written by `finish` once nz and stats are known.
        out.write_all(&[0u8; HEADER_LEN])?;
        Ok(StackWriter {
            out,
            ny,
            nx,
            voxel_size,
            count: 0,
            stats: Stats::new(),
        })
    }

    /// Append a whole number of images (`images.len()` a multiple of ny·nx), row-major.
    pub fn append(&mut self, images: &[f32]) -> Result<()> {
        let img = self.ny * self.nx;
        if !images.len().is_multiple_of(img) {
            return Err(Error::invalid(format!(
                "{}: {} values is not a whole number of {}×{} images",
                self.out.path().display(),
                images.len(),
                self.ny,
                self.nx
            )));
        }
        let count = self.count + images.len() / img;
        fits_i32(count)?;
        write_f32s(&mut self.out, images)?;
        self.stats.push(images);
        self.count = count;
        Ok(())
    }

    /// Number of images appended so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no image has been appended yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Write the final header (nz, dmin/dmax/dmean/rms), sync, and rename into place.
    /// A stack with no images is an error (an MRC file cannot have nz = 0 here).
    pub fn finish(mut self) -> Result<()> {
        let dest = self.out.path().to_path_buf();
        if self.count == 0 {
            return Err(Error::invalid(format!(
                "{}: no images were written",
                dest.display()
            )));
        }
        let vs = self.voxel_size;
        let header = MrcHeader::for_writing(
            [self.nx, self.ny, self.count],
            [self.nx, self.ny, 1],
            [self.nx as f32 * vs, self.ny as f32 * vs, vs],
            0,
            [0.0; 3],
            &self.stats,
        )?;
        let w = self.out.writer();
        w.seek(SeekFrom::Start(0))
            .and_then(|_| w.write_all(&header.to_le_bytes()))
            .map_err(|e| Error::io(&dest, e))?;
        self.out.commit()
    }
}

/// Write a whole stack (`images.len()` a multiple of ny·nx) atomically; see [`StackWriter`].
pub fn write_stack(
    path: impl AsRef<Path>,
    images: &[f32],
    ny: usize,
    nx: usize,
    voxel_size: f32,
) -> Result<()> {
    let mut w = StackWriter::create(path, ny, nx, voxel_size)?;
    w.append(images)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_header(dims: [i32; 3], mode: i32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        for (k, d) in dims.iter().enumerate() {
            h[4 * k..4 * k + 4].copy_from_slice(&d.to_le_bytes());
            h[28 + 4 * k..32 + 4 * k].copy_from_slice(&d.to_le_bytes());
            h[64 + 4 * k..68 + 4 * k].copy_from_slice(&(k as i32 + 1).to_le_bytes());
        }
        h[12..16].copy_from_slice(&mode.to_le_bytes());
        h
    }

    #[test]
    fn mrc_header_roundtrip_through_encoder() {
        let mut stats = Stats::new();
        stats.push(&[1.0, 2.0, 3.0]);
        let h = MrcHeader::for_writing(
            [3, 1, 1],
            [3, 1, 1],
            [7.5, 2.5, 2.5],
            1,
            [1.0, 2.0, 3.0],
            &stats,
        )
        .unwrap();
        let back = MrcHeader::parse(&h.to_le_bytes()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.voxel_size(), Some([2.5, 2.5, 2.5]));
        assert_eq!(back.labels, vec!["recovar-rs".to_string()]);
    }

    #[test]
    fn mrc_stats_streaming_matches_one_pass() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.5 - 3.0)
            .collect();
        let mut one = Stats::new();
        one.push(&xs);
        let mut many = Stats::new();
        for c in xs.chunks(77) {
            many.push(c);
        }
        let (a, b) = (one.finish(), many.finish());
        assert_eq!((a.0, a.1), (b.0, b.1));
        assert!((a.2 - b.2).abs() < 1e-5 && (a.3 - b.3).abs() < 1e-5);
    }

    #[test]
    fn mrc_mode0_signedness_rule() {
        // No IMOD stamp, no MRC2014 version: historical unsigned.
        let mut h = base_header([2, 2, 1], 0);
        assert_eq!(MrcHeader::parse(&h).unwrap().mode, Mode::UInt8);
        // MRC2014 declared: signed.
        h[108..112].copy_from_slice(&20140i32.to_le_bytes());
        assert_eq!(MrcHeader::parse(&h).unwrap().mode, Mode::Int8);
        // IMOD stamp wins over nversion: flags bit 0 clear = unsigned, set = signed.
        h[152..156].copy_from_slice(&IMOD_STAMP.to_le_bytes());
        assert_eq!(MrcHeader::parse(&h).unwrap().mode, Mode::UInt8);
        h[156..160].copy_from_slice(&1i32.to_le_bytes());
        assert_eq!(MrcHeader::parse(&h).unwrap().mode, Mode::Int8);
    }

    #[test]
    fn mrc_byte_order_guess() {
        // Mode 0 is the same in both orders; the axis mapping decides.
        let mut h = [0u8; HEADER_LEN];
        for (k, d) in [256i32, 4, 1].iter().enumerate() {
            h[4 * k..4 * k + 4].copy_from_slice(&d.to_be_bytes());
            h[64 + 4 * k..68 + 4 * k].copy_from_slice(&(k as i32 + 1).to_be_bytes());
        }
        let p = MrcHeader::parse(&h).unwrap();
        assert!(p.big_endian);
        assert_eq!((p.nx, p.ny, p.nz), (256, 4, 1));
        // A wrong stamp that contradicts the header is overridden.
        h[212] = 0x44;
        h[213] = 0x44;
        assert!(MrcHeader::parse(&h).unwrap().big_endian);
    }

    #[test]
    fn mrc_permutation_identity_and_swap() {
        // Stored (s, r, c) = 2×3×4 with columns along Z, rows along X, sections along Y.
        let stored: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let (out, shape) = permute_to_logical(&stored, [4, 3, 2], [3, 1, 2]).unwrap();
        // Logical extents: X = rows (3), Y = sections (2), Z = columns (4).
        assert_eq!(shape, [4, 2, 3]);
        for s in 0..2 {
            for r in 0..3 {
                for c in 0..4 {
                    let (x, y, z) = (r, s, c);
                    assert_eq!(out[(z * 2 + y) * 3 + x], stored[(s * 3 + r) * 4 + c]);
                }
            }
        }
    }

    #[test]
    fn mrc_stack_is_sync() {
        fn assert_sync<T: Sync + Send>() {}
        assert_sync::<MrcStack>();
    }
}
