"""The SSIBottleneck op: equal to the three-op chain and to a float64 oracle of the spec's
sparse order, within bounds derived from float32 rounding; masks as SampleMask samples them.

Bound of a feature (first order, any summation order): the block is a composition of sums of
products, ReLUs (1-Lipschitz) and interpolations whose weights are non-negative and sum to at
most 1, so every float32 evaluation differs from the exact value by at most gamma(n) times the
same computation on absolute values (|x|, |W|, |b|, no ReLU), n the longest chain of
accumulations (Cin + 9p + p + two 7x7 windows and their normalisers, plus a few additions).
With DCN the offsets carry their own rounding e_off (gamma(9 Cin + 1) times |W_off| |x|), and
a bilinear sample moves by at most 4 max|Y1| per unit of offset, which conv2 and conv3 carry
on with the sums of their absolute weights (the final interpolation does not increase a max).
"""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fp_bounds import gamma
from ssi_deploy.models.blocks import SSIBottleneck
from ssi_deploy.ops import contract as C
from ssi_deploy.ops import ssi_bottleneck
from ssi_deploy.ops.bottleneck import run_block, shift_to_density
from ssi_deploy.ops.sampling import decision_margin
from ssi_deploy.ops.reference import gaussian_interp_oracle, sparse_conv2d_oracle


def make_block(cin, planes, stride, dcn, downsample, gen, mask_bias=(0.3, -0.2), grid=11):
    ds = None
    if downsample:
        ds = nn.Sequential(nn.Conv2d(cin, 4 * planes, 1, stride, bias=False),
                           nn.BatchNorm2d(4 * planes))
    b = SSIBottleneck(cin, planes, stride, ds, dcn, index=2, grid_interval=grid)
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0, 0.4, generator=gen)
        for m in b.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
        if dcn:
            b.conv2_offset.weight.mul_(0.5)  # offsets of a few pixels
        b.conv1_mask.bias.fill_(mask_bias[0])
        b.conv2_mask.bias.fill_(mask_bias[1])
        if abs(mask_bias[0]) > 10:  # empty / full masks: the logits are the bias alone
            b.conv1_mask.weight.zero_()
            b.conv2_mask.weight.zero_()
    return b.eval()


def oracle(block, f, x, m1, m2, absolute=False):
    """The spec's sparse order in float64 (ops.reference); ``absolute``: the same on |x|,
    |W|, |b| without ReLU (the magnitude that bounds rounding)."""
    d = (lambda t: t.double().abs()) if absolute else (lambda t: t.double())  # noqa: E731
    relu = 0 if absolute else 1
    s = block.stride
    xd = d(x)
    y1 = sparse_conv2d_oracle(xd, d(f["conv1"][0]), d(f["conv1"][1]), m1, relu=relu)
    y1 = gaussian_interp_oracle(y1, m1, torch.zeros(block.planes, dtype=torch.float64),
                                sigma=f["sigma1"])
    off = None
    if block.with_dcn:  # offsets themselves always exact (the extra DCN term covers them)
        off = F.conv2d(x.double(), f["offset"][0].double(), f["offset"][1].double(), s, 1)
    y2 = sparse_conv2d_oracle(y1, d(f["conv2"][0]), d(f["conv2"][1]), m2, off, s, s, 1, 1,
                              relu=relu)
    z = sparse_conv2d_oracle(y2, d(f["conv3"][0]), torch.zeros(4 * block.planes,
                                                               dtype=torch.float64), m2)
    if block.downsample is None:
        short = xd
    else:
        short = F.conv2d(xd, d(f["downsample"][0]), d(f["downsample"][1]), s)
    out = gaussian_interp_oracle(z, m2, d(f["conv3"][1]), short, sigma=f["sigma2"], relu=relu)
    return out, y1


def feature_bound(block, f, x, m1, m2) -> torch.Tensor:
    cin, p = block.inplanes, block.planes
    mag, mag_y1 = oracle(block, f, x, m1, m2, absolute=True)
    n = cin + 9 * p + p + 2 * (2 * C.INTERP_WINDOW ** 2) + 16
    bound = gamma(n) * mag
    if block.with_dcn:
        w_off, b_off = (t.double().abs() for t in f["offset"])
        e_off = gamma(9 * cin + 1) * (F.conv2d(x.double().abs(), w_off, b_off, block.stride, 1))
        w2 = f["conv2"][0].double().abs().flatten(1).sum(1).max()
        w3 = f["conv3"][0].double().abs().flatten(1).sum(1).max()
        bound = bound + 4 * float(mag_y1.max()) * float(e_off.max()) * float(w2) * float(w3)
    return bound


