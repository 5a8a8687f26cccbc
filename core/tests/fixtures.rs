//! Every file in ../shared/data/cryodrgn_fixtures, each with what it must parse to. A
//! fixture without an entry here still gets the generic check for its extension (it must
//! parse, or be refused with a message naming it), so nothing is left unchecked.

mod common;

use std::path::Path;

use common::*;
use recovar_core::dataset::{CtfTable, PoseTable};
use recovar_core::io::{cs::CsFile, mrc, pickle, star::StarFile, txt};

/// What a fixture is and the facts it must show.
enum Expect {
    /// An image stack (nx, ny, n) with a header pixel size (None when unset/meaningless).
    Stack(usize, usize, usize),
    /// A volume (nx, ny, nz) and its voxel size.
    Volume(usize, usize, usize, f32),
    /// A .star file with this many particle rows.
    Star(usize),
    /// A .cs file with this many rows.
    Cs(usize),
    /// A poses pickle with N rotations (and translations or not).
    Poses(usize, bool),
    /// A CTF pickle with N rows.
    Ctf(usize),
    /// A bare N×2 translations array.
    Trans(usize),
    /// An index pickle with these first values and length.
    Ind(usize, &'static [i64]),
    /// A cryoDRGN z.pkl of N×zdim.
    Z(usize, usize),
    /// A stack list of N stacks.
    Txt(usize),
    /// Documentation.
    Readme,
}

fn expectation(name: &str) -> Option<Expect> {
    use Expect::*;
    Some(match name {
        "hand.mrcs" | "hand_tilt.mrcs" => Stack(64, 64, 100),
        "hand.5.mrcs" => Stack(64, 64, 5),
        "toy_projections.mrcs" | "toy_projections.mrc" | "toy_projections_0-999.mrcs" => {
            Stack(30, 30, 1000)
        }
        "toy_images_a.mrcs" => Stack(30, 30, 100),
        "toy_images_b.mrcs" => Stack(30, 30, 900),
        "relion31.mrcs" => Stack(256, 256, 5),
        "empiar_10076_7.mrc" => Stack(320, 320, 7),
        "ay19102021_L3_position6_ribo_it09_bin8_1.82A.mrcs" => Stack(64, 64, 220),
        "hand-vol.mrc" => Volume(64, 64, 64, 1.0),
        "toymodel_small_nocenter.mrc" => Volume(30, 30, 30, 1.0),
        "50S-vol.mrc" => Volume(32, 32, 128, 4.0),
        "spike-vol.mrc" => Volume(16, 16, 128, 8.0),
        "FinalRefinement-OriginalParticles-PfCRT.star" | "relion31.star" | "relion31.v2.star" => {
            Star(5)
        }
        "relion5.star" => Star(17),
        "sta_testing.star" | "sta_testing_bin8.star" => Star(219),
        "toy_projections.star" | "toy.star" | "toy_projections_dir.star" => Star(1000),
        "toy_projections_13.star" => Star(13),
        "empiar_10076_7.star" => Star(7),
        "cryosparc_P12_J24_001_particles.cs" => Cs(2019),
        "cryosparc_J2_particles_exported.cs" => Cs(22),
        "empiar_10076_7.cs" => Cs(7),
        "pose.star.pkl" => Poses(5, true),
        "pose.cs.pkl" => Poses(2019, true),
        "sta_pose.pkl" => Poses(219, true),
        "hand_rot.pkl" => Poses(100, false),
        "hand_rot_trans.pkl" => Poses(100, true),
        "toy_angles.pkl" => Poses(1000, false),
        "toy_rot_trans.pkl" | "toy_rot_zerotrans.pkl" => Poses(1000, true),
        "ctf1.pkl" => Ctf(5),
        "ctf2.pkl" => Ctf(2019),
        "test_ctf.pkl" => Ctf(1000),
        "test_ctf.100.pkl" => Ctf(100),
        "sta_ctf.pkl" => Ctf(219),
        "toy_trans.pkl" | "toy_trans.zero.pkl" => Trans(1000),
        "ind100.pkl" => Ind(100, &[0, 1, 2]),
        "ind100-rand.pkl" => Ind(100, &[]),
        "ind4.pkl" => Ind(4, &[0, 1, 3, 4]),
        "ind5.pkl" => Ind(5, &[0, 1, 2, 3, 5]),
        "ind_39_sta_testing_bin8.pkl" => Ind(195, &[0, 1, 2]),
        "zvals_het-2_1k.pkl" => Z(1319, 2),
        "zvals_het-8_4k.pkl" => Z(4549, 8),
        "toy_projections.txt" => Txt(1),
        "toy_projections_2.txt" => Txt(2),
        "README.md" => Readme,
        _ => return None,
    })
}

fn check(path: &Path, e: Expect) {
    let what = path.display();
    match e {
        Expect::Stack(nx, ny, n) => {
            let s = mrc::MrcStack::open(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((s.image_shape(), s.len()), ((ny, nx), n), "{what}");
            let mut img = vec![0.0; nx * ny];
            s.read_image(n - 1, &mut img).unwrap();
            assert!(
                img.iter().all(|v| v.is_finite()),
                "{what}: last image finite"
            );
        }
        Expect::Volume(nx, ny, nz, vs) => {
            let v = mrc::read_volume(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v.shape, [nz, ny, nx], "{what}");
            assert!(
                (v.voxel_size - vs).abs() < 1e-5,
                "{what}: voxel {}",
                v.voxel_size
            );
        }
        Expect::Star(n) => {
            let s = StarFile::read(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.particles().unwrap().n_rows(), n, "{what}");
        }
        Expect::Cs(n) => {
            let c = CsFile::read(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.len(), n, "{what}");
        }
        Expect::Poses(n, has_t) => {
            let p = PoseTable::read_pickle(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((p.len(), p.translations.is_some()), (n, has_t), "{what}");
        }
        Expect::Ctf(n) => {
            let c = CtfTable::read_pickle(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.len(), n, "{what}");
        }
        Expect::Trans(n) => {
            let v = pickle::load(path).unwrap();
            assert_eq!(v.as_array().unwrap().shape(), [n, 2], "{what}");
            // Not a poses file: the reader says what it found.
            let e = PoseTable::read_pickle(path).unwrap_err().to_string();
            assert!(e.contains("(N, 3, 3)"), "{e}");
        }
        Expect::Ind(n, first) => {
            let v = pickle::load(path).unwrap();
            let a = v.as_array().unwrap().to_i64_vec().unwrap();
            assert_eq!(a.len(), n, "{what}");
            assert_eq!(&a[..first.len()], first, "{what}");
        }
        Expect::Z(n, z) => {
            let bytes = std::fs::read(path).unwrap();
            let (mu, used) = pickle::loads_prefix(&bytes).unwrap();
            assert_eq!(mu.as_array().unwrap().shape(), [n, z], "{what}");
            // cryoDRGN writes z_logvar right after z_mu in the same file.
            if used < bytes.len() {
                let logvar = pickle::loads(&bytes[used..]).unwrap();
                assert_eq!(logvar.as_array().unwrap().shape(), [n, z], "{what}: logvar");
            }
        }
        Expect::Txt(n) => {
            assert_eq!(txt::read(path).unwrap().len(), n, "{what}");
        }
        Expect::Readme => {}
    }
}

/// A fixture we have no facts for: it must parse by its extension.
fn generic_check(path: &Path) {
    eprintln!(
        "note: no specific expectation for {}; generic check only",
        path.display()
    );
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mrc" | "mrcs" => {
            mrc::read_header(path).unwrap_or_else(|e| panic!("{e}"));
        }
        "star" => {
            let s = StarFile::read(path).unwrap_or_else(|e| panic!("{e}"));
            assert!(s.particles().unwrap().n_rows() > 0);
        }
        "cs" => {
            CsFile::read(path).unwrap_or_else(|e| panic!("{e}"));
        }
        "pkl" => {
            pickle::load(path).unwrap_or_else(|e| panic!("{e}"));
        }
        "txt" => {
            txt::read(path).unwrap_or_else(|e| panic!("{e}"));
        }
        _ => {}
    }
}

#[test]
fn every_fixture_has_an_expectation_and_meets_it() {
    let mut checked = 0;
    let mut stack = vec![fixtures()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            match expectation(&name) {
                Some(e) => check(&path, e),
                None => generic_check(&path),
            }
            checked += 1;
        }
    }
    assert!(checked >= 54, "only {checked} fixtures found");
}

#[test]
fn oracle_text_dumps_agree_with_oracle_pickles() {
    // Guards the oracles themselves (and our reader): each .txt dump equals its .pkl.
    for entry in std::fs::read_dir(oracles()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".ctf.txt") else {
            continue;
        };
        let text = std::fs::read_to_string(&p).unwrap();
        let vals: Vec<f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split_whitespace().map(|v| v.parse::<f64>().unwrap()))
            .collect();
        let c = CtfTable::read_pickle(oracles().join(format!("{stem}.ctf.pkl"))).unwrap();
        let got: Vec<f64> = c.rows.iter().flatten().copied().collect();
        assert_close(&got, &vals, 1e-6, &name);
    }
}
