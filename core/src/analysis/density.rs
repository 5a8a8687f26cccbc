//! The deconvolved density of the latent coordinates (algorithms.md §9,
//! `estimate_conformational_density`).
//!
//! The embedding `ẑ_i` of image `i` is its true conformation `z_i` plus an error whose
//! covariance is the inverse of the image's precision `P_i`; a kernel density estimate of
//! the `ẑ_i` is therefore the true density blurred twice, by the per-image errors and by
//! the KDE bandwidth. RECOVAR undoes the blur by regularized deconvolution on a grid:
//!
//! 1. keep the images whose precision has a spectral norm above the `percentile_reject`
//!    percentile (the least informative images are the most blurred), truncated to the
//!    first `pca_dim` coordinates;
//! 2. `d` = the KDE of the kept coordinates on `M` nodes per axis between their
//!    `[q, 100 − q]` percentiles ([`super::kde::kde_on_grid`]);
//! 3. the blur kernel `K` = the average, over `kernel_samples` randomly drawn kept images,
//!    of the centred Gaussian with covariance `pinv(P_i) + H` (`H` the KDE kernel
//!    covariance), sampled on a centred grid and normalised to sum 1;
//! 4. for each regularization weight `α`, `f_α = argmin_{f ≥ 0} 1e8·[mean((K ⊛ f − d)²) +
//!    α·mean(|∇f|²)]` with `d` scaled to mean 1, by bound-constrained quasi-Newton
//!    iterations from `f = d` (RECOVAR: scipy's L-BFGS-B; here a projected L-BFGS);
//! 5. the L-curve knee of `log(cost)` against `log10(1/α)` picks one `α`.
//!
//! # Conventions reproduced from RECOVAR
//!
//! - The kernel grid is `flip(linspace(−L/2, L/2, M, endpoint=False))` per axis with `L`
//!   the grid's extent: its spacing is `L/M` while the density grid's is `L/(M−1)`, so in
//!   grid units the kernel is `M/(M−1)` times wider than the Gaussian it samples (2 % at
//!   `M` = 50). Node `k` of the kernel is at `L/2 − (k+1)·L/M`, which is 0 at `k = M/2 − 1`
//!   for even `M` (half a node off for odd `M`).
//! - `⊛` is scipy's `fftconvolve(f, K, mode='same')`: `(K ⊛ f)[i] = Σ_j f[j]·K[i + s − j]`
//!   per axis with `s = (M − 1) div 2` and `f` zero outside the grid; only the `M` kernel
//!   nodes exist, so displacements beyond them are not blurred at all.
//! - `∇` is `numpy.gradient(f, *dx)` (central differences inside, one-sided at the edges)
//!   with `dx` the grid spacings divided by their mean; `mean(|∇f|²)` averages over the `d`
//!   axes too (`mean(array(gradient(f))**2)`).
//! - `cost(α) = mean((K ⊛ f_α − d)²) / mean(d²)`.
//!
//! # Numerics
//!
//! - The kernel is accumulated in `f64` slab by slab (one slab per node along the first
//!   axis, in parallel; in each slab the samples are added in a fixed order, so the result
//!   does not depend on the thread count). Each Gaussian is evaluated only where its
//!   exponent `½ yᵀC⁻¹y` is at most 25 (`KERNEL_CUT`), i.e. down to `e^−25 ≈ 1.4·10⁻¹¹`
//!   of its peak: whole lines (along the last axis) whose smallest exponent exceeds the cut
//!   are skipped, and along a line the values come from a multiplicative recurrence (two
//!   `exp` a line instead of one a node). What is dropped is below `1.4·10⁻¹¹` of each
//!   Gaussian's peak at every node, and at most `P(χ²_d > 50) < 10⁻⁸` of its mass.
//! - The convolution and its adjoint are real FFTs in `f64` on a grid padded, per axis, to
//!   a 5-smooth length `≥ M + r`, even on the last axis (the result is read only on the
//!   grid, so wrap-around needs only `r`, not `2r`, of padding: with the kernel's full
//!   window, 75 instead of scipy's 99 for `M` = 50), where `r` is the reach of the kernel along that
//!   axis after dropping the outer kernel layers that hold less than 10⁻¹² (`CROP_MASS`)
//!   of its mass (this changes `K ⊛ f` by at most `10⁻¹²·max f` per axis). Transforms that
//!   would only see zeros (padding rows on the way in, rows outside the grid on the way
//!   out) are skipped. The plans are made once per call and the buffers reused.
//! - The objective's gradient is exact: `∇J = 1e8·[2/N·Kᵀ(K ⊛ f − d) + 2α/(D·N)·Σ_a
//!   ∇_aᵀ∇_a f]` (`N = M^D` nodes, `D` axes) with `Kᵀ` the adjoint (correlation, the
//!   conjugate spectrum) and `∇_aᵀ` the exact transpose of numpy's difference stencil,
//!   edges included (checked against finite differences in the tests).
//! - Sums over the grid are taken over fixed chunks whose partial sums are added in
//!   order, so the same input gives the same bytes for any number of threads.
//!
//! # Solver
//!
//! RECOVAR uses scipy's L-BFGS-B (`maxiter` 500, bounds `[0, ∞)`, defaults otherwise: 10
//! correction pairs, `ftol` = 10⁷·ε, `pgtol` = 10⁻⁵). Here it is a projected L-BFGS with a
//! two-metric projection step written for this module (`minimize_nonneg`, whose
//! documentation says why the pure-Rust L-BFGS-B crate `rcompat-lbfgsb` was not used),
//! with the same memory, tolerances and iteration limit. Both are quasi-Newton methods on
//! the same objective from the same start and stop on the same tests, but their iterates
//! differ, and with small `α` neither has converged after 500 iterations: the densities
//! are not RECOVAR's to the last digit, and for small `α` they depend on the optimizer's
//! path in both.
//! Memory: the pairs in f32 and five vectors in f64, `(8m + 40)` bytes a node (0.75 GB for
//! 50⁴ nodes), plus the objective's buffers.

use std::path::Path;
use std::sync::Arc;

use num_complex::Complex64;
use rayon::prelude::*;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};

use super::kde::{
    cholesky, fft_axis_where, kde_covariance, kde_on_grid, percentile_bounds, DensityGrid,
};
use crate::error::{Error, Result};
use crate::io::pickle::{self, NdArray, PyValue};
use crate::plot::{heatmap_grid, line_plot, LinePlot, Series};
use crate::progress::{report, Progress};
use crate::rng::Rng;

/// Exponent beyond which a kernel Gaussian is taken as 0 (`e^−25 ≈ 1.4·10⁻¹¹` of its peak).
const KERNEL_CUT: f64 = 25.0;

/// Kernel mass (per axis, of a total of 1) that the FFT convolution may leave out.
const CROP_MASS: f64 = 1e-12;

/// Most grid nodes accepted (`M^d`): the solver and the objective need about 250 bytes a
/// node, 4 GB here.
const MAX_NODES: usize = 1 << 24;

/// RECOVAR's factor on the objective (it keeps scipy's relative tolerances meaningful).
const OBJECTIVE_SCALE: f64 = 1e8;

/// Correction pairs kept by the L-BFGS solver (scipy's `maxcor` default).
const LBFGS_MEMORY: usize = 10;

/// Seed of the kernel's sample of images.
const KERNEL_SEED: u64 = 0;

/// Relative cutoff of the pseudo-inverse of a precision block: eigenvalues at most this
/// times the largest are dropped (as `numpy.linalg.pinv`'s `rcond`, for f32 data).
const PINV_RCOND: f64 = 1e-6;

/// Grid values summed in one chunk (fixed, so sums do not depend on the thread count).
const SUM_CHUNK: usize = 1 << 14;

/// Options of [`estimate_density`]; the defaults are RECOVAR's.
#[derive(Clone, Debug, PartialEq)]
pub struct DensityOptions {
    /// Number of leading latent coordinates used (1 to 6; default 4).
    pub pca_dim: usize,
    /// Images whose precision norm is at most this percentile are left out (default 10).
    pub percentile_reject: f64,
    /// Grid nodes per axis; `None` gives 50 for more than 3 axes, 100 for 3, 200 for 2 and
    /// 1000 for 1 ([`DensityOptions::grid_points`]).
    pub num_disc_points: Option<usize>,
    /// Regularization weights, in the order solved and written; `None` gives
    /// `10, 1, 0.1, …, 10⁻⁹` (numpy's `logspace(−9, 1, 11)` reversed).
    pub alphas: Option<Vec<f64>>,
    /// The grid spans the `[q, 100 − q]` percentiles of each coordinate (default 1).
    pub percentile_bound: f64,
    /// Images drawn to estimate the blur kernel (default 5000).
    pub kernel_samples: usize,
    /// L-BFGS-B iterations per weight (default 500).
    pub max_iter: usize,
}

impl Default for DensityOptions {
    fn default() -> Self {
        DensityOptions {
            pca_dim: 4,
            percentile_reject: 10.0,
            num_disc_points: None,
            alphas: None,
            percentile_bound: 1.0,
            kernel_samples: 5000,
            max_iter: 500,
        }
    }
}

impl DensityOptions {
    /// Grid nodes per axis: `num_disc_points`, or RECOVAR's default for `pca_dim`.
    pub fn grid_points(&self) -> usize {
        self.num_disc_points.unwrap_or(match self.pca_dim {
            0 | 1 => 1000,
            2 => 200,
            3 => 100,
            _ => 50,
        })
    }

    /// The regularization weights: `alphas`, or `10¹, 10⁰, …, 10⁻⁹`.
    pub fn alpha_values(&self) -> Vec<f64> {
        match &self.alphas {
            Some(a) => a.clone(),
            None => (-9..=1).rev().map(|k| 10f64.powf(k as f64)).collect(),
        }
    }

    fn validate(&self) -> Result<()> {
        if !(1..=6).contains(&self.pca_dim) {
            return Err(Error::invalid(format!(
                "density: pca_dim must be 1 to 6, got {}",
                self.pca_dim
            )));
        }
        if !(0.0..100.0).contains(&self.percentile_reject) {
            return Err(Error::invalid(format!(
                "density: percentile_reject must be in [0, 100), got {}",
                self.percentile_reject
            )));
        }
        if !(0.0..50.0).contains(&self.percentile_bound) {
            return Err(Error::invalid(format!(
                "density: percentile_bound must be in [0, 50), got {}",
                self.percentile_bound
            )));
        }
        let m = self.grid_points();
        if m < 2 {
            return Err(Error::invalid(format!(
                "density: a grid needs at least 2 points per axis, got {m}"
            )));
        }
        let nodes = m.checked_pow(self.pca_dim as u32);
        if nodes.is_none_or(|n| n > MAX_NODES) {
            let most = (1..=m)
                .rev()
                .find(|k| {
                    k.checked_pow(self.pca_dim as u32)
                        .is_some_and(|n| n <= MAX_NODES)
                })
                .unwrap_or(2);
            return Err(Error::invalid(format!(
                "density: {m}^{} grid nodes is more than {MAX_NODES}; use at most {most} points per axis",
                self.pca_dim
            )));
        }
        if self.kernel_samples == 0 {
            return Err(Error::invalid("density: kernel_samples must be at least 1"));
        }
        if self.max_iter == 0 {
            return Err(Error::invalid("density: max_iter must be at least 1"));
        }
        let alphas = self.alpha_values();
        if alphas.is_empty() {
            return Err(Error::invalid("density: no regularization weight (alphas)"));
        }
        if let Some(a) = alphas.iter().find(|a| !(a.is_finite() && **a > 0.0)) {
            return Err(Error::invalid(format!(
                "density: regularization weights must be finite and positive, got {a}"
            )));
        }
        Ok(())
    }
}

/// The result of [`estimate_density`].
#[derive(Clone, Debug, PartialEq)]
pub struct DeconvolvedDensity {
    /// The KDE of the kept images on the grid, largest value 1.
    pub raw: DensityGrid,
    /// The blur kernel on the centred grid (`M^d` values, same layout as the densities),
    /// summing to 1.
    pub kernel: Vec<f64>,
    /// The regularization weights, in the order of `densities` and `costs`.
    pub alphas: Vec<f64>,
    /// One deconvolved density per weight, on the grid and bounds of `raw` (in units where
    /// the raw density has mean 1).
    pub densities: Vec<DensityGrid>,
    /// `mean((K ⊛ f_α − d)²) / mean(d²)` per weight.
    pub costs: Vec<f64>,
    /// Index into `alphas` of the L-curve knee ([`knee_index`]; if it finds none, the point
    /// of largest curvature, see [`estimate_density`]).
    pub knee: usize,
    /// Images kept after the rejection of the least informative ones.
    pub n_used: usize,
}