def assert_within(got, ref, bound, what):
    err = (got.double() - ref).abs()
    worst = float((err / bound.clamp_min(1e-300)).max())
    assert bool((err <= bound).all()), f"{what}: error {float(err.max()):.3g} exceeds the bound " \
                                       f"({worst:.2f} of it)"


CASES = [
    # cin, planes, stride, dcn, downsample, batch, h, w, mode, density, masks
    (16, 4, 1, False, False, 1, 13, 11, C.MODE_THRESHOLD, None, "mixed"),
    (16, 4, 1, True, False, 3, 9, 15, C.MODE_STOCHASTIC, None, "mixed"),
    (8, 4, 2, False, True, 3, 13, 11, C.MODE_OFFICIAL, None, "mixed"),
    (8, 4, 2, True, True, 1, 15, 9, C.MODE_THRESHOLD, None, "mixed"),
    (8, 4, 1, True, True, 3, 7, 12, C.MODE_OFFICIAL, None, "mixed"),
    (16, 4, 1, False, False, 3, 12, 12, C.MODE_THRESHOLD, 0.3, "mixed"),
    (8, 4, 2, True, True, 3, 11, 13, C.MODE_STOCHASTIC, 0.1, "mixed"),
    (16, 4, 1, True, False, 3, 9, 9, C.MODE_THRESHOLD, None, "empty"),
    (8, 4, 2, False, True, 1, 10, 7, C.MODE_THRESHOLD, None, "empty"),
    (16, 4, 1, False, False, 3, 8, 9, C.MODE_THRESHOLD, None, "full"),
    (8, 4, 2, True, True, 3, 9, 10, C.MODE_OFFICIAL, None, "full"),
    (32, 8, 2, True, True, 1, 1, 1, C.MODE_THRESHOLD, None, "mixed"),
]


def _ids(case):
    cin, p, s, dcn, ds, n, h, w, mode, dens, masks = case
    return (f"s{s}{'-dcn' if dcn else ''}{'-ds' if ds else ''}-n{n}-{h}x{w}-mode{mode}"
            f"{f'-d{dens}' if dens else ''}-{masks}")


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_block_op_equals_chain_and_oracle(case):
    cin, p, s, dcn, ds, n, h, w, mode, density, kind = case
    gen = torch.Generator().manual_seed(zlib.crc32(_ids(case).encode()))  # (str hash() differs per process)
    bias = {"mixed": (0.3, -0.2), "empty": (-30.0, -30.0), "full": (30.0, 30.0)}[kind]
    block = make_block(cin, p, s, dcn, ds, gen, bias, grid=0 if kind == "empty" else 11)
    block.sampling_mode, block.seed, block.forced_density = mode, 7, density
    x = torch.randn(n, cin, h, w, generator=gen)
    with torch.no_grad():
        f = block.fold_bn()
        keep = {}
        y, m1, m2 = run_block(x, f["block"], block.block_attrs(f), keep_logits=keep)
        # masks: the op's decisions are SampleMask's on its own logits, and those logits are
        # the mask convolutions' within rounding (decisions may differ only in that band)
        for m, layer, key in ((m1, block.layer_ids[0], "logits1"), (m2, block.layer_ids[1], "logits2")):
            ref = torch.ops.ssi.sample_mask(keep[key], mode=C.MODE_THRESHOLD if density else mode,
                                            grid_interval=block.grid_interval, seed=7, layer=layer)
            assert torch.equal(m, ref)
        # ... and those logits are the mask convolutions' within rounding, so a decision may
        # differ from SampleMask on the convolution's logits only within that much of its
        # threshold (decision_margin)
        own1, own2 = block.masks(x)
        for m, own, key, conv, stride, layer in (
                (m1, own1, "logits1", block.conv1_mask, 1, block.layer_ids[0]),
                (m2, own2, "logits2", block.conv2_mask, s, block.layer_ids[1])):
            logits = conv(x)
            e = gamma(9 * cin + 1) * F.conv2d(x.double().abs(), conv.weight.double().abs(),
                                              conv.bias.double().abs(), stride, 1)
            if density:  # the shift by the k-th largest logit: at most twice the error
                logits, e = shift_to_density(logits, density), 2 * float(e.max())
            shifted = keep[key].double() - logits.double()
            assert bool((shifted.abs() <= e).all())
            z = decision_margin(logits, mode=C.MODE_THRESHOLD if density else mode,
                                grid_interval=block.grid_interval, seed=7, layer=layer)
            flips = (m > 0) != (own > 0)
            assert bool((z[flips].abs() <= (e if density else e[flips]) + 1e-6).all())
        if kind == "empty":
            assert not m1.any() and not m2.any()
        if kind == "full":
            assert bool((m1 > 0).all()) and bool((m2 > 0).all())
        if density:  # each image keeps about the forced share (+ ties, + the grid prior)
            share = float((m2 > 0).float().mean())
            assert density - 0.01 <= share <= density + 0.2
        # features, given the same masks
        chain = block.forward_ops(x, m1, m2, f)
        exact, _ = oracle(block, f, x, m1, m2)
        bound = feature_bound(block, f, x, m1, m2)
    assert y.shape == chain.shape == exact.shape
    assert_within(y, exact, bound, "SSIBottleneck op")
    assert_within(chain, exact, bound, "three-op chain")
    if kind == "empty":  # no sample: relu(b3 + shortcut) exactly as the chain gives it
        torch.testing.assert_close(y, chain, rtol=0, atol=float(bound.max()))


