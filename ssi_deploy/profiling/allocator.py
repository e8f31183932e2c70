"""Keep freed memory in the process while timing (glibc malloc), for both sides alike.

glibc returns large freed blocks to the kernel (blocks above the mmap threshold are unmapped,
the heap top is trimmed), so every forward pass that allocates a fresh feature map of a few
MB touches new pages again: one page fault per 4 KiB. In a virtual machine that backs guest
memory lazily (Firecracker here) a fault on a page the host has not backed yet costs about
20 us: measured here, the stem's ReLU and max-pool of a 512x512 input took 50-75 ms instead of
0.6-1 ms on some passes, and each block's output by the same amount, which made the
run-to-run spread larger than the effect being measured. Intel's PyTorch CPU tuning guide
gives the same advice for the same reason (jemalloc or tcmalloc); glibc's own knobs need no
extra library: mmap threshold at its maximum (32 MiB on 64-bit, so feature maps come from the
heap) and no trimming (freed memory stays mapped and is reused).

``keep_freed_memory()`` sets them once for the whole process: the SSI model and its dense
twin are timed under the same allocator. Timing tools call it (``scripts/bench_cpu.py``,
``ssi-deploy profile``); nothing else in ssi-deploy changes allocator settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_NEVER = (1 << 31) - 1  # an int: mallopt takes one

_state: str | None = None


def keep_freed_memory() -> str:
    """Configure glibc malloc to keep freed memory (see the module doc); returns what the
    allocator now does, in words, for reports: "glibc malloc: ..." or why nothing changed."""
    global _state
    if _state is not None:
        return _state
    libc = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            libc = None
    if libc is None or not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        _state = "system allocator unchanged (not glibc)"
        return _state
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_NEVER) == 1 and ok
    _state = ("glibc malloc: mmap threshold 32 MiB, no trim (freed memory reused)" if ok
              else "glibc malloc unchanged (mallopt refused)")
    return _state
