//! The mean stage against ground truth: simulated data (FSC against the true mean, where the
//! half-map FSC says the resolution is), RECOVAR's own test set (FSC-AUC next to cryoDRGN's
//! backprojection of the same images), cryoDRGN's toy data, the sign check, determinism.

mod common;

use num_complex::Complex;
use recovar_core::backend::CpuBackend;
use recovar_core::dataset::{Dataset, DatasetOptions, Uninvert};
use recovar_core::fourier::{fsc, fsc_crossing, Fft3};
use recovar_core::io::mrc;
use recovar_core::progress::NoProgress;
use recovar_core::reconstruct::mean::{estimate_mean, MeanFn};
use recovar_core::reconstruct::noise::initial_noise;
use recovar_core::simulate::{write_test_dataset, SimulationOptions};

fn spectrum(real: &[f32], n: usize) -> Vec<Complex<f32>> {
    Fft3::<f32>::new(n).forward_real_vec(real)
}

/// CryoBench-style area under |FSC| (shells 0..N/2−2, each 1/N wide in cycles/pixel).
fn fsc_auc(curve: &[f64], n: usize) -> f64 {
    curve.iter().map(|v| v.abs()).sum::<f64>() / n as f64
}

/// Simulate into a temp dir and open it.
fn simulated(d: usize, n: usize, seed: u64) -> (tempfile::TempDir, Dataset) {
    simulated_with_noise(d, n, seed, 0.1)
}

fn simulated_with_noise(
    d: usize,
    n: usize,
    seed: u64,
    noise_level: f64,
) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    let opts = SimulationOptions {
        image_size: d,
        n_images: n,
        seed,
        noise_level,
        ..Default::default()
    };
    write_test_dataset(dir.path(), &opts, &CpuBackend::new(), &NoProgress).unwrap();
    let ds = Dataset::open(&DatasetOptions {
        particles: dir.path().join(format!("particles.{d}.mrcs")),
        poses: Some(dir.path().join("poses.pkl")),
        ctf: Some(dir.path().join("ctf.pkl")),
        ..Default::default()
    })
    .unwrap();
    (dir, ds)
}

#[test]
fn simulated_mean_matches_ground_truth_where_the_half_maps_say() {
    // Noisy enough (SNR 0.01) that the FSC falls below 0.143 inside the box.
    let d = 64;
    let (dir, mut ds) = simulated_with_noise(d, 3000, 1, 10.0);
    let be = CpuBackend::new();
    let init = initial_noise(&ds, &be, 10_000, 0, 256, &NoProgress).unwrap();
    let mean = estimate_mean(
        &mut ds,
        &be,
        init.scalar,
        MeanFn::Triangular,
        256,
        &NoProgress,
    )
    .unwrap();
    assert!(!mean.flipped, "simulated density is positive");
    let gt = mrc::read_volume(dir.path().join("gt_mean.mrc")).unwrap();
    let truth = fsc(&mean.combined.spectrum, &spectrum(&gt.data, d), d, false).unwrap();
    let half = &mean.fsc;
    let at_half = fsc_crossing(half, 0.143);
    let at_truth = fsc_crossing(&truth, 0.5);
    println!("half-map FSC: {half:.3?}");
    println!("FSC vs truth: {truth:.3?}");
    println!(
        "half-map 0.143 crossing {at_half:?}, truth 0.5 crossing {at_truth:?}, AUC vs truth {:.4}",
        fsc_auc(&truth, d)
    );
    match (at_half, at_truth) {
        (Some(a), Some(b)) => assert!(
            (a - b).abs() <= 1.0,
            "half-map says shell {a}, truth says {b}"
        ),
        // Both never crossing (signal to Nyquist) is also agreement.
        (None, None) => {}
        (a, b) => panic!("half-map crossing {a:?} vs truth crossing {b:?}"),
    }
    assert!(
        at_half.is_some(),
        "the test needs a crossing inside the box: {half:?}"
    );
    assert!(truth[1] > 0.95, "{truth:?}");
}

