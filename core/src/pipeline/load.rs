//! Reading a pipeline output directory back (for `compute_state`, `analyze`, ...), and the
//! homogeneous stages needed when there is none (`generate_from_embedding`).

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::dataset::{Dataset, DatasetOptions, Uninvert};
use crate::error::{Error, Result};
use crate::io::npy::NpyArray;
use crate::io::pickle::{self, PyValue};
use crate::progress::Progress;
use crate::reconstruct::mask::{make_masks, MaskOption, MaskSettings};
use crate::reconstruct::mean::{estimate_mean, MeanFn};
use crate::reconstruct::noise::{estimate_noise, initial_noise, NoiseModel};

/// What `analyze`/`compute_state` need from a pipeline run.
#[derive(Clone, Debug)]
pub struct PipelineResult {
    pub dir: PathBuf,
    /// The dataset as the pipeline opened it (halfsets from model/halfsets.pkl).
    pub dataset: DatasetOptions,
    /// Sign the pipeline applied to the images (after its automatic check).
    pub data_sign: f32,
    /// Radial noise profile the pipeline used last (`noise_var_used`).
    pub noise: Vec<f64>,
    pub box_size: usize,
    pub voxel_size: f64,
    /// Latent dimensions with embeddings on disk.
    pub zdims: Vec<usize>,
}

/// One zdim's embedding in original-file indexing (NaN rows for unused particles).
#[derive(Clone, Debug)]
pub struct StoredEmbedding {
    pub zdim: usize,
    /// `total × zdim`.
    pub zs: Vec<f32>,
    /// `total × zdim × zdim`.
    pub precisions: Vec<f32>,
    /// `total`.
    pub contrasts: Vec<f32>,
}

impl StoredEmbedding {
    /// Rows of the dataset's images (positions in dataset order), with contrasts.
    pub fn for_dataset(&self, ds: &Dataset) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let z = self.zdim;
        let total = self.contrasts.len();
        let mut zs = Vec::with_capacity(ds.len() * z);
        let mut pr = Vec::with_capacity(ds.len() * z * z);
        let mut c = Vec::with_capacity(ds.len());
        for &o in ds.original_indices() {
            if o >= total {
                return Err(Error::inconsistent(format!(
                    "particle {o} is beyond the embedding's {total} rows: the particles do not match the pipeline's"
                )));
            }
            let row = &self.zs[o * z..(o + 1) * z];
            if row.iter().any(|v| !v.is_finite()) {
                return Err(Error::inconsistent(format!(
                    "particle {o} has no embedding (NaN row): it was not used by the pipeline; select the same particles (--ind)"
                )));
            }
            zs.extend_from_slice(row);
            pr.extend_from_slice(&self.precisions[o * z * z..(o + 1) * z * z]);
            c.push(self.contrasts[o]);
        }
        Ok((zs, pr, c))
    }
}

fn read_npy_f32(path: &Path, expect_cols: usize) -> Result<(Vec<f32>, usize)> {
    let a = NpyArray::read(path)?;
    let v: Vec<f32> = a.to_f64()?.into_iter().map(|x| x as f32).collect();
    let rows = a.shape().first().copied().unwrap_or(0);
    let cols: usize = a.shape().iter().skip(1).product();
    if rows * cols.max(1) != v.len() || (expect_cols > 0 && cols.max(1) != expect_cols) {
        return Err(Error::format(
            path,
            format!(
                "expected rows of {expect_cols} values, got shape {:?}",
                a.shape()
            ),
        ));
    }
    Ok((v, rows))
}

fn str_arg(args: Option<&PyValue>, key: &str) -> Option<String> {
    args?.get(key)?.as_str().map(str::to_string)
}

