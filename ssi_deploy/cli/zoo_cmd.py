"""`ssi-deploy zoo`: the architecture registry and the released official models."""

from __future__ import annotations

import json

import click

from ..models.registry import _ARCHS
from ..zoo import zoo_entries
from .table import print_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def zoo(as_json: bool):
    """List the registered architectures and the model-zoo entries (ssi_deploy/zoo/*.toml, or $SSI_ZOO_DIR): arch,
    test resolution, sparse-loss weight, reported COCO mAP and backbone GFLOPs."""
    archs = [{"arch": s.name, "depth": s.depth, "ssi": s.sparse, "dcn": s.dcn, "about": s.doc}
             for s in sorted(_ARCHS.values(), key=lambda s: s.name)]
    # a released model is the detector on its backbone (`detect --arch DETECTOR`)
    entries = [{"name": e.name, "arch": e.arch, "detector_arch": f"faster_rcnn_{e.arch}",
                "fpn": e.with_fpn,
                "sparse_loss_weight": e.sparse_loss_weight, "test_short_side": e.test_short_side,
                "map": e.reported_map, "backbone_gflops": e.reported_backbone_gflops,
                "normalization": e.normalization} for e in zoo_entries()]
    if as_json:
        click.echo(json.dumps({"architectures": archs, "zoo": entries}, indent=2))
        return
    click.echo("Architectures (ssi-deploy ... --arch NAME):")
    print_table(["arch", "depth", "ssi", "dcn", "about"], [list(a.values()) for a in archs])
    click.echo("\nReleased official models (COCO val, Faster R-CNN + FPN, 1x):")
    print_table(["name", "arch (backbone)", "detector arch", "loss w", "short side", "mAP",
                 "backbone GFLOPs"],
                [[e["name"], e["arch"], e["detector_arch"], e["sparse_loss_weight"] or "-",
                  e["test_short_side"], e["map"], e["backbone_gflops"]] for e in entries])
