"""Export SSI models to ONNX with the torch.export-based exporter.

The SSI ops become nodes of domain ``ssi`` (one per op call, attributes exactly those of the
contract plus the TensorRT parser's ``plugin_version``/``plugin_namespace`` strings, weights
and bias as initializer inputs). After conversion, model-local functions give every SSI op a
body of standard ONNX ops (``functions.py``) so ONNX Runtime runs the file as is, and the
manifest (``ssi_deploy.manifest``, metadata key ``ssi.manifest``) records what the export is:
everything a validator needs to rebuild the PyTorch reference.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

import onnx
import torch

from .. import __version__
from ..errors import SSIError
from ..manifest import (Manifest, Preprocessing, Sampling, TensorSpec, Weights, read_manifest,
                        write_into_model_proto)
from ..models.network import check_fpn_input, parse_init_info
from ..outputs import atomic_output, check_output_path
from ..ops import contract as C
from .functions import MAX_OPSET, MIN_OPSET, build_functions
from .node_check import check_ssi_nodes
from .schemas import PARSER_ATTRIBUTES, PLUGIN_NAMESPACE_ATTR, PLUGIN_VERSION_ATTR, register_schemas

INPUT_NAME = "image"
DEFAULT_OPSET = 18
DYNAMIC_AXES = {"batch": 0, "height": 2, "width": 3}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
MAX_SINGLE_FILE_BYTES = 2 * 1024**3 - 1
# ONNX op types that must never appear in an inference graph we ship.
TRAINING_OPS = {"BatchNormalization", "Dropout", "TrainableDropout", "Gradient"}


class ExportError(SSIError):
    """Export could not produce a valid file; the message says why and what to change."""


class VerifyError(ExportError):
    """``verify=True``: the written file disagrees with PyTorch (exit code 1, like validate)."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# Translation of torch.ops.ssi.* into ssi-domain nodes


def _ssi_opset():
    import onnxscript

    return onnxscript.values.Opset(C.DOMAIN, C.OPSET_VERSION)


def _make_translation(op: C.OpDef) -> Callable:
    """An onnxscript (traced) translation for ``torch.ops.ssi.<op>.default``.

    Its signature is generated from the contract: tensor inputs (optional ones default to
    None) then the attributes as annotated int/float keywords, so the exporter passes every
    attribute; the emitted node carries all of them plus the plugin strings.
    """
    params = [inspect.Parameter(i.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=None if i.optional else inspect.Parameter.empty)
              for i in op.inputs]
    annotations: dict[str, type] = {}
    for a in op.attributes:
        typ = int if a.type == "int" else float
        params.append(inspect.Parameter(a.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=typ(a.default), annotation=typ))
        annotations[a.name] = typ
    input_names = [i.name for i in op.inputs]

    def translate(*args, **kwargs):
        bound = dict(zip(input_names + [a.name for a in op.attributes], args))
        bound.update(kwargs)
        inputs = [bound.get(n) for n in input_names]
        while inputs and inputs[-1] is None:  # optional inputs are trailing: omit them
            inputs.pop()
        if any(x is None for x in inputs):
            raise ExportError(f"{op.name}: only trailing inputs may be absent, got {inputs}")
        attrs = op.check_attributes({a.name: bound[a.name] for a in op.attributes
                                     if a.name in bound})
        return getattr(_ssi_opset(), op.name)(
            *inputs, **attrs, **{PLUGIN_VERSION_ATTR: C.PLUGIN_VERSION,
                                 PLUGIN_NAMESPACE_ATTR: C.PLUGIN_NAMESPACE})

    translate.__name__ = f"ssi_{op.torch_name}"
    translate.__qualname__ = translate.__name__
    translate.__signature__ = inspect.Signature(params)
    translate.__annotations__ = annotations
    return translate


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: one entry per contract op, and
    the detector's NMS and RoIAlign (standard ONNX ops, ``detection/deploy_ops.py``)."""
    import ssi_deploy.ops  # noqa: F401  (registers torch.ops.ssi.*)
    from ..detection import deploy_ops

    register_schemas()
    ns = getattr(torch.ops, C.TORCH_NAMESPACE)
    table = {getattr(ns, op.torch_name).default: _make_translation(op) for op in C.OPS.values()}
    table.update(deploy_ops.translation_table())
    return table


