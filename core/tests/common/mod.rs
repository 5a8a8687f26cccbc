//! Shared helpers for the integration tests: where the test data live, and how to run the
//! `recovar` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/data` next to the repository root.
pub fn data() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    assert!(
        p.is_dir(),
        "test data missing: {} (the repository expects ../shared next to its root)",
        p.display()
    );
    p
}

pub fn fixtures() -> PathBuf {
    data().join("cryodrgn_fixtures")
}

pub fn oracles() -> PathBuf {
    data().join("cryodrgn_oracles")
}

/// Run `recovar` with `args` in `cwd`.
pub fn recovar(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recovar"))
        .current_dir(cwd)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run recovar")
}

/// Run `recovar` and require success; returns stdout.
pub fn recovar_ok(cwd: &Path, args: &[&str]) -> String {
    let out = recovar(cwd, args);
    assert!(
        out.status.success(),
        "recovar {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `recovar pipeline` on a 32-px simulated set in `data` (`particles.32.mrcs`, `poses.pkl`,
/// `ctf.pkl`) into `cwd/pipe`, with the `--zdim` list `zdims` and the smallest memory
/// footprint; returns the output folder.
pub fn pipeline_32(cwd: &Path, data: &Path, zdims: &str) -> PathBuf {
    let out = cwd.join("pipe");
    recovar_ok(
        cwd,
        &[
            "pipeline",
            data.join("particles.32.mrcs").to_str().unwrap(),
            "--poses",
            data.join("poses.pkl").to_str().unwrap(),
            "--ctf",
            data.join("ctf.pkl").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--zdim",
            zdims,
            "--very-low-memory-option",
        ],
    );
    out
}

/// Run `recovar`, require failure, and return stderr.
pub fn recovar_err(cwd: &Path, args: &[&str]) -> String {
    let out = recovar(cwd, args);
    assert!(
        !out.status.success(),
        "recovar {args:?} should have failed; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert two arrays agree to `tol` relative to max(1, |want|).
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = w.abs().max(1.0);
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: got {g}, want {w} (tolerance {tol} × {scale})"
        );
    }
}

/// The interpreter for the optional Python cross-checks: `$RECOVAR_TEST_PYTHON`, else
/// `python3`, if it can import every module in `modules`; otherwise `None`, after printing
/// a visible "skipped" line.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let py = std::env::var("RECOVAR_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(py)
    } else {
        println!(
            "skipped: no python3 with {} (interpreter {py:?}; set RECOVAR_TEST_PYTHON)",
            modules.join(" and ")
        );
        None
    }
}
