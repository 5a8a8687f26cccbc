//! The planned centered FFTs against the f64 reference and a naive DFT, shells, Fourier
//! resizing, FSC, masks and phase-ramp shifts.

use num_complex::Complex;
use recovar_core::forward::shift::{shift_phase, shift_phase_batch};
use recovar_core::fourier::*;
use recovar_core::rng::Rng;

type C64 = Complex<f64>;
type C32 = Complex<f32>;

fn random_real(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.normal()).collect()
}

fn random_complex(rng: &mut Rng, len: usize) -> Vec<C64> {
    (0..len)
        .map(|_| C64::new(rng.normal(), rng.normal()))
        .collect()
}

fn to32(x: &[C64]) -> Vec<C32> {
    x.iter()
        .map(|c| C32::new(c.re as f32, c.im as f32))
        .collect()
}

fn max_abs_diff32(a: &[C32], b: &[C64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (C64::new(x.re as f64, x.im as f64) - y).norm())
        .fold(0.0, f64::max)
}

fn max_abs(b: &[C64]) -> f64 {
    b.iter().map(|c| c.norm()).fold(0.0, f64::max)
}

/// The 2-D centered DFT straight from the definition, numpy's index conventions:
/// output index k has frequency k − n/2, input index j sits at position j + n/2.
fn naive_centered_2d(x: &[C64], d: usize) -> Vec<C64> {
    let h = (d / 2) as i64;
    let n = d as f64;
    let mut out = vec![C64::new(0.0, 0.0); d * d];
    for kr in 0..d {
        for kc in 0..d {
            let (fr, fc) = (kr as i64 - h, kc as i64 - h);
            let mut acc = C64::new(0.0, 0.0);
            for r in 0..d {
                for c in 0..d {
                    let (pr, pc) = (r as i64 + h, c as i64 + h);
                    let ang = -2.0 * std::f64::consts::PI * ((fr * pr + fc * pc) as f64) / n;
                    acc += x[r * d + c] * C64::new(ang.cos(), ang.sin());
                }
            }
            out[kr * d + kc] = acc;
        }
    }
    out
}

const SIZES_2D: [usize; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 15, 32];

#[test]
fn fft2_complex_matches_reference_even_and_odd() {
    let mut rng = Rng::new(1);
    for d in SIZES_2D {
        let x = random_complex(&mut rng, d * d);
        let reference = CenteredFft::new(&[d, d]);
        let mut want = x.clone();
        reference.process(&mut want, Direction::Forward);
        if d <= 8 {
            let naive = naive_centered_2d(&x, d);
            for (a, b) in want.iter().zip(&naive) {
                assert!((a - b).norm() < 1e-9, "d={d}: reference vs naive");
            }
        }
        // f64 plan
        let p64 = Fft2::<f64>::new(d);
        let mut got = x.clone();
        p64.forward(&mut got);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).norm() < 1e-10 * (d * d) as f64,
                "d={d}: f64 forward"
            );
        }
        p64.inverse(&mut got);
        for (a, b) in got.iter().zip(&x) {
            assert!((a - b).norm() < 1e-12, "d={d}: f64 round trip");
        }
        // f32 plan
        let p32 = Fft2::<f32>::new(d);
        let mut g32 = to32(&x);
        p32.forward(&mut g32);
        let err = max_abs_diff32(&g32, &want);
        assert!(
            err < 2e-6 * max_abs(&want).max(1.0),
            "d={d}: f32 forward err {err}"
        );
        // inverse of the reference spectrum
        let mut inv = to32(&want);
        p32.inverse(&mut inv);
        let err = max_abs_diff32(&inv, &x);
        assert!(err < 1e-5, "d={d}: f32 inverse err {err}");
    }
}

