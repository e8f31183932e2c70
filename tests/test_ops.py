"""The PyTorch SSI ops against their dense oracles and the spec's formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

import ssi_deploy.ops  # noqa: F401  (registers torch.ops.ssi.*)
from ssi_deploy.ops import contract as C
from ssi_deploy.ops import reference as R
from ssi_deploy.ops import sampling

ops = torch.ops.ssi


def rand_mask(rng, n, h, w, p, soft=False):
    m = (torch.rand(n, 1, h, w, generator=rng) < p).float()
    if soft:
        m = m * torch.rand(n, 1, h, w, generator=rng).clamp_min(0.05)
    return m


CONV_CASES = [  # (cin, cout, k, stride, pad, dilation, groups, deformable)
    (8, 16, 1, 1, 0, 1, 1, False),
    (8, 12, 3, 1, 1, 1, 1, False),
    (8, 12, 3, 2, 1, 1, 1, False),
    (8, 12, 3, 1, 2, 2, 1, False),
    (8, 12, 3, 2, 1, 1, 4, False),
    (6, 10, 1, 2, 0, 1, 1, False),
    (8, 12, 3, 1, 1, 1, 1, True),
    (8, 12, 3, 2, 1, 1, 1, True),
    (5, 7, 3, 1, 2, 2, 1, True),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "cin{}_cout{}_k{}_s{}_p{}_d{}_g{}_dcn{}".format(*c))
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_sparse_conv_matches_oracle(case, density, rng):
    cin, cout, k, s, p, d, g, dcn = case
    n, h, w = 2, 13, 11  # batch > 1, odd sizes
    x = torch.randn(n, cin, h, w, generator=rng)
    wt = torch.randn(cout, cin // g, k, k, generator=rng)
    b = torch.randn(cout, generator=rng)
    ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
    wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
    m = rand_mask(rng, n, ho, wo, density) if 0 < density < 1 else torch.full((n, 1, ho, wo), density)
    off = 1.5 * torch.randn(n, 2 * k * k, ho, wo, generator=rng) if dcn else None
    attrs = dict(stride_h=s, stride_w=s, pad_h=p, pad_w=p, dilation_h=d, dilation_w=d, groups=g)
    for relu in (0, 1):
        y = ops.sparse_conv2d(x, wt, b, m, off, relu=relu, **attrs)
        ref = R.sparse_conv2d_oracle(x, wt, b, m, off, relu=relu, **attrs)
        assert y.shape == ref.shape
        torch.testing.assert_close(y.double(), ref, atol=2e-5, rtol=1e-5)
        assert (y[(m == 0).expand_as(y)] == 0).all()  # exactly zero where not sampled


def test_sparse_conv_full_mask_equals_dense_conv(rng):
    x = torch.randn(2, 16, 21, 19, generator=rng)
    wt = torch.randn(24, 16, 3, 3, generator=rng)
    b = torch.randn(24, generator=rng)
    y = ops.sparse_conv2d(x, wt, b, torch.ones(2, 1, 11, 10), stride_h=2, stride_w=2, pad_h=1, pad_w=1)
    torch.testing.assert_close(y, F.conv2d(x, wt, b, 2, 1), atol=1e-4, rtol=1e-5)


def test_sparse_conv_fp16_inputs(rng):
    x = torch.randn(2, 8, 9, 9, generator=rng)
    wt = torch.randn(8, 8, 3, 3, generator=rng) * 0.2
    b = torch.randn(8, generator=rng)
    m = rand_mask(rng, 2, 9, 9, 0.5)
    y = ops.sparse_conv2d(x.half(), wt.half(), b.half(), m.half(), pad_h=1, pad_w=1)
    assert y.dtype == torch.float16
    ref = R.sparse_conv2d_oracle(x.half().float(), wt.half().float(), b.half().float(), m, pad_h=1, pad_w=1)
    torch.testing.assert_close(y.double(), ref, atol=1e-2, rtol=1e-2)


def test_sparse_conv_computes_only_sampled_positions(rng):
    """Work is proportional to the sampled count: the matrix product sees P rows."""
    seen = []
    real_addmm = torch.addmm

    def spy(bias, a, b):
        seen.append(a.shape[0])
        return real_addmm(bias, a, b)

    from ssi_deploy.ops import sparse_conv
    m = torch.zeros(1, 1, 20, 20)
    m[0, 0, 3, 4] = m[0, 0, 10, 11] = m[0, 0, 19, 0] = 1
    torch.addmm, orig = spy, torch.addmm
    try:
        sparse_conv.sparse_conv2d(torch.randn(1, 4, 20, 20), torch.randn(5, 4, 3, 3), torch.zeros(5), m,
                                  pad_h=1, pad_w=1)
    finally:
        torch.addmm = orig
    assert seen == [3]


def test_sparse_conv_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mask must be"):
        ops.sparse_conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 4, 1, 1), torch.zeros(4), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="groups"):
        ops.sparse_conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 3, 1, 1), torch.zeros(4), torch.ones(1, 1, 8, 8))


def formula_interp(values, mask, sigma):
    """Spec section 4 literally, one position at a time (float64)."""
    n_, c, h, w = values.shape
    out = torch.zeros(n_, c, h, w, dtype=torch.float64)
    s2 = sigma * sigma
    for n in range(n_):
        for y in range(h):
            for x in range(w):
                den, num = 1e-5, torch.zeros(c, dtype=torch.float64)
                for dy in range(-3, 4):
                    for dx in range(-3, 4):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w:
                            wt = s2 / (2 * math.pi) * math.exp(-s2 * (dy * dy + dx * dx) / 2)
                            mv = float(mask[n, 0, yy, xx])
                            den += wt * mv
                            num += wt * mv * values[n, :, yy, xx].double()
                m = float(mask[n, 0, y, x])
                out[n, :, y, x] = m * values[n, :, y, x].double() + (1 - m) * num / den
    return out


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("kind", ["hard", "soft", "empty", "full", "sparse"])
def test_interp_matches_formula(sigma, kind, rng):
    n, c, h, w = 2, 3, 9, 8  # small: the formula is evaluated in Python loops
    v = torch.randn(n, c, h, w, generator=rng)
    m = {"hard": lambda: rand_mask(rng, n, h, w, 0.3), "soft": lambda: rand_mask(rng, n, h, w, 0.5, soft=True),
         "empty": lambda: torch.zeros(n, 1, h, w), "full": lambda: torch.ones(n, 1, h, w),
         # a single sample per image: most windows are empty and give exactly 0
         "sparse": lambda: torch.zeros(n, 1, h, w).index_put_((torch.tensor([0, 1]), torch.tensor([0, 0]),
                                                               torch.tensor([0, 8]), torch.tensor([0, 7])),
                                                              torch.tensor(1.0))}[kind]()
    vm = v * (m > 0)  # unsampled values are never read: poison them to prove it
    v_poisoned = torch.where(m > 0, v, torch.full_like(v, 1e6))
    out = ops.gaussian_interp(v_poisoned, m, torch.zeros(c), sigma=sigma)
    torch.testing.assert_close(out.double(), formula_interp(vm, m, sigma), atol=1e-5, rtol=1e-5)
    if kind == "sparse":
        assert (out[0, :, 4:, :] == 0).all()  # windows with no sample give exactly 0


@pytest.mark.parametrize("relu", [0, 1])
def test_interp_fused_bias_residual_relu(relu, rng):
    v = torch.randn(2, 5, 12, 7, generator=rng)
    m = rand_mask(rng, 2, 12, 7, 0.4, soft=True)
    b = torch.randn(5, generator=rng)
    r = torch.randn(2, 5, 12, 7, generator=rng)
    out = ops.gaussian_interp(v, m, b, r, sigma=2.0, relu=relu)
    ref = R.gaussian_interp_oracle(v, m, b, r, sigma=2.0, relu=relu)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_interp_fp16_io_keeps_fp32_arithmetic(rng):
    v = torch.randn(1, 4, 10, 10, generator=rng).half()
    m = rand_mask(rng, 1, 10, 10, 0.2).half()
    out = ops.gaussian_interp(v, m, torch.zeros(4).half(), sigma=3.0)
    assert out.dtype == torch.float16
    ref = R.gaussian_interp_oracle(v.float(), m.float(), torch.zeros(4), sigma=3.0)
    torch.testing.assert_close(out.double(), ref, atol=2e-3, rtol=2e-3)


def test_interp_oracle_is_the_formula(rng):
    v = torch.randn(1, 2, 8, 9, generator=rng)
    m = rand_mask(rng, 1, 8, 9, 0.4, soft=True)
    torch.testing.assert_close(R.gaussian_interp_oracle(v, m, torch.zeros(2), sigma=1.5),
                               formula_interp(v * (m > 0), m, 1.5), atol=1e-6, rtol=1e-6)  # float32 window


# -- sampling --------------------------------------------------------------------------------

def test_hash_golden_values():
    """Pins the RNG: the C++/CUDA twins and the ONNX bodies must reproduce these numbers."""
    assert sampling.mix32_int(0) == 0
    assert sampling.mix32_int(1) == 0x688990C0
    assert sampling.mix32_int(0xDEADBEEF) == 0xE628C683
    assert sampling.layer_key(seed=1, layer=5) == 0xC01896B4
    t = torch.tensor([0, 1, 12345, 0xFFFFFFFF, 0xDEADBEEF], dtype=torch.int64)
    assert sampling.mix32(t).tolist() == [sampling.mix32_int(int(v)) for v in t]


def test_uniform_golden():
    """u = ((h >> 9) + 0.5) * 2**-23 (semantics version 2), pinned as the integers h >> 9.

    The same twelve values come out of ssi::math::hashUniform (plugins/include/ssi/math.h)
    compiled on the host, and of mix32_int below. (Version 1 pinned h >> 8 read back from
    ((h >> 8) + 0.5) / 2**24, whose +0.5 was rounded off for h >> 8 >= 2**23.)
    """
    u = sampling.uniform((2, 2, 3), seed=1, layer=5)
    assert u.dtype == torch.float32 and ((u > 0) & (u < 1)).all()
    k = [int(v * 2 ** 23 - 0.5) for v in u.flatten().tolist()]
    assert k == [3884050, 6610649, 6693667, 4597271, 1265549, 2492905,
                 8064522, 5685037, 7390289, 4973449, 6051500, 6450936]
    key = sampling.layer_key(1, 5)
    assert k == [sampling.mix32_int(sampling.mix32_int(sampling.mix32_int(key ^ n) ^ y) ^ x) >> 9
                 for n in range(2) for y in range(2) for x in range(3)]
    # every draw is exactly a grid midpoint: nothing was rounded on the way
    assert u.flatten().tolist() == [(v + 0.5) * 2.0 ** -23 for v in k]


# seed 0, layer 3, (n, y, x) = (0, 705, 257): h = 0xffffffa4, the largest h >> 9 (2**23 - 1).
# Version 1's ((h >> 8) + 0.5) / 2**24 rounded to exactly 1.0 there.
EDGE_SEED, EDGE_LAYER, EDGE_POS = 0, 3, (0, 705, 257)


def test_uniform_is_below_one_at_the_largest_hash():
    key = sampling.layer_key(EDGE_SEED, EDGE_LAYER)
    n, y, x = EDGE_POS
    h = sampling.mix32_int(sampling.mix32_int(sampling.mix32_int(key ^ n) ^ y) ^ x)
    assert h == 0xFFFFFFA4 and h >> 9 == 2 ** 23 - 1
    u = sampling.uniform((1, y + 1, x + 1), EDGE_SEED, EDGE_LAYER)
    assert u[n, y, x].item() < 1.0
    assert u[n, y, x].item() == 1.0 - 2.0 ** -24  # the largest draw, exact
    assert u.max().item() == 1.0 - 2.0 ** -24 and u.min().item() > 0.0
    # official mode: finite L there, so a very negative logit is not kept (v1: L = +inf, kept)
    logits = torch.full((1, 1, y + 1, x + 1), -100.0)
    assert not ops.sample_mask(logits, C.MODE_OFFICIAL, 0, EDGE_SEED, EDGE_LAYER).any()
    # stochastic mode: u < sigmoid(30) = 1.0f everywhere (v1: never kept there)
    assert ops.sample_mask(-logits * 0.3, C.MODE_STOCHASTIC, 0, EDGE_SEED, EDGE_LAYER).all()


def test_uniform_formula_exhaustive_in_float32():
    """All 2**23 values of h >> 9 through the float32 formula (numpy): exact, strictly inside (0, 1)."""
    np = pytest.importorskip("numpy")
    k = np.arange(2 ** 23, dtype=np.int64)
    u = (k.astype(np.float32) + np.float32(0.5)) * np.float32(sampling.UNIFORM_SCALE)
    assert u.dtype == np.float32
    assert u[0] == np.float32(2.0 ** -24) and u[-1] == np.float32(1.0 - 2.0 ** -24)
    assert (u > 0).all() and (u < 1).all()
    assert np.array_equal(u.astype(np.float64), (k + 0.5) * 2.0 ** -23)  # no rounding anywhere
    one_minus = np.float32(1.0) - u  # exact, and the mirror draw: L = log u - log(1 - u) is odd
    assert np.array_equal(one_minus, u[::-1])
    # the two ends explicitly, and the version-1 formula's failure for contrast
    for top in (0, 2 ** 23 - 1):
        v = (np.float32(top) + np.float32(0.5)) * np.float32(2.0 ** -23)
        assert np.float32(0) < v < np.float32(1) and np.log(np.float32(1) - v) > -np.inf
    assert (np.float32(2 ** 24 - 1) + np.float32(0.5)) * np.float32(2.0 ** -24) == np.float32(1.0)


@pytest.mark.parametrize("mode", ["threshold", "stochastic", "official"])
def test_sampling_modes_deterministic_for_seed(mode, rng):
    logits = torch.randn(2, 1, 23, 31, generator=rng)
    code = C.SAMPLING_MODES[mode]
    a = ops.sample_mask(logits, mode=code, seed=11, layer=4)
    b = ops.sample_mask(logits, mode=code, seed=11, layer=4)
    assert torch.equal(a, b)
    grid = a[:, :, ::11, ::11]
    assert (grid == 1.0).all()  # grid prior present
    if mode != "threshold":
        c = ops.sample_mask(logits, mode=code, seed=12, layer=4)
        d = ops.sample_mask(logits, mode=code, seed=11, layer=5)
        assert not torch.equal(a, c) and not torch.equal(a, d)


def test_threshold_mode_semantics(rng):
    logits = torch.randn(1, 1, 30, 30, generator=rng)
    m = ops.sample_mask(logits, mode=C.MODE_THRESHOLD, grid_interval=0)
    assert torch.equal(m, (logits >= 0).float())
    m = ops.sample_mask(logits, mode=C.MODE_THRESHOLD, grid_interval=11)
    expected = (logits >= 0).float()
    expected[:, :, ::11, ::11] = 1
    assert torch.equal(m, expected)


def test_stochastic_mode_keeps_with_probability_p():
    logits = torch.full((4, 1, 100, 100), math.log(0.3 / 0.7))  # p = 0.3
    m = ops.sample_mask(logits, mode=C.MODE_STOCHASTIC, grid_interval=0, seed=3)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert abs(m.mean().item() - 0.3) < 0.01


def test_official_mode_soft_values():
    logits = torch.full((4, 1, 100, 100), 0.0)  # p = 0.5
    m = ops.sample_mask(logits, mode=C.MODE_OFFICIAL, grid_interval=0, seed=5)
    kept = m[m > 0]
    assert abs((m > 0).float().mean().item() - 0.5) < 0.01
    assert (kept >= 0.5).all() and (kept <= 1).all()
    assert 0.0 < (kept < 0.999).float().mean().item() < 0.3  # soft values close to 1, some below
    u = sampling.uniform((4, 100, 100), 5, 0).unsqueeze(1)
    v = torch.sigmoid((logits + torch.log(u) - torch.log(1 - u)) / 0.03)
    torch.testing.assert_close(m, torch.where(v >= 0.5, v, torch.zeros_like(v)))


def test_sample_mask_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[N,1,H,W\]"):
        ops.sample_mask(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="unknown mode"):
        ops.sample_mask(torch.zeros(1, 1, 4, 4), mode=7)


def test_custom_ops_pass_opcheck(rng):
    x = torch.randn(2, 4, 7, 9, generator=rng)
    m = rand_mask(rng, 2, 7, 9, 0.5)
    torch.library.opcheck(ops.sample_mask.default, (torch.randn(2, 1, 7, 9, generator=rng),), {"mode": 1})
    torch.library.opcheck(ops.sparse_conv2d.default,
                          (x, torch.randn(6, 4, 3, 3, generator=rng), torch.zeros(6), m),
                          {"pad_h": 1, "pad_w": 1})
    torch.library.opcheck(ops.gaussian_interp.default, (x, m, torch.zeros(4)), {"sigma": 2.0})


def test_contract_header_is_current():
    from ssi_deploy.ops.contract import HEADER_PATH, render_cpp_header
    assert HEADER_PATH.read_text() == render_cpp_header(), \
        "run python -m ssi_deploy.ops.contract --write-header"


@pytest.mark.parametrize("h,w", [(1, 5), (4, 1), (1, 1)])
def test_deformable_on_one_pixel_axes(h, w, rng):
    """Degenerate maps: the bilinear sampling must still follow the -1 < y < H rule."""
    x = torch.randn(2, 3, h, w, generator=rng)
    wt = torch.randn(4, 3, 3, 3, generator=rng)
    b = torch.randn(4, generator=rng)
    m = torch.ones(2, 1, h, w)
    m[1, 0, 0, 0] = 0  # images with different sampled counts
    off = 0.8 * torch.randn(2, 18, h, w, generator=rng)
    y = ops.sparse_conv2d(x, wt, b, m, off, pad_h=1, pad_w=1)
    ref = R.sparse_conv2d_oracle(x, wt, b, m, off, pad_h=1, pad_w=1)
    torch.testing.assert_close(y.double(), ref, atol=2e-5, rtol=1e-5)
