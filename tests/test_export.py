"""ONNX export (ssi_deploy.export) and the `ssi-deploy export` command.

Ground truth is the PyTorch side (torch.ops.ssi.* and the models' eval forward), with the
float64 oracles of ssi_deploy.ops.reference for the single-op checks. ONNX Runtime runs the
exported files through the model-local function bodies (no SSI kernel is registered).
"""

from __future__ import annotations

import json
from pathlib import Path
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

import ssi_deploy.ops  # noqa: F401  (registers torch.ops.ssi.*)
from ssi_deploy.cli.main import main as cli_main
from ssi_deploy.manifest import Manifest, Sampling, Weights, read_manifest
from ssi_deploy.errors import SSIError
from ssi_deploy.export import (ExportError, VerifyError, build_functions, export_onnx,
                               read_metadata, reference_evaluator, register_schemas, summarize)
from ssi_deploy.export.schemas import PARSER_ATTRIBUTES
from ssi_deploy.ops import contract as C
from ssi_deploy.ops import reference

OPSET = 18


def ort_session(path_or_model) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # the If-subgraph renaming warnings are noise
    so.intra_op_num_threads = 2
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


# --------------------------------------------------------------------------------------------
# Single SSI nodes: the function bodies against the PyTorch ops and the float64 oracles


def test_schemas_come_from_the_contract_and_register_once():
    register_schemas()
    register_schemas()  # guarded: a second registration is a no-op, not an error
    for op in C.OPS.values():
        schema = onnx.defs.get_schema(op.name, C.OPSET_VERSION, C.DOMAIN)
        assert [i.name for i in schema.inputs] == [i.name for i in op.inputs]
        assert [o.name for o in schema.outputs] == list(op.outputs)
        assert set(schema.attributes) == {a.name for a in op.attributes} | set(PARSER_ATTRIBUTES)
        for a in op.attributes:
            default = helper.get_attribute_value(schema.attributes[a.name].default_value)
            assert default == pytest.approx(a.default)
    # the checker now rejects an attribute the contract does not have
    feeds = [torch.zeros(1, 1, 4, 4)]
    model = single_node_model(C.SAMPLE_MASK, feeds, {})
    model.graph.node[0].attribute.append(helper.make_attribute("density", 0.5))
    with pytest.raises(onnx.checker.ValidationError, match="density"):
        onnx.checker.check_model(model, full_check=True)


