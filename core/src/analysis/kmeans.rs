//! k-means of latent coordinates as `analyze` runs it (algorithms.md §8 step 3): scikit-learn's
//! `KMeans(n_clusters, random_state=0, max_iter=10)` — greedy k-means++ seeding, Lloyd
//! iterations with sklearn's stopping rules — then each center moved to its nearest data point
//! and, for more than one dimension, the centers put in the leaf order of an average-linkage
//! dendrogram of the centers (what `seaborn.clustermap(centers).dendrogram_row.reordered_ind`
//! gives), with the labels renumbered to match.
//!
//! The random stream is [`crate::rng::Rng`], not numpy's, so the centers are not those of the
//! Python tool for the same seed; the algorithm and its stopping rules are. Results depend only
//! on the data and the options: point-wise work runs in parallel, and every sum over points is
//! taken over fixed blocks added in block order, whatever the thread count.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Points per block of the parallel sums (fixed, so that sums do not depend on the threads).
const BLOCK: usize = 4096;

/// Stream id of the k-means++ seeding in [`Rng::for_item`] (one item per restart).
const STREAM_INIT: u64 = 0x6b6d_6561_6e73;

/// sklearn's default relative tolerance: Lloyd stops when the squared center shift is at most
/// `TOL · mean(per-axis variance)`.
const TOL: f64 = 1e-4;

/// Options of [`kmeans`]. The defaults are those of RECOVAR's `analyze` function (the 1.0.5
/// command line asks for 20 clusters instead of 40).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmeansOptions {
    /// Number of clusters (`--n-clusters`).
    pub n_clusters: usize,
    /// Most Lloyd iterations per run (RECOVAR: 10).
    pub max_iter: usize,
    /// Independent k-means++ restarts; the run with the lowest inertia is kept (recent
    /// scikit-learn: 1 for k-means++).
    pub n_init: usize,
    /// Seed of the k-means++ seeding.
    pub seed: u64,
    /// Divide each axis by its standard deviation before clustering (`--normalize-kmeans`;
    /// an axis without spread is left unscaled). Distances, the choice of the data point
    /// nearest each center and the dendrogram are then those of the scaled coordinates; the
    /// returned centers are still rows of `data`.
    pub normalize: bool,
}

impl Default for KmeansOptions {
    fn default() -> Self {
        KmeansOptions {
            n_clusters: 40,
            max_iter: 10,
            n_init: 1,
            seed: 0,
            normalize: false,
        }
    }
}

/// What [`kmeans`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct KmeansResult {
    /// `k × dim` centers, row-major: center `c` is data row `center_points[c]`, in the
    /// original (never scaled) coordinates.
    pub centers: Vec<f32>,
    /// The data row each center was moved to.
    pub center_points: Vec<usize>,
    /// Cluster of each data row, numbered like `centers` (after the dendrogram reordering).
    /// A row belongs to the cluster of the nearest Lloyd center, which is usually but not
    /// always the nearest of the moved `centers`.
    pub labels: Vec<usize>,
    /// Coordinates per center.
    pub dim: usize,
    /// Sum of squared distances of the rows to their Lloyd centers (before the centers were
    /// moved to data points), in the coordinates clustered (scaled with `normalize`).
    pub inertia: f64,
}

impl KmeansResult {
    /// Number of clusters.
    pub fn n_clusters(&self) -> usize {
        self.center_points.len()
    }

    /// Center `c` (`dim` coordinates).
    pub fn center(&self, c: usize) -> &[f32] {
        &self.centers[c * self.dim..(c + 1) * self.dim]
    }
}

