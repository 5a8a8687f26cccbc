// recovar.hpp: header-only C++17 RAII wrapper over the C ABI in recovar.h.
//
// Ownership is unique: Dataset, Model and Volume own one C handle each, move and never
// copy, and free it in their destructor. Every failing call throws recovar::Error carrying
// the library's status and message. Buffers come back as std::vector (and, compiled as
// C++20, may be passed as std::span); the caller's buffers are never kept after a call.
//
// Thread safety is that of the C API: const methods may run concurrently on one object,
// non-const ones may not. Progress callbacks may be called from the library's worker
// threads, never concurrently.
//
// Array layouts (all C order, the last index fastest):
//   volume       N*N*N floats, index (z*N + y)*N + x; voxel_size() Å
//   images       n*D*D floats, image i row y column x at (i*D + y)*D + x
//   rotations    n*9 floats, row-major 3x3 per image (cryoDRGN convention)
//   translations n*2 floats, pixels
//   ctf          n*9 doubles, the rows of a cryoDRGN ctf.pkl
//   embedding    rows*zdim floats, row i = latent coordinates of image i
//   precisions   rows*zdim*zdim floats, one zdim x zdim matrix per image
#ifndef RECOVAR_HPP
#define RECOVAR_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L
#include <span>
#endif

#include "recovar.h"

namespace recovar {

/// The name of a status code ("RCV_ERR_IO"); "RCV_ERR_UNKNOWN" for a value this header
/// does not know.
inline const char *status_name(rcv_status status) noexcept {
    switch (status) {
    case RCV_OK: return "RCV_OK";
    case RCV_ERR_INVALID_ARGUMENT: return "RCV_ERR_INVALID_ARGUMENT";
    case RCV_ERR_IO: return "RCV_ERR_IO";
    case RCV_ERR_FORMAT: return "RCV_ERR_FORMAT";
    case RCV_ERR_NOT_FOUND: return "RCV_ERR_NOT_FOUND";
    case RCV_ERR_INCONSISTENT: return "RCV_ERR_INCONSISTENT";
    case RCV_ERR_CANCELLED: return "RCV_ERR_CANCELLED";
    case RCV_ERR_INTERNAL: return "RCV_ERR_INTERNAL";
    case RCV_ERR_DEVICE: return "RCV_ERR_DEVICE";
    }
    return "RCV_ERR_UNKNOWN";
}

/// A failed library call: what() is the library's message, status() its code.
class Error : public std::runtime_error {
  public:
    Error(rcv_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    rcv_status status() const noexcept { return status_; }
    /// True when a progress callback asked to stop (RCV_ERR_CANCELLED).
    bool cancelled() const noexcept { return status_ == RCV_ERR_CANCELLED; }

  private:
    rcv_status status_;
};

/// Progress of a long call: (stage, done, total). Return true to go on, false to cancel
/// (the call then throws Error with RCV_ERR_CANCELLED). An exception thrown here cancels
/// the call and is rethrown, unchanged, once the library has returned; it never crosses the
/// C frames. `stage` is valid during the call only.
using Progress = std::function<bool(std::string_view stage, std::uint64_t done, std::uint64_t total)>;

/// Pipeline stages, in order; All runs every stage not yet run.
enum class Stage : std::int32_t {
    Mean = RCV_STAGE_MEAN,
    Noise = RCV_STAGE_NOISE,
    Covariance = RCV_STAGE_COVARIANCE,
    Embedding = RCV_STAGE_EMBEDDING,
    All = RCV_STAGE_ALL,
};

/// The volumes of a generated state.
enum class VolumeKind : std::int32_t {
    Filtered = RCV_VOLUME_FILTERED,                   ///< local-resolution filtered + B-factor
    Unfiltered = RCV_VOLUME_UNFILTERED,               ///< average of the two halves
    Half1 = RCV_VOLUME_HALF1,                         ///< first half, unfiltered
    Half2 = RCV_VOLUME_HALF2,                         ///< second half, unfiltered
    FilteredNoBfactor = RCV_VOLUME_FILTERED_NO_BFACTOR,
    LocalResolution = RCV_VOLUME_LOCAL_RESOLUTION,    ///< Å
};

/// Solvent mask of the pipeline (ModelOptions::mask).
enum class MaskKind : std::int32_t {
    FromHalfmaps = RCV_MASK_FROM_HALFMAPS,
    Sphere = RCV_MASK_SPHERE,
    None = RCV_MASK_NONE,
    File = RCV_MASK_FILE,
};

enum class NoiseModel : std::int32_t { Radial = RCV_NOISE_RADIAL, White = RCV_NOISE_WHITE };

/// Memory option of the covariance stage (the CLI's --low-memory-option and
/// --very-low-memory-option).
enum class MemoryOption : std::int32_t {
    Normal = RCV_MEMORY_NORMAL,
    Low = RCV_MEMORY_LOW,
    VeryLow = RCV_MEMORY_VERY_LOW,
};

/// Where the heavy operations run (ModelOptions::device, KernelOptions::device). Auto: a
/// CUDA GPU when a driver, NVRTC, cuFFT and a device are present, else the CPU (never
/// fails); Cuda: GPU number `index`, Error with RCV_ERR_DEVICE when it cannot be used.
/// Results agree to rounding whichever runs them.
enum class Device : std::int32_t {
    Auto = RCV_DEVICE_AUTO,
    Cpu = RCV_DEVICE_CPU,
    Cuda = RCV_DEVICE_CUDA,
};

namespace detail {

inline void check(rcv_status st) {
    if (st != RCV_OK) {
        throw Error(st, rcv_last_error_message());
    }
}

struct DatasetDeleter {
    void operator()(rcv_dataset *p) const noexcept { rcv_dataset_free(p); }
};
struct ModelDeleter {
    void operator()(rcv_model *p) const noexcept { rcv_model_free(p); }
};
struct VolumeDeleter {
    void operator()(rcv_volume *p) const noexcept { rcv_volume_free(p); }
};

inline const char *c_str_or_null(const std::optional<std::string> &s) {
    return s ? s->c_str() : nullptr;
}

/// The context behind a progress callback: the user's function and the first exception it
/// threw. Once an exception is stored every later report answers "cancel" at once.
struct ProgressContext {
    const Progress *fn;
    std::exception_ptr error;

