//! `generateFromEmbedding`: kernel regression on an external embedding (e.g. cryoDRGN's
//! z.pkl) without a pipeline run, as `recovar generate_from_embedding` does.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use napi::bindgen_prelude::{AsyncTask, Either, Float32Array};
use napi::{Env, Task};
use napi_derive::napi;
use recovar_core::backend::CpuBackend;
use recovar_core::dataset::Dataset as CoreDataset;
use recovar_core::generate::{generate_volume, KernelOptions, Latent};
use recovar_core::pipeline::load::estimate_noise_profile;
use recovar_core::reconstruct::noise::NoiseModel;

use crate::convert::{check_len, count, guard, invalid, js_error, point};
use crate::dataset::Dataset;
use crate::progress::{JsProgress, ProgressFn};
use crate::volume::Volume;

/// Kernel-regression options (the C ABI's `rcv_kernel_options`, the CLI's flags), for
/// `generateFromEmbedding` and `Model#generate`.
#[napi(object, object_to_js = false)]
#[derive(Default)]
pub struct KernelOpts<'a> {
    /// Bins (candidate neighbourhood sizes), default 50.
    pub n_bins: Option<f64>,
    /// Images in the smallest neighbourhood, default 100.
    pub n_min_images: Option<f64>,
    /// B-factor for sharpening the filtered map (Å²), default 0.
    pub bfactor: Option<f64>,
    /// Local windows have radius boxSize / maskradFraction voxels, default 20.
    pub maskrad_fraction: Option<f64>,
    /// Working memory for image batches in bytes (changes batch sizes, never results);
    /// default 2e9.
    pub memory_budget: Option<f64>,
    /// `generateFromEmbedding` only: per-image `zdim × zdim` precision matrices
    /// (`rows × zdim²`); identity when absent.
    pub precisions: Option<Float32Array>,
    /// `generateFromEmbedding` only: "radial" (default) or "white" noise model.
    pub noise_model: Option<String>,
    /// `Model#generate` only: use the regularized embedding (default true).
    pub regularized: Option<bool>,
    /// Called as `(stage, done, total)` while the volume is generated; returning `false`
    /// (or throwing) cancels.
    pub on_progress: Option<ProgressFn<'a>>,
}

/// Kernel options from the JavaScript object, with the CLI's defaults.
/// `n_images` and `box_size` are the dataset's (they size the batches).
pub fn kernel_options(
    o: &KernelOpts<'_>,
    n_images: usize,
    box_size: usize,
) -> napi::Result<KernelOptions> {
    let d = KernelOptions::default();
    let n_bins = match o.n_bins {
        Some(v) => count("nBins", v, 1)?,
        None => d.n_bins,
    };
    let n_min_images = match o.n_min_images {
        Some(v) => count("nMinImages", v, 1)?,
        None => d.n_min_images,
    };
    let bfactor = o.bfactor.unwrap_or(d.bfactor);
    if !bfactor.is_finite() {
        return Err(invalid("bfactor must be a finite number"));
    }
    let maskrad_fraction = o.maskrad_fraction.unwrap_or(d.maskrad_fraction);
    if !(maskrad_fraction.is_finite() && maskrad_fraction > 0.0) {
        return Err(invalid("maskradFraction must be a positive number"));
    }
    let budget = o.memory_budget.unwrap_or(2e9);
    if !(budget.is_finite() && budget > 0.0) {
        return Err(invalid("memoryBudget must be a positive number of bytes"));
    }
    // The CLI's batch rule (kernel_args.rs, Dataset::batch_size_for_budget): 48 bytes of
    // working memory per pixel, at most 2048 images.
    let per_image = (box_size * box_size * 48).max(1);
    let batch_size =
        ((budget as u64 / per_image as u64) as usize).clamp(1, n_images.clamp(1, 2048));
    Ok(KernelOptions {
        n_bins,
        maskrad_fraction,
        n_min_images,
        bfactor,
        batch_size,
    })
}

pub struct GenerateFromEmbedding {
    dataset: Arc<std::sync::Mutex<CoreDataset>>,
    zs: Vec<f32>,
    rows: usize,
    zdim: usize,
    precisions: Vec<f32>,
    point: Vec<f32>,
    noise_model: NoiseModel,
    kernel: KernelOptions,
    progress: JsProgress,
}

