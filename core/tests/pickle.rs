//! Integration tests of `recovar_core::io::pickle`: every pickle shipped in `shared/data`,
//! byte-exact writer output, round trips, interoperability with a real Python + numpy
//! (when one is available), and malformed input.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use recovar_core::io::pickle::{
    self, dumps, load, loads, loads_all, loads_prefix, ArrayData, Dtype, NdArray, PyValue,
};

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// `shared/data`, next to the repository (the repository root is one level below the
/// folder that holds `shared/`).
fn data_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    assert!(
        d.is_dir(),
        "test data folder {} is missing: these tests need shared/data (cryodrgn_fixtures, \
         cryodrgn_oracles, recovar_small) beside the repository",
        d.display()
    );
    d
}

fn pkl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            pkl_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "pkl") {
            out.push(p);
        }
    }
}

/// A compact description of a value's structure: arrays as `f4(5, 9)`.
fn sig(v: &PyValue) -> String {
    match v {
        PyValue::Array(a) => format!("{}{}", a.dtype().descr(), pickle::fmt_shape(a.shape())),
        PyValue::Scalar(a) => format!("scalar {}", a.dtype().descr()),
        PyValue::Tuple(items) => {
            format!("({})", items.iter().map(sig).collect::<Vec<_>>().join(", "))
        }
        PyValue::List(items) => {
            format!("[{}]", items.iter().map(sig).collect::<Vec<_>>().join(", "))
        }
        other => other.type_name().to_string(),
    }
}

fn load_data(rel: &str) -> PyValue {
    let p = data_dir().join(rel);
    load(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn arr<'a>(v: &'a PyValue, what: &str) -> &'a NdArray {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array, got {}", sig(v)))
}

/// Numbers from a `np.savetxt` file (lines starting with `#` skipped), row-major.
fn read_txt(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .map(|t| {
            t.parse::<f64>()
                .unwrap_or_else(|_| panic!("{}: bad number {t}", path.display()))
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * g.abs().max(w.abs()) + 1e-30;
        assert!(ok, "{what}[{i}]: {g} vs {w}");
    }
}

// ---------------------------------------------------------------------------------------
// 1. every shipped pickle
// ---------------------------------------------------------------------------------------

#[test]
fn every_shipped_pickle_decodes() {
    let root = data_dir();
    let mut files = Vec::new();
    for d in ["cryodrgn_fixtures", "cryodrgn_oracles", "recovar_small"] {
        pkl_files(&root.join(d), &mut files);
    }
    assert!(files.len() >= 50, "found only {} .pkl files", files.len());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let (v, n) = loads_prefix(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(n, bytes.len(), "{}: trailing bytes", f.display());
        // Everything we read, we can write back and read again identically (objects aside).
        if !contains_object(&v) {
            let again = loads(&dumps(&v).unwrap()).unwrap();
            assert!(same(&again, &v), "{}: round trip differs", f.display());
        }
    }
}

fn contains_object(v: &PyValue) -> bool {
    match v {
        PyValue::Object { .. } => true,
        PyValue::Tuple(x) | PyValue::List(x) => x.iter().any(contains_object),
        PyValue::Dict(x) => x
            .iter()
            .any(|(k, v)| contains_object(k) || contains_object(v)),
        _ => false,
    }
}

/// Equality that treats NaN as equal to NaN (CTF tables can hold NaN).
fn same(a: &PyValue, b: &PyValue) -> bool {
    canon(a) == canon(b)
}

#[test]
fn cryodrgn_fixture_shapes_and_dtypes() {
    let cases = [
        ("pose.star.pkl", "(f8(5, 3, 3), f8(5, 2))"),
        ("pose.cs.pkl", "(f4(2019, 3, 3), f4(2019, 2))"),
        ("ctf1.pkl", "f4(5, 9)"),
        ("ctf2.pkl", "f4(2019, 9)"),
        ("test_ctf.pkl", "f4(1000, 9)"),
        ("test_ctf.100.pkl", "f4(100, 9)"),
        ("sta_ctf.pkl", "f4(219, 9)"),
        ("sta_pose.pkl", "(f8(219, 3, 3), f8(219, 2))"),
        ("hand_rot.pkl", "f4(100, 3, 3)"),
        ("hand_rot_trans.pkl", "(f4(100, 3, 3), f4(100, 2))"),
        ("toy_angles.pkl", "f4(1000, 3, 3)"),
        ("toy_rot_trans.pkl", "(f4(1000, 3, 3), f8(1000, 2))"),
        ("toy_rot_zerotrans.pkl", "(f4(1000, 3, 3), f4(1000, 2))"),
        ("toy_trans.pkl", "f8(1000, 2)"),
        ("toy_trans.zero.pkl", "f4(1000, 2)"),
        ("ind100.pkl", "i8(100,)"),
        ("ind100-rand.pkl", "i8(100,)"),
        ("ind4.pkl", "i8(4,)"),
        ("ind5.pkl", "i8(5,)"),
        ("ind_39_sta_testing_bin8.pkl", "i8(195,)"),
        ("zvals_het-2_1k.pkl", "f4(1319, 2)"),
        ("zvals_het-8_4k.pkl", "f4(4549, 8)"),
    ];
    for (name, want) in cases {
        let v = load_data(&format!("cryodrgn_fixtures/{name}"));
        assert_eq!(sig(&v), want, "{name}");
    }
    let ind = |name: &str| {
        arr(&load_data(&format!("cryodrgn_fixtures/{name}")), name)
            .to_i64_vec()
            .unwrap()
    };
    assert_eq!(ind("ind5.pkl"), vec![0, 1, 2, 3, 5]);
    assert_eq!(ind("ind4.pkl"), vec![0, 1, 3, 4]);
    assert_eq!(ind("ind100.pkl"), (0..100).collect::<Vec<i64>>());
    assert_eq!(
        ind("ind_39_sta_testing_bin8.pkl"),
        (0..195).collect::<Vec<i64>>()
    );
    let r = ind("ind100-rand.pkl");
    assert!(r.windows(2).all(|w| w[0] <= w[1]) && r[0] >= 1 && r[99] <= 994);

    // test_ctf: D 30, Apix 1, df 0, 300 kV, Cs 0.001, w 0.1, ps 90.
    let ctf = load_data("cryodrgn_fixtures/test_ctf.pkl");
    let c = arr(&ctf, "test_ctf").as_f32().unwrap();
    assert_eq!(
        &c[..9],
        &[30.0, 1.0, 0.0, 0.0, 0.0, 300.0, 0.001, 0.1, 90.0]
    );
    // all-zero translations.
    let z = load_data("cryodrgn_fixtures/toy_trans.zero.pkl");
    assert!(arr(&z, "zero").to_f64_vec().iter().all(|&x| x == 0.0));
    // toy_rot_trans holds the rotations of toy_angles.
    let rt = load_data("cryodrgn_fixtures/toy_rot_trans.pkl");
    let angles = load_data("cryodrgn_fixtures/toy_angles.pkl");
    assert_eq!(arr(&rt.as_seq().unwrap()[0], "rot"), arr(&angles, "angles"));
    // Rotation matrices are orthonormal (a check that C order came out right).
    let rot = arr(&angles, "angles").to_f64_vec();
    for m in rot.chunks(9).take(50) {
        let dot = |i: usize, j: usize| (0..3).map(|k| m[3 * i + k] * m[3 * j + k]).sum::<f64>();
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot(i, j) - want).abs() < 1e-5, "{m:?}");
            }
        }
    }
}

