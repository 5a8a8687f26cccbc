//! A dataset's vital statistics, for `recovar info` and for logs.

use std::fmt;

use super::{Dataset, HalfsetOrigin};

/// Min, mean and max of a column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range3 {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

impl Range3 {
    fn of(values: impl Iterator<Item = f64>) -> Option<Self> {
        let (mut min, mut max, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
        for v in values {
            min = min.min(v);
            max = max.max(v);
            sum += v;
            n += 1;
        }
        (n > 0).then(|| Range3 {
            min,
            mean: sum / n as f64,
            max,
        })
    }
}

impl fmt::Display for Range3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (self.max - self.min).abs() <= 1e-9 * self.max.abs().max(1.0) {
            write!(f, "{}", fmt_num(self.min))
        } else {
            write!(
                f,
                "{} – {} (mean {})",
                fmt_num(self.min),
                fmt_num(self.max),
                fmt_num(self.mean)
            )
        }
    }
}

/// Numbers as a person would write them: no float32 noise like 5202.8999.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if v != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.3e}");
    }
    let s = if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// How well the viewing directions cover the sphere.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoseCoverage {
    /// Number of equal-area cells the sphere was divided into.
    pub cells: usize,
    /// Fraction of cells with at least one viewing direction.
    pub covered: f64,
    /// What `covered` would be for the same number of uniformly random directions.
    pub covered_if_uniform: f64,
    /// Share of all images in the most populated cell.
    pub max_cell_share: f64,
}

/// The vital statistics of a dataset.
#[derive(Clone, Debug)]
pub struct DatasetSummary {
    pub particles: String,
    pub n_images: usize,
    pub n_in_file: usize,
    pub n_stacks: usize,
    pub box_size: usize,
    pub voxel_size: f64,
    pub header_voxel_size: Option<f64>,
    pub ctf_table_dims: Option<(f64, f64)>,
    pub defocus_u: Option<Range3>,
    pub defocus_v: Option<Range3>,
    pub defocus_angle: Option<Range3>,
    pub voltage: Option<Range3>,
    pub cs: Option<Range3>,
    pub amp_contrast: Option<Range3>,
    pub phase_shift: Option<Range3>,
    pub has_poses: bool,
    pub shift_px: Option<Range3>,
    pub coverage: Option<PoseCoverage>,
    pub halfsets: (usize, usize),
    pub halfset_origin: HalfsetOrigin,
}

/// Bands of equal height in cos(θ) and equal longitude steps give cells of equal area.
const BANDS: usize = 18;
const SECTORS: usize = 36;

/// Coverage of the viewing directions (third rows of the rotations).
pub fn pose_coverage(rotations: &[[f32; 9]]) -> PoseCoverage {
    let cells = BANDS * SECTORS;
    let mut counts = vec![0usize; cells];
    for r in rotations {
        let (x, y, z) = (r[6] as f64, r[7] as f64, r[8] as f64);
        let norm = (x * x + y * y + z * z).sqrt().max(1e-12);
        let cz = (z / norm).clamp(-1.0, 1.0);
        let band = (((cz + 1.0) / 2.0 * BANDS as f64) as usize).min(BANDS - 1);
        let phi = y.atan2(x) + std::f64::consts::PI;
        let sector =
            ((phi / (2.0 * std::f64::consts::PI) * SECTORS as f64) as usize).min(SECTORS - 1);
        counts[band * SECTORS + sector] += 1;
    }
    let n = rotations.len().max(1) as f64;
    let covered = counts.iter().filter(|&&c| c > 0).count() as f64 / cells as f64;
    let covered_if_uniform = 1.0 - (1.0 - 1.0 / cells as f64).powf(n);
    let max_cell_share = counts.iter().copied().max().unwrap_or(0) as f64 / n;
    PoseCoverage {
        cells,
        covered,
        covered_if_uniform,
        max_cell_share,
    }
}

