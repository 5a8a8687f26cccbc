//! The binding's operations as plain Rust: every check and every call into `recovar-core`.
//!
//! The `#[wasm_bindgen]` layer in `lib.rs` only converts types and turns errors into JS
//! exceptions. Keeping the work here lets the native tests (`tests/`) and the reference
//! example call exactly what the `.wasm` module runs, without a JS engine (a `JsError`
//! cannot be made outside wasm).
//!
//! Validation happens before any core call: the `.wasm` module is built with
//! `panic = "abort"`, so a failed assertion inside the core would kill the module
//! instead of throwing. Every size, count and number is therefore checked here with a
//! message that names the JS argument.

use std::path::Path;
use std::sync::OnceLock;

use recovar_core::backend::{Backend, CpuBackend};
use recovar_core::dataset::{CtfParams, CtfTable, Dataset};
use recovar_core::error::{Error, Result};
use recovar_core::forward::{cubic, Interp, SliceGeometry};
use recovar_core::fourier::{fsc as core_fsc, resolution_at, Fft3};
use recovar_core::generate::{generate_volume, GeneratedVolume, KernelOptions, Latent};
use recovar_core::pipeline::load::estimate_noise_profile;
use recovar_core::progress::NoProgress;
use recovar_core::reconstruct::noise::NoiseModel;
use recovar_core::simulate::{SimulationOptions, Simulator};

use num_complex::Complex;

/// Largest image or volume side accepted by the CTF, FSC and dataset calls.
pub const MAX_IMAGE_SIZE: usize = 1024;

/// Limits that keep the big work arrays inside wasm32's 4 GiB of memory (running out
/// aborts the module instead of throwing), for the same box sizes natively:
/// the Fourier volume a projection slices (`(s·N)³` complex f32: 1 GiB at 512),
/// kernel regression's 2N-grid accumulators (about `384·N³` bytes: 0.8 GB at 128), and
/// the simulator's three 2D-grid body spectra (`3·(2D)³` complex f32: 0.4 GB at 128).
pub const MAX_FOURIER_SIDE: usize = 512;
pub const MAX_KERNEL_SIZE: usize = 128;
pub const MAX_SIMULATED_SIZE: usize = 128;

/// Working memory for image batches in kernel regression and noise estimation. The CLI
/// uses 2 GB; wasm32 has at most 4 GiB in all, so the binding uses less. Batch sizes
/// never change results (the core's determinism contract).
const BATCH_BUDGET_BYTES: u64 = 256 << 20;

/// The one CPU backend of the module: it caches FFT plans per image size, and the
/// simulator keeps a `'static` reference to it. In wasm32-unknown-unknown there are no
/// threads; rayon runs everything on the calling thread.
pub fn backend() -> &'static CpuBackend {
    static BACKEND: OnceLock<CpuBackend> = OnceLock::new();
    BACKEND.get_or_init(CpuBackend::new)
}

/// `recovar-core`'s version.
pub fn version() -> &'static str {
    recovar_core::VERSION
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid(msg)
}

/// `v` as a whole number in `min..=max`, for arguments that arrive as JS numbers.
pub fn whole(name: &str, v: f64, min: usize, max: usize) -> Result<usize> {
    if !(v.is_finite() && v.fract() == 0.0 && v >= min as f64 && v <= max as f64) {
        return Err(invalid(format!(
            "{name} = {}: must be a whole number in {min}..={max}",
            js_number(v)
        )));
    }
    Ok(v as usize)
}

/// A seed given as a JS number: a whole number in `0..2^53` (JS numbers are exact there).
pub fn seed(name: &str, v: f64) -> Result<u64> {
    if !(v.is_finite() && v.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&v)) {
        return Err(invalid(format!(
            "{name} = {}: must be a whole number in 0..2^53",
            js_number(v)
        )));
    }
    Ok(v as u64)
}