#[test]
fn cryodrgn_oracles_match_text_dumps() {
    let dir = data_dir().join("cryodrgn_oracles");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut checked = 0;
    for name in &names {
        if let Some(stem) = name.strip_suffix(".poses.pkl") {
            let v = load(dir.join(name)).unwrap();
            let items = v.as_seq().unwrap_or_else(|| panic!("{name}: {}", sig(&v)));
            assert_eq!(items.len(), 2, "{name}");
            let rot = arr(&items[0], name);
            let trans = arr(&items[1], name);
            let n = rot.shape()[0];
            assert_eq!(rot.shape(), &[n, 3, 3], "{name}");
            assert_eq!(trans.shape(), &[n, 2], "{name}");
            // parse_pose_star writes float64, parse_pose_csparc float32.
            let want = if stem.starts_with("cryosparc") {
                Dtype::F32
            } else {
                Dtype::F64
            };
            assert_eq!((rot.dtype(), trans.dtype()), (want, want), "{name}");
            let rtxt = read_txt(&dir.join(format!("{stem}.poses.rot.txt")));
            let ttxt = read_txt(&dir.join(format!("{stem}.poses.trans.txt")));
            assert_close(&rot.to_f64_vec(), &rtxt, &format!("{stem} rot"));
            assert_close(&trans.to_f64_vec(), &ttxt, &format!("{stem} trans"));
            checked += 1;
        } else if let Some(stem) = name.strip_suffix(".ctf.pkl") {
            let v = load(dir.join(name)).unwrap();
            let a = arr(&v, name);
            assert_eq!(a.dtype(), Dtype::F32, "{name}");
            assert_eq!(a.ndim(), 2, "{name}");
            assert_eq!(a.shape()[1], 9, "{name}");
            let txt = read_txt(&dir.join(format!("{stem}.ctf.txt")));
            assert_close(&a.to_f64_vec(), &txt, &format!("{stem} ctf"));
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} oracle pickles compared");
}

#[test]
fn recovar_small_pickles() {
    for (dir, d, apix, scale) in [
        ("recovar_small", 64.0, 8.5, 0.014526086f32),
        ("recovar_small/grid32", 32.0, 17.0, 0.005292786f32),
    ] {
        let poses = load_data(&format!("{dir}/poses.pkl"));
        assert_eq!(sig(&poses), "(f4(1000, 3, 3), f4(1000, 2))", "{dir}");
        let trans = arr(&poses.as_seq().unwrap()[1], "trans").to_f64_vec();
        assert!(trans.iter().all(|&t| t == 0.0));

        let ctf = load_data(&format!("{dir}/ctf.pkl"));
        let c = arr(&ctf, "ctf");
        assert_eq!(c.shape(), &[1000, 9]);
        let c = c.as_f32().unwrap();
        assert_eq!((c[0], c[1], c[5], c[6], c[7]), (d, apix, 300.0, 2.7, 0.07));

        let info = load_data(&format!("{dir}/simulation_info.pkl"));
        let get = |k: &str| {
            info.get(k)
                .unwrap_or_else(|| panic!("{dir}/simulation_info.pkl has no {k}"))
        };
        let assign = arr(get("image_assignment"), "image_assignment");
        assert_eq!(
            (assign.dtype(), assign.shape()),
            (Dtype::I64, &[1000usize][..])
        );
        let a = assign.as_i64().unwrap();
        assert_eq!(&a[..10], &[0, 2, 0, 1, 2, 2, 0, 2, 0, 0]);
        let counts = (0..3)
            .map(|k| a.iter().filter(|&&x| x == k).count())
            .collect::<Vec<_>>();
        assert_eq!(counts, vec![235, 264, 501]);
        assert_eq!(sig(get("per_image_contrast")), "f8(1000,)");
        assert_eq!(sig(get("rots")), "f8(1000, 3, 3)");
        assert_eq!(sig(get("trans")), "f8(1000, 2)");
        assert_eq!(sig(get("ctf_params")), "f4(1000, 11)");
        assert_eq!(sig(get("noise_variance")), "f4(127,)");
        let PyValue::Scalar(s) = get("scale_vol") else {
            panic!("scale_vol: {}", sig(get("scale_vol")))
        };
        assert_eq!(s.as_f32(), Some(&[scale][..]));
        assert_eq!(s.shape(), &[] as &[usize]);
        assert_eq!(get("voxel_size"), &PyValue::Float(f64::from(apix)));
        assert_eq!(get("grid_size"), &PyValue::Int(d as i64));
        assert_eq!(get("tilt_series_assignment"), &PyValue::None);
        assert_eq!(
            get("trailing_zero_format_in_vol_name"),
            &PyValue::Bool(true)
        );
        assert_eq!(get("noise_model").as_str(), Some("radial1"));
        // rots agree with the float32 poses.pkl rotations.
        let r64 = arr(get("rots"), "rots").to_f64_vec();
        let r32 = arr(&poses.as_seq().unwrap()[0], "rot").to_f64_vec();
        assert_close(
            &r64.iter().map(|&x| x as f32 as f64).collect::<Vec<_>>(),
            &r32,
            "rots",
        );
    }
}

#[test]
fn recovar_pipeline_model_pickles() {
    let model = "recovar_small/grid32/reference_pipeline_output/model";
    for name in ["halfsets.pkl", "particles_halfsets.pkl"] {
        let v = load_data(&format!("{model}/{name}"));
        assert_eq!(sig(&v), "[i4(500,), i4(500,)]", "{name}");
        let mut all: Vec<i32> = v
            .as_seq()
            .unwrap()
            .iter()
            .flat_map(|a| arr(a, name).as_i32().unwrap().to_vec())
            .collect();
        assert_eq!(
            &arr(&v.as_seq().unwrap()[0], name).as_i32().unwrap()[..5],
            &[1, 2, 5, 6, 8]
        );
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<i32>>());
    }
    assert_eq!(
        load_data(&format!("{model}/covariance_cols.pkl")),
        PyValue::None
    );

    let p = load_data(&format!("{model}/params.pkl"));
    let get = |k: &str| p.get(k).unwrap_or_else(|| panic!("params.pkl has no {k}"));
    assert_eq!(get("version").as_str(), Some("0.7"));
    assert_eq!(
        get("volume_shape"),
        &PyValue::Tuple(vec![PyValue::Int(32), PyValue::Int(32), PyValue::Int(32)])
    );
    assert_eq!(sig(get("s")), "f4(50,)");
    assert_eq!(sig(get("voxel_size")), "scalar f4");
    assert_eq!(get("voxel_size").as_f64(), Some(17.0));
    // A 0-d array, not a scalar.
    assert_eq!(sig(get("noise_var_from_hf")), "f4()");
    assert_eq!(sig(get("column_fscs")), "f4(300, 15)");
    assert_eq!(sig(get("picked_frequencies")), "i8(300,)");
    // JAX arrays (jax._src.array._reconstruct_array) come out as plain arrays.
    let var = get("variance_est");
    for k in ["corrected0", "corrected1", "combined", "prior", "lhs"] {
        assert_eq!(sig(var.get(k).unwrap()), "f4(32768,)", "variance_est[{k}]");
    }
    assert_eq!(sig(get("variance_fsc")), "f4(15,)");
    let opts = get("covariance_options");
    assert_eq!(opts.get("n_pcs_to_compute"), Some(&PyValue::Int(163)));
    assert_eq!(
        opts.get("disc_type").and_then(|v| v.as_str()),
        Some("cubic")
    );
    let args = get("input_args");
    let PyValue::Object { class, .. } = args else {
        panic!("input_args: {}", sig(args))
    };
    assert_eq!(class, "argparse.Namespace");
    let particles = args.get("particles").and_then(|v| v.as_str()).unwrap();
    assert!(particles.ends_with("particles.32.mrcs"), "{particles}");
    // Objects cannot be written.
    let err = dumps(args).unwrap_err().to_string();
    assert!(
        err.contains("cannot write a Python object of class argparse.Namespace"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. z.pkl: two pickles back to back
// ---------------------------------------------------------------------------------------

#[test]
fn two_pickles_back_to_back() {
    let mu = PyValue::Array(
        NdArray::from_f32(vec![3, 2], vec![0.5, 1.5, -2.0, 3.0, 4.25, 5.0]).unwrap(),
    );
    let logvar = PyValue::Array(
        NdArray::from_f32(vec![3, 2], vec![-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]).unwrap(),
    );
    let first = dumps(&mu).unwrap();
    let second = dumps(&logvar).unwrap();
    let mut z = first.clone();
    z.extend_from_slice(&second);

    assert_eq!(loads(&z).unwrap(), mu);
    let (v, n) = loads_prefix(&z).unwrap();
    assert_eq!(v, mu);
    assert_eq!(n, first.len());
    assert_eq!(loads(&z[n..]).unwrap(), logvar);
    assert_eq!(loads_all(&z).unwrap(), vec![mu.clone(), logvar]);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.pkl");
    std::fs::write(&p, &z).unwrap();
    assert_eq!(load(&p).unwrap(), mu);
    // A damaged second pickle is reported with its offset.
    let err = loads_all(&z[..z.len() - 1]).unwrap_err().to_string();
    assert!(err.contains(&format!("starting at byte {n}")), "{err}");
}

// ---------------------------------------------------------------------------------------
// 3. exact bytes of the writer
// ---------------------------------------------------------------------------------------

/// int64 `[3, 1, 4]`, as `dumps` writes it. Checked with Python 3.11 + numpy 2.4.6 and
/// numpy 1.26.4: `pickle.loads` under `-W error` gives `array([3, 1, 4])` (int64), and
/// `pickletools.dis` shows the opcodes in the comments.
const INT64_314: &[u8] = b"\x80\x03\
cnumpy.core.multiarray\n_reconstruct\n\
cnumpy\nndarray\n\
K\x00\x85C\x01b\x87R\
(K\x01K\x03\x85\
cnumpy\ndtype\nX\x02\x00\x00\x00i8\x89\x88\x87R\
(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\
\x89C\x18\x03\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\
tb.";

/// float32 `[[0, 1, 2], [3, 4.5, -5]]`, checked the same way.
const F32_2X3: &[u8] = b"\x80\x03\
cnumpy.core.multiarray\n_reconstruct\n\
cnumpy\nndarray\n\
K\x00\x85C\x01b\x87R\
(K\x01K\x02K\x03\x86\
cnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x88\x87R\
(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\
\x89C\x18\x00\x00\x00\x00\x00\x00\x80?\x00\x00\x00@\x00\x00@@\x00\x00\x90@\x00\x00\xa0\xc0\
tb.";

/// `(None, True, 300, -2, 2**40, 1.5, 'é', b'\x00', [1], {'a': 70000})`.
const MIXED: &[u8] = b"\x80\x03(N\x88M,\x01J\xfe\xff\xff\xff\x8a\x06\x00\x00\x00\x00\x00\x01\
G?\xf8\x00\x00\x00\x00\x00\x00X\x02\x00\x00\x00\xc3\xa9C\x01\x00]K\x01a}X\x01\x00\x00\x00aJp\x11\x01\x00st.";

fn mixed_value() -> PyValue {
    PyValue::Tuple(vec![
        PyValue::None,
        PyValue::Bool(true),
        PyValue::Int(300),
        PyValue::Int(-2),
        PyValue::Int(1 << 40),
        PyValue::Float(1.5),
        PyValue::Str("é".into()),
        PyValue::Bytes(vec![0]),
        PyValue::List(vec![PyValue::Int(1)]),
        PyValue::Dict(vec![(PyValue::Str("a".into()), PyValue::Int(70000))]),
    ])
}

#[test]
fn writer_bytes_are_exact() {
    let a = PyValue::Array(NdArray::from_i64(vec![3], vec![3, 1, 4]).unwrap());
    assert_eq!(dumps(&a).unwrap(), INT64_314);
    assert_eq!(loads(INT64_314).unwrap(), a);

    let b =
        PyValue::Array(NdArray::from_f32(vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.5, -5.0]).unwrap());
    assert_eq!(dumps(&b).unwrap(), F32_2X3);
    assert_eq!(loads(F32_2X3).unwrap(), b);

    assert_eq!(dumps(&mixed_value()).unwrap(), MIXED);
    assert_eq!(loads(MIXED).unwrap(), mixed_value());
}

#[test]
fn roundtrip_every_variant() {
    let all_dtypes: Vec<PyValue> = [
        ArrayData::Bool(vec![true, false, true, true, false, false]),
        ArrayData::I8(vec![-128, -1, 0, 1, 2, 127]),
        ArrayData::U8(vec![0, 1, 2, 3, 254, 255]),
        ArrayData::I16(vec![i16::MIN, -1, 0, 1, 2, i16::MAX]),
        ArrayData::U16(vec![0, 1, 2, 3, 4, u16::MAX]),
        ArrayData::I32(vec![i32::MIN, -1, 0, 1, 2, i32::MAX]),
        ArrayData::U32(vec![0, 1, 2, 3, 4, u32::MAX]),
        ArrayData::I64(vec![i64::MIN, -1, 0, 1, 2, i64::MAX]),
        ArrayData::U64(vec![0, 1, 2, 3, 4, u64::MAX]),
        ArrayData::F16(
            [0.0f32, -1.5, 65504.0, 1e-7, f32::INFINITY, 3.25]
                .iter()
                .map(|&x| half::f16::from_f32(x))
                .collect(),
        ),
        ArrayData::F32(vec![
            0.0,
            -1.5,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            1e-40,
        ]),
        ArrayData::F64(vec![0.0, -0.0, f64::MAX, 5e-324, f64::NEG_INFINITY, 0.1]),
    ]
    .into_iter()
    .map(|d| PyValue::Array(NdArray::new(vec![2, 3], d).unwrap()))
    .collect();
    let values = vec![
        PyValue::None,
        PyValue::Bool(false),
        PyValue::Int(i64::MIN),
        PyValue::Int(i64::MAX),
        PyValue::Int(-(1 << 31) - 1),
        PyValue::Float(-0.0),
        PyValue::Str("h\u{e9}llo \u{20ac} \u{1F600}\n\\".into()),
        PyValue::Str("x".repeat(300)),
        PyValue::Bytes(Vec::new()),
        PyValue::Bytes((0..=255u8).cycle().take(1000).collect()),
        PyValue::Tuple(vec![]),
        PyValue::Tuple((0..5).map(PyValue::Int).collect()),
        PyValue::List((0..2500).map(PyValue::Int).collect()),
        PyValue::Dict(
            (0..1001)
                .map(|i| (PyValue::Int(i), PyValue::None))
                .collect(),
        ),
        PyValue::List(all_dtypes),
        PyValue::Array(NdArray::from_f64(vec![], vec![2.5]).unwrap()),
        PyValue::Array(NdArray::from_f64(vec![0, 3], vec![]).unwrap()),
        PyValue::Scalar(NdArray::from_f32(vec![], vec![1.5]).unwrap()),
        PyValue::Scalar(NdArray::from_i64(vec![], vec![-7]).unwrap()),
    ];
    for v in values {
        let b = dumps(&v).unwrap();
        let back = loads(&b).unwrap();
        assert!(same(&back, &v), "{v:?} -> {back:?}");
    }
    // NaN survives bit for bit.
    let nan = PyValue::Float(f64::from_bits(0x7ff8_0000_dead_beef));
    let PyValue::Float(x) = loads(&dumps(&nan).unwrap()).unwrap() else {
        panic!()
    };
    assert_eq!(x.to_bits(), 0x7ff8_0000_dead_beef);
    // A scalar must hold one value.
    let bad = PyValue::Scalar(NdArray::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
    assert!(dumps(&bad).is_err());
}

#[test]
fn dump_writes_atomically_and_load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ind.pkl");
    let v = PyValue::Array(NdArray::from_i64(vec![3], vec![3, 1, 4]).unwrap());
    pickle::dump(&p, &v).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), INT64_314);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(load(&p).unwrap(), v);

    let bad = dir.path().join("bad.pkl");
    std::fs::write(&bad, &INT64_314[..40]).unwrap();
    let err = load(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.pkl") && err.contains("not a valid pickle file"),
        "{err}"
    );
    let err = load(dir.path().join("missing.pkl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pkl"), "{err}");
}

