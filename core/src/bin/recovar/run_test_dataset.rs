//! `recovar run_test_dataset [-o dir] [--keep] [--image-size 32] [--n-images 2000]`
//!
//! Checks an install in one command: simulates a small dataset with three discrete states,
//! runs every step of a RECOVAR analysis on it as separate `recovar` processes (as a user
//! would), prints which steps passed or failed with the Python tool's summary lines, and
//! then — beyond the Python tool, which only checks exit codes — compares the numbers with
//! the simulator's ground truth (`recovar_core::pipeline::selftest`) and fails loudly when
//! they are off. The test folder is deleted when everything passed, unless `--keep`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use recovar_core::analysis::density::read_density;
use recovar_core::analysis::subset::read_kmeans_labels;
use recovar_core::backend::Device;
use recovar_core::io::mrc;
use recovar_core::pipeline::load::PipelineResult;
use recovar_core::pipeline::selftest::{
    fsc_05, json_numbers, json_rows, state_means, state_signal_correlations, travel_cost,
    voronoi_mass, Check, Truth,
};
use recovar_core::stats::adjusted_rand_index;

use crate::common::DeviceArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Folder for the test; the dataset and every output go to <dir>/test_dataset/
    /// (default: a new folder in the system's temporary directory)
    #[arg(short = 'o', long = "output-dir")]
    output_dir: Option<PathBuf>,
    /// Keep the test folder even when every step passed
    #[arg(long, alias = "no-delete")]
    keep: bool,
    /// Image side in pixels
    #[arg(long = "image-size", default_value_t = 32)]
    image_size: usize,
    /// Number of simulated images
    #[arg(long = "n-images", default_value_t = 2000)]
    n_images: usize,
    /// Seed of the simulation
    #[arg(long, default_value_t = 0)]
    seed: u64,
    // Passed on to every step that takes it.
    #[command(flatten)]
    device: DeviceArgs,
}

/// The steps that run on a device (and take `--device`).
const DEVICE_STEPS: [&str; 6] = [
    "make_test_dataset",
    "pipeline",
    "analyze",
    "compute_trajectory",
    "compute_state",
    "generate_from_embedding",
];

/// Pass `--device` on to each step whose command takes it.
fn with_device(steps: &mut [Step], device: Device) {
    for s in steps {
        if s.args
            .first()
            .is_some_and(|c| DEVICE_STEPS.contains(&c.as_str()))
        {
            s.args.extend(["--device".to_string(), device.to_string()]);
        }
    }
}

/// One `recovar` invocation.
struct Step {
    /// Name in the summary (the Python tool's function names).
    name: &'static str,
    args: Vec<String>,
}

/// Run `recovar <args>` with its output in `log`; echo the last lines on failure.
fn run_step(exe: &Path, step: &Step, log: &Path) -> Result<bool> {
    let file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = file.try_clone()?;
    let status = Command::new(exe)
        .args(&step.args)
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .status()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    if !status.success() {
        let lines: Vec<String> = std::fs::File::open(log)
            .map(|f| BufReader::new(f).lines().map_while(|l| l.ok()).collect())
            .unwrap_or_default();
        eprintln!("    recovar {}", step.args.join(" "));
        for l in &lines[lines.len().saturating_sub(15)..] {
            eprintln!("    | {l}");
        }
        eprintln!("    (full output: {})", log.display());
    }
    Ok(status.success())
}

/// Paths of the run.
struct Layout {
    data: PathBuf,
    out: PathBuf,
    analysis: PathBuf,
    density: PathBuf,
    states: PathBuf,
    trajectory: PathBuf,
    external: PathBuf,
    state_points: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Layout {
        let data = root.join("test_dataset");
        let out = data.join("pipeline_output");
        Layout {
            analysis: out.join("analysis_2_noreg"),
            density: out.join("density"),
            states: out.join("true_state_volumes"),
            trajectory: out.join("trajectory1"),
            external: data.join("reconstruct_output"),
            state_points: data.join("true_state_points.txt"),
            out,
            data,
        }
    }
}

