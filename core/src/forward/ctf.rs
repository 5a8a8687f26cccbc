//! The contrast transfer function on the centered image grid (algorithms.md §1.4,
//! formats.md "CTF formula").
//!
//! Grid: pixel (row r, col c) of a `d × d` image has spatial frequency
//! `s = (x, y) = (c − d/2, r − d/2)/(d·apix)` in 1/Å (first coordinate = column frequency x,
//! second = row frequency y), as the FFTs of [`crate::fourier`] lay it out.
//!
//! Formula (cryoDRGN's `ctf.compute_ctf`, times RECOVAR's two extra columns):
//!
//! ```text
//! λ   = 12.2639 / sqrt(V + 0.97845e-6·V²)        V = voltage_kv·1000 (volts), λ in Å
//! θ   = atan2(y, x),  s² = x² + y²
//! Δf  = ½(dfU + dfV + (dfU − dfV)·cos 2(θ − dfAng))
//! γ   = 2π(−½·Δf·λ·s² + ¼·Cs·λ³·s⁴) − phase_shift     Cs = cs_mm·1e7 Å, angles in radians
//! CTF = sqrt(1 − w²)·sin γ − w·cos γ
//! CTF ·= exp(−B/4·s²)      (B = bfactor, Å²; B > 0 damps high frequencies)
//! CTF ·= contrast
//! ```
//!
//! Wavelength: RECOVAR's Python uses `12.2642598/sqrt(V(1 + 9.78475598e-7·V))`, relative
//! difference about 3e-5 from cryoDRGN's constant; the project must match cryoDRGN's CTF to
//! 1e-5, so cryoDRGN's constants are used ([`wavelength_angstrom`]).
//!
//! Numerics: parameters are f32 (the dataset's [`CtfParams`]); every evaluation runs in f64
//! and is stored as f32. `cos 2(θ − dfAng)` is computed from `cos 2θ = (x² − y²)/s²` and
//! `sin 2θ = 2xy/s²` instead of `atan2` (the same value to rounding; at `s = 0`, θ = 0 as
//! `atan2(0, 0)` gives).

use rayon::prelude::*;

use crate::dataset::CtfParams;
use crate::{Error, Result};

/// Electron wavelength in Å for an accelerating voltage in kV, relativistically corrected,
/// with cryoDRGN's constants: `12.2639 / sqrt(V + 0.97845e-6·V²)`, `V` in volts.
pub fn wavelength_angstrom(voltage_kv: f64) -> f64 {
    let v = voltage_kv * 1000.0;
    12.2639 / (v + 0.97845e-6 * v * v).sqrt()
}

/// Per-image constants of the formula, in f64.
#[derive(Clone, Copy, Debug)]
struct Consts {
    dfu: f64,
    dfv: f64,
    cos2a: f64,
    sin2a: f64,
    /// `2π·(−½·λ)`: multiplies `Δf·s²`.
    k_df: f64,
    /// `2π·¼·Cs·λ³`: multiplies `s⁴`.
    k_cs: f64,
    phase: f64,
    sqrt_1mw2: f64,
    w: f64,
    /// `−B/4`, or 0.
    k_b: f64,
    contrast: f64,
}

impl Consts {
    fn new(p: &CtfParams) -> Self {
        let lam = wavelength_angstrom(p.voltage_kv as f64);
        let cs = p.cs_mm as f64 * 1e7;
        let ang = (p.defocus_angle_deg as f64).to_radians();
        let w = p.amp_contrast as f64;
        let two_pi = 2.0 * std::f64::consts::PI;
        Consts {
            dfu: p.defocus_u as f64,
            dfv: p.defocus_v as f64,
            cos2a: (2.0 * ang).cos(),
            sin2a: (2.0 * ang).sin(),
            k_df: two_pi * (-0.5 * lam),
            k_cs: two_pi * 0.25 * cs * lam * lam * lam,
            phase: (p.phase_shift_deg as f64).to_radians(),
            sqrt_1mw2: (1.0 - w * w).sqrt(),
            w,
            k_b: -(p.bfactor as f64) / 4.0,
            contrast: p.contrast as f64,
        }
    }

    /// CTF at spatial frequency `(x, y)` in 1/Å.
    #[inline]
    fn at(&self, x: f64, y: f64) -> f64 {
        let s2 = x * x + y * y;
        let (c2t, s2t) = if s2 > 0.0 {
            ((x * x - y * y) / s2, 2.0 * x * y / s2)
        } else {
            (1.0, 0.0)
        };
        let cos_2diff = c2t * self.cos2a + s2t * self.sin2a;
        let df = 0.5 * (self.dfu + self.dfv + (self.dfu - self.dfv) * cos_2diff);
        let gamma = self.k_df * df * s2 + self.k_cs * s2 * s2 - self.phase;
        let (sin_g, cos_g) = gamma.sin_cos();
        let mut ctf = self.sqrt_1mw2 * sin_g - self.w * cos_g;
        if self.k_b != 0.0 {
            ctf *= (self.k_b * s2).exp();
        }
        ctf * self.contrast
    }
}

