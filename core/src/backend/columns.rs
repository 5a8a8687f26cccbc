//! The covariance-column accumulation of algorithms.md §5.4 (the formulas are in
//! [`crate::heterogeneity::columns`]'s docs), behind the backend: the hot loop of the
//! covariance stage. The science code prepares each image batch (masked residuals times the
//! CTF, CTFs, tight masks) and hands it to a [`ColumnAccumulator`], which adds it to the
//! accumulators `H_h(ξ)`, `B_h(ξ)` of every column ξ of the pass and keeps them (on the
//! device, for the CUDA backend) until the pass is over.
//!
//! The reference implementation here ([`CpuColumns`]) backprojects each image that the read
//! kernel of ξ reaches straight into the column's accumulators, pixel by pixel, with its
//! right-hand side `C r conj(e) − noise·C` and weight `C² c` formed on the fly. The voxels
//! and weights are the trilinear backprojection's on the N = D grid (same f32 grid
//! coordinates, same clipping); the sums are f64 in image order, then pixel order, so the
//! result depends neither on the thread count nor on batching. Other implementations must
//! give the same sums: the CUDA one does, bit for bit without image masks (its gather adds
//! each voxel's contributions in that same order) and to f32 FFT rounding with them.

use num_complex::Complex;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::forward::slice::{check_rotations, floor_frac, Plane};
use crate::forward::SliceGeometry;
use crate::fourier::Fft2;

/// Width of the triangular read kernel (`right_kernel_width`).
pub const KERNEL_WIDTH: f64 = 2.0;

/// Half-width (pixels) of the square around ξ's projection that holds every pixel the read
/// kernel reaches: `2√3`, with slack for rotation rows that are unit vectors only to f32
/// rounding.
pub fn kernel_reach() -> f64 {
    KERNEL_WIDTH * 3f64.sqrt() * 1.001 + 1e-3
}

/// One batch of images prepared for the accumulation (`m` images of `D × D`).
#[derive(Clone, Copy, Debug)]
pub struct ColumnBatch<'a> {
    /// The images' rotations.
    pub rotations: &'a [[f32; 9]],
    /// `C·r̃`: the masked residual spectra times the CTF (`m × D²`, centered).
    pub cr: &'a [Complex<f32>],
    /// The CTFs (`m × D²`).
    pub ctf: &'a [f32],
    /// The tight masks (`m × D²`), or empty when images are not masked.
    pub masks: &'a [f32],
}

impl ColumnBatch<'_> {
    /// Checks the lengths against `d`; returns the number of images.
    pub fn check(&self, d: usize) -> Result<usize> {
        let m = self.rotations.len();
        let npix = d * d;
        let bad = |what: &str, len: usize| {
            Error::invalid(format!(
                "covariance columns: {what} holds {len} values; {m} images of {d}×{d} need {}",
                m * npix
            ))
        };
        if self.cr.len() != m * npix {
            return Err(bad("the residual batch", self.cr.len()));
        }
        if self.ctf.len() != m * npix {
            return Err(bad("the CTF batch", self.ctf.len()));
        }
        if !self.masks.is_empty() && self.masks.len() != m * npix {
            return Err(bad("the mask batch", self.masks.len()));
        }
        check_rotations(self.rotations)?;
        Ok(m)
    }
}

/// The accumulators of one column: `H_h` (f64) and `B_h` (complex f64) per halfset, `N³`
/// each (N = D), centered.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSums {
    /// `H_0`, `H_1`.
    pub h: [Vec<f64>; 2],
    /// `B_0`, `B_1`.
    pub b: [Vec<Complex<f64>>; 2],
}

impl ColumnSums {
    pub(crate) fn zeros(n3: usize) -> Self {
        let z = Complex::new(0.0f64, 0.0);
        ColumnSums {
            h: [vec![0.0; n3], vec![0.0; n3]],
            b: [vec![z; n3], vec![z; n3]],
        }
    }

