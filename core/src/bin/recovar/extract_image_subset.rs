//! `recovar extract_image_subset --input-dir vol0000 -o indices.pkl
//!  (--subvol-idx K | --mask feature.mrc | --coordinate X,Y,Z)
//!  [--star particles.star --star-out subset.star] [--cs particles.cs --cs-out subset.cs]`
//!
//! The images that made one region of a generated volume (algorithms.md §11), as
//! RECOVAR's `extract_image_subset`: a pickled int64 numpy array of 0-based indices into the
//! original particle file (cryoDRGN's `--ind` format). Beyond the Python tool, `--star`/`--cs`
//! write the subset of the particle file directly, so no `cryodrgn_utils write_star` is needed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use recovar_core::analysis::subset::{select_subvolume, volume_subset, SubsetTarget, VolumeDir};
use recovar_core::io::cs::{self, CsFile};
use recovar_core::io::pickle::{self, NdArray, PyValue};
use recovar_core::io::star::{self, StarFile};

use crate::common::{prepare_output, require_ext};

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .args(["subvol_idx", "mask", "coordinate"])
))]
pub struct Args {
    /// Folder of one generated volume (e.g. analysis_20/centers/vol0000/), holding
    /// params.pkl, locres.mrc and heterogeneity_distances.txt
    #[arg(long = "input-dir", value_name = "DIR")]
    input_dir: PathBuf,
    /// Output: the selected image indices, a pickled int64 numpy array (.pkl)
    #[arg(short = 'o', long, value_name = "PKL")]
    output: PathBuf,
    /// Index of the local sampling point (subvolume) whose images to extract
    #[arg(short = 's', long = "subvol-idx", value_name = "K")]
    subvol_idx: Option<usize>,
    /// Small mask around the feature (an .mrc on the volume's grid); its center of mass
    /// is used as --coordinate, so a non-convex mask gives strange results
    #[arg(long, value_name = "MRC")]
    mask: Option<PathBuf>,
    /// Voxel coordinate of the feature, x,y,z (0-based, as in the map); the nearest
    /// sampling point is used
    #[arg(
        long,
        value_name = "X,Y,Z",
        value_delimiter = ',',
        num_args = 1,
        allow_negative_numbers = true
    )]
    coordinate: Option<Vec<f64>>,
    #[command(flatten)]
    files: SubsetFiles,
}

/// `--star/--star-out` and `--cs/--cs-out`, shared with `extract_image_subset_from_kmeans`.
#[derive(clap::Args)]
pub struct SubsetFiles {
    /// RELION .star file the indices refer to (the particle file given to pipeline); with
    /// --star-out, write the subset of its particle rows
    #[arg(long, value_name = "STAR", requires = "star_out")]
    star: Option<PathBuf>,
    /// Output .star: the selected particle rows; optics and every other block are copied
    /// unchanged
    #[arg(long = "star-out", value_name = "STAR", requires = "star")]
    star_out: Option<PathBuf>,
    /// cryoSPARC .cs file the indices refer to; with --cs-out, write the subset of its rows
    #[arg(long, value_name = "CS", requires = "cs_out")]
    cs: Option<PathBuf>,
    /// Output .cs: the selected rows, same fields as the input
    #[arg(long = "cs-out", value_name = "CS", requires = "cs")]
    cs_out: Option<PathBuf>,
}

impl SubsetFiles {
    /// Check the requested particle files before anything is written: they read, the
    /// indices fit their particle count, and there is something to write. `n_indexed` is
    /// the length of the original-indexed array the indices come from.
    pub fn check(&self, indices: &[usize], n_indexed: usize) -> Result<()> {
        let mut files: Vec<(&Path, usize)> = Vec::new();
        if let (Some(src), Some(out)) = (&self.star, &self.star_out) {
            require_ext(src, &["star"], "--star")?;
            prepare_output(out, &["star"])?;
            let n = StarFile::read(src)?.particles()?.n_rows();
            files.push((src, n));
        }
        if let (Some(src), Some(out)) = (&self.cs, &self.cs_out) {
            require_ext(src, &["cs"], "--cs")?;
            prepare_output(out, &["cs"])?;
            files.push((src, CsFile::read(src)?.len()));
        }
        for (src, n) in files {
            if indices.is_empty() {
                bail!(
                    "no images selected: not writing a subset of {}; nothing was written",
                    src.display()
                );
            }
            if let Some(max) = indices.iter().copied().max() {
                if max >= n {
                    bail!(
                        "{}: has {n} particles, but the selected indices go up to {max}; \
                         give the particle file the pipeline was run on",
                        src.display()
                    );
                }
            }
            if n_indexed > n {
                tracing::warn!(
                    "{} has {n} particles but the per-particle array has {n_indexed} entries; \
                     is it the particle file the pipeline was run on?",
                    src.display()
                );
            }
        }
        Ok(())
    }

    /// Write the requested subsets (after [`SubsetFiles::check`]).
    pub fn write(&self, indices: &[usize]) -> Result<()> {
        if let (Some(src), Some(out)) = (&self.star, &self.star_out) {
            let n = star::write_subset(src, indices, out)?;
            println!(
                "wrote {n} particles of {} to {}",
                src.display(),
                out.display()
            );
        }
        if let (Some(src), Some(out)) = (&self.cs, &self.cs_out) {
            let n = cs::write_subset(src, indices, out)?;
            println!(
                "wrote {n} particles of {} to {}",
                src.display(),
                out.display()
            );
        }
        Ok(())
    }
}

/// Write ascending indices as a pickled int64 array, cryoDRGN's `ind.pkl`.
pub fn write_indices(path: &Path, indices: &[usize]) -> Result<()> {
    let data = indices
        .iter()
        .map(|&i| i64::try_from(i))
        .collect::<Result<Vec<i64>, _>>()
        .context("image index too large for int64")?;
    let arr = NdArray::from_i64(vec![data.len()], data)?;
    pickle::dump(path, &PyValue::Array(arr))?;
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let out = prepare_output(&a.output, &["pkl"])?;
    let target = match (a.subvol_idx, a.mask, a.coordinate) {
        (Some(k), None, None) => SubsetTarget::SubvolIdx(k),
        (None, Some(m), None) => SubsetTarget::Mask(m),
        (None, None, Some(c)) => match c.as_slice() {
            [x, y, z] => SubsetTarget::Coordinate([*x, *y, *z]),
            _ => bail!(
                "--coordinate takes three numbers x,y,z, got {}",
                c.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        },
        // clap's argument group already enforces exactly one.
        _ => bail!("give exactly one of --subvol-idx, --mask and --coordinate"),
    };
    let dir = VolumeDir::load(&a.input_dir)?;
    let choice = select_subvolume(&dir, &target)?;
    tracing::info!(
        "sampling point {} at voxel {:?}: local resolution {:.2} Å → shell {}, bin {} of {} \
         (distance < {}{})",
        choice.point,
        choice.voxel,
        choice.local_resolution,
        choice.shell,
        choice.bin,
        choice.n_bins,
        choice.distance_bound,
        choice
            .images_in_bin
            .map(|n| format!(", {n} images in the kernel estimate"))
            .unwrap_or_default()
    );
    let indices = volume_subset(&dir, &target)?;
    let n_used = dir.distances().iter().filter(|d| !d.is_nan()).count();
    a.files.check(&indices, dir.distances().len())?;
    write_indices(&out, &indices)?;
    println!(
        "selected {} of {n_used} images (sampling point {}); indices written to {}",
        indices.len(),
        choice.point,
        out.display()
    );
    a.files.write(&indices)
}
