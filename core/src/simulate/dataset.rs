//! Simulating a particle dataset from the [`Phantom`](crate::simulate::phantom::Phantom), with every
//! hidden variable recorded.
//!
//! Image formation follows the model the reconstruction inverts (algorithms.md §1.1):
//! `y = α · C · dose · T(−t) · P(R) x + noise`, with the Fourier volume of each rigid body on
//! the 2× oversampled grid, sliced with cubic B-splines (accurate to ~1e-3 there; the slicing
//! tests check that against closed forms). Rigid motions of a body are applied exactly: the
//! hinged arm is sliced with the composed rotation `R·Q(θ)` and shifted by the projection of
//! `p − Q(θ)p` (`p` the pivot); the lid by the projection of its site. So the hinge angle is a
//! truly continuous latent variable.
//!
//! Units: the clean images are scaled to a mean square of 1 (the volumes are multiplied by
//! `volume_scale`, and the ground-truth volumes are written in these image units). Noise is
//! Gaussian, radially coloured (`1 + 2·exp(−r/(0.08·D))`, normalised), with real-space
//! variance `1/SNR`, where `SNR = 0.1 / noise_level`: the default `--noise-level 0.1` gives
//! images with as much signal as noise power, like RECOVAR's own test set.
//!
//! Determinism: the per-image parameters are drawn in order from one generator seeded by
//! `seed`; the noise of image `i` comes from its own stream (`Rng::for_item`), so images
//! are identical whatever the batch size or thread count.

use std::ops::Range;
use std::path::{Path, PathBuf};

use num_complex::Complex;
use rayon::prelude::*;

use super::phantom::{
    hinge_rotation, render, Atom, Body, Phantom, HINGE_MAX_DEG, HINGE_PIVOT, LID_SITES,
    STATE_PROBABILITIES,
};
use crate::backend::Backend;
use crate::dataset::{relion_from_rotation, CtfParams, CtfTable, PoseDtype, PoseTable};
use crate::error::{Error, Result};
use crate::forward::ctf::{dose_filter, CtfEvaluator};
use crate::forward::shift::shift_phase;
use crate::forward::{cubic, Interp, SliceGeometry};
use crate::fourier::{Fft2, Fft3};
use crate::io::{mrc, pickle, star};
use crate::progress::{report, Progress};
use crate::rng::Rng;

/// Options of `recovar make_test_dataset`.
#[derive(Clone, Debug)]
pub struct SimulationOptions {
    /// Image side D in pixels (even, ≥ 16).
    pub image_size: usize,
    /// Number of images (for tilt series: particles × tilts, rounded down).
    pub n_images: usize,
    /// Noise relative to RECOVAR's default; SNR = 0.1 / noise_level (see module docs).
    pub noise_level: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Simulate tilt series (cryo-ET): each particle imaged at `n_tilts` tilts.
    pub tilt_series: bool,
    /// Tilts per particle.
    pub n_tilts: usize,
    /// Standard deviation of the in-plane shifts, in pixels (clipped at 3σ).
    pub shift_std_px: f64,
    /// Let the arm swing (continuous heterogeneity). `false` holds it at the rest angle, so
    /// the only heterogeneity is the three discrete lid states (the hinge draws are still
    /// made, so every other random choice is the same).
    pub hinge: bool,
}

impl Default for SimulationOptions {
    fn default() -> Self {
        SimulationOptions {
            image_size: 64,
            n_images: 1000,
            noise_level: 0.1,
            seed: 0,
            tilt_series: false,
            n_tilts: 27,
            shift_std_px: 1.0,
            hinge: true,
        }
    }
}

/// Degrees between successive tilts (0, +3, −3, +6, −6, ...) and the dose per tilt (e⁻/Å²).
pub const ANGLE_PER_TILT_DEG: f64 = 3.0;
pub const DOSE_PER_TILT: f64 = 3.0;

