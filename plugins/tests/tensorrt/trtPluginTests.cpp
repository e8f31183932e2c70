// Host test harness of libssi_trt_plugins.so, run without libnvinfer and without a GPU:
//   ssi_trt_plugin_tests <path to libssi_trt_plugins.so>
// dlopens the library like TensorRT's plugin registry does, checks its creators against the
// op contract, creates each plugin from the fields an exported SSI model's nodes carry, and
// exercises output types and shapes (through an IExprBuilder test double), format
// combinations, configure/onShapeChange checks, workspace sizes, the serialize ->
// createPlugin(kRUNTIME) round trip, clone, field errors and enqueue. Without a GPU enqueue
// must fail cleanly; with one it must run and give the values the contract implies for
// all-zero / all-one masks. Ends with "N passed, N failed"; exits 1 on any failure.
#include "testDoubles.h"

#include "ssi/contract.h"
#include "ssi/kernels.h"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

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
    return {{GaussianInterp::kAttrSigma, true}, {GaussianInterp::kAttrRelu, false}};
}

double contractDefault(std::string const& op, std::string const& name)
{
    using namespace contract;
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
    REQUIRE(n == 3);
    std::vector<std::string> const expected{
        contract::SampleMask::kName, contract::SparseConv2d::kName, contract::GaussianInterp::kName};
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
    CHECK_EQ(build(p.get())->getNbOutputs(), 1);

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
        SSI_RANGE_CASE(GaussianInterp, Sigma), SSI_RANGE_CASE(GaussianInterp, Relu)};
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
    for (std::string const op : {SampleMask::kName, SparseConv2d::kName, GaussianInterp::kName})
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
    for (NodeCase const& n : modelNodes())
    {
        if (n.op == r.op)
        {
            node = n;
            break;
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
