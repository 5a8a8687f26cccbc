//! The numeric checks of `recovar run_test_dataset`: the outputs of a run on a simulated
//! dataset against the simulator's ground truth (`simulation_info.pkl`, `gt_mean.mrc`,
//! `gt_state{0,1,2}.mrc`). The Python tool's smoke test only checks that each command exits
//! 0; these say whether the numbers are right.

use std::path::{Path, PathBuf};

use crate::analysis::kde::DensityGrid;
use crate::error::{Error, Result};
use crate::fourier::{fsc, fsc_resolutions, Fft3};
use crate::io::{mrc, pickle};

/// One numeric check: what was measured, against what bound, and whether it held.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub value: f64,
    /// The bound `value` must reach (≥ unless `at_most`).
    pub bound: f64,
    pub at_most: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, value: f64, bound: f64, at_most: bool, detail: String) -> Check {
        Check {
            name: name.to_string(),
            value,
            bound,
            at_most,
            detail,
        }
    }

    pub fn passed(&self) -> bool {
        if self.at_most {
            self.value <= self.bound
        } else {
            self.value >= self.bound
        }
    }
}

/// The ground truth of a `make_test_dataset` folder.
pub struct Truth {
    pub dir: PathBuf,
    /// True state of each image (0, 1, 2).
    pub states: Vec<usize>,
    pub n_states: usize,
    pub gt_mean: Vec<f32>,
    pub gt_states: Vec<Vec<f32>>,
    pub box_size: usize,
    pub voxel_size: f64,
}

fn read_cube(path: &Path) -> Result<(Vec<f32>, usize, f64)> {
    let v = mrc::read_volume(path)?;
    let [nz, ny, nx] = v.shape;
    if nz != ny || ny != nx {
        return Err(Error::format(
            path,
            format!("a {nx}×{ny}×{nz} map; expected a cube"),
        ));
    }
    Ok((v.data, nx, v.voxel_size as f64))
}

impl Truth {
    /// Read `dir` (the `test_dataset/` folder written by `make_test_dataset`).
    pub fn load(dir: &Path) -> Result<Truth> {
        let info_path = dir.join("simulation_info.pkl");
        let info = pickle::load(&info_path)?;
        let states: Vec<usize> = info
            .get("image_assignment")
            .and_then(|v| v.as_array())
            .and_then(|a| a.as_i64())
            .ok_or_else(|| Error::format(&info_path, "no integer array \"image_assignment\""))?
            .iter()
            .map(|&s| usize::try_from(s).unwrap_or(usize::MAX))
            .collect();
        if states.iter().any(|&s| s > 16) {
            return Err(Error::format(
                &info_path,
                "image_assignment holds a bad state",
            ));
        }
        let n_states = states.iter().max().map_or(0, |m| m + 1);
        let (gt_mean, n, vs) = read_cube(&dir.join("gt_mean.mrc"))?;
        let mut gt_states = Vec::new();
        for s in 0..n_states {
            let p = dir.join(format!("gt_state{s}.mrc"));
            let (v, m, _) = read_cube(&p)?;
            if m != n {
                return Err(Error::format(
                    &p,
                    format!("{m} voxels a side, gt_mean.mrc {n}"),
                ));
            }
            gt_states.push(v);
        }
        Ok(Truth {
            dir: dir.to_path_buf(),
            states,
            n_states,
            gt_mean,
            gt_states,
            box_size: n,
            voxel_size: vs,
        })
    }

    /// True populations of the states.
    pub fn populations(&self) -> Vec<f64> {
        let mut c = vec![0.0; self.n_states];
        for &s in &self.states {
            c[s] += 1.0;
        }
        let n = self.states.len().max(1) as f64;
        c.iter().map(|x| x / n).collect()
    }
}

/// Resolution (Å) where the FSC of two maps of side `n` falls below 0.5.
pub fn fsc_05(a: &[f32], b: &[f32], n: usize, voxel_size: f64) -> Result<f64> {
    let fft = Fft3::<f32>::new(n);
    let f = fsc(&fft.forward_real_vec(a), &fft.forward_real_vec(b), n, false)?;
    Ok(fsc_resolutions(&f, n, voxel_size).at_0_5)
}

/// Pearson correlation of two equally long maps.
pub fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()).max(1) as f64;
    let (ma, mb) = (
        a.iter().map(|&x| x as f64).sum::<f64>() / n,
        b.iter().map(|&x| x as f64).sum::<f64>() / n,
    );
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa > 0.0 && bb > 0.0 {
        ab / (aa * bb).sqrt()
    } else {
        0.0
    }
}

