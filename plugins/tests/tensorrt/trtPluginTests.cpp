// Host test harness of libssi_trt_plugins.so, run without libnvinfer and without a GPU:
//   ssi_trt_plugin_tests <path to libssi_trt_plugins.so>
// dlopens the library like TensorRT's plugin registry does, checks its creators against the
// op contract, creates each plugin from the fields an exported SSI model's nodes carry, and
// exercises output types and shapes (through an IExprBuilder test double), format
// combinations, configure/onShapeChange checks, workspace sizes, the serialize ->
// createPlugin(kRUNTIME) round trip, clone, field errors and enqueue. Without a GPU enqueue
// must fail cleanly; with one it must run and give the values the contract implies for
// all-zero / all-one masks. SSIBottleneck (15 inputs, 3 outputs, kHWC8 in fp16) is checked on
// every SSIBottleneck node of a sparse_resnet50 export (blockNodes()) plus DCN and
// non-default variants. Ends with "N passed, N failed"; exits 1 on any failure.
#include "testDoubles.h"

#include "ssi/contract.h"
#include "ssi/kernels.h"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

using namespace nvinfer1;
namespace contract = ssi::contract;
using ssitest::Bindings;
using ssitest::Expr;
using ssitest::ExprBuilder;

// ---------------------------------------------------------------------------------------
// A minimal test runner: a case fails when any of its checks fails.

namespace
{

int gCaseFailures = 0;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            ++gCaseFailures;                                                                                           \
            std::fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                     \
        }                                                                                                              \
    } while (0)

