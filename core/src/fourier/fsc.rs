//! Fourier shell correlation, resolution, FSC weighting, low-pass filtering and B-factor
//! sharpening (algorithms.md §15), on complex centered `n³` spectra in MRC order.
//!
//! Shells are `round(|k|)`, profiles have `n/2 − 1` entries (see [`super::shells`]).
//! Resolutions are in Å: shell `i` of a box of `n` voxels of size `v` Å is the
//! frequency `i/(n·v)`, i.e. resolution `n·v/i`.

use num_complex::Complex;
use rayon::prelude::*;

use super::shells::{centered_freq, n_shells, shell_index_3d};
use crate::{Error, Result};

fn check_volume(len: usize, n: usize, what: &str) -> Result<()> {
    if n == 0 || len != n * n * n {
        return Err(Error::invalid(format!(
            "{what}: {len} values do not form a volume of side {n}"
        )));
    }
    Ok(())
}

/// Per-shell sums of `f(voxel)` over shells `0..ns`, f64, parallel over z-planes.
fn shell_sums<const K: usize>(
    shells: &[u32],
    ns: usize,
    plane: usize,
    f: impl Fn(usize) -> [f64; K] + Sync,
) -> (Vec<[f64; K]>, Vec<u64>) {
    // One partial sum per plane, added in plane order: a rayon fold/reduce would group
    // the planes by how the work was stolen, and the last bits would change from run to run.
    let per_plane: Vec<(Vec<[f64; K]>, Vec<u64>)> = shells
        .par_chunks(plane)
        .enumerate()
        .map(|(z, sh)| {
            let mut sums = vec![[0.0; K]; ns];
            let mut counts = vec![0u64; ns];
            for (j, &s) in sh.iter().enumerate() {
                let s = s as usize;
                if s < ns {
                    let v = f(z * plane + j);
                    for (acc, x) in sums[s].iter_mut().zip(v) {
                        *acc += x;
                    }
                    counts[s] += 1;
                }
            }
            (sums, counts)
        })
        .collect();
    let mut sums = vec![[0.0; K]; ns];
    let mut counts = vec![0u64; ns];
    for (ps, pc) in per_plane {
        for (x, y) in sums.iter_mut().zip(&ps) {
            for (p, q) in x.iter_mut().zip(y) {
                *p += q;
            }
        }
        for (x, y) in counts.iter_mut().zip(&pc) {
            *x += y;
        }
    }
    (sums, counts)
}

/// Fourier shell correlation of two centered `n³` spectra (§15.1):
///
/// `FSC(r) = Σ Re(conj(a)·b) / sqrt(Σ|a|² · Σ|b|²)` over shell `r`, for `r = 0..n/2 − 2`;
/// non-finite values (empty or all-zero shells) become 0, and `FSC(0) := FSC(1)` (the
/// DC shell is a single voxel). With `subtract_shell_mean`, each shell's complex mean is
/// removed from `a` and `b` first (RECOVAR's `substract_shell_mean`, used for the
/// variance prior).
pub fn fsc(
    a: &[Complex<f32>],
    b: &[Complex<f32>],
    n: usize,
    subtract_shell_mean: bool,
) -> Result<Vec<f64>> {
    check_volume(a.len(), n, "FSC")?;
    check_volume(b.len(), n, "FSC")?;
    let ns = n_shells(n);
    let shells = shell_index_3d(n);
    let plane = n * n;
    let (mean_a, mean_b) = if subtract_shell_mean {
        let (s, c) = shell_sums(&shells, ns, plane, |i| {
            [
                a[i].re as f64,
                a[i].im as f64,
                b[i].re as f64,
                b[i].im as f64,
            ]
        });
        let m = |k: usize| -> Vec<Complex<f64>> {
            s.iter()
                .zip(&c)
                .map(|(v, &c)| {
                    let c = c.max(1) as f64;
                    Complex::new(v[k] / c, v[k + 1] / c)
                })
                .collect()
        };
        (m(0), m(2))
    } else {
        (
            vec![Complex::new(0.0, 0.0); ns],
            vec![Complex::new(0.0, 0.0); ns],
        )
    };
    let (sums, _) = shell_sums(&shells, ns, plane, |i| {
        let s = shells[i] as usize;
        let x = Complex::new(a[i].re as f64, a[i].im as f64) - mean_a[s];
        let y = Complex::new(b[i].re as f64, b[i].im as f64) - mean_b[s];
        [(x.conj() * y).re, x.norm_sqr(), y.norm_sqr()]
    });
    Ok(fsc_from_sums(&sums))
}

/// FSC per shell from `[Σ Re(conj a·b), Σ|a|², Σ|b|²]`: non-finite values (empty shells)
/// are 0 and `FSC(0) := FSC(1)`, as RECOVAR.
pub(crate) fn fsc_from_sums(sums: &[[f64; 3]]) -> Vec<f64> {
    let mut out: Vec<f64> = sums
        .iter()
        .map(|[ab, aa, bb]| {
            let v = ab / (aa * bb).sqrt();
            if v.is_finite() {
                v
            } else {
                0.0
            }
        })
        .collect();
    if out.len() > 1 {
        out[0] = out[1];
    }
    out
}

