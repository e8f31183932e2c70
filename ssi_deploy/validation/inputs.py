"""Inputs for validation and profiling: a photograph, an .npz of named arrays, or noise.

Image preprocessing follows the spec's normalisation (mmdet 0.6 test pipeline): RGB,
resize keeping the aspect ratio so the short side is ``short_side`` (the long side at most
``max_long``), normalise ``(x - mean) / std`` per channel, then pad bottom/right with zeros
to a multiple of 32 -- or, for an ONNX file with a static input shape, fit inside that shape
and pad to it exactly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SSIError

# Spec section 5 (mmdet 0.6 / ImageNet caffe-style RGB statistics).
DEFAULT_MEAN = (123.675, 116.28, 103.53)
DEFAULT_STD = (58.395, 57.12, 57.375)
DEFAULT_SHORT_SIDE = 1000
DEFAULT_MAX_LONG = 1667
PAD_MULTIPLE = 32


# How images are read. The official mmdet 0.6 pipeline reads with mmcv.imread =
# cv2.imread(path, IMREAD_COLOR) (BGR; RGB in its normalisation). IMREAD_ANYDEPTH |
# IMREAD_ANYCOLOR decodes the same way -- EXIF orientation applied (every flag but
# IMREAD_UNCHANGED does, OpenCV >= 3.1), alpha dropped, palette / 1-bit (0/255) / gray+alpha
# expanded, CMYK converted by the decoder -- but keeps the sample depth, so a 16-bit or
# floating-point file is seen for what it is instead of being converted silently, and gray
# stays one channel (replicated here).
_CONVERT = "convert it to 8-bit RGB (PNG/JPEG)"
# leading bytes -> format name, for the messages about files OpenCV cannot decode
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
               (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"), (b"RIFF", "WebP"),
               (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"))
_FLOAT_SIGNATURES = ((b"v/1\x01", "OpenEXR"), (b"#?RADIANCE", "Radiance HDR"),
                     (b"#?RGBE", "Radiance HDR"), (b"PF\n", "PFM"), (b"Pf\n", "PFM"))


@contextlib.contextmanager
def _native_stderr():
    """Collect what native code writes to file descriptor 2 inside the block (yields a list
    that receives the text). The decoders report there -- libjpeg's "Premature end of JPEG
    file" for a truncated JPEG it still decodes, OpenCV's ``[ WARN ]`` / ``[ ERROR ]`` lines --
    which would break the one-line error policy; the caller judges the text instead."""
    text: list[str] = []
    saved = None
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: nothing to capture
        pass
    if saved is None:
        yield text
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read(65536).decode("utf-8", "replace"))


def _depth_name(dtype: np.dtype) -> str:
    kind = {"f": "float", "i": "signed integer", "u": "unsigned integer"}.get(dtype.kind,
                                                                              str(dtype))
    return f"{dtype.itemsize * 8}-bit {kind}"


def load_image(path: str | Path) -> np.ndarray:
    """An RGB photograph as uint8 [H, W, 3], decoded as the official pipeline does (OpenCV,
    EXIF orientation applied); one-line ``SSIError`` naming the file otherwise.

    8-bit gray, RGB, RGBA (alpha dropped, not composited), gray+alpha, palette, 1-bit (0/255)
    and CMYK files convert; 16-bit files (PNG, TIFF; gray, RGB, RGBA) are scaled to 8 bits by
    ``value >> 8``, what the official pipeline's cv2.imread(IMREAD_COLOR) gives 16-bit PNGs
    and gray TIFFs (its colour-TIFF path rounds, round(v / 257): at most 1 level apart).
    Floating-point (TIFF, EXR, HDR, PFM), 32-bit integer and signed files are refused, as are
    missing, empty, truncated, corrupt and non-image files and directories.
    """
    p = Path(path)
    if p.is_dir():
        raise SSIError(f"image {p} is a directory; give an image file (PNG/JPEG)")
    if not p.exists():
        raise SSIError(f"image not found: {p}")
    if not p.is_file():
        raise SSIError(f"image {p} is not a regular file; give an image file (PNG/JPEG)")
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise SSIError(f"cannot read image {p}: {e.strerror or e}") from None
    if not head:
        raise SSIError(f"cannot read image {p}: the file is empty")
    try:
        import cv2
    except ImportError:
        raise SSIError("reading an image needs OpenCV: "
                       "pip install opencv-python-headless") from None
    with _native_stderr() as log:
        try:
            img = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        except cv2.error as e:  # imread returns None for most failures; a few raise
            img = None
            log.append(str(e))
    log = "".join(log)
    fmt = next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)
    if img is None:
        floating = next((name for sig, name in _FLOAT_SIGNATURES if head.startswith(sig)), None)
        if floating:
            raise SSIError(f"cannot use {p}: {floating} floating-point image; {_CONVERT}")
        if fmt:
            raise SSIError(f"cannot read image {p}: truncated, corrupt or an unsupported kind "
                           f"of {fmt}; {_CONVERT}")
        raise SSIError(f"cannot read image {p}: not an image file OpenCV can decode; "
                       "give a PNG or JPEG photograph")
    if "premature end" in log.lower():
        # libjpeg fills the missing rows with gray and only warns
        raise SSIError(f"cannot read image {p}: the {fmt or 'image'} data is truncated "
                       f"(premature end); re-save or re-download the file")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise SSIError(f"cannot use {p}: {_depth_name(img.dtype)} image; {_CONVERT}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim != 3 or img.shape[2] not in (3, 4):
        raise SSIError(f"cannot use {p}: {img.shape[2] if img.ndim == 3 else img.ndim}-channel "
                       f"image; {_CONVERT}")
    return np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a uint8 image as the official pipeline does (mmcv.imrescale:
    cv2.resize, INTER_LINEAR, on the uint8 image), as float32."""
    if img.shape[0] == h and img.shape[1] == w:
        return img.astype(np.float32)
    try:
        import cv2
    except ImportError:
        raise SSIError("resizing an image needs OpenCV: "
                       "pip install opencv-python-headless") from None
    out = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_LINEAR)
    return out.astype(np.float32)


