//! The dataset layer on every particle fixture: path resolution, `--ind`, `--n-images`,
//! halfsets, poses and CTF taken from .star/.cs files, and clear errors for every
//! inconsistency.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use recovar_core::dataset::{Dataset, DatasetOptions, HalfsetOrigin, Uninvert};
use recovar_core::io::{mrc, pickle};
use recovar_core::Error;

fn opts(particles: &str) -> DatasetOptions {
    DatasetOptions {
        particles: fixtures().join(particles),
        ..Default::default()
    }
}

fn fx(name: &str) -> Option<PathBuf> {
    Some(fixtures().join(name))
}

fn open(o: DatasetOptions) -> Dataset {
    Dataset::open(&o).unwrap_or_else(|e| panic!("{}: {e}", o.particles.display()))
}

fn open_err(o: DatasetOptions) -> String {
    match Dataset::open(&o) {
        Ok(_) => panic!("{} should fail", o.particles.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mrcs_with_pickles() {
    let ds = open(DatasetOptions {
        poses: fx("hand_rot_trans.pkl"),
        ..opts("hand.mrcs")
    });
    assert_eq!((ds.len(), ds.box_size()), (100, 64));
    assert_eq!(ds.voxel_size(), 1.0, "from the header; no CTF");
    // Translations are fractions of the box in the pickle, pixels in the dataset.
    let pkl = pickle::load(fixtures().join("hand_rot_trans.pkl")).unwrap();
    let t = match &pkl {
        pickle::PyValue::Tuple(v) => v[1].as_array().unwrap().to_f64_vec(),
        _ => panic!(),
    };
    assert!((ds.translations()[7][1] as f64 - t[15] * 64.0).abs() < 1e-4);

    let ds = open(DatasetOptions {
        poses: fx("toy_angles.pkl"),
        ctf: fx("test_ctf.pkl"),
        ..opts("toy_projections.mrcs")
    });
    assert_eq!((ds.len(), ds.box_size()), (1000, 30));
    assert_eq!(ds.voxel_size(), 1.0, "CTF table: 30 px at 1 Å");
    assert!(
        ds.translations().iter().all(|t| *t == [0.0, 0.0]),
        "rotations-only pickle"
    );
    let c = ds.ctf().unwrap()[0];
    assert_eq!(
        (c.voltage_kv, c.phase_shift_deg, c.contrast),
        (300.0, 90.0, 1.0)
    );
}

#[test]
fn images_read_through_the_dataset_match_the_stack() {
    let ds = open(DatasetOptions {
        ind: fx("ind5.pkl"),
        ..opts("hand.mrcs")
    });
    assert_eq!(ds.original_indices(), &[0, 1, 2, 3, 5]);
    let stack = mrc::MrcStack::open(fixtures().join("hand.mrcs")).unwrap();
    let mut want = vec![0.0; 64 * 64];
    stack.read_image(5, &mut want).unwrap();
    let mut got = vec![0.0; 64 * 64];
    ds.read_images(&[4], &mut got).unwrap();
    assert_eq!(got, want);

    // --uninvert-data true flips the sign.
    let ds = open(DatasetOptions {
        uninvert: Uninvert::True,
        ..opts("hand.mrcs")
    });
    ds.read_images(&[5], &mut got).unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| *a == -*b));
}

#[test]
fn star_files_carry_poses_ctf_and_find_their_stacks() {
    for name in ["relion31.star", "relion31.v2.star"] {
        let ds = open(DatasetOptions {
            require_poses: true,
            require_ctf: true,
            ..opts(name)
        });
        assert_eq!((ds.len(), ds.box_size()), (5, 256));
        assert!((ds.voxel_size() - 2.806).abs() < 1e-5);
        assert!(ds.rotations().is_some());
    }
    // Poses from the .star equal parse_pose_star's output.
    let ds = open(opts("relion31.star"));
    let oracle =
        recovar_core::dataset::PoseTable::read_pickle(oracles().join("relion31.poses.pkl"))
            .unwrap();
    for (a, b) in ds.rotations().unwrap().iter().zip(&oracle.rotations) {
        for k in 0..9 {
            assert!((a[k] as f64 - b[k]).abs() < 1e-6);
        }
    }
    let t = oracle.translations.unwrap();
    assert!((ds.translations()[2][0] as f64 - t[2][0] * 256.0).abs() < 1e-3);

    // relion5.star and toy_projections_dir.star name stacks without a folder: --datadir.
    let err = open_err(opts("relion5.star"));
    assert!(
        err.contains("toy_images_a.mrcs") && err.contains("--datadir"),
        "{err}"
    );
    let ds = open(DatasetOptions {
        datadir: fx("toy_datadir"),
        ..opts("relion5.star")
    });
    assert_eq!((ds.len(), ds.box_size()), (17, 30));
    assert_eq!(ds.source().stack_files().len(), 2);
    let ds = open(DatasetOptions {
        datadir: fx("toy_datadir"),
        ctf: fx("test_ctf.pkl"),
        ..opts("toy_projections_dir.star")
    });
    assert_eq!(ds.len(), 1000);

    // Non-sequential image references: 93@, 32@, 4@, ...
    let ds = open(opts("toy_projections_13.star"));
    assert_eq!(ds.len(), 13);
    let stack = mrc::MrcStack::open(fixtures().join("toy_projections.mrcs")).unwrap();
    let mut want = vec![0.0; 900];
    stack.read_image(92, &mut want).unwrap();
    let mut got = vec![0.0; 900];
    ds.read_images(&[0], &mut got).unwrap();
    assert_eq!(got, want);
    // Optics table wins over the particle columns: Cs 0.01, not 0.001.
    assert!((ds.ctf().unwrap()[0].cs_mm - 0.01).abs() < 1e-7);
}

#[test]
fn star_without_pixel_size_asks_for_a_ctf_pickle() {
    for name in ["toy_projections.star", "toy.star", "empiar_10076_7.star"] {
        let err = open_err(opts(name));
        assert!(
            err.contains("_rlnImagePixelSize") && err.contains("parse_ctf_star"),
            "{name}: {err}"
        );
    }
    let ds = open(DatasetOptions {
        ctf: Some(oracles().join("empiar_10076_7.star.ctf.pkl")),
        ..opts("empiar_10076_7.star")
    });
    assert_eq!((ds.len(), ds.box_size()), (7, 320));
    assert!((ds.voxel_size() - 1.31).abs() < 1e-6);
    assert!(ds.rotations().is_none(), "this star has no angles");

    let ds = open(DatasetOptions {
        ctf: fx("sta_ctf.pkl"),
        poses: fx("sta_pose.pkl"),
        ..opts("sta_testing_bin8.star")
    });
    assert_eq!((ds.len(), ds.box_size()), (219, 64));
    assert!(
        (ds.voxel_size() - 512.0 * 1.82 / 64.0).abs() < 1e-4,
        "CTF of bin1 rescaled to the bin8 stack"
    );
}

#[test]
fn missing_stacks_list_every_path_tried() {
    let err = open_err(opts("sta_testing.star"));
    assert!(
        err.contains("ay19102021_L3_position6_ribo_it09_bin1_1.82A.mrcs"),
        "{err}"
    );
    assert!(err.contains("tried:"), "{err}");
    let err = open_err(opts("FinalRefinement-OriginalParticles-PfCRT.star"));
    assert!(
        err.contains("Extract/job012/FinalRefinement-OriginalParticles-PfCRT.mrcs"),
        "{err}"
    );
    // cryoSPARC: the leading '>' of exported paths is stripped before resolving.
    let err = open_err(opts("cryosparc_J2_particles_exported.cs"));
    assert!(
        err.contains("J1/imported/000090334788266266069_18jam15b_0345_ali_DW.mrcs"),
        "{err}"
    );
    assert!(!err.contains(">J1"), "{err}");
    let err = open_err(DatasetOptions {
        datadir: Some(PathBuf::from("/no/such/dir")),
        ..opts("cryosparc_P12_J24_001_particles.cs")
    });
    assert!(
        err.contains("/no/such/dir/J19/extract/") && err.contains("/no/such/dir/20150917"),
        "{err}"
    );
}

#[test]
fn cs_file_with_its_stack() {
    let ds = open(DatasetOptions {
        require_ctf: true,
        ..opts("empiar_10076_7.cs")
    });
    assert_eq!((ds.len(), ds.box_size()), (7, 320));
    assert!((ds.voxel_size() - 1.31).abs() < 1e-5);
    assert!(ds.rotations().is_none(), "no alignments in this .cs");
    let err = open_err(DatasetOptions {
        require_poses: true,
        ..opts("empiar_10076_7.cs")
    });
    assert!(err.contains("--poses"), "{err}");
}

#[test]
fn txt_lists() {
    assert_eq!(open(opts("toy_projections.txt")).len(), 1000);
    let ds = open(opts("toy_projections_2.txt"));
    assert_eq!(ds.len(), 2000);
    let mut a = vec![0.0; 900];
    let mut b = vec![0.0; 900];
    ds.read_images(&[17], &mut a).unwrap();
    ds.read_images(&[1017], &mut b).unwrap();
    assert_eq!(a, b, "the same stack listed twice");
}

#[test]
fn indices_and_n_images() {
    let ds = open(DatasetOptions {
        ind: fx("ind100-rand.pkl"),
        n_images: Some(10),
        ..opts("toy_projections.mrcs")
    });
    assert_eq!(ds.len(), 10);
    let ind = pickle::load(fixtures().join("ind100-rand.pkl")).unwrap();
    let ind = ind.as_array().unwrap().to_i64_vec().unwrap();
    let want: Vec<usize> = ind[..10].iter().map(|&i| i as usize).collect();
    assert_eq!(ds.original_indices(), &want[..]);
    // Out-of-range indices name the index and the count.
    let err = open_err(DatasetOptions {
        ind: fx("ind100-rand.pkl"),
        ..opts("hand.mrcs")
    });
    assert!(
        err.contains("out of range") && err.contains("100 images"),
        "{err}"
    );
    // A pickle that is not an index array.
    let err = open_err(DatasetOptions {
        ind: fx("test_ctf.pkl"),
        ..opts("hand.mrcs")
    });
    assert!(err.contains("test_ctf.pkl") && err.contains("1-D"), "{err}");
}

#[test]
fn halfsets_reproduce_recovars_split() {
    // The Python RECOVAR's own halfsets for 1000 images (seeded numpy shuffle).
    let grid = data().join("recovar_small/grid32");
    let ds = open(DatasetOptions {
        particles: grid.join("particles.32.mrcs"),
        poses: Some(grid.join("poses.pkl")),
        ctf: Some(grid.join("ctf.pkl")),
        ..Default::default()
    });
    assert_eq!(ds.halfset_origin(), &HalfsetOrigin::Random { seed: 0 });
    let h = pickle::load(grid.join("reference_pipeline_output/model/halfsets.pkl")).unwrap();
    let pickle::PyValue::List(h) = h else {
        panic!("list")
    };
    for (k, half) in h.iter().enumerate() {
        let want: Vec<usize> = half
            .as_array()
            .unwrap()
            .to_i64_vec()
            .unwrap()
            .iter()
            .map(|&i| i as usize)
            .collect();
        assert_eq!(ds.halfsets()[k], want, "halfset {k}");
    }
    // And the file itself is accepted by --halfsets.
    let ds2 = open(DatasetOptions {
        halfsets: Some(grid.join("reference_pipeline_output/model/halfsets.pkl")),
        ..DatasetOptions {
            particles: grid.join("particles.32.mrcs"),
            ..Default::default()
        }
    });
    assert_eq!(ds2.halfsets(), ds.halfsets());
    assert!(matches!(ds2.halfset_origin(), HalfsetOrigin::File(_)));
    // Halfsets naming images outside the selection, or leaving selected images out, are errors.
    let err = open_err(DatasetOptions {
        halfsets: Some(grid.join("reference_pipeline_output/model/halfsets.pkl")),
        particles: fixtures().join("hand.mrcs"),
        ..Default::default()
    });
    assert!(err.contains("not among the selected images"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let hs = dir.path().join("h.pkl");
    let arr =
        |v: Vec<i64>| pickle::PyValue::Array(pickle::NdArray::from_i64(vec![v.len()], v).unwrap());
    pickle::dump(
        &hs,
        &pickle::PyValue::List(vec![arr(vec![0, 1]), arr(vec![2])]),
    )
    .unwrap();
    let err = open_err(DatasetOptions {
        halfsets: Some(hs.clone()),
        n_images: Some(4),
        ..opts("hand.mrcs")
    });
    assert!(err.contains("particle 3 is in neither halfset"), "{err}");
    pickle::dump(
        &hs,
        &pickle::PyValue::List(vec![arr(vec![0, 1]), arr(vec![1, 2, 3])]),
    )
    .unwrap();
    let err = open_err(DatasetOptions {
        halfsets: Some(hs),
        n_images: Some(4),
        ..opts("hand.mrcs")
    });
    assert!(err.contains("in both halfsets"), "{err}");
}

#[test]
fn relion_random_subset_gives_the_halfsets() {
    // relion5.star assigns its 17 particles to subsets 1,2,2,1,1,2,1,1,1,1,1,1,2,2,1,2,1.
    let ds = open(DatasetOptions {
        datadir: fx("toy_datadir"),
        ..opts("relion5.star")
    });
    assert_eq!(ds.halfset_origin(), &HalfsetOrigin::RandomSubset);
    assert_eq!(
        ds.halfsets(),
        &[
            vec![0, 3, 4, 6, 7, 8, 9, 10, 11, 14, 16],
            vec![1, 2, 5, 12, 13, 15]
        ]
    );
    // relion31.star puts all five in subset 1: fall back to the seeded random split.
    let ds = open(opts("relion31.star"));
    assert_eq!(ds.halfset_origin(), &HalfsetOrigin::Random { seed: 0 });
}

#[test]
fn count_mismatch_and_bad_pickles_are_named() {
    let err = open_err(DatasetOptions {
        poses: fx("toy_angles.pkl"),
        ..opts("hand.mrcs")
    });
    assert!(
        err.contains("toy_angles.pkl") && err.contains("1000") && err.contains("100 images"),
        "{err}"
    );
    let err = open_err(DatasetOptions {
        ctf: fx("ctf1.pkl"),
        ..opts("hand.mrcs")
    });
    assert!(
        err.contains("ctf1.pkl") && err.contains("5 CTF rows"),
        "{err}"
    );
    let err = open_err(DatasetOptions {
        ctf: fx("hand_rot.pkl"),
        ..opts("hand.mrcs")
    });
    assert!(err.contains("hand_rot.pkl") && err.contains("N×9"), "{err}");
    let err = open_err(DatasetOptions {
        poses: fx("test_ctf.pkl"),
        ..opts("toy_projections.mrcs")
    });
    assert!(
        err.contains("test_ctf.pkl") && err.contains("(N, 3, 3)"),
        "{err}"
    );
}

/// Write a float32 N×9 CTF pickle with one poisoned value.
fn write_ctf(path: &Path, n: usize, poison: Option<(usize, usize, f32)>) {
    let mut v = Vec::new();
    for _ in 0..n {
        v.extend_from_slice(&[30.0f32, 1.0, 15000.0, 15000.0, 0.0, 300.0, 2.7, 0.1, 0.0]);
    }
    if let Some((r, c, x)) = poison {
        v[r * 9 + c] = x;
    }
    let arr = pickle::NdArray::from_f32(vec![n, 9], v).unwrap();
    pickle::dump(path, &pickle::PyValue::Array(arr)).unwrap();
}

#[test]
fn nan_in_ctf_and_odd_or_truncated_stacks() {
    let dir = tempfile::tempdir().unwrap();
    let ctf = dir.path().join("nan.pkl");
    write_ctf(&ctf, 1000, Some((417, 3, f32::NAN)));
    let err = open_err(DatasetOptions {
        ctf: Some(ctf.clone()),
        ..opts("toy_projections.mrcs")
    });
    assert!(
        err.contains("nan.pkl") && err.contains("row 417") && err.contains("DefocusV"),
        "{err}"
    );

    // An odd box: toy_projections is 30 px, so crop a 29-px copy.
    let odd = dir.path().join("odd.mrcs");
    mrc::write_stack(&odd, &vec![0.5f32; 4 * 29 * 29], 29, 29, 1.0).unwrap();
    let err = open_err(DatasetOptions {
        particles: odd,
        ..Default::default()
    });
    assert!(err.contains("odd") && err.contains("29"), "{err}");

    // A truncated stack: the header promises more images than the file holds.
    let bytes = std::fs::read(fixtures().join("hand.mrcs")).unwrap();
    let cut = dir.path().join("cut.mrcs");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let err = open_err(DatasetOptions {
        particles: cut,
        ..Default::default()
    });
    assert!(err.contains("cut.mrcs"), "{err}");

    // A path that does not exist.
    let err = open_err(opts("nope.mrcs"));
    assert!(
        err.contains("nope.mrcs") && err.contains("does not exist"),
        "{err}"
    );
    // An unknown extension.
    let e = Dataset::open(&opts("hand_rot.pkl")).err().unwrap();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

#[test]
fn from_arrays_and_batches() {
    let n = 7;
    let d = 4;
    let images: Vec<f32> = (0..n * d * d).map(|v| v as f32).collect();
    let rot = vec![[1.0f32, 0., 0., 0., 1., 0., 0., 0., 1.]; n];
    let trans = vec![[0.5f32, -0.5]; n];
    let ctf = vec![[4.0f64, 2.0, 1e4, 1e4, 0.0, 300.0, 2.7, 0.1, 0.0]; n];
    let ds = Dataset::from_arrays(images, n, d, &rot, &trans, &ctf, 0).unwrap();
    assert_eq!(ds.voxel_size(), 2.0);
    let b: Vec<_> = ds.batches(3).collect();
    assert_eq!(b, vec![0..3, 3..6, 6..7]);
    let mut out = vec![0.0; 16];
    ds.read_images(&[6], &mut out).unwrap();
    assert_eq!(out[0], 96.0);
    assert_eq!(ds.batch_size_for_budget(1000, 64), 7);
    assert_eq!(ds.batch_size_for_budget(200, 64), 3);
    let bad = vec![[1.0f32, 1., 0., 0., 1., 0., 0., 0., 1.]; n];
    let e = Dataset::from_arrays(vec![0.0; n * 16], n, d, &bad, &trans, &ctf, 0)
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a rotation"), "{e}");
    let e = Dataset::from_arrays(vec![0.0; 16], n, d, &rot, &trans, &ctf, 0)
        .err()
        .unwrap();
    assert!(e.to_string().contains("need"), "{e}");
}
