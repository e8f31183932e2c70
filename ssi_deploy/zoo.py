"""Model-zoo entries: one TOML file per released official model, shipped as package data in
``ssi_deploy/zoo/`` (next to this module; ``SSI_ZOO_DIR`` points elsewhere, e.g. at a folder of
one's own entries)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SSIError
from .models.registry import get_arch

# The package-data folder ssi_deploy/zoo/ (a plain folder, no __init__.py: ``ssi_deploy.zoo``
# stays this module), installed with the package by pyproject's package-data.
PACKAGE_ZOO_DIR = Path(__file__).resolve().parent / "zoo"
ZOO_DIR = Path(os.environ.get("SSI_ZOO_DIR") or PACKAGE_ZOO_DIR)
REQUIRED = ("name", "arch", "with_fpn", "sparse_loss_weight", "test_short_side", "reported_map",
            "reported_backbone_gflops", "normalization")


@dataclass(frozen=True)
class ZooEntry:
    name: str
    arch: str
    with_fpn: bool
    sparse_loss_weight: float
    test_short_side: int
    reported_map: float
    reported_backbone_gflops: float
    normalization: dict
    extra: dict = field(default_factory=dict)


def load_entry(path: Path) -> ZooEntry:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SSIError(f"model-zoo entry {path} is not valid TOML: {e}") from None
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise SSIError(f"model-zoo entry {path} lacks {', '.join(missing)}")
    get_arch(data["arch"])  # an entry must name a registered architecture
    known = {k: data.pop(k) for k in REQUIRED}
    return ZooEntry(**known, extra=data)


def zoo_entries(zoo_dir: Path = ZOO_DIR) -> list[ZooEntry]:
    if not zoo_dir.is_dir():
        if zoo_dir == PACKAGE_ZOO_DIR:
            raise SSIError(f"model-zoo folder {zoo_dir} not found: the installation lacks its "
                           "package data; reinstall ssi-deploy (pip install .) or set SSI_ZOO_DIR")
        raise SSIError(f"model-zoo folder {zoo_dir} not found; set SSI_ZOO_DIR to a folder of "
                       "entries (*.toml) or unset it for the installed ones")
    return [load_entry(p) for p in sorted(zoo_dir.glob("*.toml"))]