    fn clear(&mut self) {
        self.h.iter_mut().for_each(|v| v.fill(0.0));
        self.b
            .iter_mut()
            .for_each(|v| v.fill(Complex::new(0.0, 0.0)));
    }
}

/// Accumulates the columns of one pass over the images. Made by
/// [`super::Backend::column_accumulator`]; the results never depend on the implementation's
/// capacity or on how the images are cut into batches.
pub trait ColumnAccumulator: Send {
    /// How many columns one pass can hold (≥ 1; at most what was asked for).
    fn capacity(&self) -> usize;

    /// Starts a pass for `freqs` (integer frequencies, `kx ≥ 0`, at most
    /// [`ColumnAccumulator::capacity`]): every accumulator is zero afterwards.
    fn start(&mut self, freqs: &[[i32; 3]]) -> Result<()>;

    /// Adds `batch` (images of halfset `half`, 0 or 1) to every column of the pass; returns
    /// how many image-column pairs the read kernel reaches.
    fn add(&mut self, half: usize, batch: &ColumnBatch) -> Result<usize>;

    /// The accumulators of the pass's columns, in the order of `freqs`.
    fn sums(&mut self) -> Result<&[ColumnSums]>;
}

/// Checks the arguments shared by every implementation's constructor: `noise` is the
/// radial noise image `σ²(p)` of `d × d` finite values, `d` even. Returns the slice geometry
/// (N = D, clipped as the backend's).
pub(crate) fn check_column_args(d: usize, noise: &[f32]) -> Result<SliceGeometry> {
    if d < 2 || !d.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "covariance columns: the image side must be even, got {d}"
        )));
    }
    if noise.len() != d * d || noise.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "covariance columns: the noise image must hold {} finite values, got {}",
            d * d,
            noise.len()
        )));
    }
    SliceGeometry::new(d, d)
}

/// Checks the frequencies of a pass against the grid and the capacity.
pub(crate) fn check_freqs(freqs: &[[i32; 3]], d: usize, capacity: usize) -> Result<()> {
    if freqs.len() > capacity {
        return Err(Error::invalid(format!(
            "covariance columns: {} columns in one pass, the accumulator holds {capacity}",
            freqs.len()
        )));
    }
    let h = (d / 2) as i32;
    if let Some(f) = freqs
        .iter()
        .find(|f| f.iter().any(|&k| k <= -h || k >= h) || f[0] < 0)
    {
        return Err(Error::invalid(format!(
            "covariance columns: frequency {f:?} must have kx ≥ 0 and every component in \
             ({}, {h})",
            -h
        )));
    }
    Ok(())
}

/// `half` must be 0 or 1.
pub(crate) fn check_half(half: usize) -> Result<()> {
    if half > 1 {
        return Err(Error::invalid(format!(
            "covariance columns: halfset {half} (must be 0 or 1)"
        )));
    }
    Ok(())
}

/// The CPU reference: columns in parallel, each summing its images sequentially.
pub struct CpuColumns<'a> {
    backend: &'a super::CpuBackend,
    shared: Shared,
    freqs: Vec<[i32; 3]>,
    sums: Vec<ColumnSums>,
    /// Whether some accumulator may be non-zero.
    dirty: bool,
}

/// What every column's accumulation reads.
struct Shared {
    d: usize,
    geom: SliceGeometry,
    fft: Fft2<f32>,
    /// The radial noise image σ²(p).
    noise: Vec<f32>,
}

/// Per-thread working memory of the accumulation.
struct ColumnWork {
    patch: Vec<(u32, f32)>,
    noise: Vec<Complex<f32>>,
}

impl<'a> CpuColumns<'a> {
    pub(crate) fn new(
        backend: &'a super::CpuBackend,
        d: usize,
        noise: &[f32],
        slots: usize,
    ) -> Result<Self> {
        let geom = check_column_args(d, noise)?;
        let n3 = d * d * d;
        Ok(CpuColumns {
            backend,
            shared: Shared {
                d,
                geom,
                fft: Fft2::new(d),
                noise: noise.to_vec(),
            },
            freqs: Vec::new(),
            sums: (0..slots.max(1)).map(|_| ColumnSums::zeros(n3)).collect(),
            dirty: false,
        })
    }
}

