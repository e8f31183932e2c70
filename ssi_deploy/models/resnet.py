"""ResNet-50/101 backbones, dense and SSI, with optional DCNv1 in stages 2-4 (official layout).

Training follows the official backbone config (mmdet 0.6 ``ResNet``/``SparseResNet``):
``norm_eval=True`` keeps every BatchNorm of the backbone in eval mode in ``train()`` (frozen
running statistics; the affine weight and bias are still trained) and ``frozen_stages=0``
freezes the stem (conv1, bn1: eval, ``requires_grad=False``). ``frozen_stages=k`` also freezes
stages 1..k, -1 freezes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SSIError
from ..ops import contract as C
from ..ops.bottleneck import TapsHandoff
from .blocks import Bottleneck, SSIBottleneck

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
DCN_STAGES = (False, True, True, True)
NUM_STAGES = 4


def check_training_options(norm_eval, frozen_stages) -> None:
    """SSIError unless norm_eval is a bool and frozen_stages an int in -1..4."""
    if not isinstance(norm_eval, bool):
        raise SSIError(f"norm_eval must be True or False, got {norm_eval!r}")
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) \
            or not -1 <= frozen_stages <= NUM_STAGES:
        raise SSIError(f"frozen_stages must be an integer from -1 (freeze nothing) to {NUM_STAGES} "
                       f"(stem and all stages), got {frozen_stages!r}")


@torch.no_grad()
def _frozen_block_loss(block, x: torch.Tensor) -> torch.Tensor:
    """Sparsity loss of a frozen (eval-mode) SSI block, as the official code computes it for
    every block: a constant, since the block's mask convs are frozen."""
    p1, p2 = torch.sigmoid(block.conv1_mask(x)), torch.sigmoid(block.conv2_mask(x))
    return 0.25 * p1.mean() + 0.75 * p2.mean()


def _hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook (of these modules, or a global one) may hold a block's output."""
    from torch.nn.modules import module as M

    hooks = (getattr(M, "_global_forward_hooks", True), getattr(M, "_global_forward_pre_hooks", True))
    return bool(any(hooks) or any(m._forward_hooks or m._forward_pre_hooks for m in modules))


class ResNet(nn.Module):
    """Backbone returning (c2, c3, c4, c5); an SSI backbone also returns its masks."""

    def __init__(self, depth: int, sparse: bool, dcn: bool = False,
                 grid_interval: int = C.GRID_PRIOR_INTERVAL, norm_eval: bool = True,
                 frozen_stages: int = 0):
        super().__init__()
        check_training_options(norm_eval, frozen_stages)
        self.norm_eval, self.frozen_stages = norm_eval, frozen_stages
        self.depth, self.sparse, self.dcn = depth, sparse, dcn
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes, index = 64, 0
        for stage, n_blocks in enumerate(STAGE_BLOCKS[depth]):
            planes, stride = 64 * 2 ** stage, 1 if stage == 0 else 2
            with_dcn = dcn and DCN_STAGES[stage]
            blocks = []
            for b in range(n_blocks):
                downsample = None
                if b == 0:
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                        nn.BatchNorm2d(planes * 4))
                s = stride if b == 0 else 1
                if sparse:
                    blocks.append(SSIBottleneck(inplanes, planes, s, downsample, with_dcn, index,
                                                grid_interval))
                else:
                    blocks.append(Bottleneck(inplanes, planes, s, downsample, with_dcn))
                inplanes, index = planes * 4, index + 1
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.stem_fused = None
        self._freeze_stages()

    # -- training policy (official: norm_eval=True, frozen_stages=0) -------------------------
    def _stage_modules(self, stage: int) -> list[nn.Module]:
        """Stage 0 is the stem (conv1, bn1); stages 1..4 are layer1..layer4."""
        return [self.conv1, self.bn1] if stage == 0 else [getattr(self, f"layer{stage}")]

    def _freeze_stages(self) -> None:
        """mmdet 0.6 ``ResNet._freeze_stages``: stem and stages 1..frozen_stages in eval mode,
        their parameters with requires_grad=False."""
        for stage in range(self.frozen_stages + 1):
            for m in self._stage_modules(stage):
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def train(self, mode: bool = True):
        """mmdet 0.6 ``ResNet.train``: frozen stages stay frozen; with norm_eval every
        BatchNorm stays in eval mode (running statistics unchanged, affine still trained)."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def set_training_options(self, norm_eval: bool | None = None,
                             frozen_stages: int | None = None) -> "ResNet":
        """Change norm_eval / frozen_stages (None keeps the current value). Parameters of
        stages that are no longer frozen get requires_grad=True again; the current mode
        (train or eval) is applied again with the new options."""
        norm_eval = self.norm_eval if norm_eval is None else norm_eval
        frozen_stages = self.frozen_stages if frozen_stages is None else frozen_stages
        check_training_options(norm_eval, frozen_stages)
        for stage in range(frozen_stages + 1, self.frozen_stages + 1):
            for m in self._stage_modules(stage):
                for p in m.parameters():
                    p.requires_grad = True
        self.norm_eval, self.frozen_stages = norm_eval, frozen_stages
        return self.train(self.training)

    @property
    def blocks(self) -> list[Bottleneck]:
        return [b for i in range(1, 5) for b in getattr(self, f"layer{i}")]

    def stem(self, x):
        if self.stem_fused is not None:
            x = F.conv2d(x, *self.stem_fused, stride=2, padding=3)
        else:
            x = self.bn1(self.conv1(x))
        return F.max_pool2d(F.relu(x), 3, 2, 1)

    def forward(self, x):
        """Returns (features c2..c5, masks in layer order); masks are empty for dense nets
        and in training (where blocks of frozen stages run their inference forward)."""
        x = self.stem(x)
        feats, masks = [], []
        # eager inference: each block computes the next one's mask taps (TapsHandoff)
        chain = self.sparse and not self.training and not (torch.compiler.is_compiling()
                                                          or torch.compiler.is_exporting())
        handoff = TapsHandoff() if chain else None
        following = iter(self.blocks[1:] + [None])
        prev = None
        for i in range(1, 5):
            for block in getattr(self, f"layer{i}"):
                if self.sparse:
                    frozen = self.training and not block.training
                    x_in = x
                    nxt = next(following)
                    if handoff is not None and isinstance(block, SSIBottleneck):
                        handoff.next_w = (nxt.chained_tap_weights()
                                          if isinstance(nxt, SSIBottleneck) else None)
                        # x is kept by nobody else: not a stage's feature, seen by no hook
                        handoff.reuse_input = prev is not None and not _hooked(prev, block)
                        x, m1, m2 = block(x, handoff=handoff)
                    else:
                        x, m1, m2 = block(x)
                    if frozen:  # no stale loss of an earlier forward; counted like the official
                        block.sparsity_loss = _frozen_block_loss(block, x_in)
                    elif m1 is not None:
                        masks += [m1, m2]
                else:
                    x = block(x)
                prev = block
            feats.append(x)
            prev = None  # the next stage's first block reads this feature
        return tuple(feats), masks

    def sparsity_loss(self) -> torch.Tensor | None:
        """Official per-block loss averaged over the blocks (last training forward)."""
        losses = [b.sparsity_loss for b in self.blocks if getattr(b, "sparsity_loss", None) is not None]
        return torch.stack(losses).mean() if losses else None
