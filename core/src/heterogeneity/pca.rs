//! Principal components: the randomized SVD of the covariance columns, the projected
//! covariance, the `contrast_qr` knock-out of the mean, and the variance maps
//! (algorithms.md §5.6, §5.7, §5.9, §6.5).
//!
//! Conventions (see also [`super`]): spectra are centered `N³` arrays of `Complex<f32>`; a
//! basis vector `u` is the spectrum of a real volume with unit real-space norm, so
//! `Σ|u(k)|² = N³`, and an eigenvalue `λ` is the variance of the coefficient of `u`
//! (`x = μ + Σ z_k u_k`, `z ~ N(0, diag λ)`). RECOVAR normalises its Fourier vectors to
//! `Σ|û|² = 1` instead, so its eigenvalues are ours times `N³`; the variance maps agree.
//!
//! # Randomized SVD (§5.6), in the coordinates of the column block
//!
//! RECOVAR forms `Y = Re IDFT_N( C F Ω )` (`C` the picked columns plus their Hermitian
//! mirrors, `F Ω` a Gaussian test matrix on a small `m³` grid seen through its DFT), takes a
//! thin QR `Y = Q R` of the `N³ × q0` matrix, the SVD of `B = Qᵀ A` (`A` the same real
//! operator, `q0 × m³`), and returns `Q U_B`. Every one of those `N³`-tall objects lies in
//! the column space of one real `N³ × 2c` matrix `Ā`: in Hermitian-packed real coordinates
//! (for each pair `±k` the scaled real and imaginary parts, an isometry onto real space),
//! column `2j` of `Ā` is the real volume that column `j` contributes through the real part
//! of its test coefficient, column `2j+1` through the imaginary part. So the whole
//! computation runs in the `2c`-dimensional coordinates of `Ā`:
//!
//! 1. `H = ĀᵀĀ` (`2c × 2c`, f64) in one streaming pass over the columns; `H = V Λ Vᵀ`, and
//!    `Ā = Q_A R_A` with `R_A = Λ^½ Vᵀ` (directions with `Λ < 10⁻¹² Λ_max` are dropped:
//!    numerically absent from f32 columns).
//! 2. The test coefficients `Φ Ω` are Gaussian with covariance `ΦΦᵀ`, which the small-grid
//!    DFT makes diagonal (`1/(2m³)` for each real and imaginary part, `1/m³` for the real DC
//!    term, with correlations only between a frequency and its mirror if both are given).
//!    We draw them directly: `F` (`2c × q0`), from [`crate::rng::Rng`] seeded with `seed`,
//!    sketch column by sketch column, input column by input column, real part then
//!    imaginary part (one normal each; the DC column takes `√2·normal()` and no imaginary
//!    part; a column whose mirror came earlier reuses the conjugate). This is the same
//!    distribution as RECOVAR's `m³ × q0` Gaussian matrix pushed through the DFT, but not
//!    numpy's `default_rng` stream: the sketch cannot match RECOVAR bit for bit.
//! 3. `Y = Q_A (R_A F)`, so `Q = Q_A Q_s` with `Q_s` the thin QR factor of the small
//!    `R_A F`; `B Bᵀ = Q_sᵀ R_A ΦΦᵀ R_Aᵀ Q_s` gives `U_B` and the singular values; the basis
//!    is `Ā T` with `T = V Λ^{-½} Q_s U_B`, written out in a second streaming pass.
//!
//! This is algebraically RECOVAR's algorithm (same subspace, same singular values, up to
//! rounding and the random stream) without any `N³ × q0` matrix, QR of one, or `N³` FFT:
//! the memory is the caller's columns plus the returned vectors. The reported values are
//! RECOVAR's `S·√(m³)·√(N³)` divided by `N³` (our eigenvalue scale), which does not depend
//! on `m`; like RECOVAR's they are only a first look at the spectrum. When `sketch_size` is
//! at least the number of real column directions the result is the exact truncated SVD.
//!
//! # Projected covariance (§5.7)
//!
//! Per image `i` (both halfsets, halfset 0 first, each in index order): the residual
//! `r_i = T_i y_i − C_i ⊙ P_i μ` (mean by cubic B-spline, through the [`Backend`](crate::backend::Backend)) and the
//! projected basis `A_i = C_i ⊙ P_i Ũ` (trilinear, §5.1 `disc_type_u`). Inner products run
//! over the half plane of image frequencies with weight 2 (DC weight 1) as real rows
//! `√w·(Re, Im)`: equal to the real parts of full-spectrum inner products, since images and
//! projections of real volumes are Hermitian; noise σ² per pixel from the radial profile.
//! `a_i = Re(A_iᴴ r_i)`, `G_i = Re(A_iᴴ A_i)`, `N_i = Re(A_iᴴ diag σ² A_i)` are f32 GEMMs per
//! image (`faer`); the right side `S = Σ (a_i a_iᵀ − N_i)` is summed in f64, image by image.
//!
//! The normal equations `Σ_i G_i Γ G_i = S` for symmetric `Γ` in packed form ("svec":
//! upper triangle, off-diagonals ×√2, `P = q(q+1)/2` unknowns) have the matrix
//! `L[(r,c),(r',c')] = s/s'·Σ_i (G_i[r,r'] G_i[c,c'] + G_i[r,c'] G_i[c,r'])`. Python forms
//! it per image batch at `P·q²` work per image. Here it comes from the Gram matrix
//! `W = Σ_i g_i g_iᵀ` of the packed `g_i = (G_i[a,c])_{a≤c}`: `W` costs `P²/2` per image,
//! as GEMMs over groups of 256 images (a fixed size, so the sums never depend on the batch
//! size); the products of the f32 `g_i` run as f32 GEMMs over 32 images at a time (twice
//! the f64 rate; error of the order of the `g_i`'s own f32 rounding) and every longer sum
//! is in f64. `L` is a re-indexing of `W`: every entry of either belongs to the pairings
//! of one multiset `{a,b,c,d}`, whose (at most three) entries are rewritten in place. `L`
//! is stored once, as its upper block triangle in f64: block rows aligned with the first
//! index `a` of the pairs (so the re-indexing splits into independent block rows), each a
//! dense column-major matrix (so the Gram update is one GEMM per block row and the CG
//! product runs as SIMD GEMVs over cache-sized tiles): `P(P+1)/2·8` bytes plus ≈1 %,
//! 1.5 GiB at q = 200 (RECOVAR keeps `P²` f32, also 1.5 GiB).
//!
//! The system `(L + εI) x = svec(S)`, `ε = 10⁻⁶·trace(L)/P` (RECOVAR's Tikhonov term), is
//! solved by preconditioned conjugate gradients in f64 with the Kronecker preconditioner
//! `(Ḡ⊗Ḡ·n + εI)⁻¹` (`Ḡ` the mean `G_i`, applied through its eigenvectors in `O(q³)`), to a
//! relative residual of 10⁻¹⁰. A dense Cholesky of `L` costs `P³/3 ≈ 2.7·10¹² flops` at
//! q = 200 (30+ s on two cores), each CG step one pass over `L` (test data set, 64 px,
//! 1000 images: 40 steps, ≈2.7 s of CPU in all). The matrix-vector product splits the
//! rows into a fixed number of chunks (of whole block rows) with private partial sums added
//! in order, so the answer does not depend on the thread count. Then `Γ = V diag(λ) Vᵀ`
//! (eigenvalues descending, `λ ≤ 0 → 10⁻¹⁶`)
//! and `U = Ũ V`, formed in place in the caller's basis vectors.
//!
//! # Knock-out of the mean (§6.5 `contrast_qr`)
//!
//! With `m` the masked, normalised real mean and `c = Uᵀm` (`U` orthonormal), `U − m cᵀ` is
//! `[U, m_⊥] Z` with `m_⊥ = (m − U c)/β`, `β = √(1 − |c|²)`, and
//! `Z = [I − c cᵀ; −β cᵀ]`; the thin SVD of the small `Z diag(√λ)` gives the new PCs and
//! eigenvalues (squared singular values) exactly as RECOVAR's SVD of the `N³ × K` matrix
//! does, without leaving Fourier space. Signs: each PC has a positive sum (RECOVAR's
//! alignment with a constant volume).
//!
//! # Determinism
//!
//! Every reduction runs in a fixed order over fixed blocks (image groups of 256, row chunks,
//! voxel blocks), and `faer` runs sequentially inside each block (`Par::Seq`), so results
//! depend on neither the thread count nor the batch size.

