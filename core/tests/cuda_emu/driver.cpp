// Runs one kernel of kernels/*.cu on the host (through shim.h) for the emulation test:
//   driver <op> <dir>
// reads <dir>/args.txt (numbers, op-specific order) and raw little-endian arrays from <dir>,
// writes <dir>/out.bin. cuFFT's part of the transforms is stood in for by a naive DFT in f64.
#include "shim.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "../../../kernels/common.cuh"
#include "../../../kernels/slice.cu"
#include "../../../kernels/image.cu"
#include "../../../kernels/columns.cu"

template <typename T>
static std::vector<T> load(const std::string& path, size_t n) {
    std::vector<T> v(n);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f || std::fread(v.data(), sizeof(T), n, f) != n) {
        std::fprintf(stderr, "cannot read %zu values from %s\n", n, path.c_str());
        std::exit(2);
    }
    std::fclose(f);
    return v;
}

template <typename T>
static void save(const std::string& path, const std::vector<T>& v) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), sizeof(T), v.size(), f) != v.size()) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

// Unnormalized 2-D DFT of each d x d image, sign -1 (forward) or +1 (inverse), as cuFFT's.
static void dft2(std::vector<float2>& data, int n, int d, int sign) {
    std::vector<float2> out(data.size());
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < n; i++) {
        const float2* a = &data[(size_t)i * d * d];
        for (int kr = 0; kr < d; kr++)
            for (int kc = 0; kc < d; kc++) {
                double re = 0, im = 0;
                for (int r = 0; r < d; r++)
                    for (int c = 0; c < d; c++) {
                        double ang = sign * 2.0 * pi * (double)((kr * r + kc * c) % d) / d;
                        float2 v = a[r * d + c];
                        re += v.x * std::cos(ang) - v.y * std::sin(ang);
                        im += v.x * std::sin(ang) + v.y * std::cos(ang);
                    }
                out[(size_t)i * d * d + kr * d + kc] = make_float2((float)re, (float)im);
            }
    }
    data = out;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: driver <op> <dir>\n");
        return 2;
    }
    std::string op = argv[1], dir = std::string(argv[2]) + "/";
    std::ifstream args(dir + "args.txt");
    if (op == "slice" || op == "bp_complex" || op == "bp_real") {
        int n, d, nv, interp, clip;
        float r2;
        args >> n >> d >> nv >> interp >> clip >> r2;
        size_t vox = (size_t)nv * nv * nv, pix = (size_t)n * d * d;
        auto rots = load<float>(dir + "rots.bin", (size_t)n * 9);
        if (op == "slice") {
            auto vol = load<float2>(dir + "vol.bin", vox);
            std::vector<float2> out(pix);
            rcv_slice(vol.data(), rots.data(), out.data(), n, d, nv, interp, clip, r2);
            save(dir + "out.bin", out);
        } else if (op == "bp_complex") {
            auto vals = load<float>(dir + "vals.bin", pix * 2);
            auto acc = load<double>(dir + "acc.bin", vox * 2);
            rcv_backproject_complex(vals.data(), rots.data(), acc.data(), n, d, nv, interp, clip, r2);
            save(dir + "out.bin", acc);
        } else {
            auto vals = load<float>(dir + "vals.bin", pix);
            auto acc = load<double>(dir + "acc.bin", vox);
            rcv_backproject_real(vals.data(), rots.data(), acc.data(), n, d, nv, interp, clip, r2);
            save(dir + "out.bin", acc);
        }
    } else if (op == "ctf") {
        int n, d;
        double inv;
        args >> n >> d >> inv;
        auto consts = load<double>(dir + "consts.bin", (size_t)n * RCV_CTF_CONSTS);
        std::vector<float> out((size_t)n * d * d);
        rcv_ctf(consts.data(), out.data(), n, d, inv);
        save(dir + "out.bin", out);
    } else if (op == "to_spectra") {
        int n, d;
        args >> n >> d;
        long long total = (long long)n * d * d;
        auto images = load<float>(dir + "images.bin", (size_t)total);
        auto shifts = load<float>(dir + "shifts.bin", (size_t)n * 2);
        std::vector<float2> buf((size_t)total);
        rcv_modulate_real(images.data(), buf.data(), total, d);
        dft2(buf, n, d, -1);
        rcv_demodulate_shift(buf.data(), shifts.data(), total, d);
        save(dir + "out.bin", buf);
    } else if (op == "to_images") {
        int n, d;
        args >> n >> d;
        long long total = (long long)n * d * d;
        auto spec = load<float2>(dir + "spectra.bin", (size_t)total);
        std::vector<float2> buf((size_t)total);
        rcv_modulate_complex(spec.data(), buf.data(), total, d);
        dft2(buf, n, d, +1);
        std::vector<float> out((size_t)total);
        rcv_demodulate_real(buf.data(), out.data(), total, d);
        save(dir + "out.bin", out);
    } else if (op == "columns") {
        // The host steps of CudaColumns::add (core/src/backend/cuda_columns.rs) around the
        // kernels, with the naive DFT for cuFFT; columns in groups of `group` (masked case).
        int m, d, ncol, half, masked, group, clip;
        double reach;
        float r2;
        args >> m >> d >> ncol >> half >> masked >> group >> reach >> clip >> r2;
        size_t d2 = (size_t)d * d, n3 = d2 * d, pix = (size_t)m * d2;
        auto cr = load<float>(dir + "cr.bin", pix * 2);
        auto ctf = load<float>(dir + "ctf.bin", pix);
        auto rots = load<float>(dir + "rots.bin", (size_t)m * 9);
        auto xis = load<int>(dir + "xis.bin", (size_t)ncol * 3);
        auto sigma2 = load<float>(dir + "sigma2.bin", d2);
        std::vector<float> masks = masked ? load<float>(dir + "masks.bin", pix) : std::vector<float>(1);
        auto h = load<double>(dir + "h.bin", (size_t)ncol * 2 * n3);
        auto b = load<double>(dir + "b.bin", (size_t)ncol * 4 * n3);
        size_t pairs = (size_t)ncol * m;
        std::vector<float> ec(2 * pairs), cc(pairs);
        std::vector<int> hit(pairs);
        rcv_column_patch(cr.data(), ctf.data(), rots.data(), xis.data(), ec.data(), cc.data(),
                         hit.data(), m, ncol, d, reach);
        std::vector<int> start(ncol + 1, 0), src;
        for (int j = 0; j < ncol; j++) {
            for (int i = 0; i < m; i++)
                if (hit[(size_t)j * m + i]) src.push_back(j * m + i);
            start[j + 1] = (int)src.size();
        }
        float2 none = make_float2(0.0f, 0.0f);
        if (!masked) {
            rcv_column_backproject(cr.data(), ctf.data(), rots.data(), sigma2.data(), xis.data(),
                                   start.data(), src.data(), ec.data(), cc.data(), &none, 0,
                                   h.data(), b.data(), 0, ncol, half, m, d, clip, r2, reach);
        } else {
            for (int j0 = 0; j0 < ncol; j0 += group) {
                int j1 = std::min(ncol, j0 + group);
                int l0 = start[j0], l1 = start[j1], nl = l1 - l0;
                if (nl == 0) continue;
                std::vector<int> list(src.begin() + l0, src.begin() + l1), img_of(nl);
                for (int l = 0; l < nl; l++) img_of[l] = list[l] % m;
                std::vector<float2> buf((size_t)nl * d2);
                rcv_column_kappa(ctf.data(), rots.data(), xis.data(), list.data(), buf.data(), nl,
                                 m, d, reach);
                float inv = 1.0f / (float)d2;
                dft2(buf, nl, d, +1);
                rcv_column_scale(buf.data(), masks.data(), img_of.data(), 1, nl, d, inv);
                dft2(buf, nl, d, -1);
                rcv_column_scale(buf.data(), sigma2.data(), img_of.data(), 0, nl, d, 1.0f);
                dft2(buf, nl, d, +1);
                rcv_column_scale(buf.data(), masks.data(), img_of.data(), 1, nl, d, inv);
                dft2(buf, nl, d, -1);
                std::vector<int> gstart(start.begin() + j0, start.begin() + j1 + 1);
                rcv_column_backproject(cr.data(), ctf.data(), rots.data(), sigma2.data(),
                                       xis.data(), gstart.data(), src.data(), ec.data(), cc.data(),
                                       buf.data(), 1, h.data(), b.data(), j0, j1 - j0, half, m,
                                       d, clip, r2, reach);
            }
        }
        std::vector<double> out;
        out.push_back((double)src.size());
        out.insert(out.end(), h.begin(), h.end());
        out.insert(out.end(), b.begin(), b.end());
        save(dir + "out.bin", out);
    } else {
        std::fprintf(stderr, "unknown op %s\n", op.c_str());
        return 2;
    }
    return 0;
}
