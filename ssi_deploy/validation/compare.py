"""Comparators: reference outputs versus a backend's outputs, apart from any backend.

Feature outputs get error statistics and a per-output tolerance check; a detector's outputs
(kind ``detections``) are matched box by box (``detections.py``); sampling masks
(outputs named ``mask_<layer>``) get an agreement report of their own, because in the
deterministic ``threshold`` mode a logit that lands on the other side of 0 flips a position
(spec section 7): that is reported as mask disagreement, not folded into feature error.

Definitions (float64 arithmetic, over the elements that are finite in both arrays):

    err      = |test - ref|
    max_abs  = max(err)            mean_abs = mean(err)
    median_abs = median(err)       p99_abs  = 99th percentile of err (linear interpolation)
    max_rel  = max(err / max(|ref|, REL_FLOOR))        REL_FLOOR = 1e-6
    cosine   = <ref, test> / (|ref| |test|)   (1 when both are all zero, 0 when one is)
    pass     <=> shapes equal, no NaN/Inf anywhere on either side (non-finite values get a
                 failure line of their own), and err <= atol + rtol * |ref| for every element
                 (numpy.allclose's rule)

Default tolerances depend on the exported dtype. The default atol is scaled to the output:
atol = atol_scale * max|ref| (features of an un-normalised backbone reach 100 and more, and
float32 rounding through 33 blocks is about 1e-6 of that scale); an explicit ``--atol`` is
absolute.  fp32: atol_scale 2e-5, rtol 1e-3;  fp16: atol_scale 1e-2, rtol 1e-2.

Masks (sampled = value > 0):

    agreement   = share of positions whose sampled/unsampled decision is equal
    count_diff  = sampled(test) - sampled(ref)
    pass        <=> differing <= max(max_flips, floor((1 - min_agreement) * positions))
                    (a handful of flips passes even on the tiny maps of small inputs)

When the masks differ, ``runner.validate`` re-runs the reference with the backend's masks
(``SSINetwork.set_mask_override``) and judges the features against that run: a flipped
position changes everything downstream of it by design, and that is the mask report's
business, not the feature error's. The free-running feature comparison is kept in the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import SSIError
from .detections import (DetectionComparison, DetectionTolerance, compare_detections,
                         format_detection_rows)

REL_FLOOR = 1e-6
MASK_PREFIX = "mask_"

# Default tolerances by the dtype the model was exported in: (atol, rtol, min mask agreement).
DEFAULT_TOLERANCES = {
    "fp32": {"atol_scale": 2e-5, "rtol": 1e-3, "min_mask_agreement": 0.999, "max_mask_flips": 2},
    "fp16": {"atol_scale": 1e-2, "rtol": 1e-2, "min_mask_agreement": 0.99, "max_mask_flips": 4},
}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "fp32": "fp32",
                  "float16": "fp16", "half": "fp16", "fp16": "fp16"}


def is_mask_name(name: str) -> bool:
    return name.startswith(MASK_PREFIX)


def dtype_key(dtype: str | None) -> str:
    """Normalise a dtype name (``float16``, ``fp16``, ``half`` ...) to ``fp32`` or ``fp16``."""
    if dtype is None:
        return "fp32"
    key = _DTYPE_ALIASES.get(str(dtype).lower().replace("torch.", ""))
    if key is None:
        raise SSIError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPE_ALIASES)}")
    return key


@dataclass
class Tolerance:
    """``atol`` absolute; when None, ``atol_scale * max|ref|`` of the output compared."""

    atol: float | None
    rtol: float
    atol_scale: float = 0.0

    def effective_atol(self, ref: np.ndarray) -> float:
        if self.atol is not None:
            return float(self.atol)
        r = np.abs(np.asarray(ref, dtype=np.float64))
        r = r[np.isfinite(r)]
        return float(self.atol_scale * r.max()) if r.size else 0.0


@dataclass
class Tolerances:
    """Per-output tolerances: explicit entries by output name, else the default pair."""

    default: Tolerance
    per_output: dict[str, Tolerance] = field(default_factory=dict)
    min_mask_agreement: float = 0.999
    max_mask_flips: int = 0
    detections: DetectionTolerance = field(default_factory=DetectionTolerance)

    def for_output(self, name: str) -> Tolerance:
        return self.per_output.get(name, self.default)

    @classmethod
    def for_dtype(cls, dtype: str | None) -> "Tolerances":
        d = DEFAULT_TOLERANCES[dtype_key(dtype)]
        return cls(Tolerance(None, d["rtol"], d["atol_scale"]), {}, d["min_mask_agreement"],
                   d["max_mask_flips"], DetectionTolerance.for_dtype(dtype_key(dtype)))

    @classmethod
    def from_specs(cls, dtype: str | None, atol: list[str] | tuple[str, ...] = (),
                   rtol: list[str] | tuple[str, ...] = (),
                   output_names: list[str] | None = None,
                   min_mask_agreement: float | None = None,
                   max_mask_flips: int | None = None) -> "Tolerances":
        """Build from CLI specs: each entry is ``VALUE`` (every output) or ``NAME=VALUE``."""
        tol = cls.for_dtype(dtype)
        if min_mask_agreement is not None:
            if not 0.0 <= min_mask_agreement <= 1.0:
                raise SSIError(f"--min-mask-agreement {min_mask_agreement}: must be in [0, 1]")
            tol.min_mask_agreement = float(min_mask_agreement)
        if max_mask_flips is not None:
            if max_mask_flips < 0:
                raise SSIError(f"--max-mask-flips {max_mask_flips}: must be >= 0")
            tol.max_mask_flips = int(max_mask_flips)
        for kind, specs in (("atol", atol), ("rtol", rtol)):
            for name, value in parse_tolerance_specs(kind, specs, output_names).items():
                if name is None:
                    setattr(tol.default, kind, value)
                    for t in tol.per_output.values():
                        setattr(t, kind, value)
                else:
                    t = tol.per_output.setdefault(
                        name, Tolerance(tol.default.atol, tol.default.rtol, tol.default.atol_scale))
                    setattr(t, kind, value)
        return tol


def parse_tolerance_specs(kind: str, specs, output_names: list[str] | None = None) -> dict:
    """``["1e-3", "c5=1e-2"]`` -> ``{None: 1e-3, "c5": 1e-2}``; one-line errors on mistakes."""
    out: dict[str | None, float] = {}
    for spec in specs or ():
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.rpartition("=")
            name = name.strip() if sep else None
            try:
                v = float(value)
            except ValueError:
                raise SSIError(f"--{kind} {part!r}: expected VALUE or NAME=VALUE with a number") from None
            if v < 0 or not np.isfinite(v):
                raise SSIError(f"--{kind} {part!r}: the tolerance must be a finite number >= 0")
            if name is not None and output_names is not None and name not in output_names:
                raise SSIError(f"--{kind} {part!r}: no output named {name!r}; outputs: "
                               f"{', '.join(output_names)}")
            out[name] = v
    # A bare value is the default; a named value overrides it whatever the order given.
    return dict(sorted(out.items(), key=lambda kv: kv[0] is not None))


@dataclass
class OutputComparison:
    name: str
    shape: list[int]
    ref_shape: list[int]
    max_abs: float
    max_rel: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    cosine: float
    nan_ref: int
    inf_ref: int
    nan_test: int
    inf_test: int
    atol: float  # the absolute tolerance applied (after scaling, for the default)
    rtol: float
    violations: int  # elements with err > atol + rtol*|ref| (non-finite mismatches included)
    passed: bool
    atol_rule: str = "given"  # "given", or "<scale> x max|ref|"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MaskComparison:
    name: str
    shape: list[int]
    positions: int
    sampled_ref: int
    sampled_test: int
    count_diff: int
    differing: int
    agreement: float
    density_ref: float
    density_test: float
    max_abs_value: float  # largest |test - ref| of mask values where both sampled (soft masks)
    min_agreement: float
    allowed_flips: int  # differing positions tolerated on this layer
    passed: bool
    nan_ref: int = 0
    nan_test: int = 0
    # after a replay of the backend's masks (None: no replay, judged free-running):
    replayed_flips: int | None = None  # the reference's own decisions that still differ
    near_threshold: int | None = None  # of those, within the error band of the decision
    worst_margin: float | None = None  # max |z| / band over the replayed flips (<= 1: rounding)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def judged_by_replay(self) -> bool:
        return self.replayed_flips is not None


def nonfinite_line(o) -> str | None:
    """'p2: non-finite values: 12 NaN and 0 Inf in the backend's output; ...' (or None)."""
    parts = []
    test_bad = (o.nan_test, getattr(o, "inf_test", 0))
    ref_bad = (o.nan_ref, getattr(o, "inf_ref", 0))
    if any(test_bad):
        parts.append(f"{test_bad[0]} NaN and {test_bad[1]} Inf in the backend's output")
    if any(ref_bad):
        parts.append(f"{ref_bad[0]} NaN and {ref_bad[1]} Inf in the PyTorch reference (non-finite "
                     "weights? see `ssi-deploy inspect-checkpoint`)")
    return f"{o.name}: non-finite values: " + "; ".join(parts) if parts else None


