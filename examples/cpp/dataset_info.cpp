// Open a particle file through the C++ wrapper and print its size.
//   c++ -std=c++17 -I include -I bindings/cpp examples/cpp/dataset_info.cpp
//       target/release/librecovar.a -lpthread -ldl -lm -o dataset_info
//   ./dataset_info particles.star [poses.pkl ctf.pkl]
#include <iostream>

#include "recovar.hpp"

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " particles [poses.pkl ctf.pkl]\n";
        return 2;
    }
    recovar::DatasetOptions o;
    o.particles = argv[1];
    if (argc > 2) o.poses = argv[2];
    if (argc > 3) o.ctf = argv[3];
    try {
        auto ds = recovar::Dataset::open(o);
        std::cout << "recovar " << recovar::version() << ": " << ds.size() << " images of "
                  << ds.box_size() << " x " << ds.box_size() << " px at " << ds.voxel_size()
                  << " A/px\n";
    } catch (const recovar::Error &e) {
        std::cerr << "error (" << static_cast<int>(e.status()) << "): " << e.what() << "\n";
        return 1;
    }
    return 0;
}
