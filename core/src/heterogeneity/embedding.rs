//! Per-image latent coordinates, their precisions and contrasts (algorithms.md §6).
//!
//! # Model
//!
//! Image `i` is modelled as `ŷ = α · C ⊙ P(R) (μ + U z) + ε` with `ε ~ CN(0, diag σ²)`,
//! `z ~ N(0, Λ)`, `Λ = diag(λ + 1e-8)` (`ŷ` the shifted spectrum `T y`, §1.5; `C` the CTF with
//! the dataset's contrast column already in it, §1.4; α an extra contrast found here). Every
//! pixel is whitened (divided by `σ(k)`, the radial noise profile of the [`Context`]), then
//!
//! ```text
//! y = ŷ/σ,   m = C·P μ/σ,   A = [C·P u_1 .. C·P u_K]/σ          (mean and basis: cubic)
//! Aᵀy, Aᵀm, AᵀA, ‖y‖², yᵀm, ‖m‖²                                 (real parts)
//! z(α) = (α² AᵀA + Λ⁻¹)⁻¹ · α (Aᵀy − α Aᵀm)
//! J(α) = ‖y − α(m + A z(α))‖² + z(α)ᵀ Λ⁻¹ z(α)                    (expanded in the products)
//! ```
//!
//! With contrast correction α* = argmin J over `linspace(0, 2, 51)[1:]` (the first minimum
//! on ties, as `argmin`), otherwise α* = 1. The outputs per image are `z(α*)`, α* and the
//! precision `(G + Λ⁻¹) · pinv(G) · (G + Λ⁻¹)`, `G = α*² AᵀA`, `pinv` with `rcond = 1e-6`
//! (§6.4: the inverse of the sampling covariance of the regularized estimate). The
//! unregularized ("noreg") variant is the same with `Λ⁻¹ = 0`: `z = pinv(α² AᵀA) α(Aᵀy − α
//! Aᵀm)` and precision `G` (with its eigenvalues below `1e-6·max` dropped).
//!
//! The inner products are formed once per image for the largest requested `zdim` (K); each
//! `zdim` uses their leading block (a prefix of the basis), both regularized and not, so the
//! expensive part — slicing K + 1 volumes per image — is done once, not 2 × (number of
//! zdims) times as in RECOVAR 1.0.5 (which re-runs the whole pass per zdim and variant; the
//! numbers are the same).
//!
//! # How the small systems are solved (and why)
//!
//! Per image and zdim `z` one symmetric eigendecomposition (cyclic Jacobi, f64) of
//! `S = Λ^{½} AᵀA Λ^{½} = W diag(d) Wᵀ` turns the whole contrast search into O(z) work per
//! α: with `p = Wᵀ Λ^{½} Aᵀy`, `q = Wᵀ Λ^{½} Aᵀm`,
//! `z(α) = Λ^{½} W w`, `w_k = α (p_k − α q_k) / (α² d_k + 1)`, and
//! `J(α) = α² Σ d w² + α² ‖m‖² + ‖y‖² + 2α² qᵀw − 2α pᵀw − 2α yᵀm + wᵀw`; this is the same
//! as a Cholesky solve per α (RECOVAR's `solve(…, assume_a="pos")`), only cheaper. A second
//! eigendecomposition `AᵀA = V diag(g) Vᵀ` gives `pinv` (eigenvalues with
//! `|g| ≤ 1e-6·max|g|` dropped, as `numpy.linalg.pinv(hermitian=True)`), used by the
//! precision and by the noreg solve. Everything past the pixel sums runs in f64; outputs are
//! f32.
//!
//! # Conventions
//!
//! - Volumes are centered `N³` spectra; eigenvectors are scaled as in the module docs of
//!   [`crate::heterogeneity`] (`Σ|u|² = N³`), eigenvalues are the variances of `z`.
//! - Inner products run over full `D × D` spectra and keep the real part. That equals
//!   RECOVAR's √w-weighted half-spectrum sums for every product that involves a projection
//!   (projections vanish beyond the clipping radius `D/2 − 1`, where the two layouts
//!   differ); only `‖y‖²`, a constant in `J`, can differ.
//! - `ignore_zero_frequency` multiplies the DC pixel's noise variance by 1e16, as the
//!   pipeline's `--ignore-zero-frequency` does to `noise_var_used[0]` before the embedding.
//! - Outputs are in dataset order (positions `0..n`, both halfsets).
//!
//! # Determinism and cost
//!
//! Each image's numbers depend on that image only (pixel sums in a fixed order, f64
//! accumulation), so results do not depend on batch sizes or thread counts. Cost per image:
//! K + 1 cubic slices (dominant), `(K + 2)(K + 3)/2` pixel dot products, and per zdim two
//! z×z Jacobi decompositions plus O(z) per contrast value.
//!
//! # Tilt series (§12, not implemented)
//!
//! Tilts of one particle share `z`: their `ImageStats` would be summed per particle
//! (`ImageStats::add`, with `α_j`/`α_j²` weights for per-image contrasts) before the same
//! solve; the per-image part stays as it is.

