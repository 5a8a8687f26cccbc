//! Homogeneous reconstruction: masks, noise models, the regularized mean and local
//! resolution (algorithms.md §2–§4, §7.5, §15).
//! (being written)

pub mod locres;
pub mod mask;
pub mod mean;
pub mod noise;
pub mod tight_mask;
