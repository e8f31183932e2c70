"""Per-element float32 error bounds for comparing two implementations of the SSI ops.

Two backends (PyTorch's CPU ops, the CPU twins, the CUDA kernels or their emulation) run the
same formulas in float32 but round differently: other summation orders and FMA in the dot
products, other libm/SLEEF/CUDA versions of logf and expf (a few ulps apart, and different
between machines). A fixed absolute tolerance is therefore luck: it holds on the machine it
was tuned on. The bounds below are derived from the arithmetic instead, element by element,
from the magnitudes involved; each is a bound on |a - b| for two evaluations a, b (the sum of
both backends' worst-case errors against the exact value, to first order), so it also bounds
one float32 evaluation against a float64 oracle.

Notation: u = 2**-24 (float32 unit roundoff: one correctly rounded operation errs by at most
u |result|, so two backends' roundings of one operation differ by at most 2u = EPS32);
gamma(n) = n u / (1 - n u) (Higham: any evaluation order of an n-term sum of products, with or
without FMA, errs by at most gamma(n) sum |terms|); ulp(y) <= EPS32 |y| for normal y.

LIB_ULPS: the two backends' results of one libm call (logf, expf) differ by at most 4 ulps:
each is within 2 ulps of the exact value (glibc <= 1, SLEEF u10 <= 1, CUDA logf <= 1 and
expf <= 2 ulps; none of the backends uses fast-math approximations).

Every bound here must still reject a backend that computes something else: the tests check
that deliberately perturbed results fail (test_cpu_twins.py, test_bounds_*).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssi_deploy.ops import contract as C
from ssi_deploy.ops import sampling
from ssi_deploy.ops.interpolation import gaussian_window
from ssi_deploy.ops.reference import deform_conv2d_dense

U32 = 2.0 ** -24  # float32 unit roundoff
EPS32 = 2.0 ** -23  # float32 machine epsilon: ulp(1)
EPS16 = 2.0 ** -10  # float16 machine epsilon
TINY16 = 2.0 ** -24  # float16 subnormal spacing
LIB_ULPS = 4  # max difference of two backends' logf/expf results, in ulps of the result
SECOND_ORDER = 1.0 + 2.0 ** -20  # covers the dropped products of first-order terms (each < 1e-3)


def gamma(n: int) -> float:
    return n * U32 / (1.0 - n * U32)


def output_bound(bound32: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The bound after both float32 results are stored in ``dtype``.

    float16: |fl16(a) - fl16(b)| <= |a - b| + ulp16(a)/2 + ulp16(b)/2, ulp16(y) <= EPS16 |y| +
    TINY16, and |b| <= |ref| (1 + EPS16) with ref = fl16(b):
    bound16 = bound32 (1 + EPS16) + EPS16 (1 + EPS16) |ref| + TINY16 (0 where bound32 is 0).
    """
    if dtype == torch.float32:
        return bound32
    assert dtype == torch.float16, dtype
    b16 = bound32 * (1 + EPS16) + EPS16 * (1 + EPS16) * ref.double().abs() + TINY16
    return torch.where(bound32 > 0, b16, torch.zeros_like(b16))  # equal float32 values stay equal


def excess(got: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor) -> tuple[float, int, int]:
    """(max |got - ref| / bound, elements over the bound, NaNs in got). Exact equality is
    required where the bound is 0."""
    d = (got.double() - ref.double()).abs()
    over = d > bound
    ratio = torch.where(bound > 0, d / bound.clamp_min(1e-300), torch.where(d > 0, math.inf, 0.0))
    return (ratio.max().item() if ratio.numel() else 0.0, int(over.sum()), int(torch.isnan(got).sum()))


def assert_within(got: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, what: str = "") -> float:
    """Assert |got - ref| <= bound element by element; returns max |got - ref| / bound."""
    assert got.shape == ref.shape == bound.shape, (got.shape, ref.shape, bound.shape)
    worst, over, nans = excess(got, ref, bound)
    assert nans == 0, f"{what}: {nans} NaN(s)"
    if over:
        d = (got.double() - ref.double()).abs()
        i = int(torch.argmax(d / bound.clamp_min(1e-300)))
        raise AssertionError(f"{what}: {over} element(s) over the derived float32 bound; worst "
                             f"|got - ref| = {d.flatten()[i].item():.3g} > {bound.flatten()[i].item():.3g} "
                             f"(got {got.flatten()[i].item():.9g}, ref {ref.flatten()[i].item():.9g})")
    return worst


