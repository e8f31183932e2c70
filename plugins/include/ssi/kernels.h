#pragma once
#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>
namespace ssi {
enum class DType : int32_t { kFLOAT32 = 0, kFLOAT16 = 1 };   // every input/output of one op shares this dtype
struct SampleMaskParams { int32_t n, h, w; int32_t mode, gridInterval, seed, layer; };
struct SparseConvParams { int32_t n, cin, h, w, cout, kh, kw, ho, wo; int32_t strideH, strideW, padH, padW, dilationH, dilationW, groups, relu; bool deformable; };
struct GaussianInterpParams { int32_t n, c, h, w; float sigma; int32_t relu; bool hasResidual; };
size_t sampleMaskWorkspaceSize(SampleMaskParams const&, DType);
size_t sparseConv2dWorkspaceSize(SparseConvParams const&, DType);
size_t gaussianInterpWorkspaceSize(GaussianInterpParams const&, DType);
// All pointers are device pointers, NCHW linear layout. offset/residual may be null. Return cudaSuccess or the launch error.
// No allocation, no synchronisation, no host reads of device data: safe inside CUDA-graph capture.
cudaError_t launchSampleMask(void const* logits, void* mask, DType, SampleMaskParams const&, void* workspace, cudaStream_t);
cudaError_t launchSparseConv2d(void const* x, void const* weight, void const* bias, void const* mask, void const* offset, void* y, DType, SparseConvParams const&, void* workspace, cudaStream_t);
cudaError_t launchGaussianInterp(void const* values, void const* mask, void const* bias, void const* residual, void* out, DType, GaussianInterpParams const&, void* workspace, cudaStream_t);

// ---------------------------------------------------------------------------------------
// SSIBottleneck: one SSI bottleneck (contract op SSIBottleneck, ssi_deploy/ops/bottleneck.py)
// as a chain of kernels on compact channels-last rows, all inside one workspace:
//   mask taps (x rows . [18, Cin], a row GEMM) -> shifted tap sums -> logits l1 [N,H,W], l2 [N,Ho,Wo]
//   -> (forced density: k-th largest per image) -> SampleMask -> m1, m2 (outputs)
//   -> stable partition per mask (perm: sampled positions in raster order, then the rest;
//      index: position -> row or -1; count), deterministic, no atomics
//   -> conv1 rows = relu(x[perm1] W1 + b1) -> Y1 = interp(rows1, m1) dense NHWC
//   -> (DCN) offset rows = patches3x3(x)[perm2] Woff + boff
//   -> conv2 rows = relu(patches3x3(Y1, offsets)[perm2] W2 + b2) -> conv3 rows = rows2 W3
//   -> y = relu(interp(rows3, m2) + b3 + shortcut(x)) written in the output layout.
// Grids are sized for the maximum (every position sampled); blocks past the device-side
// count exit at once. No allocation, no synchronisation, no host read of device data.
struct BottleneckParams {
    int32_t n, cin, h, w;       // x [N, Cin, H, W]
    int32_t planes, cout;       // p and 4p
    int32_t stride, dcn, downsample;
    float sigma1, sigma2;
    int32_t mode, gridInterval, seed, layer1, layer2;
    float density;              // 0: by mode; > 0: forced density (contract forced_count)
    int32_t channelsLast;       // 1: x and y are NHWC (TensorRT kHWC8 with C % 8 == 0), 0: NCHW
};
// Device pointers; every float tensor in the op's dtype. Weights in the contract's (torch)
// layouts: conv weights [Cout, Cin, kh, kw]. offsetW/offsetB and downsampleW/downsampleB may be
// null when dcn / downsample is 0. mask1/mask2: [N,1,H,W] and [N,1,Ho,Wo].
struct BottleneckTensors {
    void const* x;
    void const *mask1W, *mask1B, *mask2W, *mask2B, *conv1W, *conv1B, *offsetW, *offsetB;
    void const *conv2W, *conv2B, *conv3W, *conv3B, *downsampleW, *downsampleB;
    void *y, *mask1, *mask2;
};
// Where each intermediate lies in the workspace (byte offsets; -1: not used by these params).
// Tests read them back (emulation, gpu_check); the order of the fields is the C ABI's. tapWeights
// is always -1: the mask taps GEMM reads the mask weights as they are (it was their packed copy).
// taps holds [splits][N*H*W][18] float32 when that GEMM's K is split.
struct BottleneckLayout {
    int64_t xRows, taps, tapWeights, logits1, logits2, kth, tileCounts1, tileCounts2, perm1, perm2, index1, index2, count1,
        count2, rows1, y1, offsets, rows2, rows3, shortcut, splitPartial, splitCounters, packedWeights, out, total;
};
// Which GEMMs the block's launches use: the portable SIMT/WMMA kernels, or (fp16 conv1, conv3
// and the stride-1 downsample) the sm_90a warpgroup-MMA kernels. The Hopper path is opt-in
// (SSI_BLOCK_GEMM=sm90, read at each launch; the device must be compute capability 9.0 and the
// build must have it) until a GPU run of scripts/gpu_check.sh has checked it. SSI_BLOCK_GEMM=regs
// keeps the portable kernels off their cp.async pipeline (the register path: the same bits), so
// that a GPU run can time what the pipeline gains.
enum class BlockGemmPath : int32_t { kPortable = 0, kSm90 = 1, kPortableRegisters = 2 };
BlockGemmPath bottleneckGemmPath();
bool bottleneckHasSm90Gemm();  // built with the sm_90a kernels
// Whether the block's kernels are chained by programmatic dependent launch (each waits for the
// previous one at its start, so the next can be scheduled while one drains: less time between
// the 8-14 launches of a block). Opt-in (SSI_BLOCK_PDL=1, read at each launch; compute
// capability 9.0 or later) until a GPU run of scripts/gpu_check.sh has checked it.
bool bottleneckPdl();
// One-time setup outside any CUDA-graph capture (kernel attributes of the Hopper path); the
// plugin calls it when it is created. cudaSuccess when there is nothing to do.
cudaError_t bottleneckPrepare();
bool validBottleneckParams(BottleneckParams const&);
BottleneckLayout bottleneckLayout(BottleneckParams const&, DType);
size_t ssiBottleneckWorkspaceSize(BottleneckParams const&, DType);
cudaError_t launchSSIBottleneck(BottleneckTensors const&, DType, BottleneckParams const&, void* workspace,
                                cudaStream_t);
}
