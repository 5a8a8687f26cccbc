//! Accuracy of the deconvolved conformational density and of the trajectories through it,
//! against the simulator's ground truth (BENCHMARKS.md, "Conformational density").
//!
//! ```sh
//! recovar make_test_dataset d --image-size 32 --n-images 5000 --seed 3
//! recovar pipeline d/test_dataset/particles.32.mrcs --poses d/test_dataset/poses.pkl \
//!     --ctf d/test_dataset/ctf.pkl -o d/pipe --zdim 2,4 --correct-contrast
//! cargo run --release -p recovar-core --example density_accuracy -- d/test_dataset d/pipe [zdim] [pca_dim]
//! ```
//!
//! The true latent distribution is placed in the embedding by conditional means: the images
//! are grouped by their true state and true hinge angle (30 bins), and each group's mean
//! unregularized embedding — its noise averages out, the estimator being unbiased — is where
//! that conformation sits, with the group's share of the images as its mass. Both that
//! truth and the estimates are smoothed by the same Gaussian (3 % of the grid's width) and compared
//! by total-variation distance (0 = identical, 1 = disjoint). The state populations are the
//! density's mass nearest each state's mean point (meaningful when the axes separate the
//! states). The trajectory between the two ends of state 2's hinge motion is scored by how
//! much of it runs where the true density is at least 5 % of its maximum.

use std::path::PathBuf;

use recovar_core::analysis::density::{estimate_density, DensityOptions};
use recovar_core::analysis::kde::DensityGrid;
use recovar_core::analysis::trajectory::{fixed_dimensional_path, PathOptions};
use recovar_core::io::pickle;
use recovar_core::pipeline::load::PipelineResult;
use recovar_core::pipeline::selftest::{state_means, voronoi_mass, Truth};
use recovar_core::progress::NoProgress;

type R<T> = Result<T, Box<dyn std::error::Error>>;

/// Separable Gaussian blur (σ in grid steps) of a density on `m^d` nodes, zero outside.
fn blur(values: &[f64], d: usize, m: usize, sigma: f64) -> Vec<f64> {
    let r = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f64> = (-r..=r)
        .map(|k| (-0.5 * (k as f64 / sigma).powi(2)).exp())
        .collect();
    let mut cur = values.to_vec();
    for axis in 0..d {
        let stride = m.pow((d - 1 - axis) as u32);
        let mut next = vec![0.0; cur.len()];
        for (i, out) in next.iter_mut().enumerate() {
            let pos = (i / stride % m) as isize;
            let mut acc = 0.0;
            for (j, w) in kernel.iter().enumerate() {
                let q = pos + j as isize - r;
                if q >= 0 && q < m as isize {
                    acc += w * cur[(i as isize + (q - pos) * stride as isize) as usize];
                }
            }
            *out = acc;
        }
        cur = next;
    }
    cur
}

fn normalized(v: &[f64]) -> Vec<f64> {
    let s: f64 = v.iter().map(|x| x.max(0.0)).sum();
    v.iter()
        .map(|x| x.max(0.0) / s.max(f64::MIN_POSITIVE))
        .collect()
}

fn tv(a: &[f64], b: &[f64]) -> f64 {
    0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>()
}

