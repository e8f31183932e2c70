"""The SSI op contract: names, inputs, attributes and constants of the four SSI ops.

Three building blocks (SampleMask, SparseConv2d, GaussianInterp: the portable, fine-grained
form) and the block they compose, SSIBottleneck (one node per SSI bottleneck, compact rows
inside).

This module is the single definition every layer reads: the PyTorch custom ops, the ONNX
exporter (schemas, node attributes, function bodies), the TensorRT plugins (through the C++
header generated from it, ``plugins/include/ssi/contract.h``) and the tests. Change an op
here, bump ``SEMANTICS_VERSION`` when results change, and regenerate the header with
``python -m ssi_deploy.ops.contract --write-header``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "ssi"  # ONNX domain of the custom nodes
OPSET_VERSION = 1  # ONNX opset version of that domain
PLUGIN_NAMESPACE = "ssi"  # TensorRT plugin namespace
PLUGIN_VERSION = "1"  # TensorRT plugin version
SEMANTICS_VERSION = 3  # bumped whenever an op computes something different (3: SSIBottleneck)
# String attributes every SSI node carries for TensorRT's ONNX parser (plugin lookup only).
PLUGIN_VERSION_ATTR = "plugin_version"
PLUGIN_NAMESPACE_ATTR = "plugin_namespace"
TORCH_NAMESPACE = "ssi"  # torch.ops.ssi.*

# Sampling modes of SampleMask (integer attribute ``mode``).
MODE_THRESHOLD = 0
MODE_STOCHASTIC = 1
MODE_OFFICIAL = 2
SAMPLING_MODES = {"threshold": MODE_THRESHOLD, "stochastic": MODE_STOCHASTIC, "official": MODE_OFFICIAL}

GRID_PRIOR_INTERVAL = 11  # official grid prior: positions [::11, ::11] forced to 1.0
OFFICIAL_TEMPERATURE = 0.03  # Gumbel temperature of the official evaluation
INTERP_WINDOW = 7  # Gaussian interpolation window (7x7)
INTERP_EPS = 1e-5  # added to the normaliser; part of the semantics, keep exactly
SIGMA_INIT = 3.0  # initial value of the learned inverse standard deviation

# Value limits of the attribute kinds: ints travel as TensorRT kINT32 fields, floats as
# float32 (ONNX FLOAT attributes, kFLOAT32 fields), and every float must be finite.
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(float32).max, exact in float64


def _format_value(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Attribute:
    """One attribute of an op and its valid values.

    ``min`` / ``max`` are inclusive bounds (``min`` strictly exclusive when ``min_exclusive``);
    None leaves that side bounded only by the kind (int32 for ints, finite float32 for floats).
    ``choices`` lists the allowed values with their meanings (enums and flags); ``min``/``max``
    are then implied. The exporter, the load-time check (ssi_deploy.export.node_check) and the
    TensorRT plugins (generated ``kMin*``/``kMax*``/``kRange*`` constants) read these.
    """

    name: str
    type: str  # "int" or "float": the only kinds TensorRT fields and the exporter use
    default: int | float
    doc: str
    min: int | float | None = None
    max: int | float | None = None
    min_exclusive: bool = False
    choices: tuple[tuple[int, str], ...] = ()

    @property
    def lower(self) -> int | float:
        """The effective smallest bound (see ``min_exclusive``), kind limits included."""
        if self.choices:
            return min(v for v, _ in self.choices)
        if self.min is not None:
            return self.min
        return INT32_MIN if self.type == "int" else -FLOAT32_MAX

    @property
    def upper(self) -> int | float:
        """The effective largest valid value (inclusive), kind limits included."""
        if self.choices:
            return max(v for v, _ in self.choices)
        if self.max is not None:
            return self.max
        return INT32_MAX if self.type == "int" else FLOAT32_MAX

    def range_text(self) -> str:
        """The valid values in words: 'one of 0 (off), 1 (on)', 'an int32 >= 1', ..."""
        if self.choices:
            return "one of " + ", ".join(f"{v} ({label})" for v, label in self.choices)
        kind = "an int32" if self.type == "int" else "a finite float32"
        lo_kind, hi_kind = (INT32_MIN, INT32_MAX) if self.type == "int" else (-FLOAT32_MAX, FLOAT32_MAX)
        parts = []
        if self.min is not None and (self.min != lo_kind or self.min_exclusive):
            parts.append(f"{'>' if self.min_exclusive else '>='} {_format_value(self.min)}")
        if self.max is not None and self.max != hi_kind:
            parts.append(f"<= {_format_value(self.max)}")
        if not parts:
            return (f"any int32 ({INT32_MIN} to {INT32_MAX})" if self.type == "int"
                    else "any finite float32")
        return f"{kind} {' and '.join(parts)}"

    def value_error(self, value) -> str | None:
        """None when ``value`` is valid for this attribute, else why not (kind or range)."""
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an int, got {type(value).__name__}"
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a float, got {type(value).__name__}"
        v = value if self.type == "int" else float(value)
        if self.choices:
            ok = v in {c for c, _ in self.choices}
        else:
            lo, hi = self.lower, self.upper
            ok = (v == v and abs(v) != float("inf")  # not nan, not inf
                  and (v > lo if (self.min_exclusive and self.min is not None) else v >= lo)
                  and v <= hi)
        return None if ok else f"is out of range: expected {self.range_text()}"


@dataclass(frozen=True)
class Input:
    name: str
    doc: str
    optional: bool = False  # optional inputs are trailing: a node simply has fewer inputs
    weight: bool = False  # a constant (initializer): TensorRT passes it to the plugin as weights


@dataclass(frozen=True)
class OpDef:
    name: str  # ONNX op_type == TensorRT plugin name == torch op name
    inputs: tuple[Input, ...]
    outputs: tuple[str, ...]
    attributes: tuple[Attribute, ...]
    doc: str
    has_plugin: bool = True  # this checkout's TensorRT plugin library implements it

    @property
    def torch_name(self) -> str:
        return {"SampleMask": "sample_mask", "SparseConv2d": "sparse_conv2d",
                "GaussianInterp": "gaussian_interp", "SSIBottleneck": "ssi_bottleneck"}[self.name]

    @property
    def weight_inputs(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs if i.weight)

    @property
    def min_inputs(self) -> int:
        return sum(not i.optional for i in self.inputs)

    def attribute(self, name: str) -> Attribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(f"{self.name} has no attribute {name!r}")

    def defaults(self) -> dict[str, int | float]:
        return {a.name: a.default for a in self.attributes}

    def check_attributes(self, attrs: dict) -> dict[str, int | float]:
        """Complete ``attrs`` with defaults and reject unknown names or wrong kinds."""
        unknown = sorted(set(attrs) - {a.name for a in self.attributes})
        if unknown:
            raise ValueError(f"{self.name}: unknown attribute(s) {unknown}; "
                             f"known: {[a.name for a in self.attributes]}")
        out = self.defaults()
        for k, v in attrs.items():
            kind = self.attribute(k).type
            out[k] = int(v) if kind == "int" else float(v)
        return out

    def check_values(self, attrs: dict) -> list[str]:
        """One message per attribute of ``attrs`` that is unknown, of the wrong kind or out of
        range (attributes not given take their defaults, which are valid); [] when all are
        valid. E.g. "SampleMask attribute mode=9 is out of range: expected one of 0
        (threshold), 1 (stochastic), 2 (official)"."""
        known = {a.name: a for a in self.attributes}
        problems = []
        for name, value in attrs.items():
            a = known.get(name)
            if a is None:
                problems.append(f"{self.name} has no attribute {name!r} "
                                f"(known: {', '.join(known)})")
                continue
            why = a.value_error(value)
            if why is not None:
                problems.append(f"{self.name} attribute {name}={_format_value(value)} {why}")
        return problems


