// Generates a volume at a latent point of cryoDRGN's z.pkl fixture through the C++ wrapper,
// and checks the wrapper's error handling on the way. Built by tests/cpp/CMakeLists.txt with
// find_package(recovar); run by ffi/tests/cpp_package.rs.
//
//   volume_from_zpkl particles poses.pkl ctf.pkl z.pkl out.mrc   generate, write out.mrc
//   volume_from_zpkl --info particles poses.pkl ctf.pkl          open the dataset only
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "recovar.hpp"

static_assert(!std::is_copy_constructible_v<recovar::Dataset>, "handles must not copy");
static_assert(!std::is_copy_assignable_v<recovar::Volume>, "handles must not copy");
static_assert(std::is_nothrow_move_constructible_v<recovar::Model>, "handles must move");
static_assert(std::is_nothrow_move_assignable_v<recovar::Volume>, "handles must move");

namespace {

int failures = 0;

void check(bool ok, const std::string &what) {
    if (!ok) {
        std::cerr << "check failed: " << what << "\n";
        ++failures;
    }
}

recovar::Dataset open(char **argv) { return recovar::Dataset::open(argv[0], argv[1], argv[2]); }

}  // namespace

int main(int argc, char **argv) {
    const bool info = argc == 5 && std::string(argv[1]) == "--info";
    if (!info && argc != 6) {
        std::cerr << "usage: " << argv[0] << " particles poses.pkl ctf.pkl z.pkl out.mrc\n"
                  << "       " << argv[0] << " --info particles poses.pkl ctf.pkl\n";
        return 2;
    }
    try {
        check(recovar::abi_version() == RCV_ABI_VERSION, "ABI of the library = RCV_ABI_VERSION");
        auto ds = open(argv + (info ? 2 : 1));
        std::cout << "recovar " << recovar::version() << ": " << ds.size() << " images of "
                  << ds.box_size() << " px at " << ds.voxel_size() << " A/px\n";
        if (info) {
            return failures == 0 ? 0 : 1;
        }

        // A dataset from memory: 4 blank 16-px images, identity poses, one CTF row each.
        {
            const std::size_t n = 4, d = 16;
            std::vector<float> images(n * d * d, 0.0f), rotations, translations(n * 2, 0.0f);
            std::vector<double> ctf;
            for (std::size_t i = 0; i < n; ++i) {
                rotations.insert(rotations.end(), {1, 0, 0, 0, 1, 0, 0, 0, 1});
                ctf.insert(ctf.end(), {16.0, 2.0, 15000.0, 15000.0, 0.0, 300.0, 2.7, 0.1, 0.0});
            }
            auto mem = recovar::Dataset::from_arrays(images, n, d, rotations, translations, ctf);
            check(mem.size() == n && mem.box_size() == d, "dataset from memory: n and D");
            try {
                images.pop_back();
                recovar::Dataset::from_arrays(images, n, d, rotations, translations, ctf);
                check(false, "an image buffer of the wrong length must throw");
            } catch (const recovar::Error &e) {
                check(e.status() == RCV_ERR_INVALID_ARGUMENT,
                      std::string("wrong length: ") + recovar::status_name(e.status()));
            }
        }

        // A model before any stage: its sizes, and a clear error for results not made yet.
        {
            auto model = recovar::Model::create(
                ds, recovar::ModelOptions().zdims({2}).seed(0).device(recovar::Device::Cpu));
            check(model.n_images() == ds.size() && model.box_size() == ds.box_size(),
                  "model sizes");
            check(model.device().rfind("device: cpu", 0) == 0, "CPU model: " + model.device());
            check(model.zdims().empty(), "no embedding before the embedding stage");
            check(!model.stage_done(recovar::Stage::Mean), "no stage run yet");
            try {
                model.mean();
                check(false, "the mean before the mean stage must throw");
            } catch (const recovar::Error &e) {
                check(std::string(e.what()).size() > 0, "an explanation");
            }
        }

        // A GPU that exists nowhere: RCV_ERR_DEVICE naming it, never a silent fallback.
        try {
            recovar::Model::create(ds, recovar::ModelOptions().device(recovar::Device::Cuda, 4096));
            check(false, "a model on cuda:4096 must throw");
        } catch (const recovar::Error &e) {
            check(e.status() == RCV_ERR_DEVICE,
                  std::string("cuda:4096: ") + recovar::status_name(e.status()));
            check(std::string(e.what()).find("cuda:4096") != std::string::npos,
                  std::string("message names the device: ") + e.what());
        }

        // A missing file: recovar::Error with the status and a message naming the file.
        try {
            recovar::read_embedding("no_such_z.pkl");
            check(false, "reading a missing file must throw");
        } catch (const recovar::Error &e) {
            check(e.status() == RCV_ERR_IO, std::string("status of a missing file: ") +
                                                recovar::status_name(e.status()));
            check(std::string(e.what()).find("no_such_z.pkl") != std::string::npos,
                  std::string("message names the file: ") + e.what());
        }

        auto z = recovar::read_embedding(argv[4]);
        std::cout << "embedding: " << z.rows << " x " << z.zdim << "\n";
        check(z.rows == ds.size(), "one embedding row per image");
        check(z.zs.size() == z.rows * z.zdim, "zs holds rows * zdim values");
        const std::vector<float> point{0.1f, -0.2f};
        // On the CPU: the test compares the volume with the Rust API's on the CPU, bit for bit.
        auto options = recovar::KernelOptions().n_bins(6).device(recovar::Device::Cpu);

        // A callback that throws: the call is cancelled and the very exception comes back,
        // after the library has returned.
        try {
            recovar::generate_from_embedding(
                ds, z, point, options,
                [](std::string_view, std::uint64_t, std::uint64_t) -> bool {
                    throw std::logic_error("stop from the callback");
                });
            check(false, "a throwing callback must cancel the call");
        } catch (const std::logic_error &e) {
            check(std::string(e.what()) == "stop from the callback", e.what());
        }
        // A callback that answers false: RCV_ERR_CANCELLED.
        try {
            recovar::generate_from_embedding(
                ds, z, point, options,
                [](std::string_view, std::uint64_t, std::uint64_t) { return false; });
            check(false, "a callback returning false must cancel the call");
        } catch (const recovar::Error &e) {
            check(e.cancelled(), std::string("cancelled: ") + recovar::status_name(e.status()));
        }
        // A point of the wrong dimension.
        try {
            recovar::generate_from_embedding(ds, z, std::vector<float>{0.0f}, options);
            check(false, "a 1-D point for a 2-D embedding must throw");
        } catch (const recovar::Error &e) {
            check(e.status() == RCV_ERR_INVALID_ARGUMENT,
                  std::string("wrong point size: ") + recovar::status_name(e.status()));
        }

        std::uint64_t reports = 0;
        recovar::Volume vol = recovar::generate_from_embedding(
            ds, z, point, options, [&](std::string_view, std::uint64_t, std::uint64_t) {
                ++reports;
                return true;
            });
        recovar::Volume moved = std::move(vol);
        const std::size_t n = moved.box_size();
        check(n == ds.box_size(), "volume side = image side");
        check(reports > 0, "progress was reported");
        std::vector<float> unfil = moved.data(recovar::VolumeKind::Unfiltered);
        check(unfil.size() == n * n * n, "N^3 voxels");
        std::size_t finite = 0;
        double energy = 0.0;
        for (float v : unfil) {
            finite += std::isfinite(v) ? 1u : 0u;
            energy += static_cast<double>(v) * v;
        }
        check(finite == unfil.size(), "every voxel finite");
        check(energy > 0.0, "the volume is not empty");
        moved.write_mrc(argv[5]);
        recovar::write_mrc(std::string(argv[5]) + ".unfil.mrc", unfil, n, moved.voxel_size());
        std::cout << "wrote " << argv[5] << " (" << n << "^3 at " << moved.voxel_size()
                  << " A, " << reports << " progress reports)\n";
    } catch (const recovar::Error &e) {
        std::cerr << "error (" << recovar::status_name(e.status()) << "): " << e.what() << "\n";
        return 1;
    }
    if (failures != 0) {
        std::cerr << failures << " check(s) failed\n";
        return 1;
    }
    return 0;
}
