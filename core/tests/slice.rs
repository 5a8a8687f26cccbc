//! Tests of the slicing operator and its adjoint (`recovar_core::forward::slice`,
//! `forward::cubic`, `backend::CpuBackend`): the adjoint identity, accuracy against the
//! closed-form Fourier transform of Gaussian blobs, the Fourier-slice theorem (which pins
//! the rotation and centre conventions), exact axis permutations, determinism across
//! thread counts and batch sizes, and argument checking.

use num_complex::Complex;
use recovar_core::backend::{Backend, CpuBackend};
use recovar_core::forward::{self, cubic, Interp, SliceGeometry};
use recovar_core::fourier::{CenteredFft, Direction};
use recovar_core::rng::Rng;

const INTERPS: [Interp; 3] = [Interp::Nearest, Interp::Trilinear, Interp::Cubic];

fn rotation(rng: &mut Rng) -> [f32; 9] {
    rng.rotation().map(|v| v as f32)
}

fn random_complex(rng: &mut Rng, n: usize) -> Vec<Complex<f32>> {
    (0..n)
        .map(|_| Complex::new(rng.normal() as f32, rng.normal() as f32))
        .collect()
}

/// The complex inner product `Σ conj(a)·b`.
fn dot(a: &[Complex<f64>], b: &[Complex<f64>]) -> Complex<f64> {
    a.iter().zip(b).map(|(a, b)| a.conj() * b).sum()
}

fn c64(v: &[Complex<f32>]) -> Vec<Complex<f64>> {
    v.iter()
        .map(|v| Complex::new(v.re as f64, v.im as f64))
        .collect()
}

/// `P x` including the prefilter for cubic (the operator on volumes, not coefficients).
fn project(
    be: &CpuBackend,
    vol: &[Complex<f32>],
    geom: &SliceGeometry,
    interp: Interp,
    rots: &[[f32; 9]],
) -> Vec<Complex<f32>> {
    let mut v = vol.to_vec();
    if interp == Interp::Cubic {
        cubic::prefilter(&mut v, geom.volume_size).unwrap();
    }
    let mut out = vec![Complex::new(0.0, 0.0); rots.len() * geom.image_len()];
    be.slice(&v, geom, interp, rots, &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------
// Adjoint

#[test]
fn backprojection_is_the_exact_adjoint() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(11);
    // (D, Nv): N and 2N grids, plus small boxes with one, two and three z-slabs.
    let sizes = [(16, 16), (16, 32), (4, 4), (4, 8), (10, 10), (6, 12)];
    for (d, nv) in sizes {
        for clip in [true, false] {
            let mut geom = SliceGeometry::new(d, nv).unwrap();
            if !clip {
                geom = geom.with_max_radius(None).unwrap();
            }
            let n = 5;
            let rots: Vec<[f32; 9]> = (0..n).map(|_| rotation(&mut rng)).collect();
            let x = random_complex(&mut rng, geom.volume_len());
            let y = random_complex(&mut rng, n * geom.image_len());
            let v: Vec<f32> = (0..n * geom.image_len())
                .map(|_| rng.normal() as f32)
                .collect();
            for interp in INTERPS {
                let px = project(&be, &x, &geom, interp, &rots);
                let mut pty = vec![Complex::new(0.0, 0.0); geom.volume_len()];
                be.backproject(&y, &geom, interp, &rots, &mut pty).unwrap();
                let mut ptv = vec![0.0f64; geom.volume_len()];
                be.backproject_real(&v, &geom, interp, &rots, &mut ptv)
                    .unwrap();
                if interp == Interp::Cubic {
                    cubic::prefilter(&mut pty, nv).unwrap();
                    cubic::prefilter(&mut ptv, nv).unwrap();
                }
                let lhs = dot(&c64(&px), &c64(&y));
                let rhs = dot(&c64(&x), &pty);
                let rel = (lhs - rhs).norm() / lhs.norm();
                assert!(px.iter().any(|v| v.norm() > 0.0), "P x vanished");
                assert!(
                    rel < 1e-5,
                    "D {d} Nv {nv} clip {clip} {interp:?}: <Px,y> = {lhs}, <x,Pᵀy> = {rhs}, rel {rel:e}"
                );
                // Real backprojection against the real part: Σ Re(Px)·v = Σ Re(x)·Pᵀv.
                let lhs: f64 = px
                    .iter()
                    .zip(&v)
                    .map(|(a, &b)| a.re as f64 * b as f64)
                    .sum();
                let rhs: f64 = x.iter().zip(&ptv).map(|(a, &b)| a.re as f64 * b).sum();
                let rel = (lhs - rhs).abs() / lhs.abs();
                assert!(
                    rel < 1e-5,
                    "real, D {d} Nv {nv} clip {clip} {interp:?}: {lhs} vs {rhs}, rel {rel:e}"
                );
            }
        }
    }
}

/// The spline evaluation alone (no prefilter) is also adjoint to the coefficient scatter.
#[test]
fn cubic_evaluation_and_coefficient_scatter_are_adjoint() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(12);
    let geom = SliceGeometry::new(16, 32).unwrap();
    let rots: Vec<[f32; 9]> = (0..3).map(|_| rotation(&mut rng)).collect();
    let c = random_complex(&mut rng, geom.volume_len());
    let y = random_complex(&mut rng, 3 * geom.image_len());
    let mut ec = vec![Complex::new(0.0, 0.0); y.len()];
    be.slice(&c, &geom, Interp::Cubic, &rots, &mut ec).unwrap();
    let mut ety = vec![Complex::new(0.0, 0.0); geom.volume_len()];
    be.backproject(&y, &geom, Interp::Cubic, &rots, &mut ety)
        .unwrap();
    let (l, r) = (dot(&c64(&ec), &c64(&y)), dot(&c64(&c), &ety));
    assert!((l - r).norm() < 1e-5 * l.norm(), "{l} {r}");
}

