"""The native CPU kernels of the SSIBottleneck op (plugins/src/cpu/block.cpp, through
ssi_deploy.native.block) against the PyTorch path of ssi_deploy.ops.block_kernels.

interp_rows: both compute the same float32 steps except the order of the window sums (the
PyTorch path multiplies by a CSR matrix of 2-D weights W(d) m / D; the native one sums the
separable form of ssi/math.h), so they agree within the float32 bound derived in
tests/fp_bounds.py (gaussian_interp_bound); the native form must equal the CPU twin of
GaussianInterp (the same math.h sums) bit for bit, and the cases without any sum (no sample,
every position kept) exactly. patches3x3: regular taps are copies (bit-identical); deformable
taps differ by the position's rounding through grid_sample's normalised coordinates (bound
as in fp_bounds.sparse_conv2d_bound).
"""

from __future__ import annotations

import warnings
import zlib

import pytest
import torch
import torch.nn.functional as F
from fp_bounds import U32, assert_within, gaussian_interp_bound

from ssi_deploy.errors import SSIError
from ssi_deploy.native import block as NB
from ssi_deploy.native import cpu_twins as T
from ssi_deploy.ops import block_kernels as K

SHAPES = [(1, 7, 9), (3, 13, 11), (1, 1, 1), (1, 2, 17), (3, 2, 17)]
CHANNELS = [1, 3, 64, 130]
MASKS = ["random", "sparse", "empty", "full", "soft", "official"]


@pytest.fixture(scope="module")
def native():
    lib = NB.available()
    if lib is None:
        pytest.skip(f"native block kernels unavailable: {NB._failed or 'SSI_NATIVE_BLOCK=0'}")
    return lib


@pytest.fixture
def torch_path(monkeypatch):
    """Run block_kernels' functions on their PyTorch path."""
    def run(fn, *args, **kw):
        with monkeypatch.context() as m:
            m.setattr(K, "native_kernels", lambda: None)
            m.setattr(K, "onednn_linear", lambda: None)
            return fn(*args, **kw)
    return run


def _mask(kind: str, shape, g: torch.Generator) -> torch.Tensor:
    n, h, w = shape
    r = torch.rand((n, 1, h, w), generator=g)
    if kind == "random":  # a density per image
        dens = torch.rand((n, 1, 1, 1), generator=g)
        return (r < dens).float()
    if kind == "sparse":
        return (r < 0.1).float()
    if kind == "empty":
        return torch.zeros((n, 1, h, w))
    if kind == "full":
        return torch.ones((n, 1, h, w))
    if kind == "soft":  # any value in (0, 1], some exactly 1
        m = torch.where(r < 0.5, torch.rand((n, 1, h, w), generator=g).clamp_min(1e-3), torch.zeros(()))
        m[r < 0.1] = 1.0
        return m
    if kind == "official":  # kept values of the official mode: ~0.97 .. 1.0, many exactly 1
        v = 0.97 + 0.03 * torch.rand((n, 1, h, w), generator=g)
        m = torch.where(r < 0.3, v, torch.zeros(()))
        m[r < 0.15] = 1.0
        return m
    raise AssertionError(kind)


def _case(shape, c, kind, g, bias=True, residual=True):
    n, h, w = shape
    m = _mask(kind, shape, g)
    comp = K.compact(m)
    rows = torch.randn((comp.count, c), generator=g) * 3
    b = torch.randn(c, generator=g) if bias else None
    res = torch.randn((n * h * w, c), generator=g) if residual else None
    return m, comp, rows, b, res


def _dense(rows, comp, shape, c):
    """Compact rows -> dense NCHW values (NaN where not sampled: never read)."""
    n, h, w = shape
    d = torch.full((n * h * w, c), float("nan"))
    d[comp.sampled] = rows
    return d.view(n, h, w, c).permute(0, 3, 1, 2).contiguous()


def _nchw(rows, shape):
    n, h, w = shape
    return rows.view(n, h, w, -1).permute(0, 3, 1, 2).contiguous()


def _rows(t):
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


# --------------------------------------------------------------------------------------------
# interp_rows

