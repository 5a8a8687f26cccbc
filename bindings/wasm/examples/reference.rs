//! Native reference results of the binding's operations on fixed inputs, as JSON on
//! stdout: `cargo run -p recovar-wasm --example reference > ref.json`. The Node test
//! `test/native.test.mjs` makes the same calls on the `.wasm` module and compares
//! (test.sh runs both), so the numbers a browser gets are checked against the numbers the
//! native library computes. The inputs here and there must stay the same.
//!
//! Float arrays are written as their IEEE-754 bit patterns (u32 for f32, decimal strings
//! of u64 for f64), so the comparison can be bit for bit.

use recovar_wasm::ops::{self, KernelSettings, SimulationSettings};

enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

fn json(v: &Values) -> String {
    let items: Vec<String> = match v {
        Values::F32(x) => x.iter().map(|v| v.to_bits().to_string()).collect(),
        Values::F64(x) => x.iter().map(|v| format!("\"{}\"", v.to_bits())).collect(),
    };
    format!("[{}]", items.join(","))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut out: Vec<(&str, Values)> = Vec::new();
    // A small discrete 3-state set (same options as native.test.mjs).
    let sim = ops::simulate(&SimulationSettings {
        image_size: 16.0,
        n_images: 240.0,
        noise_level: 0.05,
        seed: 5.0,
        discrete_only: true,
    })?;
    let rotations = sim.rotations();
    let ctf = sim.ctf();
    out.push(("simulate.images", Values::F32(sim.images.clone())));
    out.push(("simulate.rotations", Values::F32(rotations.clone())));
    out.push(("simulate.ctf", Values::F64(ctf.clone())));
    out.push((
        "ctfImage",
        Values::F32(ops::ctf_image(&ctf[..9], Some(24.0))?),
    ));
    let v1 = sim.volume(1.0, 0.0)?;
    let v2 = sim.volume(2.0, 0.0)?;
    out.push(("volume2", Values::F32(v2.clone())));
    let cubic = ops::interp_of(Some("cubic"))?;
    let trilinear = ops::interp_of(Some("trilinear"))?;
    out.push((
        "project.cubic1",
        Values::F32(ops::project(&v2, &rotations[..27], 1, cubic)?),
    ));
    out.push((
        "project.trilinear2",
        Values::F32(ops::project(&v2, &rotations[..27], 2, trilinear)?),
    ));
    out.push(("fsc", Values::F64(ops::fsc(&v1, &v2)?)));
    // Kernel regression with the true states as a 1-D embedding, jittered by (k − 5)/50.
    let states: Vec<u8> = sim.sim.params().iter().map(|p| p.state).collect();
    let z: Vec<f32> = states
        .iter()
        .enumerate()
        .map(|(i, &s)| (s as f64 + (((i * 37) % 11) as f64 - 5.0) / 50.0) as f32)
        .collect();
    let mut ds = ops::Particles::new(sim.images.clone(), &rotations, &sim.translations(), &ctf, 0)?;
    out.push(("noiseProfile", Values::F64(ds.noise_profile()?.to_vec())));
    let settings = KernelSettings {
        n_bins: 8.0,
        n_min_images: 20.0,
        ..Default::default()
    };
    let v = ds.generate(&z, &[2.0], None, &settings)?;
    out.push(("kernel.unfiltered", Values::F32(v.unfil)));
    out.push(("kernel.filtered", Values::F32(v.filtered)));
    let body: Vec<String> = out
        .iter()
        .map(|(k, v)| format!("\"{k}\":{}", json(v)))
        .collect();
    println!("{{{}}}", body.join(",\n"));
    Ok(())
}
