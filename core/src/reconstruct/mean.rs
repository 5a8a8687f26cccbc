//! The regularized mean (algorithms.md §3): RELION-style direct Fourier inversion on the 2×
//! oversampled grid, per halfset, with a Wiener prior from the FSC of the two halves.
//!
//! Per halfset `h` (images `i ∈ H_h`, scalar noise σ² from §2.1):
//!
//! ```text
//! B_h = Σ_i P_iᵀ[ C_i · T_i y_i / σ² ]      (trilinear backprojection into the 2N grid)
//! A_h = Σ_i P_iᵀ[ C_i² / σ² ]
//! d   = ½ Σ_h Σ_i nearest-scatter_N[ C_i² / σ² ]   (the prior's denominator, N grid)
//! ```
//!
//! [`post_process`] turns `(A, B)` into a volume (regularized division, inverse FFT, crop to
//! N, soft spherical mask, gridding correction); [`post_process_with`] is the same on a grid
//! of any oversampling (1 for the covariance columns of §5.5), optionally complex and
//! masked. The prior is
//! `τ(r) = SNR(r) / shell_mean(d)(r)` with `SNR = FSC/(1 − FSC)` from the unregularized
//! halves. The combined mean is the average of the unregularized halves (`triangular`,
//! RECOVAR's default) or of the regularized ones (`triangular_reg`).
//!
//! Accumulation is in f64 and deterministic (the backend adds images in order), so the
//! mean does not depend on batch sizes or thread counts.

use num_complex::Complex;
use rayon::prelude::*;

use crate::backend::{Backend, ImageBatch};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::forward::{Interp, SliceGeometry};
use crate::fourier::{
    fsc, gridding_correct, radial_mean, shell_index_3d, soft_mask_outside_map, Fft3, GriddingKernel,
};
use crate::progress::{report, Progress};

/// RECOVAR's tiny floor for denominators.
const EPSILON: f64 = 1e-16;
/// FSC values are clamped to `[ε, 1 − ε]` before turning them into an SNR.
const FSC_ZERO_THRESHOLD: f64 = 0.001;

/// `--mean-fn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MeanFn {
    /// Average of the unregularized halfset means (RECOVAR's default).
    #[default]
    Triangular,
    /// Average of the Wiener-regularized halfset means.
    TriangularReg,
}

impl std::str::FromStr for MeanFn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "triangular" => Ok(MeanFn::Triangular),
            "triangular_reg" => Ok(MeanFn::TriangularReg),
            _ => Err(Error::invalid(format!(
                "--mean-fn `{s}`: expected triangular or triangular_reg"
            ))),
        }
    }
}

/// The accumulated sums of both halfsets.
pub struct Accumulators {
    /// Volume side N (the accumulators live on the 2N grid).
    pub n: usize,
    /// `A_h` (2N³, real).
    pub a: [Vec<f64>; 2],
    /// `B_h` (2N³, complex).
    pub b: [Vec<Complex<f64>>; 2],
    /// The prior's denominator `d` (N³).
    pub prior_denominator: Vec<f64>,
}

