//! Central-slice projection `P(R)` and its exact adjoint `P(R)ᵀ` (algorithms.md §1.3, §3.1).
//!
//! The conventions (grid layout, rotation, scale, clipping) are stated once in
//! [`crate::forward`]. This file holds the per-pixel stencils. `visit` defines each stencil
//! (voxels and weights); the hot loops `gather_pixel` and `scatter_pixel` are its separable
//! rewrites and are tested against it, so slice and backprojection read and write the same
//! voxels with the same coordinates and weights, which is what makes `<P x, y> = <x, Pᵀ y>`
//! hold to rounding.
//!
//! # Slabs: cache locality and deterministic sums
//!
//! Both directions cut the volume into slabs of z-planes and bucket each image's pixels by
//! the slab where their stencil starts (a stencil reaches at most into the next slab).
//!
//! **Slicing** walks the slabs in order and lets all images of a batch gather, in parallel,
//! the part of their stencils inside the current slab. Reading a GiB-sized 2N volume along
//! random planes is memory-latency bound; this way a few MiB of planes are reused by every
//! image while they are in cache. Each pixel is the sum of at most two partial sums in slab
//! order, fixed by the volume size, so an image's slice depends on its rotation only.
//!
//! **Backprojection** sums many images into one accumulator. Floating-point addition is not
//! associative, so a parallel scatter whose order depends on thread scheduling (atomics) or
//! on how the caller cut the images into batches would give results that change with the
//! hardware. Here every voxel receives its contributions in one canonical order:
//! **image order first**, then, within one image, a fixed order set by the slab layout
//! (slabs of `SLAB` = 4 z-planes; pixels whose stencil starts in the previous slab, then those
//! starting in this slab, each group in pixel order). Each contribution is added straight
//! into the caller's `f64` accumulator, never into a per-batch partial sum. The parallel
//! version (rayon over slabs, each slab owning its planes of the accumulator) therefore
//! returns the same bits whatever the thread count and whatever the batch sizes.

use num_complex::Complex;
use rayon::prelude::*;

use super::cubic::bspline_weights;
use crate::error::{Error, Result};

/// How the volume is sampled between grid points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interp {
    /// The nearest voxel (coordinates rounded half to even, like `jnp.round`).
    Nearest,
    /// Trilinear blend of the 8 surrounding voxels, zero outside the grid (RELION's
    /// "triangular kernel"; what the mean and kernel-regression backprojections use).
    Trilinear,
    /// Periodic cubic B-spline over the 4×4×4 surrounding coefficients. The volume passed in
    /// must be the spline-coefficient volume (see [`crate::forward::cubic::prefilter`]).
    Cubic,
}

/// The sizes that fix a slice operator: image side `D`, volume side `Nv`, and the radius
/// beyond which image pixels are zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SliceGeometry {
    /// Image side `D` (even).
    pub image_size: usize,
    /// Volume side `Nv` (an even multiple of `D`: `Nv = D` or the oversampled `2D`).
    pub volume_size: usize,
    /// Pixels with `kx² + ky² > r²` are zero after slicing and skipped by backprojection;
    /// `None` keeps every pixel.
    pub max_radius: Option<f32>,
}

/// Largest image side accepted: keeps pixel indices in `u32` and `kx² + ky²` exact in `f32`.
const MAX_IMAGE_SIZE: usize = 4096;
/// Largest volume side accepted (an 8192³ complex volume is already 4 TiB).
const MAX_VOLUME_SIZE: usize = 8192;

impl SliceGeometry {
    /// `D × D` images from an `Nv³` volume with RECOVAR's default clipping radius
    /// `D/2 − 1`.
    pub fn new(image_size: usize, volume_size: usize) -> Result<Self> {
        let g = SliceGeometry {
            image_size,
            volume_size,
            max_radius: Some(image_size as f32 / 2.0 - 1.0),
        };
        g.validate()?;
        Ok(g)
    }

    /// The same geometry with another clipping radius (`None`: no clipping).
    pub fn with_max_radius(self, max_radius: Option<f32>) -> Result<Self> {
        let g = SliceGeometry { max_radius, ..self };
        g.validate()?;
        Ok(g)
    }

    /// Checks the invariants; every operator calls it because the fields are public.
    pub fn validate(&self) -> Result<()> {
        let (d, nv) = (self.image_size, self.volume_size);
        if d < 2 || d % 2 != 0 || d > MAX_IMAGE_SIZE {
            return Err(Error::invalid(format!(
                "slice geometry: image size {d} must be even and in 2..={MAX_IMAGE_SIZE}"
            )));
        }
        if nv < 2 || nv % 2 != 0 || nv > MAX_VOLUME_SIZE {
            return Err(Error::invalid(format!(
                "slice geometry: volume size {nv} must be even and in 2..={MAX_VOLUME_SIZE}"
            )));
        }
        // The Python code scales by the integer N_vol // D; requiring a multiple keeps that
        // and N_vol / D the same number.
        if nv % d != 0 {
            return Err(Error::invalid(format!(
                "slice geometry: volume size {nv} must be a multiple of the image size {d} \
                 (Nv = D, or 2·D for the oversampled grid)"
            )));
        }
        if let Some(r) = self.max_radius {
            if !r.is_finite() || r < 0.0 {
                return Err(Error::invalid(format!(
                    "slice geometry: clipping radius {r} must be finite and ≥ 0 \
                     (use None for no clipping)"
                )));
            }
        }
        Ok(())
    }

    /// The oversampling factor `s = Nv / D` applied to image frequencies.
    pub fn scale(&self) -> usize {
        self.volume_size / self.image_size
    }

    /// Pixels per image, `D²`.
    pub fn image_len(&self) -> usize {
        self.image_size * self.image_size
    }

