"""`ssi-deploy doctor`: what this machine can do with ssi-deploy, one line per check, each
failure with what to do about it."""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass

from .errors import SSIError

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    fix: str = ""

    def line(self) -> str:
        s = f"{self.status:<5} {self.name:<15} {self.detail}"
        return s + (f" -> {self.fix}" if self.fix and self.status != OK else "")


def _docker_hint() -> str:
    from .tensorrt.trt import DOCKER_HINT
    return DOCKER_HINT


def check_python() -> Check:
    v = platform.python_version()
    if sys.version_info < (3, 10):
        return Check("python", FAIL, v, "ssi-deploy needs Python 3.10 or newer")
    return Check("python", OK, f"{v} ({sys.executable})")


def check_torch() -> Check:
    try:
        torch = importlib.import_module("torch")
    except Exception as e:
        return Check("torch", FAIL, f"not importable ({type(e).__name__})",
                     "pip install torch (a CUDA build for GPU buffers)")
    cuda = getattr(torch.version, "cuda", None)
    if cuda is None:
        return Check("torch", WARN, f"{torch.__version__}, CPU-only build",
                     "for TensorRT runs install a CUDA build of torch or cuda-python "
                     "(pip install cuda-python)")
    if not torch.cuda.is_available():
        return Check("torch", WARN, f"{torch.__version__}, CUDA {cuda}, but no CUDA device visible",
                     "check the driver (nvidia-smi); in Docker pass --gpus all")
    return Check("torch", OK, f"{torch.__version__}, CUDA {cuda}, {torch.cuda.device_count()} device(s)")


def check_gpu(probe=None) -> Check:
    from .tensorrt.gpu import probe_gpu
    info = (probe or probe_gpu)()
    if not info.available:
        return Check("gpu", FAIL, info.reason,
                     "TensorRT builds and runs need an NVIDIA GPU and driver (docker run --gpus all)")
    return Check("gpu", OK, f"{info.name} (sm {info.compute_capability}), driver supports CUDA "
                            f"{info.driver_version}, {info.count} device(s)")


def check_cuda_python() -> Check:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            importlib.import_module(name)
            return Check("cuda-python", OK, f"{name} importable")
        except Exception:
            continue
    return Check("cuda-python", WARN, "not installed (optional: a CUDA build of torch also "
                                      "provides the device buffers for engine runs)",
                 "pip install cuda-python if torch has no CUDA")


def check_tensorrt(finder=None) -> tuple[Check, object]:
    from .tensorrt.trt import IMPORT_ERRORS, find_tensorrt
    found = (finder or find_tensorrt)()
    if found is None:
        broken = "; ".join(f"`{n}` does not import: {why}" for n, why in IMPORT_ERRORS.items())
        return Check("tensorrt", FAIL, "none (no `tensorrt` or lean runtime module"
                     + (f"; {broken}" if broken else "") + ")", _docker_hint()), None
    if found.flavour == "lean":
        return Check("tensorrt", WARN, f"lean runtime {found.version} ({found.name}): loads "
                                       f"version-compatible plans, cannot build",
                     f"for `ssi-deploy build` get the full library: {_docker_hint()}"), found
    if found.major < 10:
        return Check("tensorrt", FAIL, f"full {found.version}: too old", "TensorRT 10 or 11 needed: "
                     + _docker_hint()), found
    return Check("tensorrt", OK, f"full {found.version} (builder, ONNX parser, runtime)"), found


def check_onnxruntime() -> Check:
    try:
        ort = importlib.import_module("onnxruntime")
    except Exception as e:
        return Check("onnxruntime", FAIL, f"not importable ({type(e).__name__})",
                     "pip install onnxruntime (or onnxruntime-gpu)")
    return Check("onnxruntime", OK, f"{ort.__version__}, providers "
                                    f"{', '.join(ort.get_available_providers())}")


def check_plugins(found, option=None) -> list[Check]:
    from .tensorrt.plugins import BUILD_HINT, find_plugin_library, list_creators, load_plugin_library
    try:
        path = find_plugin_library(option, required=True)
    except SSIError as e:
        return [Check("plugin library", FAIL, "not found", str(e).split("; ", 1)[-1]
                      if "; " in str(e) else BUILD_HINT)]
    out = [Check("plugin library", OK, str(path))]
    if found is None:
        out.append(Check("plugin load", WARN, "not tried: no TensorRT module to load it with",
                         "install the lean runtime (pip install 'ssi-deploy[tensorrt]') or full TensorRT"))
        return out
    trt = found.module
    registry = trt.get_plugin_registry()
    try:
        _, creators = load_plugin_library(registry, path)
    except SSIError as e:
        out.append(Check("plugin load", FAIL, f"{found.flavour} registry: {str(e).split(' (')[0]}",
                         "rebuild the library from this checkout's plugins/ against this TensorRT"))
        return out
    names = ", ".join(f"{c.name} v{c.version}" for c in creators)
    others = len(list_creators(registry)) - len(creators)
    out.append(Check("plugin load", OK, f"loads into the {found.flavour} registry ({found.version}): "
                                        f"{names} in namespace {creators[0].namespace!r}; "
                                        f"{others} other creator(s) registered"))
    return out


def run_checks(plugins=None) -> list[Check]:
    checks = [check_python(), check_torch(), check_gpu(), check_cuda_python()]
    trt_check, found = check_tensorrt()
    checks += [trt_check, check_onnxruntime()]
    checks += check_plugins(found, plugins)
    return checks
