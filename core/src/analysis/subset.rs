//! Image subsets (algorithms.md §11): which particles to send back to RELION or cryoSPARC.
//!
//! Two ways to pick them, as RECOVAR's `extract_image_subset_from_kmeans` and
//! `extract_image_subset`:
//!
//! - **From k-means labels** ([`kmeans_subset`]): the particles whose cluster is in a list
//!   (or, inverted, in none of them).
//! - **From a generated volume** ([`volume_subset`]): the particles that made one region of a
//!   kernel-regression volume. Each region of such a volume (a local-resolution sampling
//!   point) was estimated from the images closer to the target than a distance bound picked
//!   per sampling point and per frequency shell by cross-validation (§7.4). We take the
//!   shell at the local resolution there and return the images inside that shell's bound.
//!
//! # Indexing
//!
//! Every index here is into the **original particle file** (the `.star`/`.cs`/stack given to
//! `pipeline`, before `--ind`), like RECOVAR's saved arrays: label and distance arrays hold
//! NaN for particles the run did not use, and those are never selected.
//!
//! # The generated-volume folder ([`VolumeDir`])
//!
//! One folder per volume (`vol0000/`), written by the kernel-regression code:
//!
//! - `params.pkl`: a dict with `heterogeneity_bins` (distance bounds, one per bin),
//!   `n_images_per_bin`, `locres_sampling` and `locres_maskrad` (Å; a `None` maskrad means
//!   half the sampling, as upstream), `voxel_size` (Å), `volume_shape` `(n, n, n)`,
//!   `ml_choice` (`n_points × n_shells`: the bin chosen per sampling point and sub-box
//!   shell) and `sampling_points` (`n_points × 3`: centered voxel coordinates `(x, y, z)`,
//!   i.e. voxel index − n/2, in the order of the `ml_choice` rows).
//! - `locres.mrc`: the local-resolution map in Å (`local_resolution.mrc`, RECOVAR's name, is
//!   accepted when `locres.mrc` is absent).
//! - `heterogeneity_distances.txt`: one distance per line per particle of the original
//!   file, `nan` for particles not used.
//!
//! Voxel coordinates are `(x, y, z)` with x fastest in the MRC data, the order RECOVAR's
//! `load_mrc` (which transposes to `[x, y, z]`) indexes with.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::atomic::read_bytes;
use crate::io::mrc;
use crate::io::pickle::{self, PyValue};

/// The particles whose k-means label is in `keep` (or, with `inverse`, in none of `keep`),
/// as ascending indices into `labels`.
///
/// `labels` are the original-indexed labels of `kmeans_result.pkl`, NaN for particles not
/// used. As upstream, a label is truncated to an integer and NaN counts as label −1, so
/// `keep = [-1]` selects exactly the unused particles; with `inverse`, unused particles are
/// never selected.
pub fn kmeans_subset(labels: &[f64], keep: &[i64], inverse: bool) -> Vec<usize> {
    labels
        .iter()
        .enumerate()
        .filter(|&(_, &l)| {
            // numpy's astype(int) truncates toward zero; Rust's cast also saturates ±inf.
            let label = if l.is_nan() { -1 } else { l.trunc() as i64 };
            let listed = keep.contains(&label);
            if inverse {
                !listed && !l.is_nan()
            } else {
                listed
            }
        })
        .map(|(i, _)| i)
        .collect()
}

/// The k-means labels of a pickle: a dict with a `"labels"` entry (`kmeans_result.pkl`
/// written by `analyze`; RECOVAR's README calls it `centers.pkl`), or a bare array or list
/// of labels. Float and integer arrays are accepted; labels of particles not used are NaN.
pub fn read_kmeans_labels(path: &Path) -> Result<Vec<f64>> {
    let value = pickle::load(path)?;
    let labels = match &value {
        PyValue::Dict(items) => value.get("labels").ok_or_else(|| {
            let keys: Vec<String> = items
                .iter()
                .map(|(k, _)| match k {
                    PyValue::Str(s) => format!("{s:?}"),
                    other => other.type_name().to_string(),
                })
                .collect();
            Error::format(
                path,
                format!(
                    "a dict without a \"labels\" entry (keys: {}); expected the kmeans_result.pkl \
                     written by analyze",
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                ),
            )
        })?,
        other => other,
    };
    labels_from(labels).map_err(|msg| Error::format(path, msg))
}

