#!/usr/bin/env python3
"""GPU check of the native SSI kernels (plugins/src/cuda) on a CUDA machine.

1. Each kernel (through libssi_cuda.so, ctypes, raw device pointers of torch tensors) against
   the PyTorch ops torch.ops.ssi.*: fp32 and fp16, fresh random shapes, masks and parameters,
   outputs poisoned with NaN first, unsampled values poisoned with NaN (they must never be read).
   Error metric: ||out - ref|| / ||ref|| against the op evaluated in float32 on the same inputs.
2. A whole SSI bottleneck (mask/offset conv in cuDNN, then SampleMask x2, SparseConv2d conv1,
   GaussianInterp, deformable SparseConv2d conv2, SparseConv2d conv3, GaussianInterp with bias,
   residual and ReLU) through the kernels, eager and inside a CUDA graph, against the same
   pipeline in torch.ops.ssi (float32).
3. Timing of that bottleneck (CUDA graph replays, median of CUDA-event times, three input sets
   in rotation) against the dense bottleneck in cuDNN (fp16, channels-last, CUDA graph) on the
   ResNet-101 layer2/3/4 shapes of a 1000x1667 image (padded to 1024x1696), densities 0.05..1.

Writes gpu_check.json to --out ($OUT) and prints a short table last. Exit status 1 when a
check fails. `--cpu-dry-run` runs the checks' logic on the CPU through the CPU twins (no GPU,
no timing): it checks this script, not the CUDA kernels.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ssi_deploy.ops  # noqa: E402,F401  (registers torch.ops.ssi.*)
from ssi_deploy.ops import contract as C  # noqa: E402
from ssi_deploy.ops.sparse_conv import conv_output_size  # noqa: E402

DT = {torch.float32: 0, torch.float16: 1}
RESULTS: dict = {"checks": [], "bottleneck": [], "timing": [], "failures": []}
REF_DEVICE: str | None = None  # where the kernel checks evaluate torch.ops.ssi (None: the kernels' device)


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------
# Kernel back ends: the CUDA shim (ctypes) and, for --cpu-dry-run, the CPU twins.

class CudaKernels:
    """libssi_cuda.so over torch tensors; outputs and workspaces are passed in (graph-friendly)."""

    def __init__(self, path: Path, emulated: bool = False):
        lib = ctypes.CDLL(str(path))
        p, i32, u64, f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint64, ctypes.c_float
        ip = ctypes.POINTER(i32)
        lib.ssi_cuda_abi_version.restype = i32
        lib.ssi_cuda_error_string.restype = ctypes.c_char_p
        lib.ssi_cuda_error_string.argtypes = [i32]
        lib.ssi_cuda_sample_mask.argtypes = [p, p, i32, ip, p, u64]
        lib.ssi_cuda_sparse_conv2d_workspace_size.argtypes = [ip, i32]
        lib.ssi_cuda_sparse_conv2d_workspace_size.restype = u64
        lib.ssi_cuda_sparse_conv2d.argtypes = [p, p, p, p, p, p, i32, ip, p, u64]
        lib.ssi_cuda_gaussian_interp.argtypes = [p, p, p, p, p, i32, i32, i32, i32, i32, f32, i32, p, u64]
        lib.ssi_cuda_device_synchronize.restype = i32
        for fn in (lib.ssi_cuda_sample_mask, lib.ssi_cuda_sparse_conv2d, lib.ssi_cuda_gaussian_interp):
            fn.restype = i32
        lib.ssi_cuda_is_emulation.restype = i32
        assert lib.ssi_cuda_abi_version() == 1
        if bool(lib.ssi_cuda_is_emulation()) != emulated:
            kind = "a GPU build" if emulated else "the host emulation"
            raise SystemExit(f"gpu_check: {path} is {kind} of the kernels: wrong library for this mode")
        self.lib = lib
        self.emulated = emulated
        self.device = torch.device("cpu" if emulated else "cuda")

    def _rc(self, name: str, rc: int) -> None:
        if rc != 0:
            raise RuntimeError(f"{name} returned {rc}: {self.lib.ssi_cuda_error_string(rc).decode()}")

    @staticmethod
    def _p(t):
        return None if t is None else ctypes.c_void_p(t.data_ptr())

    def _stream(self) -> int:
        return 0 if self.emulated else torch.cuda.current_stream().cuda_stream

    def synchronize(self) -> None:
        if not self.emulated:
            torch.cuda.synchronize()
        self._rc("cudaDeviceSynchronize (shim runtime)", self.lib.ssi_cuda_device_synchronize())

    def sample_mask(self, logits, out, mode, grid, seed, layer):
        n, _, h, w = logits.shape
        prm = (ctypes.c_int32 * 7)(n, h, w, mode, grid, seed, layer)
        self._rc("launchSampleMask", self.lib.ssi_cuda_sample_mask(
            self._p(logits), self._p(out), DT[logits.dtype], prm, None, self._stream()))

    def conv_params(self, x, weight, offset, a):
        n, cin, h, w = x.shape
        cout, _, kh, kw = weight.shape
        ho = conv_output_size(h, kh, a["stride_h"], a["pad_h"], a["dilation_h"])
        wo = conv_output_size(w, kw, a["stride_w"], a["pad_w"], a["dilation_w"])
        return (ctypes.c_int32 * 18)(n, cin, h, w, cout, kh, kw, ho, wo, a["stride_h"], a["stride_w"], a["pad_h"],
                                     a["pad_w"], a["dilation_h"], a["dilation_w"], a["groups"], a["relu"],
                                     int(offset is not None))

    def conv_workspace(self, x, weight, offset, a):
        size = self.lib.ssi_cuda_sparse_conv2d_workspace_size(self.conv_params(x, weight, offset, a), DT[x.dtype])
        return torch.empty(max(int(size), 256), dtype=torch.uint8, device=self.device)

    def sparse_conv2d(self, x, weight, bias, mask, offset, y, a, ws):
        prm = self.conv_params(x, weight, offset, a)
        self._rc("launchSparseConv2d", self.lib.ssi_cuda_sparse_conv2d(
            self._p(x), self._p(weight), self._p(bias), self._p(mask), self._p(offset), self._p(y),
            DT[x.dtype], prm, self._p(ws), self._stream()))

    def gaussian_interp(self, values, mask, bias, residual, out, sigma, relu):
        n, c, h, w = values.shape
        self._rc("launchGaussianInterp", self.lib.ssi_cuda_gaussian_interp(
            self._p(values), self._p(mask), self._p(bias), self._p(residual), self._p(out), DT[values.dtype],
            n, c, h, w, float(sigma), int(relu), None, self._stream()))


class CpuTwinKernels:
    """Same interface over the CPU twins (only to dry-run this script without a GPU)."""

    def __init__(self):
        from ssi_deploy.native import cpu_twins
        self.t = cpu_twins
        self.device = torch.device("cpu")

    def synchronize(self) -> None:
        pass

    def sample_mask(self, logits, out, mode, grid, seed, layer):
        out.copy_(self.t.sample_mask(logits, mode, grid, seed, layer))

    def conv_workspace(self, x, weight, offset, a):
        return torch.empty(256, dtype=torch.uint8)

    def sparse_conv2d(self, x, weight, bias, mask, offset, y, a, ws):
        y.copy_(self.t.sparse_conv2d(x, weight, bias, mask, offset, **a))

    def gaussian_interp(self, values, mask, bias, residual, out, sigma, relu):
        out.copy_(self.t.gaussian_interp(values, mask, bias, residual, sigma, relu))


# ------------------------------------------------------------------------------------------
# Helpers

def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    den = ref.norm().item()
    num = (out - ref).norm().item()
    if den == 0.0:
        return num
    return num / den


def record(kind: str, name: str, ok: bool, **info) -> None:
    entry = {"kind": kind, "name": name, "ok": bool(ok), **info}
    RESULTS["checks"].append(entry)
    if not ok:
        RESULTS["failures"].append(entry)
    extra = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
    log(f"  [{'ok' if ok else 'FAIL'}] {kind} {name} {extra}")


def blob_mask(n: int, h: int, w: int, density: float, g: torch.Generator, device) -> torch.Tensor:
    """Spatially coherent {0,1} mask of about `density` (smooth noise thresholded at a quantile)."""
    lo = torch.rand(n, 1, max(2, h // 8), max(2, w // 8), generator=g)
    field = F.interpolate(lo, size=(h, w), mode="bilinear", align_corners=False)
    field = field + 0.05 * torch.rand(n, 1, h, w, generator=g)
    if density >= 1.0:
        return torch.ones(n, 1, h, w, device=device)
    q = torch.quantile(field.reshape(n, -1), 1.0 - density, dim=1).view(n, 1, 1, 1)
    return (field > q).float().to(device)


def make_mask(kind: str, n: int, h: int, w: int, g: torch.Generator, device) -> torch.Tensor:
    if kind == "empty":
        return torch.zeros(n, 1, h, w, device=device)
    if kind == "full":
        return torch.ones(n, 1, h, w, device=device)
    if kind == "hard":
        return (torch.rand(n, 1, h, w, generator=g) < 0.3).float().to(device)
    if kind == "soft":
        r = torch.rand(n, 1, h, w, generator=g)
        m = torch.where(r < 0.4, 0.55 + r, torch.zeros(()))
        m[r < 0.1] = 1.0
        return m.to(device)
    if kind == "blob":
        return blob_mask(n, h, w, 0.25, g, device)
    raise ValueError(kind)


def randint(g, lo, hi):
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def fp_bounds():
    """tests/fp_bounds.py: the float32 error bounds derived from the arithmetic, shared with the tests."""
    mod = sys.modules.get("fp_bounds")
    if mod is None:
        spec = importlib.util.spec_from_file_location("fp_bounds", REPO / "tests" / "fp_bounds.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["fp_bounds"] = mod
        spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------
# 1. Kernel checks

def check_sample_mask(K, g, dtype, small: bool) -> None:
    dev = K.device
    for mode in (C.MODE_THRESHOLD, C.MODE_STOCHASTIC, C.MODE_OFFICIAL):
        for grid in (0, C.GRID_PRIOR_INTERVAL):
            n, h, w = 2, randint(g, 5, 60 if small else 300), randint(g, 5, 60 if small else 300)
            seed, layer = randint(g, -1000, 100000), randint(g, 0, 100)
            logits = (torch.randn(n, 1, h, w, generator=g) * 3).to(dtype)
            logits[0, 0, 0, : min(w, 4)] = 0.0
            out = torch.full((n, 1, h, w), float("nan"), dtype=dtype, device=dev)
            K.sample_mask(logits.to(dev), out, mode, grid, seed, layer)
            K.synchronize()
            ref = torch.ops.ssi.sample_mask(logits, mode, grid, seed, layer)  # CPU reference
            got = out.cpu()
            both = (got > 0) & (ref > 0)
            vdiff = (got.float()[both] - ref.float()[both]).abs().max().item() if both.any() else 0.0
            # Threshold must agree exactly. The random modes may flip a position only where its
            # exact decision value lies within the derived float32 rounding band of the threshold,
            # and official soft values must be within the bound derived from the libm (logf,
            # expf) ulps and the 1/T amplification (tests/fp_bounds.py, sample_mask_bound).
            r = fp_bounds().sample_mask_errors(got, ref, logits, mode, grid, seed, layer)
            ok = r["ok"] and (mode != C.MODE_THRESHOLD or torch.equal(got, ref))
            record("SampleMask", f"{str(dtype)[6:]} mode={mode} grid={grid} {n}x{h}x{w}", ok,
                   flips=r["flips"], flips_outside_band=r["flips_outside_band"], max_value_diff=vdiff,
                   value_vs_bound=r["value_ratio"], nan=r["nan"], density=float((got > 0).float().mean()))


# (cin, cout, k, stride, pad, dilation, groups, deformable, relu)
CONV_CASES = [
    (16, 24, 1, 1, 0, 1, 1, False, 1),
    (8, 12, 1, 2, 0, 1, 1, False, 0),
    (12, 10, 3, 1, 1, 1, 1, False, 1),
    (12, 8, 3, 2, 1, 1, 4, False, 1),
    (6, 9, 3, 1, 2, 2, 1, False, 0),
    (10, 11, 3, 1, 1, 1, 1, True, 1),
    (64, 64, 1, 1, 0, 1, 1, False, 1),      # fp16: tensor cores
    (96, 72, 3, 1, 1, 1, 1, False, 1),      # tensor cores, partial N tile, 3 K chunks
    (80, 136, 3, 2, 1, 1, 1, False, 0),     # tensor cores, strided, partial K chunk
    (64, 48, 3, 1, 2, 2, 1, False, 0),      # tensor cores, dilated
    (128, 128, 3, 1, 1, 1, 1, True, 1),     # tensor cores, deformable
    (96, 64, 3, 2, 1, 1, 1, True, 0),       # tensor cores, deformable, strided
    (64, 64, 3, 1, 1, 1, 2, False, 1),      # tensor cores, grouped
    (64, 64, 3, 1, 1, 1, 8, False, 0),      # grouped below the tensor-core width
    (32, 32, 3, 1, 1, 1, 32, False, 0),     # depthwise
    (40, 260, 1, 1, 0, 1, 1, False, 0),     # 5 N tiles
    (256, 64, 3, 1, 1, 1, 1, False, 1),     # long K: split over blocks (72 steps)
    (192, 48, 3, 2, 1, 1, 1, True, 0),      # long K, deformable, strided
    (512, 96, 3, 1, 1, 1, 2, False, 0),     # long K, grouped
    (1024, 72, 1, 1, 0, 1, 1, False, 1),    # long K, 1x1
]


def check_sparse_conv(K, g, dtype, small: bool) -> None:
    dev = K.device
    kinds = ["hard", "soft", "blob", "empty", "full"]
    for ci, (cin, cout, k, s, p, d, groups, deform, relu) in enumerate(CONV_CASES):
        for kind in (kinds if ci < 2 else [kinds[ci % 3], "full" if ci % 2 else "empty"][:1 if small else 2]):
            n = 2
            h, w = randint(g, 9, 24 if small else 70), randint(g, 9, 24 if small else 90)
            a = dict(stride_h=s, stride_w=s, pad_h=p, pad_w=p, dilation_h=d, dilation_w=d, groups=groups, relu=relu)
            ho, wo = conv_output_size(h, k, s, p, d), conv_output_size(w, k, s, p, d)
            x = torch.randn(n, cin, h, w, generator=g)
            wt = torch.randn(cout, cin // groups, k, k, generator=g) / math.sqrt(cin // groups * k * k)
            b = torch.randn(cout, generator=g) * 0.1
            m = make_mask(kind, n, ho, wo, g, "cpu")
            off = torch.randn(n, 2 * k * k, ho, wo, generator=g) * 1.5 if deform else None
            xs, ws_, bs, ms, offs = (None if t is None else t.to(dtype) for t in (x, wt, b, m, off))
            rdev = REF_DEVICE or dev
            ref = torch.ops.ssi.sparse_conv2d(*(None if t is None else t.float().to(rdev)
                                                for t in (xs, ws_, bs, ms, offs)), **a).to(dev)
            y = torch.full((n, cout, ho, wo), float("nan"), dtype=dtype, device=dev)
            wsp = K.conv_workspace(xs, ws_, offs, a)
            args = [None if t is None else t.to(dev) for t in (xs, ws_, bs, ms, offs)]
            K.sparse_conv2d(*args, y, a, wsp)
            K.synchronize()
            nan = bool(torch.isnan(y).any())
            zeros_ok = bool((y[(args[3] <= 0).expand_as(y)] == 0).all())
            err = rel_err(y.float(), ref)
            tol = 1e-5 if dtype == torch.float32 else 5e-3
            ok = not nan and zeros_ok and err <= tol
            record("SparseConv2d", f"{str(dtype)[6:]} case{ci} cin={cin} cout={cout} k={k} s={s} d={d} g={groups} "
                   f"deform={int(deform)} mask={kind} {n}x{h}x{w}", ok, rel_err=err, nan=nan, zeros_ok=zeros_ok)


def check_interp(K, g, dtype, small: bool) -> None:
    dev = K.device
    configs = [("hard", False, 0, 3.0), ("soft", True, 1, 3.0), ("blob", True, 0, 1.0), ("empty", False, 1, 3.0),
               ("full", True, 1, 0.5), ("soft", False, 0, 0.7)]
    for kind, residual, relu, sigma in configs:
        n, c = 2, randint(g, 1, 70)
        h, w = randint(g, 5, 40 if small else 150), randint(g, 5, 40 if small else 150)
        vals = torch.randn(n, c, h, w, generator=g)
        m = make_mask(kind, n, h, w, g, "cpu")
        vals[(m == 0).expand_as(vals)] = float("nan")  # must never be read
        b = torch.randn(c, generator=g)
        res = torch.randn(n, c, h, w, generator=g) if residual else None
        cast = [None if t is None else t.to(dtype) for t in (vals, m, b, res)]
        rdev = REF_DEVICE or dev
        ref = torch.ops.ssi.gaussian_interp(*(None if t is None else t.float().to(rdev) for t in cast), sigma,
                                            relu).to(dev)
        out = torch.full((n, c, h, w), float("nan"), dtype=dtype, device=dev)
        args = [None if t is None else t.to(dev) for t in cast]
        K.gaussian_interp(*args, out, sigma, relu)
        K.synchronize()
        nan = bool(torch.isnan(out).any())
        err = rel_err(out.float(), ref)
        tol = 1e-5 if dtype == torch.float32 else 2e-3
        record("GaussianInterp", f"{str(dtype)[6:]} mask={kind} res={int(residual)} relu={relu} sigma={sigma} "
               f"{n}x{c}x{h}x{w}", not nan and err <= tol, rel_err=err, nan=nan)


def check_edge_shapes(K, g, dtype, small: bool) -> None:
    """Degenerate and tile-boundary shapes: 1-pixel maps, exact tile multiples, 1x1 outputs."""
    dev, rdev = K.device, REF_DEVICE or K.device
    tol_i, tol_c = (1e-5, 1e-5) if dtype == torch.float32 else (2e-3, 5e-3)
    for h, w in [(1, 1), (1, 37), (33, 1), (32, 32), (64, 65)]:
        c = randint(g, 1, 40)
        v = torch.randn(2, c, h, w, generator=g).to(dtype)
        m = (torch.rand(2, 1, h, w, generator=g) < 0.5).to(dtype)
        b, r = torch.randn(c, generator=g).to(dtype), torch.randn(2, c, h, w, generator=g).to(dtype)
        out = torch.full((2, c, h, w), float("nan"), dtype=dtype, device=dev)
        K.gaussian_interp(v.to(dev), m.to(dev), b.to(dev), r.to(dev), out, 3.0, 1)
        K.synchronize()
        ref = torch.ops.ssi.gaussian_interp(*(t.float().to(rdev) for t in (v, m, b, r)), 3.0, 1).to(dev)
        err = rel_err(out.float(), ref)
        nan = bool(torch.isnan(out).any())
        record("GaussianInterp", f"{str(dtype)[6:]} edge 2x{c}x{h}x{w}", not nan and err <= tol_i, rel_err=err, nan=nan)
    for h, w, k, pad, deform in [(3, 3, 3, 0, False), (1, 1, 1, 0, False), (2, 5, 3, 1, True), (1, 1, 3, 1, True),
                                 (65, 64, 1, 0, False)]:
        cin, cout = (3, 5) if h < 3 else (64, 80)
        x = torch.randn(2, cin, h, w, generator=g).to(dtype)
        wt = (torch.randn(cout, cin, k, k, generator=g) / math.sqrt(cin * k * k)).to(dtype)
        b = torch.randn(cout, generator=g).to(dtype)
        ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        m = (torch.rand(2, 1, ho, wo, generator=g) < 0.6).to(dtype)
        off = torch.randn(2, 2 * k * k, ho, wo, generator=g).to(dtype) if deform else None
        a = dict(stride_h=1, stride_w=1, pad_h=pad, pad_w=pad, dilation_h=1, dilation_w=1, groups=1, relu=0)
        y = torch.full((2, cout, ho, wo), float("nan"), dtype=dtype, device=dev)
        args = [None if t is None else t.to(dev) for t in (x, wt, b, m, off)]
        K.sparse_conv2d(*args, y, a, K.conv_workspace(args[0], args[1], args[4], a))
        K.synchronize()
        ref = torch.ops.ssi.sparse_conv2d(*(None if t is None else t.float().to(rdev) for t in (x, wt, b, m, off)),
                                          **a).to(dev)
        err = rel_err(y.float(), ref)
        nan = bool(torch.isnan(y).any())
        record("SparseConv2d", f"{str(dtype)[6:]} edge cin={cin} cout={cout} k={k} pad={pad} deform={int(deform)} "
               f"2x{h}x{w}", not nan and err <= tol_c, rel_err=err, nan=nan)


# ------------------------------------------------------------------------------------------
# 2. The SSI bottleneck (identity shortcut, stride 1, deformable conv2) and its dense twin

class Bottleneck:
    """Weights of one ResNet bottleneck with BN folded in (fp16 or fp32) plus the SSI extras."""

    def __init__(self, cin: int, planes: int, g: torch.Generator, dtype, device):
        def t(*shape, scale=1.0):
            return (torch.randn(*shape, generator=g) * scale).to(dtype).to(device)
        p = planes
        self.cin, self.p = cin, p
        self.w1, self.b1 = t(p, cin, 1, 1, scale=1 / math.sqrt(cin)), t(p, scale=0.1)
        self.w2, self.b2 = t(p, p, 3, 3, scale=1 / math.sqrt(9 * p)), t(p, scale=0.1)
        self.w3, self.b3 = t(4 * p, p, 1, 1, scale=0.5 / math.sqrt(p)), t(4 * p, scale=0.1)
        # mask conv 1, mask conv 2, offset conv (18): one 3x3 conv with 20 outputs (stride 1).
        self.wm = t(20, cin, 3, 3, scale=0.3 / math.sqrt(9 * cin))
        self.bm = t(20, scale=0.1)
        self.zeros_p = torch.zeros(p, dtype=dtype, device=device)
        self.zeros_4p = torch.zeros(4 * p, dtype=dtype, device=device)
        self.sigma1, self.sigma2 = 3.0, 2.5


class SSIBuffers:
    def __init__(self, K, blk: Bottleneck, x: torch.Tensor):
        n, _, h, w = x.shape
        dt, dev = x.dtype, x.device
        self.x = x
        self.logit1 = torch.empty(n, 1, h, w, dtype=dt, device=dev)  # SampleMask inputs (set per density)
        self.logit2 = torch.empty(n, 1, h, w, dtype=dt, device=dev)
        self.m1 = torch.empty(n, 1, h, w, dtype=dt, device=dev)
        self.m2 = torch.empty(n, 1, h, w, dtype=dt, device=dev)
        self.y1 = torch.empty(n, blk.p, h, w, dtype=dt, device=dev)
        self.Y1 = torch.empty(n, blk.p, h, w, dtype=dt, device=dev)
        self.y2 = torch.empty(n, blk.p, h, w, dtype=dt, device=dev)
        self.z = torch.empty(n, 4 * blk.p, h, w, dtype=dt, device=dev)
        self.out = torch.empty(n, 4 * blk.p, h, w, dtype=dt, device=dev)
        self.off = torch.empty(n, 18, h, w, dtype=dt, device=dev)
        self.a1 = dict(stride_h=1, stride_w=1, pad_h=0, pad_w=0, dilation_h=1, dilation_w=1, groups=1, relu=1)
        self.a2 = dict(self.a1, pad_h=1, pad_w=1)
        self.a3 = dict(self.a1, relu=0)
        self.ws1 = K.conv_workspace(x, blk.w1, None, self.a1)
        self.ws2 = K.conv_workspace(self.Y1, blk.w2, self.off, self.a2)
        self.ws3 = K.conv_workspace(self.y2, blk.w3, None, self.a3)


def ssi_forward(K, blk: Bottleneck, B: SSIBuffers, mode=C.MODE_THRESHOLD):
    """The sparse order of the spec (section 2), all on the current stream, no host sync.

    Returns (out, offsets used by conv2)."""
    lg = F.conv2d(B.x, blk.wm, blk.bm, padding=1)  # mask logits (channels 0, 1) and DCN offsets
    off = lg[:, 2:]
    if not off.is_contiguous():  # batch > 1
        off = off.contiguous()
    # The mask convs' logits are computed (their cost counts) but SampleMask reads the logits
    # prepared for the density under test.
    K.sample_mask(B.logit1, B.m1, mode, C.GRID_PRIOR_INTERVAL, 1, 0)
    K.sample_mask(B.logit2, B.m2, mode, C.GRID_PRIOR_INTERVAL, 1, 1)
    K.sparse_conv2d(B.x, blk.w1, blk.b1, B.m1, None, B.y1, B.a1, B.ws1)
    K.gaussian_interp(B.y1, B.m1, blk.zeros_p, None, B.Y1, blk.sigma1, 0)
    K.sparse_conv2d(B.Y1, blk.w2, blk.b2, B.m2, off, B.y2, B.a2, B.ws2)
    K.sparse_conv2d(B.y2, blk.w3, blk.zeros_4p, B.m2, None, B.z, B.a3, B.ws3)
    K.gaussian_interp(B.z, B.m2, blk.b3, B.x, B.out, blk.sigma2, 1)
    return B.out, off


def ssi_reference(blk: Bottleneck, x, off, m1, m2) -> torch.Tensor:
    """The same pipeline through torch.ops.ssi in float32 with the given masks."""
    f = [t.float() for t in (x, off, m1, m2)]
    x, off, m1, m2 = f
    ops = torch.ops.ssi
    y1 = ops.sparse_conv2d(x, blk.w1.float(), blk.b1.float(), m1, None, relu=1)
    Y1 = ops.gaussian_interp(y1, m1, blk.zeros_p.float(), None, blk.sigma1, 0)
    y2 = ops.sparse_conv2d(Y1, blk.w2.float(), blk.b2.float(), m2, off, pad_h=1, pad_w=1, relu=1)
    z = ops.sparse_conv2d(y2, blk.w3.float(), blk.zeros_4p.float(), m2, None)
    return ops.gaussian_interp(z, m2, blk.b3.float(), x, blk.sigma2, 1)


def logits_for_density(n, h, w, density, g, dtype, device) -> torch.Tensor:
    m = blob_mask(n, h, w, density, g, "cpu")
    return torch.where(m > 0, 2.0, -2.0).to(dtype).to(device)


def check_bottleneck(K, g, dtype, graphs: bool) -> None:
    dev = K.device
    cin, p = 128, 32
    n, h, w = (1, 29, 37) if graphs else (2, 17, 23)
    blk = Bottleneck(cin, p, g, dtype, dev)
    x = torch.randn(n, cin, h, w, generator=g).to(dtype).to(dev)
    B = SSIBuffers(K, blk, x)
    B.logit1.copy_(logits_for_density(n, h, w, 0.3, g, dtype, dev))
    B.logit2.copy_(logits_for_density(n, h, w, 0.2, g, dtype, dev))
    out, off = ssi_forward(K, blk, B)
    out = out.clone()
    K.synchronize()
    ref = ssi_reference(blk, x, off, B.m1, B.m2)
    err = rel_err(out.float(), ref)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    info = dict(rel_err=err, density1=float((B.m1 > 0).float().mean()), density2=float((B.m2 > 0).float().mean()))
    ok = err <= tol and not torch.isnan(out).any()
    if graphs:
        B.out.fill_(float("nan"))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            ssi_forward(K, blk, B)
        graph.replay()
        K.synchronize()
        # Every output element is computed by one block in a fixed order (the compaction's
        # atomics only permute positions), so replays should match the eager run bit for bit;
        # cuDNN's offset conv could in principle pick another algorithm: allow rounding there.
        info["graph_equals_eager"] = bool(torch.equal(B.out, out))
        info["graph_vs_eager_rel"] = rel_err(B.out.float(), out.float())
        ok = ok and info["graph_vs_eager_rel"] <= (1e-6 if dtype == torch.float32 else 1e-3)
        # New masks, same graph: the sampled counts live on the device, nothing was baked in.
        B.logit1.copy_(logits_for_density(n, h, w, 0.6, g, dtype, dev))
        B.logit2.copy_(logits_for_density(n, h, w, 0.05, g, dtype, dev))
        B.out.fill_(float("nan"))
        graph.replay()
        K.synchronize()
        err2 = rel_err(B.out.float(), ssi_reference(blk, x, off, B.m1, B.m2))
        info.update(graph_new_masks_rel_err=err2, graph_new_density1=float((B.m1 > 0).float().mean()),
                    graph_new_density2=float((B.m2 > 0).float().mean()))
        ok = ok and err2 <= tol and not torch.isnan(B.out).any()
    record("Bottleneck", f"{str(dtype)[6:]} cin={cin} p={p} {n}x{h}x{w}{' (CUDA graph)' if graphs else ''}", ok,
           **info)
    RESULTS["bottleneck"].append({"dtype": str(dtype), **info, "ok": bool(ok)})


# ------------------------------------------------------------------------------------------
# 3. Timing

STAGES = [  # ResNet-101 on a 1000x1667 image padded to 1024x1696: non-first blocks of each layer
    ("layer2", 512, 128, 128, 212),
    ("layer3", 1024, 256, 64, 106),
    ("layer4", 2048, 512, 32, 53),
]
DENSITIES = [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0]


def time_graphs(graphs, reps: int) -> list[float]:
    for gr in graphs:  # warm-up
        gr.replay()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        starts[i].record()
        graphs[i % len(graphs)].replay()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def capture(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()  # eager warm-up on the side stream (cuDNN algorithm choice, lazy module loading)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def copy_bandwidth() -> float:
    a = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return 2 * a.numel() / (statistics.median(ts) * 1e-3) / 1e12  # TB/s, read + write


def run_timing(K, g, reps: int, sets: int) -> None:
    dev, dt = K.device, torch.float16
    torch.backends.cudnn.benchmark = True
    bw = copy_bandwidth()
    RESULTS["copy_bandwidth_TBps"] = bw
    log(f"device-to-device copy: {bw:.2f} TB/s (read + write)")
    for name, cin, p, h, w in STAGES:
        blk = Bottleneck(cin, p, g, dt, dev)
        xs = [torch.randn(1, cin, h, w, generator=g).to(dt).to(dev) for _ in range(sets)]
        # Dense twin in cuDNN: fp16 channels-last, folded BN, plain 3x3 conv2 (cuDNN has no
        # deformable conv: this favours the dense side), residual add and ReLU.
        dw = [t.contiguous(memory_format=torch.channels_last) for t in (blk.w1, blk.w2, blk.w3)]
        xcl = [x.contiguous(memory_format=torch.channels_last) for x in xs]

        def dense(x):
            y = F.conv2d(x, dw[0], blk.b1).relu_()
            y = F.conv2d(y, dw[1], blk.b2, padding=1).relu_()
            return F.conv2d(y, dw[2], blk.b3).add_(x).relu_()

        dense_graphs = [capture(lambda x=x: dense(x)) for x in xcl]
        t_dense = statistics.median(time_graphs(dense_graphs, reps))
        macs = h * w * (cin * p + 9 * p * p + p * 4 * p)
        bufs = [SSIBuffers(K, blk, x) for x in xs]
        for density in DENSITIES:
            for B in bufs:
                B.logit1.copy_(logits_for_density(1, h, w, density, g, dt, dev))
                B.logit2.copy_(logits_for_density(1, h, w, density, g, dt, dev))
            ssi_graphs = [capture(lambda B=B: ssi_forward(K, blk, B)) for B in bufs]
            K.synchronize()
            times = time_graphs(ssi_graphs, reps)
            t_ssi = statistics.median(times)
            d1 = float((bufs[0].m1 > 0).float().mean())
            d2 = float((bufs[0].m2 > 0).float().mean())
            # Floor of the SSI block: read x (mask conv, conv1 gather, residual) once, write out once.
            floor_ms = (cin + 4 * p) * h * w * 2 / (bw * 1e12) * 1e3
            row = dict(stage=name, cin=cin, planes=p, h=h, w=w, density=density, density_m1=d1, density_m2=d2,
                       dense_ms=t_dense, ssi_ms=t_ssi, speedup=t_dense / t_ssi,
                       ssi_ms_p10=sorted(times)[len(times) // 10], ssi_ms_p90=sorted(times)[9 * len(times) // 10],
                       dense_tflops=2 * macs / (t_dense * 1e-3) / 1e12, ssi_bytes_floor_ms=floor_ms)
            RESULTS["timing"].append(row)
            log(f"  {name} density {density:.2f} (m1 {d1:.3f}, m2 {d2:.3f}): dense {t_dense:.3f} ms, "
                f"SSI {t_ssi:.3f} ms, x{t_dense / t_ssi:.2f}")
            del ssi_graphs
        del dense_graphs, bufs
        torch.cuda.empty_cache()


def breakdown(K, g) -> None:
    """Per-op times of one SSI bottleneck (eager launches, events between them) at density 0.2."""
    dev, dt = K.device, torch.float16
    out = []
    for name, cin, p, h, w in STAGES:
        blk = Bottleneck(cin, p, g, dt, dev)
        x = torch.randn(1, cin, h, w, generator=g).to(dt).to(dev)
        B = SSIBuffers(K, blk, x)
        B.logit1.copy_(logits_for_density(1, h, w, 0.2, g, dt, dev))
        B.logit2.copy_(logits_for_density(1, h, w, 0.2, g, dt, dev))
        steps = [
            ("mask+offset conv (cuDNN)", lambda: F.conv2d(B.x, blk.wm, blk.bm, padding=1)),
            ("SampleMask x2", lambda: (K.sample_mask(B.logit1, B.m1, 0, 11, 1, 0),
                                       K.sample_mask(B.logit2, B.m2, 0, 11, 1, 1))),
            ("conv1 1x1", lambda: K.sparse_conv2d(B.x, blk.w1, blk.b1, B.m1, None, B.y1, B.a1, B.ws1)),
            ("interp1", lambda: K.gaussian_interp(B.y1, B.m1, blk.zeros_p, None, B.Y1, blk.sigma1, 0)),
            ("conv2 3x3 deform", lambda: K.sparse_conv2d(B.Y1, blk.w2, blk.b2, B.m2, B.off, B.y2, B.a2, B.ws2)),
            ("conv3 1x1", lambda: K.sparse_conv2d(B.y2, blk.w3, blk.zeros_4p, B.m2, None, B.z, B.a3, B.ws3)),
            ("interp2+bias+res+relu", lambda: K.gaussian_interp(B.z, B.m2, blk.b3, B.x, B.out, blk.sigma2, 1)),
        ]
        B.off.copy_(F.conv2d(B.x, blk.wm, blk.bm, padding=1)[:, 2:])
        for _ in range(3):
            for _, fn in steps:
                fn()
        torch.cuda.synchronize()
        times = {k: [] for k, _ in steps}
        for _ in range(20):
            for k, fn in steps:
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                times[k].append((s, e))
        torch.cuda.synchronize()
        row = {"stage": name, **{k: statistics.median(s.elapsed_time(e) for s, e in v) for k, v in times.items()}}
        # Fewest bytes each op must move (fp16; d = sampled fraction of m1 / m2), for GB/s.
        hw, d1, d2 = h * w, float((B.m1 > 0).float().mean()), float((B.m2 > 0).float().mean())
        mb = {"mask+offset conv (cuDNN)": (cin + 20) * hw * 2, "SampleMask x2": 4 * hw * 2,
              "conv1 1x1": (d1 * cin + p + 1) * hw * 2, "interp1": (d1 * p + 1 + p) * hw * 2,
              "conv2 3x3 deform": (min(1.0, 9 * d2) * p + 18 * d2 + p + 1) * hw * 2,
              "conv3 1x1": (d2 * p + 4 * p + 1) * hw * 2, "interp2+bias+res+relu": (d2 * 4 * p + 8 * p + 1) * hw * 2}
        row["GBps"] = {k: mb[k] / (row[k] * 1e-3) / 1e9 for k in mb}
        out.append(row)
        log(f"  {name} per-op ms (GB/s) at density 0.2: " + ", ".join(
            f"{k} {row[k]:.3f} ({row['GBps'][k]:.0f})" for k in mb))
    RESULTS["breakdown_density_0.2"] = out


# ------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", type=Path, default=REPO / "build" / "gpu_check" / "lib" / "libssi_cuda.so")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    ap.add_argument("--checks-only", action="store_true", help="skip the timing")
    ap.add_argument("--small", action="store_true", help="small shapes (e.g. under compute-sanitizer)")
    ap.add_argument("--reps", type=int, default=60, help="timed graph replays per configuration")
    ap.add_argument("--ref-cpu", action="store_true",
                    help="evaluate the kernel checks' references on the CPU (fewer GPU kernels under a sanitizer)")
    ap.add_argument("--no-graphs", action="store_true", help="no CUDA graph (e.g. without the caching allocator)")
    ap.add_argument("--cpu-dry-run", action="store_true", help="run the checks' logic on the CPU twins")
    ap.add_argument("--emulated", type=Path, default=None, metavar="LIB",
                    help="run the checks on the CPU through libssi_cuda_emu.so (the CUDA sources on host fibers)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    args = ap.parse_args()

    global REF_DEVICE
    REF_DEVICE = "cpu" if args.ref_cpu else None
    seed = args.seed if args.seed is not None else int(time.time_ns() % 2**31)
    g = torch.Generator().manual_seed(seed)
    RESULTS["seed"] = seed
    if args.cpu_dry_run:
        K = CpuTwinKernels()
        RESULTS["device"] = "cpu (dry run through the CPU twins)"
    elif args.emulated:
        K = CudaKernels(args.emulated, emulated=True)
        RESULTS["device"] = "cpu (CUDA kernel sources emulated on host fibers)"
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device visible to PyTorch (use --cpu-dry-run to test the script)")
            return 2
        if not args.lib.is_file():
            print(f"gpu_check: {args.lib} not found: build it with scripts/gpu_check.sh")
            return 2
        K = CudaKernels(args.lib)
        RESULTS["device"] = torch.cuda.get_device_name()
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 references in float32
        torch.backends.cudnn.allow_tf32 = False
    log(f"device: {RESULTS['device']}, torch {torch.__version__}, seed {seed}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sections = [("kernel checks", lambda: [fn(K, g, dt, args.small) for dt in (torch.float32, torch.float16)
                                          for fn in (check_sample_mask, check_sparse_conv, check_interp,
                                                     check_edge_shapes)]),
                ("bottleneck", lambda: [check_bottleneck(K, g, dt, not (host or args.no_graphs))
                                        for dt in (torch.float32, torch.float16)])]
    host = args.cpu_dry_run or args.emulated is not None
    if not (args.checks_only or host):
        sections += [("per-op breakdown", lambda: breakdown(K, g)),
                     ("timing", lambda: run_timing(K, g, args.reps, sets=3))]
    for name, fn in sections:
        log(f"== {name}")
        try:
            fn()
        except Exception as e:  # keep going: later sections still report
            traceback.print_exc()
            RESULTS["failures"].append({"kind": name, "name": "exception", "error": f"{type(e).__name__}: {e}"})
            if name == "kernel checks" and "illegal" in str(e).lower():
                break  # the context is gone
        RESULTS["seconds"] = time.time() - t0
        (args.out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1))  # after every section

    checks = RESULTS["checks"]
    log("")
    log(f"checks: {sum(c['ok'] for c in checks)}/{len(checks)} passed, {len(RESULTS['failures'])} failure(s); "
        f"{RESULTS['seconds']:.0f} s; json: {args.out / 'gpu_check.json'}")
    for f in RESULTS["failures"][:10]:
        log(f"  FAIL {f.get('kind')} {f.get('name')} {f.get('rel_err', f.get('error', ''))}")
    if RESULTS["timing"]:
        log(f"{'stage':7} {'density':>7} {'m2':>6} {'dense ms':>9} {'SSI ms':>8} {'speedup':>7}")
        for r in RESULTS["timing"]:
            log(f"{r['stage']:7} {r['density']:7.2f} {r['density_m2']:6.3f} {r['dense_ms']:9.3f} {r['ssi_ms']:8.3f} "
                f"{r['speedup']:7.2f}")
    return 1 if RESULTS["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