/// Everything that was drawn for one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageParams {
    /// Pose (cryoDRGN convention), row-major.
    pub rotation: [f64; 9],
    /// Particle translation in pixels (the image shows the particle moved by −t; the
    /// dataset's phase shift by +t centres it again).
    pub shift_px: [f64; 2],
    /// CTF parameters; `contrast` is the total amplitude (per-particle contrast × cos tilt).
    pub ctf: CtfParams,
    /// Discrete state 0, 1 or 2.
    pub state: u8,
    /// Hinge latent in [−1, 1] (angle = HINGE_MAX_DEG · latent).
    pub latent: f64,
    /// Particle number (= image number for single particles).
    pub particle: usize,
    /// Tilt angle in degrees (0 for single particles).
    pub tilt_deg: f64,
    /// Accumulated dose before this image (0 for single particles).
    pub dose: f64,
}

/// A prepared simulation: body spectra, per-image parameters and scales.
pub struct Simulator<'a> {
    opts: SimulationOptions,
    backend: &'a dyn Backend,
    d: usize,
    voxel_size: f64,
    geom: SliceGeometry,
    phantom: Phantom,
    /// Spline coefficients of each body's Fourier volume on the 2D grid.
    bodies: [Vec<Complex<f32>>; 3],
    params: Vec<ImageParams>,
    volume_scale: f64,
    /// Noise power per shell, on the unnormalized-DFT scale (RECOVAR's convention).
    noise_profile: Vec<f64>,
    fft2: Fft2<f32>,
    ctf: CtfEvaluator,
}

const NOISE_STREAM: u64 = 0x004e_4f49_5345;