/// The per-image constants of the formula in the order the GPU kernel reads them
/// (kernels/image.cu): dfU, dfV, cos 2a, sin 2a, k_df, k_cs, phase, sqrt(1 − w²), w,
/// −B/4, contrast. Computed here, once, so both backends start from the same numbers.
pub fn ctf_constants(p: &CtfParams) -> [f64; 11] {
    let c = Consts::new(p);
    [
        c.dfu,
        c.dfv,
        c.cos2a,
        c.sin2a,
        c.k_df,
        c.k_cs,
        c.phase,
        c.sqrt_1mw2,
        c.w,
        c.k_b,
        c.contrast,
    ]
}

/// The CTF of `p` at spatial frequency `(x, y)` in 1/Å (x = column direction), in f64.
pub fn ctf_at(p: &CtfParams, x: f64, y: f64) -> f64 {
    Consts::new(p).at(x, y)
}

fn check_grid(d: usize, apix: f64) -> Result<()> {
    if d == 0 {
        return Err(Error::invalid("CTF grid: the image side must be positive"));
    }
    if !(apix.is_finite() && apix > 0.0) {
        return Err(Error::invalid(format!(
            "CTF grid: the pixel size must be positive, got {apix} Å"
        )));
    }
    Ok(())
}

/// CTF evaluation on one `d × d` grid at one pixel size (plan once, evaluate for many
/// parameter rows).
#[derive(Clone, Copy, Debug)]
pub struct CtfEvaluator {
    d: usize,
    apix: f64,
}

impl CtfEvaluator {
    /// A grid of side `d` with pixel size `apix` Å.
    pub fn new(d: usize, apix: f64) -> Result<Self> {
        check_grid(d, apix)?;
        Ok(CtfEvaluator { d, apix })
    }

    /// Image side `d`.
    pub fn side(&self) -> usize {
        self.d
    }

    /// Pixel size in Å.
    pub fn pixel_size(&self) -> f64 {
        self.apix
    }

    /// Evaluate row `r` (length `d`) of the f64 CTF into `row`, through `f` (identity or
    /// square).
    fn eval_row(&self, c: &Consts, r: usize, row: &mut [f64], f: impl Fn(f64) -> f64) {
        let d = self.d;
        let inv = 1.0 / (d as f64 * self.apix);
        let h = (d / 2) as f64;
        let y = (r as f64 - h) * inv;
        for (col, v) in row.iter_mut().enumerate() {
            *v = f(c.at((col as f64 - h) * inv, y));
        }
    }

    /// The CTF of `p` on the grid into `out` (`d²` values, row-major).
    ///
    /// # Panics
    /// If `out.len() != d²`.
    pub fn evaluate(&self, p: &CtfParams, out: &mut [f32]) {
        let d = self.d;
        assert_eq!(
            out.len(),
            d * d,
            "CTF buffer length does not match the grid"
        );
        let c = Consts::new(p);
        let inv = 1.0 / (d as f64 * self.apix);
        let h = (d / 2) as f64;
        for (r, row) in out.chunks_exact_mut(d).enumerate() {
            let y = (r as f64 - h) * inv;
            for (col, v) in row.iter_mut().enumerate() {
                *v = c.at((col as f64 - h) * inv, y) as f32;
            }
        }
    }

    /// The CTF of `p` as a new `d²` vector.
    pub fn image(&self, p: &CtfParams) -> Vec<f32> {
        let mut out = vec![0.0; self.d * self.d];
        self.evaluate(p, &mut out);
        out
    }

    /// CTFs of many parameter rows into one contiguous `params.len()·d²` buffer, in
    /// parallel.
    ///
    /// # Panics
    /// If `out.len() != params.len()·d²`.
    pub fn evaluate_batch(&self, params: &[CtfParams], out: &mut [f32]) {
        let len = self.d * self.d;
        assert_eq!(
            out.len(),
            params.len() * len,
            "CTF batch buffer length does not match"
        );
        out.par_chunks_exact_mut(len)
            .zip(params.par_iter())
            .for_each(|(o, p)| self.evaluate(p, o));
    }
}

/// The CTF of one parameter row on a `d × d` grid at `apix` Å/pixel.
pub fn ctf_image(p: &CtfParams, d: usize, apix: f64) -> Result<Vec<f32>> {
    Ok(CtfEvaluator::new(d, apix)?.image(p))
}

