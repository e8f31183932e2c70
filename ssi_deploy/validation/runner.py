"""``ssi-deploy validate``: a backend's outputs for an ONNX file against the PyTorch reference.

The reference is rebuilt from the file's metadata (arch, FPN, sampling mode/seed, weights:
the checkpoint it records, whose sha256 must match ``--checkpoint``, or the seeded random
init). Both run the same inputs; ``compare.compare_outputs`` judges the outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import SSIError, ValidationFailed
from . import inputs as I
from .compare import (ComparisonReport, Tolerances, compare_outputs, format_table,
                      is_mask_name)


def normalisation_from_meta(meta: dict) -> tuple[list[float], list[float]]:
    """(mean, std) from the exporter's metadata (``normalisation``, else the recorded model
    description's ``normalization``); the spec's values when it records none."""
    candidates = [meta.get("normalisation"), meta.get("normalization")]
    desc = meta.get("describe")
    if isinstance(desc, dict):
        candidates += [desc.get("normalization"), desc.get("normalisation")]
    candidates.append({"mean": meta.get("mean"), "std": meta.get("std")})
    for v in candidates:
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                continue
        if isinstance(v, dict) and v.get("mean") is not None and v.get("std") is not None:
            mean, std = [float(x) for x in v["mean"]], [float(x) for x in v["std"]]
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise SSIError(f"bad normalisation in the ONNX metadata: mean {mean}, std {std}")
            return mean, std
    return list(I.DEFAULT_MEAN), list(I.DEFAULT_STD)


def _static_hw(shape) -> tuple[int, int] | None:
    if shape is None or len(shape) != 4:
        return None
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    return None


def _static_batch(shape) -> int:
    if shape is not None and len(shape) == 4 and isinstance(shape[0], int) and shape[0] > 0:
        return shape[0]
    return 1


def onnx_io(path: str | Path) -> tuple[dict[str, tuple], list[str]]:
    """Graph inputs (name -> shape, ints fixed and None free) and output names, no session."""
    import onnx

    try:
        g = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise SSIError(f"{path}: not a readable ONNX file ({e})") from None
    inits = {i.name for i in g.initializer}
    specs = {}
    for i in g.input:
        if i.name in inits:
            continue
        specs[i.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                              for d in i.type.tensor_type.shape.dim)
    return specs, [o.name for o in g.output]


@dataclass
class InputSpec:
    """Where the validation input comes from (exactly one of image / npz / random)."""

    image: str | Path | None = None
    npz: str | Path | None = None
    random: bool = False
    seed: int = 0
    short_side: int | None = None
    input_shape: tuple[int, int, int, int] | None = None  # for --random on dynamic inputs
    info: dict = field(default_factory=dict)


def make_feeds(spec: InputSpec, input_shapes: dict[str, tuple | None], meta: dict,
               default_hw: tuple[int, int] = (512, 512)) -> tuple[dict[str, np.ndarray], dict]:
    """Named feeds for the model's inputs, and a description of them for the report."""
    given = sum(x is not None and x is not False for x in (spec.image, spec.npz, spec.random or None))
    if given > 1:
        raise SSIError("give one input source: --image, --inputs or --random")
    names = list(input_shapes)
    if spec.npz is not None:
        feeds = I.load_npz(spec.npz, input_shapes)
        return feeds, {"source": "npz", "path": str(spec.npz),
                       "shapes": {k: list(v.shape) for k, v in feeds.items()}}
    if len(names) != 1:
        raise SSIError(f"the model has {len(names)} inputs {names}: give them with --inputs FILE.npz")
    name, shape = names[0], input_shapes[names[0]]
    if spec.image is not None:
        mean, std = normalisation_from_meta(meta)
        img = I.load_image(spec.image)
        x, info = I.preprocess_image(img, mean, std, short_side=spec.short_side,
                                     static_hw=_static_hw(shape))
        batch = _static_batch(shape)
        if batch > 1:
            x = np.repeat(x, batch, axis=0)
        info.update(source="image", path=str(spec.image), shape=list(x.shape))
        return {name: x}, info
    # random (the default)
    if spec.input_shape is not None:
        full = tuple(spec.input_shape)
        if shape is not None and not I._dims_ok(full, shape):
            raise SSIError(f"--input-shape {list(full)} does not fit the model's input {name!r} "
                           f"{I._fmt_shape(shape)}")
    elif _static_hw(shape) is not None:
        full = (_static_batch(shape), 3) + _static_hw(shape)
    else:
        exported = meta.get("input_shape")
        if isinstance(exported, str):
            try:
                exported = json.loads(exported)
            except ValueError:
                exported = None
        if isinstance(exported, (list, tuple)) and len(exported) == 4:
            full = tuple(int(d) for d in exported)
        else:
            full = (1, 3) + tuple(default_hw)
    x = I.random_input(full, spec.seed)
    return {name: x}, {"source": "random", "seed": spec.seed, "shape": list(full)}


@dataclass
class ValidationResult:
    onnx: str
    backend: dict
    reference: dict
    inputs: dict
    comparison: ComparisonReport
    metadata: dict
    reference_outputs: dict | None = None  # kept with validate(keep_outputs=True)
    densities: dict | None = None  # the reference's measured density per sampling layer

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    def to_dict(self) -> dict:
        d = {"onnx": self.onnx, "passed": self.passed, "backend": self.backend,
             "reference": self.reference, "inputs": self.inputs,
             "metadata": {k: v for k, v in self.metadata.items() if isinstance(v, (str, int, float, bool, list, dict))}}
        d.update(self.comparison.to_dict())
        d["reference_density"] = self.densities or {}
        return d

    def table(self) -> str:
        return format_table(self.comparison)


