//! Frequency grids, radial shells and radial profiles (algorithms.md §1.2, §2, §15).
//!
//! Shell of a pixel/voxel = `round(|k|)` with `k` its integer centered frequency (no ties
//! can occur: `|k|² ` is an integer and `(m + ½)²` never is). Profiles have
//! [`n_shells`]`(n) = n/2 − 1` entries (shells `0..n/2 − 2`), the shells fully inside the
//! box in every direction; that is RECOVAR's convention for noise, priors and FSC.
//! Expanding a profile back onto a grid uses RECOVAR's "extend last frequency": shells
//! past the profile's end take its last value.

use rayon::prelude::*;

use crate::{Error, Result};

/// Number of shells in a radial profile for a grid of side `n`: `n/2 − 1` (0 for n < 2).
pub fn n_shells(n: usize) -> usize {
    (n / 2).saturating_sub(1)
}

/// Integer centered frequency of index `i` along an axis of length `n`: `i − n/2`.
#[inline]
pub fn centered_freq(i: usize, n: usize) -> i64 {
    i as i64 - (n / 2) as i64
}

/// `round(sqrt(r2))` for every `r2` up to `max_r2`, exactly (a table avoids a square root
/// per voxel).
fn round_sqrt_table(max_r2: usize) -> Vec<u32> {
    let mut t = Vec::with_capacity(max_r2 + 1);
    let mut m: u64 = 0;
    for r2 in 0..=max_r2 as u64 {
        // round(sqrt(r2)) = m  ⇔  (m − ½)² ≤ r2 < (m + ½)²  ⇔  4r2 < (2m + 1)².
        while 4 * r2 >= (2 * m + 1) * (2 * m + 1) {
            m += 1;
        }
        t.push(m as u32);
    }
    t
}

/// `round(|k|)` for every pixel of a `d × d` image (row-major, `k = (c − d/2, r − d/2)`).
pub fn shell_index_2d(d: usize) -> Vec<u32> {
    let h = (d / 2) as i64;
    let hm = h.max(d as i64 - 1 - h) as usize;
    let table = round_sqrt_table(2 * hm * hm);
    let mut out = Vec::with_capacity(d * d);
    for r in 0..d {
        let ky = centered_freq(r, d);
        for c in 0..d {
            let kx = centered_freq(c, d);
            out.push(table[(kx * kx + ky * ky) as usize]);
        }
    }
    out
}

/// `round(|k|)` for every voxel of an `n³` volume (MRC order, `k = (x, y, z) − n/2`).
pub fn shell_index_3d(n: usize) -> Vec<u32> {
    let h = (n / 2) as i64;
    let hm = h.max(n as i64 - 1 - h) as usize;
    let table = round_sqrt_table(3 * hm * hm);
    let mut out = vec![0u32; n * n * n];
    out.par_chunks_mut((n * n).max(1))
        .enumerate()
        .for_each(|(z, plane)| {
            let kz = centered_freq(z, n);
            for y in 0..n {
                let ky = centered_freq(y, n);
                for x in 0..n {
                    let kx = centered_freq(x, n);
                    plane[y * n + x] = table[(kx * kx + ky * ky + kz * kz) as usize];
                }
            }
        });
    out
}

/// Integer frequency `(kx, ky)` of every pixel of a `d × d` image, as f32 (first = column
/// frequency x, second = row frequency y). Divide by `d·apix` for cycles/Å.
pub fn frequency_grid_2d(d: usize) -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(d * d);
    for r in 0..d {
        for c in 0..d {
            out.push([centered_freq(c, d) as f32, centered_freq(r, d) as f32]);
        }
    }
    out
}

/// Integer frequency `(kx, ky, kz)` of every voxel of an `n³` volume in MRC order.
pub fn frequency_grid_3d(n: usize) -> Vec<[f32; 3]> {
    let mut out = Vec::with_capacity(n * n * n);
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                out.push([
                    centered_freq(x, n) as f32,
                    centered_freq(y, n) as f32,
                    centered_freq(z, n) as f32,
                ]);
            }
        }
    }
    out
}

/// The "valid frequencies" of an `n³` grid: `|k| ≤ n/2 − 1` (the sphere that slicing
/// and backprojection clip to, §1.2).
pub fn valid_sphere_mask_3d(n: usize) -> Vec<bool> {
    let r = (n / 2) as i64 - 1;
    let r2 = r * r;
    let mut out = Vec::with_capacity(n * n * n);
    for z in 0..n {
        let kz = centered_freq(z, n);
        for y in 0..n {
            let ky = centered_freq(y, n);
            for x in 0..n {
                let kx = centered_freq(x, n);
                out.push(r >= 0 && kx * kx + ky * ky + kz * kz <= r2);
            }
        }
    }
    out
}

/// The 2-D analogue of [`valid_sphere_mask_3d`]: `|k| ≤ d/2 − 1`.
pub fn valid_disk_mask_2d(d: usize) -> Vec<bool> {
    let r = (d / 2) as i64 - 1;
    let mut out = Vec::with_capacity(d * d);
    for row in 0..d {
        let ky = centered_freq(row, d);
        for c in 0..d {
            let kx = centered_freq(c, d);
            out.push(r >= 0 && kx * kx + ky * ky <= r * r);
        }
    }
    out
}

