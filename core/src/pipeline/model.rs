//! The pipeline as a library object: a [`Model`] holds one dataset and the results of every
//! stage run on it so far, runs the stages one at a time, answers queries (mean,
//! eigenvalues, eigenvolumes, variance maps, embeddings), generates volumes by kernel
//! regression, saves itself in the pipeline's output layout and loads such a folder back.
//!
//! `recovar pipeline` ([`super::run_pipeline`]) is one user of it: it drives the same stage
//! code with checkpoints and timings ([`Recorder`]), so the command line, the C ABI and the
//! Node binding compute exactly the same numbers.
//!
//! Stages, in order ([`Stage`]): the mean (initial noise, halfset means, FSC prior, sign
//! check, masks), the noise model, the covariance (variance with its noise bound, covariance
//! columns, randomized SVD, projected covariance), the embeddings (every zdim). Running a
//! stage runs the earlier ones it needs first. With contrast correction the embedding
//! stage also runs the do-over pass (the per-image contrasts go into the CTF and all four
//! stages run again, §6.5), as the pipeline does.

use std::path::{Path, PathBuf};

use num_complex::Complex;

use super::checkpoint::{Array, Checkpoint, Checkpoints};
use super::load::PipelineResult;
use super::timing::Timings;
use super::{contrast_for_do_over, volume_entries, volume_from, Pcs, ZdimEmbedding};
use crate::backend::Backend;
use crate::dataset::{Dataset, DatasetOptions};
use crate::error::{Error, Result};
use crate::fourier::Fft3;
use crate::generate::{generate_volume, GeneratedVolume, KernelOptions, Latent};
use crate::heterogeneity::{self, CovarianceOptions};
use crate::io::npy::{DType, Kind, NpyArray};
use crate::progress::Progress;
use crate::reconstruct::mask::{focus_mask, make_masks, MaskOption, MaskSettings, Masks};
use crate::reconstruct::mean::{estimate_mean, MeanEstimate, MeanFn};
use crate::reconstruct::noise::{
    estimate_noise, initial_noise, InitialNoise, NoiseEstimate, NoiseModel,
};

/// One stage of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Initial noise, halfset means, FSC prior, sign check, masks.
    Mean,
    /// The noise model (§2.2–2.4).
    Noise,
    /// Variance and its noise bound, covariance columns, principal components.
    Covariance,
    /// Embeddings for every zdim (and, with contrast correction, the do-over pass).
    Embedding,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 4] = [
        Stage::Mean,
        Stage::Noise,
        Stage::Covariance,
        Stage::Embedding,
    ];

    /// Lower-case name, as in progress reports and messages.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Mean => "mean",
            Stage::Noise => "noise",
            Stage::Covariance => "covariance",
            Stage::Embedding => "embedding",
        }
    }
}

impl std::str::FromStr for Stage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown stage '{s}' (expected mean, noise, covariance or embedding)"
                ))
            })
    }
}

/// Options of a model: the `recovar pipeline` flags that change results.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// `--mask`.
    pub mask: MaskOption,
    /// `--mask-dilate-iter` and related settings.
    pub mask_settings: MaskSettings,
    /// `--focus-mask`.
    pub focus_mask: Option<PathBuf>,
    /// `--noise-model`.
    pub noise_model: NoiseModel,
    /// `--mean-fn`.
    pub mean_fn: MeanFn,
    /// `--zdim`: latent dimensions to embed.
    pub zdims: Vec<usize>,
    /// `--correct-contrast`.
    pub correct_contrast: bool,
    /// `--ignore-zero-frequency`.
    pub ignore_zero_frequency: bool,
    /// Columns, sketch, PCs, image masks (`--low-memory-option`, `--dont-use-image-mask`).
    pub covariance: CovarianceOptions,
    /// `--keep-intermediate`: keep the covariance columns (written by `save`).
    pub keep_columns: bool,
    /// Working memory for batches, bytes (batch sizes only; never the results).
    pub memory_budget: u64,
    /// Seed of random choices.
    pub seed: u64,
}

impl Default for ModelOptions {
    /// The command line's defaults.
    fn default() -> Self {
        ModelOptions {
            mask: MaskOption::FromHalfmaps,
            mask_settings: MaskSettings::default(),
            focus_mask: None,
            noise_model: NoiseModel::Radial,
            mean_fn: MeanFn::Triangular,
            zdims: vec![1, 2, 4, 10, 20],
            correct_contrast: false,
            ignore_zero_frequency: false,
            covariance: CovarianceOptions::default(),
            keep_columns: false,
            memory_budget: 2_000_000_000,
            seed: 0,
        }
    }
}

impl ModelOptions {
    /// Refuse options no run could satisfy (before any work).
    pub fn validate(&self) -> Result<()> {
        if self.zdims.contains(&0) {
            return Err(Error::invalid("--zdim values must be at least 1"));
        }
        let maxz = self.zdims.iter().copied().max().unwrap_or(0);
        if maxz > self.covariance.n_pcs {
            return Err(Error::invalid(format!(
                "--zdim {maxz} needs at least {maxz} principal components, but only {} are computed \
                 (a memory option lowers it)",
                self.covariance.n_pcs
            )));
        }
        if self.memory_budget == 0 {
            return Err(Error::invalid("the memory budget must be positive"));
        }
        Ok(())
    }
}

/// Working bytes per image of the image passes (image, spectrum, CTF, projections, mask).
fn bytes_per_image(d: usize) -> u64 {
    (d * d * 64) as u64
}

/// Where stage results are remembered between runs, and how long stages took: the
/// pipeline's checkpoints and timings, or nothing (library calls).
#[derive(Default)]
pub struct Recorder<'a> {
    ckpts: Option<&'a Checkpoints>,
    timings: Option<&'a mut Timings>,
    /// Stages taken from checkpoints.
    pub resumed: Vec<String>,
}