// ---------------------------------------------------------------------------------------
// Analytic projection of Gaussian blobs

struct Blob {
    amp: f64,
    sigma: f64,
    /// Centre (x, y, z) in voxels relative to the box centre.
    pos: [f64; 3],
}

const BLOBS: [Blob; 3] = [
    Blob {
        amp: 1.0,
        sigma: 1.6,
        pos: [3.0, -2.0, 1.5],
    },
    Blob {
        amp: 0.7,
        sigma: 2.0,
        pos: [-4.0, 1.0, -3.0],
    },
    Blob {
        amp: 0.5,
        sigma: 1.8,
        pos: [0.5, 4.5, 2.0],
    },
];

/// Continuous Fourier transform at `nu` (cycles per voxel):
/// `Σ a (2πσ²)^{3/2} exp(−2π²σ²|ν|²) exp(−2πi ν·p)`.
fn blobs_ft(nu: [f64; 3]) -> Complex<f64> {
    use std::f64::consts::PI;
    BLOBS
        .iter()
        .map(|b| {
            let s2 = b.sigma * b.sigma;
            let n2 = nu[0] * nu[0] + nu[1] * nu[1] + nu[2] * nu[2];
            let mag = b.amp * (2.0 * PI * s2).powf(1.5) * (-2.0 * PI * PI * s2 * n2).exp();
            let ph = -2.0 * PI * (nu[0] * b.pos[0] + nu[1] * b.pos[1] + nu[2] * b.pos[2]);
            Complex::from_polar(mag, ph)
        })
        .sum()
}

fn blobs_real(x: [f64; 3]) -> f64 {
    BLOBS
        .iter()
        .map(|b| {
            let d2: f64 = (0..3).map(|a| (x[a] - b.pos[a]).powi(2)).sum();
            b.amp * (-d2 / (2.0 * b.sigma * b.sigma)).exp()
        })
        .sum()
}

/// Line integral of the blobs along `R[2,:]` at image position `(u, v)` (along `R[0,:]`,
/// `R[1,:]`).
fn blobs_projection(rot: &[f32; 9], u: f64, v: f64) -> f64 {
    let r = |i: usize| rot[i] as f64;
    BLOBS
        .iter()
        .map(|b| {
            let pu = b.pos[0] * r(0) + b.pos[1] * r(1) + b.pos[2] * r(2);
            let pv = b.pos[0] * r(3) + b.pos[1] * r(4) + b.pos[2] * r(5);
            let d2 = (u - pu).powi(2) + (v - pv).powi(2);
            b.amp
                * (2.0 * std::f64::consts::PI).sqrt()
                * b.sigma
                * (-d2 / (2.0 * b.sigma * b.sigma)).exp()
        })
        .sum()
}

