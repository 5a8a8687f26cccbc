//! Where the particle images come from: one `.mrcs` stack, a `.txt` list of stacks, a
//! RELION `.star` or a cryoSPARC `.cs` file naming `index@stack` per particle, or caller
//! memory. Stacks are opened lazily: opening reads only headers, images are read on demand
//! in batches.
//!
//! Path resolution for stacks named inside `.star`/`.cs`/`.txt` files (first hit wins):
//! an absolute path as written; `datadir/path`; `datadir/basename`; the listing file's
//! folder `/path`; that folder `/basename`; and the path relative to the working directory
//! (RELION writes paths relative to its project folder, where users usually run from).
//! When none exists the error lists every path tried.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::io::cs::CsFile;
use crate::io::mrc::MrcStack;
use crate::io::star::StarFile;
use crate::io::txt;

/// The kinds of particle file we accept, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParticleFormat {
    /// `.mrcs` / `.mrc`: a single stack.
    Mrcs,
    /// `.star`: RELION metadata naming `index@stack` per particle (1-based index).
    Star,
    /// `.cs`: cryoSPARC metadata with `blob/path` and `blob/idx` (0-based).
    Cs,
    /// `.txt`: a list of stacks, every image of each used in order.
    Txt,
}

impl ParticleFormat {
    /// Detect the format from the file extension.
    pub fn detect(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "mrcs" | "mrc" => Ok(ParticleFormat::Mrcs),
            "star" => Ok(ParticleFormat::Star),
            "cs" => Ok(ParticleFormat::Cs),
            "txt" => Ok(ParticleFormat::Txt),
            _ => Err(Error::invalid(format!(
                "{}: unknown particle file type `.{ext}`; expected .mrcs, .mrc, .star, .cs or .txt",
                path.display()
            ))),
        }
    }
}

/// Metadata that came with the particle file, kept so poses and CTF can be taken from it
/// when no poses.pkl / ctf.pkl is given.
pub enum ParticleMetadata {
    /// A plain stack or stack list: no metadata.
    None,
    /// The parsed .star file.
    Star(Box<StarFile>),
    /// The parsed .cs file.
    Cs(Box<CsFile>),
}

/// Finds stack files named inside a metadata file (see module docs for the order).
pub struct PathResolver {
    datadir: Option<PathBuf>,
    listing_dir: PathBuf,
    cache: HashMap<String, PathBuf>,
}

impl PathResolver {
    /// A resolver for names found in the file `listing` (a .star, .cs or .txt).
    pub fn new(listing: &Path, datadir: Option<&Path>) -> Self {
        let listing_dir = match listing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        PathResolver {
            datadir: datadir.map(Path::to_path_buf),
            listing_dir,
            cache: HashMap::new(),
        }
    }

    /// Every place `name` could be, in the order tried.
    pub fn candidates(&self, name: &str) -> Vec<PathBuf> {
        let p = Path::new(name);
        let base = p.file_name().map(PathBuf::from);
        let mut out = Vec::new();
        if p.is_absolute() {
            out.push(p.to_path_buf());
        }
        if let Some(d) = &self.datadir {
            out.push(d.join(p));
            if let Some(b) = &base {
                out.push(d.join(b));
            }
        }
        out.push(self.listing_dir.join(p));
        if let Some(b) = &base {
            out.push(self.listing_dir.join(b));
        }
        if !p.is_absolute() {
            out.push(p.to_path_buf());
        }
        let mut seen = Vec::new();
        out.retain(|c| {
            if seen.contains(c) {
                false
            } else {
                seen.push(c.clone());
                true
            }
        });
        out
    }

    /// The first candidate that is a file.
    pub fn resolve(&mut self, name: &str, referenced_from: &Path) -> Result<PathBuf> {
        if let Some(p) = self.cache.get(name) {
            return Ok(p.clone());
        }
        let cands = self.candidates(name);
        match cands.iter().find(|c| c.is_file()) {
            Some(found) => {
                self.cache.insert(name.to_string(), found.clone());
                Ok(found.clone())
            }
            None => Err(Error::NotFound {
                what: format!(
                    "particle stack `{name}` named in {}{}",
                    referenced_from.display(),
                    if self.datadir.is_none() {
                        " (use --datadir to say where the stacks are)"
                    } else {
                        ""
                    }
                ),
                tried: cands,
            }),
        }
    }
}

/// Header facts of one stack file.
#[derive(Clone, Debug)]
struct StackInfo {
    path: PathBuf,
    len: usize,
}

