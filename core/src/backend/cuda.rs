//! The CUDA backend: the operations of [`Backend`] as kernels (`kernels/*.cu`, compiled at
//! run time by NVRTC for the device's architecture) and cuFFT, through `cudarc` with
//! dynamic loading, so building needs no CUDA toolkit and a machine without one still runs
//! (on the CPU).
//!
//! Every call uploads its inputs, runs on the device and downloads its outputs: the trait
//! keeps data host-side, so the science code is unchanged. Calls are serialised on one
//! stream (the backend is shared by threads). Large calls are cut into chunks of images
//! that fit in the device-memory budget; chunking never changes a result:
//!
//! - slicing, the CTF and the transforms are per image;
//! - backprojection is a *gather*: each GPU thread owns one voxel, reads the caller's
//!   accumulator value once, adds its contributions image by image and pixel by pixel in a
//!   fixed order (no atomics), and writes it back. The accumulator stays on the device
//!   across the chunks of a call, so the sums are the same bits on every run and for every
//!   chunk size. They differ from the CPU's only in the order of the f64 additions (the
//!   CPU adds per slab of z-planes), i.e. at f64 rounding.
//!
//! Kernels are compiled with `--fmad=false` so each f32 operation rounds as the Rust
//! reference's does: stencil coordinates and weights, hence which voxels a pixel touches,
//! are the CPU's exactly. Sums in f32 (slices) and the FFTs round differently; the tests
//! state the tolerances (core/tests/cuda_backend.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cufft::sys::{cufftType, float2 as Float2};
use cudarc::cufft::{CudaFft, FftDirection};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchArgs, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use num_complex::Complex;

use super::columns::ColumnAccumulator;
use super::cuda_columns::CudaColumns;
use super::{check_images, check_to_images, check_to_spectra, Backend, CpuBackend};
use crate::dataset::CtfParams;
use crate::error::{Error, Result};
use crate::forward::ctf::{ctf_constants, CtfEvaluator};
use crate::forward::slice::{check_args, check_rotations};
use crate::forward::{Interp, SliceGeometry};
use crate::rng::Rng;

/// Prepended to every kernel source (NVRTC gets one string and no include paths).
pub const KERNEL_COMMON: &str = include_str!("../../../kernels/common.cuh");

/// The kernel sources: file name, source text, and the `extern "C"` kernels each defines.
pub const KERNEL_SOURCES: &[(&str, &str, &[&str])] = &[
    (
        "slice.cu",
        include_str!("../../../kernels/slice.cu"),
        &[
            "rcv_slice",
            "rcv_backproject_complex",
            "rcv_backproject_real",
        ],
    ),
    (
        "columns.cu",
        include_str!("../../../kernels/columns.cu"),
        &[
            "rcv_column_patch",
            "rcv_column_kappa",
            "rcv_column_scale",
            "rcv_column_backproject",
        ],
    ),
    (
        "image.cu",
        include_str!("../../../kernels/image.cu"),
        &[
            "rcv_ctf",
            "rcv_modulate_real",
            "rcv_demodulate_shift",
            "rcv_modulate_complex",
            "rcv_demodulate_real",
        ],
    ),
];

/// The oldest architecture the kernels are compiled for when no device says otherwise
/// (CUDA 13 supports compute capability 7.5 and newer; f64 arithmetic and the rest of the
/// kernels need nothing newer).
pub const BASELINE_ARCH: &str = "compute_75";

/// Device memory for the image buffers of one chunk: an eighth of the memory free when the
/// backend opens, within these bounds (the volume and the accumulator come on top).
/// Chunking never changes a result (module docs), so this only trades memory for launches.
const MIN_CHUNK_BYTES: usize = 64 << 20;
const MAX_CHUNK_BYTES: usize = 2 << 30;

/// Rotations must be orthonormal to this tolerance (`max |R Rᵀ − I|`) for the gather's
/// candidate-pixel window to be exact; rotation matrices read from files are, to f32
/// rounding (~1e-7).
const ORTHONORMAL_TOL: f32 = 1e-4;

