//! The dataset: particle images (read lazily) + poses + CTF + the chosen image indices +
//! halfsets + pixel size + the data sign.
//!
//! A [`Dataset`] is built from files ([`Dataset::open`], mirroring the command-line flags
//! `particles --poses --ctf --datadir --ind --n-images --halfsets --uninvert-data`) or from
//! caller memory ([`Dataset::from_arrays`], for the C ABI). Every later stage reads images in
//! batches through it; nothing holds all images in memory unless `preload` asks for it.
//!
//! Conventions: images are `D × D` row-major (row = y). Translations are in **pixels of the
//! current box** (poses.pkl stores a fraction of the box; we multiply by `D`). The pixel size
//! is `D_ctf · Apix_ctf / D` (RECOVAR's rule, so CTF tables made before downsampling stay
//! valid). Dataset positions `0..n` are the images after `--ind` and `--n-images`;
//! [`Dataset::original_indices`] maps them back to rows of the particle file.

mod ctf;
pub mod downsample;
mod halfsets;
mod poses;
mod source;
mod summary;

use std::ops::Range;
use std::path::{Path, PathBuf};

pub use ctf::{CsCtfOptions, CtfTable, StarCtfOptions, CTF_COLUMNS};
pub use halfsets::{random_split, Mt19937};
pub use poses::{
    relion_from_rotation, rotation_from_cryosparc, rotation_from_relion, CsPoseOptions, PoseDtype,
    PoseTable, StarPoseOptions,
};
pub use source::{ImageSource, ParticleFormat, ParticleMetadata, PathResolver};
pub use summary::{pose_coverage, DatasetSummary, PoseCoverage, Range3};

use crate::error::{Error, Result};
use crate::io::pickle::{self, PyValue};

/// `--uninvert-data`: whether to flip the sign of the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Uninvert {
    /// Decide after the first mean estimate (RECOVAR's default, algorithms.md §1.7).
    #[default]
    Automatic,
    /// Multiply every image by −1.
    True,
    /// Use the images as they are.
    False,
}

impl std::str::FromStr for Uninvert {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "automatic" | "auto" => Ok(Uninvert::Automatic),
            "true" | "yes" | "1" => Ok(Uninvert::True),
            "false" | "no" | "0" => Ok(Uninvert::False),
            _ => Err(Error::invalid(format!(
                "--uninvert-data `{s}`: expected automatic, true or false"
            ))),
        }
    }
}

/// Per-image CTF parameters as the image-formation model uses them (RECOVAR's internal
/// row: the cryoDRGN table without D and Apix, plus B-factor and contrast).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CtfParams {
    /// Defocus U in Å.
    pub defocus_u: f32,
    /// Defocus V in Å.
    pub defocus_v: f32,
    /// Astigmatism angle in degrees.
    pub defocus_angle_deg: f32,
    /// Accelerating voltage in kV.
    pub voltage_kv: f32,
    /// Spherical aberration in mm.
    pub cs_mm: f32,
    /// Amplitude contrast ratio w.
    pub amp_contrast: f32,
    /// Phase shift in degrees.
    pub phase_shift_deg: f32,
    /// Envelope B-factor in Å² (0 unless estimated).
    pub bfactor: f32,
    /// Per-image amplitude scale (1 unless estimated).
    pub contrast: f32,
}

impl CtfParams {
    /// The parameters of a cryoDRGN ctf.pkl row `[D, Apix, dfU, dfV, dfang, kV, Cs, w,
    /// phase shift]` (no B-factor, contrast 1).
    pub fn from_row(r: &[f64; 9]) -> Self {
        CtfParams {
            defocus_u: r[2] as f32,
            defocus_v: r[3] as f32,
            defocus_angle_deg: r[4] as f32,
            voltage_kv: r[5] as f32,
            cs_mm: r[6] as f32,
            amp_contrast: r[7] as f32,
            phase_shift_deg: r[8] as f32,
            bfactor: 0.0,
            contrast: 1.0,
        }
    }

