//! The one interface for the batched heavy operations of the image-formation model.
//!
//! Science code (mean, noise, covariance, embedding, kernel regression) calls a
//! [`Backend`] and never loops over images itself, so a CUDA backend can take over the hot
//! loops later without touching it. Every call therefore takes and returns plain contiguous
//! buffers (images `n × D²`, volumes `Nv³`, rotations `n × 9`, conventions in
//! [`crate::forward`]) and checks their lengths, returning an error that names the numbers
//! rather than panicking.
//!
//! Contract for every implementation: results depend on the inputs only, never on the
//! hardware, the thread count or how the caller cut the data into batches (accumulating
//! calls add their contributions to the accumulator in image order, see
//! [`crate::forward::slice`](mod@crate::forward::slice)). Tests compare other backends
//! against [`CpuBackend`].

mod cpu;

pub use cpu::CpuBackend;

use num_complex::Complex;

use crate::dataset::CtfParams;
use crate::error::Result;
use crate::forward::{Interp, SliceGeometry};

/// The batched operations of the image-formation model.
pub trait Backend: Send + Sync {
    /// A short name for logs ("cpu", "cuda:0").
    fn name(&self) -> &str;

    /// `out[i·D² ..][..D²] = P(R_i) volume` for each rotation (images as centered `D × D`
    /// spectra). For [`Interp::Cubic`], `volume` holds spline coefficients
    /// ([`crate::forward::cubic::prefilter`]).
    fn slice(
        &self,
        volume: &[Complex<f32>],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        out: &mut [Complex<f32>],
    ) -> Result<()>;

    /// `acc += Σ_i P(R_i)ᵀ images_i`. For [`Interp::Cubic`] the sum is in spline-coefficient
    /// space: apply [`crate::forward::cubic::prefilter`] to the finished accumulator.
    fn backproject(
        &self,
        images: &[Complex<f32>],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [Complex<f64>],
    ) -> Result<()>;

    /// `acc += Σ_i P(R_i)ᵀ values_i` for real per-pixel values (e.g. CTF²/σ²): the same
    /// voxels and weights as [`Backend::backproject`], a real accumulator.
    fn backproject_real(
        &self,
        values: &[f32],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [f64],
    ) -> Result<()>;

    /// `out[i·D² ..][..D²]` = the CTF of `params[i]` on the centered `D × D` grid at pixel
    /// size `voxel_size` Å (contrast and B-factor included; [`crate::forward::ctf`]).
    fn ctf(&self, params: &[CtfParams], d: usize, voxel_size: f64, out: &mut [f32]) -> Result<()>;

    /// Real images (`n × D²`) to their centered spectra, each multiplied by the phase ramp
    /// of its shift (`T_i y_i`, [`crate::forward::shift`]): the form in which the model
    /// compares data with `C·P(R) x`.
    fn images_to_spectra(
        &self,
        images: &[f32],
        d: usize,
        shifts_px: &[[f32; 2]],
        out: &mut [Complex<f32>],
    ) -> Result<()>;

    /// Centered spectra (`n × D²`) to real images (the real part of the inverse DFT).
    fn spectra_to_images(&self, spectra: &[Complex<f32>], d: usize, out: &mut [f32]) -> Result<()>;
}
