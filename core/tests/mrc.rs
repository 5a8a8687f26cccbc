//! Tests of `recovar_core::io::mrc`: the shared fixtures (cryoDRGN test data, cryoDRGN
//! oracle outputs, recovar's small test dataset), synthetic files of every mode / byte
//! order / axis mapping built here byte by byte, malformed input, and interoperability with
//! Python `mrcfile` when such a Python is available.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rayon::prelude::*;
use recovar_core::io::mrc::{
    read_header, read_volume, read_volume_bytes, write_stack, write_volume, Mode, MrcHeader,
    MrcStack, StackWriter, Volume, IMOD_STAMP,
};

// ---------------------------------------------------------------------------------------
// Fixture locations

/// `/work/shared/data` seen from this crate: the repository root's `../shared/data`.
fn data_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    assert!(
        root.is_dir(),
        "test data folder {} is missing: these tests need the shared fixtures \
         (cryodrgn_fixtures, cryodrgn_oracles, recovar_small) next to the repository",
        root.display()
    );
    root
}

fn fixture(rel: &str) -> PathBuf {
    let p = data_root().join(rel);
    assert!(p.is_file(), "fixture {} is missing", p.display());
    p
}

fn collect_mrc_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_mrc_files(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("mrc" | "mrcs" | "sums" | "counts")
        ) {
            out.push(p);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Shared fixtures

#[test]
fn mrc_every_fixture_opens() {
    let root = data_root();
    let mut files = Vec::new();
    for d in ["cryodrgn_fixtures", "cryodrgn_oracles", "recovar_small"] {
        collect_mrc_files(&root.join(d), &mut files);
    }
    let names: BTreeSet<String> = files
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    for must in [
        "cryodrgn_fixtures/toy_datadir/toy_images_a.mrcs",
        "cryodrgn_oracles/hand.down32.mrcs",
        "cryodrgn_oracles/hand-vol.down32.mrc",
        "cryodrgn_oracles/toy_projections.down16.mrcs",
        "cryodrgn_oracles/backproject_hand/backproject.sums",
        "cryodrgn_oracles/backproject_toy_ctf/backproject.counts",
        "recovar_small/grid32/reference_pipeline_output/output/volumes/mean.mrc",
        "recovar_small/particles.64.mrcs",
    ] {
        assert!(names.contains(must), "{must} not found among the fixtures");
    }
    assert!(files.len() >= 90, "only {} MRC files found", files.len());
    for p in &files {
        let h = read_header(p).unwrap_or_else(|e| panic!("{e}"));
        assert!(!h.big_endian, "{}", p.display());
        assert_eq!(h.mapcrs, [1, 2, 3], "{}", p.display());
        let vol = read_volume(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(vol.shape, [h.nz, h.ny, h.nx], "{}", p.display());
        assert!(
            vol.data.iter().all(|v| v.is_finite()),
            "{}: non-finite value",
            p.display()
        );
        // The in-memory reader agrees with the file reader.
        let bytes = fs::read(p).unwrap();
        assert_eq!(read_volume_bytes(&bytes).unwrap(), vol, "{}", p.display());
        // Every file also opens as a stack, and the stack holds the same numbers.
        let stack = MrcStack::open(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stack.len(), h.nz);
        assert_eq!(stack.image_shape(), (h.ny, h.nx));
        assert_eq!(stack.read_all().unwrap(), vol.data, "{}", p.display());
    }
}

/// (relative path, nx, ny, nz, mode, voxel size along X or None)
type Expected = (&'static str, usize, usize, usize, Mode, Option<f32>);

const EXPECTED: &[Expected] = &[
    (
        "cryodrgn_fixtures/hand.mrcs",
        64,
        64,
        100,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/hand.5.mrcs",
        64,
        64,
        5,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/hand_tilt.mrcs",
        64,
        64,
        100,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/hand-vol.mrc",
        64,
        64,
        64,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/toy_projections.mrcs",
        30,
        30,
        1000,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/toy_projections.mrc",
        30,
        30,
        1000,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/toy_projections_0-999.mrcs",
        30,
        30,
        1000,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/toy_datadir/toy_images_a.mrcs",
        30,
        30,
        100,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/toy_datadir/toy_images_b.mrcs",
        30,
        30,
        900,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/toymodel_small_nocenter.mrc",
        30,
        30,
        30,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/relion31.mrcs",
        256,
        256,
        5,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/empiar_10076_7.mrc",
        320,
        320,
        7,
        Mode::Float32,
        None,
    ),
    (
        "cryodrgn_fixtures/ay19102021_L3_position6_ribo_it09_bin8_1.82A.mrcs",
        64,
        64,
        220,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_fixtures/50S-vol.mrc",
        32,
        32,
        128,
        Mode::Float32,
        Some(4.0),
    ),
    (
        "cryodrgn_fixtures/spike-vol.mrc",
        16,
        16,
        128,
        Mode::Float32,
        Some(8.0),
    ),
    (
        "cryodrgn_oracles/hand.down32.mrcs",
        32,
        32,
        100,
        Mode::Float32,
        Some(2.0),
    ),
    (
        "cryodrgn_oracles/hand-vol.down32.mrc",
        32,
        32,
        32,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_oracles/toy_projections.down16.mrcs",
        16,
        16,
        1000,
        Mode::Float32,
        Some(0.062499),
    ),
    (
        "cryodrgn_oracles/backproject_hand/backproject.mrc",
        64,
        64,
        64,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_oracles/backproject_hand/backproject.sums",
        65,
        65,
        65,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_oracles/backproject_toy_ctf/backproject.counts",
        31,
        31,
        31,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "cryodrgn_oracles/backproject_toy_trans_ctf/half_map_a.mrc",
        30,
        30,
        30,
        Mode::Float32,
        Some(1.0),
    ),
    (
        "recovar_small/particles.64.mrcs",
        64,
        64,
        1000,
        Mode::Float16,
        Some(8.5),
    ),
    (
        "recovar_small/gt_vol0000.mrc",
        64,
        64,
        64,
        Mode::Float32,
        None,
    ),
    (
        "recovar_small/gt_vol0001.mrc",
        64,
        64,
        64,
        Mode::Float32,
        None,
    ),
    (
        "recovar_small/gt_vol0002.mrc",
        64,
        64,
        64,
        Mode::Float32,
        None,
    ),
    (
        "recovar_small/gt_mean.mrc",
        64,
        64,
        64,
        Mode::Float32,
        Some(8.5),
    ),
    (
        "recovar_small/grid32/particles.32.mrcs",
        32,
        32,
        1000,
        Mode::Float16,
        Some(17.0),
    ),
    (
        "recovar_small/grid32/gt_vol0000.32.mrc",
        32,
        32,
        32,
        Mode::Float32,
        Some(17.0),
    ),
    (
        "recovar_small/grid32/reference_pipeline_output/output/volumes/mean.mrc",
        32,
        32,
        32,
        Mode::Float32,
        Some(17.0),
    ),
    (
        "recovar_small/grid32/reference_pipeline_output/output/volumes/eigen_pos0049.mrc",
        32,
        32,
        32,
        Mode::Float32,
        Some(17.0),
    ),
];

#[test]
fn mrc_fixture_headers_match_readmes() {
    for &(rel, nx, ny, nz, mode, vs) in EXPECTED {
        let p = fixture(rel);
        let h = read_header(&p).unwrap();
        assert_eq!((h.nx, h.ny, h.nz, h.mode), (nx, ny, nz, mode), "{rel}");
        assert_eq!(h.data_offset(), 1024, "{rel}");
        let stack = MrcStack::open(&p).unwrap();
        match vs {
            Some(v) => {
                let got = stack
                    .voxel_size()
                    .unwrap_or_else(|| panic!("{rel}: no voxel size"));
                assert!(
                    (got - v).abs() < 1e-5,
                    "{rel}: voxel size {got}, expected {v}"
                );
                assert!((h.voxel_size_x().unwrap() - v).abs() < 1e-5);
            }
            None => {
                assert_eq!(stack.voxel_size(), None, "{rel}");
                assert_eq!(h.voxel_size(), None, "{rel}");
            }
        }
    }
    // Volume-level checks named in the READMEs.
    let gt = read_volume(fixture("recovar_small/gt_vol0000.mrc")).unwrap();
    assert_eq!((gt.shape, gt.voxel_size), ([64, 64, 64], 0.0));
    let s50 = read_volume(fixture("cryodrgn_fixtures/50S-vol.mrc")).unwrap();
    assert_eq!((s50.shape, s50.voxel_size), ([128, 32, 32], 4.0));
    let e = read_header(fixture("cryodrgn_fixtures/empiar_10076_7.mrc")).unwrap();
    assert_eq!(e.cella, [0.0; 3]);
    let p = read_header(fixture("recovar_small/particles.64.mrcs")).unwrap();
    assert_eq!(
        (p.mode_number, p.ispg, p.machst),
        (12, 1, [0x44, 0x44, 0, 0])
    );
    assert_eq!(p.voxel_size(), Some([8.5, 8.5, 8.5]));
    // Old-style headers without machine stamp or `MAP `.
    let h5 = read_header(fixture("cryodrgn_fixtures/hand.5.mrcs")).unwrap();
    assert_eq!((h5.machst, h5.map_id), ([0; 4], [0; 4]));
    assert_eq!((h5.dmin, h5.dmax, h5.dmean), (-1.0, -2.0, -3.0));
    let hand = read_header(fixture("cryodrgn_fixtures/hand.mrcs")).unwrap();
    assert_eq!((hand.machst, &hand.map_id), ([0x44, 0x41, 0, 0], b"MAP "));
}

#[test]
fn mrc_hand5_is_first_five_of_hand() {
    let hand = MrcStack::open(fixture("cryodrgn_fixtures/hand.mrcs")).unwrap();
    let hand5 = MrcStack::open(fixture("cryodrgn_fixtures/hand.5.mrcs")).unwrap();
    assert_eq!(hand5.len(), 5);
    let mut a = vec![0f32; 5 * 64 * 64];
    hand.read_images(&[0, 1, 2, 3, 4], &mut a).unwrap();
    let b = hand5.read_all().unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(a.iter().any(|&v| v != 0.0));
}

#[test]
fn mrc_particles64_float16_decode() {
    let p = fixture("recovar_small/particles.64.mrcs");
    let stack = MrcStack::open(&p).unwrap();
    assert_eq!((stack.len(), stack.image_shape()), (1000, (64, 64)));
    let raw = fs::read(&p).unwrap();
    let mut img = vec![0f32; 64 * 64];
    for index in [0usize, 1, 517, 999] {
        stack.read_image(index, &mut img).unwrap();
        assert!(img.iter().all(|v| v.is_finite()));
        assert!(img.iter().any(|&v| v != 0.0));
        for k in [0usize, 1, 63, 64, 2080, 4095] {
            let off = 1024 + (index * 64 * 64 + k) * 2;
            let bits = u16::from_le_bytes([raw[off], raw[off + 1]]);
            // Manual IEEE half decode, independent of the `half` crate.
            let sign = if bits & 0x8000 != 0 { -1.0f64 } else { 1.0 };
            let exp = ((bits >> 10) & 0x1f) as i32;
            let frac = (bits & 0x3ff) as f64;
            let expected = if exp == 0 {
                sign * frac * 2f64.powi(-24)
            } else {
                assert_ne!(exp, 31, "inf/nan in fixture");
                sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15)
            };
            assert_eq!(img[k] as f64, expected, "image {index} pixel {k}");
        }
    }
}

#[test]
fn mrc_stack_reads_are_consistent() {
    let stack = MrcStack::open(fixture("cryodrgn_fixtures/toy_projections.mrcs")).unwrap();
    let all = stack.read_all().unwrap();
    let n = 900;
    let image = |i: usize| &all[i * n..(i + 1) * n];
    let indices = [3usize, 4, 5, 0, 0, 999, 998, 2, 3];
    let mut batch = vec![0f32; indices.len() * n];
    stack.read_images(&indices, &mut batch).unwrap();
    for (j, &i) in indices.iter().enumerate() {
        assert_eq!(&batch[j * n..(j + 1) * n], image(i));
    }
    // From many rayon threads at once.
    let ok = (0..1000usize).into_par_iter().all(|i| {
        let mut out = vec![0f32; n];
        stack.read_image(i, &mut out).is_ok() && out == image(i)
    });
    assert!(ok);
    let mut empty: Vec<f32> = Vec::new();
    stack.read_images(&[], &mut empty).unwrap();
}

// ---------------------------------------------------------------------------------------
// 2. Synthetic files

/// A header built byte by byte, independently of the reader.
#[derive(Clone)]
struct Hdr {
    dims: [i32; 3],
    mode: i32,
    big: bool,
    machst: Option<[u8; 4]>,
    mxyz: [i32; 3],
    cella: [f32; 3],
    mapcrs: [i32; 3],
    nsymbt: i32,
    nversion: i32,
    imod_flags: Option<i32>,
    origin: [f32; 3],
}

impl Hdr {
    fn new(dims: [i32; 3], mode: i32) -> Self {
        Hdr {
            dims,
            mode,
            big: false,
            machst: None,
            mxyz: dims,
            cella: [
                dims[0] as f32 * 1.5,
                dims[1] as f32 * 1.5,
                dims[2] as f32 * 1.5,
            ],
            mapcrs: [1, 2, 3],
            nsymbt: 0,
            nversion: 20140,
            imod_flags: None,
            origin: [0.0; 3],
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut h = vec![0u8; 1024];
        let big = self.big;
        let mut put = |off: usize, w: [u8; 4]| h[off..off + 4].copy_from_slice(&w);
        let i = |v: i32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let f = |v: f32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        for k in 0..3 {
            put(4 * k, i(self.dims[k]));
            put(28 + 4 * k, i(self.mxyz[k]));
            put(40 + 4 * k, f(self.cella[k]));
            put(52 + 4 * k, f(90.0));
            put(64 + 4 * k, i(self.mapcrs[k]));
            put(196 + 4 * k, f(self.origin[k]));
        }
        put(12, i(self.mode));
        put(92, i(self.nsymbt));
        put(108, i(self.nversion));
        if let Some(flags) = self.imod_flags {
            put(152, i(IMOD_STAMP));
            put(156, i(flags));
        }
        put(208, *b"MAP ");
        let stamp = self.machst.unwrap_or(if big {
            [0x11, 0x11, 0, 0]
        } else {
            [0x44, 0x44, 0, 0]
        });
        put(212, stamp);
        h
    }
}

/// Encode `values` (which must be representable) in the given mode and byte order.
fn encode(values: &[f32], mode: i32, unsigned8: bool, big: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in values {
        match mode {
            0 if unsigned8 => out.push(v as u8),
            0 | 17 => out.push(v as i8 as u8),
            1 => out.extend(if big {
                (v as i16).to_be_bytes()
            } else {
                (v as i16).to_le_bytes()
            }),
            2 => out.extend(if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }),
            6 => out.extend(if big {
                (v as u16).to_be_bytes()
            } else {
                (v as u16).to_le_bytes()
            }),
            12 => {
                let h = half::f16::from_f32(v);
                assert_eq!(h.to_f32(), v, "test value not exact in f16");
                out.extend(if big {
                    h.to_be_bytes()
                } else {
                    h.to_le_bytes()
                })
            }
            _ => unreachable!(),
        }
    }
    out
}

fn file_bytes(h: &Hdr, data: &[u8]) -> Vec<u8> {
    let mut b = h.bytes();
    // Extended-header filler (capped: some tests announce an impossible length).
    b.extend((0..h.nsymbt.clamp(0, 1 << 16)).map(|k| (k * 7 % 251) as u8));
    b.extend_from_slice(data);
    b
}

fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn mrc_every_mode_both_byte_orders() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [5, 3, 2];
    let n = 30;
    // (label, mode, nversion, imod flags, expected Mode, values)
    let signed8: Vec<f32> = (0..n).map(|k| (k as f32 * 8.5).floor() - 128.0).collect();
    let unsigned8: Vec<f32> = (0..n).map(|k| (k * 8 + 15) as f32).collect();
    let int16: Vec<f32> = (0..n).map(|k| (k as f32 - 15.0) * 2000.0).collect();
    let uint16: Vec<f32> = (0..n).map(|k| k as f32 * 2100.0 + 7.0).collect();
    let float: Vec<f32> = (0..n).map(|k| (k as f32 - 10.0) * 0.375).collect();
    type Case<'a> = (&'a str, i32, i32, Option<i32>, Mode, &'a [f32]);
    let cases: Vec<Case> = vec![
        ("mode0-mrc2014-signed", 0, 20140, None, Mode::Int8, &signed8),
        ("mode0-imod-signed", 0, 20140, Some(1), Mode::Int8, &signed8),
        (
            "mode0-imod-unsigned",
            0,
            20140,
            Some(0),
            Mode::UInt8,
            &unsigned8,
        ),
        ("mode0-old-unsigned", 0, 0, None, Mode::UInt8, &unsigned8),
        ("mode1", 1, 20140, None, Mode::Int16, &int16),
        ("mode2", 2, 20140, None, Mode::Float32, &float),
        ("mode6", 6, 20140, None, Mode::UInt16, &uint16),
        ("mode12", 12, 20140, None, Mode::Float16, &float),
        ("mode17", 17, 20140, None, Mode::Int8, &signed8),
    ];
    for (label, mode, nversion, imod, expected_mode, values) in cases {
        for big in [false, true] {
            for zero_stamp in [false, true] {
                let mut h = Hdr::new(dims, mode);
                h.big = big;
                h.nversion = nversion;
                h.imod_flags = imod;
                if zero_stamp {
                    h.machst = Some([0; 4]);
                }
                let unsigned = expected_mode == Mode::UInt8;
                let bytes = file_bytes(&h, &encode(values, mode, unsigned, big));
                let what = format!("{label} big={big} zero_stamp={zero_stamp}");
                let header = MrcHeader::parse(&bytes).unwrap();
                assert_eq!(header.big_endian, big, "{what}");
                assert_eq!(header.mode, expected_mode, "{what}");
                assert_eq!(header.mode_number, mode, "{what}");
                let vol = read_volume_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(&vol.data, values, "{what}");
                assert_eq!(vol.shape, [2, 3, 5]);
                assert_eq!(vol.voxel_size, 1.5);
                let p = write_tmp(
                    dir.path(),
                    &format!("{label}-{big}-{zero_stamp}.mrcs"),
                    &bytes,
                );
                assert_eq!(read_volume(&p).unwrap(), vol, "{what}");
                let stack = MrcStack::open(&p).unwrap();
                let mut img = vec![0f32; 15];
                stack.read_image(1, &mut img).unwrap();
                assert_eq!(&img[..], &values[15..], "{what}");
            }
        }
    }
}

#[test]
fn mrc_extended_header_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..24).map(|v| v as f32 - 4.0).collect();
    for big in [false, true] {
        let mut h = Hdr::new([4, 3, 2], 2);
        h.nsymbt = 200;
        h.big = big;
        h.origin = [10.0, -20.0, 30.5];
        let bytes = file_bytes(&h, &encode(&values, 2, false, big));
        let header = MrcHeader::parse(&bytes).unwrap();
        assert_eq!((header.nsymbt, header.data_offset()), (200, 1224));
        let vol = read_volume_bytes(&bytes).unwrap();
        assert_eq!(vol.data, values);
        assert_eq!(vol.origin, [10.0, -20.0, 30.5]);
        let p = write_tmp(dir.path(), "ext.mrcs", &bytes);
        let stack = MrcStack::open(&p).unwrap();
        assert_eq!(stack.read_all().unwrap(), values);
        assert_eq!(read_header(&p).unwrap().data_offset(), 1224);
        // Missing one byte of data is caught although the extended header is long.
        let p2 = write_tmp(dir.path(), "ext-short.mrcs", &bytes[..bytes.len() - 1]);
        let err = MrcStack::open(&p2).unwrap_err().to_string();
        assert!(
            err.contains("truncated") && err.contains("ext-short.mrcs"),
            "{err}"
        );
    }
}

