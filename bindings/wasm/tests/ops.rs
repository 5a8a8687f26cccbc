//! The binding's operations, natively: they equal the library paths they wrap
//! (dataset CTF, `make_test_dataset`), and malformed input is an error, never a panic (a
//! panic aborts the whole `.wasm` module).

use recovar_core::backend::{Backend, CpuBackend};
use recovar_core::dataset::{CtfTable, Dataset};
use recovar_core::io::mrc::MrcStack;
use recovar_core::progress::NoProgress;
use recovar_core::simulate::{write_test_dataset, SimulationOptions};
use recovar_wasm::ops::{self, KernelSettings, Particles, SimulationSettings};

const ROW: [f64; 9] = [64.0, 1.5, 15_123.4, 14_000.0, 30.0, 300.0, 2.7, 0.1, 12.0];

#[test]
fn ctf_image_is_what_a_dataset_computes() {
    // A 48-px stack whose CTF was fitted on 64-px images: pixel size 64·1.5/48.
    let d = 48;
    let ds = Dataset::from_arrays(
        vec![0.0; d * d],
        1,
        d,
        &[[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]],
        &[[0.0, 0.0]],
        &[ROW],
        0,
    )
    .unwrap();
    let params = ds.ctf().unwrap();
    let mut want = vec![0.0f32; d * d];
    CpuBackend::new()
        .ctf(params, d, ds.voxel_size(), &mut want)
        .unwrap();
    let got = ops::ctf_image(&ROW, Some(d as f64)).unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // Without an image size, the row's D.
    assert_eq!(ops::ctf_image(&ROW, None).unwrap().len(), 64 * 64);
}

#[test]
fn simulate_equals_make_test_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SimulationOptions {
        image_size: 16,
        n_images: 40,
        seed: 2,
        noise_level: 0.1,
        hinge: false,
        ..Default::default()
    };
    write_test_dataset(dir.path(), &opts, &CpuBackend::new(), &NoProgress).unwrap();
    let sim = ops::simulate(&SimulationSettings {
        image_size: 16.0,
        n_images: 40.0,
        noise_level: 0.1,
        seed: 2.0,
        discrete_only: true,
    })
    .unwrap();
    let stack = MrcStack::open(dir.path().join("particles.16.mrcs")).unwrap();
    let written = stack.read_all().unwrap();
    assert_eq!(written.len(), sim.images.len());
    assert!(written
        .iter()
        .zip(&sim.images)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // ctf.pkl is float32; our rows are the f64 values it was written from.
    let table = CtfTable::read_pickle(dir.path().join("ctf.pkl")).unwrap();
    let rows: Vec<f64> = table.rows.iter().flatten().copied().collect();
    let ours = sim.ctf();
    assert_eq!(rows.len(), ours.len());
    assert!(rows
        .iter()
        .zip(&ours)
        .all(|(a, b)| *a == (*b as f32) as f64));
}

#[test]
fn identity_projection_is_the_sum_along_z() {
    let n = 8;
    let vol: Vec<f32> = (0..n * n * n).map(|i| ((i * 7919) % 13) as f32).collect();
    let id = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    // An image's sum is its zero frequency, the slice's centre, which every interpolation
    // reads exactly from the volume's zero frequency (clipping never reaches it): the
    // projection keeps the volume's total.
    for interp in ["cubic", "trilinear", "nearest"] {
        let img = ops::project(&vol, &id, 2, ops::interp_of(Some(interp)).unwrap()).unwrap();
        let total: f64 = img.iter().map(|&v| v as f64).sum();
        let want: f64 = vol.iter().map(|&v| v as f64).sum();
        assert!(
            (total - want).abs() < 1e-3 * want,
            "{interp}: {total} vs {want}"
        );
    }
}

