"""The official SSI Faster R-CNN test path (mmdetection v0.6 semantics) as eager PyTorch.

This is the reference every export of the detector is validated against: each function
reproduces one operation of the official repository (zdaxie/SpatiallyAdaptiveInference-Detection
at 323801d, the same files as mmdetection v0.6.0) convention for convention, in float32, with
the source's order of operations (each elementwise operation rounded once, except where the
source fuses a multiply-add). See ``docs/detector-spec.md`` (shared) for the table of facts.
Paths below are relative to that repository.

- :func:`anchor_base`: ``mmdet/core/anchor/anchor_generator.py:18-43`` (gen_base_anchors).
- :func:`grid_anchors`: ``mmdet/core/anchor/anchor_generator.py:53-70``.
- :func:`delta2bbox`: ``mmdet/core/bbox/transforms.py:34-68``.
- :func:`nms`: ``mmdet/ops/nms/nms_wrapper.py:8-49``; ``mmdet/ops/nms/src/nms_kernel.cu:13-21,60,74,127-130``
  (the CUDA op: the official test runs on the GPU).
- :func:`map_roi_levels`: ``mmdet/models/roi_extractors/single_level.py:52-71``.
- :func:`roi_align`: ``mmdet/ops/roi_align/src/roi_align_kernel.cu:17-61,71-123``.
- :func:`multi_level_roi_align`: ``mmdet/models/roi_extractors/single_level.py:73-88``.
- :func:`multiclass_nms`: ``mmdet/core/post_processing/bbox_nms.py:29-64``.
- :func:`rpn_proposals`: ``mmdet/models/anchor_heads/rpn_head.py:55-104`` (cfg:103-109).
- :func:`bbox_head_detections`: ``mmdet/models/bbox_heads/bbox_head.py:119-148`` (cfg:110-111).

Ties of score (NMS order, ``topk``, the final sort of multiclass NMS) are implementation-defined
in the official CUDA code (``sort``/``topk`` are not stable there); here every ranking is a
stable descending sort: among equal scores the lower index comes first.

Not bit-reproducible from the source alone (the rounding of the official build is the
compiler's): nvcc contracts ``a*b + c`` into fused multiply-adds where it likes (the NMS IoU,
the RoIAlign sample positions and bilinear sums), and ``expf``/``sqrtf``/``log2f``/softmax differ
by an ulp between libraries. This reference rounds every elementwise step separately, which is
the same on every device; only ``delta2bbox``'s ``addcmul`` is fused, as in the source.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "anchor_base", "grid_anchors", "delta2bbox", "nms", "map_roi_levels", "roi_align",
    "multi_level_roi_align", "multiclass_nms", "rpn_proposals", "bbox_head_detections",
]

#: strides of P2..P5, the levels the RoI extractor reads (cfg:48)
ROI_STRIDES = (4, 8, 16, 32)
#: target stds of the box head (cfg:57); the RPN uses means 0, stds 1 (cfg:39-40)
BBOX_HEAD_STDS = (0.1, 0.1, 0.2, 0.2)

# RoIs per RoIAlign chunk: keeps the gathered [chunk, samples, 4, cells, C] block cache-sized
_ROI_CHUNK = 4
# NMS builds the full pairwise suppression matrix up to this many boxes, row by row above
_NMS_MATRIX_MAX = 8192


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _check_2d(name: str, t: torch.Tensor, cols: int | None = None) -> None:
    _need(isinstance(t, torch.Tensor), f"{name} must be a torch.Tensor, got {type(t).__name__}")
    _need(t.dim() == 2 and (cols is None or t.shape[1] == cols),
          f"{name} must have shape [N, {cols if cols is not None else 'k'}], got {tuple(t.shape)}")
    _need(t.is_floating_point(), f"{name} must be floating point, got {t.dtype}")


def _f32(x: float, like: torch.Tensor) -> torch.Tensor:
    """A Python number as a 0-d tensor of ``like``'s dtype (the C kernels take ``float``)."""
    return torch.tensor(x, dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------- anchors

def anchor_base(base_size: int, scales: Sequence[float] = (8,),
                ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> torch.Tensor:
    """The base anchors of one level, ``[len(ratios) * len(scales), 4]`` float32 (x1, y1, x2, y2).

    ``AnchorGenerator.gen_base_anchors`` with ``scale_major=True`` and no ``ctr``: centre
    ``(base - 1) / 2``, ``ws = base * (1 / sqrt(ratio)) * scale``, ``hs = base * sqrt(ratio) * scale``
    (index ``ratio_index * len(scales) + scale_index``), corners ``ctr -/+ 0.5 * (ws - 1)``,
    rounded half to even (``Tensor.round``).
    """
    _need(int(base_size) == base_size and base_size > 0, f"base_size must be a positive int, got {base_size}")
    _need(len(scales) > 0 and len(ratios) > 0, "scales and ratios must not be empty")
    w = h = int(base_size)
    scales_t = torch.tensor([float(s) for s in scales], dtype=torch.float32)
    ratios_t = torch.tensor([float(r) for r in ratios], dtype=torch.float32)
    x_ctr = 0.5 * (w - 1)
    y_ctr = 0.5 * (h - 1)
    h_ratios = torch.sqrt(ratios_t)
    w_ratios = 1 / h_ratios
    ws = (w * w_ratios[:, None] * scales_t[None, :]).reshape(-1)
    hs = (h * h_ratios[:, None] * scales_t[None, :]).reshape(-1)
    return torch.stack([x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1),
                        x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)], dim=-1).round()