/// Splat weighted points onto the grid nodes (multilinear).
fn splat(grid: &DensityGrid, points: &[(Vec<f32>, f64)]) -> Vec<f64> {
    let (d, m) = (grid.dim, grid.n_grid);
    let mut out = vec![0.0; grid.values.len()];
    for (p, w) in points {
        let u = grid.to_grid(p);
        if u.iter().any(|&x| !(0.0..=(m - 1) as f64).contains(&x)) {
            continue;
        }
        for corner in 0..1usize << d {
            let mut idx = 0;
            let mut f = 1.0;
            for (k, &x) in u.iter().enumerate() {
                let i = (x.floor() as usize).min(m - 2);
                let up = (corner >> k) & 1;
                f *= if up == 1 {
                    x - i as f64
                } else {
                    1.0 - (x - i as f64)
                };
                idx = idx * m + i + up;
            }
            out[idx] += w * f;
        }
    }
    out
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err(
            "usage: density_accuracy <test_dataset dir> <pipeline dir> [zdim 4] [pca_dim 2]".into(),
        );
    }
    let data = PathBuf::from(&args[0]);
    let pipe = PathBuf::from(&args[1]);
    let zdim: usize = args.get(2).map_or(Ok(4), |s| s.parse())?;
    let pca_dim: usize = args.get(3).map_or(Ok(2), |s| s.parse())?;
    let truth = Truth::load(&data)?;
    let info = pickle::load(data.join("simulation_info.pkl"))?;
    let hinge: Vec<f64> = info
        .get("latent")
        .and_then(|v| v.as_array())
        .and_then(|a| a.as_f64())
        .ok_or("simulation_info.pkl has no latent")?
        .to_vec();
    let pr = PipelineResult::load(&pipe)?;
    let emb = pr.embedding(zdim, true)?;
    let n = truth.states.len();
    let t0 = std::time::Instant::now();
    let opts = DensityOptions {
        pca_dim,
        ..Default::default()
    };
    let dec = estimate_density(&emb.zs, zdim, &emb.precisions, &opts, &NoProgress)?;
    let secs = t0.elapsed().as_secs_f64();
    let grid = &dec.raw;
    let (d, m) = (grid.dim, grid.n_grid);

    // True distribution by conditional means over (state, hinge bin).
    let bins = 30;
    let (hmin, hmax) = hinge
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let width = ((hmax - hmin) / bins as f64).max(1e-12);
    let cells = truth.n_states * bins;
    let mut sums = vec![vec![0.0f64; pca_dim]; cells];
    let mut counts = vec![0usize; cells];
    for (i, (&h, &st)) in hinge.iter().zip(&truth.states).enumerate() {
        let b = (((h - hmin) / width) as usize).min(bins - 1);
        let c = st * bins + b;
        counts[c] += 1;
        for (acc, &z) in sums[c]
            .iter_mut()
            .zip(&emb.zs[i * zdim..i * zdim + pca_dim])
        {
            *acc += z as f64;
        }
    }
    let truth_points: Vec<(Vec<f32>, f64)> = (0..cells)
        .filter(|&c| counts[c] >= 10)
        .map(|c| {
            (
                sums[c]
                    .iter()
                    .map(|s| (s / counts[c] as f64) as f32)
                    .collect(),
                counts[c] as f64 / n as f64,
            )
        })
        .collect();
    // 3 % of the grid's width: below the distances between states and along the motion.
    let sigma = 0.03 * m as f64;
    let true_grid = normalized(&blur(&splat(grid, &truth_points), d, m, sigma));
    let smooth = |g: &DensityGrid| {
        let v: Vec<f64> = g.values.iter().map(|&x| x as f64).collect();
        normalized(&blur(&normalized(&v), d, m, sigma))
    };
    println!(
        "zdim {zdim}, pca_dim {pca_dim}, grid {m}^{d}, {} of {n} images kept; {secs:.1} s",
        dec.n_used
    );
    println!("TV distance to the true distribution (both smoothed by {sigma:.1} grid steps):");
    println!(
        "  raw KDE                   {:.3}",
        tv(&smooth(&dec.raw), &true_grid)
    );
    for (i, (a, g)) in dec.alphas.iter().zip(&dec.densities).enumerate() {
        println!(
            "  alpha {a:8.0e}{}  {:.3}",
            if i == dec.knee { " (knee)" } else { "       " },
            tv(&smooth(g), &true_grid)
        );
    }
    let centers = state_means(&emb.zs, zdim, &truth)?;
    let pop = truth.populations();
    let knee = &dec.densities[dec.knee];
    println!("state populations (true / raw KDE / knee density):");
    let raw_m = voronoi_mass(&dec.raw, &centers);
    let knee_m = voronoi_mass(knee, &centers);
    for s in 0..truth.n_states {
        println!(
            "  state {s}: {:.3} / {:.3} / {:.3}",
            pop[s], raw_m[s], knee_m[s]
        );
    }

    // Trajectory from state 0 to state 2 on the knee density, scored on the true density.
    let true_map = DensityGrid {
        dim: d,
        n_grid: m,
        bounds: grid.bounds.clone(),
        values: true_grid.iter().map(|&x| x as f32).collect(),
    };
    let tmax = true_grid.iter().cloned().fold(0.0, f64::max);
    let populated = |p: &[f32]| true_map.value_at(p).unwrap_or(0.0) as f64 >= 0.05 * tmax;
    // Endpoints: state 2 at the two ends of the hinge motion (means of its first and last
    // populated hinge bins).
    let cell_mean = |c: usize| -> Vec<f32> {
        sums[c]
            .iter()
            .map(|s| (s / counts[c] as f64) as f32)
            .collect()
    };
    let ends: Vec<usize> = (2 * bins..3 * bins).filter(|&c| counts[c] >= 10).collect();
    let (e0, e1) = (cell_mean(ends[0]), cell_mean(ends[ends.len() - 1]));
    let path = fixed_dimensional_path(knee, &e0, &e1, &PathOptions::default())?;
    let frac_path =
        path.points.iter().filter(|p| populated(p)).count() as f64 / path.points.len() as f64;
    let k = path.points.len().max(2);
    let frac_seg = (0..k)
        .filter(|&i| {
            let t = i as f32 / (k - 1) as f32;
            let q: Vec<f32> = e0
                .iter()
                .zip(&e1)
                .take(d)
                .map(|(a, b)| a + t * (b - a))
                .collect();
            populated(&q)
        })
        .count() as f64
        / k as f64;
    println!(
        "trajectory along the hinge motion of state 2: {} points, {:.0} % in the populated region (straight segment {:.0} %)",
        path.points.len(),
        100.0 * frac_path,
        100.0 * frac_seg
    );
    Ok(())
}
