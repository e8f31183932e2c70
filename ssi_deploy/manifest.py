"""What an export is: one manifest, written by the exporter and read by every later step.

The manifest travels with the artifact: inside the ONNX file (metadata key ``ssi.manifest``,
JSON) and inside the engine's build sidecar (``model.plan.json``, key ``manifest``).
``validate``, ``profile``, ``build`` and serving read it through :func:`read_manifest` /
:func:`engine_manifest` and nothing else, so a field is parsed and checked in one place.
Every field is validated on load: an edited or foreign value gives one line naming the
field and the fix, never a traceback later.

Fields (schema version 1):

    arch, with_fpn, sparse          the registry architecture the file was exported from
    weights                         {"kind": "checkpoint", "sha256": hex},
                                    {"kind": "random", "seed": int}, or {"kind": "untracked"}
                                    (a module not built by create_model: no reference)
    sampling                        {"mode": threshold|stochastic|official, "seed": int,
                                     "forced_density": float in (0, 1] or null}
    precision                       "fp32" or "fp16" (tensor dtype of the graph)
    inputs, outputs                 [{"name", "kind", "dtype", "shape"}]; shape dims are ints
                                    or axis names (dynamic); kind: image | image_info |
                                    feature | mask | detections; masks carry their sampling
                                    "layer" (layer1.0.mask1 ...), detection outputs their
                                    "role" (boxes | scores | labels | count); dtype fp32 |
                                    fp16 | int64. Inputs: the image, and for a detector
                                    image_info [B, 3] = (resized h, resized w, scale factor)
    preprocessing                   {"mean": [3], "std": [3], "channel_order": "RGB",
                                     "pad_multiple": int, "test_scale": [long, short] or
                                     absent (detectors: the official keep-ratio resize)}
    detector                        absent, or the detector's test settings (score_thr,
                                    nms_iou, max_per_img, num_classes, ...)
    example_shape, dynamic          the export's example input shape and its symbolic axes
    granularity                     "block" (one SSIBottleneck node per SSI block), "ops" (the
                                    three building-block ops per block; files without the field)
                                    or "dense" (no SSI node)
    semantics_version, ssi_opset_version, onnx_opset, ssi_nodes, tool_version, torch_version
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import SSIError

SCHEMA_VERSION = 1
ONNX_KEY = "ssi.manifest"  # metadata_props key of an exported ONNX file
SIDECAR_KEY = "manifest"  # key in an engine's build sidecar
PRECISIONS = ("fp32", "fp16")
SAMPLING_MODES = ("threshold", "stochastic", "official")
TENSOR_KINDS = ("image", "image_info", "feature", "mask", "detections")
TENSOR_DTYPES = PRECISIONS + ("int64",)
DETECTION_ROLES = ("boxes", "scores", "labels", "count")
DYNAMIC_AXES = ("batch", "height", "width")
GRANULARITIES = ("block", "ops", "dense")
DEFAULT_PAD_MULTIPLE = 32


class ManifestError(SSIError):
    """A manifest that is missing, foreign or edited into something invalid."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    kind: str  # image | feature | mask
    dtype: str  # fp32 | fp16
    shape: tuple  # ints, or axis names for dynamic dimensions
    layer: str | None = None  # masks: the sampling layer (layer2.0.mask1)
    role: str | None = None  # detections: boxes | scores | labels | count

    def to_dict(self) -> dict:
        d = {"name": self.name, "kind": self.kind, "dtype": self.dtype, "shape": list(self.shape)}
        if self.layer is not None:
            d["layer"] = self.layer
        if self.role is not None:
            d["role"] = self.role
        return d


@dataclass(frozen=True)
class Weights:
    kind: str  # checkpoint | random
    sha256: str | None = None
    seed: int | None = None

    def describe(self) -> str:
        if self.kind == "untracked":
            return "untracked weights"
        return (f"checkpoint sha256:{self.sha256}" if self.kind == "checkpoint"
                else f"random seed {self.seed}")


@dataclass(frozen=True)
class Sampling:
    mode: str = "threshold"
    seed: int = 0
    forced_density: float | None = None


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    pad_multiple: int = DEFAULT_PAD_MULTIPLE
    test_scale: tuple[int, int] | None = None  # (long, short) keep-ratio resize of detectors


