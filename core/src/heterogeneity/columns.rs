//! Regularized columns of the covariance `Σ` (algorithms.md §5.3–§5.5).
//!
//! # Choosing the columns (§5.3, `high_snr_from_var_est`)
//!
//! [`pick_columns`] scores every N-grid frequency by `lhs_N(ξ) · variance(ξ)`, where `lhs_N`
//! is the mean stage's CTF²/σ² weight brought from the 2N grid to N (a normalised 3×3×3 box
//! average read at every second voxel, clipped at 0, times 2³: RECOVAR's `downsample_lhs`).
//! Frequencies with `round(|ξ|) ≥ max_column_freq` are out. Walking the scores from the
//! highest, a frequency with `kx < 0` is replaced by its Hermitian partner `−ξ`
//! (`Σ[:, −ξ]` follows from `Σ[:, ξ]`); a frequency already excluded is skipped; an accepted
//! one excludes every integer frequency within Euclidean distance `avoid_radius` of it, and
//! their partners.
//!
//! # Accumulating (§5.4)
//!
//! For a column ξ (integer frequency, grid index ξ + N/2) and image `i` of halfset `h`, with
//! the masked residual `r_i = DFT2(IDFT2(T_i y_i − C_i·P_i μ)·M_i)` (μ sliced with cubic
//! B-splines, `M_i` the tight mask of the dilated mask softened 3 px, with the dataset window
//! `window_mask_2d(D, 0.85, 0.99)`), and the width-2 triangular read kernel
//! `κ_p = ∏_d max(0, 1 − |g_{p,d} − ξ_d|/2)` at the pixels' grid coordinates `g_p`
//! (volume units, no clipping):
//!
//! ```text
//! e_i = Σ_p κ_p C_p r_p          c_i = Σ_p κ_p C_p²
//! B_h(ξ) += P_iᵀ[ C r conj(e_i) − noise_i ]      H_h(ξ) += P_iᵀ[ C² c_i ]
//! noise_i = C · DFT2(M_i·IDFT2(σ² · DFT2(M_i·IDFT2(C κ))))     (without masks: κ C² σ²)
//! ```
//!
//! `P_iᵀ` is the trilinear backprojection on the N grid, clipped at radius D/2 − 1 (the
//! same voxels and weights as the backend's; the backend's column accumulator,
//! [`crate::backend::columns`], backprojects each reached image straight into the column's
//! accumulators, with `C r conj(e_i) − noise_i` and `C² c_i` formed on the fly, and keeps
//! the accumulators (on the GPU for the CUDA backend) for the whole pass). `noise_i` is the expectation of the noise
//! part of `C r conj(e_i)`; it vanishes with κ. Only images whose central plane passes
//! within the read kernel of ξ (distance to the plane `< 2·‖n‖₁`, `n` the viewing direction)
//! have `e_i, c_i ≠ 0`, so the others are skipped: at the low frequencies where columns are
//! picked that is half to three quarters of the images, at high frequencies most of them.
//!
//! Sums are in f64, per column in image order, then pixel order; the columns of a pass run
//! in parallel, each on its own accumulators. Columns never interact, so a batch of columns
//! gives the same bits as one column at a time, with any thread count or image batching.
//!
//! # Regularizing (§5.5)
//!
//! Per column, a RELION-style FSC fixed point on the prior `τ(r)` (per shell):
//! `τ_0(r) = ρ(ξ)·ρ(r)`, `ρ(r) = (τ_mean(r) + 1e-14)·1e-2/σ²(r)`; each iteration
//! post-processes both halves with [`post_process_with`](crate::reconstruct::mean::post_process_with)
//! at upsampling 1 (regularized division, spherical mask, volume mask, gridding correction),
//! takes their FSC and sets `τ(r) = SNR(r)·Σ bot/Σ top` with `L = 8·(H_0 + H_1)/2`,
//! `top = L²/(L + 1/τ)²`, `bot = L/(L + 1/τ)²`. The factor 8 is 1.0.5's `downsample_lhs`
//! quirk (algorithms.md §18 item 1; the estimator itself uses `H + 1/τ`): kept for parity.
//! The column is `post_process(H_0 + H_1, B_0 + B_1, τ)` and its FSC curve is reported.
//!
//! The post-processing here is an exact, faster rewrite of that function for this use:
//! the spectrum is centred and the real-space weights are stored rolled by N/2, which makes
//! plain FFTs compute centred transforms; the volume mask is applied before the gridding
//! weights (RECOVAR's order); when the volume mask is zero beyond radius N/2 the soft
//! spherical mask cannot change anything (it only alters voxels beyond N/2) and is skipped,
//! and the transforms are pruned to the lines that can be non-zero (input inside the valid
//! sphere, real-space output inside the mask's bounding box, FSC output inside the sphere).
//! A unit test checks it against `post_process_with`.
//!
//! The fixed point may stop early once the prior is stationary (largest relative change of
//! `τ` below [`PRIOR_TOLERANCE`]); the FSC reported is then the one of the last
//! evaluation. In practice it runs RECOVAR's `prior_iterations` (20) steps: measured on the
//! 64-px test dataset, the largest per-shell change of `τ` at step 20 is still 0.45
//! (median over columns; 0.996 at the 90th percentile): some shells keep moving (FSC near
//! the clamp), so no tolerance that leaves the result unchanged would stop it sooner.
//!
//! Each evaluation reads the column's `H`, `B` packed in the order the first transform pass
//! consumes them ([`Regularizer::pack`]) and takes the shell floors from per-shell sums of
//! `H` (`Σ(a + 1/τ) = Σa + n/τ`), so the per-voxel work is one division.
//!
//! # Conventions and cost
//!
//! Columns are centered `N³` spectra `Σ̂[:, ξ]`, frequencies `(kx, ky, kz)` with `kx ≥ 0`.
//! Memory: each column being accumulated holds `H_h` (f64) and `B_h` (complex f64) for both
//! halfsets, `48·N³` bytes; `memory_budget` bounds their total and so chooses how many
//! columns share one pass over the images (the result never depends on it). Each such pass
//! re-reads and re-preprocesses every image (cubic slice, tight mask, two FFTs). On top:
//! the returned columns (`8·N³` bytes each) and, per thread regularizing, two complex f32
//! work volumes (`16·N³`) and the packed column (`26·N³` at most per half). Time: per image
//! and hit column, four D×D FFTs (noise term) and one D²-pixel trilinear scatter (complex
//! and real values together); per column and fixed-point step, two pruned complex 3-D FFT
//! pairs.

use std::sync::Arc;

use num_complex::Complex;
use rayon::prelude::*;
use rustfft::{Fft, FftPlanner};

use super::variance::LHS_QUIRK;
use super::{Context, CovarianceOptions};
use crate::backend::columns::{check_freqs, ColumnBatch};
use crate::error::{Error, Result};
use crate::forward::{cubic, Interp, SliceGeometry};
use crate::fourier::fsc_from_sums;
use crate::fourier::{radial_to_image_2d, shell_index_3d, window_mask_2d, Fft2};
use crate::progress::{report, Progress};
use crate::reconstruct::mean::{denominator_floors, inverse_prior};
use crate::reconstruct::tight_mask::TightMasker;

