//! The C ABI of RECOVAR (`librecovar`). The header `include/recovar.h` is generated from
//! this file by cbindgen; a test fails when the committed header is stale.
//!
//! Conventions (c_api.md): every symbol starts with `rcv_`/`RCV_`; handles are opaque and
//! come in create/free pairs (`free(NULL)` is a no-op); every fallible function returns an
//! rcv_status (0 = OK, negative = error kind) and leaves a message for
//! rcv_last_error_message; the caller owns every buffer it passes; no panic crosses the
//! boundary. Options structs start with `struct_size` so the ABI can grow.
//!
//! Thread safety: functions taking a `const` handle may be called from many threads at once
//! on the same handle; a non-const handle must be used by one thread at a time. The error
//! message is thread-local.

#![allow(non_camel_case_types)]
// Every exported function checks its pointers before use; callers are C code.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

use recovar_core::backend::{select, Backend, Device, Selected};
use recovar_core::dataset::{Dataset, DatasetOptions, Uninvert};
use recovar_core::generate::{GeneratedVolume, KernelOptions};
use recovar_core::heterogeneity::CovarianceOptions;
use recovar_core::pipeline::model::{self, Model, ModelOptions, Stage};
use recovar_core::progress::Progress;
use recovar_core::reconstruct::mask::MaskOption;
use recovar_core::reconstruct::noise::NoiseModel;
use recovar_core::Error;

/// Major version of the library (semantic versioning).
pub const RCV_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const RCV_VERSION_MINOR: u32 = 1;
/// Patch version of the library.
pub const RCV_VERSION_PATCH: u32 = 0;
/// ABI number: changes only when a change breaks binary compatibility.
pub const RCV_ABI_VERSION: u32 = 1;

/// Dataset flag: fail unless poses are found (a poses.pkl or a .star/.cs with angles).
pub const RCV_DATASET_REQUIRE_POSES: u32 = 1;
/// Dataset flag: fail unless CTF parameters are found.
pub const RCV_DATASET_REQUIRE_CTF: u32 = 2;
/// Dataset flag: read all selected images into memory at open.
pub const RCV_DATASET_PRELOAD: u32 = 4;

/// Status codes: 0 is success, negative values are errors.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum rcv_status {
    /// Success.
    RCV_OK = 0,
    /// An argument is invalid (NULL pointer, bad size, bad option value).
    RCV_ERR_INVALID_ARGUMENT = -1,
    /// The operating system refused to read or write a file.
    RCV_ERR_IO = -2,
    /// A file is malformed, truncated or of an unsupported kind.
    RCV_ERR_FORMAT = -3,
    /// A file named by another file was not found (the message lists the paths tried).
    RCV_ERR_NOT_FOUND = -4,
    /// Inputs disagree (counts differ, mixed box sizes, ...).
    RCV_ERR_INCONSISTENT = -5,
    /// A progress callback asked to stop.
    RCV_ERR_CANCELLED = -6,
    /// A bug in the library (a caught panic); the message says where.
    RCV_ERR_INTERNAL = -7,
    /// The compute device asked for cannot be used or failed (no CUDA driver, NVRTC or
    /// cuFFT, no such GPU, out of device memory); the message names the device and why.
    RCV_ERR_DEVICE = -8,
}

/// uninvert value of rcv_dataset_options: decide from the first mean estimate (default).
pub const RCV_UNINVERT_AUTOMATIC: i32 = 0;
/// uninvert value of rcv_dataset_options: multiply every image by -1.
pub const RCV_UNINVERT_TRUE: i32 = 1;
/// uninvert value of rcv_dataset_options: use the images as they are.
pub const RCV_UNINVERT_FALSE: i32 = 2;

/// An opened dataset: particle images (read lazily) + poses + CTF + indices + halfsets.
pub struct rcv_dataset {
    inner: Dataset,
    /// How it was opened from files (a model records it so a saved model reopens them).
    source: Option<DatasetOptions>,
}

/// Options of rcv_dataset_open. Initialise with rcv_dataset_options_init, then set
/// fields. Strings are NUL-terminated UTF-8 paths, borrowed for the duration of the call;
/// NULL means "not given".
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rcv_dataset_options {
    /// `sizeof(rcv_dataset_options)` as the caller compiled it.
    pub struct_size: usize,
    /// Particles: .mrcs, .star, .cs or .txt (required).
    pub particles: *const c_char,
    /// cryoDRGN poses.pkl; NULL takes poses from a .star/.cs particle file.
    pub poses: *const c_char,
    /// cryoDRGN ctf.pkl; NULL takes CTF from a .star/.cs particle file.
    pub ctf: *const c_char,
    /// Folder of the stacks named in a .star/.cs/.txt file.
    pub datadir: *const c_char,
    /// Pickle of 0-based particle indices to keep.
    pub ind: *const c_char,
    /// Pickle of two index arrays (halfsets).
    pub halfsets: *const c_char,
    /// Use only the first n images (after `ind`); 0 uses all.
    pub n_images: u64,
    /// Seed of the random halfset split (RECOVAR uses 0).
    pub seed: u64,
    /// One of RCV_UNINVERT_AUTOMATIC, RCV_UNINVERT_TRUE, RCV_UNINVERT_FALSE.
    pub uninvert: i32,
    /// Bitwise OR of `RCV_DATASET_*` flags.
    pub flags: u32,
}

impl Default for rcv_dataset_options {
    fn default() -> Self {
        rcv_dataset_options {
            struct_size: std::mem::size_of::<rcv_dataset_options>(),
            particles: std::ptr::null(),
            poses: std::ptr::null(),
            ctf: std::ptr::null(),
            datadir: std::ptr::null(),
            ind: std::ptr::null(),
            halfsets: std::ptr::null(),
            n_images: 0,
            seed: 0,
            uninvert: RCV_UNINVERT_AUTOMATIC,
            flags: 0,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    // Interior NULs cannot be represented in a C string; replace them.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn status_of(e: &Error) -> rcv_status {
    match e {
        Error::Io { .. } => rcv_status::RCV_ERR_IO,
        Error::Format { .. } | Error::Malformed { .. } => rcv_status::RCV_ERR_FORMAT,
        Error::NotFound { .. } => rcv_status::RCV_ERR_NOT_FOUND,
        Error::InvalidArgument(_) => rcv_status::RCV_ERR_INVALID_ARGUMENT,
        Error::Inconsistent(_) => rcv_status::RCV_ERR_INCONSISTENT,
        Error::Cancelled => rcv_status::RCV_ERR_CANCELLED,
        Error::Device(_) => rcv_status::RCV_ERR_DEVICE,
        _ => rcv_status::RCV_ERR_INTERNAL,
    }
}

/// Run `f`, turning library errors and panics into a status and the last-error message.
fn guard(f: impl FnOnce() -> Result<(), Error>) -> rcv_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => rcv_status::RCV_OK,
        Ok(Err(e)) => {
            set_error(&e.to_string());
            status_of(&e)
        }
        Err(panic) => {
            let what = recovar_core::error::panic_message(panic.as_ref());
            set_error(&format!("internal error (please report): {what}"));
            rcv_status::RCV_ERR_INTERNAL
        }
    }
}