/// Every value of `x` is finite; otherwise names the first one that is not.
fn check_finite<T: Copy + Into<f64>>(name: &str, x: &[T]) -> Result<()> {
    match x.iter().position(|&v| !v.into().is_finite()) {
        None => Ok(()),
        Some(i) => Err(invalid(format!(
            "{name}[{i}] is {}: every value must be a finite number",
            js_number(x[i].into())
        ))),
    }
}

/// A number as JS prints it (Rust writes non-finite values as `inf`, `NaN`).
fn js_number(v: f64) -> String {
    if v.is_finite() || v.is_nan() {
        v.to_string()
    } else if v > 0.0 {
        "Infinity".into()
    } else {
        "-Infinity".into()
    }
}

/// `len / per` when `len` is a non-zero multiple of `per`.
fn count_of(name: &str, len: usize, per: usize, unit: &str) -> Result<usize> {
    if len == 0 || !len.is_multiple_of(per) {
        return Err(invalid(format!(
            "{name} has {len} values: expected a non-zero multiple of {per} ({unit})"
        )));
    }
    Ok(len / per)
}

/// Side `n` of a cubic volume of `len` values.
fn cube_side(name: &str, len: usize) -> Result<usize> {
    let n = (len as f64).cbrt().round() as usize;
    if n < 2 || n * n * n != len {
        return Err(invalid(format!(
            "{name} has {len} values, which is not N³ for a volume side N ≥ 2"
        )));
    }
    if n > MAX_IMAGE_SIZE {
        return Err(invalid(format!(
            "{name}: volume side {n} is larger than {MAX_IMAGE_SIZE}"
        )));
    }
    Ok(n)
}

/// Rows of 9 values as row-major 3×3 rotations (checked by the core when used).
fn rotations_of(name: &str, r: &[f32]) -> Result<Vec<[f32; 9]>> {
    count_of(name, r.len(), 9, "one row-major 3×3 matrix per image")?;
    check_finite(name, r)?;
    Ok(r.chunks_exact(9)
        .map(|c| std::array::from_fn(|j| c[j]))
        .collect())
}

/// The CTF of one cryoDRGN row (`D, Apix, dfU (Å), dfV (Å), dfang (°), kV, Cs (mm), w,
/// phase shift (°)`) on an `image_size × image_size` grid (default: the row's `D`), row-major,
/// centered (frequency 0 at row and column `image_size/2`). As in a dataset, the pixel size is
/// `D·Apix / image_size` and the parameters pass through f32 with contrast 1 and no
/// B-factor, then the CPU backend evaluates the formula in f64 — the values every
/// pipeline stage uses.
pub fn ctf_image(row: &[f64], image_size: Option<f64>) -> Result<Vec<f32>> {
    if row.len() != 9 {
        return Err(invalid(format!(
            "ctfRow has {} values: expected the 9 of a cryoDRGN CTF row (D, Apix, dfU, dfV, \
             dfang, kV, Cs, w, phase shift)",
            row.len()
        )));
    }
    let r: [f64; 9] = std::array::from_fn(|j| row[j]);
    CtfTable { rows: vec![r] }.validate(Path::new("ctfRow"))?;
    let d = match image_size {
        Some(v) => whole("imageSize", v, 1, MAX_IMAGE_SIZE)?,
        None => whole(
            "ctfRow[0] (D, used as the image size)",
            r[0],
            1,
            MAX_IMAGE_SIZE,
        )?,
    };
    // The conversion Dataset uses; tests/ops.rs checks the two agree.
    let params = CtfParams::from_row(&r);
    let pixel = r[0] * r[1] / d as f64;
    let mut out = vec![0.0f32; d * d];
    backend().ctf(&[params], d, pixel, &mut out)?;
    Ok(out)
}

/// Parse an interpolation name.
pub fn interp_of(name: Option<&str>) -> Result<Interp> {
    match name.unwrap_or("cubic") {
        "cubic" => Ok(Interp::Cubic),
        "trilinear" => Ok(Interp::Trilinear),
        "nearest" => Ok(Interp::Nearest),
        other => Err(invalid(format!(
            "interpolation \"{other}\": expected \"cubic\", \"trilinear\" or \"nearest\""
        ))),
    }
}