    /// Voxels per volume, `Nv³`.
    pub fn volume_len(&self) -> usize {
        self.volume_size * self.volume_size * self.volume_size
    }

    /// Columns `[c0, c1)` of row `r` that survive clipping (`None`: the whole row is clipped).
    /// The test is exactly `(kx² + ky²) as f32 > r²` per pixel (monotone in `|kx|`, so the
    /// survivors of a row are one interval).
    pub(crate) fn row_range(&self, row: usize) -> Option<(usize, usize)> {
        let d = self.image_size as i64;
        let ky = row as i64 - d / 2;
        let Some(r) = self.max_radius else {
            return Some((0, self.image_size));
        };
        let r2 = r * r;
        let clipped = |kx: i64| ((kx * kx + ky * ky) as f32) > r2;
        if clipped(0) {
            return None;
        }
        // Largest m with m² + ky² ≤ r², starting from the real root and correcting rounding.
        let mut m = ((r2 as f64 - (ky * ky) as f64).max(0.0)).sqrt().floor() as i64;
        while m > 0 && clipped(m) {
            m -= 1;
        }
        while m < d && !clipped(m + 1) {
            m += 1;
        }
        let lo = (-m).max(-d / 2);
        let hi = m.min(d / 2 - 1);
        Some(((lo + d / 2) as usize, (hi + d / 2 + 1) as usize))
    }
}

/// Checks that a rotation is usable: finite entries of magnitude ≤ 1.5 (a rotation's entries
/// lie in [−1, 1]; the slack admits rounding). Bounded entries keep every grid coordinate
/// within a few box lengths, so index arithmetic cannot overflow.
pub(crate) fn check_rotation(rot: &[f32; 9], index: usize) -> Result<()> {
    for (j, &v) in rot.iter().enumerate() {
        if !v.is_finite() || v.abs() > 1.5 {
            return Err(Error::invalid(format!(
                "rotation {index}: entry [{}, {}] = {v} is not a rotation-matrix entry \
                 (expected a finite value in [−1, 1])",
                j / 3,
                j % 3
            )));
        }
    }
    Ok(())
}

/// The image plane of one rotation in grid coordinates: `g = ky·ey + c + kx·ex`, with
/// `ex = s·R[0,:]`, `ey = s·R[1,:]`, `c = Nv/2`. Affine in `(kx, ky)`, so one row start and
/// one step per axis give every pixel; the same expression (not an accumulated sum, which
/// would drift) is used by slice and backprojection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plane {
    ex: [f32; 3],
    ey: [f32; 3],
    centre: f32,
    half_d: i64,
}

impl Plane {
    pub(crate) fn new(geom: &SliceGeometry, rot: &[f32; 9]) -> Self {
        let s = geom.scale() as f32;
        Plane {
            ex: [s * rot[0], s * rot[1], s * rot[2]],
            ey: [s * rot[3], s * rot[4], s * rot[5]],
            centre: (geom.volume_size / 2) as f32,
            half_d: (geom.image_size / 2) as i64,
        }
    }

    /// Grid coordinates of the start of row `row` (kx = 0 term).
    #[inline(always)]
    pub(crate) fn row_base(&self, row: usize) -> [f32; 3] {
        let ky = (row as i64 - self.half_d) as f32;
        [
            ky * self.ey[0] + self.centre,
            ky * self.ey[1] + self.centre,
            ky * self.ey[2] + self.centre,
        ]
    }

    /// Grid coordinates `(gx, gy, gz)` of pixel column `col` given its row base.
    #[inline(always)]
    pub(crate) fn at(&self, base: &[f32; 3], col: usize) -> [f32; 3] {
        let kx = (col as i64 - self.half_d) as f32;
        [
            base[0] + kx * self.ex[0],
            base[1] + kx * self.ex[1],
            base[2] + kx * self.ex[2],
        ]
    }

    /// Grid coordinates of flat pixel `p` (row-major).
    #[inline(always)]
    fn pixel(&self, d: usize, p: usize) -> [f32; 3] {
        self.at(&self.row_base(p / d), p % d)
    }
}

/// The definition of each stencil: calls `f(flat_index, z, weight)` for every in-grid voxel
/// of the stencil at grid coordinates `g`, skipping z-planes outside `[z_lo, z_hi)`.
/// [`gather_pixel`] and [`scatter_pixel`] are its separable forms, tested against it.
#[inline(always)]
fn visit<F: FnMut(usize, usize, f32)>(
    interp: Interp,
    nv: usize,
    g: [f32; 3],
    z_lo: usize,
    z_hi: usize,
    mut f: F,
) {
    let n = nv as i64;
    match interp {
        Interp::Nearest => {
            let (x, y, z) = (round_even(g[0]), round_even(g[1]), round_even(g[2]));
            if x < 0 || x >= n || y < 0 || y >= n || z < z_lo as i64 || z >= z_hi as i64 {
                return;
            }
            let (x, y, z) = (x as usize, y as usize, z as usize);
            f((z * nv + y) * nv + x, z, 1.0);
        }
        Interp::Trilinear => {
            let [(bx, tx), (by, ty), (bz, tz)] = g.map(floor_frac);
            let (b, t) = ([bx, by, bz], [tx, ty, tz]);
            if b.iter().any(|&v| v < -1 || v >= n) {
                return;
            }
            let w = [[1.0 - t[0], t[0]], [1.0 - t[1], t[1]], [1.0 - t[2], t[2]]];
            for (dz, &wz) in w[2].iter().enumerate() {
                let z = b[2] + dz as i64;
                if z < z_lo as i64 || z >= z_hi as i64 || z >= n {
                    continue;
                }
                let z = z as usize;
                for (dy, &wy) in w[1].iter().enumerate() {
                    let y = b[1] + dy as i64;
                    if y < 0 || y >= n {
                        continue;
                    }
                    let row = (z * nv + y as usize) * nv;
                    let wzy = wz * wy;
                    for (dx, &wx) in w[0].iter().enumerate() {
                        let x = b[0] + dx as i64;
                        if x < 0 || x >= n {
                            continue;
                        }
                        f(row + x as usize, z, wzy * wx);
                    }
                }
            }
        }
        Interp::Cubic => {
            let ff = g.map(floor_frac);
            let w = ff.map(|(_, t)| bspline_weights(t));
            // Stencil b−1 .. b+2 on every axis, wrapped (periodic spline).
            let idx = |a: usize| -> [usize; 4] {
                let s = wrap(ff[a].0 - 1, n);
                let next = |v: usize| if v + 1 == nv { 0 } else { v + 1 };
                let (s1, s2, s3) = (next(s), next(next(s)), next(next(next(s))));
                [s, s1, s2, s3]
            };
            let (ix, iy, iz) = (idx(0), idx(1), idx(2));
            for (&z, &wz) in iz.iter().zip(&w[2]) {
                if z < z_lo || z >= z_hi {
                    continue;
                }
                for (&y, &wy) in iy.iter().zip(&w[1]) {
                    let row = (z * nv + y) * nv;
                    let wzy = wz * wy;
                    for (&x, &wx) in ix.iter().zip(&w[0]) {
                        f(row + x, z, wzy * wx);
                    }
                }
            }
        }
    }
}

