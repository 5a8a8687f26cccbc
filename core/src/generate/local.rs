//! Local, per-shell choice of the kernel bandwidth by halfset cross-validation, and the
//! recombination of the chosen estimates (algorithms.md §7.4).
//!
//! Sampling points `p` lie on a grid of step `R = round(N/maskrad_fraction)` inside the
//! ball `|p| < N/2 − R`. Around each, a sub-box of side `M = 6R` holds a hard ball of radius
//! `R`; errors and selections are made per shell of the sub-box's own Fourier grid
//! (`round(|k|)`, shells `0..3R − 1`).
//!
//! Two real boxes share one complex transform (`Z = DFT(a + i·b)`,
//! `A(k) = (Z(k) + Z̄(−k))/2`, `B(k) = (Z(k) − Z̄(−k))/(2i)`), as in
//! [`crate::reconstruct::locres`]. Points are processed in parallel; their results are
//! combined in point order, so nothing depends on the thread count.

use num_complex::Complex;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fourier::{shell_index_3d, Fft3};
use crate::reconstruct::locres::{hermitian_partners, sampling_points};

/// Below this summed ball weight a voxel is not covered and the recombined volume is 0.
const COVERAGE_FLOOR: f64 = 1e-4;
/// Sub-box side in units of the ball radius.
const SUBBOX_FACTOR: usize = 6;

/// The sampling grid and sub-box of the cross-validation.
#[derive(Clone, Debug)]
pub struct LocalGrid {
    /// Volume side.
    pub n: usize,
    /// Ball radius and grid step, voxels.
    pub radius: usize,
    /// Sub-box side `6R`.
    pub m: usize,
    /// Shells compared, `3R − 1`.
    pub n_shells: usize,
    /// Centered voxel coordinates `(x, y, z)` of the points, z slowest.
    pub points: Vec<[i64; 3]>,
}

impl LocalGrid {
    /// `R = round(n / maskrad_fraction)` voxels (the Python tool's
    /// `round((N·voxel/maskrad_fraction)/voxel)`), at least 1.
    pub fn new(n: usize, maskrad_fraction: f64) -> Result<Self> {
        if !(maskrad_fraction.is_finite() && maskrad_fraction > 0.0) {
            return Err(Error::invalid(format!(
                "--maskrad-fraction must be a positive number, got {maskrad_fraction}"
            )));
        }
        let radius = ((n as f64 / maskrad_fraction).round_ties_even() as usize).max(1);
        if 2 * radius >= n {
            return Err(Error::invalid(format!(
                "--maskrad-fraction {maskrad_fraction}: a local window of radius {radius} voxels \
                 leaves no sampling point in a box of {n}; use a larger fraction"
            )));
        }
        let points = sampling_points(n, radius, radius);
        let m = SUBBOX_FACTOR * radius;
        Ok(LocalGrid {
            n,
            radius,
            m,
            n_shells: 3 * radius - 1,
            points,
        })
    }

    /// Index of the sampling point whose cube of side `R` contains each voxel, −1 where
    /// none does (written as volume_sampling.mrc).
    pub fn sampling_map(&self) -> Vec<f32> {
        let n = self.n;
        let h = (n / 2) as i64;
        let step = self.radius as i64;
        let cells = n.div_ceil(self.radius);
        let mut lookup = vec![-1i64; cells * cells * cells];
        let cell = |c: i64| ((c + h) / step) as usize;
        for (k, p) in self.points.iter().enumerate() {
            lookup[(cell(p[2]) * cells + cell(p[1])) * cells + cell(p[0])] = k as i64;
        }
        // Voxel index c is nearest to grid node round(c/R) (nodes sit at voxel indices k·R),
        // so each point owns the cube of side R centred on it.
        let near = |c: usize| -> Option<usize> {
            let v = (c as f64 / step as f64).round() as usize;
            (v < cells).then_some(v)
        };
        let mut out = vec![-1.0f32; n * n * n];
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    if let (Some(cx), Some(cy), Some(cz)) = (near(x), near(y), near(z)) {
                        out[(z * n + y) * n + x] = lookup[(cz * cells + cy) * cells + cx] as f32;
                    }
                }
            }
        }
        out
    }
}

