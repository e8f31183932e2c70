"""``ssi-deploy profile``: latency statistics, measured densities and backbone GMACs.

One run times the SSI model on a backend and, with ``compare_dense``, the dense network with
the same weights (``models.dense_twin``) on the same backend and input, so the speed-up is
measured within one run (run-to-run noise on shared machines is about +-30 %).

Densities are measured from the masks of the timed model (mask outputs for an ONNX file that
exposes them, else one forward of the rebuilt PyTorch model on the same input); the backbone
GMACs come from the official cost model at those densities.
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
    onnx: str | Path | None = None
    arch: str | None = None
    checkpoint: str | Path | None = None
    with_fpn: bool = True
    backend: str = "torch"
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


def _input(cfg: ProfileConfig, input_name: str, static_shape) -> tuple[dict, dict]:
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
    if shape is not None and static_shape is not None and not I._dims_ok(shape, static_shape):
        raise SSIError(f"--input-shape {list(shape)} does not fit the ONNX input {input_name!r} "
                       f"{I._fmt_shape(static_shape)}")
    if shape is None:
        if static_shape is not None and all(isinstance(d, int) and d > 0 for d in static_shape):
            shape = tuple(static_shape)
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


def _export_temp(model, path: Path, shape, meta: dict | None = None) -> Path:
    from .export import export_onnx
    return Path(export_onnx(model, path, input_shape=tuple(shape), dynamic=None,
                            dtype="fp32", expose_masks=False, metadata=meta or {}))


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
    and with ``compare_dense``: dense{...}, speedup_vs_dense)."""
    from .backends.registry import create_backend
    from .backends.torch_backend import TorchBackend
    from .cost_model import backbone_gmacs
    from .models import dense_twin

    if cfg.onnx is None and cfg.arch is None:
        raise SSIError("give an ONNX file or --arch")
    if cfg.onnx is not None and cfg.arch is not None:
        raise SSIError("give either an ONNX file or --arch, not both")
    if cfg.iterations is not None and cfg.duration_s is not None:
        raise SSIError("give --iterations or --duration-s, not both")
    if cfg.onnx is not None and not Path(cfg.onnx).is_file():
        raise SSIError(f"ONNX file not found: {cfg.onnx}")

    model, input_name = _reference_model(cfg)
    arch = model.arch
    if cfg.compare_dense and not getattr(model.spec, "sparse", False):
        raise SSIError(f"--compare-dense: {arch} is already dense")
    warnings: list[str] = []
    with ExitStack() as stack:
        tmp = Path(cfg.work_dir) if cfg.work_dir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="ssi-profile-")))
        # -- the sparse (or given) model on the chosen backend ----------------------------
        static_shape = None
        onnx_file = Path(cfg.onnx) if cfg.onnx is not None else None
        if onnx_file is not None:
            input_name, static_shape = onnx_input_spec(onnx_file)
        feeds, feed_info = _input(cfg, input_name, static_shape)
        if cfg.backend == "torch":
            backend = TorchBackend(model, [input_name], threads=cfg.threads)
        else:
            shape = next(iter(feeds.values())).shape
            if onnx_file is None or cfg.density is not None:
                # --arch, or forced densities: export the (forced) PyTorch model for this shape
                _log(cfg, f"exporting {arch} ({'x'.join(map(str, shape))}) for {cfg.backend}")
                onnx_file = _export_temp(model, tmp / "sparse.onnx", shape)
            backend = create_backend(cfg.backend, onnx_file, **_bk_kw(cfg, shape))
            input_name = backend.input_names[0]
        stack.callback(backend.close)
        shape = tuple(next(iter(feeds.values())).shape)
        feeds = {input_name: next(iter(feeds.values()))}
        sparse_stats = _time(backend, feeds, cfg, arch)
        # densities: the PyTorch model's masks on the same input (identical masks in the
        # deterministic modes; the ONNX file computes the same SampleMask)
        with_masks = getattr(model.spec, "sparse", False)
        density = {}
        if with_masks:
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
                  "input_shape": list(shape), "latency_ms": _public(sparse_stats),
                  "latency_std_ms": sparse_stats["std"], "latency_cv": sparse_stats["cv"],
                  "iterations": sparse_stats["iterations"],
                  "throughput_per_s": throughput(sparse_stats, shape[0]),
                  "density": density,
                  "density_mean": float(np.mean(list(density.values()))) if density else 1.0,
                  "forced_density": cfg.density, "backbone_gmacs": gmacs}
        report["backend"].pop("model", None)
        report["notes"] = []
        if cfg.backend == "onnxruntime" and with_masks:
            report["notes"].append(
                "onnxruntime runs the SSI nodes' ONNX function bodies, which compute densely "
                "and then mask (a portable reference): no sparse speed-up is expected on this "
                "backend; the torch backend (sparse CPU ops) and TensorRT (SSI plugins) skip work")
        if sparse_stats["cv"] > CV_WARN:
            warnings.append(f"{arch}: latency varies a lot (CV {100 * sparse_stats['cv']:.0f} %); "
                            "use more iterations or a quieter machine")
        # -- the dense twin, same weights, same backend, same input -------------------------
        if cfg.compare_dense:
            dense = dense_twin(model)
            dense.fuse_for_inference()
            if cfg.backend == "torch":
                dback = TorchBackend(dense, [input_name], threads=cfg.threads)
            else:
                _log(cfg, f"exporting the dense twin {dense.arch} for {cfg.backend}")
                dfile = _export_temp(dense, tmp / "dense.onnx", shape)
                dback = create_backend(cfg.backend, dfile, **_bk_kw(cfg, shape))
            stack.callback(dback.close)
            dstats = _time(dback, {dback.input_names[0]: feeds[input_name]}, cfg, dense.arch)
            dg = backbone_gmacs(dense.arch, shape, None)
            report["dense"] = {"arch": dense.arch, "latency_ms": _public(dstats),
                               "latency_std_ms": dstats["std"], "latency_cv": dstats["cv"],
                               "iterations": dstats["iterations"],
                               "throughput_per_s": throughput(dstats, shape[0]),
                               "backbone_gmacs": dg}
            report["speedup_vs_dense"] = dstats["median"] / sparse_stats["median"]
            report["speedup_basis"] = "median latency"
            report["gmacs_ratio_vs_dense"] = dg / gmacs if gmacs > 0 else None
            if dstats["cv"] > CV_WARN:
                warnings.append(f"{dense.arch}: latency varies a lot (CV {100 * dstats['cv']:.0f} %)")
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