impl PipelineResult {
    /// Load `dir` (the `-o` of `recovar pipeline`).
    pub fn load(dir: &Path) -> Result<Self> {
        let params_path = dir.join("model").join("params.pkl");
        if !params_path.exists() {
            return Err(Error::invalid(format!(
                "{} is not a pipeline output directory: {} does not exist",
                dir.display(),
                params_path.display()
            )));
        }
        let params = pickle::load(&params_path)?;
        let bad = |what: &str| Error::format(&params_path, format!("missing or malformed {what}"));
        let shape = params
            .get("volume_shape")
            .and_then(|v| v.as_seq())
            .ok_or_else(|| bad("volume_shape"))?;
        let box_size = shape
            .first()
            .and_then(|v| v.as_i64())
            .ok_or_else(|| bad("volume_shape"))? as usize;
        let voxel_size = params
            .get("voxel_size")
            .and_then(|v| v.as_f64())
            .ok_or_else(|| bad("voxel_size"))?;
        let noise = params
            .get("noise_var_used")
            .and_then(|v| v.as_array())
            .map(|a| a.to_f64_vec())
            .ok_or_else(|| bad("noise_var_used"))?;
        let data_sign = params
            .get("data_sign")
            .and_then(|v| v.as_f64())
            .unwrap_or(1.0) as f32;
        let args = params.get("input_args");
        let particles = str_arg(args, "particles").ok_or_else(|| bad("input_args.particles"))?;
        let path_arg = |k: &str| {
            str_arg(args, k)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        let n_images = args
            .and_then(|a| a.get("n_images"))
            .and_then(|v| v.as_i64())
            .map(|v| v as usize);
        let halfsets = dir.join("model").join("halfsets.pkl");
        let dataset = DatasetOptions {
            particles: PathBuf::from(particles),
            poses: path_arg("poses"),
            ctf: path_arg("ctf"),
            datadir: path_arg("datadir"),
            ind: path_arg("ind"),
            n_images,
            halfsets: halfsets.exists().then_some(halfsets),
            uninvert: Uninvert::False,
            require_poses: true,
            require_ctf: true,
            ..Default::default()
        };
        let mut zdims = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir.join("model")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(z) = name.strip_prefix("zdim_").and_then(|s| s.parse().ok()) {
                    zdims.push(z);
                }
            }
        }
        zdims.sort_unstable();
        Ok(PipelineResult {
            dir: dir.to_path_buf(),
            dataset,
            data_sign,
            noise,
            box_size,
            voxel_size,
            zdims,
        })
    }

    /// Open the pipeline's dataset; `particles`/`datadir` replace the stack (e.g. a
    /// higher-resolution one of the same particles).
    pub fn open_dataset(
        &self,
        particles: Option<&Path>,
        datadir: Option<&Path>,
    ) -> Result<Dataset> {
        let mut o = self.dataset.clone();
        if let Some(p) = particles {
            o.particles = p.to_path_buf();
        }
        if let Some(d) = datadir {
            o.datadir = Some(d.to_path_buf());
        }
        let mut ds = Dataset::open(&o).map_err(|e| {
            Error::invalid(format!(
                "cannot reopen the particles of the pipeline run in {}: {e}",
                self.dir.display()
            ))
        })?;
        ds.set_data_sign(self.data_sign);
        Ok(ds)
    }

    /// The noise profile for `ds`: the pipeline's when the images have its box size, else
    /// re-estimated from `ds` ([`estimate_noise_profile`], radial), e.g. for a
    /// higher-resolution stack of the same particles given with `--particles`.
    pub fn noise_for(
        &self,
        ds: &mut Dataset,
        backend: &dyn Backend,
        batch: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<f64>> {
        if ds.box_size() == self.box_size {
            return Ok(self.noise.clone());
        }
        tracing::info!(
            "the particles are {} px (the pipeline used {} px): estimating their noise",
            ds.box_size(),
            self.box_size
        );
        estimate_noise_profile(ds, backend, NoiseModel::Radial, batch, progress)
    }

    /// `zdim`'s embedding (`noreg` for `--no-z-regularization`).
    pub fn embedding(&self, zdim: usize, noreg: bool) -> Result<StoredEmbedding> {
        let d = self.dir.join("model").join(format!("zdim_{zdim}"));
        if !d.is_dir() {
            return Err(Error::invalid(format!(
                "no embedding of dimension {zdim} in {} (available: {:?}); rerun the pipeline with --zdim {zdim}",
                self.dir.display(),
                self.zdims
            )));
        }
        let sfx = if noreg { "_noreg" } else { "" };
        let (zs, rows) = read_npy_f32(&d.join(format!("latent_coords{sfx}.npy")), zdim)?;
        let (precisions, prow) =
            read_npy_f32(&d.join(format!("latent_precision{sfx}.npy")), zdim * zdim)?;
        let (contrasts, crow) = read_npy_f32(&d.join(format!("contrasts{sfx}.npy")), 1)?;
        if prow != rows || crow != rows {
            return Err(Error::inconsistent(format!(
                "{}: {rows} latent coordinates, {prow} precisions, {crow} contrasts",
                d.display()
            )));
        }
        Ok(StoredEmbedding {
            zdim,
            zs,
            precisions,
            contrasts,
        })
    }
}

/// The radial noise profile of a dataset without a pipeline run: the mean (to find the
/// particle), a mask from its half maps, and the noise outside it (§2.2, `noise_model`).
/// The data sign is decided as the pipeline does (`ds`'s `uninvert` setting).
pub fn estimate_noise_profile(
    ds: &mut Dataset,
    backend: &dyn Backend,
    noise_model: NoiseModel,
    batch: usize,
    progress: &dyn Progress,
) -> Result<Vec<f64>> {
    let init = initial_noise(ds, backend, 10_000, 0, batch, progress)?;
    let mean = estimate_mean(
        ds,
        backend,
        init.scalar,
        MeanFn::Triangular,
        batch,
        progress,
    )?;
    let halfmaps = (&mean.halves_reg[0].real[..], &mean.halves_reg[1].real[..]);
    let masks = make_masks(
        &MaskOption::FromHalfmaps,
        ds.box_size(),
        &MaskSettings::default(),
        Some(halfmaps),
    )?;
    let noise = estimate_noise(
        ds,
        backend,
        &mean.combined.spectrum,
        &masks.dilated,
        noise_model,
        false,
        batch,
        progress,
    )?;
    Ok(noise.used)
}