impl<'a> Recorder<'a> {
    /// Checkpoints and timings of a pipeline run.
    pub fn new(ckpts: &'a Checkpoints, timings: &'a mut Timings) -> Self {
        Recorder {
            ckpts: Some(ckpts),
            timings: Some(timings),
            resumed: Vec::new(),
        }
    }

    fn start(&mut self, name: &str, units: u64) {
        if let Some(t) = self.timings.as_deref_mut() {
            t.start(name, units);
        }
    }

    fn load(&mut self, stage: &str) -> Option<Checkpoint> {
        let ck = self.ckpts?.load(stage)?;
        self.resumed.push(stage.to_string());
        Some(ck)
    }

    fn save(&self, stage: &str, ck: impl FnOnce() -> Checkpoint) -> Result<()> {
        match self.ckpts {
            Some(c) => c.save(stage, &ck()),
            None => Ok(()),
        }
    }
}

/// The covariance stage's results.
pub(super) struct CovResult {
    pub freqs: Vec<[i32; 3]>,
    pub column_fscs: Vec<Vec<f64>>,
    pub columns: Option<Vec<Vec<Complex<f32>>>>,
    pub pcs: Pcs,
}

/// Everything one pass has produced so far.
#[derive(Default)]
pub(super) struct PassState {
    pub mean: Option<MeanEstimate>,
    pub masks: Option<Masks>,
    pub focus: Option<Vec<f32>>,
    pub noise: Option<NoiseEstimate>,
    /// The noise profile in use: the noise model's, then bounded by the variance.
    pub noise_used: Option<Vec<f64>>,
    pub variance: Option<(Vec<f32>, Vec<f64>)>,
    pub cov: Option<CovResult>,
    pub embeddings: Option<Vec<ZdimEmbedding>>,
}

/// Results read back from a pipeline output directory.
struct Loaded {
    dir: PathBuf,
    mean: Vec<f32>,
    noise: Vec<f64>,
    pcs: Option<Pcs>,
    embeddings: Vec<ZdimEmbedding>,
    /// Why the dataset could not be reopened (generation then fails with this).
    dataset_error: Option<String>,
}

/// A dataset and the results of the pipeline stages run on it (module docs).
///
/// Queries take `&self` and may run from many threads at once; running a stage takes
/// `&mut self`.
pub struct Model {
    ds: Option<Dataset>,
    /// How the dataset was opened from files (recorded in saved outputs so they reopen).
    source: Option<DatasetOptions>,
    opts: ModelOptions,
    n: usize,
    voxel_size: f64,
    n_images: usize,
    batch: usize,
    init: Option<InitialNoise>,
    /// 0, or 1 during/after the contrast do-over.
    pass: usize,
    pub(super) state: PassState,
    loaded: Option<Loaded>,
}

impl Model {
    /// A model of `dataset` with no stage run yet. The dataset needs poses and CTF.
    pub fn new(dataset: Dataset, opts: ModelOptions) -> Result<Model> {
        opts.validate()?;
        if dataset.rotations().is_none() {
            return Err(Error::invalid(format!(
                "{}: the dataset has no poses (give a poses.pkl or a .star/.cs with angles)",
                dataset.particles_path().display()
            )));
        }
        if dataset.ctf().is_none() {
            return Err(Error::invalid(format!(
                "{}: the dataset has no CTF parameters (give a ctf.pkl or a .star/.cs with CTF)",
                dataset.particles_path().display()
            )));
        }
        let d = dataset.box_size();
        let batch = dataset
            .batch_size_for_budget(opts.memory_budget, bytes_per_image(d))
            .min(4096);
        Ok(Model {
            n: d,
            voxel_size: dataset.voxel_size(),
            n_images: dataset.len(),
            ds: Some(dataset),
            source: None,
            opts,
            batch,
            init: None,
            pass: 0,
            state: PassState::default(),
            loaded: None,
        })
    }

