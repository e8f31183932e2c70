// CPU twin of GaussianInterp: the kernel's separable sums and combination from ssi/math.h.
#include <string>

#include "common.h"
#include "ssi/cpu_twins.h"
#include "ssi/math.h"

namespace {
constexpr int kR = ssi::math::kInterpRadius, kWin = ssi::contract::kInterpWindow;

// Separable 7x7 sums of a zero-padded plane: rows (dx) first, then columns (dy), as the kernel.
void separableSums(float const* src, int32_t h, int32_t w, float const* g, std::vector<float>& rowPass,
                   std::vector<float>& dst) {
    std::vector<float> padded(static_cast<size_t>(w) + 2 * kR);
    for (int32_t y = 0; y < h; ++y) {
        std::fill(padded.begin(), padded.end(), 0.0f);
        for (int32_t x = 0; x < w; ++x) padded[x + kR] = src[static_cast<size_t>(y) * w + x];
        for (int32_t x = 0; x < w; ++x) rowPass[static_cast<size_t>(y) * w + x] = ssi::math::windowSum(g, &padded[x], 1);
    }
    float col[kWin];
    for (int32_t y = 0; y < h; ++y)
        for (int32_t x = 0; x < w; ++x) {
            for (int d = 0; d < kWin; ++d) {
                int32_t yy = y + d - kR;
                col[d] = (yy >= 0 && yy < h) ? rowPass[static_cast<size_t>(yy) * w + x] : 0.0f;
            }
            dst[static_cast<size_t>(y) * w + x] = ssi::math::windowSum(g, col, 1);
        }
}
}  // namespace

extern "C" int32_t ssi_cpu_gaussian_interp(void const* values, void const* mask, void const* bias,
                                           void const* residual, void* out, int32_t dtype, int32_t n, int32_t c,
                                           int32_t h, int32_t w, float sigma, int32_t relu) {
    using namespace ssi;
    if (!values || !mask || !bias || !out) return cpu::setError("GaussianInterp: null buffer"), 1;
    if (dtype != cpu::kFloat32 && dtype != cpu::kFloat16) return cpu::setError("GaussianInterp: dtype must be 0 or 1"), 1;
    if (n < 0 || c < 0 || h < 0 || w < 0) return cpu::setError("GaussianInterp: negative size"), 1;
    size_t const hw = static_cast<size_t>(h) * w;
    std::vector<float> f = cpu::toFloat(values, n * c * hw, dtype);
    std::vector<float> m = cpu::toFloat(mask, n * hw, dtype);
    std::vector<float> b = cpu::toFloat(bias, c, dtype);
    std::vector<float> res = cpu::toFloat(residual, n * c * hw, dtype);
    std::vector<float> o(n * c * hw);
    float g[kWin];
    for (int d = 0; d < kWin; ++d) g[d] = math::gaussianTap(sigma, d - kR);
    float const a = math::gaussianScale(sigma);
    std::vector<float> rowPass(hw), sumM(hw), sumMF(hw), mf(hw);
    for (int32_t bn = 0; bn < n; ++bn) {
        float const* mp = m.data() + bn * hw;
        separableSums(mp, h, w, g, rowPass, sumM);
        for (int32_t ch = 0; ch < c; ++ch) {
            size_t const plane = (static_cast<size_t>(bn) * c + ch) * hw;
            for (size_t q = 0; q < hw; ++q) mf[q] = math::interpSample(mp[q], mp[q] > 0.0f ? f[plane + q] : 0.0f);
            separableSums(mf.data(), h, w, g, rowPass, sumMF);
            for (size_t q = 0; q < hw; ++q) {
                float r = math::interpRatio(a, sumMF[q], sumM[q]);
                o[plane + q] = math::interpCombine(mp[q], mf[q], r, b[ch], residual ? res[plane + q] : 0.0f,
                                                   residual != nullptr, relu);
            }
        }
    }
    cpu::fromFloat(o, out, dtype);
    return 0;
}