/// Soft edge (pixels) of the tight masks of the column accumulation (§4.5).
const COLUMN_SOFTEN: usize = 3;
/// RECOVAR's `REG_INIT_MULTIPLIER`: the initial prior is `ρ(ξ)ρ(v)` with
/// `ρ = (τ_mean + 1e-14)·1e-2/σ²`.
const REG_INIT_MULTIPLIER: f64 = 1e-2;
/// The fixed point of §5.5 stops once no shell's prior moves by more than this fraction.
pub const PRIOR_TOLERANCE: f64 = 1e-6;
/// RECOVAR's tiny floor for denominators.
const EPSILON: f64 = 1e-16;
/// Lines per block in the strided FFT passes.
const LINES: usize = 16;

/// Bytes of the accumulators of one column: `H_h` (f64) and `B_h` (complex f64), 2 halves.
pub fn column_accumulator_bytes(n: usize) -> u64 {
    48 * (n as u64).pow(3)
}

// ---------------------------------------------------------------------------------------
// Column selection (§5.3)
// ---------------------------------------------------------------------------------------

/// RECOVAR's `downsample_lhs` from the 2N grid to N: box average over the 3×3×3 neighbours
/// (zero outside the grid, as `fftconvolve(mode="same")`) of 2N-grid voxel `2v`, clipped at 0
/// and multiplied by 2³.
fn downsample_lhs(lhs_2n: &[f32], n: usize) -> Vec<f64> {
    let nv = 2 * n;
    let mut out = vec![0.0f64; n * n * n];
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let mut s = 0.0f64;
                for dz in -1i64..=1 {
                    let zz = (2 * z) as i64 + dz;
                    if zz < 0 || zz >= nv as i64 {
                        continue;
                    }
                    for dy in -1i64..=1 {
                        let yy = (2 * y) as i64 + dy;
                        if yy < 0 || yy >= nv as i64 {
                            continue;
                        }
                        let row = (zz as usize * nv + yy as usize) * nv;
                        for dx in -1i64..=1 {
                            let xx = (2 * x) as i64 + dx;
                            if xx >= 0 && xx < nv as i64 {
                                s += lhs_2n[row + xx as usize] as f64;
                            }
                        }
                    }
                }
                out[(z * n + y) * n + x] = (s / 27.0).max(0.0) * 8.0;
            }
        }
    }
    out
}

/// Choose `opts.n_cols` covariance columns (§5.3, module docs): frequencies `(kx, ky, kz)`
/// with `kx ≥ 0`, highest score first. `mean_lhs_2n` is `(A_0 + A_1)/2` of the mean stage on
/// the 2N grid, `variance` the §5.2 estimate on the N grid.
///
/// Only frequencies with a positive score are candidates (RECOVAR would go on to pick
/// zero-score frequencies, which carry no data, in index order): if fewer than `n_cols` can
/// be picked, the ones that can are returned, with a warning. Ties are broken by RECOVAR's
/// vector index (kx slowest), as its stable sort does.
pub fn pick_columns(
    mean_lhs_2n: &[f32],
    variance: &[f32],
    n: usize,
    opts: &CovarianceOptions,
) -> Result<Vec<[i32; 3]>> {
    if n < 4 || !n.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "column choice: the grid side {n} must be even and ≥ 4"
        )));
    }
    let n3 = n * n * n;
    if variance.len() != n3 || mean_lhs_2n.len() != 8 * n3 {
        return Err(Error::invalid(format!(
            "column choice: variance has {} values (want N³ = {n3}), the mean's weights {} \
             (want (2N)³ = {})",
            variance.len(),
            mean_lhs_2n.len(),
            8 * n3
        )));
    }
    if opts.n_cols == 0 {
        return Err(Error::invalid(
            "column choice: the number of columns must be ≥ 1",
        ));
    }
    if !(0.0..=20.0).contains(&opts.avoid_radius) {
        return Err(Error::invalid(format!(
            "column choice: the exclusion radius {} must be in [0, 20]",
            opts.avoid_radius
        )));
    }
    if !(opts.max_column_freq.is_finite() && opts.max_column_freq > 0.0) {
        return Err(Error::invalid(format!(
            "column choice: the highest column frequency {} must be positive",
            opts.max_column_freq
        )));
    }
    let lhs = downsample_lhs(mean_lhs_2n, n);
    let shells = shell_index_3d(n);
    let h = (n / 2) as i32;
    let freq = |i: usize| -> [i32; 3] {
        [
            (i % n) as i32 - h,
            ((i / n) % n) as i32 - h,
            (i / (n * n)) as i32 - h,
        ]
    };
    // Candidates: positive score, below the frequency cap, Hermitian partner on the grid.
    let mut cand: Vec<(f64, usize, [i32; 3])> = (0..n3)
        .filter_map(|i| {
            let s = lhs[i] * variance[i] as f64;
            let f = freq(i);
            let on_grid = f.iter().all(|&k| k > -h);
            let low = (shells[i] as f64) < opts.max_column_freq;
            (s > 0.0 && s.is_finite() && on_grid && low).then(|| {
                // RECOVAR's vector index: kx slowest.
                let py =
                    (((f[0] + h) as usize * n) + (f[1] + h) as usize) * n + (f[2] + h) as usize;
                (s, py, f)
            })
        })
        .collect();
    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let idx = |f: [i32; 3]| -> Option<usize> {
        f.iter()
            .all(|&k| (-h..h).contains(&k))
            .then(|| (((f[2] + h) as usize * n) + (f[1] + h) as usize) * n + (f[0] + h) as usize)
    };
    let mut excluded = vec![false; n3];
    let reach = opts.avoid_radius.ceil() as i32;
    let r2 = opts.avoid_radius * opts.avoid_radius;
    let mut picked = Vec::with_capacity(opts.n_cols);
    for &(_, _, f) in &cand {
        if picked.len() >= opts.n_cols {
            break;
        }
        if idx(f).is_some_and(|i| excluded[i]) {
            continue;
        }
        let f = if f[0] < 0 { [-f[0], -f[1], -f[2]] } else { f };
        if idx(f).is_some_and(|i| excluded[i]) {
            continue;
        }
        picked.push(f);
        for dz in -reach..=reach {
            for dy in -reach..=reach {
                for dx in -reach..=reach {
                    if (dx * dx + dy * dy + dz * dz) as f64 > r2 {
                        continue;
                    }
                    let near = [f[0] + dx, f[1] + dy, f[2] + dz];
                    for g in [near, [-near[0], -near[1], -near[2]]] {
                        if let Some(i) = idx(g) {
                            excluded[i] = true;
                        }
                    }
                }
            }
        }
    }
    if picked.len() < opts.n_cols {
        tracing::warn!(
            "only {} covariance columns can be picked ({} asked): too few frequencies with \
             data below the frequency cap for the exclusion radius {}",
            picked.len(),
            opts.n_cols,
            opts.avoid_radius
        );
    }
    Ok(picked)
}

