#include "sparseConv2dPlugin/sparseConv2dPluginCreator.h"

#include "sparseConv2dPlugin/sparseConv2dPlugin.h"

namespace ssi
{
namespace trt
{

SparseConv2dPluginCreator::SparseConv2dPluginCreator()
    : SsiPluginCreatorBase(SparseConv2dPlugin::attributes())
{
}

std::unique_ptr<SsiPluginBase> SparseConv2dPluginCreator::makePlugin() const
{
    return std::make_unique<SparseConv2dPlugin>();
}

} // namespace trt
} // namespace ssi
