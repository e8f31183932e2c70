"""Faster R-CNN + FPN (mmdetection v0.6), the released SSI detectors: ``faster_rcnn_<backbone>``.

``FasterRCNN`` is an ``SSINetwork`` with an FPN and the two heads, so the state dict keys are
the official ones (``backbone.*``, ``neck.*``, ``rpn_head.*``, ``bbox_head.*``) and every
control of the backbone (sampling, forced density, mask replay, densities) works unchanged.

Two post-processing paths compute the same detections (``../shared/docs/detector-spec.md``):

- ``official``: the mmdet 0.6 test path, image by image (``detection/legacy.py``); the
  reference every export is validated against, and what ``detect --checkpoint`` runs.
- ``deploy``: the same test path batched into fixed-size tensors and the standard ONNX
  operators (TopK, NonMaxSuppression, RoiAlign, ScatterND, Gather), so that an ONNX file or a
  TensorRT engine has no data-dependent output; torch.export always takes this one.

Both return ``boxes`` [B, 100, 4] (x1, y1, x2, y2 in original-image pixels, legacy inclusive
convention), ``scores`` [B, 100], ``labels`` [B, 100] (0..79; -1 in empty slots) and
``num_detections`` [B], detections sorted by descending score; masks follow when exposed.
The second input ``image_info`` [B, 3] holds (resized height, resized width, scale factor)
of each image: boxes clamp to the resized image and are divided by the scale factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SSIError
from .network import SSINetwork, check_fpn_input
from .registry import ArchSpec

OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")
OUTPUT_ROLES = dict(zip(OUTPUT_NAMES, ("boxes", "scores", "labels", "count")))
INFO_INPUT = "image_info"


@dataclass(frozen=True)
class TestConfig:
    """The official test settings (cfg:36-58, 103-111 of the sparse configs)."""

    strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    anchor_scales: tuple[float, ...] = (8.0,)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    nms_pre: int = 1000
    nms_post: int = 1000
    max_num: int = 1000
    rpn_nms: float = 0.7
    finest_scale: int = 56
    roi_size: int = 7
    sample_num: int = 2
    bbox_stds: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    score_thr: float = 0.05
    nms_iou: float = 0.5
    max_per_img: int = 100
    num_classes: int = 81  # background + 80 COCO classes
    test_scale: tuple[int, int] = (1667, 1000)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 objectness (sigmoid, one per anchor) and 1x1 deltas."""

    def __init__(self, channels: int = 256, num_anchors: int = 3):
        super().__init__()
        self.rpn_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(channels, 4 * num_anchors, 1)

    def forward(self, feats):
        outs = []
        for f in feats:
            t = F.relu(self.rpn_conv(f))
            outs.append((self.rpn_cls(t), self.rpn_reg(t)))
        return outs


