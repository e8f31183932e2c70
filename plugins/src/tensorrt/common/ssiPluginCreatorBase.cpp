#include "common/ssiPluginCreatorBase.h"

#include "common/pluginLogger.h"
#include "ssi/contract.h"

#include <exception>
#include <string>

using namespace nvinfer1;

namespace ssi
{
namespace trt
{

SsiPluginCreatorBase::SsiPluginCreatorBase(AttrTable const& table)
    : mTable(table)
    , mFieldNames(table)
{
}

IPluginV3* SsiPluginCreatorBase::createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
{
    std::string const who
        = std::string(mTable.opName) + (name != nullptr && name[0] != '\0' ? " '" + std::string(name) + "'" : "");
    try
    {
        if (phase != TensorRTPhase::kBUILD && phase != TensorRTPhase::kRUNTIME)
        {
            logError(who + ": cannot create the plugin: unknown TensorRT phase "
                + std::to_string(static_cast<int32_t>(phase)));
            return nullptr;
        }
        std::unique_ptr<SsiPluginBase> plugin = makePlugin();
        plugin->setLayerName(name);
        std::string error;
        if (!plugin->setFields(fc, error))
        {
            logError("cannot create plugin " + who + ": " + error);
            return nullptr;
        }
        return plugin.release();
    }
    catch (std::exception const& e)
    {
        logError("cannot create plugin " + who + ": " + e.what());
    }
    catch (...)
    {
        logError("cannot create plugin " + who + ": unknown exception");
    }
    return nullptr;
}

PluginFieldCollection const* SsiPluginCreatorBase::getFieldNames() noexcept
{
    return mFieldNames.collection();
}

char const* SsiPluginCreatorBase::getPluginName() const noexcept
{
    return mTable.opName;
}

char const* SsiPluginCreatorBase::getPluginVersion() const noexcept
{
    return contract::kPluginVersion;
}

char const* SsiPluginCreatorBase::getPluginNamespace() const noexcept
{
    return contract::kPluginNamespace;
}

} // namespace trt
} // namespace ssi
