//! Tests of the plot room: every figure is a PNG of the expected size, bad input is
//! refused with a message naming the file and the problem, and output is deterministic.
//!
//! `RECOVAR_PLOT_SAMPLES=/some/folder cargo test -p recovar-core plot::` also writes
//! the sample figures there, to look at.

use std::path::{Path, PathBuf};

use super::*;
use crate::rng::Rng;

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33, "PNG too short: {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn read_size(path: &Path) -> (u32, u32) {
    png_size(&std::fs::read(path).expect("figure written"))
}

/// A realistic FSC curve: ~1 at low frequency, a soft fall through `half` (in shells),
/// then noise around 0.
fn fsc_curve(n: usize, half: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let s = i as f64;
            let v = 1.0 / (1.0 + ((s - half) / 2.2).exp());
            if i == 0 {
                1.0
            } else {
                (v + 0.03 * rng.normal() * (s / n as f64)).min(1.0)
            }
        })
        .collect()
}

fn fsc_sample() -> Vec<(String, Vec<f64>)> {
    vec![
        ("mean, half-maps".to_string(), fsc_curve(33, 14.0, 1)),
        ("state 3 vs. truth".to_string(), fsc_curve(33, 9.0, 2)),
    ]
}

fn eigenvalues() -> Vec<f64> {
    (0..40)
        .map(|i| 5e3 * (-(i as f64) / 4.0).exp() + 0.5)
        .collect()
}

fn clusters(n_per: usize) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let mut rng = Rng::new(7);
    let centres = [(-2.0, 1.0), (1.5, 2.0), (0.5, -1.5)];
    let (mut x, mut y, mut l) = (Vec::new(), Vec::new(), Vec::new());
    for (k, c) in centres.iter().enumerate() {
        for _ in 0..n_per {
            x.push(c.0 + 0.6 * rng.normal());
            y.push(c.1 + 0.4 * rng.normal());
            l.push(k);
        }
    }
    (x, y, l)
}

/// Two Gaussian bumps on a 60×40 grid over [-3, 3]×[-2, 2].
fn density_values() -> Vec<f64> {
    let (nx, ny) = (60, 40);
    let mut v = Vec::with_capacity(nx * ny);
    for iy in 0..ny {
        for ix in 0..nx {
            let x = -3.0 + 6.0 * (ix as f64 + 0.5) / nx as f64;
            let y = -2.0 + 4.0 * (iy as f64 + 0.5) / ny as f64;
            let a = (-((x + 1.5).powi(2) + (y + 0.5).powi(2)) / 0.5).exp();
            let b = 0.6 * (-((x - 1.5).powi(2) + (y - 0.8).powi(2)) / 0.8).exp();
            v.push(1000.0 * (a + b));
        }
    }
    v
}

fn density_path() -> Vec<(f64, f64)> {
    (0..=20)
        .map(|i| {
            let t = i as f64 / 20.0;
            (
                -1.5 + 3.0 * t,
                -0.5 + 1.3 * t + 0.5 * (std::f64::consts::PI * t).sin(),
            )
        })
        .collect()
}

/// A 48×48 disc with a smaller bright blob; `k` moves the blob.
fn tile(k: usize, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n * n];
    let c = n as f32 / 2.0;
    let (bx, by) = (c + 8.0 * (k as f32).cos(), c + 8.0 * (k as f32).sin());
    for r in 0..n {
        for col in 0..n {
            let (x, y) = (col as f32 + 0.5, r as f32 + 0.5);
            let d = ((x - c).powi(2) + (y - c).powi(2)).sqrt();
            let e = ((x - bx).powi(2) + (y - by).powi(2)).sqrt();
            v[r * n + col] =
                if d < 0.35 * n as f32 { 1.0 } else { 0.0 } + 2.0 * (-e * e / 12.0).exp();
        }
    }
    v
}

fn tiles() -> Vec<(String, Vec<f32>, usize, usize)> {
    let names = ["xy", "xz", "yz"];
    (0..6)
        .map(|k| {
            (
                format!("state {} — {}", k / 3, names[k % 3]),
                tile(k, 48),
                48,
                48,
            )
        })
        .collect()
}

