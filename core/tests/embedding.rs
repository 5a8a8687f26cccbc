//! The embedding (algorithms.md §6) against ground truth from the simulator: a basis built
//! from the true volumes must separate the three discrete states and track the hinge, the
//! contrast search must find the simulated per-image contrasts, precisions are symmetric
//! positive semi-definite, the unregularized coordinates spread wider than the regularized
//! ones, results do not depend on batch size or threads, and bad arguments are errors.

use std::sync::OnceLock;

use num_complex::Complex;
use recovar_core::backend::CpuBackend;
use recovar_core::dataset::Dataset;
use recovar_core::fourier::Fft3;
use recovar_core::heterogeneity::embedding::{embed, Embedding, Embeddings};
use recovar_core::heterogeneity::Context;
use recovar_core::progress::NoProgress;
use recovar_core::simulate::{SimulationOptions, Simulator};

const N: usize = 32;
const N_IMAGES: usize = 1000;

/// Simulated data with everything the embedding needs and the answers.
struct Fixture {
    ds: Dataset,
    mean: Vec<Complex<f32>>,
    noise: Vec<f64>,
    ones: Vec<f32>,
    /// Basis spectra (Σ|u|² = N³): lid at site 1 vs none, lid at site 2 (orthogonalized),
    /// hinge (orthogonalized).
    basis: Vec<Vec<Complex<f32>>>,
    eigvals: Vec<f64>,
    /// True coordinates `<x_i − μ, u_k>` (real space, unit-norm u), per image.
    true_z: Vec<Vec<f64>>,
    states: Vec<u8>,
    contrasts: Vec<f64>,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let be = CpuBackend::new();
        let opts = SimulationOptions {
            image_size: N,
            n_images: N_IMAGES,
            seed: 11,
            ..Default::default()
        };
        let sim = Simulator::new(&opts, &be).unwrap();
        let params = sim.params();
        let n = params.len();
        let mut images = vec![0.0f32; n * N * N];
        sim.images(0..n, &mut images).unwrap();
        let rots: Vec<[f32; 9]> = params
            .iter()
            .map(|p| p.rotation.map(|v| v as f32))
            .collect();
        let shifts: Vec<[f32; 2]> = params
            .iter()
            .map(|p| p.shift_px.map(|v| v as f32))
            .collect();
        // cryoDRGN rows; the contrast column is not part of them (the dataset has contrast 1).
        let ctf_rows: Vec<[f64; 9]> = params
            .iter()
            .map(|p| p.ctf.to_row(N as f64, sim.voxel_size()))
            .collect();
        let ds = Dataset::from_arrays(images, n, N, &rots, &shifts, &ctf_rows, 0).unwrap();

        // Ground-truth basis in real space, Gram–Schmidt, unit norm.
        let v0 = sim.volume(0, 0.0);
        let diff =
            |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
        let raw = [
            diff(&sim.volume(1, 0.0), &v0),
            diff(&sim.volume(2, 0.0), &v0),
            diff(&sim.volume(0, 0.5), &sim.volume(0, -0.5)),
        ];
        let mut units: Vec<Vec<f32>> = Vec::new();
        for r in raw {
            let mut u = r;
            for e in &units {
                let c = dot(&u, e) as f32;
                u.iter_mut().zip(e).for_each(|(x, y)| *x -= c * y);
            }
            let norm = dot(&u, &u).sqrt() as f32;
            u.iter_mut().for_each(|x| *x /= norm);
            units.push(u);
        }
        let mu = sim.mean_volume();
        let true_z: Vec<Vec<f64>> = params
            .iter()
            .map(|p| {
                let x = sim.volume(p.state as usize, p.latent);
                let dx = diff(&x, &mu);
                units.iter().map(|u| dot(&dx, u)).collect()
            })
            .collect();
        let eigvals: Vec<f64> = (0..units.len())
            .map(|k| {
                let m = true_z.iter().map(|z| z[k]).sum::<f64>() / n as f64;
                true_z.iter().map(|z| (z[k] - m).powi(2)).sum::<f64>() / n as f64
            })
            .collect();
        let fft = Fft3::<f32>::new(N);
        Fixture {
            ds,
            mean: fft.forward_real_vec(&mu),
            noise: sim.noise_profile()[..N / 2 - 1].to_vec(),
            ones: vec![1.0; N * N * N],
            basis: units.iter().map(|u| fft.forward_real_vec(u)).collect(),
            eigvals,
            true_z,
            states: params.iter().map(|p| p.state).collect(),
            contrasts: params.iter().map(|p| p.ctf.contrast as f64).collect(),
        }
    })
}

