// Entry points of libssi_trt_plugins.so, the only two symbols it exports (exports.map):
// TensorRT's plugin registry (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins,
// plugins serialized into version-compatible plans) calls getCreators() and
// setLoggerFinder(). The library does not depend on libnvinfer.
#include "common/pluginLogger.h"
#include "gaussianInterpPlugin/gaussianInterpPluginCreator.h"
#include "sampleMaskPlugin/sampleMaskPluginCreator.h"
#include "sparseConv2dPlugin/sparseConv2dPluginCreator.h"
#include "ssiBottleneckPlugin/ssiBottleneckPluginCreator.h"

#include <NvInferRuntime.h>

#include <cstdint>

extern "C" TENSORRTAPI nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static ssi::trt::SampleMaskPluginCreator sSampleMask;
    static ssi::trt::SparseConv2dPluginCreator sSparseConv2d;
    static ssi::trt::GaussianInterpPluginCreator sGaussianInterp;
    static ssi::trt::SSIBottleneckPluginCreator sSSIBottleneck;
    static nvinfer1::IPluginCreatorInterface* const kCreators[]
        = {&sSampleMask, &sSparseConv2d, &sGaussianInterp, &sSSIBottleneck};
    nbCreators = static_cast<int32_t>(sizeof(kCreators) / sizeof(kCreators[0]));
    return kCreators;
}

extern "C" TENSORRTAPI void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    ssi::trt::setLoggerFinder(finder);
}