/// Real-space projections of a real `N³` volume (MRC order, x fastest) at each rotation
/// (row-major 3×3, cryoDRGN convention): `K × N × N` images, row-major. The volume's
/// centered 3-D DFT, on the `N` grid or zero-padded to the `2N` grid
/// (`oversampling` 1 or 2), is sliced by the CPU backend (frequencies beyond `N/2 − 1`
/// are zero) and each slice is inverse-transformed. The default, cubic B-spline on the
/// `N` grid, is how the pipeline projects the mean and the eigenvolumes (covariance
/// columns, embeddings); oversampling 2 with cubic is how the simulator forms its images.
/// Image pixel (row `r`, column `c`) is the line integral through volume point
/// `(c − N/2)·R[0,:] + (r − N/2)·R[1,:]` (x, y, z in voxels from voxel `N/2`) along
/// `R[2,:]`.
pub fn project(
    volume: &[f32],
    rotations: &[f32],
    oversampling: usize,
    interp: Interp,
) -> Result<Vec<f32>> {
    let n = cube_side("volume", volume.len())?;
    if !n.is_multiple_of(2) {
        return Err(invalid(format!("volume side {n} must be even")));
    }
    check_finite("volume", volume)?;
    let rots = rotations_of("rotations", rotations)?;
    if oversampling != 1 && oversampling != 2 {
        return Err(invalid(format!(
            "oversampling = {oversampling}: must be 1 (the N grid) or 2 (the 2N grid)"
        )));
    }
    let nv = oversampling * n;
    if nv > MAX_FOURIER_SIDE {
        return Err(invalid(format!(
            "volume side {n} × oversampling {oversampling} = {nv}: at most {MAX_FOURIER_SIDE} \
             fits in wasm32 memory (downsample the volume)"
        )));
    }
    let geom = SliceGeometry::new(n, nv)?;
    let mut spec = vec![Complex::new(0.0f32, 0.0); nv * nv * nv];
    // Zero-padding centred on voxel N/2 keeps that voxel at the padded grid's centre, so
    // both grids describe the same object; 2N-grid frequency 2k is N-grid frequency k.
    let off = (nv - n) / 2;
    for z in 0..n {
        for y in 0..n {
            let src = (z * n + y) * n;
            let dst = ((z + off) * nv + (y + off)) * nv + off;
            for x in 0..n {
                spec[dst + x] = Complex::new(volume[src + x], 0.0);
            }
        }
    }
    Fft3::<f32>::new(nv).forward(&mut spec);
    if interp == Interp::Cubic {
        cubic::prefilter(&mut spec, nv)?;
    }
    let k = rots.len();
    let mut slices = vec![Complex::new(0.0f32, 0.0); k * n * n];
    backend().slice(&spec, &geom, interp, &rots, &mut slices)?;
    let mut images = vec![0.0f32; k * n * n];
    backend().spectra_to_images(&slices, n, &mut images)?;
    Ok(images)
}

/// Fourier shell correlation of two real `N³` volumes: `N/2 − 1` shells (`round(|k|)`),
/// with `FSC(0) := FSC(1)` and empty shells 0, as the pipeline's half-map FSC.
pub fn fsc(a: &[f32], b: &[f32]) -> Result<Vec<f64>> {
    let n = cube_side("volumeA", a.len())?;
    if b.len() != a.len() {
        return Err(invalid(format!(
            "volumeB has {} values but volumeA has {} ({n}³): the volumes must have the same size",
            b.len(),
            a.len()
        )));
    }
    if n < 4 {
        return Err(invalid(format!(
            "volume side {n}: the FSC needs a side of at least 4 (N/2 − 1 ≥ 1 shells)"
        )));
    }
    check_finite("volumeA", a)?;
    check_finite("volumeB", b)?;
    let fft = Fft3::<f32>::new(n);
    core_fsc(&fft.forward_real_vec(a), &fft.forward_real_vec(b), n, false)
}