impl ColumnAccumulator for CpuColumns<'_> {
    fn capacity(&self) -> usize {
        self.sums.len()
    }

    fn start(&mut self, freqs: &[[i32; 3]]) -> Result<()> {
        check_freqs(freqs, self.shared.d, self.capacity())?;
        // The accumulators are allocated once and cleared between passes: fresh allocations
        // of this size are fresh pages, and faulting them in cost more system time than
        // clearing them costs user time.
        if self.dirty {
            let sums = &mut self.sums;
            self.backend
                .run(|| sums.par_iter_mut().for_each(ColumnSums::clear));
        }
        self.freqs = freqs.to_vec();
        self.dirty = false;
        Ok(())
    }

    fn add(&mut self, half: usize, batch: &ColumnBatch) -> Result<usize> {
        check_half(half)?;
        batch.check(self.shared.d)?;
        self.dirty = true;
        let n = self.freqs.len();
        let (shared, freqs, sums) = (&self.shared, &self.freqs, &mut self.sums[..n]);
        let d = shared.d;
        // Columns in parallel; each one sums its images sequentially.
        Ok(self.backend.run(|| {
            sums.par_iter_mut()
                .zip(freqs.par_iter())
                .map_init(
                    || ColumnWork {
                        patch: Vec::new(),
                        noise: vec![Complex::new(0.0, 0.0); d * d],
                    },
                    |w, (s, &xi)| shared.add_column(batch, xi, &mut s.h[half], &mut s.b[half], w),
                )
                .sum::<usize>()
        }))
    }

    fn sums(&mut self) -> Result<&[ColumnSums]> {
        Ok(&self.sums[..self.freqs.len()])
    }
}

impl Shared {
    /// Adds the images of `b` to the accumulators of column `xi` (one halfset); returns how
    /// many images the read kernel reaches.
    fn add_column(
        &self,
        b: &ColumnBatch,
        xi: [i32; 3],
        h_acc: &mut [f64],
        b_acc: &mut [Complex<f64>],
        work: &mut ColumnWork,
    ) -> usize {
        let d = self.d;
        let npix = d * d;
        let fft = &self.fft;
        let mut hits = 0;
        for (i, rot) in b.rotations.iter().enumerate() {
            if !kernel_patch(rot, xi, d, &mut work.patch) {
                continue;
            }
            hits += 1;
            let sl = i * npix..(i + 1) * npix;
            let cr = &b.cr[sl.clone()];
            let c = &b.ctf[sl.clone()];
            let mut e = Complex::new(0.0f64, 0.0);
            let mut cc = 0.0f64;
            for &(p, k) in &work.patch {
                let p = p as usize;
                let v = cr[p];
                e += Complex::new(v.re as f64, v.im as f64) * k as f64;
                cc += (k * c[p] * c[p]) as f64;
            }
            let ec = Complex::new(e.re as f32, -e.im as f32);
            let cc = cc as f32;
            // The noise term, as a full image (masks) or on the patch only (no masks).
            let noise = &mut work.noise;
            noise.fill(Complex::new(0.0, 0.0));
            if b.masks.is_empty() {
                for &(p, k) in &work.patch {
                    let p = p as usize;
                    noise[p] = Complex::new(k * c[p] * self.noise[p], 0.0);
                }
            } else {
                // M Σ M (C κ): the noise of the masked residual seen through κ (times C
                // below).
                let mask = &b.masks[sl];
                for &(p, k) in &work.patch {
                    let p = p as usize;
                    noise[p] = Complex::new(k * c[p], 0.0);
                }
                fft.inverse(noise);
                for (v, &m) in noise.iter_mut().zip(mask) {
                    *v *= m;
                }
                fft.forward(noise);
                for (v, &s) in noise.iter_mut().zip(&self.noise) {
                    *v *= s;
                }
                fft.inverse(noise);
                for (v, &m) in noise.iter_mut().zip(mask) {
                    *v *= m;
                }
                fft.forward(noise);
            }
            // The backend's own plane geometry (N = D), so the stencils are its voxels and
            // weights.
            let plane = Plane::new(&self.geom, rot);
            for row in 0..d {
                let Some((c0, c1)) = self.geom.row_range(row) else {
                    continue;
                };
                let base = plane.row_base(row);
                for col in c0..c1 {
                    let p = row * d + col;
                    let cv = c[p];
                    // The same f32 operations as the image buffers of a backend call.
                    let rhs = cr[p] * ec - noise[p] * cv;
                    let lhs = cv * cv * cc;
                    splat(
                        plane.at(&base, col),
                        d,
                        Complex::new(rhs.re as f64, rhs.im as f64),
                        lhs as f64,
                        h_acc,
                        b_acc,
                    );
                }
            }
        }
        hits
    }
}

