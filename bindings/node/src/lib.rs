//! The Node.js binding of RECOVAR: a napi-rs addon over the Rust API of `recovar-core`
//! (not the C ABI), with the C ABI's semantics (c_api.md) in JavaScript's idiom:
//!
//! - handles are classes (`Dataset`, `Model`, `Volume`) released by the garbage collector;
//! - arrays go in and out as `Float32Array` / `Float64Array` and are checked against the
//!   sizes they must have;
//! - long operations (`Model#runStage`, `Model#generate`, `generateFromEmbedding`,
//!   `Model.load`, `Model#save`) run on libuv's worker pool and return Promises, so the event
//!   loop keeps turning; progress reaches JavaScript through a thread-safe function, and
//!   `Model#cancel()` (or a progress callback returning `false`) stops them with an Error
//!   whose `code` is `"Cancelled"`;
//! - every library error becomes a JavaScript `Error` carrying the library's message; a
//!   panic is caught at the boundary and becomes an Error too ("internal error ...").
//!
//! The JavaScript surface is declared by hand in `index.d.ts`; `test/api.test.mjs` checks
//! that the declared and the exported names agree.

// napi-derive leaves out the module registration in test builds, so in the unit-test
// harness the exported functions look unused (they are called from JavaScript only).
#![cfg_attr(test, allow(dead_code))]

mod convert;
mod dataset;
mod generate;
mod model;
mod progress;
mod volume;

use napi_derive::napi;

/// The library version, "MAJOR.MINOR.PATCH" (the C ABI's `rcv_version()`).
#[napi]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
