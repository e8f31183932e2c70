"""Detection with any backend: images in, boxes in original-image pixels out.

``open_detector`` gives one interface over the three sources ``detect`` and ``eval`` accept:
a registry arch with its checkpoint (PyTorch, the official test path), an ONNX export (ONNX
Runtime) or a TensorRT engine. The preprocessing comes from the export's manifest (test scale,
mean, std, pad), so ``--onnx`` and ``--engine`` need nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SSIError
from .coco import COCO_CLASSES
from .images import DEFAULT_TEST_SCALE, DetectionInput, make_batch, preprocess



@dataclass
class Detector:
    """A backend that runs a detector, with what it needs to prepare images."""

    backend: object  # ssi_deploy.backends.base.Backend
    source: str  # what runs, for reports
    test_scale: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad_multiple: int
    outputs: dict[str, str]  # role -> output name
    input_names: list[str]
    static_hw: tuple[int, int] | None = None
    static_batch: int | None = None
    mask_names: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] = tuple(COCO_CLASSES)

    def prepare(self, img_rgb: np.ndarray) -> DetectionInput:
        return preprocess(img_rgb, self.test_scale, self.mean, self.std, self.pad_multiple,
                          self.static_hw)

    def run(self, item: DetectionInput) -> tuple[list[dict], float | None, float]:
        """Detections of one prepared image, the mean mask density of its sampling layers
        (None when the backend gives no masks) and the run's seconds."""
        image, info = make_batch([item], self.static_hw, self.pad_multiple)
        if self.static_batch and self.static_batch > 1:  # a fixed batch: repeat the image
            image = np.repeat(image, self.static_batch, 0)
            info = np.repeat(info, self.static_batch, 0)
        t0 = time.perf_counter()
        out = self.backend.run({self.input_names[0]: image, self.input_names[1]: info})
        seconds = time.perf_counter() - t0
        dets = to_dicts(out, self.outputs, self.class_names)[0]
        masks = [out[n] for n in self.mask_names if n in out]
        density = float(np.mean([(m[0] > 0).mean() for m in masks])) if masks else None
        return dets, density, seconds

    def close(self) -> None:
        self.backend.close()


def to_dicts(outputs: dict, names: dict[str, str], class_names=COCO_CLASSES) -> list[list[dict]]:
    """Fixed-size outputs -> per image a list of {"box", "score", "label", "name"}."""
    from ..validation.detections import split_images

    result = []
    for img in split_images(outputs, names):
        dets = []
        for box, score, label in zip(img["boxes"], img["scores"], img["labels"]):
            label = int(label)
            dets.append({"box": [round(float(v), 3) for v in box],
                         "score": round(float(score), 6), "label": label,
                         "name": class_names[label] if 0 <= label < len(class_names) else str(label)})
        result.append(dets)
    return result


def _static(shape, axis):
    d = shape[axis] if shape is not None and len(shape) > axis else None
    return d if isinstance(d, int) and d > 0 else None


def open_detector(arch: str | None = None, checkpoint: str | Path | None = None,
                  onnx: str | Path | None = None, engine: str | Path | None = None,
                  sampling: str = "threshold", seed: int = 0,
                  test_scale: tuple[int, int] | None = None, device: str = "auto",
                  masks: bool = True) -> Detector:
    """The detector of exactly one source: ``arch`` (with ``checkpoint``, or seeded random
    weights), ``onnx`` or ``engine``. ``test_scale`` overrides the export's (or the official
    1667x1000). One-line errors for a wrong combination or a backbone-only export."""
    given = [n for n, v in (("--arch", arch), ("--onnx", onnx), ("--engine", engine)) if v]
    if len(given) != 1:
        raise SSIError("give exactly one model: --arch A [--checkpoint F], --onnx M or "
                       f"--engine E (got {', '.join(given) or 'none'})")
    if checkpoint is not None and arch is None:
        raise SSIError("--checkpoint goes with --arch; an --onnx file or --engine carries its "
                       "weights")
    if arch is not None:
        return _torch_detector(arch, checkpoint, sampling, seed, test_scale, masks)
    from ..backends.registry import create_backend
    from ..manifest import engine_manifest, read_manifest

    if onnx is not None:
        path = Path(onnx)
        manifest = read_manifest(path)
        _check_detector(manifest, path)
        backend = create_backend("onnxruntime", path, device=device)
        source = f"onnxruntime {path.name}"
    else:
        path = Path(engine)
        if not path.is_file():
            raise SSIError(f"engine not found: {path}")
        from ..backends.tensorrt_backend import engine_metadata
        manifest = engine_manifest(engine_metadata(path), str(path))
        _check_detector(manifest, path)
        backend = create_backend("tensorrt", path)
        source = f"tensorrt {path.name}"
    pre = manifest.preprocessing
    if pre.channel_order != "RGB":
        raise SSIError(f"{path}: channel order {pre.channel_order} is not supported by detect "
                       "(the official models take RGB); re-export it")
    shapes = backend.input_shapes
    names = backend.input_names
    image_shape = shapes.get(names[0])
    return Detector(backend, source, test_scale or pre.test_scale or DEFAULT_TEST_SCALE,
                    pre.mean, pre.std, pre.pad_multiple, manifest.detection_outputs, names,
                    static_hw=(_static(image_shape, 2), _static(image_shape, 3))
                    if _static(image_shape, 2) and _static(image_shape, 3) else None,
                    static_batch=_static(image_shape, 0),
                    mask_names=[o.name for o in manifest.outputs if o.kind == "mask"])


def _check_detector(manifest, path: Path) -> None:
    if not manifest.is_detector:
        raise SSIError(f"{path} is a {manifest.arch} backbone export without detection "
                       f"outputs; export the detector: ssi-deploy export --arch "
                       f"faster_rcnn_{manifest.arch.removeprefix('faster_rcnn_')} ...")


def _torch_detector(arch, checkpoint, sampling, seed, test_scale, masks) -> Detector:
    from ..backends.torch_backend import TorchBackend
    from ..models import get_arch
    from ..models.faster_rcnn import OUTPUT_ROLES
    from ..models.network import NORMALIZATION

    spec = get_arch(arch)
    if not spec.detector:
        raise SSIError(f"--arch {arch} is a backbone; detect needs a detector: "
                       f"--arch faster_rcnn_{arch}")
    backend = TorchBackend.from_arch(arch, checkpoint=checkpoint, sampling=sampling, seed=seed,
                                     expose_masks=masks and spec.sparse)
    model = backend.model
    roles = {role: name for name, role in OUTPUT_ROLES.items()}
    where = f"checkpoint {Path(checkpoint).name}" if checkpoint else "random weights"
    return Detector(backend, f"torch {arch} ({where})", test_scale or model.cfg.test_scale,
                    tuple(NORMALIZATION["mean"]), tuple(NORMALIZATION["std"]), 32, roles,
                    backend.input_names, mask_names=list(model.mask_names) if masks else [])