#define CHECK_EQ(a, b)                                                                                                 \
    do                                                                                                                 \
    {                                                                                                                  \
        auto const va_ = (a);                                                                                          \
        auto const vb_ = (b);                                                                                          \
        if (!(va_ == vb_))                                                                                             \
        {                                                                                                              \
            ++gCaseFailures;                                                                                           \
            std::ostringstream os_;                                                                                    \
            os_ << va_ << " != " << vb_;                                                                               \
            std::fprintf(stderr, "  FAIL %s:%d: %s == %s (%s)\n", __FILE__, __LINE__, #a, #b, os_.str().c_str());     \
        }                                                                                                              \
    } while (0)

// Stop the current case when a precondition for the rest of it fails.
#define REQUIRE(cond)                                                                                                  \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            ++gCaseFailures;                                                                                           \
            std::fprintf(stderr, "  FAIL %s:%d: required %s\n", __FILE__, __LINE__, #cond);                            \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

struct Runner
{
    int passed = 0;
    int failed = 0;
    void run(std::string const& name, std::function<void()> const& body)
    {
        gCaseFailures = 0;
        try
        {
            body();
        }
        catch (std::exception const& e)
        {
            ++gCaseFailures;
            std::fprintf(stderr, "  FAIL %s: exception %s\n", name.c_str(), e.what());
        }
        if (gCaseFailures == 0)
        {
            ++passed;
            std::printf("PASS %s\n", name.c_str());
        }
        else
        {
            ++failed;
            std::printf("FAIL %s (%d failed checks)\n", name.c_str(), gCaseFailures);
        }
        std::fflush(stdout);
    }
};

// ---------------------------------------------------------------------------------------
// Fields as TensorRT hands them to createPlugin (ONNX parser: INT -> kINT32, FLOAT ->
// kFLOAT32, STRING -> kCHAR with the NUL counted).

class Fields
{
public:
    Fields& i32(std::string const& name, int32_t v)
    {
        return raw(name, PluginFieldType::kINT32, &v, sizeof(v), 1);
    }
    Fields& i64(std::string const& name, int64_t v)
    {
        return raw(name, PluginFieldType::kINT64, &v, sizeof(v), 1);
    }
    Fields& f32(std::string const& name, float v)
    {
        return raw(name, PluginFieldType::kFLOAT32, &v, sizeof(v), 1);
    }
    Fields& f64(std::string const& name, double v)
    {
        return raw(name, PluginFieldType::kFLOAT64, &v, sizeof(v), 1);
    }
    Fields& str(std::string const& name, std::string const& text, bool withNul)
    {
        return raw(name, PluginFieldType::kCHAR, text.c_str(), text.size() + (withNul ? 1 : 0),
            static_cast<int32_t>(text.size() + (withNul ? 1 : 0)));
    }
    Fields& raw(std::string const& name, PluginFieldType type, void const* data, size_t bytes, int32_t length)
    {
        mNames.push_back(name);
        mData.emplace_back(static_cast<char const*>(data), static_cast<char const*>(data) + bytes);
        mData.back().resize(bytes + 8, 0); // room so that a text field is never read past its end
        mTypes.push_back(type);
        mLengths.push_back(length);
        return *this;
    }
    PluginFieldCollection const* get()
    {
        mFields.clear();
        for (size_t i = 0; i < mNames.size(); ++i)
        {
            mFields.emplace_back(mNames[i].c_str(), mData[i].data(), mTypes[i], mLengths[i]);
        }
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
        return &mFc;
    }

private:
    std::deque<std::string> mNames;
    std::deque<std::vector<char>> mData;
    std::vector<PluginFieldType> mTypes;
    std::vector<int32_t> mLengths;
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

Dims dims(std::initializer_list<int64_t> extents)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(extents.size());
    int32_t i = 0;
    for (int64_t e : extents)
    {
        d.d[i++] = e;
    }
    return d;
}

bool sameDims(Dims const& a, Dims const& b)
{
    if (a.nbDims != b.nbDims)
    {
        return false;
    }
    for (int32_t i = 0; i < a.nbDims; ++i)
    {
        if (a.d[i] != b.d[i])
        {
            return false;
        }
    }
    return true;
}

std::string text(Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += (i ? "," : "") + std::to_string(d.d[i]);
    }
    return s + "]";
}

int64_t volume(Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

int64_t refConvOut(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil)
{
    // Independent of the plugin: count the window positions that fit.
    int64_t n = 0;
    for (int64_t start = -pad; start + dil * (k - 1) <= in - 1 + pad; start += stride)
    {
        ++n;
    }
    return n;
}

// ---------------------------------------------------------------------------------------
// The SSI nodes of an exported model: one ResNet-50 SSI bottleneck (stage 2, first block,
// stride 2, DCN conv2, fused residual), batch 2, plus a grouped and dilated conv.

struct AttrValue
{
    std::string name;
    bool isFloat;
    double value;
};

struct NodeCase
{
    std::string label;
    std::string op;
    std::vector<AttrValue> attrs; //!< as on the ONNX node (contract attributes only)
    std::vector<Dims> inputs;     //!< concrete input dims
    Dims output;                  //!< expected output dims
    std::vector<bool> constantInput; //!< initializers (weight, bias): constant dims
};

std::vector<NodeCase> modelNodes()
{
    using namespace contract;
    std::vector<NodeCase> nodes;
    nodes.push_back({"layer2.0.mask1", SampleMask::kName,
        {{SampleMask::kAttrMode, false, kModeThreshold}, {SampleMask::kAttrGridInterval, false, kGridPriorInterval},
            {SampleMask::kAttrSeed, false, 0}, {SampleMask::kAttrLayer, false, 8}},
        {dims({2, 1, 56, 56})}, dims({2, 1, 56, 56}), {false}});
    nodes.push_back({"layer2.0.mask2", SampleMask::kName,
        {{SampleMask::kAttrMode, false, kModeStochastic}, {SampleMask::kAttrGridInterval, false, kGridPriorInterval},
            {SampleMask::kAttrSeed, false, 1234}, {SampleMask::kAttrLayer, false, 9}},
        {dims({2, 1, 28, 28})}, dims({2, 1, 28, 28}), {false}});
    nodes.push_back({"layer2.0.conv1", SparseConv2d::kName,
        {{SparseConv2d::kAttrStrideH, false, 1}, {SparseConv2d::kAttrStrideW, false, 1},
            {SparseConv2d::kAttrPadH, false, 0}, {SparseConv2d::kAttrPadW, false, 0},
            {SparseConv2d::kAttrDilationH, false, 1}, {SparseConv2d::kAttrDilationW, false, 1},
            {SparseConv2d::kAttrGroups, false, 1}, {SparseConv2d::kAttrRelu, false, 1}},
        {dims({2, 256, 56, 56}), dims({128, 256, 1, 1}), dims({128}), dims({2, 1, 56, 56})},
        dims({2, 128, 56, 56}), {false, true, true, false}});
    nodes.push_back({"layer2.0.conv2", SparseConv2d::kName,
        {{SparseConv2d::kAttrStrideH, false, 2}, {SparseConv2d::kAttrStrideW, false, 2},
            {SparseConv2d::kAttrPadH, false, 1}, {SparseConv2d::kAttrPadW, false, 1},
            {SparseConv2d::kAttrDilationH, false, 1}, {SparseConv2d::kAttrDilationW, false, 1},
            {SparseConv2d::kAttrGroups, false, 1}, {SparseConv2d::kAttrRelu, false, 1}},
        {dims({2, 128, 56, 56}), dims({128, 128, 3, 3}), dims({128}), dims({2, 1, 28, 28}), dims({2, 18, 28, 28})},
        dims({2, 128, 28, 28}), {false, true, true, false, false}});
    nodes.push_back({"layer2.0.conv3", SparseConv2d::kName,
        {{SparseConv2d::kAttrStrideH, false, 1}, {SparseConv2d::kAttrStrideW, false, 1},
            {SparseConv2d::kAttrRelu, false, 0}},
        {dims({2, 128, 28, 28}), dims({512, 128, 1, 1}), dims({512}), dims({2, 1, 28, 28})}, dims({2, 512, 28, 28}),
        {false, true, true, false}});
    nodes.push_back({"grouped_dilated", SparseConv2d::kName,
        {{SparseConv2d::kAttrStrideH, false, 1}, {SparseConv2d::kAttrStrideW, false, 2},
            {SparseConv2d::kAttrPadH, false, 2}, {SparseConv2d::kAttrPadW, false, 1},
            {SparseConv2d::kAttrDilationH, false, 2}, {SparseConv2d::kAttrDilationW, false, 1},
            {SparseConv2d::kAttrGroups, false, 4}, {SparseConv2d::kAttrRelu, false, 0}},
        {dims({1, 64, 33, 17}), dims({32, 16, 3, 3}), dims({32}), dims({1, 1, 33, 9})}, dims({1, 32, 33, 9}),
        {false, true, true, false}});
    nodes.push_back({"layer2.0.interp1", GaussianInterp::kName,
        {{GaussianInterp::kAttrSigma, true, 2.875}, {GaussianInterp::kAttrRelu, false, 0}},
        {dims({2, 128, 56, 56}), dims({2, 1, 56, 56}), dims({128})}, dims({2, 128, 56, 56}), {false, false, true}});
    nodes.push_back({"layer2.0.interp3", GaussianInterp::kName,
        {{GaussianInterp::kAttrSigma, true, 3.25}, {GaussianInterp::kAttrRelu, false, 1}},
        {dims({2, 512, 28, 28}), dims({2, 1, 28, 28}), dims({512}), dims({2, 512, 28, 28})}, dims({2, 512, 28, 28}),
        {false, false, true, false}});
    return nodes;
}

// ---------------------------------------------------------------------------------------
// SSIBottleneck nodes: every SSIBottleneck node of a sparse_resnet50 export at 2x3x64x64
// (`ssi-deploy export`, block form: stem /4 -> 16x16; stages of 3, 4, 6, 3 blocks, planes 64 ..
// 512, the first block of each stage with the downsample conv and stride 1, 2, 2, 2; every
// node carries all 11 attributes, layer1/layer2 = 2i, 2i+1), then the DCN blocks of
// sparse_resnet101_dcn (stride-2 downsample and identity), a block with non-default sampling
// attributes and odd sizes, and blocks whose channels do not fit kHWC8.

//! Ho or Wo of a block: 3x3 window, padding 1.
int64_t blockOut(int64_t in, int64_t stride)
{
    return refConvOut(in, 3, stride, 1, 1);
}

NodeCase makeBlock(std::string const& label, int64_t n, int64_t cin, int64_t h, int64_t w, int64_t p, int64_t cout,
    int32_t stride, int32_t dcn, int32_t downsample, std::vector<AttrValue> const& extra = {})
{
    namespace B = contract::SSIBottleneck;
    NodeCase node;
    node.label = label;
    node.op = B::kName;
    // the exporter writes every attribute; `extra` overrides the exporter's values
    std::map<std::string, AttrValue> attrs;
    for (AttrValue const& a : std::vector<AttrValue>{{B::kAttrStride, false, double(stride)},
             {B::kAttrDcn, false, double(dcn)}, {B::kAttrDownsample, false, double(downsample)},
             {B::kAttrSigma1, true, 3.0}, {B::kAttrSigma2, true, 3.0}, {B::kAttrMode, false, 0},
             {B::kAttrGridInterval, false, 11}, {B::kAttrSeed, false, 0}, {B::kAttrLayer1, false, 0},
             {B::kAttrLayer2, false, 1}, {B::kAttrDensity, true, 0.0}})
    {
        attrs[a.name] = a;
    }
    for (AttrValue const& a : extra)
    {
        attrs[a.name] = a;
    }
    for (char const* name : {B::kAttrStride, B::kAttrDcn, B::kAttrDownsample, B::kAttrSigma1, B::kAttrSigma2,
             B::kAttrMode, B::kAttrGridInterval, B::kAttrSeed, B::kAttrLayer1, B::kAttrLayer2, B::kAttrDensity})
    {
        node.attrs.push_back(attrs.at(name));
    }
    Dims const empty = dims({0});
    node.inputs = {dims({n, cin, h, w}), dims({1, cin, 3, 3}), dims({1}), dims({1, cin, 3, 3}), dims({1}),
        dims({p, cin, 1, 1}), dims({p}), dcn ? dims({18, cin, 3, 3}) : empty, dcn ? dims({18}) : empty,
        dims({p, p, 3, 3}), dims({p}), dims({cout, p, 1, 1}), dims({cout}),
        downsample ? dims({cout, cin, 1, 1}) : empty, downsample ? dims({cout}) : empty};
    node.output = dims({n, cout, blockOut(h, stride), blockOut(w, stride)});
    node.constantInput.assign(node.inputs.size(), true);
    node.constantInput[contract::SSIBottleneck::kInputX] = false;
    return node;
}

std::vector<NodeCase> blockNodes()
{
    namespace B = contract::SSIBottleneck;
    std::vector<NodeCase> nodes;
    int64_t const planes[4] = {64, 128, 256, 512};
    int32_t const blocks[4] = {3, 4, 6, 3};
    int64_t cin = 64;
    int64_t size = 16;
    int32_t index = 0;
    for (int32_t stage = 0; stage < 4; ++stage)
    {
        for (int32_t b = 0; b < blocks[stage]; ++b, ++index)
        {
            int32_t const stride = b == 0 && stage > 0 ? 2 : 1;
            int64_t const p = planes[stage];
            nodes.push_back(makeBlock("layer" + std::to_string(stage + 1) + "." + std::to_string(b), 2, cin, size, size,
                p, 4 * p, stride, 0, b == 0 ? 1 : 0,
                {{B::kAttrLayer1, false, double(2 * index)}, {B::kAttrLayer2, false, double(2 * index + 1)}}));
            cin = 4 * p;
            size = blockOut(size, stride);
        }
    }
    // sparse_resnet101_dcn: DCN conv2 from stage 2 on
    nodes.push_back(makeBlock("dcn.layer2.0", 2, 256, 16, 16, 128, 512, 2, 1, 1,
        {{B::kAttrLayer1, false, 6}, {B::kAttrLayer2, false, 7}}));
    nodes.push_back(makeBlock("dcn.layer3.1", 2, 1024, 4, 4, 256, 1024, 1, 1, 0,
        {{B::kAttrLayer1, false, 16}, {B::kAttrLayer2, false, 17}}));
    // non-default sampling attributes, odd sizes, batch 3
    nodes.push_back(makeBlock("custom", 3, 64, 15, 9, 16, 64, 2, 1, 1,
        {{B::kAttrSigma1, true, 2.875}, {B::kAttrSigma2, true, 3.25}, {B::kAttrMode, false, 1},
            {B::kAttrGridInterval, false, 0}, {B::kAttrSeed, false, -7}, {B::kAttrLayer1, false, 40},
            {B::kAttrLayer2, false, 41}, {B::kAttrDensity, true, 0.25}}));
    // channels kHWC8 cannot hold: Cin = 4p = 12; Cin = 16 but 4p = 20
    nodes.push_back(makeBlock("narrow", 1, 12, 7, 7, 3, 12, 1, 0, 0));
    nodes.push_back(makeBlock("narrow_out", 1, 16, 7, 7, 5, 20, 1, 0, 1));
    return nodes;
}

//! The 16 nodes of the sparse_resnet50 export (the first entries of blockNodes()).
constexpr size_t kResnet50Blocks = 16;

//! y, mask1 and mask2 dims of a block node.
std::vector<Dims> blockOutputs(NodeCase const& node)
{
    Dims const& x = node.inputs[contract::SSIBottleneck::kInputX];
    Dims const& y = node.output;
    return {y, dims({x.d[0], 1, x.d[2], x.d[3]}), dims({x.d[0], 1, y.d[2], y.d[3]})};
}

//! The contract's attribute names of `op`, in order, with their kinds.
std::vector<std::pair<std::string, bool>> contractAttributes(std::string const& op)
{
    using namespace contract;
    if (op == SampleMask::kName)
    {
        return {{SampleMask::kAttrMode, false}, {SampleMask::kAttrGridInterval, false}, {SampleMask::kAttrSeed, false},
            {SampleMask::kAttrLayer, false}};
    }
    if (op == SparseConv2d::kName)
    {
        return {{SparseConv2d::kAttrStrideH, false}, {SparseConv2d::kAttrStrideW, false},
            {SparseConv2d::kAttrPadH, false}, {SparseConv2d::kAttrPadW, false}, {SparseConv2d::kAttrDilationH, false},
            {SparseConv2d::kAttrDilationW, false}, {SparseConv2d::kAttrGroups, false},
            {SparseConv2d::kAttrRelu, false}};
    }
    if (op == SSIBottleneck::kName)
    {
        return {{SSIBottleneck::kAttrStride, false}, {SSIBottleneck::kAttrDcn, false},
            {SSIBottleneck::kAttrDownsample, false}, {SSIBottleneck::kAttrSigma1, true},
            {SSIBottleneck::kAttrSigma2, true}, {SSIBottleneck::kAttrMode, false},
            {SSIBottleneck::kAttrGridInterval, false}, {SSIBottleneck::kAttrSeed, false},
            {SSIBottleneck::kAttrLayer1, false}, {SSIBottleneck::kAttrLayer2, false},
            {SSIBottleneck::kAttrDensity, true}};
    }
    return {{GaussianInterp::kAttrSigma, true}, {GaussianInterp::kAttrRelu, false}};
}

double contractDefault(std::string const& op, std::string const& name)
{
    using namespace contract;
    if (op == SSIBottleneck::kName)
    {
        std::map<std::string, double> const b{{SSIBottleneck::kAttrStride, SSIBottleneck::kDefaultStride},
            {SSIBottleneck::kAttrDcn, SSIBottleneck::kDefaultDcn},
            {SSIBottleneck::kAttrDownsample, SSIBottleneck::kDefaultDownsample},
            {SSIBottleneck::kAttrSigma1, SSIBottleneck::kDefaultSigma1},
            {SSIBottleneck::kAttrSigma2, SSIBottleneck::kDefaultSigma2},
            {SSIBottleneck::kAttrMode, SSIBottleneck::kDefaultMode},
            {SSIBottleneck::kAttrGridInterval, SSIBottleneck::kDefaultGridInterval},
            {SSIBottleneck::kAttrSeed, SSIBottleneck::kDefaultSeed},
            {SSIBottleneck::kAttrLayer1, SSIBottleneck::kDefaultLayer1},
            {SSIBottleneck::kAttrLayer2, SSIBottleneck::kDefaultLayer2},
            {SSIBottleneck::kAttrDensity, SSIBottleneck::kDefaultDensity}};
        return b.at(name);
    }
    std::map<std::string, double> const d = op == SampleMask::kName
        ? std::map<std::string, double>{{SampleMask::kAttrMode, SampleMask::kDefaultMode},
            {SampleMask::kAttrGridInterval, SampleMask::kDefaultGridInterval},
            {SampleMask::kAttrSeed, SampleMask::kDefaultSeed}, {SampleMask::kAttrLayer, SampleMask::kDefaultLayer}}
        : op == SparseConv2d::kName
        ? std::map<std::string, double>{{SparseConv2d::kAttrStrideH, SparseConv2d::kDefaultStrideH},
            {SparseConv2d::kAttrStrideW, SparseConv2d::kDefaultStrideW},
            {SparseConv2d::kAttrPadH, SparseConv2d::kDefaultPadH}, {SparseConv2d::kAttrPadW, SparseConv2d::kDefaultPadW},
            {SparseConv2d::kAttrDilationH, SparseConv2d::kDefaultDilationH},
            {SparseConv2d::kAttrDilationW, SparseConv2d::kDefaultDilationW},
            {SparseConv2d::kAttrGroups, SparseConv2d::kDefaultGroups},
            {SparseConv2d::kAttrRelu, SparseConv2d::kDefaultRelu}}
        : std::map<std::string, double>{{GaussianInterp::kAttrSigma, GaussianInterp::kDefaultSigma},
            {GaussianInterp::kAttrRelu, GaussianInterp::kDefaultRelu}};
    return d.at(name);
}

//! Value of attribute `name` on the node, or the contract default.
double attr(NodeCase const& node, std::string const& name)
{
    for (auto const& a : node.attrs)
    {
        if (a.name == name)
        {
            return a.value;
        }
    }
    return contractDefault(node.op, name);
}

Fields nodeFields(NodeCase const& node)
{
    Fields f;
    for (auto const& a : node.attrs)
    {
        if (a.isFloat)
        {
            f.f32(a.name, static_cast<float>(a.value));
        }
        else
        {
            f.i32(a.name, static_cast<int32_t>(a.value));
        }
    }
    return f;
}

// ---------------------------------------------------------------------------------------
// The library under test.

using GetCreatorsFn = IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinderFn = void (*)(ILoggerFinder*);

struct Library
{
    void* handle{nullptr};
    GetCreatorsFn getCreators{nullptr};
    SetLoggerFinderFn setLoggerFinder{nullptr};
    ssitest::RecordingLogger logger;
    ssitest::SwitchableLoggerFinder finder;
    bool haveGpu{false};

    IPluginCreatorV3One* creator(std::string const& op) const
    {
        int32_t n = 0;
        IPluginCreatorInterface* const* list = getCreators(n);
        for (int32_t i = 0; i < n; ++i)
        {
            auto* c = static_cast<IPluginCreatorV3One*>(list[i]);
            if (op == c->getPluginName())
            {
                return c;
            }
        }
        return nullptr;
    }
};

Library gLib;

struct PluginDeleter
{
    void operator()(IPluginV3* p) const
    {
        delete p;
    }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

PluginPtr create(NodeCase const& node, PluginFieldCollection const* fc, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    IPluginCreatorV3One* c = gLib.creator(node.op);
    return PluginPtr(c != nullptr ? c->createPlugin(node.label.c_str(), fc, phase) : nullptr);
}

IPluginV3OneCore* core(IPluginV3* p)
{
    return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
}
IPluginV3OneBuild* build(IPluginV3* p)
{
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime(IPluginV3* p)
{
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

//! Serialized fields as name -> value, with a check of types and lengths.
std::map<std::string, double> serialized(IPluginV3* p, std::string const& op)
{
    std::map<std::string, double> out;
    PluginFieldCollection const* fc = runtime(p)->getFieldsToSerialize();
    CHECK(fc != nullptr);
    if (fc == nullptr)
    {
        return out;
    }
    auto const names = contractAttributes(op);
    CHECK_EQ(fc->nbFields, static_cast<int32_t>(names.size()));
    for (int32_t i = 0; i < fc->nbFields && i < static_cast<int32_t>(names.size()); ++i)
    {
        PluginField const& f = fc->fields[i];
        CHECK_EQ(std::string(f.name), names[i].first);
        CHECK_EQ(f.length, 1);
        CHECK(f.data != nullptr);
        if (names[i].second)
        {
            CHECK(f.type == PluginFieldType::kFLOAT32);
            out[f.name] = *static_cast<float const*>(f.data);
        }
        else
        {
            CHECK(f.type == PluginFieldType::kINT32);
            out[f.name] = *static_cast<int32_t const*>(f.data);
        }
    }
    return out;
}

std::vector<DynamicPluginTensorDesc> dynDescs(std::vector<Dims> const& in, Dims const& out, DataType type)
{
    std::vector<DynamicPluginTensorDesc> d(in.size() + 1);
    for (size_t i = 0; i <= in.size(); ++i)
    {
        Dims const& x = i < in.size() ? in[i] : out;
        d[i].desc.dims = x;
        d[i].desc.type = type;
        d[i].desc.format = TensorFormat::kLINEAR;
        d[i].desc.scale = 1.F;
        d[i].min = x;
        d[i].opt = x;
        d[i].max = x;
    }
    return d;
}

std::vector<PluginTensorDesc> descs(std::vector<Dims> const& in, DataType type)
{
    std::vector<PluginTensorDesc> d(in.size());
    for (size_t i = 0; i < in.size(); ++i)
    {
        d[i].dims = in[i];
        d[i].type = type;
        d[i].format = TensorFormat::kLINEAR;
        d[i].scale = 1.F;
    }
    return d;
}

// ---------------------------------------------------------------------------------------
// Cases.

void testCreators()
{
    int32_t n = -1;
    IPluginCreatorInterface* const* list = gLib.getCreators(n);
    REQUIRE(list != nullptr);
    REQUIRE(n == 4);
    std::vector<std::string> const expected{contract::SampleMask::kName, contract::SparseConv2d::kName,
        contract::GaussianInterp::kName, contract::SSIBottleneck::kName};
    for (int32_t i = 0; i < n; ++i)
    {
        REQUIRE(list[i] != nullptr);
        InterfaceInfo const info = list[i]->getInterfaceInfo();
        CHECK_EQ(std::string(info.kind), std::string("PLUGIN CREATOR_V3ONE"));
        CHECK_EQ(info.major, 1);
        auto* c = static_cast<IPluginCreatorV3One*>(list[i]);
        CHECK_EQ(std::string(c->getPluginName()), expected[i]);
        CHECK_EQ(std::string(c->getPluginVersion()), std::string(contract::kPluginVersion));
        CHECK_EQ(std::string(c->getPluginNamespace()), std::string(contract::kPluginNamespace));

        // Field names: exactly the contract's attributes, ints kINT32, floats kFLOAT32.
        PluginFieldCollection const* fc = c->getFieldNames();
        REQUIRE(fc != nullptr);
        auto const attrs = contractAttributes(expected[i]);
        CHECK_EQ(fc->nbFields, static_cast<int32_t>(attrs.size()));
        for (int32_t k = 0; k < fc->nbFields && k < static_cast<int32_t>(attrs.size()); ++k)
        {
            CHECK_EQ(std::string(fc->fields[k].name), attrs[k].first);
            CHECK(fc->fields[k].type == (attrs[k].second ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32));
        }
    }
    // The same creators on every call (TensorRT may call getCreators more than once).
    int32_t n2 = 0;
    CHECK(gLib.getCreators(n2) == list);
    CHECK_EQ(n2, n);
}

void testCreateAndIdentity(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    CHECK_EQ(std::string(p->getInterfaceInfo().kind), std::string("PLUGIN"));
    REQUIRE(core(p.get()) != nullptr);
    REQUIRE(build(p.get()) != nullptr);
    REQUIRE(runtime(p.get()) != nullptr);
    CHECK_EQ(std::string(core(p.get())->getInterfaceInfo().kind), std::string("PLUGIN_V3ONE_CORE"));
    CHECK_EQ(std::string(build(p.get())->getInterfaceInfo().kind), std::string("PLUGIN_V3ONE_BUILD"));
    CHECK_EQ(std::string(runtime(p.get())->getInterfaceInfo().kind), std::string("PLUGIN_V3ONE_RUNTIME"));
    CHECK_EQ(std::string(core(p.get())->getPluginName()), node.op);
    CHECK_EQ(std::string(core(p.get())->getPluginVersion()), std::string(contract::kPluginVersion));
    CHECK_EQ(std::string(core(p.get())->getPluginNamespace()), std::string(contract::kPluginNamespace));
    CHECK_EQ(build(p.get())->getNbOutputs(), node.op == contract::SSIBottleneck::kName ? 3 : 1);

    // Every attribute as given on the node, the others at their contract defaults.
    auto const values = serialized(p.get(), node.op);
    for (auto const& a : contractAttributes(node.op))
    {
        CHECK(values.count(a.first) == 1);
        if (values.count(a.first) == 1)
        {
            CHECK_EQ(values.at(a.first), attr(node, a.first));
        }
    }

    // Metadata names the op and every attribute with its value.
    char const* meta = build(p.get())->getMetadataString();
    REQUIRE(meta != nullptr);
    std::string const m = meta;
    CHECK(m.find(node.op) != std::string::npos);
    for (auto const& a : contractAttributes(node.op))
    {
        std::ostringstream os;
        os << a.first << "=";
        if (a.second)
        {
            os << static_cast<float>(attr(node, a.first));
        }
        else
        {
            os << static_cast<int32_t>(attr(node, a.first));
        }
        CHECK(m.find(os.str()) != std::string::npos);
    }
}

void testOutputTypes(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    IPluginV3OneBuild* b = build(p.get());
    int32_t const nb = static_cast<int32_t>(node.inputs.size());
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        std::vector<DataType> in(nb, t);
        DataType out = DataType::kINT8;
        CHECK_EQ(b->getOutputDataTypes(&out, 1, in.data(), nb), 0);
        CHECK(out == t);
    }
    gLib.logger.clear();
    if (nb > 1)
    {
        std::vector<DataType> mixed(nb, DataType::kHALF);
        mixed[0] = DataType::kFLOAT;
        DataType out = DataType::kINT8;
        CHECK(b->getOutputDataTypes(&out, 1, mixed.data(), nb) != 0);
        CHECK(gLib.logger.hasError({node.op, "share one type"}));
    }
    std::vector<DataType> ints(nb, DataType::kINT32);
    DataType out = DataType::kINT8;
    CHECK(b->getOutputDataTypes(&out, 1, ints.data(), nb) != 0);
    CHECK(gLib.logger.hasError({node.op, "int32"}));
    std::vector<DataType> many(6, DataType::kFLOAT);
    CHECK(b->getOutputDataTypes(&out, 1, many.data(), 6) != 0);
    CHECK(b->getOutputDataTypes(&out, 2, many.data(), nb) != 0);
}

void testOutputShapes(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    IPluginV3OneBuild* b = build(p.get());
    int32_t const nb = static_cast<int32_t>(node.inputs.size());

    // Inputs with symbolic extents (except channels and initializers), as in a dynamic profile.
    ExprBuilder eb;
    std::vector<DimsExprs> in(nb);
    Bindings bind;
    for (int32_t i = 0; i < nb; ++i)
    {
        in[i].nbDims = node.inputs[i].nbDims;
        for (int32_t j = 0; j < in[i].nbDims; ++j)
        {
            bool const fixed = node.constantInput[i] || j == 1;
            std::string const name = "in" + std::to_string(i) + "_" + std::to_string(j);
            in[i].d[j] = fixed ? eb.make(node.inputs[i].d[j]) : eb.symbol(name);
            bind[name] = node.inputs[i].d[j];
        }
    }
    DimsExprs out{};
    REQUIRE(b->getOutputShapes(in.data(), nb, nullptr, 0, &out, 1, eb) == 0);
    CHECK_EQ(eb.foreignOperands(), 0);
    REQUIRE(out.nbDims == node.output.nbDims);
    Dims got{};
    got.nbDims = out.nbDims;
    for (int32_t j = 0; j < out.nbDims; ++j)
    {
        Expr const* e = eb.owned(out.d[j]);
        REQUIRE(e != nullptr);
        got.d[j] = e->eval(bind);
    }
    if (!sameDims(got, node.output))
    {
        std::fprintf(stderr, "  output %s, expected %s\n", text(got).c_str(), text(node.output).c_str());
    }
    CHECK(sameDims(got, node.output));
    // Channels are known at build time (from the weight for a conv, from values otherwise).
    CHECK(out.d[1]->isConstant());
    CHECK_EQ(out.d[1]->getConstantValue(), node.output.d[1]);
    // The batch is the input's own expression, not a copy of its current value.
    CHECK(out.d[0] == in[0].d[0]);

    if (node.op == contract::SparseConv2d::kName)
    {
        // Ho/Wo follow the conv arithmetic for every input size, from x's H and W.
        int64_t const sh = static_cast<int64_t>(attr(node, contract::SparseConv2d::kAttrStrideH));
        int64_t const sw = static_cast<int64_t>(attr(node, contract::SparseConv2d::kAttrStrideW));
        int64_t const ph = static_cast<int64_t>(attr(node, contract::SparseConv2d::kAttrPadH));
        int64_t const pw = static_cast<int64_t>(attr(node, contract::SparseConv2d::kAttrPadW));
        int64_t const dh = static_cast<int64_t>(attr(node, contract::SparseConv2d::kAttrDilationH));
        int64_t const dw = static_cast<int64_t>(attr(node, contract::SparseConv2d::kAttrDilationW));
        int64_t const kh = node.inputs[1].d[2];
        int64_t const kw = node.inputs[1].d[3];
        int mismatches = 0;
        for (int64_t h = 1; h <= 70; ++h)
        {
            Bindings b2 = bind;
            b2["in0_2"] = h;
            b2["in0_3"] = h + 3;
            int64_t const ho = refConvOut(h, kh, sh, ph, dh);
            int64_t const wo = refConvOut(h + 3, kw, sw, pw, dw);
            if (ho > 0 && eb.owned(out.d[2])->eval(b2) != ho)
            {
                ++mismatches;
            }
            if (wo > 0 && eb.owned(out.d[3])->eval(b2) != wo)
            {
                ++mismatches;
            }
        }
        CHECK_EQ(mismatches, 0);
    }

    // A wrong rank is an error, not a guess.
    gLib.logger.clear();
    std::vector<DimsExprs> bad = in;
    bad[0].nbDims = 3;
    CHECK(b->getOutputShapes(bad.data(), nb, nullptr, 0, &out, 1, eb) != 0);
    CHECK(gLib.logger.hasError({node.op, "4-D"}));
}

void testFormats(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    IPluginV3OneBuild* b = build(p.get());
    int32_t const nb = static_cast<int32_t>(node.inputs.size());
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        auto d = dynDescs(node.inputs, node.output, t);
        for (int32_t pos = 0; pos <= nb; ++pos)
        {
            CHECK(b->supportsFormatCombination(pos, d.data(), nb, 1));
        }
    }
    auto d = dynDescs(node.inputs, node.output, DataType::kFLOAT);
    for (int32_t pos = 1; pos <= nb; ++pos)
    {
        auto mixed = d;
        mixed[pos].desc.type = DataType::kHALF;
        CHECK(!b->supportsFormatCombination(pos, mixed.data(), nb, 1));
    }
    for (DataType t : {DataType::kINT8, DataType::kINT32, DataType::kBF16, DataType::kBOOL})
    {
        auto other = d;
        for (auto& x : other)
        {
            x.desc.type = t;
        }
        CHECK(!b->supportsFormatCombination(0, other.data(), nb, 1));
    }
    for (TensorFormat fmt : {TensorFormat::kCHW2, TensorFormat::kHWC8, TensorFormat::kCHW32, TensorFormat::kHWC})
    {
        for (int32_t pos = 0; pos <= nb; ++pos)
        {
            auto other = d;
            other[pos].desc.format = fmt;
            CHECK(!b->supportsFormatCombination(pos, other.data(), nb, 1));
        }
    }
    CHECK(!b->supportsFormatCombination(nb + 1, d.data(), nb, 1));
    CHECK(!b->supportsFormatCombination(-1, d.data(), nb, 1));
    auto extra = dynDescs(std::vector<Dims>(6, node.inputs[0]), node.output, DataType::kFLOAT);
    CHECK(!b->supportsFormatCombination(0, extra.data(), 6, 1));
}

//! Expected kernel workspace for the node at `in` dims, from the kernels' own functions.
size_t expectedWorkspace(NodeCase const& node, std::vector<Dims> const& in, ssi::DType t)
{
    using namespace contract;
    if (node.op == SampleMask::kName)
    {
        ssi::SampleMaskParams p{static_cast<int32_t>(in[0].d[0]), static_cast<int32_t>(in[0].d[2]),
            static_cast<int32_t>(in[0].d[3]), static_cast<int32_t>(attr(node, SampleMask::kAttrMode)),
            static_cast<int32_t>(attr(node, SampleMask::kAttrGridInterval)),
            static_cast<int32_t>(attr(node, SampleMask::kAttrSeed)),
            static_cast<int32_t>(attr(node, SampleMask::kAttrLayer))};
        return ssi::sampleMaskWorkspaceSize(p, t);
    }
    if (node.op == SparseConv2d::kName)
    {
        auto a = [&](char const* n) { return static_cast<int32_t>(attr(node, n)); };
        ssi::SparseConvParams p{};
        p.n = static_cast<int32_t>(in[0].d[0]);
        p.cin = static_cast<int32_t>(in[0].d[1]);
        p.h = static_cast<int32_t>(in[0].d[2]);
        p.w = static_cast<int32_t>(in[0].d[3]);
        p.cout = static_cast<int32_t>(in[1].d[0]);
        p.kh = static_cast<int32_t>(in[1].d[2]);
        p.kw = static_cast<int32_t>(in[1].d[3]);
        p.strideH = a(SparseConv2d::kAttrStrideH);
        p.strideW = a(SparseConv2d::kAttrStrideW);
        p.padH = a(SparseConv2d::kAttrPadH);
        p.padW = a(SparseConv2d::kAttrPadW);
        p.dilationH = a(SparseConv2d::kAttrDilationH);
        p.dilationW = a(SparseConv2d::kAttrDilationW);
        p.groups = a(SparseConv2d::kAttrGroups);
        p.relu = a(SparseConv2d::kAttrRelu);
        p.ho = static_cast<int32_t>(refConvOut(p.h, p.kh, p.strideH, p.padH, p.dilationH));
        p.wo = static_cast<int32_t>(refConvOut(p.w, p.kw, p.strideW, p.padW, p.dilationW));
        p.deformable = in.size() == 5;
        return ssi::sparseConv2dWorkspaceSize(p, t);
    }
    ssi::GaussianInterpParams p{static_cast<int32_t>(in[0].d[0]), static_cast<int32_t>(in[0].d[1]),
        static_cast<int32_t>(in[0].d[2]), static_cast<int32_t>(in[0].d[3]),
        static_cast<float>(attr(node, GaussianInterp::kAttrSigma)),
        static_cast<int32_t>(attr(node, GaussianInterp::kAttrRelu)), in.size() == 4};
    return ssi::gaussianInterpWorkspaceSize(p, t);
}

void testConfigureAndWorkspace(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    IPluginV3OneBuild* b = build(p.get());
    int32_t const nb = static_cast<int32_t>(node.inputs.size());
    auto d = dynDescs(node.inputs, node.output, DataType::kFLOAT);
    CHECK_EQ(b->configurePlugin(d.data(), nb, d.data() + nb, 1), 0);

    // Dynamic extents (-1) are accepted at configure time.
    auto dyn = d;
    for (int32_t i = 0; i <= nb; ++i)
    {
        if (i == nb || !node.constantInput[i])
        {
            dyn[i].desc.dims.d[0] = -1;
            if (dyn[i].desc.dims.nbDims == 4)
            {
                dyn[i].desc.dims.d[2] = -1;
                dyn[i].desc.dims.d[3] = -1;
            }
        }
    }
    CHECK_EQ(b->configurePlugin(dyn.data(), nb, dyn.data() + nb, 1), 0);

    // Inconsistent mask dims are rejected with a message naming the mask.
    int32_t const maskIndex = node.op == contract::SparseConv2d::kName ? contract::SparseConv2d::kInputMask
        : node.op == contract::GaussianInterp::kName                   ? contract::GaussianInterp::kInputMask
                                                                       : -1;
    if (maskIndex >= 0)
    {
        gLib.logger.clear();
        auto bad = d;
        bad[maskIndex].desc.dims.d[2] += 1;
        CHECK(b->configurePlugin(bad.data(), nb, bad.data() + nb, 1) != 0);
        CHECK(gLib.logger.hasError({node.op, node.label, "mask"}));
        auto twoChannels = d;
        twoChannels[maskIndex].desc.dims.d[1] = 2;
        CHECK(b->configurePlugin(twoChannels.data(), nb, twoChannels.data() + nb, 1) != 0);
    }
    else
    {
        auto bad = d;
        bad[0].desc.dims.d[1] = 3;
        gLib.logger.clear();
        CHECK(b->configurePlugin(bad.data(), nb, bad.data() + nb, 1) != 0);
        CHECK(gLib.logger.hasError({node.op, "logits"}));
    }
    // Input and output counts outside the contract are rejected.
    CHECK(b->configurePlugin(d.data(), 0, d.data() + nb, 1) != 0);
    CHECK(b->configurePlugin(d.data(), nb, d.data() + nb, 2) != 0);

    // Workspace from the profile's max dims, as the kernels compute it.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        auto w = dynDescs(node.inputs, node.output, t);
        std::vector<Dims> maxDims = node.inputs;
        for (int32_t i = 0; i <= nb; ++i)
        {
            if (i < nb && node.constantInput[i])
            {
                continue;
            }
            w[i].min.d[0] = 1;
            w[i].opt.d[0] = 1;
            w[i].max.d[0] = 4;
            if (i < nb)
            {
                maxDims[i].d[0] = 4;
            }
        }
        size_t const want = expectedWorkspace(node, maxDims, t == DataType::kFLOAT ? ssi::DType::kFLOAT32 : ssi::DType::kFLOAT16);
        CHECK_EQ(b->getWorkspaceSize(w.data(), nb, w.data() + nb, 1), want);
    }
}

void testSerializeRoundTripAndClone(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    auto const original = serialized(p.get(), node.op);
    std::string const meta = build(p.get())->getMetadataString();

    // The serialized collection is what TensorRT hands back at deserialisation.
    PluginFieldCollection const* fc = runtime(p.get())->getFieldsToSerialize();
    REQUIRE(fc != nullptr);
    PluginPtr restored = create(node, fc, TensorRTPhase::kRUNTIME);
    REQUIRE(restored != nullptr);
    CHECK(serialized(restored.get(), node.op) == original);
    CHECK_EQ(std::string(core(restored.get())->getPluginName()), node.op);

    // clone: independent copy with the same fields, alive after the original is gone.
    PluginPtr c(p->clone());
    REQUIRE(c != nullptr);
    CHECK(c.get() != p.get());
    p.reset();
    CHECK(serialized(c.get(), node.op) == original);
    CHECK_EQ(std::string(build(c.get())->getMetadataString()), meta);
    PluginPtr attached(runtime(c.get())->attachToContext(nullptr));
    REQUIRE(attached != nullptr);
    CHECK(serialized(attached.get(), node.op) == original);
}

void testFieldErrors()
{
    using namespace contract;
    NodeCase conv = modelNodes()[3];
    NodeCase interp = modelNodes()[6];
    NodeCase mask = modelNodes()[0];
    auto rejects = [&](NodeCase const& node, Fields& f, std::vector<std::string> const& parts) {
        gLib.logger.clear();
        PluginPtr p = create(node, f.get());
        CHECK(p == nullptr);
        bool const logged = gLib.logger.hasError(parts);
        if (!logged)
        {
            std::fprintf(stderr, "  no error message with all of:");
            for (auto const& s : parts)
            {
                std::fprintf(stderr, " '%s'", s.c_str());
            }
            std::fprintf(stderr, "; got %zu message(s)%s%s\n", gLib.logger.messages().size(),
                gLib.logger.messages().empty() ? "" : ": ",
                gLib.logger.messages().empty() ? "" : gLib.logger.messages().back().text.c_str());
        }
        CHECK(logged);
    };
    {
        Fields f;
        f.i32(SparseConv2d::kAttrStrideH, 2).i32("kernel_shape", 3);
        rejects(conv, f, {"SparseConv2d", "layer2.0.conv2", "unknown field 'kernel_shape'"});
    }
    {
        Fields f;
        f.f32(SparseConv2d::kAttrStrideH, 2.F);
        rejects(conv, f, {"stride_h", "kINT32", "kFLOAT32"});
    }
    {
        Fields f;
        f.i32(GaussianInterp::kAttrSigma, 3);
        rejects(interp, f, {"sigma", "kFLOAT32", "kINT32"});
    }
    {
        Fields f;
        int32_t two[2] = {2, 2};
        f.raw(SparseConv2d::kAttrStrideH, PluginFieldType::kINT32, two, sizeof(two), 2);
        rejects(conv, f, {"stride_h", "exactly one value"});
    }
    {
        Fields f;
        f.i32(SparseConv2d::kAttrStrideH, 0);
        rejects(conv, f, {"stride_h", "out of range"});
    }
    {
        Fields f;
        f.i32(SparseConv2d::kAttrPadW, -1);
        rejects(conv, f, {"pad_w", "out of range"});
    }
    {
        Fields f;
        f.i32(SparseConv2d::kAttrRelu, 2);
        rejects(conv, f, {"relu", "out of range"});
    }
    {
        Fields f;
        f.i32(SampleMask::kAttrMode, 7);
        rejects(mask, f, {"mode", "out of range"});
    }
    {
        Fields f;
        f.f32(GaussianInterp::kAttrSigma, 0.F);
        rejects(interp, f, {"sigma", "out of range"});
    }
    {
        Fields f;
        f.f32(GaussianInterp::kAttrSigma, std::nanf(""));
        rejects(interp, f, {"sigma"});
    }
    {
        Fields f;
        f.i32(SparseConv2d::kAttrGroups, 1).i32(SparseConv2d::kAttrGroups, 2);
        rejects(conv, f, {"groups", "twice"});
    }
    {
        Fields f;
        f.str(SparseConv2d::kAttrStrideH, "2x", true);
        rejects(conv, f, {"stride_h", "2x"});
    }
    {
        Fields f;
        f.i64(SparseConv2d::kAttrStrideH, int64_t{1} << 40);
        rejects(conv, f, {"stride_h", "out of range"});
    }
    {
        Fields f;
        f.raw(SparseConv2d::kAttrStrideH, PluginFieldType::kINT32, nullptr, 0, 0);
        rejects(conv, f, {"stride_h", "no data"});
    }
    {
        Fields f;
        f.i32(SparseConv2d::kAttrStrideH, 2);
        PluginFieldCollection const* fc = f.get();
        PluginField unnamed(nullptr, fc->fields[0].data, PluginFieldType::kINT32, 1);
        PluginFieldCollection bad{1, &unnamed};
        gLib.logger.clear();
        PluginPtr p = create(conv, &bad);
        CHECK(p == nullptr);
        CHECK(gLib.logger.hasError({"no name"}));
    }
    // Unknown phase.
    {
        gLib.logger.clear();
        PluginPtr p = create(conv, nullptr, static_cast<TensorRTPhase>(7));
        CHECK(p == nullptr);
        CHECK(gLib.logger.hasError({"phase"}));
    }
}

// ---------------------------------------------------------------------------------------
// Value ranges: every attribute of every op, as the generated contract states them.

struct RangeCase
{
    std::string op;
    std::string name;
    bool isFloat;
    double min;
    double max;
    bool minExclusive;
    std::string range;
};

#define SSI_RANGE_CASE(Op, Name)                                                                                       \
    RangeCase                                                                                                          \
    {                                                                                                                  \
        contract::Op::kName, contract::Op::kAttr##Name,                                                                \
            std::is_floating_point<decltype(contract::Op::kDefault##Name)>::value,                                     \
            static_cast<double>(contract::Op::kMin##Name), static_cast<double>(contract::Op::kMax##Name),              \
            contract::Op::kMin##Name##Exclusive, contract::Op::kRange##Name                                            \
    }

std::vector<RangeCase> contractRanges()
{
    return {SSI_RANGE_CASE(SampleMask, Mode), SSI_RANGE_CASE(SampleMask, GridInterval),
        SSI_RANGE_CASE(SampleMask, Seed), SSI_RANGE_CASE(SampleMask, Layer), SSI_RANGE_CASE(SparseConv2d, StrideH),
        SSI_RANGE_CASE(SparseConv2d, StrideW), SSI_RANGE_CASE(SparseConv2d, PadH), SSI_RANGE_CASE(SparseConv2d, PadW),
        SSI_RANGE_CASE(SparseConv2d, DilationH), SSI_RANGE_CASE(SparseConv2d, DilationW),
        SSI_RANGE_CASE(SparseConv2d, Groups), SSI_RANGE_CASE(SparseConv2d, Relu),
        SSI_RANGE_CASE(GaussianInterp, Sigma), SSI_RANGE_CASE(GaussianInterp, Relu),
        SSI_RANGE_CASE(SSIBottleneck, Stride), SSI_RANGE_CASE(SSIBottleneck, Dcn),
        SSI_RANGE_CASE(SSIBottleneck, Downsample), SSI_RANGE_CASE(SSIBottleneck, Sigma1),
        SSI_RANGE_CASE(SSIBottleneck, Sigma2), SSI_RANGE_CASE(SSIBottleneck, Mode),
        SSI_RANGE_CASE(SSIBottleneck, GridInterval), SSI_RANGE_CASE(SSIBottleneck, Seed),
        SSI_RANGE_CASE(SSIBottleneck, Layer1), SSI_RANGE_CASE(SSIBottleneck, Layer2),
        SSI_RANGE_CASE(SSIBottleneck, Density)};
}

void testContractRangeTable()
{
    using namespace contract;
    // Every attribute has a range, in contract order.
    std::map<std::string, std::vector<std::string>> byOp;
    for (RangeCase const& r : contractRanges())
    {
        byOp[r.op].push_back(r.name);
        CHECK(!r.range.empty());
        CHECK(r.min <= r.max);
    }
    for (std::string const op : {SampleMask::kName, SparseConv2d::kName, GaussianInterp::kName, SSIBottleneck::kName})
    {
        std::vector<std::string> want;
        for (auto const& a : contractAttributes(op))
        {
            want.push_back(a.first);
        }
        CHECK(byOp[op] == want);
    }
    // The values the kernels rely on.
    static_assert(SampleMask::kMinMode == kModeThreshold && SampleMask::kMaxMode == kModeOfficial, "modes");
    static_assert(SampleMask::kMinGridInterval == 0 && SampleMask::kMinLayer == 0, "SampleMask ranges");
    static_assert(SampleMask::kMinSeed == std::numeric_limits<int32_t>::min()
            && SampleMask::kMaxSeed == std::numeric_limits<int32_t>::max(),
        "seed: any int32");
    static_assert(SparseConv2d::kMinStrideH == 1 && SparseConv2d::kMinStrideW == 1 && SparseConv2d::kMinPadH == 0
            && SparseConv2d::kMinPadW == 0 && SparseConv2d::kMinDilationH == 1 && SparseConv2d::kMinDilationW == 1
            && SparseConv2d::kMinGroups == 1 && SparseConv2d::kMinRelu == 0 && SparseConv2d::kMaxRelu == 1,
        "SparseConv2d ranges");
    static_assert(GaussianInterp::kMinSigma == 0.0F && GaussianInterp::kMinSigmaExclusive
            && GaussianInterp::kMaxSigma == std::numeric_limits<float>::max() && GaussianInterp::kMaxRelu == 1,
        "GaussianInterp ranges");
    static_assert(SSIBottleneck::kMinStride == 1 && SSIBottleneck::kMinDcn == 0 && SSIBottleneck::kMaxDcn == 1
            && SSIBottleneck::kMinDownsample == 0 && SSIBottleneck::kMaxDownsample == 1
            && SSIBottleneck::kMinSigma1 == 0.0F && SSIBottleneck::kMinSigma1Exclusive
            && SSIBottleneck::kMinSigma2 == 0.0F && SSIBottleneck::kMinSigma2Exclusive
            && SSIBottleneck::kMinMode == kModeThreshold && SSIBottleneck::kMaxMode == kModeOfficial
            && SSIBottleneck::kMinGridInterval == 0 && SSIBottleneck::kMinLayer1 == 0 && SSIBottleneck::kMinLayer2 == 0
            && SSIBottleneck::kMinSeed == std::numeric_limits<int32_t>::min()
            && SSIBottleneck::kMaxSeed == std::numeric_limits<int32_t>::max() && SSIBottleneck::kMinDensity == 0.0F
            && !SSIBottleneck::kMinDensityExclusive && SSIBottleneck::kMaxDensity == 1.0F,
        "SSIBottleneck ranges");
}

//! Creating `node`'s plugin with the one field `f` fails, and the logged line names the
//! plugin, the layer, the attribute, `valueText` (when given) and the contract's range.
void expectRangeError(NodeCase const& node, RangeCase const& r, Fields& f, std::string const& valueText,
    TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    gLib.logger.clear();
    PluginPtr p = create(node, f.get(), phase);
    CHECK(p == nullptr);
    std::vector<std::string> const parts = {node.op, "'" + node.label + "'",
        node.op + " attribute " + r.name + "=" + valueText, "is out of range: expected " + r.range};
    bool const logged = gLib.logger.hasError(parts);
    if (!logged)
    {
        std::fprintf(stderr, "  %s %s=%s: no error with '%s' and '%s'; got: %s\n", node.op.c_str(), r.name.c_str(),
            valueText.c_str(), parts[2].c_str(), parts[3].c_str(),
            gLib.logger.messages().empty() ? "(nothing)" : gLib.logger.messages().back().text.c_str());
    }
    CHECK(logged);
}

void expectAccepted(NodeCase const& node, RangeCase const& r, Fields& f, double want)
{
    PluginPtr p = create(node, f.get());
    CHECK(p != nullptr);
    if (p == nullptr)
    {
        std::fprintf(stderr, "  %s %s=%g rejected: %s\n", node.op.c_str(), r.name.c_str(), want,
            gLib.logger.messages().empty() ? "" : gLib.logger.messages().back().text.c_str());
        return;
    }
    CHECK_EQ(serialized(p.get(), node.op).at(r.name), want);
}

void testOutOfRangeFieldsRejected(RangeCase const& r)
{
    NodeCase node;
    for (std::vector<NodeCase> const& list : {modelNodes(), blockNodes()})
    {
        for (NodeCase const& n : list)
        {
            if (node.op.empty() && n.op == r.op)
            {
                node = n;
            }
        }
    }
    REQUIRE(!node.op.empty());
    double const int32Min = std::numeric_limits<int32_t>::min();
    double const int32Max = std::numeric_limits<int32_t>::max();
    if (!r.isFloat)
    {
        // The bounds themselves are valid.
        for (double v : {r.min, r.max})
        {
            Fields f;
            f.i32(r.name, static_cast<int32_t>(v));
            expectAccepted(node, r, f, v);
        }
        // One past each bound is not: kINT32 where it fits, else kINT64 (the parser's int64).
        int64_t const below = static_cast<int64_t>(r.min) - 1;
        int64_t const above = static_cast<int64_t>(r.max) + 1;
        for (int64_t v : {below, above})
        {
            Fields f;
            if (v >= int32Min && v <= int32Max)
            {
                f.i32(r.name, static_cast<int32_t>(v));
            }
            else
            {
                f.i64(r.name, v);
            }
            expectRangeError(node, r, f, std::to_string(v));
        }
        // As text (kCHAR) and at deserialisation (kRUNTIME) the same check applies.
        Fields t;
        t.str(r.name, std::to_string(below), true);
        expectRangeError(node, r, t, std::to_string(below), TensorRTPhase::kRUNTIME);
        return;
    }
    // Floats: the largest value is valid, and so is the smallest above an exclusive minimum.
    {
        Fields f;
        f.f32(r.name, static_cast<float>(r.max));
        expectAccepted(node, r, f, static_cast<float>(r.max));
        float const smallest = r.minExclusive ? std::nextafter(static_cast<float>(r.min), 1.F) : static_cast<float>(r.min);
        Fields g;
        g.f32(r.name, smallest);
        expectAccepted(node, r, g, smallest);
    }
    if (r.minExclusive)
    {
        Fields f;
        f.f32(r.name, static_cast<float>(r.min));
        std::ostringstream os;
        os << r.min;
        expectRangeError(node, r, f, os.str());
    }
    {
        Fields f;
        f.f32(r.name, -1.F);
        expectRangeError(node, r, f, "-1");
    }
    {
        Fields f;
        f.f32(r.name, std::numeric_limits<float>::quiet_NaN());
        expectRangeError(node, r, f, "nan");
    }
    {
        Fields f;
        f.f32(r.name, std::numeric_limits<float>::infinity());
        expectRangeError(node, r, f, "inf");
    }
    {
        Fields f;
        f.f64(r.name, r.max * 2.0); // finite in float64, beyond float32
        expectRangeError(node, r, f, "", TensorRTPhase::kRUNTIME);
    }
}

void testFieldForms()
{
    using namespace contract;
    NodeCase conv = modelNodes()[3];
    NodeCase interp = modelNodes()[6];
    // No fields at all: the contract defaults.
    {
        PluginPtr p = create(conv, nullptr);
        REQUIRE(p != nullptr);
        auto const v = serialized(p.get(), conv.op);
        CHECK_EQ(v.at(SparseConv2d::kAttrStrideH), double{SparseConv2d::kDefaultStrideH});
        CHECK_EQ(v.at(SparseConv2d::kAttrGroups), double{SparseConv2d::kDefaultGroups});
        PluginPtr q = create(interp, nullptr);
        REQUIRE(q != nullptr);
        CHECK_EQ(serialized(q.get(), interp.op).at(GaussianInterp::kAttrSigma), double{GaussianInterp::kDefaultSigma});
    }
    // Strings with and without the trailing NUL, int64 and float64 are accepted.
    {
        Fields f;
        f.str(SparseConv2d::kAttrStrideH, "2", true)
            .str(SparseConv2d::kAttrStrideW, "3", false)
            .i64(SparseConv2d::kAttrPadH, 4)
            .i32(SparseConv2d::kAttrPadW, 5);
        PluginPtr p = create(conv, f.get());
        REQUIRE(p != nullptr);
        auto const v = serialized(p.get(), conv.op);
        CHECK_EQ(v.at(SparseConv2d::kAttrStrideH), 2.0);
        CHECK_EQ(v.at(SparseConv2d::kAttrStrideW), 3.0);
        CHECK_EQ(v.at(SparseConv2d::kAttrPadH), 4.0);
        CHECK_EQ(v.at(SparseConv2d::kAttrPadW), 5.0);
    }
    {
        Fields f;
        f.str(GaussianInterp::kAttrSigma, "2.5", true).str(GaussianInterp::kAttrRelu, "1", false);
        PluginPtr p = create(interp, f.get());
        REQUIRE(p != nullptr);
        auto const v = serialized(p.get(), interp.op);
        CHECK_EQ(v.at(GaussianInterp::kAttrSigma), 2.5);
        CHECK_EQ(v.at(GaussianInterp::kAttrRelu), 1.0);
        Fields g;
        g.f64(GaussianInterp::kAttrSigma, 1.75);
        PluginPtr q = create(interp, g.get());
        REQUIRE(q != nullptr);
        CHECK_EQ(serialized(q.get(), interp.op).at(GaussianInterp::kAttrSigma), 1.75);
    }
    // A negative seed is a valid int32 seed.
    {
        NodeCase mask = modelNodes()[1];
        Fields f;
        f.i32(SampleMask::kAttrSeed, -5).i32(SampleMask::kAttrGridInterval, 0);
        PluginPtr p = create(mask, f.get());
        REQUIRE(p != nullptr);
        CHECK_EQ(serialized(p.get(), mask.op).at(SampleMask::kAttrSeed), -5.0);
    }
}

void testNullLogger()
{
    // TensorRT's finder may find no logger: errors must not crash (they go to stderr).
    NodeCase conv = modelNodes()[3];
    gLib.logger.clear();
    gLib.finder.logger = nullptr;
    Fields f;
    f.i32("no_such_field", 1);
    PluginPtr p = create(conv, f.get());
    CHECK(p == nullptr);
    Fields g = nodeFields(conv);
    PluginPtr q = create(conv, g.get());
    CHECK(q != nullptr);
    if (q != nullptr)
    {
        DataType out{};
        DataType ints[5] = {DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kINT32};
        CHECK(build(q.get())->getOutputDataTypes(&out, 1, ints, 5) != 0);
    }
    gLib.finder.logger = &gLib.logger;
    CHECK_EQ(gLib.logger.messages().size(), size_t{0});
}

//! Fill a device buffer of `count` elements of `type` with `value`.
bool deviceFill(void* dst, int64_t count, DataType type, float value)
{
    std::vector<char> host;
    if (type == DataType::kFLOAT)
    {
        std::vector<float> v(static_cast<size_t>(count), value);
        host.assign(reinterpret_cast<char*>(v.data()), reinterpret_cast<char*>(v.data()) + v.size() * 4);
    }
    else
    {
        // float -> binary16 for the exact small values used here (0, +-1, 0.5, 2, -7).
        uint16_t h = 0;
        if (value != 0.F)
        {
            int e = 0;
            float const m = std::frexp(std::fabs(value), &e); // value = m * 2^e, m in [0.5, 1)
            uint16_t const exp = static_cast<uint16_t>(e - 1 + 15);
            uint16_t const mant = static_cast<uint16_t>((m * 2.F - 1.F) * 1024.F);
            h = static_cast<uint16_t>((value < 0 ? 0x8000 : 0) | (exp << 10) | mant);
        }
        std::vector<uint16_t> v(static_cast<size_t>(count), h);
        host.assign(reinterpret_cast<char*>(v.data()), reinterpret_cast<char*>(v.data()) + v.size() * 2);
    }
    return cudaMemcpy(dst, host.data(), host.size(), cudaMemcpyHostToDevice) == cudaSuccess;
}

std::vector<float> deviceRead(void const* src, int64_t count, DataType type)
{
    std::vector<float> out(static_cast<size_t>(count));
    if (type == DataType::kFLOAT)
    {
        cudaMemcpy(out.data(), src, out.size() * 4, cudaMemcpyDeviceToHost);
        return out;
    }
    std::vector<uint16_t> h(static_cast<size_t>(count));
    cudaMemcpy(h.data(), src, h.size() * 2, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < h.size(); ++i)
    {
        int const exp = (h[i] >> 10) & 0x1F;
        int const mant = h[i] & 0x3FF;
        float v = exp == 0 ? std::ldexp(static_cast<float>(mant), -24)
                           : (exp == 31 ? NAN : std::ldexp(1.F + mant / 1024.F, exp - 15));
        out[i] = (h[i] & 0x8000) ? -v : v;
    }
    return out;
}

void testEnqueue(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get(), TensorRTPhase::kRUNTIME);
    REQUIRE(p != nullptr);
    IPluginV3OneRuntime* r = runtime(p.get());
    int32_t const nb = static_cast<int32_t>(node.inputs.size());
    auto in = descs(node.inputs, DataType::kFLOAT);
    auto out = descs({node.output}, DataType::kFLOAT);
    std::vector<float> host(64);
    std::vector<void const*> ptrs(nb, host.data());
    void* outPtr = host.data();

    // Before onShapeChange the plugin does not know its input count: refuse.
    gLib.logger.clear();
    CHECK(r->enqueue(in.data(), out.data(), ptrs.data(), &outPtr, nullptr, nullptr) != 0);
    CHECK(gLib.logger.hasError({node.op, "onShapeChange"}));

    // onShapeChange checks concrete dims.
    auto bad = in;
    bad[0].dims.d[0] = -1;
    CHECK(r->onShapeChange(bad.data(), nb, out.data(), 1) != 0);
    if (nb > 1)
    {
        auto mism = in;
        mism[1].dims.d[0] += 1;
        CHECK(r->onShapeChange(mism.data(), nb, out.data(), 1) != 0);
    }
    REQUIRE(r->onShapeChange(in.data(), nb, out.data(), 1) == 0);

    // Null pointers and mixed types are refused before any launch.
    std::vector<void const*> nulls(nb, nullptr);
    CHECK(r->enqueue(in.data(), out.data(), nulls.data(), &outPtr, nullptr, nullptr) != 0);
    void* nullOut = nullptr;
    CHECK(r->enqueue(in.data(), out.data(), ptrs.data(), &nullOut, nullptr, nullptr) != 0);
    auto halfOut = descs({node.output}, DataType::kHALF);
    CHECK(r->enqueue(in.data(), halfOut.data(), ptrs.data(), &outPtr, nullptr, nullptr) != 0);

    if (!gLib.haveGpu)
    {
        // No GPU: the kernel launch fails, enqueue reports it and returns non-zero.
        gLib.logger.clear();
        CHECK(r->enqueue(in.data(), out.data(), ptrs.data(), &outPtr, host.data(), nullptr) != 0);
        CHECK(gLib.logger.hasError({node.op, "launch failed"}));
        // A clone made after onShapeChange behaves the same.
        PluginPtr c(p->clone());
        REQUIRE(c != nullptr);
        CHECK(runtime(c.get())->enqueue(in.data(), out.data(), ptrs.data(), &outPtr, host.data(), nullptr) != 0);
    }
}

//! On a GPU: run each node on device buffers inside a stream, in fp32 and fp16, and check
//! what the contract implies for masks of all zeros or all ones.
void testEnqueueOnGpu(NodeCase const& node)
{
    using namespace contract;
    int32_t const nb = static_cast<int32_t>(node.inputs.size());
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        size_t const elt = t == DataType::kFLOAT ? 4 : 2;
        Fields f = nodeFields(node);
        PluginPtr p = create(node, f.get(), TensorRTPhase::kRUNTIME);
        REQUIRE(p != nullptr);
        IPluginV3OneRuntime* r = runtime(p.get());
        auto in = descs(node.inputs, t);
        auto out = descs({node.output}, t);
        REQUIRE(r->onShapeChange(in.data(), nb, out.data(), 1) == 0);
        std::vector<void*> buf(nb + 1, nullptr);
        for (int32_t i = 0; i <= nb; ++i)
        {
            REQUIRE(cudaMalloc(&buf[i], static_cast<size_t>(volume(i < nb ? node.inputs[i] : node.output)) * elt)
                == cudaSuccess);
        }
        auto dyn = dynDescs(node.inputs, node.output, t);
        size_t const wsBytes = build(p.get())->getWorkspaceSize(dyn.data(), nb, dyn.data() + nb, 1);
        void* ws = nullptr;
        if (wsBytes > 0)
        {
            REQUIRE(cudaMalloc(&ws, wsBytes) == cudaSuccess);
        }
        // Fill: data 1, weights 1/Cin-ish 0.5, bias 2, mask chosen per op below.
        float maskValue = node.op == SparseConv2d::kName ? 0.F : 1.F;
        for (int32_t i = 0; i < nb; ++i)
        {
            float v = 1.F;
            if (node.op == SampleMask::kName)
            {
                v = -1.F; // every logit < 0: threshold/stochastic keep only the grid prior (mostly)
            }
            else if (node.op == SparseConv2d::kName)
            {
                v = i == SparseConv2d::kInputMask ? maskValue : (i == SparseConv2d::kInputBias ? 2.F : 0.5F);
            }
            else
            {
                v = i == GaussianInterp::kInputMask ? maskValue : (i == GaussianInterp::kInputBias ? 2.F : 0.5F);
            }
            REQUIRE(deviceFill(buf[i], volume(node.inputs[i]), t, v));
        }
        REQUIRE(deviceFill(buf[nb], volume(node.output), t, -7.F)); // poison: never a valid result here
        cudaStream_t stream = nullptr;
        REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
        std::vector<void const*> ins(buf.begin(), buf.begin() + nb);
        void* o = buf[nb];
        CHECK_EQ(r->enqueue(in.data(), out.data(), ins.data(), &o, ws, stream), 0);
        CHECK_EQ(static_cast<int>(cudaStreamSynchronize(stream)), static_cast<int>(cudaSuccess));
        std::vector<float> y = deviceRead(buf[nb], volume(node.output), t);
        int64_t bad = 0;
        Dims const& od = node.output;
        for (int64_t idx = 0; idx < static_cast<int64_t>(y.size()); ++idx)
        {
            float want = 0.F;
            if (node.op == SampleMask::kName)
            {
                int64_t const x = idx % od.d[3];
                int64_t const yy = (idx / od.d[3]) % od.d[2];
                int32_t const g = static_cast<int32_t>(attr(node, SampleMask::kAttrGridInterval));
                bool const grid = g > 0 && yy % g == 0 && x % g == 0;
                if (grid)
                {
                    want = 1.F;
                }
                else if (static_cast<int32_t>(attr(node, SampleMask::kAttrMode)) == kModeThreshold)
                {
                    want = 0.F;
                }
                else
                {
                    if (!(y[idx] == 0.F || y[idx] == 1.F)) // stochastic: a Bernoulli draw
                    {
                        ++bad;
                    }
                    continue;
                }
            }
            else if (node.op == SparseConv2d::kName)
            {
                want = 0.F; // mask all zero: exactly 0 everywhere
            }
            else
            {
                // mask all one: out = values + bias (+ residual), then ReLU if set.
                want = 0.5F + 2.F + (nb == 4 ? 0.5F : 0.F);
            }
            if (!(std::fabs(y[idx] - want) <= 1e-3F))
            {
                ++bad;
            }
        }
        CHECK_EQ(bad, int64_t{0});
        cudaStreamDestroy(stream);
        for (void* b : buf)
        {
            cudaFree(b);
        }
        cudaFree(ws);
    }
}

// ---------------------------------------------------------------------------------------
// SSIBottleneck: 15 inputs (x and 14 constant weights, empty [0] where a part is off),
// 3 outputs (y, mask1, mask2), x/y kHWC8 in fp16.

constexpr int32_t kBlockInputs = contract::SSIBottleneck::kMaxInputs;
constexpr int32_t kBlockOutputs = contract::SSIBottleneck::kNumOutputs;
constexpr int32_t kBlockY = kBlockInputs; //!< position of y in inOut

bool blockFitsHwc8(NodeCase const& node)
{
    int64_t const cin = node.inputs[contract::SSIBottleneck::kInputX].d[1];
    int64_t const cout = node.output.d[1];
    return cin % 8 == 0 && cout % 8 == 0;
}

//! The 18 descriptions (15 inputs, 3 outputs) of a block node: `type` throughout, x and y in
//! `xy`, everything else linear.
std::vector<DynamicPluginTensorDesc> blockDynDescs(NodeCase const& node, DataType type, TensorFormat xy)
{
    std::vector<Dims> all = node.inputs;
    for (Dims const& o : blockOutputs(node))
    {
        all.push_back(o);
    }
    std::vector<DynamicPluginTensorDesc> d(all.size());
    for (size_t i = 0; i < all.size(); ++i)
    {
        d[i].desc.dims = all[i];
        d[i].desc.type = type;
        d[i].desc.format = (i == 0 || static_cast<int32_t>(i) == kBlockY) ? xy : TensorFormat::kLINEAR;
        d[i].desc.scale = 1.F;
        d[i].min = all[i];
        d[i].opt = all[i];
        d[i].max = all[i];
    }
    return d;
}

std::vector<PluginTensorDesc> plainDescs(std::vector<DynamicPluginTensorDesc> const& d, size_t from, size_t count)
{
    std::vector<PluginTensorDesc> out;
    for (size_t i = from; i < from + count; ++i)
    {
        out.push_back(d[i].desc);
    }
    return out;
}

//! The kernel parameters the plugin must hand the kernels for x dims `x` (independent of it).
ssi::BottleneckParams blockParams(NodeCase const& node, Dims const& x, bool channelsLast)
{
    namespace B = contract::SSIBottleneck;
    auto a = [&](char const* n) { return attr(node, n); };
    ssi::BottleneckParams p{};
    p.n = static_cast<int32_t>(x.d[0]);
    p.cin = static_cast<int32_t>(x.d[1]);
    p.h = static_cast<int32_t>(x.d[2]);
    p.w = static_cast<int32_t>(x.d[3]);
    p.planes = static_cast<int32_t>(node.inputs[B::kInputConv1Weight].d[0]);
    p.cout = static_cast<int32_t>(node.inputs[B::kInputConv3Weight].d[0]);
    p.stride = static_cast<int32_t>(a(B::kAttrStride));
    p.dcn = static_cast<int32_t>(a(B::kAttrDcn));
    p.downsample = static_cast<int32_t>(a(B::kAttrDownsample));
    p.sigma1 = static_cast<float>(a(B::kAttrSigma1));
    p.sigma2 = static_cast<float>(a(B::kAttrSigma2));
    p.mode = static_cast<int32_t>(a(B::kAttrMode));
    p.gridInterval = static_cast<int32_t>(a(B::kAttrGridInterval));
    p.seed = static_cast<int32_t>(a(B::kAttrSeed));
    p.layer1 = static_cast<int32_t>(a(B::kAttrLayer1));
    p.layer2 = static_cast<int32_t>(a(B::kAttrLayer2));
    p.density = static_cast<float>(a(B::kAttrDensity));
    p.channelsLast = channelsLast ? 1 : 0;
    return p;
}

void testBlockNodesMatchTheExport()
{
    namespace B = contract::SSIBottleneck;
    std::vector<NodeCase> const nodes = blockNodes();
    REQUIRE(nodes.size() > kResnet50Blocks);
    // sparse_resnet50 at 64x64: 16 blocks, the last one [2,2048,2,2]; layers 0..31 in order.
    for (size_t i = 0; i < kResnet50Blocks; ++i)
    {
        CHECK_EQ(attr(nodes[i], B::kAttrLayer1), double(2 * i));
        CHECK_EQ(attr(nodes[i], B::kAttrLayer2), double(2 * i + 1));
        CHECK_EQ(static_cast<int32_t>(nodes[i].attrs.size()), B::kNumAttributes);
        if (i + 1 < kResnet50Blocks)
        {
            CHECK(sameDims(nodes[i].output, nodes[i + 1].inputs[B::kInputX])); // the blocks chain
        }
    }
    CHECK(sameDims(nodes[kResnet50Blocks - 1].output, dims({2, 2048, 2, 2})));
    CHECK(sameDims(nodes[3].inputs[B::kInputX], dims({2, 256, 16, 16})));
    CHECK(sameDims(nodes[3].output, dims({2, 512, 8, 8})));
}

void testBlockOutputTypes(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    IPluginV3OneBuild* b = build(p.get());
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        std::vector<DataType> in(kBlockInputs, t);
        DataType out[kBlockOutputs] = {DataType::kINT8, DataType::kINT8, DataType::kINT8};
        CHECK_EQ(b->getOutputDataTypes(out, kBlockOutputs, in.data(), kBlockInputs), 0);
        for (DataType o : out)
        {
            CHECK(o == t);
        }
    }
    DataType out[kBlockOutputs] = {};
    gLib.logger.clear();
    std::vector<DataType> mixed(kBlockInputs, DataType::kFLOAT);
    mixed[contract::SSIBottleneck::kInputConv3Weight] = DataType::kHALF;
    CHECK(b->getOutputDataTypes(out, kBlockOutputs, mixed.data(), kBlockInputs) != 0);
    CHECK(gLib.logger.hasError({node.op, node.label, "share one type"}));
    std::vector<DataType> ints(kBlockInputs, DataType::kINT32);
    CHECK(b->getOutputDataTypes(out, kBlockOutputs, ints.data(), kBlockInputs) != 0);
    CHECK(gLib.logger.hasError({node.op, "int32"}));
    std::vector<DataType> fine(kBlockInputs, DataType::kFLOAT);
    gLib.logger.clear();
    CHECK(b->getOutputDataTypes(out, 1, fine.data(), kBlockInputs) != 0);
    CHECK(gLib.logger.hasError({node.op, "3 outputs"}));
    CHECK(b->getOutputDataTypes(out, kBlockOutputs, fine.data(), kBlockInputs - 1) != 0);
    CHECK(gLib.logger.hasError({node.op, "15 inputs"}));
}

void testBlockOutputShapes(NodeCase const& node)
{
    namespace B = contract::SSIBottleneck;
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    IPluginV3OneBuild* b = build(p.get());
    // x with symbolic N, H, W (a dynamic profile); the weights are constants.
    ExprBuilder eb;
    std::vector<DimsExprs> in(kBlockInputs);
    Bindings bind;
    for (int32_t i = 0; i < kBlockInputs; ++i)
    {
        in[i].nbDims = node.inputs[i].nbDims;
        for (int32_t j = 0; j < in[i].nbDims; ++j)
        {
            bool const fixed = node.constantInput[i] || j == 1;
            std::string const name = "in" + std::to_string(i) + "_" + std::to_string(j);
            in[i].d[j] = fixed ? eb.make(node.inputs[i].d[j]) : eb.symbol(name);
            bind[name] = node.inputs[i].d[j];
        }
    }
    DimsExprs out[kBlockOutputs]{};
    REQUIRE(b->getOutputShapes(in.data(), kBlockInputs, nullptr, 0, out, kBlockOutputs, eb) == 0);
    CHECK_EQ(eb.foreignOperands(), 0);
    std::vector<Dims> const want = blockOutputs(node);
    auto value = [&](DimsExprs const& e, int32_t j, Bindings const& bnd) -> int64_t {
        Expr const* x = eb.owned(e.d[j]);
        if (x == nullptr)
        {
            return -12345; // not an expression of this builder (a foreign or null pointer)
        }
        return x->eval(bnd);
    };
    for (int32_t o = 0; o < kBlockOutputs; ++o)
    {
        REQUIRE(out[o].nbDims == 4);
        Dims got{};
        got.nbDims = 4;
        for (int32_t j = 0; j < 4; ++j)
        {
            got.d[j] = value(out[o], j, bind);
        }
        if (!sameDims(got, want[o]))
        {
            std::fprintf(stderr, "  output %d %s, expected %s\n", o, text(got).c_str(), text(want[o]).c_str());
        }
        CHECK(sameDims(got, want[o]));
        // channels known at build time (4p from conv3_weight, 1 for the masks), batch = x's own
        CHECK(out[o].d[1]->isConstant());
        CHECK_EQ(out[o].d[1]->getConstantValue(), want[o].d[1]);
        CHECK(out[o].d[0] == in[B::kInputX].d[0]);
    }
    // mask1 is x's H x W itself
    CHECK(out[1].d[2] == in[B::kInputX].d[2]);
    CHECK(out[1].d[3] == in[B::kInputX].d[3]);
    // Ho/Wo follow the 3x3 / pad 1 / stride arithmetic for every size, for y and mask2 alike.
    int64_t const stride = static_cast<int64_t>(attr(node, B::kAttrStride));
    int mismatches = 0;
    for (int64_t h = 1; h <= 70; ++h)
    {
        Bindings b2 = bind;
        b2["in0_2"] = h;
        b2["in0_3"] = h + 3;
        for (int32_t o : {0, 2})
        {
            mismatches += value(out[o], 2, b2) != blockOut(h, stride) ? 1 : 0;
            mismatches += value(out[o], 3, b2) != blockOut(h + 3, stride) ? 1 : 0;
        }
    }
    CHECK_EQ(mismatches, 0);

    gLib.logger.clear();
    std::vector<DimsExprs> bad = in;
    bad[B::kInputX].nbDims = 3;
    CHECK(b->getOutputShapes(bad.data(), kBlockInputs, nullptr, 0, out, kBlockOutputs, eb) != 0);
    CHECK(gLib.logger.hasError({node.op, "4-D"}));
    CHECK(b->getOutputShapes(in.data(), kBlockInputs, nullptr, 0, out, 1, eb) != 0);
}

void testBlockFormats(NodeCase const& node)
{
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    IPluginV3OneBuild* b = build(p.get());
    int32_t const all = kBlockInputs + kBlockOutputs;
    auto every = [&](std::vector<DynamicPluginTensorDesc> const& d) {
        int32_t accepted = 0;
        for (int32_t pos = 0; pos < all; ++pos)
        {
            accepted += b->supportsFormatCombination(pos, d.data(), kBlockInputs, kBlockOutputs) ? 1 : 0;
        }
        return accepted;
    };
    // Linear fp32 and fp16: every position.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        CHECK_EQ(every(blockDynDescs(node, t, TensorFormat::kLINEAR)), all);
    }
    // fp16 kHWC8 on x and y: where Cin and 4p are multiples of 8.
    auto hwc8 = blockDynDescs(node, DataType::kHALF, TensorFormat::kHWC8);
    int64_t const cin = node.inputs[0].d[1];
    bool const fits = blockFitsHwc8(node);
    CHECK_EQ(b->supportsFormatCombination(0, hwc8.data(), kBlockInputs, kBlockOutputs), cin % 8 == 0);
    CHECK_EQ(b->supportsFormatCombination(kBlockY, hwc8.data(), kBlockInputs, kBlockOutputs), fits);
    if (fits)
    {
        CHECK_EQ(every(hwc8), all);
    }
    // y follows x: kHWC8 x with linear y, or linear x with kHWC8 y, is refused at y.
    {
        auto d = hwc8;
        d[kBlockY].desc.format = TensorFormat::kLINEAR;
        CHECK(!b->supportsFormatCombination(kBlockY, d.data(), kBlockInputs, kBlockOutputs));
        auto e = blockDynDescs(node, DataType::kHALF, TensorFormat::kLINEAR);
        e[kBlockY].desc.format = TensorFormat::kHWC8;
        CHECK(!b->supportsFormatCombination(kBlockY, e.data(), kBlockInputs, kBlockOutputs));
    }
    // fp32: linear only.
    {
        auto d = blockDynDescs(node, DataType::kFLOAT, TensorFormat::kHWC8);
        CHECK(!b->supportsFormatCombination(0, d.data(), kBlockInputs, kBlockOutputs));
        CHECK(!b->supportsFormatCombination(kBlockY, d.data(), kBlockInputs, kBlockOutputs));
    }
    // Weights and masks: linear only, in both types; x: no other vectorised format.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        for (TensorFormat fmt : {TensorFormat::kHWC8, TensorFormat::kCHW2, TensorFormat::kCHW32, TensorFormat::kHWC,
                 TensorFormat::kCHW4, TensorFormat::kCHW16})
        {
            for (int32_t pos = 0; pos < all; ++pos)
            {
                if ((pos == 0 || pos == kBlockY) && fmt == TensorFormat::kHWC8)
                {
                    continue;
                }
                auto d = blockDynDescs(node, t, TensorFormat::kLINEAR);
                d[pos].desc.format = fmt;
                if (pos == kBlockY)
                {
                    d[0].desc.format = fmt; // y in x's format is still not enough
                }
                CHECK(!b->supportsFormatCombination(pos, d.data(), kBlockInputs, kBlockOutputs));
            }
        }
    }
    // One type throughout; only float32/float16.
    {
        auto d = blockDynDescs(node, DataType::kFLOAT, TensorFormat::kLINEAR);
        for (int32_t pos = 1; pos < all; ++pos)
        {
            auto mixed = d;
            mixed[pos].desc.type = DataType::kHALF;
            CHECK(!b->supportsFormatCombination(pos, mixed.data(), kBlockInputs, kBlockOutputs));
        }
        for (DataType t : {DataType::kINT8, DataType::kINT32, DataType::kBF16, DataType::kBOOL})
        {
            auto other = blockDynDescs(node, t, TensorFormat::kLINEAR);
            CHECK(!b->supportsFormatCombination(0, other.data(), kBlockInputs, kBlockOutputs));
        }
        CHECK(!b->supportsFormatCombination(all, d.data(), kBlockInputs, kBlockOutputs));
        CHECK(!b->supportsFormatCombination(-1, d.data(), kBlockInputs, kBlockOutputs));
        CHECK(!b->supportsFormatCombination(0, d.data(), kBlockInputs - 1, kBlockOutputs + 1));
        CHECK(!b->supportsFormatCombination(0, d.data(), kBlockInputs, 1));
        CHECK(!b->supportsFormatCombination(0, nullptr, kBlockInputs, kBlockOutputs));
    }
    // The answer for pos depends on inOut[0..pos] only: garbage after pos changes nothing.
    for (auto const& base : {blockDynDescs(node, DataType::kFLOAT, TensorFormat::kLINEAR),
             blockDynDescs(node, DataType::kHALF, TensorFormat::kLINEAR), hwc8})
    {
        for (int32_t pos = 0; pos < all; ++pos)
        {
            bool const want = b->supportsFormatCombination(pos, base.data(), kBlockInputs, kBlockOutputs);
            auto later = base;
            for (int32_t k = pos + 1; k < all; ++k)
            {
                later[k].desc.type = DataType::kINT8;
                later[k].desc.format = TensorFormat::kCHW32;
                later[k].desc.dims = dims({7});
            }
            CHECK_EQ(b->supportsFormatCombination(pos, later.data(), kBlockInputs, kBlockOutputs), want);
        }
    }
}