/// Loads `lib` (cudarc's base name: "cuda", "nvrtc", "cufft") under the first of cudarc's
/// candidate file names that the loader finds, and keeps it loaded for the life of the
/// process. Probing this way, rather than with cudarc's `is_culib_present` (which loads and
/// unloads), matters twice: cudarc panics instead of erroring when a library is absent, so
/// presence must be known first; and unloading NVRTC leaks the C++ runtime pool of its
/// static initialisers (AddressSanitizer reports it in programs that link this library).
fn load_and_keep(lib: &str) -> bool {
    use std::sync::OnceLock;
    static KEPT: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let mut kept = KEPT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(&found) = kept.get(lib) {
        return found;
    }
    let found = cudarc::get_lib_name_candidates(lib).iter().any(|name| {
        // SAFETY: loading runs the library's initialisers (NVIDIA's own libraries); no
        // symbol is called here.
        match unsafe { libloading::Library::new(name) } {
            Ok(l) => {
                // Kept mapped on purpose: cudarc loads it again by name and uses it.
                std::mem::forget(l);
                true
            }
            Err(_) => false,
        }
    });
    kept.insert(lib.to_string(), found);
    found
}

/// Whether the shared libraries the backend loads (driver, NVRTC, cuFFT) can be found:
/// `Err` names the missing ones. The driver is probed first and alone: without it there is
/// no GPU, and NVRTC and cuFFT are then not loaded at all.
pub fn libraries_present() -> std::result::Result<(), String> {
    let hint = "searched the loader path; set LD_LIBRARY_PATH to the CUDA libraries";
    if !load_and_keep("cuda") {
        return Err(format!("not found: the CUDA driver (libcuda.so) ({hint})"));
    }
    let missing: Vec<&str> = [
        ("nvrtc", "NVRTC (libnvrtc.so)"),
        ("cufft", "cuFFT (libcufft.so)"),
    ]
    .iter()
    .filter(|(lib, _)| !load_and_keep(lib))
    .map(|(_, name)| *name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not found: {} ({hint})", missing.join(", ")))
    }
}

/// Whether NVRTC alone can be loaded (enough to compile the kernels, no GPU needed).
pub fn nvrtc_present() -> bool {
    load_and_keep("nvrtc")
}

/// The full source NVRTC compiles for kernel file `name`.
pub fn kernel_source(src: &str) -> String {
    format!("{KERNEL_COMMON}\n{src}")
}

/// Compiles every kernel source to PTX for `arch` (e.g. `"compute_90"`), with the options
/// the backend uses. Needs only NVRTC, no GPU: the CI compile test calls it.
pub fn compile_kernels(arch: &str) -> Result<Vec<(&'static str, Ptx)>> {
    if !nvrtc_present() {
        return Err(Error::device(
            "cannot compile the CUDA kernels: NVRTC (libnvrtc.so) not found on the loader path",
        ));
    }
    KERNEL_SOURCES
        .iter()
        .map(|&(name, src, _)| {
            let opts = CompileOptions {
                fmad: Some(false),
                name: Some(name.to_string()),
                options: vec![format!("--gpu-architecture={arch}")],
                ..Default::default()
            };
            compile_ptx_with_opts(kernel_source(src), opts)
                .map(|ptx| (name, ptx))
                .map_err(|e| Error::device(format!("NVRTC could not compile kernels/{name}: {e}")))
        })
        .collect()
}

/// Kernels by name.
struct Kernels(HashMap<&'static str, CudaFunction>);

impl Kernels {
    fn get(&self, name: &str) -> Result<&CudaFunction> {
        self.0
            .get(name)
            .ok_or_else(|| Error::device(format!("CUDA kernel {name} was not loaded")))
    }
}

/// Device state used under the call lock.
pub(super) struct State {
    /// cuFFT plans by (image side, batch).
    plans: HashMap<(usize, usize), CudaFft>,
}

/// Runs on one CUDA GPU.
pub struct CudaBackend {
    name: String,
    description: String,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    state: Mutex<State>,
    chunk_bytes: usize,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.description)
            .finish()
    }
}

pub(super) fn drv<T>(what: &str, r: std::result::Result<T, impl std::fmt::Display>) -> Result<T> {
    r.map_err(|e| Error::device(format!("CUDA {what}: {e}")))
}

