"""The two detector ops that export as standard ONNX ops: NonMaxSuppression and RoiAlign.

The deployable detector (``models/faster_rcnn.py``, ``postprocess="deploy"``) is written with
these ops so that ``torch.export`` sees one node each and the exporter emits the ONNX operator
itself (TensorRT's parser and ONNX Runtime import both natively), in the manner of mmdeploy's
rewrites. Their eager implementations follow the ONNX operator semantics (as ONNX Runtime
computes them), not the legacy mmdet ones: the detector maps the legacy conventions onto them
(box ends + 1 for the +1 areas, RoI coordinates for ``half_pixel``), and the tests check that
the mapping reproduces the official results.

- ``nms(boxes, scores, max_output, iou_threshold, score_threshold)``: ONNX NonMaxSuppression
  with ``center_point_box=0``; boxes [N, M, 4] as (y1, x1, y2, x2), scores [N, C, M]; returns
  the selected [K, 3] (batch, class, box) in ONNX order (batch, then class, then descending
  score). A box is kept when its score > ``score_threshold`` and suppressed when its IoU with
  a kept box is > ``iou_threshold`` (areas without +1).
- ``roi_align(x, rois, batch_indices, output_height, output_width, sampling_ratio,
  spatial_scale)``: ONNX RoiAlign (opset 16), ``mode="avg"``,
  ``coordinate_transformation_mode="half_pixel"`` (no forced 1x1 minimum, unlike
  ``output_half_pixel``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NAMESPACE = "ssi_detect"


# --------------------------------------------------------------------------------------------
# NonMaxSuppression

def _nms_eager(boxes: torch.Tensor, scores: torch.Tensor, max_output: int,
               iou_threshold: float, score_threshold: float) -> torch.Tensor:
    b = boxes.detach().float().cpu().numpy()
    s = scores.detach().float().cpu().numpy()
    rows: list[tuple[int, int, int]] = []
    for n in range(s.shape[0]):
        # corners in either order, as ONNX Runtime normalises them
        y1 = np.minimum(b[n, :, 0], b[n, :, 2])
        y2 = np.maximum(b[n, :, 0], b[n, :, 2])
        x1 = np.minimum(b[n, :, 1], b[n, :, 3])
        x2 = np.maximum(b[n, :, 1], b[n, :, 3])
        area = (x2 - x1) * (y2 - y1)
        for c in range(s.shape[1]):
            cand = np.nonzero(s[n, c] > np.float32(score_threshold))[0]
            order = cand[np.argsort(-s[n, c, cand], kind="stable")]
            kept: list[int] = []
            for i in order:
                if len(kept) >= max_output:
                    break
                if kept:
                    k = np.asarray(kept)
                    iw = np.minimum(x2[k], x2[i]) - np.maximum(x1[k], x1[i])
                    ih = np.minimum(y2[k], y2[i]) - np.maximum(y1[k], y1[i])
                    inter = iw * ih
                    union = area[k] + area[i] - inter
                    with np.errstate(divide="ignore", invalid="ignore"):
                        iou = inter / union
                    live = (iw > 0) & (ih > 0) & (area[k] > 0) & (area[i] > 0) & (union > 0)
                    if np.any(live & (iou > np.float32(iou_threshold))):
                        continue
                kept.append(int(i))
            rows.extend((n, c, i) for i in kept)
    out = torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)
    return out.to(boxes.device)


nms = torch.library.custom_op(f"{NAMESPACE}::nms", _nms_eager, mutates_args=(),
                              schema="(Tensor boxes, Tensor scores, int max_output, "
                                     "float iou_threshold, float score_threshold) -> Tensor")


@nms.register_fake
def _(boxes, scores, max_output, iou_threshold, score_threshold):
    k = torch.library.get_ctx().new_dynamic_size()  # data-dependent number of kept boxes
    return boxes.new_empty((k, 3), dtype=torch.int64)


def _nms_onnx(boxes, scores, max_output: int, iou_threshold: float, score_threshold: float):
    from onnxscript import opset18 as op

    return op.NonMaxSuppression(boxes, scores, op.Constant(value_ints=[max_output]),
                                op.Constant(value_floats=[iou_threshold]),
                                op.Constant(value_floats=[score_threshold]), center_point_box=0)


# --------------------------------------------------------------------------------------------
# RoiAlign (half_pixel, avg)

def _sample_positions(start: torch.Tensor, size: torch.Tensor, bins: int, grid: int):
    """[R, bins * grid] sample coordinates along one axis, in ONNX Runtime's evaluation
    order: roi_start + p * bin_size + (i + 0.5) * bin_size / grid."""
    bin_size = size / bins
    p = torch.arange(bins, dtype=start.dtype, device=start.device)
    i = torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5
    pos = ((start[:, None, None] + p[None, :, None] * bin_size[:, None, None])
           + (i[None, None, :] * bin_size[:, None, None]) / grid)
    return pos.reshape(start.shape[0], bins * grid)


def _roi_align_eager(x: torch.Tensor, rois: torch.Tensor, batch_indices: torch.Tensor,
                     output_height: int, output_width: int, sampling_ratio: int,
                     spatial_scale: float) -> torch.Tensor:
    """The ONNX RoiAlign bilinear rule is grid_sample's with border padding (a sample in
    (-1, 0] reads the first row, one at or past H - 1 the last) times zero outside
    [-1, H] x [-1, W]; the mean over each bin's samples is an average pool. grid_sample's
    normalised coordinates round-trip within a few ulps of the position."""
    n, c, h, w = x.shape
    r = rois.shape[0]
    g = sampling_ratio
    out = x.new_zeros((r, c, output_height, output_width))
    if r == 0:
        return out
    xf, rf = x.float(), rois.float()
    start_x, start_y = rf[:, 0] * spatial_scale - 0.5, rf[:, 1] * spatial_scale - 0.5
    width = rf[:, 2] * spatial_scale - 0.5 - start_x  # half_pixel: no forced minimum of 1
    height = rf[:, 3] * spatial_scale - 0.5 - start_y
    ys = _sample_positions(start_y, height, output_height, g)  # [R, oh * g]
    xs = _sample_positions(start_x, width, output_width, g)  # [R, ow * g]
    valid = (((ys >= -1.0) & (ys <= h))[:, :, None] & ((xs >= -1.0) & (xs <= w))[:, None, :])

    def norm(pos, size):  # pixel index -> grid_sample's [-1, 1] (align_corners=True)
        return pos * (2.0 / (size - 1)) - 1.0 if size > 1 else torch.zeros_like(pos)

    grid = torch.stack(torch.broadcast_tensors(norm(xs, w)[:, None, :], norm(ys, h)[:, :, None]),
                       -1)  # [R, oh * g, ow * g, 2] as (x, y)
    b = batch_indices.long()
    for img in torch.unique(b).tolist():
        sel = torch.nonzero(b == img).flatten()
        k = sel.numel()
        samples = F.grid_sample(xf[img:img + 1], grid[sel].reshape(1, k * output_height * g,
                                                                   output_width * g, 2),
                                mode="bilinear", padding_mode="border", align_corners=True)
        samples = samples * valid[sel].reshape(1, 1, k * output_height * g, output_width * g)
        pooled = F.avg_pool2d(samples, g)  # RoI boundaries fall on pooling windows
        out[sel] = pooled.reshape(c, k, output_height, output_width).transpose(0, 1).to(out.dtype)
    return out


roi_align = torch.library.custom_op(
    f"{NAMESPACE}::roi_align", _roi_align_eager, mutates_args=(),
    schema="(Tensor x, Tensor rois, Tensor batch_indices, int output_height, int output_width, "
           "int sampling_ratio, float spatial_scale) -> Tensor")


@roi_align.register_fake
def _(x, rois, batch_indices, output_height, output_width, sampling_ratio, spatial_scale):
    return x.new_empty((rois.shape[0], x.shape[1], output_height, output_width))


def _roi_align_onnx(x, rois, batch_indices, output_height: int, output_width: int,
                    sampling_ratio: int, spatial_scale: float):
    from onnxscript import opset18 as op

    return op.RoiAlign(x, rois, batch_indices, coordinate_transformation_mode="half_pixel",
                       mode="avg", output_height=output_height, output_width=output_width,
                       sampling_ratio=sampling_ratio, spatial_scale=spatial_scale)


def translation_table() -> dict:
    """Entries for ``torch.onnx.export``'s ``custom_translation_table``."""
    ns = getattr(torch.ops, NAMESPACE)
    return {ns.nms.default: _nms_onnx, ns.roi_align.default: _roi_align_onnx}