# (bias, residual, relu)
FLAGS = [(True, True, True), (True, False, False), (False, True, False), (False, False, True)]


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("shape", SHAPES)
def test_interp_rows_matches_torch_path_and_twin(native, torch_path, shape, c):
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, c)).encode()))
    for i, kind in enumerate(MASKS):
        for j, sigma in enumerate((3.0, 0.7)):
            for k, (bias, residual, relu) in enumerate(FLAGS):
                m, comp, rows, b, res = _case(shape, c, kind, g, bias, residual)
                what = f"{kind} sigma={sigma} bias={bias} residual={residual} relu={relu}"
                got = native.interp_rows(rows, comp.index, m, sigma, b, res, relu)
                assert got.dtype == torch.float32 and got.shape == (m.numel(), c)
                vals = _dense(rows, comp, shape, c)
                b0 = b if b is not None else torch.zeros(c)
                res_nchw = None if res is None else _nchw(res, shape)
                # The CPU twin of GaussianInterp sums the same math.h passes: the same bits.
                twin = _rows(T.gaussian_interp(torch.nan_to_num(vals), m, b0, res_nchw, sigma, int(relu)))
                assert torch.equal(got, twin), what
                if k != (i + j) % len(FLAGS):  # the float64 bound is slow: one flag set per case
                    continue
                ref = torch_path(K.interp_rows, rows, comp, m, sigma, b, res, relu)
                bound = _rows(gaussian_interp_bound(vals, m, b0, res_nchw, sigma=sigma))
                assert_within(got, ref, bound, f"|native - torch| ({what})")


@pytest.mark.parametrize("c", [1, 64, 130])
@pytest.mark.parametrize("shape", SHAPES)
def test_interp_rows_without_sums_is_exact(native, torch_path, shape, c):
    g = torch.Generator().manual_seed(7)
    for residual in (False, True):
        for relu in (False, True):
            # No sample: R = 0 / eps = 0, out = act(bias [+ residual]).
            m, comp, rows, b, res = _case(shape, c, "empty", g, True, residual)
            want = b.expand(m.numel(), c) if res is None else res + b
            want = want.relu() if relu else want
            assert torch.equal(native.interp_rows(rows, comp.index, m, 3.0, b, res, relu), want)
            assert torch.equal(torch_path(K.interp_rows, rows, comp, m, 3.0, b, res, relu), want)
            # Every position kept with m = 1: out = act((residual + bias) + f).
            m, comp, rows, b, res = _case(shape, c, "full", g, True, residual)
            want = (b if res is None else res + b) + rows
            want = want.relu() if relu else want
            assert torch.equal(native.interp_rows(rows, comp.index, m, 0.7, b, res, relu), want)
            assert torch.equal(torch_path(K.interp_rows, rows, comp, m, 0.7, b, res, relu), want)


def test_interp_rows_out_argument_and_residual_in_place(native):
    g = torch.Generator().manual_seed(3)
    shape, c = (2, 13, 11), 64
    m, comp, rows, b, res = _case(shape, c, "official", g)
    want = native.interp_rows(rows, comp.index, m, 3.0, b, res, True)
    out = torch.empty_like(want)
    assert native.interp_rows(rows, comp.index, m, 3.0, b, res, True, out) is out
    assert torch.equal(out, want)
    acc = res.clone()  # out is the residual itself: y = act(y + interp)
    assert native.interp_rows(rows, comp.index, m, 3.0, b, acc, True, acc) is acc
    assert torch.equal(acc, want)
    strided = torch.empty(c, m.numel()).t()  # not contiguous: written through a copy
    assert native.interp_rows(rows, comp.index, m, 3.0, b, res, True, strided) is strided
    assert torch.equal(strided, want)
    # Through block_kernels (the native path on CPU tensors)
    assert torch.equal(K.interp_rows(rows, comp, m, 3.0, b, res, True), want)


