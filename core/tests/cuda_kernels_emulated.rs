//! The CUDA kernels of kernels/*.cu, compiled as host C++ through a small shim
//! (tests/cuda_emu), against the CPU backend on the same random inputs. This checks their
//! arithmetic, indexing, stencils and the centered-transform steps on every machine; the
//! real-GPU test (cuda_backend.rs) adds cuFFT, the launches and the device memory.
//!
//! What is expected, and asserted:
//! - slice (f32 sums in the CPU's order, one gather slab at these sizes), CTF (same f64
//!   formula and libm): the same bits as the CPU;
//! - backprojection: the CPU's contributions, summed per voxel in another order (image by
//!   image, pixel by pixel): relative error ≤ 1e-12;
//! - images ↔ spectra: the kernels' modulation and phase ramps around a naive f64 DFT
//!   standing in for cuFFT, against rustfft in f32: relative error ≤ 2e-6.

mod cuda_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cuda_common::*;
use num_complex::Complex;
use recovar_core::backend::columns::kernel_reach;
use recovar_core::backend::{Backend, ColumnBatch, CpuBackend};
use recovar_core::forward::ctf::ctf_constants;
use recovar_core::forward::cubic::prefilter;
use recovar_core::forward::{Interp, SliceGeometry};
use recovar_core::rng::Rng;

fn emu_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// Builds the driver once (c++, or $CXX).
fn driver() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_emu/driver.cpp");
        let exe = emu_dir().join("driver");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args([
                "-std=c++17",
                "-O2",
                "-ffp-contract=off",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-o",
            ])
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C++ compiler `{cxx}`: {e}"));
        assert!(
            out.status.success(),
            "building the kernel emulation failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    })
}

fn bytes<T: Copy>(v: &[T]) -> Vec<u8> {
    // SAFETY: plain f32/f64/Complex data, read as bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
        .to_vec()
}

fn from_bytes<T: Copy + Default>(b: &[u8]) -> Vec<T> {
    let n = b.len() / std::mem::size_of::<T>();
    let mut v = vec![T::default(); n];
    // SAFETY: `v` has room for exactly these bytes; T is plain data.
    unsafe {
        std::ptr::copy_nonoverlapping(
            b.as_ptr(),
            v.as_mut_ptr().cast::<u8>(),
            n * std::mem::size_of::<T>(),
        )
    };
    v
}

/// Runs `op` with `args` and the named input arrays; returns out.bin's bytes.
fn run(op: &str, args: &str, inputs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = emu_dir().join(format!(
        "case{}",
        CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("args.txt"), args).unwrap();
    for (name, data) in inputs {
        std::fs::write(dir.join(name), data).unwrap();
    }
    let out = Command::new(driver()).arg(op).arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "emulated {op} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join("out.bin")).unwrap()
}

fn interp_code(i: Interp) -> i32 {
    match i {
        Interp::Nearest => 0,
        Interp::Trilinear => 1,
        Interp::Cubic => 2,
    }
}

fn geom_args(n: usize, g: &SliceGeometry, interp: Interp) -> String {
    let (clip, r2) = match g.max_radius {
        Some(r) => (1, r * r),
        None => (0, 0.0f32),
    };
    // r² printed exactly (shortest round-trip form).
    format!(
        "{n} {} {} {} {clip} {r2:?}",
        g.image_size,
        g.volume_size,
        interp_code(interp)
    )
}

#[test]
fn slice_is_the_cpu_slice_bit_for_bit() {
    let (d, n) = (16, 6);
    let mut rng = Rng::new(11);
    let cpu = CpuBackend::new();
    for geom in geometries(d) {
        let mut vol = complex(&mut rng, geom.volume_len());
        prefilter(&mut vol, geom.volume_size).unwrap();
        let rots = rotations(&mut rng, n);
        for interp in INTERPS {
            let mut want = vec![Complex::new(0.0f32, 0.0); n * d * d];
            cpu.slice(&vol, &geom, interp, &rots, &mut want).unwrap();
            let got: Vec<Complex<f32>> = from_bytes(&run(
                "slice",
                &geom_args(n, &geom, interp),
                &[("vol.bin", bytes(&vol)), ("rots.bin", bytes(&rots))],
            ));
            assert_eq!(got.len(), want.len());
            let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                bad, 0,
                "{interp:?} {geom:?}: {bad} pixels differ from the CPU"
            );
            assert!(want.iter().any(|v| v.norm() > 0.0));
        }
    }
}

