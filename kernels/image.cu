// Per-pixel image operations: the CTF (CPU reference core/src/forward/ctf.rs), and the
// pre/post steps that turn a plain batched 2-D DFT (cuFFT) into the centered transforms of
// core/src/fourier, with the shift phase ramps of core/src/forward/shift.rs.

// Per-image CTF constants, computed on the host by the CPU code (forward::ctf::Consts):
// dfu, dfv, cos 2a, sin 2a, k_df, k_cs, phase, sqrt(1 - w^2), w, k_b, contrast.
#define RCV_CTF_CONSTS 11

// out[i, row, col] = CTF of image i at spatial frequency ((col, row) - D/2) * inv (1/A),
// in f64 as the CPU's Consts::at, stored as f32.
extern "C" __global__ void rcv_ctf(const double* consts, float* out, int n_img, int d,
                                   double inv) {
    long long total = (long long)n_img * d * d;
    double h = (double)(d / 2);
    RCV_FOR_EACH(idx, total) {
        long long i = idx / ((long long)d * d);
        int p = (int)(idx % ((long long)d * d));
        int row = p / d, col = p % d;
        const double* c = consts + RCV_CTF_CONSTS * i;
        double x = ((double)col - h) * inv;
        double y = ((double)row - h) * inv;
        double s2 = x * x + y * y;
        double c2t = 1.0, s2t = 0.0;
        if (s2 > 0.0) {
            c2t = (x * x - y * y) / s2;
            s2t = 2.0 * x * y / s2;
        }
        double cos_2diff = c2t * c[2] + s2t * c[3];
        double df = 0.5 * (c[0] + c[1] + (c[0] - c[1]) * cos_2diff);
        double gamma = c[4] * df * s2 + c[5] * s2 * s2 - c[6];
        double sin_g, cos_g;
        sincos(gamma, &sin_g, &cos_g);
        double ctf = c[7] * sin_g - c[8] * cos_g;
        if (c[9] != 0.0) ctf *= exp(c[9] * s2);
        out[idx] = (float)(ctf * c[10]);
    }
}

// Real images to the checkerboard-modulated complex input of a forward DFT.
extern "C" __global__ void rcv_modulate_real(const float* images, float2* out, long long total,
                                             int d) {
    RCV_FOR_EACH(idx, total) {
        int p = (int)(idx % ((long long)d * d));
        float sgn = rcv_checker(p / d, p % d);
        out[idx] = make_float2(images[idx] * sgn, 0.0f);
    }
}

// After the forward DFT: undo the checkerboard (giving the centered spectrum) and multiply by
// the phase ramp exp(-2 pi i (kx tx + ky ty) / D) of each image's shift (pixels), in f64.
extern "C" __global__ void rcv_demodulate_shift(float2* spec, const float* shifts,
                                                long long total, int d) {
    double two_pi_over_d = -2.0 * 3.14159265358979323846 / (double)d;
    RCV_FOR_EACH(idx, total) {
        long long i = idx / ((long long)d * d);
        int p = (int)(idx % ((long long)d * d));
        int row = p / d, col = p % d;
        float sgn = rcv_checker(row, col);
        float2 v = spec[idx];
        v.x *= sgn;
        v.y *= sgn;
        float tx = shifts[2 * i], ty = shifts[2 * i + 1];
        if (tx != 0.0f || ty != 0.0f) {
            double kx = (double)(col - d / 2), ky = (double)(row - d / 2);
            double a = two_pi_over_d * (kx * (double)tx + ky * (double)ty);
            double sa, ca;
            sincos(a, &sa, &ca);
            double re = (double)v.x * ca - (double)v.y * sa;
            double im = (double)v.x * sa + (double)v.y * ca;
            v = make_float2((float)re, (float)im);
        }
        spec[idx] = v;
    }
}

// Centered spectra to the checkerboard-modulated input of an inverse DFT.
extern "C" __global__ void rcv_modulate_complex(const float2* spec, float2* out,
                                                long long total, int d) {
    RCV_FOR_EACH(idx, total) {
        int p = (int)(idx % ((long long)d * d));
        float sgn = rcv_checker(p / d, p % d);
        float2 v = spec[idx];
        out[idx] = make_float2(v.x * sgn, v.y * sgn);
    }
}

// After the (unnormalized) inverse DFT: the real part, checkerboard undone, divided by D^2.
extern "C" __global__ void rcv_demodulate_real(const float2* data, float* out, long long total,
                                               int d) {
    float inv = 1.0f / ((float)d * (float)d);
    RCV_FOR_EACH(idx, total) {
        int p = (int)(idx % ((long long)d * d));
        out[idx] = data[idx].x * rcv_checker(p / d, p % d) * inv;
    }
}