/// Resolution in Å where `curve` first drops below `threshold` (linear interpolation
/// between shells, as RECOVAR's `find_fsc_resol`; see `recovar_core::fourier::resolution_at`
/// for the edge cases).
pub fn fsc_resolution(
    curve: &[f64],
    box_size: f64,
    voxel_size: f64,
    threshold: f64,
) -> Result<f64> {
    check_finite("fsc", curve)?;
    if curve.is_empty() {
        return Err(invalid("fsc is empty"));
    }
    let n = whole("boxSize", box_size, 1, u32::MAX as usize)?;
    if !(voxel_size.is_finite() && voxel_size > 0.0) {
        return Err(invalid(format!(
            "voxelSize = {}: must be a positive number of Å",
            js_number(voxel_size)
        )));
    }
    if !threshold.is_finite() {
        return Err(invalid(format!(
            "threshold = {threshold}: must be a number"
        )));
    }
    Ok(resolution_at(curve, threshold, n, voxel_size))
}

/// A particle set in memory: images, poses and CTF, with its noise profile once estimated.
pub struct Particles {
    pub dataset: Dataset,
    noise: Option<Vec<f64>>,
}

impl Particles {
    /// `n` images of `D × D` (row-major), rotations (`n × 9`, row-major, cryoDRGN
    /// convention), translations in pixels (`n × 2`, x then y; the image is shifted by +t to
    /// centre the particle, as cryoDRGN's poses), cryoDRGN CTF rows (`n × 9`). Halfsets
    /// are RECOVAR's seeded random split. The images are used with their sign as given.
    pub fn new(
        images: Vec<f32>,
        rotations: &[f32],
        translations: &[f32],
        ctf: &[f64],
        halfset_seed: u64,
    ) -> Result<Self> {
        let rots = rotations_of("rotations", rotations)?;
        let n = rots.len();
        let per = images.len() / n;
        let d = (per as f64).sqrt().round() as usize;
        if images.len() != n * d * d || d == 0 {
            return Err(invalid(format!(
                "images has {} values: {n} images (from rotations) of D × D need n·D² values",
                images.len()
            )));
        }
        if d > MAX_IMAGE_SIZE {
            return Err(invalid(format!(
                "image size {d} is larger than {MAX_IMAGE_SIZE}"
            )));
        }
        check_finite("images", &images)?;
        if translations.len() != 2 * n {
            return Err(invalid(format!(
                "translations has {} values: {n} images need {} (x, y in pixels per image)",
                translations.len(),
                2 * n
            )));
        }
        if ctf.len() != 9 * n {
            return Err(invalid(format!(
                "ctf has {} values: {n} images need {} (one 9-value cryoDRGN row per image)",
                ctf.len(),
                9 * n
            )));
        }
        let shifts: Vec<[f32; 2]> = translations.chunks_exact(2).map(|t| [t[0], t[1]]).collect();
        let rows: Vec<[f64; 9]> = ctf
            .chunks_exact(9)
            .map(|c| std::array::from_fn(|j| c[j]))
            .collect();
        let dataset = Dataset::from_arrays(images, n, d, &rots, &shifts, &rows, halfset_seed)?;
        Ok(Particles {
            dataset,
            noise: None,
        })
    }

    fn batch_size(&self) -> usize {
        // The CLI's kernel-regression rule, in wasm's smaller budget.
        KernelOptions::batch_size_for(
            self.dataset.box_size(),
            self.dataset.len(),
            BATCH_BUDGET_BYTES,
        )
    }

