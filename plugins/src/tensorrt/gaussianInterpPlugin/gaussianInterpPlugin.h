// TensorRT plugin of the SSI op GaussianInterp: dense = act(m*f + (1-m)*N/D + bias
// [+ residual]) over a 7x7 Gaussian window, float32 arithmetic.
// Kernel: ssi::launchGaussianInterp.
#pragma once

#include "common/ssiPluginBase.h"

namespace ssi
{
namespace trt
{

class GaussianInterpPlugin final : public SsiPlugin<GaussianInterpPlugin>
{
public:
    //! Indices into attributes(), in contract order.
    enum Attr : int32_t
    {
        kSigma = 0,
        kRelu = 1,
    };
    static AttrTable const& attributes();

    GaussianInterpPlugin();

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    //! Kernel parameters for values of (known) dims `values`.
    ssi::GaussianInterpParams params(nvinfer1::Dims const& values, bool hasResidual) const noexcept;

protected:
    bool checkShapes(nvinfer1::Dims const* in, int32_t nbInputs, std::string& error) const override;
    bool launch(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, ssi::DType type, void* workspace, cudaStream_t stream,
        std::string& error) const override;
};

} // namespace trt
} // namespace ssi