def mask_failure_line(m: "MaskComparison") -> str:
    if m.judged_by_replay:
        far = m.replayed_flips - m.near_threshold
        band = (f"up to {m.worst_margin:.3g}x the error band" if np.isfinite(m.worst_margin)
                else "grid-prior positions, which are always kept")
        why = f"{far} far from the threshold ({band})" if far else \
            f"more than the {m.allowed_flips} allowed"
        return (f"{m.name}: {m.replayed_flips} of {m.positions} sampling decisions differ given "
                f"the backend's earlier masks, {why}")
    return (f"{m.name}: {m.differing} of {m.positions} mask positions differ "
            f"(agreement {m.agreement:.6f}; {m.allowed_flips} allowed)")


def error_stats(ref: np.ndarray, test: np.ndarray) -> dict:
    """The error statistics of the module docstring (no tolerance involved)."""
    ref = np.asarray(ref)
    test = np.asarray(test)
    r = ref.astype(np.float64).ravel()
    t = test.astype(np.float64).ravel()
    stats = {"nan_ref": int(np.isnan(r).sum()), "inf_ref": int(np.isinf(r).sum()),
             "nan_test": int(np.isnan(t).sum()), "inf_test": int(np.isinf(t).sum())}
    fin = np.isfinite(r) & np.isfinite(t)
    rf, tf = r[fin], t[fin]
    if rf.size == 0:
        stats.update(max_abs=float("nan"), max_rel=float("nan"), mean_abs=float("nan"),
                     median_abs=float("nan"), p99_abs=float("nan"), cosine=float("nan"))
        return stats
    err = np.abs(tf - rf)
    nr, nt = np.linalg.norm(rf), np.linalg.norm(tf)
    if nr == 0 and nt == 0:
        cos = 1.0
    elif nr == 0 or nt == 0:
        cos = 0.0
    else:
        cos = float(np.dot(rf, tf) / (nr * nt))
    stats.update(max_abs=float(err.max()),
                 max_rel=float((err / np.maximum(np.abs(rf), REL_FLOOR)).max()),
                 mean_abs=float(err.mean()), median_abs=float(np.median(err)),
                 p99_abs=float(np.percentile(err, 99)), cosine=cos)
    return stats


