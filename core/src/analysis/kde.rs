//! Gaussian kernel density of latent coordinates on a regular grid (algorithms.md §8 step 2,
//! §9 step 3): `scipy.stats.gaussian_kde(zs.T, 'silverman')` evaluated at the nodes
//! `linspace(lo_k, hi_k, M)` of each axis, bounds the [1st, 99th] percentiles, scaled so that
//! the largest value is 1.
//!
//! The kernel is the full covariance of the data (numpy `cov`, ddof 1) times the square of
//! Silverman's factor `(n·(d+2)/4)^(−1/(d+4))`. Evaluating it directly costs `n·M^d` kernel
//! values (10¹¹ for 20 000 points on 50⁴ nodes), so the sum is computed as a convolution:
//!
//! 1. the points are spread onto a regular grid by cubic B-spline binning (each point's unit
//!    weight shared among the 4^d nodes around it), the grid reaching 4 kernel standard
//!    deviations (plus two nodes) beyond the bounds on every side; points farther out are
//!    dropped, each of them adding less than `e^−8 ≈ 3·10⁻⁴` of its own peak to any node;
//! 2. the binned grid is convolved with the Gaussian by FFT, multiplying by the kernel's
//!    exact Fourier transform `exp(−2π² νᵀHν)` divided by the transfer function of the
//!    binning `Π sinc⁴(π ν_k g_k)` (which undoes the blur binning adds; what remains is
//!    aliasing, of relative size about `(g/σ)⁴/200` for one point and averaging out over
//!    many); grid lengths are odd, so the product stays Hermitian and the result real;
//! 3. the values at the output nodes are read off. How fast the kernel varies along an axis
//!    is its standard deviation on lines parallel to the axis, `σ_k = 1/√(H⁻¹)_kk`. When
//!    `σ_k` is 1.5 to 3 output steps the FFT grid contains the output nodes; a narrower
//!    kernel gets a grid 2, 3, ... times finer (the output nodes every few nodes), a wider
//!    one a coarser grid (`σ_k` = 3 steps) from which the output nodes are interpolated by
//!    Keys cubic convolution.
//!
//! Accuracy: against a direct evaluation, the largest error relative to the maximum is about
//! 2·10⁻⁴ when the output nodes are FFT nodes and about 10⁻³ through the interpolated coarse
//! grid (the tests check 3·10⁻⁴ and 1.2·10⁻³ on correlated 1-D to 4-D mixtures). If a finer
//! grid would not fit in memory (a kernel far narrower than the output steps in 4-D:
//! strongly correlated coordinates or tens of millions of points), coarser fallbacks are
//! used and the result is a slightly smoothed density. The FFT runs in single precision, so
//! values below about 10⁻⁶ of the maximum are rounding noise (negative ones are set to 0).
//!
//! Cost: the FFT grid has `Π (M_k + 2·pad_k)` nodes, about 77⁴ ≈ 3.5·10⁷ for 50⁴ output
//! nodes, at most 2^26, and needs about 8 bytes a node while the FFT runs; binning costs
//! `4^d` operations a point.

use std::sync::Arc;

use num_complex::{Complex, Complex32};
use rayon::prelude::*;
use realfft::RealFftPlanner;
use rustfft::{Fft, FftNum, FftPlanner};

use super::kmeans::check_rows;
use crate::error::{Error, Result};

/// Most nodes of the FFT grid (and of the output grid).
const MAX_CELLS: usize = 1 << 26;

/// Kernel reach, in kernel standard deviations, covered by the padding.
const REACH: f64 = 4.0;

/// Columns gathered at once by the strided FFTs.
const COLUMNS: usize = 16;

/// A density on the regular grid `linspace(bounds[k][0], bounds[k][1], n_grid)` of each of
/// `dim` axes.
#[derive(Clone, Debug, PartialEq)]
pub struct DensityGrid {
    /// Number of axes.
    pub dim: usize,
    /// Nodes per axis (≥ 2).
    pub n_grid: usize,
    /// `[first node, last node]` of each axis (RECOVAR's `latent_space_bounds`).
    pub bounds: Vec<[f32; 2]>,
    /// `n_grid^dim` values, row-major with axis 0 slowest: the value at node
    /// `(i_0, ..., i_{d−1})` is `values[((i_0·M + i_1)·M + ...)·M + i_{d−1}]`.
    pub values: Vec<f32>,
}

impl DensityGrid {
    /// Distance between neighbouring nodes along `axis`.
    pub fn spacing(&self, axis: usize) -> f64 {
        let [lo, hi] = self.bounds[axis];
        (hi as f64 - lo as f64) / (self.n_grid - 1) as f64
    }

    /// Coordinate of node `i` along `axis`.
    pub fn node(&self, axis: usize, i: usize) -> f32 {
        (self.bounds[axis][0] as f64 + i as f64 * self.spacing(axis)) as f32
    }

    /// Flat index into `values` of the node with the given per-axis indices.
    pub fn index(&self, node: &[usize]) -> usize {
        node.iter().fold(0, |acc, &i| acc * self.n_grid + i)
    }

