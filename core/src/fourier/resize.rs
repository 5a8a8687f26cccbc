//! Fourier cropping and zero padding of complex centered spectra, and real-space
//! resampling through them.
//!
//! A frequency keeps its integer value: index `j` of a side-`m` grid holds frequency
//! `j − m/2`, so cropping from `n_from` to `n_to < n_from` keeps input indices
//! `n_from/2 − n_to/2 ..` (the central block) and padding puts the whole input there,
//! zeros around it. Works for any parities.
//!
//! The unpaired Nyquist plane. On an even side `m` the frequency `−m/2` has no `+m/2`
//! partner. After cropping to an even `n_to`, the plane at `−n_to/2` of a real signal's
//! spectrum holds values whose conjugate partners were cut away; after padding from an
//! even `n_from`, the input's `−n_from/2` plane lands at an ordinary frequency of the
//! bigger grid without its partner. Either way the result is no longer Hermitian (its
//! inverse is not real). With `zero_nyquist = true` every plane at frequency `−m/2`,
//! `m = min(n_from, n_to)` (when `m` is even), is zeroed on every axis — what RECOVAR's
//! simulator does when it crops volumes. With `false` the values are kept as they are
//! (taking the real part of the inverse then treats the plane as Hermitian in itself).

use num_complex::Complex;

use super::fft3::Fft3;
use crate::{Error, Result};

fn check_sizes(len: usize, n_from: usize, n_to: usize, ndim: u32) -> Result<()> {
    if n_from == 0 || n_to == 0 {
        return Err(Error::invalid("Fourier resize: sizes must be positive"));
    }
    if len != n_from.pow(ndim) {
        return Err(Error::invalid(format!(
            "Fourier resize: {len} values do not form a {ndim}-D grid of side {n_from}"
        )));
    }
    Ok(())
}

/// For each output index along one axis: the input index holding the same frequency, or
/// `None` (outside the input, or a zeroed Nyquist plane).
fn axis_map(n_from: usize, n_to: usize, zero_nyquist: bool) -> Vec<Option<usize>> {
    let m = n_from.min(n_to);
    (0..n_to)
        .map(|j| {
            let f = j as i64 - (n_to / 2) as i64;
            let i = f + (n_from / 2) as i64;
            let unpaired = zero_nyquist && m.is_multiple_of(2) && f == -((m / 2) as i64);
            if i < 0 || i >= n_from as i64 || unpaired {
                None
            } else {
                Some(i as usize)
            }
        })
        .collect()
}

/// Crop or zero-pad a centered `d_from × d_from` spectrum to `d_to × d_to` (see the
/// module doc for `zero_nyquist`).
pub fn fourier_resize_2d<T: Copy + Default>(
    spec: &[Complex<T>],
    d_from: usize,
    d_to: usize,
    zero_nyquist: bool,
) -> Result<Vec<Complex<T>>> {
    check_sizes(spec.len(), d_from, d_to, 2)?;
    let map = axis_map(d_from, d_to, zero_nyquist);
    let mut out = vec![Complex::<T>::default(); d_to * d_to];
    for (r, mr) in map.iter().enumerate() {
        let Some(ir) = mr else { continue };
        for (c, mc) in map.iter().enumerate() {
            if let Some(ic) = mc {
                out[r * d_to + c] = spec[ir * d_from + ic];
            }
        }
    }
    Ok(out)
}

/// Crop or zero-pad a centered `n_from³` spectrum to `n_to³` (see the module doc for
/// `zero_nyquist`).
pub fn fourier_resize_3d<T: Copy + Default>(
    spec: &[Complex<T>],
    n_from: usize,
    n_to: usize,
    zero_nyquist: bool,
) -> Result<Vec<Complex<T>>> {
    check_sizes(spec.len(), n_from, n_to, 3)?;
    let map = axis_map(n_from, n_to, zero_nyquist);
    let mut out = vec![Complex::<T>::default(); n_to * n_to * n_to];
    for (z, mz) in map.iter().enumerate() {
        let Some(iz) = mz else { continue };
        for (y, my) in map.iter().enumerate() {
            let Some(iy) = my else { continue };
            let src = (iz * n_from + iy) * n_from;
            let dst = (z * n_to + y) * n_to;
            for (x, mx) in map.iter().enumerate() {
                if let Some(ix) = mx {
                    out[dst + x] = spec[src + ix];
                }
            }
        }
    }
    Ok(out)
}

/// Resample a real `n_from³` volume to `n_to³` by cropping or zero-padding its centered
/// spectrum ([`fourier_resize_3d`]) and taking the real part of the inverse.
///
/// Scale: the forward transform is unnormalized and the inverse divides by `n_to³`, so the
/// result is multiplied by `(n_to/n_from)³` to keep values: a constant volume stays the
/// same constant, and a band-limited volume is sampled on the new grid (same physical
/// extent, voxel size scaled by `n_from/n_to`). (cryoDRGN's `downsample` does not rescale:
/// see [`super::hartley_crop`].)
pub fn resample_volume(
    vol: &[f32],
    n_from: usize,
    n_to: usize,
    zero_nyquist: bool,
) -> Result<Vec<f32>> {
    check_sizes(vol.len(), n_from, n_to, 3)?;
    let spec = Fft3::<f32>::new(n_from).forward_real_vec(vol);
    let mut resized = fourier_resize_3d(&spec, n_from, n_to, zero_nyquist)?;
    drop(spec);
    let mut out = vec![0.0f32; n_to * n_to * n_to];
    Fft3::<f32>::new(n_to).inverse_to_real(&mut resized, &mut out);
    let s = (n_to as f64 / n_from as f64).powi(3) as f32;
    for v in out.iter_mut() {
        *v *= s;
    }
    Ok(out)
}
