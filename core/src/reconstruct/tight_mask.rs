//! Per-image tight masks (algorithms.md §4.5): the 3-D mask projected to each image's view,
//! thresholded and softened, so images can be masked in real space consistently with the
//! volume mask. Used by the noise estimators now and by the covariance stage next.
//!
//! For a pose `R`: the real-space mask is zero-padded to `2N` (so its projection does not
//! wrap around), its Fourier volume is sliced (trilinear, on the padded grid) to a `2D × 2D`
//! central section, inverse-transformed to the line integral of the mask along the viewing
//! direction and cropped to `D × D`; then `M = (projection > threshold) · window`, with the
//! threshold `4·N/128` voxels of path length (RECOVAR's `volume_mask_threshold`), optionally
//! convolved with a normalised soft disc (`soften` = its radius in pixels).
//!
//! Masks are built in the *centred* frame: data are phase-shifted by their translations
//! before masking, so the masks need no shift.
//!
//! Deliberate difference: RECOVAR's soft kernel measures distances from a centre offset by
//! (+1, +1) (an EMDA leftover that shifts the softened mask by one pixel diagonally); ours is
//! centred.

use num_complex::Complex;
use rayon::prelude::*;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forward::{Interp, SliceGeometry};
use crate::fourier::{Fft2, Fft3};

/// Makes per-image masks for one volume mask.
pub struct TightMasker {
    d: usize,
    /// Fourier volume of the mask zero-padded to 2N.
    padded_ft: Vec<Complex<f32>>,
    geom: SliceGeometry,
    fft_big: Fft2<f32>,
    fft: Fft2<f32>,
    threshold: f32,
}

impl TightMasker {
    /// Prepare the masker for a real-space `n³` mask (values in [0, 1]) and `n × n` images.
    pub fn new(volume_mask: &[f32], n: usize) -> Result<Self> {
        if n == 0 || !n.is_multiple_of(2) || volume_mask.len() != n * n * n {
            return Err(Error::invalid(format!(
                "tight masks need an even cubic mask; got {} values for n = {n}",
                volume_mask.len()
            )));
        }
        let nv = 2 * n;
        let off = n / 2;
        let mut padded = vec![Complex::new(0.0f32, 0.0); nv * nv * nv];
        for z in 0..n {
            for y in 0..n {
                let src = (z * n + y) * n;
                let dst = ((z + off) * nv + y + off) * nv + off;
                for x in 0..n {
                    padded[dst + x] = Complex::new(volume_mask[src + x], 0.0);
                }
            }
        }
        Fft3::<f32>::new(nv).forward(&mut padded);
        Ok(TightMasker {
            d: n,
            padded_ft: padded,
            geom: SliceGeometry::new(nv, nv)?,
            fft_big: Fft2::new(nv),
            fft: Fft2::new(n),
            threshold: (4.0 * n as f64 / 128.0) as f32,
        })
    }

    /// The line integrals of the mask along each pose's viewing direction (`n·D²` values).
    /// Works through the poses in chunks so the `2D × 2D` intermediate images stay small
    /// whatever the batch size.
    pub fn projections(&self, backend: &dyn Backend, rotations: &[[f32; 9]]) -> Result<Vec<f32>> {
        const CHUNK: usize = 64;
        let d = self.d;
        let big = 2 * d;
        let off = d / 2;
        let mut out = vec![0.0f32; rotations.len() * d * d];
        let mut spec = Vec::new();
        for (rots, dst) in rotations.chunks(CHUNK).zip(out.chunks_mut(CHUNK * d * d)) {
            spec.resize(rots.len() * big * big, Complex::new(0.0f32, 0.0));
            backend.slice(
                &self.padded_ft,
                &self.geom,
                Interp::Trilinear,
                rots,
                &mut spec,
            )?;
            spec.par_chunks_exact(big * big)
                .zip(dst.par_chunks_exact_mut(d * d))
                .for_each(|(s, o)| {
                    let mut real = vec![0.0f32; big * big];
                    self.fft_big.inverse_real(s, &mut real);
                    for r in 0..d {
                        o[r * d..(r + 1) * d].copy_from_slice(
                            &real[(r + off) * big + off..(r + off) * big + off + d],
                        );
                    }
                });
        }
        Ok(out)
    }

    /// The projection threshold, in voxels of path length (`4·N/128`).
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Per-image masks `M_i = (projection_i > threshold) · window`, then softened with a
    /// disc of radius `soften` pixels when given (`n·D²` values in [0, 1]).
    pub fn masks(
        &self,
        backend: &dyn Backend,
        rotations: &[[f32; 9]],
        window: &[f32],
        soften: Option<usize>,
    ) -> Result<Vec<f32>> {
        let d = self.d;
        if window.len() != d * d {
            return Err(Error::invalid(format!(
                "image window has {} values; {d}×{d} images need {}",
                window.len(),
                d * d
            )));
        }
        let mut m = self.projections(backend, rotations)?;
        let thr = self.threshold;
        m.par_chunks_exact_mut(d * d).for_each(|img| {
            for (v, w) in img.iter_mut().zip(window) {
                *v = if *v > thr { *w } else { 0.0 };
            }
        });
        if let Some(r) = soften {
            let kernel = soft_kernel_spectrum(d, r, &self.fft);
            m.par_chunks_exact_mut(d * d).for_each(|img| {
                let mut s = vec![Complex::new(0.0f32, 0.0); d * d];
                self.fft.forward_real(img, &mut s);
                for (a, k) in s.iter_mut().zip(&kernel) {
                    *a *= *k;
                }
                self.fft.inverse_real(&s, img);
                for v in img.iter_mut() {
                    *v = v.clamp(0.0, 1.0);
                }
            });
        }
        Ok(m)
    }
}

