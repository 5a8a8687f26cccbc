//! The CTF against an independent f64 reimplementation of cryoDRGN's `compute_ctf`
//! (formats.md) on every CTF row of the cryoDRGN oracle tables, hand values, and the
//! anti-aliased CTF².

mod common;

use recovar_core::dataset::CtfParams;
use recovar_core::forward::ctf::{ctf_at, ctf_image, AntialiasedCtf2, CtfEvaluator};

/// cryoDRGN's `ctf.compute_ctf`, written from formats.md: freqs (x, y) in 1/Å, x = column.
#[allow(clippy::too_many_arguments)]
fn cryodrgn_ctf(
    x: f64,
    y: f64,
    dfu: f64,
    dfv: f64,
    dfang_deg: f64,
    volt_kv: f64,
    cs_mm: f64,
    w: f64,
    phase_shift_deg: f64,
) -> f64 {
    let volt = volt_kv * 1000.0;
    let cs = cs_mm * 1e7;
    let dfang = dfang_deg * std::f64::consts::PI / 180.0;
    let phase_shift = phase_shift_deg * std::f64::consts::PI / 180.0;
    let lam = 12.2639 / (volt + 0.97845e-6 * volt * volt).sqrt();
    let ang = y.atan2(x);
    let s2 = x * x + y * y;
    let df = 0.5 * (dfu + dfv + (dfu - dfv) * (2.0 * (ang - dfang)).cos());
    let gamma =
        2.0 * std::f64::consts::PI * (-0.5 * df * lam * s2 + 0.25 * cs * lam.powi(3) * s2 * s2)
            - phase_shift;
    (1.0 - w * w).sqrt() * gamma.sin() - w * gamma.cos()
}

/// Largest grid used per oracle row; bigger boxes are evaluated on a coarser grid with the
/// same physical frequency range (Apix·D/64), which still tests the formula everywhere.
const MAX_D: usize = 64;

#[test]
fn matches_cryodrgn_compute_ctf_on_every_oracle_row() {
    let dir = common::oracles();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read the oracle directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".ctf.txt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.ctf.txt oracle in {}",
        dir.display()
    );
    let mut total_rows = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read oracle");
        let mut max_diff = 0.0f64;
        let mut rows = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let v: Vec<f32> = line
                .split_whitespace()
                .map(|t| t.parse().expect("a number"))
                .collect();
            assert_eq!(v.len(), 9, "{}: {line}", path.display());
            let d_orig = v[0] as usize;
            let (d, apix) = if d_orig > MAX_D {
                (MAX_D, v[1] as f64 * d_orig as f64 / MAX_D as f64)
            } else {
                (d_orig, v[1] as f64)
            };
            let p = CtfParams {
                defocus_u: v[2],
                defocus_v: v[3],
                defocus_angle_deg: v[4],
                voltage_kv: v[5],
                cs_mm: v[6],
                amp_contrast: v[7],
                phase_shift_deg: v[8],
                bfactor: 0.0,
                contrast: 1.0,
            };
            let got = CtfEvaluator::new(d, apix).expect("valid grid").image(&p);
            let h = (d / 2) as f64;
            for r in 0..d {
                for c in 0..d {
                    let x = (c as f64 - h) / (d as f64 * apix);
                    let y = (r as f64 - h) / (d as f64 * apix);
                    let want = cryodrgn_ctf(
                        x,
                        y,
                        v[2] as f64,
                        v[3] as f64,
                        v[4] as f64,
                        v[5] as f64,
                        v[6] as f64,
                        v[7] as f64,
                        v[8] as f64,
                    );
                    max_diff = max_diff.max((got[r * d + c] as f64 - want).abs());
                }
            }
            rows += 1;
        }
        println!(
            "{}: {rows} rows, max |Δ| = {max_diff:.3e}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        assert!(rows > 0, "{}: no rows", path.display());
        assert!(max_diff <= 1e-5, "{}: max |Δ| {max_diff}", path.display());
        total_rows += rows;
    }
    assert!(total_rows > 1000);
}

fn base() -> CtfParams {
    CtfParams {
        defocus_u: 12000.0,
        defocus_v: 9000.0,
        defocus_angle_deg: 0.0,
        voltage_kv: 300.0,
        cs_mm: 2.7,
        amp_contrast: 0.07,
        phase_shift_deg: 0.0,
        bfactor: 0.0,
        contrast: 1.0,
    }
}

