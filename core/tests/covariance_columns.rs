//! The variance estimate and the covariance columns (algorithms.md §5.2–§5.5, §2.5) on
//! simulated data (N = 32, 1500 images, default noise), against the ground truth computed
//! from the simulator's own volumes: the state and hinge latent drawn for every image give
//! its volume, whose spectra give the true per-voxel variance and the true columns
//! `Σ[:, ξ] = mean_i (x_i − x̄)·conj(x_i(ξ) − x̄(ξ))`.

use std::sync::OnceLock;

use num_complex::Complex;
use recovar_core::backend::CpuBackend;
use recovar_core::dataset::{Dataset, DatasetOptions};
use recovar_core::fourier::{shell_index_3d, Fft3};
use recovar_core::heterogeneity::columns::{
    estimate_columns, estimate_columns_with, pick_columns, Columns,
};
use recovar_core::heterogeneity::variance::{
    bound_noise_by_variance, estimate_variance, VarianceEstimate,
};
use recovar_core::heterogeneity::{Context, CovarianceOptions};
use recovar_core::progress::NoProgress;
use recovar_core::reconstruct::mask::{make_masks, MaskOption, MaskSettings, Masks};
use recovar_core::reconstruct::mean::{estimate_mean, MeanEstimate, MeanFn};
use recovar_core::reconstruct::noise::{estimate_noise, initial_noise, NoiseModel};
use recovar_core::simulate::{write_test_dataset, SimulationOptions, Simulator};

const N: usize = 32;
const IMAGES: usize = 1500;
const BATCH: usize = 128;

/// Everything the tests share, computed once.
struct Setup {
    _dir: tempfile::TempDir,
    ds: Dataset,
    mean: MeanEstimate,
    masks: Masks,
    noise: Vec<f64>,
    var: VarianceEstimate,
    /// The first [`COLUMNS`] picks of §5.3.
    picked: Vec<[i32; 3]>,
    truth: Truth,
}

/// Columns estimated against the truth.
const COLUMNS: usize = 40;

/// Ground-truth spectra of every image's volume at the voxels the tests look at.
struct Truth {
    /// Voxel indices (centred N³ spectrum): the sphere |k| < N/4.
    voxels: Vec<usize>,
    /// Voxel indices of the picked frequencies.
    picked: Vec<usize>,
    /// `x_i(ξ)` for each image i (rows) and picked frequency (columns).
    at_picked: Vec<Vec<Complex<f64>>>,
    /// `x_i(k)` for each image i (rows) and voxel (columns), f64.
    spectra: Vec<Vec<Complex<f64>>>,
    /// Per-voxel variance across images over the whole grid.
    variance: Vec<f64>,
    /// Mean spectrum over the whole grid.
    mean: Vec<Complex<f64>>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let be = CpuBackend::new();
        let dir = tempfile::tempdir().unwrap();
        let opts = SimulationOptions {
            image_size: N,
            n_images: IMAGES,
            seed: 21,
            ..Default::default()
        };
        write_test_dataset(dir.path(), &opts, &be, &NoProgress).unwrap();
        let mut ds = Dataset::open(&DatasetOptions {
            particles: dir.path().join(format!("particles.{N}.mrcs")),
            poses: Some(dir.path().join("poses.pkl")),
            ctf: Some(dir.path().join("ctf.pkl")),
            ..Default::default()
        })
        .unwrap();
        let init = initial_noise(&ds, &be, 10_000, 0, BATCH, &NoProgress).unwrap();
        let mean = estimate_mean(
            &mut ds,
            &be,
            init.scalar,
            MeanFn::Triangular,
            BATCH,
            &NoProgress,
        )
        .unwrap();
        let halfmaps = (&mean.halves_reg[0].real[..], &mean.halves_reg[1].real[..]);
        let masks = make_masks(
            &MaskOption::FromHalfmaps,
            N,
            &MaskSettings::default(),
            Some(halfmaps),
        )
        .unwrap();
        let noise = estimate_noise(
            &ds,
            &be,
            &mean.combined.spectrum,
            &masks.dilated,
            NoiseModel::Radial,
            false,
            BATCH,
            &NoProgress,
        )
        .unwrap()
        .used;
        let var = {
            let ctx = Context {
                ds: &ds,
                backend: &be,
                mean: &mean.combined.spectrum,
                noise: &noise,
                volume_mask: &masks.mask,
                dilated_mask: &masks.dilated,
                batch_size: BATCH,
            };
            estimate_variance(&ctx, &NoProgress).unwrap()
        };
        let picked = pick_columns(
            &mean.lhs,
            &var.variance,
            N,
            &CovarianceOptions {
                n_cols: COLUMNS,
                ..Default::default()
            },
        )
        .unwrap();
        let truth = truth(&opts, &be, &picked);
        Setup {
            _dir: dir,
            ds,
            mean,
            masks,
            noise,
            var,
            picked,
            truth,
        }
    })
}