def test_interp_rows_is_independent_of_threads_and_isa(native, monkeypatch):
    g = torch.Generator().manual_seed(5)
    m, comp, rows, b, res = _case((3, 40, 37), 96, "official", g)
    n_threads = torch.get_num_threads()
    want = native.interp_rows(rows, comp.index, m, 3.0, b, res, False)
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            assert torch.equal(native.interp_rows(rows, comp.index, m, 3.0, b, res, False), want)
    finally:
        torch.set_num_threads(n_threads)
    for isa in ("avx2", "generic"):  # narrower builds of the kernels (where the CPU has wider)
        monkeypatch.setenv("SSI_CPU_BLOCK_ISA", isa)
        assert torch.equal(native.interp_rows(rows, comp.index, m, 3.0, b, res, False), want)


def test_interp_rows_many_column_tiles_split_no_sum(native):
    # Wide channels cut a row into several column tiles of unequal widths (C = 1024: 6 columns
    # at most; 37 columns on 2 threads -> 8 tiles of 4 and 5): the same bits as the CPU twin,
    # on 1, 2 and 3 threads, with the taps too.
    g = torch.Generator().manual_seed(11)
    n_threads = torch.get_num_threads()
    try:
        for shape, c in (((1, 6, 37), 1024), ((2, 5, 33), 520)):
            for kind in ("random", "soft", "sparse"):
                m, comp, rows, b, res = _case(shape, c, kind, g)
                vals = _dense(rows, comp, shape, c)
                twin = _rows(T.gaussian_interp(torch.nan_to_num(vals), m, b, _nchw(res, shape), 0.7, 1))
                taps_w = torch.randn(18, c, generator=g)
                for t in (1, 2, 3):
                    torch.set_num_threads(t)
                    got = native.interp_rows(rows, comp.index, m, 0.7, b, res, True)
                    assert torch.equal(got, twin), (shape, c, kind, t)
                    out, taps = native.interp_rows_taps(rows, comp.index, m, 0.7, b, res, True,
                                                        taps_w=taps_w)
                    assert torch.equal(out, twin) and torch.equal(taps, native.small_gemm(twin, taps_w))
    finally:
        torch.set_num_threads(n_threads)


def test_interp_rows_rejects_bad_index(native):
    m = torch.ones(1, 1, 3, 3)
    comp = K.compact(m)
    rows = torch.randn(9, 4)
    with pytest.raises(SSIError, match=r"index out of range at a sampled position \(5 rows\)"):
        native.interp_rows(rows[:5], comp.index, m, 1.0)
    bad = comp.index.clone()
    bad[4] = -1  # a sampled position without a row
    with pytest.raises(SSIError, match="index out of range"):
        native.interp_rows(rows, bad, m, 1.0)
    with pytest.raises(SSIError, match="bias has 3 values"):
        native.interp_rows(rows, comp.index, m, 1.0, torch.zeros(3))


# --------------------------------------------------------------------------------------------
# patches3x3

def _positions(shape, stride, g, shuffle=False):
    n, h, w = shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    keep = torch.rand(n * ho * wo, generator=g) < 0.5
    keep[0] = True
    pos = torch.nonzero(keep).squeeze(1)
    if shuffle:
        pos = pos[torch.randperm(pos.numel(), generator=g)]
    return pos, (ho, wo)


