// libssi_trt_autoregister.so: registers the SSI plugin creators with TensorRT's plugin registry
// when it is dlopen'ed, for hosts that load plugin libraries by dlopen alone.
//
// Triton's TensorRT backend (--backend-config=tensorrt,plugins=LIB) only dlopens LIB
// (RTLD_NOW | RTLD_LOCAL, before it creates a runtime); it never calls
// IPluginRegistry::loadLibrary, the one call that reads a library's getCreators(). The plugin
// library itself, libssi_trt_plugins.so, keeps exporting getCreators/setLoggerFinder only (the
// lean runtime, trtexec --dynamicPlugins and version-compatible plans load it that way), and
// this companion, placed beside it, does on load what loadLibrary would do:
//
//   1. find the plugin library: $SSI_PLUGIN_LIBRARY, else libssi_trt_plugins.so in the folder
//      this companion was loaded from (dladdr); dlopen it (kept open for the process' life);
//   2. find TensorRT's getPluginRegistry() without a link-time dependency on libnvinfer:
//      dlsym(RTLD_DEFAULT) (libnvinfer in the global scope: linked by the executable,
//      LD_PRELOAD'ed, or RTLD_GLOBAL), else every loaded object whose name contains
//      "libnvinfer" (libnvinfer.so.N, libnvinfer_lean.so.N, ...), opened with RTLD_NOLOAD:
//      under Triton libnvinfer is a dependency of the RTLD_LOCAL backend library, which
//      RTLD_DEFAULT does not search;
//   3. hand the plugin library a logger finder over TensorRT's getLogger(), then register every
//      creator getCreators() returns under its own namespace, skipping one already registered
//      (the same creator loaded by loadLibrary first);
//   4. print one line on stderr: what was registered, or why nothing was.
//
// The only exported symbol is ssiAutoRegisterCount() (exports.map): how many creators the
// load registered (-1: nothing could be registered), for tests and diagnostics.
#include <NvInferRuntime.h>

#include <dlfcn.h>
#include <link.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace
{

using GetCreatorsFn = nvinfer1::IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinderFn = void (*)(nvinfer1::ILoggerFinder*);
using GetRegistryFn = nvinfer1::IPluginRegistry* (*) ();
using GetLoggerFn = nvinfer1::ILogger* (*) ();

constexpr char const* kTag = "[ssi_trt_autoregister]";
constexpr char const* kPluginLibrary = "libssi_trt_plugins.so";
constexpr char const* kEnvLibrary = "SSI_PLUGIN_LIBRARY";

int gRegistered = -1;

class GlobalLoggerFinder final : public nvinfer1::ILoggerFinder
{
public:
    explicit GlobalLoggerFinder(GetLoggerFn fn)
        : mFn(fn)
    {
    }
    nvinfer1::ILogger* findLogger() noexcept override
    {
        return mFn != nullptr ? mFn() : nullptr;
    }

private:
    GetLoggerFn mFn;
};

std::string selfDirectory()
{
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&selfDirectory), &info) == 0 || info.dli_fname == nullptr)
    {
        return ".";
    }
    std::string path(info.dli_fname);
    auto const slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

struct NvinferObjects
{
    std::vector<std::string> names;
};

int collectNvinfer(dl_phdr_info* info, size_t, void* data)
{
    if (info->dlpi_name != nullptr && std::strstr(info->dlpi_name, "libnvinfer") != nullptr)
    {
        static_cast<NvinferObjects*>(data)->names.emplace_back(info->dlpi_name);
    }
    return 0;
}

//! getPluginRegistry and getLogger of the TensorRT library loaded in this process (null if none).
std::pair<GetRegistryFn, GetLoggerFn> findTensorRT(std::string& where)
{
    if (auto fn = reinterpret_cast<GetRegistryFn>(dlsym(RTLD_DEFAULT, "getPluginRegistry")))
    {
        where = "the global scope";
        return {fn, reinterpret_cast<GetLoggerFn>(dlsym(RTLD_DEFAULT, "getLogger"))};
    }
    NvinferObjects objects;
    dl_iterate_phdr(collectNvinfer, &objects);
    for (auto const& name : objects.names)
    {
        void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
        if (handle == nullptr)
        {
            continue;
        }
        if (auto fn = reinterpret_cast<GetRegistryFn>(dlsym(handle, "getPluginRegistry")))
        {
            where = name;
            return {fn, reinterpret_cast<GetLoggerFn>(dlsym(handle, "getLogger"))};
        }
        dlclose(handle);  // balances the RTLD_NOLOAD open; the library stays loaded
    }
    return {nullptr, nullptr};
}

