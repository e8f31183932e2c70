"""The mmdet v0.6 test-path reference (ssi_deploy.detection.legacy) against scalar re-derivations.

Each function is checked against a plain-Python implementation of the official formula written
here, element by element, with loops over floats and ints. Two kinds of scalar oracle:

- float32-exact: the same IEEE float32 operations in the kernel's order, with numpy float32
  scalars (every scalar operation rounds to float32 exactly as one torch elementwise op does);
  the results must then be bit-identical (NMS, RoIAlign, RoI levels, delta2bbox with dw = dh = 0,
  multiclass NMS);
- float64: the formula in double precision, compared with a tolerance derived from the number
  of float32 roundings and the magnitudes involved (u = 2**-24 per correctly rounded operation,
  plus the few ulps by which expf/sigmoid/softmax differ between libraries).
"""

from __future__ import annotations

import math
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from ssi_deploy.detection import legacy as L

F32 = np.float32
U32 = 2.0 ** -24  # float32 unit roundoff: one correctly rounded operation errs by <= U32 |result|


# ----------------------------------------------------------------------------- scalar helpers

def round_f32(x: Fraction) -> float:
    """An exact rational rounded once to float32 (nearest, ties to even); normal range only."""
    if x == 0:
        return 0.0
    sign = -1 if x < 0 else 1
    a = abs(x)
    e = math.floor(math.log2(a.numerator) - math.log2(a.denominator)) - 23
    while a / Fraction(2) ** e >= 2 ** 24:
        e += 1
    while a / Fraction(2) ** e < 2 ** 23:
        e -= 1
    m = round(a / Fraction(2) ** e)  # Python rounds a Fraction half to even
    return float(sign * m * Fraction(2) ** e)


def iou32(a, b) -> np.float32:
    """devIoU of nms_kernel.cu in float32: +1 widths, interS / (Sa + Sb - interS)."""
    a = [F32(v) for v in a]
    b = [F32(v) for v in b]
    left, right = max(a[0], b[0]), min(a[2], b[2])
    top, bottom = max(a[1], b[1]), min(a[3], b[3])
    width = max(right - left + F32(1), F32(0))
    height = max(bottom - top + F32(1), F32(0))
    inter = width * height
    sa = (a[2] - a[0] + F32(1)) * (a[3] - a[1] + F32(1))
    sb = (b[2] - b[0] + F32(1)) * (b[3] - b[1] + F32(1))
    return inter / (sa + sb - inter)


