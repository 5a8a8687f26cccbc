// Just enough of CUDA C for the kernels in kernels/*.cu to compile as host C++, so their
// arithmetic and indexing can be checked against the CPU backend on a machine without a GPU
// (core/tests/cuda_kernels_emulated.rs). Launches are one block of one thread: every kernel
// loops grid-stride (RCV_FOR_EACH), so that thread visits every element in order.
#pragma once
#include <algorithm>
#include <cmath>
#include <math.h>

struct rcv_uint3 {
    unsigned x, y, z;
};
static const rcv_uint3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0};
static const rcv_uint3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};

#define __global__
#define __device__
#define __forceinline__ inline

struct float2 {
    float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline void sincos(double a, double* s, double* c) {
    *s = std::sin(a);
    *c = std::cos(a);
}
using std::max;
using std::min;
