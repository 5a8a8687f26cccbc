//! Solvent masks (algorithms.md §4.1, §4.2, §4.4): the volume mask, the dilated mask used
//! for noise estimation and image masking, the focus mask and its complement, and the
//! binary morphology they are made of.
//!
//! # Conventions
//! - Volumes are `n × n × n`, z slowest, x fastest: `flat = (z·n + y)·n + x`, the same
//!   order as the MRC file on disk, and the centre voxel is `(n/2, n/2, n/2)`. (The Python
//!   tool transposes MRC cubes on read and back on write; every operation here is
//!   symmetric under axis permutations, so working in file order gives the same files.)
//! - Binary volumes are `&[bool]`, soft masks `Vec<f32>` in `[0, 1]`.
//! - Morphology follows scipy.ndimage: [`dilate`] is `binary_dilation` with the default
//!   6-connected cross repeated `iterations` times and voxels outside the box counting as
//!   false; [`fill_holes`] and [`largest_component`] use 6-connectivity (scipy's default
//!   structure); [`gaussian_filter`] truncates at 4σ and reflects at the border
//!   (`mode="reflect"`, `d c b a | a b c d | d c b a`).
//! - Distances are in voxels. [`distance_transform`] is exact (integer squared distances,
//!   no rounding), like `distance_transform_edt`.
//!
//! # The recipes
//! - **Soft edge** ([`soften`], §4.1): `d` = Euclidean distance to the nearest `true`
//!   voxel; value `½ + ½cos(πd/r)` for `d < r`, 0 beyond (so 1 on the mask), `r = 3`.
//! - **`--mask file.mrc`** (§4.2): read, check it is a finite cube; with
//!   `--mask-dilate-iter k > 0` threshold at 0.99 and dilate `k` times at the file's size;
//!   resample to `n` when the size differs (Fourier, [`crate::fourier::resample_volume`]);
//!   threshold at 0.5; `mask = soften(binary, 3)`. With `--dont-resmooth-mask` the values
//!   are used as they are and the binary base is `values > 0.5`.
//!   `dilated = soften(dilate(binary, dil_iters), 3)`, `dil_iters = ceil(6n/128)` unless
//!   `--dilated-mask-dilation-iters` says otherwise.
//! - **`from_halfmaps`** ([`mask_from_halfmaps`]): average the two real-space halfmaps →
//!   Gaussian low-pass σ = `max(2, n/64)` voxels → Otsu threshold (256 bins) over the voxels
//!   of the ball `|r| ≤ n/2 − 1` → `binary = (filtered > t) ∧ ball` → fill holes → largest
//!   6-connected component → extend to Euclidean distance `≤ ceil(6n/128)` → soft edge 3 →
//!   values below 1e-3 set to 0. As in RECOVAR 1.0.5, the dilated mask then dilates every
//!   *nonzero* voxel of that soft mask (scipy treats a float array's nonzeros as
//!   foreground), so it reaches about 3 voxels further than for a file mask; the volume mask
//!   is re-softened from its `≥ 0.9` core, which changes nothing.
//! - **`sphere`**: the hard ball `|r| ≤ n/2 − 1` for both masks; **`none`**: all ones.
//! - **Focus / complement** (§4.4): the focus mask goes through the file recipe;
//!   `complement = soften((volume > 0.9) ∧ ¬(focus > 0.9), 3)`.
//!
//! # Cost
//! Everything is O(n³) (the Gaussian O(n³σ)), parallel over planes with rayon, and
//! deterministic whatever the thread count. The distance transforms keep one `u32` copy of
//! the volume besides input and output; flood fills are breadth-first with an explicit
//! queue (no recursion), whose length stays near the surface of the region.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;

use crate::fourier::{centered_freq, resample_volume};
use crate::io::mrc::read_volume;
use crate::{Error, Result};

/// Width in voxels of the cosine soft edge of every pipeline mask (RECOVAR's `kernel_size`).
pub const SOFT_EDGE: f64 = 3.0;

/// Number of histogram bins of the Otsu threshold (skimage's default).
pub const OTSU_BINS: usize = 256;

/// Values of the from-halfmaps mask below this are set to zero (RECOVAR's `make_mask`).
const MIN_MASK_VALUE: f32 = 1e-3;

/// How the solvent mask is chosen (`--mask`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskOption {
    /// A mask volume in an MRC file.
    File(PathBuf),
    /// Made from the two regularized halfmap means ([`mask_from_halfmaps`]).
    FromHalfmaps,
    /// The ball of radius `n/2 − 1`.
    Sphere,
    /// No mask: all ones.
    None,
}

impl FromStr for MaskOption {
    type Err = Error;

    /// `"from_halfmaps"`, `"sphere"` and `"none"` name the built-in masks; anything else is
    /// a path. Whether that file exists is checked when the mask is made, so that the
    /// error can say what `--mask` accepts (a typo such as `spehre` ends up there too).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" => Err(Error::invalid(
                "--mask is empty: give a .mrc path, from_halfmaps, sphere or none",
            )),
            "from_halfmaps" => Ok(MaskOption::FromHalfmaps),
            "sphere" => Ok(MaskOption::Sphere),
            "none" => Ok(MaskOption::None),
            path => Ok(MaskOption::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for MaskOption {
    /// The command-line spelling, so that `s.parse::<MaskOption>()` gives it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskOption::File(p) => write!(f, "{}", p.display()),
            MaskOption::FromHalfmaps => f.write_str("from_halfmaps"),
            MaskOption::Sphere => f.write_str("sphere"),
            MaskOption::None => f.write_str("none"),
        }
    }
}

