"""Training-time sampling: the official two-class Gumbel-Softmax (soft, not straight-through)."""

from __future__ import annotations

import torch
from torch import nn

P_VALUE = 1e-8  # the official epsilon inside the logs


class GumbelSigmoid(nn.Module):
    """Soft sample of a Bernoulli(p) by Gumbel-Softmax over (log p, log 1-p) at temperature T.

    T starts at ``max_t`` and is multiplied by ``decay`` after every training forward (the
    buffer ``cur_T`` is part of the official checkpoints). Inference never uses this module:
    SampleMask implements the evaluation-time behaviour.
    """

    def __init__(self, max_t: float = 1.0, decay: float = 0.99998):
        super().__init__()
        self.decay = decay
        self.register_buffer("cur_T", torch.tensor(float(max_t)))

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        t = self.cur_T
        g1 = -torch.log(-torch.log(torch.rand_like(p) + P_VALUE) + P_VALUE)
        g2 = -torch.log(-torch.log(torch.rand_like(p) + P_VALUE) + P_VALUE)
        a = (torch.log(p + P_VALUE) + g1) / (t + P_VALUE)
        b = (torch.log(1 - p + P_VALUE) + g2) / (t + P_VALUE)
        soft = torch.softmax(torch.cat((a, b), dim=1), dim=1)[:, :1]
        if self.training:
            with torch.no_grad():
                self.cur_T.mul_(self.decay)
        return soft