/// The gather of [`visit`] written separably, `Σ_z wz Σ_y wy Σ_x wx v`: the same voxels and
/// weights, a third of the multiplications, contiguous x-runs without per-tap index checks.
/// Slicing cost is dominated by this function (cubic projections of the mean and of every
/// basis volume, per image).
#[inline(always)]
fn gather_pixel(
    interp: Interp,
    vol: &[Complex<f32>],
    nv: usize,
    g: [f32; 3],
    z_lo: usize,
    z_hi: usize,
) -> Complex<f32> {
    let zero = Complex::new(0.0f32, 0.0f32);
    let n = nv as i64;
    match interp {
        Interp::Nearest => {
            let mut s = zero;
            visit(interp, nv, g, z_lo, z_hi, |i, _, _| s = vol[i]);
            s
        }
        Interp::Trilinear => {
            let [(bx, tx), (by, ty), (bz, tz)] = g.map(floor_frac);
            if [bx, by, bz].iter().any(|&v| v < -1 || v >= n) {
                return zero;
            }
            let (wx, wy, wz) = ([1.0 - tx, tx], [1.0 - ty, ty], [1.0 - tz, tz]);
            let x_inside = bx >= 0 && bx + 1 < n;
            let mut s = zero;
            for (dz, &wzv) in wz.iter().enumerate() {
                let z = bz + dz as i64;
                if z < z_lo as i64 || z >= (z_hi as i64).min(n) {
                    continue;
                }
                let mut sz = zero;
                for (dy, &wyv) in wy.iter().enumerate() {
                    let y = by + dy as i64;
                    if y < 0 || y >= n {
                        continue;
                    }
                    let row = (z as usize * nv + y as usize) * nv;
                    let sx = if x_inside {
                        let v = &vol[row + bx as usize..][..2];
                        v[0] * wx[0] + v[1] * wx[1]
                    } else {
                        let mut sx = zero;
                        for (dx, &wxv) in wx.iter().enumerate() {
                            let x = bx + dx as i64;
                            if (0..n).contains(&x) {
                                sx += vol[row + x as usize] * wxv;
                            }
                        }
                        sx
                    };
                    sz += sx * wyv;
                }
                s += sz * wzv;
            }
            s
        }
        Interp::Cubic => {
            let ff = g.map(floor_frac);
            let [wx, wy, wz] = ff.map(|(_, t)| bspline_weights(t));
            let start = |a: usize| wrap(ff[a].0 - 1, n);
            let (x0, y0, z0) = (start(0), start(1), start(2));
            let next = |v: usize| if v + 1 == nv { 0 } else { v + 1 };
            let x_inside = x0 + 3 < nv;
            let mut s = zero;
            let mut z = z0;
            for &wzv in &wz {
                if z >= z_lo && z < z_hi {
                    let mut sz = zero;
                    let mut y = y0;
                    for &wyv in &wy {
                        let row = (z * nv + y) * nv;
                        let sx = if x_inside {
                            let v = &vol[row + x0..][..4];
                            v[0] * wx[0] + v[1] * wx[1] + v[2] * wx[2] + v[3] * wx[3]
                        } else {
                            let mut sx = zero;
                            let mut x = x0;
                            for &wxv in &wx {
                                sx += vol[row + x] * wxv;
                                x = next(x);
                            }
                            sx
                        };
                        sz += sx * wyv;
                        y = next(y);
                    }
                    s += sz * wzv;
                }
                z = next(z);
            }
            s
        }
    }
}

/// The lowest z-plane the stencil at `g` writes to (`None`: it touches no voxel). For
/// [`Interp::Cubic`] "lowest" means the first of the wrapped stencil `b−1, b, b+1, b+2`.
#[inline(always)]
fn first_z(interp: Interp, nv: usize, g: [f32; 3]) -> Option<usize> {
    let n = nv as i64;
    match interp {
        Interp::Nearest => {
            let r = g.map(round_even);
            r.iter()
                .all(|&v| (0..n).contains(&v))
                .then_some(r[2] as usize)
        }
        Interp::Trilinear => {
            let b = g.map(|v| floor_frac(v).0);
            b.iter()
                .all(|&v| (-1..n).contains(&v))
                .then_some(b[2].max(0) as usize)
        }
        Interp::Cubic => Some(wrap(floor_frac(g[2]).0 - 1, n)),
    }
}

