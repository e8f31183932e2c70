"""``ssi-deploy validate``: a backend's outputs for an ONNX file against the PyTorch reference.

The reference is rebuilt from the file's manifest (arch, FPN, sampling mode/seed, weights:
the checkpoint it records, whose sha256 must match ``--checkpoint``, or the seeded random
init). Everything the user gave is checked first (``plan_validation``); then both run the same
inputs and ``compare.compare_outputs`` judges the outputs, each by the comparator of its kind.

Masks are always compared: a file that does not expose them gets them as extra outputs in
memory (ONNX Runtime), the reference always exposes them. When decisions differ, the
reference is replayed with the backend's masks: features are judged against that replay, and
each layer's own decisions under it are judged by their distance from the threshold
(``compare.judge_replay``), so one honest near-threshold flip, which changes everything
downstream, passes, and the free-running report attributes the cascade to its first flip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import SSIError, ValidationFailed
from . import inputs as I
from .compare import (ComparisonReport, Tolerances, compare_outputs, format_table,
                      judge_replay)


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


def graph_io(model) -> tuple[dict[str, tuple], list[str]]:
    """Graph inputs (name -> shape, ints fixed and None free) and output names, no session."""
    g = model.graph
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


def make_feeds(spec: InputSpec, input_shapes: dict[str, tuple | None], manifest,
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
    if manifest is not None and manifest.is_detector and len(names) == 2:
        return _detector_feeds(spec, input_shapes, manifest)
    if len(names) != 1:
        raise SSIError(f"the model has {len(names)} inputs {names}: give them with --inputs FILE.npz")
    name, shape = names[0], input_shapes[names[0]]
    if spec.image is not None:
        pre = manifest.preprocessing if manifest is not None else None
        mean = pre.mean if pre else I.DEFAULT_MEAN
        std = pre.std if pre else I.DEFAULT_STD
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
    elif manifest is not None:
        full = tuple(manifest.example_shape)
    else:
        full = (1, 3) + tuple(default_hw)
    x = I.random_input(full, spec.seed)
    return {name: x}, {"source": "random", "seed": spec.seed, "shape": list(full)}


def _detector_feeds(spec: InputSpec, input_shapes: dict, manifest) -> tuple[dict, dict]:
    """A detector's image and image_info: a photograph prepared as the official test path
    (keep-ratio resize to the export's test scale, or to ``--short-side``), or smooth
    image-like noise (white noise drives seeded random heads into saturated, tied scores)."""
    from ..detection.images import make_batch, preprocess

    (name, shape), (info_name, _) = list(input_shapes.items())
    static = _static_hw(shape)
    batch = _static_batch(shape)
    pre = manifest.preprocessing
    if spec.image is not None:
        scale = pre.test_scale or (1667, 1000)
        if spec.short_side:
            scale = (int(round(spec.short_side * max(scale) / min(scale))), spec.short_side)
        img = I.load_image(spec.image)
        item = preprocess(img, scale, pre.mean, pre.std, pre.pad_multiple, static)
        x, info = make_batch([item], static, pre.pad_multiple)
        desc = {"source": "image", "path": str(spec.image), "original_hw": list(item.original_hw),
                "resized_hw": list(item.img_shape), "scale": item.scale_factor}
    else:
        import torch

        from ..models.init import _smooth_image
        if spec.input_shape is not None:
            full = tuple(spec.input_shape)
            if shape is not None and not I._dims_ok(full, shape):
                raise SSIError(f"--input-shape {list(full)} does not fit the model's input "
                               f"{name!r} {I._fmt_shape(shape)}")
        elif static is not None:
            full = (batch, 3) + static
        else:
            full = tuple(manifest.example_shape)
        x = _smooth_image(torch.Generator().manual_seed(spec.seed), full).numpy()
        info = np.tile(np.asarray([[full[2], full[3], 1.0]], np.float32), (full[0], 1))
        desc = {"source": "random", "seed": spec.seed, "shape": list(full),
                "kind": "smooth image-like noise"}
        batch = 1
    if batch > 1:
        x, info = np.repeat(x, batch, axis=0), np.repeat(info, batch, axis=0)
    desc["shape"] = list(x.shape)
    return {name: x, info_name: info}, desc


@dataclass
class ValidationResult:
    onnx: str
    backend: dict
    reference: dict
    inputs: dict
    comparison: ComparisonReport
    metadata: dict  # the export's manifest, as a dict
    reference_outputs: dict | None = None  # kept with validate(keep_outputs=True)
    densities: dict | None = None  # the reference's measured density per sampling layer

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    def to_dict(self) -> dict:
        d = {"onnx": self.onnx, "passed": self.passed, "backend": self.backend,
             "reference": self.reference, "inputs": self.inputs,
             "manifest": self.metadata}
        d.update(self.comparison.to_dict())
        d["reference_density"] = self.densities or {}
        return d

    def table(self) -> str:
        return format_table(self.comparison)


@dataclass
class ValidationPlan:
    """Everything ``validate`` will do, checked before any model is built or run."""

    test_path: Path  # what runs on the backend: the ONNX file or an engine
    onnx_path: Path  # the ONNX file the reference comes from
    backend: str
    manifest: object  # ssi_deploy.manifest.Manifest
    checkpoint: Path | None
    feeds: dict
    feed_info: dict
    tolerances: Tolerances
    report: Path | None
    backend_kw: dict
    mask_tensors: dict  # {mask tensor of a node: mask output name}, for files without masks


def plan_validation(onnx_path: str | Path, checkpoint: str | Path | None = None,
                    backend: str | None = None, inputs: InputSpec | None = None,
                    atol=(), rtol=(), min_mask_agreement: float | None = None,
                    report: str | Path | None = None, device: str = "auto",
                    max_mask_flips: int | None = None, log=None) -> ValidationPlan:
    """Check the file, its manifest, the checkpoint, the inputs, the tolerances and the report
    path; one-line errors before any work."""
    from ..backends.torch_backend import check_weights_match
    from ..export.node_check import check_manifest_matches_graph, check_ssi_nodes
    from ..manifest import manifest_from_model_proto
    from ..outputs import check_output_path

    say = log or (lambda msg: None)
    onnx_path = Path(onnx_path)
    if report is not None:
        report = check_output_path(report, "--report")
    test_path = onnx_path
    engine_profile = None
    if _is_engine(onnx_path):
        # a TensorRT engine: the reference comes from the ONNX file it was built from
        from ..backends.registry import resolve_engine
        test_path, onnx_path = resolve_engine(onnx_path, backend)
        backend = "tensorrt"
        engine_profile = _engine_profile(test_path)
    backend = backend or "onnxruntime"
    model = _load_onnx(onnx_path)  # read once: manifest, node checks, inputs, mask tensors
    manifest = manifest_from_model_proto(model, str(onnx_path))
    if test_path != onnx_path:
        _check_engine_matches(test_path, onnx_path, manifest)
    check_weights_match(manifest, checkpoint, onnx_path)
    check_ssi_nodes(model, str(onnx_path))
    check_manifest_matches_graph(manifest, model, str(onnx_path))
    mask_tensors = sample_mask_tensors(model, mask_output_names(manifest))
    inputs = inputs or InputSpec(random=True)
    input_specs, output_names = graph_io(model)
    del model
    if engine_profile and inputs.random and inputs.input_shape is None:
        # random input on an engine: the shape its profile was optimised for
        name = next(iter(input_specs), None)
        if name in engine_profile and _static_hw(input_specs[name]) is None:
            inputs = replace(inputs, input_shape=tuple(engine_profile[name]["opt"]))
    feeds, feed_info = make_feeds(inputs, input_specs, manifest)
    from ..input_shape import check_shape_size
    check_shape_size(next(iter(feeds.values())).shape, "the validation input")
    names = output_names + [m for m in mask_output_names(manifest) if m not in output_names]
    tol = Tolerances.from_specs(manifest.precision, atol, rtol, names, min_mask_agreement,
                                max_mask_flips)
    if manifest.detector and isinstance(manifest.detector.get("score_thr"), (int, float)):
        tol.detections.score_thr = float(manifest.detector["score_thr"])
    kw = {"device": device} if backend == "onnxruntime" else {}
    if backend == "tensorrt":
        kw = {"input_shape": tuple(next(iter(feeds.values())).shape),
              "echo": lambda m: say("  " + m)}
    return ValidationPlan(test_path, onnx_path, backend, manifest,
                          None if checkpoint is None else Path(checkpoint), feeds, feed_info, tol,
                          None if report is None else Path(report), kw, mask_tensors)


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
    say = log or (lambda msg: None)
    plan = plan_validation(onnx_path, checkpoint, backend, inputs, atol, rtol,
                           min_mask_agreement, report, device, max_mask_flips, log)
    m = plan.manifest
    say(f"rebuilding the PyTorch reference ({m.arch}, {m.weights.describe()})")
    from ..backends.torch_backend import TorchBackend
    ref = TorchBackend.from_onnx(plan.onnx_path, checkpoint=plan.checkpoint, manifest=m,
                                 expose_masks=m.sparse)
    try:
        test_out, test_desc, note = _run_backend(plan, ref, say)
        say("running the PyTorch reference")
        ref_out = ref.run(plan.feeds)
        densities = ref.measured_densities()
        ref_desc = ref.describe()
        ref_desc.pop("model", None)
        kinds = {name: "mask" for name in mask_output_names(m)}
        kinds.update({o.name: o.kind for o in m.outputs})
        # masks the file does not declare and the backend cannot give are not "missing"
        judged = {k: v for k, v in ref_out.items() if k in test_out or k in m.output_names}
        cmp = compare_outputs(judged, test_out, plan.tolerances, kinds, m.detection_outputs)
        cmp.note = note
        flips = sum(x.differing for x in cmp.masks)
        if flips:
            say(f"{flips} mask position(s) differ (first in {cmp.first_flip}): replaying the "
                f"{plan.backend} masks in the reference")
            _judge_by_replay(cmp, ref, plan, test_out, kinds)
    finally:
        ref.close()
    result = ValidationResult(str(plan.onnx_path), test_desc, ref_desc, plan.feed_info, cmp,
                              m.to_dict(), ref_out if keep_outputs else None, densities)
    if plan.report is not None:
        from ..outputs import write_text_atomic
        write_text_atomic(plan.report, json.dumps(result.to_dict(), indent=2, default=str) + "\n",
                          "report")
    if raise_on_fail and not result.passed:
        raise ValidationFailed(failure_message(result))
    return result


def failure_message(result: "ValidationResult") -> str:
    f = result.comparison.failures()
    name = result.backend.get("backend", "the backend")
    return (f"{name} differs from the PyTorch reference: " + "; ".join(f[:3])
            + (f" (+{len(f) - 3} more)" if len(f) > 3 else ""))


def mask_output_names(manifest) -> list[str]:
    """The mask outputs of the reference for this export (every sampling layer, in order)."""
    if not manifest.sparse:
        return []
    names = [o.name for o in manifest.outputs if o.kind == "mask"]
    if names:
        return names
    from ..models.network import mask_output_names as of_arch
    from ..models.registry import get_arch
    return of_arch(get_arch(manifest.arch))


def _run_backend(plan: ValidationPlan, ref, say) -> tuple[dict, dict, str | None]:
    """The backend's outputs (masks included whenever the backend can give them)."""
    from ..backends.registry import create_backend

    kw = dict(plan.backend_kw)
    note = None
    mask_names = list(ref.model.mask_names) if plan.manifest.sparse else []
    exposed = [o.name for o in plan.manifest.outputs if o.kind == "mask"]
    if mask_names and not exposed:
        if plan.backend == "onnxruntime":
            kw["extra_outputs"] = plan.mask_tensors
        elif plan.backend == "torch":
            kw["expose_masks"] = True
        else:
            note = ("the engine exposes no masks: sampling decisions could not be compared; "
                    "export with masks (the default) and rebuild to judge them")
    if plan.backend == "torch":
        say(f"torch: rebuilding the model of {plan.test_path.name} from its manifest (the "
            "file's weights and attributes are not read; onnxruntime runs the file itself)")
    else:
        say(f"loading {plan.test_path.name} with {plan.backend}")
    test = create_backend(plan.backend, plan.test_path, checkpoint=plan.checkpoint, **kw)
    try:
        x = next(iter(plan.feeds.values()))
        say(f"running {plan.backend} on {plan.feed_info.get('source')} input "
            f"{'x'.join(str(d) for d in x.shape)}")
        return test.run(plan.feeds), test.describe(), note
    finally:
        test.close()


def sample_mask_tensors(model, mask_names: list[str]) -> dict[str, str]:
    """{mask tensor: mask output name} of a loaded model, by the nodes' layer ids: the output
    of each SampleMask (ops form) and outputs 1, 2 of each SSIBottleneck (block form)."""
    from ..ops import contract as C

    out = {}

    def add(tensor: str, layer) -> None:
        if layer is not None and 0 <= layer < len(mask_names):
            out[tensor] = mask_names[layer]

    for node in model.graph.node:
        if node.domain != C.DOMAIN:
            continue
        attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
        if node.op_type == C.SAMPLE_MASK.name:
            add(node.output[0], attrs.get("layer"))
        elif node.op_type == C.SSI_BOTTLENECK.name and len(node.output) == 3:
            add(node.output[1], attrs.get("layer1"))
            add(node.output[2], attrs.get("layer2"))
    return out


def _judge_by_replay(cmp, ref, plan: ValidationPlan, test_out: dict, kinds: dict) -> None:
    """Replay the backend's masks in the reference: features against the replay, each layer's
    own decisions under it judged by their margin (``compare.judge_replay``)."""
    aligned, records = _run_with_masks(ref, plan.feeds, test_out)
    if aligned is None:
        cmp.note = "masks differ, but the reference cannot replay them (masks missing)"
        return
    feats = {k: v for k, v in aligned.items() if kinds.get(k) != "mask"}
    again = compare_outputs(feats, test_out, plan.tolerances, kinds,
                            plan.manifest.detection_outputs)
    own = {k: np.asarray(r["mask"].cpu().numpy()) for k, r in records.items()}
    replayed = compare_outputs(own, test_out, plan.tolerances, {k: "mask" for k in own})
    judge_replay(replayed.masks, test_out, records, plan.tolerances.default)
    cmp.free_running, cmp.outputs = cmp.outputs, again.outputs
    if again.detections:
        cmp.free_running_detections, cmp.detections = cmp.detections, again.detections
    cmp.free_running_masks, cmp.masks = cmp.masks, replayed.masks


def _load_onnx(path: Path):
    import onnx

    if not path.is_file():
        raise SSIError(f"{path}: no such ONNX file; give the path written by `ssi-deploy export`")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise SSIError(f"{path}: not a readable ONNX file ({str(e).splitlines()[0][:120]}); "
                       "re-export it with `ssi-deploy export`") from None


def _check_engine_matches(plan: Path, onnx_path: Path, manifest) -> None:
    """The engine was built from this export: its sidecar's manifest is the file's."""
    from ..tensorrt.builder import read_engine_manifest

    built = read_engine_manifest(plan)
    if built.to_dict() != manifest.to_dict():
        raise SSIError(f"{onnx_path} is not the export engine {plan} was built from (their "
                       "manifests differ: re-exported since?); rebuild the engine with "
                       "`ssi-deploy build`")


def _is_engine(path: Path) -> bool:
    from ..backends.tensorrt_backend import ENGINE_SUFFIXES
    return path.suffix.lower() in ENGINE_SUFFIXES


def _engine_profile(plan: Path) -> dict:
    """Input name -> {"min", "opt", "max"} from the engine's build sidecar ({} if none)."""
    from ..backends.tensorrt_backend import engine_metadata
    meta = engine_metadata(plan) or {}
    prof = meta.get("profiles")
    return prof if isinstance(prof, dict) else {}


def _run_with_masks(ref, feeds: dict, test_out: dict):
    """(outputs, decision records) of the reference with every sampling layer's mask taken
    from ``test_out``; (None, {}) when the backend gave no masks."""
    import torch

    model = ref.model
    names = list(getattr(model, "mask_names", []) or [])
    if not names or not hasattr(model, "set_mask_override") or any(n not in test_out for n in names):
        return None, {}
    masks = [torch.from_numpy(np.ascontiguousarray(test_out[n])).to(ref.device, ref.dtype)
             for n in names]
    model.set_mask_override(masks, record_decisions=True)
    try:
        out = ref.run(feeds)
        return out, model.decision_records()
    finally:
        model.set_mask_override(None)
