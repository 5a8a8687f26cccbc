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
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use recovar_core::dataset::{Dataset, DatasetOptions, Uninvert};
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
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(&format!("internal error (please report): {what}"));
            rcv_status::RCV_ERR_INTERNAL
        }
    }
}

fn null_arg(name: &str) -> Error {
    Error::invalid(format!("{name} is NULL"))
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

/// Copy the caller's options, honouring a smaller `struct_size` from an older header.
unsafe fn read_options(p: *const rcv_dataset_options) -> Result<rcv_dataset_options, Error> {
    if p.is_null() {
        return Err(null_arg("options"));
    }
    let size = std::ptr::read_unaligned(p.cast::<usize>());
    let ours = std::mem::size_of::<rcv_dataset_options>();
    if size < std::mem::size_of::<usize>() + std::mem::size_of::<*const c_char>() {
        return Err(Error::invalid(format!(
            "options.struct_size is {size}; initialise the options with rcv_dataset_options_init"
        )));
    }
    let mut out = rcv_dataset_options::default();
    std::ptr::copy_nonoverlapping(
        p.cast::<u8>(),
        (&mut out as *mut rcv_dataset_options).cast::<u8>(),
        size.min(ours),
    );
    out.struct_size = ours;
    Ok(out)
}

/// Open a dataset from files, with the options of the command line. On success `*out`
/// holds a new handle to release with rcv_dataset_free; on error `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_open(
    options: *const rcv_dataset_options,
    out: *mut *mut rcv_dataset,
) -> rcv_status {
    guard(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        out.write(std::ptr::null_mut());
        let o = read_options(options)?;
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
        let ds = Dataset::open(&DatasetOptions {
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
        })?;
        out.write(Box::into_raw(Box::new(rcv_dataset { inner: ds })));
        Ok(())
    })
}

/// Release a dataset. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn rcv_dataset_free(dataset: *mut rcv_dataset) {
    if !dataset.is_null() {
        // A panic in a destructor must not cross the boundary either.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(dataset))));
    }
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
