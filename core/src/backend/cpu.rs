//! The CPU backend: the slab-ordered gather and the deterministic slab scatter of
//! [`crate::forward::slice`](mod@crate::forward::slice), run in rayon's global pool or in a
//! pool of the backend's own.

use std::sync::Arc;

use num_complex::Complex;

use super::Backend;
use crate::error::{Error, Result};
use crate::forward::slice::{check_args, check_rotations, gather, scatter};
use crate::forward::{Interp, SliceGeometry};

/// Runs on the CPU, in rayon's global pool or in a pool of its own.
#[derive(Clone, Default)]
pub struct CpuBackend {
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("threads", &self.threads())
            .finish()
    }
}

impl CpuBackend {
    /// Uses rayon's global thread pool.
    pub fn new() -> Self {
        CpuBackend { pool: None }
    }

    /// Uses a pool of its own with `threads` threads (≥ 1), e.g. to bound the CPU share or to
    /// check that results do not depend on the thread count.
    pub fn with_threads(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::invalid("CPU backend: the thread count must be ≥ 1"));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("recovar-cpu-{i}"))
            .build()
            .map_err(|e| {
                Error::invalid(format!("CPU backend: cannot start {threads} threads: {e}"))
            })?;
        Ok(CpuBackend {
            pool: Some(Arc::new(pool)),
        })
    }

    /// Number of worker threads the calls run on.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn slice(
        &self,
        volume: &[Complex<f32>],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        out: &mut [Complex<f32>],
    ) -> Result<()> {
        check_args(
            "slice",
            geom,
            rotations.len(),
            volume.len(),
            out.len(),
            "out",
        )?;
        check_rotations(rotations)?;
        self.run(|| gather(volume, geom, interp, rotations, out));
        Ok(())
    }

    fn backproject(
        &self,
        images: &[Complex<f32>],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [Complex<f64>],
    ) -> Result<()> {
        check_args(
            "backproject",
            geom,
            rotations.len(),
            acc.len(),
            images.len(),
            "images",
        )?;
        check_rotations(rotations)?;
        self.run(|| scatter(images, geom, interp, rotations, acc));
        Ok(())
    }

    fn backproject_real(
        &self,
        values: &[f32],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [f64],
    ) -> Result<()> {
        check_args(
            "backproject_real",
            geom,
            rotations.len(),
            acc.len(),
            values.len(),
            "values",
        )?;
        check_rotations(rotations)?;
        self.run(|| scatter(values, geom, interp, rotations, acc));
        Ok(())
    }
}
