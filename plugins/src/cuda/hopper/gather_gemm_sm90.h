// Hopper (sm_90a) row GEMM of the SSI bottleneck: cp.async row gathers + warpgroup MMA (wgmma),
// modelled on CUTLASS example 52 (built against the nvidia-cutlass wheel's headers; this header
// needs none of them).
//
//   d[m, :] = act(A[m, :] . W^T + bias)   for m < min(*count, maxM)
//
// A[m, :] = a[gatherRows[m] * lda + (0..k)] (gathered rows of an NHWC tensor), or
// a[m * lda + (0..k)] when gatherRows is null. fp16 operands, fp32 accumulation, bias added in
// fp32, act = ReLU when relu != 0 (v < 0 -> 0, as math::convEpilogue), one rounding to fp16.
// W is [n, k] row-major (torch layout), d is [maxM, n] row-major (ldd = n).
//
// Contract:
// - *count is read on the device; the grid is sized for maxM and every CTA whose 128-row tile
//   starts at or after *count returns at once. Rows m >= *count of d are not written, no row
//   of A is loaded for them, and gatherRows is read only at m < min(*count, maxM) (each entry
//   must then be a valid row of a). *count may exceed maxM (clamped) or be <= 0 (no work).
// - No host synchronisation, no allocation, no workspace: safe inside CUDA-graph capture.
// - gatherGemmSm90Prepare() must have run once on the device (outside any capture, e.g. when
//   the plugin is created, never in enqueue): it raises the kernels' dynamic shared memory limit
//   (about 225 KB). Without it the launch fails with cudaErrorInvalidValue.
// - The kernels exist only as sm_90a SASS: they run on compute capability 9.0 devices only
//   (H100/H200), not on sm_100 or later; gatherGemmSm90Prepare() does nothing there.
#pragma once

#include <cstdint>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace ssi {

// Shapes the kernel takes: n > 0, k > 0, both multiples of 8 (16-byte cp.async rows of A and W,
// and the paired fp16 stores of d). launchGatherGemmSm90 also needs a, w and d 16-byte aligned
// and lda a multiple of 8 with lda >= k (it answers cudaErrorInvalidValue otherwise).
bool gatherGemmSm90Supported(int32_t n, int32_t k);

// One-time setup on the current device: cudaFuncSetAttribute(MaxDynamicSharedMemorySize) for
// both kernels (gathered and plain rows). Call it outside graph capture, once per device
// (repeating it is harmless). cudaSuccess without doing anything on a device that is not
// compute capability 9.0 (the kernels cannot run there).
cudaError_t gatherGemmSm90Prepare();

// Enqueues one launch on `stream`; returns the launch's error (no synchronisation).
// maxM <= 0: nothing is launched.
cudaError_t launchGatherGemmSm90(__half const* a, int32_t lda, int32_t const* gatherRows /*nullable: plain rows*/,
                                 int32_t const* count /*device*/, int32_t maxM, int32_t n, int32_t k,
                                 __half const* w /*[n,k]*/, __half const* bias /*[n] nullable*/, int32_t relu,
                                 __half* d /*[maxM, n] row-major*/, cudaStream_t stream);

}  // namespace ssi
