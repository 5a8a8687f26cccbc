//! Image subsets (algorithms.md §11) on a synthetic generated-volume folder and synthetic
//! k-means labels: the library (`analysis::subset`) and the two `recovar` subcommands
//! (`extract_image_subset`, `extract_image_subset_from_kmeans`), including their `.star`
//! and `.cs` outputs read back by our parsers.

mod common;

use std::path::{Path, PathBuf};

use recovar_core::analysis::subset::{
    kmeans_subset, read_kmeans_labels, select_subvolume, volume_subset, SubsetTarget, VolumeDir,
};
use recovar_core::io::cs::CsFile;
use recovar_core::io::mrc::{self, Volume};
use recovar_core::io::pickle::{self, NdArray, PyValue};
use recovar_core::io::star::StarFile;

const N: usize = 16;
const VOXEL: f64 = 2.0;
/// Sampling points, centered (x, y, z).
const POINTS: [[i64; 3]; 4] = [[0, 0, 0], [4, 0, 0], [0, -4, 2], [-2, 2, -4]];
/// Local resolution at each point. With maskrad 4 Å the sub-box is M = 12 and its shells
/// are f_k = k/24 Å⁻¹ (k = 0..4), so these pick shells 2, 1, 0 (floored) and 3.
const LOCRES: [f32; 4] = [8.0, 12.0, 50.0, 4.0];
const SHELLS: [usize; 4] = [2, 1, 0, 3];
const N_SHELLS: usize = 5;
const BINS: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
const N_IMAGES: usize = 40;

fn ml_choice(p: usize, s: usize) -> i64 {
    ((2 * p + s) % BINS.len()) as i64
}

fn distance(i: usize) -> f64 {
    if i % 7 == 3 {
        f64::NAN
    } else {
        (i % 13) as f64 * 0.5
    }
}

/// What `volume_subset` must return for sampling point `p`, by brute force.
fn expected(p: usize) -> Vec<usize> {
    let bound = BINS[ml_choice(p, SHELLS[p]) as usize];
    (0..N_IMAGES).filter(|&i| distance(i) < bound).collect()
}

fn voxel_of(p: usize) -> [usize; 3] {
    POINTS[p].map(|c| (c + (N / 2) as i64) as usize)
}

fn s(k: &str) -> PyValue {
    PyValue::Str(k.to_string())
}

fn params(skip: Option<&str>) -> PyValue {
    let ml: Vec<i64> = (0..POINTS.len())
        .flat_map(|p| (0..N_SHELLS).map(move |s| ml_choice(p, s)))
        .collect();
    let pts: Vec<i64> = POINTS.iter().flatten().copied().collect();
    let counts: Vec<i64> = BINS
        .iter()
        .map(|&b| (0..N_IMAGES).filter(|&i| distance(i) < b).count() as i64)
        .collect();
    let n = N as i64;
    let items = vec![
        (
            s("heterogeneity_bins"),
            PyValue::Array(NdArray::from_f64(vec![BINS.len()], BINS.to_vec()).unwrap()),
        ),
        (
            s("n_images_per_bin"),
            PyValue::Array(NdArray::from_i64(vec![BINS.len()], counts).unwrap()),
        ),
        (s("locres_sampling"), PyValue::Float(4.0)),
        (s("locres_maskrad"), PyValue::Float(4.0)),
        (s("voxel_size"), PyValue::Float(VOXEL)),
        (
            s("volume_shape"),
            PyValue::Tuple(vec![PyValue::Int(n), PyValue::Int(n), PyValue::Int(n)]),
        ),
        (
            s("ml_choice"),
            PyValue::Array(NdArray::from_i64(vec![POINTS.len(), N_SHELLS], ml).unwrap()),
        ),
        (
            s("sampling_points"),
            PyValue::Array(NdArray::from_i64(vec![POINTS.len(), 3], pts).unwrap()),
        ),
    ];
    PyValue::Dict(
        items
            .into_iter()
            .filter(|(k, _)| Some(k.as_str().unwrap()) != skip)
            .collect(),
    )
}

