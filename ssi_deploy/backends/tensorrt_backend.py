"""Running TensorRT engines (``.plan``) behind the common backend interface.

Hooks for the validate/profile commands:

- ``is_engine_path(path)``: does this file name look like a TensorRT engine?
- ``TensorRTBackend(plan_path, plugins=None)``: a ``Backend`` (``input_names``,
  ``output_names``, ``run``, ``prepare``/``run_staged``, ``time``, ``close``) plus
  ``input_profile(name)`` (min, opt, max), ``layers()`` (engine inspector, SSI plugin layers
  marked), ``layer_times(feeds, iterations)`` (IProfiler: mean ms per layer) and ``info()``.
- ``load_engine_backend(path, plugins=None)``: the same, named like the other backends' loaders.
- ``engine_metadata(path)``: the JSON ``ssi-deploy build`` writes next to the engine
  (``model.plan.json``: source ONNX path and its ``ssi.*`` metadata, profiles, precision,
  SSI node -> plugin layer names), or None.
- ``onnx_for_engine(plan)``: the ONNX file an engine was built from (for the reference's
  metadata), or an SSIError saying how to give it.
- ``engine_for_onnx(onnx, engine=None, input_shape=None, plugins=None)``: build an engine
  for an ONNX file (SSI or dense, detected) unless an up-to-date one whose profile covers
  ``input_shape`` exists; returns its path. For ``--backend tensorrt`` on ``.onnx`` files and
  for the dense twin of ``profile --compare-dense``; ``profile --dense-engine D.plan`` times a
  prebuilt dense engine instead (same feeds; refused unless its sidecar's precision matches
  the sparse engine's).

``time`` measures each iteration with CUDA events around one ``execute_async_v3`` (replayed as a
CUDA graph captured after one warm-up call, when capture works), so latencies are GPU times of
the engine alone, without host copies.
"""

from __future__ import annotations

import re
import time as _time
from pathlib import Path

import numpy as np

from ..errors import SSIError
from ..tensorrt.gpu import require_gpu
from ..tensorrt.inspect import LayerInfo, parse_engine_json
from ..tensorrt.logging import make_logger
from ..tensorrt.plugins import BUILD_HINT, find_plugin_library, load_plugin_library
from ..tensorrt.shapes import check_within, format_shape
from ..tensorrt.trt import require_runtime
from .base import Backend, Timing

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


def is_engine_path(path) -> bool:
    return Path(str(path)).suffix.lower() in ENGINE_SUFFIXES


