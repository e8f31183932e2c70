"""``ssi-deploy profile``: latency statistics, measured densities and backbone GMACs.

One run times the SSI model on a backend and, with ``compare_dense``, the dense network with
the same weights (``models.dense_twin``) on the same backend and input, so the speed-up is
measured within one run (run-to-run noise on shared machines is about +-30 %).

Densities are measured from the masks of the timed model (mask outputs for an ONNX file that
exposes them, else one forward of the rebuilt PyTorch model on the same input); the backbone
GMACs come from the official cost model at those densities.

A TensorRT engine (``.plan``) is profiled as it is, on the tensorrt backend; its reference model
(densities, dense twin) comes from the ONNX file named in its ``.plan.json`` sidecar.
``dense_engine`` times a prebuilt dense engine instead of the dense twin (same feeds, same
precision per the sidecars), and ``per_layer`` adds TensorRT's per-layer times (IProfiler).
Exports made here (``--arch``, ``--density``, the dense twin) use the dtype of the given
file's metadata, and the report says when a re-export rather than the given file was timed.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SSIError

CV_WARN = 0.10  # coefficient of variation above which the latencies are called noisy
DEFAULT_HW = (512, 512)


def latency_stats(latencies_ms) -> dict:
    """min/mean/median/p90/p95/p99/max (numpy linear percentiles), std and CV, in ms."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        raise SSIError("no timed iterations")
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"min": float(a.min()), "mean": mean, "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "std": std,
            "cv": std / mean if mean > 0 else 0.0, "iterations": int(a.size)}


def throughput(stats: dict, batch: int) -> float:
    """Images per second at the mean latency."""
    return batch * 1000.0 / stats["mean"] if stats["mean"] > 0 else math.inf


