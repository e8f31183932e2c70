"""The options that choose a detector (``detect``, ``eval``): one of --arch/--checkpoint,
--onnx, --engine, with the sampling and the test scale."""

from __future__ import annotations

import functools
from pathlib import Path

import click


def detector_options(f):
    opts = [
        click.option("--arch", default=None, help="Detector architecture, e.g. "
                     "faster_rcnn_sparse_resnet101_dcn (PyTorch, the official test path)."),
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Official checkpoint for --arch [default: seeded random "
                     "weights]."),
        click.option("--onnx", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="A detector export (ONNX Runtime); its manifest gives the "
                     "preprocessing."),
        click.option("--engine", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="A TensorRT engine of a detector export."),
        click.option("--sampling", type=click.Choice(["threshold", "stochastic", "official"]),
                     default="threshold", show_default=True,
                     help="--arch: how the masks are sampled (official: the Gumbel noise of "
                     "the official test forward; threshold: its noise-free limit)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="--arch: seed of stochastic/official sampling."),
        click.option("--test-scale", default=None, metavar="LONGxSHORT",
                     help="Keep-ratio test scale [default: the export's, or 1667x1000]."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True, help="--onnx: CUDA provider when available."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(opts), f)


def open_from_options(arch, checkpoint, onnx, engine, sampling, seed, test_scale, device):
    from ..detection.images import parse_test_scale
    from ..detection.runner import open_detector
    from .export_cmd import check_checkpoint

    scale = parse_test_scale(test_scale) if test_scale else None
    if sampling != "threshold" and arch is None:
        raise click.UsageError("--sampling applies to --arch; an export carries its sampling")
    return open_detector(arch=arch, checkpoint=check_checkpoint(checkpoint) if checkpoint
                         else None, onnx=onnx, engine=engine, sampling=sampling, seed=seed,
                         test_scale=scale, device=device)
