//! Local resolution and local-resolution filtering of a half-map pair (algorithms.md §7.5,
//! §15; RECOVAR's `heterogeneity/locres.py::local_resolution` with `use_v2=True`, itself a
//! port of RELION's `postprocess --locres`).
//!
//! # Conventions
//!
//! Volumes are `n × n × n` real `f32` arrays in MRC order (z slowest, x fastest), centre at
//! index `(n/2, n/2, n/2)`; `n` must be even. Spectra are centered (see [`crate::fourier`]);
//! shells are `round(|k|)`; resolutions are in Å. Window sizes given in Å are turned into
//! voxels with numpy's `np.round` (ties to even), as upstream.
//!
//! # Algorithm (what `use_v2=True` computes, and what we compute)
//!
//! With `maskrad = maskrad_Å/voxel`, `edge = edgewidth_Å/voxel`, `step = sampling_Å/voxel`
//! (all rounded) and `R = maskrad + edge`:
//!
//! 1. **Sampling points** `p`: the centered coordinates `−n/2, −n/2 + step, …` on each
//!    axis, kept where `|p| < n/2 − maskrad` (`get_sampling_points`).
//! 2. **Window** `m_p`: a raised-cosine sphere centred at `p`, 1 for `d < maskrad`,
//!    `½ − ½cos(π(R − d)/edge)` for `maskrad ≤ d < R`, 0 beyond (`raised_cosine_mask`);
//!    `d` is the integer-grid distance to `p`.
//! 3. **Sub-box.** Everything per point happens in a cube of side `M = 6R` centred at `p`
//!    (`subsample_array` with `multiplier = 3`), zero where it leaves the volume. Its own
//!    Fourier grid has spacing `1/(M·voxel)` Å⁻¹: shell `i` of the sub-box is the frequency
//!    of big-box shell `i·n/M`, and every resolution below is computed with the sub-box
//!    scale `M·voxel/i`. This is upstream's `use_v2=True`; `use_v2=False` (not ported) did
//!    the same with full `n³` FFTs of the masked maps and of the whole average per point,
//!    i.e. FSC shells on the `n` grid. The sub-box is an approximation of that in three
//!    ways: the FSC is sampled on the `M` grid instead of the `n` grid (the masked maps
//!    are identical, only zero padding differs, so the `M`-grid FSC is a resampling of the
//!    same spectrum — finer than the `n` grid when `M > n`); the low-pass cut-off
//!    `round(M·voxel/res)` is rounded to a sub-box shell; and the filtered map is computed
//!    from an unmasked hard-edged `M³` crop of the average, whose periodic wrap and edge
//!    discontinuity lie `2R` voxels or more outside the window that keeps the result (on
//!    a map that fades to solvent the filtered map then matches the input to ~0.3% where
//!    the FSC is 1; see the tests).
//!    The pipeline's `mean_filt.mrc` and the metrics use `use_v2=True`, so it is the one
//!    we implement; there is no `use_v2` switch.
//! 4. **Local FSC** of `m_p·half1` and `m_p·half2` on the sub-box spectrum (§15.1: shells
//!    `0..M/2 − 2`, `FSC(0) := FSC(1)`, non-finite → 0).
//! 5. **Local resolution** `res_p = M·voxel/i` with `i` the linearly interpolated first
//!    crossing below `fsc_threshold` (§15.2; the last shell if none, 999 Å if `i = 0`),
//!    capped at `min_resolution` from above (so by default 50 Å is the coarsest value
//!    reported). Windows under 5 voxels give very noisy FSCs (a sub-box shell `s` carries
//!    only ~0.1·s² independent samples); upstream warns, and so do we.
//! 6. **Filter** (when `use_filter`): `F` = sub-box spectrum of the average
//!    `(half1 + half2)/2`, sharpened beforehand on the whole map by `exp(+B·s²/4)` (§15.4)
//!    when `bfactor ≠ 0`; `F ← F · sqrt(max(0, 2FSC/(1 + FSC)))` with the FSC zeroed from
//!    its first value `< 1e-4` on ([`fsc_weights`]), then the raised-cosine low-pass at
//!    `res_p` with a 2-shell edge (§15.3, [`crate::fourier::low_pass_filter`] on the `M`
//!    grid); the inverse transform times `m_p` is added into the output.
//! 7. **Blend.** With `W = Σ_p m_p` (the windows placed at their points, not wrapped):
//!    filtered map `= Σ_p m_p·filtered_p / W`, local resolution map
//!    `= W / Σ_p (m_p/res_p)` (a mask-weighted harmonic mean), both 0 where `W ≤ 1e-4`
//!    (voxels no window reaches, e.g. the box corners).
//!
//! # Efficiency
//!
//! Per point the work is `O(M³ log M)`, with `M = 6R` instead of `n`: at the defaults
//! (25 Å sampling) and 4 Å voxels `R = 9`, `M = 54`. Two transforms per point instead of
//! four, by packing two real transforms into one complex one (exact algebra, `f32`
//! rounding only):
//! - the FSC transform takes `m_p·half1 + i·m_p·half2`; the two spectra are separated with
//!   `A(k) = (Z(k) + Z̄(−k))/2`, `B(k) = (Z(k) − Z̄(−k))/(2i)`;
//! - points are processed in pairs `(p, q)`, and the filter takes
//!   `crop_p(avg) + i·crop_q(avg)`: both filters `W_p`, `W_q` are real and even (they depend
//!   on the shell only), so `W_p·A_p + i·W_q·A_q = ((W_p + W_q)·Z(k) + (W_p − W_q)·Z̄(−k))/2`
//!   transforms back to `filtered_p + i·filtered_q`.
//!
//! Measured on 2 shared cores (release): `n = 64` at 4 Å, defaults (474 points, `M = 54`):
//! 0.4 s; `n = 128` (4410 points): 3.5 s. Full `n³` transforms per point would cost about
//! `4·(128/54)³ ≈ 50×` more at `n = 128`.
//!
//! Pairs run in parallel with rayon (the sub-box FFTs are themselves parallel over planes).
//! Each worker holds three `M³` complex buffers (`24·M³` bytes); batches are sized so that
//! at most ~1 GiB of such buffers exist at once. A batch returns only the `(2R+1)³` window
//! contributions, which are added into the `n³` accumulators sequentially in point order, so
//! the output does not depend on the number of threads. Progress is reported (and
//! cancellation checked) after every batch.
//!
//! # Deliberate differences from RECOVAR 1.0.5
//!
//! - `W`, `Σ m_p/res_p` and `Σ m_p·filtered_p` are accumulated directly in `f64` instead of
//!   by FFT convolution of the window with a comb of points (same values, without the FFT
//!   rounding that made upstream need its `1e-4` floor; we keep the floor).
//! - Not computed: the integral-FSC ("AUC") map and the option to filter `half1` instead of
//!   the average. The per-point FSC curves and resolutions are returned instead.

