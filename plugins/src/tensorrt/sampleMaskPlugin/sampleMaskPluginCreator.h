// Creator of the SampleMask plugin (name, version, namespace and fields from the contract).
#pragma once

#include "common/ssiPluginCreatorBase.h"

namespace ssi
{
namespace trt
{

class SampleMaskPluginCreator final : public SsiPluginCreatorBase
{
public:
    SampleMaskPluginCreator();

protected:
    std::unique_ptr<SsiPluginBase> makePlugin() const override;
};

} // namespace trt
} // namespace ssi