def test_custom_op_equals_module_forward():
    gen = torch.Generator().manual_seed(3)
    block = make_block(8, 4, 2, True, True, gen)
    x = torch.randn(2, 8, 11, 9, generator=gen)
    with torch.no_grad():
        f = block.fold_bn()
        y, m1, m2 = block(x)
        y2, n1, n2 = ssi_bottleneck(x, *f["inputs"], **vars(block.block_attrs(f)))
    assert torch.equal(m1, n1) and torch.equal(m2, n2)
    assert torch.equal(y, y2)
    assert y2.is_contiguous(memory_format=torch.channels_last)


def test_replayed_masks_are_used_and_own_decisions_recorded():
    gen = torch.Generator().manual_seed(4)
    block = make_block(16, 4, 1, False, False, gen)
    x = torch.randn(1, 16, 12, 12, generator=gen)
    with torch.no_grad():
        block.fused = block.fold_bn()
        _, m1, m2 = block(x)
        other = (torch.zeros_like(m1), torch.ones_like(m2))
        block.override_masks, block.record_decisions = other, True
        y, r1, r2 = block(x)
    assert r1 is other[0] and r2 is other[1]
    own = [d["mask"] for d in block.decisions]
    assert torch.equal(own[0], m1) and torch.equal(own[1], m2)
    with torch.no_grad():
        want = block.forward_ops(x, *other, block.fused)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_named():
    gen = torch.Generator().manual_seed(5)
    block = make_block(8, 4, 2, True, True, gen)
    with torch.no_grad():
        f = block.fold_bn()
    inputs = list(f["inputs"])  # the 14 tensors after x
    attrs = vars(block.block_attrs(f))
    with pytest.raises(ValueError, match="offset_weight"):
        ssi_bottleneck(torch.randn(1, 8, 9, 9), *inputs[:6], torch.zeros(0), *inputs[7:], **attrs)
    with pytest.raises(ValueError, match="identity shortcut"):
        ssi_bottleneck(torch.randn(1, 8, 9, 9), *inputs[:12], torch.zeros(0), torch.zeros(0),
                       **{**attrs, "downsample": 0})


def test_workspace_serves_inference_mode_and_no_grad_alike():
    """Block temporaries live in reused buffers: one made under torch.inference_mode must not
    be written by a later no_grad forward (PyTorch forbids it), nor the other way round."""
    gen = torch.Generator().manual_seed(6)
    block = make_block(16, 4, 1, False, False, gen)
    x = torch.randn(1, 16, 12, 12, generator=gen)
    with torch.inference_mode():
        a = block(x)[0].clone()
    with torch.no_grad():
        b = block(x)[0]
    with torch.inference_mode():
        c = block(x)[0]
    assert torch.equal(a, b) and torch.equal(b, c)


