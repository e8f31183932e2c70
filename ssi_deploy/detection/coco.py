"""COCO: class names and ids, result conversion, annotation loading, bbox mAP (pycocotools).

Label i (0..79, the detector's class i + 1 minus the background) <-> ``COCO_CLASSES[i]`` <->
``COCO_CATEGORY_IDS[i]``: mmdet 0.6 ``CocoDataset`` maps ``coco.getCatIds()`` (ascending ids)
to labels in order (``mmdet/datasets/coco.py``). Names are those of the COCO 2017 annotation
files (mmdet 0.6 spells them with underscores, e.g. 'traffic_light'; same order).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from ..errors import SSIError
from ..outputs import atomic_output, check_output_path

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
)
METRICS = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")  # COCOeval.stats[0:6]


def to_coco_results(image_id: int, detections: list[dict]) -> list[dict]:
    """Detections (original-image pixels, inclusive x2/y2) -> COCO result dicts. Width is
    ``x2 - x1 + 1`` as in mmdet 0.6 ``xyxy2xywh`` (``mmdet/core/evaluation/coco_utils.py``)."""
    out = []
    for d in detections:
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        out.append({"image_id": int(image_id),
                    "bbox": [x1, y1, x2 - x1 + 1.0, y2 - y1 + 1.0],
                    "score": float(d["score"]),
                    "category_id": COCO_CATEGORY_IDS[int(d["label"])]})
    return out


def _pycocotools():
    # pycocotools is the reference COCO evaluator (what mmdet 0.6 uses); an optional dependency
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise SSIError("COCO evaluation needs pycocotools: pip install pycocotools") from None
    return COCO, COCOeval


def load_coco(annotation_file: str | Path):
    """A pycocotools ``COCO`` of an instances JSON (its "loading annotations" chatter hidden)."""
    p = Path(annotation_file)
    if p.is_dir():
        raise SSIError(f"annotations {p} is a directory; give the instances JSON file, "
                       "e.g. annotations/instances_val2017.json")
    if not p.is_file():
        raise SSIError(f"annotation file not found: {p}")
    COCO, _ = _pycocotools()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SSIError(f"cannot read {p} as JSON ({e}); give a COCO instances JSON "
                       "file") from None
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise SSIError(f"{p} is not a COCO instances file: no {'/'.join(missing)} list; "
                       "give e.g. annotations/instances_val2017.json")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


def coco_images(coco, images_dir: str | Path, limit: int | None = None) -> list[tuple[int, Path]]:
    """(image_id, path) of the annotated images, by ascending id, the first ``limit``."""
    d = Path(images_dir)
    if not d.is_dir():
        raise SSIError(f"images folder not found: {d}; give the folder of the COCO images, "
                       "e.g. val2017")
    ids = sorted(coco.getImgIds())
    if limit is not None:
        ids = ids[:max(0, int(limit))]
    pairs = [(i, d / coco.imgs[i]["file_name"]) for i in ids]
    missing = [p for _, p in pairs if not p.is_file()]
    if missing:
        raise SSIError(f"{len(missing)} of {len(pairs)} annotated images are missing from {d} "
                       f"(first: {missing[0].name}); give the images folder that matches the "
                       "annotation file")
    return pairs


def evaluate(coco, results: list[dict], image_ids: list[int]) -> dict:
    """COCO bbox AP over ``image_ids`` (COCOeval; -1 where an area range has no ground
    truth, as pycocotools reports it). Its printout comes back as ``summary``."""
    _, COCOeval = _pycocotools()
    wanted = {int(i) for i in image_ids}
    results = [r for r in results if int(r["image_id"]) in wanted]
    if not results or not wanted:
        # loadRes fails on an empty list (it reads anns[0]); no detections -> AP 0
        stats = dict.fromkeys(METRICS, 0.0)
        stats["summary"] = "no detections: all AP are 0"
        return stats
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        dt = coco.loadRes(results)
        ev = COCOeval(coco, dt, "bbox")
        ev.params.imgIds = sorted(wanted)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {k: float(v) for k, v in zip(METRICS, ev.stats[:6])}
    stats["summary"] = text.getvalue()
    return stats


def make_synthetic_coco(folder: str | Path, n_images: int = 3, seed: int = 0,
                        size: tuple[int, int] = (96, 128)) -> Path:
    """A tiny COCO-style set for tests and the demo: ``n_images`` PNGs of (h, w) = ``size``
    (noise with a few filled rectangles) in folder/images and folder/instances.json with the
    rectangles as boxes and all 80 categories. Returns the JSON path."""
    import cv2

    folder = Path(folder)
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    json_path = check_output_path(folder / "instances.json", "synthetic annotations")
    rng = np.random.default_rng(seed)
    h, w = size
    images, anns = [], []
    for i in range(1, n_images + 1):
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
        for _ in range(int(rng.integers(2, 5))):
            bw, bh = (int(rng.integers(12, max(13, s // 2))) for s in (w, h))
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            # filled cv2.rectangle covers x1..x1+bw-1 inclusive: the legacy +1 box of width bw
            cv2.rectangle(img, (x1, y1), (x1 + bw - 1, y1 + bh - 1), colour, -1)
            anns.append({"id": len(anns) + 1, "image_id": i,  # ids from 1: COCOeval needs > 0
                         "category_id": COCO_CATEGORY_IDS[int(rng.integers(0, 80))],
                         "bbox": [x1, y1, bw, bh], "area": bw * bh, "iscrowd": 0})
        name = f"synthetic_{i:06d}.png"
        ok, buf = cv2.imencode(".png", img)  # encode, then write atomically (never half-written)
        if not ok:
            raise SSIError(f"cannot encode {name} as PNG")
        target = check_output_path(img_dir / name, "synthetic image")
        with atomic_output(target, "synthetic image") as tmp:
            tmp.write_bytes(buf.tobytes())
        images.append({"id": i, "file_name": name, "height": h, "width": w})
    cats = [{"id": c, "name": n, "supercategory": "object"}
            for c, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES)]
    with atomic_output(json_path, "synthetic annotations") as tmp:
        tmp.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return json_path
