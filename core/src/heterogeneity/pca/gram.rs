//! The projected covariance: per-image products, the Gram matrix of the packed `G_i`, its
//! re-indexing into the normal matrix, and the preconditioned CG solve (module docs of
//! [`super`]).

use std::time::{Duration, Instant};

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use num_complex::Complex;
use rayon::prelude::*;

use super::dense::{eigh_desc, mul};
use super::recombine::recombine_in_place;
use super::slicer::{HalfBall, HalfPlane};
use super::{check_vectors, Basis, SolveStats};
use crate::backend::ImageBatch;
use crate::error::{Error, Result};
use crate::forward::{cubic, Interp, SliceGeometry};
use crate::fourier::radial_to_image_2d;
use crate::heterogeneity::Context;
use crate::progress::{report, Progress};

/// Images per f32 product in the Gram update (sums over more images run in f64).
const GRAM_F32_IMAGES: usize = 32;
/// Images per Gram update `W += VᵀV` (fixed: the f64 sums then never depend on the batch
/// size; large enough that each update streams `W` once per 256 images).
const GRAM_GROUP: usize = 256;
/// Fixed row chunks of the matrix-vector product (private partial sums, added in order).
const GEMV_CHUNKS: usize = 32;
/// Images whose per-image products are computed in parallel before being summed in order.
const SUB_BATCH: usize = 64;
/// Relative residual at which CG stops.
const CG_TOL: f64 = 1e-10;
/// CG iteration cap.
const CG_MAX_ITER: usize = 2000;
/// RECOVAR's Tikhonov scale: `ε = 1e-6·trace(L)/P`.
const TIKHONOV: f64 = 1e-6;
/// RECOVAR's floor for non-positive eigenvalues.
const EIGEN_FLOOR: f64 = 1e-16;
/// Refuse normal matrices above this size (q ≈ 300 at 32 GiB).
const MAX_NORMAL_BYTES: usize = 32 << 30;

/// Index of the pair `(a, c)`, `a ≤ c`, in the row-major upper triangle of a `q × q` matrix
/// (numpy's `triu_indices` order, RECOVAR's svec order).
#[inline(always)]
fn pair(a: usize, c: usize, q: usize) -> usize {
    a * (2 * q - a + 1) / 2 + (c - a)
}

/// The same for an unordered pair.
#[inline(always)]
fn upair(a: usize, c: usize, q: usize) -> usize {
    if a <= c {
        pair(a, c, q)
    } else {
        pair(c, a, q)
    }
}

/// svec scale of pair `(a, c)`: 1 on the diagonal, √2 off it.
#[inline(always)]
fn svec_scale(a: usize, c: usize) -> f64 {
    if a == c {
        1.0
    } else {
        std::f64::consts::SQRT_2
    }
}

/// The pairs `(a, c)` of every svec index.
fn pairs(q: usize) -> Vec<(usize, usize)> {
    (0..q).flat_map(|a| (a..q).map(move |c| (a, c))).collect()
}

/// A symmetric `P × P` matrix (svec indices of a `q × q` matrix) stored as its upper block
/// triangle, in f64.
///
/// The rows are split into blocks at the boundaries between first indices `a` of the pairs
/// (`pair(a, a)`), each block at least [`BLOCK_ROWS`] rows. Block row `I` (rows
/// `[r0, r1)`, `h = r1 − r0`) is one dense column-major `h × (P − r0)` matrix holding
/// columns `r0..P`: its first `h` columns are the symmetric diagonal block, stored in full,
/// the rest the off-diagonal blocks. Why this layout:
/// - the Gram update of a block row is a single GEMM (`faer`, SIMD) with no scatter;
/// - every entry that the re-indexing into `L` touches for the index multisets with smallest
///   index `a` lies in the rows of `a`, so block rows are independent parallel tasks;
/// - the CG matrix-vector product runs as `faer` GEMVs over cache-sized column tiles, each
///   tile read from memory once for both `y_I += T x_J` and `y_J += Tᵀ x_I` (the old packed
///   row-by-row loop was scalar and compute-bound: 2/3 of the stage's time).
///
/// Memory: `P(P+1)/2` plus half a diagonal block per block row (≈1 % at q = 200).
pub(super) struct SymPacked {
    p: usize,
    /// Block row boundaries (`bounds[0] = 0`, last `= P`).
    bounds: Vec<usize>,
    /// First index `a` of the first pair of each block (last `= q`).
    a_bounds: Vec<usize>,
    /// Offset of each block row in `data` (last `= data.len()`).
    offs: Vec<usize>,
    data: Vec<f64>,
}

