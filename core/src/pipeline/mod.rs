//! The RECOVAR pipeline: its stages, in order, and their files on disk (the Python tool's
//! layout, algorithms.md §0 and §14).
//!
//! Stages: dataset → initial noise (§2.1) → mean with halfsets and FSC prior (§3) and the
//! sign check (§1.7) → masks (§4) → noise model (§2.2–2.4) → [unless `--only-mean`] variance
//! and the noise bound from it (§5.2, §2.5, twice) → covariance columns (§5.3–5.5) →
//! randomized SVD (§5.6) → projected covariance and eigenvolumes (§5.7) → embeddings for
//! every zdim (§6). With `--correct-contrast` the first pass orthogonalizes the PCs against the
//! mean and searches per-image contrasts; the second pass puts them into the CTF and runs
//! everything again (§6.5).
//!
//! Every pass over the images reports progress; every file is written atomically; every
//! finished stage leaves a checkpoint, so a re-run with the same arguments resumes after the
//! last finished stage (with the same result); `timings.json` records wall time and peak
//! memory per stage.

pub mod analyze;
mod checkpoint;
pub mod density;
pub mod load;
pub mod model;
mod outputs;
pub mod selftest;
mod timing;
pub mod trajectory;

use std::path::{Path, PathBuf};

pub use checkpoint::{fingerprint, Checkpoint, Checkpoints};
pub use model::{generate_from_embedding, EmbeddingView, Model, ModelOptions, Recorder, Stage};
pub use timing::{StageTiming, Timings};

use checkpoint::{file_identity, Array};
use num_complex::Complex;

use crate::backend::Backend;
use crate::dataset::{Dataset, DatasetOptions};
use crate::error::{Error, Result};
use crate::fourier::{fsc_resolutions, FscResolutions};
use crate::heterogeneity::{self, CovarianceOptions};
use crate::progress::Progress;
use crate::reconstruct::locres::{local_resolution, LocresOptions};
use crate::reconstruct::mask::{MaskOption, MaskSettings};
use crate::reconstruct::mean::{MeanEstimate, MeanFn, Volume};
use crate::reconstruct::noise::NoiseModel;

/// Options of `recovar pipeline`.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Particles, poses, CTF, selection, halfsets, sign.
    pub dataset: DatasetOptions,
    /// `-o`.
    pub outdir: PathBuf,
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
    /// `--only-mean`: stop after the mean, masks and noise model.
    pub only_mean: bool,
    /// `--zdim`: latent dimensions to embed.
    pub zdims: Vec<usize>,
    /// `--correct-contrast`.
    pub correct_contrast: bool,
    /// `--ignore-zero-frequency`.
    pub ignore_zero_frequency: bool,
    /// Columns, sketch, PCs, image masks (`--low-memory-option`, `--dont-use-image-mask`, ...).
    pub covariance: CovarianceOptions,
    /// `--keep-intermediate`: also write the covariance columns.
    pub keep_intermediate: bool,
    /// Working memory for batches, bytes (batch sizes only; never the results).
    pub memory_budget: u64,
    /// Seed of random choices.
    pub seed: u64,
    /// The command line, for command.txt.
    pub command_line: String,
}

/// What the run found, for reporting.
#[derive(Clone, Debug)]
pub struct PipelineSummary {
    pub n_images: usize,
    pub box_size: usize,
    pub voxel_size: f64,
    /// Half-map FSC resolutions (Å) at 0.5 and 0.143 (last pass).
    pub resolution: FscResolutions,
    /// True if the data sign was flipped by the automatic check.
    pub flipped: bool,
    /// Eigenvalues (empty with `--only-mean`).
    pub eigenvalues: Vec<f64>,
    /// Stages resumed from checkpoints.
    pub resumed: Vec<String>,
    /// Stage timings.
    pub timings: Vec<StageTiming>,
}

/// The principal components: eigenvectors (Fourier, Σ|u|² = N³) and eigenvalues.
pub struct Pcs {
    pub vectors: Vec<Vec<Complex<f32>>>,
    pub values: Vec<f64>,
}

/// Embedding arrays for one zdim (dataset order).
pub struct ZdimEmbedding {
    pub zdim: usize,
    pub zs: Vec<f32>,
    pub precisions: Vec<f32>,
    pub contrasts: Vec<f32>,
    pub zs_noreg: Vec<f32>,
    pub precisions_noreg: Vec<f32>,
    pub contrasts_noreg: Vec<f32>,
}

