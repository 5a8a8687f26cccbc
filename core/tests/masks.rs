//! Tests of `recovar_core::reconstruct::mask`: the morphology against brute force, the
//! mask recipes of algorithms.md §4 on synthetic volumes and `.mrc` files, and the dilated
//! mask against the one the Python RECOVAR wrote for the 32³ dataset in ../shared/data.

use std::path::{Path, PathBuf};

use recovar_core::io::mrc::{read_volume, write_volume, Volume};
use recovar_core::reconstruct::mask::{
    complement_mask, default_dilation_iters, dilate, distance_transform, fill_holes, focus_mask,
    gaussian_filter, largest_component, load_mask_volume, make_masks, mask_from_halfmaps,
    otsu_threshold, soften, sphere_mask, MaskOption, MaskSettings,
};
use recovar_core::rng::Rng;

// ---------------------------------------------------------------------------------------
// Helpers

fn idx(n: usize, z: usize, y: usize, x: usize) -> usize {
    (z * n + y) * n + x
}

/// Squared distance of voxel `i` from the centre voxel `(n/2, n/2, n/2)`.
fn r2(n: usize, i: usize) -> i64 {
    let c = (n / 2) as i64;
    let (z, y, x) = ((i / (n * n)) as i64, ((i / n) % n) as i64, (i % n) as i64);
    (x - c).pow(2) + (y - c).pow(2) + (z - c).pow(2)
}

/// Ball of radius `r` around `centre` (voxel coordinates z, y, x).
fn ball_at(n: usize, centre: [f64; 3], r: f64) -> Vec<bool> {
    (0..n * n * n)
        .map(|i| {
            let p = [(i / (n * n)) as f64, ((i / n) % n) as f64, (i % n) as f64];
            let d2: f64 = (0..3).map(|k| (p[k] - centre[k]).powi(2)).sum();
            d2 <= r * r
        })
        .collect()
}

fn centred_ball(n: usize, r: f64) -> Vec<bool> {
    let c = (n / 2) as f64;
    ball_at(n, [c, c, c], r)
}

fn random_binary(rng: &mut Rng, n: usize, p: f64) -> Vec<bool> {
    (0..n * n * n).map(|_| rng.uniform() < p).collect()
}

fn to_f32(b: &[bool]) -> Vec<f32> {
    b.iter().map(|&b| b as u8 as f32).collect()
}

fn write_cube(path: &Path, data: Vec<f32>, shape: [usize; 3]) {
    write_volume(path, &Volume::new(data, shape, 1.5).unwrap()).unwrap();
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

// ---------------------------------------------------------------------------------------
// Morphology against brute force

#[test]
fn distance_transform_is_exact() {
    let mut rng = Rng::new(1);
    for (n, p) in [
        (1, 0.5),
        (2, 0.3),
        (5, 0.05),
        (7, 0.02),
        (8, 0.2),
        (9, 0.01),
        (12, 0.003),
    ] {
        for _ in 0..3 {
            let b = random_binary(&mut rng, n, p);
            let got = distance_transform(&b, n);
            let sites: Vec<usize> = (0..b.len()).filter(|&i| b[i]).collect();
            for (i, &g) in got.iter().enumerate() {
                let (z, y, x) = (i / (n * n), (i / n) % n, i % n);
                let want = sites
                    .iter()
                    .map(|&s| {
                        let (sz, sy, sx) = (s / (n * n), (s / n) % n, s % n);
                        ((z.abs_diff(sz).pow(2) + y.abs_diff(sy).pow(2) + x.abs_diff(sx).pow(2))
                            as f64)
                            .sqrt()
                    })
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    (g - want).abs() < 1e-9 || (g.is_infinite() && want.is_infinite()),
                    "n={n} voxel {i}: {g} vs {want}"
                );
            }
        }
    }
    // No site: infinite everywhere; all sites: zero.
    assert!(distance_transform(&[false; 27], 3)
        .iter()
        .all(|d| d.is_infinite()));
    assert!(distance_transform(&[true; 27], 3).iter().all(|&d| d == 0.0));
}