/// RECOVAR's deconvolved density (see the module documentation) of the `n × zdim`
/// row-major **unregularized** latent coordinates `zs`, with `precisions` the `n` row-major
/// `zdim × zdim` precision (Gram) matrices `P_i`. Uses the first `opts.pca_dim ≤ zdim`
/// coordinates.
///
/// Progress: `progress.update("density", k, n_alphas)` before weight `k` (and during its
/// solve), then `(n_alphas, n_alphas)`; returning `false` stops the computation with
/// [`Error::Cancelled`].
///
/// The knee is [`knee_index`] of `log(cost)` against `log10(1/α)`; when it finds none
/// (kneed would return `None`), it is the interior point of largest positive Menger
/// curvature of that curve with both axes scaled to [0, 1], and failing that (fewer than
/// three weights, or a curve with no convex bend) the first weight.
///
/// Errors: invalid options, `zs` or `precisions` of the wrong size or not finite,
/// `pca_dim > zdim`, too few images left to estimate a `pca_dim`-dimensional KDE, a
/// coordinate without spread, a grid that is too large, cancellation, or a solver failure.
pub fn estimate_density(
    zs: &[f32],
    zdim: usize,
    precisions: &[f32],
    opts: &DensityOptions,
    progress: &dyn Progress,
) -> Result<DeconvolvedDensity> {
    opts.validate()?;
    let d = opts.pca_dim;
    let m = opts.grid_points();
    let n = check_inputs(zs, zdim, precisions, d)?;
    let alphas = opts.alpha_values();
    let n_alphas = alphas.len() as u64;
    report(progress, "density", 0, n_alphas)?;

    // Step 2: reject the images with the least informative precisions.
    let norms = spectral_norms(precisions, zdim)?;
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let threshold = crate::stats::percentile_sorted(&sorted, opts.percentile_reject)
        .ok_or_else(|| Error::invalid("density: no images"))?;
    let kept: Vec<usize> = (0..n).filter(|&i| norms[i] > threshold).collect();
    if kept.len() <= d {
        return Err(Error::invalid(format!(
            "density: {} of {n} images have a precision norm above the {} percentile ({threshold:.4e}); \
             at least {} are needed",
            kept.len(),
            opts.percentile_reject,
            d + 1
        )));
    }
    let z_kept: Vec<f32> = kept
        .iter()
        .flat_map(|&i| zs[i * zdim..i * zdim + d].iter().copied())
        .collect();

    // Step 3: the raw density.
    let bounds = percentile_bounds(&z_kept, d, d, opts.percentile_bound)?;
    let clock = std::time::Instant::now();
    let raw = kde_on_grid(&z_kept, d, &bounds, m)?;
    tracing::debug!(
        "density: KDE of {} images on {m}^{d} nodes in {:.2} s",
        kept.len(),
        clock.elapsed().as_secs_f64()
    );

    // Step 4: the blur kernel.
    let h = kde_covariance(&z_kept, d, d)?;
    let mut rng = Rng::new(KERNEL_SEED);
    let covariances: Vec<Vec<f64>> = (0..opts.kernel_samples)
        .map(|_| {
            let i = kept[rng.below(kept.len() as u64) as usize];
            let block: Vec<f64> = (0..d * d)
                .map(|ab| precisions[i * zdim * zdim + (ab / d) * zdim + ab % d] as f64)
                .collect();
            let mut c = pinv_psd(&block, d);
            for (c, h) in c.iter_mut().zip(&h) {
                *c += h;
            }
            c
        })
        .collect();
    let extent: Vec<f64> = bounds.iter().map(|b| b[1] as f64 - b[0] as f64).collect();
    let clock = std::time::Instant::now();
    let kernel = blur_kernel(&covariances, &extent, m)?;
    tracing::debug!(
        "density: kernel of {} Gaussians in {:.2} s",
        covariances.len(),
        clock.elapsed().as_secs_f64()
    );
    report(progress, "density", 0, n_alphas)?;

    // Step 5: deconvolution for each weight.
    let raw_values: Vec<f64> = raw.values.iter().map(|&v| v as f64).collect();
    let mean = fixed_sum(&raw_values, |v| v) / raw_values.len() as f64;
    let target: Vec<f64> = raw_values.iter().map(|v| v / mean).collect();
    let spacing: Vec<f64> = (0..d).map(|k| raw.spacing(k)).collect();
    let mean_spacing = spacing.iter().sum::<f64>() / d as f64;
    let dx: Vec<f64> = spacing.iter().map(|s| s / mean_spacing).collect();
    let mut problem = Problem::new(&kernel, target, dx, m, d)?;
    tracing::debug!("density: FFT grid {:?}", problem.conv.n);
    let data_zero = problem.data_term_of_zero();
    let mut densities = Vec::with_capacity(alphas.len());
    let mut costs = Vec::with_capacity(alphas.len());
    for (k, &alpha) in alphas.iter().enumerate() {
        report(progress, "density", k as u64, n_alphas)?;
        problem.alpha = alpha;
        let f = solve(&mut problem, opts.max_iter, &|| {
            progress.update("density", k as u64, n_alphas)
        })?;
        let data = problem.data_term(&f);
        costs.push(data / data_zero);
        densities.push(DensityGrid {
            dim: d,
            n_grid: m,
            bounds: bounds.clone(),
            values: f.iter().map(|&v| v as f32).collect(),
        });
    }
    report(progress, "density", n_alphas, n_alphas)?;

    // Step 6: the L-curve knee.
    let x: Vec<f64> = alphas.iter().map(|a| (1.0 / a).log10()).collect();
    let y: Vec<f64> = costs.iter().map(|c| c.ln()).collect();
    let knee = knee_index(&x, &y)
        .or_else(|| max_curvature_index(&x, &y))
        .unwrap_or(0);
    Ok(DeconvolvedDensity {
        raw,
        kernel,
        alphas,
        densities,
        costs,
        knee,
        n_used: kept.len(),
    })
}

/// Checks shapes and values; returns the number of images.
fn check_inputs(zs: &[f32], zdim: usize, precisions: &[f32], d: usize) -> Result<usize> {
    let n = super::kmeans::check_rows(zs, zdim, "density: latent coordinates")?;
    if d > zdim {
        return Err(Error::invalid(format!(
            "density: pca_dim {d} is more than the {zdim} latent coordinates"
        )));
    }
    if Some(precisions.len()) != n.checked_mul(zdim * zdim) {
        return Err(Error::inconsistent(format!(
            "density: {} precision values for {n} images of {zdim} coordinates (expected {n} × {zdim} × {zdim})",
            precisions.len()
        )));
    }
    if let Some(i) = precisions.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "density: the precision of image {} has a non-finite entry ({})",
            i / (zdim * zdim),
            precisions[i]
        )));
    }
    Ok(n)
}

/// `‖P_i‖₂` (largest singular value, numpy's `norm(P, ord=2)`) of each `zdim × zdim` block.
fn spectral_norms(precisions: &[f32], zdim: usize) -> Result<Vec<f64>> {
    precisions
        .par_chunks(zdim * zdim)
        .map(|p| {
            let a = faer::Mat::<f64>::from_fn(zdim, zdim, |r, c| p[r * zdim + c] as f64);
            let s = a.singular_values().map_err(|e| {
                Error::invalid(format!("density: SVD of a precision failed ({e:?})"))
            })?;
            Ok(s.into_iter().fold(0.0f64, f64::max))
        })
        .collect()
}

