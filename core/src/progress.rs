//! One progress-and-cancellation callback type for every long operation.
//!
//! The CLI renders it as a progress bar; the C ABI forwards it to a C function pointer.
//! Returning `false` asks the operation to stop; it then returns [`Error::Cancelled`]
//! without writing partial outputs.

use crate::error::{Error, Result};

/// Receives `(stage, done, total)` reports; returns `false` to cancel.
pub trait Progress: Sync {
    /// Report that `done` of `total` units of `stage` are finished.
    fn update(&self, stage: &str, done: u64, total: u64) -> bool;
}

/// Ignores every report.
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: &str, _: u64, _: u64) -> bool {
        true
    }
}

impl<F> Progress for F
where
    F: Fn(&str, u64, u64) -> bool + Sync,
{
    fn update(&self, stage: &str, done: u64, total: u64) -> bool {
        self(stage, done, total)
    }
}

/// Report and turn a cancellation into an error.
pub fn report(p: &dyn Progress, stage: &str, done: u64, total: u64) -> Result<()> {
    if p.update(stage, done, total) {
        Ok(())
    } else {
        Err(Error::Cancelled)
    }
}
