// TensorRT plugin of the SSI op SparseConv2d: y[N,Cout,Ho,Wo] = act(conv(x) + bias) where
// mask > 0, exactly 0 elsewhere; optional deformable-v1 offsets as a fifth input.
// Kernel: ssi::launchSparseConv2d.
#pragma once

#include "common/ssiPluginBase.h"

namespace ssi
{
namespace trt
{

class SparseConv2dPlugin final : public SsiPlugin<SparseConv2dPlugin>
{
public:
    //! Indices into attributes(), in contract order.
    enum Attr : int32_t
    {
        kStrideH = 0,
        kStrideW = 1,
        kPadH = 2,
        kPadW = 3,
        kDilationH = 4,
        kDilationW = 5,
        kGroups = 6,
        kRelu = 7,
    };
    static AttrTable const& attributes();

    SparseConv2dPlugin();

    //! y = [N, Cout, Ho, Wo]: N from x, Cout from the weight, Ho/Wo by conv arithmetic on x's H/W.
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    //! Kernel parameters for known x and weight dims (Ho/Wo computed, not read from the mask).
    ssi::SparseConvParams params(nvinfer1::Dims const& x, nvinfer1::Dims const& weight, bool deformable) const noexcept;

protected:
    bool checkShapes(nvinfer1::Dims const* in, int32_t nbInputs, std::string& error) const override;
    bool launch(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, ssi::DType type, void* workspace, cudaStream_t stream,
        std::string& error) const override;

private:
    //! Ho (axis 2) or Wo (axis 3) of x's extent `in` and kernel extent `kernel`; -1 if unknown.
    int64_t outputExtent(int32_t axis, int64_t in, int64_t kernel) const noexcept;
};

} // namespace trt
} // namespace ssi