#[test]
fn fft2_real_input_path_matches_complex_path() {
    let mut rng = Rng::new(2);
    for d in SIZES_2D {
        let x = random_real(&mut rng, d * d);
        let want = CenteredFft::new(&[d, d])
            .forward_real(&x.iter().map(|&v| v as f32).collect::<Vec<_>>());
        // f64 real path vs f64 reference (on the same f32-rounded input)
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let xr: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let p64 = Fft2::<f64>::new(d);
        let mut out = vec![C64::new(0.0, 0.0); d * d];
        p64.forward_real(&xr, &mut out);
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            assert!(
                (a - b).norm() < 1e-10 * (d * d) as f64,
                "d={d} i={i}: {a} vs {b}"
            );
        }
        // f32 real path vs f32 complex path
        let p32 = Fft2::<f32>::new(d);
        let mut real_path = vec![C32::new(0.0, 0.0); d * d];
        p32.forward_real(&x32, &mut real_path);
        let mut cplx: Vec<C32> = x32.iter().map(|&v| C32::new(v, 0.0)).collect();
        p32.forward(&mut cplx);
        for (a, b) in real_path.iter().zip(&cplx) {
            assert!(
                (a - b).norm() < 1e-5 * d as f32,
                "d={d}: real vs complex path"
            );
        }
        // inverse_real: exact inverse of a real image's spectrum
        let mut back = vec![0.0f64; d * d];
        p64.inverse_real(&out, &mut back);
        for (a, b) in back.iter().zip(&xr) {
            assert!((a - b).abs() < 1e-12, "d={d}: real round trip");
        }
        let mut back32 = vec![0.0f32; d * d];
        p32.inverse_real(&real_path, &mut back32);
        for (a, b) in back32.iter().zip(&x32) {
            assert!((a - b).abs() < 1e-5, "d={d}: f32 real round trip");
        }
    }
}

#[test]
fn fft2_inverse_real_is_real_part_of_complex_inverse() {
    // A spectrum that is not Hermitian: the real output must be Re(ifft).
    let mut rng = Rng::new(3);
    for d in SIZES_2D {
        let x = random_complex(&mut rng, d * d);
        let mut want = x.clone();
        CenteredFft::new(&[d, d]).process(&mut want, Direction::Inverse);
        let mut got = vec![0.0f64; d * d];
        Fft2::<f64>::new(d).inverse_real(&x, &mut got);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b.re).abs() < 1e-12, "d={d}: {a} vs {}", b.re);
        }
    }
}

#[test]
fn fft2_parseval() {
    let mut rng = Rng::new(4);
    for d in [6usize, 7, 64] {
        let x: Vec<f32> = (0..d * d).map(|_| rng.normal() as f32).collect();
        let mut spec = vec![C32::new(0.0, 0.0); d * d];
        Fft2::<f32>::new(d).forward_real(&x, &mut spec);
        let e_f: f64 = spec.iter().map(|c| c.norm_sqr() as f64).sum();
        let e_x: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let rel = (e_f - (d * d) as f64 * e_x).abs() / (e_f);
        assert!(rel < 1e-5, "d={d}: Parseval off by {rel}");
    }
}

#[test]
fn even_size_centering_is_a_sign_modulation() {
    // For even n the centered DFT equals (−1)^(n/2)·(−1)^k·FFT((−1)^j x): check it on the
    // definition (here with a plain rustfft along one axis).
    use rustfft::FftPlanner;
    let mut rng = Rng::new(5);
    for n in [2usize, 4, 6, 10, 16] {
        let x = random_complex(&mut rng, n);
        let mut want = x.clone();
        CenteredFft::new(&[n]).process(&mut want, Direction::Forward);
        let mut y: Vec<C64> = x
            .iter()
            .enumerate()
            .map(|(j, v)| if j % 2 == 1 { -v } else { *v })
            .collect();
        FftPlanner::<f64>::new().plan_fft_forward(n).process(&mut y);
        let global = if (n / 2) % 2 == 1 { -1.0 } else { 1.0 };
        for (k, (a, b)) in y.iter().zip(&want).enumerate() {
            let sign = if k % 2 == 1 { -global } else { global };
            assert!((a * sign - b).norm() < 1e-10, "n={n} k={k}");
        }
    }
}

