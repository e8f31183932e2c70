// A stand-in for libssi_trt_plugins.so in the tests of libssi_trt_autoregister.so: the same
// two entry points, two V3One creators (ssi::FakeA v1, ssi::FakeB v1), and
// fakeLoggerFinder() to see which logger finder the companion handed over.
#include "fakeRegistry.h"

namespace
{
nvinfer1::ILoggerFinder* gFinder{nullptr};
}

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& n)
{
    static ssitest::FakeCreator sA("FakeA", "1", "ssi");
    static ssitest::FakeCreator sB("FakeB", "1", "ssi");
    static nvinfer1::IPluginCreatorInterface* const kCreators[] = {&sA, &sB};
    n = 2;
    return kCreators;
}

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    gFinder = finder;
}

extern "C" __attribute__((visibility("default"))) nvinfer1::ILoggerFinder* fakeLoggerFinder()
{
    return gFinder;
}
