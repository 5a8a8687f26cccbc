//! `--device` on every command that runs on a backend: `cpu` runs and says so in run.log,
//! a GPU that cannot be used is a clear error naming it, and a bad value is refused by the
//! argument parser. (No test machine is known to have a GPU: `cuda:4096` exists nowhere.)

mod common;

use common::*;

/// The commands that take `--device`, each with arguments that get it as far as choosing
/// the device (the inputs need not exist: the device is chosen first).
const COMMANDS: [&[&str]; 7] = [
    &["make_test_dataset", "sim"],
    &["pipeline", "missing.mrcs", "-o", "out"],
    &["analyze", "missing_run", "--zdim", "2"],
    &[
        "compute_state",
        "missing_run",
        "-o",
        "out",
        "--latent-points",
        "p.txt",
    ],
    &[
        "compute_trajectory",
        "missing_run",
        "-o",
        "out",
        "--z_st",
        "a.txt",
        "--z_end",
        "b.txt",
    ],
    &[
        "generate_from_embedding",
        "missing.mrcs",
        "-o",
        "out",
        "--embedding",
        "z.pkl",
        "--target",
        "t.txt",
    ],
    &["run_test_dataset", "-o", "selftest"],
];

#[test]
fn an_unusable_gpu_is_an_error_naming_it_for_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in COMMANDS {
        let args: Vec<&str> = cmd
            .iter()
            .copied()
            .chain(["--device", "cuda:4096"])
            .collect();
        let out = recovar(tmp.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cuda:4096"), "{args:?}: {err}");
        assert!(err.contains("--device cpu or auto"), "{args:?}: {err}");
    }
    // Nothing was simulated, and the self-test made no folder.
    assert!(!tmp.path().join("sim/test_dataset").exists());
    assert!(!tmp.path().join("selftest").exists());
}

#[test]
fn a_bad_device_is_refused_by_the_argument_parser() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in COMMANDS {
        for bad in ["tpu", "cuda:", "cuda:-1"] {
            let args: Vec<&str> = cmd.iter().copied().chain(["--device", bad]).collect();
            let out = recovar(tmp.path(), &args);
            let err = String::from_utf8_lossy(&out.stderr);
            // clap's usage errors exit with 2.
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains(&format!("invalid value '{bad}' for '--device"))
                    && err.contains("expected auto, cpu, cuda or cuda:N"),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn cpu_runs_and_run_log_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    recovar_ok(
        tmp.path(),
        &[
            "make_test_dataset",
            ".",
            "--image-size",
            "32",
            "--n-images",
            "100",
            "--seed",
            "3",
            "--device",
            "cpu",
        ],
    );
    let data = tmp.path().join("test_dataset");
    let run = |device: &str, out: &str| {
        recovar_ok(
            tmp.path(),
            &[
                "pipeline",
                data.join("particles.32.mrcs").to_str().unwrap(),
                "--poses",
                data.join("poses.pkl").to_str().unwrap(),
                "--ctf",
                data.join("ctf.pkl").to_str().unwrap(),
                "-o",
                out,
                "--only-mean",
                "--device",
                device,
            ],
        );
        std::fs::read_to_string(tmp.path().join(out).join("run.log")).unwrap()
    };
    let log = run("cpu", "cpu");
    assert!(log.contains("device: cpu ("), "{log}");
    assert!(!log.contains("auto:"), "{log}");
    // auto says what it chose and why; on a machine without a GPU, the CPU.
    let log = run("auto", "auto");
    assert!(log.contains("device: "), "{log}");
    if log.contains("device: cpu") {
        assert!(log.contains("auto: no usable GPU"), "{log}");
    }
    // The same mean either way when auto chose the CPU (bit for bit).
    let mean = |d: &str| std::fs::read(tmp.path().join(d).join("output/volumes/mean.mrc")).unwrap();
    if log.contains("device: cpu") {
        assert_eq!(mean("cpu"), mean("auto"));
    }
}

#[test]
fn help_explains_the_device_flag_the_same_way_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first: Option<String> = None;
    // make_test_dataset defaults to the CPU (the same bytes for a seed everywhere).
    let help = recovar_ok(tmp.path(), &["make_test_dataset", "--help"]);
    assert!(
        help.contains("--device <cpu|auto|cuda[:N]>") && help.contains("[default: cpu]"),
        "{help}"
    );
    for cmd in COMMANDS.iter().filter(|c| c[0] != "make_test_dataset") {
        let help = recovar_ok(tmp.path(), &[cmd[0], "--help"]);
        // clap lays the help out differently per command; compare the words.
        let start = help
            .find("--device <auto|cpu|cuda[:N]>")
            .unwrap_or_else(|| panic!("{}: {help}", cmd[0]));
        let end = start
            + help[start..]
                .find("[default: auto]")
                .unwrap_or_else(|| panic!("{}: {help}", cmd[0]));
        let text = help[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains("auto uses a CUDA GPU") && text.contains("NVRTC"),
            "{}: {text}",
            cmd[0]
        );
        match &first {
            None => first = Some(text),
            Some(f) => assert_eq!(&text, f, "{}", cmd[0]),
        }
    }
}
