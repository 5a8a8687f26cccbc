// Central-slice projection P(R) and its exact adjoint P(R)^T (CPU reference:
// core/src/forward/slice.rs). Complex data travel as float2 (re, im), accumulators as
// double / double2.

// One pixel of P(R) vol: the CPU's gather_pixel over the whole z range, same voxels, same
// weights, same order of additions (x, then y, then z).
__device__ float2 rcv_gather(const float2* vol, int nv, int interp, const float g[3]) {
    float2 s = make_float2(0.0f, 0.0f);
    int n = nv;
    if (interp == RCV_NEAREST) {
        int x = (int)rintf(g[0]), y = (int)rintf(g[1]), z = (int)rintf(g[2]);
        if (x < 0 || x >= n || y < 0 || y >= n || z < 0 || z >= n) return s;
        return vol[((long long)z * nv + y) * nv + x];
    }
    if (interp == RCV_TRILINEAR) {
        float fx = floorf(g[0]), fy = floorf(g[1]), fz = floorf(g[2]);
        int bx = (int)fx, by = (int)fy, bz = (int)fz;
        if (bx < -1 || bx >= n || by < -1 || by >= n || bz < -1 || bz >= n) return s;
        float tx = g[0] - fx, ty = g[1] - fy, tz = g[2] - fz;
        float wx[2] = {1.0f - tx, tx}, wy[2] = {1.0f - ty, ty}, wz[2] = {1.0f - tz, tz};
        bool x_inside = bx >= 0 && bx + 1 < n;
        for (int dz = 0; dz < 2; dz++) {
            int z = bz + dz;
            if (z < 0 || z >= n) continue;
            float2 sz = make_float2(0.0f, 0.0f);
            for (int dy = 0; dy < 2; dy++) {
                int y = by + dy;
                if (y < 0 || y >= n) continue;
                long long row = ((long long)z * nv + y) * nv;
                float2 sx;
                if (x_inside) {
                    float2 v0 = vol[row + bx], v1 = vol[row + bx + 1];
                    sx = make_float2(v0.x * wx[0] + v1.x * wx[1], v0.y * wx[0] + v1.y * wx[1]);
                } else {
                    sx = make_float2(0.0f, 0.0f);
                    for (int dx = 0; dx < 2; dx++) {
                        int x = bx + dx;
                        if (x >= 0 && x < n) {
                            float2 v = vol[row + x];
                            sx.x += v.x * wx[dx];
                            sx.y += v.y * wx[dx];
                        }
                    }
                }
                sz.x += sx.x * wy[dy];
                sz.y += sx.y * wy[dy];
            }
            s.x += sz.x * wz[dz];
            s.y += sz.y * wz[dz];
        }
        return s;
    }
    // Periodic cubic B-spline over the 4x4x4 coefficients b-1 .. b+2.
    float fx = floorf(g[0]), fy = floorf(g[1]), fz = floorf(g[2]);
    float wx[4], wy[4], wz[4];
    rcv_bspline(g[0] - fx, wx);
    rcv_bspline(g[1] - fy, wy);
    rcv_bspline(g[2] - fz, wz);
    int x0 = rcv_wrap((int)fx - 1, n), y0 = rcv_wrap((int)fy - 1, n), z0 = rcv_wrap((int)fz - 1, n);
    bool x_inside = x0 + 3 < nv;
    int z = z0;
    for (int jz = 0; jz < 4; jz++) {
        float2 sz = make_float2(0.0f, 0.0f);
        int y = y0;
        for (int jy = 0; jy < 4; jy++) {
            long long row = ((long long)z * nv + y) * nv;
            float2 sx;
            if (x_inside) {
                float2 v0 = vol[row + x0], v1 = vol[row + x0 + 1], v2 = vol[row + x0 + 2],
                       v3 = vol[row + x0 + 3];
                sx = make_float2(v0.x * wx[0] + v1.x * wx[1] + v2.x * wx[2] + v3.x * wx[3],
                                 v0.y * wx[0] + v1.y * wx[1] + v2.y * wx[2] + v3.y * wx[3]);
            } else {
                sx = make_float2(0.0f, 0.0f);
                int x = x0;
                for (int jx = 0; jx < 4; jx++) {
                    float2 v = vol[row + x];
                    sx.x += v.x * wx[jx];
                    sx.y += v.y * wx[jx];
                    x = (x + 1 == nv) ? 0 : x + 1;
                }
            }
            sz.x += sx.x * wy[jy];
            sz.y += sx.y * wy[jy];
            y = (y + 1 == nv) ? 0 : y + 1;
        }
        s.x += sz.x * wz[jz];
        s.y += sz.y * wz[jz];
        z = (z + 1 == nv) ? 0 : z + 1;
    }
    return s;
}

