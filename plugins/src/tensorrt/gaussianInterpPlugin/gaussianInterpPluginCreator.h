// Creator of the GaussianInterp plugin (name, version, namespace and fields from the contract).
#pragma once

#include "common/ssiPluginCreatorBase.h"

namespace ssi
{
namespace trt
{

class GaussianInterpPluginCreator final : public SsiPluginCreatorBase
{
public:
    GaussianInterpPluginCreator();

protected:
    std::unique_ptr<SsiPluginBase> makePlugin() const override;
};

} // namespace trt
} // namespace ssi