void testBlockConfigureAndWorkspace(NodeCase const& node)
{
    namespace B = contract::SSIBottleneck;
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get());
    REQUIRE(p != nullptr);
    IPluginV3OneBuild* b = build(p.get());
    auto d = blockDynDescs(node, DataType::kFLOAT, TensorFormat::kLINEAR);
    DynamicPluginTensorDesc* outs = d.data() + kBlockInputs;
    CHECK_EQ(b->configurePlugin(d.data(), kBlockInputs, outs, kBlockOutputs), 0);

    // Dynamic N, H, W (-1) are accepted at configure time.
    auto dyn = d;
    for (int32_t i : {0, kBlockY, kBlockY + 1, kBlockY + 2})
    {
        dyn[i].desc.dims.d[0] = -1;
        dyn[i].desc.dims.d[2] = -1;
        dyn[i].desc.dims.d[3] = -1;
    }
    CHECK_EQ(b->configurePlugin(dyn.data(), kBlockInputs, dyn.data() + kBlockInputs, kBlockOutputs), 0);

    // Weights that do not fit x, each other or the attributes: refused, naming the input.
    bool const dcn = attr(node, B::kAttrDcn) != 0;
    bool const ds = attr(node, B::kAttrDownsample) != 0;
    struct Bad
    {
        int32_t input;
        Dims dims;
        std::vector<std::string> words;
    };
    Dims const& x = node.inputs[B::kInputX];
    int64_t const cin = x.d[1];
    int64_t const pl = node.inputs[B::kInputConv1Weight].d[0];
    int64_t const cout = node.output.d[1];
    std::vector<Bad> bads = {
        {B::kInputConv1Weight, dims({pl, cin + 1, 1, 1}), {"conv1_weight", "[p,Cin,1,1]"}},
        {B::kInputConv1Weight, dims({pl, cin, 3, 3}), {"conv1_weight"}},
        {B::kInputMask1Weight, dims({2, cin, 3, 3}), {"mask1_weight"}},
        {B::kInputMask2Weight, dims({1, cin, 1, 1}), {"mask2_weight"}},
        {B::kInputMask2Bias, dims({2}), {"mask2_bias"}},
        {B::kInputConv2Weight, dims({pl, pl + 1, 3, 3}), {"conv2_weight"}},
        {B::kInputConv2Bias, dims({pl + 1}), {"conv2_bias"}},
        {B::kInputConv3Weight, dims({cout, pl + 1, 1, 1}), {"conv3_weight", "[4p,p,1,1]"}},
        {B::kInputConv3Bias, dims({cout + 8}), {"conv3_bias"}},
        {B::kInputConv1Bias, dims({pl, 1}), {"conv1_bias", "1-D"}},
        {B::kInputOffsetWeight, dcn ? dims({0}) : dims({18, cin, 3, 3}), {"offset_weight", dcn ? "dcn=1" : "dcn=0"}},
        {B::kInputOffsetBias, dcn ? dims({9}) : dims({18}), {"offset_bias"}},
        {B::kInputDownsampleWeight, ds ? dims({0}) : dims({cout, cin, 1, 1}),
            {"downsample_weight", ds ? "downsample=1" : "downsample=0"}},
        {B::kInputDownsampleBias, ds ? dims({cout + 1}) : dims({cout}), {"downsample_bias"}},
    };
    for (Bad const& bad : bads)
    {
        auto e = d;
        e[bad.input].desc.dims = bad.dims;
        e[bad.input].max = bad.dims;
        gLib.logger.clear();
        CHECK(b->configurePlugin(e.data(), kBlockInputs, e.data() + kBlockInputs, kBlockOutputs) != 0);
        std::vector<std::string> words = bad.words;
        words.push_back(node.op);
        words.push_back(node.label);
        bool const logged = gLib.logger.hasError(words);
        if (!logged)
        {
            std::fprintf(stderr, "  input %d %s: no error with '%s'; got: %s\n", bad.input, text(bad.dims).c_str(),
                bad.words[0].c_str(),
                gLib.logger.messages().empty() ? "(nothing)" : gLib.logger.messages().back().text.c_str());
        }
        CHECK(logged);
        CHECK_EQ(gLib.logger.errorCount(), size_t{1});
    }
    {
        auto e = d;
        e[B::kInputX].desc.dims.nbDims = 3;
        CHECK(b->configurePlugin(e.data(), kBlockInputs, e.data() + kBlockInputs, kBlockOutputs) != 0);
    }
    // Counts outside the contract.
    CHECK(b->configurePlugin(d.data(), kBlockInputs - 1, outs, kBlockOutputs) != 0);
    CHECK(b->configurePlugin(d.data(), kBlockInputs, outs, 1) != 0);

    // Workspace: the kernels' size at the profile's max dims, in the negotiated layout of x.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        for (TensorFormat fmt : {TensorFormat::kLINEAR, TensorFormat::kHWC8})
        {
            if (fmt == TensorFormat::kHWC8 && (t != DataType::kHALF || !blockFitsHwc8(node)))
            {
                continue;
            }
            auto w = blockDynDescs(node, t, fmt);
            Dims maxX = x;
            maxX.d[0] = 4;
            maxX.d[2] = x.d[2] + 5;
            maxX.d[3] = x.d[3] + 7;
            w[0].min.d[0] = 1;
            w[0].max = maxX;
            size_t const want = ssi::ssiBottleneckWorkspaceSize(blockParams(node, maxX, fmt == TensorFormat::kHWC8),
                t == DataType::kFLOAT ? ssi::DType::kFLOAT32 : ssi::DType::kFLOAT16);
            size_t const got = b->getWorkspaceSize(w.data(), kBlockInputs, w.data() + kBlockInputs, kBlockOutputs);
            CHECK_EQ(got, want);
            CHECK(got > 0);
            // more than at the opt dims: it is sized for the max
            size_t const atOpt = ssi::ssiBottleneckWorkspaceSize(
                blockParams(node, x, fmt == TensorFormat::kHWC8),
                t == DataType::kFLOAT ? ssi::DType::kFLOAT32 : ssi::DType::kFLOAT16);
            CHECK(got > atOpt);
        }
    }
    gLib.logger.clear();
    CHECK_EQ(b->getWorkspaceSize(d.data(), kBlockInputs, d.data() + kBlockInputs, 1), size_t{0});
    CHECK(gLib.logger.hasError({node.op, "getWorkspaceSize"}));
}

