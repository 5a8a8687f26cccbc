//! Low-free-energy paths between two points of the latent space (algorithms.md §10, §8 step
//! 6): RECOVAR's `compute_fixed_dimensional_path` and `compute_high_dimensional_path`.
//!
//! A path is not a shortest path on a graph: it is the geodesic of the metric `1/F`, where
//! the speed `F` is the conformational density (plus a small floor). Travel time `T` from the
//! start is the solution of the eikonal equation `|∇T|·F = 1`, computed by fast marching
//! ([`travel_time`]); the path is found by walking downhill on `T` from the end back to the
//! start. Where the density is high travel is fast, so the path prefers populated regions
//! over a straight line through empty ones.
//!
//! Choices where this port differs from (or pins down) RECOVAR:
//!
//! * Fast marching updates a node with the causal solver (upwind terms added in increasing
//!   order while the solution stays above them) instead of scikit-fmm's "drop a dimension
//!   when the discriminant is negative"; both give the same value whenever scikit-fmm's
//!   full quadratic is solvable and causal. scikit-fmm starts from a level set half a cell
//!   around the source; here the `3^d − 1` nodes around the source start with their
//!   straight-line travel time, which makes `T` converge to the distance from the start
//!   node (see [`travel_time`] for the accuracy).
//! * The exact start and end points are put at the ends of the path (RECOVAR's path starts
//!   at the grid node nearest the start): they replace the grid endpoints when inside the
//!   bounds of the grid, and are added before / after them when outside (the grid endpoint
//!   is then the clipped point on the boundary).
//! * Directions for the descent: `n_θ^d` of them as RECOVAR, but at most 10⁴ (so `n_θ` is
//!   lowered to 6 in 5-D, 4 in 6-D, 3 in 7-D and 8-D, 2 above); RECOVAR's densities have at
//!   most 6 dimensions.
//! * The eps retries try `eps, 10·eps, ...` up to `max_eps` (RECOVAR's float loop stops after
//!   trying 0.1 too).
//! * §10B's 2-D densities (path position × coordinate k) are the KDE of the first `k + 1`
//!   coordinates along the path, computed per data point as the Gaussian of its first `k`
//!   coordinates times the conditional Gaussian of coordinate `k` (exact but for the
//!   spreading of the conditional means onto a fine line, below 0.2 % of one kernel's
//!   peak), which costs `n·(k + 2)` operations per path point instead of `200·n·(k + 1)²`.

use rayon::prelude::*;

use super::kde::{cholesky, kde_covariance, kde_on_grid, percentile_bounds, DensityGrid};
use crate::error::{Error, Result};

/// Most descent directions (RECOVAR's 10⁴ in 4-D).
const MAX_DIRECTIONS: usize = 10_000;

/// Axes of the first KDE in [`high_dimensional_path`] (RECOVAR's `min(4, zdim)`).
const LOW_DIMS: usize = 4;

/// Nodes per axis of that KDE.
const LOW_NODES: usize = 50;

/// Nodes along coordinate `k` of the 2-D densities of [`high_dimensional_path`], and points of
/// the intermediate paths.
const SLICE_NODES: usize = 200;

/// Kernel reach (in standard deviations) kept by [`slice_density`]; a dropped term is below
/// `e^−12.5 ≈ 4·10⁻⁶` of its own peak.
const REACH: f64 = 5.0;

/// Options of the path search (RECOVAR's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathOptions {
    /// Floor added to the density, relative to its maximum: `F = density + eps·max`. Keeps
    /// empty regions passable (slowly) so that `T` is finite everywhere.
    pub eps: f64,
    /// Grid points per axis of the descent directions (`n_θ^d` directions in all).
    pub n_theta: usize,
    /// Descent step, in grid steps of the axis with the mean spacing.
    pub step: f64,
    /// Largest `eps` tried: a failed descent retries with `eps·10` until this.
    pub max_eps: f64,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            eps: 1e-5,
            n_theta: 10,
            step: 0.25,
            max_eps: 0.1,
        }
    }
}

impl PathOptions {
    fn check(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::invalid(format!(
                "trajectory: eps must be positive and finite, got {}",
                self.eps
            )));
        }
        if !self.max_eps.is_finite() {
            return Err(Error::invalid(format!(
                "trajectory: max_eps must be finite, got {}",
                self.max_eps
            )));
        }
        if self.n_theta < 2 {
            return Err(Error::invalid(format!(
                "trajectory: n_theta must be at least 2, got {}",
                self.n_theta
            )));
        }
        if !(self.step.is_finite() && self.step > 0.0) {
            return Err(Error::invalid(format!(
                "trajectory: step must be positive and finite, got {}",
                self.step
            )));
        }
        Ok(())
    }
}

/// A path in the latent space and the density along it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrajectoryPath {
    /// Points from the start to the end, in latent coordinates (`d` coordinates for
    /// [`fixed_dimensional_path`], `zdim` for [`high_dimensional_path`]).
    pub points: Vec<Vec<f32>>,
    /// The density at each point (multilinear interpolation, 0 outside its grid).
    pub density: Vec<f32>,
}

/// Travel time `T` solving `|∇T|·F = 1` on a regular `d`-dimensional grid (any `d ≥ 1`,
/// row-major with axis 0 slowest: [`DensityGrid`]'s layout), from the node `start`, spacing
/// `dx[k]` along axis `k`, by second-order fast marching (scikit-fmm's scheme: upwind
/// differences, second order along an axis where the two upwind neighbours are known and
/// ordered, first order otherwise; nodes accepted in increasing `T` from a heap).
///
/// Nodes with `F = 0` are unreachable (`T = +∞`), as are nodes cut off by them; the start
/// has `T = 0` whatever its speed. The `3^d − 1` nodes around the start begin with their
/// straight-line time `|x − x_start| / F(x)` (exact for a constant speed), later lowered by
/// the marching if it finds faster.
///
/// Accuracy: for a constant speed, `T·F` is the Euclidean distance from the start node to
/// within 0.35 of the largest spacing at every node (in 1-D exactly). The error is made
/// where the wavefront is most curved, within a few nodes of the start, and barely grows
/// beyond, so the relative error falls like 1/distance: under 1.75 % beyond 20 spacings
/// (the tests check both in 2-D and 3-D with equal and unequal spacings; about 3 % is
/// reached 3 nodes from the start along a diagonal). This is the usual behaviour of
/// second-order fast marching from a point source, scikit-fmm's included.
///
/// Cost: `O(N log N)` for `N` nodes, each updated at most `2d` times; memory 13 bytes a node
/// plus 16 bytes a node of the narrow band. The narrow band is an indexed heap (a lowered
/// `T` moves the node's entry up), which takes about 40 % less time than a heap keeping
/// the stale entries (a node's `T` is lowered about 3 times on average in 4-D); 50⁴ nodes
/// take a few seconds, most of it waiting for memory.
///
/// Errors: an empty shape or an axis of length 0, `speed` of the wrong length, a spacing
/// that is not positive and finite, `start` of the wrong length or outside the grid, a
/// negative or non-finite speed, or a speed of zero everywhere.
pub fn travel_time(
    speed: &[f64],
    shape: &[usize],
    dx: &[f64],
    start: &[usize],
) -> Result<Vec<f64>> {
    let d = shape.len();
    if d == 0 || shape.contains(&0) {
        return Err(Error::invalid(format!(
            "travel time: the grid shape {shape:?} must have at least one axis and no empty axis"
        )));
    }
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &m| acc.checked_mul(m))
        .filter(|&n| n < NOT_IN_BAND as usize)
        .ok_or_else(|| Error::invalid(format!("travel time: grid shape {shape:?} too large")))?;
    if speed.len() != n {
        return Err(Error::inconsistent(format!(
            "travel time: {} speeds for a grid of shape {shape:?} ({n} nodes)",
            speed.len()
        )));
    }
    if dx.len() != d || dx.iter().any(|&h| !(h.is_finite() && h > 0.0)) {
        return Err(Error::invalid(format!(
            "travel time: need {d} positive finite grid spacings, got {dx:?}"
        )));
    }
    if start.len() != d || start.iter().zip(shape).any(|(&s, &m)| s >= m) {
        return Err(Error::invalid(format!(
            "travel time: start node {start:?} is not a node of a grid of shape {shape:?}"
        )));
    }
    if let Some(i) = speed.iter().position(|&f| !(f.is_finite() && f >= 0.0)) {
        return Err(Error::invalid(format!(
            "travel time: speed {} at node {i} must be finite and non-negative",
            speed[i]
        )));
    }
    if speed.iter().all(|&f| f == 0.0) {
        return Err(Error::invalid(
            "travel time: the speed is zero everywhere, so nothing can be reached",
        ));
    }

    let mut strides = vec![1usize; d];
    for k in (0..d - 1).rev() {
        strides[k] = strides[k + 1] * shape[k + 1];
    }
    let inv_dx2: Vec<f64> = dx.iter().map(|h| 1.0 / (h * h)).collect();
    let mut t = vec![f64::INFINITY; n];
    let mut frozen = vec![false; n];
    let mut band = Band::new(n);
    let s = start.iter().zip(&strides).map(|(&c, &st)| c * st).sum();
    t[s] = 0.0;
    band.set(0.0, s);

    // The box around the start.
    let box_count = 3usize.checked_pow(d as u32).unwrap_or(usize::MAX);
    if box_count <= 1 << 20 {
        'offsets: for code in 0..box_count {
            let (mut r, mut idx, mut dist2) = (code, 0usize, 0.0f64);
            for k in (0..d).rev() {
                let o = (r % 3) as isize - 1;
                r /= 3;
                let c = start[k] as isize + o;
                if c < 0 || c >= shape[k] as isize {
                    continue 'offsets;
                }
                idx += c as usize * strides[k];
                dist2 += (o as f64 * dx[k]).powi(2);
            }
            if idx != s && speed[idx] > 0.0 {
                let v = dist2.sqrt() / speed[idx];
                t[idx] = v;
                band.set(v, idx);
            }
        }
    }

    let grid = Grid {
        shape,
        strides: &strides,
        inv_dx2: &inv_dx2,
    };
    let mut coords = vec![0usize; d];
    let mut terms: Vec<(f64, f64)> = Vec::with_capacity(d);
    while let Some(i) = band.pop() {
        frozen[i] = true;
        let mut r = i;
        for k in (0..d).rev() {
            coords[k] = r % shape[k];
            r /= shape[k];
        }
        for k in 0..d {
            for up in [false, true] {
                let c = coords[k];
                let nb = if up {
                    if c + 1 >= shape[k] {
                        continue;
                    }
                    coords[k] = c + 1;
                    i + strides[k]
                } else {
                    if c == 0 {
                        continue;
                    }
                    coords[k] = c - 1;
                    i - strides[k]
                };
                if !frozen[nb] && speed[nb] > 0.0 {
                    let v = grid.update(nb, &coords, &t, &frozen, speed[nb], &mut terms);
                    if v < t[nb] {
                        t[nb] = v;
                        band.set(v, nb);
                    }
                }
                coords[k] = c;
            }
        }
    }
    Ok(t)
}

