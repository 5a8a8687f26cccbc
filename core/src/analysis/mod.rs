//! Analysis of an embedding (algorithms.md §8, §9, §11): k-means with centers snapped to
//! data points, a 2-D embedding for plots, Gaussian KDE densities, the deconvolved density,
//! trajectory endpoint pairs, the analyze plots, and image subsets (from k-means labels or
//! from a generated volume).

pub mod density;
pub mod embed2d;
pub mod kde;
pub mod kmeans;
pub mod pairs;
pub mod plots;
pub mod subset;
pub mod trajectory;
