//! Stage checkpoints: a re-run of the pipeline with the same arguments resumes after the
//! last finished stage and gives the same result.
//!
//! Each finished stage writes `checkpoints/<stage>.ckpt` (atomically): a small container of
//! named arrays (f32, f64, complex f32, i64) and scalars, tagged with a fingerprint of
//! everything that determines the stage's result (the arguments and the input files' sizes
//! and modification times). On a re-run a checkpoint is used only if its fingerprint
//! matches; anything else (missing, damaged, other arguments) recomputes the stage.
//!
//! Format (little endian): `RCVCKPT1`, fingerprint (u64), entry count (u32), then per entry:
//! name length (u16), name (UTF-8), kind (u8: 1 f32, 2 f64, 3 c32 as re,im f32 pairs, 4 i64),
//! element count (u64), data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use num_complex::Complex;

use crate::error::{Error, Result};
use crate::io::atomic::{read_bytes, write_bytes};

const MAGIC: &[u8; 8] = b"RCVCKPT1";

/// One stored array.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    F32(Vec<f32>),
    F64(Vec<f64>),
    C32(Vec<Complex<f32>>),
    I64(Vec<i64>),
}

/// Named arrays of one stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    entries: BTreeMap<String, Array>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Checkpoint::default()
    }

    /// Store an array under `name` (replacing any previous one).
    pub fn put(&mut self, name: &str, a: Array) -> &mut Self {
        self.entries.insert(name.to_string(), a);
        self
    }

    /// Store a scalar.
    pub fn put_scalar(&mut self, name: &str, v: f64) -> &mut Self {
        self.put(name, Array::F64(vec![v]))
    }

    fn get(&self, name: &str) -> Result<&Array> {
        self.entries
            .get(name)
            .ok_or_else(|| Error::invalid(format!("checkpoint has no entry `{name}`")))
    }

    /// An f32 array.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        match self.get(name)? {
            Array::F32(v) => Ok(v.clone()),
            _ => Err(Error::invalid(format!(
                "checkpoint entry `{name}` is not f32"
            ))),
        }
    }

    /// An f64 array.
    pub fn f64(&self, name: &str) -> Result<Vec<f64>> {
        match self.get(name)? {
            Array::F64(v) => Ok(v.clone()),
            _ => Err(Error::invalid(format!(
                "checkpoint entry `{name}` is not f64"
            ))),
        }
    }

    /// A complex array.
    pub fn c32(&self, name: &str) -> Result<Vec<Complex<f32>>> {
        match self.get(name)? {
            Array::C32(v) => Ok(v.clone()),
            _ => Err(Error::invalid(format!(
                "checkpoint entry `{name}` is not complex"
            ))),
        }
    }

    /// An i64 array.
    pub fn i64(&self, name: &str) -> Result<Vec<i64>> {
        match self.get(name)? {
            Array::I64(v) => Ok(v.clone()),
            _ => Err(Error::invalid(format!(
                "checkpoint entry `{name}` is not i64"
            ))),
        }
    }

    /// A scalar stored with [`Checkpoint::put_scalar`].
    pub fn scalar(&self, name: &str) -> Result<f64> {
        self.f64(name)?
            .first()
            .copied()
            .ok_or_else(|| Error::invalid(format!("checkpoint entry `{name}` is empty")))
    }

    fn encode(&self, fingerprint: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&fingerprint.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (name, a) in &self.entries {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let (kind, count) = match a {
                Array::F32(v) => (1u8, v.len()),
                Array::F64(v) => (2, v.len()),
                Array::C32(v) => (3, v.len()),
                Array::I64(v) => (4, v.len()),
            };
            out.push(kind);
            out.extend_from_slice(&(count as u64).to_le_bytes());
            match a {
                Array::F32(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::F64(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::C32(v) => v.iter().for_each(|x| {
                    out.extend_from_slice(&x.re.to_le_bytes());
                    out.extend_from_slice(&x.im.to_le_bytes());
                }),
                Array::I64(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<(u64, Checkpoint)> {
        let mut pos = 0usize;
        let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
            let s = bytes.get(*pos..pos.checked_add(n)?)?;
            *pos += n;
            Some(s)
        };
        if take(&mut pos, 8)? != MAGIC {
            return None;
        }
        let fp = u64::from_le_bytes(take(&mut pos, 8)?.try_into().ok()?);
        let count = u32::from_le_bytes(take(&mut pos, 4)?.try_into().ok()?);
        let mut ck = Checkpoint::new();
        for _ in 0..count {
            let len = u16::from_le_bytes(take(&mut pos, 2)?.try_into().ok()?) as usize;
            let name = std::str::from_utf8(take(&mut pos, len)?).ok()?.to_string();
            let kind = take(&mut pos, 1)?[0];
            let n = u64::from_le_bytes(take(&mut pos, 8)?.try_into().ok()?) as usize;
            let size = match kind {
                1 => 4,
                2..=4 => 8,
                _ => return None,
            };
            let raw = take(&mut pos, n.checked_mul(size)?)?;
            let a = match kind {
                1 => Array::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                2 => Array::F64(
                    raw.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect(),
                ),
                3 => Array::C32(
                    raw.chunks_exact(8)
                        .map(|c| {
                            Complex::new(
                                f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                                f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                            )
                        })
                        .collect(),
                ),
                _ => Array::I64(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect(),
                ),
            };
            ck.entries.insert(name, a);
        }
        (pos == bytes.len()).then_some((fp, ck))
    }
}

/// The checkpoint folder of one pipeline run.
pub struct Checkpoints {
    dir: PathBuf,
    fingerprint: u64,
}

impl Checkpoints {
    /// Checkpoints in `outdir/checkpoints`, valid for runs with this `fingerprint`.
    pub fn new(outdir: &Path, fingerprint: u64) -> Result<Self> {
        let dir = outdir.join("checkpoints");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Checkpoints { dir, fingerprint })
    }

    fn path(&self, stage: &str) -> PathBuf {
        self.dir.join(format!("{stage}.ckpt"))
    }

    /// The stored stage, if it exists and was made with the same fingerprint.
    pub fn load(&self, stage: &str) -> Option<Checkpoint> {
        let bytes = read_bytes(self.path(stage)).ok()?;
        match Checkpoint::decode(&bytes) {
            Some((fp, ck)) if fp == self.fingerprint => {
                tracing::info!("stage {stage}: resumed from checkpoint");
                Some(ck)
            }
            Some(_) => {
                tracing::info!("stage {stage}: checkpoint is from other arguments; recomputing");
                None
            }
            None => {
                tracing::warn!("stage {stage}: checkpoint unreadable; recomputing");
                None
            }
        }
    }

    /// Store a finished stage.
    pub fn save(&self, stage: &str, ck: &Checkpoint) -> Result<()> {
        write_bytes(self.path(stage), &ck.encode(self.fingerprint))
    }
}

/// FNV-1a over strings: a stable fingerprint (no hashing crate, the same on every
/// platform and version).
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.as_bytes().iter().chain(std::iter::once(&0xffu8)) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A description of an input file for the fingerprint: its path, size and modification time.
pub fn file_identity(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "{}:{}:{:?}",
            path.display(),
            m.len(),
            m.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        ),
        Err(_) => format!("{}:missing", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fingerprint_check() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(dir.path(), 42).unwrap();
        let mut ck = Checkpoint::new();
        ck.put("a", Array::F32(vec![1.5, -2.0]))
            .put("b", Array::C32(vec![Complex::new(1.0, 2.0)]))
            .put("c", Array::I64(vec![7, -9]))
            .put_scalar("s", 3.25);
        c.save("mean", &ck).unwrap();
        let back = c.load("mean").unwrap();
        assert_eq!(back, ck);
        assert_eq!(back.scalar("s").unwrap(), 3.25);
        assert!(back.f64("a").is_err());
        assert!(Checkpoints::new(dir.path(), 43)
            .unwrap()
            .load("mean")
            .is_none());
        // A damaged file is ignored, not trusted.
        let p = dir.path().join("checkpoints/mean.ckpt");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        assert!(c.load("mean").is_none());
        assert_ne!(fingerprint(["a", "bc"]), fingerprint(["ab", "c"]));
    }
}