def compare_output(name: str, ref: np.ndarray, test: np.ndarray, tol: Tolerance) -> OutputComparison:
    ref = np.asarray(ref)
    test = np.asarray(test)
    rule = "given" if tol.atol is not None else f"{tol.atol_scale:g} x max|ref|"
    if ref.shape != test.shape:
        nan = float("nan")
        return OutputComparison(name, list(test.shape), list(ref.shape), nan, nan, nan, nan, nan,
                                nan, 0, 0, 0, 0, nan, tol.rtol, int(max(ref.size, test.size)),
                                False, rule)
    atol = tol.effective_atol(ref)
    st = error_stats(ref, test)
    r = ref.astype(np.float64)
    t = test.astype(np.float64)
    # numpy's rule; a NaN or Inf on either side is never close (an all-NaN pair is a failure)
    close = np.isclose(t, r, rtol=tol.rtol, atol=atol) & np.isfinite(t) & np.isfinite(r)
    violations = int(close.size - close.sum())
    return OutputComparison(name, list(test.shape), list(ref.shape), st["max_abs"], st["max_rel"],
                            st["mean_abs"], st["median_abs"], st["p99_abs"], st["cosine"],
                            st["nan_ref"], st["inf_ref"], st["nan_test"], st["inf_test"],
                            atol, tol.rtol, violations, violations == 0, rule)