/// Marks a node absent from [`Band`].
const NOT_IN_BAND: u32 = u32::MAX;

/// The narrow band of fast marching: an indexed 4-ary min-heap of `(T, node)` (ties to the
/// lower node, so the marching order, hence the result, is deterministic), with the slot of
/// each node so that a lowered `T` moves the node's entry instead of adding another one.
/// Four children share a cache line.
struct Band {
    heap: Vec<(f64, u32)>,
    slot: Vec<u32>,
}

impl Band {
    fn new(n: usize) -> Self {
        Band {
            heap: Vec::new(),
            slot: vec![NOT_IN_BAND; n],
        }
    }

    fn before(a: (f64, u32), b: (f64, u32)) -> bool {
        a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
    }

    /// Inserts `node` with time `t`, or lowers its time to `t` (never raises it).
    fn set(&mut self, t: f64, node: usize) {
        let e = (t, node as u32);
        let mut k = match self.slot[node] {
            NOT_IN_BAND => {
                self.heap.push(e);
                self.heap.len() - 1
            }
            k => k as usize,
        };
        while k > 0 {
            let p = (k - 1) / 4;
            let pe = self.heap[p];
            if !Self::before(e, pe) {
                break;
            }
            self.heap[k] = pe;
            self.slot[pe.1 as usize] = k as u32;
            k = p;
        }
        self.heap[k] = e;
        self.slot[node] = k as u32;
    }

    /// Removes and returns the node of smallest time.
    fn pop(&mut self) -> Option<usize> {
        let top = *self.heap.first()?;
        self.slot[top.1 as usize] = NOT_IN_BAND;
        let last = self.heap.pop()?;
        let n = self.heap.len();
        if n > 0 {
            let mut k = 0;
            loop {
                let c = 4 * k + 1;
                if c >= n {
                    break;
                }
                let mut best = c;
                for j in c + 1..(c + 4).min(n) {
                    if Self::before(self.heap[j], self.heap[best]) {
                        best = j;
                    }
                }
                let be = self.heap[best];
                if !Self::before(be, last) {
                    break;
                }
                self.heap[k] = be;
                self.slot[be.1 as usize] = k as u32;
                k = best;
            }
            self.heap[k] = last;
            self.slot[last.1 as usize] = k as u32;
        }
        Some(top.1 as usize)
    }
}

/// The geometry fast marching needs.
struct Grid<'a> {
    shape: &'a [usize],
    strides: &'a [usize],
    inv_dx2: &'a [f64],
}

impl Grid<'_> {
    /// The upwind solution at node `i` (coordinates `c`) from its accepted neighbours.
    ///
    /// Along each axis the smaller accepted neighbour `T₁` gives the term `(T − T₁)²/dx²`,
    /// or, if the next node beyond it is accepted with `T₂ ≤ T₁`, the second-order term
    /// `(9/4)(T − (4T₁ − T₂)/3)²/dx²`. The terms are added in increasing order of their
    /// centre while the solution of `Σ terms = 1/F²` stays above the next centre (causality).
    fn update(
        &self,
        i: usize,
        c: &[usize],
        t: &[f64],
        frozen: &[bool],
        f: f64,
        terms: &mut Vec<(f64, f64)>,
    ) -> f64 {
        terms.clear();
        for (m, &cm) in c.iter().enumerate() {
            let st = self.strides[m];
            let (mut t1, mut t2) = (f64::INFINITY, f64::INFINITY);
            if cm >= 1 && frozen[i - st] {
                t1 = t[i - st];
                if cm >= 2 && frozen[i - 2 * st] && t[i - 2 * st] <= t1 {
                    t2 = t[i - 2 * st];
                }
            }
            if cm + 1 < self.shape[m] && frozen[i + st] && t[i + st] < t1 {
                t1 = t[i + st];
                t2 = f64::INFINITY;
                if cm + 2 < self.shape[m] && frozen[i + 2 * st] && t[i + 2 * st] <= t1 {
                    t2 = t[i + 2 * st];
                }
            }
            if t1.is_finite() {
                if t2.is_finite() {
                    terms.push(((4.0 * t1 - t2) / 3.0, 2.25 * self.inv_dx2[m]));
                } else {
                    terms.push((t1, self.inv_dx2[m]));
                }
            }
        }
        terms.sort_by(|a, b| a.0.total_cmp(&b.0));
        let rhs = 1.0 / (f * f);
        let (mut a, mut b, mut cc) = (0.0f64, 0.0f64, 0.0f64);
        let mut sol = f64::INFINITY;
        for &(centre, alpha) in terms.iter() {
            if sol <= centre {
                break;
            }
            a += alpha;
            b += alpha * centre;
            cc += alpha * centre * centre;
            // a·T² − 2b·T + cc = rhs; the discriminant is ≥ 0 in exact arithmetic because
            // the previous solution lies above `centre`.
            let disc = b * b - a * (cc - rhs);
            if disc < 0.0 {
                break;
            }
            sol = (b + disc.sqrt()) / a;
        }
        sol
    }
}

/// A field on a grid, sampled by multilinear interpolation (scipy's `map_coordinates`,
/// order 1, with `f64::MAX` outside the grid).
struct Field<'a> {
    values: &'a [f64],
    shape: &'a [usize],
    strides: Vec<usize>,
}

impl<'a> Field<'a> {
    fn new(values: &'a [f64], shape: &'a [usize]) -> Self {
        let d = shape.len();
        let mut strides = vec![1usize; d];
        for k in (0..d.saturating_sub(1)).rev() {
            strides[k] = strides[k + 1] * shape[k + 1];
        }
        Field {
            values,
            shape,
            strides,
        }
    }

    /// The interpolated value at grid coordinates `x` (at most 16 axes, which
    /// [`directions`] ensures).
    fn at(&self, x: &[f64]) -> f64 {
        let d = self.shape.len();
        let mut base = 0usize;
        let mut frac = [0.0f64; 16];
        for k in 0..d {
            let m = self.shape[k];
            let u = x[k];
            if !(u >= 0.0 && u <= (m - 1) as f64) {
                return f64::MAX;
            }
            let i = (u.floor() as usize).min(m.saturating_sub(2));
            base += i * self.strides[k];
            frac[k] = u - i as f64;
        }
        let mut sum = 0.0;
        'corners: for corner in 0..1usize << d {
            let mut w = 1.0;
            let mut idx = base;
            for (k, &fk) in frac[..d].iter().enumerate() {
                if (corner >> k) & 1 == 1 {
                    // Also keeps a one-node axis from reading past its end.
                    if fk == 0.0 {
                        continue 'corners;
                    }
                    w *= fk;
                    idx += self.strides[k];
                } else {
                    w *= 1.0 - fk;
                }
            }
            if w > 0.0 {
                sum += w * self.values[idx];
            }
        }
        sum
    }
}