#[test]
fn soften_has_the_cosine_profile() {
    let n = 16;
    let mut b = vec![false; n * n * n];
    b[idx(n, 8, 8, 8)] = true;
    let s = soften(&b, n, 3.0);
    let along_x: Vec<f32> = (8..14).map(|x| s[idx(n, 8, 8, x)]).collect();
    let want = [1.0, 0.75, 0.25, 0.0, 0.0, 0.0];
    for (g, w) in along_x.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{along_x:?}");
    }
    // Diagonal voxel at d = √2: ½ + ½cos(π√2/3).
    let d = 2f64.sqrt();
    let w = (0.5 + 0.5 * (std::f64::consts::PI * d / 3.0).cos()) as f32;
    assert!((s[idx(n, 8, 9, 9)] - w).abs() < 1e-6);
    // A half space x ≤ 4: the profile depends on x only.
    let half: Vec<bool> = (0..n * n * n).map(|i| i % n <= 4).collect();
    let s = soften(&half, n, 3.0);
    for z in [0, 7, 15] {
        let row: Vec<f32> = (3..10).map(|x| s[idx(n, z, 3, x)]).collect();
        let want = [1.0, 1.0, 0.75, 0.25, 0.0, 0.0, 0.0];
        for (g, w) in row.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{row:?}");
        }
    }
    // kern_rad 0: the binary mask itself.
    assert_eq!(soften(&half, n, 0.0), to_f32(&half));
    // Nothing true: all zero.
    assert!(soften(&[false; 64], 4, 3.0).iter().all(|&v| v == 0.0));
}

/// One scipy-style dilation by the 6-connected cross, outside = false.
fn cross_once(b: &[bool], n: usize) -> Vec<bool> {
    let mut out = b.to_vec();
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let i = idx(n, z, y, x);
                if b[i] {
                    continue;
                }
                let nb = [
                    (x > 0).then(|| idx(n, z, y, x - 1)),
                    (x + 1 < n).then(|| idx(n, z, y, x + 1)),
                    (y > 0).then(|| idx(n, z, y - 1, x)),
                    (y + 1 < n).then(|| idx(n, z, y + 1, x)),
                    (z > 0).then(|| idx(n, z - 1, y, x)),
                    (z + 1 < n).then(|| idx(n, z + 1, y, x)),
                ];
                out[i] = nb.into_iter().flatten().any(|j| b[j]);
            }
        }
    }
    out
}

#[test]
fn dilation_equals_repeated_cross() {
    let mut rng = Rng::new(2);
    for (n, p) in [(1, 0.5), (4, 0.05), (9, 0.01), (10, 0.002), (11, 0.03)] {
        let b = random_binary(&mut rng, n, p);
        let mut brute = b.clone();
        for k in 1..=5 {
            brute = cross_once(&brute, n);
            assert_eq!(dilate(&b, n, k), brute, "n={n} k={k}");
        }
        assert_eq!(dilate(&b, n, 0), b);
    }
    // A voxel on the border does not grow through the outside.
    let n = 6;
    let mut b = vec![false; n * n * n];
    b[idx(n, 0, 0, 0)] = true;
    let d = dilate(&b, n, 2);
    assert_eq!(d.iter().filter(|&&v| v).count(), 10);
}

/// Otsu by its definition on a histogram: the split maximizing w0·w1·(μ0 − μ1)².
fn otsu_brute(values: &[f32], bins: usize) -> f32 {
    let lo = values.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
    let hi = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0f64; bins];
    for &v in values {
        let i = (((v as f64 - lo) / width) as usize).min(bins - 1);
        counts[i] += 1.0;
    }
    let centre = |i: usize| lo + (i as f64 + 0.5) * width;
    let mut best = (0, -1.0);
    for split in 0..bins - 1 {
        let (mut w0, mut s0, mut w1, mut s1) = (0.0, 0.0, 0.0, 0.0);
        for (i, &c) in counts.iter().enumerate() {
            if i <= split {
                w0 += c;
                s0 += c * centre(i);
            } else {
                w1 += c;
                s1 += c * centre(i);
            }
        }
        let var = w0 * w1 * (s0 / w0 - s1 / w1).powi(2);
        if var > best.1 {
            best = (split, var);
        }
    }
    centre(best.0) as f32
}

