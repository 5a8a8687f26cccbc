//! Write the simulator's molecule in its three states as MRC volumes, to look at it.
//!   cargo run -p recovar-core --example render_phantom -- <outdir> [box]
use recovar_core::io::mrc;
use recovar_core::simulate::phantom::{render, Phantom};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("."));
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let p = Phantom::new();
    for (state, h) in [(0usize, -1.0), (1, 0.0), (2, 1.0)] {
        let mut v = vec![0.0f32; n * n * n];
        render(&p.placed_atoms(state, h), n, [0.0; 3], &mut v);
        let vol = mrc::Volume {
            data: v,
            shape: [n, n, n],
            voxel_size: 4.25 * 128.0 / n as f32,
            origin: [0.0; 3],
        };
        let path = out.join(format!("phantom_state{state}.mrc"));
        if let Err(e) = mrc::write_volume(&path, &vol) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}