impl Dataset {
    /// Compute the summary (reads no images).
    pub fn summary(&self) -> DatasetSummary {
        let ctf = self.ctf();
        let col = |f: fn(&super::CtfParams) -> f32| {
            ctf.and_then(|c| Range3::of(c.iter().map(|p| f(p) as f64)))
        };
        let shifts = self.rotations().map(|_| {
            Range3::of(
                self.translations()
                    .iter()
                    .map(|t| ((t[0] as f64).powi(2) + (t[1] as f64).powi(2)).sqrt()),
            )
        });
        DatasetSummary {
            particles: self.particles_path().display().to_string(),
            n_images: self.len(),
            n_in_file: self.total_in_file(),
            n_stacks: self.source().stack_files().len(),
            box_size: self.box_size(),
            voxel_size: self.voxel_size(),
            header_voxel_size: self.source().header_voxel_size(),
            ctf_table_dims: self.ctf_table_dims(),
            defocus_u: col(|p| p.defocus_u),
            defocus_v: col(|p| p.defocus_v),
            defocus_angle: col(|p| p.defocus_angle_deg),
            voltage: col(|p| p.voltage_kv),
            cs: col(|p| p.cs_mm),
            amp_contrast: col(|p| p.amp_contrast),
            phase_shift: col(|p| p.phase_shift_deg),
            has_poses: self.rotations().is_some(),
            shift_px: shifts.flatten(),
            coverage: self.rotations().map(pose_coverage),
            halfsets: (self.halfsets()[0].len(), self.halfsets()[1].len()),
            halfset_origin: self.halfset_origin().clone(),
        }
    }
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "particles        {}", self.particles)?;
        write!(f, "images           {}", self.n_images)?;
        if self.n_images != self.n_in_file {
            write!(f, " selected of {}", self.n_in_file)?;
        }
        if self.n_stacks > 1 {
            write!(f, " in {} stacks", self.n_stacks)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "box              {} × {} px",
            self.box_size, self.box_size
        )?;
        write!(f, "pixel size       {} Å", fmt_num(self.voxel_size))?;
        match (self.ctf_table_dims, self.header_voxel_size) {
            (Some((d, a)), h) => {
                write!(f, " (CTF table: {} px at {} Å", fmt_num(d), fmt_num(a))?;
                if let Some(h) = h {
                    write!(f, "; stack header: {} Å", fmt_num(h))?;
                }
                write!(f, ")")?;
            }
            (None, Some(_)) => write!(f, " (from the stack header)")?,
            (None, None) => write!(f, " (assumed: no CTF table, no pixel size in the header)")?,
        }
        writeln!(f)?;
        writeln!(f, "Nyquist          {} Å", fmt_num(2.0 * self.voxel_size))?;
        match (&self.defocus_u, &self.defocus_v) {
            (Some(u), Some(v)) => {
                writeln!(f, "defocus U        {u} Å")?;
                writeln!(f, "defocus V        {v} Å")?;
                if let Some(a) = &self.defocus_angle {
                    writeln!(f, "defocus angle    {a}°")?;
                }
                if let Some(v) = &self.voltage {
                    writeln!(f, "voltage          {v} kV")?;
                }
                if let Some(c) = &self.cs {
                    writeln!(f, "Cs               {c} mm")?;
                }
                if let Some(w) = &self.amp_contrast {
                    writeln!(f, "amp. contrast    {w}")?;
                }
                if let Some(p) = &self.phase_shift {
                    writeln!(f, "phase shift      {p}°")?;
                }
            }
            _ => writeln!(f, "CTF              none given")?,
        }
        if self.has_poses {
            if let Some(s) = &self.shift_px {
                writeln!(f, "shift |t|        {s} px")?;
            }
            if let Some(c) = &self.coverage {
                writeln!(
                    f,
                    "view coverage    {:.1}% of {} equal-area cells hold a viewing direction \
                     ({:.1}% expected for uniform views); fullest cell holds {:.1}% of images",
                    100.0 * c.covered,
                    c.cells,
                    100.0 * c.covered_if_uniform,
                    100.0 * c.max_cell_share
                )?;
            }
        } else {
            writeln!(f, "poses            none given")?;
        }
        write!(
            f,
            "halfsets         {} / {}",
            self.halfsets.0, self.halfsets.1
        )?;
        match &self.halfset_origin {
            HalfsetOrigin::File(p) => writeln!(f, " (from {})", p.display()),
            HalfsetOrigin::RandomSubset => writeln!(f, " (from _rlnRandomSubset)"),
            HalfsetOrigin::Random { seed } => writeln!(f, " (random split, seed {seed})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_directions_cover_like_uniform() {
        // Golden-spiral directions are close to uniform.
        let n = 5000;
        let rots: Vec<[f32; 9]> = (0..n)
            .map(|i| {
                let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
                let r = (1.0 - z * z).sqrt();
                let phi = i as f64 * 2.399963229728653;
                let mut m = [0.0f32; 9];
                m[6] = (r * phi.cos()) as f32;
                m[7] = (r * phi.sin()) as f32;
                m[8] = z as f32;
                m
            })
            .collect();
        let c = pose_coverage(&rots);
        assert!(c.covered > 0.99, "{c:?}");
        assert!(c.max_cell_share < 3.0 / c.cells as f64, "{c:?}");
        // One direction only: one cell.
        let c = pose_coverage(&rots[..1].repeat(100));
        assert!((c.covered - 1.0 / c.cells as f64).abs() < 1e-12);
        assert_eq!(c.max_cell_share, 1.0);
    }

    #[test]
    fn ranges_print_compactly() {
        let r = Range3::of([300.0, 300.0].into_iter()).unwrap();
        assert_eq!(r.to_string(), "300");
        let r = Range3::of([1.0, 2.0].into_iter()).unwrap();
        assert_eq!(r.to_string(), "1 – 2 (mean 1.5)");
    }
}
