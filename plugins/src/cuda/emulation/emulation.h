// Host emulation of the CUDA features the SSI kernels use, so that the very kernel sources
// of plugins/src/cuda can run on a machine without a GPU (tests and script dry runs only;
// never part of a product build). Compiled with the host compiler and -DSSI_CUDA_EMULATION,
// through the wrappers in this folder.
//
// Each block runs its threads as cooperative fibers (ucontext) on one OS thread: a fiber runs
// until __syncthreads() (or a warp vote) and the next fiber takes over; when every live fiber
// waits, all go on. The fibers take their turns in ascending order, or descending, or shuffled
// anew in each pass (ssi_cuda_emu_set_thread_order, SSI_EMU_THREAD_ORDER), so that a read of
// shared memory another thread writes in the same barrier interval shows in some order. Blocks
// run one after the other (in a scrambled order: on a GPU any order may happen), so `__shared__`
// variables become static ones. Warp-collective WMMA operations are executed by lane 0 of each
// warp on whole 16x16 matrices (fp16 operands, float32 products and sums). A warp vote waits for
// its warp only; the warp then runs ahead of the others to its next barrier or vote. Shared
// memory starts each block poisoned (below: 0xFF or zeros).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#undef __shared__
#define __shared__ static
// The __shared__ statics of namespace ssi, gathered by shared.ld (the CMake target links with it):
// launch() fills them before every block (gPoisonEveryBlock), so that a read of shared memory the
// block has not written is never the previous block's value, or by default before each launch's
// first block only. The fills take turns: 0xFF bytes (NaN in fp32 and fp16, -1 in int32, a true
// bool), then zeros (a false bool). One pattern alone hides a race on a flag: the stale value of
// an unpublished `last block` flag was the right one with 0xFF in every block.
extern "C" char ssi_emu_shared_begin[];
extern "C" char ssi_emu_shared_end[];
#undef __launch_bounds__
#define __launch_bounds__(...)

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace ssi {
namespace emu {

// A thread's asynchronous copies to shared memory (cp.async): the open group and the committed
// ones, oldest first. They land when the thread waits for them (copyAsyncWaitGroup, at the latest
// moment a GPU allows), so a read of their destination before the wait, or before the barrier that
// shows them to the other threads, sees the old bytes and fails the tests.
struct AsyncCopy {
    void* dst;
    void const* src;
    bool fill;  // 16 bytes from src, or 16 zero bytes (nothing read)
};
struct AsyncCopies {
    std::vector<AsyncCopy> open;
    std::vector<std::vector<AsyncCopy>> committed;
};

struct Scheduler {
    ucontext_t main;
    std::vector<ucontext_t> ctx;
    std::vector<std::unique_ptr<char[]>> stacks;
    std::vector<int> state;  // 0 runnable, 1 waiting at the barrier, 2 finished, 3 at a warp vote
    int current = 0;
    std::vector<unsigned> votes;       // each thread's predicate at its warp's vote
    std::vector<unsigned> voteResult;  // per warp: the ballot of its last completed vote
    std::vector<AsyncCopies> async;
};
inline Scheduler* gSched = nullptr;
inline int64_t gAsyncCopies = 0;  // issued since the library was loaded (the tests take differences)

inline void asyncCopy16(void* dst, void const* src, bool fill) {
    if (reinterpret_cast<uintptr_t>(dst) % 16 || reinterpret_cast<uintptr_t>(src) % 16)
        throw std::runtime_error("copyAsync16: address not 16-byte aligned");
    gSched->async[gSched->current].open.push_back({dst, src, fill});
    ++gAsyncCopies;
}

inline void asyncCommit() {
    AsyncCopies& q = gSched->async[gSched->current];
    q.committed.push_back(std::move(q.open));
    q.open.clear();
}

// Until at most `pending` committed groups are in flight (cp.async.wait_group).
inline void asyncWaitGroup(size_t pending) {
    AsyncCopies& q = gSched->async[gSched->current];
    size_t const land = q.committed.size() > pending ? q.committed.size() - pending : 0;
    for (size_t g = 0; g < land; ++g)
        for (AsyncCopy const& c : q.committed[g]) {
            if (c.fill) std::memcpy(c.dst, c.src, 16);
            else std::memset(c.dst, 0, 16);
        }
    q.committed.erase(q.committed.begin(), q.committed.begin() + static_cast<std::ptrdiff_t>(land));
}

inline void asyncWaitAll() {  // cp.async.wait_all: commit, then wait for every group
    asyncCommit();
    asyncWaitGroup(0);
}

inline void yieldToScheduler(int newState) {
    Scheduler& s = *gSched;
    s.state[s.current] = newState;
    swapcontext(&s.ctx[s.current], &s.main);
}

inline void syncthreads() { yieldToScheduler(1); }

// A fault inside a kernel (a misaligned vector load, a WMMA misuse) ends its thread and is
// reported by the next cuda::launchStatus(), as a GPU reports a failed launch; an exception
// cannot unwind across the fibers' stacks.
inline cudaError_t gLaunchError = cudaSuccess;
// Kernel launches so far (ssi_cuda_launch_count): the tests pin each block configuration's count.
inline std::atomic<int64_t> gLaunchCount{0};

inline cudaError_t takeLaunchError() {
    cudaError_t const e = gLaunchError;
    gLaunchError = cudaSuccess;
    return e;
}

template <typename Fn>
void fiberEntry(unsigned lo, unsigned hi) {
    auto* fn = reinterpret_cast<Fn*>((static_cast<uintptr_t>(hi) << 32) | lo);
    try {
        (*fn)();
        asyncWaitAll();  // a GPU completes a thread's copies after it exits
    } catch (std::exception const& e) {
        if (gLaunchError == cudaSuccess) {
            std::fprintf(stderr, "emulated kernel fault: %s\n", e.what());
            gLaunchError = cudaErrorLaunchFailure;
        }
    }
    yieldToScheduler(2);
}

// The order in which a block's fibers run between two barriers (ssi_cuda_emu_set_thread_order).
// A GPU runs them in any order, or at once, so a kernel whose result depends on it reads shared
// memory another thread writes in the same barrier interval (a race). With the ascending order
// alone a thread sees what lower threads wrote before the barrier it has not reached; the other
// orders make such a read see the old bytes instead (descending), or mix both (a new shuffle
// in each pass), so a race that changes a value fails the bit comparisons in one of them.
enum class ThreadOrder : int { kAscending = 0, kDescending = 1, kShuffled = 2 };
inline ThreadOrder gThreadOrder = ThreadOrder::kAscending;

inline void threadOrder(std::vector<int>& order, uint64_t phase) {
    int const n = static_cast<int>(order.size());
    switch (gThreadOrder) {
        case ThreadOrder::kAscending:
            for (int t = 0; t < n; ++t) order[t] = t;
            break;
        case ThreadOrder::kDescending:
            for (int t = 0; t < n; ++t) order[t] = n - 1 - t;
            break;
        case ThreadOrder::kShuffled: {  // deterministic: seeded by the block and the pass
            for (int t = 0; t < n; ++t) order[t] = t;
            uint64_t x = (uint64_t{blockIdx.x} * 0x9e3779b97f4a7c15ull) ^ (uint64_t{blockIdx.y} << 40) ^
                         (uint64_t{blockIdx.z} << 52) ^ (phase * 0xbf58476d1ce4e5b9ull) ^ 0x94d049bb133111ebull;
            for (int t = n - 1; t > 0; --t) {  // Fisher-Yates on a xorshift stream
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                std::swap(order[t], order[static_cast<int>(x % static_cast<uint64_t>(t + 1))]);
            }
            break;
        }
    }
}

// Run fn() as one block of `threads` fibers.
template <typename Fn>
void runBlock(Fn& fn, int threads) {
    Scheduler s;
    s.ctx.resize(threads);
    s.state.assign(threads, 0);
    s.votes.assign(threads, 0);
    s.async.resize(threads);
    constexpr size_t kStack = 256 * 1024;
    for (int t = 0; t < threads; ++t) {
        s.stacks.emplace_back(new char[kStack]);
        getcontext(&s.ctx[t]);
        s.ctx[t].uc_stack.ss_sp = s.stacks.back().get();
        s.ctx[t].uc_stack.ss_size = kStack;
        s.ctx[t].uc_link = nullptr;
        auto p = reinterpret_cast<uintptr_t>(&fn);
        makecontext(&s.ctx[t], reinterpret_cast<void (*)()>(&fiberEntry<Fn>), 2, static_cast<unsigned>(p & 0xffffffffu),
                    static_cast<unsigned>(p >> 32));
    }
    gSched = &s;
    s.voteResult.assign(static_cast<size_t>(threads + 31) / 32, 0u);
    auto run = [&](int t) {
        s.current = t;
        threadIdx = uint3{static_cast<unsigned>(t % blockDim.x), static_cast<unsigned>(t / blockDim.x % blockDim.y),
                          static_cast<unsigned>(t / (blockDim.x * blockDim.y))};
        swapcontext(&s.main, &s.ctx[t]);
    };
    // A warp whose live threads have all reached its vote: the ballot, and the threads runnable.
    auto release = [&](int w) {
        int const l0 = 32 * w, l1 = std::min(threads, l0 + 32);
        bool voting = false;
        for (int t = l0; t < l1; ++t) {
            if (s.state[t] == 0 || s.state[t] == 1) return false;
            voting |= s.state[t] == 3;
        }
        if (!voting) return false;
        unsigned r = 0;
        for (int t = l0; t < l1; ++t)
            if (s.state[t] == 3) r |= (s.votes[t] ? 1u : 0u) << (t - l0), s.state[t] = 0;
        s.voteResult[static_cast<size_t>(w)] = r;
        return true;
    };
    std::vector<int> order(threads);
    std::iota(order.begin(), order.end(), 0);
    uint64_t phase = 0;
    for (;;) {
        bool any = false;
        threadOrder(order, phase++);
        for (int const t : order) {
            if (s.state[t] != 0) continue;
            any = true;
            run(t);
            // A released warp runs on at once, ahead of the other warps, to its next barrier (a warp
            // vote orders only its own warp: a GPU may run one warp far past the others' votes).
            while (release(t / 32))
                for (int const u : order)
                    if (u / 32 == t / 32 && s.state[u] == 0) run(u);
        }
        if (!any) {
            bool waiting = false, voting = false;
            for (int t = 0; t < threads; ++t) {
                voting |= s.state[t] == 3;
                if (s.state[t] == 1) waiting = true;
            }
            if (voting) {  // a warp vote some of whose threads wait at the barrier: a GPU hangs or worse
                if (gLaunchError == cudaSuccess) {
                    std::fprintf(stderr, "emulated kernel fault: a warp vote not reached by all of its warp's threads\n");
                    gLaunchError = cudaErrorLaunchFailure;
                }
                break;  // the block's fibers are abandoned (their stacks freed with the scheduler)
            }
            for (int t = 0; t < threads; ++t)
                if (s.state[t] == 1) s.state[t] = 0;
            if (!waiting) break;  // all finished
        }
    }
    gSched = nullptr;
}

// A GPU runs a grid's blocks in no particular order, and a kernel must not depend on one: the
// emulation runs them in a scrambled order (block k = (k * stride + start) mod blocks, the stride
// coprime to the count near its golden section, the start changing with each launch), so that
// blocks of one launch that wrongly share memory (two paired GEMMs' split-K sums, say) meet in
// the tests, where the raster order would let each group finish before the other starts.
inline uint64_t blockStride(uint64_t blocks) {
    uint64_t s = std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(blocks) * 0.6180339887));
    for (;; ++s) {
        uint64_t a = s, b = blocks;
        while (b) a = std::exchange(b, a % b);
        if (a == 1) return s;
    }
}

