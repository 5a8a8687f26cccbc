//! The CUDA backend against the CPU backend on the same random inputs, every operation and
//! stencil, plus a small pipeline run on both. Needs an NVIDIA GPU: without one each test
//! prints "skipped: no CUDA device" and passes, unless RECOVAR_REQUIRE_GPU=1 (set it on the
//! GPU machine, tests/gpu/run.sh does) so that a broken driver cannot pass silently.
//!
//! Tolerances (relative to the largest reference value):
//! - slice: 1e-6 (same stencils and f32 weights as the CPU; sums may split differently
//!   where the CPU cuts the volume into gather slabs);
//! - backprojection: 1e-12 (the CPU's contributions, added in another order in f64), and
//!   the GPU's own results are the same bits on every run and for every chunk size;
//! - CTF: 1e-6 (the same f64 formula; GPU sin/cos may differ in the last bit);
//! - images ↔ spectra: 1e-5 (cuFFT vs rustfft, both f32);
//! - covariance-column accumulators: H and, without image masks, B the CPU's bits; B with
//!   masks 1e-5 (the noise term's transforms, cuFFT vs rustfft);
//! - pipeline (mean, eigenvalues, embeddings): stated at the test.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::*;
use num_complex::Complex;
use recovar_core::backend::cuda::{libraries_present, CudaBackend};
use recovar_core::backend::{Backend, ColumnBatch, CpuBackend};
use recovar_core::forward::cubic::prefilter;
use recovar_core::forward::SliceGeometry;
use recovar_core::rng::Rng;

/// The GPU backend, or `None` (after printing the skip line) when this machine has none.
fn gpu(test: &str) -> Option<CudaBackend> {
    let required = std::env::var("RECOVAR_REQUIRE_GPU").as_deref() == Ok("1");
    let present = libraries_present().is_ok()
        && cudarc::driver::CudaContext::device_count().is_ok_and(|n| n > 0);
    if !present {
        assert!(
            !required,
            "RECOVAR_REQUIRE_GPU=1 but no CUDA device: {libraries_present:?}",
            libraries_present = libraries_present()
        );
        eprintln!("{test}: skipped: no CUDA device");
        return None;
    }
    // A device is there: failing to use it is a failure, not a skip.
    let b = CudaBackend::new(0).unwrap_or_else(|e| panic!("{test}: {e}"));
    eprintln!("{test}: on {}", b.description());
    Some(b)
}

fn large_geometries() -> Vec<SliceGeometry> {
    // 2N grid of a 64-px box: the CPU gathers in several slabs here.
    vec![SliceGeometry::new(64, 128).unwrap()]
}

#[test]
fn slice_matches_the_cpu() {
    let Some(gpu) = gpu("slice_matches_the_cpu") else {
        return;
    };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(21);
    let n = 9;
    for geom in geometries(16).into_iter().chain(large_geometries()) {
        let d = geom.image_size;
        let mut vol = complex(&mut rng, geom.volume_len());
        prefilter(&mut vol, geom.volume_size).unwrap();
        let rots = rotations(&mut rng, n);
        for interp in INTERPS {
            let mut want = vec![Complex::new(0.0f32, 0.0); n * d * d];
            let mut got = want.clone();
            cpu.slice(&vol, &geom, interp, &rots, &mut want).unwrap();
            gpu.slice(&vol, &geom, interp, &rots, &mut got).unwrap();
            let e = rel_err(c32(&got), c32(&want));
            let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
            eprintln!(
                "slice {interp:?} {geom:?}: rel err {e:.1e}, {same}/{} identical",
                got.len()
            );
            assert!(
                e <= 1e-6,
                "slice {interp:?} {geom:?}: relative error {e:.2e}"
            );
        }
    }
}