#[test]
fn ndarray_api() {
    assert!(NdArray::from_f32(vec![2, 3], vec![0.0; 5]).is_err());
    assert!(NdArray::from_f64(vec![usize::MAX, 3], vec![]).is_err());
    let a = NdArray::from_i32(vec![2, 2], vec![1, -2, 3, 4]).unwrap();
    assert_eq!((a.len(), a.ndim(), a.dtype()), (4, 2, Dtype::I32));
    assert_eq!(a.to_i64_vec().unwrap(), vec![1, -2, 3, 4]);
    assert_eq!(a.to_f64_vec(), vec![1.0, -2.0, 3.0, 4.0]);
    assert_eq!(a.to_f32_vec(), vec![1.0, -2.0, 3.0, 4.0]);
    assert_eq!(a.as_i32(), Some(&[1, -2, 3, 4][..]));
    assert_eq!(a.as_f32(), None);
    let f = NdArray::from_f32(vec![3], vec![0.5, 1.0, 2.0]).unwrap();
    let err = f.to_i64_vec().unwrap_err().to_string();
    assert!(
        err.contains("integer array") && err.contains("float32"),
        "{err}"
    );
    let u = NdArray::new(vec![1], ArrayData::U64(vec![u64::MAX])).unwrap();
    assert!(u.to_i64_vec().is_err());
    let b = NdArray::new(vec![2], ArrayData::Bool(vec![true, false])).unwrap();
    assert_eq!(b.to_i64_vec().unwrap(), vec![1, 0]);
    assert_eq!(PyValue::Array(b).type_name(), "numpy.ndarray");
}