// The poison before every block (below), or only before a launch's first one, alternating by
// launch (the default: the ~1 MB fill per block doubled the emulated block tests' time, most of
// their blocks being the ones past the device-side counts that exit at once). The thread-order
// tests and the probe turn it on (ssi_cuda_emu_set_poison_every_block).
inline bool gPoisonEveryBlock = false;

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, Args... args) {
    std::tuple<KArgs...> a(static_cast<KArgs>(args)...);
    int64_t const launchNo = gLaunchCount++;
    gridDim = grid;
    blockDim = block;
    int const threads = static_cast<int>(block.x * block.y * block.z);
    auto body = [&] { std::apply(kernel, a); };
    uint64_t const blocks = uint64_t{grid.x} * grid.y * grid.z;
    if (blocks == 0) return;
    uint64_t const stride = blockStride(blocks), start = static_cast<uint64_t>(launchNo) * 40503u % blocks;
    for (uint64_t k = 0; k < blocks; ++k) {
        uint64_t const i = (k * stride + start) % blocks;
        blockIdx = uint3{static_cast<unsigned>(i % grid.x), static_cast<unsigned>(i / grid.x % grid.y),
                         static_cast<unsigned>(i / (uint64_t{grid.x} * grid.y))};
        if (gPoisonEveryBlock || k == 0)
            std::memset(ssi_emu_shared_begin, (gPoisonEveryBlock ? k : static_cast<uint64_t>(launchNo)) % 2 ? 0x00 : 0xFF,
                        static_cast<size_t>(ssi_emu_shared_end - ssi_emu_shared_begin));
        runBlock(body, threads);
    }
}

