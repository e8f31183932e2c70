// Hopper (sm_90a) gather GEMM for the SSI bottleneck's row GEMMs (see gather_gemm_sm90.h).
//
// The kernel is CUTLASS example 52's `GemmGather` (examples/52_hopper_gather_scatter_fusion/
// gather_gemm.hpp) rewritten for a device-side row count:
// - mainloop: CUTLASS's Sm90 cp.async warp-specialized collective (KernelCpAsyncWarpSpecialized:
//   2 producer warpgroups issuing 16-byte cp.async row gathers, 1 consumer warpgroup issuing
//   wgmma), 128x128x64 tiles, fp16 in, fp32 accumulation, stage count from shared memory;
// - A gathered through example 52's make_gather_tensor (examples/common/gather_tensor.hpp) with
//   a row-index functor clamped to the count (the producers load the indices of all 128 rows of
//   a tile unpredicated; the clamp keeps those reads inside [0, *count)), or plain rows;
// - the M extent is min(*count, maxM), read on the device: CTAs whose tile starts at or after it
//   return before touching the pipeline, and the last tile's load and store predicates use it;
// - epilogue: bias (fp32 add) + optional ReLU + fp16 rounding, written as fp16 pairs, through
//   CUTLASS's Sm90TmaWarpSpecializedAdapter around an operator-style epilogue (as example 52).
// 1-D grid over (m tile, n tile), n tiles fastest: the CTAs that share an A tile run together.
//
// Build: headers of the nvidia-cutlass wheel (cutlass_library/source/include and
// source/examples/common), nvcc -std=c++17 --expt-relaxed-constexpr, and only
// -gencode arch=compute_90a,code=sm_90a (plugins/CMakeLists.txt, SSI_BUILD_HOPPER).
#include "gather_gemm_sm90.h"

#include "cutlass/cutlass.h"
#include "cutlass/gemm/gemm.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/pipeline/pipeline.hpp"
#include "cute/tensor.hpp"

#include "gather_tensor.hpp"  // example 52: NoGather, make_gather_tensor, upcast

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "gather_gemm_sm90.cu uses wgmma: compile it for sm_90a only (-gencode arch=compute_90a,code=sm_90a)"
#endif

namespace ssi {
namespace sm90 {

using namespace cute;

using Element = cutlass::half_t;
using Accum = float;
using TileShape = Shape<_128, _128, _64>;
constexpr int kTileM = 128;
constexpr int kTileN = 128;
using ProblemShape = Shape<int, int, int, int>;                                // (M, N, K, L=1)
using StrideA = cutlass::gemm::TagToStrideA_t<cutlass::layout::RowMajor>;     // (lda, _1, 0): rows of x
using StrideB = cutlass::gemm::TagToStrideB_t<cutlass::layout::ColumnMajor>;  // (k, _1, 0): W [n, k]
using StrideD = cutlass::gemm::TagToStrideC_t<cutlass::layout::RowMajor>;     // (n, _1, 0): d [maxM, n]

// Row index of A for GEMM row i: rows[min(i, last)]. `last` is set in the kernel to
// min(*count, maxM) - 1: index reads stay below the count (rows at or past it are predicated
// off in the cp.async loads, so the index they get is never dereferenced).
struct ClampedGather {
    int32_t const* rows = nullptr;
    int32_t last = 0;
    CUTE_HOST_DEVICE constexpr ClampedGather() {}
    CUTE_HOST_DEVICE constexpr ClampedGather(int32_t const* r, int32_t l) : rows(r), last(l) {}
    template <class I>
    CUTE_HOST_DEVICE constexpr int32_t operator()(I i) const {
        return rows[int32_t(i) < last ? int32_t(i) : last];
    }
    CUTE_HOST_DEVICE friend void print(ClampedGather const&) { cute::print("ClampedGather"); }
};

using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, 8, Element,
    cutlass::layout::ColumnMajor, 8, Accum, TileShape, Shape<_1, _1, _1>, cutlass::gemm::collective::StageCountAuto,
    cutlass::gemm::KernelCpAsyncWarpSpecialized>::CollectiveOp;

// Operator-style epilogue: d = act(acc + bias) in fp32, rounded once to fp16, stored as pairs of
// adjacent columns (the wgmma accumulator layout gives every thread column pairs (2j, 2j+1)).
class BiasActEpilogue {
public:
    using EpilogueSchedule = cutlass::gemm::EpilogueDefault;
    using ElementC = Element;  // no C operand: the bias is read as a vector
    using StrideC = StrideD;
    using ElementD = Element;
    using StrideDType = StrideD;
    using GmemTiledCopyC = void;
    using GmemTiledCopyD = void;
    struct SharedStorage {};
    struct Arguments {
        __half const* bias = nullptr;  // [n] or null
        Element* ptr_D = nullptr;
        StrideD dD{};
        int32_t relu = 0;
    };
    using Params = Arguments;