SAMPLE_MASK = OpDef(
    name="SampleMask",
    inputs=(Input("logits", "sampling logits [N,1,H,W] (output of the mask conv)"),),
    outputs=("mask",),
    attributes=(
        Attribute("mode", "int", MODE_THRESHOLD,
                  "0 threshold (logit >= 0), 1 stochastic (Bernoulli(sigmoid) from the hash), "
                  "2 official (soft Gumbel value at T=0.03, kept where >= 0.5)",
                  choices=tuple((v, k) for k, v in sorted(SAMPLING_MODES.items(),
                                                          key=lambda kv: kv[1]))),
        Attribute("grid_interval", "int", GRID_PRIOR_INTERVAL,
                  "positions with y % g == 0 and x % g == 0 are forced to 1.0; 0 disables",
                  min=0),
        # any int32: the hash takes it as uint32 (two's complement, as math.h and sampling.py)
        Attribute("seed", "int", 0, "seed of the counter-based hash (modes 1, 2)",
                  min=INT32_MIN, max=INT32_MAX),
        Attribute("layer", "int", 0, "index of the sampling layer in the network, hashed with the seed",
                  min=0),
    ),
    doc=("sampling mask[N,1,H,W] in [0,1] from logits[N,1,H,W] (mode 0 threshold, 1 stochastic, "
         "2 official; grid prior every grid_interval positions)"),
)