mod dense;
mod gram;
mod recombine;
mod rsvd;
mod slicer;

use num_complex::Complex;
use rayon::prelude::*;

use super::Context;
use crate::error::{Error, Result};
use crate::fourier::Fft3;
use crate::progress::Progress;

/// Principal directions and their variances.
#[derive(Clone, Debug, Default)]
pub struct Basis {
    /// Centered `N³` spectra of real volumes, each with `Σ|u|² = N³` (unit real-space norm).
    pub vectors: Vec<Vec<Complex<f32>>>,
    /// Variance along each vector, descending (`values[j]` belongs to `vectors[j]`).
    pub values: Vec<f64>,
}

impl Basis {
    /// Keep the first `k` vectors and values (memory: the pipeline keeps fewer PCs than it
    /// computes).
    pub fn truncate(&mut self, k: usize) {
        self.vectors.truncate(k);
        self.values.truncate(k);
    }
}

/// The randomized SVD of the covariance column block (§5.6); see the module docs for the
/// algorithm and the random stream.
///
/// `freqs[j]` = `(kx, ky, kz)` of column `j` (`kx ≥ 0`, each component in `−N/2..N/2`, no
/// frequency twice), `columns[j]` its centered `N³` spectrum `Σ̂[:, ξ_j]`. The sketch has
/// `min(sketch_size, c + #(kx > 0))` columns (RECOVAR's rule); at most `keep` vectors are
/// returned (fewer when the columns have lower numerical rank), so the caller need not hold
/// the unused tail of the sketch (RECOVAR keeps 300 and uses 200: 1.7 GB at N = 128).
pub fn randomized_svd(
    freqs: &[[i32; 3]],
    columns: Vec<Vec<Complex<f32>>>,
    n: usize,
    sketch_size: usize,
    keep: usize,
    seed: u64,
) -> Result<Basis> {
    rsvd::randomized_svd(freqs, columns, n, sketch_size, keep, seed)
}

