//! The randomized SVD of the column block in the coordinates of the block (module docs of
//! [`super`]). Two streaming passes over the columns: the Gram matrix `H = ĀᵀĀ`, then the
//! output vectors `Ā T`; everything in between is `2c`-sized.

use std::collections::HashMap;

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};
use num_complex::Complex;
use rayon::prelude::*;

use super::dense::{eigh_desc, mul, thin_q};
use super::{check_side, Basis};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Representative voxels per block of packed rows (a block is at most twice as many rows).
const REPS_PER_BLOCK: usize = 1024;
/// The Gram pass sums blocks in this many fixed chunks (partial sums added in order).
const GRAM_CHUNKS: usize = 16;
/// Blocks computed in parallel before their rows are written out.
const OUTPUT_WAVE: usize = 8;
/// Directions of `Ā` with `Λ < RANK_TOL·Λ_max` are treated as absent.
const RANK_TOL: f64 = 1e-12;

/// Which packed coordinate a row of `Ā` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// A self-conjugate voxel (every index 0 or N/2): its real part.
    SelfRe,
    /// √2 × the real part at the pair `(v, −v)`.
    PairRe,
    /// √2 × the imaginary part at `v` (minus it at `−v`).
    PairIm,
}

#[derive(Clone, Copy, Debug)]
struct Row {
    v: u32,
    /// Hermitian partner of `v` (precomputed: the index arithmetic per row and column
    /// cost as much as the GEMMs).
    p: u32,
    part: Part,
}

/// Index of the Hermitian partner of voxel `v` (`(N − i) mod N` on each axis).
#[inline]
fn flip(v: usize, n: usize) -> usize {
    let (z, y, x) = (v / (n * n), (v / n) % n, v % n);
    (((n - z) % n) * n + (n - y) % n) * n + (n - x) % n
}

/// Any index 0: the planes RECOVAR's mirror columns leave at zero.
#[inline]
fn on_boundary(v: usize, n: usize) -> bool {
    let (z, y, x) = (v / (n * n), (v / n) % n, v % n);
    z == 0 || y == 0 || x == 0
}

struct Columns<'a> {
    n: usize,
    cols: &'a [Vec<Complex<f32>>],
    /// Column has `kx > 0` (gets its mirror, weight 2 off the boundary planes).
    mirrored: Vec<bool>,
    /// `1/√N³`: packed coordinates are an isometry onto real space.
    scale: f64,
}

impl Columns<'_> {
    fn width(&self) -> usize {
        2 * self.cols.len()
    }

    /// Column-major block of packed rows for the representatives `reps`, all-zero rows
    /// dropped (support outside which every column vanishes costs nothing).
    fn block(&self, reps: &[u32]) -> Block {
        let n = self.n;
        // Partner and boundary flag of each representative, once per block (not per
        // column).
        let info: Vec<(usize, usize, bool)> = reps
            .iter()
            .map(|&v| {
                let v = v as usize;
                (v, flip(v, n), on_boundary(v, n))
            })
            .collect();
        let mut rows = Vec::with_capacity(2 * reps.len());
        for &(v, p, _) in &info {
            let (v, p) = (v as u32, p as u32);
            if p == v {
                rows.push(Row {
                    v,
                    p,
                    part: Part::SelfRe,
                });
            } else {
                rows.push(Row {
                    v,
                    p,
                    part: Part::PairRe,
                });
                rows.push(Row {
                    v,
                    p,
                    part: Part::PairIm,
                });
            }
        }
        let nr = rows.len();
        let w = self.width();
        let mut data = vec![0.0f64; nr * w];
        let s = self.scale;
        let h = std::f64::consts::FRAC_1_SQRT_2 * s;
        let mut nonzero = vec![false; nr];
        for ((j, col), pair_of_cols) in self.cols.iter().enumerate().zip(data.chunks_mut(2 * nr)) {
            let (ca, cb) = pair_of_cols.split_at_mut(nr);
            let mut r = 0;
            for &(v, p, boundary) in &info {
                let wt = if self.mirrored[j] && !boundary {
                    2.0
                } else {
                    1.0
                };
                let c = col[v];
                if p == v {
                    // Herm(wC) = w·Re c; Herm(i·wC) = −w·Im c.
                    ca[r] = wt * s * c.re as f64;
                    cb[r] = -wt * s * c.im as f64;
                    r += 1;
                } else {
                    let cp = col[p];
                    let (re, im) = (c.re as f64, c.im as f64);
                    let (pre, pim) = (cp.re as f64, cp.im as f64);
                    // Herm(wC)(v) = w(c + conj c')/2; Herm(i·wC)(v) = w·i(c − conj c')/2.
                    ca[r] = wt * h * (re + pre);
                    ca[r + 1] = wt * h * (im - pim);
                    cb[r] = -wt * h * (im + pim);
                    cb[r + 1] = wt * h * (re - pre);
                    r += 2;
                }
            }
            for ((flag, a), b) in nonzero.iter_mut().zip(ca.iter()).zip(cb.iter()) {
                *flag |= *a != 0.0 || *b != 0.0;
            }
        }
        if nonzero.iter().all(|&b| b) {
            return Block {
                data,
                nrows: nr,
                rows,
            };
        }
        let keep: Vec<usize> = (0..nr).filter(|&i| nonzero[i]).collect();
        let mut compact = Vec::with_capacity(keep.len() * w);
        for col in data.chunks(nr) {
            compact.extend(keep.iter().map(|&i| col[i]));
        }
        Block {
            data: compact,
            nrows: keep.len(),
            rows: keep.iter().map(|&i| rows[i]).collect(),
        }
    }
}