fn images(n: usize, d: usize) -> Vec<f32> {
    (0..n * d * d).map(|i| ((i % 17) as f32) * 0.1).collect()
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let id = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let vol = vec![0.0f32; 512];
    let cubic = ops::interp_of(None).unwrap();
    let errors: Vec<(&str, bool)> = vec![
        ("short CTF row", ops::ctf_image(&ROW[..8], None).is_err()),
        ("NaN CTF", {
            let mut r = ROW;
            r[3] = f64::NAN;
            ops::ctf_image(&r, None).is_err()
        }),
        ("image size 0", ops::ctf_image(&ROW, Some(0.0)).is_err()),
        ("image size −1", ops::ctf_image(&ROW, Some(-1.0)).is_err()),
        (
            "image size NaN",
            ops::ctf_image(&ROW, Some(f64::NAN)).is_err(),
        ),
        ("image size huge", ops::ctf_image(&ROW, Some(1e12)).is_err()),
        ("empty volume", ops::project(&[], &id, 1, cubic).is_err()),
        (
            "non-cube",
            ops::project(&vol[..511], &id, 1, cubic).is_err(),
        ),
        (
            "odd cube",
            ops::project(&vol[..343], &id, 1, cubic).is_err(),
        ),
        ("no rotations", ops::project(&vol, &[], 1, cubic).is_err()),
        (
            "bad rotation",
            ops::project(&vol, &[9.0; 9], 1, cubic).is_err(),
        ),
        ("oversampling 3", ops::project(&vol, &id, 3, cubic).is_err()),
        ("Fourier volume too big", {
            let big = vec![0.0f32; 258 * 258 * 258];
            ops::project(&big, &id, 2, cubic).is_err()
        }),
        ("interp name", ops::interp_of(Some("spline")).is_err()),
        ("fsc sizes", ops::fsc(&vol, &vol[..511]).is_err()),
        ("fsc tiny", ops::fsc(&vol[..8], &vol[..8]).is_err()),
        (
            "resolution empty",
            ops::fsc_resolution(&[], 8.0, 1.0, 0.5).is_err(),
        ),
        (
            "resolution voxel",
            ops::fsc_resolution(&[1.0], 8.0, -1.0, 0.5).is_err(),
        ),
        (
            "images vs rotations",
            Particles::new(images(2, 8), &id, &[0.0; 2], &ROW, 0).is_err(),
        ),
        (
            "odd image size",
            Particles::new(images(1, 7), &id, &[0.0; 2], &ROW, 0).is_err(),
        ),
        (
            "translations",
            Particles::new(images(1, 8), &id, &[0.0; 3], &ROW, 0).is_err(),
        ),
        (
            "ctf rows",
            Particles::new(images(1, 8), &id, &[0.0; 2], &ROW[..8], 0).is_err(),
        ),
        ("NaN shift", {
            Particles::new(images(1, 8), &id, &[f32::NAN, 0.0], &ROW, 0).is_err()
        }),
        ("simulate size", {
            let s = SimulationSettings {
                image_size: 18.5,
                ..Default::default()
            };
            ops::simulate(&s).is_err()
        }),
        ("simulate count", {
            let s = SimulationSettings {
                image_size: 128.0,
                n_images: 1e7,
                ..Default::default()
            };
            ops::simulate(&s).is_err()
        }),
    ];
    let failed: Vec<&str> = errors
        .iter()
        .filter(|(_, is_err)| !is_err)
        .map(|(w, _)| *w)
        .collect();
    assert!(failed.is_empty(), "accepted: {failed:?}");

    // Kernel-regression arguments, on a small valid set.
    let n = 4;
    let rots: Vec<f32> = id.iter().copied().cycle().take(9 * n).collect();
    let ctf: Vec<f64> = ROW.iter().copied().cycle().take(9 * n).collect();
    let mut p = Particles::new(images(n, 8), &rots, &vec![0.0; 2 * n], &ctf, 0).unwrap();
    let z = vec![0.5f32; n];
    let ok = KernelSettings::default();
    assert!(p.generate(&z, &[], None, &ok).is_err());
    assert!(p.generate(&z[..3], &[0.0], None, &ok).is_err());
    assert!(p.generate(&z, &[f32::NAN], None, &ok).is_err());
    assert!(p.generate(&z, &[0.0], Some(&[1.0; 3]), &ok).is_err());
    let bad = KernelSettings { n_bins: 0.0, ..ok };
    assert!(p.generate(&z, &[0.0], None, &bad).is_err());
    let bad = KernelSettings {
        maskrad_fraction: f64::INFINITY,
        ..ok
    };
    assert!(p.generate(&z, &[0.0], None, &bad).is_err());
    // Kernel regression beyond what wasm32 memory holds is refused before it starts.
    let d = ops::MAX_KERNEL_SIZE + 2;
    let mut big = Particles::new(images(1, d), &id, &[0.0; 2], &ROW, 0).unwrap();
    match big.generate(&z[..1], &[0.0], None, &ok) {
        Err(e) => assert!(e.to_string().contains("downsample"), "{e}"),
        Ok(_) => panic!("kernel regression at {d} px was accepted"),
    }
}
