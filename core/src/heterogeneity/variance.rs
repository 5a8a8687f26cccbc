//! The per-voxel variance of the volumes, `diag(Σ)` (algorithms.md §5.2), and the noise upper
//! bound it gives (§2.5).
//!
//! One pass over the images. For image `i` of halfset `h` (spectrum `ŷ_i`, already shifted by
//! its translation; CTF `C_i`; tight mask `M_i` of the dilated mask, softened 5 px, with the
//! dataset window `window_mask_2d(D, 0.85, 0.99)`; radial noise image `σ²`):
//!
//! ```text
//! r_i  = ŷ_i − C_i · P_i μ                       (μ sliced trilinearly, as 1.0.5 forces)
//! r̃_i  = DFT2( IDFT2(r_i) · M_i )                (real-space masking)
//! ν_i  = σ² ⊛ |DFT2(M_i)|²/D⁴                     (noise power left in the masked image)
//! S_h += P_iᵀ[ C_i² · (|r̃_i|² − ν_i) ]           W_h += P_iᵀ[ C_i⁴ ]
//! R   += P_iᵀ[ |r_i|² ]                           O   += P_iᵀ[ 1 ]
//! ```
//!
//! (`P_iᵀ` the trilinear backprojection on the N grid, clipped at radius D/2 − 1.) Then
//! `W_h` gets the shell floor of the regularized denominator
//! ([`crate::reconstruct::mean::regularized_denominator`] without a prior), `var_h = S_h/W_h`,
//! and a per-shell prior from the FSC of the two halves (each shell's mean removed first)
//! with RECOVAR's `compute_fsc_prior_gpu_v2` at an infinite prior:
//! `τ(r) = SNR(r) · shell_mean(1/L)` with `L = 8·(W_0 + W_1)/2` (the factor 8 is 1.0.5's
//! `downsample_lhs` quirk, algorithms.md §18 item 1, kept for parity). The regularized halves
//! are `var_h = S_h / adjust(W_h, τ)` and the estimate is their average. `R/O` is the
//! backprojected residual power per voxel (noise plus variance), used by
//! [`bound_noise_by_variance`].
//!
//! The masked noise `ν_i` is the exact expectation of the noise part of `|r̃_i|²` for
//! stationary noise: multiplying by `M_i` in real space convolves the spectrum with
//! `DFT2(M_i)/D²`.
//!
//! Conventions: volumes are centered `N³` Fourier arrays (z slowest); the variance is real.
//! Accumulation is in f64 through the backend (image order), and every sum over shells here is
//! sequential, so the result does not depend on batch sizes or thread counts.

use num_complex::Complex;
use rayon::prelude::*;

use super::Context;
use crate::backend::ImageBatch;
use crate::error::{Error, Result};
use crate::forward::{Interp, SliceGeometry};
use crate::fourier::{radial_to_image_2d, shell_index_3d, window_mask_2d, Fft2};
use crate::progress::{report, Progress};
use crate::reconstruct::mean::regularized_denominator;
use crate::reconstruct::tight_mask::TightMasker;

/// FSC values are clamped to `[ε, 1 − ε]` before becoming an SNR (RECOVAR's
/// `FSC_ZERO_THRESHOLD`).
const FSC_ZERO_THRESHOLD: f64 = 0.001;
/// RECOVAR's tiny floor for priors and denominators.
const EPSILON: f64 = 1e-16;
/// 1.0.5's `downsample_lhs` multiplies the weights by 2³ even without oversampling
/// (algorithms.md §18 item 1). Kept for parity with RECOVAR's priors.
pub(crate) const LHS_QUIRK: f64 = 8.0;
/// Soft edge (pixels) of the tight masks of the variance (§4.5).
const VARIANCE_SOFTEN: usize = 5;
/// Shells bounded by [`bound_noise_by_variance`]: at most this many.
const NOISE_BOUND_SHELLS: usize = 32;

/// Everything the variance pass estimates (all `N³`, centered Fourier arrays).
#[derive(Clone, Debug)]
pub struct VarianceEstimate {
    /// The regularized per-voxel variance `(var_0 + var_1)/2` (real).
    pub variance: Vec<f32>,
    /// The regularized estimate of each halfset.
    pub halves: [Vec<f32>; 2],
    /// `(W_0 + W_1)/2`: the floored CTF⁴ weight per voxel.
    pub lhs: Vec<f32>,
    /// `(R_0 + R_1)/(O_0 + O_1)`: backprojected `|residual|²` per voxel (noise plus variance);
    /// 0 where no image reaches.
    pub noise_p_variance: Vec<f32>,
    /// FSC between the unregularized halves (shell means removed), `N/2 − 1` shells.
    pub fsc: Vec<f64>,
    /// The per-shell prior derived from that FSC, `N/2 − 1` shells.
    pub prior: Vec<f64>,
}

