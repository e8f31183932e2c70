// The SSIBottleneck's Gaussian interpolations of rows into dense maps (Y1 channels-last; y with
// BN3's bias, the residual and the ReLU, NHWC or NCHW).
// Part of ssi_bottleneck.cu's translation unit (included there only): its kernels live in that
// file's anonymous namespace.
#pragma once

#include "launch.cuh"
#include "../interp_tile.cuh"

namespace ssi {
namespace {

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

}  // namespace
}  // namespace ssi