    /// Read a pipeline output directory (`recovar pipeline -o DIR` or [`Model::save`]):
    /// mean, noise, eigenvalues and eigenvectors, embeddings. The particles are reopened
    /// when they can be (needed for kernel regression; the other queries work without).
    pub fn load(dir: &Path) -> Result<Model> {
        let pr = PipelineResult::load(dir)?;
        let n = pr.box_size;
        let mean_path = dir.join("output/volumes/mean.mrc");
        let mean = crate::io::mrc::read_volume(&mean_path)?;
        if mean.shape != [n, n, n] {
            return Err(Error::format(
                &mean_path,
                format!("volume of shape {:?}; params.pkl says {n}³", mean.shape),
            ));
        }
        let (ds, dataset_error) = match pr.open_dataset(None, None) {
            Ok(ds) => (Some(ds), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let model_dir = dir.join("model");
        let pcs = if model_dir.join("eigenvalues.npy").exists() {
            Some(read_pcs(&model_dir, n)?)
        } else {
            None
        };
        let mut embeddings = Vec::new();
        for &z in &pr.zdims {
            let reg = pr.embedding(z, false)?;
            let noreg = pr.embedding(z, true)?;
            let rows = stored_rows(&reg.zs, z, ds.as_ref());
            let pick = |v: &[f32], w: usize| -> Vec<f32> {
                rows.iter()
                    .flat_map(|&o| v[o * w..(o + 1) * w].iter().copied())
                    .collect()
            };
            embeddings.push(ZdimEmbedding {
                zdim: z,
                zs: pick(&reg.zs, z),
                precisions: pick(&reg.precisions, z * z),
                contrasts: pick(&reg.contrasts, 1),
                zs_noreg: pick(&noreg.zs, z),
                precisions_noreg: pick(&noreg.precisions, z * z),
                contrasts_noreg: pick(&noreg.contrasts, 1),
            });
        }
        let n_images = match (&ds, embeddings.first()) {
            (Some(d), _) => d.len(),
            (None, Some(e)) => e.contrasts.len(),
            (None, None) => 0,
        };
        let opts = ModelOptions {
            zdims: pr.zdims.clone(),
            ..Default::default()
        };
        Ok(Model {
            ds,
            source: Some(pr.dataset.clone()),
            opts,
            n,
            voxel_size: pr.voxel_size,
            n_images,
            batch: 256,
            init: None,
            pass: 0,
            state: PassState::default(),
            loaded: Some(Loaded {
                dir: dir.to_path_buf(),
                mean: mean.data,
                noise: pr.noise.clone(),
                pcs,
                embeddings,
                dataset_error,
            }),
        })
    }

    /// A model of the dataset `opts` opens (poses and CTF required), remembering the
    /// paths so a saved model can reopen its particles.
    pub fn open(dataset: &DatasetOptions, opts: ModelOptions) -> Result<Model> {
        let mut o = dataset.clone();
        o.require_poses = true;
        o.require_ctf = true;
        let ds = Dataset::open(&o)?;
        ds.check_images_readable()?;
        let mut m = Model::new(ds, opts)?;
        m.source = Some(o);
        Ok(m)
    }

    /// Record how the dataset was opened (written to params.pkl by `save`).
    pub fn set_source(&mut self, dataset: DatasetOptions) {
        self.source = Some(dataset);
    }

    /// How the dataset was opened, when it came from files.
    pub fn source(&self) -> Option<&DatasetOptions> {
        self.source.as_ref()
    }

    /// The model's dataset (with the sign the mean stage chose).
    pub fn dataset(&self) -> Result<&Dataset> {
        match (&self.ds, &self.loaded) {
            (Some(d), _) => Ok(d),
            (None, Some(l)) => Err(Error::invalid(format!(
                "the model loaded from {} cannot reopen its particles: {}",
                l.dir.display(),
                l.dataset_error.as_deref().unwrap_or("unknown reason")
            ))),
            (None, None) => Err(Error::invalid("the model has no dataset")),
        }
    }

    fn dataset_mut(&mut self) -> Result<&mut Dataset> {
        self.ds
            .as_mut()
            .ok_or_else(|| Error::invalid("the model has no dataset"))
    }

    /// The options the model was created with.
    pub fn options(&self) -> &ModelOptions {
        &self.opts
    }

    pub fn box_size(&self) -> usize {
        self.n
    }

    pub fn voxel_size(&self) -> f64 {
        self.voxel_size
    }

    pub fn n_images(&self) -> usize {
        self.n_images
    }

    /// Image batch size the memory budget allows.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// The folder a loaded model came from.
    pub fn loaded_from(&self) -> Option<&Path> {
        self.loaded.as_ref().map(|l| l.dir.as_path())
    }

    /// True when `stage`'s results are available (computed, or loaded from a folder).
    pub fn stage_done(&self, stage: Stage) -> bool {
        if let Some(l) = &self.loaded {
            return match stage {
                Stage::Mean | Stage::Noise => true,
                Stage::Covariance => l.pcs.is_some(),
                Stage::Embedding => !l.embeddings.is_empty(),
            };
        }
        let s = &self.state;
        let this_pass = match stage {
            Stage::Mean => s.mean.is_some() && s.masks.is_some(),
            Stage::Noise => s.noise.is_some(),
            Stage::Covariance => s.cov.is_some(),
            Stage::Embedding => s.embeddings.is_some(),
        };
        // During the do-over the first pass's embeddings are not final.
        this_pass && (stage != Stage::Embedding || !self.needs_do_over())
    }

    fn needs_do_over(&self) -> bool {
        self.opts.correct_contrast && self.pass == 0
    }

    /// Run `stage` (and the earlier stages it needs). A stage already done is not rerun.
    pub fn run_stage(
        &mut self,
        stage: Stage,
        backend: &dyn Backend,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.run_stage_recorded(stage, backend, progress, &mut Recorder::default())
    }

    /// Run every stage.
    pub fn run_all(&mut self, backend: &dyn Backend, progress: &dyn Progress) -> Result<()> {
        self.run_stage(Stage::Embedding, backend, progress)
    }

    /// [`Model::run_stage`] with checkpoints and timings (the pipeline's).
    pub fn run_stage_recorded(
        &mut self,
        stage: Stage,
        backend: &dyn Backend,
        progress: &dyn Progress,
        rec: &mut Recorder<'_>,
    ) -> Result<()> {
        if let Some(l) = &self.loaded {
            if self.stage_done(stage) {
                return Ok(());
            }
            return Err(Error::invalid(format!(
                "the model loaded from {} has no {} results and cannot run stages; \
                 create a model from its dataset to run them",
                l.dir.display(),
                stage.name()
            )));
        }
        for st in Stage::ALL.into_iter().filter(|&s| s <= stage) {
            if !self.stage_done(st) {
                self.run_one(st, backend, progress, rec)?;
            }
        }
        Ok(())
    }

    fn tag(&self, s: &str) -> String {
        if self.pass == 0 {
            s.to_string()
        } else {
            format!("pass{}_{s}", self.pass + 1)
        }
    }

    fn run_one(
        &mut self,
        stage: Stage,
        backend: &dyn Backend,
        progress: &dyn Progress,
        rec: &mut Recorder<'_>,
    ) -> Result<()> {
        match stage {
            Stage::Mean => self.stage_mean(backend, progress, rec),
            Stage::Noise => self.stage_noise(backend, progress, rec),
            Stage::Covariance => self.stage_covariance(backend, progress, rec),
            Stage::Embedding => {
                self.stage_embedding(backend, progress, rec)?;
                if self.needs_do_over() {
                    self.do_over(backend, progress, rec)?;
                }
                Ok(())
            }
        }
    }

    /// The initial noise estimate (§2.1), shared by both passes.
    fn initial_noise(
        &mut self,
        backend: &dyn Backend,
        progress: &dyn Progress,
        rec: &mut Recorder<'_>,
    ) -> Result<InitialNoise> {
        if let Some(i) = &self.init {
            return Ok(i.clone());
        }
        let ds = self.dataset()?;
        rec.start("noise_initial", ds.halfsets()[0].len().min(10_000) as u64);
        let init = match rec.load("noise_initial") {
            Some(ck) => InitialNoise {
                scalar: ck.scalar("scalar")?,
                radial_ps: ck.f64("radial_ps")?,
                images_used: ck.scalar("images_used")? as usize,
            },
            None => {
                let init =
                    initial_noise(ds, backend, 10_000, self.opts.seed, self.batch, progress)?;
                rec.save("noise_initial", || {
                    let mut ck = Checkpoint::new();
                    ck.put_scalar("scalar", init.scalar)
                        .put("radial_ps", Array::F64(init.radial_ps.clone()))
                        .put_scalar("images_used", init.images_used as f64);
                    ck
                })?;
                init
            }
        };
        tracing::info!(
            "initial noise estimate from {} images: {:.4e}",
            init.images_used,
            init.scalar
        );
        self.init = Some(init.clone());
        Ok(init)
    }

    fn stage_mean(
        &mut self,
        backend: &dyn Backend,
        progress: &dyn Progress,
        rec: &mut Recorder<'_>,
    ) -> Result<()> {
        let init = self.initial_noise(backend, progress, rec)?;
        let tag = self.tag("mean");
        let n = self.n;
        let batch = self.batch;
        let mean_fn = self.opts.mean_fn;
        let ds = self.dataset_mut()?;
        rec.start(&tag, ds.len() as u64);
        let mean = match rec.load(&tag) {
            Some(ck) => {
                ds.set_data_sign(ck.scalar("data_sign")? as f32);
                MeanEstimate {
                    halves_unreg: [volume_from(&ck, "unreg0")?, volume_from(&ck, "unreg1")?],
                    halves_reg: [volume_from(&ck, "reg0")?, volume_from(&ck, "reg1")?],
                    combined: volume_from(&ck, "combined")?,
                    fsc: ck.f64("fsc")?,
                    prior: ck.f64("prior")?,
                    lhs: ck.f32("lhs")?,
                    flipped: ck.scalar("flipped")? != 0.0,
                }
            }
            None => {
                let m = estimate_mean(ds, backend, init.scalar, mean_fn, batch, progress)?;
                let sign = ds.data_sign();
                rec.save(&tag, || {
                    let mut ck = Checkpoint::new();
                    volume_entries(&mut ck, "unreg0", &m.halves_unreg[0]);
                    volume_entries(&mut ck, "unreg1", &m.halves_unreg[1]);
                    volume_entries(&mut ck, "reg0", &m.halves_reg[0]);
                    volume_entries(&mut ck, "reg1", &m.halves_reg[1]);
                    volume_entries(&mut ck, "combined", &m.combined);
                    ck.put("fsc", Array::F64(m.fsc.clone()))
                        .put("prior", Array::F64(m.prior.clone()))
                        .put("lhs", Array::F32(m.lhs.clone()))
                        .put_scalar("flipped", if m.flipped { 1.0 } else { 0.0 })
                        .put_scalar("data_sign", sign as f64);
                    ck
                })?;
                m
            }
        };
        let res = crate::fourier::fsc_resolutions(&mean.fsc, n, self.voxel_size);
        tracing::info!(
            "pass {}: half-map FSC {:.2} Å at 0.5, {:.2} Å at 0.143",
            self.pass,
            res.at_0_5,
            res.at_0_143
        );
        // Masks are cheap: always recomputed from the mean.
        rec.start(&self.tag("masks"), 0);
        let halfmaps = (&mean.halves_reg[0].real[..], &mean.halves_reg[1].real[..]);
        let masks = make_masks(&self.opts.mask, n, &self.opts.mask_settings, Some(halfmaps))?;
        let focus = match &self.opts.focus_mask {
            Some(p) => Some(focus_mask(p, n, &self.opts.mask_settings)?),
            None => None,
        };
        self.state.mean = Some(mean);
        self.state.masks = Some(masks);
        self.state.focus = focus;
        Ok(())
    }

    fn stage_noise(
        &mut self,
        backend: &dyn Backend,
        progress: &dyn Progress,
        rec: &mut Recorder<'_>,
    ) -> Result<()> {
        let tag = self.tag("noise");
        let ds = self.dataset()?;
        let (Some(mean), Some(masks)) = (&self.state.mean, &self.state.masks) else {
            return Err(Error::invalid("the noise stage needs the mean stage first"));
        };
        rec.start(&tag, ds.len() as u64);
        let noise = match rec.load(&tag) {
            Some(ck) => NoiseEstimate {
                used: ck.f64("used")?,
                outside: ck.f64("outside")?,
                masked_image_ps: ck.f64("masked_image_ps")?,
                outside_deconvolved: ck.f64("outside_deconvolved")?,
                upper_bound: ck.f64("upper_bound")?,
                white_outside: ck.scalar("white_outside")?,
                image_ps: ck.f64("image_ps")?,
            },
            None => {
                let deconvolve = matches!(self.opts.mask, MaskOption::File(_));
                let e = estimate_noise(
                    ds,
                    backend,
                    &mean.combined.spectrum,
                    &masks.dilated,
                    self.opts.noise_model,
                    deconvolve,
                    self.batch,
                    progress,
                )?;
                rec.save(&tag, || {
                    let mut ck = Checkpoint::new();
                    ck.put("used", Array::F64(e.used.clone()))
                        .put("outside", Array::F64(e.outside.clone()))
                        .put("masked_image_ps", Array::F64(e.masked_image_ps.clone()))
                        .put(
                            "outside_deconvolved",
                            Array::F64(e.outside_deconvolved.clone()),
                        )
                        .put("upper_bound", Array::F64(e.upper_bound.clone()))
                        .put_scalar("white_outside", e.white_outside)
                        .put("image_ps", Array::F64(e.image_ps.clone()));
                    ck
                })?;
                e
            }
        };
        self.state.noise_used = Some(noise.used.clone());
        self.state.noise = Some(noise);
        Ok(())
    }

    /// The mask the heterogeneity stages use: the focus mask when given.
    fn volume_mask(&self) -> Result<Vec<f32>> {
        match (&self.state.focus, &self.state.masks) {
            (Some(f), _) => Ok(f.clone()),
            (None, Some(m)) => Ok(m.mask.clone()),
            (None, None) => Err(Error::invalid("the masks come from the mean stage")),
        }
    }

    fn context<'s>(
        &'s self,
        backend: &'s dyn Backend,
        volume_mask: &'s [f32],
    ) -> Result<heterogeneity::Context<'s>> {
        let (Some(mean), Some(masks), Some(noise)) =
            (&self.state.mean, &self.state.masks, &self.state.noise_used)
        else {
            return Err(Error::invalid(
                "the heterogeneity stages need the mean and noise stages first",
            ));
        };
        Ok(heterogeneity::Context {
            ds: self.dataset()?,
            backend,
            mean: &mean.combined.spectrum,
            noise,
            volume_mask,
            dilated_mask: &masks.dilated,
            batch_size: self.batch,
        })
    }

