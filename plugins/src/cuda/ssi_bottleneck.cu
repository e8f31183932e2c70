// SSIBottleneck on the GPU, the portable path (sm_75 and newer: SIMT and WMMA/mma.sync): one SSI
// bottleneck as a chain of kernels on compact channels-last rows (see ssi/kernels.h for the
// steps, ssi_deploy/ops/bottleneck.py for the reference, src/cpu/block.cpp for the CPU twin).
//
// Kernels, in launch order (every grid sized for the maximum, counts read on the device):
//   toRowsKernel           x NCHW -> x rows [N*H*W, Cin] (only when x is not channels-last)
//   prepKernel             the mask convs' weights as an 18-row matrix, the 3x3 weights packed
//                          [tap][cin][cout], the split-K counters zeroed (one launch)
//   rowGemmKernel          (mask taps) taps[q, 2t + k] = sum_c x[q, c] Wk[c, t]
//   tapSumKernel           (forced density) l_k = b_k + sum_t taps[q + d_t, 2t + k] at stride 1
//                          (m1) and s (m2), rounded to the op's dtype (the torch op's
//                          `.to(x.dtype)`) (this and the next three: both masks in one launch,
//                          blockIdx.y)
//   kthLargestKernel       (forced density) the k-th largest logit per image, by a radix
//                          selection on order-preserving integer keys: 3 passes (exact, no sort)
//   sampleKernel           mask = SampleMask(logit [- k-th]), the logits summed from the taps
//                          here in the other modes; per 1024-position tile, its count
//   scanKernel             (maps of more than kFusedScanTiles tiles) one block: exclusive sums
//                          of the tile counts, the total count
//   partitionKernel        perm (sampled in raster order, then the rest), index (position ->
//                          row or -1): deterministic, no atomics; on smaller maps each block
//                          sums the tile counts it needs itself (no scan launch)
//   rowGemmKernel          rows[m] = act(A[m] W^T + b) for m < count: A = gathered channels-last
//                          rows of a tap set (1x1, 3x3 regular or deformable v1, strided), or
//                          plain rows; 64x64 tiles, 32-channel K steps, fp16 on WMMA, else fp32;
//                          long K on few tiles split over blockIdx.z, the last block of a tile
//                          adding the splits' partial sums in split order
//   rowGemmPairKernel      two independent row GEMMs in one launch: the DCN offsets beside conv1,
//                          the downsample beside conv3 (the same tiles and bits as two launches)
//   interpRowsNhwcKernel   dense = act(m f + (1 - m) N/D + bias [+ residual]) with f read from
//                          rows through index, channels-last output (Y1; y in NHWC): 16x16
//                          tiles, consecutive threads on consecutive channel pairs of a position,
//                          the residual copied asynchronously into shared memory,
//                          separable 7-tap passes in math.h's order (under the emulation,
//                          bit-identical to the CPU twin)
//   interpRowsKernel       the same for an NCHW output (y when x is NCHW): 32x32 tiles,
//                          consecutive threads on consecutive positions, as gaussian_interp.cu
// In float32 the element-wise kernels follow math.h step by step, so under the emulation they
// equal src/cpu/block.cpp bit for bit; the GEMMs sum K in tap-major order (not the CPU's MKL
// order), so they agree to float32 rounding.
#include <algorithm>
#include <cmath>
#include <type_traits>

#ifndef SSI_CUDA_EMULATION
#include <mma.h>
#endif

#include "common.cuh"
#include "interp_tile.cuh"

#if defined(SSI_HAVE_SM90_GEMM) && !defined(SSI_CUDA_EMULATION)
#include <cstdlib>
#include <cstring>

#include "hopper/gather_gemm_sm90.h"
#define SSI_SM90 1
#else
#define SSI_SM90 0
#endif

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
        cudaError_t const e_ = (__VA_ARGS__);                \
        if (e_ != cudaSuccess) return e_;               \
    } while (0)

template <typename T>
__device__ __forceinline__ float roundTo(float v) {
    if constexpr (std::is_same_v<T, __half>) return __half2float(__float2half_rn(v));
    else return v;
}

// ---------------------------------------------------------------------------------------
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

// The mask kernels below serve both masks in one launch: blockIdx.y picks the mask (its
// parameters in a pair), blocks past that mask's share of the grid exit at once.
template <typename J>
struct Pair {
    J job[2];
    // this block's job, by value: indexing the kernel parameter with blockIdx.y would copy the
    // pair to local memory (a 48-96 byte stack frame)
    __device__ __forceinline__ J pick() const { return blockIdx.y == 0 ? job[0] : job[1]; }
};

// Logits of mask k at stride s: acc = bias, then + taps of the 3x3 window in tap order
// (the CPU twin's ssi_cpu_block_sum_taps), rounded to T. tapSumKernel (forced density: the
// k-th largest needs every logit first) and sampleKernel (the other modes: one launch fewer)
// both sum them by loadTaps and sumTaps.
template <typename T>
struct TapSumJob {
    T const* bias;
    float* logits;
    int32_t k, stride;
};

// The 3x3 window of mask taps of output position (b, yo, xo), a mask at `stride` on an h x w
// input map. The 9 loads are unconditional (a tap outside the map loads the window's centre,
// always inside, and is then skipped), so they are all in flight before the first add: with a
// `continue` around each load nvcc branched around it, one L2 trip per tap.
struct TapWindow {
    float v[9];
    bool in[9];
};

__device__ __forceinline__ void loadTaps(TapWindow& win, float const* __restrict__ taps, int32_t k, int32_t stride,
                                         int32_t h, int32_t w, int64_t b, int32_t yo, int32_t xo) {
    int32_t const yc = yo * stride, xc = xo * stride;
#pragma unroll
    for (int t = 0; t < 9; ++t) {
        int32_t const y = yc + t / 3 - 1, x = xc + t % 3 - 1;
        bool const in = y >= 0 && y < h && x >= 0 && x < w;
        int64_t const q = (b * h + (in ? y : yc)) * w + (in ? x : xc);
        win.in[t] = in;
        win.v[t] = __ldg(taps + q * kTapCols + 2 * t + k);
    }
}

