"""Is there a usable NVIDIA GPU? Asked through the CUDA driver (libcuda) with ctypes, so the
answer does not depend on torch being a CUDA build or on cuda-python being installed."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from ..errors import SSIError
from .trt import DOCKER_HINT


@dataclass(frozen=True)
class GPUInfo:
    available: bool
    reason: str = ""  # why not, when not available
    count: int = 0
    name: str = ""
    driver_version: str = ""  # CUDA version the driver supports, e.g. "13.0"
    compute_capability: str = ""


def _load_libcuda():
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def probe_gpu(loader=None) -> GPUInfo:
    lib = (loader or _load_libcuda)()
    if lib is None:
        return GPUInfo(False, "no NVIDIA driver (libcuda.so.1 not found)")
    if lib.cuInit(0) != 0:
        return GPUInfo(False, "the NVIDIA driver is present but cuInit failed (no GPU visible: "
                              "on Docker pass --gpus all)")
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return GPUInfo(False, "the NVIDIA driver sees no GPU")
    dev = ctypes.c_int(0)
    lib.cuDeviceGet(ctypes.byref(dev), 0)
    buf = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(buf, 256, dev)
    ver = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(ver))
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
    return GPUInfo(True, "", count.value, buf.value.decode(errors="replace"),
                   f"{ver.value // 1000}.{(ver.value % 1000) // 10}", f"{major.value}.{minor.value}")


def require_gpu(what: str = "building a TensorRT engine", probe=None) -> GPUInfo:
    info = (probe or probe_gpu)()
    if not info.available:
        raise SSIError(f"{what} needs an NVIDIA GPU: {info.reason}; run on a machine with a GPU "
                       f"({DOCKER_HINT})")
    return info