    fn stage_covariance(
        &mut self,
        backend: &dyn Backend,
        progress: &dyn Progress,
        rec: &mut Recorder<'_>,
    ) -> Result<()> {
        if self.opts.zdims.is_empty() {
            return Err(Error::invalid(
                "the heterogeneity stages need at least one latent dimension (zdims)",
            ));
        }
        let n = self.n;
        let n_images = self.n_images as u64;
        let volume_mask = self.volume_mask()?;
        // Variance, with the noise bound from it twice (§2.5), then the final variance.
        let tag = self.tag("variance");
        rec.start(&tag, 3 * n_images);
        if self.state.variance.is_none() {
            let (noise_used, variance, fsc) = match rec.load(&tag) {
                Some(ck) => (ck.f64("noise_used")?, ck.f32("variance")?, ck.f64("fsc")?),
                None => {
                    let noise_init =
                        self.state.noise_used.clone().ok_or_else(|| {
                            Error::invalid("the covariance stage needs the noise")
                        })?;
                    let mut noise_used = noise_init;
                    for _ in 0..2 {
                        self.state.noise_used = Some(noise_used.clone());
                        let e = heterogeneity::variance::estimate_variance(
                            &self.context(backend, &volume_mask)?,
                            progress,
                        )?;
                        noise_used =
                            heterogeneity::variance::bound_noise_by_variance(&noise_used, &e, n);
                    }
                    self.state.noise_used = Some(noise_used.clone());
                    let e = heterogeneity::variance::estimate_variance(
                        &self.context(backend, &volume_mask)?,
                        progress,
                    )?;
                    rec.save(&tag, || {
                        let mut ck = Checkpoint::new();
                        ck.put("noise_used", Array::F64(noise_used.clone()))
                            .put("variance", Array::F32(e.variance.clone()))
                            .put("fsc", Array::F64(e.fsc.clone()));
                        ck
                    })?;
                    (noise_used, e.variance, e.fsc)
                }
            };
            self.state.noise_used = Some(noise_used);
            self.state.variance = Some((variance, fsc));
        }
        let ctx = self.context(backend, &volume_mask)?;
        ctx.validate()?;
        let (Some(mean), Some((variance, _))) = (&self.state.mean, &self.state.variance) else {
            return Err(Error::invalid(
                "the covariance stage needs the mean and variance",
            ));
        };

        // Covariance columns and principal components: one checkpoint. The columns are the
        // largest object of the run (300·N³ complex values: 5 GB at N = 128) and only the
        // PCA reads them, so they are stored only when asked for.
        let cov = &self.opts.covariance;
        let n3 = n * n * n;
        let per_shell = n / 2 - 1;
        let pca_tag = self.tag("pca");
        let result = match rec.load(&pca_tag) {
            Some(ck) => {
                rec.resumed
                    .insert(rec.resumed.len() - 1, self.tag("columns"));
                let f = ck.i64("freqs")?;
                let freqs: Vec<[i32; 3]> = f
                    .chunks_exact(3)
                    .map(|c| [c[0] as i32, c[1] as i32, c[2] as i32])
                    .collect();
                let column_fscs = ck
                    .f64("fscs")?
                    .chunks_exact(per_shell)
                    .map(|c| c.to_vec())
                    .collect();
                let columns = if self.opts.keep_columns {
                    Some(
                        ck.c32("columns")?
                            .chunks_exact(n3)
                            .map(|c| c.to_vec())
                            .collect(),
                    )
                } else {
                    None
                };
                let pcs = Pcs {
                    vectors: ck
                        .c32("vectors")?
                        .chunks_exact(n3)
                        .map(|c| c.to_vec())
                        .collect(),
                    values: ck.f64("values")?,
                };
                CovResult {
                    freqs,
                    column_fscs,
                    columns,
                    pcs,
                }
            }
            None => {
                rec.start(&self.tag("columns"), n_images);
                let freqs = heterogeneity::columns::pick_columns(&mean.lhs, variance, n, cov)?;
                let cols = heterogeneity::columns::estimate_columns(
                    &ctx,
                    &mean.prior,
                    &freqs,
                    cov,
                    self.opts.memory_budget,
                    progress,
                )?;
                rec.start(&pca_tag, n_images);
                // The SVD forms its basis in the columns' storage; a copy only when asked for.
                let columns = self.opts.keep_columns.then(|| cols.columns.clone());
                let basis = heterogeneity::pca::randomized_svd(
                    &cols.freqs,
                    cols.columns,
                    n,
                    cov.sketch_size,
                    cov.n_pcs,
                    cov.seed,
                )?;
                let mut pcs =
                    heterogeneity::pca::projected_covariance(&ctx, basis.vectors, progress)?;
                if self.opts.correct_contrast && self.pass == 0 {
                    pcs = heterogeneity::pca::knock_out_mean(
                        pcs,
                        &mean.combined.real,
                        &volume_mask,
                        n,
                    )?;
                }
                // Later stages use at most max(max zdim, 50) components.
                let keep = pcs
                    .vectors
                    .len()
                    .min(self.opts.zdims.iter().copied().max().unwrap_or(0).max(50));
                pcs.truncate(keep);
                rec.save(&pca_tag, || {
                    let mut ck = Checkpoint::new();
                    ck.put(
                        "freqs",
                        Array::I64(
                            cols.freqs
                                .iter()
                                .flat_map(|f| f.iter().map(|&v| v as i64))
                                .collect(),
                        ),
                    )
                    .put(
                        "fscs",
                        Array::F64(cols.fscs.iter().flatten().copied().collect()),
                    )
                    .put(
                        "vectors",
                        Array::C32(pcs.vectors.iter().flatten().copied().collect()),
                    )
                    .put("values", Array::F64(pcs.values.clone()));
                    if let Some(c) = &columns {
                        ck.put("columns", Array::C32(c.iter().flatten().copied().collect()));
                    }
                    ck
                })?;
                CovResult {
                    freqs: cols.freqs,
                    column_fscs: cols.fscs,
                    columns,
                    pcs: Pcs {
                        vectors: pcs.vectors,
                        values: pcs.values,
                    },
                }
            }
        };
        tracing::info!(
            "pass {}: {} principal components; top eigenvalues {:?}",
            self.pass,
            result.pcs.values.len(),
            &result.pcs.values[..result.pcs.values.len().min(5)]
        );
        self.state.cov = Some(result);
        Ok(())
    }

