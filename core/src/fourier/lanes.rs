//! Shared inner loops of the planned transforms: 1-D FFTs along strided axes with the
//! centering roll fused into the gather and scatter.
//!
//! Centering rolls. Along an axis of length `n`, let `h = n / 2`. The centered forward
//! transform is `fftshift ∘ fft ∘ fftshift`, where numpy's `fftshift` rolls by `+h`; the
//! inverse is `ifftshift ∘ ifft ∘ ifftshift`, which rolls by `−h`. A roll by `s` (`out[p] =
//! in[(p − s) mod n]`) before and after the plain FFT therefore uses `s = h` forward and
//! `s = n − h` inverse ([`roll_for`]); the two agree for even `n`. For even `n` the same
//! result can be had by multiplying by `(−1)^index` before and after (and by
//! `(−1)^(n/2)`), but a roll fused into the copy that a strided FFT needs anyway costs
//! nothing extra and also covers odd `n`.

use num_complex::Complex;
use rustfft::{Fft, FftNum};

use super::Direction;

/// Columns gathered per strided batch: enough for rustfft to amortize its call overhead,
/// few enough that the block stays in L1/L2 cache.
pub(crate) const BLOCK: usize = 16;

/// The centering roll `s` for one axis of length `n`.
pub(crate) fn roll_for(n: usize, dir: Direction) -> usize {
    match dir {
        Direction::Forward => n / 2,
        Direction::Inverse => (n - n / 2) % n.max(1),
    }
}

/// In-place FFTs of contiguous rows of length `fft.len()` with the centering roll `s`
/// before and after (`rotate_right(s)`: `out[p] = in[p − s]`).
pub(crate) fn rows_pass<T: FftNum>(
    data: &mut [Complex<T>],
    fft: &dyn Fft<T>,
    s: usize,
    scratch: &mut [Complex<T>],
) {
    let n = fft.len();
    if s != 0 {
        for row in data.chunks_exact_mut(n) {
            row.rotate_right(s);
        }
    }
    fft.process_with_scratch(data, scratch);
    if s != 0 {
        for row in data.chunks_exact_mut(n) {
            row.rotate_right(s);
        }
    }
}

/// FFTs along the slow axis of an `n × width` row-major block, for columns `0..ncols`,
/// with the centering roll `s` fused: column `c` is gathered as
/// `lane[p] = data[((p − s) mod n)·width + c]`, transformed, and scattered as
/// `data[((q + s) mod n)·width + c] = lane[q]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn columns_pass<T: FftNum>(
    data: &mut [Complex<T>],
    n: usize,
    width: usize,
    ncols: usize,
    fft: &dyn Fft<T>,
    s: usize,
    block: &mut [Complex<T>],
    scratch: &mut [Complex<T>],
) {
    debug_assert!(data.len() >= n * width && ncols <= width && block.len() >= BLOCK * n);
    let mut c0 = 0;
    while c0 < ncols {
        let nb = BLOCK.min(ncols - c0);
        for p in 0..n {
            let src = ((p + n - s) % n) * width + c0;
            let row = &data[src..src + nb];
            for (b, v) in row.iter().enumerate() {
                block[b * n + p] = *v;
            }
        }
        fft.process_with_scratch(&mut block[..nb * n], scratch);
        for q in 0..n {
            let dst = ((q + s) % n) * width + c0;
            let row = &mut data[dst..dst + nb];
            for (b, v) in row.iter_mut().enumerate() {
                *v = block[b * n + q];
            }
        }
        c0 += nb;
    }
}

/// Like [`columns_pass`], but the `n` rows of the block are separate slices (the z axis of
/// a volume, where row `z` is the `y`-th row of plane `z`).
pub(crate) fn split_rows_pass<T: FftNum>(
    rows: &mut [&mut [Complex<T>]],
    fft: &dyn Fft<T>,
    s: usize,
    block: &mut [Complex<T>],
    scratch: &mut [Complex<T>],
) {
    let n = rows.len();
    let width = rows.first().map_or(0, |r| r.len());
    let mut c0 = 0;
    while c0 < width {
        let nb = BLOCK.min(width - c0);
        for p in 0..n {
            let row = &rows[(p + n - s) % n][c0..c0 + nb];
            for (b, v) in row.iter().enumerate() {
                block[b * n + p] = *v;
            }
        }
        fft.process_with_scratch(&mut block[..nb * n], scratch);
        for q in 0..n {
            let row = &mut rows[(q + s) % n][c0..c0 + nb];
            for (b, v) in row.iter_mut().enumerate() {
                *v = block[b * n + q];
            }
        }
        c0 += nb;
    }
}

/// Multiply every element by `factor`.
pub(crate) fn scale<T: FftNum>(data: &mut [Complex<T>], factor: f64) {
    let f = T::from_f64(factor).expect("a float type represents a finite f64");
    for v in data.iter_mut() {
        v.re = v.re * f;
        v.im = v.im * f;
    }
}
