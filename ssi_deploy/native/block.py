"""Native CPU kernels of the SSIBottleneck op (``libssi_cpu.so``, ``plugins/src/cpu/block.cpp``).

:func:`available` gives the kernels that ``ssi_deploy.ops.block_kernels`` calls on CPU tensors
(same signatures as its functions, float32 results), or None: then the PyTorch path runs.
None when ``SSI_NATIVE_BLOCK=0`` (checked on every call), or when the library cannot be built
or loaded (decided once, with one warning naming the reason).

The kernels use ``torch.get_num_threads()`` OpenMP threads and, on x86-64 CPUs, the library's
widest build of them the CPU runs: AVX-512 (F/VL/BW/DQ), AVX2 or the baseline
(``SSI_CPU_BLOCK_ISA=avx2`` or ``generic`` caps it; all give the same bits).
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings

import torch

from ..errors import SSIError

ENV = "SSI_NATIVE_BLOCK"

_lock = threading.Lock()
_native: "NativeBlock | None" = None
_failed: str | None = None  # why the library is not used (remembered: no second build attempt)


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()  # an int: the c_void_p argtypes take it as it is


def _f32(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous():
        return t
    return t.to(device="cpu", dtype=torch.float32).contiguous()


def _typed(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if t.dtype == dtype and t.device.type == "cpu" and t.is_contiguous():
        return t
    return t.to(device="cpu", dtype=dtype).contiguous()


def _overlaps(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    if b is None:
        return False
    an, bn = a.nbytes, b.nbytes
    if an == 0 or bn == 0:
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + bn and b0 < a0 + an


class NativeBlock:
    """ctypes bindings of ``ssi_cpu_block_*`` (float32, channels-last rows, CPU tensors)."""

    def __init__(self, lib: ctypes.CDLL):
        p, i32, i64, f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
        self._interp = lib.ssi_cpu_block_interp_rows_taps
        self._interp.argtypes = [p, i64, p, p, i32, i32, i32, i32, f32, p, p, i32, p, p, i32, p, i32]
        self._interp.restype = i32
        self._interp_conv = lib.ssi_cpu_block_interp_rows_for_conv
        self._interp_conv.argtypes = [p, i64, p, p, i32, i32, i32, i32, f32, p, i32, i32, i32, p, i32]
        self._interp_conv.restype = i32
        self._patches = lib.ssi_cpu_block_patches3x3
        self._patches.argtypes = [p, i32, i32, i32, i32, p, i64, i32, i32, i32, p, p, i32]
        self._patches.restype = i32
        self._compact = lib.ssi_cpu_block_compact
        self._compact.argtypes = [p, i64, p, p]
        self._compact.restype = i64
        self._sum_taps = lib.ssi_cpu_block_sum_taps
        self._sum_taps.argtypes = [p, i32, i32, i32, i32, i32, i32, f32, p, i32]
        self._sum_taps.restype = i32
        self._kth = lib.ssi_cpu_block_kth_largest
        self._kth.argtypes = [p, i64, i64, i64, p]
        self._kth.restype = i32
        self._gemm = lib.ssi_cpu_block_small_gemm
        self._gemm.argtypes = [p, i64, i32, p, i32, p, i32]
        self._gemm.restype = i32
        self._masks = lib.ssi_cpu_block_threshold_masks
        self._masks.argtypes = [p, i32, i32, i32, i32, i32, f32, f32, i64, i64, i32, p, p, p, p, p, p, p, p, p,
                                i32]
        self._masks.restype = i32
        self._error = lib.ssi_cpu_last_error

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise SSIError(f"native {what} failed: {self._error().decode()}")

    def compact(self, mask: torch.Tensor):
        """(perm int64 [numel], count, index int32 [numel]) of a mask (see block_kernels)."""
        m = _f32(mask).reshape(-1)
        perm = torch.empty(m.numel(), dtype=torch.int64)
        index = torch.empty(m.numel(), dtype=torch.int32)
        count = self._compact(_ptr(m), m.numel(), _ptr(perm), _ptr(index))
        if count < 0:
            self._check(1, "compact")
        return perm, int(count), index

    def small_gemm(self, x: torch.Tensor, w_t: torch.Tensor,
                   out: torch.Tensor | None = None) -> torch.Tensor:
        """x [M, K] @ w_t.T for a few outputs (w_t [N, K]): [M, N] float32."""
        x, w_t = _f32(x), _f32(w_t)
        m, k = x.shape
        n = w_t.shape[0]
        if w_t.shape[1] != k:
            raise SSIError(f"native small_gemm: weights {tuple(w_t.shape)} do not fit x {tuple(x.shape)}")
        if not (out is not None and out.dtype == torch.float32 and out.is_contiguous()
                and tuple(out.shape) == (m, n) and not _overlaps(out, x) and not _overlaps(out, w_t)):
            out = torch.empty((m, n), dtype=torch.float32)
        self._check(self._gemm(_ptr(x), m, k, _ptr(w_t), n, _ptr(out), torch.get_num_threads()),
                    "small_gemm")
        return out

    def kth_largest(self, values: torch.Tensor, k: int) -> torch.Tensor:
        """The k-th largest value of each row of ``values`` [N, HW]: [N] float32."""
        v = _f32(values)
        out = torch.empty(v.shape[0], dtype=torch.float32)
        self._check(self._kth(_ptr(v), v.shape[0], v.shape[1], int(k), _ptr(out)), "kth_largest")
        return out

    def sum_taps(self, taps: torch.Tensor, k: int, shape: tuple[int, int, int], bias: float,
                 stride: int) -> torch.Tensor:
        """Output ``k`` of the 3x3 convolutions from tap partials [N*H*W, 9 K]: [N, 1, Ho, Wo]."""
        n_, h, w = shape
        taps = _f32(taps)
        k_out = taps.shape[1] // 9
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        out = torch.empty((n_, 1, ho, wo), dtype=torch.float32)
        rc = self._sum_taps(_ptr(taps), n_, h, w, k_out, int(k), int(stride), float(bias), _ptr(out),
                            torch.get_num_threads())
        self._check(rc, "sum_taps")
        return out

    def interp_rows(self, rows: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, sigma: float,
                    bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                    relu: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
        """GaussianInterp of compact rows [count, C] (``index``: the row of each position of
        ``mask`` [N,1,H,W], -1 where mask <= 0) into dense rows [N*H*W, C] float32."""
        return self.interp_rows_taps(rows, index, mask, sigma, bias, residual, relu, out)[0]

    def interp_rows_taps(self, rows: torch.Tensor, index: torch.Tensor, mask: torch.Tensor,
                         sigma: float, bias: torch.Tensor | None = None,
                         residual: torch.Tensor | None = None, relu: bool = False,
                         out: torch.Tensor | None = None, taps_w: torch.Tensor | None = None):
        """(interp_rows, and with ``taps_w`` [T, C] the small_gemm of its result by
        ``taps_w``, [N*H*W, T], the same bits, computed as each row is written; else None)."""
        n_, _, h, w = mask.shape
        count, c = rows.shape
        npos = n_ * h * w
        rows, mask32 = _f32(rows), _f32(mask)  # the library reads mask [N*H*W] as it lies
        index = _typed(index, torch.int32)
        if index.numel() != npos:
            raise SSIError(f"native interp_rows: index has {index.numel()} entries for {npos} positions")
        if bias is not None:
            bias = _f32(bias)
            if bias.numel() != c:
                raise SSIError(f"native interp_rows: bias has {bias.numel()} values for {c} channels")
        if residual is not None:
            residual = _f32(residual)
            if tuple(residual.shape) != (npos, c):
                raise SSIError(f"native interp_rows: residual must be {(npos, c)}, "
                               f"got {tuple(residual.shape)}")
        direct = (out is not None and out.dtype == torch.float32 and out.device.type == "cpu"
                  and out.is_contiguous() and tuple(out.shape) == (npos, c)
                  # out may be the residual itself (read before written), never another input
                  and not any(_overlaps(out, t) for t in (rows, index, mask32, bias))
                  and (residual is None or not _overlaps(out, residual) or
                       (out.data_ptr() == residual.data_ptr())))
        taps = None
        if taps_w is not None:
            taps_w = _f32(taps_w)
            if taps_w.dim() != 2 or taps_w.shape[1] != c:
                raise SSIError(f"native interp_rows: tap weights {tuple(taps_w.shape)} do not fit {c} channels")
            # a new tensor: it lives on in the chain's handoff, across user code (hooks)
            taps = torch.empty((npos, taps_w.shape[0]), dtype=torch.float32)
        res = out if direct else torch.empty((npos, c), dtype=torch.float32)
        rc = self._interp(_ptr(rows), count, _ptr(index), _ptr(mask32), n_, h, w, c, float(sigma), _ptr(bias),
                          _ptr(residual), int(bool(relu)), _ptr(res), _ptr(taps_w),
                          0 if taps_w is None else taps_w.shape[0], _ptr(taps), torch.get_num_threads())
        self._check(rc, "interp_rows")
        if out is not None and not direct:
            out.copy_(res)
            return out, taps
        return res, taps

    def interp_rows_for_conv(self, rows: torch.Tensor, index: torch.Tensor, mask: torch.Tensor,
                             sigma: float, mask2: torch.Tensor, stride: int,
                             out: torch.Tensor | None = None) -> torch.Tensor:
        """``interp_rows(rows, index, mask, sigma)`` at just the positions a 3x3 convolution
        (padding 1) at ``stride`` reads for the sampled outputs of ``mask2`` [N,1,Ho,Wo];
        the other rows of the result hold whatever ``out`` held (or anything)."""
        n_, _, h, w = mask.shape
        count, c = rows.shape
        npos = n_ * h * w
        rows, mask32, m2 = _f32(rows), _f32(mask), _f32(mask2)
        index = _typed(index, torch.int32)
        if index.numel() != npos:
            raise SSIError(f"native interp_rows: index has {index.numel()} entries for {npos} positions")
        if m2.dim() != 4 or m2.shape[0] != n_ or m2.shape[1] != 1:
            raise SSIError(f"native interp_rows_for_conv: mask2 must be [{n_},1,Ho,Wo], got {tuple(m2.shape)}")
        if not (out is not None and out.dtype == torch.float32 and out.device.type == "cpu"
                and out.is_contiguous() and tuple(out.shape) == (npos, c)
                and not any(_overlaps(out, t) for t in (rows, index, mask32, m2))):
            out = torch.empty((npos, c), dtype=torch.float32)
        rc = self._interp_conv(_ptr(rows), count, _ptr(index), _ptr(mask32), n_, h, w, c, float(sigma),
                               _ptr(m2), m2.shape[2], m2.shape[3], int(stride), _ptr(out),
                               torch.get_num_threads())
        self._check(rc, "interp_rows_for_conv")
        return out

    def threshold_masks(self, taps: torch.Tensor, shape: tuple[int, int, int], stride: int,
                        bias1: float, bias2: float, k1: int, k2: int, grid_interval: int,
                        scratch=None, keep_logits: bool = True):
        """Both masks of a block in threshold mode from the mask taps [N*H*W, 9 K] (see
        ``ssi_cpu_block_threshold_masks``): (logits1 [N,1,H,W], logits2 [N,1,Ho,Wo], m1, m2,
        (perm1, count1, index1), (perm2, count2, index2)); k1, k2 > 0: forced counts.
        ``scratch(name, numel, dtype)``, a caller's reusable 1-D buffers: the compactions come
        from it (valid until the caller reuses them), and the logits too unless
        ``keep_logits``; the masks are always new tensors."""
        n_, h, w = shape
        taps = _f32(taps)
        if taps.shape[0] != n_ * h * w or taps.shape[1] % 9 or taps.shape[1] < 18:
            raise SSIError(f"native threshold_masks: taps {tuple(taps.shape)} do not fit {n_}x{h}x{w}")
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        n1, n2 = n_ * h * w, n_ * ho * wo
        if scratch is None:
            scratch = lambda name, k, dtype: torch.empty(k, dtype=dtype)  # noqa: E731
        new = lambda name, k, dtype: torch.empty(k, dtype=dtype)  # noqa: E731
        logit = new if keep_logits else scratch
        l1, l2 = logit("logits1", n1, torch.float32), logit("logits2", n2, torch.float32)
        m1, m2 = torch.empty((n_, 1, h, w)), torch.empty((n_, 1, ho, wo))
        perm1, index1 = scratch("perm1", n1, torch.int64), scratch("index1", n1, torch.int32)
        perm2, index2 = scratch("perm2", n2, torch.int64), scratch("index2", n2, torch.int32)
        counts = scratch("counts", 2, torch.int64)
        rc = self._masks(_ptr(taps), n_, h, w, taps.shape[1] // 9, int(stride), float(bias1), float(bias2),
                         int(k1), int(k2), int(grid_interval), _ptr(l1), _ptr(l2), _ptr(m1), _ptr(m2),
                         _ptr(perm1), _ptr(index1), _ptr(perm2), _ptr(index2), _ptr(counts),
                         torch.get_num_threads())
        self._check(rc, "threshold_masks")
        c1, c2 = (int(v) for v in counts.tolist())
        return (l1.view(n_, 1, h, w), l2.view(n_, 1, ho, wo), m1, m2, (perm1, c1, index1),
                (perm2, c2, index2))

    def patches3x3(self, src: torch.Tensor, shape: tuple[int, int, int], positions: torch.Tensor,
                   out_hw: tuple[int, int], stride: int,
                   offsets: torch.Tensor | None = None,
                   out: torch.Tensor | None = None) -> torch.Tensor:
        """3x3 patches (padding 1) of dense rows ``src`` [N*H*W, C] at ``positions`` (flat over
        N*Ho*Wo): float32 [P, 9*C], tap-major; ``offsets`` [P, 18]: deformable v1 taps."""
        n_, h, w = shape
        ho, wo = out_hw
        c = src.shape[1]
        src = _f32(src)
        if src.shape[0] != n_ * h * w:
            raise SSIError(f"native patches3x3: src has {src.shape[0]} rows for {n_}x{h}x{w} positions")
        positions = _typed(positions, torch.int64).reshape(-1)
        p = positions.numel()
        if offsets is not None:
            offsets = _f32(offsets)
            if tuple(offsets.shape) != (p, 18):
                raise SSIError(f"native patches3x3: offsets must be {(p, 18)}, got {tuple(offsets.shape)}")
        if not (out is not None and out.dtype == torch.float32 and out.device.type == "cpu"
                and out.is_contiguous() and tuple(out.shape) == (p, 9 * c)
                and not any(_overlaps(out, t) for t in (src, positions, offsets))):
            out = torch.empty((p, 9 * c), dtype=torch.float32)
        rc = self._patches(_ptr(src), n_, h, w, c, _ptr(positions), p, ho, wo, int(stride), _ptr(offsets),
                           _ptr(out), torch.get_num_threads())
        self._check(rc, "patches3x3")
        return out


def _load() -> NativeBlock:
    from . import cpu_twins

    return NativeBlock(cpu_twins.load())


def available() -> NativeBlock | None:
    """The native kernels, or None (``SSI_NATIVE_BLOCK=0``, or the library is unavailable)."""
    global _native, _failed
    if os.environ.get(ENV, "1").strip() == "0":
        return None
    if _native is not None or _failed is not None:
        return _native
    with _lock:
        if _native is None and _failed is None:
            try:
                _native = _load()
            except (SSIError, OSError, AttributeError) as e:  # AttributeError: an older library
                _failed = str(e)
                warnings.warn(f"native SSIBottleneck kernels unavailable ({_failed}); using the slower "
                              f"PyTorch path", RuntimeWarning, stacklevel=2)
    return _native
