"""TensorRT engines in a profile: the given engine (its sidecar and manifest), the dense
engine to compare with, engine input shapes, and per-layer times (IProfiler)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SSIError


@dataclass(frozen=True)
class EngineInfo:
    plan: Path
    sidecar: dict  # the build's ``.plan.json``
    precision: str | None  # the engine's build precision (may differ from its ONNX dtype)


def given_engine(path: Path, backend: str | None):
    """(engine, its source ONNX, its manifest) for an engine given to ``profile``; one-line
    errors for another backend, no TensorRT or GPU, a missing sidecar or manifest."""
    from ..backends.registry import resolve_engine
    from ..tensorrt.builder import read_engine_manifest, read_sidecar

    plan, source = resolve_engine(path, backend)
    manifest = read_engine_manifest(plan)
    sidecar = read_sidecar(plan) or {}
    return EngineInfo(plan, sidecar, sidecar.get("precision")), Path(source), manifest


def dense_engine(path, backend: str, arch: str, dense_arch: str) -> EngineInfo:
    """The ``--dense-engine`` to time instead of the dense twin, checked before any work:
    a TensorRT backend, an engine file with its sidecar, no SSI plugin layers, built from
    ``dense_arch``, the dense counterpart of ``arch`` (per its manifest)."""
    from ..backends.tensorrt_backend import is_engine_path
    from ..manifest import engine_manifest
    from ..tensorrt.builder import read_sidecar, sidecar_path

    d = Path(path)
    if backend != "tensorrt":
        raise SSIError(f"--dense-engine compares TensorRT engines: give the sparse model as an "
                       f"engine (.plan) or with --backend tensorrt, not --backend {backend}")
    if not is_engine_path(d):
        raise SSIError(f"--dense-engine {d}: not a TensorRT engine (.plan, .engine or .trt)")
    if not d.is_file():
        raise SSIError(f"dense engine file not found: {d}")
    sidecar = read_sidecar(d)
    if sidecar is None:
        raise SSIError(f"--dense-engine {d}: no {d.name}.json beside it, so its precision is "
                       f"unknown; build it with `ssi-deploy build DENSE.onnx --engine {d} --dense`")
    if sidecar.get("plugin_layers") or (sidecar.get("ssi_nodes") and not sidecar.get("dense")):
        raise SSIError(f"--dense-engine {d} holds SSI plugin layers: it is not a dense engine "
                       f"(build one from the dense twin's ONNX with `ssi-deploy build --dense`)")
    built_from = engine_manifest(sidecar, f"--dense-engine {d} ({sidecar_path(d).name})").arch
    if built_from != dense_arch:
        raise SSIError(f"--dense-engine {d} was built from {built_from}, not {dense_arch} "
                       f"(the dense counterpart of {arch})")
    return EngineInfo(d, sidecar, sidecar.get("precision"))


def check_same_precision(dense: EngineInfo, sparse_precision: str | None, sparse_what: str) -> None:
    dp, sp = dense.precision, sparse_precision
    if sp is None or sp != dp:
        unknown = "of unknown precision"
        raise SSIError(f"--dense-engine {dense.plan} is {dp or unknown} but the sparse engine "
                       f"{sparse_what} is {sp or unknown}: compare engines built with the same "
                       "precision")


def engine_shapes(sidecar: dict, name: str) -> tuple[tuple | None, tuple | None, tuple | None]:
    """(static shape with None where the profile lets a dim vary, opt shape, (min, max)) of
    the engine input ``name`` per its sidecar; Nones when the sidecar has no profile."""
    prof = (sidecar.get("profiles") or {}).get(name)
    if not prof:
        return None, None, None
    lo, opt, hi = (tuple(int(d) for d in prof[k]) for k in ("min", "opt", "max"))
    static = tuple(a if a == b else None for a, b in zip(lo, hi))
    return static, opt, (lo, hi)


def check_within(shape, bounds, plan: Path) -> None:
    if bounds is None:
        return
    lo, hi = bounds
    if len(shape) != len(lo) or not all(a <= s <= b for s, a, b in zip(shape, lo, hi)):
        fmt = "x".join
        raise SSIError(f"input {fmt(map(str, shape))} is outside the profile of engine {plan} "
                       f"(min {fmt(map(str, lo))}, max {fmt(map(str, hi))}); give an "
                       "--input-shape within it or rebuild the engine with `ssi-deploy build "
                       "--shapes`")


def layer_profile(backend, feeds: dict, iterations: int, sidecar: dict | None) -> dict:
    """Per-layer times of a TensorRT backend (IProfiler, mean ms over ``iterations`` runs),
    slowest first; SSI plugin layers marked (``plugin``, ``ssi_op``) from the engine inspector
    and the build's sidecar."""
    times = backend.layer_times(feeds, iterations=iterations)
    plugins: set[str] = set()
    try:
        plugins = {lay.name for lay in backend.layers() if lay.is_plugin}
    except SSIError:  # an engine without detailed layer information: the sidecar still tells
        pass
    sidecar = sidecar or {}
    ops = sidecar.get("ssi_nodes") or {}
    op_of = {layer: ops.get(node) for node, layer in (sidecar.get("plugin_layers") or {}).items()}
    total = float(sum(times.values()))
    rows = []
    for name, ms in sorted(times.items(), key=lambda kv: -kv[1]):
        is_ssi = name in plugins or name in op_of
        rows.append({"name": name, "ms": float(ms), "share": ms / total if total > 0 else 0.0,
                     "plugin": is_ssi, "ssi_op": op_of.get(name) if is_ssi else None})
    plugin_ms = float(sum(r["ms"] for r in rows if r["plugin"]))
    return {"layers": rows, "summary": {
        "source": "TensorRT IProfiler (no CUDA graph)", "iterations": int(iterations),
        "count": len(rows), "total_ms": total, "ssi_plugin_ms": plugin_ms,
        "ssi_plugin_share": plugin_ms / total if total > 0 else 0.0,
        "ssi_plugin_layers": sum(r["plugin"] for r in rows)}}
