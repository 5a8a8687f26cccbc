//! On-disk layout of generated volumes (the seed README's `vol****/` folders):
//!
//! ```text
//! out/latent_coords.txt                    the targets, one per line
//! out/all_volumes/vol0000.mrc              locally filtered (and sharpened) volume
//! out/all_volumes/locres0000.mrc           its local-resolution map (Å)
//! out/vol0000/unfil.mrc  half1_unfil.mrc  half2_unfil.mrc
//!            locres.mrc (local resolution, Å)  locres_filtered.mrc  locres_filtered_nob.mrc
//!            volume_sampling.mrc (cross-validation point per voxel, −1 outside)
//!            params.pkl  split_choice.pkl  heterogeneity_distances.txt  latent_coords.txt
//! ```
//!
//! `params.pkl` (a dict, §14.3): `heterogeneity_bins`, `n_images_per_bin`, `fscs`,
//! `locres_sampling`, `locres_maskrad` (Å, the cross-validation grid step and ball radius),
//! `voxel_size`, `volume_shape`, `ml_choice` (points × shells), `sampling_points` (points × 3,
//! centered voxel coordinates x, y, z), `filter_sampling` (Å), `latent_point`, `n_bins`.
//! `split_choice.pkl`: `{"split_choice": ml_choice, "ml_errors": n_bins × points × shells}`.
//! `heterogeneity_distances.txt`: one line per particle of the original file (`nan` for
//! particles not used), so that indices from it are original-file indices.

use std::fmt::Write as _;
use std::path::Path;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::io::pickle::{self, NdArray, PyValue};
use crate::io::{atomic, mrc};

use super::GeneratedVolume;

/// `vol0000`-style folder name.
pub fn volume_stem(index: usize) -> String {
    format!("vol{index:04}")
}