/// The two masks of the pipeline, each `n³` values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Masks {
    /// The solvent (volume) mask: FSC regularization of covariance columns, contrast, saved.
    pub mask: Vec<f32>,
    /// The dilated mask: noise estimation, image masking, variance (§4.3).
    pub dilated: Vec<f32>,
    /// Side of the grid.
    pub n: usize,
}

/// Options of the mask recipes that come from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskSettings {
    /// `--mask-dilate-iter`: dilate a file mask (thresholded at 0.99) this many times at the
    /// file's own size before anything else. 0 (default): no dilation.
    pub mask_dilate_iter: usize,
    /// `--dilated-mask-dilation-iters`: dilations that turn the mask into the dilated mask.
    /// `None` (default): `ceil(6n/128)`, 6 voxels at n = 128 and proportionally fewer on
    /// smaller grids (about the same width in Å for a downsampled box).
    pub dilated_mask_iters: Option<usize>,
    /// `--dont-resmooth-mask`: use a file mask's values as they are (no threshold, no soft
    /// edge); only its `> 0.5` part is dilated for the dilated mask.
    pub dont_resmooth: bool,
}

impl MaskSettings {
    /// The number of dilations for the dilated mask on a grid of side `n`.
    pub fn dilated_iters(&self, n: usize) -> usize {
        self.dilated_mask_iters
            .unwrap_or_else(|| default_dilation_iters(n))
    }
}

/// `ceil(6n/128)`: RECOVAR's default dilation (and from-halfmaps extension) in voxels, which
/// keeps the same physical width when a dataset is downsampled.
pub fn default_dilation_iters(n: usize) -> usize {
    (6 * n).div_ceil(128)
}

/// Make the volume mask and the dilated mask for `--mask` (§4.2, see the module doc).
///
/// `halfmaps` are the two real-space halfset means (`n³` each); they are needed for
/// [`MaskOption::FromHalfmaps`] only and ignored otherwise.
pub fn make_masks(
    option: &MaskOption,
    n: usize,
    settings: &MaskSettings,
    halfmaps: Option<(&[f32], &[f32])>,
) -> Result<Masks> {
    check_side(n)?;
    let dil_iters = settings.dilated_iters(n);
    let (mask, dilated) = match option {
        MaskOption::File(path) => {
            let (mask, base) = file_mask(path, n, settings)?;
            let dilated = soften(&dilate(&base, n, dil_iters), n, SOFT_EDGE);
            (mask, dilated)
        }
        MaskOption::FromHalfmaps => {
            let (h1, h2) = halfmaps.ok_or_else(|| {
                Error::invalid(
                    "--mask from_halfmaps needs the two halfmap means, and none were given \
                     (internal: compute the regularized halfset means before the masks)",
                )
            })?;
            let soft = mask_from_halfmaps(h1, h2, n)?;
            // RECOVAR dilates the soft mask itself: scipy takes every nonzero as foreground.
            let base: Vec<bool> = soft.par_iter().map(|&v| v != 0.0).collect();
            let dilated = soften(&dilate(&base, n, dil_iters), n, SOFT_EDGE);
            drop(base);
            let core: Vec<bool> = soft.par_iter().map(|&v| v >= 0.9).collect();
            let mask = soften(&core, n, SOFT_EDGE);
            tracing::info!("using the mask computed from the halfmaps");
            (mask, dilated)
        }
        MaskOption::Sphere => {
            tracing::info!(
                "using a spherical mask of radius {}",
                (n / 2).saturating_sub(1)
            );
            let ball = sphere_mask(n);
            (ball.clone(), ball)
        }
        MaskOption::None => {
            tracing::info!("using no mask");
            (vec![1.0; n * n * n], vec![1.0; n * n * n])
        }
    };
    Ok(Masks { mask, dilated, n })
}

/// The focus mask of `--focus-mask` (§4.4): the `.mrc` recipe of §4.2, softened mask only.
pub fn focus_mask(path: &Path, n: usize, settings: &MaskSettings) -> Result<Vec<f32>> {
    check_side(n)?;
    file_mask(path, n, settings).map(|(mask, _)| mask)
}

/// The complement of the focus mask inside the volume mask (§4.4):
/// `soften((volume_mask > 0.9) ∧ ¬(focus > 0.9), 3)`. PCA runs on it first so that the
/// motion outside the focus region is captured by its own components.
///
/// # Panics
/// If either mask does not hold `n³` values (both come from this module).
pub fn complement_mask(volume_mask: &[f32], focus: &[f32], n: usize) -> Vec<f32> {
    let len = n * n * n;
    assert!(
        volume_mask.len() == len && focus.len() == len,
        "complement_mask: masks of {} and {} values for a grid of side {n}",
        volume_mask.len(),
        focus.len()
    );
    let rest: Vec<bool> = volume_mask
        .par_iter()
        .zip(focus.par_iter())
        .map(|(&v, &f)| v > 0.9 && f <= 0.9)
        .collect();
    soften(&rest, n, SOFT_EDGE)
}