    static std::int32_t trampoline(void *user_data, const char *stage, std::uint64_t done,
                                   std::uint64_t total) noexcept {
        auto *ctx = static_cast<ProgressContext *>(user_data);
        if (ctx->error) {
            return 1;
        }
        try {
            return (*ctx->fn)(stage ? std::string_view(stage) : std::string_view(), done, total)
                       ? 0
                       : 1;
        } catch (...) {
            ctx->error = std::current_exception();
            return 1;
        }
    }
};

/// Run `call(progress_fn, user_data)`; rethrow the callback's exception if it threw, else
/// throw Error on a failing status.
template <class F> void with_progress(const Progress &progress, F &&call) {
    if (!progress) {
        check(call(static_cast<rcv_progress_fn>(nullptr), static_cast<void *>(nullptr)));
        return;
    }
    ProgressContext ctx{&progress, nullptr};
    rcv_status st = call(static_cast<rcv_progress_fn>(&ProgressContext::trampoline),
                         static_cast<void *>(&ctx));
    if (ctx.error) {
        std::rethrow_exception(ctx.error);
    }
    check(st);
}

template <class T> const T *data_or_null(const std::vector<T> &v) {
    return v.empty() ? nullptr : v.data();
}

}  // namespace detail

/// The library version at run time ("MAJOR.MINOR.PATCH").
inline std::string version() { return rcv_version(); }

/// The ABI number of the library at run time; equals RCV_ABI_VERSION when the header and the
/// library match.
inline std::uint32_t abi_version() { return rcv_abi_version(); }

/// Options of Dataset::open, mirroring the command-line flags.
struct DatasetOptions {
    std::string particles;                 ///< .mrcs, .star, .cs or .txt
    std::optional<std::string> poses;      ///< cryoDRGN poses.pkl (else from .star/.cs)
    std::optional<std::string> ctf;        ///< cryoDRGN ctf.pkl (else from .star/.cs)
    std::optional<std::string> datadir;    ///< folder of stacks named in .star/.cs/.txt
    std::optional<std::string> ind;        ///< pickle of 0-based indices to keep
    std::optional<std::string> halfsets;   ///< pickle of two index arrays
    std::uint64_t n_images = 0;            ///< first n images only; 0 = all
    std::uint64_t seed = 0;                ///< seed of the random halfset split
    int uninvert = RCV_UNINVERT_AUTOMATIC; ///< RCV_UNINVERT_*
    std::uint32_t flags = 0;               ///< RCV_DATASET_* flags
};

/// Particle images (read lazily) + poses + CTF + indices + halfsets.
class Dataset {
  public:
    /// Open a dataset from files.
    static Dataset open(const DatasetOptions &o) {
        rcv_dataset_options c;
        rcv_dataset_options_init(&c);
        c.particles = o.particles.c_str();
        c.poses = detail::c_str_or_null(o.poses);
        c.ctf = detail::c_str_or_null(o.ctf);
        c.datadir = detail::c_str_or_null(o.datadir);
        c.ind = detail::c_str_or_null(o.ind);
        c.halfsets = detail::c_str_or_null(o.halfsets);
        c.n_images = o.n_images;
        c.seed = o.seed;
        c.uninvert = o.uninvert;
        c.flags = o.flags;
        rcv_dataset *raw = nullptr;
        detail::check(rcv_dataset_open(&c, &raw));
        return Dataset(raw);
    }