/// Per-shell FSC of two `N³` volumes given by accessors (§15.1): `Σ Re(conj(a)·b) /
/// sqrt(Σ|a|²·Σ|b|²)` over shells `0..count`, non-finite values → 0, `FSC(0) := FSC(1)`;
/// with `subtract_shell_mean`, each shell's mean is removed from `a` and `b` first.
/// Sequential f64 sums in voxel order, so the curve is the same bits on every run (the
/// parallel [`crate::fourier::fsc`] sums in an order that depends on work stealing).
pub(crate) fn fsc_sequential<A, B>(
    a: A,
    b: B,
    shells: &[u32],
    count: usize,
    subtract_shell_mean: bool,
) -> Vec<f64>
where
    A: Fn(usize) -> Complex<f64>,
    B: Fn(usize) -> Complex<f64>,
{
    let zero = Complex::new(0.0, 0.0);
    let (mut mean_a, mut mean_b) = (vec![zero; count], vec![zero; count]);
    if subtract_shell_mean {
        let mut n = vec![0.0f64; count];
        for (i, &s) in shells.iter().enumerate() {
            let s = s as usize;
            if s < count {
                mean_a[s] += a(i);
                mean_b[s] += b(i);
                n[s] += 1.0;
            }
        }
        for s in 0..count {
            let c = n[s].max(1.0);
            mean_a[s] /= c;
            mean_b[s] /= c;
        }
    }
    let mut sums = vec![[0.0f64; 3]; count];
    for (i, &s) in shells.iter().enumerate() {
        let s = s as usize;
        if s < count {
            let x = a(i) - mean_a[s];
            let y = b(i) - mean_b[s];
            let t = &mut sums[s];
            t[0] += (x.conj() * y).re;
            t[1] += x.norm_sqr();
            t[2] += y.norm_sqr();
        }
    }
    crate::fourier::fsc_from_sums(&sums)
}

/// RECOVAR's `compute_fsc_prior_gpu_v2` (§5.5): with `SNR = FSC/(1 − FSC)` (FSC clamped to
/// `[0.001, 0.999]`) and, per voxel, `L = lhs(v)` (clipped at 0) and the current prior `p`
/// (`None`: infinite; values ≤ 0 become 0.001),
/// `top = L²/(L + 1/p)²`, `bot = L/(L + 1/p)²` (both 0 where the denominator is 0), the new
/// prior is `τ(r) = SNR(r) · Σ_shell bot / Σ_shell top` (1e-16 where `Σ top = 0`), shells
/// `0..count`. `prior` is per shell, the last value extended. Sequential sums.
pub(crate) fn prior_from_fsc<L>(
    fsc: &[f64],
    lhs: L,
    prior: Option<&[f64]>,
    shells: &[u32],
    count: usize,
) -> Vec<f64>
where
    L: Fn(usize) -> f64,
{
    let mut top = vec![0.0f64; count];
    let mut bot = vec![0.0f64; count];
    let inv: Vec<f64> = match prior {
        Some(p) => inverse_priors(p, count),
        None => vec![0.0; count],
    };
    for (i, &s) in shells.iter().enumerate() {
        let s = s as usize;
        if s < count {
            let l = lhs(i).max(0.0);
            let d = (l + inv[s]) * (l + inv[s]);
            if d > 0.0 {
                top[s] += l * l / d;
                bot[s] += l / d;
            }
        }
    }
    prior_from_sums(fsc, &top, &bot)
}

/// `1/τ(r)` per shell `0..count` for [`prior_from_fsc`]: the last prior value extended,
/// values ≤ 0 read as 0.001.
pub(crate) fn inverse_priors(prior: &[f64], count: usize) -> Vec<f64> {
    let last = prior.len().saturating_sub(1);
    (0..count)
        .map(|r| {
            let t = prior[r.min(last)];
            1.0 / if t > 0.0 { t } else { FSC_ZERO_THRESHOLD }
        })
        .collect()
}