    fn stage_embedding(
        &mut self,
        backend: &dyn Backend,
        progress: &dyn Progress,
        rec: &mut Recorder<'_>,
    ) -> Result<()> {
        let tag = self.tag("embedding");
        rec.start(&tag, self.n_images as u64);
        let zdims = self.opts.zdims.clone();
        let embeddings = match rec.load(&tag) {
            Some(ck) => zdims
                .iter()
                .map(|&z| -> Result<ZdimEmbedding> {
                    Ok(ZdimEmbedding {
                        zdim: z,
                        zs: ck.f32(&format!("zs{z}"))?,
                        precisions: ck.f32(&format!("prec{z}"))?,
                        contrasts: ck.f32(&format!("contrast{z}"))?,
                        zs_noreg: ck.f32(&format!("zs_noreg{z}"))?,
                        precisions_noreg: ck.f32(&format!("prec_noreg{z}"))?,
                        contrasts_noreg: ck.f32(&format!("contrast_noreg{z}"))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            None => {
                let volume_mask = self.volume_mask()?;
                let ctx = self.context(backend, &volume_mask)?;
                let pcs = &self
                    .state
                    .cov
                    .as_ref()
                    .ok_or_else(|| Error::invalid("the embedding stage needs the covariance"))?
                    .pcs;
                let e = heterogeneity::embedding::embed(
                    &ctx,
                    &pcs.vectors,
                    &pcs.values,
                    &zdims,
                    self.opts.correct_contrast,
                    self.opts.ignore_zero_frequency,
                    progress,
                )?;
                let zipped: Vec<ZdimEmbedding> = e
                    .regularized
                    .into_iter()
                    .zip(e.unregularized)
                    .map(|(r, u)| ZdimEmbedding {
                        zdim: r.zdim,
                        zs: r.zs,
                        precisions: r.precisions,
                        contrasts: r.contrasts,
                        zs_noreg: u.zs,
                        precisions_noreg: u.precisions,
                        contrasts_noreg: u.contrasts,
                    })
                    .collect();
                rec.save(&tag, || {
                    let mut ck = Checkpoint::new();
                    for e in &zipped {
                        let z = e.zdim;
                        ck.put(&format!("zs{z}"), Array::F32(e.zs.clone()))
                            .put(&format!("prec{z}"), Array::F32(e.precisions.clone()))
                            .put(&format!("contrast{z}"), Array::F32(e.contrasts.clone()))
                            .put(&format!("zs_noreg{z}"), Array::F32(e.zs_noreg.clone()))
                            .put(
                                &format!("prec_noreg{z}"),
                                Array::F32(e.precisions_noreg.clone()),
                            )
                            .put(
                                &format!("contrast_noreg{z}"),
                                Array::F32(e.contrasts_noreg.clone()),
                            );
                    }
                    ck
                })?;
                zipped
            }
        };
        self.state.embeddings = Some(embeddings);
        Ok(())
    }

    /// Contrast correction's second pass (§6.5): the first pass's contrasts (normalised to
    /// mean 1) go into the CTF and every stage runs again; reported contrasts are the
    /// product of both passes' estimates.
    fn do_over(
        &mut self,
        backend: &dyn Backend,
        progress: &dyn Progress,
        rec: &mut Recorder<'_>,
    ) -> Result<()> {
        let first = self
            .state
            .embeddings
            .as_ref()
            .map(|e| contrast_for_do_over(e, &self.opts.zdims))
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Error::invalid("contrast correction: the first pass gave no contrasts")
            })?;
        let mean_c = first.iter().map(|&v| v as f64).sum::<f64>() / first.len().max(1) as f64;
        let normalized: Vec<f32> = first.iter().map(|&v| (v as f64 / mean_c) as f32).collect();
        tracing::info!("second pass: per-image contrasts (normalised to mean 1) go into the CTF");
        self.dataset_mut()?.multiply_contrasts(&normalized)?;
        self.pass = 1;
        self.state = PassState::default();
        for st in Stage::ALL {
            self.run_one(st, backend, progress, rec)?;
        }
        if let Some(es) = self.state.embeddings.as_mut() {
            for e in es.iter_mut() {
                for (c, f) in e.contrasts.iter_mut().zip(&first) {
                    *c *= f;
                }
                for (c, f) in e.contrasts_noreg.iter_mut().zip(&first) {
                    *c *= f;
                }
            }
        }
        Ok(())
    }

    /// The initial noise estimate (after the mean stage).
    pub(super) fn init(&self) -> Option<&InitialNoise> {
        self.init.as_ref()
    }

    fn missing(&self, what: &str, stage: Stage) -> Error {
        Error::invalid(format!(
            "no {what} yet: run the {} stage first",
            stage.name()
        ))
    }

    /// The mean volume (real space, `N³`, z-major).
    pub fn mean(&self) -> Result<&[f32]> {
        if let Some(l) = &self.loaded {
            return Ok(&l.mean);
        }
        self.state
            .mean
            .as_ref()
            .map(|m| &m.combined.real[..])
            .ok_or_else(|| self.missing("mean", Stage::Mean))
    }

    /// The radial noise profile in use (`N/2 − 1` shells): the noise model's, bounded by
    /// the variance once the covariance stage ran.
    pub fn noise(&self) -> Result<&[f64]> {
        if let Some(l) = &self.loaded {
            return Ok(&l.noise);
        }
        self.state
            .noise_used
            .as_deref()
            .ok_or_else(|| self.missing("noise model", Stage::Noise))
    }

    fn pcs(&self) -> Result<&Pcs> {
        let p = match &self.loaded {
            Some(l) => l.pcs.as_ref(),
            None => self.state.cov.as_ref().map(|c| &c.pcs),
        };
        p.ok_or_else(|| self.missing("principal components", Stage::Covariance))
    }

    /// Eigenvalues of the covariance, largest first.
    pub fn eigenvalues(&self) -> Result<&[f64]> {
        Ok(&self.pcs()?.values)
    }

    /// Eigenvolume `k` in real space (unit norm, as eigen_pos{k}.mrc).
    pub fn eigenvolume(&self, k: usize) -> Result<Vec<f32>> {
        let pcs = self.pcs()?;
        let u = pcs.vectors.get(k).ok_or_else(|| {
            Error::invalid(format!(
                "eigenvolume {k} does not exist: the model has {} (0-based)",
                pcs.vectors.len()
            ))
        })?;
        Ok(super::outputs::real_space(u, &Fft3::<f32>::new(self.n)))
    }

    /// The variance map of the first `n_components` components: `Σ λ_k u_k²` per voxel
    /// (as variance{k}.mrc).
    pub fn variance_map(&self, n_components: usize) -> Result<Vec<f32>> {
        let pcs = self.pcs()?;
        if n_components == 0 || n_components > pcs.vectors.len() {
            return Err(Error::invalid(format!(
                "a variance map needs 1 to {} components, not {n_components}",
                pcs.vectors.len()
            )));
        }
        let fft = Fft3::<f32>::new(self.n);
        let mut var = vec![0.0f64; self.n * self.n * self.n];
        for (u, &lam) in pcs.vectors.iter().zip(&pcs.values).take(n_components) {
            let r = super::outputs::real_space(u, &fft);
            for (a, b) in var.iter_mut().zip(&r) {
                *a += lam * (*b as f64) * (*b as f64);
            }
        }
        Ok(var.iter().map(|&v| v as f32).collect())
    }

    fn embeddings(&self) -> Option<&[ZdimEmbedding]> {
        match &self.loaded {
            Some(l) => Some(&l.embeddings),
            None if self.stage_done(Stage::Embedding) => self.state.embeddings.as_deref(),
            None => None,
        }
    }

    /// Latent dimensions with an embedding (empty before the embedding stage).
    pub fn zdims(&self) -> Vec<usize> {
        self.embeddings()
            .map(|e| e.iter().map(|e| e.zdim).collect())
            .unwrap_or_default()
    }

    /// The embedding of dimension `zdim`, one row per image in dataset order.
    pub fn embedding(&self, zdim: usize, regularized: bool) -> Result<EmbeddingView<'_>> {
        let all = self
            .embeddings()
            .ok_or_else(|| self.missing("embedding", Stage::Embedding))?;
        let e = all.iter().find(|e| e.zdim == zdim).ok_or_else(|| {
            Error::invalid(format!(
                "no embedding of dimension {zdim} (available: {:?})",
                all.iter().map(|e| e.zdim).collect::<Vec<_>>()
            ))
        })?;
        Ok(if regularized {
            EmbeddingView {
                zdim,
                zs: &e.zs,
                precisions: &e.precisions,
                contrasts: &e.contrasts,
            }
        } else {
            EmbeddingView {
                zdim,
                zs: &e.zs_noreg,
                precisions: &e.precisions_noreg,
                contrasts: &e.contrasts_noreg,
            }
        })
    }

    /// A volume by kernel regression at `point` from the model's own embedding of
    /// dimension `zdim` (as `recovar compute_state`).
    pub fn generate(
        &self,
        zdim: usize,
        regularized: bool,
        point: &[f32],
        kopts: &KernelOptions,
        backend: &dyn Backend,
        progress: &dyn Progress,
    ) -> Result<GeneratedVolume> {
        check_point(point, zdim)?;
        let emb = self.embedding(zdim, regularized)?;
        let noise = self.noise()?.to_vec();
        // Contrasts go into a copy's CTF (images are shared, not copied).
        let mut ds = self.dataset()?.clone();
        ds.multiply_contrasts(emb.contrasts)?;
        generate_volume(
            &ds,
            backend,
            &noise,
            Latent {
                zdim,
                zs: emb.zs,
                precisions: emb.precisions,
            },
            point,
            kopts,
            progress,
        )
    }

    /// Write the pipeline's output layout to `dir` (volumes, plots, model/…), as
    /// `recovar pipeline -o dir` would after the stages run so far (mean and noise at
    /// least). The dataset must have come from files for `Model::load` to reopen it.
    pub fn save(&self, dir: &Path, progress: &dyn Progress) -> Result<()> {
        if let Some(l) = &self.loaded {
            return Err(Error::invalid(format!(
                "the model was loaded from {}; it is already saved there",
                l.dir.display()
            )));
        }
        if !(self.stage_done(Stage::Mean) && self.stage_done(Stage::Noise)) {
            return Err(Error::invalid(
                "nothing to save yet: run the mean and noise stages first",
            ));
        }
        super::save_model(self, dir, progress)
    }
}

/// One zdim's embedding, in dataset order.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddingView<'a> {
    pub zdim: usize,
    /// `n × zdim`.
    pub zs: &'a [f32],
    /// `n × zdim × zdim`.
    pub precisions: &'a [f32],
    /// `n`.
    pub contrasts: &'a [f32],
}