/// The Fourier volume sampled from the closed form on an `nv` grid (voxel `(z,y,x)` has
/// frequency `(x, y, z) − nv/2` cycles per box of `nv` voxels).
fn closed_form_volume(nv: usize) -> Vec<Complex<f64>> {
    let h = (nv / 2) as f64;
    let mut vol = Vec::with_capacity(nv * nv * nv);
    for z in 0..nv {
        for y in 0..nv {
            for x in 0..nv {
                let nu = [x as f64 - h, y as f64 - h, z as f64 - h].map(|k| k / nv as f64);
                vol.push(blobs_ft(nu));
            }
        }
    }
    vol
}

/// The Fourier volume by centered 3-D FFT of the blobs sampled in real space on `nv³`
/// (voxel `(z,y,x)` at position `(x, y, z) − nv/2`).
fn fft_volume(nv: usize) -> Vec<Complex<f64>> {
    let h = (nv / 2) as f64;
    let mut vol = Vec::with_capacity(nv * nv * nv);
    for z in 0..nv {
        for y in 0..nv {
            for x in 0..nv {
                let v = blobs_real([x as f64 - h, y as f64 - h, z as f64 - h]);
                vol.push(Complex::new(v, 0.0));
            }
        }
    }
    CenteredFft::new(&[nv, nv, nv]).process(&mut vol, Direction::Forward);
    vol
}

fn to_c32(v: &[Complex<f64>]) -> Vec<Complex<f32>> {
    v.iter()
        .map(|v| Complex::new(v.re as f32, v.im as f32))
        .collect()
}

fn rel_l2(a: &[Complex<f64>], b: &[Complex<f64>]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(a, b)| (a - b).norm_sqr()).sum();
    let den: f64 = b.iter().map(|b| b.norm_sqr()).sum();
    (num / den).sqrt()
}

const D: usize = 32;

#[test]
fn closed_form_and_fft_volumes_agree() {
    for nv in [D, 2 * D] {
        let err = rel_l2(&fft_volume(nv), &closed_form_volume(nv));
        eprintln!("Nv {nv}: closed form vs FFT of the sampled blobs: rel L2 {err:.2e}");
        assert!(err < 1e-4, "Nv {nv}: {err}");
    }
}

#[test]
fn slices_match_the_closed_form() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(5);
    let rots: Vec<[f32; 9]> = (0..8).map(|_| rotation(&mut rng)).collect();
    let mut report = String::new();
    for nv in [D, 2 * D] {
        let geom = SliceGeometry::new(D, nv).unwrap();
        let vol = to_c32(&closed_form_volume(nv));
        // The exact values at the slice coordinates, on unclipped pixels only.
        let mut exact = Vec::new();
        let mut keep = Vec::new();
        let r2 = geom.max_radius.unwrap().powi(2);
        for rot in &rots {
            for row in 0..D {
                for col in 0..D {
                    let (kx, ky) = (col as f64 - (D / 2) as f64, row as f64 - (D / 2) as f64);
                    let inside = (kx * kx + ky * ky) as f32 <= r2;
                    keep.push(inside);
                    let nu =
                        [0, 1, 2].map(|a| (kx * rot[a] as f64 + ky * rot[3 + a] as f64) / D as f64);
                    exact.push(if inside {
                        blobs_ft(nu)
                    } else {
                        Complex::new(0.0, 0.0)
                    });
                }
            }
        }
        for interp in INTERPS {
            let got = c64(&project(&be, &vol, &geom, interp, &rots));
            // Clipped pixels must be exactly zero.
            assert!(got
                .iter()
                .zip(&keep)
                .all(|(g, &k)| k || *g == Complex::new(0.0, 0.0)));
            let err = rel_l2(&got, &exact);
            report += &format!(
                "  Nv {nv:3} (s = {}) {interp:?}: rel L2 {err:.2e}\n",
                nv / D
            );
            let bound = match (interp, nv / D) {
                (Interp::Cubic, 2) => 1e-3,
                (Interp::Cubic, _) => 1e-2,
                (Interp::Trilinear, 2) => 5e-2,
                (Interp::Trilinear, _) => 1.5e-1,
                (Interp::Nearest, 2) => 2e-1,
                (Interp::Nearest, _) => 3.5e-1,
            };
            assert!(
                err < bound,
                "Nv {nv} {interp:?}: rel L2 {err:.3e} ≥ {bound}"
            );
        }
    }
    eprintln!("slice vs closed form (D = {D}, blobs σ 1.6–2.0 voxels):\n{report}");
}

