//! The full pipeline against ground truth: the top eigenvolumes span the simulated
//! heterogeneity (captured variance, principal angles) and k-means on the embedding recovers
//! the discrete states (adjusted Rand index). Also: a resumed run gives the same result.

mod common;

use common::*;
use recovar_core::fourier::Fft3;
use recovar_core::io::{mrc, npy::NpyArray, pickle};
use recovar_core::rng::Rng;
use recovar_core::simulate::{SimulationOptions, Simulator};

/// Adjusted Rand index of two labelings.
fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    let ka = a.iter().max().map_or(0, |m| m + 1);
    let kb = b.iter().max().map_or(0, |m| m + 1);
    let mut t = vec![vec![0u64; kb]; ka];
    for (&x, &y) in a.iter().zip(b) {
        t[x][y] += 1;
    }
    let c2 = |v: u64| (v * v.saturating_sub(1)) as f64 / 2.0;
    let sum_ij: f64 = t.iter().flatten().map(|&v| c2(v)).sum();
    let sum_a: f64 = t.iter().map(|r| c2(r.iter().sum())).sum();
    let sum_b: f64 = (0..kb).map(|j| c2(t.iter().map(|r| r[j]).sum())).sum();
    let total = c2(a.len() as u64);
    let expected = sum_a * sum_b / total;
    let max = 0.5 * (sum_a + sum_b);
    (sum_ij - expected) / (max - expected)
}

/// k-means (k-means++ seeding, fixed seed, best of several starts) on rows of `x` (n × d).
fn kmeans(x: &[f32], d: usize, k: usize, seed: u64) -> Vec<usize> {
    let n = x.len() / d;
    let dist =
        |i: usize, c: &[f64]| -> f64 { (0..d).map(|j| (x[i * d + j] as f64 - c[j]).powi(2)).sum() };
    let mut best = (f64::INFINITY, vec![0usize; n]);
    let mut rng = Rng::new(seed);
    for _ in 0..10 {
        let mut centers: Vec<Vec<f64>> = vec![(0..d)
            .map(|j| x[rng.below(n as u64) as usize * d + j] as f64)
            .collect()];
        while centers.len() < k {
            let w: Vec<f64> = (0..n)
                .map(|i| {
                    centers
                        .iter()
                        .map(|c| dist(i, c))
                        .fold(f64::INFINITY, f64::min)
                })
                .collect();
            let total: f64 = w.iter().sum();
            let mut r = rng.uniform() * total;
            let mut pick = n - 1;
            for (i, wi) in w.iter().enumerate() {
                if r < *wi {
                    pick = i;
                    break;
                }
                r -= wi;
            }
            centers.push((0..d).map(|j| x[pick * d + j] as f64).collect());
        }
        let mut labels = vec![0usize; n];
        for _ in 0..100 {
            for (i, l) in labels.iter_mut().enumerate() {
                *l = (0..k)
                    .min_by(|&a, &b| dist(i, &centers[a]).total_cmp(&dist(i, &centers[b])))
                    .unwrap_or(0);
            }
            let mut sums = vec![vec![0.0f64; d]; k];
            let mut counts = vec![0usize; k];
            for (i, &l) in labels.iter().enumerate() {
                counts[l] += 1;
                for j in 0..d {
                    sums[l][j] += x[i * d + j] as f64;
                }
            }
            for c in 0..k {
                if counts[c] > 0 {
                    centers[c] = sums[c].iter().map(|s| s / counts[c] as f64).collect();
                }
            }
        }
        let inertia: f64 = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| dist(i, &centers[l]))
            .sum();
        if inertia < best.0 {
            best = (inertia, labels);
        }
    }
    best.1
}

/// Orthonormal basis (Gram–Schmidt, f64) of real-space vectors.
fn orthonormal(vs: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    for v in vs {
        let mut w = v.clone();
        for _ in 0..2 {
            for u in &out {
                let d: f64 = w.iter().zip(u).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
            }
        }
        let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-9 {
            out.push(w.iter().map(|a| a / norm).collect());
        }
    }
    out
}