#[test]
fn mrc_all_axis_permutations_give_the_logical_array() {
    // Logical array L[z][y][x] with X = 4, Y = 3, Z = 2.
    let ext = [4usize, 3, 2];
    let logical = |x: usize, y: usize, z: usize| (100 * z + 10 * y + x) as f32;
    let expected: Vec<f32> = (0..2)
        .flat_map(|z| (0..3).flat_map(move |y| (0..4).map(move |x| logical(x, y, z))))
        .collect();
    let perms = [
        [1, 2, 3],
        [1, 3, 2],
        [2, 1, 3],
        [2, 3, 1],
        [3, 1, 2],
        [3, 2, 1],
    ];
    for map in perms {
        // Column/row/section extents are those of the logical axes they run along.
        let fd = [ext[map[0] - 1], ext[map[1] - 1], ext[map[2] - 1]];
        let mut stored = Vec::new();
        for s in 0..fd[2] {
            for r in 0..fd[1] {
                for c in 0..fd[0] {
                    let mut xyz = [0usize; 3];
                    xyz[map[0] - 1] = c;
                    xyz[map[1] - 1] = r;
                    xyz[map[2] - 1] = s;
                    stored.push(logical(xyz[0], xyz[1], xyz[2]));
                }
            }
        }
        let mut h = Hdr::new([fd[0] as i32, fd[1] as i32, fd[2] as i32], 2);
        h.mapcrs = [map[0] as i32, map[1] as i32, map[2] as i32];
        h.mxyz = [4, 3, 2];
        h.cella = [8.0, 6.0, 4.0];
        let vol = read_volume_bytes(&file_bytes(&h, &encode(&stored, 2, false, false))).unwrap();
        assert_eq!(vol.shape, [2, 3, 4], "map {map:?}");
        assert_eq!(vol.data, expected, "map {map:?}");
        assert_eq!(vol.voxel_size, 2.0);
    }
}

