//! `.npy` and cryoSPARC `.cs` tests: the fixtures, agreement with cryoDRGN's oracles,
//! hand-built `.npy` files (header versions, byte orders, padding, Fortran order), bad
//! input, and (when a Python with numpy is available) files written by numpy.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use recovar_core::io::cs::CsFile;
use recovar_core::io::npy::NpyArray;

fn data_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    assert!(
        d.join("cryodrgn_fixtures").is_dir(),
        "test data not found at {}: these tests need the shared data folder \
         (shared/data next to the repository root, with cryodrgn_fixtures/ and cryodrgn_oracles/)",
        d.display()
    );
    d
}

fn fixture(name: &str) -> PathBuf {
    data_dir().join("cryodrgn_fixtures").join(name)
}

fn oracle_rows(name: &str) -> Vec<Vec<f64>> {
    let p = data_dir().join("cryodrgn_oracles").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) || (a - b).abs() < 1e-300
}

fn read_cs(name: &str) -> CsFile {
    let p = fixture(name);
    CsFile::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

#[test]
fn every_cs_fixture_parses() {
    let mut n = 0;
    for e in std::fs::read_dir(data_dir().join("cryodrgn_fixtures")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cs") {
            let f = CsFile::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!f.is_empty());
            assert_eq!(f.blob_paths().unwrap().len(), f.len());
            assert_eq!(f.blob_indices().unwrap().len(), f.len());
            n += 1;
        }
    }
    assert_eq!(n, 3);
}

#[test]
fn p12_blob_fields() {
    let f = read_cs("cryosparc_P12_J24_001_particles.cs");
    assert_eq!(f.len(), 2019);
    assert_eq!(f.array().field_names().len(), 34);
    assert_eq!(f.array().version(), (1, 0));
    let shapes = f.blob_shape().unwrap().unwrap();
    assert!(shapes.iter().all(|s| *s == [180, 180]));
    let ps = f.pixel_sizes().unwrap().unwrap();
    assert!(ps.iter().all(|&p| close(p, 2.95, 1e-6)), "{}", ps[0]);
    let paths = f.blob_paths().unwrap();
    assert!(
        paths[0].starts_with("J19/extract/") && paths[0].ends_with("_particles.mrc"),
        "{}",
        paths[0]
    );
    let idx = f.blob_indices().unwrap();
    assert!(idx.iter().all(|&i| i < 10_000));
    assert_eq!(f.array().field_width("alignments3D/pose"), Some(3));
    assert_eq!(f.array().field_width("ctf/df1_A"), Some(1));
    assert_eq!(f.array().field_width("nope"), None);
}

/// D, Apix and the CTF columns as `parse_ctf_csparc` computes them (radians to degrees).
fn check_ctf_against_oracle(cs: &str, oracle: &str) {
    let f = read_cs(cs);
    let a = f.array();
    let want = oracle_rows(oracle);
    assert_eq!(want.len(), f.len(), "{cs}");
    let deg = 180.0 / std::f64::consts::PI;
    let get = |name: &str| a.field_f64(name).unwrap_or_else(|e| panic!("{cs}: {e}"));
    let cols = [
        get("ctf/df1_A"),
        get("ctf/df2_A"),
        get("ctf/df_angle_rad").iter().map(|v| v * deg).collect(),
        get("ctf/accel_kv"),
        get("ctf/cs_mm"),
        get("ctf/amp_contrast"),
        get("ctf/phase_shift_rad")
            .iter()
            .map(|v| v * deg)
            .collect::<Vec<f64>>(),
    ];
    let shapes = f.blob_shape().unwrap().unwrap();
    let ps = f.pixel_sizes().unwrap().unwrap();
    for (r, row) in want.iter().enumerate() {
        assert!(close(shapes[r][0] as f64, row[0], 1e-9), "{cs} D");
        assert!(close(ps[r], row[1], 1e-6), "{cs} Apix");
        for (i, col) in cols.iter().enumerate() {
            // The oracle went through float32 after the degree conversion.
            assert!(
                close(col[r], row[i + 2], 1e-5) || (col[r] - row[i + 2]).abs() < 1e-5,
                "{cs} row {r} col {}: ours {} oracle {}",
                i + 2,
                col[r],
                row[i + 2]
            );
        }
    }
}