    CUTLASS_HOST_DEVICE explicit BiasActEpilogue(Params const& p) : params(p) {}

    template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
              class TiledMma, class ResidueMNK>
    CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK blk_shape_MNK,
                                   BlockCoordMNKL blk_coord_mnkl, Tensor<FrgEngine, FrgLayout> const& accumulators,
                                   TiledMma tiled_mma, ResidueMNK residue_mnk, int thread_idx, char* /*smem*/) {
        using X = Underscore;
        static_assert(is_static<BlockShapeMNK>::value, "static CTA tile");
        static_assert(is_static<FrgLayout>::value, "static accumulator layout");
        // Value mode 0 of the wgmma C layout: 2 values on adjacent columns (stride 64 in the
        // 64xN atom = one column), the first on an even column: stored as one __half2.
        using CLayout = typename TiledMma::Atom::LayoutC_TV;
        static_assert(size<1, 0>(CLayout{}) == 2 && stride<1, 0>(CLayout{}) == 64, "wgmma C layout: column pairs");

        auto M = get<0>(problem_shape_mnkl);
        auto N = get<1>(problem_shape_mnkl);
        auto L = get<3>(problem_shape_mnkl);
        Tensor mD = make_tensor(make_gmem_ptr(params.ptr_D), make_shape(M, N, L), params.dD);  // (m,n,l)
        Tensor gD_mnl = local_tile(mD, blk_shape_MNK, make_coord(_, _, _), Step<_1, _1, X>{});  // (BM,BN,m,n,l)
        auto [m_coord, n_coord, k_coord, l_coord] = blk_coord_mnkl;
        Tensor gD = gD_mnl(_, _, m_coord, n_coord, l_coord);  // (BLK_M,BLK_N)

        auto thr_mma = tiled_mma.get_thread_slice(thread_idx);
        Tensor tCgD = thr_mma.partition_C(gD);
        Tensor cD = make_identity_tensor(make_shape(unwrap(shape<0>(gD)), unwrap(shape<1>(gD))));
        Tensor tCcD = thr_mma.partition_C(cD);
        CUTE_STATIC_ASSERT_V(size(tCgD) == size(accumulators));
        static_assert(decltype(size(accumulators))::value % 2 == 0);

        int const resM = int(get<0>(residue_mnk));
        int const resN = int(get<1>(residue_mnk));
        __half const* bias = params.bias ? params.bias + int(n_coord) * kTileN : nullptr;
        bool const relu = params.relu != 0;
        // Accumulator modes ((pair, row+8, column group), MMA_M, MMA_N): the bias pair of a
        // column group is loaded once and used for all its rows.
        static_assert(rank(FrgLayout{}) == 3 && rank<0>(FrgLayout{}) == 3, "((V,V,V),MMA_M,MMA_N) accumulators");
        static_assert(size<1, 1>(CLayout{}) == 2 && stride<1, 1>(CLayout{}) == 8, "wgmma C layout: row + 8");
        constexpr int kRowHalves = decltype(size<0, 1>(accumulators))::value;
        constexpr int kGroups = decltype(size<0, 2>(accumulators))::value;
        constexpr int kMmaM = decltype(size<1>(accumulators))::value;
        constexpr int kMmaN = decltype(size<2>(accumulators))::value;
        CUTLASS_PRAGMA_UNROLL
        for (int nn = 0; nn < kMmaN; ++nn) {
            CUTLASS_PRAGMA_UNROLL
            for (int j = 0; j < kGroups; ++j) {
                int const c = get<1>(tCcD(make_coord(make_coord(0, 0, j), 0, nn)));
                if (c >= resN) continue;  // N % 8 == 0 and c even: c + 1 < resN too
                float b0 = 0.0f, b1 = 0.0f;
                if (bias) {
                    b0 = __half2float(__ldg(bias + c));
                    b1 = __half2float(__ldg(bias + c + 1));
                }
                CUTLASS_PRAGMA_UNROLL
                for (int mm = 0; mm < kMmaM; ++mm) {
                    CUTLASS_PRAGMA_UNROLL
                    for (int h = 0; h < kRowHalves; ++h) {
                        auto const i0 = make_coord(make_coord(0, h, j), mm, nn);
                        auto const i1 = make_coord(make_coord(1, h, j), mm, nn);
                        if (get<0>(tCcD(i0)) >= resM) continue;
                        float v0 = accumulators(i0) + b0;
                        float v1 = accumulators(i1) + b1;
                        v0 = (relu && v0 < 0.0f) ? 0.0f : v0;
                        v1 = (relu && v1 < 0.0f) ? 0.0f : v1;
                        *reinterpret_cast<__half2*>(&tCgD(i0)) = __floats2half2_rn(v0, v1);
                    }
                }
            }
        }
    }

private:
    Params params;
};

using Epilogue = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<BiasActEpilogue>;

// Example 52's GemmGather kernel body with the M extent passed in (min(*count, maxM)) and the
// CTA's tile decoded from a 1-D grid. GatherA: ClampedGather or example::NoGather.
template <class GatherA>
struct GatherGemm {
    using CollectiveMainloop = Mainloop;
    using CollectiveEpilogue = Epilogue;
    using TiledMma = typename CollectiveMainloop::TiledMma;
    using MainloopParams = typename CollectiveMainloop::Params;
    using EpilogueParams = typename CollectiveEpilogue::Params;

