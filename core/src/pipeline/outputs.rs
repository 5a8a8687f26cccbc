//! The pipeline's files, in the Python tool's layout (algorithms.md §14):
//!
//! ```text
//! command.txt  run.log (by the CLI)  timings.json  checkpoints/
//! model/params.pkl  halfsets.pkl  particles_halfsets.pkl  metadata.json
//! model/embeddings.pkl  model/zdim_{z}/{latent_coords, latent_precision, contrasts}[_noreg].npy
//! model/eigenvalues.npy  model/eigenvectors_fourier.npy  [model/covariance_cols.pkl + .npy]
//! output/volumes/mean.mrc  mean_half{1,2}_unfil.mrc  mean_filt.mrc  mask.mrc
//!                dilated_mask.mrc  [focus_mask.mrc]  eigen_pos####.mrc  eigen_neg####.mrc
//!                variance{4,10,20}.mrc
//! output/plots/mean_fsc.png  eigenvalues.png  mean_variance_eigenvolume_plots.png
//!              [contrast_histogram.png]
//! ```
//!
//! Embedding arrays use original-file indexing: one row per image of the particle file, NaN
//! rows for images left out by `--ind`/`--n-images` (as RECOVAR stores them).

use std::path::Path;

use num_complex::Complex;

use super::{Pcs, PipelineOptions, ZdimEmbedding};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::fourier::{fsc_resolutions, Fft3};
use crate::io::npy::{self, NpyData};
use crate::io::{mrc, pickle};
use crate::reconstruct::mask::Masks;
use crate::reconstruct::mean::{MeanEstimate, MeanFn};
use crate::reconstruct::noise::{InitialNoise, NoiseEstimate};

/// The heterogeneity results to write.
pub(super) struct HetOutputs<'a> {
    pub variance: &'a [f32],
    pub variance_fsc: &'a [f64],
    pub freqs: &'a [[i32; 3]],
    pub column_fscs: &'a [Vec<f64>],
    pub columns: Option<&'a [Vec<Complex<f32>>]>,
    pub pcs: &'a Pcs,
    pub embeddings: &'a [ZdimEmbedding],
}

/// How many eigenvolumes are written as MRC files.
const SAVED_EIGENVOLUMES: usize = 50;