/// A generated-volume folder as the kernel-regression code writes it (the contract in
/// `analysis::subset`), with the values above.
fn make_volume_dir(dir: &Path) -> PathBuf {
    let vol = dir.join("vol0000");
    std::fs::create_dir_all(&vol).unwrap();
    pickle::dump(vol.join("params.pkl"), &params(None)).unwrap();
    let mut map = vec![30.0f32; N * N * N];
    for (p, &r) in LOCRES.iter().enumerate() {
        let [x, y, z] = voxel_of(p);
        map[(z * N + y) * N + x] = r;
    }
    mrc::write_volume(
        vol.join("locres.mrc"),
        &Volume::new(map, [N; 3], VOXEL as f32).unwrap(),
    )
    .unwrap();
    let text: String = (0..N_IMAGES)
        .map(|i| {
            let d = distance(i);
            if d.is_nan() {
                "nan\n".to_string()
            } else {
                format!("{d:.18e}\n")
            }
        })
        .collect();
    std::fs::write(vol.join("heterogeneity_distances.txt"), text).unwrap();
    vol
}

/// A mask of ones on a (2h+1)³ cube around `center`, on an `n³` grid.
fn write_mask(path: &Path, n: usize, center: [usize; 3], h: usize) {
    let mut m = vec![0.0f32; n * n * n];
    for z in center[2] - h..=center[2] + h {
        for y in center[1] - h..=center[1] + h {
            for x in center[0] - h..=center[0] + h {
                m[(z * n + y) * n + x] = 1.0;
            }
        }
    }
    mrc::write_volume(path, &Volume::new(m, [n; 3], VOXEL as f32).unwrap()).unwrap();
}

fn read_indices(path: &Path) -> Vec<i64> {
    let v = pickle::load(path).unwrap();
    let a = v.as_array().expect("an array");
    assert_eq!(a.dtype(), pickle::Dtype::I64);
    assert_eq!(a.ndim(), 1);
    a.as_i64().unwrap().to_vec()
}

fn as_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&i| i as i64).collect()
}

#[test]
fn subvolume_index_selects_the_bin_at_the_local_resolution_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = VolumeDir::load(&make_volume_dir(tmp.path())).unwrap();
    assert_eq!(dir.n_points(), POINTS.len());
    assert_eq!(dir.box_size(), N);
    for p in 0..POINTS.len() {
        let c = select_subvolume(&dir, &SubsetTarget::SubvolIdx(p)).unwrap();
        assert_eq!(c.point, p);
        assert_eq!(c.voxel, voxel_of(p));
        assert_eq!(c.local_resolution, f64::from(LOCRES[p]));
        assert_eq!(c.shell, SHELLS[p], "point {p}");
        assert_eq!(c.bin, ml_choice(p, SHELLS[p]) as usize);
        assert_eq!(c.distance_bound, BINS[c.bin]);
        let got = volume_subset(&dir, &SubsetTarget::SubvolIdx(p)).unwrap();
        assert_eq!(got, expected(p), "point {p}");
        assert!(!got.is_empty());
        assert!(got.iter().all(|&i| !distance(i).is_nan()));
    }
}

#[test]
fn coordinate_and_mask_agree_with_the_subvolume_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = VolumeDir::load(&make_volume_dir(tmp.path())).unwrap();
    for p in 0..POINTS.len() {
        let by_idx = volume_subset(&dir, &SubsetTarget::SubvolIdx(p)).unwrap();
        let v = voxel_of(p).map(|c| c as f64);
        let at = volume_subset(&dir, &SubsetTarget::Coordinate(v)).unwrap();
        assert_eq!(at, by_idx, "coordinate of point {p}");
        // Near it (well inside half the spacing) still picks it.
        let near = [v[0] + 0.9, v[1] - 0.6, v[2] + 0.3];
        let c = select_subvolume(&dir, &SubsetTarget::Coordinate(near)).unwrap();
        assert_eq!(c.point, p);
        let mask = tmp.path().join(format!("mask{p}.mrc"));
        write_mask(&mask, N, voxel_of(p), 1);
        let by_mask = volume_subset(&dir, &SubsetTarget::Mask(mask)).unwrap();
        assert_eq!(by_mask, by_idx, "mask around point {p}");
    }
    // Equidistant from points 0 (8,8,8) and 1 (12,8,8): the first wins, as numpy's argmin.
    let c = select_subvolume(&dir, &SubsetTarget::Coordinate([10.0, 8.0, 8.0])).unwrap();
    assert_eq!(c.point, 0);
}