    /// The cryoDRGN ctf.pkl row of these parameters for `d`-pixel images of `apix` Å
    /// (B-factor and contrast are not part of it).
    pub fn to_row(&self, d: f64, apix: f64) -> [f64; 9] {
        [
            d,
            apix,
            self.defocus_u as f64,
            self.defocus_v as f64,
            self.defocus_angle_deg as f64,
            self.voltage_kv as f64,
            self.cs_mm as f64,
            self.amp_contrast as f64,
            self.phase_shift_deg as f64,
        ]
    }
}

/// Where the halfset split came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HalfsetOrigin {
    /// `--halfsets file.pkl`.
    File(PathBuf),
    /// `_rlnRandomSubset` in the .star file.
    RandomSubset,
    /// RECOVAR's seeded random split (numpy-compatible).
    Random { seed: u64 },
}

/// Options for [`Dataset::open`]; each field is the command-line flag of the same name.
#[derive(Clone, Debug, Default)]
pub struct DatasetOptions {
    /// Particles: .mrcs, .star, .cs or .txt.
    pub particles: PathBuf,
    /// `--poses`: cryoDRGN poses.pkl. When absent, poses are taken from a .star/.cs particle file.
    pub poses: Option<PathBuf>,
    /// `--ctf`: cryoDRGN ctf.pkl. When absent, CTF is taken from a .star/.cs particle file.
    pub ctf: Option<PathBuf>,
    /// `--datadir`: where the stacks named in a .star/.cs/.txt are.
    pub datadir: Option<PathBuf>,
    /// `--ind`: a pickle of 0-based indices (or a boolean mask) selecting particles.
    pub ind: Option<PathBuf>,
    /// `--n-images`: use only the first n images (after `--ind`).
    pub n_images: Option<usize>,
    /// `--halfsets`: a pickle of two index arrays.
    pub halfsets: Option<PathBuf>,
    /// `--uninvert-data`.
    pub uninvert: Uninvert,
    /// Seed of the random halfset split (RECOVAR uses 0).
    pub seed: u64,
    /// Require poses (error if none can be found).
    pub require_poses: bool,
    /// Require CTF parameters (error if none can be found).
    pub require_ctf: bool,
    /// Read every image into memory once (only when asked).
    pub preload: bool,
}

/// Particles + poses + CTF + indices + halfsets (see module docs). Clones share the
/// images (files or memory) and copy only the per-image tables.
#[derive(Clone)]
pub struct Dataset {
    source: ImageSource,
    original: Vec<usize>,
    rotations: Option<Vec<[f32; 9]>>,
    translations: Vec<[f32; 2]>,
    ctf: Option<Vec<CtfParams>>,
    ctf_table_dims: Option<(f64, f64)>,
    voxel_size: f64,
    box_size: usize,
    halfsets: [Vec<usize>; 2],
    halfset_origin: HalfsetOrigin,
    uninvert: Uninvert,
    data_sign: f32,
    preloaded: Option<std::sync::Arc<Vec<f32>>>,
    particles: PathBuf,
}

