//! WebAssembly binding of RECOVAR's in-memory CPU operations (wasm-bindgen), for Node and
//! browsers: CTF evaluation, projection (slicing), FSC, kernel-regression volumes from an
//! embedding, and the simulator that makes test data. Nothing here touches a file system.
//!
//! This file is the JS surface only: names (camelCase), typed arrays in and out, errors
//! thrown as JS `Error`s with the core's message. The work, and every check, is in
//! [`ops`], which the native tests call directly.
//!
//! Conventions are the core's (`recovar_core::forward`): images `D × D` row-major with
//! frequency 0 at `D/2`; volumes `N³` in MRC order (x fastest); rotations row-major 3×3 in
//! cryoDRGN's convention; translations in pixels; CTF rows in cryoDRGN's 9-column layout.

pub mod ops;
mod options;

use wasm_bindgen::prelude::*;

/// The version of recovar-core this module was built from.
#[wasm_bindgen]
pub fn version() -> String {
    ops::version().to_string()
}

/// The CTF of one cryoDRGN CTF row (`D, Apix, dfU, dfV, dfang, kV, Cs, w, phase shift`)
/// as a centered `imageSize × imageSize` image (default: the row's `D`; the pixel size is
/// then `D·Apix / imageSize`, as for a downsampled stack).
#[wasm_bindgen(js_name = ctfImage)]
pub fn ctf_image(
    #[wasm_bindgen(js_name = ctfRow)] ctf_row: &[f64],
    #[wasm_bindgen(js_name = imageSize)] image_size: Option<f64>,
) -> Result<Vec<f32>, JsError> {
    Ok(ops::ctf_image(ctf_row, image_size)?)
}

/// Real-space projections (`K × N × N`) of a real `N³` volume at `K` rotations
/// (`K × 9`). `oversampling`: 1 (default, the pipeline's) or 2 (the simulator's);
/// `interpolation`: "cubic" (default), "trilinear" or "nearest".
#[wasm_bindgen]
pub fn project(
    volume: &[f32],
    rotations: &[f32],
    oversampling: Option<f64>,
    interpolation: Option<String>,
) -> Result<Vec<f32>, JsError> {
    let s = ops::whole("oversampling", oversampling.unwrap_or(1.0), 1, 2)?;
    let interp = ops::interp_of(interpolation.as_deref())?;
    Ok(ops::project(volume, rotations, s, interp)?)
}

/// Fourier shell correlation of two real `N³` volumes (`N/2 − 1` shells).
#[wasm_bindgen]
pub fn fsc(
    #[wasm_bindgen(js_name = volumeA)] volume_a: &[f32],
    #[wasm_bindgen(js_name = volumeB)] volume_b: &[f32],
) -> Result<Vec<f64>, JsError> {
    Ok(ops::fsc(volume_a, volume_b)?)
}

/// Resolution (Å) where an FSC curve first drops below `threshold` (default 0.143).
#[wasm_bindgen(js_name = fscResolution)]
pub fn fsc_resolution(
    fsc: &[f64],
    #[wasm_bindgen(js_name = boxSize)] box_size: f64,
    #[wasm_bindgen(js_name = voxelSize)] voxel_size: f64,
    threshold: Option<f64>,
) -> Result<f64, JsError> {
    Ok(ops::fsc_resolution(
        fsc,
        box_size,
        voxel_size,
        threshold.unwrap_or(0.143),
    )?)
}

/// Particle images with poses and CTF, in memory. Call `free()` when done (or let the
/// garbage collector do it).
#[wasm_bindgen]
pub struct Dataset {
    inner: ops::Particles,
}

#[wasm_bindgen]
impl Dataset {
    /// `images`: `n × D × D` (row-major); `rotations`: `n × 9`; `translations`: `n × 2`
    /// pixels; `ctf`: `n × 9` cryoDRGN rows; `halfsetSeed` (0): the random halfset split.
    /// Images are used with their sign as given (particles bright).
    #[wasm_bindgen(constructor)]
    pub fn new(
        images: Vec<f32>,
        rotations: &[f32],
        translations: &[f32],
        ctf: &[f64],
        #[wasm_bindgen(js_name = halfsetSeed)] halfset_seed: Option<f64>,
    ) -> Result<Dataset, JsError> {
        let seed = ops::seed("halfsetSeed", halfset_seed.unwrap_or(0.0))?;
        Ok(Dataset {
            inner: ops::Particles::new(images, rotations, translations, ctf, seed)?,
        })
    }

