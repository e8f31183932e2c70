"""Model-zoo entries: one TOML file per released official model in the top-level ``models/``."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SSIError
from .models.registry import get_arch

ZOO_DIR = Path(os.environ.get("SSI_ZOO_DIR", Path(__file__).resolve().parents[1] / "models"))
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
        raise SSIError(f"model-zoo folder {zoo_dir} not found; set SSI_ZOO_DIR to the "
                       "repository's models/ folder")
    return [load_entry(p) for p in sorted(zoo_dir.glob("*.toml"))]