/// `(⌊g⌋, g − ⌊g⌋)`. Written out because `f32::floor` is a libm call on baseline x86-64
/// (no SSE4.1), a tenth of the slicing time. Exact: the fraction of a float is representable.
/// `g` is bounded (checked rotations), so the cast cannot saturate.
#[inline(always)]
pub(crate) fn floor_frac(g: f32) -> (i64, f32) {
    let mut i = g as i64; // truncates toward zero
    if (i as f32) > g {
        i -= 1;
    }
    (i, g - i as f32)
}

/// `g` rounded half to even (`jnp.round`), without a libm call (see [`floor_frac`]).
#[inline(always)]
fn round_even(g: f32) -> i64 {
    let (i, t) = floor_frac(g);
    if t > 0.5 || (t == 0.5 && i % 2 != 0) {
        i + 1
    } else {
        i
    }
}

/// `v mod n` in `0..n`, without a division in the common case (`v` within one period).
#[inline(always)]
fn wrap(v: i64, n: i64) -> usize {
    if (0..n).contains(&v) {
        v as usize
    } else if (-n..0).contains(&v) {
        (v + n) as usize
    } else if (n..2 * n).contains(&v) {
        (v - n) as usize
    } else {
        v.rem_euclid(n) as usize
    }
}

/// Slices one image, `out = P(R) volume`, with argument checks.
///
/// `volume` is `Nv³` (z slowest, x fastest); for [`Interp::Cubic`] it must hold spline
/// coefficients ([`crate::forward::cubic::prefilter`]); `out` is `D²` (row-major).
pub fn slice(
    volume: &[Complex<f32>],
    geom: &SliceGeometry,
    interp: Interp,
    rotation: &[f32; 9],
    out: &mut [Complex<f32>],
) -> Result<()> {
    check_args("slice", geom, 1, volume.len(), out.len(), "out")?;
    check_rotation(rotation, 0)?;
    gather(volume, geom, interp, std::slice::from_ref(rotation), out);
    Ok(())
}

/// `out[i·D² ..][..D²] = P(R_i) volume` for a batch of rotations, in rayon's current pool
/// (the gather reads each slab of the volume once for the whole batch).
pub fn slice_batch(
    volume: &[Complex<f32>],
    geom: &SliceGeometry,
    interp: Interp,
    rotations: &[[f32; 9]],
    out: &mut [Complex<f32>],
) -> Result<()> {
    check_args(
        "slice",
        geom,
        rotations.len(),
        volume.len(),
        out.len(),
        "out",
    )?;
    check_rotations(rotations)?;
    gather(volume, geom, interp, rotations, out);
    Ok(())
}

/// `acc += P(R)ᵀ image` for one complex image (see [`backproject_batch`]).
pub fn backproject(
    image: &[Complex<f32>],
    geom: &SliceGeometry,
    interp: Interp,
    rotation: &[f32; 9],
    acc: &mut [Complex<f64>],
) -> Result<()> {
    backproject_batch(image, geom, interp, std::slice::from_ref(rotation), acc)
}

/// `acc += P(R)ᵀ values` for one real image (CTF²/σ² weights and the like).
pub fn backproject_real(
    values: &[f32],
    geom: &SliceGeometry,
    interp: Interp,
    rotation: &[f32; 9],
    acc: &mut [f64],
) -> Result<()> {
    backproject_real_batch(values, geom, interp, std::slice::from_ref(rotation), acc)
}

/// `acc += Σ_i P(R_i)ᵀ images_i` for `n = rotations.len()` complex images of `D²` pixels.
///
/// Scatters `value · weight` into exactly the voxels and weights that [`slice`](fn@slice)
/// reads, with the same clipping, so it is the exact adjoint. For [`Interp::Cubic`] the
/// result is in spline-coefficient space: the adjoint of "prefilter, then evaluate" is
/// "scatter, then prefilter", so apply [`crate::forward::cubic::prefilter`] to the finished accumulator
/// (once, after all images: the prefilter is linear).
///
/// Deterministic: the same bits whatever the thread count (rayon's current pool) and however
/// the caller splits the images into batches (module docs).
pub fn backproject_batch(
    images: &[Complex<f32>],
    geom: &SliceGeometry,
    interp: Interp,
    rotations: &[[f32; 9]],
    acc: &mut [Complex<f64>],
) -> Result<()> {
    check_args(
        "backproject",
        geom,
        rotations.len(),
        acc.len(),
        images.len(),
        "images",
    )?;
    check_rotations(rotations)?;
    scatter(images, geom, interp, rotations, acc);
    Ok(())
}

/// The real-valued [`backproject_batch`]: `acc += Σ_i P(R_i)ᵀ values_i`.
pub fn backproject_real_batch(
    values: &[f32],
    geom: &SliceGeometry,
    interp: Interp,
    rotations: &[[f32; 9]],
    acc: &mut [f64],
) -> Result<()> {
    check_args(
        "backproject_real",
        geom,
        rotations.len(),
        acc.len(),
        values.len(),
        "values",
    )?;
    check_rotations(rotations)?;
    scatter(values, geom, interp, rotations, acc);
    Ok(())
}

/// Checks the geometry, the volume length (`Nv³`) and the image buffer length (`n·D²`).
pub(crate) fn check_args(
    op: &str,
    geom: &SliceGeometry,
    n_images: usize,
    volume_len: usize,
    images_len: usize,
    images_name: &str,
) -> Result<()> {
    geom.validate()?;
    let nv = geom.volume_size;
    if volume_len != geom.volume_len() {
        return Err(Error::inconsistent(format!(
            "{op}: the volume buffer has {volume_len} values, expected Nv³ = {nv}³ = {}",
            geom.volume_len()
        )));
    }
    let d = geom.image_size;
    let expected = n_images.checked_mul(geom.image_len());
    if expected != Some(images_len) {
        return Err(Error::inconsistent(format!(
            "{op}: `{images_name}` has {images_len} values, expected {n_images} rotations × \
             D² = {n_images} × {d}² = {}",
            n_images as u128 * geom.image_len() as u128
        )));
    }
    Ok(())
}