def _offsets(p, g):
    off = torch.rand((p, 18), generator=g) * 6 - 3
    if p:
        flat = off.view(-1)
        pick = torch.randperm(flat.numel(), generator=g)[:max(1, flat.numel() // 20)]
        flat[pick] = torch.where(torch.rand(pick.numel(), generator=g) < 0.5, -100.0, 100.0)
        flat[torch.randint(flat.numel(), (1,), generator=g)] = float("nan")
        off[0, 4:6] = torch.tensor([0.0, 0.0])  # an exact pixel: corners of weight 0 inside the map
    return off


def _deform_bound(src, shape, pos, out_hw, stride, off):
    """Per (position, tap) bound on |native - torch| times max|src| of the image, and where the
    sample is outside the map in both backends (exact zeros there)."""
    n, h, w = shape
    ho, wo = out_hw
    b = pos // (ho * wo)
    yo, xo = (pos % (ho * wo)) // wo, pos % wo
    t = torch.arange(9)
    py = (yo * stride - 1).unsqueeze(1).double() + (t // 3).double() + off[:, 0::2].double()
    px = (xo * stride - 1).unsqueeze(1).double() + (t % 3).double() + off[:, 1::2].double()
    dy, dx = U32 * (6 * py.abs() + h + 4), U32 * (6 * px.abs() + w + 4)
    mx = src.abs().view(n, -1).amax(1).double()[b].unsqueeze(1)  # [P, 1]
    bound = (2 * (dy + dx) + 24 * U32) * mx
    outside = ~((py > -1 - dy) & (py < h + dy) & (px > -1 - dx) & (px < w + dx))  # NaN: outside
    return bound, outside


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("shape", SHAPES)
def test_patches3x3_matches_torch_path(native, torch_path, shape, c):
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, c, "patches")).encode()))
    n, h, w = shape
    src = torch.randn((n * h * w, c), generator=g)
    for stride in (1, 2):
        # Regular taps: copies and zero padding, bit-identical (in any position order).
        pos, out_hw = _positions(shape, stride, g, shuffle=True)
        got = native.patches3x3(src, shape, pos, out_hw, stride)
        ref = torch_path(K.patches3x3, src, shape, pos, out_hw, stride)
        assert got.shape == ref.shape == (pos.numel(), 9 * c)
        assert torch.equal(got, ref), f"regular stride {stride}"
        # Deformable v1 taps (the PyTorch path wants positions sorted by image).
        pos, out_hw = _positions(shape, stride, g)
        off = _offsets(pos.numel(), g)
        got = native.patches3x3(src, shape, pos, out_hw, stride, off)
        ref = torch_path(K.patches3x3, src, shape, pos, out_hw, stride, off)
        bound, outside = _deform_bound(src, shape, pos, out_hw, stride, off)
        got3, ref3 = got.view(-1, 9, c), ref.view(-1, 9, c)
        # A NaN offset: math.h's deformTap counts the sample as outside the map (0); the
        # PyTorch path's grid_sample propagates the NaN.
        nan = off.view(-1, 9, 2).isnan().any(2)
        assert nan.any() and (got3[nan] == 0).all()
        ref3 = torch.where(nan.unsqueeze(2), torch.zeros(()), ref3)
        bound = bound.unsqueeze(2).expand_as(got3).contiguous()
        assert_within(got3, ref3, bound, f"deformable stride {stride}")
        assert (got3[outside] == 0).all() and (ref3[outside] == 0).all()


def test_patches3x3_corners_of_weight_zero_read_no_value(native):
    # Samples on exact pixels: the other corners have weight 0 and must not turn an infinite
    # neighbour into NaN (inf * 0); the tap is the pixel itself.
    src = torch.arange(1.0, 10.0).view(9, 1)
    src[5] = float("inf")  # pixel (1, 2)
    pos = torch.tensor([4])  # centre of the 3x3 map
    off = torch.zeros(1, 18)
    got = native.patches3x3(src, (1, 3, 3), pos, (3, 3), 1, off)
    assert torch.equal(got, src.view(1, 9))


def test_patches3x3_empty_and_errors(native):
    src = torch.randn(6, 5)
    none = torch.zeros(0, dtype=torch.int64)
    assert native.patches3x3(src, (1, 2, 3), none, (2, 3), 1).shape == (0, 45)
    assert native.patches3x3(src, (1, 2, 3), none, (2, 3), 1, torch.zeros(0, 18)).shape == (0, 45)
    assert K.patches3x3(src, (1, 2, 3), none, (2, 3), 1).shape == (0, 45)
    with pytest.raises(SSIError, match="out of range"):
        native.patches3x3(src, (1, 2, 3), torch.tensor([6]), (2, 3), 1)
    with pytest.raises(SSIError, match="stride must be >= 1"):
        native.patches3x3(src, (1, 2, 3), torch.tensor([0]), (2, 3), 0)
    with pytest.raises(SSIError, match="offsets must be"):
        native.patches3x3(src, (1, 2, 3), torch.tensor([0]), (2, 3), 1, torch.zeros(2, 18))


