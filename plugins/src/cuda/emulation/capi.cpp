// Host-emulation build of ../capi.cu (tests without a GPU; see emulation.h).
#include "../capi.cu"
#include "common.cuh"

namespace {
// The emulation's own cp.async contract (tests/test_cuda_emulation.py): a copy lands at its
// thread's wait for its group, not before, so that a kernel reading a stage too early fails.
// Each thread copies 16 bytes in group 1 and 16 (zero-filled) in group 2 and looks at both before
// and after each wait; the flags it clears are its expectations.
void asyncCopyProbe(uint4 const* src, int32_t* failures) {
    __shared__ uint4 stage[2][32];
    int const t = static_cast<int>(threadIdx.x);
    stage[0][t] = make_uint4(7u, 7u, 7u, 7u);
    stage[1][t] = make_uint4(7u, 7u, 7u, 7u);
    auto is = [&](int s, unsigned v) { return stage[s][t].x == v && stage[s][t].w == v; };
    ssi::cuda::copyAsync16(&stage[0][t], src + t);
    ssi::cuda::copyAsyncCommit();
    ssi::cuda::copyAsync16OrZero(&stage[1][t], src + t, false);
    ssi::cuda::copyAsyncCommit();
    int32_t bad = is(0, 7u) && is(1, 7u) ? 0 : 1;  // nothing landed at issue
    ssi::cuda::copyAsyncWaitGroup<1>();
    bad |= is(0, static_cast<unsigned>(t) + 1) && is(1, 7u) ? 0 : 2;  // the older group only
    ssi::cuda::copyAsyncWaitGroup<0>();
    bad |= is(1, 0u) ? 0 : 4;  // then the zero fill
    if (bad) atomicAdd(failures, 1);
}
}  // namespace

SSI_CUDA_API int32_t ssi_cuda_emu_async_copy_probe() {
    std::vector<uint4> src(32);
    for (unsigned t = 0; t < 32; ++t) src[t] = make_uint4(t + 1, t + 1, t + 1, t + 1);
    int32_t failures = 0;
    ssi::emu::launch(&asyncCopyProbe, dim3(1), dim3(32), static_cast<uint4 const*>(src.data()), &failures);
    return ssi::emu::takeLaunchError() != cudaSuccess ? -1 : failures;
}

// The 16-byte asynchronous copies issued so far (emulated launches run one at a time): whether a
// launch took the GEMMs' cp.async pipeline.
SSI_CUDA_API int64_t ssi_cuda_emu_async_copies() { return ssi::emu::gAsyncCopies; }