/// [`check_rotation`] for each rotation of a batch.
pub(crate) fn check_rotations(rotations: &[[f32; 9]]) -> Result<()> {
    rotations
        .iter()
        .enumerate()
        .try_for_each(|(i, r)| check_rotation(r, i))
}

/// A value that can be scattered into an `f64` accumulator.
pub(crate) trait ScatterValue: Copy + Send + Sync {
    type Acc: Copy + Send + std::ops::AddAssign + std::ops::Mul<f64, Output = Self::Acc>;
    fn widen(self) -> Self::Acc;
}

impl ScatterValue for Complex<f32> {
    type Acc = Complex<f64>;
    #[inline(always)]
    fn widen(self) -> Complex<f64> {
        Complex::new(self.re as f64, self.im as f64)
    }
}

impl ScatterValue for f32 {
    type Acc = f64;
    #[inline(always)]
    fn widen(self) -> f64 {
        self as f64
    }
}

/// The scatter of [`visit`] written separably: `acc[z,y,x] += ((v·wz)·wy)·wx` in `f64`, one
/// addition per voxel and pixel (so the canonical order of additions is kept), restricted to
/// the planes `z_lo..z_hi` that `acc` holds (`acc[0]` is plane `z_lo`).
#[inline(always)]
fn scatter_pixel<A>(
    interp: Interp,
    acc: &mut [A],
    nv: usize,
    g: [f32; 3],
    v: A,
    z_lo: usize,
    z_hi: usize,
) where
    A: Copy + std::ops::AddAssign + std::ops::Mul<f64, Output = A>,
{
    let n = nv as i64;
    let base = z_lo * nv * nv;
    match interp {
        Interp::Nearest => visit(interp, nv, g, z_lo, z_hi, |i, _, _| acc[i - base] += v),
        Interp::Trilinear => {
            let [(bx, tx), (by, ty), (bz, tz)] = g.map(floor_frac);
            if [bx, by, bz].iter().any(|&v| v < -1 || v >= n) {
                return;
            }
            let (wx, wy, wz) = ([1.0 - tx, tx], [1.0 - ty, ty], [1.0 - tz, tz]);
            let x_inside = bx >= 0 && bx + 1 < n;
            for (dz, &wzv) in wz.iter().enumerate() {
                let z = bz + dz as i64;
                if z < z_lo as i64 || z >= (z_hi as i64).min(n) {
                    continue;
                }
                let vz = v * wzv as f64;
                for (dy, &wyv) in wy.iter().enumerate() {
                    let y = by + dy as i64;
                    if y < 0 || y >= n {
                        continue;
                    }
                    let vzy = vz * wyv as f64;
                    let row = (z as usize * nv + y as usize) * nv - base;
                    if x_inside {
                        let a = &mut acc[row + bx as usize..][..2];
                        a[0] += vzy * wx[0] as f64;
                        a[1] += vzy * wx[1] as f64;
                    } else {
                        for (dx, &wxv) in wx.iter().enumerate() {
                            let x = bx + dx as i64;
                            if (0..n).contains(&x) {
                                acc[row + x as usize] += vzy * wxv as f64;
                            }
                        }
                    }
                }
            }
        }
        Interp::Cubic => {
            let ff = g.map(floor_frac);
            let [wx, wy, wz] = ff.map(|(_, t)| bspline_weights(t));
            let start = |a: usize| wrap(ff[a].0 - 1, n);
            let (x0, y0, z0) = (start(0), start(1), start(2));
            let next = |v: usize| if v + 1 == nv { 0 } else { v + 1 };
            let x_inside = x0 + 3 < nv;
            let mut z = z0;
            for &wzv in &wz {
                if z >= z_lo && z < z_hi {
                    let vz = v * wzv as f64;
                    let mut y = y0;
                    for &wyv in &wy {
                        let vzy = vz * wyv as f64;
                        let row = (z * nv + y) * nv - base;
                        if x_inside {
                            let a = &mut acc[row + x0..][..4];
                            for (a, &wxv) in a.iter_mut().zip(&wx) {
                                *a += vzy * wxv as f64;
                            }
                        } else {
                            let mut x = x0;
                            for &wxv in &wx {
                                acc[row + x] += vzy * wxv as f64;
                                x = next(x);
                            }
                        }
                        y = next(y);
                    }
                }
                z = next(z);
            }
        }
    }
}

/// z-planes per slab of the deterministic scatter (and the least for the gather). At least
/// the widest stencil (4, cubic), so a stencil spans at most two consecutive slabs. A
/// constant, never derived from the thread count: the canonical summation order depends on
/// it.
pub(crate) const SLAB: usize = 4;

/// Target size of one gather slab: a few MiB, so that the planes every image of a chunk
/// reads stay in cache. Like [`SLAB`], a constant: each slice depends on the slab layout
/// (partial sums), which must be a function of the volume size only.
const GATHER_SLAB_BYTES: usize = 4 << 20;

/// Pixel records per chunk of images (bounds the bucket memory to 4 bytes each, 16 MiB);
/// chunking changes nothing in the result. Tiny under unit tests, so that they cross chunks.
const CHUNK_PIXELS: usize = if cfg!(test) { 1 << 7 } else { 1 << 22 };

/// The slab layout of a volume side: slabs of `t` planes, the last one taking the
/// remainder (so every slab has ≥ `t` ≥ [`SLAB`] planes when there are two or more).
#[derive(Clone, Copy)]
struct Slabs {
    n: usize,
    t: usize,
    nv: usize,
}

