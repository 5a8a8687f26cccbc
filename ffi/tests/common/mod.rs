//! Helpers shared by the ffi integration tests: where the repository, the fixtures and the
//! freshly built libraries are.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// cryoDRGN's fixtures in ../shared.
pub fn fixtures() -> PathBuf {
    let p = root().join("../shared/data/cryodrgn_fixtures");
    assert!(
        p.is_dir(),
        "test data missing: {} (the repository expects ../shared next to it)",
        p.display()
    );
    p
}

/// `<target>/<profile>`: the test binary lives in `<target>/<profile>/deps`.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Build librecovar.so and librecovar.a as they are now, with the test's profile and target
/// folder (`cargo test` builds this crate as an rlib only), and return their folder: the
/// programs under test must link the library as it is, not a stale copy.
pub fn build_libraries() -> PathBuf {
    let dir = lib_dir();
    let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "recovar-ffi", "--lib", "--quiet"])
        .env("CARGO_TARGET_DIR", dir.parent().unwrap())
        .current_dir(root());
    if profile == "release" {
        cmd.arg("--release");
    } else if profile != "debug" {
        cmd.args(["--profile", &profile]);
    }
    assert!(
        cmd.status().expect("run cargo").success(),
        "building librecovar failed"
    );
    for lib in ["librecovar.so", "librecovar.a"] {
        assert!(
            dir.join(lib).is_file(),
            "{} was not built",
            dir.join(lib).display()
        );
    }
    dir
}

/// A process's stdout and stderr, for messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