/// The Fourier-slice theorem with our conventions: the 2-D inverse centered DFT of a slice
/// is the projection along `R[2,:]`, centred at pixel `D/2`. First with the closed form at the
/// pixel frequencies (checks the conventions of this test), then through the operator on
/// the FFT of the real-space volume (checks the operator's grid layout, rotation and
/// centre).
#[test]
fn fourier_slice_theorem() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(9);
    let rots: Vec<[f32; 9]> = (0..4).map(|_| rotation(&mut rng)).collect();
    let fft2 = CenteredFft::new(&[D, D]);
    let projections: Vec<Vec<Complex<f64>>> = rots
        .iter()
        .map(|rot| {
            (0..D * D)
                .map(|p| {
                    let (u, v) = (
                        (p % D) as f64 - (D / 2) as f64,
                        (p / D) as f64 - (D / 2) as f64,
                    );
                    Complex::new(blobs_projection(rot, u, v), 0.0)
                })
                .collect()
        })
        .collect();
    for (rot, proj) in rots.iter().zip(&projections) {
        let mut img: Vec<Complex<f64>> = (0..D * D)
            .map(|p| {
                let (kx, ky) = (
                    (p % D) as f64 - (D / 2) as f64,
                    (p / D) as f64 - (D / 2) as f64,
                );
                blobs_ft(
                    [0, 1, 2].map(|a| (kx * rot[a] as f64 + ky * rot[3 + a] as f64) / D as f64),
                )
            })
            .collect();
        fft2.process(&mut img, Direction::Inverse);
        let err = rel_l2(&img, proj);
        assert!(err < 1e-4, "closed-form slice vs projection: {err:e}");
    }
    // Through the operator, on the oversampled grid.
    let nv = 2 * D;
    let geom = SliceGeometry::new(D, nv).unwrap();
    let vol = to_c32(&fft_volume(nv));
    for (interp, bound) in [(Interp::Cubic, 1e-3), (Interp::Trilinear, 5e-2)] {
        let slices = project(&be, &vol, &geom, interp, &rots);
        let mut worst: f64 = 0.0;
        for (i, proj) in projections.iter().enumerate() {
            let mut img = c64(&slices[i * D * D..][..D * D]);
            fft2.process(&mut img, Direction::Inverse);
            worst = worst.max(rel_l2(&img, proj));
        }
        eprintln!(
            "Fourier-slice theorem through the operator, {interp:?} on 2N: rel L2 {worst:.2e}"
        );
        assert!(worst < bound, "{interp:?}: {worst:e}");
    }
    // A transposed rotation (the other common convention) must fail this test.
    let rt: Vec<[f32; 9]> = rots
        .iter()
        .map(|r| [r[0], r[3], r[6], r[1], r[4], r[7], r[2], r[5], r[8]])
        .collect();
    let slices = project(&be, &vol, &geom, Interp::Cubic, &rt);
    let mut img = c64(&slices[..D * D]);
    fft2.process(&mut img, Direction::Inverse);
    assert!(rel_l2(&img, &projections[0]) > 0.1);
}

// ---------------------------------------------------------------------------------------
// Exact axis permutations

fn idx(nv: usize, z: usize, y: usize, x: usize) -> usize {
    (z * nv + y) * nv + x
}

