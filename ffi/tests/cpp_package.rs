//! The installed C/C++ package: `bindings/cpp/install.sh` into a temporary prefix, then
//! - `tests/cpp` (a CMake project with `find_package(recovar)`) is configured, built against
//!   the shared and the static library, and run: it reads cryoDRGN's z.pkl fixture
//!   (1319 × 2) and generates a volume at a latent point on a simulated 32-px dataset of
//!   1319 images; the MRC it writes is checked here;
//! - `examples/cpp/pipeline.cpp` is built with `pkg-config --cflags --libs recovar` and run
//!   through every pipeline stage.
//!
//! Needs `cmake` (tests/tools/ensure_cmake.sh installs it) and `pkg-config`; each part prints
//! `skipped: ...` when its tool is missing. The header-only wrapper is also compiled as
//! C++17 and C++20 (its std::span overloads) with every warning an error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{build_libraries, fixtures, root, text};

use recovar_core::backend::CpuBackend;
use recovar_core::dataset::{Dataset, DatasetOptions};
use recovar_core::generate::output::read_embedding;
use recovar_core::generate::KernelOptions;
use recovar_core::io::mrc;
use recovar_core::pipeline::generate_from_embedding;
use recovar_core::progress::NoProgress;
use recovar_core::simulate::{write_test_dataset, SimulationOptions};

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let t = text(&o);
    assert!(o.status.success(), "{what} failed:\n{t}");
    t
}

/// `cmake` from RECOVAR_CMAKE, PATH, or ~/.local/bin (where `pip install --user` puts it).
fn find_cmake() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(c) = std::env::var_os("RECOVAR_CMAKE") {
        candidates.push(c.into());
    }
    candidates.push("cmake".into());
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".local/bin/cmake"));
    }
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Simulate `n` images of 32 px (seed 5, as core/tests/generate.rs does); returns
/// (particles, poses, ctf).
fn simulate(dir: &Path, n: usize) -> (PathBuf, PathBuf, PathBuf) {
    let opts = SimulationOptions {
        image_size: 32,
        n_images: n,
        seed: 5,
        ..Default::default()
    };
    let w = write_test_dataset(dir, &opts, &CpuBackend::new(), &NoProgress).unwrap();
    (w.particles, dir.join("poses.pkl"), dir.join("ctf.pkl"))
}