/// RECOVAR's descent directions: the points of the grid `linspace(−1, 1.01, m)^d` (the 1.01
/// keeps the zero vector out), normalized, then divided by `dx/mean(dx)` so that a step has
/// the same physical length whatever its direction. `m` is `n_theta` lowered until `m^d` is
/// at most [`MAX_DIRECTIONS`]. Flat, `d` values a direction.
fn directions(d: usize, n_theta: usize, dx: &[f64]) -> Result<Vec<f64>> {
    let fits = |m: usize| m.checked_pow(d as u32).is_some_and(|c| c <= MAX_DIRECTIONS);
    let m = (2..=n_theta.min(MAX_DIRECTIONS))
        .rev()
        .find(|&m| fits(m))
        .ok_or_else(|| {
            Error::invalid(format!(
                "trajectory: {d} dimensions are too many for the path search (at most 13)"
            ))
        })?;
    let step = 2.01 / (m - 1) as f64;
    let vals: Vec<f64> = (0..m)
        .map(|i| {
            if i + 1 == m {
                1.01
            } else {
                -1.0 + i as f64 * step
            }
        })
        .collect();
    let mean_dx = dx.iter().sum::<f64>() / d as f64;
    let total = m.pow(d as u32);
    let mut out = Vec::with_capacity(total * d);
    let mut dir = vec![0.0f64; d];
    for code in 0..total {
        let mut r = code;
        for k in (0..d).rev() {
            dir[k] = vals[r % m];
            r /= m;
        }
        let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm < 1e-12 {
            continue;
        }
        out.extend((0..d).map(|k| dir[k] / norm / (dx[k] / mean_dx)));
    }
    Ok(out)
}

/// Walks from `end` to `start` (grid coordinates) on the travel time `t`: at each step the
/// point `x + step·direction` with the smallest interpolated `T` (the first on ties), until
/// within `√d` of `start`, which is then appended. `None` after more than `max_steps` steps.
/// The result runs from `start` to `end`.
fn descend(
    t: &Field,
    dirs: &[f64],
    start: &[f64],
    end: &[f64],
    step: f64,
    max_steps: f64,
) -> Option<Vec<Vec<f64>>> {
    let d = start.len();
    let dist = |x: &[f64]| {
        x.iter()
            .zip(start)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let radius = (d as f64).sqrt();
    let mut path = vec![end.to_vec()];
    let mut x = end.to_vec();
    let mut steps = 0usize;
    while dist(&x) > radius {
        let eval = |j: usize| {
            let mut cand = [0.0f64; 16];
            for k in 0..d {
                cand[k] = x[k] + step * dirs[j * d + k];
            }
            t.at(&cand[..d])
        };
        let (_, best) = (0..dirs.len() / d)
            .into_par_iter()
            .with_min_len(256)
            .map(|j| (eval(j), j))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))?;
        for k in 0..d {
            x[k] += step * dirs[best * d + k];
        }
        path.push(x.clone());
        steps += 1;
        if steps as f64 > max_steps {
            return None;
        }
    }
    path.push(start.to_vec());
    path.reverse();
    Some(path)
}

/// RECOVAR's `find_trajectory_in_grid` on a grid of any shape: travel time from the node
/// `start` with speed `density + eps·max(density)`, then the descent from `end` (fractional,
/// inside the grid); a failed descent retries with `eps` ten times larger, up to `max_eps`.
/// `dx` is RECOVAR's spacing `(hi − lo)/M` per axis. Returns the path in grid coordinates.
fn grid_path(
    density: &[f64],
    shape: &[usize],
    dx: &[f64],
    start: &[usize],
    end: &[f64],
    opts: &PathOptions,
) -> Result<Vec<Vec<f64>>> {
    let d = shape.len();
    let max = density.iter().cloned().fold(0.0f64, f64::max);
    if max.is_nan() || max <= 0.0 {
        return Err(Error::invalid(
            "trajectory: the density is zero everywhere; no path can follow it",
        ));
    }
    let dirs = directions(d, opts.n_theta, dx)?;
    let max_steps = 50.0
        * shape
            .iter()
            .map(|&m| (m as f64).powi(2))
            .sum::<f64>()
            .sqrt();
    let start_f: Vec<f64> = start.iter().map(|&s| s as f64).collect();
    let mut eps = opts.eps;
    loop {
        let speed: Vec<f64> = density.iter().map(|&v| v + eps * max).collect();
        let t = travel_time(&speed, shape, dx, start)?;
        let field = Field::new(&t, shape);
        if let Some(path) = descend(&field, &dirs, &start_f, end, opts.step, max_steps) {
            return Ok(path);
        }
        tracing::info!("trajectory: no path with eps = {eps:e}; raising the density floor");
        if eps * 10.0 > opts.max_eps * (1.0 + 1e-9) {
            return Err(Error::invalid(format!(
                "trajectory: the descent on the travel time did not reach the start within \
                 {max_steps:.0} steps, even with the density floor eps = {eps:e} (max_eps = {:e}); \
                 the start or end may lie in an empty region of the density",
                opts.max_eps
            )));
        }
        eps *= 10.0;
    }
}

/// The first `d` coordinates of `p` as `f64`, refused when too few or not finite.
fn endpoint(p: &[f32], d: usize, what: &str) -> Result<Vec<f64>> {
    if p.len() < d {
        return Err(Error::invalid(format!(
            "trajectory: the {what} point has {} coordinates, {d} needed",
            p.len()
        )));
    }
    if let Some(k) = p[..d].iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "trajectory: coordinate {k} of the {what} point is {}",
            p[k]
        )));
    }
    Ok(p[..d].iter().map(|&v| v as f64).collect())
}

/// RECOVAR's start (nearest node, numpy rounding, clipped) and end (clipped) grid
/// coordinates, from fractional grid coordinates `g` on `m` nodes per axis.
fn start_node(g: &[f64], m: &[usize]) -> Vec<usize> {
    g.iter()
        .zip(m)
        .map(|(&u, &m)| u.round_ties_even().clamp(0.0, (m - 1) as f64) as usize)
        .collect()
}

fn end_point(g: &[f64], m: &[usize]) -> Vec<f64> {
    g.iter()
        .zip(m)
        .map(|(&u, &m)| u.clamp(0.0, (m - 1) as f64))
        .collect()
}

/// Puts the exact endpoints at the ends of `path`: each replaces the path's endpoint when it
/// lies inside `bounds` on every axis (they then differ by rounding to the grid), and is
/// added beyond it otherwise (the path's endpoint is its clipped image on the boundary).
fn attach_endpoints(path: &mut Vec<Vec<f64>>, start: &[f64], end: &[f64], bounds: &[[f64; 2]]) {
    let inside = |p: &[f64]| {
        p.iter()
            .zip(bounds)
            .all(|(&v, b)| v >= b[0].min(b[1]) && v <= b[0].max(b[1]))
    };
    if path.is_empty() {
        path.push(start.to_vec());
        path.push(end.to_vec());
        return;
    }
    if inside(end) {
        *path.last_mut().expect("non-empty") = end.to_vec();
    } else {
        path.push(end.to_vec());
    }
    if inside(start) {
        path[0] = start.to_vec();
    } else {
        path.insert(0, start.to_vec());
    }
}

fn check_density(density: &DensityGrid) -> Result<Vec<f64>> {
    let d = density.dim;
    let m = density.n_grid;
    if d == 0 || m < 2 || density.bounds.len() != d {
        return Err(Error::invalid(format!(
            "trajectory: a density needs at least one axis, 2 nodes per axis and bounds for \
             each axis (got {d} axes, {m} nodes, {} bounds)",
            density.bounds.len()
        )));
    }
    let cells = m.checked_pow(d as u32);
    if cells != Some(density.values.len()) {
        return Err(Error::inconsistent(format!(
            "trajectory: {} density values for a {m}^{d} grid",
            density.values.len()
        )));
    }
    for (k, &[lo, hi]) in density.bounds.iter().enumerate() {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::invalid(format!(
                "trajectory: density bounds of axis {k} ({lo}, {hi}) must be finite and increasing"
            )));
        }
    }
    if let Some(i) = density.values.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "trajectory: density value {} at node {i} is not finite",
            density.values[i]
        )));
    }
    // Negative values (rounding noise of a deconvolution) count as empty.
    Ok(density
        .values
        .iter()
        .map(|&v| (v as f64).max(0.0))
        .collect())
}

fn density_along(density: &DensityGrid, points: &[Vec<f32>]) -> Vec<f32> {
    points
        .iter()
        .map(|p| density.value_at(p).unwrap_or(0.0))
        .collect()
}

fn to_f32(path: &[Vec<f64>]) -> Vec<Vec<f32>> {
    path.iter()
        .map(|p| p.iter().map(|&v| v as f32).collect())
        .collect()
}

