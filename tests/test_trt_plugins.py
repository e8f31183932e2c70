"""Smoke test of the SSI TensorRT plugin library (libssi_trt_plugins.so) with TensorRT's
plugin registry, as the ONNX parser uses it: load the library, find a creator for every SSI
node of a model, and create each plugin from that node's attributes.

The lean runtime from PyPI (``pip install -e '.[tensorrt]'``) is enough: its plugin registry
works on a machine without a GPU. Skips, with the reason, when no TensorRT Python module is
installed or the library was not built (``make plugins`` needs the TensorRT headers).

The model is ``model_under_test()``: a small hand-made ONNX graph of one SSI bottleneck in
the three-op form (the exporter's node form: every contract attribute plus the parser's
``plugin_version`` / ``plugin_namespace`` strings). Real exports are checked too: the ops form
(SampleMask, SparseConv2d, GaussianInterp) and the default block form, whose every
SSIBottleneck node (15 inputs, outputs y, mask1, mask2) must become a plugin.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ssi_deploy.ops import contract
from ssi_deploy.tensorrt import plugins as plugins_mod
from ssi_deploy.tensorrt import trt as trt_mod

# Node attributes the onnx-tensorrt fallback plugin importer reads to find the creator.
PLUGIN_VERSION_ATTR = "plugin_version"
PLUGIN_NAMESPACE_ATTR = "plugin_namespace"


# ---------------------------------------------------------------------------------------------
# The model whose SSI nodes are checked.


def model_under_test() -> onnx.ModelProto:
    """One SSI bottleneck (stage 2, first block: stride 2, DCN conv2, fused residual) with
    dynamic batch/height/width, built with onnx.helper in the exporter's node form.

    To check a real export instead, return e.g.
    ``onnx.load(export_onnx(<SSI model>, tmp / "m.onnx", input_shape=(1, 3, 64, 64)))``.
    """
    cin, p, out = 256, 128, 512
    rng = np.random.default_rng(0)

    inits = []

    def weight(name, *shape):
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, shape,
                                        rng.standard_normal(shape).astype(np.float32).ravel()))
        return name

    def ssi(op: contract.OpDef, inputs, output, name, **attrs):
        values = op.check_attributes(attrs)  # every contract attribute, in contract order
        node = helper.make_node(op.name, inputs, [output], name=name, domain=contract.DOMAIN,
                                **{a.name: values[a.name] for a in op.attributes})
        node.attribute.append(helper.make_attribute(PLUGIN_VERSION_ATTR, contract.PLUGIN_VERSION))
        node.attribute.append(helper.make_attribute(PLUGIN_NAMESPACE_ATTR, contract.PLUGIN_NAMESPACE))
        return node

    SM, SC, GI = contract.SAMPLE_MASK, contract.SPARSE_CONV2D, contract.GAUSSIAN_INTERP
    nodes = [
        helper.make_node("Conv", ["x", weight("mask1.w", 1, cin, 3, 3), weight("mask1.b", 1)], ["l1"],
                         name="layer2.0.conv1_mask", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", weight("mask2.w", 1, cin, 3, 3), weight("mask2.b", 1)], ["l2"],
                         name="layer2.0.conv2_mask", pads=[1, 1, 1, 1], strides=[2, 2]),
        ssi(SM, ["l1"], "m1", "layer2.0.mask1", mode=contract.MODE_THRESHOLD, layer=4),
        ssi(SM, ["l2"], "m2", "layer2.0.mask2", mode=contract.MODE_STOCHASTIC, seed=1234, layer=5),
        ssi(SC, ["x", weight("conv1.w", p, cin, 1, 1), weight("conv1.b", p), "m1"], "y1",
            "layer2.0.conv1", relu=1),
        ssi(GI, ["y1", "m1", weight("interp1.b", p)], "Y1", "layer2.0.interp1", sigma=2.85),
        helper.make_node("Conv", ["x", weight("offset.w", 18, cin, 3, 3), weight("offset.b", 18)], ["off"],
                         name="layer2.0.conv2_offset", pads=[1, 1, 1, 1], strides=[2, 2]),
        ssi(SC, ["Y1", weight("conv2.w", p, p, 3, 3), weight("conv2.b", p), "m2", "off"], "y2",
            "layer2.0.conv2", stride_h=2, stride_w=2, pad_h=1, pad_w=1, relu=1),
        ssi(SC, ["y2", weight("conv3.w", out, p, 1, 1), weight("conv3.b", out), "m2"], "z",
            "layer2.0.conv3"),
        helper.make_node("Conv", ["x", weight("down.w", out, cin, 1, 1), weight("down.b", out)], ["sc"],
                         name="layer2.0.downsample", strides=[2, 2]),
        ssi(GI, ["z", "m2", weight("interp3.b", out), "sc"], "y", "layer2.0.interp3", sigma=3.0, relu=1),
    ]
    graph = helper.make_graph(
        nodes, "ssi_bottleneck",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", cin, "height", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out, "height_out", "width_out"])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(contract.DOMAIN,
                                                                        contract.OPSET_VERSION)])
    onnx.checker.check_model(model)
    return model


def ssi_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == contract.DOMAIN]


# ---------------------------------------------------------------------------------------------
# What the ONNX parser does with such a node (onnx-tensorrt's fallback plugin importer).


def creator_key(node: onnx.NodeProto) -> tuple[str, str, str]:
    """(plugin name, version, namespace) the parser looks up for ``node``."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    version = attrs.get(PLUGIN_VERSION_ATTR, b"1")
    namespace = attrs.get(PLUGIN_NAMESPACE_ATTR, b"")
    return node.op_type, version.decode(), namespace.decode()


