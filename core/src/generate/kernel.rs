//! Heterogeneity distances, bins, and the per-bin kernel estimates of §7.1–7.3, streamed.
//!
//! # Streaming the bins
//!
//! RECOVAR accumulates `Fy_j`, `Fc_j` for every bin and then mixes them; that holds
//! `n_bins` oversampled volumes at once (`n_bins × N³ × 32` bytes). With the parabola
//! kernel the weight of bin `j'` in estimator `j ≥ 1` is
//! `K(sqrt(b_{j'}/(2 b_j))) = ¾ (1 − b_{j'}/(2 b_j))` for `b_{j'} < 2 b_j`: *linear* in the
//! bin edge `b_{j'}`. So
//!
//! ```text
//! rhs_j = ¾ · ( S0(c_j) − S1(c_j)/(2 b_j) ),   S0(c) = Σ_{j'≤c} Fy_{j'},  S1(c) = Σ_{j'≤c} b_{j'} Fy_{j'}
//! ```
//!
//! with `c_j` the last bin below `2 b_j` (the same for `lhs` with `Fc`). Abel summation
//! gives `S1(c) = b_c S0(c) − U(c)` with `U(c) = Σ_{j'<c} (b_{j'+1} − b_{j'}) S0(j')`, which
//! is updated at each bin boundary. Reading the images bin by bin (nearest first) therefore
//! needs two accumulators per quantity, whatever `n_bins` is, and every estimator is
//! finished as soon as its last bin has been read — exactly the same sums as the Python
//! tool, in f64.

use num_complex::Complex;
use rayon::prelude::*;

use crate::backend::{Backend, ImageBatch};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::forward::ctf::AntialiasedCtf2;
use crate::forward::{Interp, SliceGeometry};
use crate::fourier::radial_to_image_2d;
use crate::progress::{report, Progress};
use crate::reconstruct::mean::{post_process_with, PostProcessOptions};

/// The parabola (Epanechnikov) kernel's constant.
const KERNEL_SCALE: f64 = 0.75;

/// `d_i = (z_i − z*)ᵀ P_i (z_i − z*)` for every image (§7.1). `zs` is `n × zdim`,
/// `precisions` `n × zdim × zdim` (or empty: identity, for embeddings without precisions).
pub fn heterogeneity_distances(
    zs: &[f32],
    precisions: &[f32],
    zdim: usize,
    target: &[f32],
) -> Result<Vec<f64>> {
    if zdim == 0 || target.len() != zdim || !zs.len().is_multiple_of(zdim) {
        return Err(Error::invalid(format!(
            "heterogeneity distances: a target of {} coordinates and {} embedding values for zdim {zdim}",
            target.len(),
            zs.len()
        )));
    }
    let n = zs.len() / zdim;
    if !precisions.is_empty() && precisions.len() != n * zdim * zdim {
        return Err(Error::invalid(format!(
            "heterogeneity distances: {} precision values for {n} images of zdim {zdim}",
            precisions.len()
        )));
    }
    if let Some(v) = target.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "the latent target point contains {v}"
        )));
    }
    let mut out = Vec::with_capacity(n);
    let mut diff = vec![0.0f64; zdim];
    for i in 0..n {
        for (k, d) in diff.iter_mut().enumerate() {
            *d = zs[i * zdim + k] as f64 - target[k] as f64;
        }
        let q = if precisions.is_empty() {
            diff.iter().map(|d| d * d).sum::<f64>()
        } else {
            let p = &precisions[i * zdim * zdim..(i + 1) * zdim * zdim];
            let mut s = 0.0;
            for a in 0..zdim {
                for b in 0..zdim {
                    s += diff[a] * p[a * zdim + b] as f64 * diff[b];
                }
            }
            s
        };
        if !q.is_finite() {
            return Err(Error::invalid(format!(
                "the latent coordinates or precision of image {i} are not finite"
            )));
        }
        out.push(q);
    }
    Ok(out)
}