impl CudaBackend {
    /// Opens GPU `ordinal`, compiles the kernels for its architecture and loads them.
    /// Errors (never panics) when a library, the device or the compilation is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        let name = format!("cuda:{ordinal}");
        libraries_present().map_err(|e| Error::device(format!("{name}: {e}")))?;
        let count = cudarc::driver::CudaContext::device_count()
            .map_err(|e| Error::device(format!("{name}: the CUDA driver did not start: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::device(format!(
                "{name}: no such device ({count} CUDA device{} present)",
                if count == 1 { "" } else { "s" }
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Error::device(format!("{name}: cannot create a context: {e}")))?;
        let (major, minor) = drv("compute capability", ctx.compute_capability())?;
        let dev_name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (free, total) = drv("memory query", ctx.mem_get_info())?;
        let arch = format!("compute_{major}{minor}");
        let ptx = compile_kernels(&arch).map_err(|e| {
            Error::device(format!(
                "{name} ({dev_name}, compute {major}.{minor}): {e}; the GPU may be older \
                 than this CUDA supports"
            ))
        })?;
        let mut kernels = HashMap::new();
        for ((_, src_ptx), &(file, _, fns)) in ptx.into_iter().zip(KERNEL_SOURCES) {
            let module = drv(
                &format!("module load of kernels/{file}"),
                ctx.load_module(src_ptx),
            )?;
            for &f in fns {
                kernels.insert(f, drv(&format!("kernel {f}"), module.load_function(f))?);
            }
        }
        let stream = ctx.default_stream();
        let backend = CudaBackend {
            description: format!(
                "{name} ({dev_name}, compute {major}.{minor}, {:.1} GiB)",
                total as f64 / (1u64 << 30) as f64
            ),
            name,
            stream,
            kernels: Kernels(kernels),
            state: Mutex::new(State {
                plans: HashMap::new(),
            }),
            chunk_bytes: (free / 8).clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES),
        };
        backend.self_check().map_err(|e| {
            Error::device(format!(
                "{} failed its self-check against the CPU backend, not used: {e}",
                backend.description
            ))
        })?;
        Ok(backend)
    }

