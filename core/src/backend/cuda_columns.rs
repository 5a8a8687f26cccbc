//! The covariance-column accumulation on the GPU (kernels/columns.cu), the CUDA side of
//! [`super::columns`]. The accumulators of a whole pass stay on the device; each image batch
//! is uploaded once and serves every column of the pass:
//!
//! 1. `rcv_column_patch`, per (column, image): whether the read kernel reaches the image,
//!    and its sums `e`, `c` (f64, the CPU's order);
//! 2. with image masks, per reached pair, the noise term's four centred transforms
//!    (cuFFT, batched over the pairs of a group of columns that fits the chunk budget);
//! 3. `rcv_column_backproject`, per (column, voxel): the gather of every reached image's
//!    contributions in image order, then pixel order — the CPU reference's order, so
//!    without masks the sums are its bits exactly, and with masks they differ only by the
//!    transforms' f32 rounding.
//!
//! Chunks of images and groups of columns only change how much is on the device at once:
//! each column's accumulator sees its images in the same order whatever they are.

use cudarc::cufft::sys::float2 as Float2;
use cudarc::cufft::FftDirection;
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::columns::{
    check_column_args, check_freqs, check_half, kernel_reach, ColumnAccumulator, ColumnBatch,
    ColumnSums,
};
use super::cuda::{as_f32, as_f64_mut, check_orthonormal, chunk_ranges, clip_args, drv};
use super::cuda::{flat_rotations, CudaBackend};
use super::Backend;
use crate::error::{Error, Result};

/// Device memory kept free beside the accumulators (image chunks, transforms, cuFFT work
/// areas), on top of the backend's chunk budget.
const HEADROOM: usize = 512 << 20;

/// Column accumulators on one GPU.
pub struct CudaColumns<'a> {
    be: &'a CudaBackend,
    d: usize,
    capacity: usize,
    clip: i32,
    r2: f32,
    /// σ²(p) on the device.
    sigma2: CudaSlice<f32>,
    /// H per (column, half): `capacity × 2 × N³` f64.
    h: CudaSlice<f64>,
    /// B per (column, half): `capacity × 2 × N³` complex f64 (pairs of f64).
    b: CudaSlice<f64>,
    freqs: Vec<[i32; 3]>,
    xis: CudaSlice<i32>,
    /// Host copies, filled by `sums`.
    host: Vec<ColumnSums>,
}

impl<'a> CudaColumns<'a> {
    pub(super) fn new(
        be: &'a CudaBackend,
        d: usize,
        noise: &[f32],
        max_columns: usize,
    ) -> Result<Self> {
        let geom = check_column_args(d, noise)?;
        let n3 = d * d * d;
        let per_column = 48 * n3;
        let (free, _) = drv("memory query", be.context_memory())?;
        let room = free.saturating_sub(be.chunk_bytes() * 3 + HEADROOM);
        let capacity = (room / per_column).clamp(1, max_columns.max(1));
        let (clip, r2) = clip_args(&geom);
        let h = be.zeros::<f64>(capacity * 2 * n3).map_err(|e| {
            Error::device(format!(
                "{}: no room for the accumulators of {capacity} covariance column(s) of \
                 {d}³ ({} MiB): {e}",
                be.name(),
                (capacity * per_column) >> 20
            ))
        })?;
        let b = be.zeros::<f64>(capacity * 4 * n3)?;
        Ok(CudaColumns {
            be,
            d,
            capacity,
            clip,
            r2,
            sigma2: be.upload(noise)?,
            h,
            b,
            freqs: Vec::new(),
            xis: be.zeros::<i32>(3)?,
            host: Vec::new(),
        })
    }
}

