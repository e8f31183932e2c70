// What the SSI plugins share: IPluginV3 with the V3One core, build and runtime
// capabilities, the op's outputs (one, or the contract's kNumOutputs), every input and output
// in one type (kFLOAT or kHALF, linear), fields from the op contract, and the checks around
// enqueue. Each op's plugin adds its output shapes, shape checks, workspace size and kernel
// launch (and, where it takes other formats, its own supportsFormatCombination and enqueue).
#pragma once

#include <exception>
#include <string>

#include "common/pluginFields.h"
#include "common/pluginTensors.h"
#include "ssi/kernels.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace ssi
{
namespace trt
{

class SsiPluginBase : public nvinfer1::IPluginV3,
                      public nvinfer1::IPluginV3OneCore,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime
{
public:
    //! `summary`: one sentence on what the op computes, for getMetadataString();
    //! `nbOutputs`: the op's number of outputs (every one in the inputs' type).
    SsiPluginBase(AttrTable const& table, int32_t minInputs, int32_t maxInputs, char const* summary,
        int32_t nbOutputs = 1);
    SsiPluginBase(SsiPluginBase const&) = default;
    SsiPluginBase& operator=(SsiPluginBase const&) = delete;
    ~SsiPluginBase() override = default;

    //! Parse the creator's fields; false with a reason in `error`.
    bool setFields(nvinfer1::PluginFieldCollection const* fc, std::string& error)
    {
        return mAttrs.parse(fc, error);
    }
    //! Name of the layer (node) the plugin was created for, used in messages.
    void setLayerName(char const* name)
    {
        mLayerName = name != nullptr ? name : "";
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override
    {
        return mNbOutputs;
    }
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

protected:
    //! Check input dims (extents may be -1 = not known yet) against each other and the
    //! attributes; false with a reason.
    virtual bool checkShapes(nvinfer1::Dims const* in, int32_t nbInputs, std::string& error) const = 0;

    //! Launch the kernel on concrete, checked dims; false with a reason (no GPU, launch error).
    virtual bool launch(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, ssi::DType type, void* workspace, cudaStream_t stream,
        std::string& error) const = 0;

    //! Number of inputs and outputs acceptable; false with a reason.
    bool checkCounts(int32_t nbInputs, int32_t nbOutputs, std::string& error) const;

    //! configurePlugin() and onShapeChange(): counts, then checkShapes() on each input's dims
    //! (`dimsOf(i)`); `requireKnown`: every extent must be known and fit in int32. On success
    //! remembers the input count. 0 or -1, errors reported.
    template <typename DimsOf>
    int32_t acceptInputs(char const* caller, bool haveDescs, int32_t nbInputs, int32_t nbOutputs,
        DimsOf dimsOf, bool requireKnown) noexcept;

    //! Log "<op> '<layer>': <message>" as an error.
    void reportError(std::string const& message) const noexcept;

    //! Text of a CUDA error for messages.
    static std::string cudaErrorText(cudaError_t status);

    PluginAttributes mAttrs;
    int32_t mMinInputs;
    int32_t mMaxInputs;
    int32_t mNbOutputs;
    int32_t mNbInputs{-1}; //!< known after configurePlugin() or onShapeChange()
    char const* mSummary;
    std::string mLayerName;
    std::string mMetadata;
};

//! The plugin classes derive from this: it gives them clone() as a copy of the derived type.
template <typename Derived>
class SsiPlugin : public SsiPluginBase
{
public:
    using SsiPluginBase::SsiPluginBase;

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new Derived(static_cast<Derived const&>(*this));
        }
        catch (std::exception const& e)
        {
            reportError(std::string("clone failed: ") + e.what());
        }
        return nullptr;
    }
};

} // namespace trt
} // namespace ssi