impl<'a> Simulator<'a> {
    /// Draw the parameters and prepare the bodies. Cost: three (2D)³ FFTs and a pilot of up
    /// to 256 clean images.
    pub fn new(opts: &SimulationOptions, backend: &'a dyn Backend) -> Result<Self> {
        let d = opts.image_size;
        if d < 16 || !d.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "--image-size {d}: the box must be even and at least 16 pixels"
            )));
        }
        if opts.n_images == 0 {
            return Err(Error::invalid("--n-images must be at least 1"));
        }
        if !(opts.noise_level.is_finite() && opts.noise_level >= 0.0) {
            return Err(Error::invalid(format!(
                "--noise-level {} must be a non-negative number",
                opts.noise_level
            )));
        }
        if opts.tilt_series && (opts.n_tilts == 0 || opts.n_tilts > opts.n_images) {
            return Err(Error::invalid(format!(
                "--n-tilts {} must be between 1 and --n-images {}",
                opts.n_tilts, opts.n_images
            )));
        }
        let voxel_size = 4.25 * 128.0 / d as f64;
        let geom = SliceGeometry::new(d, 2 * d)?;
        let phantom = Phantom::new();
        let fft3 = Fft3::<f32>::new(2 * d);
        let body_spectrum = |atoms: &[Atom]| -> Result<Vec<Complex<f32>>> {
            let mut real = vec![0.0f32; d * d * d];
            render(atoms, d, [0.0; 3], &mut real);
            let spec = pad_and_transform(&real, d, &fft3);
            let mut coef = spec;
            cubic::prefilter(&mut coef, 2 * d)?;
            Ok(coef)
        };
        let bodies = [
            body_spectrum(phantom.atoms(Body::Core))?,
            body_spectrum(phantom.atoms(Body::Arm))?,
            body_spectrum(phantom.atoms(Body::Lid))?,
        ];
        let params = draw_params(opts, voxel_size);
        let ctf = CtfEvaluator::new(d, voxel_size)?;
        let mut sim = Simulator {
            opts: opts.clone(),
            backend,
            d,
            voxel_size,
            geom,
            phantom,
            bodies,
            params,
            volume_scale: 1.0,
            noise_profile: Vec::new(),
            fft2: Fft2::new(d),
            ctf,
        };
        // Pilot: scale the volumes so that clean images have a mean square of 1.
        let pilot = 0..sim.params.len().min(256);
        let mut spec = vec![Complex::new(0.0f32, 0.0); pilot.len() * d * d];
        sim.clean_spectra(pilot, &mut spec)?;
        let d4 = (d * d * d * d) as f64;
        let ms = spec.iter().map(|c| c.norm_sqr() as f64).sum::<f64>()
            / (spec.len() / (d * d)) as f64
            / d4;
        if ms.is_nan() || ms <= 0.0 {
            return Err(Error::invalid("simulated images are empty"));
        }
        sim.volume_scale = 1.0 / ms.sqrt();
        sim.noise_profile = noise_profile(d, sim.noise_variance());
        Ok(sim)
    }

    /// Real-space noise variance per pixel: 1/SNR with SNR = 0.1/noise_level.
    pub fn noise_variance(&self) -> f64 {
        self.opts.noise_level / 0.1
    }

    /// Signal-to-noise ratio of the images (mean signal power / mean noise power).
    pub fn snr(&self) -> f64 {
        if self.opts.noise_level == 0.0 {
            f64::INFINITY
        } else {
            0.1 / self.opts.noise_level
        }
    }

    /// The drawn parameters of every image.
    pub fn params(&self) -> &[ImageParams] {
        &self.params
    }

    /// Pixel size in Å (`4.25·128/D`, a 544 Å box as in RECOVAR's test set).
    pub fn voxel_size(&self) -> f64 {
        self.voxel_size
    }

    /// Factor applied to the phantom so that clean images have a mean square of 1.
    pub fn volume_scale(&self) -> f64 {
        self.volume_scale
    }

    /// Noise power per shell (round(|k|)), unnormalized-DFT scale.
    pub fn noise_profile(&self) -> &[f64] {
        &self.noise_profile
    }

    /// Noise-free image spectra (centered D×D, before the final inverse FFT) for `range`.
    fn clean_spectra(&self, range: Range<usize>, out: &mut [Complex<f32>]) -> Result<()> {
        let d = self.d;
        let n = range.len();
        let npix = d * d;
        if out.len() != n * npix {
            return Err(Error::invalid("spectrum buffer size"));
        }
        let ps = &self.params[range];
        let rot = |m: &[f64; 9]| m.map(|v| v as f32);
        // Core: pose only.
        let poses: Vec<[f32; 9]> = ps.iter().map(|p| rot(&p.rotation)).collect();
        self.backend
            .slice(&self.bodies[0], &self.geom, Interp::Cubic, &poses, out)?;
        // Arm: pose · hinge, shifted by the projection of p − Q p.
        let arm_rots: Vec<[f32; 9]> = ps
            .iter()
            .map(|p| rot(&matmul(&p.rotation, &hinge_rotation(p.latent))))
            .collect();
        let mut arm = vec![Complex::new(0.0f32, 0.0); n * npix];
        self.backend.slice(
            &self.bodies[1],
            &self.geom,
            Interp::Cubic,
            &arm_rots,
            &mut arm,
        )?;
        // Lid: pose, shifted by the projection of its site (absent in state 0).
        let lid_rows: Vec<usize> = (0..n).filter(|&i| ps[i].state > 0).collect();
        let lid_rots: Vec<[f32; 9]> = lid_rows.iter().map(|&i| poses[i]).collect();
        let mut lid = vec![Complex::new(0.0f32, 0.0); lid_rows.len() * npix];
        if !lid_rows.is_empty() {
            self.backend.slice(
                &self.bodies[2],
                &self.geom,
                Interp::Cubic,
                &lid_rots,
                &mut lid,
            )?;
        }
        let mut lid_of = vec![usize::MAX; n];
        for (k, &i) in lid_rows.iter().enumerate() {
            lid_of[i] = k;
        }
        let dn = d as f64;
        let scale = self.volume_scale as f32;
        out.par_chunks_exact_mut(npix)
            .zip(arm.par_chunks_exact_mut(npix))
            .enumerate()
            .for_each(|(i, (img, arm_i))| {
                let p = &ps[i];
                let q = hinge_rotation(p.latent);
                let pivot = HINGE_PIVOT.map(|v| v * dn);
                let moved = rotate(&q, pivot);
                let t3 = [
                    pivot[0] - moved[0],
                    pivot[1] - moved[1],
                    pivot[2] - moved[2],
                ];
                shift_phase(arm_i, d, in_plane(&p.rotation, t3));
                for (a, b) in img.iter_mut().zip(arm_i.iter()) {
                    *a += *b;
                }
                if p.state > 0 {
                    let k = lid_of[i];
                    let mut l = lid[k * npix..(k + 1) * npix].to_vec();
                    let site = LID_SITES[(p.state as usize - 1).min(1)].map(|v| v * dn);
                    shift_phase(&mut l, d, in_plane(&p.rotation, site));
                    for (a, b) in img.iter_mut().zip(&l) {
                        *a += *b;
                    }
                }
                // CTF (with contrast) and, for tilt series, the exposure filter.
                let mut c = vec![0.0f32; npix];
                self.ctf.evaluate(&p.ctf, &mut c);
                if self.opts.tilt_series {
                    let mut f = vec![0.0f32; npix];
                    if dose_filter(d, self.voxel_size, p.dose, p.ctf.voltage_kv as f64, &mut f)
                        .is_ok()
                    {
                        for (cv, fv) in c.iter_mut().zip(&f) {
                            *cv *= fv;
                        }
                    }
                }
                for (a, cv) in img.iter_mut().zip(&c) {
                    *a *= cv * scale;
                }
                // The observed particle sits at −t.
                shift_phase(img, d, [-p.shift_px[0] as f32, -p.shift_px[1] as f32]);
            });
        Ok(())
    }

    /// Noisy real-space images for `range` (`range.len()·D²` values).
    pub fn images(&self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        let d = self.d;
        let npix = d * d;
        let start = range.start;
        let mut spec = vec![Complex::new(0.0f32, 0.0); range.len() * npix];
        self.clean_spectra(range, &mut spec)?;
        let sigma = self.noise_variance();
        let shells = crate::fourier::shell_index_2d(d);
        let noise_amp: Vec<f32> = shells
            .iter()
            .map(|&s| {
                let p = self.noise_profile[(s as usize).min(self.noise_profile.len() - 1)];
                // noise_profile is |F|² on the DFT scale; white unit noise has |F|² = D².
                (p / (d * d) as f64).sqrt() as f32
            })
            .collect();
        let seed = self.opts.seed;
        spec.par_chunks_exact_mut(npix)
            .zip(out.par_chunks_exact_mut(npix))
            .enumerate()
            .for_each(|(k, (s, o))| {
                if sigma > 0.0 {
                    let mut rng = Rng::for_item(seed, NOISE_STREAM, (start + k) as u64);
                    let white: Vec<f32> = (0..npix).map(|_| rng.normal() as f32).collect();
                    let mut w = vec![Complex::new(0.0f32, 0.0); npix];
                    self.fft2.forward_real(&white, &mut w);
                    for ((sv, wv), a) in s.iter_mut().zip(&w).zip(&noise_amp) {
                        *sv += wv * *a;
                    }
                }
                self.fft2.inverse_real(s, o);
            });
        Ok(())
    }

    /// The real-space volume of `state` with hinge latent `h`, in image units, `D³`.
    pub fn volume(&self, state: usize, h: f64) -> Vec<f32> {
        let d = self.d;
        let mut v = vec![0.0f32; d * d * d];
        render(&self.phantom.placed_atoms(state, h), d, [0.0; 3], &mut v);
        let s = self.volume_scale as f32;
        v.iter_mut().for_each(|x| *x *= s);
        v
    }

    /// The mean over the dataset's images of their volumes, in image units: the core, the
    /// arm averaged over the drawn hinge angles (binned finely), and the lid at each site
    /// weighted by how many images show it there.
    pub fn mean_volume(&self) -> Vec<f32> {
        let d = self.d;
        let n = self.params.len() as f64;
        let mut v = vec![0.0f32; d * d * d];
        render(self.phantom.atoms(Body::Core), d, [0.0; 3], &mut v);
        const BINS: usize = 256;
        let mut counts = [0usize; BINS];
        let mut site_counts = [0usize; 2];
        for p in &self.params {
            let b = (((p.latent + 1.0) / 2.0 * BINS as f64) as usize).min(BINS - 1);
            counts[b] += 1;
            if p.state > 0 {
                site_counts[(p.state as usize - 1).min(1)] += 1;
            }
        }
        for (b, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let h = -1.0 + (b as f64 + 0.5) * 2.0 / BINS as f64;
            let q = hinge_rotation(h);
            let w = c as f64 / n;
            let atoms: Vec<Atom> = self
                .phantom
                .atoms(Body::Arm)
                .iter()
                .map(|a| Atom {
                    pos: super::phantom::rotate_about(&q, HINGE_PIVOT, a.pos),
                    amplitude: a.amplitude * w,
                    ..*a
                })
                .collect();
            render(&atoms, d, [0.0; 3], &mut v);
        }
        for (k, &c) in site_counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let w = c as f64 / n;
            let atoms: Vec<Atom> = self
                .phantom
                .atoms(Body::Lid)
                .iter()
                .map(|a| Atom {
                    amplitude: a.amplitude * w,
                    ..*a
                })
                .collect();
            render(&atoms, d, LID_SITES[k], &mut v);
        }
        let s = self.volume_scale as f32;
        v.iter_mut().for_each(|x| *x *= s);
        v
    }
}