    /// Fractional grid coordinates of `point` (RECOVAR's `z_to_grid`): `(z_k − lo_k) /
    /// (hi_k − lo_k) · (M − 1)` for the first `dim` coordinates (further ones are ignored).
    pub fn to_grid(&self, point: &[f32]) -> Vec<f64> {
        (0..self.dim.min(point.len()))
            .map(|k| (point[k] as f64 - self.bounds[k][0] as f64) / self.spacing(k))
            .collect()
    }

    /// The node nearest `point` (grid coordinates rounded, as `z_to_grid(…, to_int=True)`),
    /// or `None` if `point` has fewer than `dim` coordinates or lies more than half a step
    /// outside the grid.
    pub fn cell_of(&self, point: &[f32]) -> Option<Vec<usize>> {
        if point.len() < self.dim {
            return None;
        }
        self.to_grid(point)
            .into_iter()
            .map(|u| {
                let r = u.round();
                (r >= 0.0 && r < self.n_grid as f64).then_some(r as usize)
            })
            .collect()
    }

    /// The density at `point`, interpolated multilinearly between the nodes, or `None` if
    /// `point` has fewer than `dim` coordinates or lies outside the bounds.
    pub fn value_at(&self, point: &[f32]) -> Option<f32> {
        if point.len() < self.dim {
            return None;
        }
        let m = self.n_grid;
        let mut base = Vec::with_capacity(self.dim);
        let mut frac = Vec::with_capacity(self.dim);
        for u in self.to_grid(point) {
            if !(u >= 0.0 && u <= (m - 1) as f64) {
                return None;
            }
            let i = (u.floor() as usize).min(m - 2);
            base.push(i);
            frac.push(u - i as f64);
        }
        let mut sum = 0.0f64;
        for corner in 0..1usize << self.dim {
            let mut w = 1.0;
            let mut idx = 0;
            for k in 0..self.dim {
                let up = (corner >> k) & 1;
                w *= if up == 1 { frac[k] } else { 1.0 - frac[k] };
                idx = idx * m + base[k] + up;
            }
            if w > 0.0 {
                sum += w * self.values[idx] as f64;
            }
        }
        Some(sum as f32)
    }

    /// The density summed over every axis but `a` and `b` (RECOVAR's `sum_over_other`), as
    /// `M × M` values with `out[j·M + i]` at node `i` along `a` and node `j` along `b`
    /// (the layout of [`crate::plot::DensityMap`] with `a` across and `b` up).
    ///
    /// Panics if `a` or `b` is not an axis or `a == b`.
    pub fn marginal_2d(&self, a: usize, b: usize) -> Vec<f32> {
        self.project(a, b, |_, _| true)
    }

    /// The density on the plane through the middle node `M / 2` of every axis but `a` and
    /// `b` (RECOVAR's `half_slice_other`), laid out as [`DensityGrid::marginal_2d`].
    ///
    /// Panics if `a` or `b` is not an axis or `a == b`.
    pub fn slice_2d(&self, a: usize, b: usize) -> Vec<f32> {
        let mid = self.n_grid / 2;
        self.project(a, b, |k, i| i == mid || k == a || k == b)
    }