/// Run the pipeline and write its outputs.
pub fn run_pipeline(
    opts: &PipelineOptions,
    backend: &dyn Backend,
    progress: &dyn Progress,
) -> Result<PipelineSummary> {
    validate(opts)?;
    let out = &opts.outdir;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::io::atomic::write_bytes(
        out.join("command.txt"),
        format!("{}\n", opts.command_line).as_bytes(),
    )?;
    let ckpts = Checkpoints::new(out, run_fingerprint(opts))?;
    let mut timings = Timings::new();

    timings.start("dataset", 0);
    let mut dsopts = opts.dataset.clone();
    dsopts.require_poses = true;
    dsopts.require_ctf = true;
    let ds = Dataset::open(&dsopts)?;
    ds.check_images_readable()?;
    let d = ds.box_size();
    let vs = ds.voxel_size();
    tracing::info!("dataset: {} images of {d}×{d} px at {vs:.4} Å", ds.len());
    let mut model = Model::new(ds, opts.model_options())?;
    model.set_source(dsopts);
    tracing::info!(
        "image batches of {} (memory budget {:.1} GB)",
        model.batch_size(),
        opts.memory_budget as f64 / 1e9
    );
    if !opts.only_mean {
        check_heterogeneity_memory(
            d,
            &opts.covariance,
            opts.memory_budget,
            opts.keep_intermediate,
        )?;
    }
    outputs::write_halfsets(&out.join("model"), model.dataset()?)?;

    let last = if opts.only_mean {
        Stage::Noise
    } else {
        Stage::Embedding
    };
    let mut rec = Recorder::new(&ckpts, &mut timings);
    model.run_stage_recorded(last, backend, progress, &mut rec)?;
    let resumed = std::mem::take(&mut rec.resumed);
    drop(rec);

    let resolution = write_results(&model, opts, progress, Some(&mut timings))?;
    timings.finish();
    timings.write_json(&out.join("timings.json"))?;
    let mean = model
        .state
        .mean
        .as_ref()
        .ok_or_else(|| Error::invalid("the pipeline produced no mean"))?;
    Ok(PipelineSummary {
        n_images: model.n_images(),
        box_size: d,
        voxel_size: vs,
        resolution,
        flipped: mean.flipped,
        eigenvalues: model.eigenvalues().map(|v| v.to_vec()).unwrap_or_default(),
        resumed,
        timings: timings.stages().to_vec(),
    })
}

/// The locally filtered mean and every output file of the stages run so far; returns the
/// half-map FSC resolutions.
fn write_results(
    model: &Model,
    opts: &PipelineOptions,
    progress: &dyn Progress,
    mut timings: Option<&mut Timings>,
) -> Result<FscResolutions> {
    let ds = model.dataset()?;
    let (d, vs) = (ds.box_size(), ds.voxel_size());
    let s = &model.state;
    let (Some(init), Some(mean), Some(masks), Some(noise), Some(noise_used)) =
        (model.init(), &s.mean, &s.masks, &s.noise, &s.noise_used)
    else {
        return Err(Error::invalid(
            "nothing to write yet: run the mean and noise stages first",
        ));
    };
    if let Some(t) = timings.as_mut() {
        t.start("local_resolution", 0);
    }
    let mean_filt = filtered_mean(mean, d, vs, progress)?;
    if let Some(t) = timings {
        t.start("write", 0);
    }
    let het = match (&s.variance, &s.cov) {
        (Some((variance, variance_fsc)), Some(cov)) if !opts.only_mean => {
            Some(outputs::HetOutputs {
                variance,
                variance_fsc,
                freqs: &cov.freqs,
                column_fscs: &cov.column_fscs,
                columns: cov.columns.as_deref(),
                pcs: &cov.pcs,
                embeddings: s.embeddings.as_deref().unwrap_or(&[]),
            })
        }
        _ => None,
    };
    outputs::write_all(
        opts,
        ds,
        init,
        mean,
        &mean_filt,
        masks,
        s.focus.as_deref(),
        noise,
        noise_used,
        het,
    )?;
    Ok(fsc_resolutions(&mean.fsc, d, vs))
}

