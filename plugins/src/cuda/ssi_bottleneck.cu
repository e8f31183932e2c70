// SSIBottleneck on the GPU, the portable path (sm_75 and newer: SIMT and WMMA/mma.sync): one SSI
// bottleneck as a chain of kernels on compact channels-last rows (see ssi/kernels.h for the
// steps, ssi_deploy/ops/bottleneck.py for the reference, src/cpu/block.cpp for the CPU twin).
//
// Kernels, in launch order (every grid sized for the maximum, counts read on the device), in
// block/*.cuh (one translation unit: this file includes them; it holds the launch helpers,
// runBottleneck, the workspace layout and the API of kernels.h):
//   toRowsKernel           x NCHW -> x rows [N*H*W, Cin] (only when x is not channels-last)
//   tapsPrepKernel         the mask taps taps[q, 2t + k] = sum_c x[q, c] Wk[c, t] (a row GEMM on
//                          the mask weights as they are), and in the same launch the 3x3 weights
//                          packed [tap][cin][cout] and the split-K counters zeroed for the later GEMMs
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

#include "block/launch.cuh"       // the launch macro, the block size, dtype rounding
#include "block/prepare.cuh"      // toRowsKernel, the preparation's jobs
#include "block/masks.cuh"        // tapSumKernel, kthLargestKernel, sampleKernel, scanKernel, partitionKernel
#include "block/row_gemm.cuh"     // tapsPrepKernel, rowGemmKernel, rowGemmPairKernel, split-K
#include "block/interp_rows.cuh"  // interpRowsNhwcKernel, interpRowsKernel
#include "common.cuh"

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

// This launch call's GEMM path (bottleneckGemmPath(), set by launchSSIBottleneck: the environment
// is read once per launch, not once per GEMM).
thread_local BlockGemmPath tGemmPath = BlockGemmPath::kPortable;

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
    SplitNeeds n{};  // (not the mask taps: their split sums stay in the taps buffer, tapsGemmArgs)
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
    a.pipeline = tGemmPath != BlockGemmPath::kPortableRegisters;
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

// A row GEMM's share of a launch that holds more than it (rowGemmPairKernel, tapsPrepKernel).
PairGrid pairGrid(GemmArgs const& g) {
    PairGrid r{cuda::ceilDiv(g.maxM, kBM), cuda::ceilDiv(g.cout, kBN), 0};
    r.blocks = r.gx * r.gy * static_cast<uint32_t>(g.splits);
    return r;
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
    PairGrid const ga = pairGrid(a), gb = pairGrid(b);
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
    return tGemmPath == BlockGemmPath::kSm90 && gatherGemmSm90Supported(n, k);
}
#endif

// The mask taps GEMM's arguments: every position, plain rows of x, 18 float32 columns; when its K
// is split, the splits' raw sums [split][pos1][18] stay in the taps buffer (no counters).
GemmArgs tapsGemmArgs(BottleneckParams const& p, Geometry const& G, float* taps) {
    GemmArgs g{};
    g.maxM = static_cast<int32_t>(G.pos1), g.direct = true;
    g.n = p.n, g.h = 1, g.w = 1, g.ho = 1, g.wo = 1, g.kk = 1, g.stride = 1, g.pad = 0;
    g.cin = p.cin, g.cout = kTapCols, g.relu = 0, g.ldOut = kTapCols, g.partial = taps, g.counters = nullptr;
    return g;
}

int32_t tapSplits(BottleneckParams const& p, Geometry const& G) {
    return gemmSplits(G.pos1, kTapCols, gemmSteps(p.cin, 1));
}

// The mask taps into `taps` and, by the same launch's other blocks, the per-launch preparation
// (tapsPrepKernel). The mask weights are read as the op takes them (torch's layout).
template <typename T>
cudaError_t tapsAndPrepare(T const* xr, BottleneckTensors const& t, BottleneckParams const& p, Geometry const& G,
                           float* taps, T* offsets, T* conv2, int32_t* counters, cudaStream_t stream) {
    auto W = [](void const* v) { return static_cast<T const*>(v); };
    PrepArgs<T> a{};
    a.offsetW = W(t.offsetW), a.conv2W = W(t.conv2W);
    a.offsets = offsets, a.conv2 = conv2, a.counters = counters;
    a.cin = p.cin, a.planes = p.planes, a.nCounters = static_cast<int32_t>(splitNeeds(p, G).counters);
    a.offTilesX = cuda::ceilDiv(static_cast<size_t>(9) * p.cin, 32);
    a.offBlocks = p.dcn ? a.offTilesX * cuda::ceilDiv(kTapCols, 32) : 0;
    a.convTilesX = cuda::ceilDiv(static_cast<size_t>(9) * p.planes, 32);
    a.convBlocks = a.convTilesX * cuda::ceilDiv(p.planes, 32);
    a.counterBlocks = cuda::ceilDiv(a.nCounters, kGemmThreads);
    GemmArgs const g = launchArgs(tapsGemmArgs(p, G, taps), xr, t.mask1W);
    PairGrid const pg = pairGrid(g);
    int64_t const blocks = int64_t{pg.blocks} + a.blocks();
    if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    auto* k = gemmOnTensorCores<T>(g) ? &tapsPrepKernel<T, std::is_same_v<T, __half>> : &tapsPrepKernel<T, false>;
    SSI_BLOCK_LAUNCH(k, static_cast<unsigned>(blocks), kGemmThreads, stream, xr, W(t.mask1W), W(t.mask2W), taps, g, pg,
                     a);
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
    SSI_TRY(tapsAndPrepare<T>(xr, t, p, G, taps, offsetPacked, conv2Packed, counters, stream));
    TapSums const tapSums{taps, tapSplits(p, G), G.pos1 * kTapCols};
    // forced density: the logits first (the k-th largest needs all of them); else sampleKernel
    // sums the taps itself
    bool const forced = p.density > 0.0f;
    float* kth = reinterpret_cast<float*>(at(L.kth));
    if (forced) {
        Pair<TapSumJob<T>> const sums{{{W(t.mask1B), l1, 0, 1}, {W(t.mask2B), l2, 1, p.stride}}};
        auto* s = tapSums.splits > 1 ? &tapSumKernel<T, true> : &tapSumKernel<T, false>;
        SSI_BLOCK_LAUNCH(s, dim3(cuda::ceilDiv(pos1, kThreads), 2), kThreads, stream, tapSums, sums, p.n, p.h, p.w);
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
        auto* s = !forced && tapSums.splits > 1 ? &sampleKernel<T, true> : &sampleKernel<T, false>;
        SSI_BLOCK_LAUNCH(s, dim3(G.tiles1, 2), kThreads, stream, forced ? TapSums{} : tapSums, samples, p.n, p.h, p.w,
                         p.mode, p.gridInterval);
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
    // the mask taps, or their splits' sums (tapsGemmArgs); the mask weights are read as they are
    // (tapWeights, once their packed matrix, stays -1)
    take(L.taps, static_cast<size_t>(tapSplits(p, G)) * G.pos1 * kTapCols * sizeof(float));
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
    tGemmPath = bottleneckGemmPath();
    return cuda::dispatch(dtype, [&](auto tag) {
        using T = decltype(tag);
        return runBottleneck<T>(t, p, L, ws, stream);
    });
}

}  // namespace ssi
