//! Option objects from JS (`{ nBins: 20, bfactor: 0 }`): plain objects are what a JS
//! caller expects; unknown keys are errors so that a misspelt option is not silently
//! ignored.

use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::ops::{KernelSettings, SimulationSettings};

/// TypeScript shapes of the option objects (the parameters below are typed with them).
#[wasm_bindgen(typescript_custom_section)]
const OPTION_TYPES: &str = r#"
/** Kernel-regression settings: the flags of `recovar generate_from_embedding`. */
export interface KernelOptions {
  /** Candidate neighbourhood sizes (50). */
  nBins?: number;
  /** Images in the smallest neighbourhood, per halfset (100). */
  nMinImages?: number;
  /** Sharpening B-factor of `filtered`, Å² (0). */
  bfactor?: number;
  /** Local windows of radius N / maskradFraction voxels (20). */
  maskradFraction?: number;
}

/** Simulation settings: the flags of `recovar make_test_dataset`. */
export interface SimulationOptions {
  /** Image side D, even, 16..=128 (64). */
  imageSize?: number;
  /** Number of images (1000). */
  nImages?: number;
  /** SNR = 0.1 / noiseLevel (0.1). */
  noiseLevel?: number;
  /** Seed of every random choice (0). */
  seed?: number;
  /** Hold the hinge at rest, so only the 3 discrete states differ (false). */
  discreteOnly?: boolean;
}
"#;

/// Calls `set(key, value)` for every own key of `obj` (absent or `undefined`: none);
/// `known` lists the keys for the error message.
fn each_key(
    what: &str,
    obj: &JsValue,
    known: &[&str],
    mut set: impl FnMut(&str, &JsValue) -> Result<bool, JsError>,
) -> Result<(), JsError> {
    if obj.is_undefined() || obj.is_null() {
        return Ok(());
    }
    let Some(o) = obj.dyn_ref::<Object>().filter(|_| obj.is_object()) else {
        return Err(JsError::new(&format!(
            "{what} must be an object such as {{ {}: ... }}",
            known[0]
        )));
    };
    for key in Object::keys(o).iter() {
        let k = key.as_string().unwrap_or_default();
        let v = Reflect::get(obj, &key).unwrap_or(JsValue::UNDEFINED);
        // `{ nBins: undefined }` means the default, as an absent key.
        if v.is_undefined() && known.contains(&k.as_str()) {
            continue;
        }
        if !set(&k, &v)? {
            return Err(JsError::new(&format!(
                "{what}: unknown option \"{k}\" (known: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn number(what: &str, key: &str, v: &JsValue) -> Result<f64, JsError> {
    v.as_f64()
        .ok_or_else(|| JsError::new(&format!("{what}.{key} must be a number")))
}

/// Kernel-regression settings from a JS object (defaults for absent keys).
pub fn kernel_settings(obj: &JsValue) -> Result<KernelSettings, JsError> {
    let mut s = KernelSettings::default();
    const KNOWN: [&str; 4] = ["nBins", "nMinImages", "bfactor", "maskradFraction"];
    each_key("options", obj, &KNOWN, |k, v| {
        let field = match k {
            "nBins" => &mut s.n_bins,
            "nMinImages" => &mut s.n_min_images,
            "bfactor" => &mut s.bfactor,
            "maskradFraction" => &mut s.maskrad_fraction,
            _ => return Ok(false),
        };
        *field = number("options", k, v)?;
        Ok(true)
    })?;
    Ok(s)
}

/// Simulation settings from a JS object (defaults for absent keys).
pub fn simulation_settings(obj: &JsValue) -> Result<SimulationSettings, JsError> {
    let mut s = SimulationSettings::default();
    const KNOWN: [&str; 5] = ["imageSize", "nImages", "noiseLevel", "seed", "discreteOnly"];
    each_key("options", obj, &KNOWN, |k, v| {
        let field = match k {
            "imageSize" => &mut s.image_size,
            "nImages" => &mut s.n_images,
            "noiseLevel" => &mut s.noise_level,
            "seed" => &mut s.seed,
            "discreteOnly" => {
                s.discrete_only = v
                    .as_bool()
                    .ok_or_else(|| JsError::new("options.discreteOnly must be true or false"))?;
                return Ok(true);
            }
            _ => return Ok(false),
        };
        *field = number("options", k, v)?;
        Ok(true)
    })?;
    Ok(s)
}
