//! Random inputs and comparisons shared by the GPU-vs-CPU tests: the real ones
//! (cuda_backend.rs, on a GPU) and the host emulation of the kernels
//! (cuda_kernels_emulated.rs, everywhere).
#![allow(dead_code)]

use num_complex::Complex;
use recovar_core::dataset::CtfParams;
use recovar_core::forward::{Interp, SliceGeometry};
use recovar_core::rng::Rng;

pub const INTERPS: [Interp; 3] = [Interp::Nearest, Interp::Trilinear, Interp::Cubic];

/// Geometries covering the N and 2N grids, with and without clipping.
pub fn geometries(d: usize) -> Vec<SliceGeometry> {
    let g1 = SliceGeometry::new(d, d).unwrap();
    let g2 = SliceGeometry::new(d, 2 * d).unwrap();
    vec![
        g1,
        g2,
        g1.with_max_radius(None).unwrap(),
        g2.with_max_radius(None).unwrap(),
    ]
}

pub fn rotations(rng: &mut Rng, n: usize) -> Vec<[f32; 9]> {
    (0..n).map(|_| rng.rotation().map(|v| v as f32)).collect()
}

pub fn complex(rng: &mut Rng, n: usize) -> Vec<Complex<f32>> {
    (0..n)
        .map(|_| Complex::new(rng.normal() as f32, rng.normal() as f32))
        .collect()
}

pub fn real(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

pub fn ctf_params(rng: &mut Rng, n: usize) -> Vec<CtfParams> {
    (0..n)
        .map(|_| CtfParams {
            defocus_u: rng.uniform_in(8000.0, 30000.0) as f32,
            defocus_v: rng.uniform_in(8000.0, 30000.0) as f32,
            defocus_angle_deg: rng.uniform_in(0.0, 180.0) as f32,
            voltage_kv: 300.0,
            cs_mm: 2.7,
            amp_contrast: 0.1,
            phase_shift_deg: rng.uniform_in(0.0, 90.0) as f32,
            bfactor: rng.uniform_in(0.0, 100.0) as f32,
            contrast: rng.uniform_in(0.5, 1.5) as f32,
        })
        .collect()
}

/// Shifts in pixels, a zero one among them (the kernels skip the ramp for it, as the CPU).
pub fn shifts(rng: &mut Rng, n: usize) -> Vec<[f32; 2]> {
    (0..n)
        .map(|i| {
            if i == 0 {
                [0.0, 0.0]
            } else {
                [
                    rng.uniform_in(-3.0, 3.0) as f32,
                    rng.uniform_in(-3.0, 3.0) as f32,
                ]
            }
        })
        .collect()
}

/// `max |a − b| / max |b|` over values given as f64 pairs.
pub fn rel_err(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    let (mut diff, mut scale, mut n) = (0.0f64, 0.0f64, 0usize);
    for (x, y) in a.into_iter().zip(b) {
        n += 1;
        diff = diff.max((x - y).abs());
        scale = scale.max(y.abs());
    }
    assert!(n > 0, "nothing compared");
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

pub fn c32(v: &[Complex<f32>]) -> impl Iterator<Item = f64> + '_ {
    v.iter().flat_map(|c| [c.re as f64, c.im as f64])
}

pub fn c64(v: &[Complex<f64>]) -> impl Iterator<Item = f64> + '_ {
    v.iter().flat_map(|c| [c.re, c.im])
}

pub fn r32(v: &[f32]) -> impl Iterator<Item = f64> + '_ {
    v.iter().map(|&x| x as f64)
}

pub fn r64(v: &[f64]) -> impl Iterator<Item = f64> + '_ {
    v.iter().copied()
}
