"""The CPU twins of the native SSI kernels (plugins/src/cpu, arithmetic of plugins/include/ssi/math.h)
against the PyTorch ops torch.ops.ssi.* on random shapes, masks and parameters.

The library is built with the host compiler on first use (no CUDA toolkit needed).
"""

from __future__ import annotations

import zlib

import pytest
import torch

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


def _close(a: torch.Tensor, b: torch.Tensor, dtype) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert not torch.isnan(a).any()
    scale = max(1.0, b.float().abs().max().item())
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    err = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    assert err <= tol * scale, f"max |twin - torch| = {err:.3g} > {tol * scale:.3g}"


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
        assert torch.equal(got > 0, ref > 0), f"{int(((got > 0) != (ref > 0)).sum())} positions differ"
        if mode == C.MODE_OFFICIAL:  # soft values: float32 library rounding at most
            assert (got.float() - ref.float()).abs().max().item() <= (1e-6 if dtype == torch.float32 else 1e-3)
        else:
            assert torch.equal(got, ref)
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
    _close(got, ref.contiguous(), dtype)
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
    assert (got.double() - ref).abs().max().item() < 1e-4


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
    _close(got, ref, dtype)
    if dtype == torch.float32:
        oracle = gaussian_interp_oracle(torch.nan_to_num(vals), m, b, res, sigma, relu)
        assert (got.double() - oracle).abs().max().item() < 1e-4


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
    assert got[0, 0, 3, 3].item() == pytest.approx(0.25 + 2.0 * wgt / (wgt + 1e-5), rel=1e-3)
    assert got[0, 0, 0, 0].item() == 2.25
    assert (got[0, 0, 4:, :] == 0.25).all() and (got[0, 0, :, 4:] == 0.25).all()


def test_wrapper_reports_a_missing_library_in_one_line(monkeypatch):
    monkeypatch.setenv("SSI_CPU_LIB", "/nonexistent/libssi_cpu.so")
    with pytest.raises(SSIError) as e:
        T.library_path()
    assert "SSI_CPU_LIB" in str(e.value) and "\n" not in str(e.value)