/// The new prior of [`prior_from_fsc`] from the shell sums `top`, `bot`:
/// `SNR(r)·bot/top` with the FSC clamped to `[0.001, 0.999]`, 1e-16 where `top = 0`.
pub(crate) fn prior_from_sums(fsc: &[f64], top: &[f64], bot: &[f64]) -> Vec<f64> {
    top.iter()
        .zip(bot)
        .enumerate()
        .map(|(r, (&t, &b))| {
            let f = fsc
                .get(r)
                .copied()
                .unwrap_or(0.0)
                .clamp(FSC_ZERO_THRESHOLD, 1.0 - FSC_ZERO_THRESHOLD);
            let snr = f / (1.0 - f);
            if t > 0.0 {
                snr * b / t
            } else {
                EPSILON
            }
        })
        .collect()
}

/// `n / d` where `d > 1e-20`, else 0 (RECOVAR's `_safe_div`).
fn safe_div(n: f64, d: f64) -> f64 {
    if d > 1e-20 {
        n / d
    } else {
        0.0
    }
}

/// Accumulators of one halfset.
struct Sums {
    signal: Vec<f64>,
    weight: Vec<f64>,
}

/// §5.2 in one pass over the images (module docs). Uses `ctx.mean` (sliced trilinearly),
/// `ctx.noise`, `ctx.dilated_mask` and `ctx.batch_size`.
pub fn estimate_variance(ctx: &Context, progress: &dyn Progress) -> Result<VarianceEstimate> {
    ctx.validate()?;
    let ds = ctx.ds;
    let backend = ctx.backend;
    let rotations = ds
        .rotations()
        .ok_or_else(|| Error::invalid("the variance needs poses"))?;
    let ctf_params = ds
        .ctf()
        .ok_or_else(|| Error::invalid("the variance needs CTF parameters"))?;
    let d = ctx.n();
    let n = d;
    let n3 = n * n * n;
    let npix = d * d;
    let geom = SliceGeometry::new(d, n)?;
    let masker = TightMasker::new(ctx.dilated_mask, n)?;
    let window = window_mask_2d(d, 0.85, 0.99)?;
    let fft = Fft2::<f32>::new(d);
    let noise_img: Vec<f32> = radial_to_image_2d(ctx.noise, d)?
        .iter()
        .map(|&v| v as f32)
        .collect();
    let mut noise_ft = vec![Complex::new(0.0f32, 0.0); npix];
    fft.forward_real(&noise_img, &mut noise_ft);
    let d4 = (npix as f32) * (npix as f32);

    let mut halves: Vec<Sums> = Vec::with_capacity(2);
    let mut resid = vec![0.0f64; n3];
    let mut count = vec![0.0f64; n3];
    let total = ds.len() as u64;
    let mut done = 0u64;
    let batch = ctx.batch_size.max(1);
    let ones = vec![1.0f32; batch * npix];
    report(progress, "variance", 0, total)?;
    for h in 0..2 {
        let mut sums = Sums {
            signal: vec![0.0; n3],
            weight: vec![0.0; n3],
        };
        for chunk in ds.halfsets()[h].chunks(batch) {
            let m = chunk.len();
            let ImageBatch {
                spectra: spec,
                ctf: c,
                rotations: rots,
                ..
            } = ImageBatch::read(ds, backend, chunk, rotations, ctf_params)?;
            let mut proj = vec![Complex::new(0.0f32, 0.0); m * npix];
            backend.slice(ctx.mean, &geom, Interp::Trilinear, &rots, &mut proj)?;
            let masks = masker.masks(backend, &rots, &window, Some(VARIANCE_SOFTEN))?;
            // Per image: signal (C²(|r̃|² − ν)), weight (C⁴), raw residual power (|r|²).
            let mut sig = vec![0.0f32; m * npix];
            let mut wgt = vec![0.0f32; m * npix];
            let mut pow = vec![0.0f32; m * npix];
            sig.par_chunks_exact_mut(npix)
                .zip(wgt.par_chunks_exact_mut(npix))
                .zip(pow.par_chunks_exact_mut(npix))
                .enumerate()
                .for_each(|(i, ((sig, wgt), pow))| {
                    let sl = i * npix..(i + 1) * npix;
                    let (y, p, cv, mask) = (
                        &spec[sl.clone()],
                        &proj[sl.clone()],
                        &c[sl.clone()],
                        &masks[sl],
                    );
                    let r: Vec<Complex<f32>> = y
                        .iter()
                        .zip(p)
                        .zip(cv)
                        .map(|((yv, pv), &cc)| yv - pv * cc)
                        .collect();
                    for (o, v) in pow.iter_mut().zip(&r) {
                        *o = v.norm_sqr();
                    }
                    // Mask in real space (the real image, as 1.0.5's half-image path does).
                    let mut img = vec![0.0f32; npix];
                    fft.inverse_real(&r, &mut img);
                    for (v, w) in img.iter_mut().zip(mask) {
                        *v *= w;
                    }
                    let mut masked = vec![Complex::new(0.0f32, 0.0); npix];
                    fft.forward_real(&img, &mut masked);
                    // ν = σ² ⊛ |DFT(M)|²/D⁴, a product of centered transforms.
                    let mut mf = vec![Complex::new(0.0f32, 0.0); npix];
                    fft.forward_real(mask, &mut mf);
                    let k: Vec<f32> = mf.iter().map(|v| v.norm_sqr() / d4).collect();
                    fft.forward_real(&k, &mut mf);
                    for (a, b) in mf.iter_mut().zip(&noise_ft) {
                        *a *= *b;
                    }
                    let mut nu = vec![0.0f32; npix];
                    fft.inverse_real(&mf, &mut nu);
                    for j in 0..npix {
                        let c2 = cv[j] * cv[j];
                        sig[j] = c2 * (masked[j].norm_sqr() - nu[j]);
                        wgt[j] = c2 * c2;
                    }
                });
            drop((spec, proj, masks, c));
            backend.backproject_real(&sig, &geom, Interp::Trilinear, &rots, &mut sums.signal)?;
            backend.backproject_real(&wgt, &geom, Interp::Trilinear, &rots, &mut sums.weight)?;
            backend.backproject_real(&pow, &geom, Interp::Trilinear, &rots, &mut resid)?;
            backend.backproject_real(
                &ones[..m * npix],
                &geom,
                Interp::Trilinear,
                &rots,
                &mut count,
            )?;
            done += m as u64;
            report(progress, "variance", done, total)?;
        }
        halves.push(sums);
    }

    let count_shells = n / 2 - 1;
    let shells = shell_index_3d(n);
    let floored: Vec<Vec<f64>> = halves
        .iter()
        .map(|s| regularized_denominator(&s.weight, n, 1, None))
        .collect::<Result<_>>()?;
    let unreg: Vec<Vec<f64>> = halves
        .iter()
        .zip(&floored)
        .map(|(s, w)| {
            s.signal
                .iter()
                .zip(w)
                .map(|(&a, &b)| safe_div(a, b))
                .collect()
        })
        .collect();
    let lhs: Vec<f64> = floored[0]
        .iter()
        .zip(&floored[1])
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    let real = |v: &[f64], i: usize| Complex::new(v[i], 0.0);
    let fsc = fsc_sequential(
        |i| real(&unreg[0], i),
        |i| real(&unreg[1], i),
        &shells,
        count_shells,
        true,
    );
    let prior = prior_from_fsc(&fsc, |i| LHS_QUIRK * lhs[i], None, &shells, count_shells);
    let mut reg_halves: Vec<Vec<f32>> = Vec::with_capacity(2);
    for (s, w) in halves.iter().zip(&floored) {
        let den = regularized_denominator(w, n, 1, Some(&prior))?;
        reg_halves.push(
            s.signal
                .iter()
                .zip(&den)
                .map(|(&a, &b)| safe_div(a, b) as f32)
                .collect(),
        );
    }
    let variance: Vec<f32> = reg_halves[0]
        .iter()
        .zip(&reg_halves[1])
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    let noise_p_variance: Vec<f32> = resid
        .iter()
        .zip(&count)
        .map(|(&r, &o)| safe_div(r, o) as f32)
        .collect();
    let h1 = reg_halves.pop().unwrap_or_default();
    let h0 = reg_halves.pop().unwrap_or_default();
    Ok(VarianceEstimate {
        variance,
        halves: [h0, h1],
        lhs: lhs.iter().map(|&v| v as f32).collect(),
        noise_p_variance,
        fsc,
        prior,
    })
}