/// Read a mask volume, check it and bring it to the grid of side `n`.
///
/// The file must hold a finite N×N×N cube; a cube of another size is resampled to `n`
/// (Fourier cropping or padding, same physical box, values clamped to `[0, 1]` afterwards
/// against ringing) and says so at `info` level. At least one voxel must exceed 0.5 after
/// that, since every recipe thresholds there.
pub fn load_mask_volume(path: &Path, n: usize) -> Result<Vec<f32>> {
    check_side(n)?;
    let (data, n_file) = read_mask_cube(path)?;
    let data = resample_mask(data, n_file, n, path)?;
    require_voxel_above(&data, 0.5, path, n_file != n)?;
    Ok(data)
}

/// The `.mrc` recipe of §4.2: the (soft) mask and the binary base of the dilated mask.
fn file_mask(path: &Path, n: usize, settings: &MaskSettings) -> Result<(Vec<f32>, Vec<bool>)> {
    let (data, n_file) = read_mask_cube(path)?;
    if settings.dont_resmooth {
        if settings.mask_dilate_iter > 0 {
            tracing::warn!(
                "--mask-dilate-iter {} is ignored: --dont-resmooth-mask uses {} as it is",
                settings.mask_dilate_iter,
                path.display()
            );
        }
        let mask = resample_mask(data, n_file, n, path)?;
        require_voxel_above(&mask, 0.5, path, n_file != n)?;
        let base = mask.par_iter().map(|&v| v > 0.5).collect();
        return Ok((mask, base));
    }
    let data = if settings.mask_dilate_iter > 0 {
        tracing::info!(
            "thresholding {} at 0.99 and dilating it {} times",
            path.display(),
            settings.mask_dilate_iter
        );
        require_voxel_above(&data, 0.99, path, false)?;
        let core: Vec<bool> = data.par_iter().map(|&v| v > 0.99).collect();
        drop(data);
        let grown = dilate(&core, n_file, settings.mask_dilate_iter);
        grown
            .par_iter()
            .map(|&b| if b { 1.0 } else { 0.0 })
            .collect()
    } else {
        data
    };
    let data = resample_mask(data, n_file, n, path)?;
    require_voxel_above(&data, 0.5, path, n_file != n)?;
    let binary: Vec<bool> = data.par_iter().map(|&v| v > 0.5).collect();
    drop(data);
    tracing::info!(
        "thresholding {} at 0.5 and softening it with a cosine edge of {SOFT_EDGE} voxels",
        path.display()
    );
    Ok((soften(&binary, n, SOFT_EDGE), binary))
}

fn check_side(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("masks need a grid side n ≥ 1, got 0"));
    }
    if u32::try_from(n).is_err() || n.checked_pow(3).is_none() {
        return Err(Error::invalid(format!("grid side {n} is too large")));
    }
    Ok(())
}

/// Read an MRC file that must hold a finite cube; returns its values (file order) and side.
fn read_mask_cube(path: &Path) -> Result<(Vec<f32>, usize)> {
    if !path.exists() {
        return Err(Error::invalid(format!(
            "mask file {} does not exist (--mask takes a .mrc path, from_halfmaps, sphere or \
             none; --focus-mask takes a .mrc path)",
            path.display()
        )));
    }
    let vol = read_volume(path)?;
    let [nz, ny, nx] = vol.shape;
    if nz == 1 || ny == 1 || nx == 1 {
        return Err(Error::format(
            path,
            format!(
                "mask is {nx}×{ny}×{nz} (x×y×z), a 2-D image: a mask must be a 3-D N×N×N \
                 volume on the box of the particles"
            ),
        ));
    }
    if !(nz == ny && ny == nx) {
        return Err(Error::format(
            path,
            format!(
                "mask is {nx}×{ny}×{nz} (x×y×z), not a cube: a mask must be an N×N×N volume \
                 on the box of the particles (pad or crop it to a cube first)"
            ),
        ));
    }
    if let Some(i) = vol.data.iter().position(|v| !v.is_finite()) {
        let (z, y, x) = (i / (nx * nx), (i / nx) % nx, i % nx);
        return Err(Error::format(
            path,
            format!(
                "mask holds a non-finite value ({}) at voxel x={x}, y={y}, z={z}: a mask must \
                 be finite, ideally 0 outside and 1 inside",
                vol.data[i]
            ),
        ));
    }
    Ok((vol.data, nx))
}

/// Resample a mask from side `n_from` to `n` (no-op when equal), clamping to `[0, 1]`.
fn resample_mask(data: Vec<f32>, n_from: usize, n: usize, path: &Path) -> Result<Vec<f32>> {
    if n_from == n {
        return Ok(data);
    }
    tracing::info!(
        "{} is {n_from}³ but the data are {n}³: resampled to {n}³ (Fourier, assuming the same \
         box in Å)",
        path.display()
    );
    let mut out = resample_volume(&data, n_from, n, true)?;
    out.par_iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    Ok(out)
}

fn require_voxel_above(data: &[f32], threshold: f32, path: &Path, resampled: bool) -> Result<()> {
    if data.par_iter().any(|&v| v > threshold) {
        return Ok(());
    }
    let max = data
        .par_iter()
        .cloned()
        .reduce(|| f32::NEG_INFINITY, f32::max);
    let how = if resampled { " after resampling" } else { "" };
    Err(Error::format(
        path,
        format!(
            "mask has no voxel above {threshold}{how} (largest value {max}): a mask must mark \
             the particle with values near 1 and the solvent with 0"
        ),
    ))
}

