"""The ONNX function body of ssi::SSIBottleneck against the three-op chain in PyTorch.

Ground truth: ``SSIBottleneck.masks`` and the block's building-block forward
(``forward_ops``: SampleMask x2,
SparseConv2d, GaussianInterp, ... with BatchNorm folded) of a block with random weights and
random BatchNorm statistics. The ONNX side is one hand-built SSIBottleneck node (all 15 inputs,
empty [0] tensors for the parts a block lacks) whose model-local function is
``build_function(C.SSI_BOTTLENECK, opset)``, run by ONNX Runtime and by
``onnx.reference.ReferenceEvaluator`` as written (no patching of the model).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from torch import nn

from fp_bounds import gamma, sample_mask_bound
from ssi_deploy.export.functions import MAX_OPSET, MIN_OPSET, build_function
from ssi_deploy.export.schemas import register_schemas
from ssi_deploy.models.blocks import SSIBottleneck
from ssi_deploy.ops import contract as C
from ssi_deploy.ops import sampling

OPSET = 18
OP = C.SSI_BOTTLENECK

# onnx.reference's Sigmoid evaluates both of its np.where branches: exp overflows (to inf,
# then nan in the branch not taken) for the large logits / T of the official mode. Harmless.
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning"),
]


# --------------------------------------------------------------------------------------------
# the torch reference


def make_block(inplanes: int, planes: int, stride: int, downsample: bool, dcn: bool,
               masks: str = "mixed", grid: int = C.GRID_PRIOR_INTERVAL, mode: int = 0,
               density: float | None = None, seed: int = 0, index: int = 3) -> SSIBottleneck:
    """An eval-mode block with seeded random weights and BatchNorm statistics (so folding
    changes the weights). ``masks``: "mixed" (random mask convs, about half the positions
    kept), "empty" (logits -20 everywhere) or "full" (+20)."""
    g = torch.Generator().manual_seed(1000 * inplanes + 100 * stride + 10 * dcn + downsample)
    ds = None
    if downsample:
        ds = nn.Sequential(nn.Conv2d(inplanes, 4 * planes, 1, stride, bias=False),
                           nn.BatchNorm2d(4 * planes))
    block = SSIBottleneck(inplanes, planes, stride, ds, dcn, index=index, grid_interval=grid)
    with torch.no_grad():
        for mod in block.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = math.prod(mod.weight.shape[1:])
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.3)
                mod.running_mean.uniform_(-0.5, 0.5, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
        if dcn:  # offsets of a few pixels, fractional: every bilinear case is exercised
            block.conv2_offset.weight.mul_(3.0)
            block.conv2_offset.bias.uniform_(-1.5, 1.5, generator=g)
        for conv in (block.conv1_mask, block.conv2_mask):
            if masks == "mixed":
                conv.bias.fill_(0.05)
            else:
                conv.weight.zero_()
                conv.bias.fill_(-20.0 if masks == "empty" else 20.0)
        # sigmas (inverse std) small enough that interpolation reaches a few positions;
        # one negative: the contract's sigma is |s| (fold_bn), the Gaussian only sees s^2
        block.conv1_sigma.fill_(1.3)
        block.conv2_sigma.fill_(-0.9)
    block.sampling_mode, block.seed, block.forced_density = mode, seed, density
    return block.eval()


def shift_to_density(logits: torch.Tensor, density: float | None) -> torch.Tensor:
    """The logits the decisions are taken on: with a forced density, minus the k-th largest
    per image, k = contract.forced_count(density, H*W)."""
    if density is None:
        return logits
    flat = logits.flatten(1)
    kth = torch.topk(flat, C.forced_count(density, flat.shape[1]), dim=1).values[:, -1:]
    return logits - kth.view(-1, 1, 1, 1)


def torch_chain(block: SSIBottleneck, x: torch.Tensor):
    """(out, m1, m2, logits1, logits2, folded weights) of the three-op chain: the block's
    masks and its building-block forward (SampleMask, SparseConv2d, GaussianInterp)."""
    chain = block.forward_ops
    with torch.no_grad():
        f = block.fold_bn()
        block.fused = f  # the shortcut uses the folded downsample too (what the node is fed)
        m1, m2 = block.masks(x)
        out = chain(x, m1, m2, f)
        l1, l2 = block.conv1_mask(x), block.conv2_mask(x)
    d = block.forced_density
    return out, m1, m2, shift_to_density(l1, d), shift_to_density(l2, d), f


# --------------------------------------------------------------------------------------------
# the ONNX model: one SSIBottleneck node


def node_inputs(block: SSIBottleneck, f: dict) -> dict[str, torch.Tensor]:
    """The 15 inputs in contract order (x excluded): what the exporter feeds the node."""
    empty = torch.zeros(0)
    off = f["offset"] if block.with_dcn else (empty, empty)
    ds = f["downsample"] if block.downsample is not None else (empty, empty)
    vals = dict(mask1_weight=block.conv1_mask.weight, mask1_bias=block.conv1_mask.bias,
                mask2_weight=block.conv2_mask.weight, mask2_bias=block.conv2_mask.bias,
                conv1_weight=f["conv1"][0], conv1_bias=f["conv1"][1],
                offset_weight=off[0], offset_bias=off[1],
                conv2_weight=f["conv2"][0], conv2_bias=f["conv2"][1],
                conv3_weight=f["conv3"][0], conv3_bias=f["conv3"][1],
                downsample_weight=ds[0], downsample_bias=ds[1])
    assert list(vals) == [i.name for i in OP.inputs[1:]]
    return {k: v.detach().contiguous() for k, v in vals.items()}


def node_attrs(block: SSIBottleneck, f: dict) -> dict:
    layer1, layer2 = block.layer_ids
    return OP.check_attributes(dict(
        stride=block.stride, dcn=int(block.with_dcn), downsample=int(block.downsample is not None),
        sigma1=f["sigma1"], sigma2=f["sigma2"], mode=block.sampling_mode,
        grid_interval=block.grid_interval, seed=block.seed, layer1=layer1, layer2=layer2,
        density=block.forced_density or 0.0))


def bottleneck_model(weights: dict[str, torch.Tensor], attrs: dict, dtype=TensorProto.FLOAT,
                     opset: int = OPSET) -> onnx.ModelProto:
    register_schemas()
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    inits = [numpy_helper.from_array(v.numpy().astype(np_dtype), f"w_{k}")
             for k, v in weights.items()]
    node = helper.make_node(OP.name, ["x"] + [f"w_{k}" for k in weights], list(OP.outputs),
                            name="block0", domain=C.DOMAIN, **attrs,
                            plugin_version=C.PLUGIN_VERSION, plugin_namespace=C.PLUGIN_NAMESPACE)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", dtype, ["n", "c", "h", "w"])],
        [helper.make_tensor_value_info("y", dtype, ["n", "c4", "ho", "wo"]),
         helper.make_tensor_value_info("mask1", dtype, ["n", 1, "h", "w"]),
         helper.make_tensor_value_info("mask2", dtype, ["n", 1, "ho", "wo"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(C.DOMAIN, C.OPSET_VERSION)],
                              functions=[build_function(OP, opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def run_ref(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, {"x": x})


RUNNERS = {"ort": run_ort, "reference": run_ref}


# --------------------------------------------------------------------------------------------
# comparison


def logit_bound(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Two float32 evaluations of a 3x3 mask conv (K = 9 Cin products + bias) differ by at
    most 2 gamma(K + 1) (|W| * |x| + |b|), whatever their summation order."""
    w = conv.weight.detach().double()
    k = math.prod(w.shape[1:])
    mag = F.conv2d(x.double().abs(), w.abs(), conv.bias.detach().double().abs(), conv.stride, 1)
    return 2 * gamma(k + 1) * mag