/// Anti-aliased CTF² (§1.4, RECOVAR's `compute_antialiased_ctf_squared`), used for the
/// kernel-regression weights, where the squared CTF is averaged over each pixel instead of
/// sampled at its centre.
///
/// Construction: evaluate the CTF on the `2d × 2d` grid at the same pixel size, i.e. at
/// frequencies `(i − d)/(2d·apix)` for fine index `i ∈ 0..2d`; square; filter with a 3×3
/// box (`(1/9)·Σ`, zero outside the fine grid, as a "SAME" convolution with zero padding);
/// keep fine samples `(2r, 2c)`. Alignment: fine index `2j` has frequency
/// `(2j − d)/(2d·apix) = (j − d/2)/(d·apix)`, exactly coarse pixel `j`'s frequency, and the
/// box spans `±1/(2d·apix)` around it (half a coarse pixel each way), so for a slowly
/// varying CTF the result ≈ CTF² at the pixel. Consequence of the zero padding (kept for
/// parity): row 0 and column 0 (frequency −d/2, the Nyquist edge) miss one fine row /
/// column of the box and come out ≈ 2/3 of CTF² there (4/9 in the corner). `d` must be
/// even.
#[derive(Clone, Copy, Debug)]
pub struct AntialiasedCtf2 {
    d: usize,
    fine: CtfEvaluator,
}

