"""Load-time check of the SSI nodes of an ONNX model against the op contract.

An exported file can be edited (by hand, by a graph tool, by an older exporter) before it
reaches ONNX Runtime, the PyTorch reference or the TensorRT builder. Out-of-range attributes
then either run silently (the function bodies compute *something* for ``mode=9``) or fail
deep inside a runtime with an error that names no node. :func:`check_ssi_nodes` walks the
graph once and refuses such a file with one line that names the file, the node, the op, the
attribute, its value and the allowed values (all from ``ssi_deploy.ops.contract``, the same
definition the TensorRT plugins' checks are generated from).

The model-local function bodies of the SSI ops are ours (written by the exporter from the
contract) and are not checked.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper

from ..errors import SSIError
from ..ops import contract as C

REEXPORT = "re-export with `ssi-deploy export`"
FIX_ATTRIBUTE = f"fix the attribute or {REEXPORT}"
_PARSER_ATTRIBUTES = (C.PLUGIN_VERSION_ATTR, C.PLUGIN_NAMESPACE_ATTR)
_KINDS = {"int": onnx.AttributeProto.INT, "float": onnx.AttributeProto.FLOAT}


def _kind_name(t: int) -> str:
    return onnx.AttributeProto.AttributeType.Name(t)


def _nodes(graph: onnx.GraphProto, where: str = ""):
    """(node, index, where) for the nodes of ``graph`` and of its nested graphs (If/Loop)."""
    for i, node in enumerate(graph.node):
        yield node, i, where
        for a in node.attribute:
            sub = f"{where}{node.name or node.op_type}/{a.name}/"
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(a.g, sub)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for k, g in enumerate(a.graphs):
                    yield from _nodes(g, f"{sub}{k}/")


def node_problems(node: onnx.NodeProto) -> tuple[list[str], str]:
    """What is wrong with one ``ssi``-domain node, and the fix; ([], "") when nothing is."""
    op = C.OPS.get(node.op_type)
    if op is None:
        return ([f"op type {node.op_type} is not an SSI op of this contract "
                 f"(known: {', '.join(C.OPS)})"], REEXPORT)
    problems: list[str] = []
    inputs = list(node.input)
    if not op.min_inputs <= len(inputs) <= len(op.inputs) or "" in inputs:
        names = ", ".join(i.name + (" (optional)" if i.optional else "") for i in op.inputs)
        want = (str(op.min_inputs) if op.min_inputs == len(op.inputs)
                else f"{op.min_inputs} to {len(op.inputs)}")
        problems.append(f"{op.name} has inputs {inputs}; the contract expects {want} non-empty "
                        f"inputs ({names}), absent optional ones omitted")
    if len(node.output) != len(op.outputs):
        problems.append(f"{op.name} has {len(node.output)} outputs; the contract expects "
                        f"{len(op.outputs)} ({', '.join(op.outputs)})")
    if problems:
        return problems, REEXPORT
    seen: set[str] = set()
    values = {}
    for a in node.attribute:
        if a.name in seen:
            problems.append(f"{op.name} attribute {a.name} is given twice")
            continue
        seen.add(a.name)
        if a.name in _PARSER_ATTRIBUTES:
            if a.type != onnx.AttributeProto.STRING:
                problems.append(f"{op.name} attribute {a.name} must be a STRING, "
                                f"got {_kind_name(a.type)}")
            continue
        try:
            spec = op.attribute(a.name)
        except KeyError:
            problems.append(f"{op.name} has no attribute {a.name!r} (known: "
                            f"{', '.join(x.name for x in op.attributes)})")
            continue
        if a.type != _KINDS[spec.type]:
            problems.append(f"{op.name} attribute {a.name} must be {_kind_name(_KINDS[spec.type])} "
                            f"({spec.range_text()}), got {_kind_name(a.type)}")
            continue
        values[a.name] = helper.get_attribute_value(a)
    problems += op.check_values({a.name: values[a.name] for a in op.attributes if a.name in values})
    return problems, FIX_ATTRIBUTE


def check_ssi_nodes(model: onnx.ModelProto, source: str | os.PathLike,
                    fix: str | None = None) -> onnx.ModelProto:
    """Raise ``SSIError`` (one line) when an ``ssi``-domain node of ``model`` breaks the op
    contract: unknown op, input/output count, unknown attribute, attribute kind or value out
    of range. ``source`` names the file in the message; ``fix`` replaces the advice that ends
    it ("fix the attribute or re-export ..."). Returns ``model``.

    Attributes a node omits take the contract defaults (ONNX schema, function body and
    plugin alike), which are valid. Function bodies (``model.functions``) are not walked.
    """
    first: tuple[str, str] | None = None
    count = 0
    for node, index, where in _nodes(model.graph):
        if node.domain != C.DOMAIN:
            continue
        problems, advice = node_problems(node)
        if not problems:
            continue
        count += len(problems)
        if first is None:
            name = repr(where + node.name) if node.name else f"#{index} of {where or 'the graph'} (unnamed)"
            first = (f"node {name}: {problems[0]}", advice)
    if first is not None:
        more = f" (+{count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
        raise SSIError(f"{source}: {first[0]}{more}; {fix or first[1]}")
    return model


def check_ssi_file(path: str | os.PathLike) -> None:
    """:func:`check_ssi_nodes` on the file at ``path`` (read without external data).

    A file onnx cannot read is left to the caller's own loader and its message."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the runtime that loads it next reports its own error
        return
    check_ssi_nodes(model, path)