/// Write every sample figure into `dir`; returns the paths with their expected sizes
/// (`None` for content-sized figures).
fn write_samples(dir: &Path) -> Vec<(PathBuf, Option<(u32, u32)>)> {
    let std_size = Some((1000, 700));
    let mut out = Vec::new();

    let p = dir.join("fsc.png");
    fsc_plot(&p, &fsc_sample(), 64, 8.5).unwrap();
    out.push((p, std_size));

    let p = dir.join("eigenvalues_log.png");
    bar_plot(
        &p,
        "Eigenvalues",
        "index",
        "eigenvalue",
        &eigenvalues(),
        true,
    )
    .unwrap();
    out.push((p, std_size));

    let p = dir.join("eigenvalues_linear.png");
    bar_plot(
        &p,
        "Eigenvalues",
        "index",
        "eigenvalue",
        &eigenvalues()[..8],
        false,
    )
    .unwrap();
    out.push((p, std_size));

    let mut rng = Rng::new(3);
    let normal: Vec<f64> = (0..1000).map(|_| 1.0 + 0.15 * rng.normal()).collect();
    let p = dir.join("histogram.png");
    histogram(&p, "Estimated contrast", "contrast", &normal, 40).unwrap();
    out.push((p, std_size));

    let (x, y, l) = clusters(300);
    let p = dir.join("scatter.png");
    scatter(
        &p,
        "Latent space (k-means)",
        &x,
        &y,
        Some(&l),
        "PC 1",
        "PC 2",
    )
    .unwrap();
    out.push((p, std_size));

    let values = density_values();
    let path_pts = density_path();
    let p = dir.join("density.png");
    density_image(
        &p,
        &DensityMap {
            title: "Density of latent coordinates",
            x_label: "PC 1",
            y_label: "PC 2",
            values: &values,
            nx: 60,
            ny: 40,
            x_range: (-3.0, 3.0),
            y_range: (-2.0, 2.0),
            overlay_path: Some(&path_pts),
        },
    )
    .unwrap();
    out.push((p, std_size));

    let p = dir.join("grid.png");
    image_grid(&p, "Central slices", &tiles(), 3).unwrap();
    out.push((p, None));

    let p = dir.join("heatmaps.png");
    heatmap_grid(&p, "Densities", &tiles(), 3, Some(1)).unwrap();
    out.push((p, None));

    // A dense cloud of 12 clusters with no labels given to some points' neighbours.
    let mut rng = Rng::new(11);
    let (mut x, mut y, mut l) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..50_000 {
        let k = i % 12;
        let a = k as f64 / 12.0 * std::f64::consts::TAU;
        x.push(40.0 * a.cos() + 6.0 * rng.normal());
        y.push(25.0 * a.sin() + 6.0 * rng.normal());
        l.push(k);
    }
    let p = dir.join("scatter_dense.png");
    let title = "50 000 particles in 12 states, coloured by the state they were simulated from";
    scatter(
        &p,
        title,
        &x,
        &y,
        Some(&l),
        "latent coordinate 1",
        "latent coordinate 2",
    )
    .unwrap();
    out.push((p, std_size));

    let p = dir.join("lines_log.png");
    line_plot(
        &p,
        &LinePlot {
            title: "Log-y line plot with a gap and a lone point".into(),
            x_label: "iteration".into(),
            y_label: "residual".into(),
            series: vec![
                Series::new(
                    "residual",
                    (0..30).map(f64::from).collect(),
                    (0..30)
                        .map(|i| {
                            if i == 12 {
                                f64::NAN
                            } else {
                                10f64.powf(-(i as f64) / 6.0)
                            }
                        })
                        .collect(),
                ),
                Series::new("single", vec![20.0], vec![0.05]),
            ],
            hlines: vec![(1e-3, "tolerance".into())],
            log_y: true,
            ..Default::default()
        },
    )
    .unwrap();
    out.push((p, std_size));

    out
}

#[test]
fn every_figure_is_a_png_of_the_right_size() {
    let dir = tempfile::tempdir().unwrap();
    for (p, size) in write_samples(dir.path()) {
        let (w, h) = read_size(&p);
        if let Some(s) = size {
            assert_eq!((w, h), s, "{}", p.display());
        } else {
            assert!(w >= 320 && h >= 100, "{}: {w}×{h}", p.display());
        }
    }
    // 6 tiles of 48 px shown at 5× = 240 px, 3 to a row.
    let (w, h) = read_size(&dir.path().join("grid.png"));
    assert_eq!(w, 3 * (240 + 14) + 14);
    assert_eq!(h, 50 + 2 * (240 + 28 + 14) + 7);
    if let Some(dest) = std::env::var_os("RECOVAR_PLOT_SAMPLES") {
        let dest = PathBuf::from(dest);
        std::fs::create_dir_all(&dest).unwrap();
        write_samples(&dest);
    }
}

