//! `recovar estimate_conformational_density` (algorithms.md §9) on a pipeline run: the
//! unregularized embedding of one zdim, deconvolved into a density on a grid of its first
//! `pca_dim` axes, written in the seed's `density/` layout:
//!
//! ```text
//! density/deconv_density_knee.pkl            {"density", "latent_space_bounds", "alpha"} at the L-curve knee
//! density/all_densities/deconv_density_{i}.pkl   one per alpha, in the order of the alphas
//! density/all_densities.png, Lcurve.png
//! ```

use std::path::PathBuf;

use crate::analysis::density::{estimate_density, write_density_outputs, DensityOptions};
use crate::error::{Error, Result};
use crate::progress::Progress;

use super::load::PipelineResult;

/// Options of `recovar estimate_conformational_density`.
#[derive(Clone, Debug, Default)]
pub struct DensityRunOptions {
    pub result_dir: PathBuf,
    /// `--output_dir` (default `result_dir/density`).
    pub output_dir: Option<PathBuf>,
    /// `--z_dim_used` (default: the smallest computed zdim ≥ pca_dim).
    pub z_dim_used: Option<usize>,
    pub density: DensityOptions,
}

/// What was estimated, for the CLI's summary.
#[derive(Clone, Debug)]
pub struct DensitySummary {
    pub output_dir: PathBuf,
    pub zdim: usize,
    pub pca_dim: usize,
    pub grid_points: usize,
    pub n_images: usize,
    pub n_used: usize,
    pub alphas: Vec<f64>,
    pub knee: usize,
}

/// The zdim whose embedding the density uses: `requested`, or the smallest computed one
/// that is at least `pca_dim`.
pub fn density_zdim(
    pr: &PipelineResult,
    requested: Option<usize>,
    pca_dim: usize,
) -> Result<usize> {
    let z = match requested {
        Some(z) => z,
        None => pr
            .zdims
            .iter()
            .copied()
            .filter(|&z| z >= pca_dim)
            .min()
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{} has no embedding with at least {pca_dim} dimensions (computed: {:?}); lower --pca_dim or rerun the pipeline with a larger --zdim",
                    pr.dir.display(),
                    pr.zdims
                ))
            })?,
    };
    if z < pca_dim {
        return Err(Error::invalid(format!(
            "--z_dim_used {z} is smaller than --pca_dim {pca_dim}"
        )));
    }
    Ok(z)
}

/// Run the density estimation (module docs).
pub fn run_density(opts: &DensityRunOptions, progress: &dyn Progress) -> Result<DensitySummary> {
    let pr = PipelineResult::load(&opts.result_dir)?;
    let pca_dim = opts.density.pca_dim;
    let zdim = density_zdim(&pr, opts.z_dim_used, pca_dim)?;
    let emb = pr.embedding(zdim, true)?;
    // Images the pipeline did not use have NaN rows (original-file indexing).
    let (mut zs, mut precisions) = (Vec::new(), Vec::new());
    let total = emb.contrasts.len();
    for i in 0..total {
        let row = &emb.zs[i * zdim..(i + 1) * zdim];
        if row.iter().all(|v| v.is_finite()) {
            zs.extend_from_slice(row);
            precisions.extend_from_slice(&emb.precisions[i * zdim * zdim..(i + 1) * zdim * zdim]);
        }
    }
    let n_images = zs.len() / zdim;
    tracing::info!(
        "density of the first {pca_dim} of {zdim} unregularized coordinates of {n_images} images, {} points per axis",
        opts.density.grid_points()
    );
    let dec = estimate_density(&zs, zdim, &precisions, &opts.density, progress)?;
    let output_dir = opts
        .output_dir
        .clone()
        .unwrap_or_else(|| opts.result_dir.join("density"));
    write_density_outputs(&output_dir, &dec)?;
    for (i, (a, c)) in dec.alphas.iter().zip(&dec.costs).enumerate() {
        tracing::info!(
            "alpha {a:.0e}: relative data misfit {c:.3e}{}",
            if i == dec.knee { "  (knee)" } else { "" }
        );
    }
    Ok(DensitySummary {
        output_dir,
        zdim,
        pca_dim,
        grid_points: opts.density.grid_points(),
        n_images,
        n_used: dec.n_used,
        alphas: dec.alphas.clone(),
        knee: dec.knee,
    })
}