impl GenerateFromEmbedding {
    fn run(&mut self) -> napi::Result<Volume> {
        let mut ds = self
            .dataset
            .lock()
            .map_err(|_| invalid("the dataset is unusable after an internal error"))?;
        // Rows are the images in use, or every particle of the file (then picked by index).
        let per_image = |v: &[f32], width: usize| -> Vec<f32> {
            if self.rows == ds.len() {
                v.to_vec()
            } else {
                ds.original_indices()
                    .iter()
                    .flat_map(|&o| v[o * width..(o + 1) * width].iter().copied())
                    .collect()
            }
        };
        let zs = per_image(&self.zs, self.zdim);
        let precisions = if self.precisions.is_empty() {
            Vec::new()
        } else {
            per_image(&self.precisions, self.zdim * self.zdim)
        };
        let backend = CpuBackend::new();
        let noise = estimate_noise_profile(
            &mut ds,
            &backend,
            self.noise_model,
            self.kernel.batch_size,
            &self.progress,
        )
        .map_err(js_error)?;
        let latent = Latent {
            zdim: self.zdim,
            zs: &zs,
            precisions: &precisions,
        };
        generate_volume(
            &ds,
            &backend,
            &noise,
            latent,
            &self.point,
            &self.kernel,
            &self.progress,
        )
        .map(Volume::from)
        .map_err(js_error)
    }
}

impl Task for GenerateFromEmbedding {
    type Output = Volume;
    type JsValue = Volume;

    fn compute(&mut self) -> napi::Result<Volume> {
        guard(|| self.run())
    }

    fn resolve(&mut self, _env: Env, output: Volume) -> napi::Result<Volume> {
        Ok(output)
    }
}

/// Generate the volume at `point` from an external embedding `zs` (`rows × zdim`, one row
/// per dataset image or per particle of the file). Resolves to a `Volume`.
#[napi(ts_return_type = "Promise<Volume>")]
pub fn generate_from_embedding(
    dataset: &Dataset,
    zs: Float32Array,
    zdim: f64,
    at: Either<Float32Array, Vec<f64>>,
    options: Option<KernelOpts<'_>>,
) -> napi::Result<AsyncTask<GenerateFromEmbedding>> {
    guard(|| {
        let zdim = count("zdim", zdim, 1)?;
        let point = point(at);
        check_len("point", point.len(), zdim, "zdim")?;
        if let Some(i) = point.iter().position(|v| !v.is_finite()) {
            return Err(invalid(format!("point[{i}] is not a finite number")));
        }
        if zs.len() % zdim != 0 {
            return Err(invalid(format!(
                "zs has {} values, not a multiple of zdim = {zdim}",
                zs.len()
            )));
        }
        let rows = zs.len() / zdim;
        let (n, total) = (dataset.count() as usize, dataset.total_in_file() as usize);
        if rows != n && rows != total {
            return Err(invalid(format!(
                "zs has {rows} rows of {zdim}, but the dataset has {n} images ({total} particles \
                 in the file): give one row per image or one per particle"
            )));
        }
        if let Some(i) = zs.iter().position(|v| !v.is_finite()) {
            return Err(invalid(format!(
                "zs[{i}] (row {}) is not a finite number",
                i / zdim
            )));
        }
        let opts = options.unwrap_or_default();
        if opts.regularized.is_some() {
            return Err(invalid(
                "regularized is an option of Model#generate; an external embedding is used as given",
            ));
        }
        let precisions = match &opts.precisions {
            Some(p) => {
                check_len("precisions", p.len(), rows * zdim * zdim, "rows × zdim²")?;
                p.to_vec()
            }
            None => Vec::new(),
        };
        let noise_model = match opts.noise_model.as_deref() {
            None => NoiseModel::Radial,
            Some(s) => s.parse::<NoiseModel>().map_err(js_error)?,
        };
        // Not from the locked dataset: another operation may hold it for minutes, and the
        // main thread must never wait.
        let kernel = kernel_options(&opts, n, dataset.box_size() as usize)?;
        let progress = JsProgress::new(opts.on_progress, Arc::new(AtomicBool::new(false)))?;
        Ok(AsyncTask::new(GenerateFromEmbedding {
            dataset: dataset.inner.clone(),
            zs: zs.to_vec(),
            rows,
            zdim,
            precisions,
            point,
            noise_model,
            kernel,
            progress,
        }))
    })
}
