//! Planned centered 2-D FFTs of square images, one image or a batch at a time.
//!
//! Layout: an image is `d × d`, row-major, row = y. Spectra are FULL centered `d × d`
//! arrays (index `d/2` = frequency 0 on both axes), because the rest of the code works on
//! full spectra. The real-input forward transform and the real-output inverse use
//! `realfft` internally (half the column FFTs, half-length row FFTs) and expand to / fold
//! from the full spectrum through Hermitian symmetry.
//!
//! Normalization (numpy "backward"): forward unnormalized, inverse divided by `d²`.

use std::sync::{Arc, Mutex};

use num_complex::Complex;
use rayon::prelude::*;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftNum, FftPlanner};

use super::lanes::{columns_pass, roll_for, rows_pass, scale, BLOCK};
use super::Direction;

/// Working memory for one [`Fft2`] call. Make one with [`Fft2::make_scratch`] to call the
/// `*_with_scratch` methods; the plain methods borrow one from a pool inside the plan, so
/// after each thread's first call no call allocates.
pub struct Fft2Scratch<T: FftNum = f32> {
    fft: Vec<Complex<T>>,
    block: Vec<Complex<T>>,
    half: Vec<Complex<T>>,
    real: Vec<T>,
    rfft: Vec<Complex<T>>,
}

/// Centered 2-D FFT plans for `d × d` images (RustFFT style: plan once, execute many;
/// `Send + Sync`, so one plan serves all threads).
pub struct Fft2<T: FftNum = f32> {
    d: usize,
    forward: Arc<dyn Fft<T>>,
    inverse: Arc<dyn Fft<T>>,
    r2c: Arc<dyn RealToComplex<T>>,
    c2r: Arc<dyn ComplexToReal<T>>,
    pool: Mutex<Vec<Fft2Scratch<T>>>,
}

impl<T: FftNum> Fft2<T> {
    /// Plans for `d × d` images. `d` must be ≥ 1 (odd sizes follow numpy's definition).
    ///
    /// # Panics
    /// If `d == 0`.
    pub fn new(d: usize) -> Self {
        assert!(d > 0, "image side must be positive");
        let mut planner = FftPlanner::<T>::new();
        let mut rplanner = RealFftPlanner::<T>::new();
        Fft2 {
            d,
            forward: planner.plan_fft_forward(d),
            inverse: planner.plan_fft_inverse(d),
            r2c: rplanner.plan_fft_forward(d),
            c2r: rplanner.plan_fft_inverse(d),
            pool: Mutex::new(Vec::new()),
        }
    }

    /// The image side `d`.
    pub fn side(&self) -> usize {
        self.d
    }

    /// Elements per image, `d²`.
    pub fn len(&self) -> usize {
        self.d * self.d
    }

    /// Always false (a plan has at least one pixel); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Working memory sized for this plan.
    pub fn make_scratch(&self) -> Fft2Scratch<T> {
        let d = self.d;
        let w = d / 2 + 1;
        let zero = Complex::new(T::zero(), T::zero());
        let fft_len = self
            .forward
            .get_inplace_scratch_len()
            .max(self.inverse.get_inplace_scratch_len());
        let rfft_len = self.r2c.get_scratch_len().max(self.c2r.get_scratch_len());
        Fft2Scratch {
            fft: vec![zero; fft_len],
            block: vec![zero; BLOCK * d],
            half: vec![zero; d * w],
            real: vec![T::zero(); d],
            rfft: vec![zero; rfft_len],
        }
    }

    fn with_pooled<R>(&self, f: impl FnOnce(&mut Fft2Scratch<T>) -> R) -> R {
        let taken = self.pool.lock().map(|mut p| p.pop()).unwrap_or(None);
        let mut scratch = taken.unwrap_or_else(|| self.make_scratch());
        let r = f(&mut scratch);
        if let Ok(mut p) = self.pool.lock() {
            p.push(scratch);
        }
        r
    }

    /// Centered transform of one complex image in place (`Forward`: unnormalized;
    /// `Inverse`: divided by `d²`).
    ///
    /// # Panics
    /// If `data.len() != d²` (a programming error, as in RustFFT).
    pub fn process(&self, data: &mut [Complex<T>], dir: Direction) {
        self.with_pooled(|s| self.process_with_scratch(data, dir, s))
    }