    /// Open a particle stack with its poses.pkl and ctf.pkl (cryoDRGN files).
    static Dataset open(const std::string &particles, const std::string &poses,
                        const std::string &ctf) {
        DatasetOptions o;
        o.particles = particles;
        o.poses = poses;
        o.ctf = ctf;
        return open(o);
    }

    /// A dataset from caller memory (copied): see the layouts at the top of this file.
    static Dataset from_arrays(const float *images, std::size_t images_len, std::size_t n_images,
                               std::size_t box_size, const float *rotations,
                               std::size_t rotations_len, const float *translations,
                               std::size_t translations_len, const double *ctf,
                               std::size_t ctf_len, std::uint64_t seed = 0) {
        rcv_dataset *raw = nullptr;
        detail::check(rcv_dataset_create(images, images_len, n_images, box_size, rotations,
                                         rotations_len, translations, translations_len, ctf,
                                         ctf_len, seed, &raw));
        return Dataset(raw);
    }

    /// A dataset from vectors: images n*D*D, rotations n*9, translations n*2, ctf n*9.
    static Dataset from_arrays(const std::vector<float> &images, std::size_t n_images,
                               std::size_t box_size, const std::vector<float> &rotations,
                               const std::vector<float> &translations,
                               const std::vector<double> &ctf, std::uint64_t seed = 0) {
        return from_arrays(images.data(), images.size(), n_images, box_size, rotations.data(),
                           rotations.size(), translations.data(), translations.size(),
                           ctf.data(), ctf.size(), seed);
    }

#if __cplusplus >= 202002L
    static Dataset from_arrays(std::span<const float> images, std::size_t n_images,
                               std::size_t box_size, std::span<const float> rotations,
                               std::span<const float> translations, std::span<const double> ctf,
                               std::uint64_t seed = 0) {
        return from_arrays(images.data(), images.size(), n_images, box_size, rotations.data(),
                           rotations.size(), translations.data(), translations.size(),
                           ctf.data(), ctf.size(), seed);
    }
#endif

    /// Number of images (after ind / n_images).
    std::size_t size() const {
        std::size_t n = 0;
        detail::check(rcv_dataset_count(handle_.get(), &n));
        return n;
    }
    /// Number of particles in the file before ind / n_images (the row count a full
    /// external embedding may have).
    std::size_t total_in_file() const {
        std::size_t n = 0;
        detail::check(rcv_dataset_total_in_file(handle_.get(), &n));
        return n;
    }
    /// Image side D in pixels.
    std::size_t box_size() const {
        std::size_t d = 0;
        detail::check(rcv_dataset_box_size(handle_.get(), &d));
        return d;
    }
    /// Pixel size in Å.
    double voxel_size() const {
        double a = 0.0;
        detail::check(rcv_dataset_voxel_size(handle_.get(), &a));
        return a;
    }
    /// The C handle, for calls this wrapper does not cover.
    const rcv_dataset *get() const noexcept { return handle_.get(); }
    rcv_dataset *get() noexcept { return handle_.get(); }

