//! Accuracy of kernel-regression volumes against the simulator's ground truth (BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p recovar-core --example kr_accuracy -- \
//!     <dataset_dir> <pipeline_dir> --zdim 2 [--n-sample 12] [--image-size 64 --seed 0] [--discrete-only]
//! ```
//!
//! `dataset_dir` is the `test_dataset/` folder of `recovar make_test_dataset` (ground_truth.txt,
//! gt_state*.mrc) and `pipeline_dir` a `recovar pipeline` run on it. Reports, per true state:
//! the volume generated at the state's mean latent point against the state's ground truth
//! (FSC resolution at 0.5 and 0.143, FSC-AUC), next to a plain reconstruction from exactly
//! the images of that state (what a method that knew the labels could do) and the consensus
//! mean (what ignoring heterogeneity gives); then the per-image FSC-AUC (CryoBench: area under
//! |FSC| up to Nyquist, max 0.5) of volumes generated at a sample of images' embeddings
//! against each image's own ground-truth volume.

use std::path::PathBuf;

use recovar_core::backend::CpuBackend;
use recovar_core::dataset::{Dataset, Uninvert};
use recovar_core::fourier::{fsc, fsc_resolutions, Fft3};
use recovar_core::generate::{generate_volume, KernelOptions, Latent};
use recovar_core::io::{mrc, pickle};
use recovar_core::pipeline::load::PipelineResult;
use recovar_core::progress::NoProgress;
use recovar_core::reconstruct::mean::{estimate_mean, MeanFn};
use recovar_core::simulate::{SimulationOptions, Simulator};

type R<T> = Result<T, Box<dyn std::error::Error>>;

struct Score {
    res05: f64,
    res0143: f64,
    auc: f64,
}

fn score(a: &[f32], b: &[f32], n: usize, vs: f64) -> R<Score> {
    let fft = Fft3::<f32>::new(n);
    let f = fsc(&fft.forward_real_vec(a), &fft.forward_real_vec(b), n, false)?;
    let r = fsc_resolutions(&f, n, vs);
    let auc = f.iter().map(|v| v.abs()).sum::<f64>() / n as f64;
    Ok(Score {
        res05: r.at_0_5,
        res0143: r.at_0_143,
        auc,
    })
}