# --------------------------------------------------------------------------------------------
# Argument checks (user mistakes -> SSIError)


def _check_input_shape(input_shape) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ExportError(f"input shape {input_shape!r} is not a sequence of 4 integers; "
                          "give N,C,H,W such as (1, 3, 512, 512)") from None
    if len(shape) != 4 or min(shape) <= 0:
        raise ExportError(f"input shape {shape} must be 4 positive integers N,C,H,W, "
                          "e.g. 1x3x512x512")
    if shape[1] != 3:
        raise ExportError(f"input shape {shape} has {shape[1]} channels; SSI models take RGB "
                          "images: use 3 channels (Nx3xHxW)")
    if shape[2] < 32 or shape[3] < 32:
        raise ExportError(f"input shape {shape} is too small: height and width must be at "
                          "least 32 (the backbone downsamples by 32)")
    return shape  # type: ignore[return-value]


def _check_dynamic(dynamic) -> tuple[str, ...]:
    if dynamic is None:
        return ()
    if isinstance(dynamic, str):
        dynamic = [d.strip() for d in dynamic.split(",") if d.strip()]
    dyn = tuple(dict.fromkeys(dynamic))
    bad = [d for d in dyn if d not in DYNAMIC_AXES]
    if bad:
        raise ExportError(f"unknown dynamic axis {bad[0]!r}: choose from "
                          f"{', '.join(DYNAMIC_AXES)} (comma-separated), or none for a static file")
    return dyn


def check_opset(opset) -> int:
    try:
        value = int(opset)
    except (TypeError, ValueError):
        raise ExportError(f"opset {opset!r} is not an integer; use {MIN_OPSET}..{MAX_OPSET} "
                          f"(default {DEFAULT_OPSET})") from None
    if not MIN_OPSET <= value <= MAX_OPSET:
        raise ExportError(f"ONNX opset {value} is not supported: use {MIN_OPSET}..{MAX_OPSET} "
                          f"(the SSI reference bodies need BitwiseXor and OptionalHasElement "
                          f"of opset 18; default {DEFAULT_OPSET})")
    return value


def _check_granularity(granularity) -> str:
    if granularity not in GRANULARITIES:
        raise ExportError(f"granularity {granularity!r} is not supported: use block (one "
                          "SSIBottleneck node per SSI block) or ops (the three building-block ops)")
    return granularity


def _set_granularity(model: torch.nn.Module, granularity: str) -> int:
    """Every SSI block of ``model`` exports in ``granularity``; returns how many blocks."""
    from ..models.blocks import SSIBottleneck

    blocks = [b for b in model.modules() if isinstance(b, SSIBottleneck)]
    for b in blocks:
        b.granularity = granularity
    return len(blocks)


def _check_dtype(dtype) -> str:
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not supported: use fp32 or fp16")
    return dtype


# --------------------------------------------------------------------------------------------
# Post-processing of the exported ModelProto


def _normalise_ssi_nodes(model: onnx.ModelProto) -> Counter:
    """Give every SSI node the full contract attribute set (ordered) and the plugin strings;
    reject nodes with unknown attributes or input counts outside the contract."""
    counts: Counter = Counter()
    for node in model.graph.node:
        if node.domain != C.DOMAIN:
            continue
        op = C.OPS.get(node.op_type)
        if op is None:
            raise ExportError(f"unexpected node {node.op_type} in domain {C.DOMAIN}")
        if not op.min_inputs <= len(node.input) <= len(op.inputs) or "" in node.input:
            raise ExportError(f"{node.op_type} node {node.name} has inputs {list(node.input)}; "
                              f"the contract expects {op.min_inputs}..{len(op.inputs)}")
        given = {}
        for a in node.attribute:
            if a.name in PARSER_ATTRIBUTES:
                continue
            given[a.name] = onnx.helper.get_attribute_value(a)
        values = op.check_attributes(given)
        del node.attribute[:]
        for a in op.attributes:
            node.attribute.append(onnx.helper.make_attribute(a.name, values[a.name]))
        node.attribute.append(onnx.helper.make_attribute(PLUGIN_VERSION_ATTR, C.PLUGIN_VERSION))
        node.attribute.append(onnx.helper.make_attribute(PLUGIN_NAMESPACE_ATTR,
                                                         C.PLUGIN_NAMESPACE))
        counts[node.op_type] += 1
    return counts


