// Host-emulation build of ../capi.cu (tests without a GPU; see emulation.h).
#include "../capi.cu"