def compare_mask(name: str, ref: np.ndarray, test: np.ndarray, min_agreement: float,
                 max_flips: int = 0) -> MaskComparison:
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape:
        raise SSIError(f"mask {name}: shape {list(test.shape)} differs from the reference's "
                       f"{list(ref.shape)}")
    nan_r, nan_t = int((~np.isfinite(ref)).sum()), int((~np.isfinite(test)).sum())
    sr, st = ref > 0, test > 0
    n = int(ref.size)
    differing = int((sr != st).sum())
    agreement = 1.0 if n == 0 else 1.0 - differing / n
    both = sr & st
    max_v = float(np.abs(ref[both] - test[both]).max()) if both.any() else 0.0
    allowed = max(int(max_flips), int(np.floor((1.0 - min_agreement) * n + 1e-9)))
    return MaskComparison(name, list(ref.shape), n, int(sr.sum()), int(st.sum()),
                          int(st.sum()) - int(sr.sum()), differing, agreement,
                          float(sr.mean()) if n else 0.0, float(st.mean()) if n else 0.0,
                          max_v, float(min_agreement), allowed,
                          differing <= allowed and not (nan_r or nan_t), nan_r, nan_t)


@dataclass
class ComparisonReport:
    outputs: list[OutputComparison]
    masks: list[MaskComparison]
    missing: list[str]  # reference outputs the backend did not produce
    extra: list[str]  # backend outputs without a reference
    # features against the reference with its own masks, when ``outputs`` were judged against
    # a reference re-run with the backend's masks (masks differed); else None
    free_running: list[OutputComparison] | None = None
    free_running_masks: list[MaskComparison] | None = None  # the same, for the masks
    note: str | None = None  # e.g. why masks could not be compared
    detections: list[DetectionComparison] = field(default_factory=list)
    free_running_detections: list[DetectionComparison] | None = None  # as free_running

    @property
    def passed(self) -> bool:
        return (not self.missing and all(o.passed for o in self.outputs)
                and all(m.passed for m in self.masks) and all(d.passed for d in self.detections))

    def failures(self) -> list[str]:
        out = [f"missing output {n}" for n in self.missing]
        out += [d.failure() for d in self.detections if not d.passed]
        for o in self.outputs + self.masks:
            line = nonfinite_line(o)
            if line:
                out.append(line)
        for o in self.outputs:
            if not o.passed:
                if o.shape != o.ref_shape:
                    out.append(f"{o.name}: shape {o.shape} != reference {o.ref_shape}")
                    continue
                # elements beyond tolerance that are finite on both sides (NaN/Inf: above)
                finite = o.violations - (o.nan_test + o.inf_test + o.nan_ref + o.inf_ref)
                if finite > 0:
                    out.append(f"{o.name}: {finite} element(s) beyond atol={o.atol:g} "
                               f"rtol={o.rtol:g} (max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g})")
        for m in self.masks:
            if not m.passed and not (m.nan_ref or m.nan_test):
                out.append(mask_failure_line(m))
        return out

    def to_dict(self) -> dict:
        d = {"passed": self.passed, "outputs": {o.name: o.to_dict() for o in self.outputs},
             "feature_reference": ("PyTorch re-run with the backend's masks"
                                   if self.free_running is not None else "PyTorch"),
             "masks": {m.name: m.to_dict() for m in self.masks},
             "detections": {d.name: d.to_dict() for d in self.detections},
             "missing_outputs": self.missing, "extra_outputs": self.extra,
             "failures": self.failures()}
        if self.free_running is not None:
            d["outputs_free_running"] = {o.name: o.to_dict() for o in self.free_running}
        if self.free_running_detections is not None:
            d["detections_free_running"] = {x.name: x.to_dict()
                                            for x in self.free_running_detections}
        if self.free_running_masks is not None:
            d["masks_free_running"] = {m.name: m.to_dict() for m in self.free_running_masks}
            d["first_flip"] = self.first_flip
        if self.note:
            d["note"] = self.note
        return d

    @property
    def first_flip(self) -> str | None:
        """The first sampling layer (in network order) whose decisions differ free-running:
        every later difference may be a consequence of it."""
        for m in self.free_running_masks or self.masks:
            if m.differing:
                return m.name
        return None


