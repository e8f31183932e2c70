"""`ssi-deploy inspect-checkpoint`: recognise a checkpoint and summarise it."""

from __future__ import annotations

import json
import math

import click

from ..errors import SSIError
from ..models.checkpoint import detect_arch, load_checkpoint, read_checkpoint
from ..models import build_network
from ..models.registry import get_arch
from .table import print_table


def summarise(path: str) -> dict:
    ckpt = read_checkpoint(path)
    arch, with_fpn = detect_arch(ckpt)
    sd = ckpt.state_dict
    prefix = "backbone." if ckpt.format == "official" else ""
    blocks = []
    for key in sorted(k for k in sd if k.startswith(prefix + "layer") and k.endswith(".conv1.weight")):
        name = key[len(prefix):-len(".conv1.weight")]
        b = {"block": name, "planes": int(sd[key].shape[0])}
        for i in (1, 2):
            s = sd.get(f"{prefix}{name}.conv{i}_sigma")
            mb = sd.get(f"{prefix}{name}.conv{i}_mask.bias")
            b[f"sigma{i}"] = None if s is None else float(s)
            b[f"mask{i}_bias"] = None if mb is None else float(mb.flatten()[0])
            # sigmoid(bias) = keep probability where the mask conv's weights contribute nothing
            b[f"p{i}_at_bias"] = None if mb is None else 1 / (1 + math.exp(-float(mb.flatten()[0])))
        b["dcn"] = f"{prefix}{name}.conv2_offset.weight" in sd
        blocks.append(b)
    blocks.sort(key=lambda b: tuple(int(p) if p.isdigit() else p for p in
                                    b["block"].replace("layer", "").split(".")))
    parts = sorted({k.split(".")[0] for k in sd}) if ckpt.format == "official" else ["backbone"]
    # What a model of the recognised arch would lack or ignore.
    net = build_network(get_arch(arch), with_fpn)
    try:
        report = load_checkpoint(net, ckpt)
        fits, problem = True, None
        ignored, initialised = report.ignored, report.initialised
    except SSIError as e:
        fits, problem, ignored, initialised = False, str(e), [], []
    nonfinite = [{"key": k, "nan": int(v.isnan().sum()), "inf": int(v.isinf().sum())}
                 for k, v in sd.items()
                 if v.is_floating_point() and not bool(v.isfinite().all())]
    return {"path": str(ckpt.path), "sha256": ckpt.sha256, "format": ckpt.format,
            "nonfinite": nonfinite,
            "arch": arch, "with_fpn": with_fpn, "parts": parts,
            "extra_entries": ckpt.extra_keys, "num_tensors": len(sd),
            "num_parameters": int(sum(v.numel() for v in sd.values())),
            "blocks": blocks, "fits": fits, "problem": problem,
            "ignored_keys": ignored, "initialised_keys": initialised}


@click.command("inspect-checkpoint")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect_checkpoint(path, as_json):
    """Recognise the architecture of checkpoint PATH (official SSI/mmdet 0.6 or torchvision)
    and summarise it: blocks, sigmas, mask-conv biases, what a model would ignore or lack.
    Exit 1 when a tensor holds NaN or Inf (the file is damaged)."""
    info = summarise(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        if info["nonfinite"]:
            raise click.exceptions.Exit(1)
        return
    click.echo(f"{info['path']}: {info['format']} checkpoint, sha256 {info['sha256'][:16]}...")
    click.echo(f"architecture: {info['arch']}{' + FPN' if info['with_fpn'] else ''} "
               f"({info['num_tensors']} tensors, {info['num_parameters'] / 1e6:.1f} M values); "
               f"parts: {', '.join(info['parts'])}"
               + (f"; also holds {', '.join(info['extra_entries'])}" if info["extra_entries"] else ""))
    ssi = any(b["sigma1"] is not None for b in info["blocks"])
    rows = [[b["block"], b["planes"], "yes" if b["dcn"] else "",
             *(["" if b[k] is None else f"{b[k]:.3f}"
                for k in ("sigma1", "sigma2", "mask1_bias", "mask2_bias")] if ssi else [])]
            for b in info["blocks"]]
    print_table(["block", "planes", "dcn"] + (["sigma1", "sigma2", "mask1 bias", "mask2 bias"]
                                               if ssi else []), rows)
    if not info["fits"]:
        click.echo(f"does not load as it is: {info['problem']}")
    else:
        if info["ignored_keys"]:
            click.echo(f"a model ignores {len(info['ignored_keys'])} keys (heads etc.): "
                       + ", ".join(info["ignored_keys"][:5]) + (" ..." if len(info["ignored_keys"]) > 5 else ""))
        if info["initialised_keys"]:
            click.echo(f"missing from the file, initialised by the model: "
                       f"{len(info['initialised_keys'])} keys (" + ", ".join(info["initialised_keys"][:4]) + " ...)")
        else:
            click.echo("nothing missing")
    if info["nonfinite"]:
        bad = info["nonfinite"]
        click.echo(f"DAMAGED: {len(bad)} tensor(s) hold non-finite values, every output would be "
                   "NaN: " + ", ".join(f"{b['key']} ({b['nan']} NaN, {b['inf']} Inf)"
                                        for b in bad[:3]) + (" ..." if len(bad) > 3 else ""))
        raise click.exceptions.Exit(1)