    fn project(&self, a: usize, b: usize, keep: impl Fn(usize, usize) -> bool) -> Vec<f32> {
        assert!(a < self.dim && b < self.dim && a != b, "axes {a}, {b}");
        let m = self.n_grid;
        let mut out = vec![0.0f64; m * m];
        let mut node = vec![0usize; self.dim];
        for &v in &self.values {
            if (0..self.dim).all(|k| keep(k, node[k])) {
                out[node[b] * m + node[a]] += v as f64;
            }
            // Next node, last axis fastest.
            for k in (0..self.dim).rev() {
                node[k] += 1;
                if node[k] < m {
                    break;
                }
                node[k] = 0;
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }
}

/// RECOVAR's analyze density: a Gaussian KDE (Silverman bandwidth) of the first `use_dims`
/// coordinates of the `n × dim` row-major `data`, on `n_grid` nodes per axis between the
/// 1st and 99th percentiles, scaled to a maximum of 1. RECOVAR uses `n_grid` = 50 and
/// `use_dims` = `min(4, zdim)`. See the module documentation for the method and its error.
///
/// Errors: bad shape or non-finite values (see [`super::kmeans::kmeans`]), `use_dims` not in
/// `1..=dim`, `n_grid` < 2, an axis without spread between its percentiles, too few points
/// for a non-singular covariance, or a grid of more than 2^26 nodes.
pub fn kde_grid(data: &[f32], dim: usize, n_grid: usize, use_dims: usize) -> Result<DensityGrid> {
    let bounds = percentile_bounds(data, dim, use_dims, 1.0)?;
    kde_on_grid(data, dim, &bounds, n_grid)
}

/// [`kde_grid`] with given bounds: the KDE of the first `bounds.len()` coordinates on
/// `linspace(bounds[k][0], bounds[k][1], n_grid)` per axis, scaled to a maximum of 1.
pub fn kde_on_grid(
    data: &[f32],
    dim: usize,
    bounds: &[[f32; 2]],
    n_grid: usize,
) -> Result<DensityGrid> {
    let d = bounds.len();
    let n = check_dims(data, dim, d)?;
    if n_grid < 2 {
        return Err(Error::invalid(format!(
            "KDE: a grid needs at least 2 nodes per axis, got {n_grid}"
        )));
    }
    for (k, &[lo, hi]) in bounds.iter().enumerate() {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::invalid(format!(
                "KDE: bounds of axis {k} ({lo}, {hi}) must be finite and increasing"
            )));
        }
    }
    let out_cells = n_grid.checked_pow(d as u32).filter(|&c| c <= MAX_CELLS);
    let Some(out_cells) = out_cells else {
        return Err(Error::invalid(format!(
            "KDE: {n_grid}^{d} grid nodes is more than {MAX_CELLS}"
        )));
    };
    let h = kde_covariance(data, dim, d)?;
    let points: Vec<f64> = data
        .chunks_exact(dim)
        .flat_map(|r| r[..d].iter().map(|&v| v as f64))
        .collect();
    // The padding must hold the kernel's extent along each axis (its marginal spread); how
    // finely an axis must be sampled depends on how fast the kernel varies along lines
    // parallel to it (its conditional spread, smaller for correlated coordinates).
    let sigma: Vec<f64> = (0..d).map(|k| h[k * d + k].sqrt()).collect();
    let sigma_line = conditional_sd(&h, d)?;
    let ranges: Vec<(f64, f64)> = bounds.iter().map(|b| (b[0] as f64, b[1] as f64)).collect();
    // Finest first; each fallback trades accuracy for memory.
    let tries = [
        (3.0, 1.5),
        (3.0, 0.0),
        (2.5, 0.0),
        (2.0, 0.0),
        (1.5, 0.0),
        (1.0, 0.0),
    ];
    let plans = tries
        .iter()
        .map(|&(coarse, fine)| {
            (0..d)
                .map(|k| {
                    let spread = (sigma[k], sigma_line[k]);
                    AxisPlan::new(ranges[k], n_grid, spread, coarse, fine)
                })
                .collect::<Vec<_>>()
        })
        .find(|p| {
            p.iter()
                .try_fold(1usize, |acc, a| acc.checked_mul(a.len))
                .is_some_and(|c| c <= MAX_CELLS)
        })
        .ok_or_else(|| {
            Error::invalid(format!(
                "KDE: the kernel is too narrow for a {n_grid}^{d} grid to fit in memory; use fewer nodes"
            ))
        })?;
    let values = convolve(&points, n, &plans, &h)?;
    debug_assert_eq!(values.len(), out_cells);
    let max = values.iter().cloned().fold(0.0f64, f64::max);
    if max.is_nan() || max <= 0.0 {
        return Err(Error::invalid(
            "KDE: no density inside the bounds (all points are far outside)",
        ));
    }
    Ok(DensityGrid {
        dim: d,
        n_grid,
        bounds: bounds.to_vec(),
        values: values.iter().map(|&v| (v.max(0.0) / max) as f32).collect(),
    })
}

/// The `[q, 100 − q]` percentiles (numpy's linear interpolation) of each of the first
/// `use_dims` coordinates: RECOVAR's `compute_latent_space_bounds(zs, percentile=q)`.
///
/// Errors: bad shape or values, `use_dims` not in `1..=dim`, `q` outside [0, 50), or an axis
/// whose two percentiles are equal.
pub fn percentile_bounds(
    data: &[f32],
    dim: usize,
    use_dims: usize,
    q: f64,
) -> Result<Vec<[f32; 2]>> {
    let n = check_dims(data, dim, use_dims)?;
    if !(0.0..50.0).contains(&q) {
        return Err(Error::invalid(format!("percentile {q} must be in [0, 50)")));
    }
    (0..use_dims)
        .map(|k| {
            let mut col: Vec<f64> = (0..n).map(|i| data[i * dim + k] as f64).collect();
            col.sort_by(f64::total_cmp);
            let pick = |p: f64| crate::stats::percentile_sorted(&col, p).unwrap_or(f64::NAN);
            let (lo, hi) = (pick(q) as f32, pick(100.0 - q) as f32);
            if lo < hi {
                Ok([lo, hi])
            } else {
                Err(Error::invalid(format!(
                    "KDE: coordinate {k} has no spread between its {q} and {} percentiles ({lo})",
                    100.0 - q
                )))
            }
        })
        .collect()
}

/// The kernel covariance of `gaussian_kde(…, 'silverman')` for the first `use_dims`
/// coordinates: the data covariance (ddof 1) times `(n·(d+2)/4)^(−2/(d+4))`, `d × d`
/// row-major.
///
/// Errors: bad shape or values, `use_dims` not in `1..=dim`, or a singular covariance (too
/// few points, a constant or duplicated coordinate).
pub fn kde_covariance(data: &[f32], dim: usize, use_dims: usize) -> Result<Vec<f64>> {
    let n = check_dims(data, dim, use_dims)?;
    let d = use_dims;
    if n <= d {
        return Err(Error::invalid(format!(
            "KDE: {n} points cannot give a {d}-dimensional covariance"
        )));
    }
    let mut mean = vec![0.0f64; d];
    for row in data.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    let mut cov = vec![0.0f64; d * d];
    for row in data.chunks_exact(dim) {
        for a in 0..d {
            let da = row[a] as f64 - mean[a];
            for b in 0..=a {
                cov[a * d + b] += da * (row[b] as f64 - mean[b]);
            }
        }
    }
    let factor = (n as f64 * (d as f64 + 2.0) / 4.0).powf(-1.0 / (d as f64 + 4.0));
    let scale = factor * factor / (n - 1) as f64;
    for a in 0..d {
        for b in 0..=a {
            let v = cov[a * d + b] * scale;
            cov[a * d + b] = v;
            cov[b * d + a] = v;
        }
    }
    if cholesky(&cov, d).is_none() {
        return Err(Error::invalid(format!(
            "KDE: the covariance of the first {d} coordinates is singular \
             (a constant or duplicated coordinate?)"
        )));
    }
    Ok(cov)
}