/// Pseudo-inverse of the positive semi-definite part of the symmetric part of the `d × d`
/// `p`: `V diag(1/λ) Vᵀ` over the eigenvalues `λ > PINV_RCOND · max λ` (a negative
/// eigenvalue, possible only from rounding or a malformed input, is dropped, so that the
/// kernel covariance stays positive definite).
fn pinv_psd(p: &[f64], d: usize) -> Vec<f64> {
    let mut a = vec![0.0f64; d * d];
    for r in 0..d {
        for c in 0..d {
            a[r * d + c] = 0.5 * (p[r * d + c] + p[c * d + r]);
        }
    }
    let (values, vectors) = jacobi_eigen(&a, d);
    let top = values.iter().cloned().fold(0.0f64, f64::max);
    let mut out = vec![0.0f64; d * d];
    for (k, &l) in values.iter().enumerate() {
        if top > 0.0 && l > PINV_RCOND * top {
            for r in 0..d {
                for c in 0..d {
                    out[r * d + c] += vectors[r * d + k] * vectors[c * d + k] / l;
                }
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns of the row-major `d × d` result) of the symmetric
/// `a`, by cyclic Jacobi rotations (small `d` only).
fn jacobi_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|r| (0..d).filter(move |&c| c != r).map(move |c| (r, c)))
            .map(|(r, c)| a[r * d + c] * a[r * d + c])
            .sum();
        let scale: f64 = (0..d).map(|i| a[i * d + i] * a[i * d + i]).sum();
        if off <= 1e-30 * scale || off == 0.0 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// One Gaussian of the kernel: inverse covariance, the normalisation `(2π)^(−d/2)·det^(−½)`
/// and the marginal standard deviations.
struct Gaussian {
    inv: Vec<f64>,
    norm: f64,
    sd: Vec<f64>,
}

/// The blur kernel (step 4): the sum over `covariances` of the zero-mean Gaussian pdf on the
/// centred grid (`M` nodes per axis, node `k` of axis `a` at `(k − (M/2 − 1))·L_a/M`, the
/// mirror image of RECOVAR's `L/2 − (k+1)·L/M`, which the Gaussian cannot tell apart),
/// normalised to sum 1. See the module documentation for the cut-off.
fn blur_kernel(covariances: &[Vec<f64>], extent: &[f64], m: usize) -> Result<Vec<f64>> {
    let d = extent.len();
    let gaussians: Vec<Gaussian> = covariances
        .iter()
        .map(|c| {
            let l = cholesky(c, d).ok_or_else(|| {
                Error::invalid("density: a kernel covariance is not positive definite")
            })?;
            let det: f64 = (0..d).map(|i| l[i * d + i] * l[i * d + i]).product();
            let inv = inverse_from_cholesky(&l, d);
            let norm = (2.0 * std::f64::consts::PI).powf(-(d as f64) / 2.0) / det.sqrt();
            let sd = (0..d).map(|a| c[a * d + a].sqrt()).collect();
            Ok(Gaussian { inv, norm, sd })
        })
        .collect::<Result<_>>()?;
    let step: Vec<f64> = extent.iter().map(|l| l / m as f64).collect();
    let origin = m as f64 / 2.0 - 1.0;
    let coord = |a: usize, k: usize| (k as f64 - origin) * step[a];
    let line_len = m;
    let slab_len = m.pow(d as u32 - 1);
    let fill_slab = |first: Option<usize>, slab: &mut [f64]| {
        // Nodes of axes 0..d−1 fixed per line; `first` fixes axis 0 for d ≥ 2.
        let mut y = vec![0.0f64; d];
        for g in &gaussians {
            let mut idx = vec![0usize; d.saturating_sub(1)];
            if let Some(i0) = first {
                y[0] = coord(0, i0);
                if y[0].abs() > g.sd[0] * (2.0 * KERNEL_CUT).sqrt() {
                    continue;
                }
                idx[0] = i0;
            }
            for (li, line) in slab.chunks_exact_mut(line_len).enumerate() {
                // Decode the line's indices on axes 1..d−1 (axis 0 is fixed by the slab).
                if d >= 2 {
                    let mut rest = li;
                    for a in (1..d - 1).rev() {
                        idx[a] = rest % m;
                        rest /= m;
                    }
                    for a in 1..d - 1 {
                        y[a] = coord(a, idx[a]);
                    }
                }
                add_line(g, &y, d, m, step[d - 1], origin, line);
            }
        }
    };
    let mut kernel = vec![0.0f64; slab_len * m];
    if d == 1 {
        fill_slab(None, &mut kernel);
    } else {
        kernel
            .par_chunks_mut(slab_len)
            .enumerate()
            .for_each(|(i0, slab)| fill_slab(Some(i0), slab));
    }
    let total = fixed_sum(&kernel, |v| v);
    if !(total.is_finite() && total > 0.0) {
        return Err(Error::invalid(
            "density: the blur kernel is zero on the grid (degenerate covariances?)",
        ));
    }
    for v in &mut kernel {
        *v /= total;
    }
    Ok(kernel)
}

/// Adds the Gaussian `g` along one line of the last axis, the other coordinates being
/// `y[..d−1]`: `norm·exp(−½ yᵀ C⁻¹ y)` where the exponent is at most [`KERNEL_CUT`].
fn add_line(g: &Gaussian, y: &[f64], d: usize, m: usize, u: f64, origin: f64, line: &mut [f64]) {
    let last = d - 1;
    let q = &g.inv;
    let qdd = q[last * d + last];
    // Exponent = ½(pᵀQ_pp p + 2·t·β + q_dd·t²) with t the last coordinate.
    let mut ppp = 0.0;
    let mut beta = 0.0;
    for a in 0..last {
        beta += q[last * d + a] * y[a];
        for b in 0..last {
            ppp += y[a] * q[a * d + b] * y[b];
        }
    }
    let e_min = 0.5 * (ppp - beta * beta / qdd);
    if e_min > KERNEL_CUT {
        return;
    }
    // The peak along the line, in (fractional) node units, and the node nearest to it.
    let k_star = origin - beta / qdd / u;
    let k0 = k_star.round().clamp(0.0, (m - 1) as f64);
    let z0 = (k0 - k_star) * u;
    let e0 = e_min + 0.5 * qdd * z0 * z0;
    if e0 > KERNEL_CUT {
        return;
    }
    let floor = g.norm * (-KERNEL_CUT).exp();
    let g0 = g.norm * (-e0).exp();
    let k0 = k0 as usize;
    line[k0] += g0;
    // Ratios of neighbouring values: exp(−½ q_dd u² (1 ± 2δ)), δ = k0 − k*, each step
    // multiplying the ratio by t = exp(−q_dd u²). Away from k0 the values only decrease.
    let t = (-qdd * u * u).exp();
    let delta = k0 as f64 - k_star;
    let mut r = (-0.5 * qdd * u * u * (1.0 + 2.0 * delta)).exp();
    let mut v = g0;
    for x in line.iter_mut().skip(k0 + 1) {
        v *= r;
        if v < floor {
            break;
        }
        *x += v;
        r *= t;
    }
    let mut r = (-0.5 * qdd * u * u * (1.0 - 2.0 * delta)).exp();
    let mut v = g0;
    for x in line[..k0].iter_mut().rev() {
        v *= r;
        if v < floor {
            break;
        }
        *x += v;
        r *= t;
    }
}

/// `A⁻¹` from the lower Cholesky factor `L` of `A` (`d × d`).
fn inverse_from_cholesky(l: &[f64], d: usize) -> Vec<f64> {
    // Columns of L⁻¹ by forward substitution, then A⁻¹ = L⁻ᵀ L⁻¹.
    let mut linv = vec![0.0f64; d * d];
    for k in 0..d {
        for i in k..d {
            let rhs = if i == k { 1.0 } else { 0.0 };
            let s: f64 = (k..i).map(|j| l[i * d + j] * linv[j * d + k]).sum();
            linv[i * d + k] = (rhs - s) / l[i * d + i];
        }
    }
    let mut inv = vec![0.0f64; d * d];
    for r in 0..d {
        for c in 0..d {
            inv[r * d + c] = (0..d).map(|k| linv[k * d + r] * linv[k * d + c]).sum();
        }
    }
    inv
}

/// `Σ f(v)` over `values`, in chunks of [`SUM_CHUNK`] whose partial sums are added in order.
fn fixed_sum(values: &[f64], f: impl Fn(f64) -> f64 + Sync) -> f64 {
    values
        .par_chunks(SUM_CHUNK)
        .map(|c| c.iter().map(|&v| f(v)).sum::<f64>())
        .collect::<Vec<f64>>()
        .into_iter()
        .sum()
}

/// `Σ a·b` over two slices, as [`fixed_sum`].
fn fixed_dot(a: &[f64], b: &[f64]) -> f64 {
    a.par_chunks(SUM_CHUNK)
        .zip(b.par_chunks(SUM_CHUNK))
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>())
        .collect::<Vec<f64>>()
        .into_iter()
        .sum()
}

/// Smallest 5-smooth number `≥ n`, even if `even` (the real FFT's axis).
fn fast_len(n: usize, even: bool) -> usize {
    let mut k = n.max(2);
    loop {
        if !even || k.is_multiple_of(2) {
            let mut r = k;
            for p in [2, 3, 5] {
                while r.is_multiple_of(p) {
                    r /= p;
                }
            }
            if r == 1 {
                return k;
            }
        }
        k += 1;
    }
}

/// The linear 'same' convolution with the kernel and its adjoint, by real FFTs on a padded
/// grid (see the module documentation).
struct Convolver {
    d: usize,
    m: usize,
    /// Padded length of each axis.
    n: Vec<usize>,
    /// Complex length of the last axis (`n[d−1]/2 + 1`).
    half: usize,
    /// Spectrum of the wrapped kernel, divided by `Π n` (the inverse FFT's scale).
    kernel_hat: Vec<Complex64>,
    r2c: Arc<dyn RealToComplex<f64>>,
    c2r: Arc<dyn ComplexToReal<f64>>,
    forward: Vec<Arc<dyn Fft<f64>>>,
    inverse: Vec<Arc<dyn Fft<f64>>>,
    spec: Vec<Complex64>,
}

impl Convolver {
    /// `kernel`: `M^d` values, node `k` per axis at displacement `s − k`, `s = (M−1) div 2`
    /// (scipy's 'same' centring).
    fn new(kernel: &[f64], m: usize, d: usize) -> Result<Self> {
        let s = (m - 1) / 2;
        // Reach of the kernel on each axis after dropping outer layers of negligible mass.
        let mut reach = Vec::with_capacity(d);
        for a in 0..d {
            let stride = m.pow((d - 1 - a) as u32);
            let mut marginal = vec![0.0f64; m];
            for (i, &v) in kernel.iter().enumerate() {
                marginal[(i / stride) % m] += v.abs();
            }
            let total: f64 = marginal.iter().sum();
            // Outer layers holding at most CROP_MASS/2 of the mass on each side are dropped.
            let allowed = 0.5 * CROP_MASS * total;
            let (mut lo, mut below) = (0usize, 0.0);
            while lo < s && below + marginal[lo] <= allowed {
                below += marginal[lo];
                lo += 1;
            }
            let (mut hi, mut above) = (m - 1, 0.0);
            while hi > s && above + marginal[hi] <= allowed {
                above += marginal[hi];
                hi -= 1;
            }
            reach.push((lo, hi, (s - lo).max(hi - s)));
        }
        let n: Vec<usize> = reach
            .iter()
            .enumerate()
            .map(|(a, &(_, _, r))| fast_len(m + r, a == d - 1))
            .collect();
        let total: usize = n.iter().product();
        let half = n[d - 1] / 2 + 1;
        let outer: usize = n[..d - 1].iter().product();
        let mut real = RealFftPlanner::<f64>::new();
        let r2c = real.plan_fft_forward(n[d - 1]);
        let c2r = real.plan_fft_inverse(n[d - 1]);
        let mut planner = FftPlanner::<f64>::new();
        let forward: Vec<_> = n[..d - 1]
            .iter()
            .map(|&l| planner.plan_fft_forward(l))
            .collect();
        let inverse: Vec<_> = n[..d - 1]
            .iter()
            .map(|&l| planner.plan_fft_inverse(l))
            .collect();
        // The wrapped kernel: K[k] at position (k − s) mod n per axis.
        let mut wrapped = vec![0.0f64; total];
        let mut k = vec![0usize; d];
        for &v in kernel {
            if (0..d).all(|a| k[a] >= reach[a].0 && k[a] <= reach[a].1) {
                let pos = (0..d).fold(0usize, |acc, a| acc * n[a] + (k[a] + n[a] - s) % n[a]);
                wrapped[pos] = v;
            }
            for a in (0..d).rev() {
                k[a] += 1;
                if k[a] < m {
                    break;
                }
                k[a] = 0;
            }
        }
        let mut conv = Convolver {
            d,
            m,
            n: n.clone(),
            half,
            kernel_hat: Vec::new(),
            r2c,
            c2r,
            forward,
            inverse,
            spec: vec![Complex64::new(0.0, 0.0); outer * half],
        };
        // Full forward transform of the wrapped kernel (every row may be non-zero).
        let zero = Complex64::new(0.0, 0.0);
        let mut spec = vec![zero; outer * half];
        let r2c = conv.r2c.clone();
        spec.par_chunks_mut(half)
            .zip(wrapped.par_chunks_mut(n[d - 1]))
            .for_each_init(
                || r2c.make_scratch_vec(),
                |scratch, (out, row)| {
                    // Cannot fail: the lengths match the plan.
                    let _ = r2c.process_with_scratch(row, out, scratch);
                },
            );
        drop(wrapped);
        for a in (0..d - 1).rev() {
            conv.fft_axis(&mut spec, a, false, usize::MAX);
        }
        let scale = 1.0 / total as f64;
        for v in &mut spec {
            *v *= scale;
        }
        conv.kernel_hat = spec;
        Ok(conv)
    }

    /// `out = K ⊛ input` (`adjoint = false`) or `out = Kᵀ input` (`adjoint = true`), both
    /// `M^d` arrays.
    fn apply(&mut self, input: &[f64], out: &mut [f64], adjoint: bool) {
        let (d, m, half) = (self.d, self.m, self.half);
        let n_last = self.n[d - 1];
        let mut spec = std::mem::take(&mut self.spec);
        spec.fill(Complex64::new(0.0, 0.0));
        // Rows whose indices on the axes before the last are all inside the grid, in order:
        // they match the rows of `input` and `out` one to one.
        let r2c = self.r2c.clone();
        {
            let rows = self.grid_rows(&mut spec);
            rows.into_par_iter().zip(input.par_chunks(m)).for_each_init(
                || (vec![0.0f64; n_last], r2c.make_scratch_vec()),
                |(buf, scratch), (row, src)| {
                    buf[..m].copy_from_slice(src);
                    buf[m..].fill(0.0);
                    let _ = r2c.process_with_scratch(buf, row, scratch);
                },
            );
        }
        for a in (0..d - 1).rev() {
            self.fft_axis(&mut spec, a, false, m);
        }
        spec.par_chunks_mut(half)
            .zip(self.kernel_hat.par_chunks(half))
            .for_each(|(s, k)| {
                for (s, k) in s.iter_mut().zip(k) {
                    *s *= if adjoint { k.conj() } else { *k };
                }
            });
        for a in 0..d - 1 {
            self.fft_axis(&mut spec, a, true, m);
        }
        let c2r = self.c2r.clone();
        {
            let rows = self.grid_rows(&mut spec);
            rows.into_par_iter()
                .zip(out.par_chunks_mut(m))
                .for_each_init(
                    || (vec![0.0f64; n_last], c2r.make_scratch_vec()),
                    |(buf, scratch), (row, dst)| {
                        // Only rounding can leave imaginary parts at 0 and Nyquist.
                        row[0].im = 0.0;
                        if n_last.is_multiple_of(2) {
                            row[half - 1].im = 0.0;
                        }
                        let _ = c2r.process_with_scratch(row, buf, scratch);
                        dst.copy_from_slice(&buf[..m]);
                    },
                );
        }
        self.spec = spec;
    }

    /// The rows (along the last axis) of `spec` whose other indices are all below `M`.
    fn grid_rows<'s>(&self, spec: &'s mut [Complex64]) -> Vec<&'s mut [Complex64]> {
        let d = self.d;
        let (n, m) = (&self.n, self.m);
        spec.chunks_mut(self.half)
            .enumerate()
            .filter(|&(r, _)| {
                let mut rest = r;
                for a in (0..d - 1).rev() {
                    if rest % n[a] >= m {
                        return false;
                    }
                    rest /= n[a];
                }
                true
            })
            .map(|(_, row)| row)
            .collect()
    }

    /// In-place FFT along complex axis `axis` of `spec`, on the lines whose indices on the
    /// axes before `axis` are all below `limit` (the others are zero, or not needed).
    fn fft_axis(&self, spec: &mut [Complex64], axis: usize, inverse: bool, limit: usize) {
        let d = self.d;
        let n = &self.n;
        let fft = if inverse {
            &self.inverse[axis]
        } else {
            &self.forward[axis]
        };
        let mut shape = n[..d - 1].to_vec();
        shape.push(self.half);
        fft_axis_where(spec, &shape, axis, fft, |b| {
            let mut rest = b;
            (0..axis).rev().all(|a| {
                let inside = rest % n[a] < limit;
                rest /= n[a];
                inside
            })
        });
    }
}