// out[i, row, col] = P(R_i) vol, one thread per pixel.
extern "C" __global__ void rcv_slice(const float2* vol, const float* rots, float2* out, int n_img,
                                     int d, int nv, int interp, int clip, float r2) {
    long long total = (long long)n_img * d * d;
    int s = nv / d;
    RCV_FOR_EACH(idx, total) {
        int i = (int)(idx / ((long long)d * d));
        int p = (int)(idx % ((long long)d * d));
        int row = p / d, col = p % d;
        float2 v = make_float2(0.0f, 0.0f);
        if (!rcv_clipped(col - d / 2, row - d / 2, clip, r2)) {
            RcvPlane pl = rcv_plane(rots + 9 * (long long)i, s, nv, d);
            float g[3];
            rcv_plane_at(pl, row, col, g);
            v = rcv_gather(vol, nv, interp, g);
        }
        out[idx] = v;
    }
}

// acc[v] += sum_i P(R_i)^T values_i, gathered per voxel: each thread owns one voxel and adds
// its contributions image by image, then pixel by pixel (row-major), straight into the
// accumulator it read. No atomics, so the sums are the same bits on every run and for every
// launch size, and splitting the images into several calls changes nothing. The candidate
// pixels of an image are those whose stencil can reach the voxel: within reach*sqrt(3) of
// its projection on the image plane (rotations must be orthonormal; the host checks), and
// each candidate is then tested with the exact CPU stencil arithmetic.
template <bool CPLX>
__device__ void rcv_backproject_voxel(const float* vals, const float* rots, double* acc,
                                      long long vox, int n_img, int d, int nv, int interp,
                                      int clip, float r2) {
    int s = nv / d;
    int x = (int)(vox % nv), y = (int)((vox / nv) % nv), z = (int)(vox / ((long long)nv * nv));
    float reach = interp == RCV_NEAREST ? 0.5f : (interp == RCV_TRILINEAR ? 1.0f : 2.0f);
    float c = (float)(nv / 2);
    int periodic = interp == RCV_CUBIC ? 1 : 0;
    // Radius of the image's pixels in grid units (all of the square without clipping).
    float r_pix = clip ? sqrtf(r2) : 0.70711f * (float)d;
    // The voxel's copies that some pixel can reach (the voxel itself; for the periodic cubic
    // stencil also its images one period away on each axis), with the half-width of their
    // candidate window. They do not depend on the image: found once, used for every image.
    int tgt[27][3];
    float lim_of[27];
    int n_copies = 0;
    for (int mz = -periodic; mz <= periodic; mz++)
    for (int my = -periodic; my <= periodic; my++)
    for (int mx = -periodic; mx <= periodic; mx++) {
        int tx = x + mx * nv, ty = y + my * nv, tz = z + mz * nv;
        float u0 = (float)tx - c, u1 = (float)ty - c, u2 = (float)tz - c;
        float norm = sqrtf(u0 * u0 + u1 * u1 + u2 * u2);
        float lim = reach * 1.7320508f + 0.05f + 2e-4f * norm;
        if (norm > (float)s * r_pix + lim + 1.0f) continue;
        tgt[n_copies][0] = tx;
        tgt[n_copies][1] = ty;
        tgt[n_copies][2] = tz;
        lim_of[n_copies] = lim;
        n_copies++;
    }
    // Beyond the reach of every pixel of every image: nothing to read or write.
    if (n_copies == 0) return;
    double ar = CPLX ? acc[2 * vox] : acc[vox];
    double ai = CPLX ? acc[2 * vox + 1] : 0.0;
    for (int i = 0; i < n_img; i++) {
        const float* R = rots + 9 * (long long)i;
        RcvPlane pl = rcv_plane(R, s, nv, d);
        for (int k = 0; k < n_copies; k++) {
            int tx = tgt[k][0], ty = tgt[k][1], tz = tgt[k][2];
            float u0 = (float)tx - c, u1 = (float)ty - c, u2 = (float)tz - c;
            float lim = lim_of[k];
            float dist = u0 * R[6] + u1 * R[7] + u2 * R[8];
            if (fabsf(dist) > lim) continue;
            float kxs = (u0 * R[0] + u1 * R[1] + u2 * R[2]) / (float)s;
            float kys = (u0 * R[3] + u1 * R[4] + u2 * R[5]) / (float)s;
            float win = lim / (float)s;
            int kx0 = max(-d / 2, (int)ceilf(kxs - win)), kx1 = min(d / 2 - 1, (int)floorf(kxs + win));
            int ky0 = max(-d / 2, (int)ceilf(kys - win)), ky1 = min(d / 2 - 1, (int)floorf(kys + win));
            for (int ky = ky0; ky <= ky1; ky++) {
                int row = ky + d / 2;
                for (int kx = kx0; kx <= kx1; kx++) {
                    if (rcv_clipped(kx, ky, clip, r2)) continue;
                    int col = kx + d / 2;
                    float g[3];
                    rcv_plane_at(pl, row, col, g);
                    float wx, wy, wz;
                    if (!rcv_axis_weight(interp, g[0], tx, &wx)) continue;
                    if (!rcv_axis_weight(interp, g[1], ty, &wy)) continue;
                    if (!rcv_axis_weight(interp, g[2], tz, &wz)) continue;
                    long long pix = ((long long)i * d + row) * d + col;
                    double vr = CPLX ? (double)vals[2 * pix] : (double)vals[pix];
                    double vi = CPLX ? (double)vals[2 * pix + 1] : 0.0;
                    if (interp == RCV_NEAREST) {
                        ar += vr;
                        ai += vi;
                    } else {
                        // ((v wz) wy) wx in f64, as the CPU scatter.
                        double zr = vr * (double)wz, zi = vi * (double)wz;
                        double yr = zr * (double)wy, yi = zi * (double)wy;
                        ar += yr * (double)wx;
                        ai += yi * (double)wx;
                    }
                }
            }
        }
    }
    if (CPLX) {
        acc[2 * vox] = ar;
        acc[2 * vox + 1] = ai;
    } else {
        acc[vox] = ar;
    }
}

// Complex images (float2) into a complex accumulator (double2 as pairs of doubles).
extern "C" __global__ void rcv_backproject_complex(const float* images, const float* rots,
                                                   double* acc, int n_img, int d, int nv,
                                                   int interp, int clip, float r2) {
    long long total = (long long)nv * nv * nv;
    RCV_FOR_EACH(vox, total) {
        rcv_backproject_voxel<true>(images, rots, acc, vox, n_img, d, nv, interp, clip, r2);
    }
}

// Real per-pixel values into a real accumulator.
extern "C" __global__ void rcv_backproject_real(const float* values, const float* rots,
                                                double* acc, int n_img, int d, int nv,
                                                int interp, int clip, float r2) {
    long long total = (long long)nv * nv * nv;
    RCV_FOR_EACH(vox, total) {
        rcv_backproject_voxel<false>(values, rots, acc, vox, n_img, d, nv, interp, clip, r2);
    }
}
