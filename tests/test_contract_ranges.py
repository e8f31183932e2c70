"""Value ranges of the SSI attributes: one definition (ssi_deploy.ops.contract), checked at
export, at load (ONNX Runtime backend, `ssi-deploy validate`, the TensorRT builder's loader)
and in the TensorRT plugins (generated header, plugins/tests/tensorrt)."""

from __future__ import annotations

import math

import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

import ssi_deploy.ops  # noqa: F401  (registers torch.ops.ssi.*)
from ssi_deploy.cli.main import main as cli_main
from ssi_deploy.errors import SSIError
from ssi_deploy.ops import contract as C

SHAPE = (1, 3, 64, 64)

# (op, attribute, out-of-range value)
CASES = [
    ("SampleMask", "mode", 9),
    ("SampleMask", "mode", -1),
    ("SampleMask", "grid_interval", -1),
    ("SampleMask", "layer", -1),
    ("SampleMask", "seed", 2**31),
    ("SparseConv2d", "pad_h", -1),
    ("SparseConv2d", "dilation_h", 0),
    ("SparseConv2d", "stride_w", 0),
    ("SparseConv2d", "groups", 0),
    ("SparseConv2d", "relu", 2),
    ("GaussianInterp", "sigma", 0.0),
    ("GaussianInterp", "sigma", -1.0),
    ("GaussianInterp", "sigma", math.nan),
    ("GaussianInterp", "sigma", math.inf),
    ("GaussianInterp", "relu", 2),
    ("SSIBottleneck", "stride", 0),
    ("SSIBottleneck", "dcn", 2),
    ("SSIBottleneck", "mode", 3),
    ("SSIBottleneck", "sigma1", 0.0),
    ("SSIBottleneck", "sigma2", math.nan),
    ("SSIBottleneck", "layer2", -1),
    ("SSIBottleneck", "density", 1.5),
    ("SSIBottleneck", "density", -0.5),
]
IDS = [f"{op}-{attr}={value}" for op, attr, value in CASES]

# The range table (lower, upper, exclusive lower, choices) the plugins and kernels rely on.
INT32_MIN, INT32_MAX, FLOAT32_MAX = -(2**31), 2**31 - 1, 3.4028234663852886e38
TABLE = {
    ("SampleMask", "mode"): (0, 2, False, (0, 1, 2)),
    ("SampleMask", "grid_interval"): (0, INT32_MAX, False, ()),
    ("SampleMask", "seed"): (INT32_MIN, INT32_MAX, False, ()),
    ("SampleMask", "layer"): (0, INT32_MAX, False, ()),
    ("SparseConv2d", "stride_h"): (1, INT32_MAX, False, ()),
    ("SparseConv2d", "stride_w"): (1, INT32_MAX, False, ()),
    ("SparseConv2d", "pad_h"): (0, INT32_MAX, False, ()),
    ("SparseConv2d", "pad_w"): (0, INT32_MAX, False, ()),
    ("SparseConv2d", "dilation_h"): (1, INT32_MAX, False, ()),
    ("SparseConv2d", "dilation_w"): (1, INT32_MAX, False, ()),
    ("SparseConv2d", "groups"): (1, INT32_MAX, False, ()),
    ("SparseConv2d", "relu"): (0, 1, False, (0, 1)),
    ("GaussianInterp", "sigma"): (0.0, FLOAT32_MAX, True, ()),
    ("GaussianInterp", "relu"): (0, 1, False, (0, 1)),
    ("SSIBottleneck", "stride"): (1, INT32_MAX, False, ()),
    ("SSIBottleneck", "dcn"): (0, 1, False, (0, 1)),
    ("SSIBottleneck", "downsample"): (0, 1, False, (0, 1)),
    ("SSIBottleneck", "sigma1"): (0.0, FLOAT32_MAX, True, ()),
    ("SSIBottleneck", "sigma2"): (0.0, FLOAT32_MAX, True, ()),
    ("SSIBottleneck", "mode"): (0, 2, False, (0, 1, 2)),
    ("SSIBottleneck", "grid_interval"): (0, INT32_MAX, False, ()),
    ("SSIBottleneck", "seed"): (INT32_MIN, INT32_MAX, False, ()),
    ("SSIBottleneck", "layer1"): (0, INT32_MAX, False, ()),
    ("SSIBottleneck", "layer2"): (0, INT32_MAX, False, ()),
    ("SSIBottleneck", "density"): (0.0, 1.0, False, ()),
}


