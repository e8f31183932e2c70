// Creator of the SparseConv2d plugin (name, version, namespace and fields from the contract).
#pragma once

#include "common/ssiPluginCreatorBase.h"

namespace ssi
{
namespace trt
{

class SparseConv2dPluginCreator final : public SsiPluginCreatorBase
{
public:
    SparseConv2dPluginCreator();

protected:
    std::unique_ptr<SsiPluginBase> makePlugin() const override;
};

} // namespace trt
} // namespace ssi