/// Accumulate `A_h`, `B_h` and `d` over the dataset's halfsets with scalar noise `noise_var`.
/// Reads every image once, in batches of `batch_size`.
pub fn accumulate(
    ds: &Dataset,
    backend: &dyn Backend,
    noise_var: f64,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<Accumulators> {
    if !(noise_var.is_finite() && noise_var > 0.0) {
        return Err(Error::invalid(format!(
            "the noise variance must be positive, got {noise_var}"
        )));
    }
    let rotations = ds
        .rotations()
        .ok_or_else(|| Error::invalid("the mean needs poses (--poses)"))?;
    let ctf_params = ds
        .ctf()
        .ok_or_else(|| Error::invalid("the mean needs CTF parameters (--ctf)"))?;
    let d = ds.box_size();
    let n = d;
    let nv = 2 * n;
    let geom2 = SliceGeometry::new(d, nv)?;
    let geom1 = SliceGeometry::new(d, n)?.with_max_radius(None)?;
    let inv = (1.0 / noise_var) as f32;
    let mut a = [vec![0.0f64; nv * nv * nv], vec![0.0f64; nv * nv * nv]];
    let mut b = [
        vec![Complex::new(0.0f64, 0.0); nv * nv * nv],
        vec![Complex::new(0.0f64, 0.0); nv * nv * nv],
    ];
    let mut prior = vec![0.0f64; n * n * n];
    let total = ds.len() as u64;
    let mut done = 0u64;
    let batch = batch_size.max(1);
    report(progress, "mean", 0, total)?;
    for h in 0..2 {
        for chunk in ds.halfsets()[h].chunks(batch) {
            let m = chunk.len();
            let ImageBatch {
                spectra: mut spec,
                ctf: c,
                rotations: rots,
                ..
            } = ImageBatch::read(ds, backend, chunk, rotations, ctf_params)?;
            for (s, cv) in spec.iter_mut().zip(&c) {
                *s *= *cv * inv;
            }
            let c2: Vec<f32> = c.iter().map(|v| v * v * inv).collect();
            backend.backproject(&spec, &geom2, Interp::Trilinear, &rots, &mut b[h])?;
            backend.backproject_real(&c2, &geom2, Interp::Trilinear, &rots, &mut a[h])?;
            backend.backproject_real(&c2, &geom1, Interp::Nearest, &rots, &mut prior)?;
            done += m as u64;
            report(progress, "mean", done, total)?;
        }
    }
    for v in prior.iter_mut() {
        *v *= 0.5;
    }
    Ok(Accumulators {
        n,
        a,
        b,
        prior_denominator: prior,
    })
}

/// Mean over the rounded-radius shells `0..count` of `values` on an `n³` grid.
fn shell_means(values: &[f64], n: usize, count: usize) -> Vec<f64> {
    // The shell index has exactly n³ entries, so this cannot fail.
    radial_mean(values, &shell_index_3d(n), count).unwrap_or_else(|_| vec![0.0; count])
}

/// Centered coordinate of index `i` on an axis of length `n`.
fn coord(i: usize, n: usize) -> f64 {
    i as f64 - (n / 2) as f64
}

/// `1/τ` as the regularized denominator adds it at one voxel (§3.2 step 1, RECOVAR's
/// `adjust_regularization_relion_style`): `1/(s³·τ)` for a usable prior, `1/(0.001·a)` where
/// the prior vanishes but the data weight `a` does not, and 0 where both vanish. `s3` is the
/// cube of the oversampling factor (the prior lives on the N grid, the weights on the
/// oversampled one).
#[inline]
pub(crate) fn inverse_prior(tau: f64, a: f64, s3: f64) -> f64 {
    if tau > 1e-20 {
        1.0 / (s3 * tau)
    } else if a > 1e-20 {
        1.0 / (0.001 * a)
    } else {
        0.0
    }
}

/// The shell floors of the regularized denominator from its shell means (shells
/// `0..nv/2 − 1`): a thousandth of each mean; voxels in later shells use the last floor.
pub(crate) fn denominator_floors(shell_means: &[f64]) -> Vec<f64> {
    shell_means.iter().map(|v| v / 1000.0).collect()
}

/// The regularized denominator of §3.2 step 1 on an `nv³` grid oversampled `upsampling`
/// times (`nv = upsampling·N`): `A' = A + inverse_prior(τ_up)` with the per-shell prior `tau`
/// (N-grid shells, the last value extended) read at shell `round(|k|/s)`, then floored at
/// `shell_mean(A')/1000` per shell and at 1e-16. `tau = None` only floors (the unregularized
/// estimate, and the CTF weights of the variance, §5.2).
pub fn regularized_denominator(
    a: &[f64],
    nv: usize,
    upsampling: usize,
    tau: Option<&[f64]>,
) -> Result<Vec<f64>> {
    let len = nv * nv * nv;
    if upsampling == 0 || nv < 4 || a.len() != len {
        return Err(Error::invalid(format!(
            "regularized denominator: {} values for a {nv}³ grid oversampled {upsampling}×",
            a.len()
        )));
    }
    let s = upsampling as f64;
    let s3 = s * s * s;
    let mut reg: Vec<f64> = a.to_vec();
    if let Some(tau) = tau {
        if tau.is_empty() {
            return Err(Error::invalid("empty prior"));
        }
        // Plane by plane in parallel: every voxel is independent.
        reg.par_chunks_mut(nv * nv)
            .zip(a.par_chunks(nv * nv))
            .enumerate()
            .for_each(|(z, (plane, aplane))| {
                for y in 0..nv {
                    for x in 0..nv {
                        let i = y * nv + x;
                        let r =
                            (coord(x, nv).powi(2) + coord(y, nv).powi(2) + coord(z, nv).powi(2))
                                .sqrt();
                        let shell = ((r / s).round() as usize).min(tau.len() - 1);
                        plane[i] += inverse_prior(tau[shell], aplane[i], s3);
                    }
                }
            });
    }
    // Floor at 1/1000 of the shell average (shells 0..nv/2−2; beyond: the last one).
    let count = nv / 2 - 1;
    let avg = denominator_floors(&shell_means(&reg, nv, count));
    let shells = shell_index_3d(nv);
    reg.par_iter_mut()
        .zip(shells.par_iter())
        .for_each(|(r, &sh)| {
            let floor = avg[(sh as usize).min(count - 1)];
            *r = r.max(floor).max(EPSILON);
        });
    Ok(reg)
}

/// How [`post_process_with`] turns accumulators into a volume.
#[derive(Clone, Copy, Debug)]
pub struct PostProcessOptions<'a> {
    /// Oversampling of the accumulator grid: 2 for the mean (2N grid), 1 for covariance
    /// columns (N grid).
    pub upsampling: usize,
    /// Per-shell prior on the N grid (N/2 − 1 shells, the last extended), or `None` for the
    /// unregularized estimate.
    pub tau: Option<&'a [f64]>,
    /// Real-space mask multiplied in after the spherical mask (covariance columns with
    /// `use_mask_in_fsc`), `N³`.
    pub volume_mask: Option<&'a [f32]>,
    /// Keep the imaginary part of the real-space volume. The mean is real (its spectrum is
    /// Hermitian) and drops it; a covariance column `Σ[:, ξ]` is the spectrum of a complex
    /// volume and must keep it.
    pub complex: bool,
    /// Skip the soft spherical mask and the gridding correction (steps 4 and 6): the
    /// kernel-regression candidates of the cross-validation are compared raw (§7.4).
    pub raw: bool,
    /// Skip step 7 (the forward DFT): the returned spectrum is empty.
    pub real_only: bool,
}

