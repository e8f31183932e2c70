"""Draw detections on an image (boxes and "name score" labels) and save it as PNG or JPEG."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from ..errors import SSIError
from ..outputs import atomic_output, check_output_path
from .coco import COCO_CLASSES

_SUFFIXES = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


def _colour(label: int) -> tuple[int, int, int]:
    """A fixed, well-separated BGR colour per label (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(img_rgb: np.ndarray, detections: list[dict], path: str | Path,
                    class_names=COCO_CLASSES, min_score: float = 0.3,
                    what: str = "output image") -> Path:
    """Write ``img_rgb`` (uint8 [H, W, 3]) with the detections scoring >= ``min_score`` (at
    least the best one, if any) drawn on it; the format follows the suffix (.png/.jpg)."""
    import cv2

    p = Path(path)
    ext = _SUFFIXES.get(p.suffix.lower())
    if ext is None:
        raise SSIError(f"{what} {p}: unknown image type {p.suffix or '(no suffix)'!r}; "
                       "end it in .png or .jpg")
    p = check_output_path(p, what)
    img = np.asarray(img_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 [H, W, 3] image, got {img.dtype} {img.shape}")
    canvas = np.ascontiguousarray(img[:, :, ::-1])  # cv2 draws and encodes BGR
    dets = sorted(detections, key=lambda d: -float(d["score"]))
    shown = [d for d in dets if float(d["score"]) >= min_score] or dets[:1]
    h, w = canvas.shape[:2]
    font, fscale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    for d in reversed(shown):  # best last, so it ends up on top
        label = int(d["label"])
        colour = _colour(label)
        x1, y1, x2, y2 = (int(round(float(v))) for v in d["box"])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
        name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
        text = f"{name} {float(d['score']):.2f}"
        (tw, th), base = cv2.getTextSize(text, font, fscale, thick)
        # above the box when there is room, inside it otherwise; kept within the image
        tx = min(max(x1, 0), max(w - tw - 2, 0))
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(max(y1, 0) + th + 2, h - base - 1)
        cv2.rectangle(canvas, (tx, ty - th - 2), (tx + tw + 2, ty + base), colour, -1)
        b, g, r = colour  # dark text on light colours, white on dark ones
        ink = (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)
        cv2.putText(canvas, text, (tx + 1, ty - 1), font, fscale, ink, thick, cv2.LINE_AA)
    ok, buf = cv2.imencode(ext, canvas)  # encode first: the file is written whole or not at all
    if not ok:
        raise SSIError(f"cannot encode {what} {p} as {ext[1:].upper()}")
    with atomic_output(p, what) as tmp:
        tmp.write_bytes(buf.tobytes())
    return p
