"""`make demo`: the whole job on the built-in default model, on the CPU, in a few minutes.

1. build sparse_resnet101_dcn with FPN from seeded random weights (calibrated so that the
   sampling masks keep realistic shares of positions, 0.15-0.45 per layer);
2. export it to ONNX with the SSI custom nodes (static input, masks exposed; one
   SSIBottleneck node per block, ``--granularity ops`` for the three-op form);
3. validate ONNX Runtime against PyTorch on a real photograph shipped with scikit-image
   (``skimage.data.coffee()``, 400x600, resized to short side 512 -> input 512x768);
4. profile the sparse network against its dense twin (same weights) with PyTorch on the CPU,
   and say what the timing is worth: the measured densities, the MAC ratio the cost model
   gives at those densities, the CV of each side and the machine's load (a noisy run says so
   instead of printing a speed-up as if it were a result);
5. draw the sampling masks of a few layers over the photograph (matplotlib, if installed);
6. print a short summary; everything lands in ``out/demo/`` (git-ignored).

``python -m ssi_deploy.demo --short-side 256`` makes it faster; ``--iterations`` sets the
timed runs per network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .errors import SSIError

DEFAULT_ARCH = "sparse_resnet101_dcn"
DEFAULT_SHORT_SIDE = 512
DEFAULT_OUT = Path("out/demo")


def _say(msg: str) -> None:
    print(msg, flush=True)


def _photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise SSIError("the demo's photograph comes from scikit-image: "
                       "pip install 'ssi-deploy[demo]'") from None
    try:
        return getattr(data, name)()
    except AttributeError:
        raise SSIError(f"skimage.data has no image {name!r}; try coffee, astronaut or chelsea") from None


def _plot_masks(img_path: Path, masks: list[tuple[str, np.ndarray]],
                densities: dict[str, float], resized_hw, padded_hw, out: Path) -> Path | None:
    """First block of each stage (mask1) and the last layer, over the photograph; ``masks``
    are (sampling layer, mask array) pairs, the layers as the manifest names them."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _say("      (matplotlib not installed: no mask picture)")
        return None
    from PIL import Image
    img = np.asarray(Image.open(img_path).convert("RGB"))
    pick = [lm for lm in masks if lm[0].endswith(".0.mask1")][:4] + [masks[-1]]
    fig, axes = plt.subplots(1, len(pick), figsize=(3.6 * len(pick), 3.4))
    for ax, (layer, mask) in zip(np.atleast_1d(axes), pick):
        m = mask[0, 0]
        stride = padded_hw[0] / m.shape[0]  # the mask covers the padded canvas
        sub = m[: int(np.ceil(resized_hw[0] / stride)), : int(np.ceil(resized_hw[1] / stride))]
        ax.imshow(img)
        ax.imshow(np.ma.masked_where(sub <= 0, sub), cmap="autumn", alpha=0.5, vmin=0, vmax=1,
                  extent=(0, img.shape[1], img.shape[0], 0), interpolation="nearest")
        ax.set_title(f"{layer} (stride {stride:g})\ndensity "
                     f"{densities.get(layer, float((m > 0).mean())):.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("SSI sampling masks: sampled positions in colour (grid prior included)", fontsize=10)
    fig.tight_layout()
    path = out / "masks.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--short-side", type=int, default=DEFAULT_SHORT_SIDE)
    p.add_argument("--image", default="coffee", help="a skimage.data photograph")
    p.add_argument("--iterations", type=int, default=3,
                   help="timed runs per network (after one warm-up run)")
    p.add_argument("--seed", type=int, default=0, help="random-init seed of the weights")
    p.add_argument("--granularity", choices=("block", "ops"), default="block",
                   help="export form: one SSIBottleneck node per block, or the three-op chain")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except SSIError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def _run(args) -> int:
    t_start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    model = _build(args)
    timings["build_s"] = time.perf_counter() - t0
    img_path, shape, info = _photograph(args, model, out)

    t0 = time.perf_counter()
    onnx_path = _export(args, model, shape, out)
    timings["export_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vres = _validate(args, onnx_path, img_path, out)
    timings["validate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    prof = _profile(args, onnx_path, img_path, shape, out)
    timings["profile_s"] = time.perf_counter() - t0

    _say("[5/6] drawing the sampling masks")
    png = _masks(onnx_path, vres, img_path, info, out)

    t0 = time.perf_counter()
    det = _detect(args, img_path, out)
    timings["detect_s"] = time.perf_counter() - t0
    summary = _summary(args, shape, onnx_path, vres, prof, png, timings,
                       time.perf_counter() - t_start)
    summary["detections"] = det
    from .outputs import write_text_atomic
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n", "summary")
    _print_summary(args, summary, out, png)
    return 0 if vres.passed else 1


def _build(args):
    """1. the model: seeded random weights, calibrated to realistic densities."""
    from .backends.torch_backend import build_model

    _say(f"[1/6] building {DEFAULT_ARCH} + FPN from seeded random weights (seed {args.seed})")
    # build_model memoises the built model: validate and profile rebuild the reference from
    # the file's manifest, and get a copy of this one instead of a second calibration
    model = build_model(DEFAULT_ARCH, with_fpn=True, checkpoint=None, sampling="threshold",
                        seed=0, init_seed=args.seed)
    model.fuse_for_inference()
    return model


def _photograph(args, model, out: Path):
    """The photograph, saved as PNG, and the network input shape it gives."""
    from PIL import Image

    from .validation import inputs as I

    photo = _photo(args.image)
    img_path = out / "photo.png"  # the README's tour validates on it
    Image.fromarray(photo).save(img_path)
    norm = model.describe().get("normalization", {})
    x, info = I.preprocess_image(photo, norm.get("mean", I.DEFAULT_MEAN),
                                 norm.get("std", I.DEFAULT_STD), short_side=args.short_side)
    shape = tuple(x.shape)
    _say(f"      photograph skimage.data.{args.image}() {photo.shape[1]}x{photo.shape[0]} -> "
         f"resized {info['resized_hw'][1]}x{info['resized_hw'][0]}, input {shape[3]}x{shape[2]}")
    return img_path, shape, info


def _export(args, model, shape, out: Path) -> Path:
    """2. a static ONNX file with the SSI nodes, masks exposed."""
    from .export import export_onnx

    onnx_path = out / f"{DEFAULT_ARCH}_fpn.onnx"
    _say(f"[2/6] exporting to {onnx_path} (static {'x'.join(map(str, shape))}, masks exposed, "
         f"{args.granularity} form)")
    export_onnx(model, onnx_path, input_shape=shape, dynamic=None, dtype="fp32",
                granularity=args.granularity,
                expose_masks=True, metadata={"demo_image": f"skimage.data.{args.image}()"},
                progress=lambda m: _say("      " + m))
    return onnx_path


def _validate(args, onnx_path: Path, img_path: Path, out: Path):
    """3. ONNX Runtime against the PyTorch reference on the photograph (validation library)."""
    from .validation.compare import format_table
    from .validation.runner import InputSpec, validate

    _say("[3/6] validating ONNX Runtime (CPU) against the PyTorch reference on the photograph")
    vres = validate(onnx_path, backend="onnxruntime",
                    inputs=InputSpec(image=img_path, short_side=args.short_side),
                    report=out / "validate.json", device="cpu", raise_on_fail=False,
                    log=lambda m: _say("      " + m), keep_outputs=True)
    _say(format_table(vres.comparison, mask_rows=False))
    _say(f"      (per-layer mask table and all statistics: {out / 'validate.json'})")
    return vres


def _profile(args, onnx_path: Path, img_path: Path, shape, out: Path) -> dict:
    """4. sparse vs its dense twin (same weights) with PyTorch on the CPU."""
    import torch

    from .profiling import ProfileConfig, format_report, profile

    _say(f"[4/6] profiling sparse vs dense with PyTorch on the CPU ({args.iterations} runs each, "
         f"{torch.get_num_threads()} threads)")
    prof = profile(ProfileConfig(onnx=onnx_path, backend="torch", image=img_path,
                                 input_shape=shape, compare_dense=True, warmup_ms=0,
                                 iterations=args.iterations, report=out / "profile.json"))
    _say(format_report(prof))
    return prof


def _masks(onnx_path: Path, vres, img_path: Path, info: dict, out: Path) -> Path | None:
    """5. the reference's masks (the outputs the manifest calls masks) over the photograph."""
    from .manifest import read_manifest

    outputs = vres.reference_outputs or {}
    masks = [(t.layer, outputs[t.name]) for t in read_manifest(onnx_path).outputs_of_kind("mask")
             if t.name in outputs]
    if not masks:
        return None
    return _plot_masks(img_path, masks, vres.densities or {}, info["resized_hw"],
                       info["padded_hw"], out)


def _detect(args, img_path: Path, out: Path) -> dict:
    """6. the whole detector (Faster R-CNN + FPN, official test path) on the photograph."""
    from .detection.draw import draw_detections
    from .detection.runner import open_detector
    from .outputs import write_text_atomic
    from .validation.inputs import load_image

    arch = "faster_rcnn_" + DEFAULT_ARCH
    scale = (int(round(args.short_side * 1667 / 1000)), args.short_side)
    _say(f"[6/6] detecting with {arch} (seeded random weights, test scale "
         f"{scale[0]}x{scale[1]}; random heads give random boxes: the pipeline, not a model)")
    det = open_detector(arch=arch, test_scale=scale)
    try:
        img = load_image(img_path)
        dets, density, seconds = det.run(det.prepare(img))
    finally:
        det.close()
    png = draw_detections(img, dets[:10], out / "detections.png", min_score=0.0)  # the top 10
    write_text_atomic(out / "detections.json", json.dumps(
        {"model": det.source, "test_scale": list(scale),
         "images": [{"image": str(img_path), "detections": dets}]}, indent=2) + "\n",
        "detections")
    _say(f"      {len(dets)} detections in {seconds:.1f} s (mean density {density:.3f}); "
         f"drawn: {png}")
    return {"arch": arch, "count": len(dets), "seconds": seconds, "png": str(png),
            "json": str(out / "detections.json")}


def _summary(args, shape, onnx_path, vres, prof: dict, png, timings, total) -> dict:
    d = prof["dense"]
    return {
        "model": DEFAULT_ARCH + " + FPN (seeded random weights)",
        "photograph": f"skimage.data.{args.image}()", "input_shape": list(shape),
        "onnx": str(onnx_path), "validation_passed": vres.passed,
        "worst_feature_max_abs": max(o.max_abs for o in vres.comparison.outputs),
        "worst_feature_cosine": min(o.cosine for o in vres.comparison.outputs),
        "min_mask_agreement": min((m.agreement for m in vres.comparison.masks), default=1.0),
        "density_mean": prof["density_mean"], "density_per_stage": prof["density_per_stage"],
        "sampling_layers": len(prof["density"]),
        "backbone_gmacs_sparse": prof["backbone_gmacs"],
        "backbone_gmacs_dense": d["backbone_gmacs"],
        "mac_ratio": prof["gmacs_ratio_vs_dense"],
        "median_ms_sparse": prof["latency_ms"]["median"], "cv_sparse": prof["latency_cv"],
        "median_ms_dense": d["latency_ms"]["median"], "cv_dense": d["latency_cv"],
        "iterations": prof["iterations"], "machine": prof["machine"],
        "speedup_vs_dense": prof["speedup_vs_dense"], "speedup_verdict": prof["speedup_verdict"],
        "masks_png": str(png) if png else None, "timings_s": timings, "total_s": total,
    }


def _print_summary(args, s: dict, out: Path, png) -> None:
    shape, mach = s["input_shape"], s["machine"]
    load = mach.get("load_avg_before")
    _say("")
    _say("summary")
    _say(f"  model            {s['model']}, input {shape[2]}x{shape[3]} "
         f"(skimage.data.{args.image}, short side {args.short_side})")
    verdict = "PASS" if s["validation_passed"] else "FAIL"
    _say(f"  validation       ONNX Runtime vs PyTorch: {verdict} (worst max|err| "
         f"{s['worst_feature_max_abs']:.2e}, cosine >= {s['worst_feature_cosine']:.7f}, "
         f"mask agreement >= {s['min_mask_agreement']:.4f})")
    stages = ", ".join(f"{k} {v:.3f}" for k, v in s["density_per_stage"].items())
    _say(f"  density          mean {s['density_mean']:.3f} over {s['sampling_layers']} sampling "
         f"layers; per stage {stages}")
    _say(f"  backbone GMACs   sparse {s['backbone_gmacs_sparse']:.1f} vs dense "
         f"{s['backbone_gmacs_dense']:.1f} at these densities: MAC ratio {s['mac_ratio']:.2f}x "
         "(the most a sparse kernel can gain)")
    _say(f"  CPU latency      sparse {s['median_ms_sparse']:.0f} ms "
         f"(CV {100 * s['cv_sparse']:.0f} %) vs dense {s['median_ms_dense']:.0f} ms "
         f"(CV {100 * s['cv_dense']:.0f} %), median of {s['iterations']} runs: "
         f"{s['speedup_vs_dense']:.2f}x")
    _say(f"  machine          {mach.get('threads')} threads on {mach.get('cpu_count')} cores"
         + (f", load average {load[0]:.1f} (1 min, this run included)" if load else "")
         + (f", {mach['other_running_before']} other runnable tasks"
            if mach.get("other_running_before") is not None else ""))
    _say(f"  verdict          {s['speedup_verdict']['text']}")
    _say(f"  outputs          {out}/ (ONNX, photo.png, validate.json, profile.json, summary.json, "
         "detections.json, detections.png"
         f"{', masks.png' if png else ''})")
    _say(f"  total time       {s['total_s']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