/// The hard ball `|r| < n/2 − 1 + 1e-7` around the centre voxel, as 0/1 (RECOVAR's
/// `get_radial_mask`; with integer `|r|²` that is `|r|² ≤ (n/2 − 1)²`).
pub fn sphere_mask(n: usize) -> Vec<f32> {
    ball(n).into_par_iter().map(|b| b as u8 as f32).collect()
}

/// `|r| ≤ n/2 − 1` around the centre voxel, as booleans (empty for n < 2).
fn ball(n: usize) -> Vec<bool> {
    let r = (n / 2) as i64 - 1;
    let mut out = vec![false; n * n * n];
    if r < 0 {
        return out;
    }
    out.par_chunks_mut(n * n)
        .enumerate()
        .for_each(|(z, plane)| {
            let kz = centered_freq(z, n);
            for (j, v) in plane.iter_mut().enumerate() {
                let (ky, kx) = (centered_freq(j / n, n), centered_freq(j % n, n));
                *v = kx * kx + ky * ky + kz * kz <= r * r;
            }
        });
    out
}

// ---------------------------------------------------------------------------------------
// From halfmaps

/// The §4.2 `from_halfmaps` recipe (RECOVAR's `make_mask` on the average of the halfmaps):
/// a soft mask that follows the density, see the module doc for the steps. Errors when the
/// halfmaps are not `n³` finite values or nothing stands above the threshold.
///
/// The low-pass keeps noise from speckling the threshold; Otsu chooses the threshold
/// without a user-given density level; filling holes and keeping the largest component
/// remove cavities and noise islands; the extension by `ceil(6n/128)` voxels leaves room
/// for flexible parts.
pub fn mask_from_halfmaps(h1: &[f32], h2: &[f32], n: usize) -> Result<Vec<f32>> {
    check_side(n)?;
    let len = n * n * n;
    for (name, h) in [("first", h1), ("second", h2)] {
        if h.len() != len {
            return Err(Error::inconsistent(format!(
                "mask from halfmaps: the {name} halfmap has {} values, a {n}³ grid needs {len}",
                h.len()
            )));
        }
        if h.par_iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "mask from halfmaps: the {name} halfmap holds non-finite values; use --mask \
                 sphere or a mask file"
            )));
        }
    }
    let avg: Vec<f32> = h1
        .par_iter()
        .zip(h2.par_iter())
        .map(|(&a, &b)| ((a as f64 + b as f64) * 0.5) as f32)
        .collect();
    let sigma = (n / 64).max(2) as f64;
    let filtered = gaussian_filter(&avg, n, sigma);
    drop(avg);

    let inside = ball(n);
    let thresh = otsu_impl(&filtered, Some(&inside), OTSU_BINS);
    let binary: Vec<bool> = filtered
        .par_iter()
        .zip(inside.par_iter())
        .map(|(&v, &b)| b && v > thresh)
        .collect();
    drop(filtered);
    drop(inside);
    let count = binary.par_iter().filter(|&&b| b).count();
    if count == 0 {
        return Err(Error::invalid(format!(
            "mask from halfmaps: no voxel of the low-passed mean lies above its Otsu threshold \
             {thresh} (is the mean empty or flat?); use --mask sphere or give a mask file"
        )));
    }
    tracing::info!(
        "mask threshold {thresh:.4e} (Otsu on the low-passed mean, σ = {sigma} voxels): {count} \
         voxels"
    );
    let filled = fill_holes(&binary, n);
    drop(binary);
    let kept = largest_component(&filled, n);
    drop(filled);
    let extend = default_dilation_iters(n) as u64;
    let extended = edt_map(&kept, n, |d2| (d2 as u64) <= extend * extend);
    drop(kept);
    let mut soft = soften(&extended, n, SOFT_EDGE);
    soft.par_iter_mut().for_each(|v| {
        if *v < MIN_MASK_VALUE {
            *v = 0.0;
        }
    });
    Ok(soft)
}

// ---------------------------------------------------------------------------------------
// Distance transforms and what is built on them

/// "No site on this line yet": larger than any squared distance on a grid of side < 2¹⁶.
const INF: u32 = u32::MAX;

/// Scratch for the 1-D lower envelope of parabolas (one per thread).
struct Envelope {
    f: Vec<u32>,
    v: Vec<usize>,
    /// Left boundary of parabola k as the fraction `zn[k] / zd[k]` (`zd > 0`), so that
    /// every comparison is exact integer arithmetic.
    zn: Vec<i64>,
    zd: Vec<i64>,
}

impl Envelope {
    fn new(n: usize) -> Self {
        Envelope {
            f: vec![0; n],
            v: vec![0; n],
            zn: vec![0; n],
            zd: vec![1; n],
        }
    }
}

