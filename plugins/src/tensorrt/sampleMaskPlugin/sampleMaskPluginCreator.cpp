#include "sampleMaskPlugin/sampleMaskPluginCreator.h"

#include "sampleMaskPlugin/sampleMaskPlugin.h"

namespace ssi
{
namespace trt
{

SampleMaskPluginCreator::SampleMaskPluginCreator()
    : SsiPluginCreatorBase(SampleMaskPlugin::attributes())
{
}

std::unique_ptr<SsiPluginBase> SampleMaskPluginCreator::makePlugin() const
{
    return std::make_unique<SampleMaskPlugin>();
}

} // namespace trt
} // namespace ssi