/// [`Model::save`]: the pipeline's layout for whatever stages have run.
fn save_model(model: &Model, dir: &Path, progress: &dyn Progress) -> Result<()> {
    let ds = model.dataset()?;
    let o = model.options();
    let opts = PipelineOptions {
        dataset: model.source().cloned().unwrap_or_else(|| DatasetOptions {
            particles: ds.particles_path().to_path_buf(),
            ..Default::default()
        }),
        outdir: dir.to_path_buf(),
        mask: o.mask.clone(),
        mask_settings: o.mask_settings.clone(),
        focus_mask: o.focus_mask.clone(),
        noise_model: o.noise_model,
        mean_fn: o.mean_fn,
        only_mean: !model.stage_done(Stage::Covariance),
        zdims: o.zdims.clone(),
        correct_contrast: o.correct_contrast,
        ignore_zero_frequency: o.ignore_zero_frequency,
        covariance: o.covariance.clone(),
        keep_intermediate: o.keep_columns,
        memory_budget: o.memory_budget,
        seed: o.seed,
        command_line: format!("librecovar {} (Model::save)", crate::VERSION),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::io::atomic::write_bytes(
        dir.join("command.txt"),
        format!("{}\n", opts.command_line).as_bytes(),
    )?;
    outputs::write_halfsets(&dir.join("model"), ds)?;
    write_results(model, &opts, progress, None)?;
    Ok(())
}

impl PipelineOptions {
    /// The options that change results, for a [`Model`].
    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            mask: self.mask.clone(),
            mask_settings: self.mask_settings.clone(),
            focus_mask: self.focus_mask.clone(),
            noise_model: self.noise_model,
            mean_fn: self.mean_fn,
            zdims: self.zdims.clone(),
            correct_contrast: self.correct_contrast,
            ignore_zero_frequency: self.ignore_zero_frequency,
            covariance: self.covariance.clone(),
            keep_columns: self.keep_intermediate,
            memory_budget: self.memory_budget,
            seed: self.seed,
        }
    }
}

/// The contrasts that go into the CTF for the second pass: those of zdim 10, or of the
/// median requested zdim when 10 was not asked for (RECOVAR's rule).
pub(super) fn contrast_for_do_over(embeddings: &[ZdimEmbedding], zdims: &[usize]) -> Vec<f32> {
    let pick = if zdims.contains(&10) {
        10
    } else {
        let mut z = zdims.to_vec();
        z.sort_unstable();
        z[z.len() / 2]
    };
    embeddings
        .iter()
        .find(|e| e.zdim == pick)
        .map(|e| e.contrasts.clone())
        .unwrap_or_default()
}

fn validate(opts: &PipelineOptions) -> Result<()> {
    if !opts.only_mean {
        if opts.zdims.is_empty() {
            return Err(Error::invalid("--zdim needs at least one dimension"));
        }
        let maxz = *opts.zdims.iter().max().unwrap_or(&0);
        if opts.zdims.contains(&0) {
            return Err(Error::invalid("--zdim values must be at least 1"));
        }
        if maxz > opts.covariance.n_pcs {
            return Err(Error::invalid(format!(
                "--zdim {maxz} needs at least {maxz} principal components, but only {} are computed \
                 (a memory option lowers it)",
                opts.covariance.n_pcs
            )));
        }
    }
    Ok(())
}

/// Peak bytes of the covariance stages, which do not depend on the number of images: the
/// column block (`n_cols·N³` complex f32, which the randomized SVD overwrites with its basis)
/// with the column accumulators (bounded by the memory budget), then the basis (`n_pcs·N³`)
/// with the packed normal matrix of the projected covariance (`P(P+1)/2` f64,
/// `P = q(q+1)/2`) and the basis re-laid out for slicing (about half a basis), plus the
/// image batches (the memory budget). `--keep-intermediate` keeps a copy of the columns.
pub fn heterogeneity_memory_bytes(
    n: usize,
    cov: &heterogeneity::CovarianceOptions,
    memory_budget: u64,
    keep_intermediate: bool,
) -> u64 {
    let vol = 8 * (n as u64).pow(3);
    let cols = cov.n_cols as u64 * vol;
    let basis = cov.n_pcs as u64 * vol;
    let p = (cov.n_pcs * (cov.n_pcs + 1) / 2) as u64;
    let normal = p * (p + 1) / 2 * 8;
    let accum =
        memory_budget.min(cov.n_cols as u64 * heterogeneity::columns::column_accumulator_bytes(n));
    let kept = if keep_intermediate { cols } else { 0 };
    kept + (cols + accum).max(basis + normal + basis / 2 + memory_budget)
}

