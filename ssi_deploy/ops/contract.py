"""The SSI op contract: names, inputs, attributes and constants of the three SSI ops.

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
SEMANTICS_VERSION = 1  # bumped whenever an op computes something different
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


@dataclass(frozen=True)
class Attribute:
    name: str
    type: str  # "int" or "float": the only kinds TensorRT fields and the exporter use
    default: int | float
    doc: str


@dataclass(frozen=True)
class Input:
    name: str
    doc: str
    optional: bool = False  # optional inputs are trailing: a node simply has fewer inputs


@dataclass(frozen=True)
class OpDef:
    name: str  # ONNX op_type == TensorRT plugin name == torch op name
    inputs: tuple[Input, ...]
    outputs: tuple[str, ...]
    attributes: tuple[Attribute, ...]
    doc: str

    @property
    def torch_name(self) -> str:
        return {"SampleMask": "sample_mask", "SparseConv2d": "sparse_conv2d",
                "GaussianInterp": "gaussian_interp"}[self.name]

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


SAMPLE_MASK = OpDef(
    name="SampleMask",
    inputs=(Input("logits", "sampling logits [N,1,H,W] (output of the mask conv)"),),
    outputs=("mask",),
    attributes=(
        Attribute("mode", "int", MODE_THRESHOLD,
                  "0 threshold (logit >= 0), 1 stochastic (Bernoulli(sigmoid) from the hash), "
                  "2 official (soft Gumbel value at T=0.03, kept where >= 0.5)"),
        Attribute("grid_interval", "int", GRID_PRIOR_INTERVAL,
                  "positions with y % g == 0 and x % g == 0 are forced to 1.0; 0 disables"),
        Attribute("seed", "int", 0, "seed of the counter-based hash (modes 1, 2)"),
        Attribute("layer", "int", 0, "index of the sampling layer in the network, hashed with the seed"),
    ),
    doc=("sampling mask[N,1,H,W] in [0,1] from logits[N,1,H,W] (mode 0 threshold, 1 stochastic, "
         "2 official; grid prior every grid_interval positions)"),
)

SPARSE_CONV2D = OpDef(
    name="SparseConv2d",
    inputs=(
        Input("x", "dense input [N,Cin,H,W]"),
        Input("weight", "[Cout, Cin/groups, kH, kW] (BatchNorm folded in)"),
        Input("bias", "[Cout] (zeros when the conv has none)"),
        Input("mask", "[N,1,Ho,Wo]: output positions with mask > 0 are computed"),
        Input("offset", "[N,2*kH*kW,Ho,Wo] deformable v1 offsets (dy, dx per tap)", optional=True),
    ),
    outputs=("y",),
    attributes=(
        Attribute("stride_h", "int", 1, "vertical stride"),
        Attribute("stride_w", "int", 1, "horizontal stride"),
        Attribute("pad_h", "int", 0, "zero padding, top and bottom"),
        Attribute("pad_w", "int", 0, "zero padding, left and right"),
        Attribute("dilation_h", "int", 1, "vertical dilation"),
        Attribute("dilation_w", "int", 1, "horizontal dilation"),
        Attribute("groups", "int", 1, "channel groups"),
        Attribute("relu", "int", 0, "1: ReLU fused after the bias"),
    ),
    doc=("y[N,Cout,Ho,Wo] = act(conv2d(x, weight) + bias) computed only where mask[N,1,Ho,Wo] > 0, "
         "exactly 0 elsewhere; a fifth input holds deformable-v1 offsets[N,2*kH*kW,Ho,Wo]"),
)

GAUSSIAN_INTERP = OpDef(
    name="GaussianInterp",
    inputs=(
        Input("values", "[N,C,H,W]; only read where mask > 0"),
        Input("mask", "[N,1,H,W] in [0,1]"),
        Input("bias", "[C], added everywhere after the interpolation (zeros for none)"),
        Input("residual", "[N,C,H,W] added after the bias (fused residual add)", optional=True),
    ),
    outputs=("dense",),
    attributes=(
        Attribute("sigma", "float", SIGMA_INIT, "inverse standard deviation s of the Gaussian"),
        Attribute("relu", "int", 0, "1: ReLU applied last"),
    ),
    doc=("dense = act(m*f + (1-m)*N/D + bias [+ residual]); 7x7 window, "
         "W(d) = s^2/(2 pi) exp(-s^2 |d|^2 / 2), D = sum W m + 1e-5, float32 arithmetic"),
)

OPS: dict[str, OpDef] = {op.name: op for op in (SAMPLE_MASK, SPARSE_CONV2D, GAUSSIAN_INTERP)}

HEADER_PATH = Path(__file__).resolve().parents[2] / "plugins" / "include" / "ssi" / "contract.h"


def torch_schema(op: OpDef) -> str:
    """The torch.library schema of ``op``: inputs as tensors, attributes as keyword scalars."""
    args = [f"Tensor{'?' if i.optional else ''} {i.name}{'=None' if i.optional else ''}"
            for i in op.inputs]
    args += [f"{a.type} {a.name}={a.default!r}" for a in op.attributes]
    return f"({', '.join(args)}) -> Tensor"


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
        for i, inp in enumerate(op.inputs):
            lines.append(f"constexpr int kInput{inp.name.capitalize()} = {i};  // {inp.doc}")
        lines.append(f"constexpr int kNumAttributes = {len(op.attributes)};")
        for a in op.attributes:
            ident = "kAttr" + "".join(p.capitalize() for p in a.name.split("_"))
            lines.append(f'constexpr char const* {ident} = "{a.name}";  // {a.type}: {a.doc}')
        for a in op.attributes:
            ident = "kDefault" + "".join(p.capitalize() for p in a.name.split("_"))
            typ, val = ("float", f"{a.default!r}f") if a.type == "float" else ("int", str(a.default))
            lines.append(f"constexpr {typ} {ident} = {val};")
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