def test_patches3x3_is_independent_of_threads_and_isa(native, monkeypatch):
    g = torch.Generator().manual_seed(11)
    shape = (2, 30, 31)
    src = torch.randn((2 * 30 * 31, 128), generator=g)
    pos, out_hw = _positions(shape, 1, g)
    off = _offsets(pos.numel(), g)
    want = native.patches3x3(src, shape, pos, out_hw, 1, off)
    n_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(native.patches3x3(src, shape, pos, out_hw, 1, off), want)
    finally:
        torch.set_num_threads(n_threads)
    for isa in ("avx2", "generic"):
        monkeypatch.setenv("SSI_CPU_BLOCK_ISA", isa)
        assert torch.equal(native.patches3x3(src, shape, pos, out_hw, 1, off), want)


# --------------------------------------------------------------------------------------------
# Selection of the native path

def test_env_switch_disables_the_native_path(monkeypatch, native):
    monkeypatch.setenv("SSI_NATIVE_BLOCK", "0")
    assert NB.available() is None
    m = torch.ones(1, 1, 2, 2)
    rows = torch.randn(4, 3)
    assert torch.equal(K.interp_rows(rows, K.compact(m), m, 1.0), rows)  # the PyTorch path
    monkeypatch.setenv("SSI_NATIVE_BLOCK", "1")
    assert NB.available() is native


def test_unavailable_library_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(NB, "_native", None)
    monkeypatch.setattr(NB, "_failed", None)
    monkeypatch.delenv("SSI_NATIVE_BLOCK", raising=False)

    def fail():
        raise SSIError("cannot build the SSI CPU twins: cmake is not on PATH")

    monkeypatch.setattr(NB, "_load", fail)
    with pytest.warns(RuntimeWarning, match="cmake is not on PATH.*slower PyTorch path"):
        assert NB.available() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert NB.available() is None  # decided once: no second build, no second warning
        m = torch.ones(1, 1, 2, 2)
        rows = torch.randn(4, 3)
        assert torch.equal(K.interp_rows(rows, K.compact(m), m, 1.0), rows)


# -- the small kernels of the block's mask path -------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 7, 9), (3, 13, 11), (1, 1, 1), (2, 2, 17)])
@pytest.mark.parametrize("kind", ["random", "empty", "full"])
def test_compact_is_the_stable_partition(native, torch_path, shape, kind):
    n, h, w = shape
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, kind)).encode()))
    m = {"random": (torch.rand(n, 1, h, w, generator=gen) < 0.3).float() * 0.97,
         "empty": torch.zeros(n, 1, h, w), "full": torch.ones(n, 1, h, w)}[kind]
    got = K.compact(m)
    want = torch_path(K.compact, m)
    assert got.count == want.count == int((m > 0).sum())
    assert torch.equal(got.perm, want.perm) and torch.equal(got.index, want.index)
    # sampled first in raster order, then the rest in raster order
    keep = m.reshape(-1) > 0
    assert bool(keep[got.sampled].all()) and not bool(keep[got.perm[got.count:]].any())
    assert bool((got.sampled.diff() > 0).all()) and bool((got.perm[got.count:].diff() > 0).all())


@pytest.mark.parametrize("shape", [(1, 7, 9), (3, 13, 11), (1, 1, 1), (2, 2, 17), (1, 48, 45)])
@pytest.mark.parametrize("stride", [1, 2])
def test_mask_taps_and_sum_taps_are_the_3x3_conv(native, torch_path, shape, stride):
    """The native few-column GEMM and tap sums against the PyTorch path and F.conv2d:
    the tap sums add the same float32 values
    in the same order (bit-identical); the GEMMs' dot products differ by summation order only
    (bound gamma(Cin) sum |w x|)."""
    import torch.nn.functional as F

    from fp_bounds import gamma

    n, h, w = shape
    cin = 37
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, stride)).encode()))
    x = torch.randn(n, h, w, cin, generator=gen)
    rows = x.reshape(-1, cin)
    wt = torch.randn(2, cin, 3, 3, generator=gen)
    b = torch.randn(2, generator=gen)
    taps = K.mask_taps(rows, K.tap_matrix(wt))
    taps_t = torch_path(K.mask_taps, rows, K.tap_matrix(wt))
    mag = torch.mm(rows.abs().double(), wt.abs().double().permute(1, 2, 3, 0).reshape(cin, 18))
    assert bool(((taps.double() - taps_t.double()).abs() <= 2 * gamma(cin) * mag).all())
    ref = F.conv2d(x.permute(0, 3, 1, 2).double(), wt.double(), b.double(), stride, 1)
    for k in range(2):
        got = K.sum_taps(taps, k, (n, h, w), b[k:k + 1], stride)
        assert torch.equal(got, torch_path(K.sum_taps, taps, k, (n, h, w), b[k:k + 1], stride))
        bound = gamma(cin + 10) * F.conv2d(x.permute(0, 3, 1, 2).double().abs(),
                                           wt[k:k + 1].double().abs(), b[k:k + 1].double().abs(),
                                           stride, 1)
        assert bool(((got.double() - ref[:, k:k + 1]).abs() <= bound).all())