#[test]
fn mrc_transposed_stack_and_bad_stack_mapping() {
    let dir = tempfile::tempdir().unwrap();
    // 4 logical images of ny = 3 rows, nx = 5 columns.
    let (n, ny, nx) = (4usize, 3usize, 5usize);
    let logical = |i: usize, y: usize, x: usize| (100 * i + 10 * y + x) as f32;
    let mut stored = Vec::new();
    for i in 0..n {
        for x in 0..nx {
            for y in 0..ny {
                stored.push(logical(i, y, x)); // rows run along X, columns along Y
            }
        }
    }
    let mut h = Hdr::new([ny as i32, nx as i32, n as i32], 2);
    h.mapcrs = [2, 1, 3];
    h.mxyz = [5, 3, 1];
    h.cella = [10.0, 6.0, 2.0];
    let p = write_tmp(
        dir.path(),
        "t.mrcs",
        &file_bytes(&h, &encode(&stored, 2, false, false)),
    );
    let stack = MrcStack::open(&p).unwrap();
    assert_eq!(stack.image_shape(), (3, 5));
    assert_eq!(stack.voxel_size(), Some(2.0));
    let expected: Vec<f32> = (0..n)
        .flat_map(|i| (0..ny).flat_map(move |y| (0..nx).map(move |x| logical(i, y, x))))
        .collect();
    assert_eq!(stack.read_all().unwrap(), expected);
    let mut two = vec![0f32; 2 * ny * nx];
    stack.read_images(&[3, 1], &mut two).unwrap();
    assert_eq!(&two[..15], &expected[45..60]);
    assert_eq!(&two[15..], &expected[15..30]);
    // The volume reader agrees.
    let vol = read_volume(&p).unwrap();
    assert_eq!((vol.shape, &vol.data), ([4, 3, 5], &expected));

    // maps != 3: not a stack (but still a volume).
    h.mapcrs = [1, 3, 2];
    let p2 = write_tmp(
        dir.path(),
        "bad.mrcs",
        &file_bytes(&h, &encode(&stored, 2, false, false)),
    );
    let err = MrcStack::open(&p2).unwrap_err().to_string();
    assert!(
        err.contains("maps = 3") && err.contains("bad.mrcs"),
        "{err}"
    );
    assert!(read_volume(&p2).is_ok());

    // All-zero mapping (old files) means 1,2,3.
    h.mapcrs = [0, 0, 0];
    let p3 = write_tmp(
        dir.path(),
        "zero.mrcs",
        &file_bytes(&h, &encode(&stored, 2, false, false)),
    );
    let stack = MrcStack::open(&p3).unwrap();
    assert_eq!(stack.header().mapcrs, [1, 2, 3]);
    assert_eq!(stack.image_shape(), (5, 3));
    assert_eq!(stack.read_all().unwrap(), stored);
}

