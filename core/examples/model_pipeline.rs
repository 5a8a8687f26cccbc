//! The pipeline through the Rust API, stage by stage, then a volume at a latent point.
//!
//! ```sh
//! cargo run --release --bin recovar -- make_test_dataset sim --image-size 32 --n-images 500 --discrete-only
//! cargo run --release -p recovar-core --example model_pipeline -- sim/test_dataset/particles.star volume.mrc
//! ```

use std::path::PathBuf;

use recovar_core::backend::CpuBackend;
use recovar_core::dataset::DatasetOptions;
use recovar_core::generate::KernelOptions;
use recovar_core::heterogeneity::CovarianceOptions;
use recovar_core::io::mrc;
use recovar_core::pipeline::{Model, ModelOptions, Stage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [particles, out] = &args[..] else {
        eprintln!("usage: model_pipeline particles.star out.mrc");
        std::process::exit(2);
    };
    let mut model = Model::open(
        &DatasetOptions {
            particles: PathBuf::from(particles),
            ..Default::default()
        },
        ModelOptions {
            zdims: vec![1, 2],
            // Small test data: fewer covariance columns.
            covariance: CovarianceOptions::low_memory(),
            ..Default::default()
        },
    )?;
    let cpu = CpuBackend::new();
    // Any closure (stage, done, total) -> bool is a progress callback; false cancels.
    let progress = |stage: &str, done: u64, total: u64| {
        if done == total {
            eprintln!("  {stage}: {done}/{total}");
        }
        true
    };
    for stage in Stage::ALL {
        println!("stage {}", stage.name());
        model.run_stage(stage, &cpu, &progress)?;
    }
    let ev = model.eigenvalues()?;
    println!(
        "{} images; top eigenvalues {:.3e} {:.3e}",
        model.n_images(),
        ev[0],
        ev[1]
    );
    // The latent point: the mean of the 2-D embedding over the first half of the images.
    let e = model.embedding(2, true)?;
    let half = model.n_images() / 2;
    let mut point = [0.0f32; 2];
    for row in e.zs.chunks_exact(2).take(half) {
        point[0] += row[0] / half as f32;
        point[1] += row[1] / half as f32;
    }
    let vol = model.generate(2, true, &point, &KernelOptions::default(), &cpu, &progress)?;
    let n = vol.n;
    mrc::write_volume(
        out,
        &mrc::Volume {
            data: vol.filtered.clone(),
            shape: [n, n, n],
            voxel_size: vol.voxel_size as f32,
            origin: [0.0; 3],
        },
    )?;
    println!(
        "volume at ({:.3}, {:.3}) written to {out}",
        point[0], point[1]
    );
    Ok(())
}