    /// [`Fft2::process`] with caller-owned scratch.
    pub fn process_with_scratch(
        &self,
        data: &mut [Complex<T>],
        dir: Direction,
        scratch: &mut Fft2Scratch<T>,
    ) {
        let d = self.d;
        assert_eq!(
            data.len(),
            d * d,
            "image length does not match the FFT plan"
        );
        let fft: &dyn Fft<T> = match dir {
            Direction::Forward => &*self.forward,
            Direction::Inverse => &*self.inverse,
        };
        let s = roll_for(d, dir);
        rows_pass(data, fft, s, &mut scratch.fft);
        columns_pass(data, d, d, d, fft, s, &mut scratch.block, &mut scratch.fft);
        if dir == Direction::Inverse {
            scale(data, 1.0 / (d * d) as f64);
        }
    }

    /// Forward centered transform in place.
    pub fn forward(&self, data: &mut [Complex<T>]) {
        self.process(data, Direction::Forward)
    }

    /// Inverse centered transform in place (divided by `d²`).
    pub fn inverse(&self, data: &mut [Complex<T>]) {
        self.process(data, Direction::Inverse)
    }

    /// Forward centered transform of a real image into the full centered spectrum `out`
    /// (`d²` values).
    ///
    /// # Panics
    /// If `img.len()` or `out.len()` is not `d²`.
    pub fn forward_real(&self, img: &[T], out: &mut [Complex<T>]) {
        self.with_pooled(|s| self.forward_real_with_scratch(img, out, s))
    }

    /// [`Fft2::forward_real`] with caller-owned scratch.
    pub fn forward_real_with_scratch(
        &self,
        img: &[T],
        out: &mut [Complex<T>],
        scratch: &mut Fft2Scratch<T>,
    ) {
        let d = self.d;
        assert_eq!(img.len(), d * d, "image length does not match the FFT plan");
        assert_eq!(
            out.len(),
            d * d,
            "spectrum length does not match the FFT plan"
        );
        let w = d / 2 + 1;
        let s = roll_for(d, Direction::Forward);
        // 1. Real FFT of every row (input rolled by s), the w non-negative frequencies
        //    stored at the start of the same row of `out`.
        for (r, row) in img.chunks_exact(d).enumerate() {
            // real[p] = row[(p - s) mod d]
            scratch.real[s..].copy_from_slice(&row[..d - s]);
            scratch.real[..s].copy_from_slice(&row[d - s..]);
            self.r2c
                .process_with_scratch(
                    &mut scratch.real,
                    &mut out[r * d..r * d + w],
                    &mut scratch.rfft,
                )
                .expect("buffer lengths are fixed by the plan");
        }
        // 2. Column FFTs of those w columns, rows rolled into centered order.
        columns_pass(
            out,
            d,
            d,
            w,
            &*self.forward,
            s,
            &mut scratch.block,
            &mut scratch.fft,
        );
        // 3. Columns w..d (negative column frequencies) from Hermitian symmetry
        //    X(−k) = conj X(k). Row `kr` holds FFT row qr = kr − s; its partner row holds
        //    −qr. Only columns < w are read, only columns ≥ w written.
        for kr in 0..d {
            let qr = (kr + d - s) % d;
            let pr = ((d - qr) % d + s) % d;
            for qc in w..d {
                let v = out[pr * d + (d - qc)];
                out[kr * d + qc] = v.conj();
            }
        }
        // 4. Columns into centered order.
        if s != 0 {
            for row in out.chunks_exact_mut(d) {
                row.rotate_right(s);
            }
        }
    }

    /// Real part of the inverse centered transform of a full centered spectrum (divided
    /// by `d²`). Equivalently the exact inverse of the spectrum's Hermitian part
    /// `(X(k) + conj X(−k))/2`; for the spectrum of a real image it is the exact inverse.
    ///
    /// # Panics
    /// If `spec.len()` or `out.len()` is not `d²`.
    pub fn inverse_real(&self, spec: &[Complex<T>], out: &mut [T]) {
        self.with_pooled(|s| self.inverse_real_with_scratch(spec, out, s))
    }