/// Trilinear scatter of one pixel at grid coordinates `g` (`n³` grid, voxels outside
/// skipped): `b += ((v·wz)·wy)·wx` and the same for the real weight `h`, f64.
#[inline(always)]
fn splat(g: [f32; 3], n: usize, v: Complex<f64>, hv: f64, h: &mut [f64], b: &mut [Complex<f64>]) {
    let ni = n as i64;
    let [(bx, tx), (by, ty), (bz, tz)] = g.map(floor_frac);
    if [bx, by, bz].iter().any(|&k| k < -1 || k >= ni) {
        return;
    }
    let (wx, wy, wz) = ([1.0 - tx, tx], [1.0 - ty, ty], [1.0 - tz, tz]);
    let x_inside = bx >= 0 && bx + 1 < ni;
    for (dz, &wzv) in wz.iter().enumerate() {
        let z = bz + dz as i64;
        if z < 0 || z >= ni {
            continue;
        }
        let (vz, hz) = (v * wzv as f64, hv * wzv as f64);
        for (dy, &wyv) in wy.iter().enumerate() {
            let y = by + dy as i64;
            if y < 0 || y >= ni {
                continue;
            }
            let (vzy, hzy) = (vz * wyv as f64, hz * wyv as f64);
            let row = (z as usize * n + y as usize) * n;
            if x_inside {
                let o = row + bx as usize;
                let (bb, hh) = (&mut b[o..o + 2], &mut h[o..o + 2]);
                bb[0] += vzy * wx[0] as f64;
                bb[1] += vzy * wx[1] as f64;
                hh[0] += hzy * wx[0] as f64;
                hh[1] += hzy * wx[1] as f64;
            } else {
                for (dx, &wxv) in wx.iter().enumerate() {
                    let x = bx + dx as i64;
                    if (0..ni).contains(&x) {
                        b[row + x as usize] += vzy * wxv as f64;
                        h[row + x as usize] += hzy * wxv as f64;
                    }
                }
            }
        }
    }
}