/// numpy's `gradient` along `axis` of the `M^d` array `f` with spacing `h`.
fn gradient_axis(f: &[f64], m: usize, d: usize, axis: usize, h: f64, out: &mut [f64]) {
    let stride = m.pow((d - 1 - axis) as u32);
    out.par_chunks_mut(SUM_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, o) in chunk.iter_mut().enumerate() {
                let i = c * SUM_CHUNK + j;
                let p = (i / stride) % m;
                *o = if p == 0 {
                    (f[i + stride] - f[i]) / h
                } else if p == m - 1 {
                    (f[i] - f[i - stride]) / h
                } else {
                    (f[i + stride] - f[i - stride]) / (2.0 * h)
                };
            }
        });
}

/// `out += w · ∇ᵀ g` for the transpose of [`gradient_axis`] (same arguments).
fn gradient_axis_adjoint(
    g: &[f64],
    m: usize,
    d: usize,
    axis: usize,
    h: f64,
    w: f64,
    out: &mut [f64],
) {
    let stride = m.pow((d - 1 - axis) as u32);
    out.par_chunks_mut(SUM_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, o) in chunk.iter_mut().enumerate() {
                let i = c * SUM_CHUNK + j;
                let p = (i / stride) % m;
                let mut v = 0.0;
                // The node's own difference: one-sided at the edges, none inside.
                if p == 0 {
                    v -= g[i] / h;
                } else if p == m - 1 {
                    v += g[i] / h;
                }
                // The next node's difference uses this node with a minus sign.
                if p + 1 < m {
                    let q = i + stride;
                    v -= if p + 1 == m - 1 {
                        g[q] / h
                    } else {
                        g[q] / (2.0 * h)
                    };
                }
                // The previous node's difference uses it with a plus sign.
                if p >= 1 {
                    let q = i - stride;
                    v += if p - 1 == 0 {
                        g[q] / h
                    } else {
                        g[q] / (2.0 * h)
                    };
                }
                *o += w * v;
            }
        });
}

/// The deconvolution objective for one weight, with the buffers it reuses.
struct Problem {
    conv: Convolver,
    target: Vec<f64>,
    dx: Vec<f64>,
    m: usize,
    d: usize,
    alpha: f64,
    work: Vec<f64>,
    back: Vec<f64>,
    diff: Vec<f64>,
}

impl Problem {
    fn new(kernel: &[f64], target: Vec<f64>, dx: Vec<f64>, m: usize, d: usize) -> Result<Self> {
        let len = target.len();
        Ok(Problem {
            conv: Convolver::new(kernel, m, d)?,
            target,
            dx,
            m,
            d,
            alpha: 0.0,
            work: vec![0.0; len],
            back: vec![0.0; len],
            diff: vec![0.0; len],
        })
    }

    /// `mean(d²)`: the data term at `f = 0`.
    fn data_term_of_zero(&self) -> f64 {
        fixed_sum(&self.target, |v| v * v) / self.target.len() as f64
    }

    /// `mean((K ⊛ f − d)²)`.
    fn data_term(&mut self, f: &[f64]) -> f64 {
        let mut work = std::mem::take(&mut self.work);
        self.conv.apply(f, &mut work, false);
        let s = work
            .par_chunks(SUM_CHUNK)
            .zip(self.target.par_chunks(SUM_CHUNK))
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>())
            .collect::<Vec<f64>>()
            .into_iter()
            .sum::<f64>();
        self.work = work;
        s / self.target.len() as f64
    }

    /// The objective and its gradient at `f`.
    fn value_and_gradient(&mut self, f: &[f64], grad: &mut [f64]) -> f64 {
        let total = self.target.len() as f64;
        let (m, d) = (self.m, self.d);
        let mut work = std::mem::take(&mut self.work);
        let mut back = std::mem::take(&mut self.back);
        let mut diff = std::mem::take(&mut self.diff);
        // Data term: residual r = K ⊛ f − d, gradient 2/N · Kᵀ r.
        self.conv.apply(f, &mut work, false);
        work.par_iter_mut()
            .zip(self.target.par_iter())
            .for_each(|(w, t)| *w -= t);
        let data = fixed_sum(&work, |v| v * v) / total;
        self.conv.apply(&work, &mut back, true);
        let scale = OBJECTIVE_SCALE * 2.0 / total;
        grad.par_iter_mut()
            .zip(back.par_iter())
            .for_each(|(g, b)| *g = scale * b);
        // Regularizer: α/(d·N) Σ_a |∇_a f|², gradient 2α/(d·N) Σ_a ∇_aᵀ ∇_a f.
        let mut reg = 0.0;
        let w = OBJECTIVE_SCALE * 2.0 * self.alpha / (d as f64 * total);
        for a in 0..d {
            gradient_axis(f, m, d, a, self.dx[a], &mut diff);
            reg += fixed_dot(&diff, &diff);
            gradient_axis_adjoint(&diff, m, d, a, self.dx[a], w, grad);
        }
        reg /= d as f64 * total;
        self.work = work;
        self.back = back;
        self.diff = diff;
        OBJECTIVE_SCALE * (data + self.alpha * reg)
    }
}

/// Minimises the problem's objective over `f ≥ 0` from `f = d` ([`minimize_nonneg`]).
/// `keep_going` is asked before every evaluation; `false` stops with [`Error::Cancelled`].
fn solve(
    problem: &mut Problem,
    max_iter: usize,
    keep_going: &dyn Fn() -> bool,
) -> Result<Vec<f64>> {
    let start = problem.target.clone();
    let started = std::time::Instant::now();
    let mut seconds = 0.0;
    let mut eval = |x: &[f64], g: &mut [f64]| -> Result<f64> {
        if !keep_going() {
            return Err(Error::Cancelled);
        }
        let t = std::time::Instant::now();
        let v = problem.value_and_gradient(x, g);
        seconds += t.elapsed().as_secs_f64();
        Ok(v)
    };
    let (x, stats) = minimize_nonneg(&mut eval, start, max_iter)?;
    tracing::debug!(
        "density: projected L-BFGS, objective {:.6e} after {} iterations ({:?}); \
         {} evaluations taking {seconds:.2} s of {:.2} s",
        stats.value,
        stats.iterations,
        stats.stop,
        stats.evaluations,
        started.elapsed().as_secs_f64()
    );
    Ok(x)
}

/// The objective of [`minimize_nonneg`]: `eval(x, g)` returns `f(x)` and writes `∇f(x)`.
type Objective<'a> = dyn FnMut(&[f64], &mut [f64]) -> Result<f64> + 'a;

/// Why [`minimize_nonneg`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The projected gradient is at most [`PGTOL`] (scipy's `pgtol`).
    Gradient,
    /// The relative reduction of the objective was at most `factr·ε` (scipy's `ftol`).
    Reduction,
    /// `max_iter` iterations.
    Iterations,
    /// No step along the direction decreased the objective enough.
    LineSearch,
}

/// What [`minimize_nonneg`] did.
#[derive(Clone, Copy, Debug)]
struct SolveStats {
    value: f64,
    iterations: usize,
    evaluations: usize,
    stop: Stop,
}

/// scipy's `pgtol` default.
const PGTOL: f64 = 1e-5;

/// scipy's `ftol` default (`factr` 10⁷ times the machine epsilon).
const FTOL: f64 = 1e7 * f64::EPSILON;

/// Armijo constant of the line search.
const ARMIJO: f64 = 1e-4;

/// Most objective evaluations in one line search (scipy's `maxls`).
const MAX_LINE_SEARCH: usize = 20;

/// Minimises a smooth function over `x ≥ 0` by projected L-BFGS with a two-metric
/// projection step (Bertsekas 1982; Kim, Sra & Dhillon 2010), from `x0` (projected).
///
/// Why not an existing L-BFGS-B: the pure-Rust `rcompat-lbfgsb` 0.3 (a faithful port of
/// the compact L-BFGS-B) was tried first; its memory is `O(m·n)` as it should be, but it is
/// single-threaded and scalar, and on these problems (2 cores) it spent 120–300 ns per
/// variable and iteration outside the objective: 1.9 s an iteration on 50⁴ nodes against
/// 0.5–0.7 s for the objective and its gradient, 0.23 s against 0.1 s on 100³ nodes, so
/// most of the run was the solver's bookkeeping. This solver's iteration is a few parallel
/// passes over the vectors: 0.09 s on 50⁴ nodes, 10 ms on 100³ (the whole 2-D default run,
/// 200² nodes and 11 weights, went from 38 s to 15 s).
///
/// Each iteration: the variables at 0 whose gradient is positive are held (the active
/// set); the L-BFGS inverse-Hessian approximation `H` (the last [`LBFGS_MEMORY`] pairs,
/// stored in f32, scaled by `sᵀy/yᵀy`) gives `d = −[H]_FF g_F` on the others, which is a
/// descent direction since `H` is positive definite; components that would push a
/// variable at 0 below it are zeroed (only lowering `gᵀd`); then a backtracking line search
/// along the projected path `max(0, x + t·d)` from `t = 1` (the first iteration scales
/// `d` to unit length, as L-BFGS-B's first step) with the Armijo condition on the actual
/// displacement and safeguarded quadratic interpolation. Pairs with `sᵀy ≤ 10⁻¹⁰·yᵀy`
/// are not stored. It stops as scipy's L-BFGS-B does: projected gradient `≤ 10⁻⁵`,
/// relative reduction `≤ 10⁷·ε`, or `max_iter` iterations; and when a line search fails
/// (the current point is returned). All sums are over fixed chunks, so the iterates do not
/// depend on the thread count.
///
/// `eval(x, g)` returns the objective and writes its gradient; its errors (cancellation)
/// end the minimisation.
fn minimize_nonneg(
    eval: &mut Objective<'_>,
    x0: Vec<f64>,
    max_iter: usize,
) -> Result<(Vec<f64>, SolveStats)> {
    let n = x0.len();
    let mut x: Vec<f64> = x0.into_iter().map(|v| v.max(0.0)).collect();
    let mut g = vec![0.0f64; n];
    let mut f = eval(&x, &mut g)?;
    let mut evaluations = 1usize;
    let mut d = vec![0.0f64; n];
    let mut xn = vec![0.0f64; n];
    let mut gn = vec![0.0f64; n];
    // Ring of correction pairs, newest last: (s, y, 1/sᵀy).
    let mut pairs: std::collections::VecDeque<(Vec<f32>, Vec<f32>, f64)> =
        std::collections::VecDeque::with_capacity(LBFGS_MEMORY);
    let mut coef = vec![0.0f64; LBFGS_MEMORY];
    let mut stop = Stop::Iterations;
    let mut iterations = 0usize;
    while iterations < max_iter {
        // Projected gradient, ∞-norm: |max(0, x − g) − x|.
        let pg = chunked(&x, &g, |a, b| ((a - b).max(0.0) - a).abs(), f64::max);
        // (A NaN gradient also stops here.)
        if pg.is_nan() || pg <= PGTOL {
            stop = Stop::Gradient;
            break;
        }
        iterations += 1;
        let gd = direction(&x, &g, &pairs, &mut coef, &mut d);
        if gd.is_nan() || gd >= 0.0 {
            // Only rounding can get here; start again from the projected gradient.
            if pairs.is_empty() {
                stop = Stop::LineSearch;
                break;
            }
            pairs.clear();
            iterations -= 1;
            continue;
        }
        // Backtracking along the projected path.
        let mut t = 1.0f64;
        let mut accepted = None;
        for _ in 0..MAX_LINE_SEARCH {
            xn.par_chunks_mut(SUM_CHUNK)
                .zip(x.par_chunks(SUM_CHUNK).zip(d.par_chunks(SUM_CHUNK)))
                .for_each(|(o, (a, b))| {
                    for (o, (a, b)) in o.iter_mut().zip(a.iter().zip(b)) {
                        *o = (a + t * b).max(0.0);
                    }
                });
            let fnew = eval(&xn, &mut gn)?;
            evaluations += 1;
            // Predicted decrease gᵀ(x(t) − x), ≤ 0.
            let pred = chunked3(&g, &xn, &x, |a, b, c| a * (b - c));
            if fnew.is_finite() && fnew <= f + ARMIJO * pred {
                accepted = Some(fnew);
                break;
            }
            // Minimiser of the quadratic through f, the slope gᵀd and f(t), kept in
            // [0.1 t, 0.5 t].
            let slope = gd;
            let curv = fnew - f - slope * t;
            let next = if fnew.is_finite() && curv > 0.0 {
                -slope * t * t / (2.0 * curv)
            } else {
                0.5 * t
            };
            t = next.clamp(0.1 * t, 0.5 * t);
        }
        let Some(fnew) = accepted else {
            stop = Stop::LineSearch;
            break;
        };
        // New correction pair, stored in f32; sᵀy and yᵀy from the stored values.
        let mut pair = if pairs.len() == LBFGS_MEMORY {
            pairs
                .pop_front()
                .map(|(s, y, _)| (s, y))
                .unwrap_or_default()
        } else {
            (vec![0.0f32; n], vec![0.0f32; n])
        };
        pair.0
            .par_chunks_mut(SUM_CHUNK)
            .zip(pair.1.par_chunks_mut(SUM_CHUNK))
            .enumerate()
            .for_each(|(c, (s, y))| {
                let o = c * SUM_CHUNK;
                for (k, (s, y)) in s.iter_mut().zip(y.iter_mut()).enumerate() {
                    *s = (xn[o + k] - x[o + k]) as f32;
                    *y = (gn[o + k] - g[o + k]) as f32;
                }
            });
        let sy = dot32(&pair.0, &pair.1);
        let yy = dot32(&pair.1, &pair.1);
        if sy > 1e-10 * yy && yy > 0.0 {
            pairs.push_back((pair.0, pair.1, 1.0 / sy));
        }
        let reduction = (f - fnew) / f.abs().max(fnew.abs()).max(1.0);
        std::mem::swap(&mut x, &mut xn);
        std::mem::swap(&mut g, &mut gn);
        f = fnew;
        if reduction <= FTOL {
            stop = Stop::Reduction;
            break;
        }
    }
    let stats = SolveStats {
        value: f,
        iterations,
        evaluations,
        stop,
    };
    Ok((x, stats))
}

