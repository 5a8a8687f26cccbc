//! The ground-truth molecule of the simulator: Gaussian "atoms" in three rigid bodies.
//!
//! - **Core** (always present): a folded chain of atoms inside an ellipsoid.
//! - **Arm**: a curved rod hinged to the core; it turns about the z axis through its pivot by
//!   `θ = HINGE_MAX_DEG · h`, where `h ∈ [−1, 1]` is the continuous latent value of an image.
//! - **Lid**: a compact domain that is absent in state 0, docked at one site in state 1 and at
//!   another in state 2 (three discrete states).
//!
//! Everything is defined in fractions of the box, so the same molecule is drawn at any box
//! size, and from a fixed internal seed: the molecule is part of the program, not of the
//! user's `--seed` (which chooses poses, states, CTFs and noise).
//!
//! Coordinates: a point `u` (box fractions, origin at the box centre) sits at voxel
//! `(x, y, z) = N/2 + N·u`, in the volume layout of the rest of the crate (z slowest, x
//! fastest). A volume is the sum of `amplitude · exp(−|x − p|²/(2σ²))` over its atoms,
//! sampled at voxel centres.

use crate::rng::Rng;

/// One Gaussian blob: position and width in box fractions, and a peak amplitude.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Atom {
    pub pos: [f64; 3],
    pub sigma: f64,
    pub amplitude: f64,
}

/// The three rigid bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Body {
    Core,
    Arm,
    Lid,
}

/// Largest hinge rotation, in degrees, reached at latent value ±1.
pub const HINGE_MAX_DEG: f64 = 30.0;
/// The arm turns about the z axis through this point (box fractions).
pub const HINGE_PIVOT: [f64; 3] = [0.17, 0.02, 0.0];
/// Where the lid sits in states 1 and 2 (box fractions, added to its atoms).
pub const LID_SITES: [[f64; 3]; 2] = [[-0.10, 0.2, 0.06], [-0.12, -0.2, -0.05]];
/// Probability of each discrete state (as in RECOVAR's own test set).
pub const STATE_PROBABILITIES: [f64; 3] = [0.25, 0.25, 0.5];
/// Atom width in box fractions: about 0.8 px at D = 64, so the volumes carry detail up to
/// Nyquist at every box size.
const SIGMA: f64 = 0.014;
/// Fixed seed of the molecule's shape.
const MOLECULE_SEED: u64 = 0x5EC0_7A12;

/// The atoms of the three bodies in their reference placement (hinge angle 0, lid centred
/// at the origin before placement).
#[derive(Clone, Debug)]
pub struct Phantom {
    pub core: Vec<Atom>,
    pub arm: Vec<Atom>,
    pub lid: Vec<Atom>,
}

impl Default for Phantom {
    fn default() -> Self {
        Self::new()
    }
}

impl Phantom {
    /// The molecule (always the same).
    pub fn new() -> Self {
        let mut rng = Rng::new(MOLECULE_SEED);
        // Core: atoms packed at random in an ellipsoid, no two closer than a bond length,
        // with a denser inner region (like a protein's hydrophobic core).
        let semi = [0.22, 0.17, 0.14];
        let mut core: Vec<Atom> = Vec::new();
        while core.len() < 320 {
            let q = [
                rng.uniform_in(-semi[0], semi[0]),
                rng.uniform_in(-semi[1], semi[1]),
                rng.uniform_in(-semi[2], semi[2]),
            ];
            let r = (q[0] / semi[0]).powi(2) + (q[1] / semi[1]).powi(2) + (q[2] / semi[2]).powi(2);
            if r <= 1.0 && !core.iter().any(|a| dist(a.pos, q) < 0.022) {
                core.push(Atom {
                    pos: q,
                    sigma: SIGMA,
                    amplitude: 1.2 - 0.4 * r + 0.2 * rng.uniform(),
                });
            }
        }
        // Arm: a curved rod from the pivot outwards, slightly wavy.
        let arm = (0..90)
            .map(|i| {
                let t = i as f64 / 89.0;
                let jitter = [
                    rng.normal() * 0.012,
                    rng.normal() * 0.012,
                    rng.normal() * 0.012,
                ];
                Atom {
                    pos: [
                        HINGE_PIVOT[0] + 0.02 + 0.16 * t + jitter[0],
                        HINGE_PIVOT[1] + 0.10 * t * t + 0.02 * (7.0 * t).sin() + jitter[1],
                        HINGE_PIVOT[2] + 0.03 * (5.0 * t).cos() + jitter[2],
                    ],
                    sigma: SIGMA * 1.2,
                    amplitude: 1.0,
                }
            })
            .collect();
        // Lid: a compact ball of atoms around the origin (placed at a site per state).
        let mut lid = Vec::new();
        while lid.len() < 70 {
            let q = [
                rng.uniform_in(-0.08, 0.08),
                rng.uniform_in(-0.08, 0.08),
                rng.uniform_in(-0.07, 0.07),
            ];
            if dist(q, [0.0; 3]) <= 0.08 && !lid.iter().any(|a: &Atom| dist(a.pos, q) < 0.02) {
                lid.push(Atom {
                    pos: q,
                    sigma: SIGMA,
                    amplitude: 1.1,
                });
            }
        }
        Phantom { core, arm, lid }
    }

    /// The atoms of `body`.
    pub fn atoms(&self, body: Body) -> &[Atom] {
        match body {
            Body::Core => &self.core,
            Body::Arm => &self.arm,
            Body::Lid => &self.lid,
        }
    }