#[test]
fn otsu_splits_a_bimodal_histogram() {
    let mut rng = Rng::new(3);
    let mut v: Vec<f32> = (0..6000).map(|_| (rng.normal() * 0.5) as f32).collect();
    v.extend((0..2000).map(|_| (10.0 + rng.normal() * 0.8) as f32));
    let t = otsu_threshold(&v, 256);
    // Every split inside the empty gap gives the same classes, so the same variance; the
    // first maximum is the bin just above the lower class.
    assert!(t > 1.0 && t < 8.0, "threshold {t}");
    assert!((t - otsu_brute(&v, 256)).abs() < 1e-5, "{t}");
    // The split is between bins and the threshold a bin centre: the lower class lies below
    // t + half a bin, the upper one above t.
    let lo = v.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let half_bin = (hi - lo) / 512.0;
    assert!(v[..6000].iter().all(|&x| x <= t + half_bin) && v[6000..].iter().all(|&x| x > t));
}

#[test]
fn fill_holes_fills_a_hollow_sphere_but_not_an_open_one() {
    let n = 20;
    let outer = centred_ball(n, 7.0);
    let inner = centred_ball(n, 4.0);
    let shell: Vec<bool> = outer.iter().zip(&inner).map(|(&o, &i)| o && !i).collect();
    assert_eq!(fill_holes(&shell, n), outer);
    // A tunnel through the shell along +x connects the cavity to the outside.
    let mut open = shell.clone();
    let c = n / 2;
    for x in c..n {
        open[idx(n, c, c, x)] = false;
    }
    assert_eq!(fill_holes(&open, n), open);
    // Background touching the border is never filled; an empty volume stays empty.
    assert!(fill_holes(&[false; 27], 3).iter().all(|&b| !b));
}

#[test]
fn largest_component_keeps_the_big_blob() {
    let n = 24;
    let big = ball_at(n, [8.0, 8.0, 8.0], 4.0);
    let small = ball_at(n, [18.0, 18.0, 18.0], 2.5);
    let both: Vec<bool> = big.iter().zip(&small).map(|(&a, &b)| a || b).collect();
    assert_eq!(largest_component(&both, n), big);
    // Touching along an edge only is not 6-connected: two components of 2 and 3 voxels.
    let mut b = vec![false; 27];
    b[idx(3, 0, 0, 0)] = true;
    b[idx(3, 0, 0, 1)] = true;
    b[idx(3, 0, 1, 2)] = true;
    b[idx(3, 1, 1, 2)] = true;
    b[idx(3, 2, 1, 2)] = true;
    let kept = largest_component(&b, 3);
    assert_eq!(kept.iter().filter(|&&v| v).count(), 3);
    assert!(!kept[idx(3, 0, 0, 0)]);
    // Tie: the component met first in file order.
    let mut t = vec![false; 27];
    t[idx(3, 2, 2, 2)] = true;
    t[idx(3, 0, 0, 0)] = true;
    let kept = largest_component(&t, 3);
    assert!(kept[idx(3, 0, 0, 0)] && !kept[idx(3, 2, 2, 2)]);
    assert!(largest_component(&[false; 8], 2).iter().all(|&v| !v));
}

fn reflect(i: i64, n: usize) -> usize {
    // Unfold by hand: ... | a b c d | d c b a | ...
    let mut i = i;
    loop {
        if i < 0 {
            i = -i - 1;
        } else if i >= n as i64 {
            i = 2 * n as i64 - 1 - i;
        } else {
            return i as usize;
        }
    }
}