fn labels_from(v: &PyValue) -> std::result::Result<Vec<f64>, String> {
    match v {
        PyValue::Array(a) => {
            if a.ndim() != 1 {
                return Err(format!(
                    "the labels are an array of shape {}, expected one label per particle (1-D)",
                    pickle::fmt_shape(a.shape())
                ));
            }
            if a.dtype() == pickle::Dtype::Bool {
                return Err("the labels are a boolean array, expected numbers".into());
            }
            Ok(a.to_f64_vec())
        }
        PyValue::List(items) | PyValue::Tuple(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                PyValue::None => Ok(f64::NAN),
                PyValue::Bool(_) => Err(format!("label {i} is a bool, expected a number")),
                x => x
                    .as_f64()
                    .ok_or_else(|| format!("label {i} is a {}, expected a number", x.type_name())),
            })
            .collect(),
        other => Err(format!(
            "the labels are a {}, expected a numpy array of k-means labels",
            other.type_name()
        )),
    }
}

/// What to extract images for, in a generated volume.
#[derive(Debug, Clone, PartialEq)]
pub enum SubsetTarget {
    /// A sampling point by its index (a row of `ml_choice`).
    SubvolIdx(usize),
    /// A voxel position `(x, y, z)` in voxels (0-based indices into the map); the nearest
    /// sampling point is used.
    Coordinate([f64; 3]),
    /// An MRC mask around the feature; its center of mass is used as a coordinate.
    Mask(PathBuf),
}

/// One generated volume's folder (see the module documentation), validated on load.
#[derive(Debug, Clone)]
pub struct VolumeDir {
    path: PathBuf,
    bins: Vec<f64>,
    n_images_per_bin: Option<Vec<i64>>,
    voxel_size: f64,
    maskrad: f64,
    n: usize,
    /// `n_points × n_shells`, row-major.
    ml_choice: Vec<i64>,
    n_shells: usize,
    /// Centered `(x, y, z)`.
    points: Vec<[i64; 3]>,
    /// `n³`, x fastest.
    locres: Vec<f32>,
    distances: Vec<f64>,
}

/// How [`select_subvolume`] got from a target to a distance bound, for logs.
#[derive(Debug, Clone, PartialEq)]
pub struct SubvolumeChoice {
    /// Index of the sampling point (row of `ml_choice`).
    pub point: usize,
    /// The sampling point's voxel `(x, y, z)` (0-based indices).
    pub voxel: [usize; 3],
    /// Local resolution at that voxel (Å).
    pub local_resolution: f64,
    /// The sub-box frequency shell used (column of `ml_choice`).
    pub shell: usize,
    /// The kernel-regression bin chosen there.
    pub bin: usize,
    /// Number of bins.
    pub n_bins: usize,
    /// `heterogeneity_bins[bin]`: images with a distance below it are selected.
    pub distance_bound: f64,
    /// `n_images_per_bin[bin]` from params.pkl, if it has it.
    pub images_in_bin: Option<i64>,
}