#[test]
fn mrc_volume_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let shape = [3usize, 4, 5];
    let data: Vec<f32> = (0..60u32)
        .map(|k| f32::from_bits(0x3f80_0000 ^ (k.wrapping_mul(2_654_435_761u32) >> 9)) - 1.3)
        .collect();
    let mut vol = Volume::new(data, shape, 2.5).unwrap();
    vol.origin = [1.0, 2.0, 3.0];
    let p = dir.path().join("v.mrc");
    write_volume(&p, &vol).unwrap();
    let back = read_volume(&p).unwrap();
    assert_eq!(back.shape, shape);
    assert!(back
        .data
        .iter()
        .zip(&vol.data)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!((back.voxel_size, back.origin), (2.5, [1.0, 2.0, 3.0]));
    let h = read_header(&p).unwrap();
    assert_eq!((h.nx, h.ny, h.nz, h.mode_number, h.ispg), (5, 4, 3, 2, 1));
    assert_eq!((h.mxyz, h.cella), ([5, 4, 3], [12.5, 10.0, 7.5]));
    assert_eq!(
        (h.nversion, &h.map_id, h.machst),
        (20140, b"MAP ", [0x44, 0x44, 0, 0])
    );
    assert_eq!(h.labels, vec!["recovar-rs".to_string()]);
    assert_eq!(h.nlabl, 1);
    let min = vol.data.iter().cloned().fold(f32::INFINITY, f32::min);
    let max = vol.data.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mean = vol.data.iter().map(|&v| v as f64).sum::<f64>() / 60.0;
    let var = vol
        .data
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / 60.0;
    assert_eq!((h.dmin, h.dmax), (min, max));
    assert!((h.dmean as f64 - mean).abs() < 1e-6 && (h.rms as f64 - var.sqrt()).abs() < 1e-6);
    assert_eq!(fs::metadata(&p).unwrap().len(), 1024 + 240);
    // Only the output file is left: the temporary was renamed.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    // Bad volumes are refused.
    assert!(Volume::new(vec![0.0; 5], [1, 2, 3], 1.0).is_err());
    let bad = Volume {
        data: vec![0.0; 5],
        shape: [1, 2, 3],
        voxel_size: 1.0,
        origin: [0.0; 3],
    };
    assert!(write_volume(dir.path().join("bad.mrc"), &bad).is_err());
    let neg = Volume {
        voxel_size: -1.0,
        ..vol.clone()
    };
    assert!(write_volume(dir.path().join("neg.mrc"), &neg).is_err());
}

