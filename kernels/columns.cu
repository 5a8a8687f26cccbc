// The covariance-column accumulation (algorithms.md §5.4; the CPU reference is
// core/src/backend/columns.rs). For a batch of images and the columns xi of a pass:
//   rcv_column_patch        per (column, image): does the read kernel reach the image, and
//                           its sums e = sum_p k_p (C r)_p and c = sum_p k_p C_p^2;
//   rcv_column_kappa        per reached pair: the image chi * k * C, the first step of the
//                           masked noise term (then cuFFT and rcv_column_scale);
//   rcv_column_scale        elementwise weights between those transforms;
//   rcv_column_backproject  per (column, voxel): the trilinear backprojection of
//                           C r conj(e) - noise C and C^2 c of every reached image, a gather
//                           in image order then pixel order (the CPU's order: same bits).
// The read kernel's weights are f64, as the CPU's kernel_patch computes them.

#define RCV_KERNEL_WIDTH 2.0

// The read kernel of column xi on the image with rotation R: the window of candidate pixels
// (centred indices) and what computing a weight needs. `ok` is false when the image's plane
// misses the kernel (|xi . n| >= 2 |n|_1 + 1e-3).
struct RcvPatch {
    double r0[3], r1[3], x[3];
    int kx0, kx1, ky0, ky1;
    bool ok;
};

__device__ __forceinline__ RcvPatch rcv_patch(const float* R, const int* xi, int d, double reach) {
    RcvPatch p;
    double nrm[3];
    for (int k = 0; k < 3; k++) {
        p.r0[k] = (double)R[k];
        p.r1[k] = (double)R[3 + k];
        nrm[k] = (double)R[6 + k];
        p.x[k] = (double)xi[k];
    }
    double l1 = fabs(nrm[0]) + fabs(nrm[1]) + fabs(nrm[2]);
    double dn = p.x[0] * nrm[0] + p.x[1] * nrm[1] + p.x[2] * nrm[2];
    p.ok = !(fabs(dn) >= RCV_KERNEL_WIDTH * l1 + 1e-3);
    double a = p.x[0] * p.r0[0] + p.x[1] * p.r0[1] + p.x[2] * p.r0[2];
    double b = p.x[0] * p.r1[0] + p.x[1] * p.r1[1] + p.x[2] * p.r1[2];
    int half = d / 2;
    p.kx0 = max((int)ceil(a - reach), -half);
    p.kx1 = min((int)floor(a + reach), half - 1);
    p.ky0 = max((int)ceil(b - reach), -half);
    p.ky1 = min((int)floor(b + reach), half - 1);
    return p;
}

// The read kernel's weight at pixel (kx, ky) of the window (0 outside the kernel).
__device__ __forceinline__ double rcv_kappa(const RcvPatch& p, int kx, int ky) {
    double fx = (double)kx, fy = (double)ky;
    double w = 1.0;
    for (int k = 0; k < 3; k++) {
        double diff = fabs(fx * p.r0[k] + fy * p.r1[k] - p.x[k]);
        w *= fmax(1.0 - diff / RCV_KERNEL_WIDTH, 0.0);
    }
    return w;
}

__device__ __forceinline__ bool rcv_in_window(const RcvPatch& p, int kx, int ky) {
    return kx >= p.kx0 && kx <= p.kx1 && ky >= p.ky0 && ky <= p.ky1;
}

