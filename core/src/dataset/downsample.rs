//! Downsampling particle stacks and volumes by Fourier cropping (cryoDRGN's `downsample`;
//! the crop itself is [`crate::fourier::HartleyCropper`]).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::source::ImageSource;
use crate::error::{Error, Result};
use crate::fourier::HartleyCropper;
use crate::io::{mrc, txt};
use crate::progress::{report, Progress};

/// The pixel size after cropping `from` → `to` pixels, rounded to 6 decimals as cryoDRGN
/// writes it.
pub fn downsampled_pixel_size(apix: f64, from: usize, to: usize) -> f64 {
    (apix * from as f64 / to as f64 * 1e6).round() / 1e6
}

/// Check a requested output size against the input size.
pub fn check_new_size(from: usize, to: usize) -> Result<()> {
    if to == 0 || !to.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "new box size -D {to} must be even and positive"
        )));
    }
    if to > from {
        return Err(Error::invalid(format!(
            "new box size -D {to} can't be larger than the original box size {from}"
        )));
    }
    Ok(())
}

/// Where downsampled images go.
pub struct StackOutput {
    /// The output .mrcs (with `chunk`, the pattern `name.{i}.mrcs` is derived from it).
    pub path: PathBuf,
    /// Images per output file; `None` writes one file.
    pub chunk: Option<usize>,
    /// Images processed per batch (memory bound).
    pub batch_size: usize,
}

/// Downsample the images `ids` of `source` to `to × to`, writing float32 stacks with pixel
/// size `apix_out`. Returns the files written (with `chunk`, also `name.txt` listing them).
pub fn downsample_stack(
    source: &ImageSource,
    ids: &[usize],
    to: usize,
    apix_out: f64,
    out: &StackOutput,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>> {
    let (ny, nx) = source.image_shape();
    if ny != nx {
        return Err(Error::invalid(format!(
            "{}: images are {nx}×{ny}; downsampling needs square images",
            source.description()
        )));
    }
    check_new_size(nx, to)?;
    let cropper = HartleyCropper::new(2, nx, to);
    let chunk = out.chunk.unwrap_or(ids.len()).max(1);
    let batch = out.batch_size.max(1);
    let mut written = Vec::new();
    let total = ids.len() as u64;
    let mut done = 0u64;
    report(progress, "downsample", 0, total)?;
    let mut inbuf = Vec::new();
    for (ci, chunk_ids) in ids.chunks(chunk).enumerate() {
        let path = if out.chunk.is_some() {
            chunk_path(&out.path, ci)
        } else {
            out.path.clone()
        };
        let mut w = mrc::StackWriter::create(&path, to, to, apix_out as f32)?;
        for b in chunk_ids.chunks(batch) {
            inbuf.resize(b.len() * nx * nx, 0.0);
            source.read(b, &mut inbuf)?;
            let small: Vec<f32> = inbuf
                .par_chunks_exact(nx * nx)
                .flat_map_iter(|img| cropper.apply(img))
                .collect();
            w.append(&small)?;
            done += b.len() as u64;
            report(progress, "downsample", done, total)?;
        }
        w.finish()?;
        written.push(path);
    }
    if out.chunk.is_some() {
        let list = out.path.with_extension("txt");
        let names: Vec<PathBuf> = written
            .iter()
            .map(|p| {
                p.file_name()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| p.clone())
            })
            .collect();
        txt::write(&list, &names)?;
        written.push(list);
    }
    Ok(written)
}

/// `out.mrcs` → `out.{i}.mrcs` (cryoDRGN's chunk naming).
pub fn chunk_path(path: &Path, i: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    let name = match ext {
        Some(e) => format!("{stem}.{i}.{e}"),
        None => format!("{stem}.{i}"),
    };
    path.with_file_name(name)
}

/// Downsample a cubic volume file to `to³` and write it with the scaled pixel size.
pub fn downsample_volume(input: &Path, to: usize, output: &Path) -> Result<()> {
    let vol = mrc::read_volume(input)?;
    let [nz, ny, nx] = vol.shape;
    if nz != ny || ny != nx {
        return Err(Error::format(
            input,
            format!("volume is {nx}×{ny}×{nz}; downsampling needs a cube"),
        ));
    }
    check_new_size(nx, to)?;
    let data = HartleyCropper::new(3, nx, to).apply(&vol.data);
    let vs = if vol.voxel_size > 0.0 {
        downsampled_pixel_size(vol.voxel_size as f64, nx, to) as f32
    } else {
        0.0
    };
    mrc::write_volume(
        output,
        &mrc::Volume {
            data,
            shape: [to, to, to],
            voxel_size: vs,
            origin: vol.origin,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_and_pixel_size() {
        assert_eq!(
            chunk_path(Path::new("/a/p.128.mrcs"), 3),
            PathBuf::from("/a/p.128.3.mrcs")
        );
        assert_eq!(downsampled_pixel_size(1.0, 64, 32), 2.0);
        assert_eq!(downsampled_pixel_size(1.0, 30, 16), 1.875);
        assert!(check_new_size(64, 65).is_err());
        assert!(check_new_size(64, 31).is_err());
        assert!(check_new_size(64, 128).is_err());
    }
}
