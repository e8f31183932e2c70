"""Backends by name: ``create_backend("onnxruntime", "model.onnx")``.

Names: ``torch`` (rebuilds the reference model from the ONNX file's metadata, or from an
arch), ``onnxruntime``, ``tensorrt`` (when the TensorRT runtime and a GPU are there: an
engine path is loaded as it is; an ONNX path gets its engine built, or reused when up to date,
by ``tensorrt_backend.engine_for_onnx``). Imports are lazy so a missing optional runtime only affects
its own backend.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SSIError
from .base import Backend

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def create_backend(name: str, onnx_path: str | Path | None = None, *,
                   checkpoint: str | Path | None = None, arch: str | None = None,
                   **kw) -> Backend:
    """A backend running ``onnx_path`` (or, for ``torch``, ``arch``); one-line errors."""
    if name == "torch":
        from .torch_backend import TorchBackend
        if onnx_path is not None:
            return TorchBackend.from_onnx(onnx_path, checkpoint=checkpoint, **kw)
        if arch is None:
            raise SSIError("the torch backend needs an ONNX file (for its metadata) or --arch")
        return TorchBackend.from_arch(arch, checkpoint=checkpoint, **kw)
    if onnx_path is None:
        raise SSIError(f"the {name} backend runs an ONNX file (or an engine): give its path")
    if not Path(onnx_path).is_file():
        raise SSIError(f"{'engine' if name == 'tensorrt' else 'ONNX'} file not found: {onnx_path}")
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(onnx_path, **kw)
    if name == "tensorrt":
        try:
            from .tensorrt_backend import engine_for_onnx, is_engine_path, load_engine_backend
        except ImportError as e:
            raise SSIError(f"the tensorrt backend is unavailable here ({e}); install "
                           "'ssi-deploy[tensorrt]' on a machine with an NVIDIA GPU") from None
        input_shape = kw.pop("input_shape", None)
        echo = kw.pop("echo", None)
        precision = kw.pop("precision", None)  # for an ONNX path: default, its input dtype
        kw.pop("device", None)
        plan = onnx_path if is_engine_path(onnx_path) else engine_for_onnx(
            onnx_path, input_shape=input_shape, echo=echo,
            precision=precision)  # built, or reused when up to date
        return load_engine_backend(plan, **kw)
    raise SSIError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def resolve_engine(path: str | Path, backend: str | None) -> tuple[Path, Path]:
    """For a TensorRT engine path given to validate/profile: ``(plan, source_onnx)``.

    One-line errors: the engine is missing, another backend than ``tensorrt`` was asked for,
    TensorRT or a GPU is missing (the tensorrt modules' own messages), or the ONNX file the
    engine was built from cannot be found (from its ``.plan.json`` sidecar)."""
    plan = Path(path)
    if not plan.is_file():
        raise SSIError(f"engine file not found: {plan}")
    if backend not in (None, "tensorrt"):
        raise SSIError(f"{plan} is a TensorRT engine: it runs with --backend tensorrt, not "
                       f"--backend {backend} (give the ONNX file it was built from for {backend})")
    try:
        from ..tensorrt.gpu import require_gpu
        from ..tensorrt.trt import require_runtime
        from .tensorrt_backend import onnx_for_engine
    except ImportError as e:
        raise SSIError(f"the tensorrt backend is unavailable here ({e}); install "
                       "'ssi-deploy[tensorrt]' on a machine with an NVIDIA GPU") from None
    require_runtime()
    require_gpu("running a TensorRT engine")
    return plan, Path(onnx_for_engine(plan))