impl ColumnAccumulator for CudaColumns<'_> {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn start(&mut self, freqs: &[[i32; 3]]) -> Result<()> {
        check_freqs(freqs, self.d, self.capacity)?;
        let _st = self.be.lock();
        drv("clear", self.be.stream().memset_zeros(&mut self.h))?;
        drv("clear", self.be.stream().memset_zeros(&mut self.b))?;
        let flat: Vec<i32> = freqs.iter().flatten().copied().collect();
        self.xis = if flat.is_empty() {
            self.be.zeros::<i32>(3)?
        } else {
            self.be.upload(&flat)?
        };
        self.freqs = freqs.to_vec();
        Ok(())
    }

    fn add(&mut self, half: usize, batch: &ColumnBatch) -> Result<usize> {
        check_half(half)?;
        let d = self.d;
        let m = batch.check(d)?;
        check_orthonormal(batch.rotations)?;
        let ncol = self.freqs.len();
        if m == 0 || ncol == 0 {
            return Ok(0);
        }
        let be = self.be;
        let masked = !batch.masks.is_empty();
        let d2 = d * d;
        let n3 = d2 * d;
        let reach = kernel_reach();
        let (di, half_i, clip, r2) = (d as i32, half as i32, self.clip, self.r2);
        let mut st = be.lock();
        // Per image: its inputs (residual, CTF, mask) and, with masks, the two transform
        // buffers of one column's pair.
        let per_image = d2 * if masked { 32 } else { 12 } + ncol * 16;
        let chunk = be.chunk_images(per_image);
        let mut hits = 0;
        for (s, e) in chunk_ranges(m, chunk) {
            let mi = e - s;
            let mi_i = mi as i32;
            let ncol_i = ncol as i32;
            let dcr = be.upload(as_f32(&batch.cr[s * d2..e * d2]))?;
            let dctf = be.upload(&batch.ctf[s * d2..e * d2])?;
            let drot = be.upload(&flat_rotations(&batch.rotations[s..e]))?;
            let pairs = ncol * mi;
            let mut dec = be.zeros::<f32>(2 * pairs)?;
            let mut dcc = be.zeros::<f32>(pairs)?;
            let mut dhit = be.zeros::<i32>(pairs)?;
            let mut k = be.kernel("rcv_column_patch")?;
            k.arg(&dcr)
                .arg(&dctf)
                .arg(&drot)
                .arg(&self.xis)
                .arg(&mut dec)
                .arg(&mut dcc)
                .arg(&mut dhit)
                .arg(&mi_i)
                .arg(&ncol_i)
                .arg(&di)
                .arg(&reach);
            be.run(k, "rcv_column_patch", pairs)?;
            let mut hit = vec![0i32; pairs];
            be.download(&dhit, &mut hit)?;
            // The reached pairs, column by column, images in order.
            let mut start = vec![0i32; ncol + 1];
            let mut src: Vec<i32> = Vec::new();
            for j in 0..ncol {
                src.extend(
                    (0..mi)
                        .filter(|&i| hit[j * mi + i] != 0)
                        .map(|i| (j * mi + i) as i32),
                );
                start[j + 1] = src.len() as i32;
            }
            hits += src.len();
            if src.is_empty() {
                continue;
            }
            let dsrc = be.upload(&src)?;
            let mut gather = |col0: usize,
                              cols: usize,
                              dstart: &CudaSlice<i32>,
                              noise: &CudaSlice<Float2>,
                              masked_i: i32|
             -> Result<()> {
                let (col0_i, cols_i) = (col0 as i32, cols as i32);
                let mut k = be.kernel("rcv_column_backproject")?;
                k.arg(&dcr)
                    .arg(&dctf)
                    .arg(&drot)
                    .arg(&self.sigma2)
                    .arg(&self.xis)
                    .arg(dstart)
                    .arg(&dsrc)
                    .arg(&dec)
                    .arg(&dcc)
                    .arg(noise)
                    .arg(&masked_i)
                    .arg(&mut self.h)
                    .arg(&mut self.b)
                    .arg(&col0_i)
                    .arg(&cols_i)
                    .arg(&half_i)
                    .arg(&mi_i)
                    .arg(&di)
                    .arg(&clip)
                    .arg(&r2)
                    .arg(&reach);
                be.run(k, "rcv_column_backproject", cols * n3)
            };
            if !masked {
                let dstart = be.upload(&start)?;
                let none = be.zeros::<Float2>(1)?;
                gather(0, ncol, &dstart, &none, 0)?;
                continue;
            }
            let dmask = be.upload(&batch.masks[s * d2..e * d2])?;
            // Groups of columns whose pairs' two transform buffers fit the chunk budget.
            let max_pairs = (be.chunk_bytes() / (16 * d2)).max(1);
            let mut j0 = 0;
            while j0 < ncol {
                let mut j1 = j0 + 1;
                while j1 < ncol && (start[j1 + 1] - start[j0]) as usize <= max_pairs {
                    j1 += 1;
                }
                let (l0, l1) = (start[j0] as usize, start[j1] as usize);
                if l1 > l0 {
                    let nl = l1 - l0;
                    let nl_i = nl as i32;
                    let img_of: Vec<i32> = src[l0..l1].iter().map(|&q| q % mi_i).collect();
                    let dimg = be.upload(&img_of)?;
                    let dlist = be.upload(&src[l0..l1])?;
                    let mut buf = be.zeros::<Float2>(nl * d2)?;
                    let mut k = be.kernel("rcv_column_kappa")?;
                    k.arg(&dctf)
                        .arg(&drot)
                        .arg(&self.xis)
                        .arg(&dlist)
                        .arg(&mut buf)
                        .arg(&nl_i)
                        .arg(&mi_i)
                        .arg(&di)
                        .arg(&reach);
                    be.run(k, "rcv_column_kappa", nl * d2)?;
                    // M·IDFT, DFT, σ², M·IDFT, DFT (the checkerboards cancel in between).
                    let inv_d2 = 1.0f32 / d2 as f32;
                    let scale = |buf: &mut CudaSlice<Float2>,
                                 w: &CudaSlice<f32>,
                                 per_pair: i32,
                                 s: f32|
                     -> Result<()> {
                        let mut k = be.kernel("rcv_column_scale")?;
                        k.arg(buf)
                            .arg(w)
                            .arg(&dimg)
                            .arg(&per_pair)
                            .arg(&nl_i)
                            .arg(&di)
                            .arg(&s);
                        be.run(k, "rcv_column_scale", nl * d2)
                    };
                    let mut y = be.fft(&mut st, d, nl, &mut buf, FftDirection::Inverse)?;
                    scale(&mut y, &dmask, 1, inv_d2)?;
                    let mut y = be.fft(&mut st, d, nl, &mut y, FftDirection::Forward)?;
                    scale(&mut y, &self.sigma2, 0, 1.0)?;
                    let mut y = be.fft(&mut st, d, nl, &mut y, FftDirection::Inverse)?;
                    scale(&mut y, &dmask, 1, inv_d2)?;
                    let noise = be.fft(&mut st, d, nl, &mut y, FftDirection::Forward)?;
                    let dstart = be.upload(&start[j0..=j1])?;
                    gather(j0, j1 - j0, &dstart, &noise, 1)?;
                }
                j0 = j1;
            }
        }
        // Kernel errors surface at the next synchronisation: make it this call's.
        drv("synchronize", be.stream().synchronize())?;
        Ok(hits)
    }

    fn sums(&mut self) -> Result<&[ColumnSums]> {
        let n = self.freqs.len();
        let n3 = self.d * self.d * self.d;
        while self.host.len() < n {
            self.host.push(ColumnSums::zeros(n3));
        }
        let _st = self.be.lock();
        for (j, s) in self.host[..n].iter_mut().enumerate() {
            for half in 0..2 {
                let at = (j * 2 + half) * n3;
                self.be
                    .download(&self.h.slice(at..at + n3), &mut s.h[half])?;
                self.be.download(
                    &self.b.slice(2 * at..2 * (at + n3)),
                    as_f64_mut(&mut s.b[half]),
                )?;
            }
        }
        Ok(&self.host[..n])
    }
}
