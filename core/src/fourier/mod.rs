//! Centered discrete Fourier (and Hartley) transforms and Fourier cropping.
//!
//! Conventions, stated once (algorithms.md §1.2):
//! - **Centered DFT**: `F = fftshift(fft(fftshift(x)))` along every axis, so array index
//!   `n/2` holds frequency 0 and the real-space origin also sits at index `n/2`. For odd `n`
//!   numpy's `fftshift` rolls by `n/2` (rounded down) both before and after, and so do we
//!   (that is what cryoDRGN's `fft2_center` does).
//! - **Normalization**: the forward transform is unnormalized; the inverse divides by the
//!   number of elements (numpy's "backward" norm).
//! - Arrays are row-major (C order); the last axis is the fastest.

mod crop;
mod fft;

pub use crop::{hartley_crop, HartleyCropper};
pub use fft::{CenteredFft, Direction};