/// 1-D squared Euclidean distance transform in place (Felzenszwalb & Huttenlocher,
/// "Distance transforms of sampled functions", 2012): `f[p] ← min_q f[q] + (p − q)²`,
/// `INF` meaning "no site". Exact: all arithmetic is on integers.
fn squared_edt_line(line: &mut [u32], env: &mut Envelope) {
    let n = line.len();
    env.f[..n].copy_from_slice(line);
    let (f, v, zn, zd) = (&env.f[..n], &mut env.v, &mut env.zn, &mut env.zd);
    let key = |q: usize| f[q] as i64 + (q * q) as i64;
    let mut k: Option<usize> = None;
    for (q, &fq) in f.iter().enumerate() {
        if fq == INF {
            continue;
        }
        let Some(mut kk) = k else {
            v[0] = q;
            k = Some(0);
            continue;
        };
        loop {
            let p = v[kk];
            // Abscissa of the intersection of the parabolas of p and q: num / den.
            let num = key(q) - key(p);
            let den = 2 * (q - p) as i64;
            // Parabola kk is hidden when the intersection lies left of its own boundary
            // (the first parabola's boundary is −∞).
            if kk > 0 && num * zd[kk] <= zn[kk] * den {
                kk -= 1;
                continue;
            }
            kk += 1;
            v[kk] = q;
            zn[kk] = num;
            zd[kk] = den;
            break;
        }
        k = Some(kk);
    }
    let Some(last) = k else { return };
    let mut j = 0;
    for (p, out) in line.iter_mut().enumerate() {
        while j < last && zn[j + 1] < p as i64 * zd[j + 1] {
            j += 1;
        }
        let d = p.abs_diff(v[j]);
        *out = f[v[j]] + (d * d) as u32;
    }
}

/// 1-D Manhattan distance transform in place: `f[p] ← min_q f[q] + |p − q|`.
fn manhattan_line(line: &mut [u32], _env: &mut Envelope) {
    for p in 1..line.len() {
        line[p] = line[p].min(line[p - 1].saturating_add(1));
    }
    for p in (0..line.len().saturating_sub(1)).rev() {
        line[p] = line[p].min(line[p + 1].saturating_add(1));
    }
}

/// Run `op` on every column (stride `n`) of an `n × n` plane, through the buffer `col`.
fn columns(plane: &mut [u32], n: usize, col: &mut [u32], env: &mut Envelope, op: LineOp) {
    for x in 0..n {
        for (c, row) in col.iter_mut().zip(plane.chunks(n)) {
            *c = row[x];
        }
        op(&mut col[..n], env);
        for (c, row) in col.iter().zip(plane.chunks_mut(n)) {
            row[x] = *c;
        }
    }
}

type LineOp = fn(&mut [u32], &mut Envelope);

/// A separable distance transform of `binary` (0 on `true`, `INF` elsewhere, then `op`
/// along z, x and y), each result turned into the output by `finish`.
///
/// Pass 1 goes along z and x one y-slab at a time and stores the slabs as `[y][z][x]`,
/// so that pass 2 (along y) gathers each output z-plane from `n` contiguous rows: no
/// strided sweeps over the whole volume, one `u32` copy of it, all safe parallel code.
fn separable_map<T, F>(binary: &[bool], n: usize, op: LineOp, finish: F) -> Vec<T>
where
    T: Copy + Default + Send + Sync,
    F: Fn(u32) -> T + Sync,
{
    let nn = n * n;
    // Squared distances up to 3(n − 1)² must fit a u32 below INF.
    assert!(n < 37_000, "distance transform: side {n} is too large");
    assert_eq!(
        binary.len(),
        nn * n,
        "{} values do not form a volume of side {n}",
        binary.len()
    );
    let mut slabs = vec![0u32; nn * n];
    slabs.par_chunks_mut(nn).enumerate().for_each_init(
        || (vec![0u32; n], Envelope::new(n)),
        |(col, env), (y, slab)| {
            for (z, row) in slab.chunks_mut(n).enumerate() {
                let src = &binary[(z * n + y) * n..][..n];
                for (d, &b) in row.iter_mut().zip(src) {
                    *d = if b { 0 } else { INF };
                }
            }
            columns(slab, n, col, env, op);
            for row in slab.chunks_mut(n) {
                op(row, env);
            }
        },
    );
    let mut out = vec![T::default(); nn * n];
    out.par_chunks_mut(nn).enumerate().for_each_init(
        || (vec![0u32; nn], vec![0u32; n], Envelope::new(n)),
        |(plane, col, env), (z, out_plane)| {
            for (y, row) in plane.chunks_mut(n).enumerate() {
                row.copy_from_slice(&slabs[(y * n + z) * n..][..n]);
            }
            columns(plane, n, col, env, op);
            for (o, &d) in out_plane.iter_mut().zip(plane.iter()) {
                *o = finish(d);
            }
        },
    );
    out
}

/// Squared Euclidean distance to the nearest `true` voxel, mapped through `finish`
/// (`INF` when there is no `true` voxel at all).
fn edt_map<T, F>(binary: &[bool], n: usize, finish: F) -> Vec<T>
where
    T: Copy + Default + Send + Sync,
    F: Fn(u32) -> T + Sync,
{
    separable_map(binary, n, squared_edt_line, finish)
}

/// Exact Euclidean distance (voxels) from every voxel to the nearest `true` voxel, 0 on
/// `true` voxels, `+∞` everywhere when no voxel is `true`. Separable exact algorithm
/// (Felzenszwalb–Huttenlocher lower envelopes along each axis, as in Meijster et al.),
/// O(n³), integer arithmetic throughout. scipy's `distance_transform_edt(~binary)`.
///
/// # Panics
/// If `binary.len() != n³`.
pub fn distance_transform(binary: &[bool], n: usize) -> Vec<f64> {
    edt_map(binary, n, |d2| {
        if d2 == INF {
            f64::INFINITY
        } else {
            (d2 as f64).sqrt()
        }
    })
}