#[test]
fn same_input_gives_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_samples(&dir.path().join("a").tap_mkdir());
    let b = write_samples(&dir.path().join("b").tap_mkdir());
    for ((pa, _), (pb, _)) in a.iter().zip(&b) {
        let (x, y) = (std::fs::read(pa).unwrap(), std::fs::read(pb).unwrap());
        assert!(x == y, "{} differs between runs", pa.display());
    }
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// The error message of `r`, which must be an error.
fn msg(r: crate::Result<()>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn bad_input_is_refused_with_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.png");
    let name = "x.png";

    let m = msg(line_plot(&p, &LinePlot::default()));
    assert!(m.contains(name) && m.contains("no series"), "{m}");

    let empty = LinePlot {
        series: vec![Series::new("a", vec![], vec![])],
        ..Default::default()
    };
    let m = msg(line_plot(&p, &empty));
    assert!(m.contains(name) && m.contains("'a' is empty"), "{m}");

    let mismatched = LinePlot {
        series: vec![Series::new("b", vec![1.0, 2.0], vec![1.0])],
        ..Default::default()
    };
    let m = msg(line_plot(&p, &mismatched));
    assert!(m.contains("'b' has 2 x values but 1 y values"), "{m}");

    let all_nan = LinePlot {
        series: vec![Series::new("c", vec![1.0], vec![f64::NAN])],
        ..Default::default()
    };
    let m = msg(line_plot(&p, &all_nan));
    assert!(m.contains("no point with finite"), "{m}");

    let nonpositive_log = LinePlot {
        series: vec![Series::new("d", vec![1.0, 2.0], vec![0.0, -1.0])],
        log_y: true,
        ..Default::default()
    };
    let m = msg(line_plot(&p, &nonpositive_log));
    assert!(m.contains("logarithmic"), "{m}");

    let bad_range = LinePlot {
        series: vec![Series::new("e", vec![1.0], vec![1.0])],
        y_range: Some((1.0, 0.0)),
        ..Default::default()
    };
    let m = msg(line_plot(&p, &bad_range));
    assert!(m.contains("y range"), "{m}");

    let m = msg(fsc_plot(&p, &[], 64, 1.0));
    assert!(m.contains("no FSC curve"), "{m}");
    let m = msg(fsc_plot(&p, &[("a".into(), vec![1.0])], 64, 0.0));
    assert!(m.contains("voxel size"), "{m}");
    let m = msg(fsc_plot(&p, &[("a".into(), vec![])], 64, 1.0));
    assert!(m.contains("'a' is empty"), "{m}");

    let m = msg(bar_plot(&p, "t", "x", "y", &[], false));
    assert!(m.contains(name) && m.contains("no values"), "{m}");
    let m = msg(bar_plot(&p, "t", "x", "y", &[0.0, -1.0], true));
    assert!(m.contains("logarithmic"), "{m}");

    let m = msg(histogram(&p, "t", "x", &[], 10));
    assert!(m.contains("no values"), "{m}");
    let m = msg(histogram(&p, "t", "x", &[1.0], 0));
    assert!(m.contains("bins"), "{m}");
    let m = msg(histogram(&p, "t", "x", &[f64::NAN, f64::INFINITY], 5));
    assert!(m.contains("no finite value"), "{m}");

    let m = msg(scatter(&p, "t", &[], &[], None, "x", "y"));
    assert!(m.contains("no points"), "{m}");
    let m = msg(scatter(&p, "t", &[1.0, 2.0], &[1.0], None, "x", "y"));
    assert!(m.contains("2 x values but 1 y values"), "{m}");
    let m = msg(scatter(&p, "t", &[1.0], &[1.0], Some(&[0, 1]), "x", "y"));
    assert!(m.contains("1 points but 2 cluster labels"), "{m}");

    let values = [1.0; 6];
    let map = DensityMap {
        values: &values,
        nx: 4,
        ny: 2,
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
        ..Default::default()
    };
    let m = msg(density_image(&p, &map));
    assert!(m.contains("4×2 grid needs 8 values, got 6"), "{m}");
    let flat_x = DensityMap {
        nx: 3,
        x_range: (1.0, 1.0),
        ..map
    };
    let m = msg(density_image(&p, &flat_x));
    assert!(
        m.contains("x range (1, 1) must be finite and increasing"),
        "{m}"
    );

    let m = msg(image_grid(&p, "t", &[], 3));
    assert!(m.contains("no images"), "{m}");
    let m = msg(image_grid(&p, "t", &[("a".into(), vec![0.0; 3], 2, 2)], 3));
    assert!(m.contains("image 0 ('a') is 2×2 but has 3 values"), "{m}");
    let m = msg(image_grid(&p, "t", &[("a".into(), vec![0.0; 4], 2, 2)], 0));
    assert!(m.contains("columns"), "{m}");
    let m = msg(heatmap_grid(
        &p,
        "t",
        &[("a".into(), vec![0.0; 4], 2, 2)],
        1,
        Some(1),
    ));
    assert!(m.contains("tile 1 to highlight"), "{m}");

    // Nothing was written by the failed calls.
    assert!(!p.exists());

    let missing = dir.path().join("no/such/folder/fsc.png");
    let m = msg(fsc_plot(&missing, &fsc_sample(), 64, 8.5));
    assert!(m.contains("fsc.png") && m.contains("does not exist"), "{m}");
}

