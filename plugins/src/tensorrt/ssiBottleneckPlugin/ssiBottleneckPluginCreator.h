// Creator of the SSIBottleneck plugin (name, version, namespace and fields from the contract).
#pragma once

#include "common/ssiPluginCreatorBase.h"

namespace ssi
{
namespace trt
{

class SSIBottleneckPluginCreator final : public SsiPluginCreatorBase
{
public:
    SSIBottleneckPluginCreator();

protected:
    std::unique_ptr<SsiPluginBase> makePlugin() const override;
};

} // namespace trt
} // namespace ssi
