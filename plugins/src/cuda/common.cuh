// Device helpers shared by the SSI CUDA kernels: dtype-generic loads and stores, dtype
// dispatch, and the on-device compaction of sampled positions (index list + count).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "ssi/kernels.h"
#include "ssi/math.h"

#ifdef SSI_CUDA_EMULATION
// Host emulation of the kernels for tests without a GPU (see emulation/emulation.h).
#include "emulation/emulation.h"
#define SSI_LAUNCH(kernel, grid, block, stream, ...) ::ssi::emu::launch(kernel, grid, block, __VA_ARGS__)
#else
// kernel: a __global__ function or a pointer to one (template kernels through a pointer).
#define SSI_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

namespace ssi {
namespace cuda {

// Loads convert to float32, stores round from float32 (round to nearest even for fp16).
__device__ __forceinline__ float ld(float const* p, size_t i) { return __ldg(p + i); }
__device__ __forceinline__ float ld(__half const* p, size_t i) { return __half2float(__ldg(p + i)); }
__device__ __forceinline__ void st(float* p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__half* p, size_t i, float v) { p[i] = __float2half_rn(v); }

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__half v) { return __half2float(v); }

// p itself, as a value the compiler cannot see through, so that p + i stays one wide add per
// load: left alone it re-derived p from the kernel parameter at every load of a loop (the NHWC row
// pass's SASS: a constant reload and four integer instructions for each of its 22 loads).
template <typename T>
__device__ __forceinline__ T* opaque(T* p) {
#if !defined(SSI_CUDA_EMULATION) && defined(__CUDA_ARCH__)
    auto v = reinterpret_cast<uintptr_t>(p);
    asm("" : "+l"(v));
    p = reinterpret_cast<T*>(v);
#endif
    return p;
}

// A 16-byte copy from global to shared memory that does not wait for its data (cp.async on
// sm_80 and later; a load and a store before); copyAsyncWait() waits for this thread's copies,
// copyAsyncCommit() closes a group of them and copyAsyncWaitGroup<N>() waits until at most N
// groups are in flight. Both addresses must be 16-byte aligned.
__device__ __forceinline__ void copyAsync16(void* smem, void const* gmem) {
#if defined(SSI_CUDA_EMULATION)
    emu::asyncCopy16(smem, gmem, true);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned const s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
#else
    *static_cast<uint4*>(smem) = __ldg(static_cast<uint4 const*>(gmem));
#endif
}

// The same, or 16 zero bytes where !valid (nothing is read then; gmem is still an aligned address).
__device__ __forceinline__ void copyAsync16OrZero(void* smem, void const* gmem, bool valid) {
#if defined(SSI_CUDA_EMULATION)
    emu::asyncCopy16(smem, gmem, valid);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned const s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16u : 0u)
                 : "memory");
#else
    *static_cast<uint4*>(smem) = valid ? __ldg(static_cast<uint4 const*>(gmem)) : make_uint4(0u, 0u, 0u, 0u);
#endif
}

