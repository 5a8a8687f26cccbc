//! Synthetic datasets with known answers: the ground truth every later stage is tested
//! against. [`phantom`] is the molecule; [`dataset`] draws poses, states, CTFs and noise and
//! writes the files.

pub mod dataset;
pub mod phantom;

pub use dataset::{write_test_dataset, ImageParams, SimulationOptions, Simulator, WrittenDataset};
