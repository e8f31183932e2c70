// CPU twin of SampleMask: ssi::math::sampleMaskValue at every position.
#include "common.h"
#include "ssi/cpu_twins.h"
#include "ssi/math.h"

extern "C" int32_t ssi_cpu_sample_mask(void const* logits, void* mask, int32_t dtype, int32_t n, int32_t h,
                                       int32_t w, int32_t mode, int32_t gridInterval, int32_t seed,
                                       int32_t layer) {
    using namespace ssi;
    if (!logits || !mask) return cpu::setError("SampleMask: null buffer"), 1;
    if (dtype != cpu::kFloat32 && dtype != cpu::kFloat16) return cpu::setError("SampleMask: dtype must be 0 or 1"), 1;
    if (n < 0 || h < 0 || w < 0) return cpu::setError("SampleMask: negative size"), 1;
    if (!math::validMode(mode)) return cpu::setError("SampleMask: unknown mode " + std::to_string(mode)), 1;
    size_t count = static_cast<size_t>(n) * h * w;
    std::vector<float> l = cpu::toFloat(logits, count, dtype);
    std::vector<float> m(count);
    uint32_t key = math::layerKey(seed, layer);
    for (int32_t b = 0; b < n; ++b)
        for (int32_t y = 0; y < h; ++y)
            for (int32_t x = 0; x < w; ++x) {
                size_t i = (static_cast<size_t>(b) * h + y) * w + x;
                m[i] = math::sampleMaskValue(l[i], mode, gridInterval, key, b, y, x);
            }
    cpu::fromFloat(m, mask, dtype);
    return 0;
}
