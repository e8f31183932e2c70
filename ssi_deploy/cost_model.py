"""The official cost model of the SSI paper (``mmdet/utils/flops.py`` of the official code).

Counts backbone multiply-accumulates (what the paper calls FLOPs): the stem, every
convolution of every bottleneck, the downsample shortcuts, and for SSI blocks the two mask
convs, the DCN offset conv and the interpolations. Sparse parts scale with the density d of
their mask: conv1 with d1; conv2, conv3 and the offset conv with d2; an interpolation costs a
7x7 one-output-channel conv times d * (1 - d) (unsampled positions gathering from sampled
neighbours). A dense model has no mask convs or interpolations. Spatial sizes are
``H // stride`` and ``W // stride`` of the input, as in the official calculator.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models.registry import get_arch
from .models.resnet import DCN_STAGES, STAGE_BLOCKS

PLANES = (64, 128, 256, 512)
STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class ConvCost:
    name: str  # e.g. "layer2.0.conv2"
    macs: float  # at full density
    scale: str  # "1" (dense), "d1", "d2", "i1" (d1(1-d1)), "i2" (d2(1-d2)), "mask" (sparse only)


def _conv(k: int, cin: int, cout: int, stride: float, h: int, w: int) -> float:
    return k * k * cin * cout * (h // stride) * (w // stride)


def layer_costs(arch: str, h: int, w: int) -> list[ConvCost]:
    spec = get_arch(arch)
    out = [ConvCost("stem", _conv(7, 3, 64, 2, h, w), "1")]
    inplanes = 64
    for stage, n_blocks in enumerate(STAGE_BLOCKS[spec.depth]):
        p, s = PLANES[stage], STRIDES[stage]
        out.append(ConvCost(f"layer{stage + 1}.downsample", _conv(1, inplanes, 4 * p, s, h, w), "1"))
        for b in range(n_blocks):
            cin = inplanes if b == 0 else 4 * p
            s1 = s / 2 if (stage > 0 and b == 0) else s  # conv1 runs at the block's input size
            name = f"layer{stage + 1}.{b}"
            out += [ConvCost(f"{name}.conv1", _conv(1, cin, p, s1, h, w), "d1"),
                    ConvCost(f"{name}.conv2", _conv(3, p, p, s, h, w), "d2"),
                    ConvCost(f"{name}.conv3", _conv(1, p, 4 * p, s, h, w), "d2")]
            if spec.dcn and DCN_STAGES[stage]:
                out.append(ConvCost(f"{name}.conv2_offset", _conv(3, cin, 18, s, h, w), "d2"))
            if spec.sparse:
                out += [ConvCost(f"{name}.conv1_mask", _conv(3, cin, 1, s1, h, w), "mask"),
                        ConvCost(f"{name}.conv2_mask", _conv(3, cin, 1, s, h, w), "mask"),
                        ConvCost(f"{name}.conv1_interpolate", _conv(7, p, 1, s1, h, w), "i1"),
                        ConvCost(f"{name}.conv3_interpolate", _conv(7, 4 * p, 1, s, h, w), "i2")]
        inplanes = 4 * p
    return out


def num_sampling_layers(arch: str) -> int:
    spec = get_arch(arch)
    return 2 * sum(STAGE_BLOCKS[spec.depth]) if spec.sparse else 0


def backbone_gmacs(arch: str, input_shape: tuple[int, int, int, int],
                   densities: float | list[float] | dict[str, float] | None = None) -> float:
    """Backbone GMACs for ``input_shape`` (N,3,H,W).

    ``densities``: None (every mask full, i.e. the SSI model's worst case; for a dense arch the
    dense count), one float for every mask, or per sampling layer in order (a list, or a dict
    in the order of ``SSINetwork.sampling_layers``, as ``measured_densities()`` returns).
    """
    n, _, h, w = input_shape
    spec = get_arch(arch)
    n_layers = num_sampling_layers(arch)
    if densities is None:
        dens = [1.0] * n_layers
    elif isinstance(densities, (int, float)):
        dens = [float(densities)] * n_layers
    else:
        dens = list(densities.values()) if isinstance(densities, dict) else list(densities)
        if spec.sparse and len(dens) != n_layers:
            raise ValueError(f"{arch} has {n_layers} sampling layers, got {len(dens)} densities")
    bad = [d for d in dens if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 1]
    if bad:
        raise ValueError(f"densities must be numbers between 0 and 1, got {bad[0]!r}")
    total = 0.0
    block = -1
    for c in layer_costs(arch, h, w):
        if c.name.endswith(".conv1"):
            block += 1
        if not spec.sparse or c.scale == "1":
            total += c.macs
            continue
        d1, d2 = dens[2 * block], dens[2 * block + 1]
        total += c.macs * {"d1": d1, "d2": d2, "i1": d1 * (1 - d1), "i2": d2 * (1 - d2),
                           "mask": 1.0}[c.scale]
    return n * total / 1e9


FPN_CHANNELS = 256
BACKBONE_CHANNELS = (256, 512, 1024, 2048)


def head_gmacs(arch: str, input_shape: tuple[int, int, int, int],
               proposals: int = 1000) -> dict[str, float]:
    """GMACs of a detector's parts beyond the backbone (not in the official counter, which
    stops at the backbone): FPN (laterals, 3x3 output convs), RPN head on P2..P6, and the
    shared-2-fc box head on ``proposals`` RoIs per image (the test setting: 1000). RoIAlign,
    NMS and decoding are not multiply-accumulates and are left out."""
    spec = get_arch(arch)
    if not spec.detector:
        raise ValueError(f"{arch} is a backbone; its detector is faster_rcnn_{arch}")
    n, _, h, w = input_shape
    sizes = [(h // s, w // s) for s in STRIDES]
    sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))  # P6: max_pool(1, stride 2)
    fpn = sum((cin * FPN_CHANNELS + 9 * FPN_CHANNELS * FPN_CHANNELS) * a * b
              for cin, (a, b) in zip(BACKBONE_CHANNELS, sizes))
    rpn = sum((9 * FPN_CHANNELS * FPN_CHANNELS + FPN_CHANNELS * (3 + 12)) * a * b
              for a, b in sizes)
    box = proposals * (FPN_CHANNELS * 49 * 1024 + 1024 * 1024 + 1024 * 81 + 1024 * 324)
    return {"fpn": n * fpn / 1e9, "rpn_head": n * rpn / 1e9, "bbox_head": n * box / 1e9}
