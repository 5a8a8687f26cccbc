//! Kernel-regression volumes: the library against the simulator's ground truth, and the
//! `compute_state` / `generate_from_embedding` commands end to end.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use recovar_core::backend::CpuBackend;
use recovar_core::dataset::{Dataset, DatasetOptions, Uninvert};
use recovar_core::generate::output::write_generated;
use recovar_core::generate::{generate_volume, KernelOptions, Latent};
use recovar_core::io::{mrc, pickle};
use recovar_core::pipeline::load::estimate_noise_profile;
use recovar_core::progress::NoProgress;

fn make_dataset(dir: &Path, n: usize, extra: &[&str]) -> PathBuf {
    let n = n.to_string();
    let mut args = vec![
        "make_test_dataset",
        ".",
        "--image-size",
        "32",
        "--n-images",
        &n,
        "--seed",
        "5",
    ];
    args.extend_from_slice(extra);
    recovar_ok(dir, &args);
    dir.join("test_dataset")
}

fn states(data: &Path) -> Vec<usize> {
    std::fs::read_to_string(data.join("ground_truth.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect()
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let ab: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let aa: f64 = a.iter().map(|x| x * x).sum();
    let bb: f64 = b.iter().map(|x| x * x).sum();
    ab / (aa * bb).sqrt()
}

fn diff(a: &[f32], b: &[f32]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| (x - y) as f64).collect()
}

#[test]
fn volumes_at_the_true_states_show_their_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(tmp.path(), 1500, &["--discrete-only"]);
    let mut ds = Dataset::open(&DatasetOptions {
        particles: data.join("particles.32.mrcs"),
        poses: Some(data.join("poses.pkl")),
        ctf: Some(data.join("ctf.pkl")),
        uninvert: Uninvert::False,
        ..Default::default()
    })
    .unwrap();
    let backend = CpuBackend::new();
    let noise =
        estimate_noise_profile(&mut ds, &backend, Default::default(), 256, &NoProgress).unwrap();
    // A perfect 1-D embedding: the state index, precision 1.
    let st = states(&data);
    let zs: Vec<f32> = ds
        .original_indices()
        .iter()
        .map(|&o| st[o] as f32)
        .collect();
    let prec = vec![1.0f32; zs.len()];
    let latent = Latent {
        zdim: 1,
        zs: &zs,
        precisions: &prec,
    };
    let opts = KernelOptions {
        n_bins: 12,
        n_min_images: 60,
        ..Default::default()
    };
    let gen = |z: f32| generate_volume(&ds, &backend, &noise, latent, &[z], &opts, &NoProgress);
    let v0 = gen(0.0).unwrap();
    let v2 = gen(2.0).unwrap();
    let gt = |k: usize| {
        mrc::read_volume(data.join(format!("gt_state{k}.mrc")))
            .unwrap()
            .data
    };
    let c = corr(&diff(&v0.unfil, &v2.unfil), &diff(&gt(0), &gt(2)));
    println!("corr(v0 − v2, gt0 − gt2) = {c:.3}");
    assert!(
        c > 0.5,
        "the generated volumes do not show the states' difference: {c}"
    );
    // The nearest bin holds the ~n_min_images nearest images of the first halfset (and as
    // many of the second): all in the target state, since distances are 0 there.
    assert!(v0.n_images_per_bin[0] >= 100, "{:?}", v0.n_images_per_bin);
    assert_eq!(v0.distances.len(), ds.len());
    assert_eq!(v0.choice.len(), v0.grid.points.len() * v0.grid.n_shells);
    assert!(v0.local_resolution.iter().any(|&r| r > 0.0));

    // The folder layout, readable by Python's pickle conventions (our reader).
    let out = tmp.path().join("vols");
    write_generated(&out, 0, &v0, &ds, opts.maskrad_fraction).unwrap();
    for f in [
        "unfil.mrc",
        "half1_unfil.mrc",
        "half2_unfil.mrc",
        "locres.mrc",
        "locres_filtered.mrc",
        "locres_filtered_nob.mrc",
        "volume_sampling.mrc",
        "params.pkl",
        "split_choice.pkl",
        "heterogeneity_distances.txt",
        "latent_coords.txt",
    ] {
        assert!(out.join("vol0000").join(f).exists(), "{f} missing");
    }
    assert!(out.join("all_volumes/vol0000.mrc").exists());
    assert!(out.join("all_volumes/locres0000.mrc").exists());
    let params = pickle::load(out.join("vol0000/params.pkl")).unwrap();
    for k in [
        "heterogeneity_bins",
        "n_images_per_bin",
        "fscs",
        "locres_sampling",
        "locres_maskrad",
        "voxel_size",
        "ml_choice",
        "sampling_points",
    ] {
        assert!(params.get(k).is_some(), "params.pkl lacks {k}");
    }
    let lines = std::fs::read_to_string(out.join("vol0000/heterogeneity_distances.txt")).unwrap();
    assert_eq!(lines.lines().count(), ds.total_in_file());
}