/// §10A, RECOVAR's `compute_fixed_dimensional_path`: the path from `start` to `end` on a
/// given density of `d = density.dim` axes (the first `d` coordinates of the endpoints are
/// used).
///
/// On the grid (`g = (z − lo)/(hi − lo)·(M − 1)`), the start is rounded to the nearest node
/// and clipped, the end clipped; travel time from the start node with speed
/// `F = density + eps·max(density)` and spacing `(hi − lo)/M` per axis; then steps of
/// `opts.step` grid units downhill on `T` from the end until within `√d` grid units of the
/// start (see the module documentation for the directions), retried with a larger `eps`
/// after `50·‖shape‖` steps. The returned points have `d` coordinates, run from the exact
/// start to the exact end, and are about `opts.step` grid steps apart.
///
/// Errors: bad options, endpoints with fewer than `d` coordinates or non-finite ones, a
/// malformed density or one with no positive value, more than 13 axes, or no path found up
/// to `max_eps`.
pub fn fixed_dimensional_path(
    density: &DensityGrid,
    start: &[f32],
    end: &[f32],
    opts: &PathOptions,
) -> Result<TrajectoryPath> {
    opts.check()?;
    let values = check_density(density)?;
    let d = density.dim;
    let m = density.n_grid;
    let z_st = endpoint(start, d, "start")?;
    let z_end = endpoint(end, d, "end")?;
    let shape = vec![m; d];
    let g_st = start_node(&density.to_grid(&start[..d]), &shape);
    let g_end = end_point(&density.to_grid(&end[..d]), &shape);
    let dx: Vec<f64> = density
        .bounds
        .iter()
        .map(|&[lo, hi]| (hi as f64 - lo as f64) / m as f64)
        .collect();
    let grid = grid_path(&values, &shape, &dx, &g_st, &g_end, opts)?;
    let mut path: Vec<Vec<f64>> = grid
        .iter()
        .map(|g| {
            (0..d)
                .map(|k| density.bounds[k][0] as f64 + g[k] * density.spacing(k))
                .collect()
        })
        .collect();
    let bounds: Vec<[f64; 2]> = density
        .bounds
        .iter()
        .map(|&[lo, hi]| [lo as f64, hi as f64])
        .collect();
    attach_endpoints(&mut path, &z_st, &z_end, &bounds);
    let points = to_f32(&path);
    let density = density_along(density, &points);
    Ok(TrajectoryPath { points, density })
}

/// §10B, RECOVAR's `compute_high_dimensional_path`: the path from `start` to `end` without a
/// given density, from the `n × zdim` row-major latent coordinates `zs`.
///
/// 1. Bounds: the [1, 99] percentiles of every coordinate. The KDE of the first
///    `min(4, zdim)` coordinates on 50 nodes per axis; the path on it (§10A, without the
///    exact endpoints), resampled to as many points evenly spaced in arc length.
/// 2. For each further coordinate `k`: a 2-D density on (point `i` of the current path) ×
///    (coordinate `k` at 200 nodes between its bounds), the KDE of the first `k + 1`
///    coordinates evaluated there and scaled to a maximum of 1; a 2-D path on it from
///    (0, start's node in `k`) to (last point, end's `k` clipped), with spacings
///    (arc length / points, range / 200); the new path takes its first `k` coordinates
///    from the old one at the (fractional) positions the 2-D path visits and coordinate `k`
///    from the 2-D path; it is resampled evenly in arc length to 200 points, except after
///    the last coordinate, where it keeps its number of points.
/// 3. The exact endpoints at the ends (see the module documentation).
///
/// The returned density is the step-1 KDE (first `min(4, zdim)` coordinates) along the
/// path.
///
/// Errors: bad options; `zs` not a whole number of rows, non-finite, with too few points or
/// a constant or duplicated coordinate (see [`super::kde::kde_grid`]); endpoints with fewer
/// than `zdim` coordinates or non-finite ones; no path found up to `max_eps`.
pub fn high_dimensional_path(
    zs: &[f32],
    zdim: usize,
    start: &[f32],
    end: &[f32],
    opts: &PathOptions,
) -> Result<TrajectoryPath> {
    high_dimensional_path_with(zs, zdim, start, end, opts, LOW_DIMS.min(zdim), LOW_NODES)
}

/// [`high_dimensional_path`] with its first density given: `first` must be the KDE of the
/// first axes of `zs` between their [1, 99] percentiles, as [`super::kde::kde_grid`]`(zs,
/// zdim, 50, min(4, zdim))` makes it (for a caller that also draws that density, so that it
/// is computed once). Its axes and nodes set those of the first pass.
///
/// Errors: as [`high_dimensional_path`], and a `first` with more axes than `zdim`.
pub fn high_dimensional_path_on(
    first: &DensityGrid,
    zs: &[f32],
    zdim: usize,
    start: &[f32],
    end: &[f32],
    opts: &PathOptions,
) -> Result<TrajectoryPath> {
    opts.check()?;
    if first.dim == 0 || first.dim > zdim {
        return Err(Error::invalid(format!(
            "a {}-D first density for a path in {zdim} dimensions",
            first.dim
        )));
    }
    let mut bounds = percentile_bounds(zs, zdim, zdim, 1.0)?;
    bounds[..first.dim].copy_from_slice(&first.bounds);
    path_from_first_density(first, &bounds, zs, zdim, start, end, opts)
}

/// [`high_dimensional_path`] with the number of axes and nodes of the first KDE given (the
/// tests use fewer, to stay fast in debug builds).
fn high_dimensional_path_with(
    zs: &[f32],
    zdim: usize,
    start: &[f32],
    end: &[f32],
    opts: &PathOptions,
    low: usize,
    low_nodes: usize,
) -> Result<TrajectoryPath> {
    opts.check()?;
    let bounds = percentile_bounds(zs, zdim, zdim, 1.0)?;
    let density = kde_on_grid(zs, zdim, &bounds[..low], low_nodes)?;
    path_from_first_density(&density, &bounds, zs, zdim, start, end, opts)
}

/// §10B from the first pass's density (its axes and nodes) and every axis's bounds.
fn path_from_first_density(
    density: &DensityGrid,
    bounds: &[[f32; 2]],
    zs: &[f32],
    zdim: usize,
    start: &[f32],
    end: &[f32],
    opts: &PathOptions,
) -> Result<TrajectoryPath> {
    let (low, low_nodes) = (density.dim, density.n_grid);
    let z_st = endpoint(start, zdim, "start")?;
    let z_end = endpoint(end, zdim, "end")?;
    let values: Vec<f64> = density.values.iter().map(|&v| v as f64).collect();

    let bounds64: Vec<[f64; 2]> = bounds
        .iter()
        .map(|&[lo, hi]| [lo as f64, hi as f64])
        .collect();
    let to_grid = |z: &[f64], k: usize, m: usize| {
        let [lo, hi] = bounds64[k];
        (z[k] - lo) / (hi - lo) * (m - 1) as f64
    };
    let shape = vec![low_nodes; low];
    let g_st = density.to_grid(&start[..low]);
    let g_end = density.to_grid(&end[..low]);
    let dx: Vec<f64> = bounds64[..low]
        .iter()
        .map(|&[lo, hi]| (hi - lo) / low_nodes as f64)
        .collect();
    let grid = grid_path(
        &values,
        &shape,
        &dx,
        &start_node(&g_st, &shape),
        &end_point(&g_end, &shape),
        opts,
    )?;
    let mut path: Vec<Vec<f64>> = grid
        .iter()
        .map(|g| {
            (0..low)
                .map(|k| bounds64[k][0] + g[k] * density.spacing(k))
                .collect()
        })
        .collect();
    path = resample(&path, path.len());

    for (k, &[lo, hi]) in bounds64.iter().enumerate().skip(low) {
        let m = SLICE_NODES;
        let step_k = (hi - lo) / (m - 1) as f64;
        let st_k = start_node(&[to_grid(&z_st, k, m)], &[m])[0];
        let end_k = end_point(&[to_grid(&z_end, k, m)], &[m])[0];
        let len = path.len();
        let slice = slice_density(zs, zdim, k, &path, [lo, hi], m)?;
        let total = arc_length(&path);
        let dx_k = (hi - lo) / m as f64;
        // A path of zero length (start and end on the same node) still needs a spacing.
        let dx_path = if total > 0.0 {
            total / len as f64
        } else {
            dx_k
        };
        let g = grid_path(
            &slice,
            &[len, m],
            &[dx_path, dx_k],
            &[0, st_k],
            &[(len - 1) as f64, end_k],
            opts,
        )?;
        let new_path: Vec<Vec<f64>> = g
            .iter()
            .map(|p| {
                let pos = p[0].clamp(0.0, (len - 1) as f64);
                let i = (pos.floor() as usize).min(len.saturating_sub(2));
                let f = pos - i as f64;
                let mut z: Vec<f64> = (0..k)
                    .map(|c| {
                        if len == 1 {
                            path[0][c]
                        } else {
                            path[i][c] + f * (path[i + 1][c] - path[i][c])
                        }
                    })
                    .collect();
                z.push(lo + p[1] * step_k);
                z
            })
            .collect();
        let n_out = if k + 1 == zdim {
            new_path.len()
        } else {
            SLICE_NODES
        };
        path = resample(&new_path, n_out);
    }
    attach_endpoints(&mut path, &z_st, &z_end, &bounds64);
    let points = to_f32(&path);
    let density = density_along(density, &points);
    Ok(TrajectoryPath { points, density })
}

