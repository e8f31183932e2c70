// Native CPU kernels of the SSIBottleneck op on channels-last rows (ssi_deploy/ops/block_kernels.py):
// GaussianInterp of compact rows into dense rows (and the next block's mask taps of them), 3x3
// patches (regular or deformable v1), the few-column GEMM of the mask taps, masks and compaction.
//
// Per-element arithmetic is ssi/math.h (the CPU twin of a future GPU block); the loops are
// arranged for the host: positions in parallel (OpenMP), channels innermost and contiguous
// (vectorised), each element's operations in math.h's order. Vectorising over channels does
// not change any element's order of operations, and -ffp-contract=off keeps FMA out.
//
// Interpolation, per image b and tile of columns [x0, x1) (all channels):
//   H(y', x)  = sum_dx g[dx] mf(y', x + dx)      (rows first: dx = -3..3 in order, from 0)
//   S(y, x)   = sum_dy g[dy] H(y + dy, x)        (then columns: dy = -3..3 in order, from 0)
// H of a row is shared by the 7 output rows that read it, so each thread keeps a ring of the
// 7 H rows of its tile (and H_m, the same pass over the mask) its current output row needs;
// the tile is narrow enough for the ring to stay in a core's L2. Tiles split no sum (H(x)
// reads mf from 3 columns either side, S(x) only H of column x), and each output row is
// written once, contiguously. A neighbour outside the map or unsampled adds g * 0 = +0 to a
// sum that is never -0 (it starts at +0, and round-to-nearest gives +0 for an exact
// cancellation), so skipping it is bit-identical; an H entry with no sampled neighbour is
// flagged and skipped in the column pass likewise. Each sum keeps its terms in a register
// (a kernel per term count K <= 7) and feeds the combination directly.
//
// With tap weights (ssi_cpu_block_interp_rows_taps), each row segment of a tile is multiplied
// by them as soon as it is written (still in L1/L2; in tiles of four positions, a segment's last
// ones joining the next row's): the next block's mask taps, in the small GEMM's order of sums
// (dotsList), so a block's taps are the same bits whoever computes them.
//
// Each position prefetches the next one's residual and output rows: at C = 1024 a row is a 4 KiB
// page, and the hardware prefetchers stop at page boundaries.
//
// The kernels are compiled three times in this file (it includes itself): for the baseline ISA
// and, with GCC on x86, for AVX2 and for AVX-512 (F, VL, BW, DQ) (#pragma GCC target; the
// widest the CPU has is chosen at run time, SSI_CPU_BLOCK_ISA=generic|avx2 caps it). All give
// the same bits: the same IEEE operations per element, only more elements per instruction
// (-ffp-contract=off holds for every pass, so AVX-512's FMAs are never used for a * b + c).
// Everything a pass defines has internal linkage, so no wider code can stand in for a shared
// inline function.
#if !defined(SSI_BLOCK_PASS)
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "common.h"
#include "ssi/cpu_twins.h"
#include "ssi/math.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX2__)
#define SSI_BLOCK_AVX2 1
#else
#define SSI_BLOCK_AVX2 0
#endif

// Channel loops: every iteration is one element's own chain of operations (no reduction, no
// reassociation), so they are vectorised as they are; "omp simd" (-fopenmp-simd) tells the
// compiler the buffers do not overlap, and -fno-trapping-math lets it if-convert math.h's
// branches on m and relu (both sides are computed, one is kept: the same values).
#define SSI_SIMD _Pragma("omp simd")

namespace {
namespace M = ssi::math;
constexpr int kR = M::kInterpRadius;                // 3
constexpr int kWin = ssi::contract::kInterpWindow;  // 7

struct InterpArgs {
    float const* rows;
    int32_t const* index;
    float const* mask;
    int32_t n, h, w, c;
    float a;
    float g[kWin];
    float const* bias;  // [C], zeros when the caller gave none
    float const* residual;
    int32_t relu;
    float* out;
    float const* tapW;  // [tapN, C]: the next block's mask-tap matrix, or null
    int32_t tapN;
    float* tapOut;  // [N*H*W, tapN]: out's rows times tapW^T (written with out)
    uint8_t const* rowNeedR;      // [N*H]: some m < 1 in the row
    uint8_t const* rowHasSample;  // [N*H]: some m > 0 in the row
    uint8_t const* want;          // [N*H*W]: the positions to compute, or null (all)
    uint8_t const* rowWant;       // [N*H]: some position of the row wanted (with want)
};

// How the interpolation's work is cut: items (image, column tile, row block).
struct InterpPlan {
    int32_t nTiles, rowsPer, nRowBlocks;
    int64_t items;
};

struct PatchArgs {
    float const* src;
    int32_t h, w, c;
    int64_t const* positions;
    int64_t p, total;
    int32_t ho, wo, stride;
    float const* offsets;
    float const* zeros;  // [C] zeros: the value of a corner of weight 0
    float* out;
};
}  // namespace

#define SSI_BLOCK_PASS 1
#define SSI_BLOCK_NS generic
#include "block.cpp"
#undef SSI_BLOCK_NS
#if SSI_BLOCK_AVX2
#pragma GCC push_options
#pragma GCC target("avx2")
#define SSI_BLOCK_NS avx2
#include "block.cpp"
#undef SSI_BLOCK_NS
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512vl,avx512bw,avx512dq")
#define SSI_BLOCK_NS avx512
#include "block.cpp"
#undef SSI_BLOCK_NS
#pragma GCC pop_options
#endif