#[test]
fn degenerate_but_valid_inputs_draw() {
    let dir = tempfile::tempdir().unwrap();
    let d = match std::env::var_os("RECOVAR_PLOT_SAMPLES") {
        Some(dest) => PathBuf::from(dest).join("degenerate").tap_mkdir(),
        None => dir.path().to_path_buf(),
    };
    let d = d.as_path();
    // One point; constant values; NaN mixed in.
    let one = LinePlot {
        series: vec![Series::new("", vec![3.0], vec![3.0])],
        ..Default::default()
    };
    line_plot(&d.join("one.png"), &one).unwrap();
    bar_plot(&d.join("bar1.png"), "", "", "", &[2.0], false).unwrap();
    bar_plot(&d.join("bar0.png"), "", "", "", &[0.0, 0.0], false).unwrap();
    bar_plot(
        &d.join("barneg.png"),
        "",
        "",
        "",
        &[-1.0, 2.0, f64::NAN],
        false,
    )
    .unwrap();
    histogram(&d.join("h1.png"), "", "", &[5.0, 5.0, f64::NAN], 10).unwrap();
    scatter(
        &d.join("s1.png"),
        "",
        &[1.0, f64::NAN],
        &[1.0, 2.0],
        None,
        "",
        "",
    )
    .unwrap();
    fsc_plot(&d.join("fsc1.png"), &[("a".into(), vec![1.0])], 8, 2.0).unwrap();
    fsc_plot(
        &d.join("fscflat.png"),
        &[("a".into(), vec![1.0; 10])],
        20,
        1.0,
    )
    .unwrap();
    let vals = [f64::NAN, 1.0, 1.0, 1.0];
    let map = DensityMap {
        values: &vals,
        nx: 2,
        ny: 2,
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
        overlay_path: Some(&[(0.5, 0.5)]),
        ..Default::default()
    };
    density_image(&d.join("dens1.png"), &map).unwrap();
    image_grid(
        &d.join("g1.png"),
        "",
        &[("flat".into(), vec![f32::NAN, 1.0, 1.0, 1.0], 2, 2)],
        4,
    )
    .unwrap();
    // Large images are reduced to about 256 px.
    image_grid(
        &d.join("g2.png"),
        "big",
        &[("a".into(), vec![0.5; 600 * 300], 600, 300)],
        1,
    )
    .unwrap();
    let (w, h) = read_size(&d.join("g2.png"));
    assert_eq!((w, h), (320, 50 + 128 + 28 + 14 + 7));
}

#[test]
fn fsc_legend_and_top_axis() {
    let curves = fsc_sample();
    let (plot, top) = super::lines::fsc_figure(Path::new("f.png"), &curves, 64, 8.5).unwrap();
    for ((name, fsc), s) in curves.iter().zip(&plot.series) {
        let r = crate::fourier::resolution_at(fsc, 0.143, 64, 8.5);
        assert_eq!(s.label, format!("{name}: {r:.2} Å at 0.143"));
        // shell i at i/(64·8.5) 1/Å
        assert!((s.x[32] - 32.0 / 544.0).abs() < 1e-15);
    }
    let flat = [("flat".to_string(), vec![1.0; 33])];
    let (plot, _) = super::lines::fsc_figure(Path::new("f.png"), &flat, 64, 8.5).unwrap();
    assert_eq!(plot.series[0].label, "flat: ≤ 17.00 Å (never below 0.143)");
    // Top axis: round resolutions no finer than Nyquist (17 Å), well apart.
    let x_max = 32.0 / 544.0;
    let labels: Vec<&str> = top.iter().map(|t| t.1.as_str()).collect();
    assert!(
        labels.contains(&"20") && labels.contains(&"50"),
        "{labels:?}"
    );
    for w in top.windows(2) {
        assert!(w[1].0 - w[0].0 >= 0.07 * x_max);
    }
    assert!(top.iter().all(|t| t.0 > 0.0 && t.0 <= x_max));
    assert!(super::lines::resolution_ticks(1e-9).is_empty());
}
