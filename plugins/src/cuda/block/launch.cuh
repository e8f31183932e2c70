// What the fused SSIBottleneck's kernels share: the launch (chained by programmatic dependent
// launch when the block asks for it), the block size, dtype rounding.
// Part of ssi_bottleneck.cu's translation unit (included there only): its kernels live in that
// file's anonymous namespace.
#pragma once

#include <type_traits>

#include "../common.cuh"

namespace ssi {
namespace {

// This launch call's choice of programmatic dependent launch (bottleneckPdl(), set by
// launchSSIBottleneck); every kernel of the block begins with cuda::chainStart().
thread_local bool tChained = false;
#ifdef SSI_CUDA_EMULATION
#define SSI_BLOCK_LAUNCH(kernel, grid, block, stream, ...) SSI_LAUNCH(kernel, grid, block, stream, __VA_ARGS__)
#else
#define SSI_BLOCK_LAUNCH(kernel, grid, block, stream, ...) \
    ::ssi::cuda::launchChained(tChained, kernel, dim3(grid), dim3(block), stream, __VA_ARGS__)
#endif

constexpr int kThreads = 256;
constexpr int kTileCount = 1024;  // positions per partition tile (256 threads x 4)

inline size_t align256(size_t b) { return (b + 255) / 256 * 256; }

#define SSI_TRY(...)                                    \
    do {                                                \
        cudaError_t const e_ = (__VA_ARGS__);           \
        if (e_ != cudaSuccess) return e_;               \
    } while (0)

template <typename T>
__device__ __forceinline__ float roundTo(float v) {
    if constexpr (std::is_same_v<T, __half>) return __half2float(__float2half_rn(v));
    else return v;
}

}  // namespace
}  // namespace ssi
