"""``ssi-deploy validate``: compare a backend running an ONNX file with the PyTorch reference."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SSIError, ValidationFailed


@click.command("validate")
@click.argument("onnx_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint the file was exported from (its sha256 must match the metadata).")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt", "torch"]),
              default=None, help="Backend under test [default: onnxruntime; tensorrt for an "
                                 "engine, which runs on no other backend]. torch rebuilds the "
                                 "model from the manifest and the checkpoint: it tests the "
                                 "PyTorch sparse path, not the file's weights or attributes.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="onnxruntime: CUDA provider when available (auto).")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A photograph: resized (short side), normalised with the metadata's mean/std, "
                   "padded to a multiple of 32 or to the static input shape.")
@click.option("--short-side", type=click.IntRange(min=32), default=None,
              help="Short side for --image on a dynamic-shape model [default: 1000].")
@click.option("--inputs", "npz", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An .npz with one array per model input, by input name.")
@click.option("--random", "use_random", is_flag=True,
              help="Random normal input (the default when no other input is given).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random.")
@click.option("--input-shape", default=None,
              help="NxCxHxW (or HxW) for --random on a dynamic-shape model.")
@click.option("--atol", multiple=True, metavar="[NAME=]VALUE",
              help="Absolute tolerance, for every output or one output (repeatable).")
@click.option("--rtol", multiple=True, metavar="[NAME=]VALUE",
              help="Relative tolerance, for every output or one output (repeatable).")
@click.option("--min-mask-agreement", type=float, default=None,
              help="Least share of equal mask positions per sampling layer "
                   "[default: 0.999 fp32, 0.99 fp16].")
@click.option("--max-mask-flips", type=int, default=None,
              help="Near-threshold decisions tolerated per layer once the backend's earlier "
                   "masks are replayed [default: 2 fp32, 4 fp16].")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Write the full comparison as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Only the verdict line.")
def validate(onnx_file, checkpoint, backend, device, image, short_side, npz, use_random, seed,
             input_shape, atol, rtol, min_mask_agreement, max_mask_flips, report, quiet):
    """Run ONNX_FILE on a backend and the PyTorch reference rebuilt from its manifest, on the
    same input, and compare every output by its kind. Exit 0 on pass, 1 on fail, 2 on a
    mistake in what was given. Any NaN or Inf, on either side, fails.

    Sampling masks are always compared (a file that does not expose them gets them as extra
    outputs in memory). When decisions differ, the reference is replayed with the backend's
    masks: features are judged against the replay, and each layer's own decisions under it
    must be near their threshold (within what the feature tolerance allows the logit to
    move); the free-running comparison, with the first layer that flipped, stays in the
    report.

    ONNX_FILE may also be a TensorRT engine (.plan, with the .plan.json `ssi-deploy build`
    writes): it runs on the tensorrt backend and is validated against the PyTorch reference of
    the ONNX file it was built from (random input: the engine profile's opt shape). Default
    tolerances follow the exported dtype (fp32: atol 2e-5 x max|ref| of each output, rtol 1e-3;
    fp16: 1e-2 x max|ref|, 1e-2)."""
    from ..input_shape import parse_input_shape
    from ..validation.runner import InputSpec, validate as run_validate

    sources = [s for s in (image is not None, npz is not None, use_random) if s]
    if len(sources) > 1:
        raise SSIError("give one input source: --image, --inputs or --random")
    if short_side is not None and image is None:
        raise SSIError("--short-side resizes an --image: give --image PATH, or drop --short-side "
                       "(--random takes --input-shape)")
    spec = InputSpec(image=image, npz=npz, random=not (image or npz), seed=seed,
                     short_side=short_side,
                     input_shape=parse_input_shape(input_shape) if input_shape else None)
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    result = run_validate(onnx_file, checkpoint=checkpoint, backend=backend, inputs=spec,
                          atol=atol, rtol=rtol, min_mask_agreement=min_mask_agreement,
                          report=report, device=device, raise_on_fail=False, log=log,
                          max_mask_flips=max_mask_flips)
    if not quiet:
        click.echo(result.table())
    if report is not None and not quiet:
        click.echo(f"report: {report}")
    if not result.passed:
        from ..validation.runner import failure_message
        raise ValidationFailed(failure_message(result))
    if quiet:
        click.echo("PASS")
