//! Image translations as Fourier phase ramps (algorithms.md §1.5).
//!
//! Convention: a shift `t = (tx, ty)` in pixels (tx along columns/x, ty along rows/y)
//! multiplies the centered spectrum by
//!
//! ```text
//! exp(−2πi·(kx·tx + ky·ty)/d),     (kx, ky) = (c − d/2, r − d/2)
//! ```
//!
//! which shifts the real image by `+t`: the value at pixel `p` moves to `p + t`
//! (periodically; for integer `t` exactly `np.roll(img, (ty, tx), axis=(0, 1))`). RECOVAR
//! applies it to the *observed* images with the pose translations (pixels, i.e. cryoDRGN's
//! fractional translations times `d`) before comparing them with `C·P·x`.
//!
//! Phases are computed in f64 (one `sin_cos` per row and per image, then exact-enough
//! complex recurrences along the row; no allocation) and applied to f32 data.

use num_complex::Complex;
use rayon::prelude::*;

/// Multiply a centered `d × d` spectrum by the phase ramp of shift `shift_px` (pixels).
///
/// # Panics
/// If `spec.len() != d²`.
pub fn shift_phase(spec: &mut [Complex<f32>], d: usize, shift_px: [f32; 2]) {
    assert_eq!(
        spec.len(),
        d * d,
        "spectrum length does not match the image side"
    );
    if shift_px == [0.0, 0.0] {
        return;
    }
    let two_pi_over_d = -2.0 * std::f64::consts::PI / d as f64;
    let (tx, ty) = (shift_px[0] as f64, shift_px[1] as f64);
    let h = (d / 2) as f64;
    let cis = |a: f64| {
        let (s, c) = a.sin_cos();
        Complex::new(c, s)
    };
    let step = cis(two_pi_over_d * tx);
    let x0 = cis(two_pi_over_d * (-h) * tx);
    for (r, row) in spec.chunks_exact_mut(d).enumerate() {
        let ky = r as f64 - h;
        let mut ph = cis(two_pi_over_d * ky * ty) * x0;
        for v in row.iter_mut() {
            let z = Complex::new(v.re as f64, v.im as f64) * ph;
            *v = Complex::new(z.re as f32, z.im as f32);
            ph *= step;
        }
    }
}

/// [`shift_phase`] for a batch of spectra (`shifts.len()·d²` values), in parallel.
///
/// # Panics
/// If `spec.len() != shifts.len()·d²`.
pub fn shift_phase_batch(spec: &mut [Complex<f32>], d: usize, shifts: &[[f32; 2]]) {
    assert_eq!(
        spec.len(),
        shifts.len() * d * d,
        "batch length does not match the shifts"
    );
    spec.par_chunks_exact_mut(d * d)
        .zip(shifts.par_iter())
        .for_each(|(s, &t)| shift_phase(s, d, t));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_match_the_formula_at_every_pixel() {
        // The row recurrence must stay exact to f32 precision across the whole row.
        for d in [7usize, 64, 255] {
            let t = [3.7f32, -11.2f32];
            let mut spec = vec![Complex::new(1.0f32, 0.0); d * d];
            shift_phase(&mut spec, d, t);
            let h = (d / 2) as f64;
            for r in 0..d {
                for c in 0..d {
                    let a = -2.0 * std::f64::consts::PI / d as f64
                        * ((c as f64 - h) * t[0] as f64 + (r as f64 - h) * t[1] as f64);
                    let v = spec[r * d + c];
                    assert!((v.re as f64 - a.cos()).abs() < 1e-6);
                    assert!((v.im as f64 - a.sin()).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn zero_shift_is_a_no_op() {
        let mut spec = vec![Complex::new(0.5f32, -2.0); 16];
        shift_phase(&mut spec, 4, [0.0, 0.0]);
        assert!(spec.iter().all(|&v| v == Complex::new(0.5, -2.0)));
    }
}