class Fields:
    """PluginFields with their numpy buffers and names kept alive: a PluginField does not own
    its data, so a collection built from temporaries reads freed memory."""

    def __init__(self, trt):
        self.trt = trt
        self.arrays: list[np.ndarray] = []
        self.fields: list = []

    def add(self, name: str, data: np.ndarray, kind) -> "Fields":
        data = np.ascontiguousarray(data)
        self.arrays.append(data)
        self.fields.append(self.trt.PluginField(name, data, kind))
        return self

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def collection(self):
        self._collection = self.trt.PluginFieldCollection(self.fields)
        return self._collection


def parser_fields(trt, node: onnx.NodeProto, creator) -> Fields:
    """The PluginFields the parser passes: only attributes named in the creator's field names;
    INT/INTS -> kINT32, FLOAT/FLOATS -> kFLOAT32, STRING -> kCHAR with the trailing NUL."""
    wanted = {f.name for f in creator.field_names}
    fields = Fields(trt)
    for a in node.attribute:
        if a.name not in wanted:
            continue
        v = helper.get_attribute_value(a)
        if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS):
            fields.add(a.name, np.atleast_1d(np.asarray(v, np.int64)).astype(np.int32),
                       trt.PluginFieldType.INT32)
        elif a.type in (onnx.AttributeProto.FLOAT, onnx.AttributeProto.FLOATS):
            fields.add(a.name, np.atleast_1d(np.asarray(v, np.float32)), trt.PluginFieldType.FLOAT32)
        elif a.type == onnx.AttributeProto.STRING:
            fields.add(a.name, np.frombuffer(v + b"\0", np.int8), trt.PluginFieldType.CHAR)
        else:
            raise AssertionError(f"{node.name}: attribute {a.name} of ONNX type {a.type} cannot be a field")
    return fields


def metadata_items(op: contract.OpDef, node: onnx.NodeProto) -> list[str]:
    """``name=value`` for every contract attribute as the plugin's metadata string writes it."""
    given = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in
             {x.name for x in op.attributes}}
    values = op.check_attributes(given)
    return [f"{a.name}={int(values[a.name])}" if a.type == "int"
            else f"{a.name}={float(np.float32(values[a.name])):g}" for a in op.attributes]


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def trt():
    found = trt_mod.find_tensorrt(allow_lean=True)
    if found is None:
        pytest.skip("no TensorRT Python module (install the lean runtime: pip install -e '.[tensorrt]')")
    return found.module


@pytest.fixture(scope="module")
def registry(trt):
    lib = plugins_mod.find_plugin_library(required=False)
    if lib is None:
        pytest.skip(f"{plugins_mod.LIBRARY_NAME} not built (needs the TensorRT headers: make plugins) "
                    f"and ${plugins_mod.ENV_VAR} unset")
    reg = trt.get_plugin_registry()
    handle, _ = plugins_mod.load_plugin_library(reg, lib)
    yield reg
    if handle is not None:  # leave the process-wide registry as this module found it
        reg.deregister_library(handle)


@pytest.fixture(scope="module")
def model():
    return model_under_test()


# ---------------------------------------------------------------------------------------------
# Tests


def test_model_has_every_building_block(model):
    assert {n.op_type for n in ssi_nodes(model)} == set(contract.BUILDING_BLOCKS)