SPARSE_CONV2D = OpDef(
    name="SparseConv2d",
    inputs=(
        Input("x", "dense input [N,Cin,H,W]"),
        Input("weight", "[Cout, Cin/groups, kH, kW] (BatchNorm folded in)", weight=True),
        Input("bias", "[Cout] (zeros when the conv has none)", weight=True),
        Input("mask", "[N,1,Ho,Wo]: output positions with mask > 0 are computed"),
        Input("offset", "[N,2*kH*kW,Ho,Wo] deformable v1 offsets (dy, dx per tap)", optional=True),
    ),
    outputs=("y",),
    attributes=(
        Attribute("stride_h", "int", 1, "vertical stride", min=1),
        Attribute("stride_w", "int", 1, "horizontal stride", min=1),
        Attribute("pad_h", "int", 0, "zero padding, top and bottom", min=0),
        Attribute("pad_w", "int", 0, "zero padding, left and right", min=0),
        Attribute("dilation_h", "int", 1, "vertical dilation", min=1),
        Attribute("dilation_w", "int", 1, "horizontal dilation", min=1),
        # that groups divides Cin and Cout is a shape check (the plugin's, the function body's)
        Attribute("groups", "int", 1, "channel groups", min=1),
        Attribute("relu", "int", 0, "1: ReLU fused after the bias", choices=((0, "off"), (1, "ReLU"))),
    ),
    doc=("y[N,Cout,Ho,Wo] = act(conv2d(x, weight) + bias) computed only where mask[N,1,Ho,Wo] > 0, "
         "exactly 0 elsewhere; a fifth input holds deformable-v1 offsets[N,2*kH*kW,Ho,Wo]"),
)

GAUSSIAN_INTERP = OpDef(
    name="GaussianInterp",
    inputs=(
        Input("values", "[N,C,H,W]; only read where mask > 0"),
        Input("mask", "[N,1,H,W] in [0,1]"),
        Input("bias", "[C], added everywhere after the interpolation (zeros for none)", weight=True),
        Input("residual", "[N,C,H,W] added after the bias (fused residual add)", optional=True),
    ),
    outputs=("dense",),
    attributes=(
        Attribute("sigma", "float", SIGMA_INIT, "inverse standard deviation s of the Gaussian",
                  min=0.0, min_exclusive=True),
        Attribute("relu", "int", 0, "1: ReLU applied last", choices=((0, "off"), (1, "ReLU"))),
    ),
    doc=("dense = act(m*f + (1-m)*N/D + bias [+ residual]); 7x7 window, "
         "W(d) = s^2/(2 pi) exp(-s^2 |d|^2 / 2), D = sum W m + 1e-5, float32 arithmetic"),
)


def _w(name: str, doc: str) -> Input:
    return Input(name, doc, weight=True)