/// Soft-edged mask from a binary one (§4.1): 1 on `true` voxels, `½ + ½cos(πd/kern_rad)`
/// at distance `0 < d < kern_rad` from the nearest `true` voxel, 0 beyond. The cosine edge
/// keeps the mask's Fourier transform compact, so masking does not ring.
/// `kern_rad ≤ 0` (or NaN) gives the binary mask as 0/1.
///
/// # Panics
/// If `binary.len() != n³`.
pub fn soften(binary: &[bool], n: usize, kern_rad: f64) -> Vec<f32> {
    if kern_rad.is_nan() || kern_rad <= 0.0 {
        return binary.par_iter().map(|&b| b as u8 as f32).collect();
    }
    // Squared distances are integers below r²: a table of the few that matter.
    let limit = (kern_rad * kern_rad).ceil().min(u32::MAX as f64) as usize;
    let table: Vec<f32> = (0..=limit.min(1 << 24))
        .map(|d2| {
            let d = (d2 as f64).sqrt();
            if d < kern_rad {
                (0.5 + 0.5 * (std::f64::consts::PI * d / kern_rad).cos()) as f32
            } else {
                0.0
            }
        })
        .collect();
    edt_map(binary, n, |d2| {
        table.get(d2 as usize).copied().unwrap_or_else(|| {
            let d = (d2 as f64).sqrt();
            if d2 != INF && d < kern_rad {
                (0.5 + 0.5 * (std::f64::consts::PI * d / kern_rad).cos()) as f32
            } else {
                0.0
            }
        })
    })
}

/// Binary dilation by the 6-connected cross repeated `iterations` times, outside the box
/// counting as false: scipy's `binary_dilation(binary, iterations=k)`. Repeating the cross
/// `k` times reaches exactly the voxels within Manhattan distance `k` of a `true` voxel
/// (a shortest lattice path stays inside the box), so this computes a separable Manhattan
/// distance transform: O(n³) whatever `k`. `iterations = 0` returns the input (scipy would
/// instead dilate until nothing changes).
///
/// # Panics
/// If `binary.len() != n³`.
pub fn dilate(binary: &[bool], n: usize, iterations: usize) -> Vec<bool> {
    if iterations == 0 {
        assert_eq!(binary.len(), n * n * n, "dilate: not a volume of side {n}");
        return binary.to_vec();
    }
    let k = u32::try_from(iterations).unwrap_or(INF - 1);
    separable_map(binary, n, manhattan_line, |d| d <= k)
}

// ---------------------------------------------------------------------------------------
// Filtering and thresholds

/// Index of `i` in `0..n` after reflecting about the edges (scipy's `reflect`:
/// `d c b a | a b c d | d c b a`), for any offset.
fn reflect(i: i64, n: usize) -> usize {
    let period = 2 * n as i64;
    let m = i.rem_euclid(period);
    if m < n as i64 {
        m as usize
    } else {
        (period - 1 - m) as usize
    }
}

/// The normalized 1-D Gaussian of scipy's `gaussian_filter`: radius `⌊4σ + ½⌋`.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let r = (4.0 * sigma + 0.5) as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// Gaussian low-pass of a volume, separable, like scipy's
/// `gaussian_filter(vol, sigma, mode="reflect", truncate=4.0)`: f64 sums, f32 storage
/// between the three passes. `sigma ≤ 0` (or NaN) returns the input unchanged.
///
/// # Panics
/// If `vol.len() != n³`.
pub fn gaussian_filter(vol: &[f32], n: usize, sigma: f64) -> Vec<f32> {
    let nn = n * n;
    assert_eq!(
        vol.len(),
        nn * n,
        "gaussian_filter: not a volume of side {n}"
    );
    if sigma.is_nan() || sigma <= 0.0 || n == 0 {
        return vol.to_vec();
    }
    let w = gaussian_kernel(sigma);
    let r = (w.len() / 2) as i64;
    // Offsets of every tap, reflected, for each position along an axis.
    let taps: Vec<Vec<usize>> = (0..n as i64)
        .map(|p| (-r..=r).map(|k| reflect(p + k, n)).collect())
        .collect();

    // Along x: one line at a time.
    let mut a = vec![0f32; nn * n];
    a.par_chunks_mut(n)
        .zip(vol.par_chunks(n))
        .for_each(|(out, inp)| {
            for (o, t) in out.iter_mut().zip(&taps) {
                *o = t
                    .iter()
                    .zip(&w)
                    .map(|(&i, &wk)| wk * inp[i] as f64)
                    .sum::<f64>() as f32;
            }
        });
    // Along y: rows of a plane weighted and summed.
    let mut b = vec![0f32; nn * n];
    b.par_chunks_mut(nn).zip(a.par_chunks(nn)).for_each_init(
        || vec![0f64; n],
        |acc, (out, inp)| {
            for (orow, t) in out.chunks_mut(n).zip(&taps) {
                acc.iter_mut().for_each(|v| *v = 0.0);
                for (&i, &wk) in t.iter().zip(&w) {
                    for (s, &v) in acc.iter_mut().zip(&inp[i * n..(i + 1) * n]) {
                        *s += wk * v as f64;
                    }
                }
                for (o, &s) in orow.iter_mut().zip(acc.iter()) {
                    *o = s as f32;
                }
            }
        },
    );
    // Along z: whole planes weighted and summed, written back into `a`.
    a.par_chunks_mut(nn).zip(&taps).for_each_init(
        || vec![0f64; nn],
        |acc, (out, t)| {
            acc.iter_mut().for_each(|v| *v = 0.0);
            for (&i, &wk) in t.iter().zip(&w) {
                for (s, &v) in acc.iter_mut().zip(&b[i * nn..(i + 1) * nn]) {
                    *s += wk * v as f64;
                }
            }
            for (o, &s) in out.iter_mut().zip(acc.iter()) {
                *o = s as f32;
            }
        },
    );
    a
}

