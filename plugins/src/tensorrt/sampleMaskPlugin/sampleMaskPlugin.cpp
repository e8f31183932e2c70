#include "sampleMaskPlugin/sampleMaskPlugin.h"

#include "ssi/contract.h"

#include <exception>
#include <limits>

using namespace nvinfer1;

namespace ssi
{
namespace trt
{
namespace
{

namespace op = ssi::contract::SampleMask;

// Names, defaults and valid ranges: the generated contract (ssi/contract.h).
AttrSpec const kSpecs[] = {
    SSI_CONTRACT_ATTR(op, Mode),
    SSI_CONTRACT_ATTR(op, GridInterval),
    SSI_CONTRACT_ATTR(op, Seed),
    SSI_CONTRACT_ATTR(op, Layer),
};
static_assert(sizeof(kSpecs) / sizeof(kSpecs[0]) == op::kNumAttributes, "SampleMask attributes out of sync");

AttrTable const kTable{op::kName, kSpecs, op::kNumAttributes};

} // namespace

AttrTable const& SampleMaskPlugin::attributes()
{
    return kTable;
}

SampleMaskPlugin::SampleMaskPlugin()
    : SsiPlugin(kTable, op::kMinInputs, op::kMaxInputs, op::kDoc)
{
}

bool SampleMaskPlugin::checkShapes(Dims const* in, int32_t /* nbInputs */, std::string& error) const
{
    Dims const& logits = in[op::kInputLogits];
    return checkRank(logits, 4, "logits", error) && checkExtent(logits, 1, 1, "logits", "one channel", error);
}

int32_t SampleMaskPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /* shapeInputs */,
    int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /* exprBuilder */) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            reportError(error);
            return -1;
        }
        if (inputs == nullptr || outputs == nullptr || inputs[op::kInputLogits].nbDims != 4)
        {
            reportError("logits must be 4-D [N,1,H,W]");
            return -1;
        }
        outputs[0] = inputs[op::kInputLogits];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return -1;
}

SampleMaskParams SampleMaskPlugin::params(Dims const& logits) const noexcept
{
    SampleMaskParams p{};
    p.n = static_cast<int32_t>(logits.d[0]);
    p.h = static_cast<int32_t>(logits.d[2]);
    p.w = static_cast<int32_t>(logits.d[3]);
    p.mode = mAttrs.getInt(kMode);
    p.gridInterval = mAttrs.getInt(kGridInterval);
    p.seed = mAttrs.getInt(kSeed);
    p.layer = mAttrs.getInt(kLayer);
    return p;
}

size_t SampleMaskPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept
{
    try
    {
        std::string error;
        ssi::DType type{};
        if (inputs == nullptr || !checkCounts(nbInputs, nbOutputs, error)
            || !fitsInt32(inputs[op::kInputLogits].max) || inputs[op::kInputLogits].max.nbDims != 4
            || !toKernelType(inputs[op::kInputLogits].desc.type, type))
        {
            reportError("getWorkspaceSize: logits need known 4-D max dims and float32/float16 type");
            return 0;
        }
        return ssi::sampleMaskWorkspaceSize(params(inputs[op::kInputLogits].max), type);
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return 0;
}

bool SampleMaskPlugin::launch(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, ssi::DType type, void* workspace, cudaStream_t stream,
    std::string& error) const
{
    Dims const& logits = inputDesc[op::kInputLogits].dims;
    if (!fitsInt32(logits) || !checkShapes(&logits, 1, error))
    {
        error = error.empty() ? "logits dims " + dimsText(logits) + " are not concrete int32 extents" : error;
        return false;
    }
    Dims const& out = outputDesc[0].dims;
    if (out.nbDims != 4 || volume(out) != volume(logits))
    {
        error = "output dims " + dimsText(out) + " differ from the logits' " + dimsText(logits);
        return false;
    }
    SampleMaskParams const p = params(logits);
    if (ssi::sampleMaskWorkspaceSize(p, type) > 0 && workspace == nullptr)
    {
        error = "no workspace given, " + std::to_string(ssi::sampleMaskWorkspaceSize(p, type)) + " bytes needed";
        return false;
    }
    cudaError_t const status
        = ssi::launchSampleMask(inputs[op::kInputLogits], outputs[0], type, p, workspace, stream);
    if (status != cudaSuccess)
    {
        error = "SampleMask kernel launch failed: " + cudaErrorText(status);
        return false;
    }
    return true;
}

} // namespace trt
} // namespace ssi