#[test]
fn identity_slice_is_the_central_plane() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(3);
    let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    for (d, nv) in [(16, 16), (16, 32)] {
        let s = nv / d;
        let vol = random_complex(&mut rng, nv * nv * nv);
        for clip in [Some(d as f32 / 2.0 - 1.0), None] {
            let geom = SliceGeometry::new(d, nv)
                .unwrap()
                .with_max_radius(clip)
                .unwrap();
            for interp in [Interp::Nearest, Interp::Trilinear] {
                let mut out = vec![Complex::new(0.0, 0.0); d * d];
                be.slice(&vol, &geom, interp, &[id], &mut out).unwrap();
                for r in 0..d {
                    for c in 0..d {
                        let (kx, ky) = (c as i64 - d as i64 / 2, r as i64 - d as i64 / 2);
                        let kept = clip.is_none_or(|m| ((kx * kx + ky * ky) as f32) <= m * m);
                        let want = if kept {
                            vol[idx(nv, nv / 2, s * r, s * c)]
                        } else {
                            Complex::new(0.0, 0.0)
                        };
                        assert_eq!(out[r * d + c], want, "D {d} Nv {nv} {interp:?} ({r},{c})");
                    }
                }
            }
            // Cubic interpolates its data: on grid points it returns the samples.
            let mut coef = vol.clone();
            cubic::prefilter(&mut coef, nv).unwrap();
            let mut out = vec![Complex::new(0.0, 0.0); d * d];
            be.slice(&coef, &geom, Interp::Cubic, &[id], &mut out)
                .unwrap();
            for r in 0..d {
                for c in 0..d {
                    let (kx, ky) = (c as i64 - d as i64 / 2, r as i64 - d as i64 / 2);
                    let kept = clip.is_none_or(|m| ((kx * kx + ky * ky) as f32) <= m * m);
                    let want = if kept {
                        vol[idx(nv, nv / 2, s * r, s * c)]
                    } else {
                        Complex::new(0.0, 0.0)
                    };
                    assert!((out[r * d + c] - want).norm() < 1e-4, "cubic ({r},{c})");
                }
            }
        }
    }
}