#[test]
fn fft2_batches_match_single_calls() {
    let mut rng = Rng::new(6);
    let (d, n) = (12usize, 7usize);
    let plan = Fft2::<f32>::new(d);
    let imgs: Vec<f32> = (0..n * d * d).map(|_| rng.normal() as f32).collect();
    let mut batch = vec![C32::new(0.0, 0.0); n * d * d];
    fft2_forward_batch(&plan, &imgs, &mut batch);
    let mut cplx: Vec<C32> = imgs.iter().map(|&v| C32::new(v, 0.0)).collect();
    fft2_batch_inplace(&plan, &mut cplx, Direction::Forward);
    for i in 0..n {
        let mut one = vec![C32::new(0.0, 0.0); d * d];
        let mut scratch = plan.make_scratch();
        plan.forward_real_with_scratch(&imgs[i * d * d..(i + 1) * d * d], &mut one, &mut scratch);
        assert_eq!(one, batch[i * d * d..(i + 1) * d * d]);
        for (a, b) in one.iter().zip(&cplx[i * d * d..(i + 1) * d * d]) {
            assert!((a - b).norm() < 1e-4);
        }
    }
    let mut back = vec![0.0f32; n * d * d];
    fft2_inverse_batch(&plan, &batch, &mut back);
    for (a, b) in back.iter().zip(&imgs) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn fft3_matches_reference_even_and_odd() {
    let mut rng = Rng::new(7);
    for n in [1usize, 2, 3, 4, 5, 6, 7, 8, 17] {
        let x = random_complex(&mut rng, n * n * n);
        let reference = CenteredFft::new(&[n, n, n]);
        let mut want = x.clone();
        reference.process(&mut want, Direction::Forward);
        let p64 = Fft3::<f64>::new(n);
        let mut got = x.clone();
        p64.forward(&mut got);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).norm() < 1e-9 * (n * n * n) as f64,
                "n={n}: f64 forward"
            );
        }
        p64.inverse(&mut got);
        for (a, b) in got.iter().zip(&x) {
            assert!((a - b).norm() < 1e-12, "n={n}: f64 round trip");
        }
        let p32 = Fft3::<f32>::new(n);
        let mut g32 = to32(&x);
        p32.forward(&mut g32);
        let err = max_abs_diff32(&g32, &want);
        assert!(
            err < 2e-6 * max_abs(&want).max(1.0),
            "n={n}: f32 forward err {err}"
        );
        // real helpers
        let xr: Vec<f32> = x.iter().map(|c| c.re as f32).collect();
        let spec = p32.forward_real_vec(&xr);
        let mut want_r: Vec<C64> = xr.iter().map(|&v| C64::new(v as f64, 0.0)).collect();
        reference.process(&mut want_r, Direction::Forward);
        assert!(max_abs_diff32(&spec, &want_r) < 2e-6 * max_abs(&want_r).max(1.0));
        let back = p32.inverse_real_vec(&spec);
        for (a, b) in back.iter().zip(&xr) {
            assert!((a - b).abs() < 1e-5, "n={n}: real round trip");
        }
    }
}

#[test]
fn fft3_parseval_and_delta() {
    let n = 16;
    let mut rng = Rng::new(8);
    let x: Vec<f32> = (0..n * n * n).map(|_| rng.normal() as f32).collect();
    let spec = Fft3::<f32>::new(n).forward_real_vec(&x);
    let e_f: f64 = spec.iter().map(|c| c.norm_sqr() as f64).sum();
    let e_x: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
    assert!((e_f / ((n * n * n) as f64 * e_x) - 1.0).abs() < 1e-5);
    // a delta at the centre voxel has a flat spectrum
    let mut delta = vec![0.0f32; n * n * n];
    delta[(n / 2 * n + n / 2) * n + n / 2] = 1.0;
    for c in Fft3::<f32>::new(n).forward_real_vec(&delta) {
        assert!((c - C32::new(1.0, 0.0)).norm() < 1e-6);
    }
}

#[test]
fn shells_and_radial_profiles() {
    let d = 10;
    let sh = shell_index_2d(d);
    let ones = vec![1.0f32; d * d];
    let sums = radial_sum(&ones, &sh, n_shells(d)).unwrap();
    let counts = shell_counts(&sh, n_shells(d));
    assert_eq!(sums, counts.iter().map(|&c| c as f64).collect::<Vec<_>>());
    // shell 0 is the DC pixel, shell 1 has the 8 neighbours at |k| ∈ {1, √2}
    assert_eq!(&counts[..2], &[1, 8]);
    let grid = frequency_grid_2d(d);
    assert_eq!(grid[0], [-5.0, -5.0]);
    assert_eq!(grid[d + 3], [-2.0, -4.0]); // row 1, col 3: (kx, ky) = (3 − 5, 1 − 5)
    assert!(radial_mean(&ones[..5], &sh, 4).is_err());
}

