"""Measured densities: from the mask outputs a manifest lists (the backend's own masks), or
from the PyTorch model's last forward; grouped per stage for the report."""

from __future__ import annotations

import re

import numpy as np

_LAYER = re.compile(r"layer(\d+)\.(\d+)\.mask(\d+)")


def _layer_key(layer: str):
    m = _LAYER.fullmatch(layer or "")
    return tuple(int(g) for g in m.groups()) if m else (10**6, 0, 0)


def mask_outputs(manifest, arch_layers: int) -> tuple:
    """The manifest's mask outputs in sampling-layer order when there is one per sampling
    layer (``arch_layers`` of them), else () (densities then need the PyTorch model)."""
    if manifest is None:
        return ()
    masks = sorted(manifest.outputs_of_kind("mask"), key=lambda t: _layer_key(t.layer))
    return tuple(masks) if arch_layers and len(masks) == arch_layers else ()


def from_outputs(outputs: dict, masks) -> dict[str, float]:
    """{sampling layer: share of positions > 0} of the mask outputs ``masks`` (TensorSpecs)."""
    return {t.layer: float((np.asarray(outputs[t.name]) > 0).mean()) for t in masks}


def per_stage(density: dict[str, float]) -> dict[str, float]:
    """Mean density per backbone stage (layer1..layer4), in order."""
    stages: dict[str, list[float]] = {}
    for layer, d in density.items():
        stages.setdefault(layer.split(".")[0], []).append(d)
    return {s: float(np.mean(v)) for s, v in stages.items()}