def explain_deserialize_failure(errors: list[str], plan_path, plugin_library, trt_version: str,
                                flavour: str) -> SSIError:
    """The one-line error for an engine TensorRT refused to load, from its logger's errors."""
    text = " ".join(" ".join(errors).split())
    last = " ".join(errors[-1].split()) if errors else "no message from TensorRT"
    if re.search(r"plugin|creator", text, re.I):
        lib = (f"the plugin library {plugin_library} does not provide it"
               if plugin_library else "no SSI plugin library was loaded")
        return SSIError(f"engine {plan_path} needs a plugin TensorRT cannot find ({lib}): pass "
                        f"--plugins LIB.so or set SSI_PLUGIN_LIBRARY; {BUILD_HINT} ({last})")
    if re.search(r"version|magic|serializ\w* assertion|incompatible|stdVersionRead|"
                 r"rebuild|plan file", text, re.I):
        hint = ("the lean runtime only loads version-compatible plans (build with "
                "--version-compatible)" if flavour == "lean" else
                "rebuild it here with `ssi-deploy build`, or build it with --version-compatible")
        return SSIError(f"engine {plan_path} was built with another TensorRT version or for another "
                        f"GPU than this TensorRT {trt_version} can load: {hint} ({last})")
    return SSIError(f"TensorRT could not load engine {plan_path}: {last}")


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, plan_path, plugins=None, device=None, use_cuda_graph: bool = True,
                 verbose: bool = False):
        self.plan_path = Path(plan_path)
        if not self.plan_path.is_file():
            raise SSIError(f"engine file {self.plan_path} does not exist: build it with "
                           f"`ssi-deploy build MODEL.onnx --engine {self.plan_path}`")
        self._mod = require_runtime()
        trt = self._trt = self._mod.module
        require_gpu("running a TensorRT engine")
        from ..tensorrt.device import make_device  # imported late: pulls in torch
        self._dev = device if device is not None else make_device()
        self._logger = make_logger(trt, verbose)
        self._runtime = trt.Runtime(self._logger)
        if self._runtime is None:
            raise SSIError(f"TensorRT could not create a runtime: {self._logger.last_error()}")
        if hasattr(self._runtime, "engine_host_code_allowed"):
            # version-compatible plans carry the lean runtime and plugin libraries as host code
            self._runtime.engine_host_code_allowed = True
        self.plugin_library = find_plugin_library(plugins, required=False)
        if self.plugin_library is not None:
            load_plugin_library(self._runtime.get_plugin_registry(), self.plugin_library)
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise explain_deserialize_failure(self._logger.errors, self.plan_path,
                                              self.plugin_library, self._mod.version,
                                              self._mod.flavour)
        self._ctx = self._engine.create_execution_context()
        if self._ctx is None:
            raise SSIError(f"TensorRT could not create an execution context for {self.plan_path} "
                           f"(out of GPU memory?): {self._logger.last_error()}")
        self._inputs, self._outputs, self._dtypes = [], [], {}
        for i in range(self._engine.num_io_tensors):
            n = self._engine.get_tensor_name(i)
            is_in = self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
            (self._inputs if is_in else self._outputs).append(n)
            self._dtypes[n] = np.dtype(trt.nptype(self._engine.get_tensor_dtype(n)))
        self.use_cuda_graph = use_cuda_graph
        self.graph_error: str | None = None
        self._bufs: dict[str, object] = {}
        self._shapes: dict[str, tuple] = {}
        self._graph = None
        self._graph_key = None

    # -- interface ------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def input_profile(self, name: str) -> tuple[tuple, tuple, tuple]:
        """(min, opt, max) shapes of input ``name`` in optimization profile 0."""
        mn, opt, mx = self._engine.get_tensor_profile_shape(name, 0)
        return tuple(mn), tuple(opt), tuple(mx)

    @property
    def input_shapes(self) -> dict[str, tuple | None]:
        """Per input: fixed dims as ints, dims the profile lets vary as None."""
        out = {}
        for n in self._inputs:
            mn, _, mx = self.input_profile(n)
            out[n] = tuple(int(a) if a == b else None for a, b in zip(mn, mx))
        return out

    def describe(self) -> dict:
        return {"backend": self.name, **self.info()}

    def info(self) -> dict:
        return {"tensorrt": self._mod.version, "flavour": self._mod.flavour,
                "engine": str(self.plan_path), "plugins": str(self.plugin_library or ""),
                "buffers": self._dev.kind,
                "inputs": {n: [format_shape(s) for s in self.input_profile(n)] for n in self._inputs},
                "cuda_graph": self._graph is not None, "graph_error": self.graph_error}

    def _stage(self, feeds: dict[str, np.ndarray]) -> None:
        missing = [n for n in self._inputs if n not in feeds]
        extra = [n for n in feeds if n not in self._inputs]
        if missing or extra:
            raise SSIError(f"engine {self.plan_path.name} takes inputs {', '.join(self._inputs)}; "
                           f"missing {missing or 'none'}, unknown {extra or 'none'}")
        changed = False
        for n in self._inputs:
            arr = np.asarray(feeds[n])
            mn, _, mx = self.input_profile(n)
            check_within(n, arr.shape, mn, mx)
            if self._shapes.get(n) != arr.shape:
                if not self._ctx.set_input_shape(n, arr.shape):
                    raise SSIError(f"TensorRT refused shape {format_shape(arr.shape)} for input "
                                   f"{n!r}: {self._logger.last_error()}")
                self._shapes[n] = arr.shape
                self._bufs[n] = self._dev.empty(arr.shape, self._dtypes[n])
                changed = True
            self._dev.upload(self._bufs[n], arr.astype(self._dtypes[n], copy=False))
        if changed or any(o not in self._bufs for o in self._outputs):
            for o in self._outputs:
                shape = tuple(self._ctx.get_tensor_shape(o))
                if any(d < 0 for d in shape):
                    raise SSIError(f"output {o!r} has a data-dependent shape {shape}, which this "
                                   f"backend does not support")
                self._bufs[o] = self._dev.empty(shape, self._dtypes[o])
                self._shapes[o] = shape
            self._graph = None
        for n, b in self._bufs.items():
            self._ctx.set_tensor_address(n, self._dev.ptr(b))

    def _enqueue(self) -> None:
        if not self._ctx.execute_async_v3(self._dev.stream_handle):
            raise SSIError(f"TensorRT failed to run the engine: {self._logger.last_error()}")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._stage(feeds)
        self._enqueue()
        self._dev.synchronize()
        return {o: self._dev.download(self._bufs[o]) for o in self._outputs}

    def prepare(self, feeds: dict[str, np.ndarray]) -> None:
        """Stage inputs, run once (warm-up), then capture a CUDA graph of one inference."""
        self._stage(feeds)
        self._enqueue()
        self._dev.synchronize()
        self._graph = None
        if self.use_cuda_graph:
            try:
                self._graph = self._dev.capture(self._enqueue)
            except Exception as e:  # a plugin or layer that cannot be captured: run plainly
                self.graph_error = " ".join(str(e).split())[:200]
                self._graph = None
                self._dev.synchronize()

    def run_staged(self) -> None:
        if self._graph is not None:
            self._graph()
        else:
            self._enqueue()

    def time(self, feeds, warmup_ms: float = 200.0, iterations: int | None = None,
             duration_s: float | None = None, progress=None) -> Timing:
        """GPU latency per iteration from CUDA events (graph replay when captured)."""
        self.prepare(feeds)
        start = _time.perf_counter()
        while (_time.perf_counter() - start) * 1000.0 < warmup_ms:
            self.run_staged()
            self._dev.synchronize()
        if iterations is None and duration_s is None:
            iterations = 20
        t_end = None if duration_s is None else _time.perf_counter() + duration_s
        ev0, ev1 = self._dev.event(), self._dev.event()
        out = Timing()
        while True:
            self._dev.record(ev0)
            self.run_staged()
            self._dev.record(ev1)
            out.latencies_ms.append(self._dev.elapsed_ms(ev0, ev1))
            if progress is not None:
                progress(len(out.latencies_ms))
            if iterations is not None and len(out.latencies_ms) >= iterations:
                break
            if t_end is not None and _time.perf_counter() >= t_end:
                break
        return out

    # -- per-layer information -------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        """Engine layers (first profile) from the inspector; ``is_plugin`` marks SSI plugins."""
        inspector = self._engine.create_engine_inspector()
        return parse_engine_json(inspector.get_engine_information(
            self._trt.LayerInformationFormat.JSON))

    def layer_times(self, feeds, iterations: int = 20) -> dict[str, float]:
        """Mean milliseconds per layer over ``iterations`` runs (IProfiler; no CUDA graph)."""
        trt = self._trt

        class _Profiler(trt.IProfiler):
            def __init__(self):
                trt.IProfiler.__init__(self)
                self.times: dict[str, list[float]] = {}

            def report_layer_time(self, layer_name, ms):
                self.times.setdefault(str(layer_name), []).append(float(ms))

        prof = _Profiler()
        self._stage(feeds)
        self._enqueue()  # warm-up on the main context
        self._dev.synchronize()
        # a separate context, so the main one (and its CUDA graph) never reports to a profiler
        ctx = self._engine.create_execution_context()
        for n in self._inputs:
            ctx.set_input_shape(n, self._shapes[n])
        for n, b in self._bufs.items():
            ctx.set_tensor_address(n, self._dev.ptr(b))
        ctx.profiler = prof
        for _ in range(max(1, int(iterations))):
            if not ctx.execute_async_v3(self._dev.stream_handle):
                raise SSIError(f"TensorRT failed to run the engine: {self._logger.last_error()}")
            self._dev.synchronize()
        del ctx
        return {k: float(np.mean(v)) for k, v in prof.times.items()}

    def close(self) -> None:
        self._graph = None
        self._bufs.clear()
        self._ctx = None
        self._engine = None
        if hasattr(self._dev, "close"):
            self._dev.close()