#[test]
fn compute_state_analyze_and_subsets_on_a_pipeline_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(tmp.path(), 600, &[]);
    let pipe = pipeline_32(tmp.path(), &data, "2");
    let pts = tmp.path().join("pts.txt");
    std::fs::write(&pts, "0 0\n0.5 -0.5\n").unwrap();
    let out = tmp.path().join("states");
    let stdout = recovar_ok(
        tmp.path(),
        &[
            "compute_state",
            pipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--latent-points",
            pts.to_str().unwrap(),
            "--n-bins",
            "8",
            "--n-min-images",
            "40",
            "--Bfactor",
            "50",
        ],
    );
    assert!(stdout.contains("2 volumes"), "{stdout}");
    for f in [
        "latent_coords.txt",
        "all_volumes/vol0000.mrc",
        "all_volumes/vol0001.mrc",
        "all_volumes/locres0001.mrc",
        "vol0001/locres_filtered_nob.mrc",
        "vol0001/split_choice.pkl",
        "run.log",
        "command.txt",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // With a B-factor the sharpened and unsharpened maps differ.
    let a = mrc::read_volume(out.join("vol0000/locres_filtered.mrc")).unwrap();
    let b = mrc::read_volume(out.join("vol0000/locres_filtered_nob.mrc")).unwrap();
    assert_ne!(a.data, b.data);

    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, "0 0 0\n").unwrap();
    let err = recovar_err(
        tmp.path(),
        &[
            "compute_state",
            pipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--latent-points",
            bad.to_str().unwrap(),
        ],
    );
    assert!(err.contains("no embedding of dimension 3"), "{err}");
    std::fs::write(&bad, "0 x\n").unwrap();
    let err = recovar_err(
        tmp.path(),
        &[
            "compute_state",
            pipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--latent-points",
            bad.to_str().unwrap(),
        ],
    );
    assert!(err.contains("bad.txt") && err.contains("line 1"), "{err}");
    let err = recovar_err(
        tmp.path(),
        &[
            "compute_state",
            tmp.path().join("nothing").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--latent-points",
            pts.to_str().unwrap(),
        ],
    );
    assert!(err.contains("not a pipeline output directory"), "{err}");

    // analyze: k-means, center volumes, one trajectory, figures, in analysis_2/.
    let stdout = recovar_ok(
        tmp.path(),
        &[
            "analyze",
            pipe.to_str().unwrap(),
            "--zdim",
            "2",
            "--n-clusters",
            "4",
            "--n-trajectories",
            "1",
            "--n-vols-along-path",
            "2",
            "--n-bins",
            "6",
            "--n-min-images",
            "40",
        ],
    );
    assert!(stdout.contains("4 k-means clusters"), "{stdout}");
    let an = pipe.join("analysis_2");
    for f in [
        "kmeans_center_coords.txt",
        "kmeans_result.pkl",
        "centers.pkl",
        "kmeans_center_volumes/all_volumes/vol0003.mrc",
        "kmeans_center_volumes/vol0000/params.pkl",
        "traj0/path.json",
        "traj0/vol0001/unfil.mrc",
        "trajectory_endpoints.pkl",
        "PCA/PC_01.png",
        "umap/umap_embedding.pkl",
        "umap/sns.png",
        "density_plots/density_01.png",
        "contrast_histogram.png",
        "run.log",
    ] {
        assert!(an.join(f).exists(), "analyze: {f} missing");
    }
    let km = pickle::load(an.join("kmeans_result.pkl")).unwrap();
    let labels = km.get("labels").unwrap().as_array().unwrap().to_f64_vec();
    assert_eq!(labels.len(), 600);
    assert!(labels.iter().all(|l| (0.0..4.0).contains(l)));

    // Subsets from k-means labels and from a generated volume, straight into .star files
    // that our parser reads back.
    let star = data.join("particles.star");
    let sub = tmp.path().join("sub.star");
    let idx = tmp.path().join("idx.pkl");
    recovar_ok(
        tmp.path(),
        &[
            "extract_image_subset_from_kmeans",
            an.join("centers.pkl").to_str().unwrap(),
            idx.to_str().unwrap(),
            "0,2",
            "--star",
            star.to_str().unwrap(),
            "--star-out",
            sub.to_str().unwrap(),
        ],
    );
    let want = labels.iter().filter(|&&l| l == 0.0 || l == 2.0).count();
    let back = recovar_core::io::star::StarFile::read(&sub).unwrap();
    let rows = back.particles().unwrap().n_rows();
    assert_eq!(rows, want);
    recovar_ok(
        tmp.path(),
        &[
            "extract_image_subset",
            "--input-dir",
            an.join("kmeans_center_volumes/vol0001").to_str().unwrap(),
            "-o",
            idx.to_str().unwrap(),
            "--coordinate",
            "16,16,18",
        ],
    );
    let ind = pickle::load(&idx).unwrap();
    let ind = ind.as_array().unwrap().to_i64_vec().unwrap();
    assert!(!ind.is_empty() && ind.iter().all(|&i| (0..600).contains(&i)));
}