// acc = bias, + the taps inside the map in tap order, rounded to T.
template <typename T>
__device__ __forceinline__ float sumTaps(TapWindow const& win, float bias) {
    float acc = bias;
#pragma unroll
    for (int t = 0; t < 9; ++t) acc = win.in[t] ? acc + win.v[t] : acc;  // skipped, not + 0: -0 stays -0
    return roundTo<T>(acc);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    tapSumKernel(float const* __restrict__ taps, Pair<TapSumJob<T>> jobs, int32_t n, int32_t h, int32_t w) {
    cuda::chainStart();
    TapSumJob<T> const j = jobs.pick();
    int32_t const stride = j.stride;
    int32_t const ho = (h - 1) / stride + 1, wo = (w - 1) / stride + 1;
    int64_t const i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (i >= static_cast<int64_t>(n) * ho * wo) return;
    int32_t const xo = static_cast<int32_t>(i % wo);
    int64_t const r = i / wo;
    int32_t const yo = static_cast<int32_t>(r % ho);
    int64_t const b = r / ho;
    TapWindow win;
    loadTaps(win, taps, j.k, stride, h, w, b, yo, xo);
    j.logits[i] = sumTaps<T>(win, cuda::ld(j.bias, 0));
}

// ---------------------------------------------------------------------------------------
// Forced density: the k-th largest value of each image's logits, one block per image and
// mask. Keys are the float bits mapped to an order-preserving unsigned integer. A radix
// selection from the top: three passes over the logits count the keys that share the digits
// found so far by their next digit (11, 11 and 10 bits), and keep the digit where the count from
// the top reaches k. Integer counts in shared memory (atomics that only add: the same counts in
// any order) and a fixed-order scan: exact and deterministic, the same key as a bit-by-bit
// search, which needed 32 passes over the logits on one SM (~60 us for a stage-1 map of
// 200 x 304 [est]).
__device__ __forceinline__ uint32_t orderKey(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float keyValue(uint32_t k) {
    uint32_t const u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

struct KthJob {
    float const* logits;
    int32_t hw, k;
    float* kth;  // [N]
};

constexpr int kKthThreads = 1024;
constexpr int kKthBins = 2048;  // the widest digit: 11 bits
static_assert(kKthBins % kKthThreads == 0, "each thread owns whole bins");

// Inclusive prefix sum of v over the block's kN threads (Hillis-Steele through shared memory:
// log2(kN) steps of one barrier, exact integer sums). buf: 2 x kN.
template <int kN>
__device__ __forceinline__ int32_t blockInclusiveScan(int32_t v, int32_t* buf) {
    int const t = threadIdx.x;
    int src = 0;
    buf[t] = v;
    __syncthreads();
    for (int off = 1; off < kN; off *= 2) {
        int32_t const x = buf[src * kN + t] + (t >= off ? buf[src * kN + t - off] : 0);
        src ^= 1;
        buf[src * kN + t] = x;
        __syncthreads();
    }
    return buf[src * kN + t];
}

__global__ void __launch_bounds__(kKthThreads) kthLargestKernel(Pair<KthJob> jobs) {
    cuda::chainStart();
    __shared__ int32_t sHist[kKthBins];
    __shared__ int32_t sScan[2 * kKthThreads];
    __shared__ uint32_t sPrefix;
    __shared__ int32_t sK;
    KthJob const j = jobs.pick();
    int32_t const hw = j.hw;
    float const* __restrict__ v = j.logits + static_cast<size_t>(blockIdx.x) * hw;
    int const tid = threadIdx.x;
    if (tid == 0) sPrefix = 0, sK = j.k;
    for (int d = 0; d < 3; ++d) {  // digits: bits 31-21, 20-10, 9-0
        int const shift = d == 0 ? 21 : d == 1 ? 10 : 0, bins = d == 2 ? 1024 : 2048;
        uint32_t const high = d == 0 ? 0u : ~0u << (shift + (d == 2 ? 10 : 11));  // the digits found
        for (int b = tid; b < bins; b += kKthThreads) sHist[b] = 0;
        __syncthreads();  // the histogram cleared; the previous pass's prefix and k published
        uint32_t const prefix = sPrefix;
        int32_t const k = sK;  // 1 <= k <= the number of keys with this prefix
        // 8 loads in flight before any shared-memory atomic (the compiler does not move a load
        // past an atomic it cannot prove apart from it: one L2 trip per element otherwise)
        constexpr int kU = 8;
        for (int32_t i0 = tid; i0 < hw; i0 += kKthThreads * kU) {
            float r[kU];
#pragma unroll
            for (int u = 0; u < kU; ++u) {
                int32_t const i = i0 + u * kKthThreads;
                r[u] = i < hw ? __ldg(v + i) : 0.0f;
            }
#pragma unroll
            for (int u = 0; u < kU; ++u) {
                uint32_t const key = orderKey(r[u]);
                if (i0 + u * kKthThreads < hw && (key & high) == prefix)
                    atomicAdd(&sHist[(key >> shift) & (bins - 1)], 1);
            }
        }
        __syncthreads();
        // from the top: thread t owns the bins of ranks per t .. per t + per - 1 (descending)
        int const per = bins / kKthThreads;
        int const top = bins - 1 - per * tid;
        int32_t const h0 = sHist[top], h1 = per == 2 ? sHist[top - 1] : 0;
        int32_t const incl = blockInclusiveScan<kKthThreads>(h0 + h1, sScan);
        int32_t const excl = incl - h0 - h1;
        if (excl < k && k <= incl) {  // exactly one thread: the k-th key's digit is one of its bins
            bool const first = k - excl <= h0;
            sPrefix = prefix | (static_cast<uint32_t>(first ? top : top - 1) << shift);
            sK = first ? k - excl : k - excl - h0;
        }
    }
    __syncthreads();
    if (tid == 0) j.kth[blockIdx.x] = keyValue(sPrefix);
}

// ---------------------------------------------------------------------------------------
// SampleMask of one mask plus the per-tile counts of sampled positions (mask > 0 in T). The
// logits come from tapSumKernel (forced density) or, with `taps`, are summed here from the
// mask taps by loadTaps and sumTaps (the same bits) and written for the checks: one launch fewer.
template <typename T>
struct SampleJob {
    float* logits;     // read (taps null) or written (taps given)
    float const* kth;  // null: no forced density
    T const* bias;     // with taps: the mask conv's bias
    T* mask;
    int32_t* tileCounts;
    int32_t h, w, tiles;  // the mask's map
    int32_t k, stride;    // with taps: the tap column and the stride on the input map
    uint32_t key;
};

// (launch bounds for 2 blocks per SM: the 36 loads in flight take 70-76 registers; without them
// ptxas capped sm_75 at 64 and spilled)
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
    sampleKernel(float const* __restrict__ taps /*null: logits given*/, Pair<SampleJob<T>> jobs, int32_t n,
                 int32_t hIn, int32_t wIn, int32_t mode, int32_t gridInterval) {
    cuda::chainStart();
    __shared__ int32_t sCount[kThreads];
    SampleJob<T> const j = jobs.pick();
    if (static_cast<int32_t>(blockIdx.x) >= j.tiles) return;
    float* __restrict__ logits = j.logits;
    float const* __restrict__ kth = j.kth;
    T* __restrict__ mask = j.mask;
    uint32_t const h = static_cast<uint32_t>(j.h), w = static_cast<uint32_t>(j.w);
    uint32_t const key = j.key;
    // 32-bit positions: N*H*W < 2^31 (validBottleneckParams); 64-bit divisions were subroutine calls
    uint32_t const total = static_cast<uint32_t>(n) * h * w;
    uint32_t const first = blockIdx.x * static_cast<uint32_t>(kTileCount) + threadIdx.x;
    int32_t cnt = 0;
    constexpr int kPer = kTileCount / kThreads;
    float lg[kPer];  // the loads first, together (a mask store between two of them kept one in flight)
    if (taps) {
        TapWindow win[kPer];  // all 4 x 9 loads before the first add
#pragma unroll
        for (int r = 0; r < kPer; ++r) {
            uint32_t const i = first + r * kThreads, t = i / w;
            if (i < total)
                loadTaps(win[r], taps, j.k, j.stride, hIn, wIn, t / h, static_cast<int32_t>(t % h),
                         static_cast<int32_t>(i % w));
        }
        float const bias = cuda::ld(j.bias, 0);
#pragma unroll
        for (int r = 0; r < kPer; ++r) {
            uint32_t const i = first + r * kThreads;
            lg[r] = i < total ? sumTaps<T>(win[r], bias) : 0.0f;
            if (i < total) logits[i] = lg[r];
        }
    } else {
#pragma unroll
        for (int r = 0; r < kPer; ++r) {
            uint32_t const i = first + r * kThreads;
            lg[r] = i < total ? __ldg(logits + i) : 0.0f;
        }
    }
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
        uint32_t const i = first + r * kThreads;
        if (i >= total) continue;
        uint32_t const t = i / w;
        int32_t const x = static_cast<int32_t>(i % w), y = static_cast<int32_t>(t % h), b = static_cast<int32_t>(t / h);
        float l = lg[r];
        int32_t md = mode;
        if (kth) {  // the torch op's shift in the op's dtype, then threshold
            l = roundTo<T>(l - __ldg(kth + b));
            md = contract::kModeThreshold;
        }
        float const m = roundTo<T>(math::sampleMaskValue(l, md, gridInterval, key, b, y, x));
        cuda::st(mask, i, m);
        cnt += m > 0.0f;
    }
    sCount[threadIdx.x] = cnt;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s /= 2) {
        if (static_cast<int>(threadIdx.x) < s) sCount[threadIdx.x] += sCount[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) j.tileCounts[blockIdx.x] = sCount[0];
}

// One block: tileCounts -> exclusive offsets (in place), *count = the total.
struct ScanJob {
    int32_t* tileCounts;
    int32_t tiles;
    int32_t* count;
};

__global__ void __launch_bounds__(kThreads) scanKernel(Pair<ScanJob> jobs) {
    cuda::chainStart();
    __shared__ int32_t sScan[2 * kThreads];
    ScanJob const j = jobs.pick();
    int32_t* __restrict__ tileCounts = j.tileCounts;
    int32_t const tiles = j.tiles;
    int32_t* __restrict__ count = j.count;
    int32_t const per = (tiles + kThreads - 1) / kThreads;
    int32_t const t0 = min(tiles, static_cast<int32_t>(threadIdx.x) * per), t1 = min(tiles, t0 + per);
    int32_t s = 0;
    for (int32_t t = t0; t < t1; ++t) s += tileCounts[t];
    int32_t const incl = blockInclusiveScan<kThreads>(s, sScan);  // (a serial loop by one thread
                                                                  // took 256 dependent steps)
    if (threadIdx.x == kThreads - 1) *count = incl;
    int32_t run = incl - s;
    for (int32_t t = t0; t < t1; ++t) {
        int32_t const c = tileCounts[t];
        tileCounts[t] = run;
        run += c;
    }
}

// perm[rank] = position, index[position] = rank or -1. Sampled ranks: the tile's offset plus
// the sampled positions before it in the tile; unsampled: count + the unsampled positions
// before it over the whole map (tile start - tile offset + the tile's own).
// The tile offsets and the count come from scanKernel (`scanned`), or, for maps of at most
// kFusedScanTiles tiles, each block sums the tile counts itself (those before its tile, and
// all of them; block 0 writes the count): integer sums, the same ranks, one launch fewer for
// at most 2 loads per thread (at 512 tiles, 1 MB of L2 reads in all).
template <typename T>
struct PartitionJob {
    T const* mask;
    int32_t const* tileOffsets;  // scanned: the exclusive offsets; else the tile counts
    int32_t* count;              // scanned: read; else written by block 0
    int32_t *perm, *index;
    int32_t total, tiles;
};

#ifdef SSI_CUDA_EMULATION
constexpr int32_t kFusedScanTiles = 4;  // small test maps take both paths
#else
constexpr int32_t kFusedScanTiles = 512;
#endif

template <typename T>
__global__ void __launch_bounds__(kThreads) partitionKernel(Pair<PartitionJob<T>> jobs, int32_t scanned) {
    cuda::chainStart();
    __shared__ int32_t sWarp[kThreads / 32];
    __shared__ int32_t sRun;
    __shared__ int32_t sRed[2][kThreads];
    PartitionJob<T> const j = jobs.pick();
    if (static_cast<int32_t>(blockIdx.x) >= j.tiles) return;
    T const* __restrict__ mask = j.mask;
    int32_t const* __restrict__ tileOffsets = j.tileOffsets;
    int32_t* __restrict__ perm = j.perm;
    int32_t* __restrict__ index = j.index;
    int32_t const total = j.total;
    int const lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int32_t const tileStart = static_cast<int32_t>(blockIdx.x) * kTileCount;
    int32_t off, cnt;
    if (scanned) {
        off = tileOffsets[blockIdx.x], cnt = *j.count;
    } else {
        int32_t before = 0, all = 0;
        for (int32_t t = static_cast<int32_t>(threadIdx.x); t < j.tiles; t += kThreads) {
            int32_t const c = tileOffsets[t];
            all += c;
            before += t < static_cast<int32_t>(blockIdx.x) ? c : 0;
        }
        sRed[0][threadIdx.x] = before, sRed[1][threadIdx.x] = all;
        __syncthreads();
        for (int s = kThreads / 2; s > 0; s /= 2) {
            if (static_cast<int>(threadIdx.x) < s) {
                sRed[0][threadIdx.x] += sRed[0][threadIdx.x + s];
                sRed[1][threadIdx.x] += sRed[1][threadIdx.x + s];
            }
            __syncthreads();
        }
        off = sRed[0][0], cnt = sRed[1][0];
        if (blockIdx.x == 0 && threadIdx.x == 0) *j.count = cnt;
    }
    if (threadIdx.x == 0) sRun = 0;
    __syncthreads();
    for (int r = 0; r < kTileCount / kThreads; ++r) {
        int32_t const i = tileStart + r * kThreads + static_cast<int32_t>(threadIdx.x);
        bool const in = i < total;
        bool const keep = in && cuda::ld(mask, i) > 0.0f;
        unsigned const ballot = __ballot_sync(0xffffffffu, keep);
        if (lane == 0) sWarp[warp] = __popc(ballot);
        __syncthreads();
        int32_t before = sRun;
        for (int k = 0; k < warp; ++k) before += sWarp[k];
        before += __popc(ballot & ((1u << lane) - 1u));  // sampled positions of the tile before i
        if (in) {
            int32_t const rank = keep ? off + before : cnt + (i - tileStart - before) + (tileStart - off);
            perm[rank] = i;
            index[i] = keep ? rank : -1;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int32_t s = 0;
            for (int k = 0; k < kThreads / 32; ++k) s += sWarp[k];
            sRun += s;
        }
        __syncthreads();
    }
}

// ---------------------------------------------------------------------------------------
// Row GEMM. Output row m (m < count) is position q = list ? list[m] : m of an output grid
// [N, Ho, Wo]; its A row is the tap-major patch of `src` (rows of an NHWC map [N, H, W, Cin])
// at the taps of a kk x kk window (stride, pad), regular or deformable v1 (offsets [m, 2*taps]
// float32, (dy, dx) per tap); with `direct`, A row m is src row m (conv3 on rows).
struct GemmArgs {
    int32_t const* list;   // null: identity
    int32_t const* count;  // null: maxM
    int32_t maxM;
    int32_t n, h, w, cin, ho, wo, kk, stride, pad, cout, relu;
    bool direct;
    float const* offsets;  // deformable
    int32_t ldOut;
    int32_t splits;        // K split over blockIdx.z (gemmSplits); > 1: raw sums go to partial
    float* partial;        // [splits][maxM][cout] float32 (workspace)
    int32_t* counters;     // per output tile: splits arrived (zero before the GEMM, zero after)
    bool packed;           // weight packed as [kk * kk][cin][ldB] (prepKernel), not torch's
    int32_t ldB;           // packed rows' length: cout, or more with zeros (the DCN offsets); 0: cout
    bool alignedA, alignedB;  // src / weight 16-byte aligned (set by rowGemm): vectors allowed
    bool pipeline;            // the cp.async path allowed (not SSI_BLOCK_GEMM=regs; launchArgs)
};

constexpr int kBM = 64, kBN = 64, kBK = 32, kGemmThreads = 128;
// K steps in shared memory on the cp.async path (sm_80 on): kGemmStages - 1 of them in flight while
// one multiplies, where the register path has one. sm_75 has no cp.async: the register path.
#if defined(SSI_CUDA_EMULATION) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
constexpr int kGemmStages = 3;
#else
constexpr int kGemmStages = 1;
#endif

// Split-K for the row GEMMs with few tiles and a long K: a stage-3/4 block has a few hundred
// rows, and the DCN offsets and the mask taps (18 columns) are one 64-column tile, so without a
// split a handful of blocks would walk up to 9 * 2048 / 32 = 576 K steps each. Split z takes a
// contiguous range of K steps and writes its float32 partial sums; the tile's last block to
// arrive (a counter per tile) adds them in split order and runs the epilogue, so the result does
// not depend on which block is last, and no reduce kernel is launched. The split count is
// sparse_conv2d.cu's rule (cuda::splitKCount), up to 32 splits for these narrow GEMMs.
constexpr int kMaxSplits = 32;

inline int32_t gemmSteps(int32_t cin, int32_t kk) { return kk * kk * ((cin + kBK - 1) / kBK); }

int32_t gemmSplits(int64_t maxM, int32_t cout, int32_t steps) {
    return cuda::splitKCount(steps, (maxM + kBM - 1) / kBM * ((cout + kBN - 1) / kBN), kMaxSplits);
}

// What one row GEMM takes of the split-K buffers: its [splits][maxM][cout] float32 partial sums
// (256-byte aligned) and a counter per output tile; nothing when it does not split.
struct SplitFootprint {
    size_t partialBytes;
    int64_t counters;
};

SplitFootprint splitFootprint(int64_t maxM, int32_t cout, int32_t cin, int32_t kk) {
    int32_t const splits = gemmSplits(maxM, cout, gemmSteps(cin, kk));
    if (splits <= 1) return {};
    return {align256(static_cast<size_t>(splits) * maxM * cout * sizeof(float)),
            (maxM + kBM - 1) / kBM * ((cout + kBN - 1) / kBN)};
}

struct SplitNeeds {
    size_t partialBytes;  // the most partial-sum bytes of the row GEMMs of one launch
    int64_t counters;     // the most tile counters of the row GEMMs of one launch
};

void needSplit(SplitNeeds& n, SplitFootprint f) {
    n.partialBytes = std::max(n.partialBytes, f.partialBytes);
    n.counters = std::max(n.counters, f.counters);
}

void needSplit(SplitNeeds& n, int64_t maxM, int32_t cout, int32_t cin, int32_t kk) {
    needSplit(n, splitFootprint(maxM, cout, cin, kk));
}

// Two row GEMMs of one launch (rowGemmPair): B's partial sums and counters follow A's.
void needSplit(SplitNeeds& n, SplitFootprint a, SplitFootprint b) {
    needSplit(n, SplitFootprint{a.partialBytes + b.partialBytes, a.counters + b.counters});
}

struct SmemSimt {
    float a[kBK][kBM + 4];
    float b[kBK][kBN + 4];
};
struct SmemTensorCore {
    __half a[kBM][kBK + 8];
    __half b[kBK][kBN + 8];
};
// B in column-major (b[n][k]) for weights in torch's layout ([cout][cin]: k contiguous), so that
// the threads of a warp, on consecutive k of one output channel, store to consecutive halves
// (row-major b[k][n] put them 72 halves apart: 4-way bank conflicts on every B store)
struct SmemTensorCoreColB {
    __half a[kBM][kBK + 8];
    __half b[kBN][kBK + 8];
};

template <bool kTensorCore, bool kColB>
using GemmSmem = std::conditional_t<kTensorCore, std::conditional_t<kColB, SmemTensorCoreColB, SmemTensorCore>,
                                    SmemSimt>;

// One row GEMM tile's shared memory, as one struct: a paired launch (rowGemmPairKernel) overlays
// two GEMMs' in a union, where two functions' own static __shared__ variables would add up.
template <typename Smem, int kStages>
struct GemmShared {
    union {
        alignas(32) Smem st[kStages];  // the K steps' tiles on the cp.async path
        struct {
            alignas(32) Smem sm;         // the register path's tiles
            math::TapCorners sTap[kBM];  // and each row's tap corners, where st[1] would be (sm_86:
                                         // 3 blocks of 32.8 KB per SM fit its 100 KB, of 34.8 KB not)
        } reg;
        // then the tile's sums, [row][channel]: the epilogue's threads read consecutive channels of
        // a row (as [channel][row] they were 68 words apart: 4-way bank conflicts on every read)
        alignas(32) float sC[kBM][kBN + 4];
    };
    int32_t sImg[kBM], sYo[kBM], sXo[kBM], sRow[kBM];
    int32_t sLast;
};

// SIMT tiles stay on the register path (fp32 has no cp.async use here: its A and B are converted
// or gathered element by element, and 3 stages of its float tiles would pass 48 KB)
template <bool kTensorCore, bool kColB>
using GemmSharedOf = GemmShared<GemmSmem<kTensorCore, kColB>, kTensorCore ? kGemmStages : 1>;

// Block `blk` of a row GEMM's grid (gx blocks along M): its output tile, or its split of one.
template <typename T, typename OutT, bool kDeform, bool kTensorCore, bool kColB>
__device__ __forceinline__ void rowGemmTile(GemmSharedOf<kTensorCore, kColB>& S, T const* __restrict__ src,
                                            T const* __restrict__ weight, T const* __restrict__ bias,
                                            OutT* __restrict__ out, GemmArgs g, uint3 blk, uint32_t gx) {
    static_assert(!kColB || kTensorCore, "column-major B is a tensor-core layout");
    auto& sm = S.reg.sm;  // the register path's tiles
    auto& sC = S.sC;
    auto& sImg = S.sImg;
    auto& sYo = S.sYo;
    auto& sXo = S.sXo;
    auto& sRow = S.sRow;
    auto& sTap = S.reg.sTap;

    int32_t const count = g.count ? *g.count : g.maxM;
    int32_t const mBase = static_cast<int32_t>(blk.x) * kBM;
    if (mBase >= count) return;  // grid sized for the maximum count
    int const tid = threadIdx.x;
    int32_t const nBase = static_cast<int32_t>(blk.y) * kBN;
    int32_t const taps = g.kk * g.kk, howo = g.ho * g.wo;

    if (tid < kBM) {
        int32_t const m = mBase + tid;
        sImg[tid] = -1;
        if (m < count) {
            int32_t const q = g.list ? g.list[m] : m;
            int32_t const b = q / howo, r = q - b * howo;
            sImg[tid] = b;
            sYo[tid] = r / g.wo;
            sXo[tid] = r - (r / g.wo) * g.wo;
            sRow[tid] = m;
        }
    }

    int const tm = tid % 16, tn = tid / 16;
    float acc[kTensorCore ? 1 : 4][kTensorCore ? 1 : 8];
    int const warp = tid / 32, wm = warp % 2, wn = warp / 2;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> frag[2][2];
    if constexpr (kTensorCore) {
        for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) nvcuda::wmma::fill_fragment(frag[i][j], 0.0f);
    } else {
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
    }

    int32_t const kChunks = (g.cin + kBK - 1) / kBK;
    int32_t const split = static_cast<int32_t>(blk.z);  // this block's K steps: [s0, s1)
    int32_t const s0 = static_cast<int32_t>(static_cast<int64_t>(taps * kChunks) * split / g.splits);
    int32_t const s1 = static_cast<int32_t>(static_cast<int64_t>(taps * kChunks) * (split + 1) / g.splits);
    constexpr int kPerThread = kBM * kBK / kGemmThreads;  // 16 (A), and 16 for B
    float ra[kPerThread];
    // B kept as loaded on tensor cores: converted to float at the load, each 2-byte weight load
    // waited for its data before the next was issued (1-3 in flight instead of 16); half -> float
    // -> half is exact, so the bits are the same
    using BReg = std::conditional_t<kTensorCore, __half, float>;
    BReg rb[kPerThread];

    auto computeTap = [&](int32_t tap) {  // the corners of each row's tap, in source-map offsets
        if (tid < kBM && sImg[tid] >= 0) {
            if (g.direct) {
                sTap[tid] = math::regularTap(0, 0, 1, 1);
                sTap[tid].off[0] = 0;
            } else {
                int32_t const iy = math::tapCoord(sYo[tid], tap / g.kk, g.stride, g.pad, 1);
                int32_t const ix = math::tapCoord(sXo[tid], tap % g.kk, g.stride, g.pad, 1);
                if constexpr (kDeform) {
                    float const* o = g.offsets + static_cast<size_t>(sRow[tid]) * 2 * taps + 2 * tap;
                    sTap[tid] = math::deformTap(iy, ix, o[0], o[1], g.h, g.w);
                } else {
                    sTap[tid] = math::regularTap(iy, ix, g.h, g.w);
                }
            }
        }
    };
    // A: thread -> channel aK (consecutive threads, consecutive channels of one row: coalesced)
    // and rows aM0 + 4 i. B: input channel bK, output channels bN0 + 4 i.
    int const aK = tid % kBK, aM0 = tid / kBK;
    int const bK = tid % kBK, bN0 = tid / kBK;
    constexpr int kRowStride = kGemmThreads / kBK;  // 4
    // B from packed weights: thread -> output channel pN, input channels pK0 + 2 i
    int const pN = tid % kBN, pK0 = tid / kBN;
    constexpr int kPackStride = kGemmThreads / kBN;  // 2
    static_assert(kPerThread * kPackStride == kBK, "the packed B tile is 16 rows of 2 per thread");
    // fp16 on tensor cores moves whole 16-byte vectors (8 channels): A rows (regular taps, plain
    // rows, or the 4 corner rows of a deformable tap, blended channel by channel as the scalar
    // path does) when Cin % 8 == 0, packed B rows when Cout % 8 == 0 (8 load and 8 shared-memory
    // store instructions per thread and step instead of 64, 32 loads instead of 256 for
    // deformable taps; the same halves in the same places). A packed row's vector past cout
    // (ldB > cout) holds the packing's zeros, where the scalar path puts zeros.
    bool const vecA = kTensorCore && g.alignedA && g.cin % 8 == 0;
    bool const vecB = kTensorCore && g.alignedB && g.packed && g.ldB % 8 == 0;
    constexpr int kVec = 8, kVecPerThread = kBM * kBK / kVec / kGemmThreads;  // 2 (A), and 2 for B
    uint4 va[kVecPerThread], vb[kVecPerThread];
    int const vC = tid % (kBK / kVec), vM0 = tid / (kBK / kVec);  // A: channels 8 vC.., rows vM0 + 32 i
    int const vN = tid % (kBN / kVec), vK0 = tid / (kBN / kVec);  // B: outputs 8 vN.., rows vK0 + 16 i
    constexpr int kVecRowsA = kGemmThreads / (kBK / kVec), kVecRowsB = kGemmThreads / (kBN / kVec);
    size_t const hw = static_cast<size_t>(g.h) * g.w;
    auto loadStep = [&](int32_t s) {
        int32_t const tap = s / kChunks, k0 = (s - tap * kChunks) * kBK;
        int32_t const c = k0 + aK;
        if (vecA) {
#pragma unroll
            for (int i = 0; i < kVecPerThread; ++i) {
                int const ml = vM0 + i * kVecRowsA;
                int32_t const b = sImg[ml], cv = k0 + kVec * vC;
                uint4 v = make_uint4(0u, 0u, 0u, 0u);
                if constexpr (kDeform) {
                    if (b >= 0 && cv < g.cin) {
                        math::TapCorners const tc = sTap[ml];
                        T const* base = src + static_cast<size_t>(b) * hw * g.cin + cv;
                        uint4 corner[4];
#pragma unroll
                        for (int k = 0; k < 4; ++k)
                            corner[k] = tc.wgt[k] != 0.0f
                                            ? __ldg(reinterpret_cast<uint4 const*>(base + static_cast<size_t>(tc.off[k]) * g.cin))
                                            : make_uint4(0u, 0u, 0u, 0u);
                        uint32_t packed[4];
#pragma unroll
                        for (int e = 0; e < 4; ++e) {  // channels 2e, 2e + 1
                            float lo[4], hi[4];
#pragma unroll
                            for (int k = 0; k < 4; ++k) {
                                uint32_t const wd = e == 0 ? corner[k].x : e == 1 ? corner[k].y : e == 2 ? corner[k].z : corner[k].w;
                                lo[k] = __half2float(__ushort_as_half(static_cast<unsigned short>(wd & 0xffffu)));
                                hi[k] = __half2float(__ushort_as_half(static_cast<unsigned short>(wd >> 16)));
                            }
                            unsigned const l = __half_as_ushort(__float2half_rn(math::tapValue(tc, lo[0], lo[1], lo[2], lo[3])));
                            unsigned const h = __half_as_ushort(__float2half_rn(math::tapValue(tc, hi[0], hi[1], hi[2], hi[3])));
                            packed[e] = l | (h << 16);
                        }
                        v = make_uint4(packed[0], packed[1], packed[2], packed[3]);
                    }
                } else if (b >= 0 && cv < g.cin && sTap[ml].wgt[0] != 0.0f) {
                    T const* base = g.direct ? src + static_cast<size_t>(sRow[ml]) * g.cin
                                             : src + static_cast<size_t>(b) * hw * g.cin;
                    v = __ldg(reinterpret_cast<uint4 const*>(base + static_cast<size_t>(sTap[ml].off[0]) * g.cin + cv));
                }
                va[i] = v;
            }
        }
#pragma unroll
        for (int i = 0; i < kPerThread && !vecA; ++i) {
            int const ml = aM0 + i * kRowStride;
            int32_t const b = sImg[ml];
            float v = 0.0f;
            if (b >= 0 && c < g.cin) {
                math::TapCorners const& tc = sTap[ml];
                T const* base = g.direct ? src + static_cast<size_t>(sRow[ml]) * g.cin
                                         : src + static_cast<size_t>(b) * hw * g.cin;
                if constexpr (kDeform) {
                    float cv[4];
#pragma unroll
                    for (int k = 0; k < 4; ++k)
                        cv[k] = tc.wgt[k] != 0.0f ? cuda::ld(base, static_cast<size_t>(tc.off[k]) * g.cin + c) : 0.0f;
                    v = math::tapValue(tc, cv[0], cv[1], cv[2], cv[3]);
                } else {
                    v = tc.wgt[0] != 0.0f ? cuda::ld(base, static_cast<size_t>(tc.off[0]) * g.cin + c) : 0.0f;
                }
            }
            ra[i] = v;
        }
        if (vecB) {
#pragma unroll
            for (int i = 0; i < kVecPerThread; ++i) {
                int32_t const cb = k0 + vK0 + i * kVecRowsB, co = nBase + kVec * vN;
                vb[i] = (cb < g.cin && co < g.cout)
                            ? __ldg(reinterpret_cast<uint4 const*>(weight + (static_cast<size_t>(tap) * g.cin + cb) *
                                                                               g.ldB + co))
                            : make_uint4(0u, 0u, 0u, 0u);
            }
            return;
        }
        if (g.packed) {  // weight[tap][c][co]: consecutive threads, consecutive output channels
            int32_t const co = nBase + pN;
#pragma unroll
            for (int i = 0; i < kPerThread; ++i) {
                int32_t const cb = k0 + pK0 + i * kPackStride;
                size_t const e = (static_cast<size_t>(tap) * g.cin + cb) * g.ldB + co;
                bool const in = cb < g.cin && co < g.cout;
                if constexpr (kTensorCore)
                    rb[i] = in ? __ldg(reinterpret_cast<__half const*>(weight) + e) : __float2half_rn(0.0f);
                else
                    rb[i] = in ? cuda::ld(weight, e) : 0.0f;
            }
            return;
        }
        int32_t const cb = k0 + bK;
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {  // weight[co][c][tap] (torch layout)
            int32_t const co = nBase + bN0 + i * kRowStride;
            size_t const e = (static_cast<size_t>(co) * g.cin + cb) * taps + tap;
            bool const in = cb < g.cin && co < g.cout;
            if constexpr (kTensorCore)
                rb[i] = in ? __ldg(reinterpret_cast<__half const*>(weight) + e) : __float2half_rn(0.0f);
            else
                rb[i] = in ? cuda::ld(weight, e) : 0.0f;
        }
    };
    auto storeStep = [&] {
        if constexpr (kTensorCore) {
#pragma unroll
            for (int i = 0; i < kVecPerThread; ++i) {
                if (vecA) *reinterpret_cast<uint4*>(&sm.a[vM0 + i * kVecRowsA][kVec * vC]) = va[i];
                if (vecB) *reinterpret_cast<uint4*>(&sm.b[vK0 + i * kVecRowsB][kVec * vN]) = vb[i];
            }
        }
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
            int const ml = aM0 + i * kRowStride;
            int const kl = g.packed ? pK0 + i * kPackStride : bK, nl = g.packed ? pN : bN0 + i * kRowStride;
            if constexpr (kColB) {  // torch-layout B (never packed, so never vecB)
                if (!vecA) sm.a[ml][aK] = __float2half_rn(ra[i]);
                sm.b[nl][kl] = rb[i];
            } else if constexpr (kTensorCore) {
                if (!vecA) sm.a[ml][aK] = __float2half_rn(ra[i]);
                if (!vecB) sm.b[kl][nl] = rb[i];
            } else {
                sm.a[aK][ml] = ra[i];
                sm.b[kl][nl] = rb[i];
            }
        }
    };
    auto computeStep = [&](auto& sm) {
        if constexpr (kTensorCore) {
            using namespace nvcuda;
#pragma unroll
            for (int ks = 0; ks < kBK; ks += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa[2];
                using BLayout = std::conditional_t<kColB, wmma::col_major, wmma::row_major>;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, BLayout> fb[2];
#pragma unroll
                for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &sm.a[wm * 32 + 16 * i][ks], kBK + 8);
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    if constexpr (kColB) wmma::load_matrix_sync(fb[j], &sm.b[wn * 32 + 16 * j][ks], kBK + 8);
                    else wmma::load_matrix_sync(fb[j], &sm.b[ks][wn * 32 + 16 * j], kBN + 8);
                }
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int j = 0; j < 2; ++j) wmma::mma_sync(frag[i][j], fa[i], fb[j], frag[i][j]);
            }
        } else {
#pragma unroll 4
            for (int kk = 0; kk < kBK; ++kk) {
                float a[4], b[8];
#pragma unroll
                for (int i = 0; i < 4; ++i) a[i] = sm.a[kk][tm + 16 * i];
#pragma unroll
                for (int j = 0; j < 8; ++j) b[j] = sm.b[kk][tn + 8 * j];
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[i][j] += a[i] * b[j];
            }
        }
    };

    using Stage = GemmSmem<kTensorCore, kColB>;
    // The cp.async path's copies of step t into a stage, one commit group per step: A's rows
    // (regular or direct taps) and B's rows as whole 16-byte vectors, zeros where the register path
    // has them, the same halves in the same places, so the same bits. A regular tap's corner is
    // computed by each thread for its own rows (no sTap, no barrier when the tap changes).
    auto copyStep = [&](int32_t t, Stage& st) {
        if constexpr (kTensorCore && !kDeform) {
            int32_t const tap = t / kChunks, k0 = (t - tap * kChunks) * kBK;
            int32_t const ty = tap / g.kk, tx = tap - ty * g.kk;
#pragma unroll
            for (int i = 0; i < kVecPerThread; ++i) {
                int const ml = vM0 + i * kVecRowsA;
                int32_t const b = sImg[ml], cv = k0 + kVec * vC;
                bool ok = b >= 0 && cv < g.cin;
                T const* from = src;
                if (ok && g.direct) {
                    from = src + static_cast<size_t>(sRow[ml]) * g.cin + cv;
                } else if (ok) {
                    int32_t const iy = math::tapCoord(sYo[ml], ty, g.stride, g.pad, 1);
                    int32_t const ix = math::tapCoord(sXo[ml], tx, g.stride, g.pad, 1);
                    ok = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
                    from = src + (static_cast<size_t>(b) * hw + static_cast<size_t>(iy) * g.w + ix) * g.cin + cv;
                }
                cuda::copyAsync16OrZero(&st.a[ml][kVec * vC], ok ? from : src, ok);
            }
#pragma unroll
            for (int i = 0; i < kVecPerThread; ++i) {
                if constexpr (kColB) {  // torch's [cout][cin] (1x1): 8 input channels of one output
                    constexpr int kPerRow = kBK / kVec, kRows = kGemmThreads / kPerRow;  // 4, 32
                    int const nl = tid / kPerRow + i * kRows, kl = kVec * (tid % kPerRow);
                    int32_t const co = nBase + nl, cb = k0 + kl;
                    bool const ok = co < g.cout && cb < g.cin;
                    cuda::copyAsync16OrZero(&st.b[nl][kl], ok ? weight + static_cast<size_t>(co) * g.cin + cb : weight,
                                            ok);
                } else {  // packed [tap][cin][cout]: 8 outputs of one input channel (as vb)
                    int const kl = vK0 + i * kVecRowsB;
                    int32_t const cb = k0 + kl, co = nBase + kVec * vN;
                    bool const ok = cb < g.cin && co < g.cout;
                    cuda::copyAsync16OrZero(&st.b[kl][kVec * vN],
                                            ok ? weight + (static_cast<size_t>(tap) * g.cin + cb) * g.ldB + co : weight,
                                            ok);
                }
            }
        }
    };

    // The cp.async path: A's rows copied as they are (regular or direct taps, vecA) and B as 16-byte
    // vectors, packed (vecB) or torch's 1x1 [cout][cin] (Cin % 8 == 0 as for vecA).
    constexpr bool kCanPipeline = kTensorCore && !kDeform && kGemmStages > 1;
    bool const pipelined = kCanPipeline && g.pipeline && vecA && (g.packed ? vecB : kColB && g.alignedB && g.kk == 1);
    __syncthreads();
    if constexpr (kCanPipeline) {
        if (pipelined) {
            // steps s + 1 .. s + kGemmStages - 1 in flight while step s multiplies. At step s this
            // thread waits for its own copies of step s, and the barrier for everyone's (and for
            // every warp's MMAs of step s - 1, whose stage is refilled right after it).
            int rd = 0, wr = kGemmStages - 1;
            for (int j = 0; j < kGemmStages - 1; ++j) {
                if (s0 + j < s1) copyStep(s0 + j, S.st[j]);
                cuda::copyAsyncCommit();
            }
            for (int32_t s = s0; s < s1; ++s) {
                cuda::copyAsyncWaitGroup<kGemmStages - 2>();
                __syncthreads();
                if (s + kGemmStages - 1 < s1) copyStep(s + kGemmStages - 1, S.st[wr]);
                cuda::copyAsyncCommit();
                computeStep(S.st[rd]);
                rd = rd + 1 == kGemmStages ? 0 : rd + 1;
                wr = wr + 1 == kGemmStages ? 0 : wr + 1;
            }
            cuda::copyAsyncWaitGroup<0>();  // (empty groups: nothing lands in sC, over the stages)
            __syncthreads();                // every warp's last MMAs done before sC is written
        }
    }
    if (!pipelined) {
        // Register path, as sparse_conv2d.cu: step s + 1's loads go to registers while step s
        // multiplies from shared memory; a tap's corners are computed once.
        computeTap(s0 / kChunks);
        __syncthreads();
        loadStep(s0);
        __syncthreads();
        storeStep();
        if (s0 + 1 < s1 && (s0 + 1) / kChunks != s0 / kChunks) computeTap((s0 + 1) / kChunks);
        __syncthreads();
        for (int32_t s = s0; s < s1; ++s) {
            bool const more = s + 1 < s1;
            if (more) loadStep(s + 1);
            computeStep(sm);
            __syncthreads();
            if (more) {
                storeStep();
                int32_t const tapNext = (s + 2) / kChunks;
                if (s + 2 < s1 && tapNext != (s + 1) / kChunks) computeTap(tapNext);
            }
            __syncthreads();  // (also: every warp's MMAs done before sC, over st[0], is written)
        }
    }

    if constexpr (kTensorCore) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
                nvcuda::wmma::store_matrix_sync(&sC[wm * 32 + 16 * i][wn * 32 + 16 * j], frag[i][j], kBN + 4,
                                                nvcuda::wmma::mem_row_major);
    } else {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) sC[tm + 16 * i][tn + 8 * j] = acc[i][j];
    }
    __syncthreads();
    // the tile's live columns, walked densely (18 of 64 for the DCN offsets and the mask taps)
    int const cols = min(kBN, g.cout - nBase);
    if (g.splits > 1) {
        float* __restrict__ partial = g.partial;
        for (int e = tid; e < kBM * cols; e += kGemmThreads) {
            int const nl = e % cols, ml = e / cols;
            if (sImg[ml] < 0) continue;
            partial[(static_cast<size_t>(split) * g.maxM + mBase + ml) * g.cout + nBase + nl] = sC[ml][nl];
        }
        __threadfence();  // the partial sums visible to the block that adds them
        __syncthreads();
        if (tid == 0) {
            int32_t* counter = g.counters + blk.y * gx + blk.x;
            __threadfence();  // a release by the arriving thread itself (the PTX model's letter)
            S.sLast = atomicAdd(counter, 1) == g.splits - 1;
            if (S.sLast) *counter = 0;  // every split has arrived: ready for the next GEMM or launch
        }
        __syncthreads();
        if (!S.sLast) return;
        __threadfence();
        size_t const stride = static_cast<size_t>(g.maxM) * g.cout;
        for (int e = tid; e < kBM * cols; e += kGemmThreads) {
            int const nl = e % cols, ml = e / cols;
            int32_t const co = nBase + nl;
            if (sImg[ml] < 0) continue;
            size_t const at = static_cast<size_t>(mBase + ml) * g.cout + co;
            float acc = __ldcg(partial + at);  // L2: written by other blocks
            // the splits in order, 8 loads in flight at a time (the same sums as one by one)
            constexpr int kU = 8;
            for (int32_t sp = 1; sp < g.splits; sp += kU) {
                float v[kU];
#pragma unroll
                for (int u = 0; u < kU; ++u) v[u] = sp + u < g.splits ? __ldcg(partial + (sp + u) * stride + at) : 0.0f;
#pragma unroll
                for (int u = 0; u < kU; ++u)
                    if (sp + u < g.splits) acc += v[u];
            }
            float const b = bias ? cuda::ld(bias, co) : 0.0f;
            cuda::st(out, static_cast<size_t>(mBase + ml) * g.ldOut + co, math::convEpilogue(acc, b, g.relu));
        }
        return;
    }
    for (int e = tid; e < kBM * cols; e += kGemmThreads) {  // consecutive threads, consecutive channels
        int const nl = e % cols, ml = e / cols;
        int32_t const co = nBase + nl;
        if (sImg[ml] < 0) continue;
        float const b = bias ? cuda::ld(bias, co) : 0.0f;
        cuda::st(out, static_cast<size_t>(mBase + ml) * g.ldOut + co, math::convEpilogue(sC[ml][nl], b, g.relu));
    }
}