#[test]
fn crop_after_pad_is_identity_on_the_kept_block() {
    let mut rng = Rng::new(9);
    for (m, n) in [(6usize, 10usize), (5, 8), (8, 9), (7, 7)] {
        let x = to32(&random_complex(&mut rng, m * m * m));
        let padded = fourier_resize_3d(&x, m, n, false).unwrap();
        assert_eq!(padded.len(), n * n * n);
        let back = fourier_resize_3d(&padded, n, m, false).unwrap();
        assert_eq!(back, x, "3-D {m}→{n}→{m}");
        // zero frequency stays at the centre index
        assert_eq!(
            padded[((n / 2) * n + n / 2) * n + n / 2],
            x[((m / 2) * m + m / 2) * m + m / 2]
        );
        let x2 = to32(&random_complex(&mut rng, m * m));
        let p2 = fourier_resize_2d(&x2, m, n, false).unwrap();
        assert_eq!(
            fourier_resize_2d(&p2, n, m, false).unwrap(),
            x2,
            "2-D {m}→{n}→{m}"
        );
        let energy = |v: &[C32]| v.iter().map(|c| c.norm_sqr() as f64).sum::<f64>();
        assert!((energy(&p2) - energy(&x2)).abs() < 1e-6 * energy(&x2));
    }
    // zero_nyquist: cropping 8 → 4 zeroes the planes at frequency −2 (index 0) only
    let x = vec![C32::new(1.0, 0.0); 8 * 8 * 8];
    let c = fourier_resize_3d(&x, 8, 4, true).unwrap();
    for z in 0..4 {
        for y in 0..4 {
            for xi in 0..4 {
                let want = if z == 0 || y == 0 || xi == 0 {
                    0.0
                } else {
                    1.0
                };
                assert_eq!(c[(z * 4 + y) * 4 + xi].re, want);
            }
        }
    }
    // padding 4 → 8 with zero_nyquist zeroes the input's unpaired planes
    let x = vec![C32::new(1.0, 0.0); 16];
    let p = fourier_resize_2d(&x, 4, 8, true).unwrap();
    let ones: usize = p.iter().filter(|c| c.re == 1.0).count();
    assert_eq!(ones, 9);
    assert_eq!(p[2 * 8 + 2].re, 0.0); // input (0, 0): frequency (−2, −2)
    assert_eq!(p[3 * 8 + 3].re, 1.0);
    assert!(fourier_resize_3d(&x, 4, 8, false).is_err());
}

#[test]
fn resample_keeps_constants_and_band_limited_functions() {
    let c = resample_volume(&vec![2.5f32; 16 * 16 * 16], 16, 8, true).unwrap();
    for v in c {
        assert!((v - 2.5).abs() < 1e-5);
    }
    // f(x) = cos(2π(2x + y − 3z)/L) sampled on 16³ (origin at index 8) → on 12³ and 24³.
    let f = |x: f64, y: f64, z: f64, n: f64| {
        (2.0 * std::f64::consts::PI * (2.0 * x + y - 3.0 * z) / n).cos()
    };
    let sample = |n: usize| {
        let mut v = vec![0.0f32; n * n * n];
        let h = (n / 2) as f64;
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    v[(z * n + y) * n + x] =
                        f(x as f64 - h, y as f64 - h, z as f64 - h, n as f64) as f32;
                }
            }
        }
        v
    };
    for to in [12usize, 24] {
        let got = resample_volume(&sample(16), 16, to, false).unwrap();
        let want = sample(to);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "16→{to}: {a} vs {b}");
        }
    }
}