/// The two-metric L-BFGS direction into `d` (see [`minimize_nonneg`]); returns `gᵀd`.
fn direction(
    x: &[f64],
    g: &[f64],
    pairs: &std::collections::VecDeque<(Vec<f32>, Vec<f32>, f64)>,
    coef: &mut [f64],
    d: &mut [f64],
) -> f64 {
    // q = g on the free variables, 0 on the held ones.
    let free = |i: usize| !(x[i] <= 0.0 && g[i] > 0.0);
    d.par_chunks_mut(SUM_CHUNK).enumerate().for_each(|(c, q)| {
        let o = c * SUM_CHUNK;
        for (k, q) in q.iter_mut().enumerate() {
            *q = if free(o + k) { g[o + k] } else { 0.0 };
        }
    });
    // Two-loop recursion (d holds q, then r).
    for (j, (s, y, rho)) in pairs.iter().enumerate().rev() {
        coef[j] = rho * dot_mixed(d, s);
        axpy32(d, -coef[j], y);
    }
    let gamma = match pairs.back() {
        Some((_, y, rho)) => 1.0 / (rho * dot32(y, y)),
        // First step: unit length, as L-BFGS-B's first line search.
        None => 1.0 / chunked(d, d, |a, _| a * a, |p, q| p + q).sqrt(),
    };
    d.par_iter_mut().for_each(|v| *v *= gamma);
    for (j, (s, y, rho)) in pairs.iter().enumerate() {
        let b = rho * dot_mixed(d, y);
        axpy32(d, coef[j] - b, s);
    }
    // d = −r on the free variables; nothing that would leave the bound.
    d.par_chunks_mut(SUM_CHUNK).enumerate().for_each(|(c, r)| {
        let o = c * SUM_CHUNK;
        for (k, r) in r.iter_mut().enumerate() {
            let i = o + k;
            let v = -*r;
            *r = if !free(i) || (x[i] <= 0.0 && v < 0.0) {
                0.0
            } else {
                v
            };
        }
    });
    chunked(g, d, |a, b| a * b, |p, q| p + q)
}

/// `combine` over fixed chunks of `op(a_i, b_i)` (sums: in order of the chunks).
fn chunked(
    a: &[f64],
    b: &[f64],
    op: impl Fn(f64, f64) -> f64 + Sync,
    combine: impl Fn(f64, f64) -> f64 + Sync,
) -> f64 {
    let parts: Vec<f64> = a
        .par_chunks(SUM_CHUNK)
        .zip(b.par_chunks(SUM_CHUNK))
        .map(|(a, b)| lanes(a.len(), |i| op(a[i], b[i]), &combine))
        .collect();
    parts.into_iter().reduce(&combine).unwrap_or(0.0)
}

/// `Σ op(a_i, b_i, c_i)` over fixed chunks.
fn chunked3(a: &[f64], b: &[f64], c: &[f64], op: impl Fn(f64, f64, f64) -> f64 + Sync) -> f64 {
    let parts: Vec<f64> = a
        .par_chunks(SUM_CHUNK)
        .zip(b.par_chunks(SUM_CHUNK).zip(c.par_chunks(SUM_CHUNK)))
        .map(|(a, (b, c))| lanes(a.len(), |i| op(a[i], b[i], c[i]), &|p, q| p + q))
        .collect();
    parts.into_iter().sum()
}

/// `combine` of `term(0..len)` over 8 interleaved accumulators (vectorizable, fixed order).
#[inline]
fn lanes(len: usize, term: impl Fn(usize) -> f64, combine: &impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let full = len - len % 8;
    for base in (0..full).step_by(8) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = combine(*a, term(base + l));
        }
    }
    for (l, i) in (full..len).enumerate() {
        acc[l] = combine(acc[l], term(i));
    }
    acc.into_iter().reduce(combine).unwrap_or(0.0)
}

/// `Σ a_i·b_i` for an f64 and an f32 vector.
fn dot_mixed(a: &[f64], b: &[f32]) -> f64 {
    let parts: Vec<f64> = a
        .par_chunks(SUM_CHUNK)
        .zip(b.par_chunks(SUM_CHUNK))
        .map(|(a, b)| lanes(a.len(), |i| a[i] * b[i] as f64, &|p, q| p + q))
        .collect();
    parts.into_iter().sum()
}

/// `Σ a_i·b_i` for two f32 vectors, in f64.
fn dot32(a: &[f32], b: &[f32]) -> f64 {
    let parts: Vec<f64> = a
        .par_chunks(SUM_CHUNK)
        .zip(b.par_chunks(SUM_CHUNK))
        .map(|(a, b)| lanes(a.len(), |i| a[i] as f64 * b[i] as f64, &|p, q| p + q))
        .collect();
    parts.into_iter().sum()
}

/// `a += w·b`.
fn axpy32(a: &mut [f64], w: f64, b: &[f32]) {
    a.par_chunks_mut(SUM_CHUNK)
        .zip(b.par_chunks(SUM_CHUNK))
        .for_each(|(a, b)| {
            for (a, b) in a.iter_mut().zip(b) {
                *a += w * *b as f64;
            }
        });
}

/// kneed's `KneeLocator(x, y, S=1, curve="convex", direction="decreasing",
/// interp_method="interp1d", online=False)`: the index of the `x` closest to the knee, or
/// `None` when kneed finds no knee (no local maximum of the difference curve, or no drop
/// below a threshold), or when the input is unusable (lengths differ, fewer than 2
/// points, non-finite values, `x` or `y` constant).
pub fn knee_index(x: &[f64], y: &[f64]) -> Option<usize> {
    kneedle_convex_decreasing(x, y, 1.0)
}

/// [`knee_index`] with sensitivity `s`.
fn kneedle_convex_decreasing(x: &[f64], y: &[f64], s: f64) -> Option<usize> {
    let n = x.len();
    if n != y.len() || n < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let normalize = |a: &[f64]| -> Option<Vec<f64>> {
        let lo = a.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (hi > lo).then(|| a.iter().map(|v| (v - lo) / (hi - lo)).collect())
    };
    let xn = normalize(x)?;
    let yn = normalize(y)?;
    // Convex, decreasing: y ← max(y) − y, then the difference curve y − x.
    let ymax = yn.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let diff: Vec<f64> = yn.iter().zip(&xn).map(|(y, x)| (ymax - y) - x).collect();
    // scipy's argrelextrema(·, np.greater_equal / np.less_equal), order 1, mode 'clip'.
    let extrema = |cmp: fn(f64, f64) -> bool| -> Vec<usize> {
        (0..n)
            .filter(|&i| {
                cmp(diff[i], diff[(i + 1).min(n - 1)]) && cmp(diff[i], diff[i.saturating_sub(1)])
            })
            .collect()
    };
    let maxima = extrema(|a, b| a >= b);
    let minima = extrema(|a, b| a <= b);
    let first = *maxima.first()?;
    let mean_step = xn.windows(2).map(|w| w[1] - w[0]).sum::<f64>() / (n - 1) as f64;
    let thresholds: Vec<f64> = maxima
        .iter()
        .map(|&i| diff[i] - s * mean_step.abs())
        .collect();
    let mut max_count = 0usize;
    let mut threshold = 0.0;
    let mut threshold_index = first;
    for i in first..n - 1 {
        if maxima.contains(&i) {
            threshold = thresholds[max_count];
            threshold_index = i;
            max_count += 1;
        }
        if minima.contains(&i) {
            threshold = 0.0;
        }
        if diff[i + 1] < threshold {
            // The knee is x[threshold_index]; the closest x (the first, if repeated).
            let knee = x[threshold_index];
            return (0..n).min_by(|&a, &b| (x[a] - knee).abs().total_cmp(&(x[b] - knee).abs()));
        }
    }
    None
}