  private:
    explicit Dataset(rcv_dataset *raw) : handle_(raw) {}
    std::unique_ptr<rcv_dataset, detail::DatasetDeleter> handle_;
};

/// Options of Model::create: library defaults (those of `recovar pipeline`) at construction;
/// each setter returns *this, so they chain.
class ModelOptions {
  public:
    ModelOptions() { rcv_model_options_init(&c_); }

    ModelOptions &mask(MaskKind kind) {
        c_.mask_kind = static_cast<std::int32_t>(kind);
        return *this;
    }
    /// A mask from an .mrc file (sets the kind to MaskKind::File).
    ModelOptions &mask_file(std::string path) {
        mask_path_ = std::move(path);
        return mask(MaskKind::File);
    }
    ModelOptions &focus_mask(std::string path) {
        focus_mask_ = std::move(path);
        return *this;
    }
    ModelOptions &noise_model(NoiseModel m) {
        c_.noise_model = static_cast<std::int32_t>(m);
        return *this;
    }
    /// Latent dimensions of the embeddings (default {1, 2, 4, 10, 20}).
    ModelOptions &zdims(std::vector<std::size_t> z) {
        zdims_ = std::move(z);
        return *this;
    }
    ModelOptions &correct_contrast(bool on = true) {
        c_.correct_contrast = on ? 1 : 0;
        return *this;
    }
    ModelOptions &ignore_zero_frequency(bool on = true) {
        c_.ignore_zero_frequency = on ? 1 : 0;
        return *this;
    }
    ModelOptions &memory_option(MemoryOption m) {
        c_.memory_option = static_cast<std::int32_t>(m);
        return *this;
    }
    ModelOptions &use_image_mask(bool on) {
        c_.use_image_mask = on ? 1 : 0;
        return *this;
    }
    /// Bytes of working memory for batches (0 = default); results never depend on it.
    ModelOptions &memory_budget(std::uint64_t bytes) {
        c_.memory_budget = bytes;
        return *this;
    }
    ModelOptions &seed(std::uint64_t s) {
        c_.seed = s;
        return *this;
    }
    /// The device of the model's stages and generation, chosen once by Model::create
    /// (default Device::Auto); `index` is the GPU number with Device::Cuda.
    ModelOptions &device(Device d, std::int32_t index = 0) {
        c_.device = static_cast<std::int32_t>(d);
        c_.device_index = index;
        return *this;
    }

    /// The C struct, pointing into this object's strings (valid while it lives unchanged).
    rcv_model_options to_c() const {
        rcv_model_options c = c_;
        c.mask_path = mask_path_ ? mask_path_->c_str() : nullptr;
        c.focus_mask = focus_mask_ ? focus_mask_->c_str() : nullptr;
        if (zdims_) {
            c.zdims = zdims_->data();
            c.n_zdims = zdims_->size();
        }
        return c;
    }

  private:
    rcv_model_options c_;
    std::optional<std::string> mask_path_;
    std::optional<std::string> focus_mask_;
    std::optional<std::vector<std::size_t>> zdims_;
};

/// Options of kernel-regression volume generation: library defaults at construction
/// (50 bins, mask radius fraction 20, 100 images at least, B-factor 0, automatic batches).
class KernelOptions {
  public:
    KernelOptions() { rcv_kernel_options_init(&c_); }
    KernelOptions &n_bins(std::size_t v) {
        c_.n_bins = v;
        return *this;
    }
    KernelOptions &maskrad_fraction(double v) {
        c_.maskrad_fraction = v;
        return *this;
    }
    KernelOptions &n_min_images(std::size_t v) {
        c_.n_min_images = v;
        return *this;
    }
    KernelOptions &bfactor(double v) {
        c_.bfactor = v;
        return *this;
    }
    KernelOptions &batch_size(std::size_t v) {
        c_.batch_size = v;
        return *this;
    }
    /// The device of this generation (default Device::Auto: the model's device in
    /// Model::generate, a GPU when usable in generate_from_embedding); `index` is the GPU
    /// number with Device::Cuda.
    KernelOptions &device(Device d, std::int32_t index = 0) {
        c_.device = static_cast<std::int32_t>(d);
        c_.device_index = index;
        return *this;
    }
    const rcv_kernel_options &to_c() const noexcept { return c_; }

