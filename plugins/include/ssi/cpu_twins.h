// C ABI of the CPU twins of the SSI ops (libssi_cpu.so), for ctypes and host-only tests.
//
// Host buffers, NCHW linear layout; dtype 0 = float32, 1 = float16 (IEEE half bits, as
// numpy/torch store them); every input and output of one call shares the dtype. The
// arithmetic is ssi/math.h, the same code the CUDA kernels run. Each function returns 0, or
// a non-zero code with a one-line message available from ssi_cpu_last_error().
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SSI_CPU_API __declspec(dllexport)
#else
#define SSI_CPU_API __attribute__((visibility("default")))
#endif

// Incremented when a signature below changes.
#define SSI_CPU_ABI_VERSION 1

SSI_CPU_API int32_t ssi_cpu_abi_version(void);
SSI_CPU_API char const* ssi_cpu_last_error(void);

SSI_CPU_API int32_t ssi_cpu_sample_mask(void const* logits, void* mask, int32_t dtype, int32_t n, int32_t h,
                                        int32_t w, int32_t mode, int32_t gridInterval, int32_t seed,
                                        int32_t layer);

// params: n, cin, h, w, cout, kh, kw, ho, wo, strideH, strideW, padH, padW, dilationH, dilationW,
// groups, relu, deformable (18 values; the field order of ssi::SparseConvParams).
// offset may be null (and must be when deformable == 0).
SSI_CPU_API int32_t ssi_cpu_sparse_conv2d(void const* x, void const* weight, void const* bias, void const* mask,
                                          void const* offset, void* y, int32_t dtype, int32_t const* params);

// residual may be null.
SSI_CPU_API int32_t ssi_cpu_gaussian_interp(void const* values, void const* mask, void const* bias,
                                            void const* residual, void* out, int32_t dtype, int32_t n, int32_t c,
                                            int32_t h, int32_t w, float sigma, int32_t relu);

#ifdef __cplusplus
}
#endif