/// Memory the system can give us now (Linux `MemAvailable`), if known.
fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuse, before any work, a covariance job that cannot fit in this machine's memory.
fn check_heterogeneity_memory(
    n: usize,
    cov: &heterogeneity::CovarianceOptions,
    memory_budget: u64,
    keep_intermediate: bool,
) -> Result<()> {
    let need = heterogeneity_memory_bytes(n, cov, memory_budget, keep_intermediate);
    tracing::info!(
        "covariance stages need about {:.1} GB at {n} px",
        need as f64 / 1e9
    );
    if let Some(avail) = available_memory_bytes() {
        if need > avail {
            return Err(Error::invalid(format!(
                "the covariance stages need about {:.1} GB at a {n}-pixel box ({} columns, {} PCs) but only {:.1} GB of memory is available; \
                 use --low-memory-option or --very-low-memory-option, or downsample the particles (recovar downsample -D ...)",
                need as f64 / 1e9,
                cov.n_cols,
                cov.n_pcs,
                avail as f64 / 1e9
            )));
        }
    }
    Ok(())
}

/// Everything that determines the results: arguments and input files.
fn run_fingerprint(opts: &PipelineOptions) -> u64 {
    let d = &opts.dataset;
    let mut parts: Vec<String> = vec![
        format!("v{}", crate::VERSION),
        format!("{:?}", opts.mask),
        format!("{:?}", opts.mask_settings),
        format!("{:?}", opts.noise_model),
        format!("{:?}", opts.mean_fn),
        format!(
            "{:?} {} {}",
            opts.zdims, opts.correct_contrast, opts.ignore_zero_frequency
        ),
        format!("{:?}", opts.covariance),
        format!(
            "{:?} {:?} {:?} {}",
            d.n_images, d.uninvert, d.datadir, opts.seed
        ),
    ];
    for p in [
        Some(&d.particles),
        d.poses.as_ref(),
        d.ctf.as_ref(),
        d.ind.as_ref(),
        d.halfsets.as_ref(),
        opts.focus_mask.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        parts.push(file_identity(p));
    }
    if let MaskOption::File(p) = &opts.mask {
        parts.push(file_identity(p));
    }
    fingerprint(parts.iter().map(String::as_str))
}

pub(super) fn volume_entries(ck: &mut Checkpoint, name: &str, v: &Volume) {
    ck.put(&format!("{name}_real"), Array::F32(v.real.clone()));
    ck.put(&format!("{name}_spec"), Array::C32(v.spectrum.clone()));
}

pub(super) fn volume_from(ck: &Checkpoint, name: &str) -> Result<Volume> {
    Ok(Volume {
        real: ck.f32(&format!("{name}_real"))?,
        spectrum: ck.c32(&format!("{name}_spec"))?,
    })
}

/// Compatibility wrapper: the mean stages only (`--only-mean`).
pub fn run_mean_stages(
    opts: &PipelineOptions,
    backend: &dyn Backend,
    progress: &dyn Progress,
) -> Result<PipelineSummary> {
    let mut o = opts.clone();
    o.only_mean = true;
    run_pipeline(&o, backend, progress)
}

/// Local-resolution options for mean_filt.mrc: RECOVAR samples every 25 Å with 12.5 Å
/// windows; at coarse pixel sizes that is a window of one or two voxels whose local FSC is
/// pure noise, so the sampling is at least 8 voxels (windows of radius ≥ 4).
fn mean_locres_options(voxel_size: f64) -> LocresOptions {
    LocresOptions {
        sampling_angstrom: 25.0f64.max(8.0 * voxel_size),
        ..Default::default()
    }
}

/// The locally filtered mean.
fn filtered_mean(
    mean: &MeanEstimate,
    n: usize,
    vs: f64,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    Ok(local_resolution(
        &mean.halves_unreg[0].real,
        &mean.halves_unreg[1].real,
        n,
        vs,
        &mean_locres_options(vs),
        progress,
    )?
    .filtered)
}
