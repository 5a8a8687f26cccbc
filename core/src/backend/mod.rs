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

pub mod columns;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
mod cuda_columns;
mod device;

pub use columns::{ColumnAccumulator, ColumnBatch, ColumnSums};
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
pub use device::{select, Device, Selected};

use num_complex::Complex;

use crate::dataset::CtfParams;
use crate::error::{Error, Result};
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

    /// An accumulator of covariance columns (algorithms.md §5.4, [`columns`]) for images of
    /// side `d` with the radial noise image `noise` (`σ²(p)`, `d × d`), holding at most
    /// `max_columns` columns per pass (fewer when the device cannot hold them: its
    /// [`ColumnAccumulator::capacity`] says; the results never depend on it).
    fn column_accumulator(
        &self,
        d: usize,
        noise: &[f32],
        max_columns: usize,
    ) -> Result<Box<dyn ColumnAccumulator + '_>>;
}

/// One batch of a dataset's images in the form the model compares with projections: the
/// shifted centered spectra `T_i y_i`, the CTFs `C_i`, and the rotations and CTF rows of
/// the batch. The read-and-transform step every pass over the images starts with.
pub struct ImageBatch {
    /// `n × D²` centered spectra, shifted by each image's translation.
    pub spectra: Vec<Complex<f32>>,
    /// `n × D²` CTF values (contrast included).
    pub ctf: Vec<f32>,
    /// The batch's rotations.
    pub rotations: Vec<[f32; 9]>,
    /// The batch's CTF rows.
    pub params: Vec<CtfParams>,
}

impl ImageBatch {
    /// Read the images at dataset `positions` and transform them on `backend`;
    /// `rotations` and `ctf` are the dataset's (all images). The real-space images are
    /// freed before the CTFs are allocated.
    pub fn read(
        ds: &crate::dataset::Dataset,
        backend: &dyn Backend,
        positions: &[usize],
        rotations: &[[f32; 9]],
        ctf: &[CtfParams],
    ) -> Result<Self> {
        let d = ds.box_size();
        let len = positions.len() * d * d;
        let mut real = vec![0.0f32; len];
        ds.read_images(positions, &mut real)?;
        let shifts: Vec<[f32; 2]> = positions.iter().map(|&p| ds.translations()[p]).collect();
        let rots: Vec<[f32; 9]> = positions.iter().map(|&p| rotations[p]).collect();
        let params: Vec<CtfParams> = positions.iter().map(|&p| ctf[p]).collect();
        let mut spectra = vec![Complex::new(0.0f32, 0.0); len];
        backend.images_to_spectra(&real, d, &shifts, &mut spectra)?;
        drop(real);
        let mut c = vec![0.0f32; len];
        backend.ctf(&params, d, ds.voxel_size(), &mut c)?;
        Ok(ImageBatch {
            spectra,
            ctf: c,
            rotations: rots,
            params,
        })
    }
}

/// `len` must hold `n` images of `d × d`.
pub(crate) fn check_images(len: usize, n: usize, d: usize, what: &str) -> Result<()> {
    let want = n.checked_mul(d).and_then(|v| v.checked_mul(d));
    if d == 0 || want != Some(len) {
        return Err(Error::invalid(format!(
            "{what}: {len} values given; {n} images of {d}×{d} need {}",
            want.map(|w| w.to_string())
                .unwrap_or_else(|| "more than fits".into())
        )));
    }
    Ok(())
}

/// The arguments of [`Backend::images_to_spectra`]: `images` and `out` hold one `d × d`
/// image per shift, and every shift is finite.
pub(crate) fn check_to_spectra(
    images: usize,
    d: usize,
    shifts_px: &[[f32; 2]],
    out: usize,
) -> Result<()> {
    let n = shifts_px.len();
    check_images(images, n, d, "images")?;
    check_images(out, n, d, "spectra output")?;
    if let Some((i, _)) = shifts_px
        .iter()
        .enumerate()
        .find(|(_, s)| !s[0].is_finite() || !s[1].is_finite())
    {
        return Err(Error::invalid(format!("shift {i} is not finite")));
    }
    Ok(())
}

/// The arguments of [`Backend::spectra_to_images`]: `spectra` holds whole `d × d` images
/// and `out` as many; returns their number.
pub(crate) fn check_to_images(spectra: usize, d: usize, out: usize) -> Result<usize> {
    if d == 0 || !spectra.is_multiple_of(d * d) {
        return Err(Error::invalid(format!(
            "spectra: {spectra} values is not a whole number of {d}×{d} images"
        )));
    }
    let n = spectra / (d * d);
    check_images(out, n, d, "image output")?;
    Ok(n)
}