template <typename T, typename OutT, bool kDeform, bool kTensorCore, bool kColB = false>
__global__ void __launch_bounds__(kGemmThreads, 3)
    rowGemmKernel(T const* __restrict__ src, T const* __restrict__ weight, T const* __restrict__ bias,
                  OutT* __restrict__ out, GemmArgs g) {
    cuda::chainStart();
    __shared__ GemmSharedOf<kTensorCore, kColB> S;
    rowGemmTile<T, OutT, kDeform, kTensorCore, kColB>(S, src, weight, bias, out, g, blockIdx, gridDim.x);
}

// Two independent row GEMMs (regular or direct taps) in one launch: conv1 beside the DCN
// offsets, the downsample beside conv3. Blocks [0, a.blocks) are A's grid, the rest B's, each
// walked x first as its own launch's would be; their shared memory overlaid. The same tiles,
// sums and bits as two launches, one launch gap fewer.
struct PairGrid {
    uint32_t gx, gy, blocks;  // a GEMM's M tiles, N tiles, and M x N x splits blocks
};

template <typename T, typename OutA, typename OutB, bool kTensorCore, bool kColA, bool kColB>
__global__ void __launch_bounds__(kGemmThreads, 3)
    rowGemmPairKernel(T const* __restrict__ srcA, T const* __restrict__ weightA, T const* __restrict__ biasA,
                      OutA* __restrict__ outA, GemmArgs ga, PairGrid pa, T const* __restrict__ srcB,
                      T const* __restrict__ weightB, T const* __restrict__ biasB, OutB* __restrict__ outB,
                      GemmArgs gb, PairGrid pb) {
    cuda::chainStart();
    using SA = GemmSharedOf<kTensorCore, kColA>;
    using SB = GemmSharedOf<kTensorCore, kColB>;
    union Shared {
        SA a;
        SB b;
    };
    __shared__ Shared S;
    uint32_t i = blockIdx.x;
    if (i < pa.blocks) {
        uint3 const blk{i % pa.gx, i / pa.gx % pa.gy, i / (pa.gx * pa.gy)};
        rowGemmTile<T, OutA, false, kTensorCore, kColA>(S.a, srcA, weightA, biasA, outA, ga, blk, pa.gx);
    } else {
        i -= pa.blocks;
        uint3 const blk{i % pb.gx, i / pb.gx % pb.gy, i / (pb.gx * pb.gy)};
        rowGemmTile<T, OutB, false, kTensorCore, kColB>(S.b, srcB, weightB, biasB, outB, gb, blk, pb.gx);
    }
}

