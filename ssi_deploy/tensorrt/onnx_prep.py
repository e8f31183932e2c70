"""Preparing an exported SSI ONNX model for the TensorRT ONNX parser.

The exporter writes each SSI op as a node of the ``ssi`` domain plus a model-local function
with the dense reference body (ONNX Runtime runs that). TensorRT's parser would inline such a
function instead of using the plugin (10.1 always, 10.15+/11.x unless the override flag or a
``plugin_namespace`` attribute is there), so before parsing we:

- remove the model-local functions of the SSI ops,
- make sure every SSI node carries ``plugin_version`` / ``plugin_namespace`` attributes
  (added from the contract where missing),
- give every SSI node a unique name, so the engine inspector's layer metadata can be matched
  back to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from ..errors import SSIError
from ..ops import contract

PLUGIN_VERSION_ATTR = contract.PLUGIN_VERSION_ATTR
PLUGIN_NAMESPACE_ATTR = contract.PLUGIN_NAMESPACE_ATTR


@dataclass(frozen=True)
class SSINode:
    name: str
    op_type: str
    plugin_version: str
    plugin_namespace: str


def is_ssi_node(node: onnx.NodeProto) -> bool:
    return node.domain == contract.DOMAIN and node.op_type in contract.OPS


def _attr_str(node: onnx.NodeProto, name: str) -> str | None:
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def ssi_nodes(model: onnx.ModelProto) -> list[SSINode]:
    """The SSI nodes of the main graph (plugin version/namespace as the parser will read them)."""
    out = []
    for n in model.graph.node:
        if is_ssi_node(n):
            out.append(SSINode(n.name, n.op_type,
                               _attr_str(n, PLUGIN_VERSION_ATTR) or contract.PLUGIN_VERSION,
                               _attr_str(n, PLUGIN_NAMESPACE_ATTR) or contract.PLUGIN_NAMESPACE))
    return out


def prepare_for_tensorrt(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[SSINode], list[str]]:
    """A copy of ``model`` ready for the parser; returns (model, SSI nodes, removed functions).

    Nested graphs (If/Loop bodies) are not searched: the exporter never puts SSI nodes there.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    used = {n.name for n in m.graph.node if n.name}
    counter = 0
    for n in m.graph.node:
        if not is_ssi_node(n):
            continue
        if not n.name:
            while f"{n.op_type}_{counter}" in used:
                counter += 1
            n.name = f"{n.op_type}_{counter}"
            used.add(n.name)
        names = {a.name for a in n.attribute}
        if PLUGIN_VERSION_ATTR not in names:
            n.attribute.append(helper.make_attribute(PLUGIN_VERSION_ATTR, contract.PLUGIN_VERSION))
        if PLUGIN_NAMESPACE_ATTR not in names:
            n.attribute.append(helper.make_attribute(PLUGIN_NAMESPACE_ATTR, contract.PLUGIN_NAMESPACE))
    dup = sorted({n.name for n in m.graph.node if is_ssi_node(n)
                  and sum(1 for k in m.graph.node if k.name == n.name) > 1})
    if dup:
        raise SSIError(f"SSI node names are not unique ({', '.join(dup)}): re-export the model")
    removed = []
    keep = []
    for f in m.functions:
        if f.domain == contract.DOMAIN and f.name in contract.OPS:
            removed.append(f"{f.domain}.{f.name}")
        else:
            keep.append(f)
    del m.functions[:]
    m.functions.extend(keep)
    return m, ssi_nodes(m), removed


def float_input_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """Graph inputs (initializers excluded) of floating type -> 'float32' / 'float16' / ..."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits or not i.type.HasField("tensor_type"):
            continue
        et = i.type.tensor_type.elem_type
        if et in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                  onnx.TensorProto.DOUBLE):
            out[i.name] = helper.tensor_dtype_to_np_dtype(et).name if et != onnx.TensorProto.BFLOAT16 else "bfloat16"
    return out


def model_precision(model: onnx.ModelProto) -> str:
    """'fp16' when every floating graph input is float16, else 'fp32'."""
    dts = set(float_input_dtypes(model).values())
    return "fp16" if dts == {"float16"} else "fp32"


def input_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    """Graph inputs -> dims (int, or the symbolic name / '?' for dynamic ones)."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = []
        for d in i.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or "?")
        out[i.name] = tuple(dims)
    return out


def load_onnx(path) -> onnx.ModelProto:
    """The model at ``path``, its SSI nodes checked against the op contract (one-line errors)."""
    from ..export.node_check import check_ssi_nodes

    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise SSIError(f"ONNX file {path} does not exist") from None
    except Exception as e:
        raise SSIError(f"{path} is not a readable ONNX model ({' '.join(str(e).split())[:200]})") from None
    return check_ssi_nodes(model, path)