/// Post-process accumulators into a volume (§3.2). `tau` is a per-shell prior on the N grid
/// (length N/2 − 1; shells beyond use the last value), or `None` for the unregularized
/// estimate. Returns the real-space `n³` volume and its centered spectrum. This is the mean's
/// 2N-grid form of [`post_process_with`].
pub fn post_process(
    a: &[f64],
    b: &[Complex<f64>],
    n: usize,
    tau: Option<&[f64]>,
) -> Result<(Vec<f32>, Vec<Complex<f32>>)> {
    post_process_with(
        a,
        b,
        n,
        &PostProcessOptions {
            upsampling: 2,
            tau,
            volume_mask: None,
            complex: false,
            raw: false,
            real_only: false,
        },
    )
}

/// RECOVAR's `post_process_from_filter_v2` on an `s·N` grid (`s = opts.upsampling`):
/// 1. `A' =` [`regularized_denominator`]`(A, sN, s, τ)`;
/// 2. `V = B · 1[|k| ≤ sN/2 − 1] / A'`;
/// 3. inverse 3-D DFT (size `sN`) and crop of the central `N³` (the real part only unless
///    `opts.complex`);
/// 4. RELION's soft spherical mask (radius N/2, cosine width 3), real and imaginary parts
///    alike (the mask and its background average are linear);
/// 5. multiplication by `opts.volume_mask` when given;
/// 6. gridding correction for the trilinear kernel on an `s`-times oversampled grid;
/// 7. forward DFT.
///
/// Returns the real part of the real-space volume and the centered spectrum.
pub fn post_process_with(
    a: &[f64],
    b: &[Complex<f64>],
    n: usize,
    opts: &PostProcessOptions<'_>,
) -> Result<(Vec<f32>, Vec<Complex<f32>>)> {
    let s = opts.upsampling;
    if s == 0 || n < 2 || !n.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "post-processing: volume side {n} must be even and the upsampling {s} ≥ 1"
        )));
    }
    let nv = s * n;
    let len = nv * nv * nv;
    if a.len() != len || b.len() != len {
        return Err(Error::invalid(format!(
            "post-processing expects {nv}³-grid accumulators of {len} values, got {} and {}",
            a.len(),
            b.len()
        )));
    }
    if let Some(m) = opts.volume_mask {
        if m.len() != n * n * n {
            return Err(Error::invalid(format!(
                "post-processing: the volume mask has {} values, expected {n}³",
                m.len()
            )));
        }
    }
    let den = regularized_denominator(a, nv, s, opts.tau)?;
    let max_r = (nv / 2 - 1) as f64 + 1e-7;
    let mut vol = vec![Complex::new(0.0f32, 0.0); len];
    vol.par_chunks_mut(nv * nv)
        .enumerate()
        .for_each(|(z, plane)| {
            for y in 0..nv {
                for x in 0..nv {
                    let i = (z * nv + y) * nv + x;
                    let r =
                        (coord(x, nv).powi(2) + coord(y, nv).powi(2) + coord(z, nv).powi(2)).sqrt();
                    if r < max_r {
                        let v = b[i] / den[i];
                        plane[y * nv + x] = Complex::new(v.re as f32, v.im as f32);
                    }
                }
            }
        });
    // Back to real space on the sN grid, crop the central N³.
    Fft3::<f32>::new(nv).inverse(&mut vol);
    let off = (nv - n) / 2;
    let mut re = vec![0.0f32; n * n * n];
    let mut im = if opts.complex {
        vec![0.0f32; n * n * n]
    } else {
        Vec::new()
    };
    for z in 0..n {
        for y in 0..n {
            let src = ((z + off) * nv + y + off) * nv + off;
            let dst = (z * n + y) * n;
            for x in 0..n {
                re[dst + x] = vol[src + x].re;
                if opts.complex {
                    im[dst + x] = vol[src + x].im;
                }
            }
        }
    }
    drop(vol);
    let parts: Vec<&mut Vec<f32>> = if opts.complex {
        vec![&mut re, &mut im]
    } else {
        vec![&mut re]
    };
    for part in parts {
        if !opts.raw {
            soft_mask_outside_map(part, n, (n / 2) as f64, 3.0)?;
        }
        if let Some(m) = opts.volume_mask {
            for (v, w) in part.iter_mut().zip(m) {
                *v *= w;
            }
        }
        if !opts.raw {
            gridding_correct(part, n, s as f64, GriddingKernel::Trilinear)?;
        }
    }
    let spec = if opts.real_only {
        Vec::new()
    } else if opts.complex {
        let mut c: Vec<Complex<f32>> = re
            .iter()
            .zip(&im)
            .map(|(&r, &i)| Complex::new(r, i))
            .collect();
        Fft3::<f32>::new(n).forward(&mut c);
        c
    } else {
        Fft3::<f32>::new(n).forward_real_vec(&re)
    };
    Ok((re, spec))
}

