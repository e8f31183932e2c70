// CPU twin of GaussianInterp: the kernel's per-position arithmetic from ssi/math.h.
#include <string>

#include "common.h"
#include "ssi/cpu_twins.h"
#include "ssi/math.h"

extern "C" int32_t ssi_cpu_gaussian_interp(void const* values, void const* mask, void const* bias,
                                           void const* residual, void* out, int32_t dtype, int32_t n, int32_t c,
                                           int32_t h, int32_t w, float sigma, int32_t relu) {
    using namespace ssi;
    constexpr int R = math::kInterpRadius, K = contract::kInterpWindow;
    if (!values || !mask || !bias || !out) return cpu::setError("GaussianInterp: null buffer"), 1;
    if (dtype != cpu::kFloat32 && dtype != cpu::kFloat16) return cpu::setError("GaussianInterp: dtype must be 0 or 1"), 1;
    if (n < 0 || c < 0 || h < 0 || w < 0) return cpu::setError("GaussianInterp: negative size"), 1;
    size_t hw = static_cast<size_t>(h) * w;
    std::vector<float> f = cpu::toFloat(values, n * c * hw, dtype);
    std::vector<float> m = cpu::toFloat(mask, n * hw, dtype);
    std::vector<float> b = cpu::toFloat(bias, c, dtype);
    std::vector<float> res = cpu::toFloat(residual, n * c * hw, dtype);
    std::vector<float> o(n * c * hw);
    float wnd[math::kInterpTaps];
    math::gaussianWindow(sigma, wnd);
    std::vector<float> coef(hw * math::kInterpTaps);
    for (int32_t bn = 0; bn < n; ++bn) {
        float const* mp = m.data() + bn * hw;
        // Per position: D, then the 49 neighbour coefficients W m / D (shared by all channels).
        for (int32_t y = 0; y < h; ++y)
            for (int32_t x = 0; x < w; ++x) {
                float* cq = coef.data() + (static_cast<size_t>(y) * w + x) * math::kInterpTaps;
                float nb[math::kInterpTaps];
                float sum = 0.0f;
                for (int t = 0; t < math::kInterpTaps; ++t) {
                    int yy = y + t / K - R, xx = x + t % K - R;
                    nb[t] = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? mp[yy * w + xx] : 0.0f;
                    sum += wnd[t] * nb[t];
                }
                float d = math::interpNormaliser(sum);
                for (int t = 0; t < math::kInterpTaps; ++t) cq[t] = math::interpCoef(wnd[t], nb[t], d);
            }
        for (int32_t ch = 0; ch < c; ++ch) {
            float const* fp = f.data() + (static_cast<size_t>(bn) * c + ch) * hw;
            float const* rp = residual ? res.data() + (static_cast<size_t>(bn) * c + ch) * hw : nullptr;
            float* op = o.data() + (static_cast<size_t>(bn) * c + ch) * hw;
            for (int32_t y = 0; y < h; ++y)
                for (int32_t x = 0; x < w; ++x) {
                    size_t q = static_cast<size_t>(y) * w + x;
                    float mq = mp[q];
                    float r = 0.0f;
                    if (mq < 1.0f) {
                        float const* cq = coef.data() + q * math::kInterpTaps;
                        for (int t = 0; t < math::kInterpTaps; ++t) {
                            if (cq[t] == 0.0f) continue;  // unsampled neighbour (or outside): never read
                            int yy = y + t / K - R, xx = x + t % K - R;
                            r += cq[t] * fp[yy * w + xx];
                        }
                    }
                    float fq = mq > 0.0f ? fp[q] : 0.0f;
                    op[q] = math::interpCombine(mq, fq, r, b[ch], rp ? rp[q] : 0.0f, rp != nullptr, relu);
                }
        }
    }
    cpu::fromFloat(o, out, dtype);
    return 0;
}