fn null_arg(name: &str) -> Error {
    Error::invalid(format!("{name} is NULL"))
}

/// Set `*out` to NULL (so it is NULL after any error) once it is known to be writable.
unsafe fn clear_out<T>(out: *mut *mut T) -> Result<(), Error> {
    if out.is_null() {
        return Err(null_arg("out"));
    }
    out.write(std::ptr::null_mut());
    Ok(())
}

/// Hand a new handle to the caller through `out` (checked by `clear_out`).
unsafe fn give<T>(out: *mut *mut T, handle: T) {
    out.write(Box::into_raw(Box::new(handle)));
}

/// Release a handle made by `give`; NULL is a no-op, and a panic in a destructor does not
/// cross the boundary either.
unsafe fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(p))));
    }
}

/// A borrowed C string as a path; NULL gives None.
unsafe fn opt_path(p: *const c_char, name: &str) -> Result<Option<PathBuf>, Error> {
    if p.is_null() {
        return Ok(None);
    }
    let bytes = CStr::from_ptr(p).to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid(format!("{name} is an empty string")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(Some(PathBuf::from(std::ffi::OsStr::from_bytes(bytes))))
    }
    #[cfg(not(unix))]
    {
        let s = std::str::from_utf8(bytes)
            .map_err(|_| Error::invalid(format!("{name} is not valid UTF-8")))?;
        Ok(Some(PathBuf::from(s)))
    }
}

/// The library version as "MAJOR.MINOR.PATCH"; a static string, never NULL.
#[no_mangle]
pub extern "C" fn rcv_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// The ABI number (RCV_ABI_VERSION) the library was built with.
#[no_mangle]
pub extern "C" fn rcv_abi_version() -> u32 {
    RCV_ABI_VERSION
}

/// The message of the last error on this thread: a NUL-terminated UTF-8 string owned by the
/// library, valid until the next failing call on this thread. Never NULL ("" if no error).
#[no_mangle]
pub extern "C" fn rcv_last_error_message() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Fill `opts` with defaults (all paths NULL, automatic sign, seed 0, no flags) and set
/// `struct_size`. Does nothing when `opts` is NULL.
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_options_init(opts: *mut rcv_dataset_options) {
    if !opts.is_null() {
        opts.write(rcv_dataset_options::default());
    }
}

/// Open a dataset from files, with the options of the command line. On success `*out`
/// holds a new handle to release with rcv_dataset_free; on error `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_open(
    options: *const rcv_dataset_options,
    out: *mut *mut rcv_dataset,
) -> rcv_status {
    guard(|| {
        clear_out(out)?;
        let o = read_struct(options, "options", "rcv_dataset_options_init")?;
        let particles = opt_path(o.particles, "options.particles")?
            .ok_or_else(|| null_arg("options.particles"))?;
        let uninvert = match o.uninvert {
            RCV_UNINVERT_AUTOMATIC => Uninvert::Automatic,
            RCV_UNINVERT_TRUE => Uninvert::True,
            RCV_UNINVERT_FALSE => Uninvert::False,
            v => {
                return Err(Error::invalid(format!(
                    "options.uninvert = {v} is not one of the RCV_UNINVERT_* values"
                )))
            }
        };
        let known = RCV_DATASET_REQUIRE_POSES | RCV_DATASET_REQUIRE_CTF | RCV_DATASET_PRELOAD;
        if o.flags & !known != 0 {
            return Err(Error::invalid(format!(
                "options.flags has unknown bits 0x{:x}",
                o.flags & !known
            )));
        }
        let dsopts = DatasetOptions {
            particles,
            poses: opt_path(o.poses, "options.poses")?,
            ctf: opt_path(o.ctf, "options.ctf")?,
            datadir: opt_path(o.datadir, "options.datadir")?,
            ind: opt_path(o.ind, "options.ind")?,
            halfsets: opt_path(o.halfsets, "options.halfsets")?,
            n_images: (o.n_images > 0).then_some(o.n_images as usize),
            uninvert,
            seed: o.seed,
            require_poses: o.flags & RCV_DATASET_REQUIRE_POSES != 0,
            require_ctf: o.flags & RCV_DATASET_REQUIRE_CTF != 0,
            preload: o.flags & RCV_DATASET_PRELOAD != 0,
        };
        let ds = Dataset::open(&dsopts)?;
        give(
            out,
            rcv_dataset {
                inner: ds,
                source: Some(dsopts),
            },
        );
        Ok(())
    })
}

/// Release a dataset. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_free(dataset: *mut rcv_dataset) {
    free_handle(dataset);
}

unsafe fn get<'a>(d: *const rcv_dataset) -> Result<&'a Dataset, Error> {
    d.as_ref()
        .map(|d| &d.inner)
        .ok_or_else(|| null_arg("dataset"))
}

unsafe fn put<T>(out: *mut T, v: T) -> Result<(), Error> {
    if out.is_null() {
        return Err(null_arg("out"));
    }
    out.write(v);
    Ok(())
}

/// Number of images in the dataset (after `ind` and `n_images`).
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_count(
    dataset: *const rcv_dataset,
    out: *mut usize,
) -> rcv_status {
    guard(|| put(out, get(dataset)?.len()))
}

/// Image side D in pixels (images are D × D).
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_box_size(
    dataset: *const rcv_dataset,
    out: *mut usize,
) -> rcv_status {
    guard(|| put(out, get(dataset)?.box_size()))
}

/// Pixel size in Å (from the CTF table: D_ctf · Apix_ctf / D; else the stack header).
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_voxel_size(
    dataset: *const rcv_dataset,
    out: *mut f64,
) -> rcv_status {
    guard(|| put(out, get(dataset)?.voxel_size()))
}