  private:
    rcv_kernel_options c_;
};

/// A latent embedding: `rows` points of `zdim` coordinates (row-major), with optional
/// per-point precision matrices (rows*zdim*zdim) and contrasts (rows).
struct Embedding {
    std::size_t rows = 0;
    std::size_t zdim = 0;
    std::vector<float> zs;
    std::vector<float> precisions;
    std::vector<float> contrasts;
};

/// A generated volume: its two halves, their average, the filtered map and the local
/// resolution. Each comes out as N*N*N floats in C order (see the top of this file).
class Volume {
  public:
    std::size_t box_size() const {
        std::size_t n = 0;
        detail::check(rcv_volume_box_size(handle_.get(), &n));
        return n;
    }
    double voxel_size() const {
        double a = 0.0;
        detail::check(rcv_volume_voxel_size(handle_.get(), &a));
        return a;
    }
    /// Copy one of the volumes into `out` (len = N^3).
    void data(VolumeKind kind, float *out, std::size_t len) const {
        detail::check(
            rcv_volume_data(handle_.get(), static_cast<std::int32_t>(kind), out, len));
    }
    std::vector<float> data(VolumeKind kind = VolumeKind::Filtered) const {
        std::size_t n = box_size();
        std::vector<float> v(n * n * n);
        data(kind, v.data(), v.size());
        return v;
    }
#if __cplusplus >= 202002L
    void data(VolumeKind kind, std::span<float> out) const { data(kind, out.data(), out.size()); }
#endif
    /// Write one of the volumes as an .mrc file.
    void write_mrc(const std::string &path, VolumeKind kind = VolumeKind::Filtered) const {
        detail::check(rcv_volume_write_mrc(handle_.get(), static_cast<std::int32_t>(kind),
                                           path.c_str()));
    }
    const rcv_volume *get() const noexcept { return handle_.get(); }
    rcv_volume *get() noexcept { return handle_.get(); }

    /// Take ownership of a handle from the C API (nullptr is refused).
    static Volume adopt(rcv_volume *raw) {
        if (raw == nullptr) {
            throw Error(RCV_ERR_INVALID_ARGUMENT, "Volume::adopt: handle is NULL");
        }
        return Volume(raw);
    }

  private:
    explicit Volume(rcv_volume *raw) : handle_(raw) {}
    std::unique_ptr<rcv_volume, detail::VolumeDeleter> handle_;
};

/// The pipeline state of one dataset: mean, noise, masks, principal components,
/// embeddings. Stages run in order (a later stage runs the missing earlier ones first).
class Model {
  public:
    /// A new model over `dataset` (the model keeps its own copy; `dataset` may go).
    static Model create(const Dataset &dataset, const ModelOptions &options = ModelOptions()) {
        rcv_model_options c = options.to_c();
        rcv_model *raw = nullptr;
        detail::check(rcv_model_create(dataset.get(), &c, &raw));
        return Model(raw);
    }
    /// Reopen the output folder of `recovar pipeline` or of save().
    static Model load(const std::string &pipeline_dir) {
        rcv_model *raw = nullptr;
        detail::check(rcv_model_load(pipeline_dir.c_str(), &raw));
        return Model(raw);
    }

    void run_stage(Stage stage, const Progress &progress = Progress()) {
        rcv_model *m = handle_.get();
        detail::with_progress(progress, [&](rcv_progress_fn fn, void *user) {
            return rcv_model_run_stage(m, static_cast<std::int32_t>(stage), fn, user);
        });
    }
    /// Every stage not yet run.
    void run_all(const Progress &progress = Progress()) { run_stage(Stage::All, progress); }
    bool stage_done(Stage stage) const {
        std::int32_t done = 0;
        detail::check(rcv_model_stage_done(handle_.get(), static_cast<std::int32_t>(stage), &done));
        return done != 0;
    }
    /// Write the pipeline's output layout into `dir`.
    void save(const std::string &dir) const {
        detail::check(rcv_model_save(handle_.get(), dir.c_str()));
    }
    /// The model's device as a line for a log, e.g. "device: cpu (8 threads)" or
    /// "device: cuda:0 (NVIDIA H100 ..., compute 9.0, 79.1 GiB)".
    std::string device() const {
        const char *s = nullptr;
        detail::check(rcv_model_device(handle_.get(), &s));
        return s ? std::string(s) : std::string();
    }