    /// The radial noise profile (`D/2 − 1` shells), estimated on first use as
    /// `recovar generate_from_embedding` does: mean, mask from its half maps, noise outside
    /// it (radial model).
    pub fn noise_profile(&mut self) -> Result<&[f64]> {
        if self.noise.is_none() {
            let batch = self.batch_size();
            let noise = estimate_noise_profile(
                &mut self.dataset,
                backend(),
                NoiseModel::Radial,
                batch,
                &NoProgress,
            )?;
            self.noise = Some(noise);
        }
        Ok(self.noise.as_deref().unwrap_or(&[]))
    }

    /// Kernel-regression volume at `target` from an embedding (`n × zdim`, zdim =
    /// `target.len()`) and optional precisions (`n × zdim × zdim`; identity when absent,
    /// as for another method's embedding).
    pub fn generate(
        &mut self,
        embedding: &[f32],
        target: &[f32],
        precisions: Option<&[f32]>,
        settings: &KernelSettings,
    ) -> Result<GeneratedVolume> {
        let n = self.dataset.len();
        let zdim = target.len();
        if zdim == 0 {
            return Err(invalid(
                "target is empty: give one latent coordinate per dimension",
            ));
        }
        check_finite("target", target)?;
        if embedding.len() != n * zdim {
            return Err(invalid(format!(
                "embedding has {} values: {n} images × zdim {zdim} (the target's length) need {}",
                embedding.len(),
                n * zdim
            )));
        }
        check_finite("embedding", embedding)?;
        let precisions = precisions.unwrap_or(&[]);
        if !precisions.is_empty() && precisions.len() != n * zdim * zdim {
            return Err(invalid(format!(
                "precisions has {} values: {n} images × {zdim}×{zdim} need {}",
                precisions.len(),
                n * zdim * zdim
            )));
        }
        check_finite("precisions", precisions)?;
        let d = self.dataset.box_size();
        if d > MAX_KERNEL_SIZE {
            return Err(invalid(format!(
                "kernel regression on {d}-px images needs about {:.1} GB, more than wasm32 \
                 memory allows: downsample the images to at most {MAX_KERNEL_SIZE} px",
                384.0 * (d as f64).powi(3) / 1e9
            )));
        }
        let opts = settings.options(self.batch_size())?;
        self.noise_profile()?;
        let noise = self.noise.as_deref().unwrap_or(&[]);
        generate_volume(
            &self.dataset,
            backend(),
            noise,
            Latent {
                zdim,
                zs: embedding,
                precisions,
            },
            target,
            &opts,
            &NoProgress,
        )
    }
}

/// Kernel-regression settings as JS numbers (checked by [`KernelSettings::options`]).
#[derive(Clone, Copy, Debug)]
pub struct KernelSettings {
    pub n_bins: f64,
    pub n_min_images: f64,
    pub bfactor: f64,
    pub maskrad_fraction: f64,
}

impl Default for KernelSettings {
    fn default() -> Self {
        let d = KernelOptions::default();
        KernelSettings {
            n_bins: d.n_bins as f64,
            n_min_images: d.n_min_images as f64,
            bfactor: d.bfactor,
            maskrad_fraction: d.maskrad_fraction,
        }
    }
}

impl KernelSettings {
    fn options(&self, batch_size: usize) -> Result<KernelOptions> {
        let n_bins = whole("options.nBins", self.n_bins, 1, 10_000)?;
        let n_min_images = whole(
            "options.nMinImages",
            self.n_min_images,
            1,
            u32::MAX as usize,
        )?;
        if !self.bfactor.is_finite() {
            return Err(invalid(format!(
                "options.bfactor = {}: must be a finite number of Å²",
                js_number(self.bfactor)
            )));
        }
        if !(self.maskrad_fraction.is_finite() && self.maskrad_fraction > 0.0) {
            return Err(invalid(format!(
                "options.maskradFraction = {}: must be a positive number",
                js_number(self.maskrad_fraction)
            )));
        }
        Ok(KernelOptions {
            n_bins,
            maskrad_fraction: self.maskrad_fraction,
            n_min_images,
            bfactor: self.bfactor,
            batch_size,
        })
    }
}

