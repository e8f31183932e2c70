"""`make demo`: the whole job on the built-in default model, on the CPU, in a few minutes.

1. build sparse_resnet101_dcn with FPN from seeded random weights (calibrated so that the
   sampling masks keep realistic shares of positions, 0.15-0.45 per layer);
2. export it to ONNX with the SSI custom nodes (static input, masks exposed);
3. validate ONNX Runtime against PyTorch on a real photograph shipped with scikit-image
   (``skimage.data.coffee()``, 400x600, resized to short side 512 -> input 512x768);
4. profile the sparse network against its dense twin (same weights) with PyTorch on the CPU;
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


def _plot_masks(img_path: Path, masks: dict[str, np.ndarray], densities: dict[str, float],
                resized_hw, padded_hw, out: Path) -> Path | None:
    """First block of each stage (mask1) and the last layer, over the photograph."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _say("      (matplotlib not installed: no mask picture)")
        return None
    from PIL import Image
    img = np.asarray(Image.open(img_path).convert("RGB"))
    names = list(masks)
    pick = [n for n in names if n.endswith("_0_mask1")][:4] + [names[-1]]
    fig, axes = plt.subplots(1, len(pick), figsize=(3.6 * len(pick), 3.4))
    for ax, name in zip(np.atleast_1d(axes), pick):
        m = masks[name][0, 0]
        stride = padded_hw[0] / m.shape[0]  # the mask covers the padded canvas
        sub = m[: int(np.ceil(resized_hw[0] / stride)), : int(np.ceil(resized_hw[1] / stride))]
        ax.imshow(img)
        ax.imshow(np.ma.masked_where(sub <= 0, sub), cmap="autumn", alpha=0.5, vmin=0, vmax=1,
                  extent=(0, img.shape[1], img.shape[0], 0), interpolation="nearest")
        layer = name.removeprefix("mask_")
        key = layer.replace("_", ".", 2)
        ax.set_title(f"{key} (stride {stride:g})\ndensity {densities.get(key, float((m > 0).mean())):.2f}",
                     fontsize=9)
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
    p.add_argument("--iterations", type=int, default=3, help="timed runs per network (after one warm-up run)")
    p.add_argument("--seed", type=int, default=0, help="random-init seed of the weights")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except SSIError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def _run(args) -> int:
    import torch
    from PIL import Image

    from .export import export_onnx
    from .backends.torch_backend import build_model
    from .profiling import ProfileConfig, format_report, profile
    from .validation import inputs as I
    from .validation.compare import format_table
    from .validation.runner import InputSpec, normalisation_from_meta, validate

    t_start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    # 1. the model ------------------------------------------------------------------------
    t0 = time.perf_counter()
    _say(f"[1/5] building {DEFAULT_ARCH} + FPN from seeded random weights (seed {args.seed})")
    # build_model memoises the built model: validate and profile rebuild the reference from
    # the file's metadata, and get a copy of this one instead of a second calibration
    model = build_model(DEFAULT_ARCH, with_fpn=True, checkpoint=None, sampling="threshold",
                        seed=0, init_seed=args.seed)
    model.fuse_for_inference()
    timings["build_s"] = time.perf_counter() - t0

    # the photograph and its network input shape
    photo = _photo(args.image)
    img_path = out / f"{args.image}.png"
    Image.fromarray(photo).save(img_path)
    norm = getattr(model, "describe")().get("normalization", {})
    x, info = I.preprocess_image(photo, norm.get("mean", I.DEFAULT_MEAN),
                                 norm.get("std", I.DEFAULT_STD), short_side=args.short_side)
    shape = tuple(x.shape)
    _say(f"      photograph skimage.data.{args.image}() {photo.shape[1]}x{photo.shape[0]} -> "
         f"resized {info['resized_hw'][1]}x{info['resized_hw'][0]}, input {shape[3]}x{shape[2]}")

    # 2. export -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    onnx_path = out / f"{DEFAULT_ARCH}_fpn.onnx"
    _say(f"[2/5] exporting to {onnx_path} (static {'x'.join(map(str, shape))}, masks exposed)")
    model.expose_masks = True
    export_onnx(model, onnx_path, input_shape=shape, dynamic=None, dtype="fp32",
                expose_masks=True, metadata={"demo_image": f"skimage.data.{args.image}()"},
                progress=lambda m: _say("      " + m))
    model.expose_masks = False
    timings["export_s"] = time.perf_counter() - t0

    # 3. validate ONNX Runtime against PyTorch on the photograph ------------------------------
    t0 = time.perf_counter()
    _say("[3/5] validating ONNX Runtime (CPU) against the PyTorch reference on the photograph")
    vres = validate(onnx_path, backend="onnxruntime",
                    inputs=InputSpec(image=img_path, short_side=args.short_side),
                    report=out / "validate.json", device="cpu", raise_on_fail=False,
                    log=lambda m: _say("      " + m), keep_outputs=True)
    timings["validate_s"] = time.perf_counter() - t0
    _say(format_table(vres.comparison, mask_rows=False))
    _say(f"      (per-layer mask table and all statistics: {out / 'validate.json'})")

    # 4. profile sparse vs dense (PyTorch, CPU) ----------------------------------------------
    t0 = time.perf_counter()
    _say(f"[4/5] profiling sparse vs dense with PyTorch on the CPU ({args.iterations} runs each, "
         f"{torch.get_num_threads()} threads)")
    prof = profile(ProfileConfig(onnx=onnx_path, backend="torch", image=img_path,
                                 input_shape=shape, compare_dense=True, warmup_ms=0,
                                 iterations=args.iterations))
    (out / "profile.json").write_text(json.dumps(prof, indent=2) + "\n")
    timings["profile_s"] = time.perf_counter() - t0
    _say(format_report(prof))

    # 5. masks over the photograph (the reference's masks from the validation run) -----------
    _say("[5/5] drawing the sampling masks")
    ref_masks = {k: v for k, v in (vres.reference_outputs or {}).items() if k.startswith("mask_")}
    png = _plot_masks(img_path, ref_masks, vres.densities or {}, info["resized_hw"],
                      info["padded_hw"], out) if ref_masks else None

    total = time.perf_counter() - t_start
    dens = prof["density"]
    summary = {
        "model": DEFAULT_ARCH + " + FPN (seeded random weights)",
        "photograph": f"skimage.data.{args.image}()", "input_shape": list(shape),
        "onnx": str(onnx_path), "validation_passed": vres.passed,
        "worst_feature_max_abs": max(o.max_abs for o in vres.comparison.outputs),
        "worst_feature_cosine": min(o.cosine for o in vres.comparison.outputs),
        "min_mask_agreement": min((m.agreement for m in vres.comparison.masks), default=1.0),
        "density_mean": float(np.mean(list(dens.values()))),
        "backbone_gmacs_sparse": prof["backbone_gmacs"],
        "backbone_gmacs_dense": prof["dense"]["backbone_gmacs"],
        "median_ms_sparse": prof["latency_ms"]["median"],
        "median_ms_dense": prof["dense"]["latency_ms"]["median"],
        "speedup_vs_dense": prof["speedup_vs_dense"],
        "masks_png": str(png) if png else None, "timings_s": timings, "total_s": total,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _say("")
    _say("summary")
    _say(f"  model            {summary['model']}, input {shape[2]}x{shape[3]} "
         f"(skimage.data.{args.image}, short side {args.short_side})")
    _say(f"  validation       ONNX Runtime vs PyTorch: {'PASS' if vres.passed else 'FAIL'} "
         f"(worst max|err| {summary['worst_feature_max_abs']:.2e}, cosine >= "
         f"{summary['worst_feature_cosine']:.7f}, mask agreement >= {summary['min_mask_agreement']:.4f})")
    _say(f"  density          mean {summary['density_mean']:.3f} over {len(dens)} sampling layers")
    _say(f"  backbone GMACs   sparse {summary['backbone_gmacs_sparse']:.1f} vs dense "
         f"{summary['backbone_gmacs_dense']:.1f} ({summary['backbone_gmacs_dense'] / summary['backbone_gmacs_sparse']:.2f}x fewer)")
    _say(f"  CPU latency      sparse {summary['median_ms_sparse']:.0f} ms vs dense "
         f"{summary['median_ms_dense']:.0f} ms (median): speedup {summary['speedup_vs_dense']:.2f}x")
    _say(f"  outputs          {out}/ (ONNX, validate.json, profile.json, summary.json"
         f"{', masks.png' if png else ''})")
    _say(f"  total time       {total:.0f} s")
    return 0 if vres.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
