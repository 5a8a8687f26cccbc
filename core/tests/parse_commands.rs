//! `parse_pose_star`, `parse_pose_csparc`, `parse_ctf_star`, `parse_ctf_csparc` and
//! `downsample` against cryoDRGN 4.3.1's outputs on its own fixtures
//! (../shared/data/cryodrgn_oracles, commands listed in its README).

mod common;

use common::*;
use recovar_core::io::mrc;
use recovar_core::io::pickle::{self, Dtype, PyValue};

/// Run a parse command in the fixtures folder, then compare the pickle it wrote with
/// `expected`: same structure, same dtypes, values within 1e-5 (relative to
/// max(1, |value|)).
fn check_against(args: &[&str], expected: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pkl");
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["-o", out.to_str().unwrap()]);
    recovar_ok(&fixtures(), &full);
    let got = pickle::load(&out).unwrap();
    let want = pickle::load(expected).unwrap();
    compare_values(&got, &want, &expected.display().to_string());
}

/// [`check_against`] the cryoDRGN 4.3.1 oracle of that name.
fn check_against_oracle(args: &[&str], oracle_name: &str) {
    check_against(args, &oracles().join(oracle_name));
}

fn compare_values(got: &PyValue, want: &PyValue, what: &str) {
    match (got, want) {
        (PyValue::Tuple(g), PyValue::Tuple(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: tuple length");
            for (k, (a, b)) in g.iter().zip(w).enumerate() {
                compare_values(a, b, &format!("{what}[{k}]"));
            }
        }
        (PyValue::Array(g), PyValue::Array(w)) => {
            assert_eq!(g.shape(), w.shape(), "{what}: shape");
            assert_eq!(g.dtype(), w.dtype(), "{what}: dtype");
            assert_close(&g.to_f64_vec(), &w.to_f64_vec(), 1e-5, what);
        }
        (g, w) => panic!("{what}: got a {}, want a {}", g.type_name(), w.type_name()),
    }
}

#[test]
fn parse_pose_star_matches_cryodrgn() {
    check_against_oracle(
        &[
            "parse_pose_star",
            "FinalRefinement-OriginalParticles-PfCRT.star",
            "-D",
            "300",
        ],
        "FinalRefinement-OriginalParticles-PfCRT.poses.pkl",
    );
    check_against_oracle(&["parse_pose_star", "relion31.star"], "relion31.poses.pkl");
    check_against_oracle(
        &["parse_pose_star", "relion31.v2.star"],
        "relion31.v2.poses.pkl",
    );
    check_against_oracle(&["parse_pose_star", "relion5.star"], "relion5.poses.pkl");
    check_against_oracle(
        &["parse_pose_star", "sta_testing.star", "-D", "512"],
        "sta_testing.poses.pkl",
    );
    check_against_oracle(
        &["parse_pose_star", "sta_testing_bin8.star", "-D", "64"],
        "sta_testing_bin8.poses.pkl",
    );
}

#[test]
fn parse_pose_star_also_matches_cryodrgns_own_test_oracle() {
    // pose.star.pkl is the file cryoDRGN's test suite checks against.
    check_against(
        &[
            "parse_pose_star",
            "FinalRefinement-OriginalParticles-PfCRT.star",
            "-D",
            "300",
        ],
        &fixtures().join("pose.star.pkl"),
    );
}

#[test]
fn parse_pose_csparc_matches_cryodrgn() {
    check_against_oracle(
        &[
            "parse_pose_csparc",
            "cryosparc_P12_J24_001_particles.cs",
            "-D",
            "180",
        ],
        "cryosparc_P12_J24_001_particles.poses.pkl",
    );
    // cryoDRGN's own test oracle for the same file.
    check_against(
        &["parse_pose_csparc", "cryosparc_P12_J24_001_particles.cs"],
        &fixtures().join("pose.cs.pkl"),
    );
}

#[test]
fn parse_pose_csparc_without_3d_alignments_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.pkl");
    let err = recovar_err(
        &fixtures(),
        &[
            "parse_pose_csparc",
            "cryosparc_J2_particles_exported.cs",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(err.contains("cryosparc_J2_particles_exported.cs"), "{err}");
    assert!(err.contains("alignments3D/pose"), "{err}");
    assert!(
        err.contains("alignments2D"),
        "should list the fields the file has: {err}"
    );
    assert!(!out.exists(), "no output on failure");
}

#[test]
fn parse_ctf_star_matches_cryodrgn() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "FinalRefinement-OriginalParticles-PfCRT.star",
                "-D",
                "300",
                "--Apix",
                "1.035",
                "-w",
                "0.1",
            ],
            "FinalRefinement-OriginalParticles-PfCRT.ctf.pkl",
        ),
        (&["relion31.star"], "relion31.ctf.pkl"),
        (&["relion31.v2.star"], "relion31.v2.ctf.pkl"),
        (&["relion5.star"], "relion5.ctf.pkl"),
        (
            &["sta_testing.star", "-D", "512", "--Apix", "1.82"],
            "sta_testing.ctf.pkl",
        ),
        (
            &["sta_testing_bin8.star", "-D", "64", "--Apix", "14.56"],
            "sta_testing_bin8.ctf.pkl",
        ),
        (
            &[
                "empiar_10076_7.star",
                "-D",
                "320",
                "--Apix",
                "1.31",
                "--ps",
                "0",
            ],
            "empiar_10076_7.star.ctf.pkl",
        ),
        (
            &["toy_projections.star", "-D", "30", "--Apix", "1"],
            "toy_projections.ctf.pkl",
        ),
        (&["toy.star", "-D", "30", "--Apix", "1"], "toy.ctf.pkl"),
        (
            &["toy_projections_dir.star", "-D", "30", "--Apix", "1"],
            "toy_projections_dir.ctf.pkl",
        ),
        (&["toy_projections_13.star"], "toy_projections_13.ctf.pkl"),
    ];
    for (args, oracle) in cases {
        let mut full = vec!["parse_ctf_star"];
        full.extend_from_slice(args);
        check_against_oracle(&full, oracle);
    }
}

