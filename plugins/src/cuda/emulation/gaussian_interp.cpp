// Host-emulation build of ../gaussian_interp.cu (tests without a GPU; see emulation.h).
#include "../gaussian_interp.cu"
