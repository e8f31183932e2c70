"""What the user asked ``profile`` for (the CLI's options, or a library call's arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ProfileConfig:
    onnx: str | Path | None = None  # an ONNX file or a TensorRT engine (.plan)
    arch: str | None = None
    checkpoint: str | Path | None = None
    with_fpn: bool = True
    backend: str | None = None  # None: torch, or tensorrt for an engine
    input_shape: tuple[int, int, int, int] | None = None
    image: str | Path | None = None
    seed: int = 0
    density: float | None = None
    compare_dense: bool = False
    warmup_ms: float = 200.0
    iterations: int | None = None
    duration_s: float | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    work_dir: str | Path | None = None  # where temporary ONNX files go (default: a temp dir)
    dense_engine: str | Path | None = None  # a prebuilt dense TensorRT engine to compare with
    per_layer: bool = False  # tensorrt: per-layer times (IProfiler)
    layer_iterations: int | None = None  # runs averaged per layer [default: iterations, else 20]
    report: str | Path | None = None  # the JSON report, checked before any work
