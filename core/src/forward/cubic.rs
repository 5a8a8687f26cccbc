//! Periodic cubic B-spline interpolation support (algorithms.md §1.3, `"cubic"`).
//!
//! A cubic B-spline `f(g) = Σ_j c_j β(g − j)` passes through the samples only if the
//! coefficients `c` solve `f_j = (c_{j−1} + 4 c_j + c_{j+1}) / 6` on every axis. With periodic
//! boundaries that system is circulant, so the solve is a division in the DFT basis:
//! `ĉ(ω) = f̂(ω) / (4/6 + (2/6)·cos(2πω/Nv))` per axis (the divisor is ≥ 1/3: always
//! solvable). [`prefilter`] does this in place; the slicer then evaluates the 4×4×4 stencil
//! with wrap-around.
//!
//! The prefilter is a real symmetric circulant matrix per axis, hence self-adjoint. So the
//! exact adjoint of "prefilter, then evaluate" (`E·F`) is "scatter, then prefilter"
//! (`F·Eᵀ`): backproject with [`super::Interp::Cubic`] into an accumulator, then call
//! [`prefilter`] on the accumulator (it accepts `f32`/`f64`, real or complex).

use std::sync::Arc;

use num_complex::Complex;
use rayon::prelude::*;
use rustfft::{Fft, FftPlanner};

use crate::error::{Error, Result};

/// The four cubic B-spline weights for the stencil `b−1, b, b+1, b+2` at fraction
/// `t = g − b ∈ [0, 1)`. They sum to 1; at `t = 0` they are `(1, 4, 1, 0)/6`, the kernel the
/// prefilter inverts.
#[inline(always)]
pub(crate) fn bspline_weights(t: f32) -> [f32; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    let u = 1.0 - t;
    const SIXTH: f32 = 1.0 / 6.0;
    [
        u * u * u * SIXTH,
        (4.0 - 6.0 * t2 + 3.0 * t3) * SIXTH,
        (1.0 + 3.0 * t + 3.0 * t2 - 3.0 * t3) * SIXTH,
        t3 * SIXTH,
    ]
}

mod sealed {
    pub trait Sealed {}
}

/// Element types [`prefilter`] accepts: volumes (`Complex<f32>`) and accumulators
/// (`Complex<f64>`, `f64`), plus `f32`. Real inputs stay real (the filter is real).
pub trait SplineValue: Copy + Send + Sync + sealed::Sealed {
    #[doc(hidden)]
    fn to_c64(self) -> Complex<f64>;
    #[doc(hidden)]
    fn from_c64(v: Complex<f64>) -> Self;
}

impl sealed::Sealed for Complex<f32> {}
impl sealed::Sealed for Complex<f64> {}
impl sealed::Sealed for f32 {}
impl sealed::Sealed for f64 {}

impl SplineValue for Complex<f32> {
    fn to_c64(self) -> Complex<f64> {
        Complex::new(self.re as f64, self.im as f64)
    }
    fn from_c64(v: Complex<f64>) -> Self {
        Complex::new(v.re as f32, v.im as f32)
    }
}
impl SplineValue for Complex<f64> {
    fn to_c64(self) -> Complex<f64> {
        self
    }
    fn from_c64(v: Complex<f64>) -> Self {
        v
    }
}
impl SplineValue for f32 {
    fn to_c64(self) -> Complex<f64> {
        Complex::new(self as f64, 0.0)
    }
    fn from_c64(v: Complex<f64>) -> Self {
        v.re as f32
    }
}
impl SplineValue for f64 {
    fn to_c64(self) -> Complex<f64> {
        Complex::new(self, 0.0)
    }
    fn from_c64(v: Complex<f64>) -> Self {
        v.re
    }
}

/// 1-D plans and the per-frequency divisor (with the inverse FFT's `1/Nv` folded in).
struct AxisFilter {
    fwd: Arc<dyn Fft<f64>>,
    inv: Arc<dyn Fft<f64>>,
    inv_den: Vec<f64>,
    scratch_len: usize,
}

impl AxisFilter {
    fn new(nv: usize) -> Self {
        let mut planner = FftPlanner::<f64>::new();
        let fwd = planner.plan_fft_forward(nv);
        let inv = planner.plan_fft_inverse(nv);
        let inv_den = (0..nv)
            .map(|w| {
                let c = (2.0 * std::f64::consts::PI * w as f64 / nv as f64).cos();
                1.0 / ((4.0 / 6.0 + 2.0 / 6.0 * c) * nv as f64)
            })
            .collect();
        let scratch_len = fwd
            .get_inplace_scratch_len()
            .max(inv.get_inplace_scratch_len());
        AxisFilter {
            fwd,
            inv,
            inv_den,
            scratch_len,
        }
    }

    /// Filters every contiguous lane of length `Nv` in `buf`.
    fn lanes(&self, buf: &mut [Complex<f64>], scratch: &mut Vec<Complex<f64>>) {
        scratch.resize(self.scratch_len, Complex::new(0.0, 0.0));
        self.fwd.process_with_scratch(buf, scratch);
        for lane in buf.chunks_exact_mut(self.inv_den.len()) {
            for (v, &s) in lane.iter_mut().zip(&self.inv_den) {
                *v *= s;
            }
        }
        self.inv.process_with_scratch(buf, scratch);
    }
}