    /// [`Fft2::inverse_real`] with caller-owned scratch.
    pub fn inverse_real_with_scratch(
        &self,
        spec: &[Complex<T>],
        out: &mut [T],
        scratch: &mut Fft2Scratch<T>,
    ) {
        let d = self.d;
        assert_eq!(
            spec.len(),
            d * d,
            "spectrum length does not match the FFT plan"
        );
        assert_eq!(out.len(), d * d, "image length does not match the FFT plan");
        let w = d / 2 + 1;
        let h = d / 2;
        let half = T::from_f64(0.5 / (d * d) as f64).expect("finite");
        // 1. Hermitian part in FFT order, non-negative column frequencies only:
        //    H[qr][qc] = (G[qr][qc] + conj G[−qr][−qc]) / 2 / d², G[q] = X[(q + h) mod d].
        let wrap = |i: usize| if i >= d { i - d } else { i };
        for qr in 0..d {
            let row_a = &spec[wrap(qr + h) * d..][..d];
            let row_b = &spec[wrap((d - qr) % d + h) * d..][..d];
            let dst = &mut scratch.half[qr * w..(qr + 1) * w];
            for (qc, o) in dst.iter_mut().enumerate() {
                let a = row_a[wrap(qc + h)];
                let b = row_b[wrap(if qc == 0 { h } else { d - qc + h })];
                *o = Complex::new((a.re + b.re) * half, (a.im - b.im) * half);
            }
        }
        // 2. Inverse FFT of the columns (already in FFT order: no roll).
        columns_pass(
            &mut scratch.half,
            d,
            w,
            w,
            &*self.inverse,
            0,
            &mut scratch.block,
            &mut scratch.fft,
        );
        // 3. Complex-to-real inverse of every row; FFT position p goes to pixel p − h.
        for p in 0..d {
            let row = &mut scratch.half[p * w..(p + 1) * w];
            // Self-conjugate entries are real up to rounding; realfft wants them exact.
            row[0].im = T::zero();
            if d.is_multiple_of(2) {
                row[w - 1].im = T::zero();
            }
            self.c2r
                .process_with_scratch(row, &mut scratch.real, &mut scratch.rfft)
                .expect("buffer lengths are fixed by the plan");
            let j = (p + d - h) % d;
            let dst = &mut out[j * d..(j + 1) * d];
            // dst[c] = real[(c + h) mod d]
            dst[..d - h].copy_from_slice(&scratch.real[h..]);
            dst[d - h..].copy_from_slice(&scratch.real[..h]);
        }
    }
}

/// Forward centered transforms of a batch of real images (`n·d²` values, image after
/// image) into full centered spectra, in parallel.
///
/// # Panics
/// If the lengths are not equal multiples of `d²`.
pub fn fft2_forward_batch<T: FftNum>(plan: &Fft2<T>, images: &[T], out: &mut [Complex<T>]) {
    let len = plan.len();
    assert!(
        images.len().is_multiple_of(len) && out.len() == images.len(),
        "batch lengths do not match the FFT plan"
    );
    images
        .par_chunks_exact(len)
        .zip(out.par_chunks_exact_mut(len))
        .for_each(|(img, o)| plan.forward_real(img, o));
}

/// Real parts of the inverse centered transforms of a batch of full spectra, in parallel
/// (see [`Fft2::inverse_real`]).
///
/// # Panics
/// If the lengths are not equal multiples of `d²`.
pub fn fft2_inverse_batch<T: FftNum>(plan: &Fft2<T>, spectra: &[Complex<T>], out: &mut [T]) {
    let len = plan.len();
    assert!(
        spectra.len().is_multiple_of(len) && out.len() == spectra.len(),
        "batch lengths do not match the FFT plan"
    );
    spectra
        .par_chunks_exact(len)
        .zip(out.par_chunks_exact_mut(len))
        .for_each(|(sp, o)| plan.inverse_real(sp, o));
}

/// Complex centered transforms of a batch of images in place, in parallel.
///
/// # Panics
/// If `data.len()` is not a multiple of `d²`.
pub fn fft2_batch_inplace<T: FftNum>(plan: &Fft2<T>, data: &mut [Complex<T>], dir: Direction) {
    let len = plan.len();
    assert!(
        data.len().is_multiple_of(len),
        "batch length does not match the FFT plan"
    );
    data.par_chunks_exact_mut(len)
        .for_each(|img| plan.process(img, dir));
}