/// The bin edges of §7.2 from the first halfset's distances: `d_min` = the
/// `n_min_images + 1`-th smallest distance (×(1 + 1e-8)), `d_max` = the 95th percentile,
/// `n_bins` edges equally spaced in `sqrt(d)`.
pub fn pick_bins(distances: &[f64], n_bins: usize, n_min_images: usize) -> Result<Vec<f64>> {
    if n_bins == 0 {
        return Err(Error::invalid("--n-bins must be at least 1"));
    }
    if distances.is_empty() {
        return Err(Error::invalid(
            "kernel regression: the first halfset has no images",
        ));
    }
    let mut v = distances.to_vec();
    v.sort_by(f64::total_cmp);
    if v.len() <= n_min_images {
        tracing::warn!(
            "kernel regression: only {} images in the first halfset, fewer than --n-min-images {}; the smallest bin holds all of them",
            v.len(),
            n_min_images
        );
    }
    let mut d_min = v[n_min_images.min(v.len() - 1)] * (1.0 + 1e-8);
    let mut d_max = crate::stats::percentile_sorted(&v, 95.0).unwrap_or(d_min);
    // A target sitting on many identical embeddings gives d_min = 0; the kernel bandwidths
    // 2·b_j must stay positive.
    let floor = 1e-12 * d_max.abs().max(1.0);
    d_min = d_min.max(floor);
    d_max = d_max.max(d_min);
    let (a, b) = (d_min.sqrt(), d_max.sqrt());
    Ok((0..n_bins)
        .map(|j| {
            let t = if n_bins == 1 {
                0.0
            } else {
                j as f64 / (n_bins - 1) as f64
            };
            let s = a + t * (b - a);
            s * s
        })
        .collect())
}

/// numpy's `digitize(d, bins, right=True)`: the first bin with `d ≤ bins[j]`; `None` past
/// the last edge (those images are not used).
pub fn bin_of(d: f64, bins: &[f64]) -> Option<usize> {
    let j = bins.partition_point(|&b| b < d);
    (j < bins.len()).then_some(j)
}

/// For each estimator `j`, the last bin it mixes in (`c_j`): bin 0 alone for `j = 0`, else
/// every bin with `b_{j'} < 2 b_j`.
pub fn last_bins(bins: &[f64]) -> Vec<usize> {
    (0..bins.len())
        .map(|j| {
            if j == 0 {
                0
            } else {
                bins.partition_point(|&b| b < 2.0 * bins[j])
                    .saturating_sub(1)
                    .max(j)
            }
        })
        .collect()
}

/// Weight of bin `jp` in estimator `j` (§7.3), for tests and documentation of the closed
/// form used by the streaming accumulation.
pub fn kernel_weight(bins: &[f64], jp: usize, j: usize) -> f64 {
    if j == 0 {
        return if jp == 0 { 1.0 } else { 0.0 };
    }
    let u2 = bins[jp] / (2.0 * bins[j]);
    if u2 < 1.0 {
        KERNEL_SCALE * (1.0 - u2)
    } else {
        0.0
    }
}

/// What the kernel estimates are computed from.
pub struct KernelInputs<'a> {
    /// Particles, poses, CTF (with the embedding's contrasts already in the CTF rows).
    pub ds: &'a Dataset,
    /// Where the backprojections run.
    pub backend: &'a dyn Backend,
    /// Radial noise profile σ²(r), `N/2 − 1` shells.
    pub noise: &'a [f64],
    /// Images per batch (memory only; never changes results).
    pub batch_size: usize,
}

/// One finished estimator: real `N³` volume of halfset `half`, and (for estimator 0 only)
/// the CTF²/σ² weight volume `lhs` on the `N` grid (s = 1), zero outside radius N/2 − 1.
pub struct Estimate<'a> {
    pub index: usize,
    pub half: usize,
    pub volume: Vec<f32>,
    pub lhs: Option<&'a [f64]>,
}

struct Accumulator {
    s0_y: Vec<Complex<f64>>,
    u_y: Vec<Complex<f64>>,
    s0_c: Vec<f64>,
    u_c: Vec<f64>,
}

impl Accumulator {
    fn new(len: usize) -> Self {
        Accumulator {
            s0_y: vec![Complex::new(0.0, 0.0); len],
            u_y: vec![Complex::new(0.0, 0.0); len],
            s0_c: vec![0.0; len],
            u_c: vec![0.0; len],
        }
    }

    /// `U += step · S0` at a bin boundary.
    fn advance(&mut self, step: f64) {
        self.u_y
            .par_iter_mut()
            .zip(self.s0_y.par_iter())
            .for_each(|(u, s)| *u += s * step);
        self.u_c
            .par_iter_mut()
            .zip(self.s0_c.par_iter())
            .for_each(|(u, s)| *u += s * step);
    }

    /// `(lhs_j, rhs_j)` from the closed form (module docs); `c` is the last bin read.
    fn mix(&self, bins: &[f64], j: usize, c: usize) -> (Vec<f64>, Vec<Complex<f64>>) {
        if j == 0 {
            return (self.s0_c.clone(), self.s0_y.clone());
        }
        let inv = 1.0 / (2.0 * bins[j]);
        let bc = bins[c];
        let lhs = self
            .s0_c
            .par_iter()
            .zip(self.u_c.par_iter())
            .map(|(&s, &u)| KERNEL_SCALE * (s - (bc * s - u) * inv))
            .collect();
        let rhs = self
            .s0_y
            .par_iter()
            .zip(self.u_y.par_iter())
            .map(|(&s, &u)| (s - (s * bc - u) * inv) * KERNEL_SCALE)
            .collect();
        (lhs, rhs)
    }
}