# --------------------------------------------------------------------------------------------
# SampleMask

def sample_mask_bound(logits: torch.Tensor, mode: int, grid: int, seed: int,
                      layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(value bound, flip band), both [N,1,H,W], for two float32 evaluations of SampleMask.

    Official mode, float32 steps of every backend (u is exact and identical everywhere):
        a = log u, b = log(1 - u)  (1 - u exact),  L = a - b,  s = logit + L,  z = s / T,
        e = exp(-z),  v = 1 / (1 + e).
    Differences between two backends, first order:
        dz <= (LIB_ULPS EPS32 (|a| + |b|) + EPS32 |L| + EPS32 |s|) / T + 2 EPS32 |z|
              (two libm calls, the subtraction, the addition; the division, and one more
              rounding for a backend that multiplies by float(1/T) instead of dividing)
        de/e <= r = LIB_ULPS EPS32 + dz exp(dz)        (exp's own error; its argument's)
        dv  <= v (1 - v) r (1 + 2r) + 2 EPS32 v        (dv/de = -v (1 - v) / e; the rounding
              of 1 + e and of the reciprocal, relative to v)
    The factor 1/T = 33 amplifies every argument error; v (1 - v) damps it away from 0.5.
    Decision v >= 0.5: both backends keep the same positions except where the exact v is
    within dv of 0.5 (the band). Stochastic mode, u < sigmoid(logit) with u exact: sigmoid's
    error is sigma (1 - sigma) LIB_ULPS EPS32 + 2 EPS32 sigma, and the band is where u is
    that close to sigmoid(logit). Threshold mode and the grid prior compare exact values:
    no band, and the values (0 or 1) must be equal (bound 0).
    """
    l = logits.double()
    zero = torch.zeros_like(l)
    if mode == C.MODE_THRESHOLD:
        return zero, torch.zeros_like(l, dtype=torch.bool)
    n_, _, h_, w_ = logits.shape
    u = sampling.uniform((n_, h_, w_), seed, layer).unsqueeze(1).double()
    if mode == C.MODE_STOCHASTIC:
        sig = torch.sigmoid(l)
        dsig = sig * (1 - sig) * LIB_ULPS * EPS32 + 2 * EPS32 * sig
        band, bound = (u - sig).abs() <= dsig * SECOND_ORDER, zero
    else:
        assert mode == C.MODE_OFFICIAL, mode
        t = float(torch.tensor(C.OFFICIAL_TEMPERATURE, dtype=torch.float32))
        a, b = torch.log(u), torch.log1p(-u)
        big_l = a - b
        s = l + big_l
        z = s / t
        v = torch.sigmoid(z)
        dz = (LIB_ULPS * EPS32 * (a.abs() + b.abs()) + EPS32 * big_l.abs() + EPS32 * s.abs()) / t \
            + 2 * EPS32 * z.abs()
        r = LIB_ULPS * EPS32 + dz * torch.exp(dz)
        bound = (v * (1 - v) * r * (1 + 2 * r) + 2 * EPS32 * v) * SECOND_ORDER
        band = (v - 0.5).abs() <= bound
    if grid > 0:
        g = sampling.grid_prior(h_, w_, grid).view(1, 1, h_, w_)
        bound = torch.where(g, zero, bound)
        band = band & ~g
    return bound, band


def sample_mask_errors(got: torch.Tensor, ref: torch.Tensor, logits: torch.Tensor, mode: int,
                       grid: int, seed: int, layer: int) -> dict:
    """Compare two SampleMask results with the derived bound; ``ok`` is the verdict.

    flips: positions kept by one result only (allowed only inside the band); value_ratio:
    max |got - ref| / bound where both keep the position (<= 1 required; values are rounded
    to the masks' dtype, see :func:`output_bound`).
    """
    bound32, band = sample_mask_bound(logits.cpu(), mode, grid, seed, layer)
    got, ref = got.cpu(), ref.cpu()
    flip = (got > 0) != (ref > 0)
    both = (got > 0) & (ref > 0)
    bound = output_bound(bound32, ref, got.dtype)
    worst = excess(got[both], ref[both], bound[both])[0]
    nans = int(torch.isnan(got).sum())
    kept_ok = bool((got[got > 0] >= 0.5).all()) and bool((got <= 1).all())
    bad_flips = int((flip & ~band).sum())
    return dict(ok=nans == 0 and bad_flips == 0 and worst <= 1.0 and kept_ok and
                bool(torch.equal(got[~both & ~flip], ref[~both & ~flip])),
                flips=int(flip.sum()), flips_outside_band=bad_flips, band=int(band.sum()),
                value_ratio=worst, nan=nans)


def assert_sample_mask_close(got, ref, logits, mode, grid, seed, layer, what="SampleMask") -> dict:
    r = sample_mask_errors(got, ref, logits, mode, grid, seed, layer)
    assert r["ok"], f"{what}: {r}"
    return r


# --------------------------------------------------------------------------------------------
# SparseConv2d

def sparse_conv2d_bound(x, weight, bias, mask, offset=None, stride_h=1, stride_w=1, pad_h=0,
                        pad_w=0, dilation_h=1, dilation_w=1, groups=1, relu=0) -> torch.Tensor:
    """Bound [N, Cout, Ho, Wo] on the difference of two float32 SparseConv2d results.

    y = act(sum_{k, ci} w p + b) with K = (Cin/groups) kh kw products: each backend errs by
    at most gamma(K + 1) (sum |w| |p| + |b|) whatever its order (blocked GEMM, FMA, serial).
    Deformable taps: p is a bilinear sample of 4 corners (4 more terms in the products:
    gamma(K + 5)) with corner weights from the sample position. The position itself differs:
    the PyTorch op goes through grid_sample's normalised coordinates, ((2p + 1) / size - 1)
    and back, which moves p by at most u (6 |p| + size + 4) (six roundings on values up to
    2|p| + size + 1); bilinear sampling is Lipschitz with constant <= 2 max|x| per axis
    (max over the input plane), and each backend's corner weights ((1 - l) and l products)
    err by <= 3u absolute: 4 corners x 2 backends x 3u = 24u max|x| per tap. Both terms are 0
    for samples outside the map (by more than the position error) in both backends, and are
    summed over taps and input channels with |w|. ReLU is 1-Lipschitz.
    """
    n_, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    k_terms = cin_g * kh * kw
    xa, wa, ba = x.double().abs(), weight.double().abs(), bias.double().abs()
    keep = (mask.double() > 0)
    if offset is None:
        mag = F.conv2d(xa, wa, ba, (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w), groups)
        return 2 * gamma(k_terms + 1) * mag * keep
    cout_g = cout // groups
    parts = [deform_conv2d_dense(xa[:, g * cin_g:(g + 1) * cin_g], wa[g * cout_g:(g + 1) * cout_g], offset,
                                 (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w))
             for g in range(groups)]
    mag = torch.cat(parts, 1) + ba.view(1, -1, 1, 1)
    ho, wo = offset.shape[2:]
    taps = kh * kw
    oy = torch.arange(ho, dtype=torch.float64).view(1, 1, -1, 1) * stride_h - pad_h
    ox = torch.arange(wo, dtype=torch.float64).view(1, 1, 1, -1) * stride_w - pad_w
    iy = (torch.arange(taps) // kw).double().view(1, -1, 1, 1) * dilation_h
    ix = (torch.arange(taps) % kw).double().view(1, -1, 1, 1) * dilation_w
    off = offset.double().view(n_, taps, 2, ho, wo)
    py, px = oy + iy + off[:, :, 0], ox + ix + off[:, :, 1]  # [N, K, Ho, Wo]
    dy = U32 * (6 * py.abs() + h + 4)
    dx = U32 * (6 * px.abs() + w + 4)
    near = (py > -1 - dy) & (py < h + dy) & (px > -1 - dx) & (px < w + dx)
    per_tap = (2 * (dy + dx) + 24 * U32) * near  # times max|x|
    mx = xa.amax(dim=(2, 3))  # [N, Cin]
    # Wm[n, co, k] = sum over co's input channels of |w[co, ci, k]| max|x[n, ci]|
    wm = torch.einsum("ock,ngc->ngok", wa.reshape(cout, cin_g, taps), mx.view(n_, groups, cin_g))
    wm = torch.stack([wm[:, co // cout_g, co] for co in range(cout)], 1)  # [N, Cout, K]
    pos = torch.einsum("nkhw,nok->nohw", per_tap, wm)
    return (2 * gamma(k_terms + 5) * mag + pos) * keep


# --------------------------------------------------------------------------------------------
# GaussianInterp

def gaussian_interp_bound(values, mask, bias, residual=None, sigma=C.SIGMA_INIT) -> torch.Tensor:
    """Bound [N, C, H, W] on the difference of two float32 GaussianInterp results.

    out = act(res + b + m f + (1 - m) N / D), N = sum_d W(d) m f, D = sum_d W(d) m + 1e-5,
    W(d) = a exp(c |d|^2), a = k / float(2 pi), c = -k / 2, k = float(sigma)^2.
    Per window term both backends together err by at most rho(d) W(d) m |f| with
        rho(d) = 2u |c| |d|^2 + 96u:
    each rounds the exponent c |d|^2 (u |c| |d|^2 relative after exp; the twins' separable
    exp(c dy^2) exp(c dx^2) rounds two smaller exponents, together the same); the rest is
    counted per backend: PyTorch (2-D window: exp 4u, a and its product 2u, W m 1u,
    (1 - m)/D and its product 3u, the <= 50-term sparse product gamma(50)) ~ 60u; the twins
    (two exps 8u, products 2u, two 7-term passes 2 gamma(7), a S 1u, m f 1u, ratio and
    (1 - m) R 3u) ~ 29u; 96u rounds the total of 89u up. The same rho bounds D's terms, and
    each backend rounds + 1e-5 (u D). Then, with |N| <= N_abs = sum W m |f|, R_abs = N_abs / D:
        dR <= (E_N + R_abs E_D) / D,  E_N = sum rho W m |f|,  E_D = sum rho W m + 2u D
    and the final additions (PyTorch: inside the 50-term product with res + b and m f;
    the twins: three more roundings) add gamma(56) (|res + b| + m |f| + (1 - m) R_abs).
    Products that underflow to subnormals err by <= 2**-149 each; divided by D >= 1e-5 that
    is far below the 2**-100 added. ReLU is 1-Lipschitz.
    """
    m = mask.double()
    f = torch.where(mask > 0, values, torch.zeros((), dtype=values.dtype)).double()
    k = float(torch.tensor(float(sigma), dtype=torch.float32) ** 2)
    r = torch.arange(-(C.INTERP_WINDOW // 2), C.INTERP_WINDOW // 2 + 1, dtype=torch.float64)
    d2 = r.view(-1, 1) ** 2 + r.view(1, -1) ** 2
    wnd = gaussian_window(sigma).double()
    rho = 2 * U32 * (k / 2) * d2 + 96 * U32
    pad = C.INTERP_WINDOW // 2

    def conv(t, kern):  # depthwise 7x7, zero padding
        kern = kern.view(1, 1, C.INTERP_WINDOW, C.INTERP_WINDOW).repeat(t.shape[1], 1, 1, 1)
        return F.conv2d(t, kern, padding=pad, groups=t.shape[1])

    d = conv(m, wnd) + C.INTERP_EPS
    n_abs = conv(m * f.abs(), wnd)
    e_n = conv(m * f.abs(), rho * wnd)
    e_d = conv(m, rho * wnd) + 2 * U32 * d
    r_abs = n_abs / d
    d_r = (e_n + r_abs * e_d) / d
    base = bias.double().view(1, -1, 1, 1) + (0 if residual is None else residual.double())
    comb = gamma(56) * (base.abs() + m * f.abs() + (1 - m) * r_abs)
    return ((1 - m) * d_r + comb) * SECOND_ORDER + 2.0 ** -100
