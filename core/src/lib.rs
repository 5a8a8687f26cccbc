//! `recovar-core`: the numerical core of RECOVAR (regularized covariance estimation and
//! kernel-regression volume generation for cryo-EM heterogeneity, Gilles & Singer),
//! rebuilt in Rust.
//!
//! Data flows one way through the rooms of this crate:
//! [`io`] (file formats) -> [`dataset`] (particles + poses + CTF + indices + halfsets)
//! -> [`forward`] (the image-formation model) and [`backend`] (its batched heavy
//! operations, CPU now, CUDA later) -> [`simulate`] (synthetic data with ground truth).
//! [`fourier`] (centered transforms, shells, FSC, masks) and [`rng`] are used by all.
//! A lower room never imports a higher one.

pub mod analysis;
pub mod backend;
pub mod dataset;
pub mod error;
pub mod forward;
pub mod fourier;
pub mod generate;
pub mod heterogeneity;
pub mod io;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod reconstruct;
pub mod rng;
pub mod simulate;
pub mod stats;

pub use error::{Error, Result};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