@pytest.mark.parametrize("rows", [0, 1, 67, 255, 256, 1000])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("path", ["onednn-matmul", "onednn-plain-weights", "fallback"])
def test_row_gemm_every_path_within_rounding(rows, with_bias, relu, path, monkeypatch):
    """``row_gemm``: oneDNN's fused matmul where PyTorch has it, on weights reordered once
    into its blocked layout (or on the plain ones where that reorder is missing); without it
    (``fallback``) sgemm below ONEDNN_MIN_ROWS rows and a oneDNN 1x1 convolution over the rows
    viewed as a channels-last map from there on. Each gives act(x w^T + b) within
    gamma(K + 1) times the same sum on magnitudes (any order, blocked or FMA), against
    float64."""
    from ssi_deploy.ops import bottleneck
    from ssi_deploy.ops.bottleneck import ONEDNN_MIN_ROWS, row_gemm

    if path == "fallback":
        monkeypatch.setattr(bottleneck, "_LINEAR", None)
    elif bottleneck._LINEAR is None:
        pytest.skip("this PyTorch build has no torch.ops.mkldnn._linear_pointwise")
    if path == "onednn-plain-weights":
        monkeypatch.setattr(bottleneck, "_PACK", None)
    g = torch.Generator().manual_seed(rows)
    k, n = 576, 64
    x = torch.randn(rows, k, generator=g)
    w = torch.randn(n, k, generator=g)
    b = torch.randn(n, generator=g) if with_bias else None
    out = torch.empty(rows, n)
    y = row_gemm(x, w, b, out=out, relu=relu)
    assert y.shape == (rows, n) and y.dtype == torch.float32 and y.stride() == (n, 1)
    if path == "fallback" and rows < ONEDNN_MIN_ROWS:
        assert y.data_ptr() == out.data_ptr() or rows == 0  # sgemm wrote into out
    ref = x.double() @ w.double().t() + (b.double() if b is not None else 0.0)
    mag = x.double().abs() @ w.double().abs().t() + (b.double().abs() if b is not None else 0.0)
    bound = gamma(k + 1) * mag
    if relu:  # relu is 1-Lipschitz: the bound holds after it, and negatives are exactly 0
        ref = ref.clamp_min(0.0)
        assert bool((y >= 0).all())
    assert bool(((y.double() - ref).abs() <= bound).all())


def test_row_gemm_packed_weights_follow_the_weights():
    """The blocked copy of a weight is made once, reused, and made again after the weight
    changes in place (its version); results stay within the matmul's bound of float64."""
    from ssi_deploy.ops import bottleneck
    from ssi_deploy.ops.bottleneck import row_gemm

    if bottleneck._LINEAR is None or bottleneck._PACK is None:
        pytest.skip("this PyTorch build has no oneDNN matmul or weight reorder")
    g = torch.Generator().manual_seed(7)
    x = torch.randn(300, 96, generator=g)
    w = torch.randn(40, 96, generator=g)
    mag = x.double().abs() @ w.double().abs().t()
    for scale in (1.0, -3.0):
        if scale != 1.0:
            w.mul_(scale)
        y = row_gemm(x, w, None)
        first = bottleneck.packed_weight_cached(w)
        assert first is not None
        assert row_gemm(x, w, None).shape == y.shape
        assert bottleneck.packed_weight_cached(w) is first  # reused
        ref = x.double() @ w.double().t()
        assert bool(((y.double() - ref).abs() <= gamma(97) * abs(scale) * mag).all())
    key = id(w)
    del w, first
    assert key not in bottleneck._PACKED  # the blocked copy went with its weight


def test_row_gemm_keeps_autograd():
    """A row GEMM whose input needs a gradient takes the differentiable (sgemm) path: oneDNN's
    matmul op has no backward."""
    from ssi_deploy.ops.bottleneck import row_gemm

    x = torch.randn(300, 8, requires_grad=True)
    w = torch.randn(4, 8)
    row_gemm(x, w, torch.zeros(4), relu=True).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


# (n, h, w), stride, forced density (0: none), grid interval, mask biases, tied logits
THRESHOLD_CASES = [
    ((1, 7, 9), 1, 0.0, 0, (0.3, -0.2), False),
    ((3, 13, 11), 2, 0.0, 3, (0.1, 0.0), False),
    ((2, 16, 16), 1, 0.26, 4, (0.0, 0.0), False),
    ((3, 15, 17), 2, 0.5, 0, (0.0, 0.0), True),  # ties at the k-th value: all of them kept
    ((1, 1, 1), 2, 0.26, 1, (0.0, 0.0), False),
    ((2, 9, 8), 1, 0.0, 0, (-50.0, -50.0), False),  # empty masks
    ((2, 9, 8), 2, 0.0, 0, (50.0, 50.0), False),  # full masks
    ((1, 12, 10), 2, 1.0, 5, (0.0, 0.0), False),  # forced full
    ((2, 41, 37), 2, 0.26, 3, (0.0, 0.0), False),  # >= 2048 positions: one mask per thread
    ((1, 64, 33), 1, 0.0, 0, (0.1, -0.1), False),
]


