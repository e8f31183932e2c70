"""Optimization-profile shapes: ``name:min,opt,max`` with shapes written ``1x3x512x512``.

``name:SHAPE`` alone means min = opt = max (a static profile).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SSIError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ProfileShape:
    name: str
    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Shape) -> bool:
        return (len(shape) == len(self.min)
                and all(lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max)))

    def __str__(self) -> str:
        return f"{self.name}:{format_shape(self.min)},{format_shape(self.opt)},{format_shape(self.max)}"


def format_shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def parse_shape(text: str, what: str = "shape") -> Shape:
    """One shape of a profile: dimensions joined by 'x' (``ssi_deploy.input_shape``); an
    image input (rank 4, 3 channels) gets the image checks (sizes within limits)."""
    from ..input_shape import check_shape_size, parse_dims

    dims = parse_dims(text, what)
    if len(dims) == 4 and dims[1] == 3:
        check_shape_size(dims, what, check_memory=False)
    return dims


def parse_profile(spec: str) -> ProfileShape:
    """``name:min,opt,max`` (or ``name:shape``) -> ProfileShape, checked min <= opt <= max."""
    name, sep, rest = spec.rpartition(":")
    if not sep or not name or not rest:
        raise SSIError(f"bad --shapes {spec!r}: expected NAME:MIN,OPT,MAX, "
                       f"e.g. input:1x3x256x256,1x3x512x512,4x3x1024x1024")
    parts = rest.split(",")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise SSIError(f"bad --shapes {spec!r}: give one shape or three (min,opt,max), not {len(parts)}")
    mn, opt, mx = (parse_shape(p, f"shape in --shapes {spec!r}") for p in parts)
    if not len(mn) == len(opt) == len(mx):
        raise SSIError(f"bad --shapes {spec!r}: min, opt and max must have the same rank")
    if not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
        raise SSIError(f"bad --shapes {spec!r}: need min <= opt <= max in every dimension")
    return ProfileShape(name, mn, opt, mx)


def parse_profiles(specs) -> dict[str, ProfileShape]:
    out: dict[str, ProfileShape] = {}
    for s in specs or ():
        p = parse_profile(s)
        if p.name in out:
            raise SSIError(f"--shapes given twice for input {p.name!r}")
        out[p.name] = p
    return out


def resolve_profiles(inputs: dict[str, tuple], given: dict[str, ProfileShape]) -> dict[str, ProfileShape]:
    """Profiles for every network input.

    ``inputs``: name -> dims as the network/ONNX reports them (-1, None or a string for dynamic
    dims). Static inputs without ``--shapes`` get a fixed profile; dynamic ones must be given.
    """
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise SSIError(f"--shapes names unknown input(s) {', '.join(unknown)}; the model's inputs "
                       f"are {', '.join(inputs) or 'none'}")
    out = {}
    for name, dims in inputs.items():
        dyn = [i for i, d in enumerate(dims) if not isinstance(d, int) or d < 0]
        if name not in given and dyn == [0] and given:
            first = next(iter(given.values()))
            rest = tuple(int(d) for d in dims[1:])
            out[name] = ProfileShape(name, (first.min[0],) + rest, (first.opt[0],) + rest,
                                     (first.max[0],) + rest)
            continue
        if name not in given:
            if dyn:
                shown = "x".join(str(d) if isinstance(d, int) and d >= 0 else "?" for d in dims)
                raise SSIError(f"input {name!r} has dynamic dimensions ({shown}): give "
                               f"--shapes {name}:MIN,OPT,MAX, e.g. {name}:"
                               f"{_example(dims, 1, 256)},{_example(dims, 1, 512)},{_example(dims, 4, 1024)}")
            fixed = tuple(int(d) for d in dims)
            out[name] = ProfileShape(name, fixed, fixed, fixed)
            continue
        p = given[name]
        if len(p.min) != len(dims):
            raise SSIError(f"--shapes {p}: input {name!r} has rank {len(dims)}, not {len(p.min)}")
        for i, d in enumerate(dims):
            if i in dyn:
                continue
            if not (p.min[i] == p.opt[i] == p.max[i] == d):
                raise SSIError(f"--shapes {p}: dimension {i} of input {name!r} is fixed to {d} "
                               f"in the model")
        out[name] = p
    return out


def _example(dims, batch: int, spatial: int) -> str:
    ex = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d >= 0:
            ex.append(d)
        else:
            ex.append(batch if i == 0 else spatial)
    return format_shape(ex)


def check_within(name: str, shape: Shape, prof_min: Shape, prof_max: Shape) -> None:
    """SSIError when ``shape`` lies outside the engine's profile for input ``name``."""
    shape, prof_min, prof_max = tuple(shape), tuple(prof_min), tuple(prof_max)
    ok = len(shape) == len(prof_min) and all(lo <= s <= hi for s, lo, hi in
                                             zip(shape, prof_min, prof_max))
    if not ok:
        raise SSIError(f"input {name!r} has shape {format_shape(shape)}, outside the engine's "
                       f"profile (min {format_shape(prof_min)}, max {format_shape(prof_max)}); "
                       f"rebuild the engine with --shapes {name}:MIN,OPT,MAX covering it")