fn check_dims(data: &[f32], dim: usize, use_dims: usize) -> Result<usize> {
    let n = check_rows(data, dim, "KDE")?;
    if use_dims == 0 || use_dims > dim {
        return Err(Error::invalid(format!(
            "KDE: cannot use {use_dims} of {dim} coordinates"
        )));
    }
    Ok(n)
}

/// `1/√(H⁻¹)_kk` for each axis `k`: the standard deviation of the kernel along lines
/// parallel to axis `k`.
fn conditional_sd(h: &[f64], d: usize) -> Result<Vec<f64>> {
    let l = cholesky(h, d).ok_or_else(|| Error::invalid("KDE: singular kernel covariance"))?;
    // Columns of L⁻¹ by forward substitution; (H⁻¹)_kk = Σ_i (L⁻¹)_ik².
    Ok((0..d)
        .map(|k| {
            let mut y = vec![0.0f64; d];
            for i in k..d {
                let rhs = if i == k { 1.0 } else { 0.0 };
                let s: f64 = (k..i).map(|j| l[i * d + j] * y[j]).sum();
                y[i] = (rhs - s) / l[i * d + i];
            }
            1.0 / y.iter().map(|v| v * v).sum::<f64>().sqrt()
        })
        .collect())
}

/// Lower Cholesky factor of the symmetric positive definite `a` (`d × d`), or `None`.
pub(crate) fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = a[i * d + j] - (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum::<f64>();
            if i == j {
                // Relative test: rounding leaves a tiny positive pivot on singular input.
                if !(s.is_finite() && s > 1e-10 * a[i * d + i]) {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// How one axis of the output grid is computed: the FFT grid along it (node `i` at
/// `origin + i·g`, `len` nodes) and, per output node, the FFT nodes and weights that give it.
#[derive(Clone, Debug)]
struct AxisPlan {
    origin: f64,
    g: f64,
    len: usize,
    taps: Vec<Vec<(usize, f64)>>,
}

impl AxisPlan {
    /// The plan for `m` output nodes over `[lo, hi]` and a kernel of marginal and
    /// conditional standard deviations `(sigma, line)` along the axis: a coarser grid if
    /// `line` is more than `coarse` output steps, a finer one if it is less than `fine`.
    fn new(
        (lo, hi): (f64, f64),
        m: usize,
        (sigma, line): (f64, f64),
        coarse: f64,
        fine: f64,
    ) -> AxisPlan {
        let h = (hi - lo) / (m - 1) as f64;
        let ratio = line / h;
        if ratio > coarse {
            let steps = ((hi - lo) * coarse / line).ceil().max(1.0) as usize;
            let g = (hi - lo) / steps as f64;
            let pad = (REACH * sigma / g).ceil() as usize + 2;
            let len = odd_fft_len(steps + 1 + 2 * pad);
            let origin = lo - pad as f64 * g;
            let taps = (0..m)
                .map(|j| {
                    let u = (j as f64 * h + lo - origin) / g;
                    let i = u.floor();
                    let w = keys_weights(u - i);
                    let i = i as usize;
                    (0..4).map(|t| (i + t - 1, w[t])).collect()
                })
                .collect();
            AxisPlan {
                origin,
                g,
                len,
                taps,
            }
        } else {
            let r = if ratio < fine {
                (fine / ratio).ceil() as usize
            } else {
                1
            };
            let g = h / r as f64;
            let pad = (REACH * sigma / g).ceil() as usize + 2;
            let len = odd_fft_len((m - 1) * r + 1 + 2 * pad);
            let taps = (0..m).map(|j| vec![(pad + j * r, 1.0)]).collect();
            AxisPlan {
                origin: lo - pad as f64 * g,
                g,
                len,
                taps,
            }
        }
    }

    /// First and one-past-last FFT node any output node uses.
    fn used(&self) -> (usize, usize) {
        let all = self.taps.iter().flatten().map(|t| t.0);
        let lo = all.clone().min().unwrap_or(0);
        let hi = all.max().map_or(0, |v| v + 1);
        (lo, hi)
    }
}

/// Keys' cubic convolution weights (a = −0.5) of the nodes `i−1, i, i+1, i+2` for a point
/// at `i + t`.
fn keys_weights(t: f64) -> [f64; 4] {
    let (t2, t3) = (t * t, t * t * t);
    [
        -0.5 * t3 + t2 - 0.5 * t,
        1.5 * t3 - 2.5 * t2 + 1.0,
        -1.5 * t3 + 2.0 * t2 + 0.5 * t,
        0.5 * t3 - 0.5 * t2,
    ]
}

/// Cubic B-spline weights of the nodes `i−1, i, i+1, i+2` for a point at `i + t`.
fn bspline_weights(t: f64) -> [f64; 4] {
    let s = 1.0 - t;
    let t2 = t * t;
    let t3 = t2 * t;
    [
        s * s * s / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    ]
}

/// The smallest odd length ≥ `min` whose prime factors are at most 13 (fast FFT sizes; odd
/// so that no Nyquist term breaks the Hermitian symmetry of the product).
fn odd_fft_len(min: usize) -> usize {
    let mut n = min.max(1) | 1;
    loop {
        let mut r = n;
        for p in [3, 5, 7, 11, 13] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        if r == 1 {
            return n;
        }
        n += 2;
    }
}

/// The unnormalized KDE at the output nodes of `plans` (see the module documentation).
fn convolve(points: &[f64], n: usize, plans: &[AxisPlan], h: &[f64]) -> Result<Vec<f64>> {
    let d = plans.len();
    let mut shape: Vec<usize> = plans.iter().map(|p| p.len).collect();
    let total: usize = shape.iter().product();
    let mut strides = vec![1usize; d];
    for k in (0..d - 1).rev() {
        strides[k] = strides[k + 1] * shape[k + 1];
    }

    // 1. Cubic B-spline binning, sequential: a fixed order of additions.
    let mut binned = vec![0.0f32; total];
    let mut base = vec![0usize; d];
    let mut weights = vec![[0.0f64; 4]; d];
    'points: for p in points.chunks_exact(d).take(n) {
        for k in 0..d {
            let u = (p[k] - plans[k].origin) / plans[k].g;
            // The point spreads to nodes floor(u) − 1 ..= floor(u) + 2.
            if !(u >= 1.0 && u < (plans[k].len - 2) as f64) {
                continue 'points;
            }
            let i = u.floor();
            base[k] = i as usize - 1;
            weights[k] = bspline_weights(u - i);
        }
        for corner in 0..1usize << (2 * d) {
            let mut w = 1.0f64;
            let mut idx = 0;
            for k in 0..d {
                let t = (corner >> (2 * k)) & 3;
                w *= weights[k][t];
                idx += (base[k] + t) * strides[k];
            }
            binned[idx] += w as f32;
        }
    }

    // 2. Forward FFT: real to complex along the last axis, then the others.
    let last = shape[d - 1];
    let half = last / 2 + 1;
    let mut real_planner = RealFftPlanner::<f32>::new();
    let r2c = real_planner.plan_fft_forward(last);
    let c2r = real_planner.plan_fft_inverse(last);
    let mut spec = vec![Complex32::new(0.0, 0.0); total / last * half];
    binned
        .par_chunks_mut(last)
        .zip(spec.par_chunks_mut(half))
        .try_for_each_init(
            || r2c.make_scratch_vec(),
            |scratch, (row, out)| r2c.process_with_scratch(row, out, scratch),
        )
        .map_err(|e| Error::invalid(format!("KDE: FFT failed: {e}")))?;
    drop(binned);
    shape[d - 1] = half;
    let mut planner = FftPlanner::<f32>::new();
    for (axis, plan) in plans.iter().enumerate().take(d - 1) {
        let fft = planner.plan_fft_forward(plan.len);
        fft_axis(&mut spec, &shape, axis, &fft);
    }

    // 3. Multiply by the kernel's transform over the binning's transfer function sinc⁴.
    let freqs: Vec<Vec<f64>> = plans
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let count = if k == d - 1 { half } else { p.len };
            (0..count)
                .map(|i| {
                    let f = if i <= p.len / 2 {
                        i as f64
                    } else {
                        i as f64 - p.len as f64
                    };
                    f / (p.len as f64 * p.g)
                })
                .collect()
        })
        .collect();
    let inv_transfer: Vec<Vec<f64>> = plans
        .iter()
        .zip(&freqs)
        .map(|(p, fs)| {
            fs.iter()
                .map(|&f| {
                    let x = std::f64::consts::PI * f * p.g;
                    if x == 0.0 {
                        1.0
                    } else {
                        (x / x.sin()).powi(4)
                    }
                })
                .collect()
        })
        .collect();
    let two_pi2 = 2.0 * std::f64::consts::PI * std::f64::consts::PI;
    spec.par_chunks_mut(half)
        .enumerate()
        .for_each(|(row, vals)| {
            let mut nu = vec![0.0f64; d];
            let mut gain = 1.0;
            let mut rest = row;
            for k in (0..d - 1).rev() {
                let i = rest % shape[k];
                rest /= shape[k];
                nu[k] = freqs[k][i];
                gain *= inv_transfer[k][i];
            }
            for (j, v) in vals.iter_mut().enumerate() {
                nu[d - 1] = freqs[d - 1][j];
                let mut q = 0.0;
                for a in 0..d {
                    for b in 0..d {
                        q += nu[a] * h[a * d + b] * nu[b];
                    }
                }
                let f = (-two_pi2 * q).exp() * gain * inv_transfer[d - 1][j];
                *v *= f as f32;
            }
        });

    // 4. Inverse FFT, keeping along each axis only the nodes the output needs.
    let mut offsets = vec![0usize; d];
    for (axis, plan) in plans.iter().enumerate().take(d - 1) {
        let fft = planner.plan_fft_inverse(plan.len);
        fft_axis(&mut spec, &shape, axis, &fft);
        let (lo, hi) = plan.used();
        spec = crop_axis(&spec, &shape, axis, lo, hi - lo);
        shape[axis] = hi - lo;
        offsets[axis] = lo;
    }
    let mut real = vec![0.0f32; spec.len() / half * last];
    spec.par_chunks_mut(half)
        .zip(real.par_chunks_mut(last))
        .for_each_init(
            || c2r.make_scratch_vec(),
            |scratch, (row, out)| {
                // Only rounding can leave an imaginary part at frequency 0.
                row[0].im = 0.0;
                // Cannot fail: the lengths are right and row[0] is real.
                let _ = c2r.process_with_scratch(row, out, scratch);
            },
        );
    drop(spec);
    shape[d - 1] = last;

    // 5. Output nodes.
    let mut values: Vec<f64> = real.iter().map(|&v| v as f64).collect();
    drop(real);
    for (axis, plan) in plans.iter().enumerate() {
        let taps: Vec<Vec<(usize, f64)>> = plan
            .taps
            .iter()
            .map(|t| t.iter().map(|&(i, w)| (i - offsets[axis], w)).collect())
            .collect();
        values = resample_axis(&values, &shape, axis, &taps);
        shape[axis] = taps.len();
    }
    Ok(values)
}