impl VolumeDir {
    /// Read and check `params.pkl`, `locres.mrc` and `heterogeneity_distances.txt` in `dir`.
    pub fn load(dir: &Path) -> Result<VolumeDir> {
        if !dir.is_dir() {
            return Err(Error::NotFound {
                what: "the generated-volume folder (with params.pkl, locres.mrc and \
                       heterogeneity_distances.txt)"
                    .into(),
                tried: vec![dir.to_path_buf()],
            });
        }
        let params_path = require_file(dir, &["params.pkl"])?;
        let locres_path = require_file(dir, &["locres.mrc", "local_resolution.mrc"])?;
        let dist_path = require_file(dir, &["heterogeneity_distances.txt"])?;

        let params = pickle::load(&params_path)?;
        let p = Params::parse(&params).map_err(|msg| Error::format(&params_path, msg))?;

        let vol = mrc::read_volume(&locres_path)?;
        if vol.shape != [p.n; 3] {
            return Err(Error::inconsistent(format!(
                "{}: the local-resolution map is {}×{}×{} (x×y×z), but {} says volume_shape ({n}, {n}, {n})",
                locres_path.display(),
                vol.shape[2],
                vol.shape[1],
                vol.shape[0],
                params_path.display(),
                n = p.n
            )));
        }
        let distances = read_distances(&dist_path)?;
        Ok(VolumeDir {
            path: dir.to_path_buf(),
            bins: p.bins,
            n_images_per_bin: p.n_images_per_bin,
            voxel_size: p.voxel_size,
            maskrad: p.maskrad,
            n: p.n,
            ml_choice: p.ml_choice,
            n_shells: p.n_shells,
            points: p.points,
            locres: vol.data,
            distances,
        })
    }

    /// The folder this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Box size `n` of the volume.
    pub fn box_size(&self) -> usize {
        self.n
    }

    /// Number of local-resolution sampling points (valid subvolume indices are below it).
    pub fn n_points(&self) -> usize {
        self.points.len()
    }

    /// Centered sampling points `(x, y, z)` (voxel index − n/2).
    pub fn sampling_points(&self) -> &[[i64; 3]] {
        &self.points
    }

    /// The distance bounds of the kernel-regression bins.
    pub fn heterogeneity_bins(&self) -> &[f64] {
        &self.bins
    }

    /// One heterogeneity distance per particle of the original file (NaN: not used).
    pub fn distances(&self) -> &[f64] {
        &self.distances
    }

    /// Voxel size in Å.
    pub fn voxel_size(&self) -> f64 {
        self.voxel_size
    }

    fn params_path(&self) -> PathBuf {
        self.path.join("params.pkl")
    }

    /// The sampling point nearest to a voxel position `(x, y, z)`; the first on a tie, as
    /// numpy's argmin over the Euclidean distances.
    fn nearest_point(&self, c: [f64; 3]) -> Result<usize> {
        let half = (self.n / 2) as f64;
        let mut best: Option<(usize, f64)> = None;
        for (i, p) in self.points.iter().enumerate() {
            let d: f64 = (0..3)
                .map(|a| {
                    let diff = p[a] as f64 + half - c[a];
                    diff * diff
                })
                .sum::<f64>()
                .sqrt();
            if best.is_none_or(|(_, b)| d < b) {
                best = Some((i, d));
            }
        }
        best.map(|(i, _)| i).ok_or_else(|| {
            Error::format(self.params_path(), "sampling_points is empty".to_string())
        })
    }

    /// The sampling point a target refers to.
    pub fn point_for(&self, target: &SubsetTarget) -> Result<usize> {
        match target {
            SubsetTarget::SubvolIdx(k) => {
                if *k >= self.points.len() {
                    return Err(Error::invalid(format!(
                        "subvolume index {k} is out of range: {} has {} sampling points (0..={})",
                        self.path.display(),
                        self.points.len(),
                        self.points.len().saturating_sub(1)
                    )));
                }
                Ok(*k)
            }
            SubsetTarget::Coordinate(c) => {
                let max = (self.n - 1) as f64;
                if c.iter().any(|&v| !v.is_finite() || v < 0.0 || v > max) {
                    return Err(Error::invalid(format!(
                        "coordinate ({}, {}, {}) is outside the {n}×{n}×{n} box of {}: \
                         each of x, y, z must be a voxel index between 0 and {}",
                        c[0],
                        c[1],
                        c[2],
                        self.path.display(),
                        self.n - 1,
                        n = self.n
                    )));
                }
                self.nearest_point(*c)
            }
            SubsetTarget::Mask(path) => {
                let c = mask_center_of_mass(path, self.n)?;
                self.nearest_point(c)
            }
        }
    }