/// Stage of rcv_model_run_stage: initial noise, halfset means with FSC prior, sign check,
/// masks. Running a stage first runs the earlier stages it needs; a stage already done is
/// not rerun.
pub const RCV_STAGE_MEAN: i32 = 0;
/// Stage: the noise model.
pub const RCV_STAGE_NOISE: i32 = 1;
/// Stage: variance, covariance columns, principal components (eigenvolumes).
pub const RCV_STAGE_COVARIANCE: i32 = 2;
/// Stage: embeddings for every zdim (with correct_contrast: also the contrast do-over pass).
pub const RCV_STAGE_EMBEDDING: i32 = 3;
/// Stage: every stage not yet run, in order.
pub const RCV_STAGE_ALL: i32 = 4;

/// Volume kind of rcv_volume_data / rcv_volume_write_mrc: locally filtered and B-factor
/// sharpened (locres_filtered.mrc).
pub const RCV_VOLUME_FILTERED: i32 = 0;
/// Volume kind: average of the two recombined halves (unfil.mrc).
pub const RCV_VOLUME_UNFILTERED: i32 = 1;
/// Volume kind: first halfset's estimate (half1_unfil.mrc).
pub const RCV_VOLUME_HALF1: i32 = 2;
/// Volume kind: second halfset's estimate (half2_unfil.mrc).
pub const RCV_VOLUME_HALF2: i32 = 3;
/// Volume kind: locally filtered, not sharpened (locres_filtered_nob.mrc).
pub const RCV_VOLUME_FILTERED_NO_BFACTOR: i32 = 4;
/// Volume kind: local resolution in Å (local_resolution.mrc).
pub const RCV_VOLUME_LOCAL_RESOLUTION: i32 = 5;

/// mask_kind of rcv_model_options: a mask made from the two half-map means (default).
pub const RCV_MASK_FROM_HALFMAPS: i32 = 0;
/// mask_kind: the ball of radius N/2 − 1.
pub const RCV_MASK_SPHERE: i32 = 1;
/// mask_kind: no mask (all ones).
pub const RCV_MASK_NONE: i32 = 2;
/// mask_kind: the .mrc file in mask_path.
pub const RCV_MASK_FILE: i32 = 3;
/// noise_model: one radial profile from outside the mask (default).
pub const RCV_NOISE_RADIAL: i32 = 0;
/// noise_model: a constant (white) noise level.
pub const RCV_NOISE_WHITE: i32 = 1;
/// memory_option: 300 covariance columns, 200 principal components (default).
pub const RCV_MEMORY_NORMAL: i32 = 0;
/// memory_option: as --low-memory-option (50 columns, sketch 100).
pub const RCV_MEMORY_LOW: i32 = 1;
/// memory_option: as --very-low-memory-option.
pub const RCV_MEMORY_VERY_LOW: i32 = 2;

/// device of rcv_model_options / rcv_kernel_options: a CUDA GPU (number 0) when a driver,
/// NVRTC, cuFFT and a device are present, else the CPU (default; never fails). In
/// rcv_kernel_options passed to rcv_model_generate it means the model's device.
pub const RCV_DEVICE_AUTO: i32 = 0;
/// device: the CPU (all cores).
pub const RCV_DEVICE_CPU: i32 = 1;
/// device: CUDA GPU number device_index; RCV_ERR_DEVICE when it cannot be used.
pub const RCV_DEVICE_CUDA: i32 = 2;

/// Progress callback of long calls: `stage` names the running step (NUL-terminated, valid
/// during the call), `done` of `total` units are finished. Return 0 to go on, non-zero to
/// cancel: the call then stops cleanly and returns RCV_ERR_CANCELLED. It may be called
/// from the library's worker threads, but never from two threads at once. It must not
/// unwind (throw) through the library.
pub type rcv_progress_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        stage: *const c_char,
        done: u64,
        total: u64,
    ) -> i32,
>;

/// A model: one dataset and the results of the pipeline stages run on it (mean, noise,
/// principal components, embeddings).
pub struct rcv_model {
    inner: Model,
    /// The backend chosen when the model was made, used by its stages and generation.
    device: Selected,
    /// `device.note` for rcv_model_device.
    note: CString,
}

/// A volume generated by kernel regression: its two halves, their average, the locally
/// filtered map and the local resolution.
pub struct rcv_volume {
    inner: GeneratedVolume,
}

/// Options of rcv_model_create. Initialise with rcv_model_options_init, then set fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rcv_model_options {
    /// `sizeof(rcv_model_options)` as the caller compiled it.
    pub struct_size: usize,
    /// One of the RCV_MASK_* values (default RCV_MASK_FROM_HALFMAPS).
    pub mask_kind: i32,
    /// The mask .mrc when mask_kind is RCV_MASK_FILE (borrowed during rcv_model_create).
    pub mask_path: *const c_char,
    /// A focus mask .mrc for the heterogeneity stages, or NULL.
    pub focus_mask: *const c_char,
    /// One of the RCV_NOISE_* values.
    pub noise_model: i32,
    /// Latent dimensions to embed (borrowed during rcv_model_create); NULL uses
    /// {1, 2, 4, 10, 20}.
    pub zdims: *const usize,
    /// Number of values in `zdims`.
    pub n_zdims: usize,
    /// Non-zero: estimate per-image contrasts and redo the stages with them (§6.5).
    pub correct_contrast: i32,
    /// Non-zero: leave the zero frequency out of the embeddings.
    pub ignore_zero_frequency: i32,
    /// One of the RCV_MEMORY_* values (fewer covariance columns and PCs).
    pub memory_option: i32,
    /// Non-zero (default): per-image tight masks in the covariance columns.
    pub use_image_mask: i32,
    /// Working memory for image batches in bytes; 0 = 2 GB. Results never depend on it.
    pub memory_budget: u64,
    /// Seed of random choices (default 0).
    pub seed: u64,
    /// Where the stages and generation run: one of the RCV_DEVICE_* values (default
    /// RCV_DEVICE_AUTO; also what a caller built before this field existed gets). The
    /// model chooses its backend once, in rcv_model_create.
    pub device: i32,
    /// The GPU number with RCV_DEVICE_CUDA (default 0); must be 0 otherwise.
    pub device_index: i32,
}