fn truth(opts: &SimulationOptions, be: &CpuBackend, picked: &[[i32; 3]]) -> Truth {
    let sim = Simulator::new(opts, be).unwrap();
    let fft = Fft3::<f32>::new(N);
    let n3 = N * N * N;
    let h = (N / 2) as i64;
    let voxels: Vec<usize> = (0..n3)
        .filter(|&i| {
            let (x, y, z) = (
                (i % N) as i64 - h,
                ((i / N) % N) as i64 - h,
                (i / (N * N)) as i64 - h,
            );
            ((x * x + y * y + z * z) as f64) < (N as f64 / 4.0).powi(2)
        })
        .collect();
    let picked: Vec<usize> = picked.iter().map(|&f| voxel_of(f)).collect();
    let mut sum = vec![Complex::new(0.0f64, 0.0); n3];
    let mut sq = vec![0.0f64; n3];
    let mut spectra = Vec::with_capacity(IMAGES);
    let mut at_picked = Vec::with_capacity(IMAGES);
    for p in sim.params() {
        let vol = sim.volume(p.state as usize, p.latent);
        let spec = fft.forward_real_vec(&vol);
        for (i, v) in spec.iter().enumerate() {
            let v = Complex::new(v.re as f64, v.im as f64);
            sum[i] += v;
            sq[i] += v.norm_sqr();
        }
        at_picked.push(
            picked
                .iter()
                .map(|&i| Complex::new(spec[i].re as f64, spec[i].im as f64))
                .collect(),
        );
        spectra.push(
            voxels
                .iter()
                .map(|&i| Complex::new(spec[i].re as f64, spec[i].im as f64))
                .collect(),
        );
    }
    let m = IMAGES as f64;
    let mean: Vec<Complex<f64>> = sum.iter().map(|v| v / m).collect();
    let variance = sq
        .iter()
        .zip(&mean)
        .map(|(s, mu)| s / m - mu.norm_sqr())
        .collect();
    Truth {
        voxels,
        picked,
        at_picked,
        spectra,
        variance,
        mean,
    }
}

fn context<'a>(s: &'a Setup, be: &'a CpuBackend) -> Context<'a> {
    Context {
        ds: &s.ds,
        backend: be,
        mean: &s.mean.combined.spectrum,
        noise: &s.noise,
        volume_mask: &s.masks.mask,
        dilated_mask: &s.masks.dilated,
        batch_size: BATCH,
    }
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma) * (x - ma);
        bb += (y - mb) * (y - mb);
    }
    ab / (aa * bb).sqrt()
}

fn voxel_of(f: [i32; 3]) -> usize {
    let h = (N / 2) as i32;
    (((f[2] + h) as usize * N) + (f[1] + h) as usize) * N + (f[0] + h) as usize
}

#[test]
fn variance_is_largest_where_the_heterogeneity_is() {
    let s = setup();
    let t = &s.truth;
    let est: Vec<f64> = t.voxels.iter().map(|&i| s.var.variance[i] as f64).collect();
    let tru: Vec<f64> = t.voxels.iter().map(|&i| t.variance[i]).collect();
    let r = pearson(&est, &tru);
    // Also on a log scale (the variance spans decades across shells).
    let lg = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.max(1e-3).ln()).collect() };
    let rlog = pearson(&lg(&est), &lg(&tru));
    // Within shells: does the estimate find *where* in a shell the variance is?
    let shells = shell_index_3d(N);
    let mut within = Vec::new();
    for r in 2..N / 4 {
        let idx: Vec<usize> = t
            .voxels
            .iter()
            .copied()
            .filter(|&i| shells[i] as usize == r)
            .collect();
        let a: Vec<f64> = idx.iter().map(|&i| s.var.variance[i] as f64).collect();
        let b: Vec<f64> = idx.iter().map(|&i| t.variance[i]).collect();
        within.push(pearson(&a, &b));
    }
    println!(
        "variance vs truth over |k| < N/4 ({} voxels): pearson {r:.3}, log-pearson {rlog:.3}; \
         within shells 2..{}: {within:.2?}",
        est.len(),
        N / 4
    );
    println!("variance FSC {:.3?}", s.var.fsc);
    println!("variance prior {:.3?}", s.var.prior);
    assert!(r > 0.8, "correlation {r}");
    assert!(rlog > 0.6, "log correlation {rlog}");
    let mean_within = within.iter().sum::<f64>() / within.len() as f64;
    assert!(mean_within > 0.3, "within-shell correlations {within:?}");
    assert!(s.var.variance.iter().all(|v| v.is_finite()));
    assert!(s
        .var
        .noise_p_variance
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0));
}