fn check_shells(values: usize, shells: &[u32]) -> Result<()> {
    if values != shells.len() {
        return Err(Error::invalid(format!(
            "radial average: {values} values but {} shell indices",
            shells.len()
        )));
    }
    Ok(())
}

/// Sum of `values` over each shell `0..n_shells` (f64 accumulation); values in shells
/// ≥ `n_shells` are ignored. `shells` comes from [`shell_index_2d`] / [`shell_index_3d`].
pub fn radial_sum<T: Copy + Into<f64>>(
    values: &[T],
    shells: &[u32],
    n_shells: usize,
) -> Result<Vec<f64>> {
    check_shells(values.len(), shells)?;
    let mut sum = vec![0.0f64; n_shells];
    for (&v, &s) in values.iter().zip(shells) {
        if let Some(acc) = sum.get_mut(s as usize) {
            *acc += v.into();
        }
    }
    Ok(sum)
}

/// Number of grid points in each shell `0..n_shells`.
pub fn shell_counts(shells: &[u32], n_shells: usize) -> Vec<u64> {
    let mut count = vec![0u64; n_shells];
    for &s in shells {
        if let Some(c) = count.get_mut(s as usize) {
            *c += 1;
        }
    }
    count
}

/// Mean of `values` over each shell `0..n_shells` (f64 accumulation); an empty shell
/// gives 0 (as RECOVAR's `average_over_shells`).
pub fn radial_mean<T: Copy + Into<f64>>(
    values: &[T],
    shells: &[u32],
    n_shells: usize,
) -> Result<Vec<f64>> {
    let sum = radial_sum(values, shells, n_shells)?;
    let count = shell_counts(shells, n_shells);
    Ok(sum
        .iter()
        .zip(&count)
        .map(|(&s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
        .collect())
}

/// Expand a radial profile by shell: value `profile[min(shell, len − 1)]` ("extend last
/// frequency").
///
/// # Errors
/// If `profile` is empty.
pub fn expand_profile<T: Copy>(profile: &[T], shells: &[u32]) -> Result<Vec<T>> {
    let last = profile
        .len()
        .checked_sub(1)
        .ok_or_else(|| Error::invalid("cannot expand an empty radial profile"))?;
    Ok(shells
        .iter()
        .map(|&s| profile[(s as usize).min(last)])
        .collect())
}

/// A `d × d` image whose pixel in shell `r` holds `profile[min(r, len − 1)]`.
pub fn radial_to_image_2d<T: Copy>(profile: &[T], d: usize) -> Result<Vec<T>> {
    expand_profile(profile, &shell_index_2d(d))
}

/// An `n³` volume whose voxel in shell `r` holds `profile[min(r, len − 1)]`.
pub fn radial_to_image_3d<T: Copy>(profile: &[T], n: usize) -> Result<Vec<T>> {
    expand_profile(profile, &shell_index_3d(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_of_a_4x4_image_by_hand() {
        // k in {-2,-1,0,1}: |k| rounded.
        #[rustfmt::skip]
        let want = [
            3, 2, 2, 2, // ky=-2: (−2,−2)=2.83→3, (−1,−2)=2.24→2, (0,−2)=2, (1,−2)=2.24→2
            2, 1, 1, 1, // ky=-1: (−2,−1)=2.24→2, 1.41→1, 1, 1.41→1
            2, 1, 0, 1,
            2, 1, 1, 1,
        ];
        assert_eq!(shell_index_2d(4), want);
    }

    #[test]
    fn shells_3d_agree_with_sqrt() {
        for n in [5usize, 6, 9] {
            let s = shell_index_3d(n);
            let f = frequency_grid_3d(n);
            for (i, k) in f.iter().enumerate() {
                let r = ((k[0] * k[0] + k[1] * k[1] + k[2] * k[2]) as f64).sqrt();
                assert_eq!(s[i], r.round() as u32);
            }
        }
    }

    #[test]
    fn profile_lengths_and_extension() {
        assert_eq!(n_shells(8), 3);
        assert_eq!(n_shells(1), 0);
        let img = radial_to_image_2d(&[10.0f32, 20.0, 30.0], 8).unwrap();
        let s = shell_index_2d(8);
        for (v, sh) in img.iter().zip(&s) {
            let want = [10.0, 20.0, 30.0][(*sh as usize).min(2)];
            assert_eq!(*v, want);
        }
        assert!(radial_to_image_2d::<f32>(&[], 8).is_err());
    }

    #[test]
    fn radial_mean_of_expanded_profile_is_the_profile() {
        let prof = [1.0f64, -2.0, 3.5, 7.0, 0.25];
        let n = 12;
        let vol = radial_to_image_3d(&prof, n).unwrap();
        let m = radial_mean(&vol, &shell_index_3d(n), n_shells(n)).unwrap();
        assert_eq!(m, prof.to_vec());
    }

    #[test]
    fn valid_sphere_radius() {
        let n = 8;
        let m = valid_sphere_mask_3d(n);
        let f = frequency_grid_3d(n);
        for (ok, k) in m.iter().zip(&f) {
            let r2 = k[0] * k[0] + k[1] * k[1] + k[2] * k[2];
            assert_eq!(*ok, r2 <= 9.0);
        }
        assert_eq!(valid_disk_mask_2d(8).iter().filter(|&&b| b).count(), 29);
    }
}