impl Default for rcv_model_options {
    fn default() -> Self {
        rcv_model_options {
            struct_size: std::mem::size_of::<rcv_model_options>(),
            mask_kind: RCV_MASK_FROM_HALFMAPS,
            mask_path: std::ptr::null(),
            focus_mask: std::ptr::null(),
            noise_model: RCV_NOISE_RADIAL,
            zdims: std::ptr::null(),
            n_zdims: 0,
            correct_contrast: 0,
            ignore_zero_frequency: 0,
            memory_option: RCV_MEMORY_NORMAL,
            use_image_mask: 1,
            memory_budget: 0,
            seed: 0,
            device: RCV_DEVICE_AUTO,
            device_index: 0,
        }
    }
}

/// Options of kernel regression (rcv_model_generate, rcv_generate_from_embedding).
/// Initialise with rcv_kernel_options_init.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rcv_kernel_options {
    /// `sizeof(rcv_kernel_options)` as the caller compiled it.
    pub struct_size: usize,
    /// Number of kernel widths tried (default 50).
    pub n_bins: usize,
    /// Local windows of radius N / maskrad_fraction voxels (default 20).
    pub maskrad_fraction: f64,
    /// Images in the smallest neighbourhood (default 100).
    pub n_min_images: usize,
    /// Sharpening B-factor of the filtered map in Å² (default 0).
    pub bfactor: f64,
    /// Images per batch; 0 chooses from a 2 GB budget. Results never depend on it.
    pub batch_size: usize,
    /// Where the volume is generated: one of the RCV_DEVICE_* values. RCV_DEVICE_AUTO
    /// (default) is the model's device in rcv_model_generate, and a GPU when one is usable
    /// (else the CPU) in rcv_generate_from_embedding; it is also what a caller built
    /// before this field existed gets.
    pub device: i32,
    /// The GPU number with RCV_DEVICE_CUDA (default 0); must be 0 otherwise.
    pub device_index: i32,
}

impl Default for rcv_kernel_options {
    fn default() -> Self {
        let k = KernelOptions::default();
        rcv_kernel_options {
            struct_size: std::mem::size_of::<rcv_kernel_options>(),
            n_bins: k.n_bins,
            maskrad_fraction: k.maskrad_fraction,
            n_min_images: k.n_min_images,
            bfactor: k.bfactor,
            batch_size: 0,
            device: RCV_DEVICE_AUTO,
            device_index: 0,
        }
    }
}

/// Copy a caller's options struct, honouring a smaller `struct_size` from an older header
/// (fields it does not have keep their defaults).
unsafe fn read_struct<T: Default + Copy>(p: *const T, name: &str, init: &str) -> Result<T, Error> {
    if p.is_null() {
        return Err(null_arg(name));
    }
    let size = std::ptr::read_unaligned(p.cast::<usize>());
    let ours = std::mem::size_of::<T>();
    if size <= std::mem::size_of::<usize>() {
        return Err(Error::invalid(format!(
            "{name}.struct_size is {size}; initialise the options with {init}"
        )));
    }
    let mut out = T::default();
    std::ptr::copy_nonoverlapping(
        p.cast::<u8>(),
        (&mut out as *mut T).cast::<u8>(),
        size.min(ours),
    );
    std::ptr::write_unaligned((&mut out as *mut T).cast::<usize>(), ours);
    Ok(out)
}

/// A caller array as a slice, checking the pointer and the length it must have.
unsafe fn slice_in<'a, T>(
    p: *const T,
    len: usize,
    expected: usize,
    name: &str,
) -> Result<&'a [T], Error> {
    if len != expected {
        return Err(Error::invalid(format!(
            "{name} has {len} elements; {expected} are expected"
        )));
    }
    if expected == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null_arg(name));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// Copy `data` into the caller's buffer of `len` elements (which must be exactly right).
unsafe fn copy_out<T: Copy>(data: &[T], out: *mut T, len: usize, name: &str) -> Result<(), Error> {
    // Nothing to copy: a NULL buffer of length 0 is fine (e.g. no zdims yet).
    if data.is_empty() && len == 0 {
        return Ok(());
    }
    if out.is_null() {
        return Err(null_arg(name));
    }
    if len != data.len() {
        return Err(Error::invalid(format!(
            "{name} holds {len} elements; {} are needed",
            data.len()
        )));
    }
    std::ptr::copy_nonoverlapping(data.as_ptr(), out, len);
    Ok(())
}

/// The C progress callback as the library's Progress.
struct CProgress {
    f: rcv_progress_fn,
    user_data: *mut c_void,
    /// Serialises calls: callers need not write a thread-safe callback.
    lock: Mutex<()>,
}

// The callback and its user_data belong to the caller, who promised they may be used from
// the library's threads for the duration of the call (rcv_progress_fn docs); calls are
// serialised by `lock`.
unsafe impl Sync for CProgress {}

impl CProgress {
    fn new(f: rcv_progress_fn, user_data: *mut c_void) -> Self {
        CProgress {
            f,
            user_data,
            lock: Mutex::new(()),
        }
    }
}

impl Progress for CProgress {
    fn update(&self, stage: &str, done: u64, total: u64) -> bool {
        let Some(f) = self.f else { return true };
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let name = CString::new(stage.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the caller's callback with its own user_data (see rcv_progress_fn).
        unsafe { f(self.user_data, name.as_ptr(), done, total) == 0 }
    }
}

/// A required NUL-terminated path argument.
unsafe fn path_arg(p: *const c_char, name: &str) -> Result<PathBuf, Error> {
    opt_path(p, name)?.ok_or_else(|| null_arg(name))
}

/// Create a dataset from caller memory: `n_images` images of `box_size` × `box_size`
/// floats (row-major), rotations (n × 9, row-major 3×3 matrices, cryoDRGN convention),
/// translations (n × 2, pixels) and CTF rows (n × 9, the columns of cryoDRGN's ctf.pkl:
/// D, Apix, dfU, dfV, dfang, kV, Cs, w, phase shift). The arrays are copied. Halfsets are
/// the seeded random split of RECOVAR (seed 0 = RECOVAR's).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rcv_dataset_create(
    images: *const f32,
    images_len: usize,
    n_images: usize,
    box_size: usize,
    rotations: *const f32,
    rotations_len: usize,
    translations: *const f32,
    translations_len: usize,
    ctf: *const f64,
    ctf_len: usize,
    seed: u64,
    out: *mut *mut rcv_dataset,
) -> rcv_status {
    guard(|| {
        clear_out(out)?;
        let npix = box_size
            .checked_mul(box_size)
            .and_then(|v| v.checked_mul(n_images))
            .ok_or_else(|| Error::invalid("n_images × box_size² overflows"))?;
        let imgs = slice_in(images, images_len, npix, "images")?;
        let rot = slice_in(rotations, rotations_len, n_images * 9, "rotations")?;
        let tr = slice_in(translations, translations_len, n_images * 2, "translations")?;
        let c = slice_in(ctf, ctf_len, n_images * 9, "ctf")?;
        if let Some(i) = imgs.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "image {} has a non-finite pixel",
                i / (box_size * box_size).max(1)
            )));
        }
        let rotations: Vec<[f32; 9]> = rot
            .chunks_exact(9)
            .map(|r| std::array::from_fn(|k| r[k]))
            .collect();
        let translations: Vec<[f32; 2]> = tr.chunks_exact(2).map(|t| [t[0], t[1]]).collect();
        let ctf_rows: Vec<[f64; 9]> = c
            .chunks_exact(9)
            .map(|r| std::array::from_fn(|k| r[k]))
            .collect();
        let ds = Dataset::from_arrays(
            imgs.to_vec(),
            n_images,
            box_size,
            &rotations,
            &translations,
            &ctf_rows,
            seed,
        )?;
        give(
            out,
            rcv_dataset {
                inner: ds,
                source: None,
            },
        );
        Ok(())
    })
}