#[test]
fn bad_targets_and_folders_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = make_volume_dir(tmp.path());
    let dir = VolumeDir::load(&vol).unwrap();
    let err = |t: SubsetTarget| volume_subset(&dir, &t).unwrap_err().to_string();

    let e = err(SubsetTarget::SubvolIdx(4));
    assert!(
        e.contains("subvolume index 4") && e.contains("4 sampling points"),
        "{e}"
    );
    let e = err(SubsetTarget::Coordinate([16.0, 0.0, 0.0]));
    assert!(e.contains("outside") && e.contains("16×16×16"), "{e}");
    let e = err(SubsetTarget::Coordinate([-1.0, 3.0, 3.0]));
    assert!(e.contains("outside"), "{e}");

    let empty = tmp.path().join("empty.mrc");
    mrc::write_volume(
        &empty,
        &Volume::new(vec![0.0; N * N * N], [N; 3], 2.0).unwrap(),
    )
    .unwrap();
    let e = err(SubsetTarget::Mask(empty));
    assert!(e.contains("empty.mrc") && e.contains("all zero"), "{e}");
    let small = tmp.path().join("small.mrc");
    write_mask(&small, 8, [4, 4, 4], 1);
    let e = err(SubsetTarget::Mask(small));
    assert!(e.contains("small.mrc") && e.contains("8×8×8"), "{e}");
    let e = err(SubsetTarget::Mask(tmp.path().join("nope.mrc")));
    assert!(e.contains("nope.mrc"), "{e}");

    // Missing files and entries are named.
    for (file, what) in [
        ("locres.mrc", "locres.mrc"),
        ("params.pkl", "params.pkl"),
        ("heterogeneity_distances.txt", "heterogeneity_distances.txt"),
    ] {
        let t = tempfile::tempdir().unwrap();
        let v = make_volume_dir(t.path());
        std::fs::remove_file(v.join(file)).unwrap();
        let e = VolumeDir::load(&v).unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
    let e = VolumeDir::load(&tmp.path().join("nothing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing"), "{e}");
    for key in [
        "ml_choice",
        "sampling_points",
        "heterogeneity_bins",
        "voxel_size",
    ] {
        pickle::dump(vol.join("params.pkl"), &params(Some(key))).unwrap();
        let e = VolumeDir::load(&vol).unwrap_err().to_string();
        assert!(e.contains("params.pkl") && e.contains(key), "{key}: {e}");
    }
    pickle::dump(vol.join("params.pkl"), &PyValue::List(vec![])).unwrap();
    let e = VolumeDir::load(&vol).unwrap_err().to_string();
    assert!(e.contains("params.pkl") && e.contains("dict"), "{e}");
    // A locres map of another size than volume_shape.
    pickle::dump(vol.join("params.pkl"), &params(None)).unwrap();
    write_mask(&vol.join("locres.mrc"), 8, [4, 4, 4], 1);
    let e = VolumeDir::load(&vol).unwrap_err().to_string();
    assert!(
        e.contains("locres.mrc") && e.contains("volume_shape"),
        "{e}"
    );
}

fn labels() -> Vec<f64> {
    let nan = f64::NAN;
    vec![0.0, 1.0, nan, 2.0, 1.0, nan, 3.0, 0.0, 2.0, 3.0]
}

fn write_kmeans(path: &Path) {
    let l = labels();
    let centers = NdArray::from_f64(vec![4, 2], vec![0.0; 8]).unwrap();
    pickle::dump(
        path,
        &PyValue::Dict(vec![
            (s("centers"), PyValue::Array(centers)),
            (
                s("labels"),
                PyValue::Array(NdArray::from_f64(vec![l.len()], l).unwrap()),
            ),
        ]),
    )
    .unwrap();
}

