//! `include/recovar.h` is generated from the ffi crate by cbindgen and committed. This test
//! regenerates it and fails when the committed copy is stale; run it with
//! `RECOVAR_BLESS=1` to rewrite the header. It also checks that the header compiles as C11
//! and C++17 with every warning as an error.

use std::path::Path;

mod common;
use common::root;
use std::process::Command;

fn generate() -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn header_is_fresh() {
    let path = root().join("include/recovar.h");
    let fresh = generate();
    if std::env::var_os("RECOVAR_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/recovar.h is stale: regenerate it with\n  RECOVAR_BLESS=1 cargo test -p recovar-ffi --test header\nand commit it"
    );
}

fn compiles(compiler: &str, args: &[&str], src: &str, ext: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("t.{ext}"));
    std::fs::write(&file, src).unwrap();
    let include = root().join("include");
    let out = Command::new(compiler)
        .args(args)
        .arg("-I")
        .arg(&include)
        .arg("-fsyntax-only")
        .arg(&file)
        .output();
    match out {
        Err(e) => {
            panic!("cannot run {compiler}: {e} (a C/C++ compiler is needed for the ABI tests)")
        }
        Ok(o) => assert!(
            o.status.success(),
            "{compiler} {args:?} failed on recovar.h:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

#[test]
fn header_compiles_as_c11_and_cpp17() {
    let src = "#include \"recovar.h\"\nint main(void) { rcv_dataset_options o; rcv_dataset_options_init(&o); return rcv_abi_version() == RCV_ABI_VERSION ? 0 : 1; }\n";
    compiles(
        "cc",
        &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        src,
        "c",
    );
    compiles(
        "c++",
        &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        src,
        "cpp",
    );
}