@pytest.mark.parametrize("case", THRESHOLD_CASES, ids=[str(i) for i in range(len(THRESHOLD_CASES))])
def test_native_threshold_masks_equal_the_general_path(case):
    """The one-call native masks (threshold mode, forced density) equal sum_taps ->
    block_masks -> compact bit for bit: logits after the shift, masks, and both partitions."""
    from ssi_deploy.ops import bottleneck as B
    from ssi_deploy.ops.block_kernels import compact, native_kernels, sum_taps

    if native_kernels() is None:
        pytest.skip("the native block kernels are not built")
    (n, h, w), stride, density, grid, bias, ties = case
    g = torch.Generator().manual_seed(hash(case) % (2 ** 31))
    taps = torch.randn(n * h * w, 18, generator=g)
    if ties:
        taps = (taps * 2).round() / 2  # few distinct sums
    bias_t = torch.tensor(bias)
    a = B.BlockAttrs(stride=stride, density=density, grid_interval=grid, mode=C.MODE_THRESHOLD)
    got = B.native_threshold_masks(taps, (n, h, w), bias_t, a)
    assert got is not None
    l1 = sum_taps(taps, 0, (n, h, w), bias_t[0:1], 1)
    l2 = sum_taps(taps, 1, (n, h, w), bias_t[1:2], stride)
    m1, m2, (s1, s2) = B.block_masks(l1, l2, a)
    for name, x, y in (("logits1", got[0], s1), ("logits2", got[1], s2), ("mask1", got[2], m1),
                       ("mask2", got[3], m2)):
        assert x.shape == y.shape and torch.equal(x, y), name
    for comp, m in ((got[4], m1), (got[5], m2)):
        want = compact(m)
        assert comp.count == want.count
        assert torch.equal(comp.perm, want.perm) and torch.equal(comp.index, want.index)
    if density > 0:  # every image keeps at least its forced count
        k = C.forced_count(density, l2.shape[2] * l2.shape[3])
        assert bool((got[3].flatten(1).sum(1) >= k).all())
    # the block's call: compactions (and logits it does not keep) in reused buffers
    ws = B._Workspace()
    scratch = lambda name, k, dtype: ws.take(name, k, None, "cpu", dtype)  # noqa: E731
    for _ in range(2):  # the second call reuses the first one's buffers
        again = B.native_threshold_masks(taps, (n, h, w), bias_t, a, scratch, False)
        for x, y in zip(again[:4], got[:4]):
            assert torch.equal(x, y)
        for comp, want in zip(again[4:], got[4:]):
            assert comp.count == want.count
            assert torch.equal(comp.perm, want.perm) and torch.equal(comp.index, want.index)
    assert again[4].perm.data_ptr() == ws.take("perm1", n * h * w, None, "cpu", torch.int64).data_ptr()
    assert again[2].data_ptr() != got[2].data_ptr()  # masks are the caller's own


def test_native_threshold_masks_only_for_thresholded_masks():
    """Stochastic and official sampling keep the general path (their random draws are
    PyTorch's); a forced density thresholds whatever the mode."""
    from ssi_deploy.ops import bottleneck as B
    from ssi_deploy.ops.block_kernels import native_kernels

    if native_kernels() is None:
        pytest.skip("the native block kernels are not built")
    taps = torch.randn(2 * 5 * 6, 18)
    bias = torch.zeros(2)
    for mode in (C.MODE_STOCHASTIC, C.MODE_OFFICIAL):
        assert B.native_threshold_masks(taps, (2, 5, 6), bias, B.BlockAttrs(mode=mode)) is None
        assert B.native_threshold_masks(taps, (2, 5, 6), bias,
                                        B.BlockAttrs(mode=mode, density=0.3)) is not None


