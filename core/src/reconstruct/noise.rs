//! Noise estimation (algorithms.md §2). Noise variances live on the unnormalized-DFT scale:
//! white real-space noise of variance s² has `E|Y(k)|² = D²·s²`. Radial profiles have
//! `N/2 − 1` entries (shells 0..N/2−2); beyond them the last value applies.
//!
//! - [`initial_noise`] (§2.1): the median over pixels of the mean power spectrum of up to
//!   10 000 images of halfset 0 — signal plus noise, an over-estimate, used only to weight
//!   the mean.
//! - [`estimate_noise`] (§2.2–2.4), after the mean: one pass over the images computes
//!   * the power outside the per-image tight masks of the dilated mask (§2.2: the masked
//!     power spectrum normalised by the mask's energy),
//!   * the same by least-squares deconvolution of the mask (§2.3, used for `.mrc` masks),
//!   * an upper bound from the residual `T y − C·P μ` inside the tight masks (§2.4:
//!     noise plus signal variance),
//!
//!   and combines them: `σ²(r) = min(outside(r), upper bound(r))`; `white` takes the
//!   median of the outside profile; negative values become `image_PS(r)/10`.
//!
//! The deconvolution: a masked image `a = y·w` has spectrum `A = (Y ⊛ Ŵ)/D²`, so for
//! stationary noise of spectrum `S`, `E|A|² = S ⊛ K` with `K = |Ŵ|²/D⁴`. Summing over images,
//! the least-squares `S` is `F⁻¹[ Σ F(|A_i|²)·conj(F(K_i)) / Σ |F(K_i)|² ]` (`F` a DFT of
//! these centred arrays; convolution with a kernel centred at D/2 is a product of centred
//! transforms).

use num_complex::Complex;
use rayon::prelude::*;

use super::tight_mask::TightMasker;
use crate::backend::Backend;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::forward::{Interp, SliceGeometry};
use crate::fourier::{radial_mean, shell_index_2d, window_mask_2d, Fft2};
use crate::progress::{report, Progress};
use crate::rng::Rng;

/// `--noise-model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NoiseModel {
    /// One radial profile for all images (default).
    #[default]
    Radial,
    /// A constant: the median of the outside-mask profile.
    White,
}

impl std::str::FromStr for NoiseModel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "radial" => Ok(NoiseModel::Radial),
            "white" => Ok(NoiseModel::White),
            _ => Err(Error::invalid(format!(
                "--noise-model `{s}`: expected radial or white"
            ))),
        }
    }
}

/// The §2.1 estimate.
#[derive(Clone, Debug)]
pub struct InitialNoise {
    /// Median over pixels of the mean power spectrum (`noise_var_from_hf`).
    pub scalar: f64,
    /// Its radial average (N/2 − 1 shells).
    pub radial_ps: Vec<f64>,
    /// How many images were used.
    pub images_used: usize,
}

/// Number of shells of a radial noise profile for box `d`.
pub fn n_profile_shells(d: usize) -> usize {
    d / 2 - 1
}

