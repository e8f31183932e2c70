"""ctypes wrapper of the CPU twins of the SSI kernels (``libssi_cpu.so``).

The twins run the CUDA kernels' per-element arithmetic (``plugins/include/ssi/math.h``) on
the host, so they check that arithmetic against the PyTorch ops without a GPU. The library
is looked up in ``$SSI_CPU_LIB``, then ``build/cpu_twins/lib`` and ``build/plugins/lib``;
when none is there and up to date, it is built once with
``cmake -S plugins -B build/cpu_twins -DSSI_BUILD_CUDA=OFF`` (host compiler only, seconds).

Functions take and return torch tensors (float32 or float16, on the CPU, NCHW).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import subprocess
import threading
from pathlib import Path

import torch

from ..errors import SSIError
from ..ops import contract as C
from ..ops.sparse_conv import conv_output_size

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
BUILD_DIR = REPO / "build" / "cpu_twins"
LIB_NAME = "libssi_cpu.so"
ABI_VERSION = 4  # SSI_CPU_ABI_VERSION in plugins/include/ssi/cpu_twins.h

_DTYPES = {torch.float32: 0, torch.float16: 1}
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _sources() -> list[Path]:
    files = [PLUGINS / "CMakeLists.txt"]
    for sub in ("include", "src/cpu"):
        files += [p for p in (PLUGINS / sub).rglob("*") if p.is_file()]
    return files


def _stale(lib: Path) -> bool:
    if not lib.exists():
        return True
    built = lib.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _sources())


def _build() -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise SSIError("cannot build the SSI CPU twins: cmake is not on PATH (set SSI_CPU_LIB to a built "
                       f"{LIB_NAME} or install cmake >= 3.24 and a C++17 compiler)")
    cmds = [[cmake, "-S", str(PLUGINS), "-B", str(BUILD_DIR), "-DSSI_BUILD_CUDA=OFF",
             "-DCMAKE_BUILD_TYPE=Release"],
            [cmake, "--build", str(BUILD_DIR), "--target", "ssi_cpu", "-j2"]]
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SSIError(f"cannot build the SSI CPU twins ({' '.join(cmd[:2])} ...): {tail[0]}")
    return BUILD_DIR / "lib" / LIB_NAME


def library_path() -> Path:
    """Path of an up-to-date ``libssi_cpu.so``, building it when needed."""
    env = os.environ.get("SSI_CPU_LIB")
    if env:
        p = Path(env)
        if not p.is_file():
            raise SSIError(f"SSI_CPU_LIB={env} is not a file")
        return p
    for cand in (BUILD_DIR / "lib" / LIB_NAME, REPO / "build" / "plugins" / "lib" / LIB_NAME):
        if not _stale(cand):
            return cand
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / ".build.lock", "w") as lock:  # one build at a time (pytest -n, several shells)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _stale(BUILD_DIR / "lib" / LIB_NAME):
            return BUILD_DIR / "lib" / LIB_NAME
        return _build()


def load() -> ctypes.CDLL:
    """The loaded library (built on first use)."""
    global _lib
    with _lock:
        if _lib is None:
            path = library_path()
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as e:
                raise SSIError(f"cannot load {path}: {e}") from None
            lib.ssi_cpu_abi_version.restype = ctypes.c_int32
            if lib.ssi_cpu_abi_version() != ABI_VERSION:
                raise SSIError(f"{path} has ABI version {lib.ssi_cpu_abi_version()}, expected "
                               f"{ABI_VERSION}: rebuild it")
            lib.ssi_cpu_last_error.restype = ctypes.c_char_p
            p, i32, f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_float
            lib.ssi_cpu_sample_mask.argtypes = [p, p, i32, i32, i32, i32, i32, i32, i32, i32]
            lib.ssi_cpu_sparse_conv2d.argtypes = [p, p, p, p, p, p, i32, ctypes.POINTER(i32)]
            lib.ssi_cpu_gaussian_interp.argtypes = [p, p, p, p, p, i32, i32, i32, i32, i32, f32, i32]
            for fn in (lib.ssi_cpu_sample_mask, lib.ssi_cpu_sparse_conv2d, lib.ssi_cpu_gaussian_interp):
                fn.restype = i32
            _lib = lib
    return _lib


def _check(lib: ctypes.CDLL, rc: int) -> None:
    if rc != 0:
        raise SSIError(f"SSI CPU twin failed: {lib.ssi_cpu_last_error().decode()}")


def _dtype(*tensors: torch.Tensor | None) -> int:
    ts = [t for t in tensors if t is not None]
    dt = ts[0].dtype
    if dt not in _DTYPES:
        raise SSIError(f"SSI CPU twins take float32 or float16 tensors, got {dt}")
    for t in ts:
        if t.dtype != dt:
            raise SSIError(f"SSI CPU twins: all tensors of one op share a dtype, got {dt} and {t.dtype}")
        if t.device.type != "cpu":
            raise SSIError("SSI CPU twins take CPU tensors")
    return _DTYPES[dt]


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def sample_mask(logits: torch.Tensor, mode: int = C.MODE_THRESHOLD,
                grid_interval: int = C.GRID_PRIOR_INTERVAL, seed: int = 0, layer: int = 0) -> torch.Tensor:
    lib = load()
    dt = _dtype(logits)
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise SSIError(f"SampleMask expects logits [N,1,H,W], got {tuple(logits.shape)}")
    logits = logits.contiguous()
    out = torch.empty_like(logits)
    n, _, h, w = logits.shape
    _check(lib, lib.ssi_cpu_sample_mask(_ptr(logits), _ptr(out), dt, n, h, w, mode, grid_interval,
                                        seed, layer))
    return out


def sparse_conv2d(x, weight, bias, mask, offset=None, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
                  dilation_h=1, dilation_w=1, groups=1, relu=0) -> torch.Tensor:
    lib = load()
    dt = _dtype(x, weight, bias, mask, offset)
    n, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride_h, pad_h, dilation_h)
    wo = conv_output_size(w, kw, stride_w, pad_w, dilation_w)
    if cin != cin_g * groups or tuple(mask.shape) != (n, 1, ho, wo) or bias.numel() != cout:
        raise SSIError(f"SparseConv2d: shapes x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                       f"bias {tuple(bias.shape)}, mask {tuple(mask.shape)} do not fit")
    if offset is not None and tuple(offset.shape) != (n, 2 * kh * kw, ho, wo):
        raise SSIError(f"SparseConv2d: offset must be {(n, 2 * kh * kw, ho, wo)}, got {tuple(offset.shape)}")
    x, weight, bias, mask = (t.contiguous() for t in (x, weight, bias, mask))
    offset = None if offset is None else offset.contiguous()
    y = torch.empty((n, cout, ho, wo), dtype=x.dtype)
    prm = (ctypes.c_int32 * 18)(n, cin, h, w, cout, kh, kw, ho, wo, stride_h, stride_w, pad_h, pad_w,
                                dilation_h, dilation_w, groups, relu, int(offset is not None))
    _check(lib, lib.ssi_cpu_sparse_conv2d(_ptr(x), _ptr(weight), _ptr(bias), _ptr(mask), _ptr(offset),
                                          _ptr(y), dt, prm))
    return y


def gaussian_interp(values, mask, bias, residual=None, sigma: float = C.SIGMA_INIT,
                    relu: int = 0) -> torch.Tensor:
    lib = load()
    dt = _dtype(values, mask, bias, residual)
    n, c, h, w = values.shape
    if tuple(mask.shape) != (n, 1, h, w) or bias.numel() != c or (
            residual is not None and residual.shape != values.shape):
        raise SSIError(f"GaussianInterp: shapes values {tuple(values.shape)}, mask {tuple(mask.shape)}, "
                       f"bias {tuple(bias.shape)} do not fit")
    values, mask, bias = (t.contiguous() for t in (values, mask, bias))
    residual = None if residual is None else residual.contiguous()
    out = torch.empty_like(values)
    _check(lib, lib.ssi_cpu_gaussian_interp(_ptr(values), _ptr(mask), _ptr(bias), _ptr(residual), _ptr(out),
                                            dt, n, c, h, w, float(sigma), relu))
    return out