/// Minimum rows per block row (several first indices are merged until reached).
const BLOCK_ROWS: usize = 128;
/// Column tile of the matrix-vector product (a `h × TILE_COLS` f64 tile stays in L2).
const TILE_COLS: usize = 256;

impl SymPacked {
    fn zeros(q: usize) -> Result<Self> {
        let p = q * (q + 1) / 2;
        let mut bounds = vec![0usize];
        let mut a_bounds = vec![0usize];
        let mut rows = 0usize;
        for a in 0..q {
            rows += q - a;
            if rows >= BLOCK_ROWS || a + 1 == q {
                bounds.push(pair(a, a, q) + (q - a));
                a_bounds.push(a + 1);
                rows = 0;
            }
        }
        let mut offs = vec![0usize];
        let mut len = 0usize;
        for w in bounds.windows(2) {
            len = (w[1] - w[0])
                .checked_mul(p - w[0])
                .and_then(|v| v.checked_add(len))
                .filter(|v| v.checked_mul(8).is_some_and(|b| b <= MAX_NORMAL_BYTES))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "projected covariance: the normal matrix for {p} unknowns would \
                         exceed {} GiB; use fewer PCs",
                        MAX_NORMAL_BYTES >> 30
                    ))
                })?;
            offs.push(len);
        }
        Ok(SymPacked {
            p,
            bounds,
            a_bounds,
            offs,
            data: vec![0.0; len],
        })
    }

    fn blocks(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Block row holding row `x`.
    #[cfg(test)]
    fn block_of(&self, x: usize) -> usize {
        self.bounds.partition_point(|&b| b <= x) - 1
    }

    /// Index of entry `(x, y)`, `x ≤ y`, in `data`.
    #[cfg(test)]
    fn index(&self, x: usize, y: usize) -> usize {
        let i = self.block_of(x);
        let r0 = self.bounds[i];
        let h = self.bounds[i + 1] - r0;
        self.offs[i] + (y - r0) * h + (x - r0)
    }

    /// The block rows as `(block, r0, h, data)`.
    fn block_rows_mut(&mut self) -> Vec<(usize, usize, usize, &mut [f64])> {
        let mut out = Vec::with_capacity(self.blocks());
        let mut rest = self.data.as_mut_slice();
        for i in 0..self.bounds.len() - 1 {
            let (head, tail) = rest.split_at_mut(self.offs[i + 1] - self.offs[i]);
            out.push((i, self.bounds[i], self.bounds[i + 1] - self.bounds[i], head));
            rest = tail;
        }
        out
    }

    /// `W += Vᵀ V` for the `g × P` row-major `v` (the packed `G_i` of `g` images, f32 as
    /// computed). Per block row and column tile (an f64 tile of `W` and an f32 product stay
    /// in L2), the images go through f32 GEMMs [`GRAM_F32_IMAGES`] at a time, each product
    /// added into the f64 tile: twice the f64 GEMM rate, with every sum over more than
    /// [`GRAM_F32_IMAGES`] images in f64 (the f32 rounding of a product of f32 inputs summed
    /// over a few dozen images is of the order of the inputs' own rounding). The diagonal
    /// block is computed in full (≈1 % extra work) so that it is symmetric as stored.
    fn add_gram(&mut self, v: &[f32], g: usize) {
        let p = self.p;
        let vm = MatRef::from_row_major_slice(v, g, p);
        self.block_rows_mut()
            .into_par_iter()
            .for_each(|(_, r0, h, block)| {
                let ncols = p - r0;
                let mut tmp = vec![0.0f32; h * TILE_COLS];
                let vi = vm.subcols(r0, h);
                for c0 in (0..ncols).step_by(TILE_COLS) {
                    let wc = TILE_COLS.min(ncols - c0);
                    let vj = vm.subcols(r0 + c0, wc);
                    let dst = &mut block[c0 * h..(c0 + wc) * h];
                    for k0 in (0..g).step_by(GRAM_F32_IMAGES) {
                        let kk = GRAM_F32_IMAGES.min(g - k0);
                        let t = MatMut::from_column_major_slice_mut(&mut tmp[..h * wc], h, wc);
                        matmul(
                            t,
                            Accum::Replace,
                            vi.subrows(k0, kk).transpose(),
                            vj.subrows(k0, kk),
                            1.0f32,
                            Par::Seq,
                        );
                        for (d, s) in dst.iter_mut().zip(&tmp[..h * wc]) {
                            *d += *s as f64;
                        }
                    }
                }
            });
    }

    /// Rewrite the Gram matrix `W[{a,c},{b,d}] = Σ_i G_i[a,c] G_i[b,d]` into the normal
    /// matrix `L` (module docs of [`super`]), in place. All entries of both that involve the
    /// index multiset `{a ≤ b ≤ c ≤ d}` sit in rows whose pair starts with `a`, hence in one
    /// block row: block rows are independent parallel tasks. The upper triangle of each
    /// diagonal block is rewritten, then mirrored to its lower triangle.
    fn gram_to_normal(&mut self, q: usize) {
        let p = self.p;
        let a_bounds = self.a_bounds.clone();
        self.block_rows_mut()
            .into_par_iter()
            .for_each(|(blk, r0, h, block)| {
                let at = |x: usize, y: usize| (y - r0) * h + (x - r0);
                // A position: the two pairs, smaller pair index first.
                let pos = |p1: (usize, usize), p2: (usize, usize)| {
                    let (x, y) = (upair(p1.0, p1.1, q), upair(p2.0, p2.1, q));
                    let s1 = (p1.0.min(p1.1), p1.0.max(p1.1));
                    let s2 = (p2.0.min(p2.1), p2.0.max(p2.1));
                    if x <= y {
                        (x, y, s1, s2)
                    } else {
                        (y, x, s2, s1)
                    }
                };
                for a in a_bounds[blk]..a_bounds[blk + 1] {
                    for b in a..q {
                        for c in b..q {
                            for d in c..q {
                                let ps = [
                                    pos((a, b), (c, d)),
                                    pos((a, c), (b, d)),
                                    pos((a, d), (b, c)),
                                ];
                                let w = ps.map(|t| block[at(t.0, t.1)]);
                                let get = |x: usize, y: usize| -> f64 {
                                    let (x, y) = (x.min(y), x.max(y));
                                    ps.iter()
                                        .zip(&w)
                                        .find(|(t, _)| t.0 == x && t.1 == y)
                                        .map_or(0.0, |(_, &v)| v)
                                };
                                let mut new = [0.0f64; 3];
                                for (k, t) in ps.iter().enumerate() {
                                    let ((r, c1), (r2, c2)) = (t.2, t.3);
                                    let mut v = get(upair(r, r2, q), upair(c1, c2, q));
                                    if r2 != c2 {
                                        v += get(upair(r, c2, q), upair(c1, r2, q));
                                    }
                                    new[k] = v * svec_scale(r, c1) / svec_scale(r2, c2);
                                }
                                for (t, v) in ps.iter().zip(new) {
                                    block[at(t.0, t.1)] = v;
                                }
                            }
                        }
                    }
                }
                debug_assert!(r0 + h <= p);
                for j in 0..h {
                    for i in j + 1..h {
                        block[j * h + i] = block[i * h + j];
                    }
                }
            });
    }

    /// Fixed groups of consecutive block rows with about equal storage, for the
    /// matrix-vector product (private partial sums, added in group order).
    fn gemv_chunks(&self) -> Vec<usize> {
        let nb = self.blocks();
        let total = self.data.len();
        let mut out = vec![0usize];
        for k in 1..GEMV_CHUNKS {
            let target = total * k / GEMV_CHUNKS;
            let b = self.offs.partition_point(|&o| o < target).min(nb);
            if b > *out.last().unwrap_or(&0) && b < nb {
                out.push(b);
            }
        }
        out.push(nb);
        out
    }

    /// `y = (W + eps·I) x`.
    fn apply(&self, chunks: &[usize], eps: f64, x: &[f64], y: &mut [f64]) {
        let p = self.p;
        let partials: Vec<Vec<f64>> = chunks
            .par_windows(2)
            .map(|w| {
                let mut yl = vec![0.0f64; p];
                for i in w[0]..w[1] {
                    let (r0, r1) = (self.bounds[i], self.bounds[i + 1]);
                    let h = r1 - r0;
                    let m = MatRef::from_column_major_slice(
                        &self.data[self.offs[i]..self.offs[i + 1]],
                        h,
                        p - r0,
                    );
                    let xi = MatRef::from_column_major_slice(&x[r0..r1], h, 1);
                    // y_I collects the diagonal block and every tile; y_J the transposes.
                    let mut yi = vec![0.0f64; h];
                    let mut c = 0;
                    while c < p - r0 {
                        let w = if c == 0 { h } else { TILE_COLS.min(p - r0 - c) };
                        let t = m.subcols(c, w);
                        matmul(
                            MatMut::from_column_major_slice_mut(&mut yi, h, 1),
                            Accum::Add,
                            t,
                            MatRef::from_column_major_slice(&x[r0 + c..r0 + c + w], w, 1),
                            1.0,
                            Par::Seq,
                        );
                        if c > 0 {
                            matmul(
                                MatMut::from_column_major_slice_mut(
                                    &mut yl[r0 + c..r0 + c + w],
                                    w,
                                    1,
                                ),
                                Accum::Add,
                                t.transpose(),
                                xi,
                                1.0,
                                Par::Seq,
                            );
                        }
                        c += w;
                    }
                    for (d, s) in yl[r0..r1].iter_mut().zip(&yi) {
                        *d += s;
                    }
                }
                yl
            })
            .collect();
        for (yv, xv) in y.iter_mut().zip(x) {
            *yv = eps * xv;
        }
        for part in &partials {
            for (yv, pv) in y.iter_mut().zip(part) {
                *yv += pv;
            }
        }
    }

    fn trace(&self) -> f64 {
        (0..self.blocks())
            .map(|i| {
                let h = self.bounds[i + 1] - self.bounds[i];
                (0..h)
                    .map(|j| self.data[self.offs[i] + j * h + j])
                    .sum::<f64>()
            })
            .sum()
    }
}

