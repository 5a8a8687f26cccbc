//! The CPU backend: the slab-ordered gather and the deterministic slab scatter of
//! [`crate::forward::slice`](mod@crate::forward::slice), run in rayon's global pool or in a
//! pool of the backend's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use num_complex::Complex;

use super::columns::{ColumnAccumulator, CpuColumns};
use super::{check_images, check_to_images, check_to_spectra, Backend};
use crate::dataset::CtfParams;
use crate::error::{Error, Result};
use crate::forward::ctf::CtfEvaluator;
use crate::forward::shift::shift_phase_batch;
use crate::forward::slice::{backproject_batch, backproject_real_batch, slice_batch};
use crate::forward::{Interp, SliceGeometry};
use crate::fourier::{fft2_forward_batch, fft2_inverse_batch, Fft2};

/// Runs on the CPU, in rayon's global pool or in a pool of its own.
#[derive(Clone, Default)]
pub struct CpuBackend {
    pool: Option<Arc<rayon::ThreadPool>>,
    /// 2-D FFT plans by image side, made once and shared.
    plans: Arc<Mutex<HashMap<usize, Arc<Fft2<f32>>>>>,
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
        CpuBackend::default()
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
            plans: Default::default(),
        })
    }

    /// Number of worker threads the calls run on.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    fn plan(&self, d: usize) -> Arc<Fft2<f32>> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans
            .entry(d)
            .or_insert_with(|| Arc::new(Fft2::new(d)))
            .clone()
    }

    pub(crate) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
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
        self.run(|| slice_batch(volume, geom, interp, rotations, out))
    }

    fn backproject(
        &self,
        images: &[Complex<f32>],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [Complex<f64>],
    ) -> Result<()> {
        self.run(|| backproject_batch(images, geom, interp, rotations, acc))
    }

    fn backproject_real(
        &self,
        values: &[f32],
        geom: &SliceGeometry,
        interp: Interp,
        rotations: &[[f32; 9]],
        acc: &mut [f64],
    ) -> Result<()> {
        self.run(|| backproject_real_batch(values, geom, interp, rotations, acc))
    }

    fn ctf(&self, params: &[CtfParams], d: usize, voxel_size: f64, out: &mut [f32]) -> Result<()> {
        check_images(out.len(), params.len(), d, "CTF output")?;
        let eval = CtfEvaluator::new(d, voxel_size)?;
        self.run(|| eval.evaluate_batch(params, out));
        Ok(())
    }

    fn images_to_spectra(
        &self,
        images: &[f32],
        d: usize,
        shifts_px: &[[f32; 2]],
        out: &mut [Complex<f32>],
    ) -> Result<()> {
        check_to_spectra(images.len(), d, shifts_px, out.len())?;
        let plan = self.plan(d);
        self.run(|| {
            fft2_forward_batch(&plan, images, out);
            shift_phase_batch(out, d, shifts_px);
        });
        Ok(())
    }

    fn spectra_to_images(&self, spectra: &[Complex<f32>], d: usize, out: &mut [f32]) -> Result<()> {
        check_to_images(spectra.len(), d, out.len())?;
        let plan = self.plan(d);
        self.run(|| fft2_inverse_batch(&plan, spectra, out));
        Ok(())
    }

    fn column_accumulator(
        &self,
        d: usize,
        noise: &[f32],
        max_columns: usize,
    ) -> Result<Box<dyn ColumnAccumulator + '_>> {
        Ok(Box::new(CpuColumns::new(self, d, noise, max_columns)?))
    }
}
