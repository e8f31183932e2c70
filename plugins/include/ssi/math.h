// Per-element arithmetic of the SSI ops, written once for every backend.
//
// The CUDA kernels (nvcc) and the CPU twins (host compiler) include this header and call the
// same functions, so both run the arithmetic of the PyTorch reference ops in
// ssi_deploy/ops/{sampling,sparse_conv,interpolation}.py, step by step and in float32:
//   - the counter-based hash RNG (integer steps, bit-exact everywhere),
//   - the SampleMask decisions (threshold / stochastic / official, grid prior),
//   - conv tap coordinates and deformable-v1 bilinear corners and weights,
//   - the separable Gaussian window, the normaliser and the interpolation combination.
// Only float rounding of library functions (expf, logf) and FMA contraction by the device
// compiler can make the last bit differ between backends; every integer step and every
// comparison against a constant is identical.
#pragma once

#include <cmath>
#include <cstdint>

#include "ssi/contract.h"

#if defined(__CUDACC__)
#define SSI_HD __host__ __device__
#else
#define SSI_HD
#endif

namespace ssi {
namespace math {

constexpr int kInterpRadius = contract::kInterpWindow / 2;  // 3
constexpr int kInterpTaps = contract::kInterpWindow * contract::kInterpWindow;  // 49
constexpr float kTwoPi = 6.2831855f;  // float(2 pi), as torch rounds the python scalar

// ---------------------------------------------------------------------------------------
// Hash RNG (sampling.py): mix(h) = h ^= h >> 16; h *= 0x7feb352d; h ^= h >> 15;
// h *= 0x846ca68b; h ^= h >> 16 on uint32.
SSI_HD inline uint32_t mix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h;
}

// The node-only part of the hash: mix(mix(seed) ^ layer) (two's complement for negatives).
SSI_HD inline uint32_t layerKey(int32_t seed, int32_t layer) {
    return mix32(mix32(static_cast<uint32_t>(seed)) ^ static_cast<uint32_t>(layer));
}

// u[n, y, x] = ((h >> 9) + 0.5) * 2^-23 in [2^-24, 1 - 2^-24], strictly inside (0, 1)
// (semantics version 2). Every step is exact in float32: h >> 9 < 2^23 converts exactly,
// (h >> 9) + 0.5 < 2^23 needs 24 significant bits, and the scale is a power of two. 1 - u is
// another draw of the same grid, also exact. (Version 1's ((h >> 8) + 0.5) / 2^24 needed 25
// bits and rounded to exactly 1.0 for h >> 8 = 2^24 - 1.)
SSI_HD inline float hashUniform(uint32_t key, int32_t n, int32_t y, int32_t x) {
    uint32_t h = mix32(mix32(mix32(key ^ static_cast<uint32_t>(n)) ^ static_cast<uint32_t>(y)) ^
                       static_cast<uint32_t>(x));
    return (static_cast<float>(h >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

SSI_HD inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

SSI_HD inline bool gridPrior(int32_t y, int32_t x, int32_t interval) {
    return interval > 0 && (y % interval) == 0 && (x % interval) == 0;
}

// Mask value at (n, y, x) from its logit (float32), for every mode of SampleMask.
// Unknown modes give 0 (the launchers reject them before any kernel runs).
SSI_HD inline float sampleMaskValue(float logit, int32_t mode, int32_t gridInterval, uint32_t key,
                                    int32_t n, int32_t y, int32_t x) {
    if (gridPrior(y, x, gridInterval)) return 1.0f;
    if (mode == contract::kModeThreshold) return logit >= 0.0f ? 1.0f : 0.0f;
    float u = hashUniform(key, n, y, x);
    if (mode == contract::kModeStochastic) return u < sigmoidf(logit) ? 1.0f : 0.0f;
    if (mode == contract::kModeOfficial) {
        float g = logf(u) - logf(1.0f - u);  // logistic noise L
        float v = sigmoidf((logit + g) / contract::kOfficialTemperature);
        return v >= 0.5f ? v : 0.0f;
    }
    return 0.0f;
}

SSI_HD inline bool validMode(int32_t mode) {
    return mode == contract::kModeThreshold || mode == contract::kModeStochastic ||
           mode == contract::kModeOfficial;
}

// ---------------------------------------------------------------------------------------
// Convolution geometry (sparse_conv.py).
SSI_HD inline int32_t convOutputSize(int32_t size, int32_t kernel, int32_t stride, int32_t pad,
                                     int32_t dilation) {
    return (size + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

// Input coordinate of kernel tap i of output coordinate o (one axis).
SSI_HD inline int32_t tapCoord(int32_t o, int32_t i, int32_t stride, int32_t pad, int32_t dilation) {
    return o * stride - pad + i * dilation;
}

// Up to four input positions (plane offsets y*w+x) and weights contributing to one tap.
// A weight of 0 marks an unused corner (its offset is 0, a valid address).
struct TapCorners {
    int32_t off[4];
    float wgt[4];
};

// Regular tap: one corner, weight 1 inside the map, 0 in the zero padding.
SSI_HD inline TapCorners regularTap(int32_t iy, int32_t ix, int32_t h, int32_t w) {
    TapCorners t;
    bool ok = iy >= 0 && iy < h && ix >= 0 && ix < w;
    t.off[0] = ok ? iy * w + ix : 0;
    t.wgt[0] = ok ? 1.0f : 0.0f;
    for (int k = 1; k < 4; ++k) {
        t.off[k] = 0;
        t.wgt[k] = 0.0f;
    }
    return t;
}

// Deformable v1 (mmdet 0.6): bilinear sample at (iy + dy, ix + dx) in float32; the sample
// counts only if -1 < y < H and -1 < x < W; corners outside the map read 0.
// Corner order and weights as sparse_conv._gather_taps: (y0,x0) (1-ly)(1-lx), (y0,x0+1)
// (1-ly)lx, (y0+1,x0) ly(1-lx), (y0+1,x0+1) ly lx.
SSI_HD inline TapCorners deformTap(int32_t iy, int32_t ix, float dy, float dx, int32_t h, int32_t w) {
    TapCorners t;
    float py = static_cast<float>(iy) + dy;
    float px = static_cast<float>(ix) + dx;
    bool inside = py > -1.0f && py < static_cast<float>(h) && px > -1.0f && px < static_cast<float>(w);
    float y0f = floorf(py), x0f = floorf(px);
    float ly = py - y0f, lx = px - x0f;
    // Clamp before converting: outside samples may be huge (or NaN: then inside is false).
    int32_t y0 = inside ? static_cast<int32_t>(y0f) : -2;
    int32_t x0 = inside ? static_cast<int32_t>(x0f) : -2;
    float hy = 1.0f - ly, hx = 1.0f - lx;
    int32_t cy[4] = {y0, y0, y0 + 1, y0 + 1};
    int32_t cx[4] = {x0, x0 + 1, x0, x0 + 1};
    float cw[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    for (int k = 0; k < 4; ++k) {
        bool ok = inside && cy[k] >= 0 && cy[k] < h && cx[k] >= 0 && cx[k] < w;
        t.off[k] = ok ? cy[k] * w + cx[k] : 0;
        t.wgt[k] = ok ? cw[k] : 0.0f;
    }
    return t;
}

// The patch value of one channel plane at a tap: sum of corner value * weight, in corner order.
// v[k] must be 0 (or any finite value) where wgt[k] == 0.
SSI_HD inline float tapValue(TapCorners const& t, float v0, float v1, float v2, float v3) {
    return ((v0 * t.wgt[0] + v1 * t.wgt[1]) + v2 * t.wgt[2]) + v3 * t.wgt[3];
}

// Epilogue of SparseConv2d at a sampled position: act(acc + bias).
SSI_HD inline float convEpilogue(float acc, float bias, int32_t relu) {
    float v = acc + bias;
    return (relu && v < 0.0f) ? 0.0f : v;
}

// ---------------------------------------------------------------------------------------
// Gaussian interpolation (interpolation.py, spec section 4).
// W(d) = k/float(2 pi) * exp((-k/2) |d|^2), k = s*s, d in {-3..3}^2, is separable:
// W(dy, dx) = a * g(dy) * g(dx) with a = k/float(2 pi) and g(d) = exp((-k/2) d^2). Every
// backend of these kernels sums in that separable form, rows first (dx = -3..3 in order),
// then columns (dy = -3..3 in order):
//   S_m(q)  = sum_dy g(dy) sum_dx g(dx) m(q+d)
//   S_mf(q) = sum_dy g(dy) sum_dx g(dx) m(q+d) f(q+d)       (f read only where m > 0)
//   R(q)    = (a S_mf) / (a S_m + 1e-5)                      = N(q) / D(q) of the spec
//   out(q)  = act(((residual + bias) + m f) + (1 - m) R)     (the torch op's order of additions)
// This equals the reference's sum_d (W(d) m / D) f up to float32 rounding (W = a g g is
// within an ulp or two of the 2-D exponential), at 14 instead of 49 products per value.
SSI_HD inline float gaussianScale(float sigma) { return (sigma * sigma) / kTwoPi; }

SSI_HD inline float gaussianTap(float sigma, int32_t d) {
    float nk = -(sigma * sigma) * 0.5f;
    return expf(nk * static_cast<float>(d * d));
}

// The 2-D window weight of the reference (for tests and documentation).
SSI_HD inline float gaussianWeight(float sigma, int32_t dy, int32_t dx) {
    float k = sigma * sigma;
    float a = k / kTwoPi;
    float nk = -k * 0.5f;
    return a * expf(nk * static_cast<float>(dy * dy + dx * dx));
}

// One 7-tap pass: sum_d g[d] v[d * stride], d = 0..6 in order, from 0.
SSI_HD inline float windowSum(float const* g, float const* v, int32_t stride) {
    float s = 0.0f;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int d = 0; d < contract::kInterpWindow; ++d) s += g[d] * v[d * stride];
    return s;
}

// m f at a position, 0 where m <= 0 (f is never read there: the caller passes 0).
SSI_HD inline float interpSample(float m, float f) { return m > 0.0f ? f * m : 0.0f; }

// R = N / D from the separable sums.
SSI_HD inline float interpRatio(float a, float sumMF, float sumM) {
    return (a * sumMF) / (a * sumM + contract::kInterpEps);
}

// out(q) = act(((residual + bias) + m f) + (1 - m) R); mf = interpSample(m, f).
SSI_HD inline float interpCombine(float m, float mf, float r, float bias, float residual, bool hasResidual,
                                  int32_t relu) {
    float out = hasResidual ? residual + bias : bias;
    if (m > 0.0f) out = out + mf;
    if (m < 1.0f) out = out + r * (1.0f - m);
    return (relu && out < 0.0f) ? 0.0f : out;
}

}  // namespace math
}  // namespace ssi