impl Slabs {
    fn new(nv: usize, t: usize) -> Self {
        let t = t.max(SLAB);
        Slabs {
            n: (nv / t).max(1),
            t,
            nv,
        }
    }
    /// The scatter's layout: thin slabs, many of them to run in parallel.
    fn scatter(nv: usize) -> Self {
        Slabs::new(nv, SLAB)
    }
    /// The gather's layout: slabs of about [`GATHER_SLAB_BYTES`] (fewer straddling stencils,
    /// hence fewer pixels visited twice; one slab when the volume fits in that size).
    fn gather(nv: usize) -> Self {
        let plane = nv * nv * std::mem::size_of::<Complex<f32>>();
        Slabs::new(nv, GATHER_SLAB_BYTES / plane)
    }
    fn of(&self, z: usize) -> usize {
        (z / self.t).min(self.n - 1)
    }
    fn range(&self, k: usize) -> (usize, usize) {
        let hi = if k + 1 == self.n {
            self.nv
        } else {
            (k + 1) * self.t
        };
        (k * self.t, hi)
    }
}

/// Sorts the surviving pixels of one image by the slab of their first z-plane (stable
/// counting sort): `pix[offs[k]..offs[k+1]]` are the pixels keyed to slab `k`, in pixel
/// order. Coordinates are recomputed in the second pass rather than stored, which keeps the
/// buckets at 4 bytes per pixel.
fn bucket_image(
    geom: &SliceGeometry,
    interp: Interp,
    plane: &Plane,
    slabs: Slabs,
    pix: &mut [u32],
    offs: &mut [u32],
) {
    let d = geom.image_size;
    let nv = geom.volume_size;
    offs.fill(0);
    let for_each = |f: &mut dyn FnMut(usize, usize)| {
        for row in 0..d {
            let Some((c0, c1)) = geom.row_range(row) else {
                continue;
            };
            let base = plane.row_base(row);
            for col in c0..c1 {
                if let Some(z) = first_z(interp, nv, plane.at(&base, col)) {
                    f(row * d + col, slabs.of(z));
                }
            }
        }
    };
    for_each(&mut |_, k| offs[k + 1] += 1);
    for k in 0..slabs.n {
        offs[k + 1] += offs[k];
    }
    for_each(&mut |p, k| {
        pix[offs[k] as usize] = p as u32;
        offs[k] += 1;
    });
    // offs[k] now holds the end of bucket k = the start of bucket k+1; shift back.
    for k in (1..=slabs.n).rev() {
        offs[k] = offs[k - 1];
    }
    offs[0] = 0;
}

/// The pixels of a chunk of images, bucketed by slab (shared by gather and scatter).
struct Buckets {
    slabs: Slabs,
    d2: usize,
    pix: Vec<u32>,
    offs: Vec<u32>,
    planes: Vec<Plane>,
}

impl Buckets {
    /// Room for `chunk` images.
    fn new(geom: &SliceGeometry, slabs: Slabs, chunk: usize) -> Self {
        Buckets {
            slabs,
            d2: geom.image_len(),
            pix: vec![0; chunk * geom.image_len()],
            offs: vec![0; chunk * (slabs.n + 1)],
            planes: Vec::with_capacity(chunk),
        }
    }

    /// Buckets the images of `rots` (parallel over images).
    fn fill(&mut self, geom: &SliceGeometry, interp: Interp, rots: &[[f32; 9]]) {
        let slabs = self.slabs;
        self.planes.clear();
        self.planes.extend(rots.iter().map(|r| Plane::new(geom, r)));
        self.pix
            .par_chunks_mut(self.d2)
            .zip(self.offs.par_chunks_mut(slabs.n + 1))
            .zip(self.planes.par_iter())
            .for_each(|((p, o), plane)| bucket_image(geom, interp, plane, slabs, p, o));
    }

    /// The buckets whose stencils can reach slab `k`: the previous slab's (a stencil spills
    /// at most one slab up, wrapping for the periodic cubic), then `k`'s own.
    fn keys(&self, interp: Interp, k: usize) -> impl Iterator<Item = usize> {
        let n = self.slabs.n;
        let prev = match interp {
            _ if n == 1 => None,
            Interp::Nearest => None,
            Interp::Trilinear => k.checked_sub(1),
            Interp::Cubic => Some((k + n - 1) % n),
        };
        prev.into_iter().chain(std::iter::once(k))
    }

    /// The pixels of image `i` keyed to slab `key`.
    fn bucket(&self, i: usize, key: usize) -> &[u32] {
        let o = &self.offs[i * (self.slabs.n + 1)..][..self.slabs.n + 1];
        &self.pix[i * self.d2..][o[key] as usize..o[key + 1] as usize]
    }
}

/// Images per chunk for the bucket buffers.
fn chunk_len(geom: &SliceGeometry, n: usize) -> usize {
    (CHUNK_PIXELS / geom.image_len()).clamp(1, n.max(1))
}

/// Batched slicing `out_i = P(R_i) volume` (arguments already checked); runs in rayon's
/// current pool.
///
/// Slab by slab (sequentially), all images of a chunk in parallel gather the part of their
/// stencils that lies in the slab. The slab's few planes then stay in cache while every image
/// reads them, instead of each image walking the whole (often 2N³, GiB-sized) volume on its
/// own: the gather is memory-latency bound, this is what makes it fast. A pixel whose
/// stencil straddles two slabs is the sum of the two partial sums, in slab order; that order
/// is fixed by the volume size, so each image's result depends on its rotation only.
pub(crate) fn gather(
    volume: &[Complex<f32>],
    geom: &SliceGeometry,
    interp: Interp,
    rotations: &[[f32; 9]],
    out: &mut [Complex<f32>],
) {
    let slabs = Slabs::gather(geom.volume_size);
    gather_with(volume, geom, interp, rotations, out, slabs)
}

