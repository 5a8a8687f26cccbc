//! Planned centered 3-D FFTs of cubic volumes, parallel over planes and lines.
//!
//! Layout: an `n × n × n` volume is stored z-slowest, x-fastest (MRC order:
//! `flat = (z·n + y)·n + x`); spectra are full centered `n³` arrays. Since the centered
//! transform is the same along every axis, the axis order affects only which frequency
//! lands where: voxel `(z, y, x)` holds frequency `(x − n/2, y − n/2, z − n/2)`.
//!
//! Normalization (numpy "backward"): forward unnormalized, inverse divided by `n³`.

use std::sync::Arc;

use num_complex::Complex;
use rayon::prelude::*;
use rustfft::{Fft, FftNum, FftPlanner};

use super::lanes::{columns_pass, roll_for, rows_pass, scale, split_rows_pass, BLOCK};
use super::Direction;

/// Centered 3-D FFT plans for `n³` volumes (`Send + Sync`). Each call allocates only
/// per-thread scratch (a few KiB per rayon task) and one list of row references.
pub struct Fft3<T: FftNum = f32> {
    n: usize,
    forward: Arc<dyn Fft<T>>,
    inverse: Arc<dyn Fft<T>>,
}

impl<T: FftNum> Fft3<T> {
    /// Plans for `n³` volumes (`n ≥ 1`; odd sizes follow numpy's definition).
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn new(n: usize) -> Self {
        assert!(n > 0, "volume side must be positive");
        let mut planner = FftPlanner::<T>::new();
        Fft3 {
            n,
            forward: planner.plan_fft_forward(n),
            inverse: planner.plan_fft_inverse(n),
        }
    }

    /// The volume side `n`.
    pub fn side(&self) -> usize {
        self.n
    }

    /// Elements per volume, `n³`.
    pub fn len(&self) -> usize {
        self.n * self.n * self.n
    }

    /// Always false; for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn make_scratch(&self, fft: &dyn Fft<T>) -> (Vec<Complex<T>>, Vec<Complex<T>>) {
        let zero = Complex::new(T::zero(), T::zero());
        (
            vec![zero; BLOCK * self.n],
            vec![zero; fft.get_inplace_scratch_len()],
        )
    }

    /// Centered transform in place (`Forward`: unnormalized; `Inverse`: divided by `n³`).
    ///
    /// # Panics
    /// If `data.len() != n³` (a programming error, as in RustFFT).
    pub fn process(&self, data: &mut [Complex<T>], dir: Direction) {
        let n = self.n;
        assert_eq!(
            data.len(),
            self.len(),
            "volume length does not match the FFT plan"
        );
        let fft: &dyn Fft<T> = match dir {
            Direction::Forward => &*self.forward,
            Direction::Inverse => &*self.inverse,
        };
        let s = roll_for(n, dir);
        // x (contiguous rows) and y (columns of each z-plane), one plane per task.
        data.par_chunks_exact_mut(n * n).for_each_init(
            || self.make_scratch(fft),
            |(block, scratch), plane| {
                rows_pass(plane, fft, s, scratch);
                columns_pass(plane, n, n, n, fft, s, block, scratch);
            },
        );
        // z: for each y, the rows (z, y, ·) of all planes form an n × n block.
        let mut by_y: Vec<Vec<&mut [Complex<T>]>> = (0..n).map(|_| Vec::with_capacity(n)).collect();
        for (i, row) in data.chunks_exact_mut(n).enumerate() {
            by_y[i % n].push(row);
        }
        by_y.par_iter_mut().for_each_init(
            || self.make_scratch(fft),
            |(block, scratch), rows| split_rows_pass(rows, fft, s, block, scratch),
        );
        if dir == Direction::Inverse {
            let f = 1.0 / self.len() as f64;
            data.par_chunks_mut(n * n).for_each(|p| scale(p, f));
        }
    }

    /// Forward centered transform in place.
    pub fn forward(&self, data: &mut [Complex<T>]) {
        self.process(data, Direction::Forward)
    }

    /// Inverse centered transform in place (divided by `n³`).
    pub fn inverse(&self, data: &mut [Complex<T>]) {
        self.process(data, Direction::Inverse)
    }

    /// Forward centered transform of a real volume into `out` (`n³` values).
    ///
    /// # Panics
    /// If a length is not `n³`.
    pub fn forward_real(&self, vol: &[T], out: &mut [Complex<T>]) {
        assert_eq!(
            vol.len(),
            self.len(),
            "volume length does not match the FFT plan"
        );
        assert_eq!(
            out.len(),
            self.len(),
            "spectrum length does not match the FFT plan"
        );
        out.par_iter_mut()
            .zip(vol.par_iter())
            .for_each(|(o, &v)| *o = Complex::new(v, T::zero()));
        self.forward(out);
    }

    /// Forward centered transform of a real volume, allocating the spectrum.
    pub fn forward_real_vec(&self, vol: &[T]) -> Vec<Complex<T>> {
        let mut out = vec![Complex::new(T::zero(), T::zero()); self.len()];
        self.forward_real(vol, &mut out);
        out
    }

    /// Real part of the inverse centered transform. `spec` is the workspace: it holds the
    /// complex inverse afterwards (so no volume-sized buffer is allocated).
    ///
    /// # Panics
    /// If a length is not `n³`.
    pub fn inverse_to_real(&self, spec: &mut [Complex<T>], out: &mut [T]) {
        assert_eq!(
            out.len(),
            self.len(),
            "volume length does not match the FFT plan"
        );
        self.inverse(spec);
        out.par_iter_mut()
            .zip(spec.par_iter())
            .for_each(|(o, c)| *o = c.re);
    }

    /// Real part of the inverse centered transform of `spec`, leaving `spec` untouched
    /// (allocates one complex volume).
    pub fn inverse_real_vec(&self, spec: &[Complex<T>]) -> Vec<T> {
        let mut work = spec.to_vec();
        let mut out = vec![T::zero(); self.len()];
        self.inverse_to_real(&mut work, &mut out);
        out
    }
}