// ---------------------------------------------------------------------------------------
// Accumulation (§5.4)
// ---------------------------------------------------------------------------------------

/// The estimated columns.
#[derive(Clone, Debug)]
pub struct Columns {
    /// The frequencies, as given.
    pub freqs: Vec<[i32; 3]>,
    /// `Σ̂[:, ξ]` for each, a centered `N³` spectrum.
    pub columns: Vec<Vec<Complex<f32>>>,
    /// The FSC between the halfset estimates of each column (`N/2 − 1` shells).
    pub fscs: Vec<Vec<f64>>,
}

/// The preprocessed images of one batch (the backend's [`ColumnBatch`] borrows them).
struct Prepared {
    rots: Vec<[f32; 9]>,
    /// `C · r̃` (masked residual times CTF).
    cr: Vec<Complex<f32>>,
    /// The CTF.
    ctf: Vec<f32>,
    /// Tight masks (empty when images are not masked).
    masks: Vec<f32>,
}

impl Prepared {
    fn batch(&self) -> ColumnBatch<'_> {
        ColumnBatch {
            rotations: &self.rots,
            cr: &self.cr,
            ctf: &self.ctf,
            masks: &self.masks,
        }
    }
}

/// Things shared by every image batch of the accumulation.
struct Accumulation<'a> {
    ctx: &'a Context<'a>,
    d: usize,
    /// Spline coefficients of the mean.
    mean_coef: Vec<Complex<f32>>,
    geom: SliceGeometry,
    masker: Option<TightMasker>,
    window: Vec<f32>,
    fft: Fft2<f32>,
    /// The radial noise image σ²(p).
    noise: Vec<f32>,
}

impl<'a> Accumulation<'a> {
    fn new(ctx: &'a Context<'a>, mask_images: bool) -> Result<Self> {
        let d = ctx.n();
        let mut mean_coef = ctx.mean.to_vec();
        cubic::prefilter(&mut mean_coef, d)?;
        let masker = if mask_images {
            Some(TightMasker::new(ctx.dilated_mask, d)?)
        } else {
            None
        };
        Ok(Accumulation {
            ctx,
            d,
            mean_coef,
            geom: SliceGeometry::new(d, d)?,
            masker,
            window: window_mask_2d(d, 0.85, 0.99)?,
            fft: Fft2::new(d),
            noise: radial_to_image_2d(ctx.noise, d)?
                .iter()
                .map(|&v| v as f32)
                .collect(),
        })
    }