/// A simulated dataset (recovar-core's phantom and simulator, as `recovar
/// make_test_dataset`), held in memory with its ground truth.
pub struct Simulation {
    pub sim: Simulator<'static>,
    pub images: Vec<f32>,
}

/// Simulation settings as JS numbers.
#[derive(Clone, Copy, Debug)]
pub struct SimulationSettings {
    pub image_size: f64,
    pub n_images: f64,
    pub noise_level: f64,
    pub seed: f64,
    pub discrete_only: bool,
}

impl Default for SimulationSettings {
    fn default() -> Self {
        let d = SimulationOptions::default();
        SimulationSettings {
            image_size: d.image_size as f64,
            n_images: d.n_images as f64,
            noise_level: d.noise_level,
            seed: d.seed as f64,
            discrete_only: !d.hinge,
        }
    }
}

/// Largest simulated set (images × pixels), to stay well inside wasm32 memory.
const MAX_SIMULATED_VALUES: usize = 1 << 27;

/// Simulate a dataset (single-particle images, no tilt series).
pub fn simulate(s: &SimulationSettings) -> Result<Simulation> {
    let d = whole("options.imageSize", s.image_size, 16, MAX_SIMULATED_SIZE)?;
    if !d.is_multiple_of(2) {
        return Err(invalid(format!("options.imageSize = {d}: must be even")));
    }
    if !(s.noise_level.is_finite() && s.noise_level >= 0.0) {
        return Err(invalid(format!(
            "options.noiseLevel = {}: must be a number ≥ 0",
            js_number(s.noise_level)
        )));
    }
    let n = whole("options.nImages", s.n_images, 1, MAX_SIMULATED_VALUES)?;
    if n.saturating_mul(d * d) > MAX_SIMULATED_VALUES {
        return Err(invalid(format!(
            "{n} images of {d}×{d} is more than the {MAX_SIMULATED_VALUES} pixels the wasm \
             binding simulates at once"
        )));
    }
    let seed = seed("options.seed", s.seed)?;
    let opts = SimulationOptions {
        image_size: d,
        n_images: n,
        noise_level: s.noise_level,
        seed,
        hinge: !s.discrete_only,
        ..Default::default()
    };
    let sim = Simulator::new(&opts, backend())?;
    let mut images = vec![0.0f32; n * d * d];
    sim.images(0..n, &mut images)?;
    Ok(Simulation { sim, images })
}

impl Simulation {
    /// Image side `D`.
    pub fn image_size(&self) -> usize {
        (self.images.len() / self.sim.params().len()).isqrt()
    }

    /// Rotations, `n × 9` row-major (cryoDRGN convention).
    pub fn rotations(&self) -> Vec<f32> {
        self.sim
            .params()
            .iter()
            .flat_map(|p| p.rotation.map(|v| v as f32))
            .collect()
    }

    /// Translations in pixels, `n × 2` (what the dataset shifts each image by).
    pub fn translations(&self) -> Vec<f32> {
        self.sim
            .params()
            .iter()
            .flat_map(|p| p.shift_px.map(|v| v as f32))
            .collect()
    }

    /// CTF rows, `n × 9`, as `make_test_dataset` writes them to ctf.pkl.
    pub fn ctf(&self) -> Vec<f64> {
        let d = self.image_size() as f64;
        let vs = self.sim.voxel_size();
        self.sim
            .params()
            .iter()
            .flat_map(|p| p.ctf.to_row(d, vs))
            .collect()
    }

    /// The ground-truth volume of `state` (0, 1, 2) at hinge latent `latent` (−1..1), `D³`
    /// in image units.
    pub fn volume(&self, state: f64, latent: f64) -> Result<Vec<f32>> {
        let state = whole("state", state, 0, 2)?;
        if !(latent.is_finite() && (-1.0..=1.0).contains(&latent)) {
            return Err(invalid(format!(
                "latent = {}: the hinge latent must be in [−1, 1]",
                js_number(latent)
            )));
        }
        Ok(self.sim.volume(state, latent))
    }
}
