//! Local resolution and local filtering (algorithms.md §7.5, §15): synthetic half-map pairs
//! with known answers.

use recovar_core::fourier::{centered_freq, Fft3};
use recovar_core::progress::NoProgress;
use recovar_core::reconstruct::locres::{local_resolution, LocalResolution, LocresOptions};
use recovar_core::rng::Rng;
use recovar_core::Error;

/// White Gaussian noise, `n³`.
fn noise(n: usize, sigma: f64, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * n * n)
        .map(|_| (sigma * rng.normal()) as f32)
        .collect()
}

/// Multiply the spectrum of `vol` by `f(|k|)` (`|k|` in big-box shells, exact radius).
fn fourier_filter(vol: &[f32], n: usize, f: impl Fn(f64) -> f64) -> Vec<f32> {
    let fft = Fft3::<f32>::new(n);
    let mut spec = fft.forward_real_vec(vol);
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let k = [
                    centered_freq(x, n),
                    centered_freq(y, n),
                    centered_freq(z, n),
                ];
                let r = ((k[0] * k[0] + k[1] * k[1] + k[2] * k[2]) as f64).sqrt();
                spec[(z * n + y) * n + x] *= f(r) as f32;
            }
        }
    }
    fft.inverse_real_vec(&spec)
}

/// Hard low-pass at `resolution` Å (keeps `|k| ≤ n·voxel/resolution`).
fn low_pass(vol: &[f32], n: usize, voxel: f64, resolution: f64) -> Vec<f32> {
    let cut = n as f64 * voxel / resolution;
    fourier_filter(vol, n, |r| if r <= cut { 1.0 } else { 0.0 })
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Relative RMS difference of `a` against `b` over the voxels where `keep` holds.
fn rel_rms(a: &[f32], b: &[f32], keep: impl Fn(usize) -> bool) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if keep(i) {
            num += (x as f64 - y as f64).powi(2);
            den += (y as f64).powi(2);
        }
    }
    (num / den).sqrt()
}

/// Small windows so that the tests stay fast: 2 Å voxels, points every 6 voxels,
/// maskrad 4 + edge 4 voxels (R = 8, sub-box M = 48).
fn small_opts() -> LocresOptions {
    LocresOptions {
        sampling_angstrom: 12.0,
        maskrad_angstrom: Some(8.0),
        edgewidth_angstrom: Some(8.0),
        ..Default::default()
    }
}

const VOXEL: f64 = 2.0;

fn run(h1: &[f32], h2: &[f32], n: usize, opts: &LocresOptions) -> LocalResolution {
    local_resolution(h1, h2, n, VOXEL, opts, &NoProgress).expect("local resolution")
}

/// A smooth map with content up to 0.3 of the sampling frequency: Gaussian blobs plus
/// noise texture, fading towards the box edges, band-limited.
fn smooth_map(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut vol = vec![0.0f32; n * n * n];
    let blobs: Vec<([f64; 3], f64)> = (0..6)
        .map(|_| {
            let c = [0, 1, 2].map(|_| rng.uniform_in(-0.3, 0.3) * n as f64);
            (c, rng.uniform_in(1.5, 3.0))
        })
        .collect();
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let p = [x, y, z].map(|i| centered_freq(i, n) as f64);
                vol[(z * n + y) * n + x] = blobs
                    .iter()
                    .map(|(c, s)| {
                        let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                        (-d2 / (2.0 * s * s)).exp()
                    })
                    .sum::<f64>() as f32;
            }
        }
    }
    // Texture under a Gaussian envelope, so that the map fades out towards the box edges
    // like a particle in solvent.
    let sigma = 0.2 * n as f64;
    let textured: Vec<f32> = noise(n, 0.3, seed + 1)
        .iter()
        .zip(&vol)
        .enumerate()
        .map(|(i, (a, b))| {
            let p = [i % n, (i / n) % n, i / (n * n)].map(|c| centered_freq(c, n) as f64);
            let r2 = p[0] * p[0] + p[1] * p[1] + p[2] * p[2];
            a * (-r2 / (2.0 * sigma * sigma)).exp() as f32 + b
        })
        .collect();
    let cut = 0.3 * n as f64;
    fourier_filter(&textured, n, |r| if r <= cut { 1.0 } else { 0.0 })
}

