"""BatchNorm folding for inference: conv(x) * scale + shift -> conv'(x) + bias'."""

from __future__ import annotations

import torch
from torch import nn


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_conv_bn(weight: torch.Tensor, bn: nn.BatchNorm2d,
                 conv_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded (weight, bias) of conv followed by an inference-mode BatchNorm."""
    scale, shift = bn_scale_shift(bn)
    bias = shift if conv_bias is None else conv_bias * scale + shift
    # Channels-last weights: the sparse conv's [Cout, kh, kw, Cin] GEMM view is then free.
    folded = (weight * scale.view(-1, 1, 1, 1)).detach().contiguous(memory_format=torch.channels_last)
    return folded, bias.detach().clone()