fn context<'a>(f: &'a Fixture, be: &'a CpuBackend, batch_size: usize) -> Context<'a> {
    Context {
        ds: &f.ds,
        backend: be,
        mean: &f.mean,
        noise: &f.noise,
        volume_mask: &f.ones,
        dilated_mask: &f.ones,
        batch_size,
    }
}

/// The embedding with contrast correction, zdims 2 and 3 (shared by several tests).
fn embedded_with_contrast() -> &'static Embeddings {
    static E: OnceLock<Embeddings> = OnceLock::new();
    E.get_or_init(|| {
        let f = fixture();
        let be = CpuBackend::new();
        let t = std::time::Instant::now();
        let e = embed(
            &context(f, &be, 256),
            &f.basis,
            &f.eigvals,
            &[2, 3],
            true,
            false,
            &NoProgress,
        )
        .unwrap();
        println!(
            "embedding {} images, N = {N}: {:.2?}",
            f.ds.len(),
            t.elapsed()
        );
        e
    })
}

fn column(e: &Embedding, k: usize) -> Vec<f64> {
    (0..e.len()).map(|i| e.z(i).unwrap()[k] as f64).collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    sab / (saa * sbb).sqrt()
}

fn variance(a: &[f64]) -> f64 {
    let m = a.iter().sum::<f64>() / a.len() as f64;
    a.iter().map(|x| (x - m).powi(2)).sum::<f64>() / a.len() as f64
}

/// Lloyd's k-means from farthest-point initialisation (deterministic), several starts;
/// returns the labels of the lowest within-cluster sum of squares.
fn kmeans(points: &[Vec<f64>], k: usize) -> Vec<usize> {
    let d2 = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let mut best: Option<(f64, Vec<usize>)> = None;
    for start in [0, points.len() / 3, 2 * points.len() / 3, points.len() - 1] {
        let mut centers = vec![points[start].clone()];
        while centers.len() < k {
            let far = (0..points.len())
                .max_by(|&i, &j| {
                    let di = centers
                        .iter()
                        .map(|c| d2(&points[i], c))
                        .fold(f64::MAX, f64::min);
                    let dj = centers
                        .iter()
                        .map(|c| d2(&points[j], c))
                        .fold(f64::MAX, f64::min);
                    di.total_cmp(&dj)
                })
                .unwrap();
            centers.push(points[far].clone());
        }
        let mut labels = vec![0; points.len()];
        for _ in 0..100 {
            for (l, p) in labels.iter_mut().zip(points) {
                *l = (0..k)
                    .min_by(|&a, &b| d2(p, &centers[a]).total_cmp(&d2(p, &centers[b])))
                    .unwrap();
            }
            for (c, center) in centers.iter_mut().enumerate() {
                let members: Vec<&Vec<f64>> = points
                    .iter()
                    .zip(&labels)
                    .filter(|(_, &l)| l == c)
                    .map(|(p, _)| p)
                    .collect();
                if !members.is_empty() {
                    for (dim, v) in center.iter_mut().enumerate() {
                        *v = members.iter().map(|p| p[dim]).sum::<f64>() / members.len() as f64;
                    }
                }
            }
        }
        let wss: f64 = points
            .iter()
            .zip(&labels)
            .map(|(p, &l)| d2(p, &centers[l]))
            .sum();
        if best.as_ref().is_none_or(|(b, _)| wss < *b) {
            best = Some((wss, labels));
        }
    }
    best.unwrap().1
}

fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    recovar_core::stats::adjusted_rand_index(a, b).expect("two labelings of the same images")
}

#[test]
fn true_basis_separates_the_states_and_tracks_the_hinge() {
    let f = fixture();
    let e = embedded_with_contrast();
    println!("eigenvalues (true coordinate variances): {:.4?}", f.eigvals);
    let labels: Vec<usize> = f.states.iter().map(|&s| s as usize).collect();
    for (name, set) in [("reg", &e.regularized), ("noreg", &e.unregularized)] {
        let z2 = &set[0];
        assert_eq!(z2.zdim, 2);
        let points: Vec<Vec<f64>> = (0..z2.len())
            .map(|i| z2.z(i).unwrap().iter().map(|&v| v as f64).collect())
            .collect();
        let ari = adjusted_rand_index(&kmeans(&points, 3), &labels);
        println!("{name} zdim 2: k-means (3) vs true states, ARI {ari:.3}");
        assert!(ari > 0.85, "{name}: ARI {ari}");
        let z3 = &set[1];
        let corr: Vec<f64> = (0..3)
            .map(|k| {
                let truth: Vec<f64> = f.true_z.iter().map(|z| z[k]).collect();
                pearson(&column(z3, k), &truth)
            })
            .collect();
        println!("{name} zdim 3: correlation with the true coordinates {corr:.3?}");
        for (k, c) in corr.iter().enumerate() {
            assert!(*c > 0.85, "{name} coordinate {k}: correlation {c}");
        }
    }
}

