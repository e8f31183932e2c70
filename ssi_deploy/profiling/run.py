"""``run_profile``: build what the plan says, time it, measure densities, time the dense
side. Nothing here checks the user's input: ``plan_profile`` did."""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SSIError
from ..input_shape import format_shape
from .allocator import keep_freed_memory
from .densities import from_outputs
from .engines import check_same_precision, layer_profile
from .plan import ProfilePlan
from .stats import Progress, latency_stats, machine_state


@dataclass
class Side:
    """One timed model: its arch, latency statistics, what it was, and its backend."""
    arch: str
    stats: dict
    info: dict
    backend: dict


@dataclass
class Measurements:
    sparse: Side
    density: dict[str, float]
    density_source: str  # backend mask outputs | pytorch model | none
    dense: Side | None = None
    layers: dict | None = None  # --per-layer: {"layers": [...], "summary": {...}}
    machine: dict = field(default_factory=dict)  # {"before": ..., "after": ...} machine_state()
    notes: list[str] = field(default_factory=list)


def log(plan: ProfilePlan, msg: str) -> None:
    if plan.cfg.progress:
        print(msg, file=sys.stderr, flush=True)


def run_profile(plan: ProfilePlan) -> Measurements:
    """Time the plan's subject (and its dense side); densities and per-layer times."""
    cfg = plan.cfg
    with ExitStack() as stack:
        work = Path(cfg.work_dir) if cfg.work_dir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="ssi-profile-")))
        ref = reference_model(plan) if plan.needs_reference else None
        backend, info, sidecar = open_subject(plan, ref, work)
        stack.callback(backend.close)
        feeds = plan_feeds(plan, backend.input_names)
        notes: list[str] = []
        density_from = check_mask_outputs(plan, backend, notes)
        if density_from == "reference" and ref is None:
            ref = reference_model(plan)
        # glibc keeps freed memory from here on: both sides are timed under the same allocator
        machine = {"before": machine_state(), "allocator": keep_freed_memory()}
        stats = time_backend(plan, backend, feeds, plan.arch)
        density = measure_densities(plan, backend, feeds, ref, density_from)
        m = Measurements(Side(plan.arch, stats, info, backend.describe()), density,
                         {"outputs": "backend mask outputs", "reference": "pytorch model",
                          "none": "none"}[density_from], notes=notes)
        if cfg.per_layer:
            n = cfg.layer_iterations or cfg.iterations or 20
            log(plan, f"per-layer times of {plan.arch} (IProfiler, {n} runs)")
            m.layers = layer_profile(backend, feeds, n, sidecar)
        if plan.dense is not None:
            m.dense = time_dense(plan, ref, work, stack, info.get("precision"))
        machine["after"] = machine_state()
        m.machine = machine
    return m


def input_names(plan: ProfilePlan, model) -> list[str]:
    """The profiled input's name, and a detector's image_info after it."""
    return [plan.input_name] + list(getattr(model, "input_names", []))[1:]


def plan_feeds(plan: ProfilePlan, names: list[str]) -> dict:
    """The image, and for a detector image_info: every image whole, at scale 1."""
    feeds = {names[0]: plan.x}
    if len(names) > 1:
        n, _, h, w = plan.x.shape
        feeds[names[1]] = np.tile(np.asarray([[h, w, 1.0]], np.float32), (n, 1))
    return feeds


def reference_model(plan: ProfilePlan):
    """The PyTorch model (rebuilt from the manifest, or from --arch), masks not exposed,
    with the forced density."""
    from ..backends.torch_backend import TorchBackend, build_model

    cfg, src = plan.cfg, plan.src
    if src.manifest is not None:
        model = TorchBackend.from_onnx(src.onnx, checkpoint=cfg.checkpoint,
                                       manifest=src.manifest, expose_masks=False).model
    else:
        model = build_model(src.arch, with_fpn=src.with_fpn, checkpoint=cfg.checkpoint)
    model.expose_masks = False
    if cfg.density is not None:
        model.set_forced_density(cfg.density)
    model.fuse_for_inference()
    return model


def export_static(model, path: Path, shape, dtype: str) -> Path:
    """A static export at ``shape`` in ``dtype`` (the given file's, so sparse and dense match)."""
    from ..export import export_onnx
    return Path(export_onnx(model, path, input_shape=tuple(shape), dynamic=None,
                            dtype=dtype, expose_masks=False, metadata={}))


def backend_kwargs(plan: ProfilePlan) -> dict:
    if plan.backend == "onnxruntime":
        return {"device": plan.cfg.device, "threads": plan.cfg.threads}
    if plan.backend == "tensorrt":
        return {"input_shape": plan.shape}
    return {}