/// The mean latent point of each true state's images (`zs`: `n × zdim` in image order).
pub fn state_means(zs: &[f32], zdim: usize, truth: &Truth) -> Result<Vec<Vec<f32>>> {
    if zs.len() != truth.states.len() * zdim {
        return Err(Error::inconsistent(format!(
            "{} latent coordinates for {} simulated images of dimension {zdim}",
            zs.len(),
            truth.states.len()
        )));
    }
    let mut sums = vec![vec![0.0f64; zdim]; truth.n_states];
    let mut counts = vec![0usize; truth.n_states];
    for (row, &s) in zs.chunks_exact(zdim).zip(&truth.states) {
        counts[s] += 1;
        for (a, &v) in sums[s].iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    Ok(sums
        .iter()
        .zip(&counts)
        .map(|(s, &c)| s.iter().map(|v| (v / c.max(1) as f64) as f32).collect())
        .collect())
}

/// The mass of a (non-negative) density on its grid closest to each of `centers` (their
/// first `grid.dim` coordinates), as fractions of the total.
pub fn voronoi_mass(grid: &DensityGrid, centers: &[Vec<f32>]) -> Vec<f64> {
    let d = grid.dim;
    let m = grid.n_grid;
    let mut mass = vec![0.0f64; centers.len()];
    let mut node = vec![0usize; d];
    let mut total = 0.0;
    for &v in &grid.values {
        let v = (v as f64).max(0.0);
        let x: Vec<f64> = (0..d).map(|k| grid.node(k, node[k]) as f64).collect();
        let best = centers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let d2: f64 = (0..d).map(|k| (x[k] - c[k] as f64).powi(2)).sum();
                (i, d2)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        if let Some(i) = best {
            mass[i] += v;
            total += v;
        }
        for k in (0..d).rev() {
            node[k] += 1;
            if node[k] < m {
                break;
            }
            node[k] = 0;
        }
    }
    mass.iter()
        .map(|x| x / total.max(f64::MIN_POSITIVE))
        .collect()
}

/// How well a generated map shows the heterogeneity of true state `s`: the correlation of
/// its difference from the estimated mean with the true state's difference from the true
/// mean, for every true state (the right one should be clearly the largest).
pub fn state_signal_correlations(volume: &[f32], mean: &[f32], truth: &Truth) -> Vec<f64> {
    let diff: Vec<f32> = volume.iter().zip(mean).map(|(a, b)| a - b).collect();
    truth
        .gt_states
        .iter()
        .map(|g| {
            let t: Vec<f32> = g.iter().zip(&truth.gt_mean).map(|(a, b)| a - b).collect();
            correlation(&diff, &t)
        })
        .collect()
}

/// Travel time along a polyline through a density (what the trajectory search minimizes):
/// the sum over its pieces of their length, in grid steps, divided by the speed
/// `density + 1e-5·max(density)` at their midpoints (zero outside the grid).
pub fn travel_cost(grid: &DensityGrid, points: &[Vec<f32>]) -> f64 {
    let max = grid.values.iter().cloned().fold(0.0f32, f32::max) as f64;
    let floor = 1e-5 * max.max(f64::MIN_POSITIVE);
    points
        .windows(2)
        .map(|w| {
            let (a, b) = (grid.to_grid(&w[0]), grid.to_grid(&w[1]));
            let len = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f64>()
                .sqrt();
            let mid: Vec<f32> = w[0].iter().zip(&w[1]).map(|(x, y)| 0.5 * (x + y)).collect();
            len / (grid.value_at(&mid).unwrap_or(0.0) as f64 + floor)
        })
        .sum()
}

/// The numbers after `"key": [` in a JSON text, up to the closing bracket (flat arrays of
/// numbers, as path.json's "density"; `NaN` is read as NaN).
pub fn json_numbers(text: &str, key: &str) -> Option<Vec<f64>> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = &text[at + key.len() + 2..];
    let open = rest.find('[')?;
    let close = rest[open..].find(']')? + open;
    rest[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<f64>().ok())
        .collect()
}

/// The rows after `"key": [[...], [...]]` in a JSON text (path.json's "path").
pub fn json_rows(text: &str, key: &str) -> Option<Vec<Vec<f64>>> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = &text[at + key.len() + 2..];
    let open = rest.find('[')?;
    let mut depth = 0usize;
    let mut end = None;
    for (i, c) in rest[open..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    end = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &rest[open + 1..end?];
    inner
        .split('[')
        .skip(1)
        .map(|row| {
            let row = row.split(']').next()?;
            row.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| t.parse::<f64>().ok())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arrays_are_read() {
        let t = "{\n \"density\": [1e0, 2.5, NaN],\n \"density_subsampled\": [3]\n}";
        let v = json_numbers(t, "density").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], 2.5);
        assert!(v[2].is_nan());
        assert_eq!(json_numbers(t, "density_subsampled"), Some(vec![3.0]));
        assert_eq!(json_numbers(t, "path"), None);
        let t = "{\"path\": [\n [1, 2],\n [3e0, -4]\n ],\n \"x\": [5]}";
        assert_eq!(
            json_rows(t, "path"),
            Some(vec![vec![1.0, 2.0], vec![3.0, -4.0]])
        );
    }

    #[test]
    fn voronoi_mass_splits_a_density() {
        // 1-D grid on [0, 1], 11 nodes, uniform: nodes 0..=4 nearer 0, 6..=10 nearer 1, node 5
        // equidistant (goes to the first).
        let g = DensityGrid {
            dim: 1,
            n_grid: 11,
            bounds: vec![[0.0, 1.0]],
            values: vec![1.0; 11],
        };
        let m = voronoi_mass(&g, &[vec![0.0], vec![1.0]]);
        assert!((m[0] - 6.0 / 11.0).abs() < 1e-12 && (m[1] - 5.0 / 11.0).abs() < 1e-12);
    }

    #[test]
    fn correlation_is_scale_free() {
        let a = [1.0f32, 2.0, 3.0, 5.0];
        let b: Vec<f32> = a.iter().map(|x| 3.0 * x + 1.0).collect();
        assert!((correlation(&a, &b) - 1.0).abs() < 1e-12);
        let c: Vec<f32> = a.iter().map(|x| -x).collect();
        assert!((correlation(&a, &c) + 1.0).abs() < 1e-12);
    }
}
