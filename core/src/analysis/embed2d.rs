//! A 2-D UMAP embedding of latent coordinates for the analyze plots (algorithms.md §8 step 4:
//! `umap.UMAP(n_components=2, random_state=42)`), following umap-learn 0.5 step by step:
//!
//! 1. exact k nearest neighbours (Euclidean; each point is its own first neighbour);
//! 2. the fuzzy simplicial set: per point, `ρ` = distance to the nearest other point and `σ`
//!    found by bisection so that `Σ_j exp(−max(0, d_j − ρ)/σ) = log2 k` (64 steps, tolerance
//!    10⁻⁵, `σ` at least 10⁻³ of the mean neighbour distance); membership
//!    `exp(−max(0, d − ρ)/σ)`; symmetrized by the fuzzy union `P + Pᵀ − P∘Pᵀ`;
//! 3. the curve `1/(1 + a·d^{2b})` fitted to `min_dist` by Levenberg–Marquardt on scipy's
//!    `curve_fit` data (`a ≈ 1.577, b ≈ 0.895` for `min_dist` 0.1);
//! 4. initial layout: the two principal components, scaled to a largest magnitude of 10, with
//!    a little noise (standard deviation 10⁻⁴), then each axis mapped onto [0, 10]. (umap-learn
//!    starts from a spectral layout by default; PCA avoids an eigen-solver on the graph and
//!    gives the same kind of picture.)
//! 5. stochastic gradient descent over the edges, each edge sampled in proportion to its
//!    weight (weights below `max/n_epochs` dropped), 5 negative samples per positive one,
//!    gradients clipped to ±4, learning rate falling linearly from 1; `n_epochs` defaults to
//!    500 up to 10 000 points and 200 above.
//!
//! Determinism: the neighbour search runs in parallel but each point's neighbours are computed
//! on their own (ties broken by index); the descent runs sequentially in edge order with a
//! [`crate::rng::Rng`] stream, as umap-learn does when given a `random_state`. The result
//! depends only on the data and the options, not on the thread count. The layouts are not
//! umap-learn's (other random numbers, PCA start), only alike in kind.
//!
//! Cost: the neighbour search compares all pairs, `n²·dim` operations (about 4·10⁹ for 20 000
//! points in 10-D, a few seconds; 25 times that at 100 000 points, where a downsampled
//! embedding or `--skip-umap` is the better choice); the descent costs about
//! `n_epochs · 6 · (edges sampled per epoch)` updates.

use rayon::prelude::*;

use super::kmeans::check_rows;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Options of [`umap_2d`], defaulting to umap-learn's (with RECOVAR's seed 42).
#[derive(Clone, Debug, PartialEq)]
pub struct Umap2dOptions {
    /// Neighbours per point, the point itself included (umap-learn's `n_neighbors`).
    pub n_neighbors: usize,
    /// Smallest distance between embedded points (umap-learn's `min_dist`, with `spread` 1).
    pub min_dist: f64,
    /// Epochs of gradient descent; `None`: 500 up to 10 000 points, 200 above.
    pub n_epochs: Option<usize>,
    /// Seed of the initial noise and the negative sampling.
    pub seed: u64,
}

impl Default for Umap2dOptions {
    fn default() -> Self {
        Umap2dOptions {
            n_neighbors: 15,
            min_dist: 0.1,
            n_epochs: None,
            seed: 42,
        }
    }
}

/// Negative samples per positive sample.
const NEGATIVE_RATE: f32 = 5.0;
/// Gradient clip.
const CLIP: f32 = 4.0;
/// Candidates scanned at once by the neighbour search.
const KNN_BLOCK: usize = 512;