void testBlockAttributeShapeRules()
{
    namespace B = contract::SSIBottleneck;
    // An identity shortcut (downsample=0) needs stride 1 and Cin = 4p.
    NodeCase node = blockNodes()[1]; // layer1.1: identity, 256 -> 256
    REQUIRE(attr(node, B::kAttrDownsample) == 0);
    Fields f = nodeFields(node);
    f.i32(B::kAttrStride, 2); // repeated field: refused as such
    gLib.logger.clear();
    CHECK(create(node, f.get()) == nullptr);
    CHECK(gLib.logger.hasError({"stride", "twice"}));
    Fields g;
    g.i32(B::kAttrStride, 2);
    PluginPtr p = create(node, g.get());
    REQUIRE(p != nullptr);
    auto d = blockDynDescs(node, DataType::kFLOAT, TensorFormat::kLINEAR);
    gLib.logger.clear();
    CHECK(build(p.get())->configurePlugin(d.data(), kBlockInputs, d.data() + kBlockInputs, kBlockOutputs) != 0);
    CHECK(gLib.logger.hasError({node.op, node.label, "identity shortcut", "stride 1"}));
    // dcn=1 on a node without offset weights
    Fields h;
    h.i32(B::kAttrDcn, 1);
    PluginPtr q = create(node, h.get());
    REQUIRE(q != nullptr);
    gLib.logger.clear();
    CHECK(build(q.get())->configurePlugin(d.data(), kBlockInputs, d.data() + kBlockInputs, kBlockOutputs) != 0);
    CHECK(gLib.logger.hasError({node.op, "offset_weight", "[18,Cin,3,3]"}));
}