def validate(onnx_path: str | Path, checkpoint: str | Path | None = None,
             backend: str | None = None, inputs: InputSpec | None = None,
             atol=(), rtol=(), min_mask_agreement: float | None = None,
             report: str | Path | None = None, device: str = "auto", raise_on_fail: bool = True,
             log=None, keep_outputs: bool = False,
             max_mask_flips: int | None = None) -> ValidationResult:
    """Run ``backend`` and the PyTorch reference on the same inputs and compare.

    ``onnx_path`` may be a TensorRT engine (``.plan``): it runs on the tensorrt backend (the
    default for engines; any other backend is refused) and the reference is rebuilt from the
    ONNX file it was built from (its ``.plan.json`` sidecar). Otherwise ``backend`` defaults to
    onnxruntime. Raises ``ValidationFailed`` (after writing ``report``) when outputs differ
    beyond tolerance.
    """
    from ..backends.registry import create_backend, resolve_engine
    from ..backends.torch_backend import TorchBackend, check_checkpoint_matches, read_onnx_metadata

    say = log or (lambda msg: None)
    onnx_path = Path(onnx_path)
    test_path = onnx_path
    engine_profile = None
    if _is_engine(onnx_path):
        # a TensorRT engine: the reference comes from the ONNX file it was built from
        test_path, onnx_path = resolve_engine(onnx_path, backend)
        backend = "tensorrt"
        engine_profile = _engine_profile(test_path)
    backend = backend or "onnxruntime"
    meta = read_onnx_metadata(onnx_path)
    check_checkpoint_matches(meta.get("init", ""), checkpoint, onnx_path)  # fail fast
    inputs = inputs or InputSpec(random=True)
    # inputs and tolerances are checked against the file before any backend loads (fast errors)
    input_specs, output_names = onnx_io(onnx_path)
    if engine_profile and inputs.random and inputs.input_shape is None:
        # random input on an engine: the shape its profile was optimised for
        name = next(iter(input_specs), None)
        if name in engine_profile and _static_hw(input_specs[name]) is None:
            inputs = replace(inputs, input_shape=tuple(engine_profile[name]["opt"]))
    feeds, feed_info = make_feeds(inputs, input_specs, meta)
    tol = Tolerances.from_specs(meta.get("dtype", "fp32"), atol, rtol, output_names,
                                min_mask_agreement, max_mask_flips)
    kw = {"device": device} if backend == "onnxruntime" else {}
    if backend == "tensorrt":
        kw = {"input_shape": tuple(next(iter(feeds.values())).shape),
              "echo": lambda m: say("  " + m)}
    say(f"loading {test_path.name} with {backend}")
    test = create_backend(backend, test_path, checkpoint=checkpoint, **kw)
    try:
        say(f"running {backend} on {feed_info.get('source')} input "
            f"{'x'.join(str(d) for d in next(iter(feeds.values())).shape)}")
        test_out = test.run(feeds)
        test_desc = test.describe()
    finally:
        test.close()
    say(f"rebuilding the PyTorch reference ({meta.get('arch')}, {meta.get('init')})")
    ref = TorchBackend.from_onnx(onnx_path, checkpoint=checkpoint)
    try:
        say("running the PyTorch reference")
        ref_out = ref.run(feeds)
        densities = ref.measured_densities()
        ref_desc = ref.describe()
        ref_desc.pop("model", None)
        cmp = compare_outputs(ref_out, test_out, tol)
        flips = sum(m.differing for m in cmp.masks)
        if flips:
            say(f"{flips} mask position(s) differ: re-running the reference with the "
                f"{backend} masks to compare features")
            aligned = _run_with_masks(ref, feeds, test_out)
            if aligned is not None:
                feats = {k: v for k, v in aligned.items() if not is_mask_name(k)}
                again = compare_outputs(feats, test_out, tol)
                cmp.free_running, cmp.outputs = cmp.outputs, again.outputs
    finally:
        ref.close()
    result = ValidationResult(str(onnx_path), test_desc, ref_desc, feed_info, cmp, meta,
                              ref_out if keep_outputs else None, densities)
    if report is not None:
        p = Path(report)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    if raise_on_fail and not result.passed:
        raise ValidationFailed(f"{backend} differs from the PyTorch reference: "
                               + "; ".join(cmp.failures()[:3])
                               + (f" (+{len(cmp.failures()) - 3} more)" if len(cmp.failures()) > 3 else ""))
    return result


def _is_engine(path: Path) -> bool:
    from ..backends.tensorrt_backend import ENGINE_SUFFIXES
    return path.suffix.lower() in ENGINE_SUFFIXES


def _engine_profile(plan: Path) -> dict:
    """Input name -> {"min", "opt", "max"} from the engine's build sidecar ({} if none)."""
    from ..backends.tensorrt_backend import engine_metadata
    meta = engine_metadata(plan) or {}
    prof = meta.get("profiles")
    return prof if isinstance(prof, dict) else {}


def _run_with_masks(ref, feeds: dict, test_out: dict) -> dict | None:
    """The reference's outputs with every sampling layer's mask taken from ``test_out``."""
    import torch

    model = ref.model
    names = list(getattr(model, "mask_names", []) or [])
    if not names or not hasattr(model, "set_mask_override") or any(n not in test_out for n in names):
        return None
    masks = [torch.from_numpy(np.ascontiguousarray(test_out[n])).to(ref.device, ref.dtype)
             for n in names]
    model.set_mask_override(masks)
    try:
        return ref.run(feeds)
    finally:
        model.set_mask_override(None)
