//! `Model`: the pipeline state of one dataset (mean, noise, masks, principal components,
//! embeddings), its stages run on libuv's worker pool.
//!
//! Concurrency: the state sits behind a read-write lock. Stages take it for writing on
//! their worker thread; `generate` and `save` take it for reading; the synchronous getters
//! only *try* to read it, so the main thread never waits for a running stage (it gets an
//! Error saying the model is busy instead).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, TryLockError, Weak};

use napi::bindgen_prelude::{AsyncTask, Either, Float32Array, Float64Array};
use napi::{Env, Task};
use napi_derive::napi;
use recovar_core::backend::{Backend, Device};
use recovar_core::heterogeneity::CovarianceOptions;
use recovar_core::pipeline::model::{Model as CoreModel, ModelOptions, Stage};
use recovar_core::reconstruct::mask::MaskOption;
use recovar_core::reconstruct::noise::NoiseModel;

use crate::convert::{
    check_len, count, device, guard, invalid, js_error, path, point, seed, select_device,
};
use crate::dataset::Dataset;
use crate::generate::{kernel_device, kernel_options, KernelOpts};
use crate::progress::{JsProgress, ProgressFn};
use crate::volume::Volume;

/// Options of `Model.create` (the C ABI's `rcv_model_options`, the CLI's flags).
#[napi(object, object_to_js = false)]
pub struct ModelOpts {
    /// Latent dimensions of the embeddings, default [1, 2, 4, 10, 20].
    pub zdims: Option<Vec<f64>>,
    /// "from_halfmaps" (default), "sphere", "none", or the path of a mask .mrc.
    pub mask: Option<String>,
    /// A focus mask .mrc.
    pub focus_mask: Option<String>,
    /// "radial" (default) or "white".
    pub noise_model: Option<String>,
    /// Estimate per-image contrast in the embeddings.
    pub correct_contrast: Option<bool>,
    /// Ignore the zero frequency in the embedding.
    pub ignore_zero_frequency: Option<bool>,
    /// "normal" (default), "low" or "veryLow" (the CLI's --low-memory-option,
    /// --very-low-memory-option).
    pub memory_option: Option<String>,
    /// Per-image tight masks in the covariance (default true).
    pub use_image_mask: Option<bool>,
    /// Working memory for image batches in bytes (never changes results); default 2e9.
    pub memory_budget: Option<f64>,
    /// Seed of every random choice (default 0).
    pub seed: Option<f64>,
    /// "auto" (default: a CUDA GPU when a driver, NVRTC, cuFFT and a device are present,
    /// else the CPU), "cpu", "cuda" or "cuda:N": where the stages and generation run.
    pub device: Option<String>,
}

/// Options of `Model.load`.
#[napi(object, object_to_js = false)]
pub struct LoadOpts {
    /// As `ModelOpts.device` (default "auto").
    pub device: Option<String>,
}

fn model_options(o: ModelOpts) -> napi::Result<ModelOptions> {
    let mut m = ModelOptions::default();
    if let Some(z) = o.zdims {
        if z.is_empty() {
            return Err(invalid("zdims is empty"));
        }
        m.zdims = z
            .iter()
            .map(|&v| count("zdims[]", v, 1))
            .collect::<napi::Result<_>>()?;
    }
    if let Some(s) = o.mask {
        m.mask = match s.as_str() {
            "from_halfmaps" | "fromHalfmaps" => MaskOption::FromHalfmaps,
            "sphere" => MaskOption::Sphere,
            "none" => MaskOption::None,
            _ => MaskOption::File(path("mask", &s)?),
        };
    }
    if let Some(s) = o.focus_mask {
        m.focus_mask = Some(path("focusMask", &s)?);
    }
    if let Some(s) = o.noise_model {
        m.noise_model = s.parse::<NoiseModel>().map_err(|_| {
            invalid(format!(
                "noiseModel \"{s}\": expected \"radial\" or \"white\""
            ))
        })?;
    }
    if let Some(b) = o.correct_contrast {
        m.correct_contrast = b;
    }
    if let Some(b) = o.ignore_zero_frequency {
        m.ignore_zero_frequency = b;
    }
    let use_image_mask = o.use_image_mask.unwrap_or(m.covariance.mask_images);
    m.covariance = match o.memory_option.as_deref() {
        None | Some("normal") => CovarianceOptions::default(),
        Some("low") => CovarianceOptions::low_memory(),
        Some("veryLow") | Some("very_low") => CovarianceOptions::very_low_memory(),
        Some(s) => {
            return Err(invalid(format!(
                "memoryOption \"{s}\": expected \"normal\", \"low\" or \"veryLow\""
            )))
        }
    };
    m.covariance.mask_images = use_image_mask;
    if let Some(b) = o.memory_budget {
        if !(b.is_finite() && b > 0.0) {
            return Err(invalid("memoryBudget must be a positive number of bytes"));
        }
        m.memory_budget = b as u64;
    }
    if o.seed.is_some() {
        m.seed = seed(o.seed)?;
    }
    Ok(m)
}