#[test]
fn contrast_search_finds_the_simulated_contrasts() {
    let f = fixture();
    let e = embedded_with_contrast();
    for (name, set) in [("reg", &e.regularized), ("noreg", &e.unregularized)] {
        for emb in set {
            let est: Vec<f64> = emb.contrasts.iter().map(|&c| c as f64).collect();
            let r = pearson(&est, &f.contrasts);
            let mean = est.iter().sum::<f64>() / est.len() as f64;
            println!(
                "{name} zdim {}: contrast correlation {r:.3}, mean {mean:.3}, std {:.3} (true std {:.3})",
                emb.zdim,
                variance(&est).sqrt(),
                variance(&f.contrasts).sqrt()
            );
            assert!(r > 0.35, "{name} zdim {}: correlation {r}", emb.zdim);
            assert!((mean - 1.0).abs() < 0.15, "mean contrast {mean}");
            let grid = recovar_core::heterogeneity::embedding::contrast_grid(true);
            assert!(emb.contrasts.iter().all(|c| grid.contains(c)));
        }
    }
}

/// Cholesky of `p + 1e-6·tr(p)·I` succeeds for a PSD matrix.
fn is_psd(p: &[f32], z: usize) -> bool {
    let tr: f64 = (0..z).map(|i| p[i * z + i] as f64).sum();
    let mut a: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    for i in 0..z {
        a[i * z + i] += 1e-6 * tr.abs().max(1e-30);
    }
    for j in 0..z {
        let s = a[j * z + j] - (0..j).map(|t| a[j * z + t].powi(2)).sum::<f64>();
        if s.is_nan() || s <= 0.0 {
            return false;
        }
        a[j * z + j] = s.sqrt();
        for i in j + 1..z {
            a[i * z + j] = (a[i * z + j]
                - (0..j).map(|t| a[i * z + t] * a[j * z + t]).sum::<f64>())
                / a[j * z + j];
        }
    }
    true
}

#[test]
fn precisions_are_psd_and_the_prior_shrinks() {
    let e = embedded_with_contrast();
    for set in [&e.regularized, &e.unregularized] {
        for emb in set {
            let z = emb.zdim;
            for i in 0..emb.len() {
                let p = emb.precision(i).unwrap();
                for r in 0..z {
                    for c in 0..z {
                        assert_eq!(p[r * z + c], p[c * z + r]);
                    }
                }
                assert!(is_psd(p, z), "image {i}: {p:?}");
            }
        }
    }
    for (reg, noreg) in e.regularized.iter().zip(&e.unregularized) {
        for k in 0..reg.zdim {
            let (vr, vn) = (variance(&column(reg, k)), variance(&column(noreg, k)));
            println!(
                "zdim {} coordinate {k}: variance reg {vr:.4}, noreg {vn:.4}",
                reg.zdim
            );
            assert!(vn > vr, "zdim {} coordinate {k}: {vn} ≤ {vr}", reg.zdim);
        }
        // The regularized precision adds the prior: its diagonal is larger.
        let (pr, pn) = (reg.precision(0).unwrap(), noreg.precision(0).unwrap());
        assert!(pr[0] > 0.0 && pn[0] > 0.0);
    }
}

#[test]
fn results_do_not_depend_on_batch_size_or_threads() {
    let f = fixture();
    let one = CpuBackend::with_threads(1).unwrap();
    let two = CpuBackend::with_threads(2).unwrap();
    let run = |be: &CpuBackend, batch: usize| {
        embed(
            &context(f, be, batch),
            &f.basis,
            &f.eigvals,
            &[3, 1],
            true,
            true,
            &NoProgress,
        )
        .unwrap()
    };
    let a = run(&two, 1000);
    let b = run(&one, 7);
    assert!(
        a == b,
        "embeddings differ between batch 1000 / 2 threads and batch 7 / 1 thread"
    );
    assert_eq!(a.regularized[0].zdim, 3);
    assert_eq!(a.regularized[1].zdim, 1);
    // zdim 1 without the DC term still embeds.
    assert!(a.regularized[1].zs.iter().all(|v| v.is_finite()));
}

#[test]
fn without_contrast_correction_every_contrast_is_one() {
    let f = fixture();
    let be = CpuBackend::new();
    let e = embed(
        &context(f, &be, 256),
        &f.basis,
        &f.eigvals,
        &[2],
        false,
        false,
        &NoProgress,
    )
    .unwrap();
    assert!(e.regularized[0].contrasts.iter().all(|&c| c == 1.0));
    assert!(e.unregularized[0].contrasts.iter().all(|&c| c == 1.0));
}

