"""Parsing helpers shared by the CLI commands (each raises SSIError with the fix)."""

from __future__ import annotations

import re

from ..errors import SSIError


def parse_shape(text: str, what: str = "--input-shape") -> tuple[int, ...]:
    """'1x3x512x512' -> (1, 3, 512, 512)."""
    if not re.fullmatch(r"\s*\d+(\s*[xX,]\s*\d+)*\s*", text or ""):
        raise SSIError(f"bad {what} {text!r}: write it as NxCxHxW, e.g. 1x3x512x512")
    dims = tuple(int(d) for d in re.split(r"\s*[xX,]\s*", text.strip()))
    if any(d <= 0 for d in dims):
        raise SSIError(f"bad {what} {text!r}: every dimension must be positive")
    return dims


def parse_image_shape(text: str) -> tuple[int, int, int, int]:
    dims = parse_shape(text)
    if len(dims) != 4 or dims[1] != 3:
        raise SSIError(f"bad --input-shape {text!r}: expected Nx3xHxW (an RGB image batch), "
                       "e.g. 1x3x512x512")
    return dims  # type: ignore[return-value]
