"""Finding the TensorRT Python module and saying clearly what is missing.

Three flavours exist: the full library (``tensorrt``: builder, ONNX parser, runtime), the lean
runtime (``tensorrt_lean``; the 11.x PyPI wheel calls its module ``tensorrt_lean_bindings``),
which only deserialises version-compatible plans and has a plugin registry, and nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ..errors import SSIError

DOCKER_HINT = ("use the Docker image (docs/docker.md: `docker build -t ssi-deploy .` then "
               "`docker run --gpus all ...`) or install TensorRT from NVIDIA's tar/deb packages")

# (module name, flavour) in order of preference
FULL_MODULES = ("tensorrt",)
LEAN_MODULES = ("tensorrt_lean", "tensorrt_lean_bindings")


@dataclass(frozen=True)
class TensorRTModule:
    module: ModuleType
    flavour: str  # "full" or "lean"
    name: str

    @property
    def version(self) -> str:
        return str(getattr(self.module, "__version__", "unknown"))

    @property
    def major(self) -> int:
        try:
            return int(self.version.split(".")[0])
        except ValueError:
            return 0


IMPORT_ERRORS: dict[str, str] = {}  # module name -> why it did not import (not "not installed")


def _try_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:  # the module is there but something it needs is not
            IMPORT_ERRORS[name] = " ".join(str(e).split())
        return None
    except Exception as e:  # an OSError/RuntimeError from missing shared libraries
        IMPORT_ERRORS[name] = " ".join(str(e).split())[:200]
        return None


def _broken_hint() -> str:
    broken = [f"`{n}` is installed but does not import ({why})" for n, why in IMPORT_ERRORS.items()]
    return ("; " + "; ".join(broken)) if broken else ""


def find_tensorrt(allow_lean: bool = True) -> TensorRTModule | None:
    """The best TensorRT module present, or None."""
    IMPORT_ERRORS.clear()
    for name in FULL_MODULES:
        mod = _try_import(name)
        if mod is not None and hasattr(mod, "Builder") and hasattr(mod, "OnnxParser"):
            return TensorRTModule(mod, "full", name)
        if mod is not None and hasattr(mod, "Runtime") and allow_lean:
            # a runtime-only `tensorrt` module (no builder): treat it as lean
            return TensorRTModule(mod, "lean", name)
    if allow_lean:
        for name in LEAN_MODULES:
            mod = _try_import(name)
            if mod is not None and hasattr(mod, "Runtime"):
                return TensorRTModule(mod, "lean", name)
    return None


def require_builder() -> TensorRTModule:
    """The full TensorRT library (builder + ONNX parser), or an SSIError saying how to get it."""
    found = find_tensorrt(allow_lean=True)
    if found is None:
        raise SSIError(f"building an engine needs TensorRT (10.x or 11.x, Python module "
                       f"`tensorrt`), which is not installed{_broken_hint()}: {DOCKER_HINT}")
    if found.flavour != "full":
        raise SSIError(f"building an engine needs the full TensorRT library with its builder and "
                       f"ONNX parser; only the lean runtime {found.version} ({found.name}) is "
                       f"installed: {DOCKER_HINT}")
    if found.major < 10:
        raise SSIError(f"TensorRT {found.version} is too old (10.x or 11.x needed): {DOCKER_HINT}")
    return found


def require_runtime() -> TensorRTModule:
    """The full library or the lean runtime, or an SSIError saying how to get one."""
    found = find_tensorrt(allow_lean=True)
    if found is None:
        raise SSIError(f"running a TensorRT engine needs TensorRT (Python module `tensorrt`, or "
                       f"`tensorrt_lean` for version-compatible plans), which is not installed"
                       f"{_broken_hint()}: {DOCKER_HINT}")
    return found
