"""Registry of model architectures (in the manner of timm): name -> spec, one place."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SSIError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    depth: int
    sparse: bool
    dcn: bool
    doc: str

    @property
    def dense_name(self) -> str:
        return self.name.removeprefix("sparse_")


_ARCHS: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    _ARCHS[spec.name] = spec
    return spec


for _depth in (50, 101):
    register(ArchSpec(f"resnet{_depth}", _depth, False, False, f"dense ResNet-{_depth}"))
    register(ArchSpec(f"sparse_resnet{_depth}", _depth, True, False,
                      f"SSI ResNet-{_depth}: every bottleneck sampled + interpolated"))
register(ArchSpec("resnet101_dcn", 101, False, True, "dense ResNet-101, DCNv1 in stages 2-4"))
register(ArchSpec("sparse_resnet101_dcn", 101, True, True,
                  "SSI ResNet-101, DCNv1 in stages 2-4 (the official released backbone)"))


def list_models() -> list[str]:
    return sorted(_ARCHS)


def get_arch(name: str) -> ArchSpec:
    try:
        return _ARCHS[name]
    except KeyError:
        raise SSIError(f"unknown architecture {name!r}; choose one of: "
                       f"{', '.join(list_models())} (see `ssi-deploy zoo`)") from None


def dense_counterpart(name: str) -> str:
    return get_arch(name).dense_name