// ---------------------------------------------------------------------------------------
// Interpolation of rows into a dense NCHW map (gaussian_interp.cu's tiling and order): f at a
// sampled position q is rows[index[q], c]. The output and the residual are addressed as
// base + n * sN + q * sQ + c * sC (NHWC rows or NCHW planes).
static_assert(kThreads == cuda::interp::kThreads, "the interpolation tiles assume 256 threads");
using cuda::interp::kHalo;  // the tile passes shared with gaussian_interp.cu (interp_tile.cuh)
using cuda::interp::kR;
using cuda::interp::kTile;
using cuda::interp::kWin;
constexpr int kRowsPerThread = cuda::interp::kRows;

struct InterpArgs {
    int32_t n, c, h, w;
    float sigma;
    int32_t relu;
    bool hasResidual;
    int64_t outN, outQ, outC, resN, resQ, resC;
    int32_t slice, slices;
    bool resVec;  // channels-last residual whose 16-byte pieces of 16-channel chunks are aligned
};

using cuda::interp::columnPass;
using cuda::interp::rowPass;

// The mask of a tile's halo (kSize x kSize: the tile at (tileX, tileY) of image n with its
// kR-pixel border; 0 outside the map) and each sampled position's row (index; -1 elsewhere).
template <int kSize, typename T>
__device__ __forceinline__ void loadHalo(float (*sM)[kSize + 1], int32_t (*sIdx)[kSize + 1], T const* __restrict__ mask,
                                         int32_t const* __restrict__ index, int tileX, int tileY, int n, int32_t h,
                                         int32_t w) {
    size_t const hw = static_cast<size_t>(h) * w;
    for (int i = threadIdx.x; i < kSize * kSize; i += kThreads) {
        int const r = i / kSize, c = i % kSize;
        int const yy = tileY - kR + r, xx = tileX - kR + c;
        bool const inside = yy >= 0 && yy < h && xx >= 0 && xx < w;
        size_t const q = n * hw + static_cast<size_t>(yy) * w + xx;
        float const m = inside ? cuda::ld(mask, q) : 0.0f;
        int32_t const row = inside ? __ldg(index + q) : -1;  // loaded beside the mask, not after it
        sM[r][c] = m;
        sIdx[r][c] = m > 0.0f ? row : -1;
    }
}

