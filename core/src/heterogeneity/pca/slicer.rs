//! Trilinear slicing of all `q` basis vectors at once (§5.1 `disc_type_u = linear_interp`),
//! producing per image the real rows `√w·(Re, Im)` of `C ⊙ P Ũ` over the half plane of
//! image frequencies.
//!
//! Slicing the vectors one by one through [`crate::backend::Backend::slice`] would read `q`
//! separate volumes at 8 scattered voxels per pixel. Here the basis is re-laid out once,
//! voxel-major with the `q` real parts then the `q` imaginary parts of a voxel contiguous,
//! so that a pixel costs one weight computation and 8 contiguous `2q`-long multiply-adds.
//! Only what trilinear slicing can reach is stored: the ball of radius `D/2 + 2` around the
//! centre (pixels are clipped at `D/2 − 1`, neighbours lie within `√3`), and of it only the
//! half `kz ≥ −1`: a pixel whose slice point lies below the plane `kz = 0` is read at its
//! Hermitian partner's point (the slice point of pixel `−k`, computed exactly as the
//! backend computes it) and conjugated, which is the same value for a Hermitian volume.
//! Grid coordinates follow [`crate::forward`] (`g = ky·ey + N/2 + kx·ex`, the same f32
//! operations as the backend's slicer), so the weights are the backend's weights.

use num_complex::Complex;

use crate::forward::slice::floor_frac;
use rayon::prelude::*;

/// Margin (voxels) of the stored ball beyond the clipping radius: neighbours of a slice
/// point lie within √3 of it; one more voxel absorbs rounding.
const BALL_MARGIN: f32 = 3.0;

/// The basis on the half ball, voxel-major: `data[slot·2q ..][..q]` real parts,
/// `[q..2q]` imaginary parts.
pub(super) struct HalfBall {
    n: usize,
    q: usize,
    /// First stored plane (`N/2 − 1`).
    z0: usize,
    /// Stored planes.
    nz: usize,
    /// Per stored row `(z − z0)·N + y`: first slot, and the stored x range `[x0, x1)`.
    rows: Vec<(usize, usize, usize)>,
    data: Vec<f32>,
}

impl HalfBall {
    /// Lay out `basis` (each `n³`, already checked) for images clipped at `max_radius`.
    pub(super) fn new(basis: &[Vec<Complex<f32>>], n: usize, max_radius: f32) -> Self {
        let q = basis.len();
        let c = n / 2;
        let r = max_radius + BALL_MARGIN;
        let r2 = r * r;
        let z0 = c - 1;
        let z1 = (c + r.ceil() as usize).min(n - 1);
        let nz = z1 - z0 + 1;
        let mut rows = Vec::with_capacity(nz * n);
        let mut slots = 0usize;
        for z in z0..=z1 {
            let dz = (z as f32 - c as f32).abs().max(1.0);
            for y in 0..n {
                let dy = y as f32 - c as f32;
                let rem = r2 - dz * dz - dy * dy;
                if rem < 0.0 {
                    rows.push((slots, 0, 0));
                    continue;
                }
                let xr = rem.sqrt().floor() as usize;
                let x0 = c.saturating_sub(xr);
                let x1 = (c + xr + 1).min(n);
                rows.push((slots, x0, x1));
                slots += x1 - x0;
            }
        }
        let mut data = vec![0.0f32; slots * 2 * q];
        // Fill plane by plane in parallel (each plane's slots are contiguous).
        let mut planes: Vec<(usize, &mut [f32])> = Vec::with_capacity(nz);
        let mut rest = data.as_mut_slice();
        for zi in 0..nz {
            let end = if zi + 1 < nz {
                rows[(zi + 1) * n].0
            } else {
                slots
            };
            let start = rows[zi * n].0;
            let (head, tail) = rest.split_at_mut((end - start) * 2 * q);
            planes.push((zi, head));
            rest = tail;
        }
        planes.into_par_iter().for_each(|(zi, plane)| {
            let base = rows[zi * n].0;
            let z = z0 + zi;
            for y in 0..n {
                let (off, x0, x1) = rows[zi * n + y];
                for (j, u) in basis.iter().enumerate() {
                    let src = &u[(z * n + y) * n..][..n];
                    for (dx, v) in src[x0..x1].iter().enumerate() {
                        let slot = (off - base + dx) * 2 * q;
                        plane[slot + j] = v.re;
                        plane[slot + q + j] = v.im;
                    }
                }
            }
        });
        HalfBall {
            n,
            q,
            z0,
            nz,
            rows,
            data,
        }
    }