/// Sub-box tables shared by the workers.
struct SubBox {
    m: usize,
    n: usize,
    fft: Fft3<f32>,
    /// `round(|k|)` of every sub-box voxel (centered).
    shells: Vec<u32>,
    /// Flat index of `−k`.
    neg: Vec<u32>,
    /// Offsets `(dz, dy, dx)` of the ball's voxels.
    ball: Vec<[i64; 3]>,
}

impl SubBox {
    fn new(g: &LocalGrid) -> Self {
        let m = g.m;
        let r = g.radius as i64;
        let mut ball = Vec::new();
        for dz in -r..=r {
            for dy in -r..=r {
                for dx in -r..=r {
                    if (((dx * dx + dy * dy + dz * dz) as f64).sqrt()) < r as f64 {
                        ball.push([dz, dy, dx]);
                    }
                }
            }
        }
        SubBox {
            m,
            n: g.n,
            fft: Fft3::new(m),
            shells: shell_index_3d(m),
            neg: hermitian_partners(m),
            ball,
        }
    }

    /// Flat sub-box index of ball offset `o` (the ball's centre is at `m/2`).
    fn local(&self, o: &[i64; 3]) -> usize {
        let c = (self.m / 2) as i64;
        (((o[0] + c) as usize * self.m) + (o[1] + c) as usize) * self.m + (o[2] + c) as usize
    }

    /// Flat volume index of point `p` plus offset `o` (inside the volume for ball offsets).
    fn global(&self, p: &[i64; 3], o: &[i64; 3]) -> usize {
        let h = (self.n / 2) as i64;
        let n = self.n;
        (((p[2] + o[0] + h) as usize * n) + (p[1] + o[1] + h) as usize) * n
            + (p[0] + o[2] + h) as usize
    }

    /// `ball·crop_p(a) + i·ball·crop_q(b)` into `buf` (zeroed first).
    fn pack(
        &self,
        buf: &mut [Complex<f32>],
        p: &[i64; 3],
        a: &dyn Fn(usize) -> f32,
        q: &[i64; 3],
        b: &dyn Fn(usize) -> f32,
    ) {
        buf.fill(Complex::new(0.0, 0.0));
        for o in &self.ball {
            buf[self.local(o)].re = a(self.global(p, o));
        }
        for o in &self.ball {
            buf[self.local(o)].im = b(self.global(q, o));
        }
    }
}

/// The cross-validation state: targets `T_h` and their resampled noise weights.
pub struct CrossValidation {
    grid: LocalGrid,
    sub: SubBox,
    targets: [Vec<f32>; 2],
    /// `max(0, Re noise_small_h)` on the sub-box (centered).
    weights: [Vec<f32>; 2],
}

impl CrossValidation {
    /// From the bin-0 estimates `T_h` (raw, s = 1) and their weight volumes `L_h`
    /// (centered `N³` CTF²/σ² sums, zero outside the sphere).
    pub fn new(grid: LocalGrid, targets: [Vec<f32>; 2], lhs: [&[f64]; 2]) -> Result<Self> {
        let n = grid.n;
        let n3 = n * n * n;
        if targets.iter().any(|t| t.len() != n3) || lhs.iter().any(|l| l.len() != n3) {
            return Err(Error::invalid(
                "cross-validation: volumes of the wrong size",
            ));
        }
        let sub = SubBox::new(&grid);
        let m = grid.m;
        let fft_n = Fft3::<f32>::new(n);
        let scale = (n3 as f64 / (m * m * m) as f64) as f32;
        let weights = lhs.map(|l| {
            // IDFT3(L), crop the central M³ (real-space origin stays at the box centre),
            // DFT3, scaled by N³/M³: L resampled onto the sub-box frequencies.
            let mut v: Vec<Complex<f32>> = l.iter().map(|&x| Complex::new(x as f32, 0.0)).collect();
            fft_n.inverse(&mut v);
            let mut crop = vec![Complex::new(0.0f32, 0.0); m * m * m];
            let off = n as i64 / 2 - m as i64 / 2;
            for z in 0..m {
                for y in 0..m {
                    for x in 0..m {
                        let (gz, gy, gx) = (z as i64 + off, y as i64 + off, x as i64 + off);
                        if (0..n as i64).contains(&gz)
                            && (0..n as i64).contains(&gy)
                            && (0..n as i64).contains(&gx)
                        {
                            crop[(z * m + y) * m + x] =
                                v[((gz as usize * n) + gy as usize) * n + gx as usize];
                        }
                    }
                }
            }
            sub.fft.forward(&mut crop);
            crop.iter().map(|c| (c.re * scale).max(0.0)).collect()
        });
        Ok(CrossValidation {
            grid,
            sub,
            targets,
            weights,
        })
    }