/// The Wiener prior per shell (§3.3) from the unregularized halves' FSC and the prior
/// denominator: `τ(r) = SNR(r)/shell_mean(d)(r)`, FSC clamped to [0.001, 0.999].
pub fn fsc_prior(fsc_curve: &[f64], prior_denominator: &[f64], n: usize) -> Vec<f64> {
    let count = n / 2 - 1;
    let bottom = shell_means(prior_denominator, n, count);
    fsc_curve
        .iter()
        .take(count)
        .enumerate()
        .map(|(r, &f)| {
            let f = f.clamp(FSC_ZERO_THRESHOLD, 1.0 - FSC_ZERO_THRESHOLD);
            let snr = f / (1.0 - f);
            if bottom[r] > 0.0 {
                snr / bottom[r]
            } else {
                EPSILON
            }
        })
        .collect()
}

/// One halfset's volume, in real space and as a centered spectrum.
#[derive(Clone, Debug)]
pub struct Volume {
    pub real: Vec<f32>,
    pub spectrum: Vec<Complex<f32>>,
}

impl Volume {
    fn from_pair((real, spectrum): (Vec<f32>, Vec<Complex<f32>>)) -> Self {
        Volume { real, spectrum }
    }

    fn average(a: &Volume, b: &Volume) -> Volume {
        Volume {
            real: a
                .real
                .iter()
                .zip(&b.real)
                .map(|(x, y)| 0.5 * (x + y))
                .collect(),
            spectrum: a
                .spectrum
                .iter()
                .zip(&b.spectrum)
                .map(|(x, y)| (x + y) * 0.5)
                .collect(),
        }
    }