#[test]
fn quarter_turns_permute_axes() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(4);
    let d = 16;
    let nv = 16;
    let h = nv / 2;
    let vol = random_complex(&mut rng, nv * nv * nv);
    let geom = SliceGeometry::new(d, nv)
        .unwrap()
        .with_max_radius(None)
        .unwrap();
    // +90° about z: R[0,:] = (0,−1,0), R[1,:] = (1,0,0): g = (ky, −kx, 0) + Nv/2.
    let rz = [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    // +90° about x: R[0,:] = (1,0,0), R[1,:] = (0,0,−1): g = (kx, 0, −ky) + Nv/2.
    let rx = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0];
    for interp in [Interp::Nearest, Interp::Trilinear] {
        let mut out = vec![Complex::new(0.0, 0.0); 2 * d * d];
        be.slice(&vol, &geom, interp, &[rz, rx], &mut out).unwrap();
        for r in 0..d {
            for c in 0..d {
                let (kx, ky) = (c as i64 - h as i64, r as i64 - h as i64);
                // About z: voxel (z, y, x) = (h, h − kx, h + ky); y = Nv is outside → 0.
                let y = h as i64 - kx;
                let want = if y < nv as i64 {
                    vol[idx(nv, h, y as usize, (h as i64 + ky) as usize)]
                } else {
                    Complex::new(0.0, 0.0)
                };
                assert_eq!(out[r * d + c], want, "about z, {interp:?} ({r},{c})");
                // About x: voxel (h − ky, h, h + kx).
                let z = h as i64 - ky;
                let want = if z < nv as i64 {
                    vol[idx(nv, z as usize, h, c)]
                } else {
                    Complex::new(0.0, 0.0)
                };
                assert_eq!(
                    out[d * d + r * d + c],
                    want,
                    "about x, {interp:?} ({r},{c})"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Determinism

fn bits_c(v: &[Complex<f64>]) -> Vec<(u64, u64)> {
    v.iter().map(|c| (c.re.to_bits(), c.im.to_bits())).collect()
}

#[test]
fn backprojection_is_independent_of_threads_and_batches() {
    let mut rng = Rng::new(21);
    let n = 20;
    let one = CpuBackend::with_threads(1).unwrap();
    let many = CpuBackend::with_threads(3).unwrap();
    for (d, nv, clip) in [(16, 32, true), (16, 16, false), (10, 10, false)] {
        let mut geom = SliceGeometry::new(d, nv).unwrap();
        if !clip {
            geom = geom.with_max_radius(None).unwrap();
        }
        let d2 = geom.image_len();
        let rots: Vec<[f32; 9]> = (0..n).map(|_| rotation(&mut rng)).collect();
        let imgs = random_complex(&mut rng, n * d2);
        let vals: Vec<f32> = (0..n * d2).map(|_| rng.normal() as f32).collect();
        for interp in INTERPS {
            let run = |be: &CpuBackend, batch: usize| {
                let mut acc = vec![Complex::new(0.0, 0.0); geom.volume_len()];
                let mut racc = vec![0.0f64; geom.volume_len()];
                for (b, r) in rots.chunks(batch).enumerate() {
                    let range = b * batch * d2..(b * batch + r.len()) * d2;
                    be.backproject(&imgs[range.clone()], &geom, interp, r, &mut acc)
                        .unwrap();
                    be.backproject_real(&vals[range], &geom, interp, r, &mut racc)
                        .unwrap();
                }
                (
                    bits_c(&acc),
                    racc.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                )
            };
            let reference = run(&one, n);
            assert!(reference.1.iter().any(|&b| b != 0));
            for be in [&one, &many] {
                for batch in [1, 7, n] {
                    assert!(
                        run(be, batch) == reference,
                        "D {d} Nv {nv} {interp:?}: {} threads, batch {batch} differs",
                        be.threads()
                    );
                }
            }
            // The single-image free functions follow the same order.
            let mut acc = vec![Complex::new(0.0, 0.0); geom.volume_len()];
            for (i, r) in rots.iter().enumerate() {
                forward::backproject(&imgs[i * d2..][..d2], &geom, interp, r, &mut acc).unwrap();
            }
            assert!(
                bits_c(&acc) == reference.0,
                "{interp:?}: free function differs"
            );
        }
    }
}

#[test]
fn slicing_is_independent_of_threads() {
    let mut rng = Rng::new(22);
    let geom = SliceGeometry::new(16, 32).unwrap();
    let rots: Vec<[f32; 9]> = (0..9).map(|_| rotation(&mut rng)).collect();
    let vol = random_complex(&mut rng, geom.volume_len());
    for interp in INTERPS {
        let mut a = vec![Complex::new(0.0, 0.0); 9 * 256];
        let mut b = a.clone();
        CpuBackend::with_threads(1)
            .unwrap()
            .slice(&vol, &geom, interp, &rots, &mut a)
            .unwrap();
        CpuBackend::with_threads(3)
            .unwrap()
            .slice(&vol, &geom, interp, &rots, &mut b)
            .unwrap();
        assert_eq!(a, b);
        let mut one = vec![Complex::new(0.0, 0.0); 256];
        forward::slice(&vol, &geom, interp, &rots[4], &mut one).unwrap();
        assert_eq!(one, a[4 * 256..5 * 256]);
    }
}

// ---------------------------------------------------------------------------------------
// Argument checks

#[test]
fn bad_arguments_are_errors_not_panics() {
    let be = CpuBackend::new();
    let geom = SliceGeometry::new(8, 16).unwrap();
    let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let vol = vec![Complex::new(0.0f32, 0.0); geom.volume_len()];
    let mut out = vec![Complex::new(0.0f32, 0.0); 2 * 64];
    let mut acc = vec![Complex::new(0.0f64, 0.0); geom.volume_len()];
    let mut racc = vec![0.0f64; geom.volume_len()];

    let e = be
        .slice(&vol[1..], &geom, Interp::Trilinear, &[id, id], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4095") && e.contains("16³"), "{e}");
    let e = be
        .slice(&vol, &geom, Interp::Trilinear, &[id], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("128") && e.contains("1 rotations"), "{e}");
    assert!(be
        .backproject(&out[..64], &geom, Interp::Cubic, &[id, id], &mut acc)
        .is_err());
    assert!(be
        .backproject_real(&[0.0; 64], &geom, Interp::Nearest, &[id], &mut racc[1..])
        .is_err());
    let mut bad = id;
    bad[4] = f32::NAN;
    let e = be
        .slice(&vol, &geom, Interp::Nearest, &[id, bad], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rotation 1"), "{e}");
    bad[4] = 1e30;
    assert!(be
        .backproject(&out[..64], &geom, Interp::Trilinear, &[bad], &mut acc)
        .is_err());
    // Public fields can be set to nonsense; every call re-validates.
    let odd = SliceGeometry {
        image_size: 7,
        volume_size: 14,
        max_radius: None,
    };
    assert!(be.slice(&vol, &odd, Interp::Nearest, &[], &mut []).is_err());
    assert!(CpuBackend::with_threads(0).is_err());
    // Empty batches are fine.
    be.slice(&vol, &geom, Interp::Cubic, &[], &mut []).unwrap();
    be.backproject(&[], &geom, Interp::Cubic, &[], &mut acc)
        .unwrap();
}