/// The centred spectrum of RECOVAR's soft-edged disc kernel (`make_soft_edged_kernel`):
/// box `b = 5` if `r < 3` else `2r + 1`, `r1 = b/2`, `r0 = r1 − 2`; weight 1 inside `r0`,
/// a raised cosine to 0 at `r1`; normalised to sum 1; centred at pixel (D/2, D/2), so that
/// multiplying centred spectra convolves with it.
pub fn soft_kernel_spectrum(d: usize, r: usize, fft: &Fft2<f32>) -> Vec<Complex<f32>> {
    let b = if r < 3 { 5 } else { 2 * r + 1 };
    let r1 = (b / 2) as f64;
    let r0 = r1 - 2.0;
    let c = (d / 2) as f64;
    let mut k = vec![0.0f64; d * d];
    for y in 0..d {
        for x in 0..d {
            let dist = ((x as f64 - c).powi(2) + (y as f64 - c).powi(2)).sqrt();
            k[y * d + x] = if dist < r0 {
                1.0
            } else if dist <= r1 {
                0.5 * (1.0 + (std::f64::consts::PI * (dist - r0) / (r1 - r0)).cos())
            } else {
                0.0
            };
        }
    }
    let sum: f64 = k.iter().sum();
    let kf: Vec<f32> = k.iter().map(|v| (v / sum) as f32).collect();
    let mut spec = vec![Complex::new(0.0f32, 0.0); d * d];
    fft.forward_real(&kf, &mut spec);
    spec
}

/// Apply real-space masks to image spectra: `DFT2( IDFT2(ŷ_i) · M_i )` (`n·D²` each).
pub fn apply_masks(
    spectra: &mut [Complex<f32>],
    masks: &[f32],
    d: usize,
    fft: &Fft2<f32>,
) -> Result<()> {
    if spectra.len() != masks.len() || !spectra.len().is_multiple_of(d * d) {
        return Err(Error::invalid(format!(
            "{} spectrum values and {} mask values; both must be n·{d}²",
            spectra.len(),
            masks.len()
        )));
    }
    spectra
        .par_chunks_exact_mut(d * d)
        .zip(masks.par_chunks_exact(d * d))
        .for_each(|(s, m)| {
            let mut real = vec![0.0f32; d * d];
            fft.inverse_real(s, &mut real);
            for (v, w) in real.iter_mut().zip(m) {
                *v *= w;
            }
            fft.forward_real(&real, s);
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    /// A ball of radius `r` voxels, centred.
    fn ball(n: usize, r: f64) -> Vec<f32> {
        let c = (n / 2) as f64;
        let mut v = vec![0.0f32; n * n * n];
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    let d2 =
                        (x as f64 - c).powi(2) + (y as f64 - c).powi(2) + (z as f64 - c).powi(2);
                    if d2 <= r * r {
                        v[(z * n + y) * n + x] = 1.0;
                    }
                }
            }
        }
        v
    }

    #[test]
    fn projection_of_a_ball_is_its_chord_length() {
        let n = 32;
        let m = TightMasker::new(&ball(n, 8.0), n).unwrap();
        let be = CpuBackend::new();
        let mut rng = crate::rng::Rng::new(2);
        let rots: Vec<[f32; 9]> = (0..3).map(|_| rng.rotation().map(|v| v as f32)).collect();
        let p = m.projections(&be, &rots).unwrap();
        for img in p.chunks_exact(n * n) {
            // Centre: chord through the middle ≈ 2r + 1 voxels; far corner ≈ 0.
            let centre = img[16 * n + 16];
            assert!((centre - 17.0).abs() < 1.5, "{centre}");
            assert!(img[0].abs() < 0.5, "{}", img[0]);
            // Rotation invariant for a ball.
            assert!((img[16 * n + 20] - p[16 * n + 20]).abs() < 1.5);
        }
    }

    #[test]
    fn masks_threshold_window_and_soften() {
        let n = 32;
        let m = TightMasker::new(&ball(n, 8.0), n).unwrap();
        let be = CpuBackend::new();
        let ident = [[1.0f32, 0., 0., 0., 1., 0., 0., 0., 1.]];
        let ones = vec![1.0f32; n * n];
        let hard = m.masks(&be, &ident, &ones, None).unwrap();
        // Threshold 1 voxel of path at N = 32: the disc of radius ≈ 8 is in, the corner out.
        assert_eq!(hard[16 * n + 16], 1.0);
        assert_eq!(hard[16 * n + 16 + 7], 1.0);
        assert_eq!(hard[16 * n + 16 + 11], 0.0);
        let soft = m.masks(&be, &ident, &ones, Some(3)).unwrap();
        assert!((soft[16 * n + 16] - 1.0).abs() < 1e-4);
        assert!(soft.iter().all(|v| (0.0..=1.0).contains(v)));
        // The soft edge spreads beyond the hard one.
        let edge = (0..n)
            .filter(|&x| soft[16 * n + x] > 0.0 && soft[16 * n + x] < 1.0)
            .count();
        assert!(edge >= 4, "{edge}");
        // Applying an all-ones mask leaves spectra unchanged.
        let fft = Fft2::<f32>::new(n);
        let img: Vec<f32> = (0..n * n).map(|i| ((i * 7) % 13) as f32).collect();
        let mut s = vec![Complex::new(0.0f32, 0.0); n * n];
        fft.forward_real(&img, &mut s);
        let before = s.clone();
        apply_masks(&mut s, &ones, n, &fft).unwrap();
        for (a, b) in s.iter().zip(&before) {
            assert!((a - b).norm() < 1e-2);
        }
    }
}