/// §2.1 on halfset 0, sub-sampled to at most `max_images` images chosen with `seed`.
pub fn initial_noise(
    ds: &Dataset,
    backend: &dyn Backend,
    max_images: usize,
    seed: u64,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<InitialNoise> {
    let d = ds.box_size();
    let npix = d * d;
    let mut pick: Vec<usize> = ds.halfsets()[0].clone();
    if pick.is_empty() {
        return Err(Error::invalid("halfset 0 is empty"));
    }
    if pick.len() > max_images {
        let mut rng = Rng::new(seed ^ 0x006e_6f69_7365_6866);
        for i in 0..max_images {
            let j = i + rng.below((pick.len() - i) as u64) as usize;
            pick.swap(i, j);
        }
        pick.truncate(max_images);
        pick.sort_unstable();
    }
    let mut sum = vec![0.0f64; npix];
    let zero = vec![[0.0f32; 2]; batch_size.max(1)];
    let total = pick.len() as u64;
    report(progress, "noise (initial)", 0, total)?;
    let mut done = 0;
    for chunk in pick.chunks(batch_size.max(1)) {
        let m = chunk.len();
        let mut real = vec![0.0f32; m * npix];
        ds.read_images(chunk, &mut real)?;
        let mut spec = vec![Complex::new(0.0f32, 0.0); m * npix];
        backend.images_to_spectra(&real, d, &zero[..m], &mut spec)?;
        for img in spec.chunks_exact(npix) {
            for (s, v) in sum.iter_mut().zip(img) {
                *s += v.norm_sqr() as f64;
            }
        }
        done += m as u64;
        report(progress, "noise (initial)", done, total)?;
    }
    let mean_ps: Vec<f64> = sum.iter().map(|s| s / pick.len() as f64).collect();
    let mut sorted = mean_ps.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = if npix % 2 == 1 {
        sorted[npix / 2]
    } else {
        0.5 * (sorted[npix / 2 - 1] + sorted[npix / 2])
    };
    let radial_ps = radial_mean(&mean_ps, &shell_index_2d(d), n_profile_shells(d))?;
    Ok(InitialNoise {
        scalar: median,
        radial_ps,
        images_used: pick.len(),
    })
}

/// Everything §2.2–2.4 measure, and the profile to use.
#[derive(Clone, Debug)]
pub struct NoiseEstimate {
    /// The noise model to use from here on (`noise_var_used`), N/2 − 1 shells.
    pub used: Vec<f64>,
    /// Outside-mask estimate that entered the minimum (§2.2, or §2.3 for `.mrc` masks).
    pub outside: Vec<f64>,
    /// §2.2: mean over images of the masked power spectrum normalised by the mask energy.
    pub masked_image_ps: Vec<f64>,
    /// §2.3: the deconvolution estimate.
    pub outside_deconvolved: Vec<f64>,
    /// §2.4: upper bound from the residual inside the masks.
    pub upper_bound: Vec<f64>,
    /// Median of the outside profile (`white_noise_var_outside_mask`).
    pub white_outside: f64,
    /// Mean radial power spectrum of the (shifted) images (`image_PS`).
    pub image_ps: Vec<f64>,
}

/// Running sums of the least-squares deconvolution.
struct Deconvolution {
    top: Vec<Complex<f64>>,
    bot: Vec<f64>,
}

impl Deconvolution {
    fn new(npix: usize) -> Self {
        Deconvolution {
            top: vec![Complex::new(0.0, 0.0); npix],
            bot: vec![0.0; npix],
        }
    }

    /// Add one image: `spec` the (shifted) image spectrum, `w` its real-space weight.
    fn add(&mut self, spec: &[Complex<f32>], w: &[f32], fft: &Fft2<f32>, d: usize) {
        let (ft_p, ft_k) = deconvolution_terms(spec, w, fft, d);
        for i in 0..d * d {
            let (p, k) = (ft_p[i], ft_k[i]);
            let (p, k) = (
                Complex::new(p.re as f64, p.im as f64),
                Complex::new(k.re as f64, k.im as f64),
            );
            self.top[i] += p * k.conj();
            self.bot[i] += k.norm_sqr();
        }
    }

    fn merge(&mut self, other: &Deconvolution) {
        for i in 0..self.top.len() {
            self.top[i] += other.top[i];
            self.bot[i] += other.bot[i];
        }
    }

    /// The estimated 2-D noise spectrum.
    fn solve(&self, fft: &Fft2<f32>, d: usize) -> Vec<f64> {
        let max_bot = self.bot.iter().cloned().fold(0.0, f64::max);
        let ratio: Vec<Complex<f32>> = self
            .top
            .iter()
            .zip(&self.bot)
            .map(|(t, &b)| {
                if b > 1e-12 * max_bot && b > 0.0 {
                    let v = t / b;
                    Complex::new(v.re as f32, v.im as f32)
                } else {
                    Complex::new(0.0, 0.0)
                }
            })
            .collect();
        let mut out = vec![0.0f32; d * d];
        fft.inverse_real(&ratio, &mut out);
        out.iter().map(|&v| v as f64).collect()
    }
}

/// `F(|A|²)` and `F(K)` for one image (see the module docs).
fn deconvolution_terms(
    spec: &[Complex<f32>],
    w: &[f32],
    fft: &Fft2<f32>,
    d: usize,
) -> (Vec<Complex<f32>>, Vec<Complex<f32>>) {
    let npix = d * d;
    let d4 = (npix * npix) as f32;
    let mut real = vec![0.0f32; npix];
    fft.inverse_real(spec, &mut real);
    for (v, m) in real.iter_mut().zip(w) {
        *v *= m;
    }
    let mut a = vec![Complex::new(0.0f32, 0.0); npix];
    fft.forward_real(&real, &mut a);
    let p: Vec<f32> = a.iter().map(|c| c.norm_sqr()).collect();
    let mut wf = vec![Complex::new(0.0f32, 0.0); npix];
    fft.forward_real(w, &mut wf);
    let k: Vec<f32> = wf.iter().map(|c| c.norm_sqr() / d4).collect();
    let mut ft_p = vec![Complex::new(0.0f32, 0.0); npix];
    fft.forward_real(&p, &mut ft_p);
    let mut ft_k = vec![Complex::new(0.0f32, 0.0); npix];
    fft.forward_real(&k, &mut ft_k);
    (ft_p, ft_k)
}

/// Images per group of the noise sums (see `estimate_noise`).
const SUB_CHUNK: usize = 16;

/// Partial sums of a group of images, merged in order (deterministic).
struct Partial {
    outside: Deconvolution,
    inside: Deconvolution,
    masked_ps: Vec<f64>,
    image_ps: Vec<f64>,
    images_with_outside: usize,
}

impl Partial {
    fn new(npix: usize, nsh: usize) -> Self {
        Partial {
            outside: Deconvolution::new(npix),
            inside: Deconvolution::new(npix),
            masked_ps: vec![0.0; nsh],
            image_ps: vec![0.0; nsh],
            images_with_outside: 0,
        }
    }
}

/// §2.2–2.4 in one pass over the images (see the module docs). `mean` is the combined mean's
/// centered N³ spectrum, `dilated_mask` the real-space dilated mask.
#[allow(clippy::too_many_arguments)]
pub fn estimate_noise(
    ds: &Dataset,
    backend: &dyn Backend,
    mean: &[Complex<f32>],
    dilated_mask: &[f32],
    model: NoiseModel,
    deconvolve_outside: bool,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<NoiseEstimate> {
    let rotations = ds
        .rotations()
        .ok_or_else(|| Error::invalid("noise estimation needs poses"))?;
    let ctf_params = ds
        .ctf()
        .ok_or_else(|| Error::invalid("noise estimation needs CTF parameters"))?;
    let d = ds.box_size();
    let npix = d * d;
    let nsh = n_profile_shells(d);
    let shells = shell_index_2d(d);
    let masker = TightMasker::new(dilated_mask, d)?;
    let fft = Fft2::<f32>::new(d);
    let geom = SliceGeometry::new(d, d)?;
    let window = window_mask_2d(d, 0.85, 0.99)?;
    let soft10 = super::tight_mask::soft_kernel_spectrum(d, 10, &fft);
    let soft5 = super::tight_mask::soft_kernel_spectrum(d, 5, &fft);
    let soften = |hard: &[f32], kernel: &[Complex<f32>]| -> Vec<f32> {
        let mut s = vec![Complex::new(0.0f32, 0.0); npix];
        fft.forward_real(hard, &mut s);
        for (a, k) in s.iter_mut().zip(kernel) {
            *a *= *k;
        }
        let mut out = vec![0.0f32; npix];
        fft.inverse_real(&s, &mut out);
        out.iter().map(|v| v.clamp(0.0, 1.0)).collect()
    };
    let mut total = Partial::new(npix, nsh);
    let n = ds.len();
    report(progress, "noise", 0, n as u64)?;
    // Batches start at multiples of SUB_CHUNK so the groups are fixed by image position.
    let batch = batch_size.max(1).div_ceil(SUB_CHUNK) * SUB_CHUNK;
    for start in (0..n).step_by(batch) {
        let pos: Vec<usize> = (start..(start + batch).min(n)).collect();
        let m = pos.len();
        let mut real = vec![0.0f32; m * npix];
        ds.read_images(&pos, &mut real)?;
        let shifts: Vec<[f32; 2]> = pos.iter().map(|&p| ds.translations()[p]).collect();
        let rots: Vec<[f32; 9]> = pos.iter().map(|&p| rotations[p]).collect();
        let params: Vec<_> = pos.iter().map(|&p| ctf_params[p]).collect();
        let mut spec = vec![Complex::new(0.0f32, 0.0); m * npix];
        backend.images_to_spectra(&real, d, &shifts, &mut spec)?;
        let mut c = vec![0.0f32; m * npix];
        backend.ctf(&params, d, ds.voxel_size(), &mut c)?;
        let mut proj = vec![Complex::new(0.0f32, 0.0); m * npix];
        backend.slice(mean, &geom, Interp::Trilinear, &rots, &mut proj)?;
        // One projection of the mask per image; both hard masks are thresholds of it.
        let projections = masker.projections(backend, &rots)?;
        let thr = masker.threshold();
        drop(real);
        let add_image = |p: &mut Partial, i: usize| {
            let sl = i * npix..(i + 1) * npix;
            let y = &spec[sl.clone()];
            // Power spectrum of the image itself.
            let ps: Vec<f64> = y.iter().map(|v| v.norm_sqr() as f64).collect();
            if let Ok(r) = radial_mean(&ps, &shells, nsh) {
                for (a, b) in p.image_ps.iter_mut().zip(&r) {
                    *a += b;
                }
            }
            // §2.2: outside the mask (soften 10), normalised by the mask energy.
            let hard: Vec<f32> = projections[sl.clone()]
                .iter()
                .map(|&v| if v > thr { 1.0 } else { 0.0 })
                .collect();
            let w10: Vec<f32> = soften(&hard, &soft10).iter().map(|m| 1.0 - m).collect();
            let energy: f64 = w10.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / npix as f64;
            if energy > 1e-6 {
                let mut real_img = vec![0.0f32; npix];
                fft.inverse_real(y, &mut real_img);
                for (v, w) in real_img.iter_mut().zip(&w10) {
                    *v *= w;
                }
                let mut z = vec![Complex::new(0.0f32, 0.0); npix];
                fft.forward_real(&real_img, &mut z);
                let zp: Vec<f64> = z.iter().map(|v| v.norm_sqr() as f64 / energy).collect();
                if let Ok(r) = radial_mean(&zp, &shells, nsh) {
                    for (a, b) in p.masked_ps.iter_mut().zip(&r) {
                        *a += b;
                    }
                    p.images_with_outside += 1;
                }
            }
            // §2.3: outside the mask (soften 5), deconvolved.
            if deconvolve_outside {
                let w5: Vec<f32> = soften(&hard, &soft5).iter().map(|m| 1.0 - m).collect();
                p.outside.add(y, &w5, &fft, d);
            }
            // §2.4: the residual inside the mask (soften 5, with the image window).
            let hard_window: Vec<f32> = hard.iter().zip(&window).map(|(h, w)| h * w).collect();
            let m5 = soften(&hard_window, &soft5);
            let resid: Vec<Complex<f32>> = y
                .iter()
                .zip(&proj[sl.clone()])
                .zip(&c[sl.clone()])
                .map(|((yv, pv), cv)| yv - pv * *cv)
                .collect();
            p.inside.add(&resid, &m5, &fft, d);
        };
        // Images are summed in fixed groups of SUB_CHUNK (by position in the dataset, since
        // batches start at multiples of it), groups in parallel, then merged in order: the
        // sums do not depend on the thread count or the batch size, and memory stays at one
        // partial per group.
        let parts: Vec<Partial> = (0..m)
            .collect::<Vec<_>>()
            .par_chunks(SUB_CHUNK)
            .map(|group| {
                let mut p = Partial::new(npix, nsh);
                for &i in group {
                    add_image(&mut p, i);
                }
                p
            })
            .collect();
        for p in &parts {
            total.outside.merge(&p.outside);
            total.inside.merge(&p.inside);
            for r in 0..nsh {
                total.masked_ps[r] += p.masked_ps[r];
                total.image_ps[r] += p.image_ps[r];
            }
            total.images_with_outside += p.images_with_outside;
        }
        report(progress, "noise", (start + m) as u64, n as u64)?;
    }
    let image_ps: Vec<f64> = total.image_ps.iter().map(|v| v / n as f64).collect();
    let masked_image_ps: Vec<f64> = if total.images_with_outside > 0 {
        total
            .masked_ps
            .iter()
            .map(|v| v / total.images_with_outside as f64)
            .collect()
    } else {
        vec![0.0; nsh]
    };
    let to_profile = |s2d: Vec<f64>| radial_mean(&s2d, &shells, nsh);
    let upper_bound = to_profile(total.inside.solve(&fft, d))?;
    let outside_deconvolved = if deconvolve_outside {
        to_profile(total.outside.solve(&fft, d))?
    } else {
        vec![0.0; nsh]
    };
    let no_outside = total.images_with_outside == 0;
    let outside = if no_outside {
        tracing::warn!(
            "the dilated mask covers every image: no solvent to measure noise outside it; \
             using the upper bound from inside the mask"
        );
        upper_bound.clone()
    } else if deconvolve_outside {
        outside_deconvolved.clone()
    } else {
        masked_image_ps.clone()
    };
    let mut sorted = outside.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let white_outside = if sorted.is_empty() {
        0.0
    } else if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2])
    };
    let bounded: Vec<f64> = outside
        .iter()
        .zip(&upper_bound)
        .map(|(o, u)| o.min(*u))
        .collect();
    let mut used = match model {
        NoiseModel::Radial => bounded,
        NoiseModel::White => vec![white_outside; nsh],
    };
    if used.iter().any(|&v| v < 0.0) {
        tracing::info!(
            "negative noise variance estimated: using the image power spectrum / 10 there"
        );
    }
    for (u, ps) in used.iter_mut().zip(&image_ps) {
        if *u < 0.0 {
            *u = ps / 10.0;
        }
    }
    Ok(NoiseEstimate {
        used,
        outside,
        masked_image_ps,
        outside_deconvolved,
        upper_bound,
        white_outside,
        image_ps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deconvolution_recovers_a_coloured_noise_spectrum() {
        // Stationary noise with spectrum S(r) = D²·σ²·(1 + 3·exp(−r/4)), masked by random
        // discs: the least-squares deconvolution recovers S.
        let d = 32;
        let npix = d * d;
        let fft = Fft2::<f32>::new(d);
        let shells = shell_index_2d(d);
        let profile = |r: f64| (npix as f64) * 0.5 * (1.0 + 3.0 * (-r / 4.0).exp());
        let amp: Vec<f32> = shells
            .iter()
            .map(|&s| (profile(s as f64) / npix as f64).sqrt() as f32)
            .collect();
        let mut dec = Deconvolution::new(npix);
        let mut rng = Rng::new(9);
        for i in 0..400 {
            let white: Vec<f32> = (0..npix).map(|_| rng.normal() as f32).collect();
            let mut y = vec![Complex::new(0.0f32, 0.0); npix];
            fft.forward_real(&white, &mut y);
            for (v, a) in y.iter_mut().zip(&amp) {
                *v *= *a;
            }
            // A disc mask of random radius and centre.
            let (cx, cy) = (16.0 + rng.normal() * 2.0, 16.0 + rng.normal() * 2.0);
            let rad = 6.0 + (i % 5) as f64;
            let w: Vec<f32> = (0..npix)
                .map(|p| {
                    let (x, y) = ((p % d) as f64, (p / d) as f64);
                    if ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() > rad {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            dec.add(&y, &w, &fft, d);
        }
        let s = radial_mean(&dec.solve(&fft, d), &shells, n_profile_shells(d)).unwrap();
        for (r, v) in s.iter().enumerate().skip(1) {
            let want = profile(r as f64);
            assert!((v - want).abs() < 0.1 * want, "shell {r}: {v} vs {want}");
        }
    }
}