#[test]
fn ctf_fields_match_cryodrgn_oracles() {
    check_ctf_against_oracle(
        "cryosparc_P12_J24_001_particles.cs",
        "cryosparc_P12_J24_001_particles.ctf.txt",
    );
    check_ctf_against_oracle(
        "cryosparc_J2_particles_exported.cs",
        "cryosparc_J2_particles_exported.ctf.txt",
    );
    check_ctf_against_oracle("empiar_10076_7.cs", "empiar_10076_7.cs.ctf.txt");
}

/// cryoDRGN: rotation = expmap(axis-angle) transposed; translation = shift / D.
#[test]
fn p12_poses_and_shifts_match_cryodrgn_oracles() {
    let f = read_cs("cryosparc_P12_J24_001_particles.cs");
    let poses = f.poses("alignments3D/pose").unwrap();
    let shifts = f.shifts("alignments3D/shift").unwrap();
    let rot = oracle_rows("cryosparc_P12_J24_001_particles.poses.rot.txt");
    let trans = oracle_rows("cryosparc_P12_J24_001_particles.poses.trans.txt");
    assert_eq!(poses.len(), 2019);
    assert_eq!(rot.len(), 2019);
    for (i, v) in poses.iter().enumerate() {
        let th = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        let (x, y, z) = (v[0] / th, v[1] / th, v[2] / th);
        let k = [[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]];
        let mut r = [[0.0f64; 3]; 3];
        for a in 0..3 {
            for b in 0..3 {
                let kk: f64 = (0..3).map(|c| k[a][c] * k[c][b]).sum();
                r[a][b] =
                    if a == b { 1.0 } else { 0.0 } + th.sin() * k[a][b] + (1.0 - th.cos()) * kk;
            }
        }
        for a in 0..3 {
            for b in 0..3 {
                // transposed
                assert!((r[b][a] - rot[i][3 * a + b]).abs() < 1e-5, "pose {i}");
            }
        }
        for c in 0..2 {
            assert!(
                (shifts[i][c] / 180.0 - trans[i][c]).abs() < 1e-6,
                "shift {i}"
            );
        }
    }
}

#[test]
fn exported_2d_job() {
    let f = read_cs("cryosparc_J2_particles_exported.cs");
    assert_eq!(f.len(), 22);
    assert_eq!(f.array().field_names().len(), 42);
    let raw = f.array().field_bytes_str("blob/path").unwrap();
    assert!(raw[0].starts_with('>'), "{}", raw[0]);
    let paths = f.blob_paths().unwrap();
    for (p, r) in paths.iter().zip(&raw) {
        assert!(!p.starts_with('>'));
        assert_eq!(p.as_str(), &r[1..]);
    }
    assert_eq!(f.blob_shape().unwrap().unwrap()[0], [300, 300]);
    assert!(close(f.pixel_sizes().unwrap().unwrap()[0], 1.345, 1e-6));
    let e = f.poses("alignments3D/pose").unwrap_err().to_string();
    assert!(
        e.contains("alignments3D/pose")
            && e.contains("alignments2D/pose")
            && e.contains("alignments2D/shift")
            && e.contains("cryosparc_J2_particles_exported.cs"),
        "{e}"
    );
    assert!(f.shifts("alignments3D/shift").is_err());
    // The 2-D pose is one in-plane angle, not an axis-angle vector.
    let e = f.poses("alignments2D/pose").unwrap_err().to_string();
    assert!(e.contains("1 values per particle, expected 3"), "{e}");
    assert_eq!(f.shifts("alignments2D/shift").unwrap().len(), 22);
}