#[test]
fn identical_half_maps_give_the_nyquist_limit_and_keep_the_map() {
    let n = 32;
    let vol = smooth_map(n, 11);
    let opts = small_opts();
    let out = run(&vol, &vol, n, &opts);
    let m = out.subbox_side;
    assert_eq!(m, 48);
    // FSC never crosses: the last sub-box shell M/2 − 2 = 22, i.e. M·voxel/22 = 4.36 Å.
    let nyq = m as f64 * VOXEL / (m / 2 - 2) as f64;
    for (p, &r) in out.points.iter().zip(&out.point_resolution) {
        assert!((r - nyq).abs() < 1e-9, "point {p:?}: {r} Å, want {nyq}");
    }
    let covered: Vec<usize> = (0..vol.len())
        .filter(|&i| out.resolution[i] > 0.0)
        .collect();
    assert!(covered.len() > vol.len() / 2);
    for &i in &covered {
        assert!((out.resolution[i] as f64 - nyq).abs() < 1e-4 * nyq);
    }
    let err = rel_rms(&out.filtered, &vol, |i| out.resolution[i] > 0.0);
    eprintln!(
        "identical: {} points, M = {m}, resolution {nyq:.3} Å, filtered vs input rel. RMS {err:.2e}",
        out.sampling_points
    );
    assert!(err < 0.01, "filtered map differs from the input by {err}");
}

#[test]
fn coarser_half_shows_coarser_local_resolution() {
    let n = 48;
    let signal = noise(n, 1.0, 21);
    let coarse = low_pass(&signal, n, VOXEL, 20.0);
    let fine = low_pass(&signal, n, VOXEL, 8.0);
    // x < n/2 from the 20 Å map, the rest from the 8 Å one.
    let mixed: Vec<f32> = (0..n * n * n)
        .map(|i| if i % n < n / 2 { coarse[i] } else { fine[i] })
        .collect();
    // In-band SNR 1/σ² = 4 per voxel: FSC ≈ 0.8 below the cut, ≈ 0 above.
    let (e1, e2) = (noise(n, 0.5, 22), noise(n, 0.5, 23));
    let h1: Vec<f32> = mixed.iter().zip(&e1).map(|(s, e)| s + e).collect();
    let h2: Vec<f32> = mixed.iter().zip(&e2).map(|(s, e)| s + e).collect();
    let out = run(
        &h1,
        &h2,
        n,
        &LocresOptions {
            use_filter: false,
            ..small_opts()
        },
    );
    assert!(out.filtered.is_empty());
    let r = 8; // window radius in voxels
    let side = |pick: &dyn Fn(i64) -> bool| -> Vec<f64> {
        out.points
            .iter()
            .zip(&out.point_resolution)
            .filter(|(p, _)| pick(p[0]))
            .map(|(_, &v)| v)
            .collect()
    };
    let pt_coarse = median(side(&|x| x <= -r));
    let pt_fine = median(side(&|x| x >= r));
    let map_side = |left: bool| -> Vec<f64> {
        (0..n * n * n)
            .filter(|&i| out.resolution[i] > 0.0)
            .filter(|&i| {
                let x = centered_freq(i % n, n);
                if left {
                    x < -4
                } else {
                    x >= 4
                }
            })
            .map(|i| out.resolution[i] as f64)
            .collect()
    };
    let map_coarse = median(map_side(true));
    let map_fine = median(map_side(false));
    eprintln!(
        "two resolutions: {} points; medians at points {pt_coarse:.2} Å (20 Å side) vs \
         {pt_fine:.2} Å (8 Å side); map medians {map_coarse:.2} Å vs {map_fine:.2} Å",
        out.sampling_points
    );
    // Both are finer than the true cut-offs: the window spreads the in-band signal over a
    // few sub-box shells beyond the cut, which both halves share (the usual bias of
    // local FSC with small windows; here R = 8 voxels). The ratio is what must show.
    assert!((11.0..=30.0).contains(&pt_coarse), "{pt_coarse}");
    assert!((5.0..=10.0).contains(&pt_fine), "{pt_fine}");
    assert!(pt_coarse > 1.6 * pt_fine, "{pt_coarse} vs {pt_fine}");
    assert!(map_coarse > 1.5 * map_fine, "{map_coarse} vs {map_fine}");
}

