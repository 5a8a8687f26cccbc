//! Real-space masks and the gridding correction (algorithms.md §1.6, §3.2 steps 4–5).
//!
//! Real-space coordinates are centered like the transforms: index `n/2` on every axis is
//! the origin, so voxel `(z, y, x)` sits at `(x − n/2, y − n/2, z − n/2)` voxels from it
//! (volumes in MRC order, images row = y).

use rayon::prelude::*;

use super::shells::centered_freq;
use crate::{Error, Result};

fn check_nonneg(name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::invalid(format!(
            "{name} must be a finite number ≥ 0, got {v}"
        )));
    }
    Ok(())
}

fn check_volume(len: usize, n: usize, what: &str) -> Result<()> {
    if n == 0 || len != n * n * n {
        return Err(Error::invalid(format!(
            "{what}: {len} values do not form a volume of side {n}"
        )));
    }
    Ok(())
}

/// Distance of every voxel from the centre `(n/2, n/2, n/2)`, plane by plane.
fn for_each_radius(out: &mut [f32], n: usize, f: impl Fn(f64) -> f32 + Sync) {
    out.par_chunks_mut(n * n)
        .enumerate()
        .for_each(|(z, plane)| {
            let kz = centered_freq(z, n);
            for (j, v) in plane.iter_mut().enumerate() {
                let ky = centered_freq(j / n, n);
                let kx = centered_freq(j % n, n);
                *v = f(((kx * kx + ky * ky + kz * kz) as f64).sqrt());
            }
        });
}

/// A soft sphere of side `n`: 1 for `r ≤ radius`, `½ + ½cos(π(r − radius)/edge_width)`
/// for `radius < r < radius + edge_width`, 0 beyond (`edge_width = 0`: a hard ball).
pub fn soft_sphere(n: usize, radius: f64, edge_width: f64) -> Result<Vec<f32>> {
    check_nonneg("soft sphere radius", radius)?;
    check_nonneg("soft sphere edge width", edge_width)?;
    let mut out = vec![0.0f32; n * n * n];
    if n == 0 {
        return Ok(out);
    }
    for_each_radius(&mut out, n, |r| {
        if r <= radius {
            1.0
        } else if r < radius + edge_width {
            (0.5 + 0.5 * (std::f64::consts::PI * (r - radius) / edge_width).cos()) as f32
        } else {
            0.0
        }
    });
    Ok(out)
}

/// RELION's `softMaskOutsideMap` without a noise map (§3.2 step 4), in place.
///
/// With `r` the distance from the centre and `r_p = radius + cosine_width`:
/// inner weight `m = 1` for `r < radius`, `m = 1 − c` with
/// `c = ½ + ½cos(π(r_p − r)/cosine_width)` for `radius ≤ r ≤ r_p`, `m = 0` beyond; the
/// background weight is `1 − m`. The background value is the weighted average
/// `Σ (1 − m)·v / Σ (1 − m)` (f64) over the transition and outside regions, and every
/// voxel becomes `m·v + (1 − m)·background`. A `cosine_width` of 0 makes the band a hard
/// edge (voxels at `r = radius` count as background). If no voxel has background weight,
/// the volume is unchanged. The pipeline uses `radius = n/2`, `cosine_width = 3`.
pub fn soft_mask_outside_map(
    vol: &mut [f32],
    n: usize,
    radius: f64,
    cosine_width: f64,
) -> Result<()> {
    check_volume(vol.len(), n, "soft mask outside map")?;
    check_nonneg("soft mask radius", radius)?;
    check_nonneg("soft mask cosine width", cosine_width)?;
    let mut inner = vec![0.0f32; vol.len()];
    let radius_p = radius + cosine_width;
    for_each_radius(&mut inner, n, |r| {
        if r < radius {
            1.0
        } else if r <= radius_p && cosine_width > 0.0 {
            let c = 0.5 + 0.5 * (std::f64::consts::PI * (radius_p - r) / cosine_width).cos();
            (1.0 - c) as f32
        } else {
            0.0
        }
    });
    // Per-plane partial sums added in plane order (a rayon reduce groups them by work
    // stealing, which changes the last bits from run to run).
    let partials: Vec<(f64, f64)> = vol
        .par_chunks(n * n)
        .zip(inner.par_chunks(n * n))
        .map(|(v, m)| {
            let mut s = 0.0f64;
            let mut w = 0.0f64;
            for (&x, &m) in v.iter().zip(m) {
                let bw = 1.0 - m as f64;
                s += bw * x as f64;
                w += bw;
            }
            (s, w)
        })
        .collect();
    let (sum, weight) = partials
        .iter()
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    if weight <= 0.0 {
        return Ok(());
    }
    let background = sum / weight;
    vol.par_iter_mut()
        .zip(inner.par_iter())
        .for_each(|(v, &m)| {
            let m = m as f64;
            *v = (m * *v as f64 + (1.0 - m) * background) as f32;
        });
    Ok(())
}

