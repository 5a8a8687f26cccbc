//! `recovar-core`: the numerical core of RECOVAR (regularized covariance estimation and
//! kernel-regression volume generation for cryo-EM heterogeneity, Gilles & Singer),
//! rebuilt in Rust.
//!
//! Data flows one way through the rooms of this crate:
//! [`io`] (file formats) -> [`dataset`] (particles + poses + CTF + indices + halfsets)
//! -> [`fourier`] (centered transforms, cropping). Higher rooms never are imported by
//! lower ones.

pub mod dataset;
pub mod error;
pub mod fourier;
pub mod io;
pub mod progress;

pub use error::{Error, Result};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