/// A stage name: "mean", "noise", "covariance", "embedding", or "all" (None).
fn stage(s: &str) -> napi::Result<Option<Stage>> {
    if s == "all" {
        return Ok(None);
    }
    s.parse::<Stage>().map(Some).map_err(|_| {
        invalid(format!(
            "stage \"{s}\": expected mean, noise, covariance, embedding or all"
        ))
    })
}

type Shared = Arc<RwLock<CoreModel>>;

fn poisoned() -> napi::Error {
    invalid("the model is unusable after an internal error in an earlier operation")
}

/// The cancellation flags of a model's operations that have not finished: `cancel()`
/// stops every operation started before it, none started after it.
#[derive(Clone, Default)]
struct Operations(Arc<Mutex<Vec<Weak<AtomicBool>>>>);

impl Operations {
    fn start(&self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut ops) = self.0.lock() {
            ops.retain(|w| w.strong_count() > 0);
            ops.push(Arc::downgrade(&flag));
        }
        flag
    }

    fn cancel_all(&self) {
        if let Ok(ops) = self.0.lock() {
            for f in ops.iter().filter_map(Weak::upgrade) {
                f.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// The pipeline state of one dataset. Stages run in order; running a stage first runs the
/// earlier ones that are missing.
#[napi]
pub struct Model {
    state: Shared,
    ops: Operations,
    /// The backend chosen when the model was made, for its stages and generation.
    backend: Arc<dyn Backend>,
    /// What was chosen and why (`model.device`).
    note: String,
    box_size: usize,
    voxel_size: f64,
    n_images: usize,
}

impl Model {
    fn wrap(m: CoreModel, device: recovar_core::backend::Selected) -> Model {
        Model {
            backend: device.backend,
            note: device.note,
            box_size: m.box_size(),
            voxel_size: m.voxel_size(),
            n_images: m.n_images(),
            state: Arc::new(RwLock::new(m)),
            ops: Operations::default(),
        }
    }

    /// Read access for a synchronous getter, without ever waiting.
    fn read(&self) -> napi::Result<RwLockReadGuard<'_, CoreModel>> {
        match self.state.try_read() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(invalid(
                "the model is busy: a stage is running (await its Promise first)",
            )),
            Err(TryLockError::Poisoned(_)) => Err(poisoned()),
        }
    }
}

/// What an embedding holds: `rows × zdim` coordinates, `rows × zdim²` precisions and
/// `rows` contrasts, in dataset order.
#[napi(object, object_from_js = false)]
pub struct ModelEmbedding {
    pub zdim: f64,
    pub rows: f64,
    pub zs: Float32Array,
    pub precisions: Float32Array,
    pub contrasts: Float32Array,
}

#[napi]
impl Model {
    /// A model for `dataset` (which it copies: the dataset stays usable) with `options`.
    /// The device is chosen here, once (an explicit GPU that cannot be used throws).
    #[napi(factory)]
    pub fn create(dataset: &Dataset, options: Option<ModelOpts>) -> napi::Result<Model> {
        guard(|| {
            let (opts, dev) = match options {
                Some(mut o) => {
                    let dev = o.device.take().as_deref().map(device).transpose()?;
                    (model_options(o)?, dev.unwrap_or_default())
                }
                None => (ModelOptions::default(), Device::Auto),
            };
            let (ds, source) = dataset.snapshot();
            let mut m = CoreModel::new(ds, opts).map_err(js_error)?;
            if let Some(src) = source {
                m.set_source(src);
            }
            Ok(Model::wrap(m, select_device(dev)?))
        })
    }

    /// Load a model from a pipeline output folder (`recovar pipeline -o DIR` or
    /// `Model#save`), on `options.device` (default "auto"). Resolves to a `Model`.
    #[napi(ts_return_type = "Promise<Model>")]
    pub fn load(dir: String, options: Option<LoadOpts>) -> napi::Result<AsyncTask<LoadModel>> {
        guard(|| {
            let dev = options
                .and_then(|o| o.device)
                .as_deref()
                .map(device)
                .transpose()?;
            Ok(AsyncTask::new(LoadModel {
                dir: path("dir", &dir)?,
                device: dev.unwrap_or_default(),
            }))
        })
    }

    /// The model's device, as a line for a log: e.g. "device: cpu (8 threads)", or for
    /// "auto" without a GPU "device: cpu (8 threads); auto: no usable GPU, ..." (why).
    #[napi(getter)]
    pub fn device(&self) -> String {
        self.note.clone()
    }

    /// Run a stage ("mean", "noise", "covariance", "embedding" or "all") and the earlier
    /// ones it needs. Resolves when done; rejects with code "Cancelled" after `cancel()`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn run_stage(
        &self,
        stage_name: String,
        on_progress: Option<ProgressFn<'_>>,
    ) -> napi::Result<AsyncTask<RunStage>> {
        guard(|| {
            let stage = stage(&stage_name)?;
            let progress = JsProgress::new(on_progress, self.ops.start())?;
            Ok(AsyncTask::new(RunStage {
                state: self.state.clone(),
                backend: self.backend.clone(),
                stage,
                progress,
            }))
        })
    }

    /// Whether a stage's results are there.
    #[napi]
    pub fn stage_done(&self, stage_name: String) -> napi::Result<bool> {
        guard(|| {
            let m = self.read()?;
            Ok(match stage(&stage_name)? {
                Some(s) => m.stage_done(s),
                None => [
                    Stage::Mean,
                    Stage::Noise,
                    Stage::Covariance,
                    Stage::Embedding,
                ]
                .into_iter()
                .all(|s| m.stage_done(s)),
            })
        })
    }

    /// Stop every operation of this model that is running or waiting (stages, generate,
    /// save): each rejects with an Error whose code is "Cancelled". Operations started
    /// afterwards are not affected. A cancelled stage leaves the results of the stages
    /// before it in place.
    #[napi]
    pub fn cancel(&self) {
        self.ops.cancel_all();
    }

    /// Save the model in the pipeline's output layout (readable by `Model.load` and the
    /// `recovar` commands that take a pipeline folder).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save(
        &self,
        dir: String,
        on_progress: Option<ProgressFn<'_>>,
    ) -> napi::Result<AsyncTask<SaveModel>> {
        guard(|| {
            Ok(AsyncTask::new(SaveModel {
                state: self.state.clone(),
                dir: path("dir", &dir)?,
                progress: JsProgress::new(on_progress, self.ops.start())?,
            }))
        })
    }

    /// Image side in pixels.
    #[napi(getter)]
    pub fn box_size(&self) -> f64 {
        self.box_size as f64
    }

    /// Pixel size in Å.
    #[napi(getter)]
    pub fn voxel_size(&self) -> f64 {
        self.voxel_size
    }

    /// Number of images.
    #[napi(getter)]
    pub fn count(&self) -> f64 {
        self.n_images as f64
    }

    /// The mean volume (boxSize³, real space). Needs the "mean" stage.
    #[napi]
    pub fn mean(&self) -> napi::Result<Float32Array> {
        guard(|| {
            let m = self.read()?;
            Ok(Float32Array::with_data_copied(m.mean().map_err(js_error)?))
        })
    }

    /// The radial noise variance profile (boxSize/2 − 1 shells). Needs the "noise" stage.
    #[napi]
    pub fn noise(&self) -> napi::Result<Float64Array> {
        guard(|| {
            let m = self.read()?;
            Ok(Float64Array::with_data_copied(m.noise().map_err(js_error)?))
        })
    }

    /// Eigenvalues of the covariance, largest first. Needs the "covariance" stage.
    #[napi]
    pub fn eigenvalues(&self) -> napi::Result<Float64Array> {
        guard(|| {
            let m = self.read()?;
            Ok(Float64Array::with_data_copied(
                m.eigenvalues().map_err(js_error)?,
            ))
        })
    }

    /// Eigenvolume `k` (0-based, boxSize³, real space).
    #[napi]
    pub fn eigenvolume(&self, k: f64) -> napi::Result<Float32Array> {
        guard(|| {
            let k = count("k", k, 0)?;
            let m = self.read()?;
            Ok(Float32Array::new(m.eigenvolume(k).map_err(js_error)?))
        })
    }

    /// Variance map of the first `nComponents` components: Σ_k λ_k u_k².
    #[napi]
    pub fn variance_map(&self, n_components: f64) -> napi::Result<Float32Array> {
        guard(|| {
            let n = count("nComponents", n_components, 1)?;
            let m = self.read()?;
            Ok(Float32Array::new(m.variance_map(n).map_err(js_error)?))
        })
    }

    /// The latent dimensions of the embeddings.
    #[napi]
    pub fn zdims(&self) -> napi::Result<Vec<u32>> {
        guard(|| {
            let m = self.read()?;
            Ok(m.zdims().into_iter().map(|z| z as u32).collect())
        })
    }

    /// The embedding of dimension `zdim` (regularized by default), in dataset order.
    /// Needs the "embedding" stage.
    #[napi]
    pub fn embedding(&self, zdim: f64, regularized: Option<bool>) -> napi::Result<ModelEmbedding> {
        guard(|| {
            let zdim = count("zdim", zdim, 1)?;
            let m = self.read()?;
            let e = m
                .embedding(zdim, regularized.unwrap_or(true))
                .map_err(js_error)?;
            Ok(ModelEmbedding {
                zdim: e.zdim as f64,
                rows: (e.zs.len() / e.zdim.max(1)) as f64,
                zs: Float32Array::with_data_copied(e.zs),
                precisions: Float32Array::with_data_copied(e.precisions),
                contrasts: Float32Array::with_data_copied(e.contrasts),
            })
        })
    }

    /// Generate the volume at `point` of the `zdim` embedding by kernel regression.
    /// Resolves to a `Volume`.
    #[napi(ts_return_type = "Promise<Volume>")]
    pub fn generate(
        &self,
        zdim: f64,
        at: Either<Float32Array, Vec<f64>>,
        options: Option<KernelOpts<'_>>,
    ) -> napi::Result<AsyncTask<GenerateTask>> {
        guard(|| {
            let zdim = count("zdim", zdim, 1)?;
            let point = point(at);
            check_len("point", point.len(), zdim, "zdim")?;
            if let Some(i) = point.iter().position(|v| !v.is_finite()) {
                return Err(invalid(format!("point[{i}] is not a finite number")));
            }
            let opts = options.unwrap_or_default();
            if opts.precisions.is_some() {
                return Err(invalid(
                    "precisions is an option of generateFromEmbedding; a model uses its own",
                ));
            }
            let kernel = kernel_options(&opts, self.n_images, self.box_size)?;
            Ok(AsyncTask::new(GenerateTask {
                state: self.state.clone(),
                backend: self.backend.clone(),
                device: kernel_device(&opts)?,
                zdim,
                regularized: opts.regularized.unwrap_or(true),
                point,
                kernel,
                progress: JsProgress::new(opts.on_progress, self.ops.start())?,
            }))
        })
    }
}

