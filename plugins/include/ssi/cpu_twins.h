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
#define SSI_CPU_ABI_VERSION 4

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

// --- Kernels of the SSIBottleneck op (src/cpu/block.cpp): float32 only, channels-last rows ---
// Position q = (b*H + y)*W + x; dense rows are [N*H*W, C], compact rows [count, C] in the
// positions' raster order. threads: OpenMP threads (<= 0: the OpenMP default; the library
// runs serially when built without OpenMP). On x86-64 the kernels run as AVX2 code where the
// CPU has it (the same bits as the baseline build; SSI_CPU_BLOCK_ISA=generic forces the latter).

// GaussianInterp of compact rows into dense rows out [N*H*W, C]:
//   out(q) = act(((residual + bias) + m f) + (1 - m) (a S_mf) / (a S_m + 1e-5))
// with ssi/math.h's separable sums over the 7x7 window (rows first, then columns, in order).
// index [N*H*W]: the row of q in rows where mask > 0 (-1 elsewhere, not read); mask
// [N*H*W] float32; bias [C] or null (zeros); residual [N*H*W, C] or null. out may be the
// residual buffer itself (each element is read before it is written), no other input.
SSI_CPU_API int32_t ssi_cpu_block_interp_rows(float const* rows, int32_t const* index, float const* mask,
                                              int32_t n, int32_t h, int32_t w, int32_t c, float sigma,
                                              float const* bias, float const* residual, int32_t relu,
                                              float* out, int32_t threads);

// The same, with the number of rows (count; an index at a sampled position must be below it,
// -1: unchecked beyond N*H*W), and the next block's mask taps of its output rows: tapOut
// [N*H*W, tapN] = out times tapW^T (tapW [tapN, C]), each row in ssi_cpu_block_small_gemm's
// order (the same bits), computed while the row is hot. tapW, tapOut null and tapN 0: none.
SSI_CPU_API int32_t ssi_cpu_block_interp_rows_taps(float const* rows, int64_t count, int32_t const* index,
                                                   float const* mask, int32_t n, int32_t h, int32_t w, int32_t c,
                                                   float sigma, float const* bias, float const* residual,
                                                   int32_t relu, float* out, float const* tapW, int32_t tapN,
                                                   float* tapOut, int32_t threads);

// The interpolation of conv1's rows (no bias, residual or ReLU) at just the positions that a
// 3x3 convolution (padding 1) at stride reads for the sampled outputs of its mask mask2
// [N*Ho*Wo] (Ho = ceil(H / stride)): conv2's input, where the patches3x3 of mask2's positions
// read it; those positions of out get ssi_cpu_block_interp_rows' bits, the others are not
// written. For a regular conv2 only (a deformable one reads anywhere).
SSI_CPU_API int32_t ssi_cpu_block_interp_rows_for_conv(float const* rows, int64_t count, int32_t const* index,
                                                       float const* mask, int32_t n, int32_t h, int32_t w, int32_t c,
                                                       float sigma, float const* mask2, int32_t ho, int32_t wo,
                                                       int32_t stride, float* out, int32_t threads);

// 3x3 patches (padding 1, zeros outside the map) of dense rows src [N*H*W, C] at output
// positions [p] (flat over N*Ho*Wo): out [p, 9*C], tap t = 3i + j reads input
// (yo*stride - 1 + i, xo*stride - 1 + j). offsets [p, 18] (dy, dx per tap) or null:
// deformable v1 bilinear taps (ssi::math::deformTap / tapValue; corners of weight 0 read 0).
SSI_CPU_API int32_t ssi_cpu_block_patches3x3(float const* src, int32_t n, int32_t h, int32_t w, int32_t c,
                                             int64_t const* positions, int64_t p, int32_t ho, int32_t wo,
                                             int32_t stride, float const* offsets, float* out, int32_t threads);

// Compaction of a mask [numel] (float32): the stable partition of the positions, sampled
// (mask > 0) first, then the others, each in raster order, into perm [numel]; index [numel]
// the row of a sampled position in the compact rows (its place in perm), -1 elsewhere.
// Returns the number of sampled positions, or -1 on a null buffer / negative numel.
SSI_CPU_API int64_t ssi_cpu_block_compact(float const* mask, int64_t numel, int64_t* perm, int32_t* index);

// out [m, n] = x [m, k] times w, with w given transposed as wT [n, k]: a GEMM for few
// outputs n (the mask convs' tap columns), where general BLAS kernels are slow. One fixed
// order of the sums per element (16 lane sums over k, then pairwise), the same in every
// build and for any m.
SSI_CPU_API int32_t ssi_cpu_block_small_gemm(float const* x, int64_t m, int32_t k, float const* wT, int32_t n,
                                             float* out, int32_t threads);

// The k-th largest value (1 <= k <= hw) of each of n rows [n, hw] into out [n]; NaN counts
// as larger than every number (as torch.topk orders it).
SSI_CPU_API int32_t ssi_cpu_block_kth_largest(float const* values, int64_t n, int64_t hw, int64_t k, float* out);

// Output k of 3x3 convolutions with padding 1 at `stride`, from every tap's partial products:
// taps [N*H*W, 9*K] (column t*K + k: tap t = 3i + j of output k at input position q);
// out [N*Ho*Wo] = bias + taps of tap 0 + ... + tap 8 (in tap order; taps outside the map
// skipped). The same additions, in the same order, as ops.block_kernels.sum_taps.
SSI_CPU_API int32_t ssi_cpu_block_sum_taps(float const* taps, int32_t n, int32_t h, int32_t w, int32_t kOut,
                                           int32_t k, int32_t stride, float bias, float* out, int32_t threads);

// Both masks of an SSIBottleneck in threshold mode (also a forced density's) from the mask taps
// [N*H*W, 9*kOut] (outputs 0 and 1 used): map 0 at stride 1 [N*H*W], map 1 at `stride`
// [N*Ho*Wo]. For each: logits = sum_taps + bias, minus the k-th largest of its image when the
// forced count k > 0; mask = logits >= 0 (1 or 0), 1 at the grid prior (grid > 0); its
// compaction (perm, index as ssi_cpu_block_compact; counts[j] the sampled count).
SSI_CPU_API int32_t ssi_cpu_block_threshold_masks(float const* taps, int32_t n, int32_t h, int32_t w, int32_t kOut,
                                                  int32_t stride, float bias1, float bias2, int64_t k1, int64_t k2,
                                                  int32_t grid, float* logits1, float* logits2, float* m1, float* m2,
                                                  int64_t* perm1, int32_t* index1, int64_t* perm2, int32_t* index2,
                                                  int64_t* counts, int32_t threads);

#ifdef __cplusplus
}
#endif