/// Number of particles in the dataset's file (before `ind` / `n_images`); for a dataset
/// from memory, its number of images.
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_total_in_file(
    dataset: *const rcv_dataset,
    out: *mut usize,
) -> rcv_status {
    guard(|| put(out, get(dataset)?.total_in_file()))
}

/// Fill `opts` with defaults (the command line's: mask from half maps, radial noise,
/// zdims {1, 2, 4, 10, 20}, image masks on, 2 GB budget, seed 0) and set `struct_size`.
/// Does nothing when `opts` is NULL.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_options_init(opts: *mut rcv_model_options) {
    if !opts.is_null() {
        opts.write(rcv_model_options::default());
    }
}

/// Fill `opts` with the kernel-regression defaults and set `struct_size`. Does nothing
/// when `opts` is NULL.
#[no_mangle]
pub unsafe extern "C" fn rcv_kernel_options_init(opts: *mut rcv_kernel_options) {
    if !opts.is_null() {
        opts.write(rcv_kernel_options::default());
    }
}

unsafe fn model_options(o: &rcv_model_options) -> Result<ModelOptions, Error> {
    let mut m = ModelOptions {
        mask: match o.mask_kind {
            RCV_MASK_FROM_HALFMAPS => MaskOption::FromHalfmaps,
            RCV_MASK_SPHERE => MaskOption::Sphere,
            RCV_MASK_NONE => MaskOption::None,
            RCV_MASK_FILE => MaskOption::File(path_arg(o.mask_path, "options.mask_path")?),
            v => {
                return Err(Error::invalid(format!(
                    "options.mask_kind = {v} is not one of the RCV_MASK_* values"
                )))
            }
        },
        focus_mask: opt_path(o.focus_mask, "options.focus_mask")?,
        noise_model: match o.noise_model {
            RCV_NOISE_RADIAL => NoiseModel::Radial,
            RCV_NOISE_WHITE => NoiseModel::White,
            v => {
                return Err(Error::invalid(format!(
                    "options.noise_model = {v} is not one of the RCV_NOISE_* values"
                )))
            }
        },
        covariance: match o.memory_option {
            RCV_MEMORY_NORMAL => CovarianceOptions::default(),
            RCV_MEMORY_LOW => CovarianceOptions::low_memory(),
            RCV_MEMORY_VERY_LOW => CovarianceOptions::very_low_memory(),
            v => {
                return Err(Error::invalid(format!(
                    "options.memory_option = {v} is not one of the RCV_MEMORY_* values"
                )))
            }
        },
        correct_contrast: o.correct_contrast != 0,
        ignore_zero_frequency: o.ignore_zero_frequency != 0,
        seed: o.seed,
        ..ModelOptions::default()
    };
    m.covariance.mask_images = o.use_image_mask != 0;
    if o.memory_budget > 0 {
        m.memory_budget = o.memory_budget;
    }
    if !o.zdims.is_null() || o.n_zdims > 0 {
        if o.n_zdims == 0 {
            return Err(Error::invalid(
                "options.n_zdims is 0 but options.zdims is set",
            ));
        }
        m.zdims = slice_in(o.zdims, o.n_zdims, o.n_zdims, "options.zdims")?.to_vec();
    }
    Ok(m)
}

/// Create a model of `dataset` with `options` (NULL = defaults); no stage is run yet. The
/// model keeps its own reference to the dataset's images: the caller may free the dataset
/// handle afterwards. The dataset needs poses and CTF. The device (`options.device`) is
/// chosen here, once: RCV_ERR_DEVICE when an explicit GPU cannot be used.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_create(
    dataset: *const rcv_dataset,
    options: *const rcv_model_options,
    out: *mut *mut rcv_model,
) -> rcv_status {
    guard(|| {
        clear_out(out)?;
        let ds = get(dataset)?;
        let o = if options.is_null() {
            rcv_model_options::default()
        } else {
            read_struct(options, "options", "rcv_model_options_init")?
        };
        let opts = model_options(&o)?;
        let device = device_of(o.device, o.device_index, "options")?;
        let mut m = Model::new(ds.clone(), opts)?;
        if let Some(src) = (*dataset).source.clone() {
            m.set_source(src);
        }
        give(out, model_handle(m, select(device)?));
        Ok(())
    })
}

/// Load a model from the output folder of `recovar pipeline` (or of rcv_model_save): mean,
/// noise, eigenvalues, eigenvolumes, embeddings. Its particles are reopened when they
/// still exist (needed by rcv_model_generate only). A loaded model cannot run stages. Its
/// device is RCV_DEVICE_AUTO (rcv_kernel_options.device chooses another per call).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_load(
    pipeline_dir: *const c_char,
    out: *mut *mut rcv_model,
) -> rcv_status {
    guard(|| {
        clear_out(out)?;
        let dir = path_arg(pipeline_dir, "pipeline_dir")?;
        let m = Model::load(&dir)?;
        give(out, model_handle(m, select(Device::Auto)?));
        Ok(())
    })
}

/// Release a model. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_free(model: *mut rcv_model) {
    free_handle(model);
}