@dataclass(frozen=True)
class Manifest:
    arch: str
    with_fpn: bool
    sparse: bool
    weights: Weights
    sampling: Sampling
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing
    example_shape: tuple[int, int, int, int]
    dynamic: tuple[str, ...] = ()
    granularity: str = "ops"
    semantics_version: int = 0
    ssi_opset_version: int = 1
    onnx_opset: int = 18
    ssi_nodes: dict = field(default_factory=dict)
    tool_version: str = ""
    torch_version: str = ""
    extra: dict = field(default_factory=dict)  # caller-supplied entries (demo image, ...)
    schema: int = SCHEMA_VERSION
    detector: dict | None = None  # a detector's test settings (None: a backbone export)

    # -- views ------------------------------------------------------------------------------
    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    def outputs_of_kind(self, kind: str) -> list[TensorSpec]:
        return [o for o in self.outputs if o.kind == kind]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def is_detector(self) -> bool:
        return any(o.kind == "detections" for o in self.outputs)

    @property
    def detection_outputs(self) -> dict[str, str]:
        """role (boxes, scores, labels, count) -> output name."""
        return {o.role: o.name for o in self.outputs if o.kind == "detections"}

    @property
    def masks_exposed(self) -> bool:
        return any(o.kind == "mask" for o in self.outputs)

    def output_kind(self, name: str) -> str | None:
        for o in self.outputs:
            if o.name == name:
                return o.kind
        return None

    def with_outputs(self, outputs) -> "Manifest":
        return replace(self, outputs=tuple(outputs))

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        d["example_shape"] = list(self.example_shape)
        d["dynamic"] = list(self.dynamic)
        d["preprocessing"]["mean"] = list(self.preprocessing.mean)
        d["preprocessing"]["std"] = list(self.preprocessing.std)
        d["weights"] = {k: v for k, v in d["weights"].items() if v is not None}
        if self.preprocessing.test_scale is None:
            del d["preprocessing"]["test_scale"]
        else:
            d["preprocessing"]["test_scale"] = list(self.preprocessing.test_scale)
        if self.detector is None:
            del d["detector"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d, source: str = "manifest") -> "Manifest":
        return _parse(d, source)


# --------------------------------------------------------------------------------------------
# Parsing with one-line errors

def _fail(source: str, field_: str, value, expected: str) -> ManifestError:
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ManifestError(f"{source}: manifest field {field_}={shown} is invalid ({expected}); "
                         "re-export the file with `ssi-deploy export`")


def _get(d: dict, key: str, source: str, prefix: str = ""):
    if not isinstance(d, dict) or key not in d:
        raise ManifestError(f"{source}: manifest field {prefix}{key} is missing; re-export the "
                            "file with `ssi-deploy export`")
    return d[key]


def _int(v, source, name, lo=None, hi=None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or \
            (hi is not None and v > hi):
        rng = f"an integer{'' if lo is None else f' >= {lo}'}{'' if hi is None else f' <= {hi}'}"
        raise _fail(source, name, v, rng)
    return v


def _str(v, source, name, choices=None) -> str:
    if not isinstance(v, str) or (choices is not None and v not in choices):
        raise _fail(source, name, v, "one of " + ", ".join(choices) if choices else "a string")
    return v


def _bool(v, source, name) -> bool:
    if not isinstance(v, bool):
        raise _fail(source, name, v, "true or false")
    return v


def _floats(v, source, name, n, positive=False) -> tuple[float, ...]:
    ok = (isinstance(v, list) and len(v) == n
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                  and (not positive or x > 0) for x in v))
    if not ok:
        raise _fail(source, name, v, f"{n} finite numbers{' > 0' if positive else ''}")
    return tuple(float(x) for x in v)


def _tensor(t, source, name) -> TensorSpec:
    if not isinstance(t, dict):
        raise _fail(source, name, t, "an object with name, kind, dtype, shape")
    tname = _str(_get(t, "name", source, name + "."), source, name + ".name")
    kind = _str(_get(t, "kind", source, name + "."), source, name + ".kind", TENSOR_KINDS)
    dtype = _str(_get(t, "dtype", source, name + "."), source, name + ".dtype", TENSOR_DTYPES)
    shape = _get(t, "shape", source, name + ".")
    if not isinstance(shape, list) or not all(
            (isinstance(s, int) and not isinstance(s, bool) and s > 0) or isinstance(s, str)
            for s in shape):
        raise _fail(source, name + ".shape", shape, "a list of positive ints or axis names")
    layer = t.get("layer")
    if kind == "mask" and not isinstance(layer, str):
        raise _fail(source, name + ".layer", layer, "the sampling layer of a mask output")
    role = t.get("role")
    if kind == "detections" and role not in DETECTION_ROLES:
        raise _fail(source, name + ".role", role, "one of " + ", ".join(DETECTION_ROLES))
    return TensorSpec(tname, kind, dtype, tuple(shape), layer if kind == "mask" else None,
                      role if kind == "detections" else None)