/// The score of §5.3 as the test understands it (RECOVAR's `downsample_lhs` times variance).
fn scores(s: &Setup) -> Vec<f64> {
    let nv = 2 * N;
    let lhs = &s.mean.lhs;
    (0..N * N * N)
        .map(|i| {
            let (x, y, z) = (i % N, (i / N) % N, i / (N * N));
            let mut sum = 0.0f64;
            for dz in -1i64..=1 {
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (zz, yy, xx) =
                            (2 * z as i64 + dz, 2 * y as i64 + dy, 2 * x as i64 + dx);
                        if [zz, yy, xx].iter().all(|&v| v >= 0 && v < nv as i64) {
                            sum +=
                                lhs[((zz as usize * nv) + yy as usize) * nv + xx as usize] as f64;
                        }
                    }
                }
            }
            (sum / 27.0).max(0.0) * 8.0 * s.var.variance[i] as f64
        })
        .collect()
}

#[test]
fn picked_columns_follow_the_rules() {
    let s = setup();
    let opts = CovarianceOptions {
        n_cols: 60,
        ..Default::default()
    };
    let picked = pick_columns(&s.mean.lhs, &s.var.variance, N, &opts).unwrap();
    assert_eq!(picked.len(), 60);
    let h = (N / 2) as i32;
    for (a, p) in picked.iter().enumerate() {
        assert!(p[0] >= 0, "{p:?}");
        assert!(p.iter().all(|&k| k > -h && k < h));
        let r = ((p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) as f64).sqrt();
        assert!(r < opts.max_column_freq);
        for q in &picked[..a] {
            assert_ne!(p, q);
            for sgn in [1, -1] {
                let d2: i32 = (0..3).map(|k| (p[k] - sgn * q[k]).pow(2)).sum();
                assert!(
                    (d2 as f64).sqrt() > opts.avoid_radius,
                    "{p:?} too close to {q:?} (sign {sgn})"
                );
            }
        }
    }
    // The first pick is the best-scoring frequency (or its partner).
    let sc = scores(s);
    let best = (0..sc.len())
        .filter(|&i| {
            let f = [
                (i % N) as i32 - h,
                ((i / N) % N) as i32 - h,
                (i / (N * N)) as i32 - h,
            ];
            f.iter().all(|&k| k > -h)
        })
        .max_by(|&a, &b| sc[a].total_cmp(&sc[b]).then(b.cmp(&a)))
        .unwrap();
    let f0 = picked[0];
    let neg = [-f0[0], -f0[1], -f0[2]];
    assert!(
        voxel_of(f0) == best || voxel_of(neg) == best,
        "first pick {f0:?}, best voxel {best}"
    );
    // Scores of the picks are mostly decreasing (greedy, exclusion aside): the first ten
    // picks all score above the median pick.
    let pick_scores: Vec<f64> = picked.iter().map(|&f| sc[voxel_of(f)]).collect();
    let mut sorted = pick_scores.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    assert!(pick_scores[..10].iter().all(|&v| v >= median));
    println!("picked (first 12): {:?}", &picked[..12]);
}

/// True column Σ[:, ξ_j] (picked frequency `j`) at the test voxels.
fn true_column(t: &Truth, j: usize) -> Vec<Complex<f64>> {
    let xi = t.picked[j];
    let m = t.spectra.len() as f64;
    let mut out = vec![Complex::new(0.0, 0.0); t.voxels.len()];
    for (sp, at) in t.spectra.iter().zip(&t.at_picked) {
        let w = (at[j] - t.mean[xi]).conj();
        for (k, o) in out.iter_mut().enumerate() {
            *o += (sp[k] - t.mean[t.voxels[k]]) * w;
        }
    }
    out.iter().map(|v| v / m).collect()
}

fn column_correlation(est: &[Complex<f32>], truth: &[Complex<f64>], voxels: &[usize]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (k, &v) in voxels.iter().enumerate() {
        let a = Complex::new(est[v].re as f64, est[v].im as f64);
        let b = truth[k];
        ab += (a.conj() * b).re;
        aa += a.norm_sqr();
        bb += b.norm_sqr();
    }
    ab / (aa * bb).sqrt()
}