#[test]
fn empiar_cs() {
    let f = read_cs("empiar_10076_7.cs");
    assert_eq!(f.len(), 7);
    assert_eq!(f.blob_paths().unwrap(), vec!["empiar_10076_7.mrc"; 7]);
    assert_eq!(f.blob_indices().unwrap(), (0..7).collect::<Vec<u64>>());
    assert_eq!(f.blob_shape().unwrap().unwrap()[0], [320, 320]);
    let e = f.poses("alignments3D/pose").unwrap_err().to_string();
    assert!(e.contains("no alignment fields"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Hand-built .npy files
// ---------------------------------------------------------------------------------------

/// A `.npy` file with the given header dict text, format version and data.
fn npy(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let pre = if version == 1 { 10 } else { 12 };
    let mut h = header.to_string();
    while !(pre + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY".to_vec();
    v.extend_from_slice(&[version, 0]);
    if version == 1 {
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    } else {
        v.extend_from_slice(&(h.len() as u32).to_le_bytes());
    }
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(data);
    v
}

/// A structured record: uid <u8, path |S8, named void |V3, padding V1, x >f8,
/// v <f4 (3,), s <U2, b |b1, i >i2  => 8+8+3+1+8+12+8+1+2 = 51 bytes.
fn structured_file(version: u8) -> Vec<u8> {
    let header = "{'descr': [('uid', '<u8'), ('blob/path', '|S8'), ('pad', '|V3'), ('', '|V1'), \
                  ('x', '>f8'), ('v', '<f4', (3,)), ('s', '<U2'), ('b', '|b1'), ('i', '>i2')], \
                  'fortran_order': False, 'shape': (2,), }";
    let mut data = Vec::new();
    for r in 0..2u64 {
        data.extend_from_slice(&(1000 + r).to_le_bytes());
        let mut p = *b"\0\0\0\0\0\0\0\0";
        let name = if r == 0 {
            &b">a/b.mrc"[..]
        } else {
            &b"c\xc3\xa9"[..]
        };
        p[..name.len()].copy_from_slice(name);
        data.extend_from_slice(&p);
        data.extend_from_slice(&[9, 9, 9, 7]);
        data.extend_from_slice(&(1.5 + r as f64).to_be_bytes());
        for k in 0..3 {
            data.extend_from_slice(&((r * 3 + k) as f32).to_le_bytes());
        }
        for c in ['Z' as u32, if r == 0 { 0 } else { 'é' as u32 }] {
            data.extend_from_slice(&c.to_le_bytes());
        }
        data.push(r as u8);
        data.extend_from_slice(&(-300i16 + r as i16).to_be_bytes());
    }
    npy(version, header, &data)
}

#[test]
fn structured_arrays_v1_and_v2() {
    for version in [1, 2, 3] {
        let a = NpyArray::from_bytes(&structured_file(version)).unwrap();
        assert_eq!(a.version(), (version, 0));
        assert_eq!(a.itemsize(), 51);
        assert_eq!(a.n_rows(), 2);
        assert_eq!(
            a.field_names(),
            ["uid", "blob/path", "pad", "x", "v", "s", "b", "i"]
        );
        assert_eq!(a.field("x").unwrap().offset, 20);
        assert_eq!(a.field_u64("uid").unwrap(), vec![1000, 1001]);
        assert_eq!(a.field_f64("x").unwrap(), vec![1.5, 2.5]);
        assert_eq!(a.field_width("v"), Some(3));
        assert_eq!(
            a.field_f64("v").unwrap(),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        assert_eq!(a.field_bytes_str("s").unwrap(), vec!["Z", "Zé"]);
        assert_eq!(
            a.field_bytes_str("blob/path").unwrap(),
            vec![">a/b.mrc", "cé"]
        );
        assert_eq!(a.field_f64("b").unwrap(), vec![0.0, 1.0]);
        assert_eq!(a.field_i64("i").unwrap(), vec![-300, -299]);
        assert_eq!(a.field_f64("i").unwrap(), vec![-300.0, -299.0]);
        // Type mismatches and missing fields are errors that name the field.
        let e = a.field_f64("s").unwrap_err().to_string();
        assert!(e.contains("\"s\"") && e.contains("<U2"), "{e}");
        let e = a.field_bytes_str("x").unwrap_err().to_string();
        assert!(e.contains("\"x\"") && e.contains("not a string"), "{e}");
        let e = a.field_u64("i").unwrap_err().to_string();
        assert!(e.contains("negative"), "{e}");
        let e = a.field_u64("x").unwrap_err().to_string();
        assert!(e.contains("\"x\""), "{e}");
        let e = a.field_f64("missing").unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("blob/path"), "{e}");
        assert!(a.to_f64().is_err());
        // A .cs file built on it: '>' stripped.
        let cs = CsFile::from_bytes(&structured_file(version)).unwrap();
        assert_eq!(cs.blob_paths().unwrap(), vec!["a/b.mrc", "cé"]);
        assert_eq!(cs.blob_shape().unwrap(), None);
        assert_eq!(cs.pixel_sizes().unwrap(), None);
    }
}

#[test]
fn plain_arrays_c_and_fortran_order() {
    let vals: Vec<f32> = (0..6).map(|v| v as f32).collect();
    let c: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let a = NpyArray::from_bytes(&npy(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        &c,
    ))
    .unwrap();
    assert_eq!(a.shape(), [2, 3]);
    assert_eq!(a.n_rows(), 2);
    assert!(a.field_names().is_empty());
    assert!(!a.has_field("x"));
    assert_eq!(a.to_f64().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    // Fortran order: column-major storage of the same 2x3 matrix [[0,1,2],[3,4,5]].
    let f_order = [0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0];
    let f: Vec<u8> = f_order.iter().flat_map(|v| v.to_le_bytes()).collect();
    let a = NpyArray::from_bytes(&npy(
        2,
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
        &f,
    ))
    .unwrap();
    assert!(a.fortran_order());
    assert_eq!(a.to_f64().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    // 3-D Fortran: element (i,j,k) stored at i + 2j + 4k for shape (2,2,3).
    let shape = [2usize, 2, 3];
    let mut stored = [0f64; 12];
    for i in 0..2 {
        for j in 0..2 {
            for k in 0..3 {
                stored[i + 2 * j + 4 * k] = (i * 6 + j * 3 + k) as f64;
            }
        }
    }
    let bytes: Vec<u8> = stored.iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = NpyArray::from_bytes(&npy(
        1,
        &format!(
            "{{'descr': '>f8', 'fortran_order': True, 'shape': ({}, {}, {}), }}",
            shape[0], shape[1], shape[2]
        ),
        &bytes,
    ))
    .unwrap();
    assert_eq!(
        a.to_f64().unwrap(),
        (0..12).map(|v| v as f64).collect::<Vec<_>>()
    );
    // Big-endian unsigned ints, 0-d arrays, plain strings.
    let a = NpyArray::from_bytes(&npy(
        1,
        "{'descr': '>u4', 'fortran_order': False, 'shape': (2,), }",
        &[0, 0, 1, 0, 255, 255, 255, 255],
    ))
    .unwrap();
    assert_eq!(a.to_f64().unwrap(), vec![256.0, 4294967295.0]);
    let a = NpyArray::from_bytes(&npy(
        1,
        "{'descr': '<i8', 'fortran_order': False, 'shape': (), }",
        &(-5i64).to_le_bytes(),
    ))
    .unwrap();
    assert_eq!(a.n_rows(), 1);
    assert_eq!(a.to_f64().unwrap(), vec![-5.0]);
    let a = NpyArray::from_bytes(&npy(
        1,
        "{'descr': '|S3', 'fortran_order': False, 'shape': (2,), }",
        b"ab\0xyz",
    ))
    .unwrap();
    assert_eq!(a.to_strings().unwrap(), vec!["ab", "xyz"]);
    let a = NpyArray::from_bytes(&npy(
        1,
        "{'descr': '<f2', 'fortran_order': False, 'shape': (1,), }",
        &half_one(),
    ))
    .unwrap();
    assert_eq!(a.to_f64().unwrap(), vec![1.0]);
    // An empty array.
    let a = NpyArray::from_bytes(&npy(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }",
        &[],
    ))
    .unwrap();
    assert_eq!(a.n_rows(), 0);
    assert!(a.to_f64().unwrap().is_empty());
}

fn half_one() -> [u8; 2] {
    0x3c00u16.to_le_bytes()
}

fn npy_err(bytes: &[u8]) -> String {
    match NpyArray::from_bytes(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_npy_input_is_an_error_not_a_panic() {
    let good = structured_file(1);
    // Every truncation is an error.
    for n in 0..good.len() {
        let e = npy_err(&good[..n]);
        assert!(!e.is_empty());
    }
    let e = npy_err(&good[..5]);
    assert!(e.contains("truncated"), "{e}");
    let e = npy_err(b"hello");
    assert!(e.contains("not a .npy file"), "{e}");
    let e = npy_err(b"");
    assert!(e.contains("truncated"), "{e}");
    let e = npy_err(&good[..good.len() - 1]);
    assert!(
        e.contains("data length mismatch") && e.contains("102") && e.contains("101"),
        "{e}"
    );
    let mut long = good.clone();
    long.push(0);
    let e = npy_err(&long);
    assert!(
        e.contains("data length mismatch") && e.contains("103"),
        "{e}"
    );
    let mut magic = good.clone();
    magic[1] = b'X';
    let e = npy_err(&magic);
    assert!(e.contains("not a .npy file"), "{e}");
    let e = npy_err(&npy(1, "[1, 2]", &[]));
    assert!(e.contains("not a Python dict"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': '<f4', 'shape': (1,), 'fortran_order': False",
        &[0; 4],
    ));
    assert!(e.contains("valid Python literal"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
        &[0; 8],
    ));
    assert!(e.contains("object dtype"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': [('a', '|O')], 'fortran_order': False, 'shape': (1,), }",
        &[0; 8],
    ));
    assert!(e.contains("object dtype") && e.contains("\"a\""), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }",
        &[],
    ));
    assert!(e.contains("overflows"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': '|u1', 'fortran_order': False, 'shape': (4611686018427387904,), }",
        &[],
    ));
    assert!(
        e.contains("data length mismatch") && e.contains("4611686018427387904"),
        "{e}"
    );
    let e = npy_err(&npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", &[]));
    assert!(e.contains("overflows"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }",
        &[],
    ));
    assert!(e.contains("impossible dimension"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': [('a', [('b', '<f4')])], 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    ));
    assert!(e.contains("nested"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': [('a', '<f4'), ('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
        &[0; 8],
    ));
    assert!(e.contains("twice"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }",
        &[0; 4],
    ));
    assert!(e.contains("fortran_order"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    ));
    assert!(e.contains("'descr'"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': '<q9', 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    ));
    assert!(e.contains("unsupported type"), "{e}");
    let mut v4 = good.clone();
    v4[6] = 4;
    let e = npy_err(&v4);
    assert!(e.contains("version 4"), "{e}");
    let mut hl = good.clone();
    hl[8] = 0xff;
    hl[9] = 0xff;
    let e = npy_err(&hl);
    assert!(e.contains("truncated") && e.contains("65535"), "{e}");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let e = npy_err(&npy(2, &deep, &[]));
    assert!(e.contains("nested too deeply"), "{e}");
    // Not a structured array, or not 1-D: not a .cs file.
    let e = CsFile::from_bytes(&npy(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("structured"), "{e}");
    // Errors from files name the file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.cs");
    std::fs::write(&p, &good[..20]).unwrap();
    let e = CsFile::read(&p).unwrap_err().to_string();
    assert!(e.contains("bad.cs"), "{e}");
    let e = NpyArray::read(dir.path().join("absent.npy"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.npy"), "{e}");
}

/// Headers that claim far more elements than the bytes hold must fail fast, without
/// allocating for the claimed size (the fuzz target `cs` runs these paths too).
#[test]
fn adversarial_shapes_do_not_allocate() {
    // Zero-size items: any element count would "match" an empty data section.
    let e = npy_err(&npy(
        1,
        "{'descr': '|V0', 'fortran_order': False, 'shape': (4611686018427387904,), }",
        &[],
    ));
    assert!(e.contains("zero-size"), "{e}");
    let e = npy_err(&npy(
        1,
        "{'descr': [], 'fortran_order': False, 'shape': (1000000000000,), }",
        &[],
    ));
    assert!(e.contains("zero-size"), "{e}");
    // A zero-byte string field with a huge sub-array shape next to a 1-byte field.
    let a = NpyArray::from_bytes(&npy(
        1,
        "{'descr': [('s', '|S0', (1099511627776,)), ('b', '|u1')], 'fortran_order': False, 'shape': (2,), }",
        &[1, 2],
    ))
    .unwrap();
    assert_eq!(a.field_f64("b").unwrap(), vec![1.0, 2.0]);
    let e = a.field_bytes_str("s").unwrap_err().to_string();
    assert!(e.contains("zero-length"), "{e}");
    assert!(a.field_f64("s").is_err());
    // Huge sub-array widths overflow the item size.
    let e = npy_err(&npy(1, "{'descr': [('v', '<f8', (4611686018427387904, 4))], 'fortran_order': False, 'shape': (0,), }", &[]));
    assert!(e.contains("overflow"), "{e}");
}

// ---------------------------------------------------------------------------------------
// numpy interop (skipped without a Python that has numpy and starfile)
// ---------------------------------------------------------------------------------------

fn python() -> Option<String> {
    common::python_with(&["starfile", "numpy"])
}

const WRITE_PY: &str = r#"
import sys, numpy as np
from numpy.lib import format as fmt
out = sys.argv[1]
dt = np.dtype([('uid', '<u8'), ('blob/path', '|S8'), ('x', '>f8'), ('pose', '<f4', (3,)),
               ('name', '<U4'), ('k', '>i2')], align=True)
a = np.zeros(3, dtype=dt)
a['uid'] = [7, 8, 9]
a['blob/path'] = [b'>s1.mrc', b'abcdefgh', b'']
a['x'] = [0.1, -2.5e300, np.pi]
a['pose'] = np.arange(9, dtype=np.float32).reshape(3, 3) / 4
a['name'] = ['ab', 'wxyz', 'é']
a['k'] = [-1, 2, -32768]
np.save(out + '/s.npy', a)
with open(out + '/s_v2.npy', 'wb') as f:
    fmt.write_array(f, a, version=(2, 0))
b = np.asfortranarray(np.arange(24, dtype='<f4').reshape(2, 3, 4))
np.save(out + '/f.npy', b)
np.save(out + '/be.npy', np.arange(5, dtype='>i8') - 2)
np.save(out + '/u.npy', np.array(['x', 'yz'], dtype='<U2'))
c = np.zeros(2, dtype=[('é', '<f4')])
c['é'] = [1.5, 2.5]
with open(out + '/v3.npy', 'wb') as f:
    fmt.write_array(f, c, version=(3, 0))
"#;

#[test]
fn numpy_written_files_are_read() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&py)
        .args(["-c", WRITE_PY])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, version) in [("s.npy", (1, 0)), ("s_v2.npy", (2, 0))] {
        let a = NpyArray::read(dir.path().join(name)).unwrap();
        assert_eq!(a.version(), version);
        assert_eq!(a.n_rows(), 3);
        // align=True adds padding entries, which are not fields.
        assert_eq!(
            a.field_names(),
            ["uid", "blob/path", "x", "pose", "name", "k"]
        );
        assert_eq!(a.field_u64("uid").unwrap(), vec![7, 8, 9]);
        assert_eq!(
            a.field_bytes_str("blob/path").unwrap(),
            vec![">s1.mrc", "abcdefgh", ""]
        );
        assert_eq!(
            a.field_f64("x").unwrap(),
            vec![0.1, -2.5e300, std::f64::consts::PI]
        );
        assert_eq!(
            a.field_f64("pose").unwrap(),
            (0..9).map(|v| v as f64 / 4.0).collect::<Vec<_>>()
        );
        assert_eq!(a.field_bytes_str("name").unwrap(), vec!["ab", "wxyz", "é"]);
        assert_eq!(a.field_i64("k").unwrap(), vec![-1, 2, -32768]);
        let cs = CsFile::read(dir.path().join(name)).unwrap();
        assert_eq!(cs.blob_paths().unwrap()[0], "s1.mrc");
        assert_eq!(cs.poses("pose").unwrap()[2], [1.5, 1.75, 2.0]);
    }
    let f = NpyArray::read(dir.path().join("f.npy")).unwrap();
    assert!(f.fortran_order());
    assert_eq!(f.shape(), [2, 3, 4]);
    assert_eq!(
        f.to_f64().unwrap(),
        (0..24).map(|v| v as f64).collect::<Vec<_>>()
    );
    let be = NpyArray::read(dir.path().join("be.npy")).unwrap();
    assert_eq!(be.to_f64().unwrap(), vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
    let u = NpyArray::read(dir.path().join("u.npy")).unwrap();
    assert_eq!(u.to_strings().unwrap(), vec!["x", "yz"]);
    let v3 = NpyArray::read(dir.path().join("v3.npy")).unwrap();
    assert_eq!(v3.version(), (3, 0));
    assert_eq!(v3.field_f64("é").unwrap(), vec![1.5, 2.5]);
}
