// Host-emulation build of ../capi.cu (tests without a GPU; see emulation.h).
#include "../capi.cu"
#include "common.cuh"

#include <cstdlib>

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

// The order of a block's threads between barriers for later launches (emulation.h: 0 ascending,
// 1 descending, 2 shuffled anew each pass); returns the previous one, or -1 (unchanged)
// for an unknown value.
SSI_CUDA_API int32_t ssi_cuda_emu_set_thread_order(int32_t order) {
    if (order < 0 || order > 2) return -1;
    auto const before = static_cast<int32_t>(ssi::emu::gThreadOrder);
    ssi::emu::gThreadOrder = static_cast<ssi::emu::ThreadOrder>(order);
    return before;
}

namespace {
// SSI_EMU_THREAD_ORDER=0/1/2 in the environment sets the order when the library loads, so that a
// whole emulation test run can take another order (the tests also set it through the call above).
int32_t const kOrderFromEnvironment = [] {
    char const* v = std::getenv("SSI_EMU_THREAD_ORDER");
    return v && *v ? ssi_cuda_emu_set_thread_order(std::atoi(v)) : 0;
}();

// A deliberate race: each thread writes its slot, then reads its neighbour's before any barrier.
void threadOrderProbe(int32_t* seen) {
    __shared__ int32_t slot[64];
    int const t = static_cast<int>(threadIdx.x);
    if (t == 0)
        for (int i = 0; i < 64; ++i) slot[i] = 0;
    __syncthreads();
    slot[t] = t + 1;
    seen[t] = slot[(t + 1) % 64];
}

// Warp 1 votes, then sets a flag that warp 0 reads before its own vote; each thread also keeps its
// warp's ballot of odd lanes. With votes that wait for their warp only, a descending order lets
// warp 1 pass its vote and set the flag before warp 0 looks (a block-wide vote would hold it).
void warpVoteProbe(int32_t* seen) {
    __shared__ int32_t flag;
    int const t = static_cast<int>(threadIdx.x);
    if (t == 0) flag = 0;
    __syncthreads();
    int32_t before = -1;
    if (t < 32) before = flag;
    unsigned const b = __ballot_sync(0xffffffffu, t & 1);
    if (t == 32) flag = 1;
    seen[t] = b == 0xAAAAAAAAu ? before : -2;
}
}  // namespace

SSI_CUDA_API int32_t ssi_cuda_emu_warp_vote_probe(int32_t* seen) {
    ssi::emu::launch(&warpVoteProbe, dim3(1), dim3(64), seen);
    return ssi::emu::takeLaunchError() != cudaSuccess ? -1 : 0;
}

// What each of 64 threads saw of its neighbour's slot under the current order (0: not yet
// written): the tests check that the orders differ as emulation.h says.
SSI_CUDA_API int32_t ssi_cuda_emu_thread_order_probe(int32_t* seen) {
    ssi::emu::launch(&threadOrderProbe, dim3(1), dim3(64), seen);
    return ssi::emu::takeLaunchError() != cudaSuccess ? -1 : 0;
}

namespace ssi {
namespace emu_probe {  // inside namespace ssi: its __shared__ static is in the poisoned section
// Each thread reads its word of a shared array no thread writes before, then writes it: with the
// poison every read is one of the two patterns, never what the block before wrote.
void sharedPoisonProbe(int32_t* seen) {
    __shared__ uint32_t never[64];
    int const t = static_cast<int>(threadIdx.x);
    uint32_t const v = never[t];
    atomicOr(seen, v == 0xFFFFFFFFu ? 1 : v == 0u ? 2 : 4);
    __syncthreads();
    never[t] = 0x5A5A0000u + static_cast<uint32_t>(t);
}
}  // namespace emu_probe
}  // namespace ssi

// The bytes of the __shared__ statics that each block starts with poisoned, and what the probe's
// blocks (2 launches of 3) found in its unwritten array: 1 the 0xFF pattern, 2 zeros, 4 anything
// else (a previous block's values). 3 with the fill before every block, 7 with the default.
SSI_CUDA_API int64_t ssi_cuda_emu_shared_bytes() { return ssi_emu_shared_end - ssi_emu_shared_begin; }
// Shared memory poisoned before every block (1) or only before each launch's first (0, the
// default); returns the previous setting.
SSI_CUDA_API int32_t ssi_cuda_emu_set_poison_every_block(int32_t on) {
    bool const before = ssi::emu::gPoisonEveryBlock;
    ssi::emu::gPoisonEveryBlock = on != 0;
    return before ? 1 : 0;
}
SSI_CUDA_API int32_t ssi_cuda_emu_shared_poison_probe() {
    int32_t seen = 0;
    for (int i = 0; i < 2; ++i) ssi::emu::launch(&ssi::emu_probe::sharedPoisonProbe, dim3(3), dim3(64), &seen);
    return ssi::emu::takeLaunchError() != cudaSuccess ? -1 : seen;
}
