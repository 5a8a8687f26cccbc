//! The RECOVAR pipeline: its stages, in order, and their files on disk (layout of the
//! Python tool's `pipeline`, algorithms.md §0 and §14).
//!
//! Stages so far: dataset → initial noise (§2.1) → mean with halfsets and FSC prior (§3)
//! and the sign check (§1.7) → masks (§4) → noise model (§2.2–2.4) → locally filtered mean
//! (§7.5). Every pass over the images reports progress; every file is written atomically;
//! `timings.json` records wall time and peak memory per stage.
//!
//! Layout written under `outdir`:
//! ```text
//! command.txt  run.log (by the CLI)  timings.json
//! model/params.pkl  model/halfsets.pkl  model/particles_halfsets.pkl
//! output/volumes/mean.mrc  mean_half1_unfil.mrc  mean_half2_unfil.mrc  mean_filt.mrc
//!                mask.mrc  dilated_mask.mrc  [focus_mask.mrc]
//! output/plots/mean_fsc.png
//! ```

mod timing;

use std::path::{Path, PathBuf};

pub use timing::{StageTiming, Timings};

use crate::backend::Backend;
use crate::dataset::{Dataset, DatasetOptions};
use crate::error::{Error, Result};
use crate::fourier::{fsc_resolutions, FscResolutions};
use crate::io::{mrc, pickle};
use crate::progress::Progress;
use crate::reconstruct::locres::{local_resolution, LocresOptions};
use crate::reconstruct::mask::{focus_mask, make_masks, MaskOption, MaskSettings};
use crate::reconstruct::mean::{estimate_mean, MeanFn};
use crate::reconstruct::noise::{estimate_noise, initial_noise, NoiseModel};

/// Options of `recovar pipeline` (the flags of the Python tool that are implemented).
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
    /// Working memory for image batches, bytes (batch sizes only; never the results).
    pub memory_budget: u64,
    /// Seed of random choices (image subsampling for the initial noise).
    pub seed: u64,
    /// The command line, for command.txt.
    pub command_line: String,
}

/// What the mean stage found, for reporting.
#[derive(Clone, Debug)]
pub struct MeanSummary {
    /// Number of images used.
    pub n_images: usize,
    /// Box and pixel size.
    pub box_size: usize,
    pub voxel_size: f64,
    /// Half-map FSC resolutions (Å) at 0.5 and 0.143.
    pub resolution: FscResolutions,
    /// Half-map FSC per shell.
    pub fsc: Vec<f64>,
    /// True if the data sign was flipped by the automatic check.
    pub flipped: bool,
    /// Stage timings.
    pub timings: Vec<StageTiming>,
}

/// Working bytes per image of the mean and noise passes: the image, its spectrum, its CTF,
/// the projected mean and the projected mask, with room for per-thread temporaries.
fn bytes_per_image(d: usize) -> u64 {
    (d * d * 64) as u64
}