def format_report(r: dict) -> str:
    """A short table of the profile report."""
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
    lines.append(row(r["arch"], r["latency_ms"], r["throughput_per_s"], r["backbone_gmacs"]))
    if "dense" in r:
        d = r["dense"]
        lines.append(row(d["arch"], d["latency_ms"], d["throughput_per_s"], d["backbone_gmacs"]))
    lines.append("(latencies in ms)")
    if r["density"]:
        vals = list(r["density"].values())
        lines.append(f"density over {len(vals)} sampling layers: mean {np.mean(vals):.3f}, "
                     f"min {min(vals):.3f}, max {max(vals):.3f}"
                     + (f" (forced {r['forced_density']:g})" if r.get("forced_density") else ""))
        per_stage: dict[str, list[float]] = {}
        for k, v in r["density"].items():
            per_stage.setdefault(k.split(".")[0], []).append(v)
        lines.append("  per stage: " + ", ".join(f"{s} {np.mean(v):.3f}" for s, v in per_stage.items()))
    if "speedup_vs_dense" in r:
        lines.append(f"speedup vs dense: {r['speedup_vs_dense']:.2f}x (median latency); "
                     f"backbone GMACs ratio {r['gmacs_ratio_vs_dense']:.2f}x")
    for n in r.get("notes", []):
        lines.append(f"note: {n}")
    for w in r.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