def scalar_nms(dets: list[list[float]], thr: float) -> list[int]:
    """Greedy NMS: descending score (ties: lower index first), suppress IoU > float32(thr)."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][4])  # sorted() is stable
    thr32 = F32(thr)
    removed = [False] * len(dets)
    kept = []
    for pos, i in enumerate(order):
        if removed[i]:
            continue
        kept.append(i)
        for j in order[pos + 1:]:
            if not removed[j] and iou32(dets[i][:4], dets[j][:4]) > thr32:
                removed[j] = True
    return sorted(kept)


def scalar_delta2bbox64(roi, delta, means, stds, max_shape):
    """One box of delta2bbox in float64 (the official formula)."""
    dx, dy, dw, dh = (d * s + m for d, s, m in zip(delta, stds, means))
    clip = abs(math.log(16 / 1000))
    dw = min(max(dw, -clip), clip)
    dh = min(max(dh, -clip), clip)
    px, py = (roi[0] + roi[2]) * 0.5, (roi[1] + roi[3]) * 0.5
    pw, ph = roi[2] - roi[0] + 1.0, roi[3] - roi[1] + 1.0
    gw, gh = pw * math.exp(dw), ph * math.exp(dh)
    gx, gy = px + pw * dx, py + ph * dy
    box = [gx - gw * 0.5 + 0.5, gy - gh * 0.5 + 0.5, gx + gw * 0.5 - 0.5, gy + gh * 0.5 - 0.5]
    if max_shape is not None:
        h, w = max_shape[0], max_shape[1]
        box = [min(max(box[0], 0), w - 1), min(max(box[1], 0), h - 1),
               min(max(box[2], 0), w - 1), min(max(box[3], 0), h - 1)]
    return box


def delta_bound(roi, delta, stds) -> float:
    """|float32 delta2bbox - float64| bound for one box: the chain rounds ~10 times, on
    magnitudes at most |x1| + |x2| + pw (|dx| + exp|dw|) + 1; expf adds <= 4 ulps of gw."""
    dx = max(abs(delta[0] * stds[0]), abs(delta[1] * stds[1]))
    dwh = min(max(abs(delta[2] * stds[2]), abs(delta[3] * stds[3])), abs(math.log(16 / 1000)))
    pwh = max(abs(roi[2] - roi[0]) + 1, abs(roi[3] - roi[1]) + 1)
    mag = abs(roi[0]) + abs(roi[1]) + abs(roi[2]) + abs(roi[3]) + pwh * (dx + math.exp(dwh)) + 1
    return 16 * U32 * mag


def bilinear(plane, height, width, y, x, f):
    """bilinear_interpolate of roi_align_kernel.cu with number type f (np.float32 or float)."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return f(0)
    if y <= 0:
        y = f(0)
    if x <= 0:
        x = f(0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = f(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = f(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - f(y_low), x - f(x_low)
    hy, hx = f(1) - ly, f(1) - lx
    lt, rt = f(plane[y_low][x_low]), f(plane[y_low][x_high])
    lb, rb = f(plane[y_high][x_low]), f(plane[y_high][x_high])
    w1, w2, w3, w4 = hy * hx, hy * lx, ly * hx, ly * lx
    return w1 * lt + w2 * rt + w3 * lb + w4 * rb


def scalar_roi_align(feat: np.ndarray, roi, out, scale, sample_num, f):
    """ROIAlignForward, one RoI, every (c, ph, pw), with number type f."""
    _, channels, height, width = feat.shape
    b = int(roi[0])
    s = f(scale)
    start_w, start_h = f(roi[1]) * s, f(roi[2]) * s
    end_w, end_h = (f(roi[3]) + f(1)) * s, (f(roi[4]) + f(1)) * s
    roi_w, roi_h = max(end_w - start_w, f(0)), max(end_h - start_h, f(0))
    bin_w, bin_h = roi_w / f(out), roi_h / f(out)
    res = np.zeros((channels, out, out), dtype=np.float64)
    for c in range(channels):
        plane = feat[b, c]
        for ph in range(out):
            for pw in range(out):
                acc = f(0)
                for iy in range(sample_num):
                    y = start_h + f(ph) * bin_h + (f(iy) + f(0.5)) * bin_h / f(sample_num)
                    for ix in range(sample_num):
                        x = start_w + f(pw) * bin_w + (f(ix) + f(0.5)) * bin_w / f(sample_num)
                        acc = acc + bilinear(plane, height, width, y, x, f)
                res[c, ph, pw] = acc / f(sample_num * sample_num)
    return res


def sample_positions(start, end, out, sample_num):
    """The float32 sample coordinates of one RoI axis (as the kernel computes them)."""
    start, end = F32(start), F32(end)
    bin_size = max(end - start, F32(0)) / F32(out)
    return [start + F32(p) * bin_size + (F32(i) + F32(0.5)) * bin_size / F32(sample_num)
            for p in range(out) for i in range(sample_num)]


def roi_align_bound(feat: np.ndarray, rois, scale) -> float:
    """|float32 RoIAlign - float64| bound: each value is a convex combination of 4 features,
    computed with ~12 roundings (<= 12 u max|f|); the float32 sample positions (~5 roundings of
    magnitudes <= P, the largest |coordinate|) move the bilinear weights by <= 5 u P each, hence
    the value by <= 2 * 5 u P * 2 max|f| (a weight pair changes two features' shares)."""
    fmax = float(np.abs(feat).max())
    pmax = max(abs(float(v)) + 1 for r in rois for v in r[1:]) * scale
    return (12 + 20 * pmax) * U32 * fmax


def _best_time(fn, repeat=2):
    """The best wall time of ``fn`` on one thread (OpenMP threads thrash on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        return min(times), result
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- anchors

def test_anchor_base_known_values():
    # stride 4, ratio 0.5, scale 8 by hand: ctr = (4 - 1) / 2 = 1.5, h_ratio = sqrt(0.5) = 0.70711,
    # w_ratio = 1.41421; ws = 4 * 1.41421 * 8 = 45.2548, hs = 22.6274;
    # x1 = 1.5 - 0.5 * 44.2548 = -20.627 -> -21, y1 = 1.5 - 0.5 * 21.6274 = -9.314 -> -9,
    # x2 = 1.5 + 22.127 = 23.627 -> 24, y2 = 1.5 + 10.814 = 12.314 -> 12.
    assert L.anchor_base(4).tolist() == [[-21, -9, 24, 12], [-14, -14, 17, 17], [-9, -21, 12, 24]]
    # the well-known mmdetection anchors of stride 16
    assert L.anchor_base(16).tolist() == [[-83, -37, 98, 52], [-56, -56, 71, 71], [-37, -83, 52, 98]]
    assert L.anchor_base(4).dtype == torch.float32


@pytest.mark.parametrize("base", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("scales,ratios", [((8,), (0.5, 1.0, 2.0)), ((4, 8), (0.5, 2.0))])
def test_anchor_base_formula(base, scales, ratios):
    expected = []
    for r in ratios:            # scale_major: ratio outer, scale inner (index r * S + s)
        for s in scales:
            ctr = 0.5 * (base - 1)
            hr = math.sqrt(r)
            ws, hs = base * (1 / hr) * s, base * hr * s
            raw = [ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1), ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)]
            # far from .5, so float32 vs float64 cannot change the rounding
            assert all(abs(abs(v - math.floor(v)) - 0.5) > 1e-3 or v == int(v) for v in raw)
            expected.append([float(round(v)) for v in raw])  # round: half to even, as torch
    assert L.anchor_base(base, scales, ratios).tolist() == expected


def test_grid_anchors_order():
    base = L.anchor_base(8, (4, 8), (0.5, 1.0, 2.0))
    a = base.shape[0]
    feat_h, feat_w, stride = 3, 5, 8
    grid = L.grid_anchors(base, stride, feat_h, feat_w)
    assert grid.shape == (feat_h * feat_w * a, 4) and grid.dtype == torch.float32
    for y in range(feat_h):
        for x in range(feat_w):
            for k in range(a):
                b = base[k].tolist()
                assert grid[(y * feat_w + x) * a + k].tolist() == [
                    b[0] + x * stride, b[1] + y * stride, b[2] + x * stride, b[3] + y * stride]


# ----------------------------------------------------------------------------- delta2bbox

def test_fma_is_exact():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(4000, generator=g) * 300 + 1)
    b = torch.randn(4000, generator=g)
    c = torch.rand(4000, generator=g) * 2000 - 500
    got = L._fma(a, b, c).tolist()
    for i in range(0, 4000, 7):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        assert got[i] == round_f32(exact)
    # a case where rounding a*b + c first to float64 lands on a float32 midpoint and ties the
    # wrong way: a*b = 2^-24 - 2^-70, c = 1 + 2^-23; exact sum just below the midpoint
    # 1 + 2^-23 + 2^-24, so the fused result is 1 + 2^-23 (a float64 detour gives 1 + 2^-22)
    a = torch.tensor([2.0 ** -24 * (1 + 2.0 ** -23)])
    b = torch.tensor([1 - 2.0 ** -23])
    c = torch.tensor([1 + 2.0 ** -23])
    assert (a.double() * b.double() + c.double()).float().item() == 1 + 2.0 ** -22
    assert L._fma(a, b, c).item() == 1 + 2.0 ** -23
    assert L._fma(a, b, c).item() == round_f32(
        Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _random_rois(g, n, span=800.0, size=300.0):
    xy = torch.rand(n, 2, generator=g) * span - 50
    wh = torch.rand(n, 2, generator=g) * size
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("k,means,stds,max_shape", [
    (1, (0, 0, 0, 0), (1, 1, 1, 1), None),
    (1, (0, 0, 0, 0), (1, 1, 1, 1), (600, 700, 3)),
    (3, (0.01, -0.02, 0.03, 0.0), (0.1, 0.1, 0.2, 0.2), (500, 650)),
])
def test_delta2bbox_vs_float64(k, means, stds, max_shape):
    g = torch.Generator().manual_seed(k)
    n = 300
    rois = _random_rois(g, n)
    deltas = torch.randn(n, 4 * k, generator=g) * 1.5
    deltas[:20, 2::4] = 6.0     # dw above log(1000/16) = 4.135: clamped
    deltas[20:40, 3::4] = -7.0  # dh below -4.135
    out = L.delta2bbox(rois, deltas, means, stds, max_shape)
    assert out.shape == (n, 4 * k) and out.dtype == torch.float32
    r_list, d_list, o_list = rois.tolist(), deltas.tolist(), out.tolist()
    for i in range(n):
        for j in range(k):
            d = d_list[i][4 * j:4 * j + 4]
            exp = scalar_delta2bbox64(r_list[i], d, means, stds, max_shape)
            tol = delta_bound(r_list[i], d, stds)
            for q in range(4):
                assert abs(o_list[i][4 * j + q] - exp[q]) <= tol, (i, j, q, o_list[i][4 * j + q], exp[q])


def test_delta2bbox_bit_exact_without_scaling():
    # dw = dh = 0 makes exp exactly 1, so the whole float32 chain is reproducible: px, pw,
    # gx = fma(pw, dx, px) (one rounding), x1 = (gx - pw*0.5) + 0.5, x2 = (gx + pw*0.5) - 0.5
    g = torch.Generator().manual_seed(5)
    n = 2000
    rois = _random_rois(g, n, span=1500.0, size=700.0)
    deltas = torch.randn(n, 4, generator=g) * 0.3
    deltas[:, 2:] = 0
    out = L.delta2bbox(rois, deltas).tolist()
    r_list, d_list = rois.tolist(), deltas.tolist()
    mismatch_two_roundings = 0
    for i in range(n):
        x1, y1, x2, y2 = (F32(v) for v in r_list[i])
        for (lo, hi, d, q) in ((x1, x2, d_list[i][0], 0), (y1, y2, d_list[i][1], 1)):
            p = (lo + hi) * F32(0.5)
            w = hi - lo + F32(1)
            gx = F32(round_f32(Fraction(float(w)) * Fraction(d) + Fraction(float(p))))
            half = w * F32(0.5)
            assert out[i][q] == float(gx - half + F32(0.5))
            assert out[i][q + 2] == float(gx + half - F32(0.5))
            mismatch_two_roundings += float(gx) != float(p + w * F32(d))
    assert mismatch_two_roundings > 0  # the case set does tell fused from unfused


def test_delta2bbox_clamps():
    rois = torch.tensor([[10.0, 20.0, 49.0, 59.0]] * 4)
    clip = float(np.float32(abs(math.log(16 / 1000))))
    deltas = torch.tensor([[0.0, 0.0, 10.0, -10.0], [0.0, 0.0, clip, -clip],
                           [5.0, -5.0, 0.0, 0.0], [-3.0, 3.0, 2.0, 2.0]])
    out = L.delta2bbox(rois, deltas)
    assert torch.equal(out[0], out[1])  # dw, dh beyond +-log(1000/16) act as the bound
    # 40 * 1000/16 = 2500 wide around the centre 29.5: x1 = 29.5 - 1250 + 0.5
    assert out[0, 0].item() == pytest.approx(-1220.0, abs=1e-3)
    img = (100, 80, 3)
    clamped = L.delta2bbox(rois, deltas, max_shape=img)
    assert clamped[:, 0::2].min() >= 0 and clamped[:, 0::2].max() <= 79
    assert clamped[:, 1::2].min() >= 0 and clamped[:, 1::2].max() <= 99
    # box 2 leaves the image right (x) and top (y): x pinned to w-1, y to 0
    assert clamped[2, 0].item() == 79 and clamped[2, 2].item() == 79
    assert clamped[2, 1].item() == 0 and clamped[2, 3].item() == 0
    assert clamped[0, 0].item() == 0 and clamped[0, 2].item() == 79
    assert torch.equal(clamped, out.clamp(min=0).minimum(torch.tensor([79.0, 99.0, 79.0, 99.0])))


def test_delta2bbox_shape_errors():
    with pytest.raises(ValueError):
        L.delta2bbox(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        L.delta2bbox(torch.zeros(3, 4), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- NMS

def _random_dets(g, n, integer=False):
    if integer:
        xy = torch.randint(0, 60, (n, 2), generator=g).float()
        wh = torch.randint(0, 30, (n, 2), generator=g).float()
    else:
        xy = torch.rand(n, 2, generator=g) * 100
        wh = torch.rand(n, 2, generator=g) * 40
    scores = torch.rand(n, 1, generator=g)
    return torch.cat([xy, xy + wh, scores], 1)


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_vs_scalar(integer, thr):
    g = torch.Generator().manual_seed(int(thr * 10) + 100 * integer)
    dets = _random_dets(g, 150, integer)
    if integer:
        dets[:, 4] = torch.randint(0, 20, (150,), generator=g).float() / 20  # many exact ties
    kept, keep = L.nms(dets, thr)
    assert keep.dtype == torch.long
    assert keep.tolist() == scalar_nms(dets.tolist(), thr)
    assert torch.equal(kept, dets[keep])
    assert 0 < len(keep) < 150


def test_nms_iou_exactly_at_threshold():
    a = [0, 0, 9, 9]  # 10 x 10 = 100 with the +1 convention
    for b, iou in (([0, 0, 9, 4], 0.5), ([0, 0, 9, 6], 0.7), ([0, 0, 9, 2], 0.3)):
        dets = torch.tensor([a + [0.9], b + [0.8]])
        assert iou32(a, b) == F32(iou)  # inter / union = 50/100, 70/100, 30/100 in float32
        assert L.nms(dets, iou)[1].tolist() == [0, 1]      # IoU == thr: kept (strictly greater)
        assert L.nms(dets, iou - 0.01)[1].tolist() == [0]  # just below: suppressed
    # the comparison is in float32 as the kernel's `float`: float32(0.3) > 0.3 in float64, so a
    # float64 comparison would suppress here
    assert float(F32(0.3)) > 0.3


def test_nms_plus_one_areas():
    # [0,0,1,1] and [1,1,2,2] share one pixel: IoU 1 / (4 + 4 - 1) = 1/7 (0 without the +1)
    dets = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.9], [1.0, 1.0, 2.0, 2.0, 0.8]])
    assert L.nms(dets, 0.14)[1].tolist() == [0]
    assert L.nms(dets, 0.15)[1].tolist() == [0, 1]
    # degenerate single-pixel boxes have area 1
    one = torch.tensor([[3.0, 3.0, 3.0, 3.0, 0.5], [3.0, 3.0, 3.0, 3.0, 0.4]])
    assert L.nms(one, 0.99)[1].tolist() == [0]


def test_nms_ties_and_index_order():
    # equal scores: the lower index is visited first. The middle box [5, 14] overlaps both
    # others (IoU 50/150 each), which are apart: visited first (index 0) it suppresses both;
    # had index 2 or 1 been visited first, two boxes would survive.
    dets = torch.tensor([[5.0, 0.0, 14.0, 9.0, 0.5],
                         [0.0, 0.0, 9.0, 9.0, 0.5],
                         [10.0, 0.0, 19.0, 9.0, 0.5]])
    assert L.nms(dets, 0.3)[1].tolist() == [0]
    assert L.nms(dets[[1, 0, 2]], 0.3)[1].tolist() == [0, 2]
    # the kept indices come back in index order, not score order
    dets = torch.tensor([[0.0, 0.0, 5.0, 5.0, 0.1], [20.0, 0.0, 25.0, 5.0, 0.9],
                         [40.0, 0.0, 45.0, 5.0, 0.5]])
    kept, keep = L.nms(dets, 0.5)
    assert keep.tolist() == [0, 1, 2] and torch.equal(kept, dets)
    # the higher score wins regardless of position
    dets = torch.tensor([[0.0, 0.0, 9.0, 9.0, 0.2], [1.0, 0.0, 10.0, 9.0, 0.7]])
    assert L.nms(dets, 0.5)[1].tolist() == [1]


def test_nms_empty_and_one():
    kept, keep = L.nms(torch.zeros(0, 5), 0.5)
    assert kept.shape == (0, 5) and keep.shape == (0,) and keep.dtype == torch.long
    one = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.5]])
    kept, keep = L.nms(one, 0.5)
    assert keep.tolist() == [0] and torch.equal(kept, one)
    with pytest.raises(ValueError):
        L.nms(torch.zeros(3, 4), 0.5)


def test_nms_rowwise_path_matches(monkeypatch):
    g = torch.Generator().manual_seed(9)
    dets = _random_dets(g, 300)
    ref = L.nms(dets, 0.6)[1]
    monkeypatch.setattr(L, "_NMS_MATRIX_MAX", 16)
    assert torch.equal(L.nms(dets, 0.6)[1], ref)


def test_nms_1000_boxes_fast():
    g = torch.Generator().manual_seed(10)
    dets = _random_dets(g, 1000)
    dets[:, :4] *= 10
    elapsed, _ = _best_time(lambda: L.nms(dets, 0.7))
    assert elapsed < 0.5  # about 0.04 s


# ----------------------------------------------------------------------------- RoI levels

def test_map_roi_levels_boundaries():
    def roi(side):
        s = F32(side)
        return [0.0, 0.0, 0.0, float(s - F32(1)), float(s - F32(1))]  # width = height = side

    below = float(np.nextafter(np.nextafter(F32(112), F32(0)), F32(0)))  # 112 - 2 ulps
    cases = [(1, 0), (55, 0), (56, 0), (111, 0), (112 - 1e-4, 0), (below, 1), (112, 1),
             (223, 1), (224, 2), (447, 2), (448, 3), (2000, 3)]
    rois = torch.tensor([roi(s) for s, _ in cases])
    levels = L.map_roi_levels(rois).tolist()
    assert levels == [lvl for _, lvl in cases]
    # the +1e-6 decides the 112 - 2 ulps case: without it, log2(s / 56) < 1
    assert float(F32(below) / F32(56)) < 2 and float(F32(below) / F32(56) + F32(1e-6)) > 2


def test_map_roi_levels_vs_scalar():
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(500, 2, generator=g) * 500
    wh = torch.rand(500, 2, generator=g) ** 2 * 900
    rois = torch.cat([torch.zeros(500, 1), xy, xy + wh], 1)
    got = L.map_roi_levels(rois).tolist()
    for r, lvl in zip(rois.tolist(), got):
        x1, y1, x2, y2 = (F32(v) for v in r[1:])
        scale = np.sqrt((x2 - x1 + F32(1)) * (y2 - y1 + F32(1)))
        exp = min(max(math.floor(np.log2(scale / F32(56) + F32(1e-6))), 0), 3)
        assert lvl == exp
    assert set(got) == {0, 1, 2, 3}


# ----------------------------------------------------------------------------- RoIAlign

def _check_roi_align(feat, rois, out, scale, sample_num):
    got = L.roi_align(feat, rois, out, scale, sample_num)
    assert got.shape == (rois.shape[0], feat.shape[1], out, out)
    fnp = feat.numpy()
    bound = roi_align_bound(fnp, rois.tolist(), scale)
    for i, r in enumerate(rois.tolist()):
        exact = scalar_roi_align(fnp, r, out, scale, sample_num, F32)
        assert np.array_equal(got[i].numpy(), exact.astype(np.float32)), i
        ref64 = scalar_roi_align(fnp, r, out, scale, sample_num, float)
        assert np.abs(got[i].numpy().astype(np.float64) - ref64).max() <= bound, i
    return got


@pytest.mark.parametrize("scale,out,sample_num", [(0.25, 7, 2), (1 / 16, 7, 2), (0.5, 3, 1), (0.125, 2, 3)])
def test_roi_align_random(scale, out, sample_num):
    g = torch.Generator().manual_seed(int(1 / scale) + out)
    h, w = 11, 13
    feat = torch.randn(2, 3, h, w, generator=g)
    n = 12
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w / scale, h / scale]) - 2 / scale
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w / scale, h / scale]) * 0.6
    batch = torch.randint(0, 2, (n, 1), generator=g).float()
    rois = torch.cat([batch, xy, xy + wh], 1)
    _check_roi_align(feat, rois, out, scale, sample_num)


def test_roi_align_borders_and_tiny_boxes():
    g = torch.Generator().manual_seed(11)
    h, w, scale = 6, 8, 0.25  # a 24 x 32 image at stride 4
    feat = torch.randn(3, 2, h, w, generator=g)
    rois = torch.tensor([
        [0, -10.0, -3.0, 12.0, 9.0],     # starts outside (samples in (-1, 0] and < -1)
        [1, 20.0, 14.0, 40.0, 30.0],     # ends past W and H: samples >= H - 1 and > H
        [2, -20.0, -20.0, 50.0, 50.0],   # covers the map and more on every side
        [1, 5.0, 6.0, 5.3, 6.4],         # x2 < x1 + 1: under one image pixel, 0.33 feature px
        [2, 9.0, 7.0, 9.0, 7.0],         # x2 == x1: width (x2 + 1 - x1) * s = 0.25
        [0, 12.0, 10.0, 9.0, 8.0],       # x2 < x1 - 1: width clamps to 0, all samples at start
        [2, 27.5, 19.5, 31.9, 23.9],     # the bottom-right pixel
        [1, -8.0, 2.0, -5.0, 30.0],      # entirely left of the map
    ])
    got = _check_roi_align(feat, rois, 7, scale, 2)
    # the cases do reach the kernel's branches
    ys0 = sample_positions(-3.0 * scale, 10.0 * scale, 7, 2)
    assert any(-1 < y <= 0 for y in ys0) and any(y < -1 for y in
                                                  sample_positions(-10 * scale, 13 * scale, 7, 2))
    ys1 = sample_positions(14 * scale, 31 * scale, 7, 2)
    assert any(h - 1 <= y <= h for y in ys1) and any(y > h for y in ys1)
    xs1 = sample_positions(20 * scale, 41 * scale, 7, 2)
    assert any(x > w for x in xs1)
    assert torch.all(got[7] == 0)            # every sample x < -1 reads 0
    assert torch.all(got[5] == got[5][:, :1, :1])  # zero width and height: one value per channel
    # batch index > 0 reads its own image: RoI 1 (batch 1) is RoI 0 of image 1 alone
    only1 = L.roi_align(feat[1:2], torch.tensor([[0, 20.0, 14.0, 40.0, 30.0]]), 7, scale, 2)
    assert torch.equal(only1[0], got[1])
    assert not torch.equal(L.roi_align(feat[0:1], only1.new_tensor([[0, 20.0, 14.0, 40.0, 30.0]]),
                                       7, scale, 2), only1)


def test_roi_align_errors():
    feat = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError):
        L.roi_align(feat, torch.tensor([[1.0, 0, 0, 3, 3]]), 7, 1.0)  # batch index out of range
    with pytest.raises(ValueError):
        L.roi_align(feat, torch.zeros(2, 4), 7, 1.0)
    with pytest.raises(ValueError):
        L.roi_align(feat, torch.zeros(1, 5), 7, 1.0, sample_num=0)
    assert L.roi_align(feat, torch.zeros(0, 5), 7, 1.0).shape == (0, 2, 7, 7)


def test_roi_align_1000_rois_fast():
    g = torch.Generator().manual_seed(12)
    feat = torch.randn(1, 256, 100, 168, generator=g)   # P3 of a 800 x 1333 image
    xy = torch.rand(1000, 2, generator=g) * torch.tensor([1300.0, 780.0])
    wh = torch.rand(1000, 2, generator=g) * 200 + 1
    rois = torch.cat([torch.zeros(1000, 1), xy, xy + wh], 1)
    elapsed, out = _best_time(lambda: L.roi_align(feat, rois, 7, 1 / 8, 2))
    assert out.shape == (1000, 256, 7, 7)
    assert elapsed < 1.5  # about 0.3 s on one core; margin for a loaded machine
    # spot-check a few RoIs (all channels would be slow in Python: 8 channels)
    fnp = feat[:, :8].numpy()
    for i in (0, 499, 999):
        exact = scalar_roi_align(fnp, rois[i].tolist(), 7, 1 / 8, 2, F32)
        assert np.array_equal(out[i, :8].numpy(), exact.astype(np.float32))


def test_multi_level_roi_align():
    g = torch.Generator().manual_seed(13)
    feats = [torch.randn(2, 4, 64 // s, 96 // s, generator=g) for s in (4, 8, 16, 32)]
    # sides chosen for every level: < 112, [112, 224), [224, 448), >= 448
    rois = torch.tensor([
        [0, 10.0, 12.0, 60.0, 70.0], [1, 100.0, 50.0, 250.0, 200.0],
        [0, 0.0, 0.0, 300.0, 250.0], [1, -40.0, -30.0, 500.0, 480.0],
        [1, 30.0, 40.0, 40.0, 45.0], [0, 200.0, 100.0, 330.0, 230.0],
    ])
    levels = L.map_roi_levels(rois)
    assert levels.tolist() == [0, 1, 2, 3, 0, 1]
    got = L.multi_level_roi_align(feats, rois)
    assert got.shape == (6, 4, 7, 7)
    for i, r in enumerate(rois.tolist()):
        lvl = int(levels[i])
        stride = (4, 8, 16, 32)[lvl]
        exact = scalar_roi_align(feats[lvl].numpy(), r, 7, 1 / stride, 2, F32)
        assert np.array_equal(got[i].numpy(), exact.astype(np.float32)), i
    # one map: no level mapping
    one = L.multi_level_roi_align(feats[:1], rois, strides=(4,))
    assert torch.equal(one, L.roi_align(feats[0], rois, 7, 0.25, 2))


# ----------------------------------------------------------------------------- multiclass NMS

def scalar_multiclass_nms(bboxes, scores, score_thr, iou_thr, max_num):
    thr = F32(score_thr)
    n, c = len(scores), len(scores[0])
    rows, labels = [], []
    for i in range(1, c):
        sel = [r for r in range(n) if F32(scores[r][i]) > thr]
        if not sel:
            continue
        box = (lambda r: bboxes[r][:4]) if len(bboxes[0]) == 4 else (lambda r: bboxes[r][4 * i:4 * i + 4])
        dets = [box(r) + [scores[r][i]] for r in sel]
        for k in scalar_nms(dets, iou_thr):
            rows.append(dets[k])
            labels.append(i - 1)
    if len(rows) > max_num:
        order = sorted(range(len(rows)), key=lambda k: -rows[k][4])[:max_num]
        rows, labels = [rows[k] for k in order], [labels[k] for k in order]
    return rows, labels


def _random_multiclass(g, n, c, shared=False):
    base = _random_rois(g, n, span=200.0, size=80.0)
    k = 1 if shared else c
    bboxes = (base.repeat(1, k) + torch.randn(n, 4 * k, generator=g) * 4)
    scores = torch.softmax(torch.randn(n, c, generator=g) * 2.5, 1)
    return bboxes, scores


@pytest.mark.parametrize("max_num,shared", [(100, False), (7, False), (100, True)])
def test_multiclass_nms_vs_scalar(max_num, shared):
    g = torch.Generator().manual_seed(20 + max_num + shared)
    # 20 rows x 5 classes <= 100: with max_num 100 the rows are never sorted
    bboxes, scores = _random_multiclass(g, 20 if max_num == 100 else 80, 6, shared)
    dets, labels = L.multiclass_nms(bboxes, scores, 0.05, 0.5, max_num)
    rows, exp_labels = scalar_multiclass_nms(bboxes.tolist(), scores.tolist(), 0.05, 0.5, max_num)
    assert dets.tolist() == rows and labels.tolist() == exp_labels
    assert labels.dtype == torch.long and dets.shape[1] == 5
    if max_num == 100:
        assert len(rows) <= 100
        assert labels.tolist() == sorted(labels.tolist())  # class by class, no sorting
        assert len(set(labels.tolist())) > 2
    else:
        assert len(rows) == 7 and dets[:, 4].tolist() == sorted(dets[:, 4].tolist(), reverse=True)


def test_multiclass_nms_threshold_and_cut():
    thr32 = float(F32(0.05))
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0] * 3, [50.0, 50.0, 60.0, 60.0] * 3,
                          [100.0, 0.0, 110.0, 10.0] * 3])
    scores = torch.tensor([[0.1, thr32, 0.3],      # class 1 at exactly 0.05: dropped (strict)
                           [0.1, 0.06, 0.2],
                           [0.1, 0.9, 0.04]])
    dets, labels = L.multiclass_nms(boxes, scores, 0.05, 0.5, 100)
    # class 1 (label 0): rows 1, 2; class 2 (label 1): rows 0, 1; index order inside a class
    assert labels.tolist() == [0, 0, 1, 1]
    assert dets[:, 4].tolist() == pytest.approx([0.06, 0.9, 0.3, 0.2])
    # exactly max_num rows: no sort
    d4, l4 = L.multiclass_nms(boxes, scores, 0.05, 0.5, 4)
    assert torch.equal(d4, dets) and torch.equal(l4, labels)
    # one more than max_num: sorted by score, cut
    d3, l3 = L.multiclass_nms(boxes, scores, 0.05, 0.5, 3)
    assert d3[:, 4].tolist() == pytest.approx([0.9, 0.3, 0.2]) and l3.tolist() == [0, 1, 1]
    # nothing above the threshold
    d0, l0 = L.multiclass_nms(boxes, scores * 0.01, 0.05, 0.5, 100)
    assert d0.shape == (0, 5) and l0.shape == (0,) and l0.dtype == torch.long


# ----------------------------------------------------------------------------- RPN proposals

def scalar_rpn(cls_scores, bbox_preds, anchors, img_shape, nms_pre, nms_post, max_num, thr):
    all_rows = []
    for score, pred, anc in zip(cls_scores, bbox_preds, anchors):
        a, h, w = score.shape
        rows = []  # (score, anchor, delta) in (y*W + x)*A + a order
        for y in range(h):
            for x in range(w):
                for k in range(a):
                    s = 1.0 / (1.0 + math.exp(-float(score[k, y, x])))
                    d = [float(pred[4 * k + q, y, x]) for q in range(4)]
                    rows.append((s, anc[(y * w + x) * a + k].tolist(), d))
        if len(rows) > nms_pre:
            order = sorted(range(len(rows)), key=lambda i: -rows[i][0])[:nms_pre]
            rows = [rows[i] for i in order]
        # a 6th column carries the row's float32 error bound (scalar_nms ignores it)
        dets = [scalar_delta2bbox64(r, d, (0, 0, 0, 0), (1, 1, 1, 1), img_shape)
                + [s, delta_bound(r, d, (1, 1, 1, 1))] for s, r, d in rows]
        kept = scalar_nms(dets, thr)
        all_rows += [dets[i] for i in kept][:nms_post]
    order = sorted(range(len(all_rows)), key=lambda i: -all_rows[i][4])[:min(max_num, len(all_rows))]
    return [all_rows[i] for i in order]


def test_rpn_proposals_vs_scalar():
    g = torch.Generator().manual_seed(30)
    img_shape = (45, 61, 3)
    sizes = [(12, 16), (6, 8), (3, 4)]
    strides = [4, 8, 16]
    cls_scores = [torch.randn(3, h, w, generator=g) * 2 for h, w in sizes]
    bbox_preds = [torch.randn(12, h, w, generator=g) * 0.3 for h, w in sizes]
    anchors = [L.grid_anchors(L.anchor_base(s), s, h, w) for s, (h, w) in zip(strides, sizes)]
    # nms_pre cuts level 0 (576 anchors) and level 1 (144); nms_post and max_num cut too
    args = dict(nms_pre=120, nms_post=40, max_num=90, nms_thr=0.7)
    props = L.rpn_proposals(cls_scores, bbox_preds, anchors, img_shape, **args)
    exp = scalar_rpn(cls_scores, bbox_preds, anchors, img_shape, 120, 40, 90, 0.7)
    assert props.shape == (len(exp), 5) and len(exp) == 90
    for got, e in zip(props.tolist(), exp):
        # sigmoid: <= 4 ulps apart from float64 (plus float32 rounding of the input)
        assert got[4] == pytest.approx(e[4], rel=8 * U32, abs=1e-30)
        for q in range(4):
            assert abs(got[q] - e[q]) <= e[5], (got, e)
    assert props[:, 4].tolist() == sorted(props[:, 4].tolist(), reverse=True)
    # no cut at all: every level's NMS output, all levels
    full = L.rpn_proposals(cls_scores, bbox_preds, anchors, img_shape, nms_pre=1000,
                           nms_post=1000, max_num=1000, nms_thr=0.7)
    exp_full = scalar_rpn(cls_scores, bbox_preds, anchors, img_shape, 1000, 1000, 1000, 0.7)
    assert full.shape[0] == len(exp_full)
    exp_full = np.array(exp_full)
    assert np.all(np.abs(full.numpy()[:, :4] - exp_full[:, :4]) <= exp_full[:, 5:])
    assert np.allclose(full.numpy()[:, 4], exp_full[:, 4], rtol=8 * U32, atol=0)


# ----------------------------------------------------------------------------- box head

def test_bbox_head_detections_vs_scalar():
    g = torch.Generator().manual_seed(40)
    r, c = 60, 81
    img_shape, sf = (300, 400, 3), 0.75
    boxes = _random_rois(g, r, span=350.0, size=120.0).clamp(min=0, max=299)
    rois = torch.cat([torch.zeros(r, 1), boxes], 1)
    cls_score = torch.randn(r, c, generator=g) * 3
    bbox_pred = torch.randn(r, 4 * c, generator=g)
    dets, labels = L.bbox_head_detections(rois, cls_score, bbox_pred, img_shape, sf)
    # scalar: softmax and decode in float64, divide by the scale factor, multiclass NMS
    stds = (0.1, 0.1, 0.2, 0.2)
    scores64, boxes64 = [], []
    for i in range(r):
        logits = cls_score[i].double().tolist()
        m = max(logits)
        e = [math.exp(v - m) for v in logits]
        scores64.append([v / sum(e) for v in e])
        row = []
        for k in range(c):
            row += [v / sf for v in scalar_delta2bbox64(rois[i, 1:].tolist(),
                                                          bbox_pred[i, 4 * k:4 * k + 4].tolist(),
                                                          (0, 0, 0, 0), stds, img_shape)]
        boxes64.append(row)
    rows, exp_labels = scalar_multiclass_nms(boxes64, scores64, 0.05, 0.5, 100)
    assert labels.tolist() == exp_labels and len(rows) > 10
    # boxes: the largest delta2bbox bound of any row and class, scaled by 1 / sf, plus the
    # rounding of the division (<= u of the largest box coordinate, 399 / sf)
    bound = max(delta_bound(rois[i, 1:].tolist(), bbox_pred[i, 4 * k:4 * k + 4].tolist(), stds)
                for i in range(r) for k in range(c)) / sf + U32 * 399 / sf
    # scores: softmax in float32, a few ulps of each term (81 terms: gamma(81) relative)
    for got, e in zip(dets.tolist(), rows):
        for q in range(4):
            assert abs(got[q] - e[q]) <= bound
        assert got[4] == pytest.approx(e[4], rel=100 * U32)
