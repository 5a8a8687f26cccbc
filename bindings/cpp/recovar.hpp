// recovar.hpp: header-only C++17 RAII wrapper over the C ABI in recovar.h.
//
// Ownership is unique (handles move, never copy); every failing call throws
// recovar::Error carrying the library's message and status. Thread safety is that of the
// C API: const methods may run concurrently on one object, non-const ones may not.
#ifndef RECOVAR_HPP
#define RECOVAR_HPP

#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "recovar.h"

namespace recovar {

/// A failed library call: what() is the library's message, status() its code.
class Error : public std::runtime_error {
  public:
    Error(rcv_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    rcv_status status() const noexcept { return status_; }

  private:
    rcv_status status_;
};

namespace detail {
inline void check(rcv_status st) {
    if (st != RCV_OK) {
        throw Error(st, rcv_last_error_message());
    }
}
struct DatasetDeleter {
    void operator()(rcv_dataset *d) const noexcept { rcv_dataset_free(d); }
};
inline const char *c_str_or_null(const std::optional<std::string> &s) {
    return s ? s->c_str() : nullptr;
}
}  // namespace detail

/// The library version at run time ("MAJOR.MINOR.PATCH").
inline std::string version() { return rcv_version(); }

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

    /// Number of images (after ind / n_images).
    std::size_t size() const {
        std::size_t n = 0;
        detail::check(rcv_dataset_count(handle_.get(), &n));
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

}  // namespace recovar

#endif  // RECOVAR_HPP
