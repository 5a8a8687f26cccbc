//! Linear recombination of `N³` vectors in their own storage (`U ← Ũ V`), and the
//! `contrast_qr` knock-out of the mean built on it.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use num_complex::Complex;
use rayon::prelude::*;

use super::dense::thin_svd;
use super::{check_side, check_vectors, Basis};
use crate::error::{Error, Result};
use crate::fourier::Fft3;

/// Voxels per block of the recombination (a fixed size: the result does not depend on it,
/// each output voxel being a sum over the inputs of that voxel only).
const BLOCK: usize = 2048;

/// Replace `vectors` by `new_j = Σ_i vectors[i]·coef[i, j] (+ extra·extra_coef[j])` for
/// `j < coef.ncols() ≤ vectors.len()`, in place (f32 GEMMs over voxel blocks).
pub(super) fn recombine_in_place(
    vectors: &mut Vec<Vec<Complex<f32>>>,
    coef: MatRef<'_, f64>,
    extra: Option<(&[Complex<f32>], &[f64])>,
) {
    let q_in = vectors.len();
    let q_out = coef.ncols();
    debug_assert!(coef.nrows() == q_in && q_out <= q_in);
    let Some(len) = vectors.first().map(|v| v.len()) else {
        return;
    };
    let c32 = Mat::<f32>::from_fn(q_in, q_out, |i, j| coef[(i, j)] as f32);
    let extra_coef: Option<Vec<f32>> = extra.map(|(_, c)| c.iter().map(|&v| v as f32).collect());
    let nblocks = len.div_ceil(BLOCK);
    let mut views: Vec<Vec<&mut [Complex<f32>]>> =
        (0..nblocks).map(|_| Vec::with_capacity(q_in)).collect();
    for v in vectors.iter_mut() {
        for (b, chunk) in v.chunks_mut(BLOCK).enumerate() {
            views[b].push(chunk);
        }
    }
    views.into_par_iter().enumerate().for_each(|(b, mut vs)| {
        let m = vs[0].len();
        // Real and imaginary parts, row-major (voxel × vector).
        let mut re = vec![0.0f32; m * q_in];
        let mut im = vec![0.0f32; m * q_in];
        for (i, v) in vs.iter().enumerate() {
            for (k, c) in v.iter().enumerate() {
                re[k * q_in + i] = c.re;
                im[k * q_in + i] = c.im;
            }
        }
        let mut out_re = vec![0.0f32; m * q_out];
        let mut out_im = vec![0.0f32; m * q_out];
        for (src, dst) in [(&re, &mut out_re), (&im, &mut out_im)] {
            let a = MatRef::from_row_major_slice(src.as_slice(), m, q_in);
            let o = MatMut::from_row_major_slice_mut(dst.as_mut_slice(), m, q_out);
            matmul(o, Accum::Replace, a, c32.as_ref(), 1.0, Par::Seq);
        }
        for (j, v) in vs.iter_mut().take(q_out).enumerate() {
            for (k, c) in v.iter_mut().enumerate() {
                *c = Complex::new(out_re[k * q_out + j], out_im[k * q_out + j]);
            }
        }
        if let (Some((e, _)), Some(ec)) = (extra, extra_coef.as_ref()) {
            let e = &e[b * BLOCK..][..m];
            for (v, &cj) in vs.iter_mut().take(q_out).zip(ec) {
                for (c, ev) in v.iter_mut().zip(e) {
                    *c += ev * cj;
                }
            }
        }
    });
    vectors.truncate(q_out);
}