/// The 2-D UMAP embedding of the `n × dim` row-major `data` (see the module documentation).
///
/// Errors: bad shape or non-finite values (rows padded with NaN must be dropped first), fewer
/// than 3 points, `n_neighbors` < 2, `min_dist` negative or not finite, or `n_epochs` = 0.
pub fn umap_2d(data: &[f32], dim: usize, opts: &Umap2dOptions) -> Result<Vec<[f32; 2]>> {
    let n = check_rows(data, dim, "UMAP")?;
    if n < 3 {
        return Err(Error::invalid(format!(
            "UMAP needs at least 3 points, got {n}"
        )));
    }
    if opts.n_neighbors < 2 {
        return Err(Error::invalid(format!(
            "UMAP: n_neighbors must be at least 2, got {}",
            opts.n_neighbors
        )));
    }
    if !(opts.min_dist.is_finite() && opts.min_dist >= 0.0) {
        return Err(Error::invalid(format!(
            "UMAP: min_dist must be a non-negative number, got {}",
            opts.min_dist
        )));
    }
    let n_epochs = opts.n_epochs.unwrap_or(if n <= 10_000 { 500 } else { 200 });
    if n_epochs == 0 {
        return Err(Error::invalid("UMAP: n_epochs must be at least 1"));
    }
    // umap-learn truncates the neighbourhood to the data size.
    let k = opts.n_neighbors.min(n);
    let (knn_idx, knn_dist) = nearest_neighbors(data, dim, k);
    let graph = fuzzy_graph(&knn_idx, &knn_dist, n, k);
    let (a, b) = fit_ab(1.0, opts.min_dist);
    let mut rng = Rng::new(opts.seed);
    let mut emb = pca_init(data, dim, &mut rng)?;
    optimize(&mut emb, &graph, n_epochs, a as f32, b as f32, &mut rng);
    Ok(emb)
}

/// The `k` nearest neighbours of every row (itself first, at distance 0, then the others by
/// distance, lower index first on ties), as `n × k` indices and Euclidean distances.
pub(crate) fn nearest_neighbors(data: &[f32], dim: usize, k: usize) -> (Vec<usize>, Vec<f32>) {
    let n = data.len() / dim;
    // Coordinate-major copy, so that the distance loop runs over contiguous candidates.
    let mut cols = vec![0.0f32; n * dim];
    for (i, row) in data.chunks_exact(dim).enumerate() {
        for (d, &v) in row.iter().enumerate() {
            cols[d * n + i] = v;
        }
    }
    let rows: Vec<(Vec<usize>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map_init(
            || vec![0.0f32; KNN_BLOCK],
            |acc, i| {
                let q = &data[i * dim..(i + 1) * dim];
                // Sorted (squared distance, index) of the best k − 1 others.
                let mut best: Vec<(f32, usize)> = Vec::with_capacity(k);
                let mut start = 0;
                while start < n {
                    let len = KNN_BLOCK.min(n - start);
                    let acc = &mut acc[..len];
                    acc.fill(0.0);
                    for (d, &qd) in q.iter().enumerate() {
                        let col = &cols[d * n + start..d * n + start + len];
                        for (a, &c) in acc.iter_mut().zip(col) {
                            let t = c - qd;
                            *a += t * t;
                        }
                    }
                    for (off, &d2) in acc.iter().enumerate() {
                        let j = start + off;
                        if j == i || (best.len() == k - 1 && d2 >= best[k - 2].0) {
                            continue;
                        }
                        // Strictly smaller only: the earlier index keeps its place on ties.
                        let pos = best.partition_point(|&(b, _)| b <= d2);
                        best.insert(pos, (d2, j));
                        best.truncate(k - 1);
                    }
                    start += len;
                }
                let mut idx = Vec::with_capacity(k);
                let mut dist = Vec::with_capacity(k);
                idx.push(i);
                dist.push(0.0);
                for (d2, j) in best {
                    idx.push(j);
                    dist.push(d2.sqrt());
                }
                (idx, dist)
            },
        )
        .collect();
    let mut idx = Vec::with_capacity(n * k);
    let mut dist = Vec::with_capacity(n * k);
    for (i, d) in rows {
        idx.extend(i);
        dist.extend(d);
    }
    (idx, dist)
}

/// The symmetric fuzzy graph as edges `(i, j, weight)` sorted by `i` then `j`, both
/// directions present.
struct Graph {
    head: Vec<usize>,
    tail: Vec<usize>,
    weight: Vec<f32>,
}

/// umap-learn's `smooth_knn_dist`: per point, `(σ, ρ)`.
fn smooth_knn(knn_dist: &[f32], n: usize, k: usize) -> Vec<(f64, f64)> {
    const TOLERANCE: f64 = 1e-5;
    const MIN_SCALE: f64 = 1e-3;
    let target = (k as f64).log2();
    let mean_all = knn_dist.iter().map(|&d| d as f64).sum::<f64>() / knn_dist.len() as f64;
    (0..n)
        .map(|i| {
            let row: Vec<f64> = knn_dist[i * k..(i + 1) * k]
                .iter()
                .map(|&d| d as f64)
                .collect();
            let rho = row.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0);
            let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
            for _ in 0..64 {
                let psum: f64 = row[1..]
                    .iter()
                    .map(|&d| {
                        let t = d - rho;
                        if t > 0.0 {
                            (-t / mid).exp()
                        } else {
                            1.0
                        }
                    })
                    .sum();
                if (psum - target).abs() < TOLERANCE {
                    break;
                }
                if psum > target {
                    hi = mid;
                    mid = (lo + hi) / 2.0;
                } else {
                    lo = mid;
                    mid = if hi == f64::INFINITY {
                        mid * 2.0
                    } else {
                        (lo + hi) / 2.0
                    };
                }
            }
            let floor = if rho > 0.0 {
                MIN_SCALE * row.iter().sum::<f64>() / k as f64
            } else {
                MIN_SCALE * mean_all
            };
            (mid.max(floor), rho)
        })
        .collect()
}

