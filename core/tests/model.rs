//! The pipeline as a library object (`pipeline::Model`): stage by stage it computes what
//! `run_pipeline` computes, saves the same files, loads pipeline folders back, and refuses
//! misuse with clear messages.

use std::path::Path;

use recovar_core::backend::CpuBackend;
use recovar_core::dataset::{Dataset, DatasetOptions};
use recovar_core::generate::KernelOptions;
use recovar_core::heterogeneity::CovarianceOptions;
use recovar_core::pipeline::{
    generate_from_embedding, run_pipeline, Model, ModelOptions, PipelineOptions, Stage,
};
use recovar_core::progress::NoProgress;
use recovar_core::simulate::{write_test_dataset, SimulationOptions};

fn dataset_options(data: &Path) -> DatasetOptions {
    DatasetOptions {
        particles: data.join("particles.32.mrcs"),
        poses: Some(data.join("poses.pkl")),
        ctf: Some(data.join("ctf.pkl")),
        ..Default::default()
    }
}

fn model_options() -> ModelOptions {
    ModelOptions {
        zdims: vec![1, 2],
        covariance: CovarianceOptions::low_memory(),
        ..Default::default()
    }
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[test]
fn model_stage_by_stage_equals_the_pipeline_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sim = SimulationOptions {
        image_size: 32,
        n_images: 300,
        hinge: false,
        ..Default::default()
    };
    let cpu = CpuBackend::new();
    write_test_dataset(&data, &sim, &cpu, &NoProgress).unwrap();

    // The pipeline, as the CLI runs it.
    let mo = model_options();
    let run = tmp.path().join("run");
    let popts = PipelineOptions {
        dataset: dataset_options(&data),
        outdir: run.clone(),
        mask: mo.mask.clone(),
        mask_settings: mo.mask_settings.clone(),
        focus_mask: None,
        noise_model: mo.noise_model,
        mean_fn: mo.mean_fn,
        only_mean: false,
        zdims: mo.zdims.clone(),
        correct_contrast: false,
        ignore_zero_frequency: false,
        covariance: mo.covariance.clone(),
        keep_intermediate: false,
        memory_budget: mo.memory_budget,
        seed: 0,
        command_line: "test".into(),
    };
    run_pipeline(&popts, &cpu, &NoProgress).unwrap();

    // The model, one stage at a time; queries before a stage say which stage to run.
    let mut m = Model::open(&dataset_options(&data), model_options()).unwrap();
    let err = m.mean().unwrap_err().to_string();
    assert!(err.contains("run the mean stage first"), "{err}");
    for st in Stage::ALL {
        assert!(!m.stage_done(st));
        m.run_stage(st, &cpu, &NoProgress).unwrap();
        assert!(m.stage_done(st), "{st:?}");
    }
    let saved = tmp.path().join("saved");
    m.save(&saved, &NoProgress).unwrap();
    for f in [
        "output/volumes/mean.mrc",
        "output/volumes/eigen_pos0000.mrc",
        "output/volumes/variance4.mrc",
        "model/zdim_2/latent_coords.npy",
        "model/zdim_1/latent_precision_noreg.npy",
        "model/eigenvalues.npy",
        "model/halfsets.pkl",
    ] {
        same_file(&run.join(f), &saved.join(f));
    }

    // Loading either folder gives the model's numbers back.
    let vol = m
        .generate(
            2,
            true,
            &m.embedding(2, true).unwrap().zs[..2],
            &KernelOptions {
                n_bins: 6,
                n_min_images: 20,
                ..Default::default()
            },
            &cpu,
            &NoProgress,
        )
        .unwrap();
    for dir in [&run, &saved] {
        let l = Model::load(dir).unwrap();
        assert_eq!(l.mean().unwrap(), m.mean().unwrap());
        assert_eq!(l.noise().unwrap(), m.noise().unwrap());
        assert_eq!(l.eigenvalues().unwrap(), m.eigenvalues().unwrap());
        assert_eq!(l.eigenvolume(1).unwrap(), m.eigenvolume(1).unwrap());
        assert_eq!(l.variance_map(3).unwrap(), m.variance_map(3).unwrap());
        assert_eq!(l.zdims(), vec![1, 2]);
        for reg in [true, false] {
            let (a, b) = (l.embedding(2, reg).unwrap(), m.embedding(2, reg).unwrap());
            assert_eq!(a.zs, b.zs);
            assert_eq!(a.precisions, b.precisions);
            assert_eq!(a.contrasts, b.contrasts);
        }
        let lv = l
            .generate(
                2,
                true,
                &m.embedding(2, true).unwrap().zs[..2],
                &KernelOptions {
                    n_bins: 6,
                    n_min_images: 20,
                    batch_size: 50,
                    ..Default::default()
                },
                &cpu,
                &NoProgress,
            )
            .unwrap();
        assert_eq!(lv.filtered, vol.filtered, "{}", dir.display());
        // A loaded model answers queries but does not run stages it lacks.
        let err = l
            .save(&tmp.path().join("again"), &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already saved"), "{err}");
    }

    // Misuse: wrong point size, missing zdim, eigenvolume out of range.
    let err = m
        .generate(
            2,
            true,
            &[0.0],
            &KernelOptions::default(),
            &cpu,
            &NoProgress,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("1 coordinates") && err.contains("dimension 2"),
        "{err}"
    );
    let err = m.embedding(3, true).unwrap_err().to_string();
    assert!(
        err.contains("dimension 3") && err.contains("[1, 2]"),
        "{err}"
    );
    let n_eig = m.eigenvalues().unwrap().len();
    let err = m.eigenvolume(n_eig).unwrap_err().to_string();
    assert!(err.contains(&format!("has {n_eig}")), "{err}");
    assert!(m.variance_map(0).is_err());
    assert!("covariance".parse::<Stage>().unwrap() == Stage::Covariance);
    assert!("everything".parse::<Stage>().is_err());

    // An external embedding (one row per image, or per particle of the file) gives the
    // same volume either way; a wrong row count is refused with both counts.
    let ds = Dataset::open(&DatasetOptions {
        n_images: Some(250),
        ..dataset_options(&data)
    })
    .unwrap();
    let full = m.embedding(2, true).unwrap().zs.to_vec();
    let k = KernelOptions {
        n_bins: 4,
        n_min_images: 20,
        ..Default::default()
    };
    let per_particle =
        generate_from_embedding(&ds, &full, 2, &[], &full[..2], &k, &cpu, &NoProgress).unwrap();
    let per_image =
        generate_from_embedding(&ds, &full[..500], 2, &[], &full[..2], &k, &cpu, &NoProgress)
            .unwrap();
    assert_eq!(per_particle.unfil, per_image.unfil);
    let err = generate_from_embedding(&ds, &full[..20], 2, &[], &full[..2], &k, &cpu, &NoProgress)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("10 embedding rows") && err.contains("250"),
        "{err}"
    );
}

#[test]
fn a_model_needs_poses_and_ctf_and_valid_options() {
    let images = vec![0.0f32; 2 * 16 * 16];
    let rot = [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0f32]; 2];
    let ctf = [[16.0, 2.0, 1e4, 1e4, 0.0, 300.0, 2.7, 0.1, 0.0f64]; 2];
    let ds = Dataset::from_arrays(images, 2, 16, &rot, &[[0.0; 2]; 2], &ctf, 0).unwrap();
    let bad = ModelOptions {
        zdims: vec![0],
        ..Default::default()
    };
    let err = Model::new(ds.clone(), bad).err().unwrap().to_string();
    assert!(err.contains("at least 1"), "{err}");
    let too_many = ModelOptions {
        zdims: vec![500],
        ..Default::default()
    };
    let err = Model::new(ds.clone(), too_many).err().unwrap().to_string();
    assert!(err.contains("principal components"), "{err}");
    let m = Model::new(ds, ModelOptions::default()).unwrap();
    assert_eq!((m.box_size(), m.n_images()), (16, 2));
    assert!(m.zdims().is_empty());
    let err = Model::load(Path::new("/nonexistent/run"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/run"), "{err}");
}
