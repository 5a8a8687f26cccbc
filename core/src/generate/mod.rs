//! Kernel-regression volume generation (algorithms.md §7): a volume at a latent point `z*`
//! from the images whose embeddings are near it, with the neighbourhood size chosen per
//! region and per frequency shell by halfset cross-validation.
//!
//! [`generate_volume`] runs, for one target:
//! 1. the heterogeneity distance of every image (§7.1) and the bins (§7.2);
//! 2. a pass over the images at oversampling 1, bin by bin, finishing the `n_bins`
//!    candidate estimates of both halfsets and scoring each against the other halfset's
//!    100-image target as it is finished (§7.3–7.4, [`local::CrossValidation`]);
//! 3. the choice of candidate per sampling point and shell;
//! 4. one pass per halfset at oversampling 2 computing only the candidates that were chosen
//!    somewhere, recombined as they are finished ([`local::Recombiner`]);
//! 5. local-resolution filtering and B-factor sharpening of the recombined halves (§7.5).
//!
//! Memory: two accumulator pairs per halfset (`kernel` module docs) instead of `n_bins`
//! volumes; the peak is one halfset's 2N-grid accumulators, `384·N³` bytes (0.8 GB at
//! N = 128), plus the cross-validation scores `n_bins × points × shells` floats.
//!
//! Deliberate difference: the final local-resolution filter samples every
//! `max(N·voxel/maskrad_fraction, 8·voxel)` Å, like the pipeline's mean_filt.mrc (windows of
//! one or two voxels give pure-noise local FSCs); the cross-validation grid itself follows
//! RECOVAR exactly.

pub mod kernel;
pub mod local;
pub mod output;

use crate::backend::Backend;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::fourier::{fsc, Fft3};
use crate::progress::Progress;
use crate::reconstruct::locres::{local_resolution, LocresOptions};

pub use kernel::{bin_of, heterogeneity_distances, pick_bins};
pub use local::LocalGrid;

/// Options of kernel regression (`compute_state`, `analyze`, `generate_from_embedding`).
#[derive(Clone, Debug)]
pub struct KernelOptions {
    /// `--n-bins` (50).
    pub n_bins: usize,
    /// `--maskrad-fraction` (20): local windows of radius `N/maskrad_fraction` voxels.
    pub maskrad_fraction: f64,
    /// `--n-min-images` (100): images in the smallest bin.
    pub n_min_images: usize,
    /// `--Bfactor` (0), Å²: sharpening of `locres_filtered`.
    pub bfactor: f64,
    /// Images per batch (memory only).
    pub batch_size: usize,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            n_bins: 50,
            maskrad_fraction: 20.0,
            n_min_images: 100,
            bfactor: 0.0,
            batch_size: 256,
        }
    }
}

impl KernelOptions {
    /// Images per batch for `n_images` images of `box_size` px within `budget_bytes` of
    /// working memory (48 bytes per pixel and image): at least 1, at most the images and
    /// 2048. Batches change memory use only, never results.
    pub fn batch_size_for(box_size: usize, n_images: usize, budget_bytes: u64) -> usize {
        let per = (box_size * box_size * 48).max(1) as u64;
        ((budget_bytes / per) as usize).clamp(1, n_images.clamp(1, 2048))
    }
}

/// The images' embedding, in dataset order.
#[derive(Clone, Copy)]
pub struct Latent<'a> {
    pub zdim: usize,
    /// `n × zdim`.
    pub zs: &'a [f32],
    /// `n × zdim × zdim`, or empty for the identity (embeddings without precisions).
    pub precisions: &'a [f32],
}

/// Everything known about one generated volume.
pub struct GeneratedVolume {
    pub n: usize,
    pub voxel_size: f64,
    pub target: Vec<f32>,
    /// Recombined halves (half1_unfil, half2_unfil) and their average (unfil).
    pub halves: [Vec<f32>; 2],
    pub unfil: Vec<f32>,
    /// Locally filtered and sharpened (locres_filtered), and without sharpening.
    pub filtered: Vec<f32>,
    pub filtered_nob: Vec<f32>,
    /// Local resolution map, Å.
    pub local_resolution: Vec<f32>,
    /// Index of the cross-validation sampling point per voxel (−1 outside).
    pub sampling_map: Vec<f32>,
    /// Heterogeneity distance of every dataset image.
    pub distances: Vec<f64>,
    pub bins: Vec<f64>,
    /// Images (both halves) with distance below each bin edge.
    pub n_images_per_bin: Vec<u64>,
    /// The cross-validation grid.
    pub grid: LocalGrid,
    /// Chosen candidate per (point, shell).
    pub choice: Vec<usize>,
    /// Scores `n_bins × points × shells`.
    pub errors: Vec<f32>,
    /// FSC between the recombined halves.
    pub fsc: Vec<f64>,
    /// Sampling of the final local-resolution filter, Å.
    pub filter_sampling: f64,
}