use num_complex::Complex;
use rayon::prelude::*;

use super::Context;
use crate::error::{Error, Result};
use crate::forward::{cubic, Interp, SliceGeometry};
use crate::fourier::radial_to_image_2d;
use crate::progress::{report, Progress};

/// RECOVAR's `ROOT_EPSILON`, added to the eigenvalues before inverting them.
const EIGENVALUE_EPSILON: f64 = 1e-8;
/// Relative cutoff of the pseudo-inverse in the precision (`rcond` of `jnp.linalg.pinv`).
const PINV_RCOND: f64 = 1e-6;
/// Number of contrast values searched (`linspace(0, 2, 51)[1:]`).
const CONTRAST_STEPS: usize = 50;
/// Largest contrast searched.
const CONTRAST_MAX: f64 = 2.0;
/// Factor on the DC noise variance with `ignore_zero_frequency`.
const DC_NOISE_FACTOR: f64 = 1e16;
/// `Context::batch_size` is sized for about this many image-sized complex arrays per image
/// (the mean and noise passes' budget); the embedding holds K + 5 per image, so it takes
/// `batch_size · 8 / (K + 5)` images at a time to stay within the same memory.
const ARRAYS_PER_BATCH_IMAGE: usize = 8;

/// Latent coordinates of every image for one basis size.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// Number of principal components used.
    pub zdim: usize,
    /// `n × zdim`, row-major, dataset order.
    pub zs: Vec<f32>,
    /// `n × zdim × zdim` precision matrices (inverse covariances), row-major.
    pub precisions: Vec<f32>,
    /// `n` contrasts α* (1 without contrast correction); multiply on top of the CTF's.
    pub contrasts: Vec<f32>,
}

impl Embedding {
    fn zeros(zdim: usize, n: usize) -> Self {
        Embedding {
            zdim,
            zs: vec![0.0; n * zdim],
            precisions: vec![0.0; n * zdim * zdim],
            contrasts: vec![0.0; n],
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.contrasts.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.contrasts.is_empty()
    }

    /// The coordinates of image `i` (`zdim` values).
    pub fn z(&self, i: usize) -> Option<&[f32]> {
        self.zs.get(i * self.zdim..(i + 1) * self.zdim)
    }

    /// The precision matrix of image `i` (`zdim²` values, row-major).
    pub fn precision(&self, i: usize) -> Option<&[f32]> {
        let z2 = self.zdim * self.zdim;
        self.precisions.get(i * z2..(i + 1) * z2)
    }
}

/// The regularized and unregularized embeddings for each requested zdim.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// Prior `Λ = diag(λ + 1e-8)` (RECOVAR's `latent_coords`), one per zdim in the order given.
    pub regularized: Vec<Embedding>,
    /// `Λ⁻¹ = 0` (RECOVAR's `latent_coords_noreg`), same order.
    pub unregularized: Vec<Embedding>,
}

/// The contrast values searched: `linspace(0, 2, 51)[1:]` as f32 (as RECOVAR casts the grid),
/// or `[1]` without contrast correction.
pub fn contrast_grid(correct_contrast: bool) -> Vec<f32> {
    if !correct_contrast {
        return vec![1.0];
    }
    let step = CONTRAST_MAX / CONTRAST_STEPS as f64;
    (1..=CONTRAST_STEPS)
        .map(|i| {
            // numpy.linspace computes i·step and pins the last value to `stop`.
            if i == CONTRAST_STEPS {
                CONTRAST_MAX as f32
            } else {
                (i as f64 * step) as f32
            }
        })
        .collect()
}

