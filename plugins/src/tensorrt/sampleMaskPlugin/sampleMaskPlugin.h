// TensorRT plugin of the SSI op SampleMask: mask[N,1,H,W] in [0,1] from sampling logits
// (threshold, stochastic or official mode, grid prior). Kernel: ssi::launchSampleMask.
#pragma once

#include "common/ssiPluginBase.h"

namespace ssi
{
namespace trt
{

class SampleMaskPlugin final : public SsiPlugin<SampleMaskPlugin>
{
public:
    //! Indices into attributes(), in contract order.
    enum Attr : int32_t
    {
        kMode = 0,
        kGridInterval = 1,
        kSeed = 2,
        kLayer = 3,
    };
    static AttrTable const& attributes();

    SampleMaskPlugin();

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    //! Kernel parameters for logits of (known) dims `logits`.
    ssi::SampleMaskParams params(nvinfer1::Dims const& logits) const noexcept;

protected:
    bool checkShapes(nvinfer1::Dims const* in, int32_t nbInputs, std::string& error) const override;
    bool launch(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, ssi::DType type, void* workspace, cudaStream_t stream,
        std::string& error) const override;
};

} // namespace trt
} // namespace ssi
