// SparseConv2d: convolution evaluated only at the output positions where mask > 0.
//
// 1. compactKernel (common.cuh) lists the sampled positions in the workspace (index + count,
//    on the device, no host round trip) and writes exact zeros at every other position.
// 2. sparseConvKernel: implicit GEMM over the list, M = sampled positions, N = output channels
//    of a group, K = taps x input channels of the group (tap-major, like the torch op). The
//    grid is sized for the maximum count (N*Ho*Wo); blocks past the device-side count exit at
//    once, so the work is proportional to the count. Per tap, the block computes each
//    position's input corners once (regular tap or deformable-v1 bilinear corners, from
//    ssi/math.h); the A tile is gathered from x through them (consecutive threads read
//    consecutive positions of one channel plane), the B tile comes from the weights. The
//    next step's tiles are loaded into registers while the current one is multiplied.
//    Long K with few blocks (3x3 convs of wide layers on small maps) is split over
//    blockIdx.z; the splits' float32 partial sums go to the workspace and splitReduceKernel
//    adds them in a fixed order (deterministic) before bias and ReLU.
//    fp16 with >= 16 channels per group multiplies on tensor cores (WMMA 16x16x16, fp32
//    accumulation); everything else in fp32 FMAs. Epilogue: bias, ReLU, coalesced NCHW
//    stores through a shared-memory transpose.
#include <algorithm>
#include <type_traits>

#ifndef SSI_CUDA_EMULATION
#include <mma.h>
#endif

#include "common.cuh"