fn check_point(point: &[f32], zdim: usize) -> Result<()> {
    if point.len() != zdim {
        return Err(Error::invalid(format!(
            "the latent point has {} coordinates; the embedding has dimension {zdim}",
            point.len()
        )));
    }
    if let Some(i) = point.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "coordinate {i} of the latent point is not finite"
        )));
    }
    Ok(())
}

/// The rows of an embedding made elsewhere for `dataset`'s images, in dataset order, with
/// their precisions (`rows × zdim × zdim`, or empty for the identity): `zs` holds one row of
/// `zdim` values per image of the dataset, or one per particle of its file (then picked by
/// the dataset's indices). Counts that fit neither, and non-finite rows in use, are errors.
pub fn embedding_rows(
    dataset: &Dataset,
    zs: &[f32],
    zdim: usize,
    precisions: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    if zdim == 0 {
        return Err(Error::invalid("the embedding dimension must be at least 1"));
    }
    if zs.is_empty() || !zs.len().is_multiple_of(zdim) {
        return Err(Error::invalid(format!(
            "the embedding has {} values, not a whole number of rows of {zdim}",
            zs.len()
        )));
    }
    let rows = zs.len() / zdim;
    let pick = |v: &[f32], w: usize| -> Vec<f32> {
        dataset
            .original_indices()
            .iter()
            .flat_map(|&o| v[o * w..(o + 1) * w].iter().copied())
            .collect()
    };
    let per_file = rows != dataset.len();
    if per_file && rows != dataset.total_in_file() {
        return Err(Error::inconsistent(format!(
            "{rows} embedding rows, but {} images are selected ({} particles in the file); \
             the embedding must have one row per selected image or one per particle",
            dataset.len(),
            dataset.total_in_file()
        )));
    }
    if !precisions.is_empty() && precisions.len() != rows * zdim * zdim {
        return Err(Error::invalid(format!(
            "{} precision values for {rows} rows of dimension {zdim} (expected {})",
            precisions.len(),
            rows * zdim * zdim
        )));
    }
    let zs_used = if per_file {
        pick(zs, zdim)
    } else {
        zs.to_vec()
    };
    if let Some(i) = zs_used.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "embedding row {} has a non-finite value",
            i / zdim
        )));
    }
    let prec_used = if per_file && !precisions.is_empty() {
        pick(precisions, zdim * zdim)
    } else {
        precisions.to_vec()
    };
    Ok((zs_used, prec_used))
}

