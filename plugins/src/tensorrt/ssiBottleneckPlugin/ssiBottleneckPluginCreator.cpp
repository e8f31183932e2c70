#include "ssiBottleneckPlugin/ssiBottleneckPluginCreator.h"

#include "ssiBottleneckPlugin/ssiBottleneckPlugin.h"

namespace ssi
{
namespace trt
{

SSIBottleneckPluginCreator::SSIBottleneckPluginCreator()
    : SsiPluginCreatorBase(SSIBottleneckPlugin::attributes())
{
}

std::unique_ptr<SsiPluginBase> SSIBottleneckPluginCreator::makePlugin() const
{
    return std::make_unique<SSIBottleneckPlugin>();
}

} // namespace trt
} // namespace ssi
