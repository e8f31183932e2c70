"""``ssi-deploy export``: build a model and write one self-contained ONNX file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from ..errors import SSIError
from .options import parse_image_shape

def parse_dynamic(text: str) -> tuple[str, ...]:
    from ..export import DYNAMIC_AXES

    if text.strip().lower() in ("", "none", "static"):
        return ()
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in DYNAMIC_AXES]
    if bad:
        raise SSIError(f"--dynamic: unknown axis {bad[0]!r}; use a comma-separated subset of "
                       f"{','.join(DYNAMIC_AXES)} or 'none'")
    return tuple(dict.fromkeys(names))


def check_checkpoint(path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise SSIError(f"checkpoint {p} does not exist; give the path of a .pth file "
                       "(or omit --checkpoint for seeded random weights)")
    if not p.is_file():
        raise SSIError(f"checkpoint {p} is not a file; give the path of a .pth file")
    if not os.access(p, os.R_OK):
        raise SSIError(f"checkpoint {p} is not readable (permission denied); fix its "
                       "permissions or copy it somewhere readable")
    return p


@click.command("export")
@click.option("--arch", required=True, help="Registry architecture (see `ssi-deploy zoo`), "
              "e.g. sparse_resnet101_dcn.")
@click.option("--checkpoint", default=None, metavar="PATH",
              help="Official or ssi-deploy checkpoint (.pth); default: seeded random weights.")
@click.option("--with-fpn", is_flag=True, help="Include the FPN neck (outputs p2..p6).")
@click.option("--output", "-o", required=True, metavar="M.onnx", help="ONNX file to write.")
@click.option("--input-shape", default="1x3x512x512", show_default=True, metavar="NxCxHxW",
              help="Example input shape (the static shape where an axis is not dynamic).")
@click.option("--dynamic", default="batch,height,width", show_default=True,
              help="Input axes kept symbolic: subset of batch,height,width, or 'none'.")
@click.option("--sampling", default="threshold", show_default=True,
              type=click.Choice(["threshold", "stochastic", "official"]),
              help="SampleMask mode written into the graph.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the stochastic/official sampling hash.")
@click.option("--init-seed", default=0, show_default=True, type=int,
              help="Seed of the random weights when no checkpoint is given.")
@click.option("--opset", default=None, type=int, help="ONNX opset (18..25, default 18).")
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16"]),
              help="Tensor dtype of the graph (fp16: SSI bodies still compute in fp32).")
@click.option("--masks/--no-masks", "expose_masks", default=None,
              help="One mask output per sampling layer (mask_<layer>) [default: on for SSI "
                   "models; validate compares and replays them].")
@click.option("--granularity", default="block", show_default=True,
              type=click.Choice(["block", "ops"]),
              help="block: one SSIBottleneck node per SSI block (compact rows inside; ONNX "
                   "Runtime runs its function body, TensorRT the fused SSIBottleneck plugin). "
                   "ops: the three building-block ops per block (SampleMask, SparseConv2d, "
                   "GaussianInterp), the portable form. `ssi-deploy build` takes both.")
@click.option("--verify", is_flag=True,
              help="Run the file in ONNX Runtime at the example shape and at a second shape "
                   "along the dynamic axes, and compare with PyTorch.")
def export(arch, checkpoint, with_fpn, output, input_shape, dynamic, sampling, seed, init_seed,
           opset, dtype, expose_masks, granularity, verify):
    """Export a model to one ONNX file with SSI nodes (TensorRT plugins) and reference
    function bodies (ONNX Runtime)."""
    from ..export import DEFAULT_OPSET, check_opset, export_onnx, summarize

    shape = parse_image_shape(input_shape)
    dyn = parse_dynamic(dynamic)
    opset = check_opset(DEFAULT_OPSET if opset is None else opset)
    ckpt = check_checkpoint(checkpoint)
    from ..outputs import check_output_path

    out = check_output_path(output, "--output", ".onnx")  # before minutes of export

    from ..models import create_model, list_models

    archs = list(list_models())
    if arch not in archs:
        raise SSIError(f"unknown --arch {arch!r}; choose one of {', '.join(archs)}")
    t0 = time.perf_counter()
    click.echo(f"building {arch}{' + FPN' if with_fpn else ''} "
               f"({'checkpoint ' + str(ckpt) if ckpt else f'random weights, seed {init_seed}'}) ...")
    try:
        model = create_model(arch, with_fpn=with_fpn, checkpoint=ckpt, sampling=sampling,
                             seed=seed, init_seed=init_seed)
    except SSIError:
        raise
    except Exception as e:  # noqa: BLE001 - a checkpoint torch cannot read is a user mistake
        if ckpt is None:
            raise
        raise SSIError(f"could not load checkpoint {ckpt} for {arch}: {type(e).__name__}: "
                       f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}; pass a "
                       "checkpoint saved with torch.save for this architecture") from e
    if expose_masks and not getattr(getattr(model, "spec", None), "sparse", True):
        raise SSIError(f"--masks: {arch} is dense and has no sampling layers; "
                       "drop the flag or choose a sparse_* architecture")
    path = export_onnx(model, out, input_shape=shape, dynamic=dyn, opset=opset, dtype=dtype,
                       expose_masks=expose_masks, verify=verify, granularity=granularity,
                       progress=lambda msg: click.echo(f"  {msg}"))
    s = summarize(path)
    ssi = ", ".join(f"{n} {k}" for k, n in s["ssi_nodes"].items() if n) or "no"
    click.echo(f"exported {arch}: {ssi} SSI nodes, {s['nodes']} nodes in all, "
               f"{s['bytes'] / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s -> {path}")