/// `(S ⊗ S / n + εI)⁻¹` on svec vectors, `S = Σ_i G_i = E diag(e) Eᵀ`.
struct KronPreconditioner {
    q: usize,
    e: Mat<f64>,
    inv: Mat<f64>,
    pairs: Vec<(usize, usize)>,
}

impl KronPreconditioner {
    fn new(sum_g: &[f64], q: usize, n_images: usize, eps: f64) -> Result<Self> {
        let pairs = pairs(q);
        let mut s = Mat::<f64>::zeros(q, q);
        for (&(a, c), &v) in pairs.iter().zip(sum_g) {
            s[(a, c)] = v;
            s[(c, a)] = v;
        }
        let (e_vals, e) = eigh_desc(s.as_ref(), "projected covariance preconditioner")?;
        let nf = n_images.max(1) as f64;
        let inv = Mat::<f64>::from_fn(q, q, |j, k| {
            let d = e_vals[j].max(0.0) * e_vals[k].max(0.0) / nf + eps;
            if d > 0.0 {
                1.0 / d
            } else {
                1.0
            }
        });
        Ok(KronPreconditioner { q, e, inv, pairs })
    }

    fn apply(&self, x: &[f64], out: &mut [f64]) {
        let gam = smat(x, self.q, &self.pairs);
        let mut t = mul(
            mul(self.e.transpose(), gam.as_ref()).as_ref(),
            self.e.as_ref(),
        );
        for j in 0..self.q {
            for k in 0..self.q {
                t[(j, k)] *= self.inv[(j, k)];
            }
        }
        let g2 = mul(
            mul(self.e.as_ref(), t.as_ref()).as_ref(),
            self.e.transpose(),
        );
        for (o, &(a, c)) in out.iter_mut().zip(&self.pairs) {
            *o = 0.5 * (g2[(a, c)] + g2[(c, a)]) * svec_scale(a, c);
        }
    }
}