#[test]
fn fsc_of_a_volume_with_itself_and_with_noise() {
    let n = 24;
    let mut rng = Rng::new(10);
    let a: Vec<f32> = (0..n * n * n).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..n * n * n).map(|_| rng.normal() as f32).collect();
    let plan = Fft3::<f32>::new(n);
    let fa = plan.forward_real_vec(&a);
    let fb = plan.forward_real_vec(&b);
    for subtract in [false, true] {
        let same = fsc(&fa, &fa, n, subtract).unwrap();
        assert_eq!(same.len(), n / 2 - 1);
        for v in &same {
            assert!((v - 1.0).abs() < 1e-9, "{subtract}: {v}");
        }
    }
    let cross = fsc(&fa, &fb, n, false).unwrap();
    assert_eq!(cross[0], cross[1]);
    let counts = shell_counts(&shell_index_3d(n), n_shells(n));
    for (r, v) in cross.iter().enumerate().skip(2) {
        // FSC of independent white noise ~ N(0, 1/count) per shell
        let bound = 5.0 / (counts[r] as f64).sqrt();
        assert!(v.abs() < bound, "shell {r}: {v} (bound {bound})");
    }
    // a + small noise: high at every shell
    let mix: Vec<C32> = fa.iter().zip(&fb).map(|(x, y)| x + y * 0.1).collect();
    for v in fsc(&fa, &mix, n, false).unwrap() {
        assert!(v > 0.98);
    }
    // a zero volume gives 0 (non-finite → 0)
    let zero = vec![C32::new(0.0, 0.0); n * n * n];
    assert!(fsc(&fa, &zero, n, false).unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn resolution_from_a_hand_made_curve() {
    // Shells 0..7 of a 16-box at 2 Å: FSC 1, 1, .95, .8, .6, .3, .1, 0
    let f = [1.0, 1.0, 0.95, 0.8, 0.6, 0.3, 0.1, 0.0];
    let r = fsc_resolutions(&f, 16, 2.0);
    // 0.5 between shells 4 (0.6) and 5 (0.3): 4 + 1/3
    assert!((r.at_0_5 - 32.0 / (4.0 + 0.1 / 0.3)).abs() < 1e-12);
    // 0.143 between shells 5 (0.3) and 6 (0.1): 5 + 0.157/0.2
    assert!((r.at_0_143 - 32.0 / (5.0 + 0.157 / 0.2)).abs() < 1e-12);
}

#[test]
fn fsc_weighting_low_pass_and_sharpening() {
    let n = 8;
    let spec = vec![C32::new(1.0, 0.0); n * n * n];
    let shells = shell_index_3d(n);
    let mut w = spec.clone();
    apply_fsc_weighting(&mut w, n, &[1.0, 1.0, 0.5]).unwrap();
    for (v, &s) in w.iter().zip(&shells) {
        let want = match s {
            0 | 1 => 1.0,
            // shell 2 and beyond: the last weight, sqrt(2·0.5/1.5) (none is below 1e-4)
            _ => (1.0f32 / 1.5).sqrt(),
        };
        assert!((v.re - want).abs() < 1e-6);
    }
    // low-pass at 4 Å with 1 Å voxels, n = 8: i_f = 2, hw = 1: 1 up to shell 1, ½ at 2, 0 from 3
    let mut lp = spec.clone();
    low_pass_filter(&mut lp, n, 4.0, 1.0, 2).unwrap();
    for (v, &s) in lp.iter().zip(&shells) {
        let want = match s {
            0 | 1 => 1.0,
            2 => 0.5,
            _ => 0.0,
        };
        assert!((v.re - want).abs() < 1e-6, "shell {s}: {}", v.re);
    }
    // B-factor: exp(B s²/4) with s = |k|/(n·voxel)
    let mut sh = spec.clone();
    bfactor_sharpen(&mut sh, n, 2.0, 100.0).unwrap();
    let idx = ((4 * n) + 4) * n + 7; // k = (3, 0, 0)
    let s2 = (3.0f64 / 16.0).powi(2);
    assert!((sh[idx].re as f64 - (100.0 * s2 / 4.0).exp()).abs() < 1e-5);
    assert_eq!(sh[(4 * n + 4) * n + 4].re, 1.0);
}

#[test]
fn soft_mask_outside_map_blends_to_the_background() {
    let n = 16;
    let (radius, width) = (5.0, 3.0);
    let mut rng = Rng::new(11);
    let vol: Vec<f32> = (0..n * n * n).map(|_| rng.normal() as f32).collect();
    let mut masked = vol.clone();
    soft_mask_outside_map(&mut masked, n, radius, width).unwrap();
    // background by hand
    let r_of = |i: usize| {
        let (z, y, x) = (i / (n * n), (i / n) % n, i % n);
        let c = |v: usize| v as f64 - 8.0;
        (c(x).powi(2) + c(y).powi(2) + c(z).powi(2)).sqrt()
    };
    let (mut s, mut w) = (0.0, 0.0);
    for (i, &v) in vol.iter().enumerate() {
        let r = r_of(i);
        let bw = if r < radius {
            0.0
        } else if r <= radius + width {
            0.5 + 0.5 * (std::f64::consts::PI * (radius + width - r) / width).cos()
        } else {
            1.0
        };
        s += bw * v as f64;
        w += bw;
    }
    let bg = s / w;
    for (i, (&m, &v)) in masked.iter().zip(&vol).enumerate() {
        let r = r_of(i);
        if r < radius {
            assert_eq!(m, v);
        } else if r > radius + width {
            assert!((m as f64 - bg).abs() < 1e-6);
        } else {
            let lo = v.min(bg as f32) - 1e-6;
            let hi = v.max(bg as f32) + 1e-6;
            assert!(m >= lo && m <= hi);
        }
    }
    // a constant volume is unchanged
    let mut c = vec![3.0f32; n * n * n];
    soft_mask_outside_map(&mut c, n, 8.0, 3.0).unwrap();
    assert!(c.iter().all(|&v| (v - 3.0).abs() < 1e-6));
}

#[test]
fn soft_sphere_and_window_mask() {
    let n = 20;
    let m = soft_sphere(n, 6.0, 3.0).unwrap();
    let at = |x: usize, y: usize, z: usize| m[(z * n + y) * n + x];
    assert_eq!(at(10, 10, 16), 1.0); // r = 6
    assert!((at(10, 10, 17) as f64 - 0.75).abs() < 1e-6); // r = 7: ½ + ½cos(π/3)
    assert_eq!(at(10, 10, 19), 0.0); // r = 9
    assert_eq!(at(10, 3, 10), at(17, 10, 10));
    assert!(soft_sphere(n, -1.0, 3.0).is_err());
    let d = 64;
    let w = window_mask_2d(d, 0.85, 0.99).unwrap();
    assert_eq!(w[32 * d + 32], 1.0);
    assert_eq!(w[0], 0.0);
    // (row 32, col 4): r = |x| = 28/32 = 0.875 → 1 − 0.025/0.14
    assert!((w[32 * d + 4] as f64 - (1.0 - 0.025 / 0.14)).abs() < 1e-5);
    assert_eq!(w[32 * d + 4], w[4 * d + 32]);
}

#[test]
fn integer_phase_shift_is_a_periodic_roll() {
    let mut rng = Rng::new(12);
    for d in [8usize, 9] {
        let plan = Fft2::<f64>::new(d);
        let plan32 = Fft2::<f32>::new(d);
        let img: Vec<f32> = (0..d * d).map(|_| rng.normal() as f32).collect();
        for (tx, ty) in [(1i64, 0i64), (0, 1), (2, -3), (-1, 4), (5, 2)] {
            let mut spec = vec![C32::new(0.0, 0.0); d * d];
            plan32.forward_real(&img, &mut spec);
            shift_phase(&mut spec, d, [tx as f32, ty as f32]);
            let spec64: Vec<C64> = spec
                .iter()
                .map(|c| C64::new(c.re as f64, c.im as f64))
                .collect();
            let mut out = vec![0.0f64; d * d];
            plan.inverse_real(&spec64, &mut out);
            // np.roll(img, (ty, tx), axis=(0, 1)): out[r][c] = img[r − ty][c − tx]
            for r in 0..d {
                for c in 0..d {
                    let sr = (r as i64 - ty).rem_euclid(d as i64) as usize;
                    let sc = (c as i64 - tx).rem_euclid(d as i64) as usize;
                    let want = img[sr * d + sc] as f64;
                    assert!((out[r * d + c] - want).abs() < 1e-4, "d={d} t=({tx},{ty})");
                }
            }
        }
    }
}

#[test]
fn shift_then_unshift_is_identity_and_batches_agree() {
    let mut rng = Rng::new(13);
    let d = 16;
    let n = 5;
    let spec: Vec<C32> = to32(&random_complex(&mut rng, n * d * d));
    let shifts: Vec<[f32; 2]> = (0..n)
        .map(|_| {
            [
                rng.uniform_in(-5.0, 5.0) as f32,
                rng.uniform_in(-5.0, 5.0) as f32,
            ]
        })
        .collect();
    let mut s = spec.clone();
    shift_phase_batch(&mut s, d, &shifts);
    for i in 0..n {
        let mut one = spec[i * d * d..(i + 1) * d * d].to_vec();
        shift_phase(&mut one, d, shifts[i]);
        assert_eq!(one, s[i * d * d..(i + 1) * d * d]);
    }
    let neg: Vec<[f32; 2]> = shifts.iter().map(|t| [-t[0], -t[1]]).collect();
    shift_phase_batch(&mut s, d, &neg);
    for (a, b) in s.iter().zip(&spec) {
        assert!((a - b).norm() < 1e-5);
    }
}