impl Dataset {
    /// Open a dataset from files (see [`DatasetOptions`]).
    pub fn open(opts: &DatasetOptions) -> Result<Self> {
        let (source, meta) = ImageSource::open(&opts.particles, opts.datadir.as_deref())?;
        let (ny, nx) = source.image_shape();
        if ny != nx {
            return Err(Error::format(
                &opts.particles,
                format!("images are {nx}×{ny}; RECOVAR needs square images"),
            ));
        }
        if nx % 2 != 0 {
            return Err(Error::format(
                &opts.particles,
                format!(
                    "the box size {nx} is odd; RECOVAR needs an even box (crop or pad the \
                     particles, e.g. `recovar downsample -D {}`)",
                    nx - 1
                ),
            ));
        }
        let d = nx;
        let total = source.len();

        // --ind, then --n-images.
        let mut original: Vec<usize> = match &opts.ind {
            Some(p) => read_index_file(p, total)?,
            None => (0..total).collect(),
        };
        if let Some(n) = opts.n_images {
            if n == 0 {
                return Err(Error::invalid("--n-images must be at least 1"));
            }
            original.truncate(n);
        }
        if original.is_empty() {
            return Err(Error::invalid("no images selected (--ind selects none)"));
        }

        // Poses.
        let poses = match (&opts.poses, &meta) {
            (Some(p), _) => Some((PoseTable::read_pickle(p)?, p.clone())),
            (None, ParticleMetadata::Star(star)) if has_star_angles(star) => {
                let t = star.particles().map_err(|e| e.in_file(&opts.particles))?;
                if t.has_column("_rlnOriginXAngst") && !t.has_column("_rlnOriginX") {
                    require_star_pixel_size(
                        star,
                        &opts.particles,
                        "poses",
                        "parse_pose_star",
                        "--poses",
                    )?;
                }
                let t = PoseTable::from_star(
                    star,
                    &opts.particles,
                    &StarPoseOptions {
                        box_size: star_box_size(star)?.or(Some(d)),
                        apix: None,
                    },
                )?;
                Some((t, opts.particles.clone()))
            }
            (None, ParticleMetadata::Cs(cs)) if cs.array().has_field("alignments3D/pose") => {
                let t = PoseTable::from_cs(
                    cs,
                    &opts.particles,
                    &CsPoseOptions {
                        box_size: Some(d),
                        ..Default::default()
                    },
                )?;
                Some((t, opts.particles.clone()))
            }
            _ => None,
        };
        if poses.is_none() && opts.require_poses {
            return Err(Error::invalid(format!(
                "no poses for {}: give --poses poses.pkl (make one with `recovar parse_pose_star` \
                 or `recovar parse_pose_csparc`)",
                opts.particles.display()
            )));
        }
        let (rotations, translations) = match &poses {
            Some((t, p)) => {
                check_count(t.len(), total, "poses", p, &opts.particles)?;
                let rot = original
                    .iter()
                    .map(|&i| t.rotations[i].map(|v| v as f32))
                    .collect();
                let tr = match &t.translations {
                    Some(tr) => original
                        .iter()
                        .map(|&i| [(tr[i][0] * d as f64) as f32, (tr[i][1] * d as f64) as f32])
                        .collect(),
                    None => vec![[0.0; 2]; original.len()],
                };
                (Some(rot), tr)
            }
            None => (None, vec![[0.0; 2]; original.len()]),
        };

        // CTF.
        let ctf_table = match (&opts.ctf, &meta) {
            (Some(p), _) => Some((CtfTable::read_pickle(p)?, p.clone())),
            (None, ParticleMetadata::Star(star)) if star_has_ctf(star) => {
                require_star_pixel_size(star, &opts.particles, "CTF", "parse_ctf_star", "--ctf")?;
                let t = CtfTable::from_star(
                    star,
                    &opts.particles,
                    &StarCtfOptions {
                        box_size: star_box_size(star)?.is_none().then_some(d),
                        ..Default::default()
                    },
                )?;
                Some((t, opts.particles.clone()))
            }
            (None, ParticleMetadata::Cs(cs)) if cs.array().has_field("ctf/df1_A") => {
                let t = CtfTable::from_cs(cs, &opts.particles, &CsCtfOptions::default())?;
                Some((t, opts.particles.clone()))
            }
            _ => None,
        };
        if ctf_table.is_none() && opts.require_ctf {
            return Err(Error::invalid(format!(
                "no CTF parameters for {}: give --ctf ctf.pkl (make one with `recovar parse_ctf_star` \
                 or `recovar parse_ctf_csparc`)",
                opts.particles.display()
            )));
        }
        let (ctf, ctf_table_dims, voxel_size) = match &ctf_table {
            Some((t, p)) => {
                check_count(t.len(), total, "CTF rows", p, &opts.particles)?;
                let (ctf, dims, vs) = ctf_for_images(t, &original, d, p)?;
                if let Some(h) = source.header_voxel_size() {
                    if (h - vs).abs() > 0.01 * vs {
                        tracing::warn!(
                            "pixel size {vs:.4} Å from the CTF table ({}) differs from {h:.4} Å in \
                             the header of {}; using the CTF table's",
                            p.display(),
                            opts.particles.display()
                        );
                    }
                }
                (Some(ctf), Some(dims), vs)
            }
            None => {
                let vs = source.header_voxel_size().unwrap_or_else(|| {
                    tracing::warn!(
                        "{}: no CTF table and no pixel size in the header; assuming 1 Å/px",
                        opts.particles.display()
                    );
                    1.0
                });
                (None, None, vs)
            }
        };

        // Halfsets.
        let (halfsets, halfset_origin) = match (&opts.halfsets, &meta) {
            (Some(p), _) => (read_halfsets(p, &original)?, HalfsetOrigin::File(p.clone())),
            (None, ParticleMetadata::Star(star)) => {
                match random_subset(star, &opts.particles, &original)? {
                    Some(h) => (h, HalfsetOrigin::RandomSubset),
                    None => (
                        random_split(original.len(), opts.seed),
                        HalfsetOrigin::Random { seed: opts.seed },
                    ),
                }
            }
            _ => (
                random_split(original.len(), opts.seed),
                HalfsetOrigin::Random { seed: opts.seed },
            ),
        };

        let mut ds = Dataset {
            source,
            original,
            rotations,
            translations,
            ctf,
            ctf_table_dims,
            voxel_size,
            box_size: d,
            halfsets,
            halfset_origin,
            uninvert: opts.uninvert,
            data_sign: if opts.uninvert == Uninvert::True {
                -1.0
            } else {
                1.0
            },
            preloaded: None,
            particles: opts.particles.clone(),
        };
        if opts.preload {
            ds.preload()?;
        }
        Ok(ds)
    }

