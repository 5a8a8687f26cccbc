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
mod outputs;
pub mod selftest;
mod timing;
pub mod trajectory;

use std::path::PathBuf;

pub use checkpoint::{fingerprint, Checkpoint, Checkpoints};
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
use crate::reconstruct::mask::{focus_mask, make_masks, MaskOption, MaskSettings};
use crate::reconstruct::mean::{estimate_mean, MeanEstimate, MeanFn, Volume};
use crate::reconstruct::noise::{
    estimate_noise, initial_noise, InitialNoise, NoiseEstimate, NoiseModel,
};

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

/// Working bytes per image of the image passes (image, spectrum, CTF, projections, mask).
fn bytes_per_image(d: usize) -> u64 {
    (d * d * 64) as u64
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

/// Everything one pass produced.
struct PassResult {
    mean: MeanEstimate,
    masks: crate::reconstruct::mask::Masks,
    focus: Option<Vec<f32>>,
    noise: NoiseEstimate,
    noise_used: Vec<f64>,
    het: Option<Heterogeneity>,
}

struct Heterogeneity {
    variance: Vec<f32>,
    variance_fsc: Vec<f64>,
    freqs: Vec<[i32; 3]>,
    column_fscs: Vec<Vec<f64>>,
    columns: Option<Vec<Vec<Complex<f32>>>>,
    pcs: Pcs,
    embeddings: Vec<ZdimEmbedding>,
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
    let mut resumed = Vec::new();
    let mut timings = Timings::new();

    timings.start("dataset", 0);
    let mut dsopts = opts.dataset.clone();
    dsopts.require_poses = true;
    dsopts.require_ctf = true;
    let mut ds = Dataset::open(&dsopts)?;
    ds.check_images_readable()?;
    let d = ds.box_size();
    let vs = ds.voxel_size();
    tracing::info!("dataset: {} images of {d}×{d} px at {vs:.4} Å", ds.len());
    let batch = ds
        .batch_size_for_budget(opts.memory_budget, bytes_per_image(d))
        .min(4096);
    tracing::info!(
        "image batches of {batch} (memory budget {:.1} GB)",
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
    outputs::write_halfsets(&out.join("model"), &ds)?;

    timings.start("noise_initial", ds.halfsets()[0].len().min(10_000) as u64);
    let init = match ckpts.load("noise_initial") {
        Some(ck) => {
            resumed.push("noise_initial".into());
            InitialNoise {
                scalar: ck.scalar("scalar")?,
                radial_ps: ck.f64("radial_ps")?,
                images_used: ck.scalar("images_used")? as usize,
            }
        }
        None => {
            let init = initial_noise(&ds, backend, 10_000, opts.seed, batch, progress)?;
            let mut ck = Checkpoint::new();
            ck.put_scalar("scalar", init.scalar)
                .put("radial_ps", Array::F64(init.radial_ps.clone()))
                .put_scalar("images_used", init.images_used as f64);
            ckpts.save("noise_initial", &ck)?;
            init
        }
    };
    tracing::info!(
        "initial noise estimate from {} images: {:.4e}",
        init.images_used,
        init.scalar
    );

    let passes = if opts.correct_contrast && !opts.only_mean {
        2
    } else {
        1
    };
    let mut first_contrasts: Option<Vec<f32>> = None;
    let mut last: Option<PassResult> = None;
    for pass in 0..passes {
        if pass == 1 {
            let c = first_contrasts.clone().ok_or_else(|| {
                Error::invalid("contrast correction: the first pass gave no contrasts")
            })?;
            let mean_c = c.iter().map(|&v| v as f64).sum::<f64>() / c.len().max(1) as f64;
            let normalized: Vec<f32> = c.iter().map(|&v| (v as f64 / mean_c) as f32).collect();
            tracing::info!(
                "second pass: per-image contrasts (normalised to mean 1) go into the CTF"
            );
            ds.multiply_contrasts(&normalized)?;
        }
        let result = run_pass(
            pass,
            opts,
            &mut ds,
            backend,
            &init,
            batch,
            &ckpts,
            &mut resumed,
            &mut timings,
            progress,
        )?;
        if pass == 0 && passes == 2 {
            first_contrasts = result
                .het
                .as_ref()
                .map(|h| contrast_for_do_over(&h.embeddings, &opts.zdims));
        }
        last = Some(result);
    }
    let mut result = last.ok_or_else(|| Error::invalid("the pipeline ran no pass"))?;
    // Reported contrasts are the product of both passes' estimates.
    if let (Some(first), Some(h)) = (&first_contrasts, result.het.as_mut()) {
        for e in h.embeddings.iter_mut() {
            for (c, f) in e.contrasts.iter_mut().zip(first) {
                *c *= f;
            }
            for (c, f) in e.contrasts_noreg.iter_mut().zip(first) {
                *c *= f;
            }
        }
    }

    timings.start("local_resolution", 0);
    let mean_filt = filtered_mean(&result.mean, d, vs, progress)?;
    timings.start("write", 0);
    let resolution = fsc_resolutions(&result.mean.fsc, d, vs);
    outputs::write_all(
        opts,
        &ds,
        &init,
        &result.mean,
        &mean_filt,
        &result.masks,
        result.focus.as_deref(),
        &result.noise,
        &result.noise_used,
        result.het.as_ref().map(|h| outputs::HetOutputs {
            variance: &h.variance,
            variance_fsc: &h.variance_fsc,
            freqs: &h.freqs,
            column_fscs: &h.column_fscs,
            columns: h.columns.as_deref(),
            pcs: &h.pcs,
            embeddings: &h.embeddings,
        }),
    )?;
    timings.finish();
    timings.write_json(&out.join("timings.json"))?;
    Ok(PipelineSummary {
        n_images: ds.len(),
        box_size: d,
        voxel_size: vs,
        resolution,
        flipped: result.mean.flipped,
        eigenvalues: result
            .het
            .as_ref()
            .map(|h| h.pcs.values.clone())
            .unwrap_or_default(),
        resumed,
        timings: timings.stages().to_vec(),
    })
}

/// The contrasts that go into the CTF for the second pass: those of zdim 10, or of the
/// median requested zdim when 10 was not asked for (RECOVAR's rule).
fn contrast_for_do_over(embeddings: &[ZdimEmbedding], zdims: &[usize]) -> Vec<f32> {
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

fn volume_entries(ck: &mut Checkpoint, name: &str, v: &Volume) {
    ck.put(&format!("{name}_real"), Array::F32(v.real.clone()));
    ck.put(&format!("{name}_spec"), Array::C32(v.spectrum.clone()));
}

fn volume_from(ck: &Checkpoint, name: &str) -> Result<Volume> {
    Ok(Volume {
        real: ck.f32(&format!("{name}_real"))?,
        spectrum: ck.c32(&format!("{name}_spec"))?,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_pass(
    pass: usize,
    opts: &PipelineOptions,
    ds: &mut Dataset,
    backend: &dyn Backend,
    init: &InitialNoise,
    batch: usize,
    ckpts: &Checkpoints,
    resumed: &mut Vec<String>,
    timings: &mut Timings,
    progress: &dyn Progress,
) -> Result<PassResult> {
    let d = ds.box_size();
    let n = d;
    let vs = ds.voxel_size();
    // The first pass's stages carry plain names; the contrast do-over's are "pass2_...".
    let tag = |s: &str| {
        if pass == 0 {
            s.to_string()
        } else {
            format!("pass{}_{s}", pass + 1)
        }
    };

    // Mean.
    timings.start(&tag("mean"), ds.len() as u64);
    let mean = match ckpts.load(&tag("mean")) {
        Some(ck) => {
            resumed.push(tag("mean"));
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
            let m = estimate_mean(ds, backend, init.scalar, opts.mean_fn, batch, progress)?;
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
                .put_scalar("data_sign", ds.data_sign() as f64);
            ckpts.save(&tag("mean"), &ck)?;
            m
        }
    };
    let res = fsc_resolutions(&mean.fsc, n, vs);
    tracing::info!(
        "pass {pass}: half-map FSC {:.2} Å at 0.5, {:.2} Å at 0.143",
        res.at_0_5,
        res.at_0_143
    );

    // Masks (cheap: always recomputed from the mean).
    timings.start(&tag("masks"), 0);
    let halfmaps = (&mean.halves_reg[0].real[..], &mean.halves_reg[1].real[..]);
    let masks = make_masks(&opts.mask, n, &opts.mask_settings, Some(halfmaps))?;
    let focus = match &opts.focus_mask {
        Some(p) => Some(focus_mask(p, n, &opts.mask_settings)?),
        None => None,
    };

    // Noise.
    timings.start(&tag("noise"), ds.len() as u64);
    let noise = match ckpts.load(&tag("noise")) {
        Some(ck) => {
            resumed.push(tag("noise"));
            NoiseEstimate {
                used: ck.f64("used")?,
                outside: ck.f64("outside")?,
                masked_image_ps: ck.f64("masked_image_ps")?,
                outside_deconvolved: ck.f64("outside_deconvolved")?,
                upper_bound: ck.f64("upper_bound")?,
                white_outside: ck.scalar("white_outside")?,
                image_ps: ck.f64("image_ps")?,
            }
        }
        None => {
            let deconvolve = matches!(opts.mask, MaskOption::File(_));
            let e = estimate_noise(
                ds,
                backend,
                &mean.combined.spectrum,
                &masks.dilated,
                opts.noise_model,
                deconvolve,
                batch,
                progress,
            )?;
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
            ckpts.save(&tag("noise"), &ck)?;
            e
        }
    };
    if opts.only_mean {
        let noise_used = noise.used.clone();
        return Ok(PassResult {
            mean,
            masks,
            focus,
            noise,
            noise_used,
            het: None,
        });
    }

    // Variance, with the noise bound from it twice (§2.5), then the final variance.
    timings.start(&tag("variance"), 3 * ds.len() as u64);
    let volume_mask = focus.clone().unwrap_or_else(|| masks.mask.clone());
    let (noise_used, variance, variance_fsc) = match ckpts.load(&tag("variance")) {
        Some(ck) => {
            resumed.push(tag("variance"));
            (ck.f64("noise_used")?, ck.f32("variance")?, ck.f64("fsc")?)
        }
        None => {
            let mut noise_used = noise.used.clone();
            macro_rules! make_ctx {
                ($noise:expr) => {
                    heterogeneity::Context {
                        ds,
                        backend,
                        mean: &mean.combined.spectrum,
                        noise: $noise,
                        volume_mask: &volume_mask,
                        dilated_mask: &masks.dilated,
                        batch_size: batch,
                    }
                };
            }
            for _ in 0..2 {
                let e =
                    heterogeneity::variance::estimate_variance(&make_ctx!(&noise_used), progress)?;
                noise_used = heterogeneity::variance::bound_noise_by_variance(&noise_used, &e, n);
            }
            let e = heterogeneity::variance::estimate_variance(&make_ctx!(&noise_used), progress)?;
            let mut ck = Checkpoint::new();
            ck.put("noise_used", Array::F64(noise_used.clone()))
                .put("variance", Array::F32(e.variance.clone()))
                .put("fsc", Array::F64(e.fsc.clone()));
            ckpts.save(&tag("variance"), &ck)?;
            (noise_used, e.variance, e.fsc)
        }
    };
    let ctx = heterogeneity::Context {
        ds,
        backend,
        mean: &mean.combined.spectrum,
        noise: &noise_used,
        volume_mask: &volume_mask,
        dilated_mask: &masks.dilated,
        batch_size: batch,
    };
    ctx.validate()?;

    // Covariance columns and principal components: one checkpoint. The columns are the
    // largest object of the run (300·N³ complex values: 5 GB at N = 128) and only the PCA
    // reads them, so they are stored only when --keep-intermediate asks for them.
    let cov = &opts.covariance;
    let n3 = n * n * n;
    let per_shell = n / 2 - 1;
    let stored = ckpts.load(&tag("pca"));
    let (freqs, column_fscs, columns, pcs) = match stored {
        Some(ck) => {
            resumed.push(tag("columns"));
            resumed.push(tag("pca"));
            let f = ck.i64("freqs")?;
            let freqs: Vec<[i32; 3]> = f
                .chunks_exact(3)
                .map(|c| [c[0] as i32, c[1] as i32, c[2] as i32])
                .collect();
            let fscs = ck
                .f64("fscs")?
                .chunks_exact(per_shell)
                .map(|c| c.to_vec())
                .collect();
            let columns = if opts.keep_intermediate {
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
            (freqs, fscs, columns, pcs)
        }
        None => {
            timings.start(&tag("columns"), ds.len() as u64);
            let freqs = heterogeneity::columns::pick_columns(&mean.lhs, &variance, n, cov)?;
            let cols = heterogeneity::columns::estimate_columns(
                &ctx,
                &mean.prior,
                &freqs,
                cov,
                opts.memory_budget,
                progress,
            )?;
            timings.start(&tag("pca"), ds.len() as u64);
            // The SVD forms its basis in the columns' storage; a copy only when asked for.
            let columns = opts.keep_intermediate.then(|| cols.columns.clone());
            let basis = heterogeneity::pca::randomized_svd(
                &cols.freqs,
                cols.columns,
                n,
                cov.sketch_size,
                cov.n_pcs,
                cov.seed,
            )?;
            let mut pcs = heterogeneity::pca::projected_covariance(&ctx, basis.vectors, progress)?;
            if opts.correct_contrast && pass == 0 {
                pcs =
                    heterogeneity::pca::knock_out_mean(pcs, &mean.combined.real, &volume_mask, n)?;
            }
            // Later stages use at most max(max zdim, 50) components.
            let keep = pcs
                .vectors
                .len()
                .min(opts.zdims.iter().copied().max().unwrap_or(0).max(50));
            pcs.truncate(keep);
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
            ckpts.save(&tag("pca"), &ck)?;
            (
                cols.freqs,
                cols.fscs,
                columns,
                Pcs {
                    vectors: pcs.vectors,
                    values: pcs.values,
                },
            )
        }
    };
    tracing::info!(
        "pass {pass}: {} principal components; top eigenvalues {:?}",
        pcs.values.len(),
        &pcs.values[..pcs.values.len().min(5)]
    );

    // Embeddings.
    timings.start(&tag("embedding"), ds.len() as u64);
    let embeddings = match ckpts.load(&tag("embedding")) {
        Some(ck) => {
            resumed.push(tag("embedding"));
            opts.zdims
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
                .collect::<Result<Vec<_>>>()?
        }
        None => {
            let e = heterogeneity::embedding::embed(
                &ctx,
                &pcs.vectors,
                &pcs.values,
                &opts.zdims,
                opts.correct_contrast,
                opts.ignore_zero_frequency,
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
            ckpts.save(&tag("embedding"), &ck)?;
            zipped
        }
    };
    Ok(PassResult {
        mean,
        masks,
        focus,
        noise,
        noise_used,
        het: Some(Heterogeneity {
            variance,
            variance_fsc,
            freqs,
            column_fscs,
            columns,
            pcs,
            embeddings,
        }),
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