#[test]
fn backprojection_matches_the_cpu_and_is_reproducible() {
    let Some(gpu) = gpu("backprojection_matches_the_cpu_and_is_reproducible") else {
        return;
    };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(22);
    let n = 11;
    for geom in geometries(16).into_iter().chain(large_geometries()) {
        let d = geom.image_size;
        let rots = rotations(&mut rng, n);
        let images = complex(&mut rng, n * d * d);
        let values = real(&mut rng, n * d * d);
        for interp in INTERPS {
            let mut want = vec![Complex::new(0.0f64, 0.0); geom.volume_len()];
            let mut got = want.clone();
            cpu.backproject(&images, &geom, interp, &rots, &mut want)
                .unwrap();
            gpu.backproject(&images, &geom, interp, &rots, &mut got)
                .unwrap();
            let e = rel_err(c64(&got), c64(&want));
            assert!(
                e <= 1e-12,
                "backproject {interp:?} {geom:?}: relative error {e:.2e}"
            );

            // Same bits again, and when the images come in two calls or in small chunks.
            let mut again = vec![Complex::new(0.0f64, 0.0); geom.volume_len()];
            gpu.backproject(&images, &geom, interp, &rots, &mut again)
                .unwrap();
            assert!(again == got, "backproject {interp:?}: not reproducible");
            let mut split = vec![Complex::new(0.0f64, 0.0); geom.volume_len()];
            let k = 4 * d * d;
            gpu.backproject(&images[..k], &geom, interp, &rots[..4], &mut split)
                .unwrap();
            gpu.backproject(&images[k..], &geom, interp, &rots[4..], &mut split)
                .unwrap();
            assert!(split == got, "backproject {interp:?}: depends on the split");

            let mut rwant = vec![0.0f64; geom.volume_len()];
            let mut rgot = rwant.clone();
            cpu.backproject_real(&values, &geom, interp, &rots, &mut rwant)
                .unwrap();
            gpu.backproject_real(&values, &geom, interp, &rots, &mut rgot)
                .unwrap();
            let e = rel_err(r64(&rgot), r64(&rwant));
            assert!(
                e <= 1e-12,
                "backproject_real {interp:?} {geom:?}: relative error {e:.2e}"
            );
        }
    }
    // Chunking inside one call (one image per chunk) gives the same bits.
    let geom = SliceGeometry::new(16, 32).unwrap();
    let rots = rotations(&mut rng, n);
    let images = complex(&mut rng, n * 256);
    let mut whole = vec![Complex::new(0.0f64, 0.0); geom.volume_len()];
    gpu.backproject(&images, &geom, INTERPS[1], &rots, &mut whole)
        .unwrap();
    let small = CudaBackend::new(0).unwrap().with_chunk_bytes(1);
    let mut chunked = vec![Complex::new(0.0f64, 0.0); geom.volume_len()];
    small
        .backproject(&images, &geom, INTERPS[1], &rots, &mut chunked)
        .unwrap();
    assert!(chunked == whole, "backprojection depends on the chunk size");
}

#[test]
fn ctf_and_transforms_match_the_cpu() {
    let Some(gpu) = gpu("ctf_and_transforms_match_the_cpu") else {
        return;
    };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(23);
    for (d, n) in [(16, 5), (64, 33), (128, 7)] {
        let params = ctf_params(&mut rng, n);
        let mut want = vec![0.0f32; n * d * d];
        let mut got = want.clone();
        cpu.ctf(&params, d, 1.3, &mut want).unwrap();
        gpu.ctf(&params, d, 1.3, &mut got).unwrap();
        let e = rel_err(r32(&got), r32(&want));
        assert!(e <= 1e-6, "ctf d={d}: relative error {e:.2e}");

        let images = real(&mut rng, n * d * d);
        let sh = shifts(&mut rng, n);
        let mut swant = vec![Complex::new(0.0f32, 0.0); n * d * d];
        let mut sgot = swant.clone();
        cpu.images_to_spectra(&images, d, &sh, &mut swant).unwrap();
        gpu.images_to_spectra(&images, d, &sh, &mut sgot).unwrap();
        let e = rel_err(c32(&sgot), c32(&swant));
        assert!(e <= 1e-5, "images_to_spectra d={d}: relative error {e:.2e}");

        let mut iwant = vec![0.0f32; n * d * d];
        let mut igot = iwant.clone();
        cpu.spectra_to_images(&swant, d, &mut iwant).unwrap();
        gpu.spectra_to_images(&swant, d, &mut igot).unwrap();
        let e = rel_err(r32(&igot), r32(&iwant));
        assert!(e <= 1e-5, "spectra_to_images d={d}: relative error {e:.2e}");
        // And the round trip gives the images back.
        let e = rel_err(r32(&igot), r32(&images));
        assert!(e <= 1e-5, "round trip d={d}: relative error {e:.2e}");
    }
}