/// Replaces an `Nv³` volume (z slowest, x fastest) by its periodic cubic B-spline
/// coefficients, in place. Also the adjoint step for cubic backprojection (module docs).
///
/// Lanes are independent, so the result does not depend on the thread count.
pub fn prefilter<T: SplineValue>(vol: &mut [T], nv: usize) -> Result<()> {
    if nv == 0 || nv.checked_pow(3) != Some(vol.len()) {
        return Err(Error::inconsistent(format!(
            "cubic prefilter: the volume has {} values, expected Nv³ = {nv}³ = {}",
            vol.len(),
            (nv as u128).pow(3)
        )));
    }
    let filt = AxisFilter::new(nv);
    let n2 = nv * nv;
    // x then y, one z-plane at a time: x lanes are contiguous; y lanes are made contiguous by
    // a transpose into the work buffer.
    vol.par_chunks_mut(n2).for_each_init(
        || {
            let zero = Complex::new(0.0, 0.0);
            (vec![zero; n2], vec![zero; n2], Vec::new())
        },
        |(buf, t, scratch), plane| {
            for (b, v) in buf.iter_mut().zip(plane.iter()) {
                *b = v.to_c64();
            }
            filt.lanes(buf, scratch);
            for y in 0..nv {
                for x in 0..nv {
                    t[x * nv + y] = buf[y * nv + x];
                }
            }
            filt.lanes(t, scratch);
            for y in 0..nv {
                for x in 0..nv {
                    plane[y * nv + x] = T::from_c64(t[x * nv + y]);
                }
            }
        },
    );
    // z: task y owns row y of every plane (disjoint borrows), gathers the (x, z) block
    // transposed so z lanes are contiguous, filters, writes back.
    let mut rows: Vec<Vec<&mut [T]>> = (0..nv).map(|_| Vec::with_capacity(nv)).collect();
    for plane in vol.chunks_exact_mut(n2) {
        for (y, row) in plane.chunks_exact_mut(nv).enumerate() {
            rows[y].push(row);
        }
    }
    rows.into_par_iter().for_each_init(
        || (vec![Complex::new(0.0, 0.0); n2], Vec::new()),
        |(buf, scratch), mut planes_row| {
            for (z, row) in planes_row.iter().enumerate() {
                for (x, v) in row.iter().enumerate() {
                    buf[x * nv + z] = v.to_c64();
                }
            }
            filt.lanes(buf, scratch);
            for (z, row) in planes_row.iter_mut().enumerate() {
                for (x, v) in row.iter_mut().enumerate() {
                    *v = T::from_c64(buf[x * nv + z]);
                }
            }
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_volume(nv: usize, seed: u64) -> Vec<Complex<f64>> {
        let mut rng = Rng::new(seed);
        (0..nv * nv * nv)
            .map(|_| Complex::new(rng.normal(), rng.normal()))
            .collect()
    }

    /// Evaluating the spline at the grid points, `(1,4,1)/6` per axis with wrap-around,
    /// gives back the samples.
    #[test]
    fn prefilter_inverts_the_sampling_kernel() {
        let nv = 6;
        let f = random_volume(nv, 1);
        let mut c = f.clone();
        prefilter(&mut c, nv).unwrap();
        let k = [1.0 / 6.0, 4.0 / 6.0, 1.0 / 6.0];
        let w = |i: usize, d: usize| (i + d + nv - 1) % nv;
        for z in 0..nv {
            for y in 0..nv {
                for x in 0..nv {
                    let mut s = Complex::new(0.0, 0.0);
                    for dz in 0..3 {
                        for dy in 0..3 {
                            for dx in 0..3 {
                                s += c[(w(z, dz) * nv + w(y, dy)) * nv + w(x, dx)]
                                    * (k[dz] * k[dy] * k[dx]);
                            }
                        }
                    }
                    let e = f[(z * nv + y) * nv + x];
                    assert!((s - e).norm() < 1e-12, "{s} vs {e}");
                }
            }
        }
    }

    #[test]
    fn prefilter_is_self_adjoint_and_keeps_real_data_real() {
        let nv = 8;
        let x = random_volume(nv, 2);
        let y = random_volume(nv, 3);
        let (mut fx, mut fy) = (x.clone(), y.clone());
        prefilter(&mut fx, nv).unwrap();
        prefilter(&mut fy, nv).unwrap();
        let dot = |a: &[Complex<f64>], b: &[Complex<f64>]| -> Complex<f64> {
            a.iter().zip(b).map(|(a, b)| a.conj() * b).sum()
        };
        let (l, r) = (dot(&fx, &y), dot(&x, &fy));
        assert!((l - r).norm() < 1e-12 * l.norm().max(1.0), "{l} {r}");

        let re: Vec<f64> = x.iter().map(|v| v.re).collect();
        let mut fre = re.clone();
        prefilter(&mut fre, nv).unwrap();
        for (a, b) in fre.iter().zip(&fx) {
            assert!((a - b.re).abs() < 1e-12);
        }
    }

    #[test]
    fn prefilter_rejects_bad_lengths() {
        let mut v = vec![0.0f32; 26];
        assert!(prefilter(&mut v, 3).is_err());
        assert!(prefilter(&mut v, 0).is_err());
    }

    #[test]
    fn weights_partition_unity() {
        for i in 0..=10 {
            let w = bspline_weights(i as f32 / 10.0);
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let w = bspline_weights(0.0);
        assert!((w[0] - 1.0 / 6.0).abs() < 1e-7 && (w[1] - 4.0 / 6.0).abs() < 1e-7);
    }
}