/// Fractional shell index where `fsc` first drops below `threshold`, as RECOVAR's
/// `find_fsc_resol`: with `i₀` the first shell where `fsc < threshold`, linear
/// interpolation between shells `i₀ − 1` and `i₀`; `None` when no shell is below
/// (the curve never crosses); `Some(0.0)` when shell 0 already is.
pub fn fsc_crossing(fsc: &[f64], threshold: f64) -> Option<f64> {
    let i0 = fsc.iter().position(|&v| v < threshold)?;
    if i0 == 0 {
        return Some(0.0);
    }
    let (hi, lo) = (fsc[i0 - 1], fsc[i0]);
    // hi ≥ threshold > lo, so the denominator is positive.
    Some((i0 - 1) as f64 + (hi - threshold) / (hi - lo))
}

/// Resolution in Å at which `fsc` (a profile over shells 0..) crosses `threshold`, for a
/// box of `box_size` voxels of `voxel_size` Å: `box·voxel / i` with `i` the interpolated
/// crossing ([`fsc_crossing`]).
///
/// Edge cases: if the curve never drops below `threshold`, `i` is the last shell
/// (`len − 1`), giving the best resolution the profile can show (Nyquist-limited; RECOVAR
/// does the same); if it crosses before shell 1 (`i < 1`, including a curve below the
/// threshold from shell 0 on), `i` is taken as 1, giving `box·voxel` (the lowest
/// measurable frequency; RECOVAR reports 999 Å there). An empty or one-shell profile also
/// gives `box·voxel`.
pub fn resolution_at(fsc: &[f64], threshold: f64, box_size: usize, voxel_size: f64) -> f64 {
    let i = fsc_crossing(fsc, threshold).unwrap_or(fsc.len().saturating_sub(1) as f64);
    box_size as f64 * voxel_size / i.max(1.0)
}

/// Resolutions at the two customary thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FscResolutions {
    /// At FSC = 0.5 (Å).
    pub at_0_5: f64,
    /// At FSC = 0.143, the half-map "gold standard" threshold (Å).
    pub at_0_143: f64,
}

/// [`resolution_at`] for thresholds 0.5 and 0.143.
pub fn fsc_resolutions(fsc: &[f64], box_size: usize, voxel_size: f64) -> FscResolutions {
    FscResolutions {
        at_0_5: resolution_at(fsc, 0.5, box_size, voxel_size),
        at_0_143: resolution_at(fsc, 0.143, box_size, voxel_size),
    }
}

/// Per-shell FSC weights `sqrt(max(0, 2F/(1+F)))` (RELION's C_ref, §15.3), zero from the
/// first shell where `F < 1e-4` on; when no shell is below 1e-4 every shell keeps its
/// weight (RECOVAR 1.0.5's `_prefix_length_before_first_false`; older versions cut the last
/// shell too).
pub fn fsc_weights(fsc: &[f64]) -> Vec<f64> {
    let cut = fsc.iter().position(|&v| v < 1e-4).unwrap_or(fsc.len());
    fsc.iter()
        .enumerate()
        .map(|(i, &f)| {
            if i < cut {
                (2.0 * f / (1.0 + f)).max(0.0).sqrt()
            } else {
                0.0
            }
        })
        .collect()
}

/// Multiply a centered `n³` spectrum by [`fsc_weights`] by shell; voxels beyond the
/// profile take its last weight.
pub fn apply_fsc_weighting(spec: &mut [Complex<f32>], n: usize, fsc: &[f64]) -> Result<()> {
    check_volume(spec.len(), n, "FSC weighting")?;
    let w = fsc_weights(fsc);
    let last = w
        .len()
        .checked_sub(1)
        .ok_or_else(|| Error::invalid("FSC weighting needs a non-empty FSC curve"))?;
    let shells = shell_index_3d(n);
    spec.par_iter_mut()
        .zip(shells.par_iter())
        .for_each(|(v, &s)| {
            *v *= w[(s as usize).min(last)] as f32;
        });
    Ok(())
}