    /// Read and preprocess the images at `positions`.
    fn prepare(&self, positions: &[usize]) -> Result<Prepared> {
        let ds = self.ctx.ds;
        let be = self.ctx.backend;
        let d = self.d;
        let npix = d * d;
        let m = positions.len();
        let rotations = ds
            .rotations()
            .ok_or_else(|| Error::invalid("covariance columns need poses"))?;
        let params = ds
            .ctf()
            .ok_or_else(|| Error::invalid("covariance columns need CTF parameters"))?;
        let rots: Vec<[f32; 9]> = positions.iter().map(|&p| rotations[p]).collect();
        let mut real = vec![0.0f32; m * npix];
        ds.read_images(positions, &mut real)?;
        let shifts: Vec<[f32; 2]> = positions.iter().map(|&p| ds.translations()[p]).collect();
        let mut cr = vec![Complex::new(0.0f32, 0.0); m * npix];
        be.images_to_spectra(&real, d, &shifts, &mut cr)?;
        drop(real);
        let pars: Vec<_> = positions.iter().map(|&p| params[p]).collect();
        let mut ctf = vec![0.0f32; m * npix];
        be.ctf(&pars, d, ds.voxel_size(), &mut ctf)?;
        let mut proj = vec![Complex::new(0.0f32, 0.0); m * npix];
        be.slice(&self.mean_coef, &self.geom, Interp::Cubic, &rots, &mut proj)?;
        let masks = match &self.masker {
            Some(mk) => mk.masks(be, &rots, &self.window, Some(COLUMN_SOFTEN))?,
            None => Vec::new(),
        };
        let fft = &self.fft;
        cr.par_chunks_exact_mut(npix)
            .zip(proj.par_chunks_exact(npix))
            .zip(ctf.par_chunks_exact(npix))
            .enumerate()
            .for_each(|(i, ((y, p), c))| {
                for ((yv, pv), &cv) in y.iter_mut().zip(p).zip(c) {
                    *yv -= pv * cv;
                }
                if !masks.is_empty() {
                    // Complex masking, as RECOVAR's full-image `apply_image_masks`.
                    fft.inverse(y);
                    for (v, &w) in y.iter_mut().zip(&masks[i * npix..(i + 1) * npix]) {
                        *v *= w;
                    }
                    fft.forward(y);
                }
                for (yv, &cv) in y.iter_mut().zip(c) {
                    *yv *= cv;
                }
            });
        Ok(Prepared {
            rots,
            cr,
            ctf,
            masks,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Regularization (§5.5)
// ---------------------------------------------------------------------------------------

/// Precomputed geometry of the per-column post-processing on the N grid (module docs).
struct Regularizer {
    n: usize,
    /// Profile length N/2 − 1.
    count: usize,
    /// `round(|k|)` per voxel of the centred spectrum.
    shells: Vec<u32>,
    /// `|k| ≤ N/2 − 1` per voxel (RECOVAR's `valid_indices`).
    valid: Vec<bool>,
    /// The voxels of shells `0..count` in voxel order: the only ones the FSC, the prior
    /// update and the shell floors read (skipping the rest keeps every sum's order).
    inner: Vec<u32>,
    /// Voxels per shell `0..count`.
    shell_counts: Vec<f64>,
    /// Per y (centred index): the x-interval of lines `(y, x)` inside the disc
    /// `kx² + ky² ≤ (N/2 − 1)²`, where the spectra can be non-zero.
    disc: Vec<(usize, usize)>,
    /// Per x: the y-interval of the disc.
    disc_by_x: Vec<(usize, usize)>,
    /// Real-space weights (volume mask / gridding kernel), rolled by N/2 on every axis.
    weights: Vec<f32>,
    /// Rolled indices along z / y where the weights are non-zero somewhere.
    box_z: Vec<usize>,
    box_y: Vec<usize>,
    /// Soft spherical mask weights `m` per rolled voxel, when the mask does not make it a
    /// no-op.
    sphere: Option<Vec<f32>>,
    fwd: Arc<dyn Fft<f32>>,
    inv: Arc<dyn Fft<f32>>,
    scratch_len: usize,
}

/// Per-shell sums of a data weight `a = Σ_k H_k` (shells `0..count`): `Σ a` and
/// `Σ inverse_prior(0, a)` (the prior's stand-in where τ vanishes).
struct ShellStats {
    a: Vec<f64>,
    fallback: Vec<f64>,
}

/// One column's data in the order the post-processing reads it ([`Regularizer::pack`]).
struct Packed {
    a: Vec<f64>,
    b: Vec<Complex<f64>>,
    /// Shell, clamped to the last of `0..count`.
    shell: Vec<u16>,
}

/// Per-thread working memory of the regularization.
struct Work {
    vols: [Vec<Complex<f32>>; 2],
    lines: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl Regularizer {
    fn new(volume_mask: &[f32], n: usize) -> Result<Self> {
        let n3 = n * n * n;
        if volume_mask.len() != n3 {
            return Err(Error::invalid(format!(
                "column regularization: the volume mask has {} values, expected {n}³",
                volume_mask.len()
            )));
        }
        let h = n / 2;
        let hi = h as i64;
        let rmax2 = (hi - 1) * (hi - 1);
        let c = |i: usize| i as i64 - hi;
        let valid: Vec<bool> = (0..n3)
            .map(|i| {
                let (x, y, z) = (c(i % n), c((i / n) % n), c(i / (n * n)));
                x * x + y * y + z * z <= rmax2
            })
            .collect();
        let interval = |other: i64| -> (usize, usize) {
            let rem = rmax2 - other * other;
            if rem < 0 {
                return (0, 0);
            }
            let m = (rem as f64).sqrt().floor() as i64;
            let m = (m..=m + 1).rev().find(|v| v * v <= rem).unwrap_or(m);
            (
                ((hi - m).max(0)) as usize,
                ((hi + m + 1).min(n as i64)) as usize,
            )
        };
        let disc: Vec<(usize, usize)> = (0..n).map(|y| interval(c(y))).collect();
        let disc_by_x = disc.clone();
        // Gridding: divide by sinc²(k/N) per axis (trilinear kernel, no oversampling).
        let ginv: Vec<f64> = (0..n)
            .map(|i| {
                let u = c(i) as f64 / n as f64;
                let s = if u.abs() < 1e-8 {
                    1.0
                } else {
                    let a = std::f64::consts::PI * u;
                    a.sin() / a
                };
                1.0 / (s * s)
            })
            .collect();
        let roll = |r: usize| (r + h) % n; // rolled index -> centred index
        let mut weights = vec![0.0f32; n3];
        let (mut any_z, mut any_y) = (vec![false; n], vec![false; n]);
        for zr in 0..n {
            let z = roll(zr);
            for yr in 0..n {
                let y = roll(yr);
                for xr in 0..n {
                    let x = roll(xr);
                    let m = volume_mask[(z * n + y) * n + x] as f64;
                    if m != 0.0 {
                        weights[(zr * n + yr) * n + xr] = (m * ginv[z] * ginv[y] * ginv[x]) as f32;
                        any_z[zr] = true;
                        any_y[yr] = true;
                    }
                }
            }
        }
        // The soft spherical mask (radius N/2, cosine width 3) changes only voxels beyond
        // N/2; if the volume mask is zero there, it is a no-op.
        let beyond = (0..n3).any(|i| {
            let (x, y, z) = (c(i % n), c((i / n) % n), c(i / (n * n)));
            x * x + y * y + z * z > hi * hi && volume_mask[i] != 0.0
        });
        let sphere = beyond.then(|| {
            let radius = h as f64;
            let width = 3.0;
            let mut m = vec![0.0f32; n3];
            for (i, v) in m.iter_mut().enumerate() {
                let (x, y, z) = (c(roll(i % n)), c(roll((i / n) % n)), c(roll(i / (n * n))));
                let r = ((x * x + y * y + z * z) as f64).sqrt();
                let rp = radius + width;
                *v = if r < radius {
                    1.0
                } else if r <= rp {
                    let cc = 0.5 + 0.5 * (std::f64::consts::PI * (rp - r) / width).cos();
                    (1.0 - cc) as f32
                } else {
                    0.0
                };
            }
            m
        });
        let pick = |any: &[bool]| -> Vec<usize> {
            if sphere.is_some() {
                (0..n).collect()
            } else {
                (0..n).filter(|&i| any[i]).collect()
            }
        };
        let (box_z, box_y) = (pick(&any_z), pick(&any_y));
        let mut planner = FftPlanner::<f32>::new();
        let fwd = planner.plan_fft_forward(n);
        let inv = planner.plan_fft_inverse(n);
        let scratch_len = fwd
            .get_inplace_scratch_len()
            .max(inv.get_inplace_scratch_len());
        let shells = shell_index_3d(n);
        let count = n / 2 - 1;
        let inner: Vec<u32> = (0..n3)
            .filter(|&i| (shells[i] as usize) < count)
            .map(|i| i as u32)
            .collect();
        let mut shell_counts = vec![0.0f64; count];
        for &i in &inner {
            shell_counts[shells[i as usize] as usize] += 1.0;
        }
        Ok(Regularizer {
            n,
            count,
            shells,
            valid,
            inner,
            shell_counts,
            disc,
            disc_by_x,
            weights,
            box_z,
            box_y,
            sphere,
            fwd,
            inv,
            scratch_len,
        })
    }

    fn work(&self) -> Work {
        let n3 = self.n * self.n * self.n;
        let zero = Complex::new(0.0f32, 0.0);
        Work {
            vols: [vec![zero; n3], vec![zero; n3]],
            lines: vec![zero; LINES * self.n],
            scratch: vec![zero; self.scratch_len],
        }
    }

    /// One post-processing (module docs) of `Σ_k H_k`, `Σ_k B_k` (one or two halves) with the
    /// per-shell prior `tau` into `vol`. With `full`, `vol` ends as the whole centred
    /// spectrum; otherwise only the lines inside the disc hold values (enough for the FSC).
    #[allow(clippy::too_many_arguments)]
    fn post(
        &self,
        pk: &Packed,
        stats: &ShellStats,
        tau: &[f64],
        full: bool,
        vol: &mut [Complex<f32>],
        lines: &mut [Complex<f32>],
        scratch: &mut [Complex<f32>],
    ) {
        let n = self.n;
        let count = self.count;
        let last = tau.len().saturating_sub(1);
        // `inverse_prior` per shell: 1/τ where the prior is usable (the common case, no
        // per-voxel division), else per voxel from the data weight.
        let tau_inv: Vec<Option<f64>> = (0..count)
            .map(|s| {
                let t = tau[s.min(last)];
                (t > 1e-20).then(|| inverse_prior(t, 0.0, 1.0))
            })
            .collect();
        // Shell floors of A' = H + 1/τ (shells 0..count, later shells use the last), from
        // the shell sums of H and of the data-weight fallback: Σ (a + 1/τ) = Σ a + n/τ.
        let means: Vec<f64> = (0..count)
            .map(|s| {
                let c = self.shell_counts[s];
                if c > 0.0 {
                    let extra = match tau_inv[s] {
                        Some(v) => c * v,
                        None => stats.fallback[s],
                    };
                    (stats.a[s] + extra) / c
                } else {
                    0.0
                }
            })
            .collect();
        let floors = denominator_floors(&means);
        // Per shell: 1/τ (NaN where the per-voxel fallback applies) and the floor.
        let per_shell: Vec<(f64, f64)> = tau_inv
            .iter()
            .zip(&floors)
            .map(|(t, &f)| (t.unwrap_or(f64::NAN), f))
            .collect();
        // Inverse transform along z of the disc lines, computing V = B/A' on the way.
        let (fwd, inv) = (&*self.fwd, &*self.inv);
        let mut k = 0;
        for (y, &(x0, x1)) in self.disc.iter().enumerate() {
            let mut xb = x0;
            while xb < x1 {
                let nb = LINES.min(x1 - xb);
                // Invalid voxels are packed as a = 0, b = 0: the floored denominator is
                // positive, so they come out 0. Branch-free over contiguous slices (the
                // hot loop of the fixed point).
                let m = nb * n;
                let (pa, pb, ps) = (&pk.a[k..k + m], &pk.b[k..k + m], &pk.shell[k..k + m]);
                k += m;
                for (z, ((ca, cb), cs)) in pa
                    .chunks_exact(nb)
                    .zip(pb.chunks_exact(nb))
                    .zip(ps.chunks_exact(nb))
                    .enumerate()
                {
                    for (j, ((&a, b), &s)) in ca.iter().zip(cb).zip(cs).enumerate() {
                        let (tv, fl) = per_shell[s as usize];
                        let it = if tv.is_nan() {
                            inverse_prior(0.0, a, 1.0)
                        } else {
                            tv
                        };
                        let r = 1.0 / (a + it).max(fl).max(EPSILON);
                        lines[j * n + z] = Complex::new((b.re * r) as f32, (b.im * r) as f32);
                    }
                }
                inv.process_with_scratch(&mut lines[..nb * n], scratch);
                // Only the planes of the box are read on.
                scatter_z(vol, lines, n, y, xb, nb, self.box_z.iter().copied());
                xb += nb;
            }
        }
        // Inverse along y, planes in the box; only rows in the box are kept.
        let all: Vec<usize> = (0..n).collect();
        for &z in &self.box_z {
            let mut xb = 0;
            while xb < n {
                let nb = LINES.min(n - xb);
                gather_y(vol, lines, n, z, xb, nb, |x| self.disc_by_x[x]);
                inv.process_with_scratch(&mut lines[..nb * n], scratch);
                scatter_y(vol, lines, n, z, xb, nb, &self.box_y);
                xb += nb;
            }
        }
        let inv_n3 = 1.0 / (n * n * n) as f32;
        match &self.sphere {
            None => {
                // Along x, weight, and forward along x: row by row.
                for &z in &self.box_z {
                    for &y in &self.box_y {
                        let o = (z * n + y) * n;
                        let row = &mut vol[o..o + n];
                        inv.process_with_scratch(row, scratch);
                        for (v, &w) in row.iter_mut().zip(&self.weights[o..o + n]) {
                            *v *= w * inv_n3;
                        }
                        fwd.process_with_scratch(row, scratch);
                    }
                }
            }
            Some(m) => {
                // The whole volume, the background average over the band and outside, then
                // the masked weights (values carry the roll's sign (−1)^(x+y+z)).
                for row in vol.chunks_exact_mut(n) {
                    inv.process_with_scratch(row, scratch);
                }
                let mut bg = Complex::new(0.0f64, 0.0);
                let mut wsum = 0.0f64;
                for (i, (v, &mi)) in vol.iter().zip(m).enumerate() {
                    let bw = 1.0 - mi as f64;
                    if bw != 0.0 {
                        let sign = if (i % n + (i / n) % n + i / (n * n)).is_multiple_of(2) {
                            1.0
                        } else {
                            -1.0
                        };
                        bg += Complex::new(v.re as f64, v.im as f64) * (bw * sign * inv_n3 as f64);
                        wsum += bw;
                    }
                }
                let bg = if wsum > 0.0 {
                    bg / wsum
                } else {
                    Complex::new(0.0, 0.0)
                };
                for (i, (v, (&mi, &w))) in
                    vol.iter_mut().zip(m.iter().zip(&self.weights)).enumerate()
                {
                    let sign = if (i % n + (i / n) % n + i / (n * n)).is_multiple_of(2) {
                        1.0
                    } else {
                        -1.0
                    };
                    let t = Complex::new(v.re as f64, v.im as f64) * (mi as f64 * inv_n3 as f64)
                        + bg * ((1.0 - mi as f64) * sign);
                    let t = t * w as f64;
                    *v = Complex::new(t.re as f32, t.im as f32);
                }
                for row in vol.chunks_exact_mut(n) {
                    fwd.process_with_scratch(row, scratch);
                }
            }
        }
        // Forward along y (input rows in the box only), all rows out.
        for &z in &self.box_z {
            let mut xb = 0;
            while xb < n {
                let nb = LINES.min(n - xb);
                gather_y_list(vol, lines, n, z, xb, nb, &self.box_y);
                fwd.process_with_scratch(&mut lines[..nb * n], scratch);
                scatter_y(vol, lines, n, z, xb, nb, &all);
                xb += nb;
            }
        }
        // Forward along z (input planes in the box only): the disc lines, or all.
        let full_lines = vec![(0usize, n); n];
        let out_lines = if full { &full_lines } else { &self.disc };
        for (y, &(x0, x1)) in out_lines.iter().enumerate() {
            let mut xb = x0;
            while xb < x1 {
                let nb = LINES.min(x1 - xb);
                lines[..nb * n].fill(Complex::new(0.0, 0.0));
                for &z in &self.box_z {
                    let base = (z * n + y) * n + xb;
                    for j in 0..nb {
                        lines[j * n + z] = vol[base + j];
                    }
                }
                fwd.process_with_scratch(&mut lines[..nb * n], scratch);
                scatter_z(vol, lines, n, y, xb, nb, 0..n);
                xb += nb;
            }
        }
    }

    /// FSC of the two work volumes over shells `0..count` (they hold the disc lines).
    fn fsc(&self, w: &Work) -> Vec<f64> {
        let (a, b) = (&w.vols[0], &w.vols[1]);
        let c = |v: Complex<f32>| Complex::new(v.re as f64, v.im as f64);
        let mut sums = vec![[0.0f64; 3]; self.count];
        for &i in &self.inner {
            let i = i as usize;
            let (x, y) = (c(a[i]), c(b[i]));
            let t = &mut sums[self.shells[i] as usize];
            t[0] += (x.conj() * y).re;
            t[1] += x.norm_sqr();
            t[2] += y.norm_sqr();
        }
        fsc_from_sums(&sums)
    }

    /// [`prior_from_fsc`](super::variance::prior_from_fsc) over the inner voxels only (the
    /// same sums in the same order), with `L = lhs` per inner voxel.
    fn prior(&self, fsc: &[f64], lhs: &[f64], tau: &[f64]) -> Vec<f64> {
        let count = self.count;
        let inv = super::variance::inverse_priors(tau, count);
        let mut top = vec![0.0f64; count];
        let mut bot = vec![0.0f64; count];
        for (&i, &l) in self.inner.iter().zip(lhs) {
            let s = self.shells[i as usize] as usize;
            let l = l.max(0.0);
            let d = (l + inv[s]) * (l + inv[s]);
            if d > 0.0 {
                top[s] += l * l / d;
                bot[s] += l / d;
            }
        }
        super::variance::prior_from_sums(fsc, &top, &bot)
    }

    /// `Σ_k H_k` and `Σ_k B_k` in the order [`Regularizer::post`] reads them (the disc
    /// lines, z, then x within a block of lines): streaming through them there instead of
    /// striding through the N³ arrays on each of the ~40 evaluations of a column.
    fn pack(&self, hs: &[&[f64]], bs: &[&[Complex<f64>]]) -> Packed {
        let n = self.n;
        let len: usize = self.disc.iter().map(|(x0, x1)| (x1 - x0) * n).sum();
        let mut pk = Packed {
            a: Vec::with_capacity(len),
            b: Vec::with_capacity(len),
            shell: Vec::with_capacity(len),
        };
        for (y, &(x0, x1)) in self.disc.iter().enumerate() {
            let mut xb = x0;
            while xb < x1 {
                let nb = LINES.min(x1 - xb);
                for z in 0..n {
                    let base = (z * n + y) * n + xb;
                    for i in base..base + nb {
                        let (a, b) = if self.valid[i] {
                            (
                                hs.iter().map(|h| h[i]).sum::<f64>(),
                                bs.iter().map(|b| b[i]).sum::<Complex<f64>>(),
                            )
                        } else {
                            (0.0, Complex::new(0.0, 0.0))
                        };
                        pk.a.push(a);
                        pk.b.push(b);
                        pk.shell
                            .push((self.shells[i] as usize).min(self.count - 1) as u16);
                    }
                }
                xb += nb;
            }
        }
        pk
    }

    /// Shell sums of `Σ_k H_k` for the floors of [`Regularizer::post`].
    fn stats(&self, hs: &[&[f64]]) -> ShellStats {
        let mut st = ShellStats {
            a: vec![0.0; self.count],
            fallback: vec![0.0; self.count],
        };
        for &i in &self.inner {
            let i = i as usize;
            let s = self.shells[i] as usize;
            let a = hs.iter().map(|h| h[i]).sum::<f64>();
            st.a[s] += a;
            st.fallback[s] += inverse_prior(0.0, a, 1.0);
        }
        st
    }

    /// The fixed point of §5.5 for one column; returns the column, its FSC and the number of
    /// fixed-point steps taken.
    #[allow(clippy::too_many_arguments)]
    fn column(
        &self,
        h: [&[f64]; 2],
        b: [&[Complex<f64>]; 2],
        tau0: Vec<f64>,
        iterations: usize,
        tolerance: f64,
        w: &mut Work,
    ) -> (Vec<Complex<f32>>, Vec<f64>, usize) {
        let lhs: Vec<f64> = self
            .inner
            .iter()
            .map(|&i| LHS_QUIRK * 0.5 * (h[0][i as usize] + h[1][i as usize]))
            .collect();
        let stats = [self.stats(&[h[0]]), self.stats(&[h[1]])];
        let packs = [self.pack(&[h[0]], &[b[0]]), self.pack(&[h[1]], &[b[1]])];
        let mut tau = tau0;
        let mut fsc = Vec::new();
        let mut evaluated_at_tau = false;
        let mut steps = 0;
        for _ in 0..iterations {
            steps += 1;
            let Work {
                vols,
                lines,
                scratch,
            } = w;
            for k in 0..2 {
                self.post(
                    &packs[k],
                    &stats[k],
                    &tau,
                    false,
                    &mut vols[k],
                    lines,
                    scratch,
                );
            }
            fsc = self.fsc(w);
            let next = self.prior(&fsc, &lhs, &tau);
            let change = next
                .iter()
                .zip(&tau)
                .map(|(a, b)| (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE))
                .fold(0.0f64, f64::max);
            tracing::trace!("fixed point step {steps}: largest relative change of the prior {change:.3e}; fsc {:.4?}", &fsc);
            tau = next;
            if change < tolerance {
                // The FSC just computed is that of (numerically) the same prior.
                evaluated_at_tau = true;
                break;
            }
        }
        let Work {
            vols,
            lines,
            scratch,
        } = w;
        if !evaluated_at_tau {
            for k in 0..2 {
                self.post(
                    &packs[k],
                    &stats[k],
                    &tau,
                    false,
                    &mut vols[k],
                    lines,
                    scratch,
                );
            }
            fsc = self.fsc(w);
        }
        let mut out = vec![Complex::new(0.0f32, 0.0); self.n * self.n * self.n];
        drop(packs);
        let both = self.stats(&h);
        let pk = self.pack(&h, &b);
        self.post(
            &pk,
            &both,
            &tau,
            true,
            &mut out,
            &mut w.lines,
            &mut w.scratch,
        );
        (out, fsc, steps)
    }
}

/// `vol[(z, y, xb + j)] = lines[j·n + z]` for z in `zs`.
fn scatter_z(
    vol: &mut [Complex<f32>],
    lines: &[Complex<f32>],
    n: usize,
    y: usize,
    xb: usize,
    nb: usize,
    zs: impl IntoIterator<Item = usize>,
) {
    for z in zs {
        let base = (z * n + y) * n + xb;
        for j in 0..nb {
            vol[base + j] = lines[j * n + z];
        }
    }
}

/// `lines[j·n + y] = vol[(z, y, xb + j)]` for y inside `range(x)`, 0 elsewhere.
fn gather_y<F: Fn(usize) -> (usize, usize)>(
    vol: &[Complex<f32>],
    lines: &mut [Complex<f32>],
    n: usize,
    z: usize,
    xb: usize,
    nb: usize,
    range: F,
) {
    lines[..nb * n].fill(Complex::new(0.0, 0.0));
    for j in 0..nb {
        let (y0, y1) = range(xb + j);
        for y in y0..y1 {
            lines[j * n + y] = vol[(z * n + y) * n + xb + j];
        }
    }
}

/// `lines[j·n + y] = vol[(z, y, xb + j)]` for y in `ys`, 0 elsewhere.
fn gather_y_list(
    vol: &[Complex<f32>],
    lines: &mut [Complex<f32>],
    n: usize,
    z: usize,
    xb: usize,
    nb: usize,
    ys: &[usize],
) {
    lines[..nb * n].fill(Complex::new(0.0, 0.0));
    for &y in ys {
        let row = &vol[(z * n + y) * n + xb..][..nb];
        for (j, &v) in row.iter().enumerate() {
            lines[j * n + y] = v;
        }
    }
}

/// `vol[(z, y, xb + j)] = lines[j·n + y]` for y in `ys`.
fn scatter_y(
    vol: &mut [Complex<f32>],
    lines: &[Complex<f32>],
    n: usize,
    z: usize,
    xb: usize,
    nb: usize,
    ys: &[usize],
) {
    for &y in ys {
        let row = &mut vol[(z * n + y) * n + xb..][..nb];
        for (j, v) in row.iter_mut().enumerate() {
            *v = lines[j * n + y];
        }
    }
}

/// §5.4 + §5.5 (module docs): estimate the columns `Σ̂[:, ξ]` for `freqs`.
///
/// `mean_prior` is the mean stage's per-shell Wiener prior (`N/2 − 1` shells);
/// `memory_budget` (bytes) bounds the H/B accumulators, [`column_accumulator_bytes`] per
/// column, and so sets how many columns share a pass over the images (at least one); it never
/// changes the result.
pub fn estimate_columns(
    ctx: &Context,
    mean_prior: &[f64],
    freqs: &[[i32; 3]],
    opts: &CovarianceOptions,
    memory_budget: u64,
    progress: &dyn Progress,
) -> Result<Columns> {
    estimate_columns_with(
        ctx,
        mean_prior,
        freqs,
        opts,
        memory_budget,
        PRIOR_TOLERANCE,
        progress,
    )
}

/// [`estimate_columns`] with the fixed point's stopping tolerance given (0: always run
/// `opts.prior_iterations` steps, as RECOVAR does).
pub fn estimate_columns_with(
    ctx: &Context,
    mean_prior: &[f64],
    freqs: &[[i32; 3]],
    opts: &CovarianceOptions,
    memory_budget: u64,
    prior_tolerance: f64,
    progress: &dyn Progress,
) -> Result<Columns> {
    ctx.validate()?;
    let n = ctx.n();
    let count = n / 2 - 1;
    if mean_prior.len() != count || mean_prior.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "covariance columns: the mean prior must have {count} finite shells, got {}",
            mean_prior.len()
        )));
    }
    check_freqs(freqs, n, usize::MAX)?;
    if prior_tolerance.is_nan() || prior_tolerance < 0.0 {
        return Err(Error::invalid(
            "covariance columns: the prior tolerance must be ≥ 0",
        ));
    }
    let mut out = Columns {
        freqs: freqs.to_vec(),
        columns: Vec::with_capacity(freqs.len()),
        fscs: Vec::with_capacity(freqs.len()),
    };
    if freqs.is_empty() {
        return Ok(out);
    }
    let acc = Accumulation::new(ctx, opts.mask_images)?;
    // Column batches: as many as the budget (and the backend's accumulator) holds, balanced.
    let per = column_accumulator_bytes(n);
    let max_batch = ((memory_budget / per) as usize).clamp(1, freqs.len());
    let mut columns = ctx.backend.column_accumulator(n, &acc.noise, max_batch)?;
    let max_batch = columns.capacity().clamp(1, max_batch);
    let n_batches = freqs.len().div_ceil(max_batch);
    let batch_cols = freqs.len().div_ceil(n_batches);
    let reg = Regularizer::new(ctx.volume_mask, n)?;
    // ρ per shell; τ_0(r) = ρ(ξ)·ρ(r).
    let rho: Vec<f64> = (0..count)
        .map(|r| (mean_prior[r] + 1e-14) * REG_INIT_MULTIPLIER / ctx.noise[r])
        .collect();
    let ds = ctx.ds;
    let total = (ds.len() * n_batches) as u64;
    let mut done = 0u64;
    let batch = ctx.batch_size.max(1);
    let (mut hits, mut steps) = (0usize, 0usize);
    let (mut t_acc, mut t_reg) = (0.0f64, 0.0f64);
    report(progress, "covariance columns", 0, total)?;
    for cols in freqs.chunks(batch_cols) {
        let t0 = std::time::Instant::now();
        columns.start(cols)?;
        for half in 0..2 {
            for chunk in ds.halfsets()[half].chunks(batch) {
                let prep = acc.prepare(chunk)?;
                hits += columns.add(half, &prep.batch())?;
                done += chunk.len() as u64;
                report(progress, "covariance columns", done, total)?;
            }
        }
        let sums = columns.sums()?;
        t_acc += t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        // Regularize the batch, columns in parallel (each sequential: deterministic).
        let results: Vec<(Vec<Complex<f32>>, Vec<f64>, usize)> = cols
            .par_iter()
            .zip(sums.par_iter())
            .map_init(
                || reg.work(),
                |w, (xi, s)| {
                    let r = (xi.iter().map(|&k| (k * k) as f64).sum::<f64>()).sqrt();
                    let s_r = (r.round() as usize).min(count - 1);
                    let tau0: Vec<f64> = rho.iter().map(|&p| rho[s_r] * p).collect();
                    reg.column(
                        [&s.h[0], &s.h[1]],
                        [&s.b[0], &s.b[1]],
                        tau0,
                        opts.prior_iterations,
                        prior_tolerance,
                        w,
                    )
                },
            )
            .collect();
        t_reg += t0.elapsed().as_secs_f64();
        for (c, f, k) in results {
            out.columns.push(c);
            out.fscs.push(f);
            steps += k;
        }
    }
    tracing::info!(
        "{} covariance columns in {n_batches} pass(es) over the images: accumulation {t_acc:.1} s \
         (the read kernel reaches {:.1}% of image-column pairs), regularization {t_reg:.1} s \
         ({:.1} fixed-point steps per column on average)",
        freqs.len(),
        100.0 * hits as f64 / (ds.len() * freqs.len()) as f64,
        steps as f64 / freqs.len() as f64
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconstruct::mean::{post_process_with, PostProcessOptions};
    use crate::rng::Rng;

    #[test]
    fn downsample_of_a_constant_is_eight_times_it_inside() {
        let n = 8;
        let lhs = vec![2.0f32; 8 * n * n * n];
        let d = downsample_lhs(&lhs, n);
        // Interior voxel: 27 neighbours → 2 · 8.
        assert!((d[(4 * n + 4) * n + 4] - 16.0).abs() < 1e-12);
        // Corner (2N index 0): 8 of 27 neighbours inside.
        assert!((d[0] - 16.0 * 8.0 / 27.0).abs() < 1e-12);
    }

    #[test]
    fn pick_columns_greedy_rules() {
        let n = 16;
        let n3 = n * n * n;
        // Weight 1 everywhere inside the sphere; variance decreasing with |k|, a bump at
        // (−3, 1, 2) (picked as its partner (3, −1, −2)).
        let lhs = vec![1.0f32; 8 * n3];
        let h = (n / 2) as i32;
        let mut var = vec![0.0f32; n3];
        for (i, v) in var.iter_mut().enumerate() {
            let f = [
                (i % n) as i32 - h,
                ((i / n) % n) as i32 - h,
                (i / (n * n)) as i32 - h,
            ];
            let r2 = (f[0] * f[0] + f[1] * f[1] + f[2] * f[2]) as f32;
            *v = 1.0 / (1.0 + r2);
            if f == [-3, 1, 2] {
                *v = 10.0;
            }
        }
        let opts = CovarianceOptions {
            n_cols: 20,
            ..Default::default()
        };
        let picked = pick_columns(&lhs, &var, n, &opts).unwrap();
        assert_eq!(picked.len(), 20);
        assert_eq!(picked[0], [3, -1, -2]);
        assert_eq!(picked[1], [0, 0, 0]);
        for (a, p) in picked.iter().enumerate() {
            assert!(p[0] >= 0);
            for q in &picked[..a] {
                for s in [1, -1] {
                    let d2: i32 = (0..3).map(|k| (p[k] - s * q[k]).pow(2)).sum();
                    assert!(d2 as f64 > 4.0, "{p:?} vs {q:?}");
                }
            }
        }
        // Asking for more than fit returns fewer.
        let many = CovarianceOptions {
            n_cols: 5000,
            ..Default::default()
        };
        let all = pick_columns(&lhs, &var, n, &many).unwrap();
        assert!(all.len() < 5000 && all.len() > 20);
        assert!(pick_columns(&lhs[1..], &var, n, &opts).is_err());
    }

    /// A random column-like problem: positive H, complex B, inside the valid sphere.
    fn random_hb(n: usize, seed: u64) -> ([Vec<f64>; 2], [Vec<Complex<f64>>; 2]) {
        let mut rng = Rng::new(seed);
        let n3 = n * n * n;
        let mut hh = [vec![0.0; n3], vec![0.0; n3]];
        let mut bb = [
            vec![Complex::new(0.0, 0.0); n3],
            vec![Complex::new(0.0, 0.0); n3],
        ];
        for k in 0..2 {
            for i in 0..n3 {
                hh[k][i] = 50.0 * rng.uniform() + if i % 5 == 0 { 0.0 } else { 10.0 };
                bb[k][i] = Complex::new(rng.normal(), rng.normal()) * 30.0
                    + Complex::new(100.0 / (1.0 + (i % 97) as f64), 0.0);
            }
        }
        (hh, bb)
    }

    fn ball(n: usize, r: f64) -> Vec<f32> {
        let c = (n / 2) as f64;
        (0..n * n * n)
            .map(|i| {
                let (x, y, z) = (
                    (i % n) as f64 - c,
                    ((i / n) % n) as f64 - c,
                    (i / (n * n)) as f64 - c,
                );
                let d = (x * x + y * y + z * z).sqrt();
                if d <= r {
                    1.0
                } else if d <= r + 2.0 {
                    (1.0 - (d - r) / 2.0) as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn compare_with_reference(mask: &[f32], n: usize) {
        let (hh, bb) = random_hb(n, 11);
        let reg = Regularizer::new(mask, n).unwrap();
        let tau: Vec<f64> = (0..n / 2 - 1).map(|r| 0.5 / (1.0 + r as f64)).collect();
        let mut w = reg.work();
        for (hs, bs) in [
            (vec![&hh[0][..]], vec![&bb[0][..]]),
            (vec![&hh[0][..], &hh[1][..]], vec![&bb[0][..], &bb[1][..]]),
        ] {
            let mut got = vec![Complex::new(0.0f32, 0.0); n * n * n];
            let st = reg.stats(&hs);
            let pk = reg.pack(&hs, &bs);
            reg.post(&pk, &st, &tau, true, &mut got, &mut w.lines, &mut w.scratch);
            let a: Vec<f64> = (0..n * n * n)
                .map(|i| hs.iter().map(|h| h[i]).sum())
                .collect();
            let b: Vec<Complex<f64>> = (0..n * n * n)
                .map(|i| bs.iter().map(|b| b[i]).sum())
                .collect();
            let (_, want) = post_process_with(
                &a,
                &b,
                n,
                &PostProcessOptions {
                    upsampling: 1,
                    tau: Some(&tau),
                    volume_mask: Some(mask),
                    complex: true,
                    raw: false,
                    real_only: false,
                },
            )
            .unwrap();
            let scale = want.iter().map(|v| v.norm()).fold(0.0f32, f32::max);
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).norm())
                .fold(0.0f32, f32::max);
            assert!(err < 2e-5 * scale, "max error {err} vs scale {scale}");
            // The FSC-only variant agrees on the disc lines.
            let mut part = vec![Complex::new(0.0f32, 0.0); n * n * n];
            reg.post(
                &pk,
                &st,
                &tau,
                false,
                &mut part,
                &mut w.lines,
                &mut w.scratch,
            );
            for (i, &s) in reg.shells.iter().enumerate() {
                if (s as usize) < n / 2 - 1 {
                    assert!((part[i] - want[i]).norm() < 2e-5 * scale);
                }
            }
        }
    }

    #[test]
    fn inner_voxel_fsc_and_prior_are_the_full_grid_ones() {
        use crate::heterogeneity::variance::{fsc_sequential, prior_from_fsc};
        let n = 16;
        let (hh, bb) = random_hb(n, 5);
        let reg = Regularizer::new(&ball(n, 4.5), n).unwrap();
        let mut w = reg.work();
        for (vol, b) in w.vols.iter_mut().zip(&bb) {
            for (v, b) in vol.iter_mut().zip(b) {
                *v = Complex::new(b.re as f32, b.im as f32);
            }
        }
        let c = |v: Complex<f32>| Complex::new(v.re as f64, v.im as f64);
        let want = fsc_sequential(
            |i| c(w.vols[0][i]),
            |i| c(w.vols[1][i]),
            &reg.shells,
            reg.count,
            false,
        );
        let got = reg.fsc(&w);
        assert_eq!(got, want);
        let tau: Vec<f64> = (0..reg.count).map(|r| 0.3 / (1.0 + r as f64)).collect();
        let full = |i: usize| LHS_QUIRK * 0.5 * (hh[0][i] + hh[1][i]);
        let lhs: Vec<f64> = reg.inner.iter().map(|&i| full(i as usize)).collect();
        let want = prior_from_fsc(&got, full, Some(&tau), &reg.shells, reg.count);
        assert_eq!(reg.prior(&got, &lhs, &tau), want);
    }

    #[test]
    fn fast_post_processing_matches_the_reference_inside_the_sphere() {
        // Mask zero beyond N/2: the spherical mask is skipped, transforms pruned.
        compare_with_reference(&ball(16, 4.5), 16);
    }

    #[test]
    fn fast_post_processing_matches_the_reference_with_a_full_mask() {
        // Mask reaching the corners: the spherical mask matters.
        compare_with_reference(&vec![1.0f32; 16 * 16 * 16], 16);
        let mut m = ball(16, 4.5);
        m[0] = 0.7;
        compare_with_reference(&m, 16);
    }
}
