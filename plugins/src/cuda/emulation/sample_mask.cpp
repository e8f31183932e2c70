// Host-emulation build of ../sample_mask.cu (tests without a GPU; see emulation.h).
#include "../sample_mask.cu"