#[test]
fn gaussian_filter_equals_direct_convolution() {
    let mut rng = Rng::new(4);
    for (n, sigma) in [(7usize, 0.8f64), (6, 2.0), (5, 1.3)] {
        let vol: Vec<f32> = (0..n * n * n).map(|_| rng.normal() as f32).collect();
        let r = (4.0 * sigma + 0.5) as i64;
        let mut w: Vec<f64> = (-r..=r)
            .map(|k| (-0.5 * (k * k) as f64 / (sigma * sigma)).exp())
            .collect();
        let s: f64 = w.iter().sum();
        w.iter_mut().for_each(|v| *v /= s);
        let got = gaussian_filter(&vol, n, sigma);
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    let mut acc = 0.0;
                    for (a, wa) in w.iter().enumerate() {
                        let zz = reflect(z as i64 + a as i64 - r, n);
                        for (b, wb) in w.iter().enumerate() {
                            let yy = reflect(y as i64 + b as i64 - r, n);
                            for (c, wc) in w.iter().enumerate() {
                                let xx = reflect(x as i64 + c as i64 - r, n);
                                acc += wa * wb * wc * vol[idx(n, zz, yy, xx)] as f64;
                            }
                        }
                    }
                    let g = got[idx(n, z, y, x)] as f64;
                    assert!((g - acc).abs() < 1e-5, "n={n} σ={sigma}: {g} vs {acc}");
                }
            }
        }
    }
    // A constant stays constant (the kernel sums to one, reflection adds no edge).
    let c = gaussian_filter(&vec![2.5; 512], 8, 3.0);
    assert!(c.iter().all(|&v| (v - 2.5).abs() < 1e-5));
}

// ---------------------------------------------------------------------------------------
// Recipes