#[test]
fn errors_are_errors_on_the_gpu_too() {
    let Some(gpu) = gpu("errors_are_errors_on_the_gpu_too") else {
        return;
    };
    let geom = SliceGeometry::new(16, 16).unwrap();
    let vol = vec![Complex::new(0.0f32, 0.0); geom.volume_len()];
    let mut out = vec![Complex::new(0.0f32, 0.0); 255];
    let rot = [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]];
    assert!(gpu.slice(&vol, &geom, INTERPS[1], &rot, &mut out).is_err());
    let bad = [[2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]];
    let mut acc = vec![0.0f64; geom.volume_len()];
    let e = gpu
        .backproject_real(&vec![0.0; 256], &geom, INTERPS[1], &bad, &mut acc)
        .unwrap_err();
    assert!(e.to_string().contains("rotation 0"), "{e}");
    let mut img = vec![0.0f32; 256];
    let odd = vec![Complex::new(0.0f32, 0.0); 15 * 15];
    assert!(gpu.spectra_to_images(&odd, 15, &mut img[..225]).is_err());
}

/// The whole pipeline (mean, noise, covariance, embedding) on a small simulated set, on
/// both backends. Differences come only from rounding, amplified by the eigensolver and the
/// regularised solves, so the tolerances are looser than the per-operation ones.
#[test]
fn pipeline_on_the_gpu_matches_the_cpu() {
    use recovar_core::dataset::DatasetOptions;
    use recovar_core::heterogeneity::CovarianceOptions;
    use recovar_core::pipeline::{Model, ModelOptions};
    use recovar_core::progress::NoProgress;
    use recovar_core::simulate::{write_test_dataset, SimulationOptions};

    let Some(gpu) = gpu("pipeline_on_the_gpu_matches_the_cpu") else {
        return;
    };
    let cpu = CpuBackend::new();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sim = SimulationOptions {
        image_size: 32,
        n_images: 400,
        hinge: false,
        ..Default::default()
    };
    write_test_dataset(&data, &sim, &cpu, &NoProgress).unwrap();
    let ds = DatasetOptions {
        particles: data.join("particles.32.mrcs"),
        poses: Some(data.join("poses.pkl")),
        ctf: Some(data.join("ctf.pkl")),
        ..Default::default()
    };
    let opts = ModelOptions {
        zdims: vec![2],
        covariance: CovarianceOptions::low_memory(),
        ..Default::default()
    };
    let mut on_cpu = Model::open(&ds, opts.clone()).unwrap();
    on_cpu.run_all(&cpu, &NoProgress).unwrap();
    let mut on_gpu = Model::open(&ds, opts).unwrap();
    on_gpu.run_all(&gpu, &NoProgress).unwrap();

    let e = rel_err(r32(on_gpu.mean().unwrap()), r32(on_cpu.mean().unwrap()));
    eprintln!("pipeline: mean rel err {e:.1e}");
    assert!(e <= 1e-4, "mean: relative error {e:.2e}");
    let (vg, vc) = (on_gpu.eigenvalues().unwrap(), on_cpu.eigenvalues().unwrap());
    let e = rel_err(vg[..4].iter().copied(), vc[..4].iter().copied());
    eprintln!("pipeline: eigenvalues 1-4 rel err {e:.1e}");
    assert!(e <= 1e-3, "eigenvalues: relative error {e:.2e}");
    let (zg, zc) = (
        on_gpu.embedding(2, true).unwrap(),
        on_cpu.embedding(2, true).unwrap(),
    );
    for k in 0..2 {
        let a: Vec<f64> = zg.zs.iter().skip(k).step_by(2).map(|&v| v as f64).collect();
        let b: Vec<f64> = zc.zs.iter().skip(k).step_by(2).map(|&v| v as f64).collect();
        let e = rel_err(a.iter().copied(), b.iter().copied());
        eprintln!("pipeline: embedding coordinate {k} rel err {e:.1e}");
        // Eigenvector signs are fixed by the pipeline's convention, so no sign flip here.
        assert!(
            e <= 1e-2,
            "embedding coordinate {k}: relative error {e:.2e}"
        );
    }
}