#[test]
fn mrc_stack_round_trip_and_streaming_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (ny, nx) = (6usize, 7usize);
    let images: Vec<f32> = (0..9 * ny * nx)
        .map(|k| ((k * 37) % 113) as f32 * 0.25 - 9.0)
        .collect();
    let p = dir.path().join("s.mrcs");
    write_stack(&p, &images, ny, nx, 1.75).unwrap();
    let stack = MrcStack::open(&p).unwrap();
    assert_eq!((stack.len(), stack.image_shape()), (9, (6, 7)));
    assert_eq!(stack.voxel_size(), Some(1.75));
    assert_eq!(stack.read_all().unwrap(), images);
    let h = stack.header();
    assert_eq!(
        (h.ispg, h.mxyz, h.cella),
        (0, [7, 6, 1], [7.0 * 1.75, 6.0 * 1.75, 1.75])
    );
    assert_eq!(h.voxel_size(), Some([1.75; 3]));
    assert_eq!(h.origin, [0.0; 3]);

    // Streaming in uneven pieces gives a byte-identical file.
    let p2 = dir.path().join("s2.mrcs");
    let mut w = StackWriter::create(&p2, ny, nx, 1.75).unwrap();
    for chunk in [0..2, 2..3, 3..9] {
        w.append(&images[chunk.start * ny * nx..chunk.end * ny * nx])
            .unwrap();
        assert!(!p2.exists(), "visible before finish");
    }
    assert!(w.append(&images[..5]).is_err(), "partial image accepted");
    assert_eq!(w.len(), 9);
    w.finish().unwrap();
    assert_eq!(fs::read(&p).unwrap(), fs::read(&p2).unwrap());

    // Dropped without finish: nothing left behind. Finished empty: error, nothing left.
    let p3 = dir.path().join("dropped.mrcs");
    {
        let mut w = StackWriter::create(&p3, ny, nx, 1.0).unwrap();
        w.append(&images[..ny * nx]).unwrap();
    }
    let p4 = dir.path().join("empty.mrcs");
    let err = StackWriter::create(&p4, ny, nx, 1.0)
        .unwrap()
        .finish()
        .unwrap_err();
    assert!(err.to_string().contains("no images"), "{err}");
    assert!(!p3.exists() && !p4.exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    assert!(StackWriter::create(dir.path().join("z.mrcs"), 0, 3, 1.0).is_err());
    assert!(StackWriter::create(dir.path().join("z.mrcs"), 3, 3, f32::NAN).is_err());
}

