// libssi_cuda.so: a C ABI over the kernel API (ssi/kernels.h) for ctypes, taking raw device
// pointers (e.g. torch CUDA tensors' data_ptr()) and a cudaStream_t as an integer.
// Every function returns a cudaError_t value (0 = success); ssi_cuda_error_string names it.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "ssi/kernels.h"
#ifdef SSI_CUDA_EMULATION
#include "emulation/emulation.h"
#endif

#define SSI_CUDA_API extern "C" __attribute__((visibility("default")))

namespace {
ssi::SparseConvParams convParams(int32_t const* q) {
    ssi::SparseConvParams p{};
    p.n = q[0], p.cin = q[1], p.h = q[2], p.w = q[3], p.cout = q[4], p.kh = q[5], p.kw = q[6], p.ho = q[7];
    p.wo = q[8], p.strideH = q[9], p.strideW = q[10], p.padH = q[11], p.padW = q[12], p.dilationH = q[13];
    p.dilationW = q[14], p.groups = q[15], p.relu = q[16], p.deformable = q[17] != 0;
    return p;
}
ssi::DType dtypeOf(int32_t d) { return static_cast<ssi::DType>(d); }
cudaStream_t streamOf(uint64_t s) { return reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(s)); }
}  // namespace

// 2: the SSIBottleneck workspace layout has 25 fields (ssi_cuda_bottleneck_layout); 3: and
// ssi_cuda_bottleneck_pdl; 4: and ssi_cuda_launch_count.
SSI_CUDA_API int32_t ssi_cuda_abi_version() { return 4; }

