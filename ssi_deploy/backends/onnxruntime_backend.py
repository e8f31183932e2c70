"""ONNX Runtime backend: CPU, or CUDA when onnxruntime-gpu is installed and a GPU answers.

The SSI custom nodes carry model-local ONNX functions (their reference bodies), which ONNX
Runtime inlines, so an exported model runs here with no extra library.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import SSIError
from .base import Backend

_ORT_TO_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a base dependency
        raise SSIError("onnxruntime is not installed: pip install onnxruntime "
                       "(or onnxruntime-gpu for CUDA)") from None
    return ort


def choose_providers(device: str = "auto") -> list[str]:
    """``auto``: CUDA if this onnxruntime build has it, else CPU; ``cpu``; ``cuda`` (required)."""
    ort = _import_ort()
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise SSIError("the CUDA provider is not available: install onnxruntime-gpu "
                           f"(available providers: {', '.join(available)})")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise SSIError(f"unknown device {device!r} for onnxruntime; use auto, cpu or cuda")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 optimization: str = "all", extra_outputs: dict[str, str] | None = None):
        """``extra_outputs``: {tensor inside the graph: output name} made graph outputs in
        memory (validation reads the sampling masks of a file that does not expose them)."""
        ort = _import_ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise SSIError(f"ONNX file not found: {self.path}")
        from ..export.node_check import check_ssi_file

        check_ssi_file(self.path)  # out-of-contract SSI attributes: one line naming the node
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: the CUDA fallback is reported by us
        if threads:
            so.intra_op_num_threads = int(threads)
        so.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
        providers = choose_providers(device)
        self._renames = dict(extra_outputs or {})
        model = str(self.path) if not self._renames else _with_outputs(self.path, self._renames)
        try:
            self.session = ort.InferenceSession(model, so, providers=providers)
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph...)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SSIError(f"onnxruntime cannot load {self.path}: {msg}") from None
        self.providers = self.session.get_providers()
        if providers[0] == "CUDAExecutionProvider" and self.providers[0] != providers[0]:
            warnings.warn("onnxruntime: the CUDA provider could not start (no GPU?); running on CPU",
                          RuntimeWarning, stacklevel=2)
        self._inputs = self.session.get_inputs()
        self._outputs = self.session.get_outputs()
        self._binding = None

    # -- interface -------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [self._renames.get(o.name, o.name) for o in self._outputs]

    @property
    def input_shapes(self) -> dict[str, tuple | None]:
        return {i.name: tuple(d if isinstance(d, int) else (d or None) for d in i.shape)
                for i in self._inputs}

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] == "CUDAExecutionProvider"

    def describe(self) -> dict:
        return {"backend": self.name, "providers": list(self.providers),
                "device": "cuda" if self.on_gpu else "cpu", "model": str(self.path)}

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.input_names
        unknown = [k for k in feeds if k not in names]
        missing = [k for k in names if k not in feeds]
        if unknown or missing:
            raise SSIError(f"inputs {sorted(feeds)} do not match the model's inputs {names}")
        out = {}
        for i in self._inputs:
            a = np.asarray(feeds[i.name])
            want = _ORT_TO_NP.get(i.type)
            if want is not None and a.dtype != want:
                a = a.astype(want)
            out[i.name] = np.ascontiguousarray(a)
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self._check_feeds(feeds)
        try:
            outs = self.session.run(None, feeds)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SSIError(f"onnxruntime failed to run {self.path.name}: {msg}") from None
        return dict(zip(self.output_names, outs))

    def prepare(self, feeds: dict[str, np.ndarray]) -> None:
        feeds = self._check_feeds(feeds)
        self._staged = feeds
        self._binding = None
        if self.on_gpu:  # inputs copied to the device once; outputs stay there while timing
            ort = _import_ort()
            b = self.session.io_binding()
            for name, a in feeds.items():
                b.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0))
            for o in self._outputs:
                b.bind_output(o.name, "cuda", 0)
            self._binding = b

    def run_staged(self) -> None:
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)
        else:
            self.session.run(None, self._staged)

    def close(self) -> None:
        self._binding = None
        self._staged = None
        self.session = None


def _with_outputs(path: Path, tensors: dict[str, str]) -> bytes:
    """The serialised model of ``path`` with ``tensors`` (internal names) as extra outputs."""
    import onnx

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    elem = model.graph.output[0].type.tensor_type.elem_type if model.graph.output else 1
    for name in tensors:
        if name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return model.SerializeToString()
