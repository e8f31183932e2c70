// Helpers shared by the CPU twins: IEEE half conversion, dtype-generic buffers, errors.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ssi {
namespace cpu {

enum : int32_t { kFloat32 = 0, kFloat16 = 1 };

// IEEE binary16 -> binary32 (exact).
inline float halfToFloat(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                ++e;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// binary32 -> binary16, round to nearest even (what torch's .to(float16) does).
inline uint16_t floatToHalf(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN / inf
    if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: overflow to inf
    if (ax < 0x38800000u) {  // result is subnormal or zero
        if (ax < 0x33000000u) return sign;  // < 2^-25: rounds to 0
        uint32_t e = ax >> 23;
        uint32_t man = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;  // 14 + (113 - e)
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) ++half;
        return sign | static_cast<uint16_t>(half);
    }
    uint32_t bits = ax - 0x38000000u;  // rebias exponent 127 -> 15
    uint32_t half = bits >> 13;
    uint32_t rem = bits & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
    return sign | static_cast<uint16_t>(half);
}

// Read `count` values of a float32/float16 buffer as float32 (empty when p is null).
inline std::vector<float> toFloat(void const* p, size_t count, int32_t dtype) {
    std::vector<float> out;
    if (!p) return out;
    out.resize(count);
    if (dtype == kFloat32) {
        std::memcpy(out.data(), p, count * sizeof(float));
    } else {
        auto const* h = static_cast<uint16_t const*>(p);
        for (size_t i = 0; i < count; ++i) out[i] = halfToFloat(h[i]);
    }
    return out;
}

inline void fromFloat(std::vector<float> const& v, void* p, int32_t dtype) {
    if (dtype == kFloat32) {
        std::memcpy(p, v.data(), v.size() * sizeof(float));
    } else {
        auto* h = static_cast<uint16_t*>(p);
        for (size_t i = 0; i < v.size(); ++i) h[i] = floatToHalf(v[i]);
    }
}

// Round float32 values through the I/O dtype (what storing and reloading an fp16 tensor does).
inline float roundToDtype(float v, int32_t dtype) { return dtype == kFloat16 ? halfToFloat(floatToHalf(v)) : v; }

void setError(std::string msg);  // remembered for ssi_cpu_last_error(); returns nothing

}  // namespace cpu
}  // namespace ssi