def compare_outputs(ref: dict[str, np.ndarray], test: dict[str, np.ndarray],
                    tolerances: Tolerances, kinds: dict[str, str] | None = None,
                    roles: dict[str, str] | None = None) -> ComparisonReport:
    """Compare every reference output present, with the comparator of its kind (``kinds``:
    name -> "feature" | "mask" | "detections", from the export's manifest; without it,
    ``mask_*`` names are masks). Masks get agreement reports; the detection outputs (``roles``:
    role -> output name) are matched together as one comparison."""
    outputs, masks, detections = [], [], []
    roles = roles or {}
    if roles and all(n in ref and n in test for n in roles.values()):
        detections.append(compare_detections(ref, test, roles, tolerances.detections))
    for name, r in ref.items():
        if name not in test:
            continue
        kind = (kinds or {}).get(name) or ("mask" if is_mask_name(name) else "feature")
        if kind == "detections":
            continue
        if kind == "mask":
            masks.append(compare_mask(name, r, test[name], tolerances.min_mask_agreement,
                                      tolerances.max_mask_flips))
        else:
            outputs.append(compare_output(name, r, test[name], tolerances.for_output(name)))
    missing = [n for n in ref if n not in test]
    extra = [n for n in test if n not in ref]
    return ComparisonReport(outputs, masks, missing, extra, detections=detections)


def decision_band(record: dict, tol: Tolerance) -> np.ndarray:
    """How far a logit may move when the layer's input x moves within the feature tolerance
    ``|dx| <= atol + rtol |x|``: ``rtol * (|W| * |x|) + atol * sum|W|`` (the mask conv is
    linear in x); ``atol`` is ``atol_scale * max|x|`` for the default tolerance."""
    reach = np.asarray(record["reach"], dtype=np.float64)
    if tol.atol is not None:
        a = float(tol.atol)
    else:
        a = tol.atol_scale * np.asarray(record["x_absmax"], dtype=np.float64)
    return tol.rtol * reach + a * float(record["w_l1"])


def judge_replay(masks: list[MaskComparison], test: dict[str, np.ndarray],
                 records: dict[str, dict], tol: Tolerance) -> None:
    """Judge each layer's masks given the backend's masks upstream (the replay).

    A layer passes when the reference's own decisions under the replay differ from the
    backend's at no more than ``allowed_flips`` positions, each of them near the threshold:
    ``|z| <= band`` (``decision_band``); a decision far from its threshold (an altered weight,
    a wrong seed, mode or grid) fails however few there are.
    """
    for m in masks:
        rec = records.get(m.name)
        if rec is None or m.name not in test:
            continue
        own = np.asarray(rec["mask"], dtype=np.float64) > 0
        got = np.asarray(test[m.name], dtype=np.float64) > 0
        if own.shape != got.shape:
            continue
        flips = own != got
        z = np.abs(np.asarray(rec["z"], dtype=np.float64))
        band = np.broadcast_to(decision_band(rec, tol), z.shape)
        m.replayed_flips = int(flips.sum())
        near = flips & (z <= band)
        m.near_threshold = int(near.sum())
        ratio = z[flips] / np.maximum(band[flips], np.finfo(np.float64).tiny)
        m.worst_margin = float(ratio.max()) if ratio.size else 0.0
        m.passed = (m.replayed_flips <= m.allowed_flips and m.near_threshold == m.replayed_flips
                    and not (m.nan_ref or m.nan_test))