/// Cluster the `n × dim` row-major `data` into `opts.n_clusters` clusters (see the module
/// documentation for the steps).
///
/// Errors: `dim` = 0 or not dividing `data.len()`, no rows, 0 clusters or more clusters than
/// rows, `max_iter` or `n_init` = 0, or a non-finite value (rows padded with NaN for missing
/// images must be dropped by the caller first).
pub fn kmeans(data: &[f32], dim: usize, opts: &KmeansOptions) -> Result<KmeansResult> {
    let n = check_rows(data, dim, "k-means")?;
    let k = opts.n_clusters;
    if k == 0 {
        return Err(Error::invalid("k-means needs at least 1 cluster"));
    }
    if k > n {
        return Err(Error::invalid(format!(
            "k-means: {k} clusters asked for but only {n} data rows"
        )));
    }
    if opts.max_iter == 0 || opts.n_init == 0 {
        return Err(Error::invalid(format!(
            "k-means: max_iter ({}) and n_init ({}) must be at least 1",
            opts.max_iter, opts.n_init
        )));
    }
    let mut x: Vec<f64> = data.iter().map(|&v| v as f64).collect();
    let variances = axis_variances(&x, dim);
    if opts.normalize {
        // A constant axis stays unscaled instead of turning into NaN.
        let scale: Vec<f64> = variances
            .iter()
            .map(|&v| if v > 0.0 { 1.0 / v.sqrt() } else { 1.0 })
            .collect();
        x.par_chunks_mut(dim).for_each(|row| {
            for (v, s) in row.iter_mut().zip(&scale) {
                *v *= s;
            }
        });
    }
    let tol = TOL * mean(&axis_variances(&x, dim));

    let mut best: Option<Lloyd> = None;
    for run in 0..opts.n_init {
        let mut rng = Rng::for_item(opts.seed, STREAM_INIT, run as u64);
        let init = kmeans_plus_plus(&x, dim, k, &mut rng);
        let fit = lloyd(&x, dim, init, opts.max_iter, tol);
        if best.as_ref().is_none_or(|b| fit.inertia < b.inertia) {
            best = Some(fit);
        }
    }
    let fit = best.ok_or_else(|| Error::invalid("k-means: no run"))?;

    let center_points = nearest_rows(&x, dim, &fit.centers);
    let order = if dim > 1 {
        let snapped: Vec<f64> = center_points
            .iter()
            .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        dendrogram_order(&snapped, dim)
    } else {
        (0..k).collect()
    };
    let mut new_index = vec![0usize; k];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let center_points: Vec<usize> = order.iter().map(|&c| center_points[c]).collect();
    let centers = center_points
        .iter()
        .flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    let labels = fit.labels.iter().map(|&l| new_index[l]).collect();
    Ok(KmeansResult {
        centers,
        center_points,
        labels,
        dim,
        inertia: fit.inertia,
    })
}

