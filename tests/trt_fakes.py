"""Shared TensorRT test doubles: inspector JSON, a fake ``tensorrt`` module, a fake CUDA driver,
host-memory device buffers and the fixtures that install them (used by test_tensorrt.py and
test_validate_profile.py).

The fake module stands in for the library only (builder, parser, runtime, registry, CUDA
driver); the code under test is the real ``ssi_deploy.tensorrt`` / backend code: the fake is
installed as ``sys.modules["tensorrt"]`` and found by the same import path users take.

Plans written by the fake builder are ``b"PLAN"`` + inspector JSON, with a ``"FakeIO"`` entry
(the parsed model's inputs with the build's profile, and its outputs). A plan's JSON may carry a
``"FakeIO"`` entry (``{"inputs": {name: [min, opt, max]}, "outputs": [names]}``) so an engine
can have the I/O of a real exported model; without it the engine has input ``logits`` (profile
1x1x16x16 .. 2x1x64x64) and output ``dense``. Every output is 2 x the first input.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from ssi_deploy.ops import contract
from ssi_deploy.tensorrt import gpu as gpu_mod
from ssi_deploy.tensorrt import plugins as plugins_mod
from ssi_deploy.tensorrt import trt as trt_mod

# ---------------------------------------------------------------------------------------------
# Inspector JSON (format of IEngineInspector.get_engine_information(JSON), DETAILED verbosity)

SEP = "\x1e"


def _layer(name, ltype, onnx_nodes, **extra):
    d = {"Name": name, "LayerType": ltype,
         "Inputs": [{"Name": "logits", "Location": "Device", "Dimensions": [1, 1, 64, 64],
                     "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": name + "_out", "Location": "Device", "Dimensions": [1, 1, 64, 64],
                      "Format/Datatype": "Row major linear FP32"}],
         "Metadata": SEP.join(f"[ONNX Layer: {n}]" for n in onnx_nodes)}
    d.update(extra)
    return d


def _engine_json(ssi_as_plugins=True, second_profile=False):
    layers = []
    for op in ("SampleMask", "SparseConv2d", "GaussianInterp"):
        node = f"/layer1/{op}"
        if ssi_as_plugins:
            layers.append(_layer(node, "PluginV3", [node], ParameterType="PluginV3",
                                 TacticValue="0x0000000000000000"))
        else:  # inlined reference body: ordinary layers named after the function's nodes
            layers.append(_layer(f"{node}/Conv + {node}/Mul", "CaskConvolution",
                                 [f"{node}/Conv", f"{node}/Mul"], ParameterType="Convolution",
                                 Kernel=[3, 3], TacticName="sm90_xmma_fprop_implicit_gemm"))
    layers.append(_layer("/layer1/Relu", "PointWiseV2", ["/layer1/Relu"]))
    if second_profile:
        layers += [dict(lay, Name=lay["Name"] + " [profile 1]") for lay in layers]
    return json.dumps({"Layers": layers, "Bindings": ["logits", "dense"]})


NODES = ["/layer1/SampleMask", "/layer1/SparseConv2d", "/layer1/GaussianInterp"]


class _Sev(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class _ILogger:
    Severity = _Sev

    def __init__(self):
        pass


class _Creator:
    def __init__(self, name, version, namespace):
        self.name, self.plugin_version, self.plugin_namespace = name, version, namespace


class _Registry:
    def __init__(self):
        self.creators = [_Creator("MyelinWeightsTransformPlugin", "1", "")]
        self.loaded = []

    @property
    def all_creators(self):
        return list(self.creators)

    def get_creator(self, name, version, namespace=""):
        for c in self.creators:
            if (c.name, c.plugin_version, c.plugin_namespace) == (name, version, namespace):
                return c
        return None

    def load_library(self, path):
        """Fake .so files: b'SSI' registers the contract's creators, b'OLD' an older version."""
        data = Path(path).read_bytes()[:3]
        if data not in (b"SSI", b"OLD"):
            return None
        version = contract.PLUGIN_VERSION if data == b"SSI" else "0"
        for op in contract.PLUGIN_OPS:  # what the real library registers
            if self.get_creator(op, version, contract.PLUGIN_NAMESPACE) is not None:
                return None  # TensorRT refuses duplicates
            self.creators.append(_Creator(op, version, contract.PLUGIN_NAMESPACE))
        self.loaded.append(str(path))
        return object()