#[test]
fn kmeans_labels_from_pickles() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("kmeans_result.pkl");
    write_kmeans(&p);
    let l = read_kmeans_labels(&p).unwrap();
    assert_eq!(l.len(), 10);
    assert!(l[2].is_nan() && l[5].is_nan());
    assert_eq!(kmeans_subset(&l, &[1, 3], false), vec![1, 4, 6, 9]);
    assert_eq!(kmeans_subset(&l, &[1, 3], true), vec![0, 3, 7, 8]);

    // A bare int array, as an older centers.pkl could hold.
    let bare = tmp.path().join("bare.pkl");
    let ints = NdArray::from_i64(vec![4], vec![2, 0, 2, 1]).unwrap();
    pickle::dump(&bare, &PyValue::Array(ints)).unwrap();
    assert_eq!(read_kmeans_labels(&bare).unwrap(), vec![2.0, 0.0, 2.0, 1.0]);

    let wrong = tmp.path().join("wrong.pkl");
    pickle::dump(
        &wrong,
        &PyValue::Dict(vec![(s("centers"), PyValue::Int(1))]),
    )
    .unwrap();
    let e = read_kmeans_labels(&wrong).unwrap_err().to_string();
    assert!(
        e.contains("wrong.pkl") && e.contains("labels") && e.contains("centers"),
        "{e}"
    );
    pickle::dump(&wrong, &s("hello")).unwrap();
    let e = read_kmeans_labels(&wrong).unwrap_err().to_string();
    assert!(e.contains("wrong.pkl") && e.contains("str"), "{e}");
    std::fs::write(&wrong, b"not a pickle").unwrap();
    let e = read_kmeans_labels(&wrong).unwrap_err().to_string();
    assert!(e.contains("wrong.pkl"), "{e}");
}

// ---------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_three_target_kinds_write_the_same_indices() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = make_volume_dir(tmp.path());
    let cwd = tmp.path();
    let p = 1;
    let [x, y, z] = voxel_of(p);
    let mask = cwd.join("mask.mrc");
    write_mask(&mask, N, voxel_of(p), 1);
    let coord = format!("{x},{y},{z}");
    let runs: [(&str, Vec<&str>); 3] = [
        ("by_idx.pkl", vec!["--subvol-idx", "1"]),
        ("by_coord.pkl", vec!["--coordinate", &coord]),
        ("by_mask.pkl", vec!["--mask", path_str(&mask)]),
    ];
    for (out, target) in &runs {
        let mut args = vec![
            "extract_image_subset",
            "--input-dir",
            path_str(&vol),
            "--output",
            out,
        ];
        args.extend(target.iter().copied());
        let stdout = common::recovar_ok(cwd, &args);
        let n = expected(p).len();
        assert!(stdout.contains(&format!("selected {n} of")), "{stdout}");
        assert_eq!(read_indices(&cwd.join(out)), as_i64(&expected(p)), "{out}");
    }
    // The dashed spelling and -o/-s work too.
    common::recovar_ok(
        cwd,
        &[
            "extract-image-subset",
            "--input-dir",
            path_str(&vol),
            "-o",
            "s.pkl",
            "-s",
            "3",
        ],
    );
    assert_eq!(read_indices(&cwd.join("s.pkl")), as_i64(&expected(3)));
}

#[test]
fn cli_needs_exactly_one_target() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = make_volume_dir(tmp.path());
    let cwd = tmp.path();
    let base = [
        "extract_image_subset",
        "--input-dir",
        path_str(&vol),
        "-o",
        "x.pkl",
    ];
    let e = common::recovar_err(cwd, &base);
    assert!(e.contains("--subvol-idx") && e.contains("required"), "{e}");
    let mut two = base.to_vec();
    two.extend(["--subvol-idx", "1", "--coordinate", "8,8,8"]);
    let e = common::recovar_err(cwd, &two);
    assert!(e.contains("cannot be used with"), "{e}");
    let mut bad = base.to_vec();
    bad.extend(["--coordinate", "8,8"]);
    let e = common::recovar_err(cwd, &bad);
    assert!(e.contains("three numbers"), "{e}");
    let mut far = base.to_vec();
    far.extend(["--subvol-idx", "9"]);
    let e = common::recovar_err(cwd, &far);
    assert!(e.contains("out of range"), "{e}");
    assert!(!cwd.join("x.pkl").exists());
    // --star without --star-out.
    let mut half = base.to_vec();
    half.extend(["--subvol-idx", "1", "--star", "a.star"]);
    let e = common::recovar_err(cwd, &half);
    assert!(e.contains("--star-out"), "{e}");
}