#[test]
fn mask_from_noisy_halfmaps_covers_the_ball_plus_the_extension() {
    let n = 32;
    let radius = 7.0;
    let ball = centred_ball(n, radius);
    let mut rng = Rng::new(5);
    let mut noisy = || -> Vec<f32> {
        ball.iter()
            .map(|&b| b as u8 as f32 + 0.3 * rng.normal() as f32)
            .collect()
    };
    let (h1, h2) = (noisy(), noisy());
    let m = mask_from_halfmaps(&h1, &h2, n).unwrap();
    let ext = default_dilation_iters(n) as f64; // 2 voxels at n = 32
    for (i, &v) in m.iter().enumerate() {
        let r = (r2(n, i) as f64).sqrt();
        assert!((0.0..=1.0).contains(&v));
        if r <= radius {
            assert_eq!(v, 1.0, "r = {r}");
        }
        // Binary edge within a voxel of the ball, extension, 3-voxel cosine edge.
        if r >= radius + 1.0 + ext + 3.0 {
            assert_eq!(v, 0.0, "r = {r}");
        }
        assert!(v == 0.0 || v >= 1e-3);
    }
    let soft = m.iter().filter(|&&v| v > 0.0 && v < 1.0).count();
    assert!(soft > 1000, "{soft} soft voxels");
    // Where the mask crosses ½ along the axes: about radius + extension + 1.5.
    let c = n / 2;
    let crossing = (c..n).find(|&x| m[idx(n, c, c, x)] < 0.5).unwrap() - c;
    assert!(
        (9..=12).contains(&crossing),
        "½ crossing at {crossing} voxels"
    );

    // Through make_masks: the dilated mask contains the mask and reaches further.
    let masks = make_masks(
        &MaskOption::FromHalfmaps,
        n,
        &MaskSettings::default(),
        Some((&h1, &h2)),
    )
    .unwrap();
    assert!(max_abs_diff(&masks.mask, &m) < 1e-6);
    assert!(masks.dilated.iter().zip(&masks.mask).all(|(d, m)| d >= m));
    let sum = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>();
    assert!(sum(&masks.dilated) > 1.5 * sum(&masks.mask));

    // Without halfmaps, or flat ones: errors that say so.
    let e = make_masks(&MaskOption::FromHalfmaps, n, &MaskSettings::default(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("halfmap"), "{e}");
    let flat = vec![1.0f32; n * n * n];
    let e = mask_from_halfmaps(&flat, &flat, n).unwrap_err().to_string();
    assert!(e.contains("threshold"), "{e}");
    let e = mask_from_halfmaps(&flat[1..], &flat, n)
        .unwrap_err()
        .to_string();
    assert!(e.contains("values"), "{e}");
}

#[test]
fn sphere_and_none() {
    let n = 16;
    let s = make_masks(&MaskOption::Sphere, n, &MaskSettings::default(), None).unwrap();
    assert_eq!(s.mask, s.dilated);
    assert_eq!(s.mask, sphere_mask(n));
    for (i, &v) in s.mask.iter().enumerate() {
        assert_eq!(v, if r2(n, i) <= 49 { 1.0 } else { 0.0 });
    }
    let none = make_masks(&MaskOption::None, n, &MaskSettings::default(), None).unwrap();
    assert!(none.mask.iter().chain(&none.dilated).all(|&v| v == 1.0));
    assert_eq!(none.n, n);
    assert!(make_masks(&MaskOption::None, 0, &MaskSettings::default(), None).is_err());
}

#[test]
fn mrc_masks_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let n = 32;
    let ball = centred_ball(n, 8.0);
    let path = dir.path().join("mask.mrc");
    write_cube(&path, to_f32(&ball), [n; 3]);
    let settings = MaskSettings::default();

    let m = make_masks(&MaskOption::File(path.clone()), n, &settings, None).unwrap();
    assert_eq!(m.mask, soften(&ball, n, 3.0));
    assert_eq!(m.dilated, soften(&dilate(&ball, n, 2), n, 3.0));
    assert_eq!(load_mask_volume(&path, n).unwrap(), to_f32(&ball));

    // --dilated-mask-dilation-iters.
    let wide = MaskSettings {
        dilated_mask_iters: Some(5),
        ..MaskSettings::default()
    };
    let m5 = make_masks(&MaskOption::File(path.clone()), n, &wide, None).unwrap();
    assert_eq!(m5.dilated, soften(&dilate(&ball, n, 5), n, 3.0));

    // --mask-dilate-iter: thresholded at 0.99, dilated, then the usual recipe.
    let grow = MaskSettings {
        mask_dilate_iter: 2,
        ..MaskSettings::default()
    };
    let g = make_masks(&MaskOption::File(path.clone()), n, &grow, None).unwrap();
    let grown = dilate(&ball, n, 2);
    assert_eq!(g.mask, soften(&grown, n, 3.0));
    assert_eq!(g.dilated, soften(&dilate(&grown, n, 2), n, 3.0));
    let count = |v: &[f32]| v.iter().filter(|&&x| x > 0.5).count();
    assert!(count(&g.mask) > count(&m.mask) + 500);

    // --dont-resmooth-mask: the file's values as they are.
    let soft_file = soften(&ball, n, 2.0);
    let soft_path = dir.path().join("soft.mrc");
    write_cube(&soft_path, soft_file.clone(), [n; 3]);
    let keep = MaskSettings {
        dont_resmooth: true,
        ..MaskSettings::default()
    };
    let k = make_masks(&MaskOption::File(soft_path.clone()), n, &keep, None).unwrap();
    assert_eq!(k.mask, soft_file);
    let base: Vec<bool> = soft_file.iter().map(|&v| v > 0.5).collect();
    assert_eq!(k.dilated, soften(&dilate(&base, n, 2), n, 3.0));
}

#[test]
fn mrc_mask_of_another_size_is_resampled() {
    let dir = tempfile::tempdir().unwrap();
    let n = 32;
    // The same physical ball on a grid twice as fine.
    let big = centred_ball(2 * n, 16.0);
    let path = dir.path().join("mask128.mrc");
    write_cube(&path, to_f32(&big), [2 * n; 3]);
    let loaded = load_mask_volume(&path, n).unwrap();
    assert_eq!(loaded.len(), n * n * n);
    assert!(loaded.iter().all(|v| (0.0..=1.0).contains(v)));
    let want = centred_ball(n, 8.0);
    let m = make_masks(&MaskOption::File(path), n, &MaskSettings::default(), None).unwrap();
    let binary: Vec<bool> = m.mask.iter().map(|&v| v >= 0.9).collect();
    let differ = binary.iter().zip(&want).filter(|(a, b)| a != b).count();
    let inside = want.iter().filter(|&&b| b).count();
    assert!(
        (differ as f64) < 0.1 * inside as f64,
        "{differ} of {inside} voxels differ"
    );
    // A coarser file (upsampled) works too.
    let small = centred_ball(n / 2, 4.0);
    let path = dir.path().join("mask16.mrc");
    write_cube(&path, to_f32(&small), [n / 2; 3]);
    let up = load_mask_volume(&path, n).unwrap();
    let binary: Vec<bool> = up.iter().map(|&v| v > 0.5).collect();
    let differ = binary.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert!(
        (differ as f64) < 0.25 * inside as f64,
        "{differ} of {inside}"
    );
}

