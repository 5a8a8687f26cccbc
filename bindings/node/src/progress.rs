//! Progress and cancellation for work running on a libuv worker thread.
//!
//! The library reports `(stage, done, total)` from its worker threads and stops when the
//! report returns `false`. JavaScript can only run on the main thread, so reports are
//! queued to it through a thread-safe function and the worker never waits for the answer:
//! cancellation is a shared flag, set by `Model#cancel()` or by a progress callback that
//! returns `false` (or throws), and read by the next report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{FnArgs, Function, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Status, ValueType};
use recovar_core::progress::Progress;

/// The JavaScript progress callback: `(stage: string, done: number, total: number) => unknown`.
pub type ProgressFn<'a> = Function<'a, FnArgs<(String, f64, f64)>, Unknown<'static>>;

type ProgressTsfn = ThreadsafeFunction<
    FnArgs<(String, f64, f64)>,
    Unknown<'static>,
    FnArgs<(String, f64, f64)>,
    Status,
    false,
>;

/// Reports at most this often (plus every change of stage and every stage's end): a pass
/// over a large dataset reports per batch, and each report costs a turn of the event loop.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// A [`Progress`] that forwards to an optional JavaScript callback and honours a shared
/// cancellation flag.
pub struct JsProgress {
    tsfn: Option<ProgressTsfn>,
    cancel: Arc<AtomicBool>,
    last: Mutex<Option<(String, Instant)>>,
}

impl JsProgress {
    /// Wrap `callback` (on the main thread, while its scope is alive); `cancel` is the flag
    /// that stops the work.
    pub fn new(callback: Option<ProgressFn<'_>>, cancel: Arc<AtomicBool>) -> napi::Result<Self> {
        let tsfn = match callback {
            Some(f) => Some(f.build_threadsafe_function().build()?),
            None => None,
        };
        Ok(JsProgress {
            tsfn,
            cancel,
            last: Mutex::new(None),
        })
    }

    /// Whether this report should reach JavaScript (throttling, see [`MIN_INTERVAL`]).
    fn due(&self, stage: &str, done: u64, total: u64) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let now = Instant::now();
        let due = match &*last {
            Some((s, t)) => s != stage || done >= total || now.duration_since(*t) >= MIN_INTERVAL,
            None => true,
        };
        if due {
            *last = Some((stage.to_string(), now));
        }
        due
    }
}

impl Progress for JsProgress {
    fn update(&self, stage: &str, done: u64, total: u64) -> bool {
        if self.cancel.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(tsfn) = &self.tsfn {
            if self.due(stage, done, total) {
                let cancel = self.cancel.clone();
                // NonBlocking: the queue is unbounded, and a worker must never wait for
                // the main thread (which may itself be waiting for this work).
                tsfn.call_with_return_value(
                    FnArgs::from((stage.to_string(), done as f64, total as f64)),
                    ThreadsafeFunctionCallMode::NonBlocking,
                    move |ret, _env| {
                        // A callback that throws, or returns exactly `false`, cancels.
                        // Nothing here may fail: an Err returned from this closure would
                        // be raised as an uncaught exception in the process.
                        let stop = match ret {
                            Err(_) => true,
                            Ok(v) => {
                                matches!(v.get_type(), Ok(ValueType::Boolean))
                                    // SAFETY: the value was just checked to be a boolean.
                                    && matches!(unsafe { v.cast::<bool>() }, Ok(false))
                            }
                        };
                        if stop {
                            cancel.store(true, Ordering::Relaxed);
                        }
                        Ok(())
                    },
                );
            }
        }
        !self.cancel.load(Ordering::Relaxed)
    }
}
