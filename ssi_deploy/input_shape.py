"""The one input-shape grammar of every command: ``NxCxHxW`` or ``HxW``.

    1x3x512x512   batch 1, RGB, 512 x 512       512x768   the same as 1x3x512x768
    2,3,64,64     commas (and spaces) work as separators too

Sizes are checked before any work: positive, C = 3 (the models take RGB images), sides at
most ``MAX_SIDE``, and the activations must fit this machine's memory.
"""

from __future__ import annotations

import os
import re

from .errors import SSIError

MAX_SIDE = 16384  # far beyond the official test scale (1667 x 1000); engines cap near here too
# Peak activation memory of a ResNet-101 forward is dominated by the stride-4 stage:
# 256 channels at H/4 x W/4, a few such tensors alive at once, 4 bytes each.
BYTES_PER_INPUT_PIXEL = 256 // 16 * 4 * 4

_SEP = re.compile(r"\s*[xX,]\s*")


def parse_dims(text: str, what: str = "shape") -> tuple[int, ...]:
    """Any rank: ``"1x1x64x64"`` -> (1, 1, 64, 64), positive sizes (TensorRT profile shapes
    of inputs other than the image)."""
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d+(\s*[xX]\s*\d+)*\s*", text):
        raise SSIError(f"bad {what} {text!r}: write dimensions joined by 'x', e.g. 1x3x512x512")
    dims = tuple(int(d) for d in re.split(r"\s*[xX]\s*", text.strip()))
    if min(dims) <= 0:
        raise SSIError(f"bad {what} {text!r}: every size must be positive")
    return dims


def parse_input_shape(text: str, what: str = "--input-shape", allow_hw: bool = True,
                      check_memory: bool = True) -> tuple[int, int, int, int]:
    """``"512x768"`` / ``"1x3x512x768"`` / ``"2,3,64,64"`` -> (N, 3, H, W), or a one-line error."""
    form = "NxCxHxW or HxW" if allow_hw else "NxCxHxW"
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d+(\s*[xX,]\s*\d+)*\s*", text):
        raise SSIError(f"bad {what} {text!r}: write it as {form}, e.g. 1x3x512x512")
    dims = [int(d) for d in _SEP.split(text.strip())]
    if len(dims) == 2 and allow_hw:
        dims = [1, 3] + dims
    if len(dims) != 4:
        raise SSIError(f"bad {what} {text!r}: expected {form} ({len(dims)} numbers given), "
                       "e.g. 1x3x512x512")
    if min(dims) <= 0:
        raise SSIError(f"bad {what} {text!r}: every size must be positive")
    if dims[1] != 3:
        raise SSIError(f"bad {what} {text!r}: the models take 3-channel (RGB) images, "
                       f"e.g. {dims[0]}x3x{dims[2]}x{dims[3]}")
    shape = tuple(dims)
    check_shape_size(shape, what, check_memory)
    return shape  # type: ignore[return-value]


def check_shape_size(shape, what: str = "--input-shape", check_memory: bool = True) -> None:
    """Refuse sides over ``MAX_SIDE`` and inputs whose activations cannot fit in memory."""
    n, _, h, w = shape
    if max(h, w) > MAX_SIDE:
        raise SSIError(f"{what} {n}x3x{h}x{w}: a side of {max(h, w)} is over the limit of "
                       f"{MAX_SIDE}; resize the image (the official test scale is 1667x1000)")
    if check_memory:
        need = n * h * w * BYTES_PER_INPUT_PIXEL
        total = physical_memory_bytes()
        if total and need > total:
            raise SSIError(f"{what} {n}x3x{h}x{w} needs about {need / 2**30:.0f} GiB of "
                           f"activations, more than this machine's {total / 2**30:.0f} GiB; "
                           "use a smaller batch or image")


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def format_shape(shape) -> str:
    return "x".join(str(d) for d in shape)