def value_text(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


@pytest.fixture(scope="module")
def exported_forms(tmp_path_factory):
    """sparse_resnet50, seeded random weights, static 64x64, in both forms (every SSI op
    appears in one of them)."""
    from ssi_deploy.export import export_onnx
    from ssi_deploy.models import create_model

    d = tmp_path_factory.mktemp("ranges")
    model = create_model("sparse_resnet50", init_seed=0)
    return {g: export_onnx(model, d / f"sr50_{g}.onnx", input_shape=SHAPE, dynamic=None,
                           granularity=g) for g in ("ops", "block")}


class _Exported:
    """The export holding ``op``: ``exported[op]`` (the block form for SSIBottleneck)."""

    def __init__(self, forms):
        self.forms = forms

    def __getitem__(self, op):
        return self.forms["block" if op == C.SSI_BOTTLENECK.name else "ops"]


@pytest.fixture(scope="module")
def exported(exported_forms):
    return _Exported(exported_forms)


def edit(src, dst, op: str, attr: str, value):
    """A copy of ``src`` at ``dst`` whose first ``op`` node has ``attr`` = ``value``;
    returns (path, node name)."""
    m = onnx.load(str(src))
    node = next(n for n in m.graph.node if n.domain == C.DOMAIN and n.op_type == op)
    kept = [a for a in node.attribute if a.name != attr]
    del node.attribute[:]
    node.attribute.extend(kept)
    kind = C.OPS[op].attribute(attr).type
    node.attribute.append(helper.make_attribute(attr, int(value) if kind == "int" else float(value)))
    onnx.save(m, str(dst))
    return dst, node.name


def expect_message(msg: str, path, node: str, op: str, attr: str, value):
    assert len(msg.strip().splitlines()) == 1, msg
    assert str(path) in msg and f"'{node}'" in msg, msg
    a = C.OPS[op].attribute(attr)
    assert f"{op} attribute {attr}={value_text(value)} is out of range: expected {a.range_text()}" in msg
    assert "fix the attribute or re-export with `ssi-deploy export`" in msg


# --------------------------------------------------------------------------------------------
# The contract


def test_every_attribute_has_the_documented_range():
    assert {(op.name, a.name) for op in C.OPS.values() for a in op.attributes} == set(TABLE)
    for (op, attr), (lo, hi, excl, choices) in TABLE.items():
        a = C.OPS[op].attribute(attr)
        assert (a.lower, a.upper, a.min_exclusive) == (lo, hi, excl), (op, attr)
        assert tuple(v for v, _ in a.choices) == choices, (op, attr)


def test_defaults_are_valid_and_bounds_are_inclusive():
    for op in C.OPS.values():
        assert op.check_values(op.defaults()) == [], op.name
        for a in op.attributes:
            assert a.value_error(a.default) is None, (op.name, a.name)
            if a.type == "int":
                assert a.value_error(a.lower) is None and a.value_error(a.upper) is None
                assert a.value_error(a.lower - 1) is not None and a.value_error(a.upper + 1) is not None
    sigma = C.GAUSSIAN_INTERP.attribute("sigma")
    assert sigma.value_error(1e-30) is None and sigma.value_error(FLOAT32_MAX) is None
    assert sigma.value_error(3) is None  # an int is a valid float value


@pytest.mark.parametrize("op,attr,value", CASES, ids=IDS)
def test_check_values_names_op_attribute_value_and_range(op, attr, value):
    (msg,) = C.OPS[op].check_values({attr: value})
    assert msg == (f"{op} attribute {attr}={value_text(value)} is out of range: expected "
                   f"{C.OPS[op].attribute(attr).range_text()}")


def test_check_values_messages():
    assert C.SAMPLE_MASK.check_values({"mode": 9}) == [
        "SampleMask attribute mode=9 is out of range: expected one of 0 (threshold), "
        "1 (stochastic), 2 (official)"]
    assert C.SPARSE_CONV2D.check_values({"stride_h": 1.5, "kernel": 3}) == [
        "SparseConv2d attribute stride_h=1.5 must be an int, got float",
        "SparseConv2d has no attribute 'kernel' (known: stride_h, stride_w, pad_h, pad_w, "
        "dilation_h, dilation_w, groups, relu)"]
    assert C.GAUSSIAN_INTERP.attribute("sigma").range_text() == "a finite float32 > 0.0"
    assert C.SAMPLE_MASK.attribute("seed").range_text() == "any int32 (-2147483648 to 2147483647)"


def test_header_carries_the_ranges_and_is_not_stale(capsys):
    assert C.main(["--check-header"]) == 0, capsys.readouterr().out
    text = C.HEADER_PATH.read_text()
    for op in C.OPS.values():
        for a in op.attributes:
            suffix = "".join(p.capitalize() for p in a.name.split("_"))
            for ident in (f"kMin{suffix}", f"kMax{suffix}", f"kMin{suffix}Exclusive", f"kRange{suffix}"):
                assert f" {ident} = " in text, (op.name, ident)
    assert "constexpr int kMinStrideH = 1;" in text
    assert "constexpr int kMaxMode = 2;" in text
    assert "constexpr int kMinSeed = (-2147483647 - 1);" in text
    assert "constexpr float kMinSigma = 0.0f;" in text and "kMinSigmaExclusive = true;" in text


# --------------------------------------------------------------------------------------------
# Edited files: refused at load with one line naming the node


@pytest.mark.parametrize("op,attr,value", CASES, ids=IDS)
def test_onnxruntime_backend_refuses_out_of_range_attribute(exported, tmp_path, op, attr, value):
    from ssi_deploy.backends.onnxruntime_backend import OnnxRuntimeBackend

    path, node = edit(exported[op], tmp_path / "edited.onnx", op, attr, value)
    with pytest.raises(SSIError) as e:
        OnnxRuntimeBackend(path, device="cpu")
    expect_message(str(e.value), path, node, op, attr, value)


CLI_CASES = [0, 2, 5, 6, 10, 15, 21]


@pytest.mark.parametrize("op,attr,value", [CASES[i] for i in CLI_CASES],
                         ids=[IDS[i] for i in CLI_CASES])
def test_cli_validate_exits_2_naming_the_node(exported, tmp_path, capsys, op, attr, value):
    path, node = edit(exported[op], tmp_path / "edited.onnx", op, attr, value)
    rc = cli_main(["validate", str(path), "--random", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in err
    expect_message(line, path, node, op, attr, value)


def test_tensorrt_loader_refuses_before_tensorrt(exported, tmp_path):
    from ssi_deploy.tensorrt import onnx_prep

    src = exported["SparseConv2d"]
    path, node = edit(src, tmp_path / "edited.onnx", "SparseConv2d", "pad_h", -1)
    with pytest.raises(SSIError) as e:
        onnx_prep.load_onnx(path)
    expect_message(str(e.value), path, node, "SparseConv2d", "pad_h", -1)
    assert onnx_prep.load_onnx(src).graph.node  # the unedited file loads


def test_unedited_exports_pass_the_check(exported_forms):
    from ssi_deploy.export.node_check import check_ssi_nodes

    for path in exported_forms.values():
        m = onnx.load(str(path))
        assert check_ssi_nodes(m, path) is m


# --------------------------------------------------------------------------------------------
# Node structure: kinds, counts, unknown names (hand-made graph)


def _graph(*nodes) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(list(nodes), "g", [x], [y]))


def _check(model) -> str:
    from ssi_deploy.export.node_check import check_ssi_nodes

    with pytest.raises(SSIError) as e:
        check_ssi_nodes(model, "m.onnx")
    msg = str(e.value)
    assert msg.startswith("m.onnx: ") and len(msg.splitlines()) == 1
    return msg


def test_node_structure_problems_are_named():
    mk = lambda *a, **k: helper.make_node(*a, domain=C.DOMAIN, **k)  # noqa: E731
    msg = _check(_graph(mk("SampleMask", ["x"], ["m"], name="sm", mode=1.0)))
    assert "node 'sm': SampleMask attribute mode must be INT" in msg and "got FLOAT" in msg
    assert "fix the attribute" in msg
    msg = _check(_graph(mk("SparseConv2d", ["x", "x", "x"], ["y"], name="sc")))
    assert "node 'sc': SparseConv2d has inputs ['x', 'x', 'x']; the contract expects 4 to 5" in msg
    assert msg.endswith("re-export with `ssi-deploy export`")
    msg = _check(_graph(mk("SparseConv2d", ["x", "x", "", "x"], ["y"], name="sc")))
    assert "has inputs ['x', 'x', '', 'x']" in msg
    msg = _check(_graph(mk("Densify", ["x"], ["y"], name="d")))
    assert "op type Densify is not an SSI op" in msg
    msg = _check(_graph(mk("GaussianInterp", ["x", "x", "x"], ["y"], density=0.5)))
    assert "node #0 of the graph (unnamed): GaussianInterp has no attribute 'density'" in msg
    msg = _check(_graph(mk("SampleMask", ["x"], ["m"], name="sm", mode=7, layer=-2)))
    assert "mode=7 is out of range" in msg and "(+1 more problem)" in msg
    # omitted attributes take the (valid) defaults; other domains are not ours
    from ssi_deploy.export.node_check import check_ssi_nodes

    ok = _graph(mk("SampleMask", ["x"], ["m"], name="sm", plugin_version="1"),
                helper.make_node("Foo", ["m"], ["z"], domain="other", mode=9))
    assert check_ssi_nodes(ok, "m.onnx") is ok


class _OneMask(nn.Module):
    """The smallest model the exporter takes: a conv and one SampleMask."""

    def __init__(self, **attrs):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 3, 3, 3, generator=torch.Generator().manual_seed(0)))
        self.attrs = attrs

    def forward(self, x):
        return torch.ops.ssi.sample_mask(F.conv2d(x, self.w, padding=1), **self.attrs)


@pytest.mark.parametrize("attrs,needle", [({"grid_interval": -1}, "grid_interval=-1"),
                                          ({"layer": -1}, "layer=-1")])
def test_export_refuses_out_of_range_attributes(tmp_path, attrs, needle):
    from ssi_deploy.export import export_onnx

    with pytest.raises(SSIError) as e:
        export_onnx(_OneMask(**attrs).eval(), tmp_path / "bad.onnx", input_shape=(1, 3, 32, 32),
                    dynamic=None)
    msg = str(e.value)
    assert f"SampleMask attribute {needle} is out of range: expected an int32 >= 0" in msg
    assert "fix the value the model passes to torch.ops.ssi.*" in msg
    assert not (tmp_path / "bad.onnx").exists()
