"""Inputs for validation and profiling: a photograph, an .npz of named arrays, or noise.

Image preprocessing follows the spec's normalisation (mmdet 0.6 test pipeline): RGB,
resize keeping the aspect ratio so the short side is ``short_side`` (the long side at most
``max_long``), normalise ``(x - mean) / std`` per channel, then pad bottom/right with zeros
to a multiple of 32 -- or, for an ONNX file with a static input shape, fit inside that shape
and pad to it exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SSIError

# Spec section 5 (mmdet 0.6 / ImageNet caffe-style RGB statistics).
DEFAULT_MEAN = (123.675, 116.28, 103.53)
DEFAULT_STD = (58.395, 57.12, 57.375)
DEFAULT_SHORT_SIDE = 1000
DEFAULT_MAX_LONG = 1667
PAD_MULTIPLE = 32


def load_image(path: str | Path) -> np.ndarray:
    """An RGB photograph as uint8 [H, W, 3]; one-line errors for missing/unreadable files."""
    p = Path(path)
    if not p.is_file():
        raise SSIError(f"image not found: {p}")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL comes with scikit-image
        try:
            from skimage import io
        except ImportError:
            raise SSIError("reading an image needs Pillow or scikit-image: "
                           "pip install 'ssi-deploy[demo]'") from None
        img = io.imread(str(p))
    else:
        try:
            with Image.open(p) as im:
                img = np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises several kinds for bad files
            raise SSIError(f"cannot read image {p}: {e}") from None
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[0] == h and img.shape[1] == w:
        return img.astype(np.float32)
    try:
        from PIL import Image
        return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR), dtype=np.float32)
    except ImportError:  # pragma: no cover
        from skimage.transform import resize
        return resize(img, (h, w), order=1, preserve_range=True, anti_aliasing=False).astype(np.float32)


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