/// The symmetric matrix of an svec vector.
fn smat(x: &[f64], q: usize, pairs: &[(usize, usize)]) -> Mat<f64> {
    let mut m = Mat::<f64>::zeros(q, q);
    for (&v, &(a, c)) in x.iter().zip(pairs) {
        let val = v / svec_scale(a, c);
        m[(a, c)] = val;
        m[(c, a)] = val;
    }
    m
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solve `(L + εI) x = b` by preconditioned CG; returns `x`, iterations, relative residual.
fn pcg(
    l: &SymPacked,
    eps: f64,
    b: &[f64],
    prec: &KronPreconditioner,
    progress: &dyn Progress,
) -> Result<(Vec<f64>, usize, f64)> {
    let p = b.len();
    let bounds = l.gemv_chunks();
    let bnorm = dot(b, b).sqrt();
    if bnorm == 0.0 {
        return Ok((vec![0.0; p], 0, 0.0));
    }
    let mut x = vec![0.0; p];
    prec.apply(b, &mut x);
    let mut ax = vec![0.0; p];
    l.apply(&bounds, eps, &x, &mut ax);
    let mut r: Vec<f64> = b.iter().zip(&ax).map(|(bv, av)| bv - av).collect();
    let mut z = vec![0.0; p];
    prec.apply(&r, &mut z);
    let mut d = z.clone();
    let mut rz = dot(&r, &z);
    let mut ad = vec![0.0; p];
    let mut it = 0;
    let mut rel = dot(&r, &r).sqrt() / bnorm;
    while rel > CG_TOL && it < CG_MAX_ITER {
        it += 1;
        l.apply(&bounds, eps, &d, &mut ad);
        let dad = dot(&d, &ad);
        if dad.is_nan() || dad <= 0.0 || !rz.is_finite() {
            break;
        }
        let alpha = rz / dad;
        for ((xv, rv), (dv, adv)) in x.iter_mut().zip(r.iter_mut()).zip(d.iter().zip(&ad)) {
            *xv += alpha * dv;
            *rv -= alpha * adv;
        }
        rel = dot(&r, &r).sqrt() / bnorm;
        if rel <= CG_TOL {
            break;
        }
        prec.apply(&r, &mut z);
        let rz_new = dot(&r, &z);
        let beta = rz_new / rz;
        rz = rz_new;
        for (dv, zv) in d.iter_mut().zip(&z) {
            *dv = zv + beta * *dv;
        }
        if it % 10 == 0 {
            report(
                progress,
                "projected covariance solve",
                it as u64,
                CG_MAX_ITER as u64,
            )?;
        }
    }
    // The true residual (the recurrence drifts).
    l.apply(&bounds, eps, &x, &mut ax);
    let res: f64 = b
        .iter()
        .zip(&ax)
        .map(|(bv, av)| (bv - av) * (bv - av))
        .sum::<f64>()
        .sqrt();
    Ok((x, it, res / bnorm))
}

/// Per-image products, packed: `G` and `N` upper triangles (svec order, unscaled) and `a`.
struct ImageTerms {
    g: Vec<f32>,
    nmat: Vec<f32>,
    a: Vec<f32>,
}

struct Scratch {
    x: Vec<f32>,
    xs: Vec<f32>,
    rho: Vec<f32>,
    acc: Vec<f32>,
    g: Mat<f32>,
    nm: Mat<f32>,
    a: Mat<f32>,
}

impl Scratch {
    fn new(rows: usize, q: usize) -> Self {
        Scratch {
            x: vec![0.0; rows * q],
            xs: vec![0.0; rows * q],
            rho: vec![0.0; rows],
            acc: vec![0.0; 2 * q],
            g: Mat::zeros(q, q),
            nm: Mat::zeros(q, q),
            a: Mat::zeros(q, 1),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn image_terms(
    plane: &HalfPlane,
    ball: &HalfBall,
    q: usize,
    row_sigma: &[f32],
    rot: &[f32; 9],
    ctf: &[f32],
    resid: &[Complex<f32>],
    s: &mut Scratch,
) -> ImageTerms {
    let rows = plane.rows();
    plane.project(ball, rot, ctf, resid, &mut s.x, &mut s.rho, &mut s.acc);
    for ((dst, src), &sig) in
        s.xs.chunks_exact_mut(q)
            .zip(s.x.chunks_exact(q))
            .zip(row_sigma)
    {
        for (d, v) in dst.iter_mut().zip(src) {
            *d = sig * v;
        }
    }
    let x = MatRef::from_row_major_slice(&s.x, rows, q);
    let xs = MatRef::from_row_major_slice(&s.xs, rows, q);
    for (dst, m) in [(&mut s.g, x), (&mut s.nm, xs)] {
        tri_matmul(
            dst.as_mut(),
            BlockStructure::TriangularUpper,
            Accum::Replace,
            m.transpose(),
            BlockStructure::Rectangular,
            m,
            BlockStructure::Rectangular,
            1.0f32,
            Par::Seq,
        );
    }
    let rho = MatRef::from_column_major_slice(&s.rho, rows, 1);
    matmul(
        s.a.as_mut(),
        Accum::Replace,
        x.transpose(),
        rho,
        1.0f32,
        Par::Seq,
    );
    let p = q * (q + 1) / 2;
    let mut g = Vec::with_capacity(p);
    let mut nmat = Vec::with_capacity(p);
    for a in 0..q {
        for c in a..q {
            g.push(s.g[(a, c)]);
            nmat.push(s.nm[(a, c)]);
        }
    }
    ImageTerms {
        g,
        nmat,
        a: (0..q).map(|i| s.a[(i, 0)]).collect(),
    }
}

pub(super) fn projected_covariance(
    ctx: &Context,
    basis: Vec<Vec<Complex<f32>>>,
    progress: &dyn Progress,
) -> Result<(Basis, SolveStats)> {
    ctx.validate()?;
    let n = ctx.n();
    let d = n;
    let n3 = n * n * n;
    let q = basis.len();
    if q == 0 {
        return Err(Error::invalid("projected covariance: the basis is empty"));
    }
    check_vectors(&basis, n3, "projected covariance basis")?;
    let p = q * (q + 1) / 2;
    let mut w = SymPacked::zeros(q)?;
    let geom = SliceGeometry::new(d, n)?;
    let max_r = geom.max_radius.unwrap_or(d as f32 / 2.0 - 1.0);
    let plane = HalfPlane::new(d, max_r);
    let ball = HalfBall::new(&basis, n, max_r);
    let rows = plane.rows();
    let var_img = radial_to_image_2d(ctx.noise, d)?;
    let row_sigma = plane.row_sigma(&var_img);
    let mut mean_coef = ctx.mean.to_vec();
    cubic::prefilter(&mut mean_coef, n)?;
    let (Some(rotations), Some(ctf_params)) = (ctx.ds.rotations(), ctx.ds.ctf()) else {
        return Err(Error::invalid(
            "projected covariance needs poses and CTF parameters",
        ));
    };
    let [h0, h1] = ctx.ds.halfsets();
    let order: Vec<usize> = h0.iter().chain(h1.iter()).copied().collect();
    if order.is_empty() {
        return Err(Error::invalid("projected covariance: no images"));
    }
    let total = order.len();
    tracing::info!(
        images = total,
        basis = q,
        unknowns = p,
        normal_matrix_gib = (w.data.len() * 8) as f64 / (1u64 << 30) as f64,
        projection_basis_gib = ball.bytes() as f64 / (1u64 << 30) as f64,
        "projected covariance"
    );
    let pair_list = pairs(q);
    let npix = d * d;
    let mut rhs = vec![0.0f64; p];
    let mut sum_g = vec![0.0f64; p];
    let mut group: Vec<f32> = Vec::with_capacity(GRAM_GROUP.min(total) * p);
    let mut in_group = 0usize;
    let mut done = 0usize;
    report(progress, "projected covariance", 0, total as u64)?;
    // Phase timings for the log (profiling the stage without a profiler).
    let t_start = Instant::now();
    let cpu_start = super::cpu_seconds();
    let mut t_images = Duration::ZERO;
    let mut t_gram = Duration::ZERO;
    for chunk in order.chunks(ctx.batch_size.max(1)) {
        let m = chunk.len();
        let ImageBatch {
            spectra: mut resid,
            ctf,
            rotations: rots,
            ..
        } = ImageBatch::read(ctx.ds, ctx.backend, chunk, rotations, ctf_params)?;
        let mut proj = vec![Complex::new(0.0f32, 0.0); m * npix];
        ctx.backend
            .slice(&mean_coef, &geom, Interp::Cubic, &rots, &mut proj)?;
        // r = T y − C·P μ.
        resid
            .par_iter_mut()
            .zip(proj.par_iter())
            .zip(ctf.par_iter())
            .for_each(|((r, pm), c)| *r -= pm * *c);
        drop(proj);
        for start in (0..m).step_by(SUB_BATCH) {
            let t = Instant::now();
            let end = (start + SUB_BATCH).min(m);
            let terms: Vec<ImageTerms> = (start..end)
                .into_par_iter()
                .map_init(
                    || Scratch::new(rows, q),
                    |s, i| {
                        image_terms(
                            &plane,
                            &ball,
                            q,
                            &row_sigma,
                            &rots[i],
                            &ctf[i * npix..(i + 1) * npix],
                            &resid[i * npix..(i + 1) * npix],
                            s,
                        )
                    },
                )
                .collect();
            // Sums over images in image order, entry by entry (parallel over entries).
            const ENTRY_CHUNK: usize = 4096;
            rhs.par_chunks_mut(ENTRY_CHUNK)
                .zip(sum_g.par_chunks_mut(ENTRY_CHUNK))
                .enumerate()
                .for_each(|(ci, (rc, gc))| {
                    let base = ci * ENTRY_CHUNK;
                    for t in &terms {
                        for (k, (rv, gv)) in rc.iter_mut().zip(gc.iter_mut()).enumerate() {
                            let idx = base + k;
                            let (a, c) = pair_list[idx];
                            *rv += t.a[a] as f64 * t.a[c] as f64 - t.nmat[idx] as f64;
                            *gv += t.g[idx] as f64;
                        }
                    }
                });
            t_images += t.elapsed();
            for t in &terms {
                group.extend_from_slice(&t.g);
                in_group += 1;
                if in_group == GRAM_GROUP {
                    let t = Instant::now();
                    w.add_gram(&group, in_group);
                    t_gram += t.elapsed();
                    group.clear();
                    in_group = 0;
                }
            }
        }
        done += m;
        report(progress, "projected covariance", done as u64, total as u64)?;
    }
    if in_group > 0 {
        let t = Instant::now();
        w.add_gram(&group, in_group);
        t_gram += t.elapsed();
    }
    drop(group);
    drop(ball);
    let t_pass = t_start.elapsed();
    let cpu_pass = super::cpu_since(cpu_start);

    let t = Instant::now();
    w.gram_to_normal(q);
    let t_reindex = t.elapsed();
    let trace = w.trace();
    let eps = if trace.is_finite() && trace > 0.0 {
        TIKHONOV * trace / p as f64
    } else {
        TIKHONOV
    };
    let b: Vec<f64> = rhs
        .iter()
        .zip(&pair_list)
        .map(|(&v, &(a, c))| v * svec_scale(a, c))
        .collect();
    let prec = KronPreconditioner::new(&sum_g, q, total, eps)?;
    let t = Instant::now();
    let cpu_solve = super::cpu_seconds();
    let (x, iterations, rel) = pcg(&w, eps, &b, &prec, progress)?;
    let t_solve = t.elapsed();
    let cpu_solve = super::cpu_since(cpu_solve);
    drop(w);
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "projected covariance: the solve returned non-finite values",
        ));
    }
    tracing::info!(
        iterations,
        relative_residual = rel,
        tikhonov = eps,
        "projected covariance solved"
    );
    let gamma = smat(&x, q, &pair_list);
    let (lam, v) = eigh_desc(gamma.as_ref(), "projected covariance")?;
    let values: Vec<f64> = lam
        .iter()
        .map(|&l| if l > 0.0 { l } else { EIGEN_FLOOR })
        .collect();
    let mut vectors = basis;
    recombine_in_place(&mut vectors, v.as_ref(), None);
    tracing::info!(
        image_pass_s = t_pass.as_secs_f64(),
        image_pass_cpu_s = cpu_pass,
        image_products_s = t_images.as_secs_f64(),
        gram_s = t_gram.as_secs_f64(),
        reindex_s = t_reindex.as_secs_f64(),
        solve_s = t_solve.as_secs_f64(),
        solve_cpu_s = cpu_solve,
        total_s = t_start.elapsed().as_secs_f64(),
        total_cpu_s = super::cpu_since(cpu_start),
        "projected covariance timings"
    );
    Ok((
        Basis { vectors, values },
        SolveStats {
            images: total,
            basis_size: q,
            iterations,
            relative_residual: rel,
            tikhonov: eps,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random symmetric positive semi-definite matrices.
    fn random_g(q: usize, count: usize, seed: u64) -> Vec<Mat<f64>> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..count)
            .map(|_| {
                let a = Mat::<f64>::from_fn(q + 2, q, |_, _| rng.normal());
                // f32-representable, as the per-image products are.
                let g = a.transpose() * &a;
                Mat::<f64>::from_fn(q, q, |i, j| g[(i, j)] as f32 as f64)
            })
            .collect()
    }

    /// RECOVAR's packed left-hand side, entry by entry.
    fn python_lhs(gs: &[Mat<f64>], q: usize) -> Vec<Vec<f64>> {
        let pl = pairs(q);
        pl.iter()
            .map(|&(r, c)| {
                pl.iter()
                    .map(|&(r2, c2)| {
                        let mut v = 0.0;
                        for g in gs {
                            v += g[(r, r2)] * g[(c, c2)];
                            if r2 != c2 {
                                v += g[(r, c2)] * g[(c, r2)];
                            }
                        }
                        v * svec_scale(r, c) / svec_scale(r2, c2)
                    })
                    .collect()
            })
            .collect()
    }

    fn packed_gram(gs: &[Mat<f64>], q: usize) -> SymPacked {
        let mut w = SymPacked::zeros(q).unwrap();
        let v: Vec<f32> = gs
            .iter()
            .flat_map(|g| pairs(q).into_iter().map(move |(a, c)| g[(a, c)] as f32))
            .collect();
        w.add_gram(&v, gs.len());
        w
    }

    #[test]
    fn gram_reindexing_gives_recovar_normal_matrix() {
        for q in [1usize, 2, 3, 5, 7] {
            let gs = random_g(q, 6, q as u64);
            let mut w = packed_gram(&gs, q);
            w.gram_to_normal(q);
            let want = python_lhs(&gs, q);
            let p = q * (q + 1) / 2;
            #[allow(clippy::needless_range_loop)]
            for r in 0..p {
                for c in r..p {
                    let got = w.data[w.index(r, c)];
                    let scale = want[r][r].abs().max(1.0);
                    assert!(
                        // f32 products of f32 inputs (add_gram), summed in f32 over ≤ 32.
                        (got - want[r][c]).abs() < 1e-5 * scale,
                        "q {q} ({r},{c}): {got} vs {}",
                        want[r][c]
                    );
                    // RECOVAR's matrix is symmetric.
                    assert!((want[r][c] - want[c][r]).abs() < 1e-10 * scale);
                }
            }
        }
    }

    #[test]
    fn gram_over_several_tiles_and_groups() {
        // P = 300 > TILE: several tile rows; two groups add up.
        let q = 24;
        let gs = random_g(q, 5, 9);
        let mut w = packed_gram(&gs[..3], q);
        let v: Vec<f32> = gs[3..]
            .iter()
            .flat_map(|g| pairs(q).into_iter().map(move |(a, c)| g[(a, c)] as f32))
            .collect();
        w.add_gram(&v, 2);
        let pl = pairs(q);
        for (r, &(a, c)) in pl.iter().enumerate().step_by(7) {
            for (s, &(b, e)) in pl.iter().enumerate().skip(r) {
                let want: f64 = gs.iter().map(|g| g[(a, c)] * g[(b, e)]).sum();
                let size: f64 = gs.iter().map(|g| (g[(a, c)] * g[(b, e)]).abs()).sum();
                let got = w.data[w.index(r, s)];
                assert!((got - want).abs() < 1e-6 * size.max(1.0));
            }
        }
    }

    #[test]
    fn cg_solves_the_normal_equations() {
        let q = 6;
        let gs = random_g(q, 40, 3);
        let mut w = packed_gram(&gs, q);
        w.gram_to_normal(q);
        let truth = {
            let a = Mat::<f64>::from_fn(q, q, |i, j| ((i + 2 * j) as f64).cos());
            &a * a.transpose()
        };
        // b = svec(Σ G Γ G).
        let mut s = Mat::<f64>::zeros(q, q);
        for g in &gs {
            s += g * &truth * g;
        }
        let pl = pairs(q);
        let b: Vec<f64> = pl
            .iter()
            .map(|&(a, c)| s[(a, c)] * svec_scale(a, c))
            .collect();
        let mut sum_g = vec![0.0; pl.len()];
        for g in &gs {
            for (k, &(a, c)) in pl.iter().enumerate() {
                sum_g[k] += g[(a, c)];
            }
        }
        let prec = KronPreconditioner::new(&sum_g, q, gs.len(), 0.0).unwrap();
        let (x, it, rel) = pcg(&w, 0.0, &b, &prec, &crate::progress::NoProgress).unwrap();
        assert!(rel < 1e-9, "{rel} after {it}");
        let got = smat(&x, q, &pl);
        for i in 0..q {
            for j in 0..q {
                assert!((got[(i, j)] - truth[(i, j)]).abs() < 1e-6, "{i} {j}");
            }
        }
    }
}