    /// A dataset from caller memory: `n` images of `d × d` (row-major), rotations
    /// (row-major 3×3, cryoDRGN convention), translations in pixels, and cryoDRGN-layout CTF
    /// rows (`D, Apix, dfU, dfV, dfang, kV, Cs, w, phase shift`). Halfsets are the seeded
    /// random split.
    pub fn from_arrays(
        images: Vec<f32>,
        n: usize,
        d: usize,
        rotations: &[[f32; 9]],
        translations_px: &[[f32; 2]],
        ctf_rows: &[[f64; 9]],
        seed: u64,
    ) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("a dataset needs at least one image"));
        }
        if d == 0 || !d.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "image size {d} must be even and positive"
            )));
        }
        let source = ImageSource::from_memory(images, n, d, d)?;
        for (what, len) in [
            ("rotations", rotations.len()),
            ("translations", translations_px.len()),
            ("CTF rows", ctf_rows.len()),
        ] {
            if len != n {
                return Err(Error::invalid(format!("{len} {what} given for {n} images")));
            }
        }
        let mem = Path::new("<caller arrays>");
        let table = PoseTable {
            rotations: rotations.iter().map(|r| r.map(|v| v as f64)).collect(),
            translations: None,
        };
        table.validate(mem)?;
        if let Some((i, _)) = translations_px
            .iter()
            .enumerate()
            .find(|(_, t)| !t[0].is_finite() || !t[1].is_finite())
        {
            return Err(Error::invalid(format!("translation {i} is not finite")));
        }
        let ctf = CtfTable {
            rows: ctf_rows.to_vec(),
        };
        ctf.validate(mem)?;
        let original: Vec<usize> = (0..n).collect();
        let (ctf_params, dims, vs) = ctf_for_images(&ctf, &original, d, mem)?;
        Ok(Dataset {
            source,
            halfsets: random_split(n, seed),
            halfset_origin: HalfsetOrigin::Random { seed },
            original,
            rotations: Some(rotations.to_vec()),
            translations: translations_px.to_vec(),
            ctf: Some(ctf_params),
            ctf_table_dims: Some(dims),
            voxel_size: vs,
            box_size: d,
            uninvert: Uninvert::False,
            data_sign: 1.0,
            preloaded: None,
            particles: mem.to_path_buf(),
        })
    }

    /// Number of images in the dataset (after `--ind` / `--n-images`).
    pub fn len(&self) -> usize {
        self.original.len()
    }

    /// True when the dataset has no images (never, for an opened dataset).
    pub fn is_empty(&self) -> bool {
        self.original.is_empty()
    }

    /// Image side `D` in pixels.
    pub fn box_size(&self) -> usize {
        self.box_size
    }

    /// Pixel size in Å.
    pub fn voxel_size(&self) -> f64 {
        self.voxel_size
    }

    /// The particle file (or `<caller arrays>`).
    pub fn particles_path(&self) -> &Path {
        &self.particles
    }

    /// The image source.
    pub fn source(&self) -> &ImageSource {
        &self.source
    }

    /// Number of images in the particle file before selection.
    pub fn total_in_file(&self) -> usize {
        self.source.len()
    }

    /// Row of the particle file for each dataset position.
    pub fn original_indices(&self) -> &[usize] {
        &self.original
    }

    /// Rotations (cryoDRGN convention), one per image, if the dataset has poses.
    pub fn rotations(&self) -> Option<&[[f32; 9]]> {
        self.rotations.as_deref()
    }

    /// Translations in pixels of the current box (zeros when the poses had none).
    pub fn translations(&self) -> &[[f32; 2]] {
        &self.translations
    }

    /// Per-image CTF parameters, if the dataset has CTF.
    pub fn ctf(&self) -> Option<&[CtfParams]> {
        self.ctf.as_deref()
    }

    /// `(D, Apix)` of the CTF table the parameters came from (of the first selected image).
    pub fn ctf_table_dims(&self) -> Option<(f64, f64)> {
        self.ctf_table_dims
    }

    /// The two halfsets, as sorted dataset positions.
    pub fn halfsets(&self) -> &[Vec<usize>; 2] {
        &self.halfsets
    }

    /// Where the halfsets came from.
    pub fn halfset_origin(&self) -> &HalfsetOrigin {
        &self.halfset_origin
    }

    /// The `--uninvert-data` setting.
    pub fn uninvert(&self) -> Uninvert {
        self.uninvert
    }

    /// The factor (±1) images are multiplied by when read.
    pub fn data_sign(&self) -> f32 {
        self.data_sign
    }

    /// Set the factor images are multiplied by (the automatic sign check flips it).
    pub fn set_data_sign(&mut self, sign: f32) {
        self.data_sign = if sign < 0.0 { -1.0 } else { 1.0 };
    }

    /// Multiply each image's CTF contrast by `factors[i]` (the contrast-correction pass:
    /// estimated per-image amplitudes go into the CTF, as RECOVAR does).
    pub fn multiply_contrasts(&mut self, factors: &[f32]) -> Result<()> {
        let ctf = self
            .ctf
            .as_mut()
            .ok_or_else(|| Error::invalid("the dataset has no CTF parameters to scale"))?;
        if factors.len() != ctf.len() {
            return Err(Error::invalid(format!(
                "{} contrast factors for {} images",
                factors.len(),
                ctf.len()
            )));
        }
        if let Some((i, f)) = factors
            .iter()
            .enumerate()
            .find(|(_, f)| !f.is_finite() || **f <= 0.0)
        {
            return Err(Error::invalid(format!(
                "contrast factor {i} is {f}; it must be positive"
            )));
        }
        for (c, f) in ctf.iter_mut().zip(factors) {
            c.contrast *= f;
        }
        Ok(())
    }

    /// Bytes of one image in memory (f32).
    pub fn image_bytes(&self) -> usize {
        self.box_size * self.box_size * std::mem::size_of::<f32>()
    }

    /// Images per batch so that a batch of images, each taking `bytes_per_image` bytes of
    /// working memory, fits in `budget_bytes`; at least 1 and at most the dataset size.
    pub fn batch_size_for_budget(&self, budget_bytes: u64, bytes_per_image: u64) -> usize {
        let per = bytes_per_image.max(1);
        ((budget_bytes / per) as usize).clamp(1, self.len().max(1))
    }

    /// Consecutive position ranges of at most `batch_size` images covering the dataset.
    pub fn batches(&self, batch_size: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let b = batch_size.max(1);
        (0..self.len())
            .step_by(b)
            .map(move |s| s..(s + b).min(self.len()))
    }

    /// Read the images at dataset positions `positions` into `out`
    /// (`positions.len() · D²` values), multiplied by the data sign.
    pub fn read_images(&self, positions: &[usize], out: &mut [f32]) -> Result<()> {
        let npix = self.box_size * self.box_size;
        if let Some(&bad) = positions.iter().find(|&&p| p >= self.len()) {
            return Err(Error::invalid(format!(
                "image position {bad} out of range (dataset has {} images)",
                self.len()
            )));
        }
        if out.len() != positions.len() * npix {
            return Err(Error::invalid(format!(
                "output buffer holds {} values; {} images need {}",
                out.len(),
                positions.len(),
                positions.len() * npix
            )));
        }
        match &self.preloaded {
            Some(all) => {
                for (o, &p) in out.chunks_exact_mut(npix).zip(positions) {
                    o.copy_from_slice(&all[p * npix..(p + 1) * npix]);
                }
            }
            None => {
                let ids: Vec<usize> = positions.iter().map(|&p| self.original[p]).collect();
                self.source.read(&ids, out)?;
            }
        }
        if self.data_sign != 1.0 {
            for v in out.iter_mut() {
                *v *= self.data_sign;
            }
        }
        Ok(())
    }

    /// Read a contiguous range of positions.
    pub fn read_range(&self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        let pos: Vec<usize> = range.collect();
        self.read_images(&pos, out)
    }

    /// Read the first and the last selected image and check every pixel is finite: catches
    /// truncated or corrupt stacks before a long run starts.
    pub fn check_images_readable(&self) -> Result<()> {
        let npix = self.box_size * self.box_size;
        let mut buf = vec![0.0f32; npix];
        let mut probe = vec![0, self.len() - 1];
        probe.dedup();
        for p in probe {
            self.read_images(&[p], &mut buf)?;
            if let Some(k) = buf.iter().position(|v| !v.is_finite()) {
                return Err(Error::format(
                    self.source.description(),
                    format!(
                        "image {} (0-based) has a non-finite pixel at ({}, {})",
                        self.original[p],
                        k % self.box_size,
                        k / self.box_size
                    ),
                ));
            }
        }
        Ok(())
    }

    fn preload(&mut self) -> Result<()> {
        let npix = self.box_size * self.box_size;
        let mut all = vec![0.0f32; self.len() * npix];
        let ids: Vec<usize> = self.original.clone();
        self.source.read(&ids, &mut all)?;
        self.preloaded = Some(std::sync::Arc::new(all));
        Ok(())
    }
}