#[test]
fn columns_match_the_true_covariance() {
    let s = setup();
    let be = CpuBackend::new();
    let ctx = context(s, &be);
    let opts = CovarianceOptions::default();
    let low = &s.picked;
    let t0 = std::time::Instant::now();
    let cols = estimate_columns(&ctx, &s.mean.prior, low, &opts, 1 << 40, &NoProgress).unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    let mut corr: Vec<f64> = cols
        .columns
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let t = true_column(&s.truth, j);
            column_correlation(c, &t, &s.truth.voxels)
        })
        .collect();
    println!(
        "{} columns in {elapsed:.2} s (release, this machine); correlation with the truth over |k| < N/4: {corr:.2?}",
        low.len()
    );
    println!("column FSC (first): {:.2?}", cols.fscs[0]);
    corr.sort_by(|a, b| a.total_cmp(b));
    let median = corr[corr.len() / 2];
    println!("median correlation {median:.3}, worst {:.3}", corr[0]);
    assert_eq!(low.len(), COLUMNS);
    assert!(median > 0.7, "median correlation {median}");
    assert!(cols.fscs.iter().all(|f| f.len() == N / 2 - 1));

    // Early stopping of the fixed point against RECOVAR's full 20 steps.
    let few = &low[..6];
    let full =
        estimate_columns_with(&ctx, &s.mean.prior, few, &opts, 1 << 40, 0.0, &NoProgress).unwrap();
    let mut worst = 0.0f64;
    for (a, b) in full.columns.iter().zip(&cols.columns) {
        let scale = a.iter().map(|v| v.norm() as f64).fold(0.0, f64::max);
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).norm() as f64)
            .fold(0.0, f64::max);
        worst = worst.max(d / scale);
    }
    println!("early stop vs 20 iterations: largest difference {worst:.2e} of the column's peak");
    assert!(worst < 1e-4, "{worst}");
}

fn same_bits(a: &Columns, b: &Columns) {
    assert_eq!(a.freqs, b.freqs);
    assert_eq!(a.fscs, b.fscs);
    for (x, y) in a.columns.iter().zip(&b.columns) {
        assert!(x
            .iter()
            .zip(y)
            .all(|(u, v)| u.re.to_bits() == v.re.to_bits() && u.im.to_bits() == v.im.to_bits()));
    }
}

#[test]
fn columns_do_not_depend_on_batches_or_threads() {
    let s = setup();
    let be = CpuBackend::new();
    let opts = CovarianceOptions {
        n_cols: 5,
        ..Default::default()
    };
    let picked = pick_columns(&s.mean.lhs, &s.var.variance, N, &opts).unwrap();
    let ctx = context(s, &be);
    let one_pass =
        estimate_columns(&ctx, &s.mean.prior, &picked, &opts, 1 << 40, &NoProgress).unwrap();
    // One column per pass, and other image batches.
    let mut ctx2 = context(s, &be);
    ctx2.batch_size = 37;
    let per_col = recovar_core::heterogeneity::columns::column_accumulator_bytes(N);
    let by_one =
        estimate_columns(&ctx2, &s.mean.prior, &picked, &opts, per_col, &NoProgress).unwrap();
    same_bits(&one_pass, &by_one);
    // A one-thread backend in a one-thread pool.
    let be1 = CpuBackend::with_threads(1).unwrap();
    let ctx1 = context(s, &be1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let single = pool
        .install(|| {
            estimate_columns(
                &ctx1,
                &s.mean.prior,
                &picked,
                &opts,
                2 * per_col,
                &NoProgress,
            )
        })
        .unwrap();
    same_bits(&one_pass, &single);
}

#[test]
fn noise_bound_only_lowers_the_noise() {
    let s = setup();
    let n3 = N * N * N;
    assert_eq!(s.var.noise_p_variance.len(), n3);
    let shells = shell_index_3d(N);
    let p5 = |r: usize| -> f64 {
        let mut v: Vec<f64> = (0..n3)
            .filter(|&i| shells[i] as usize == r)
            .map(|i| s.var.noise_p_variance[i] as f64)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let pos = 0.05 * (v.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(v.len() - 1);
        v[lo] + (pos - lo as f64) * (v[hi] - v[lo])
    };
    let bounded = bound_noise_by_variance(&s.noise, &s.var, N);
    assert_eq!(bounded.len(), s.noise.len());
    for (r, (b, o)) in bounded.iter().zip(&s.noise).enumerate() {
        assert!(b <= o, "shell {r}: {b} > {o}");
        assert!((b - o.min(p5(r).max(0.0))).abs() <= 1e-9 * o.abs());
    }
    println!("noise {:.3?}\nbounded {:.3?}", s.noise, bounded);
    // An inflated profile is capped at the percentile in every bounded shell.
    let high: Vec<f64> = s.noise.iter().map(|v| v * 1e3).collect();
    let capped = bound_noise_by_variance(&high, &s.var, N);
    for r in 0..(N / 2 - 1).min(32) {
        assert!((capped[r] - p5(r).max(0.0)).abs() <= 1e-9 * capped[r].abs().max(1e-30));
        assert!(capped[r] < high[r]);
    }
    // Wrong sizes leave it alone.
    assert_eq!(bound_noise_by_variance(&s.noise, &s.var, 16), s.noise);
}