/// Otsu's threshold as skimage's `threshold_otsu(values, nbins=bins)` computes it: a
/// histogram of `bins` equal bins over `[min, max]` (numpy's binning), the bin centre that
/// maximizes the between-class variance (first maximum), the threshold being "above it" is
/// foreground. All values equal: that value. Non-finite values are skipped; none left (or
/// `bins == 0`): NaN. Arithmetic is f64, so a value within rounding of a bin edge may land
/// in the other bin than in numpy's float32 histogram.
pub fn otsu_threshold(values: &[f32], bins: usize) -> f32 {
    otsu_impl(values, None, bins)
}

/// [`otsu_threshold`] over the values where `select` is true (all when `None`).
fn otsu_impl(values: &[f32], select: Option<&[bool]>, bins: usize) -> f32 {
    let picked = |i: usize, v: f32| v.is_finite() && select.is_none_or(|s| s[i]);
    const CHUNK: usize = 1 << 16;
    let (lo, hi) = values
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            chunk
                .iter()
                .enumerate()
                .filter(|&(j, &v)| picked(c * CHUNK + j, v))
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (_, &v)| {
                    (lo.min(v), hi.max(v))
                })
        })
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        );
    if bins == 0 || lo > hi {
        return f32::NAN;
    }
    if lo == hi {
        return lo;
    }
    let (first, last) = (lo as f64, hi as f64);
    // numpy.linspace(first, last, bins + 1) and np.histogram's index computation.
    let step = (last - first) / bins as f64;
    let edges: Vec<f64> = (0..=bins)
        .map(|i| {
            if i == bins {
                last
            } else {
                first + i as f64 * step
            }
        })
        .collect();
    let bin_of = |v: f64| {
        let mut i = ((v - first) / (last - first) * bins as f64) as usize;
        i = i.min(bins - 1);
        if v < edges[i] {
            i = i.saturating_sub(1);
        } else if i + 1 < bins && v >= edges[i + 1] {
            i += 1;
        }
        i
    };
    let counts = values
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut h = vec![0u64; bins];
            for (j, &v) in chunk.iter().enumerate() {
                if picked(c * CHUNK + j, v) {
                    h[bin_of(v as f64)] += 1;
                }
            }
            h
        })
        .reduce(
            || vec![0u64; bins],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let centers: Vec<f64> = edges.windows(2).map(|e| (e[0] + e[1]) / 2.0).collect();
    // weight1/mean1 accumulate from the left, weight2/mean2 from the right (skimage).
    let mut w1 = vec![0f64; bins];
    let mut m1 = vec![0f64; bins];
    let (mut cw, mut cm) = (0f64, 0f64);
    for i in 0..bins {
        cw += counts[i] as f64;
        cm += counts[i] as f64 * centers[i];
        w1[i] = cw;
        m1[i] = cm / cw;
    }
    let mut w2 = vec![0f64; bins];
    let mut m2 = vec![0f64; bins];
    let (mut cw, mut cm) = (0f64, 0f64);
    for i in (0..bins).rev() {
        cw += counts[i] as f64;
        cm += counts[i] as f64 * centers[i];
        w2[i] = cw;
        m2[i] = cm / cw;
    }
    let mut best = (0usize, f64::NEG_INFINITY);
    for i in 0..bins - 1 {
        let var = w1[i] * w2[i + 1] * (m1[i] - m2[i + 1]).powi(2);
        if var > best.1 {
            best = (i, var);
        }
    }
    centers[best.0] as f32
}

// ---------------------------------------------------------------------------------------
// Connectivity

/// The up to six face neighbours of voxel `i` inside the box.
#[inline]
fn face_neighbours(i: usize, n: usize) -> impl Iterator<Item = usize> {
    let nn = n * n;
    let (z, y, x) = (i / nn, (i / n) % n, i % n);
    [
        (x > 0).then(|| i - 1),
        (x + 1 < n).then(|| i + 1),
        (y > 0).then(|| i - n),
        (y + 1 < n).then(|| i + n),
        (z > 0).then(|| i - nn),
        (z + 1 < n).then(|| i + nn),
    ]
    .into_iter()
    .flatten()
}