#[test]
fn parse_ctf_star_reproduces_cryodrgns_test_oracles() {
    for (args, fixture) in [
        (
            vec![
                "FinalRefinement-OriginalParticles-PfCRT.star",
                "-D",
                "300",
                "--Apix",
                "1.035",
                "-w",
                "0.1",
            ],
            "ctf1.pkl",
        ),
        (
            vec!["sta_testing.star", "-D", "512", "--Apix", "1.82"],
            "sta_ctf.pkl",
        ),
        (
            vec!["toy_projections.star", "-D", "30", "--Apix", "1"],
            "test_ctf.pkl",
        ),
    ] {
        let mut full = vec!["parse_ctf_star"];
        full.extend(args);
        check_against(&full, &fixtures().join(fixture));
    }
}

#[test]
fn parse_ctf_star_missing_pixel_size_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.pkl");
    let err = recovar_err(
        &fixtures(),
        &[
            "parse_ctf_star",
            "toy_projections.star",
            "-D",
            "30",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("_rlnImagePixelSize") && err.contains("--Apix"),
        "{err}"
    );
}

#[test]
fn parse_ctf_csparc_matches_cryodrgn() {
    for (input, oracle) in [
        (
            "cryosparc_P12_J24_001_particles.cs",
            "cryosparc_P12_J24_001_particles.ctf.pkl",
        ),
        (
            "cryosparc_J2_particles_exported.cs",
            "cryosparc_J2_particles_exported.ctf.pkl",
        ),
        ("empiar_10076_7.cs", "empiar_10076_7.cs.ctf.pkl"),
    ] {
        check_against_oracle(&["parse_ctf_csparc", input], oracle);
    }
    // cryoDRGN's own test oracle.
    check_against(
        &["parse_ctf_csparc", "cryosparc_P12_J24_001_particles.cs"],
        &fixtures().join("ctf2.pkl"),
    );
}