template <typename T, typename RowT, typename ResT>
__global__ void __launch_bounds__(kThreads, 3)
    interpRowsKernel(RowT const* __restrict__ rows, int32_t const* __restrict__ index, T const* __restrict__ mask,
                     T const* __restrict__ bias, ResT const* __restrict__ residual, T* __restrict__ out,
                     InterpArgs p) {
    cuda::chainStart();
    __shared__ float sM[kHalo][kHalo + 1];
    __shared__ int32_t sIdx[kHalo][kHalo + 1];
    __shared__ float sMF[kHalo][kHalo + 1];
    __shared__ float sRow[2][kHalo][kTile + 1];

    int const tid = threadIdx.x;
    int const tileX = blockIdx.x * kTile, tileY = blockIdx.y * kTile;
    int const n = blockIdx.z / p.slices;
    int const c0 = (blockIdx.z % p.slices) * p.slice;
    int const cEnd = min(c0 + p.slice, p.c);

    float g[kWin];
    float const a = cuda::interp::gaussianWindow(p.sigma, g);

    loadHalo<kHalo>(sM, sIdx, mask, index, tileX, tileY, n, p.h, p.w);
    __syncthreads();
    rowPass(sM, sRow[0], g, tid);
    __syncthreads();

    int const tx = tid % kTile, ty0 = (tid / kTile) * kRowsPerThread;
    int const x = tileX + tx;
    float sumM[kRowsPerThread], mq[kRowsPerThread];
    columnPass(sRow[0], tx, ty0, g, sumM);
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) mq[r] = sM[ty0 + r + kR][tx + kR];

    int buf = 1;
    for (int c = c0; c < cEnd; ++c, buf ^= 1) {
        for (int i = tid; i < kHalo * kHalo; i += kThreads) {
            int const r = i / kHalo, cc = i % kHalo;
            float const m = sM[r][cc];
            int32_t const row = sIdx[r][cc];
            float v = 0.0f;
            if (m > 0.0f && row >= 0) v = math::interpSample(m, cuda::ld(rows, static_cast<size_t>(row) * p.c + c));
            sMF[r][cc] = v;
        }
        __syncthreads();
        float mf[kRowsPerThread];
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) mf[r] = sMF[ty0 + r + kR][tx + kR];
        rowPass(sMF, sRow[buf], g, tid);
        __syncthreads();
        float sumMF[kRowsPerThread];
        columnPass(sRow[buf], tx, ty0, g, sumMF);
        float const bc = bias ? cuda::ld(bias, c) : 0.0f;
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
            int const y = tileY + ty0 + r;
            if (y >= p.h || x >= p.w) continue;
            int64_t const q = static_cast<int64_t>(y) * p.w + x;
            float const res =
                p.hasResidual ? cuda::ld(residual, static_cast<size_t>(n * p.resN + q * p.resQ + c * p.resC)) : 0.0f;
            float const rr = math::interpRatio(a, sumMF[r], sumM[r]);
            cuda::st(out, static_cast<size_t>(n * p.outN + q * p.outQ + c * p.outC),
                     math::interpCombine(mq[r], mf[r], rr, bc, res, p.hasResidual, p.relu));
        }
    }
}

// The same interpolation for channels-last outputs (Y1 always; y when the block's layout is
// NHWC): the kernel above walks one channel at a time with consecutive threads on consecutive
// positions, so with NHWC rows, residual and output every load and store of it is 2-4 bytes of
// a separate 32-byte sector, C elements apart. Here consecutive threads take consecutive
// channel pairs of one position (16 channels: one 32-byte fp16 sector per position and chunk), the
// tile is 16x16 with its halo, and the block walks its channel slice in chunks of 16. Each
// output element takes the same sums in the same order (row pass dx = -3..3, then the column
// pass dy = -3..3, math.h), so under the emulation the bits equal interpRowsKernel's and the CPU
// twin's (on a GPU nvcc's FMA contraction, which follows each kernel's unrolling, may move the last bit).
namespace nhwc {
constexpr int kT = 16;                // tile width and height
constexpr int kH = kT + 2 * kR;       // 22: the tile with its halo
constexpr int kCK = 16;               // channels per chunk
constexpr int kPairs = kCK / 2;       // threads per position: two adjacent channels each
constexpr int kRowTasks = kH * kPairs;  // 176 (halo row, pair) tasks of the row pass, one per thread
constexpr int kColRows = kT * kT * kPairs / kThreads;  // 8 output rows per thread in the column pass
constexpr int kRowStride = kT * kCK + 16;  // a halo row of sRowMF; +16 floats: the two halo rows
                                           // of a half warp's 8-byte stores fall in different banks
static_assert(kRowTasks <= kThreads && kT % kColRows == 0, "the row pass is one round, the column pass whole");
#ifdef SSI_CUDA_EMULATION
// Small test shapes still walk several chunks per block and split the channels over blockIdx.z.
constexpr int64_t kTargetBlocks = 1;
constexpr int kMaxChunksPerBlock = 2;
#else
constexpr int64_t kTargetBlocks = 1024;  // ~8 blocks per SM of an H100 before chunks are merged
constexpr int kMaxChunksPerBlock = 8;
#endif
}  // namespace nhwc

// Copies channels [c0, c0 + cnt) of the residual at the tile's positions into sRes
// ([tile position][kCK channels]; positions outside the map are left alone): as 16-byte
// asynchronous copies when p.resVec (channels-last, every piece 16-byte aligned), else element by
// element. The caller waits (cuda::copyAsyncWait) and synchronises before reading.
template <typename ResT>
__device__ __forceinline__ void stageResidual(ResT* sRes, ResT const* __restrict__ residual, InterpArgs const& p,
                                              int n, int tileX, int tileY, int c0, int cnt) {
    using namespace nhwc;
    if (p.resVec) {
        constexpr int kE = 16 / sizeof(ResT);  // elements per 16-byte piece
        constexpr int kPieces = kCK / kE;
        static_assert(kCK % kE == 0, "a chunk is whole 16-byte pieces");
#pragma unroll 1  // unrolled, its per-piece addresses stay live across the row pass (+8 registers)
        for (int i = threadIdx.x; i < kT * kT * kPieces; i += kThreads) {
            int const pos = i / kPieces, piece = i % kPieces;
            int const gy = tileY + pos / kT, gx = tileX + pos % kT;
            if (gy >= p.h || gx >= p.w || piece * kE >= cnt) continue;
            int64_t const q = static_cast<int64_t>(gy) * p.w + gx;
            cuda::copyAsync16(sRes + pos * kCK + piece * kE, residual + n * p.resN + q * p.resQ + c0 + piece * kE);
        }
        return;
    }
#pragma unroll 1
    for (int i = threadIdx.x; i < kT * kT * kCK; i += kThreads) {
        int const pos = i / kCK, cc = i % kCK;
        int const gy = tileY + pos / kT, gx = tileX + pos % kT;
        if (gy >= p.h || gx >= p.w || cc >= cnt) continue;
        int64_t const q = static_cast<int64_t>(gy) * p.w + gx;
        sRes[i] = residual[n * p.resN + q * p.resQ + (c0 + cc) * p.resC];
    }
}

// A halo position of the NHWC kernel: its mask and, where it is sampled (m > 0 and a row), its
// row's element offset row * C (else kNoRow), one 8-byte shared-memory load. 32-bit offsets: the
// launcher sends maps with N*H*W*C >= kNoRow to interpRowsKernel. Before, each of a row pass's 22
// loads spent ~12 instructions on a signed 64-bit row * C (the SASS: sign extension, a wide
// multiply, the constants reloaded under each load's predicate); now one wide add.
struct alignas(8) HaloEntry {
    float m;
    uint32_t off;
};
constexpr uint32_t kNoRow = 0xffffffffu;

template <typename T>
__device__ __forceinline__ void loadHaloEntries(HaloEntry (*sE)[nhwc::kH + 1], T const* __restrict__ mask,
                                                int32_t const* __restrict__ index, int tileX, int tileY, int n,
                                                InterpArgs const& p) {
    using nhwc::kH;
    size_t const hw = static_cast<size_t>(p.h) * p.w;
    for (int i = threadIdx.x; i < kH * kH; i += kThreads) {
        int const r = i / kH, c = i % kH;
        int const yy = tileY - kR + r, xx = tileX - kR + c;
        bool const inside = yy >= 0 && yy < p.h && xx >= 0 && xx < p.w;
        size_t const q = n * hw + static_cast<size_t>(yy) * p.w + xx;
        float const m = inside ? cuda::ld(mask, q) : 0.0f;
        int32_t const row = inside ? __ldg(index + q) : -1;  // loaded beside the mask, not after it
        bool const sampled = m > 0.0f && row >= 0;
        sE[r][c] = HaloEntry{m, sampled ? static_cast<uint32_t>(row) * static_cast<uint32_t>(p.c) : kNoRow};
    }
}

// Two adjacent channels of a row, the NHWC kernel's unit: one 4-byte (fp16) or 8-byte (fp32)
// load, shared-memory access and store for both, and one halo entry, mask test and address for
// both (the SASS of one channel per thread: ~120 instructions per output element, against ~17
// products and sums in the arithmetic).
template <typename E>
struct PairOf;
template <>
struct PairOf<float> {
    using type = float2;
    __device__ __forceinline__ static float lo(float2 v) { return v.x; }
    __device__ __forceinline__ static float hi(float2 v) { return v.y; }
    __device__ __forceinline__ static float2 make(float a, float b) { return make_float2(a, b); }
    __device__ __forceinline__ static float2 join(float a, float b) { return make_float2(a, b); }
};
template <>
struct PairOf<__half> {
    using type = __half2;
    __device__ __forceinline__ static float lo(__half2 v) { return __low2float(v); }
    __device__ __forceinline__ static float hi(__half2 v) { return __high2float(v); }
    __device__ __forceinline__ static __half2 make(float a, float b) {
        return __halves2half2(__float2half_rn(a), __float2half_rn(b));
    }
    __device__ __forceinline__ static __half2 join(__half a, __half b) { return __halves2half2(a, b); }
};

// A pair at p (aligned to the pair; shared or global memory) read or written as one access:
// memcpy in the emulation, where the host compiler's aliasing rules apply, which faults as a GPU
// would when p is not aligned to the pair (the output store's alignment is the launcher's test).
template <typename V, typename E>
__device__ __forceinline__ V ldsPair(E const* p) {
#ifdef SSI_CUDA_EMULATION
    if (reinterpret_cast<uintptr_t>(p) % sizeof(V))
        throw std::runtime_error("ldsPair: address not aligned to the pair");
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
#else
    return *reinterpret_cast<V const*>(p);
#endif
}
template <typename V, typename E>
__device__ __forceinline__ void stPair(E* p, V v) {
#ifdef SSI_CUDA_EMULATION
    if (reinterpret_cast<uintptr_t>(p) % sizeof(V))
        throw std::runtime_error("stPair: address not aligned to the pair");
    std::memcpy(p, &v, sizeof v);
#else
    *reinterpret_cast<V*>(p) = v;
#endif
}

// Channels c, c + 1 of the row at p = rows + offset + c: one vector load when kVec (C even, the
// rows aligned), else two element loads (the second only where c + 1 is live).
template <bool kVec, typename E>
__device__ __forceinline__ typename PairOf<E>::type loadRowPair(E const* p, bool live1) {
    using P = PairOf<E>;
    if constexpr (kVec) {
        return __ldg(reinterpret_cast<typename P::type const*>(p));
    } else {
        return P::join(__ldg(p), live1 ? __ldg(p + 1) : E(0.0f));
    }
}

