//! `recovar pipeline --only-mean` end to end on a small simulated set: every output of the
//! layout, readable and consistent; clear errors for bad masks and options.

mod common;

use std::path::Path;

use common::*;
use recovar_core::io::{mrc, pickle};

/// A ball of radius `r` voxels in an `n³` volume, written as an MRC.
fn write_ball(path: &Path, n: usize, r: f64, voxel: f32) {
    let c = (n / 2) as f64;
    let mut v = vec![0.0f32; n * n * n];
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let d = ((x as f64 - c).powi(2) + (y as f64 - c).powi(2) + (z as f64 - c).powi(2))
                    .sqrt();
                if d < r {
                    v[(z * n + y) * n + x] = 1.0;
                }
            }
        }
    }
    mrc::write_volume(
        path,
        &mrc::Volume {
            data: v,
            shape: [n, n, n],
            voxel_size: voxel,
            origin: [0.0; 3],
        },
    )
    .unwrap();
}

/// `pipeline <stack> --poses --ctf -o out` plus `extra`.
fn pipeline_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "pipeline".into(),
        data.join("particles.32.mrcs").display().to_string(),
        "--poses".into(),
        data.join("poses.pkl").display().to_string(),
        "--ctf".into(),
        data.join("ctf.pkl").display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn make_dataset(dir: &Path, n: usize) -> std::path::PathBuf {
    recovar_ok(
        dir,
        &[
            "make_test_dataset",
            ".",
            "--image-size",
            "32",
            "--n-images",
            &n.to_string(),
            "--seed",
            "3",
        ],
    );
    dir.join("test_dataset")
}

#[test]
fn only_mean_writes_the_whole_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(tmp.path(), 600);
    let out = tmp.path().join("out");
    let focus = tmp.path().join("focus.mrc");
    write_ball(&focus, 32, 8.0, 17.0);
    let args = pipeline_args(
        &data,
        &out,
        &["--only-mean", "--focus-mask", focus.to_str().unwrap()],
    );
    let stdout = recovar_ok(tmp.path(), &strs(&args));
    assert!(stdout.contains("half-map FSC resolution"), "{stdout}");
    for f in [
        "command.txt",
        "run.log",
        "timings.json",
        "model/params.pkl",
        "model/halfsets.pkl",
        "model/particles_halfsets.pkl",
        "output/volumes/mean.mrc",
        "output/volumes/mean_half1_unfil.mrc",
        "output/volumes/mean_half2_unfil.mrc",
        "output/volumes/mean_filt.mrc",
        "output/volumes/mask.mrc",
        "output/volumes/dilated_mask.mrc",
        "output/volumes/focus_mask.mrc",
        "output/plots/mean_fsc.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let vol = mrc::read_volume(out.join("output/volumes/mean.mrc")).unwrap();
    assert_eq!(vol.shape, [32, 32, 32]);
    assert!((vol.voxel_size - 17.0).abs() < 1e-4);
    let params = pickle::load(out.join("model/params.pkl")).unwrap();
    for k in [
        "voxel_size",
        "volume_shape",
        "noise_var_used",
        "noise_var_from_hf",
        "radial_noise_var_outside_mask",
        "radial_ub_noise_var",
        "mean_fsc",
    ] {
        assert!(params.get(k).is_some(), "params.pkl lacks {k}");
    }
    let noise = params
        .get("noise_var_used")
        .unwrap()
        .as_array()
        .unwrap()
        .to_f64_vec();
    assert_eq!(noise.len(), 15);
    assert!(noise.iter().all(|v| v.is_finite() && *v > 0.0), "{noise:?}");
    let timings = std::fs::read_to_string(out.join("timings.json")).unwrap();
    for stage in [
        "\"mean\"",
        "\"noise\"",
        "\"masks\"",
        "\"local_resolution\"",
        "peak_rss_mib",
        "images_per_second",
    ] {
        assert!(timings.contains(stage), "{timings}");
    }
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(log.contains("stage mean done"), "{log}");
    assert!(std::fs::read_to_string(out.join("command.txt"))
        .unwrap()
        .contains("--only-mean"));
    let halves = pickle::load(out.join("model/halfsets.pkl")).unwrap();
    let pickle::PyValue::List(h) = halves else {
        panic!("list")
    };
    assert_eq!(
        h[0].as_array().unwrap().len() + h[1].as_array().unwrap().len(),
        600
    );
}

#[test]
fn the_noise_model_is_close_to_the_simulated_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(tmp.path(), 1000);
    let out = tmp.path().join("out");
    recovar_ok(
        tmp.path(),
        &[
            "pipeline",
            data.join("particles.star").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--only-mean",
        ],
    );
    let params = pickle::load(out.join("model/params.pkl")).unwrap();
    let used = params
        .get("noise_var_used")
        .unwrap()
        .as_array()
        .unwrap()
        .to_f64_vec();
    let info = pickle::load(data.join("simulation_info.pkl")).unwrap();
    let truth = info
        .get("noise_variance")
        .unwrap()
        .as_array()
        .unwrap()
        .to_f64_vec();
    // Above the lowest shells (where the upper bound from the residual also holds signal
    // variance and the outside estimate sees the mask's own ringing), within 15 %.
    for r in 3..used.len() {
        let rel = (used[r] - truth[r]).abs() / truth[r];
        assert!(
            rel < 0.15,
            "shell {r}: estimated {} vs simulated {} ({:.1} %)",
            used[r],
            truth[r],
            100.0 * rel
        );
    }
}

#[test]
fn bad_masks_and_options_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(tmp.path(), 100);
    let run = |extra: &[&str]| -> String {
        let args = pipeline_args(&data, &tmp.path().join("bad"), extra);
        recovar_err(tmp.path(), &strs(&args))
    };
    // A zdim of zero: said plainly.
    let e = run(&["--zdim", "0,4"]);
    assert!(e.contains("zdim"), "{e}");
    // A mask file that does not exist.
    let e = run(&["--only-mean", "--mask", "nope.mrc"]);
    assert!(e.contains("nope.mrc"), "{e}");
    // An all-zero mask.
    let zero = tmp.path().join("zero.mrc");
    mrc::write_volume(
        &zero,
        &mrc::Volume {
            data: vec![0.0; 32 * 32 * 32],
            shape: [32, 32, 32],
            voxel_size: 17.0,
            origin: [0.0; 3],
        },
    )
    .unwrap();
    let e = run(&["--only-mean", "--mask", zero.to_str().unwrap()]);
    assert!(e.contains("zero.mrc") && e.contains("0.5"), "{e}");
    // A mask of another size is resampled, not refused.
    let big = tmp.path().join("big.mrc");
    write_ball(&big, 64, 20.0, 8.5);
    let out = tmp.path().join("ok");
    let args = pipeline_args(
        &data,
        &out,
        &[
            "--only-mean",
            "--mask",
            big.to_str().unwrap(),
            "--noise-model",
            "white",
        ],
    );
    recovar_ok(tmp.path(), &strs(&args));
    let mask = mrc::read_volume(out.join("output/volumes/mask.mrc")).unwrap();
    assert_eq!(mask.shape, [32, 32, 32]);
    assert!(mask.data[(16 * 32 + 16) * 32 + 16] > 0.99);
    // Bad option values.
    let e = run(&["--only-mean", "--noise-model", "pink"]);
    assert!(e.contains("pink"), "{e}");
    let e = run(&["--only-mean", "--mean-fn", "median"]);
    assert!(e.contains("median"), "{e}");
}
