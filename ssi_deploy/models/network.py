"""SSINetwork: backbone (+ optional FPN) with the controls that deployment needs."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SSIError
from ..ops import contract as C
from .blocks import SSIBottleneck
from .folding import fold_conv_bn
from .fpn import FPN
from .registry import ArchSpec
from .resnet import STAGE_BLOCKS, ResNet

# Input normalisation of the official models (RGB, 0..255 input).
NORMALIZATION = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "rgb": True}


def parse_init_info(text: str) -> tuple[str, str | int] | None:
    """``SSINetwork.init_info`` -> ("checkpoint", sha256 hex) or ("random", seed); None if
    the text is neither (e.g. "untrained")."""
    text = (text or "").strip()
    if text.startswith("checkpoint sha256:"):
        return "checkpoint", text.split(":", 1)[1].strip().lower()
    if text.startswith("random seed "):
        try:
            return "random", int(text.split()[-1])
        except ValueError:
            return None
    return None


def check_fpn_input(h: int, w: int) -> None:
    """The FPN (mmdet 0.6) upsamples by exactly 2: inputs are padded to a multiple of 32."""
    if h % 32 or w % 32:
        raise SSIError(f"input {h}x{w} does not fit the FPN: height and width must be multiples "
                       "of 32 (pad the image, as the official pipeline does)")


def sampling_layer_names(spec: ArchSpec) -> list[str]:
    """The sampling layers of an architecture, in network order: layer{L}.{b}.mask{1,2}
    (every block of a sparse backbone is an SSI block; a dense one has none)."""
    if not spec.sparse:
        return []
    return [f"layer{i + 1}.{b}.mask{k}" for i, n in enumerate(STAGE_BLOCKS[spec.depth])
            for b in range(n) for k in (1, 2)]


def mask_output_names(spec: ArchSpec) -> list[str]:
    """The mask output of each sampling layer: mask_layer{L}_{b}_mask{1,2}."""
    return [f"mask_{n.replace('.', '_')}" for n in sampling_layer_names(spec)]


class SSINetwork(nn.Module):
    """Backbone outputs c2..c5, or p2..p6 with the FPN neck; masks appended on request."""

    def __init__(self, spec: ArchSpec, with_fpn: bool = False):
        super().__init__()
        self.spec = spec
        self.backbone = ResNet(spec.depth, spec.sparse, spec.dcn)
        self.neck = FPN() if with_fpn else None
        self.expose_masks = False
        self.init_info = "untrained"
        self.sampling = "threshold"
        self.seed = 0
        self.forced_density: float | None = None
        self._last_masks: list[torch.Tensor] = []

    # -- description ------------------------------------------------------------------------
    @property
    def arch(self) -> str:
        return self.spec.name

    @property
    def with_fpn(self) -> bool:
        return self.neck is not None

    @property
    def ssi_blocks(self) -> list[SSIBottleneck]:
        return [b for b in self.backbone.blocks if isinstance(b, SSIBottleneck)]

    @property
    def sampling_layers(self) -> list[str]:
        """Names of the sampling layers, in order: layer{L}.{b}.mask{1,2}."""
        return sampling_layer_names(self.spec)

    @property
    def feature_names(self) -> list[str]:
        return [f"p{i}" for i in range(2, 7)] if self.with_fpn else [f"c{i}" for i in range(2, 6)]

    @property
    def mask_names(self) -> list[str]:
        return mask_output_names(self.spec)

    @property
    def output_names(self) -> list[str]:
        return self.feature_names + (self.mask_names if self.expose_masks else [])

    def describe(self) -> dict:
        return {"arch": self.arch, "with_fpn": self.with_fpn, "sparse": self.spec.sparse,
                "sampling": self.sampling, "seed": self.seed,
                "forced_density": self.forced_density, "normalization": NORMALIZATION,
                "init": self.init_info, "outputs": self.output_names,
                "sampling_layers": len(self.sampling_layers)}

    # -- controls ---------------------------------------------------------------------------
    def set_sampling(self, mode: str, seed: int = 0) -> "SSINetwork":
        if mode not in C.SAMPLING_MODES:
            raise SSIError(f"unknown sampling mode {mode!r}; choose one of {list(C.SAMPLING_MODES)}")
        self.sampling, self.seed = mode, int(seed)
        for b in self.ssi_blocks:
            b.sampling_mode, b.seed = C.SAMPLING_MODES[mode], int(seed)
        return self

    def set_forced_density(self, density: float | None) -> "SSINetwork":
        if density is not None and not 0.0 < density <= 1.0:
            raise SSIError(f"density must be in (0, 1], got {density}")
        self.forced_density = density
        for b in self.ssi_blocks:
            b.forced_density = density
        return self

    def set_execution(self, execution: str) -> "SSINetwork":
        """'sparse' (SSI ops, the deployment path) or 'official' (dense-masked reference)."""
        if execution not in ("sparse", "official"):
            raise SSIError(f"execution must be 'sparse' or 'official', got {execution!r}")
        for b in self.ssi_blocks:
            b.execution = execution
        return self

    @torch.no_grad()
    def fuse_for_inference(self) -> "SSINetwork":
        """Fold every BatchNorm into its convolution (eval forwards then use the folded weights)."""
        bb = self.backbone
        bb.stem_fused = fold_conv_bn(bb.conv1.weight, bb.bn1)
        for b in bb.blocks:
            b.fused = b.fold_bn()
        return self

    def unfuse(self) -> None:
        self.backbone.stem_fused = None
        for b in self.backbone.blocks:
            b.fused = None

    @property
    def is_fused(self) -> bool:
        return self.backbone.stem_fused is not None

    def _refolding(self, change):
        """Run ``change`` of the weights; folded weights are computed again afterwards."""
        fused = self.is_fused
        self.unfuse()
        out = change()
        if fused:
            self.fuse_for_inference()
        return out

    def _apply(self, fn, recurse=True):
        # .to() / .half() / .cuda() reach parameters and buffers only, not the folded weights.
        return self._refolding(lambda: super(SSINetwork, self)._apply(fn, recurse))

    def train(self, mode: bool = True):
        if mode:
            self.unfuse()  # folded weights would go stale as soon as the weights change
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self._refolding(lambda: super(SSINetwork, self).load_state_dict(
            state_dict, strict=strict, assign=assign))

    # -- forward ----------------------------------------------------------------------------
    def set_mask_override(self, masks: list[torch.Tensor] | None,
                          record_decisions: bool = False) -> "SSINetwork":
        """Use these masks (one per sampling layer, in order) instead of sampling.

        Validation uses it to replay another backend's masks: features are then compared given
        identical masks, so that a near-threshold flip (which cascades through a deep network)
        is judged as a mask decision, not as feature error. ``record_decisions`` keeps each
        layer's own decision under the replay (``decision_records``).
        """
        blocks = self.ssi_blocks
        if masks is not None and len(masks) != 2 * len(blocks):
            raise SSIError(f"{self.arch} has {2 * len(blocks)} sampling layers, got {len(masks)} masks")
        for i, b in enumerate(blocks):
            b.override_masks = None if masks is None else (masks[2 * i], masks[2 * i + 1])
            b.record_decisions = bool(record_decisions) and masks is not None
            b.decisions = None
        return self

    def decision_records(self) -> dict[str, dict]:
        """Per mask output name: the last forward's own decision under a replay (see
        ``SSIBottleneck.masks``): mask, margin z, reach, w_l1, x_absmax."""
        out = {}
        names = iter(self.mask_names)
        for b in self.ssi_blocks:
            for rec in (b.decisions or (None, None)):
                name = next(names)
                if rec is not None:
                    out[name] = rec
        return out

    def forward(self, image: torch.Tensor):
        if self.neck is not None and not torch.compiler.is_exporting():
            check_fpn_input(image.shape[-2], image.shape[-1])
        feats, masks = self.backbone(image)
        outs = self.neck(feats) if self.neck is not None else feats
        self._last_masks = [m.detach() for m in masks]
        if self.expose_masks:
            return tuple(outs) + tuple(masks)
        return tuple(outs)

    def measured_densities(self) -> dict[str, float]:
        """Share of sampled positions (mask > 0) per sampling layer, from the last forward."""
        return {name: float((m > 0).float().mean())
                for name, m in zip(self.sampling_layers, self._last_masks)}

    def sparsity_loss(self, weight: float = 0.1) -> torch.Tensor | None:
        """Official sparsity loss of the last training forward (weight = sparse_loss_weight)."""
        loss = self.backbone.sparsity_loss()
        return None if loss is None else loss * weight
