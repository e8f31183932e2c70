// GaussianInterp: dense = act(m f + (1 - m) N/D + bias [+ residual]), float32 arithmetic.
//
// A block owns a 32x4 tile of one image and a slice of up to 32 channels. It loads the mask
// tile with a 3-pixel halo, computes each position's normaliser D and its 49 neighbour
// coefficients W m / D once (shared memory, reused by every channel), then walks its
// channels four at a time: values of the haloed tile (read only where m > 0), 49 FMAs per
// channel and position, fused bias / residual / ReLU, one coalesced store per element.
#include "common.cuh"

namespace ssi {
namespace {

constexpr int kTileW = 32, kTileH = 4, kThreads = kTileW * kTileH;
constexpr int kR = math::kInterpRadius, kWin = contract::kInterpWindow, kTaps = math::kInterpTaps;
constexpr int kHaloW = kTileW + 2 * kR, kHaloH = kTileH + 2 * kR, kHalo = kHaloW * kHaloH;
constexpr int kChunk = 4;   // channels per shared-memory pass
constexpr int kSlice = 32;  // channels per block

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gaussianInterpKernel(T const* __restrict__ values, T const* __restrict__ mask, T const* __restrict__ bias,
                         T const* __restrict__ residual, T* __restrict__ out, GaussianInterpParams p,
                         int32_t slices) {
    __shared__ float sW[kTaps];
    __shared__ float sM[kHalo];
    __shared__ float sCoef[kTaps][kThreads];
    __shared__ float sF[kChunk][kHalo];

    int const tid = threadIdx.x, tx = tid % kTileW, ty = tid / kTileW;
    int const x0 = blockIdx.x * kTileW, y0 = blockIdx.y * kTileH;
    int const n = blockIdx.z / slices;
    int const c0 = (blockIdx.z % slices) * kSlice;
    int const cEnd = min(c0 + kSlice, p.c);
    size_t const hw = static_cast<size_t>(p.h) * p.w;

    if (tid < kTaps) sW[tid] = math::gaussianWeight(p.sigma, tid / kWin - kR, tid % kWin - kR);
    for (int i = tid; i < kHalo; i += kThreads) {
        int const yy = y0 - kR + i / kHaloW, xx = x0 - kR + i % kHaloW;
        bool const inside = yy >= 0 && yy < p.h && xx >= 0 && xx < p.w;
        sM[i] = inside ? cuda::ld(mask, n * hw + static_cast<size_t>(yy) * p.w + xx) : 0.0f;
    }
    __syncthreads();

    int const y = y0 + ty, x = x0 + tx;
    bool const active = y < p.h && x < p.w;
    int const center = (ty + kR) * kHaloW + tx + kR;
    float const mq = sM[center];
    bool const needR = active && mq < 1.0f;
    if (needR) {
        float sum = 0.0f;
        for (int t = 0; t < kTaps; ++t) sum += sW[t] * sM[(ty + t / kWin) * kHaloW + tx + t % kWin];
        float const d = math::interpNormaliser(sum);
        for (int t = 0; t < kTaps; ++t)
            sCoef[t][tid] = math::interpCoef(sW[t], sM[(ty + t / kWin) * kHaloW + tx + t % kWin], d);
    }

    for (int cb = c0; cb < cEnd; cb += kChunk) {
        int const nc = min(kChunk, cEnd - cb);
        __syncthreads();  // the previous chunk's reads of sF are done
        for (int i = tid; i < kChunk * kHalo; i += kThreads) {
            int const cc = i / kHalo, j = i - cc * kHalo;
            float v = 0.0f;
            if (cc < nc && sM[j] > 0.0f) {  // values are read only where the mask is > 0
                int const yy = y0 - kR + j / kHaloW, xx = x0 - kR + j % kHaloW;
                v = cuda::ld(values, (static_cast<size_t>(n) * p.c + cb + cc) * hw + static_cast<size_t>(yy) * p.w + xx);
            }
            sF[cc][j] = v;
        }
        __syncthreads();
        if (!active) continue;
        float r[kChunk];
#pragma unroll
        for (int cc = 0; cc < kChunk; ++cc) r[cc] = 0.0f;
        if (needR) {
            for (int t = 0; t < kTaps; ++t) {
                float const cf = sCoef[t][tid];
                int const j = (ty + t / kWin) * kHaloW + tx + t % kWin;
#pragma unroll
                for (int cc = 0; cc < kChunk; ++cc) r[cc] += cf * sF[cc][j];
            }
        }
#pragma unroll
        for (int cc = 0; cc < kChunk; ++cc) {
            if (cc >= nc) break;
            int const c = cb + cc;
            size_t const o = (static_cast<size_t>(n) * p.c + c) * hw + static_cast<size_t>(y) * p.w + x;
            float const res = p.hasResidual ? cuda::ld(residual, o) : 0.0f;
            cuda::st(out, o, math::interpCombine(mq, sF[cc][center], r[cc], cuda::ld(bias, c), res, p.hasResidual,
                                                 p.relu));
        }
    }
}

}  // namespace

size_t gaussianInterpWorkspaceSize(GaussianInterpParams const&, DType) { return 0; }

cudaError_t launchGaussianInterp(void const* values, void const* mask, void const* bias, void const* residual,
                                 void* out, DType dtype, GaussianInterpParams const& p, void*, cudaStream_t stream) {
    if (p.n < 0 || p.c < 0 || p.h < 0 || p.w < 0) return cudaErrorInvalidValue;
    if (p.n == 0 || p.c == 0 || p.h == 0 || p.w == 0) return cudaSuccess;
    if (!values || !mask || !bias || !out || (p.hasResidual && !residual)) return cudaErrorInvalidValue;
    int32_t const slices = (p.c + kSlice - 1) / kSlice;
    dim3 const grid(cuda::ceilDiv(p.w, kTileW), cuda::ceilDiv(p.h, kTileH),
                    static_cast<unsigned>(static_cast<int64_t>(p.n) * slices));
    if (grid.y > 65535u || static_cast<int64_t>(p.n) * slices > 65535) return cudaErrorInvalidConfiguration;
    return cuda::dispatch(dtype, [&](auto tag) {
        using T = decltype(tag);
        auto* kernel = &gaussianInterpKernel<T>;
        SSI_LAUNCH(kernel, grid, kThreads, stream, static_cast<T const*>(values), static_cast<T const*>(mask),
                   static_cast<T const*>(bias), static_cast<T const*>(residual), static_cast<T*>(out), p, slices);
        return cuda::launchStatus();
    });
}

}  // namespace ssi