/// Kernel regression at `point` on an embedding made elsewhere (e.g. cryoDRGN's z.pkl): one
/// row of `zdim` values per image of `dataset`, or per particle of its file (then picked
/// by the dataset's indices). `precisions` (`rows × zdim × zdim`) may be empty for the
/// identity. The noise profile is estimated from the dataset (radial, from outside a mask
/// made from the half maps), as `recovar generate_from_embedding` does.
#[allow(clippy::too_many_arguments)]
pub fn generate_from_embedding(
    dataset: &Dataset,
    zs: &[f32],
    zdim: usize,
    precisions: &[f32],
    point: &[f32],
    kopts: &KernelOptions,
    backend: &dyn Backend,
    progress: &dyn Progress,
) -> Result<GeneratedVolume> {
    check_point(point, zdim)?;
    let (zs_used, prec_used) = embedding_rows(dataset, zs, zdim, precisions)?;
    let mut ds = dataset.clone();
    let noise = super::load::estimate_noise_profile(
        &mut ds,
        backend,
        NoiseModel::Radial,
        kopts.batch_size,
        progress,
    )?;
    generate_volume(
        &ds,
        backend,
        &noise,
        Latent {
            zdim,
            zs: &zs_used,
            precisions: &prec_used,
        },
        point,
        kopts,
        progress,
    )
}