namespace {
int threadCount(int32_t threads) {
#if defined(_OPENMP)
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

// 0 baseline, 1 AVX2, 2 AVX-512: the widest build the CPU runs, capped by SSI_CPU_BLOCK_ISA.
int blockIsa() {
#if SSI_BLOCK_AVX2
    static int const supported = [] {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
            return 2;
        return __builtin_cpu_supports("avx2") ? 1 : 0;
    }();
    char const* isa = std::getenv("SSI_CPU_BLOCK_ISA");
    int cap = 2;
    if (isa && std::strcmp(isa, "generic") == 0) cap = 0;
    if (isa && std::strcmp(isa, "avx2") == 0) cap = 1;
    return std::min(supported, cap);
#else
    return 0;
#endif
}
}  // namespace

// The call on the build blockIsa() picks.
#if SSI_BLOCK_AVX2
#define SSI_BLOCK_CALL(call) \
    (blockIsa() == 2 ? avx512::call : blockIsa() == 1 ? avx2::call : generic::call)
#else
#define SSI_BLOCK_CALL(call) generic::call
#endif

extern "C" int32_t ssi_cpu_block_interp_rows(float const* rows, int32_t const* index, float const* mask, int32_t n,
                                             int32_t h, int32_t w, int32_t c, float sigma, float const* bias,
                                             float const* residual, int32_t relu, float* out, int32_t threads) {
    return ssi_cpu_block_interp_rows_taps(rows, -1, index, mask, n, h, w, c, sigma, bias, residual, relu, out,
                                          nullptr, 0, nullptr, threads);
}

namespace {
// Both interpolation entries: want [N*H*W] (or null: all) says which positions to compute.
int32_t interpRows(float const* rows, int64_t count, int32_t const* index, float const* mask, int32_t n, int32_t h,
                   int32_t w, int32_t c, float sigma, float const* bias, float const* residual, int32_t relu,
                   float* out, float const* tapW, int32_t tapN, float* tapOut, uint8_t const* want,
                   int32_t threads) {
    using namespace ssi;
    if (n < 0 || h < 0 || w < 0 || c < 0 || tapN < 0) return cpu::setError("block interp_rows: negative size"), 1;
    size_t const positions = static_cast<size_t>(n) * h * w;
    if (positions == 0) return 0;
    if (tapN == 0) tapW = nullptr, tapOut = nullptr;
    if (tapN > 0 && (!tapOut || (!tapW && c > 0)))
        return cpu::setError("block interp_rows: tap weights or tap output null"), 1;
    if (c == 0) {  // no channels: the outputs are empty rows, their taps 0
        if (tapOut) std::fill(tapOut, tapOut + positions * static_cast<size_t>(tapN), 0.0f);
        return 0;
    }
    if (!index || !mask || !out) return cpu::setError("block interp_rows: null buffer"), 1;
    InterpArgs A{};
    A.rows = rows;
    A.index = index;
    A.mask = mask;
    A.n = n, A.h = h, A.w = w, A.c = c;
    A.a = M::gaussianScale(sigma);
    for (int d = 0; d < kWin; ++d) A.g[d] = M::gaussianTap(sigma, d - kR);
    std::vector<float> zeroBias;
    if (!bias) zeroBias.assign(c, 0.0f);
    A.bias = bias ? bias : zeroBias.data();
    A.residual = residual;
    A.relu = relu;
    A.out = out;
    A.tapW = tapW;
    A.tapN = tapN;
    A.tapOut = tapOut;
    A.want = want;

    int const nt = threadCount(threads);
    InterpPlan P;
    // Column tiles: the ring of 7 H rows [tile][C] should stay in a core's L2 (~192 KiB).
    int64_t const perTile = std::max<int64_t>(1, 192 * 1024 / (int64_t{kWin} * sizeof(float)) / c);
    P.nTiles = static_cast<int32_t>((w + perTile - 1) / perTile);
    // Items (image, tile, row block): a multiple of the threads, more tiles first (they cost
    // nothing), then row blocks (each recomputes up to 6 H rows of its neighbours).
    // Tile widths differ by at most one column (tile t is [t w / nTiles, (t + 1) w / nTiles)):
    // equal-width tiles and a narrow last one left a thread up to 1/8 more columns than the
    // other at C = 1024 (w = 32: 6 6 6 | 6 6 2).
    while ((static_cast<int64_t>(n) * P.nTiles) % nt != 0 && P.nTiles < w && P.nTiles < 2 * nt) ++P.nTiles;
    P.nTiles = std::min(P.nTiles, w);
    int64_t const base = static_cast<int64_t>(n) * P.nTiles;
    int64_t k = 1;
    while ((base * k) % nt != 0 && k < nt) ++k;
    k = std::min<int64_t>(k, std::max<int32_t>(1, h / 8));
    P.rowsPer = static_cast<int32_t>((h + k - 1) / k);
    P.nRowBlocks = (h + P.rowsPer - 1) / P.rowsPer;
    P.items = base * P.nRowBlocks;

    std::vector<uint8_t> rowNeedR(static_cast<size_t>(n) * h), rowHasSample(static_cast<size_t>(n) * h);
    std::vector<uint8_t> rowWant(want ? static_cast<size_t>(n) * h : 0);
    bool const par = nt > 1 && positions * static_cast<size_t>(c) >= 16384;
    int32_t const bad =
        SSI_BLOCK_CALL(interpRun(A, P, rowNeedR.data(), rowHasSample.data(), rowWant.data(),
                                 count >= 0 ? static_cast<size_t>(count) : positions, nt, par));
    if (bad & 2) return cpu::setError("block interp_rows: rows is null but the mask has samples"), 1;
    if (bad)
        return cpu::setError("block interp_rows: index out of range at a sampled position (" +
                             (count >= 0 ? std::to_string(count) + " rows" : std::string("rows unknown")) + ")"),
               1;
    return 0;
}
}  // namespace

extern "C" int32_t ssi_cpu_block_interp_rows_taps(float const* rows, int64_t count, int32_t const* index,
                                                  float const* mask, int32_t n, int32_t h, int32_t w, int32_t c,
                                                  float sigma, float const* bias, float const* residual, int32_t relu,
                                                  float* out, float const* tapW, int32_t tapN, float* tapOut,
                                                  int32_t threads) {
    return interpRows(rows, count, index, mask, n, h, w, c, sigma, bias, residual, relu, out, tapW, tapN, tapOut,
                      nullptr, threads);
}

extern "C" int32_t ssi_cpu_block_interp_rows_for_conv(float const* rows, int64_t count, int32_t const* index,
                                                      float const* mask, int32_t n, int32_t h, int32_t w, int32_t c,
                                                      float sigma, float const* mask2, int32_t ho, int32_t wo,
                                                      int32_t stride, float* out, int32_t threads) {
    using namespace ssi;
    if (n < 0 || h < 0 || w < 0 || c < 0) return cpu::setError("block interp_rows_for_conv: negative size"), 1;
    if (stride < 1) return cpu::setError("block interp_rows_for_conv: stride must be >= 1"), 1;
    int32_t const hoWant = (h + stride - 1) / stride, woWant = (w + stride - 1) / stride;
    if (ho != hoWant || wo != woWant)
        return cpu::setError("block interp_rows_for_conv: the conv's mask is " + std::to_string(ho) + "x" +
                             std::to_string(wo) + ", a 3x3 conv at stride " + std::to_string(stride) + " of " +
                             std::to_string(h) + "x" + std::to_string(w) + " gives " + std::to_string(hoWant) +
                             "x" + std::to_string(woWant)),
               1;
    size_t const positions = static_cast<size_t>(n) * h * w;
    if (positions == 0 || c == 0) return 0;
    if (!mask2) return cpu::setError("block interp_rows_for_conv: null buffer"), 1;
    // the 3x3 windows (padding 1) of the conv's sampled outputs: what its patches read
    std::vector<uint8_t> want(positions, 0);
    for (int32_t b = 0; b < n; ++b)
        for (int32_t yo = 0; yo < ho; ++yo)
            for (int32_t xo = 0; xo < wo; ++xo) {
                if (!(mask2[(static_cast<size_t>(b) * ho + yo) * wo + xo] > 0.0f)) continue;
                for (int32_t i = 0; i < 3; ++i) {
                    int32_t const iy = M::tapCoord(yo, i, stride, 1, 1);
                    if (iy < 0 || iy >= h) continue;
                    for (int32_t j = 0; j < 3; ++j) {
                        int32_t const ix = M::tapCoord(xo, j, stride, 1, 1);
                        if (ix >= 0 && ix < w) want[(static_cast<size_t>(b) * h + iy) * w + ix] = 1;
                    }
                }
            }
    return interpRows(rows, count, index, mask, n, h, w, c, sigma, nullptr, nullptr, 0, out, nullptr, 0, nullptr,
                      want.data(), threads);
}

extern "C" int32_t ssi_cpu_block_patches3x3(float const* src, int32_t n, int32_t h, int32_t w, int32_t c,
                                            int64_t const* positions, int64_t p, int32_t ho, int32_t wo,
                                            int32_t stride, float const* offsets, float* out, int32_t threads) {
    using namespace ssi;
    if (n < 0 || h < 0 || w < 0 || c < 0 || p < 0 || ho < 0 || wo < 0)
        return cpu::setError("block patches3x3: negative size"), 1;
    if (stride < 1) return cpu::setError("block patches3x3: stride must be >= 1"), 1;
    if (p == 0 || c == 0) return 0;
    if (!positions || !out) return cpu::setError("block patches3x3: null buffer"), 1;
    int64_t const total = static_cast<int64_t>(n) * ho * wo;
    if (total == 0) return cpu::setError("block patches3x3: positions given for an empty output map"), 1;
    if (!src && static_cast<int64_t>(n) * h * w > 0) return cpu::setError("block patches3x3: null buffer"), 1;
    std::vector<float> zeros(offsets ? c : 0, 0.0f);
    PatchArgs A{src, h, w, c, positions, p, total, ho, wo, stride, offsets, zeros.data(), out};
    int const nt = threadCount(threads);
    bool const par = nt > 1 && p * 9 * static_cast<int64_t>(c) >= 32768;
    int32_t const bad = SSI_BLOCK_CALL(patchesRun(A, nt, par));
    if (bad) return cpu::setError("block patches3x3: position out of range [0, N*Ho*Wo)"), 1;
    return 0;
}

// One pass over a one-channel map: serial (memory-light, microseconds at these sizes).
extern "C" int64_t ssi_cpu_block_compact(float const* mask, int64_t numel, int64_t* perm, int32_t* index) {
    if (numel < 0) return ssi::cpu::setError("block compact: negative size"), -1;
    if (numel == 0) return 0;
    if (!mask || !perm || !index) return ssi::cpu::setError("block compact: null buffer"), -1;
    int64_t count = 0;
    for (int64_t q = 0; q < numel; ++q) count += mask[q] > 0.0f;
    int64_t kept = 0, rest = count;
    for (int64_t q = 0; q < numel; ++q) {
        if (mask[q] > 0.0f) {
            index[q] = static_cast<int32_t>(kept);
            perm[kept++] = q;
        } else {
            index[q] = -1;
            perm[rest++] = q;
        }
    }
    return count;
}

extern "C" int32_t ssi_cpu_block_small_gemm(float const* x, int64_t m, int32_t k, float const* wT, int32_t n,
                                            float* out, int32_t threads) {
    using namespace ssi;
    if (m < 0 || k < 0 || n < 0) return cpu::setError("block small_gemm: negative size"), 1;
    if (m == 0 || n == 0) return 0;
    if (!x || !wT || !out) return cpu::setError("block small_gemm: null buffer"), 1;
    int const nt = threadCount(threads);
    bool const par = nt > 1 && m * static_cast<int64_t>(k) * n >= 65536;
    return SSI_BLOCK_CALL(smallGemmRun(x, m, k, wT, n, out, nt, par));
}

namespace {
// An order-preserving key of a float for kth_largest's order: larger value, larger key; -0 and
// +0 one value, every NaN the largest key (above +inf).
inline uint32_t orderKey(float v) {
    if (v != v) return 0xFFFFFFFFu;
    if (v == 0.0f) v = 0.0f;
    uint32_t u;
    std::memcpy(&u, &v, sizeof(u));
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
}  // namespace

// A radix selection: a histogram of the keys' top 12 bits finds the bucket that holds the k-th
// largest, then nth_element orders only that bucket's values (a few hundred of a 128x128 map's
// 16384 here, ~2.5x faster than nth_element over the whole map). Any value it returns compares
// equal to every other k-th largest (ties, -0/+0), so the result is the one nth_element gives.
extern "C" int32_t ssi_cpu_block_kth_largest(float const* values, int64_t n, int64_t hw, int64_t k, float* out) {
    if (n < 0 || hw < 1 || k < 1 || k > hw) return ssi::cpu::setError("block kth_largest: bad sizes"), 1;
    if (n == 0) return 0;
    if (!values || !out) return ssi::cpu::setError("block kth_largest: null buffer"), 1;
    constexpr int kBits = 12, kShift = 32 - kBits;
    std::vector<int64_t> hist(size_t{1} << kBits);
    std::vector<float> buf;
    auto greater = [](float a, float b) {  // a strict weak order with NaN above every number
        bool const na = a != a, nb = b != b;
        return na ? !nb : (!nb && a > b);
    };
    for (int64_t i = 0; i < n; ++i) {
        float const* v = values + i * hw;
        std::fill(hist.begin(), hist.end(), 0);
        for (int64_t q = 0; q < hw; ++q) ++hist[orderKey(v[q]) >> kShift];
        int64_t above = 0;
        uint32_t bucket = (1u << kBits) - 1;
        while (above + hist[bucket] < k) above += hist[bucket--];  // stops: the counts sum to hw >= k
        buf.clear();
        for (int64_t q = 0; q < hw; ++q)
            if ((orderKey(v[q]) >> kShift) == bucket) buf.push_back(v[q]);
        int64_t const r = k - above;  // 1-based rank inside the bucket
        std::nth_element(buf.begin(), buf.begin() + (r - 1), buf.end(), greater);
        out[i] = buf[static_cast<size_t>(r - 1)];
    }
    return 0;
}

extern "C" int32_t ssi_cpu_block_sum_taps(float const* taps, int32_t n, int32_t h, int32_t w, int32_t kOut,
                                          int32_t k, int32_t stride, float bias, float* out, int32_t threads) {
    using namespace ssi;
    if (n < 0 || h < 0 || w < 0 || kOut < 1 || k < 0 || k >= kOut)
        return cpu::setError("block sum_taps: bad sizes"), 1;
    if (stride < 1) return cpu::setError("block sum_taps: stride must be >= 1"), 1;
    int32_t const ho = (h - 1) / stride + 1, wo = (w - 1) / stride + 1;
    int64_t const rowsOut = static_cast<int64_t>(n) * ho;
    if (rowsOut == 0 || w == 0) return 0;
    if (!taps || !out) return cpu::setError("block sum_taps: null buffer"), 1;
    int64_t const ld = 9 * static_cast<int64_t>(kOut);
    int const nt = threadCount(threads);
#pragma omp parallel for num_threads(nt) if (nt > 1 && rowsOut * wo >= 4096) schedule(static)
    for (int64_t r = 0; r < rowsOut; ++r) {
        int64_t const b = r / ho;
        int32_t const yo = static_cast<int32_t>(r - b * ho);
        for (int32_t xo = 0; xo < wo; ++xo) {
            float acc = bias;
            for (int t = 0; t < 9; ++t) {
                int32_t const y = yo * stride + t / 3 - 1, x = xo * stride + t % 3 - 1;
                if (y < 0 || y >= h || x < 0 || x >= w) continue;
                acc = acc + taps[((b * h + y) * w + x) * ld + t * kOut + k];
            }
            out[r * wo + xo] = acc;
        }
    }
    return 0;
}

static int32_t thresholdMask(float const* taps, int32_t n, int32_t h, int32_t w, int32_t kOut, int32_t j, int32_t s,
                             float bias, int64_t kj, int32_t grid, float* l, float* m, int64_t* perm, int32_t* index,
                             int64_t& countOut, int32_t threads);

// Both masks of a block in threshold mode (also the mode of a forced density) with their
// compactions, in one call instead of a dozen small tensor ops per block. For map j (j = 0:
// output 0 of the taps at stride 1; j = 1: output 1 at `stride`): l = sum_taps(taps, j) + bias_j;
// with kj > 0 (the forced count), l = l - the kj-th largest of its image; m = l >= 0 ? 1 : 0,
// then 1 at the grid prior's positions (y % grid == 0 and x % grid == 0, grid > 0); (perm,
// index, count) = compact(m). The same float32 operations, in the same order, as sum_taps,
// kth_largest, bottleneck.shift_to_density, sampling.sample_mask and compact.
extern "C" int32_t ssi_cpu_block_threshold_masks(float const* taps, int32_t n, int32_t h, int32_t w, int32_t kOut,
                                                 int32_t stride, float bias1, float bias2, int64_t k1, int64_t k2,
                                                 int32_t grid, float* logits1, float* logits2, float* m1, float* m2,
                                                 int64_t* perm1, int32_t* index1, int64_t* perm2, int32_t* index2,
                                                 int64_t* counts, int32_t threads) {
    using namespace ssi;
    if (n < 0 || h < 0 || w < 0 || kOut < 2 || k1 < 0 || k2 < 0 || grid < 0)
        return cpu::setError("block threshold_masks: bad sizes"), 1;
    if (stride < 1) return cpu::setError("block threshold_masks: stride must be >= 1"), 1;
    if (!counts) return cpu::setError("block threshold_masks: null buffer"), 1;
    counts[0] = counts[1] = 0;
    if (static_cast<int64_t>(n) * h * w == 0) return 0;
    if (!taps || !logits1 || !logits2 || !m1 || !m2 || !perm1 || !index1 || !perm2 || !index2)
        return cpu::setError("block threshold_masks: null buffer"), 1;
    float* logits[2] = {logits1, logits2};
    float* masks[2] = {m1, m2};
    int64_t* perms[2] = {perm1, perm2};
    int32_t* indices[2] = {index1, index2};
    for (int j = 0; j < 2; ++j) {
        int32_t const s = j == 0 ? 1 : stride;
        int64_t const hw = static_cast<int64_t>((h - 1) / s + 1) * ((w - 1) / s + 1);
        if ((j == 0 ? k1 : k2) > hw) return cpu::setError("block threshold_masks: forced count above the map's size"), 1;
    }
    // The two masks are independent: one per thread on large maps (each step inside serial).
    int const nt = threadCount(threads);
    bool const par = nt > 1 && static_cast<int64_t>(n) * h * w >= 2048;
    int32_t bad = 0;
#pragma omp parallel for num_threads(2) if (par) schedule(static, 1) reduction(| : bad)
    for (int j = 0; j < 2; ++j) {
        int32_t const s = j == 0 ? 1 : stride;
        int64_t const kj = j == 0 ? k1 : k2;
        bad |= thresholdMask(taps, n, h, w, kOut, j, s, j == 0 ? bias1 : bias2, kj, grid, logits[j], masks[j],
                             perms[j], indices[j], counts[j], par ? 1 : threads);
    }
    return bad;
}

// One mask of ssi_cpu_block_threshold_masks (map j at stride s, forced count kj).
static int32_t thresholdMask(float const* taps, int32_t n, int32_t h, int32_t w, int32_t kOut, int32_t j, int32_t s,
                             float bias, int64_t kj, int32_t grid, float* l, float* m, int64_t* perm, int32_t* index,
                             int64_t& countOut, int32_t threads) {
    int32_t const ho = (h - 1) / s + 1, wo = (w - 1) / s + 1;
    int64_t const hw = static_cast<int64_t>(ho) * wo, numel = n * hw;
    if (ssi_cpu_block_sum_taps(taps, n, h, w, kOut, j, s, bias, l, threads) != 0) return 1;
    if (kj > 0) {
        std::vector<float> kth(static_cast<size_t>(n));
        if (ssi_cpu_block_kth_largest(l, n, hw, kj, kth.data()) != 0) return 1;
        for (int32_t b = 0; b < n; ++b) {
            float* lb = l + b * hw;
            float const t = kth[static_cast<size_t>(b)];
            for (int64_t q = 0; q < hw; ++q) lb[q] = lb[q] - t;
        }
    }
    for (int64_t q = 0; q < numel; ++q) m[q] = l[q] >= 0.0f ? 1.0f : 0.0f;
    if (grid > 0)
        for (int32_t b = 0; b < n; ++b)
            for (int32_t y = 0; y < ho; y += grid)
                for (int32_t x = 0; x < wo; x += grid) m[(static_cast<int64_t>(b) * ho + y) * wo + x] = 1.0f;
    int64_t const count = ssi_cpu_block_compact(m, numel, perm, index);
    if (count < 0) return 1;
    countOut = count;
    return 0;
}

#else  // SSI_BLOCK_PASS: the kernels, in namespace SSI_BLOCK_NS (generic / avx2)
namespace {
namespace SSI_BLOCK_NS {

// One H row of the ring: H [tile width][C], H_m, and which x have any sampled neighbour.
struct HRow {
    int32_t tag = -1;   // input row y' held, -1: none
    bool empty = true;  // no sampled position near the tile: every H is 0
    std::vector<float> h, hm;
    std::vector<uint8_t> nz;
};

struct Workspace {
    HRow ring[kWin];
    std::vector<float> mf;                // m f of the soft samples of one input row near the tile
    std::vector<float const*> samplePtr;  // their value rows (f itself where m == 1)
    std::vector<float> sampleM;
    std::vector<int32_t> sampleX;
    std::vector<float const*> tapX;  // output rows written whose taps are pending (< 4 + a tile)
    std::vector<float*> tapO;        // and where the taps go
    void reserve(int32_t tw, int32_t c) {
        size_t const span = static_cast<size_t>(tw) + 2 * kR;
        for (HRow& r : ring) {
            if (r.h.size() < static_cast<size_t>(tw) * c) r.h.resize(static_cast<size_t>(tw) * c);
            if (r.hm.size() < static_cast<size_t>(tw)) r.hm.resize(tw), r.nz.resize(tw);
            r.tag = -1;
        }
        if (mf.size() < span * c) mf.resize(span * c);
        if (sampleX.size() < span) samplePtr.resize(span), sampleM.resize(span), sampleX.resize(span);
        if (tapX.size() < static_cast<size_t>(tw) + 3) tapX.resize(static_cast<size_t>(tw) + 3), tapO.resize(tapX.size());
    }
};

Workspace& workspace() {
    thread_local Workspace ws;  // OpenMP threads persist: buffers are reused between calls
    return ws;
}

// The K-term pass sum_k g[k] v_k[ch] in order, from 0 (windowSum over the non-zero terms),
// K <= 7 known at compile time so that each element's sum stays in a register.
template <int K>
inline float termSum(float const* g, float const* const* v, int32_t ch) {
    float s = 0.0f + g[0] * v[0][ch];
    if constexpr (K > 1) s = s + g[1] * v[1][ch];
    if constexpr (K > 2) s = s + g[2] * v[2][ch];
    if constexpr (K > 3) s = s + g[3] * v[3][ch];
    if constexpr (K > 4) s = s + g[4] * v[4][ch];
    if constexpr (K > 5) s = s + g[5] * v[5][ch];
    if constexpr (K > 6) s = s + g[6] * v[6][ch];
    return s;
}

template <int K>
void rowPass(float const* g, float const* const* vIn, float* hx, int32_t c) {
    float const* v[K];
    float gk[K];  // local copies: kept in registers (no reload per vector)
    for (int k = 0; k < K; ++k) v[k] = vIn[k], gk[k] = g[k];
    SSI_SIMD
    for (int32_t ch = 0; ch < c; ++ch) hx[ch] = termSum<K>(gk, v, ch);
}

using RowPassFn = void (*)(float const*, float const* const*, float*, int32_t);
constexpr RowPassFn kRowPass[kWin] = {&rowPass<1>, &rowPass<2>, &rowPass<3>, &rowPass<4>,
                                      &rowPass<5>, &rowPass<6>, &rowPass<7>};

// H and H_m of input row y of image b at columns [x0, x1), from the sampled positions x' in
// [x0 - 3, x1 + 3), each H(x) summing its terms in increasing dx = x' - x, as windowSum.
void computeHRow(InterpArgs const& A, int32_t b, int32_t y, int32_t x0, int32_t x1, bool hasSample,
                 Workspace& ws, HRow& r) {
    int32_t const w = A.w, c = A.c;
    r.tag = y;
    r.empty = true;
    if (!hasSample) return;
    // Everything the loops use in locals: the workspace is thread_local, and after each call
    // through kRowPass the compiler would re-derive its address (__tls_get_addr in a shared
    // library) and reload the vectors' pointers, per position.
    float* const mfBuf = ws.mf.data();
    float const** const samplePtr = ws.samplePtr.data();
    float* const sampleM = ws.sampleM.data();
    int32_t* const sampleX = ws.sampleX.data();
    float* const hOut = r.h.data();
    float* const hmOut = r.hm.data();
    uint8_t* const nzOut = r.nz.data();
    float gTab[kWin];
    for (int d = 0; d < kWin; ++d) gTab[d] = A.g[d];
    float const* const mask = A.mask + (static_cast<size_t>(b) * A.h + y) * w;
    int32_t const* const index = A.index + (static_cast<size_t>(b) * A.h + y) * w;
    float const* const rows = A.rows;
    int32_t const s0 = std::max(0, x0 - kR), s1 = std::min(w, x1 + kR);
    int32_t ns = 0;
    for (int32_t xs = s0; xs < s1; ++xs) {
        float const m = mask[xs];
        if (!(m > 0.0f)) continue;
        float const* f = rows + static_cast<size_t>(index[xs]) * c;
        if (m != 1.0f) {  // f * 1 == f: the hard mask's samples are read as they are
            float* mf = mfBuf + static_cast<size_t>(ns) * c;
            SSI_SIMD
            for (int32_t ch = 0; ch < c; ++ch) mf[ch] = M::interpSample(m, f[ch]);
            f = mf;
        }
        samplePtr[ns] = f;
        sampleM[ns] = m;
        sampleX[ns] = xs;
        ++ns;
    }
    if (ns == 0) return;
    r.empty = false;
    int32_t lo = 0;  // first sample with x' >= x - 3
    for (int32_t x = x0; x < x1; ++x) {
        int32_t const xl = x - x0;
        while (lo < ns && sampleX[lo] < x - kR) ++lo;
        int32_t hi = lo;
        while (hi < ns && sampleX[hi] <= x + kR) ++hi;
        int32_t const k = hi - lo;
        if (k == 0) {
            nzOut[xl] = 0;
            continue;
        }
        nzOut[xl] = 1;
        float g[kWin];
        float hm = 0.0f;
        for (int32_t j = 0; j < k; ++j) {
            g[j] = gTab[sampleX[lo + j] - x + kR];
            hm = hm + g[j] * sampleM[lo + j];
        }
        hmOut[xl] = hm;
        kRowPass[k - 1](g, samplePtr + lo, hOut + static_cast<size_t>(xl) * c, c);
    }
}

// out = interpCombine(m, mf, R, bias, residual) over the channels of one position, with
// R = interpRatio(a, S_mf, S_m) and S_mf the K-term column pass over H (K = 0: no sampled
// neighbour, or m >= 1 where R is not used: S_mf = S_m = 0). Sampled: m > 0, mf = m f (f is
// read); otherwise mf = 0 and f is not read. AddR: m < 1. interpCombine's two branches on m
// are taken once per position (m is the same for all its channels): the same operations per
// element, without computing both sides and blending.
template <int K, bool Sampled, bool AddR, bool HasRes, bool Relu>
void combine(float m, float const* f, float const* g, float const* const* hIn, float sumM, float a,
             float const* bias, float const* res, float* o, int32_t c) {
    float const* hp[kWin];
    float gk[kWin];
    for (int k = 0; k < K; ++k) hp[k] = hIn[k], gk[k] = g[k];
    float const r0 = M::interpRatio(a, 0.0f, 0.0f);  // 0 / eps = 0
    float const om = 1.0f - m;
    SSI_SIMD
    for (int32_t ch = 0; ch < c; ++ch) {
        float out = HasRes ? res[ch] + bias[ch] : bias[ch];
        if constexpr (Sampled) out = out + M::interpSample(m, f[ch]);
        if constexpr (AddR) {
            float r = r0;
            if constexpr (K > 0) r = M::interpRatio(a, termSum<K>(gk, hp, ch), sumM);
            out = out + r * om;
        }
        if constexpr (Relu) out = out < 0.0f ? 0.0f : out;
        o[ch] = out;
    }
}

using CombineFn = void (*)(float, float const*, float const*, float const* const*, float, float, float const*,
                           float const*, float*, int32_t);

template <bool Sampled, bool AddR, bool HasRes, bool Relu>
constexpr std::array<CombineFn, kWin + 1> combineTable() {
    return {&combine<0, Sampled, AddR, HasRes, Relu>, &combine<1, Sampled, AddR, HasRes, Relu>,
            &combine<2, Sampled, AddR, HasRes, Relu>, &combine<3, Sampled, AddR, HasRes, Relu>,
            &combine<4, Sampled, AddR, HasRes, Relu>, &combine<5, Sampled, AddR, HasRes, Relu>,
            &combine<6, Sampled, AddR, HasRes, Relu>, &combine<7, Sampled, AddR, HasRes, Relu>};
}

template <bool Sampled, bool AddR>
constexpr std::array<std::array<std::array<CombineFn, kWin + 1>, 2>, 2> combineTables() {
    return {{{combineTable<Sampled, AddR, false, false>(), combineTable<Sampled, AddR, false, true>()},
             {combineTable<Sampled, AddR, true, false>(), combineTable<Sampled, AddR, true, true>()}}};
}

// [sampled][m < 1][residual][relu][K]
constexpr std::array<std::array<std::array<CombineFn, kWin + 1>, 2>, 2> kCombine[2][2] = {
    {combineTables<false, false>(), combineTables<false, true>()},
    {combineTables<true, false>(), combineTables<true, true>()}};

// ---------------------------------------------------------------------------------------
// Dot products of one row x [k] with a few weight rows wT [n, k] (the mask convs' tap columns),
// in one fixed order: lane l (0..15) of a 16-float vector adds x[ch] * w[ch] (a product, then
// a sum) over ch = l, l + 16, ... in increasing ch, from +0, and the 16 lanes are then added
// pairwise (l + 8, then + 4, + 2, + 1). GCC's vector types give every build (16, 8 or 4 floats
// per instruction) these same operations, and each column's order is independent of which
// columns are computed together, so the small GEMM and the taps fused into the interpolation
// (ssi_cpu_block_interp_rows_taps) give the same bits for the same row.
typedef float V16 __attribute__((vector_size(64)));
typedef float V16u __attribute__((vector_size(64), aligned(4)));  // for unaligned loads

typedef int32_t I16 __attribute__((vector_size(64)));

// The lane sums of 16 vectors at once, into out[0..15]: per vector, lane l + lane l + 8 (l < 8),
// then l + (l + 4) (l < 4), l + (l + 2), l + (l + 1), with the vectors packed together after
// each level (a tile with fewer accumulators passes zero vectors for the rest).
inline void laneSum16(V16 const* v, float* out) {
    V16 r1[8], r2[4], r3[2];
    for (int p = 0; p < 8; ++p)  // [a0+a8 .. a7+a15, b0+b8 .. b7+b15]
        r1[p] = __builtin_shuffle(v[2 * p], v[2 * p + 1], I16{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) +
                __builtin_shuffle(v[2 * p], v[2 * p + 1], I16{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
    for (int p = 0; p < 4; ++p)  // four vectors, four lanes each: l + (l + 4)
        r2[p] = __builtin_shuffle(r1[2 * p], r1[2 * p + 1], I16{0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}) +
                __builtin_shuffle(r1[2 * p], r1[2 * p + 1], I16{4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31});
    for (int p = 0; p < 2; ++p)  // eight vectors, two lanes each: l + (l + 2)
        r3[p] = __builtin_shuffle(r2[2 * p], r2[2 * p + 1], I16{0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29}) +
                __builtin_shuffle(r2[2 * p], r2[2 * p + 1], I16{2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31});
    V16 const r4 = __builtin_shuffle(r3[0], r3[1], I16{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}) +
                   __builtin_shuffle(r3[0], r3[1], I16{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
    std::memcpy(out, &r4, sizeof r4);
}

// out[r][j] = x_r . w_j for R rows x[r] (k floats each) and NC weight rows: R * NC accumulators
// in registers, each x and w chunk loaded once per tile.
template <int R, int NC>
inline void dotsTile(float const* const* x, float const* wT, int32_t k, float* const* out, int32_t j0) {
    static_assert(R * NC <= 16, "one laneSum16");
    V16 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = V16{};
    int32_t const k16 = k & ~15;
    for (int32_t ch = 0; ch < k16; ch += 16) {
        V16 xv[R];
        for (int r = 0; r < R; ++r) xv[r] = *reinterpret_cast<V16u const*>(x[r] + ch);
        for (int j = 0; j < NC; ++j) {
            V16 const wv = *reinterpret_cast<V16u const*>(wT + static_cast<size_t>(j) * k + ch);
            for (int r = 0; r < R; ++r) acc[r * NC + j] = acc[r * NC + j] + xv[r] * wv;
        }
    }
    if (k16 < k) {  // the last k % 16 channels in lanes 0..; the other lanes add 0 * 0 = +0
        V16 xv[R];
        for (int r = 0; r < R; ++r) {
            xv[r] = V16{};
            for (int32_t l = 0; l < k - k16; ++l) xv[r][l] = x[r][k16 + l];
        }
        for (int j = 0; j < NC; ++j) {
            V16 wv{};
            for (int32_t l = 0; l < k - k16; ++l) wv[l] = wT[static_cast<size_t>(j) * k + k16 + l];
            for (int r = 0; r < R; ++r) acc[r * NC + j] = acc[r * NC + j] + xv[r] * wv;
        }
    }
    float sums[16];
    laneSum16(acc, sums);
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < NC; ++j) out[r][j0 + j] = sums[r * NC + j];
}

// Rows [R] of out = x wT^T: columns four at a time, then two, then one.
template <int R>
inline void dotsRowTile(float const* const* x, int32_t k, float const* wT, int32_t n, float* const* out) {
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) dotsTile<R, 4>(x, wT + static_cast<size_t>(j) * k, k, out, j);
    for (; j + 2 <= n; j += 2) dotsTile<R, 2>(x, wT + static_cast<size_t>(j) * k, k, out, j);
    for (; j < n; ++j) dotsTile<R, 1>(x, wT + static_cast<size_t>(j) * k, k, out, j);
}

// out[i] [n] = x[i] [k] wT^T for the m rows listed, serially: tiles of 4 rows (the last one 1-3
// rows) by 4 columns (the last ones 2 or 1), each reading every w chunk once. Each element's
// operations are dotsTile's whatever its tile (the same bits for any m, n, list and cut).
inline void dotsList(float const* const* x, float* const* out, int64_t m, int32_t k, float const* wT, int32_t n) {
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) dotsRowTile<4>(x + r, k, wT, n, out + r);
    if (m - r == 3) dotsRowTile<3>(x + r, k, wT, n, out + r);
    if (m - r == 2) dotsRowTile<2>(x + r, k, wT, n, out + r);
    if (m - r == 1) dotsRowTile<1>(x + r, k, wT, n, out + r);
}

// out [m, n] = x [m, k] wT^T (contiguous rows), in tiles of up to 16 rows.
inline void dotsRows(float const* x, int64_t m, int32_t k, float const* wT, int32_t n, float* out) {
    float const* xr[16];
    float* orow[16];
    for (int64_t r0 = 0; r0 < m; r0 += 16) {
        int64_t const mm = std::min<int64_t>(16, m - r0);
        for (int64_t r = 0; r < mm; ++r) xr[r] = x + (r0 + r) * k, orow[r] = out + (r0 + r) * n;
        dotsList(xr, orow, mm, k, wT, n);
    }
}

// Prefetch c floats from p, every 64-byte line, into all cache levels. An asm statement on x86:
// GCC 12 at -O3 dropped a loop of __builtin_prefetch here (no instruction was emitted).
inline void prefetchRow(float const* p, int32_t c) {
    char const* b = reinterpret_cast<char const*>(p);
    size_t const bytes = static_cast<size_t>(c) * sizeof(float);
    for (size_t i = 0; i < bytes; i += 64) {
#if defined(__GNUC__) && defined(__x86_64__)
        __asm__ volatile("prefetcht0 %0" : : "m"(b[i]));
#else
        __builtin_prefetch(b + i, 0, 3);
#endif
    }
}

// Position q's residual row and its output row (one row when y is written over the residual).
inline void prefetchPosition(float const* residual, float const* out, int32_t c, size_t q) {
    size_t const at = q * static_cast<size_t>(c);
    if (residual) prefetchRow(residual + at, c);
    if (residual != out) prefetchRow(out + at, c);
}

// Output rows [y0, y1) of image b, columns [x0, x1).
void interpBlock(InterpArgs const& A, int32_t b, int32_t y0, int32_t y1, int32_t x0, int32_t x1) {
    Workspace& ws = workspace();
    ws.reserve(x1 - x0, A.c);
    int32_t const h = A.h, w = A.w, c = A.c;
    bool const hasRes = A.residual != nullptr, relu = A.relu != 0;
    // Locals for what the position loop reads (see computeHRow: no reloads after each call).
    float const* const mask = A.mask;
    int32_t const* const index = A.index;
    float const* const rows = A.rows;
    float const* const residual = A.residual;
    float* const out = A.out;
    uint8_t const* const want = A.want;
    float const* const bias = A.bias;
    float const a = A.a;
    float const** const tapX = ws.tapX.data();
    float** const tapO = ws.tapO.data();
    int64_t nPending = 0;  // rows written whose taps are still to be computed
    for (int32_t y = y0; y < y1; ++y) {
        if (want && !A.rowWant[static_cast<size_t>(b) * h + y]) continue;  // no H row computed for it
        size_t const rowBase = (static_cast<size_t>(b) * h + y) * w;
        bool const needR = A.rowNeedR[static_cast<size_t>(b) * h + y] != 0;
        // The H rows y-3..y+3 this output row reads (lazily: the ring keeps those still needed):
        // their H, H_m and flags, and their weights.
        float const* hRow[kWin];
        float const* hmRow[kWin];
        uint8_t const* nzRow[kWin];
        float gd[kWin];
        int32_t nh = 0;
        if (needR) {
            for (int32_t dy = -kR; dy <= kR; ++dy) {
                int32_t const yy = y + dy;
                if (yy < 0 || yy >= h) continue;
                HRow& r = ws.ring[yy % kWin];
                if (r.tag != yy)
                    computeHRow(A, b, yy, x0, x1, A.rowHasSample[static_cast<size_t>(b) * h + yy] != 0, ws, r);
                if (r.empty) continue;
                hRow[nh] = r.h.data(), hmRow[nh] = r.hm.data(), nzRow[nh] = r.nz.data();
                gd[nh] = A.g[dy + kR];
                ++nh;
            }
        }
        for (int32_t x = x0; x < x1; ++x) {
            size_t const q = rowBase + x;
            if (want && !want[q]) continue;
            // The next position's residual and output rows, from memory while this one is
            // computed: at C >= 1024 a row is a page or more, and the hardware prefetchers stop
            // at page boundaries (in the model, where x has left the caches, 5 % of the whole
            // R-101 forward at density 0.26).
            if (x + 1 < x1)
                prefetchPosition(residual, out, c, q + 1);
            else if (y + 1 < y1)
                prefetchPosition(residual, out, c, rowBase + w + x0);
            float const m = mask[q];
            bool const sampled = m > 0.0f;
            float const* f = sampled ? rows + static_cast<size_t>(index[q]) * c : nullptr;
            float const* res = hasRes ? residual + q * c : nullptr;
            float* o = out + q * c;
            // S_m and the H rows of S_mf: the flagged H entries of column x, dy in order.
            int32_t const xl = x - x0;
            float const* hp[kWin];
            float g[kWin];
            float sumM = 0.0f;
            int32_t k = 0;
            if (m < 1.0f) {
                for (int32_t j = 0; j < nh; ++j) {
                    if (!nzRow[j][xl]) continue;
                    g[k] = gd[j];
                    hp[k] = hRow[j] + static_cast<size_t>(xl) * c;
                    sumM = sumM + g[k] * hmRow[j][xl];
                    ++k;
                }
            }
            kCombine[sampled][m < 1.0f][hasRes][relu][k](m, f, g, hp, sumM, a, bias, res, o, c);
        }
        if (A.tapW) {  // the row segment just written is still in L1/L2: its taps, four rows a tile
            for (int32_t x = x0; x < x1; ++x, ++nPending) {
                tapX[nPending] = out + (rowBase + x) * c;
                tapO[nPending] = A.tapOut + (rowBase + x) * A.tapN;
            }
            // whole tiles of four now (a segment of 5 or 6 rows alone would end in a slow 1- or
            // 2-row tile); the rest joins the next row's
            int64_t const whole = nPending & ~int64_t{3};
            dotsList(tapX, tapO, whole, c, A.tapW, A.tapN);
            for (int64_t i = whole; i < nPending; ++i) tapX[i - whole] = tapX[i], tapO[i - whole] = tapO[i];
            nPending -= whole;
        }
    }
    if (A.tapW) dotsList(tapX, tapO, nPending, c, A.tapW, A.tapN);
}

// ---------------------------------------------------------------------------------------
// Patches

template <bool Deform>
void patchRow(PatchArgs const& A, int64_t pos, float const* off, float* o) {
    int32_t const h = A.h, w = A.w, c = A.c;
    int64_t const howo = static_cast<int64_t>(A.ho) * A.wo;
    int64_t const b = pos / howo;
    int64_t const rem = pos - b * howo;
    int32_t const yo = static_cast<int32_t>(rem / A.wo), xo = static_cast<int32_t>(rem % A.wo);
    float const* plane = A.src + static_cast<size_t>(b) * h * w * c;
    size_t const rowBytes = static_cast<size_t>(c) * sizeof(float);
    if (!Deform) {
        // A window row's three taps are adjacent in the map (x - 1, x, x + 1 at any stride) and
        // in the patch: one copy of the in-bounds run, zeros for the taps outside.
        for (int32_t ty = 0; ty < 3; ++ty) {
            int32_t const iy = M::tapCoord(yo, ty, A.stride, 1, 1), ix0 = M::tapCoord(xo, 0, A.stride, 1, 1);
            float* ot = o + static_cast<size_t>(3 * ty) * c;
            if (iy < 0 || iy >= h) {
                std::memset(ot, 0, 3 * rowBytes);
                continue;
            }
            // taps [lo, hi) inside (lo <= 1 < 2 <= hi: xo * stride <= w - 1)
            int32_t const lo = std::max(0, -ix0), hi = std::min(3, w - ix0);
            if (lo > 0) std::memset(ot, 0, static_cast<size_t>(lo) * rowBytes);
            if (hi > lo)
                std::memcpy(ot + static_cast<size_t>(lo) * c, plane + (static_cast<size_t>(iy) * w + ix0 + lo) * c,
                            static_cast<size_t>(hi - lo) * rowBytes);
            if (hi < 3) std::memset(ot + static_cast<size_t>(hi) * c, 0, static_cast<size_t>(3 - hi) * rowBytes);
        }
        return;
    }
    for (int32_t t = 0; t < 9; ++t) {
        int32_t const iy = M::tapCoord(yo, t / 3, A.stride, 1, 1), ix = M::tapCoord(xo, t % 3, A.stride, 1, 1);
        float* ot = o + static_cast<size_t>(t) * c;
        M::TapCorners const tc = M::deformTap(iy, ix, off[2 * t], off[2 * t + 1], h, w);
        if (tc.wgt[0] == 0.0f && tc.wgt[1] == 0.0f && tc.wgt[2] == 0.0f && tc.wgt[3] == 0.0f) {
            std::memset(ot, 0, rowBytes);  // tapValue of four zero corners: +0
            continue;
        }
        // A corner of weight 0 reads zeros (the CUDA kernels' wgt != 0 ? v : 0): the same as
        // tapValue's v * 0 for finite v, and no NaN from an infinite value it does not use.
        float const* v[4];
        for (int k = 0; k < 4; ++k) v[k] = tc.wgt[k] != 0.0f ? plane + static_cast<size_t>(tc.off[k]) * c : A.zeros;
        float const *v0 = v[0], *v1 = v[1], *v2 = v[2], *v3 = v[3];
        SSI_SIMD
        for (int32_t ch = 0; ch < c; ++ch) ot[ch] = M::tapValue(tc, v0[ch], v1[ch], v2[ch], v3[ch]);
    }
}

// The parallel part of ssi_cpu_block_interp_rows: row flags (and the index check), then the
// items. Returns 0, 1 (an index out of range) or 2 (rows null while the mask has samples).
int32_t interpRun(InterpArgs A, InterpPlan const& P, uint8_t* rowNeedR, uint8_t* rowHasSample, uint8_t* rowWant,
                  size_t rowCount, int nt, bool par) {
    (void)nt, (void)par;  // without OpenMP
    A.rowNeedR = rowNeedR;
    A.rowHasSample = rowHasSample;
    A.rowWant = rowWant;
    int32_t const w = A.w, h = A.h;
    int64_t const nRows = static_cast<int64_t>(A.n) * h;
    int32_t bad = 0;
#pragma omp parallel num_threads(nt) if (par)
    {
#pragma omp for schedule(static) reduction(| : bad)
        for (int64_t r = 0; r < nRows; ++r) {
            size_t const rb = static_cast<size_t>(r) * w;
            uint8_t need = 0, has = 0;
            for (int32_t x = 0; x < w; ++x) {
                float const m = A.mask[rb + x];
                need |= m < 1.0f;
                if (m > 0.0f) {
                    has = 1;
                    int32_t const i = A.index[rb + x];
                    bad |= (i < 0 || static_cast<size_t>(i) >= rowCount) ? 1 : 0;
                }
            }
            rowNeedR[r] = need;
            rowHasSample[r] = has;
            if (A.want) {
                uint8_t any = 0;
                for (int32_t x = 0; x < w; ++x) any |= A.want[rb + x];
                rowWant[r] = any;
            }
            bad |= (has && !A.rows) ? 2 : 0;
        }
        if (!bad) {
#pragma omp for schedule(static)
            for (int64_t it = 0; it < P.items; ++it) {
                int32_t const tile = static_cast<int32_t>(it % P.nTiles);
                int64_t const rest = it / P.nTiles;
                int32_t const rb = static_cast<int32_t>(rest % P.nRowBlocks);
                int32_t const b = static_cast<int32_t>(rest / P.nRowBlocks);
                int32_t const x0 = static_cast<int32_t>(int64_t{tile} * w / P.nTiles);
                int32_t const x1 = static_cast<int32_t>(int64_t{tile + 1} * w / P.nTiles);
                int32_t const y0 = rb * P.rowsPer, y1 = std::min(h, y0 + P.rowsPer);
                interpBlock(A, b, y0, y1, x0, x1);
            }
        }
    }
    return bad;
}

// The parallel part of ssi_cpu_block_patches3x3; returns 1 if a position is out of range.
int32_t patchesRun(PatchArgs const& A, int nt, bool par) {
    (void)nt, (void)par;  // without OpenMP
    size_t const rowLen = static_cast<size_t>(9) * A.c;
    int32_t bad = 0;
#pragma omp parallel for num_threads(nt) if (par) schedule(static) reduction(| : bad)
    for (int64_t i = 0; i < A.p; ++i) {
        int64_t const pos = A.positions[i];
        float* o = A.out + static_cast<size_t>(i) * rowLen;
        if (pos < 0 || pos >= A.total) {
            bad = 1;
            std::memset(o, 0, rowLen * sizeof(float));
            continue;
        }
        if (A.offsets)
            patchRow<true>(A, pos, A.offsets + static_cast<size_t>(i) * 18, o);
        else
            patchRow<false>(A, pos, nullptr, o);
    }
    return bad;
}

// out [m, n] = x [m, k] * w, w given transposed (wT [n, k]); n small (the mask convs' 18
// tap columns): dotsRows (dotsList's order, that of the taps fused into the interpolation).
int32_t smallGemmRun(float const* x, int64_t m, int32_t k, float const* wT, int32_t n, float* out, int nt,
                     bool par) {
    int64_t const blocks = (m + 15) / 16;
#pragma omp parallel for num_threads(nt) if (par) schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t const r0 = b * 16;
        dotsRows(x + r0 * k, std::min<int64_t>(16, m - r0), k, wT, n, out + r0 * n);
    }
    return 0;
}

}  // namespace SSI_BLOCK_NS
}  // namespace
#endif  // SSI_BLOCK_PASS