    /// Every operation on small random inputs against [`CpuBackend`], with the tolerances
    /// of the tests (core/tests/cuda_backend.rs). Milliseconds; run when the backend is
    /// opened so that a driver, compiler or device that computes wrongly is refused (and
    /// `auto` falls back to the CPU) instead of giving wrong volumes.
    pub fn self_check(&self) -> Result<()> {
        let cpu = CpuBackend::new();
        let mut rng = Rng::new(0x5e1f);
        let (d, n) = (16usize, 5usize);
        let geom = SliceGeometry::new(d, 2 * d)?;
        let rots: Vec<[f32; 9]> = (0..n).map(|_| rng.rotation().map(|v| v as f32)).collect();
        let cplx = |rng: &mut Rng, len: usize| -> Vec<Complex<f32>> {
            (0..len)
                .map(|_| Complex::new(rng.normal() as f32, rng.normal() as f32))
                .collect()
        };
        let vol = cplx(&mut rng, geom.volume_len());
        let images = cplx(&mut rng, n * d * d);
        let real: Vec<f32> = (0..n * d * d).map(|_| rng.normal() as f32).collect();
        let check = |what: &str, got: &[f64], want: &[f64], tol: f64| -> Result<()> {
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let diff = got
                .iter()
                .zip(want)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            if diff.is_finite() && diff <= tol * scale.max(f64::MIN_POSITIVE) {
                Ok(())
            } else {
                Err(Error::device(format!(
                    "{what}: relative difference {:.2e} > {tol:.0e}",
                    diff / scale
                )))
            }
        };
        let wide = |v: &[Complex<f32>]| -> Vec<f64> {
            v.iter().flat_map(|c| [c.re as f64, c.im as f64]).collect()
        };
        for interp in [Interp::Nearest, Interp::Trilinear, Interp::Cubic] {
            let mut a = vec![Complex::new(0.0f32, 0.0); n * d * d];
            let mut b = a.clone();
            self.slice(&vol, &geom, interp, &rots, &mut a)?;
            cpu.slice(&vol, &geom, interp, &rots, &mut b)?;
            check(&format!("slice ({interp:?})"), &wide(&a), &wide(&b), 1e-6)?;
            let mut a = vec![Complex::new(0.0f64, 0.0); geom.volume_len()];
            let mut b = a.clone();
            self.backproject(&images, &geom, interp, &rots, &mut a)?;
            cpu.backproject(&images, &geom, interp, &rots, &mut b)?;
            let flat =
                |v: &[Complex<f64>]| -> Vec<f64> { v.iter().flat_map(|c| [c.re, c.im]).collect() };
            check(
                &format!("backprojection ({interp:?})"),
                &flat(&a),
                &flat(&b),
                1e-12,
            )?;
        }
        let mut a = vec![0.0f64; geom.volume_len()];
        let mut b = a.clone();
        self.backproject_real(&real, &geom, Interp::Trilinear, &rots, &mut a)?;
        cpu.backproject_real(&real, &geom, Interp::Trilinear, &rots, &mut b)?;
        check("real backprojection", &a, &b, 1e-12)?;
        let params: Vec<CtfParams> = (0..n)
            .map(|i| CtfParams {
                defocus_u: 10000.0 + 3000.0 * i as f32,
                defocus_v: 9000.0 + 2500.0 * i as f32,
                defocus_angle_deg: 20.0 * i as f32,
                voltage_kv: 300.0,
                cs_mm: 2.7,
                amp_contrast: 0.1,
                phase_shift_deg: 0.0,
                bfactor: 10.0 * i as f32,
                contrast: 1.0,
            })
            .collect();
        let mut a = vec![0.0f32; n * d * d];
        let mut b = a.clone();
        self.ctf(&params, d, 1.5, &mut a)?;
        cpu.ctf(&params, d, 1.5, &mut b)?;
        let w32 = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
        check("CTF", &w32(&a), &w32(&b), 1e-6)?;
        let shifts: Vec<[f32; 2]> = (0..n).map(|i| [0.5 * i as f32, -0.25 * i as f32]).collect();
        let mut a = vec![Complex::new(0.0f32, 0.0); n * d * d];
        let mut b = a.clone();
        self.images_to_spectra(&real, d, &shifts, &mut a)?;
        cpu.images_to_spectra(&real, d, &shifts, &mut b)?;
        check("images to spectra", &wide(&a), &wide(&b), 1e-5)?;
        let mut a = vec![0.0f32; n * d * d];
        let mut b = a.clone();
        self.spectra_to_images(&images, d, &mut a)?;
        cpu.spectra_to_images(&images, d, &mut b)?;
        check("spectra to images", &w32(&a), &w32(&b), 1e-5)?;
        // Covariance columns, with image masks (exercises every column kernel and cuFFT).
        let sigma2: Vec<f32> = (0..d * d).map(|i| 1.0 + (i % 7) as f32 * 0.1).collect();
        let masks: Vec<f32> = (0..n * d * d).map(|i| (i % 5) as f32 * 0.25).collect();
        let batch = super::ColumnBatch {
            rotations: &rots,
            cr: &images,
            ctf: &real,
            masks: &masks,
        };
        let freqs = [[1, 0, 0], [2, -1, 1], [0, 3, -2]];
        let sums = |be: &dyn Backend| -> Result<Vec<f64>> {
            let mut acc = be.column_accumulator(d, &sigma2, freqs.len())?;
            acc.start(&freqs)?;
            acc.add(1, &batch)?;
            Ok(acc
                .sums()?
                .iter()
                .flat_map(|s| {
                    s.h[1]
                        .iter()
                        .copied()
                        .chain(s.b[1].iter().flat_map(|c| [c.re, c.im]))
                        .collect::<Vec<_>>()
                })
                .collect())
        };
        check("covariance columns", &sums(self)?, &sums(&cpu)?, 1e-5)
    }

    /// The same backend cutting calls into chunks of at most `bytes` of image buffers
    /// (≥ 1 image per chunk): less device memory, the same results.
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// Images per chunk for `bytes_per_image` of device buffers per image.
    pub(super) fn chunk_images(&self, bytes_per_image: usize) -> usize {
        chunk_images(self.chunk_bytes, bytes_per_image)
    }