void testBlockFieldErrors()
{
    namespace B = contract::SSIBottleneck;
    NodeCase node = blockNodes()[0];
    auto rejects = [&](Fields& f, std::vector<std::string> const& parts) {
        gLib.logger.clear();
        PluginPtr p = create(node, f.get());
        CHECK(p == nullptr);
        bool const logged = gLib.logger.hasError(parts);
        if (!logged)
        {
            std::fprintf(stderr, "  no error with '%s'; got: %s\n", parts.back().c_str(),
                gLib.logger.messages().empty() ? "(nothing)" : gLib.logger.messages().back().text.c_str());
        }
        CHECK(logged);
        CHECK_EQ(gLib.logger.errorCount(), size_t{1});
    };
    {
        Fields f;
        f.i32("plugin_version", 1);
        rejects(f, {"cannot create plugin SSIBottleneck 'layer1.0'", "unknown field 'plugin_version'"});
    }
    {
        Fields f;
        f.i32(B::kAttrDcn, 2);
        rejects(f, {"SSIBottleneck attribute dcn=2 is out of range: expected one of 0 (regular), 1 (deformable)"});
    }
    {
        Fields f;
        f.i32(B::kAttrDownsample, -1);
        rejects(f, {"downsample=-1", "out of range"});
    }
    {
        Fields f;
        f.f32(B::kAttrDensity, 1.5F);
        rejects(f, {"density=1.5", "out of range"});
    }
    {
        Fields f;
        f.i32(B::kAttrSigma1, 3);
        rejects(f, {"sigma1", "kFLOAT32", "kINT32"});
    }
    {
        Fields f;
        f.f32(B::kAttrStride, 2.F);
        rejects(f, {"stride", "kINT32", "kFLOAT32"});
    }
    {
        Fields f;
        f.i32(B::kAttrStride, 0);
        rejects(f, {"stride=0", "expected an int32 >= 1"});
    }
    {
        Fields f;
        f.f32(B::kAttrSigma2, 0.F);
        rejects(f, {"sigma2=0", "out of range"});
    }
    {
        Fields f;
        f.i32(B::kAttrMode, 3);
        rejects(f, {"mode=3", "out of range"});
    }
    {
        Fields f;
        f.i32(B::kAttrLayer2, -1);
        rejects(f, {"layer2=-1", "out of range"});
    }
    // Text forms and int64 / float64 are accepted as for the other plugins.
    {
        Fields f;
        f.str(B::kAttrStride, "2", true).str(B::kAttrDensity, "0.5", false).i64(B::kAttrSeed, -3).f64(B::kAttrSigma1, 2.5);
        PluginPtr p = create(node, f.get());
        REQUIRE(p != nullptr);
        auto const v = serialized(p.get(), node.op);
        CHECK_EQ(v.at(B::kAttrStride), 2.0);
        CHECK_EQ(v.at(B::kAttrDensity), 0.5);
        CHECK_EQ(v.at(B::kAttrSeed), -3.0);
        CHECK_EQ(v.at(B::kAttrSigma1), 2.5);
        CHECK_EQ(v.at(B::kAttrLayer2), double{B::kDefaultLayer2});
    }
}