fn fmt(s: &Score) -> String {
    format!("{:>6.1} Å {:>6.1} Å  AUC {:.3}", s.res05, s.res0143, s.auc)
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: kr_accuracy <dataset_dir> <pipeline_dir> --zdim Z [--n-sample K] [--image-size D --seed S] [--discrete-only]");
        std::process::exit(2);
    }
    let data = PathBuf::from(&args[1]);
    let pipe = PathBuf::from(&args[2]);
    let zdim: usize = arg(&args, "--zdim", 2);
    let n_sample: usize = arg(&args, "--n-sample", 12);
    let discrete = args.iter().any(|a| a == "--discrete-only");
    let backend = CpuBackend::new();

    let pr = PipelineResult::load(&pipe)?;
    let emb = pr.embedding(zdim, false)?;
    let mut ds = pr.open_dataset(None, None)?;
    let (zs, prec, contrasts) = emb.for_dataset(&ds)?;
    ds.multiply_contrasts(&contrasts)?;
    let n = ds.box_size();
    let vs = ds.voxel_size();

    // Ground truth per original particle index: state and hinge latent.
    let gt_text = std::fs::read_to_string(data.join("ground_truth.txt"))?;
    let mut truth = Vec::new();
    for line in gt_text.lines().filter(|l| !l.starts_with('#')) {
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        truth.push((v[1] as usize, v[2]));
    }
    let state_of: Vec<usize> = ds.original_indices().iter().map(|&o| truth[o].0).collect();
    let gt_state = |k: usize| -> R<Vec<f32>> {
        Ok(mrc::read_volume(data.join(format!("gt_state{k}.mrc")))?.data)
    };
    let mean = mrc::read_volume(pipe.join("output/volumes/mean.mrc"))?.data;
    let opts = KernelOptions::default();
    let latent = Latent {
        zdim,
        zs: &zs,
        precisions: &prec,
    };
    let noise = pr.noise.clone();

    println!("per state: volume at the state's mean latent point vs the state's ground truth");
    println!(
        "(FSC resolution at 0.5, at 0.143, AUC of |FSC| up to Nyquist; max AUC {:.3})",
        (n / 2 - 1) as f64 / n as f64
    );
    let n_states = state_of.iter().max().map_or(0, |m| m + 1);
    let mut vols: Vec<[Vec<f32>; 4]> = Vec::new(); // unfil, filtered, oracle, truth
    for k in 0..n_states {
        let members: Vec<usize> = (0..ds.len()).filter(|&p| state_of[p] == k).collect();
        let mut target = vec![0.0f32; zdim];
        for &p in &members {
            for j in 0..zdim {
                target[j] += zs[p * zdim + j] / members.len() as f32;
            }
        }
        let gt = gt_state(k)?;
        let t0 = std::time::Instant::now();
        let v = generate_volume(&ds, &backend, &noise, latent, &target, &opts, &NoProgress)?;
        let secs = t0.elapsed().as_secs_f64();
        // The label oracle: a Wiener-regularized reconstruction from exactly this state's
        // images.
        let ind_path = std::env::temp_dir().join(format!("kr_accuracy_state{k}.pkl"));
        let orig: Vec<i64> = members
            .iter()
            .map(|&p| ds.original_indices()[p] as i64)
            .collect();
        pickle::dump(
            &ind_path,
            &pickle::PyValue::Array(pickle::NdArray::from_i64(vec![orig.len()], orig)?),
        )?;
        let mut o = pr.dataset.clone();
        o.ind = Some(ind_path.clone());
        o.halfsets = None;
        o.uninvert = Uninvert::False;
        let mut sub = Dataset::open(&o)?;
        sub.set_data_sign(pr.data_sign);
        let sub_contrasts: Vec<f32> = members.iter().map(|&p| contrasts[p]).collect();
        sub.multiply_contrasts(&sub_contrasts)?;
        let white = noise.iter().sum::<f64>() / noise.len() as f64;
        let oracle = estimate_mean(
            &mut sub,
            &backend,
            white,
            MeanFn::Triangular,
            256,
            &NoProgress,
        )?;
        let _ = std::fs::remove_file(&ind_path);
        println!(
            "state {k} ({} images, {:.1} s): generated unfil {} | filtered {} | label oracle {} | consensus mean {}",
            members.len(),
            secs,
            fmt(&score(&v.unfil, &gt, n, vs)?),
            fmt(&score(&v.filtered, &gt, n, vs)?),
            fmt(&score(&oracle.combined.real, &gt, n, vs)?),
            fmt(&score(&mean, &gt, n, vs)?),
        );
        vols.push([v.unfil, v.filtered, oracle.combined.real, gt]);
    }
    // The states share most of their density; what tells them apart is each state's
    // difference from the average of the states.
    let diff = |which: usize, k: usize| -> Vec<f64> {
        let m = vols.len() as f64;
        (0..vols[k][which].len())
            .map(|i| {
                let avg: f64 = vols.iter().map(|v| v[which][i] as f64).sum::<f64>() / m;
                vols[k][which][i] as f64 - avg
            })
            .collect()
    };
    let corr = |a: &[f64], b: &[f64]| -> f64 {
        let ab: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let aa: f64 = a.iter().map(|x| x * x).sum();
        let bb: f64 = b.iter().map(|x| x * x).sum();
        ab / (aa * bb).sqrt().max(1e-300)
    };
    for k in 0..vols.len() {
        let t = diff(3, k);
        println!(
            "state {k}: correlation of (state − average of states) with the truth's: generated unfil {:.3}, filtered {:.3}, label oracle {:.3}",
            corr(&diff(0, k), &t),
            corr(&diff(1, k), &t),
            corr(&diff(2, k), &t)
        );
    }

    // Per-image FSC-AUC on a sample of images (evenly spaced dataset positions).
    let sim_opts = SimulationOptions {
        image_size: arg(&args, "--image-size", n),
        n_images: truth.len(),
        seed: arg(&args, "--seed", 0u64),
        hinge: !discrete,
        ..Default::default()
    };
    let sim = Simulator::new(&sim_opts, &backend)?;
    let (mut a_gen, mut a_unfil, mut a_mean) = (0.0, 0.0, 0.0);
    let step = (ds.len() / n_sample.max(1)).max(1);
    let picks: Vec<usize> = (0..ds.len()).step_by(step).take(n_sample).collect();
    for &p in &picks {
        let o = ds.original_indices()[p];
        let (s, h) = truth[o];
        let gt = if discrete {
            gt_state(s)?
        } else {
            sim.volume(s, h)
        };
        let v = generate_volume(
            &ds,
            &backend,
            &noise,
            latent,
            &zs[p * zdim..(p + 1) * zdim],
            &opts,
            &NoProgress,
        )?;
        let (g, u, m) = (
            score(&v.filtered, &gt, n, vs)?.auc,
            score(&v.unfil, &gt, n, vs)?.auc,
            score(&mean, &gt, n, vs)?.auc,
        );
        println!(
            "image {o} (state {s}, latent {h:+.3}): AUC filtered {g:.3}, unfil {u:.3}, mean {m:.3}"
        );
        a_gen += g;
        a_unfil += u;
        a_mean += m;
    }
    if picks.is_empty() {
        return Ok(());
    }
    let k = picks.len() as f64;
    println!(
        "per-image FSC-AUC over {} images: generated (filtered) {:.3}, generated (unfil) {:.3}, consensus mean {:.3}",
        picks.len(),
        a_gen / k,
        a_unfil / k,
        a_mean / k
    );
    Ok(())
}