/// The projected covariance (§5.7) of the basis over every image of both halfsets, its
/// eigendecomposition, and the eigenvectors `U = Ũ V` sorted by eigenvalue (descending).
///
/// `basis` holds the `q` vectors to project (RECOVAR: the first `n_pcs` = 200 of the
/// randomized SVD); they must be Hermitian spectra of real volumes (only the half `kz ≥ 0`
/// of each is read by the projection) with `Σ|u|² = N³`. It is consumed: the eigenvectors
/// are formed in its storage (saves `q·N³·8` bytes, 3.4 GB at N = 128, q = 200).
///
/// Memory besides the basis: the packed normal matrix (`q(q+1)/2` squared over two, f64:
/// 1.6 GB at q = 200), the basis re-laid out for the projection (the half ball reached by
/// trilinear slicing, `q` interleaved: ~0.12 GB at N = 64, 0.9 GB at N = 128), and per
/// image batch the images and a few `q × q` matrices per image.
pub fn projected_covariance(
    ctx: &Context,
    basis: Vec<Vec<Complex<f32>>>,
    progress: &dyn Progress,
) -> Result<Basis> {
    Ok(gram::projected_covariance(ctx, basis, progress)?.0)
}

/// Diagnostics of the projected-covariance solve, for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SolveStats {
    /// Images used.
    pub images: usize,
    /// Basis size `q`.
    pub basis_size: usize,
    /// Conjugate-gradient iterations.
    pub iterations: usize,
    /// Final `‖b − (L + εI)x‖ / ‖b‖`.
    pub relative_residual: f64,
    /// The Tikhonov term `ε`.
    pub tikhonov: f64,
}