def _parse(d, source: str) -> Manifest:
    if not isinstance(d, dict):
        raise ManifestError(f"{source}: the manifest is not a JSON object; re-export the file "
                            "with `ssi-deploy export`")
    schema = _int(_get(d, "schema", source), source, "schema", 1)
    if schema > SCHEMA_VERSION:
        raise ManifestError(f"{source}: manifest schema {schema} is newer than this ssi-deploy "
                            f"reads ({SCHEMA_VERSION}); upgrade ssi-deploy")
    # registry membership is checked where the model is rebuilt (test models export too)
    arch = _str(_get(d, "arch", source), source, "arch")
    if not arch or len(arch) > 200:
        raise _fail(source, "arch", arch, "an architecture name, see `ssi-deploy zoo`")
    w = _get(d, "weights", source)
    kind = _str(_get(w, "kind", source, "weights."), source, "weights.kind",
                ("checkpoint", "random", "untracked"))
    if kind == "checkpoint":
        sha = _str(_get(w, "sha256", source, "weights."), source, "weights.sha256")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _fail(source, "weights.sha256", sha, "64 lower-case hex digits")
        weights = Weights("checkpoint", sha256=sha)
    elif kind == "untracked":
        weights = Weights("untracked")
    else:
        weights = Weights("random", seed=_int(_get(w, "seed", source, "weights."), source,
                                              "weights.seed", 0, 2**63 - 1))
    s = _get(d, "sampling", source)
    mode = _str(_get(s, "mode", source, "sampling."), source, "sampling.mode", SAMPLING_MODES)
    seed = _int(_get(s, "seed", source, "sampling."), source, "sampling.seed",
                -(2**31), 2**31 - 1)
    fd = s.get("forced_density")
    if fd is not None and (isinstance(fd, bool) or not isinstance(fd, (int, float))
                           or not 0.0 < fd <= 1.0):
        raise _fail(source, "sampling.forced_density", fd, "null or a number in (0, 1]")
    precision = _str(_get(d, "precision", source), source, "precision", PRECISIONS)
    inputs = _get(d, "inputs", source)
    outputs = _get(d, "outputs", source)
    if not isinstance(inputs, list) or len(inputs) not in (1, 2):
        raise _fail(source, "inputs", inputs, "the image input (and a detector's image_info)")
    if not isinstance(outputs, list) or not outputs:
        raise _fail(source, "outputs", outputs, "a non-empty list")
    ins = tuple(_tensor(t, source, f"inputs[{i}]") for i, t in enumerate(inputs))
    outs = tuple(_tensor(t, source, f"outputs[{i}]") for i, t in enumerate(outputs))
    if ins[0].kind != "image":
        raise _fail(source, "inputs[0].kind", ins[0].kind, "image")
    if len(ins) == 2 and ins[1].kind != "image_info":
        raise _fail(source, "inputs[1].kind", ins[1].kind, "image_info")
    roles = [o.role for o in outs if o.kind == "detections"]
    if roles and sorted(roles) != sorted(DETECTION_ROLES):
        raise _fail(source, "outputs", roles, "one detections output per role: "
                    + ", ".join(DETECTION_ROLES))
    if roles and len(ins) != 2:
        raise _fail(source, "inputs", inputs, "a detector's image and image_info inputs")
    names = [o.name for o in outs]
    if len(set(names)) != len(names):
        raise _fail(source, "outputs", names, "distinct names")
    p = _get(d, "preprocessing", source)
    pre = Preprocessing(
        _floats(_get(p, "mean", source, "preprocessing."), source, "preprocessing.mean", 3),
        _floats(_get(p, "std", source, "preprocessing."), source, "preprocessing.std", 3, True),
        _str(p.get("channel_order", "RGB"), source, "preprocessing.channel_order", ("RGB", "BGR")),
        _int(p.get("pad_multiple", DEFAULT_PAD_MULTIPLE), source, "preprocessing.pad_multiple",
             1, 1024),
        _test_scale(p.get("test_scale"), source))
    ex = _get(d, "example_shape", source)
    if not (isinstance(ex, list) and len(ex) == 4 and all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in ex) and ex[1] == 3):
        raise _fail(source, "example_shape", ex, "[N, 3, H, W] with positive sizes")
    dyn = d.get("dynamic", [])
    if not isinstance(dyn, list) or any(a not in DYNAMIC_AXES for a in dyn):
        raise _fail(source, "dynamic", dyn, "a subset of " + ", ".join(DYNAMIC_AXES))
    nodes = d.get("ssi_nodes", {})
    if not isinstance(nodes, dict):
        raise _fail(source, "ssi_nodes", nodes, "an object of node counts")
    extra = d.get("extra", {})
    det = d.get("detector")
    if det is not None and not isinstance(det, dict):
        raise _fail(source, "detector", det, "an object of test settings")
    if roles and det is None:
        raise _fail(source, "detector", det, "the test settings of a detector export")
    return Manifest(
        arch=arch, with_fpn=_bool(_get(d, "with_fpn", source), source, "with_fpn"),
        sparse=_bool(_get(d, "sparse", source), source, "sparse"), weights=weights,
        sampling=Sampling(mode, seed, None if fd is None else float(fd)), precision=precision,
        inputs=ins, outputs=outs, preprocessing=pre, example_shape=tuple(ex),
        dynamic=tuple(dyn),
        granularity=_str(d.get("granularity", "ops"), source, "granularity", GRANULARITIES),
        semantics_version=_int(d.get("semantics_version", 0), source, "semantics_version", 0),
        ssi_opset_version=_int(d.get("ssi_opset_version", 1), source, "ssi_opset_version", 1),
        onnx_opset=_int(d.get("onnx_opset", 18), source, "onnx_opset", 1),
        ssi_nodes=nodes, tool_version=str(d.get("tool_version", "")),
        torch_version=str(d.get("torch_version", "")),
        extra=extra if isinstance(extra, dict) else {}, schema=schema, detector=det)