#[test]
fn bad_mask_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = MaskSettings::default();
    let err = |p: &PathBuf| {
        make_masks(&MaskOption::File(p.clone()), 16, &s, None)
            .unwrap_err()
            .to_string()
    };

    let p = dir.path().join("flat.mrc");
    write_cube(&p, vec![1.0; 16 * 16 * 8], [8, 16, 16]);
    let e = err(&p);
    assert!(
        e.contains("flat.mrc") && e.contains("16×16×8") && e.contains("not a cube"),
        "{e}"
    );

    let p = dir.path().join("image.mrc");
    write_cube(&p, vec![1.0; 16 * 16], [1, 16, 16]);
    let e = err(&p);
    assert!(e.contains("image.mrc") && e.contains("2-D"), "{e}");

    let p = dir.path().join("zero.mrc");
    write_cube(&p, vec![0.0; 16 * 16 * 16], [16; 3]);
    let e = err(&p);
    assert!(
        e.contains("zero.mrc") && e.contains("no voxel above 0.5"),
        "{e}"
    );
    let e = load_mask_volume(&p, 16).unwrap_err().to_string();
    assert!(e.contains("no voxel above 0.5"), "{e}");

    let p = dir.path().join("nan.mrc");
    let mut v = vec![1.0; 16 * 16 * 16];
    v[idx(16, 3, 2, 1)] = f32::NAN;
    write_cube(&p, v, [16; 3]);
    let e = err(&p);
    assert!(e.contains("nan.mrc") && e.contains("x=1, y=2, z=3"), "{e}");

    let p = dir.path().join("missing.mrc");
    let e = err(&p);
    assert!(
        e.contains("missing.mrc") && e.contains("does not exist"),
        "{e}"
    );
    // A typo of a built-in name ends up as a missing file, and the error lists the names.
    let typo: MaskOption = "spehre".parse().unwrap();
    let e = make_masks(&typo, 16, &s, None).unwrap_err().to_string();
    assert!(e.contains("spehre") && e.contains("sphere"), "{e}");
}

#[test]
fn focus_and_complement_masks() {
    let dir = tempfile::tempdir().unwrap();
    let n = 32;
    let whole = centred_ball(n, 10.0);
    let part = ball_at(n, [16.0, 16.0, 21.0], 5.0);
    let path = dir.path().join("focus.mrc");
    write_cube(&path, to_f32(&part), [n; 3]);
    let focus = focus_mask(&path, n, &MaskSettings::default()).unwrap();
    assert_eq!(focus, soften(&part, n, 3.0));

    let volume = soften(&whole, n, 3.0);
    let comp = complement_mask(&volume, &focus, n);
    let rest: Vec<bool> = whole.iter().zip(&part).map(|(&w, &p)| w && !p).collect();
    assert_eq!(comp, soften(&rest, n, 3.0));
    // 1 in the volume away from the focus, 0 deep in the focus and outside the volume.
    assert_eq!(comp[idx(n, 16, 16, 9)], 1.0);
    assert_eq!(comp[idx(n, 16, 16, 21)], 0.0);
    assert_eq!(comp[idx(n, 0, 0, 0)], 0.0);
}

// ---------------------------------------------------------------------------------------
// Against the Python RECOVAR

/// RECOVAR's pipeline output for the 32³ dataset (`--mask from_halfmaps`).
fn python_volumes() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    assert!(
        root.is_dir(),
        "test data folder {} is missing: this test needs ../shared/data next to the \
         repository",
        root.display()
    );
    root.join("recovar_small/grid32/reference_pipeline_output/output/volumes")
}