/// Which images go in which bin, per halfset, in dataset positions.
pub struct BinAssignment {
    /// `members[h][j]`: positions of halfset `h` in bin `j`, ascending.
    pub members: [Vec<Vec<usize>>; 2],
}

impl BinAssignment {
    pub fn new(ds: &Dataset, distances: &[f64], bins: &[f64]) -> Self {
        let mut members: [Vec<Vec<usize>>; 2] =
            [vec![Vec::new(); bins.len()], vec![Vec::new(); bins.len()]];
        for (h, half) in ds.halfsets().iter().enumerate() {
            let mut sorted = half.clone();
            sorted.sort_unstable();
            for p in sorted {
                if let Some(j) = bin_of(distances[p], bins) {
                    members[h][j].push(p);
                }
            }
        }
        BinAssignment { members }
    }
}

/// Stream the images of the halfsets `halves` bin by bin into accumulators on the
/// `upsampling·N` grid and call `sink` with every estimator `j` for which `wanted[j]`,
/// post-processed (§7.3: `upsampling` 1 → raw, as the cross-validation wants; 2 → masked
/// and gridding-corrected, the production estimates). Stops reading once the last wanted
/// estimator is finished.
#[allow(clippy::too_many_arguments)]
pub fn stream_estimates(
    inp: &KernelInputs<'_>,
    bins: &[f64],
    assign: &BinAssignment,
    halves: &[usize],
    upsampling: usize,
    wanted: &[bool],
    stage: &str,
    progress: &dyn Progress,
    sink: &mut dyn FnMut(Estimate<'_>) -> Result<()>,
) -> Result<()> {
    let ds = inp.ds;
    let d = ds.box_size();
    let n = d;
    let nv = upsampling * n;
    let nb = bins.len();
    if wanted.len() != nb {
        return Err(Error::invalid("kernel regression: estimator mask length"));
    }
    let last = last_bins(bins);
    // The last bin any wanted estimator mixes in: nothing beyond it is read.
    let Some(stop_after) = (0..nb).filter(|&j| wanted[j]).map(|j| last[j]).max() else {
        return Ok(());
    };
    let rotations = ds
        .rotations()
        .ok_or_else(|| Error::invalid("kernel regression needs poses (--poses)"))?;
    let ctf_params = ds
        .ctf()
        .ok_or_else(|| Error::invalid("kernel regression needs CTF parameters (--ctf)"))?;
    let geom = SliceGeometry::new(d, nv)?.with_max_radius(None)?;
    let noise_img: Vec<f32> = radial_to_image_2d(inp.noise, d)?
        .iter()
        .map(|&v| v as f32)
        .collect();
    if let Some(v) = noise_img.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(Error::invalid(format!(
            "kernel regression: the noise variance must be positive and finite, found {v}"
        )));
    }
    let ctf2 = AntialiasedCtf2::new(d, ds.voxel_size())?;
    let len = nv * nv * nv;
    let mut accs: Vec<Accumulator> = halves.iter().map(|_| Accumulator::new(len)).collect();
    let npix = d * d;
    let batch = inp.batch_size.max(1);
    let total: u64 = halves
        .iter()
        .map(|&h| {
            assign.members[h][..=stop_after]
                .iter()
                .map(|m| m.len() as u64)
                .sum::<u64>()
        })
        .sum();
    let mut done = 0u64;
    report(progress, stage, 0, total)?;
    let opts = PostProcessOptions {
        upsampling,
        tau: None,
        volume_mask: None,
        complex: false,
        raw: upsampling == 1,
        real_only: true,
    };
    for jp in 0..=stop_after {
        for (acc, &h) in accs.iter_mut().zip(halves) {
            for chunk in assign.members[h][jp].chunks(batch) {
                let m = chunk.len();
                let ImageBatch {
                    spectra: mut spec,
                    ctf: c,
                    rotations: rots,
                    params,
                } = ImageBatch::read(ds, inp.backend, chunk, rotations, ctf_params)?;
                let mut c2 = vec![0.0f32; m * npix];
                ctf2.evaluate_batch(&params, &mut c2);
                for ((s, cv), (c2v, nz)) in spec
                    .chunks_exact_mut(npix)
                    .zip(c.chunks_exact(npix))
                    .zip(c2.chunks_exact_mut(npix).zip(std::iter::repeat(&noise_img)))
                {
                    for k in 0..npix {
                        s[k] *= cv[k] / nz[k];
                        c2v[k] /= nz[k];
                    }
                }
                inp.backend
                    .backproject(&spec, &geom, Interp::Trilinear, &rots, &mut acc.s0_y)?;
                inp.backend.backproject_real(
                    &c2,
                    &geom,
                    Interp::Trilinear,
                    &rots,
                    &mut acc.s0_c,
                )?;
                done += m as u64;
                report(progress, stage, done, total)?;
            }
        }
        // Estimators whose last bin is jp are complete.
        for j in (0..nb).filter(|&j| wanted[j] && last[j] == jp) {
            for (acc, &h) in accs.iter().zip(halves) {
                let (lhs, rhs) = acc.mix(bins, j, jp);
                let (volume, _) = post_process_with(&lhs, &rhs, n, &opts)?;
                let keep_lhs = j == 0 && upsampling == 1;
                let lhs_sphere = if keep_lhs {
                    Some(zero_outside_sphere(lhs, n))
                } else {
                    None
                };
                sink(Estimate {
                    index: j,
                    half: h,
                    volume,
                    lhs: lhs_sphere.as_deref(),
                })?;
            }
        }
        if jp + 1 < nb {
            let step = bins[jp + 1] - bins[jp];
            for acc in accs.iter_mut() {
                acc.advance(step);
            }
        }
    }
    Ok(())
}