fn numeric_checks(l: &Layout, zdim: usize) -> Vec<std::result::Result<Check, (String, String)>> {
    let truth = match Truth::load(&l.data) {
        Ok(t) => t,
        Err(e) => return vec![Err(("ground truth".into(), e.to_string()))],
    };
    let mut out = Vec::new();
    let n = truth.box_size;
    let nyquist = 2.0 * truth.voxel_size;
    let mean_path = l.out.join("output/volumes/mean.mrc");
    let mean = mrc::read_volume(&mean_path).map(|v| v.data);

    // 1. The mean: FSC with the true mean stays above 0.5 to 1.5× the Nyquist resolution.
    out.push(
        mean.as_ref()
            .map_err(|e| e.to_string())
            .and_then(|m| fsc_05(m, &truth.gt_mean, n, truth.voxel_size).map_err(|e| e.to_string()))
            .map(|r| {
                Check::new(
                    "mean: resolution at FSC 0.5 with the true mean (Å)",
                    r,
                    1.5 * nyquist,
                    true,
                    format!("Nyquist {nyquist:.1} Å"),
                )
            })
            .map_err(|e| ("mean".to_string(), e)),
    );

    // 2. State separation: k-means (3 clusters) on the 2-D embedding vs the true states.
    out.push(
        read_kmeans_labels(&l.analysis.join("kmeans_result.pkl"))
            .map_err(|e| e.to_string())
            .and_then(|labels| {
                if labels.len() != truth.states.len() {
                    return Err(format!(
                        "{} k-means labels for {} images",
                        labels.len(),
                        truth.states.len()
                    ));
                }
                let lab: Vec<usize> = labels.iter().map(|&x| x.max(0.0) as usize).collect();
                adjusted_rand_index(&lab, &truth.states).ok_or_else(|| "no labels".to_string())
            })
            .map(|ari| {
                Check::new(
                    "states: adjusted Rand index of k-means vs the true states",
                    ari,
                    0.8,
                    false,
                    String::new(),
                )
            })
            .map_err(|e| ("k-means".to_string(), e)),
    );

    // 3. Volumes at the true states' mean latent points (compute_state and
    //    generate_from_embedding): each shows its own state's difference from the mean.
    for (name, dir, bound) in [
        ("compute_state", &l.states, 0.5),
        ("generate_from_embedding", &l.external, 0.4),
    ] {
        for st in 0..truth.n_states {
            let r = (|| -> std::result::Result<Check, String> {
                let m = mean.as_ref().map_err(|e| e.to_string())?;
                let p = dir.join(format!("all_volumes/vol{st:04}.mrc"));
                let v = mrc::read_volume(&p).map_err(|e| e.to_string())?.data;
                let c = state_signal_correlations(&v, m, &truth);
                let others = c
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != st)
                    .map(|(_, &x)| x)
                    .fold(f64::NEG_INFINITY, f64::max);
                let res = fsc_05(&v, &truth.gt_states[st], n, truth.voxel_size)
                    .map_err(|e| e.to_string())?;
                // Passing needs the right state to win as well as a high correlation.
                let value = if c[st] > others { c[st] } else { -1.0 };
                Ok(Check::new(
                    &format!("{name}: state {st} volume, correlation of its difference map with the truth's"),
                    value,
                    bound,
                    false,
                    format!(
                        "with the other states' at most {others:.2}; FSC 0.5 with the true state at {res:.1} Å"
                    ),
                ))
            })();
            out.push(r.map_err(|e| (format!("{name} state {st}"), e)));
        }
    }

    // 4. Density: the deconvolved density's mass around each true state vs its population.
    let knee = l.density.join("deconv_density_knee.pkl");
    let density = read_density(&knee);
    let points = PipelineResult::load(&l.out)
        .and_then(|pr| pr.embedding(zdim, true))
        .and_then(|e| state_means(&e.zs, zdim, &truth));
    out.push(
        match (&density, &points) {
            (Ok(g), Ok(p)) => {
                let mass = voronoi_mass(g, p);
                let pop = truth.populations();
                let err = mass
                    .iter()
                    .zip(&pop)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                Ok(Check::new(
                    "density: largest error of the state populations read from the density",
                    err,
                    0.1,
                    true,
                    format!(
                        "density {:?}, true {:?}",
                        mass.iter()
                            .map(|x| (x * 1000.0).round() / 1000.0)
                            .collect::<Vec<_>>(),
                        pop.iter()
                            .map(|x| (x * 1000.0).round() / 1000.0)
                            .collect::<Vec<_>>()
                    ),
                ))
            }
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        }
        .map_err(|e| ("density".to_string(), e)),
    );

    // 5. Trajectory: its travel time through the density is no longer than the straight
    //    segment's (the path search minimizes it; between separate states both cross the gap).
    out.push(
        (|| -> std::result::Result<Check, String> {
            let g = density.as_ref().map_err(|e| e.to_string())?;
            let p = l.trajectory.join("path.json");
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let a = json_numbers(&text, "start").ok_or("path.json has no start")?;
            let b = json_numbers(&text, "end").ok_or("path.json has no end")?;
            let path: Vec<Vec<f32>> = json_rows(&text, "path")
                .ok_or("path.json has no path")?
                .iter()
                .map(|r| r.iter().map(|&x| x as f32).collect())
                .collect();
            let k = path.len().max(2);
            let segment: Vec<Vec<f32>> = (0..k)
                .map(|i| {
                    let t = i as f64 / (k - 1) as f64;
                    a.iter().zip(&b).map(|(x, y)| (x + t * (y - x)) as f32).collect()
                })
                .collect();
            let (cp, cs) = (travel_cost(g, &path), travel_cost(g, &segment));
            Ok(Check::new(
                "trajectory: travel time through the density along the path / along the straight segment",
                cp / cs.max(f64::MIN_POSITIVE),
                1.02,
                true,
                format!("{} path points", path.len()),
            ))
        })()
        .map_err(|e| ("trajectory".to_string(), e)),
    );
    out
}