fn check_count(have: usize, want: usize, what: &str, file: &Path, particles: &Path) -> Result<()> {
    if have != want {
        return Err(Error::inconsistent(format!(
            "{} has {have} {what} but {} has {want} images; they must describe the same particles \
             (apply --ind to both, not to one)",
            file.display(),
            particles.display()
        )));
    }
    Ok(())
}

/// Per-image CTF parameters and the pixel size for images of side `d` (see module docs).
fn ctf_for_images(
    t: &CtfTable,
    original: &[usize],
    d: usize,
    path: &Path,
) -> Result<(Vec<CtfParams>, (f64, f64), f64)> {
    let first = t.rows[original[0]];
    let vs = first[0] * first[1] / d as f64;
    for &i in original {
        let r = &t.rows[i];
        let v = r[0] * r[1] / d as f64;
        if (v - vs).abs() > 1e-4 * vs {
            return Err(Error::format(
                path,
                format!(
                    "CTF row {i} implies a pixel size of {v:.5} Å for {d}-px images but row {} \
                     implies {vs:.5} Å; all images must share one pixel size",
                    original[0]
                ),
            ));
        }
    }
    let ctf = original
        .iter()
        .map(|&i| CtfParams::from_row(&t.rows[i]))
        .collect();
    Ok((ctf, (first[0], first[1]), vs))
}