def engine_metadata(path) -> dict | None:
    from ..tensorrt.builder import read_sidecar
    return read_sidecar(path)


def onnx_for_engine(plan_path) -> Path:
    meta = engine_metadata(plan_path)
    onnx_path = Path(meta["onnx"]) if meta and meta.get("onnx") else None
    if onnx_path is None or not onnx_path.is_file():
        why = (f"{onnx_path} is gone" if onnx_path else
               f"no {Path(str(plan_path)).name}.json beside it")
        raise SSIError(f"cannot tell which ONNX file engine {plan_path} was built from ({why}): "
                       f"give the ONNX file and the engine, or rebuild with `ssi-deploy build`")
    return onnx_path


def engine_for_onnx(onnx_path, engine_path=None, input_shape=None, plugins=None,
                    precision=None, echo=None) -> Path:
    """An engine for ``onnx_path``: reused when newer than the ONNX file and its profile covers
    ``input_shape``; otherwise built (fixed to ``input_shape`` when given)."""
    import onnx as _onnx

    from ..tensorrt.builder import BuildOptions, build_engine
    from ..tensorrt.onnx_prep import input_shapes, ssi_nodes

    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".plan")
    model = _onnx.load(str(onnx_path), load_external_data=False)
    names = list(input_shapes(model))
    name = names[0] if names else None
    meta = engine_metadata(engine_path)
    if (meta and engine_path.is_file() and meta.get("onnx") == str(onnx_path.resolve())
            and engine_path.stat().st_mtime >= onnx_path.stat().st_mtime):
        prof = meta.get("profiles", {}).get(name)
        if input_shape is None or (prof and len(prof["min"]) == len(input_shape) and all(
                lo <= s <= hi for s, lo, hi in zip(input_shape, prof["min"], prof["max"]))):
            return engine_path
    shapes = ()
    if input_shape is not None and name is not None:
        shapes = (f"{name}:{format_shape(input_shape)}",)
    build_engine(BuildOptions(onnx_path=onnx_path, engine_path=engine_path, plugins=plugins,
                              shapes=shapes, precision=precision,
                              dense=not ssi_nodes(model)), **({"echo": echo} if echo else {}))
    return engine_path


def load_engine_backend(path, plugins=None, **kw) -> TensorRTBackend:
    return TensorRTBackend(path, plugins=plugins, **kw)