class Progress:
    """Periodic progress lines on stderr (every ``every_s`` seconds) during timing."""

    def __init__(self, label: str, total: int | None, duration_s: float | None,
                 enabled: bool = True, every_s: float = 2.0, stream=None):
        self.label, self.total, self.duration_s = label, total, duration_s
        self.enabled, self.every_s = enabled, every_s
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.last = self.t0

    def __call__(self, count: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        done = self.total is not None and count >= self.total
        if now - self.last >= self.every_s or done:
            self.last = now
            goal = f"/{self.total}" if self.total else ""
            span = f" of {self.duration_s:g} s" if self.duration_s and not self.total else ""
            print(f"  {self.label}: {count}{goal} runs, {now - self.t0:.1f} s{span}",
                  file=self.stream, flush=True)


@dataclass
class ProfileConfig:
    onnx: str | Path | None = None  # an ONNX file or a TensorRT engine (.plan)
    arch: str | None = None
    checkpoint: str | Path | None = None
    with_fpn: bool = True
    backend: str | None = None  # None: torch, or tensorrt for an engine
    input_shape: tuple[int, int, int, int] | None = None
    image: str | Path | None = None
    seed: int = 0
    density: float | None = None
    compare_dense: bool = False
    warmup_ms: float = 200.0
    iterations: int | None = None
    duration_s: float | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    work_dir: str | Path | None = None  # where temporary ONNX files go (default: a temp dir)
    dense_engine: str | Path | None = None  # a prebuilt dense TensorRT engine to compare with
    per_layer: bool = False  # tensorrt: per-layer times (IProfiler)
    layer_iterations: int | None = None  # runs averaged per layer [default: iterations, else 20]


def _log(cfg: ProfileConfig, msg: str) -> None:
    if cfg.progress:
        print(msg, file=sys.stderr, flush=True)


def _reference_model(cfg: ProfileConfig):
    """The PyTorch model (rebuilt from the ONNX metadata, or from --arch), masks not exposed."""
    from .backends.torch_backend import TorchBackend
    if cfg.onnx is not None:
        tb = TorchBackend.from_onnx(cfg.onnx, checkpoint=cfg.checkpoint)
        model = tb.model
        meta_input = tb.input_names[0]
    else:
        if cfg.arch is None:
            raise SSIError("give an ONNX file or --arch")
        from .backends.torch_backend import build_model
        model = build_model(cfg.arch, with_fpn=cfg.with_fpn, checkpoint=cfg.checkpoint)
        meta_input = "image"
    model.expose_masks = False
    if cfg.density is not None:
        if not getattr(model.spec, "sparse", False):
            raise SSIError(f"--density: {model.arch} is dense (it has no sampling layers)")
        model.set_forced_density(cfg.density)
    model.fuse_for_inference()
    return model, meta_input


def _input(cfg: ProfileConfig, input_name: str, static_shape,
           default_shape=None) -> tuple[dict, dict]:
    from .validation import inputs as I
    from .validation.runner import InputSpec, make_feeds
    meta = {}
    if cfg.onnx is not None:
        from .backends.torch_backend import read_onnx_metadata
        meta = read_onnx_metadata(cfg.onnx)
    if cfg.image is not None:
        spec = InputSpec(image=cfg.image,
                         short_side=None if cfg.input_shape is None else min(cfg.input_shape[2:]))
        return make_feeds(spec, {input_name: static_shape}, meta)
    shape = cfg.input_shape
    what = "engine's" if default_shape is not None else "ONNX"
    if shape is not None and static_shape is not None and not I._dims_ok(shape, static_shape):
        raise SSIError(f"--input-shape {list(shape)} does not fit the {what} input {input_name!r} "
                       f"{I._fmt_shape(static_shape)}")
    if shape is None:
        if static_shape is not None and all(isinstance(d, int) and d > 0 for d in static_shape):
            shape = tuple(static_shape)
        elif default_shape is not None:
            shape = tuple(default_shape)
        else:
            shape = (1, 3) + DEFAULT_HW
    x = smooth_noise(shape, cfg.seed)
    return {input_name: x}, {"source": "smooth random noise", "seed": cfg.seed, "shape": list(shape)}


def onnx_input_spec(path: Path) -> tuple[str, tuple]:
    """(name, shape) of the first graph input (ints fixed, None free), without a session."""
    import onnx
    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    for i in g.input:
        if i.name not in inits:
            dims = tuple(d.dim_value if d.HasField("dim_value") else None
                         for d in i.type.tensor_type.shape.dim)
            return i.name, dims
    raise SSIError(f"{path} has no graph input")


def smooth_noise(shape, seed: int = 0) -> np.ndarray:
    """Image-like normalised input: low-frequency noise plus texture (realistic mask densities)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    ch, cw = max(1, h // 16), max(1, w // 16)
    coarse = rng.standard_normal((n, c, ch, cw)).astype(np.float32)
    yi = np.minimum((np.arange(h) * ch) // h, ch - 1)
    xi = np.minimum((np.arange(w) * cw) // w, cw - 1)
    up = coarse[:, :, yi][:, :, :, xi]
    # a light box blur makes the blocks smooth without any dependency
    k = max(1, min(h, w) // 32)
    if k > 1:
        cs = np.cumsum(np.pad(up, ((0, 0), (0, 0), (k, k), (0, 0)), mode="edge"), axis=2)
        up = (cs[:, :, 2 * k:2 * k + h] - cs[:, :, :h]) / (2 * k)
        cs = np.cumsum(np.pad(up, ((0, 0), (0, 0), (0, 0), (k, k)), mode="edge"), axis=3)
        up = (cs[:, :, :, 2 * k:2 * k + w] - cs[:, :, :, :w]) / (2 * k)
    up = up / max(float(up.std()), 1e-6)
    return (up + 0.3 * rng.standard_normal(shape)).astype(np.float32)


def _export_temp(model, path: Path, shape, dtype: str = "fp32", meta: dict | None = None) -> Path:
    """A static export at ``shape`` in ``dtype`` (the given file's, so sparse and dense match)."""
    from .export import export_onnx
    return Path(export_onnx(model, path, input_shape=tuple(shape), dynamic=None,
                            dtype=dtype, expose_masks=False, metadata=meta or {}))


def _engine_shapes(meta: dict | None, name: str | None) -> tuple[tuple | None, tuple | None]:
    """(static shape with None for the dims the profile lets vary, the profile's opt shape)."""
    prof = ((meta or {}).get("profiles") or {}).get(name) if name else None
    if not prof:
        return None, None
    static = tuple(int(a) if a == b else None for a, b in zip(prof["min"], prof["max"]))
    return static, tuple(int(d) for d in prof["opt"])


def _sidecar_value(meta: dict, key: str):
    """An ``ssi.*`` metadata value recorded in an engine's sidecar (JSON-decoded), or None."""
    import json
    v = (meta.get("onnx_metadata") or {}).get(f"ssi.{key}")
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _check_dense_engine(cfg: ProfileConfig, backend_name: str) -> tuple[Path, dict]:
    """The dense engine and its sidecar, or a one-line SSIError (checked before any work)."""
    from .backends.tensorrt_backend import engine_metadata, is_engine_path
    d = Path(cfg.dense_engine)
    if backend_name != "tensorrt":
        raise SSIError(f"--dense-engine compares TensorRT engines: give the sparse model as an "
                       f"engine (.plan) or with --backend tensorrt, not --backend {backend_name}")
    if not is_engine_path(d):
        raise SSIError(f"--dense-engine {d}: not a TensorRT engine (.plan, .engine or .trt)")
    if not d.is_file():
        raise SSIError(f"dense engine file not found: {d}")
    meta = engine_metadata(d)
    if meta is None:
        raise SSIError(f"--dense-engine {d}: no {d.name}.json beside it, so its precision is "
                       f"unknown; build it with `ssi-deploy build DENSE.onnx --engine {d} --dense`")
    if meta.get("plugin_layers") or (meta.get("ssi_nodes") and not meta.get("dense")):
        raise SSIError(f"--dense-engine {d} holds SSI plugin layers: it is not a dense engine "
                       f"(build one from the dense twin's ONNX with `ssi-deploy build --dense`)")
    return d, meta


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


def _time(backend, feeds, cfg: ProfileConfig, label: str) -> dict:
    _log(cfg, f"timing {label} on {backend.name} (warm-up {cfg.warmup_ms:g} ms, "
              + (f"{cfg.iterations} runs)" if cfg.iterations else
                 f"{cfg.duration_s:g} s)" if cfg.duration_s else "20 runs)"))
    prog = Progress(label, cfg.iterations or (None if cfg.duration_s else 20), cfg.duration_s,
                    cfg.progress)
    t = backend.time(feeds, warmup_ms=cfg.warmup_ms, iterations=cfg.iterations,
                     duration_s=cfg.duration_s, progress=prog)
    stats = latency_stats(t.latencies_ms)
    return stats


def profile(cfg: ProfileConfig) -> dict:
    """The profile report (keys: latency_ms, throughput_per_s, density, backbone_gmacs,
    profiled; with ``compare_dense`` or ``dense_engine``: dense{...}, speedup_vs_dense; with
    ``per_layer``: layers, layers_summary)."""
    from dataclasses import replace

    from .backends.registry import create_backend, resolve_engine
    from .backends.tensorrt_backend import engine_metadata, is_engine_path
    from .backends.torch_backend import TorchBackend, read_onnx_metadata
    from .cost_model import backbone_gmacs
    from .models import dense_twin

    if cfg.onnx is None and cfg.arch is None:
        raise SSIError("give an ONNX file or --arch")
    if cfg.onnx is not None and cfg.arch is not None:
        raise SSIError("give either an ONNX file or --arch, not both")
    if cfg.iterations is not None and cfg.duration_s is not None:
        raise SSIError("give --iterations or --duration-s, not both")
    given = Path(cfg.onnx) if cfg.onnx is not None else None
    engine = None
    if given is not None and is_engine_path(given):
        if cfg.density is not None:
            raise SSIError("--density cannot change a built engine (its plugins compute the "
                           "masks): give the ONNX file, or --arch, with --backend tensorrt")
        engine, source = resolve_engine(given, cfg.backend)
        cfg = replace(cfg, onnx=source, backend="tensorrt")
    elif given is not None and not given.is_file():
        raise SSIError(f"ONNX file not found: {given}")
    cfg = replace(cfg, backend=cfg.backend or "torch")
    if cfg.per_layer and cfg.backend != "tensorrt":
        raise SSIError(f"--per-layer needs the tensorrt backend (TensorRT's IProfiler), not "
                       f"{cfg.backend}")
    dense_engine = dense_meta = None
    if cfg.dense_engine is not None:
        dense_engine, dense_meta = _check_dense_engine(cfg, cfg.backend)
    dtype = read_onnx_metadata(cfg.onnx).get("dtype", "fp32") if cfg.onnx is not None else "fp32"

    model, input_name = _reference_model(cfg)
    arch = model.arch
    sparse = getattr(model.spec, "sparse", False)
    if (cfg.compare_dense or cfg.dense_engine is not None) and not sparse:
        raise SSIError(f"--{'compare-dense' if cfg.compare_dense else 'dense-engine'}: "
                       f"{arch} is already dense")
    if dense_meta is not None:
        built_from = _sidecar_value(dense_meta, "arch")
        if built_from and built_from != model.spec.dense_name:
            raise SSIError(f"--dense-engine {dense_engine} was built from {built_from}, not "
                           f"{model.spec.dense_name} (the dense counterpart of {arch})")
    warnings: list[str] = []
    notes: list[str] = []
    with ExitStack() as stack:
        tmp = Path(cfg.work_dir) if cfg.work_dir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="ssi-profile-")))
        # -- the sparse (or given) model on the chosen backend ----------------------------
        static_shape = default_shape = None
        onnx_file = Path(cfg.onnx) if cfg.onnx is not None else None
        engine_meta = engine_metadata(engine) if engine is not None else None
        if onnx_file is not None:
            input_name, static_shape = onnx_input_spec(onnx_file)
        if engine is not None:
            static_shape, default_shape = _engine_shapes(engine_meta, input_name)
        feeds, feed_info = _input(cfg, input_name, static_shape, default_shape)
        shape = tuple(next(iter(feeds.values())).shape)
        profiled = {"given": str(given) if given is not None else None, "reexported": False}
        if cfg.backend == "torch":
            backend = TorchBackend(model, [input_name], threads=cfg.threads)
            profiled.update(source="pytorch model" + (" (rebuilt from the file's metadata)"
                                                      if given is not None else ""))
        else:
            if engine is not None:
                target = engine
                profiled.update(source="engine", path=str(engine))
            elif onnx_file is None or cfg.density is not None:
                # --arch, or forced densities: export the (forced) PyTorch model for this shape,
                # in the given file's dtype
                _log(cfg, f"exporting {arch} ({'x'.join(map(str, shape))}, {dtype}) "
                          f"for {cfg.backend}")
                target = _export_temp(model, tmp / "sparse.onnx", shape, dtype)
                profiled.update(source="export" if onnx_file is None else "re-export",
                                path=str(target), dtype=dtype, reexported=onnx_file is not None)
                if onnx_file is not None:
                    notes.append(
                        f"timed a static {dtype} re-export of {onnx_file.name} at "
                        f"{'x'.join(map(str, shape))} with every sampling layer forced to "
                        f"density {cfg.density:g}, not the file as given (which computes its "
                        "own masks)")
            else:
                target = onnx_file
                profiled.update(source="file", path=str(onnx_file), dtype=dtype)
            backend = create_backend(cfg.backend, target, **_bk_kw(cfg, shape))
            input_name = backend.input_names[0]
        stack.callback(backend.close)
        feeds = {input_name: next(iter(feeds.values()))}
        sparse_plan = getattr(backend, "plan_path", None)
        sparse_meta = engine_meta if engine is not None else (
            engine_metadata(sparse_plan) if sparse_plan is not None else None)
        if sparse_meta:
            profiled["precision"] = sparse_meta.get("precision")
            profiled.setdefault("path", str(sparse_plan))
            profiled["engine"] = str(sparse_plan)
        if dense_engine is not None:
            sp, dp = (sparse_meta or {}).get("precision"), dense_meta.get("precision")
            if sp is None or sp != dp:
                unknown = "of unknown precision"
                raise SSIError(f"--dense-engine {dense_engine} is {dp or unknown} but the sparse "
                               f"engine {sparse_plan} is {sp or unknown}: compare engines built "
                               "with the same precision")
        sparse_stats = _time(backend, feeds, cfg, arch)
        # densities: the PyTorch model's masks on the same input (identical masks in the
        # deterministic modes; the ONNX file computes the same SampleMask)
        density = {}
        if sparse:
            mask_outputs = [n for n in backend.output_names if n.startswith("mask_")]
            if cfg.backend != "torch" and mask_outputs == list(model.mask_names):
                # the file exposes its masks: measure them on the backend itself
                outs = backend.run(feeds)
                density = {layer: float((outs[n] > 0).mean())
                           for layer, n in zip(model.sampling_layers, mask_outputs)}
            else:
                if cfg.backend != "torch":
                    TorchBackend(model, [input_name]).run(feeds)
                density = model.measured_densities()
        gmacs = backbone_gmacs(arch, shape, density if density else None)
        report = {"backend": backend.describe(), "arch": arch, "input": feed_info,
                  "input_shape": list(shape), "profiled": profiled,
                  "latency_ms": _public(sparse_stats),
                  "latency_std_ms": sparse_stats["std"], "latency_cv": sparse_stats["cv"],
                  "iterations": sparse_stats["iterations"],
                  "throughput_per_s": throughput(sparse_stats, shape[0]),
                  "density": density,
                  "density_mean": float(np.mean(list(density.values()))) if density else 1.0,
                  "forced_density": cfg.density, "backbone_gmacs": gmacs}
        report["backend"].pop("model", None)
        report["notes"] = notes
        if cfg.backend == "onnxruntime" and sparse:
            notes.append(
                "onnxruntime runs the SSI nodes' ONNX function bodies, which compute densely "
                "and then mask (a portable reference): no sparse speed-up is expected on this "
                "backend; the torch backend (sparse CPU ops) and TensorRT (SSI plugins) skip work")
        if sparse_stats["cv"] > CV_WARN:
            warnings.append(f"{arch}: latency varies a lot (CV {100 * sparse_stats['cv']:.0f} %); "
                            "use more iterations or a quieter machine")
        if cfg.per_layer:
            n = cfg.layer_iterations or cfg.iterations or 20
            _log(cfg, f"per-layer times of {arch} (IProfiler, {n} runs)")
            lp = layer_profile(backend, feeds, n, sparse_meta)
            report["layers"], report["layers_summary"] = lp["layers"], lp["summary"]
        # -- the dense baseline: a given dense engine, or the dense twin (same weights) ------
        if dense_engine is not None or cfg.compare_dense:
            dense_arch = model.spec.dense_name
            dinfo: dict = {"arch": dense_arch}
            if dense_engine is not None:
                dback = create_backend("tensorrt", dense_engine)
                dinfo.update(source="engine", engine=str(dense_engine),
                             precision=dense_meta.get("precision"))
            else:
                dense = dense_twin(model)
                dense.fuse_for_inference()
                dense_arch = dinfo["arch"] = dense.arch
                if cfg.backend == "torch":
                    dback = TorchBackend(dense, [input_name], threads=cfg.threads)
                    dinfo.update(source="pytorch dense twin")
                else:
                    _log(cfg, f"exporting the dense twin {dense.arch} ({dtype}) for {cfg.backend}")
                    dfile = _export_temp(dense, tmp / "dense.onnx", shape, dtype)
                    dkw = _bk_kw(cfg, shape)
                    if cfg.backend == "tensorrt" and (sparse_meta or {}).get("precision"):
                        # the sparse engine's precision (e.g. fp16 built from an fp32 file)
                        dkw["precision"] = sparse_meta["precision"]
                    dback = create_backend(cfg.backend, dfile, **dkw)
                    dinfo.update(source="dense twin export", path=str(dfile), dtype=dtype)
                    dplan = getattr(dback, "plan_path", None)
                    dmeta = engine_metadata(dplan) if dplan is not None else None
                    if dmeta:
                        dinfo.update(engine=str(dplan), precision=dmeta.get("precision"))
            stack.callback(dback.close)
            dstats = _time(dback, {dback.input_names[0]: feeds[input_name]}, cfg, dense_arch)
            dg = backbone_gmacs(dense_arch, shape, None)
            dinfo.update({"latency_ms": _public(dstats),
                          "latency_std_ms": dstats["std"], "latency_cv": dstats["cv"],
                          "iterations": dstats["iterations"],
                          "throughput_per_s": throughput(dstats, shape[0]),
                          "backbone_gmacs": dg})
            report["dense"] = dinfo
            report["speedup_vs_dense"] = dstats["median"] / sparse_stats["median"]
            report["speedup_basis"] = "median latency"
            report["gmacs_ratio_vs_dense"] = dg / gmacs if gmacs > 0 else None
            if dstats["cv"] > CV_WARN:
                warnings.append(f"{dense_arch}: latency varies a lot (CV {100 * dstats['cv']:.0f} %)")
    report["warnings"] = warnings
    return report


