// Tests of libssi_trt_autoregister.so (host only: no GPU, no libnvinfer). One scenario per
// process (the companion registers once, when it is loaded):
//
//   built with SSI_TEST_GLOBAL_REGISTRY=1 (this executable exports getPluginRegistry/getLogger,
//   like a process that links libnvinfer):
//     register COMPANION FAKELIB          both fake creators registered, logger finder handed over
//     preregistered COMPANION FAKELIB     a creator already in the registry is skipped
//     no-registry COMPANION FAKELIB       getPluginRegistry() returns null: nothing, one line
//     missing-library COMPANION           no plugin library: nothing, one line
//     beside COMPANION FAKELIB DIR        no $SSI_PLUGIN_LIBRARY: the library beside the companion
//     real COMPANION LIB NAME...          the real libssi_trt_plugins.so: every creator it
//                                         returns registered, NAMEs among them (namespace ssi)
//   built with SSI_TEST_GLOBAL_REGISTRY=0 (no registry in the global scope):
//     local COMPANION FAKELIB NVINFER     libnvinfer_ssitest.so loaded RTLD_LOCAL (as under
//                                         Triton): found through the loaded objects
//     absent COMPANION FAKELIB            no TensorRT at all: nothing, one line
#include "fakeRegistry.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>

namespace
{
int gFailures = 0;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::cout << "FAIL " << __FILE__ << ":" << __LINE__ << ": " #cond "\n";                                    \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

#if SSI_TEST_GLOBAL_REGISTRY
ssitest::FakeRegistry gRegistry;
ssitest::CountingLogger gLogger;
bool gReturnNull = false;
#endif

//! Loads the companion with stderr captured; returns (ssiAutoRegisterCount(), stderr text).
std::pair<int, std::string> loadCompanion(std::string const& path)
{
    std::fflush(stderr);
    int const saved = dup(2);
    char name[] = "/tmp/ssi_autoreg_XXXXXX";
    int const fd = mkstemp(name);
    dup2(fd, 2);
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    std::ifstream in(name);
    std::stringstream text;
    text << in.rdbuf();
    unlink(name);
    std::cout << "companion said: " << text.str();
    if (handle == nullptr)
    {
        std::cout << "FAIL: dlopen(" << path << "): " << dlerror() << "\n";
        ++gFailures;
        return {-2, text.str()};
    }
    auto count = reinterpret_cast<int (*)()>(dlsym(handle, "ssiAutoRegisterCount"));
    CHECK(count != nullptr);
    return {count != nullptr ? count() : -2, text.str()};
}

bool has(std::string const& text, std::string const& part)
{
    return text.find(part) != std::string::npos;
}

int lines(std::string const& text)
{
    int n = 0;
    for (char c : text)
    {
        n += c == '\n';
    }
    return n;
}

bool registered(ssitest::FakeRegistry const& r, std::string const& name)
{
    for (auto const& e : r.entries)
    {
        if (e.name == name && e.version == "1" && e.ns == "ssi")
        {
            return true;
        }
    }
    return false;
}

[[maybe_unused]] void* openLoaded(std::string const& path)
{
    return dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
}

[[maybe_unused]] bool copyFile(std::string const& from, std::string const& to)
{
    std::ifstream in(from, std::ios::binary);
    std::ofstream out(to, std::ios::binary);
    out << in.rdbuf();
    return in.good() && out.good();
}
} // namespace

#if SSI_TEST_GLOBAL_REGISTRY
extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginRegistry* getPluginRegistry() noexcept
{
    return gReturnNull ? nullptr : &gRegistry;
}

extern "C" __attribute__((visibility("default"))) nvinfer1::ILogger* getLogger() noexcept
{
    return &gLogger;
}
#endif

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::cout << "usage: " << argv[0] << " SCENARIO COMPANION [FAKELIB ...]\n";
        return 2;
    }
    std::string const scenario = argv[1];
    std::string const companion = argv[2];
    std::string const lib = argc > 3 ? argv[3] : "";
    if (!lib.empty())
    {
        setenv("SSI_PLUGIN_LIBRARY", lib.c_str(), 1);
    }
