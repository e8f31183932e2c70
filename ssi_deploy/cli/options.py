"""Parsing helpers shared by the CLI commands (each raises SSIError with the fix)."""

from __future__ import annotations

from ..input_shape import parse_input_shape


def parse_image_shape(text: str, check_memory: bool = True) -> tuple[int, int, int, int]:
    """``--input-shape`` of every command: NxCxHxW or HxW (see ``ssi_deploy.input_shape``)."""
    return parse_input_shape(text, "--input-shape", check_memory=check_memory)
