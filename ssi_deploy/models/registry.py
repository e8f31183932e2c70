"""Registry of model architectures (in the manner of timm): name -> spec, one place.

Backbones are ``[sparse_]resnet{50,101}[_dcn]``; every backbone also has a detector,
``faster_rcnn_<backbone>`` (Faster R-CNN + FPN of mmdetection v0.6, the released models)."""

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
    detector: bool = False  # Faster R-CNN + FPN around the backbone

    @property
    def backbone_name(self) -> str:
        return self.name.removeprefix(DETECTOR_PREFIX)

    @property
    def dense_name(self) -> str:
        """The same architecture with dense blocks (a detector stays a detector)."""
        prefix = DETECTOR_PREFIX if self.detector else ""
        return prefix + self.backbone_name.removeprefix("sparse_")


DETECTOR_PREFIX = "faster_rcnn_"
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
for _spec in list(_ARCHS.values()):
    register(ArchSpec(DETECTOR_PREFIX + _spec.name, _spec.depth, _spec.sparse, _spec.dcn,
                      f"Faster R-CNN + FPN (mmdet 0.6) on {_spec.doc}", detector=True))


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
