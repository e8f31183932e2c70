"""Output files (checked first, written atomically) and the one input-shape grammar."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from ssi_deploy.errors import SSIError
from ssi_deploy.input_shape import MAX_SIDE, parse_dims, parse_input_shape
from ssi_deploy.outputs import atomic_output, check_output_path, write_text_atomic


def test_check_output_path_refusals(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SSIError, match="does not exist; create it first"):
        check_output_path(tmp_path / "no" / "a.json", "--report")
    with pytest.raises(SSIError, match="is not a directory"):
        check_output_path(tmp_path / "f" / "a.json", "--report")
    with pytest.raises(SSIError, match="is a directory"):
        check_output_path(tmp_path, "--report")
    with pytest.raises(SSIError, match="must end in .onnx"):
        check_output_path(tmp_path / "a.json", "--output", ".onnx")
    with pytest.raises(SSIError, match="MB free"):
        check_output_path(tmp_path / "a.onnx", "--output", ".onnx", expected_bytes=2**62)
    assert check_output_path(tmp_path / "new" / "a.plan", create_parent=True).parent.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "new"]  # no probe files left


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_atomic_output_disk_full_is_one_line(tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(SSIError, match="the disk filled up while writing ONNX file"):
        with atomic_output(target, "ONNX file"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_gives_the_usual_file_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644 and p.read_text() == "{}"


@pytest.mark.parametrize("text,shape", [
    ("1x3x512x512", (1, 3, 512, 512)), ("512x768", (1, 3, 512, 768)),
    ("2,3,64,64", (2, 3, 64, 64)), (" 1 X 3 x 32 x 32 ", (1, 3, 32, 32)),
])
def test_input_shape_grammar(text, shape):
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text,match", [
    ("1x3x64", "expected NxCxHxW or HxW"), ("1x3x0x64", "every size must be positive"),
    ("1x4x64x64", "3-channel"), ("axb", "write it as"), ("", "write it as"),
    (f"1x3x{MAX_SIDE + 1}x8", "over the limit"), ("1x3x-1x4", "write it as"),
    ("4096x3x4096x4096", "GiB of activations"),
])
def test_input_shape_refusals(text, match):
    with pytest.raises(SSIError, match=match):
        parse_input_shape(text)


def test_profile_dims_any_rank():
    assert parse_dims("1x1x64x64") == (1, 1, 64, 64) and parse_dims("7") == (7,)
    with pytest.raises(SSIError, match="positive"):
        parse_dims("1x0")