/// A 32³ MRC with finite, not all zero values; returns its voxels.
fn check_volume(path: &Path) -> Vec<f32> {
    let v = mrc::read_volume(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(v.shape, [32, 32, 32], "{}", path.display());
    assert!(
        v.data.iter().all(|x| x.is_finite()),
        "{}: non-finite voxels",
        path.display()
    );
    assert!(
        v.data.iter().any(|&x| x != 0.0),
        "{}: all zero",
        path.display()
    );
    assert!(v.voxel_size > 0.0, "{}: voxel size", path.display());
    v.data
}

/// The unfiltered volume the Rust API generates from `zpkl` at (0.1, -0.2) with 6 bins:
/// what tests/cpp/volume_from_zpkl.cpp asks the C++ wrapper for.
fn rust_api_volume(particles: &Path, poses: &Path, ctf: &Path, zpkl: &Path) -> Vec<f32> {
    let ds = Dataset::open(&DatasetOptions {
        particles: particles.to_path_buf(),
        poses: Some(poses.to_path_buf()),
        ctf: Some(ctf.to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let (zs, _, zdim) = read_embedding(zpkl, false).unwrap();
    let kopts = KernelOptions {
        n_bins: 6,
        ..Default::default()
    };
    let v = generate_from_embedding(
        &ds,
        &zs,
        zdim,
        &[],
        &[0.1, -0.2],
        &kopts,
        &CpuBackend::new(),
        &NoProgress,
    )
    .unwrap();
    v.unfil
}

fn pkg_config(prefix: &Path, args: &[&str]) -> String {
    let o = Command::new("pkg-config")
        .args(args)
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("run pkg-config");
    assert!(o.status.success(), "pkg-config {args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn installed_package_builds_with_cmake_and_pkg_config() {
    let libs = build_libraries();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let out = run_ok(
        Command::new("bash")
            .arg(root().join("bindings/cpp/install.sh"))
            .arg("--prefix")
            .arg(&prefix)
            .arg("--lib-dir")
            .arg(&libs),
        "bindings/cpp/install.sh",
    );
    assert!(out.contains("installed recovar"), "{out}");
    for f in [
        "lib/librecovar.so",
        "lib/librecovar.a",
        "include/recovar.h",
        "include/recovar.hpp",
        "lib/cmake/recovar/recovarConfig.cmake",
        "lib/cmake/recovar/recovarConfigVersion.cmake",
        "lib/pkgconfig/recovar.pc",
    ] {
        assert!(prefix.join(f).is_file(), "install.sh did not write {f}");
    }

    // --- CMake: find_package(recovar), shared and static, on cryoDRGN's z.pkl.
    match find_cmake() {
        None => println!("skipped: cmake not found (tests/tools/ensure_cmake.sh installs it)"),
        Some(cmake) => {
            let data = tmp.path().join("data1319");
            let (particles, poses, ctf) = simulate(&data, 1319);
            let build = tmp.path().join("build");
            run_ok(
                Command::new(&cmake)
                    .arg("-S")
                    .arg(root().join("tests/cpp"))
                    .arg("-B")
                    .arg(&build)
                    .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
                    .arg("-DCMAKE_BUILD_TYPE=Release"),
                "cmake configure of tests/cpp",
            );
            run_ok(
                Command::new(&cmake).arg("--build").arg(&build),
                "cmake --build of tests/cpp",
            );
            let mrc_out = tmp.path().join("zpkl_volume.mrc");
            let zpkl = fixtures().join("zvals_het-2_1k.pkl");
            let t = run_ok(
                Command::new(build.join("volume_from_zpkl"))
                    .arg(&particles)
                    .arg(&poses)
                    .arg(&ctf)
                    .arg(&zpkl)
                    .arg(&mrc_out),
                "volume_from_zpkl (CMake, shared library)",
            );
            assert!(t.contains("embedding: 1319 x 2"), "{t}");
            check_volume(&mrc_out);
            let unfil = check_volume(&tmp.path().join("zpkl_volume.mrc.unfil.mrc"));
            // The very volume the library's Rust API makes (results are deterministic).
            assert!(
                unfil == rust_api_volume(&particles, &poses, &ctf, &zpkl),
                "the C++ program's volume differs from the Rust API's"
            );
            // The static build runs without any library path.
            let t = run_ok(
                Command::new(build.join("volume_from_zpkl_static"))
                    .arg("--info")
                    .arg(&particles)
                    .arg(&poses)
                    .arg(&ctf)
                    .env_remove("LD_LIBRARY_PATH"),
                "volume_from_zpkl_static --info (CMake, static library)",
            );
            assert!(t.contains("1319 images of 32 px"), "{t}");
        }
    }

    // --- pkg-config: examples/cpp/pipeline.cpp through every stage.
    if !have("pkg-config") {
        println!("skipped: pkg-config not found");
        return;
    }
    let version = pkg_config(&prefix, &["--modversion", "recovar"]);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let flags = pkg_config(&prefix, &["--cflags", "--libs", "recovar"]);
    let exe = tmp.path().join("pipeline");
    run_ok(
        Command::new("c++")
            .args([
                "-std=c++17",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-O1",
            ])
            .arg(root().join("examples/cpp/pipeline.cpp"))
            .args(flags.split_whitespace())
            .arg("-o")
            .arg(&exe),
        "c++ examples/cpp/pipeline.cpp $(pkg-config --cflags --libs recovar)",
    );
    let data = tmp.path().join("data300");
    let (particles, poses, ctf) = simulate(&data, 300);
    let out = tmp.path().join("pipeline_out");
    let t = run_ok(
        Command::new(&exe)
            .arg(&particles)
            .arg(&poses)
            .arg(&ctf)
            .arg(&out)
            .args(["--zdim", "2", "--n-bins", "6", "--very-low-memory"])
            .env("LD_LIBRARY_PATH", prefix.join("lib")),
        "examples/cpp/pipeline.cpp",
    );
    for stage in [
        "stage mean",
        "stage covariance",
        "stage embedding",
        "principal components",
    ] {
        assert!(t.contains(stage), "missing `{stage}` in:\n{t}");
    }
    check_volume(&out.join("mean.mrc"));
    check_volume(&out.join("volume.mrc"));
}

/// recovar.hpp compiles as C++17 and as C++20 (where its std::span overloads exist), with
/// the test program and the examples, every warning an error.
#[test]
fn wrapper_compiles_as_cpp17_and_cpp20() {
    for std in ["-std=c++17", "-std=c++20"] {
        for src in [
            "tests/cpp/volume_from_zpkl.cpp",
            "examples/cpp/pipeline.cpp",
            "examples/cpp/dataset_info.cpp",
        ] {
            let o = Command::new("c++")
                .args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow"])
                .args(["-Wconversion", "-Wsign-conversion", "-Wold-style-cast"])
                .arg("-fsyntax-only")
                .arg("-I")
                .arg(root().join("include"))
                .arg("-I")
                .arg(root().join("bindings/cpp"))
                .arg(root().join(src))
                .output()
                .unwrap_or_else(|e| panic!("cannot run c++ (needed for the ABI tests): {e}"));
            if std == "-std=c++20" && text(&o).contains("unrecognized command-line option") {
                println!("skipped: c++ does not know {std}");
                continue;
            }
            assert!(o.status.success(), "{src} as {std}:\n{}", text(&o));
        }
    }
}