@pytest.mark.parametrize("kind", ["normal", "narrow", "signed-zeros", "infinities", "constant",
                                  "nans"])
def test_kth_largest_radix_selection_is_topk(native, kind):
    """The radix selection (a 12-bit bucket histogram, then nth_element in one bucket) on
    maps of the block's sizes, including values that crowd one bucket, -0/+0, infinities,
    a constant map and several NaNs (above every number, as in topk)."""
    gen = torch.Generator().manual_seed(len(kind))
    hw = 128 * 128
    v = torch.randn(2, hw, generator=gen)
    if kind == "narrow":  # every value in [1, 1 + 2^-10): one bucket of the 4096
        v = 1.0 + torch.rand(2, hw, generator=gen) * 2.0 ** -10
    elif kind == "signed-zeros":
        v = torch.where(torch.rand(2, hw, generator=gen) < 0.5, 0.0, -0.0) * (v.abs() < 1.0) + \
            v * (v.abs() >= 1.0)
    elif kind == "infinities":
        v[:, ::7] = float("inf")
        v[:, 3::11] = float("-inf")
    elif kind == "constant":
        v = torch.full((2, hw), -2.5)
    elif kind == "nans":
        v[0, ::97] = float("nan")
    for k in (1, 2, 100, hw // 4, hw // 2, hw - 1, hw):
        got = native.kth_largest(v, k)
        want = torch.topk(v, k, dim=1).values[:, -1]
        same = (got == want) | (torch.isnan(got) & torch.isnan(want))
        assert bool(same.all()), (kind, k)


def test_kth_largest_is_topk(native):
    gen = torch.Generator().manual_seed(9)
    v = torch.randn(3, 257, generator=gen)
    v[1, :40] = 0.5  # ties
    for k in (1, 2, 40, 128, 257):
        assert torch.equal(native.kth_largest(v, k), torch.topk(v, k, dim=1).values[:, -1])
    v[2, 7] = float("nan")  # NaN counts as the largest, as in topk
    assert torch.isnan(native.kth_largest(v, 1)[2])
    assert torch.equal(native.kth_largest(v, 2)[2], torch.topk(v[2], 2).values[-1])
    with pytest.raises(SSIError, match="kth_largest"):
        native.kth_largest(v, 0)


# --------------------------------------------------------------------------------------------
# small_gemm's fixed order, and the taps fused into the interpolation

def _dots_bound(x, w):
    """|float32 dot - exact| <= gamma(k + 4) sum |x w| (k products summed in 16 lanes, then
    4 pairwise levels: no chain longer than k / 16 + 4 additions, bounded by k + 4)."""
    from fp_bounds import gamma

    return gamma(x.shape[1] + 4) * torch.mm(x.abs().double(), w.abs().double().t())


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 16, 18), (33, 77, 18), (64, 1024, 18),
                                   (5, 2048, 3), (19, 3, 5), (4, 130, 2), (1000, 64, 18)])