    /// Device memory for the image buffers of one chunk.
    pub(super) fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// (free, total) device memory now.
    pub(super) fn context_memory(&self) -> std::result::Result<(usize, usize), String> {
        self.stream
            .context()
            .mem_get_info()
            .map_err(|e| e.to_string())
    }

    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// "cuda:0 (NVIDIA H100 80GB HBM3, compute 9.0, 79.1 GiB)".
    pub fn description(&self) -> String {
        self.description.clone()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A launch of kernel `name`; push its arguments, then [`CudaBackend::run`].
    pub(super) fn kernel(&self, name: &str) -> Result<LaunchArgs<'_>> {
        Ok(self.stream.launch_builder(self.kernels.get(name)?))
    }

    /// Launches `b` over `total` elements (the kernels loop grid-stride, so any grid
    /// covers them).
    pub(super) fn run(&self, mut b: LaunchArgs<'_>, name: &str, total: usize) -> Result<()> {
        if total == 0 {
            return Ok(());
        }
        let blocks = total.div_ceil(256).min(65_535 * 8) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: each kernel's arguments are pushed by its one caller below, in the order
        // and with the types of its `extern "C"` signature in kernels/*.cu; the buffers hold
        // the lengths the kernels index (checked by the callers).
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| Error::device(format!("{}: kernel {name} failed: {e}", self.name)))
    }

    pub(super) fn upload<T: cudarc::driver::DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        drv("upload", self.stream.clone_htod(data))
    }

    pub(super) fn download<T: cudarc::driver::DeviceRepr, S: cudarc::driver::DevicePtr<T>>(
        &self,
        src: &S,
        out: &mut [T],
    ) -> Result<()> {
        drv("download", self.stream.memcpy_dtoh(src, out))?;
        // An asynchronous copy into pageable memory may return before it lands.
        drv("synchronize", self.stream.synchronize())
    }

    pub(super) fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        drv(
            &format!("allocation of {} MiB", (n * std::mem::size_of::<T>()) >> 20),
            self.stream.alloc_zeros::<T>(n.max(1)),
        )
    }

    /// The unnormalised 2-D C2C transform of the `batch` images of side `d` in `input`
    /// (sign −1 forward, +1 inverse, as numpy's), into a new buffer. Plans are made once per
    /// (side, batch) and kept (at most 8).
    pub(super) fn fft(
        &self,
        st: &mut State,
        d: usize,
        batch: usize,
        input: &mut CudaSlice<Float2>,
        dir: FftDirection,
    ) -> Result<CudaSlice<Float2>> {
        if !st.plans.contains_key(&(d, batch)) && st.plans.len() >= 8 {
            st.plans.clear();
        }
        let plan = match st.plans.entry((d, batch)) {
            std::collections::hash_map::Entry::Occupied(p) => p.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let n = [d as i32, d as i32];
                let dist = (d * d) as i32;
                let plan = CudaFft::plan_many(
                    &n,
                    None,
                    1,
                    dist,
                    None,
                    1,
                    dist,
                    cufftType::CUFFT_C2C,
                    batch as i32,
                    self.stream.clone(),
                )
                .map_err(|e| Error::device(format!("cuFFT plan {d}×{d} × {batch}: {e}")))?;
                v.insert(plan)
            }
        };
        let mut out = self.zeros::<Float2>(batch * d * d)?;
        plan.exec_c2c(input, &mut out, dir)
            .map_err(|e| Error::device(format!("cuFFT {dir:?} {d}×{d} × {batch}: {e}")))?;
        Ok(out)
    }
}

/// `(start, end)` of each chunk of at most `chunk` of `n` items, in order.
pub(super) fn chunk_ranges(n: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(chunk.max(1))
        .map(move |start| (start, (start + chunk).min(n)))
}

/// Images per chunk of at most `budget` bytes, `bytes_per_image` each (at least one).
fn chunk_images(budget: usize, bytes_per_image: usize) -> usize {
    (budget / bytes_per_image.max(1)).clamp(1, 1 << 20)
}