def _bk_kw(cfg: ProfileConfig, shape=None) -> dict:
    if cfg.backend == "onnxruntime":
        return {"device": cfg.device, "threads": cfg.threads}
    if cfg.backend == "tensorrt" and shape is not None:
        return {"input_shape": tuple(shape)}
    return {}


def _public(stats: dict) -> dict:
    return {k: stats[k] for k in ("min", "mean", "median", "p90", "p95", "p99", "max")}


def format_report(r: dict, top_layers: int = 10) -> str:
    """A short table of the profile report (``top_layers`` slowest layers with --per-layer)."""
    lines = []
    shape = "x".join(str(d) for d in r["input_shape"])
    lines.append(f"{r['arch']} on {r['backend'].get('backend')} "
                 f"({r['backend'].get('device', '')}), input {shape}")
    head = f"{'model':<24} {'min':>9} {'mean':>9} {'median':>9} {'p90':>9} {'p95':>9} {'p99':>9} {'max':>9} {'img/s':>8} {'GMACs':>8}"
    lines.append(head)
    lines.append("-" * len(head))

    def row(name, lat, thr, g):
        return (f"{name:<24} " + " ".join(f"{lat[k]:>9.2f}" for k in
                                          ("min", "mean", "median", "p90", "p95", "p99", "max"))
                + f" {thr:>8.2f} {g:>8.2f}")
    prof = r.get("profiled") or {}
    label = r["arch"] + (" (re-export)" if prof.get("reexported") else
                         " (engine)" if prof.get("source") == "engine" else "")
    lines.append(row(label, r["latency_ms"], r["throughput_per_s"], r["backbone_gmacs"]))
    if "dense" in r:
        d = r["dense"]
        dlabel = d["arch"] + (" (engine)" if d.get("source") == "engine" else "")
        lines.append(row(dlabel, d["latency_ms"], d["throughput_per_s"], d["backbone_gmacs"]))
    lines.append("(latencies in ms)")
    if prof.get("reexported"):
        lines.append(f"profiled: a re-export ({prof.get('dtype')}, static), not {prof.get('given')}")
    elif prof.get("source") == "engine":
        lines.append(f"profiled: engine {prof.get('path')} ({prof.get('precision') or '?'})"
                     + (f" vs dense engine {r['dense']['engine']} ({r['dense'].get('precision')})"
                        if r.get("dense", {}).get("source") == "engine" else ""))
    if r["density"]:
        vals = list(r["density"].values())
        lines.append(f"density over {len(vals)} sampling layers: mean {np.mean(vals):.3f}, "
                     f"min {min(vals):.3f}, max {max(vals):.3f}"
                     + (f" (forced {r['forced_density']:g})" if r.get("forced_density") else ""))
        per_stage: dict[str, list[float]] = {}
        for k, v in r["density"].items():
            per_stage.setdefault(k.split(".")[0], []).append(v)
        lines.append("  per stage: " + ", ".join(f"{s} {np.mean(v):.3f}" for s, v in per_stage.items()))
    if r.get("layers"):
        sm = r["layers_summary"]
        lines.append(f"per-layer times ({sm['source']}, mean of {sm['iterations']} runs): "
                     f"{sm['count']} layers, {sm['total_ms']:.3f} ms in all; SSI plugin layers "
                     f"{sm['ssi_plugin_ms']:.3f} ms ({100 * sm['ssi_plugin_share']:.1f} %)")
        for lay in r["layers"][:max(0, top_layers)]:
            tag = f"[SSI {lay['ssi_op'] or 'plugin'}] " if lay["plugin"] else ""
            lines.append(f"  {lay['ms']:>9.3f} ms {100 * lay['share']:>5.1f} %  {tag}{lay['name']}")
        if len(r["layers"]) > top_layers:
            lines.append(f"  ... {len(r['layers']) - top_layers} more (all under 'layers' in "
                         "the JSON report)")
    if "speedup_vs_dense" in r:
        lines.append(f"speedup vs dense: {r['speedup_vs_dense']:.2f}x (median latency); "
                     f"backbone GMACs ratio {r['gmacs_ratio_vs_dense']:.2f}x")
    for n in r.get("notes", []):
        lines.append(f"note: {n}")
    for w in r.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