use num_complex::Complex;
use rayon::prelude::*;

use crate::fourier::{bfactor_sharpen, fsc_crossing, fsc_weights, n_shells, shell_index_3d, Fft3};
use crate::progress::{report, Progress};
use crate::{Error, Result};

/// Upstream's sub-box half-side in units of `R = maskrad + edge` (`multiplier = 3`): the
/// padding gives the local FSC three times finer shells than a tight `2R` crop would.
const SUBBOX_MULTIPLIER: usize = 3;
/// Width in shells of the raised-cosine edge of the local low-pass (`filter_edgewidth`).
const FILTER_EDGE_SHELLS: usize = 2;
/// Below this summed window weight a voxel is "not covered" and gets 0 in both maps.
const COVERAGE_FLOOR: f64 = 1e-4;
/// Resolution RECOVAR reports when the FSC crosses at shell 0 (then capped at `min_resolution`).
const NO_RESOLUTION: f64 = 999.0;
/// Upper bound on the bytes of per-worker sub-box buffers alive at once.
const BUFFER_BUDGET: usize = 1 << 30;

/// Options of [`local_resolution`]; the defaults are the pipeline's `mean_filt.mrc` call
/// (§15.5).
#[derive(Clone, Debug, PartialEq)]
pub struct LocresOptions {
    /// Spacing of the sampling points, Å (default 25).
    pub sampling_angstrom: f64,
    /// Radius of the flat part of each window, Å (default: half the sampling).
    pub maskrad_angstrom: Option<f64>,
    /// Width of the raised-cosine edge of each window, Å (default: the sampling).
    pub edgewidth_angstrom: Option<f64>,
    /// Coarsest resolution reported, Å (default 50): local values are capped at it.
    pub min_resolution: f64,
    /// FSC threshold for the local resolution (default 1/7).
    pub fsc_threshold: f64,
    /// B-factor applied to the average before filtering, Å² (`exp(+B·s²/4)`; default 0).
    pub bfactor: f64,
    /// Whether to build the locally filtered map (default true); without it only the
    /// resolution map is computed and [`LocalResolution::filtered`] is empty.
    pub use_filter: bool,
}

impl Default for LocresOptions {
    fn default() -> Self {
        LocresOptions {
            sampling_angstrom: 25.0,
            maskrad_angstrom: None,
            edgewidth_angstrom: None,
            min_resolution: 50.0,
            fsc_threshold: 1.0 / 7.0,
            bfactor: 0.0,
            use_filter: true,
        }
    }
}

/// Result of [`local_resolution`].
#[derive(Clone, Debug)]
pub struct LocalResolution {
    /// The locally filtered (and sharpened) average, `n³`; 0 where no window reaches;
    /// empty when `use_filter` is false.
    pub filtered: Vec<f32>,
    /// Local resolution map, Å, `n³`; 0 where no window reaches.
    pub resolution: Vec<f32>,
    /// Number of sampling points.
    pub sampling_points: usize,
    /// The sampling points, centered voxel coordinates `(x, y, z)` (index − n/2), in the
    /// order of the per-point results.
    pub points: Vec<[i64; 3]>,
    /// Local resolution at each sampling point, Å.
    pub point_resolution: Vec<f64>,
    /// Local FSC at each sampling point, over the sub-box shells `0..M/2 − 1`
    /// (shell `i` ↔ `i/(M·voxel)` Å⁻¹).
    pub point_fsc: Vec<Vec<f64>>,
    /// Side `M` of the per-point sub-box, voxels.
    pub subbox_side: usize,
}