# Inputs of SSI nodes that must be initializers (TensorRT passes them to the plugin as weights).
WEIGHT_INPUTS = {op.name: op.weight_inputs for op in C.OPS.values() if op.weight_inputs}
GRANULARITIES = ("block", "ops")


def _constant_value(graph: onnx.GraphProto, name: str, producers: dict, inits: dict,
                    opset: int):
    """Value of ``name`` if it depends on initializers and constant nodes only, else None."""
    from onnx.reference import ReferenceEvaluator

    needed, stack, seen = [], [name], set()
    while stack:
        cur = stack.pop()
        if cur in seen or cur in inits or cur == "":
            continue
        seen.add(cur)
        node = producers.get(cur)
        if node is None or node.domain not in ("", "ai.onnx") or len(node.attribute) and any(
                a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            return None  # a graph input, a custom node or a subgraph: not a plain constant
        needed.append(node)
        stack.extend(node.input)
    order = [n for n in graph.node if any(n is m for m in needed)]  # keep topological order
    used = {i for n in order for i in n.input}
    sub = onnx.helper.make_graph(order, "const", [],
                                 [onnx.helper.make_tensor_value_info(name, 0, None)],
                                 [inits[i] for i in used if i in inits])
    opsets = [onnx.helper.make_opsetid("", opset)]
    (value,) = ReferenceEvaluator(onnx.helper.make_model(sub, opset_imports=opsets)).run(None, {})
    return value


def _materialise_weight_inputs(model: onnx.ModelProto) -> int:
    """Make every SSI weight/bias input an initializer (folding constant producers such as
    ConstantOfShape zeros), then drop nodes nothing reads any more. Returns how many inputs
    were folded."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    folded: dict[str, str] = {}
    for node in graph.node:
        roles = WEIGHT_INPUTS.get(node.op_type) if node.domain == C.DOMAIN else None
        if not roles:
            continue
        names = [i.name for i in C.OPS[node.op_type].inputs]
        for role in roles:
            k = names.index(role)
            src = node.input[k]
            if src in inits:
                continue
            if src not in folded:
                value = _constant_value(graph, src, producers, inits, _default_opset(model))
                if value is None:
                    raise ExportError(f"{node.op_type} node {node.name}: {role} {src!r} is "
                                      "computed from the input; SSI weights and biases must be "
                                      "constants (fold them before export)")
                new = f"ssi_const_{src}"
                while new in inits:
                    new += "_"
                tensor = numpy_helper.from_array(value, new)
                graph.initializer.append(tensor)
                inits[new] = tensor
                folded[src] = new
            node.input[k] = folded[src]
    # dead-code elimination of what fed the folded inputs
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        for f in graph.node:
            for a in f.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    used |= {i for n in a.g.node for i in n.input}
        dead = [n for n in graph.node if n.output and all(o not in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return len(folded)


def _module_scope(node: onnx.NodeProto) -> str | None:
    """The PyTorch module path that emitted ``node`` (torch.onnx's name scopes), or None."""
    import ast

    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            return scopes[-2] if len(scopes) >= 2 and scopes[-2] else None
    return None


def _name_block_weights(model: onnx.ModelProto) -> None:
    """Give every SSIBottleneck weight its own initializer named ``<module>.<input>`` (e.g.
    ``backbone.layer2.0.conv2_weight``) instead of torch.export's ``lifted_tensor_N``, so a
    person (and a test) can find the weights of a block; shared empty parts are copied."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: Counter = Counter(i for n in graph.node for i in n.input)
    taken = set(inits) | {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    for node in graph.node:
        if node.domain != C.DOMAIN or node.op_type != C.SSI_BOTTLENECK.name:
            continue
        scope = _module_scope(node) or node.name
        for k, spec in enumerate(C.SSI_BOTTLENECK.inputs):
            old = node.input[k]
            if not spec.weight or old not in inits:
                continue
            new = f"{scope}.{spec.name}"
            while new in taken:
                new += "_"
            tensor = numpy_helper.from_array(numpy_helper.to_array(inits[old]), new)
            graph.initializer.append(tensor)
            taken.add(new)
            node.input[k] = new
            readers[old] -= 1
    keep = [t for t in graph.initializer if readers.get(t.name, 1) > 0]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ExportError("exported model has no default-domain opset import")


def attach_functions(model: onnx.ModelProto) -> None:
    """Replace any ssi-domain functions by the reference bodies for the model's opset."""
    opset = _default_opset(model)
    keep = [f for f in model.functions if f.domain != C.DOMAIN]
    del model.functions[:]
    model.functions.extend(keep + build_functions(opset))
    if not any(i.domain == C.DOMAIN for i in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(C.DOMAIN, C.OPSET_VERSION))


def read_metadata(path: str | os.PathLike):
    """The manifest of an exported file (:func:`ssi_deploy.manifest.read_manifest`)."""
    return read_manifest(path)


def reference_evaluator(path_or_model, **kwargs):
    """``onnx.reference.ReferenceEvaluator`` for an exported model (path or ModelProto).

    onnx.reference calls a model-local function with exactly as many inputs as the function
    declares, while SSI nodes omit trailing optional inputs (the contract). This pads those
    calls with empty names (= absent optional input, which the bodies handle) in an in-memory
    copy; the file itself is not changed. ONNX Runtime needs no such step.
    """
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path_or_model)) if not isinstance(path_or_model, onnx.ModelProto) \
        else copy.deepcopy(path_or_model)
    for node in model.graph.node:
        op = C.OPS.get(node.op_type) if node.domain == C.DOMAIN else None
        if op is not None:
            node.input.extend([""] * (len(op.inputs) - len(node.input)))
    return ReferenceEvaluator(model, **kwargs)


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        if isinstance(v, dict):
            return {str(k): _jsonable(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [_jsonable(x) for x in v]
        if torch.is_tensor(v):
            return v.tolist()
        return str(v)


def summarize(path: str | os.PathLike) -> dict:
    """Node counts per SSI op type, total nodes, file size, input/output names of a file."""
    p = Path(path)
    model = onnx.load(str(p), load_external_data=False)
    counts = Counter(n.op_type for n in model.graph.node if n.domain == C.DOMAIN)
    return {
        "path": str(p),
        "bytes": p.stat().st_size,
        "ssi_nodes": {name: counts.get(name, 0) for name in C.OPS},
        "nodes": len(model.graph.node),
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "opset": _default_opset(model),
    }


# --------------------------------------------------------------------------------------------
# The exporter


def _fold_batchnorm(model: torch.nn.Module) -> None:
    if hasattr(model, "fuse_for_inference"):
        model.fuse_for_inference()


def _cast_tensor(v, dtype):
    if torch.is_tensor(v):
        return v.to(dtype) if v.is_floating_point() else v
    if isinstance(v, tuple):
        return tuple(_cast_tensor(x, dtype) for x in v)
    if isinstance(v, list):
        return [_cast_tensor(x, dtype) for x in v]
    if isinstance(v, dict):
        return {k: _cast_tensor(x, dtype) for k, x in v.items()}
    return v


def _to_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model.to(dtype)``, plus plain tensor attributes (e.g. BatchNorm-folded weights kept
    outside parameters and buffers), which ``Module.to`` does not touch. The modules a model
    names in ``float32_modules`` (a detector's heads: box coordinates) stay float32."""
    model = model.to(dtype)
    for module in model.modules():
        for name, v in list(vars(module).items()):
            if name.startswith("_") or isinstance(v, torch.nn.Module):
                continue
            cast = _cast_tensor(v, dtype)
            if cast is not v:
                object.__setattr__(module, name, cast)
    for name in getattr(model, "float32_modules", ()):
        getattr(model, name).float()
    return model


def _freeze_scalar_parameters(model: torch.nn.Module) -> int:
    """Turn 0-dim ``*sigma*`` parameters into Python floats (on the export copy).

    The SSI forward passes sigma to GaussianInterp as a float attribute (``float(param)``),
    which torch.export cannot trace on a parameter (a data-dependent value); frozen to a
    float, it becomes the node attribute. Returns how many were frozen.
    """
    n = 0
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.dim() == 0 and "sigma" in name:
                del module._parameters[name]
                object.__setattr__(module, name, float(p.detach()))
                n += 1
    return n


def _dynamic_shapes(dynamic: Iterable[str], n_inputs: int = 1):
    """Per input: the image's symbolic axes; a detector's image_info shares the batch."""
    dims = {DYNAMIC_AXES[d]: d for d in dynamic}
    if not dims:
        return None
    image = {k: dims[k] for k in sorted(dims)}
    info = {0: "batch"} if "batch" in dims.values() else None
    return (image,) + (info,) * (n_inputs - 1)


def _check_graph(model: onnx.ModelProto, dynamic: tuple[str, ...]) -> None:
    ops = Counter(n.op_type for n in model.graph.node)
    bad = sorted(set(ops) & TRAINING_OPS)
    if bad:
        raise ExportError(f"the exported graph still has {', '.join(bad)}: fold BatchNorm "
                          "(model.fuse_for_inference()) and export an eval-mode model")
    (inp,) = [i for i in model.graph.input if i.name == INPUT_NAME][:1] or [None]
    if inp is None:
        raise ExportError(f"exported graph has no input named {INPUT_NAME!r}")
    dims = inp.type.tensor_type.shape.dim
    for name, axis in DYNAMIC_AXES.items():
        is_dyn = bool(dims[axis].dim_param) or not dims[axis].HasField("dim_value")
        if name in dynamic and not is_dyn:
            raise ExportError(f"the exporter fixed the {name} of the input to "
                              f"{dims[axis].dim_value}; the model's forward specialises it "
                              "(drop it from --dynamic or fix the model)")


def estimated_file_bytes(model: torch.nn.Module, dtype: str) -> int:
    """About what the ONNX file will take: the weights in ``dtype`` plus 10 % for the graph."""
    per = 2 if dtype == "fp16" else 4
    n = sum(t.numel() for t in model.state_dict().values() if torch.is_tensor(t))
    return int(n * per * 1.1)


def check_finite_weights(model: torch.nn.Module) -> None:
    """Refuse weights with NaN/Inf: every output would be non-finite (name the first)."""
    bad = [(k, t) for k, t in model.state_dict().items()
           if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        k, t = bad[0]
        n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise ExportError(f"the weights hold non-finite values: {k} has {n_nan} NaN and {n_inf} "
                          f"Inf{more}; the checkpoint is damaged, fix or replace it")


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in value_info.type.tensor_type.shape.dim)


_ELEM_DTYPES = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16",
                onnx.TensorProto.INT64: "int64"}


def _dtype_of(value_info, default: str) -> str:
    return _ELEM_DTYPES.get(value_info.type.tensor_type.elem_type, default)


def build_manifest(m, describe: dict, proto: onnx.ModelProto, shape, dyn, dtype: str,
                   opset: int, counts: Counter, extra: dict, granularity: str) -> Manifest:
    """The manifest of the file being written (see ``ssi_deploy.manifest``)."""
    kind, value = parse_init_info(describe.get("init", "")) or (None, None)
    if kind == "checkpoint":
        weights = Weights("checkpoint", sha256=value)
    elif kind == "random":
        weights = Weights("random", seed=int(value))
    else:  # a module not built by create_model: runs anywhere, but has no reference
        weights = Weights("untracked")
    norm = describe.get("normalisation", describe.get("normalization")) or {}
    detector = describe.get("detector")
    test_scale = tuple(detector["test_scale"]) if detector else None
    pre = Preprocessing(tuple(float(v) for v in norm.get("mean", (0.0, 0.0, 0.0))),
                        tuple(float(v) for v in norm.get("std", (1.0, 1.0, 1.0))),
                        "RGB" if norm.get("rgb", True) else "BGR", test_scale=test_scale)
    masks = dict(zip(getattr(m, "mask_names", []) or [], getattr(m, "sampling_layers", []) or []))
    roles = dict(getattr(m, "output_roles", {}) or {})
    outputs = []
    for o in proto.graph.output:
        layer = masks.get(o.name)
        kind = "mask" if layer else "detections" if o.name in roles else "feature"
        outputs.append(TensorSpec(o.name, kind, _dtype_of(o, dtype), _dims(o), layer,
                                  roles.get(o.name)))
    inputs = [TensorSpec(i.name, "image" if k == 0 else "image_info", _dtype_of(i, dtype),
                         _dims(i))
              for k, i in enumerate(i for i in proto.graph.input
                                    if i.name not in {t.name for t in proto.graph.initializer})]
    fd = describe.get("forced_density")
    return Manifest(
        arch=describe.get("arch", type(m).__name__), with_fpn=bool(describe.get("with_fpn")),
        sparse=bool(describe.get("sparse", False)), weights=weights,
        sampling=Sampling(describe.get("sampling") or "threshold", int(describe.get("seed") or 0),
                          None if fd is None else float(fd)),
        precision=dtype, inputs=tuple(inputs), outputs=tuple(outputs), preprocessing=pre,
        example_shape=tuple(int(d) for d in shape), dynamic=tuple(dyn), granularity=granularity,
        semantics_version=C.SEMANTICS_VERSION, ssi_opset_version=C.OPSET_VERSION,
        onnx_opset=opset, ssi_nodes={name: counts.get(name, 0) for name in C.OPS},
        tool_version=__version__, torch_version=torch.__version__,
        extra={str(k): _jsonable(v) for k, v in extra.items()},
        detector=None if detector is None else _jsonable(
            {k: v for k, v in detector.items() if k != "postprocess"}))


def export_onnx(model: torch.nn.Module, path: str | os.PathLike,
                input_shape=(1, 3, 512, 512), dynamic=("batch", "height", "width"),
                opset: int = DEFAULT_OPSET, dtype: str = "fp32", expose_masks: bool | None = None,
                metadata: dict | None = None, verify: bool = False, granularity: str = "block",
                progress: Callable[[str], None] | None = None) -> Path:
    """Export ``model`` (an SSI or dense ssi-deploy model) to one self-contained ONNX file.

    The caller's model is left untouched (a copy is fused, cast and exported). ``dynamic``
    names the input axes kept symbolic (subset of batch, height, width). ``dtype="fp16"``
    exports half-precision tensors throughout (the SSI bodies compute in float32 inside).
    ``expose_masks`` appends one mask output per sampling layer (``mask_<layer>``); by
    default (None) an SSI model exposes them, so validation can compare sampling decisions
    and replay the backend's masks. ``metadata`` adds JSON-serialisable entries to the
    manifest's ``extra``. ``verify`` runs the file in ONNX Runtime at the example shape and at a second shape along the dynamic
    axes and compares with the PyTorch model (catches shapes frozen at export). Returns the path.
    """
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    shape = _check_input_shape(input_shape)
    if getattr(model, "with_fpn", False):
        check_fpn_input(shape[2], shape[3])
    dyn = _check_dynamic(dynamic)
    opset = check_opset(opset)
    dtype = _check_dtype(dtype)
    granularity = _check_granularity(granularity)
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"export_onnx needs a torch.nn.Module, got {type(model).__name__}")
    # the output is checked before minutes of export (room for the weights and some graph)
    path = check_output_path(path, "output", ".onnx",
                             expected_bytes=estimated_file_bytes(model, dtype))
    check_finite_weights(model)
    metadata = dict(metadata or {})

    if expose_masks is None:
        expose_masks = bool(getattr(getattr(model, "spec", None), "sparse", False))
    say("preparing the model (eval, BatchNorm folded"
        + (", fp16" if dtype == "fp16" else "") + (", masks exposed" if expose_masks else "")
        + ")")
    m = copy.deepcopy(model)
    m.eval()
    m.requires_grad_(False)  # inference graph: eval paths that branch on autograd take the op path
    _fold_batchnorm(m)
    _freeze_scalar_parameters(m)
    n_blocks = _set_granularity(m, granularity)
    if expose_masks:
        if not hasattr(m, "expose_masks"):
            raise ExportError(f"{type(model).__name__} cannot expose masks (no sampling layers)")
        m.expose_masks = True
    elif hasattr(m, "expose_masks"):
        m.expose_masks = False
    m = _to_dtype(m, DTYPES[dtype])
    output_names = list(getattr(m, "output_names", []) or [])
    describe = m.describe() if hasattr(m, "describe") else {}

    spatial = sorted({"height", "width"} & set(dyn))
    min_side = getattr(m, "min_dynamic_side", None)
    small = [n for n, v in (("height", shape[2]), ("width", shape[3]))
             if n in spatial and min_side and v < min_side]
    if small:
        # torch.export specialises sizes of 1: a 1-wide coarsest level (P6, stride 64) would be
        # frozen to 1, and the file would fail at any larger input
        raise ExportError(f"input shape {'x'.join(map(str, shape))} is too small for a detector "
                          f"export with dynamic {' and '.join(small)}: give at least "
                          f"{min_side} (the coarsest FPN level P6 must be 2 or more wide), e.g. "
                          f"--input-shape 1x3x800x1344, or export static (--dynamic batch)")
    if describe.get("forced_density") is not None and spatial and granularity == "ops":
        # the ops form picks k = forced_count(density, H * W) in Python: torch.export freezes k
        # at the example shape, so the file would keep the wrong share at any other size (the
        # block op computes k inside, from its input's shape)
        raise ExportError(f"forced density {describe['forced_density']} cannot be exported in "
                          f"the ops form with dynamic {' and '.join(spatial)}: export with "
                          "--granularity block, --dynamic batch (static height/width) or without "
                          "forced density")

    gen = torch.Generator().manual_seed(0)
    example = torch.rand(shape, generator=gen).to(DTYPES[dtype])
    # a detector also takes image_info (resized size and scale of each image)
    examples = tuple(m.example_inputs(example)) if hasattr(m, "example_inputs") else (example,)
    input_names = list(getattr(m, "input_names", [INPUT_NAME]))

    say(f"exporting with torch.export (opset {opset}, dynamic: {', '.join(dyn) or 'none'}) ...")
    table = translation_table()
    reg_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = reg_log.level
    reg_log.setLevel(logging.ERROR)  # "torchvision is not installed" is noise here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                m, examples, dynamo=True, custom_translation_table=table,
                input_names=input_names, output_names=output_names or None,
                opset_version=opset, dynamic_shapes=_dynamic_shapes(dyn, len(examples)),
                optimize=True,
                external_data=False, verbose=False, report=False)
    except Exception as e:  # noqa: BLE001
        text = str(e)
        if "Constraints violated" in text:
            first = text.strip().splitlines()[0][:300]
            raise ExportError(f"torch.export could not keep {', '.join(dyn)} dynamic for "
                              f"this model ({first}); export with --dynamic batch or a "
                              "static shape") from e
        raise
    finally:
        reg_log.setLevel(level)
    proto = program.model_proto
    if output_names and len(proto.graph.output) != len(output_names):
        raise ExportError(f"the model returned {len(proto.graph.output)} outputs but names "
                          f"{len(output_names)} ({output_names})")
    if _default_opset(proto) != opset:
        raise ExportError(f"the exporter produced opset {_default_opset(proto)} instead of {opset}")

    say("attaching SSI function bodies and metadata")
    counts = _normalise_ssi_nodes(proto)
    check_ssi_nodes(proto, path, fix="fix the value the model passes to torch.ops.ssi.*")
    _materialise_weight_inputs(proto)
    _name_block_weights(proto)
    attach_functions(proto)
    _check_graph(proto, dyn)
    form = ("block" if counts.get(C.SSI_BOTTLENECK.name) else "ops" if sum(counts.values())
            else "dense")  # what the graph holds (a model of bare ops has no blocks)
    if n_blocks and form != granularity:
        raise ExportError(f"asked for granularity {granularity}, but the graph is in {form} form")
    manifest = build_manifest(m, describe, proto, shape, dyn, dtype, opset, counts, metadata, form)
    write_into_model_proto(proto, manifest)
    proto.producer_name, proto.producer_version = "ssi-deploy", __version__

    say("checking the model (onnx.checker, full)")
    register_schemas()
    size = proto.ByteSize()
    if size > MAX_SINGLE_FILE_BYTES:
        raise ExportError(f"the model is {size / 2**30:.2f} GiB, over the 2 GiB limit of one "
                          "ONNX file; export fp16 or a smaller architecture")
    onnx.checker.check_model(proto, full_check=True)
    check_output_path(path, "output", ".onnx", expected_bytes=size)
    with atomic_output(path, "ONNX file") as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    if verify:
        say("verifying with ONNX Runtime against PyTorch")
        rep = verify_export(m, path, shape, dyn, dtype)
        agree = "" if rep["mask_agreement"] is None else \
            f", mask decisions agree {rep['mask_agreement']:.2%}"
        say(f"verified at {', '.join('x'.join(map(str, s)) for s in rep['shapes'])}: max feature "
            f"error {rep['max_feature_error']:.1e} of range{agree}")
    return path


