"""``plan_profile``: every check of what the user gave, and the decision of what will be
timed, before any model is built, exported or timed.

Profiling a file needs no reference model: the file is timed as it is and its densities come
from the mask outputs its manifest lists. The file's weights (``--checkpoint`` for a file
exported from a checkpoint) are asked for only by what needs them, and the error names it:
``--backend torch`` (times the PyTorch model), ``--density`` (re-exports it), ``--compare-dense``
(the dense twin has the same weights), and the densities of a file without mask outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SSIError
from ..input_shape import format_shape
from .config import ProfileConfig
from .densities import mask_outputs
from .engines import EngineInfo, check_same_precision, check_within, dense_engine, engine_shapes
from .inputs import make_input, static_dims

BACKENDS = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class Source:
    """Where the model comes from: a file (ONNX or engine) with its manifest, or ``--arch``."""
    given: Path | None  # what the user named (ONNX file or engine)
    onnx: Path | None  # the ONNX file (the given one, or the one an engine was built from)
    manifest: object | None  # ssi_deploy.manifest.Manifest; None for --arch
    engine: EngineInfo | None
    backend: str
    arch: str
    with_fpn: bool


@dataclass(frozen=True)
class Subject:
    """What is timed on the sparse side."""
    source: str  # file | engine | re-export | export | pytorch model
    path: Path | None  # the file or engine loaded as it is (None: made at run time)
    dtype: str  # tensor dtype of the file, and of every export made for the profile
    engine_precision: str | None  # tensorrt: the engine's precision (known, or the build's)


@dataclass
class ProfilePlan:
    cfg: ProfileConfig
    src: Source
    sparse: bool
    dense_arch: str | None
    subject: Subject
    input_name: str
    x: np.ndarray  # the timed input
    input_info: dict
    density_from: str  # outputs (the backend's mask outputs) | reference | none (dense model)
    masks: tuple  # the mask outputs (TensorSpec) measured when density_from == "outputs"
    weight_uses: list[str]  # what needs the file's weights (a reference model is built)
    reference_ok: bool  # the PyTorch model can be rebuilt (weights at hand)
    dense: str | None  # None | twin | engine
    dense_engine: EngineInfo | None
    report_path: Path | None
    notes: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.src.backend

    @property
    def arch(self) -> str:
        return self.src.arch

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(d) for d in self.x.shape)  # type: ignore[return-value]

    @property
    def needs_reference(self) -> bool:
        return self.src.manifest is None or bool(self.weight_uses)


def plan_profile(cfg: ProfileConfig) -> ProfilePlan:
    """Check everything ``cfg`` names and decide what will be timed; one-line SSIErrors."""
    from ..cost_model import num_sampling_layers
    from ..models.registry import get_arch
    from ..outputs import check_output_path

    check_options(cfg)
    report = check_output_path(cfg.report, "--report") if cfg.report is not None else None
    src = resolve_source(cfg)
    spec = get_arch(src.arch)
    check_backend_options(cfg, src.backend, src.arch, spec.sparse)
    dense_eng = (dense_engine(cfg.dense_engine, src.backend, src.arch, spec.dense_name)
                 if cfg.dense_engine is not None else None)
    subject = choose_subject(cfg, src)
    if dense_eng is not None:
        check_same_precision(dense_eng, subject.engine_precision,
                             str(subject.path) if subject.source == "engine"
                             else f"built from {src.given}")
    name, x, info = plan_input(cfg, src)
    masks = mask_outputs(src.manifest, num_sampling_layers(src.arch)) if spec.sparse else ()
    density_from = ("none" if not spec.sparse else "outputs"
                    if masks and subject.source in ("file", "engine") else "reference")
    dense = "engine" if dense_eng is not None else "twin" if cfg.compare_dense else None
    uses = weight_uses(subject, density_from, dense) if src.manifest is not None else []
    reference_ok = check_weights(cfg, src, uses)
    plan = ProfilePlan(cfg, src, spec.sparse, spec.dense_name if spec.sparse else None, subject,
                       name, x, info, density_from, masks, uses, reference_ok, dense, dense_eng,
                       report)
    plan.notes = plan_notes(plan)
    return plan


def check_options(cfg: ProfileConfig) -> None:
    if cfg.onnx is None and cfg.arch is None:
        raise SSIError("give an ONNX file or --arch")
    if cfg.onnx is not None and cfg.arch is not None:
        raise SSIError("give either an ONNX file or --arch, not both")
    if cfg.backend is not None and cfg.backend not in BACKENDS:
        raise SSIError(f"unknown backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    if cfg.iterations is not None and cfg.duration_s is not None:
        raise SSIError("give --iterations or --duration-s, not both")
    if cfg.iterations is not None and cfg.iterations < 1:
        raise SSIError(f"--iterations must be >= 1, got {cfg.iterations}")
    if cfg.duration_s is not None and not cfg.duration_s > 0:
        raise SSIError(f"--duration-s must be > 0, got {cfg.duration_s}")
    if cfg.density is not None and not 0.0 < cfg.density <= 1.0:
        raise SSIError(f"--density must be in (0, 1], got {cfg.density}")
    if not cfg.warmup_ms >= 0:
        raise SSIError("--warmup-ms must be >= 0")
    if cfg.threads is not None and cfg.threads < 1:
        raise SSIError(f"--threads must be >= 1, got {cfg.threads}")
    if cfg.compare_dense and cfg.dense_engine is not None:
        raise SSIError("give --compare-dense (the dense twin) or --dense-engine, not both")


def resolve_source(cfg: ProfileConfig) -> Source:
    """The file (and its manifest) or the registry arch; engines through their sidecar."""
    from ..backends.tensorrt_backend import is_engine_path
    from ..manifest import read_manifest
    from ..models.registry import get_arch
    from .engines import given_engine

    if cfg.onnx is None:
        arch = get_arch(cfg.arch).name
        return Source(None, None, None, None, cfg.backend or "torch", arch, bool(cfg.with_fpn))
    given = Path(cfg.onnx)
    if is_engine_path(given):
        if cfg.density is not None:
            raise SSIError("--density cannot change a built engine (its plugins compute the "
                           "masks): give the ONNX file, or --arch, with --backend tensorrt")
        eng, onnx, m = given_engine(given, cfg.backend)
        return Source(given, onnx, m, eng, "tensorrt", m.arch, m.with_fpn)
    if not given.is_file():
        raise SSIError(f"ONNX file not found: {given}")
    m = read_manifest(given)
    return Source(given, given, m, None, cfg.backend or "torch", m.arch, m.with_fpn)


def check_backend_options(cfg: ProfileConfig, backend: str, arch: str, sparse: bool) -> None:
    if cfg.per_layer and backend != "tensorrt":
        raise SSIError(f"--per-layer needs the tensorrt backend (TensorRT's IProfiler), not "
                       f"{backend}")
    if (cfg.compare_dense or cfg.dense_engine is not None) and not sparse:
        raise SSIError(f"--{'compare-dense' if cfg.compare_dense else 'dense-engine'}: "
                       f"{arch} is already dense")
    if cfg.density is not None and not sparse:
        raise SSIError(f"--density: {arch} is dense (it has no sampling layers)")


def choose_subject(cfg: ProfileConfig, src: Source) -> Subject:
    dtype = src.manifest.precision if src.manifest is not None else "fp32"
    built = dtype if src.backend == "tensorrt" else None  # engine_for_onnx builds in the dtype
    if src.backend == "torch":
        return Subject("pytorch model", None, dtype, None)
    if src.engine is not None:
        return Subject("engine", src.engine.plan, dtype, src.engine.precision)
    if src.manifest is None:
        return Subject("export", None, dtype, built)
    if cfg.density is not None:
        return Subject("re-export", None, dtype, built)
    return Subject("file", src.onnx, dtype, built)


def plan_input(cfg: ProfileConfig, src: Source) -> tuple[str, np.ndarray, dict]:
    """(input name, array, description); the shape passes the size checks and fits the
    file's static shape or the engine's profile (and the FPN's multiple of 32)."""
    from ..manifest import Preprocessing
    from ..models.network import NORMALIZATION, check_fpn_input

    m = src.manifest
    name = m.input.name if m is not None else "image"
    pre = m.preprocessing if m is not None else Preprocessing(
        tuple(NORMALIZATION["mean"]), tuple(NORMALIZATION["std"]))
    static = static_dims(m.input.shape) if m is not None else None
    default = bounds = None
    where = "ONNX"
    if src.engine is not None:
        e_static, default, bounds = engine_shapes(src.engine.sidecar, name)
        if bounds is not None:
            static, where = e_static, "engine's"
    x, info = make_input(cfg, name, static, default, pre, where)
    if src.engine is not None:
        check_within(x.shape, bounds, src.engine.plan)
    if src.with_fpn:
        check_fpn_input(x.shape[2], x.shape[3])
    return name, x, info


def weight_uses(subject: Subject, density_from: str, dense: str | None) -> list[str]:
    """What of the profile needs the file's weights (each names its option)."""
    uses = []
    if subject.source == "pytorch model":
        uses.append("--backend torch (it times the PyTorch model rebuilt with the file's "
                    "weights; --backend onnxruntime times the file itself)")
    if subject.source == "re-export":
        uses.append("--density (the model is re-exported with forced masks)")
    if dense == "twin":
        uses.append("--compare-dense (the dense twin has the same weights)")
    if density_from == "reference":
        uses.append("measuring its densities (the file has no mask outputs)")
    return uses


def check_weights(cfg: ProfileConfig, src: Source, uses: list[str]) -> bool:
    """Whether the PyTorch model can be rebuilt; an error when something needs it and the
    weights are missing or another file (sha256 of --checkpoint against the manifest)."""
    from ..backends.torch_backend import check_weights_match

    if src.manifest is None:  # --arch: the checkpoint, if any, is loaded at run time
        if cfg.checkpoint is not None and not Path(cfg.checkpoint).is_file():
            raise SSIError(f"checkpoint not found: {cfg.checkpoint}")
        return True
    w = src.manifest.weights
    if cfg.checkpoint is not None or w.kind == "random":
        check_weights_match(src.manifest, cfg.checkpoint, src.onnx)
        return True
    if uses:
        what = src.onnx if src.engine is None else f"engine {src.given} (built from {src.onnx})"
        raise SSIError(f"{what} was exported from checkpoint sha256:{w.sha256[:12]}...; "
                       f"{' and '.join(uses)} need{'s' if len(uses) == 1 else ''} those weights: "
                       "pass --checkpoint PATH")
    return False


def plan_notes(plan: ProfilePlan) -> list[str]:
    notes = []
    if plan.subject.source == "re-export":
        notes.append(
            f"timed a static {plan.subject.dtype} re-export of {plan.src.given.name} at "
            f"{format_shape(plan.shape)} with every sampling layer forced to density "
            f"{plan.cfg.density:g}, not the file as given (which computes its own masks)")
    if plan.backend == "onnxruntime" and plan.sparse:
        notes.append(
            "onnxruntime runs the SSI nodes' ONNX function bodies, which compute densely "
            "and then mask (a portable reference): no sparse speed-up is expected on this "
            "backend; the torch backend (sparse CPU ops) and TensorRT (SSI plugins) skip work")
    return notes