void testBlockEnqueue(NodeCase const& node)
{
    namespace B = contract::SSIBottleneck;
    Fields f = nodeFields(node);
    PluginPtr p = create(node, f.get(), TensorRTPhase::kRUNTIME);
    REQUIRE(p != nullptr);
    IPluginV3OneRuntime* r = runtime(p.get());
    auto d = blockDynDescs(node, DataType::kFLOAT, TensorFormat::kLINEAR);
    auto in = plainDescs(d, 0, kBlockInputs);
    auto out = plainDescs(d, kBlockInputs, kBlockOutputs);
    std::vector<float> host(64);
    // Empty parts (numel 0) may come with null pointers.
    std::vector<void const*> ptrs(kBlockInputs, host.data());
    for (int32_t i = 0; i < kBlockInputs; ++i)
    {
        if (volume(node.inputs[i]) == 0)
        {
            ptrs[i] = nullptr;
        }
    }
    std::vector<void*> outPtrs(kBlockOutputs, host.data());

    gLib.logger.clear();
    CHECK(r->enqueue(in.data(), out.data(), ptrs.data(), outPtrs.data(), host.data(), nullptr) != 0);
    CHECK(gLib.logger.hasError({node.op, "onShapeChange"}));

    auto bad = in;
    bad[B::kInputX].dims.d[0] = -1;
    CHECK(r->onShapeChange(bad.data(), kBlockInputs, out.data(), kBlockOutputs) != 0);
    auto mism = in;
    mism[B::kInputConv2Weight].dims.d[1] += 1;
    CHECK(r->onShapeChange(mism.data(), kBlockInputs, out.data(), kBlockOutputs) != 0);
    CHECK(r->onShapeChange(in.data(), kBlockInputs, out.data(), 1) != 0);
    REQUIRE(r->onShapeChange(in.data(), kBlockInputs, out.data(), kBlockOutputs) == 0);

    // Refused before any launch, one line each.
    auto refuses = [&](std::vector<PluginTensorDesc> const& i, std::vector<PluginTensorDesc> const& o,
                       std::vector<void const*> const& ip, std::vector<void*> const& op,
                       std::vector<std::string> const& words) {
        gLib.logger.clear();
        CHECK(r->enqueue(i.data(), o.data(), ip.data(), op.data(), host.data(), nullptr) != 0);
        bool const logged = gLib.logger.hasError(words);
        if (!logged)
        {
            std::fprintf(stderr, "  enqueue: no error with '%s'; got: %s\n", words.back().c_str(),
                gLib.logger.messages().empty() ? "(nothing)" : gLib.logger.messages().back().text.c_str());
        }
        CHECK(logged);
        CHECK_EQ(gLib.logger.errorCount(), size_t{1});
    };
    {
        auto nulls = ptrs;
        nulls[B::kInputConv2Weight] = nullptr;
        refuses(in, out, nulls, outPtrs, {node.op, "conv2_weight (input 9) has a null device pointer"});
        auto noMask = outPtrs;
        noMask[2] = nullptr;
        refuses(in, out, ptrs, noMask, {"output 2 (mask2) has a null device pointer"});
    }
    {
        auto half = out;
        half[0].type = DataType::kHALF;
        refuses(in, half, ptrs, outPtrs, {"output 0 (y)", "float16", "expected linear float32"});
        auto hwcX = in;
        hwcX[0].format = TensorFormat::kHWC8;
        refuses(hwcX, out, ptrs, outPtrs, {"x (input 0)", "kHWC8", "float32"});
        auto hwcW = in;
        hwcW[B::kInputConv1Weight].format = TensorFormat::kHWC8;
        refuses(hwcW, out, ptrs, outPtrs, {"conv1_weight (input 5)", "kHWC8"});
        auto mixed = in;
        mixed[B::kInputConv3Bias].type = DataType::kHALF;
        refuses(mixed, out, ptrs, outPtrs, {"conv3_bias (input 12)"});
        auto wrongMask = out;
        wrongMask[2].dims.d[2] += 1;
        refuses(in, wrongMask, ptrs, outPtrs, {"output 2 (mask2) dims"});
        auto wrongY = out;
        wrongY[0].dims.d[1] += 8;
        refuses(in, wrongY, ptrs, outPtrs, {"output 0 (y) dims"});
    }
    if (!gLib.haveGpu)
    {
        // No GPU: the checks pass, the launch fails, enqueue says so in one line and returns -1.
        gLib.logger.clear();
        CHECK_EQ(r->enqueue(in.data(), out.data(), ptrs.data(), outPtrs.data(), host.data(), nullptr), -1);
        CHECK(gLib.logger.hasError({node.op, node.label, "launch failed"}));
        CHECK_EQ(gLib.logger.errorCount(), size_t{1});
        // No workspace: refused before the launch.
        gLib.logger.clear();
        CHECK(r->enqueue(in.data(), out.data(), ptrs.data(), outPtrs.data(), nullptr, nullptr) != 0);
        CHECK(gLib.logger.hasError({node.op, "no workspace given"}));
        // fp16 kHWC8 x and y pass the checks too (the launch is what fails).
        if (blockFitsHwc8(node))
        {
            auto h = blockDynDescs(node, DataType::kHALF, TensorFormat::kHWC8);
            auto hin = plainDescs(h, 0, kBlockInputs);
            auto hout = plainDescs(h, kBlockInputs, kBlockOutputs);
            refuses(hin, hout, ptrs, outPtrs, {node.op, "launch failed"});
            auto linearY = hout;
            linearY[0].format = TensorFormat::kLINEAR;
            refuses(hin, linearY, ptrs, outPtrs, {"output 0 (y) is linear float16, expected kHWC8 float16"});
        }
        else
        {
            auto h = blockDynDescs(node, DataType::kHALF, TensorFormat::kHWC8);
            refuses(plainDescs(h, 0, kBlockInputs), plainDescs(h, kBlockInputs, kBlockOutputs), ptrs, outPtrs,
                {node.op, "kHWC8 needs Cin and 4p to be multiples of 8"});
        }
        // A clone made after onShapeChange behaves the same.
        PluginPtr c(p->clone());
        REQUIRE(c != nullptr);
        CHECK(runtime(c.get())->enqueue(in.data(), out.data(), ptrs.data(), outPtrs.data(), host.data(), nullptr)
            != 0);
    }
    // Batch 0: nothing to compute, success without touching any pointer.
    auto zin = in;
    auto zout = out;
    zin[0].dims.d[0] = 0;
    for (auto& o : zout)
    {
        o.dims.d[0] = 0;
    }
    REQUIRE(r->onShapeChange(zin.data(), kBlockInputs, zout.data(), kBlockOutputs) == 0);
    std::vector<void const*> noIn(kBlockInputs, nullptr);
    std::vector<void*> noOut(kBlockOutputs, nullptr);
    CHECK_EQ(r->enqueue(zin.data(), zout.data(), noIn.data(), noOut.data(), nullptr, nullptr), 0);
}

