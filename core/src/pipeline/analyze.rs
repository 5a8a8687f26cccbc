//! `recovar analyze` (algorithms.md §8): k-means on an embedding, kernel-regression volumes
//! at the centers, low-free-energy trajectories between center pairs (through `--density`
//! when given, else through the embedding's own density; see [`super::trajectory`]), and the
//! figures, in the seed's `analysis_{zdim}[_noreg]/` layout:
//!
//! ```text
//! analysis_{z}/kmeans_center_coords.txt     centers (snapped to data points), one per line
//!             kmeans_result.pkl, centers.pkl {"centers": k × z, "labels": NaN-padded original indexing}
//!             kmeans_center_volumes/        vol****/, all_volumes/, latent_coords.txt
//!             traj{i}/                      vol****/, all_volumes/, latent_coords.txt, path.json, density/
//!             trajectory_endpoints.pkl      {"centers": pairs' endpoints, "pairs": i × 2}
//!             PCA/PC_01.png ...             scatter/density of the embedding's axis pairs
//!             umap/umap_embedding.pkl, sns.png, sns_hex.png, kmeans_centers*.png
//!             density_plots/, density_plots_sliced/   Gaussian KDE of the first ≤ 4 axes
//!             contrast_histogram.png, run.log, command.txt
//! ```

use std::path::PathBuf;

use crate::analysis::{embed2d, kde, kmeans, pairs, plots};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::generate::output::generate_and_write;
use crate::generate::{KernelOptions, Latent};
use crate::io::pickle::{self, NdArray, PyValue};
use crate::progress::Progress;

use super::load::PipelineResult;
use super::trajectory::{write_trajectory, TrajectoryContext};

/// Options of `recovar analyze`.
#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    pub result_dir: PathBuf,
    /// `--zdim` (None: the only one the pipeline computed).
    pub zdim: Option<usize>,
    /// `-o` (default `result_dir/analysis_{zdim}[_noreg]`).
    pub outdir: Option<PathBuf>,
    pub n_clusters: usize,
    pub n_trajectories: usize,
    pub skip_umap: bool,
    pub skip_centers: bool,
    pub normalize_kmeans: bool,
    pub n_vols_along_path: usize,
    pub no_z_regularization: bool,
    /// `--density`: a deconvolved density pickle; trajectories follow it and the density
    /// figures show it (None: trajectories through the embedding's own KDE, §10B).
    pub density: Option<PathBuf>,
    pub kernel: KernelOptions,
    pub seed: u64,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            result_dir: PathBuf::new(),
            zdim: None,
            outdir: None,
            n_clusters: 40,
            n_trajectories: 0,
            skip_umap: false,
            skip_centers: false,
            normalize_kmeans: false,
            n_vols_along_path: 6,
            no_z_regularization: false,
            density: None,
            kernel: KernelOptions::default(),
            seed: 0,
        }
    }
}

/// What analyze produced, for the CLI's summary.
#[derive(Clone, Debug)]
pub struct AnalyzeSummary {
    pub outdir: PathBuf,
    pub zdim: usize,
    pub n_clusters: usize,
    pub cluster_sizes: Vec<usize>,
    pub volumes: usize,
    pub trajectories: usize,
}

fn nan_padded(values: &[f32], cols: usize, orig: &[usize], total: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; total * cols];
    for (p, &o) in orig.iter().enumerate() {
        for c in 0..cols {
            out[o * cols + c] = values[p * cols + c] as f64;
        }
    }
    out
}