/// A stack whose header has been read; the open file is kept only for the first few.
struct OpenedStack {
    path: PathBuf,
    len: usize,
    shape: (usize, usize),
    voxel_size: Option<f64>,
    stack: Option<MrcStack>,
}

impl OpenedStack {
    fn open(path: PathBuf, keep_open: bool) -> Result<Self> {
        let s = MrcStack::open(&path)?;
        if u32::try_from(s.len()).is_err() {
            return Err(Error::format(&path, "more than 2^32 images in one stack"));
        }
        Ok(OpenedStack {
            len: s.len(),
            shape: s.image_shape(),
            voxel_size: s.voxel_size().map(|v| v as f64),
            stack: keep_open.then_some(s),
            path,
        })
    }
}

/// Open stacks are kept in a small cache so that a .star naming thousands of stacks never
/// holds thousands of file descriptors.
const OPEN_STACK_CACHE: usize = 32;

enum Storage {
    Files {
        stacks: Vec<StackInfo>,
        /// (stack number, 0-based index in that stack) per image, in file order.
        entries: Vec<(u32, u32)>,
        open: Mutex<Vec<(usize, Arc<MrcStack>)>>,
    },
    Memory {
        // Shared: a cloned dataset (e.g. a model's own copy) does not copy the images.
        data: Arc<Vec<f32>>,
    },
}

impl Clone for Storage {
    fn clone(&self) -> Self {
        match self {
            Storage::Files {
                stacks,
                entries,
                open,
            } => Storage::Files {
                stacks: stacks.clone(),
                entries: entries.clone(),
                // The open-file cache holds Arcs: clones share the already opened stacks.
                open: Mutex::new(open.lock().map(|v| v.clone()).unwrap_or_default()),
            },
            Storage::Memory { data } => Storage::Memory { data: data.clone() },
        }
    }
}

/// The images of a particle file (or of caller memory), readable in any order.
#[derive(Clone)]
pub struct ImageSource {
    storage: Storage,
    ny: usize,
    nx: usize,
    header_voxel_size: Option<f64>,
    description: String,
}