/// Run the pipeline stages that exist (currently: through the filtered mean and the noise
/// model) and write their outputs.
pub fn run_mean_stages(
    opts: &PipelineOptions,
    backend: &dyn Backend,
    progress: &dyn Progress,
) -> Result<MeanSummary> {
    let out = &opts.outdir;
    let volumes = out.join("output/volumes");
    let plots = out.join("output/plots");
    let model = out.join("model");
    for dir in [&volumes, &plots, &model] {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::io::atomic::write_bytes(
        out.join("command.txt"),
        format!("{}\n", opts.command_line).as_bytes(),
    )?;
    let mut timings = Timings::new();

    timings.start("dataset", 0);
    let mut dsopts = opts.dataset.clone();
    dsopts.require_poses = true;
    dsopts.require_ctf = true;
    let mut ds = Dataset::open(&dsopts)?;
    ds.check_images_readable()?;
    let d = ds.box_size();
    let n = d;
    let vs = ds.voxel_size();
    tracing::info!("dataset: {} images of {d}×{d} px at {vs:.4} Å", ds.len());
    let batch = ds
        .batch_size_for_budget(opts.memory_budget, bytes_per_image(d))
        .min(4096);
    tracing::info!(
        "image batches of {batch} (memory budget {:.1} GB)",
        opts.memory_budget as f64 / 1e9
    );
    write_halfsets(&model, &ds)?;

    timings.start("noise_initial", ds.halfsets()[0].len().min(10_000) as u64);
    let init = initial_noise(&ds, backend, 10_000, opts.seed, batch, progress)?;
    tracing::info!(
        "initial (white) noise estimate from {} images: {:.4e}",
        init.images_used,
        init.scalar
    );

    timings.start("mean", ds.len() as u64);
    let mean = estimate_mean(&mut ds, backend, init.scalar, opts.mean_fn, batch, progress)?;
    let resolution = fsc_resolutions(&mean.fsc, n, vs);
    tracing::info!(
        "half-map FSC: {:.2} Å at 0.5, {:.2} Å at 0.143",
        resolution.at_0_5,
        resolution.at_0_143
    );

    timings.start("masks", 0);
    let halfmaps = (&mean.halves_reg[0].real[..], &mean.halves_reg[1].real[..]);
    let masks = make_masks(&opts.mask, n, &opts.mask_settings, Some(halfmaps))?;
    let focus = match &opts.focus_mask {
        Some(p) => Some(focus_mask(p, n, &opts.mask_settings)?),
        None => None,
    };

    timings.start("noise", ds.len() as u64);
    let deconvolve = matches!(opts.mask, MaskOption::File(_));
    let noise = estimate_noise(
        &ds,
        backend,
        &mean.combined.spectrum,
        &masks.dilated,
        opts.noise_model,
        deconvolve,
        batch,
        progress,
    )?;

    timings.start("local_resolution", 0);
    // RECOVAR samples every 25 Å with 12.5 Å windows; at coarse pixel sizes that is a
    // window of one or two voxels, whose local FSC is pure noise, so the sampling is at
    // least 8 voxels (windows of radius ≥ 4).
    let locres_opts = LocresOptions {
        sampling_angstrom: 25.0f64.max(8.0 * vs),
        ..Default::default()
    };
    let locres = local_resolution(
        &mean.halves_unreg[0].real,
        &mean.halves_unreg[1].real,
        n,
        vs,
        &locres_opts,
        progress,
    )?;

    timings.start("write", 0);
    let write = |name: &str, data: &[f32]| -> Result<()> {
        mrc::write_volume(
            volumes.join(name),
            &mrc::Volume {
                data: data.to_vec(),
                shape: [n, n, n],
                voxel_size: vs as f32,
                origin: [0.0; 3],
            },
        )
    };
    write("mean.mrc", &mean.combined.real)?;
    write("mean_half1_unfil.mrc", &mean.halves_unreg[0].real)?;
    write("mean_half2_unfil.mrc", &mean.halves_unreg[1].real)?;
    write("mean_filt.mrc", &locres.filtered)?;
    write("mask.mrc", &masks.mask)?;
    write("dilated_mask.mrc", &masks.dilated)?;
    if let Some(f) = &focus {
        write("focus_mask.mrc", f)?;
    }
    crate::plot::fsc_plot(
        &plots.join("mean_fsc.png"),
        &[("half maps".to_string(), mean.fsc.clone())],
        n,
        vs,
    )?;
    write_params(&model.join("params.pkl"), &ds, &init, &noise, &mean, opts)?;
    timings.finish();
    timings.write_json(&out.join("timings.json"))?;
    Ok(MeanSummary {
        n_images: ds.len(),
        box_size: d,
        voxel_size: vs,
        resolution,
        fsc: mean.fsc.clone(),
        flipped: mean.flipped,
        timings: timings.stages().to_vec(),
    })
}

/// `model/halfsets.pkl` and `model/particles_halfsets.pkl`: two arrays of particle-file
/// indices (as the Python tool writes them).
fn write_halfsets(model: &Path, ds: &Dataset) -> Result<()> {
    use pickle::{NdArray, PyValue};
    let halves: Vec<PyValue> = ds
        .halfsets()
        .iter()
        .map(|h| {
            let idx: Vec<i64> = h.iter().map(|&p| ds.original_indices()[p] as i64).collect();
            NdArray::from_i64(vec![idx.len()], idx).map(PyValue::Array)
        })
        .collect::<Result<_>>()?;
    let value = PyValue::List(halves);
    pickle::dump(model.join("halfsets.pkl"), &value)?;
    pickle::dump(model.join("particles_halfsets.pkl"), &value)
}

fn write_params(
    path: &Path,
    ds: &Dataset,
    init: &crate::reconstruct::noise::InitialNoise,
    noise: &crate::reconstruct::noise::NoiseEstimate,
    mean: &crate::reconstruct::mean::MeanEstimate,
    opts: &PipelineOptions,
) -> Result<()> {
    use pickle::{NdArray, PyValue};
    let n = ds.box_size() as i64;
    let key = |k: &str| PyValue::Str(k.to_string());
    let arr = |v: &[f64]| -> Result<PyValue> {
        Ok(PyValue::Array(NdArray::from_f64(
            vec![v.len()],
            v.to_vec(),
        )?))
    };
    let input_args = PyValue::Dict(vec![
        (
            key("particles"),
            PyValue::Str(ds.particles_path().display().to_string()),
        ),
        (
            key("outdir"),
            PyValue::Str(opts.outdir.display().to_string()),
        ),
        (key("mask"), PyValue::Str(opts.mask.to_string())),
        (
            key("noise_model"),
            PyValue::Str(format!("{:?}", opts.noise_model).to_lowercase()),
        ),
        (
            key("mean_fn"),
            PyValue::Str(match opts.mean_fn {
                MeanFn::Triangular => "triangular".into(),
                MeanFn::TriangularReg => "triangular_reg".into(),
            }),
        ),
        (key("command"), PyValue::Str(opts.command_line.clone())),
    ]);
    let value = PyValue::Dict(vec![
        (
            key("version"),
            PyValue::Str(format!("recovar-rs {}", crate::VERSION)),
        ),
        (
            key("volume_shape"),
            PyValue::Tuple(vec![PyValue::Int(n), PyValue::Int(n), PyValue::Int(n)]),
        ),
        (key("voxel_size"), PyValue::Float(ds.voxel_size())),
        (key("n_images"), PyValue::Int(ds.len() as i64)),
        (key("noise_var_from_hf"), PyValue::Float(init.scalar)),
        (key("noise_var_used"), arr(&noise.used)?),
        (key("radial_noise_var_outside_mask"), arr(&noise.outside)?),
        (key("radial_ub_noise_var"), arr(&noise.upper_bound)?),
        (
            key("white_noise_var_outside_mask"),
            PyValue::Float(noise.white_outside),
        ),
        (key("image_PS"), arr(&noise.image_ps)?),
        (key("masked_image_PS"), arr(&noise.masked_image_ps)?),
        (key("mean_fsc"), arr(&mean.fsc)?),
        (key("mean_prior"), arr(&mean.prior)?),
        (key("data_sign"), PyValue::Float(ds.data_sign() as f64)),
        (key("uninvert_data_flipped"), PyValue::Bool(mean.flipped)),
        (key("input_args"), input_args),
    ]);
    pickle::dump(path, &value)
}