/// §6: embed every image (both halfsets) in the first `zdims[j]` eigenvectors, for each j,
/// regularized and unregularized.
///
/// `eigvecs` are centered `N³` spectra (`Σ|u|² = N³`) with variances `eigvals` (same count,
/// finite, ≥ 0); only the first `max(zdims)` are used. With `correct_contrast` each image's
/// contrast is searched on the 50-value grid ([`contrast_grid`]), otherwise it is 1.
/// `ignore_zero_frequency` multiplies the DC noise variance by 1e16 (the DC term then carries
/// no weight).
///
/// # Errors
/// Inconsistent inputs (sizes, an empty or out-of-range `zdims`, non-finite values), errors
/// from the dataset or the backend, and [`Error::Cancelled`] from `progress`.
pub fn embed(
    ctx: &Context,
    eigvecs: &[Vec<Complex<f32>>],
    eigvals: &[f64],
    zdims: &[usize],
    correct_contrast: bool,
    ignore_zero_frequency: bool,
    progress: &dyn Progress,
) -> Result<Embeddings> {
    ctx.validate()?;
    let k = validate_basis(ctx, eigvecs, eigvals, zdims)?;
    let ds = ctx.ds;
    let n = ds.len();
    let d = ctx.n();
    let npix = d * d;
    let (rotations, ctf_params) = match (ds.rotations(), ds.ctf()) {
        (Some(r), Some(c)) => (r, c),
        _ => {
            return Err(Error::invalid(
                "the embedding needs poses and CTF parameters",
            ))
        }
    };
    let geom = SliceGeometry::new(d, d)?;
    let disk: Vec<(usize, usize)> = (0..d)
        .filter_map(|r| geom.row_range(r).map(|(c0, c1)| (r * d + c0, r * d + c1)))
        .collect();
    let inv_sd = whitening(ctx.noise, d, ignore_zero_frequency)?;
    let grid: Vec<f64> = contrast_grid(correct_contrast)
        .iter()
        .map(|&a| a as f64)
        .collect();
    let lambda: Vec<f64> = eigvals[..k]
        .iter()
        .map(|l| l + EIGENVALUE_EPSILON)
        .collect();

    // Spline coefficients of the mean and the K eigenvectors, once (§1.3 cubic).
    let mut coefs: Vec<Vec<Complex<f32>>> = Vec::with_capacity(k + 1);
    for v in std::iter::once(ctx.mean).chain(eigvecs[..k].iter().map(|u| u.as_slice())) {
        let mut c = v.to_vec();
        cubic::prefilter(&mut c, d)?;
        coefs.push(c);
    }

    let mut reg: Vec<Embedding> = zdims.iter().map(|&z| Embedding::zeros(z, n)).collect();
    let mut noreg = reg.clone();
    let step = (ctx.batch_size.max(1).saturating_mul(ARRAYS_PER_BATCH_IMAGE) / (k + 5)).max(1);
    report(progress, "embedding", 0, n as u64)?;
    for start in (0..n).step_by(step) {
        let pos: Vec<usize> = (start..(start + step).min(n)).collect();
        let m = pos.len();
        let mut real = vec![0.0f32; m * npix];
        ds.read_images(&pos, &mut real)?;
        let shifts: Vec<[f32; 2]> = pos.iter().map(|&p| ds.translations()[p]).collect();
        let rots: Vec<[f32; 9]> = pos.iter().map(|&p| rotations[p]).collect();
        let params: Vec<_> = pos.iter().map(|&p| ctf_params[p]).collect();
        let mut spec = vec![Complex::new(0.0f32, 0.0); m * npix];
        ctx.backend
            .images_to_spectra(&real, d, &shifts, &mut spec)?;
        drop(real);
        let mut ctf = vec![0.0f32; m * npix];
        ctx.backend.ctf(&params, d, ds.voxel_size(), &mut ctf)?;
        // proj[v] holds volume v (0 = mean, 1.. = basis) sliced for every image of the step.
        let mut proj = vec![Complex::new(0.0f32, 0.0); (k + 1) * m * npix];
        for (c, out) in coefs.iter().zip(proj.chunks_exact_mut(m * npix)) {
            ctx.backend.slice(c, &geom, Interp::Cubic, &rots, out)?;
        }
        let solved: Vec<Vec<(Solution, Solution)>> = (0..m)
            .into_par_iter()
            .map(|i| {
                let px = i * npix..(i + 1) * npix;
                let volumes: Vec<&[Complex<f32>]> = (0..=k)
                    .map(|v| &proj[v * m * npix + px.start..v * m * npix + px.end])
                    .collect();
                let stats = ImageStats::compute(
                    &spec[px.clone()],
                    &ctf[px.clone()],
                    &inv_sd,
                    &volumes,
                    &disk,
                );
                zdims
                    .iter()
                    .map(|&z| solve_zdim(&stats, z, &lambda[..z], &grid))
                    .collect()
            })
            .collect();
        for (i, per_z) in solved.iter().enumerate() {
            let p = pos[i];
            for (j, (r, u)) in per_z.iter().enumerate() {
                r.store(&mut reg[j], p);
                u.store(&mut noreg[j], p);
            }
        }
        report(progress, "embedding", (start + m) as u64, n as u64)?;
    }
    Ok(Embeddings {
        regularized: reg,
        unregularized: noreg,
    })
}