fn matmul(a: &[f64; 9], b: &[f64; 9]) -> [f64; 9] {
    let mut c = [0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            c[3 * i + j] = (0..3).map(|k| a[3 * i + k] * b[3 * k + j]).sum();
        }
    }
    c
}

fn rotate(q: &[f64; 9], p: [f64; 3]) -> [f64; 3] {
    [
        q[0] * p[0] + q[1] * p[1] + q[2] * p[2],
        q[3] * p[0] + q[4] * p[1] + q[5] * p[2],
        q[6] * p[0] + q[7] * p[1] + q[8] * p[2],
    ]
}

/// The in-plane (x, y) image shift of a 3-D body translation `t3` (pixels) seen in pose `r`:
/// the slice reads the spectrum at `κ·R`, so a phase `exp(−2πi k·t3/N)` becomes
/// `exp(−2πi κ·(R t3)/N)`: a shift by the first two components of `R·t3`.
fn in_plane(r: &[f64; 9], t3: [f64; 3]) -> [f32; 2] {
    let v = rotate(r, t3);
    [v[0] as f32, v[1] as f32]
}

/// Zero-pad a real `d³` volume (centred) to `(2d)³` and take its centered 3-D DFT: the
/// spectrum of the same object sampled twice as finely in frequency.
fn pad_and_transform(real: &[f32], d: usize, fft3: &Fft3<f32>) -> Vec<Complex<f32>> {
    let nv = 2 * d;
    let off = d / 2;
    let mut spec = vec![Complex::new(0.0f32, 0.0); nv * nv * nv];
    for z in 0..d {
        for y in 0..d {
            let src = (z * d + y) * d;
            let dst = ((z + off) * nv + (y + off)) * nv + off;
            for x in 0..d {
                spec[dst + x] = Complex::new(real[src + x], 0.0);
            }
        }
    }
    fft3.forward(&mut spec);
    spec
}