    /// The shell and bin behind sampling point `k` (algorithms.md §11).
    fn choice_at(&self, k: usize) -> Result<SubvolumeChoice> {
        let params = self.params_path();
        let centered = self
            .points
            .get(k)
            .ok_or_else(|| Error::invalid(format!("subvolume index {k} is out of range")))?;
        let half = (self.n / 2) as i64;
        let mut voxel = [0usize; 3];
        for (v, &c) in voxel.iter_mut().zip(centered) {
            *v = usize::try_from(c + half)
                .ok()
                .filter(|&v| v < self.n)
                .ok_or_else(|| {
                    Error::format(
                        &params,
                        format!(
                            "sampling point {k} ({}, {}, {}) lies outside the {n}³ box",
                            centered[0],
                            centered[1],
                            centered[2],
                            n = self.n
                        ),
                    )
                })?;
        }
        let [x, y, z] = voxel;
        let rho = self
            .locres
            .get((z * self.n + y) * self.n + x)
            .copied()
            .ok_or_else(|| Error::invalid("internal: voxel outside the map"))?;

        let m = subvolume_size(self.maskrad, self.voxel_size).ok_or_else(|| {
            Error::format(
                &params,
                format!(
                    "locres_maskrad {} Å is less than half a voxel ({} Å): no sub-box shells",
                    self.maskrad, self.voxel_size
                ),
            )
        })?;
        let (mut shell, floored) = shell_for_resolution(rho, m, self.voxel_size);
        if floored {
            tracing::warn!(
                "the local resolution at sampling point {k} ({rho} Å) is very low: using the                  first shell; the subset is probably not meaningful"
            );
        }
        if shell >= self.n_shells {
            tracing::warn!(
                "shell {shell} for {rho} Å is beyond the {} shells of ml_choice in {}; using the last",
                self.n_shells,
                params.display()
            );
            shell = self.n_shells - 1;
        }
        let raw = self
            .ml_choice
            .get(k * self.n_shells + shell)
            .copied()
            .ok_or_else(|| Error::invalid("internal: ml_choice index out of range"))?;
        let bin = usize::try_from(raw)
            .ok()
            .filter(|&b| b < self.bins.len())
            .ok_or_else(|| {
                Error::format(
                    &params,
                    format!(
                        "ml_choice[{k}][{shell}] = {raw} is not a bin index (there are {} heterogeneity_bins)",
                        self.bins.len()
                    ),
                )
            })?;
        Ok(SubvolumeChoice {
            point: k,
            voxel,
            local_resolution: f64::from(rho),
            shell,
            bin,
            n_bins: self.bins.len(),
            distance_bound: self.bins[bin],
            images_in_bin: self
                .n_images_per_bin
                .as_ref()
                .and_then(|v| v.get(bin).copied()),
        })
    }
}

/// Sub-box side `M = 2·3·round(maskrad/voxel)` of the per-shell error (§7.4), with numpy's
/// round (ties to even); `None` when it has no shell (M < 4).
fn subvolume_size(maskrad: f64, voxel: f64) -> Option<usize> {
    let r = (maskrad / voxel).round_ties_even();
    if !r.is_finite() || r < 1.0 || r > (usize::MAX / 8) as f64 {
        return None;
    }
    Some(6 * r as usize)
}

/// The `ml_choice` column for a local resolution `rho` (Å) in a sub-box of side `m`:
/// `argmin_k |f_k − 1/rho| − 1`, floored at 0, over the non-negative sub-box frequencies
/// `f_k = k/(m·voxel)` except the last, `k = 0..m/2−2`; and whether the floor applied
/// (upstream warns then).
///
/// Computed in f32 like upstream (`get_1d_frequency_grid` is float32, the map value too), so
/// that ties between two shells break the same way; numpy's argmin takes the first minimum,
/// or the first NaN (a NaN or zero resolution gives shell 0).
fn shell_for_resolution(rho: f32, m: usize, voxel: f64) -> (usize, bool) {
    let target = 1.0f32 / rho;
    let denom = m as f32 * voxel as f32;
    let n_freq = (m / 2).saturating_sub(1);
    let diffs = (0..n_freq).map(|k| (k as f32 / denom - target).abs());
    match argmin_first(diffs) {
        Some(k) if k > 0 => (k - 1, false),
        _ => (0, true),
    }
}

