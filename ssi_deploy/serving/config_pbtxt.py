"""``config.pbtxt`` of a Triton model, written from the export manifest (names, dtypes, shapes)
and, for an engine, from its build sidecar (optimization profile).

Rules the writer keeps (Triton's model configuration and the TensorRT backend's checks):

- with ``max_batch_size > 0`` the first dimension of every input and output is the batch and
  ``dims`` leave it out; an output of shape ``[batch]`` is ``dims: [1]`` with ``reshape { shape:
  [] }`` (the model gives ``[batch]``, clients receive ``[batch, 1]``); with
  ``max_batch_size: 0`` (a fixed batch) ``dims`` are the full shapes;
- dynamic dimensions (axis names in the manifest) are ``-1``;
- ``max_batch_size`` of an engine must not exceed the largest batch of its optimization
  profile (the backend refuses to load the model otherwise), and the profile's smallest batch
  must be 1 (a single request is batch 1);
- requests are batched together (``dynamic_batching``) only when their shapes are equal: the
  dynamic batcher does that itself, the python model concatenates each group.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import SSIError

# manifest dtype -> (config.pbtxt data_type, tritonclient datatype, numpy dtype name)
DATA_TYPES = {"fp32": ("TYPE_FP32", "FP32", "float32"),
              "fp16": ("TYPE_FP16", "FP16", "float16"),
              "int64": ("TYPE_INT64", "INT64", "int64")}


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None  # [batch]-shaped outputs: dims [1], reshape []


@dataclass(frozen=True)
class GraphSpec:
    """One CUDA graph the TensorRT backend captures: a batch size and each input's shape
    (without the batch)."""

    batch_size: int
    inputs: dict  # input name -> dims


@dataclass
class ModelConfig:
    name: str
    max_batch_size: int
    inputs: list[TensorConfig]
    outputs: list[TensorConfig]
    platform: str | None = None  # "tensorrt_plan"
    backend: str | None = None  # "python"
    instance_kind: str = "KIND_CPU"
    instance_count: int = 1
    dynamic_batching: bool = False
    max_queue_delay_us: int = 100
    cuda_graphs: bool = False
    graph_specs: list[GraphSpec] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    default_model_filename: str | None = None


def tensor_configs(specs, batched: bool) -> list[TensorConfig]:
    """Manifest tensors (``TensorSpec``) as config entries; ``batched``: drop the batch dim."""
    out = []
    for t in specs:
        if t.dtype not in DATA_TYPES:
            raise SSIError(f"tensor {t.name}: dtype {t.dtype} has no Triton data type")
        dims = tuple(-1 if isinstance(d, str) else int(d) for d in t.shape)
        reshape = None
        if batched:
            dims = dims[1:]
            if not dims:
                dims, reshape = (1,), ()
        out.append(TensorConfig(t.name, DATA_TYPES[t.dtype][0], dims, reshape))
    return out


def _q(s: str) -> str:
    return json.dumps(str(s))  # a double-quoted string protobuf's text format reads


def _dims(d) -> str:
    return "[ " + ", ".join(str(int(x)) for x in d) + " ]"


def _tensor(t: TensorConfig, ind: str) -> str:
    s = f"{ind}{{\n{ind}  name: {_q(t.name)}\n{ind}  data_type: {t.data_type}\n{ind}  dims: {_dims(t.dims)}\n"
    if t.reshape is not None:
        s += f"{ind}  reshape: {{ shape: {_dims(t.reshape)} }}\n"
    return s + f"{ind}}}"


def render(cfg: ModelConfig) -> str:
    """The config.pbtxt text (protobuf text format of inference.ModelConfig)."""
    lines = [f"name: {_q(cfg.name)}"]
    if cfg.platform:
        lines.append(f"platform: {_q(cfg.platform)}")
    if cfg.backend:
        lines.append(f"backend: {_q(cfg.backend)}")
    if cfg.default_model_filename:
        lines.append(f"default_model_filename: {_q(cfg.default_model_filename)}")
    lines.append(f"max_batch_size: {int(cfg.max_batch_size)}")
    lines.append("input [\n" + ",\n".join(_tensor(t, "  ") for t in cfg.inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor(t, "  ") for t in cfg.outputs) + "\n]")
    lines.append(f"instance_group [\n  {{\n    kind: {cfg.instance_kind}\n    count: "
                 f"{int(cfg.instance_count)}\n  }}\n]")
    if cfg.dynamic_batching:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: "
                     f"{int(cfg.max_queue_delay_us)}\n}}")
    if cfg.cuda_graphs:
        specs = []
        for g in cfg.graph_specs:
            ins = "".join(f"      input {{ key: {_q(k)} value: {{ dim: {_dims(v)} }} }}\n"
                          for k, v in g.inputs.items())
            specs.append(f"    graph_spec {{\n      batch_size: {int(g.batch_size)}\n{ins}    }}\n")
        lines.append("optimization {\n  cuda {\n    graphs: true\n" + "".join(specs) + "  }\n}")
    for k, v in cfg.parameters.items():
        lines.append(f"parameters {{\n  key: {_q(k)}\n  value: {{ string_value: {_q(v)} }}\n}}")
    return "\n".join(lines) + "\n"


def parse(text: str):
    """``text`` parsed into tritonclient's ``model_config_pb2.ModelConfig`` (what Triton reads);
    SSIError when it does not parse or tritonclient is missing."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise SSIError(f"checking a config.pbtxt needs tritonclient ({e}): pip install -e "
                       "'.[serve]'") from None
    msg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise SSIError(f"config.pbtxt does not parse as a Triton ModelConfig: {e}") from None
    return msg