def single_node_model(op: C.OpDef, feeds: list[torch.Tensor], attrs: dict,
                      dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    register_schemas()
    ins = [helper.make_tensor_value_info(f"i{k}", dtype, [f"d{k}_{j}" for j in range(t.dim())])
           for k, t in enumerate(feeds)]
    node = helper.make_node(op.name, [f"i{k}" for k in range(len(feeds))], ["out"],
                            domain=C.DOMAIN, plugin_version=C.PLUGIN_VERSION,
                            plugin_namespace=C.PLUGIN_NAMESPACE, **op.check_attributes(attrs))
    graph = helper.make_graph([node], "g", ins,
                              [helper.make_tensor_value_info("out", dtype, ["a", "b", "c", "d"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid(C.DOMAIN, C.OPSET_VERSION)],
                              functions=build_functions(OPSET))
    onnx.checker.check_model(model, full_check=True)
    return model


def run_single(model, feeds):
    return ort_session(model).run(None, {f"i{k}": t.numpy() for k, t in enumerate(feeds)})[0]


@pytest.mark.parametrize("mode", ["threshold", "stochastic", "official"])
@pytest.mark.parametrize("grid", [11, 0, 4])
def test_sample_mask_body_matches_torch(mode, grid, rng):
    logits = torch.randn(2, 1, 29, 37, generator=rng) * 3
    attrs = dict(mode=C.SAMPLING_MODES[mode], grid_interval=grid, seed=12345, layer=7)
    want = torch.ops.ssi.sample_mask(logits, **attrs).numpy()
    got = run_single(single_node_model(C.SAMPLE_MASK, [logits], attrs), [logits])
    # The keep decisions (hash draws included) are identical; official soft values agree to
    # the rounding of ORT's vectorised Log/Sigmoid (about 1e-6 on L = log u - log(1-u) near
    # u = 0 or 1), amplified by 1/T = 33 before the sigmoid.
    assert np.array_equal(got > 0, want > 0)
    assert np.abs(got - want).max() <= (5e-4 if mode == "official" else 0.0)
    if mode != "threshold":  # the hash really decides: ~sigmoid(logit) of positions kept
        assert 0.3 < (got > 0).mean() < 0.7


def test_sample_mask_body_largest_draw_is_below_one():
    # seed 0, layer 3, (n, y, x) = (0, 705, 257): h >> 9 = 2**23 - 1, the largest draw
    # u = 1 - 2**-24. Semantics version 1 rounded u to 1.0 there, so L = log u - log(1 - u)
    # was +inf and even a logit of -100 was kept; now |L| <= 16.7 and nothing is kept.
    logits = torch.full((1, 1, 706, 258), -100.0)
    attrs = dict(mode=C.MODE_OFFICIAL, grid_interval=0, seed=0, layer=3)
    got = run_single(single_node_model(C.SAMPLE_MASK, [logits], attrs), [logits])
    assert not got.any(), np.argwhere(got)


@pytest.mark.parametrize("cfg", [
    # cin, cout, k, stride, pad, dilation, groups, relu, deformable
    (8, 16, 3, 1, 1, 1, 1, 1, False),
    (8, 16, 3, 2, 1, 1, 1, 0, False),
    (8, 16, 1, 1, 0, 1, 1, 1, False),
    (8, 16, 3, 2, 2, 2, 2, 1, False),
    (8, 16, 3, 1, 1, 1, 1, 1, True),
    (8, 16, 3, 2, 1, 1, 1, 0, True),
    (8, 8, 3, 1, 2, 2, 2, 0, True),
])
def test_sparse_conv2d_body_matches_oracle(cfg, rng):
    cin, cout, k, s, p, d, g, relu, deform = cfg
    h, w = 19, 21
    ho, wo = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
    feeds = [torch.randn(2, cin, h, w, generator=rng), torch.randn(cout, cin // g, k, k, generator=rng),
             torch.randn(cout, generator=rng),
             (torch.rand(2, 1, ho, wo, generator=rng) > 0.5).float()]
    if deform:
        feeds.append(torch.randn(2, 2 * k * k, ho, wo, generator=rng) * 3)
    attrs = dict(stride_h=s, stride_w=s, pad_h=p, pad_w=p, dilation_h=d, dilation_w=d,
                 groups=g, relu=relu)
    got = run_single(single_node_model(C.SPARSE_CONV2D, feeds, attrs), feeds)
    torch_out = torch.ops.ssi.sparse_conv2d(*feeds, **attrs).numpy()
    assert np.abs(got - torch_out).max() < 5e-5
    if g == 1 or not deform:  # the oracle's deformable path is groups=1 only
        oracle = reference.sparse_conv2d_oracle(*feeds, **attrs).numpy()
        assert np.abs(got - oracle).max() < 5e-5
    assert np.all(got[np.broadcast_to(feeds[3].numpy() == 0, got.shape)] == 0)


@pytest.mark.parametrize("sigma,relu,residual,soft", [(3.0, 0, False, False), (1.3, 1, True, True),
                                                        (0.7, 0, True, False)])
def test_gaussian_interp_body_matches_oracle(sigma, relu, residual, soft, rng):
    mask = (torch.rand(2, 1, 17, 23, generator=rng) > 0.7).float()
    if soft:
        mask = mask * torch.where(torch.rand(2, 1, 17, 23, generator=rng) > 0.5, 1.0, 0.8)
    feeds = [torch.randn(2, 6, 17, 23, generator=rng), mask, torch.randn(6, generator=rng)]
    if residual:
        feeds.append(torch.randn(2, 6, 17, 23, generator=rng))
    attrs = dict(sigma=sigma, relu=relu)
    got = run_single(single_node_model(C.GAUSSIAN_INTERP, feeds, attrs), feeds)
    assert np.abs(got - torch.ops.ssi.gaussian_interp(*feeds, **attrs).numpy()).max() < 2e-6
    assert np.abs(got - reference.gaussian_interp_oracle(*feeds, **attrs).numpy()).max() < 2e-6


def test_gaussian_interp_body_fp16_keeps_fp32_arithmetic(rng):
    # One sample, read from 2 positions away: W = s^2/(2 pi) exp(-2 s^2) ~ 2.2e-8 at s = 3
    # underflows in fp16, so only float32 arithmetic gives bias + W*f/(W + 1e-5) ~ bias + 0.22.
    v = torch.full((1, 4, 16, 16), 100.0, dtype=torch.half)
    m = torch.zeros(1, 1, 16, 16, dtype=torch.half)
    m[0, 0, 5, 5] = 1
    feeds = [v, m, torch.randn(4, generator=rng).half()]
    got = run_single(single_node_model(C.GAUSSIAN_INTERP, feeds, {}, TensorProto.FLOAT16), feeds)
    assert got.dtype == np.float16
    want = reference.gaussian_interp_oracle(*[f.float() for f in feeds]).numpy()
    assert np.all(np.abs(got.astype(np.float32) - want) <= 1e-3 * np.abs(want) + 2e-3)  # fp16 ulp
    assert np.all(want[0, :, 5, 7] - feeds[2].float().numpy() > 0.1)


# --------------------------------------------------------------------------------------------
# A tiny SSI network: every op, deformable offsets, strided masks, residual, BatchNorm to fold


class TinySSI(nn.Module):
    """One SSI bottleneck-like block plus a grouped/dilated branch, calling torch.ops.ssi.*."""

    def __init__(self, sampling: str = "threshold", seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        p = lambda *s: nn.Parameter(torch.randn(*s, generator=g) * (2.0 / math.prod(s[1:])) ** 0.5)  # noqa: E731
        self.stem_w, self.stem_bn = p(8, 3, 3, 3), nn.BatchNorm2d(8)
        with torch.no_grad():
            self.stem_bn.running_mean.uniform_(-0.5, 0.5, generator=g)
            self.stem_bn.running_var.uniform_(0.5, 2.0, generator=g)
            self.stem_bn.weight.uniform_(0.5, 1.5, generator=g)
        self.mask1_w, self.mask1_b = p(1, 8, 3, 3), nn.Parameter(torch.tensor([0.1]))
        self.mask2_w, self.mask2_b = p(1, 8, 3, 3), nn.Parameter(torch.tensor([-0.1]))
        self.conv1_w, self.conv1_b = p(8, 8, 1, 1), nn.Parameter(torch.zeros(8))
        self.offset_w, self.offset_b = p(18, 8, 3, 3), nn.Parameter(torch.zeros(18))
        self.conv2_w, self.conv2_b = p(16, 8, 3, 3), nn.Parameter(torch.zeros(16) + 0.1)
        self.conv3_w, self.conv3_b = p(16, 16, 1, 1), nn.Parameter(torch.zeros(16) + 0.05)
        self.short_w = p(16, 8, 1, 1)
        self.extra_w, self.extra_b = p(16, 4, 3, 3), nn.Parameter(torch.zeros(16))
        self.sigma1 = nn.Parameter(torch.tensor(2.5))
        self.sigma2 = nn.Parameter(torch.tensor(C.SIGMA_INIT))
        self.sampling, self.seed = sampling, seed
        self.expose_masks = False
        self.fused = None

    mask_names = ["mask_1", "mask_2", "mask_3"]  # what the exporter's manifest reads
    sampling_layers = ["layer1", "layer2", "layer3"]

    @property
    def output_names(self):
        return ["c2", "c3"] + (self.mask_names if self.expose_masks else [])

    def describe(self):
        return {"arch": "tiny_ssi", "with_fpn": False, "sparse": True, "sampling": self.sampling,
                "seed": self.seed, "normalisation": {"mean": [0.0] * 3, "std": [1.0] * 3},
                "init": "random seed 0"}

    def fuse_for_inference(self):
        bn = self.stem_bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.fused = ((self.stem_w * scale.view(-1, 1, 1, 1)).detach(),
                      (bn.bias - bn.running_mean * scale).detach())
        return self

    def forward(self, x):
        ssi = torch.ops.ssi
        mode = C.SAMPLING_MODES[self.sampling]
        if self.fused is not None:
            x = F.relu(F.conv2d(x, *self.fused, stride=2, padding=1))
        else:
            x = F.relu(self.stem_bn(F.conv2d(x, self.stem_w, stride=2, padding=1)))
        s = dict(mode=mode, grid_interval=C.GRID_PRIOR_INTERVAL, seed=self.seed)
        m1 = ssi.sample_mask(F.conv2d(x, self.mask1_w, self.mask1_b, padding=1), layer=0, **s)
        m2 = ssi.sample_mask(F.conv2d(x, self.mask2_w, self.mask2_b, stride=2, padding=1),
                             layer=1, **s)
        y1 = ssi.sparse_conv2d(x, self.conv1_w, self.conv1_b, m1, relu=1)
        y1 = ssi.gaussian_interp(y1, m1, torch.zeros_like(self.conv1_b), sigma=float(self.sigma1))
        conv = dict(stride_h=2, stride_w=2, pad_h=1, pad_w=1)
        off = ssi.sparse_conv2d(x, self.offset_w, self.offset_b, m2, **conv)
        y2 = ssi.sparse_conv2d(y1, self.conv2_w, self.conv2_b, m2, off, relu=1, **conv)
        z = ssi.sparse_conv2d(y2, self.conv3_w, torch.zeros_like(self.conv3_b), m2)
        c2 = ssi.gaussian_interp(z, m2, self.conv3_b, F.conv2d(x, self.short_w, stride=2),
                                 sigma=float(self.sigma2), relu=1)
        m3 = ssi.sample_mask(F.conv2d(x, self.mask1_w, self.mask1_b, padding=1), layer=2, **s)
        e = ssi.sparse_conv2d(x, self.extra_w, self.extra_b, m3, pad_h=2, pad_w=2,
                              dilation_h=2, dilation_w=2, groups=2, relu=1)
        c3 = F.max_pool2d(ssi.gaussian_interp(e, m3, self.extra_b * 0.5, sigma=1.5), 2)
        return (c2, c3) + ((m1, m2, m3) if self.expose_masks else ())


def check_ssi_nodes(model: onnx.ModelProto) -> dict:
    """Every SSI node: contract attributes exactly (+ the parser strings), int/float kinds,
    weights and bias from initializers; returns counts per op type."""
    inits = {i.name for i in model.graph.initializer}
    counts: dict = {}
    for node in model.graph.node:
        if node.domain != C.DOMAIN:
            continue
        op = C.OPS[node.op_type]
        counts[op.name] = counts.get(op.name, 0) + 1
        attrs = {a.name: a for a in node.attribute}
        assert set(attrs) == {a.name for a in op.attributes} | set(PARSER_ATTRIBUTES)
        for a in op.attributes:
            want = onnx.AttributeProto.INT if a.type == "int" else onnx.AttributeProto.FLOAT
            assert attrs[a.name].type == want, (node.name, a.name)
        assert attrs["plugin_version"].s.decode() == C.PLUGIN_VERSION
        assert attrs["plugin_namespace"].s.decode() == C.PLUGIN_NAMESPACE
        assert op.min_inputs <= len(node.input) <= len(op.inputs)
        if op is C.SPARSE_CONV2D:
            assert node.input[1] in inits and node.input[2] in inits, node.input
    funcs = {(f.domain, f.name): f for f in model.functions}
    model_opset = {i.domain: i.version for i in model.opset_import}[""]
    for op in C.OPS.values():
        f = funcs[(C.DOMAIN, op.name)]
        assert {i.domain: i.version for i in f.opset_import}[""] == model_opset
        assert all(n.domain in ("", "ai.onnx") for n in f.node)  # standard ops only
    assert not {n.op_type for n in model.graph.node} & {"BatchNormalization", "Dropout"}
    return counts


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    """TinySSI exported once per sampling mode (masks exposed, dynamic batch/height/width)."""
    out = {}
    d = tmp_path_factory.mktemp("tiny")
    for mode in ("threshold", "stochastic", "official"):
        model = TinySSI(mode, seed=7).eval()
        path = export_onnx(model, d / f"tiny_{mode}.onnx", input_shape=(1, 3, 64, 64),
                           expose_masks=True, metadata={"note": "test"})
        out[mode] = (model, path)
    return out


@pytest.mark.parametrize("mode", ["threshold", "stochastic", "official"])
def test_tiny_export_matches_torch_at_two_shapes(tiny_exports, mode):
    model, path = tiny_exports[mode]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert check_ssi_nodes(proto) == {"SampleMask": 3, "SparseConv2d": 5, "GaussianInterp": 3}
    # one self-contained file: no external data, nothing written beside it
    assert all(i.data_location != TensorProto.EXTERNAL for i in proto.graph.initializer)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        f"tiny_{m}.onnx" for m in ("threshold", "stochastic", "official"))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["c2", "c3", "mask_1", "mask_2", "mask_3"]
    sess = ort_session(str(path))
    ref = TinySSI(mode, seed=7).eval()
    ref.expose_masks = True
    g = torch.Generator().manual_seed(5)
    for shape in [(1, 3, 64, 64), (2, 3, 96, 80)]:  # one file, two shapes, batch 2
        x = torch.rand(shape, generator=g)
        got = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = [t.numpy() for t in ref(x)]
        for name, a, b in zip(ref.output_names, got, want):
            assert a.shape == b.shape, name
            if name.startswith("mask"):
                assert np.array_equal(a > 0, b > 0), name  # identical sampling decisions
                assert np.abs(a - b).max() <= 2e-6, name
            else:
                assert rel_err(a, b) < 1e-5, (name, rel_err(a, b))
    # the caller's model was neither fused nor changed
    assert model.fused is None and isinstance(model.sigma1, nn.Parameter)
    assert model.expose_masks is False


def test_tiny_export_runs_in_onnx_reference(tiny_exports):
    model, path = tiny_exports["stochastic"]
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with np.errstate(over="ignore", invalid="ignore"):  # onnx.reference's Sigmoid overflows exp
        got = reference_evaluator(path).run(None, {"image": x.numpy()})
    ref = TinySSI("stochastic", seed=7).eval()
    ref.expose_masks = True
    with torch.no_grad():
        want = [t.numpy() for t in ref(x)]
    for name, a, b in zip(ref.output_names, got, want):
        if name.startswith("mask"):
            assert np.array_equal(a > 0, b > 0), name
        else:
            assert rel_err(a, b) < 1e-5, (name, rel_err(a, b))


def test_metadata_round_trip(tiny_exports):
    _, path = tiny_exports["official"]
    m = read_manifest(path)
    assert m.arch == "tiny_ssi" and m.sampling.mode == "official" and m.sampling.seed == 7
    assert m.onnx_opset == OPSET and m.precision == "fp32"
    assert m.ssi_opset_version == C.OPSET_VERSION
    assert m.semantics_version == C.SEMANTICS_VERSION
    assert m.preprocessing.mean == (0.0,) * 3 and m.preprocessing.std == (1.0,) * 3
    assert m.weights == Weights("random", seed=0)
    assert m.dynamic == ("batch", "height", "width") and m.masks_exposed
    assert m.output_names == ["c2", "c3", "mask_1", "mask_2", "mask_3"]
    assert [o.kind for o in m.outputs] == ["feature"] * 2 + ["mask"] * 3
    assert m.input.kind == "image" and m.input.shape == ("batch", 3, "height", "width")
    assert m.ssi_nodes == {"SampleMask": 3, "SparseConv2d": 5, "GaussianInterp": 3,
                           "SSIBottleneck": 0}
    assert m.granularity == "ops"  # bare ops, no SSI block
    assert m.extra == {"note": "test"}
    raw = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert list(raw) == ["ssi.manifest"]  # one manifest, nothing else to parse
    assert Manifest.from_dict(json.loads(raw["ssi.manifest"])) == m


def test_fp16_export_runs_in_ort(tmp_path):
    model = TinySSI("threshold").eval()
    path = export_onnx(model, tmp_path / "tiny16.onnx", input_shape=(1, 3, 64, 64),
                       dtype="fp16", expose_masks=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT16 for o in proto.graph.output)
    float_inits = [i for i in proto.graph.initializer if i.data_type in (TensorProto.FLOAT,
                                                                           TensorProto.FLOAT16)]
    assert float_inits and all(i.data_type == TensorProto.FLOAT16 for i in float_inits)
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    got = ort_session(str(path)).run(None, {"image": x.half().numpy()})
    ref = TinySSI("threshold").eval()
    ref.expose_masks = True
    with torch.no_grad():
        want = [t.numpy() for t in ref(x)]
    agree = np.mean([np.mean((a > 0) == (b > 0)) for a, b in zip(got[2:], want[2:])])
    assert agree >= 0.98, agree  # near-zero logits may flip in fp16
    for a, b in zip(got[:2], want[:2]):
        assert a.dtype == np.float16
        err = np.abs(a.astype(np.float32) - b) / np.abs(b).max()
        # fp16 rounding everywhere (~1e-3); a flipped mask position moves a few values more
        assert np.percentile(err, 99) < 5e-3 and err.max() < 0.25, (np.percentile(err, 99), err.max())
    assert read_manifest(path).precision == "fp16"


class FreezesWidth(nn.Module):
    """Picks k = round(share * H * W) in Python (as forced density does): torch.export
    freezes k at the example shape, so the file is wrong at any other size."""

    output_names = ["c2"]

    def forward(self, x):
        flat = x[:, :1].flatten(1)
        k = max(1, int(round(0.26 * flat.shape[1])))
        kth = torch.topk(flat, k, dim=1).values[:, -1:]
        return (x[:, :1] - kth.view(-1, 1, 1, 1),)


def test_verify_catches_shapes_frozen_at_export(tmp_path):
    path = tmp_path / "frozen.onnx"
    with pytest.raises(VerifyError, match="verify: c2 differs from PyTorch"):
        export_onnx(FreezesWidth(), path, input_shape=(1, 3, 64, 64), verify=True)
    # the same file verified along batch only passes
    export_onnx(FreezesWidth(), path, input_shape=(1, 3, 64, 64), dynamic=("batch",),
                verify=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_shape=(1, 3, 64)), "4 positive integers"),
    (dict(input_shape=(1, 1, 64, 64)), "3 channels"),
    (dict(dynamic=("batch", "depth")), "unknown dynamic axis 'depth'"),
    (dict(opset=17), "opset 17 is not supported"),
    (dict(dtype="int8"), "use fp32 or fp16"),
])
def test_export_onnx_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export_onnx(TinySSI(), tmp_path / "x.onnx", **kwargs)
    assert not (tmp_path / "x.onnx").exists()


# --------------------------------------------------------------------------------------------
# Registry models


@pytest.mark.parametrize("granularity", ["block", "ops"])
def test_sparse_resnet50_stochastic_masks_identical(tmp_path, granularity):
    from ssi_deploy.models import create_model

    model = create_model("sparse_resnet50", sampling="stochastic", seed=11)
    path = export_onnx(model, tmp_path / "sr50.onnx", input_shape=(1, 3, 64, 64),
                       expose_masks=True, granularity=granularity)
    proto = onnx.load(str(path))
    sampler = "SSIBottleneck" if granularity == "block" else "SampleMask"
    if granularity == "block":  # one node per SSI block
        assert check_ssi_nodes(proto) == {"SSIBottleneck": 16}
    else:
        assert check_ssi_nodes(proto) == {"SampleMask": 32, "SparseConv2d": 48,
                                          "GaussianInterp": 32}
    sample = [{a.name: helper.get_attribute_value(a) for a in n.attribute}
              for n in proto.graph.node if n.op_type == sampler]
    assert {a["seed"] for a in sample} == {11}
    assert {a["mode"] for a in sample} == {C.MODE_STOCHASTIC}
    layers = [a["layer"] for a in sample] if granularity == "ops" else \
        [v for a in sample for v in (a["layer1"], a["layer2"])]
    assert sorted(layers) == list(range(32))
    model.expose_masks = True
    sess = ort_session(str(path))
    x = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(2))
    got = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    n_masks = 0
    for name, a, b in zip(model.output_names, got, want):
        if name.startswith("mask_"):
            assert np.array_equal(a, b), name
            n_masks += 1
        else:
            assert rel_err(a, b) < 2e-5, (name, rel_err(a, b))
    assert n_masks == 32
    m = read_manifest(path)
    assert m.arch == "sparse_resnet50" and m.sampling == Sampling("stochastic", 11, None)
    assert m.weights == Weights("random", seed=0)

    if granularity == "ops":
        # the ops form picks k from H*W in Python: dynamic height/width would freeze it (the
        # block form: test_granularity_is_checked_and_recorded)
        model.set_forced_density(0.26)
        with pytest.raises(ExportError, match="forced density 0.26 cannot be exported in the "
                                              "ops form with dynamic"):
            export_onnx(model, tmp_path / "fd.onnx", input_shape=(1, 3, 64, 64),
                        granularity="ops")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sparse_resnet101_dcn", "sparse_resnet101", "resnet101",
                                  "resnet101_dcn"])