// ---------------------------------------------------------------------------------------
// 4. Python interoperability
// ---------------------------------------------------------------------------------------

/// Canonical text of a value, the same as `CANON_PY` prints for the Python object:
/// floats as the hex of their f64 bits, strings and bytes as hex, arrays as kind + itemsize
/// + shape + elements in C order.
fn canon(v: &PyValue) -> String {
    let mut s = String::new();
    canon_into(v, &mut s);
    s
}

fn fbits(x: f64) -> String {
    let mut s = String::from("f");
    for b in x.to_be_bytes() {
        write!(s, "{b:02x}").unwrap();
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn canon_elems(a: &NdArray) -> String {
    let items: Vec<String> = match a.data() {
        ArrayData::Bool(v) => v
            .iter()
            .map(|&b| if b { "T" } else { "F" }.into())
            .collect(),
        ArrayData::U64(v) => v.iter().map(|x| format!("i{x}")).collect(),
        ArrayData::F16(v) => v.iter().map(|x| fbits(x.to_f64())).collect(),
        ArrayData::F32(v) => v.iter().map(|&x| fbits(f64::from(x))).collect(),
        ArrayData::F64(v) => v.iter().map(|&x| fbits(x)).collect(),
        _ => a
            .to_i64_vec()
            .unwrap()
            .iter()
            .map(|x| format!("i{x}"))
            .collect(),
    };
    format!("[{}]", items.join(","))
}

fn kind(d: Dtype) -> String {
    let k = match d {
        Dtype::Bool => 'b',
        Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 => 'i',
        Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => 'u',
        Dtype::F16 | Dtype::F32 | Dtype::F64 => 'f',
    };
    format!("{k}{}", d.itemsize())
}

fn canon_into(v: &PyValue, s: &mut String) {
    let seq = |s: &mut String, items: &[PyValue], open: &str, close: &str| {
        s.push_str(open);
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            canon_into(x, s);
        }
        s.push_str(close);
    };
    match v {
        PyValue::None => s.push('N'),
        PyValue::Bool(b) => s.push(if *b { 'T' } else { 'F' }),
        PyValue::Int(i) => write!(s, "i{i}").unwrap(),
        PyValue::Float(x) => s.push_str(&fbits(*x)),
        PyValue::Str(t) => write!(s, "s{}", hex(t.as_bytes())).unwrap(),
        PyValue::Bytes(b) => write!(s, "b{}", hex(b)).unwrap(),
        PyValue::Tuple(items) => seq(s, items, "(", ")"),
        PyValue::List(items) => seq(s, items, "[", "]"),
        PyValue::Dict(items) => {
            s.push('{');
            for (i, (k, x)) in items.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                canon_into(k, s);
                s.push(':');
                canon_into(x, s);
            }
            s.push('}');
        }
        PyValue::Array(a) => {
            let shape: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
            write!(
                s,
                "A{}({}){}",
                kind(a.dtype()),
                shape.join(","),
                canon_elems(a)
            )
            .unwrap()
        }
        PyValue::Scalar(a) => write!(s, "S{}{}", kind(a.dtype()), canon_elems(a)).unwrap(),
        PyValue::Object { class, state, .. } => {
            write!(s, "O{class}").unwrap();
            canon_into(state, s);
        }
    }
}