fn has_star_angles(star: &crate::io::star::StarFile) -> bool {
    star.particles()
        .map(|t| {
            t.has_column("_rlnAngleRot")
                && t.has_column("_rlnAngleTilt")
                && t.has_column("_rlnAnglePsi")
        })
        .unwrap_or(false)
}

fn star_has_ctf(star: &crate::io::star::StarFile) -> bool {
    star.particles()
        .map(|t| t.has_column("_rlnDefocusU"))
        .unwrap_or(false)
}

/// A .star file used directly for CTF or Å shifts must say its pixel size: RELION 3.0
/// files often carry stale detector values after binning, so we do not guess.
fn require_star_pixel_size(
    star: &crate::io::star::StarFile,
    path: &Path,
    what: &str,
    command: &str,
    flag: &str,
) -> Result<()> {
    if star
        .optics_values_f64("_rlnImagePixelSize")
        .map_err(|e| e.in_file(path))?
        .is_none()
    {
        return Err(Error::format(
            path,
            format!(
                "has no _rlnImagePixelSize, so the pixel size of its {what} is unknown: make a \
                 file with `recovar {command} {} -D <box> --Apix <Å/px> -o {out}` and pass {flag} {out}",
                path.display(),
                out = if what == "CTF" { "ctf.pkl" } else { "poses.pkl" },
            ),
        ));
    }
    Ok(())
}

