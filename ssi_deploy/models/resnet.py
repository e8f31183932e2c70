"""ResNet-50/101 backbones, dense and SSI, with optional DCNv1 in stages 2-4 (official layout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import contract as C
from .blocks import Bottleneck, SSIBottleneck

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
DCN_STAGES = (False, True, True, True)


class ResNet(nn.Module):
    """Backbone returning (c2, c3, c4, c5); an SSI backbone also returns its masks."""

    def __init__(self, depth: int, sparse: bool, dcn: bool = False,
                 grid_interval: int = C.GRID_PRIOR_INTERVAL):
        super().__init__()
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
        """Returns (features c2..c5, masks in layer order); masks are empty for dense nets."""
        x = self.stem(x)
        feats, masks = [], []
        for i in range(1, 5):
            for block in getattr(self, f"layer{i}"):
                if self.sparse:
                    x, m1, m2 = block(x)
                    if m1 is not None:
                        masks += [m1, m2]
                else:
                    x = block(x)
            feats.append(x)
        return tuple(feats), masks

    def sparsity_loss(self) -> torch.Tensor | None:
        """Official per-block loss averaged over the blocks (last training forward)."""
        losses = [b.sparsity_loss for b in self.blocks if getattr(b, "sparsity_loss", None) is not None]
        return torch.stack(losses).mean() if losses else None