fn write_mrc(path: &Path, data: &[f32], n: usize, vs: f64) -> Result<()> {
    mrc::write_volume(
        path,
        &mrc::Volume {
            data: data.to_vec(),
            shape: [n, n, n],
            voxel_size: vs as f32,
            origin: [0.0; 3],
        },
    )
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Write the targets, one per line (`np.loadtxt`-readable).
pub fn write_latent_points(path: &Path, points: &[Vec<f32>]) -> Result<()> {
    let mut s = String::new();
    for p in points {
        let row: Vec<String> = p.iter().map(|v| format!("{v:.8e}")).collect();
        let _ = writeln!(s, "{}", row.join(" "));
    }
    atomic::write_bytes(path, s.as_bytes())
}

/// Write volume `index` into `outdir` (its `vol{index}/` folder and `all_volumes/`).
pub fn write_generated(
    outdir: &Path,
    index: usize,
    vol: &GeneratedVolume,
    ds: &Dataset,
    maskrad_fraction: f64,
) -> Result<()> {
    let stem = volume_stem(index);
    let dir = outdir.join(&stem);
    let all = outdir.join("all_volumes");
    create_dir(&dir)?;
    create_dir(&all)?;
    let (n, vs) = (vol.n, vol.voxel_size);
    write_mrc(&dir.join("unfil.mrc"), &vol.unfil, n, vs)?;
    write_mrc(&dir.join("half1_unfil.mrc"), &vol.halves[0], n, vs)?;
    write_mrc(&dir.join("half2_unfil.mrc"), &vol.halves[1], n, vs)?;
    write_mrc(&dir.join("locres.mrc"), &vol.local_resolution, n, vs)?;
    write_mrc(&dir.join("locres_filtered.mrc"), &vol.filtered, n, vs)?;
    write_mrc(
        &dir.join("locres_filtered_nob.mrc"),
        &vol.filtered_nob,
        n,
        vs,
    )?;
    write_mrc(&dir.join("volume_sampling.mrc"), &vol.sampling_map, n, vs)?;
    write_mrc(&all.join(format!("{stem}.mrc")), &vol.filtered, n, vs)?;
    write_mrc(
        &all.join(format!("locres{index:04}.mrc")),
        &vol.local_resolution,
        n,
        vs,
    )?;
    write_latent_points(
        &dir.join("latent_coords.txt"),
        std::slice::from_ref(&vol.target),
    )?;

    // Distances in original-file indexing.
    let mut full = vec![f64::NAN; ds.total_in_file()];
    for (p, &orig) in ds.original_indices().iter().enumerate() {
        if let Some(slot) = full.get_mut(orig) {
            *slot = vol.distances[p];
        }
    }
    let mut s = String::with_capacity(full.len() * 24);
    for d in &full {
        if d.is_nan() {
            s.push_str("nan\n");
        } else {
            let _ = writeln!(s, "{d:.17e}");
        }
    }
    atomic::write_bytes(dir.join("heterogeneity_distances.txt"), s.as_bytes())?;

    let g = &vol.grid;
    let (np, ns) = (g.points.len(), g.n_shells);
    let choice: Vec<i64> = vol.choice.iter().map(|&c| c as i64).collect();
    let choice_arr = || NdArray::from_i64(vec![np, ns], choice.clone());
    let key = |k: &str| PyValue::Str(k.to_string());
    let step_a = n as f64 * vs / maskrad_fraction;
    let points: Vec<i64> = g.points.iter().flatten().copied().collect();
    let params = PyValue::Dict(vec![
        (
            key("heterogeneity_bins"),
            PyValue::Array(NdArray::from_f64(vec![vol.bins.len()], vol.bins.clone())?),
        ),
        (
            key("n_images_per_bin"),
            PyValue::Array(NdArray::from_i64(
                vec![vol.n_images_per_bin.len()],
                vol.n_images_per_bin.iter().map(|&c| c as i64).collect(),
            )?),
        ),
        (
            key("fscs"),
            PyValue::Array(NdArray::from_f64(vec![vol.fsc.len()], vol.fsc.clone())?),
        ),
        (key("locres_sampling"), PyValue::Float(step_a)),
        (key("locres_maskrad"), PyValue::Float(step_a)),
        (key("filter_sampling"), PyValue::Float(vol.filter_sampling)),
        (key("voxel_size"), PyValue::Float(vs)),
        (
            key("volume_shape"),
            PyValue::Tuple(vec![PyValue::Int(n as i64); 3]),
        ),
        (key("ml_choice"), PyValue::Array(choice_arr()?)),
        (
            key("sampling_points"),
            PyValue::Array(NdArray::from_i64(vec![np, 3], points)?),
        ),
        (
            key("latent_point"),
            PyValue::Array(NdArray::from_f32(
                vec![vol.target.len()],
                vol.target.clone(),
            )?),
        ),
        (key("n_bins"), PyValue::Int(vol.bins.len() as i64)),
    ]);
    pickle::dump(dir.join("params.pkl"), &params)?;
    let split = PyValue::Dict(vec![
        (key("split_choice"), PyValue::Array(choice_arr()?)),
        (
            key("ml_errors"),
            PyValue::Array(NdArray::from_f32(
                vec![vol.bins.len(), np, ns],
                vol.errors.clone(),
            )?),
        ),
    ]);
    pickle::dump(dir.join("split_choice.pkl"), &split)
}

/// What one generated volume looked like, for logs and summaries.
#[derive(Clone, Debug)]
pub struct VolumeSummary {
    pub index: usize,
    /// Images within the smallest bin and within the largest.
    pub images_nearest: u64,
    pub images_used: u64,
    /// Median local resolution inside the covered region, Å.
    pub median_local_resolution: f64,
    pub seconds: f64,
}

/// Generate a volume at each target and write them all into `outdir` (module docs).
#[allow(clippy::too_many_arguments)]
pub fn generate_and_write(
    outdir: &Path,
    ds: &Dataset,
    backend: &dyn crate::backend::Backend,
    noise: &[f64],
    latent: super::Latent<'_>,
    targets: &[Vec<f32>],
    opts: &super::KernelOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<Vec<VolumeSummary>> {
    create_dir(outdir)?;
    if let Some(t) = targets.iter().find(|t| t.len() != latent.zdim) {
        return Err(Error::invalid(format!(
            "a latent point has {} coordinates but the embedding has dimension {}",
            t.len(),
            latent.zdim
        )));
    }
    write_latent_points(&outdir.join("latent_coords.txt"), targets)?;
    let mut out = Vec::with_capacity(targets.len());
    for (k, t) in targets.iter().enumerate() {
        let start = std::time::Instant::now();
        let vol = super::generate_volume(ds, backend, noise, latent, t, opts, progress)?;
        write_generated(outdir, k, &vol, ds, opts.maskrad_fraction)?;
        let mut res: Vec<f64> = vol
            .local_resolution
            .iter()
            .filter(|&&r| r > 0.0)
            .map(|&r| r as f64)
            .collect();
        res.sort_by(f64::total_cmp);
        let summary = VolumeSummary {
            index: k,
            images_nearest: vol.n_images_per_bin.first().copied().unwrap_or(0),
            images_used: vol.n_images_per_bin.last().copied().unwrap_or(0),
            median_local_resolution: res.get(res.len() / 2).copied().unwrap_or(f64::NAN),
            seconds: start.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "{}: {} images in the nearest bin, {} within the widest; median local resolution {:.1} Å; {:.1} s",
            volume_stem(k),
            summary.images_nearest,
            summary.images_used,
            summary.median_local_resolution,
            summary.seconds
        );
        out.push(summary);
    }
    Ok(out)
}

/// Parse latent points from text (`np.loadtxt`): one point per line; with `zdim1`, every
/// value is a 1-D point (so that one line of values is several points).
pub fn parse_latent_points(text: &str, zdim1: bool, path: &Path) -> Result<Vec<Vec<f32>>> {
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let vals: std::result::Result<Vec<f32>, _> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<f32>())
            .collect();
        let vals = vals
            .map_err(|e| Error::format(path, format!("line {}: {e} (expected numbers)", ln + 1)))?;
        if let Some(v) = vals.iter().find(|v| !v.is_finite()) {
            return Err(Error::format(path, format!("line {}: value {v}", ln + 1)));
        }
        if zdim1 {
            rows.extend(vals.into_iter().map(|v| vec![v]));
        } else {
            if let Some(first) = rows.first() {
                if first.len() != vals.len() {
                    return Err(Error::format(
                        path,
                        format!(
                            "line {} has {} values, the first point has {}",
                            ln + 1,
                            vals.len(),
                            first.len()
                        ),
                    ));
                }
            }
            rows.push(vals);
        }
    }
    if rows.is_empty() {
        return Err(Error::format(path, "no latent points in the file"));
    }
    Ok(rows)
}