impl ImageSource {
    /// Open a particle file of any supported kind. Returns the images and whatever metadata
    /// the file carried.
    pub fn open(path: &Path, datadir: Option<&Path>) -> Result<(Self, ParticleMetadata)> {
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "particle file does not exist"),
            ));
        }
        match ParticleFormat::detect(path)? {
            ParticleFormat::Mrcs => {
                let stack = OpenedStack::open(path.to_path_buf(), true)?;
                let entries = (0..stack.len).map(|i| (0u32, i as u32)).collect();
                let src = Self::from_stacks(path, vec![stack], entries)?;
                Ok((src, ParticleMetadata::None))
            }
            ParticleFormat::Txt => {
                let names = txt::read(path)?;
                let mut resolver = PathResolver::new(path, datadir);
                let mut stacks = Vec::new();
                let mut entries = Vec::new();
                for (k, name) in names.iter().enumerate() {
                    let p = resolver.resolve(&name.to_string_lossy(), path)?;
                    let s = OpenedStack::open(p, k < OPEN_STACK_CACHE)?;
                    entries.extend((0..s.len).map(|i| (k as u32, i as u32)));
                    stacks.push(s);
                }
                Ok((
                    Self::from_stacks(path, stacks, entries)?,
                    ParticleMetadata::None,
                ))
            }
            ParticleFormat::Star => {
                let star = StarFile::read(path)?;
                let table = star.particles().map_err(|e| e.in_file(path))?;
                let names = table.column_str("_rlnImageName").ok_or_else(|| {
                    Error::format(
                        path,
                        format!(
                            "particle table `{}` has no _rlnImageName column, so it names no images",
                            table.name()
                        ),
                    )
                })?;
                let mut refs = Vec::with_capacity(names.len());
                for (row, name) in names.iter().enumerate() {
                    let (idx, file) = name.split_once('@').ok_or_else(|| {
                        Error::format(
                            path,
                            format!(
                                "particle {} has _rlnImageName `{name}`; expected `index@stack.mrcs`",
                                row + 1
                            ),
                        )
                    })?;
                    let idx: u64 = idx.trim().parse().map_err(|_| {
                        Error::format(
                            path,
                            format!(
                                "particle {} has _rlnImageName `{name}`: `{idx}` is not an image number",
                                row + 1
                            ),
                        )
                    })?;
                    if idx == 0 {
                        return Err(Error::format(
                            path,
                            format!(
                                "particle {} has _rlnImageName `{name}`: RELION image numbers start at 1",
                                row + 1
                            ),
                        ));
                    }
                    refs.push((file.to_string(), idx - 1));
                }
                let src = Self::from_refs(path, datadir, &refs)?;
                Ok((src, ParticleMetadata::Star(Box::new(star))))
            }
            ParticleFormat::Cs => {
                let cs = CsFile::read(path)?;
                let paths = cs.blob_paths().map_err(|e| e.in_file(path))?;
                let idx = cs.blob_indices().map_err(|e| e.in_file(path))?;
                let refs: Vec<(String, u64)> = paths.into_iter().zip(idx).collect();
                let src = Self::from_refs(path, datadir, &refs)?;
                Ok((src, ParticleMetadata::Cs(Box::new(cs))))
            }
        }
    }

    /// Images held in memory: `n` images of `ny × nx`, row-major, image after image.
    pub fn from_memory(data: Vec<f32>, n: usize, ny: usize, nx: usize) -> Result<Self> {
        let want = n
            .checked_mul(ny)
            .and_then(|v| v.checked_mul(nx))
            .ok_or_else(|| Error::invalid("image array size overflows"))?;
        if data.len() != want {
            return Err(Error::invalid(format!(
                "image array has {} values; {n} images of {ny}×{nx} need {want}",
                data.len()
            )));
        }
        Ok(ImageSource {
            storage: Storage::Memory {
                data: Arc::new(data),
            },
            ny,
            nx,
            header_voxel_size: None,
            description: "images in memory".into(),
        })
    }

    fn from_refs(listing: &Path, datadir: Option<&Path>, refs: &[(String, u64)]) -> Result<Self> {
        let mut resolver = PathResolver::new(listing, datadir);
        let mut stack_of: HashMap<&str, u32> = HashMap::new();
        let mut stacks: Vec<OpenedStack> = Vec::new();
        let mut entries = Vec::with_capacity(refs.len());
        for (row, (name, idx)) in refs.iter().enumerate() {
            let k = match stack_of.get(name.as_str()) {
                Some(&k) => k,
                None => {
                    let p = resolver.resolve(name, listing)?;
                    let k = stacks.len() as u32;
                    stacks.push(OpenedStack::open(p, stacks.len() < OPEN_STACK_CACHE)?);
                    stack_of.insert(name.as_str(), k);
                    k
                }
            };
            let s = &stacks[k as usize];
            if *idx >= s.len as u64 {
                return Err(Error::format(
                    listing,
                    format!(
                        "particle {} refers to image {} (0-based) of {}, which holds only {} images",
                        row + 1,
                        idx,
                        s.path.display(),
                        s.len
                    ),
                ));
            }
            let idx = u32::try_from(*idx).map_err(|_| {
                Error::format(
                    listing,
                    format!("particle {}: image index {idx} too large", row + 1),
                )
            })?;
            entries.push((k, idx));
        }
        Self::from_stacks(listing, stacks, entries)
    }

    fn from_stacks(
        listing: &Path,
        stacks: Vec<OpenedStack>,
        entries: Vec<(u32, u32)>,
    ) -> Result<Self> {
        let first = stacks
            .first()
            .ok_or_else(|| Error::format(listing, "names no particle images"))?;
        let (ny, nx) = first.shape;
        let header_voxel_size = first.voxel_size;
        for s in &stacks {
            if s.shape != (ny, nx) {
                return Err(Error::inconsistent(format!(
                    "{}: images are {}×{} but {} has {}×{}; all particle images must have one size",
                    listing.display(),
                    nx,
                    ny,
                    s.path.display(),
                    s.shape.1,
                    s.shape.0
                )));
            }
        }
        if entries.is_empty() {
            return Err(Error::format(listing, "names no particle images"));
        }
        let mut infos = Vec::with_capacity(stacks.len());
        let mut open = Vec::new();
        for (k, s) in stacks.into_iter().enumerate() {
            if let Some(st) = s.stack {
                open.push((k, Arc::new(st)));
            }
            infos.push(StackInfo {
                path: s.path,
                len: s.len,
            });
        }
        Ok(ImageSource {
            storage: Storage::Files {
                stacks: infos,
                entries,
                open: Mutex::new(open),
            },
            ny,
            nx,
            header_voxel_size,
            description: listing.display().to_string(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Files { entries, .. } => entries.len(),
            Storage::Memory { data } => data.len() / (self.ny * self.nx).max(1),
        }
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image shape `(ny, nx)`.
    pub fn image_shape(&self) -> (usize, usize) {
        (self.ny, self.nx)
    }

    /// Pixel size in the first stack's header, if it has one.
    pub fn header_voxel_size(&self) -> Option<f64> {
        self.header_voxel_size.filter(|v| *v > 0.0)
    }

    /// What the images were read from, for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The stack files, in order, with their image counts.
    pub fn stack_files(&self) -> Vec<(PathBuf, usize)> {
        match &self.storage {
            Storage::Files { stacks, .. } => {
                stacks.iter().map(|s| (s.path.clone(), s.len)).collect()
            }
            Storage::Memory { .. } => Vec::new(),
        }
    }

    fn stack(&self, k: usize) -> Result<Arc<MrcStack>> {
        let Storage::Files { stacks, open, .. } = &self.storage else {
            return Err(Error::invalid("not a file-backed source"));
        };
        {
            let mut cache = open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pos) = cache.iter().position(|(i, _)| *i == k) {
                let entry = cache.remove(pos);
                let s = entry.1.clone();
                cache.push(entry);
                return Ok(s);
            }
        }
        let s = Arc::new(MrcStack::open(&stacks[k].path)?);
        let mut cache = open.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= OPEN_STACK_CACHE {
            cache.remove(0);
        }
        cache.push((k, s.clone()));
        Ok(s)
    }

    /// Read images by their index in the particle file into `out`
    /// (`ids.len() · ny · nx` values, image after image, row-major).
    pub fn read(&self, ids: &[usize], out: &mut [f32]) -> Result<()> {
        let npix = self.ny * self.nx;
        if out.len() != ids.len() * npix {
            return Err(Error::invalid(format!(
                "output buffer holds {} values; {} images of {}×{} need {}",
                out.len(),
                ids.len(),
                self.nx,
                self.ny,
                ids.len() * npix
            )));
        }
        let n = self.len();
        if let Some(&bad) = ids.iter().find(|&&i| i >= n) {
            return Err(Error::invalid(format!(
                "image {bad} requested from {}, which holds {n} images",
                self.description
            )));
        }
        match &self.storage {
            Storage::Memory { data } => {
                for (o, &i) in out.chunks_exact_mut(npix).zip(ids) {
                    o.copy_from_slice(&data[i * npix..(i + 1) * npix]);
                }
                Ok(())
            }
            Storage::Files { entries, .. } => {
                // Read runs of images that live in the same stack with one call.
                let mut start = 0;
                let mut idx_buf = Vec::new();
                while start < ids.len() {
                    let k = entries[ids[start]].0;
                    let mut end = start + 1;
                    while end < ids.len() && entries[ids[end]].0 == k {
                        end += 1;
                    }
                    idx_buf.clear();
                    idx_buf.extend(ids[start..end].iter().map(|&i| entries[i].1 as usize));
                    let stack = self.stack(k as usize)?;
                    stack.read_images(&idx_buf, &mut out[start * npix..end * npix])?;
                    start = end;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_order() {
        let r = PathResolver::new(
            Path::new("/proj/Refine3D/run_data.star"),
            Some(Path::new("/data")),
        );
        let c = r.candidates("Extract/job1/p.mrcs");
        let want: Vec<PathBuf> = [
            "/data/Extract/job1/p.mrcs",
            "/data/p.mrcs",
            "/proj/Refine3D/Extract/job1/p.mrcs",
            "/proj/Refine3D/p.mrcs",
            "Extract/job1/p.mrcs",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(c, want);
    }

    #[test]
    fn missing_stack_lists_every_path() {
        let mut r = PathResolver::new(
            Path::new("/nonexistent/x.star"),
            Some(Path::new("/nowhere")),
        );
        let e = r
            .resolve("a/b.mrcs", Path::new("/nonexistent/x.star"))
            .unwrap_err()
            .to_string();
        for p in [
            "/nowhere/a/b.mrcs",
            "/nowhere/b.mrcs",
            "/nonexistent/a/b.mrcs",
            "/nonexistent/b.mrcs",
        ] {
            assert!(e.contains(p), "{e}");
        }
    }

    #[test]
    fn memory_source_reads_in_any_order() {
        let data: Vec<f32> = (0..3 * 4).map(|v| v as f32).collect();
        let s = ImageSource::from_memory(data, 3, 2, 2).unwrap();
        let mut out = vec![0.0; 8];
        s.read(&[2, 0], &mut out).unwrap();
        assert_eq!(out, vec![8., 9., 10., 11., 0., 1., 2., 3.]);
        assert!(s.read(&[3], &mut out[..4]).is_err());
    }
}
