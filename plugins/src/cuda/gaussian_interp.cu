// GaussianInterp: dense = act(m f + (1 - m) N/D + bias [+ residual]), float32 arithmetic.
//
// A block owns a 32x32 tile of one image and a slice of its channels. The 7x7 Gaussian is
// separable (ssi/math.h), so each sum is a 7-tap row pass followed by a 7-tap column pass
// over the tile and its 3-pixel halo in shared memory:
//   once per block:   mask halo -> row pass -> column pass: S_m for the thread's 4 positions;
//   per channel:      m*f halo (values read only where m > 0) -> row pass (each thread slides
//                     over 8 columns of one row, 14 loads for 8 sums) -> column pass (each
//                     thread: one column, 4 rows, 10 loads) -> R = a S_mf / (a S_m + 1e-5),
//                     fused bias / residual / ReLU, coalesced stores.
// Row-pass results are double-buffered, so a channel costs two barriers.
#include "interp_tile.cuh"

namespace ssi {
namespace {

using namespace cuda::interp;  // kTile, kHalo, kRows, rowPass, columnPass (interp_tile.cuh)

template <typename T>
__global__ void __launch_bounds__(kThreads, 3)
    gaussianInterpKernel(T const* __restrict__ values, T const* __restrict__ mask, T const* __restrict__ bias,
                         T const* __restrict__ residual, T* __restrict__ out, GaussianInterpParams p, int32_t slice,
                         int32_t slices) {
    __shared__ float sM[kHalo][kHalo + 1];
    __shared__ float sMF[kHalo][kHalo + 1];
    __shared__ float sRow[2][kHalo][kTile + 1];

    int const tid = threadIdx.x;
    int const tileX = blockIdx.x * kTile, tileY = blockIdx.y * kTile;
    int const n = blockIdx.z / slices;
    int const c0 = (blockIdx.z % slices) * slice;
    int const cEnd = min(c0 + slice, p.c);
    size_t const hw = static_cast<size_t>(p.h) * p.w;

    float g[kWin];
    float const a = cuda::interp::gaussianWindow(p.sigma, g);

    for (int i = tid; i < kHalo * kHalo; i += kThreads) {
        int const r = i / kHalo, c = i % kHalo;
        int const yy = tileY - kR + r, xx = tileX - kR + c;
        bool const inside = yy >= 0 && yy < p.h && xx >= 0 && xx < p.w;
        sM[r][c] = inside ? cuda::ld(mask, n * hw + static_cast<size_t>(yy) * p.w + xx) : 0.0f;
    }
    __syncthreads();
    rowPass(sM, sRow[0], g, tid);
    __syncthreads();

    // This thread's outputs: column tx, rows ty0 .. ty0 + kRows - 1 of the tile.
    int const tx = tid % kTile, ty0 = (tid / kTile) * kRows;
    int const x = tileX + tx;
    float sumM[kRows], mq[kRows];
    columnPass(sRow[0], tx, ty0, g, sumM);
#pragma unroll
    for (int r = 0; r < kRows; ++r) mq[r] = sM[ty0 + r + kR][tx + kR];

    int buf = 1;
    for (int c = c0; c < cEnd; ++c, buf ^= 1) {
        // m*f of the haloed tile. The previous channel's row pass (the last reader of sMF)
        // ended before the barrier that preceded its column pass.
        T const* plane = values + (static_cast<size_t>(n) * p.c + c) * hw;
        for (int i = tid; i < kHalo * kHalo; i += kThreads) {
            int const r = i / kHalo, cc = i % kHalo;
            float const m = sM[r][cc];
            float v = 0.0f;
            if (m > 0.0f) {  // values are read only where the mask is > 0 (inside the map)
                int const yy = tileY - kR + r, xx = tileX - kR + cc;
                v = math::interpSample(m, cuda::ld(plane, static_cast<size_t>(yy) * p.w + xx));
            }
            sMF[r][cc] = v;
        }
        __syncthreads();
        float mf[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) mf[r] = sMF[ty0 + r + kR][tx + kR];
        rowPass(sMF, sRow[buf], g, tid);
        __syncthreads();
        float sumMF[kRows];
        columnPass(sRow[buf], tx, ty0, g, sumMF);
        float const bc = cuda::ld(bias, c);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            int const y = tileY + ty0 + r;
            if (y >= p.h || x >= p.w) continue;
            size_t const o = (static_cast<size_t>(n) * p.c + c) * hw + static_cast<size_t>(y) * p.w + x;
            float const res = p.hasResidual ? cuda::ld(residual, o) : 0.0f;
            float const rr = math::interpRatio(a, sumMF[r], sumM[r]);
            cuda::st(out, o, math::interpCombine(mq[r], mf[r], rr, bc, res, p.hasResidual, p.relu));
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
    int64_t const tiles = static_cast<int64_t>(cuda::ceilDiv(p.w, kTile)) * cuda::ceilDiv(p.h, kTile) * p.n;
    // Channels per block: 32, fewer when that leaves the GPU short of blocks (>= ~512 wanted);
    // each block pays one extra channel's work for the mask sums.
    int64_t const want = (static_cast<int64_t>(p.c) * tiles + 511) / 512;
    int32_t const slice = static_cast<int32_t>(want < 4 ? 4 : (want > 32 ? 32 : want));
    int32_t const slices = (p.c + slice - 1) / slice;
    dim3 const grid(cuda::ceilDiv(p.w, kTile), cuda::ceilDiv(p.h, kTile),
                    static_cast<unsigned>(static_cast<int64_t>(p.n) * slices));
    if (grid.y > 65535u || static_cast<int64_t>(p.n) * slices > 65535) return cudaErrorInvalidConfiguration;
    return cuda::dispatch(dtype, [&](auto tag) {
        using T = decltype(tag);
        auto* kernel = &gaussianInterpKernel<T>;
        SSI_LAUNCH(kernel, grid, kThreads, stream, static_cast<T const*>(values), static_cast<T const*>(mask),
                   static_cast<T const*>(bias), static_cast<T const*>(residual), static_cast<T*>(out), p, slice,
                   slices);
        return cuda::launchStatus();
    });
}

}  // namespace ssi