    /// Every atom of the molecule in `state` (0, 1 or 2) with hinge latent `h`, placed.
    pub fn placed_atoms(&self, state: usize, h: f64) -> Vec<Atom> {
        let mut out = self.core.clone();
        let q = hinge_rotation(h);
        out.extend(self.arm.iter().map(|a| Atom {
            pos: rotate_about(&q, HINGE_PIVOT, a.pos),
            ..*a
        }));
        if state >= 1 {
            let site = LID_SITES[(state - 1).min(1)];
            out.extend(self.lid.iter().map(|a| Atom {
                pos: [a.pos[0] + site[0], a.pos[1] + site[1], a.pos[2] + site[2]],
                ..*a
            }));
        }
        out
    }
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Rotation about the z axis by `HINGE_MAX_DEG · h`, row-major.
pub fn hinge_rotation(h: f64) -> [f64; 9] {
    let (s, c) = (HINGE_MAX_DEG * h).to_radians().sin_cos();
    [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]
}

/// `pivot + Q·(p − pivot)`.
pub fn rotate_about(q: &[f64; 9], pivot: [f64; 3], p: [f64; 3]) -> [f64; 3] {
    let d = [p[0] - pivot[0], p[1] - pivot[1], p[2] - pivot[2]];
    let mut out = pivot;
    for (i, o) in out.iter_mut().enumerate() {
        *o += q[3 * i] * d[0] + q[3 * i + 1] * d[1] + q[3 * i + 2] * d[2];
    }
    out
}

/// Add the atoms to a real-space `n³` volume (z slowest, x fastest), with an extra
/// translation `offset` (box fractions). Each atom touches only voxels within 4σ.
pub fn render(atoms: &[Atom], n: usize, offset: [f64; 3], vol: &mut [f32]) {
    assert_eq!(vol.len(), n * n * n, "volume buffer size");
    let nf = n as f64;
    let half = (n / 2) as f64;
    for a in atoms {
        let sigma = a.sigma * nf;
        let reach = (4.0 * sigma).ceil() as i64;
        let c = [
            half + nf * (a.pos[0] + offset[0]),
            half + nf * (a.pos[1] + offset[1]),
            half + nf * (a.pos[2] + offset[2]),
        ];
        let inv = 1.0 / (2.0 * sigma * sigma);
        let lo = |v: f64| ((v.round() as i64) - reach).max(0) as usize;
        let hi = |v: f64| (((v.round() as i64) + reach).min(n as i64 - 1)).max(-1);
        let (x0, x1) = (lo(c[0]), hi(c[0]));
        let (y0, y1) = (lo(c[1]), hi(c[1]));
        let (z0, z1) = (lo(c[2]), hi(c[2]));
        if x1 < 0 || y1 < 0 || z1 < 0 {
            continue;
        }
        for z in z0..=z1 as usize {
            let dz = z as f64 - c[2];
            for y in y0..=y1 as usize {
                let dy = y as f64 - c[1];
                let row = (z * n + y) * n;
                for x in x0..=x1 as usize {
                    let dx = x as f64 - c[0];
                    let r2 = dx * dx + dy * dy + dz * dz;
                    vol[row + x] += (a.amplitude * (-r2 * inv).exp()) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn molecule_is_fixed_and_fits_in_the_box() {
        let a = Phantom::new();
        let b = Phantom::new();
        assert_eq!(a.core, b.core);
        for state in 0..3 {
            for h in [-1.0, 0.0, 1.0] {
                for atom in a.placed_atoms(state, h) {
                    // Inside the sphere of radius 0.42 box: clear of the N/2 − 1 Fourier
                    // sphere and of the soft masks at every box size ≥ 32.
                    assert!(dist(atom.pos, [0.0; 3]) < 0.42, "{atom:?}");
                }
            }
        }
        assert_eq!(a.placed_atoms(0, 0.0).len(), a.core.len() + a.arm.len());
        assert_eq!(
            a.placed_atoms(2, 0.0).len(),
            a.core.len() + a.arm.len() + a.lid.len()
        );
    }

    #[test]
    fn hinge_moves_only_the_arm_and_keeps_the_pivot() {
        let p = Phantom::new();
        let a0 = p.placed_atoms(0, 0.0);
        let a1 = p.placed_atoms(0, 1.0);
        let nc = p.core.len();
        assert_eq!(&a0[..nc], &a1[..nc]);
        assert!(a0[nc..].iter().zip(&a1[nc..]).all(|(x, y)| x.pos != y.pos));
        let q = hinge_rotation(0.7);
        let piv = rotate_about(&q, HINGE_PIVOT, HINGE_PIVOT);
        assert!(dist(piv, HINGE_PIVOT) < 1e-15);
    }

    #[test]
    fn render_matches_closed_form_and_integral() {
        let atom = Atom {
            pos: [0.03, -0.02, 0.01],
            sigma: 2.0 / 32.0,
            amplitude: 1.5,
        };
        let n = 32;
        let mut vol = vec![0.0f32; n * n * n];
        render(&[atom], n, [0.0; 3], &mut vol);
        // Peak voxel near the centre + offset, value from the formula.
        let c = [16.0 + 32.0 * 0.03, 16.0 - 32.0 * 0.02, 16.0 + 32.0 * 0.01];
        let (x, y, z) = (17usize, 15usize, 16usize);
        let r2 = (x as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2) + (z as f64 - c[2]).powi(2);
        let want = 1.5 * (-r2 / 8.0).exp();
        assert!((vol[(z * n + y) * n + x] as f64 - want).abs() < 1e-6);
        // The sum approximates the integral amplitude·(2πσ²)^{3/2} (σ = 2 px).
        let sum: f64 = vol.iter().map(|&v| v as f64).sum();
        let integral = 1.5 * (2.0 * std::f64::consts::PI * 4.0f64).powf(1.5);
        assert!(
            (sum - integral).abs() < 1e-3 * integral,
            "{sum} vs {integral}"
        );
    }
}