/// The KDE (Silverman, [`kde_covariance`]) of the first `k + 1` coordinates of `zs` at the
/// points (`path[i]`, `lo + j·(hi − lo)/(m − 1)`), `path.len() × m` row-major, scaled to a
/// maximum of 1 (RECOVAR's `compute_latent_space_density_on_curve`).
///
/// With kernel covariance `H`, each data point's Gaussian factors into the Gaussian of the
/// first `k` coordinates (weight `w` per path point, through the Cholesky factor of
/// `H_<k`) times a 1-D Gaussian in coordinate `k` of fixed width `σ = √(H_kk − H_k,<k
/// H_<k⁻¹ H_<k,k)` centred at `μ = z_k + β·(x_<k − z_<k)`, `β = H_<k⁻¹ H_<k,k`. So per path
/// point the weights are spread linearly onto a line finer than the output nodes (at least
/// 8 nodes a `σ`, up to 64 per output step) and convolved with the Gaussian at the output
/// nodes: `n·(k + 2)` operations per path point instead of `200·n·(k + 1)²`. Linear
/// spreading errs by at most `(h/σ)²/8 ≤ 0.2 %` of one kernel's peak; terms beyond 5
/// standard deviations are dropped.
fn slice_density(
    zs: &[f32],
    zdim: usize,
    k: usize,
    path: &[Vec<f64>],
    [lo, hi]: [f64; 2],
    m: usize,
) -> Result<Vec<f64>> {
    debug_assert!(k >= 1, "the first pass has at least one axis");
    let h = kde_covariance(zs, zdim, k + 1)?;
    let d1 = k + 1;
    let hk: Vec<f64> = (0..k * k).map(|i| h[(i / k) * d1 + i % k]).collect();
    let l = cholesky(&hk, k)
        .ok_or_else(|| Error::invalid("trajectory: singular KDE covariance on the path"))?;
    // Solves L y = b (forward substitution).
    let forward = |b: &[f64]| {
        let mut y = vec![0.0f64; k];
        for i in 0..k {
            let s: f64 = (0..i).map(|j| l[i * k + j] * y[j]).sum();
            y[i] = (b[i] - s) / l[i * k + i];
        }
        y
    };
    let cross: Vec<f64> = (0..k).map(|i| h[i * d1 + k]).collect();
    // β = H_<k⁻¹ H_<k,k = L⁻ᵀ (L⁻¹ H_<k,k).
    let y = forward(&cross);
    let mut beta = vec![0.0f64; k];
    for i in (0..k).rev() {
        let s: f64 = (i + 1..k).map(|j| l[j * k + i] * beta[j]).sum();
        beta[i] = (y[i] - s) / l[i * k + i];
    }
    let var = h[k * d1 + k] - beta.iter().zip(&cross).map(|(a, b)| a * b).sum::<f64>();
    if var.is_nan() || var <= 0.0 {
        return Err(Error::invalid(format!(
            "trajectory: coordinate {k} is a linear function of the previous ones"
        )));
    }
    let sigma = var.sqrt();
    let n = zs.len() / zdim;
    // Whitened first k coordinates and the intercept of μ, per data point.
    let mut white = Vec::with_capacity(n * k);
    let mut intercept = Vec::with_capacity(n);
    for row in zs.chunks_exact(zdim) {
        let z: Vec<f64> = row[..k].iter().map(|&v| v as f64).collect();
        white.extend(forward(&z));
        intercept.push(row[k] as f64 - beta.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>());
    }

    let step = (hi - lo) / (m - 1) as f64;
    let r = ((8.0 * step / sigma).ceil() as usize).clamp(1, 64);
    let hf = step / r as f64;
    let pad = (REACH * sigma / hf).ceil() as usize + 1;
    let fine_len = (m - 1) * r + 1 + 2 * pad;
    let kernel: Vec<f64> = (0..=2 * pad)
        .map(|q| {
            let u = (q as f64 - pad as f64) * hf / sigma;
            (-0.5 * u * u).exp()
        })
        .collect();
    let cut = REACH * REACH;
    let rows: Vec<Vec<f64>> = path
        .par_iter()
        .map(|x| {
            let u = forward(&x[..k]);
            let shift = beta.iter().zip(&x[..k]).map(|(a, b)| a * b).sum::<f64>();
            let mut bins = vec![0.0f64; fine_len];
            for (v, &a) in white.chunks_exact(k).zip(&intercept) {
                let q: f64 = u.iter().zip(v).map(|(p, q)| (p - q).powi(2)).sum();
                if q > cut {
                    continue;
                }
                let pos = (a + shift - lo) / hf + pad as f64;
                if !(pos >= 0.0 && pos < (fine_len - 1) as f64) {
                    continue;
                }
                let w = (-0.5 * q).exp();
                let i = pos.floor() as usize;
                let f = pos - i as f64;
                bins[i] += w * (1.0 - f);
                bins[i + 1] += w * f;
            }
            (0..m)
                .map(|j| {
                    let c = pad + j * r;
                    bins[c - pad..=c + pad]
                        .iter()
                        .zip(&kernel)
                        .map(|(b, w)| b * w)
                        .sum()
                })
                .collect()
        })
        .collect();
    let mut out: Vec<f64> = rows.into_iter().flatten().collect();
    let max = out.iter().cloned().fold(0.0f64, f64::max);
    if max.is_nan() || max <= 0.0 {
        return Err(Error::invalid(format!(
            "trajectory: no data near the path in coordinate {k}"
        )));
    }
    for v in &mut out {
        *v /= max;
    }
    Ok(out)
}

fn cumulative_lengths(points: &[Vec<f64>]) -> Vec<f64> {
    let mut cum = Vec::with_capacity(points.len());
    let mut s = 0.0;
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            s += p
                .iter()
                .zip(&points[i - 1])
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
        }
        cum.push(s);
    }
    cum
}

fn arc_length(points: &[Vec<f64>]) -> f64 {
    cumulative_lengths(points).last().copied().unwrap_or(0.0)
}

/// [`resample_arc_length`] in `f64`.
fn resample(points: &[Vec<f64>], n: usize) -> Vec<Vec<f64>> {
    if points.is_empty() || n == 0 {
        return Vec::new();
    }
    let dim = points.iter().map(Vec::len).min().unwrap_or(0);
    let first = points[0][..dim].to_vec();
    let last = points[points.len() - 1][..dim].to_vec();
    if n == 1 {
        return vec![first];
    }
    let cum = cumulative_lengths(points);
    let total = cum[cum.len() - 1];
    if !total.is_finite() || total <= 0.0 {
        return vec![first; n];
    }
    let mut out = Vec::with_capacity(n);
    let mut seg = 0usize;
    for i in 0..n {
        if i + 1 == n {
            out.push(last.clone());
            break;
        }
        // numpy linspace(0, total, n) and interp.
        let s = i as f64 * (total / (n - 1) as f64);
        while seg + 2 < cum.len() && cum[seg + 1] <= s {
            seg += 1;
        }
        let (a, b) = (cum[seg], cum[seg + 1]);
        let f = if b > a {
            ((s - a) / (b - a)).clamp(0.0, 1.0)
        } else {
            1.0
        };
        out.push(
            (0..dim)
                .map(|c| points[seg][c] + f * (points[seg + 1][c] - points[seg][c]))
                .collect(),
        );
    }
    out
}

/// `n` points evenly spaced in arc length along the polyline `points` (numpy `interp` of
/// each coordinate at `linspace(0, length, n)` of the cumulative length, RECOVAR's
/// `resample_at_uniform_pts`): with `n ≥ 2` the first and last are the polyline's ends.
/// One point gives the first; a polyline of zero length gives `n` copies of its first point;
/// no points or `n = 0` give nothing. Points with unequal numbers of coordinates are cut to
/// the shortest.
pub fn resample_arc_length(points: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    let p: Vec<Vec<f64>> = points
        .iter()
        .map(|p| p.iter().map(|&v| v as f64).collect())
        .collect();
    to_f32(&resample(&p, n))
}