def test_small_gemm_has_one_order_per_element(native, monkeypatch, m, k, n):
    """Each element of the small GEMM is the same bits however the rows and columns are cut
    (alone, in a 4x4 tile, in the 1-3 row and 1-2 column rests), with any thread count and
    build (AVX-512, AVX2, baseline), and within the float32 bound of a dot product."""
    gen = torch.Generator().manual_seed(m * 1000 + k + n)
    x = torch.randn(m, k, generator=gen)
    w = torch.randn(n, k, generator=gen)
    got = native.small_gemm(x, w)
    exact = torch.mm(x.double(), w.double().t())
    assert bool(((got.double() - exact).abs() <= _dots_bound(x, w)).all())
    for i in sorted({0, m // 2, m - 1}):
        assert torch.equal(native.small_gemm(x[i:i + 1].clone(), w)[0], got[i])
    for j in sorted({0, n // 2, n - 1}):
        assert torch.equal(native.small_gemm(x, w[j:j + 1].clone())[:, 0], got[:, j])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert torch.equal(native.small_gemm(x, w), got)
    finally:
        torch.set_num_threads(threads)
    for isa in ("avx2", "generic"):
        monkeypatch.setenv("SSI_CPU_BLOCK_ISA", isa)
        assert torch.equal(native.small_gemm(x, w), got), isa


@pytest.mark.parametrize("c", [1, 17, 64, 130])
@pytest.mark.parametrize("shape", SHAPES)
def test_interp_rows_taps_are_the_small_gemm_of_the_output(native, torch_path, shape, c):
    """The interpolation with the next block's taps fused: its output is interp_rows' bits,
    and the taps are small_gemm's of that output (bit for bit), for every mask kind, with and
    without bias / residual / ReLU, 18 and an odd number of tap columns; block_kernels' form
    runs it natively, and its PyTorch form is interp_rows then mask_taps."""
    g = torch.Generator().manual_seed(zlib.crc32(repr(("taps", shape, c)).encode()))
    for i, kind in enumerate(MASKS):
        bias, residual, relu = FLAGS[i % len(FLAGS)]
        m, comp, rows, b, res = _case(shape, c, kind, g, bias, residual)
        for t in (18, 5):
            w = torch.randn(t, c, generator=g)
            out, taps = native.interp_rows_taps(rows, comp.index, m, 3.0, b, res, relu, taps_w=w)
            want = native.interp_rows(rows, comp.index, m, 3.0, b, res, relu)
            assert torch.equal(out, want), kind
            assert taps.shape == (m.numel(), t) and torch.equal(taps, native.small_gemm(want, w)), kind
        out2, taps2 = K.interp_rows_and_taps(rows, comp, m, 3.0, b, res, relu, w)
        assert torch.equal(out2, out) and torch.equal(taps2, taps)
        out_t, taps_t = torch_path(K.interp_rows_and_taps, rows, comp, m, 3.0, b, res, relu, w)
        want_t = torch_path(K.interp_rows, rows, comp, m, 3.0, b, res, relu)
        assert torch.equal(out_t, want_t) and torch.equal(taps_t, torch.mm(want_t, w.t()))


def test_interp_rows_taps_threads_isa_and_errors(native, monkeypatch):
    g = torch.Generator().manual_seed(11)
    m, comp, rows, b, res = _case((3, 40, 37), 96, "official", g)
    w = torch.randn(18, 96, generator=g)
    out, taps = native.interp_rows_taps(rows, comp.index, m, 3.0, b, res, True, taps_w=w)
    threads = torch.get_num_threads()
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            o, tp = native.interp_rows_taps(rows, comp.index, m, 3.0, b, res, True, taps_w=w)
            assert torch.equal(o, out) and torch.equal(tp, taps)
    finally:
        torch.set_num_threads(threads)
    for isa in ("avx2", "generic"):
        monkeypatch.setenv("SSI_CPU_BLOCK_ISA", isa)
        o, tp = native.interp_rows_taps(rows, comp.index, m, 3.0, b, res, True, taps_w=w)
        assert torch.equal(o, out) and torch.equal(tp, taps), isa
    # no channels: empty rows, taps 0
    m0, comp0, rows0, _, _ = _case((1, 4, 5), 0, "random", g, False, False)
    o, tp = native.interp_rows_taps(rows0, comp0.index, m0, 3.0, taps_w=torch.zeros(18, 0))
    assert o.shape == (20, 0) and torch.equal(tp, torch.zeros(20, 18))
    with pytest.raises(SSIError, match="tap weights"):
        native.interp_rows_taps(rows, comp.index, m, 3.0, b, res, True, taps_w=torch.zeros(18, 95))


# --------------------------------------------------------------------------------------------
# interp_rows_for_conv: Y1 at just the positions conv2's patches read

def _conv_reads(m2, shape, stride):
    """[N*H*W] bool: the inputs a 3x3 conv (padding 1) at ``stride`` reads for m2's samples."""
    n, h, w = shape
    return (F.conv_transpose2d((m2 > 0).float(), torch.ones(1, 1, 3, 3), stride=stride, padding=1,
                               output_padding=(h + 1 - stride * m2.shape[2] if stride > 1 else 0,
                                               w + 1 - stride * m2.shape[3] if stride > 1 else 0))
            > 0).reshape(-1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind2", ["random", "sparse", "empty", "full"])
@pytest.mark.parametrize("shape", SHAPES + [(2, 32, 31)])
def test_interp_rows_for_conv_writes_what_the_conv_reads(native, shape, kind2, stride):
    """Y1 restricted to conv2's reads: the full interpolation's bits at every position a
    patch of m2's samples reads (checked through patches3x3 as well), nothing written
    elsewhere; independent of threads and ISA."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, kind2, stride)).encode()))
    n, h, w = shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    m, comp, rows, _, _ = _case(shape, 33, "random", g, False, False)
    m2 = _mask(kind2, (n, ho, wo), g)
    full = native.interp_rows(rows, comp.index, m, 1.3)
    reads = _conv_reads(m2, shape, stride)
    sentinel = torch.full_like(full, float("nan"))
    got = native.interp_rows_for_conv(rows, comp.index, m, 1.3, m2, stride, out=sentinel.clone())
    assert torch.equal(got[reads], full[reads])
    assert bool(got[~reads].isnan().all())  # not written
    pos2 = K.compact(m2).sampled
    if pos2.numel():
        assert torch.equal(native.patches3x3(got, shape, pos2, (ho, wo), stride),
                           native.patches3x3(full, shape, pos2, (ho, wo), stride))
    # through block_kernels: the native path takes read_by, the PyTorch path computes all
    assert torch.equal(K.interp_rows(rows, comp, m, 1.3, read_by=(m2, stride))[reads], full[reads])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.interp_rows_for_conv(rows, comp.index, m, 1.3, m2, stride, out=sentinel.clone())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[reads], full[reads]) and bool(one[~reads].isnan().all())


def test_interp_rows_for_conv_isa_and_errors(native, monkeypatch, torch_path):
    g = torch.Generator().manual_seed(21)
    shape = (3, 40, 37)
    m, comp, rows, _, _ = _case(shape, 96, "official", g, False, False)
    m2 = _mask("sparse", (3, 20, 19), g)
    reads = _conv_reads(m2, shape, 2)
    want = native.interp_rows(rows, comp.index, m, 3.0)
    for isa in ("avx2", "generic"):
        monkeypatch.setenv("SSI_CPU_BLOCK_ISA", isa)
        got = native.interp_rows_for_conv(rows, comp.index, m, 3.0, m2, 2)
        assert torch.equal(got[reads], want[reads]), isa
    monkeypatch.delenv("SSI_CPU_BLOCK_ISA")
    # the PyTorch form ignores read_by (computes every position); so does a fused epilogue
    b = torch.randn(96, generator=g)
    assert torch.equal(K.interp_rows(rows, comp, m, 3.0, b, read_by=(m2, 2)),
                       native.interp_rows(rows, comp.index, m, 3.0, b))
    ref = torch_path(K.interp_rows, rows, comp, m, 3.0, read_by=(m2, 2))
    assert ref.shape == want.shape and not bool(ref.isnan().any())
    with pytest.raises(SSIError, match=r"the conv's mask is 20x18, a 3x3 conv at stride 2 of 40x37 gives 20x19"):
        native.interp_rows_for_conv(rows, comp.index, m, 3.0, m2[..., :18], 2)
    with pytest.raises(SSIError, match=r"mask2 must be \[3,1,Ho,Wo\]"):
        native.interp_rows_for_conv(rows, comp.index, m, 3.0, m2[:1], 2)