    /// Bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// `acc[..q] += Re`, `acc[q..] += Im` of the trilinear interpolation of every basis
    /// vector at grid point `g` (which must satisfy `g_z ≥ N/2 − 1`).
    #[inline]
    fn gather(&self, g: [f32; 3], acc: &mut [f32]) {
        let n = self.n as i64;
        let q2 = 2 * self.q;
        let (bx, tx) = floor_frac(g[0]);
        let (by, ty) = floor_frac(g[1]);
        let (bz, tz) = floor_frac(g[2]);
        let wx = [1.0 - tx, tx];
        let wy = [1.0 - ty, ty];
        let wz = [1.0 - tz, tz];
        for (dz, &wzv) in wz.iter().enumerate() {
            let z = bz + dz as i64 - self.z0 as i64;
            if z < 0 || z >= self.nz as i64 {
                continue;
            }
            for (dy, &wyv) in wy.iter().enumerate() {
                let y = by + dy as i64;
                if y < 0 || y >= n {
                    continue;
                }
                let (off, x0, x1) = self.rows[z as usize * self.n + y as usize];
                let wzy = wzv * wyv;
                for (dx, &wxv) in wx.iter().enumerate() {
                    let x = bx + dx as i64;
                    if x < x0 as i64 || x >= x1 as i64 {
                        continue;
                    }
                    let w = wzy * wxv;
                    let slot = off + x as usize - x0;
                    let src = &self.data[slot * q2..][..q2];
                    for (a, s) in acc.iter_mut().zip(src) {
                        *a += w * s;
                    }
                }
            }
        }
    }
}

/// One pixel of the half plane: flat index, frequency, and whether it stands for itself
/// and its partner (weight 2) or only itself (DC, weight 1).
#[derive(Clone, Copy, Debug)]
struct HalfPixel {
    flat: usize,
    kx: f32,
    ky: f32,
    sqrt_w: f32,
}

/// The half plane `ky > 0 or (ky = 0, kx ≥ 0)` of a `D × D` image within the clipping
/// radius; two real rows per pixel.
pub(super) struct HalfPlane {
    d: usize,
    pixels: Vec<HalfPixel>,
}

impl HalfPlane {
    pub(super) fn new(d: usize, max_radius: f32) -> Self {
        let h = (d / 2) as i64;
        let r2 = max_radius * max_radius;
        let mut pixels = Vec::new();
        for row in 0..d {
            let ky = row as i64 - h;
            for col in 0..d {
                let kx = col as i64 - h;
                if ky < 0 || (ky == 0 && kx < 0) || ((kx * kx + ky * ky) as f32) > r2 {
                    continue;
                }
                let dc = kx == 0 && ky == 0;
                pixels.push(HalfPixel {
                    flat: row * d + col,
                    kx: kx as f32,
                    ky: ky as f32,
                    sqrt_w: if dc { 1.0 } else { std::f32::consts::SQRT_2 },
                });
            }
        }
        HalfPlane { d, pixels }
    }

    /// Real rows per image (`2 ×` pixels).
    pub(super) fn rows(&self) -> usize {
        2 * self.pixels.len()
    }

    /// Noise standard deviation per row from the per-pixel variance image.
    pub(super) fn row_sigma(&self, var: &[f64]) -> Vec<f32> {
        self.pixels
            .iter()
            .flat_map(|p| {
                let s = var[p.flat].max(0.0).sqrt() as f32;
                [s, s]
            })
            .collect()
    }

    /// For one image: `x` (rows × q, row-major) = `√w·C·(Re, Im)` of every sliced basis
    /// vector, `rho` (rows) the same rows of the residual `r`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn project(
        &self,
        ball: &HalfBall,
        rot: &[f32; 9],
        ctf: &[f32],
        resid: &[Complex<f32>],
        x: &mut [f32],
        rho: &mut [f32],
        acc: &mut [f32],
    ) {
        let q = ball.q;
        debug_assert_eq!(ctf.len(), self.d * self.d);
        let c = (ball.n / 2) as f32;
        let ex = [rot[0], rot[1], rot[2]];
        let ey = [rot[3], rot[4], rot[5]];
        // g(kx, ky) exactly as the backend's slicer: (ky·ey + c) + kx·ex.
        let point = |kx: f32, ky: f32| -> [f32; 3] {
            let base = [ky * ey[0] + c, ky * ey[1] + c, ky * ey[2] + c];
            [
                base[0] + kx * ex[0],
                base[1] + kx * ex[1],
                base[2] + kx * ex[2],
            ]
        };
        for (t, (p, (xrows, rrows))) in self
            .pixels
            .iter()
            .zip(x.chunks_exact_mut(2 * q).zip(rho.chunks_exact_mut(2)))
            .enumerate()
        {
            let _ = t;
            let gp = point(p.kx, p.ky);
            let gm = point(-p.kx, -p.ky);
            acc.iter_mut().for_each(|a| *a = 0.0);
            // The point in the stored half; its partner's value is the conjugate.
            let sign = if gp[2] >= gm[2] {
                ball.gather(gp, acc);
                1.0
            } else {
                ball.gather(gm, acc);
                -1.0
            };
            let f = p.sqrt_w * ctf[p.flat];
            let (xre, xim) = xrows.split_at_mut(q);
            for (o, a) in xre.iter_mut().zip(&acc[..q]) {
                *o = f * a;
            }
            let fi = f * sign;
            for (o, a) in xim.iter_mut().zip(&acc[q..]) {
                *o = fi * a;
            }
            let r = resid[p.flat];
            rrows[0] = p.sqrt_w * r.re;
            rrows[1] = p.sqrt_w * r.im;
        }
    }
}