//! On a GPU: run a block with zero conv weights, so that y = relu(conv3_bias + shortcut(x))
//! whatever the masks; the mask biases decide the masks (-1: all 0, +1: all 1, grid prior
//! off). fp32 and fp16, NCHW and (fp16) kHWC8.
void testBlockEnqueueOnGpu(NodeCase const& node)
{
    namespace B = contract::SSIBottleneck;
    bool const ds = attr(node, B::kAttrDownsample) != 0;
    for (float maskBias : {-1.F, 1.F})
    {
        for (int32_t variant = 0; variant < 3; ++variant)
        {
            DataType const t = variant == 0 ? DataType::kFLOAT : DataType::kHALF;
            TensorFormat const fmt = variant == 2 ? TensorFormat::kHWC8 : TensorFormat::kLINEAR;
            if (fmt == TensorFormat::kHWC8 && !blockFitsHwc8(node))
            {
                continue;
            }
            size_t const elt = t == DataType::kFLOAT ? 4 : 2;
            NodeCase plain = node; // the node's attributes, sampling by threshold without grid prior
            plain.attrs.erase(std::remove_if(plain.attrs.begin(), plain.attrs.end(),
                                  [](AttrValue const& a) {
                                      return a.name == "grid_interval" || a.name == "density" || a.name == "mode";
                                  }),
                plain.attrs.end());
            Fields g = nodeFields(plain);
            g.i32("grid_interval", 0).f32("density", 0.F).i32("mode", 0);
            PluginPtr p = create(plain, g.get(), TensorRTPhase::kRUNTIME);
            REQUIRE(p != nullptr);
            IPluginV3OneRuntime* r = runtime(p.get());
            auto d = blockDynDescs(node, t, fmt);
            auto in = plainDescs(d, 0, kBlockInputs);
            auto out = plainDescs(d, kBlockInputs, kBlockOutputs);
            REQUIRE(r->onShapeChange(in.data(), kBlockInputs, out.data(), kBlockOutputs) == 0);
            std::vector<void*> buf(kBlockInputs + kBlockOutputs, nullptr);
            for (int32_t i = 0; i < kBlockInputs + kBlockOutputs; ++i)
            {
                int64_t const n = volume(d[i].desc.dims);
                if (n > 0)
                {
                    REQUIRE(cudaMalloc(&buf[i], static_cast<size_t>(n) * elt) == cudaSuccess);
                }
            }
            size_t const wsBytes = build(p.get())->getWorkspaceSize(d.data(), kBlockInputs, d.data() + kBlockInputs,
                kBlockOutputs);
            REQUIRE(wsBytes > 0);
            void* ws = nullptr;
            REQUIRE(cudaMalloc(&ws, wsBytes) == cudaSuccess);
            for (int32_t i = 0; i < kBlockInputs; ++i)
            {
                float v = 0.F; // conv weights
                if (i == B::kInputX)
                {
                    v = 1.F;
                }
                else if (i == B::kInputMask1Bias || i == B::kInputMask2Bias)
                {
                    v = maskBias;
                }
                else if (i == B::kInputConv3Bias)
                {
                    v = 0.5F;
                }
                else if (i == B::kInputDownsampleBias || i == B::kInputConv1Bias || i == B::kInputConv2Bias)
                {
                    v = 2.F;
                }
                if (buf[i] != nullptr)
                {
                    REQUIRE(deviceFill(buf[i], volume(d[i].desc.dims), t, v));
                }
            }
            for (int32_t o = 0; o < kBlockOutputs; ++o)
            {
                REQUIRE(deviceFill(buf[kBlockInputs + o], volume(d[kBlockInputs + o].desc.dims), t, -7.F));
            }
            cudaStream_t stream = nullptr;
            REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
            std::vector<void const*> ins(buf.begin(), buf.begin() + kBlockInputs);
            std::vector<void*> outs(buf.begin() + kBlockInputs, buf.end());
            CHECK_EQ(r->enqueue(in.data(), out.data(), ins.data(), outs.data(), ws, stream), 0);
            CHECK_EQ(static_cast<int>(cudaStreamSynchronize(stream)), static_cast<int>(cudaSuccess));
            float const wantY = ds ? 0.5F + 2.F : 0.5F + 1.F;
            float const wantMask = maskBias > 0 ? 1.F : 0.F;
            int64_t badY = 0;
            int64_t badMask = 0;
            for (float v : deviceRead(outs[0], volume(out[0].dims), t))
            {
                badY += std::fabs(v - wantY) <= 1e-3F ? 0 : 1;
            }
            for (int32_t o : {1, 2})
            {
                for (float v : deviceRead(outs[o], volume(out[o].dims), t))
                {
                    badMask += v == wantMask ? 0 : 1;
                }
            }
            if (badY != 0 || badMask != 0)
            {
                std::fprintf(stderr, "  %s %s %s mask bias %g: %lld bad y, %lld bad mask values\n", node.label.c_str(),
                    t == DataType::kFLOAT ? "fp32" : "fp16", fmt == TensorFormat::kHWC8 ? "kHWC8" : "linear",
                    maskBias, static_cast<long long>(badY), static_cast<long long>(badMask));
            }
            CHECK_EQ(badY, int64_t{0});
            CHECK_EQ(badMask, int64_t{0});
            cudaStreamDestroy(stream);
            for (void* b : buf)
            {
                cudaFree(b);
            }
            cudaFree(ws);
        }
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s <path to libssi_trt_plugins.so>\n", argv[0]);
        return 2;
    }
    gLib.handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (gLib.handle == nullptr)
    {
        std::fprintf(stderr, "cannot dlopen %s: %s\n", argv[1], dlerror());
        return 1;
    }
    gLib.getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(gLib.handle, "getCreators"));
    gLib.setLoggerFinder = reinterpret_cast<SetLoggerFinderFn>(dlsym(gLib.handle, "setLoggerFinder"));
    if (gLib.getCreators == nullptr || gLib.setLoggerFinder == nullptr)
    {
        std::fprintf(stderr, "%s does not export getCreators and setLoggerFinder\n", argv[1]);
        return 1;
    }
    gLib.finder.logger = &gLib.logger;
    gLib.setLoggerFinder(&gLib.finder);
    int deviceCount = 0;
    gLib.haveGpu = cudaGetDeviceCount(&deviceCount) == cudaSuccess && deviceCount > 0;
    std::printf("library %s; GPU %s\n", argv[1], gLib.haveGpu ? "present" : "absent (enqueue must fail cleanly)");

    Runner runner;
    runner.run("creators match the contract", testCreators);
    for (NodeCase const& node : modelNodes())
    {
        std::string const tag = node.op + " " + node.label;
        runner.run(tag + ": create, identity, fields, metadata", [&] { testCreateAndIdentity(node); });
        runner.run(tag + ": output types", [&] { testOutputTypes(node); });
        runner.run(tag + ": output shapes", [&] { testOutputShapes(node); });
        runner.run(tag + ": format combinations", [&] { testFormats(node); });
        runner.run(tag + ": configurePlugin and workspace", [&] { testConfigureAndWorkspace(node); });
        runner.run(tag + ": serialize round trip and clone", [&] { testSerializeRoundTripAndClone(node); });
        runner.run(tag + ": enqueue checks", [&] { testEnqueue(node); });
        if (gLib.haveGpu)
        {
            runner.run(tag + ": enqueue on the GPU", [&] { testEnqueueOnGpu(node); });
        }
    }
    runner.run("SSIBottleneck nodes match the sparse_resnet50 export", testBlockNodesMatchTheExport);
    for (NodeCase const& node : blockNodes())
    {
        std::string const tag = node.op + " " + node.label;
        runner.run(tag + ": create, identity, fields, metadata", [&] { testCreateAndIdentity(node); });
        runner.run(tag + ": output types", [&] { testBlockOutputTypes(node); });
        runner.run(tag + ": output shapes", [&] { testBlockOutputShapes(node); });
        runner.run(tag + ": format combinations", [&] { testBlockFormats(node); });
        runner.run(tag + ": configurePlugin and workspace", [&] { testBlockConfigureAndWorkspace(node); });
        runner.run(tag + ": serialize round trip and clone", [&] { testSerializeRoundTripAndClone(node); });
        runner.run(tag + ": enqueue checks", [&] { testBlockEnqueue(node); });
        if (gLib.haveGpu)
        {
            runner.run(tag + ": enqueue on the GPU", [&] { testBlockEnqueueOnGpu(node); });
        }
    }
    runner.run("SSIBottleneck: attributes and weight shapes agree", testBlockAttributeShapeRules);
    runner.run("SSIBottleneck: bad fields are rejected with a logged reason", testBlockFieldErrors);
    runner.run("bad fields are rejected with a logged reason", testFieldErrors);
    runner.run("every attribute has its range in the contract", testContractRangeTable);
    for (RangeCase const& r : contractRanges())
    {
        runner.run(r.op + " " + r.name + ": out-of-range values rejected (" + r.range + ")",
            [&] { testOutOfRangeFieldsRejected(r); });
    }
    runner.run("accepted field forms", testFieldForms);
    runner.run("no logger: errors do not crash", testNullLogger);

    std::printf("%d passed, %d failed\n", runner.passed, runner.failed);
    return runner.failed == 0 ? 0 : 1;
}
