// Error reporting and version of the CPU twin library.
#include <string>

#include "common.h"
#include "ssi/cpu_twins.h"

namespace ssi {
namespace cpu {
namespace {
thread_local std::string gLastError;
}
void setError(std::string msg) { gLastError = std::move(msg); }
}  // namespace cpu
}  // namespace ssi

extern "C" int32_t ssi_cpu_abi_version(void) { return SSI_CPU_ABI_VERSION; }
extern "C" char const* ssi_cpu_last_error(void) { return ssi::cpu::gLastError.c_str(); }