/// Max abs difference and fraction of voxels differing by more than 0.05.
fn compare(ours: &[f32], theirs: &[f32]) -> (f32, f64) {
    let far = ours
        .iter()
        .zip(theirs)
        .filter(|(a, b)| (*a - *b).abs() > 0.05)
        .count();
    (max_abs_diff(ours, theirs), far as f64 / ours.len() as f64)
}

#[test]
fn dilated_mask_agrees_with_python_recovar() {
    let dir = python_volumes();
    let mask = read_volume(dir.join("mask.mrc")).unwrap();
    let dilated = read_volume(dir.join("dilated_mask.mrc")).unwrap();
    let n = 32;
    assert_eq!(mask.shape, [n; 3]);
    assert_eq!(dilated.shape, [n; 3]);
    let iters = default_dilation_iters(n);
    assert_eq!(iters, 2);

    // Their volume mask is soften(binary, 3) of a binary core; re-softening the core
    // reproduces it.
    let core: Vec<bool> = mask.data.iter().map(|&v| v >= 0.9).collect();
    let (d_mask, f_mask) = compare(&soften(&core, n, 3.0), &mask.data);
    eprintln!("mask: soften(mask ≥ 0.9, 3) vs mask.mrc: max |Δ| {d_mask:.2e}, {f_mask:.4} > 0.05");
    assert!(d_mask < 1e-5);

    // As asked: threshold the mask at 0.5, dilate ceil(6·32/128) = 2 times, soften.
    let half: Vec<bool> = mask.data.iter().map(|&v| v > 0.5).collect();
    let ours_half = soften(&dilate(&half, n, iters), n, 3.0);
    let (d_half, f_half) = compare(&ours_half, &dilated.data);
    eprintln!(
        "dilated: soften(dilate(mask > 0.5, 2), 3) vs dilated_mask.mrc: max |Δ| {d_half:.3}, \
         {:.2}% of voxels > 0.05",
        100.0 * f_half
    );
    // What RECOVAR does for from_halfmaps: dilate every nonzero voxel of the soft mask.
    let nonzero: Vec<bool> = mask.data.iter().map(|&v| v != 0.0).collect();
    let ours_nz = soften(&dilate(&nonzero, n, iters), n, 3.0);
    let (d_nz, f_nz) = compare(&ours_nz, &dilated.data);
    eprintln!(
        "dilated: soften(dilate(mask ≠ 0, 2), 3) vs dilated_mask.mrc: max |Δ| {d_nz:.2e}, \
         {:.2}% of voxels > 0.05",
        100.0 * f_nz
    );
    assert!(d_nz < 1e-5, "max |Δ| {d_nz}");
    // The 0.5 threshold starts about 1.5 voxels inside: a narrower dilated mask, never a
    // wider one.
    assert!(ours_half
        .iter()
        .zip(&dilated.data)
        .all(|(a, b)| *a <= b + 1e-5));
    assert!(f_half < 0.35, "{f_half}");
}

/// Their volume mask came from the *regularized* halfmaps, which are not saved; the saved
/// unfiltered halfmaps low-pass to nearly the same density, so the recipe run on them must
/// give nearly the same mask.
#[test]
fn mask_from_python_halfmaps_is_close_to_python_mask() {
    let dir = python_volumes();
    let h1 = read_volume(dir.join("mean_half1_unfil.mrc")).unwrap();
    let h2 = read_volume(dir.join("mean_half2_unfil.mrc")).unwrap();
    let mask = read_volume(dir.join("mask.mrc")).unwrap();
    let ours = mask_from_halfmaps(&h1.data, &h2.data, 32).unwrap();
    let (d, f) = compare(&ours, &mask.data);
    let core = |m: &[f32]| m.iter().map(|&v| v >= 0.9).collect::<Vec<bool>>();
    let (a, b) = (core(&ours), core(&mask.data));
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    let theirs = b.iter().filter(|&&v| v).count();
    eprintln!(
        "from_halfmaps on the unfiltered halfmaps vs mask.mrc: max |Δ| {d:.3}, {:.2}% of \
         voxels > 0.05, cores differ in {differ} of {theirs} voxels",
        100.0 * f
    );
    assert!((differ as f64) < 0.02 * theirs as f64);
    assert!(f < 0.02);
}
