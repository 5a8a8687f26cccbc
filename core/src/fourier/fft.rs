//! N-dimensional centered complex FFTs built from cached 1-D rustfft plans.

use std::sync::Arc;

use num_complex::Complex;
use rustfft::{Fft, FftPlanner};

/// Which way to transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Unnormalized forward transform.
    Forward,
    /// Inverse transform, divided by the number of elements.
    Inverse,
}

/// A centered FFT over a fixed array shape: plans are made once, then applied to any
/// number of arrays of that shape (the RustFFT pattern: plan once, execute many).
pub struct CenteredFft {
    shape: Vec<usize>,
    forward: Vec<Arc<dyn Fft<f64>>>,
    inverse: Vec<Arc<dyn Fft<f64>>>,
}

impl CenteredFft {
    /// Plans for an array of `shape` (row-major, last axis fastest). Every axis must be > 0.
    pub fn new(shape: &[usize]) -> Self {
        let mut planner = FftPlanner::<f64>::new();
        CenteredFft {
            shape: shape.to_vec(),
            forward: shape.iter().map(|&n| planner.plan_fft_forward(n)).collect(),
            inverse: shape.iter().map(|&n| planner.plan_fft_inverse(n)).collect(),
        }
    }

    /// The array shape these plans are for.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements of one array.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for an empty shape.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Transform `data` (length `self.len()`) in place.
    ///
    /// # Panics
    /// If `data.len()` differs from the planned shape: a programming error, not user input.
    pub fn process(&self, data: &mut [Complex<f64>], dir: Direction) {
        assert_eq!(
            data.len(),
            self.len(),
            "array length does not match FFT plan"
        );
        let ndim = self.shape.len();
        let mut lane = Vec::new();
        let mut scratch = Vec::new();
        for axis in 0..ndim {
            let n = self.shape[axis];
            let stride: usize = self.shape[axis + 1..].iter().product();
            let plan = match dir {
                Direction::Forward => &self.forward[axis],
                Direction::Inverse => &self.inverse[axis],
            };
            lane.resize(n, Complex::new(0.0, 0.0));
            scratch.resize(plan.get_inplace_scratch_len(), Complex::new(0.0, 0.0));
            let outer = data.len() / (n * stride);
            // numpy's fftshift rolls by n/2; ifftshift by -(n/2). The centered forward
            // transform is fftshift∘fft∘fftshift and the inverse ifftshift∘ifft∘ifftshift;
            // they differ only for odd n.
            let (pre, post) = match dir {
                Direction::Forward => (n / 2, n / 2),
                Direction::Inverse => (n - n / 2, n - n / 2),
            };
            for o in 0..outer {
                for s in 0..stride {
                    let base = o * n * stride + s;
                    // shifted[j] = x[(j - roll) mod n] for a roll by `pre`.
                    for (j, l) in lane.iter_mut().enumerate() {
                        *l = data[base + ((j + n - pre % n) % n) * stride];
                    }
                    plan.process_with_scratch(&mut lane, &mut scratch);
                    for j in 0..n {
                        data[base + ((j + post) % n) * stride] = lane[j];
                    }
                }
            }
        }
        if dir == Direction::Inverse {
            let scale = 1.0 / self.len() as f64;
            for v in data.iter_mut() {
                *v *= scale;
            }
        }
    }

    /// Forward centered transform of a real array.
    pub fn forward_real(&self, x: &[f32]) -> Vec<Complex<f64>> {
        let mut buf: Vec<Complex<f64>> = x.iter().map(|&v| Complex::new(v as f64, 0.0)).collect();
        self.process(&mut buf, Direction::Forward);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct O(n²) transform equal to numpy's `fftshift(fft(fftshift(x)))`: frequency
    /// `k - n/2`, and (from the pre-shift) position `j + n/2`, which for even `n` is the
    /// same as `j - n/2`.
    fn naive_centered_1d(x: &[Complex<f64>]) -> Vec<Complex<f64>> {
        let n = x.len() as i64;
        let half = n / 2;
        (0..n)
            .map(|k| {
                let freq = k - half;
                (0..n)
                    .map(|j| {
                        let pos = j + half;
                        let ang = -2.0 * std::f64::consts::PI * (freq * pos) as f64 / n as f64;
                        x[j as usize] * Complex::new(ang.cos(), ang.sin())
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn matches_naive_dft_even_and_odd() {
        for n in [6usize, 7, 8, 15, 30] {
            let x: Vec<Complex<f64>> = (0..n)
                .map(|i| Complex::new((i as f64 * 0.7).sin(), (i as f64 * 1.3).cos()))
                .collect();
            let plan = CenteredFft::new(&[n]);
            let mut y = x.clone();
            plan.process(&mut y, Direction::Forward);
            let want = naive_centered_1d(&x);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).norm() < 1e-9, "n={n}: {a} vs {b}");
            }
            plan.process(&mut y, Direction::Inverse);
            for (a, b) in y.iter().zip(&x) {
                assert!((a - b).norm() < 1e-12, "n={n} round trip");
            }
        }
    }

    #[test]
    fn delta_at_center_is_flat_spectrum() {
        let (ny, nx) = (8, 6);
        let mut x = vec![0.0f32; ny * nx];
        x[(ny / 2) * nx + nx / 2] = 1.0;
        let y = CenteredFft::new(&[ny, nx]).forward_real(&x);
        for v in y {
            assert!((v - Complex::new(1.0, 0.0)).norm() < 1e-12);
        }
    }
}