fn star_box_size(star: &crate::io::star::StarFile) -> Result<Option<usize>> {
    Ok(star
        .optics_values_f64("_rlnImageSize")?
        .and_then(|v| v.first().map(|&x| x as usize)))
}

/// `_rlnRandomSubset` (1 or 2 per particle) as halfsets of dataset positions.
fn random_subset(
    star: &crate::io::star::StarFile,
    path: &Path,
    original: &[usize],
) -> Result<Option<[Vec<usize>; 2]>> {
    let table = star.particles().map_err(|e| e.in_file(path))?;
    let Some(sub) = table
        .column_f64("_rlnRandomSubset")
        .map_err(|e| e.in_file(path))?
    else {
        return Ok(None);
    };
    let mut h = [Vec::new(), Vec::new()];
    for (pos, &i) in original.iter().enumerate() {
        let v = sub[i];
        if v == 1.0 {
            h[0].push(pos);
        } else if v == 2.0 {
            h[1].push(pos);
        } else {
            return Err(Error::format(
                path,
                format!(
                    "particle {}: _rlnRandomSubset is {v}; expected 1 or 2",
                    i + 1
                ),
            ));
        }
    }
    if h[0].is_empty() || h[1].is_empty() {
        tracing::warn!(
            "{}: _rlnRandomSubset puts every selected image in one half; using a random split",
            path.display()
        );
        return Ok(None);
    }
    Ok(Some(h))
}

/// Read `--ind`: a pickle holding a 1-D integer array (or list) of 0-based particle indices,
/// or a boolean mask of length `total`. Duplicates are dropped keeping the first occurrence
/// (as RECOVAR does); out-of-range indices are an error.
pub fn read_index_file(path: &Path, total: usize) -> Result<Vec<usize>> {
    let value = pickle::load(path)?;
    let bad = |msg: String| Error::format(path, msg);
    let raw: Vec<i64> = match &value {
        PyValue::Array(a) if a.dtype() == pickle::Dtype::Bool => {
            if a.len() != total {
                return Err(bad(format!(
                    "boolean mask has {} entries but the particle file has {total} images",
                    a.len()
                )));
            }
            let m = a.to_i64_vec()?;
            m.iter()
                .enumerate()
                .filter(|(_, &v)| v != 0)
                .map(|(i, _)| i as i64)
                .collect()
        }
        PyValue::Array(a) => {
            if a.ndim() != 1 {
                return Err(bad(format!(
                    "expected a 1-D array of indices; found shape {:?}",
                    a.shape()
                )));
            }
            a.to_i64_vec().map_err(|e| e.in_file(path))?
        }
        PyValue::List(items) | PyValue::Tuple(items) => items
            .iter()
            .map(|v| match v {
                PyValue::Int(i) => Ok(*i),
                other => Err(bad(format!(
                    "expected integer indices; found a {}",
                    other.type_name()
                ))),
            })
            .collect::<Result<_>>()?,
        other => {
            return Err(bad(format!(
                "expected an array of 0-based particle indices; found a {}",
                other.type_name()
            )))
        }
    };
    let mut seen = vec![false; total];
    let mut out = Vec::with_capacity(raw.len());
    for (k, &i) in raw.iter().enumerate() {
        if i < 0 || i as usize >= total {
            return Err(bad(format!(
                "index {i} (entry {k}) is out of range: the particle file has {total} images (indices are 0-based)"
            )));
        }
        let i = i as usize;
        if !seen[i] {
            seen[i] = true;
            out.push(i);
        }
    }
    if out.len() < raw.len() {
        tracing::warn!(
            "{}: dropped {} duplicate indices",
            path.display(),
            raw.len() - out.len()
        );
    }
    Ok(out)
}