// fp32: 2 blocks per SM, as the 22 pairs of a row pass's loads take 44 registers (3 blocks, at
// most 80 registers, spilled 200 B); fp16 at 3 blocks has none.
template <typename T, typename RowT, typename ResT, bool kVec>
__global__ void __launch_bounds__(kThreads, sizeof(RowT) == 2 ? 3 : 2)
    interpRowsNhwcKernel(RowT const* __restrict__ rows, int32_t const* __restrict__ index,
                         T const* __restrict__ mask, T const* __restrict__ bias, ResT const* __restrict__ residual,
                         T* __restrict__ out, InterpArgs p) {
    cuda::chainStart();
    using namespace nhwc;
    using RP = PairOf<RowT>;
    using RowPair = typename RP::type;
    __shared__ HaloEntry sE[kH][kH + 1];
    __shared__ float sRowM[kH][kT + 1];
    __shared__ float sSumM[kT][kT + 1];
    __shared__ __align__(16) float sRowMF[kH * kRowStride];  // [halo row][tile column][channel of the chunk]
    __shared__ __align__(16) ResT sRes[kT * kT * kCK];       // the chunk's residual [tile position][channel]
    // fp16: the rows at the tile's own positions, kept by the row pass for the column pass, which
    // loaded them again (4 dependent L2 round trips per chunk and thread). fp32 would pass the
    // 48 KB of static shared memory and loads them.
    constexpr bool kStageCentre = sizeof(RowT) == 2;
    // [tile row][tile column][pair], rows padded by 8 pairs: the 4 halo rows of a warp's row-pass
    // stores fall in different banks (unpadded, 128 words apart: 4-way conflicts)
    constexpr int kCtrStride = kT * kPairs + 8;
    __shared__ __align__(16) RowPair sCtr[kStageCentre ? kT * kCtrStride : 1];

    int const tid = threadIdx.x;
    int const tileX = blockIdx.x * kT, tileY = blockIdx.y * kT;
    int const n = blockIdx.z / p.slices;
    int const cBeg = (blockIdx.z % p.slices) * p.slice;
    int const cEnd = min(cBeg + p.slice, p.c);

    float g[kWin];
    float const a = cuda::interp::gaussianWindow(p.sigma, g);

    loadHaloEntries(sE, mask, index, tileX, tileY, n, p);
    __syncthreads();
    for (int e = tid; e < kH * kT; e += kThreads) {  // mask sums: row pass, then column pass
        int const r = e / kT, x = e % kT;
        float v[kWin];
#pragma unroll
        for (int d = 0; d < kWin; ++d) v[d] = sE[r][x + d].m;
        sRowM[r][x] = math::windowSum(g, v, 1);
    }
    __syncthreads();
    for (int e = tid; e < kT * kT; e += kThreads) {
        int const y = e / kT, x = e % kT;
        float v[kWin];
#pragma unroll
        for (int d = 0; d < kWin; ++d) v[d] = sRowM[y + d][x];
        sSumM[y][x] = math::windowSum(g, v, 1);
    }

    int const pair = tid % kPairs;      // channels c0 + 2 pair and c0 + 2 pair + 1 of each chunk
    int const r = tid / kPairs;         // the row pass's halo row (r < kH)
    int const x = r % kT, gx = tileX + x;  // the column pass's tile column
    int const yBeg = tid / (kPairs * kT) * kColRows;  // and its first output row
    // the output of this thread's column, advanced by a row per output row (64-bit offsets once,
    // not per element)
    int64_t const outStep = static_cast<int64_t>(p.w) * p.outQ;
    T* const outCol = out + n * p.outN + (static_cast<int64_t>(tileY + yBeg) * p.w + gx) * p.outQ;
    for (int c0 = cBeg; c0 < cEnd; c0 += kCK) {
        int const c = c0 + 2 * pair;
        bool const live0 = c < cEnd, live1 = c + 1 < cEnd;
        RowT const* const rowsC = cuda::opaque(rows + c);  // + a halo entry's offset: its row's channel c
        __syncthreads();  // sSumM written; the previous chunk's column pass done with sRowMF and sRes
        // The chunk's residual goes to shared memory by asynchronous copies issued before the row
        // pass, so it streams in under the row pass's loads. Loaded inside the column pass it came
        // 4 loads at a time per thread: about 2 KB in flight per block, a fraction of what an SM
        // needs to stream from HBM at full rate [est].
        if (p.hasResidual) stageResidual(sRes, residual, p, n, tileX, tileY, c0, min(kCK, cEnd - c0));
        // row pass: halo row r of channels c and c + 1, its kT row sums of m f for each
        int const gyr = tileY - kR + r;
        float* const dstRow = sRowMF + min(r, kH - 1) * kRowStride + 2 * pair;  // written only where r < kH
        if (r < kH && live0 && (gyr < 0 || gyr >= p.h)) {  // a halo row outside the map: its sums are +0
#pragma unroll
            for (int xs = 0; xs < kT; ++xs) stPair(dstRow + xs * kCK, make_float2(0.0f, 0.0f));
        } else if (r < kH && live0) {
            // the loads first, all in flight together (a shared-memory store between two of them
            // kept one in flight), then the sums
            RowPair fr[kH];
#pragma unroll
            for (int i = 0; i < kH; ++i) {
                uint32_t const off = sE[r][i].off;
                fr[i] = off != kNoRow ? loadRowPair<kVec>(rowsC + off, live1) : RP::make(0.0f, 0.0f);
            }
            float v0[kH], v1[kH];
            bool const centreRow = r >= kR && r < kR + kT;
#pragma unroll
            for (int i = 0; i < kH; ++i) {
                HaloEntry const e = sE[r][i];
                // a row only where m > 0, so interpSample(m, f) = f m here
                bool const sampled = e.off != kNoRow;
                v0[i] = sampled ? RP::lo(fr[i]) * e.m : 0.0f;
                v1[i] = sampled ? RP::hi(fr[i]) * e.m : 0.0f;
                if constexpr (kStageCentre) {
                    if (i >= kR && i < kR + kT && centreRow)
                        sCtr[(r - kR) * kCtrStride + (i - kR) * kPairs + pair] = fr[i];
                }
            }
#pragma unroll
            for (int xs = 0; xs < kT; ++xs)
                stPair(dstRow + xs * kCK, make_float2(math::windowSum(g, v0 + xs, 1), math::windowSum(g, v1 + xs, 1)));
        }
        cuda::copyAsyncWait();  // this thread's residual copies; the barrier shows them to all
        __syncthreads();
        // column pass and the combination: tile column x, output rows yBeg.., channels c and c + 1
        if (!live0 || gx >= p.w) continue;
        float const b0 = bias ? cuda::ld(bias, c) : 0.0f;
        float const b1 = bias && live1 ? cuda::ld(bias, c + 1) : 0.0f;
        float const* col = sRowMF + x * kCK + 2 * pair;
        T* o = outCol + c * p.outC;
#pragma unroll 2
        for (int y = yBeg; y < yBeg + kColRows; ++y, o += outStep) {
            if (tileY + y >= p.h) break;
            HaloEntry const e = sE[y + kR][x + kR];
            float mf0 = 0.0f, mf1 = 0.0f;
            if (e.off != kNoRow) {
                RowPair f;
                if constexpr (kStageCentre)
                    f = sCtr[y * kCtrStride + x * kPairs + pair];
                else
                    f = loadRowPair<kVec>(rowsC + e.off, live1);
                mf0 = math::interpSample(e.m, RP::lo(f));
                mf1 = math::interpSample(e.m, RP::hi(f));
            }
            // N / D only where interpCombine reads it (m < 1): a sampled position of a 0/1 mask
            // skips the column sums and the divisions [est: ~half of the pass there]; the same bits
            float rr0 = 0.0f, rr1 = 0.0f;
            if (e.m < 1.0f) {
                float v0[kWin], v1[kWin];
#pragma unroll
                for (int d = 0; d < kWin; ++d) {
                    float2 const s = ldsPair<float2>(col + (y + d) * kRowStride);
                    v0[d] = s.x;
                    v1[d] = s.y;
                }
                float const sumM = sSumM[y][x];
                rr0 = math::interpRatio(a, math::windowSum(g, v0, 1), sumM);
                rr1 = math::interpRatio(a, math::windowSum(g, v1, 1), sumM);
            }
            int const at = (y * kT + x) * kCK + 2 * pair;
            float const res0 = p.hasResidual ? cuda::toFloat(sRes[at]) : 0.0f;
            float const res1 = p.hasResidual ? cuda::toFloat(sRes[at + 1]) : 0.0f;
            float const out0 = math::interpCombine(e.m, mf0, rr0, b0, res0, p.hasResidual, p.relu);
            float const out1 = math::interpCombine(e.m, mf1, rr1, b1, res1, p.hasResidual, p.relu);
            if constexpr (kVec) {
                stPair(o, PairOf<T>::make(out0, out1));
            } else {
                cuda::st(o, 0, out0);
                if (live1) cuda::st(o, 1, out1);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Launch helpers.
struct Geometry {
    int64_t pos1, pos2;  // N*H*W, N*Ho*Wo
    int32_t ho, wo, tiles1, tiles2;
};

Geometry geometry(BottleneckParams const& p) {
    Geometry g{};
    g.ho = (p.h - 1) / p.stride + 1;
    g.wo = (p.w - 1) / p.stride + 1;
    g.pos1 = static_cast<int64_t>(p.n) * p.h * p.w;
    g.pos2 = static_cast<int64_t>(p.n) * g.ho * g.wo;
    g.tiles1 = static_cast<int32_t>((g.pos1 + kTileCount - 1) / kTileCount);
    g.tiles2 = static_cast<int32_t>((g.pos2 + kTileCount - 1) / kTileCount);
    return g;
}

// Where conv2's packed 3x3 weights start in the packedWeights buffer: after the DCN offsets' when
// there are any, at a 256-byte boundary, because the GEMM reads them as 16-byte vectors (the
// offsets' 9 x kOffsetLd x Cin elements end on one; with 18 columns they did not unless Cin % 4
// == 0 in fp16: a misaligned vector load faulted).
size_t packedConv2Offset(BottleneckParams const& p, size_t elementBytes) {
    return p.dcn ? align256(size_t{9} * kOffsetLd * p.cin * elementBytes) : 0;
}

// The block's row GEMMs (maxM, cout, cin, kk), as runBottleneck launches them on the portable path
// (the pairs as one launch; a pair launched as two needs no more).
SplitNeeds splitNeeds(BottleneckParams const& p, Geometry const& G) {
    SplitNeeds n{};
    needSplit(n, G.pos1, kTapCols, p.cin, 1);  // mask taps
    SplitFootprint const conv1 = splitFootprint(G.pos1, p.planes, p.cin, 1);
    needSplit(n, p.dcn ? splitFootprint(G.pos2, kTapCols, p.cin, 3) : SplitFootprint{}, conv1);  // DCN offsets, conv1
    needSplit(n, G.pos2, p.planes, p.planes, 3);  // conv2
    SplitFootprint const conv3 = splitFootprint(G.pos2, p.cout, p.planes, 1);
    needSplit(n, p.downsample ? splitFootprint(G.pos2, p.cout, p.cin, 1) : SplitFootprint{}, conv3);  // shortcut, conv3
    return n;
}

// A row GEMM's arguments completed for its launch: the split count, the alignments.
GemmArgs launchArgs(GemmArgs a, void const* src, void const* wgt) {
    a.splits = a.partial ? gemmSplits(a.maxM, a.cout, gemmSteps(a.cin, a.kk)) : 1;
    // TensorRT's tensors and the workspace are 256-byte aligned, but a caller's view may not be:
    // then the rows go element by element (a misaligned 16-byte load faults)
    a.alignedA = reinterpret_cast<uintptr_t>(src) % 16 == 0;
    a.alignedB = reinterpret_cast<uintptr_t>(wgt) % 16 == 0;
    if (a.ldB == 0) a.ldB = a.cout;
    // rowGemmTile takes its cp.async path where its rows are 16-byte vectors, except with
    // SSI_BLOCK_GEMM=regs (the register path, to time the pipeline against)
    a.pipeline = bottleneckGemmPath() != BlockGemmPath::kPortableRegisters;
    return a;
}

template <typename T>
bool gemmOnTensorCores(GemmArgs const& a) {
    return std::is_same_v<T, __half> && a.cin >= 16 && a.cout >= 16;
}

template <typename T, typename OutT>
cudaError_t rowGemm(T const* src, T const* wgt, T const* bias, OutT* out, GemmArgs a, cudaStream_t stream) {
    if (a.maxM == 0) return cudaSuccess;
    a = launchArgs(a, src, wgt);
    dim3 const grid(cuda::ceilDiv(a.maxM, kBM), cuda::ceilDiv(a.cout, kBN), static_cast<unsigned>(a.splits));
    constexpr bool kHalf = std::is_same_v<T, __half>;
    bool const tc = gemmOnTensorCores<T>(a);
    // (deformable taps come with packed weights: the 3x3 convs; torch-layout B on tensor cores: kColB)
    if (a.offsets) {
        auto* k = tc ? &rowGemmKernel<T, OutT, true, kHalf> : &rowGemmKernel<T, OutT, true, false>;
        SSI_BLOCK_LAUNCH(k, grid, kGemmThreads, stream, src, wgt, bias, out, a);
    } else {
        auto* k = !tc ? &rowGemmKernel<T, OutT, false, false>
                      : a.packed ? &rowGemmKernel<T, OutT, false, kHalf> : &rowGemmKernel<T, OutT, false, kHalf, kHalf>;
        SSI_BLOCK_LAUNCH(k, grid, kGemmThreads, stream, src, wgt, bias, out, a);
    }
    return cuda::launchStatus();
}

// Two independent row GEMMs without deformable taps (A: packed weights when kPackedA, else
// torch's; B: torch's) as one launch (rowGemmPairKernel) when both run on the same units: tensor
// cores in fp16 (the SIMT pair of fp16 GEMMs narrower than 16 channels is launched as two), SIMT
// in float32. B's split-K partial sums and tile counters follow A's (splitNeeds counts the pair
// together).
template <typename T, typename OutA, typename OutB, bool kPackedA>
cudaError_t rowGemmPair(T const* srcA, T const* wA, T const* bA, OutA* outA, GemmArgs a, T const* srcB, T const* wB,
                        T const* bB, OutB* outB, GemmArgs b, cudaStream_t stream) {
    a = launchArgs(a, srcA, wA);
    SplitFootprint const fa = a.partial ? splitFootprint(a.maxM, a.cout, a.cin, a.kk) : SplitFootprint{};
    if (b.partial) {
        b.partial += fa.partialBytes / sizeof(float);
        b.counters += fa.counters;
    }
    b = launchArgs(b, srcB, wB);
    constexpr bool kHalf = std::is_same_v<T, __half>;
    bool const tc = gemmOnTensorCores<T>(a);
    if (a.maxM == 0 || b.maxM == 0 || tc != gemmOnTensorCores<T>(b) || (kHalf && !tc) || a.packed != kPackedA ||
        b.packed || a.offsets || b.offsets) {
        SSI_TRY(rowGemm<T, OutA>(srcA, wA, bA, outA, a, stream));
        return rowGemm<T, OutB>(srcB, wB, bB, outB, b, stream);
    }
    auto grid = [](GemmArgs const& g) {
        PairGrid r{cuda::ceilDiv(g.maxM, kBM), cuda::ceilDiv(g.cout, kBN), 0};
        r.blocks = r.gx * r.gy * static_cast<uint32_t>(g.splits);
        return r;
    };
    PairGrid const ga = grid(a), gb = grid(b);
    if (int64_t{ga.blocks} + gb.blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    unsigned const blocks = ga.blocks + gb.blocks;
    if constexpr (kHalf) {  // tensor cores: A's B tile column-major unless packed, B's always
        auto* k = &rowGemmPairKernel<T, OutA, OutB, true, !kPackedA, true>;
        SSI_BLOCK_LAUNCH(k, blocks, kGemmThreads, stream, srcA, wA, bA, outA, a, ga, srcB, wB, bB, outB, b, gb);
    } else {
        auto* k = &rowGemmPairKernel<T, OutA, OutB, false, false, false>;
        SSI_BLOCK_LAUNCH(k, blocks, kGemmThreads, stream, srcA, wA, bA, outA, a, ga, srcB, wB, bB, outB, b, gb);
    }
    return cuda::launchStatus();
}

template <typename T, typename RowT, typename ResT>
cudaError_t interpRows(RowT const* rows, int32_t const* index, T const* mask, T const* bias, ResT const* residual,
                       T* out, InterpArgs p, cudaStream_t stream) {
    // channels-last output and residual, and every row offset row * C below 2^32 - 1 (HaloEntry)
    bool const offsetsFit = static_cast<int64_t>(p.n) * p.h * p.w * p.c < int64_t{kNoRow};
    if (p.outC == 1 && (!p.hasResidual || p.resC == 1) && offsetsFit) {
        using namespace nhwc;
        constexpr int64_t kE = 16 / sizeof(ResT);
        p.resVec = p.hasResidual && reinterpret_cast<uintptr_t>(residual) % 16 == 0 && p.resQ % kE == 0 &&
                   p.resN % kE == 0 && p.c % kE == 0;
        int64_t const tiles = static_cast<int64_t>(cuda::ceilDiv(p.w, kT)) * cuda::ceilDiv(p.h, kT) * p.n;
        int64_t const chunks = cuda::ceilDiv(p.c, kCK);
        int64_t const per = std::min<int64_t>(kMaxChunksPerBlock,
                                              std::max<int64_t>(1, chunks * tiles / kTargetBlocks));
        p.slice = static_cast<int32_t>(per * kCK);
        p.slices = (p.c + p.slice - 1) / p.slice;
        dim3 const grid(cuda::ceilDiv(p.w, kT), cuda::ceilDiv(p.h, kT),
                        static_cast<unsigned>(static_cast<int64_t>(p.n) * p.slices));
        if (grid.y > 65535u || static_cast<int64_t>(p.n) * p.slices > 65535) return cudaErrorInvalidConfiguration;
        // pairs of channels as one vector: C even, rows and output aligned to a pair, the output's
        // image and position strides even (TensorRT's tensors and the workspace are 256-byte aligned)
        bool const vec = p.c % 2 == 0 && p.outN % 2 == 0 && p.outQ % 2 == 0 &&
                         reinterpret_cast<uintptr_t>(rows) % (2 * sizeof(RowT)) == 0 &&
                         reinterpret_cast<uintptr_t>(out) % (2 * sizeof(T)) == 0;
        auto* k = vec ? &interpRowsNhwcKernel<T, RowT, ResT, true> : &interpRowsNhwcKernel<T, RowT, ResT, false>;
        SSI_BLOCK_LAUNCH(k, grid, kThreads, stream, rows, index, mask, bias, residual, out, p);
        return cuda::launchStatus();
    }
    int64_t const tiles = static_cast<int64_t>(cuda::ceilDiv(p.w, kTile)) * cuda::ceilDiv(p.h, kTile) * p.n;
    int64_t const want = (static_cast<int64_t>(p.c) * tiles + 511) / 512;
    p.slice = static_cast<int32_t>(want < 4 ? 4 : (want > 32 ? 32 : want));
    p.slices = (p.c + p.slice - 1) / p.slice;
    dim3 const grid(cuda::ceilDiv(p.w, kTile), cuda::ceilDiv(p.h, kTile),
                    static_cast<unsigned>(static_cast<int64_t>(p.n) * p.slices));
    if (grid.y > 65535u || static_cast<int64_t>(p.n) * p.slices > 65535) return cudaErrorInvalidConfiguration;
    auto* k = &interpRowsKernel<T, RowT, ResT>;
    SSI_BLOCK_LAUNCH(k, grid, kThreads, stream, rows, index, mask, bias, residual, out, p);
    return cuda::launchStatus();
}

// contract.forced_count: round-half-even of float32(density) * numel in double, clamped to 1..numel.
int32_t forcedCount(float density, int32_t numel) {
    double const k = std::nearbyint(static_cast<double>(density) * static_cast<double>(numel));
    return static_cast<int32_t>(std::max(1.0, std::min(static_cast<double>(numel), k)));
}

#if SSI_SM90
// The Hopper GEMM for fp16 rows = act(A W^T + b) (A gathered by `list` or plain rows), when
// selected and applicable; false: the portable kernel.
bool useSm90(int32_t n, int32_t k) {
    return bottleneckGemmPath() == BlockGemmPath::kSm90 && gatherGemmSm90Supported(n, k);
}
#endif

template <typename T>
cudaError_t prepare(BottleneckTensors const& t, BottleneckParams const& p, Geometry const& G, T* taps, T* offsets,
                    T* conv2, int32_t* counters, cudaStream_t stream) {
    auto W = [](void const* v) { return static_cast<T const*>(v); };
    PrepArgs<T> a{};
    a.mask1W = W(t.mask1W), a.mask2W = W(t.mask2W), a.offsetW = W(t.offsetW), a.conv2W = W(t.conv2W);
    a.taps = taps, a.offsets = offsets, a.conv2 = conv2, a.counters = counters;
    a.cin = p.cin, a.planes = p.planes, a.nCounters = static_cast<int32_t>(splitNeeds(p, G).counters);
    a.tapBlocks = cuda::ceilDiv(static_cast<size_t>(kTapCols) * p.cin, kThreads);
    a.offTilesX = cuda::ceilDiv(static_cast<size_t>(9) * p.cin, 32);
    a.offBlocks = p.dcn ? a.offTilesX * cuda::ceilDiv(kTapCols, 32) : 0;
    a.convTilesX = cuda::ceilDiv(static_cast<size_t>(9) * p.planes, 32);
    a.convBlocks = a.convTilesX * cuda::ceilDiv(p.planes, 32);
    int64_t const blocks = int64_t{a.tapBlocks} + a.offBlocks + a.convBlocks + cuda::ceilDiv(a.nCounters, kThreads);
    if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    auto* k = &prepKernel<T>;
    SSI_BLOCK_LAUNCH(k, static_cast<unsigned>(blocks), kThreads, stream, a);
    return cuda::launchStatus();
}

// Whether gemm1x1 runs this 1x1 GEMM on the Hopper path (then it is launched on its own).
template <typename T>
bool hopperGemm(int32_t n, int32_t k) {
#if SSI_SM90
    if constexpr (std::is_same_v<T, __half>) return useSm90(n, k);
#endif
    (void)n, (void)k;
    return false;
}

template <typename T>
cudaError_t gemm1x1(T const* a, int32_t const* list, int32_t const* count, int32_t maxM, int32_t n, int32_t k,
                    T const* w, T const* bias, int32_t relu, T* d, GemmArgs const& portable, cudaStream_t stream) {
#if SSI_SM90
    if constexpr (std::is_same_v<T, __half>) {
        if (useSm90(n, k))
            return launchGatherGemmSm90(a, k, list, count, maxM, n, k, w, bias, relu, d, stream);
    }
#else
    (void)list, (void)count, (void)maxM, (void)n, (void)k, (void)relu;
#endif
    return rowGemm<T, T>(a, w, bias, d, portable, stream);
}

template <typename T>
cudaError_t runBottleneck(BottleneckTensors const& t, BottleneckParams const& p, BottleneckLayout const& L,
                          unsigned char* ws, cudaStream_t stream) {
    Geometry const G = geometry(p);
    auto at = [&](int64_t off) { return ws + off; };
    auto const* x = static_cast<T const*>(t.x);
    auto W = [](void const* v) { return static_cast<T const*>(v); };
    T* const m1 = static_cast<T*>(t.mask1);
    T* const m2 = static_cast<T*>(t.mask2);
    int32_t const pos1 = static_cast<int32_t>(G.pos1), pos2 = static_cast<int32_t>(G.pos2);
    int32_t const hw = p.h * p.w;
    float* const partial = L.splitPartial >= 0 ? reinterpret_cast<float*>(at(L.splitPartial)) : nullptr;
    int32_t* const counters = L.splitCounters >= 0 ? reinterpret_cast<int32_t*>(at(L.splitCounters)) : nullptr;
    // the 3x3 weights packed by prepare(): the DCN offsets' first (when dcn), then conv2's
    T* const offsetPacked = reinterpret_cast<T*>(at(L.packedWeights));
    T* const conv2Packed = reinterpret_cast<T*>(at(L.packedWeights + packedConv2Offset(p, sizeof(T))));

    // x as rows
    T const* xr = x;
    if (!p.channelsLast) {
        T* rows = reinterpret_cast<T*>(at(L.xRows));
        dim3 const grid(cuda::ceilDiv(hw, 32), cuda::ceilDiv(p.cin, 32), p.n);
        auto* k = &toRowsKernel<T>;
        SSI_BLOCK_LAUNCH(k, grid, kThreads, stream, x, rows, p.cin, hw);
        SSI_TRY(cuda::launchStatus());
        xr = rows;
    }

    // masks
    float* taps = reinterpret_cast<float*>(at(L.taps));
    float* l1 = reinterpret_cast<float*>(at(L.logits1));
    float* l2 = reinterpret_cast<float*>(at(L.logits2));
    {
        T* tapW = reinterpret_cast<T*>(at(L.tapWeights));
        SSI_TRY(prepare<T>(t, p, G, tapW, offsetPacked, conv2Packed, counters, stream));
        GemmArgs tg{};  // every position, plain rows of x
        tg.maxM = pos1, tg.direct = true;
        tg.n = p.n, tg.h = 1, tg.w = 1, tg.ho = 1, tg.wo = 1, tg.kk = 1, tg.stride = 1, tg.pad = 0;
        tg.cin = p.cin, tg.cout = kTapCols, tg.relu = 0, tg.ldOut = kTapCols, tg.partial = partial, tg.counters = counters;
        SSI_TRY(rowGemm<T, float>(xr, static_cast<T const*>(tapW), nullptr, taps, tg, stream));
    }
    // forced density: the logits first (the k-th largest needs all of them); else sampleKernel
    // sums the taps itself
    bool const forced = p.density > 0.0f;
    float* kth = reinterpret_cast<float*>(at(L.kth));
    if (forced) {
        Pair<TapSumJob<T>> const sums{{{W(t.mask1B), l1, 0, 1}, {W(t.mask2B), l2, 1, p.stride}}};
        auto* s = &tapSumKernel<T>;
        SSI_BLOCK_LAUNCH(s, dim3(cuda::ceilDiv(pos1, kThreads), 2), kThreads, stream, static_cast<float const*>(taps),
                         sums, p.n, p.h, p.w);
        SSI_TRY(cuda::launchStatus());
        Pair<KthJob> const jobs{{{l1, hw, forcedCount(p.density, hw), kth},
                                 {l2, G.ho * G.wo, forcedCount(p.density, G.ho * G.wo), kth + p.n}}};
        SSI_BLOCK_LAUNCH(kthLargestKernel, dim3(p.n, 2), kKthThreads, stream, jobs);
        SSI_TRY(cuda::launchStatus());
    }
    int32_t* tc1 = reinterpret_cast<int32_t*>(at(L.tileCounts1));
    int32_t* tc2 = reinterpret_cast<int32_t*>(at(L.tileCounts2));
    int32_t* perm1 = reinterpret_cast<int32_t*>(at(L.perm1));
    int32_t* perm2 = reinterpret_cast<int32_t*>(at(L.perm2));
    int32_t* index1 = reinterpret_cast<int32_t*>(at(L.index1));
    int32_t* index2 = reinterpret_cast<int32_t*>(at(L.index2));
    int32_t* count1 = reinterpret_cast<int32_t*>(at(L.count1));
    int32_t* count2 = reinterpret_cast<int32_t*>(at(L.count2));
    {
        float const* k1 = forced ? kth : nullptr;
        float const* k2 = forced ? kth + p.n : nullptr;
        Pair<SampleJob<T>> const samples{
            {{l1, k1, W(t.mask1B), m1, tc1, p.h, p.w, G.tiles1, 0, 1, math::layerKey(p.seed, p.layer1)},
             {l2, k2, W(t.mask2B), m2, tc2, G.ho, G.wo, G.tiles2, 1, p.stride, math::layerKey(p.seed, p.layer2)}}};
        auto* s = &sampleKernel<T>;
        SSI_BLOCK_LAUNCH(s, dim3(G.tiles1, 2), kThreads, stream, forced ? nullptr : static_cast<float const*>(taps),
                         samples, p.n, p.h, p.w, p.mode, p.gridInterval);
        SSI_TRY(cuda::launchStatus());
        bool const scanned = G.tiles1 > kFusedScanTiles;  // tiles1 >= tiles2
        if (scanned) {
            Pair<ScanJob> const scans{{{tc1, G.tiles1, count1}, {tc2, G.tiles2, count2}}};
            SSI_BLOCK_LAUNCH(scanKernel, dim3(1, 2), kThreads, stream, scans);
            SSI_TRY(cuda::launchStatus());
        }
        Pair<PartitionJob<T>> const parts{{{m1, tc1, count1, perm1, index1, pos1, G.tiles1},
                                           {m2, tc2, count2, perm2, index2, pos2, G.tiles2}}};
        auto* part = &partitionKernel<T>;
        SSI_BLOCK_LAUNCH(part, dim3(G.tiles1, 2), kThreads, stream, parts, static_cast<int32_t>(scanned));
        SSI_TRY(cuda::launchStatus());
    }

    T* rows1 = reinterpret_cast<T*>(at(L.rows1));
    T* y1 = reinterpret_cast<T*>(at(L.y1));
    T* rows2 = reinterpret_cast<T*>(at(L.rows2));
    T* rows3 = reinterpret_cast<T*>(at(L.rows3));
    float* offs = p.dcn ? reinterpret_cast<float*>(at(L.offsets)) : nullptr;

    // conv1 at m1 (1x1 on x's rows) and the DCN offsets at m2 (3x3 stride s on x): both read x and
    // neither needs the other, so one launch (unless conv1 runs on the Hopper GEMM)
    GemmArgs a{};
    a.list = perm1, a.count = count1, a.maxM = pos1;
    a.n = p.n, a.h = p.h, a.w = p.w, a.cin = p.cin, a.ho = p.h, a.wo = p.w, a.kk = 1, a.stride = 1, a.pad = 0;
    a.cout = p.planes, a.relu = 1, a.ldOut = p.planes, a.partial = partial, a.counters = counters;
    GemmArgs c2{};
    c2.list = perm2, c2.count = count2, c2.maxM = pos2;
    c2.n = p.n, c2.h = p.h, c2.w = p.w, c2.ho = G.ho, c2.wo = G.wo, c2.kk = 3, c2.stride = p.stride, c2.pad = 1;
    c2.partial = partial, c2.counters = counters;
    c2.packed = true;
    GemmArgs o = c2;
    o.cin = p.cin, o.cout = kTapCols, o.ldB = kOffsetLd, o.relu = 0, o.ldOut = kTapCols;
    if (p.dcn && !hopperGemm<T>(p.planes, p.cin)) {
        SSI_TRY(rowGemmPair<T, float, T, true>(xr, static_cast<T const*>(offsetPacked), W(t.offsetB), offs, o, xr,
                                               W(t.conv1W), W(t.conv1B), rows1, a, stream));
    } else {
        SSI_TRY(gemm1x1<T>(xr, perm1, count1, pos1, p.planes, p.cin, W(t.conv1W), W(t.conv1B), 1, rows1, a, stream));
        if (p.dcn) SSI_TRY(rowGemm<T, float>(xr, static_cast<T const*>(offsetPacked), W(t.offsetB), offs, o, stream));
    }
    // Y1 = interp(rows1, m1) as dense rows
    InterpArgs ia{};
    ia.n = p.n, ia.c = p.planes, ia.h = p.h, ia.w = p.w, ia.sigma = p.sigma1, ia.relu = 0, ia.hasResidual = false;
    ia.outN = static_cast<int64_t>(hw) * p.planes, ia.outQ = p.planes, ia.outC = 1;
    SSI_TRY(interpRows<T, T, T>(rows1, index1, m1, nullptr, nullptr, y1, ia, stream));

    // conv2 at m2 (3x3 stride s on Y1, regular or deformable)
    c2.cin = p.planes, c2.cout = p.planes, c2.relu = 1, c2.ldOut = p.planes, c2.offsets = offs;
    SSI_TRY(rowGemm<T, T>(y1, static_cast<T const*>(conv2Packed), W(t.conv2B), rows2, c2, stream));

    // conv3 on rows, and the downsample shortcut (1x1 stride s on x): one launch unless either
    // runs on the Hopper GEMM
    GemmArgs c3{};
    c3.count = count2, c3.maxM = pos2, c3.direct = true;
    c3.n = p.n, c3.h = 1, c3.w = 1, c3.ho = 1, c3.wo = 1, c3.kk = 1, c3.stride = 1, c3.pad = 0;
    c3.cin = p.planes, c3.cout = p.cout, c3.relu = 0, c3.ldOut = p.cout, c3.partial = partial, c3.counters = counters;
    T* const sc = p.downsample ? reinterpret_cast<T*>(at(L.shortcut)) : nullptr;
    GemmArgs d{};
    d.maxM = pos2, d.n = p.n, d.h = p.h, d.w = p.w, d.cin = p.cin, d.ho = G.ho, d.wo = G.wo, d.kk = 1;
    d.stride = p.stride, d.pad = 0, d.cout = p.cout, d.relu = 0, d.ldOut = p.cout, d.partial = partial, d.counters = counters;
    // (the downsample at stride 1: every position, plain rows of x)
    bool const hopperShortcut = p.stride == 1 && hopperGemm<T>(p.cout, p.cin);
    if (p.downsample && !hopperShortcut && !hopperGemm<T>(p.cout, p.planes)) {
        SSI_TRY(rowGemmPair<T, T, T, false>(xr, W(t.downsampleW), W(t.downsampleB), sc, d, rows2, W(t.conv3W), nullptr,
                                            rows3, c3, stream));
    } else {
        SSI_TRY(gemm1x1<T>(rows2, nullptr, count2, pos2, p.cout, p.planes, W(t.conv3W), nullptr, 0, rows3, c3, stream));
        if (p.downsample && p.stride == 1)
            SSI_TRY(gemm1x1<T>(xr, nullptr, nullptr, pos2, p.cout, p.cin, W(t.downsampleW), W(t.downsampleB), 0, sc,
                               d, stream));
        else if (p.downsample)
            SSI_TRY(rowGemm<T, T>(xr, W(t.downsampleW), W(t.downsampleB), sc, d, stream));
    }
    T const* const res = p.downsample ? sc : x;

    // y = relu(interp(rows3, m2) + b3 + shortcut)
    int64_t const howo = static_cast<int64_t>(G.ho) * G.wo;
    ia = InterpArgs{};
    ia.n = p.n, ia.c = p.cout, ia.h = G.ho, ia.w = G.wo, ia.sigma = p.sigma2, ia.relu = 1, ia.hasResidual = true;
    if (p.downsample) {
        ia.resN = howo * p.cout, ia.resQ = p.cout, ia.resC = 1;
    } else if (p.channelsLast) {
        ia.resN = howo * p.cout, ia.resQ = p.cout, ia.resC = 1;
    } else {
        ia.resN = howo * p.cout, ia.resQ = 1, ia.resC = howo;
    }
    if (p.channelsLast) ia.outN = howo * p.cout, ia.outQ = p.cout, ia.outC = 1;
    else ia.outN = howo * p.cout, ia.outQ = 1, ia.outC = howo;
    return interpRows<T, T, T>(rows3, index2, m2, W(t.conv3B), res, static_cast<T*>(t.y), ia, stream);
}

}  // namespace

bool bottleneckHasSm90Gemm() { return SSI_SM90 != 0; }

namespace {
// The compute capability (10 major + minor) of the device of the first launch (one GPU per
// process); 0 when it cannot be asked.
int deviceCapability() {
#ifdef SSI_CUDA_EMULATION
    return 0;
#else
    static int const cc = [] {
        int dev = 0, major = 0, minor = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
            return 0;
        return 10 * major + minor;
    }();
    return cc;
#endif
}
}  // namespace

BlockGemmPath bottleneckGemmPath() {
    char const* env = std::getenv("SSI_BLOCK_GEMM");
    if (env && std::strcmp(env, "regs") == 0) return BlockGemmPath::kPortableRegisters;
#if SSI_SM90
    if (!env || std::strcmp(env, "sm90") != 0) return BlockGemmPath::kPortable;
    return deviceCapability() == 90 ? BlockGemmPath::kSm90 : BlockGemmPath::kPortable;
#else
    return BlockGemmPath::kPortable;
#endif
}

namespace {
// Whether the block's kernels can be chained on this device: compute capability >= 9.0, and the
// kernels compiled from sm_90 or later code. A build without sm_90 runs on an H100 from older
// PTX, where chainStart() has no griddepcontrol.wait: chained launches would then race.
bool chainable() {
#ifdef SSI_CUDA_EMULATION
    return false;
#else
    static bool const ok = [] {
        cudaFuncAttributes fa{};
        return deviceCapability() >= 90 && cudaFuncGetAttributes(&fa, scanKernel) == cudaSuccess &&
               fa.ptxVersion >= 90;
    }();
    return ok;
#endif
}
}  // namespace

bool bottleneckPdl() {
    char const* env = std::getenv("SSI_BLOCK_PDL");
    return env && std::strcmp(env, "1") == 0 && chainable();
}

cudaError_t bottleneckPrepare() {
    (void)chainable();  // its one-time device queries here, outside any graph capture
#if SSI_SM90
    return gatherGemmSm90Prepare();
#else
    return cudaSuccess;
#endif
}

bool validBottleneckParams(BottleneckParams const& p) {
    if (p.n < 0 || p.cin <= 0 || p.h <= 0 || p.w <= 0 || p.planes <= 0 || p.cout <= 0 || p.stride < 1) return false;
    if ((p.dcn != 0 && p.dcn != 1) || (p.downsample != 0 && p.downsample != 1)) return false;
    if (!p.downsample && (p.stride != 1 || p.cin != p.cout)) return false;  // identity shortcut
    if (!(p.sigma1 > 0.0f) || !(p.sigma2 > 0.0f) || !(p.density >= 0.0f && p.density <= 1.0f)) return false;
    if (!math::validMode(p.mode) || p.gridInterval < 0 || p.layer1 < 0 || p.layer2 < 0) return false;
    // 32-bit row indices and element offsets of one image
    int64_t const pos = static_cast<int64_t>(p.n) * p.h * p.w;
    int64_t const widest = std::max<int64_t>({p.cin, p.cout, 18});
    return pos < (int64_t{1} << 31) && pos * widest < (int64_t{1} << 40) &&
           static_cast<int64_t>(p.h) * p.w * widest < (int64_t{1} << 31);
}

BottleneckLayout bottleneckLayout(BottleneckParams const& p, DType dtype) {
    BottleneckLayout L{};
    int64_t* fields[] = {&L.xRows, &L.taps, &L.tapWeights, &L.logits1, &L.logits2, &L.kth, &L.tileCounts1, &L.tileCounts2,
                         &L.perm1, &L.perm2, &L.index1, &L.index2, &L.count1, &L.count2, &L.rows1, &L.y1,
                         &L.offsets, &L.rows2, &L.rows3, &L.shortcut, &L.splitPartial, &L.splitCounters,
                         &L.packedWeights, &L.out};
    for (int64_t* f : fields) *f = -1;
    if (!validBottleneckParams(p)) return L;
    Geometry const G = geometry(p);
    size_t const e = dtype == DType::kFLOAT16 ? 2 : 4;
    size_t off = 0;
    auto take = [&](int64_t& field, size_t bytes) {
        field = static_cast<int64_t>(off);
        off += align256(bytes);
    };
    if (!p.channelsLast) take(L.xRows, G.pos1 * p.cin * e);
    take(L.taps, G.pos1 * kTapCols * sizeof(float));
    take(L.tapWeights, static_cast<size_t>(kTapCols) * p.cin * e);
    take(L.logits1, G.pos1 * sizeof(float));
    take(L.logits2, G.pos2 * sizeof(float));
    take(L.kth, 2 * static_cast<size_t>(p.n) * sizeof(float));
    take(L.tileCounts1, static_cast<size_t>(G.tiles1) * sizeof(int32_t));
    take(L.tileCounts2, static_cast<size_t>(G.tiles2) * sizeof(int32_t));
    take(L.perm1, G.pos1 * sizeof(int32_t));
    take(L.perm2, G.pos2 * sizeof(int32_t));
    take(L.index1, G.pos1 * sizeof(int32_t));
    take(L.index2, G.pos2 * sizeof(int32_t));
    take(L.count1, sizeof(int32_t));
    take(L.count2, sizeof(int32_t));
    take(L.rows1, G.pos1 * p.planes * e);
    take(L.y1, G.pos1 * p.planes * e);
    if (p.dcn) take(L.offsets, G.pos2 * 18 * sizeof(float));
    take(L.rows2, G.pos2 * p.planes * e);
    take(L.rows3, G.pos2 * p.cout * e);
    if (p.downsample) take(L.shortcut, G.pos2 * p.cout * e);
    // one buffer for the split-K partial sums and one for the tile counters of whichever row
    // GEMM splits (they run in turn)
    SplitNeeds const split = splitNeeds(p, G);
    if (split.partialBytes > 0) take(L.splitPartial, split.partialBytes);
    if (split.counters > 0) take(L.splitCounters, split.counters * sizeof(int32_t));
    // the 3x3 weights packed for the row GEMM: the DCN offsets' (when dcn), then conv2's
    take(L.packedWeights, packedConv2Offset(p, e) + static_cast<size_t>(9) * p.planes * p.planes * e);
    L.total = static_cast<int64_t>(off);
    return L;
}

size_t ssiBottleneckWorkspaceSize(BottleneckParams const& p, DType dtype) {
    BottleneckLayout const L = bottleneckLayout(p, dtype);
    return L.total > 0 ? static_cast<size_t>(L.total) : 0;
}

cudaError_t launchSSIBottleneck(BottleneckTensors const& t, DType dtype, BottleneckParams const& p, void* workspace,
                                cudaStream_t stream) {
    if (!validBottleneckParams(p)) return cudaErrorInvalidValue;
    if (p.n == 0) return cudaSuccess;
    if (!t.x || !t.mask1W || !t.mask1B || !t.mask2W || !t.mask2B || !t.conv1W || !t.conv1B || !t.conv2W ||
        !t.conv2B || !t.conv3W || !t.conv3B || !t.y || !t.mask1 || !t.mask2 || !workspace)
        return cudaErrorInvalidValue;
    if ((p.dcn && (!t.offsetW || !t.offsetB)) || (p.downsample && (!t.downsampleW || !t.downsampleB)))
        return cudaErrorInvalidValue;
    BottleneckLayout const L = bottleneckLayout(p, dtype);
    auto* ws = static_cast<unsigned char*>(workspace);
    tChained = bottleneckPdl();
    return cuda::dispatch(dtype, [&](auto tag) {
        using T = decltype(tag);
        return runBottleneck<T>(t, p, L, ws, stream);
    });
}

}  // namespace ssi