/// Read latent points from a .txt file (see [`parse_latent_points`]).
pub fn read_latent_points(path: &Path, zdim1: bool) -> Result<Vec<Vec<f32>>> {
    let bytes = atomic::read_bytes(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::format(path, "not a text file of latent points"))?;
    parse_latent_points(&text, zdim1, path)
}

/// An external embedding (`generate_from_embedding --embedding`): a cryoDRGN `z.pkl`
/// (pickled numpy array), a `.npy`, or a text file; returns `(values, rows, zdim)`.
pub fn read_embedding(path: &Path, zdim1: bool) -> Result<(Vec<f32>, usize, usize)> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let (values, shape): (Vec<f32>, Vec<usize>) = match ext.as_str() {
        "pkl" | "pickle" => {
            let v = pickle::load(path)?;
            let a = v.as_array().ok_or_else(|| {
                Error::format(
                    path,
                    format!(
                        "expected a pickled numpy array of latent coordinates (cryoDRGN z.pkl), found a {}",
                        v.type_name()
                    ),
                )
            })?;
            (a.to_f32_vec(), a.shape().to_vec())
        }
        "npy" => {
            let a = crate::io::npy::NpyArray::read(path)?;
            let v: Vec<f32> = a.to_f64()?.into_iter().map(|x| x as f32).collect();
            (v, a.shape().to_vec())
        }
        _ => {
            let rows = read_latent_points(path, zdim1)?;
            let z = rows[0].len();
            let n = rows.len();
            (rows.concat(), vec![n, z])
        }
    };
    let (rows, zdim) = match shape.as_slice() {
        [n] => (*n, 1),
        [n, z] => (*n, *z),
        _ => {
            return Err(Error::format(
                path,
                format!("expected an (images × zdim) array, got shape {shape:?}"),
            ))
        }
    };
    if rows == 0 || zdim == 0 {
        return Err(Error::format(path, "the embedding is empty"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            path,
            format!("row {} has a non-finite latent coordinate", i / zdim),
        ));
    }
    Ok((values, rows, zdim))
}