#[test]
fn column_accumulation_matches_the_cpu() {
    let Some(gpu) = gpu("column_accumulation_matches_the_cpu") else {
        return;
    };
    let (d, m) = (32usize, 40usize);
    let freqs: Vec<[i32; 3]> = vec![[1, 0, 0], [2, -1, 1], [0, 3, -2], [4, 2, 5], [7, -3, 0]];
    let mut rng = Rng::new(31);
    let sigma2: Vec<f32> = (0..d * d)
        .map(|_| rng.uniform_in(0.5, 2.0) as f32)
        .collect();
    let cpu = CpuBackend::new();
    // A chunk budget of a few images' worth makes the GPU cut images and group columns.
    let small = CudaBackend::new(0)
        .unwrap()
        .with_chunk_bytes(5 * d * d * 32);
    for masked in [false, true] {
        let rots = rotations(&mut rng, m);
        let cr = complex(&mut rng, m * d * d);
        let ctf = real(&mut rng, m * d * d);
        let masks: Vec<f32> = if masked {
            (0..m * d * d)
                .map(|_| rng.uniform_in(0.0, 1.0) as f32)
                .collect()
        } else {
            Vec::new()
        };
        let batch = ColumnBatch {
            rotations: &rots,
            cr: &cr,
            ctf: &ctf,
            masks: &masks,
        };
        let run = |be: &dyn Backend| {
            let mut acc = be.column_accumulator(d, &sigma2, freqs.len()).unwrap();
            acc.start(&freqs).unwrap();
            let mut hits = acc.add(0, &batch).unwrap();
            hits += acc.add(1, &batch).unwrap();
            hits += acc.add(1, &batch).unwrap();
            (hits, acc.sums().unwrap().to_vec())
        };
        let (want_hits, want) = run(&cpu);
        for (name, be) in [("gpu", &gpu), ("gpu, small chunks", &small)] {
            let (hits, got) = run(be);
            assert_eq!(hits, want_hits, "{name}: reached pairs");
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                for hf in 0..2 {
                    assert_eq!(g.h[hf], w.h[hf], "{name} masked {masked}: H of column {j}");
                    if masked {
                        let e = rel_err(c64(&g.b[hf]), c64(&w.b[hf]));
                        assert!(e <= 1e-5, "{name}: B of column {j}: relative error {e:.2e}");
                    } else {
                        assert_eq!(g.b[hf], w.b[hf], "{name}: B of column {j}");
                    }
                }
            }
        }
        // Reproducible: without masks the same bits for every chunk size; with masks the
        // noise transforms run in cuFFT batches of other sizes, which may round differently.
        let (a, b) = (run(&gpu).1, run(&small).1);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.h, y.h, "masked {masked}: chunking changed H");
            if masked {
                for hf in 0..2 {
                    assert!(rel_err(c64(&x.b[hf]), c64(&y.b[hf])) <= 1e-6);
                }
            } else {
                assert_eq!(x.b, y.b, "chunking changed B");
            }
        }
    }
}
