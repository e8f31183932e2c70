// Host-emulation build of ../sparse_conv2d.cu (tests without a GPU; see emulation.h).
#include "../sparse_conv2d.cu"