/// RECOVAR's `knock_out_mean_component_2` with `correct_contrast` (module docs of
/// [`super`]).
pub(super) fn knock_out_mean(
    pcs: Basis,
    mean_real: &[f32],
    volume_mask: &[f32],
    n: usize,
) -> Result<Basis> {
    let n3 = check_side(n)?;
    let Basis {
        mut vectors,
        values,
    } = pcs;
    let k = vectors.len();
    if k == 0 || values.len() < k {
        return Err(Error::inconsistent(format!(
            "knock-out of the mean: {k} vectors and {} values (need ≥ 1 vector and a \
             value for each)",
            values.len()
        )));
    }
    if mean_real.len() != n3 || volume_mask.len() != n3 {
        return Err(Error::inconsistent(format!(
            "knock-out of the mean: mean {} / mask {} values; N³ = {n3}",
            mean_real.len(),
            volume_mask.len()
        )));
    }
    if values[..k].iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::invalid(
            "knock-out of the mean: eigenvalues must be finite and ≥ 0",
        ));
    }
    check_vectors(&vectors, n3, "knock-out of the mean")?;
    let nf = n3 as f64;
    // Masked, normalised mean, and its spectrum.
    let m: Vec<f32> = mean_real
        .iter()
        .zip(volume_mask)
        .map(|(a, b)| a * b)
        .collect();
    let m_norm = m
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    if !(m_norm.is_finite() && m_norm > 0.0) {
        return Err(Error::invalid(
            "knock-out of the mean: the masked mean is zero or not finite",
        ));
    }
    let fft = Fft3::<f32>::new(n);
    let m_hat = fft.forward_real_vec(&m);
    // Real-space norms of the PCs and c = Uᵀm (Parseval: ⟨a, b⟩ = Re Σ conj(â) b̂ / N³).
    let stats: Vec<(f64, f64)> = vectors
        .par_iter()
        .map(|u| {
            let (mut nn, mut ip) = (0.0f64, 0.0f64);
            for (a, b) in u.iter().zip(&m_hat) {
                nn += a.norm_sqr() as f64;
                ip += a.re as f64 * b.re as f64 + a.im as f64 * b.im as f64;
            }
            ((nn / nf).sqrt(), ip / nf)
        })
        .collect();
    if let Some(j) = stats.iter().position(|s| s.0.is_nan() || s.0 <= 0.0) {
        return Err(Error::invalid(format!(
            "knock-out of the mean: PC {j} is zero"
        )));
    }
    let c: Vec<f64> = stats.iter().map(|&(un, ip)| ip / (un * m_norm)).collect();
    let c2: f64 = c.iter().map(|v| v * v).sum();
    // m = U c + β m_⊥; when m lies in span U (β ≈ 0) there is no m_⊥.
    let beta = (1.0 - c2).max(0.0).sqrt();
    let with_perp = beta > 1e-6;
    let rows = if with_perp { k + 1 } else { k };
    let z = Mat::<f64>::from_fn(rows, k, |i, j| {
        let base = if i < k {
            (if i == j { 1.0 } else { 0.0 }) - c[i] * c[j]
        } else {
            -beta * c[j]
        };
        base * values[j].sqrt()
    });
    let (ut, s) = thin_svd(z.as_ref(), "knock-out of the mean")?;
    // new_j = Σ_i ut[i,j]·u_i/|u_i| + ut[k,j]·m_⊥, m_⊥ = (m̂/|m| − Σ c_i u_i/|u_i|)/β.
    let mut coef = Mat::<f64>::from_fn(k, k, |i, j| {
        let perp = if with_perp {
            ut[(k, j)] * c[i] / beta
        } else {
            0.0
        };
        (ut[(i, j)] - perp) / stats[i].0
    });
    let mut m_coef: Vec<f64> = (0..k)
        .map(|j| {
            if with_perp {
                ut[(k, j)] / (beta * m_norm)
            } else {
                0.0
            }
        })
        .collect();
    // Sign: Σ_x new_j(x) = new_j(k = 0) > 0 (RECOVAR: inner product with a constant volume,
    // flipped only when larger than 1e-8 in magnitude).
    let dc = (n / 2 * n + n / 2) * n + n / 2;
    for j in 0..k {
        let sum: f64 = (0..k)
            .map(|i| vectors[i][dc].re as f64 * coef[(i, j)])
            .sum::<f64>()
            + m_hat[dc].re as f64 * m_coef[j];
        let ip = sum / nf.sqrt();
        if ip.abs() > 1e-8 && ip < 0.0 {
            for i in 0..k {
                coef[(i, j)] = -coef[(i, j)];
            }
            m_coef[j] = -m_coef[j];
        }
    }
    recombine_in_place(
        &mut vectors,
        coef.as_ref(),
        with_perp.then_some((m_hat.as_slice(), m_coef.as_slice())),
    );
    // Renormalise to Σ|u|² = N³ (RECOVAR normalises its Fourier columns at the end).
    vectors.par_iter_mut().for_each(|u| {
        let nn = u.iter().map(|a| a.norm_sqr() as f64).sum::<f64>();
        if nn > 0.0 {
            let f = (nf / nn).sqrt() as f32;
            u.iter_mut().for_each(|a| *a *= f);
        }
    });
    Ok(Basis {
        vectors,
        values: s.iter().map(|v| v * v).collect(),
    })
}