/// Fill the holes of a binary volume: every `false` region not connected (6-connectivity)
/// to the border of the box becomes `true`, like scipy's `binary_fill_holes`. Done by a
/// breadth-first flood of the background from the border. Cavities inside a particle are
/// solvent only in appearance; the mask should cover them.
///
/// # Panics
/// If `binary.len() != n³`.
pub fn fill_holes(binary: &[bool], n: usize) -> Vec<bool> {
    let nn = n * n;
    assert_eq!(binary.len(), nn * n, "fill_holes: not a volume of side {n}");
    // `true` = foreground or not (yet) known to be connected to the border.
    let mut out = vec![true; nn * n];
    let mut queue = VecDeque::new();
    let on_border = |i: usize| {
        let (z, y, x) = (i / nn, (i / n) % n, i % n);
        z == 0 || y == 0 || x == 0 || z + 1 == n || y + 1 == n || x + 1 == n
    };
    for i in (0..nn * n).filter(|&i| on_border(i)) {
        if !binary[i] && out[i] {
            out[i] = false;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        for j in face_neighbours(i, n) {
            if !binary[j] && out[j] {
                out[j] = false;
                queue.push_back(j);
            }
        }
    }
    out
}

/// Visit the 6-connected component of `seed` (marking `seen`), return its size.
fn flood(
    binary: &[bool],
    n: usize,
    seed: usize,
    seen: &mut [bool],
    queue: &mut VecDeque<usize>,
) -> usize {
    seen[seed] = true;
    queue.push_back(seed);
    let mut size = 0;
    while let Some(i) = queue.pop_front() {
        size += 1;
        for j in face_neighbours(i, n) {
            if binary[j] && !seen[j] {
                seen[j] = true;
                queue.push_back(j);
            }
        }
    }
    size
}

/// Keep only the largest 6-connected component of `true` voxels (scipy's `label` default
/// structure); on a tie, the one met first in file order (the lowest label, as
/// `argmax(bincount)` picks). Removes noise islands the threshold let through.
///
/// # Panics
/// If `binary.len() != n³`.
pub fn largest_component(binary: &[bool], n: usize) -> Vec<bool> {
    let len = n * n * n;
    assert_eq!(
        binary.len(),
        len,
        "largest_component: not a volume of side {n}"
    );
    let mut seen = vec![false; len];
    let mut queue = VecDeque::new();
    let mut best: Option<(usize, usize)> = None;
    for i in 0..len {
        if binary[i] && !seen[i] {
            let size = flood(binary, n, i, &mut seen, &mut queue);
            if best.is_none_or(|(s, _)| size > s) {
                best = Some((size, i));
            }
        }
    }
    let mut out = vec![false; len];
    if let Some((_, seed)) = best {
        flood(binary, n, seed, &mut out, &mut queue);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn brute_line(f: &[u32]) -> Vec<u32> {
        (0..f.len())
            .map(|p| {
                (0..f.len())
                    .filter(|&q| f[q] != INF)
                    .map(|q| f[q] + (p.abs_diff(q) * p.abs_diff(q)) as u32)
                    .min()
                    .unwrap_or(INF)
            })
            .collect()
    }

    #[test]
    fn envelope_line_matches_brute_force() {
        let mut rng = Rng::new(11);
        for len in [1usize, 2, 3, 7, 16, 33] {
            let mut env = Envelope::new(len);
            for _ in 0..200 {
                let f: Vec<u32> = (0..len)
                    .map(|_| {
                        if rng.uniform() < 0.4 {
                            INF
                        } else {
                            rng.below(60) as u32
                        }
                    })
                    .collect();
                let mut g = f.clone();
                squared_edt_line(&mut g, &mut env);
                assert_eq!(g, brute_line(&f), "f = {f:?}");
            }
        }
    }

    #[test]
    fn manhattan_line_matches_brute_force() {
        let f = [INF, INF, 0, INF, INF, INF, 0, INF];
        let mut g = f;
        manhattan_line(&mut g, &mut Envelope::new(8));
        assert_eq!(g, [2, 1, 0, 1, 2, 1, 0, 1]);
        let mut all_inf = [INF; 4];
        manhattan_line(&mut all_inf, &mut Envelope::new(4));
        assert_eq!(all_inf, [INF; 4]);
    }

    #[test]
    fn reflect_is_scipy_reflect() {
        // scipy: 'reflect' (d c b a | a b c d | d c b a)
        let got: Vec<usize> = (-6..10).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1]);
        assert_eq!(reflect(-3, 1), 0);
    }

    #[test]
    fn gaussian_kernel_is_scipy_s() {
        // scipy.ndimage._gaussian_kernel1d(2.0, 0, 8): 17 taps, exp(−k²/8) normalized.
        let w = gaussian_kernel(2.0);
        assert_eq!(w.len(), 17);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((w[8] - 0.199_474_647_864_745).abs() < 1e-12, "{}", w[8]);
        assert_eq!(gaussian_kernel(1.0).len(), 9);
    }

    #[test]
    fn otsu_histogram_puts_max_in_last_bin() {
        // Two values: min in bin 0, max in the last bin; threshold is bin 0's centre.
        let t = otsu_threshold(&[0.0, 1.0, 0.0, 1.0], 4);
        assert_eq!(t, 0.125);
        assert_eq!(otsu_threshold(&[2.5; 5], 256), 2.5);
        assert!(otsu_threshold(&[], 256).is_nan());
        assert!(otsu_threshold(&[f32::NAN], 256).is_nan());
    }

    #[test]
    fn mask_option_parses_and_prints() {
        for s in ["from_halfmaps", "sphere", "none", "some/mask.mrc"] {
            let o: MaskOption = s.parse().unwrap();
            assert_eq!(o.to_string(), s);
        }
        assert_eq!(
            "m.mrc".parse::<MaskOption>().unwrap(),
            MaskOption::File("m.mrc".into())
        );
        assert!("".parse::<MaskOption>().is_err());
    }

    #[test]
    fn default_dilation_is_ceil_6n_over_128() {
        assert_eq!(default_dilation_iters(32), 2);
        assert_eq!(default_dilation_iters(64), 3);
        assert_eq!(default_dilation_iters(128), 6);
        assert_eq!(default_dilation_iters(129), 7);
        assert_eq!(default_dilation_iters(256), 12);
    }
}