/// `q`-th percentile (0–100) of `v` with numpy's default linear interpolation.
fn percentile(v: &mut [f64], q: f64) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    crate::stats::percentile_sorted(v, q)
}

/// §2.5: low-frequency noise is often over-estimated (signal leaks into the outside-mask
/// estimate), which makes the covariance too small there; noise plus variance bounds it.
/// For shells `r < min(32, N/2 − 1)`: `σ²(r) ← min(σ²(r), max(0, p5(r)))` with `p5(r)` the
/// 5th percentile over the voxels of shell `r` of `est.noise_p_variance`. Never increases
/// the noise. Deliberate difference: where `p5 ≤ 0` RECOVAR sets the noise to 0; we leave
/// that shell unchanged (zero noise would make the whitening divide by zero).
/// A profile or estimate of the wrong size is returned unchanged, with a warning.
pub fn bound_noise_by_variance(noise: &[f64], est: &VarianceEstimate, n: usize) -> Vec<f64> {
    let mut out = noise.to_vec();
    if n < 4 || est.noise_p_variance.len() != n * n * n {
        tracing::warn!(
            "noise bound: the variance estimate has {} voxels, not {n}³; noise left unchanged",
            est.noise_p_variance.len()
        );
        return out;
    }
    let shells_to_bound = NOISE_BOUND_SHELLS.min(n / 2 - 1).min(noise.len());
    let mut by_shell: Vec<Vec<f64>> = vec![Vec::new(); shells_to_bound];
    for (&s, &v) in shell_index_3d(n).iter().zip(&est.noise_p_variance) {
        if let Some(b) = by_shell.get_mut(s as usize) {
            b.push(v as f64);
        }
    }
    let mut bounded = 0;
    let mut uninformative = Vec::new();
    for (r, vals) in by_shell.iter_mut().enumerate() {
        if let Some(p5) = percentile(vals, 5.0) {
            // A non-positive percentile carries no information (the data do not reach the
            // shell, or the variance estimate is negative there); RECOVAR would set the
            // noise to 0, which makes every later whitening divide by zero.
            if p5.is_nan() || p5 <= 0.0 {
                uninformative.push(r);
                continue;
            }
            if out[r] > p5 {
                out[r] = p5;
                bounded += 1;
            }
        }
    }
    if !uninformative.is_empty() {
        tracing::warn!(
            "noise bound: noise + variance is not positive in shells {uninformative:?} (too few images?); the noise there is left unbounded"
        );
    }
    if bounded > 0 {
        tracing::info!(
            "noise bounded by noise + variance in {bounded} of the first {shells_to_bound} shells"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy() {
        // numpy.percentile([1, 2, 3, 4, 5], 5) = 1.2; of [3, 1] = 1.1
        assert!((percentile(&mut [5.0, 1.0, 3.0, 2.0, 4.0], 5.0).unwrap() - 1.2).abs() < 1e-12);
        assert!((percentile(&mut [3.0, 1.0], 5.0).unwrap() - 1.1).abs() < 1e-12);
        assert_eq!(percentile(&mut [], 5.0), None);
    }

    #[test]
    fn fsc_sequential_agrees_with_the_parallel_one() {
        let n = 12;
        let mut rng = crate::rng::Rng::new(3);
        let a: Vec<Complex<f32>> = (0..n * n * n)
            .map(|_| Complex::new(rng.normal() as f32, rng.normal() as f32))
            .collect();
        let b: Vec<Complex<f32>> = a
            .iter()
            .map(|v| v * 0.5 + Complex::new(rng.normal() as f32, rng.normal() as f32))
            .collect();
        let shells = shell_index_3d(n);
        for sub in [false, true] {
            let want = crate::fourier::fsc(&a, &b, n, sub).unwrap();
            let c = |v: &[Complex<f32>], i: usize| Complex::new(v[i].re as f64, v[i].im as f64);
            let got = fsc_sequential(|i| c(&a, i), |i| c(&b, i), &shells, n / 2 - 1, sub);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn prior_at_infinity_is_snr_times_mean_inverse_weight() {
        // One shell structure: n = 8, shells 0..3. L = 2 everywhere: τ = SNR · (1/2).
        let n = 8;
        let shells = shell_index_3d(n);
        let fsc = vec![0.5, 0.5, 0.75];
        let tau = prior_from_fsc(&fsc, |_| 2.0, None, &shells, 3);
        assert!((tau[0] - 0.5).abs() < 1e-12);
        assert!((tau[2] - 1.5).abs() < 1e-12);
        // With a finite prior p: top/bot = L, so τ = SNR / L whatever p.
        let tau = prior_from_fsc(&fsc, |_| 2.0, Some(&[3.0]), &shells, 3);
        assert!((tau[1] - 0.5).abs() < 1e-12);
        // No weight at all: the tiny floor.
        let tau = prior_from_fsc(&fsc, |_| 0.0, None, &shells, 3);
        assert_eq!(tau, vec![EPSILON; 3]);
    }
}
