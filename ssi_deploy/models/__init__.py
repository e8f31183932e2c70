"""SSI and dense ResNet models and their Faster R-CNN detectors by registry name:
``create_model("sparse_resnet101_dcn")``, ``create_model("faster_rcnn_sparse_resnet101_dcn")``."""

from __future__ import annotations

import logging
from pathlib import Path

from .checkpoint import LoadReport, detect_arch, load_checkpoint, read_checkpoint
from .faster_rcnn import FasterRCNN
from .init import random_init
from .network import NORMALIZATION, SSINetwork
from .registry import ArchSpec, dense_counterpart, get_arch, list_models

__all__ = ["create_model", "dense_twin", "build_network", "list_models", "get_arch",
           "dense_counterpart", "SSINetwork", "FasterRCNN", "NORMALIZATION", "load_checkpoint",
           "read_checkpoint", "detect_arch", "LoadReport"]

log = logging.getLogger("ssi_deploy")


def build_network(spec: ArchSpec, with_fpn: bool = False) -> SSINetwork:
    """The untrained module of ``spec``: a detector (always with its FPN) or a backbone."""
    return FasterRCNN(spec) if spec.detector else SSINetwork(spec, with_fpn)


def create_model(arch: str, with_fpn: bool = False, checkpoint: str | Path | None = None,
                 sampling: str = "threshold", seed: int = 0, init_seed: int = 0,
                 norm_eval: bool = True, frozen_stages: int = 0) -> SSINetwork:
    """Build ``arch`` from ``checkpoint`` or from seeded random weights, ready for inference:
    eval mode, BatchNorm folded (``model.train()`` unfolds it).

    ``norm_eval`` and ``frozen_stages`` set the backbone's training behaviour, by default the
    official one: every backbone BatchNorm stays in eval mode in ``model.train()`` and the stem
    is frozen. ``frozen_stages=k`` also freezes stages 1..k; ``norm_eval=False,
    frozen_stages=-1`` trains all BatchNorm statistics and every parameter. A detector arch
    (``faster_rcnn_*``) always has its FPN; ``with_fpn`` is ignored for it."""
    from .resnet import check_training_options
    check_training_options(norm_eval, frozen_stages)
    model = build_network(get_arch(arch), with_fpn)
    model.backbone.set_training_options(norm_eval=norm_eval, frozen_stages=frozen_stages)
    model.set_sampling(sampling, seed)
    if checkpoint is not None:
        model.load_report = load_checkpoint(model, checkpoint)
    else:
        random_init(model, init_seed)
        model.init_info = f"random seed {init_seed}"
        model.load_report = None
        log.info("%s: no checkpoint given, using seeded random weights (seed %d)", arch, init_seed)
    return model.eval().fuse_for_inference()


def dense_twin(model: SSINetwork) -> SSINetwork:
    """The dense network with the same weights (SSI-only parameters dropped), in eval mode."""
    twin = build_network(get_arch(model.spec.dense_name), model.with_fpn)
    from .checkpoint import SSI_ONLY
    sd = {k: v for k, v in model.state_dict().items() if not any(s in k for s in SSI_ONLY)}
    twin.load_state_dict(sd, strict=True)
    twin.init_info = model.init_info
    if getattr(model, "is_detector", False):
        twin.set_postprocess(model.postprocess)
    return twin.eval().fuse_for_inference()