def verify_export(model: torch.nn.Module, path: Path, shape, dynamic, dtype: str) -> dict:
    """Run ``path`` in ONNX Runtime at ``shape`` and at a second shape along ``dynamic``;
    compare with ``model`` (the prepared export copy), fed the same input in float32.

    fp32: every mask output must take identical sampling decisions and every feature must
    agree within 1e-4 of its range. fp16: outputs must be finite and, when masks are
    exposed, at least 90 % of mask decisions must agree (near-zero logits flip in fp16 and a
    flip changes the features downstream, so feature errors are reported, not judged).
    Returns {"max_feature_error": relative, "mask_agreement": share or None, "shapes": [...]}.
    """
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    mask_names = set(getattr(model, "mask_names", []) or [])
    n, c, h, w = shape
    shapes = [tuple(shape)]
    alt = (2 if "batch" in dynamic else n, c, h + 32 if "height" in dynamic else h,
           w + 32 if "width" in dynamic else w)
    if alt != tuple(shape):
        shapes.append(alt)
    gen = torch.Generator().manual_seed(1)
    ref_model = _to_dtype(copy.deepcopy(model), torch.float32) if dtype == "fp16" else model
    roles = {role: name for name, role in (getattr(model, "output_roles", {}) or {}).items()}
    max_err, agree, total = 0.0, 0, 0
    for shp in shapes:
        if roles:  # a detector: smooth image-like input (noise saturates random heads' scores)
            from ..models.init import _smooth_image
            x = _smooth_image(gen, shp)
            xs = model.example_inputs(x)
        else:
            xs = (torch.rand(shp, generator=gen),)
        feeds = {n: (t.to(DTYPES[dtype]) if k == 0 else t).numpy()
                 for k, (n, t) in enumerate(zip(sess_inputs(sess), xs))}
        got = sess.run(None, feeds)
        with torch.no_grad():
            want = [t.float().numpy() if t.is_floating_point() else t.numpy()
                    for t in ref_model(*xs)]
        if roles:
            _verify_detections(dict(zip(names, got)), dict(zip(names, want)), roles, dtype, shp)
        for name, a, b in zip(names, got, want):
            if name in roles.values():
                continue
            a = a.astype(np.float32)
            if a.shape != b.shape:
                raise VerifyError(f"verify: output {name} has shape {a.shape} in ONNX Runtime "
                                  f"but {b.shape} in PyTorch at input {shp}")
            if not np.isfinite(a).all():
                raise VerifyError(f"verify: output {name} has non-finite values at input {shp}")
            if name in mask_names:
                flips = int(((a > 0) != (b > 0)).sum())
                agree += a.size - flips
                total += a.size
                if dtype == "fp32" and flips:
                    raise VerifyError(f"verify: {name} differs at {flips} positions at input "
                                      f"{shp}; the export froze something shape-dependent")
                continue
            err = float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-6))
            max_err = max(max_err, err)
            if dtype == "fp32" and err > 1e-4:
                raise VerifyError(f"verify: {name} differs from PyTorch by {err:.2e} of its "
                                  f"range at input {shp}")
    share = agree / total if total else None
    if share is not None and share < 0.9:
        raise VerifyError(f"verify: only {share:.1%} of the mask decisions agree with PyTorch")
    return {"max_feature_error": max_err, "mask_agreement": share, "shapes": shapes}


def sess_inputs(sess) -> list[str]:
    return [i.name for i in sess.get_inputs()]


def _verify_detections(got: dict, want: dict, roles: dict, dtype: str, shape) -> None:
    """A detector's outputs: matched box by box (``validation.detections``)."""
    from ..validation.detections import DetectionTolerance, compare_detections

    c = compare_detections(want, got, roles, DetectionTolerance.for_dtype(dtype))
    if not c.passed:
        raise VerifyError(f"verify: at input {shape} " + (c.failure() or "detections differ"))
