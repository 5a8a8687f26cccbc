//! Small dense linear algebra on `faer` matrices, always sequential (`Par::Seq`) so that a
//! result depends only on its inputs; callers parallelise over fixed blocks themselves.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

use crate::error::{Error, Result};

/// `a · b` (f64).
pub(super) fn mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut c = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(c.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
    c
}

/// Eigen-decomposition of the symmetric `a` (its lower triangle is read): eigenvalues in
/// descending order and the matching eigenvector columns.
pub(super) fn eigh_desc(a: MatRef<'_, f64>, what: &str) -> Result<(Vec<f64>, Mat<f64>)> {
    let n = a.nrows();
    if (0..n).any(|j| (0..n).any(|i| !a[(i, j)].is_finite())) {
        return Err(Error::invalid(format!("{what}: non-finite matrix entries")));
    }
    let evd = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::invalid(format!("{what}: eigendecomposition failed ({e:?})")))?;
    let s = evd.S().column_vector();
    let u = evd.U();
    let mut order: Vec<usize> = (0..n).collect();
    // faer returns ascending values; a stable sort keeps ties in a fixed order.
    order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
    let values = order.iter().map(|&i| s[i]).collect();
    let vectors = Mat::from_fn(n, n, |i, j| u[(i, order[j])]);
    Ok((values, vectors))
}

/// The thin `Q` factor (`m × min(m, n)`) of a Householder QR of `a`.
pub(super) fn thin_q(a: MatRef<'_, f64>) -> Mat<f64> {
    a.qr().compute_thin_Q()
}

/// Thin SVD of `a` (`m × n`, `m ≥ n`): left singular vectors (`m × n`) and singular values,
/// descending.
pub(super) fn thin_svd(a: MatRef<'_, f64>, what: &str) -> Result<(Mat<f64>, Vec<f64>)> {
    let svd = a
        .thin_svd()
        .map_err(|e| Error::invalid(format!("{what}: SVD failed ({e:?})")))?;
    let s = svd.S().column_vector();
    let u = svd.U();
    let k = s.nrows();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
    let values = order.iter().map(|&i| s[i]).collect();
    let vectors = Mat::from_fn(u.nrows(), k, |i, j| u[(i, order[j])]);
    Ok((vectors, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigh_sorts_descending_and_reconstructs() {
        let a = Mat::<f64>::from_fn(4, 4, |i, j| {
            1.0 / (1.0 + i as f64 + j as f64) + if i == j { i as f64 } else { 0.0 }
        });
        let (vals, vecs) = eigh_desc(a.as_ref(), "test").unwrap();
        assert!(vals.windows(2).all(|w| w[0] >= w[1]));
        for (j, &lam) in vals.iter().enumerate() {
            let v = vecs.col(j);
            let av = &a * v;
            for i in 0..4 {
                assert!((av[i] - lam * v[i]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn thin_svd_of_tall_matrix() {
        let a = Mat::<f64>::from_fn(5, 3, |i, j| ((i * 3 + j) as f64).sin());
        let (u, s) = thin_svd(a.as_ref(), "test").unwrap();
        assert_eq!((u.nrows(), u.ncols(), s.len()), (5, 3, 3));
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        let utu = u.transpose() * &u;
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((utu[(i, j)] - want).abs() < 1e-12);
            }
        }
        let q = thin_q(a.as_ref());
        assert_eq!((q.nrows(), q.ncols()), (5, 3));
    }
}
