"""The detections comparator: a backend's boxes against the reference's, by matching.

Detections are not compared element by element: a score on the 0.05 cut, an IoU on an NMS
threshold or a tie in the top-100 cut flips between implementations (and reorders the rest),
so each reference box is matched to a test box of the same label (greedily, by descending
reference score, the unmatched test box of highest IoU; IoU with the legacy +1 convention).

    recall@t     = share of reference boxes matched at IoU >= t (t = 0.5, 0.9)
    precision@t  = share of test boxes matched at IoU >= t
    score_diff   = |score_test - score_ref| over the pairs matched at 0.5 (max, mean)
    box_diff     = max |coordinate difference| in pixels over those pairs
    marginal     = an unmatched box whose score is within score_atol of a cut that may drop
                   it on the other side: the score threshold (0.05), or, when its side holds
                   the full max_per_img, that side's last (lowest) score (a tie at the top-k
                   cut keeps one box here and another there)
    pass        <=> both sides finite, and at IoU 0.5 and 0.9 at most ``allowed`` boxes of
                    either side unmatched and not marginal, allowed = max(max_misses,
                    floor((1 - min_recall) n)), and max score_diff <= score_atol

Defaults by the exported dtype (the backbone's features differ by float rounding, fp16 far
more): fp32 min_recall 0.98 at 0.5 and 0.95 at 0.9, score_atol 1e-3, max_misses 2; fp16
0.9 / 0.8, 2e-2, 4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULTS = {
    "fp32": {"min_recall_50": 0.98, "min_recall_90": 0.95, "score_atol": 1e-3, "max_misses": 2},
    "fp16": {"min_recall_50": 0.9, "min_recall_90": 0.8, "score_atol": 2e-2, "max_misses": 4},
}


@dataclass
class DetectionTolerance:
    min_recall_50: float = 0.98
    min_recall_90: float = 0.95
    score_atol: float = 1e-3
    max_misses: int = 2
    score_thr: float = 0.05  # the detector's score cut (the manifest's detector.score_thr)

    @classmethod
    def for_dtype(cls, dtype: str | None) -> "DetectionTolerance":
        return cls(**DEFAULTS.get(dtype or "fp32", DEFAULTS["fp32"]))


@dataclass
class DetectionComparison:
    name: str
    images: int
    ref_count: int
    test_count: int
    matched_50: int = 0
    matched_90: int = 0  # pairs are one-to-one: as many test boxes are matched
    max_score_diff: float = 0.0
    mean_score_diff: float = 0.0
    max_box_diff: float = 0.0
    marginal_50: int = 0  # unmatched at IoU 0.5 but at a cut (see the module docstring)
    marginal_90: int = 0
    nonfinite_ref: int = 0
    nonfinite_test: int = 0
    allowed_misses_50: int = 0
    allowed_misses_90: int = 0
    tolerance: dict = field(default_factory=dict)
    passed: bool = False

    @property
    def recall_50(self) -> float:
        return self.matched_50 / self.ref_count if self.ref_count else 1.0

    @property
    def recall_90(self) -> float:
        return self.matched_90 / self.ref_count if self.ref_count else 1.0

    @property
    def precision_50(self) -> float:
        return self.matched_50 / self.test_count if self.test_count else 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(recall_50=self.recall_50, recall_90=self.recall_90,
                 precision_50=self.precision_50)
        return d

    def failure(self) -> str | None:
        if self.passed:
            return None
        if self.nonfinite_ref or self.nonfinite_test:
            return (f"{self.name}: non-finite boxes or scores (reference {self.nonfinite_ref}, "
                    f"backend {self.nonfinite_test})")
        return (f"{self.name}: recall of the {self.ref_count} reference boxes {self.recall_50:.3f} "
                f"at IoU 0.5 and {self.recall_90:.3f} at 0.9 (backend {self.test_count} boxes, "
                f"precision {self.precision_50:.3f}; {self.marginal_50} unmatched at a score cut), "
                f"max score difference {self.max_score_diff:.2g} (allowed "
                f"{self.allowed_misses_50} / "
                f"{self.allowed_misses_90} unmatched, score atol {self.tolerance.get('score_atol')})")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of [N, 4] and [M, 4] inclusive boxes (areas with +1, as the legacy NMS). Corners
    are ordered first: a box narrower than a pixel in the resized image comes back inverted
    (x2 < x1) once divided by a scale factor below 1, and two equal such boxes must match."""
    def ordered(x):
        x = x.astype(np.float64)
        return np.stack([np.minimum(x[:, 0], x[:, 2]), np.minimum(x[:, 1], x[:, 3]),
                         np.maximum(x[:, 0], x[:, 2]), np.maximum(x[:, 1], x[:, 3])], 1)

    a = ordered(a)[:, None, :]
    b = ordered(b)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def split_images(outputs: dict[str, np.ndarray], names: dict[str, str]) -> list[dict]:
    """The fixed-size outputs -> per image {"boxes" [K, 4], "scores" [K], "labels" [K]} of the
    valid detections (the first ``count`` slots)."""
    boxes = np.asarray(outputs[names["boxes"]], dtype=np.float64)
    scores = np.asarray(outputs[names["scores"]], dtype=np.float64)
    labels = np.asarray(outputs[names["labels"]]).astype(np.int64)
    count = np.asarray(outputs[names["count"]]).reshape(-1).astype(np.int64)
    out = []
    for i in range(boxes.shape[0]):
        k = int(np.clip(count[i], 0, boxes.shape[1]))
        out.append({"boxes": boxes[i, :k], "scores": scores[i, :k], "labels": labels[i, :k]})
    return out