#[test]
fn hand_values() {
    let (d, apix) = (32usize, 1.3);
    let centre = (d / 2) * d + d / 2;
    // zero frequency: sin(0)·√(1−w²) − w·cos(0) = −w, times contrast
    let mut p = base();
    p.contrast = 2.0;
    assert!((ctf_image(&p, d, apix).unwrap()[centre] as f64 + 0.14).abs() < 1e-7);
    // a phase shift φ gives −√(1−w²)·sin φ − w·cos φ at k = 0
    p.phase_shift_deg = 90.0;
    p.contrast = 1.0;
    let want = -(1.0f64 - 0.07 * 0.07).sqrt();
    assert!((ctf_image(&p, d, apix).unwrap()[centre] as f64 - want).abs() < 1e-6);
    // w = 0, no defocus, no Cs: γ ≡ 0, so the CTF vanishes everywhere
    let zero = CtfParams {
        defocus_u: 0.0,
        defocus_v: 0.0,
        cs_mm: 0.0,
        amp_contrast: 0.0,
        ..base()
    };
    assert!(ctf_image(&zero, d, apix).unwrap().iter().all(|&v| v == 0.0));
    // with defocus but w = 0: still 0 at k = 0
    let w0 = CtfParams {
        amp_contrast: 0.0,
        ..base()
    };
    assert_eq!(ctf_image(&w0, d, apix).unwrap()[centre], 0.0);
}

#[test]
fn astigmatism_angle_rotates_the_pattern() {
    let p0 = base();
    // along x (θ = 0) the defocus is dfU, along y it is dfV
    let iso_u = CtfParams {
        defocus_v: p0.defocus_u,
        ..p0
    };
    let iso_v = CtfParams {
        defocus_u: p0.defocus_v,
        ..p0
    };
    for s in [0.02, 0.05, 0.11] {
        assert!((ctf_at(&p0, s, 0.0) - ctf_at(&iso_u, s, 0.0)).abs() < 1e-12);
        assert!((ctf_at(&p0, 0.0, s) - ctf_at(&iso_v, 0.0, s)).abs() < 1e-12);
    }
    // angle φ: CTF_φ(R_φ v) = CTF_0(v)
    for deg in [30.0f32, 90.0, -160.39] {
        let p = CtfParams {
            defocus_angle_deg: deg,
            ..p0
        };
        let a = (deg as f64).to_radians();
        for (x, y) in [(0.03, 0.01), (-0.07, 0.04), (0.1, -0.1)] {
            let (xr, yr) = (a.cos() * x - a.sin() * y, a.sin() * x + a.cos() * y);
            assert!(
                (ctf_at(&p, xr, yr) - ctf_at(&p0, x, y)).abs() < 1e-9,
                "{deg}"
            );
        }
    }
    // on the grid, 90° swaps the roles of x and y: cos 2(θ − 90°) = (ky² − kx²)/s², the
    // 0° value at the transposed pixel
    let d = 16;
    let img0 = ctf_image(&p0, d, 2.0).unwrap();
    let img90 = ctf_image(
        &CtfParams {
            defocus_angle_deg: 90.0,
            ..p0
        },
        d,
        2.0,
    )
    .unwrap();
    for r in 0..d {
        for c in 0..d {
            assert!((img90[r * d + c] - img0[c * d + r]).abs() < 1e-6);
        }
    }
}

#[test]
fn bfactor_and_contrast_scale() {
    let (d, apix) = (24usize, 1.7);
    let p = base();
    let plain = ctf_image(&p, d, apix).unwrap();
    let b = 80.0f32;
    let damped = ctf_image(
        &CtfParams {
            bfactor: b,
            contrast: 0.5,
            ..p
        },
        d,
        apix,
    )
    .unwrap();
    for r in 0..d {
        for c in 0..d {
            let kx = c as f64 - 12.0;
            let ky = r as f64 - 12.0;
            let s2 = (kx * kx + ky * ky) / (d as f64 * apix).powi(2);
            let want = plain[r * d + c] as f64 * (-(b as f64) / 4.0 * s2).exp() * 0.5;
            assert!((damped[r * d + c] as f64 - want).abs() < 1e-6);
        }
    }
}

#[test]
fn batch_matches_single_rows() {
    let (d, apix) = (20usize, 1.1);
    let rows: Vec<CtfParams> = (0..6)
        .map(|i| CtfParams {
            defocus_u: 8000.0 + 1500.0 * i as f32,
            defocus_angle_deg: 15.0 * i as f32,
            contrast: 1.0 - 0.1 * i as f32,
            ..base()
        })
        .collect();
    let ev = CtfEvaluator::new(d, apix).unwrap();
    let mut out = vec![0.0f32; rows.len() * d * d];
    ev.evaluate_batch(&rows, &mut out);
    let aa = AntialiasedCtf2::new(d, apix).unwrap();
    let mut out2 = vec![0.0f32; rows.len() * d * d];
    aa.evaluate_batch(&rows, &mut out2);
    for (i, p) in rows.iter().enumerate() {
        assert_eq!(out[i * d * d..(i + 1) * d * d], ev.image(p)[..]);
        let mut one = vec![0.0f32; d * d];
        aa.evaluate(p, &mut one);
        assert_eq!(out2[i * d * d..(i + 1) * d * d], one[..]);
    }
    assert!(CtfEvaluator::new(0, 1.0).is_err());
    assert!(CtfEvaluator::new(8, 0.0).is_err());
    assert!(AntialiasedCtf2::new(9, 1.0).is_err());
}

