// Host-emulation build of ../ssi_bottleneck.cu (tests without a GPU; see emulation.h).
#include "../ssi_bottleneck.cu"