def test_every_contract_op_has_a_plugin():
    assert set(contract.PLUGIN_OPS) == set(contract.OPS)  # SSIBottleneck included


def test_creators_expose_exactly_the_contract_fields(trt, registry):
    for op in contract.PLUGIN_OPS.values():
        creator = registry.get_creator(op.name, contract.PLUGIN_VERSION, contract.PLUGIN_NAMESPACE)
        assert creator is not None, op.name
        assert (creator.name, creator.plugin_version, creator.plugin_namespace) == (
            op.name, contract.PLUGIN_VERSION, contract.PLUGIN_NAMESPACE)
        got = [(f.name, f.type) for f in creator.field_names]
        want = [(a.name, trt.PluginFieldType.INT32 if a.type == "int" else trt.PluginFieldType.FLOAT32)
                for a in op.attributes]
        assert got == want, op.name


def check_every_ssi_node_becomes_a_plugin(trt, registry, model: onnx.ModelProto, phase: str) -> dict:
    """Find the creator and create the plugin of every SSI node as the ONNX parser would;
    returns the number of plugins per op."""
    nodes = ssi_nodes(model)
    assert nodes
    counts: dict[str, int] = {}
    for node in nodes:
        name, version, namespace = creator_key(node)
        creator = registry.get_creator(name, version, namespace)
        assert creator is not None, f"{node.name}: no creator for {name} v{version} ns {namespace!r}"
        fields = parser_fields(trt, node, creator)
        # the node carries every contract attribute, and the parser forwards each of them
        assert sorted(fields.names) == sorted(a.name for a in contract.OPS[name].attributes), node.name
        plugin = creator.create_plugin(node.name, fields.collection(),
                                       getattr(trt.TensorRTPhase, phase))
        assert plugin is not None, f"{node.name}: create_plugin returned None"
        core = plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
        assert (core.plugin_name, core.plugin_version, core.plugin_namespace) == (
            name, contract.PLUGIN_VERSION, contract.PLUGIN_NAMESPACE)
        build = plugin.get_capability_interface(trt.PluginCapabilityType.BUILD)
        assert build.num_outputs == len(contract.OPS[name].outputs), node.name
        meta = build.metadata_string
        assert meta.startswith(name)
        for item in metadata_items(contract.OPS[name], node):
            assert item in meta, f"{node.name}: {item!r} not in metadata {meta!r}"
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.parametrize("phase", ["BUILD", "RUNTIME"])
def test_every_ssi_node_becomes_a_plugin(trt, registry, model, phase):
    counts = check_every_ssi_node_becomes_a_plugin(trt, registry, model, phase)
    assert counts == {"SampleMask": 2, "SparseConv2d": 3, "GaussianInterp": 2}


@pytest.mark.slow
def test_every_node_of_a_real_export_becomes_a_plugin(trt, registry, tmp_path):
    """The exporter's own nodes (SparseResNet-101 + DCN, random weights, 64x64 input)."""
    export = pytest.importorskip("ssi_deploy.export", reason="the ONNX exporter is not available")
    from ssi_deploy.models import create_model

    # the three-op form (the block form: test_every_node_of_a_block_export_becomes_a_plugin)
    path = export.export_onnx(create_model("sparse_resnet101_dcn"), tmp_path / "m.onnx",
                              input_shape=(1, 3, 64, 64), granularity="ops")
    model = onnx.load(path)
    counts = check_every_ssi_node_becomes_a_plugin(trt, registry, model, "BUILD")
    assert set(counts) == set(contract.BUILDING_BLOCKS)
    assert counts["SparseConv2d"] == sum(1 for n in ssi_nodes(model) if n.op_type == "SparseConv2d")


@pytest.fixture(scope="module")
def block_exports(tmp_path_factory):
    """Default (block-form) exports at 1x3x64x64, made once: name -> ModelProto."""
    export = pytest.importorskip("ssi_deploy.export", reason="the ONNX exporter is not available")
    from ssi_deploy.models import create_model

    made: dict[str, onnx.ModelProto] = {}

    def get(name: str) -> onnx.ModelProto:
        if name not in made:
            path = export.export_onnx(create_model(name), tmp_path_factory.mktemp(name) / "m.onnx",
                                      input_shape=(1, 3, 64, 64))
            made[name] = onnx.load(path)
        return made[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["BUILD", "RUNTIME"])