/// numpy's argmin: the first minimum, or the first NaN if there is one.
fn argmin_first(values: impl IntoIterator<Item = f32>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (k, d) in values.into_iter().enumerate() {
        match best {
            Some((_, b)) if b.is_nan() => break,
            Some((_, b)) if d.is_nan() || d < b => best = Some((k, d)),
            Some(_) => {}
            None => best = Some((k, d)),
        }
    }
    best.map(|(k, _)| k)
}

/// The center of mass `(x, y, z)` in voxel indices of a mask that must be `n³`.
fn mask_center_of_mass(path: &Path, n: usize) -> Result<[f64; 3]> {
    let vol = mrc::read_volume(path)?;
    if vol.shape != [n; 3] {
        return Err(Error::inconsistent(format!(
            "{}: the mask is {}×{}×{} (x×y×z), but the volume is {n}×{n}×{n}; \
             give a mask on the volume's grid",
            path.display(),
            vol.shape[2],
            vol.shape[1],
            vol.shape[0]
        )));
    }
    let mut total = 0.0f64;
    let mut moment = [0.0f64; 3];
    for (i, &v) in vol.data.iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::format(
                path,
                format!("the mask has a non-finite value ({v}) at voxel {i}"),
            ));
        }
        if v == 0.0 {
            continue;
        }
        let v = f64::from(v);
        let (x, y, z) = (i % n, (i / n) % n, i / (n * n));
        total += v;
        moment[0] += x as f64 * v;
        moment[1] += y as f64 * v;
        moment[2] += z as f64 * v;
    }
    if total <= 0.0 {
        return Err(Error::format(
            path,
            if total == 0.0 {
                "the mask is empty (all zero): it has no center of mass".to_string()
            } else {
                format!("the mask values sum to {total}: it has no center of mass")
            },
        ));
    }
    Ok(moment.map(|m| m / total))
}

/// How a target maps to a distance bound (sampling point, local resolution, shell, bin).
pub fn select_subvolume(dir: &VolumeDir, target: &SubsetTarget) -> Result<SubvolumeChoice> {
    let k = dir.point_for(target)?;
    dir.choice_at(k)
}

/// The particles behind one region of a generated volume (algorithms.md §11): the sampling
/// point of `target`, the `ml_choice` bin at the shell of its local resolution, and the
/// images whose heterogeneity distance is below that bin's bound (NaN never is), as
/// ascending original-file indices.
pub fn volume_subset(dir: &VolumeDir, target: &SubsetTarget) -> Result<Vec<usize>> {
    let choice = select_subvolume(dir, target)?;
    Ok(images_below(&dir.distances, choice.distance_bound))
}

fn images_below(distances: &[f64], bound: f64) -> Vec<usize> {
    distances
        .iter()
        .enumerate()
        .filter(|&(_, &d)| d < bound)
        .map(|(i, _)| i)
        .collect()
}

/// The first of `names` that exists in `dir`, or a NotFound error listing them.
fn require_file(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    let tried: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::NotFound {
            what: format!(
                "{} of the generated volume in {}",
                names.first().copied().unwrap_or(""),
                dir.display()
            ),
            tried,
        })
}