#[test]
fn sign_check_flips_inverted_data() {
    let (_dir, mut ds) = simulated(32, 600, 2);
    let be = CpuBackend::new();
    ds.set_data_sign(-1.0);
    let init = initial_noise(&ds, &be, 10_000, 0, 128, &NoProgress).unwrap();
    let mean = estimate_mean(
        &mut ds,
        &be,
        init.scalar,
        MeanFn::Triangular,
        128,
        &NoProgress,
    )
    .unwrap();
    assert!(mean.flipped);
    assert_eq!(ds.data_sign(), 1.0);
    assert!(recovar_core::reconstruct::mean::sign_statistic(&mean.combined.real, 32) > 0.0);

    // With --uninvert-data false the data stay as they are (only a warning).
    let dir = tempfile::tempdir().unwrap();
    let opts = SimulationOptions {
        image_size: 32,
        n_images: 300,
        seed: 3,
        ..Default::default()
    };
    write_test_dataset(dir.path(), &opts, &be, &NoProgress).unwrap();
    let mut fixed = Dataset::open(&DatasetOptions {
        particles: dir.path().join("particles.32.mrcs"),
        poses: Some(dir.path().join("poses.pkl")),
        ctf: Some(dir.path().join("ctf.pkl")),
        uninvert: Uninvert::False,
        ..Default::default()
    })
    .unwrap();
    fixed.set_data_sign(-1.0);
    let m = estimate_mean(
        &mut fixed,
        &be,
        init.scalar,
        MeanFn::Triangular,
        128,
        &NoProgress,
    )
    .unwrap();
    assert!(!m.flipped);
    assert_eq!(fixed.data_sign(), -1.0);
}

#[test]
fn mean_does_not_depend_on_batch_size() {
    let (_dir, mut ds) = simulated(32, 200, 4);
    let be = CpuBackend::new();
    let a = estimate_mean(&mut ds, &be, 1.0, MeanFn::TriangularReg, 7, &NoProgress).unwrap();
    let b = estimate_mean(&mut ds, &be, 1.0, MeanFn::TriangularReg, 200, &NoProgress).unwrap();
    assert_eq!(a.combined.real, b.combined.real);
    assert_eq!(a.fsc, b.fsc);
}

/// A cryoDRGN-style plain backprojection: trilinear on the N grid (no oversampling, no
/// gridding correction) and cryoDRGN's regularisation `counts + mean(counts)` (rescaled to
/// keep the mean), as its `backproject_voxel` does.
fn plain_backprojection(ds: &Dataset, regularise: bool) -> Vec<Complex<f32>> {
    use recovar_core::backend::Backend;
    use recovar_core::forward::{Interp, SliceGeometry};
    let d = ds.box_size();
    let n = ds.len();
    let npix = d * d;
    let be = CpuBackend::new();
    let mut real = vec![0.0f32; n * npix];
    ds.read_range(0..n, &mut real).unwrap();
    let mut spec = vec![Complex::new(0.0f32, 0.0); n * npix];
    be.images_to_spectra(&real, d, ds.translations(), &mut spec)
        .unwrap();
    let mut c = vec![0.0f32; n * npix];
    be.ctf(ds.ctf().unwrap(), d, ds.voxel_size(), &mut c)
        .unwrap();
    for (s, cv) in spec.iter_mut().zip(&c) {
        *s *= *cv;
    }
    let c2: Vec<f32> = c.iter().map(|v| v * v).collect();
    let geom = SliceGeometry::new(d, d).unwrap();
    let mut b = vec![Complex::new(0.0f64, 0.0); d * d * d];
    let mut a = vec![0.0f64; d * d * d];
    let rots = ds.rotations().unwrap();
    be.backproject(&spec, &geom, Interp::Trilinear, rots, &mut b)
        .unwrap();
    be.backproject_real(&c2, &geom, Interp::Trilinear, rots, &mut a)
        .unwrap();
    let mean_a = a.iter().sum::<f64>() / a.len() as f64;
    b.iter()
        .zip(&a)
        .map(|(bv, &av)| {
            let den = if regularise {
                (if av == 0.0 { 1.0 } else { av } + mean_a) * 0.5
            } else {
                av
            };
            if den > 1e-6 * mean_a {
                Complex::new((bv.re / den) as f32, (bv.im / den) as f32)
            } else {
                Complex::new(0.0, 0.0)
            }
        })
        .collect()
}

#[test]
fn simulated_mean_beats_a_plain_backprojection() {
    let d = 32;
    let (dir, mut ds) = simulated(d, 2000, 5);
    let be = CpuBackend::new();
    let init = initial_noise(&ds, &be, 10_000, 0, 256, &NoProgress).unwrap();
    let mean = estimate_mean(
        &mut ds,
        &be,
        init.scalar,
        MeanFn::Triangular,
        256,
        &NoProgress,
    )
    .unwrap();
    let gt = spectrum(
        &mrc::read_volume(dir.path().join("gt_mean.mrc"))
            .unwrap()
            .data,
        d,
    );
    let ours = fsc_auc(&fsc(&mean.combined.spectrum, &gt, d, false).unwrap(), d);
    let plain = fsc_auc(
        &fsc(&plain_backprojection(&ds, true), &gt, d, false).unwrap(),
        d,
    );
    println!("simulated 32 px: FSC-AUC vs truth: ours {ours:.4}, plain backprojection {plain:.4}");
    assert!(ours >= plain, "ours {ours} < plain {plain}");
}

