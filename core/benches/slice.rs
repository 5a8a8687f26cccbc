//! Throughput of batched slicing and backprojection on the CPU backend.
//!
//! `cargo bench -p recovar-core --bench slice` prints images per second for trilinear on the
//! oversampled 2N grid (the mean / kernel-regression path) and cubic on the N grid (the
//! projection of the mean and the basis), at D = 64, 128, 256. A plain timing loop
//! (no harness): each measurement repeats the batch until about a second has passed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use num_complex::Complex;
use recovar_core::backend::{Backend, CpuBackend};
use recovar_core::forward::{cubic, Interp, SliceGeometry};
use recovar_core::rng::Rng;

/// Cheap deterministic fill (content does not matter for timing, only that it is finite and
/// not denormal).
fn fill(n: usize, salt: u64) -> Vec<Complex<f32>> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let a = ((h >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
            let b = (((h >> 16) & 0xff_ffff) as f32) / (1u64 << 24) as f32 - 0.5;
            Complex::new(a, b)
        })
        .collect()
}

/// Runs `f` (one batch of `n` images) until `budget` has passed; returns images per second.
fn rate(n: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up (page faults, caches)
    let start = Instant::now();
    let mut reps = 0usize;
    while reps == 0 || start.elapsed() < budget {
        f();
        reps += 1;
    }
    (reps * n) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench --bench slice -- cubic 256` runs only the rows whose label contains every
    // word given (cargo's own `--bench` flag is ignored).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.to_lowercase())
        .collect();
    let be = CpuBackend::new();
    let budget = Duration::from_millis(1500);
    println!(
        "CPU backend, {} threads (shared machine: numbers are indicative)",
        be.threads()
    );
    println!(
        "{:>4} {:>5} {:>10} {:>6} {:>14} {:>14}",
        "D", "Nv", "interp", "batch", "slice img/s", "backproj img/s"
    );
    let mut rng = Rng::new(0);
    for d in [64usize, 128, 256] {
        for (interp, s) in [(Interp::Trilinear, 2usize), (Interp::Cubic, 1)] {
            let nv = s * d;
            let label = format!("{d} {nv} {interp:?}").to_lowercase();
            if !filters.iter().all(|f| label.contains(f.as_str())) {
                continue;
            }
            let geom = SliceGeometry::new(d, nv).expect("valid geometry");
            let n = (1usize << 22) / (d * d);
            let rots: Vec<[f32; 9]> = (0..n).map(|_| rng.rotation().map(|v| v as f32)).collect();
            let mut vol = fill(geom.volume_len(), 1);
            if interp == Interp::Cubic {
                let t = Instant::now();
                cubic::prefilter(&mut vol, nv).expect("prefilter");
                println!(
                    "     (cubic prefilter of {nv}³: {:.2} s)",
                    t.elapsed().as_secs_f64()
                );
            }
            let imgs = fill(n * geom.image_len(), 2);
            let mut out = vec![Complex::new(0.0f32, 0.0); n * geom.image_len()];
            let sl = rate(n, budget, || {
                be.slice(&vol, &geom, interp, &rots, &mut out)
                    .expect("slice");
                black_box(&out);
            });
            drop(vol);
            let mut acc = vec![Complex::new(0.0f64, 0.0); geom.volume_len()];
            let bp = rate(n, budget, || {
                be.backproject(&imgs, &geom, interp, &rots, &mut acc)
                    .expect("backproject");
                black_box(&acc);
            });
            println!(
                "{d:>4} {nv:>5} {:>10} {n:>6} {sl:>14.0} {bp:>14.0}",
                format!("{interp:?}")
            );
        }
    }
}