/// Read `--halfsets`: a pickle of two integer arrays of particle indices (as RECOVAR writes
/// model/halfsets.pkl). Returns sorted dataset positions. Selected images in neither half
/// are an error, as is an image in both.
fn read_halfsets(path: &Path, original: &[usize]) -> Result<[Vec<usize>; 2]> {
    let value = pickle::load(path)?;
    let bad = |msg: String| Error::format(path, msg);
    let items = match &value {
        PyValue::List(v) | PyValue::Tuple(v) if v.len() == 2 => v,
        PyValue::Array(a) if a.ndim() == 2 && a.shape()[0] == 2 => {
            // A 2×(n/2) array also works.
            let all = a.to_i64_vec().map_err(|e| e.in_file(path))?;
            let half = a.shape()[1];
            return halves_to_positions(path, [&all[..half], &all[half..]], original);
        }
        other => {
            return Err(bad(format!(
                "expected a list of two index arrays; found a {}",
                other.type_name()
            )))
        }
    };
    let mut halves: Vec<Vec<i64>> = Vec::with_capacity(2);
    for (k, it) in items.iter().enumerate() {
        let v = match it {
            PyValue::Array(a) => a.to_i64_vec().map_err(|e| e.in_file(path))?,
            PyValue::List(l) => l
                .iter()
                .map(|x| match x {
                    PyValue::Int(i) => Ok(*i),
                    o => Err(bad(format!(
                        "halfset {k}: expected integers, found a {}",
                        o.type_name()
                    ))),
                })
                .collect::<Result<_>>()?,
            o => {
                return Err(bad(format!(
                    "halfset {k}: expected an index array, found a {}",
                    o.type_name()
                )))
            }
        };
        halves.push(v);
    }
    halves_to_positions(path, [&halves[0], &halves[1]], original)
}

fn halves_to_positions(
    path: &Path,
    halves: [&[i64]; 2],
    original: &[usize],
) -> Result<[Vec<usize>; 2]> {
    let max = original.iter().copied().max().unwrap_or(0);
    let mut pos_of = vec![usize::MAX; max + 1];
    for (p, &i) in original.iter().enumerate() {
        pos_of[i] = p;
    }
    let mut which = vec![u8::MAX; original.len()];
    let mut out = [Vec::new(), Vec::new()];
    for (h, idx) in halves.iter().enumerate() {
        for &i in idx.iter() {
            let p = usize::try_from(i)
                .ok()
                .and_then(|i| pos_of.get(i).copied())
                .filter(|&p| p != usize::MAX);
            let Some(p) = p else {
                return Err(Error::format(
                    path,
                    format!(
                        "halfset {h} names particle {i}, which is not among the selected images"
                    ),
                ));
            };
            if which[p] != u8::MAX && which[p] != h as u8 {
                return Err(Error::format(
                    path,
                    format!("particle {i} is in both halfsets"),
                ));
            }
            if which[p] == u8::MAX {
                which[p] = h as u8;
                out[h].push(p);
            }
        }
    }
    if let Some(p) = which.iter().position(|&w| w == u8::MAX) {
        return Err(Error::format(
            path,
            format!(
                "particle {} is in neither halfset; the halfsets must cover every selected image",
                original[p]
            ),
        ));
    }
    out[0].sort_unstable();
    out[1].sort_unstable();
    Ok(out)
}