#[test]
fn generate_from_a_cryodrgn_z_pkl() {
    // zvals_het-2_1k.pkl holds 1319 2-D latent values (cryoDRGN's test fixture); pair it
    // with a simulated stack of as many images.
    let z = fixtures().join("zvals_het-2_1k.pkl");
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(tmp.path(), 1319, &[]);
    let target = tmp.path().join("t.txt");
    std::fs::write(&target, "0.1 -0.2\n").unwrap();
    let out = tmp.path().join("gen");
    let stack = data.join("particles.32.mrcs");
    let poses = data.join("poses.pkl");
    let ctf = data.join("ctf.pkl");
    let args = |emb: &Path| -> Vec<String> {
        [
            "generate_from_embedding",
            stack.to_str().unwrap(),
            "--poses",
            poses.to_str().unwrap(),
            "--ctf",
            ctf.to_str().unwrap(),
            "--embedding",
            emb.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--n-bins",
            "6",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args(&z);
    let stdout = recovar_ok(
        tmp.path(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(stdout.contains("1 volumes"), "{stdout}");
    assert!(out.join("vol0000/unfil.mrc").exists());
    let v = mrc::read_volume(out.join("all_volumes/vol0000.mrc")).unwrap();
    assert_eq!(v.shape, [32, 32, 32]);
    assert!(v.data.iter().all(|x| x.is_finite()));

    // An embedding of another size is refused with both counts in the message.
    let z8 = fixtures().join("zvals_het-8_4k.pkl");
    let b = args(&z8);
    let err = recovar_err(
        tmp.path(),
        &b.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        err.contains("4549 embedding rows") && err.contains("1319"),
        "{err}"
    );
}