struct CreatorId
{
    char const* name{nullptr};
    char const* version{nullptr};
    char const* ns{nullptr};
};

//! Name, version and namespace of a creator whose interface this file knows (V3One).
bool identify(nvinfer1::IPluginCreatorInterface* creator, CreatorId& id)
{
    auto const info = creator->getInterfaceInfo();
    if (info.kind == nullptr || std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0)
    {
        return false;
    }
    auto* v3 = static_cast<nvinfer1::IPluginCreatorV3One*>(creator);
    id = {v3->getPluginName(), v3->getPluginVersion(), v3->getPluginNamespace()};
    return id.name != nullptr && id.version != nullptr && id.ns != nullptr;
}

void registerAll()
{
    char const* env = std::getenv(kEnvLibrary);
    std::string const library = (env != nullptr && *env != '\0') ? std::string(env)
                                                                  : selfDirectory() + "/" + kPluginLibrary;
    void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        char const* err = dlerror();
        std::fprintf(stderr, "%s cannot load the SSI plugin library %s (%s): no SSI plugin registered; "
                     "keep %s beside this library or set %s\n",
            kTag, library.c_str(), err != nullptr ? err : "unknown error", kPluginLibrary, kEnvLibrary);
        return;
    }
    auto getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(handle, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinderFn>(dlsym(handle, "setLoggerFinder"));
    if (getCreators == nullptr)
    {
        std::fprintf(stderr, "%s %s exports no getCreators(): not an SSI plugin library; no SSI plugin "
                     "registered\n", kTag, library.c_str());
        return;
    }
    std::string where;
    auto const [getRegistry, getLogger] = findTensorRT(where);
    nvinfer1::IPluginRegistry* registry = getRegistry != nullptr ? getRegistry() : nullptr;
    if (registry == nullptr)
    {
        std::fprintf(stderr, "%s no TensorRT plugin registry in this process (getPluginRegistry() %s): no SSI "
                     "plugin registered from %s; load this library after TensorRT (Triton: "
                     "--backend-config=tensorrt,plugins=<this library>; elsewhere "
                     "IPluginRegistry::loadLibrary(\"%s\"))\n",
            kTag, getRegistry == nullptr ? "not found: libnvinfer is not loaded" : "returned null", library.c_str(),
            library.c_str());
        return;
    }
    if (setLoggerFinder != nullptr && getLogger != nullptr)
    {
        static GlobalLoggerFinder sFinder(getLogger);
        setLoggerFinder(&sFinder);
    }
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(count);
    int registered = 0;
    std::string names;
    std::string skipped;
    std::string failed;
    for (int32_t i = 0; creators != nullptr && i < count; ++i)
    {
        CreatorId id;
        if (creators[i] == nullptr || !identify(creators[i], id))
        {
            failed += failed.empty() ? "" : ", ";
            failed += "#" + std::to_string(i) + " (not an IPluginCreatorV3One)";
            continue;
        }
        std::string const label = std::string(id.ns) + "::" + id.name + " v" + id.version;
        if (registry->getCreator(id.name, id.version, id.ns) != nullptr)
        {
            skipped += (skipped.empty() ? "" : ", ") + label;
            continue;
        }
        if (registry->registerCreator(*creators[i], id.ns))
        {
            ++registered;
            names += (names.empty() ? "" : ", ") + label;
        }
        else
        {
            failed += (failed.empty() ? "" : ", ") + label;
        }
    }
    gRegistered = registered;
    std::fprintf(stderr, "%s registered %d SSI plugin creator(s) from %s with the registry of %s%s%s%s%s%s\n", kTag,
        registered, library.c_str(), where.c_str(), names.empty() ? "" : ": ", names.c_str(),
        skipped.empty() ? "" : "; already registered: ", skipped.c_str(),
        failed.empty() ? "" : (std::string("; FAILED: ") + failed).c_str());
}

struct AutoRegister
{
    AutoRegister()
    {
        registerAll();
    }
};

AutoRegister const gAutoRegister;

} // namespace

extern "C" __attribute__((visibility("default"))) int ssiAutoRegisterCount()
{
    return gRegistered;
}