#[test]
fn written_pickles_have_cryodrgns_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.pkl");
    recovar_ok(
        &fixtures(),
        &[
            "parse_pose_star",
            "relion31.star",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let PyValue::Tuple(items) = pickle::load(&out).unwrap() else {
        panic!("tuple")
    };
    assert_eq!(items[0].as_array().unwrap().dtype(), Dtype::F64);
    assert_eq!(items[1].as_array().unwrap().dtype(), Dtype::F64);
}

/// Compare an MRC written by us with cryoDRGN's: same shape, values within 1e-5 of the
/// oracle's largest magnitude (cryoDRGN computes in float32, so the oracle itself carries
/// ~1e-6 relative rounding).
fn compare_mrc(got: &std::path::Path, want: &std::path::Path) -> f32 {
    let g = mrc::read_volume(got).unwrap();
    let w = mrc::read_volume(want).unwrap();
    assert_eq!(g.shape, w.shape, "{}", want.display());
    let peak = w.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut worst = 0.0f32;
    for (a, b) in g.data.iter().zip(&w.data) {
        worst = worst.max((a - b).abs());
    }
    assert!(
        worst <= 1e-5 * peak.max(1.0),
        "{}: max |diff| {worst} vs peak {peak}",
        want.display()
    );
    g.voxel_size
}

#[test]
fn downsample_matches_cryodrgn() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hand.down32.mrcs");
    recovar_ok(
        &fixtures(),
        &[
            "downsample",
            "hand.mrcs",
            "-D",
            "32",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let apix = compare_mrc(&out, &oracles().join("hand.down32.mrcs"));
    assert!(
        (apix - 2.0).abs() < 1e-6,
        "hand: 1 Å × 64/32 = 2 Å, got {apix}"
    );

    let out = dir.path().join("toy.down16.mrcs");
    recovar_ok(
        &fixtures(),
        &[
            "downsample",
            "toy_projections.mrcs",
            "-D",
            "16",
            "-b",
            "300",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    compare_mrc(&out, &oracles().join("toy_projections.down16.mrcs"));

    let out = dir.path().join("vol.down32.mrc");
    recovar_ok(
        &fixtures(),
        &[
            "downsample",
            "hand-vol.mrc",
            "--is-vol",
            "-D",
            "32",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let apix = compare_mrc(&out, &oracles().join("hand-vol.down32.mrc"));
    assert!(
        (apix - 2.0).abs() < 1e-6,
        "volume pixel size scales too (cryoDRGN writes 1): {apix}"
    );
}

#[test]
fn downsample_chunks_index_and_star_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hand.32.mrcs");
    recovar_ok(
        &fixtures(),
        &[
            "downsample",
            "hand.mrcs",
            "-D",
            "32",
            "--chunk",
            "40",
            "--ind",
            "ind100.pkl",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let names: Vec<String> = std::fs::read_to_string(dir.path().join("hand.32.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        names,
        ["hand.32.0.mrcs", "hand.32.1.mrcs", "hand.32.2.mrcs"]
    );
    let counts: Vec<usize> = names
        .iter()
        .map(|n| mrc::MrcStack::open(dir.path().join(n)).unwrap().len())
        .collect();
    assert_eq!(counts, [40, 40, 20]);
    // The chunks together equal the unchunked oracle.
    let want = mrc::MrcStack::open(oracles().join("hand.down32.mrcs"))
        .unwrap()
        .read_all()
        .unwrap();
    let mut got = Vec::new();
    for n in &names {
        got.extend(
            mrc::MrcStack::open(dir.path().join(n))
                .unwrap()
                .read_all()
                .unwrap(),
        );
    }
    let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * peak);
    }
    // The .txt list is itself a valid particle input.
    let info = recovar_ok(dir.path(), &["info", "hand.32.txt"]);
    assert!(info.contains("100"), "{info}");

    // A .star input naming stacks in a --datadir; 13 images in a scrambled order.
    let out = dir.path().join("toy13.mrcs");
    recovar_ok(
        &fixtures(),
        &[
            "downsample",
            "toy_projections_13.star",
            "-D",
            "16",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let s = mrc::MrcStack::open(&out).unwrap();
    assert_eq!(s.len(), 13);
    // The star's optics table says 1.035 Å at 300 px; cryoDRGN scales that pixel size.
    assert!((s.voxel_size().unwrap() - (1.035 * 30.0 / 16.0) as f32).abs() < 1e-5);
    // First particle is image 93 (1-based) of toy_projections.mrcs.
    let all = mrc::MrcStack::open(oracles().join("toy_projections.down16.mrcs")).unwrap();
    let mut want = vec![0.0; 256];
    all.read_image(92, &mut want).unwrap();
    let mut got = vec![0.0; 256];
    s.read_image(0, &mut got).unwrap();
    let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * peak.max(1.0));
    }
}

#[test]
fn downsample_rejects_bad_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.mrcs");
    let o = out.to_str().unwrap();
    let err = recovar_err(
        &fixtures(),
        &["downsample", "hand.mrcs", "-D", "31", "-o", o],
    );
    assert!(err.contains("even"), "{err}");
    let err = recovar_err(
        &fixtures(),
        &["downsample", "hand.mrcs", "-D", "128", "-o", o],
    );
    assert!(err.contains("larger"), "{err}");
    assert!(!out.exists());
}

#[test]
fn python_loads_our_pose_and_ctf_pickles() {
    let Some(py) = python_with(&["numpy"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let poses = dir.path().join("poses.pkl");
    let ctf = dir.path().join("ctf.pkl");
    recovar_ok(
        &fixtures(),
        &[
            "parse_pose_csparc",
            "cryosparc_P12_J24_001_particles.cs",
            "-o",
            poses.to_str().unwrap(),
        ],
    );
    recovar_ok(
        &fixtures(),
        &[
            "parse_ctf_star",
            "relion31.star",
            "-o",
            ctf.to_str().unwrap(),
        ],
    );
    let script = format!(
        "import pickle, numpy as np\n\
         r, t = pickle.load(open({p:?}, 'rb'))\n\
         c = pickle.load(open({c:?}, 'rb'))\n\
         assert isinstance(r, np.ndarray) and isinstance(c, np.ndarray)\n\
         print(r.dtype, r.shape, t.dtype, t.shape, c.dtype, c.shape, '%.3f' % c[0, 1])\n",
        p = poses.to_str().unwrap(),
        c = ctf.to_str().unwrap()
    );
    let out = std::process::Command::new(&py)
        .args(["-W", "error", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "float32 (2019, 3, 3) float32 (2019, 2) float32 (5, 9) 2.806"
    );
}