/// `np.loadtxt` of a 1-D file: one number per line (`nan` allowed); blank lines and `#`
/// comments skipped.
fn read_distances(path: &Path) -> Result<Vec<f64>> {
    let bytes = read_bytes(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::format(path, "not a text file of numbers (not UTF-8)"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let v = t.parse::<f64>().map_err(|_| {
            Error::format(
                path,
                format!(
                    "line {}: {t:?} is not a number (expected one heterogeneity distance per line)",
                    i + 1
                ),
            )
        })?;
        out.push(v);
    }
    Ok(out)
}

/// The entries of params.pkl this module uses, checked.
struct Params {
    bins: Vec<f64>,
    n_images_per_bin: Option<Vec<i64>>,
    voxel_size: f64,
    maskrad: f64,
    n: usize,
    ml_choice: Vec<i64>,
    n_shells: usize,
    points: Vec<[i64; 3]>,
}

impl Params {
    fn parse(v: &PyValue) -> std::result::Result<Params, String> {
        if !matches!(v, PyValue::Dict(_)) {
            return Err(format!(
                "params.pkl holds a {}, expected a dict of kernel-regression parameters",
                v.type_name()
            ));
        }
        let get = |key: &str| {
            v.get(key)
                .ok_or_else(|| format!("params.pkl has no {key:?} entry"))
        };
        let number = |key: &str| -> std::result::Result<f64, String> {
            get(key)?
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{key:?} must be a finite number"))
        };

        let bins = numbers(get("heterogeneity_bins")?)
            .map_err(|e| format!("\"heterogeneity_bins\": {e}"))?;
        if bins.is_empty() {
            return Err("\"heterogeneity_bins\" is empty".into());
        }
        let n_images_per_bin = match v.get("n_images_per_bin") {
            None | Some(PyValue::None) => None,
            Some(x) => Some(
                integers(x)
                    .map(|(_, d)| d)
                    .map_err(|e| format!("\"n_images_per_bin\": {e}"))?,
            ),
        };
        let voxel_size = number("voxel_size")?;
        if voxel_size <= 0.0 {
            return Err(format!("\"voxel_size\" is {voxel_size}, expected > 0"));
        }
        let maskrad = match get("locres_maskrad")? {
            // Upstream's default when the run left it unset.
            PyValue::None => 0.5 * number("locres_sampling")?,
            _ => number("locres_maskrad")?,
        };

        let shape = get("volume_shape")?;
        let dims: Vec<i64> = match shape {
            PyValue::Tuple(items) | PyValue::List(items) => {
                items.iter().map(|x| x.as_i64()).collect::<Option<_>>()
            }
            PyValue::Array(a) => a.to_i64_vec().ok(),
            _ => None,
        }
        .ok_or_else(|| "\"volume_shape\" must be a tuple of three integers".to_string())?;
        let n = match dims.as_slice() {
            [a, b, c] if a == b && b == c && *a > 1 => *a as usize,
            _ => {
                return Err(format!(
                    "\"volume_shape\" is {dims:?}, expected a cube (n, n, n) with n > 1"
                ))
            }
        };

        let (cshape, ml_choice) =
            integers(get("ml_choice")?).map_err(|e| format!("\"ml_choice\": {e}"))?;
        let [n_points, n_shells] = cshape.as_slice() else {
            return Err(format!(
                "\"ml_choice\" has shape {cshape:?}, expected (n_points, n_shells)"
            ));
        };
        let (n_points, n_shells) = (*n_points, *n_shells);
        if n_points == 0 || n_shells == 0 {
            return Err(format!(
                "\"ml_choice\" has shape ({n_points}, {n_shells}): no sampling points or shells"
            ));
        }
        let (pshape, pts) =
            integers(get("sampling_points")?).map_err(|e| format!("\"sampling_points\": {e}"))?;
        if pshape != [n_points, 3] {
            return Err(format!(
                "\"sampling_points\" has shape {pshape:?}, expected ({n_points}, 3) to match \
                 the {n_points} rows of \"ml_choice\""
            ));
        }
        let points = pts.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        Ok(Params {
            bins,
            n_images_per_bin,
            voxel_size,
            maskrad,
            n,
            ml_choice,
            n_shells,
            points,
        })
    }
}

/// A 1-D numeric array or list.
fn numbers(v: &PyValue) -> std::result::Result<Vec<f64>, String> {
    match v {
        PyValue::Array(a) if a.ndim() == 1 => Ok(a.to_f64_vec()),
        PyValue::Array(a) => Err(format!(
            "an array of shape {}, expected 1-D",
            pickle::fmt_shape(a.shape())
        )),
        PyValue::List(items) | PyValue::Tuple(items) => items
            .iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| format!("a {} in the list", x.type_name()))
            })
            .collect(),
        other => Err(format!(
            "a {}, expected an array of numbers",
            other.type_name()
        )),
    }
}