/// In-place FFT along `axis` of the row-major array `data` of the given `shape`: columns are
/// gathered [`COLUMNS`] at a time into contiguous buffers, transformed and put back, in
/// parallel over column groups (each transform is independent: no effect of the threads).
fn fft_axis(data: &mut [Complex32], shape: &[usize], axis: usize, fft: &Arc<dyn Fft<f32>>) {
    fft_axis_where(data, shape, axis, fft, |_| true);
}

/// [`fft_axis`] for any float type, on the lines whose block — the flat index over the axes
/// before `axis` — passes `keep` (the other lines are left as they are).
pub(super) fn fft_axis_where<T: FftNum>(
    data: &mut [Complex<T>],
    shape: &[usize],
    axis: usize,
    fft: &Arc<dyn Fft<T>>,
    keep: impl Fn(usize) -> bool,
) {
    let la = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut groups: Vec<Vec<&mut [Complex<T>]>> = Vec::new();
    for (b, block) in data.chunks_mut(la * inner).enumerate() {
        if !keep(b) {
            continue;
        }
        let first = groups.len();
        groups.extend((0..inner.div_ceil(COLUMNS)).map(|_| Vec::with_capacity(la)));
        for row in block.chunks_mut(inner) {
            for (q, piece) in row.chunks_mut(COLUMNS).enumerate() {
                groups[first + q].push(piece);
            }
        }
    }
    let zero = Complex::new(T::zero(), T::zero());
    groups.into_par_iter().for_each_init(
        || {
            (
                vec![zero; la * COLUMNS],
                vec![zero; fft.get_inplace_scratch_len()],
            )
        },
        |(tmp, scratch), mut group| {
            let w = group[0].len();
            for (i, piece) in group.iter().enumerate() {
                for (c, v) in piece.iter().enumerate() {
                    tmp[c * la + i] = *v;
                }
            }
            fft.process_with_scratch(&mut tmp[..w * la], scratch);
            for (i, piece) in group.iter_mut().enumerate() {
                for (c, v) in piece.iter_mut().enumerate() {
                    *v = tmp[c * la + i];
                }
            }
        },
    );
}