def test_registry_arch_exports_and_matches_torch(arch, tmp_path):
    """The remaining registry archs (sparse_resnet50: above; resnet50: the CLI test)."""
    from ssi_deploy.models import create_model, get_arch

    model = create_model(arch)
    path = export_onnx(model, tmp_path / f"{arch}.onnx", input_shape=(1, 3, 64, 64))
    proto = onnx.load(str(path))
    counts = check_ssi_nodes(proto)
    spec = get_arch(arch)
    if spec.sparse:
        assert counts == {"SSIBottleneck": len(model.ssi_blocks)} == {"SSIBottleneck": 33}
    else:  # dense: deformable convs (if any) are SparseConv2d with a full mask
        dcn_blocks = sum(getattr(b, "with_dcn", False) for b in model.backbone.blocks)
        assert dcn_blocks == (30 if "dcn" in arch else 0)
        assert counts == ({"SparseConv2d": dcn_blocks} if dcn_blocks else {})
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    got = ort_session(str(path)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    # SSI exports expose one mask per sampling layer after the features by default
    masks = model.mask_names if spec.sparse else []
    assert [o.name for o in proto.graph.output] == model.feature_names + masks
    assert len(got) == len(want) + len(masks) == len(model.output_names) + len(masks)
    for name, a, b in zip(model.output_names, got, want):
        assert rel_err(a, b) < 2e-5, (arch, name, rel_err(a, b))


# --------------------------------------------------------------------------------------------
# CLI


def run_cli(args, capsys):
    rc = cli_main(["export", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_export_summary_and_checkpoint(tmp_path, capsys):
    from ssi_deploy.models import create_model

    ckpt = tmp_path / "r50.pth"
    model = create_model("resnet50", with_fpn=True, init_seed=3)
    torch.save({"state_dict": model.state_dict()}, ckpt)
    out = tmp_path / "r50.onnx"
    rc, stdout, err = run_cli(["--arch", "resnet50", "--with-fpn", "--checkpoint", str(ckpt),
                               "--output", str(out), "--input-shape", "1x3x64x64",
                               "--dynamic", "none", "--opset", "20", "--verify"], capsys)
    assert rc == 0, err
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("exported resnet50: no SSI nodes")
    assert str(out) in last and "MB" in last
    assert "verifying with ONNX Runtime against PyTorch" in stdout
    m = read_manifest(out)
    assert m.onnx_opset == 20 and m.dynamic == () and m.with_fpn is True
    assert m.weights.kind == "checkpoint" and len(m.weights.sha256) == 64
    s = summarize(out)
    assert s["opset"] == 20 and s["inputs"] == ["image"]
    assert s["outputs"] == ["p2", "p3", "p4", "p5", "p6"]
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 64, 64]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    got = ort_session(str(out)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    for name, a, b in zip(s["outputs"], got, want):
        assert rel_err(a, b) < 2e-5, (name, rel_err(a, b))


@pytest.mark.parametrize("args,match", [
    (["--arch", "sparse_resnet50", "--input-shape", "1x3x64"], "bad --input-shape '1x3x64'"),
    (["--arch", "sparse_resnet50", "--input-shape", "1x3x0x64"], "every size must be positive"),
    (["--arch", "sparse_resnet50", "--input-shape", "1x4x64x64"], "3-channel (RGB)"),
    (["--arch", "sparse_resnet50", "--input-shape", "1x3x100000x100000"], "over the limit of 16384"),
    (["--arch", "sparse_resnet50", "--input-shape", "64x3x8192x8192"], "GiB of activations"),
    (["--arch", "resnet18"], "unknown --arch 'resnet18'; choose one of"),
    (["--arch", "sparse_resnet50", "--checkpoint", "/nonexistent/w.pth"], "does not exist"),
    (["--arch", "sparse_resnet50", "--checkpoint", "/"], "is not a file"),
    (["--arch", "sparse_resnet50", "--opset", "13"], "opset 13 is not supported: use 18..25"),
    (["--arch", "sparse_resnet50", "--dynamic", "batch,time"], "unknown axis 'time'"),
    (["--arch", "resnet50", "--masks"], "dense and has no sampling layers"),
])
def test_cli_user_mistakes_give_one_line(tmp_path, capsys, args, match):
    rc, _, err = run_cli([*args, "--output", str(tmp_path / "m.onnx")], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("where,match", [
    ("missing_dir/m.onnx", "does not exist; create it first"),
    ("a_file/m.onnx", "is not a directory"),
    ("a_dir", "is a directory"),
    ("m.txt", "must end in .onnx"),
])
def test_cli_bad_output_fails_before_export(tmp_path, capsys, monkeypatch, where, match):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir.onnx").mkdir()
    target = tmp_path / ("a_dir.onnx" if where == "a_dir" else where)
    import ssi_deploy.models as models

    def no_build(*a, **k):  # the output is checked before any model is built
        raise AssertionError("model built before the output path was checked")
    monkeypatch.setattr(models, "create_model", no_build)
    rc, _, err = run_cli(["--arch", "sparse_resnet50", "--output", str(target)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_export_write_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    import ssi_deploy.export.exporter as ex

    def boom(proto, path, **kw):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt  # Ctrl-C while writing
    monkeypatch.setattr(ex.onnx, "save_model", boom)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(TinySSI(), tmp_path / "t.onnx", input_shape=(1, 3, 32, 32))
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_nonfinite_weights(tmp_path):
    model = TinySSI()
    with torch.no_grad():
        model.conv2_w[0, 0, 0, 0] = float("nan")
    with pytest.raises(ExportError, match=r"conv2_w has 1 NaN and 0 Inf.*damaged"):
        export_onnx(model, tmp_path / "nan.onnx", input_shape=(1, 3, 32, 32))
    assert not (tmp_path / "nan.onnx").exists()


def test_cli_unreadable_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    rc, _, err = run_cli(["--arch", "sparse_resnet50", "--checkpoint", str(bad), "--output",
                          str(tmp_path / "m.onnx")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(bad) in err


def test_read_metadata_errors(tmp_path):
    with pytest.raises(SSIError, match="no such ONNX file"):
        read_metadata(tmp_path / "missing.onnx")
    plain = tmp_path / "plain.onnx"
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g), str(plain))
    with pytest.raises(SSIError, match="carries no ssi-deploy manifest"):
        read_metadata(plain)


def test_block_form_runs_in_onnx_reference_as_written(tmp_path):
    """onnx.reference runs a block-form export from the file itself, no patching: every
    SSIBottleneck node has all 15 inputs (absent parts are empty tensors), the second runtime
    beside ONNX Runtime. Same masks as PyTorch, features as close as ONNX Runtime's."""
    import warnings

    from onnx.reference import ReferenceEvaluator

    from ssi_deploy.models import create_model

    model = create_model("sparse_resnet50", init_seed=1)
    path = export_onnx(model, tmp_path / "b.onnx", input_shape=(1, 3, 32, 32))
    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.domain == C.DOMAIN]
    assert {n.op_type for n in nodes} == {"SSIBottleneck"} and len(nodes) == 16
    assert all(len(n.input) == len(C.SSI_BOTTLENECK.inputs) and "" not in n.input for n in nodes)
    x = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():  # numpy overflow in the untaken branches of official mode
        warnings.simplefilter("ignore", RuntimeWarning)
        got = ReferenceEvaluator(str(path)).run(None, {"image": x.numpy()})
    model.expose_masks = True
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    for name, a, b in zip(model.output_names, got, want):
        if name.startswith("mask_"):
            assert np.array_equal(a, b), name
        else:
            assert rel_err(a, b) < 2e-5, (name, rel_err(a, b))


def test_granularity_is_checked_and_recorded(tmp_path):
    from ssi_deploy.models import create_model

    model = create_model("sparse_resnet50")
    with pytest.raises(ExportError, match="granularity 'layers' is not supported"):
        export_onnx(model, tmp_path / "x.onnx", granularity="layers")
    # forced density and dynamic height/width: the block op computes k from its input
    model.set_forced_density(0.3)
    path = export_onnx(model, tmp_path / "b.onnx", input_shape=(1, 3, 64, 64))
    assert read_manifest(path).granularity == "block"
    with pytest.raises(ExportError, match="--granularity block"):
        export_onnx(model, tmp_path / "o.onnx", input_shape=(1, 3, 64, 64), granularity="ops")
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    got = ort_session(str(path)).run(None, {"image": x.numpy()})
    model.expose_masks = True
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    for name, a, b in zip(model.output_names, got, want):
        if name.startswith("mask_"):
            assert np.array_equal(a, b), name  # k = forced_count(0.3, 16*24) in both
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "o.onnx").exists()