const CANON_PY: &str = r#"
import struct, numpy as np
def fb(x): return 'f' + struct.pack('>d', x).hex()
def elem(x):
    if isinstance(x, bool): return 'T' if x else 'F'
    if isinstance(x, int): return 'i%d' % x
    if isinstance(x, float): return fb(x)
    raise TypeError(type(x))
def canon(v):
    if v is None: return 'N'
    if isinstance(v, (bool, np.bool_)) and not isinstance(v, np.generic): return 'T' if v else 'F'
    if isinstance(v, int) and not isinstance(v, np.generic): return 'i%d' % v
    if isinstance(v, float) and not isinstance(v, np.generic): return fb(v)
    if isinstance(v, str): return 's' + v.encode('utf-8').hex()
    if isinstance(v, (bytes, bytearray)): return 'b' + bytes(v).hex()
    if isinstance(v, tuple): return '(' + ','.join(map(canon, v)) + ')'
    if isinstance(v, (list, set, frozenset)): return '[' + ','.join(map(canon, v)) + ']'
    if isinstance(v, dict): return '{' + ','.join(canon(k) + ':' + canon(x) for k, x in v.items()) + '}'
    if isinstance(v, np.ndarray):
        return ('A' + v.dtype.kind + str(v.dtype.itemsize) + '(' + ','.join(map(str, v.shape)) + ')['
                + ','.join(elem(x) for x in v.ravel(order='C').tolist()) + ']')
    if isinstance(v, np.generic):
        return 'S' + v.dtype.kind + str(v.dtype.itemsize) + '[' + elem(v.item()) + ']'
    return 'O' + type(v).__module__ + '.' + type(v).__qualname__ + canon(vars(v))
"#;

/// The Python to test against: `$RECOVAR_TEST_PYTHON`, else `python3`; `None` (after saying
/// so) if it cannot import numpy.
fn python_with_numpy() -> Option<String> {
    common::python_with(&["numpy"])
}