/// An integer array (any shape, returned with it) or a 1-D list of ints.
fn integers(v: &PyValue) -> std::result::Result<(Vec<usize>, Vec<i64>), String> {
    match v {
        PyValue::Array(a) => {
            if a.dtype().is_float() {
                return Err(format!("a {} array, expected integers", a.dtype().name()));
            }
            let data = a.to_i64_vec().map_err(|e| e.to_string())?;
            Ok((a.shape().to_vec(), data))
        }
        PyValue::List(items) | PyValue::Tuple(items) => {
            let data = items
                .iter()
                .map(|x| match x {
                    PyValue::Float(_) => None,
                    x => x.as_i64(),
                })
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| "a list that holds something other than integers".to_string())?;
            Ok((vec![data.len()], data))
        }
        other => Err(format!(
            "a {}, expected an integer array",
            other.type_name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_selection_follows_upstream() {
        let nan = f64::NAN;
        let labels = [0.0, 1.0, nan, 2.0, 1.0, nan, 3.0];
        assert_eq!(kmeans_subset(&labels, &[1, 3], false), vec![1, 4, 6]);
        assert_eq!(kmeans_subset(&labels, &[1, 3], true), vec![0, 3]);
        // NaN is label -1: listed, it selects the unused particles; inverted, never.
        assert_eq!(kmeans_subset(&labels, &[-1], false), vec![2, 5]);
        assert_eq!(kmeans_subset(&labels, &[-1], true), vec![0, 1, 3, 4, 6]);
        assert!(kmeans_subset(&labels, &[], false).is_empty());
        assert_eq!(kmeans_subset(&labels, &[], true), vec![0, 1, 3, 4, 6]);
        // astype(int) truncates toward zero.
        assert_eq!(kmeans_subset(&[1.9, -0.5, 2.0], &[1, 0], false), vec![0, 1]);
    }

    #[test]
    fn shells_follow_the_sub_box_grid() {
        // M = 12, voxel 2 Å: f_k = k/24 Å⁻¹ for k = 0..4.
        assert_eq!(subvolume_size(4.0, 2.0), Some(12));
        let shell = |rho: f32| shell_for_resolution(rho, 12, 2.0);
        assert_eq!(shell(8.0), (2, false)); // 1/8 = f_3
        assert_eq!(shell(12.0), (1, false)); // f_2
        assert_eq!(shell(24.0), (0, false)); // f_1
        assert_eq!(shell(50.0), (0, true)); // nearest f_0, floored
                                            // The last non-negative frequency (k = 5) is excluded: 1/ρ = 5/24 picks k = 4.
        assert_eq!(shell(24.0 / 5.0), (3, false));
        assert_eq!(shell(1.0), (3, false));
        // Degenerate resolutions give shell 0, as numpy's argmin.
        assert_eq!(shell(0.0), (0, true));
        assert_eq!(shell(f32::NAN), (0, true));
        // Ties go to the first minimum; a NaN wins.
        assert_eq!(argmin_first([2.0, 1.0, 1.0, 3.0]), Some(1));
        assert_eq!(argmin_first([1.0, f32::NAN, 0.0]), Some(1));
        assert_eq!(argmin_first([]), None);
        // numpy rounding: 2.5 → 2, 3.5 → 4.
        assert_eq!(subvolume_size(5.0, 2.0), Some(12));
        assert_eq!(subvolume_size(7.0, 2.0), Some(24));
        assert_eq!(subvolume_size(0.9, 2.0), None);
    }

    #[test]
    fn distances_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.txt");
        std::fs::write(&p, "1.0e+00\nnan\n# note\n\n2.5\n-inf\n").unwrap();
        let d = read_distances(&p).unwrap();
        assert_eq!(d.len(), 4);
        assert!(d[1].is_nan());
        assert_eq!(images_below(&d, 2.0), vec![0, 3]);
        std::fs::write(&p, "1.0\nabc\n").unwrap();
        let e = read_distances(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("d.txt"), "{e}");
    }
}