/// Memberships of the directed kNN graph, then the fuzzy union `P + Pᵀ − P∘Pᵀ`.
fn fuzzy_graph(knn_idx: &[usize], knn_dist: &[f32], n: usize, k: usize) -> Graph {
    let params = smooth_knn(knn_dist, n, k);
    // (row, col, from P, from Pᵀ)
    let mut entries: Vec<(usize, usize, f64, f64)> = Vec::with_capacity(2 * n * k);
    for i in 0..n {
        let (sigma, rho) = params[i];
        for t in 0..k {
            let j = knn_idx[i * k + t];
            if j == i {
                continue;
            }
            let d = knn_dist[i * k + t] as f64 - rho;
            let v = if d <= 0.0 || sigma == 0.0 {
                1.0
            } else {
                (-d / sigma).exp()
            };
            entries.push((i, j, v, 0.0));
            entries.push((j, i, 0.0, v));
        }
    }
    entries.sort_by_key(|e| (e.0, e.1));
    let mut graph = Graph {
        head: Vec::new(),
        tail: Vec::new(),
        weight: Vec::new(),
    };
    let mut it = entries.into_iter().peekable();
    while let Some((i, j, mut p, mut pt)) = it.next() {
        while let Some(&(i2, j2, p2, pt2)) = it.peek() {
            if (i2, j2) != (i, j) {
                break;
            }
            p += p2;
            pt += pt2;
            it.next();
        }
        let w = p + pt - p * pt;
        if w > 0.0 {
            graph.head.push(i);
            graph.tail.push(j);
            graph.weight.push(w as f32);
        }
    }
    graph
}

