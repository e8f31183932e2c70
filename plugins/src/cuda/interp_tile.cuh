// The tile passes of the Gaussian interpolation kernels (gaussian_interp.cu on NCHW planes,
// ssi_bottleneck.cu on compact rows): a 32x32 output tile with its 3-pixel halo in shared
// memory, a 7-tap row pass then a 7-tap column pass in math.h's order (rows first, dx = -3..3,
// then columns, dy = -3..3), so both kernels give the CPU twins' bits.
#pragma once

#include "common.cuh"

namespace ssi {
namespace cuda {
namespace interp {

constexpr int kTile = 32;                          // tile width and height
constexpr int kR = math::kInterpRadius;            // 3
constexpr int kWin = contract::kInterpWindow;      // 7
constexpr int kHalo = kTile + 2 * kR;              // 38
constexpr int kThreads = 256;
constexpr int kRows = kTile * kTile / kThreads;    // output rows per thread in the column pass (4)
constexpr int kSeg = 8;                            // columns per thread in the row pass
constexpr int kRowTasks = kHalo * (kTile / kSeg);  // 152

// The 7 separable window weights g[d] = exp(-sigma^2 (d - 3)^2 / 2); returns the window's scale
// sigma^2 / (2 pi) (math.h's gaussianTap and gaussianScale).
__device__ __forceinline__ float gaussianWindow(float sigma, float (&g)[kWin]) {
#pragma unroll
    for (int d = 0; d < kWin; ++d) g[d] = math::gaussianTap(sigma, d - kR);
    return math::gaussianScale(sigma);
}

// Row pass: dst[r][x] = sum_dx g[dx] src[r][x + dx] for the kHalo rows and kTile columns
// (each thread slides over kSeg columns of one row: 14 loads for 8 sums).
__device__ __forceinline__ void rowPass(float const (*src)[kHalo + 1], float (*dst)[kTile + 1], float const* g,
                                        int tid) {
    if (tid >= kRowTasks) return;
    int const r = tid / (kTile / kSeg), x0 = (tid % (kTile / kSeg)) * kSeg;
    float v[kSeg + kWin - 1];
#pragma unroll
    for (int i = 0; i < kSeg + kWin - 1; ++i) v[i] = src[r][x0 + i];
#pragma unroll
    for (int j = 0; j < kSeg; ++j) dst[r][x0 + j] = math::windowSum(g, v + j, 1);
}

// Column pass for one column and kRows consecutive output rows starting at tile row y0.
__device__ __forceinline__ void columnPass(float const (*src)[kTile + 1], int x, int y0, float const* g,
                                           float* out) {
    float v[kRows + kWin - 1];
#pragma unroll
    for (int i = 0; i < kRows + kWin - 1; ++i) v[i] = src[y0 + i][x];
#pragma unroll
    for (int r = 0; r < kRows; ++r) out[r] = math::windowSum(g, v + r, 1);
}

}  // namespace interp
}  // namespace cuda
}  // namespace ssi
