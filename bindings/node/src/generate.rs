//! `generateFromEmbedding`: kernel regression on an external embedding (e.g. cryoDRGN's
//! z.pkl) without a pipeline run, as `recovar generate_from_embedding` does.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use napi::bindgen_prelude::{AsyncTask, Either, Float32Array};
use napi::{Env, Task};
use napi_derive::napi;
use recovar_core::backend::Device;
use recovar_core::dataset::Dataset as CoreDataset;
use recovar_core::generate::KernelOptions;
use recovar_core::pipeline::model::generate_from_embedding as core_generate_from_embedding;

use crate::convert::{check_len, count, device, guard, invalid, js_error, point, select_device};
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
    /// Images per batch (memory only, never the results); automatic when absent: as many
    /// as 2 GB of working memory holds, at most 2048.
    pub batch_size: Option<f64>,
    /// `generateFromEmbedding` only: per-image `zdim × zdim` precision matrices
    /// (`rows × zdim²`); identity when absent.
    pub precisions: Option<Float32Array>,
    /// `Model#generate` only: use the regularized embedding (default true).
    pub regularized: Option<bool>,
    /// "auto", "cpu", "cuda" or "cuda:N": where this volume is generated. Absent: the
    /// model's device (`Model#generate`), auto (`generateFromEmbedding`).
    pub device: Option<String>,
    /// Called as `(stage, done, total)` while the volume is generated; returning `false`
    /// (or throwing) cancels.
    pub on_progress: Option<ProgressFn<'a>>,
}

/// The device an options object names, if any.
pub fn kernel_device(o: &KernelOpts<'_>) -> napi::Result<Option<Device>> {
    o.device.as_deref().map(device).transpose()
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
    let batch_size = match o.batch_size {
        Some(v) => count("batchSize", v, 1)?,
        // The C ABI's and the CLI's rule, in a 2 GB budget.
        None => KernelOptions::batch_size_for(box_size, n_images, 2_000_000_000),
    };
    Ok(KernelOptions {
        n_bins,
        maskrad_fraction,
        n_min_images,
        bfactor,
        batch_size,
    })
}

pub struct GenerateFromEmbedding {
    dataset: Arc<CoreDataset>,
    zs: Vec<f32>,
    zdim: usize,
    precisions: Vec<f32>,
    point: Vec<f32>,
    kernel: KernelOptions,
    device: Device,
    progress: JsProgress,
}

impl Task for GenerateFromEmbedding {
    type Output = Volume;
    type JsValue = Volume;

    fn compute(&mut self) -> napi::Result<Volume> {
        guard(|| {
            // Chosen here, on the worker thread: opening a GPU compiles its kernels.
            let device = select_device(self.device)?;
            core_generate_from_embedding(
                &self.dataset,
                &self.zs,
                self.zdim,
                &self.precisions,
                &self.point,
                &self.kernel,
                &*device.backend,
                &self.progress,
            )
            .map(Volume::from)
            .map_err(js_error)
        })
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
        if !zs.len().is_multiple_of(zdim) {
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
        // Not from the locked dataset: another operation may hold it for minutes, and the
        // main thread must never wait.
        let kernel = kernel_options(&opts, n, dataset.box_size() as usize)?;
        let device = kernel_device(&opts)?.unwrap_or_default();
        let progress = JsProgress::new(opts.on_progress, Arc::new(AtomicBool::new(false)))?;
        Ok(AsyncTask::new(GenerateFromEmbedding {
            dataset: dataset.shared(),
            zs: zs.to_vec(),
            zdim,
            precisions,
            point,
            kernel,
            device,
            progress,
        }))
    })
}
