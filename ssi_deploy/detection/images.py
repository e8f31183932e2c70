"""Detection preprocessing exactly as the official test pipeline (mmdetection v0.6, mmcv 0.2.8).

Read (uint8, ``load_image``), keep-ratio rescale to the test scale with cv2 INTER_LINEAR on the
uint8 image, float32 ``(x - mean) / std`` in RGB, zero pad bottom/right to a multiple of 32.
Sources (see docs/detector-spec.md): ``mmdet/datasets/transforms.py:26-49`` (ImageTransform),
mmcv ``image/transforms/resize.py`` (imrescale), ``normalize.py``, ``geometry.py`` (impad).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SSIError
from ..validation.inputs import DEFAULT_MEAN, DEFAULT_STD, PAD_MULTIPLE, _resize

log = logging.getLogger("ssi_deploy")

DEFAULT_TEST_SCALE = (1667, 1000)  # cfg:1 ``res``; img_scale of the test pipeline (cfg:148)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_test_scale(text: str) -> tuple[int, int]:
    """``"1667x1000"`` -> (1667, 1000) as (long, short); the order given does not matter
    (mmcv's imrescale takes max/min of the pair)."""
    parts = str(text).strip().lower().replace("*", "x").split("x")
    try:
        dims = [int(p.strip()) for p in parts]
    except ValueError:
        dims = []
    if len(dims) != 2 or min(dims) <= 0:
        raise SSIError(f"--test-scale {text!r}: expected LONGxSHORT with positive integers, "
                       "e.g. 1667x1000")
    return max(dims), min(dims)


def rescaled_size(h: int, w: int, test_scale=DEFAULT_TEST_SCALE) -> tuple[int, int, float]:
    """mmcv 0.2.8 imrescale: ``sf = min(long/max(h, w), short/min(h, w))``; sizes by
    ``int(x*sf + 0.5)`` (mmcv ``_scale_size``; not Python's round, which rounds .5 to even)."""
    sf = min(max(test_scale) / max(h, w), min(test_scale) / min(h, w))
    return int(h * float(sf) + 0.5), int(w * float(sf) + 0.5), sf


@dataclass
class DetectionInput:
    image: np.ndarray               # float32 [3, Hp, Wp], normalised, zero padded
    img_shape: tuple[int, int]      # (h, w) resized, unpadded (boxes are clamped to it)
    scale_factor: float             # boxes / scale_factor -> original-image pixels
    original_hw: tuple[int, int]
    padded_hw: tuple[int, int]


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def preprocess(img_rgb_uint8: np.ndarray, test_scale=DEFAULT_TEST_SCALE, mean=DEFAULT_MEAN,
               std=DEFAULT_STD, pad_multiple: int = PAD_MULTIPLE,
               static_hw: tuple[int, int] | None = None) -> DetectionInput:
    """One RGB uint8 [H, W, 3] image -> the network input and its meta, as the official
    ImageTransform does. ``static_hw``: a fixed model input size to pad to exactly; an image
    that would not fit is scaled down further (with a warning)."""
    img = np.asarray(img_rgb_uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 [H, W, 3] image, got {img.dtype} {img.shape}")
    h0, w0 = img.shape[:2]
    h, w, sf = rescaled_size(h0, w0, test_scale)
    if static_hw is not None:
        th, tw = static_hw
        if h > th or w > tw:
            fit = min(sf, th / h0, tw / w0)
            log.warning("image %dx%d rescaled to %dx%d does not fit the model's fixed input "
                        "%dx%d; scaling it by %.4f instead of %.4f (detections differ from "
                        "the official test scale)", w0, h0, w, h, tw, th, fit, sf)
            sf = fit
            h, w = min(th, int(h0 * float(sf) + 0.5)), min(tw, int(w0 * float(sf) + 0.5))
        ph, pw = th, tw
    else:
        ph, pw = _round_up(h, pad_multiple), _round_up(w, pad_multiple)
    # _resize: cv2.resize INTER_LINEAR on the uint8 image, then float32 (mmcv imrescale);
    # per-channel, so resizing RGB equals the official BGR resize followed by bgr2rgb.
    x = _resize(img, h, w)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)  # mmcv imnormalize
    out = np.zeros((3, ph, pw), np.float32)  # impad: zeros after normalising
    out[:, :h, :w] = x.transpose(2, 0, 1)
    return DetectionInput(out, (h, w), float(sf), (h0, w0), (ph, pw))


def make_batch(inputs: list[DetectionInput], static_hw: tuple[int, int] | None = None,
               pad_multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, np.ndarray]:
    """``image`` [B, 3, H, W] float32 zero padded to the largest input (a multiple of
    ``pad_multiple``, or exactly ``static_hw``) and ``image_info`` [B, 3] float32 rows
    (img_h, img_w, scale_factor)."""
    if not inputs:
        raise ValueError("make_batch needs at least one input")
    hmax = max(d.image.shape[1] for d in inputs)
    wmax = max(d.image.shape[2] for d in inputs)
    if static_hw is not None:
        H, W = static_hw
        if hmax > H or wmax > W:
            raise ValueError(f"an input of {hmax}x{wmax} does not fit static_hw {H}x{W}; "
                             "preprocess with the same static_hw")
    else:
        H, W = _round_up(hmax, pad_multiple), _round_up(wmax, pad_multiple)
    image = np.zeros((len(inputs), 3, H, W), np.float32)
    info = np.zeros((len(inputs), 3), np.float32)
    for i, d in enumerate(inputs):
        image[i, :, :d.image.shape[1], :d.image.shape[2]] = d.image
        info[i] = (d.img_shape[0], d.img_shape[1], d.scale_factor)
    return image, info


def list_images(paths: list[str | Path]) -> list[Path]:
    """Files as given, and each folder's image files (by suffix, case-insensitive, sorted,
    not recursive); duplicates dropped, first occurrence kept."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SSIError(f"folder {p} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                               "give a folder of images or image files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise SSIError(f"image or folder not found: {p}")
    if not out:
        raise SSIError("no images given; pass image files or folders of images")
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]