/// The interior point of largest positive Menger curvature of `(x, y)` with both axes
/// scaled to [0, 1] (the fallback when [`knee_index`] finds no knee), or `None`.
fn max_curvature_index(x: &[f64], y: &[f64]) -> Option<usize> {
    let n = x.len();
    if n != y.len() || n < 3 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let scale = |a: &[f64]| {
        let lo = a.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w = if hi > lo { hi - lo } else { 1.0 };
        a.iter().map(|v| (v - lo) / w).collect::<Vec<f64>>()
    };
    let (xs, ys) = (scale(x), scale(y));
    let mut best: Option<(usize, f64)> = None;
    for i in 1..n - 1 {
        let (ax, ay) = (xs[i] - xs[i - 1], ys[i] - ys[i - 1]);
        let (bx, by) = (xs[i + 1] - xs[i], ys[i + 1] - ys[i]);
        let (cx, cy) = (xs[i + 1] - xs[i - 1], ys[i + 1] - ys[i - 1]);
        // Signed: positive where the curve turns left (convex for increasing x).
        let cross = ax * by - ay * bx;
        let lens = (ax.hypot(ay)) * (bx.hypot(by)) * (cx.hypot(cy));
        if lens > 0.0 {
            let k = 2.0 * cross / lens;
            if k > 1e-9 && best.is_none_or(|(_, b)| k > b) {
                best = Some((i, k));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Writes the outputs of [`estimate_density`] into `dir` (created if needed):
/// `all_densities/deconv_density_{i}.pkl` (one per weight, in order),
/// `deconv_density_knee.pkl`, `all_densities.png` (the raw density, then one panel per
/// weight with the knee framed, as RECOVAR's figure has a row for the raw density) and
/// `Lcurve.png` (with the knee marked). Each pickle is a dict
/// `{"density": float32 array of shape (M,)*d, "latent_space_bounds": float64 array (d, 2),
/// "alpha": float}`, as RECOVAR writes it. Every file is written atomically.
///
/// Errors: a malformed result (no density, the knee out of range, inconsistent grids) or a
/// file that cannot be written.
pub fn write_density_outputs(dir: &Path, d: &DeconvolvedDensity) -> Result<()> {
    let k = d.densities.len();
    if k == 0 || d.alphas.len() != k || d.costs.len() != k || d.knee >= k {
        return Err(Error::invalid(format!(
            "density outputs: {k} densities, {} weights, {} costs and knee {}",
            d.alphas.len(),
            d.costs.len(),
            d.knee
        )));
    }
    for g in d.densities.iter().chain([&d.raw]) {
        check_grid(g).map_err(|msg| Error::invalid(format!("density outputs: {msg}")))?;
        if g.dim != d.raw.dim || g.n_grid != d.raw.n_grid {
            return Err(Error::invalid(
                "density outputs: the densities are not all on the same grid",
            ));
        }
    }
    let all = dir.join("all_densities");
    std::fs::create_dir_all(&all).map_err(|e| Error::io(&all, e))?;
    for (i, (g, &alpha)) in d.densities.iter().zip(&d.alphas).enumerate() {
        pickle::dump(
            all.join(format!("deconv_density_{i}.pkl")),
            &density_pickle(g, alpha)?,
        )?;
    }
    pickle::dump(
        dir.join("deconv_density_knee.pkl"),
        &density_pickle(&d.densities[d.knee], d.alphas[d.knee])?,
    )?;
    plot_all_densities(&dir.join("all_densities.png"), d)?;
    plot_lcurve(&dir.join("Lcurve.png"), d)
}

/// Shape and value checks shared by the writer and the reader; the message lacks a prefix.
fn check_grid(g: &DensityGrid) -> std::result::Result<(), String> {
    if g.dim == 0 || g.n_grid < 2 {
        return Err(format!(
            "a {}-D grid of {} points per axis",
            g.dim, g.n_grid
        ));
    }
    if g.bounds.len() != g.dim {
        return Err(format!("{} bounds for a {}-D grid", g.bounds.len(), g.dim));
    }
    if g.n_grid.checked_pow(g.dim as u32) != Some(g.values.len()) {
        return Err(format!(
            "{} values for a {}-D grid of {} points per axis",
            g.values.len(),
            g.dim,
            g.n_grid
        ));
    }
    Ok(())
}

fn density_pickle(g: &DensityGrid, alpha: f64) -> Result<PyValue> {
    let bounds: Vec<f64> = g
        .bounds
        .iter()
        .flat_map(|b| [b[0] as f64, b[1] as f64])
        .collect();
    Ok(PyValue::Dict(vec![
        (
            PyValue::Str("density".into()),
            PyValue::Array(NdArray::from_f32(vec![g.n_grid; g.dim], g.values.clone())?),
        ),
        (
            PyValue::Str("latent_space_bounds".into()),
            PyValue::Array(NdArray::from_f64(vec![g.dim, 2], bounds)?),
        ),
        (PyValue::Str("alpha".into()), PyValue::Float(alpha)),
    ]))
}

/// Reads a density pickle written by [`write_density_outputs`] or by RECOVAR: a dict with
/// `"density"` (a float32 or float64 array of shape `(M,)*d`, `M ≥ 2`) and
/// `"latent_space_bounds"` (`d × 2` numbers: an array, or a list of pairs), finite, each
/// lower bound below its upper bound.
///
/// Errors name the file: not a pickle, not a dict, a missing key, a wrong type or shape, a
/// grid that is not cubic, fewer than 2 points per axis, or non-finite values.
pub fn read_density(path: &Path) -> Result<DensityGrid> {
    let value = pickle::load(path)?;
    let bad = |msg: String| Error::format(path, format!("density pickle: {msg}"));
    if !matches!(value, PyValue::Dict(_)) {
        return Err(bad(format!(
            "expected a dict with \"density\" and \"latent_space_bounds\", found a {}",
            value.type_name()
        )));
    }
    let density = value
        .get("density")
        .ok_or_else(|| bad("no \"density\" key".into()))?;
    let array = density.as_array().ok_or_else(|| {
        bad(format!(
            "\"density\" is a {}, not a numpy array",
            density.type_name()
        ))
    })?;
    if !matches!(array.dtype(), pickle::Dtype::F32 | pickle::Dtype::F64) {
        return Err(bad(format!(
            "\"density\" is a {} array; float32 or float64 expected",
            array.dtype().name()
        )));
    }
    let shape = array.shape();
    let shape_text = pickle::fmt_shape(shape);
    let Some(&m) = shape.first() else {
        return Err(bad("\"density\" is a 0-d array".into()));
    };
    if shape.iter().any(|&s| s != m) {
        return Err(bad(format!(
            "\"density\" has shape {shape_text}; the grid must have the same number of points on every axis"
        )));
    }
    if m < 2 {
        return Err(bad(format!(
            "\"density\" has shape {shape_text}; at least 2 points per axis are needed"
        )));
    }
    let d = shape.len();
    let values = array.to_f32_vec();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "\"density\" value {i} is {} (the density must be finite)",
            values[i]
        )));
    }
    let b = value
        .get("latent_space_bounds")
        .ok_or_else(|| bad("no \"latent_space_bounds\" key".into()))?;
    let flat: Vec<f64> = match b {
        PyValue::Array(a) => {
            if a.shape() != [d, 2] {
                return Err(bad(format!(
                    "\"latent_space_bounds\" has shape {}; ({d}, 2) expected for a {d}-D density",
                    pickle::fmt_shape(a.shape())
                )));
            }
            if !a.dtype().is_float() && a.to_i64_vec().is_err() {
                return Err(bad("\"latent_space_bounds\" is not numeric".into()));
            }
            a.to_f64_vec()
        }
        other => {
            let rows = other.as_seq().ok_or_else(|| {
                bad(format!(
                    "\"latent_space_bounds\" is a {}; a ({d}, 2) array expected",
                    other.type_name()
                ))
            })?;
            let mut flat = Vec::with_capacity(2 * d);
            for r in rows {
                let pair = r.as_seq().filter(|p| p.len() == 2).ok_or_else(|| {
                    bad("\"latent_space_bounds\" must hold one [low, high] pair per axis".into())
                })?;
                for v in pair {
                    flat.push(v.as_f64().ok_or_else(|| {
                        bad(format!(
                            "\"latent_space_bounds\" holds a {}, not a number",
                            v.type_name()
                        ))
                    })?);
                }
            }
            if flat.len() != 2 * d {
                return Err(bad(format!(
                    "\"latent_space_bounds\" has {} pairs for a {d}-D density",
                    flat.len() / 2
                )));
            }
            flat
        }
    };
    let mut bounds = Vec::with_capacity(d);
    for (k, p) in flat.chunks_exact(2).enumerate() {
        let (lo, hi) = (p[0] as f32, p[1] as f32);
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(bad(format!(
                "\"latent_space_bounds\" of axis {k} ({}, {}) must be finite and increasing",
                p[0], p[1]
            )));
        }
        bounds.push([lo, hi]);
    }
    Ok(DensityGrid {
        dim: d,
        n_grid: m,
        bounds,
        values,
    })
}

/// `α` as the figures write it.
fn fmt_alpha(a: f64) -> String {
    format!("{a:.0e}")
}

/// The raw density, then one panel per weight (the knee framed in red): each density summed
/// over all axes but the first two (first axis across, second up), each panel on its own
/// colour scale; for a 1-D density, all curves in one line plot.
fn plot_all_densities(path: &Path, d: &DeconvolvedDensity) -> Result<()> {
    let first = &d.densities[0];
    let m = first.n_grid;
    let label = |i: usize, a: f64| {
        if i == d.knee {
            format!("α = {}  (knee)", fmt_alpha(a))
        } else {
            format!("α = {}", fmt_alpha(a))
        }
    };
    if first.dim == 1 {
        let x: Vec<f64> = (0..m).map(|i| first.node(0, i) as f64).collect();
        // The raw density in the deconvolution's units (mean 1).
        let raw: Vec<f64> = d.raw.values.iter().map(|&v| v as f64).collect();
        let mean = raw.iter().sum::<f64>() / raw.len() as f64;
        let mut series = vec![Series::new(
            "raw KDE",
            x.clone(),
            raw.iter().map(|v| v / mean).collect(),
        )];
        series.extend(
            d.densities
                .iter()
                .zip(&d.alphas)
                .enumerate()
                .map(|(i, (g, &a))| {
                    Series::new(
                        label(i, a),
                        x.clone(),
                        g.values.iter().map(|&v| v as f64).collect(),
                    )
                }),
        );
        return line_plot(
            path,
            &LinePlot {
                title: "Raw and deconvolved densities".into(),
                x_label: "PC 1".into(),
                y_label: "density (the raw density has mean 1)".into(),
                series,
                ..Default::default()
            },
        );
    }
    // marginal_2d puts axis 1 upwards from row 0; image rows go downwards.
    let tile = |g: &DensityGrid| -> Vec<f32> {
        let map = g.marginal_2d(0, 1);
        map.chunks_exact(m).rev().flatten().copied().collect()
    };
    let mut tiles: Vec<(String, Vec<f32>, usize, usize)> =
        vec![("raw KDE".into(), tile(&d.raw), m, m)];
    tiles.extend(
        d.densities
            .iter()
            .zip(&d.alphas)
            .enumerate()
            .map(|(i, (g, &a))| (label(i, a), tile(g), m, m)),
    );
    let title = match first.dim {
        2 => "Raw and deconvolved densities (PC 1 across, PC 2 up)".to_string(),
        3 => "Raw and deconvolved densities summed over PC 3 (PC 1 across, PC 2 up)".to_string(),
        k => format!("Raw and deconvolved densities summed over PC 3–{k} (PC 1 across, PC 2 up)"),
    };
    let columns = (tiles.len() as f64).sqrt().ceil() as usize;
    heatmap_grid(path, &title, &tiles, columns.max(1), Some(d.knee + 1))
}

