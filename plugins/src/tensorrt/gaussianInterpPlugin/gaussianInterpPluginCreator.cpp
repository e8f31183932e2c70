#include "gaussianInterpPlugin/gaussianInterpPluginCreator.h"

#include "gaussianInterpPlugin/gaussianInterpPlugin.h"

namespace ssi
{
namespace trt
{

GaussianInterpPluginCreator::GaussianInterpPluginCreator()
    : SsiPluginCreatorBase(GaussianInterpPlugin::attributes())
{
}

std::unique_ptr<SsiPluginBase> GaussianInterpPluginCreator::makePlugin() const
{
    return std::make_unique<GaussianInterpPlugin>();
}

} // namespace trt
} // namespace ssi
