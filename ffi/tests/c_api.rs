//! Builds the C test programs in `tests/c/` against `include/recovar.h` and the freshly
//! built `librecovar` (static library, so the binary needs no library path), then runs them
//! on the cryoDRGN fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The target folder holding librecovar.a: the test binary lives in `<target>/<profile>/deps`.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn fixtures() -> PathBuf {
    let p = root().join("../shared/data/cryodrgn_fixtures");
    assert!(
        p.is_dir(),
        "test data missing: {} (the repository expects ../shared next to it)",
        p.display()
    );
    p
}

/// `cargo test` builds this crate as an rlib only, so build the static library here: the
/// C program must link the library as it is now, not a stale copy. Runs cargo with the
/// same profile and target folder.
fn build_static_lib() -> PathBuf {
    let dir = lib_dir();
    let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
    let target = dir.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "recovar-ffi", "--lib", "--quiet"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(root());
    if profile == "release" {
        cmd.arg("--release");
    } else if profile != "debug" {
        cmd.args(["--profile", &profile]);
    }
    let st = cmd.status().expect("run cargo");
    assert!(st.success(), "building librecovar failed");
    let lib = dir.join("librecovar.a");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

#[test]
fn c_program_opens_datasets_and_reports_errors() {
    let lib = build_static_lib();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("dataset_open");
    let out = Command::new("cc")
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
        ])
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join("tests/c/dataset_open.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("cannot run cc (a C compiler is needed for the ABI tests)");
    assert!(
        out.status.success(),
        "compiling tests/c/dataset_open.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).arg(fixtures()).output().unwrap();
    assert!(
        run.status.success(),
        "tests/c/dataset_open.c failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