#[test]
fn bad_arguments_are_errors() {
    let f = fixture();
    let be = CpuBackend::new();
    let ctx = context(f, &be, 64);
    let go = |basis: &[Vec<Complex<f32>>], vals: &[f64], zdims: &[usize]| {
        embed(&ctx, basis, vals, zdims, false, false, &NoProgress)
    };
    assert!(go(&f.basis, &f.eigvals, &[]).is_err(), "no zdim");
    assert!(go(&f.basis, &f.eigvals, &[0]).is_err(), "zdim 0");
    assert!(go(&f.basis, &f.eigvals, &[4]).is_err(), "zdim > basis");
    assert!(
        go(&f.basis, &f.eigvals[..2], &[2]).is_err(),
        "count mismatch"
    );
    assert!(
        go(&f.basis, &[1.0, f64::NAN, 1.0], &[2]).is_err(),
        "NaN eigenvalue"
    );
    assert!(
        go(&f.basis, &[1.0, -1.0, 1.0], &[2]).is_err(),
        "negative eigenvalue"
    );
    let mut short = f.basis.clone();
    short[1].truncate(10);
    assert!(go(&short, &f.eigvals, &[2]).is_err(), "wrong length");
    let mut nan = f.basis.clone();
    nan[0][5] = Complex::new(f32::NAN, 0.0);
    assert!(
        go(&nan, &f.eigvals, &[1]).is_err(),
        "non-finite eigenvector"
    );
    let bad_noise = vec![1.0; 3];
    let bad = Context {
        noise: &bad_noise,
        ..context(f, &be, 64)
    };
    assert!(embed(&bad, &f.basis, &f.eigvals, &[1], false, false, &NoProgress).is_err());
    // Cancellation.
    let stop = |_: &str, _: u64, _: u64| false;
    assert!(embed(&ctx, &f.basis, &f.eigvals, &[1], false, false, &stop).is_err());
}

/// Timing for the report: 1000 images of 64 px, zdims 1, 2, 4, 10, 20, contrast correction.
/// `cargo test --release --test embedding -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing_1000_images_64px() {
    let d = 64;
    let be = CpuBackend::new();
    let opts = SimulationOptions {
        image_size: d,
        n_images: 1000,
        ..Default::default()
    };
    let sim = Simulator::new(&opts, &be).unwrap();
    let params = sim.params();
    let n = params.len();
    let mut images = vec![0.0f32; n * d * d];
    sim.images(0..n, &mut images).unwrap();
    let rots: Vec<[f32; 9]> = params
        .iter()
        .map(|p| p.rotation.map(|v| v as f32))
        .collect();
    let shifts: Vec<[f32; 2]> = params
        .iter()
        .map(|p| p.shift_px.map(|v| v as f32))
        .collect();
    let ctf_rows: Vec<[f64; 9]> = params
        .iter()
        .map(|p| {
            let c = &p.ctf;
            [
                d as f64,
                sim.voxel_size(),
                c.defocus_u as f64,
                c.defocus_v as f64,
                c.defocus_angle_deg as f64,
                300.0,
                2.7,
                0.1,
                0.0,
            ]
        })
        .collect();
    let ds = Dataset::from_arrays(images, n, d, &rots, &shifts, &ctf_rows, 0).unwrap();
    let fft = Fft3::<f32>::new(d);
    let mean = fft.forward_real_vec(&sim.mean_volume());
    let mut rng = recovar_core::rng::Rng::new(1);
    let basis: Vec<Vec<Complex<f32>>> = (0..20)
        .map(|_| {
            let v: Vec<f32> = (0..d * d * d).map(|_| rng.normal() as f32).collect();
            fft.forward_real_vec(&v)
        })
        .collect();
    let eigvals: Vec<f64> = (0..20).map(|k| 1.0 / (k + 1) as f64).collect();
    let noise = sim.noise_profile()[..d / 2 - 1].to_vec();
    let ones = vec![1.0f32; d * d * d];
    let ctx = Context {
        ds: &ds,
        backend: &be,
        mean: &mean,
        noise: &noise,
        volume_mask: &ones,
        dilated_mask: &ones,
        batch_size: 256,
    };
    let t = std::time::Instant::now();
    let e = embed(
        &ctx,
        &basis,
        &eigvals,
        &[1, 2, 4, 10, 20],
        true,
        false,
        &NoProgress,
    )
    .unwrap();
    println!(
        "embed 1000 × {d}² px, zdims 1,2,4,10,20, contrast on, {} threads: {:.2?}",
        be.threads(),
        t.elapsed()
    );
    assert_eq!(e.regularized.len(), 5);
}