    std::size_t box_size() const { return get_size(&rcv_model_box_size); }
    std::size_t n_images() const { return get_size(&rcv_model_n_images); }
    std::size_t n_eigen() const { return get_size(&rcv_model_n_eigen); }
    double voxel_size() const {
        double a = 0.0;
        detail::check(rcv_model_voxel_size(handle_.get(), &a));
        return a;
    }

    /// The mean volume, N^3 floats.
    std::vector<float> mean() const {
        std::vector<float> v(cube());
        detail::check(rcv_model_mean(handle_.get(), v.data(), v.size()));
        return v;
    }
    /// The radial noise profile (N/2 - 1 values).
    std::vector<double> noise() const {
        std::size_t n = box_size();
        std::vector<double> v(n / 2 - 1);
        detail::check(rcv_model_noise(handle_.get(), v.data(), v.size()));
        return v;
    }
    /// Eigenvalues of the covariance, largest first (n_eigen values).
    std::vector<double> eigenvalues() const {
        std::vector<double> v(n_eigen());
        if (!v.empty()) {
            detail::check(rcv_model_eigenvalues(handle_.get(), v.data(), v.size()));
        }
        return v;
    }
    /// Eigenvolume k (0-based) in real space, N^3 floats.
    std::vector<float> eigenvolume(std::size_t k) const {
        std::vector<float> v(cube());
        detail::check(rcv_model_eigenvolume(handle_.get(), k, v.data(), v.size()));
        return v;
    }
    /// sum over k < n_components of lambda_k u_k^2, N^3 floats.
    std::vector<float> variance_map(std::size_t n_components) const {
        std::vector<float> v(cube());
        detail::check(rcv_model_variance_map(handle_.get(), n_components, v.data(), v.size()));
        return v;
    }
    /// The latent dimensions with an embedding, ascending (empty before the embedding
    /// stage).
    std::vector<std::size_t> zdims() const {
        std::vector<std::size_t> v(get_size(&rcv_model_n_zdims));
        if (!v.empty()) {
            detail::check(rcv_model_zdims(handle_.get(), v.data(), v.size()));
        }
        return v;
    }
    /// The embedding of every image at `zdim` (regularized or not), in dataset order;
    /// precisions and contrasts only when asked for.
    Embedding embedding(std::size_t zdim, bool regularized = true, bool with_precisions = false,
                        bool with_contrasts = false) const {
        Embedding e;
        e.rows = n_images();
        e.zdim = zdim;
        e.zs.resize(e.rows * zdim);
        if (with_precisions) {
            e.precisions.resize(e.rows * zdim * zdim);
        }
        if (with_contrasts) {
            e.contrasts.resize(e.rows);
        }
        detail::check(rcv_model_embedding(
            handle_.get(), zdim, regularized ? 1 : 0, e.zs.data(), e.zs.size(),
            with_precisions ? e.precisions.data() : nullptr, e.precisions.size(),
            with_contrasts ? e.contrasts.data() : nullptr, e.contrasts.size()));
        return e;
    }
    /// Kernel-regression volume at a latent point of the `zdim` embedding.
    Volume generate(std::size_t zdim, const float *point, std::size_t point_len,
                    bool regularized = true, const KernelOptions &options = KernelOptions(),
                    const Progress &progress = Progress()) const {
        const rcv_model *m = handle_.get();
        rcv_volume *raw = nullptr;
        detail::with_progress(progress, [&](rcv_progress_fn fn, void *user) {
            return rcv_model_generate(m, zdim, regularized ? 1 : 0, point, point_len,
                                      &options.to_c(), fn, user, &raw);
        });
        return Volume::adopt(raw);
    }
    Volume generate(std::size_t zdim, const std::vector<float> &point, bool regularized = true,
                    const KernelOptions &options = KernelOptions(),
                    const Progress &progress = Progress()) const {
        return generate(zdim, point.data(), point.size(), regularized, options, progress);
    }
#if __cplusplus >= 202002L
    Volume generate(std::size_t zdim, std::span<const float> point, bool regularized = true,
                    const KernelOptions &options = KernelOptions(),
                    const Progress &progress = Progress()) const {
        return generate(zdim, point.data(), point.size(), regularized, options, progress);
    }
#endif

