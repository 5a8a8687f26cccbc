//! `Dataset`: particle images + poses + CTF, opened from files or made from typed arrays.

use std::sync::Arc;

use napi::bindgen_prelude::{Either, Float32Array, Float64Array};
use napi_derive::napi;
use recovar_core::dataset::{Dataset as CoreDataset, DatasetOptions, Uninvert};

use crate::convert::{check_len, count, guard, invalid, js_error, opt_path, path, seed};

/// Options of `Dataset.open`; each field is the command-line flag of the same name.
#[napi(object, object_to_js = false)]
pub struct OpenOptions {
    /// Particles: .mrcs, .star, .cs or .txt.
    pub particles: String,
    /// cryoDRGN poses.pkl; taken from a .star/.cs particle file when absent.
    pub poses: Option<String>,
    /// cryoDRGN ctf.pkl; taken from a .star/.cs particle file when absent.
    pub ctf: Option<String>,
    /// Folder of the stacks named in a .star/.cs/.txt file.
    pub datadir: Option<String>,
    /// Pickle of 0-based particle indices to keep.
    pub ind: Option<String>,
    /// Pickle of two index arrays (halfsets).
    pub halfsets: Option<String>,
    /// Use only the first n images (after `ind`).
    pub n_images: Option<f64>,
    /// Seed of the random halfset split (default 0, as RECOVAR).
    pub seed: Option<f64>,
    /// `"automatic"` (default), `"true"`/`true` (flip the sign) or `"false"`/`false`.
    pub uninvert: Option<Either<bool, String>>,
    /// Fail unless poses are found.
    pub require_poses: Option<bool>,
    /// Fail unless CTF parameters are found.
    pub require_ctf: Option<bool>,
    /// Read every selected image into memory at open.
    pub preload: Option<bool>,
}

/// Arrays of `Dataset.fromArrays`.
#[napi(object, object_to_js = false)]
pub struct ArrayData {
    /// `nImages × boxSize × boxSize` pixels, each image row-major.
    pub images: Float32Array,
    pub n_images: f64,
    pub box_size: f64,
    /// `nImages × 9`: row-major 3×3 rotations, cryoDRGN convention.
    pub rotations: Float32Array,
    /// `nImages × 2`: shifts in pixels.
    pub translations: Float32Array,
    /// `nImages × 9`: cryoDRGN ctf.pkl rows (D, Apix, dfU, dfV, dfang, kV, Cs, w, phase shift).
    pub ctf: Float64Array,
    /// Seed of the random halfset split (default 0).
    pub seed: Option<f64>,
}

/// An opened dataset. Its images are read lazily from disk (unless `preload`). It is never
/// changed after opening: every operation works on its own copy (a cheap one: the images
/// are shared), so one dataset may serve several operations at once.
#[napi]
pub struct Dataset {
    inner: Arc<CoreDataset>,
    /// How it was opened from files (a model records it so that a saved model reopens
    /// its particles); None for arrays.
    source: Option<DatasetOptions>,
}

impl Dataset {
    fn wrap(ds: CoreDataset, source: Option<DatasetOptions>) -> Self {
        Dataset {
            inner: Arc::new(ds),
            source,
        }
    }

    /// The dataset, shared.
    pub(crate) fn shared(&self) -> Arc<CoreDataset> {
        self.inner.clone()
    }

    /// A copy of the dataset and how it was opened.
    pub(crate) fn snapshot(&self) -> (CoreDataset, Option<DatasetOptions>) {
        ((*self.inner).clone(), self.source.clone())
    }
}

fn uninvert(u: Option<Either<bool, String>>) -> napi::Result<Uninvert> {
    match u {
        None => Ok(Uninvert::Automatic),
        Some(Either::A(true)) => Ok(Uninvert::True),
        Some(Either::A(false)) => Ok(Uninvert::False),
        Some(Either::B(s)) => s.parse::<Uninvert>().map_err(|_| {
            invalid(format!(
                "uninvert \"{s}\": expected \"automatic\", \"true\" or \"false\""
            ))
        }),
    }
}

/// `nImages × k` rows of a flat array, checked.
fn rows<const K: usize, T: Copy + Default>(
    name: &str,
    flat: &[T],
    n: usize,
) -> napi::Result<Vec<[T; K]>> {
    check_len(name, flat.len(), n * K, &format!("nImages × {K}"))?;
    Ok(flat
        .chunks_exact(K)
        .map(|c| {
            let mut r = [T::default(); K];
            r.copy_from_slice(c);
            r
        })
        .collect())
}

#[napi]
impl Dataset {
    /// Open a dataset from files (the command line's dataset flags).
    #[napi(factory)]
    pub fn open(options: OpenOptions) -> napi::Result<Dataset> {
        guard(|| {
            let n_images = match options.n_images {
                Some(n) => Some(count("nImages", n, 1)?),
                None => None,
            };
            let opts = DatasetOptions {
                particles: path("particles", &options.particles)?,
                poses: opt_path("poses", &options.poses)?,
                ctf: opt_path("ctf", &options.ctf)?,
                datadir: opt_path("datadir", &options.datadir)?,
                ind: opt_path("ind", &options.ind)?,
                halfsets: opt_path("halfsets", &options.halfsets)?,
                n_images,
                seed: seed(options.seed)?,
                uninvert: uninvert(options.uninvert)?,
                require_poses: options.require_poses.unwrap_or(false),
                require_ctf: options.require_ctf.unwrap_or(false),
                preload: options.preload.unwrap_or(false),
            };
            let ds = CoreDataset::open(&opts).map_err(js_error)?;
            Ok(Dataset::wrap(ds, Some(opts)))
        })
    }

    /// A dataset from memory (the arrays are copied).
    #[napi(factory)]
    pub fn from_arrays(data: ArrayData) -> napi::Result<Dataset> {
        guard(|| {
            let n = count("nImages", data.n_images, 1)?;
            let d = count("boxSize", data.box_size, 2)?;
            let pixels = n
                .checked_mul(d)
                .and_then(|v| v.checked_mul(d))
                .ok_or_else(|| invalid("nImages × boxSize² overflows"))?;
            check_len("images", data.images.len(), pixels, "nImages × boxSize²")?;
            let rotations = rows::<9, f32>("rotations", &data.rotations, n)?;
            let translations = rows::<2, f32>("translations", &data.translations, n)?;
            let ctf = rows::<9, f64>("ctf", &data.ctf, n)?;
            CoreDataset::from_arrays(
                data.images.to_vec(),
                n,
                d,
                &rotations,
                &translations,
                &ctf,
                seed(data.seed)?,
            )
            .map(|ds| Dataset::wrap(ds, None))
            .map_err(js_error)
        })
    }

    /// Number of images (after `ind` and `nImages`).
    #[napi(getter)]
    pub fn count(&self) -> f64 {
        self.inner.len() as f64
    }

    /// Image side in pixels.
    #[napi(getter)]
    pub fn box_size(&self) -> f64 {
        self.inner.box_size() as f64
    }

    /// Pixel size in Å.
    #[napi(getter)]
    pub fn voxel_size(&self) -> f64 {
        self.inner.voxel_size()
    }

    /// Number of particles in the file before selection (`count` for arrays).
    #[napi(getter)]
    pub fn total_in_file(&self) -> f64 {
        self.inner.total_in_file() as f64
    }
}
