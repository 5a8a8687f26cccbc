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

/// Compile `source` with `compiler` and the strictest warnings, linked to librecovar.a.
fn compile(compiler: &str, std: &str, source: &Path, out: &Path) {
    let lib = build_static_lib();
    let res = Command::new(compiler)
        .args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"])
        .arg("-I")
        .arg(root().join("include"))
        .arg("-I")
        .arg(root().join("bindings/cpp"))
        .arg(source)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler} (needed for the ABI tests): {e}"));
    assert!(
        res.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&res.stderr)
    );
}

fn run(exe: &Path, args: &[&Path]) -> (bool, String) {
    let o = Command::new(exe).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn c_program_opens_datasets_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("dataset_open");
    compile(
        "cc",
        "-std=c11",
        &root().join("tests/c/dataset_open.c"),
        &exe,
    );
    let (ok, text) = run(&exe, &[&fixtures()]);
    assert!(ok, "tests/c/dataset_open.c failed:\n{text}");
}

#[test]
fn c_and_cpp_examples_run() {
    let dir = tempfile::tempdir().unwrap();
    let star = fixtures().join("relion31.star");
    let missing = fixtures().join("missing.star");
    for (compiler, std, src) in [
        ("cc", "-std=c11", "examples/c/dataset_info.c"),
        ("c++", "-std=c++17", "examples/cpp/dataset_info.cpp"),
    ] {
        let exe = dir.path().join(format!("ex_{compiler}"));
        compile(compiler, std, &root().join(src), &exe);
        let (ok, text) = run(&exe, &[&star]);
        assert!(ok, "{src}: {text}");
        assert!(
            text.contains("5 images of 256 x 256 px at 2.806"),
            "{src}: {text}"
        );
        let (ok, text) = run(&exe, &[&missing]);
        assert!(!ok && text.contains("missing.star"), "{src}: {text}");
    }
}