    fn negate(&mut self) {
        self.real.iter_mut().for_each(|v| *v = -*v);
        self.spectrum.iter_mut().for_each(|v| *v = -*v);
    }
}

/// Everything the mean stage produces.
pub struct MeanEstimate {
    /// Unregularized halfset means (written as mean_half{1,2}_unfil.mrc).
    pub halves_unreg: [Volume; 2],
    /// Wiener-regularized halfset means (used to build masks from half maps).
    pub halves_reg: [Volume; 2],
    /// The combined mean (mean.mrc).
    pub combined: Volume,
    /// FSC between the unregularized halves, shells 0..N/2−2.
    pub fsc: Vec<f64>,
    /// The prior per shell.
    pub prior: Vec<f64>,
    /// `(A_0 + A_1)/2` on the 2N grid: the CTF²/σ² weight per voxel, kept for later stages.
    pub lhs: Vec<f32>,
    /// True when the automatic sign check flipped the data.
    pub flipped: bool,
}

/// The real-space sign check of §1.7: Σ m³ inside the ball of radius N/3 (`< 0` means the
/// density looks inverted).
pub fn sign_statistic(real: &[f32], n: usize) -> f64 {
    let r = (n / 3) as f64 + 1e-7;
    let mut s = 0.0;
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let d = (coord(x, n).powi(2) + coord(y, n).powi(2) + coord(z, n).powi(2)).sqrt();
                if d < r {
                    s += (real[(z * n + y) * n + x] as f64).powi(3);
                }
            }
        }
    }
    s
}

/// Estimate the mean: accumulate, post-process both halves without a prior, derive the
/// prior from their FSC, post-process again with it, combine, and apply the sign check
/// (`--uninvert-data automatic` flips the dataset's sign and the means when Σ m³ < 0).
pub fn estimate_mean(
    ds: &mut Dataset,
    backend: &dyn Backend,
    noise_var: f64,
    mean_fn: MeanFn,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<MeanEstimate> {
    let acc = accumulate(ds, backend, noise_var, batch_size, progress)?;
    let n = acc.n;
    let unreg = [
        Volume::from_pair(post_process(&acc.a[0], &acc.b[0], n, None)?),
        Volume::from_pair(post_process(&acc.a[1], &acc.b[1], n, None)?),
    ];
    let fsc_curve = fsc(&unreg[0].spectrum, &unreg[1].spectrum, n, false)?;
    let prior = fsc_prior(&fsc_curve, &acc.prior_denominator, n);
    let reg = [
        Volume::from_pair(post_process(&acc.a[0], &acc.b[0], n, Some(&prior))?),
        Volume::from_pair(post_process(&acc.a[1], &acc.b[1], n, Some(&prior))?),
    ];
    let mut combined = match mean_fn {
        MeanFn::Triangular => Volume::average(&unreg[0], &unreg[1]),
        MeanFn::TriangularReg => Volume::average(&reg[0], &reg[1]),
    };
    let lhs: Vec<f32> = acc.a[0]
        .iter()
        .zip(&acc.a[1])
        .map(|(x, y)| (0.5 * (x + y)) as f32)
        .collect();
    let mut halves_unreg = unreg;
    let mut halves_reg = reg;
    let negative = sign_statistic(&combined.real, n) < 0.0;
    let mut flipped = false;
    match ds.uninvert() {
        crate::dataset::Uninvert::Automatic if negative => {
            tracing::warn!(
                "the mean's density is negative (Σ m³ < 0 inside radius N/3): flipping the sign \
                 of the data (uninvert-data = true). Set --uninvert-data false to prevent this."
            );
            ds.set_data_sign(-ds.data_sign());
            for v in halves_unreg.iter_mut().chain(halves_reg.iter_mut()) {
                v.negate();
            }
            combined.negate();
            flipped = true;
        }
        crate::dataset::Uninvert::Automatic => {
            tracing::info!("the mean's density is positive: data used as they are")
        }
        _ if negative => tracing::warn!(
            "the mean's density is negative (Σ m³ < 0): the data probably need inverting \
             (--uninvert-data true or automatic)"
        ),
        _ => {}
    }
    Ok(MeanEstimate {
        halves_unreg,
        halves_reg,
        combined,
        fsc: fsc_curve,
        prior,
        lhs,
        flipped,
    })
}