    /// Number of images.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> usize {
        self.inner.dataset.len()
    }

    /// Image side `D`.
    #[wasm_bindgen(getter = boxSize)]
    pub fn box_size(&self) -> usize {
        self.inner.dataset.box_size()
    }

    /// Pixel size in Å (`D_ctf·Apix / D` from the CTF rows).
    #[wasm_bindgen(getter = voxelSize)]
    pub fn voxel_size(&self) -> f64 {
        self.inner.dataset.voxel_size()
    }

    /// The radial noise profile (`D/2 − 1` shells), estimated on first use (mean, mask,
    /// noise outside it, as `recovar generate_from_embedding`) and kept.
    #[wasm_bindgen(js_name = noiseProfile)]
    pub fn noise_profile(&mut self) -> Result<Vec<f64>, JsError> {
        Ok(self.inner.noise_profile()?.to_vec())
    }

    /// The kernel-regression volume at `target` (its length is the latent dimension) from
    /// `embedding` (`n × zdim`) and optional `precisions` (`n × zdim × zdim`, identity when
    /// absent). `options`: `{ nBins, nMinImages, bfactor, maskradFraction }`, each
    /// optional (the command line's defaults).
    #[wasm_bindgen(js_name = generateVolume)]
    pub fn generate_volume(
        &mut self,
        embedding: &[f32],
        target: &[f32],
        #[wasm_bindgen(unchecked_optional_param_type = "KernelOptions")] options: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "Float32Array | number[]")]
        precisions: Option<Vec<f32>>,
    ) -> Result<GeneratedVolume, JsError> {
        let settings = options::kernel_settings(&options)?;
        let v = self
            .inner
            .generate(embedding, target, precisions.as_deref(), &settings)?;
        Ok(GeneratedVolume { inner: v })
    }
}

/// One kernel-regression volume and its by-products.
#[wasm_bindgen]
pub struct GeneratedVolume {
    inner: recovar_core::generate::GeneratedVolume,
}

#[wasm_bindgen]
impl GeneratedVolume {
    /// Box side `N`.
    #[wasm_bindgen(getter = boxSize)]
    pub fn box_size(&self) -> usize {
        self.inner.n
    }

    /// Voxel size in Å.
    #[wasm_bindgen(getter = voxelSize)]
    pub fn voxel_size(&self) -> f64 {
        self.inner.voxel_size
    }

    /// Locally filtered (and B-factor sharpened) volume, `N³` (locres_filtered.mrc).
    #[wasm_bindgen(getter)]
    pub fn filtered(&self) -> Vec<f32> {
        self.inner.filtered.clone()
    }

    /// Average of the two recombined halves, unfiltered (unfil.mrc).
    #[wasm_bindgen(getter)]
    pub fn unfiltered(&self) -> Vec<f32> {
        self.inner.unfil.clone()
    }

    /// First recombined half (half1_unfil.mrc).
    #[wasm_bindgen(getter)]
    pub fn half1(&self) -> Vec<f32> {
        self.inner.halves[0].clone()
    }

    /// Second recombined half (half2_unfil.mrc).
    #[wasm_bindgen(getter)]
    pub fn half2(&self) -> Vec<f32> {
        self.inner.halves[1].clone()
    }

    /// Local resolution in Å per voxel (locres.mrc).
    #[wasm_bindgen(getter = localResolution)]
    pub fn local_resolution(&self) -> Vec<f32> {
        self.inner.local_resolution.clone()
    }

    /// FSC between the two halves (`N/2 − 1` shells).
    #[wasm_bindgen(getter)]
    pub fn fsc(&self) -> Vec<f64> {
        self.inner.fsc.clone()
    }

    /// Heterogeneity distance of every image to the target.
    #[wasm_bindgen(getter)]
    pub fn distances(&self) -> Vec<f64> {
        self.inner.distances.clone()
    }