/// `model/halfsets.pkl` and `model/particles_halfsets.pkl`: two arrays of particle-file
/// indices (as the Python tool writes them).
pub(super) fn write_halfsets(model: &Path, ds: &Dataset) -> Result<()> {
    use pickle::{NdArray, PyValue};
    std::fs::create_dir_all(model).map_err(|e| Error::io(model, e))?;
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

fn write_volume(dir: &Path, name: &str, data: &[f32], n: usize, vs: f64) -> Result<()> {
    mrc::write_volume(
        dir.join(name),
        &mrc::Volume {
            data: data.to_vec(),
            shape: [n, n, n],
            voxel_size: vs as f32,
            origin: [0.0; 3],
        },
    )
}

/// Real-space volume of a Fourier eigenvector.
pub(super) fn real_space(u: &[Complex<f32>], fft: &Fft3<f32>) -> Vec<f32> {
    fft.inverse_real_vec(u)
}

/// Central slices (z, y, x) of a volume, for the overview figure.
fn central_slices(v: &[f32], n: usize) -> [Vec<f32>; 3] {
    let h = n / 2;
    let z = v[h * n * n..(h + 1) * n * n].to_vec();
    let mut y = vec![0.0f32; n * n];
    let mut x = vec![0.0f32; n * n];
    for a in 0..n {
        for b in 0..n {
            y[a * n + b] = v[(a * n + h) * n + b];
            x[a * n + b] = v[(a * n + b) * n + h];
        }
    }
    [z, y, x]
}

#[allow(clippy::too_many_arguments)]
pub(super) fn write_all(
    opts: &PipelineOptions,
    ds: &Dataset,
    init: &InitialNoise,
    mean: &MeanEstimate,
    mean_filt: &[f32],
    masks: &Masks,
    focus: Option<&[f32]>,
    noise: &NoiseEstimate,
    noise_used: &[f64],
    het: Option<HetOutputs<'_>>,
) -> Result<()> {
    let out = &opts.outdir;
    let volumes = out.join("output/volumes");
    let plots = out.join("output/plots");
    let model = out.join("model");
    for dir in [&volumes, &plots, &model] {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let n = ds.box_size();
    let vs = ds.voxel_size();
    write_volume(&volumes, "mean.mrc", &mean.combined.real, n, vs)?;
    write_volume(
        &volumes,
        "mean_half1_unfil.mrc",
        &mean.halves_unreg[0].real,
        n,
        vs,
    )?;
    write_volume(
        &volumes,
        "mean_half2_unfil.mrc",
        &mean.halves_unreg[1].real,
        n,
        vs,
    )?;
    write_volume(&volumes, "mean_filt.mrc", mean_filt, n, vs)?;
    write_volume(&volumes, "mask.mrc", &masks.mask, n, vs)?;
    write_volume(&volumes, "dilated_mask.mrc", &masks.dilated, n, vs)?;
    if let Some(f) = focus {
        write_volume(&volumes, "focus_mask.mrc", f, n, vs)?;
    }
    crate::plot::fsc_plot(
        &plots.join("mean_fsc.png"),
        &[("half maps".to_string(), mean.fsc.clone())],
        n,
        vs,
    )?;

    let fft = Fft3::<f32>::new(n);
    if let Some(h) = &het {
        // Eigenvolumes (real space, unit norm) and their negatives.
        let k_save = h.pcs.vectors.len().min(SAVED_EIGENVOLUMES);
        let mut reals = Vec::with_capacity(k_save);
        for k in 0..k_save {
            let r = real_space(&h.pcs.vectors[k], &fft);
            write_volume(&volumes, &format!("eigen_pos{k:04}.mrc"), &r, n, vs)?;
            let neg: Vec<f32> = r.iter().map(|v| -v).collect();
            write_volume(&volumes, &format!("eigen_neg{k:04}.mrc"), &neg, n, vs)?;
            reals.push(r);
        }
        let mut variance_maps = Vec::new();
        for k in [4usize, 10, 20] {
            if k <= h.pcs.vectors.len() {
                let mut var = vec![0.0f64; n * n * n];
                for (j, r) in reals.iter().take(k).enumerate() {
                    let lam = h.pcs.values[j];
                    for (a, b) in var.iter_mut().zip(r) {
                        *a += lam * (*b as f64) * (*b as f64);
                    }
                }
                let var: Vec<f32> = var.iter().map(|&v| v as f32).collect();
                write_volume(&volumes, &format!("variance{k}.mrc"), &var, n, vs)?;
                variance_maps.push((k, var));
            }
        }
        // The Fourier eigenvectors and eigenvalues, explicitly.
        let k_keep = h.pcs.vectors.len();
        npy::write(
            model.join("eigenvalues.npy"),
            &[h.pcs.values.len()],
            NpyData::F64(&h.pcs.values),
        )?;
        let flat: Vec<Complex<f32>> = h.pcs.vectors.iter().flatten().copied().collect();
        npy::write(
            model.join("eigenvectors_fourier.npy"),
            &[k_keep, n, n, n],
            NpyData::C64(&flat),
        )?;
        // Plots.
        crate::plot::bar_plot(
            &plots.join("eigenvalues.png"),
            "Eigenvalues",
            "component",
            "eigenvalue",
            &h.pcs.values,
            true,
        )?;
        let mut tiles: Vec<(String, Vec<f32>, usize, usize)> = Vec::new();
        for (label, v) in std::iter::once(("mean".to_string(), &mean.combined.real))
            .chain(
                variance_maps
                    .iter()
                    .rev()
                    .take(1)
                    .map(|(k, v)| (format!("variance{k}"), v)),
            )
            .chain(
                reals
                    .iter()
                    .take(4)
                    .enumerate()
                    .map(|(k, r)| (format!("eigenvolume {k}"), r)),
            )
        {
            for (axis, s) in ["z", "y", "x"].iter().zip(central_slices(v, n)) {
                tiles.push((format!("{label} ({axis})"), s, n, n));
            }
        }
        crate::plot::image_grid(
            &plots.join("mean_variance_eigenvolume_plots.png"),
            "Mean, variance and eigenvolumes: central slices",
            &tiles,
            3,
        )?;
        if opts.correct_contrast {
            if let Some(e) = h
                .embeddings
                .iter()
                .find(|e| e.zdim == 10)
                .or(h.embeddings.last())
            {
                let c: Vec<f64> = e.contrasts.iter().map(|&v| v as f64).collect();
                crate::plot::histogram(
                    &plots.join("contrast_histogram.png"),
                    &format!("Contrasts (zdim {})", e.zdim),
                    "contrast",
                    &c,
                    // Contrasts come from a 50-point grid search; finer bins than its
                    // spacing (~0.04 after the do-over) draw a comb instead of a histogram.
                    20,
                )?;
            }
        }
        write_embeddings(&model, ds, h.embeddings)?;
        if let Some(cols) = h.columns {
            let flat: Vec<Complex<f32>> = cols.iter().flatten().copied().collect();
            npy::write(
                model.join("covariance_cols.npy"),
                &[cols.len(), n, n, n],
                NpyData::C64(&flat),
            )?;
            use pickle::{NdArray, PyValue};
            let freqs: Vec<i64> = h
                .freqs
                .iter()
                .flat_map(|f| f.iter().map(|&v| v as i64))
                .collect();
            let fscs: Vec<f64> = h.column_fscs.iter().flatten().copied().collect();
            let per = h.column_fscs.first().map(|f| f.len()).unwrap_or(0);
            let value = PyValue::Dict(vec![
                (
                    PyValue::Str("picked_frequencies".into()),
                    PyValue::Array(NdArray::from_i64(vec![h.freqs.len(), 3], freqs)?),
                ),
                (
                    PyValue::Str("column_fscs".into()),
                    PyValue::Array(NdArray::from_f64(vec![h.column_fscs.len(), per], fscs)?),
                ),
                (
                    PyValue::Str("columns_file".into()),
                    PyValue::Str("covariance_cols.npy".into()),
                ),
            ]);
            pickle::dump(model.join("covariance_cols.pkl"), &value)?;
        }
    }
    write_params(
        &model.join("params.pkl"),
        ds,
        init,
        noise,
        noise_used,
        mean,
        opts,
        het.as_ref(),
    )?;
    write_metadata(&model.join("metadata.json"), ds, opts, het.is_some())
}

/// `model/embeddings.pkl` and `model/zdim_{z}/*.npy`, in original-file indexing.
fn write_embeddings(model: &Path, ds: &Dataset, embeddings: &[ZdimEmbedding]) -> Result<()> {
    use pickle::{NdArray, PyValue};
    let total = ds.total_in_file();
    let orig = ds.original_indices();
    let spread = |v: &[f32], width: usize| -> Vec<f32> {
        let mut out = vec![f32::NAN; total * width];
        for (p, &o) in orig.iter().enumerate() {
            out[o * width..(o + 1) * width].copy_from_slice(&v[p * width..(p + 1) * width]);
        }
        out
    };
    let mut dicts: Vec<Vec<(PyValue, PyValue)>> = vec![Vec::new(); 6];
    for e in embeddings {
        let z = e.zdim;
        let dir = model.join(format!("zdim_{z}"));
        std::fs::create_dir_all(&dir).map_err(|err| Error::io(&dir, err))?;
        let arrays: [(&str, Vec<f32>, Vec<usize>); 6] = [
            ("latent_coords", spread(&e.zs, z), vec![total, z]),
            (
                "latent_precision",
                spread(&e.precisions, z * z),
                vec![total, z, z],
            ),
            ("contrasts", spread(&e.contrasts, 1), vec![total]),
            (
                "latent_coords_noreg",
                spread(&e.zs_noreg, z),
                vec![total, z],
            ),
            (
                "latent_precision_noreg",
                spread(&e.precisions_noreg, z * z),
                vec![total, z, z],
            ),
            (
                "contrasts_noreg",
                spread(&e.contrasts_noreg, 1),
                vec![total],
            ),
        ];
        for (k, (name, data, shape)) in arrays.into_iter().enumerate() {
            npy::write(dir.join(format!("{name}.npy")), &shape, NpyData::F32(&data))?;
            dicts[k].push((
                PyValue::Int(z as i64),
                PyValue::Array(NdArray::from_f32(shape, data)?),
            ));
        }
    }
    // RECOVAR's legacy monolithic file: "cov_zs" holds the precisions (despite the name).
    let names = [
        "zs",
        "cov_zs",
        "contrasts",
        "zs_noreg",
        "cov_zs_noreg",
        "contrasts_noreg",
    ];
    let value = PyValue::Dict(
        names
            .iter()
            .zip(dicts)
            .map(|(k, d)| (PyValue::Str(k.to_string()), PyValue::Dict(d)))
            .collect(),
    );
    pickle::dump(model.join("embeddings.pkl"), &value)
}

/// An optional path as a Python str (absolute, so the run can be reopened from anywhere)
/// or None.
fn opt_path(p: Option<&Path>) -> pickle::PyValue {
    match p {
        Some(p) => pickle::PyValue::Str(absolute(p).display().to_string()),
        None => pickle::PyValue::None,
    }
}

fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[allow(clippy::too_many_arguments)]
fn write_params(
    path: &Path,
    ds: &Dataset,
    init: &InitialNoise,
    noise: &NoiseEstimate,
    noise_used: &[f64],
    mean: &MeanEstimate,
    opts: &PipelineOptions,
    het: Option<&HetOutputs<'_>>,
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
    let res = fsc_resolutions(&mean.fsc, ds.box_size(), ds.voxel_size());
    let input_args = PyValue::Dict(vec![
        (
            key("particles"),
            PyValue::Str(absolute(ds.particles_path()).display().to_string()),
        ),
        (
            key("outdir"),
            PyValue::Str(opts.outdir.display().to_string()),
        ),
        (key("mask"), PyValue::Str(opts.mask.to_string())),
        // Everything needed to reopen the same particles (compute_state, analyze).
        (key("poses"), opt_path(opts.dataset.poses.as_deref())),
        (key("ctf"), opt_path(opts.dataset.ctf.as_deref())),
        (key("datadir"), opt_path(opts.dataset.datadir.as_deref())),
        (key("ind"), opt_path(opts.dataset.ind.as_deref())),
        (
            key("n_images"),
            opts.dataset
                .n_images
                .map(|v| PyValue::Int(v as i64))
                .unwrap_or(PyValue::None),
        ),
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
        (
            key("zdim"),
            PyValue::List(opts.zdims.iter().map(|&z| PyValue::Int(z as i64)).collect()),
        ),
        (
            key("correct_contrast"),
            PyValue::Bool(opts.correct_contrast),
        ),
        (key("only_mean"), PyValue::Bool(opts.only_mean)),
        (key("command"), PyValue::Str(opts.command_line.clone())),
    ]);
    let mut items = vec![
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
        (key("noise_var_used"), arr(noise_used)?),
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
        (key("mean_resolution_0.143"), PyValue::Float(res.at_0_143)),
        (key("data_sign"), PyValue::Float(ds.data_sign() as f64)),
        (key("uninvert_data_flipped"), PyValue::Bool(mean.flipped)),
        (key("input_args"), input_args),
    ];
    if let Some(h) = het {
        items.push((key("s"), arr(&h.pcs.values)?));
        items.push((key("variance_fsc"), arr(h.variance_fsc)?));
        let freqs: Vec<i64> = h
            .freqs
            .iter()
            .flat_map(|f| f.iter().map(|&v| v as i64))
            .collect();
        items.push((
            key("picked_frequencies"),
            PyValue::Array(NdArray::from_i64(vec![h.freqs.len(), 3], freqs)?),
        ));
        let per = h.column_fscs.first().map(|f| f.len()).unwrap_or(0);
        let fscs: Vec<f64> = h.column_fscs.iter().flatten().copied().collect();
        items.push((
            key("column_fscs"),
            PyValue::Array(NdArray::from_f64(vec![h.column_fscs.len(), per], fscs)?),
        ));
        let var: Vec<f64> = h.variance.iter().map(|&v| v as f64).collect();
        items.push((
            key("variance_est"),
            PyValue::Array(NdArray::from_f64(vec![var.len()], var)?),
        ));
        items.push((
            key("covariance_options"),
            PyValue::Str(format!("{:?}", opts.covariance)),
        ));
    }
    pickle::dump(path, &PyValue::Dict(items))
}

fn write_metadata(path: &Path, ds: &Dataset, opts: &PipelineOptions, full: bool) -> Result<()> {
    let n = ds.box_size();
    let zdims = if full {
        opts.zdims
            .iter()
            .map(|z| z.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let text = format!(
        "{{\n  \"recovar_version\": \"recovar-rs {}\",\n  \"params_version\": \"0.7\",\n  \"volume_shape\": [{n}, {n}, {n}],\n  \"voxel_size\": {},\n  \"zdims_computed\": [{zdims}],\n  \"files\": {{\n    \"params\": \"model/params.pkl\",\n    \"embeddings\": \"model/embeddings.pkl\",\n    \"halfsets\": \"model/halfsets.pkl\",\n    \"mean_volume\": \"output/volumes/mean.mrc\",\n    \"mask\": \"output/volumes/mask.mrc\",\n    \"eigenvalues\": \"model/eigenvalues.npy\",\n    \"eigenvectors_fourier\": \"model/eigenvectors_fourier.npy\"\n  }}\n}}\n",
        crate::VERSION,
        ds.voxel_size()
    );
    crate::io::atomic::write_bytes(path, text.as_bytes())
}