/// Run analyze (module docs).
pub fn run_analyze(
    opts: &AnalyzeOptions,
    backend: &dyn Backend,
    progress: &dyn Progress,
) -> Result<AnalyzeSummary> {
    let pr = PipelineResult::load(&opts.result_dir)?;
    let zdim = match opts.zdim {
        Some(z) => z,
        None => match pr.zdims.as_slice() {
            [z] => *z,
            [] => {
                return Err(Error::invalid(format!(
                    "{} has no embeddings (was the pipeline run with --only-mean?)",
                    opts.result_dir.display()
                )))
            }
            many => {
                return Err(Error::invalid(format!(
                    "the pipeline computed several embeddings ({many:?}): choose one with --zdim"
                )))
            }
        },
    };
    let outdir = opts.outdir.clone().unwrap_or_else(|| {
        opts.result_dir.join(format!(
            "analysis_{zdim}{}",
            if opts.no_z_regularization {
                "_noreg"
            } else {
                ""
            }
        ))
    });
    std::fs::create_dir_all(&outdir).map_err(|e| Error::io(&outdir, e))?;
    let emb = pr.embedding(zdim, opts.no_z_regularization)?;
    let mut ds = pr.open_dataset(None, None)?;
    let (zs, precisions, contrasts) = emb.for_dataset(&ds)?;
    ds.multiply_contrasts(&contrasts)?;
    let orig = ds.original_indices().to_vec();
    let total = ds.total_in_file();
    let n = ds.len();

    // k-means, centers snapped to data points.
    let k = opts.n_clusters.min(n);
    if k < opts.n_clusters {
        tracing::warn!(
            "only {n} images: {k} clusters instead of {}",
            opts.n_clusters
        );
    }
    let km = kmeans::kmeans(
        &zs,
        zdim,
        &kmeans::KmeansOptions {
            n_clusters: k,
            seed: opts.seed,
            normalize: opts.normalize_kmeans,
            ..Default::default()
        },
    )?;
    let centers: Vec<Vec<f32>> = km.centers.chunks(zdim).map(|c| c.to_vec()).collect();
    crate::generate::output::write_latent_points(
        &outdir.join("kmeans_center_coords.txt"),
        &centers,
    )?;
    let labels_f: Vec<f32> = km.labels.iter().map(|&l| l as f32).collect();
    let km_dict = PyValue::Dict(vec![
        (
            PyValue::Str("centers".into()),
            PyValue::Array(NdArray::from_f32(vec![k, zdim], km.centers.clone())?),
        ),
        (
            PyValue::Str("labels".into()),
            PyValue::Array(NdArray::from_f64(
                vec![total],
                nan_padded(&labels_f, 1, &orig, total),
            )?),
        ),
    ]);
    pickle::dump(outdir.join("kmeans_result.pkl"), &km_dict)?;
    pickle::dump(outdir.join("centers.pkl"), &km_dict)?;
    let mut cluster_sizes = vec![0usize; k];
    for &l in &km.labels {
        cluster_sizes[l] += 1;
    }
    tracing::info!("k-means: {k} clusters, sizes {cluster_sizes:?}");

    // Figures.
    let center_flat: Vec<f32> = km.centers.clone();
    plots::pca_scatter_plots(&outdir.join("PCA"), &zs, zdim, Some(&center_flat))?;
    plots::contrast_histogram(&outdir.join("contrast_histogram.png"), &contrasts)?;
    let density = match &opts.density {
        Some(p) => Some(crate::analysis::density::read_density(p)?),
        None => None,
    };
    match &density {
        Some(g) => plots::density_plots_with_centers(&outdir, g, &center_flat, zdim)?,
        None => plots::density_plots(&outdir, &kde::kde_grid(&zs, zdim, 50, zdim.min(4))?)?,
    }
    if zdim > 1 && !opts.skip_umap {
        let emb2 = embed2d::umap_2d(&zs, zdim, &embed2d::Umap2dOptions::default())?;
        let flat: Vec<f32> = emb2.iter().flat_map(|p| [p[0], p[1]]).collect();
        let umap_dir = outdir.join("umap");
        std::fs::create_dir_all(&umap_dir).map_err(|e| Error::io(&umap_dir, e))?;
        pickle::dump(
            umap_dir.join("umap_embedding.pkl"),
            &PyValue::Array(NdArray::from_f64(
                vec![total, 2],
                nan_padded(&flat, 2, &orig, total),
            )?),
        )?;
        let c2: Vec<[f32; 2]> = km.center_points.iter().map(|&p| emb2[p]).collect();
        plots::umap_plots(&umap_dir, &emb2, Some(&c2))?;
    }

    let latent = Latent {
        zdim,
        zs: &zs,
        precisions: &precisions,
    };
    let mut volumes = 0;
    if !opts.skip_centers {
        let s = generate_and_write(
            &outdir.join("kmeans_center_volumes"),
            &ds,
            backend,
            &pr.noise,
            latent,
            &centers,
            &opts.kernel,
            progress,
        )?;
        volumes += s.len();
    }

    // Trajectories between center pairs (zdim 1: between the 0.03 and 99.97 percentiles).
    let mut endpoints: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    let mut pair_idx: Vec<(usize, usize)> = Vec::new();
    if opts.n_trajectories > 0 {
        if zdim == 1 {
            let mut v: Vec<f64> = zs.iter().map(|&x| x as f64).collect();
            v.sort_by(f64::total_cmp);
            let q = |p: f64| crate::stats::percentile_sorted(&v, p).unwrap_or(f64::NAN) as f32;
            endpoints.push((vec![q(0.03)], vec![q(99.97)]));
        } else {
            for (a, b) in pairs::pick_pairs(&km.centers, zdim, opts.n_trajectories) {
                pair_idx.push((a, b));
                endpoints.push((centers[a].clone(), centers[b].clone()));
            }
        }
    }
    let ctx = TrajectoryContext {
        ds: &ds,
        backend,
        noise: &pr.noise,
        latent,
        density: density.as_ref(),
        kernel: &opts.kernel,
        n_vols_along_path: opts.n_vols_along_path,
        progress,
    };
    for (i, (a, b)) in endpoints.iter().enumerate() {
        let t = write_trajectory(&outdir.join(format!("traj{i}")), &ctx, a, b)?;
        volumes += t.volumes.len();
    }
    if !endpoints.is_empty() {
        let flat: Vec<f32> = endpoints
            .iter()
            .flat_map(|(a, b)| a.iter().chain(b.iter()).copied())
            .collect();
        let pairs_flat: Vec<i64> = pair_idx
            .iter()
            .flat_map(|&(a, b)| [a as i64, b as i64])
            .collect();
        pickle::dump(
            outdir.join("trajectory_endpoints.pkl"),
            &PyValue::Dict(vec![
                (
                    PyValue::Str("centers".into()),
                    PyValue::Array(NdArray::from_f32(vec![endpoints.len(), 2, zdim], flat)?),
                ),
                (
                    PyValue::Str("pairs".into()),
                    PyValue::Array(NdArray::from_i64(vec![pair_idx.len(), 2], pairs_flat)?),
                ),
            ]),
        )?;
    }
    Ok(AnalyzeSummary {
        outdir,
        zdim,
        n_clusters: k,
        cluster_sizes,
        volumes,
        trajectories: endpoints.len(),
    })
}
