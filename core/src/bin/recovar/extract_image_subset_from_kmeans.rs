//! `recovar extract_image_subset_from_kmeans kmeans_result.pkl indices.pkl 20,30,50 [-i]
//!  [--star particles.star --star-out subset.star] [--cs particles.cs --cs-out subset.cs]`
//!
//! The images of some k-means clusters (algorithms.md §11), as RECOVAR's
//! `extract_image_subset_from_kmeans`: a pickled int64 numpy array of 0-based indices into
//! the original particle file; `-i` keeps the images of every other cluster instead.
//! Images the run did not use (NaN labels) are never kept by `-i`.

use std::path::PathBuf;

use anyhow::Result;
use recovar_core::analysis::subset::{kmeans_subset, read_kmeans_labels};

use crate::common::{prepare_output, require_ext};
use crate::extract_image_subset::{write_indices, SubsetFiles};

#[derive(clap::Args)]
pub struct Args {
    /// The k-means result written by analyze (analysis_{zdim}/kmeans_result.pkl, called
    /// centers.pkl in RECOVAR's README): a dict with "labels", or a bare label array
    path_to_centers: PathBuf,
    /// Output: the selected image indices, a pickled int64 numpy array (.pkl)
    output_path: PathBuf,
    /// Comma-separated k-means cluster indices to keep, e.g. 20,30,50
    #[arg(
        value_name = "KMEANS_INDICES",
        value_delimiter = ',',
        required = true,
        allow_negative_numbers = true
    )]
    kmeans_indices: Vec<i64>,
    /// Keep the images of every cluster except the listed ones
    #[arg(short, long)]
    inverse: bool,
    #[command(flatten)]
    files: SubsetFiles,
}

pub fn run(a: Args) -> Result<()> {
    require_ext(&a.path_to_centers, &["pkl"], "path_to_centers")?;
    let out = prepare_output(&a.output_path, &["pkl"])?;
    let labels = read_kmeans_labels(&a.path_to_centers)?;
    let indices = kmeans_subset(&labels, &a.kmeans_indices, a.inverse);
    let n_used = labels.iter().filter(|l| !l.is_nan()).count();
    a.files.check(&indices, labels.len())?;
    write_indices(&out, &indices)?;
    println!(
        "selected {} of {n_used} images ({} clusters {:?}); indices written to {}",
        indices.len(),
        if a.inverse { "all but" } else { "in" },
        a.kmeans_indices,
        out.display()
    );
    a.files.write(&indices)
}