/// Checks the basis against the context and `zdims`; returns K = max(zdims).
fn validate_basis(
    ctx: &Context,
    eigvecs: &[Vec<Complex<f32>>],
    eigvals: &[f64],
    zdims: &[usize],
) -> Result<usize> {
    let n3 = ctx.n().pow(3);
    if eigvals.len() != eigvecs.len() {
        return Err(Error::inconsistent(format!(
            "embedding: {} eigenvectors but {} eigenvalues",
            eigvecs.len(),
            eigvals.len()
        )));
    }
    let k = match zdims.iter().max() {
        Some(&k) => k,
        None => return Err(Error::invalid("embedding: no zdim requested")),
    };
    if zdims.contains(&0) {
        return Err(Error::invalid("embedding: every zdim must be at least 1"));
    }
    if k > eigvecs.len() {
        return Err(Error::invalid(format!(
            "embedding: zdim {k} needs {k} eigenvectors, only {} given",
            eigvecs.len()
        )));
    }
    for (j, (u, &l)) in eigvecs.iter().zip(eigvals).take(k).enumerate() {
        if u.len() != n3 {
            return Err(Error::inconsistent(format!(
                "embedding: eigenvector {j} has {} values, N³ = {n3}",
                u.len()
            )));
        }
        if !(l.is_finite() && l >= 0.0) {
            return Err(Error::invalid(format!(
                "embedding: eigenvalue {j} is {l}; eigenvalues must be finite and ≥ 0"
            )));
        }
        if u.iter().any(|c| !c.re.is_finite() || !c.im.is_finite()) {
            return Err(Error::invalid(format!(
                "embedding: eigenvector {j} has non-finite values"
            )));
        }
    }
    Ok(k)
}

/// `1/σ(k)` per pixel from the radial profile (the DC term ×1e16 in variance when asked).
fn whitening(noise: &[f64], d: usize, ignore_zero_frequency: bool) -> Result<Vec<f32>> {
    let mut var = radial_to_image_2d(noise, d)?;
    if ignore_zero_frequency {
        var[(d / 2) * d + d / 2] *= DC_NOISE_FACTOR;
    }
    Ok(var.iter().map(|v| (1.0 / v.sqrt()) as f32).collect())
}

/// The whitened inner products of one image with the projected mean `m` and basis `A`
/// (§6.1), for K basis vectors. Sums of these over the tilts of a particle give the
/// particle's (§12).
#[derive(Clone, Debug, PartialEq)]
struct ImageStats {
    k: usize,
    /// `Aᵀy` (K).
    aty: Vec<f64>,
    /// `Aᵀm` (K).
    atm: Vec<f64>,
    /// `AᵀA` (K × K, row-major, symmetric).
    ata: Vec<f64>,
    /// `‖y‖²`.
    yy: f64,
    /// `yᵀm`.
    ym: f64,
    /// `‖m‖²`.
    mm: f64,
}

impl ImageStats {
    /// `y` the shifted spectrum, `ctf` and `inv_sd` per pixel, `volumes[0]` the sliced mean
    /// and `volumes[1..]` the sliced basis (all `D²`), `disk` the pixel ranges inside the
    /// clipping radius (projections are zero elsewhere).
    fn compute(
        y: &[Complex<f32>],
        ctf: &[f32],
        inv_sd: &[f32],
        volumes: &[&[Complex<f32>]],
        disk: &[(usize, usize)],
    ) -> Self {
        let k = volumes.len() - 1;
        let len: usize = disk.iter().map(|(a, b)| b - a).sum();
        // Whitened values inside the disk, (re, im) interleaved so that
        // Re Σ conj(a)·b is a plain dot product.
        let pack = |src: &[Complex<f32>], with_ctf: bool| -> Vec<f32> {
            let mut out = Vec::with_capacity(2 * len);
            for &(a, b) in disk {
                for p in a..b {
                    let w = if with_ctf {
                        ctf[p] * inv_sd[p]
                    } else {
                        inv_sd[p]
                    };
                    out.push(src[p].re * w);
                    out.push(src[p].im * w);
                }
            }
            out
        };
        let yw = pack(y, false);
        let packed: Vec<Vec<f32>> = volumes.iter().map(|v| pack(v, true)).collect();
        let (mw, aw) = (&packed[0], &packed[1..]);
        let yy = y
            .iter()
            .zip(inv_sd)
            .map(|(v, &s)| v.norm_sqr() as f64 * (s as f64 * s as f64))
            .sum();
        let mut ata = vec![0.0; k * k];
        for a in 0..k {
            for b in a..k {
                let v = dot(&aw[a], &aw[b]);
                ata[a * k + b] = v;
                ata[b * k + a] = v;
            }
        }
        ImageStats {
            k,
            aty: aw.iter().map(|a| dot(a, &yw)).collect(),
            atm: aw.iter().map(|a| dot(a, mw)).collect(),
            ata,
            yy,
            ym: dot(&yw, mw),
            mm: dot(mw, mw),
        }
    }

    /// Adds another image's products (same K): the per-particle sums of tilt series.
    #[allow(dead_code)]
    fn add(&mut self, other: &ImageStats) {
        debug_assert_eq!(self.k, other.k);
        for (a, b) in self.aty.iter_mut().zip(&other.aty) {
            *a += b;
        }
        for (a, b) in self.atm.iter_mut().zip(&other.atm) {
            *a += b;
        }
        for (a, b) in self.ata.iter_mut().zip(&other.ata) {
            *a += b;
        }
        self.yy += other.yy;
        self.ym += other.ym;
        self.mm += other.mm;
    }