class BBoxHead(nn.Module):
    """mmdet 0.6 SharedFCBBoxHead: 256*7*7 -> fc 1024 -> fc 1024 -> 81 scores, 324 deltas."""

    def __init__(self, in_features: int = 256 * 7 * 7, fc: int = 1024, num_classes: int = 81):
        super().__init__()
        self.shared_fcs = nn.ModuleList([nn.Linear(in_features, fc), nn.Linear(fc, fc)])
        self.fc_cls = nn.Linear(fc, num_classes)
        self.fc_reg = nn.Linear(fc, 4 * num_classes)

    def forward(self, x):
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class FasterRCNN(SSINetwork):
    """Backbone + FPN + RPN head + box head; ``forward(image, image_info)`` -> detections."""

    def __init__(self, spec: ArchSpec, cfg: TestConfig | None = None):
        if not spec.detector:
            raise SSIError(f"{spec.name} is a backbone; the detector is faster_rcnn_{spec.name}")
        super().__init__(spec, with_fpn=True)
        self.cfg = cfg or TestConfig()
        self.rpn_head = RPNHead(256, len(self.cfg.anchor_scales) * len(self.cfg.anchor_ratios))
        self.bbox_head = BBoxHead(256 * self.cfg.roi_size ** 2, 1024, self.cfg.num_classes)
        self.postprocess = "official"
        from ..detection import legacy
        self.register_buffer("base_anchors", torch.stack(
            [legacy.anchor_base(s, self.cfg.anchor_scales, self.cfg.anchor_ratios)
             for s in self.cfg.strides]), persistent=False)

    # -- description ------------------------------------------------------------------------
    # modules whose parameters stay float32 in an fp16 export (box coordinates need float32)
    float32_modules = ("rpn_head", "bbox_head")
    # least height/width of a dynamic-shape export: P6 (stride 64) at least 2 wide, or
    # torch.export freezes its size-1 dimensions
    min_dynamic_side = 96

    @property
    def is_detector(self) -> bool:
        return True

    @property
    def feature_names(self) -> list[str]:
        return list(OUTPUT_NAMES)

    @property
    def input_names(self) -> list[str]:
        return ["image", INFO_INPUT]

    @property
    def output_roles(self) -> dict[str, str]:
        """Detection output name -> role (the manifest's ``role``)."""
        return dict(OUTPUT_ROLES)

    def describe(self) -> dict:
        d = super().describe()
        d["detector"] = {"postprocess": self.postprocess, **self.cfg.to_dict()}
        return d

    def set_postprocess(self, mode: str) -> "FasterRCNN":
        if mode not in ("official", "deploy"):
            raise SSIError(f"post-processing must be 'official' or 'deploy', got {mode!r}")
        self.postprocess = mode
        return self

    def example_inputs(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The export's example inputs for ``image``: the whole (unpadded) image at scale 1."""
        return image, default_image_info(image)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, image: torch.Tensor, image_info: torch.Tensor | None = None):
        exporting = torch.compiler.is_exporting()
        if not exporting:
            check_fpn_input(image.shape[-2], image.shape[-1])
        if image_info is None:
            image_info = default_image_info(image)
        feats, masks = self.backbone(image)
        feats = [f.float() for f in self.neck(feats)]  # the heads compute in float32
        self._last_masks = [m.detach() for m in masks]
        info = image_info.float()
        if exporting or self.postprocess == "deploy":
            dets = self._deploy(feats, info)
        else:
            dets = self._official(feats, info)
        if self.expose_masks:
            return tuple(dets) + tuple(masks)
        return tuple(dets)

    # official: image by image, the mmdet 0.6 functions
    def _official(self, feats, info):
        from ..detection import legacy
        cfg = self.cfg
        rpn = self.rpn_head(feats)
        results = []
        for i in range(feats[0].shape[0]):
            h, w, sf = (float(v) for v in info[i])
            img_shape = (int(round(h)), int(round(w)))
            anchors = [legacy.grid_anchors(self.base_anchors[k].float(), s, f.shape[-2],
                                           f.shape[-1])
                       for k, (s, f) in enumerate(zip(cfg.strides, feats))]
            props = legacy.rpn_proposals([c[i] for c, _ in rpn], [r[i] for _, r in rpn], anchors,
                                         img_shape, nms_pre=cfg.nms_pre, nms_post=cfg.nms_post,
                                         max_num=cfg.max_num, nms_thr=cfg.rpn_nms)
            rois = torch.cat([props.new_full((props.shape[0], 1), float(i)), props[:, :4]], 1)
            roi_feats = legacy.multi_level_roi_align(feats[:4], rois)
            cls, reg = self.bbox_head(roi_feats)
            dets, labels = legacy.bbox_head_detections(
                rois, cls, reg, img_shape, sf, score_thr=cfg.score_thr, iou_thr=cfg.nms_iou,
                max_num=cfg.max_per_img)
            results.append((dets, labels))
        return pack_detections(results, cfg.max_per_img, feats[0].device)

    # deploy: batched, fixed sizes, standard ONNX ops
    def _deploy(self, feats, info):
        from ..detection import deployed
        return deployed.detect(self, feats, info)


def default_image_info(image: torch.Tensor) -> torch.Tensor:
    """(height, width, 1.0) of the whole input, for every image of the batch."""
    row = torch.tensor([image.shape[-2], image.shape[-1], 1.0], dtype=torch.float32,
                       device=image.device)
    return row.expand(image.shape[0], 3).clone()


def pack_detections(results, max_per_img: int, device=None):
    """Per-image (dets [K, 5], labels [K]) -> the fixed-size outputs, by descending score."""
    n = len(results)
    boxes = torch.zeros((n, max_per_img, 4), device=device)
    scores = torch.zeros((n, max_per_img), device=device)
    labels = torch.full((n, max_per_img), -1, dtype=torch.int64, device=device)
    count = torch.zeros((n,), dtype=torch.int64, device=device)
    for i, (dets, lab) in enumerate(results):
        order = torch.sort(dets[:, 4], descending=True, stable=True).indices[:max_per_img]
        k = order.numel()
        boxes[i, :k] = dets[order, :4]
        scores[i, :k] = dets[order, 4]
        labels[i, :k] = lab[order]
        count[i] = k
    return boxes, scores, labels, count
