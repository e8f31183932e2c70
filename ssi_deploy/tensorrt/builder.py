"""Building a TensorRT engine from an exported SSI ONNX model.

Order of the steps (cheap checks first, so mistakes show before minutes of building):
arguments and ONNX model (SSI nodes present) -> TensorRT present (full library) -> GPU ->
plugin library found, loaded into the builder's registry, creators checked -> model prepared
(SSI functions stripped) and parsed -> profile, precision, workspace, timing cache,
version compatibility -> build with progress -> engine inspector: one plugin layer per SSI
node -> plan written (only then).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SSIError
from ..manifest import SIDECAR_KEY, engine_manifest, manifest_from_model_proto
from ..outputs import atomic_output, check_output_path, write_text_atomic
from ..ops import contract
from . import onnx_prep
from .gpu import require_gpu
from .inspect import PluginCheck, ReformatCheck, check_reformats, require_plugin_layers
from .logging import make_logger
from .plugins import find_plugin_library, load_plugin_library
from .shapes import ProfileShape, parse_profiles, resolve_profiles
from .trt import require_builder

PRECISIONS = ("fp32", "fp16")
HEARTBEAT_S = 15.0  # seconds between "building ..." lines where IProgressMonitor is missing


@dataclass
class BuildOptions:
    onnx_path: Path
    engine_path: Path
    plugins: str | None = None
    shapes: tuple[str, ...] = ()
    precision: str | None = None  # None: follow the ONNX model's input dtype
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    version_compatible: bool = False
    dense: bool = False  # a model without SSI nodes (the dense baseline): no plugin check
    verbose: bool = False


@dataclass
class BuildReport:
    engine_path: Path
    engine_bytes: int
    seconds: float
    tensorrt_version: str
    precision: str
    plugin_library: Path | None
    profiles: list[ProfileShape]
    removed_functions: list[str]
    plugin_check: PluginCheck | None
    serialized_plugins: list[str] = field(default_factory=list)
    timing_cache_written: Path | None = None
    sidecar: Path | None = None
    formats: ReformatCheck | None = None  # reformat layers next to SSI plugin layers

    def lines(self) -> list[str]:
        out = [f"engine      {self.engine_path} ({self.engine_bytes / 2**20:.1f} MiB, "
               f"{self.seconds:.1f} s, TensorRT {self.tensorrt_version}, {self.precision})"]
        if self.plugin_library:
            out.append(f"plugins     {self.plugin_library}")
        for p in self.profiles:
            out.append(f"profile     {p}")
        if self.plugin_check is not None:
            out.append(f"SSI layers  {len(self.plugin_check.matched)} SSI node(s) -> plugin layers "
                       f"({self.plugin_check.plugin_layers} plugin layers of "
                       f"{self.plugin_check.total_layers})")
        if self.formats is not None and self.formats.plugin_layers:
            out.append(f"formats     {self.formats.line()}")
        if self.serialized_plugins:
            out.append(f"embedded    {', '.join(self.serialized_plugins)} (version-compatible plan)")
        if self.timing_cache_written:
            out.append(f"cache       {self.timing_cache_written}")
        if self.sidecar:
            out.append(f"metadata    {self.sidecar}")
        return out


def _echo(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolve_precision(requested: str | None, onnx_precision: str, trt_major: int,
                      has_fp16_flag: bool) -> tuple[str, bool]:
    """(precision, set the FP16 builder flag?) or SSIError.

    TensorRT 11 is strongly typed only: the ONNX model's dtypes decide, so fp16 needs an fp16
    export. TensorRT 10 can lower an fp32 model with the FP16 builder flag.
    """
    if requested is not None and requested not in PRECISIONS:
        raise SSIError(f"--precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested is None:
        return onnx_precision, False
    if requested == onnx_precision:
        return requested, False
    if requested == "fp32":
        raise SSIError("--precision fp32 but the ONNX model's inputs are float16: export an fp32 "
                       "model (ssi-deploy export without fp16) or build with --precision fp16")
    # fp16 asked for, fp32 model
    if trt_major >= 11 or not has_fp16_flag:
        raise SSIError("--precision fp16 on TensorRT 11+ needs an fp16 ONNX model (TensorRT 11 is "
                       "strongly typed: the model's dtypes decide); export one with the exporter's "
                       "fp16 option and build that file")
    return "fp16", True


class _Progress:
    """Prints the build phases (IProgressMonitor), or a heartbeat where that is missing."""

    def __init__(self, trt, echo=_echo, interval_s: float | None = None):
        interval_s = HEARTBEAT_S if interval_s is None else interval_s
        self.echo = echo
        self.monitor = None
        self._stop = threading.Event()
        self._thread = None
        self._t0 = time.perf_counter()
        if hasattr(trt, "IProgressMonitor"):
            self.monitor = _make_monitor(trt, echo, self._t0)
        else:
            def beat():
                while not self._stop.wait(interval_s):
                    echo(f"building ... {time.perf_counter() - self._t0:.0f} s")
            self._thread = threading.Thread(target=beat, daemon=True)

    def __enter__(self):
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def _make_monitor(trt, echo, t0):
    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.depth: dict[str, int] = {}
            self.steps: dict[str, int] = {}
            self.lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self.lock:
                d = 0 if parent_phase is None else self.depth.get(parent_phase, 0) + 1
                self.depth[phase_name] = d
                self.steps[phase_name] = int(num_steps)
                if d <= 1:
                    echo(f"[{time.perf_counter() - t0:6.1f} s] {'  ' * d}{phase_name} "
                         f"({num_steps} step{'s' if num_steps != 1 else ''})")

        def step_complete(self, phase_name, step):
            with self.lock:
                if self.depth.get(phase_name, 9) == 0 and self.steps.get(phase_name, 0) > 1:
                    echo(f"[{time.perf_counter() - t0:6.1f} s] {phase_name}: step "
                         f"{step + 1}/{self.steps[phase_name]}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self.lock:
                d = self.depth.pop(phase_name, 9)
                self.steps.pop(phase_name, None)
                if d == 0:
                    echo(f"[{time.perf_counter() - t0:6.1f} s] {phase_name} done")

    return Monitor()


def _dims(shape) -> tuple:
    return tuple(int(d) for d in shape)


def _parser_errors(parser) -> str:
    msgs = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        where = ""
        try:
            if e.node_name():
                where = f"node {e.node_name()} ({e.node_operator()}): "
        except Exception:
            pass
        msgs.append(where + " ".join(str(e.desc()).split()))
    return "; ".join(msgs[:3]) or "no detail from the parser"


def check_plugins_exist(model, source) -> None:
    """Refuse SSI nodes of an op the plugin library of this checkout does not implement
    (``has_plugin=False`` in the op contract), before anything is built. Every op has a plugin
    today, the block form (SSIBottleneck) included; this guards a future contract op."""
    missing: dict[str, int] = {}
    for node in model.graph.node:
        op = contract.OPS.get(node.op_type) if node.domain == contract.DOMAIN else None
        if op is not None and not op.has_plugin:
            missing[op.name] = missing.get(op.name, 0) + 1
    if missing:
        what = ", ".join(f"{n} {name}" for name, n in missing.items())
        raise SSIError(f"{source} has SSI nodes ({what}) that no TensorRT plugin of this "
                       "checkout implements: export the model with the ops this checkout's "
                       "plugins implement and build that file")


def build_engine(opts: BuildOptions, echo=_echo) -> BuildReport:
    t_start = time.perf_counter()
    given = parse_profiles(opts.shapes)
    if opts.workspace_mib is not None and opts.workspace_mib <= 0:
        raise SSIError(f"--workspace must be a positive number of MiB, not {opts.workspace_mib}")
    if opts.precision is not None and opts.precision not in PRECISIONS:
        raise SSIError(f"--precision must be one of {', '.join(PRECISIONS)}, not {opts.precision!r}")
    model = onnx_prep.load_onnx(opts.onnx_path)
    # a file from `ssi-deploy export` carries a manifest (checked here, before TensorRT);
    # any other ONNX file builds too, and its engine has none (no reference to validate with)
    manifest = manifest_from_model_proto(model, str(opts.onnx_path), required=False)
    check_plugins_exist(model, opts.onnx_path)
    check_output_path(opts.engine_path, "--output", create_parent=True)
    prepared, nodes, removed = onnx_prep.prepare_for_tensorrt(model)
    if not nodes and not opts.dense:
        raise SSIError(f"{opts.onnx_path} has no SSI nodes (domain "
                       f"'{contract.DOMAIN}'): export it with `ssi-deploy export`, or "
                       f"pass --dense to build a dense baseline engine")
    if nodes and opts.dense:
        raise SSIError(f"--dense given but {opts.onnx_path} has {len(nodes)} SSI nodes: drop --dense")
    onnx_precision = onnx_prep.model_precision(prepared)

    mod = require_builder()
    trt = mod.module
    precision, fp16_flag = resolve_precision(opts.precision, onnx_precision, mod.major,
                                             hasattr(trt.BuilderFlag, "FP16"))
    require_gpu()
    # a dense baseline needs no plugins; load them only when named
    lib = find_plugin_library(opts.plugins) if (nodes or opts.plugins) else None

    logger = make_logger(trt, opts.verbose, echo)
    builder = trt.Builder(logger)
    if builder is None:
        raise SSIError(f"TensorRT could not create a builder ({logger.last_error()})")
    creators = []
    if lib is not None:
        _, creators = load_plugin_library(builder.get_plugin_registry(), lib)
        registry = builder.get_plugin_registry()
        for n in nodes:
            if registry.get_creator(n.op_type, n.plugin_version, n.plugin_namespace) is None:
                raise SSIError(f"node {n.name} asks for plugin {n.op_type} version "
                               f"{n.plugin_version} namespace {n.plugin_namespace!r}, which {lib} "
                               f"does not provide: re-export the model with this checkout or "
                               f"rebuild the plugin library")
        echo(f"plugins: {lib} ({', '.join(sorted(c.name for c in creators))})")

    flags = 0
    strongly = mod.major >= 11 or not fp16_flag
    if mod.major < 11 and strongly and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    override = getattr(getattr(trt, "OnnxParserFlag", None), "ENABLE_PLUGIN_OVERRIDE", None)
    if override is not None:
        parser.set_flag(override)
    echo(f"parsing {opts.onnx_path} ({len(nodes)} SSI nodes; removed "
         f"{len(removed)} reference function(s))")
    if not parser.parse(prepared.SerializeToString(), str(Path(opts.onnx_path).resolve())):
        raise SSIError(f"TensorRT could not parse {opts.onnx_path}: {_parser_errors(parser)}")

    inputs = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        inputs[t.name] = _dims(t.shape)
    profiles = resolve_profiles(inputs, given)

    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if opts.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mib) << 20)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for p in profiles.values():
        profile.set_shape(p.name, p.min, p.opt, p.max)
    if config.add_optimization_profile(profile) < 0:
        raise SSIError(f"TensorRT rejected the optimization profile ({logger.last_error()})")
    cache = None
    if opts.timing_cache is not None:
        tc = Path(opts.timing_cache)
        data = tc.read_bytes() if tc.is_file() else b""
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, False):
            raise SSIError(f"timing cache {tc} does not fit this TensorRT version or GPU: delete "
                           f"it and build again")
        echo(f"timing cache: {tc} ({'read' if data else 'new'})")
    serialized = []
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if lib is not None:
            config.plugins_to_serialize = [str(lib)]
            serialized = [str(lib)]
    progress = _Progress(trt, echo)
    if progress.monitor is not None:
        config.progress_monitor = progress.monitor

    echo(f"building ({precision}, TensorRT {mod.version}; profiles "
         f"{'; '.join(str(p) for p in profiles.values())})")
    with progress:
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SSIError(f"TensorRT could not build the engine: {logger.last_error()}")
    plan_bytes = bytes(memoryview(plan))

    check = formats = None
    if nodes:
        runtime = trt.Runtime(logger)
        if opts.version_compatible and hasattr(runtime, "engine_host_code_allowed"):
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(plan_bytes)
        if engine is None:
            raise SSIError(f"the built engine could not be loaded for inspection: {logger.last_error()}")
        inspector = engine.create_engine_inspector()
        info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        check = require_plugin_layers(info, [n.name for n in nodes])
        formats = check_reformats(info)  # channels-last between blocks: said, not enforced

    out = Path(opts.engine_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, "engine") as tmp:
        tmp.write_bytes(plan_bytes)
    cache_written = None
    if opts.timing_cache is not None:
        Path(opts.timing_cache).write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        cache_written = Path(opts.timing_cache)
    sidecar = sidecar_path(out)
    write_text_atomic(sidecar, json.dumps({
        "onnx": str(Path(opts.onnx_path).resolve()),
        SIDECAR_KEY: manifest.to_dict() if manifest is not None else None,
        "tensorrt": mod.version,
        "precision": precision,
        "profiles": {p.name: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
                     for p in profiles.values()},
        "plugin_library": str(lib) if lib else None,
        "plugins_embedded": bool(serialized),
        "version_compatible": bool(opts.version_compatible),
        "dense": bool(opts.dense),
        "ssi_nodes": {n.name: n.op_type for n in nodes},
        "plugin_layers": check.matched if check else {},
        "reformats_next_to_plugins": formats.reformats if formats else [],
    }, indent=1) + "\n", "engine sidecar")
    return BuildReport(out, len(plan_bytes), time.perf_counter() - t_start, mod.version, precision,
                       lib, list(profiles.values()), removed, check, serialized, cache_written,
                       sidecar, formats)


def sidecar_path(engine_path) -> Path:
    """``model.plan`` -> ``model.plan.json``: what the engine was built from and how."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_engine_manifest(engine_path):
    """The manifest of the ONNX file an engine was built from (from its sidecar)."""
    return engine_manifest(read_sidecar(engine_path), str(sidecar_path(engine_path)))


def read_sidecar(engine_path) -> dict | None:
    """The build's JSON next to an engine (source ONNX, its ssi.* metadata, profiles, ...)."""
    p = sidecar_path(engine_path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