/// Radial noise power per shell (0 ..= corner), unnormalized-DFT scale, for real-space
/// variance `var`: `D²·var·p(r)/mean(p)` with `p(r) = 1 + 2·exp(−r/(0.08·D))`.
fn noise_profile(d: usize, var: f64) -> Vec<f64> {
    let shells = crate::fourier::shell_index_2d(d);
    let nshell = shells.iter().copied().max().unwrap_or(0) as usize + 1;
    let p = |r: usize| 1.0 + 2.0 * (-(r as f64) / (0.08 * d as f64)).exp();
    let mean = shells.iter().map(|&s| p(s as usize)).sum::<f64>() / shells.len() as f64;
    (0..nshell)
        .map(|r| (d * d) as f64 * var * p(r) / mean)
        .collect()
}

/// Draw every image's hidden variables (see module docs for the distributions).
fn draw_params(opts: &SimulationOptions, voxel_size: f64) -> Vec<ImageParams> {
    let mut rng = Rng::new(opts.seed);
    let (n_particles, n_tilts) = if opts.tilt_series {
        (opts.n_images / opts.n_tilts, opts.n_tilts)
    } else {
        (opts.n_images, 1)
    };
    let _ = voxel_size;
    let clip = 3.0 * opts.shift_std_px;
    let mut out = Vec::with_capacity(n_particles * n_tilts);
    for particle in 0..n_particles {
        let rotation = rng.rotation();
        let u = rng.uniform();
        let state = if u < STATE_PROBABILITIES[0] {
            0
        } else if u < STATE_PROBABILITIES[0] + STATE_PROBABILITIES[1] {
            1
        } else {
            2
        };
        let drawn = rng.uniform_in(-1.0, 1.0);
        let latent = if opts.hinge { drawn } else { 0.0 };
        let contrast = 1.0 + 0.1 * rng.normal();
        let dfu = rng.uniform_in(15_000.0, 30_000.0);
        let dfv = dfu - rng.uniform_in(0.0, 500.0);
        let dfang = rng.uniform_in(0.0, 180.0);
        for t in 0..n_tilts {
            let tilt_deg = if opts.tilt_series {
                let k = t.div_ceil(2);
                let sign = if t % 2 == 1 { 1.0 } else { -1.0 };
                sign * ANGLE_PER_TILT_DEG * k as f64
            } else {
                0.0
            };
            let rot = if opts.tilt_series {
                let (s, c) = tilt_deg.to_radians().sin_cos();
                matmul(&rotation, &[1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c])
            } else {
                rotation
            };
            let shift_px = [
                (rng.normal() * opts.shift_std_px).clamp(-clip, clip),
                (rng.normal() * opts.shift_std_px).clamp(-clip, clip),
            ];
            let total_contrast = contrast * tilt_deg.to_radians().cos();
            out.push(ImageParams {
                rotation: rot,
                shift_px,
                ctf: CtfParams {
                    defocus_u: dfu as f32,
                    defocus_v: dfv as f32,
                    defocus_angle_deg: dfang as f32,
                    voltage_kv: 300.0,
                    cs_mm: 2.7,
                    amp_contrast: 0.1,
                    phase_shift_deg: 0.0,
                    bfactor: 0.0,
                    contrast: total_contrast as f32,
                },
                state,
                latent,
                particle,
                tilt_deg,
                dose: if opts.tilt_series {
                    (t as f64 + 0.5) * DOSE_PER_TILT
                } else {
                    0.0
                },
            });
        }
    }
    out
}