    struct SharedStorage {
        union TensorStorage {
            typename CollectiveMainloop::TensorStorage mainloop;
            typename CollectiveEpilogue::TensorStorage epilogue;
        } tensors;
        struct PipelineStorage : cute::aligned_struct<16, _2> {
            alignas(16) typename CollectiveMainloop::PipelineStorage mainloop;
            alignas(16) typename CollectiveEpilogue::PipelineStorage epi_load;
        } pipelines;
    };
    static constexpr int SharedStorageSize = sizeof(SharedStorage);

    using GmemTiledCopyA = typename CollectiveMainloop::GmemTiledCopyA;
    using GmemTiledCopyB = typename CollectiveMainloop::GmemTiledCopyB;
    static_assert(size(GmemTiledCopyA{}) == size(GmemTiledCopyB{}));
    static constexpr uint32_t NumLoadWarpGroups = size(GmemTiledCopyA{}) / cutlass::NumThreadsPerWarpGroup;
    static constexpr uint32_t NumMmaWarpGroups = CUTE_STATIC_V(size(TiledMma{})) / cutlass::NumThreadsPerWarpGroup;
    static_assert(NumMmaWarpGroups == 1, "the consumer code below indexes threads within one warpgroup");
    static constexpr uint32_t NumWarpGroups = NumLoadWarpGroups + NumMmaWarpGroups;
    static constexpr uint32_t MaxThreadsPerBlock = NumWarpGroups * cutlass::NumThreadsPerWarpGroup;
    static constexpr uint32_t MinBlocksPerMultiprocessor = 1;
    static_assert(size<0>(TileShape{}) == kTileM && size<1>(TileShape{}) == kTileN);