    /// Images (both halves) closer than each bin edge.
    #[wasm_bindgen(getter = nImagesPerBin)]
    pub fn n_images_per_bin(&self) -> Vec<f64> {
        self.inner
            .n_images_per_bin
            .iter()
            .map(|&c| c as f64)
            .collect()
    }
}

/// Simulate a heterogeneous dataset with ground truth (recovar-core's phantom: a core, a
/// hinged arm and a lid in two sites; states 0, 1, 2; CTF, shifts, coloured noise), as
/// `recovar make_test_dataset`. `options`: `{ imageSize, nImages, noiseLevel, seed,
/// discreteOnly }`, each optional. The same options give the same images.
#[wasm_bindgen]
pub fn simulate(
    #[wasm_bindgen(unchecked_optional_param_type = "SimulationOptions")] options: JsValue,
) -> Result<Simulation, JsError> {
    let s = ops::simulate(&options::simulation_settings(&options)?)?;
    Ok(Simulation { inner: s })
}

/// A simulated dataset and its ground truth.
#[wasm_bindgen]
pub struct Simulation {
    inner: ops::Simulation,
}

#[wasm_bindgen]
impl Simulation {
    /// Number of images.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> usize {
        self.inner.sim.params().len()
    }

    /// Image side D.
    #[wasm_bindgen(getter = imageSize)]
    pub fn image_size(&self) -> usize {
        self.inner.image_size()
    }

    /// Pixel size in Å.
    #[wasm_bindgen(getter = voxelSize)]
    pub fn voxel_size(&self) -> f64 {
        self.inner.sim.voxel_size()
    }

    /// Noisy images, `n × D × D`.
    #[wasm_bindgen(getter)]
    pub fn images(&self) -> Vec<f32> {
        self.inner.images.clone()
    }

    /// Rotations, `n × 9` (row-major, cryoDRGN convention).
    #[wasm_bindgen(getter)]
    pub fn rotations(&self) -> Vec<f32> {
        self.inner.rotations()
    }

    /// Translations in pixels, `n × 2`.
    #[wasm_bindgen(getter)]
    pub fn translations(&self) -> Vec<f32> {
        self.inner.translations()
    }

    /// CTF rows, `n × 9` (cryoDRGN layout).
    #[wasm_bindgen(getter)]
    pub fn ctf(&self) -> Vec<f64> {
        self.inner.ctf()
    }

    /// True state (0, 1, 2) of every image.
    #[wasm_bindgen(getter)]
    pub fn states(&self) -> Vec<u8> {
        self.inner.sim.params().iter().map(|p| p.state).collect()
    }

    /// True hinge latent (−1..1) of every image (0 with `discreteOnly`).
    #[wasm_bindgen(getter)]
    pub fn latents(&self) -> Vec<f64> {
        self.inner.sim.params().iter().map(|p| p.latent).collect()
    }

    /// True per-image contrast (amplitude scale, not part of the CTF rows).
    #[wasm_bindgen(getter)]
    pub fn contrasts(&self) -> Vec<f32> {
        self.inner
            .sim
            .params()
            .iter()
            .map(|p| p.ctf.contrast)
            .collect()
    }

    /// The simulated noise power per shell (`round(|k|)`, 0 to the corner), on the
    /// unnormalized-DFT scale of `Dataset.noiseProfile`.
    #[wasm_bindgen(getter = noiseProfile)]
    pub fn noise_profile(&self) -> Vec<f64> {
        self.inner.sim.noise_profile().to_vec()
    }

    /// Ground-truth volume (`D³`, image units) of `state` at hinge `latent` (default 0).
    pub fn volume(&self, state: f64, latent: Option<f64>) -> Result<Vec<f32>, JsError> {
        Ok(self.inner.volume(state, latent.unwrap_or(0.0))?)
    }

    /// Ground-truth mean over the dataset's images (`D³`, image units).
    #[wasm_bindgen(js_name = meanVolume)]
    pub fn mean_volume(&self) -> Vec<f32> {
        self.inner.sim.mean_volume()
    }
}