def open_subject(plan: ProfilePlan, ref, work: Path):
    """(backend, ``profiled`` description, engine sidecar or None) of the sparse side."""
    from ..backends.registry import create_backend
    from ..backends.tensorrt_backend import engine_metadata
    from ..backends.torch_backend import TorchBackend

    s, given = plan.subject, plan.src.given
    info: dict = {"given": str(given) if given is not None else None,
                  "reexported": s.source == "re-export"}
    if s.source == "pytorch model":
        info["source"] = "pytorch model" + (" (rebuilt from the file's manifest)"
                                            if given is not None else "")
        return TorchBackend(ref, input_names(plan, ref), threads=plan.cfg.threads), info, None
    if s.source in ("export", "re-export"):
        log(plan, f"exporting {plan.arch} ({format_shape(plan.shape)}, {s.dtype}) for "
                  f"{plan.backend}")
        target = export_static(ref, work / "sparse.onnx", plan.shape, s.dtype)
        info.update(source=s.source, path=str(target), dtype=s.dtype)
    else:
        target = s.path
        info.update(source=s.source, path=str(target))
        if s.source == "file":
            info["dtype"] = s.dtype
    backend = create_backend(plan.backend, target, **backend_kwargs(plan))
    plan_path = getattr(backend, "plan_path", None)
    sidecar = engine_metadata(plan_path) if plan_path is not None else None
    if sidecar:
        info.update(precision=sidecar.get("precision"), engine=str(plan_path))
        info.setdefault("path", str(plan_path))
        if plan.dense_engine is not None:  # the engine actually built or reused
            check_same_precision(plan.dense_engine, info["precision"], str(plan_path))
    return backend, info, sidecar


def check_mask_outputs(plan: ProfilePlan, backend, notes: list[str]) -> str:
    """Where densities come from now that the backend is loaded: an engine without the mask
    outputs its manifest lists falls back to the PyTorch model when its weights are at hand."""
    if plan.density_from != "outputs":
        return plan.density_from
    missing = [t.name for t in plan.masks if t.name not in backend.output_names]
    if not missing:
        return "outputs"
    if not plan.reference_ok:
        raise SSIError(f"{plan.subject.path} lacks {len(missing)} mask outputs its manifest "
                       f"lists ({missing[0]}, ...): measuring densities then needs the PyTorch "
                       "model, pass --checkpoint PATH")
    notes.append(f"{plan.subject.path} lacks the mask outputs its manifest lists: densities "
                 "come from the PyTorch model on the same input")
    return "reference"


def time_backend(plan: ProfilePlan, backend, feeds: dict, label: str) -> dict:
    cfg = plan.cfg
    runs = (f"{cfg.iterations} runs)" if cfg.iterations else
            f"{cfg.duration_s:g} s)" if cfg.duration_s else "20 runs)")
    log(plan, f"timing {label} on {backend.name} (warm-up {cfg.warmup_ms:g} ms, {runs}")
    prog = Progress(label, cfg.iterations or (None if cfg.duration_s else 20), cfg.duration_s,
                    cfg.progress)
    t = backend.time(feeds, warmup_ms=cfg.warmup_ms, iterations=cfg.iterations,
                     duration_s=cfg.duration_s, progress=prog)
    return latency_stats(t.latencies_ms)


def measure_densities(plan: ProfilePlan, backend, feeds: dict, ref, how: str) -> dict:
    """Per sampling layer: the backend's mask outputs, or the PyTorch model's masks on the
    same input (identical masks in the deterministic modes)."""
    from ..backends.torch_backend import TorchBackend

    if how == "none":
        return {}
    if how == "outputs":
        return from_outputs(backend.run(feeds), plan.masks)
    if plan.subject.source != "pytorch model":  # the timed runs were not the PyTorch model's
        names = input_names(plan, ref)
        TorchBackend(ref, names).run(plan_feeds(plan, names))
    return ref.measured_densities()


def time_dense(plan: ProfilePlan, ref, work: Path, stack: ExitStack,
               sparse_precision: str | None) -> Side:
    """The dense side: the given dense engine, or the dense twin (same weights) on the same
    backend, input and (tensorrt) precision."""
    from ..backends.registry import create_backend
    from ..backends.tensorrt_backend import engine_metadata
    from ..backends.torch_backend import TorchBackend
    from ..models import dense_twin

    if plan.dense == "engine":
        eng = plan.dense_engine
        dback = create_backend("tensorrt", eng.plan)
        info = {"arch": plan.dense_arch, "source": "engine", "engine": str(eng.plan),
                "precision": eng.precision}
    else:
        dense = dense_twin(ref)
        dense.fuse_for_inference()
        info = {"arch": dense.arch}
        if plan.backend == "torch":
            dback = TorchBackend(dense, input_names(plan, dense), threads=plan.cfg.threads)
            info["source"] = "pytorch dense twin"
        else:
            dtype = plan.subject.dtype
            log(plan, f"exporting the dense twin {dense.arch} ({dtype}) for {plan.backend}")
            dfile = export_static(dense, work / "dense.onnx", plan.shape, dtype)
            kw = backend_kwargs(plan)
            if plan.backend == "tensorrt" and sparse_precision:
                kw["precision"] = sparse_precision  # e.g. fp16 built from an fp32 file
            dback = create_backend(plan.backend, dfile, **kw)
            info.update(source="dense twin export", path=str(dfile), dtype=dtype)
            dplan = getattr(dback, "plan_path", None)
            dmeta = engine_metadata(dplan) if dplan is not None else None
            if dmeta:
                info.update(engine=str(dplan), precision=dmeta.get("precision"))
    stack.callback(dback.close)
    stats = time_backend(plan, dback, plan_feeds(plan, dback.input_names), info["arch"])
    return Side(info["arch"], stats, info, dback.describe())