/// Packed rows of `Ā` for a block of representatives (column-major, `nrows × 2c`).
struct Block {
    data: Vec<f64>,
    nrows: usize,
    rows: Vec<Row>,
}

impl Block {
    fn mat(&self, w: usize) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.data, self.nrows, w)
    }
}

pub(super) fn randomized_svd(
    freqs: &[[i32; 3]],
    mut columns: Vec<Vec<Complex<f32>>>,
    n: usize,
    sketch_size: usize,
    keep: usize,
    seed: u64,
) -> Result<Basis> {
    let t_start = std::time::Instant::now();
    let cpu_start = super::cpu_seconds();
    let n3 = check_side(n)?;
    let c = columns.len();
    if c == 0 || freqs.len() != c {
        return Err(Error::inconsistent(format!(
            "randomized SVD: {} frequencies for {c} columns (need the same, at least one)",
            freqs.len()
        )));
    }
    if sketch_size == 0 || keep == 0 {
        return Err(Error::invalid(
            "randomized SVD: the sketch size and the number of vectors to keep must be ≥ 1",
        ));
    }
    super::check_vectors(&columns, n3, "randomized SVD column")?;
    let half = (n / 2) as i32;
    let mut index_of = HashMap::new();
    for (j, f) in freqs.iter().enumerate() {
        if f[0] < 0 || f.iter().any(|&k| k < -half || k >= half) {
            return Err(Error::invalid(format!(
                "randomized SVD: frequency {f:?} of column {j} must have kx ≥ 0 and every \
                 component in {}..{half}",
                -half
            )));
        }
        if let Some(p) = index_of.insert(*f, j) {
            return Err(Error::invalid(format!(
                "randomized SVD: frequency {f:?} given twice (columns {p} and {j})"
            )));
        }
    }
    // Columns whose mirror −ξ is also given (possible on the kx = 0 plane only).
    let mirror_of: Vec<Option<usize>> = freqs
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let m = [-f[0], -f[1], -f[2]];
            index_of.get(&m).copied().filter(|&p| p != j)
        })
        .collect();
    let is_dc: Vec<bool> = freqs.iter().map(|f| *f == [0, 0, 0]).collect();

    let mirrored: Vec<bool> = freqs.iter().map(|f| f[0] > 0).collect();
    let scale = 1.0 / (n3 as f64).sqrt();
    let cols = Columns {
        n,
        cols: &columns,
        mirrored: mirrored.clone(),
        scale,
    };
    let w = cols.width();
    let reps: Vec<u32> = (0..n3)
        .filter(|&v| v <= flip(v, n))
        .map(|v| v as u32)
        .collect();
    let blocks: Vec<&[u32]> = reps.chunks(REPS_PER_BLOCK).collect();

    // Pass 1: H = ĀᵀĀ over fixed chunks of blocks, partial sums added in chunk order.
    let per_chunk = blocks.len().div_ceil(GRAM_CHUNKS).max(1);
    let partials: Vec<Mat<f64>> = blocks
        .par_chunks(per_chunk)
        .map(|chunk| {
            let mut h = Mat::<f64>::zeros(w, w);
            for reps in chunk {
                let b = cols.block(reps);
                if b.nrows == 0 {
                    continue;
                }
                let a = b.mat(w);
                tri_matmul(
                    h.as_mut(),
                    BlockStructure::TriangularUpper,
                    Accum::Add,
                    a.transpose(),
                    BlockStructure::Rectangular,
                    a,
                    BlockStructure::Rectangular,
                    1.0,
                    Par::Seq,
                );
            }
            h
        })
        .collect();
    let mut h = Mat::<f64>::zeros(w, w);
    for p in &partials {
        h += p;
    }
    drop(partials);
    for j in 0..w {
        for i in j + 1..w {
            h[(i, j)] = h[(j, i)];
        }
    }

    // Ā = Q_A R_A with R_A = Λ^½ Vᵀ on the numerically present directions.
    let (lam, v) = eigh_desc(h.as_ref(), "randomized SVD Gram matrix")?;
    let lam_max = lam.first().copied().unwrap_or(0.0);
    if lam_max.is_nan() || lam_max <= 0.0 {
        return Err(Error::invalid("randomized SVD: every column is zero"));
    }
    let r = lam.iter().take_while(|&&l| l > RANK_TOL * lam_max).count();
    let ra = Mat::<f64>::from_fn(r, w, |i, j| lam[i].sqrt() * v[(j, i)]);

    // Test coefficients F ~ N(0, D), D = 2m³·ΦΦᵀ (module docs).
    let expanded = c + freqs.iter().filter(|f| f[0] > 0).count();
    let q0 = sketch_size.min(expanded);
    let mut f = Mat::<f64>::zeros(w, q0);
    let mut rng = Rng::new(seed);
    for s in 0..q0 {
        for j in 0..c {
            if is_dc[j] {
                f[(2 * j, s)] = std::f64::consts::SQRT_2 * rng.normal();
            } else if let Some(p) = mirror_of[j].filter(|&p| p < j) {
                f[(2 * j, s)] = f[(2 * p, s)];
                f[(2 * j + 1, s)] = -f[(2 * p + 1, s)];
            } else {
                f[(2 * j, s)] = rng.normal();
                f[(2 * j + 1, s)] = rng.normal();
            }
        }
    }
    let mut d = Mat::<f64>::zeros(w, w);
    for j in 0..c {
        d[(2 * j, 2 * j)] += 1.0;
        d[(2 * j + 1, 2 * j + 1)] += 1.0;
        let mirror = if is_dc[j] { Some(j) } else { mirror_of[j] };
        if let Some(p) = mirror {
            d[(2 * j, 2 * p)] += 1.0;
            d[(2 * j + 1, 2 * p + 1)] -= 1.0;
        }
    }

    // Q = Q_A Q_s; B Bᵀ = Q_sᵀ R_A ΦΦᵀ R_Aᵀ Q_s.
    let ys = mul(ra.as_ref(), f.as_ref());
    let qs = thin_q(ys.as_ref());
    let mm = mul(qs.transpose(), ra.as_ref());
    let k_mat = mul(mul(mm.as_ref(), d.as_ref()).as_ref(), mm.transpose());
    let (mu, us) = eigh_desc(k_mat.as_ref(), "randomized SVD small matrix")?;
    let k = keep.min(qs.ncols());
    let values: Vec<f64> = mu[..k]
        .iter()
        .map(|&m| (m.max(0.0) / (2.0 * n3 as f64)).sqrt())
        .collect();
    // T = V_r Λ^{-½} Q_s U_B[:, :k].
    let vr = Mat::<f64>::from_fn(w, r, |i, j| v[(i, j)] / lam[j].sqrt());
    let t = mul(
        mul(vr.as_ref(), qs.as_ref()).as_ref(),
        us.as_ref().subcols(0, k),
    );

    // Pass 2: the vectors Ā T, unpacked into Hermitian spectra, written over the first k
    // columns: the output at a voxel pair {v, −v} depends only on the columns there, blocks
    // cover disjoint pairs, and each block is read before anything is written, so the basis
    // needs no memory of its own (at N = 128: 5 GB of columns, not 5 + 3.4 GB).
    let unpack = (n3 as f64).sqrt();
    let pair = unpack * std::f64::consts::FRAC_1_SQRT_2;
    // The packed block has 2c real directions, so up to 2c vectors: room for those beyond c.
    if k > c {
        columns.resize_with(k, || vec![Complex::new(0.0f32, 0.0); n3]);
    }
    for wave in blocks.chunks(OUTPUT_WAVE) {
        let outs: Vec<(Vec<Row>, Mat<f64>)> = {
            let view = Columns {
                n,
                cols: &columns[..c],
                mirrored: mirrored.clone(),
                scale,
            };
            wave.par_iter()
                .map(|reps| {
                    let b = view.block(reps);
                    let mut o = Mat::<f64>::zeros(b.nrows, k);
                    matmul(
                        o.as_mut(),
                        Accum::Replace,
                        b.mat(w),
                        t.as_ref(),
                        1.0,
                        Par::Seq,
                    );
                    (b.rows, o)
                })
                .collect()
        };
        columns[..k].par_iter_mut().enumerate().for_each(|(j, u)| {
            for (reps, (rows, o)) in wave.iter().zip(&outs) {
                // Rows dropped as zero in every column may be non-zero in this one.
                for &v in reps.iter() {
                    let v = v as usize;
                    u[v] = Complex::new(0.0, 0.0);
                    u[flip(v, n)] = Complex::new(0.0, 0.0);
                }
                for (i, row) in rows.iter().enumerate() {
                    let val = o[(i, j)];
                    let (v, p) = (row.v as usize, row.p as usize);
                    match row.part {
                        Part::SelfRe => u[v].re = (unpack * val) as f32,
                        Part::PairRe => {
                            u[v].re = (pair * val) as f32;
                            u[p].re = (pair * val) as f32;
                        }
                        Part::PairIm => {
                            u[v].im = (pair * val) as f32;
                            u[p].im = (-pair * val) as f32;
                        }
                    }
                }
            }
        });
    }
    columns.truncate(k);
    let vectors = columns;
    tracing::info!(
        columns = c,
        rank = r,
        sketch = q0,
        kept = k,
        seconds = t_start.elapsed().as_secs_f64(),
        cpu_seconds = super::cpu_since(cpu_start),
        "randomized SVD of the covariance columns"
    );
    Ok(Basis { vectors, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_is_an_involution_and_matches_negated_frequencies() {
        let n = 6;
        for v in 0..n * n * n {
            let p = flip(v, n);
            assert_eq!(flip(p, n), v);
            let idx = [v / (n * n), (v / n) % n, v % n];
            let pi = [p / (n * n), (p / n) % n, p % n];
            for a in 0..3 {
                let k = idx[a] as i64 - 3;
                let kp = pi[a] as i64 - 3;
                // −k, wrapped into −N/2..N/2.
                assert_eq!(kp, if k == -3 { -3 } else { -k });
            }
        }
    }

    /// Real inner product of two spectra (the real-space inner product times N³).
    fn rdot(a: &[Complex<f32>], b: &[Complex<f32>]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.re as f64 * y.re as f64 + x.im as f64 * y.im as f64)
            .sum()
    }

    #[test]
    fn basis_spans_the_hermitian_columns_even_with_more_vectors_than_columns() {
        let n = 8;
        let n3 = n * n * n;
        let mut rng = crate::rng::Rng::new(5);
        // kx > 0 everywhere: the sketch has c + c = 6 columns (RECOVAR's rule), the full rank.
        let freqs = vec![[1, 0, 0], [2, 1, -1], [1, 2, 3]];
        let cols: Vec<Vec<Complex<f32>>> = (0..3)
            .map(|_| {
                (0..n3)
                    .map(|_| Complex::new(rng.normal() as f32, rng.normal() as f32))
                    .collect()
            })
            .collect();
        // Six real directions (re and im of three columns), asked for up to 8 vectors.
        let b = randomized_svd(&freqs, cols.clone(), n, 300, 8, 1).unwrap();
        assert_eq!(b.vectors.len(), 6);
        assert!(b.values.windows(2).all(|w| w[0] >= w[1]), "{:?}", b.values);
        for (i, u) in b.vectors.iter().enumerate() {
            for v in 0..n3 {
                let (a, c) = (u[v], u[flip(v, n)].conj());
                assert!((a - c).norm() < 1e-4, "vector {i} is not Hermitian at {v}");
            }
            for (j, w) in b.vectors.iter().enumerate() {
                let want = if i == j { n3 as f64 } else { 0.0 };
                assert!((rdot(u, w) - want).abs() < 1e-3 * n3 as f64, "<u{i}, u{j}>");
            }
        }
        // Every Hermitian part of every column lies in the span: a column with kx > 0 and
        // its mirror, i.e. twice the Hermitian part, except on the −N/2 planes, which are
        // their own mirrors.
        for c in &cols {
            for imag in [false, true] {
                let h: Vec<Complex<f32>> = (0..n3)
                    .map(|v| {
                        let (x, y) = (c[v], c[flip(v, n)].conj());
                        let w = if on_boundary(v, n) { 0.5 } else { 1.0 };
                        if imag {
                            (x - y) * Complex::new(0.0, w)
                        } else {
                            (x + y) * w
                        }
                    })
                    .collect();
                let norm2 = rdot(&h, &h);
                let captured: f64 = b
                    .vectors
                    .iter()
                    .map(|u| rdot(&h, u).powi(2) / n3 as f64)
                    .sum();
                assert!(
                    (captured / norm2 - 1.0).abs() < 1e-4,
                    "{captured} of {norm2}"
                );
            }
        }
    }
}
