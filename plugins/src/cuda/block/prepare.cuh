// The SSIBottleneck's per-launch preparation: x NCHW -> channels-last rows, and the weights
// repacked for the row GEMMs (the mask convs' 18-row matrix, the 3x3 weights [tap][cin][cout]).
// Part of ssi_bottleneck.cu's translation unit (included there only): its kernels live in that
// file's anonymous namespace.
#pragma once

#include "launch.cuh"

namespace ssi {
namespace {

// Layout conversion: x [N, C, HW] -> rows [N*HW, C], 32x32 tiles through shared memory.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    toRowsKernel(T const* __restrict__ x, T* __restrict__ rows, int32_t c, int32_t hw) {
    cuda::chainStart();
    __shared__ float tile[32][33];
    int const n = blockIdx.z;
    int const q0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    int const tx = threadIdx.x % 32, ty = threadIdx.x / 32;  // 32 x 8
    for (int i = ty; i < 32; i += 8) {
        int const cc = c0 + i, q = q0 + tx;
        tile[i][tx] = (cc < c && q < hw) ? cuda::ld(x, (static_cast<size_t>(n) * c + cc) * hw + q) : 0.0f;
    }
    __syncthreads();
    for (int i = ty; i < 32; i += 8) {
        int const q = q0 + i, cc = c0 + tx;
        if (cc < c && q < hw) cuda::st(rows, (static_cast<size_t>(n) * hw + q) * c + cc, tile[tx][i]);
    }
}

// ---------------------------------------------------------------------------------------
// Per-launch preparation, in one launch (blocks take the jobs by blockIdx.x ranges):
// - the mask taps taps[q, 2t + k] = sum_c x[q, c] Wk[c, t] are a row GEMM (rowGemmKernel:
//   coalesced row loads, tensor cores in fp16) with the 18-row matrix w[2t + k][c] = Wk[c, t];
// - the 3x3 convs (DCN offsets, conv2): [cout][cin * 9] (torch) -> [9][cin][cout], the row
//   GEMM's `packed` B, so that a K step of one tap reads rows of consecutive output channels
//   (in torch's layout one tap's channels are 9 elements apart: ~5 L1 wavefronts per load, not
//   1), by 32 x 32 transposes through shared memory (reads and writes coalesced); the DCN
//   offsets' 18 columns as rows of kOffsetLd with zeros after them, so that a row is whole 16-byte
//   vectors (the GEMM's vector and cp.async paths: the same halves in its tiles, the same bits);
// - the split-K tile counters zeroed (the workspace may hold anything between launches).
constexpr int kTapCols = 18;
constexpr int kOffsetLd = 24;  // kTapCols rounded up to 8 halves

template <typename T>
struct PrepArgs {
    T const *mask1W, *mask2W, *offsetW, *conv2W;
    T *taps, *offsets, *conv2;
    int32_t* counters;
    int32_t cin, planes, nCounters;
    int32_t tapBlocks, offTilesX, offBlocks, convTilesX, convBlocks;  // offBlocks 0: no DCN
};

// One 32 x 32 tile of [cout][cin * 9] -> [9][cin][ld]: columns cout..ld - 1 (ld <= the tiles'
// 32-column span) written as zeros.
template <typename T>
__device__ __forceinline__ void packTile(T const* __restrict__ w, T* __restrict__ out, int32_t cout, int32_t ld,
                                         int32_t cin, int32_t tile, int32_t tilesX, T (*sm)[33]) {
    int64_t const k = static_cast<int64_t>(cin) * 9;  // torch's column index: c * 9 + tap
    int64_t const k0 = static_cast<int64_t>(tile % tilesX) * 32;
    int32_t const co0 = tile / tilesX * 32;
    int const tx = threadIdx.x % 32, ty = threadIdx.x / 32;  // 32 x 8
    for (int i = ty; i < 32; i += 8) {
        int32_t const co = co0 + i;
        int64_t const kk = k0 + tx;
        if (co < cout && kk < k) sm[i][tx] = w[static_cast<size_t>(co) * k + kk];
    }
    __syncthreads();
    for (int i = ty; i < 32; i += 8) {
        int64_t const kk = k0 + i;
        int32_t const co = co0 + tx;
        if (co >= ld || kk >= k) continue;
        int64_t const c = kk / 9, tap = kk - c * 9;
        out[(static_cast<size_t>(tap) * cin + c) * ld + co] = co < cout ? sm[tx][i] : T(0.0f);
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) prepKernel(PrepArgs<T> a) {
    cuda::chainStart();
    __shared__ T tile[32][33];
    int32_t b = static_cast<int32_t>(blockIdx.x);
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    if (b < a.tapBlocks) {
        int32_t const e = b * kThreads + tid;
        if (e >= kTapCols * a.cin) return;
        int32_t const j = e / a.cin, c = e - j * a.cin;
        a.taps[e] = (j % 2 ? a.mask2W : a.mask1W)[static_cast<size_t>(c) * 9 + j / 2];
        return;
    }
    b -= a.tapBlocks;
    if (b < a.offBlocks) return packTile(a.offsetW, a.offsets, kTapCols, kOffsetLd, a.cin, b, a.offTilesX, tile);
    b -= a.offBlocks;
    if (b < a.convBlocks) return packTile(a.conv2W, a.conv2, a.planes, a.planes, a.planes, b, a.convTilesX, tile);
    b -= a.convBlocks;
    int32_t const e = b * kThreads + tid;
    if (e < a.nCounters) a.counters[e] = 0;
}

}  // namespace
}  // namespace ssi