/// Wall-clock seconds for the debug log. wasm32-unknown-unknown has no clock
/// (`Instant::now` panics there; the wasm binding runs this code), so it reads 0 s there.
struct Stopwatch(Option<std::time::Instant>);

impl Stopwatch {
    fn start() -> Self {
        let no_clock = cfg!(all(target_arch = "wasm32", target_os = "unknown"));
        Stopwatch((!no_clock).then(std::time::Instant::now))
    }

    fn seconds(&self) -> f64 {
        self.0.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }
}

/// Sampling of the final local filter (module docs).
pub fn filter_sampling(n: usize, voxel: f64, maskrad_fraction: f64) -> f64 {
    (n as f64 * voxel / maskrad_fraction).max(8.0 * voxel)
}

/// Generate the volume at `target` (§7). `ds` carries the embedding's contrasts in its CTF
/// rows; `noise` is the radial noise profile (`N/2 − 1` shells).
pub fn generate_volume(
    ds: &Dataset,
    backend: &dyn Backend,
    noise: &[f64],
    latent: Latent<'_>,
    target: &[f32],
    opts: &KernelOptions,
    progress: &dyn Progress,
) -> Result<GeneratedVolume> {
    let n = ds.box_size();
    if latent.zs.len() != ds.len() * latent.zdim {
        return Err(Error::inconsistent(format!(
            "kernel regression: {} embedding rows for {} images",
            latent.zs.len() / latent.zdim.max(1),
            ds.len()
        )));
    }
    if noise.len() != n / 2 - 1 {
        return Err(Error::inconsistent(format!(
            "kernel regression: a noise profile of {} shells for {n}-pixel images (expected {})",
            noise.len(),
            n / 2 - 1
        )));
    }
    let distances = heterogeneity_distances(latent.zs, latent.precisions, latent.zdim, target)?;
    let first: Vec<f64> = ds.halfsets()[0].iter().map(|&p| distances[p]).collect();
    let bins = pick_bins(&first, opts.n_bins, opts.n_min_images)?;
    let n_images_per_bin: Vec<u64> = bins
        .iter()
        .map(|&b| distances.iter().filter(|&&d| d < b).count() as u64)
        .collect();
    tracing::info!(
        "kernel regression at {:?}: {} bins from d = {:.4e} ({} images) to {:.4e} ({} images)",
        target,
        bins.len(),
        bins[0],
        n_images_per_bin[0],
        bins[bins.len() - 1],
        n_images_per_bin[bins.len() - 1]
    );
    let assign = kernel::BinAssignment::new(ds, &distances, &bins);
    let inputs = kernel::KernelInputs {
        ds,
        backend,
        noise,
        batch_size: opts.batch_size,
    };
    let grid = LocalGrid::new(n, opts.maskrad_fraction)?;
    let nb = bins.len();
    let clock = Stopwatch::start();

    // Pass 1: raw candidates of both halves, scored as they come.
    let mut cv: Option<local::CrossValidation> = None;
    let mut pending: [Option<Vec<f32>>; 2] = [None, None];
    let mut target_vols: [Option<Vec<f32>>; 2] = [None, None];
    let mut target_lhs: [Option<Vec<f64>>; 2] = [None, None];
    let mut errors: Vec<Vec<f32>> = vec![Vec::new(); nb];
    kernel::stream_estimates(
        &inputs,
        &bins,
        &assign,
        &[0, 1],
        1,
        &vec![true; nb],
        "kernel regression: cross-validation",
        progress,
        &mut |e| {
            if let Some(l) = e.lhs {
                target_vols[e.half] = Some(e.volume.clone());
                target_lhs[e.half] = Some(l.to_vec());
            }
            pending[e.half] = Some(e.volume);
            if let (Some(_), Some(_)) = (&pending[0], &pending[1]) {
                if cv.is_none() {
                    let (Some(t0), Some(t1), Some(l0), Some(l1)) = (
                        target_vols[0].take(),
                        target_vols[1].take(),
                        target_lhs[0].as_deref(),
                        target_lhs[1].as_deref(),
                    ) else {
                        return Err(Error::invalid(
                            "kernel regression: the bin-0 targets were not produced first",
                        ));
                    };
                    cv = Some(local::CrossValidation::new(
                        grid.clone(),
                        [t0, t1],
                        [l0, l1],
                    )?);
                }
                let (Some(e0), Some(e1)) = (pending[0].take(), pending[1].take()) else {
                    return Ok(());
                };
                if let Some(cv) = &cv {
                    errors[e.index] = cv.errors(&e0, &e1);
                }
            }
            Ok(())
        },
    )?;
    drop(target_lhs);
    let np = grid.points.len();
    let ns = grid.n_shells;
    if errors.iter().any(|e| e.len() != np * ns) {
        return Err(Error::invalid(
            "kernel regression: a candidate estimate was not scored",
        ));
    }
    let choice = local::choose(&errors, np, ns);
    tracing::debug!(
        "cross-validation pass: {:.2} s ({np} windows × {ns} shells × {nb} candidates)",
        clock.seconds()
    );
    let clock = Stopwatch::start();
    let errors: Vec<f32> = errors.concat();

    // Pass 2: the chosen candidates at oversampling 2, per halfset, recombined.
    let mut halves: [Vec<f32>; 2] = [Vec::new(), Vec::new()];
    for (h, half) in halves.iter_mut().enumerate() {
        let mut rec = local::Recombiner::new(grid.clone(), choice.clone())?;
        let wanted = rec.needed(nb);
        tracing::debug!(
            "half {}: {} of {} candidates chosen somewhere",
            h + 1,
            wanted.iter().filter(|&&w| w).count(),
            nb
        );
        kernel::stream_estimates(
            &inputs,
            &bins,
            &assign,
            &[h],
            2,
            &wanted,
            if h == 0 {
                "kernel regression: half 1"
            } else {
                "kernel regression: half 2"
            },
            progress,
            &mut |e| {
                rec.add(e.index, &e.volume);
                Ok(())
            },
        )?;
        *half = rec.finish();
    }
    tracing::debug!(
        "final estimates and recombination: {:.2} s",
        clock.seconds()
    );
    let clock = Stopwatch::start();
    let unfil: Vec<f32> = halves[0]
        .iter()
        .zip(&halves[1])
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    let fft = Fft3::<f32>::new(n);
    let fsc_curve = fsc(
        &fft.forward_real_vec(&halves[0]),
        &fft.forward_real_vec(&halves[1]),
        n,
        false,
    )?;

    // §7.5: local resolution, filtered and sharpened.
    let vs = ds.voxel_size();
    let sampling = filter_sampling(n, vs, opts.maskrad_fraction);
    let lopts = LocresOptions {
        sampling_angstrom: sampling,
        bfactor: opts.bfactor,
        ..Default::default()
    };
    let loc = local_resolution(&halves[0], &halves[1], n, vs, &lopts, progress)?;
    let filtered_nob = if opts.bfactor != 0.0 {
        local_resolution(
            &halves[0],
            &halves[1],
            n,
            vs,
            &LocresOptions {
                bfactor: 0.0,
                ..lopts.clone()
            },
            progress,
        )?
        .filtered
    } else {
        loc.filtered.clone()
    };
    tracing::debug!("local resolution and filtering: {:.2} s", clock.seconds());
    Ok(GeneratedVolume {
        n,
        voxel_size: vs,
        target: target.to_vec(),
        halves,
        unfil,
        filtered: loc.filtered,
        filtered_nob,
        local_resolution: loc.resolution,
        sampling_map: grid.sampling_map(),
        distances,
        bins,
        n_images_per_bin,
        grid,
        choice,
        errors,
        fsc: fsc_curve,
        filter_sampling: sampling,
    })
}

#[cfg(test)]
mod batch_tests {
    use super::KernelOptions;

    #[test]
    fn batch_sizes_follow_the_budget_within_bounds() {
        // 2 GB at 48 bytes per pixel: 635 images of 256 px; capped at 2048 and the count.
        assert_eq!(
            KernelOptions::batch_size_for(256, 100_000, 2_000_000_000),
            635
        );
        assert_eq!(
            KernelOptions::batch_size_for(128, 100_000, 2_000_000_000),
            2048
        );
        assert_eq!(KernelOptions::batch_size_for(32, 10, 2_000_000_000), 10);
        assert_eq!(KernelOptions::batch_size_for(256, 100, 1), 1);
        assert_eq!(KernelOptions::batch_size_for(32, 0, 2_000_000_000), 1);
    }
}