fn model_handle(inner: Model, device: Selected) -> rcv_model {
    let note = CString::new(device.note.replace('\0', " ")).unwrap_or_default();
    rcv_model {
        inner,
        device,
        note,
    }
}

/// The model's device, as a line for a log: e.g. "device: cpu (8 threads)", "device:
/// cuda:0 (NVIDIA H100 80GB HBM3, compute 9.0, 79.1 GiB)", or for auto without a GPU
/// "device: cpu (8 threads); auto: no usable GPU, ..." (why). `*out` points to a
/// NUL-terminated UTF-8 string owned by the model, valid until rcv_model_free.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_device(
    model: *const rcv_model,
    out: *mut *const c_char,
) -> rcv_status {
    guard(|| {
        let m = model.as_ref().ok_or_else(|| null_arg("model"))?;
        put(out, m.note.as_ptr())
    })
}

unsafe fn model_ref<'a>(m: *const rcv_model) -> Result<&'a Model, Error> {
    m.as_ref()
        .map(|m| &m.inner)
        .ok_or_else(|| null_arg("model"))
}

/// The stage an RCV_STAGE_* value names (RCV_STAGE_ALL: the last one).
fn stage_from_raw(v: i32) -> Result<Stage, Error> {
    Ok(match v {
        RCV_STAGE_MEAN => Stage::Mean,
        RCV_STAGE_NOISE => Stage::Noise,
        RCV_STAGE_COVARIANCE => Stage::Covariance,
        RCV_STAGE_EMBEDDING | RCV_STAGE_ALL => Stage::Embedding,
        _ => {
            return Err(Error::invalid(format!(
                "stage = {v} is not one of the RCV_STAGE_* values"
            )))
        }
    })
}

/// Run `stage` (an RCV_STAGE_* value; and the earlier stages it needs) with progress reports to `progress`
/// (may be NULL). On cancellation the model keeps the stages finished before it.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_run_stage(
    model: *mut rcv_model,
    stage: i32,
    progress: rcv_progress_fn,
    user_data: *mut c_void,
) -> rcv_status {
    guard(|| {
        let m = model.as_mut().ok_or_else(|| null_arg("model"))?;
        let st = stage_from_raw(stage)?;
        let p = CProgress::new(progress, user_data);
        m.inner.run_stage(st, &*m.device.backend, &p)
    })
}

/// Whether `stage`'s results are available: `*out` = 1 (done) or 0.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_stage_done(
    model: *const rcv_model,
    stage: i32,
    out: *mut i32,
) -> rcv_status {
    guard(|| {
        let m = model_ref(model)?;
        let st = stage_from_raw(stage)?;
        let done = if stage == RCV_STAGE_ALL {
            Stage::ALL.iter().all(|&s| m.stage_done(s))
        } else {
            m.stage_done(st)
        };
        put(out, done as i32)
    })
}

/// Write the pipeline's output layout into `dir` (output/volumes/*.mrc, model/params.pkl,
/// embeddings, ...) for the stages run so far (at least mean and noise). Files are written
/// atomically. rcv_model_load reads the folder back.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_save(model: *const rcv_model, dir: *const c_char) -> rcv_status {
    guard(|| {
        let m = model_ref(model)?;
        let dir = path_arg(dir, "dir")?;
        m.save(&dir, &recovar_core::progress::NoProgress)
    })
}

/// Volume side N of the model (volumes are N × N × N floats, z-major C order).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_box_size(
    model: *const rcv_model,
    out: *mut usize,
) -> rcv_status {
    guard(|| put(out, model_ref(model)?.box_size()))
}

/// Voxel size in Å.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_voxel_size(
    model: *const rcv_model,
    out: *mut f64,
) -> rcv_status {
    guard(|| put(out, model_ref(model)?.voxel_size()))
}

/// Number of images of the model's dataset (rows of its embeddings).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_n_images(
    model: *const rcv_model,
    out: *mut usize,
) -> rcv_status {
    guard(|| put(out, model_ref(model)?.n_images()))
}

/// The mean volume into `out` (`len` = N³ floats).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_mean(
    model: *const rcv_model,
    out: *mut f32,
    len: usize,
) -> rcv_status {
    guard(|| copy_out(model_ref(model)?.mean()?, out, len, "out"))
}

/// The radial noise variance profile in use (`len` = N/2 − 1 shells).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_noise(
    model: *const rcv_model,
    out: *mut f64,
    len: usize,
) -> rcv_status {
    guard(|| copy_out(model_ref(model)?.noise()?, out, len, "out"))
}

/// Number of principal components kept (after the covariance stage).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_n_eigen(model: *const rcv_model, out: *mut usize) -> rcv_status {
    guard(|| put(out, model_ref(model)?.eigenvalues()?.len()))
}

/// The eigenvalues, largest first (`len` = rcv_model_n_eigen).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_eigenvalues(
    model: *const rcv_model,
    out: *mut f64,
    len: usize,
) -> rcv_status {
    guard(|| copy_out(model_ref(model)?.eigenvalues()?, out, len, "out"))
}

/// Eigenvolume `k` (0-based) in real space, unit norm (`len` = N³).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_eigenvolume(
    model: *const rcv_model,
    k: usize,
    out: *mut f32,
    len: usize,
) -> rcv_status {
    guard(|| copy_out(&model_ref(model)?.eigenvolume(k)?, out, len, "out"))
}

/// The variance map Σ_{k < n_components} λ_k u_k² (`len` = N³), as variance{k}.mrc.
#[no_mangle]
pub unsafe extern "C" fn rcv_model_variance_map(
    model: *const rcv_model,
    n_components: usize,
    out: *mut f32,
    len: usize,
) -> rcv_status {
    guard(|| {
        copy_out(
            &model_ref(model)?.variance_map(n_components)?,
            out,
            len,
            "out",
        )
    })
}

/// Number of latent dimensions with an embedding (0 before the embedding stage).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_n_zdims(model: *const rcv_model, out: *mut usize) -> rcv_status {
    guard(|| put(out, model_ref(model)?.zdims().len()))
}

/// The latent dimensions with an embedding, ascending (`len` = rcv_model_n_zdims).
#[no_mangle]
pub unsafe extern "C" fn rcv_model_zdims(
    model: *const rcv_model,
    out: *mut usize,
    len: usize,
) -> rcv_status {
    guard(|| copy_out(&model_ref(model)?.zdims(), out, len, "out"))
}

