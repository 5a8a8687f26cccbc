//! `estimate_conformational_density`, `compute_trajectory` and `analyze --density` end to
//! end on a small simulated pipeline run: the seed's layout, Python-readable pickles, paths
//! that join the given endpoints, and clear errors for bad requests.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use recovar_core::analysis::density::read_density;
use recovar_core::generate::output::read_latent_points;
use recovar_core::io::{mrc, pickle};
use recovar_core::pipeline::selftest::json_numbers;

fn simulated_run(tmp: &Path) -> PathBuf {
    recovar_ok(
        tmp,
        &[
            "make_test_dataset",
            ".",
            "--image-size",
            "32",
            "--n-images",
            "600",
            "--seed",
            "7",
            "--discrete-only",
        ],
    );
    pipeline_32(tmp, &tmp.join("test_dataset"), "2,4")
}

#[test]
fn density_trajectories_and_analyze_with_density() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pipe = simulated_run(t);
    let p = |x: &Path| x.to_str().unwrap().to_string();

    // Density of the 2-D unregularized embedding (zdim 2 is the smallest ≥ pca_dim 2).
    let stdout = recovar_ok(
        t,
        &[
            "estimate_conformational_density",
            &p(&pipe),
            "--pca_dim",
            "2",
            "--num_disc_points",
            "40",
            "--alphas",
            "1e-1",
            "1e-3",
            "1e-5",
        ],
    );
    assert!(stdout.contains("zdim 2"), "{stdout}");
    let dens = pipe.join("density");
    for f in [
        "deconv_density_knee.pkl",
        "all_densities/deconv_density_0.pkl",
        "all_densities/deconv_density_2.pkl",
        "all_densities.png",
        "Lcurve.png",
        "run.log",
        "command.txt",
    ] {
        assert!(dens.join(f).exists(), "{f} missing");
    }
    assert!(!dens.join("all_densities/deconv_density_3.pkl").exists());
    let knee = dens.join("deconv_density_knee.pkl");
    let g = read_density(&knee).unwrap();
    assert_eq!((g.dim, g.n_grid, g.values.len()), (2, 40, 1600));
    assert!(g.values.iter().all(|v| v.is_finite() && *v >= 0.0));
    let d = pickle::load(&knee).unwrap();
    let alpha = d.get("alpha").and_then(|a| a.as_f64()).unwrap();
    assert!([1e-1, 1e-3, 1e-5]
        .iter()
        .any(|a| (a - alpha).abs() < 1e-12 * a.max(1.0)));
    if let Some(py) = python_with(&["numpy"]) {
        let script = format!(
            "import pickle, numpy as np\nd = pickle.load(open({:?}, 'rb'))\nassert d['density'].shape == (40, 40), d['density'].shape\nassert np.asarray(d['latent_space_bounds']).shape == (2, 2)\nassert d['density'].min() >= 0\nprint('ok')",
            p(&knee)
        );
        let o = std::process::Command::new(py)
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    } else {
        println!("skipped: python with numpy not available to read the density pickle");
    }

    // Endpoints: two latent points well inside the density's grid.
    let mid = |k: usize, f: f32| g.bounds[k][0] + f * (g.bounds[k][1] - g.bounds[k][0]);
    let ends = t.join("ends.txt");
    std::fs::write(
        &ends,
        format!(
            "9 9\n{} {}\n{} {}\n",
            mid(0, 0.2),
            mid(1, 0.3),
            mid(0, 0.8),
            mid(1, 0.7)
        ),
    )
    .unwrap();
    let traj = t.join("traj");
    let stdout = recovar_ok(
        t,
        &[
            "compute_trajectory",
            &p(&pipe),
            "-o",
            &p(&traj),
            "--zdim",
            "2",
            "--endpts",
            &p(&ends),
            "--ind",
            "1,2",
            "--density",
            &p(&knee),
            "--n-vols-along-path",
            "2",
            "--n-bins",
            "6",
        ],
    );
    assert!(stdout.contains("2 volumes"), "{stdout}");
    let text = std::fs::read_to_string(traj.join("path.json")).unwrap();
    let start = json_numbers(&text, "start").unwrap();
    let end = json_numbers(&text, "end").unwrap();
    assert!(
        (start[0] - mid(0, 0.2) as f64).abs() < 1e-4
            && (start[1] - mid(1, 0.3) as f64).abs() < 1e-4
    );
    assert!(
        (end[0] - mid(0, 0.8) as f64).abs() < 1e-4 && (end[1] - mid(1, 0.7) as f64).abs() < 1e-4
    );
    let along = json_numbers(&text, "density").unwrap();
    assert!(along.len() >= 2 && along.iter().all(|v| v.is_finite()));
    assert_eq!(json_numbers(&text, "density_subsampled").unwrap().len(), 2);
    assert!(traj.join("density/density_01.png").exists());
    let pts = read_latent_points(&traj.join("latent_coords.txt"), false).unwrap();
    assert_eq!(pts.len(), 2);
    assert!((pts[0][0] as f64 - start[0]).abs() < 1e-4 && (pts[1][1] as f64 - end[1]).abs() < 1e-4);
    let v = mrc::read_volume(traj.join("all_volumes/vol0001.mrc")).unwrap();
    assert!(v.data.iter().all(|x| x.is_finite()));

    // Without a density, through the 4-D embedding (--z_st/--z_end, endpoints padded with
    // zeros); only the path.
    let (zs, ze) = (t.join("zs.txt"), t.join("ze.txt"));
    std::fs::write(&zs, format!("{} {}\n", mid(0, 0.3), mid(1, 0.3))).unwrap();
    std::fs::write(&ze, format!("{} {} 0 0\n", mid(0, 0.7), mid(1, 0.6))).unwrap();
    let traj4 = t.join("traj4");
    recovar_ok(
        t,
        &[
            "compute_trajectory",
            &p(&pipe),
            "-o",
            &p(&traj4),
            "--zdim",
            "4",
            "--z_st",
            &p(&zs),
            "--z_end",
            &p(&ze),
            "--n-vols-along-path",
            "0",
        ],
    );
    let text = std::fs::read_to_string(traj4.join("path.json")).unwrap();
    let start = json_numbers(&text, "start").unwrap();
    assert_eq!(start.len(), 4);
    assert_eq!(start[2], 0.0);
    assert!(!traj4.join("vol0000").exists());

    // analyze with the density: its figures and a trajectory through it.
    recovar_ok(
        t,
        &[
            "analyze",
            &p(&pipe),
            "--zdim",
            "2",
            "--no-z-regularization",
            "--n-clusters",
            "3",
            "--n-trajectories",
            "1",
            "--skip-centers",
            "--skip-umap",
            "--n-vols-along-path",
            "2",
            "--n-bins",
            "6",
            "--density",
            &p(&knee),
        ],
    );
    let an = pipe.join("analysis_2_noreg");
    for f in [
        "traj0/path.json",
        "traj0/all_volumes/vol0001.mrc",
        "traj0/density/density_01.png",
        "density_plots/density_01.png",
        "trajectory_endpoints.pkl",
    ] {
        assert!(an.join(f).exists(), "{f} missing");
    }

    // Bad requests get clear messages.
    let err = recovar_err(
        t,
        &[
            "compute_trajectory",
            &p(&pipe),
            "-o",
            &p(&traj),
            "--zdim",
            "2",
        ],
    );
    assert!(err.contains("--endpts") && err.contains("--z_st"), "{err}");
    let err = recovar_err(
        t,
        &[
            "compute_trajectory",
            &p(&pipe),
            "-o",
            &p(&traj),
            "--zdim",
            "2",
            "--endpts",
            &p(&ends),
            "--ind",
            "0,7",
        ],
    );
    assert!(err.contains("--ind 7") && err.contains("3 points"), "{err}");
    let bad = t.join("bad.pkl");
    pickle::dump(&bad, &pickle::PyValue::Dict(vec![])).unwrap();
    let err = recovar_err(
        t,
        &[
            "compute_trajectory",
            &p(&pipe),
            "-o",
            &p(&traj),
            "--zdim",
            "2",
            "--endpts",
            &p(&ends),
            "--density",
            &p(&bad),
        ],
    );
    assert!(err.contains("bad.pkl") && err.contains("density"), "{err}");
    let err = recovar_err(
        t,
        &[
            "estimate_conformational_density",
            &p(&pipe),
            "--pca_dim",
            "5",
        ],
    );
    assert!(err.contains("at least 5"), "{err}");
    let err = recovar_err(
        t,
        &[
            "estimate_conformational_density",
            &p(&t.join("nowhere")),
            "--pca_dim",
            "2",
        ],
    );
    assert!(err.contains("nowhere"), "{err}");
}
