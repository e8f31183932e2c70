// SampleMask: mask[N,1,H,W] from logits, one thread per position (ssi::math::sampleMaskValue).
#include "common.cuh"

namespace ssi {
namespace {

template <typename T>
__global__ void __launch_bounds__(256)
    sampleMaskKernel(T const* __restrict__ logits, T* __restrict__ mask, int32_t h, int32_t w, int64_t total,
                     int32_t mode, int32_t gridInterval, uint32_t key) {
    int64_t const i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int32_t const x = static_cast<int32_t>(i % w);
    int64_t const t = i / w;
    int32_t const y = static_cast<int32_t>(t % h);
    int32_t const n = static_cast<int32_t>(t / h);
    cuda::st(mask, i, math::sampleMaskValue(cuda::ld(logits, i), mode, gridInterval, key, n, y, x));
}

}  // namespace

size_t sampleMaskWorkspaceSize(SampleMaskParams const&, DType) { return 0; }

cudaError_t launchSampleMask(void const* logits, void* mask, DType dtype, SampleMaskParams const& p, void*,
                             cudaStream_t stream) {
    if (p.n < 0 || p.h < 0 || p.w < 0 || !math::validMode(p.mode) || p.gridInterval < 0) return cudaErrorInvalidValue;
    int64_t const total = static_cast<int64_t>(p.n) * p.h * p.w;
    if (total == 0) return cudaSuccess;
    if (!logits || !mask) return cudaErrorInvalidValue;
    uint32_t const key = math::layerKey(p.seed, p.layer);
    return cuda::dispatch(dtype, [&](auto tag) {
        using T = decltype(tag);
        auto* kernel = &sampleMaskKernel<T>;
        SSI_LAUNCH(kernel, cuda::ceilDiv(total, 256), 256, stream, static_cast<T const*>(logits), static_cast<T*>(mask),
                   p.h, p.w, total, p.mode, p.gridInterval, key);
        return cuda::launchStatus();
    });
}

}  // namespace ssi