def mask_summary(report: ComparisonReport) -> str:
    """One line over every mask: layers, least agreement, differing positions, densities."""
    ms = report.masks
    if not ms:
        return "masks: none exposed"
    diff = sum(m.differing for m in ms)
    total = sum(m.positions for m in ms)
    worst = min(ms, key=lambda m: m.agreement)
    return (f"masks: {len(ms)} sampling layers, {diff} of {total} positions differ, least "
            f"agreement {worst.agreement:.6f} ({worst.name}), mean density ref "
            f"{np.mean([m.density_ref for m in ms]):.4f} / test "
            f"{np.mean([m.density_test for m in ms]):.4f}, "
            f"{'ok' if all(m.passed for m in ms) else 'FAIL'}")


def format_table(report: ComparisonReport, mask_rows: bool = True) -> str:
    """A fixed-width terminal table: features first, then masks (one row per layer, or one
    summary line with ``mask_rows=False``), then the verdict."""
    lines = []
    if report.free_running_masks is not None:
        flips = sum(m.differing for m in report.free_running_masks)
        replayed = sum(m.differing for m in report.masks)
        near = sum(m.near_threshold or 0 for m in report.masks)
        lines.append(f"{flips} mask position(s) differ free-running, the first in "
                     f"{report.first_flip} (later ones may follow from it)")
        lines.append(f"replaying the backend's masks in the reference: {replayed} decision(s) "
                     f"differ, {near} of them within the error band of the threshold; features "
                     "below are compared with that replay")
    if report.free_running is not None:
        worst = max(report.free_running, key=lambda o: o.max_abs)
        lines.append(f"(with its own masks the reference differs by up to {worst.max_abs:.3g} "
                     f"on {worst.name}, cosine {worst.cosine:.6f}; see outputs_free_running)")
    if report.note:
        lines.append(f"note: {report.note}")
    if report.detections:
        lines.extend(format_detection_rows(report.detections))
        lines.append("")
    hdr = (f"{'output':<12} {'shape':<20} {'max_abs':>10} {'max_rel':>10} {'mean_abs':>10} "
           f"{'median':>10} {'p99':>10} {'cosine':>10} {'nan/inf':>8} {'atol':>8} {'rtol':>8}  result")
    if report.outputs or not report.detections:
        lines.append(hdr)
        lines.append("-" * len(hdr))
    for o in report.outputs:
        bad = o.nan_test + o.inf_test + o.nan_ref + o.inf_ref
        shape = "x".join(str(s) for s in o.shape)
        verdict = "ok" if o.passed else f"FAIL ({o.violations})"
        lines.append(f"{o.name:<12} {shape:<20} {o.max_abs:>10.3g} {o.max_rel:>10.3g} "
                     f"{o.mean_abs:>10.3g} {o.median_abs:>10.3g} {o.p99_abs:>10.3g} "
                     f"{o.cosine:>10.7f} {bad:>8d} {o.atol:>8.2g} {o.rtol:>8.2g}  {verdict}")
    if report.masks and not mask_rows:
        lines.append(mask_summary(report))
    elif report.masks:
        lines.append("")
        mh = (f"{'mask':<24} {'shape':<16} {'density_ref':>11} {'density_test':>12} "
              f"{'count_diff':>10} {'agreement':>10} {'near_thr':>8}  result")
        lines.append(mh)
        lines.append("-" * len(mh))
        for m in report.masks:
            shape = "x".join(str(s) for s in m.shape)
            near = "-" if m.near_threshold is None else f"{m.near_threshold}/{m.differing}"
            lines.append(f"{m.name:<24} {shape:<16} {m.density_ref:>11.4f} {m.density_test:>12.4f} "
                         f"{m.count_diff:>10d} {m.agreement:>10.6f} {near:>8}  "
                         f"{'ok' if m.passed else 'FAIL'}")
    for n in report.missing:
        lines.append(f"missing output: {n}")
    lines.append("")
    lines.append("PASS" if report.passed else "FAIL: " + "; ".join(report.failures()))
    return "\n".join(lines)