    struct Params {
        ProblemShape problem_shape{};  // (maxM, N, K, 1)
        MainloopParams mainloop{};
        EpilogueParams epilogue{};
        GatherA gather_A{};
        int32_t n_tiles = 1;
    };

    CUTLASS_DEVICE void operator()(Params const& params, char* smem_buf, int M, int m_tile, int n_tile) {
        using X = Underscore;
        enum class WarpGroupRole { Producer = 0, Consumer = 1 };

        SharedStorage& shared_storage = *reinterpret_cast<SharedStorage*>(smem_buf);
        int const thread_idx = int(threadIdx.x);
        int const warp_group_thread_idx = thread_idx % cutlass::NumThreadsPerWarpGroup;
        int const warp_group_idx = cutlass::canonical_warp_group_idx();
        WarpGroupRole const role = warp_group_idx < int(NumLoadWarpGroups) ? WarpGroupRole::Producer
                                                                             : WarpGroupRole::Consumer;

        using MainloopPipeline = typename CollectiveMainloop::MainloopPipeline;
        typename MainloopPipeline::Params mainloop_pipeline_params;
        mainloop_pipeline_params.role = role == WarpGroupRole::Producer ? MainloopPipeline::ThreadCategory::Producer
                                                                         : MainloopPipeline::ThreadCategory::Consumer;
        mainloop_pipeline_params.producer_arv_count = NumLoadWarpGroups * cutlass::NumThreadsPerWarpGroup;
        mainloop_pipeline_params.consumer_arv_count = NumMmaWarpGroups * cutlass::NumThreadsPerWarpGroup;
        MainloopPipeline mainloop_pipeline(shared_storage.pipelines.mainloop, mainloop_pipeline_params);

        using EpiLoadPipeline = typename CollectiveEpilogue::LoadPipeline;
        typename EpiLoadPipeline::Params epi_load_pipeline_params;
        epi_load_pipeline_params.role = role == WarpGroupRole::Producer ? EpiLoadPipeline::ThreadCategory::Producer
                                                                         : EpiLoadPipeline::ThreadCategory::Consumer;
        epi_load_pipeline_params.producer_arv_count = NumLoadWarpGroups * cutlass::NumThreadsPerWarpGroup;
        epi_load_pipeline_params.consumer_arv_count = NumMmaWarpGroups * cutlass::NumThreadsPerWarpGroup;
        EpiLoadPipeline epi_load_pipeline(shared_storage.pipelines.epi_load, epi_load_pipeline_params);

        using EpiStorePipeline = typename CollectiveEpilogue::StorePipeline;
        typename EpiStorePipeline::Params epi_store_pipeline_params;
        epi_store_pipeline_params.always_wait = true;
        EpiStorePipeline epi_store_pipeline(epi_store_pipeline_params);

        typename CollectiveMainloop::PipelineState mainloop_pipe_consumer_state;
        typename CollectiveEpilogue::LoadPipelineState epi_load_pipe_consumer_state;
        auto mainloop_pipe_producer_state = cutlass::make_producer_start_state<MainloopPipeline>();
        auto epi_store_pipe_producer_state = cutlass::make_producer_start_state<EpiStorePipeline>();

        // Problem shape with the device-side M extent.
        int const N = get<1>(params.problem_shape);
        int const K = get<2>(params.problem_shape);
        auto problem_shape_MNKL = make_shape(M, N, K, 1);

        GatherA gather_A = params.gather_A;
        if constexpr (cute::is_same_v<GatherA, ClampedGather>) gather_A.last = M - 1;  // M >= 1 here
        Tensor mA_mkl = example::make_gather_tensor(make_gmem_ptr(params.mainloop.ptr_A), make_shape(M, K, 1),
                                                    params.mainloop.dA, gather_A);                          // (m,k,l)
        Tensor mB_nkl = make_tensor(make_gmem_ptr(params.mainloop.ptr_B), make_shape(N, K, 1), params.mainloop.dB);  // (n,k,l)

        auto blk_shape = TileShape{};
        TiledMma tiled_mma;
        Tensor gA_mkl = local_tile(mA_mkl, blk_shape, make_coord(_, _, _), Step<_1, X, _1>{});  // (BM,BK,m,k,l)
        Tensor gB_nkl = local_tile(mB_nkl, blk_shape, make_coord(_, _, _), Step<X, _1, _1>{});  // (BN,BK,n,k,l)
        auto blk_coord = make_coord(m_tile, n_tile, _, 0);
        Tensor gA = gA_mkl(_, _, m_tile, _, 0);  // (BLK_M,BLK_K,k)
        Tensor gB = gB_nkl(_, _, n_tile, _, 0);  // (BLK_N,BLK_K,k)

        auto k_tile_iter = cute::make_coord_iterator(shape<2>(gA));
        auto k_tile_count = size<2>(gA);

        __syncthreads();

        CollectiveMainloop collective_mainloop;
        CollectiveEpilogue collective_epilogue{params.epilogue, shared_storage.tensors.epilogue};

        if (role == WarpGroupRole::Producer) {
            auto m_max_coord = M - size<0>(gA) * m_tile;   // rows of this tile below the count
            auto n_max_coord = N - size<0>(gB) * n_tile;
            auto k_residue = K - size<1>(gA) * size<2>(gA);  // <= 0: the first k tile is predicated
            auto residue_mnk = make_tuple(m_max_coord, n_max_coord, k_residue);
            collective_mainloop.load(mainloop_pipeline, mainloop_pipe_producer_state, gA, gB, k_tile_iter,
                                     k_tile_count, residue_mnk, thread_idx, shared_storage.tensors.mainloop);
            mainloop_pipe_producer_state.advance(k_tile_count);
            collective_mainloop.load_tail(mainloop_pipeline, mainloop_pipe_producer_state);
            // The epilogue loads nothing (is_producer_load_needed() is false).
        } else {
            Tensor accumulators = partition_fragment_C(tiled_mma, take<0, 2>(blk_shape));  // (MMA,MMA_M,MMA_N)
            collective_mainloop.mma(mainloop_pipeline, mainloop_pipe_consumer_state, accumulators, k_tile_count,
                                    warp_group_thread_idx, shared_storage.tensors.mainloop, params.mainloop);
            collective_mainloop.mma_tail(mainloop_pipeline, mainloop_pipe_consumer_state, k_tile_count);
            collective_epilogue.store(epi_load_pipeline, epi_load_pipe_consumer_state, epi_store_pipeline,
                                      epi_store_pipe_producer_state, problem_shape_MNKL, blk_shape, blk_coord,
                                      accumulators, tiled_mma, warp_group_thread_idx, shared_storage.tensors.epilogue);
        }
    }
};

using GatheredOp = GatherGemm<ClampedGather>;
using PlainOp = GatherGemm<example::NoGather>;

// Entry point: grid.x = m_tiles(maxM) * n_tiles, n tiles fastest. A CTA whose M tile starts at
// or after min(*count, maxM) returns before any barrier or pipeline set-up (uniform per CTA).
template <class Op>
__global__ void __launch_bounds__(Op::MaxThreadsPerBlock, Op::MinBlocksPerMultiprocessor)
    gatherGemmSm90Kernel(CUTLASS_GRID_CONSTANT typename Op::Params const params, int32_t const* __restrict__ count) {
    unsigned const n_tiles = unsigned(params.n_tiles);
    int const m_tile = int(blockIdx.x / n_tiles);
    int const n_tile = int(blockIdx.x - unsigned(m_tile) * n_tiles);
    int const M = min(__ldg(count), get<0>(params.problem_shape));
    if (m_tile * kTileM >= M) return;
    extern __shared__ char smem[];
    Op op;
    op(params, smem, M, m_tile, n_tile);
}

template <class Op>
cudaError_t prepare() {
    return cudaFuncSetAttribute(gatherGemmSm90Kernel<Op>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                Op::SharedStorageSize);
}

template <class Op>
cudaError_t launch(typename Op::Params const& params, int32_t const* count, int64_t m_tiles, cudaStream_t stream) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(m_tiles * params.n_tiles), 1, 1);
    cfg.blockDim = dim3(Op::MaxThreadsPerBlock, 1, 1);
    cfg.dynamicSmemBytes = Op::SharedStorageSize;
    cfg.stream = stream;
    cfg.attrs = nullptr;
    cfg.numAttrs = 0;
    return cudaLaunchKernelEx(&cfg, gatherGemmSm90Kernel<Op>, params, count);
}