    /// The leading `z × z` block of `AᵀA`.
    fn ata_block(&self, z: usize) -> Vec<f64> {
        let mut g = vec![0.0; z * z];
        for r in 0..z {
            g[r * z..(r + 1) * z].copy_from_slice(&self.ata[r * self.k..r * self.k + z]);
        }
        g
    }
}

/// `Σ a·b` with f64 products, in four fixed lanes (deterministic; vectorizes).
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] as f64 * y[l] as f64;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        s += *x as f64 * *y as f64;
    }
    s
}

/// One image's answer for one zdim and variant.
#[derive(Clone, Debug, PartialEq)]
struct Solution {
    z: Vec<f64>,
    contrast: f64,
    /// `z × z`, row-major.
    precision: Vec<f64>,
}

impl Solution {
    fn store(&self, e: &mut Embedding, i: usize) {
        let z = e.zdim;
        for (o, v) in e.zs[i * z..(i + 1) * z].iter_mut().zip(&self.z) {
            *o = *v as f32;
        }
        for (o, v) in e.precisions[i * z * z..(i + 1) * z * z]
            .iter_mut()
            .zip(&self.precision)
        {
            *o = *v as f32;
        }
        e.contrasts[i] = self.contrast as f32;
    }
}

/// The regularized (`Λ = diag(lambda)`, already with the 1e-8) and unregularized solutions
/// for the first `z` basis vectors (module docs: one eigendecomposition each, O(z) per α).
fn solve_zdim(s: &ImageStats, z: usize, lambda: &[f64], grid: &[f64]) -> (Solution, Solution) {
    let g0 = s.ata_block(z);
    let b = &s.aty[..z];
    let c = &s.atm[..z];
    // pinv of AᵀA (rcond relative to the largest |eigenvalue|; scale-free, so it serves
    // α²AᵀA for every α).
    let (g, v) = sym_eigen(&g0, z);
    let gmax = g.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    let ginv: Vec<f64> = g
        .iter()
        .map(|&x| {
            if x.abs() > PINV_RCOND * gmax {
                1.0 / x
            } else {
                0.0
            }
        })
        .collect();

    // Regularized: S = Λ^½ AᵀA Λ^½ = W diag(dd) Wᵀ.
    let sq: Vec<f64> = lambda.iter().map(|l| l.sqrt()).collect();
    let mut smat = g0.clone();
    for r in 0..z {
        for col in 0..z {
            smat[r * z + col] *= sq[r] * sq[col];
        }
    }
    let (dd, w) = sym_eigen(&smat, z);
    let sb: Vec<f64> = (0..z).map(|r| sq[r] * b[r]).collect();
    let sc: Vec<f64> = (0..z).map(|r| sq[r] * c[r]).collect();
    let p = mat_t_vec(&w, &sb, z);
    let q = mat_t_vec(&w, &sc, z);
    let (alpha, coef) = search(grid, s, |a| {
        let coef: Vec<f64> = (0..z)
            .map(|k| a * (p[k] - a * q[k]) / (a * a * dd[k] + 1.0))
            .collect();
        let quad: f64 = (0..z).map(|k| dd[k] * coef[k] * coef[k]).sum();
        let prior: f64 = coef.iter().map(|x| x * x).sum();
        let (qw, pw) = (dot64(&q, &coef), dot64(&p, &coef));
        (a * a * quad + 2.0 * a * a * qw - 2.0 * a * pw + prior, coef)
    });
    let wc = mat_vec(&w, &coef, z);
    let zreg: Vec<f64> = (0..z).map(|r| sq[r] * wc[r]).collect();
    let lam_inv: Vec<f64> = lambda.iter().map(|l| 1.0 / l).collect();
    let reg = Solution {
        precision: precision(&g0, alpha, Some(lam_inv.as_slice()), &v, &ginv, z),
        z: zreg,
        contrast: alpha,
    };

    // Unregularized: z = V diag(ginv) Vᵀ (b − α c) / α.
    let p = mat_t_vec(&v, b, z);
    let q = mat_t_vec(&v, c, z);
    let (alpha, coef) = search(grid, s, |a| {
        let coef: Vec<f64> = (0..z).map(|k| ginv[k] * (p[k] - a * q[k]) / a).collect();
        let quad: f64 = (0..z).map(|k| g[k] * coef[k] * coef[k]).sum();
        let (qw, pw) = (dot64(&q, &coef), dot64(&p, &coef));
        (a * a * quad + 2.0 * a * a * qw - 2.0 * a * pw, coef)
    });
    let unreg = Solution {
        precision: precision(&g0, alpha, None, &v, &ginv, z),
        z: mat_vec(&v, &coef, z),
        contrast: alpha,
    };
    (reg, unreg)
}

