"""ONNX schemas of the SSI ops (domain ``ssi``), generated from the op contract.

``onnx.defs.register_schema`` is process-global and refuses a second registration, so
:func:`register_schemas` is idempotent (guarded by a lock and a lookup). Once registered,
``onnx.checker`` validates SSI nodes: inputs, the contract's int/float attributes and the two
string attributes the TensorRT ONNX parser reads (``plugin_version``, ``plugin_namespace``).
"""

from __future__ import annotations

import threading

import onnx
from onnx import defs

from ..ops import contract as C

PLUGIN_VERSION_ATTR = C.PLUGIN_VERSION_ATTR
PLUGIN_NAMESPACE_ATTR = C.PLUGIN_NAMESPACE_ATTR
PARSER_ATTRIBUTES = (PLUGIN_VERSION_ATTR, PLUGIN_NAMESPACE_ATTR)

TYPE_CONSTRAINT = ("T", ["tensor(float)", "tensor(float16)"], "fp32 or fp16 I/O")

_lock = threading.Lock()


def _default_attr(a: C.Attribute) -> onnx.AttributeProto:
    value = int(a.default) if a.type == "int" else float(a.default)
    return onnx.helper.make_attribute(a.name, value)


def build_schema(op: C.OpDef) -> defs.OpSchema:
    """The ``OpSchema`` of one contract op (inputs, outputs, attributes with defaults)."""
    Opt = defs.OpSchema.FormalParameterOption
    inputs = [defs.OpSchema.FormalParameter(i.name, "T", i.doc,
                                            param_option=Opt.Optional if i.optional else Opt.Single)
              for i in op.inputs]
    outputs = [defs.OpSchema.FormalParameter(o, "T", "") for o in op.outputs]
    attrs = [defs.OpSchema.Attribute(a.name, _default_attr(a), a.doc) for a in op.attributes]
    attrs.append(defs.OpSchema.Attribute(PLUGIN_VERSION_ATTR, defs.OpSchema.AttrType.STRING,
                                         "TensorRT plugin version (read by the ONNX parser)",
                                         required=False))
    attrs.append(defs.OpSchema.Attribute(PLUGIN_NAMESPACE_ATTR, defs.OpSchema.AttrType.STRING,
                                         "TensorRT plugin namespace (read by the ONNX parser)",
                                         required=False))
    return defs.OpSchema(op.name, C.DOMAIN, C.OPSET_VERSION, op.doc, inputs=inputs,
                         outputs=outputs, type_constraints=[TYPE_CONSTRAINT], attributes=attrs)


def schemas_registered() -> bool:
    return all(defs.has(op.name, C.OPSET_VERSION, C.DOMAIN) for op in C.OPS.values())


def register_schemas() -> None:
    """Register the SSI schemas with onnx (once per process; later calls do nothing)."""
    with _lock:
        for op in C.OPS.values():
            if not defs.has(op.name, C.OPSET_VERSION, C.DOMAIN):
                defs.register_schema(build_schema(op))
