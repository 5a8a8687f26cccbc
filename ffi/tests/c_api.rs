//! Builds the C test programs in `tests/c/` against `include/recovar.h` and the freshly
//! built `librecovar` (static library, so the binary needs no library path), then runs them
//! on the cryoDRGN fixtures.

mod common;

use std::path::Path;
use std::process::Command;

use common::{build_libraries, fixtures, root, text};

fn build_static_lib() -> std::path::PathBuf {
    build_libraries().join("librecovar.a")
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
    (o.status.success(), text(&o))
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

fn read_f32(p: &Path) -> Vec<f32> {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_f64(p: &Path) -> Vec<f64> {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    b.chunks_exact(8)
        .map(|c| f64::from_le_bytes(std::array::from_fn(|k| c[k])))
        .collect()
}

/// Whether `cc` can build and run an AddressSanitizer program here.
fn asan_available(dir: &Path) -> bool {
    let src = dir.join("asan_probe.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let exe = dir.join("asan_probe");
    Command::new("cc")
        .args(["-fsanitize=address"])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new(&exe)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

/// tests/c/pipeline.c runs the stages through the C ABI on a simulated set; its numbers
/// must be the Rust API's on the same files, bit for bit. Built with AddressSanitizer
/// (leak checking on) when the compiler supports it.
#[test]
fn c_pipeline_matches_the_rust_api_without_leaks() {
    use recovar_core::backend::CpuBackend;
    use recovar_core::dataset::DatasetOptions;
    use recovar_core::generate::KernelOptions;
    use recovar_core::heterogeneity::CovarianceOptions;
    use recovar_core::pipeline::{Model, ModelOptions};
    use recovar_core::progress::NoProgress;
    use recovar_core::simulate::{write_test_dataset, SimulationOptions};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sim = SimulationOptions {
        image_size: 32,
        n_images: 300,
        hinge: false,
        ..Default::default()
    };
    write_test_dataset(&data, &sim, &CpuBackend::new(), &NoProgress).unwrap();

    let exe = dir.path().join("pipeline");
    let lib = build_static_lib();
    let asan = asan_available(dir.path());
    if !asan {
        println!("skipped: AddressSanitizer is not available; the C test runs without it");
    }
    let mut cmd = Command::new("cc");
    cmd.args([
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-O1",
        "-g",
    ]);
    if asan {
        cmd.args(["-fsanitize=address", "-fno-omit-frame-pointer"]);
    }
    let res = cmd
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join("tests/c/pipeline.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(
        res.status.success(),
        "compiling tests/c/pipeline.c failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = Command::new(&exe)
        .arg(&data)
        .arg(&out)
        .env("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1")
        .output()
        .unwrap();
    let text = text(&o);
    assert!(o.status.success(), "tests/c/pipeline.c failed:\n{text}");
    assert!(!text.contains("LeakSanitizer"), "{text}");

    // The same run through the Rust API.
    let mut model = Model::open(
        &DatasetOptions {
            particles: data.join("particles.32.mrcs"),
            poses: Some(data.join("poses.pkl")),
            ctf: Some(data.join("ctf.pkl")),
            ..Default::default()
        },
        ModelOptions {
            zdims: vec![1, 2],
            covariance: CovarianceOptions::low_memory(),
            ..Default::default()
        },
    )
    .unwrap();
    let cpu = CpuBackend::new();
    model.run_all(&cpu, &NoProgress).unwrap();
    let e = model.embedding(2, true).unwrap();
    let same_f32 = |name: &str, want: &[f32]| {
        let got = read_f32(&out.join(name));
        assert_eq!(got.len(), want.len(), "{name}: length");
        let diff = got
            .iter()
            .zip(want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(diff, 0, "{name}: {diff} values differ from the Rust API's");
    };
    same_f32("mean.f32", model.mean().unwrap());
    same_f32("eigen0.f32", &model.eigenvolume(0).unwrap());
    same_f32("variance2.f32", &model.variance_map(2).unwrap());
    same_f32("zs2.f32", e.zs);
    same_f32("precisions2.f32", e.precisions);
    same_f32("contrasts2.f32", e.contrasts);
    assert_eq!(
        read_f64(&out.join("eigenvalues.f64")),
        model.eigenvalues().unwrap()
    );
    assert_eq!(read_f64(&out.join("noise.f64")), model.noise().unwrap());
    // A batch size other than the C call's automatic one: results must not change.
    let kopts = KernelOptions {
        n_bins: 8,
        n_min_images: 20,
        batch_size: 37,
        ..Default::default()
    };
    let v = model
        .generate(2, true, &e.zs[..2], &kopts, &cpu, &NoProgress)
        .unwrap();
    same_f32("generated_unfil.f32", &v.unfil);
    same_f32("generated_filtered.f32", &v.filtered);
    same_f32("generated_locres.f32", &v.local_resolution);
    let mrc = recovar_core::io::mrc::read_volume(out.join("generated.mrc")).unwrap();
    assert_eq!(mrc.data, v.filtered);

    // examples/c/pipeline.c on the same data: its volume is the Rust API's at its point.
    let ex = dir.path().join("example");
    compile("cc", "-std=c11", &root().join("examples/c/pipeline.c"), &ex);
    let vol_path = dir.path().join("example.mrc");
    let (ok, text) = run(
        &ex,
        &[
            &data.join("particles.32.mrcs"),
            &vol_path,
            &data.join("poses.pkl"),
            &data.join("ctf.pkl"),
        ],
    );
    assert!(ok, "examples/c/pipeline.c: {text}");
    let half = model.n_images() / 2;
    let mut point = [0.0f32; 2];
    for row in e.zs.chunks_exact(2).take(half) {
        point[0] += row[0] / half as f32;
        point[1] += row[1] / half as f32;
    }
    let v = model
        .generate(
            2,
            true,
            &point,
            &KernelOptions::default(),
            &cpu,
            &NoProgress,
        )
        .unwrap();
    let got = recovar_core::io::mrc::read_volume(&vol_path).unwrap();
    // The example runs on the default device (auto): bit for bit when that is the CPU.
    if text.contains("device: cpu") {
        assert_eq!(got.data, v.filtered, "examples/c/pipeline.c: {text}");
    } else {
        assert!(
            text.contains("device: cuda:"),
            "examples/c/pipeline.c: {text}"
        );
        assert_eq!(got.data.len(), v.filtered.len());
        println!(
            "skipped: examples/c/pipeline.c ran on a GPU; its volume is not compared bit for bit"
        );
    }
}