_ELEM_PRECISION = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}


def manifest_problems(manifest, model: onnx.ModelProto) -> list[str]:
    """Where the manifest says something the graph contradicts (an edited manifest or graph):
    precision vs the input's dtype, outputs vs the graph's, SSI nodes vs ``sparse``, every
    SampleMask's mode/seed vs the manifest's sampling, the semantics version vs this
    ssi-deploy's. Values the graph cannot confirm (preprocessing, weights) are not judged."""
    g = model.graph
    out = []
    if manifest.semantics_version != C.SEMANTICS_VERSION:
        out.append(f"it was exported with SSI semantics v{manifest.semantics_version}, this "
                   f"ssi-deploy computes v{C.SEMANTICS_VERSION}")
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if inputs:
        got = _ELEM_PRECISION.get(inputs[0].type.tensor_type.elem_type)
        if got != manifest.precision:
            out.append(f"the manifest says precision {manifest.precision}, the graph's input "
                       f"{inputs[0].name!r} is {got or 'another type'}")
    names, listed = [o.name for o in g.output], manifest.output_names
    if names != listed:
        i = next((i for i, (a, b) in enumerate(zip(listed, names)) if a != b),
                 min(len(listed), len(names)))
        out.append(f"the manifest lists {len(listed)} outputs, the graph has {len(names)} "
                   f"(output {i}: {listed[i] if i < len(listed) else 'none'!r} in the manifest, "
                   f"{names[i] if i < len(names) else 'none'!r} in the graph)")
    ssi = [n for n, _, _ in _nodes(g) if n.domain == C.DOMAIN]
    # the nodes that sample: SampleMask (ops form) and SSIBottleneck (block form)
    samplers = [n for n in ssi if n.op_type in (C.SAMPLE_MASK.name, C.SSI_BOTTLENECK.name)]
    if manifest.sparse != bool(samplers):
        out.append(f"the manifest says sparse={str(manifest.sparse).lower()}, the graph has "
                   f"{len(samplers)} SampleMask or SSIBottleneck nodes")
    blocks = sum(n.op_type == C.SSI_BOTTLENECK.name for n in ssi)
    form = "block" if blocks else ("ops" if ssi else "dense")
    if manifest.sparse and samplers and manifest.granularity != form:
        out.append(f"the manifest says granularity {manifest.granularity}, the graph is in "
                   f"{form} form ({blocks} SSIBottleneck nodes)")
    fd = manifest.sampling.forced_density
    for n in samplers:
        op = C.OPS[n.op_type]
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        want = {}
        if fd is None:  # forced density samples in threshold mode (mode is then not judged)
            want = {"mode": C.SAMPLING_MODES[manifest.sampling.mode], "seed": manifest.sampling.seed}
        if op is C.SSI_BOTTLENECK:
            want["density"] = 0.0 if fd is None else float(np.float32(fd))
        for k, v in want.items():
            got = attrs.get(k, op.attribute(k).default)
            if got != v:
                said = (f"forced density {fd}" if k == "density" else
                        f"{k}={v} ({manifest.sampling.mode})")
                out.append(f"node {n.name!r}: {op.name} {k}={got} but the manifest samples "
                           f"with {said}")
                break
    return out


def check_manifest_matches_graph(manifest, model: onnx.ModelProto, source) -> None:
    """One line for the first contradiction between the manifest and the graph."""
    problems = manifest_problems(manifest, model)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SSIError(f"{source}: the manifest does not describe this graph: {problems[0]}"
                       f"{more}; {REEXPORT}")