    pub fn grid(&self) -> &LocalGrid {
        &self.grid
    }

    /// `err[p, r]` (`n_points × n_shells`) of candidate pair `(E_0[j], E_1[j])`:
    /// the whitened power per shell of `ball·(T_0 − E_1[j])` plus that of
    /// `ball·(E_0[j] − T_1)`.
    pub fn errors(&self, e0: &[f32], e1: &[f32]) -> Vec<f32> {
        let sub = &self.sub;
        let ns = self.grid.n_shells;
        let m3 = sub.m * sub.m * sub.m;
        let (t0, t1) = (&self.targets[0], &self.targets[1]);
        let a = |i: usize| t0[i] - e1[i];
        let b = |i: usize| e0[i] - t1[i];
        let per_point: Vec<Vec<f32>> = self
            .grid
            .points
            .par_iter()
            .map_init(
                || vec![Complex::new(0.0f32, 0.0); m3],
                |buf, p| {
                    sub.pack(buf, p, &a, p, &b);
                    sub.fft.forward(buf);
                    let mut err = vec![0.0f64; ns];
                    for k in 0..m3 {
                        let s = sub.shells[k] as usize;
                        if s >= ns {
                            continue;
                        }
                        let z = buf[k];
                        let zn = buf[sub.neg[k] as usize].conj();
                        let pa = (z + zn) * 0.5;
                        let pb = (z - zn) * 0.5;
                        err[s] += pa.norm_sqr() as f64 * self.weights[0][k] as f64
                            + pb.norm_sqr() as f64 * self.weights[1][k] as f64;
                    }
                    err.into_iter().map(|e| e as f32).collect()
                },
            )
            .collect();
        per_point.concat()
    }
}

/// `choice[p, r] = argmin_j err[j, p, r]` (first minimum) from `errors[j]` (each
/// `n_points × n_shells`).
pub fn choose(errors: &[Vec<f32>], n_points: usize, n_shells: usize) -> Vec<usize> {
    let mut choice = vec![0usize; n_points * n_shells];
    for (i, c) in choice.iter_mut().enumerate() {
        let mut best = f32::INFINITY;
        for (j, e) in errors.iter().enumerate() {
            if e[i] < best {
                best = e[i];
                *c = j;
            }
        }
    }
    choice
}

/// Recombination of §7.4 step 7 for one halfset, fed one final estimate at a time.
pub struct Recombiner {
    grid: LocalGrid,
    sub: SubBox,
    choice: Vec<usize>,
    out: Vec<f64>,
}

impl Recombiner {
    pub fn new(grid: LocalGrid, choice: Vec<usize>) -> Result<Self> {
        if choice.len() != grid.points.len() * grid.n_shells {
            return Err(Error::invalid(
                "recombination: choice table of the wrong size",
            ));
        }
        let sub = SubBox::new(&grid);
        let n = grid.n;
        Ok(Recombiner {
            grid,
            sub,
            choice,
            out: vec![0.0; n * n * n],
        })
    }

    /// The estimators chosen anywhere (the only final estimates worth computing).
    pub fn needed(&self, n_bins: usize) -> Vec<bool> {
        let mut w = vec![false; n_bins];
        for &c in &self.choice {
            if c < n_bins {
                w[c] = true;
            }
        }
        w
    }

    fn selects(&self, point: usize, j: usize, k: usize) -> bool {
        let ns = self.grid.n_shells;
        let s = (self.sub.shells[k] as usize).min(ns - 1);
        self.choice[point * ns + s] == j
    }