inline int linearThread() {
    return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

}  // namespace emu
}  // namespace ssi

inline void __syncthreads() { ssi::emu::syncthreads(); }

// A warp-wide rendezvous (not the block's barrier): the scheduler releases the warp when all of
// its live threads have voted, and lets it run ahead of the others.
inline unsigned __ballot_sync(unsigned, int pred) {
    auto& s = *ssi::emu::gSched;
    int const t = ssi::emu::linearThread();
    s.votes[t] = pred ? 1u : 0u;
    ssi::emu::yieldToScheduler(3);
    return s.voteResult[static_cast<size_t>(t / 32)];
}

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline int atomicOr(int* p, int v) { return std::atomic_ref<int>(*p).fetch_or(v); }
// A GPU faults on a load that is not aligned to its size (16-byte vectors: uint4); x86 does not.
template <typename T>
inline T __ldg(T const* p) {
    if (reinterpret_cast<uintptr_t>(p) % alignof(T)) throw std::runtime_error("__ldg: address not aligned to its size");
    return *p;
}
template <typename T>
inline T __ldcg(T const* p) {
    if (reinterpret_cast<uintptr_t>(p) % alignof(T)) throw std::runtime_error("__ldcg: address not aligned to its size");
    return *p;
}
inline void __threadfence() {}  // fibers share one memory; blocks run one after the other
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    float v[16 * 16];  // the whole tile, row-major (rows x cols of the operand)
};

