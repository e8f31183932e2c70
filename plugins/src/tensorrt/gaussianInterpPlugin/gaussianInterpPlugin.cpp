#include "gaussianInterpPlugin/gaussianInterpPlugin.h"

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

namespace op = ssi::contract::GaussianInterp;

// Names, defaults and valid ranges: the generated contract (ssi/contract.h).
AttrSpec const kSpecs[] = {
    SSI_CONTRACT_ATTR(op, Sigma),
    SSI_CONTRACT_ATTR(op, Relu),
};
static_assert(sizeof(kSpecs) / sizeof(kSpecs[0]) == op::kNumAttributes, "GaussianInterp attributes out of sync");

AttrTable const kTable{op::kName, kSpecs, op::kNumAttributes};

} // namespace

AttrTable const& GaussianInterpPlugin::attributes()
{
    return kTable;
}

GaussianInterpPlugin::GaussianInterpPlugin()
    : SsiPlugin(kTable, op::kMinInputs, op::kMaxInputs, op::kDoc)
{
}

bool GaussianInterpPlugin::checkShapes(Dims const* in, int32_t nbInputs, std::string& error) const
{
    Dims const& v = in[op::kInputValues];
    Dims const& m = in[op::kInputMask];
    Dims const& b = in[op::kInputBias];
    if (!checkRank(v, 4, "values", error) || !checkRank(m, 4, "mask", error) || !checkRank(b, 1, "bias", error))
    {
        return false;
    }
    std::string const ref = "values " + dimsText(v);
    if (!checkExtent(m, 0, v.d[0], "mask", ref, error) || !checkExtent(m, 1, 1, "mask", "one channel", error)
        || !checkExtent(m, 2, v.d[2], "mask", ref, error) || !checkExtent(m, 3, v.d[3], "mask", ref, error)
        || !checkExtent(b, 0, v.d[1], "bias", "channels of " + ref, error))
    {
        return false;
    }
    if (nbInputs > op::kInputResidual)
    {
        Dims const& r = in[op::kInputResidual];
        if (!checkRank(r, 4, "residual", error))
        {
            return false;
        }
        for (int32_t axis = 0; axis < 4; ++axis)
        {
            if (!checkExtent(r, axis, v.d[axis], "residual", ref, error))
            {
                return false;
            }
        }
    }
    return true;
}

int32_t GaussianInterpPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /* exprBuilder */) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            reportError(error);
            return -1;
        }
        if (inputs == nullptr || outputs == nullptr || inputs[op::kInputValues].nbDims != 4)
        {
            reportError("values must be 4-D [N,C,H,W]");
            return -1;
        }
        outputs[0] = inputs[op::kInputValues];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return -1;
}

GaussianInterpParams GaussianInterpPlugin::params(Dims const& values, bool hasResidual) const noexcept
{
    GaussianInterpParams p{};
    p.n = static_cast<int32_t>(values.d[0]);
    p.c = static_cast<int32_t>(values.d[1]);
    p.h = static_cast<int32_t>(values.d[2]);
    p.w = static_cast<int32_t>(values.d[3]);
    p.sigma = mAttrs.getFloat(kSigma);
    p.relu = mAttrs.getInt(kRelu);
    p.hasResidual = hasResidual;
    return p;
}

size_t GaussianInterpPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept
{
    try
    {
        std::string error;
        ssi::DType type{};
        if (inputs == nullptr || !checkCounts(nbInputs, nbOutputs, error)
            || inputs[op::kInputValues].max.nbDims != 4 || !fitsInt32(inputs[op::kInputValues].max)
            || !toKernelType(inputs[op::kInputValues].desc.type, type))
        {
            reportError("getWorkspaceSize: values need known 4-D max dims and float32/float16 type");
            return 0;
        }
        return ssi::gaussianInterpWorkspaceSize(
            params(inputs[op::kInputValues].max, nbInputs > op::kInputResidual), type);
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return 0;
}

bool GaussianInterpPlugin::launch(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
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
    Dims const& v = dims[op::kInputValues];
    Dims const& out = outputDesc[0].dims;
    if (out.nbDims != 4 || out.d[0] != v.d[0] || out.d[1] != v.d[1] || out.d[2] != v.d[2] || out.d[3] != v.d[3])
    {
        error = "output dims " + dimsText(out) + " differ from the values' " + dimsText(v);
        return false;
    }
    bool const hasResidual = mNbInputs > op::kInputResidual;
    GaussianInterpParams const p = params(v, hasResidual);
    size_t const need = ssi::gaussianInterpWorkspaceSize(p, type);
    if (need > 0 && workspace == nullptr)
    {
        error = "no workspace given, " + std::to_string(need) + " bytes needed";
        return false;
    }
    cudaError_t const status = ssi::launchGaussianInterp(inputs[op::kInputValues], inputs[op::kInputMask],
        inputs[op::kInputBias], hasResidual ? inputs[op::kInputResidual] : nullptr, outputs[0], type, p, workspace,
        stream);
    if (status != cudaSuccess)
    {
        error = "GaussianInterp kernel launch failed: " + cudaErrorText(status);
        return false;
    }
    return true;
}

} // namespace trt
} // namespace ssi
