//! Synthetic datasets with known answers (the ground truth every later stage is tested
//! against). See [`phantom`] for the molecule.

pub mod phantom;