@pytest.mark.parametrize("density", [0.0, 0.3])
def test_block_forward_same_bits_with_and_without_the_native_masks(density, monkeypatch):
    """run_block with the one-call masks equals run_block on the general mask path."""
    from ssi_deploy.ops import bottleneck as B
    from ssi_deploy.ops.block_kernels import native_kernels

    if native_kernels() is None:
        pytest.skip("the native block kernels are not built")
    gen = torch.Generator().manual_seed(4)
    block = make_block(32, 8, 2, False, True, gen, grid=3)
    block.forced_density = density or None
    x = torch.randn(3, 32, 15, 13, generator=gen)
    with torch.inference_mode():
        y, m1, m2 = block(x)
        monkeypatch.setattr(B, "native_threshold_masks", lambda *args: None)
        y0, m10, m20 = block(x)
    assert torch.equal(m1, m10) and torch.equal(m2, m20) and torch.equal(y, y0)


@pytest.mark.parametrize("stride,dcn,masks", [(1, False, "mixed"), (2, False, "mixed"),
                                               (1, False, "empty"), (2, False, "full"),
                                               (2, True, "mixed")])
def test_y1_only_where_conv2_reads_changes_no_bit(stride, dcn, masks, monkeypatch):
    """A regular conv2 reads Y1 only in the 3x3 windows of m2's samples, and the block
    interpolates only there (read_by); output and masks are the bits of a full Y1. A DCN block
    interpolates every position (its taps can land anywhere)."""
    from ssi_deploy.ops import bottleneck as B
    from ssi_deploy.ops.block_kernels import native_kernels

    if native_kernels() is None:
        pytest.skip("the native block kernels are not built")
    gen = torch.Generator().manual_seed(40 + stride)
    bias = {"mixed": (0.3, -0.2), "empty": (-50.0, -50.0), "full": (50.0, 50.0)}[masks]
    block = make_block(32, 8, stride, dcn, stride != 1, gen, mask_bias=bias, grid=0)
    x = torch.randn(3, 32, 15, 13, generator=gen)
    seen = []
    interp = B.interp_rows

    def spy(*args, **kw):
        seen.append(kw.get("read_by"))
        return interp(*args, **kw)

    monkeypatch.setattr(B, "interp_rows", spy)
    with torch.no_grad():
        y, m1, m2 = block(x)
        reads = [r for r in seen if r is not None]
        assert len(reads) == (0 if dcn else 1) and (dcn or reads[0][1] == stride)
        monkeypatch.setattr(B, "interp_rows",
                            lambda *args, read_by=None, **kw: interp(*args, **kw))
        y0, m10, m20 = block(x)
    assert torch.equal(m1, m10) and torch.equal(m2, m20) and torch.equal(y, y0)
    if masks != "mixed":
        assert float(m2.mean()) == (0.0 if masks == "empty" else 1.0)


def test_workspace_reuses_its_views_and_grows():
    """The same view object for the same request; a larger request makes a new buffer (and
    drops that name's views of the old one); other names and dtypes keep theirs."""
    from ssi_deploy.ops import bottleneck as B

    ws = B._Workspace()
    a = ws.take("a", 4, 3, "cpu")
    assert ws.take("a", 4, 3, "cpu") is a and a.shape == (4, 3)
    v = ws.take("a", 5, None, "cpu", torch.int64)
    assert v.shape == (5,) and v.dtype == torch.int64 and v.data_ptr() != a.data_ptr()
    small = ws.take("a", 2, 3, "cpu")
    assert small.data_ptr() == a.data_ptr()  # the same buffer
    big = ws.take("a", 100, 3, "cpu")
    assert big.shape == (100, 3) and ws.take("a", 4, 3, "cpu").data_ptr() == big.data_ptr()
    assert ws.take("a", 5, None, "cpu", torch.int64) is v
    for k in range(B._MAX_VIEWS + 5):  # counts that change every call stay bounded
        ws.take("b", k + 1, 2, "cpu")
    assert len(ws.views) <= B._MAX_VIEWS