    /// Add the shells of estimate `j` (real `N³`) chosen at each point.
    pub fn add(&mut self, j: usize, est: &[f32]) {
        let ns = self.grid.n_shells;
        let pts: Vec<usize> = (0..self.grid.points.len())
            .filter(|&p| self.choice[p * ns..(p + 1) * ns].contains(&j))
            .collect();
        let m = self.sub.m;
        let m3 = m * m * m;
        let pairs: Vec<(usize, Option<usize>)> =
            pts.chunks(2).map(|c| (c[0], c.get(1).copied())).collect();
        let get = |i: usize| est[i];
        let zero = |_: usize| 0.0f32;
        // Batches bound the memory of the returned boxes; each is added in order.
        let batch = (1usize << 27) / (8 * m3).max(1);
        for group in pairs.chunks(batch.max(1)) {
            let this = &*self;
            let sub = &this.sub;
            let boxes: Vec<Vec<Complex<f32>>> = group
                .par_iter()
                .map(|&(p, q)| {
                    let mut buf = vec![Complex::new(0.0f32, 0.0); m3];
                    let pp = &this.grid.points[p];
                    let qq = q.map(|q| &this.grid.points[q]).unwrap_or(pp);
                    if q.is_some() {
                        sub.pack(&mut buf, pp, &get, qq, &get);
                    } else {
                        sub.pack(&mut buf, pp, &get, qq, &zero);
                    }
                    sub.fft.forward(&mut buf);
                    let z = buf.clone();
                    for k in 0..m3 {
                        let wp = this.selects(p, j, k) as u8 as f32;
                        let wq = q.map(|q| this.selects(q, j, k) as u8 as f32).unwrap_or(0.0);
                        let zn = z[sub.neg[k] as usize].conj();
                        buf[k] = (z[k] * (wp + wq) + zn * (wp - wq)) * 0.5;
                    }
                    sub.fft.inverse(&mut buf);
                    buf
                })
                .collect();
            for (&(p, q), b) in group.iter().zip(&boxes) {
                self.place(p, b, false);
                if let Some(q) = q {
                    self.place(q, b, true);
                }
            }
        }
    }

    /// Add the real (or imaginary) part of a sub-box around point `p` into the volume.
    fn place(&mut self, p: usize, b: &[Complex<f32>], imag: bool) {
        let n = self.grid.n as i64;
        let m = self.sub.m as i64;
        let h = n / 2;
        let c = m / 2;
        let pt = self.grid.points[p];
        for z in 0..m {
            let gz = pt[2] + h + z - c;
            if !(0..n).contains(&gz) {
                continue;
            }
            for y in 0..m {
                let gy = pt[1] + h + y - c;
                if !(0..n).contains(&gy) {
                    continue;
                }
                for x in 0..m {
                    let gx = pt[0] + h + x - c;
                    if !(0..n).contains(&gx) {
                        continue;
                    }
                    let v = b[((z * m + y) * m + x) as usize];
                    self.out[((gz * n + gy) * n + gx) as usize] +=
                        if imag { v.im } else { v.re } as f64;
                }
            }
        }
    }

    /// The recombined volume: the sum divided by the balls' overlap, 0 where uncovered.
    pub fn finish(self) -> Vec<f32> {
        let n = self.grid.n;
        let mut cover = vec![0.0f64; n * n * n];
        for p in &self.grid.points {
            for o in &self.sub.ball {
                cover[self.sub.global(p, o)] += 1.0;
            }
        }
        self.out
            .iter()
            .zip(&cover)
            .map(|(&v, &w)| {
                if w < COVERAGE_FLOOR {
                    0.0
                } else {
                    (v / w) as f32
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: usize, c: [f64; 3], s: f64) -> Vec<f32> {
        let h = (n / 2) as f64;
        let mut v = vec![0.0f32; n * n * n];
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    let d2 = (x as f64 - h - c[0]).powi(2)
                        + (y as f64 - h - c[1]).powi(2)
                        + (z as f64 - h - c[2]).powi(2);
                    v[(z * n + y) * n + x] = (-d2 / (2.0 * s * s)).exp() as f32;
                }
            }
        }
        v
    }