/// The contrast search: `score(α)` returns the α-dependent part of J (the products with z)
/// and the coordinates in the eigenbasis; the α-only terms are added here. Returns the first
/// minimiser (a NaN score never wins; all NaN → the first grid value).
fn search(grid: &[f64], s: &ImageStats, score: impl Fn(f64) -> (f64, Vec<f64>)) -> (f64, Vec<f64>) {
    let mut best: Option<(f64, f64, Vec<f64>)> = None;
    for &a in grid {
        let (part, coef) = score(a);
        let j = part + a * a * s.mm + s.yy - 2.0 * a * s.ym;
        let better = match &best {
            None => true,
            Some((bj, _, _)) => j < *bj || (bj.is_nan() && !j.is_nan()),
        };
        if better {
            best = Some((j, a, coef));
        }
    }
    match best {
        Some((_, a, coef)) => (a, coef),
        None => (1.0, Vec::new()),
    }
}

/// `(G + Λ⁻¹) · pinv(G) · (G + Λ⁻¹)` with `G = α² g0` and `pinv(g0) = V diag(ginv) Vᵀ`
/// (`lam_inv = None`: Λ⁻¹ = 0). Formed as `B diag(ginv/α²) Bᵀ`, `B = (G + Λ⁻¹) V`, so it is
/// symmetric by construction and positive semi-definite up to rounding.
fn precision(
    g0: &[f64],
    alpha: f64,
    lam_inv: Option<&[f64]>,
    v: &[f64],
    ginv: &[f64],
    z: usize,
) -> Vec<f64> {
    let a2 = alpha * alpha;
    let mut m: Vec<f64> = g0.iter().map(|x| a2 * x).collect();
    if let Some(li) = lam_inv {
        for r in 0..z {
            m[r * z + r] += li[r];
        }
    }
    // B = M V.
    let mut bm = vec![0.0; z * z];
    for r in 0..z {
        for col in 0..z {
            bm[r * z + col] = (0..z).map(|t| m[r * z + t] * v[t * z + col]).sum();
        }
    }
    let h: Vec<f64> = ginv.iter().map(|x| x / a2).collect();
    let mut out = vec![0.0; z * z];
    for r in 0..z {
        for col in r..z {
            let val: f64 = (0..z).map(|t| bm[r * z + t] * h[t] * bm[col * z + t]).sum();
            out[r * z + col] = val;
            out[col * z + r] = val;
        }
    }
    out
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `M v` for a row-major `z × z` matrix.
fn mat_vec(m: &[f64], x: &[f64], z: usize) -> Vec<f64> {
    (0..z)
        .map(|r| (0..z).map(|c| m[r * z + c] * x[c]).sum())
        .collect()
}

/// `Mᵀ v` for a row-major `z × z` matrix.
fn mat_t_vec(m: &[f64], x: &[f64], z: usize) -> Vec<f64> {
    (0..z)
        .map(|c| (0..z).map(|r| m[r * z + c] * x[r]).sum())
        .collect()
}

/// Eigen-decomposition of a symmetric `n × n` matrix (row-major) by cyclic Jacobi
/// rotations: returns the eigenvalues and `V` (row-major, eigenvectors in its columns) with
/// `A = V diag(λ) Vᵀ`. Robust and accurate for the small (≤ a few tens) matrices here;
/// deterministic. Non-finite input gives non-finite output (after a bounded number of
/// sweeps), never a panic.
fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    const MAX_SWEEPS: usize = 100;
    for _ in 0..MAX_SWEEPS {
        let mut off = 0.0;
        let mut total = 0.0;
        for r in 0..n {
            for c in 0..n {
                let x = a[r * n + c] * a[r * n + c];
                total += x;
                if r != c {
                    off += x;
                }
            }
        }
        // Converged, or NaN (no rotation can fix that).
        if off <= 1e-30 * total || off.is_nan() || total.is_nan() {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = if theta.is_infinite() {
                    0.0
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← A J (columns p, q), then A ← Jᵀ A (rows p, q), V ← V J.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_spd(z: usize, rng: &mut Rng, rank: usize) -> Vec<f64> {
        let f: Vec<f64> = (0..z * rank).map(|_| rng.normal()).collect();
        let mut g = vec![0.0; z * z];
        for r in 0..z {
            for c in 0..z {
                g[r * z + c] = (0..rank).map(|t| f[r * rank + t] * f[c * rank + t]).sum();
            }
        }
        g
    }

    /// Plain Cholesky solve, the reference for the eigenbasis shortcut.
    fn cholesky_solve(a: &[f64], b: &[f64], z: usize) -> Vec<f64> {
        let mut l = vec![0.0; z * z];
        for i in 0..z {
            for j in 0..=i {
                let s: f64 =
                    a[i * z + j] - (0..j).map(|t| l[i * z + t] * l[j * z + t]).sum::<f64>();
                l[i * z + j] = if i == j { s.sqrt() } else { s / l[j * z + j] };
            }
        }
        let mut y = vec![0.0; z];
        for i in 0..z {
            y[i] = (b[i] - (0..i).map(|t| l[i * z + t] * y[t]).sum::<f64>()) / l[i * z + i];
        }
        let mut x = vec![0.0; z];
        for i in (0..z).rev() {
            x[i] = (y[i] - (i + 1..z).map(|t| l[t * z + i] * x[t]).sum::<f64>()) / l[i * z + i];
        }
        x
    }

    #[test]
    fn jacobi_reconstructs_symmetric_matrices() {
        let mut rng = Rng::new(3);
        for z in [1usize, 2, 5, 20] {
            let mut a = random_spd(z, &mut rng, z);
            a[0] -= 3.0; // indefinite too
            let (e, v) = sym_eigen(&a, z);
            for r in 0..z {
                for c in 0..z {
                    let rec: f64 = (0..z).map(|t| v[r * z + t] * e[t] * v[c * z + t]).sum();
                    assert!((rec - a[r * z + c]).abs() < 1e-10, "z={z} ({r},{c})");
                    let orth: f64 = (0..z).map(|t| v[t * z + r] * v[t * z + c]).sum();
                    assert!((orth - f64::from(r == c)).abs() < 1e-12);
                }
            }
        }
        let (e, _) = sym_eigen(&[f64::NAN, 1.0, 1.0, 0.0], 2);
        assert!(e.iter().any(|x| x.is_nan()));
    }

    /// The eigenbasis contrast search equals brute force: a Cholesky solve and the J of
    /// §6.2 for every α.
    #[test]
    fn solve_matches_cholesky_and_the_residual_formula() {
        let mut rng = Rng::new(5);
        let z = 6;
        let ata = random_spd(z, &mut rng, z + 3);
        let stats = ImageStats {
            k: z,
            aty: (0..z).map(|_| rng.normal() * 3.0).collect(),
            atm: (0..z).map(|_| rng.normal()).collect(),
            ata: ata.clone(),
            yy: 50.0,
            ym: 7.0,
            mm: 9.0,
        };
        let lambda: Vec<f64> = (0..z).map(|i| 2.0 / (i + 1) as f64 + 1e-8).collect();
        let grid: Vec<f64> = contrast_grid(true).iter().map(|&a| a as f64).collect();
        let (reg, unreg) = solve_zdim(&stats, z, &lambda, &grid);
        let j_of = |a: f64, x: &[f64], lam_inv: &[f64]| -> f64 {
            let gx = mat_vec(&ata, x, z);
            a * a * dot64(x, &gx) + a * a * stats.mm + stats.yy + 2.0 * a * a * dot64(&stats.atm, x)
                - 2.0 * a * dot64(&stats.aty, x)
                - 2.0 * a * stats.ym
                + (0..z).map(|k| x[k] * x[k] * lam_inv[k]).sum::<f64>()
        };
        for (variant, sol) in [("reg", &reg), ("noreg", &unreg)] {
            let lam_inv: Vec<f64> = if variant == "reg" {
                lambda.iter().map(|l| 1.0 / l).collect()
            } else {
                vec![0.0; z]
            };
            let mut best = (f64::INFINITY, 0.0, vec![]);
            for &a in &grid {
                let mut m: Vec<f64> = ata.iter().map(|x| a * a * x).collect();
                for k in 0..z {
                    m[k * z + k] += lam_inv[k];
                }
                let rhs: Vec<f64> = (0..z)
                    .map(|k| a * (stats.aty[k] - a * stats.atm[k]))
                    .collect();
                let x = cholesky_solve(&m, &rhs, z);
                let j = j_of(a, &x, &lam_inv);
                if j < best.0 {
                    best = (j, a, x);
                }
            }
            assert_eq!(sol.contrast, best.1, "{variant}");
            for (g, w) in sol.z.iter().zip(&best.2) {
                assert!(
                    (g - w).abs() < 1e-9 * (1.0 + w.abs()),
                    "{variant}: {g} vs {w}"
                );
            }
            // Precision (G + Λ⁻¹) G⁻¹ (G + Λ⁻¹) for an invertible G.
            let a2 = sol.contrast * sol.contrast;
            let mut m: Vec<f64> = ata.iter().map(|x| a2 * x).collect();
            for k in 0..z {
                m[k * z + k] += lam_inv[k];
            }
            for c in 0..z {
                let col: Vec<f64> = (0..z).map(|r| m[r * z + c]).collect();
                let ginv_col = cholesky_solve(&ata, &col, z);
                for r in 0..z {
                    let want: f64 = (0..z).map(|t| m[r * z + t] * ginv_col[t]).sum::<f64>() / a2;
                    let got = sol.precision[r * z + c];
                    assert!((got - want).abs() < 1e-8 * (1.0 + want.abs()), "{variant}");
                }
            }
        }
    }

    #[test]
    fn singular_gram_gives_finite_answers() {
        // A basis vector that projects to nothing: AᵀA has a zero row and column.
        let mut rng = Rng::new(8);
        let z = 3;
        let mut ata = random_spd(z, &mut rng, 4);
        for t in 0..z {
            ata[2 * z + t] = 0.0;
            ata[t * z + 2] = 0.0;
        }
        let stats = ImageStats {
            k: z,
            aty: vec![1.0, -2.0, 0.0],
            atm: vec![0.5, 0.1, 0.0],
            ata,
            yy: 10.0,
            ym: 1.0,
            mm: 2.0,
        };
        let grid: Vec<f64> = contrast_grid(true).iter().map(|&a| a as f64).collect();
        let (reg, unreg) = solve_zdim(&stats, z, &[1.0, 1.0, 1.0], &grid);
        for s in [&reg, &unreg] {
            assert!(s.z.iter().chain(&s.precision).all(|x| x.is_finite()));
        }
        assert!(
            unreg.z[2].abs() < 1e-12,
            "pinv leaves the invisible direction at 0"
        );
        assert!(reg.z[2].abs() < 1e-12);
    }

    /// The packed, disk-restricted sums equal plain complex sums over the whole image when
    /// the projections vanish outside the disk; `add` sums products.
    #[test]
    fn image_stats_are_the_whitened_inner_products() {
        let d = 8;
        let npix = d * d;
        let geom = SliceGeometry::new(d, d).unwrap();
        let disk: Vec<(usize, usize)> = (0..d)
            .filter_map(|r| geom.row_range(r).map(|(a, b)| (r * d + a, r * d + b)))
            .collect();
        let inside: Vec<bool> = (0..npix)
            .map(|p| disk.iter().any(|&(a, b)| (a..b).contains(&p)))
            .collect();
        let mut rng = Rng::new(2);
        let mut cplx = |zero_outside: bool| -> Vec<Complex<f32>> {
            (0..npix)
                .map(|p| {
                    let v = Complex::new(rng.normal() as f32, rng.normal() as f32);
                    if zero_outside && !inside[p] {
                        Complex::new(0.0, 0.0)
                    } else {
                        v
                    }
                })
                .collect()
        };
        let y = cplx(false);
        let vols: Vec<Vec<Complex<f32>>> = (0..4).map(|_| cplx(true)).collect();
        let ctf: Vec<f32> = (0..npix).map(|p| (p as f32 * 0.37).sin()).collect();
        let inv_sd: Vec<f32> = (0..npix).map(|p| 1.0 / (1.0 + p as f32 * 0.1)).collect();
        let refs: Vec<&[Complex<f32>]> = vols.iter().map(|v| v.as_slice()).collect();
        let s = ImageStats::compute(&y, &ctf, &inv_sd, &refs, &disk);
        let wh = |v: &[Complex<f32>], c: bool| -> Vec<Complex<f64>> {
            (0..npix)
                .map(|p| {
                    let w = inv_sd[p] as f64 * if c { ctf[p] as f64 } else { 1.0 };
                    Complex::new(v[p].re as f64 * w, v[p].im as f64 * w)
                })
                .collect()
        };
        let re_dot = |a: &[Complex<f64>], b: &[Complex<f64>]| -> f64 {
            a.iter().zip(b).map(|(x, y)| (x.conj() * y).re).sum()
        };
        let yw = wh(&y, false);
        let mw = wh(&vols[0], true);
        let aw: Vec<Vec<Complex<f64>>> = vols[1..].iter().map(|v| wh(v, true)).collect();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-5 * (1.0 + b.abs());
        assert_eq!(s.k, 3);
        assert!(close(s.yy, re_dot(&yw, &yw)));
        assert!(close(s.ym, re_dot(&yw, &mw)));
        assert!(close(s.mm, re_dot(&mw, &mw)));
        for a in 0..3 {
            assert!(close(s.aty[a], re_dot(&aw[a], &yw)));
            assert!(close(s.atm[a], re_dot(&aw[a], &mw)));
            for b in 0..3 {
                assert!(close(s.ata[a * 3 + b], re_dot(&aw[a], &aw[b])));
            }
        }
        assert_eq!(s.ata_block(2), vec![s.ata[0], s.ata[1], s.ata[3], s.ata[4]]);
        let mut twice = s.clone();
        twice.add(&s);
        assert_eq!(twice.ata[5], 2.0 * s.ata[5]);
        assert_eq!(twice.yy, 2.0 * s.yy);
    }

    #[test]
    fn grid_is_numpy_linspace() {
        let g = contrast_grid(true);
        assert_eq!(g.len(), 50);
        assert_eq!(g[0], 0.04f32);
        assert_eq!(g[24], 1.0f32);
        assert_eq!(g[49], 2.0f32);
        assert_eq!(contrast_grid(false), vec![1.0f32]);
    }
}