#[test]
fn cli_writes_star_and_cs_subsets() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = make_volume_dir(tmp.path());
    let cwd = tmp.path();
    let star_in = common::fixtures().join("toy_projections.star");
    let cs_in = common::fixtures().join("cryosparc_P12_J24_001_particles.cs");
    common::recovar_ok(
        cwd,
        &[
            "extract_image_subset",
            "--input-dir",
            path_str(&vol),
            "-o",
            "idx.pkl",
            "--subvol-idx",
            "0",
            "--star",
            path_str(&star_in),
            "--star-out",
            "sub/subset.star",
            "--cs",
            path_str(&cs_in),
            "--cs-out",
            "sub/subset.cs",
        ],
    );
    let want = expected(0);
    assert_eq!(read_indices(&cwd.join("idx.pkl")), as_i64(&want));
    let orig = StarFile::read(&star_in).unwrap();
    let sub = StarFile::read(cwd.join("sub/subset.star")).unwrap();
    let (ot, st) = (orig.particles().unwrap(), sub.particles().unwrap());
    assert_eq!(st.n_rows(), want.len());
    for (i, &r) in want.iter().enumerate() {
        assert_eq!(st.row(i), ot.row(r));
    }
    let orig = CsFile::read(&cs_in).unwrap();
    let sub = CsFile::read(cwd.join("sub/subset.cs")).unwrap();
    assert_eq!(sub.len(), want.len());
    let paths = (orig.blob_indices().unwrap(), sub.blob_indices().unwrap());
    for (i, &r) in want.iter().enumerate() {
        assert_eq!(paths.1[i], paths.0[r]);
    }

    // A particle file with fewer particles than the indices need: nothing is written.
    let small = common::fixtures().join("relion31.star");
    let e = common::recovar_err(
        cwd,
        &[
            "extract_image_subset",
            "--input-dir",
            path_str(&vol),
            "-o",
            "none.pkl",
            "--subvol-idx",
            "0",
            "--star",
            path_str(&small),
            "--star-out",
            "none.star",
        ],
    );
    assert!(
        e.contains("relion31.star") && e.contains("5 particles"),
        "{e}"
    );
    assert!(!cwd.join("none.pkl").exists() && !cwd.join("none.star").exists());
}

#[test]
fn cli_kmeans_subsets() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    write_kmeans(&cwd.join("kmeans_result.pkl"));
    let out = common::recovar_ok(
        cwd,
        &[
            "extract_image_subset_from_kmeans",
            "kmeans_result.pkl",
            "keep.pkl",
            "1,3",
        ],
    );
    assert!(out.contains("selected 4 of 8"), "{out}");
    assert_eq!(read_indices(&cwd.join("keep.pkl")), vec![1, 4, 6, 9]);
    common::recovar_ok(
        cwd,
        &[
            "extract_image_subset_from_kmeans",
            "kmeans_result.pkl",
            "inv.pkl",
            "1,3",
            "-i",
        ],
    );
    assert_eq!(read_indices(&cwd.join("inv.pkl")), vec![0, 3, 7, 8]);
    common::recovar_ok(
        cwd,
        &[
            "extract_image_subset_from_kmeans",
            "kmeans_result.pkl",
            "inv2.pkl",
            "1,3",
            "--inverse",
            "--cs",
            path_str(&common::fixtures().join("cryosparc_P12_J24_001_particles.cs")),
            "--cs-out",
            "inv.cs",
            "--star",
            path_str(&common::fixtures().join("toy.star")),
            "--star-out",
            "inv.star",
        ],
    );
    assert_eq!(read_indices(&cwd.join("inv2.pkl")), vec![0, 3, 7, 8]);
    assert_eq!(CsFile::read(cwd.join("inv.cs")).unwrap().len(), 4);
    let star = StarFile::read(cwd.join("inv.star")).unwrap();
    assert_eq!(star.particles().unwrap().n_rows(), 4);

    // empiar_10076_7.cs has 7 particles: index 8 does not fit, and nothing is written.
    let e = common::recovar_err(
        cwd,
        &[
            "extract_image_subset_from_kmeans",
            "kmeans_result.pkl",
            "small.pkl",
            "1,3",
            "-i",
            "--cs",
            path_str(&common::fixtures().join("empiar_10076_7.cs")),
            "--cs-out",
            "small.cs",
        ],
    );
    assert!(
        e.contains("empiar_10076_7.cs") && e.contains("7 particles"),
        "{e}"
    );
    assert!(!cwd.join("small.pkl").exists() && !cwd.join("small.cs").exists());

    let e = common::recovar_err(
        cwd,
        &[
            "extract_image_subset_from_kmeans",
            "kmeans_result.pkl",
            "x.txt",
            "1",
        ],
    );
    assert!(e.contains("x.txt") && e.contains(".pkl"), "{e}");
    let e = common::recovar_err(
        cwd,
        &[
            "extract_image_subset_from_kmeans",
            "missing.pkl",
            "x.pkl",
            "1",
        ],
    );
    assert!(e.contains("missing.pkl"), "{e}");
}
