// Shared by every kernel: the host prepends this file to each source before NVRTC compiles
// it (one string, no include paths), and the host-side emulation test includes it.
//
// Conventions are the CPU reference's (core/src/forward/mod.rs): images D x D row-major with
// frequency (kx, ky) = (col - D/2, row - D/2); volumes Nv^3, z slowest; rotations row-major,
// rows 0 and 1 the image axes. Compiled with --fmad=false: every f32 operation below rounds
// exactly as the same expression in the Rust code does, so stencil coordinates and weights
// are the CPU's bit for bit.

#define RCV_NEAREST 0
#define RCV_TRILINEAR 1
#define RCV_CUBIC 2

// Grid-stride loop over [0, total): any launch size covers every element.
#define RCV_FOR_EACH(idx, total)                                                           \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < (total);  \
         idx += (long long)blockDim.x * gridDim.x)

struct RcvPlane {
    float ex[3];
    float ey[3];
    float centre;
    int half_d;
};

// The CPU's Plane::new: ex = s R[0,:], ey = s R[1,:], centre Nv/2.
__device__ __forceinline__ RcvPlane rcv_plane(const float* rot, int s, int nv, int d) {
    RcvPlane p;
    float sf = (float)s;
    for (int k = 0; k < 3; k++) {
        p.ex[k] = sf * rot[k];
        p.ey[k] = sf * rot[3 + k];
    }
    p.centre = (float)(nv / 2);
    p.half_d = d / 2;
    return p;
}

// Grid coordinates of pixel (row, col): Plane::row_base, then Plane::at.
__device__ __forceinline__ void rcv_plane_at(const RcvPlane& p, int row, int col, float g[3]) {
    float ky = (float)(row - p.half_d);
    float kx = (float)(col - p.half_d);
    for (int k = 0; k < 3; k++) {
        float base = ky * p.ey[k] + p.centre;
        g[k] = base + kx * p.ex[k];
    }
}

// SliceGeometry's clipping test, exactly `(kx^2 + ky^2) as f32 > r^2`.
__device__ __forceinline__ bool rcv_clipped(int kx, int ky, int clip, float r2) {
    return clip && ((float)(kx * kx + ky * ky) > r2);
}

// The four cubic B-spline weights of the stencil b-1 .. b+2 at fraction t (cubic.rs).
__device__ __forceinline__ void rcv_bspline(float t, float w[4]) {
    float t2 = t * t;
    float t3 = t2 * t;
    float u = 1.0f - t;
    const float sixth = 1.0f / 6.0f;
    w[0] = u * u * u * sixth;
    w[1] = (4.0f - 6.0f * t2 + 3.0f * t3) * sixth;
    w[2] = (1.0f + 3.0f * t + 3.0f * t2 - 3.0f * t3) * sixth;
    w[3] = t3 * sixth;
}

// The weight with which the stencil at grid coordinate g touches coordinate `target` along
// one axis (0 when it does not). `target` is the voxel coordinate, shifted by a multiple of
// Nv for the periodic cubic stencil. Same floor/fraction/weights as the CPU scatter.
__device__ __forceinline__ bool rcv_axis_weight(int interp, float g, int target, float* w) {
    if (interp == RCV_NEAREST) {
        *w = 1.0f;
        return (int)rintf(g) == target;
    }
    float f = floorf(g);
    int b = (int)f;
    float t = g - f;
    if (interp == RCV_TRILINEAR) {
        // For a voxel inside the grid this also keeps the base in [-1, n), the CPU's whole-
        // stencil test, so that test needs no repeating here.
        if (b == target) { *w = 1.0f - t; return true; }
        if (b + 1 == target) { *w = t; return true; }
        return false;
    }
    int j = target - (b - 1);
    if (j < 0 || j > 3) return false;
    float ws[4];
    rcv_bspline(t, ws);
    *w = ws[j];
    return true;
}

__device__ __forceinline__ int rcv_wrap(int v, int n) {
    int r = v % n;
    return r < 0 ? r + n : r;
}

// Centered-DFT checkerboard: for even D the centered transform fftshift(fft(fftshift(x)))
// equals (-1)^(r+c) x, a plain DFT, then (-1)^(r+c) again (the constant phase of the two
// axes multiplies to 1).
__device__ __forceinline__ float rcv_checker(int row, int col) {
    return ((row + col) & 1) ? -1.0f : 1.0f;
}
