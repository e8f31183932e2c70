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
}
