// The SSIBottleneck's two masks: logits from the mask taps, the k-th largest logit (forced
// density), SampleMask, and the deterministic compaction (perm, index, count).
// Part of ssi_bottleneck.cu's translation unit (included there only): its kernels live in that
// file's anonymous namespace.
#pragma once

#include "prepare.cuh"

namespace ssi {
namespace {

// These kernels serve both masks in one launch: blockIdx.y picks the mask (its
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

// The mask taps as the taps GEMM leaves them (tapsPrepKernel): [q][kTapCols] float32, or, when its
// K is split, each split's raw sums [split][q][kTapCols], `stride` floats apart, that the taps GEMM
// leaves for their reader to add (it has no counters: nothing runs before it to zero them).
struct TapSums {
    float const* taps;
    int32_t splits;
    int64_t stride;  // N * H * W * kTapCols
};

// The 3x3 window of mask taps of output position (b, yo, xo), a mask at `stride` on an h x w
// input map. The 9 loads are unconditional (a tap outside the map loads the window's centre,
// always inside, and is then skipped), so they are all in flight before the first add: with a
// `continue` around each load nvcc branched around it, one L2 trip per tap.
struct TapWindow {
    float v[9];
    bool in[9];
};

__device__ __forceinline__ int64_t tapRow(int t, int32_t yc, int32_t xc, int32_t h, int32_t w, int64_t b, bool& in) {
    int32_t const y = yc + t / 3 - 1, x = xc + t % 3 - 1;
    in = y >= 0 && y < h && x >= 0 && x < w;
    return (b * h + (in ? y : yc)) * w + (in ? x : xc);
}

// Split 0's taps (or the only ones).
__device__ __forceinline__ void loadTaps(TapWindow& win, float const* __restrict__ taps, int32_t k, int32_t stride,
                                         int32_t h, int32_t w, int64_t b, int32_t yo, int32_t xo) {
    int32_t const yc = yo * stride, xc = xo * stride;
#pragma unroll
    for (int t = 0; t < 9; ++t) win.v[t] = __ldg(taps + tapRow(t, yc, xc, h, w, b, win.in[t]) * kTapCols + 2 * t + k);
}

// With a split taps GEMM (src.splits > 1; stages 3-4, cin >= 1024 on few positions; the kernels'
// kSplit instantiation, so that the other keeps its registers: 76, against 118): the other
// splits' sums added to loadTaps' in split order, then + 0 (the GEMM epilogue's bias), as the
// last split of a tile adds them in the other row GEMMs. Called after every window's loadTaps, so
// that the common case's loads stay together.
__device__ __forceinline__ void addSplitTaps(TapWindow& win, TapSums const& src, int32_t k, int32_t stride, int32_t h,
                                             int32_t w, int64_t b, int32_t yo, int32_t xo) {
    int32_t const yc = yo * stride, xc = xo * stride;
    for (int32_t sp = 1; sp < src.splits; ++sp) {
        float const* const part = src.taps + sp * src.stride;
        float v[9];
        bool in;
#pragma unroll
        for (int t = 0; t < 9; ++t) v[t] = __ldg(part + tapRow(t, yc, xc, h, w, b, in) * kTapCols + 2 * t + k);
#pragma unroll
        for (int t = 0; t < 9; ++t) win.v[t] += v[t];
    }
#pragma unroll
    for (int t = 0; t < 9; ++t) win.v[t] = math::convEpilogue(win.v[t], 0.0f, 0);
}

// acc = bias, + the taps inside the map in tap order, rounded to T.
template <typename T>
__device__ __forceinline__ float sumTaps(TapWindow const& win, float bias) {
    float acc = bias;
#pragma unroll
    for (int t = 0; t < 9; ++t) acc = win.in[t] ? acc + win.v[t] : acc;  // skipped, not + 0: -0 stays -0
    return roundTo<T>(acc);
}

template <typename T, bool kSplit>
__global__ void __launch_bounds__(kThreads)
    tapSumKernel(TapSums taps, Pair<TapSumJob<T>> jobs, int32_t n, int32_t h, int32_t w) {
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
    loadTaps(win, taps.taps, j.k, stride, h, w, b, yo, xo);
    if constexpr (kSplit) addSplitTaps(win, taps, j.k, stride, h, w, b, yo, xo);
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
template <typename T, bool kSplit>
__global__ void __launch_bounds__(kThreads, 2)
    sampleKernel(TapSums taps /*taps null: logits given*/, Pair<SampleJob<T>> jobs, int32_t n,
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
    if (taps.taps) {
        TapWindow win[kPer];  // all 4 x 9 loads before the first add
#pragma unroll
        for (int r = 0; r < kPer; ++r) {
            uint32_t const i = first + r * kThreads, t = i / w;
            if (i < total)
                loadTaps(win[r], taps.taps, j.k, j.stride, hIn, wIn, t / h, static_cast<int32_t>(t % h),
                         static_cast<int32_t>(i % w));
        }
        if constexpr (kSplit) {
            for (int r = 0; r < kPer; ++r) {
                uint32_t const i = first + r * kThreads, t = i / w;
                if (i < total)
                    addSplitTaps(win[r], taps, j.k, j.stride, hIn, wIn, t / h, static_cast<int32_t>(t % h),
                                 static_cast<int32_t>(i % w));
            }
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

}  // namespace
}  // namespace ssi