/// What `write_test_dataset` wrote.
#[derive(Clone, Debug)]
pub struct WrittenDataset {
    /// The particle stack.
    pub particles: PathBuf,
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// SNR of the images.
    pub snr: f64,
    /// Image counts per state.
    pub state_counts: [usize; 3],
}

/// Simulate and write a dataset in `outdir` (created if needed): `particles.{D}.mrcs`,
/// `poses.pkl`, `ctf.pkl`, `particles.star`, `simulation_info.pkl`, `ground_truth.txt`,
/// `gt_state{0,1,2}.mrc` (hinge latent 0) and `gt_mean.mrc`. Every file is written
/// atomically; images stream to disk in batches.
pub fn write_test_dataset(
    outdir: &Path,
    opts: &SimulationOptions,
    backend: &dyn Backend,
    progress: &dyn Progress,
) -> Result<WrittenDataset> {
    std::fs::create_dir_all(outdir).map_err(|e| Error::io(outdir, e))?;
    let sim = Simulator::new(opts, backend)?;
    let d = opts.image_size;
    let n = sim.params().len();
    let vs = sim.voxel_size();
    let mut files = Vec::new();

    // Images, streamed.
    let particles = outdir.join(format!("particles.{d}.mrcs"));
    let mut w = mrc::StackWriter::create(&particles, d, d, vs as f32)?;
    let batch = (64 * 1024 * 1024 / (d * d * 16)).clamp(1, 4096);
    let mut buf = Vec::new();
    report(progress, "simulate", 0, n as u64)?;
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        buf.resize((end - start) * d * d, 0.0);
        sim.images(start..end, &mut buf)?;
        w.append(&buf)?;
        report(progress, "simulate", end as u64, n as u64)?;
    }
    w.finish()?;
    files.push(particles.clone());

    // Poses (fraction of the box) and CTF (cryoDRGN layouts).
    let ps = sim.params();
    let poses = PoseTable {
        rotations: ps.iter().map(|p| p.rotation).collect(),
        translations: Some(
            ps.iter()
                .map(|p| [p.shift_px[0] / d as f64, p.shift_px[1] / d as f64])
                .collect(),
        ),
    };
    let poses_path = outdir.join("poses.pkl");
    poses.write_pickle(&poses_path, PoseDtype::F32)?;
    files.push(poses_path);
    let ctf = CtfTable {
        rows: ps.iter().map(|p| p.ctf.to_row(d as f64, vs)).collect(),
    };
    let ctf_path = outdir.join("ctf.pkl");
    ctf.write_pickle(&ctf_path)?;
    files.push(ctf_path);

    let star_path = outdir.join("particles.star");
    write_star(&star_path, &sim, &particles)?;
    files.push(star_path);

    let info_path = outdir.join("simulation_info.pkl");
    write_info(&info_path, &sim, opts)?;
    files.push(info_path);

    let gt_path = outdir.join("ground_truth.txt");
    let mut text = String::from("# image state latent contrast particle tilt_deg dose\n");
    for (i, p) in ps.iter().enumerate() {
        text.push_str(&format!(
            "{i} {} {:.6} {:.6} {} {} {}\n",
            p.state, p.latent, p.ctf.contrast, p.particle, p.tilt_deg, p.dose
        ));
    }
    crate::io::atomic::write_bytes(&gt_path, text.as_bytes())?;
    files.push(gt_path);

    let write_vol = |name: String, data: Vec<f32>| -> Result<PathBuf> {
        let p = outdir.join(name);
        mrc::write_volume(
            &p,
            &mrc::Volume {
                data,
                shape: [d, d, d],
                voxel_size: vs as f32,
                origin: [0.0; 3],
            },
        )?;
        Ok(p)
    };
    for state in 0..3 {
        files.push(write_vol(
            format!("gt_state{state}.mrc"),
            sim.volume(state, 0.0),
        )?);
    }
    files.push(write_vol("gt_mean.mrc".into(), sim.mean_volume())?);

    let mut state_counts = [0usize; 3];
    for p in ps {
        state_counts[p.state as usize] += 1;
    }
    Ok(WrittenDataset {
        particles,
        files,
        snr: sim.snr(),
        state_counts,
    })
}

