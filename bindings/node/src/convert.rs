//! Conversions at the boundary: library errors and panics to JavaScript errors, JavaScript
//! numbers to counts, arrays to slices of checked length.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use napi::bindgen_prelude::{Either, Float32Array};
use napi::{Error, Status};
use recovar_core::backend::{select, Device, Selected};
use recovar_core::Error as CoreError;

/// A library error as a JavaScript error: the message is the library's; the `code` tells
/// a cancellation (`"Cancelled"`) and a bad argument (`"InvalidArg"`) from the rest
/// (`"GenericFailure"`: I/O, malformed or missing files, internal errors).
pub fn js_error(e: CoreError) -> Error {
    let status = match e {
        CoreError::Cancelled => Status::Cancelled,
        CoreError::InvalidArgument(_) | CoreError::Inconsistent(_) => Status::InvalidArg,
        _ => Status::GenericFailure,
    };
    Error::new(status, e.to_string())
}

/// An invalid argument detected by the binding itself.
pub fn invalid(msg: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, msg.into())
}

/// Run `f`, turning a panic into an Error: no panic may unwind into Node (from a libuv
/// worker it would abort the process).
pub fn guard<T>(f: impl FnOnce() -> napi::Result<T>) -> napi::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let what = recovar_core::error::panic_message(panic.as_ref());
            Err(Error::new(
                Status::GenericFailure,
                format!("internal error in recovar (please report): {what}"),
            ))
        }
    }
}

/// A JavaScript number that must be a whole count `>= min` (JavaScript has no integer
/// type; a fractional or negative count is an error, not a silent truncation).
pub fn count(name: &str, v: f64, min: usize) -> napi::Result<usize> {
    // 2^53: beyond it a double no longer holds every integer.
    if !(v.is_finite() && v.fract() == 0.0 && v >= min as f64 && v <= 9_007_199_254_740_992.0) {
        return Err(invalid(format!(
            "{name} must be a whole number >= {min}, got {v}"
        )));
    }
    Ok(v as usize)
}

/// A seed: a whole number in 0..2^53.
pub fn seed(v: Option<f64>) -> napi::Result<u64> {
    Ok(count("seed", v.unwrap_or(0.0), 0)? as u64)
}

/// A path argument; an empty string is refused (it would name the current directory).
pub fn path(name: &str, s: &str) -> napi::Result<PathBuf> {
    if s.is_empty() {
        return Err(invalid(format!("{name} is an empty string")));
    }
    Ok(PathBuf::from(s))
}

/// An optional path argument.
pub fn opt_path(name: &str, s: &Option<String>) -> napi::Result<Option<PathBuf>> {
    s.as_deref().map(|s| path(name, s)).transpose()
}

/// Check that an array argument has `expected` elements (`what` says how that is made).
pub fn check_len(name: &str, len: usize, expected: usize, what: &str) -> napi::Result<()> {
    if len != expected {
        return Err(invalid(format!(
            "{name} has {len} values, expected {expected} ({what})"
        )));
    }
    Ok(())
}

/// A device as the command line's `--device` spells it: "auto", "cpu", "cuda" or "cuda:N".
pub fn device(s: &str) -> napi::Result<Device> {
    s.parse::<Device>().map_err(|e| invalid(e.to_string()))
}

/// The backend on `d`; an explicit GPU that cannot be used is an Error naming it.
pub fn select_device(d: Device) -> napi::Result<Selected> {
    select(d).map_err(js_error)
}

/// A latent point given as a Float32Array or an array of numbers.
pub fn point(p: Either<Float32Array, Vec<f64>>) -> Vec<f32> {
    match p {
        Either::A(a) => a.to_vec(),
        Either::B(v) => v.into_iter().map(|x| x as f32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_refuse_fractions_and_negatives() {
        assert_eq!(count("n", 3.0, 1).unwrap(), 3);
        assert!(count("n", 0.0, 1).is_err());
        assert!(count("n", 2.5, 0).is_err());
        assert!(count("n", -1.0, 0).is_err());
        assert!(count("n", f64::NAN, 0).is_err());
    }
}