/// The true principal components of the simulated volumes of `sim`'s images (up to `m` of
/// them, real space): eigenvectors and eigenvalues of the sample covariance, via the Gram
/// matrix (power iteration with deflation is enough for the top few).
fn true_components(sim: &Simulator<'_>, n: usize, m: usize, k: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let ps = &sim.params()[..m.min(sim.params().len())];
    let vols: Vec<Vec<f64>> = ps
        .iter()
        .map(|p| {
            sim.volume(p.state as usize, p.latent)
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    let n3 = n * n * n;
    let mean: Vec<f64> = (0..n3)
        .map(|j| vols.iter().map(|v| v[j]).sum::<f64>() / vols.len() as f64)
        .collect();
    let dev: Vec<Vec<f64>> = vols
        .iter()
        .map(|v| v.iter().zip(&mean).map(|(a, b)| a - b).collect())
        .collect();
    let mcount = dev.len();
    let mut gram = vec![vec![0.0f64; mcount]; mcount];
    for i in 0..mcount {
        for j in i..mcount {
            let g: f64 = dev[i].iter().zip(&dev[j]).map(|(a, b)| a * b).sum();
            gram[i][j] = g;
            gram[j][i] = g;
        }
    }
    let mut vecs = Vec::new();
    let mut vals = Vec::new();
    let mut found: Vec<Vec<f64>> = Vec::new();
    for _ in 0..k {
        let mut v: Vec<f64> = (0..mcount)
            .map(|i| ((i * 7919) % 101) as f64 + 1.0)
            .collect();
        let mut lam = 0.0;
        for _ in 0..500 {
            let mut w: Vec<f64> = (0..mcount)
                .map(|i| (0..mcount).map(|j| gram[i][j] * v[j]).sum())
                .collect();
            for f in &found {
                let d: f64 = w.iter().zip(f).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(f).for_each(|(a, b)| *a -= d * b);
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            lam = norm;
            v = w.iter().map(|a| a / norm).collect();
        }
        found.push(v.clone());
        let mut vol = vec![0.0f64; n3];
        for (i, d) in dev.iter().enumerate() {
            vol.iter_mut().zip(d).for_each(|(a, b)| *a += v[i] * b);
        }
        let norm = vol.iter().map(|a| a * a).sum::<f64>().sqrt();
        vecs.push(vol.iter().map(|a| a / norm).collect());
        vals.push(lam / mcount as f64);
    }
    (vecs, vals)
}

/// Simulate a 32-px set (`--discrete-only` optional) and run the full pipeline on it.
fn simulate_and_run(
    dir: &std::path::Path,
    n_images: usize,
    discrete: bool,
    extra: &[&str],
) -> std::path::PathBuf {
    let count = n_images.to_string();
    let mut sim_args = vec![
        "make_test_dataset",
        ".",
        "--image-size",
        "32",
        "--n-images",
        &count,
    ];
    if discrete {
        sim_args.push("--discrete-only");
    }
    recovar_ok(dir, &sim_args);
    simulate_and_run_again(dir, extra)
}

/// Our top `k` eigenvolumes (real space, f64).
fn our_eigenvolumes(out: &std::path::Path, k: usize) -> Vec<Vec<f64>> {
    (0..k)
        .map(|j| {
            mrc::read_volume(out.join(format!("output/volumes/eigen_pos{j:04}.mrc")))
                .unwrap()
                .data
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect()
}

/// Fraction of the variance of the top `k` true components that lies in span(`ours`).
fn captured(true_u: &[Vec<f64>], true_l: &[f64], ours: &[Vec<f64>], k: usize) -> f64 {
    let basis = orthonormal(ours);
    let mut num = 0.0;
    let mut den = 0.0;
    for (u, l) in true_u.iter().zip(true_l).take(k) {
        let proj: f64 = basis
            .iter()
            .map(|b| b.iter().zip(u).map(|(a, c)| a * c).sum::<f64>().powi(2))
            .sum();
        num += l * proj;
        den += l;
    }
    num / den
}

/// Cosines of the principal angles between span(true_u[..k]) and span(ours) (descending),
/// the singular values of the k × m cross-Gram matrix, from its small Gram eigenvalues.
fn principal_cosines(true_u: &[Vec<f64>], ours: &[Vec<f64>], k: usize) -> Vec<f64> {
    let b = orthonormal(ours);
    let a = orthonormal(&true_u[..k]);
    let m: Vec<Vec<f64>> = a
        .iter()
        .map(|u| {
            b.iter()
                .map(|v| u.iter().zip(v).map(|(x, y)| x * y).sum())
                .collect()
        })
        .collect();
    // k × k matrix M Mᵀ; its eigenvalues by Jacobi sweeps.
    let mut g: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..k)
                .map(|j| m[i].iter().zip(&m[j]).map(|(x, y)| x * y).sum())
                .collect()
        })
        .collect();
    for _ in 0..50 {
        for p in 0..k {
            for q in p + 1..k {
                if g[p][q].abs() < 1e-15 {
                    continue;
                }
                let theta = (g[q][q] - g[p][p]) / (2.0 * g[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in g.iter_mut() {
                    let (gp, gq) = (row[p], row[q]);
                    row[p] = c * gp - s * gq;
                    row[q] = s * gp + c * gq;
                }
                let (gp_row, gq_row) = (g[p].clone(), g[q].clone());
                for r in 0..k {
                    g[p][r] = c * gp_row[r] - s * gq_row[r];
                    g[q][r] = s * gp_row[r] + c * gq_row[r];
                }
            }
        }
    }
    let mut cos: Vec<f64> = (0..k).map(|i| g[i][i].max(0.0).sqrt()).collect();
    cos.sort_by(|a, b| b.total_cmp(a));
    cos
}

#[test]
fn eigenvolumes_span_the_simulated_heterogeneity() {
    // Default phantom: a swinging arm (continuous: a linear and a quadratic component in the
    // hinge angle) and three lid states.
    let tmp = tempfile::tempdir().unwrap();
    let n = 32;
    let out = simulate_and_run(tmp.path(), 2000, false, &[]);
    for f in [
        "model/embeddings.pkl",
        "model/zdim_2/latent_coords.npy",
        "model/eigenvalues.npy",
        "model/eigenvectors_fourier.npy",
        "output/volumes/eigen_pos0000.mrc",
        "output/volumes/eigen_neg0003.mrc",
        "output/volumes/variance4.mrc",
        "output/plots/eigenvalues.png",
        "output/plots/mean_variance_eigenvolume_plots.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let be = recovar_core::backend::CpuBackend::new();
    let sim = Simulator::new(
        &SimulationOptions {
            image_size: n,
            n_images: 2000,
            ..Default::default()
        },
        &be,
    )
    .unwrap();
    let (true_u, true_l) = true_components(&sim, n, 400, 4);
    println!("true eigenvalues (real space): {true_l:?}");
    let ours = our_eigenvolumes(&out, 6);
    let cap2 = captured(&true_u, &true_l, &ours[..4], 2);
    let cap4 = captured(&true_u, &true_l, &ours, 4);
    let cos = principal_cosines(&true_u, &ours[..4], 4);
    println!("captured variance: top-2 true by our top 4: {cap2:.3}; top-4 true by our top 6: {cap4:.3}; principal cosines (true top 4 vs our top 4): {cos:.3?}");
    assert!(cap2 > 0.8, "{cap2}");
    assert!(cap4 > 0.7, "{cap4}");
    // The eigenvalues decay: the two hinge components stand above the noise floor.
    let ev = NpyArray::read(out.join("model/eigenvalues.npy"))
        .unwrap()
        .to_f64()
        .unwrap();
    println!("eigenvalues: {:.2?}", &ev[..8]);
    assert!(ev.windows(2).all(|w| w[0] >= w[1]));
    assert!(ev[1] > 2.0 * ev[6], "{ev:?}");
    let info = pickle::load(tmp.path().join("test_dataset/simulation_info.pkl")).unwrap();
    assert!(info.get("image_assignment").is_some());
    let _ = Fft3::<f32>::new(4);
}

#[test]
fn embedding_separates_discrete_states() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 32;
    let out = simulate_and_run(tmp.path(), 2000, true, &[]);
    let be = recovar_core::backend::CpuBackend::new();
    let sim = Simulator::new(
        &SimulationOptions {
            image_size: n,
            n_images: 2000,
            hinge: false,
            ..Default::default()
        },
        &be,
    )
    .unwrap();
    let (true_u, true_l) = true_components(&sim, n, 300, 2);
    let ours = our_eigenvolumes(&out, 4);
    // Without --correct-contrast the per-image contrast (10 % spread) is real variance along
    // the mean, as large as the weaker state direction: it takes one of the top PCs.
    let caps: Vec<f64> = (2..=4)
        .map(|k| captured(&true_u, &true_l, &ours[..k], 2))
        .collect();
    let cos = principal_cosines(&true_u, &ours, 2);
    println!("discrete states: true eigenvalues {true_l:.3?}; captured by our top 2/3/4: {caps:.3?}; principal cosines (top 4) {cos:.3?}");
    assert!(caps[2] > 0.7, "{caps:?}");
    let truth: Vec<usize> = sim.params().iter().map(|p| p.state as usize).collect();
    let zs = NpyArray::read(out.join("model/zdim_4/latent_coords.npy"))
        .unwrap()
        .to_f64()
        .unwrap();
    let zs: Vec<f32> = zs.iter().map(|&v| v as f32).collect();
    let ari = adjusted_rand_index(&kmeans(&zs, 4, 3, 0), &truth);
    println!("k-means (3) on the zdim-4 embedding vs true states: ARI {ari:.3}");
    assert!(ari > 0.8, "{ari}");
}

#[test]
fn interrupted_run_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let out = simulate_and_run(tmp.path(), 600, true, &["--correct-contrast"]);
    let read = |p: &str| std::fs::read(out.join(p)).unwrap();
    let first = (
        read("model/embeddings.pkl"),
        read("model/eigenvalues.npy"),
        read("output/volumes/eigen_pos0000.mrc"),
    );
    // Forget the later stages, as if the run had stopped after pass 0's PCA.
    let ck = out.join("checkpoints");
    for stage in [
        "p0_embedding",
        "p1_mean",
        "p1_masks",
        "p1_noise",
        "p1_variance",
        "p1_pca",
        "p1_embedding",
    ] {
        let _ = std::fs::remove_file(ck.join(format!("{stage}.ckpt")));
    }
    std::fs::remove_file(out.join("model/embeddings.pkl")).unwrap();
    let out2 = simulate_and_run_again(tmp.path(), &["--correct-contrast"]);
    assert_eq!(out2, out);
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(log.contains("resum"), "no resume in the log");
    assert_eq!(first.0, read("model/embeddings.pkl"));
    assert_eq!(first.1, read("model/eigenvalues.npy"));
    assert_eq!(first.2, read("output/volumes/eigen_pos0000.mrc"));
}

/// Run the pipeline again on the data [`simulate_and_run`] made.
fn simulate_and_run_again(dir: &std::path::Path, extra: &[&str]) -> std::path::PathBuf {
    let data = dir.join("test_dataset");
    let out = dir.join("out");
    let particles = data.join("particles.32.mrcs").display().to_string();
    let poses = data.join("poses.pkl").display().to_string();
    let ctf = data.join("ctf.pkl").display().to_string();
    let out_s = out.display().to_string();
    let mut args = vec![
        "pipeline",
        &particles,
        "--poses",
        &poses,
        "--ctf",
        &ctf,
        "-o",
        &out_s,
        "--zdim",
        "1,2,4",
        "--very-low-memory-option",
    ];
    args.extend_from_slice(extra);
    let stdout = recovar_ok(dir, &args);
    println!("{stdout}");
    out
}