__device__ __forceinline__ void copyAsyncCommit() {
#if defined(SSI_CUDA_EMULATION)
    emu::asyncCommit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void copyAsyncWaitGroup() {
#if defined(SSI_CUDA_EMULATION)
    emu::asyncWaitGroup(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Programmatic dependent launch (sm_90 on): wait until the previous kernel in the stream has
// completed and its memory is visible, then let the next kernel's blocks be scheduled while this
// one runs. Called first thing by a chained kernel (before any global load or store); without
// the launch attribute, before sm_90 and in the emulation it does nothing.
__device__ __forceinline__ void chainStart() {
#if !defined(SSI_CUDA_EMULATION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

#ifndef SSI_CUDA_EMULATION
// A launch that may be chained to the previous kernel by programmatic dependent launch (the
// kernel must begin with chainStart()); errors are left for cudaGetLastError, as with <<<>>>.
template <typename... KArgs, typename... Args>
void launchChained(bool chained, void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t stream,
                   Args... args) {
    if (!chained) {
        kernel<<<grid, block, 0, stream>>>(static_cast<KArgs>(args)...);
        return;
    }
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    (void)cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}
#endif

__device__ __forceinline__ void copyAsyncWait() {
#if defined(SSI_CUDA_EMULATION)
    emu::asyncWaitAll();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

inline unsigned ceilDiv(size_t a, size_t b) { return static_cast<unsigned>((a + b - 1) / b); }

// Split-K count of a GEMM with `steps` K steps over `tiles` output tiles, from the parameters
// only (a workspace size cannot depend on a device-side count): about 264 blocks wanted with a
// quarter of them live (2 per SM of a 132-SM GPU at 25 % density), at least 16 K steps per split,
// at most maxSplits; no split below 32 steps.
inline int32_t splitKCount(int64_t steps, int64_t tiles, int64_t maxSplits) {
    if (steps < 32 || tiles <= 0) return 1;
    int64_t const want = 264 * 4 / tiles;
    int64_t const cap = steps / 16 < maxSplits ? steps / 16 : maxSplits;
    return static_cast<int32_t>(want < cap ? (want > 1 ? want : 1) : cap);
}

// Calls f(float{}) or f(__half{}) for the op's dtype.
template <typename F>
cudaError_t dispatch(DType dtype, F&& f) {
    switch (dtype) {
    case DType::kFLOAT32: return f(float{});
    case DType::kFLOAT16: return f(__half{});
    }
    return cudaErrorInvalidValue;
}

// The error of the launches just made (not a synchronisation: graph-capture safe).
inline cudaError_t launchStatus() {
#ifdef SSI_CUDA_EMULATION
    return ::ssi::emu::takeLaunchError();
#else
    return cudaGetLastError();
#endif
}

// Stream-ordered memset (a memset node under graph capture).
inline cudaError_t memsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
#ifdef SSI_CUDA_EMULATION
    (void)stream;
    std::memset(p, value, bytes);
    return cudaSuccess;
#else
    return cudaMemsetAsync(p, value, bytes, stream);
#endif
}

// ---------------------------------------------------------------------------------------
// Compaction workspace: [count: int32, padded to 256 B][index: int32 x positions].
constexpr size_t kCountBytes = 256;

inline size_t compactWorkspaceSize(size_t positions) {
    return (kCountBytes + positions * sizeof(int32_t) + 255) / 256 * 256;
}

struct CompactList {
    int32_t* count;  // number of sampled positions (written on the device)
    int32_t* index;  // their linear indices over N*H*W (ordered inside each block of 256)
};

inline CompactList compactList(void* workspace) {
    auto* base = static_cast<unsigned char*>(workspace);
    return {reinterpret_cast<int32_t*>(base), reinterpret_cast<int32_t*>(base + kCountBytes)};
}

constexpr int kCompactThreads = 256;
constexpr int kZeroChannelsPerBlock = 64;  // zero-fill split over blockIdx.y (wide layers, small maps)

// One thread per position of mask [N,1,H,W]. Blocks with blockIdx.y == 0 append the positions
// with mask > 0 to the list (one atomic per block); at the other positions, the blocks set
// channels [blockIdx.y * 64, +64) of `zeroOut` ([N,channels,H,W], may be null) to exactly 0.
// *count must be 0 before the launch.
template <typename T>
__global__ void __launch_bounds__(kCompactThreads)
    compactKernel(T const* __restrict__ mask, int32_t total, int32_t hw, int32_t channels, T* __restrict__ zeroOut,
                  CompactList list) {
    __shared__ int32_t warpBase[kCompactThreads / 32];
    __shared__ int32_t blockBase;
    int32_t const pos = static_cast<int32_t>(blockIdx.x) * kCompactThreads + static_cast<int32_t>(threadIdx.x);
    bool const in = pos < total;
    bool const keep = in && ld(mask, pos) > 0.0f;  // NaN counts as unsampled, as in torch
    if (blockIdx.y == 0) {  // uniform over the block
        unsigned const ballot = __ballot_sync(0xffffffffu, keep);
        int const lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        if (lane == 0) warpBase[warp] = __popc(ballot);
        __syncthreads();
        if (threadIdx.x == 0) {
            int32_t sum = 0;
            for (int i = 0; i < kCompactThreads / 32; ++i) {
                int32_t c = warpBase[i];
                warpBase[i] = sum;
                sum += c;
            }
            blockBase = sum ? atomicAdd(list.count, sum) : 0;
        }
        __syncthreads();
        if (keep) list.index[blockBase + warpBase[warp] + __popc(ballot & ((1u << lane) - 1u))] = pos;
    }
    if (in && !keep && zeroOut) {
        int32_t const n = pos / hw, q = pos - n * hw;
        int32_t const c0 = static_cast<int32_t>(blockIdx.y) * kZeroChannelsPerBlock;
        int32_t const c1 = min(c0 + kZeroChannelsPerBlock, channels);
        T* p = zeroOut + (static_cast<size_t>(n) * channels + c0) * hw + q;
        T const zero = T(0.0f);
        for (int32_t c = c0; c < c1; ++c, p += hw) *p = zero;
    }
}

}  // namespace cuda
}  // namespace ssi
