//! Kernel-regression volume generation (algorithms.md §7).