/// [`projected_covariance`] with the solver diagnostics.
pub fn projected_covariance_with_stats(
    ctx: &Context,
    basis: Vec<Vec<Complex<f32>>>,
    progress: &dyn Progress,
) -> Result<(Basis, SolveStats)> {
    gram::projected_covariance(ctx, basis, progress)
}

/// The `contrast_qr` knock-out (§6.5, RECOVAR's `knock_out_mean_component_2`): remove the
/// direction of the masked, normalised mean from the PCs, re-factor `U diag(√λ)` (thin SVD)
/// into new PCs and eigenvalues, make each PC's real-space sum positive.
///
/// `mean_real` is the real-space mean (`N³`), `volume_mask` the solvent mask; the PCs must be
/// orthonormal Hermitian spectra (as [`projected_covariance`] returns them). Consumes `pcs`
/// and writes the new vectors in their storage.
pub fn knock_out_mean(
    pcs: Basis,
    mean_real: &[f32],
    volume_mask: &[f32],
    n: usize,
) -> Result<Basis> {
    recombine::knock_out_mean(pcs, mean_real, volume_mask, n)
}

/// `Σ_{j<k} λ_j |IDFT3(u_j)(x)|²`, real space (`variance4/10/20.mrc`); `k` is clipped to the
/// number of PCs. Summed in f64.
pub fn variance_map(pcs: &Basis, k: usize, n: usize) -> Result<Vec<f32>> {
    let n3 = check_side(n)?;
    let k = k.min(pcs.vectors.len()).min(pcs.values.len());
    check_vectors(&pcs.vectors[..k], n3, "variance map")?;
    let fft = Fft3::<f32>::new(n);
    let mut acc = vec![0.0f64; n3];
    let mut work = vec![Complex::new(0.0f32, 0.0); n3];
    for (u, &lam) in pcs.vectors[..k].iter().zip(&pcs.values) {
        if !lam.is_finite() {
            return Err(Error::invalid(format!(
                "variance map: eigenvalue {lam} is not finite"
            )));
        }
        work.copy_from_slice(u);
        fft.inverse(&mut work);
        acc.par_iter_mut()
            .zip(work.par_iter())
            .for_each(|(a, v)| *a += lam * v.norm_sqr() as f64);
    }
    Ok(acc.into_iter().map(|v| v as f32).collect())
}

/// CPU time (user + system, all threads) of this process in seconds, from `/proc/self/stat`
/// (Linux; `USER_HZ` = 100), for the phase logs: wall times are noisy on shared machines.
/// `None` where unavailable.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime and
    // stime the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds since `start` (a [`cpu_seconds`] reading), or NaN.
fn cpu_since(start: Option<f64>) -> f64 {
    match (start, cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    }
}

/// `N³` for a usable volume side.
fn check_side(n: usize) -> Result<usize> {
    if n < 4 || !n.is_multiple_of(2) || n > 2048 {
        return Err(Error::invalid(format!(
            "volume side {n} must be even and in 4..=2048"
        )));
    }
    Ok(n * n * n)
}

/// Every vector holds `n3` finite values.
fn check_vectors(vectors: &[Vec<Complex<f32>>], n3: usize, what: &str) -> Result<()> {
    for (j, v) in vectors.iter().enumerate() {
        if v.len() != n3 {
            return Err(Error::inconsistent(format!(
                "{what}: vector {j} has {} values; N³ = {n3}",
                v.len()
            )));
        }
        if v.iter().any(|c| !c.re.is_finite() || !c.im.is_finite()) {
            return Err(Error::invalid(format!(
                "{what}: vector {j} has non-finite values"
            )));
        }
    }
    Ok(())
}
