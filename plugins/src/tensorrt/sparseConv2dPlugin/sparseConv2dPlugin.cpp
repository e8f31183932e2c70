#include "sparseConv2dPlugin/sparseConv2dPlugin.h"

#include "ssi/contract.h"

#include <exception>
#include <limits>
#include <vector>

using namespace nvinfer1;

namespace ssi
{
namespace trt
{
namespace
{

namespace op = ssi::contract::SparseConv2d;

// Names, defaults and valid ranges: the generated contract (ssi/contract.h). That groups
// divides the channel counts is a shape check (checkShapes).
AttrSpec const kSpecs[] = {
    SSI_CONTRACT_ATTR(op, StrideH),
    SSI_CONTRACT_ATTR(op, StrideW),
    SSI_CONTRACT_ATTR(op, PadH),
    SSI_CONTRACT_ATTR(op, PadW),
    SSI_CONTRACT_ATTR(op, DilationH),
    SSI_CONTRACT_ATTR(op, DilationW),
    SSI_CONTRACT_ATTR(op, Groups),
    SSI_CONTRACT_ATTR(op, Relu),
};
static_assert(sizeof(kSpecs) / sizeof(kSpecs[0]) == op::kNumAttributes, "SparseConv2d attributes out of sync");

AttrTable const kTable{op::kName, kSpecs, op::kNumAttributes};

} // namespace

AttrTable const& SparseConv2dPlugin::attributes()
{
    return kTable;
}

SparseConv2dPlugin::SparseConv2dPlugin()
    : SsiPlugin(kTable, op::kMinInputs, op::kMaxInputs, op::kDoc)
{
}

int64_t SparseConv2dPlugin::outputExtent(int32_t axis, int64_t in, int64_t kernel) const noexcept
{
    if (in < 0 || kernel < 0)
    {
        return -1;
    }
    bool const h = axis == 2;
    return convOutputSize(in, kernel, mAttrs.getInt(h ? kStrideH : kStrideW), mAttrs.getInt(h ? kPadH : kPadW),
        mAttrs.getInt(h ? kDilationH : kDilationW));
}

bool SparseConv2dPlugin::checkShapes(Dims const* in, int32_t nbInputs, std::string& error) const
{
    Dims const& x = in[op::kInputX];
    Dims const& w = in[op::kInputWeight];
    Dims const& b = in[op::kInputBias];
    Dims const& m = in[op::kInputMask];
    if (!checkRank(x, 4, "x", error) || !checkRank(w, 4, "weight", error) || !checkRank(b, 1, "bias", error)
        || !checkRank(m, 4, "mask", error))
    {
        return false;
    }
    int32_t const groups = mAttrs.getInt(kGroups);
    if (x.d[1] >= 0 && x.d[1] % groups != 0)
    {
        error = "x " + dimsText(x) + ": " + std::to_string(x.d[1]) + " input channels do not split into "
            + std::to_string(groups) + " groups";
        return false;
    }
    if (w.d[0] >= 0 && w.d[0] % groups != 0)
    {
        error = "weight " + dimsText(w) + ": " + std::to_string(w.d[0]) + " output channels do not split into "
            + std::to_string(groups) + " groups";
        return false;
    }
    if (x.d[1] >= 0 && !checkExtent(w, 1, x.d[1] / groups, "weight", "Cin/groups of x " + dimsText(x), error))
    {
        return false;
    }
    if (!checkExtent(b, 0, w.d[0], "bias", "Cout of weight " + dimsText(w), error))
    {
        return false;
    }
    int64_t const ho = outputExtent(2, x.d[2], w.d[2]);
    int64_t const wo = outputExtent(3, x.d[3], w.d[3]);
    if ((x.d[2] >= 0 && w.d[2] >= 0 && ho <= 0) || (x.d[3] >= 0 && w.d[3] >= 0 && wo <= 0))
    {
        error = "the dilated kernel of weight " + dimsText(w) + " does not fit the padded input x " + dimsText(x);
        return false;
    }
    std::string const conv = "conv output of x " + dimsText(x);
    if (!checkExtent(m, 0, x.d[0], "mask", "batch of x", error) || !checkExtent(m, 1, 1, "mask", "one channel", error)
        || !checkExtent(m, 2, ho, "mask", conv, error) || !checkExtent(m, 3, wo, "mask", conv, error))
    {
        return false;
    }
    if (nbInputs > op::kInputOffset)
    {
        Dims const& o = in[op::kInputOffset];
        int64_t const taps = (w.d[2] >= 0 && w.d[3] >= 0) ? 2 * w.d[2] * w.d[3] : -1;
        if (!checkRank(o, 4, "offset", error) || !checkExtent(o, 0, x.d[0], "offset", "batch of x", error)
            || !checkExtent(o, 1, taps, "offset", "2*kH*kW", error) || !checkExtent(o, 2, ho, "offset", conv, error)
            || !checkExtent(o, 3, wo, "offset", conv, error))
        {
            return false;
        }
    }
    return true;
}

int32_t SparseConv2dPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /* shapeInputs */,
    int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            reportError(error);
            return -1;
        }
        if (inputs == nullptr || outputs == nullptr || inputs[op::kInputX].nbDims != 4
            || inputs[op::kInputWeight].nbDims != 4)
        {
            reportError("x and weight must be 4-D ([N,Cin,H,W] and [Cout,Cin/groups,kH,kW])");
            return -1;
        }
        DimsExprs const& x = inputs[op::kInputX];
        DimsExprs const& w = inputs[op::kInputWeight];
        // extent = floor((in + 2*pad - dilation*(k-1) - 1) / stride) + 1
        //        = floor((in + (2*pad + dilation - 1) - dilation*k) / stride) + 1
        auto extent = [&](IDimensionExpr const* in, IDimensionExpr const* k, int32_t stride, int32_t pad,
                          int32_t dilation) -> IDimensionExpr const* {
            IDimensionExpr const* c0 = exprBuilder.constant(2 * static_cast<int64_t>(pad) + dilation - 1);
            IDimensionExpr const* cd = exprBuilder.constant(dilation);
            IDimensionExpr const* cs = exprBuilder.constant(stride);
            IDimensionExpr const* one = exprBuilder.constant(1);
            if (in == nullptr || k == nullptr || c0 == nullptr || cd == nullptr || cs == nullptr || one == nullptr)
            {
                return nullptr;
            }
            IDimensionExpr const* padded = exprBuilder.operation(DimensionOperation::kSUM, *in, *c0);
            IDimensionExpr const* span = exprBuilder.operation(DimensionOperation::kPROD, *cd, *k);
            if (padded == nullptr || span == nullptr)
            {
                return nullptr;
            }
            IDimensionExpr const* room = exprBuilder.operation(DimensionOperation::kSUB, *padded, *span);
            if (room == nullptr)
            {
                return nullptr;
            }
            IDimensionExpr const* steps = exprBuilder.operation(DimensionOperation::kFLOOR_DIV, *room, *cs);
            return steps == nullptr ? nullptr : exprBuilder.operation(DimensionOperation::kSUM, *steps, *one);
        };
        DimsExprs& y = outputs[0];
        y.nbDims = 4;
        y.d[0] = x.d[0];
        y.d[1] = w.d[0];
        y.d[2] = extent(x.d[2], w.d[2], mAttrs.getInt(kStrideH), mAttrs.getInt(kPadH), mAttrs.getInt(kDilationH));
        y.d[3] = extent(x.d[3], w.d[3], mAttrs.getInt(kStrideW), mAttrs.getInt(kPadW), mAttrs.getInt(kDilationW));
        if (y.d[0] == nullptr || y.d[1] == nullptr || y.d[2] == nullptr || y.d[3] == nullptr)
        {
            reportError("could not build the output shape expressions");
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return -1;
}

SparseConvParams SparseConv2dPlugin::params(Dims const& x, Dims const& weight, bool deformable) const noexcept
{
    SparseConvParams p{};
    p.n = static_cast<int32_t>(x.d[0]);
    p.cin = static_cast<int32_t>(x.d[1]);
    p.h = static_cast<int32_t>(x.d[2]);
    p.w = static_cast<int32_t>(x.d[3]);
    p.cout = static_cast<int32_t>(weight.d[0]);
    p.kh = static_cast<int32_t>(weight.d[2]);
    p.kw = static_cast<int32_t>(weight.d[3]);
    p.ho = static_cast<int32_t>(outputExtent(2, x.d[2], weight.d[2]));
    p.wo = static_cast<int32_t>(outputExtent(3, x.d[3], weight.d[3]));
    p.strideH = mAttrs.getInt(kStrideH);
    p.strideW = mAttrs.getInt(kStrideW);
    p.padH = mAttrs.getInt(kPadH);
    p.padW = mAttrs.getInt(kPadW);
    p.dilationH = mAttrs.getInt(kDilationH);
    p.dilationW = mAttrs.getInt(kDilationW);
    p.groups = mAttrs.getInt(kGroups);
    p.relu = mAttrs.getInt(kRelu);
    p.deformable = deformable;
    return p;
}

size_t SparseConv2dPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept
{
    try
    {
        std::string error;
        ssi::DType type{};
        if (inputs == nullptr || !checkCounts(nbInputs, nbOutputs, error))
        {
            reportError("getWorkspaceSize: " + (error.empty() ? std::string("no input descriptions") : error));
            return 0;
        }
        Dims const& x = inputs[op::kInputX].max;
        Dims const& w = inputs[op::kInputWeight].max;
        if (x.nbDims != 4 || w.nbDims != 4 || !fitsInt32(x) || !fitsInt32(w)
            || !toKernelType(inputs[op::kInputX].desc.type, type))
        {
            reportError("getWorkspaceSize: x and weight need known 4-D max dims and float32/float16 type, got x "
                + dimsText(x) + ", weight " + dimsText(w));
            return 0;
        }
        return ssi::sparseConv2dWorkspaceSize(params(x, w, nbInputs > op::kInputOffset), type);
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return 0;
}

bool SparseConv2dPlugin::launch(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, ssi::DType type, void* workspace, cudaStream_t stream,
    std::string& error) const
{
    std::vector<Dims> dims(static_cast<size_t>(mNbInputs));
    for (int32_t i = 0; i < mNbInputs; ++i)
    {
        dims[i] = inputDesc[i].dims;
        if (!fitsInt32(dims[i]))
        {
            error = "input " + std::to_string(i) + " dims " + dimsText(dims[i]) + " are not concrete int32 extents";
            return false;
        }
    }
    if (!checkShapes(dims.data(), mNbInputs, error))
    {
        return false;
    }
    bool const deformable = mNbInputs > op::kInputOffset;
    SparseConvParams const p = params(dims[op::kInputX], dims[op::kInputWeight], deformable);
    Dims const& y = outputDesc[0].dims;
    if (y.nbDims != 4 || y.d[0] != p.n || y.d[1] != p.cout || y.d[2] != p.ho || y.d[3] != p.wo)
    {
        error = "output dims " + dimsText(y) + " differ from the conv arithmetic [" + std::to_string(p.n) + ","
            + std::to_string(p.cout) + "," + std::to_string(p.ho) + "," + std::to_string(p.wo) + "]";
        return false;
    }
    size_t const need = ssi::sparseConv2dWorkspaceSize(p, type);
    if (need > 0 && workspace == nullptr)
    {
        error = "no workspace given, " + std::to_string(need) + " bytes needed";
        return false;
    }
    cudaError_t const status = ssi::launchSparseConv2d(inputs[op::kInputX], inputs[op::kInputWeight],
        inputs[op::kInputBias], inputs[op::kInputMask], deformable ? inputs[op::kInputOffset] : nullptr, outputs[0],
        type, p, workspace, stream);
    if (status != cudaSuccess)
    {
        error = "SparseConv2d kernel launch failed: " + cudaErrorText(status);
        return false;
    }
    return true;
}

} // namespace trt
} // namespace ssi