/// `RRᵀ = I` to [`ORTHONORMAL_TOL`] for each rotation (the gather's window assumes it).
pub(super) fn check_orthonormal(rotations: &[[f32; 9]]) -> Result<()> {
    for (i, r) in rotations.iter().enumerate() {
        let mut worst = 0.0f32;
        for a in 0..3 {
            for b in 0..3 {
                let dot: f32 = (0..3).map(|k| r[3 * a + k] * r[3 * b + k]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                worst = worst.max((dot - want).abs());
            }
        }
        if worst > ORTHONORMAL_TOL {
            return Err(Error::invalid(format!(
                "rotation {i} is not orthonormal (max |R Rᵀ − I| = {worst:.2e} > \
                 {ORTHONORMAL_TOL:.0e}); the CUDA backprojection needs rotation matrices"
            )));
        }
    }
    Ok(())
}

fn interp_code(interp: Interp) -> i32 {
    match interp {
        Interp::Nearest => 0,
        Interp::Trilinear => 1,
        Interp::Cubic => 2,
    }
}

/// (clip flag, r²) as the kernels take them.
pub(super) fn clip_args(geom: &SliceGeometry) -> (i32, f32) {
    match geom.max_radius {
        Some(r) => (1, r * r),
        None => (0, 0.0),
    }
}

pub(super) fn flat_rotations(rotations: &[[f32; 9]]) -> Vec<f32> {
    rotations.iter().flatten().copied().collect()
}

/// `Complex<f32>` is `repr(C)` (re, im): the same bytes as two f32, as the kernels' float2.
pub(super) fn as_f32(v: &[Complex<f32>]) -> &[f32] {
    // SAFETY: Complex<f32> is repr(C) with two f32 fields; length doubles, alignment holds.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len() * 2) }
}

fn as_f32_mut(v: &mut [Complex<f32>]) -> &mut [f32] {
    // SAFETY: as in `as_f32`, with the unique borrow carried over.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len() * 2) }
}

fn as_float2_mut(v: &mut [Complex<f32>]) -> &mut [Float2] {
    // SAFETY: cuFFT's float2 is repr(C) {x, y: f32}, the layout of Complex<f32>.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<Float2>(), v.len()) }
}

pub(super) fn as_f64_mut(v: &mut [Complex<f64>]) -> &mut [f64] {
    // SAFETY: Complex<f64> is repr(C) with two f64 fields.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f64>(), v.len() * 2) }
}

fn check_even(d: usize, what: &str) -> Result<()> {
    if d < 2 || !d.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "{what}: the CUDA backend needs an even image side, got {d}"
        )));
    }
    Ok(())
}

