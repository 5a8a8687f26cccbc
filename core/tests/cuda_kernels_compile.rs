//! Every CUDA kernel compiles to PTX with NVRTC, with the options the backend uses. Needs
//! only libnvrtc (tests/tools/ensure_nvrtc.sh installs it from the PyPI wheel
//! `nvidia-cuda-nvrtc`; no GPU, no toolkit). Without NVRTC the test says so and passes,
//! unless RECOVAR_REQUIRE_NVRTC=1 (set by tests/run_all.sh, so CI cannot skip it silently).
#![cfg(feature = "cuda")]

use recovar_core::backend::cuda::{compile_kernels, nvrtc_present, BASELINE_ARCH, KERNEL_SOURCES};

#[test]
fn every_kernel_compiles_to_ptx() {
    if !nvrtc_present() {
        assert!(
            std::env::var("RECOVAR_REQUIRE_NVRTC").as_deref() != Ok("1"),
            "RECOVAR_REQUIRE_NVRTC=1 but libnvrtc is not on the loader path \
             (LD_LIBRARY_PATH={:?})",
            std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
        );
        eprintln!("skipped: no NVRTC library (libnvrtc.so) on the loader path");
        return;
    }
    // The oldest architecture CUDA 13 supports, and the H100's.
    for arch in [BASELINE_ARCH, "compute_90"] {
        let ptx = compile_kernels(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(ptx.len(), KERNEL_SOURCES.len());
        for ((file, ptx), (_, _, fns)) in ptx.iter().zip(KERNEL_SOURCES) {
            let text = ptx.to_src();
            let target = arch.replace("compute_", "sm_");
            assert!(
                text.contains(&format!(".target {target}")),
                "{file} {arch}: target"
            );
            for f in *fns {
                assert!(
                    text.contains(&format!(".entry {f}(")),
                    "{file} ({arch}): no entry point {f} in the PTX"
                );
            }
            // --fmad=false: no fused f32 multiply-adds (the CPU reference has none; the
            // stencil coordinates and weights must round as its do). The f64 math library
            // (sincos, exp) uses FMA internally, as it may: only its last bit is at stake.
            assert!(
                !text.contains("fma.rn.f32"),
                "{file} ({arch}): fma.rn.f32 in the PTX"
            );
        }
        eprintln!("compiled {} kernel files for {arch}", ptx.len());
    }
}