/// numpy's `np.round(x).astype(int)` for the window sizes (ties to even).
fn pixels(angstrom: f64, voxel: f64) -> usize {
    (angstrom / voxel).round_ties_even().max(0.0) as usize
}

fn check_finite(name: &str, v: f64, positive: bool) -> Result<()> {
    let ok = v.is_finite() && if positive { v > 0.0 } else { v >= 0.0 };
    if !ok {
        let what = if positive { "> 0" } else { "≥ 0" };
        return Err(Error::invalid(format!(
            "local resolution: {name} must be a finite number {what}, got {v}"
        )));
    }
    Ok(())
}

/// Window and sub-box sizes, in voxels.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    maskrad: usize,
    edge: usize,
    /// `R = maskrad + edge`: the window is zero from distance `R` on.
    radius: usize,
    /// Sub-box side `M = 2·3·R`.
    m: usize,
    step: usize,
}

impl Geometry {
    fn new(n: usize, voxel: f64, opts: &LocresOptions) -> Result<Self> {
        if n < 4 || !n.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "local resolution: the box side must be even and at least 4, got {n}"
            )));
        }
        check_finite("voxel size", voxel, true)?;
        check_finite("sampling", opts.sampling_angstrom, true)?;
        let maskrad_a = opts
            .maskrad_angstrom
            .unwrap_or(0.5 * opts.sampling_angstrom);
        let edge_a = opts.edgewidth_angstrom.unwrap_or(opts.sampling_angstrom);
        check_finite("mask radius", maskrad_a, true)?;
        check_finite("edge width", edge_a, false)?;
        check_finite("minimum resolution", opts.min_resolution, true)?;
        if !opts.fsc_threshold.is_finite() {
            return Err(Error::invalid(format!(
                "local resolution: FSC threshold must be finite, got {}",
                opts.fsc_threshold
            )));
        }
        if !opts.bfactor.is_finite() {
            return Err(Error::invalid(format!(
                "local resolution: B-factor must be finite, got {}",
                opts.bfactor
            )));
        }
        let maskrad = pixels(maskrad_a, voxel);
        let edge = pixels(edge_a, voxel);
        let step = pixels(opts.sampling_angstrom, voxel);
        if maskrad == 0 || step == 0 {
            return Err(Error::invalid(format!(
                "local resolution: mask radius {maskrad_a} Å and sampling {} Å must each be \
                 at least one voxel ({voxel} Å)",
                opts.sampling_angstrom
            )));
        }
        if maskrad >= n / 2 {
            return Err(Error::invalid(format!(
                "local resolution: mask radius {maskrad_a} Å ({maskrad} voxels) leaves no \
                 sampling point in a box of {n} voxels; use a smaller sampling or mask radius"
            )));
        }
        let radius = maskrad + edge;
        Ok(Geometry {
            n,
            maskrad,
            edge,
            radius,
            m: 2 * SUBBOX_MULTIPLIER * radius,
            step,
        })
    }

    /// Sampling points as in `get_sampling_points`, z slowest: `(x, y, z)` centered.
    fn sampling_points(&self) -> Vec<[i64; 3]> {
        sampling_points(self.n, self.step, self.maskrad)
    }

    /// Side of the window cube `2R + 1`.
    fn wside(&self) -> usize {
        2 * self.radius + 1
    }

    /// The raised-cosine window on the `(2R+1)³` cube around its centre (z, y, x order),
    /// as `raised_cosine_mask(shape, maskrad, R, centre)`.
    fn window(&self) -> Vec<f32> {
        let r = self.radius as i64;
        let (inner, outer) = (self.maskrad as f64, self.radius as f64);
        let mut w = Vec::with_capacity(self.wside().pow(3));
        for dz in -r..=r {
            for dy in -r..=r {
                for dx in -r..=r {
                    let d = ((dx * dx + dy * dy + dz * dz) as f64).sqrt();
                    let v = if d < inner {
                        1.0
                    } else if d < outer {
                        0.5 - 0.5 * (std::f64::consts::PI * (outer - d) / (outer - inner)).cos()
                    } else {
                        0.0
                    };
                    w.push(v as f32);
                }
            }
        }
        w
    }
}

/// RECOVAR's `get_sampling_points`: the nodes `−n/2, −n/2 + step, …` of the centered grid
/// on each axis, kept where `|p| < n/2 − margin`; centered `(x, y, z)`, z slowest. Shared by
/// local resolution and the kernel-regression cross-validation windows.
pub(crate) fn sampling_points(n: usize, step: usize, margin: usize) -> Vec<[i64; 3]> {
    let h = (n / 2) as i64;
    let grid: Vec<i64> = (-h..h).step_by(step.max(1)).collect();
    let lim = (h - margin as i64) as f64;
    let mut pts = Vec::new();
    for &z in &grid {
        for &y in &grid {
            for &x in &grid {
                if (((x * x + y * y + z * z) as f64).sqrt()) < lim {
                    pts.push([x, y, z]);
                }
            }
        }
    }
    pts
}