fn run_python(py: &str, script: &str, args: &[&Path]) -> String {
    let out = Command::new(py)
        .args(["-W", "error", "-c", script])
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn interop_values() -> Vec<(String, PyValue)> {
    let mut v: Vec<(String, PyValue)> = Vec::new();
    let datas = [
        ArrayData::Bool(vec![true, false, true, false, false, true]),
        ArrayData::I8(vec![-128, -1, 0, 1, 2, 127]),
        ArrayData::U8(vec![0, 1, 2, 3, 254, 255]),
        ArrayData::I16(vec![i16::MIN, -1, 0, 1, 2, i16::MAX]),
        ArrayData::U16(vec![0, 1, 2, 3, 4, u16::MAX]),
        ArrayData::I32(vec![i32::MIN, -1, 0, 1, 2, i32::MAX]),
        ArrayData::U32(vec![0, 1, 2, 3, 4, u32::MAX]),
        ArrayData::I64(vec![i64::MIN, -1, 0, 1, 2, i64::MAX]),
        ArrayData::U64(vec![0, 1, 2, 3, 4, u64::MAX]),
        ArrayData::F16(
            [0.0f32, -1.5, 65504.0, 6e-8, f32::NEG_INFINITY, 3.25]
                .iter()
                .map(|&x| half::f16::from_f32(x))
                .collect(),
        ),
        ArrayData::F32(vec![0.0, -1.5, f32::MAX, 1e-40, f32::INFINITY, 0.1]),
        ArrayData::F64(vec![0.0, -0.0, f64::MAX, 5e-324, f64::NEG_INFINITY, 0.1]),
    ];
    for d in datas {
        let name = format!("array_{}", d.dtype().descr());
        let a = NdArray::new(vec![2, 3], d).unwrap();
        v.push((
            format!("{name}_scalar"),
            PyValue::Scalar(
                NdArray::new(
                    vec![],
                    match a.data() {
                        ArrayData::Bool(x) => ArrayData::Bool(vec![x[0]]),
                        ArrayData::I8(x) => ArrayData::I8(vec![x[0]]),
                        ArrayData::U8(x) => ArrayData::U8(vec![x[5]]),
                        ArrayData::I16(x) => ArrayData::I16(vec![x[0]]),
                        ArrayData::U16(x) => ArrayData::U16(vec![x[5]]),
                        ArrayData::I32(x) => ArrayData::I32(vec![x[0]]),
                        ArrayData::U32(x) => ArrayData::U32(vec![x[5]]),
                        ArrayData::I64(x) => ArrayData::I64(vec![x[0]]),
                        ArrayData::U64(x) => ArrayData::U64(vec![x[5]]),
                        ArrayData::F16(x) => ArrayData::F16(vec![x[1]]),
                        ArrayData::F32(x) => ArrayData::F32(vec![x[1]]),
                        ArrayData::F64(x) => ArrayData::F64(vec![x[5]]),
                    },
                )
                .unwrap(),
            ),
        ));
        v.push((name, PyValue::Array(a)));
    }
    let rot = NdArray::from_f32(vec![2, 3, 3], (0..18).map(|i| i as f32 * 0.25).collect()).unwrap();
    let trans = NdArray::from_f64(vec![2, 2], vec![0.1, -0.2, 0.3, -0.4]).unwrap();
    v.push((
        "poses".into(),
        PyValue::Tuple(vec![
            PyValue::Array(rot.clone()),
            PyValue::Array(trans.clone()),
        ]),
    ));
    v.push((
        "dict_of_arrays".into(),
        PyValue::Dict(vec![
            (PyValue::Str("rots".into()), PyValue::Array(rot)),
            (PyValue::Str("trans".into()), PyValue::Array(trans)),
            (
                PyValue::Str("zero_d".into()),
                PyValue::Array(NdArray::from_f64(vec![], vec![2.5]).unwrap()),
            ),
            (
                PyValue::Str("empty".into()),
                PyValue::Array(NdArray::from_i64(vec![0, 4], vec![]).unwrap()),
            ),
            (
                PyValue::Str("big".into()),
                PyValue::Array(
                    NdArray::from_f32(vec![100, 9], (0..900).map(|i| i as f32).collect()).unwrap(),
                ),
            ),
        ]),
    ));
    v.push((
        "nested".into(),
        PyValue::List(vec![
            PyValue::List(vec![PyValue::Int(1), PyValue::List(vec![])]),
            PyValue::Tuple(vec![
                PyValue::None,
                PyValue::Bool(true),
                PyValue::Bool(false),
            ]),
            PyValue::List((0..1500).map(PyValue::Int).collect()),
        ]),
    ));
    v.push((
        "ints".into(),
        PyValue::List(
            [
                0,
                1,
                255,
                256,
                65535,
                65536,
                -1,
                -256,
                i32::MAX as i64,
                i32::MIN as i64,
                i32::MAX as i64 + 1,
                i32::MIN as i64 - 1,
                1 << 40,
                -(1 << 40),
                i64::MAX,
                i64::MIN,
            ]
            .into_iter()
            .map(PyValue::Int)
            .collect(),
        ),
    ));
    v.push((
        "floats".into(),
        PyValue::List(
            [0.0, -0.0, 1.5, 1e300, -1e-300, f64::INFINITY, f64::NAN]
                .into_iter()
                .map(PyValue::Float)
                .collect(),
        ),
    ));
    v.push((
        "strings".into(),
        PyValue::Tuple(vec![
            PyValue::Str(String::new()),
            PyValue::Str("h\u{e9}llo \u{20ac} \u{1F600} \\ \n \0".into()),
            PyValue::Str("y".repeat(70000)),
            PyValue::Bytes(vec![]),
            PyValue::Bytes((0..=255u8).collect()),
        ]),
    ));
    v.push(("none".into(), PyValue::None));
    v.push(("mixed".into(), mixed_value()));
    v
}

/// Rust writes, Python (`pickle.load` under `-W error`) reads.
#[test]
fn python_reads_what_we_write() {
    let Some(py) = python_with_numpy() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut want = String::new();
    let mut values = interop_values();
    values.push(("literal_int64".into(), loads(INT64_314).unwrap()));
    values.push(("literal_f32".into(), loads(F32_2X3).unwrap()));
    for (i, (name, v)) in values.iter().enumerate() {
        let p = dir.path().join(format!("{i:02}_{name}.pkl"));
        pickle::dump(&p, v).unwrap();
        writeln!(want, "{name}\t{}", canon(v)).unwrap();
        files.push(p);
    }
    // The committed byte literals themselves.
    for (name, b) in [
        ("literal_int64_bytes", INT64_314),
        ("literal_f32_bytes", F32_2X3),
    ] {
        let p = dir.path().join(format!("{name}.pkl"));
        std::fs::write(&p, b).unwrap();
        writeln!(want, "{name}\t{}", canon(&loads(b).unwrap())).unwrap();
        files.push(p);
    }
    let script = format!(
        "{CANON_PY}
import sys, os, pickle
for f in sys.argv[1:]:
    with open(f, 'rb') as fh:
        v = pickle.load(fh)
        assert fh.read() == b'', f
    name = os.path.basename(f)[:-4]
    name = name.split('_', 1)[1] if name[:2].isdigit() else name
    print(name + '\\t' + canon(v))
"
    );
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let got = run_python(&py, &script, &paths);
    for (g, w) in got.lines().zip(want.lines()) {
        assert_eq!(g, w);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}

/// Python writes (protocols 0 to 5, numpy layouts of every kind), we read.
#[test]
fn we_read_what_python_writes() {
    let Some(py) = python_with_numpy() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{CANON_PY}
import sys, os, pickle, argparse, collections
out = sys.argv[1]
x = np.arange(24, dtype='<f4').reshape(2, 3, 4) / 7
shared = np.arange(5, dtype='i8')
inner = [1, 2]
objs = {{
    'f4': x,
    'f8_big_endian': np.arange(6, dtype='>f8').reshape(2, 3) - 2.5,
    'i4_big_endian': np.arange(6, dtype='>i4') - 3,
    'f2_big_endian': np.arange(4, dtype='>f2') / 3,
    'u8_big_endian': np.array([1, 2**64 - 1], dtype='>u8'),
    'fortran_3d': np.asfortranarray(x),
    'fortran_i2': np.asfortranarray(np.arange(6, dtype='i2').reshape(2, 3)),
    'fortran_big_endian': np.asfortranarray(np.arange(6, dtype='>f8').reshape(3, 2)),
    'non_contiguous': x[:, ::2, 1:],
    'transposed': x.T,
    'bool': np.array([True, False, True]),
    'i1_u1': (np.array([-5, 5], dtype='i1'), np.array([0, 255], dtype='u1')),
    'u2_u4': (np.array([65535], dtype='u2'), np.array([2**32 - 1], dtype='u4')),
    'zero_d': np.array(3.5),
    'empty': np.zeros((0, 3), dtype='f4'),
    'scalars': (np.float32(1.5), np.float64(-2.25), np.int64(-3), np.int32(7), np.bool_(True), np.float16(0.5), np.uint8(200)),
    'poses': (np.eye(3, dtype='f4')[None].repeat(4, 0), np.zeros((4, 2), dtype='f4')),
    'dict_of_arrays': {{'rots': np.eye(3)[None], 'ind': np.array([0, 1, 2, 3, 5]), 'n': 5, 'none': None}},
    'shared_refs': {{'a': shared, 'b': shared, 'c': [inner, inner]}},
    'nested': [[1, [2, [3, []]]], (None, True, False), {{'k': (1.5, -0.0)}}],
    'ints': [0, 1, 255, 256, 65535, 65536, -1, -256, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**62, -2**63, 2**63 - 1],
    'floats': [0.0, -0.0, 1e300, -1e-300, float('inf'), float('nan')],
    'strings': ('', 'h\\u00e9llo \\u20ac \\U0001F600 \\\\ \\n \\x00', 'z' * 70000),
    'bytes': (b'', bytes(range(256)), bytearray(b'ab'), b'q' * 70000),
    'sets': (set([3]), frozenset([4])),
    'namespace': argparse.Namespace(particles='p.mrcs', zdim=[1, 2], lazy=True),
    'ordered_dict': collections.OrderedDict([('b', 1), ('a', 2)]),
    'big_list': list(range(2500)),
    'big_dict': {{i: str(i) for i in range(1200)}},
}}
for proto in range(0, 6):
    for name, v in objs.items():
        fn = '%d_%s' % (proto, name)
        with open(os.path.join(out, fn + '.pkl'), 'wb') as fh:
            pickle.dump(v, fh, protocol=proto)
        print(fn + '\\t' + canon(v))
"
    );
    let listing = run_python(&py, &script, &[dir.path()]);
    let mut n = 0;
    for line in listing.lines() {
        let (name, want) = line.split_once('\t').unwrap();
        let p = dir.path().join(format!("{name}.pkl"));
        let v = load(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = canon(&v);
        if got != want {
            let cut = |s: &str| s.chars().take(400).collect::<String>();
            panic!("{name}:\n got  {}\n want {}", cut(&got), cut(want));
        }
        n += 1;
    }
    assert!(n >= 150, "only {n} python pickles compared");
}

// ---------------------------------------------------------------------------------------
// 5. malformed input
// ---------------------------------------------------------------------------------------

fn err_of(bytes: &[u8]) -> String {
    match loads(bytes) {
        Ok(v) => panic!("expected an error, got {}", sig(&v)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_truncation_is_an_error() {
    let files = [
        data_dir().join("cryodrgn_fixtures/pose.star.pkl"),
        data_dir().join("cryodrgn_fixtures/ind5.pkl"),
    ];
    let mut samples: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    samples.push(dumps(&mixed_value()).unwrap());
    samples.push(INT64_314.to_vec());
    for b in &samples {
        assert!(loads(b).is_ok());
        for n in 0..b.len() {
            let e = err_of(&b[..n]);
            assert!(e.contains("pickle"), "{e}");
            if n > 0 {
                assert!(e.contains("byte"), "prefix {n}: {e}");
            }
        }
    }
    assert!(err_of(b"").contains("empty input"));
    assert!(err_of(b"\x80\x04N").contains("without a STOP"));
}

#[test]
fn huge_length_claims_are_refused_before_allocating() {
    let mut b = b"\x80\x04\x8e".to_vec();
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.extend_from_slice(b"abc.");
    let e = err_of(&b);
    assert!(
        e.contains("BINBYTES8 claims 1152921504606846976 bytes but only 4 remain"),
        "{e}"
    );
    assert!(e.contains("at byte 2"), "{e}");

    let mut b = b"\x80\x04\x8d".to_vec();
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(err_of(&b).contains("BINUNICODE8 claims"));
    let e = err_of(b"\x80\x03B\xff\xff\xff\xffabc.");
    assert!(e.contains("BINBYTES claims 4294967295 bytes"), "{e}");
    let e = err_of(b"T\xff\xff\xff\xffabc.");
    assert!(e.contains("negative"), "{e}");
    let e = err_of(b"\x8b\x00\x00\x00\x70.");
    assert!(e.contains("LONG4 claims"), "{e}");
}

/// A `_reconstruct` pickle of `shape` float32 with `payload` bytes of data.
fn array_pickle(shape: &[i64], payload: usize) -> Vec<u8> {
    let mut b = b"\x80\x03cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R(K\x01(".to_vec();
    for &d in shape {
        b.push(b'\x8a');
        b.push(8);
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(b"tcnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89B");
    b.extend_from_slice(&(payload as u32).to_le_bytes());
    b.extend(std::iter::repeat_n(0u8, payload));
    b.extend_from_slice(b"tb.");
    b
}

#[test]
fn payload_length_must_match_shape() {
    assert_eq!(
        sig(&loads(&array_pickle(&[1000, 9], 36000)).unwrap()),
        "f4(1000, 9)"
    );
    let e = err_of(&array_pickle(&[1000, 9], 35000));
    assert!(
        e.contains("array shape (1000, 9) float32 needs 36000 bytes but payload has 35000"),
        "{e}"
    );
    assert!(e.contains("opcode 0x62 (BUILD) at byte"), "{e}");
    let e = err_of(&array_pickle(&[1000, 9], 36004));
    assert!(e.contains("payload has 36004"), "{e}");
    let e = err_of(&array_pickle(&[1 << 62, 1 << 62], 0));
    assert!(e.contains("too large"), "{e}");
    let e = err_of(&array_pickle(&[1 << 62, 4], 0));
    assert!(e.contains("too large"), "{e}");
    // As in numpy, a zero dimension makes the others irrelevant.
    assert_eq!(
        sig(&loads(&array_pickle(&[i64::MAX, 0, i64::MAX], 0)).unwrap()),
        "f4(9223372036854775807, 0, 9223372036854775807)"
    );
    assert!(err_of(&array_pickle(&[-1, 3], 0)).contains("negative dimension"));
    // A dimension of 0 with an empty payload is fine.
    assert_eq!(sig(&loads(&array_pickle(&[0, 9], 0)).unwrap()), "f4(0, 9)");
}

#[test]
fn unsupported_arrays_are_refused_clearly() {
    // pickle.dumps(np.array(['a'], dtype=object), protocol=4), numpy 2.4.6.
    let obj = hex_bytes(
        "8004958d000000000000008c166e756d70792e5f636f72652e6d756c74696172726179948c0c5f72\
         65636f6e7374727563749493948c056e756d7079948c076e6461727261799493944b0085944301629487\
         945294284b014b01859468038c0564747970659493948c024f3894898887945294284b038c017c944e4e\
         4e4affffffff4affffffff4b3f749462895d948c016194617494622e",
    );
    let e = err_of(&obj);
    assert!(e.contains("object-dtype arrays ('O')"), "{e}");
    // A complex dtype.
    let mut c = array_pickle(&[1], 8);
    let at = c.windows(2).position(|w| w == b"f4").unwrap();
    c[at..at + 2].copy_from_slice(b"c8");
    let e = err_of(&c);
    assert!(e.contains("numpy dtype 'c8' is not supported"), "{e}");
    // An array without its BUILD.
    let e = err_of(
        b"\x80\x03cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R.",
    );
    assert!(e.contains("never received its data"), "{e}");
    // Out-of-band buffers.
    let e = err_of(b"\x80\x05\x97.");
    assert!(e.contains("out-of-band"), "{e}");
}

fn hex_bytes(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn deep_nesting_is_refused() {
    // ((((...)))) through TUPLE1, no MARKs.
    let mut b = vec![0x80, 4, b')'];
    b.extend(std::iter::repeat_n(0x85, 100_000));
    b.push(b'.');
    assert!(err_of(&b).contains("nested deeper than 1000"));
    // Within the limit is fine.
    let mut b = vec![0x80, 4, b')'];
    b.extend(std::iter::repeat_n(0x85, 900));
    b.push(b'.');
    assert!(loads(&b).is_ok());
    // 100k open MARKs.
    let mut b = vec![0x80, 4];
    b.extend(std::iter::repeat_n(b'(', 100_000));
    assert!(err_of(&b).contains("more than 1000 nested MARKs"));
    // Lists nested through APPEND.
    let mut b = vec![0x80, 4];
    b.extend(std::iter::repeat_n(b']', 5000));
    b.extend(std::iter::repeat_n(b'a', 4999));
    b.push(b'.');
    assert!(err_of(&b).contains("nested deeper"));
    // The writer refuses too.
    let mut v = PyValue::None;
    for _ in 0..1100 {
        v = PyValue::List(vec![v]);
    }
    assert!(dumps(&v)
        .unwrap_err()
        .to_string()
        .contains("deeper than 1000"));
}

#[test]
fn assorted_garbage() {
    for (bytes, needle) in [
        (&b"\xff"[..], "0xff (unknown opcode) at byte 0"),
        (b"\x80\x06N.", "unsupported pickle protocol 6"),
        (b"\x80\x04h\x05.", "memo key 5 was never stored"),
        (b"\x80\x04.", "stack underflow"),
        (b"\x80\x04(.", "stack underflow"),
        (b"\x80\x04Na.", "stack underflow"),
        (b"\x80\x04K\x01K\x02a.", "cannot append to a int"),
        (b"\x80\x04}K\x01u.", "no MARK"),
        (b"\x80\x04}(K\x01u.", "key/value pairs"),
        (
            b"\x80\x04NNR.",
            "callable of REDUCE must be a class or function",
        ),
        (
            b"\x80\x04cos\nsystem\nK\x01R.",
            "REDUCE arguments must be a tuple",
        ),
        (b"\x80\x04K\x01Nb.", "BUILD (set state) on a int"),
        (b"\x80\x04P1\n.", "persistent IDs"),
        (b"\x80\x04\x82\x01.", "extension-registry"),
        (b"\x80\x04\x8c\x02\xff\xfe.", "not valid UTF-8"),
        (b"I12x\n.", "invalid integer text"),
        (b"Fabc\n.", "invalid float text"),
        (b"S'abc\n.", "not a quoted string"),
        (b"V\\u12\n.", "bad \\u escape"),
        (
            b"\x80\x04c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x82\xacX\x06\x00\x00\x00latin1\x86R.",
            "cannot be encoded as latin1",
        ),
        (b"\x80\x04](h\x00e.", "memo key 0"),
        (b"\x80\x04]\x94(h\x00e.", "contains itself"),
    ] {
        let e = err_of(bytes);
        assert!(e.contains(needle), "{bytes:?}: {e}");
    }
    // Generic objects are kept, not executed.
    let v = loads(b"\x80\x04cos\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap();
    assert_eq!(
        v,
        PyValue::Object {
            class: "os.system".into(),
            args: Box::new(PyValue::Tuple(vec![PyValue::Str("ls".into())])),
            state: Box::new(PyValue::None),
        }
    );
}

/// Cheap deterministic mutation fuzzing, so `cargo test` exercises the no-panic promise
/// on every run (the real fuzzer is `cargo fuzz run pickle`).
#[test]
fn mutated_pickles_never_panic() {
    let mut seeds: Vec<Vec<u8>> = vec![
        INT64_314.to_vec(),
        F32_2X3.to_vec(),
        MIXED.to_vec(),
        std::fs::read(data_dir().join("cryodrgn_fixtures/pose.star.pkl")).unwrap(),
        std::fs::read(data_dir().join("cryodrgn_fixtures/ind5.pkl")).unwrap(),
    ];
    seeds.push(
        dumps(&PyValue::List(
            interop_values()
                .into_iter()
                .map(|(_, v)| v)
                .take(6)
                .collect(),
        ))
        .unwrap(),
    );
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in &seeds {
        for _ in 0..3000 {
            let mut b = seed.clone();
            for _ in 0..1 + rnd() % 4 {
                let i = (rnd() as usize) % b.len();
                match rnd() % 4 {
                    0 => b[i] = rnd() as u8,
                    1 => b[i] ^= 1 << (rnd() % 8),
                    2 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, rnd() as u8),
                }
                if b.is_empty() {
                    break;
                }
            }
            let _ = loads(&b);
        }
    }
}