// Pair q = j * n_img + i (column j, image i): hit[q], ec[q] = conj(e) as f32, cc[q] = c.
extern "C" __global__ void rcv_column_patch(const float* cr, const float* ctf, const float* rots,
                                            const int* xis, float* ec, float* cc, int* hit,
                                            int n_img, int n_col, int d, double reach) {
    long long total = (long long)n_img * n_col;
    RCV_FOR_EACH(q, total) {
        int j = (int)(q / n_img), i = (int)(q % n_img);
        RcvPatch p = rcv_patch(rots + 9 * (long long)i, xis + 3 * j, d, reach);
        double er = 0.0, ei = 0.0, c2 = 0.0;
        int any = 0;
        if (p.ok) {
            for (int ky = p.ky0; ky <= p.ky1; ky++) {
                for (int kx = p.kx0; kx <= p.kx1; kx++) {
                    double w = rcv_kappa(p, kx, ky);
                    if (!(w > 0.0)) continue;
                    any = 1;
                    float k = (float)w;
                    long long pix = ((long long)i * d + (ky + d / 2)) * d + (kx + d / 2);
                    er += (double)cr[2 * pix] * (double)k;
                    ei += (double)cr[2 * pix + 1] * (double)k;
                    float cv = ctf[pix];
                    c2 += (double)(k * cv * cv);
                }
            }
        }
        ec[2 * q] = (float)er;
        ec[2 * q + 1] = -(float)ei;
        cc[q] = (float)c2;
        hit[q] = any;
    }
}

// For the reached pairs listed (pair_src[l] = j * n_img + i, l = 0 .. n_list): the image
// chi * (k C + 0i), chi the centred-DFT checkerboard, so that plain cuFFT transforms of it
// are the centred ones (the chi of consecutive transforms cancel; see the host code).
extern "C" __global__ void rcv_column_kappa(const float* ctf, const float* rots, const int* xis,
                                            const int* pair_src, float2* out, int n_list,
                                            int n_img, int d, double reach) {
    long long d2 = (long long)d * d;
    long long total = (long long)n_list * d2;
    RCV_FOR_EACH(idx, total) {
        int l = (int)(idx / d2);
        int pix = (int)(idx % d2);
        int row = pix / d, col = pix % d;
        int src = pair_src[l];
        int j = src / n_img, i = src % n_img;
        RcvPatch p = rcv_patch(rots + 9 * (long long)i, xis + 3 * j, d, reach);
        int kx = col - d / 2, ky = row - d / 2;
        float v = 0.0f;
        if (p.ok && rcv_in_window(p, kx, ky)) {
            double w = rcv_kappa(p, kx, ky);
            if (w > 0.0) v = (float)w * ctf[(long long)i * d2 + pix];
        }
        out[idx] = make_float2(v * rcv_checker(row, col), 0.0f);
    }
}

// buf[l][p] *= w[r][p] * s, with r = img_of[l] (per_pair != 0) or 0 (one image for all).
extern "C" __global__ void rcv_column_scale(float2* buf, const float* w, const int* img_of,
                                            int per_pair, int n_list, int d, float s) {
    long long d2 = (long long)d * d;
    long long total = (long long)n_list * d2;
    RCV_FOR_EACH(idx, total) {
        int l = (int)(idx / d2);
        long long pix = idx % d2;
        long long r = per_pair ? (long long)img_of[l] : 0;
        float f = w[r * d2 + pix] * s;
        buf[idx].x *= f;
        buf[idx].y *= f;
    }
}

