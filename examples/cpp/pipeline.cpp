// The RECOVAR pipeline through the C++ wrapper: open a dataset, run the stages one by one
// (mean, noise, covariance, embedding), then generate a volume at a latent point.
//
//   c++ -std=c++17 -I include -I bindings/cpp examples/cpp/pipeline.cpp
//       target/release/librecovar.a -lpthread -ldl -lm -o pipeline
//   (or, installed: c++ -std=c++17 pipeline.cpp $(pkg-config --cflags --libs recovar))
//
//   recovar make_test_dataset sim --image-size 32 --n-images 500
//   ./pipeline sim/test_dataset/particles.32.mrcs sim/test_dataset/poses.pkl
//              sim/test_dataset/ctf.pkl out [--zdim 2] [--n-bins 50] [--very-low-memory] [--save]
//
// Writes out/mean.mrc, out/volume.mrc (the volume at the embedding's centroid) and, with
// --save, the pipeline's output layout in out/pipeline.
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "recovar.hpp"

int main(int argc, char **argv) {
    if (argc < 5) {
        std::cerr << "usage: " << argv[0]
                  << " particles poses.pkl ctf.pkl out_dir [--zdim Z] [--n-bins B] [--very-low-memory]"
                     " [--save]\n";
        return 2;
    }
    const std::filesystem::path out = argv[4];
    std::size_t zdim = 2;
    recovar::KernelOptions kernel;  // the library's defaults (50 bins, ...)
    bool very_low_memory = false;
    bool save = false;
    for (int i = 5; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--zdim" && i + 1 < argc) {
            zdim = std::stoul(argv[++i]);
        } else if (a == "--n-bins" && i + 1 < argc) {
            kernel.n_bins(std::stoul(argv[++i]));
        } else if (a == "--very-low-memory") {
            very_low_memory = true;
        } else if (a == "--save") {
            save = true;
        } else {
            std::cerr << "unknown argument " << a << "\n";
            return 2;
        }
    }
    try {
        std::filesystem::create_directories(out);
        auto dataset = recovar::Dataset::open(argv[1], argv[2], argv[3]);
        std::cout << "recovar " << recovar::version() << ": " << dataset.size() << " images of "
                  << dataset.box_size() << " px at " << dataset.voxel_size() << " A/px\n";

        auto options = recovar::ModelOptions().zdims({zdim});
        if (very_low_memory) {
            options.memory_option(recovar::MemoryOption::VeryLow);
        }
        auto model = recovar::Model::create(dataset, options);

        // Print each stage name once, as it starts.
        std::string last;
        auto progress = [&](std::string_view stage, std::uint64_t, std::uint64_t) {
            if (stage != last) {
                last = stage;
                std::cout << "  " << last << "\n";
            }
            return true;
        };
        for (auto [stage, name] : {std::pair{recovar::Stage::Mean, "mean"},
                                   std::pair{recovar::Stage::Noise, "noise"},
                                   std::pair{recovar::Stage::Covariance, "covariance"},
                                   std::pair{recovar::Stage::Embedding, "embedding"}}) {
            std::cout << "stage " << name << "\n";
            model.run_stage(stage, progress);
        }

        const std::size_t n = model.box_size();
        recovar::write_mrc((out / "mean.mrc").string(), model.mean(), n, model.voxel_size());
        auto eig = model.eigenvalues();
        std::cout << model.n_eigen() << " principal components; top eigenvalues:";
        for (std::size_t k = 0; k < eig.size() && k < 4; ++k) {
            std::cout << " " << eig[k];
        }
        std::cout << "\n";

        // The centroid of the embedding as the latent point.
        auto emb = model.embedding(zdim);
        std::vector<float> point(zdim, 0.0f);
        for (std::size_t i = 0; i < emb.rows; ++i) {
            for (std::size_t k = 0; k < zdim; ++k) {
                point[k] += emb.zs[i * zdim + k] / static_cast<float>(emb.rows);
            }
        }
        auto volume = model.generate(zdim, point, true, kernel);
        volume.write_mrc((out / "volume.mrc").string());
        std::cout << "volume at the centroid of the zdim-" << zdim << " embedding: "
                  << (out / "volume.mrc").string() << "\n";
        if (save) {
            model.save((out / "pipeline").string());
            std::cout << "pipeline outputs in " << (out / "pipeline").string() << "\n";
        }
    } catch (const recovar::Error &e) {
        std::cerr << "error (" << recovar::status_name(e.status()) << "): " << e.what() << "\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
