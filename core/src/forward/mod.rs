//! The image-formation model `y = C · P(R) x`, shifted by `t` (algorithms.md §1).
//! (being written)

pub mod ctf;
pub mod cubic;
pub mod shift;
pub mod slice;
