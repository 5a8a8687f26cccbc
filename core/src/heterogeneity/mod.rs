//! Heterogeneity: the variance, the regularized covariance columns, the principal components
//! and the per-image embeddings (algorithms.md §5, §6, §2.5).
//!
//! Every stage works from a [`Context`]: the dataset, the backend, the combined mean, the
//! noise model and the masks produced by the homogeneous stage.
//!
//! Conventions shared by the modules here (see also `crate::forward`):
//! - Volumes are centered `N³` spectra (`Complex<f32>`), z slowest, x fastest; real-space
//!   volumes are `f32`. Frequencies are integer grid coordinates `(kx, ky, kz)` with the
//!   voxel `(z, y, x) = (kz, ky, kx) + N/2`.
//! - Eigenvectors are Fourier-space vectors normalised so that `Σ|u(k)|² = N³` (unit norm of
//!   the real-space volume `IDFT3(u)`, since the forward DFT is unnormalised); a volume is
//!   `x = μ + Σ_k z_k u_k` with `z ~ N(0, diag(λ))`.
//! - The noise model is a radial profile σ²(r) of `N/2 − 1` shells on the unnormalised-DFT
//!   scale; pixels beyond the last shell use the last value.
//! - Results never depend on batch sizes or thread counts; random choices take a seed.

pub mod columns;
pub mod embedding;
pub mod pca;
pub mod variance;

use num_complex::Complex;

use crate::backend::Backend;
use crate::dataset::Dataset;
use crate::error::{Error, Result};

/// What every heterogeneity stage needs from the homogeneous one.
pub struct Context<'a> {
    /// The particles, poses and CTF (with any contrast already in the CTF rows).
    pub ds: &'a Dataset,
    /// Where the batched heavy work runs.
    pub backend: &'a dyn Backend,
    /// The combined mean, centered `N³` spectrum.
    pub mean: &'a [Complex<f32>],
    /// Radial noise profile σ²(r), `N/2 − 1` shells (unnormalised-DFT scale).
    pub noise: &'a [f64],
    /// Solvent (or focus) mask, real `N³`.
    pub volume_mask: &'a [f32],
    /// Dilated mask, real `N³` (per-image tight masks are made from it).
    pub dilated_mask: &'a [f32],
    /// Images per batch (from the memory budget; never changes results).
    pub batch_size: usize,
}

impl Context<'_> {
    /// Volume side N (= image side D).
    pub fn n(&self) -> usize {
        self.ds.box_size()
    }

    /// Check the pieces agree with each other.
    pub fn validate(&self) -> Result<()> {
        let n = self.n();
        let n3 = n * n * n;
        if self.mean.len() != n3 || self.volume_mask.len() != n3 || self.dilated_mask.len() != n3 {
            return Err(Error::invalid(format!(
                "heterogeneity context: mean {} / mask {} / dilated mask {} values; N³ = {n3}",
                self.mean.len(),
                self.volume_mask.len(),
                self.dilated_mask.len()
            )));
        }
        if self.noise.len() != n / 2 - 1 {
            return Err(Error::invalid(format!(
                "heterogeneity context: the noise profile must have {} shells, got {}",
                n / 2 - 1,
                self.noise.len()
            )));
        }
        if let Some((r, v)) = self
            .noise
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite() || **v <= 0.0)
        {
            return Err(Error::invalid(format!(
                "heterogeneity context: the noise variance of shell {r} is {v}; it must be positive and finite"
            )));
        }
        if self.ds.rotations().is_none() || self.ds.ctf().is_none() {
            return Err(Error::invalid(
                "heterogeneity needs poses and CTF parameters",
            ));
        }
        Ok(())
    }
}

/// Options of the covariance and PCA stages (algorithms.md §5.1). The number of columns and
/// PCs comes from these options only, never from the machine.
#[derive(Clone, Debug)]
pub struct CovarianceOptions {
    /// Covariance columns to estimate (`sampling_n_cols`).
    pub n_cols: usize,
    /// Exclusion radius around picked frequencies, grid units.
    pub avoid_radius: f64,
    /// Only frequencies with |ξ| below this are picked.
    pub max_column_freq: f64,
    /// Columns of the random test matrix in the randomized SVD.
    pub sketch_size: usize,
    /// Basis size for the projected covariance.
    pub n_pcs: usize,
    /// FSC fixed-point iterations per column.
    pub prior_iterations: usize,
    /// Per-image tight masks in the column accumulation (`--dont-use-image-mask` turns off).
    pub mask_images: bool,
    /// Seed of the randomized SVD's test matrix.
    pub seed: u64,
}

impl Default for CovarianceOptions {
    fn default() -> Self {
        CovarianceOptions {
            n_cols: 300,
            avoid_radius: 2.0,
            max_column_freq: 32.0,
            sketch_size: 300,
            n_pcs: 200,
            prior_iterations: 20,
            mask_images: true,
            seed: 0,
        }
    }
}

impl CovarianceOptions {
    /// `--low-memory-option`: 50 columns, sketch 100, exclusion radius 3.
    pub fn low_memory() -> Self {
        CovarianceOptions {
            n_cols: 50,
            sketch_size: 100,
            avoid_radius: 3.0,
            n_pcs: 100,
            ..Default::default()
        }
    }

    /// `--very-low-memory-option`: 25 columns, sketch 35, 30 PCs, exclusion radius 3.
    pub fn very_low_memory() -> Self {
        CovarianceOptions {
            n_cols: 25,
            sketch_size: 35,
            avoid_radius: 3.0,
            n_pcs: 30,
            ..Default::default()
        }
    }
}