/// Write the mean noreg latent point of each true state (for compute_state and
/// generate_from_embedding).
fn write_state_points(l: &Layout, zdim: usize) -> Result<()> {
    let truth = Truth::load(&l.data)?;
    let pr = PipelineResult::load(&l.out)?;
    let emb = pr.embedding(zdim, true)?;
    let pts = state_means(&emb.zs, zdim, &truth)?;
    recovar_core::generate::output::write_latent_points(&l.state_points, &pts)?;
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    if a.image_size < 16 || !a.image_size.is_multiple_of(2) {
        bail!("--image-size must be even and at least 16");
    }
    if a.n_images < 300 {
        bail!(
            "--n-images must be at least 300 (three states, 100 images each for kernel regression)"
        );
    }
    // An explicit GPU that cannot be used fails here, not in every step.
    let note = a.device.select_quietly()?.note;
    let root = match &a.output_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("recovar_test_{}", std::process::id())),
    };
    // Only what this run created is deleted afterwards: never a folder the user named.
    let created_root = !root.exists();
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let exe = std::env::current_exe().context("cannot find the recovar executable")?;
    let l = Layout::new(&root);
    let logs = root.join("test_logs");
    std::fs::create_dir_all(&logs)?;
    let zdim = 2;
    let p = |x: &Path| x.display().to_string();
    let (root_s, out) = (p(&root), p(&l.out));
    let particles = p(&l.data.join(format!("particles.{}.mrcs", a.image_size)));
    let (poses, ctf) = (p(&l.data.join("poses.pkl")), p(&l.data.join("ctf.pkl")));
    let knee = p(&l.density.join("deconv_density_knee.pkl"));
    let kmeans = p(&l.analysis.join("kmeans_result.pkl"));
    let (states, points) = (p(&l.states), p(&l.state_points));
    let (size, n_images, seed) = (
        a.image_size.to_string(),
        a.n_images.to_string(),
        a.seed.to_string(),
    );
    let dataset = ["--poses", &poses, "--ctf", &ctf];
    let analyze = [
        "analyze",
        &out,
        "--zdim",
        "2",
        "--no-z-regularization",
        "--n-clusters",
        "3",
    ];
    let step = |name: &'static str, parts: &[&[&str]]| Step {
        name,
        args: parts.concat().iter().map(|t| t.to_string()).collect(),
    };
    let mut steps: Vec<Step> = vec![
        step(
            "make_test_dataset",
            &[
                &[
                    "make_test_dataset",
                    &root_s,
                    "--image-size",
                    &size,
                    "--n-images",
                    &n_images,
                ],
                &["--seed", &seed, "--discrete-only"],
            ],
        ),
        step(
            "pipeline",
            &[
                &["pipeline", &particles],
                &dataset,
                &["-o", &out],
                &[
                    "--correct-contrast",
                    "--mask",
                    "from_halfmaps",
                    "--lazy",
                    "--ignore-zero-frequency",
                ],
            ],
        ),
        step("analyze", &[&analyze, &["--n-trajectories", "0"]]),
        step(
            "estimate_conformational_density",
            &[&["estimate_conformational_density", &out, "--pca_dim", "2"]],
        ),
        step(
            "compute_trajectory",
            &[
                &["compute_trajectory", &out, "-o", &p(&l.trajectory)],
                &[
                    "--endpts",
                    &p(&l.analysis.join("kmeans_center_coords.txt")),
                    "--ind",
                    "0,1",
                ],
                &[
                    "--zdim",
                    "2",
                    "--n-vols-along-path",
                    "3",
                    "--density",
                    &knee,
                ],
            ],
        ),
        step(
            "analyze --density",
            &[
                &analyze,
                &["--n-trajectories", "1", "--skip-centers", "--skip-umap"],
                &["--n-vols-along-path", "2", "--density", &knee],
            ],
        ),
        step(
            "compute_state",
            &[
                &[
                    "compute_state",
                    &out,
                    "-o",
                    &states,
                    "--latent-points",
                    &points,
                ],
                &["--no-z-regularization"],
            ],
        ),
        step(
            "extract_image_subset",
            &[
                &[
                    "extract_image_subset",
                    "--input-dir",
                    &p(&l.states.join("vol0000")),
                ],
                &[
                    "-o",
                    &p(&l.data.join("subset_state0.pkl")),
                    "--subvol-idx",
                    "0",
                ],
                &["--star", &p(&l.data.join("particles.star"))],
                &["--star-out", &p(&l.data.join("subset_state0.star"))],
            ],
        ),
        step(
            "extract_image_subset_from_kmeans",
            &[&[
                "extract_image_subset_from_kmeans",
                &kmeans,
                &p(&l.data.join("subset_cluster0.pkl")),
                "0",
            ]],
        ),
        step(
            "generate_from_embedding",
            &[
                &["generate_from_embedding", &particles],
                &dataset,
                &[
                    "--embedding",
                    &p(&l.out.join("model/zdim_2/latent_coords_noreg.npy")),
                ],
                &["--target", &points, "-o", &p(&l.external)],
            ],
        ),
    ];
    with_device(&mut steps, a.device.device);
    println!(
        "RECOVAR self-test in {} ({} images of {} px, three states); {note}",
        root.display(),
        a.n_images,
        a.image_size
    );
    let mut passed: Vec<&str> = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if step.name == "compute_state" {
            // The true states' latent points come from the pipeline's embedding.
            if let Err(e) = write_state_points(&l, zdim) {
                eprintln!("    cannot place the true states in the embedding: {e:#}");
            }
        }
        let t = Instant::now();
        let log = logs.join(format!(
            "{:02}_{}.log",
            i + 1,
            step.name.replace([' ', '-'], "_")
        ));
        let ok = run_step(&exe, step, &log)?;
        println!(
            "[{:>2}/{}] {:<34} {} ({:.1} s)",
            i + 1,
            steps.len(),
            step.name,
            if ok { "passed" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if ok {
            passed.push(step.name);
        } else {
            failed.push(step.name);
        }
    }

    println!("\nChecks against the simulation's ground truth:");
    let checks = numeric_checks(&l, zdim);
    let mut checks_failed = 0;
    for c in &checks {
        match c {
            Ok(c) => {
                let ok = c.passed();
                if !ok {
                    checks_failed += 1;
                }
                println!(
                    "  {} {}: {:.3} (needs {} {:.3}){}",
                    if ok { "ok  " } else { "FAIL" },
                    c.name,
                    c.value,
                    if c.at_most { "≤" } else { "≥" },
                    c.bound,
                    if c.detail.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", c.detail)
                    }
                );
            }
            Err((name, e)) => {
                checks_failed += 1;
                println!("  FAIL {name}: could not be checked: {e}");
            }
        }
    }

    println!("\nTotal steps passed: {}", passed.len());
    println!("Total steps failed: {}", failed.len());
    println!(
        "Numeric checks passed: {} of {}",
        checks.len() - checks_failed,
        checks.len()
    );
    println!("Total time: {:.0} s", started.elapsed().as_secs_f64());
    if failed.is_empty() && checks_failed == 0 {
        println!("\nAll functions completed successfully!");
        if a.keep {
            println!("Outputs kept in {}", root.display());
        } else {
            let doomed = if created_root {
                vec![root.clone()]
            } else {
                vec![l.data.clone(), logs.clone()]
            };
            for d in &doomed {
                std::fs::remove_dir_all(d)
                    .with_context(|| format!("cannot delete {}", d.display()))?;
            }
            println!(
                "Test dataset directory '{}' has been deleted.",
                doomed[0].display()
            );
        }
        Ok(())
    } else {
        if !failed.is_empty() {
            println!("\nThe following functions failed:");
            for f in &failed {
                println!("  - {f}");
            }
        }
        if checks_failed > 0 {
            println!("\n{checks_failed} numeric check(s) against the ground truth failed.");
        }
        println!(
            "\nPlease check the output above for details; everything is in {}",
            root.display()
        );
        bail!("the self-test failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_goes_to_the_steps_that_take_it() {
        let step = |cmd: &str| Step {
            name: "x",
            args: vec![cmd.to_string(), "a".to_string()],
        };
        let mut steps: Vec<Step> = DEVICE_STEPS
            .iter()
            .copied()
            .chain(["estimate_conformational_density", "extract_image_subset"])
            .map(step)
            .collect();
        with_device(&mut steps, Device::Cuda(1));
        for s in &steps {
            let takes = DEVICE_STEPS.contains(&s.args[0].as_str());
            let tail = &s.args[s.args.len() - 2..];
            assert_eq!(tail == ["--device", "cuda:1"], takes, "{:?}", s.args);
        }
    }
}
