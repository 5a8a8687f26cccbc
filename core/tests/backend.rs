//! The backend's batched calls against the single-image definitions they batch. Any new
//! backend (CUDA) is checked against `CpuBackend` with these same inputs.

use num_complex::Complex;
use recovar_core::backend::{Backend, CpuBackend};
use recovar_core::dataset::CtfParams;
use recovar_core::forward::ctf::CtfEvaluator;
use recovar_core::forward::shift::shift_phase;
use recovar_core::fourier::Fft2;
use recovar_core::rng::Rng;

fn random_ctf(rng: &mut Rng) -> CtfParams {
    CtfParams {
        defocus_u: rng.uniform_in(8000.0, 30000.0) as f32,
        defocus_v: rng.uniform_in(8000.0, 30000.0) as f32,
        defocus_angle_deg: rng.uniform_in(0.0, 180.0) as f32,
        voltage_kv: 300.0,
        cs_mm: 2.7,
        amp_contrast: 0.1,
        phase_shift_deg: rng.uniform_in(0.0, 90.0) as f32,
        bfactor: rng.uniform_in(0.0, 100.0) as f32,
        contrast: rng.uniform_in(0.5, 1.5) as f32,
    }
}

#[test]
fn batched_ctf_shift_and_fft_equal_their_definitions() {
    let (d, n) = (24, 9);
    let mut rng = Rng::new(4);
    let be = CpuBackend::new();
    let params: Vec<CtfParams> = (0..n).map(|_| random_ctf(&mut rng)).collect();
    let mut ctf = vec![0.0f32; n * d * d];
    be.ctf(&params, d, 2.5, &mut ctf).unwrap();
    let eval = CtfEvaluator::new(d, 2.5).unwrap();
    for (i, p) in params.iter().enumerate() {
        assert_eq!(&ctf[i * d * d..(i + 1) * d * d], &eval.image(p)[..]);
    }

    let images: Vec<f32> = (0..n * d * d).map(|_| rng.normal() as f32).collect();
    let shifts: Vec<[f32; 2]> = (0..n)
        .map(|_| [rng.normal() as f32, rng.normal() as f32])
        .collect();
    let mut spec = vec![Complex::new(0.0f32, 0.0); n * d * d];
    be.images_to_spectra(&images, d, &shifts, &mut spec)
        .unwrap();
    let fft = Fft2::<f32>::new(d);
    for i in 0..n {
        let mut want = vec![Complex::new(0.0f32, 0.0); d * d];
        fft.forward_real(&images[i * d * d..(i + 1) * d * d], &mut want);
        shift_phase(&mut want, d, shifts[i]);
        for (a, b) in spec[i * d * d..(i + 1) * d * d].iter().zip(&want) {
            assert!((a - b).norm() <= 1e-4 * (1.0 + b.norm()));
        }
    }
    // Without shifts the inverse gives the images back.
    let zero = vec![[0.0f32; 2]; n];
    be.images_to_spectra(&images, d, &zero, &mut spec).unwrap();
    let mut back = vec![0.0f32; n * d * d];
    be.spectra_to_images(&spec, d, &mut back).unwrap();
    for (a, b) in back.iter().zip(&images) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[test]
fn wrong_sizes_are_errors() {
    let be = CpuBackend::new();
    let p = random_ctf(&mut Rng::new(1));
    let e = be
        .ctf(&[p, p], 8, 1.0, &mut [0.0; 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 images of 8×8 need 128"), "{e}");
    let mut spec = vec![Complex::new(0.0f32, 0.0); 64];
    assert!(be
        .images_to_spectra(&[0.0; 63], 8, &[[0.0; 2]], &mut spec)
        .is_err());
    assert!(be
        .images_to_spectra(&[0.0; 64], 8, &[[f32::NAN, 0.0]], &mut spec)
        .is_err());
    assert!(be
        .spectra_to_images(&spec[..60], 8, &mut [0.0; 64])
        .is_err());
}