SSI_BOTTLENECK = OpDef(
    name="SSIBottleneck",
    # Every input is present (a node has all 15): a part the block lacks (DCN offset conv,
    # downsample) is an empty tensor [0], so onnx.reference and TensorRT's parser see one
    # signature. Weights are folded with their BatchNorm (conv3: BN3's scale only, its bias in
    # conv3_bias is added after the final interpolation, the spec's sparse order).
    inputs=(
        Input("x", "block input [N,Cin,H,W]"),
        _w("mask1_weight", "conv1_mask [1,Cin,3,3] (stride 1, pad 1): logits of m1 at HxW"),
        _w("mask1_bias", "[1]"),
        _w("mask2_weight", "conv2_mask [1,Cin,3,3] (stride s, pad 1): logits of m2 at HoxWo"),
        _w("mask2_bias", "[1]"),
        _w("conv1_weight", "[p,Cin,1,1], BN1 folded"),
        _w("conv1_bias", "[p]"),
        _w("offset_weight", "DCN offset conv [18,Cin,3,3] (stride s, pad 1) on x; [0] without DCN"),
        _w("offset_bias", "[18]; [0] without DCN"),
        _w("conv2_weight", "[p,p,3,3] (stride s, pad 1; deformable v1 with dcn=1), BN2 folded"),
        _w("conv2_bias", "[p]"),
        _w("conv3_weight", "[4p,p,1,1] scaled by BN3 (no bias)"),
        _w("conv3_bias", "[4p]: BN3's bias, added after the final interpolation"),
        _w("downsample_weight", "shortcut conv [4p,Cin,1,1] (stride s), BN folded; [0] for identity"),
        _w("downsample_bias", "[4p]; [0] for identity"),
    ),
    outputs=("y", "mask1", "mask2"),
    attributes=(
        Attribute("stride", "int", 1, "stride s of conv2, conv2_mask, the offset conv and the "
                  "downsample", min=1),
        Attribute("dcn", "int", 0, "1: conv2 is deformable v1 with offsets from offset_weight",
                  choices=((0, "regular"), (1, "deformable"))),
        Attribute("downsample", "int", 0, "1: the shortcut is the downsample conv, 0: identity",
                  choices=((0, "identity"), (1, "conv"))),
        Attribute("sigma1", "float", SIGMA_INIT, "s of the interpolation of conv1's rows (m1)",
                  min=0.0, min_exclusive=True),
        Attribute("sigma2", "float", SIGMA_INIT, "s of the final interpolation (m2)",
                  min=0.0, min_exclusive=True),
        Attribute("mode", "int", MODE_THRESHOLD, "sampling mode of both masks, as SampleMask's",
                  choices=tuple((v, k) for k, v in sorted(SAMPLING_MODES.items(),
                                                          key=lambda kv: kv[1]))),
        Attribute("grid_interval", "int", GRID_PRIOR_INTERVAL,
                  "grid prior of both masks, as SampleMask's; 0 disables", min=0),
        Attribute("seed", "int", 0, "seed of the counter-based hash (modes 1, 2)",
                  min=INT32_MIN, max=INT32_MAX),
        Attribute("layer1", "int", 0, "sampling-layer index of m1 (2 * block index)", min=0),
        Attribute("layer2", "int", 1, "sampling-layer index of m2 (2 * block index + 1)", min=0),
        Attribute("density", "float", 0.0,
                  "0: sample by mode; > 0: forced density, each mask keeps the k = "
                  "forced_count(density, H*W) largest logits per image (threshold on the "
                  "shifted logits, mode ignored), grid prior added", min=0.0, max=1.0),
    ),
    doc=("one SSI bottleneck: masks m1 (HxW), m2 (HoxWo) from 3x3 mask convs of x; conv1 at m1, "
         "interp(sigma1), conv2 (3x3 stride s, DCN optional) and conv3 at m2, "
         "y = relu(interp(conv3 rows, m2, sigma2) + conv3_bias + shortcut(x)); outputs y, m1, m2"),
    has_plugin=True,  # plugins/src/tensorrt/ssiBottleneckPlugin (kernels: ssi_bottleneck.cu)
)

OPS: dict[str, OpDef] = {op.name: op for op in (SAMPLE_MASK, SPARSE_CONV2D, GAUSSIAN_INTERP,
                                                SSI_BOTTLENECK)}
PLUGIN_OPS: dict[str, OpDef] = {k: op for k, op in OPS.items() if op.has_plugin}
BUILDING_BLOCKS = (SAMPLE_MASK.name, SPARSE_CONV2D.name, GAUSSIAN_INTERP.name)


def forced_count(density: float, numel: int) -> int:
    """How many positions a forced density keeps per image: round-half-even of
    float32(density) * numel in float64, clamped to 1..numel (the function body computes the
    same: Cast to double, Mul, Round, Clip)."""
    import numpy as np

    d = float(np.float32(density))
    return max(1, min(int(numel), int(round(d * float(numel)))))

HEADER_PATH = Path(__file__).resolve().parents[2] / "plugins" / "include" / "ssi" / "contract.h"


def torch_schema(op: OpDef) -> str:
    """The torch.library schema of ``op``: inputs as tensors, attributes as keyword scalars."""
    args = [f"Tensor{'?' if i.optional else ''} {i.name}{'=None' if i.optional else ''}"
            for i in op.inputs]
    args += [f"{a.type} {a.name}={a.default!r}" for a in op.attributes]
    out = "Tensor" if len(op.outputs) == 1 else f"({', '.join('Tensor' for _ in op.outputs)})"
    return f"({', '.join(args)}) -> {out}"


def _cpp_number(a: Attribute, v: int | float) -> str:
    if a.type == "float":
        return f"{float(v)!r}f"
    return "(-2147483647 - 1)" if v == INT32_MIN else str(int(v))  # no unary minus on 2^31