template <class Op>
typename Op::Params makeParams(__half const* a, int32_t lda, int32_t maxM, int32_t n, int32_t k, __half const* w,
                               __half const* bias, int32_t relu, __half* d) {
    typename Op::Params p;
    p.problem_shape = ProblemShape{maxM, n, k, 1};
    p.mainloop.ptr_A = reinterpret_cast<Element const*>(a);
    p.mainloop.dA = StrideA{int64_t(lda), _1{}, int64_t(0)};
    p.mainloop.ptr_B = reinterpret_cast<Element const*>(w);
    p.mainloop.dB = StrideB{int64_t(k), _1{}, int64_t(0)};
    p.epilogue.bias = bias;
    p.epilogue.ptr_D = reinterpret_cast<Element*>(d);
    p.epilogue.dD = StrideD{int64_t(n), _1{}, int64_t(0)};
    p.epilogue.relu = relu;
    p.n_tiles = (n + kTileN - 1) / kTileN;
    return p;
}

inline bool aligned16(void const* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace sm90

bool gatherGemmSm90Supported(int32_t n, int32_t k) { return n > 0 && k > 0 && n % 8 == 0 && k % 8 == 0; }

cudaError_t gatherGemmSm90Prepare() {
    int dev = 0, major = 0, minor = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (e != cudaSuccess) return e;
    if (major != 9 || minor != 0) return cudaSuccess;  // sm_90a SASS only: nothing that could run here
    e = sm90::prepare<sm90::GatheredOp>();
    if (e == cudaSuccess) e = sm90::prepare<sm90::PlainOp>();
    return e;
}

cudaError_t launchGatherGemmSm90(__half const* a, int32_t lda, int32_t const* gatherRows, int32_t const* count,
                                 int32_t maxM, int32_t n, int32_t k, __half const* w, __half const* bias,
                                 int32_t relu, __half* d, cudaStream_t stream) {
    if (maxM <= 0) return cudaSuccess;
    if (!gatherGemmSm90Supported(n, k) || lda < k || lda % 8 != 0 || !a || !w || !d || !count ||
        !sm90::aligned16(a) || !sm90::aligned16(w) || !sm90::aligned16(d))
        return cudaErrorInvalidValue;
    int64_t const m_tiles = (int64_t(maxM) + sm90::kTileM - 1) / sm90::kTileM;
    int64_t const n_tiles = (int64_t(n) + sm90::kTileN - 1) / sm90::kTileN;
    if (m_tiles * n_tiles > int64_t(0x7fffffff)) return cudaErrorInvalidValue;
    if (gatherRows) {
        auto p = sm90::makeParams<sm90::GatheredOp>(a, lda, maxM, n, k, w, bias, relu, d);
        p.gather_A = sm90::ClampedGather(gatherRows, 0);  // `last` is set from the count in the kernel
        return sm90::launch<sm90::GatheredOp>(p, count, m_tiles, stream);
    }
    auto p = sm90::makeParams<sm90::PlainOp>(a, lda, maxM, n, k, w, bias, relu, d);
    return sm90::launch<sm90::PlainOp>(p, count, m_tiles, stream);
}

}  // namespace ssi
