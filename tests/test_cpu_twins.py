"""The CPU twins of the native SSI kernels (plugins/src/cpu, arithmetic of plugins/include/ssi/math.h)
against the PyTorch ops torch.ops.ssi.* on random shapes, masks and parameters.

The library is built with the host compiler on first use (no CUDA toolkit needed).

Tolerances are derived element by element from the float32 arithmetic and the magnitudes
involved (tests/fp_bounds.py), not fixed: two backends' libm and summation orders differ
between machines. test_bounds_* check that the bounds still reject a different computation.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from fp_bounds import (EPS32, assert_sample_mask_close, assert_within, excess, gaussian_interp_bound,
                       output_bound, sample_mask_bound, sample_mask_errors, sparse_conv2d_bound)

import ssi_deploy.ops  # noqa: F401  (registers torch.ops.ssi.*)
from ssi_deploy.errors import SSIError
from ssi_deploy.native import cpu_twins as T
from ssi_deploy.ops import contract as C
from ssi_deploy.ops.reference import gaussian_interp_oracle, sparse_conv2d_oracle
from ssi_deploy.ops.sparse_conv import conv_output_size

DTYPES = [torch.float32, torch.float16]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask(kind: str, shape, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    if kind == "empty":
        m = torch.zeros(shape)
    elif kind == "full":
        m = torch.ones(shape)
    elif kind == "hard":
        m = (torch.rand(shape, generator=g) < 0.4).float()
    elif kind == "soft":  # official-mode-like values: kept ones in [0.5, 1], a few exactly 1
        r = torch.rand(shape, generator=g)
        m = torch.where(r < 0.45, 0.5 + r, torch.zeros(()))
        m[r < 0.1] = 1.0
    else:
        raise AssertionError(kind)
    return m.to(dtype)


def _close(a: torch.Tensor, b: torch.Tensor, bound32: torch.Tensor, dtype) -> None:
    """|twin - torch| within the derived float32 bound (plus the output rounding to dtype)."""
    assert a.dtype == b.dtype == dtype and a.shape == b.shape
    assert_within(a, b, output_bound(bound32, b, dtype), "|twin - torch|")


# --------------------------------------------------------------------------------------------
# SampleMask: the same seed and layer give the same mask as the PyTorch op.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", [C.MODE_THRESHOLD, C.MODE_STOCHASTIC, C.MODE_OFFICIAL])
@pytest.mark.parametrize("grid", [0, C.GRID_PRIOR_INTERVAL, 3])
def test_sample_mask_identical(dtype, mode, grid):
    g = _gen(100 + 7 * mode + grid)
    for seed, layer in ((0, 0), (1234, 7), (-5, 31)):
        logits = (torch.randn(2, 1, 37, 53, generator=g) * 3).to(dtype)
        logits[0, 0, 1, :5] = 0.0  # exactly on the threshold
        ref = torch.ops.ssi.sample_mask(logits, mode, grid, seed, layer)
        got = T.sample_mask(logits, mode, grid, seed, layer)
        assert got.dtype == dtype and got.shape == ref.shape
        if mode == C.MODE_THRESHOLD:  # exact comparisons of exact values
            assert torch.equal(got, ref)
        # Random modes: the same decisions except within the derived rounding band of the
        # threshold; official soft values within the derived bound (fp_bounds.sample_mask_bound).
        assert_sample_mask_close(got, ref, logits, mode, grid, seed, layer)
        kept = (got > 0).float().mean().item()
        if mode != C.MODE_THRESHOLD:  # a real draw: neither all nor nothing
            assert 0.1 < kept < 0.9


def test_sample_mask_draws_depend_on_seed_and_layer():
    logits = torch.zeros(1, 1, 40, 40)
    a = T.sample_mask(logits, C.MODE_STOCHASTIC, 0, 1, 0)
    b = T.sample_mask(logits, C.MODE_STOCHASTIC, 0, 1, 1)
    c = T.sample_mask(logits, C.MODE_STOCHASTIC, 0, 2, 0)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, T.sample_mask(logits, C.MODE_STOCHASTIC, 0, 1, 0))


def test_sample_mask_largest_draw_is_below_one():
    # seed 0, layer 3, (n, y, x) = (0, 705, 257): h >> 9 = 2**23 - 1, the largest draw
    # u = 1 - 2**-24. Semantics version 1 rounded u to exactly 1.0 there: always kept in
    # official mode (L = +inf), never in stochastic mode (u < sigmoid(30) = 1.0f false).
    logits = torch.full((1, 1, 706, 258), -100.0)
    assert not T.sample_mask(logits, C.MODE_OFFICIAL, 0, 0, 3).any()  # |L| <= 16.7 for every draw
    assert T.sample_mask(-0.3 * logits, C.MODE_STOCHASTIC, 0, 0, 3).all()
    assert torch.equal(T.sample_mask(logits, C.MODE_OFFICIAL, 0, 0, 3),
                       torch.ops.ssi.sample_mask(logits, C.MODE_OFFICIAL, 0, 0, 3))


def test_sample_mask_rejects_unknown_mode():
    with pytest.raises(SSIError, match="unknown mode"):
        T.sample_mask(torch.zeros(1, 1, 4, 4), 7)


# --------------------------------------------------------------------------------------------
# SparseConv2d

# (cin, cout, k, stride, pad, dilation, groups, deformable, relu)
CONV_CASES = [
    (16, 24, 1, 1, 0, 1, 1, False, 1),   # conv1 / conv3 of a bottleneck
    (8, 12, 1, 2, 0, 1, 1, False, 0),    # strided 1x1
    (12, 10, 3, 1, 1, 1, 1, False, 1),   # conv2
    (12, 10, 3, 2, 1, 1, 1, False, 0),   # strided conv2
    (6, 9, 3, 1, 2, 2, 1, False, 0),     # dilated
    (12, 8, 3, 2, 1, 1, 4, False, 1),    # grouped, strided
    (8, 8, 3, 1, 1, 1, 8, False, 0),     # depthwise
    (5, 7, (3, 2), (1, 2), (1, 0), (2, 1), 1, False, 0),  # rectangular everything
    (10, 11, 3, 1, 1, 1, 1, True, 1),    # deformable v1
    (10, 6, 3, 2, 1, 1, 1, True, 0),     # deformable, strided
    (6, 6, 3, 1, 2, 2, 2, True, 0),      # deformable, dilated, grouped
]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _conv_inputs(case, mask_kind, dtype, seed):
    cin, cout, k, s, p, d, groups, deform, relu = case
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pair(k), _pair(s), _pair(p), _pair(d)
    g = _gen(seed)
    n, h, w = 2, int(torch.randint(9, 20, (1,), generator=g)), int(torch.randint(9, 20, (1,), generator=g))
    ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
    x = torch.randn(n, cin, h, w, generator=g)
    wt = torch.randn(cout, cin // groups, kh, kw, generator=g) / (cin // groups * kh * kw) ** 0.5
    b = torch.randn(cout, generator=g) * 0.1
    m = _mask(mask_kind, (n, 1, ho, wo), g)
    off = (torch.randn(n, 2 * kh * kw, ho, wo, generator=g) * 1.5) if deform else None
    if off is not None:  # some samples far outside, some exactly on integer positions
        off[:, :, 0, 0] = 40.0
        off[:, :, -1, :] = torch.round(off[:, :, -1, :])
    attrs = dict(stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, dilation_h=dh, dilation_w=dw, groups=groups,
                 relu=relu)
    cast = [t if t is None else t.to(dtype) for t in (x, wt, b, m, off)]
    return cast, attrs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", ["hard", "soft", "empty", "full"])
@pytest.mark.parametrize("ci", range(len(CONV_CASES)))
def test_sparse_conv2d_matches_torch(ci, mask_kind, dtype):
    (x, wt, b, m, off), attrs = _conv_inputs(CONV_CASES[ci], mask_kind, dtype, seed=1000 + ci)
    ref = torch.ops.ssi.sparse_conv2d(x, wt, b, m, off, **attrs)
    got = T.sparse_conv2d(x, wt, b, m, off, **attrs)
    _close(got, ref.contiguous(), sparse_conv2d_bound(x, wt, b, m, off, **attrs), dtype)
    unsampled = (m <= 0).expand_as(got)
    assert torch.equal(got[unsampled], torch.zeros_like(got[unsampled])), "non-zero at an unsampled position"
    if mask_kind == "empty":
        assert not got.any()
    if attrs["relu"]:
        assert (got >= 0).all()


@pytest.mark.parametrize("ci", [2, 3, 4, 5, 8, 9])
def test_sparse_conv2d_matches_dense_oracle(ci):
    (x, wt, b, m, off), attrs = _conv_inputs(CONV_CASES[ci], "hard", torch.float32, seed=2000 + ci)
    if off is not None and attrs["groups"] != 1:
        pytest.skip("the dense oracle has no grouped deformable conv")
    ref = sparse_conv2d_oracle(x, wt, b, m, off, **attrs)
    got = T.sparse_conv2d(x, wt, b, m, off, **attrs)
    # the bound on two float32 evaluations also bounds one against the float64 oracle
    assert_within(got, ref, sparse_conv2d_bound(x, wt, b, m, off, **attrs), "|twin - oracle|")


def test_sparse_conv2d_rejects_bad_shapes():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(SSIError, match="do not fit"):
        T.sparse_conv2d(x, torch.randn(4, 4, 3, 3), torch.zeros(4), torch.ones(1, 1, 5, 5), pad_h=1, pad_w=1)
    with pytest.raises(SSIError, match="share a dtype"):
        T.sparse_conv2d(x, torch.randn(4, 4, 1, 1).half(), torch.zeros(4), torch.ones(1, 1, 8, 8))


# --------------------------------------------------------------------------------------------
# GaussianInterp

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", ["hard", "soft", "empty", "full", "sparse"])
@pytest.mark.parametrize("residual,relu,sigma", [(False, 0, 3.0), (True, 1, 3.0), (True, 0, 1.0), (False, 1, 0.5)])
def test_gaussian_interp_matches_torch(mask_kind, residual, relu, sigma, dtype):
    g = _gen(zlib.crc32(repr((mask_kind, residual, relu, sigma)).encode()))
    n, c, h, w = 2, 5, int(torch.randint(7, 30, (1,), generator=g)), int(torch.randint(7, 30, (1,), generator=g))
    vals = torch.randn(n, c, h, w, generator=g)
    if mask_kind == "sparse":  # a few isolated samples: most windows hold none (output = bias there)
        m = (torch.rand(n, 1, h, w, generator=g) < 0.02).float()
    else:
        m = _mask(mask_kind, (n, 1, h, w), g)
    vals[(m == 0).expand_as(vals)] = float("nan")  # unsampled values must never be read
    b = torch.randn(c, generator=g)
    res = torch.randn(n, c, h, w, generator=g) if residual else None
    args = [t if t is None else t.to(dtype) for t in (vals, m, b, res)]
    ref = torch.ops.ssi.gaussian_interp(*args, sigma, relu).contiguous()
    got = T.gaussian_interp(*args, sigma, relu)
    bound = gaussian_interp_bound(*args, sigma=sigma)
    _close(got, ref, bound, dtype)
    if dtype == torch.float32:
        oracle = gaussian_interp_oracle(torch.nan_to_num(vals), m, b, res, sigma, relu)
        assert_within(got, oracle, bound, "|twin - oracle|")


def test_gaussian_interp_isolated_sample_in_fp16():
    # One sample at (0, 0): it fills its 7x7 window (normalised Gaussian average, float32
    # arithmetic although I/O is fp16) and nothing beyond, where the output is the bias.
    import math
    vals = torch.full((1, 1, 9, 9), float("nan"), dtype=torch.float16)
    m = torch.zeros(1, 1, 9, 9, dtype=torch.float16)
    vals[0, 0, 0, 0], m[0, 0, 0, 0] = 2.0, 1.0
    b = torch.tensor([0.25], dtype=torch.float16)
    got = T.gaussian_interp(vals, m, b, sigma=0.5)
    k = 0.25
    wgt = k / (2 * math.pi) * math.exp(-k / 2 * 18)  # corner of the window, |d|^2 = 18
    # fp16 output: half an ulp is <= 2**-11 relative; the float32 steps add < 2**-20
    assert got[0, 0, 3, 3].item() == pytest.approx(0.25 + 2.0 * wgt / (wgt + 1e-5), rel=2 ** -11 + 2 ** -20)
    assert got[0, 0, 0, 0].item() == 2.25
    assert (got[0, 0, 4:, :] == 0.25).all() and (got[0, 0, :, 4:] == 0.25).all()


def test_wrapper_reports_a_missing_library_in_one_line(monkeypatch):
    monkeypatch.setenv("SSI_CPU_LIB", "/nonexistent/libssi_cpu.so")
    with pytest.raises(SSIError) as e:
        T.library_path()
    assert "SSI_CPU_LIB" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# The derived bounds stay strict: results of a (slightly) different computation fail them.

def _over(got, ref, bound) -> int:
    return excess(got, ref, bound)[1]


def test_bounds_reject_a_different_sample_mask():
    g = _gen(5)
    logits = torch.randn(2, 1, 37, 53, generator=g) * 3
    mode, grid, seed, layer = C.MODE_OFFICIAL, 0, 1234, 7
    got = T.sample_mask(logits, mode, grid, seed, layer)
    assert sample_mask_errors(got, torch.ops.ssi.sample_mask(logits, mode, grid, seed, layer), logits, mode, grid,
                              seed, layer)["ok"]
    from ssi_deploy.ops import sampling
    u = sampling.uniform((2, 37, 53), seed, layer).unsqueeze(1)
    for t in (0.0303, 0.02997):  # temperature off by 1% and by 0.1%
        v = torch.sigmoid((logits + torch.log(u) - torch.log(1 - u)) / t)
        other = torch.where(v >= 0.5, v, torch.zeros(()))
        assert not sample_mask_errors(got, other, logits, mode, grid, seed, layer)["ok"], t
    kept = got > 0
    shifted = torch.where(kept, got - 1e-6, got)  # within the old fixed 1e-6, not the derived bound
    assert not sample_mask_errors(shifted, got, logits, mode, grid, seed, layer)["ok"]
    bound, band = sample_mask_bound(logits, mode, grid, seed, layer)
    assert int(band.sum()) == 0  # no position is that close to 0.5 here: a flip is always wrong
    dropped = got.clone()
    dropped.view(-1)[int(torch.nonzero(kept.view(-1))[0])] = 0.0
    assert not sample_mask_errors(dropped, got, logits, mode, grid, seed, layer)["ok"]
    # the bound is tight: 1/T amplifies the libm error terms; a few ulps of v near 1
    assert bound[kept].min().item() < 4 * EPS32 and bound[kept].max().item() < 1e-4


@pytest.mark.parametrize("ci", [2, 8])
def test_bounds_reject_a_different_sparse_conv2d(ci):
    (x, wt, b, m, off), attrs = _conv_inputs(CONV_CASES[ci], "hard", torch.float32, seed=1000 + ci)
    got = T.sparse_conv2d(x, wt, b, m, off, **attrs)
    bound = sparse_conv2d_bound(x, wt, b, m, off, **attrs)
    op = torch.ops.ssi.sparse_conv2d
    assert _over(op(x, wt, b, m, off, **attrs), got, bound) == 0
    assert _over(op(x.half().float(), wt, b, m, off, **attrs), got, bound) > 0  # inputs rounded to fp16
    assert _over(op(x, wt, b * (1 + 1e-3), m, off, **attrs), got, bound) > 0
    w2 = wt.clone()
    w2[:, :, 0, 0] = 0  # one tap missing
    assert _over(op(x, w2, b, m, off, **attrs), got, bound) > 0
    if off is not None:  # samples moved by 1e-3 pixel
        assert _over(op(x, wt, b, m, off + 1e-3, **attrs), got, bound) > 0


def test_bounds_reject_a_different_gaussian_interp(monkeypatch):
    g = _gen(9)
    vals = torch.randn(2, 5, 23, 19, generator=g)
    m = _mask("soft", (2, 1, 23, 19), g)
    b, res = torch.randn(5, generator=g), torch.randn(2, 5, 23, 19, generator=g)
    got = T.gaussian_interp(vals, m, b, res, 1.0, 0)
    bound = gaussian_interp_bound(vals, m, b, res, 1.0)
    op = torch.ops.ssi.gaussian_interp
    assert _over(op(vals, m, b, res, 1.0, 0), got, bound) == 0
    assert _over(op(vals, m, b, res, 1.0 * (1 + 1e-4), 0), got, bound) > 0  # sigma off by 1e-4
    assert _over(op(vals.half().float(), m, b, res, 1.0, 0), got, bound) > 0
    assert _over(op(vals, m.half().float(), b, res, 1.0, 0), got, bound) > 0
    monkeypatch.setattr(C, "INTERP_EPS", 1.1e-5)  # the normaliser's 1e-5, 10 % off
    assert _over(op(vals, m, b, res, 1.0, 0), got, bound) > 0