/// The pixels where the read kernel of frequency `xi` is non-zero on the image of rotation
/// `rot`, with their weights `κ = ∏_d max(0, 1 − |g_d − ξ_d|/2)`, `g = kx·R[0,:] + ky·R[1,:]`
/// (centred grid units). Returns false (and an empty patch) when the image's plane misses
/// the kernel: its distance to ξ, `|ξ·n|`, is at least `2·‖n‖₁` for the normal `n = R[2,:]`.
/// The pixels lie within [`kernel_reach`] of ξ's projection `(ξ·R[0,:], ξ·R[1,:])`.
pub(crate) fn kernel_patch(
    rot: &[f32; 9],
    xi: [i32; 3],
    d: usize,
    out: &mut Vec<(u32, f32)>,
) -> bool {
    out.clear();
    let row = |k: usize| {
        [
            rot[3 * k] as f64,
            rot[3 * k + 1] as f64,
            rot[3 * k + 2] as f64,
        ]
    };
    let (r0, r1, nrm) = (row(0), row(1), row(2));
    let x = [xi[0] as f64, xi[1] as f64, xi[2] as f64];
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let l1 = nrm.iter().map(|v| v.abs()).sum::<f64>();
    if dot(x, nrm).abs() >= KERNEL_WIDTH * l1 + 1e-3 {
        return false;
    }
    let (a, b) = (dot(x, r0), dot(x, r1));
    let reach = kernel_reach();
    let half = (d / 2) as i64;
    let lo = |c: f64| ((c - reach).ceil() as i64).max(-half);
    let hi = |c: f64| ((c + reach).floor() as i64).min(half - 1);
    for ky in lo(b)..=hi(b) {
        for kx in lo(a)..=hi(a) {
            let (fx, fy) = (kx as f64, ky as f64);
            let mut w = 1.0f64;
            for dd in 0..3 {
                let diff = (fx * r0[dd] + fy * r1[dd] - x[dd]).abs();
                w *= (1.0 - diff / KERNEL_WIDTH).max(0.0);
            }
            if w > 0.0 {
                out.push((
                    ((ky + half) as usize * d + (kx + half) as usize) as u32,
                    w as f32,
                ));
            }
        }
    }
    !out.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn kernel_patch_matches_brute_force() {
        let d = 32;
        let mut rng = Rng::new(7);
        let mut patch = Vec::new();
        let mut hits = 0;
        for t in 0..200 {
            let rot = rng.rotation().map(|v| v as f32);
            let xi = [(t % 9), ((t / 3) % 11) - 5, ((t / 7) % 13) - 6];
            let hit = kernel_patch(&rot, xi, d, &mut patch);
            let mut brute = Vec::new();
            for p in 0..d * d {
                let kx = (p % d) as f64 - 16.0;
                let ky = (p / d) as f64 - 16.0;
                let mut w = 1.0f64;
                for k in 0..3 {
                    let g = kx * rot[k] as f64 + ky * rot[3 + k] as f64;
                    w *= (1.0 - (g - xi[k] as f64).abs() / 2.0).max(0.0);
                }
                if w > 0.0 {
                    brute.push((p as u32, w as f32));
                }
            }
            assert_eq!(hit, !brute.is_empty());
            assert_eq!(patch, brute, "rotation {t}");
            hits += hit as usize;
        }
        assert!(hits > 20 && hits < 200, "{hits}");
    }

    #[test]
    fn bad_arguments_are_errors() {
        let cpu = super::super::CpuBackend::new();
        let noise = vec![1.0f32; 64];
        assert!(CpuColumns::new(&cpu, 7, &noise, 1).is_err());
        assert!(CpuColumns::new(&cpu, 8, &noise[..10], 1).is_err());
        let mut acc = CpuColumns::new(&cpu, 8, &noise, 2).unwrap();
        let e = acc.start(&[[0, 0, 0]; 3]).unwrap_err().to_string();
        assert!(e.contains("holds 2"), "{e}");
        let e = acc.start(&[[-1, 0, 0]]).unwrap_err().to_string();
        assert!(e.contains("kx ≥ 0"), "{e}");
        acc.start(&[[1, 0, 0]]).unwrap();
        let rot = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let cr = vec![Complex::new(0.0f32, 0.0); 64];
        let ctf = vec![1.0f32; 63];
        let batch = ColumnBatch {
            rotations: &[rot],
            cr: &cr,
            ctf: &ctf,
            masks: &[],
        };
        let e = acc.add(0, &batch).unwrap_err().to_string();
        assert!(e.contains("the CTF batch holds 63"), "{e}");
        let e = acc.add(2, &batch).unwrap_err().to_string();
        assert!(e.contains("halfset 2"), "{e}");
    }
}
