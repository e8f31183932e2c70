// A plugin registry and creators that stand in for TensorRT's in the tests of
// libssi_trt_autoregister.so: the registry records what is registered (name, version,
// namespace), and refuses a duplicate as TensorRT does.
#pragma once

#include <NvInferRuntime.h>

#include <cstring>
#include <string>
#include <vector>

namespace ssitest
{

class FakeCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    FakeCreator(char const* name, char const* version, char const* ns)
        : mName(name)
        , mVersion(version)
        , mNamespace(ns)
    {
    }
    nvinfer1::IPluginV3* createPlugin(
        char const*, nvinfer1::PluginFieldCollection const*, nvinfer1::TensorRTPhase) noexcept override
    {
        return nullptr;
    }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mFields;
    }
    char const* getPluginName() const noexcept override
    {
        return mName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return mVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return mNamespace;
    }

private:
    char const* mName;
    char const* mVersion;
    char const* mNamespace;
    nvinfer1::PluginFieldCollection mFields{0, nullptr};
};

struct Registered
{
    std::string name, version, ns;
    nvinfer1::IPluginCreatorInterface* creator;
};

class FakeRegistry final : public nvinfer1::IPluginRegistry
{
public:
    std::vector<Registered> entries;
    std::vector<nvinfer1::IPluginCreatorInterface*> pointers;

#if NV_TENSORRT_MAJOR < 11
    bool registerCreator(nvinfer1::IPluginCreator&, nvinfer1::AsciiChar const* const) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    nvinfer1::IPluginCreator* getPluginCreator(nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const,
        nvinfer1::AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(nvinfer1::IPluginCreator const&) noexcept override
    {
        return false;
    }
#endif
    void setErrorRecorder(nvinfer1::IErrorRecorder* const) noexcept override {}
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(nvinfer1::AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(nvinfer1::IPluginCreatorInterface& creator, nvinfer1::AsciiChar const* const ns) noexcept override
    {
        auto* v3 = static_cast<nvinfer1::IPluginCreatorV3One*>(&creator);
        if (find(v3->getPluginName(), v3->getPluginVersion(), ns) != nullptr)
        {
            return false;
        }
        entries.push_back({v3->getPluginName(), v3->getPluginVersion(), ns, &creator});
        pointers.push_back(&creator);
        return true;
    }
    nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        *n = static_cast<int32_t>(pointers.size());
        return pointers.data();
    }
    nvinfer1::IPluginCreatorInterface* getCreator(nvinfer1::AsciiChar const* const name,
        nvinfer1::AsciiChar const* const version, nvinfer1::AsciiChar const* const ns) noexcept override
    {
        return find(name, version, ns);
    }
    bool deregisterCreator(nvinfer1::IPluginCreatorInterface const&) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginResource* acquirePluginResource(nvinfer1::AsciiChar const*, nvinfer1::IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(nvinfer1::AsciiChar const*) noexcept override
    {
        return 0;
    }
    nvinfer1::IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override
    {
        return getAllCreators(n);
    }

private:
    nvinfer1::IPluginCreatorInterface* find(char const* name, char const* version, char const* ns)
    {
        for (auto const& e : entries)
        {
            if (e.name == name && e.version == version && e.ns == (ns != nullptr ? ns : ""))
            {
                return e.creator;
            }
        }
        return nullptr;
    }
};

//! A logger that counts what it is given.
class CountingLogger final : public nvinfer1::ILogger
{
public:
    int messages{0};
    void log(Severity, nvinfer1::AsciiChar const*) noexcept override
    {
        ++messages;
    }
};

} // namespace ssitest