/// The number of rows of `data`, after checking the shape and that every value is finite.
pub(crate) fn check_rows(data: &[f32], dim: usize, what: &str) -> Result<usize> {
    if dim == 0 {
        return Err(Error::invalid(format!(
            "{what}: dimension must be at least 1"
        )));
    }
    if data.is_empty() {
        return Err(Error::invalid(format!("{what}: no data rows")));
    }
    if !data.len().is_multiple_of(dim) {
        return Err(Error::inconsistent(format!(
            "{what}: {} values is not a whole number of rows of {dim}",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        let (row, col) = (i / dim, i % dim);
        let v = data[i];
        let hint = if v.is_nan() {
            " (rows padded with NaN for missing images must be dropped first)"
        } else {
            ""
        };
        return Err(Error::invalid(format!(
            "{what}: row {row}, coordinate {col} is {v}{hint}"
        )));
    }
    Ok(data.len() / dim)
}

/// Population variance of each axis (numpy `var`, ddof 0), summed over fixed blocks.
fn axis_variances(x: &[f64], dim: usize) -> Vec<f64> {
    let n = (x.len() / dim) as f64;
    let sums = block_sum(x, dim, dim, |row, acc| {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    });
    let means: Vec<f64> = sums.iter().map(|s| s / n).collect();
    let sq = block_sum(x, dim, dim, |row, acc| {
        for ((a, v), m) in acc.iter_mut().zip(row).zip(&means) {
            *a += (v - m) * (v - m);
        }
    });
    sq.iter().map(|s| s / n).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sum `width` accumulators over the rows of `x`: each block of [`BLOCK`] rows is folded by
/// `add` in parallel, then the block results are added in block order.
fn block_sum(
    x: &[f64],
    dim: usize,
    width: usize,
    add: impl Fn(&[f64], &mut [f64]) + Sync,
) -> Vec<f64> {
    let parts: Vec<Vec<f64>> = x
        .par_chunks(BLOCK * dim)
        .map(|block| {
            let mut acc = vec![0.0; width];
            for row in block.chunks_exact(dim) {
                add(row, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![0.0; width];
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// Sum of the values, over fixed blocks added in order.
fn ordered_sum(v: &[f64]) -> f64 {
    v.par_chunks(BLOCK)
        .map(|c| c.iter().sum::<f64>())
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Squared distance from each row of `x` to `c`.
fn dist2_to(x: &[f64], dim: usize, c: &[f64]) -> Vec<f64> {
    x.par_chunks(dim).map(|row| dist2(row, c)).collect()
}

/// scikit-learn's greedy k-means++ seeding: the first center is a uniformly random row; each
/// next one is the best (lowest potential) of `2 + ⌊ln k⌋` rows drawn with probability
/// proportional to their squared distance to the centers so far.
fn kmeans_plus_plus(x: &[f64], dim: usize, k: usize, rng: &mut Rng) -> Vec<f64> {
    let n = x.len() / dim;
    let trials = 2 + (k as f64).ln() as usize;
    let mut centers = Vec::with_capacity(k * dim);
    let first = rng.below(n as u64) as usize;
    centers.extend_from_slice(&x[first * dim..(first + 1) * dim]);
    let mut closest = dist2_to(x, dim, &x[first * dim..(first + 1) * dim]);
    let mut pot = ordered_sum(&closest);
    let mut cumsum = vec![0.0; n];
    for _ in 1..k {
        let mut acc = 0.0;
        for (c, d) in cumsum.iter_mut().zip(&closest) {
            acc += d;
            *c = acc;
        }
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let r = rng.uniform() * pot;
            // numpy searchsorted (side 'left'): the first index whose cumulative sum is ≥ r.
            let id = cumsum.partition_point(|&c| c < r).min(n - 1);
            let cand = &x[id * dim..(id + 1) * dim];
            let d: Vec<f64> = x
                .par_chunks(dim)
                .zip(closest.par_iter())
                .map(|(row, &old)| dist2(row, cand).min(old))
                .collect();
            let p = ordered_sum(&d);
            if best.as_ref().is_none_or(|b| p < b.0) {
                best = Some((p, id, d));
            }
        }
        if let Some((p, id, d)) = best {
            pot = p;
            closest = d;
            centers.extend_from_slice(&x[id * dim..(id + 1) * dim]);
        }
    }
    centers
}

/// The outcome of Lloyd's iterations.
struct Lloyd {
    centers: Vec<f64>,
    labels: Vec<usize>,
    inertia: f64,
}

/// Index of the center nearest `row` (the lowest index on ties) and its squared distance.
fn nearest(row: &[f64], centers: &[f64], dim: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (c, center) in centers.chunks_exact(dim).enumerate() {
        let d = dist2(row, center);
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

fn assign(x: &[f64], dim: usize, centers: &[f64]) -> Vec<(usize, f64)> {
    x.par_chunks(dim)
        .map(|row| nearest(row, centers, dim))
        .collect()
}

/// Lloyd's iterations as scikit-learn runs them: stop when the labels no longer change
/// ("strict convergence") or when the total squared center shift is at most `tol`; a cluster
/// left empty takes the row farthest from its own center. Without strict convergence the
/// labels are recomputed for the final centers.
fn lloyd(x: &[f64], dim: usize, mut centers: Vec<f64>, max_iter: usize, tol: f64) -> Lloyd {
    let k = centers.len() / dim;
    let mut labels: Option<Vec<usize>> = None;
    let mut strict = false;
    for _ in 0..max_iter {
        let assigned = assign(x, dim, &centers);
        let new_labels: Vec<usize> = assigned.iter().map(|a| a.0).collect();
        let width = k * (dim + 1);
        let label_ref = &new_labels;
        let parts: Vec<Vec<f64>> = x
            .par_chunks(BLOCK * dim)
            .enumerate()
            .map(|(b, block)| {
                let mut acc = vec![0.0; width];
                for (r, row) in block.chunks_exact(dim).enumerate() {
                    let c = label_ref[b * BLOCK + r];
                    let o = c * (dim + 1);
                    for (a, v) in acc[o..o + dim].iter_mut().zip(row) {
                        *a += v;
                    }
                    acc[o + dim] += 1.0;
                }
                acc
            })
            .collect();
        let mut sums = vec![0.0; width];
        for p in parts {
            for (s, v) in sums.iter_mut().zip(p) {
                *s += v;
            }
        }
        relocate_empty(x, dim, &assigned, &new_labels, &mut sums);
        let mut shift = 0.0;
        for c in 0..k {
            let o = c * (dim + 1);
            let count = sums[o + dim];
            if count > 0.0 {
                for d in 0..dim {
                    let v = sums[o + d] / count;
                    let old = centers[c * dim + d];
                    shift += (v - old) * (v - old);
                    centers[c * dim + d] = v;
                }
            }
        }
        let same = labels.as_ref() == Some(&new_labels);
        labels = Some(new_labels);
        if same {
            strict = true;
            break;
        }
        if shift <= tol {
            break;
        }
    }
    let assigned = assign(x, dim, &centers);
    let labels = if strict {
        labels.unwrap_or_else(|| assigned.iter().map(|a| a.0).collect())
    } else {
        assigned.iter().map(|a| a.0).collect()
    };
    let inertia = ordered_sum(
        &x.par_chunks(dim)
            .zip(labels.par_iter())
            .map(|(row, &c)| dist2(row, &centers[c * dim..(c + 1) * dim]))
            .collect::<Vec<f64>>(),
    );
    Lloyd {
        centers,
        labels,
        inertia,
    }
}

/// scikit-learn's `_relocate_empty_clusters`: each empty cluster gets one of the rows farthest
/// from their centers (farthest first; lowest index on ties), moved out of its old cluster.
/// `sums` holds, per cluster, the coordinate sums then the count.
fn relocate_empty(
    x: &[f64],
    dim: usize,
    assigned: &[(usize, f64)],
    labels: &[usize],
    sums: &mut [f64],
) {
    let k = sums.len() / (dim + 1);
    let empty: Vec<usize> = (0..k)
        .filter(|&c| sums[c * (dim + 1) + dim] == 0.0)
        .collect();
    if empty.is_empty() {
        return;
    }
    let mut far: Vec<usize> = (0..assigned.len()).collect();
    far.sort_by(|&a, &b| assigned[b].1.total_cmp(&assigned[a].1).then(a.cmp(&b)));
    for (&c, &i) in empty.iter().zip(&far) {
        let row = &x[i * dim..(i + 1) * dim];
        let old = labels[i] * (dim + 1);
        for d in 0..dim {
            sums[old + d] -= row[d];
        }
        sums[old + dim] -= 1.0;
        let o = c * (dim + 1);
        sums[o..o + dim].copy_from_slice(row);
        sums[o + dim] = 1.0;
    }
}

/// For each center, the data row nearest it (the lowest row index on ties).
fn nearest_rows(x: &[f64], dim: usize, centers: &[f64]) -> Vec<usize> {
    centers
        .chunks_exact(dim)
        .map(|c| {
            let d = dist2_to(x, dim, c);
            let mut best = (0, f64::INFINITY);
            for (i, &v) in d.iter().enumerate() {
                if v < best.1 {
                    best = (i, v);
                }
            }
            best.0
        })
        .collect()
}

/// Leaf order of the average-linkage (UPGMA), Euclidean dendrogram of the `points`
/// (`dim` coordinates each), as scipy's `dendrogram(linkage(points, 'average'))['leaves']`
/// lists them: clusters are numbered in merge order after the points (`n, n+1, ...`) and
/// each merge puts the lower-numbered side on the left. Equal distances are merged in scan
/// order, which may differ from scipy's.
pub(crate) fn dendrogram_order(points: &[f64], dim: usize) -> Vec<usize> {
    let n = points.len() / dim;
    if n <= 1 {
        return (0..n).collect();
    }
    // Active clusters: id, size; `dist` between active slots (row-major over slots).
    let mut id: Vec<usize> = (0..n).collect();
    let mut size = vec![1.0f64; n];
    let mut alive = vec![true; n];
    let mut dist = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..i {
            let d = dist2(
                &points[i * dim..(i + 1) * dim],
                &points[j * dim..(j + 1) * dim],
            )
            .sqrt();
            dist[i * n + j] = d;
            dist[j * n + i] = d;
        }
    }
    // children[m] = (left, right) of cluster n + m.
    let mut children: Vec<(usize, usize)> = Vec::with_capacity(n - 1);
    for _ in 0..n - 1 {
        let mut best = (usize::MAX, usize::MAX, f64::INFINITY);
        for i in 0..n {
            if !alive[i] {
                continue;
            }
            for j in i + 1..n {
                if alive[j] && dist[i * n + j] < best.2 {
                    best = (i, j, dist[i * n + j]);
                }
            }
        }
        let (a, b, _) = best;
        if a == usize::MAX {
            break;
        }
        children.push((id[a].min(id[b]), id[a].max(id[b])));
        // Lance–Williams update for average linkage; slot `a` becomes the merged cluster.
        let (sa, sb) = (size[a], size[b]);
        for c in 0..n {
            if alive[c] && c != a && c != b {
                let d = (sa * dist[a * n + c] + sb * dist[b * n + c]) / (sa + sb);
                dist[a * n + c] = d;
                dist[c * n + a] = d;
            }
        }
        alive[b] = false;
        size[a] = sa + sb;
        id[a] = n + children.len() - 1;
    }
    let mut leaves = Vec::with_capacity(n);
    let mut stack = vec![n + children.len() - 1];
    while let Some(node) = stack.pop() {
        if node < n {
            leaves.push(node);
        } else {
            let (l, r) = children[node - n];
            stack.push(r);
            stack.push(l);
        }
    }
    leaves
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per` points around each of `centres` (Gaussian, standard deviation `sd`), in a
    /// shuffled order; returns the data and the true blob of each row.
    fn blobs(centres: &[Vec<f32>], per: usize, sd: f64, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let mut rows: Vec<(Vec<f32>, usize)> = Vec::new();
        for (b, c) in centres.iter().enumerate() {
            for _ in 0..per {
                rows.push((
                    c.iter().map(|&v| v + (sd * rng.normal()) as f32).collect(),
                    b,
                ));
            }
        }
        for i in (1..rows.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            rows.swap(i, j);
        }
        let data = rows.iter().flat_map(|r| r.0.iter().copied()).collect();
        let truth = rows.iter().map(|r| r.1).collect();
        (data, truth)
    }

    fn corners(dim: usize) -> Vec<Vec<f32>> {
        (0..5)
            .map(|b| {
                (0..dim)
                    .map(|d| {
                        if (b + d) % 3 == 0 {
                            10.0
                        } else {
                            -4.0 * b as f32 + d as f32
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn separated_blobs_are_recovered_exactly() {
        let centres = corners(3);
        let (data, truth) = blobs(&centres, 150, 0.3, 1);
        let opts = KmeansOptions {
            n_clusters: 5,
            ..Default::default()
        };
        let r = kmeans(&data, 3, &opts).unwrap();
        assert_eq!(r.labels.len(), truth.len());
        // The partition must match the blobs one to one.
        let mut map = vec![usize::MAX; 5];
        for (&l, &t) in r.labels.iter().zip(&truth) {
            if map[t] == usize::MAX {
                map[t] = l;
            }
            assert_eq!(map[t], l, "blob {t} split between clusters");
        }
        let mut seen = map.clone();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        // Each center is a data row of its own cluster, near its blob's centre.
        for c in 0..5 {
            let i = r.center_points[c];
            assert_eq!(r.center(c), &data[i * 3..(i + 1) * 3]);
            assert_eq!(r.labels[i], c);
            let t = truth[i];
            let d: f32 = centres[t]
                .iter()
                .zip(r.center(c))
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            assert!(d.sqrt() < 0.6, "center {c} is {} from its blob", d.sqrt());
        }
        // Sum of squared deviations: n·dim·σ².
        let expect = 0.09 * data.len() as f64;
        assert!(
            (r.inertia / expect - 1.0).abs() < 0.2,
            "inertia {}",
            r.inertia
        );
    }

    #[test]
    fn deterministic_for_a_seed_and_thread_count() {
        let (data, _) = blobs(&corners(4), 400, 1.5, 2);
        let opts = KmeansOptions {
            n_clusters: 12,
            seed: 3,
            n_init: 2,
            ..Default::default()
        };
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| kmeans(&data, 4, &opts).unwrap())
        };
        let a = run(1);
        assert_eq!(a, run(2));
        assert_eq!(a, run(3));
        let other = kmeans(
            &data,
            4,
            &KmeansOptions {
                seed: 4,
                ..opts.clone()
            },
        )
        .unwrap();
        assert_ne!(a.center_points, other.center_points, "the seed is used");
    }

    #[test]
    fn normalize_clusters_in_scaled_coordinates() {
        // Two tight groups at y = ±1 and a huge Gaussian spread along x. Unscaled, k-means
        // splits along x; scaled to unit variance, splitting along y leaves a within-cluster
        // variance of 1 per point against 1 + (1 − 2/π) along x.
        let mut rng = Rng::new(5);
        let mut data = Vec::new();
        let mut side = Vec::new();
        for i in 0..400 {
            let s = if i % 2 == 0 { 1.0 } else { -1.0 };
            data.push((1000.0 * rng.normal()) as f32);
            data.push((s + 0.05 * rng.normal()) as f32);
            side.push(i % 2);
        }
        let opts = KmeansOptions {
            n_clusters: 2,
            normalize: true,
            n_init: 4,
            ..Default::default()
        };
        let r = kmeans(&data, 2, &opts).unwrap();
        let agree = r.labels.iter().zip(&side).filter(|(l, s)| l == s).count();
        assert!(agree == 0 || agree == 400, "{agree} of 400 on one side");
        for c in 0..2 {
            let i = r.center_points[c];
            assert_eq!(r.center(c), &data[2 * i..2 * i + 2], "original coordinates");
        }
        let plain = kmeans(
            &data,
            2,
            &KmeansOptions {
                normalize: false,
                ..opts
            },
        )
        .unwrap();
        let agree = plain
            .labels
            .iter()
            .zip(&side)
            .filter(|(l, s)| l == s)
            .count();
        assert!(
            agree > 100 && agree < 300,
            "unscaled splits along x: {agree}"
        );
    }

    #[test]
    fn dendrogram_order_matches_scipy() {
        // scipy: dendrogram(linkage([[30],[10],[0],[12],[1]], 'average'))['leaves']
        // merges (2,4) at 1, (1,3) at 2, (5,6) at 10.5, then (0,7).
        let pts = [30.0, 10.0, 0.0, 12.0, 1.0];
        assert_eq!(dendrogram_order(&pts, 1), vec![0, 2, 4, 1, 3]);
        let pts2 = [0.0, 0.0, 5.0, 5.0, 0.1, 0.0, 5.0, 5.2];
        assert_eq!(dendrogram_order(&pts2, 2), vec![0, 2, 1, 3]);
        assert_eq!(dendrogram_order(&[1.0, 2.0], 2), vec![0]);
        // 14 points in 3-D; expected leaves from scipy 1.17.
        let pts: Vec<f64> = (0..14)
            .flat_map(|i| {
                let x = i as f64;
                [
                    (1.3 * x).sin() * 5.0,
                    (0.7 * x).cos() * 3.0,
                    ((37 * i) % 11) as f64 * 0.5,
                ]
            })
            .collect();
        assert_eq!(
            dendrogram_order(&pts, 3),
            vec![1, 6, 11, 10, 2, 7, 5, 12, 3, 4, 13, 0, 8, 9]
        );
    }

    #[test]
    fn reordering_follows_the_dendrogram() {
        let (data, _) = blobs(&corners(2), 100, 0.2, 6);
        let r = kmeans(
            &data,
            2,
            &KmeansOptions {
                n_clusters: 5,
                ..Default::default()
            },
        )
        .unwrap();
        let pts: Vec<f64> = r.centers.iter().map(|&v| v as f64).collect();
        assert_eq!(dendrogram_order(&pts, 2), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn one_dimension_keeps_lloyd_order_and_small_cases_work() {
        let data = [0.0f32, 0.1, 5.0, 5.1, 9.0];
        let r = kmeans(
            &data,
            1,
            &KmeansOptions {
                n_clusters: 5,
                ..Default::default()
            },
        )
        .unwrap();
        let mut pts = r.center_points.clone();
        pts.sort();
        assert_eq!(pts, vec![0, 1, 2, 3, 4]);
        assert_eq!(r.inertia, 0.0);
        for (i, &l) in r.labels.iter().enumerate() {
            assert_eq!(r.center_points[l], i);
        }
        let one = kmeans(
            &data,
            1,
            &KmeansOptions {
                n_clusters: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(one.labels, vec![0; 5]);
        assert_eq!(one.center_points, vec![2], "nearest row to the mean 3.84");
    }

    #[test]
    fn bad_input_is_refused() {
        let o = |k| KmeansOptions {
            n_clusters: k,
            ..Default::default()
        };
        let data = [0.0f32, 1.0, 2.0, 3.0];
        assert!(kmeans(&data, 2, &o(0)).is_err());
        assert!(kmeans(&data, 2, &o(3)).is_err());
        assert!(kmeans(&data, 3, &o(1)).is_err());
        assert!(kmeans(&data, 0, &o(1)).is_err());
        assert!(kmeans(&[], 2, &o(1)).is_err());
        let e = kmeans(&[0.0, f32::NAN, 1.0, 2.0], 2, &o(1)).unwrap_err();
        assert!(
            e.to_string().contains("row 0") && e.to_string().contains("NaN"),
            "{e}"
        );
        assert!(kmeans(&[0.0, f32::INFINITY], 1, &o(1)).is_err());
        let zero_iter = KmeansOptions {
            max_iter: 0,
            ..o(1)
        };
        assert!(kmeans(&data, 2, &zero_iter).is_err());
    }

    #[test]
    #[ignore = "timing: cargo test -p recovar-core --lib kmeans_timing -- --ignored --nocapture"]
    fn kmeans_timing() {
        let centres: Vec<Vec<f32>> = (0..25)
            .map(|b| (0..10).map(|d| ((b * 7 + d * 3) % 11) as f32).collect())
            .collect();
        let (data, _) = blobs(&centres, 2000, 1.0, 9);
        let t = std::time::Instant::now();
        let r = kmeans(&data, 10, &KmeansOptions::default()).unwrap();
        println!(
            "kmeans: 40 clusters of {} 10-D points: {:.2} s (inertia {:.1})",
            r.labels.len(),
            t.elapsed().as_secs_f64(),
            r.inertia
        );
    }
}