/// RECOVAR's image window `window_mask(d, in_rad, out_rad)` (§1.6): with
/// `x = linspace(−1, 1, d, endpoint=False)` per axis and `r = |(x_col, x_row)|`,
/// `clip(1 − (r − in_rad)/(out_rad − in_rad), 0, 1)`, a linear taper. Computed in f32
/// like numpy does; the dataset uses `(0.85, 0.99)`.
pub fn window_mask_2d(d: usize, in_rad: f64, out_rad: f64) -> Result<Vec<f32>> {
    if !(in_rad.is_finite() && out_rad.is_finite() && out_rad > in_rad) {
        return Err(Error::invalid(format!(
            "window mask: need finite radii with outer > inner, got {in_rad}, {out_rad}"
        )));
    }
    let step = 2.0 / d as f64;
    let x: Vec<f32> = (0..d).map(|i| (-1.0 + i as f64 * step) as f32).collect();
    let inr = in_rad as f32;
    let width = (out_rad - in_rad) as f32;
    let mut out = Vec::with_capacity(d * d);
    for &y in &x {
        for &xc in &x {
            let r = (xc * xc + y * y).sqrt();
            out.push((1.0 - (r - inr) / width).clamp(0.0, 1.0));
        }
    }
    Ok(out)
}

/// Interpolation kernel whose Fourier transform the gridding correction divides out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GriddingKernel {
    /// Nearest-neighbour (box): divide by `∏ sinc(u_d)` (RELION order 0).
    Nearest,
    /// Trilinear (triangle = box ∗ box): divide by `∏ sinc²(u_d)` (order 1; the default
    /// for the mean's trilinear backprojection).
    Trilinear,
}

/// Gridding correction of a real `n³` volume in place (§3.2 step 5, RELION's
/// `griddingCorrect` per axis, as RECOVAR's `griddingCorrect_square`): divide by
/// `∏_d sinc^p(u_d)`, `u_d = k_d/(n·oversampling)`, `k_d` the voxel's centered integer
/// coordinate, `sinc(x) = sin(πx)/(πx)`, `sinc(0) = 1`, `p` from `kernel`.
/// `oversampling` is the Fourier-grid oversampling of the reconstruction (2 for the mean).
pub fn gridding_correct(
    vol: &mut [f32],
    n: usize,
    oversampling: f64,
    kernel: GriddingKernel,
) -> Result<()> {
    check_volume(vol.len(), n, "gridding correction")?;
    if !(oversampling.is_finite() && oversampling > 0.0) {
        return Err(Error::invalid(format!(
            "gridding correction: oversampling must be positive, got {oversampling}"
        )));
    }
    let p = match kernel {
        GriddingKernel::Nearest => 1,
        GriddingKernel::Trilinear => 2,
    };
    let axis: Vec<f64> = (0..n)
        .map(|i| {
            let u = centered_freq(i, n) as f64 / (n as f64 * oversampling);
            let s = if u.abs() < 1e-8 {
                1.0
            } else {
                let a = std::f64::consts::PI * u;
                a.sin() / a
            };
            1.0 / s.powi(p)
        })
        .collect();
    vol.par_chunks_mut(n * n)
        .enumerate()
        .for_each(|(z, plane)| {
            for (j, v) in plane.iter_mut().enumerate() {
                let f = axis[z] * axis[j / n] * axis[j % n];
                *v = (*v as f64 * f) as f32;
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_sphere_values() {
        let n = 16;
        let m = soft_sphere(n, 4.0, 2.0).unwrap();
        let at = |x: usize, y: usize, z: usize| m[(z * n + y) * n + x];
        assert_eq!(at(8, 8, 8), 1.0);
        assert_eq!(at(12, 8, 8), 1.0); // r = 4
        assert!((at(13, 8, 8) - 0.5).abs() < 1e-6); // r = 5: half way
        assert_eq!(at(14, 8, 8), 0.0); // r = 6
        assert_eq!(at(8, 3, 8), at(8, 13, 8)); // symmetric about the centre
        assert_eq!(at(8, 8, 3), at(13, 8, 8));
    }

    #[test]
    fn gridding_values() {
        let n = 4;
        let mut v = vec![1.0f32; 64];
        gridding_correct(&mut v, n, 2.0, GriddingKernel::Trilinear).unwrap();
        // centre: no change; (x = 0 → k = −2): u = −2/8 → sinc = sin(π/4)/(π/4)
        assert_eq!(v[(2 * 4 + 2) * 4 + 2], 1.0);
        let s = (std::f64::consts::FRAC_PI_4).sin() / std::f64::consts::FRAC_PI_4;
        let want = 1.0 / (s * s);
        assert!((v[(2 * 4 + 2) * 4] as f64 - want).abs() < 1e-6);
        assert!((v[0] as f64 - want.powi(3)).abs() < 1e-5);
    }
}
