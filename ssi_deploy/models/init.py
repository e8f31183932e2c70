"""Seeded random initialisation that gives realistic activations and mask densities.

Used when no checkpoint is given (demo, tests, benchmarks). Convolutions get Kaiming weights;
then one calibration forward on a seeded smooth image sets every BatchNorm's running
statistics from the input it actually sees (so activations stay normalised through up to 33
blocks), scales the DCN offset convs to offsets of about 0.1 pixel (larger random offsets
make a 23-block stage chaotic: float rounding then grows to O(1) differences), and shifts each mask
conv's bias so that its mask keeps a target share of positions drawn from [0.15, 0.45] (the
released models average about 0.26-0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Bottleneck, SSIBottleneck

DENSITY_RANGE = (0.15, 0.45)
CALIBRATION_SHAPE = (1, 3, 128, 128)
OFFSET_STD = 0.1  # pixels; larger random offsets make a deep DCN net chaotic

def _smooth_image(gen: torch.Generator, shape) -> torch.Tensor:
    """A normalised image-like input: low-frequency noise plus some texture."""
    n, c, h, w = shape
    coarse = torch.randn(n, c, h // 16, w // 16, generator=gen)
    img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return img + 0.3 * torch.randn(shape, generator=gen)


@torch.no_grad()
def random_init(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
    blocks = model.backbone.blocks
    for b in blocks:
        b.bn3.weight.fill_(0.2)  # keeps the residual sums moderate over up to 33 blocks
        if isinstance(b, SSIBottleneck):
            for conv in (b.conv1_mask, b.conv2_mask):
                fan_in = conv.in_channels * 9
                conv.weight.normal_(0.0, 4.0 / fan_in ** 0.5, generator=gen)
    targets = torch.empty(2 * len(blocks)).uniform_(*DENSITY_RANGE, generator=gen).tolist()
    if getattr(model, "is_detector", False):
        init_detector_heads(model, gen)
    _calibrate(model, _smooth_image(gen, CALIBRATION_SHAPE), targets)


# Spread of the detector heads' outputs after calibration: objectness and class logits over a
# few units (scores rarely tie and some pass the 0.05 cut), box deltas small.
HEAD_OUTPUT_STD = {"rpn_cls": 1.0, "rpn_reg": 0.3, "fc_cls": 1.0, "fc_reg": 0.5}


@torch.no_grad()
def init_detector_heads(model: nn.Module, gen: torch.Generator) -> None:
    """Seeded heads (Kaiming); ``_calibrate`` then scales the output layers to
    ``HEAD_OUTPUT_STD`` on the calibration image."""
    rpn, box = model.rpn_head, model.bbox_head
    for conv in (rpn.rpn_conv, rpn.rpn_cls, rpn.rpn_reg):
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        conv.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
        conv.bias.zero_()
    for fc in (*box.shared_fcs, box.fc_cls, box.fc_reg):
        fc.weight.normal_(0.0, (2.0 / fc.in_features) ** 0.5, generator=gen)
        fc.bias.zero_()


def _calibrate(model, image, targets) -> None:
    hooks = []

    def bn_pre_hook(bn, args):
        x = args[0]
        bn.running_mean.copy_(x.mean((0, 2, 3)))
        bn.running_var.copy_(x.var((0, 2, 3), unbiased=False))

    def scale_hook(conv, args, out):  # DCN offsets: std of OFFSET_STD pixels
        conv.weight.mul_(OFFSET_STD / out.std().clamp_min(1e-6))
        conv.bias.zero_()
        return conv._conv_forward(args[0], conv.weight, conv.bias)

    def mask_hook(target):
        def hook(conv, args, out):
            flat = out.flatten()
            k = max(1, int(round(target * flat.numel())))
            # the threshold halfway between the k-th and (k+1)-th largest logits, not at the
            # k-th itself: a decision exactly at 0 flips with the last bit of its logit (thread
            # count, BLAS kernel), and the BatchNorm statistics after it move with it, so the
            # "same seed" would not give the same weights on another machine or thread count
            top = torch.topk(flat, min(k + 1, flat.numel())).values
            cut = 0.5 * (top[k - 1] + top[k]) if k < flat.numel() else top[-1] - 1.0
            conv.bias.sub_(cut)
            return conv._conv_forward(args[0], conv.weight, conv.bias)
        return hook

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            hooks.append(m.register_forward_pre_hook(bn_pre_hook))
    def spread_hook(std):  # a head's output layer: outputs of standard deviation ``std``
        def hook(layer, args, out):
            layer.weight.mul_(std / out.std().clamp_min(1e-6))
            return F.linear(args[0], layer.weight, layer.bias) if isinstance(layer, nn.Linear) \
                else layer._conv_forward(args[0], layer.weight, layer.bias)
        return hook

    if getattr(model, "is_detector", False):
        heads = {"rpn_cls": model.rpn_head.rpn_cls, "rpn_reg": model.rpn_head.rpn_reg,
                 "fc_cls": model.bbox_head.fc_cls, "fc_reg": model.bbox_head.fc_reg}
        done = set()

        def once(name):  # the RPN runs per level: scale on the first (finest) level only
            inner = spread_hook(HEAD_OUTPUT_STD[name])

            def hook(layer, args, out):
                if name in done:
                    return out
                done.add(name)
                return inner(layer, args, out)
            return hook

        for name, layer in heads.items():
            hooks.append(layer.register_forward_hook(once(name)))
    for i, b in enumerate(model.backbone.blocks):
        if isinstance(b, Bottleneck) and b.with_dcn:
            hooks.append(b.conv2_offset.register_forward_hook(scale_hook))
        if isinstance(b, SSIBottleneck):
            hooks.append(b.conv1_mask.register_forward_hook(mask_hook(targets[2 * i])))
            hooks.append(b.conv2_mask.register_forward_hook(mask_hook(targets[2 * i + 1])))
    state = (model.training, model.sampling, model.seed, model.forced_density)
    model.eval().set_sampling("threshold").set_forced_density(None)
    model.set_execution("official")
    try:
        model(image)
    finally:
        for h in hooks:
            h.remove()
        model.set_execution("sparse")
        model.set_sampling(state[1], state[2]).set_forced_density(state[3])
        model.train(state[0])