namespace ssi {
namespace {

constexpr int kBM = 64;  // positions per block
constexpr int kBN = 64;  // output channels per block
constexpr int kBK = 32;  // input channels per K step
constexpr int kThreads = 128;

struct SmemSimt {
    float a[kBK][kBM + 4];  // [k][m]
    float b[kBK][kBN + 4];  // [k][n]
};
struct SmemTensorCore {
    __half a[kBM][kBK + 8];  // [m][k], row-major A for WMMA
    __half b[kBK][kBN + 8];  // [k][n], row-major B for WMMA
};

template <typename T, bool kDeform, bool kTensorCore>
__global__ void __launch_bounds__(kThreads, 3)
    sparseConvKernel(T const* __restrict__ x, T const* __restrict__ weight, T const* __restrict__ bias,
                     T const* __restrict__ offset, T* __restrict__ y, cuda::CompactList list, SparseConvParams p,
                     int32_t splits, float* __restrict__ partial, int32_t positions) {
    using Smem = std::conditional_t<kTensorCore, SmemTensorCore, SmemSimt>;
    __shared__ __align__(32) Smem sm;
    __shared__ __align__(32) float sC[kBN][kBM + 4];  // accumulators, [n][m]
    __shared__ int32_t sImg[kBM], sQ[kBM], sYo[kBM], sXo[kBM];
    __shared__ math::TapCorners sTap[kBM];

    int32_t const count = *list.count;
    int32_t const mBase = static_cast<int32_t>(blockIdx.x) * kBM;
    if (mBase >= count) return;  // grid sized for the maximum count

    int const tid = threadIdx.x;
    int32_t const cinG = p.cin / p.groups, coutG = p.cout / p.groups, taps = p.kh * p.kw;
    int32_t const g = blockIdx.z / splits, split = blockIdx.z % splits;
    int32_t const nBase = static_cast<int32_t>(blockIdx.y) * kBN;
    size_t const hw = static_cast<size_t>(p.h) * p.w;
    int32_t const howo = p.ho * p.wo;

    if (tid < kBM) {
        int32_t const m = mBase + tid;
        if (m < count) {
            int32_t const lin = list.index[m];
            int32_t const n = lin / howo, q = lin - n * howo;
            sImg[tid] = n;
            sQ[tid] = q;
            sYo[tid] = q / p.wo;
            sXo[tid] = q - (q / p.wo) * p.wo;
        } else {
            sImg[tid] = -1;
        }
    }

    // Accumulators: SIMT 4x8 per thread (m = tm + 16 i, n = tn + 8 j); WMMA 2x2 fragments per warp.
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

    // K is walked in steps of (tap, kBK input channels), tap-major. Software pipeline: the
    // global loads of step s+1 go to registers while the tensor cores / FMAs work on step s
    // from shared memory; the tap corners (sTap) are computed once per tap.
    int32_t const kChunks = (cinG + kBK - 1) / kBK;
    // Split K: this block walks steps [s0, s1) of the taps * kChunks steps.
    int32_t const allSteps = taps * kChunks;
    int32_t const s0 = static_cast<int32_t>(static_cast<int64_t>(allSteps) * split / splits);
    int32_t const s1 = static_cast<int32_t>(static_cast<int64_t>(allSteps) * (split + 1) / splits);
    constexpr int kPerThreadA = kBM * kBK / kThreads;  // 16
    constexpr int kPerThreadB = kBK * kBN / kThreads;  // 16
    float ra[kPerThreadA], rb[kPerThreadB];

    auto computeTap = [&](int32_t tap) {
        if (tid < kBM && sImg[tid] >= 0) {
            int32_t const iy = math::tapCoord(sYo[tid], tap / p.kw, p.strideH, p.padH, p.dilationH);
            int32_t const ix = math::tapCoord(sXo[tid], tap % p.kw, p.strideW, p.padW, p.dilationW);
            if constexpr (kDeform) {
                size_t const o = (static_cast<size_t>(sImg[tid]) * 2 * taps + 2 * tap) * howo + sQ[tid];
                sTap[tid] = math::deformTap(iy, ix, cuda::ld(offset, o), cuda::ld(offset, o + howo), p.h, p.w);
            } else {
                sTap[tid] = math::regularTap(iy, ix, p.h, p.w);
            }
        }
    };
    // Thread roles in the tile loads (kThreads is a multiple of kBM and of kBK): for A, one
    // position (aM) and the channels aK0 + i * kAStride; for B, one input channel (bK) and the
    // output channels bN0 + i * kBStride.
    constexpr int kAStride = kThreads / kBM, kBStride = kThreads / kBK;
    int const aM = tid % kBM, aK0 = tid / kBM;
    int const bK = tid % kBK, bN0 = tid / kBK;
    auto loadStep = [&](int32_t s) {  // global -> registers (reads sTap of the step's tap)
        int32_t const tap = s / kChunks, k0 = (s - tap * kChunks) * kBK;
        int32_t const n = sImg[aM];
        math::TapCorners const tc = sTap[aM];
        T const* plane = x + (static_cast<size_t>(n < 0 ? 0 : n) * p.cin + static_cast<size_t>(g) * cinG + k0 + aK0) * hw;
#pragma unroll
        for (int i = 0; i < kPerThreadA; ++i) {
            int32_t const c = k0 + aK0 + i * kAStride;
            T const* pc = plane + static_cast<size_t>(i * kAStride) * hw;
            float v = 0.0f;
            if (n >= 0 && c < cinG) {
                if constexpr (kDeform) {
                    float cv[4];
#pragma unroll
                    for (int k = 0; k < 4; ++k) cv[k] = tc.wgt[k] != 0.0f ? cuda::ld(pc, tc.off[k]) : 0.0f;
                    v = math::tapValue(tc, cv[0], cv[1], cv[2], cv[3]);
                } else {
                    v = tc.wgt[0] != 0.0f ? cuda::ld(pc, tc.off[0]) : 0.0f;
                }
            }
            ra[i] = v;
        }
        int32_t const cb = k0 + bK;
        T const* wrow = weight + (static_cast<size_t>(g * coutG + nBase + bN0) * cinG + cb) * taps + tap;
#pragma unroll
        for (int i = 0; i < kPerThreadB; ++i) {  // B: weight[g*coutG + co][c][tap]
            int32_t const co = nBase + bN0 + i * kBStride;
            rb[i] = (cb < cinG && co < coutG)
                        ? cuda::ld(wrow, static_cast<size_t>(i * kBStride) * cinG * taps) : 0.0f;
        }
    };
    auto storeStep = [&] {  // registers -> shared memory
#pragma unroll
        for (int i = 0; i < kPerThreadA; ++i) {
            int const kk = aK0 + i * kAStride;
            if constexpr (kTensorCore) sm.a[aM][kk] = __float2half_rn(ra[i]);
            else sm.a[kk][aM] = ra[i];
        }
#pragma unroll
        for (int i = 0; i < kPerThreadB; ++i) {
            int const nl = bN0 + i * kBStride;
            if constexpr (kTensorCore) sm.b[bK][nl] = __float2half_rn(rb[i]);
            else sm.b[bK][nl] = rb[i];
        }
    };
    static_assert(kThreads % kBM == 0 && kThreads % kBK == 0, "tile loads assume these divisibilities");
    auto computeStep = [&] {
        if constexpr (kTensorCore) {
            using namespace nvcuda;
#pragma unroll
            for (int ks = 0; ks < kBK; ks += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa[2];
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb[2];
#pragma unroll
                for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &sm.a[wm * 32 + 16 * i][ks], kBK + 8);
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &sm.b[ks][wn * 32 + 16 * j], kBN + 8);
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

    // Prologue: corners of tap 0, step 0 into shared memory, corners of step 1's tap.
    __syncthreads();  // sImg, sQ, sYo, sXo
    computeTap(s0 / kChunks);
    __syncthreads();
    loadStep(s0);
    __syncthreads();  // every thread's reads of sTap for step s0 are done
    storeStep();
    if (s0 + 1 < s1 && (s0 + 1) / kChunks != s0 / kChunks) computeTap((s0 + 1) / kChunks);
    __syncthreads();
    for (int32_t s = s0; s < s1; ++s) {
        bool const more = s + 1 < s1;  // uniform over the block
        if (more) loadStep(s + 1);
        computeStep();
        __syncthreads();  // shared tiles and sTap free
        if (more) {
            storeStep();
            int32_t const tapNext = (s + 2) / kChunks;
            if (s + 2 < s1 && tapNext != (s + 1) / kChunks) computeTap(tapNext);
        }
        __syncthreads();
    }

    // Epilogue: accumulators -> sC[n][m] -> bias, ReLU, NCHW stores (consecutive threads,
    // consecutive positions of one output channel).
    if constexpr (kTensorCore) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
                nvcuda::wmma::store_matrix_sync(&sC[wn * 32 + 16 * j][wm * 32 + 16 * i], frag[i][j], kBM + 4,
                                                nvcuda::wmma::mem_col_major);
    } else {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) sC[tn + 8 * j][tm + 16 * i] = acc[i][j];
    }
    __syncthreads();
    for (int e = tid; e < kBM * kBN; e += kThreads) {
        int const ml = e % kBM, nl = e / kBM;
        int32_t const n = sImg[ml], co = nBase + nl;
        if (n < 0 || co >= coutG) continue;
        int32_t const oc = g * coutG + co;
        if (splits > 1)  // partial sums [split][cout][position], reduced by splitReduceKernel
            partial[(static_cast<size_t>(split) * p.cout + oc) * positions + mBase + ml] = sC[nl][ml];
        else
            cuda::st(y, (static_cast<size_t>(n) * p.cout + oc) * howo + sQ[ml],
                     math::convEpilogue(sC[nl][ml], cuda::ld(bias, oc), p.relu));
    }
}

constexpr int kReduceThreads = 256, kReduceChannels = 16;

// Split-K epilogue: y = act(sum of the splits' partial sums, in split order, + bias) at each
// listed position; grid sized for the maximum count, blocks past the count exit.
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    splitReduceKernel(float const* __restrict__ partial, T const* __restrict__ bias, T* __restrict__ y,
                      cuda::CompactList list, SparseConvParams p, int32_t splits, int32_t positions) {
    int32_t const m = static_cast<int32_t>(blockIdx.x) * kReduceThreads + static_cast<int32_t>(threadIdx.x);
    if (m >= *list.count) return;
    int32_t const howo = p.ho * p.wo;
    int32_t const lin = list.index[m], n = lin / howo, q = lin - n * howo;
    int32_t const c0 = static_cast<int32_t>(blockIdx.y) * kReduceChannels;
    int32_t const c1 = min(c0 + kReduceChannels, p.cout);
    for (int32_t oc = c0; oc < c1; ++oc) {
        float acc = partial[static_cast<size_t>(oc) * positions + m];
        for (int32_t sp = 1; sp < splits; ++sp) acc += partial[(static_cast<size_t>(sp) * p.cout + oc) * positions + m];
        cuda::st(y, (static_cast<size_t>(n) * p.cout + oc) * howo + q, math::convEpilogue(acc, cuda::ld(bias, oc), p.relu));
    }
}

// Number of K splits (cuda::splitKCount), at most 8. (ResNet-101 at 1024x1696, fp16 or fp32:
// layer3 conv1 and conv2: 2 splits, layer4 conv1 and conv2: 4, everything else 1.)
int32_t splitCount(SparseConvParams const& p) {
    int64_t const cinG = p.cin / p.groups, coutG = p.cout / p.groups;
    int64_t const steps = static_cast<int64_t>(p.kh) * p.kw * ((cinG + kBK - 1) / kBK);
    int64_t const positions = static_cast<int64_t>(p.n) * p.ho * p.wo;
    int64_t const blocks = (positions + kBM - 1) / kBM * ((coutG + kBN - 1) / kBN) * p.groups;
    int32_t want = cuda::splitKCount(steps, blocks > 0 ? blocks : 1, 8);
    while (want > 1 && p.groups * want > 65535) --want;
    return want;
}

size_t partialBytes(SparseConvParams const& p) {
    int32_t const splits = splitCount(p);
    if (splits <= 1) return 0;
    return static_cast<size_t>(splits) * p.cout * p.n * p.ho * p.wo * sizeof(float);
}

template <typename T, bool kDeform, bool kTensorCore>
cudaError_t launchConv(T const* x, T const* w, T const* b, T const* off, T* y, cuda::CompactList list,
                       SparseConvParams const& p, int64_t positions, float* partial, cudaStream_t stream) {
    int32_t const splits = splitCount(p);
    dim3 const grid(cuda::ceilDiv(positions, kBM), cuda::ceilDiv(p.cout / p.groups, kBN), p.groups * splits);
    auto* kernel = &sparseConvKernel<T, kDeform, kTensorCore>;
    SSI_LAUNCH(kernel, grid, kThreads, stream, x, w, b, off, y, list, p, splits, partial,
               static_cast<int32_t>(positions));
    cudaError_t e = cuda::launchStatus();
    if (e != cudaSuccess || splits == 1) return e;
    auto* reduce = &splitReduceKernel<T>;
    dim3 const rgrid(cuda::ceilDiv(positions, kReduceThreads), cuda::ceilDiv(p.cout, kReduceChannels));
    SSI_LAUNCH(reduce, rgrid, kReduceThreads, stream, static_cast<float const*>(partial), b, y, list, p, splits,
               static_cast<int32_t>(positions));
    return cuda::launchStatus();
}

bool validParams(SparseConvParams const& p) {
    if (p.n < 0 || p.cin <= 0 || p.h <= 0 || p.w <= 0 || p.cout <= 0 || p.kh <= 0 || p.kw <= 0) return false;
    if (p.strideH <= 0 || p.strideW <= 0 || p.padH < 0 || p.padW < 0 || p.dilationH <= 0 || p.dilationW <= 0)
        return false;
    if (p.groups <= 0 || p.groups > 65535 || p.cin % p.groups || p.cout % p.groups) return false;
    if (p.ho != math::convOutputSize(p.h, p.kh, p.strideH, p.padH, p.dilationH) ||
        p.wo != math::convOutputSize(p.w, p.kw, p.strideW, p.padW, p.dilationW) || p.ho <= 0 || p.wo <= 0)
        return false;
    // 32-bit position indices, 32-bit plane offsets.
    return static_cast<int64_t>(p.n) * p.ho * p.wo < (int64_t{1} << 31) &&
           static_cast<int64_t>(p.h) * p.w < (int64_t{1} << 31);
}

}  // namespace