#[test]
fn backprojection_is_the_cpu_backprojection() {
    let (d, n) = (16, 7);
    let mut rng = Rng::new(12);
    let cpu = CpuBackend::new();
    for geom in geometries(d) {
        let rots = rotations(&mut rng, n);
        let images = complex(&mut rng, n * d * d);
        let values = real(&mut rng, n * d * d);
        for interp in INTERPS {
            // Complex images onto a non-zero accumulator (the kernels add to it).
            let acc0 = complex(&mut rng, geom.volume_len())
                .iter()
                .map(|c| Complex::new(c.re as f64, c.im as f64))
                .collect::<Vec<_>>();
            let mut want = acc0.clone();
            cpu.backproject(&images, &geom, interp, &rots, &mut want)
                .unwrap();
            let got: Vec<Complex<f64>> = from_bytes(&run(
                "bp_complex",
                &geom_args(n, &geom, interp),
                &[
                    ("vals.bin", bytes(&images)),
                    ("rots.bin", bytes(&rots)),
                    ("acc.bin", bytes(&acc0)),
                ],
            ));
            let e = rel_err(c64(&got), c64(&want));
            assert!(
                e <= 1e-12,
                "{interp:?} {geom:?} complex: relative error {e:.2e}"
            );
            // The images moved the accumulator (the comparison is not of acc0 with itself).
            assert!(rel_err(c64(&acc0), c64(&want)) > 1e-3);

            let racc0: Vec<f64> = real(&mut rng, geom.volume_len())
                .iter()
                .map(|&v| v as f64)
                .collect();
            let mut rwant = racc0.clone();
            cpu.backproject_real(&values, &geom, interp, &rots, &mut rwant)
                .unwrap();
            let rgot: Vec<f64> = from_bytes(&run(
                "bp_real",
                &geom_args(n, &geom, interp),
                &[
                    ("vals.bin", bytes(&values)),
                    ("rots.bin", bytes(&rots)),
                    ("acc.bin", bytes(&racc0)),
                ],
            ));
            let e = rel_err(r64(&rgot), r64(&rwant));
            assert!(
                e <= 1e-12,
                "{interp:?} {geom:?} real: relative error {e:.2e}"
            );
        }
    }
}

#[test]
fn ctf_is_the_cpu_ctf_bit_for_bit() {
    let (d, n, apix) = (24, 5, 1.7);
    let mut rng = Rng::new(13);
    let params = ctf_params(&mut rng, n);
    let mut want = vec![0.0f32; n * d * d];
    CpuBackend::new().ctf(&params, d, apix, &mut want).unwrap();
    let consts: Vec<f64> = params.iter().flat_map(ctf_constants).collect();
    let inv = 1.0 / (d as f64 * apix);
    let got: Vec<f32> = from_bytes(&run(
        "ctf",
        &format!("{n} {d} {inv:?}"),
        &[("consts.bin", bytes(&consts))],
    ));
    let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    // libm's sin/cos are the CPU's here; on a GPU they may differ in the last f64 bit.
    assert!(
        bad <= got.len() / 1000,
        "{bad} of {} CTF values differ",
        got.len()
    );
    assert!(rel_err(r32(&got), r32(&want)) <= 1e-6);
}

#[test]
fn images_to_spectra_and_back_match_the_cpu() {
    let (d, n) = (16, 4);
    let mut rng = Rng::new(14);
    let cpu = CpuBackend::new();
    let images = real(&mut rng, n * d * d);
    let shifts = shifts(&mut rng, n);
    let mut want = vec![Complex::new(0.0f32, 0.0); n * d * d];
    cpu.images_to_spectra(&images, d, &shifts, &mut want)
        .unwrap();
    let flat: Vec<f32> = shifts.iter().flatten().copied().collect();
    let got: Vec<Complex<f32>> = from_bytes(&run(
        "to_spectra",
        &format!("{n} {d}"),
        &[("images.bin", bytes(&images)), ("shifts.bin", bytes(&flat))],
    ));
    let e = rel_err(c32(&got), c32(&want));
    assert!(e <= 2e-6, "images_to_spectra: relative error {e:.2e}");

    let spectra = complex(&mut rng, n * d * d);
    let mut iwant = vec![0.0f32; n * d * d];
    cpu.spectra_to_images(&spectra, d, &mut iwant).unwrap();
    let igot: Vec<f32> = from_bytes(&run(
        "to_images",
        &format!("{n} {d}"),
        &[("spectra.bin", bytes(&spectra))],
    ));
    let e = rel_err(r32(&igot), r32(&iwant));
    assert!(e <= 2e-6, "spectra_to_images: relative error {e:.2e}");
}

/// Inputs of a column-accumulation case: `m` images of side `d`.
struct ColumnCase {
    rots: Vec<[f32; 9]>,
    cr: Vec<Complex<f32>>,
    ctf: Vec<f32>,
    masks: Vec<f32>,
}

fn column_case(rng: &mut Rng, m: usize, d: usize, masked: bool) -> ColumnCase {
    let npix = m * d * d;
    ColumnCase {
        rots: rotations(rng, m),
        cr: complex(rng, npix),
        ctf: real(rng, npix),
        masks: if masked {
            (0..npix).map(|_| rng.uniform_in(0.0, 1.0) as f32).collect()
        } else {
            Vec::new()
        },
    }
}