// ---------------------------------------------------------------------------------------
// 3. Bad input

fn err_bytes(bytes: &[u8]) -> String {
    match read_volume_bytes(bytes) {
        Ok(v) => panic!("accepted: shape {:?}", v.shape),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mrc_bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = file_bytes(
        &Hdr::new([4, 4, 2], 2),
        &encode(&[1.0; 32], 2, false, false),
    );
    let check = |name: &str, bytes: &[u8], needles: &[&str]| {
        let msg = err_bytes(bytes);
        for n in needles {
            assert!(msg.contains(n), "{name}: {msg:?} lacks {n:?}");
        }
        let p = write_tmp(dir.path(), &format!("{name}.mrc"), bytes);
        for msg in [
            read_volume(&p).unwrap_err().to_string(),
            MrcStack::open(&p).unwrap_err().to_string(),
            read_header(&p).unwrap_err().to_string(),
        ] {
            assert!(
                msg.contains(&format!("{name}.mrc")),
                "{name}: {msg:?} does not name the file"
            );
            for n in needles {
                assert!(msg.contains(n), "{name}: {msg:?} lacks {n:?}");
            }
        }
    };
    check(
        "trunc-data",
        &good[..good.len() - 64],
        &[
            "truncated",
            "expected 128 bytes",
            "4×4×2 mode 2",
            "file has 64",
        ],
    );
    check(
        "trunc-header",
        &good[..500],
        &["truncated header", "500 bytes"],
    );
    check("empty", &[], &["truncated header", "0 bytes"]);
    let bytes = |f: &dyn Fn(&mut Hdr)| {
        let mut h = Hdr::new([4, 4, 2], 2);
        f(&mut h);
        file_bytes(&h, &encode(&[1.0; 32], 2, false, false))
    };
    check("zero-nx", &bytes(&|h| h.dims[0] = 0), &["nx=0", "positive"]);
    check(
        "neg-nz",
        &bytes(&|h| h.dims[2] = -3),
        &["nz=-3", "positive"],
    );
    check(
        "absurd",
        &bytes(&|h| h.dims = [i32::MAX; 3]),
        &["too large", "overflows"],
    );
    check(
        "huge-nz",
        &bytes(&|h| h.dims = [i32::MAX, i32::MAX, 1]),
        &["truncated", "2147483647×2147483647×1"],
    );
    check("mode7", &bytes(&|h| h.mode = 7), &["unknown mode 7"]);
    check("mode3", &bytes(&|h| h.mode = 3), &["mode 3", "complex"]);
    check("mode4", &bytes(&|h| h.mode = 4), &["mode 4", "complex"]);
    check("mode16", &bytes(&|h| h.mode = 16), &["mode 16", "RGB"]);
    check("mode101", &bytes(&|h| h.mode = 101), &["mode 101", "4-bit"]);
    check(
        "bad-map",
        &bytes(&|h| h.mapcrs = [1, 1, 3]),
        &["mapc,mapr,maps = 1,1,3", "permutation"],
    );
    check(
        "bad-map4",
        &bytes(&|h| h.mapcrs = [1, 2, 4]),
        &["axis mapping"],
    );
    check("neg-ext", &bytes(&|h| h.nsymbt = -8), &["nsymbt=-8"]);
    check("big-ext", &bytes(&|h| h.nsymbt = i32::MAX), &["truncated"]);

    // Index out of range and wrong buffer sizes.
    let p = write_tmp(dir.path(), "ok.mrcs", &good);
    let stack = MrcStack::open(&p).unwrap();
    let mut img = vec![0f32; 16];
    let err = stack.read_image(2, &mut img).unwrap_err().to_string();
    assert!(
        err.contains("out of range") && err.contains("ok.mrcs"),
        "{err}"
    );
    assert!(stack.read_image(usize::MAX, &mut img).is_err());
    assert!(stack.read_images(&[0, 5], &mut [0f32; 32]).is_err());
    assert!(stack.read_image(0, &mut [0f32; 15]).is_err());
    assert!(stack.read_range(1, usize::MAX, &mut img).is_err());
    stack.read_image(1, &mut img).unwrap();

    // Missing file: an I/O error naming the path.
    let missing = dir.path().join("missing.mrcs");
    for msg in [
        MrcStack::open(&missing).unwrap_err().to_string(),
        read_volume(&missing).unwrap_err().to_string(),
    ] {
        assert!(msg.contains("missing.mrcs"), "{msg}");
    }
}

/// Inputs found by fuzzing (or written for the cases fuzzing would find): must not panic.
#[test]
fn mrc_fuzz_regressions() {
    let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0; 1023], vec![0; 1024], vec![0xff; 1024]];
    // Valid header, enormous extended header, no data.
    let mut h = Hdr::new([1, 1, 1], 0);
    h.nsymbt = i32::MAX;
    cases.push(h.bytes());
    // Mode 0 with all-zero mapping and dims that look plausible both ways.
    let mut h = Hdr::new([256, 1, 1], 0);
    h.mapcrs = [0, 0, 0];
    h.machst = Some([0; 4]);
    let mut b = h.bytes();
    b.extend(vec![7u8; 256]);
    cases.push(b);
    for c in &cases {
        let _ = MrcHeader::parse(c);
        let _ = read_volume_bytes(c);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Python `mrcfile` interoperability (skipped when no such Python is available)

fn python() -> Option<String> {
    common::python_with(&["mrcfile", "numpy"])
}

fn run_python(py: &str, script: &str, args: &[&Path]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn raw_f32(p: &Path) -> Vec<f32> {
    fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

const PY_READ: &str = r#"
import sys, io, contextlib, mrcfile, numpy as np
vol, stack, out = sys.argv[1], sys.argv[2], sys.argv[3]
for name, path in (("vol", vol), ("stack", stack)):
    with mrcfile.open(path, permissive=False) as m:
        vs = m.voxel_size
        print(name, "shape", *m.data.shape)
        print(name, "voxel", float(vs.x), float(vs.y), float(vs.z))
        print(name, "origin", float(m.header.origin.x), float(m.header.origin.y), float(m.header.origin.z))
        print(name, "kind", "volume" if m.is_volume() else "stack" if m.is_image_stack() else "other")
        print(name, "dtype", m.data.dtype.str)
        m.data.astype("<f4").tofile(out + "." + name)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ok = mrcfile.validate(path)
    print(name, "valid", ok, buf.getvalue().replace("\n", " | "))
"#;

#[test]
fn mrc_python_reads_our_files() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shape = [4usize, 5, 6];
    let vdata: Vec<f32> = (0..120).map(|k| (k as f32 * 0.37).sin() * 10.0).collect();
    let mut vol = Volume::new(vdata.clone(), shape, 2.5).unwrap();
    vol.origin = [1.0, 2.0, 3.0];
    let vp = dir.path().join("vol.mrc");
    write_volume(&vp, &vol).unwrap();
    let sdata: Vec<f32> = (0..7 * 5 * 6).map(|k| k as f32 * 0.5 - 20.0).collect();
    let sp = dir.path().join("stack.mrcs");
    write_stack(&sp, &sdata, 5, 6, 1.5).unwrap();
    let out = dir.path().join("out");
    let text = run_python(&py, PY_READ, &[&vp, &sp, &out]);
    println!("{text}");
    let line = |key: &str| -> Vec<String> {
        let l = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key:?} in python output:\n{text}"));
        l[key.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(line("vol shape"), ["4", "5", "6"]);
    assert_eq!(line("vol voxel"), ["2.5", "2.5", "2.5"]);
    assert_eq!(line("vol origin"), ["1.0", "2.0", "3.0"]);
    assert_eq!(line("vol kind"), ["volume"]);
    assert_eq!(line("vol dtype"), ["<f4"]);
    assert_eq!(line("vol valid")[0], "True", "{text}");
    assert_eq!(line("stack shape"), ["7", "5", "6"]);
    // An image stack's z voxel size is cella.z / mz = voxel size too.
    assert_eq!(line("stack voxel"), ["1.5", "1.5", "1.5"]);
    assert_eq!(line("stack origin"), ["0.0", "0.0", "0.0"]);
    assert_eq!(line("stack kind"), ["stack"]);
    assert_eq!(line("stack valid")[0], "True", "{text}");
    assert_eq!(raw_f32(&dir.path().join("out.vol")), vdata);
    assert_eq!(raw_f32(&dir.path().join("out.stack")), sdata);
}

const PY_WRITE: &str = r#"
import sys, os, mrcfile, numpy as np
d = sys.argv[1]
def save(name, data, vs, stack=False):
    with mrcfile.new(os.path.join(d, name + ".mrc"), overwrite=True) as m:
        m.set_data(data)
        if stack:
            m.set_image_stack()
        m.voxel_size = vs
    data.astype("<f4").tofile(os.path.join(d, name + ".expected"))
shape = (3, 4, 5)
k = np.arange(60)
save("f16", ((k - 30) * 0.125).astype(np.float16).reshape(shape), 1.25)
save("i8", ((k * 37) % 256 - 128).astype(np.int8).reshape(shape), 2.0)
save("u16", (k * 1000 + 5).astype(np.uint16).reshape(shape), 3.0)
save("i16be", ((k - 30) * 999).astype(">i2").reshape(shape), 4.0)
save("f32be", np.sin(k).astype(">f4").reshape(shape), 0.5, stack=True)
save("f16be", ((k - 7) * 0.5).astype(">f2").reshape(shape), 6.0, stack=True)
"#;

#[test]
fn mrc_we_read_python_files() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    run_python(&py, PY_WRITE, &[dir.path()]);
    for (name, mode, big, vs) in [
        ("f16", Mode::Float16, false, 1.25),
        ("i8", Mode::Int8, false, 2.0),
        ("u16", Mode::UInt16, false, 3.0),
        ("i16be", Mode::Int16, true, 4.0),
        ("f32be", Mode::Float32, true, 0.5),
        ("f16be", Mode::Float16, true, 6.0),
    ] {
        let p = dir.path().join(format!("{name}.mrc"));
        let expected = raw_f32(&dir.path().join(format!("{name}.expected")));
        let h = read_header(&p).unwrap();
        assert_eq!((h.mode, h.big_endian), (mode, big), "{name}");
        let vol = read_volume(&p).unwrap();
        assert_eq!(vol.shape, [3, 4, 5], "{name}");
        assert_eq!(vol.data, expected, "{name}");
        assert_eq!(vol.voxel_size, vs, "{name}");
        let stack = MrcStack::open(&p).unwrap();
        assert_eq!(stack.voxel_size(), Some(vs), "{name}");
        assert_eq!(stack.read_all().unwrap(), expected, "{name}");
    }
}
