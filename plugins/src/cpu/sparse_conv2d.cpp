// CPU twin of SparseConv2d: at each sampled output position, gather the patch (tap-major,
// float32, regular or deformable taps from ssi/math.h), dot it with each output channel's
// weights, apply bias and ReLU; write exact zeros elsewhere.
#include <string>

#include "common.h"
#include "ssi/cpu_twins.h"
#include "ssi/math.h"

extern "C" int32_t ssi_cpu_sparse_conv2d(void const* x, void const* weight, void const* bias, void const* mask,
                                         void const* offset, void* y, int32_t dtype, int32_t const* prm) {
    using namespace ssi;
    if (!x || !weight || !bias || !mask || !y || !prm) return cpu::setError("SparseConv2d: null buffer"), 1;
    if (dtype != cpu::kFloat32 && dtype != cpu::kFloat16) return cpu::setError("SparseConv2d: dtype must be 0 or 1"), 1;
    int32_t const n = prm[0], cin = prm[1], h = prm[2], w = prm[3], cout = prm[4], kh = prm[5], kw = prm[6];
    int32_t const ho = prm[7], wo = prm[8], sh = prm[9], sw = prm[10], ph = prm[11], pw = prm[12];
    int32_t const dh = prm[13], dw = prm[14], groups = prm[15], relu = prm[16];
    bool const deformable = prm[17] != 0;
    if (n < 0 || cin <= 0 || h <= 0 || w <= 0 || cout <= 0 || kh <= 0 || kw <= 0 || sh <= 0 || sw <= 0 || ph < 0 ||
        pw < 0 || dh <= 0 || dw <= 0 || groups <= 0)
        return cpu::setError("SparseConv2d: invalid parameters"), 1;
    if (cin % groups || cout % groups) return cpu::setError("SparseConv2d: channels not divisible by groups"), 1;
    if (ho != math::convOutputSize(h, kh, sh, ph, dh) || wo != math::convOutputSize(w, kw, sw, pw, dw))
        return cpu::setError("SparseConv2d: ho/wo do not match the convolution geometry"), 1;
    if (deformable != (offset != nullptr)) return cpu::setError("SparseConv2d: offset must be given iff deformable"), 1;
    int32_t const cinG = cin / groups, coutG = cout / groups, taps = kh * kw;
    size_t const hw = static_cast<size_t>(h) * w, howo = static_cast<size_t>(ho) * wo;
    std::vector<float> xf = cpu::toFloat(x, n * cin * hw, dtype);
    std::vector<float> wf = cpu::toFloat(weight, static_cast<size_t>(cout) * cinG * taps, dtype);
    std::vector<float> bf = cpu::toFloat(bias, cout, dtype);
    std::vector<float> mf = cpu::toFloat(mask, n * howo, dtype);
    std::vector<float> of = cpu::toFloat(offset, n * 2 * taps * howo, dtype);
    std::vector<float> yf(n * cout * howo, 0.0f);
    std::vector<math::TapCorners> corners(taps);
    std::vector<float> patch(static_cast<size_t>(taps) * cin);  // [tap][cin], like the torch op's patches
    for (int32_t b = 0; b < n; ++b)
        for (int32_t yo = 0; yo < ho; ++yo)
            for (int32_t xo = 0; xo < wo; ++xo) {
                size_t q = static_cast<size_t>(yo) * wo + xo;
                if (!(mf[b * howo + q] > 0.0f)) continue;
                for (int32_t t = 0; t < taps; ++t) {
                    int32_t iy = math::tapCoord(yo, t / kw, sh, ph, dh), ix = math::tapCoord(xo, t % kw, sw, pw, dw);
                    if (deformable) {
                        float dy = of[((static_cast<size_t>(b) * 2 * taps + 2 * t) * howo) + q];
                        float dx = of[((static_cast<size_t>(b) * 2 * taps + 2 * t + 1) * howo) + q];
                        corners[t] = math::deformTap(iy, ix, dy, dx, h, w);
                    } else {
                        corners[t] = math::regularTap(iy, ix, h, w);
                    }
                }
                for (int32_t ci = 0; ci < cin; ++ci) {
                    float const* plane = xf.data() + (static_cast<size_t>(b) * cin + ci) * hw;
                    for (int32_t t = 0; t < taps; ++t) {
                        math::TapCorners const& tc = corners[t];
                        float v[4];
                        for (int k = 0; k < 4; ++k) v[k] = tc.wgt[k] != 0.0f ? plane[tc.off[k]] : 0.0f;
                        patch[static_cast<size_t>(t) * cin + ci] = math::tapValue(tc, v[0], v[1], v[2], v[3]);
                    }
                }
                for (int32_t co = 0; co < cout; ++co) {
                    int32_t g = co / coutG;
                    float const* wr = wf.data() + static_cast<size_t>(co) * cinG * taps;  // [cinG][kh][kw]
                    float acc = 0.0f;
                    for (int32_t t = 0; t < taps; ++t)
                        for (int32_t ci = 0; ci < cinG; ++ci)
                            acc += patch[static_cast<size_t>(t) * cin + g * cinG + ci] * wr[ci * taps + t];
                    yf[(static_cast<size_t>(b) * cout + co) * howo + q] = math::convEpilogue(acc, bf[co], relu);
                }
            }
    cpu::fromFloat(yf, y, dtype);
    return 0;
}