def make_fake_trt(version="10.13.0", inline_functions=False, build_fails=False):
    """A module with the TensorRT API surface ssi-deploy uses. The parser behaves like
    onnx-tensorrt 10.1: it inlines every model-local function it finds (so only stripping makes
    plugins), unless ``inline_functions`` forces inlining even of stripped nodes (a broken
    parser), in which case the engine has no plugin layer."""
    m = types.ModuleType("tensorrt")
    m.__version__ = version
    major = int(version.split(".")[0])
    m.ILogger = _ILogger
    registry = _Registry()
    m.get_plugin_registry = lambda: registry
    m.calls = calls = {}

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        STRONGLY_TYPED = 0

    flags = {"VERSION_COMPATIBLE": 1, "EXCLUDE_LEAN_RUNTIME": 2, "TF32": 3}
    if major < 11:
        flags["FP16"] = 4
    m.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    m.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    m.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
    m.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    m.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", {"ONELINE": 0, "JSON": 1})
    m.OnnxParserFlag = enum.IntEnum("OnnxParserFlag", {"NATIVE_INSTANCENORM": 0, "ENABLE_PLUGIN_OVERRIDE": 3})
    m.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})

    class IProgressMonitor:
        def __init__(self):
            pass

    class IProfiler:
        def __init__(self):
            pass

    m.IProgressMonitor, m.IProfiler = IProgressMonitor, IProfiler

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.layers = flags, [], []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class ParserError:
        def __init__(self, desc, node):
            self._d, self._n = desc, node

        def desc(self):
            return self._d

        def node_name(self):
            return self._n

        def node_operator(self):
            return "Unknown"

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self.errors, self.flags = network, logger, [], set()

        def set_flag(self, f):
            self.flags.add(f)

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse(self, data, path=None):
            model = onnx.load_from_string(data)
            calls["parsed_model"] = model
            calls["parser_flags"] = set(self.flags)
            funcs = {(f.domain, f.name) for f in model.functions}
            inits = {i.name for i in model.graph.initializer}
            for i in model.graph.input:
                if i.name not in inits:
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                                 for d in i.type.tensor_type.shape.dim)
                    self.network.inputs.append(Tensor(i.name, dims))
            for n in model.graph.node:
                if (n.domain, n.op_type) in funcs or (n.domain == contract.DOMAIN and inline_functions):
                    self.network.layers.append((f"{n.name}/Conv", "CaskConvolution", f"{n.name}/Conv"))
                elif n.domain == contract.DOMAIN:
                    ns = next((helper.get_attribute_value(a).decode() for a in n.attribute
                               if a.name == "plugin_namespace"), "")
                    if registry.get_creator(n.op_type, "1", ns) is None:
                        self.errors.append(ParserError("Plugin not found, are the plugin name, "
                                                       "version, and namespace correct?", n.name))
                        return False
                    self.network.layers.append((n.name, "PluginV3", n.name))
                elif n.op_type == "Unsupported":
                    self.errors.append(ParserError(f"No importer registered for op: {n.op_type}",
                                                   n.name))
                    return False
                else:
                    self.network.layers.append((n.name, "PointWiseV2", n.name))
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"CACHE" + self.data

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pools = set(), [], {}
            self.profiling_verbosity = None
            self.plugins_to_serialize = []
            self.progress_monitor = None
            self.cache = None

        def set_flag(self, f):
            self.flags.add(f)

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, p):
            self.profiles.append(p)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def get_plugin_registry(self):
            return registry

        def create_network(self, flags=0):
            calls["network_flags"] = flags
            self.network = Network(flags)
            return self.network

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["config"] = config
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building engine", None, 2)
                mon.phase_start("Tactic selection", "Building engine", 3)
                for s in range(3):
                    mon.step_complete("Tactic selection", s)
                mon.phase_finish("Tactic selection")
                mon.step_complete("Building engine", 0)
                mon.phase_finish("Building engine")
            if build_fails:
                self.logger.log(_Sev.ERROR, "Internal error: could not find any implementation for node X")
                return None
            layers = [{"Name": n, "LayerType": t, "Metadata": f"[ONNX Layer: {o}]"}
                      for n, t, o in network.layers]
            profile = config.profiles[0].shapes if config.profiles else {}
            parsed = calls["parsed_model"]
            info = json.dumps({"Layers": layers, "Bindings": [t.name for t in network.inputs],
                               "FakeIO": {"inputs": {t.name: [list(s) for s in profile[t.name]]
                                                     for t in network.inputs if t.name in profile},
                                          "outputs": [o.name for o in parsed.graph.output]}})
            return memoryview(b"PLAN" + info.encode())

    class Inspector:
        def __init__(self, info):
            self.info = info

        def get_engine_information(self, fmt):
            assert fmt == m.LayerInformationFormat.JSON
            return self.info

    class Engine:
        """Plans are b'PLAN' + inspector JSON; b'PLANv9' imitates a plan of another version."""

        def __init__(self, info):
            self.info = info
            fake_io = json.loads(info).get("FakeIO")
            if fake_io and fake_io["inputs"]:  # the I/O of a real model (see the module docstring)
                ins = {n: tuple(tuple(s) for s in p) for n, p in fake_io["inputs"].items()}
                self.io = ([(n, m.TensorIOMode.INPUT) for n in ins]
                           + [(n, m.TensorIOMode.OUTPUT) for n in fake_io["outputs"]])
                self.profiles = ins
            else:
                self.io = [("logits", m.TensorIOMode.INPUT), ("dense", m.TensorIOMode.OUTPUT)]
                self.profiles = {"logits": ((1, 1, 16, 16), (1, 1, 32, 32), (2, 1, 64, 64))}
            self.first_input = self.io[0][0]

        def create_engine_inspector(self):
            return Inspector(self.info)

        @property
        def num_io_tensors(self):
            return len(self.io)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, n):
            return dict(self.io)[n]

        def get_tensor_dtype(self, n):
            return "float32"

        def get_tensor_profile_shape(self, n, p):
            return self.profiles[n]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr, self.profiler = engine, {}, {}, None

        def set_input_shape(self, n, s):
            self.shapes[n] = tuple(s)
            return True

        def get_tensor_shape(self, n):
            return self.shapes[self.engine.first_input]

        def set_tensor_address(self, n, p):
            self.addr[n] = p

        def execute_async_v3(self, stream):
            # the "engine": every output = first input * 2 (through the real device pointers)
            first = self.engine.first_input
            count = int(np.prod(self.shapes[first]))
            src = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addr[first]))
            for n, mode in self.engine.io:
                if mode == m.TensorIOMode.OUTPUT:
                    dst = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addr[n]))
                    dst[:] = 2.0 * src
            calls["executions"] = calls.get("executions", 0) + 1
            if self.profiler is not None:
                self.profiler.report_layer_time("/layer1/SampleMask", 0.25)
                self.profiler.report_layer_time("/layer1/Relu", 0.5)
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.engine_host_code_allowed = False

        def get_plugin_registry(self):
            return registry

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            calls["host_code_allowed"] = self.engine_host_code_allowed
            if data.startswith(b"PLANv9"):
                self.logger.log(_Sev.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                            "(Serialization assertion stdVersionRead == kSERIALIZATION_VERSION "
                                            "failed.Version tag does not match.)")
                return None
            if data.startswith(b"PLANplugin"):
                self.logger.log(_Sev.ERROR, "getPluginCreator could not find plugin: SampleMask version: 1")
                return None
            if not data.startswith(b"PLAN"):
                self.logger.log(_Sev.ERROR, "Error Code 1: Serialization (magic tag does not match)")
                return None
            return Engine(data[4:].decode() or json.dumps({"Layers": [], "Bindings": []}))

    m.Builder, m.OnnxParser, m.Runtime = Builder, OnnxParser, Runtime
    m.nptype = lambda dt: np.float32
    return m


