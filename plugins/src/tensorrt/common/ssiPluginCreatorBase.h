// What the SSI plugin creators share (IPluginCreatorV3One): name, version and
// namespace from the contract, field names from the op's attribute table, and
// createPlugin() that rejects bad fields with a logged one-line reason and nullptr.
#pragma once

#include "common/pluginFields.h"
#include "common/ssiPluginBase.h"

#include <NvInferRuntime.h>

#include <memory>

namespace ssi
{
namespace trt
{

class SsiPluginCreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    explicit SsiPluginCreatorBase(AttrTable const& table);
    ~SsiPluginCreatorBase() override = default;

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

protected:
    //! A plugin of this creator's op with default attributes.
    virtual std::unique_ptr<SsiPluginBase> makePlugin() const = 0;

private:
    AttrTable mTable;
    FieldNames mFieldNames;
};

} // namespace trt
} // namespace ssi