impl ColumnCase {
    fn batch(&self) -> ColumnBatch<'_> {
        ColumnBatch {
            rotations: &self.rots,
            cr: &self.cr,
            ctf: &self.ctf,
            masks: &self.masks,
        }
    }
}

/// The column kernels (patch sums, masked noise transforms, gather backprojection) against
/// the CPU reference accumulator: a first batch on the CPU, then a second batch on both,
/// onto the accumulators the first left. Without masks the sums are the same bits; with
/// masks `H` still is, and `B` differs by the transforms' rounding (naive f64 DFT here,
/// rustfft in f32 on the CPU).
#[test]
fn column_accumulation_is_the_cpu_accumulation() {
    let (d, m) = (16usize, 12usize);
    let n3 = d * d * d;
    let freqs: Vec<[i32; 3]> = vec![[1, 0, 0], [2, -1, 1], [0, 3, -2], [4, 2, 5]];
    let ncol = freqs.len();
    let cpu = CpuBackend::new();
    let geom = SliceGeometry::new(d, d).unwrap();
    let (clip, r2) = match geom.max_radius {
        Some(r) => (1, r * r),
        None => (0, 0.0f32),
    };
    for (masked, group) in [(false, ncol), (true, ncol), (true, 1), (true, 3)] {
        let mut rng = Rng::new(21 + group as u64);
        let sigma2: Vec<f32> = (0..d * d)
            .map(|_| rng.uniform_in(0.5, 2.0) as f32)
            .collect();
        let first = column_case(&mut rng, m, d, masked);
        let second = column_case(&mut rng, m, d, masked);
        let half = 1usize;
        let mut acc = cpu.column_accumulator(d, &sigma2, ncol).unwrap();
        acc.start(&freqs).unwrap();
        acc.add(half, &first.batch()).unwrap();
        let before = acc.sums().unwrap().to_vec();
        let hits = acc.add(half, &second.batch()).unwrap();
        let want = acc.sums().unwrap().to_vec();
        assert!(hits > ncol && hits < ncol * m, "hits {hits}");

        // The device layout: per column, per half, N³ (H) and 2·N³ (B) f64.
        let mut h0 = Vec::with_capacity(ncol * 2 * n3);
        let mut b0 = Vec::with_capacity(ncol * 4 * n3);
        for s in &before {
            for hf in 0..2 {
                h0.extend_from_slice(&s.h[hf]);
                b0.extend(s.b[hf].iter().flat_map(|c| [c.re, c.im]));
            }
        }
        let xis: Vec<i32> = freqs.iter().flatten().copied().collect();
        let flat_rots: Vec<f32> = second.rots.iter().flatten().copied().collect();
        let mut inputs = vec![
            ("cr.bin", bytes(&second.cr)),
            ("ctf.bin", bytes(&second.ctf)),
            ("rots.bin", bytes(&flat_rots)),
            ("xis.bin", bytes(&xis)),
            ("sigma2.bin", bytes(&sigma2)),
            ("h.bin", bytes(&h0)),
            ("b.bin", bytes(&b0)),
        ];
        if masked {
            inputs.push(("masks.bin", bytes(&second.masks)));
        }
        let out: Vec<f64> = from_bytes(&run(
            "columns",
            &format!(
                "{m} {d} {ncol} {half} {} {group} {:?} {clip} {r2:?}",
                masked as i32,
                kernel_reach()
            ),
            &inputs,
        ));
        assert_eq!(out.len(), 1 + ncol * 6 * n3);
        assert_eq!(out[0] as usize, hits, "reached pairs");
        let (h, b) = out[1..].split_at(ncol * 2 * n3);
        for (j, s) in want.iter().enumerate() {
            for hf in 0..2 {
                let at = (j * 2 + hf) * n3;
                let gh = &h[at..at + n3];
                let gb: Vec<Complex<f64>> = b[2 * at..2 * (at + n3)]
                    .chunks_exact(2)
                    .map(|c| Complex::new(c[0], c[1]))
                    .collect();
                let what = format!("masked {masked}, group {group}, column {j}, half {hf}");
                let bad_h = gh.iter().zip(&s.h[hf]).filter(|(a, b)| a != b).count();
                assert_eq!(bad_h, 0, "{what}: {bad_h} voxels of H differ");
                if masked {
                    let e = rel_err(c64(&gb), c64(&s.b[hf]));
                    assert!(e <= 1e-6, "{what}: B relative error {e:.2e}");
                } else {
                    let bad_b = gb.iter().zip(&s.b[hf]).filter(|(a, b)| a != b).count();
                    assert_eq!(bad_b, 0, "{what}: {bad_b} voxels of B differ");
                }
            }
            // The second batch moved the column (the comparison is not of a sum with itself).
            assert!(rel_err(c64(&s.b[half]), c64(&before[j].b[half])) > 1e-3);
        }
    }
}
