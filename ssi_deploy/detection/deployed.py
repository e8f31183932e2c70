"""The official test path batched into fixed-size tensors and standard ONNX operators.

What ``FasterRCNN`` runs under torch.export (``postprocess="deploy"``): per image and level the
RPN keeps the top ``nms_pre`` anchors (levels with fewer are padded with score -1, which the
NMS score threshold drops: the same candidates as the official "top-k only when more"),
one NonMaxSuppression node handles every (image, level) pair, a dense score table and TopK
replace the data-dependent concatenation, every RoI is aligned on all four levels and the
one its level selects is kept, and one NonMaxSuppression node over (image, class) pairs does
the multiclass NMS. The legacy conventions map exactly onto the ONNX ops:

- +1 areas (NMS): the boxes are given with ends x2 + 1, y2 + 1;
- legacy RoIAlign (end (x2 + 1) * s, no minimum size): ``half_pixel`` mode with the RoI
  shifted by half a feature pixel, x + 0.5 * stride (the op subtracts 0.5 after scaling);
- RoI levels: comparisons with the level boundaries instead of floor(log2(.));
- ``gx = px + pw * dx`` stays ``torch.addcmul`` (one rounding in PyTorch); ONNX Runtime
  computes it as Mul + Add (two roundings, at most 1 ulp of the box coordinate apart).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import deploy_ops  # noqa: F401  (registers torch.ops.ssi_detect.*)

ops = torch.ops.ssi_detect
PAD_SCORE = -1.0  # score of padding entries; the NMS threshold below drops them
PAD_THRESHOLD = -0.5  # RPN scores are sigmoids in [0, 1]: only padding falls below
DELTA_CLIP = abs(math.log(16 / 1000))  # mmdet 0.6 delta2bbox wh_ratio_clip


def grid_anchors(base: torch.Tensor, stride: int, fh, fw) -> torch.Tensor:
    """[fh * fw * A, 4] anchors, index (y * fw + x) * A + a (mmdet 0.6 AnchorGenerator)."""
    sx = torch.arange(fw, device=base.device).to(base.dtype) * stride
    sy = torch.arange(fh, device=base.device).to(base.dtype) * stride
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], -1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


def decode(anchors: torch.Tensor, deltas: torch.Tensor, stds, max_hw: torch.Tensor):
    """mmdet 0.6 delta2bbox (means 0) on [..., 4] tensors; ``max_hw`` [..., 2] broadcasts
    to the boxes and clamps x to [0, w - 1], y to [0, h - 1]."""
    d = deltas * deltas.new_tensor(stds)
    dx, dy, dw, dh = d.unbind(-1)
    dw = dw.clamp(-DELTA_CLIP, DELTA_CLIP)
    dh = dh.clamp(-DELTA_CLIP, DELTA_CLIP)
    px = (anchors[..., 0] + anchors[..., 2]) * 0.5
    py = (anchors[..., 1] + anchors[..., 3]) * 0.5
    pw = anchors[..., 2] - anchors[..., 0] + 1.0
    ph = anchors[..., 3] - anchors[..., 1] + 1.0
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = torch.addcmul(px, pw, dx)
    gy = torch.addcmul(py, ph, dy)
    x1 = gx - gw * 0.5 + 0.5
    y1 = gy - gh * 0.5 + 0.5
    x2 = gx + gw * 0.5 - 0.5
    y2 = gy + gh * 0.5 - 0.5
    xmax, ymax = max_hw[..., 1] - 1.0, max_hw[..., 0] - 1.0
    x1, x2 = (torch.minimum(v.clamp(min=0.0), xmax) for v in (x1, x2))
    y1, y2 = (torch.minimum(v.clamp(min=0.0), ymax) for v in (y1, y2))
    return torch.stack([x1, y1, x2, y2], -1)


def _nms_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) inclusive -> ONNX (y1, x1, y2 + 1, x2 + 1): the +1 areas."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([y1, x1, y2 + 1.0, x2 + 1.0], -1)


def _kept_scores(sel: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Dense [N, M] table: the score of each box NMS kept, PAD_SCORE elsewhere."""
    n, _, m = scores.shape
    table = torch.full((n, m), PAD_SCORE, dtype=scores.dtype, device=scores.device)
    vals = scores[sel[:, 0], sel[:, 1], sel[:, 2]]
    return table.index_put((sel[:, 0], sel[:, 2]), vals)