pub struct LoadModel {
    dir: PathBuf,
    device: Device,
}

impl Task for LoadModel {
    type Output = Model;
    type JsValue = Model;

    fn compute(&mut self) -> napi::Result<Model> {
        guard(|| {
            let m = CoreModel::load(&self.dir).map_err(js_error)?;
            Ok(Model::wrap(m, select_device(self.device)?))
        })
    }

    fn resolve(&mut self, _env: Env, output: Model) -> napi::Result<Model> {
        Ok(output)
    }
}

pub struct RunStage {
    state: Shared,
    backend: Arc<dyn Backend>,
    stage: Option<Stage>,
    progress: JsProgress,
}

impl Task for RunStage {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        guard(|| {
            let mut m = self.state.write().map_err(|_| poisoned())?;
            let backend = &*self.backend;
            match self.stage {
                Some(s) => m.run_stage(s, backend, &self.progress),
                None => m.run_all(backend, &self.progress),
            }
            .map_err(js_error)
        })
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }
}

pub struct SaveModel {
    state: Shared,
    dir: PathBuf,
    progress: JsProgress,
}

impl Task for SaveModel {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        guard(|| {
            let m = self.state.read().map_err(|_| poisoned())?;
            m.save(&self.dir, &self.progress).map_err(js_error)
        })
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }
}

pub struct GenerateTask {
    state: Shared,
    /// The model's backend, used unless `device` names another for this call.
    backend: Arc<dyn Backend>,
    device: Option<Device>,
    zdim: usize,
    regularized: bool,
    point: Vec<f32>,
    kernel: recovar_core::generate::KernelOptions,
    progress: JsProgress,
}

impl Task for GenerateTask {
    type Output = Volume;
    type JsValue = Volume;

    fn compute(&mut self) -> napi::Result<Volume> {
        guard(|| {
            // Another device for this call is chosen here, on the worker thread.
            let backend = match self.device {
                None => self.backend.clone(),
                Some(d) => select_device(d)?.backend,
            };
            let m = self.state.read().map_err(|_| poisoned())?;
            m.generate(
                self.zdim,
                self.regularized,
                &self.point,
                &self.kernel,
                &*backend,
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