/// A RELION 3.1 star file with the same poses and CTF (and, for tilt series, the particle
/// of each image, its tilt scale factor and pre-exposure).
fn write_star(path: &Path, sim: &Simulator<'_>, stack: &Path) -> Result<()> {
    let d = sim.d;
    let vs = sim.voxel_size();
    let stack_name = stack
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut optics = star::StarTable::new(
        "data_optics",
        [
            "_rlnOpticsGroup",
            "_rlnOpticsGroupName",
            "_rlnAmplitudeContrast",
            "_rlnSphericalAberration",
            "_rlnVoltage",
            "_rlnImagePixelSize",
            "_rlnImageSize",
            "_rlnImageDimensionality",
        ]
        .map(String::from)
        .to_vec(),
    );
    let p0 = &sim.params()[0].ctf;
    optics.push_row(vec![
        "1".into(),
        "opticsGroup1".into(),
        format!("{}", p0.amp_contrast),
        format!("{}", p0.cs_mm),
        format!("{}", p0.voltage_kv),
        format!("{vs:.6}"),
        format!("{d}"),
        "2".into(),
    ])?;
    let mut cols: Vec<String> = [
        "_rlnImageName",
        "_rlnAngleRot",
        "_rlnAngleTilt",
        "_rlnAnglePsi",
        "_rlnOriginXAngst",
        "_rlnOriginYAngst",
        "_rlnDefocusU",
        "_rlnDefocusV",
        "_rlnDefocusAngle",
        "_rlnPhaseShift",
        "_rlnOpticsGroup",
    ]
    .map(String::from)
    .to_vec();
    if sim.opts.tilt_series {
        cols.extend(
            [
                "_rlnGroupName",
                "_rlnCtfScalefactor",
                "_rlnMicrographPreExposure",
            ]
            .map(String::from),
        );
    }
    let mut parts = star::StarTable::new("data_particles", cols);
    for (i, p) in sim.params().iter().enumerate() {
        let (rot, tilt, psi) = relion_from_rotation(&p.rotation);
        let mut row = vec![
            format!("{:06}@{stack_name}", i + 1),
            format!("{rot:.6}"),
            format!("{tilt:.6}"),
            format!("{psi:.6}"),
            format!("{:.6}", p.shift_px[0] * vs),
            format!("{:.6}", p.shift_px[1] * vs),
            format!("{:.2}", p.ctf.defocus_u),
            format!("{:.2}", p.ctf.defocus_v),
            format!("{:.4}", p.ctf.defocus_angle_deg),
            format!("{:.4}", p.ctf.phase_shift_deg),
            "1".into(),
        ];
        if sim.opts.tilt_series {
            row.push(format!("particle{:07}", p.particle));
            row.push(format!("{:.6}", p.tilt_deg.to_radians().cos()));
            row.push(format!("{:.4}", p.dose));
        }
        parts.push_row(row)?;
    }
    let mut file = star::StarFile::new();
    file.push_block(optics);
    file.push_block(parts);
    file.write(path)
}

