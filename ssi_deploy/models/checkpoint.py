"""Checkpoints: official SSI/mmdet 0.6 files and torchvision ImageNet ResNets.

Files are read with ``torch.load(weights_only=True)``. A model takes the keys of its parts
(``backbone.*``, ``neck.*`` when it has an FPN, ``rpn_head.*`` and ``bbox_head.*`` when it is
a detector) and reports the rest as ignored (the heads for a backbone, ``meta``,
``optimizer``). Missing, unexpected or mis-shaped keys raise one SSIError naming the
first few. Checkpoint filter functions in the manner of timm convert other layouts.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SSIError

NECK_INIT_SEED = 0  # FPN of a model initialised from an ImageNet (torchvision) checkpoint
HEAD_PARTS = ("rpn_head.", "bbox_head.")
SSI_ONLY = ("conv1_mask.", "conv2_mask.", "conv1_sigma", "conv2_sigma", "conv1_gumbel.",
            "conv2_gumbel.")


@dataclass
class Checkpoint:
    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    format: str  # "official" or "torchvision"
    extra_keys: list[str] = field(default_factory=list)  # top-level entries besides weights


@dataclass
class LoadReport:
    sha256: str
    format: str
    ignored: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)  # keys the checkpoint lacked, by design

    def summary(self) -> str:
        parts = [f"{self.format} checkpoint sha256:{self.sha256[:12]}"]
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} keys ({_first(self.ignored)})")
        if self.initialised:
            parts.append(f"initialised {len(self.initialised)} keys ({_first(self.initialised)})")
        return "; ".join(parts)


def _first(keys, n: int = 3) -> str:
    keys = sorted(keys)
    more = f", ... {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise SSIError(f"checkpoint not found: {path}; pass the path of a .pth file "
                       "(official SSI/mmdet checkpoint or torchvision ResNet)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's weights-only unpickler refused an object
        raise SSIError(f"cannot read checkpoint {path}: it holds objects other than tensors and "
                       "plain containers, which are refused (loaded with weights_only=True); "
                       "re-save the state dict alone") from None
    except Exception as e:  # any other failure of the unpickler means: not a checkpoint
        raise SSIError(f"cannot read checkpoint {path}: not a torch.save file "
                       f"({type(e).__name__}); it must be a torch.save file of tensors "
                       "(loaded with weights_only=True)") from None
    extra: list[str] = []
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        extra = [k for k in obj if k != "state_dict"]
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        sd = obj
    else:
        raise SSIError(f"{path} holds no state dict: expected a dict with 'state_dict' "
                       "(official) or a dict of tensors (torchvision)")
    sd = {k.removeprefix("module."): v for k, v in sd.items() if torch.is_tensor(v)}
    if any(k.startswith("backbone.") for k in sd):
        fmt = "official"
    elif "conv1.weight" in sd and any(k.startswith("layer1.0.") for k in sd):
        fmt = "torchvision"
    else:
        raise SSIError(f"{path}: unrecognised key layout (first keys: {_first(sd)}); expected "
                       "official 'backbone.*' keys or a torchvision ResNet")
    return Checkpoint(path, file_sha256(path), sd, fmt, extra)


def detect_arch(ckpt: Checkpoint) -> tuple[str, bool]:
    """(architecture name, has FPN) recognised from the keys; a checkpoint with the detector
    heads names the detector (``faster_rcnn_<backbone>``)."""
    prefix = "backbone." if ckpt.format == "official" else ""
    keys = [k[len(prefix):] for k in ckpt.state_dict if k.startswith(prefix)]
    n_layer3 = len({k.split(".")[1] for k in keys if k.startswith("layer3.")})
    depth = {6: 50, 23: 101}.get(n_layer3)
    if depth is None:
        raise SSIError(f"{ckpt.path}: stage 3 has {n_layer3} blocks; only ResNet-50 (6) and "
                       "ResNet-101 (23) bottleneck backbones are supported")
    sparse = any(".conv1_mask." in k for k in keys)
    dcn = any(".conv2_offset." in k for k in keys)
    name = ("sparse_" if sparse else "") + f"resnet{depth}" + ("_dcn" if dcn else "")
    fpn = any(k.startswith("neck.") for k in ckpt.state_dict)
    if fpn and any(k.startswith(HEAD_PARTS) for k in ckpt.state_dict):
        name = "faster_rcnn_" + name
    return name, fpn


def arch_hint(guess: str, fpn: bool) -> str:
    """The options that select a recognised architecture."""
    return f"--arch {guess}" + (" --with-fpn" if fpn and not guess.startswith("faster_rcnn_")
                                else "")


def torchvision_filter(sd: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """torchvision ResNet -> our backbone keys (``fc.*`` is the classifier: ignored)."""
    out = {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    return out, [k for k in sd if k.startswith("fc.")]


def load_checkpoint(model, path: str | Path | Checkpoint) -> LoadReport:
    """Load ``path`` (or an already read Checkpoint) into an SSINetwork; raises SSIError when
    it does not fit."""
    ckpt = path if isinstance(path, Checkpoint) else read_checkpoint(path)
    sd = ckpt.state_dict
    ignored: list[str] = list(ckpt.extra_keys)
    if ckpt.format == "torchvision":
        sd, dropped = torchvision_filter(sd)
        ignored += dropped
    detector = getattr(model, "is_detector", False)
    parts = ["backbone."] + (["neck."] if model.neck is not None else []) + \
        (list(HEAD_PARTS) if detector else [])
    taken = {k: v for k, v in sd.items() if k.startswith(tuple(parts))}
    ignored += [k for k in sd if k not in taken]
    expected = model.state_dict()
    # Keys a dense ImageNet checkpoint cannot have: SSI-only modules keep their official
    # initialisation (mask convs weight 0 / bias 3, sigma 3), DCN offsets start at 0, the
    # FPN stays random; num_batches_tracked is bookkeeping only.
    allowed_missing = ("num_batches_tracked",)
    if ckpt.format == "torchvision":
        allowed_missing += SSI_ONLY + ("conv2_offset.", "neck.") + HEAD_PARTS
    missing = [k for k in expected if k not in taken and not any(a in k for a in allowed_missing)]
    unexpected = [k for k in taken if k not in expected]
    misshaped = [f"{k} {list(v.shape)} vs model {list(expected[k].shape)}"
                 for k, v in taken.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or misshaped:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} keys ({_first(missing)})")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} keys ({_first(unexpected)})")
        if misshaped:
            problems.append(f"mis-shaped {len(misshaped)} ({_first(misshaped, 2)})")
        hint = ""
        try:
            guess, fpn = detect_arch(ckpt)
            hint = f"; the checkpoint looks like {arch_hint(guess, fpn)}"
        except SSIError:
            pass
        raise SSIError(f"checkpoint {ckpt.path} does not fit {model.arch}"
                       f"{' with FPN' if model.neck is not None and not detector else ''}: "
                       + "; ".join(problems) + hint)
    initialised = [k for k in expected if k not in taken]
    with torch.no_grad():
        if ckpt.format == "torchvision":
            for b in model.backbone.blocks:  # official init of what ImageNet weights lack
                if getattr(b, "with_dcn", False):
                    b.conv2_offset.weight.zero_()
                    b.conv2_offset.bias.zero_()
            if model.neck is not None:  # mmdet's FPN init (xavier), seeded: reproducible
                gen = torch.Generator().manual_seed(NECK_INIT_SEED)
                for conv in model.neck.modules():
                    if isinstance(conv, torch.nn.Conv2d):
                        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
                        bound = (6.0 / (fan_in + fan_out)) ** 0.5
                        conv.weight.uniform_(-bound, bound, generator=gen)
                        conv.bias.zero_()
            if detector:  # heads of an ImageNet-initialised detector: seeded, as the FPN
                from .init import init_detector_heads
                init_detector_heads(model, torch.Generator().manual_seed(NECK_INIT_SEED))
        model.load_state_dict(taken, strict=False)
    model.init_info = f"checkpoint sha256:{ckpt.sha256}"
    return LoadReport(ckpt.sha256, ckpt.format, sorted(ignored), initialised)