/// The raised-cosine low-pass of §15.3 (RECOVAR's `low_pass_filter_map`): with
/// `i_f = round(n·voxel/resolution)` (ties to even) and `hw = edge_width / 2` shells,
/// normalized radius `res = round(|k|)/n`, `lo = max(0, (i_f − hw)/n)`,
/// `hi = (i_f + hw)/n`: weight 1 for `res ≤ lo`, `½ + ½cos(π(res − lo)/(hi − lo))` for
/// `lo ≤ res < hi`, 0 beyond.
pub fn low_pass_filter(
    spec: &mut [Complex<f32>],
    n: usize,
    resolution: f64,
    voxel_size: f64,
    edge_width: usize,
) -> Result<()> {
    check_volume(spec.len(), n, "low-pass filter")?;
    if !(resolution > 0.0 && voxel_size > 0.0) {
        return Err(Error::invalid(format!(
            "low-pass filter: resolution {resolution} Å and voxel size {voxel_size} Å must be positive"
        )));
    }
    let nf = n as f64;
    let i_f = (nf * voxel_size / resolution).round_ties_even();
    let hw = (edge_width / 2) as f64;
    let lo = ((i_f - hw) / nf).max(0.0);
    let hi = ((i_f + hw) / nf).min(nf);
    let shells = shell_index_3d(n);
    let max_shell = shells.iter().copied().max().unwrap_or(0) as usize;
    let table: Vec<f32> = (0..=max_shell)
        .map(|s| {
            let res = s as f64 / nf;
            let w = if res >= lo && res < hi {
                0.5 + 0.5 * (std::f64::consts::PI * (res - lo) / (hi - lo)).cos()
            } else if res <= lo {
                1.0
            } else {
                0.0
            };
            w as f32
        })
        .collect();
    spec.par_iter_mut()
        .zip(shells.par_iter())
        .for_each(|(v, &s)| *v *= table[s as usize]);
    Ok(())
}

/// B-factor sharpening (§15.4): `F(k) ← F(k)·exp(+B·|s|²/4)`, `|s| = |k|/(n·voxel)` in
/// 1/Å (exact, not shell-rounded). `B > 0` sharpens; `B < 0` blurs, as a CTF envelope
/// `exp(−B/4·s²)` does.
pub fn bfactor_sharpen(
    spec: &mut [Complex<f32>],
    n: usize,
    voxel_size: f64,
    bfactor: f64,
) -> Result<()> {
    check_volume(spec.len(), n, "B-factor sharpening")?;
    if !(voxel_size.is_finite() && voxel_size > 0.0) {
        return Err(Error::invalid(format!(
            "B-factor sharpening: voxel size {voxel_size} Å must be positive"
        )));
    }
    if bfactor == 0.0 {
        return Ok(());
    }
    let inv = 1.0 / (n as f64 * voxel_size);
    let c = bfactor / 4.0 * inv * inv;
    spec.par_chunks_mut(n * n)
        .enumerate()
        .for_each(|(z, plane)| {
            let kz = centered_freq(z, n) as f64;
            for (j, v) in plane.iter_mut().enumerate() {
                let ky = centered_freq(j / n, n) as f64;
                let kx = centered_freq(j % n, n) as f64;
                *v *= (c * (kx * kx + ky * ky + kz * kz)).exp() as f32;
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_interpolates_linearly() {
        let f = [1.0, 1.0, 0.9, 0.6, 0.4, 0.1];
        // crosses 0.5 between shells 3 (0.6) and 4 (0.4): 3.5
        assert!((fsc_crossing(&f, 0.5).unwrap() - 3.5).abs() < 1e-12);
        // 0.143 between shells 4 (0.4) and 5 (0.1): 4 + 0.257/0.3
        let want = 4.0 + (0.4 - 0.143) / 0.3;
        assert!((fsc_crossing(&f, 0.143).unwrap() - want).abs() < 1e-12);
        let r = fsc_resolutions(&f, 64, 2.0);
        assert!((r.at_0_5 - 128.0 / 3.5).abs() < 1e-9);
        assert!((r.at_0_143 - 128.0 / want).abs() < 1e-9);
    }

    #[test]
    fn resolution_edge_cases() {
        // never crosses: last shell (5) → box·voxel/5
        let f = [1.0, 1.0, 0.9, 0.8, 0.7, 0.6];
        assert!((resolution_at(&f, 0.5, 64, 1.5) - 96.0 / 5.0).abs() < 1e-12);
        // below from the start: box·voxel
        let g = [0.1, 0.1, 0.05];
        assert_eq!(fsc_crossing(&g, 0.5), Some(0.0));
        assert!((resolution_at(&g, 0.5, 64, 1.5) - 96.0).abs() < 1e-12);
        // crossing between shells 0 and 1 at 0.5 → clamped to shell 1
        let h = [1.0, 0.0, 0.0];
        assert!((resolution_at(&h, 0.5, 64, 1.5) - 96.0).abs() < 1e-12);
        assert!((resolution_at(&[], 0.5, 64, 1.5) - 96.0).abs() < 1e-12);
    }

    #[test]
    fn weights_are_cut_after_first_tiny_value() {
        let f = [1.0, 0.8, 0.3, 0.00005, 0.4, 0.2];
        let w = fsc_weights(&f);
        assert!((w[0] - 1.0).abs() < 1e-12);
        assert!((w[1] - (1.6f64 / 1.8).sqrt()).abs() < 1e-12);
        assert!((w[2] - (0.6f64 / 1.3).sqrt()).abs() < 1e-12);
        assert_eq!(&w[3..], &[0.0, 0.0, 0.0]);
        // none below 1e-4: every shell keeps its weight (RECOVAR 1.0.5)
        let w = fsc_weights(&[1.0, 0.5, 0.2]);
        assert!(w[1] > 0.0 && (w[2] - (0.4f64 / 1.2).sqrt()).abs() < 1e-12);
    }
}