def _marginal(side: dict, unmatched: list[int], capacity: int, tol: DetectionTolerance) -> int:
    """How many of ``unmatched`` sit at a cut (the score threshold, or the top-k cut of a
    full side) within the score tolerance."""
    scores = side["scores"]
    if not unmatched:
        return 0
    cut = scores.min() if len(scores) >= capacity else -np.inf
    s = scores[unmatched]
    return int(((s <= tol.score_thr + tol.score_atol) | (s <= cut + tol.score_atol)).sum())


def _match(ref: dict, test: dict, thr: float) -> list[tuple[int, int]]:
    pairs = []
    used = np.zeros(len(test["scores"]), bool)
    if not len(ref["scores"]) or not len(test["scores"]):
        return pairs
    iou = iou_matrix(ref["boxes"], test["boxes"])
    same = ref["labels"][:, None] == test["labels"][None, :]
    for i in np.argsort(-ref["scores"], kind="stable"):
        cand = np.where(same[i] & ~used & (iou[i] >= thr), iou[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= thr:
            used[j] = True
            pairs.append((int(i), j))
    return pairs


def compare_detections(ref: dict[str, np.ndarray], test: dict[str, np.ndarray],
                       names: dict[str, str], tol: DetectionTolerance,
                       name: str = "detections") -> DetectionComparison:
    """Compare the detection outputs (``names``: role -> output name) of two runs."""
    r_imgs, t_imgs = split_images(ref, names), split_images(test, names)
    c = DetectionComparison(name, len(r_imgs), sum(len(x["scores"]) for x in r_imgs),
                            sum(len(x["scores"]) for x in t_imgs), tolerance=asdict(tol))
    c.nonfinite_ref = int(sum((~np.isfinite(x["boxes"])).any(1).sum()
                              + (~np.isfinite(x["scores"])).sum() for x in r_imgs))
    c.nonfinite_test = int(sum((~np.isfinite(x["boxes"])).any(1).sum()
                               + (~np.isfinite(x["scores"])).sum() for x in t_imgs))
    diffs, box_diff = [], 0.0
    capacity = int(np.asarray(ref[names["boxes"]]).shape[1])
    excused = {0.5: 0, 0.9: 0}
    for r, t in zip(r_imgs, t_imgs):
        p50, p90 = _match(r, t, 0.5), _match(r, t, 0.9)
        c.matched_50 += len(p50)
        c.matched_90 += len(p90)
        for thr, pairs in ((0.5, p50), (0.9, p90)):
            um_r = sorted(set(range(len(r["scores"]))) - {i for i, _ in pairs})
            um_t = sorted(set(range(len(t["scores"]))) - {j for _, j in pairs})
            excused[thr] += max(_marginal(r, um_r, capacity, tol),
                                _marginal(t, um_t, capacity, tol))
        for i, j in p50:
            diffs.append(abs(t["scores"][j] - r["scores"][i]))
            box_diff = max(box_diff, float(np.abs(t["boxes"][j] - r["boxes"][i]).max()))
    if len(r_imgs) != len(t_imgs):
        c.passed = False
        return c
    if diffs and np.all(np.isfinite(diffs)):
        c.max_score_diff, c.mean_score_diff = float(np.max(diffs)), float(np.mean(diffs))
    c.max_box_diff = box_diff
    n = max(c.ref_count, c.test_count)
    c.allowed_misses_50 = max(tol.max_misses, int(np.floor((1 - tol.min_recall_50) * n + 1e-9)))
    c.allowed_misses_90 = max(tol.max_misses, int(np.floor((1 - tol.min_recall_90) * n + 1e-9)))
    c.marginal_50, c.marginal_90 = excused[0.5], excused[0.9]
    misses_50 = max(c.ref_count, c.test_count) - c.matched_50 - c.marginal_50
    misses_90 = max(c.ref_count, c.test_count) - c.matched_90 - c.marginal_90
    c.passed = (not c.nonfinite_ref and not c.nonfinite_test
                and misses_50 <= c.allowed_misses_50 and misses_90 <= c.allowed_misses_90
                and c.max_score_diff <= tol.score_atol)
    return c


def format_detection_rows(items: list[DetectionComparison]) -> list[str]:
    """Table rows of the detection comparisons (for ``compare.format_table``)."""
    if not items:
        return []
    hdr = (f"{'detections':<12} {'images':>6} {'ref':>6} {'test':>6} {'recall@.5':>10} "
           f"{'recall@.9':>10} {'prec@.5':>8} {'at_cut':>6} {'max_dscore':>10} {'max_dbox':>9}"
           "  result")
    lines = [hdr, "-" * len(hdr)]
    for d in items:
        lines.append(f"{d.name:<12} {d.images:>6d} {d.ref_count:>6d} {d.test_count:>6d} "
                     f"{d.recall_50:>10.4f} {d.recall_90:>10.4f} {d.precision_50:>8.4f} "
                     f"{d.marginal_50:>6d} "
                     f"{d.max_score_diff:>10.2g} {d.max_box_diff:>9.3g}  "
                     f"{'ok' if d.passed else 'FAIL'}")
    return lines