def _cpp_range_lines(a: Attribute) -> list[str]:
    """kMin<Name>, kMax<Name>, kMin<Name>Exclusive and kRange<Name> of one attribute."""
    if a.choices:
        values = sorted(v for v, _ in a.choices)
        if values != list(range(values[0], values[-1] + 1)):
            raise ValueError(f"{a.name}: choices {values} are not contiguous; the C++ range "
                             "check (min/max) cannot express them")
    suffix = "".join(p.capitalize() for p in a.name.split("_"))
    typ = "float" if a.type == "float" else "int"
    excl = "true" if a.min_exclusive and not a.choices else "false"
    return [
        f"constexpr {typ} kMin{suffix} = {_cpp_number(a, a.lower)};",
        f"constexpr {typ} kMax{suffix} = {_cpp_number(a, a.upper)};",
        f"constexpr bool kMin{suffix}Exclusive = {excl};",
        f"constexpr char const* kRange{suffix} = {json.dumps(a.range_text())};",
    ]


def render_cpp_header() -> str:
    """The C++ view of this contract, for the plugins (generated, never edited by hand)."""
    lines = [
        "// Generated by `python -m ssi_deploy.ops.contract --write-header`; do not edit.",
        "// Source of truth: ssi_deploy/ops/contract.py.",
        "#pragma once",
        "",
        "namespace ssi {",
        "namespace contract {",
        "",
        f'constexpr char const* kDomain = "{DOMAIN}";',
        f"constexpr int kOpsetVersion = {OPSET_VERSION};",
        f'constexpr char const* kPluginNamespace = "{PLUGIN_NAMESPACE}";',
        f'constexpr char const* kPluginVersion = "{PLUGIN_VERSION}";',
        f"constexpr int kSemanticsVersion = {SEMANTICS_VERSION};",
        f"constexpr int kModeThreshold = {MODE_THRESHOLD};",
        f"constexpr int kModeStochastic = {MODE_STOCHASTIC};",
        f"constexpr int kModeOfficial = {MODE_OFFICIAL};",
        f"constexpr int kGridPriorInterval = {GRID_PRIOR_INTERVAL};",
        f"constexpr float kOfficialTemperature = {OFFICIAL_TEMPERATURE!r}f;",
        f"constexpr int kInterpWindow = {INTERP_WINDOW};",
        f"constexpr float kInterpEps = {INTERP_EPS!r}f;",
        "",
    ]
    for op in OPS.values():
        ns = op.name
        lines.append(f"namespace {ns} {{")
        lines.append(f'constexpr char const* kName = "{op.name}";')
        lines.append(f"constexpr char const* kDoc = {json.dumps(op.doc)};")
        lines.append(f"constexpr int kMinInputs = {op.min_inputs};")
        lines.append(f"constexpr int kMaxInputs = {len(op.inputs)};")
        lines.append(f"constexpr int kNumOutputs = {len(op.outputs)};")
        lines.append(f"constexpr bool kHasPlugin = {'true' if op.has_plugin else 'false'};")
        for i, inp in enumerate(op.inputs):
            ident = "".join(part.capitalize() for part in inp.name.split("_"))
            lines.append(f"constexpr int kInput{ident} = {i};  // {inp.doc}")
        lines.append(f"constexpr int kNumAttributes = {len(op.attributes)};")
        for a in op.attributes:
            ident = "kAttr" + "".join(p.capitalize() for p in a.name.split("_"))
            lines.append(f'constexpr char const* {ident} = "{a.name}";  // {a.type}: {a.doc}')
        for a in op.attributes:
            ident = "kDefault" + "".join(p.capitalize() for p in a.name.split("_"))
            typ, val = ("float", f"{a.default!r}f") if a.type == "float" else ("int", str(a.default))
            lines.append(f"constexpr {typ} {ident} = {val};")
        lines.append("// Valid values: kMin* <= v <= kMax* (kMin* < v when kMin*Exclusive), finite;")
        lines.append("// kRange* says so in words (the same text as the Python checks).")
        for a in op.attributes:
            lines.extend(_cpp_range_lines(a))
        lines.append(f"}}  // namespace {ns}")
        lines.append("")
    lines += ["}  // namespace contract", "}  // namespace ssi", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write-header", action="store_true", help=f"write {HEADER_PATH}")
    p.add_argument("--check-header", action="store_true", help="exit 1 if the header is stale")
    args = p.parse_args(argv)
    text = render_cpp_header()
    if args.write_header:
        HEADER_PATH.parent.mkdir(parents=True, exist_ok=True)
        HEADER_PATH.write_text(text)
        print(f"wrote {HEADER_PATH}")
    elif args.check_header:
        if not HEADER_PATH.exists() or HEADER_PATH.read_text() != text:
            print(f"{HEADER_PATH} is stale: run python -m ssi_deploy.ops.contract --write-header")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