def grid_anchors(base: torch.Tensor, stride: int, feat_h: int, feat_w: int) -> torch.Tensor:
    """All anchors of a ``feat_h x feat_w`` level, ``[feat_h * feat_w * A, 4]``.

    Row ``(y * feat_w + x) * A + a`` is ``base[a] + (x, y, x, y) * stride``
    (shifts ``arange * stride``), on ``base``'s device and dtype.
    """
    _check_2d("base", base, 4)
    _need(feat_h >= 0 and feat_w >= 0, f"feature size must be >= 0, got {feat_h}x{feat_w}")
    shift_x = torch.arange(0, feat_w, device=base.device) * stride
    shift_y = torch.arange(0, feat_h, device=base.device) * stride
    shift_xx = shift_x.repeat(feat_h)
    shift_yy = shift_y.view(-1, 1).repeat(1, feat_w).view(-1)
    shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1).to(base.dtype)
    return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)


# --------------------------------------------------------------------------- box decoding

def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once (an exact float32 fused multiply-add on any device).

    The float32 product is exact in float64; the float64 sum is rounded, and that rounding
    can only mislead the final rounding to float32 when it lands exactly on a float32
    midpoint, which the exact residual of the sum (TwoSum) then decides.
    """
    if a.dtype != torch.float32:
        return torch.addcmul(c, a, b)
    p = a.double() * b.double()
    cd = c.double()
    s = p + cd
    bb = s - p
    err = (p - (s - bb)) + (cd - bb)
    r = s.float()
    r64 = r.double()
    toward = torch.where(s > r64, torch.full_like(r, math.inf), torch.full_like(r, -math.inf))
    other = torch.nextafter(r, toward)
    midpoint = (r64 != s) & ((r64 + other.double()) * 0.5 == s) & (err != 0)
    if bool(midpoint.any()):
        hi = torch.maximum(r, other)
        lo = torch.minimum(r, other)
        r = torch.where(midpoint, torch.where(err > 0, hi, lo), r)
    return r


def delta2bbox(rois: torch.Tensor, deltas: torch.Tensor, means: Sequence[float] = (0, 0, 0, 0),
               stds: Sequence[float] = (1, 1, 1, 1), max_shape: Sequence[int] | None = None,
               wh_ratio_clip: float = 16 / 1000) -> torch.Tensor:
    """Decode ``deltas [N, 4k]`` (k boxes per row: class-specific when k > 1) on ``rois [N, >=4]``.

    ``d * std + mean``; ``dw, dh`` clamped to ``+-|log(wh_ratio_clip)|``; ``px = (x1 + x2) * 0.5``,
    ``pw = x2 - x1 + 1``; ``gw = pw * exp(dw)``; ``gx = px + pw * dx`` as one fused multiply-add
    (``torch.addcmul`` in the source); ``x1 = gx - gw * 0.5 + 0.5``, ``x2 = gx + gw * 0.5 - 0.5``;
    with ``max_shape = (h, w, ...)`` x is clamped to ``[0, w - 1]`` and y to ``[0, h - 1]``.
    """
    _check_2d("rois", rois)
    _check_2d("deltas", deltas)
    _need(rois.shape[1] >= 4, f"rois must have at least 4 columns, got {tuple(rois.shape)}")
    _need(deltas.shape[1] % 4 == 0 and deltas.shape[1] > 0,
          f"deltas must have 4k columns, got {tuple(deltas.shape)}")
    _need(rois.shape[0] == deltas.shape[0],
          f"rois and deltas must have as many rows, got {rois.shape[0]} and {deltas.shape[0]}")
    _need(len(means) == 4 and len(stds) == 4, "means and stds must have 4 values")
    k = deltas.size(1) // 4
    means_t = deltas.new_tensor([float(m) for m in means]).repeat(1, k)
    stds_t = deltas.new_tensor([float(s) for s in stds]).repeat(1, k)
    denorm = deltas * stds_t + means_t
    dx = denorm[:, 0::4]
    dy = denorm[:, 1::4]
    dw = denorm[:, 2::4]
    dh = denorm[:, 3::4]
    max_ratio = float(np.abs(np.log(wh_ratio_clip)))
    dw = dw.clamp(min=-max_ratio, max=max_ratio)
    dh = dh.clamp(min=-max_ratio, max=max_ratio)
    px = ((rois[:, 0] + rois[:, 2]) * 0.5).unsqueeze(1).expand_as(dx)
    py = ((rois[:, 1] + rois[:, 3]) * 0.5).unsqueeze(1).expand_as(dy)
    pw = (rois[:, 2] - rois[:, 0] + 1.0).unsqueeze(1).expand_as(dw)
    ph = (rois[:, 3] - rois[:, 1] + 1.0).unsqueeze(1).expand_as(dh)
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = _fma(pw, dx, px)
    gy = _fma(ph, dy, py)
    x1 = gx - gw * 0.5 + 0.5
    y1 = gy - gh * 0.5 + 0.5
    x2 = gx + gw * 0.5 - 0.5
    y2 = gy + gh * 0.5 - 0.5
    if max_shape is not None:
        _need(len(max_shape) >= 2, f"max_shape must be (h, w, ...), got {max_shape}")
        hmax, wmax = max_shape[0] - 1, max_shape[1] - 1
        x1 = x1.clamp(min=0, max=wmax)
        y1 = y1.clamp(min=0, max=hmax)
        x2 = x2.clamp(min=0, max=wmax)
        y2 = y2.clamp(min=0, max=hmax)
    return torch.stack([x1, y1, x2, y2], dim=-1).view_as(deltas)


# --------------------------------------------------------------------------- NMS

def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a [..., 4]`` with ``b [..., 4]`` (broadcast), as ``devIoU`` (+1 convention)."""
    left = torch.maximum(a[..., 0], b[..., 0])
    right = torch.minimum(a[..., 2], b[..., 2])
    top = torch.maximum(a[..., 1], b[..., 1])
    bottom = torch.minimum(a[..., 3], b[..., 3])
    width = (right - left + 1).clamp(min=0)
    height = (bottom - top + 1).clamp(min=0)
    inter = width * height
    sa = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    sb = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (sa + sb - inter)


