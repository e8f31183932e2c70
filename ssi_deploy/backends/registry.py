"""Backends by name: ``create_backend("onnxruntime", "model.onnx")``.

Names: ``torch`` (rebuilds the reference model from the ONNX file's metadata, or from an
arch), ``onnxruntime``, ``tensorrt`` (when ``ssi_deploy.backends.tensorrt_backend`` and the
TensorRT runtime are installed). Imports are lazy so a missing optional runtime only affects
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
            from .tensorrt_backend import is_engine_path, load_engine_backend
        except ImportError as e:
            raise SSIError(f"the tensorrt backend is unavailable here ({e}); install "
                           "'ssi-deploy[tensorrt]' on a machine with an NVIDIA GPU") from None
        if not is_engine_path(onnx_path):
            raise SSIError(f"the tensorrt backend runs an engine (.plan), not {onnx_path}: build "
                           "one with `ssi-deploy build` and pass it with --engine")
        return load_engine_backend(onnx_path, **kw)
    raise SSIError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