/// [`gather`] with a given slab layout (tests use thin slabs on small volumes).
fn gather_with(
    volume: &[Complex<f32>],
    geom: &SliceGeometry,
    interp: Interp,
    rotations: &[[f32; 9]],
    out: &mut [Complex<f32>],
    slabs: Slabs,
) {
    out.par_iter_mut().for_each(|o| *o = Complex::new(0.0, 0.0));
    if rotations.is_empty() {
        return;
    }
    let d = geom.image_size;
    let d2 = geom.image_len();
    let nv = geom.volume_size;
    let chunk = chunk_len(geom, rotations.len());
    let mut b = Buckets::new(geom, slabs, chunk);
    for (rots, out_c) in rotations.chunks(chunk).zip(out.chunks_mut(chunk * d2)) {
        b.fill(geom, interp, rots);
        let b = &b;
        for k in 0..b.slabs.n {
            let (z_lo, z_hi) = b.slabs.range(k);
            out_c
                .par_chunks_mut(d2)
                .zip(b.planes.par_iter())
                .enumerate()
                .for_each(|(i, (o, plane))| {
                    for key in b.keys(interp, k) {
                        for &p in b.bucket(i, key) {
                            let p = p as usize;
                            o[p] += gather_pixel(interp, volume, nv, plane.pixel(d, p), z_lo, z_hi);
                        }
                    }
                });
        }
    }
}

