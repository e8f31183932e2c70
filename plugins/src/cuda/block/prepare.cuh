// The SSIBottleneck's per-launch preparation: x NCHW -> channels-last rows, and the 3x3 weights
// repacked for the row GEMMs ([tap][cin][cout]) with the split-K counters zeroed.
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
// Per-launch preparation, done by extra blocks of the mask taps GEMM's launch (tapsPrepKernel in
// row_gemm.cuh; the jobs by block ranges), so that it costs no launch of its own:
// - the 3x3 convs (DCN offsets, conv2): [cout][cin * 9] (torch) -> [9][cin][cout], the row
//   GEMM's `packed` B, so that a K step of one tap reads rows of consecutive output channels
//   (in torch's layout one tap's channels are 9 elements apart: ~5 L1 wavefronts per load, not
//   1), by 32 x 32 transposes through shared memory (reads and writes coalesced); the DCN
//   offsets' 18 columns as rows of kOffsetLd with zeros after them, so that a row is whole 16-byte
//   vectors (the GEMM's vector and cp.async paths: the same halves in its tiles, the same bits);
// - the split-K tile counters of the later GEMMs zeroed (the workspace may hold anything between
//   launches; the taps GEMM itself uses none: its split sums are added by their reader).
// Nothing in the taps GEMM's launch reads what these jobs write.
constexpr int kTapCols = 18;
constexpr int kOffsetLd = 24;  // kTapCols rounded up to 8 halves

template <typename T>
struct PrepArgs {
    T const *offsetW, *conv2W;
    T *offsets, *conv2;
    int32_t* counters;
    int32_t cin, planes, nCounters;
    int32_t offTilesX, offBlocks, convTilesX, convBlocks, counterBlocks;  // offBlocks 0: no DCN
    int32_t blocks() const { return offBlocks + convBlocks + counterBlocks; }
};

// One 32 x 32 tile of [cout][cin * 9] -> [9][cin][ld]: columns cout..ld - 1 (ld <= the tiles'
// 32-column span) written as zeros; kN threads, as 32 x kN / 32.
template <int kN, typename T>
__device__ __forceinline__ void packTile(T const* __restrict__ w, T* __restrict__ out, int32_t cout, int32_t ld,
                                         int32_t cin, int32_t tile, int32_t tilesX, T (*sm)[33]) {
    static_assert(kN % 32 == 0, "whole rows of 32 threads");
    constexpr int kRows = kN / 32;
    int64_t const k = static_cast<int64_t>(cin) * 9;  // torch's column index: c * 9 + tap
    int64_t const k0 = static_cast<int64_t>(tile % tilesX) * 32;
    int32_t const co0 = tile / tilesX * 32;
    int const tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    for (int i = ty; i < 32; i += kRows) {
        int32_t const co = co0 + i;
        int64_t const kk = k0 + tx;
        if (co < cout && kk < k) sm[i][tx] = w[static_cast<size_t>(co) * k + kk];
    }
    __syncthreads();
    for (int i = ty; i < 32; i += kRows) {
        int64_t const kk = k0 + i;
        int32_t const co = co0 + tx;
        if (co >= ld || kk >= k) continue;
        int64_t const c = kk / 9, tap = kk - c * 9;
        out[(static_cast<size_t>(tap) * cin + c) * ld + co] = co < cout ? sm[tx][i] : T(0.0f);
    }
}

// Preparation job b (0 <= b < a.blocks()) on a block of kN threads.
template <int kN, typename T>
__device__ __forceinline__ void prepJob(PrepArgs<T> const& a, int32_t b, T (*tile)[33]) {
    if (b < a.offBlocks) return packTile<kN>(a.offsetW, a.offsets, kTapCols, kOffsetLd, a.cin, b, a.offTilesX, tile);
    b -= a.offBlocks;
    if (b < a.convBlocks) return packTile<kN>(a.conv2W, a.conv2, a.planes, a.planes, a.planes, b, a.convTilesX, tile);
    b -= a.convBlocks;
    int32_t const e = b * kN + static_cast<int32_t>(threadIdx.x);
    if (e < a.nCounters) a.counters[e] = 0;
}

}  // namespace
}  // namespace ssi
