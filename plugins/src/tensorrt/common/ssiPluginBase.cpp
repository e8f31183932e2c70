#include "common/ssiPluginBase.h"

#include "common/pluginLogger.h"
#include "ssi/contract.h"

#include <exception>
#include <vector>

using namespace nvinfer1;

namespace ssi
{
namespace trt
{

SsiPluginBase::SsiPluginBase(
    AttrTable const& table, int32_t minInputs, int32_t maxInputs, char const* summary, int32_t nbOutputs)
    : mAttrs(table)
    , mMinInputs(minInputs)
    , mMaxInputs(maxInputs)
    , mNbOutputs(nbOutputs)
    , mSummary(summary)
{
}

IPluginCapability* SsiPluginBase::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

char const* SsiPluginBase::getPluginName() const noexcept
{
    return mAttrs.table().opName;
}

char const* SsiPluginBase::getPluginVersion() const noexcept
{
    return contract::kPluginVersion;
}

char const* SsiPluginBase::getPluginNamespace() const noexcept
{
    return contract::kPluginNamespace;
}

void SsiPluginBase::reportError(std::string const& message) const noexcept
{
    try
    {
        logError(std::string(getPluginName()) + (mLayerName.empty() ? "" : " '" + mLayerName + "'") + ": "
            + message);
    }
    catch (...)
    {
    }
}

std::string SsiPluginBase::cudaErrorText(cudaError_t status)
{
    char const* name = cudaGetErrorName(status);
    char const* text = cudaGetErrorString(status);
    return std::string(name != nullptr ? name : "cudaError") + " (" + std::to_string(static_cast<int>(status))
        + "): " + (text != nullptr ? text : "unknown CUDA error");
}

bool SsiPluginBase::checkCounts(int32_t nbInputs, int32_t nbOutputs, std::string& error) const
{
    if (nbInputs < mMinInputs || nbInputs > mMaxInputs)
    {
        error = "takes " + std::to_string(mMinInputs)
            + (mMinInputs == mMaxInputs ? "" : " or " + std::to_string(mMaxInputs)) + " inputs, got "
            + std::to_string(nbInputs);
        return false;
    }
    if (nbOutputs != mNbOutputs)
    {
        error = "has exactly " + std::to_string(mNbOutputs) + " output" + (mNbOutputs == 1 ? "" : "s") + ", got "
            + std::to_string(nbOutputs);
        return false;
    }
    return true;
}

template <typename DimsOf>
int32_t SsiPluginBase::acceptInputs(char const* caller, bool haveDescs, int32_t nbInputs, int32_t nbOutputs,
    DimsOf dimsOf, bool requireKnown) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            reportError(error);
            return -1;
        }
        if (!haveDescs)
        {
            reportError(std::string(caller) + " without tensor descriptions");
            return -1;
        }
        std::vector<Dims> dims(static_cast<size_t>(nbInputs));
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims[i] = dimsOf(i);
            if (requireKnown && !fitsInt32(dims[i]))
            {
                reportError("input " + std::to_string(i) + " has dims " + dimsText(dims[i])
                    + ": every extent must be known and fit in int32");
                return -1;
            }
        }
        if (!checkShapes(dims.data(), nbInputs, error))
        {
            reportError(error);
            return -1;
        }
        mNbInputs = nbInputs;
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return -1;
}

int32_t SsiPluginBase::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    // Build time: extents may still be -1 (dynamic).
    return acceptInputs("configurePlugin", in != nullptr && out != nullptr, nbInputs, nbOutputs,
        [in](int32_t i) { return in[i].desc.dims; }, false);
}

int32_t SsiPluginBase::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            reportError(error);
            return -1;
        }
        if (outputTypes == nullptr || inputTypes == nullptr)
        {
            reportError("getOutputDataTypes without type arrays");
            return -1;
        }
        DataType const type = inputTypes[0];
        if (!isSupportedType(type))
        {
            reportError(std::string("input 0 is ") + dataTypeName(type) + "; only float32 and float16 are supported");
            return -1;
        }
        for (int32_t i = 1; i < nbInputs; ++i)
        {
            if (inputTypes[i] != type)
            {
                reportError("all inputs must share one type: input 0 is " + std::string(dataTypeName(type))
                    + ", input " + std::to_string(i) + " is " + dataTypeName(inputTypes[i]));
                return -1;
            }
        }
        for (int32_t i = 0; i < nbOutputs; ++i)
        {
            outputTypes[i] = type;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return -1;
}

bool SsiPluginBase::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs < mMinInputs || nbInputs > mMaxInputs || nbOutputs != mNbOutputs || pos < 0
        || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR || !isSupportedType(desc.type))
    {
        return false;
    }
    return pos == 0 || desc.type == inOut[0].desc.type;
}

char const* SsiPluginBase::getMetadataString() noexcept
{
    try
    {
        mMetadata = std::string(getPluginName()) + " (namespace " + contract::kPluginNamespace + ", version "
            + contract::kPluginVersion + ", semantics " + std::to_string(contract::kSemanticsVersion)
            + "): " + mSummary + "; " + mAttrs.describe();
        return mMetadata.c_str();
    }
    catch (...)
    {
        return getPluginName();
    }
}

int32_t SsiPluginBase::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return acceptInputs("onShapeChange", in != nullptr && out != nullptr, nbInputs, nbOutputs,
        [in](int32_t i) { return in[i].dims; }, true);
}

int32_t SsiPluginBase::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        if (mNbInputs < 0)
        {
            reportError("enqueue before configurePlugin/onShapeChange: the number of inputs is unknown");
            return -1;
        }
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            reportError("enqueue without tensor descriptions or pointers");
            return -1;
        }
        int64_t const outVolume = volume(outputDesc[0].dims);
        if (outVolume == 0)
        {
            return 0; // empty output (e.g. batch 0): nothing to compute
        }
        ssi::DType type{};
        if (!toKernelType(inputDesc[0].type, type))
        {
            reportError(std::string("input 0 is ") + dataTypeName(inputDesc[0].type)
                + "; only float32 and float16 are supported");
            return -1;
        }
        for (int32_t i = 0; i < mNbInputs; ++i)
        {
            if (inputDesc[i].type != inputDesc[0].type || inputDesc[i].format != TensorFormat::kLINEAR)
            {
                reportError("input " + std::to_string(i) + " is not linear " + dataTypeName(inputDesc[0].type));
                return -1;
            }
            if (inputs[i] == nullptr && volume(inputDesc[i].dims) != 0)
            {
                reportError("input " + std::to_string(i) + " has a null device pointer");
                return -1;
            }
        }
        if (outputDesc[0].type != inputDesc[0].type || outputDesc[0].format != TensorFormat::kLINEAR)
        {
            reportError("output 0 is not linear " + std::string(dataTypeName(inputDesc[0].type)));
            return -1;
        }
        if (outputs[0] == nullptr)
        {
            reportError("output 0 has a null device pointer");
            return -1;
        }
        std::string error;
        if (!launch(inputDesc, outputDesc, inputs, outputs, type, workspace, stream, error))
        {
            reportError(error);
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

IPluginV3* SsiPluginBase::attachToContext(IPluginResourceContext* /* context */) noexcept
{
    return clone();
}

PluginFieldCollection const* SsiPluginBase::getFieldsToSerialize() noexcept
{
    try
    {
        return mAttrs.serialize();
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return nullptr;
}

} // namespace trt
} // namespace ssi
