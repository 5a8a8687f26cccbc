//! The image-formation model `y = C · P(R) x`, shifted by `t` (algorithms.md §1).
//!
//! # Conventions (stated once, used by every operator here and in [`crate::backend`])
//!
//! - **Images** are `D × D`, row-major (row = y), `D` even. Pixel (row `r`, column `c`) holds
//!   frequency `(kx, ky) = (c − D/2, r − D/2)` of the centered spectrum (index `D/2` is
//!   frequency 0; [`crate::fourier`] states the centered-DFT and normalization conventions).
//! - **Volumes** are `Nv × Nv × Nv`, stored z slowest, x fastest (MRC order:
//!   `flat = (z·Nv + y)·Nv + x`). Voxel `(z, y, x)` is grid coordinate
//!   `(gx, gy, gz) = (x, y, z)` with frequency `(x − Nv/2, y − Nv/2, z − Nv/2)`. (The Python
//!   tool stores the transposed cube, indexing `[gx, gy, gz]`; same physics.)
//! - **Rotations** are 3×3 row-major matrices `R` in cryoDRGN's convention (see
//!   [`crate::dataset::rotation_from_relion`]). Rows 0 and 1 are the image x and y axes in the
//!   volume frame, row 2 the viewing direction: the slice of pixel `(kx, ky)` sits at
//!   `g = s·(kx·R[0,:] + ky·R[1,:]) + Nv/2`, with `s = Nv / D` (1 on the `N` grid, 2 on the
//!   oversampled `2N` grid of the mean and kernel-regression reconstructions; algorithms.md
//!   §18 item 11: the scaled form is the correct one). Its 2-D inverse DFT is the projection
//!   of the real-space volume along `R[2,:]` (Fourier-slice theorem; tested).
//! - **Clipping**: pixels with `kx² + ky² > max_r²` (unrotated image frequencies) are zero
//!   after slicing and ignored by backprojection; the default `max_r = D/2 − 1`, `None` keeps
//!   every pixel ([`SliceGeometry`]).
//! - **Boundaries**: nearest and trilinear treat voxels outside the grid as 0 (zero padding).
//!   Cubic is a periodic B-spline: the volume is first turned into spline coefficients by
//!   [`cubic::prefilter`] (per axis `c = f / (4/6 + (2/6)·cos(2πω/Nv))`), then the 4×4×4
//!   stencil wraps around.
//! - **Adjoint**: backprojection scatters `value · weight` into exactly the voxels and
//!   weights that slicing reads, with the same clipping, so `<P x, y> = <x, Pᵀ y>` to
//!   rounding (complex inner product `Σ conj(a)·b`). For cubic the scatter lands in
//!   coefficient space; apply [`cubic::prefilter`] to the accumulator afterwards.
//! - **Precision and determinism**: volumes and images are `Complex<f32>`; backprojection
//!   accumulates in `f64` and in a fixed order, so results do not depend on the thread count
//!   or on batch sizes ([`slice`](mod@slice) module docs).

pub mod ctf;
pub mod cubic;
pub mod shift;
pub mod slice;

pub use slice::{
    backproject, backproject_batch, backproject_real, backproject_real_batch, slice, slice_batch,
    Interp, SliceGeometry,
};