    #[test]
    fn grid_matches_the_spec() {
        let g = LocalGrid::new(64, 20.0).unwrap();
        assert_eq!(g.radius, 3);
        assert_eq!(g.m, 18);
        assert_eq!(g.n_shells, 8);
        // f[::3] of the centered grid −32..31: −32, −29, …, −2, 1, …; |p| < 29.
        assert!(!g.points.contains(&[0, 0, 0]));
        assert!(g.points.contains(&[1, 1, 1]));
        assert!(g.points.contains(&[-26, 1, 1]));
        assert!(!g.points.contains(&[-29, 1, 1]));
        let map = g.sampling_map();
        let k0 = g.points.iter().position(|p| *p == [1, 1, 1]).unwrap();
        assert_eq!(map[(33 * 64 + 33) * 64 + 33], k0 as f32);
        assert_eq!(map[(34 * 64 + 32) * 64 + 33], k0 as f32);
        assert!(LocalGrid::new(8, 2.0).is_err());
    }

    #[test]
    fn one_candidate_everywhere_recombines_to_itself() {
        let n = 32;
        let g = LocalGrid::new(n, 16.0).unwrap();
        let v = blob(n, [1.0, -2.0, 0.5], 4.0);
        let mut r = Recombiner::new(g.clone(), vec![3; g.points.len() * g.n_shells]).unwrap();
        r.add(3, &v);
        let out = r.finish();
        // Inside the covered region the volume comes back exactly (ball · v summed and
        // divided by the ball count), up to f32 FFT rounding.
        let mut checked = 0;
        for (i, (&a, &b)) in out.iter().zip(&v).enumerate() {
            let (z, y, x) = (i / (n * n), (i / n) % n, i % n);
            let r2 = [x, y, z]
                .iter()
                .map(|&c| (c as f64 - 16.0).powi(2))
                .sum::<f64>();
            if r2 < 8.0f64.powi(2) {
                assert!((a - b).abs() < 1e-4, "voxel {i}: {a} vs {b}");
                checked += 1;
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn shells_go_to_their_candidate() {
        // Low shells from candidate 0, high shells from candidate 1: recombining a smooth
        // blob (0) and zero (1) low-passes the blob; swapping gives the complement.
        let n = 32;
        let g = LocalGrid::new(n, 8.0).unwrap();
        let ns = g.n_shells;
        let v = blob(n, [0.0, 0.0, 0.0], 1.5);
        let zero = vec![0.0f32; n * n * n];
        let run = |low: usize| {
            let choice: Vec<usize> = (0..g.points.len() * ns)
                .map(|i| if i % ns < 3 { low } else { 1 - low })
                .collect();
            let mut r = Recombiner::new(g.clone(), choice).unwrap();
            r.add(0, &v);
            r.add(1, &zero);
            r.finish()
        };
        let lo = run(0);
        let hi = run(1);
        let c = (16 * n + 16) * n + 16;
        assert!(
            lo[c] > 0.05 && lo[c] < 0.95 * v[c],
            "low-passed centre {}",
            lo[c]
        );
        assert!((lo[c] + hi[c] - v[c]).abs() < 1e-4);
    }

    #[test]
    fn cross_validation_prefers_the_true_candidate() {
        let n = 32;
        let g = LocalGrid::new(n, 8.0).unwrap();
        let truth = blob(n, [2.0, 0.0, -1.0], 3.0);
        let wrong = blob(n, [-3.0, 1.0, 2.0], 3.0);
        let lhs = vec![1.0f64; n * n * n];
        let cv =
            CrossValidation::new(g.clone(), [truth.clone(), truth.clone()], [&lhs, &lhs]).unwrap();
        let e_good = cv.errors(&truth, &truth);
        let e_bad = cv.errors(&wrong, &wrong);
        assert!(e_good.iter().all(|&e| e.abs() < 1e-6));
        assert!(e_bad.iter().sum::<f32>() > 1.0);
        let choice = choose(&[e_bad, e_good], g.points.len(), g.n_shells);
        assert!(choice.iter().all(|&c| c == 1));
    }
}
