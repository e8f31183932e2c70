// libnvinfer_ssitest.so: a stand-in for libnvinfer loaded RTLD_LOCAL (as under Triton, where
// libnvinfer is a dependency of the backend library): getPluginRegistry() and getLogger() are
// not in the global scope, and the companion must find them through the loaded objects.
#include "fakeRegistry.h"

namespace
{
ssitest::FakeRegistry gRegistry;
ssitest::CountingLogger gLogger;
} // namespace

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginRegistry* getPluginRegistry() noexcept
{
    return &gRegistry;
}

extern "C" __attribute__((visibility("default"))) nvinfer1::ILogger* getLogger() noexcept
{
    return &gLogger;
}

extern "C" __attribute__((visibility("default"))) ssitest::FakeRegistry* fakeRegistry()
{
    return &gRegistry;
}