#[test]
fn noise_only_gives_the_coarsest_resolution() {
    // The window geometry of `small_opts` (R = 8 voxels, M = 48) at 4 Å voxels, so that the
    // 50 Å cap is sub-box shell 3.8. A window holds only ~10³ voxels, so a shell s of the
    // sub-box carries ~0.1·s² independent samples and the FSC of pure noise is a random
    // number of order 1 at the lowest shells; a point escapes the cap when its FSC stays
    // above 1/7 by chance past shell 3.8. At 2 Å voxels (cap at shell 1.9) that happens
    // for about half the points; upstream warns that windows under 5 voxels are "probably
    // nonsense" for the same reason.
    let n = 32;
    let v = 4.0;
    let (h1, h2) = (noise(n, 1.0, 31), noise(n, 1.0, 32));
    let opts = LocresOptions {
        sampling_angstrom: 6.0 * v,
        maskrad_angstrom: Some(4.0 * v),
        edgewidth_angstrom: Some(4.0 * v),
        ..Default::default()
    };
    let out = local_resolution(&h1, &h2, n, v, &opts, &NoProgress).unwrap();
    let at_cap = out
        .point_resolution
        .iter()
        .filter(|&&r| r == opts.min_resolution)
        .count();
    let med = median(out.point_resolution.clone());
    let map: Vec<f64> = out
        .resolution
        .iter()
        .filter(|&&r| r > 0.0)
        .map(|&r| r as f64)
        .collect();
    let map_med = median(map);
    let rms =
        |v: &[f32]| (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let avg: Vec<f32> = h1.iter().zip(&h2).map(|(a, b)| 0.5 * (a + b)).collect();
    let kept = rms(&out.filtered) / rms(&avg);
    eprintln!(
        "noise only: {at_cap} of {} points at the 50 Å cap, median {med:.1} Å, min {:.1} Å; \
         map median {map_med:.1} Å; filtered/input RMS {kept:.3}",
        out.sampling_points,
        out.point_resolution
            .iter()
            .cloned()
            .fold(f64::MAX, f64::min)
    );
    assert_eq!(med, opts.min_resolution);
    assert!(at_cap * 10 >= out.sampling_points * 6, "{at_cap}");
    assert!(map_med >= 45.0, "map median {map_med}");
    assert!(out.resolution.iter().all(|&r| r <= 50.0));
    assert!(kept < 0.1, "noise passes the filter: {kept}");
}

#[test]
fn bfactor_scales_the_filtered_map_like_exp_b_s2_over_4() {
    let n = 32;
    let vol = smooth_map(n, 41);
    let base = run(&vol, &vol, n, &small_opts());
    let covered = |i: usize| base.resolution[i] > 0.0;
    for b in [100.0, -100.0] {
        let out = run(
            &vol,
            &vol,
            n,
            &LocresOptions {
                bfactor: b,
                ..small_opts()
            },
        );
        // Identical halves: every window keeps the band of the map, so the filtered map is
        // the sharpened input.
        let s2 = 1.0 / (n as f64 * VOXEL).powi(2);
        let want = fourier_filter(&vol, n, |r| (b * r * r * s2 / 4.0).exp());
        let err = rel_rms(&out.filtered, &want, covered);
        let change_got: Vec<f32> = out
            .filtered
            .iter()
            .zip(&base.filtered)
            .map(|(a, b)| a - b)
            .collect();
        let change_want: Vec<f32> = want.iter().zip(&vol).map(|(a, b)| a - b).collect();
        let change_err = rel_rms(&change_got, &change_want, covered);
        eprintln!("B = {b}: filtered vs sharpened input {err:.2e}, change vs expected change {change_err:.2e}");
        assert!(err < 0.01, "B = {b}: {err}");
        assert!(change_err < 0.05, "B = {b}: {change_err}");
        // resolution does not depend on B (it comes from the unsharpened halves)
        assert_eq!(out.point_resolution, base.point_resolution);
    }
}

#[test]
fn deterministic_across_runs_and_thread_counts() {
    let n = 24;
    let h1 = smooth_map(n, 51);
    let h2: Vec<f32> = h1
        .iter()
        .zip(noise(n, 0.2, 52))
        .map(|(a, e)| a + e)
        .collect();
    let opts = LocresOptions {
        bfactor: 50.0,
        ..small_opts()
    };
    let a = run(&h1, &h2, n, &opts);
    let b = run(&h1, &h2, n, &opts);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let c = pool.install(|| run(&h1, &h2, n, &opts));
    for other in [&b, &c] {
        assert_eq!(a.filtered, other.filtered);
        assert_eq!(a.resolution, other.resolution);
        assert_eq!(a.point_resolution, other.point_resolution);
        assert_eq!(a.point_fsc, other.point_fsc);
    }
}

#[test]
fn cancellation_stops_with_cancelled() {
    let n = 24;
    let h = noise(n, 1.0, 61);
    let never = |_: &str, _: u64, _: u64| false;
    let r = local_resolution(&h, &h, n, VOXEL, &small_opts(), &never);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    // cancel after the first batch
    let after_start = |_: &str, done: u64, _: u64| done == 0;
    let r = local_resolution(&h, &h, n, VOXEL, &small_opts(), &after_start);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    // the reports reach the total
    let last = std::sync::Mutex::new((0u64, 0u64));
    let record = |_: &str, done: u64, total: u64| {
        *last.lock().unwrap() = (done, total);
        true
    };
    let out = local_resolution(&h, &h, n, VOXEL, &small_opts(), &record).unwrap();
    let (done, total) = *last.lock().unwrap();
    assert_eq!(
        (done, total),
        (out.sampling_points as u64, out.sampling_points as u64)
    );
}

#[test]
fn bad_arguments_are_errors() {
    let n = 16;
    let h = noise(n, 1.0, 71);
    let o = small_opts();
    let call = |a: &[f32], b: &[f32], n: usize, v: f64, o: &LocresOptions| {
        local_resolution(a, b, n, v, o, &NoProgress)
    };
    assert!(call(&h[1..], &h, n, VOXEL, &o).is_err());
    assert!(call(&h, &h[..10], n, VOXEL, &o).is_err());
    let odd = noise(15, 1.0, 72);
    assert!(call(&odd, &odd, 15, VOXEL, &o).is_err());
    assert!(call(&[], &[], 0, VOXEL, &o).is_err());
    for v in [0.0, -2.0, f64::NAN, f64::INFINITY] {
        assert!(call(&h, &h, n, v, &o).is_err(), "voxel {v}");
    }
    let bad = [
        LocresOptions {
            sampling_angstrom: 0.0,
            ..small_opts()
        },
        LocresOptions {
            maskrad_angstrom: Some(-1.0),
            ..small_opts()
        },
        LocresOptions {
            maskrad_angstrom: Some(0.4), // rounds to 0 voxels
            ..small_opts()
        },
        LocresOptions {
            maskrad_angstrom: Some(40.0), // ≥ n/2 voxels: no sampling point
            ..small_opts()
        },
        LocresOptions {
            edgewidth_angstrom: Some(f64::NAN),
            ..small_opts()
        },
        LocresOptions {
            min_resolution: 0.0,
            ..small_opts()
        },
        LocresOptions {
            fsc_threshold: f64::NAN,
            ..small_opts()
        },
        LocresOptions {
            bfactor: f64::INFINITY,
            ..small_opts()
        },
    ];
    for o in &bad {
        assert!(call(&h, &h, n, VOXEL, o).is_err(), "{o:?}");
    }
    let mut nan = h.clone();
    nan[5] = f32::NAN;
    assert!(call(&nan, &h, n, VOXEL, &o).is_err());
    // and a valid call on the same data works
    assert!(call(&h, &h, n, VOXEL, &o).is_ok());
}

/// Timing at the pipeline defaults (25 Å sampling, 4 Å voxels):
/// `cargo test --release --test locres -- --ignored --nocapture timing`.
#[test]
#[ignore]
fn timing() {
    for n in [64usize, 128] {
        let h1 = noise(n, 1.0, 81);
        let h2: Vec<f32> = h1
            .iter()
            .zip(noise(n, 1.0, 82))
            .map(|(a, e)| a + e)
            .collect();
        let t = std::time::Instant::now();
        let out =
            local_resolution(&h1, &h2, n, 4.0, &LocresOptions::default(), &NoProgress).unwrap();
        eprintln!(
            "N = {n}: {} points, sub-box {}³, {:.2} s on {} threads",
            out.sampling_points,
            out.subbox_side,
            t.elapsed().as_secs_f64(),
            rayon::current_num_threads()
        );
    }
}