/// `round(linspace(0, len − 1, n))` as indices (RECOVAR's `subsample_path_indices`; numpy
/// rounds halves to even): `n` indices evenly spread over `0..len`, both ends included when
/// `n ≥ 2`. An empty sequence gives no indices.
pub fn subsample_indices(len: usize, n: usize) -> Vec<usize> {
    if len == 0 {
        return Vec::new();
    }
    let stop = (len - 1) as f64;
    (0..n)
        .map(|i| {
            let v = if n > 1 && i + 1 == n {
                stop
            } else if n > 1 {
                i as f64 * (stop / (n - 1) as f64)
            } else {
                0.0
            };
            (v.round_ties_even() as usize).min(len - 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// For a constant speed: the largest `|T·F − r|` over all nodes (`r` the distance from
    /// the start) in units of the largest spacing, and the largest relative error of `T`
    /// at least 20 largest spacings from the start.
    fn distance_error(shape: &[usize], dx: &[f64], start: &[usize], speed: f64) -> (f64, f64) {
        let n: usize = shape.iter().product();
        let t = travel_time(&vec![speed; n], shape, dx, start).unwrap();
        let h = dx.iter().cloned().fold(0.0, f64::max);
        let (mut abs, mut rel) = (0.0f64, 0.0f64);
        for (i, &ti) in t.iter().enumerate() {
            let mut r = i;
            let mut dist2 = 0.0f64;
            for k in (0..shape.len()).rev() {
                let c = (r % shape[k]) as f64 - start[k] as f64;
                r /= shape[k];
                dist2 += (c * dx[k]).powi(2);
            }
            let dist = dist2.sqrt();
            abs = abs.max((ti * speed - dist).abs() / h);
            if dist >= 20.0 * h {
                rel = rel.max((ti * speed - dist).abs() / dist);
            }
        }
        (abs, rel)
    }

    #[test]
    fn uniform_speed_gives_the_distance() {
        // 1-D: exact.
        let t = travel_time(&[2.0; 101], &[101], &[0.1], &[30]).unwrap();
        for (i, &v) in t.iter().enumerate() {
            let want = (i as f64 - 30.0).abs() * 0.1 / 2.0;
            assert!((v - want).abs() < 1e-12, "node {i}: {v} vs {want}");
        }
        // 2-D and 3-D, equal and unequal spacings. The error of the travel distance stays
        // below 0.35 of the largest spacing (it comes from the wavefront's curvature near the
        // start and barely grows afterwards), so the relative error falls like 1/distance.
        for (shape, dx, start) in [
            (vec![81, 81], vec![1.0, 1.0], vec![30, 45]),
            (vec![101, 101], vec![0.1, 0.1], vec![0, 0]),
            (vec![81, 61], vec![0.5, 1.5], vec![40, 10]),
            (vec![41, 45, 39], vec![1.0, 0.7, 1.3], vec![10, 20, 14]),
        ] {
            let (abs, rel) = distance_error(&shape, &dx, &start, 1.5);
            assert!(abs < 0.35 && rel < 0.0175, "{shape:?} {dx:?}: {abs} {rel}");
        }
    }

    #[test]
    fn twice_the_speed_halves_the_time() {
        let shape = [41, 37];
        let n = 41 * 37;
        let t1 = travel_time(&vec![1.0; n], &shape, &[0.3, 0.2], &[5, 30]).unwrap();
        let t2 = travel_time(&vec![2.0; n], &shape, &[0.3, 0.2], &[5, 30]).unwrap();
        for (a, b) in t1.iter().zip(&t2) {
            assert!((a / 2.0 - b).abs() <= 1e-12 * a, "{a} {b}");
        }
        // Speed 1 for i < 50, 2 beyond: along the row through the start the slope of T
        // halves past the interface.
        let (m0, m1) = (101, 41);
        let speed: Vec<f64> = (0..m0 * m1)
            .map(|i| if i / m1 < 50 { 1.0 } else { 2.0 })
            .collect();
        let t = travel_time(&speed, &[m0, m1], &[1.0, 1.0], &[20, 20]).unwrap();
        let at = |i: usize| t[i * m1 + 20];
        let slow = (at(45) - at(25)) / 20.0;
        let fast = (at(95) - at(60)) / 35.0;
        assert!((slow - 1.0).abs() < 1e-6, "{slow}");
        assert!((fast - 0.5).abs() < 1e-6, "{fast}");
        // The interface lies halfway between nodes 49 and 50.
        assert!((at(95) - (29.5 + 45.5 * 0.5)).abs() < 1e-6, "{}", at(95));
    }

    #[test]
    fn zero_speed_is_a_wall() {
        let t = travel_time(&[1.0, 1.0, 0.0, 1.0, 1.0], &[5], &[1.0], &[0]).unwrap();
        assert_eq!(&t[..2], &[0.0, 1.0]);
        assert!(t[2..].iter().all(|v| v.is_infinite()));
        // The start is a source whatever its own speed.
        let t = travel_time(&[0.0, 1.0, 1.0], &[3], &[0.5], &[0]).unwrap();
        assert_eq!(t, vec![0.0, 0.5, 1.0]);
    }

    /// Two wells at (±0.6, 0) joined by the upper half of the circle of radius 0.6 (a
    /// corridor of density ~1) and by the straight segment between them (density 0.02).
    fn corridor_density(m: usize) -> DensityGrid {
        let b = [-1.0f32, 1.0];
        let mut values = Vec::with_capacity(m * m);
        let node = |i: usize| -1.0 + 2.0 * i as f64 / (m - 1) as f64;
        for i in 0..m {
            for j in 0..m {
                let (x, y) = (node(i), node(j));
                let s = 0.06f64;
                let g = |d2: f64| (-d2 / (2.0 * s * s)).exp();
                let arc = if y >= 0.0 {
                    g(((x * x + y * y).sqrt() - 0.6).powi(2))
                } else {
                    g((x.abs() - 0.6).powi(2) + y * y)
                };
                let wells = g((x - 0.6).powi(2) + y * y).max(g((x + 0.6).powi(2) + y * y));
                let line = if x.abs() <= 0.6 { 0.02 * g(y * y) } else { 0.0 };
                values.push(arc.max(wells).max(line) as f32);
            }
        }
        DensityGrid {
            dim: 2,
            n_grid: m,
            bounds: vec![b, b],
            values,
        }
    }

    #[test]
    fn fixed_path_follows_the_corridor() {
        let dens = corridor_density(61);
        let (start, end) = ([-0.6f32, 0.013], [0.6f32, -0.02]);
        let p = fixed_dimensional_path(&dens, &start, &end, &PathOptions::default()).unwrap();
        assert_eq!(p.points[0], start.to_vec());
        assert_eq!(p.points.last().unwrap(), &end.to_vec());
        assert_eq!(p.points.len(), p.density.len());
        let mean = p.density.iter().sum::<f32>() / p.density.len() as f32;
        let line = crate::analysis::pairs::straight_line(&start, &end, 100);
        let line_mean = line
            .chunks_exact(2)
            .map(|q| dens.value_at(q).unwrap())
            .sum::<f32>()
            / 100.0;
        assert!(
            mean > 0.8 && mean > 5.0 * line_mean,
            "{mean} vs {line_mean}"
        );
        // Never in the empty region; over the top of the arc; steps of about 0.25 node.
        let low = p.density.iter().cloned().fold(f32::MAX, f32::min);
        println!(
            "corridor: {} points, mean {mean}, lowest {low}, line {line_mean}",
            p.points.len()
        );
        assert!(low > 0.3, "lowest density on the path {low}");
        let top = p.points.iter().map(|q| q[1]).fold(f32::MIN, f32::max);
        assert!((top - 0.6).abs() < 0.05, "top {top}");
        for w in p.points.windows(2) {
            let step = ((w[1][0] - w[0][0]).powi(2) + (w[1][1] - w[0][1]).powi(2)).sqrt();
            assert!(step < 2.0 * dens.spacing(0) as f32, "{step}");
        }
    }

    #[test]
    fn fixed_path_is_deterministic_and_handles_far_endpoints() {
        let dens = corridor_density(41);
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| {
                    fixed_dimensional_path(&dens, &[-0.6, 0.0], &[0.6, 0.0], &Default::default())
                        .unwrap()
                })
        };
        assert_eq!(run(1), run(3));
        // An end outside the grid: clipped for the search, then appended.
        let p = fixed_dimensional_path(&dens, &[-0.6, 0.0, 7.0], &[3.0, 0.0], &Default::default())
            .unwrap();
        let n = p.points.len();
        assert_eq!(p.points[0], vec![-0.6, 0.0]);
        assert_eq!(p.points[n - 1], vec![3.0, 0.0]);
        assert!(
            (p.points[n - 2][0] - 1.0).abs() < 1e-6,
            "{:?}",
            p.points[n - 2]
        );
        assert_eq!(p.density[n - 1], 0.0);
        let p = fixed_dimensional_path(&dens, &[-1e30, 1e30], &[1e30, 0.0], &Default::default())
            .unwrap();
        assert_eq!(p.points[0], vec![-1e30, 1e30]);
        assert_eq!(p.points.last().unwrap(), &vec![1e30, 0.0]);
    }

    #[test]
    fn one_dimension() {
        let m = 30;
        let dens = DensityGrid {
            dim: 1,
            n_grid: m,
            bounds: vec![[0.0, 1.0]],
            values: (0..m).map(|i| 1.0 + (i as f32 * 0.3).sin()).collect(),
        };
        let p = fixed_dimensional_path(&dens, &[0.1], &[0.9], &Default::default()).unwrap();
        assert_eq!(p.points[0], vec![0.1]);
        assert_eq!(p.points.last().unwrap(), &vec![0.9]);
        assert!(p.points.windows(2).all(|w| w[1][0] > w[0][0]));
        let zs: Vec<f32> = helix_data(400, 2, 0.05, 6);
        let s = [zs[0], zs[1]];
        let e = [zs[2], zs[3]];
        let p = high_dimensional_path(&zs, 1, &s, &e, &Default::default()).unwrap();
        assert!(p.points.iter().all(|q| q.len() == 1));
        let p = high_dimensional_path(&zs, 2, &s, &e, &Default::default()).unwrap();
        assert!(p.points.iter().all(|q| q.len() == 2));
        assert_eq!(p.points[0], s.to_vec());
    }

    fn helix(t: f64) -> [f64; 5] {
        [
            t.cos(),
            t.sin(),
            0.4 * t,
            0.5 * (2.0 * t).sin(),
            0.5 * (1.5 * t).cos(),
        ]
    }

    /// `n` points of the first `dim` coordinates of the helix, `t` uniform in [0, 1.5π],
    /// with Gaussian noise of standard deviation `sigma`.
    fn helix_data(n: usize, dim: usize, sigma: f64, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let c = helix(rng.uniform() * 1.5 * std::f64::consts::PI);
            out.extend((0..dim).map(|k| (c[k] + sigma * rng.normal()) as f32));
        }
        out
    }

    /// Largest distance from a path point to the noise-free helix (first `dim` coordinates).
    fn distance_to_helix(points: &[Vec<f32>], dim: usize) -> f64 {
        let curve: Vec<[f64; 5]> = (0..=4000)
            .map(|i| helix(i as f64 / 4000.0 * 1.5 * std::f64::consts::PI))
            .collect();
        points
            .iter()
            .map(|p| {
                curve
                    .iter()
                    .map(|c| {
                        (0..dim)
                            .map(|k| (p[k] as f64 - c[k]).powi(2))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .fold(f64::MAX, f64::min)
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn high_dimensional_path_follows_a_helix_in_3d() {
        let sigma = 0.05;
        let zs = helix_data(3000, 3, sigma, 1);
        let start: Vec<f32> = helix(0.4)[..3].iter().map(|&v| v as f32).collect();
        let end: Vec<f32> = helix(4.2)[..3].iter().map(|&v| v as f32).collect();
        let p = high_dimensional_path(&zs, 3, &start, &end, &PathOptions::default()).unwrap();
        assert_eq!(p.points[0], start);
        assert_eq!(p.points.last().unwrap(), &end);
        let far = distance_to_helix(&p.points, 3);
        println!(
            "3-D helix: {} points, {far:.3} from the helix",
            p.points.len()
        );
        // The chord between the endpoints passes ~0.9 from the helix.
        assert!(far < 4.0 * sigma, "path strays {far} from the helix");
        assert!(p.density.iter().all(|&v| v > 0.05), "{:?}", p.density);
    }

    #[test]
    fn high_dimensional_path_adds_coordinates_one_by_one() {
        // 5-D with a first pass on 2 axes (public: 4 axes, too slow in debug builds): three
        // 2-D passes add coordinates 2, 3, 4.
        let sigma = 0.05;
        let zs = helix_data(2000, 5, sigma, 2);
        let start: Vec<f32> = helix(0.4).iter().map(|&v| v as f32).collect();
        let end: Vec<f32> = helix(4.2).iter().map(|&v| v as f32).collect();
        let opts = PathOptions::default();
        let p = high_dimensional_path_with(&zs, 5, &start, &end, &opts, 2, 50).unwrap();
        assert_eq!(p.points[0], start);
        assert_eq!(p.points.last().unwrap(), &end);
        assert!(p.points.iter().all(|q| q.len() == 5));
        let far = distance_to_helix(&p.points, 5);
        println!(
            "5-D helix: {} points, {far:.3} from the helix",
            p.points.len()
        );
        assert!(far < 5.0 * sigma, "path strays {far} from the helix");
        // Evenly spaced after the last resampling (but for the exact ends).
        let steps: Vec<f64> = p.points[1..p.points.len() - 1]
            .windows(2)
            .map(|w| {
                (0..5)
                    .map(|k| (w[1][k] as f64 - w[0][k] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let (lo, hi) = steps
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), &s| (a.min(s), b.max(s)));
        // (Chords are a little shorter than the arc where they cut a corner.)
        assert!(hi - lo < 0.02 * hi, "{lo} {hi}");
    }

    #[test]
    fn slice_density_matches_a_direct_kde() {
        let zs = helix_data(300, 3, 0.1, 3);
        let path: Vec<Vec<f64>> = (0..7)
            .map(|i| helix(0.5 * i as f64)[..2].to_vec())
            .collect();
        let bounds = percentile_bounds(&zs, 3, 3, 1.0).unwrap();
        let [lo, hi] = [bounds[2][0] as f64, bounds[2][1] as f64];
        let m = 40;
        let got = slice_density(&zs, 3, 2, &path, [lo, hi], m).unwrap();
        let h = kde_covariance(&zs, 3, 3).unwrap();
        let l = cholesky(&h, 3).unwrap();
        let mut want = Vec::new();
        for x in &path {
            for j in 0..m {
                let c = lo + j as f64 * (hi - lo) / (m - 1) as f64;
                let pt = [x[0], x[1], c];
                let v: f64 = zs
                    .chunks_exact(3)
                    .map(|z| {
                        let mut y = [0.0f64; 3];
                        for i in 0..3 {
                            let s: f64 = (0..i).map(|j| l[i * 3 + j] * y[j]).sum();
                            y[i] = (pt[i] - z[i] as f64 - s) / l[i * 3 + i];
                        }
                        (-0.5 * y.iter().map(|v| v * v).sum::<f64>()).exp()
                    })
                    .sum();
                want.push(v);
            }
        }
        let max = want.iter().cloned().fold(0.0, f64::max);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b / max).abs())
            .fold(0.0, f64::max);
        assert!(err < 3e-3, "max error {err}");
    }

    #[test]
    fn resampling_and_subsampling() {
        let pts = vec![vec![0.0f32, 0.0], vec![1.0, 0.0], vec![1.0, 1.0]];
        assert_eq!(
            resample_arc_length(&pts, 5),
            vec![
                vec![0.0, 0.0],
                vec![0.5, 0.0],
                vec![1.0, 0.0],
                vec![1.0, 0.5],
                vec![1.0, 1.0]
            ]
        );
        let dup = vec![vec![0.0f32, 0.0], vec![0.0, 0.0], vec![2.0, 0.0]];
        assert_eq!(
            resample_arc_length(&dup, 3),
            vec![vec![0.0, 0.0], vec![1.0, 0.0], vec![2.0, 0.0]]
        );
        assert_eq!(resample_arc_length(&pts, 1), vec![vec![0.0, 0.0]]);
        assert!(resample_arc_length(&pts, 0).is_empty());
        assert!(resample_arc_length(&[], 4).is_empty());
        assert_eq!(
            resample_arc_length(&[vec![1.0, 2.0], vec![1.0, 2.0]], 3),
            vec![vec![1.0, 2.0]; 3]
        );

        assert_eq!(subsample_indices(10, 4), vec![0, 3, 6, 9]);
        assert_eq!(subsample_indices(6, 4), vec![0, 2, 3, 5]);
        // Halves to even: 2.5 → 2, 1.5 → 2, 3.5 → 4.
        assert_eq!(subsample_indices(6, 3), vec![0, 2, 5]);
        assert_eq!(subsample_indices(4, 3), vec![0, 2, 3]);
        assert_eq!(subsample_indices(8, 3), vec![0, 4, 7]);
        assert_eq!(subsample_indices(1, 3), vec![0, 0, 0]);
        assert_eq!(subsample_indices(5, 1), vec![0]);
        assert!(subsample_indices(0, 3).is_empty());
        assert!(subsample_indices(5, 0).is_empty());
    }

    #[test]
    fn bad_input_is_refused() {
        let ok = [1.0; 9];
        assert!(
            travel_time(&ok, &[3, 3], &[1.0, 1.0], &[3, 0]).is_err(),
            "start outside"
        );
        assert!(
            travel_time(&ok, &[3, 3], &[1.0, 1.0], &[1]).is_err(),
            "start length"
        );
        assert!(travel_time(&ok[..8], &[3, 3], &[1.0, 1.0], &[1, 1]).is_err());
        assert!(travel_time(&ok, &[3, 3], &[1.0, 0.0], &[1, 1]).is_err());
        assert!(travel_time(&ok, &[3, 3], &[1.0], &[1, 1]).is_err());
        assert!(travel_time(&ok, &[], &[], &[]).is_err());
        assert!(travel_time(&[], &[0, 3], &[1.0, 1.0], &[0, 0]).is_err());
        let mut bad = ok;
        bad[4] = f64::NAN;
        assert!(travel_time(&bad, &[3, 3], &[1.0, 1.0], &[1, 1]).is_err());
        bad[4] = -1.0;
        assert!(travel_time(&bad, &[3, 3], &[1.0, 1.0], &[1, 1]).is_err());
        let e = travel_time(&[0.0; 9], &[3, 3], &[1.0, 1.0], &[1, 1]).unwrap_err();
        assert!(e.to_string().contains("zero everywhere"), "{e}");

        let dens = corridor_density(21);
        let opts = PathOptions::default();
        let fixed = |s: &[f32], e: &[f32]| fixed_dimensional_path(&dens, s, e, &opts);
        assert!(fixed(&[f32::NAN, 0.0], &[0.6, 0.0]).is_err());
        assert!(fixed(&[-0.6, 0.0], &[0.6, f32::INFINITY]).is_err());
        assert!(fixed(&[-0.6], &[0.6, 0.0]).is_err());
        assert!(fixed(&[-0.6, 0.0], &[]).is_err());
        let mut zero = dens.clone();
        zero.values.iter_mut().for_each(|v| *v = 0.0);
        let e = fixed_dimensional_path(&zero, &[0.0, 0.0], &[0.5, 0.5], &opts).unwrap_err();
        assert!(e.to_string().contains("zero everywhere"), "{e}");
        let mut nan = dens.clone();
        nan.values[7] = f32::NAN;
        assert!(fixed_dimensional_path(&nan, &[0.0, 0.0], &[0.5, 0.5], &opts).is_err());
        let mut short = dens.clone();
        short.values.pop();
        assert!(fixed_dimensional_path(&short, &[0.0, 0.0], &[0.5, 0.5], &opts).is_err());
        let mut flat = dens.clone();
        flat.bounds[1] = [1.0, 1.0];
        assert!(fixed_dimensional_path(&flat, &[0.0, 0.0], &[0.5, 0.5], &opts).is_err());
        for o in [
            PathOptions { eps: 0.0, ..opts },
            PathOptions { n_theta: 1, ..opts },
            PathOptions {
                step: f64::NAN,
                ..opts
            },
            PathOptions {
                max_eps: f64::INFINITY,
                ..opts
            },
        ] {
            assert!(fixed_dimensional_path(&dens, &[0.0, 0.0], &[0.5, 0.5], &o).is_err());
        }

        let zs = helix_data(200, 3, 0.05, 4);
        let high = |zs: &[f32], zdim: usize, s: &[f32], e: &[f32]| {
            high_dimensional_path(zs, zdim, s, e, &opts)
        };
        assert!(high(&zs, 3, &[0.0, 0.0], &[1.0, 0.0, 0.0]).is_err());
        assert!(high(&zs, 3, &[0.0, 0.0, f32::NAN], &[1.0, 0.0, 0.0]).is_err());
        assert!(high(&zs, 0, &[], &[]).is_err());
        assert!(high(&zs[..299], 3, &[0.0; 3], &[1.0, 0.0, 0.0]).is_err());
        let mut nan_zs = zs.clone();
        nan_zs[10] = f32::NAN;
        assert!(high(&nan_zs, 3, &[0.0; 3], &[1.0, 0.0, 0.0]).is_err());
    }

    #[test]
    fn start_equal_to_end() {
        let dens = corridor_density(21);
        let p =
            fixed_dimensional_path(&dens, &[0.0, 0.6], &[0.0, 0.6], &Default::default()).unwrap();
        assert_eq!(p.points, vec![vec![0.0, 0.6], vec![0.0, 0.6]]);
        let zs = helix_data(500, 3, 0.05, 5);
        let s: Vec<f32> = helix(2.0)[..3].iter().map(|&v| v as f32).collect();
        let p = high_dimensional_path_with(&zs, 3, &s, &s, &Default::default(), 2, 30).unwrap();
        assert_eq!(p.points[0], s);
        assert_eq!(p.points.last().unwrap(), &s);
    }

    #[test]
    fn directions_have_one_physical_length() {
        // 10² directions, each of physical length mean(dx) = 1.5 once scaled by dx.
        let dirs = directions(2, 10, &[1.0, 2.0]).unwrap();
        assert_eq!(dirs.len(), 100 * 2);
        for v in dirs.chunks_exact(2) {
            let len = (v[0] * 1.0).hypot(v[1] * 2.0);
            assert!((len - 1.5).abs() < 1e-12, "{len}");
        }
        // Capped at 10⁴: 6⁵ in 5-D, 3⁸ in 8-D, 2¹³ in 13-D; 14-D is refused.
        assert_eq!(directions(5, 10, &[1.0; 5]).unwrap().len(), 7776 * 5);
        assert_eq!(directions(8, 10, &[1.0; 8]).unwrap().len(), 6561 * 8);
        assert_eq!(directions(13, 10, &[1.0; 13]).unwrap().len(), 8192 * 13);
        assert!(directions(14, 10, &[1.0; 14]).is_err());
    }

    #[test]
    fn five_dimensional_density() {
        // A tube along the main diagonal of a 9⁵ grid, empty elsewhere but for the floor.
        let m = 9usize;
        let mut values = Vec::with_capacity(m.pow(5));
        for code in 0..m.pow(5) {
            let mut r = code;
            let mut c = [0.0f64; 5];
            for k in (0..5).rev() {
                c[k] = (r % m) as f64;
                r /= m;
            }
            let mean = c.iter().sum::<f64>() / 5.0;
            let off2: f64 = c.iter().map(|v| (v - mean).powi(2)).sum();
            values.push((-off2 / 2.0).exp() as f32);
        }
        let dens = DensityGrid {
            dim: 5,
            n_grid: m,
            bounds: vec![[0.0, 8.0]; 5],
            values,
        };
        let (s, e) = ([0.5f32; 5], [7.6f32; 5]);
        let p = fixed_dimensional_path(&dens, &s, &e, &Default::default()).unwrap();
        assert_eq!(p.points[0], s.to_vec());
        assert_eq!(p.points.last().unwrap(), &e.to_vec());
        assert!(p.density.iter().all(|&v| v > 0.3), "{:?}", p.density);
    }

    #[test]
    #[ignore = "timing: cargo test --release -p recovar-core --lib trajectory_timing -- --ignored --nocapture"]
    fn trajectory_timing() {
        use std::time::Instant;
        for shape in [vec![50usize; 4], vec![200, 200]] {
            let n: usize = shape.iter().product();
            let mut rng = Rng::new(7);
            let speed: Vec<f64> = (0..n).map(|_| 0.5 + rng.uniform()).collect();
            let dx = vec![0.1; shape.len()];
            let start = vec![shape[0] / 3; shape.len()];
            let t0 = Instant::now();
            let t = travel_time(&speed, &shape, &dx, &start).unwrap();
            println!(
                "travel_time on {shape:?}: {:.2} s (max T {:.3})",
                t0.elapsed().as_secs_f64(),
                t.iter().cloned().fold(0.0, f64::max)
            );
        }
        // A 4-D density: the KDE of a noisy 4-D helix, from one end to the other.
        let zs = helix_data(20_000, 4, 0.05, 8);
        let dens = crate::analysis::kde::kde_grid(&zs, 4, 50, 4).unwrap();
        let s: Vec<f32> = helix(0.4)[..4].iter().map(|&v| v as f32).collect();
        let e: Vec<f32> = helix(4.2)[..4].iter().map(|&v| v as f32).collect();
        let max = dens.values.iter().cloned().fold(0.0f32, f32::max) as f64;
        let speed: Vec<f64> = dens.values.iter().map(|&v| v as f64 + 1e-5 * max).collect();
        let g = start_node(&dens.to_grid(&s), &[50; 4]);
        let t0 = Instant::now();
        travel_time(&speed, &[50; 4], &[0.1; 4], &g).unwrap();
        println!(
            "travel_time on the 50^4 density: {:.2} s",
            t0.elapsed().as_secs_f64()
        );
        let t0 = Instant::now();
        let p = fixed_dimensional_path(&dens, &s, &e, &Default::default()).unwrap();
        println!(
            "fixed_dimensional_path on 50^4: {:.2} s, {} points, stray {:.3}",
            t0.elapsed().as_secs_f64(),
            p.points.len(),
            distance_to_helix(&p.points, 4)
        );
        // 10-D: the helix in 5 coordinates, 5 more of noise.
        let mut rng = Rng::new(9);
        let base = helix_data(5000, 5, 0.05, 10);
        let zs: Vec<f32> = base
            .chunks_exact(5)
            .flat_map(|r| {
                let mut v = r.to_vec();
                v.extend((0..5).map(|_| (0.1 * rng.normal()) as f32));
                v
            })
            .collect();
        let mut s = vec![0.0f32; 10];
        let mut e = vec![0.0f32; 10];
        for k in 0..5 {
            s[k] = helix(0.4)[k] as f32;
            e[k] = helix(4.2)[k] as f32;
        }
        let t0 = Instant::now();
        let p = high_dimensional_path(&zs, 10, &s, &e, &Default::default()).unwrap();
        println!(
            "high_dimensional_path, 5000 points, zdim 10: {:.2} s, {} points, stray {:.3}",
            t0.elapsed().as_secs_f64(),
            p.points.len(),
            distance_to_helix(&p.points, 5)
        );
    }
}