// Workspace: [compaction list][split-K partial sums, when K is split].
size_t sparseConv2dWorkspaceSize(SparseConvParams const& p, DType) {
    if (!validParams(p)) return cuda::compactWorkspaceSize(0);
    size_t const list = cuda::compactWorkspaceSize(static_cast<size_t>(p.n) * p.ho * p.wo);
    return list + partialBytes(p);
}

cudaError_t launchSparseConv2d(void const* x, void const* weight, void const* bias, void const* mask,
                               void const* offset, void* y, DType dtype, SparseConvParams const& p, void* workspace,
                               cudaStream_t stream) {
    if (!validParams(p)) return cudaErrorInvalidValue;
    int64_t const positions = static_cast<int64_t>(p.n) * p.ho * p.wo;
    if (positions == 0) return cudaSuccess;
    if (!x || !weight || !bias || !mask || !y || !workspace || (p.deformable && !offset)) return cudaErrorInvalidValue;
    cuda::CompactList const list = cuda::compactList(workspace);
    float* const partial = partialBytes(p)
                               ? reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) +
                                                          cuda::compactWorkspaceSize(static_cast<size_t>(positions)))
                               : nullptr;
    cudaError_t err = cuda::memsetAsync(list.count, 0, sizeof(int32_t), stream);
    if (err != cudaSuccess) return err;
    return cuda::dispatch(dtype, [&](auto tag) {
        using T = decltype(tag);
        auto const* xt = static_cast<T const*>(x);
        auto const* wt = static_cast<T const*>(weight);
        auto const* bt = static_cast<T const*>(bias);
        auto const* ot = static_cast<T const*>(offset);
        auto* yt = static_cast<T*>(y);
        auto* compact = &cuda::compactKernel<T>;
        dim3 const compactGrid(cuda::ceilDiv(positions, cuda::kCompactThreads),
                               cuda::ceilDiv(p.cout, cuda::kZeroChannelsPerBlock));
        SSI_LAUNCH(compact, compactGrid, cuda::kCompactThreads, stream,
                   static_cast<T const*>(mask), static_cast<int32_t>(positions), p.ho * p.wo, p.cout, yt, list);
        cudaError_t e = cuda::launchStatus();
        if (e != cudaSuccess) return e;
        constexpr bool kHalf = std::is_same_v<T, __half>;
        bool const tensorCores = kHalf && p.cin / p.groups >= 16 && p.cout / p.groups >= 16;
        if (p.deformable) {
            return tensorCores ? launchConv<T, true, kHalf>(xt, wt, bt, ot, yt, list, p, positions, partial, stream)
                               : launchConv<T, true, false>(xt, wt, bt, ot, yt, list, p, positions, partial, stream);
        }
        return tensorCores ? launchConv<T, false, kHalf>(xt, wt, bt, ot, yt, list, p, positions, partial, stream)
                           : launchConv<T, false, false>(xt, wt, bt, ot, yt, list, p, positions, partial, stream);
    });
}

}  // namespace ssi