/// The L-curve: `log(cost)` against `log10(1/α)`, with the knee marked.
fn plot_lcurve(path: &Path, d: &DeconvolvedDensity) -> Result<()> {
    let x: Vec<f64> = d.alphas.iter().map(|a| (1.0 / a).log10()).collect();
    let y: Vec<f64> = d.costs.iter().map(|c| c.ln()).collect();
    let k = d.knee;
    line_plot(
        path,
        &LinePlot {
            title: "L-curve of the density deconvolution".into(),
            x_label: "log10(1/α)".into(),
            y_label: "log(data cost / data cost of 0)".into(),
            series: vec![
                Series::new("", x.clone(), y.clone()),
                Series::new(
                    format!("knee: α = {}", fmt_alpha(d.alphas[k])),
                    vec![x[k]],
                    vec![y[k]],
                ),
            ],
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    /// scipy's `fftconvolve(f, k, mode='same')` by its definition: the full linear
    /// convolution cropped around its centre.
    fn direct_same(f: &[f64], k: &[f64], m: usize, d: usize) -> Vec<f64> {
        let full = 2 * m - 1;
        let s = (full - m) / 2;
        let total = m.pow(d as u32);
        let unravel = |mut i: usize, base: usize| {
            let mut v = vec![0usize; d];
            for a in (0..d).rev() {
                v[a] = i % base;
                i /= base;
            }
            v
        };
        (0..total)
            .map(|o| {
                let oi = unravel(o, m);
                let mut acc = 0.0;
                for (j, fj) in f.iter().enumerate() {
                    let ji = unravel(j, m);
                    // full[oi + s] += f[j] · k[oi + s − j]
                    let mut ki = 0usize;
                    let mut ok = true;
                    for a in 0..d {
                        let t = oi[a] as isize + s as isize - ji[a] as isize;
                        if t < 0 || t >= m as isize {
                            ok = false;
                            break;
                        }
                        ki = ki * m + t as usize;
                    }
                    if ok {
                        acc += fj * k[ki];
                    }
                }
                acc
            })
            .collect()
    }

    fn random(n: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.uniform()).collect()
    }

    #[test]
    fn convolution_matches_direct_same_convolution() {
        for (m, d) in [(7usize, 1usize), (8, 1), (6, 2), (7, 2), (4, 3), (5, 3)] {
            let total = m.pow(d as u32);
            let k = random(total, 1 + m as u64);
            let f = random(total, 2 + d as u64);
            let mut conv = Convolver::new(&k, m, d).unwrap();
            let mut out = vec![0.0; total];
            conv.apply(&f, &mut out, false);
            let want = direct_same(&f, &k, m, d);
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "m {m} d {d}: {a} vs {b}");
            }
            // The adjoint: <K f, g> = <f, Kᵀ g>.
            let g = random(total, 3);
            let mut back = vec![0.0; total];
            conv.apply(&g, &mut back, true);
            let lhs: f64 = out.iter().zip(&g).map(|(a, b)| a * b).sum();
            let rhs: f64 = f.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-10 * lhs.abs(), "{lhs} {rhs}");
        }
    }

    #[test]
    fn cropped_kernel_padding_is_exact() {
        // A narrow kernel: most layers are dropped and the padding is short.
        let (m, d) = (40, 2);
        let mut k = vec![0.0; m * m];
        let s = (m - 1) / 2;
        for i in 0..m {
            for j in 0..m {
                let (a, b) = (i as f64 - s as f64, j as f64 - s as f64 - 0.5);
                k[i * m + j] = (-0.5 * (a * a / 2.0 + b * b / 5.0 + 0.3 * a * b)).exp();
            }
        }
        let f = random(m * m, 9);
        let mut conv = Convolver::new(&k, m, d).unwrap();
        assert!(conv.n.iter().all(|&n| n < 2 * m - 1), "{:?}", conv.n);
        let mut out = vec![0.0; m * m];
        conv.apply(&f, &mut out, false);
        let want = direct_same(&f, &k, m, d);
        let err = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-10, "{err}");
    }

    #[test]
    fn objective_gradient_matches_finite_differences() {
        for (m, d, dx) in [
            (9usize, 2usize, vec![0.8, 1.2]),
            (11, 1, vec![1.0]),
            (5, 3, vec![0.9, 1.0, 1.1]),
        ] {
            let total = m.pow(d as u32);
            let kernel = random(total, 5);
            let target = random(total, 6);
            let mut p = Problem::new(&kernel, target, dx, m, d).unwrap();
            p.alpha = 0.37;
            let f = random(total, 7);
            let mut grad = vec![0.0; total];
            let v0 = p.value_and_gradient(&f, &mut grad);
            let mut scratch = vec![0.0; total];
            let h = 1e-5;
            for i in 0..total {
                let mut fp = f.clone();
                fp[i] += h;
                let vp = p.value_and_gradient(&fp, &mut scratch);
                fp[i] -= 2.0 * h;
                let vm = p.value_and_gradient(&fp, &mut scratch);
                let fd = (vp - vm) / (2.0 * h);
                assert!(
                    (fd - grad[i]).abs() <= 1e-5 * grad[i].abs().max(v0 * 1e-3),
                    "m {m} d {d} node {i}: analytic {} vs finite difference {fd}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn solver_meets_the_kkt_conditions_of_a_nonnegative_least_squares() {
        // min ‖Ax − b‖² over x ≥ 0, with b such that several constraints are active.
        let (rows, cols) = (40, 25);
        let mut rng = Rng::new(12);
        let a: Vec<f64> = (0..rows * cols).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..rows).map(|_| rng.normal()).collect();
        let mut eval = |x: &[f64], g: &mut [f64]| -> Result<f64> {
            let r: Vec<f64> = (0..rows)
                .map(|i| (0..cols).map(|j| a[i * cols + j] * x[j]).sum::<f64>() - b[i])
                .collect();
            for (j, g) in g.iter_mut().enumerate() {
                *g = 2.0 * (0..rows).map(|i| a[i * cols + j] * r[i]).sum::<f64>();
            }
            Ok(r.iter().map(|v| v * v).sum())
        };
        let mut g = vec![0.0; cols];
        eval(&vec![1.0; cols], &mut g).unwrap();
        let g0 = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let (x, stats) = minimize_nonneg(&mut eval, vec![1.0; cols], 500).unwrap();
        eval(&x, &mut g).unwrap();
        // The relative-reduction test stops it once f is within ~10⁻⁹·f of the optimum.
        let tol = 1e-5 * g0;
        let zeros = x.iter().filter(|&&v| v == 0.0).count();
        assert!((3..cols).contains(&zeros), "{zeros} active constraints");
        for (xi, gi) in x.iter().zip(&g) {
            assert!(*xi >= 0.0);
            if *xi > 0.0 {
                assert!(
                    gi.abs() < tol,
                    "free x {xi}, gradient {gi} ({stats:?}, {g0})"
                );
            } else {
                assert!(*gi > -tol, "x at 0 with gradient {gi}");
            }
        }
        // Cancellation from the objective ends the minimisation.
        let mut calls = 0;
        let mut stop = |x: &[f64], g: &mut [f64]| -> Result<f64> {
            calls += 1;
            if calls > 1 {
                return Err(Error::Cancelled);
            }
            for (g, x) in g.iter_mut().zip(x) {
                *g = 2.0 * (x - 0.5);
            }
            Ok(x.iter().map(|v| (v - 0.5) * (v - 0.5)).sum())
        };
        assert!(matches!(
            minimize_nonneg(&mut stop, vec![1.0; 4], 10),
            Err(Error::Cancelled)
        ));
    }

    #[test]
    fn gradient_stencil_is_numpy_gradient() {
        // np.gradient([1, 2, 4, 7, 11], 0.5) = [2, 3, 5, 7, 8]
        let f = [1.0, 2.0, 4.0, 7.0, 11.0];
        let mut g = [0.0; 5];
        gradient_axis(&f, 5, 1, 0, 0.5, &mut g);
        assert_eq!(g, [2.0, 3.0, 5.0, 7.0, 8.0]);
        // Along axis 0 of a 3×3 array.
        let f: Vec<f64> = (0..9).map(|i| ((i / 3) * (i / 3) + i % 3) as f64).collect();
        let mut g = vec![0.0; 9];
        gradient_axis(&f, 3, 2, 0, 1.0, &mut g);
        assert_eq!(g, vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0]);
    }

    #[test]
    fn knee_matches_kneed_examples() {
        // kneed's DataGenerator.convex_decreasing(): knee at x = 2.
        let x: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let y = [100.0, 40.0, 20.0, 15.0, 10.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(knee_index(&x, &y), Some(2));
        // test_convex_decreasing_truncated: x[:-3]/10, y[:-3]/10 → 0.2.
        let xt: Vec<f64> = x[..7].iter().map(|v| v / 10.0).collect();
        let yt: Vec<f64> = y[..7].iter().map(|v| v / 10.0).collect();
        assert_eq!(knee_index(&xt, &yt), Some(2));
        // test_flat_maxima: S = 1 → x = 8, S = 0 → x = 1.
        let y = [
            1.0,
            0.787701317715959,
            0.7437774524158126,
            0.6559297218155198,
            0.5065885797950219,
            0.36749633967789164,
            0.2547584187408492,
            0.16251830161054173,
            0.10395314787701318,
            0.06734992679355783,
            0.043923865300146414,
            0.027818448023426062,
            0.01903367496339678,
            0.013177159590043924,
            0.010248901903367497,
            0.007320644216691069,
            0.005856515373352855,
            0.004392386530014641,
        ];
        let x: Vec<f64> = (0..18).map(|i| i as f64).collect();
        assert_eq!(knee_index(&x, &y), Some(8));
        assert_eq!(kneedle_convex_decreasing(&x, &y, 0.0), Some(1));
        // test_y_no_knee: no knee.
        let y = [0.90483742, 0.81873075, 0.74081822];
        assert_eq!(knee_index(&[1.0, 2.0, 3.0], &y), None);
        // test_convex_decreasing_bumpy (interp1d): knee at x = 26.
        let y = BUMPY;
        let x: Vec<f64> = (0..y.len()).map(|i| i as f64).collect();
        assert_eq!(knee_index(&x, &y), Some(26));
        // Degenerate input.
        assert_eq!(knee_index(&[1.0, 2.0], &[1.0, f64::NAN]), None);
        assert_eq!(knee_index(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0]), None);
        assert_eq!(knee_index(&[1.0], &[1.0]), None);
    }

    #[test]
    fn knee_of_an_l_curve() {
        // An L-curve as the deconvolution gives: log(cost) falls steeply while α is large,
        // then flattens; the knee is at the bend.
        let alphas: Vec<f64> = (-9..=1).rev().map(|k| 10f64.powi(k)).collect();
        let x: Vec<f64> = alphas.iter().map(|a| (1.0 / a).log10()).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|&t| (0.002 + 0.5 * (-(t + 1.0) * 1.2).exp()).ln())
            .collect();
        let k = knee_index(&x, &y).unwrap();
        eprintln!("knee {k}, curvature {:?}", max_curvature_index(&x, &y));
        assert!((3..=5).contains(&k), "knee {k} at α = {}", alphas[k]);
        // The fallback finds the same bend.
        let c = max_curvature_index(&x, &y).unwrap();
        assert!((3..=6).contains(&c), "curvature {c}");
        // A straight line has no knee and no convex bend.
        let line: Vec<f64> = x.iter().map(|t| -t).collect();
        assert_eq!(max_curvature_index(&x, &line), None);
    }

    /// kneed's DataGenerator.bumpy() y values.
    const BUMPY: [f64; 90] = [
        7305.0, 6979.0, 6666.6, 6463.2, 6326.5, 6048.8, 6032.8, 5762.0, 5742.8, 5398.2, 5256.8,
        5227.0, 5001.7, 4942.0, 4854.2, 4734.6, 4558.7, 4491.1, 4411.6, 4333.0, 4234.6, 4139.1,
        4056.8, 4022.5, 3868.0, 3808.3, 3745.3, 3692.3, 3645.6, 3618.3, 3574.3, 3504.3, 3452.4,
        3401.2, 3382.4, 3340.7, 3301.1, 3247.6, 3190.3, 3180.0, 3154.2, 3089.5, 3045.6, 2989.0,
        2993.6, 2941.3, 2875.6, 2866.3, 2834.1, 2785.1, 2759.7, 2763.2, 2720.1, 2660.1, 2690.2,
        2635.7, 2632.9, 2574.6, 2556.0, 2545.7, 2513.4, 2491.6, 2496.0, 2466.5, 2442.7, 2420.5,
        2381.5, 2388.1, 2340.6, 2335.0, 2318.9, 2319.0, 2308.2, 2262.2, 2235.8, 2259.3, 2221.0,
        2202.7, 2184.3, 2170.1, 2160.0, 2127.7, 2134.7, 2102.0, 2101.4, 2066.4, 2074.3, 2063.7,
        2048.1, 2031.9,
    ];

    #[test]
    fn kernel_is_a_normalised_gaussian_mixture() {
        // One covariance: the kernel is the sampled Gaussian, centred at node M/2 − 1.
        let m = 20;
        let c = vec![0.3, 0.1, 0.1, 0.2];
        let k = blur_kernel(std::slice::from_ref(&c), &[4.0, 5.0], m).unwrap();
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let inv = {
            let l = cholesky(&c, 2).unwrap();
            inverse_from_cholesky(&l, 2)
        };
        let mut want = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                let y0 = (i as f64 - 9.0) * 4.0 / 20.0;
                let y1 = (j as f64 - 9.0) * 5.0 / 20.0;
                let e = y0 * y0 * inv[0] + 2.0 * y0 * y1 * inv[1] + y1 * y1 * inv[3];
                want[i * m + j] = (-0.5 * e).exp();
            }
        }
        let s: f64 = want.iter().sum();
        for (a, b) in k.iter().zip(&want) {
            assert!((a - b / s).abs() < 1e-12, "{a} {}", b / s);
        }
        assert_eq!(k.iter().cloned().fold(0.0, f64::max), k[9 * m + 9]);
    }

    #[test]
    fn pinv_of_precision_blocks() {
        let p = [4.0, 1.0, 1.0, 3.0];
        let q = pinv_psd(&p, 2);
        // p · q = I
        let prod = [
            p[0] * q[0] + p[1] * q[2],
            p[0] * q[1] + p[1] * q[3],
            p[2] * q[0] + p[3] * q[2],
            p[2] * q[1] + p[3] * q[3],
        ];
        for (a, b) in prod.iter().zip([1.0, 0.0, 0.0, 1.0]) {
            assert!((a - b).abs() < 1e-12, "{prod:?}");
        }
        // Rank one: the pseudo-inverse.
        let q = pinv_psd(&[1.0, 1.0, 1.0, 1.0], 2);
        for v in q {
            assert!((v - 0.25).abs() < 1e-12);
        }
    }

    /// The test mixture on the plane: two Gaussians and a thin arc. Returns `n` clean points.
    fn mixture_points(n: usize, rng: &mut Rng) -> Vec<[f64; 2]> {
        (0..n)
            .map(|i| match i % 10 {
                0..=3 => [-2.0 + 0.35 * rng.normal(), 1.2 + 0.35 * rng.normal()],
                4..=6 => [2.0 + 0.3 * rng.normal(), 1.5 + 0.3 * rng.normal()],
                _ => {
                    let t = rng.uniform_in(0.15, 0.85) * std::f64::consts::PI;
                    let r = 3.0 + 0.12 * rng.normal();
                    [r * t.cos(), -1.5 - r * t.sin() + 3.0]
                }
            })
            .collect()
    }

    /// The mixture's density at `p`.
    fn mixture_pdf(p: [f64; 2]) -> f64 {
        let g = |c: [f64; 2], s: f64| {
            let e = ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)) / (2.0 * s * s);
            (-e).exp() / (2.0 * std::f64::consts::PI * s * s)
        };
        // Arc: angle uniform on [0.15π, 0.85π] about (0, 1.5) below... the centre is
        // (0, 1.5) and points go downwards: y = 1.5 − r sin t.
        let (dx, dy) = (p[0], 1.5 - p[1]);
        let r = dx.hypot(dy);
        let t = dy.atan2(dx);
        let arc = if r > 0.0
            && (0.15 * std::f64::consts::PI..=0.85 * std::f64::consts::PI).contains(&t)
        {
            let w = 0.12;
            let radial = (-(r - 3.0).powi(2) / (2.0 * w * w)).exp()
                / (w * (2.0 * std::f64::consts::PI).sqrt());
            radial / (0.7 * std::f64::consts::PI) / r
        } else {
            0.0
        };
        0.4 * g([-2.0, 1.2], 0.35) + 0.3 * g([2.0, 1.5], 0.3) + 0.3 * arc
    }

    /// Noisy observations of the mixture with known per-point covariances; returns
    /// (zs, precisions) with zdim 3 (the third coordinate is noise).
    fn noisy_sample(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let clean = mixture_points(n, &mut rng);
        let mut zs = Vec::with_capacity(3 * n);
        let mut prec = Vec::with_capacity(9 * n);
        for p in clean {
            // Covariance: rotated ellipse with standard deviations 0.25–0.45 and 0.15–0.3.
            let (s1, s2) = (rng.uniform_in(0.25, 0.45), rng.uniform_in(0.15, 0.3));
            let th = rng.uniform_in(0.0, std::f64::consts::PI);
            let (c, s) = (th.cos(), th.sin());
            let (e1, e2) = (rng.normal() * s1, rng.normal() * s2);
            zs.push((p[0] + c * e1 - s * e2) as f32);
            zs.push((p[1] + s * e1 + c * e2) as f32);
            zs.push(rng.normal() as f32);
            // Precision = R diag(1/s1², 1/s2²) Rᵀ, and 1 for the third coordinate.
            let (a, b) = (1.0 / (s1 * s1), 1.0 / (s2 * s2));
            let p00 = c * c * a + s * s * b;
            let p01 = c * s * (a - b);
            let p11 = s * s * a + c * c * b;
            prec.extend([p00, p01, 0.0, p01, p11, 0.0, 0.0, 0.0, 1.0].map(|v| v as f32));
        }
        (zs, prec)
    }

    fn tv_to_truth(g: &DensityGrid) -> f64 {
        let m = g.n_grid;
        let truth: Vec<f64> = (0..m * m)
            .map(|i| mixture_pdf([g.node(0, i / m) as f64, g.node(1, i % m) as f64]))
            .collect();
        let ts: f64 = truth.iter().sum();
        let gs: f64 = g.values.iter().map(|&v| v as f64).sum();
        0.5 * truth
            .iter()
            .zip(&g.values)
            .map(|(t, &v)| (t / ts - v as f64 / gs).abs())
            .sum::<f64>()
    }

    #[test]
    fn deconvolution_recovers_a_known_density() {
        let (zs, prec) = noisy_sample(6000, 21);
        let opts = DensityOptions {
            pca_dim: 2,
            num_disc_points: Some(60),
            alphas: Some(vec![1e-1, 1e-2, 1e-3, 1e-4]),
            kernel_samples: 2000,
            max_iter: 150,
            ..Default::default()
        };
        let r = estimate_density(&zs, 3, &prec, &opts, &NoProgress).unwrap();
        assert_eq!(r.n_used, 5400);
        let raw = tv_to_truth(&r.raw);
        let all: Vec<f64> = r.densities.iter().map(tv_to_truth).collect();
        let knee = all[r.knee];
        eprintln!(
            "TV raw {raw:.3}, per α {all:?}, knee {} (costs {:?})",
            r.knee, r.costs
        );
        assert!(knee < 0.75 * raw, "TV knee {knee} vs raw {raw}");
        // Costs fall as the regularization weakens.
        assert!(
            r.costs.windows(2).all(|w| w[1] <= w[0] * 1.0001),
            "{:?}",
            r.costs
        );
    }

    #[test]
    fn outputs_round_trip_and_bad_pickles_are_refused() {
        let (zs, prec) = noisy_sample(800, 3);
        let opts = DensityOptions {
            pca_dim: 2,
            num_disc_points: Some(16),
            alphas: Some(vec![1e-1, 1e-3, 1e-5]),
            kernel_samples: 200,
            max_iter: 20,
            ..Default::default()
        };
        let r = estimate_density(&zs, 3, &prec, &opts, &NoProgress).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_density_outputs(dir.path(), &r).unwrap();
        for i in 0..3 {
            let g = read_density(
                &dir.path()
                    .join(format!("all_densities/deconv_density_{i}.pkl")),
            )
            .unwrap();
            assert_eq!(g, r.densities[i]);
        }
        let knee = read_density(&dir.path().join("deconv_density_knee.pkl")).unwrap();
        assert_eq!(knee, r.densities[r.knee]);
        let v = pickle::load(dir.path().join("deconv_density_knee.pkl")).unwrap();
        assert_eq!(
            v.get("alpha").and_then(|a| a.as_f64()),
            Some(r.alphas[r.knee])
        );
        for f in ["all_densities.png", "Lcurve.png"] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }

        // A float64 density with list bounds, as Python might write it, is read too.
        let p = dir.path().join("py.pkl");
        let vals: Vec<f64> = (0..27).map(|i| i as f64).collect();
        let dict = PyValue::Dict(vec![
            (
                PyValue::Str("density".into()),
                PyValue::Array(NdArray::from_f64(vec![3, 3, 3], vals).unwrap()),
            ),
            (
                PyValue::Str("latent_space_bounds".into()),
                PyValue::List(
                    (0..3)
                        .map(|_| PyValue::List(vec![PyValue::Float(-1.0), PyValue::Int(2)]))
                        .collect(),
                ),
            ),
        ]);
        pickle::dump(&p, &dict).unwrap();
        let g = read_density(&p).unwrap();
        assert_eq!((g.dim, g.n_grid, g.bounds[2]), (3, 3, [-1.0, 2.0]));

        let bad = |value: PyValue, want: &str| {
            let p = dir.path().join("bad.pkl");
            pickle::dump(&p, &value).unwrap();
            let e = read_density(&p).unwrap_err().to_string();
            assert!(e.contains("bad.pkl") && e.contains(want), "{e}");
        };
        let arr =
            |shape: Vec<usize>, v: Vec<f32>| PyValue::Array(NdArray::from_f32(shape, v).unwrap());
        let bounds2 =
            PyValue::Array(NdArray::from_f64(vec![2, 2], vec![0.0, 1.0, 0.0, 1.0]).unwrap());
        let key = |k: &str| PyValue::Str(k.into());
        bad(PyValue::List(vec![]), "expected a dict");
        bad(
            PyValue::Dict(vec![(key("latent_space_bounds"), bounds2.clone())]),
            "no \"density\"",
        );
        bad(
            PyValue::Dict(vec![(key("density"), arr(vec![2, 2], vec![0.0; 4]))]),
            "no \"latent_space_bounds\"",
        );
        bad(
            PyValue::Dict(vec![
                (key("density"), arr(vec![2, 3], vec![0.0; 6])),
                (key("latent_space_bounds"), bounds2.clone()),
            ]),
            "same number of points",
        );
        bad(
            PyValue::Dict(vec![
                (key("density"), arr(vec![1, 1], vec![0.0])),
                (key("latent_space_bounds"), bounds2.clone()),
            ]),
            "at least 2 points",
        );
        bad(
            PyValue::Dict(vec![
                (
                    key("density"),
                    arr(vec![2, 2], vec![0.0, f32::NAN, 0.0, 0.0]),
                ),
                (key("latent_space_bounds"), bounds2.clone()),
            ]),
            "NaN",
        );
        bad(
            PyValue::Dict(vec![
                (key("density"), arr(vec![2, 2, 2], vec![0.0; 8])),
                (key("latent_space_bounds"), bounds2),
            ]),
            "(3, 2) expected",
        );
        std::fs::write(dir.path().join("bad.pkl"), b"not a pickle").unwrap();
        let e = read_density(&dir.path().join("bad.pkl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.pkl"), "{e}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (zs, prec) = noisy_sample(200, 4);
        let small = DensityOptions {
            pca_dim: 2,
            num_disc_points: Some(8),
            alphas: Some(vec![1e-2]),
            kernel_samples: 10,
            max_iter: 2,
            ..Default::default()
        };
        let run = |zs: &[f32], zdim: usize, prec: &[f32], o: &DensityOptions| {
            estimate_density(zs, zdim, prec, o, &NoProgress)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let o = DensityOptions {
            pca_dim: 4,
            ..small.clone()
        };
        assert!(run(&zs, 3, &prec, &o).contains("pca_dim 4"));
        let o = DensityOptions {
            pca_dim: 7,
            ..small.clone()
        };
        assert!(run(&zs, 3, &prec, &o).contains("1 to 6"));
        let mut nan = zs.clone();
        nan[7] = f32::NAN;
        assert!(run(&nan, 3, &prec, &small).contains("row 2"));
        assert!(run(&zs, 3, &prec[..prec.len() - 1], &small).contains("precision values"));
        let mut p = prec.clone();
        p[20] = f32::INFINITY;
        assert!(run(&zs, 3, &p, &small).contains("image 2"));
        assert!(run(&zs[..zs.len() - 1], 3, &prec, &small).contains("whole number"));
        let o = DensityOptions {
            alphas: Some(vec![0.0]),
            ..small.clone()
        };
        assert!(run(&zs, 3, &prec, &o).contains("positive"));
        let o = DensityOptions {
            alphas: Some(vec![]),
            ..small.clone()
        };
        assert!(run(&zs, 3, &prec, &o).contains("no regularization"));
        let o = DensityOptions {
            num_disc_points: Some(1),
            ..small.clone()
        };
        assert!(run(&zs, 3, &prec, &o).contains("at least 2"));
        let o = DensityOptions {
            pca_dim: 3,
            num_disc_points: None,
            ..small.clone()
        };
        assert!(estimate_density(
            &zs,
            3,
            &prec,
            &DensityOptions {
                pca_dim: 6,
                ..o.clone()
            },
            &NoProgress
        )
        .is_err());
        let o = DensityOptions {
            percentile_reject: 100.0,
            ..small.clone()
        };
        assert!(run(&zs, 3, &prec, &o).contains("percentile_reject"));
        // All precisions equal: nothing is above the percentile.
        let same: Vec<f32> = (0..200)
            .flat_map(|_| [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
            .collect();
        assert!(run(&zs, 3, &same, &small).contains("at least 3 are needed"));
        // A large default grid in 5-D is refused before any work.
        let o = DensityOptions {
            pca_dim: 5,
            ..Default::default()
        };
        let e = estimate_density(&zs, 3, &prec, &o, &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pca_dim 5") || e.contains("grid nodes"), "{e}");
        // Cancellation.
        let stop = |_: &str, done: u64, _: u64| done < 1;
        let o = DensityOptions {
            alphas: Some(vec![1.0, 0.1]),
            ..small.clone()
        };
        assert!(matches!(
            estimate_density(&zs, 3, &prec, &o, &stop),
            Err(Error::Cancelled)
        ));
    }

    #[test]
    fn same_bytes_for_any_thread_count() {
        let (zs, prec) = noisy_sample(1500, 8);
        let opts = DensityOptions {
            pca_dim: 3,
            num_disc_points: Some(12),
            alphas: Some(vec![1e-1, 1e-3]),
            kernel_samples: 300,
            max_iter: 15,
            ..Default::default()
        };
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| estimate_density(&zs, 3, &prec, &opts, &NoProgress).unwrap())
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    #[ignore = "timing: cargo test --release -p recovar-core --lib density_timing -- --ignored \
                --nocapture (env DENSITY_DIMS=2,3,4 DENSITY_ALPHAS=1e-3 DENSITY_ITERS=500)"]
    fn density_timing() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
        let dims: Vec<usize> = std::env::var("DENSITY_DIMS")
            .map(|v| v.split(',').filter_map(|t| t.parse().ok()).collect())
            .unwrap_or_else(|_| vec![2, 3, 4]);
        for d in dims {
            let n = 5000;
            let mut rng = Rng::new(5);
            let mut zs = Vec::with_capacity(n * d);
            let mut prec = Vec::with_capacity(n * d * d);
            for i in 0..n {
                for k in 0..d {
                    let shift = if i % 3 == 0 && k == 0 { 3.0 } else { 0.0 };
                    zs.push((shift + rng.normal()) as f32);
                }
                let s = rng.uniform_in(2.0, 8.0);
                for a in 0..d {
                    for b in 0..d {
                        prec.push(if a == b { s as f32 } else { 0.0 });
                    }
                }
            }
            let alphas = match std::env::var("DENSITY_ALPHAS") {
                Ok(v) => v.split(',').filter_map(|t| t.parse().ok()).collect(),
                Err(_) if d == 4 => vec![1e-3],
                Err(_) => DensityOptions::default().alpha_values(),
            };
            let max_iter = std::env::var("DENSITY_ITERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(500);
            let opts = DensityOptions {
                pca_dim: d,
                alphas: Some(alphas.clone()),
                max_iter,
                ..Default::default()
            };
            let t = std::time::Instant::now();
            let r = estimate_density(&zs, d, &prec, &opts, &NoProgress).unwrap();
            println!(
                "estimate_density, {n} points, {d}-D, {}^{d} grid, {} weights: {:.1} s (knee {})",
                opts.grid_points(),
                alphas.len(),
                t.elapsed().as_secs_f64(),
                r.knee
            );
        }
    }
}
