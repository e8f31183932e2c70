"""PyTorch backend: the reference model, and the sparse CPU path (the SSI ops skip work).

Built from an architecture (+ checkpoint or seeded random weights), from an existing
``nn.Module``, or from an exported ONNX file's metadata: ``TorchBackend.from_onnx`` rebuilds
the model the file was exported from (arch, FPN, sampling mode and seed, weights) by itself
and checks that the checkpoint it is given is the one the file records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import SSIError
from .base import Backend

DEFAULT_INPUT_NAME = "image"
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16}


def _torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise SSIError(f"unknown dtype {dtype!r}; use fp32 or fp16") from None


def check_weights_match(manifest, checkpoint: str | Path | None, onnx_path=None) -> int | None:
    """Enforce that ``checkpoint`` is the file the export was made from (its sha256).

    Returns the random-init seed when the file was exported from seeded random weights.
    """
    from ..models.checkpoint import file_sha256

    where = f" ({onnx_path})" if onnx_path else ""
    w = manifest.weights
    if w.kind == "untracked":
        raise SSIError(f"the ONNX file{where} was exported from a module whose weights "
                       "ssi-deploy does not track (not built by create_model): no PyTorch "
                       "reference can be rebuilt; export it with `ssi-deploy export`")
    if w.kind == "random":
        if checkpoint is not None:
            raise SSIError(f"checkpoint mismatch: the ONNX file{where} was exported from random "
                           f"weights (seed {w.seed}), but --checkpoint {checkpoint} was given; "
                           "drop --checkpoint")
        return int(w.seed)
    if checkpoint is None:
        raise SSIError(f"the ONNX file{where} was exported from checkpoint sha256:{w.sha256[:12]}...; "
                       "pass it with --checkpoint PATH")
    p = Path(checkpoint)
    if not p.is_file():
        raise SSIError(f"checkpoint not found: {p}")
    got = file_sha256(p)
    if got != w.sha256:
        raise SSIError(f"checkpoint mismatch: {p} has sha256:{got[:12]}..., the ONNX file{where} "
                       f"was exported from sha256:{w.sha256[:12]}...")
    return None


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, input_names: list[str] | None = None,
                 output_names: list[str] | None = None, device: str = "cpu", dtype="fp32",
                 threads: int | None = None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SSIError("--device cuda: this torch build sees no CUDA device")
        self.dtype = _torch_dtype(dtype)
        if threads:
            torch.set_num_threads(int(threads))
        self.model = model.eval().to(self.device, self.dtype)
        for name in getattr(model, "float32_modules", ()):  # a detector's heads: float32
            getattr(self.model, name).float()
        self._input_names = list(input_names or getattr(model, "input_names", None)
                                 or [DEFAULT_INPUT_NAME])
        own = list(getattr(model, "output_names", []) or [])
        if output_names is not None and own and list(output_names) != own:
            raise SSIError(f"the rebuilt PyTorch model's outputs {own} differ from the expected "
                           f"{list(output_names)}")
        self._output_names = list(output_names or own)
        if not self._output_names:
            raise SSIError("the PyTorch model does not name its outputs (output_names)")
        self._staged_tensors = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_arch(cls, arch: str, checkpoint: str | Path | None = None, with_fpn: bool = True,
                  sampling: str = "threshold", seed: int = 0, init_seed: int = 0,
                  expose_masks: bool = False, forced_density: float | None = None,
                  input_name: str = DEFAULT_INPUT_NAME, **kw) -> "TorchBackend":
        model = build_model(arch, with_fpn=with_fpn, checkpoint=checkpoint, sampling=sampling,
                            seed=seed, init_seed=init_seed)
        model.expose_masks = bool(expose_masks)
        if forced_density is not None:
            model.set_forced_density(forced_density)
        model.fuse_for_inference()
        names = list(getattr(model, "input_names", [input_name]))
        names[0] = input_name
        return cls(model, names, None, **kw)

    @classmethod
    def from_onnx(cls, path: str | Path, checkpoint: str | Path | None = None,
                  manifest=None, expose_masks: bool | None = None, **kw) -> "TorchBackend":
        """Rebuild the reference model an exported file came from, from its manifest.

        ``expose_masks`` (default: as the file does) adds the mask outputs even when the file
        does not expose them (validation compares and replays masks)."""
        m = manifest if manifest is not None else read_onnx_metadata(path)
        seed = check_weights_match(m, checkpoint, path)
        masks = m.masks_exposed if expose_masks is None else bool(expose_masks)
        backend = cls.from_arch(
            m.arch, checkpoint=checkpoint, with_fpn=m.with_fpn, sampling=m.sampling.mode,
            seed=m.sampling.seed, init_seed=0 if seed is None else seed,
            expose_masks=masks and m.sparse, forced_density=m.sampling.forced_density,
            input_name=m.input.name, **kw)
        model = backend.model
        feats = list(getattr(model, "feature_names", backend.output_names))
        want = [o.name for o in m.outputs if o.kind in ("feature", "detections")]
        if feats != want or (m.masks_exposed and masks and
                             [o.name for o in m.outputs if o.kind == "mask"]
                             != list(model.mask_names)):
            n_masks = len(m.outputs_of_kind("mask"))
            raise SSIError(f"{path}: its outputs ({', '.join(want[:6])} and {n_masks} masks) "
                           f"differ from those of the rebuilt {m.arch}"
                           f"{' + FPN' if m.with_fpn else ''} ({', '.join(feats[:6])} and "
                           f"{len(model.mask_names)} masks); the manifest does not describe "
                           "this file: re-export it with `ssi-deploy export`")
        return backend

    # -- interface ----------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    @property
    def input_shapes(self) -> dict[str, tuple | None]:
        # the image; a detector's image_info [B, 3] (resized h, w, scale factor)
        return {n: (None, 3, None, None) if k == 0 else (None, 3)
                for k, n in enumerate(self._input_names)}

    def describe(self) -> dict:
        d = {"backend": self.name, "device": str(self.device),
             "dtype": str(self.dtype).replace("torch.", ""), "threads": torch.get_num_threads()}
        if hasattr(self.model, "describe"):
            d["model"] = self.model.describe()
        return d

    def _tensors(self, feeds: dict[str, np.ndarray]) -> list[torch.Tensor]:
        unknown = [k for k in feeds if k not in self._input_names]
        missing = [k for k in self._input_names if k not in feeds]
        if unknown or missing:
            raise SSIError(f"inputs {sorted(feeds)} do not match the model's inputs "
                           f"{self._input_names}")
        # the image in the model's dtype; image_info stays float32 (sizes, scale factor)
        return [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(
                    self.device, self.dtype if k == 0 else torch.float32)
                for k, n in enumerate(self._input_names)]

    def _forward(self, xs):
        with torch.inference_mode():
            outs = self.model(*xs)
        if torch.is_tensor(outs):
            outs = (outs,)
        return outs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._forward(self._tensors(feeds))
        if len(outs) != len(self._output_names):
            raise SSIError(f"the model returned {len(outs)} outputs, expected "
                           f"{len(self._output_names)} ({self._output_names})")
        return {n: o.detach().cpu().numpy() for n, o in zip(self._output_names, outs)}

    def prepare(self, feeds: dict[str, np.ndarray]) -> None:
        self._staged_tensors = self._tensors(feeds)

    def run_staged(self) -> None:
        self._forward(self._staged_tensors)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measured_densities(self) -> dict[str, float]:
        """Per sampling layer, from the last forward ({} for a dense model)."""
        f = getattr(self.model, "measured_densities", None)
        return f() if f is not None else {}

    def close(self) -> None:
        self._staged_tensors = None


_MODEL_CACHE: dict[tuple, torch.nn.Module] = {}
_MODEL_CACHE_SIZE = 2


def build_model(arch: str, with_fpn: bool, checkpoint=None, sampling: str = "threshold",
                seed: int = 0, init_seed: int = 0) -> torch.nn.Module:
    """``models.create_model``, memoised in-process (a fresh deep copy each call).

    Building a model with seeded random weights runs a calibration forward; validate and
    profile in one process (the demo, the tests) rebuild the same model several times.
    """
    import copy

    from ..models import create_model

    ck = None
    if checkpoint is not None:
        p = Path(checkpoint)
        ck = (str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else str(p)
    key = (arch, bool(with_fpn), ck, int(init_seed))
    model = _MODEL_CACHE.get(key)
    if model is None:
        model = create_model(arch, with_fpn=with_fpn, checkpoint=checkpoint, sampling=sampling,
                             seed=seed, init_seed=init_seed)
        while len(_MODEL_CACHE) >= _MODEL_CACHE_SIZE:
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
        _MODEL_CACHE[key] = model
    out = copy.deepcopy(model)
    out.set_sampling(sampling, seed)
    out.set_forced_density(None)
    out.expose_masks = False
    return out.eval()


def read_onnx_metadata(path: str | Path):
    """The manifest of ``path`` (one-line errors for a missing, foreign or edited file)."""
    from ..manifest import read_manifest

    return read_manifest(path)