class _FakeLibcuda:
    """The CUDA driver entry points gpu.probe_gpu calls, with one 'H100'."""

    def __init__(self, gpus=1):
        self.gpus = gpus

    def cuInit(self, flags):
        return 0

    def cuDeviceGetCount(self, p):
        p._obj.value = self.gpus
        return 0

    def cuDeviceGet(self, p, i):
        return 0

    def cuDeviceGetName(self, buf, n, dev):
        buf.value = b"NVIDIA H100 80GB HBM3"
        return 0

    def cuDriverGetVersion(self, p):
        p._obj.value = 13000
        return 0

    def cuDeviceGetAttribute(self, p, attr, dev):
        p._obj.value = {75: 9, 76: 0}[attr]
        return 0


@pytest.fixture
def no_real_trt(monkeypatch):
    """Hide whatever TensorRT modules are installed, so fakes (or nothing) are found."""
    for name in trt_mod.FULL_MODULES + trt_mod.LEAN_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def fake_env(monkeypatch, tmp_path, no_real_trt):
    """Fake full TensorRT 10, one GPU, a fake plugin library in $SSI_PLUGIN_LIBRARY."""
    fake = make_fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(gpu_mod, "_load_libcuda", lambda: _FakeLibcuda())
    lib = tmp_path / "libssi_trt_plugins.so"
    lib.write_bytes(b"SSI fake plugin library")
    monkeypatch.setenv(plugins_mod.ENV_VAR, str(lib))
    return types.SimpleNamespace(trt=fake, lib=lib, tmp=tmp_path)