/// Rows of a stored (original-file indexed) embedding for the model's images: the
/// dataset's indices when it could be reopened, else every row that has an embedding.
fn stored_rows(zs: &[f32], zdim: usize, ds: Option<&Dataset>) -> Vec<usize> {
    let total = zs.len() / zdim.max(1);
    match ds {
        Some(d) if d.original_indices().iter().all(|&o| o < total) => d.original_indices().to_vec(),
        _ => (0..total)
            .filter(|&o| zs[o * zdim..(o + 1) * zdim].iter().all(|v| v.is_finite()))
            .collect(),
    }
}

/// Eigenvalues and Fourier eigenvectors written by the pipeline.
fn read_pcs(model_dir: &Path, n: usize) -> Result<Pcs> {
    let vpath = model_dir.join("eigenvalues.npy");
    let values = NpyArray::read(&vpath)?.to_f64()?;
    let upath = model_dir.join("eigenvectors_fourier.npy");
    let a = NpyArray::read(&upath)?;
    let n3 = n * n * n;
    let ok = matches!(a.dtype(), DType::Plain(t) if t.kind == Kind::Complex && t.size == 8
        && t.order != crate::io::npy::ByteOrder::Big)
        && !a.fortran_order();
    if !ok || a.shape() != [values.len(), n, n, n] {
        return Err(Error::format(
            &upath,
            format!(
                "expected little-endian complex64 of shape ({}, {n}, {n}, {n}), got {:?} {:?}",
                values.len(),
                a.dtype(),
                a.shape()
            ),
        ));
    }
    let data = a.data();
    let flat: Vec<Complex<f32>> = data
        .chunks_exact(8)
        .map(|c| {
            Complex::new(
                f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    Ok(Pcs {
        vectors: flat.chunks_exact(n3).map(|c| c.to_vec()).collect(),
        values,
    })
}