/// `(a, b)` of the curve `1/(1 + a·x^{2b})` fitted by least squares to 1 below `min_dist` and
/// `exp(−(x − min_dist)/spread)` above, on 300 points of `[0, 3·spread]` (umap-learn's
/// `find_ab_params`, solved by Levenberg–Marquardt from `(1, 1)` as scipy's `curve_fit`).
pub(crate) fn fit_ab(spread: f64, min_dist: f64) -> (f64, f64) {
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist) / spread).exp()
            }
        })
        .collect();
    let cost = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let c = 1.0 / (1.0 + a * x.powf(2.0 * b));
                (c - y) * (c - y)
            })
            .sum()
    };
    let (mut a, mut b) = (1.0f64, 1.0f64);
    let mut lambda = 1e-3;
    let mut current = cost(a, b);
    for _ in 0..200 {
        // Normal equations JᵀJ δ = −Jᵀr of the residuals r = c − y.
        let (mut jaa, mut jab, mut jbb, mut ga, mut gb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            if x <= 0.0 {
                continue; // c = 1 whatever a and b: no gradient.
            }
            let p = x.powf(2.0 * b);
            let c = 1.0 / (1.0 + a * p);
            let da = -p * c * c;
            let db = -a * p * 2.0 * x.ln() * c * c;
            let r = c - y;
            jaa += da * da;
            jab += da * db;
            jbb += db * db;
            ga += da * r;
            gb += db * r;
        }
        let mut improved = false;
        for _ in 0..30 {
            let (m11, m22) = (jaa * (1.0 + lambda), jbb * (1.0 + lambda));
            let det = m11 * m22 - jab * jab;
            if det.abs() < 1e-300 {
                lambda *= 10.0;
                continue;
            }
            let step_a = -(m22 * ga - jab * gb) / det;
            let step_b = -(m11 * gb - jab * ga) / det;
            let (na, nb) = (a + step_a, b + step_b);
            let c = if na > 0.0 {
                cost(na, nb)
            } else {
                f64::INFINITY
            };
            if c < current {
                let done = (current - c) <= 1e-15 * current.max(1e-300);
                a = na;
                b = nb;
                current = c;
                lambda = (lambda / 10.0).max(1e-12);
                improved = !done;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (a, b)
}

/// umap-learn's PCA start: the first two principal components (each oriented so that its
/// largest loading is positive), scaled to a largest magnitude of 10, plus Gaussian noise of
/// standard deviation 10⁻⁴, then each axis mapped onto [0, 10].
fn pca_init(data: &[f32], dim: usize, rng: &mut Rng) -> Result<Vec<[f32; 2]>> {
    let n = data.len() / dim;
    let mut mean = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    let cov = faer::Mat::<f64>::from_fn(dim, dim, |a, b| {
        data.chunks_exact(dim)
            .map(|r| (r[a] as f64 - mean[a]) * (r[b] as f64 - mean[b]))
            .sum::<f64>()
    });
    let evd = cov
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| Error::invalid(format!("UMAP: PCA failed ({e:?})")))?;
    let s = evd.S().column_vector();
    let u = evd.U();
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for &c in order.iter().take(2) {
        let mut v: Vec<f64> = (0..dim).map(|r| u[(r, c)]).collect();
        let big = v
            .iter()
            .copied()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        comps.push(v);
    }
    let mut proj: Vec<[f64; 2]> = data
        .chunks_exact(dim)
        .map(|r| {
            let mut p = [0.0f64; 2];
            for (c, comp) in comps.iter().enumerate() {
                p[c] = r
                    .iter()
                    .zip(&mean)
                    .zip(comp)
                    .map(|((&v, m), w)| (v as f64 - m) * w)
                    .sum();
            }
            p
        })
        .collect();
    let largest = proj
        .iter()
        .flat_map(|p| p.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let scale = if largest > 0.0 { 10.0 / largest } else { 1.0 };
    for p in &mut proj {
        for v in p.iter_mut() {
            *v = *v * scale + 1e-4 * rng.normal();
        }
    }
    let mut out = vec![[0.0f32; 2]; n];
    for c in 0..2 {
        let lo = proj.iter().map(|p| p[c]).fold(f64::INFINITY, f64::min);
        let hi = proj.iter().map(|p| p[c]).fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        for (o, p) in out.iter_mut().zip(&proj) {
            o[c] = (10.0 * (p[c] - lo) / span) as f32;
        }
    }
    Ok(out)
}

fn clip(v: f32) -> f32 {
    v.clamp(-CLIP, CLIP)
}

/// A uniform index below `n` (multiply-shift; the bias, n/2⁶⁴, is immaterial here).
fn below(rng: &mut Rng, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// umap-learn's `optimize_layout_euclidean`, sequential.
fn optimize(emb: &mut [[f32; 2]], graph: &Graph, n_epochs: usize, a: f32, b: f32, rng: &mut Rng) {
    let n = emb.len();
    let w_max = graph.weight.iter().copied().fold(0.0f32, f32::max);
    let threshold = w_max / n_epochs as f32;
    // Edges kept and their sampling periods (in epochs): w_max / w.
    let edges: Vec<(usize, usize, f32)> = graph
        .head
        .iter()
        .zip(&graph.tail)
        .zip(&graph.weight)
        .filter(|(_, &w)| w >= threshold && w > 0.0)
        .map(|((&i, &j), &w)| (i, j, w_max / w))
        .collect();
    let mut next: Vec<f32> = edges.iter().map(|e| e.2).collect();
    let mut next_neg: Vec<f32> = edges.iter().map(|e| e.2 / NEGATIVE_RATE).collect();
    let two_ab = 2.0 * a * b;
    let two_b = 2.0 * b;
    let mut alpha = 1.0f32;
    for epoch in 0..n_epochs {
        let e = epoch as f32;
        for (idx, &(j, k, period)) in edges.iter().enumerate() {
            if next[idx] > e {
                continue;
            }
            let mut cur = emb[j];
            let other = emb[k];
            let dx = cur[0] - other[0];
            let dy = cur[1] - other[1];
            let d2 = dx * dx + dy * dy;
            if d2 > 0.0 {
                let pb = d2.powf(b);
                // −2ab·d^{2(b−1)} / (a·d^{2b} + 1), with d^{2(b−1)} = d^{2b}/d².
                let coeff = -two_ab * (pb / d2) / (a * pb + 1.0);
                let gx = clip(coeff * dx) * alpha;
                let gy = clip(coeff * dy) * alpha;
                cur[0] += gx;
                cur[1] += gy;
                emb[k][0] -= gx;
                emb[k][1] -= gy;
            }
            next[idx] += period;
            let neg_period = period / NEGATIVE_RATE;
            let n_neg = ((e - next_neg[idx]) / neg_period).max(0.0) as usize;
            for _ in 0..n_neg {
                let m = below(rng, n);
                let other = if m == j { cur } else { emb[m] };
                let dx = cur[0] - other[0];
                let dy = cur[1] - other[1];
                let d2 = dx * dx + dy * dy;
                if d2 > 0.0 {
                    let coeff = two_b / ((0.001 + d2) * (a * d2.powf(b) + 1.0));
                    cur[0] += clip(coeff * dx) * alpha;
                    cur[1] += clip(coeff * dy) * alpha;
                }
            }
            next_neg[idx] += n_neg as f32 * neg_period;
            emb[j] = cur;
        }
        alpha = 1.0 - epoch as f32 / n_epochs as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian clusters of `per` points in `dim` dimensions, `gap` apart along the
    /// diagonal, interleaved (even rows in cluster 0).
    fn two_clusters(per: usize, dim: usize, gap: f64, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(2 * per * dim);
        for i in 0..2 * per {
            let shift = if i % 2 == 0 {
                0.0
            } else {
                gap / (dim as f64).sqrt()
            };
            for _ in 0..dim {
                out.push((shift + rng.normal()) as f32);
            }
        }
        out
    }

    /// Fraction of points whose nearest embedded neighbour is in their own cluster, and the
    /// distance between the cluster means over the mean distance of points to their mean.
    fn separation(emb: &[[f32; 2]]) -> (f64, f64) {
        let n = emb.len();
        let d2 = |p: &[f32; 2], q: &[f32; 2]| {
            ((p[0] - q[0]) as f64).powi(2) + ((p[1] - q[1]) as f64).powi(2)
        };
        let mut same = 0;
        for i in 0..n {
            let j = (0..n)
                .filter(|&j| j != i)
                .min_by(|&x, &y| d2(&emb[i], &emb[x]).total_cmp(&d2(&emb[i], &emb[y])))
                .unwrap();
            if i % 2 == j % 2 {
                same += 1;
            }
        }
        let mut means = [[0.0f32; 2]; 2];
        for (i, p) in emb.iter().enumerate() {
            for c in 0..2 {
                means[i % 2][c] += p[c] / (n / 2) as f32;
            }
        }
        let spread: f64 = emb
            .iter()
            .enumerate()
            .map(|(i, p)| d2(p, &means[i % 2]).sqrt())
            .sum::<f64>()
            / n as f64;
        (
            same as f64 / n as f64,
            d2(&means[0], &means[1]).sqrt() / spread,
        )
    }

    #[test]
    fn separated_clusters_stay_separated() {
        let data = two_clusters(200, 10, 12.0, 1);
        let emb = umap_2d(&data, 10, &Umap2dOptions::default()).unwrap();
        assert_eq!(emb.len(), 400);
        assert!(emb.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
        let (purity, ratio) = separation(&emb);
        assert_eq!(purity, 1.0);
        assert!(ratio > 4.0, "cluster distance / spread = {ratio}");
        // A single blob does not look like two clusters.
        let blob = two_clusters(200, 10, 0.0, 1);
        let emb = umap_2d(&blob, 10, &Umap2dOptions::default()).unwrap();
        let (_, ratio) = separation(&emb);
        assert!(ratio < 1.0, "one blob: {ratio}");
    }

    #[test]
    fn deterministic_for_a_seed_whatever_the_threads() {
        let data = two_clusters(150, 6, 8.0, 2);
        let opts = Umap2dOptions {
            n_epochs: Some(60),
            ..Default::default()
        };
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| umap_2d(&data, 6, &opts).unwrap())
        };
        let a = run(1);
        assert_eq!(a, run(2));
        assert_eq!(a, run(4));
        let other = umap_2d(&data, 6, &Umap2dOptions { seed: 1, ..opts }).unwrap();
        assert_ne!(a, other);
    }

    #[test]
    fn curve_parameters_match_umap_learn() {
        // umap-learn: find_ab_params(1.0, 0.1) = (1.5769..., 0.8950...);
        // find_ab_params(1.0, 0.5) = (0.5830..., 1.3341...).
        let (a, b) = fit_ab(1.0, 0.1);
        assert!(
            (a - 1.577).abs() < 2e-3 && (b - 0.895).abs() < 2e-3,
            "{a} {b}"
        );
        let (a, b) = fit_ab(1.0, 0.5);
        assert!(
            (a - 0.583).abs() < 2e-3 && (b - 1.334).abs() < 2e-3,
            "{a} {b}"
        );
    }

    #[test]
    fn neighbours_are_exact_and_sigma_solves_the_target() {
        // Points on a line at 0, 1, 3, 6, 10, 15: neighbours by distance, self first.
        let data = [0.0f32, 1.0, 3.0, 6.0, 10.0, 15.0];
        let (idx, dist) = nearest_neighbors(&data, 1, 3);
        assert_eq!(&idx[..3], &[0, 1, 2]);
        assert_eq!(&idx[9..12], &[3, 2, 4]);
        assert_eq!(&dist[9..12], &[0.0, 3.0, 4.0]);
        // Equal distances: the lower index first.
        let (idx, _) = nearest_neighbors(&[0.0, -1.0, 1.0], 1, 3);
        assert_eq!(&idx[..3], &[0, 1, 2]);
        // Σ_j exp(−(d_j − ρ)/σ) = log2 k over the neighbours but the point itself.
        let data: Vec<f32> = two_clusters(40, 3, 0.0, 3);
        let k = 8;
        let (_, dist) = nearest_neighbors(&data, 3, k);
        for (i, &(sigma, rho)) in smooth_knn(&dist, 80, k).iter().enumerate() {
            assert_eq!(rho, dist[i * k + 1] as f64);
            let s: f64 = dist[i * k + 1..(i + 1) * k]
                .iter()
                .map(|&d| (-(d as f64 - rho).max(0.0) / sigma).exp())
                .sum();
            assert!((s - 3.0).abs() < 1e-4, "row {i}: {s}");
        }
    }

    #[test]
    fn graph_is_a_symmetric_fuzzy_union() {
        let data = two_clusters(30, 4, 5.0, 4);
        let k = 6;
        let (idx, dist) = nearest_neighbors(&data, 4, k);
        let g = fuzzy_graph(&idx, &dist, 60, k);
        let mut w = std::collections::HashMap::new();
        for ((&i, &j), &v) in g.head.iter().zip(&g.tail).zip(&g.weight) {
            assert_ne!(i, j);
            assert!(v > 0.0 && v <= 1.0);
            w.insert((i, j), v);
        }
        for (&(i, j), &v) in &w {
            assert_eq!(w.get(&(j, i)), Some(&v), "edge ({i}, {j})");
        }
        // Each point's nearest other neighbour has membership 1 in P, so weight 1.
        for i in 0..60 {
            assert_eq!(w[&(i, idx[i * k + 1])], 1.0);
        }
        assert!(g.head.windows(2).all(|p| p[0] <= p[1]));
    }

    #[test]
    fn bad_input_is_refused() {
        let o = Umap2dOptions::default();
        assert!(umap_2d(&[0.0, 1.0], 1, &o).is_err());
        assert!(umap_2d(&[0.0, 1.0, f32::NAN, 2.0, 3.0, 4.0], 2, &o).is_err());
        let data = two_clusters(5, 2, 1.0, 5);
        let bad = |f: fn(&mut Umap2dOptions)| {
            let mut o = Umap2dOptions::default();
            f(&mut o);
            umap_2d(&data, 2, &o).is_err()
        };
        assert!(bad(|o| o.n_neighbors = 1));
        assert!(bad(|o| o.min_dist = -1.0));
        assert!(bad(|o| o.n_epochs = Some(0)));
        // More neighbours than points: truncated, still an embedding.
        let emb = umap_2d(&data, 2, &Umap2dOptions::default()).unwrap();
        assert_eq!(emb.len(), 10);
    }

    #[test]
    #[ignore = "timing: cargo test -p recovar-core --lib umap_timing -- --ignored --nocapture"]
    fn umap_timing() {
        for n in [5_000usize, 20_000] {
            let data = two_clusters(n / 2, 10, 6.0, 9);
            let t = std::time::Instant::now();
            let (idx, _) = nearest_neighbors(&data, 10, 15);
            let knn = t.elapsed().as_secs_f64();
            drop(idx);
            let t = std::time::Instant::now();
            let emb = umap_2d(&data, 10, &Umap2dOptions::default()).unwrap();
            println!(
                "umap_2d: {n} 10-D points: {:.2} s (of which kNN {knn:.2} s); separation {:?}",
                t.elapsed().as_secs_f64(),
                separation_fast(&emb)
            );
        }
    }

    /// Cluster-mean distance over spread only (the timing runs are too large for 1-NN).
    fn separation_fast(emb: &[[f32; 2]]) -> f64 {
        let n = emb.len();
        let mut means = [[0.0f64; 2]; 2];
        for (i, p) in emb.iter().enumerate() {
            for c in 0..2 {
                means[i % 2][c] += p[c] as f64 / (n / 2) as f64;
            }
        }
        let spread: f64 = emb
            .iter()
            .enumerate()
            .map(|(i, p)| {
                ((p[0] as f64 - means[i % 2][0]).powi(2) + (p[1] as f64 - means[i % 2][1]).powi(2))
                    .sqrt()
            })
            .sum::<f64>()
            / n as f64;
        ((means[0][0] - means[1][0]).powi(2) + (means[0][1] - means[1][1]).powi(2)).sqrt() / spread
    }
}