@pytest.mark.parametrize("name, blocks", [("sparse_resnet50", 16), ("sparse_resnet101_dcn", 33)])
def test_every_node_of_a_block_export_becomes_a_plugin(trt, registry, block_exports, name, blocks,
                                                       phase):
    """The default export: one SSIBottleneck node per block, each created through the lean
    runtime's registry from the fields the parser forwards (every attribute reaches the
    plugin's metadata), at build and at deserialisation (RUNTIME)."""
    model = block_exports(name)
    assert {n.op_type for n in ssi_nodes(model)} == {"SSIBottleneck"}
    counts = check_every_ssi_node_becomes_a_plugin(trt, registry, model, phase)
    assert counts == {"SSIBottleneck": blocks}
    # the nodes span the block kinds: identity, strided downsample (and DCN for _dcn)
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in ssi_nodes(model)]
    assert {(a["stride"], a["downsample"]) for a in attrs} == {(1, 0), (1, 1), (2, 1)}
    assert {a["dcn"] for a in attrs} == ({0, 1} if name.endswith("_dcn") else {0})
    assert [a["layer1"] for a in attrs] == [2 * i for i in range(blocks)]


def test_node_attributes_reach_the_plugin(trt, registry, model):
    """Non-default attribute values of the nodes show up in the plugins, not the defaults."""
    by_name = {n.name: n for n in ssi_nodes(model)}
    expect = {"layer2.0.conv2": ["stride_h=2", "pad_w=1", "relu=1"],
              "layer2.0.mask2": ["mode=1", "seed=1234", "layer=5"],
              "layer2.0.interp1": ["sigma=2.85", "relu=0"]}
    for node_name, items in expect.items():
        node = by_name[node_name]
        creator = registry.get_creator(*creator_key(node))
        fields = parser_fields(trt, node, creator)
        plugin = creator.create_plugin(node.name, fields.collection(), trt.TensorRTPhase.BUILD)
        assert plugin is not None, node_name
        meta = plugin.get_capability_interface(trt.PluginCapabilityType.BUILD).metadata_string
        for item in items:
            assert item in meta, (node_name, item, meta)


def test_string_fields_with_and_without_nul(trt, registry):
    creator = registry.get_creator(contract.SPARSE_CONV2D.name, contract.PLUGIN_VERSION,
                                   contract.PLUGIN_NAMESPACE)
    fields = (Fields(trt).add("stride_h", np.frombuffer(b"2\0", np.int8), trt.PluginFieldType.CHAR)
              .add("stride_w", np.frombuffer(b"3", np.int8), trt.PluginFieldType.CHAR))
    plugin = creator.create_plugin("s", fields.collection(), trt.TensorRTPhase.BUILD)
    assert plugin is not None
    meta = plugin.get_capability_interface(trt.PluginCapabilityType.BUILD).metadata_string
    assert "stride_h=2" in meta and "stride_w=3" in meta


@pytest.mark.parametrize("op_name, field, words", [
    ("SparseConv2d", ("kernel_shape", np.array([3], np.int32), "INT32"), ["unknown field 'kernel_shape'"]),
    ("SSIBottleneck", ("dcn", np.array([2], np.int32), "INT32"), ["dcn=2", "out of range"]),
    ("SSIBottleneck", ("density", np.array([1.5], np.float32), "FLOAT32"), ["density", "out of range"]),
    ("SparseConv2d", ("stride_h", np.array([2.0], np.float32), "FLOAT32"), ["stride_h", "kINT32"]),
    ("SparseConv2d", ("stride_h", np.array([0], np.int32), "INT32"), ["stride_h", "out of range"]),
    ("GaussianInterp", ("sigma", np.array([-1.0], np.float32), "FLOAT32"), ["sigma", "out of range"]),
    ("SampleMask", ("mode", np.array([9], np.int32), "INT32"), ["mode", "out of range"]),
])
def test_bad_fields_give_none_and_a_message(trt, registry, capfd, op_name, field, words):
    creator = registry.get_creator(op_name, contract.PLUGIN_VERSION, contract.PLUGIN_NAMESPACE)
    name, data, kind = field
    fields = Fields(trt).add(name, data, getattr(trt.PluginFieldType, kind))
    assert creator.create_plugin("bad_node", fields.collection(), trt.TensorRTPhase.BUILD) is None
    captured = capfd.readouterr()
    log = captured.err + captured.out  # stderr without a TensorRT logger, else TensorRT's logger
    assert "bad_node" in log and op_name in log, log
    for w in words:
        assert w in log, log