/// The embedding of dimension `zdim` (regularized != 0: the regularized one, as
/// latent_coords.npy; else latent_coords_noreg.npy), one row per image in dataset order:
/// `zs` (n × zdim), and optionally `precisions` (n × zdim × zdim) and `contrasts` (n);
/// pass NULL with length 0 to skip those.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rcv_model_embedding(
    model: *const rcv_model,
    zdim: usize,
    regularized: i32,
    zs: *mut f32,
    zs_len: usize,
    precisions: *mut f32,
    precisions_len: usize,
    contrasts: *mut f32,
    contrasts_len: usize,
) -> rcv_status {
    guard(|| {
        let e = model_ref(model)?.embedding(zdim, regularized != 0)?;
        copy_out(e.zs, zs, zs_len, "zs")?;
        if !precisions.is_null() || precisions_len > 0 {
            copy_out(e.precisions, precisions, precisions_len, "precisions")?;
        }
        if !contrasts.is_null() || contrasts_len > 0 {
            copy_out(e.contrasts, contrasts, contrasts_len, "contrasts")?;
        }
        Ok(())
    })
}

/// The device an RCV_DEVICE_* value and a GPU number name (`name`: the options struct, for
/// messages).
fn device_of(kind: i32, index: i32, name: &str) -> Result<Device, Error> {
    let device =
        match kind {
            RCV_DEVICE_AUTO => Device::Auto,
            RCV_DEVICE_CPU => Device::Cpu,
            RCV_DEVICE_CUDA => Device::Cuda(usize::try_from(index).map_err(|_| {
                Error::invalid(format!("{name}.device_index = {index} is negative"))
            })?),
            v => {
                return Err(Error::invalid(format!(
                    "{name}.device = {v} is not one of the RCV_DEVICE_* values"
                )))
            }
        };
    if index != 0 && !matches!(device, Device::Cuda(_)) {
        return Err(Error::invalid(format!(
            "{name}.device_index = {index} needs {name}.device = RCV_DEVICE_CUDA"
        )));
    }
    Ok(device)
}

/// Kernel options from the caller's struct (NULL: defaults), and the device it asks for
/// (RCV_DEVICE_AUTO: `Device::Auto`).
unsafe fn kernel_options(
    o: *const rcv_kernel_options,
    ds: &Dataset,
) -> Result<(KernelOptions, Device), Error> {
    let o = if o.is_null() {
        rcv_kernel_options::default()
    } else {
        read_struct(o, "options", "rcv_kernel_options_init")?
    };
    if o.n_bins == 0 {
        return Err(Error::invalid("options.n_bins must be at least 1"));
    }
    if !(o.maskrad_fraction.is_finite() && o.maskrad_fraction > 0.0) {
        return Err(Error::invalid("options.maskrad_fraction must be positive"));
    }
    if !o.bfactor.is_finite() {
        return Err(Error::invalid("options.bfactor must be finite"));
    }
    let device = device_of(o.device, o.device_index, "options")?;
    let batch = if o.batch_size > 0 {
        o.batch_size
    } else {
        KernelOptions::batch_size_for(ds.box_size(), ds.len(), 2_000_000_000)
    };
    let k = KernelOptions {
        n_bins: o.n_bins,
        maskrad_fraction: o.maskrad_fraction,
        n_min_images: o.n_min_images,
        bfactor: o.bfactor,
        batch_size: batch,
    };
    Ok((k, device))
}

unsafe fn point_arg<'a>(point: *const f32, len: usize, zdim: usize) -> Result<&'a [f32], Error> {
    slice_in(point, len, zdim, "point")
}

/// Generate a volume by kernel regression at the latent `point` (zdim values) from the
/// model's own embedding of dimension `zdim` (as `recovar compute_state`). `options` may be
/// NULL (defaults); it runs on the model's device unless `options.device` names another.
/// On success `*out` holds a new volume to release with rcv_volume_free.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rcv_model_generate(
    model: *const rcv_model,
    zdim: usize,
    regularized: i32,
    point: *const f32,
    point_len: usize,
    options: *const rcv_kernel_options,
    progress: rcv_progress_fn,
    user_data: *mut c_void,
    out: *mut *mut rcv_volume,
) -> rcv_status {
    guard(|| {
        clear_out(out)?;
        let h = model.as_ref().ok_or_else(|| null_arg("model"))?;
        let m = &h.inner;
        let pt = point_arg(point, point_len, zdim)?;
        let (k, device) = kernel_options(options, m.dataset()?)?;
        // Auto: the model's backend; another device: chosen for this call.
        let own;
        let backend: &dyn Backend = match device {
            Device::Auto => &*h.device.backend,
            d => {
                own = select(d)?;
                &*own.backend
            }
        };
        let p = CProgress::new(progress, user_data);
        let v = m.generate(zdim, regularized != 0, pt, &k, backend, &p)?;
        give(out, rcv_volume { inner: v });
        Ok(())
    })
}

/// Generate a volume by kernel regression at `point` from an embedding made elsewhere
/// (e.g. cryoDRGN's z.pkl, read with rcv_read_embedding): `zs` holds one row of `zdim`
/// values per image of `dataset`, or per particle of its file. `precisions` (rows × zdim ×
/// zdim) may be NULL with length 0 for the identity. The noise is estimated from the
/// dataset, as `recovar generate_from_embedding` does. No pipeline run is needed. The
/// device (`options.device`, auto by default) is chosen for each call.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rcv_generate_from_embedding(
    dataset: *const rcv_dataset,
    zs: *const f32,
    zs_len: usize,
    zdim: usize,
    precisions: *const f32,
    precisions_len: usize,
    point: *const f32,
    point_len: usize,
    options: *const rcv_kernel_options,
    progress: rcv_progress_fn,
    user_data: *mut c_void,
    out: *mut *mut rcv_volume,
) -> rcv_status {
    guard(|| {
        clear_out(out)?;
        let ds = get(dataset)?;
        if zdim == 0 {
            return Err(Error::invalid("zdim must be at least 1"));
        }
        let z = slice_in(zs, zs_len, zs_len, "zs")?;
        let pr = slice_in(precisions, precisions_len, precisions_len, "precisions")?;
        let pt = point_arg(point, point_len, zdim)?;
        let (k, device) = kernel_options(options, ds)?;
        let device = select(device)?;
        let p = CProgress::new(progress, user_data);
        let v = model::generate_from_embedding(ds, z, zdim, pr, pt, &k, &*device.backend, &p)?;
        give(out, rcv_volume { inner: v });
        Ok(())
    })
}

