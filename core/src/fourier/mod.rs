//! Centered discrete Fourier (and Hartley) transforms, radial shells, Fourier resizing,
//! FSC and resolution, real-space masks.
//!
//! Conventions, stated once (algorithms.md §1.2):
//! - **Centered DFT**: `F = fftshift(fft(fftshift(x)))` along every axis, so array index
//!   `n/2` holds frequency 0 and the real-space origin also sits at index `n/2`. For odd `n`
//!   numpy's `fftshift` rolls by `n/2` (rounded down) and `ifftshift` by `−(n/2)`; the
//!   inverse is `ifftshift(ifft(ifftshift(X)))`; we follow numpy exactly (that is also what
//!   cryoDRGN's `fft2_center` does). Even sizes are the norm.
//! - **Normalization**: the forward transform is unnormalized; the inverse divides by the
//!   number of elements (numpy's "backward" norm). White real-space noise of variance σ²
//!   thus has Fourier variance `d²σ²` per pixel (2-D).
//! - **Images** are `d × d`, row-major, row = y. Pixel (row r, col c) has integer
//!   frequency `(kx, ky) = (c − d/2, r − d/2)`, in cycles/Å `(kx, ky)/(d·apix)`.
//! - **Volumes** are `n × n × n`, z-slowest, x-fastest (MRC order: `flat = (z·n + y)·n + x`);
//!   voxel `(z, y, x)` has frequency `(kx, ky, kz) = (x − n/2, y − n/2, z − n/2)`. (The
//!   Python tool transposes MRC cubes internally; the physics is the same: slicing maps
//!   image `(kx, ky)` to `[kx, ky, 0]·R` and reads the volume at `(gx, gy, gz)`.)
//! - **Storage**: `f32` (spectra as `Complex<f32>`), with `f64` accumulation where sums over
//!   many values need it. The planned transforms are generic over the float type.
//!
//! Which transform to use:
//! - [`Fft2`] / [`Fft3`]: planned, fast, f32 (or f64) — images and volumes in the
//!   pipeline; batch helpers [`fft2_forward_batch`], [`fft2_inverse_batch`],
//!   [`fft2_batch_inplace`] run over many images with rayon.
//! - [`CenteredFft`]: generic N-d, f64 — the reference the planned ones are tested
//!   against, and the basis of cryoDRGN's Hartley crop ([`hartley_crop`]).

mod crop;
mod fft;
mod fft2;
mod fft3;
mod fsc;
mod lanes;
mod mask;
mod resize;
mod shells;

pub use crop::{hartley_crop, HartleyCropper};
pub use fft::{CenteredFft, Direction};
pub use fft2::{fft2_batch_inplace, fft2_forward_batch, fft2_inverse_batch, Fft2, Fft2Scratch};
pub use fft3::Fft3;
pub(crate) use fsc::fsc_from_sums;
pub use fsc::{
    apply_fsc_weighting, bfactor_sharpen, fsc, fsc_crossing, fsc_resolutions, fsc_weights,
    low_pass_filter, resolution_at, FscResolutions,
};
pub use mask::{
    gridding_correct, soft_mask_outside_map, soft_sphere, window_mask_2d, GriddingKernel,
};
pub use resize::{fourier_resize_2d, fourier_resize_3d, resample_volume};
pub use shells::{
    centered_freq, expand_profile, frequency_grid_2d, frequency_grid_3d, n_shells, radial_mean,
    radial_sum, radial_to_image_2d, radial_to_image_3d, shell_counts, shell_index_2d,
    shell_index_3d, valid_disk_mask_2d, valid_sphere_mask_3d,
};
