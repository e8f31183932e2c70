"""The input ``profile`` times: its shape (checked by the one grammar's size rules on every
path) and the array, smooth seeded noise or a preprocessed photograph."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SSIError
from ..input_shape import check_shape_size, format_shape

DEFAULT_HW = (512, 512)


def checked_shape(shape, what: str = "--input-shape") -> tuple[int, int, int, int]:
    """``shape`` as (N, 3, H, W) ints, or a one-line error (sizes per ``input_shape``)."""
    dims = tuple(shape)
    if len(dims) != 4 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                 and d > 0 for d in dims):
        raise SSIError(f"bad {what} {list(dims)}: expected 4 positive sizes NxCxHxW, "
                       "e.g. 1x3x512x512")
    dims = tuple(int(d) for d in dims)
    if dims[1] != 3:
        raise SSIError(f"bad {what} {format_shape(dims)}: the models take 3-channel (RGB) "
                       f"images, e.g. {dims[0]}x3x{dims[2]}x{dims[3]}")
    check_shape_size(dims, what)
    return dims  # type: ignore[return-value]


def static_dims(shape) -> tuple | None:
    """A manifest/graph shape with axis names (dynamic) as None; None when unknown."""
    if shape is None:
        return None
    return tuple(int(d) if isinstance(d, int) and d > 0 else None for d in shape)


def fits(shape, static) -> bool:
    return static is None or (len(shape) == len(static) and
                              all(e is None or e == s for s, e in zip(shape, static)))


def _fmt(static) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in static) + "]"


def smooth_noise(shape, seed: int = 0) -> np.ndarray:
    """Image-like normalised input: low-frequency noise plus texture (realistic mask densities)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    ch, cw = max(1, h // 16), max(1, w // 16)
    coarse = rng.standard_normal((n, c, ch, cw)).astype(np.float32)
    yi = np.minimum((np.arange(h) * ch) // h, ch - 1)
    xi = np.minimum((np.arange(w) * cw) // w, cw - 1)
    up = coarse[:, :, yi][:, :, :, xi]
    # a light box blur makes the blocks smooth without any dependency
    k = max(1, min(h, w) // 32)
    if k > 1:
        cs = np.cumsum(np.pad(up, ((0, 0), (0, 0), (k, k), (0, 0)), mode="edge"), axis=2)
        up = (cs[:, :, 2 * k:2 * k + h] - cs[:, :, :h]) / (2 * k)
        cs = np.cumsum(np.pad(up, ((0, 0), (0, 0), (0, 0), (k, k)), mode="edge"), axis=3)
        up = (cs[:, :, :, 2 * k:2 * k + w] - cs[:, :, :, :w]) / (2 * k)
    up = up / max(float(up.std()), 1e-6)
    return (up + 0.3 * rng.standard_normal(shape)).astype(np.float32)


def noise_shape(given, static, default, where: str | None, name: str) -> tuple:
    """The timed shape: ``--input-shape``, else the static shape, else ``default`` (an engine
    profile's opt shape), else 1x3x512x512; every one through the size checks."""
    if given is not None:
        shape = checked_shape(given)
        if not fits(shape, static):
            raise SSIError(f"--input-shape {list(shape)} does not fit the {where} input "
                           f"{name!r} {_fmt(static)}")
        return shape
    if static is not None and all(d is not None for d in static):
        return checked_shape(static, f"the {where} input {name!r}")
    if default is not None:
        return checked_shape(default, f"the {where} input {name!r} (profile opt shape)")
    return checked_shape((1, 3) + DEFAULT_HW, "the default input")


def image_input(path, preprocessing, given, static, where: str = "ONNX",
                name: str = "image") -> tuple[np.ndarray, dict]:
    """A photograph resized and normalised as the manifest says (static size when fixed;
    otherwise short side = the smaller side of ``--input-shape``, else the official 1000)."""
    from ..validation import inputs as I

    p = Path(path)
    if not p.is_file():
        raise SSIError(f"--image {p}: no such file")
    img = I.load_image(p)
    if preprocessing.channel_order == "BGR":
        img = np.ascontiguousarray(img[..., ::-1])
    static_hw = (static[2], static[3]) if static is not None and None not in static[2:] else None
    if static_hw is not None:  # checked before an array of that size is made
        checked_shape((1, 3) + static_hw, f"the {where} input {name!r}")
    short = None if given is None else min(given[2:])
    x, info = I.preprocess_image(img, preprocessing.mean, preprocessing.std, short_side=short,
                                 static_hw=static_hw, multiple=preprocessing.pad_multiple)
    batch = (static[0] if static is not None and static[0] is not None
             else given[0] if given is not None else 1)
    if batch > 1:
        x = np.repeat(x, batch, axis=0)
    checked_shape(x.shape, f"--image {p.name} preprocessed to")
    info.update(source="image", path=str(p), shape=list(x.shape))
    return x, info


def make_input(cfg, name: str, static, default, preprocessing, where: str | None):
    """(array, description) of the timed input (``cfg.image``, else smooth noise)."""
    if cfg.image is not None:
        if cfg.input_shape is not None:
            checked_shape(cfg.input_shape)
        return image_input(cfg.image, preprocessing, cfg.input_shape, static, where, name)
    shape = noise_shape(cfg.input_shape, static, default, where, name)
    x = smooth_noise(shape, cfg.seed)
    return x, {"source": "smooth random noise", "seed": cfg.seed, "shape": list(shape)}