/// The nodes `start..start + len` along `axis` of the row-major array `data`.
fn crop_axis<T: Copy + Send + Sync>(
    data: &[T],
    shape: &[usize],
    axis: usize,
    start: usize,
    len: usize,
) -> Vec<T> {
    let inner: usize = shape[axis + 1..].iter().product();
    data.par_chunks(shape[axis] * inner)
        .flat_map_iter(|block| block[start * inner..(start + len) * inner].iter().copied())
        .collect()
}

/// Along `axis`, output node `j` = `Σ w·(input node i)` over `(i, w)` in `taps[j]`.
fn resample_axis(
    data: &[f64],
    shape: &[usize],
    axis: usize,
    taps: &[Vec<(usize, f64)>],
) -> Vec<f64> {
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut out = vec![0.0f64; outer * taps.len() * inner];
    out.par_chunks_mut(taps.len() * inner)
        .zip(data.par_chunks(shape[axis] * inner))
        .for_each(|(o, block)| {
            for (j, t) in taps.iter().enumerate() {
                let dst = &mut o[j * inner..(j + 1) * inner];
                for &(i, w) in t {
                    for (a, b) in dst.iter_mut().zip(&block[i * inner..(i + 1) * inner]) {
                        *a += w * b;
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `n` points of a mixture of two correlated Gaussians in `d` dimensions, padded with
    /// `extra` noise coordinates.
    fn mixture(n: usize, d: usize, extra: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(n * (d + extra));
        for i in 0..n {
            let shift = if i % 3 == 0 { 2.5 } else { -1.0 };
            let a = rng.normal();
            for k in 0..d {
                // Correlated through the shared `a`.
                let sign = if k % 2 == 0 { 1.0 } else { -0.5 };
                let v = shift * sign + 0.8 * a + 0.6 * rng.normal();
                out.push(v as f32);
            }
            for _ in 0..extra {
                out.push(rng.normal() as f32);
            }
        }
        out
    }

    /// scipy's evaluation: Σ_i exp(−½ (x − z_i)ᵀ H⁻¹ (x − z_i)) at every node, scaled to a
    /// maximum of 1.
    fn direct(data: &[f32], dim: usize, grid: &DensityGrid) -> Vec<f64> {
        let d = grid.dim;
        let h = kde_covariance(data, dim, d).unwrap();
        let l = cholesky(&h, d).unwrap();
        let m = grid.n_grid;
        let total = m.pow(d as u32);
        let mut vals: Vec<f64> = (0..total)
            .into_par_iter()
            .map(|flat| {
                let mut x = vec![0.0f64; d];
                let mut rest = flat;
                for k in (0..d).rev() {
                    x[k] = grid.node(k, rest % m) as f64;
                    rest /= m;
                }
                data.chunks_exact(dim)
                    .map(|z| {
                        // Solve L y = x − z; the exponent is −½ |y|².
                        let mut y = vec![0.0f64; d];
                        for i in 0..d {
                            let s: f64 = (0..i).map(|j| l[i * d + j] * y[j]).sum();
                            y[i] = (x[i] - z[i] as f64 - s) / l[i * d + i];
                        }
                        (-0.5 * y.iter().map(|v| v * v).sum::<f64>()).exp()
                    })
                    .sum()
            })
            .collect();
        let max = vals.iter().cloned().fold(0.0, f64::max);
        for v in &mut vals {
            *v /= max;
        }
        vals
    }

    fn max_error(data: &[f32], dim: usize, grid: &DensityGrid) -> f64 {
        let exact = direct(data, dim, grid);
        exact
            .iter()
            .zip(&grid.values)
            .map(|(a, &b)| (a - b as f64).abs())
            .fold(0.0, f64::max)
    }

    fn ratios(data: &[f32], dim: usize, grid: &DensityGrid) -> Vec<f64> {
        let h = kde_covariance(data, dim, grid.dim).unwrap();
        let line = conditional_sd(&h, grid.dim).unwrap();
        (0..grid.dim).map(|k| line[k] / grid.spacing(k)).collect()
    }

    #[test]
    fn matches_direct_evaluation_2d() {
        let data = mixture(600, 2, 1, 1);
        let g = kde_grid(&data, 3, 25, 2).unwrap();
        let r = ratios(&data, 3, &g);
        assert!(
            r.iter().all(|&v| (1.5..=3.0).contains(&v)),
            "aligned path: {r:?}"
        );
        let e = max_error(&data, 3, &g);
        assert!(e < 3e-4, "max error {e}");
        assert_eq!(g.values.iter().cloned().fold(0.0, f32::max), 1.0);
    }

    #[test]
    fn matches_direct_evaluation_3d() {
        let data = mixture(800, 3, 0, 2);
        let g = kde_grid(&data, 3, 22, 3).unwrap();
        let e = max_error(&data, 3, &g);
        let r = ratios(&data, 3, &g);
        assert!(e < 3e-4, "max error {e} {r:?}");
    }

    #[test]
    fn matches_direct_evaluation_4d() {
        let data = mixture(300, 4, 2, 10);
        let g = kde_grid(&data, 6, 10, 4).unwrap();
        let e = max_error(&data, 6, &g);
        assert!(e < 3e-4, "max error {e} {:?}", ratios(&data, 6, &g));
    }

    #[test]
    fn wide_kernels_use_a_coarse_grid() {
        // Few points, many nodes: the kernel spans several output steps.
        let data = mixture(40, 2, 0, 3);
        let g = kde_grid(&data, 2, 60, 2).unwrap();
        let r = ratios(&data, 2, &g);
        assert!(r.iter().all(|&v| v > 3.0), "coarse path: {r:?}");
        let e = max_error(&data, 2, &g);
        assert!(e < 1.2e-3, "max error {e}");
    }

    #[test]
    fn narrow_kernels_use_a_fine_grid() {
        // Many points, few nodes: the kernel is narrower than an output step.
        let data = mixture(3000, 2, 0, 4);
        let g = kde_grid(&data, 2, 9, 2).unwrap();
        let r = ratios(&data, 2, &g);
        assert!(r.iter().all(|&v| v < 1.5), "fine path: {r:?}");
        let e = max_error(&data, 2, &g);
        assert!(e < 3e-4, "max error {e}");
    }

    #[test]
    fn one_dimension_and_bounds() {
        let data: Vec<f32> = (0..101).map(|i| i as f32).collect();
        let b = percentile_bounds(&data, 1, 1, 1.0).unwrap();
        assert_eq!(b, vec![[1.0, 99.0]]);
        let data = mixture(500, 1, 0, 5);
        let g = kde_grid(&data, 1, 50, 1).unwrap();
        assert!(max_error(&data, 1, &g) < 3e-4);
        // The Silverman factor in 1-D is (3n/4)^(−1/5).
        let h = kde_covariance(&data, 1, 1).unwrap();
        let n = 500.0f64;
        let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let f = (n * 3.0 / 4.0).powf(-0.2);
        assert!((h[0] / (var * f * f) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn kernel_covariance_matches_scipy() {
        // scipy 1.17: gaussian_kde(d, 'silverman').covariance for these 60 points.
        let data: Vec<f32> = (0..60)
            .flat_map(|j| {
                let x = j as f64;
                let s = (0.37 * x).sin() * 2.0;
                [(s + 0.01 * x) as f32, ((1.1 * x).cos() + 0.3 * s) as f32]
            })
            .collect();
        let h = kde_covariance(&data, 2, 2).unwrap();
        let want = [0.5144778, 0.15016803, 0.15016803, 0.17439551];
        for (a, b) in h.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{h:?}");
        }
    }

    #[test]
    fn lookups_and_projections() {
        let m = 5;
        let values: Vec<f32> = (0..m * m * m).map(|i| i as f32).collect();
        let g = DensityGrid {
            dim: 3,
            n_grid: m,
            bounds: vec![[0.0, 4.0], [-1.0, 1.0], [10.0, 12.0]],
            values,
        };
        assert_eq!(g.node(1, 2), 0.0);
        assert_eq!(g.index(&[1, 2, 3]), 25 + 10 + 3);
        assert_eq!(g.cell_of(&[1.1, 0.0, 11.6, 99.0]), Some(vec![1, 2, 3]));
        assert_eq!(g.cell_of(&[-0.6, 0.0, 11.0]), None);
        assert_eq!(g.cell_of(&[0.0, 0.0]), None);
        // The values are linear in the indices, so interpolation is exact.
        let v = g.value_at(&[1.5, 0.25, 11.0]).unwrap();
        assert!((v - (1.5 * 25.0 + 2.5 * 5.0 + 2.0)).abs() < 1e-4, "{v}");
        assert_eq!(g.value_at(&[4.0, 1.0, 12.0]), Some(124.0));
        assert_eq!(g.value_at(&[4.01, 1.0, 12.0]), None);
        // Marginal over axis 1 of (axis 0 across, axis 2 up).
        let s = g.marginal_2d(0, 2);
        let want = |i: usize, j: usize| (0..m).map(|k| (i * 25 + k * 5 + j) as f32).sum::<f32>();
        assert_eq!(s[3 * m + 1], want(1, 3));
        let sl = g.slice_2d(2, 1);
        // Axis 2 across, axis 1 up, axis 0 at its middle node 2.
        assert_eq!(sl[4 * m + 1], (2 * 25 + 4 * 5 + 1) as f32);
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let data = mixture(700, 4, 0, 6);
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| kde_grid(&data, 4, 12, 3).unwrap())
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn bad_input_is_refused() {
        let data = mixture(50, 2, 0, 7);
        assert!(kde_grid(&data, 2, 1, 2).is_err());
        assert!(kde_grid(&data, 2, 20, 3).is_err());
        assert!(kde_grid(&data, 2, 20, 0).is_err());
        assert!(kde_grid(&data[..4], 2, 20, 2).is_err(), "2 points in 2-D");
        let flat: Vec<f32> = (0..40).flat_map(|i| [i as f32, 3.0]).collect();
        let e = kde_grid(&flat, 2, 20, 2).unwrap_err();
        assert!(e.to_string().contains("coordinate 1"), "{e}");
        let dup: Vec<f32> = (0..40).flat_map(|i| [i as f32, 2.0 * i as f32]).collect();
        assert!(kde_grid(&dup, 2, 20, 2)
            .unwrap_err()
            .to_string()
            .contains("singular"));
        assert!(kde_grid(&[f32::NAN, 1.0, 2.0, 3.0], 2, 20, 2).is_err());
        assert!(kde_grid(&data, 2, 10_000, 2).is_err(), "too many nodes");
    }

    #[test]
    #[ignore = "timing: cargo test -p recovar-core --lib kde_timing -- --ignored --nocapture"]
    fn kde_timing() {
        // Correlated mixture, and PCA-like coordinates (uncorrelated, decreasing spread).
        let mut rng = Rng::new(9);
        let pca_like: Vec<f32> = (0..20_000 * 4)
            .map(|i| {
                let k = i % 4;
                let shift = if (i / 4) % 3 == 0 && k == 0 { 3.0 } else { 0.0 };
                (shift + rng.normal() / (1.0 + k as f64)) as f32
            })
            .collect();
        for (what, data) in [
            ("correlated 20k", mixture(20_000, 4, 0, 8)),
            ("correlated 100k", mixture(100_000, 4, 0, 8)),
            ("PCA-like 20k", pca_like),
        ] {
            let t = std::time::Instant::now();
            let g = kde_grid(&data, 4, 50, 4).unwrap();
            println!(
                "kde_grid, {what} 4-D points on 50^4: {:.2} s (σ/h {:?})",
                t.elapsed().as_secs_f64(),
                ratios(&data, 4, &g)
            );
        }
    }
}