/// The anti-aliased CTF² by brute force: 2d × 2d grid, square, 3×3 box with zero padding,
/// every second sample.
fn brute_force_aa(p: &CtfParams, d: usize, apix: f64) -> Vec<f64> {
    let nf = 2 * d;
    let fine: Vec<f64> = (0..nf * nf)
        .map(|i| {
            let (r, c) = (i / nf, i % nf);
            let x = (c as f64 - d as f64) / (nf as f64 * apix);
            let y = (r as f64 - d as f64) / (nf as f64 * apix);
            ctf_at(p, x, y).powi(2)
        })
        .collect();
    let mut out = vec![0.0; d * d];
    for r in 0..d {
        for c in 0..d {
            let mut s = 0.0;
            for dr in -1i64..=1 {
                for dc in -1i64..=1 {
                    let (i, j) = (2 * r as i64 + dr, 2 * c as i64 + dc);
                    if i >= 0 && j >= 0 && (i as usize) < nf && (j as usize) < nf {
                        s += fine[i as usize * nf + j as usize];
                    }
                }
            }
            out[r * d + c] = s / 9.0;
        }
    }
    out
}

#[test]
fn antialiased_ctf_squared() {
    let d = 64;
    // exact construction
    let p = base();
    let aa = AntialiasedCtf2::new(d, 1.5).unwrap();
    let mut got = vec![0.0f32; d * d];
    aa.evaluate(&p, &mut got);
    let want = brute_force_aa(&p, d, 1.5);
    for (a, b) in got.iter().zip(&want) {
        assert!((*a as f64 - b).abs() < 1e-6);
    }
    // slowly varying CTF (small defocus, coarse pixels): ≈ CTF² away from the Nyquist edge
    let slow = CtfParams {
        defocus_u: 3000.0,
        defocus_v: 2800.0,
        ..base()
    };
    let apix = 4.0;
    let aa = AntialiasedCtf2::new(d, apix).unwrap();
    let mut a = vec![0.0f32; d * d];
    aa.evaluate(&slow, &mut a);
    let c2: Vec<f32> = ctf_image(&slow, d, apix)
        .unwrap()
        .iter()
        .map(|v| v * v)
        .collect();
    let mut worst = 0.0f32;
    for r in 1..d {
        for c in 1..d {
            worst = worst.max((a[r * d + c] - c2[r * d + c]).abs());
        }
    }
    assert!(worst < 0.01, "slow CTF: max |aa − CTF²| = {worst}");
    // the unpadded edge row 0 gets ≈ 2/3 of CTF² (one of three fine rows is padding)
    // (checked where CTF² is largest along that row, so the ratio is well defined)
    let cm = (1..d)
        .max_by(|&i, &j| c2[i].total_cmp(&c2[j]))
        .expect("non-empty row");
    assert!(c2[cm] > 0.5);
    assert!(
        (a[cm] as f64 / c2[cm] as f64 - 2.0 / 3.0).abs() < 0.05,
        "{} vs {}",
        a[cm],
        c2[cm]
    );
    // fast oscillation near Nyquist (a period of about two pixels there): the average over
    // a pixel is well below the CTF² peaks
    let fast = CtfParams {
        defocus_u: 6000.0,
        defocus_v: 6000.0,
        ..base()
    };
    let apix = 1.0;
    let aa = AntialiasedCtf2::new(d, apix).unwrap();
    let mut a = vec![0.0f32; d * d];
    aa.evaluate(&fast, &mut a);
    let c2: Vec<f32> = ctf_image(&fast, d, apix)
        .unwrap()
        .iter()
        .map(|v| v * v)
        .collect();
    let (mut max_a, mut max_c, mut n) = (0.0f32, 0.0f32, 0);
    for r in 1..d {
        for c in 1..d {
            let k = ((r as f64 - 32.0).powi(2) + (c as f64 - 32.0).powi(2)).sqrt();
            if (26.0..31.0).contains(&k) {
                max_a = max_a.max(a[r * d + c]);
                max_c = max_c.max(c2[r * d + c]);
                n += 1;
            }
        }
    }
    assert!(n > 100);
    println!("near Nyquist: max CTF² {max_c:.3}, max anti-aliased {max_a:.3}");
    assert!(max_c > 0.95 && max_a < 0.8 * max_c, "{max_a} vs {max_c}");
}