def nms(dets: torch.Tensor, iou_thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS as the mmdet v0.6 CUDA op: returns ``(dets[keep], keep)``.

    Boxes are visited by descending score (a stable sort: among equal scores the lower index
    first; the CUDA op's ``sort`` leaves ties implementation-defined); a kept box suppresses
    every later box whose IoU with it is strictly greater than ``iou_thr`` (compared in the
    dets' dtype, as the kernel's ``float``); areas and intersections count ``+1`` pixel
    (``(x2 - x1 + 1) * (y2 - y1 + 1)``). ``keep`` (int64) is in ascending original index
    order, not score order. Empty input gives empty outputs.
    """
    _check_2d("dets", dets, 5)
    n = dets.shape[0]
    if n == 0:
        keep = torch.zeros(0, dtype=torch.long, device=dets.device)
        return dets[keep, :], keep
    order = torch.sort(dets[:, 4], descending=True, stable=True).indices
    boxes = dets[order, :4]
    thr = _f32(iou_thr, dets)
    if n <= _NMS_MATRIX_MAX:
        sup = torch.triu(_iou(boxes[:, None, :], boxes[None, :, :]) > thr, diagonal=1)
        sup = sup.cpu().numpy()
        removed = np.zeros(n, dtype=bool)
        kept = []
        for i in range(n):
            if not removed[i]:
                kept.append(i)
                removed |= sup[i]
        kept_t = torch.tensor(kept, dtype=torch.long, device=dets.device)
    else:
        alive = torch.ones(n, dtype=torch.bool, device=dets.device)
        kept = []
        i = 0
        while i < n:
            kept.append(i)
            over = _iou(boxes[i], boxes[i + 1:]) > thr
            alive[i + 1:] &= ~over
            rest = torch.nonzero(alive[i + 1:])
            if rest.numel() == 0:
                break
            i = i + 1 + int(rest[0, 0])
        kept_t = torch.tensor(kept, dtype=torch.long, device=dets.device)
    keep = torch.sort(order[kept_t]).values
    return dets[keep, :], keep


# --------------------------------------------------------------------------- RoI features

def map_roi_levels(rois: torch.Tensor, num_levels: int = 4, finest_scale: int = 56) -> torch.Tensor:
    """The FPN level of each RoI ``[R, 5]`` (batch, x1, y1, x2, y2): int64 ``[R]``.

    ``clamp(floor(log2(sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) / finest_scale + 1e-6)), 0, num_levels - 1)``,
    in the RoIs' dtype: scale < 112 -> 0, < 224 -> 1, < 448 -> 2, else 3 (up to the 1e-6).
    """
    _check_2d("rois", rois, 5)
    scale = torch.sqrt((rois[:, 3] - rois[:, 1] + 1) * (rois[:, 4] - rois[:, 2] + 1))
    target = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return target.clamp(min=0, max=num_levels - 1).long()


def _axis_samples(start: torch.Tensor, end: torch.Tensor, size: int, out: int, s: int):
    """Per RoI, output cell and sample along one axis: the bilinear rows/columns and weights.

    Returns ``(low, high, l, h, valid)``, each ``[R, out, s]``: the two neighbours, the weights
    ``l = pos - low`` and ``h = 1 - l`` of ``bilinear_interpolate`` and whether the sample reads
    the map (outside ``[-1, size]`` it reads 0).
    """
    length = (end - start).clamp(min=0)
    bin_size = length / out
    cell = torch.arange(out, dtype=start.dtype, device=start.device)
    frac = torch.arange(s, dtype=start.dtype, device=start.device) + 0.5
    pos = ((start[:, None, None] + cell[None, :, None] * bin_size[:, None, None])
           + (frac[None, None, :] * bin_size[:, None, None]) / s)
    valid = ~((pos < -1.0) | (pos > size))
    pos = torch.where(pos <= 0, torch.zeros_like(pos), pos)
    low = pos.long()                                   # (int) of a value >= 0: the floor
    top = low >= size - 1
    low = torch.where(top, torch.full_like(low, size - 1), low)
    high = torch.where(top, low, low + 1)
    pos = torch.where(top, low.to(pos.dtype), pos)
    lw = pos - low.to(pos.dtype)
    hw = 1.0 - lw
    return low, high, lw, hw, valid


def _roi_align_flat(flat: torch.Tensor, batch: int, height: int, width: int, rois: torch.Tensor,
                    out: int, spatial_scale: float, sample_num: int) -> torch.Tensor:
    """RoIAlign of ``rois`` on a channels-last map ``flat [B*H*W, C]``: ``[R, C, out, out]``.

    Every sample value is ``((w1*lt + w2*rt) + w3*lb) + w4*rb`` and every cell
    ``(((v00 + v01) + v10) + v11) / 4`` (samples row-major), each operation rounded once.
    """
    r_count, channels = rois.shape[0], flat.shape[1]
    result = flat.new_empty((r_count, out * out, channels))
    if r_count == 0:
        return result.view(0, out, out, channels).permute(0, 3, 1, 2)
    scale = _f32(spatial_scale, rois)
    bidx = rois[:, 0].long()                           # int roi_batch_ind = rois[n*5]
    _need(bool(((bidx >= 0) & (bidx < batch)).all()),
          f"RoI batch indices must be in [0, {batch}), got {bidx.min().item()}..{bidx.max().item()}")
    ylow, yhigh, ly, hy, yvalid = _axis_samples(rois[:, 2] * scale, (rois[:, 4] + 1) * scale,
                                                height, out, sample_num)
    xlow, xhigh, lx, hx, xvalid = _axis_samples(rois[:, 1] * scale, (rois[:, 3] + 1) * scale,
                                                width, out, sample_num)
    base = bidx * (height * width)
    # axes [R, ph, pw, iy, ix]: y terms vary with (ph, iy), x terms with (pw, ix)
    row_l = (base[:, None, None] + ylow * width)[:, :, None, :, None]
    row_h = (base[:, None, None] + yhigh * width)[:, :, None, :, None]
    col_l, col_h = xlow[:, None, :, None, :], xhigh[:, None, :, None, :]
    hy5, ly5 = hy[:, :, None, :, None], ly[:, :, None, :, None]
    hx5, lx5 = hx[:, None, :, None, :], lx[:, None, :, None, :]
    # the four corners lt, rt, lb, rb with their weights w1 = hy*hx, w2 = hy*lx, w3 = ly*hx, w4 = ly*lx
    idx = torch.stack(torch.broadcast_tensors(row_l + col_l, row_l + col_h, row_h + col_l, row_h + col_h))
    wts = torch.stack(torch.broadcast_tensors(hy5 * hx5, hy5 * lx5, ly5 * hx5, ly5 * lx5))
    valid = yvalid[:, :, None, :, None] & xvalid[:, None, :, None, :]
    ss, cells = sample_num * sample_num, out * out
    # -> [R, sample (iy*S + ix), corner, cell (ph*out + pw)]
    idx = idx.permute(1, 4, 5, 0, 2, 3).reshape(r_count, ss, 4, cells)
    wts = wts.permute(1, 4, 5, 0, 2, 3).reshape(r_count, ss, 4, cells, 1)
    invalid = ~valid.permute(0, 3, 4, 1, 2).reshape(r_count, ss, cells, 1)
    count = float(ss)
    for c0 in range(0, r_count, _ROI_CHUNK):
        sl = slice(c0, min(c0 + _ROI_CHUNK, r_count))
        rc = sl.stop - sl.start
        g = flat.index_select(0, idx[sl].reshape(-1)).view(rc, ss, 4, cells, channels)
        g.mul_(wts[sl])
        val = g[:, :, 0]
        val += g[:, :, 1]
        val += g[:, :, 2]
        val += g[:, :, 3]
        bad = invalid[sl]
        if bool(bad.any()):
            val.masked_fill_(bad, 0.0)                 # bilinear_interpolate returns 0
        acc = result[sl]
        acc.copy_(val[:, 0])
        for k in range(1, ss):
            acc += val[:, k]
        acc /= count
    return result.view(r_count, out, out, channels).permute(0, 3, 1, 2)


def _channels_last(feat: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> contiguous ``[B*H*W, C]`` (numpy's transpose is the faster on CPU)."""
    b, c, h, w = feat.shape
    if feat.device.type == "cpu" and feat.dtype in (torch.float32, torch.float64):
        arr = np.ascontiguousarray(feat.detach().numpy().transpose(0, 2, 3, 1))
        return torch.from_numpy(arr).view(b * h * w, c)
    return feat.detach().permute(0, 2, 3, 1).contiguous().view(b * h * w, c)


def roi_align(feat: torch.Tensor, rois: torch.Tensor, out_size: int = 7, spatial_scale: float = 1.0,
              sample_num: int = 2) -> torch.Tensor:
    """mmdet v0.6 RoIAlign (the CUDA kernel): ``feat [B, C, H, W]``, ``rois [R, 5]`` -> ``[R, C, out, out]``.

    Per RoI: ``start = x1 * s``, ``end = (x2 + 1) * s``, ``width = max(end - start, 0)`` (no
    minimum of 1), ``bin = width / out``; ``sample_num`` x ``sample_num`` samples per cell at
    ``start + p * bin + (i + 0.5) * bin / sample_num``; bilinear reads 0 when ``y < -1`` or
    ``y > H`` (x likewise), ``y <= 0`` reads row 0, ``y_low >= H - 1`` clamps to row ``H - 1``;
    the cell is the mean of its samples (summed row-major, then divided). ``s`` is
    ``spatial_scale`` in the features' dtype; the batch index is ``int(rois[:, 0])``.
    """
    _need(isinstance(feat, torch.Tensor) and feat.dim() == 4,
          f"feat must be a [B, C, H, W] tensor, got {getattr(feat, 'shape', type(feat).__name__)}")
    _check_2d("rois", rois, 5)
    _need(int(out_size) == out_size and out_size > 0, f"out_size must be a positive int, got {out_size}")
    _need(int(sample_num) == sample_num and sample_num > 0,
          f"sample_num must be a positive int (the adaptive 0 is not supported), got {sample_num}")
    _need(rois.dtype == feat.dtype and rois.device == feat.device,
          f"rois and feat must share dtype and device, got {rois.dtype}/{rois.device} and {feat.dtype}/{feat.device}")
    b, _, h, w = feat.shape
    return _roi_align_flat(_channels_last(feat), b, h, w, rois, int(out_size), spatial_scale,
                           int(sample_num)).contiguous()


def multi_level_roi_align(feats: Sequence[torch.Tensor], rois: torch.Tensor, out_size: int = 7,
                          sample_num: int = 2, strides: Sequence[int] = ROI_STRIDES,
                          finest_scale: int = 56) -> torch.Tensor:
    """``SingleRoIExtractor``: each RoI aligned on its level (:func:`map_roi_levels`) with
    ``spatial_scale = 1 / stride``; ``feats`` are P2..P5 ``[B, C, Hl, Wl]``. -> ``[R, C, out, out]``.
    With one map, every RoI is aligned on it (no level mapping), as the source does.
    """
    _need(len(feats) > 0 and len(feats) == len(strides),
          f"feats and strides must have as many entries, got {len(feats)} and {len(strides)}")
    _check_2d("rois", rois, 5)
    if len(feats) == 1:
        return roi_align(feats[0], rois, out_size, 1 / strides[0], sample_num)
    channels = feats[0].shape[1]
    _need(all(isinstance(f, torch.Tensor) and f.dim() == 4 and f.shape[1] == channels
              and f.dtype == rois.dtype and f.device == rois.device for f in feats),
          "feats must be [B, C, H, W] maps with the same C, dtype and device as the rois")
    _need(int(out_size) == out_size and out_size > 0 and int(sample_num) == sample_num
          and sample_num > 0, f"out_size and sample_num must be positive ints, got {out_size}, {sample_num}")
    out_size, sample_num = int(out_size), int(sample_num)
    levels = map_roi_levels(rois, len(feats), finest_scale)
    out = feats[0].new_zeros((rois.shape[0], channels, out_size, out_size))
    for i, (feat, stride) in enumerate(zip(feats, strides)):
        inds = torch.nonzero(levels == i).squeeze(1)
        if inds.numel():
            # the source adds each level's result into zeros: the same values
            out[inds] = _roi_align_flat(_channels_last(feat), feat.shape[0], feat.shape[2],
                                        feat.shape[3], rois[inds], out_size, 1 / stride, sample_num)
    return out


# --------------------------------------------------------------------------- heads' post-processing

def _rank(scores: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Indices of ``scores`` by descending value, ties by ascending index; the first ``k``."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return order if k is None else order[:k]


def multiclass_nms(multi_bboxes: torch.Tensor, multi_scores: torch.Tensor, score_thr: float = 0.05,
                   iou_thr: float = 0.5, max_num: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdet v0.6 ``multiclass_nms``: ``([K, 5] boxes with score, [K] int64 labels)``.

    For each class ``i = 1 .. C-1`` (column 0 is the background): rows with score ``> score_thr``
    (strict, in the scores' dtype), its boxes ``multi_bboxes[:, 4i:4i+4]`` (or the shared 4
    columns), :func:`nms` at ``iou_thr``, label ``i - 1``; the rows are concatenated class by
    class, each class in ascending row order; only when there are more than ``max_num`` they are
    sorted by score (stable, descending) and cut to ``max_num``.
    """
    _check_2d("multi_scores", multi_scores)
    _check_2d("multi_bboxes", multi_bboxes)
    num_classes = multi_scores.shape[1]
    _need(multi_bboxes.shape[0] == multi_scores.shape[0]
          and multi_bboxes.shape[1] in (4, 4 * num_classes),
          f"multi_bboxes must be [N, 4] or [N, 4*{num_classes}], got {tuple(multi_bboxes.shape)}")
    _need(max_num >= 0, f"max_num must be >= 0, got {max_num}")
    thr = _f32(score_thr, multi_scores)
    bboxes, labels = [], []
    for i in range(1, num_classes):
        cls_inds = multi_scores[:, i] > thr
        if not bool(cls_inds.any()):
            continue
        if multi_bboxes.shape[1] == 4:
            _bboxes = multi_bboxes[cls_inds, :]
        else:
            _bboxes = multi_bboxes[cls_inds, i * 4:(i + 1) * 4]
        _scores = multi_scores[cls_inds, i]
        cls_dets, _ = nms(torch.cat([_bboxes, _scores[:, None]], dim=1), iou_thr)
        bboxes.append(cls_dets)
        labels.append(torch.full((cls_dets.shape[0],), i - 1, dtype=torch.long,
                                 device=multi_bboxes.device))
    if not bboxes:
        return (multi_bboxes.new_zeros((0, 5)),
                torch.zeros(0, dtype=torch.long, device=multi_bboxes.device))
    bboxes_t = torch.cat(bboxes)
    labels_t = torch.cat(labels)
    if bboxes_t.shape[0] > max_num:
        inds = _rank(bboxes_t[:, -1], max_num)
        bboxes_t, labels_t = bboxes_t[inds], labels_t[inds]
    return bboxes_t, labels_t


def rpn_proposals(cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
                  anchors: Sequence[torch.Tensor], img_shape: Sequence[int], nms_pre: int = 1000,
                  nms_post: int = 1000, max_num: int = 1000, nms_thr: float = 0.7) -> torch.Tensor:
    """The RPN's proposals of one image (``RPNHead.get_bboxes_single``, ``min_bbox_size`` 0,
    no NMS across levels): ``[n, 5]`` (x1, y1, x2, y2, score), by descending score.

    Per level: logits ``[A, H, W]`` -> ``permute(1, 2, 0)`` -> sigmoid (row ``(y*W + x)*A + a``,
    matching the anchors); only when there are more than ``nms_pre`` (> 0), the ``nms_pre`` best
    (stable ranking); :func:`delta2bbox` (means 0, stds 1) clamped to ``img_shape``; :func:`nms`
    at ``nms_thr``; the first ``nms_post`` rows of its (index-ordered) output. The levels are
    concatenated and the best ``min(max_num, n)`` returned.
    """
    _need(len(cls_scores) == len(bbox_preds) == len(anchors) and len(cls_scores) > 0,
          "cls_scores, bbox_preds and anchors must be non-empty lists of the same length")
    levels = []
    for lvl, (score, pred, anc) in enumerate(zip(cls_scores, bbox_preds, anchors)):
        _need(score.dim() == 3 and pred.dim() == 3 and pred.shape[0] == 4 * score.shape[0]
              and pred.shape[1:] == score.shape[1:],
              f"level {lvl}: cls_score must be [A, H, W] and bbox_pred [4A, H, W], "
              f"got {tuple(score.shape)} and {tuple(pred.shape)}")
        _check_2d(f"anchors[{lvl}]", anc, 4)
        _need(anc.shape[0] == score.numel(),
              f"level {lvl}: {score.numel()} scores but {anc.shape[0]} anchors")
        scores = score.permute(1, 2, 0).reshape(-1).sigmoid()
        deltas = pred.permute(1, 2, 0).reshape(-1, 4)
        if nms_pre > 0 and scores.shape[0] > nms_pre:
            topk = _rank(scores, nms_pre)
            deltas, anc, scores = deltas[topk, :], anc[topk, :], scores[topk]
        proposals = delta2bbox(anc, deltas, (0, 0, 0, 0), (1, 1, 1, 1), img_shape)
        proposals, _ = nms(torch.cat([proposals, scores.unsqueeze(-1)], dim=-1), nms_thr)
        levels.append(proposals[:nms_post, :])
    proposals = torch.cat(levels, 0)
    num = min(max_num, proposals.shape[0])
    return proposals[_rank(proposals[:, 4], num), :]


def bbox_head_detections(rois: torch.Tensor, cls_score: torch.Tensor, bbox_pred: torch.Tensor,
                         img_shape: Sequence[int], scale_factor: float, score_thr: float = 0.05,
                         iou_thr: float = 0.5, max_num: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """The final detections (``BBoxHead.get_det_bboxes``, ``rescale=True``): ``([K, 5], [K] labels)``.

    ``softmax(cls_score)`` over the 81 classes; class-specific :func:`delta2bbox` of
    ``bbox_pred [R, 4*81]`` on ``rois[:, 1:]`` (means 0, stds 0.1, 0.1, 0.2, 0.2) clamped to
    ``img_shape``; divided by ``scale_factor`` (boxes in original-image pixels);
    :func:`multiclass_nms`. Labels are 0-based (class - 1).
    """
    _check_2d("rois", rois, 5)
    _check_2d("cls_score", cls_score)
    _check_2d("bbox_pred", bbox_pred, 4 * cls_score.shape[1])
    _need(rois.shape[0] == cls_score.shape[0] == bbox_pred.shape[0],
          f"rois, cls_score and bbox_pred must have as many rows, got {rois.shape[0]}, "
          f"{cls_score.shape[0]} and {bbox_pred.shape[0]}")
    scores = torch.softmax(cls_score, dim=1)
    bboxes = delta2bbox(rois[:, 1:], bbox_pred, (0, 0, 0, 0), BBOX_HEAD_STDS, img_shape)
    bboxes = bboxes / scale_factor
    return multiclass_nms(bboxes, scores, score_thr, iou_thr, max_num)