inline bool leader() { return ssi::emu::linearThread() % 32 == 0; }

template <typename Use, typename T, typename L>
void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float x) {
    for (float& e : f.v) e = x;
}
template <typename Use, typename L>
void load_matrix_sync(fragment<Use, 16, 16, 16, __half, L>& f, __half const* p, unsigned ldm) {
    static_assert(std::is_same_v<L, row_major> || (std::is_same_v<L, col_major> && std::is_same_v<Use, matrix_b>),
                  "emulation: row-major operands, or a column-major B");
    if (!leader()) return;
    if (reinterpret_cast<uintptr_t>(p) % 32) throw std::runtime_error("wmma::load_matrix_sync: pointer not 32-byte aligned");
    if (ldm % 8) throw std::runtime_error("wmma::load_matrix_sync: ldm not a multiple of 8");
    constexpr bool kCol = std::is_same_v<L, col_major>;  // element (r, c) at p[c * ldm + r]
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) f.v[r * 16 + c] = __half2float(kCol ? p[c * ldm + r] : p[r * ldm + c]);
}
template <typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     fragment<matrix_a, 16, 16, 16, __half, row_major> const& a,
                     fragment<matrix_b, 16, 16, 16, __half, LB> const& b,
                     fragment<accumulator, 16, 16, 16, float> const& c) {
    if (!leader()) return;
    float out[256];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            float s = c.v[i * 16 + j];
            for (int k = 0; k < 16; ++k) s += a.v[i * 16 + k] * b.v[k * 16 + j];
            out[i * 16 + j] = s;
        }
    std::memcpy(d.v, out, sizeof out);
}
inline void store_matrix_sync(float* p, fragment<accumulator, 16, 16, 16, float> const& f, unsigned ldm, layout_t l) {
    if (!leader()) return;
    if (reinterpret_cast<uintptr_t>(p) % 32) throw std::runtime_error("wmma::store_matrix_sync: pointer not 32-byte aligned");
    if (ldm % 4) throw std::runtime_error("wmma::store_matrix_sync: ldm not a multiple of 4");
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) p[l == mem_row_major ? r * ldm + c : c * ldm + r] = f.v[r * 16 + c];
}
}  // namespace wmma
}  // namespace nvcuda