def _test_scale(v, source) -> tuple[int, int] | None:
    if v is None:
        return None
    if not (isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and 32 <= x <= 16384 for x in v)):
        raise _fail(source, "preprocessing.test_scale", v, "[long, short]: two integers in "
                    "32..16384")
    return (max(v), min(v))


# --------------------------------------------------------------------------------------------
# Where manifests live

def manifest_from_model_proto(model, source: str, required: bool = True) -> Manifest | None:
    """The manifest of a loaded ``onnx.ModelProto`` (None when it has none and not
    ``required``; an invalid one is always an error)."""
    for prop in model.metadata_props:
        if prop.key == ONNX_KEY:
            try:
                data = json.loads(prop.value)
            except ValueError:
                raise ManifestError(f"{source}: its manifest ({ONNX_KEY}) is not valid JSON; "
                                    "re-export the file with `ssi-deploy export`") from None
            return _parse(data, source)
    if not required:
        return None
    old = any(p.key.startswith("ssi.") for p in model.metadata_props)
    raise ManifestError(f"{source} carries no ssi-deploy manifest "
                        f"({'written by an older ssi-deploy' if old else 'not written by ssi-deploy export'}); "
                        "re-export it with `ssi-deploy export`")


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of an exported ONNX file (weights are not loaded)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: no such ONNX file; give the path written by `ssi-deploy export`")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise ManifestError(f"{p}: not a readable ONNX file ({str(e).splitlines()[0][:120]}); "
                            "re-export it with `ssi-deploy export`") from None
    return manifest_from_model_proto(model, str(p))


def write_into_model_proto(model, manifest: Manifest) -> None:
    """Store ``manifest`` in ``model.metadata_props`` (replacing any ``ssi.*`` entry)."""
    keep = [p for p in model.metadata_props if not p.key.startswith("ssi.")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    prop = model.metadata_props.add()
    prop.key, prop.value = ONNX_KEY, manifest.to_json()


def engine_manifest(sidecar: dict | None, source: str) -> Manifest:
    """The manifest an engine's build sidecar carries."""
    if not sidecar or not sidecar.get(SIDECAR_KEY):
        raise ManifestError(f"{source}: the engine's sidecar carries no manifest; rebuild the "
                            "engine with `ssi-deploy build`")
    return _parse(sidecar[SIDECAR_KEY], source)