impl AntialiasedCtf2 {
    /// For `d × d` images (`d` even) at `apix` Å/pixel.
    pub fn new(d: usize, apix: f64) -> Result<Self> {
        check_grid(d, apix)?;
        if !d.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "anti-aliased CTF²: the image side must be even, got {d}"
            )));
        }
        Ok(AntialiasedCtf2 {
            d,
            fine: CtfEvaluator::new(2 * d, apix)?,
        })
    }

    /// Image side `d`.
    pub fn side(&self) -> usize {
        self.d
    }

    /// Anti-aliased CTF² of `p` into `out` (`d²` values).
    ///
    /// # Panics
    /// If `out.len() != d²`.
    pub fn evaluate(&self, p: &CtfParams, out: &mut [f32]) {
        let mut work = self.make_work();
        self.evaluate_with(p, out, &mut work);
    }

    fn make_work(&self) -> [Vec<f64>; 2] {
        [vec![0.0; 2 * self.d], vec![0.0; 3 * self.d]]
    }

    fn evaluate_with(&self, p: &CtfParams, out: &mut [f32], work: &mut [Vec<f64>; 2]) {
        let d = self.d;
        let nf = 2 * d;
        assert_eq!(
            out.len(),
            d * d,
            "CTF² buffer length does not match the grid"
        );
        let c = Consts::new(p);
        let [fine_row, hsum] = work;
        // hsum holds, for fine rows 2r−1, 2r, 2r+1, the horizontal 3-sums at columns 2c.
        let mut horizontal = |i: usize, slot: &mut [f64]| {
            self.fine.eval_row(&c, i, fine_row, |v| v * v);
            for (col, s) in slot.iter_mut().enumerate() {
                let j = 2 * col;
                let left = if j > 0 { fine_row[j - 1] } else { 0.0 };
                let right = if j + 1 < nf { fine_row[j + 1] } else { 0.0 };
                *s = left + fine_row[j] + right;
            }
        };
        // Slot 0: row 2r−1 (zeros for r = 0), 1: row 2r, 2: row 2r+1.
        hsum[..d].fill(0.0);
        for (r, orow) in out.chunks_exact_mut(d).enumerate() {
            {
                let (_, rest) = hsum.split_at_mut(d);
                let (s1, s2) = rest.split_at_mut(d);
                horizontal(2 * r, s1);
                horizontal(2 * r + 1, s2); // 2r + 1 ≤ 2d − 1 always
            }
            for (col, o) in orow.iter_mut().enumerate() {
                *o = ((hsum[col] + hsum[d + col] + hsum[2 * d + col]) / 9.0) as f32;
            }
            // Row 2r+1 is row 2(r+1)−1 of the next output row.
            hsum.copy_within(2 * d..3 * d, 0);
        }
    }

    /// Anti-aliased CTF² of many parameter rows into one `params.len()·d²` buffer, in
    /// parallel.
    ///
    /// # Panics
    /// If `out.len() != params.len()·d²`.
    pub fn evaluate_batch(&self, params: &[CtfParams], out: &mut [f32]) {
        let len = self.d * self.d;
        assert_eq!(
            out.len(),
            params.len() * len,
            "CTF² batch buffer length does not match"
        );
        out.par_chunks_exact_mut(len)
            .zip(params.par_iter())
            .for_each_init(|| self.make_work(), |w, (o, p)| self.evaluate_with(p, o, w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> CtfParams {
        CtfParams {
            defocus_u: 15000.0,
            defocus_v: 14000.0,
            defocus_angle_deg: 30.0,
            voltage_kv: 300.0,
            cs_mm: 2.7,
            amp_contrast: 0.1,
            phase_shift_deg: 0.0,
            bfactor: 0.0,
            contrast: 1.0,
        }
    }

    #[test]
    fn wavelength_at_300kv() {
        // 300 kV electrons: λ ≈ 0.01969 Å
        assert!((wavelength_angstrom(300.0) - 0.019687).abs() < 1e-6);
    }

    #[test]
    fn dc_is_minus_w_times_contrast() {
        let mut p = params();
        p.contrast = 0.7;
        let img = ctf_image(&p, 16, 1.5).unwrap();
        let dc = img[8 * 16 + 8];
        assert!((dc as f64 + 0.1 * 0.7).abs() < 1e-7, "{dc}");
    }

    #[test]
    fn evaluator_matches_pointwise_formula() {
        let p = params();
        let (d, apix) = (10usize, 2.0);
        let img = ctf_image(&p, d, apix).unwrap();
        for r in 0..d {
            for c in 0..d {
                let x = (c as f64 - 5.0) / 20.0;
                let y = (r as f64 - 5.0) / 20.0;
                assert!((img[r * d + c] as f64 - ctf_at(&p, x, y)).abs() < 1e-7);
            }
        }
    }
}

/// The exposure filter of a tilt image that received `dose` e⁻/Å² before it
/// (algorithms.md §12; Grant & Grigorieff's critical exposure):
/// `Ne(s) = 0.245·s^−1.665·(0.75 at 200 kV, else 1) + 2.81` and
/// `filter = exp(−dose/(2·Ne(s)))`, set to 0 where `dose ≥ 2.51284·Ne(s)` (beyond the optimal
/// exposure the frequency carries only noise). Multiplies the CTF of cryo-ET images; the tilt
/// angle's cos factor is carried by the contrast column instead. Same grid as
/// [`CtfEvaluator`]; `out` has `d²` values.
pub fn dose_filter(d: usize, apix: f64, dose: f64, voltage_kv: f64, out: &mut [f32]) -> Result<()> {
    if out.len() != d * d {
        return Err(Error::invalid(format!(
            "dose filter buffer holds {} values; a {d}×{d} image needs {}",
            out.len(),
            d * d
        )));
    }
    if apix.is_nan() || apix <= 0.0 || !dose.is_finite() || dose < 0.0 {
        return Err(Error::invalid(format!(
            "dose filter needs a positive pixel size and a non-negative dose (got {apix} Å, {dose} e/Å²)"
        )));
    }
    let kv_factor = if (voltage_kv - 200.0).abs() < 1.0 {
        0.75
    } else {
        1.0
    };
    let h = (d / 2) as f64;
    let scale = 1.0 / (d as f64 * apix);
    for r in 0..d {
        for c in 0..d {
            let (x, y) = ((c as f64 - h) * scale, (r as f64 - h) * scale);
            let s = (x * x + y * y).sqrt();
            out[r * d + c] = if s == 0.0 {
                1.0
            } else {
                let ne = 0.245 * s.powf(-1.665) * kv_factor + 2.81;
                if dose < 2.51284 * ne {
                    (-0.5 * dose / ne).exp() as f32
                } else {
                    0.0
                }
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod dose_tests {
    use super::*;

    #[test]
    fn dose_filter_values() {
        let d = 32;
        let mut f = vec![0.0f32; d * d];
        dose_filter(d, 2.0, 0.0, 300.0, &mut f).unwrap();
        assert!(f.iter().all(|&v| v == 1.0), "no dose, no filter");
        dose_filter(d, 2.0, 20.0, 300.0, &mut f).unwrap();
        assert_eq!(f[16 * d + 16], 1.0, "zero frequency untouched");
        // Row 16, column 24: s = 8/(32·2 Å) = 0.125 1/Å, Ne ≈ 10.6, below the cut-off.
        let s: f64 = 8.0 / 64.0;
        let ne = 0.245 * s.powf(-1.665) + 2.81;
        let want = (-10.0 / ne).exp();
        assert!((f[16 * d + 24] as f64 - want).abs() < 1e-6);
        // Past the optimal exposure (dose ≥ 2.51284·Ne) the frequency is cut.
        dose_filter(d, 2.0, 30.0, 300.0, &mut f).unwrap();
        assert_eq!(f[16 * d + 24], 0.0);
        // Monotone: higher frequency, stronger damping (along a row).
        assert!((17..32).all(|c| f[16 * d + c] <= f[16 * d + c - 1]));
        assert!(dose_filter(d, 0.0, 1.0, 300.0, &mut f).is_err());
    }
}