/// Read an embedding file: cryoDRGN's z.pkl (a float array rows × zdim), a .npy, or a
/// .txt readable by numpy.loadtxt. Call with `out` NULL (and `len` 0) to learn `*rows` and
/// `*zdim`, then with a buffer of rows × zdim floats.
#[no_mangle]
pub unsafe extern "C" fn rcv_read_embedding(
    path: *const c_char,
    out: *mut f32,
    len: usize,
    rows: *mut usize,
    zdim: *mut usize,
) -> rcv_status {
    guard(|| {
        let p = path_arg(path, "path")?;
        let (values, r, z) = recovar_core::generate::output::read_embedding(&p, false)?;
        put(rows, r)?;
        put(zdim, z)?;
        if !out.is_null() || len > 0 {
            copy_out(&values, out, len, "out")?;
        }
        Ok(())
    })
}

/// Release a volume. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn rcv_volume_free(volume: *mut rcv_volume) {
    free_handle(volume);
}

unsafe fn volume_ref<'a>(v: *const rcv_volume) -> Result<&'a GeneratedVolume, Error> {
    v.as_ref()
        .map(|v| &v.inner)
        .ok_or_else(|| null_arg("volume"))
}

/// The map an RCV_VOLUME_* value names.
fn volume_data(v: &GeneratedVolume, kind: i32) -> Result<&[f32], Error> {
    Ok(match kind {
        RCV_VOLUME_FILTERED => &v.filtered,
        RCV_VOLUME_UNFILTERED => &v.unfil,
        RCV_VOLUME_HALF1 => &v.halves[0],
        RCV_VOLUME_HALF2 => &v.halves[1],
        RCV_VOLUME_FILTERED_NO_BFACTOR => &v.filtered_nob,
        RCV_VOLUME_LOCAL_RESOLUTION => &v.local_resolution,
        _ => {
            return Err(Error::invalid(format!(
                "kind = {kind} is not one of the RCV_VOLUME_* values"
            )))
        }
    })
}

/// Side N of a generated volume.
#[no_mangle]
pub unsafe extern "C" fn rcv_volume_box_size(
    volume: *const rcv_volume,
    out: *mut usize,
) -> rcv_status {
    guard(|| put(out, volume_ref(volume)?.n))
}

/// Voxel size in Å of a generated volume.
#[no_mangle]
pub unsafe extern "C" fn rcv_volume_voxel_size(
    volume: *const rcv_volume,
    out: *mut f64,
) -> rcv_status {
    guard(|| put(out, volume_ref(volume)?.voxel_size))
}

/// Copy one of the volume's maps (`kind`: an RCV_VOLUME_* value) into `out` (`len` = N³).
#[no_mangle]
pub unsafe extern "C" fn rcv_volume_data(
    volume: *const rcv_volume,
    kind: i32,
    out: *mut f32,
    len: usize,
) -> rcv_status {
    guard(|| {
        let v = volume_ref(volume)?;
        copy_out(volume_data(v, kind)?, out, len, "out")
    })
}

/// Write one of the volume's maps as an MRC file (float32, atomically).
#[no_mangle]
pub unsafe extern "C" fn rcv_volume_write_mrc(
    volume: *const rcv_volume,
    kind: i32,
    path: *const c_char,
) -> rcv_status {
    guard(|| {
        let v = volume_ref(volume)?;
        let data = volume_data(v, kind)?;
        let p = path_arg(path, "path")?;
        write_cube(&p, data, v.n, v.voxel_size)
    })
}

fn write_cube(
    path: &std::path::Path,
    data: &[f32],
    n: usize,
    voxel_size: f64,
) -> Result<(), Error> {
    recovar_core::io::mrc::write_volume(
        path,
        &recovar_core::io::mrc::Volume {
            data: data.to_vec(),
            shape: [n, n, n],
            voxel_size: voxel_size as f32,
            origin: [0.0; 3],
        },
    )
}

/// Write `len` = box_size³ floats (z-major C order) as an MRC volume (float32, voxel size
/// in Å, written atomically).
#[no_mangle]
pub unsafe extern "C" fn rcv_write_mrc(
    path: *const c_char,
    data: *const f32,
    len: usize,
    box_size: usize,
    voxel_size: f64,
) -> rcv_status {
    guard(|| {
        let p = path_arg(path, "path")?;
        if box_size == 0 {
            return Err(Error::invalid("box_size must be positive"));
        }
        if !(voxel_size.is_finite() && voxel_size >= 0.0) {
            return Err(Error::invalid(
                "voxel_size must be a finite, non-negative number",
            ));
        }
        let n3 = box_size
            .checked_mul(box_size)
            .and_then(|v| v.checked_mul(box_size))
            .ok_or_else(|| Error::invalid("box_size³ overflows"))?;
        let d = slice_in(data, len, n3, "data")?;
        write_cube(&p, d, box_size, voxel_size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_cargo() {
        let v = format!("{RCV_VERSION_MAJOR}.{RCV_VERSION_MINOR}.{RCV_VERSION_PATCH}");
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        let s = unsafe { CStr::from_ptr(rcv_version()) }.to_str().unwrap();
        assert_eq!(s, v);
    }

    #[test]
    fn null_arguments_are_errors_not_crashes() {
        unsafe {
            let mut out: *mut rcv_dataset = std::ptr::null_mut();
            assert_eq!(
                rcv_dataset_open(std::ptr::null(), &mut out),
                rcv_status::RCV_ERR_INVALID_ARGUMENT
            );
            let msg = CStr::from_ptr(rcv_last_error_message()).to_str().unwrap();
            assert!(msg.contains("options is NULL"), "{msg}");
            let mut opts = rcv_dataset_options::default();
            assert_eq!(
                rcv_dataset_open(&opts, &mut out),
                rcv_status::RCV_ERR_INVALID_ARGUMENT
            );
            opts.struct_size = 0;
            assert_eq!(
                rcv_dataset_open(&opts, &mut out),
                rcv_status::RCV_ERR_INVALID_ARGUMENT
            );
            let mut n = 0usize;
            assert_eq!(
                rcv_dataset_count(std::ptr::null(), &mut n),
                rcv_status::RCV_ERR_INVALID_ARGUMENT
            );
            rcv_dataset_free(std::ptr::null_mut());
        }
    }
}