SSI_CUDA_API char const* ssi_cuda_error_string(int32_t err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

// params: n, h, w, mode, gridInterval, seed, layer (the field order of ssi::SampleMaskParams).
SSI_CUDA_API int32_t ssi_cuda_sample_mask(void const* logits, void* mask, int32_t dtype, int32_t const* q,
                                          void* workspace, uint64_t stream) {
    ssi::SampleMaskParams p{q[0], q[1], q[2], q[3], q[4], q[5], q[6]};
    return ssi::launchSampleMask(logits, mask, dtypeOf(dtype), p, workspace, streamOf(stream));
}

SSI_CUDA_API uint64_t ssi_cuda_sparse_conv2d_workspace_size(int32_t const* q, int32_t dtype) {
    return ssi::sparseConv2dWorkspaceSize(convParams(q), dtypeOf(dtype));
}

// params: the 18 fields of ssi::SparseConvParams in order (deformable as 0/1).
SSI_CUDA_API int32_t ssi_cuda_sparse_conv2d(void const* x, void const* weight, void const* bias, void const* mask,
                                            void const* offset, void* y, int32_t dtype, int32_t const* q,
                                            void* workspace, uint64_t stream) {
    return ssi::launchSparseConv2d(x, weight, bias, mask, offset, y, dtypeOf(dtype), convParams(q), workspace,
                                   streamOf(stream));
}

SSI_CUDA_API int32_t ssi_cuda_gaussian_interp(void const* values, void const* mask, void const* bias,
                                              void const* residual, void* out, int32_t dtype, int32_t n, int32_t c,
                                              int32_t h, int32_t w, float sigma, int32_t relu, void* workspace,
                                              uint64_t stream) {
    ssi::GaussianInterpParams p{n, c, h, w, sigma, relu, residual != nullptr};
    return ssi::launchGaussianInterp(values, mask, bias, residual, out, dtypeOf(dtype), p, workspace,
                                     streamOf(stream));
}

namespace {
// ints: n, cin, h, w, planes, cout, stride, dcn, downsample, mode, gridInterval, seed, layer1, layer2,
// channelsLast; floats: sigma1, sigma2, density.
ssi::BottleneckParams bottleneckParams(int32_t const* q, float const* f) {
    ssi::BottleneckParams p{};
    p.n = q[0], p.cin = q[1], p.h = q[2], p.w = q[3], p.planes = q[4], p.cout = q[5], p.stride = q[6];
    p.dcn = q[7], p.downsample = q[8], p.mode = q[9], p.gridInterval = q[10], p.seed = q[11], p.layer1 = q[12];
    p.layer2 = q[13], p.channelsLast = q[14];
    p.sigma1 = f[0], p.sigma2 = f[1], p.density = f[2];
    return p;
}
}  // namespace

// The workspace layout of SSIBottleneck: 25 int64 (the fields of ssi::BottleneckLayout in order,
// byte offsets or -1, then the total). Returns 0, or 1 for invalid parameters.
SSI_CUDA_API int32_t ssi_cuda_bottleneck_layout(int32_t const* q, float const* f, int32_t dtype, int64_t* out) {
    ssi::BottleneckParams const p = bottleneckParams(q, f);
    ssi::BottleneckLayout const L = ssi::bottleneckLayout(p, dtypeOf(dtype));
    static_assert(sizeof(L) == 25 * sizeof(int64_t), "BottleneckLayout is 25 int64");
    std::memcpy(out, &L, sizeof(L));
    return ssi::validBottleneckParams(p) ? 0 : 1;
}

// tensors: x, the 14 weights in the contract's order (null for absent parts), y, mask1, mask2.
SSI_CUDA_API int32_t ssi_cuda_bottleneck(void* const* tensors, int32_t dtype, int32_t const* q, float const* f,
                                         void* workspace, uint64_t stream) {
    ssi::BottleneckTensors t{};
    void const** in[] = {&t.x, &t.mask1W, &t.mask1B, &t.mask2W, &t.mask2B, &t.conv1W, &t.conv1B, &t.offsetW,
                         &t.offsetB, &t.conv2W, &t.conv2B, &t.conv3W, &t.conv3B, &t.downsampleW, &t.downsampleB};
    for (int i = 0; i < 15; ++i) *in[i] = tensors[i];
    t.y = tensors[15], t.mask1 = tensors[16], t.mask2 = tensors[17];
    return ssi::launchSSIBottleneck(t, dtypeOf(dtype), bottleneckParams(q, f), workspace, streamOf(stream));
}

// The GEMM path the block's launches take now: 0 portable, 1 sm_90a (SSI_BLOCK_GEMM=sm90 on a
// compute capability 9.0 device, in a build with the Hopper kernels; -1: sm90 asked of a build
// without them), 2 portable on the register path (SSI_BLOCK_GEMM=regs: no cp.async pipeline).
SSI_CUDA_API int32_t ssi_cuda_bottleneck_gemm_path() {
    char const* env = std::getenv("SSI_BLOCK_GEMM");
    if (!ssi::bottleneckHasSm90Gemm() && env != nullptr && std::strcmp(env, "sm90") == 0) return -1;
    return static_cast<int32_t>(ssi::bottleneckGemmPath());
}

// 1 when the block's launches are chained by programmatic dependent launch now (SSI_BLOCK_PDL=1
// on a compute capability >= 9.0 device), else 0.
SSI_CUDA_API int32_t ssi_cuda_bottleneck_pdl() { return ssi::bottleneckPdl() ? 1 : 0; }

// One-time setup of the block kernels (before any graph capture).
SSI_CUDA_API int32_t ssi_cuda_bottleneck_prepare() { return ssi::bottleneckPrepare(); }

// Synchronises the device: for test scripts only (never called by the kernels).
SSI_CUDA_API int32_t ssi_cuda_device_synchronize() {
#ifdef SSI_CUDA_EMULATION
    return 0;  // emulated launches run to completion on the calling thread
#else
    return cudaDeviceSynchronize();
#endif
}

// Kernel launches so far in this process, counted by the emulation (a block's launch sequence is
// part of what the tests pin); -1 on a GPU build, which does not count them.
SSI_CUDA_API int64_t ssi_cuda_launch_count() {
#ifdef SSI_CUDA_EMULATION
    return ssi::emu::gLaunchCount.load();
#else
    return -1;
#endif
}

// 1 when this library runs the kernels on host fibers (emulation/emulation.h), 0 on a GPU.
SSI_CUDA_API int32_t ssi_cuda_is_emulation() {
#ifdef SSI_CUDA_EMULATION
    return 1;
#else
    return 0;
#endif
}