/// Zero a centered `n³` array outside the sphere of radius `n/2 − 1`.
fn zero_outside_sphere(mut v: Vec<f64>, n: usize) -> Vec<f64> {
    let h = (n / 2) as f64;
    let r2 = (h - 1.0) * (h - 1.0) + 1e-9;
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let (fx, fy, fz) = (x as f64 - h, y as f64 - h, z as f64 - h);
                if fx * fx + fy * fy + fz * fz > r2 {
                    v[(z * n + y) * n + x] = 0.0;
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_follow_the_spec() {
        let d: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let bins = pick_bins(&d, 50, 100).unwrap();
        assert_eq!(bins.len(), 50);
        assert!((bins[0] - 100.0 * (1.0 + 1e-8)).abs() < 1e-9);
        assert!((bins[49] - 949.05).abs() < 1e-6);
        let s: Vec<f64> = bins.iter().map(|b| b.sqrt()).collect();
        let step = s[1] - s[0];
        assert!(s.windows(2).all(|w| ((w[1] - w[0]) - step).abs() < 1e-9));
        // digitize(right=True)
        assert_eq!(bin_of(0.0, &bins), Some(0));
        assert_eq!(bin_of(bins[0], &bins), Some(0));
        assert_eq!(bin_of(bins[0] * 1.000001, &bins), Some(1));
        assert_eq!(bin_of(1e9, &bins), None);
    }

    #[test]
    fn streamed_mixture_equals_explicit_weights() {
        // Scalar "volumes": F_j = arbitrary numbers; check the closed form against Σ w F.
        let bins = pick_bins(
            &(0..500).map(|i| (i * i) as f64).collect::<Vec<_>>(),
            12,
            20,
        )
        .unwrap();
        let f: Vec<f64> = (0..12).map(|j| 1.0 + (j as f64 * 0.37).sin()).collect();
        let last = last_bins(&bins);
        let mut acc = Accumulator::new(1);
        let mut got = [0.0; 12];
        for jp in 0..12 {
            acc.s0_c[0] += f[jp];
            acc.s0_y[0] += Complex::new(f[jp], -f[jp]);
            for j in (0..12).filter(|&j| last[j] == jp) {
                let (l, r) = acc.mix(&bins, j, jp);
                assert!((l[0] - r[0].re).abs() < 1e-12 && (r[0].im + r[0].re).abs() < 1e-12);
                got[j] = l[0];
            }
            if jp + 1 < 12 {
                acc.advance(bins[jp + 1] - bins[jp]);
            }
        }
        for j in 0..12 {
            let want: f64 = (0..12).map(|jp| kernel_weight(&bins, jp, j) * f[jp]).sum();
            assert!(
                (got[j] - want).abs() < 1e-10 * want.abs().max(1.0),
                "estimator {j}: {} vs {want}",
                got[j]
            );
            // Every bin with positive weight is read before the estimator is finished.
            for jp in 0..12 {
                if kernel_weight(&bins, jp, j) > 0.0 {
                    assert!(jp <= last[j]);
                }
            }
        }
    }

    #[test]
    fn distances_use_the_precision() {
        let zs = [1.0f32, 0.0, 0.0, 2.0];
        let prec = [2.0f32, 0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 1.0];
        let d = heterogeneity_distances(&zs, &prec, 2, &[0.0, 0.0]).unwrap();
        assert_eq!(d, vec![2.0, 4.0]);
        let e = heterogeneity_distances(&zs, &[], 2, &[0.0, 1.0]).unwrap();
        assert_eq!(e, vec![2.0, 1.0]);
        assert!(heterogeneity_distances(&zs, &prec, 2, &[0.0]).is_err());
        assert!(heterogeneity_distances(&zs, &prec, 2, &[f32::NAN, 0.0]).is_err());
    }
}
