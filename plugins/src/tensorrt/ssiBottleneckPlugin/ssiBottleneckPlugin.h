// TensorRT plugin of the SSI op SSIBottleneck: one SSI bottleneck (both masks, conv1 at m1,
// interpolation, conv2 (3x3 stride s, DCN optional) and conv3 at m2, final interpolation with
// conv3's bias, the shortcut and the ReLU) as one layer. 15 inputs (x and the 14 folded
// weights, constant tensors; a part the block lacks is an empty tensor [0]), 3 outputs
// y [N,4p,Ho,Wo], mask1 [N,1,H,W], mask2 [N,1,Ho,Wo]. x and y may be kHWC8 in fp16 (channels
// a multiple of 8), everything else is linear. Kernel: ssi::launchSSIBottleneck.
#pragma once

#include "common/ssiPluginBase.h"

namespace ssi
{
namespace trt
{

class SSIBottleneckPlugin final : public SsiPlugin<SSIBottleneckPlugin>
{
public:
    //! Indices into attributes(), in contract order.
    enum Attr : int32_t
    {
        kStride = 0,
        kDcn = 1,
        kDownsample = 2,
        kSigma1 = 3,
        kSigma2 = 4,
        kMode = 5,
        kGridInterval = 6,
        kSeed = 7,
        kLayer1 = 8,
        kLayer2 = 9,
        kDensity = 10,
    };
    //! Outputs, in contract order.
    enum Output : int32_t
    {
        kOutputY = 0,
        kOutputMask1 = 1,
        kOutputMask2 = 2,
    };
    static AttrTable const& attributes();

    SSIBottleneckPlugin();

    //! y = [N, 4p, Ho, Wo] (4p from conv3_weight, Ho = (H-1)/stride + 1), mask1 = [N,1,H,W],
    //! mask2 = [N,1,Ho,Wo].
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    //! fp32: every tensor linear. fp16: x linear or kHWC8 (Cin % 8 == 0), y in x's format
    //! (kHWC8 only with 4p % 8 == 0), weights and masks linear. One type throughout.
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

    //! Kernel parameters for known x, conv1_weight and conv3_weight dims; `channelsLast`:
    //! x and y are kHWC8 (NHWC).
    ssi::BottleneckParams params(nvinfer1::Dims const& x, nvinfer1::Dims const& conv1Weight,
        nvinfer1::Dims const& conv3Weight, bool channelsLast) const noexcept;

protected:
    bool checkShapes(nvinfer1::Dims const* in, int32_t nbInputs, std::string& error) const override;
    bool launch(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, ssi::DType type, void* workspace, cudaStream_t stream,
        std::string& error) const override;

private:
    //! Ho or Wo of an input extent (3x3 window, padding 1, the block's stride); -1 if unknown.
    int64_t outputExtent(int64_t in) const noexcept;
};

} // namespace trt
} // namespace ssi