class _HostDevice:
    """Device buffers in host memory: the backend hands their addresses to the (fake) engine."""

    kind = "host-test"
    stream_handle = 0

    def empty(self, shape, dtype):
        return np.zeros(shape, dtype)

    @staticmethod
    def ptr(buf):
        return buf.ctypes.data

    def upload(self, buf, arr):
        buf[...] = arr

    def download(self, buf):
        return buf.copy()

    def synchronize(self):
        pass

    def event(self):
        return [0.0]

    def record(self, ev):
        import time
        ev[0] = time.perf_counter()

    def elapsed_ms(self, a, b):
        return (b[0] - a[0]) * 1000.0

    def capture(self, launch):
        self.captured = True
        return launch


@pytest.fixture
def fake_gpu_env(fake_env, monkeypatch):
    """``fake_env`` plus host-memory "device" buffers for engines the code loads itself
    (``create_backend``, validate, profile)."""
    from ssi_deploy.tensorrt import device as device_mod
    monkeypatch.setattr(device_mod, "make_device", lambda prefer=None: _HostDevice())
    return fake_env


def write_fake_plan(path, onnx_path, inputs: dict, outputs: list, precision="fp32",
                    layers=None, dense=False) -> Path:
    """A plan the fake runtime loads, with the I/O of a real model, and the sidecar
    ``ssi-deploy build`` writes beside it (source ONNX and its manifest, precision, profiles,
    SSI node -> plugin layer names)."""
    from ssi_deploy.manifest import manifest_from_model_proto

    path = Path(path)
    layers = _engine_json_layers() if layers is None else layers
    info = {"Layers": layers, "Bindings": list(inputs) + list(outputs),
            "FakeIO": {"inputs": inputs, "outputs": list(outputs)}}
    path.write_bytes(b"PLAN" + json.dumps(info).encode())
    manifest = None
    if onnx_path is not None:
        m = onnx.load(str(onnx_path), load_external_data=False)
        found = manifest_from_model_proto(m, str(onnx_path), required=False)
        manifest = found.to_dict() if found is not None else None
    plugin_layers = {} if dense else {lay["Name"]: lay["Name"] for lay in layers
                                      if "plugin" in lay.get("LayerType", "").lower()}
    path.with_name(path.name + ".json").write_text(json.dumps({
        "onnx": str(Path(onnx_path).resolve()) if onnx_path is not None else None,
        "manifest": manifest, "tensorrt": "10.13.0", "precision": precision,
        "profiles": {n: {"min": list(p[0]), "opt": list(p[1]), "max": list(p[2])}
                     for n, p in inputs.items()},
        "dense": dense, "plugin_layers": plugin_layers,
        "ssi_nodes": {n: n.rsplit("/", 1)[-1] for n in plugin_layers}}))
    return path


def _engine_json_layers() -> list:
    return json.loads(_engine_json())["Layers"]