#[test]
fn recovar_test_set_mean_compared_with_cryodrgns_backprojection() {
    // RECOVAR's simulator projected its volumes with trilinear interpolation on the N grid,
    // so its images carry that interpolation's error at high frequency. A backprojection
    // that inverts exactly that operator (N grid, trilinear: what cryoDRGN does) fits those
    // images best; our mean models continuous projections (2× oversampled grid, gridding
    // correction) and is within 0.01 of it. On data simulated without that shortcut (our
    // simulator, and real particles) the oversampled mean is the better one
    // (`simulated_mean_beats_a_plain_backprojection`).
    let dir = common::data().join("recovar_small");
    let mut ds = Dataset::open(&DatasetOptions {
        particles: dir.join("particles.64.mrcs"),
        poses: Some(dir.join("poses.pkl")),
        ctf: Some(dir.join("ctf.pkl")),
        ..Default::default()
    })
    .unwrap();
    let n = 64;
    let be = CpuBackend::new();
    let init = initial_noise(&ds, &be, 10_000, 0, 256, &NoProgress).unwrap();
    let mean = estimate_mean(
        &mut ds,
        &be,
        init.scalar,
        MeanFn::Triangular,
        256,
        &NoProgress,
    )
    .unwrap();
    let gt = spectrum(&mrc::read_volume(dir.join("gt_mean.mrc")).unwrap().data, n);
    let ours = fsc_auc(&fsc(&mean.combined.spectrum, &gt, n, false).unwrap(), n);
    let bp = mrc::read_volume(dir.join("cryodrgn_backproject/backproject.mrc")).unwrap();
    let theirs = fsc_auc(&fsc(&spectrum(&bp.data, n), &gt, n, false).unwrap(), n);
    let n_grid = fsc_auc(
        &fsc(&plain_backprojection(&ds, false), &gt, n, false).unwrap(),
        n,
    );
    println!(
        "recovar_small: FSC-AUC vs gt_mean: ours {ours:.4}, cryoDRGN backprojection {theirs:.4}, \
         our N-grid trilinear backprojection {n_grid:.4} (max {:.4})",
        31.0 / 64.0
    );
    assert!(
        (theirs - 0.465).abs() < 0.01,
        "cryoDRGN's AUC should reproduce its README value 0.465, got {theirs}"
    );
    assert!(
        (n_grid - theirs).abs() < 0.005,
        "the N-grid backprojection explains cryoDRGN's edge: {n_grid} vs {theirs}"
    );
    assert!(ours > theirs - 0.012, "ours {ours} vs cryoDRGN {theirs}");
}

/// Pearson correlation of two volumes.
fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64 - ma, *y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn toy_projections_mean_compared_with_cryodrgns_backprojection() {
    // cryoDRGN's toy data: 1000 projections (30 px) of toymodel_small_nocenter.mrc with a
    // flat CTF; cryoDRGN's backproject_voxel of them correlates 0.955 with that model.
    let fx = common::fixtures();
    let mut ds = Dataset::open(&DatasetOptions {
        particles: fx.join("toy_projections.mrcs"),
        poses: Some(fx.join("toy_angles.pkl")),
        ctf: Some(fx.join("test_ctf.pkl")),
        ..Default::default()
    })
    .unwrap();
    let be = CpuBackend::new();
    let init = initial_noise(&ds, &be, 10_000, 0, 256, &NoProgress).unwrap();
    let mean = estimate_mean(
        &mut ds,
        &be,
        init.scalar,
        MeanFn::Triangular,
        256,
        &NoProgress,
    )
    .unwrap();
    let model = mrc::read_volume(fx.join("toymodel_small_nocenter.mrc")).unwrap();
    let oracle =
        mrc::read_volume(common::oracles().join("backproject_toy_ctf/backproject.mrc")).unwrap();
    let ours = pearson(&mean.combined.real, &model.data);
    let theirs = pearson(&oracle.data, &model.data);
    let between = pearson(&mean.combined.real, &oracle.data);
    println!("toy: correlation with the model: ours {ours:.4}, cryoDRGN {theirs:.4}; ours vs cryoDRGN {between:.4}; sign flipped: {}", mean.flipped);
    assert!((theirs - 0.955).abs() < 0.005, "{theirs}");
    assert!(ours >= theirs, "ours {ours} < cryoDRGN {theirs}");
}
