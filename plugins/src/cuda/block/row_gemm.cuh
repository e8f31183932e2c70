// The SSIBottleneck's row GEMMs: gathered channels-last rows (1x1, 3x3 regular or deformable
// v1, strided, or plain rows) times packed or torch-layout weights, on WMMA (fp16) or SIMT,
// with a cp.async pipeline (sm_80 on) and split-K.
// Part of ssi_bottleneck.cu's translation unit (included there only): its kernels live in that
// file's anonymous namespace.
#pragma once

#ifndef SSI_CUDA_EMULATION
#include <mma.h>
#endif

#include "launch.cuh"
#include "prepare.cuh"

namespace ssi {
namespace {

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
template <typename Smem, int kStages, int kTapBuffers>
struct GemmShared {
    union {
        alignas(32) Smem st[kStages];  // the K steps' tiles on the cp.async path
        struct {
            alignas(32) Smem sm;  // the register path's tiles
            // and each row's tap corners, where st[1] would be (sm_86: 3 blocks of 32.8 KB per SM
            // fit its 100 KB, of 34.8 KB not); two on tensor cores, by the tap's parity: a
            // deformable tap's corners are blended from them after the loads (storeStep) while
            // the next tap's are written (inside the union, under sC: no more shared memory)
            math::TapCorners sTap[kTapBuffers][kBM];
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
using GemmSharedOf = GemmShared<GemmSmem<kTensorCore, kColB>, kTensorCore ? kGemmStages : 1, kTensorCore ? 2 : 1>;

// Block `blk` of a row GEMM's grid (gx blocks along M): its output tile, or its split of one.
// kMaskTaps: the mask taps (tapsPrepKernel), B read from the mask convs' weights in torch's layout
// ([1][cin][3][3] each: column 2t + k is mask k's tap t, weight mask 1's, weight2 mask 2's), so
// that nothing has to be packed before it; its split sums are left [split][maxM][cout] in `out`
// for their reader to add in split order (addSplitTaps), so that no counter has to be zeroed before it.
template <typename T, typename OutT, bool kDeform, bool kTensorCore, bool kColB, bool kMaskTaps = false>
__device__ __forceinline__ void rowGemmTile(GemmSharedOf<kTensorCore, kColB>& S, T const* __restrict__ src,
                                            T const* __restrict__ weight, T const* __restrict__ bias,
                                            OutT* __restrict__ out, GemmArgs g, uint3 blk, uint32_t gx,
                                            T const* __restrict__ weight2 = nullptr) {
    static_assert(!kColB || kTensorCore, "column-major B is a tensor-core layout");
    static_assert(!kMaskTaps || (!kDeform && kColB == kTensorCore), "the mask taps: plain rows, torch-layout B");
    auto& sm = S.reg.sm;  // the register path's tiles
    auto& sC = S.sC;
    auto& sImg = S.sImg;
    auto& sYo = S.sYo;
    auto& sXo = S.sXo;
    auto& sRow = S.sRow;
    // where the corners of a tap are: a deformable tensor-core GEMM alternates two buffers by parity
    auto tapBuf = [&](int32_t tap) -> math::TapCorners* { return S.reg.sTap[kDeform && kTensorCore ? (tap & 1) : 0]; };

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
        math::TapCorners* const sTap = tapBuf(tap);
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
    // a deformable tap's 4 corner vectors per row: loadStep loads them, storeStep blends them
    // (blendStep) after the MMAs of the step before. (With the blend in loadStep nvcc kept it
    // inside each row's branch: a row's 4 loads were waited for before the next row's were issued
    // and before any MMA, two exposed load latencies per K step.) The blend before the barrier
    // that precedes storeStep, where it would overlap other warps' MMAs, spilled on sm_75/80.
    uint4 dc[kDeform ? kVecPerThread : 1][4];
    int const vC = tid % (kBK / kVec), vM0 = tid / (kBK / kVec);  // A: channels 8 vC.., rows vM0 + 32 i
    int const vN = tid % (kBN / kVec), vK0 = tid / (kBN / kVec);  // B: outputs 8 vN.., rows vK0 + 16 i
    constexpr int kVecRowsA = kGemmThreads / (kBK / kVec), kVecRowsB = kGemmThreads / (kBN / kVec);
    size_t const hw = static_cast<size_t>(g.h) * g.w;
    // B in torch's layout into rb: weight[co][c][tap]; the mask taps' column co = 2t + k is mask k's
    // weight[c][t] (both convs [1][cin][3][3]; the GEMM is a 1x1 on x's rows: tap 0). The mask taps'
    // 18 columns are this thread's rows bN0 + 4 i for i < kTorchBRows (5): the others are zeros,
    // known at compile time, so they are neither loaded nor (on the cp.async path) stored.
    constexpr int kTorchBRows = kMaskTaps ? (kTapCols + kRowStride - 1) / kRowStride : kPerThread;
    auto loadTorchB = [&](int32_t tap, int32_t k0) {
        int32_t const cb = k0 + bK;
#pragma unroll
        for (int i = 0; i < kTorchBRows; ++i) {
            int32_t const co = nBase + bN0 + i * kRowStride;
            T const* const w = kMaskTaps && (co & 1) ? weight2 : weight;
            size_t const e = kMaskTaps ? static_cast<size_t>(cb) * 9 + co / 2
                                       : (static_cast<size_t>(co) * g.cin + cb) * taps + tap;
            bool const in = cb < g.cin && co < g.cout;
            if constexpr (kTensorCore)
                rb[i] = in ? __ldg(reinterpret_cast<__half const*>(w) + e) : __float2half_rn(0.0f);
            else
                rb[i] = in ? cuda::ld(w, e) : 0.0f;
        }
#pragma unroll
        for (int i = kTorchBRows; i < kPerThread; ++i) {  // (none but for the mask taps)
            if constexpr (kTensorCore) rb[i] = __float2half_rn(0.0f);
            else rb[i] = 0.0f;
        }
    };
    auto loadStep = [&](int32_t s) {
        int32_t const tap = s / kChunks, k0 = (s - tap * kChunks) * kBK;
        int32_t const c = k0 + aK;
        math::TapCorners const* const sTap = tapBuf(tap);
        if (vecA) {
#pragma unroll
            for (int i = 0; i < kVecPerThread; ++i) {
                int const ml = vM0 + i * kVecRowsA;
                int32_t const b = sImg[ml], cv = k0 + kVec * vC;
                uint4 v = make_uint4(0u, 0u, 0u, 0u);
                if constexpr (kDeform) {
                    if (b >= 0 && cv < g.cin) {
                        math::TapCorners const& tc = sTap[ml];
                        T const* base = src + static_cast<size_t>(b) * hw * g.cin + cv;
#pragma unroll
                        for (int k = 0; k < 4; ++k)
                            dc[i][k] = tc.wgt[k] != 0.0f
                                           ? __ldg(reinterpret_cast<uint4 const*>(base + static_cast<size_t>(tc.off[k]) * g.cin))
                                           : make_uint4(0u, 0u, 0u, 0u);
                    } else {
#pragma unroll
                        for (int k = 0; k < 4; ++k) dc[i][k] = make_uint4(0u, 0u, 0u, 0u);
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
        loadTorchB(tap, k0);
    };
    // va for step s: the blend of loadStep's corner vectors (deformable taps), channel by channel as
    // the scalar path does; zeros for rows past the count and channels past cin, as at the load
    auto blendStep = [&](int32_t s) {
        int32_t const tap = s / kChunks, k0 = (s - tap * kChunks) * kBK;
        math::TapCorners const* const sTap = tapBuf(tap);
#pragma unroll
        for (int i = 0; i < kVecPerThread; ++i) {
            int const ml = vM0 + i * kVecRowsA;
            int32_t const b = sImg[ml], cv = k0 + kVec * vC;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (b >= 0 && cv < g.cin) {
                math::TapCorners const& tc = sTap[ml];
                uint4 const (&corner)[4] = dc[i];
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
            va[i] = v;
        }
    };
    auto storeStep = [&](int32_t s) {
        if constexpr (kTensorCore) {
            if constexpr (kDeform) {
                if (vecA) blendStep(s);
            }
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
    // Tensor cores: this warp's 16-column fragments that hold output channels (< cout). The float-
    // output GEMMs are the 18-column ones (the mask taps, the DCN offsets: 18 of the tile's 64):
    // there the warps of columns 32-63 skip their MMAs and B fragments, half of the tile's. The live
    // columns' sums are the same; the others are never stored. (Every other GEMM keeps one body.)
    constexpr bool kNarrow = kTensorCore && std::is_same_v<OutT, float>;
    int const liveFrags = kNarrow ? max(0, min(2, (g.cout - nBase - wn * 32 + 15) / 16)) : 2;
    auto computeStep = [&](auto& sm) {
        if constexpr (kTensorCore) {
            using namespace nvcuda;
            auto mmas = [&](auto live) {
                constexpr int kJ = decltype(live)::value;
#pragma unroll
                for (int ks = 0; ks < kBK; ks += 16) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa[2];
                    using BLayout = std::conditional_t<kColB, wmma::col_major, wmma::row_major>;
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, BLayout> fb[kJ];
#pragma unroll
                    for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &sm.a[wm * 32 + 16 * i][ks], kBK + 8);
#pragma unroll
                    for (int j = 0; j < kJ; ++j) {
                        if constexpr (kColB) wmma::load_matrix_sync(fb[j], &sm.b[wn * 32 + 16 * j][ks], kBK + 8);
                        else wmma::load_matrix_sync(fb[j], &sm.b[ks][wn * 32 + 16 * j], kBN + 8);
                    }
#pragma unroll
                    for (int i = 0; i < 2; ++i)
#pragma unroll
                        for (int j = 0; j < kJ; ++j) wmma::mma_sync(frag[i][j], fa[i], fb[j], frag[i][j]);
                }
            };
            if constexpr (kNarrow) {
                if (liveFrags == 2) mmas(std::integral_constant<int, 2>{});
                else if (liveFrags == 1) mmas(std::integral_constant<int, 1>{});
            } else {
                mmas(std::integral_constant<int, 2>{});
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
            for (int i = 0; i < kVecPerThread && !kMaskTaps; ++i) {  // (the mask taps' B: loadTorchB)
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
    // vectors, packed (vecB) or torch's 1x1 [cout][cin] (Cin % 8 == 0 as for vecA). The mask taps'
    // B (a tap's weights 9 halves apart) is loaded into registers with the step's copies and stored
    // into its stage after the MMAs (storeTorchB), as the register path stores it.
    constexpr bool kCanPipeline = kTensorCore && !kDeform && kGemmStages > 1;
    bool const pipelined = kCanPipeline && g.pipeline && vecA &&
                           (kMaskTaps || (g.packed ? vecB : kColB && g.alignedB && g.kk == 1));
    // (the B tiles' rows from 4 kTorchBRows on are zeroed once, before the steps: zeroB)
    auto storeTorchB = [&](Stage& st) {
        if constexpr (kMaskTaps && kColB) {
#pragma unroll
            for (int i = 0; i < kTorchBRows; ++i) st.b[bN0 + i * kRowStride][bK] = rb[i];
        }
    };
    auto zeroB = [&] {
        if constexpr (kMaskTaps && kColB) {
            constexpr int kRow0 = kTorchBRows * kRowStride, kRows = kBN - kRow0;
            for (int e = tid; e < kGemmStages * kRows * kBK; e += kGemmThreads)
                S.st[e / (kRows * kBK)].b[kRow0 + e / kBK % kRows][e % kBK] = __float2half_rn(0.0f);
        }
    };
    __syncthreads();
    if constexpr (kCanPipeline) {
        if (pipelined) {
            // steps s + 1 .. s + kGemmStages - 1 in flight while step s multiplies. At step s this
            // thread waits for its own copies of step s, and the barrier for everyone's (and for
            // every warp's MMAs of step s - 1, whose stage is refilled right after it).
            // The mask taps' B of step t is loaded with its A copies (iteration t - 2) and stored into
            // its stage at the top of the next iteration, before its barrier: after the barrier that
            // saw the stage's previous MMAs done (iteration t - 2), before the one its MMAs follow
            // (iteration t), so that its load has the MMAs of a step to land.
            int rd = 0, wr = kGemmStages - 1;
            zeroB();
            for (int j = 0; j < kGemmStages - 1; ++j) {
                if (s0 + j < s1) {
                    copyStep(s0 + j, S.st[j]);
                    if constexpr (kMaskTaps) {  // the step before's B stored, this one's loaded
                        if (j > 0) storeTorchB(S.st[j - 1]);
                        loadTorchB(0, (s0 + j) * kBK);
                    }
                }
                cuda::copyAsyncCommit();
            }
            for (int32_t s = s0; s < s1; ++s) {
                if constexpr (kMaskTaps) {  // the B in rb: the prologue's last step, or s + 1's
                    int32_t const t = s == s0 ? min(s0 + kGemmStages - 2, s1 - 1) : s + kGemmStages - 2;
                    if (t < s1) storeTorchB(S.st[(t - s0) % kGemmStages]);
                }
                cuda::copyAsyncWaitGroup<kGemmStages - 2>();
                __syncthreads();
                bool const refill = s + kGemmStages - 1 < s1;
                if (refill) copyStep(s + kGemmStages - 1, S.st[wr]);
                if constexpr (kMaskTaps) {
                    if (refill) loadTorchB(0, (s + kGemmStages - 1) * kBK);
                }
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
        storeStep(s0);
        if (s0 + 1 < s1 && (s0 + 1) / kChunks != s0 / kChunks) computeTap((s0 + 1) / kChunks);
        __syncthreads();
        for (int32_t s = s0; s < s1; ++s) {
            bool const more = s + 1 < s1;
            if (more) loadStep(s + 1);
            computeStep(sm);
            __syncthreads();
            if (more) {
                storeStep(s + 1);
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
        if constexpr (kMaskTaps) return;  // added by their reader (addSplitTaps)
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

// The mask taps GEMM (taps[q, 2t + k] = sum_c x[q, c] Wk[c, t], every position, plain rows of x)
// beside the per-launch preparation (prepJob: the 3x3 weights packed and the split-K counters
// zeroed for the later GEMMs), in one launch: blocks [0, pg.blocks) are the GEMM's grid, the rest
// the preparation's. The GEMM needs nothing prepared (kMaskTaps), so a block costs one launch
// fewer than with a preparation kernel of its own; the same halves in its tiles, the same bits.
template <typename T, bool kTensorCore>
__global__ void __launch_bounds__(kGemmThreads, 3)
    tapsPrepKernel(T const* __restrict__ x, T const* __restrict__ mask1W, T const* __restrict__ mask2W,
                   float* __restrict__ taps, GemmArgs g, PairGrid pg, PrepArgs<T> prep) {
    cuda::chainStart();
    union Shared {
        GemmSharedOf<kTensorCore, kTensorCore> gemm;
        T tile[32][33];
    };
    __shared__ Shared S;
    uint32_t const i = blockIdx.x;
    if (i < pg.blocks) {
        uint3 const blk{i % pg.gx, i / pg.gx % pg.gy, i / (pg.gx * pg.gy)};
        rowGemmTile<T, float, false, kTensorCore, kTensorCore, true>(S.gemm, x, mask1W, nullptr, taps, g, blk, pg.gx,
                                                                    mask2W);
    } else {
        prepJob<kGemmThreads>(prep, static_cast<int32_t>(i - pg.blocks), S.tile);
    }
}

}  // namespace
}  // namespace ssi