def resized_size(h: int, w: int, short_side: int, max_long: int | None) -> tuple[int, int, float]:
    """mmdet's keep-ratio rescale: scale = min(short/short_edge, long/long_edge)."""
    scale = short_side / min(h, w)
    if max_long:
        scale = min(scale, max_long / max(h, w))
    return int(round(h * scale)), int(round(w * scale)), scale


def preprocess_image(img: np.ndarray, mean=DEFAULT_MEAN, std=DEFAULT_STD,
                     short_side: int | None = DEFAULT_SHORT_SIDE, max_long: int | None = None,
                     static_hw: tuple[int, int] | None = None,
                     multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, dict]:
    """[1, 3, H, W] float32 network input from an RGB uint8 image, and what was done."""
    h0, w0 = img.shape[:2]
    if static_hw is not None:
        th, tw = static_hw
        scale = min(th / h0, tw / w0)
        h, w = min(th, int(round(h0 * scale))), min(tw, int(round(w0 * scale)))
        ph, pw = th, tw
    else:
        short = short_side or DEFAULT_SHORT_SIDE
        if max_long is None:
            max_long = int(round(short * DEFAULT_MAX_LONG / DEFAULT_SHORT_SIDE))
        h, w, scale = resized_size(h0, w0, short, max_long)
        ph = -(-h // multiple) * multiple
        pw = -(-w // multiple) * multiple
    x = _resize(img, h, w)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    out = np.zeros((1, 3, ph, pw), np.float32)
    out[0, :, :h, :w] = x.transpose(2, 0, 1)
    info = {"original_hw": [h0, w0], "resized_hw": [h, w], "scale": float(scale),
            "padded_hw": [ph, pw], "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return out, info


def _dims_ok(shape, expected) -> bool:
    if expected is None:
        return True
    if len(shape) != len(expected):
        return False
    return all(not isinstance(e, int) or e <= 0 or e == s for s, e in zip(shape, expected))


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else "?" if d is None or
                           (isinstance(d, int) and d <= 0) else str(d) for d in shape) + "]"


def load_npz(path: str | Path, input_specs: dict[str, tuple | None]) -> dict[str, np.ndarray]:
    """Named inputs from an .npz; every model input must be there with a fitting shape.

    ``input_specs``: input name -> expected shape (ints are fixed dims; str/None/-1 are free).
    """
    p = Path(path)
    if not p.is_file():
        raise SSIError(f"inputs file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise SSIError(f"cannot read {p} as .npz: {e}") from None
    names = list(input_specs)
    if len(names) == 1 and len(arrays) == 1 and names[0] not in arrays:
        (other,) = arrays
        raise SSIError(f"{p}: input {other!r} is not an input of the model; expected {names[0]!r}")
    unknown = [k for k in arrays if k not in input_specs]
    if unknown:
        raise SSIError(f"{p}: unknown input name(s) {unknown}; the model's inputs: {names}")
    missing = [k for k in names if k not in arrays]
    if missing:
        raise SSIError(f"{p}: missing input(s) {missing}; the model's inputs: {names}")
    feeds = {}
    for k in names:
        a = arrays[k]
        if not _dims_ok(a.shape, input_specs[k]):
            raise SSIError(f"{p}: input {k!r} has shape {list(a.shape)}, the model expects "
                           f"{_fmt_shape(input_specs[k])}")
        if not np.issubdtype(a.dtype, np.floating):
            raise SSIError(f"{p}: input {k!r} has dtype {a.dtype}; expected floating point")
        feeds[k] = np.ascontiguousarray(a)
    return feeds


def random_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Normalised-image-like noise: standard normal, float32, reproducible from ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def parse_shape(text: str, default_batch: int = 1, channels: int = 3) -> tuple[int, int, int, int]:
    """``"512x672"`` / ``"1x3x512x672"`` / ``"2,3,64,64"`` -> (N, C, H, W)."""
    parts = [p for p in text.replace(",", "x").replace(" ", "").lower().split("x") if p]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise SSIError(f"--input-shape {text!r}: expected HxW or NxCxHxW (e.g. 1x3x512x512)") from None
    if len(dims) == 2:
        dims = [default_batch, channels] + dims
    if len(dims) != 4 or min(dims) <= 0:
        raise SSIError(f"--input-shape {text!r}: expected HxW or NxCxHxW with positive sizes")
    if dims[1] != channels:
        raise SSIError(f"--input-shape {text!r}: the models take {channels}-channel (RGB) images, "
                       f"e.g. 1x{channels}x512x512")
    return tuple(dims)  # type: ignore[return-value]