def effective_mode(block: SSIBottleneck) -> int:
    return C.MODE_THRESHOLD if block.forced_density is not None else block.sampling_mode


def undecidable(logits: torch.Tensor, dlogit: torch.Tensor, block: SSIBottleneck,
                layer: int) -> torch.Tensor:
    """Decisions two correct backends may take differently: the body computes its own logits
    (its own conv), which differ from torch's by at most ``dlogit`` (twice that with a forced
    density: the k-th largest is subtracted, and that one is exactly 0 in both), plus the
    float32 band of the sampling function itself (fp_bounds.sample_mask_bound)."""
    mode = effective_mode(block)
    dl = dlogit * (2 if block.forced_density is not None else 1)
    z = sampling.decision_margin(logits, mode, block.grid_interval, block.seed, layer).abs()
    if block.forced_density is not None:
        z = torch.where(logits == 0, torch.full_like(z, math.inf), z)
    _, band = sample_mask_bound(logits, mode, block.grid_interval, block.seed, layer)
    return (z <= dl) | band


def draw_input(block: SSIBottleneck, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The first x (seeds seed, seed + 1, ...) whose every sampling decision is decidable, so
    that identical masks can be required (each draw has a few hundred decisions, each within
    the ~1e-4 logit bound of its threshold with probability ~1e-4)."""
    for attempt in range(20):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + attempt))
        with torch.no_grad():
            ok = all(not undecidable(shift_to_density(conv(x), block.forced_density),
                                     logit_bound(x, conv), block, layer).any()
                     for conv, layer in ((block.conv1_mask, block.layer_ids[0]),
                                         (block.conv2_mask, block.layer_ids[1])))
        if ok:
            return x
    raise AssertionError("no decidable input drawn")


def check_masks(got: np.ndarray, ref: torch.Tensor, logits: torch.Tensor, dlogit: torch.Tensor,
                block: SSIBottleneck, layer: int, what: str) -> None:
    """Identical keep decisions; soft (official) values within the derived bound."""
    got_t = torch.from_numpy(got.astype(np.float32))
    assert got_t.shape == ref.shape, (what, got_t.shape, ref.shape)
    assert not undecidable(logits, dlogit, block, layer).any(), f"{what}: undecidable test data"
    assert torch.equal(got_t > 0, ref > 0), f"{what}: keep decisions differ"
    assert bool(((got_t == 0) | (got_t >= 0.5)).all()) and bool((got_t <= 1).all())
    mode = effective_mode(block)
    if mode == C.MODE_OFFICIAL:
        # v = sigmoid((logit + L) / T): the function's own float32 error (fp_bounds) plus
        # the logit's, times dv/dlogit = v (1 - v) / T
        bound, _ = sample_mask_bound(logits, mode, block.grid_interval, block.seed, layer)
        v = ref.double()
        bound = bound + v * (1 - v) / C.OFFICIAL_TEMPERATURE * dlogit * (1 + 1e-3)
        bound = torch.where(ref > 0, bound, torch.zeros_like(bound))
        err = (got_t.double() - ref.double()).abs()
        assert (err <= bound).all(), f"{what}: soft values off by {float((err - bound).max()):.3g}"
    else:
        assert torch.equal(got_t, ref), f"{what}: mask values differ"


def check_features(got: np.ndarray, ref: torch.Tensor, what: str) -> float:
    """|got - ref| <= 1e-4 max|ref| (a simple bound, not an element-wise derivation).

    Each output element is reached through five float32 stages: conv1 (Cin <= 16 products),
    a 49-term interpolation, conv2 (9 p = 36 products, or 4 bilinear corners each for DCN,
    whose offsets come from a 9 Cin-term conv), conv3 (p = 4 products), a second 49-term
    interpolation, the bias, the shortcut (Cin products) and the add. That is a few hundred
    roundings on any path; two evaluations (different summation orders, FMA, libm exp)
    differ by at most about 2 u = 1.2e-7 per term times the sum of |terms|, and the sums of
    |terms| stay within a small multiple of max|ref| for these weights (He-scaled, BN
    scale <= 2): 300 * 1.2e-7 * ~3 ~ 1e-4. The soft official masks add dm * |f - R| with
    dm <= 1e-5. A wrong tap, stride, bias or mask shows up orders of magnitude above this.
    """
    got_t = torch.from_numpy(got.astype(np.float32)).double()
    assert got_t.shape == ref.shape, (what, got_t.shape, ref.shape)
    scale = max(float(ref.abs().max()), 1e-6)
    err = float((got_t - ref.double()).abs().max())
    assert err <= 1e-4 * scale, f"{what}: max error {err:.3g} > 1e-4 * {scale:.3g}"
    return err / scale


def run_case(block: SSIBottleneck, x: torch.Tensor, runners=("ort", "reference")) -> dict:
    out, m1, m2, s1, s2, f = torch_chain(block, x)
    model = bottleneck_model(node_inputs(block, f), node_attrs(block, f))
    d1, d2 = logit_bound(x, block.conv1_mask), logit_bound(x, block.conv2_mask)
    results = {}
    for name in runners:
        y, g1, g2 = RUNNERS[name](model, x.numpy())
        assert y.dtype == g1.dtype == g2.dtype == np.float32
        check_masks(g1, m1, s1, d1, block, block.layer_ids[0], f"{name} mask1")
        check_masks(g2, m2, s2, d2, block, block.layer_ids[1], f"{name} mask2")
        results[name] = (check_features(y, out, f"{name} y"), y, g1, g2)
    return dict(out=out, m1=m1, m2=m2, results=results)


# --------------------------------------------------------------------------------------------
# tests

SHAPES = {  # (inplanes, planes, stride, downsample): every shortcut form
    "s1-identity": (16, 4, 1, False),
    "s1-downsample": (8, 4, 1, True),
    "s2-downsample": (8, 4, 2, True),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dcn", [False, True], ids=["regular", "dcn"])
@pytest.mark.parametrize("batch,hw", [(1, (13, 11)), (3, (9, 15))], ids=["n1-13x11", "n3-9x15"])
def test_body_matches_chain(shape, dcn, batch, hw):
    inplanes, planes, stride, ds = SHAPES[shape]
    block = make_block(inplanes, planes, stride, ds, dcn, grid=4)
    x = draw_input(block, (batch, inplanes, *hw), 7 + batch)
    r = run_case(block, x)
    for m in (r["m1"], r["m2"]):  # the masks are mixed: the sparse paths really matter
        assert 0.2 < float((m > 0).float().mean()) < 0.8
    assert r["m2"].shape[2:] == ((hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1)


@pytest.mark.parametrize("mode", ["threshold", "stochastic", "official"])
@pytest.mark.parametrize("stride,dcn", [(1, False), (2, True)])
def test_body_sampling_modes(mode, stride, dcn):
    block = make_block(8, 4, stride, True, dcn, mode=C.SAMPLING_MODES[mode], seed=-12345,
                       index=5)
    x = draw_input(block, (2, 8, 13, 11), 3)
    r = run_case(block, x)
    if mode == "official":  # soft values really occur
        m = r["m1"]
        assert bool(((m > 0) & (m < 0.999)).any())


@pytest.mark.parametrize("stride", [1, 2])
def test_body_forced_density(stride):
    # density 0.3 with the official mode set: the mode is ignored (threshold on shifted logits)
    block = make_block(8, 4, stride, True, stride == 2, mode=C.MODE_OFFICIAL, density=0.3,
                       grid=0)
    x = draw_input(block, (2, 8, 13, 11), 5)
    r = run_case(block, x)
    for m in (r["m1"], r["m2"]):
        k = C.forced_count(0.3, m.shape[2] * m.shape[3])
        assert ((m > 0).flatten(1).sum(1) == k).all()


def test_body_forced_count_follows_the_contract():
    # 9x15 = 135 positions at density 0.3: float32(0.3) * 135 = 40.5000016 -> 41 (contract:
    # forced_count), where float64 0.3 * 135 = 40.5 would round (half-even) to 40.
    assert C.forced_count(0.3, 135) == 41
    block = make_block(16, 4, 1, False, False, density=0.3, grid=0)
    x = draw_input(block, (2, 16, 9, 15), 11)
    with torch.no_grad():
        f = block.fold_bn()
    model = bottleneck_model(node_inputs(block, f), node_attrs(block, f))
    for run in RUNNERS.values():
        _, m1, m2 = run(model, x.numpy())
        assert ((m1 > 0).reshape(2, -1).sum(1) == 41).all()
        assert ((m2 > 0).reshape(2, -1).sum(1) == 41).all()


@pytest.mark.parametrize("stride,ds,dcn", [(1, False, False), (2, True, True)])
def test_body_empty_masks(stride, ds, dcn):
    # nothing sampled (logits -20, no grid prior): every interpolation window is empty, so
    # y = relu(conv3_bias + shortcut(x)) exactly as in the chain
    inplanes = 16 if not ds else 8
    block = make_block(inplanes, 4, stride, ds, dcn, masks="empty", grid=0)
    x = draw_input(block, (2, inplanes, 9, 15), 2)
    r = run_case(block, x)
    assert not r["m1"].any() and not r["m2"].any()
    f = block.fused
    short = x if not ds else F.conv2d(x, *f["downsample"], stride=stride)
    want = F.relu(f["conv3"][1].view(1, -1, 1, 1) + short)
    for name, (_, y, g1, g2) in r["results"].items():
        assert not g1.any() and not g2.any(), name
        np.testing.assert_allclose(y, want.numpy(), rtol=0, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("stride,ds,dcn", [(1, False, True), (2, True, False)])
def test_body_full_masks(stride, ds, dcn):
    inplanes = 16 if not ds else 8
    block = make_block(inplanes, 4, stride, ds, dcn, masks="full")
    x = draw_input(block, (1, inplanes, 13, 11), 4)
    r = run_case(block, x)
    assert bool((r["m1"] == 1).all()) and bool((r["m2"] == 1).all())
    # full masks: the block is the dense bottleneck (interpolation keeps every value)
    with torch.no_grad():  # Bottleneck.forward with the folded weights (block.fused)
        want = super(SSIBottleneck, block).forward(x)
    for name, (_, y, _, _) in r["results"].items():
        check_features(y, want, f"{name} y vs dense bottleneck")


def test_body_fp16_io():
    block = make_block(8, 4, 2, True, True, grid=4)
    x = draw_input(block, (2, 8, 13, 11), 9)
    with torch.no_grad():
        f = block.fold_bn()
    # fp16-representable values: the fp32 model on the same values is the reference (the
    # body casts to float32 first, so both compute the same float32 arithmetic)
    weights = {k: v.half().float() for k, v in node_inputs(block, f).items()}
    x16 = x.half()
    attrs = node_attrs(block, f)
    m16 = bottleneck_model({k: v.half() for k, v in weights.items()}, attrs, TensorProto.FLOAT16)
    m32 = bottleneck_model(weights, attrs)
    for name, run in RUNNERS.items():
        got, want = run(m16, x16.numpy()), run(m32, x16.float().numpy())
        assert [g.dtype for g in got] == [np.float16] * 3, name
        # masks: the same float32 logits, so the same decisions (threshold mode: 0 or 1)
        assert np.array_equal(got[1], want[1].astype(np.float16)), name
        assert np.array_equal(got[2], want[2].astype(np.float16)), name
        assert 0.2 < float((got[2] > 0).mean()) < 0.8
        # features: one fp16 rounding at the output (half an ulp, 2**-11 relative), plus
        # slack for a different float32 kernel choice between the two sessions
        y, ref = got[0].astype(np.float32), want[0]
        assert np.all(np.abs(y - ref) <= 2.0 ** -11 * np.abs(ref) + 1e-5 * np.abs(ref).max()), name


@pytest.mark.parametrize("stride,ds,dcn", [(1, False, False), (2, True, True)])
def test_body_static_shapes(stride, ds, dcn):
    # An export with static shapes: ORT's optimiser folds the flags and the shapes, and
    # strict shape inference (with data propagation) runs into both If branches, the
    # untaken one holding the empty [0] weights of the absent part.
    inplanes = 16 if not ds else 8
    block = make_block(inplanes, 4, stride, ds, dcn, grid=4)
    x = draw_input(block, (2, inplanes, 9, 15), 21)
    out, m1, m2, s1, s2, f = torch_chain(block, x)
    model = bottleneck_model(node_inputs(block, f), node_attrs(block, f))
    model.graph.input[0].type.tensor_type.shape.CopyFrom(
        helper.make_tensor_type_proto(TensorProto.FLOAT, list(x.shape)).tensor_type.shape)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    for name, run in RUNNERS.items():
        y, g1, g2 = run(model, x.numpy())
        assert np.array_equal(g1 > 0, m1.numpy() > 0) and np.array_equal(g2 > 0, m2.numpy() > 0)
        check_features(y, out, f"{name} y")


@pytest.mark.parametrize("opset", range(MIN_OPSET, MAX_OPSET + 1))
def test_body_builds_and_checks_for_every_opset(opset):
    fn = build_function(OP, opset)
    assert list(fn.input) == [i.name for i in OP.inputs]
    assert list(fn.output) == list(OP.outputs)
    assert {a.name for a in fn.attribute_proto} == {a.name for a in OP.attributes}
    if opset in (MIN_OPSET, MAX_OPSET):  # full checker (schemas registered) + one ORT run
        block = make_block(16, 4, 1, False, False, grid=4)
        x = draw_input(block, (1, 16, 9, 15), 1)
        out, *_, f = torch_chain(block, x)
        model = bottleneck_model(node_inputs(block, f), node_attrs(block, f), opset=opset)
        check_features(run_ort(model, x.numpy())[0], out, f"opset {opset}")