/// The ground truth as a numpy-readable dict (RECOVAR's simulation_info.pkl keys, plus ours).
fn write_info(path: &Path, sim: &Simulator<'_>, opts: &SimulationOptions) -> Result<()> {
    use pickle::{NdArray, PyValue};
    let ps = sim.params();
    let n = ps.len();
    let arr = |shape: Vec<usize>, v: Vec<f64>| -> Result<PyValue> {
        Ok(PyValue::Array(NdArray::from_f64(shape, v)?))
    };
    let key = |k: &str| PyValue::Str(k.to_string());
    let mut items = vec![
        (
            key("image_assignment"),
            PyValue::Array(NdArray::from_i64(
                vec![n],
                ps.iter().map(|p| p.state as i64).collect(),
            )?),
        ),
        (
            key("latent"),
            arr(vec![n], ps.iter().map(|p| p.latent).collect())?,
        ),
        (
            key("hinge_angle_deg"),
            arr(
                vec![n],
                ps.iter().map(|p| p.latent * HINGE_MAX_DEG).collect(),
            )?,
        ),
        (
            key("per_image_contrast"),
            arr(vec![n], ps.iter().map(|p| p.ctf.contrast as f64).collect())?,
        ),
        (
            key("rots"),
            arr(vec![n, 3, 3], ps.iter().flat_map(|p| p.rotation).collect())?,
        ),
        (
            key("trans"),
            arr(vec![n, 2], ps.iter().flat_map(|p| p.shift_px).collect())?,
        ),
        (
            key("noise_variance"),
            arr(
                vec![sim.noise_profile().len()],
                sim.noise_profile().to_vec(),
            )?,
        ),
        (key("scale_vol"), PyValue::Float(sim.volume_scale())),
        (key("voxel_size"), PyValue::Float(sim.voxel_size())),
        (key("grid_size"), PyValue::Int(opts.image_size as i64)),
        (key("noise_level"), PyValue::Float(opts.noise_level)),
        (key("snr"), PyValue::Float(sim.snr())),
        (key("seed"), PyValue::Int(opts.seed as i64)),
        (
            key("state_probabilities"),
            arr(vec![3], STATE_PROBABILITIES.to_vec())?,
        ),
        (key("hinge_max_deg"), PyValue::Float(HINGE_MAX_DEG)),
        (key("tilt_series"), PyValue::Bool(opts.tilt_series)),
    ];
    if opts.tilt_series {
        items.push((key("n_tilts"), PyValue::Int(opts.n_tilts as i64)));
        items.push((
            key("particle"),
            PyValue::Array(NdArray::from_i64(
                vec![n],
                ps.iter().map(|p| p.particle as i64).collect(),
            )?),
        ));
        items.push((
            key("tilt_angle_deg"),
            arr(vec![n], ps.iter().map(|p| p.tilt_deg).collect())?,
        ));
        items.push((
            key("dose"),
            arr(vec![n], ps.iter().map(|p| p.dose).collect())?,
        ));
        items.push((key("angle_per_tilt"), PyValue::Float(ANGLE_PER_TILT_DEG)));
        items.push((key("dose_per_tilt"), PyValue::Float(DOSE_PER_TILT)));
    }
    pickle::dump(path, &PyValue::Dict(items))
}