/// The deterministic scatter `acc += Σ_i P(R_i)ᵀ values_i` (arguments already checked).
/// Runs in rayon's current pool; see the module docs for the summation order.
pub(crate) fn scatter<V: ScatterValue>(
    values: &[V],
    geom: &SliceGeometry,
    interp: Interp,
    rotations: &[[f32; 9]],
    acc: &mut [V::Acc],
) {
    if rotations.is_empty() {
        return;
    }
    let d = geom.image_size;
    let d2 = geom.image_len();
    let nv = geom.volume_size;
    let chunk = chunk_len(geom, rotations.len());
    let mut b = Buckets::new(geom, Slabs::scatter(nv), chunk);
    for (rots, vals) in rotations.chunks(chunk).zip(values.chunks(chunk * d2)) {
        // Phase 1, parallel over images: bucket each image's pixels by slab.
        b.fill(geom, interp, rots);
        let b = &b;
        // Phase 2, parallel over slabs: each slab owns its planes of the accumulator and
        // applies, image by image, the stencils that reach into it.
        let mut slab_accs: Vec<&mut [V::Acc]> = Vec::with_capacity(b.slabs.n);
        let mut rest = &mut *acc;
        for k in 0..b.slabs.n {
            let (lo, hi) = b.slabs.range(k);
            let (head, tail) = rest.split_at_mut((hi - lo) * nv * nv);
            slab_accs.push(head);
            rest = tail;
        }
        slab_accs
            .into_par_iter()
            .enumerate()
            .for_each(|(k, slab_acc)| {
                let (z_lo, z_hi) = b.slabs.range(k);
                for (i, plane) in b.planes.iter().enumerate() {
                    let img = &vals[i * d2..][..d2];
                    for key in b.keys(interp, k) {
                        for &p in b.bucket(i, key) {
                            let p = p as usize;
                            let g = plane.pixel(d, p);
                            let v = img[p].widen();
                            scatter_pixel(interp, slab_acc, nv, g, v, z_lo, z_hi);
                        }
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_range_matches_the_per_pixel_test() {
        for d in [2usize, 4, 6, 16, 30] {
            for r in [
                None,
                Some(0.0),
                Some(0.5),
                Some(1.0),
                Some(2.3),
                Some(d as f32 / 2.0 - 1.0),
            ]
            .into_iter()
            .chain([Some(d as f32), Some(3.0 * d as f32)])
            {
                let g = SliceGeometry::new(d, d)
                    .unwrap()
                    .with_max_radius(r)
                    .unwrap();
                for row in 0..d {
                    let ky = row as i64 - d as i64 / 2;
                    let keep: Vec<usize> = (0..d)
                        .filter(|&c| {
                            let kx = c as i64 - d as i64 / 2;
                            r.is_none_or(|r| ((kx * kx + ky * ky) as f32) <= r * r)
                        })
                        .collect();
                    let got: Vec<usize> = match g.row_range(row) {
                        Some((a, b)) => (a..b).collect(),
                        None => vec![],
                    };
                    assert_eq!(got, keep, "d {d} r {r:?} row {row}");
                }
            }
        }
    }

    #[test]
    fn floor_and_round_match_std() {
        let mut vals = vec![0.0f32, -0.0, 0.5, -0.5, 1.5, 2.5, -1.5, -2.5, 3.0, -3.0];
        vals.extend((0..2000).map(|i| (i as f32 - 1000.0) * 0.3719));
        vals.extend([511.99997, -0.00001, 1e-30, -1e-30, 700.25, -700.75]);
        for g in vals {
            let (i, t) = floor_frac(g);
            assert_eq!(i as f32, g.floor(), "{g}");
            assert_eq!(t, g - g.floor(), "{g}");
            assert_eq!(round_even(g) as f32, g.round_ties_even(), "{g}");
        }
    }

    /// The separable gather and scatter use the same voxels and weights as [`visit`].
    #[test]
    fn separable_gather_and_scatter_match_the_stencil() {
        let nv = 8;
        let mut rng = crate::rng::Rng::new(1);
        let vol: Vec<Complex<f32>> = (0..nv * nv * nv)
            .map(|_| Complex::new(rng.normal() as f32, rng.normal() as f32))
            .collect();
        for _ in 0..3000 {
            let g = [0, 1, 2].map(|_| rng.uniform_in(-2.5, nv as f64 + 1.5) as f32);
            let (z_lo, z_hi) = if rng.below(2) == 0 { (0, nv) } else { (4, nv) };
            for interp in [Interp::Nearest, Interp::Trilinear, Interp::Cubic] {
                let mut want = Complex::new(0.0f64, 0.0);
                visit(interp, nv, g, z_lo, z_hi, |i, _, w| {
                    want += Complex::new(vol[i].re as f64, vol[i].im as f64) * w as f64
                });
                let got = gather_pixel(interp, &vol, nv, g, z_lo, z_hi);
                let err = (Complex::new(got.re as f64, got.im as f64) - want).norm();
                assert!(err < 1e-5, "{interp:?} {g:?}: {got} vs {want}");
                // Scatter: the same weights land on the same voxels.
                let mut want_acc = vec![Complex::new(0.0f64, 0.0); nv * nv * (z_hi - z_lo)];
                let v = Complex::new(0.3f64, -1.1);
                visit(interp, nv, g, z_lo, z_hi, |i, _, w| {
                    want_acc[i - z_lo * nv * nv] += v * w as f64
                });
                let mut acc = vec![Complex::new(0.0f64, 0.0); want_acc.len()];
                scatter_pixel(interp, &mut acc, nv, g, v, z_lo, z_hi);
                for (a, b) in acc.iter().zip(&want_acc) {
                    assert!((a - b).norm() < 1e-6, "{interp:?} {g:?}: {a} vs {b}");
                }
            }
        }
    }

    /// Slab-by-slab gathering (partial sums per slab) gives the single-slab slice.
    #[test]
    fn thin_gather_slabs_give_the_same_slices() {
        let mut rng = crate::rng::Rng::new(2);
        for (d, nv) in [(8, 8), (6, 12), (8, 16)] {
            let geom = SliceGeometry::new(d, nv)
                .unwrap()
                .with_max_radius(None)
                .unwrap();
            let vol: Vec<Complex<f32>> = (0..nv * nv * nv)
                .map(|_| Complex::new(rng.normal() as f32, rng.normal() as f32))
                .collect();
            let rots: Vec<[f32; 9]> = (0..5).map(|_| rng.rotation().map(|v| v as f32)).collect();
            for interp in [Interp::Nearest, Interp::Trilinear, Interp::Cubic] {
                let mut one = vec![Complex::new(0.0, 0.0); 5 * d * d];
                let mut thin = one.clone();
                gather_with(&vol, &geom, interp, &rots, &mut one, Slabs::new(nv, nv));
                gather_with(&vol, &geom, interp, &rots, &mut thin, Slabs::new(nv, 4));
                assert_eq!(Slabs::new(nv, 4).n, nv / 4);
                for (a, b) in one.iter().zip(&thin) {
                    assert!(
                        (a - b).norm() < 1e-5,
                        "D {d} Nv {nv} {interp:?}: {a} vs {b}"
                    );
                }
                assert!(one.iter().any(|v| v.norm() > 0.0));
                // Chunks (2 images of 8² pixels here) change nothing: image by image gives
                // the same bits, for slicing and for the accumulated backprojection.
                let mut each = vec![Complex::new(0.0, 0.0); 5 * d * d];
                let mut acc_all = vec![Complex::new(0.0, 0.0); nv * nv * nv];
                let mut acc_each = acc_all.clone();
                scatter(&one, &geom, interp, &rots, &mut acc_all);
                for (i, r) in rots.iter().enumerate() {
                    let o = &mut each[i * d * d..][..d * d];
                    gather(&vol, &geom, interp, std::slice::from_ref(r), o);
                    scatter(o, &geom, interp, std::slice::from_ref(r), &mut acc_each);
                }
                let mut all = vec![Complex::new(0.0, 0.0); 5 * d * d];
                gather(&vol, &geom, interp, &rots, &mut all);
                assert_eq!(all, each);
                assert_eq!(acc_all, acc_each);
            }
        }
    }

    #[test]
    fn geometry_validation() {
        assert!(SliceGeometry::new(16, 32).is_ok());
        assert!(SliceGeometry::new(15, 30).is_err());
        assert!(SliceGeometry::new(16, 24).is_err());
        assert!(SliceGeometry::new(16, 8).is_err());
        assert!(SliceGeometry::new(0, 0).is_err());
        let g = SliceGeometry::new(16, 16).unwrap();
        assert!(g.with_max_radius(Some(-1.0)).is_err());
        assert!(g.with_max_radius(Some(f32::NAN)).is_err());
        assert!(g.with_max_radius(None).is_ok());
        assert_eq!(g.max_radius, Some(7.0));
    }

    #[test]
    fn stencils_reach_at_most_the_next_slab() {
        // The scatter relies on this: a record keyed to slab k writes only to k and k+1.
        for nv in [2usize, 4, 6, 8, 10, 14, 16] {
            for (slabs, interp) in [Slabs::scatter(nv), Slabs::new(nv, 6), Slabs::gather(nv)]
                .into_iter()
                .flat_map(|s| [Interp::Nearest, Interp::Trilinear, Interp::Cubic].map(|i| (s, i)))
            {
                for step in 0..(8 * nv) {
                    let gz = -1.5 + step as f32 * 0.13;
                    let g = [nv as f32 / 2.0, nv as f32 / 2.0, gz];
                    let Some(z0) = first_z(interp, nv, g) else {
                        continue;
                    };
                    let k = slabs.of(z0);
                    visit(interp, nv, g, 0, nv, |_, z, _| {
                        let kz = slabs.of(z);
                        assert!(
                            kz == k || kz == (k + 1) % slabs.n,
                            "nv {nv} {interp:?} gz {gz}: key {k}, z {z} in slab {kz}"
                        );
                    });
                }
            }
        }
    }
}