/// The raised-cosine low-pass of §15.3 as a per-shell profile on an `m` grid (shells
/// `0..=max_shell`); the same numbers as [`crate::fourier::low_pass_filter`], which works on
/// whole spectra and would rebuild its shell table for every sampling point.
fn low_pass_profile(m: usize, resolution: f64, voxel: f64, max_shell: usize) -> Vec<f64> {
    let mf = m as f64;
    let i_f = (mf * voxel / resolution).round_ties_even();
    let hw = (FILTER_EDGE_SHELLS / 2) as f64;
    let lo = ((i_f - hw) / mf).max(0.0);
    let hi = ((i_f + hw) / mf).min(mf);
    (0..=max_shell)
        .map(|s| {
            let res = s as f64 / mf;
            if res >= lo && res < hi {
                0.5 + 0.5 * (std::f64::consts::PI * (res - lo) / (hi - lo)).cos()
            } else if res <= lo {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// `find_fsc_resol` followed by the conversion to Å and the cap (§15.2): the interpolated
/// crossing `i` (last shell when the curve never crosses), `M·voxel/i`, 999 Å for `i = 0`,
/// then `min(·, min_resolution)`.
fn resolution_from_fsc(fsc: &[f64], threshold: f64, m: usize, voxel: f64, cap: f64) -> f64 {
    let i = fsc_crossing(fsc, threshold).unwrap_or(fsc.len().saturating_sub(1) as f64);
    let res = if i > 0.0 {
        m as f64 * voxel / i
    } else {
        NO_RESOLUTION
    };
    res.min(cap)
}

/// Read-only state shared by the workers.
struct Ctx<'a> {
    g: Geometry,
    voxel: f64,
    opts: &'a LocresOptions,
    half1: &'a [f32],
    half2: &'a [f32],
    /// The (sharpened) average the filter reads; empty without `use_filter`.
    avg: &'a [f32],
    window: Vec<f32>,
    fft: Fft3<f32>,
    /// Shell of every sub-box voxel.
    shells: Vec<u32>,
    /// Flat index of `−k` for every sub-box voxel (the Hermitian partner).
    neg: Vec<u32>,
    max_shell: usize,
}

/// Per-worker sub-box buffers.
struct Buffers {
    z: Vec<Complex<f32>>,
    y: Vec<Complex<f32>>,
    out: Vec<Complex<f32>>,
}

impl Buffers {
    fn new(m3: usize, filter: bool) -> Self {
        let zero = Complex::new(0.0, 0.0);
        let f = if filter { m3 } else { 0 };
        Buffers {
            z: vec![zero; m3],
            y: vec![zero; f],
            out: vec![zero; f],
        }
    }
}

/// What one sampling point contributes.
struct PointOut {
    fsc: Vec<f64>,
    resolution: f64,
    /// `m_p · filtered_p` on the `(2R+1)³` window cube (empty without the filter).
    contrib: Vec<f32>,
}

/// Index of the voxel at centered coordinate `c + d` (per axis), if inside the box.
#[inline]
fn inside(c: i64, d: i64, n: usize) -> Option<usize> {
    let v = c + d;
    (v >= 0 && v < n as i64).then_some(v as usize)
}

impl Ctx<'_> {
    fn sub_index(&self, dx: i64, dy: i64, dz: i64) -> usize {
        let m = self.g.m as i64;
        let h = m / 2;
        (((h + dz) * m + (h + dy)) * m + (h + dx)) as usize
    }

    /// Local FSC of the windowed half-maps around `p`, on the sub-box grid.
    fn local_fsc(&self, p: [i64; 3], z: &mut [Complex<f32>]) -> Vec<f64> {
        let (n, r) = (self.g.n, self.g.radius as i64);
        let h = (n / 2) as i64;
        let [cx, cy, cz] = [p[0] + h, p[1] + h, p[2] + h];
        z.fill(Complex::new(0.0, 0.0));
        let mut wi = 0;
        for dz in -r..=r {
            let vz = inside(cz, dz, n);
            for dy in -r..=r {
                let vy = inside(cy, dy, n);
                for dx in -r..=r {
                    let w = self.window[wi];
                    wi += 1;
                    if w == 0.0 {
                        continue;
                    }
                    if let (Some(vz), Some(vy), Some(vx)) = (vz, vy, inside(cx, dx, n)) {
                        let v = (vz * n + vy) * n + vx;
                        z[self.sub_index(dx, dy, dz)] =
                            Complex::new(w * self.half1[v], w * self.half2[v]);
                    }
                }
            }
        }
        self.fft.forward(z);
        let ns = n_shells(self.g.m);
        let mut sums = vec![[0.0f64; 3]; ns];
        for (k, (&s, &nk)) in self.shells.iter().zip(&self.neg).enumerate() {
            let s = s as usize;
            if s >= ns {
                continue;
            }
            let a = z[k];
            let b = z[nk as usize].conj();
            let (a, b) = (
                Complex::new(a.re as f64, a.im as f64),
                Complex::new(b.re as f64, b.im as f64),
            );
            // A = (Z(k) + Z̄(−k))/2, B = (Z(k) − Z̄(−k))/(2i)
            let fa = (a + b) * 0.5;
            let fb = (a - b) * Complex::new(0.0, -0.5);
            let acc = &mut sums[s];
            acc[0] += (fa.conj() * fb).re;
            acc[1] += fa.norm_sqr();
            acc[2] += fb.norm_sqr();
        }
        crate::fourier::fsc_from_sums(&sums)
    }

    /// Copy the `M³` crop of the average around `p` into the real (`imag = false`) or
    /// imaginary part of `y`, zero outside the box. The other part is left alone.
    fn crop_avg(&self, p: [i64; 3], y: &mut [Complex<f32>], imag: bool) {
        let (n, m) = (self.g.n, self.g.m);
        let h = (n / 2) as i64;
        let hm = (m / 2) as i64;
        let [cx, cy, cz] = [p[0] + h, p[1] + h, p[2] + h];
        // sub-box x index j ↔ volume x = cx − M/2 + j
        let x0 = cx - hm;
        let j_lo = (-x0).max(0) as usize;
        let j_hi = ((n as i64 - x0).min(m as i64)).max(0) as usize;
        for jz in 0..m {
            for jy in 0..m {
                let row = &mut y[(jz * m + jy) * m..(jz * m + jy + 1) * m];
                let src = match (inside(cz, jz as i64 - hm, n), inside(cy, jy as i64 - hm, n)) {
                    (Some(vz), Some(vy)) if j_lo < j_hi => {
                        let start = ((vz * n + vy) * n) as i64 + x0;
                        Some(
                            &self.avg
                                [(start + j_lo as i64) as usize..(start + j_hi as i64) as usize],
                        )
                    }
                    _ => None,
                };
                for (j, c) in row.iter_mut().enumerate() {
                    let v = match src {
                        Some(s) if j >= j_lo && j < j_hi => s[j - j_lo],
                        _ => 0.0,
                    };
                    if imag {
                        c.im = v;
                    } else {
                        c.re = v;
                    }
                }
            }
        }
    }

    /// Per-shell filter of one point: FSC weight times low-pass at its resolution.
    fn filter_table(&self, fsc: &[f64], resolution: f64) -> Vec<f32> {
        let w = fsc_weights(fsc);
        let last = w.len().saturating_sub(1);
        let lp = low_pass_profile(self.g.m, resolution, self.voxel, self.max_shell);
        lp.iter()
            .enumerate()
            .map(|(s, &l)| (w.get(s.min(last)).copied().unwrap_or(0.0) * l) as f32)
            .collect()
    }

    /// The window part of the filtered sub-box, times the window (from the real or the
    /// imaginary part of `out`).
    fn window_contrib(&self, out: &[Complex<f32>], imag: bool) -> Vec<f32> {
        let r = self.g.radius as i64;
        let mut c = Vec::with_capacity(self.window.len());
        let mut wi = 0;
        for dz in -r..=r {
            for dy in -r..=r {
                for dx in -r..=r {
                    let v = out[self.sub_index(dx, dy, dz)];
                    c.push(self.window[wi] * if imag { v.im } else { v.re });
                    wi += 1;
                }
            }
        }
        c
    }

    /// FSC, resolution and (optionally) filtered window of one or two sampling points.
    fn process(&self, pts: &[[i64; 3]], buf: &mut Buffers) -> Vec<PointOut> {
        let mut outs: Vec<PointOut> = pts
            .iter()
            .map(|&p| {
                let fsc = self.local_fsc(p, &mut buf.z);
                let resolution = resolution_from_fsc(
                    &fsc,
                    self.opts.fsc_threshold,
                    self.g.m,
                    self.voxel,
                    self.opts.min_resolution,
                );
                PointOut {
                    fsc,
                    resolution,
                    contrib: Vec::new(),
                }
            })
            .collect();
        if !self.opts.use_filter {
            return outs;
        }
        let tp = self.filter_table(&outs[0].fsc, outs[0].resolution);
        let tq = match outs.get(1) {
            Some(o) => self.filter_table(&o.fsc, o.resolution),
            None => vec![0.0; tp.len()],
        };
        let y = &mut buf.y;
        y.fill(Complex::new(0.0, 0.0));
        self.crop_avg(pts[0], y, false);
        if let Some(&q) = pts.get(1) {
            self.crop_avg(q, y, true);
        }
        self.fft.forward(y);
        // out = W_p·A_p + i·W_q·A_q = ((W_p + W_q)·Z(k) + (W_p − W_q)·Z̄(−k))/2
        for (k, o) in buf.out.iter_mut().enumerate() {
            let s = self.shells[k] as usize;
            let (wp, wq) = (tp[s], tq[s]);
            let z = y[k];
            let zc = y[self.neg[k] as usize].conj();
            *o = (z * (wp + wq) + zc * (wp - wq)) * 0.5;
        }
        self.fft.inverse(&mut buf.out);
        for (i, o) in outs.iter_mut().enumerate() {
            o.contrib = self.window_contrib(&buf.out, i == 1);
        }
        outs
    }
}

/// Flat index of `−k` for every voxel of a centered `m³` grid (even `m`): index `j` on an
/// axis holds frequency `j − m/2`, whose negative sits at `(m − j) mod m` (index 0, the
/// frequency `−m/2`, is its own partner).
pub(crate) fn hermitian_partners(m: usize) -> Vec<u32> {
    let neg = |j: usize| (m - j) % m;
    let mut out = Vec::with_capacity(m * m * m);
    for z in 0..m {
        for y in 0..m {
            for x in 0..m {
                out.push(((neg(z) * m + neg(y)) * m + neg(x)) as u32);
            }
        }
    }
    out
}

/// Local resolution map and locally filtered average of two half-maps (see the module
/// documentation for the algorithm, its approximations and the defaults).
///
/// `half1`, `half2`: real `n³` volumes (MRC order), `n` even; `voxel_size` in Å.
/// Reports `("local resolution", points done, points)` to `progress` and returns
/// [`Error::Cancelled`] when it answers `false`.
///
/// # Errors
/// Wrong lengths, odd or tiny `n`, non-finite input values, non-positive voxel size or
/// window sizes, a mask radius under one voxel or so large that no sampling point fits.
pub fn local_resolution(
    half1: &[f32],
    half2: &[f32],
    n: usize,
    voxel_size: f64,
    opts: &LocresOptions,
    progress: &dyn Progress,
) -> Result<LocalResolution> {
    let g = Geometry::new(n, voxel_size, opts)?;
    let n3 = n
        .checked_pow(3)
        .ok_or_else(|| Error::invalid(format!("local resolution: box side {n} is too large")))?;
    for (name, h) in [("half-map 1", half1), ("half-map 2", half2)] {
        if h.len() != n3 {
            return Err(Error::inconsistent(format!(
                "local resolution: {name} has {} values, expected {n}³ = {n3}",
                h.len()
            )));
        }
        if h.par_iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "local resolution: {name} contains non-finite values"
            )));
        }
    }
    if g.maskrad < 5 {
        tracing::warn!(
            "local resolution: the window radius is only {} voxels; the local FSCs will be \
             very noisy (use a larger mask radius, or a global resolution)",
            g.maskrad
        );
    }
    let points = g.sampling_points();
    let total = points.len() as u64;
    tracing::debug!(
        points = points.len(),
        subbox = g.m,
        maskrad = g.maskrad,
        edge = g.edge,
        "local resolution"
    );
    report(progress, "local resolution", 0, total)?;

    // The (sharpened) average the filter reads.
    let avg: Vec<f32> = if opts.use_filter {
        let mut avg: Vec<f32> = half1
            .par_iter()
            .zip(half2.par_iter())
            .map(|(a, b)| 0.5 * (a + b))
            .collect();
        if opts.bfactor != 0.0 {
            let fft = Fft3::<f32>::new(n);
            let mut spec = fft.forward_real_vec(&avg);
            bfactor_sharpen(&mut spec, n, voxel_size, opts.bfactor)?;
            fft.inverse_to_real(&mut spec, &mut avg);
        }
        avg
    } else {
        Vec::new()
    };

    let shells = shell_index_3d(g.m);
    let max_shell = shells.iter().copied().max().unwrap_or(0) as usize;
    let ctx = Ctx {
        g,
        voxel: voxel_size,
        opts,
        half1,
        half2,
        avg: &avg,
        window: g.window(),
        fft: Fft3::new(g.m),
        shells,
        neg: hermitian_partners(g.m),
        max_shell,
    };

    // Batches of pairs: enough to keep every thread busy, few enough that the buffers of
    // the workers alive at once stay within the budget.
    let m3 = g.m.pow(3);
    let per_worker = 24usize.saturating_mul(m3).max(1);
    let threads = rayon::current_num_threads().max(1);
    let max_workers = (BUFFER_BUDGET / per_worker).max(1);
    let batch_pairs = if max_workers < threads {
        max_workers
    } else {
        4 * threads
    };

    let ws = g.wside() as i64;
    let r = g.radius as i64;
    let h = (n / 2) as i64;
    let mut fil_acc = if opts.use_filter {
        vec![0.0f64; n3]
    } else {
        Vec::new()
    };
    let mut w_acc = vec![0.0f64; n3];
    let mut inv_res_acc = vec![0.0f64; n3];
    let mut point_resolution = Vec::with_capacity(points.len());
    let mut point_fsc = Vec::with_capacity(points.len());
    let pairs: Vec<&[[i64; 3]]> = points.chunks(2).collect();
    let mut done = 0u64;
    for batch in pairs.chunks(batch_pairs) {
        let results: Vec<Vec<PointOut>> = batch
            .par_iter()
            .map_init(
                || Buffers::new(m3, opts.use_filter),
                |buf, pts| ctx.process(pts, buf),
            )
            .collect();
        for (pts, outs) in batch.iter().zip(results) {
            for (p, o) in pts.iter().zip(outs) {
                let [cx, cy, cz] = [p[0] + h, p[1] + h, p[2] + h];
                let inv_res = 1.0 / o.resolution;
                for dz in -r..=r {
                    let Some(vz) = inside(cz, dz, n) else {
                        continue;
                    };
                    for dy in -r..=r {
                        let Some(vy) = inside(cy, dy, n) else {
                            continue;
                        };
                        let wrow = (((dz + r) * ws + (dy + r)) * ws) as usize;
                        for dx in -r..=r {
                            let Some(vx) = inside(cx, dx, n) else {
                                continue;
                            };
                            let wi = wrow + (dx + r) as usize;
                            let w = ctx.window[wi] as f64;
                            if w == 0.0 {
                                continue;
                            }
                            let v = (vz * n + vy) * n + vx;
                            w_acc[v] += w;
                            inv_res_acc[v] += w * inv_res;
                            if opts.use_filter {
                                fil_acc[v] += o.contrib[wi] as f64;
                            }
                        }
                    }
                }
                point_resolution.push(o.resolution);
                point_fsc.push(o.fsc);
            }
            done += pts.len() as u64;
        }
        report(progress, "local resolution", done, total)?;
    }

    let resolution: Vec<f32> = w_acc
        .par_iter()
        .zip(inv_res_acc.par_iter())
        .map(|(&w, &ir)| {
            if w > COVERAGE_FLOOR {
                (w / ir) as f32
            } else {
                0.0
            }
        })
        .collect();
    let filtered: Vec<f32> = fil_acc
        .par_iter()
        .zip(w_acc.par_iter())
        .map(|(&f, &w)| {
            if w > COVERAGE_FLOOR {
                (f / w) as f32
            } else {
                0.0
            }
        })
        .collect();
    Ok(LocalResolution {
        filtered,
        resolution,
        sampling_points: points.len(),
        points,
        point_resolution,
        point_fsc,
        subbox_side: g.m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fourier::{fsc, low_pass_filter};

    #[test]
    fn low_pass_profile_matches_the_spectrum_filter() {
        let m = 18;
        let shells = shell_index_3d(m);
        let max_shell = *shells.iter().max().unwrap() as usize;
        for res in [3.0, 7.3, 12.0, 50.0, 999.0] {
            let mut spec = vec![Complex::new(1.0f32, 0.0); m * m * m];
            low_pass_filter(&mut spec, m, res, 1.5, FILTER_EDGE_SHELLS).unwrap();
            let prof = low_pass_profile(m, res, 1.5, max_shell);
            for (v, &s) in spec.iter().zip(&shells) {
                assert!(
                    (v.re as f64 - prof[s as usize]).abs() < 1e-6,
                    "res {res} shell {s}"
                );
            }
        }
    }

    #[test]
    fn hermitian_partner_is_an_involution_and_matches_real_spectra() {
        let m = 6;
        let neg = hermitian_partners(m);
        for (k, &nk) in neg.iter().enumerate() {
            assert_eq!(neg[nk as usize] as usize, k);
        }
        let vol: Vec<f32> = (0..m * m * m)
            .map(|i| ((i * 37) % 11) as f32 - 5.0)
            .collect();
        let spec = Fft3::<f32>::new(m).forward_real_vec(&vol);
        for (k, &nk) in neg.iter().enumerate() {
            let d = spec[k] - spec[nk as usize].conj();
            assert!(d.norm() < 1e-3, "{k}");
        }
    }

    #[test]
    fn packed_fsc_matches_separate_transforms() {
        // The packed local FSC equals the crate's FSC of the two separately transformed
        // windowed sub-boxes.
        let n = 16;
        let opts = LocresOptions {
            sampling_angstrom: 4.0,
            maskrad_angstrom: Some(2.0),
            edgewidth_angstrom: Some(2.0),
            ..Default::default()
        };
        let mut rng = crate::rng::Rng::new(3);
        let h1: Vec<f32> = (0..n * n * n).map(|_| rng.normal() as f32).collect();
        let h2: Vec<f32> = h1.iter().map(|v| v + 0.7 * rng.normal() as f32).collect();
        let ctx = test_ctx(&opts, &h1, &h2, &[]);
        let g = ctx.g;
        let p = [-4, 2, 6]; // window partly outside the box
        let mut z = vec![Complex::new(0.0, 0.0); g.m.pow(3)];
        let got = ctx.local_fsc(p, &mut z);
        // reference: explicit windowed sub-boxes
        let m = g.m as i64;
        let mut a = vec![Complex::new(0.0f32, 0.0); g.m.pow(3)];
        let mut b = a.clone();
        let h = (n / 2) as i64;
        for jz in 0..m {
            for jy in 0..m {
                for jx in 0..m {
                    let d = [jx - m / 2, jy - m / 2, jz - m / 2];
                    let dist = ((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) as f64).sqrt();
                    let (inner, outer) = (g.maskrad as f64, g.radius as f64);
                    let w = if dist < inner {
                        1.0
                    } else if dist < outer {
                        0.5 - 0.5 * (std::f64::consts::PI * (outer - dist) / (outer - inner)).cos()
                    } else {
                        0.0
                    } as f32;
                    let v = [p[0] + h + d[0], p[1] + h + d[1], p[2] + h + d[2]];
                    if v.iter().all(|&c| c >= 0 && c < n as i64) {
                        let vi = ((v[2] as usize * n) + v[1] as usize) * n + v[0] as usize;
                        let si = ((jz * m + jy) * m + jx) as usize;
                        a[si].re = w * h1[vi];
                        b[si].re = w * h2[vi];
                    }
                }
            }
        }
        ctx.fft.forward(&mut a);
        ctx.fft.forward(&mut b);
        let want = fsc(&a, &b, g.m, false).unwrap();
        assert_eq!(got.len(), want.len());
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{got:?}\n{want:?}");
        }
    }

    /// A context on random half-maps (`n = 16`, 1 Å voxels, R = 4, M = 24).
    fn test_ctx<'a>(
        opts: &'a LocresOptions,
        h1: &'a [f32],
        h2: &'a [f32],
        avg: &'a [f32],
    ) -> Ctx<'a> {
        let g = Geometry::new(16, 1.0, opts).unwrap();
        let shells = shell_index_3d(g.m);
        let max_shell = *shells.iter().max().unwrap() as usize;
        Ctx {
            g,
            voxel: 1.0,
            opts,
            half1: h1,
            half2: h2,
            avg,
            window: g.window(),
            fft: Fft3::new(g.m),
            shells,
            neg: hermitian_partners(g.m),
            max_shell,
        }
    }

    #[test]
    fn paired_filter_matches_one_point_at_a_time_with_the_crate_filters() {
        let n = 16;
        let opts = LocresOptions {
            sampling_angstrom: 4.0,
            maskrad_angstrom: Some(2.0),
            edgewidth_angstrom: Some(2.0),
            ..Default::default()
        };
        let mut rng = crate::rng::Rng::new(5);
        let h1: Vec<f32> = (0..n * n * n).map(|_| rng.normal() as f32).collect();
        let h2: Vec<f32> = h1.iter().map(|v| v + 0.5 * rng.normal() as f32).collect();
        let avg: Vec<f32> = h1.iter().zip(&h2).map(|(a, b)| 0.5 * (a + b)).collect();
        let ctx = test_ctx(&opts, &h1, &h2, &avg);
        let m = ctx.g.m;
        let mut buf = Buffers::new(m.pow(3), true);
        let pts = [[-4i64, 0, 4], [4, -4, 0]];
        let paired = ctx.process(&pts, &mut buf);
        let single = ctx.process(&pts[1..], &mut buf);
        for (k, &p) in pts.iter().enumerate() {
            let o = &paired[k];
            // naive: crop, transform alone, crate weighting and low-pass, inverse, window
            let mut y = vec![Complex::new(0.0f32, 0.0); m.pow(3)];
            ctx.crop_avg(p, &mut y, false);
            ctx.fft.forward(&mut y);
            crate::fourier::apply_fsc_weighting(&mut y, m, &o.fsc).unwrap();
            low_pass_filter(&mut y, m, o.resolution, 1.0, FILTER_EDGE_SHELLS).unwrap();
            ctx.fft.inverse(&mut y);
            let want = ctx.window_contrib(&y, false);
            let scale = want.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
            assert!(scale > 0.1);
            for (a, b) in o.contrib.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4 * scale, "point {k}: {a} vs {b}");
            }
        }
        // an unpaired point gives the same as in a pair
        assert_eq!(single[0].fsc, paired[1].fsc);
        for (a, b) in single[0].contrib.iter().zip(&paired[1].contrib) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn resolution_conversion_follows_recovar() {
        // crossing at 2.5 → M·v/2.5; at 0 → 999 capped; none → last shell
        let f = [0.9, 0.9, 0.5, 0.1, 0.0];
        let r = resolution_from_fsc(&f, 0.3, 40, 2.0, 50.0);
        assert!((r - 80.0 / 2.5).abs() < 1e-12);
        assert_eq!(resolution_from_fsc(&[0.1, 0.1], 0.3, 40, 2.0, 50.0), 50.0);
        assert_eq!(resolution_from_fsc(&[0.1, 0.1], 0.3, 40, 2.0, 1e4), 999.0);
        let r = resolution_from_fsc(&[1.0; 5], 0.3, 40, 2.0, 50.0);
        assert!((r - 20.0).abs() < 1e-12);
    }

    #[test]
    fn sampling_points_follow_get_sampling_points() {
        // n = 16, step 4, maskrad 2: grid −8, −4, 0, 4; |p| < 6
        let opts = LocresOptions {
            sampling_angstrom: 4.0,
            maskrad_angstrom: Some(2.0),
            edgewidth_angstrom: Some(1.0),
            ..Default::default()
        };
        let g = Geometry::new(16, 1.0, &opts).unwrap();
        let pts = g.sampling_points();
        let grid = [-8i64, -4, 0, 4];
        let mut want = 0;
        for z in grid {
            for y in grid {
                for x in grid {
                    if ((x * x + y * y + z * z) as f64).sqrt() < 6.0 {
                        want += 1;
                    }
                }
            }
        }
        assert_eq!(pts.len(), want);
        assert!(pts.contains(&[0, 0, 0]) && pts.contains(&[-4, 4, 0]));
        assert!(!pts.contains(&[-4, -4, -4])); // |p| = 6.9
        assert_eq!((g.radius, g.m), (3, 18));
    }
}