// acc += the column's contributions of the listed pairs, one thread per (column, voxel):
// columns col0 .. col0 + n_cols of the pass (their pairs are list[start[c] .. start[c+1]],
// image order), halfset `half`. The accumulators hold, per column of the pass, H (f64) and B
// (pairs of f64) for both halves: h[((col * 2) + half) * n^3 + voxel]. Without masks the
// noise term k C sigma^2 is formed on the fly from the read kernel; with masks it is
// noise[l - start[0]] (the transforms' output, still times chi).
extern "C" __global__ void rcv_column_backproject(
    const float* cr, const float* ctf, const float* rots, const float* sigma2, const int* xis,
    const int* start, const int* pair_src, const float* ec, const float* cc,
    const float2* noise, int masked, double* h, double* b, int col0, int n_cols, int half,
    int n_img, int d, int clip, float r2, double reach) {
    long long n3 = (long long)d * d * d;
    long long d2 = (long long)d * d;
    long long total = (long long)n_cols * n3;
    RCV_FOR_EACH(t, total) {
        int jl = (int)(t / n3);
        long long vox = t % n3;
        int col = col0 + jl;
        int x = (int)(vox % d), y = (int)((vox / d) % d), z = (int)(vox / d2);
        float c = (float)(d / 2);
        float u0 = (float)x - c, u1 = (float)y - c, u2 = (float)z - c;
        float norm = sqrtf(u0 * u0 + u1 * u1 + u2 * u2);
        // The trilinear stencil's reach, as the backprojection's gather (slice.cu).
        float lim = 1.7320508f + 0.05f + 2e-4f * norm;
        float r_pix = clip ? sqrtf(r2) : 0.70711f * (float)d;
        if (norm > r_pix + lim + 1.0f) continue;
        long long at = ((long long)col * 2 + half) * n3 + vox;
        double ah = h[at], ar = b[2 * at], ai = b[2 * at + 1];
        for (int l = start[jl]; l < start[jl + 1]; l++) {
            int src = pair_src[l];
            int i = src % n_img;
            const float* R = rots + 9 * (long long)i;
            float dist = u0 * R[6] + u1 * R[7] + u2 * R[8];
            if (fabsf(dist) > lim) continue;
            RcvPatch p = masked ? RcvPatch{} : rcv_patch(R, xis + 3 * col, d, reach);
            RcvPlane pl = rcv_plane(R, 1, d, d);
            float kxs = u0 * R[0] + u1 * R[1] + u2 * R[2];
            float kys = u0 * R[3] + u1 * R[4] + u2 * R[5];
            int kx0 = max(-d / 2, (int)ceilf(kxs - lim)), kx1 = min(d / 2 - 1, (int)floorf(kxs + lim));
            int ky0 = max(-d / 2, (int)ceilf(kys - lim)), ky1 = min(d / 2 - 1, (int)floorf(kys + lim));
            float ecr = ec[2 * (long long)src], eci = ec[2 * (long long)src + 1];
            float ccq = cc[src];
            for (int ky = ky0; ky <= ky1; ky++) {
                int row = ky + d / 2;
                for (int kx = kx0; kx <= kx1; kx++) {
                    if (rcv_clipped(kx, ky, clip, r2)) continue;
                    int colp = kx + d / 2;
                    float g[3];
                    rcv_plane_at(pl, row, colp, g);
                    float wx, wy, wz;
                    if (!rcv_axis_weight(RCV_TRILINEAR, g[0], x, &wx)) continue;
                    if (!rcv_axis_weight(RCV_TRILINEAR, g[1], y, &wy)) continue;
                    if (!rcv_axis_weight(RCV_TRILINEAR, g[2], z, &wz)) continue;
                    long long pix = (long long)row * d + colp;
                    long long ip = (long long)i * d2 + pix;
                    float cv = ctf[ip];
                    float crr = cr[2 * ip], cri = cr[2 * ip + 1];
                    float nr = 0.0f, ni = 0.0f;
                    if (masked) {
                        float2 nz = noise[(long long)(l - start[0]) * d2 + pix];
                        float chi = rcv_checker(row, colp);
                        nr = nz.x * chi;
                        ni = nz.y * chi;
                    } else if (p.ok && rcv_in_window(p, kx, ky)) {
                        double w = rcv_kappa(p, kx, ky);
                        if (w > 0.0) nr = (float)w * cv * sigma2[pix];
                    }
                    // C r conj(e) - noise C and C^2 c, the CPU's f32 operations.
                    float pr = crr * ecr - cri * eci;
                    float pi = crr * eci + cri * ecr;
                    float rr = pr - nr * cv, ri = pi - ni * cv;
                    float lhs = cv * cv * ccq;
                    double zr = (double)rr * (double)wz, zi = (double)ri * (double)wz;
                    double zh = (double)lhs * (double)wz;
                    double yr = zr * (double)wy, yi = zi * (double)wy, yh = zh * (double)wy;
                    ar += yr * (double)wx;
                    ai += yi * (double)wx;
                    ah += yh * (double)wx;
                }
            }
        }
        h[at] = ah;
        b[2 * at] = ar;
        b[2 * at + 1] = ai;
    }
}
