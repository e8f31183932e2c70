"""`ssi-deploy flops`: backbone multiply-accumulates with the official cost model."""

from __future__ import annotations

import json

import click

from ..cost_model import backbone_gmacs, head_gmacs, num_sampling_layers
from ..errors import SSIError
from ..models.registry import get_arch
from .options import parse_image_shape


@click.command()
@click.option("--arch", required=True, help="Architecture (see `ssi-deploy zoo`).")
@click.option("--input-shape", default="1x3x992x1664", show_default=True,
              help="Input NxCxHxW (the paper's canvas is 992x1664).")
@click.option("--density", type=float, default=None,
              help="Density of every sampling mask (0..1); default: every mask full.")
@click.option("--densities-json", type=click.Path(dir_okay=False),
              help="JSON file with measured densities per sampling layer (a list, or a dict "
                   "as `profile --report` writes under 'density').")
@click.option("--json", "as_json", is_flag=True, help="Print JSON ({'backbone_gmacs': ...}).")
def flops(arch, input_shape, density, densities_json, as_json):
    """Backbone GMACs (what the paper calls GFLOPs) of ARCH at INPUT-SHAPE: stem, blocks,
    offset convs, mask convs and interpolations, scaled by the mask densities. For a detector
    (faster_rcnn_*) also the FPN, RPN head and box head (1000 RoIs), which the official
    counter leaves out."""
    spec = get_arch(arch)
    shape = parse_image_shape(input_shape, check_memory=False)  # arithmetic only
    if density is not None and densities_json:
        raise SSIError("give either --density or --densities-json, not both")
    dens = density
    if density is not None and not 0.0 <= density <= 1.0:
        raise SSIError(f"--density must be between 0 and 1, got {density}")
    if densities_json:
        try:
            with open(densities_json) as f:
                data = json.load(f)
        except UnicodeDecodeError:
            raise SSIError(f"--densities-json {densities_json} is not a text (UTF-8 JSON) file; "
                           "give the JSON that `profile --report` writes") from None
        except json.JSONDecodeError as e:
            raise SSIError(f"--densities-json {densities_json} is not valid JSON ({e}); give "
                           "the JSON that `profile --report` writes") from None
        except OSError as e:
            raise SSIError(f"cannot read --densities-json {densities_json}: {e.strerror or e}") from None
        dens = data.get("density", data) if isinstance(data, dict) else data
        if isinstance(dens, dict) and "per_layer" in dens:
            dens = dens["per_layer"]
    if not spec.sparse and dens is not None:
        raise SSIError(f"{arch} is dense: it has no sampling masks; use its sparse_ counterpart")
    try:
        g = backbone_gmacs(arch, shape, dens)
    except ValueError as e:
        raise SSIError(str(e)) from None
    result = {"arch": arch, "input_shape": list(shape), "density": density,
              "sampling_layers": num_sampling_layers(arch), "backbone_gmacs": round(g, 4)}
    heads = head_gmacs(arch, shape) if spec.detector else None
    if heads is not None:
        result["heads_gmacs"] = {k: round(v, 4) for k, v in heads.items()}
        result["total_gmacs"] = round(g + sum(heads.values()), 4)
    if as_json:
        click.echo(json.dumps(result))
    else:
        d = "full" if dens is None else ("measured" if densities_json else f"{density:g}")
        click.echo(f"{arch} @ {'x'.join(map(str, shape))} (density {d}): "
                   f"{g:.2f} GMACs backbone")
        if heads is not None:
            total = g + sum(heads.values())
            click.echo("  + " + ", ".join(f"{k} {v:.2f}" for k, v in heads.items())
                       + f" GMACs = {total:.2f} GMACs in all (backbone "
                       f"{100 * g / total:.0f} %)")