def rpn_proposals(model, feats, info):
    """[B, max_num, 4] proposals and their scores (PAD_SCORE where an image has fewer)."""
    cfg = model.cfg
    pre = cfg.nms_pre
    b = info.shape[0]
    boxes, scores = [], []
    for lvl, ((cls, reg), stride) in enumerate(zip(model.rpn_head(feats), cfg.strides)):
        fh, fw = cls.shape[-2], cls.shape[-1]
        s = cls.permute(0, 2, 3, 1).reshape(b, -1).sigmoid()
        d = reg.permute(0, 2, 3, 1).reshape(b, -1, 4)
        a = grid_anchors(model.base_anchors[lvl].float(), stride, fh, fw)  # fp16 exports too
        s = torch.cat([s, s.new_full((b, pre), PAD_SCORE)], 1)
        d = torch.cat([d, d.new_zeros((b, pre, 4))], 1)
        a = torch.cat([a, a.new_zeros((pre, 4))], 0)
        top, idx = s.topk(pre, dim=1)
        d = torch.gather(d, 1, idx[..., None].expand(-1, -1, 4))
        boxes.append(decode(a[idx], d, (1.0, 1.0, 1.0, 1.0), info[:, None, :2]))
        scores.append(top)
    levels = len(boxes)
    boxes = torch.stack(boxes, 1)  # [B, L, pre, 4]
    scores = torch.stack(scores, 1).reshape(b * levels, 1, pre)
    sel = ops.nms(_nms_boxes(boxes.reshape(b * levels, pre, 4)), scores, cfg.nms_post,
                  cfg.rpn_nms, PAD_THRESHOLD)
    kept = _kept_scores(sel, scores).reshape(b, levels * pre)
    top, idx = kept.topk(cfg.max_num, dim=1)
    props = torch.gather(boxes.reshape(b, levels * pre, 4), 1,
                         idx[..., None].expand(-1, -1, 4))
    return props, top


def _level_bound(k: int) -> float:
    """The least float32 v with log2(v) >= k in PyTorch's float32 log2 (just below 2**k for
    k = 3, where log2 of the largest float below 8 rounds up to exactly 3.0)."""
    v = torch.tensor(2.0 ** k)
    while True:
        below = torch.nextafter(v, torch.tensor(0.0))
        if torch.log2(below) < k:
            return float(v)
        v = below


LEVEL_BOUNDS = tuple(_level_bound(k) for k in (1, 2, 3))


def roi_levels(rois: torch.Tensor, finest_scale: int) -> torch.Tensor:
    """floor(log2(sqrt(area+1) / finest + 1e-6)) clamped to 0..3, as boundary comparisons
    (with the float32 bounds at which log2 reaches 1, 2, 3)."""
    scale = torch.sqrt((rois[:, 2] - rois[:, 0] + 1.0) * (rois[:, 3] - rois[:, 1] + 1.0))
    v = scale / finest_scale + 1e-6
    return sum((v >= bound).long() for bound in LEVEL_BOUNDS)


def multi_level_roi_align(model, feats, rois, batch_idx):
    cfg = model.cfg
    lvl = roi_levels(rois, cfg.finest_scale)
    out = None
    for k, stride in enumerate(cfg.strides[:4]):
        half = 0.5 * stride  # half_pixel subtracts 0.5 after scaling by 1 / stride
        shifted = torch.stack([rois[:, 0] + half, rois[:, 1] + half,
                               rois[:, 2] + 1.0 + half, rois[:, 3] + 1.0 + half], 1)
        aligned = ops.roi_align(feats[k], shifted, batch_idx, cfg.roi_size, cfg.roi_size,
                                cfg.sample_num, 1.0 / stride)
        pick = (lvl == k)[:, None, None, None]
        out = aligned if out is None else torch.where(pick, aligned, out)
    return out


def detect(model, feats, info):
    """boxes [B, K, 4], scores [B, K], labels [B, K], num_detections [B] (K = max_per_img)."""
    cfg = model.cfg
    b = info.shape[0]
    props, prop_scores = rpn_proposals(model, feats, info)
    p = props.shape[1]
    rois = props.reshape(b * p, 4)
    batch_idx = torch.arange(b, device=rois.device).repeat_interleave(p)
    cls, reg = model.bbox_head(multi_level_roi_align(model, feats, rois, batch_idx))
    classes = cls.shape[1] - 1
    probs = F.softmax(cls, dim=1)[:, 1:] * (prop_scores.reshape(-1, 1) > PAD_THRESHOLD)
    img = info[batch_idx]  # [R, 3]
    boxes = decode(rois[:, None, :], reg.reshape(-1, classes + 1, 4), cfg.bbox_stds,
                   img[:, None, :2])[:, 1:]
    boxes = boxes / img[:, 2, None, None]  # rescale before NMS: NMS in original pixels
    # one NMS batch per (image, class)
    nms_boxes = boxes.reshape(b, p, classes, 4).permute(0, 2, 1, 3).reshape(b * classes, p, 4)
    nms_scores = probs.reshape(b, p, classes).permute(0, 2, 1).reshape(b * classes, 1, p)
    sel = ops.nms(_nms_boxes(nms_boxes), nms_scores, cfg.max_per_img, cfg.nms_iou,
                  cfg.score_thr)
    kept = _kept_scores(sel, nms_scores).reshape(b, classes * p)
    top, idx = kept.topk(cfg.max_per_img, dim=1)
    valid = top > 0.0
    labels = torch.where(valid, idx // p, torch.full_like(idx, -1))
    det = torch.gather(nms_boxes.reshape(b, classes * p, 4), 1, idx[..., None].expand(-1, -1, 4))
    det = torch.where(valid[..., None], det, torch.zeros_like(det))
    top = torch.where(valid, top, torch.zeros_like(top))
    return det, top, labels, valid.long().sum(1)