#if SSI_TEST_GLOBAL_REGISTRY
    if (scenario == "register")
    {
        auto const [n, said] = loadCompanion(companion);
        CHECK(n == 2);
        CHECK(gRegistry.entries.size() == 2);
        CHECK(registered(gRegistry, "FakeA") && registered(gRegistry, "FakeB"));
        CHECK(lines(said) == 1 && has(said, "registered 2 SSI plugin creator(s)") && has(said, "ssi::FakeA v1"));
        void* h = openLoaded(lib);
        CHECK(h != nullptr);
        auto finder = h ? reinterpret_cast<nvinfer1::ILoggerFinder* (*) ()>(dlsym(h, "fakeLoggerFinder")) : nullptr;
        CHECK(finder != nullptr && finder() != nullptr && finder()->findLogger() == &gLogger);
    }
    else if (scenario == "preregistered")
    {
        static ssitest::FakeCreator sMine("FakeA", "1", "ssi");
        CHECK(gRegistry.registerCreator(sMine, "ssi"));
        auto const [n, said] = loadCompanion(companion);
        CHECK(n == 1);
        CHECK(gRegistry.entries.size() == 2 && gRegistry.entries[0].creator == &sMine);
        CHECK(registered(gRegistry, "FakeB"));
        CHECK(lines(said) == 1 && has(said, "registered 1 SSI plugin creator(s)")
            && has(said, "already registered: ssi::FakeA v1") && !has(said, "FAILED"));
    }
    else if (scenario == "no-registry")
    {
        gReturnNull = true;
        auto const [n, said] = loadCompanion(companion);
        CHECK(n == -1);
        CHECK(gRegistry.entries.empty());
        CHECK(lines(said) == 1 && has(said, "no TensorRT plugin registry") && has(said, "returned null"));
    }
    else if (scenario == "missing-library")
    {
        setenv("SSI_PLUGIN_LIBRARY", "/nonexistent/libssi_trt_plugins.so", 1);
        auto const [n, said] = loadCompanion(companion);
        CHECK(n == -1);
        CHECK(gRegistry.entries.empty());
        CHECK(lines(said) == 1 && has(said, "cannot load the SSI plugin library /nonexistent/libssi_trt_plugins.so"));
    }
    else if (scenario == "beside" && argc > 4)
    {
        unsetenv("SSI_PLUGIN_LIBRARY");
        std::string const dir = argv[4];
        CHECK(copyFile(companion, dir + "/libssi_trt_autoregister.so"));
        CHECK(copyFile(lib, dir + "/libssi_trt_plugins.so"));
        auto const [n, said] = loadCompanion(dir + "/libssi_trt_autoregister.so");
        CHECK(n == 2);
        CHECK(registered(gRegistry, "FakeA") && registered(gRegistry, "FakeB"));
        CHECK(has(said, "from " + dir + "/libssi_trt_plugins.so"));
    }
    else if (scenario == "real")
    {
        void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
        CHECK(h != nullptr);
        using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*) (int32_t&);
        auto get = h ? reinterpret_cast<GetCreators>(dlsym(h, "getCreators")) : nullptr;
        int32_t total = -1;
        CHECK(get != nullptr && get(total) != nullptr && total > 0);
        auto const [n, said] = loadCompanion(companion);
        CHECK(n == total);
        CHECK(static_cast<int32_t>(gRegistry.entries.size()) == total);
        for (int i = 4; i < argc; ++i)
        {
            CHECK(registered(gRegistry, argv[i]));
        }
        CHECK(lines(said) == 1 && !has(said, "FAILED"));
    }
    else
    {
        std::cout << "unknown scenario " << scenario << "\n";
        return 2;
    }
#else
    if (scenario == "local" && argc > 4)
    {
        CHECK(dlsym(RTLD_DEFAULT, "getPluginRegistry") == nullptr);
        void* nv = dlopen(argv[4], RTLD_NOW | RTLD_LOCAL);
        CHECK(nv != nullptr);
        CHECK(dlsym(RTLD_DEFAULT, "getPluginRegistry") == nullptr);  // not in the global scope
        auto registry = nv ? reinterpret_cast<ssitest::FakeRegistry* (*) ()>(dlsym(nv, "fakeRegistry")) : nullptr;
        CHECK(registry != nullptr);
        auto const [n, said] = loadCompanion(companion);
        CHECK(n == 2);
        CHECK(registry != nullptr && registry()->entries.size() == 2);
        CHECK(registry != nullptr && registered(*registry(), "FakeA") && registered(*registry(), "FakeB"));
        CHECK(has(said, "libnvinfer_ssitest.so"));
    }
    else if (scenario == "absent")
    {
        auto const [n, said] = loadCompanion(companion);
        CHECK(n == -1);
        CHECK(lines(said) == 1 && has(said, "not found: libnvinfer is not loaded"));
    }
    else
    {
        std::cout << "unknown scenario " << scenario << "\n";
        return 2;
    }
#endif
    std::cout << (gFailures == 0 ? "PASS " : "FAILED ") << scenario << "\n";
    return gFailures == 0 ? 0 : 1;
}
