"""`ssi-deploy doctor`: what this machine can do with ssi-deploy, one line per check, each
failure with what to do about it, then which workflows it can run (``workflows``: CPU export,
validate with ONNX Runtime, profile on torch, the native CPU kernels, TensorRT build, engine
runs, the Docker image), each with why or why not."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Workflow:
    name: str
    available: bool
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


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
    return diagnose(plugins)[0]


def diagnose(plugins=None) -> tuple[list[Check], list[Workflow]]:
    """The checks, and the workflows they (and a few more probes) make possible."""
    checks = [check_python(), check_torch(), check_gpu(), check_cuda_python()]
    trt_check, found = check_tensorrt()
    checks += [trt_check, check_onnxruntime()]
    checks += check_plugins(found, plugins)
    return checks, workflows({c.name: c for c in checks}, found)


# --------------------------------------------------------------------------------------------
# Probes the checks do not make (module-level so tests can replace them)

def probe_module(name: str) -> str | None:
    """The version of an importable module, or None."""
    try:
        mod = importlib.import_module(name)
    except Exception:
        return None
    return str(getattr(mod, "__version__", "?"))


def probe_ort_providers() -> list[str]:
    try:
        return list(importlib.import_module("onnxruntime").get_available_providers())
    except Exception:
        return []


def probe_compiler() -> dict:
    """A C++ compiler and cmake on PATH, and an already built CPU-twin library."""
    from .native import cpu_twins

    cxx = next((shutil.which(c) for c in (os.environ.get("CXX") or "c++", "g++", "clang++")
                if c and shutil.which(c)), None)
    built = None
    env = os.environ.get("SSI_CPU_LIB")
    for cand in ([Path(env)] if env else []) + [cpu_twins.BUILD_DIR / "lib" / cpu_twins.LIB_NAME]:
        if cand.is_file():
            built = cand
            break
    return {"cxx": cxx, "cmake": shutil.which("cmake"), "built": built}


def probe_docker() -> dict:
    # a docker client alone builds nothing: the daemon's socket (or DOCKER_HOST) must be there
    daemon = bool(os.environ.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists()
    return {"docker": shutil.which("docker"), "in_container": Path("/.dockerenv").exists(),
            "daemon": daemon}


# --------------------------------------------------------------------------------------------
# Workflows: what this machine can run, and why (not)

def workflows(checks: dict[str, Check], found) -> list[Workflow]:
    torch_v, onnx_v = probe_module("torch"), probe_module("onnx")
    return [_export_flow(torch_v, onnx_v), _validate_flow(checks, torch_v, onnx_v),
            _profile_flow(torch_v), _native_flow(probe_compiler()),
            _trt_build_flow(checks, found), _engine_run_flow(checks, found),
            _docker_flow(probe_docker()), _serve_flow()]


def _serve_flow() -> Workflow:
    """`ssi-deploy serve`: the Triton server of the serve extra (docs/serving.md)."""
    from .serving.server import find_triton

    try:
        t = find_triton()
    except SSIError as e:
        return Workflow("Triton serving (CPU)", False, str(e))
    return Workflow("Triton serving (CPU)", True,
                    f"nvidia-pytriton {t.version}: tritonserver with the python backend "
                    "(ssi-deploy serve; engines: NVIDIA's tritonserver container)")


def _missing(**mods) -> list[str]:
    return [f"{name} not importable (pip install {name})" for name, v in mods.items() if v is None]


def _export_flow(torch_v, onnx_v) -> Workflow:
    miss = _missing(torch=torch_v, onnx=onnx_v)
    return Workflow("CPU export", not miss,
                    "; ".join(miss) or f"torch {torch_v} and onnx {onnx_v}")


def _validate_flow(checks, torch_v, onnx_v) -> Workflow:
    ort = checks.get("onnxruntime")
    miss = _missing(torch=torch_v, onnx=onnx_v)
    if ort is None or ort.status == FAIL:
        miss.append("onnxruntime not importable (pip install onnxruntime, or onnxruntime-gpu)")
    if miss:
        return Workflow("validate (onnxruntime)", False, "; ".join(miss))
    cuda = "CUDAExecutionProvider" in probe_ort_providers()
    return Workflow("validate (onnxruntime)", True,
                    f"onnxruntime {ort.detail.split(',')[0]}: CPU provider"
                    + (", CUDA provider (--device cuda)" if cuda else
                       "; no CUDA provider (onnxruntime-gpu and a GPU for --device cuda)"))


def _profile_flow(torch_v) -> Workflow:
    if torch_v is None:
        return Workflow("profile (torch, CPU)", False, "torch not importable (pip install torch)")
    return Workflow("profile (torch, CPU)", True,
                    f"torch {torch_v}, {os.cpu_count() or 1} CPU cores (sparse CPU ops)")


def _native_flow(c: dict) -> Workflow:
    name = "native CPU kernels (CPU twins)"
    if c.get("built"):
        return Workflow(name, True, f"built: {c['built']}")
    miss = [w for w, ok in (("no C++ compiler (c++, g++ or clang++) on PATH", c.get("cxx")),
                            ("no cmake on PATH", c.get("cmake"))) if not ok]
    if miss:
        return Workflow(name, False, "; ".join(miss) + " (apt-get install g++ cmake)")
    return Workflow(name, True, f"{c['cxx']} and {c['cmake']}: built on first use")


def _gpu_and_plugins(checks) -> list[str]:
    out = []
    gpu = checks.get("gpu")
    if gpu is None or gpu.status != OK:
        out.append(f"no GPU: {gpu.detail if gpu else 'not checked'}")
    lib = checks.get("plugin library")
    if lib is None or lib.status != OK:
        out.append("no SSI plugin library (make plugins)")
    return out


def _trt_build_flow(checks, found) -> Workflow:
    why = []
    if found is None:
        why.append("TensorRT not installed")
    elif found.flavour != "full":
        why.append(f"only the lean runtime {found.version} (no builder)")
    elif found.major < 10:
        why.append(f"TensorRT {found.version} too old (10 or 11 needed)")
    why += _gpu_and_plugins(checks)
    if why == ["no SSI plugin library (make plugins)"]:
        why[0] += ": dense engines only"
    if why:
        return Workflow("TensorRT build", False, "; ".join(why))
    return Workflow("TensorRT build", True, f"full TensorRT {found.version}, "
                                            f"{checks['gpu'].detail.split(' (')[0]}, plugins")


def _engine_run_flow(checks, found) -> Workflow:
    why = []
    if found is None:
        why.append("no TensorRT or lean runtime")
    elif found.major < 10:
        why.append(f"TensorRT {found.version} too old (10 or 11 needed)")
    why += _gpu_and_plugins(checks)
    load = checks.get("plugin load")
    if not why and (load is None or load.status != OK):
        why.append("the plugin library does not load into TensorRT's registry")
    if why:
        return Workflow("engine run", False, "; ".join(why))
    return Workflow("engine run", True, f"{found.flavour} TensorRT {found.version}, GPU, "
                                        "plugins load")


def _docker_flow(d: dict) -> Workflow:
    if d.get("in_container") and not d.get("docker"):
        return Workflow("Docker image", False, "this runs inside a container without docker; "
                                               "build the image (docs/docker.md) on a GPU host")
    if d.get("docker") and not d.get("daemon", True):
        return Workflow("Docker image", False, f"{d['docker']} is here but no Docker daemon "
                                               "answers (no /var/run/docker.sock, no DOCKER_HOST); "
                                               "start it, or build the image (docs/docker.md) on "
                                               "a GPU host")
    if d.get("docker"):
        return Workflow("Docker image", True, f"{d['docker']}: `docker build -t ssi-deploy .`, "
                                              "then `docker run --gpus all` (docs/docker.md) "
                                              "has TensorRT and the plugins")
    return Workflow("Docker image", False, "docker not on PATH; the image (docs/docker.md) is "
                                           "the short way to TensorRT on a GPU machine")