    const rcv_model *get() const noexcept { return handle_.get(); }
    rcv_model *get() noexcept { return handle_.get(); }

  private:
    explicit Model(rcv_model *raw) : handle_(raw) {}
    std::size_t get_size(rcv_status (*f)(const rcv_model *, std::size_t *)) const {
        std::size_t n = 0;
        detail::check(f(handle_.get(), &n));
        return n;
    }
    std::size_t cube() const {
        std::size_t n = box_size();
        return n * n * n;
    }
    std::unique_ptr<rcv_model, detail::ModelDeleter> handle_;
};

/// Read an embedding file (cryoDRGN z.pkl, .npy or .txt): rows x zdim floats.
inline Embedding read_embedding(const std::string &path) {
    Embedding e;
    detail::check(rcv_read_embedding(path.c_str(), nullptr, 0, &e.rows, &e.zdim));
    e.zs.resize(e.rows * e.zdim);
    detail::check(rcv_read_embedding(path.c_str(), e.zs.data(), e.zs.size(), &e.rows, &e.zdim));
    return e;
}

/// Kernel-regression volume at `point` from an external embedding of the dataset's images
/// (rows = dataset.size() or dataset.total_in_file()); `precisions` may be null (identity).
inline Volume generate_from_embedding(const Dataset &dataset, const float *zs, std::size_t zs_len,
                                      std::size_t zdim, const float *precisions,
                                      std::size_t precisions_len, const float *point,
                                      std::size_t point_len,
                                      const KernelOptions &options = KernelOptions(),
                                      const Progress &progress = Progress()) {
    rcv_volume *raw = nullptr;
    detail::with_progress(progress, [&](rcv_progress_fn fn, void *user) {
        return rcv_generate_from_embedding(dataset.get(), zs, zs_len, zdim, precisions,
                                           precisions_len, point, point_len, &options.to_c(), fn,
                                           user, &raw);
    });
    return Volume::adopt(raw);
}

/// The same from an Embedding (its precisions are used when present).
inline Volume generate_from_embedding(const Dataset &dataset, const Embedding &embedding,
                                      const std::vector<float> &point,
                                      const KernelOptions &options = KernelOptions(),
                                      const Progress &progress = Progress()) {
    return generate_from_embedding(dataset, embedding.zs.data(), embedding.zs.size(),
                                   embedding.zdim, detail::data_or_null(embedding.precisions),
                                   embedding.precisions.size(), point.data(), point.size(),
                                   options, progress);
}

#if __cplusplus >= 202002L
inline Volume generate_from_embedding(const Dataset &dataset, std::span<const float> zs,
                                      std::size_t zdim, std::span<const float> point,
                                      std::span<const float> precisions = {},
                                      const KernelOptions &options = KernelOptions(),
                                      const Progress &progress = Progress()) {
    return generate_from_embedding(dataset, zs.data(), zs.size(), zdim,
                                   precisions.empty() ? nullptr : precisions.data(),
                                   precisions.size(), point.data(), point.size(), options,
                                   progress);
}
#endif

/// Write a volume of N^3 floats (C order) as an .mrc file.
inline void write_mrc(const std::string &path, const float *data, std::size_t len,
                      std::size_t box_size, double voxel_size) {
    detail::check(rcv_write_mrc(path.c_str(), data, len, box_size, voxel_size));
}
inline void write_mrc(const std::string &path, const std::vector<float> &data,
                      std::size_t box_size, double voxel_size) {
    write_mrc(path, data.data(), data.size(), box_size, voxel_size);
}
#if __cplusplus >= 202002L
inline void write_mrc(const std::string &path, std::span<const float> data, std::size_t box_size,
                      double voxel_size) {
    write_mrc(path, data.data(), data.size(), box_size, voxel_size);
}
#endif

}  // namespace recovar

#endif  // RECOVAR_HPP