@pytest.mark.parametrize("density", [None, 0.3])
def test_chained_mask_taps_change_no_bit(density, monkeypatch):
    """ResNet.forward lets each block compute the next block's mask taps in its final
    interpolation (TapsHandoff): features and masks are the same bits as with every block
    computing its own taps, and the blocks after the first read no input for them (batch 2,
    odd sizes, threshold mode and a forced density)."""
    from ssi_deploy.models import create_model
    from ssi_deploy.models.blocks import SSIBottleneck as Block
    from ssi_deploy.ops import bottleneck as B

    model = create_model("sparse_resnet50", init_seed=1)
    if density is not None:
        model.set_forced_density(density)
    x = torch.randn(2, 3, 75, 53, generator=torch.Generator().manual_seed(5))
    calls, in_place = [], []
    own = B.mask_taps
    monkeypatch.setattr(B, "mask_taps", lambda *a, **k: calls.append(1) or own(*a, **k))
    for name in ("interp_rows", "interp_rows_and_taps"):  # is a final interpolation in place?
        def spy(*a, _f=getattr(B, name), **k):
            out = k.get("out", a[8] if len(a) > 8 else None)
            res = a[5] if len(a) > 5 else k.get("residual")
            if res is not None:  # the final one (the first interpolation has no residual)
                in_place.append(out is not None and out.data_ptr() == res.data_ptr())
            return _f(*a, **k)
        monkeypatch.setattr(B, name, spy)
    with torch.no_grad():
        feats, masks = model.backbone(x)
        chained_calls = len(calls)
        monkeypatch.setattr(Block, "chained_tap_weights", lambda self: None)
        feats0, masks0 = model.backbone(x)
    n_blocks = len(model.backbone.blocks)
    assert chained_calls == 1 and len(calls) - chained_calls == n_blocks
    # every stage's first block writes over its downsample's result; chained, every other
    # block writes over its input as well (unchained: never)
    layers = [len(getattr(model.backbone, f"layer{i}")) for i in range(1, 5)]
    assert in_place[:n_blocks] == [True] * n_blocks
    assert in_place[n_blocks:] == [j == 0 for n in layers for j in range(n)]
    assert all(torch.equal(a, b) for a, b in zip(masks, masks0)) and len(masks) == 2 * n_blocks
    assert all(torch.equal(a, b) for a, b in zip(feats, feats0))


def test_taps_handoff_is_taken_only_for_its_tensor_and_weights():
    """A handoff gives its taps once, to the tensor and weights they were made for, and not
    after that tensor changed in place."""
    from ssi_deploy.ops.bottleneck import TapsHandoff

    y, w, taps = torch.randn(6, 4), torch.randn(18, 4), torch.randn(6, 18)
    h = TapsHandoff()
    h.put(y, w, taps)
    assert h.take(y.clone(), w) is None and h.take(y, w) is None  # forgotten after a take
    h.put(y, w, taps)
    assert h.take(y, w.clone()) is None
    h.put(y, w, taps)
    assert h.take(y, w) is taps
    h.put(y, w, taps)
    y.add_(1.0)
    assert h.take(y, w) is None
    with torch.inference_mode():
        yi = torch.randn(6, 4)
        h.put(yi, w, taps)
        assert h.take(yi, w) is taps


def test_chain_keeps_what_a_hook_holds():
    """A block output a forward hook keeps is not written over by the next block (nor is a
    stage's feature), and the features are those of the chain without hooks."""
    from ssi_deploy.models import create_model

    model = create_model("sparse_resnet50", init_seed=2)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        feats0, _ = model.backbone(x)
        kept = []
        hook = model.backbone.layer2[1].register_forward_hook(
            lambda mod, inp, out: kept.append((out[0], out[0].clone())))
        try:
            feats, _ = model.backbone(x)
        finally:
            hook.remove()
    assert torch.equal(kept[0][0], kept[0][1])
    assert all(torch.equal(a, b) for a, b in zip(feats, feats0))


@pytest.mark.parametrize("linear", [True, False])
def test_block_output_owns_its_memory(linear, monkeypatch):
    """A block's output never lives in a workspace buffer (where a downsample's sgemm writes
    when oneDNN's matmul is missing), so the next block's call leaves it as it was."""
    from ssi_deploy.ops import bottleneck as B

    if not linear:
        monkeypatch.setattr(B, "_LINEAR", None)
    gen = torch.Generator().manual_seed(8)
    block = make_block(16, 8, 1, False, True, gen, grid=3)  # stride 1, downsample: a row GEMM
    x1, x2 = torch.randn(2, 16, 9, 7, generator=gen), torch.randn(2, 16, 9, 7, generator=gen)
    with torch.no_grad():
        y1, _, _ = block(x1)
        kept = y1.clone()
        y2, _, _ = block(x2)
    assert torch.equal(y1, kept) and not torch.equal(y1, y2)