impl CudaBackend {
    /// Backprojection of `n` images of `comps` f32 values per pixel (2: complex, 1: real)
    /// into an accumulator of `comps` f64 values per voxel.
    fn backproject_any(
        &self,
        vals: &[f32],
        comps: usize,
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [f64],
    ) -> Result<()> {
        check_rotations(rotations)?;
        check_orthonormal(rotations)?;
        if interp == Interp::Cubic && geom.volume_size < 4 {
            return Err(Error::invalid(format!(
                "cubic backprojection on the GPU needs a volume side ≥ 4, got {}",
                geom.volume_size
            )));
        }
        let n = rotations.len();
        if n == 0 {
            return Ok(());
        }
        let d2 = geom.image_len();
        let (clip, r2) = clip_args(geom);
        let kernel = if comps == 2 {
            "rcv_backproject_complex"
        } else {
            "rcv_backproject_real"
        };
        let _st = self.lock();
        let mut dacc = self.upload(acc)?;
        let chunk = self.chunk_images(d2 * comps * 4);
        for (start, end) in chunk_ranges(n, chunk) {
            let dvals = self.upload(&vals[start * d2 * comps..end * d2 * comps])?;
            let drot = self.upload(&flat_rotations(&rotations[start..end]))?;
            let (m, d, nv) = (
                (end - start) as i32,
                geom.image_size as i32,
                geom.volume_size as i32,
            );
            let code = interp_code(interp);
            let mut b = self.kernel(kernel)?;
            b.arg(&dvals)
                .arg(&drot)
                .arg(&mut dacc)
                .arg(&m)
                .arg(&d)
                .arg(&nv)
                .arg(&code)
                .arg(&clip)
                .arg(&r2);
            self.run(b, kernel, geom.volume_len())?;
        }
        self.download(&dacc, acc)
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn slice(
        &self,
        volume: &[Complex<f32>],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        out: &mut [Complex<f32>],
    ) -> Result<()> {
        check_args(
            "slice",
            geom,
            rotations.len(),
            volume.len(),
            out.len(),
            "out",
        )?;
        check_rotations(rotations)?;
        let n = rotations.len();
        if n == 0 {
            return Ok(());
        }
        let d2 = geom.image_len();
        let (clip, r2) = clip_args(geom);
        let _st = self.lock();
        let dvol = self.upload(as_f32(volume))?;
        let chunk = self.chunk_images(d2 * 8);
        let out = as_f32_mut(out);
        for (start, end) in chunk_ranges(n, chunk) {
            let drot = self.upload(&flat_rotations(&rotations[start..end]))?;
            let mut dout = self.zeros::<f32>((end - start) * d2 * 2)?;
            let (m, d, nv, code) = (
                (end - start) as i32,
                geom.image_size as i32,
                geom.volume_size as i32,
                interp_code(interp),
            );
            let mut b = self.kernel("rcv_slice")?;
            b.arg(&dvol)
                .arg(&drot)
                .arg(&mut dout)
                .arg(&m)
                .arg(&d)
                .arg(&nv)
                .arg(&code)
                .arg(&clip)
                .arg(&r2);
            self.run(b, "rcv_slice", (end - start) * d2)?;
            self.download(&dout, &mut out[start * d2 * 2..end * d2 * 2])?;
        }
        Ok(())
    }

    fn backproject(
        &self,
        images: &[Complex<f32>],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [Complex<f64>],
    ) -> Result<()> {
        check_args(
            "backproject",
            geom,
            rotations.len(),
            acc.len(),
            images.len(),
            "images",
        )?;
        self.backproject_any(as_f32(images), 2, geom, interp, rotations, as_f64_mut(acc))
    }

    fn backproject_real(
        &self,
        values: &[f32],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [f64],
    ) -> Result<()> {
        check_args(
            "backproject_real",
            geom,
            rotations.len(),
            acc.len(),
            values.len(),
            "values",
        )?;
        self.backproject_any(values, 1, geom, interp, rotations, acc)
    }

    fn ctf(&self, params: &[CtfParams], d: usize, voxel_size: f64, out: &mut [f32]) -> Result<()> {
        check_images(out.len(), params.len(), d, "CTF output")?;
        // The CPU evaluator's checks of the grid (side, pixel size), for the same messages.
        CtfEvaluator::new(d, voxel_size)?;
        let n = params.len();
        if n == 0 {
            return Ok(());
        }
        let d2 = d * d;
        let inv = 1.0 / (d as f64 * voxel_size);
        let _st = self.lock();
        let chunk = self.chunk_images(d2 * 4);
        for (start, end) in chunk_ranges(n, chunk) {
            let consts: Vec<f64> = params[start..end].iter().flat_map(ctf_constants).collect();
            let dc = self.upload(&consts)?;
            let mut dout = self.zeros::<f32>((end - start) * d2)?;
            let (m, di) = ((end - start) as i32, d as i32);
            let mut b = self.kernel("rcv_ctf")?;
            b.arg(&dc).arg(&mut dout).arg(&m).arg(&di).arg(&inv);
            self.run(b, "rcv_ctf", (end - start) * d2)?;
            self.download(&dout, &mut out[start * d2..end * d2])?;
        }
        Ok(())
    }

    fn images_to_spectra(
        &self,
        images: &[f32],
        d: usize,
        shifts_px: &[[f32; 2]],
        out: &mut [Complex<f32>],
    ) -> Result<()> {
        check_to_spectra(images.len(), d, shifts_px, out.len())?;
        check_even(d, "images_to_spectra")?;
        let n = shifts_px.len();
        if n == 0 {
            return Ok(());
        }
        let d2 = d * d;
        let mut st = self.lock();
        let chunk = self.chunk_images(d2 * 12);
        for (start, end) in chunk_ranges(n, chunk) {
            let m = end - start;
            let total = (m * d2) as i64;
            let di = d as i32;
            let dimg = self.upload(&images[start * d2..end * d2])?;
            let shifts: Vec<f32> = shifts_px[start..end].iter().flatten().copied().collect();
            let dshift = self.upload(&shifts)?;
            let mut buf = self.zeros::<Float2>(m * d2)?;
            let mut b = self.kernel("rcv_modulate_real")?;
            b.arg(&dimg).arg(&mut buf).arg(&total).arg(&di);
            self.run(b, "rcv_modulate_real", m * d2)?;
            let mut spec = self.fft(&mut st, d, m, &mut buf, FftDirection::Forward)?;
            let mut b = self.kernel("rcv_demodulate_shift")?;
            b.arg(&mut spec).arg(&dshift).arg(&total).arg(&di);
            self.run(b, "rcv_demodulate_shift", m * d2)?;
            self.download(&spec, as_float2_mut(&mut out[start * d2..end * d2]))?;
        }
        Ok(())
    }

    fn spectra_to_images(&self, spectra: &[Complex<f32>], d: usize, out: &mut [f32]) -> Result<()> {
        let n = check_to_images(spectra.len(), d, out.len())?;
        check_even(d, "spectra_to_images")?;
        if n == 0 {
            return Ok(());
        }
        let d2 = d * d;
        let spectra = as_f32(spectra);
        let mut st = self.lock();
        let chunk = self.chunk_images(d2 * 20);
        for (start, end) in chunk_ranges(n, chunk) {
            let m = end - start;
            let total = (m * d2) as i64;
            let di = d as i32;
            let dspec = self.upload(&spectra[start * d2 * 2..end * d2 * 2])?;
            let mut buf = self.zeros::<Float2>(m * d2)?;
            let mut b = self.kernel("rcv_modulate_complex")?;
            b.arg(&dspec).arg(&mut buf).arg(&total).arg(&di);
            self.run(b, "rcv_modulate_complex", m * d2)?;
            let data = self.fft(&mut st, d, m, &mut buf, FftDirection::Inverse)?;
            let mut dout = self.zeros::<f32>(m * d2)?;
            let mut b = self.kernel("rcv_demodulate_real")?;
            b.arg(&data).arg(&mut dout).arg(&total).arg(&di);
            self.run(b, "rcv_demodulate_real", m * d2)?;
            self.download(&dout, &mut out[start * d2..end * d2])?;
        }
        Ok(())
    }

    fn column_accumulator(
        &self,
        d: usize,
        noise: &[f32],
        max_columns: usize,
    ) -> Result<Box<dyn ColumnAccumulator + '_>> {
        Ok(Box::new(CudaColumns::new(self, d, noise, max_columns)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthonormality_is_checked() {
        let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        check_orthonormal(&[id]).unwrap();
        let mut bad = id;
        bad[0] = 1.01;
        let e = check_orthonormal(&[id, bad]).unwrap_err().to_string();
        assert!(e.contains("rotation 1 is not orthonormal"), "{e}");
    }

    #[test]
    fn chunks_fit_the_budget() {
        let budget = MIN_CHUNK_BYTES;
        assert_eq!(chunk_images(budget, budget), 1);
        assert_eq!(chunk_images(budget, budget * 4), 1);
        assert_eq!(
            chunk_images(budget, 256 * 256 * 8),
            budget / (256 * 256 * 8)
        );
        assert_eq!(chunk_images(budget, 0), 1 << 20);
        assert_eq!(chunk_images(1000, 300), 3);
        let r: Vec<_> = chunk_ranges(7, 3).collect();
        assert_eq!(r, [(0, 3), (3, 6), (6, 7)]);
        assert_eq!(chunk_ranges(0, 3).count(), 0);
    }

    #[test]
    fn every_kernel_named_is_defined_in_its_source() {
        for (file, src, fns) in KERNEL_SOURCES {
            for f in *fns {
                assert!(
                    src.contains(&format!("extern \"C\" __global__ void {f}(")),
                    "{file} does not define {f}"
                );
            }
            let defined = src.matches("extern \"C\" __global__").count();
            assert_eq!(defined, fns.len(), "{file}: kernels not listed");
        }
    }

    #[test]
    fn a_missing_gpu_is_an_error_not_a_panic() {
        // Whatever this machine has, device 4096 does not exist.
        let e = CudaBackend::new(4096).unwrap_err();
        assert!(matches!(e, Error::Device(_)), "{e:?}");
        assert!(e.to_string().starts_with("cuda:4096"), "{e}");
    }
}
