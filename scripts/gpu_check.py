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
4. The fused SSIBottleneck (one launchSSIBottleneck per block, scripts/gpu_block_check.py):
   random shapes (batch 1 and 3, odd sizes, stride 1/2, DCN and downsample on/off, sampling
   modes 0/1/2, forced density, empty and full masks, NCHW and channels-last), fp32 and fp16,
   outputs and workspace poisoned: masks = SampleMask of the kernels' own logits, partitions
   exact, y = the PyTorch op (run_block) with the kernels' masks; fp16 on every GEMM path
   (portable, SSI_BLOCK_GEMM=sm90 where the library has the Hopper GEMMs, and regs: the portable
   GEMMs off their cp.async pipeline, bit for bit the portable path's). A chain of 4
   blocks in one CUDA graph equals its eager launches bit for bit. Timing per stage of
   ResNet-101-DCN (800x1216 and 992x1664, batch 1 and 8, forced densities 0.05..1) against the
   dense bottleneck in cuDNN (fp16 channels-last; DCN through torchvision's deform_conv2d and as
   an ideal regular 3x3), the strided first blocks, and the backbone as the sum of measured block
   times; at batch 1 and the backbone densities also the deployed threshold mode at about the
   forced density (PATH-thr: the mask biases lowered by the forced run's k-th largest logits, so
   no tap-sum or k-th largest kernel); --block-budget bounds it (configurations past it are
   skipped and listed; every configuration runs at the backbone densities before the sweep's
   other densities, so a budget that runs out costs the sweep, not the goal's figures). Plot:
   block_latency.png. Then a per-kernel breakdown of one non-first block per stage (800x1216,
   batch 1, density 0.26, forced and threshold; CUPTI kernel records through torch.profiler):
   where the time goes, beside the block's launches x one tiny kernel's time in a CUDA graph (the
   launch floor) and the block's time in a graph.

Writes gpu_check.json to --out ($OUT) and prints a short table last. Exit status 1 when a
check fails. `--cpu-dry-run` runs the checks' logic on the CPU through the CPU twins (no GPU,
no timing): it checks this script, not the CUDA kernels (the fused block's checks need a kernel
library: `--cpu-dry-run --lib build/cuda_emu/lib/libssi_cuda_emu.so` runs them on the host
emulation; `--emulated LIB` runs every check there).
"""

from __future__ import annotations

import argparse
import contextlib
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
CUDA_ABI_VERSION = 4  # plugins/src/cuda/capi.cu: ssi_cuda_abi_version

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
        if lib.ssi_cuda_abi_version() != CUDA_ABI_VERSION:
            raise SystemExit(f"gpu_check: {path} has ABI version {lib.ssi_cuda_abi_version()}, this script needs "
                             f"{CUDA_ABI_VERSION}: rebuild it (scripts/gpu_check.sh builds it)")
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

def write_atomic(path: Path, write) -> None:
    """write(tmp) into a temporary file beside path, then rename it over path: a reader never sees
    a half-written file, and no temporary survives a failure."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_results(out: Path) -> None:
    write_atomic(out / "gpu_check.json", lambda t: t.write_text(json.dumps(RESULTS, indent=1)))


def context_lost(e: BaseException) -> bool:
    """Whether an exception left the CUDA context unusable (a sticky error: illegal or misaligned
    address, launch failure, ...): every later launch would fail the same way."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return False
    try:
        torch.cuda.synchronize()
        torch.ones(1, device="cuda").add_(1).item()
        return False
    except Exception:  # noqa: BLE001
        log(f"the CUDA context is lost after {type(e).__name__}: {e}")
        return True


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    den = ref.norm().item()
    num = (out - ref).norm().item()
    if den == 0.0:
        return num
    return num / den


def same_bits(u: torch.Tensor, v: torch.Tensor) -> bool:
    """Equal bit for bit (NaN where the other has the same NaN)."""
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[u.element_size()]
    return u.dtype == v.dtype and u.shape == v.shape and torch.equal(u.contiguous().view(as_int),
                                                                    v.contiguous().view(as_int))


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
        graph = capture(lambda: ssi_forward(K, blk, B))  # (after one more eager run on a side stream)
        B.out.fill_(float("nan"))
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
# 4. The fused SSIBottleneck (plugins/src/cuda/ssi_bottleneck.cu: one launchSSIBottleneck per
#    block) through scripts/gpu_block_check.py: checks, a chain of blocks in a CUDA graph, and
#    timing per stage of ResNet-101-DCN against the dense bottleneck in cuDNN.

def block_module():
    """scripts/gpu_block_check.py (BlockKernels, stage_checks, random_block, attrs_for)."""
    mod = sys.modules.get("gpu_block_check")
    if mod is None:
        spec = importlib.util.spec_from_file_location("gpu_block_check", REPO / "scripts" / "gpu_block_check.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["gpu_block_check"] = mod
        spec.loader.exec_module(mod)
    return mod


def block_results() -> dict:
    return RESULTS.setdefault("block", {"checks": [], "graph_chain": [], "timing": [], "dense": [],
                                        "backbone": [], "skipped": []})


def block_kernels(K):
    """BlockKernels over K's kernel library (GPU build or host emulation); None without one
    (--cpu-dry-run through the CPU twins)."""
    lib = getattr(K, "lib", None)
    if lib is None:
        return None
    BK = getattr(K, "block", None)
    if BK is None:
        stream = (lambda: 0) if K.emulated else (lambda: torch.cuda.current_stream().cuda_stream)
        BK = block_module().BlockKernels(lib, K.device, stream)
        lib.ssi_cuda_bottleneck_gemm_path.restype = ctypes.c_int32
        lib.ssi_cuda_bottleneck_pdl.restype = ctypes.c_int32
        lib.ssi_cuda_bottleneck_prepare.restype = ctypes.c_int32
        rc = lib.ssi_cuda_bottleneck_prepare()  # once, before any launch or capture (Hopper path)
        if rc != 0:
            raise RuntimeError(f"ssi_cuda_bottleneck_prepare returned {rc}: {lib.ssi_cuda_error_string(rc).decode()}")
        K.block = BK
    return BK


@contextlib.contextmanager
def block_gemm(path: str):
    """The launcher's environment for the launches (and graph captures) inside (it reads it at each
    launch): "sm90" sets SSI_BLOCK_GEMM=sm90 (the Hopper GEMMs), "regs" SSI_BLOCK_GEMM=regs (the
    portable GEMMs on their register path, without the cp.async pipeline), "pdl" sets
    SSI_BLOCK_PDL=1 (the portable kernels chained by programmatic dependent launch), "portable"
    none; the caller's values are restored after."""
    want = {"SSI_BLOCK_GEMM": path if path in ("sm90", "regs") else None,
            "SSI_BLOCK_PDL": "1" if path == "pdl" else None}
    old = {k: os.environ.get(k) for k in want}
    for k, v in want.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


HOPPER_STATUS = {1: "available", 0: "not this device (the sm_90a GEMMs need compute capability 9.0)",
                 -1: "not built (no CUTLASS headers at configure time: see plugins/NOTES.md, Hopper path)"}


def hopper_status(K) -> tuple[bool, str]:
    """Whether the launcher takes the sm_90a GEMMs with SSI_BLOCK_GEMM=sm90 (ssi_cuda_bottleneck_gemm_path)."""
    BK = block_kernels(K)
    if BK is None:
        return False, "no kernel library"
    with block_gemm("sm90"):
        code = int(BK.lib.ssi_cuda_bottleneck_gemm_path())
    with block_gemm("portable"):
        plain = int(BK.lib.ssi_cuda_bottleneck_gemm_path())
    status = HOPPER_STATUS.get(code, f"unknown answer {code}")
    if plain != 0:
        status += f" (without SSI_BLOCK_GEMM the library answers {plain}, not 0: the portable path is not the default)"
    block_results()["hopper"] = {"available": code == 1, "gemm_path_sm90": code, "gemm_path_unset": plain,
                                 "status": status}
    return code == 1 and plain == 0, status


def pdl_status(K) -> bool:
    """Whether the launcher chains the block's kernels with SSI_BLOCK_PDL=1 (ssi_cuda_bottleneck_pdl:
    compute capability 9.0 or later), and not without it."""
    BK = block_kernels(K)
    if BK is None:
        return False
    with block_gemm("pdl"):
        on = int(BK.lib.ssi_cuda_bottleneck_pdl())
    with block_gemm("portable"):
        off = int(BK.lib.ssi_cuda_bottleneck_pdl())
    block_results()["pdl"] = {"available": on == 1, "pdl_set": on, "pdl_unset": off}
    return on == 1 and off == 0


def regs_status(K) -> bool:
    """Whether SSI_BLOCK_GEMM=regs keeps the portable GEMMs off their cp.async pipeline
    (ssi_cuda_bottleneck_gemm_path answers 2) on a device that has the pipeline (compute capability
    8.0 on; sm_75 has only the register path; the emulation has both)."""
    BK = block_kernels(K)
    if BK is None:
        return False
    with block_gemm("regs"):
        code = int(BK.lib.ssi_cuda_bottleneck_gemm_path())
    pipelined = K.emulated or torch.cuda.get_device_capability() >= (8, 0)
    block_results()["regs"] = {"available": code == 2 and pipelined, "gemm_path_regs": code, "pipelined": pipelined}
    return code == 2 and pipelined


def block_paths(K, dtype) -> list[str]:
    """The launch paths to check/time: portable; for fp16 also pdl (the same kernels chained by
    programmatic dependent launch) and sm90 (the Hopper GEMMs) where the library and device have
    them, and regs (the portable GEMMs without their cp.async pipeline, the same bits: what the
    pipeline gains; right after portable, so that the two are timed back to back); on the
    emulation portable and regs."""
    if dtype != torch.float16:
        return ["portable"]
    regs = ["regs"] if regs_status(K) else []
    if K.emulated:
        return ["portable"] + regs
    return ["portable"] + regs + (["pdl"] if pdl_status(K) else []) + (["sm90"] if hopper_status(K)[0] else [])


# stride, dcn, downsample, batch, mode, forced density, masks, channels_last, channel shape
BLOCK_CASES = [
    (1, False, False, 1, C.MODE_THRESHOLD, 0.0, "mixed", False, "identity"),
    (1, True, False, 3, C.MODE_STOCHASTIC, 0.0, "mixed", True, "identity"),
    (2, False, True, 3, C.MODE_OFFICIAL, 0.0, "mixed", False, "any"),
    (2, True, True, 1, C.MODE_THRESHOLD, 0.0, "mixed", True, "any"),
    (1, False, False, 3, C.MODE_THRESHOLD, 0.3, "mixed", False, "identity"),
    (2, True, True, 3, C.MODE_STOCHASTIC, 0.1, "mixed", False, "any"),
    (1, True, True, 1, C.MODE_OFFICIAL, 0.0, "mixed", True, "any"),  # stride-1 downsample (layer1's first)
    (1, True, False, 3, C.MODE_THRESHOLD, 0.0, "empty", False, "identity"),
    (2, False, True, 3, C.MODE_OFFICIAL, 0.0, "full", True, "any"),
    (1, True, False, 1, C.MODE_OFFICIAL, 0.0, "full", False, "identity"),
    (2, True, True, 1, C.MODE_THRESHOLD, 0.0, "mixed", False, "tiny"),  # 1x1 and 2x1 inputs
    # channels multiples of 8 and >= 16: tensor cores, and the Hopper GEMMs (conv1, conv3, downsample)
    (1, True, False, 2, C.MODE_THRESHOLD, 0.5, "mixed", True, "wide"),
    (2, False, True, 1, C.MODE_THRESHOLD, 0.26, "mixed", False, "wide"),
    (1, True, True, 2, C.MODE_OFFICIAL, 0.0, "mixed", True, "wide"),
    # >= 32 K steps of 32 on few row tiles: split-K in conv2 (and in the DCN offsets)
    (1, False, True, 2, C.MODE_THRESHOLD, 0.3, "mixed", True, "split"),
    (2, True, True, 1, C.MODE_THRESHOLD, 0.0, "mixed", False, "split"),
    # the paired launches with split K in both halves: the DCN offsets beside conv1 (Cin 1024: 32
    # K steps), the downsample beside conv3; their blocks run concurrently only on a GPU
    (2, True, True, 2, C.MODE_THRESHOLD, 0.5, "mixed", True, "pairsplit"),
    # the mask taps split 4 ways (Cin 2048: 64 K steps on few row tiles), their sums added by
    # sampleKernel (no forced density; the case above adds them in tapSumKernel)
    (1, False, True, 1, C.MODE_THRESHOLD, 0.0, "mixed", True, "tapsplit"),
    # a mask map of more than 512 tiles of 1024 positions (the emulation's limit: 4): the
    # tile offsets by scanKernel, not summed in partitionKernel
    (2, False, True, 3, C.MODE_THRESHOLD, 0.0, "mixed", True, "large"),
]


def block_case_shape(g, kind: str, small: bool):
    """(cin, planes, h, w) of a case: odd sizes, random channels (Cin = 4p for an identity shortcut)."""
    hi = 20 if small else 72
    if kind == "tiny":
        return 32, 8, randint(g, 1, 2), 1
    if kind == "wide":
        cin, p = (64, 16) if small else (256, 64)
        return cin, p, randint(g, 5, 16 if small else 48), randint(g, 5, 16 if small else 48)
    if kind == "large":  # 3 x 420 x 420 > 512 x 1024 positions (small: 3 x 40 x 40 > 4 x 1024)
        return 8, 2, randint(g, 40, 48) if small else randint(g, 420, 440), randint(g, 40, 48) if small else 420
    if kind == "split":  # conv2: 9 * 128 / 32 = 36 K steps; the DCN offsets: 9 * cin / 32
        cin, p = (128, 128) if small else (512, 128)
        return cin, p, randint(g, 5, 12 if small else 32), randint(g, 5, 12 if small else 32)
    if kind == "pairsplit":  # conv1 and the downsample: 1024 / 32 = 32 K steps on few row tiles
        return 1024, 16, randint(g, 5, 12 if small else 16), randint(g, 5, 12 if small else 16)
    if kind == "tapsplit":  # the mask taps: 2048 / 32 = 64 K steps on at most 4 row tiles: 4 splits
        return 2048, 16, randint(g, 3, 12 if small else 16), randint(g, 3, 12 if small else 16)
    p = randint(g, 2, 12 if small else 48)
    cin = 4 * p if kind == "identity" else randint(g, 3, 48 if small else 160)
    return cin, p, randint(g, 3, hi), randint(g, 3, hi)


def block_mask_findings(found: dict, run, a, dtype, exact: bool) -> dict:
    """The kernels' masks against SampleMask of their own logits.

    exact (threshold, forced density, or the host emulation against the CPU twins: same libm):
    equal. Otherwise (modes 1, 2 on a GPU: CUDA's expf/logf against the host's) a decision may
    flip only within the derived float32 rounding band of its threshold (tests/fp_bounds.py),
    at most 0.1% of them (at least 1), and soft values differ by at most 1e-5 (fp32) or one
    fp16 rounding (2**-10, fp16)."""
    if exact:
        return {"masks_equal": found["masks_equal"], "masks_ok": found["masks_equal"]}
    mod = block_module()
    l1, l2 = found["logits1"].to(dtype), found["logits2"].to(dtype)
    r1, r2 = mod.reference_masks(l1, l2, a, twins=False)
    info = {"masks_equal": found["masks_equal"]}
    ok, flips, numel, vdiff = True, 0, 0, 0.0
    for got, ref, lg, layer in ((run.mask1.cpu(), r1, l1, a.layer1), (run.mask2.cpu(), r2, l2, a.layer2)):
        e = fp_bounds().sample_mask_errors(got, ref, lg, a.mode, a.grid_interval, a.seed, layer)
        ok &= e["ok"]
        flips += e["flips"]
        numel += got.numel()
        both = (got > 0) & (ref > 0)
        if both.any():
            vdiff = max(vdiff, (got.float()[both] - ref.float()[both]).abs().max().item())
    tol = 1e-5 if dtype == torch.float32 else 2.0 ** -10
    info.update(mask_agreement=1.0 - flips / max(numel, 1), mask_flips=flips, max_soft_diff=vdiff)
    info["masks_ok"] = bool(ok and flips <= max(1, int(0.001 * numel)) and vdiff <= tol)
    return info


def logits_findings(found: dict, x: torch.Tensor, inputs, stride: int) -> dict:
    """logits_err_over_bound: max |kernel logit - exact logit| / bound over the fused block's two
    mask convolutions, and logits_rel_err (their norm's, reported); exact: float64 of the kernels'
    own (fp16: rounded) inputs. The bound is the arithmetic's: a
    sum of 9 Cin products and a bias, in any order, FMA or not, is within gamma(9 Cin + 1)
    sum|x w| + |b| of the exact one (plus float64's own rounding; fp16: twice that, and the logits
    rounded to fp16). A tolerance relative to the logits' norm is not a bound: on a small map,
    logits near zero after cancellation exceed any of them."""
    fb = fp_bounds()
    k = 9 * x.shape[1] + 1
    gam = fb.gamma(k) + k * 2.0 ** -52
    if x.dtype == torch.float16:
        # the mask taps on tensor cores, whose float32 accumulation aligns to the largest term and
        # truncates (Fasi et al., PeerJ CS 2021): up to about twice a rounded sum's error
        gam *= 2
    xd = x.cpu().double()
    worst, rel = 0.0, 0.0
    for key, wi, bi, s in (("logits1", 0, 1, 1), ("logits2", 2, 3, stride)):
        wt, b = inputs[wi].cpu().double(), inputs[bi].cpu().double()
        exact = F.conv2d(xd, wt, b, s, 1)
        bound = fb.output_bound(gam * F.conv2d(xd.abs(), wt.abs(), b.abs(), s, 1), exact, x.dtype)
        err = (found[key].double() - exact).abs()
        worst = max(worst, float((err / bound.clamp_min(1e-300)).max()))
        rel = max(rel, rel_err(found[key], exact))
    return {"logits_rel_err": rel, "logits_err_over_bound": worst}


def check_block(K, g, dtype, small: bool) -> None:
    """The fused block (one launch, outputs and workspace poisoned) against the PyTorch op:
    masks = SampleMask of the kernels' own logits, partitions = the stable partition of the
    masks, y = run_block with the kernels' masks within 1e-5 (fp32) / 1e-2 (fp16) relative,
    logits (no forced density) within the sums' rounding bound of the exact ones, element by
    element (their relative error is reported)."""
    BK = block_kernels(K)
    res = block_results()
    if BK is None:
        reason = ("no kernel library under --cpu-dry-run (the CPU twins have no fused block): pass --lib "
                  "build/cuda_emu/lib/libssi_cuda_emu.so, or use --emulated LIB, to run these checks on the host "
                  "emulation")
        if "checks_skipped" not in res:
            log(f"  [skip] SSIBottleneck: {reason}")
        res["checks_skipped"] = reason
        return
    mod = block_module()
    dev = K.device
    for ci, (stride, dcn, ds, n, mode, density, masks, cl, shape) in enumerate(BLOCK_CASES):
        cin, p, h, w = block_case_shape(g, shape, small)
        bias = {"mixed": (0.3, -0.2), "empty": (-30.0, -30.0), "full": (30.0, 30.0)}[masks]
        grid = 0 if masks == "empty" else (C.GRID_PRIOR_INTERVAL if randint(g, 0, 1) else 0)
        seed = randint(g, 0, 100000)
        sig1, sig2 = (round(0.6 + 2.4 * float(torch.rand((), generator=g)), 2) for _ in range(2))
        inputs = mod.random_block(g, cin, p, stride, dcn, ds, dtype=dtype, mask_bias=bias)
        if masks != "mixed":  # the logits are the bias alone
            inputs[0].zero_()
            inputs[2].zero_()
        if dcn:  # offsets of a few pixels (std about 2; samples past the borders at the edges). Larger
            # offsets carry larger rounding (fp32: rel_err ~4e-6 at std 10 px, cin 256, of the 1e-5 allowed)
            inputs[6].mul_(min(1.0, 2.0 / (0.2 * math.sqrt(9 * cin))))
        a = mod.attrs_for(stride, dcn, ds, mode, density, grid, seed, sig1, sig2)
        x = torch.randn(n, cin, h, w, generator=g).to(dtype)
        xd, dinputs = x.to(dev), [t.to(dev) for t in inputs]
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        portable = None  # the portable path's outputs, for the paths that must equal them bit for bit
        for path in block_paths(K, dtype):
            name = (f"{str(dtype)[6:]} case{ci} {path} n{n} cin={cin} p={p} {h}x{w} s={stride} dcn={int(dcn)} "
                    f"ds={int(ds)} mode={mode} density={density} masks={masks} {'nhwc' if cl else 'nchw'}")
            info: dict = {}
            try:
                with block_gemm(path):
                    run = BK.run(xd, dinputs, a, channels_last=cl)
                K.synchronize()
                if path == "portable":
                    portable = (run.y.clone(), run.mask1.clone(), run.mask2.clone())
                elif path == "regs":  # the same halves in the same places as the pipeline: its bits
                    if portable is None:
                        info["error"] = "no portable reference (the portable run of this case failed)"
                    else:
                        info["equals_portable"] = all(
                            same_bits(u, v) for u, v in zip((run.y, run.mask1, run.mask2), portable))
                    info["nan"] = bool(torch.isnan(run.y).any())
                    ok = info.get("equals_portable", False) and not info["nan"]
                    record("SSIBottleneck", name, ok, **info)
                    res["checks"].append({"name": name, "ok": bool(ok), **info})
                    continue
                found = mod.stage_checks(run, xd, dinputs, a, twins=K.emulated)
                exact = K.emulated or mode == C.MODE_THRESHOLD or density > 0
                info.update(block_mask_findings(found, run, a, dtype, exact))
                info["partitions_equal"] = found["partitions_equal"]
                if "kth_equal" in found:  # forced density: the k-th largest logits, exactly
                    info["kth_equal"] = found["kth_equal"]
                y, y_ref = found["y"], found["y_ref"]
                info["nan"] = bool(torch.isnan(y).any())
                info["rel_err"] = rel_err(y, y_ref)
                ok = info["masks_ok"] and info["partitions_equal"] and info.get("kth_equal", True) and not info["nan"]
                ok = ok and tuple(y.shape) == (n, 4 * p, ho, wo)
                ok = ok and info["rel_err"] <= (1e-5 if dtype == torch.float32 else 1e-2)
                if density == 0:  # within the sums' rounding bound, element by element
                    info.update(logits_findings(found, xd, dinputs, stride))
                    ok = ok and info["logits_err_over_bound"] <= 1.0
                m1, m2 = run.mask1.cpu().float(), run.mask2.cpu().float()
                if masks == "empty":
                    ok = ok and not m1.any() and not m2.any()
                elif masks == "full":
                    ok = ok and bool((m1 > 0).all()) and bool((m2 > 0).all())
                if density > 0:  # every image keeps at least its forced count (ties: more)
                    k1, k2 = C.forced_count(density, h * w), C.forced_count(density, ho * wo)
                    c1 = (m1 > 0).flatten(1).sum(1)
                    c2 = (m2 > 0).flatten(1).sum(1)
                    info["forced_counts_ok"] = bool((c1 >= k1).all() and (c2 >= k2).all())
                    ok = ok and info["forced_counts_ok"]
                info["density1"] = float((m1 > 0).float().mean())
                info["density2"] = float((m2 > 0).float().mean())
            except Exception as e:  # noqa: BLE001  (recorded; a lost context ends the section)
                ok = False
                info["error"] = f"{type(e).__name__}: {e}"
                if context_lost(e):
                    record("SSIBottleneck", name, ok, **info)
                    raise
            record("SSIBottleneck", name, ok, **info)
            res["checks"].append({"name": name, "ok": bool(ok), **info})


def scaled_block(cin, p, stride, dcn, ds, dtype, device, gen, coherent_masks=False):
    """The contract's 14 weight tensors of a folded block with fan-in scaled weights
    (activations stay O(1) along a chain of blocks: fp16 safe). coherent_masks: both mask
    convs average x (3x3, all channels): with x = noise + a smooth field the masks are blobs."""
    gdev = gen.device

    def r(*shape, scale):
        return torch.randn(*shape, generator=gen, device=gdev) * scale

    cout = 4 * p
    empty = torch.empty(0)
    if coherent_masks:
        mw = [torch.full((1, cin, 3, 3), 1.0 / (9 * cin)), torch.full((1, cin, 3, 3), 1.0 / (9 * cin))]
    else:
        mw = [r(1, cin, 3, 3, scale=1.0 / math.sqrt(9 * cin)), r(1, cin, 3, 3, scale=1.0 / math.sqrt(9 * cin))]
    ws = [mw[0], torch.tensor([0.3]), mw[1], torch.tensor([-0.2]),
          r(p, cin, 1, 1, scale=1 / math.sqrt(cin)), r(p, scale=0.1),
          r(18, cin, 3, 3, scale=0.5 / math.sqrt(9 * cin)) if dcn else empty, r(18, scale=0.5) if dcn else empty,
          r(p, p, 3, 3, scale=1 / math.sqrt(9 * p)), r(p, scale=0.1),
          r(cout, p, 1, 1, scale=0.5 / math.sqrt(p)), r(cout, scale=0.1),
          r(cout, cin, 1, 1, scale=0.5 / math.sqrt(cin)) if ds else empty, r(cout, scale=0.1) if ds else empty]
    return [t.to(device=device, dtype=dtype).contiguous() for t in ws]


# (cin, planes, stride, dcn, downsample) of each block; input batch, height, width
CHAIN_SPECS = [(256, 128, 2, True, True)] + [(512, 128, 1, True, False)] * 3
CHAIN_INPUT = (2, 40, 56)


def check_block_graph(K, g, dtype) -> None:
    """A chain of 4 fused blocks (ResNet layer2-like: a strided first block with downsample,
    then 3 identity blocks, DCN, official sampling), eager and captured in one CUDA graph on
    torch's current stream: the replays equal the eager launches bit for bit (every kernel is
    deterministic: no atomics), for the captured input and for a new one; each block's output
    matches run_block on its actual input with its masks."""
    from dataclasses import replace

    from ssi_deploy.ops.bottleneck import BlockWeights, run_block

    BK, mod = block_kernels(K), block_module()
    dev, cl = K.device, dtype == torch.float16
    n, h, w = CHAIN_INPUT
    c0 = CHAIN_SPECS[0][0]
    blocks = []
    for i, (cin, p, s, dcn, ds) in enumerate(CHAIN_SPECS):
        a = replace(mod.attrs_for(s, dcn, ds, C.MODE_OFFICIAL, 0.0, C.GRID_PRIOR_INTERVAL, 11 + i, 2.0, 1.5),
                    layer1=2 * i, layer2=2 * i + 1)
        blocks.append((scaled_block(cin, p, s, dcn, ds, dtype, dev, g), a))
    x0 = torch.randn(n, c0, h, w, generator=g).to(dtype).to(dev)
    if cl:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    bufs, shape = [], (n, c0, h, w)
    for inputs, a in blocks:
        cout, p = inputs[10].shape[0], inputs[4].shape[0]
        ho, wo = (shape[2] - 1) // a.stride + 1, (shape[3] - 1) // a.stride + 1
        y = torch.empty(n, cout, ho, wo, dtype=dtype, device=dev)
        if cl:
            y = y.contiguous(memory_format=torch.channels_last)
        L = BK.layout(shape, p, cout, a, dtype, cl)
        bufs.append((y, torch.empty(n, 1, shape[2], shape[3], dtype=dtype, device=dev),
                     torch.empty(n, 1, ho, wo, dtype=dtype, device=dev),
                     torch.empty(L["total"], dtype=torch.uint8, device=dev)))
        shape = (n, cout, ho, wo)

    def chain():
        cur = x0
        for (inputs, a), (y, m1, m2, ws) in zip(blocks, bufs):
            BK.run(cur, inputs, a, channels_last=cl, poison=False, workspace=ws, outputs=(y, m1, m2))
            cur = y

    def outputs():
        return [t.clone() for y, m1, m2, _ in bufs for t in (y, m1, m2)]

    def poison():
        for y, m1, m2, _ in bufs:
            for t in (y, m1, m2):
                t.fill_(float("nan"))

    xa = x0.clone()
    xb = torch.randn(n, c0, h, w, generator=g).to(dtype).to(dev)
    eager_portable = None
    for path in block_paths(K, dtype):
        info: dict = {}
        with block_gemm(path):
            x0.copy_(xa)
            poison()
            chain()
            K.synchronize()
            eager_a = outputs()
            # each block against run_block on its actual input with its masks
            errs, cur = [], x0
            for (inputs, a), (y, m1, m2, _) in zip(blocks, bufs):
                wts = BlockWeights.prepare(*[t.cpu() for t in inputs], stride=a.stride, dcn=a.dcn,
                                           downsample=a.downsample)
                ref, _, _ = run_block(cur.cpu().float(), wts, a, masks=(m1.cpu().float(), m2.cpu().float()))
                errs.append(rel_err(y.cpu().float(), ref.float()))
                cur = y
            info["block_rel_errs"] = [float(e) for e in errs]
            info["nan"] = bool(any(torch.isnan(t).any() for t in eager_a))
            graph = capture(chain)  # (after one more eager run on a side stream)
            poison()
            graph.replay()
            K.synchronize()
            info["graph_equals_eager"] = all(torch.equal(u, v) for u, v in zip(outputs(), eager_a))
            x0.copy_(xb)  # a new input, same graph
            poison()
            graph.replay()
            K.synchronize()
            graph_b = outputs()
            poison()
            chain()
            K.synchronize()
            info["graph_equals_eager_new_input"] = all(torch.equal(u, v) for u, v in zip(graph_b, outputs()))
            info["new_input_changes_output"] = not torch.equal(graph_b[-3], eager_a[-3])
            del graph
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        if path == "portable":
            eager_portable = eager_a
        elif eager_portable is not None and path in ("pdl", "regs"):  # the same halves: the same bits
            info["equals_portable"] = all(torch.equal(u, v) for u, v in zip(eager_a, eager_portable))
        elif eager_portable is not None:  # another summation order: not bit-equal, fp16 close
            info["vs_portable_rel_err"] = rel_err(eager_a[-3].float(), eager_portable[-3].float())
        ok = (not info["nan"] and info["graph_equals_eager"] and info["graph_equals_eager_new_input"]
              and info["new_input_changes_output"] and max(info["block_rel_errs"]) <= tol
              and info.get("equals_portable", True))
        name = (f"{str(dtype)[6:]} {path} {len(blocks)} blocks (layer2-like) n{n} {c0}x{h}x{w} "
                f"{'nhwc' if cl else 'nchw'}")
        record("SSIBottleneck graph", name, ok, **{k: v for k, v in info.items() if k != "block_rel_errs"},
               max_block_rel_err=max(info["block_rel_errs"]))
        block_results()["graph_chain"].append({"name": name, "ok": bool(ok), **info})


# ResNet-101-DCN (stage_with_dcn = False, True, True, True): name, planes, dcn, output stride, blocks
R101_STAGES = [("s1", 64, False, 4, 3), ("s2", 128, True, 8, 4), ("s3", 256, True, 16, 23), ("s4", 512, True, 32, 3)]
BLOCK_RESOLUTIONS = [(800, 1216), (992, 1664)]
BLOCK_BATCHES = [1, 8]
BLOCK_DENSITIES = [0.05, 0.1, 0.26, 0.5, 0.75, 1.0]
BACKBONE_DENSITIES = [0.26, 0.75]
REGS_DENSITIES = [0.26]  # the regs path (what the cp.async pipeline gains) at the goal's density only
BROKEN_PATHS: set = set()  # GEMM paths whose timing failed once (not timed again)
GRAPH_TARGET_ELEMENTS = 2e7  # output elements per timed graph replay (small blocks: several rounds)
BACKBONE_LABEL = ("sum of measured block times (not a measured backbone): per stage the first block "
                  "(downsample; stride 2 from s2 on) + (blocks - 1) x a non-first block, 3+4+23+3 = 33 blocks; "
                  "stem, FPN and heads not included")


def timed_at(path: str, d: float) -> bool:
    """Whether the timing runs `path` at density d: pdl at the backbone densities, regs at
    REGS_DENSITIES (the budget is short), the others at every density."""
    only = {"pdl": BACKBONE_DENSITIES, "regs": REGS_DENSITIES}.get(path)
    return only is None or d in only


def threshold_variant(path: str) -> bool:
    """Whether the timing also runs `path` in the threshold mode (batch 1, the backbone densities)."""
    return path != "regs"


def block_geometry(stage, first: bool, H: int, W: int):
    """(cin, planes, stride, downsample, dcn, h_in, w_in) of a stage's first or non-first block."""
    name, p, dcn, div, _ = stage
    if not first:
        return 4 * p, p, 1, False, dcn, H // div, W // div
    if name == "s1":  # after the stem: 64 channels at /4, stride 1, a downsample to 256
        return 64, p, 1, True, dcn, H // div, W // div
    return 2 * p, p, 2, True, dcn, H // (div // 2), W // (div // 2)


def smooth_input(n, cin, h, w, gen) -> torch.Tensor:
    """fp16 channels-last noise + a smooth field shared by all channels (blob masks with
    coherent mask convs), generated on the generator's device (the GPU)."""
    x = torch.randn(n, cin, h, w, generator=gen, device=gen.device, dtype=torch.float16).mul_(0.5)
    lo = torch.rand(n, 1, max(2, h // 16), max(2, w // 16), generator=gen, device=gen.device)
    field = F.interpolate(lo, size=(h, w), mode="bilinear", align_corners=False).mul_(2).sub_(1)
    return x.add_(field.half()).contiguous(memory_format=torch.channels_last)


def dense_weights(cin, p, stride, ds, dcn, gen):
    def r(*shape, scale):
        return (torch.randn(*shape, generator=gen, device=gen.device) * scale).half()

    cl = torch.channels_last
    wt = {"w1": r(p, cin, 1, 1, scale=1 / math.sqrt(cin)).contiguous(memory_format=cl), "b1": r(p, scale=0.1),
          "w2": r(p, p, 3, 3, scale=1 / math.sqrt(9 * p)).contiguous(memory_format=cl), "b2": r(p, scale=0.1),
          "w3": r(4 * p, p, 1, 1, scale=0.5 / math.sqrt(p)).contiguous(memory_format=cl), "b3": r(4 * p, scale=0.1)}
    if ds:
        wt["wd"] = r(4 * p, cin, 1, 1, scale=0.5 / math.sqrt(cin)).contiguous(memory_format=cl)
        wt["bd"] = r(4 * p, scale=0.1)
    if dcn:  # DCN's offset conv reads conv2's input (conv1's output), as in mmdetection
        wt["wo"] = r(18, p, 3, 3, scale=0.1 / math.sqrt(9 * p)).contiguous(memory_format=cl)
        wt["bo"] = r(18, scale=0.1)
    return wt


def dense_block_fn(wt, stride, ds, deform=None):
    """The dense bottleneck, BN folded: conv1x1+ReLU, 3x3 (stride; deform: torchvision's
    deform_conv2d with its offset conv, else a regular 3x3: the "ideal DCN"), conv1x1, the
    shortcut (downsample conv1x1), add, ReLU. fp16 channels-last: cuDNN for every conv."""
    def f(x):
        y = F.conv2d(x, wt["w1"], wt["b1"]).relu_()
        if deform is not None:
            off = F.conv2d(y, wt["wo"], wt["bo"], stride, 1)
            y = deform(y, off, wt["w2"], wt["b2"], stride=stride, padding=1).relu_()
        else:
            y = F.conv2d(y, wt["w2"], wt["b2"], stride, 1).relu_()
        z = F.conv2d(y, wt["w3"], wt["b3"])
        short = F.conv2d(x, wt["wd"], wt["bd"], stride) if ds else x
        return z.add_(short).relu_()
    return f


def torchvision_deform():
    try:
        import torchvision
        from torchvision.ops import deform_conv2d
        return deform_conv2d, f"torchvision {torchvision.__version__} ops.deform_conv2d"
    except Exception as e:  # noqa: BLE001
        return None, f"torchvision unavailable ({type(e).__name__}: {e})"


def graph_ms(fn, launches: int, reps: int) -> tuple[float, float, float]:
    """(median, p10, p90) ms per call of fn, from CUDA-event times of replays of one graph that
    holds `launches` calls (fn makes them all)."""
    graph = capture(fn)
    times = sorted(t / launches for t in time_graphs([graph], reps))
    del graph
    return statistics.median(times), times[len(times) // 10], times[(9 * len(times)) // 10]


THRESHOLD_VARIANT = "-thr"  # a path label's suffix: threshold mode at a density matched to the forced one


def matched_threshold_inputs(BK, mod, xs, inputs, outs, ws, geo, density):
    """For each input x, the block's weight tensors with both mask biases lowered by the k-th
    largest logits of a forced-density launch on x (the mean over its images): threshold mode
    then samples about the same positions as the forced density (the rows record the measured
    ones) through the deployed launch sequence, without the tap-sum and k-th largest kernels that
    a forced density needs. Returns (threshold attrs, [inputs per x])."""
    stride, dcn, ds, n = geo["stride"], bool(geo["dcn"]), bool(geo["downsample"]), geo["batch"]
    forced = mod.attrs_for(stride, dcn, ds, C.MODE_THRESHOLD, density, C.GRID_PRIOR_INTERVAL, 3)
    L = BK.layout(xs[0].shape, geo["planes"], 4 * geo["planes"], forced, torch.float16, True)
    per_x = []
    for x, o in zip(xs, outs):
        BK.run(x, inputs, forced, channels_last=True, poison=False, workspace=ws, outputs=o)
        kth = ws[L["kth"]:L["kth"] + 8 * n].view(torch.float32).cpu()  # [mask 1: n, mask 2: n]
        shifted = list(inputs)
        for bi, k in ((1, kth[:n].mean()), (3, kth[n:].mean())):
            shifted[bi] = (inputs[bi].float() - k.to(inputs[bi].device)).to(inputs[bi].dtype)
        per_x.append(shifted)
    thr = mod.attrs_for(stride, dcn, ds, C.MODE_THRESHOLD, 0.0, C.GRID_PRIOR_INTERVAL, 3)
    return thr, per_x


def run_block_timing(K, reps: int, budget_s: float) -> None:
    """Per stage of ResNet-101-DCN, resolution, batch and forced density: the fused block (fp16,
    channels-last, one launch; portable and Hopper GEMMs) and the dense bottleneck in cuDNN,
    CUDA graph replays, median of CUDA events, three input sets in rotation inside each graph.
    Configurations past the time budget are skipped and listed."""
    BK, mod = block_kernels(K), block_module()
    res = block_results()
    torch.backends.cudnn.benchmark = True
    deform, deform_kind = torchvision_deform()
    paths = block_paths(K, torch.float16)
    res["config"] = {
        "fused": "launchSSIBottleneck fp16 channels-last, forced density (per image top-k of its own logits), "
                 "coherent mask convs over noise + a smooth field (blob masks)",
        "dense": "cuDNN fp16 channels-last, BN folded: conv1x1+ReLU, 3x3+ReLU, conv1x1, shortcut, add, ReLU; "
                 "cudnn.benchmark, CUDA graph",
        "dense_dcn": deform_kind if deform is not None else "none: DCN stages use a regular 3x3 (the ideal DCN)",
        "dense_ideal": "the same with a regular cuDNN 3x3 in place of DCN (the ideal DCN: no offsets, no gathers)",
        "resolutions": [f"{h}x{w}" for h, w in BLOCK_RESOLUTIONS], "batches": BLOCK_BATCHES,
        "densities": BLOCK_DENSITIES, "backbone_densities": BACKBONE_DENSITIES, "reps": reps,
        "budget_s": budget_s, "paths": paths, "hopper": res.get("hopper"), "pdl": res.get("pdl"),
        "pdl_densities": "pdl (programmatic dependent launch) is timed at the backbone densities only",
        "regs_densities": f"regs (the portable GEMMs without their cp.async pipeline) is timed at {REGS_DENSITIES} "
                          "only, in the forced density",
        "variants": paths + [pth + THRESHOLD_VARIANT for pth in paths if threshold_variant(pth)],
        "threshold_variant": f"PATH{THRESHOLD_VARIANT}: the deployed threshold mode (batch 1, the backbone "
                             "densities), its mask biases lowered by a forced-density launch's k-th largest logits "
                             "(about the same density: the rows record the measured ones); without the forced "
                             "density's tap-sum and k-th largest kernels",
        "timing": "median over replays of (CUDA-event time of one graph replay) / calls in the graph",
    }
    log(f"  dense DCN baseline: {res['config']['dense_dcn']}; GEMM paths: {', '.join(paths)}"
        f"{'' if 'sm90' in paths else ' (Hopper: ' + res.get('hopper', {}).get('status', '?') + ')'}")
    gen = torch.Generator(device=BK.device).manual_seed(1234)
    t0 = time.time()
    deadline = t0 + budget_s
    configs = [(n, H, W, stage, first) for n in BLOCK_BATCHES for H, W in BLOCK_RESOLUTIONS
               for stage in R101_STAGES for first in (False, True)]
    # Two passes, so that a budget that runs out costs the density sweep, not the goal's figures:
    # first every configuration (both batches and resolutions) at the backbone densities, with its
    # dense baselines, then the non-first blocks at the other densities against the same baselines.
    sweep = [d for d in BLOCK_DENSITIES if d not in BACKBONE_DENSITIES]
    passes = [("backbone densities", [(c, BACKBONE_DENSITIES) for c in configs]),
              ("density sweep", [(c, sweep) for c in configs if not c[4] and sweep])]
    dense_rows = {}
    for pi, (what, work) in enumerate(passes):
        log(f"  pass {pi + 1}/{len(passes)}, {what}: {len(work)} configurations "
            f"({time.time() - t0:.0f} of {budget_s:.0f} s spent)")
        for (n, H, W, stage, first), densities in work:
            base = dict(res=f"{H}x{W}", batch=n, stage=stage[0], block="first" if first else "non-first")
            key = tuple(base.values())
            if time.time() > deadline:
                res["skipped"] += [dict(base, density=d, path=pth, reason="time budget")
                                   for pth in paths for d in densities if timed_at(pth, d)]
                continue
            try:
                dense_rows[key] = time_block_config(BK, mod, gen, stage, first, H, W, n, densities, paths, deform,
                                                    reps, deadline, base, dense_rows.get(key))
            except Exception as e:  # noqa: BLE001  (recorded; the other configurations still run)
                if context_lost(e):
                    raise  # the context is gone
                traceback.print_exc()
                RESULTS["failures"].append(dict(base, kind="block timing", name="exception",
                                                error=f"{type(e).__name__}: {e}"))
                if BK.device.type == "cuda":
                    torch.cuda.synchronize()
            torch.cuda.empty_cache()
    res["seconds"] = time.time() - t0
    late = [r for r in res["skipped"] if r["reason"] == "time budget"]
    if late:
        log(f"  {len(late)} configuration(s) skipped past the {budget_s:.0f} s budget "
            f"(from {late[0]['res']} batch {late[0]['batch']} {late[0]['stage']} {late[0]['block']})")
    if len(late) < len(res["skipped"]):
        log(f"  {len(res['skipped']) - len(late)} configuration(s) skipped: their GEMM path failed earlier")
    backbone_estimates()
    pipeline_gains()


def time_block_config(BK, mod, gen, stage, first, H, W, n, densities, paths, deform, reps, deadline, base,
                      drow=None):
    """Times the fused block of one configuration at `densities` on every path, against the
    dense baselines in `drow` (measured now, and recorded, when None). Returns the baselines."""
    res = block_results()
    cin, p, stride, ds, dcn, h, w = block_geometry(stage, first, H, W)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    cout = 4 * p
    # calls per graph: three input sets, repeated so that one replay writes some 20M output elements
    inner = max(1, min(16, math.ceil(GRAPH_TARGET_ELEMENTS / (n * ho * wo * cout * 3))))
    launches = 3 * inner
    xs = [smooth_input(n, cin, h, w, gen) for _ in range(3)]
    geo = dict(base, cin=cin, planes=p, h=h, w=w, ho=ho, wo=wo, stride=stride, dcn=int(dcn), downsample=int(ds),
               launches_per_graph=launches)
    def calls(fn):
        def run():
            for _ in range(inner):
                for x in xs:
                    fn(x)
        return run

    if drow is None:  # the dense baselines
        wt = dense_weights(cin, p, stride, ds, dcn, gen)
        t_ideal = graph_ms(calls(dense_block_fn(wt, stride, ds)), launches, reps)
        drow = dict(geo, dense_ideal_ms=t_ideal[0], dense_ideal_p10=t_ideal[1], dense_ideal_p90=t_ideal[2],
                    dense_kind="cuDNN 3x3" if not dcn else "ideal DCN (cuDNN 3x3): torchvision unavailable")
        drow["dense_ms"] = t_ideal[0]
        if dcn and deform is not None:
            try:
                t_dcn = graph_ms(calls(dense_block_fn(wt, stride, ds, deform)), launches, reps)
                drow.update(dense_ms=t_dcn[0], dense_dcn_p10=t_dcn[1], dense_dcn_p90=t_dcn[2],
                            dense_kind="torchvision deform_conv2d (+ offset conv), rest cuDNN")
            except Exception as e:  # noqa: BLE001  (a baseline, not the kernels: fall back, say so)
                drow["dense_kind"] = f"ideal DCN (cuDNN 3x3): torchvision deform_conv2d failed: {type(e).__name__}: {e}"
                log(f"  {drow['dense_kind']}")
                if BK.device.type == "cuda":
                    torch.cuda.synchronize()
        res["dense"].append(drow)
        del wt
    # the fused block
    inputs = scaled_block(cin, p, stride, dcn, ds, torch.float16, BK.device, gen, coherent_masks=True)
    a0 = mod.attrs_for(stride, dcn, ds, C.MODE_THRESHOLD, 1.0, C.GRID_PRIOR_INTERVAL, 3)
    L = BK.layout(xs[0].shape, p, cout, a0, torch.float16, True)
    ws = torch.empty(L["total"], dtype=torch.uint8, device=BK.device)
    outs = [(torch.empty(n, cout, ho, wo, dtype=torch.float16, device=BK.device, memory_format=torch.channels_last),
             torch.empty(n, 1, h, w, dtype=torch.float16, device=BK.device),
             torch.empty(n, 1, ho, wo, dtype=torch.float16, device=BK.device)) for _ in xs]
    for path in paths:
        for d in densities:
            if not timed_at(path, d):
                continue  # (pdl, regs: the goal's densities are enough, and the budget is short)
            forced = mod.attrs_for(stride, dcn, ds, C.MODE_THRESHOLD, d, C.GRID_PRIOR_INTERVAL, 3)
            # the forced density, then (batch 1, the backbone densities: the goal's) the threshold mode at
            # about that density
            variants = [path] + ([path + THRESHOLD_VARIANT]
                                 if d in BACKBONE_DENSITIES and n == 1 and threshold_variant(path) else [])
            for label in variants:
                if time.time() > deadline:
                    res["skipped"].append(dict(base, density=d, path=label, reason="time budget"))
                    continue
                if label in BROKEN_PATHS:
                    res["skipped"].append(dict(base, density=d, path=label, reason=f"{label} failed earlier"))
                    continue
                try:
                    with block_gemm(path):
                        if label == path:
                            a, per_x = forced, [inputs] * len(xs)
                        else:
                            a, per_x = matched_threshold_inputs(BK, mod, xs, inputs, outs, ws, geo, d)

                        def fused():
                            for _ in range(inner):
                                for x, o, wts in zip(xs, outs, per_x):
                                    BK.run(x, wts, a, channels_last=True, poison=False, workspace=ws, outputs=o)

                        t = graph_ms(fused, launches, reps)
                except Exception as e:  # noqa: BLE001  (recorded; this path is not timed again)
                    if context_lost(e):
                        raise
                    traceback.print_exc()
                    BROKEN_PATHS.add(label)
                    RESULTS["failures"].append(dict(base, kind="block timing", name=f"fused {label} density {d}",
                                                    error=f"{type(e).__name__}: {e}"))
                    if BK.device.type == "cuda":
                        torch.cuda.synchronize()
                    continue
                La = BK.layout(xs[0].shape, p, cout, a, torch.float16, True)
                views = BK.views(ws, La, xs[0].shape, p, cout, a, torch.float16)  # the last launch's counts
                row = dict(geo, path=label, density=d, fused_ms=t[0], fused_p10=t[1], fused_p90=t[2],
                           mode="forced density" if label == path else "threshold",
                           density_m1=int(views["count1"][0]) / (n * h * w),
                           density_m2=int(views["count2"][0]) / (n * ho * wo),
                           dense_ms=drow["dense_ms"], dense_ideal_ms=drow["dense_ideal_ms"],
                           dense_kind=drow["dense_kind"])
                row["ratio"] = row["dense_ms"] / row["fused_ms"]
                row["ratio_ideal"] = row["dense_ideal_ms"] / row["fused_ms"]
                res["timing"].append(row)
                log(f"  {base['res']} n{n} {stage[0]} {base['block']:9} {label:12} density {d:.2f} "
                    f"(m1 {row['density_m1']:.3f}, m2 {row['density_m2']:.3f}): "
                    f"fused {t[0]:.3f} ms, dense {row['dense_ms']:.3f} ms (x{row['ratio']:.2f}), "
                    f"ideal {row['dense_ideal_ms']:.3f} ms (x{row['ratio_ideal']:.2f})")
    return drow


def backbone_estimates() -> None:
    res = block_results()
    rows = {(r["res"], r["batch"], r["stage"], r["block"], r["path"], r["density"]): r for r in res["timing"]}
    dense = {(r["res"], r["batch"], r["stage"], r["block"]): r for r in res["dense"]}
    out = []
    for n in BLOCK_BATCHES:
        for H, W in BLOCK_RESOLUTIONS:
            rs = f"{H}x{W}"
            for path in res.get("config", {}).get("variants", ["portable"]):
                for d in BACKBONE_DENSITIES:
                    tot = {"fused_ms": 0.0, "dense_ms": 0.0, "dense_ideal_ms": 0.0}
                    complete = True
                    for name, _, _, _, blocks in R101_STAGES:
                        for blk, count in (("first", 1), ("non-first", blocks - 1)):
                            r = rows.get((rs, n, name, blk, path, d))
                            dn = dense.get((rs, n, name, blk))
                            if r is None or dn is None:
                                complete = False
                                continue
                            tot["fused_ms"] += count * r["fused_ms"]
                            tot["dense_ms"] += count * dn["dense_ms"]
                            tot["dense_ideal_ms"] += count * dn["dense_ideal_ms"]
                    if not complete:
                        continue
                    e = dict(res=rs, batch=n, path=path, density=d, label=BACKBONE_LABEL, **tot,
                             ratio=tot["dense_ms"] / tot["fused_ms"],
                             ratio_ideal=tot["dense_ideal_ms"] / tot["fused_ms"])
                    out.append(e)
    res["backbone"] = out


def pipeline_gains() -> None:
    """What the portable GEMMs' cp.async pipeline gains: the regs path's time over the portable
    path's, per configuration timed on both (the forced density), and for the backbone sums."""
    res = block_results()
    key = ("res", "batch", "stage", "block", "density")
    rows = {(tuple(r[k] for k in key), r["path"]): r for r in res["timing"]}
    out = []
    for (k, pth), r in rows.items():
        if pth == "portable" and (k, "regs") in rows:
            slow = rows[(k, "regs")]["fused_ms"]
            out.append(dict(zip(key, k), regs_ms=slow, portable_ms=r["fused_ms"], gain=slow / r["fused_ms"]))
    bb = {(b["res"], b["batch"], b["density"], b["path"]): b for b in res.get("backbone", [])}
    for (rs, n, d, pth), b in bb.items():
        if pth == "regs" and (rs, n, d, "portable") in bb:
            fused = bb[(rs, n, d, "portable")]["fused_ms"]
            out.append(dict(res=rs, batch=n, stage="backbone", block="sum", density=d, regs_ms=b["fused_ms"],
                            portable_ms=fused, gain=b["fused_ms"] / fused))
    res["pipeline"] = out


def block_plot(path: Path) -> str | None:
    """Latency against density per stage (non-first blocks), fused vs dense; one row per
    resolution and batch. Returns the file written, or why not."""
    res = block_results()
    if not res["timing"]:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return f"no plot: matplotlib unavailable ({e})"
    groups = [(f"{H}x{W}", n) for n in BLOCK_BATCHES for H, W in BLOCK_RESOLUTIONS]
    fig, axes = plt.subplots(len(groups), len(R101_STAGES), figsize=(4 * len(R101_STAGES), 3.2 * len(groups)),
                             squeeze=False)
    for gi, (rs, n) in enumerate(groups):
        for si, (name, p, dcn, _, _) in enumerate(R101_STAGES):
            ax = axes[gi][si]
            sel = [r for r in res["timing"] if r["res"] == rs and r["batch"] == n and r["stage"] == name
                   and r["block"] == "non-first"]
            for pth, style in (("portable", "o-"), ("pdl", "^-"), ("sm90", "s-"), ("regs", "v"),
                               ("portable" + THRESHOLD_VARIANT, "x"), ("pdl" + THRESHOLD_VARIANT, "+"),
                               ("sm90" + THRESHOLD_VARIANT, "d")):
                pts = sorted((r["density"], r["fused_ms"]) for r in sel if r["path"] == pth)
                if pts:
                    ax.plot([q[0] for q in pts], [q[1] for q in pts], style, label=f"fused ({pth})")
            dn = [r for r in res["dense"] if r["res"] == rs and r["batch"] == n and r["stage"] == name
                  and r["block"] == "non-first"]
            if dn:
                ax.axhline(dn[0]["dense_ms"], color="k", label="dense (DCN)" if dcn else "dense")
                if dcn:
                    ax.axhline(dn[0]["dense_ideal_ms"], color="gray", ls="--", label="dense, ideal DCN")
            ax.set_title(f"{rs} n={n} {name} (p={p}{', DCN' if dcn else ''})", fontsize=9)
            ax.set_xlabel("density")
            ax.set_ylabel("ms per block")
            ax.set_xlim(0, 1.05)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle("fused SSIBottleneck (fp16 NHWC, one launch) vs dense bottleneck (cuDNN fp16 NHWC), CUDA graphs")
    fig.tight_layout()
    write_atomic(path, lambda t: fig.savefig(t, dpi=80, format="png"))
    plt.close(fig)
    return str(path)


BREAKDOWN_CONFIG = dict(res=(800, 1216), batch=1, density=0.26, launches=5)


def kernel_short_name(name: str) -> str:
    """'void ssi::(anonymous namespace)::rowGemmKernel<__half, float, false, true>(...)' -> 'rowGemmKernel'."""
    head = name.replace("(anonymous namespace)", "").split("(")[0].split("<")[0].strip()
    return head.split("::")[-1].split(" ")[-1] or name


def aggregate_kernels(events, launches: int) -> list[dict]:
    """(name, microseconds) of every kernel of `launches` block launches -> per kernel name, in
    order of first appearance: calls and microseconds per block launch, share of the total."""
    rows: dict = {}
    for name, us in events:
        r = rows.setdefault(kernel_short_name(name), {"kernel": kernel_short_name(name), "calls": 0, "us": 0.0})
        r["calls"] += 1
        r["us"] += float(us)
    total = sum(r["us"] for r in rows.values()) or 1.0
    return [{"kernel": r["kernel"], "calls_per_block": r["calls"] / launches, "us_per_block": r["us"] / launches,
             "share": r["us"] / total} for r in rows.values()]


def kernel_floor_us(count: int = 200, reps: int = 20) -> float:
    """Median time of one tiny kernel (an add to one element) in a CUDA graph of `count` of them:
    the least any of a block's launches costs, its gap included."""
    t = torch.zeros(1, device="cuda")

    def adds():
        for _ in range(count):
            t.add_(1.0)

    return graph_ms(adds, count, reps)[0] * 1e3


def run_block_breakdown(K) -> None:
    """Per-kernel times of the fused block (one non-first block per stage at BREAKDOWN_CONFIG,
    eager launches, CUPTI kernel records through torch.profiler): where a block's time goes, in
    the forced density and in the threshold mode at about that density (PATH-thr), beside the
    launch floor (the block's launches x one tiny kernel's time in a CUDA graph) and the block's
    time in a CUDA graph from the timing section."""
    from torch.profiler import ProfilerActivity, profile

    BK, mod = block_kernels(K), block_module()
    res = block_results()
    cfg = BREAKDOWN_CONFIG
    floor = kernel_floor_us()
    log(f"  one tiny kernel in a CUDA graph: {floor:.2f} us (the least each launch costs, its gap included)")
    gen = torch.Generator(device=BK.device).manual_seed(4321)
    H, W = cfg["res"]
    graph_rows = {(r["res"], r["batch"], r["stage"], r["path"], r["density"]): r for r in res["timing"]
                  if r["block"] == "non-first"}
    out = []
    for stage in R101_STAGES:
        cin, p, stride, ds, dcn, h, w = block_geometry(stage, False, H, W)
        x = smooth_input(cfg["batch"], cin, h, w, gen)
        inputs = scaled_block(cin, p, stride, dcn, ds, torch.float16, BK.device, gen, coherent_masks=True)
        a = mod.attrs_for(stride, dcn, ds, C.MODE_THRESHOLD, cfg["density"], C.GRID_PRIOR_INTERVAL, 3)
        L = BK.layout(x.shape, p, 4 * p, a, torch.float16, True)
        ws = torch.empty(L["total"], dtype=torch.uint8, device=BK.device)
        o = (torch.empty(cfg["batch"], 4 * p, h, w, dtype=torch.float16, device=BK.device,
                         memory_format=torch.channels_last),
             torch.empty(cfg["batch"], 1, h, w, dtype=torch.float16, device=BK.device),
             torch.empty(cfg["batch"], 1, h, w, dtype=torch.float16, device=BK.device))
        geo = dict(stride=stride, dcn=int(dcn), downsample=int(ds), batch=cfg["batch"], planes=p)
        for path in block_paths(K, torch.float16):
            if path == "pdl":
                continue  # the same kernels: the per-kernel times are the portable path's
            for label in [path] + ([path + THRESHOLD_VARIANT] if threshold_variant(path) else []):
                with block_gemm(path):
                    if label == path:
                        a_run, wts = a, inputs
                    else:
                        a_run, per_x = matched_threshold_inputs(BK, mod, [x], inputs, [o], ws, geo, cfg["density"])
                        wts = per_x[0]
                    for _ in range(2):  # warm-up
                        BK.run(x, wts, a_run, channels_last=True, poison=False, workspace=ws, outputs=o)
                    torch.cuda.synchronize()
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        for _ in range(cfg["launches"]):
                            BK.run(x, wts, a_run, channels_last=True, poison=False, workspace=ws, outputs=o)
                        torch.cuda.synchronize()
                # every kernel in the window is the block's (the tensors are ready: no copies)
                events = [(e.name, e.time_range.elapsed_us()) for e in prof.events()
                          if str(e.device_type).endswith("CUDA")]
                rows = aggregate_kernels(events, cfg["launches"])
                total = sum(r["us_per_block"] for r in rows)
                launches = sum(r["calls_per_block"] for r in rows)
                g = graph_rows.get((f"{H}x{W}", cfg["batch"], stage[0], label, cfg["density"]))
                graph_us = None if g is None else g["fused_ms"] * 1e3
                out.append(dict(stage=stage[0], path=label, cin=cin, planes=p, h=h, w=w, total_us=total,
                                launches=launches, launch_floor_us=launches * floor, graph_us=graph_us,
                                kernels=rows))
                log(f"  {stage[0]} {label:12} {h}x{w} cin {cin}: {total:.1f} us of kernels per block, "
                    f"{launches:.0f} launches (x {floor:.2f} us = {launches * floor:.1f} us)"
                    + ("" if graph_us is None else f", {graph_us:.1f} us per block in a CUDA graph"))
                for r in rows:
                    log(f"    {r['kernel']:24} x{r['calls_per_block']:<4.0f} {r['us_per_block']:8.1f} us "
                        f"{100 * r['share']:5.1f} %")
    res["breakdown"] = {"config": {**cfg, "res": f"{H}x{W}"}, "kernel_floor_us": floor, "blocks": out}


def block_table() -> None:
    res = block_results()
    if not res["timing"]:
        return
    cfg = res.get("config", {})
    log("")
    log("fused SSIBottleneck (fp16 NHWC, one launch, CUDA graph) vs dense: ms per non-first block, x dense/fused")
    log(f"  dense: s1 cuDNN; s2-s4 {cfg.get('dense_dcn', '?')}; ideal: a regular cuDNN 3x3 in place of DCN")
    if "sm90" not in cfg.get("paths", []):
        log(f"  Hopper path (SSI_BLOCK_GEMM=sm90): unavailable: {(res.get('hopper') or {}).get('status', '?')}")
    if "pdl" in cfg.get("paths", []):
        log("  pdl: the portable kernels chained by programmatic dependent launch (SSI_BLOCK_PDL=1), "
            "timed at the backbone densities")
    else:
        log(f"  pdl (SSI_BLOCK_PDL=1): unavailable: {res.get('pdl') or 'not asked'}")
    if "regs" not in cfg.get("paths", []):
        log(f"  regs (SSI_BLOCK_GEMM=regs): unavailable: {res.get('regs') or 'not asked'}")
    if cfg.get("threshold_variant"):
        log(f"  {cfg['threshold_variant']}")
    log(f"{'res':9} {'n':>1} {'st':2} {'path':12} {'dense':>7} {'ideal':>7} |"
        + "".join(f" {'d=' + format(d, '.2f'):>13}" for d in BLOCK_DENSITIES))
    keys = []
    for r in res["timing"]:
        k = (r["res"], r["batch"], r["stage"], r["path"])
        if r["block"] == "non-first" and k not in keys:
            keys.append(k)
    for k in keys:
        sel = {r["density"]: r for r in res["timing"] if (r["res"], r["batch"], r["stage"], r["path"]) == k
               and r["block"] == "non-first"}
        any_r = next(iter(sel.values()))
        cells = "".join(f" {sel[d]['fused_ms']:7.3f} x{sel[d]['ratio']:4.1f}" if d in sel else f" {'-':>13}"
                        for d in BLOCK_DENSITIES)
        log(f"{k[0]:9} {k[1]:1} {k[2]:2} {k[3]:12} {any_r['dense_ms']:7.3f} {any_r['dense_ideal_ms']:7.3f} |{cells}")
    for b in res["backbone"]:
        log(f"backbone {b['res']} n={b['batch']} d={b['density']:.2f} {b['path']:12}: fused {b['fused_ms']:.2f} ms, "
            f"dense {b['dense_ms']:.2f} ms (x{b['ratio']:.2f}), ideal {b['dense_ideal_ms']:.2f} ms "
            f"(x{b['ratio_ideal']:.2f})")
    if res["backbone"]:
        log(f"  (backbone = {BACKBONE_LABEL})")
    if "regs" in cfg.get("paths", []) and not res.get("pipeline"):
        log("the row GEMMs' cp.async pipeline: no configuration was timed on both regs and portable (a failed path "
            "or the time budget: block.skipped and failures in the JSON)")
    if res.get("pipeline"):
        log("the row GEMMs' cp.async pipeline: the block's time without it (regs, SSI_BLOCK_GEMM=regs) over its "
            "time with it (portable), forced density")
        for g in res["pipeline"]:
            log(f"  {g['res']:9} n={g['batch']} {g['stage']:8} {g['block']:9} d={g['density']:.2f}: "
                f"regs {g['regs_ms']:.3f} ms, portable {g['portable_ms']:.3f} ms (x{g['gain']:.2f})")
    if res["skipped"]:
        log(f"  not timed: {len(res['skipped'])} configuration(s) (time budget, or a failed path), listed in the "
            f"JSON (block.skipped)")


# ------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", type=Path, default=REPO / "build" / "gpu_check" / "lib" / "libssi_cuda.so")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    ap.add_argument("--checks-only", action="store_true", help="skip the timing")
    ap.add_argument("--block-only", action="store_true",
                    help="with --checks-only: the fused block's checks only (gpu_check.sh's racecheck/synccheck passes)")
    ap.add_argument("--timing-only", action="store_true",
                    help="skip the checks (gpu_check.sh runs the timing in a process of its own, so that a "
                         "fault in the checks cannot take the figures with it)")
    ap.add_argument("--small", action="store_true", help="small shapes (e.g. under compute-sanitizer)")
    ap.add_argument("--reps", type=int, default=60, help="timed graph replays per configuration")
    ap.add_argument("--ref-cpu", action="store_true",
                    help="evaluate the kernel checks' references on the CPU (fewer GPU kernels under a sanitizer)")
    ap.add_argument("--no-graphs", action="store_true", help="no CUDA graph (e.g. without the caching allocator)")
    ap.add_argument("--cpu-dry-run", action="store_true", help="run the checks' logic on the CPU twins")
    ap.add_argument("--emulated", type=Path, default=None, metavar="LIB",
                    help="run the checks on the CPU through libssi_cuda_emu.so (the CUDA sources on host fibers)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    ap.add_argument("--block-reps", type=int, default=20, help="timed graph replays per fused-block configuration")
    ap.add_argument("--block-budget", type=float, default=100.0,
                    help="seconds for the fused-block timing; configurations past it are skipped and listed")
    args = ap.parse_args()
    if args.checks_only and args.timing_only:
        print("gpu_check: --checks-only and --timing-only exclude each other: give one of them")
        return 2
    if args.block_only and not args.checks_only:
        print("gpu_check: --block-only selects among the checks: give it with --checks-only")
        return 2
    try:  # the output folder, before any long work
        args.out.mkdir(parents=True, exist_ok=True)
        probe = args.out / ".gpu_check.write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        print(f"gpu_check: cannot write into {args.out} ({e.strerror}): give a writable --out")
        return 2

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
    t0 = time.time()
    KB = K  # the fused block's kernels: K's library; under --cpu-dry-run an emulation library given as --lib
    if args.cpu_dry_run and args.lib.is_file():
        try:
            KB = CudaKernels(args.lib, emulated=True)
            log(f"fused block checks on the host emulation {args.lib}")
        except SystemExit as e:
            log(f"--lib {args.lib} not used under --cpu-dry-run: {e}")
    sections = [("kernel checks", lambda: [fn(K, g, dt, args.small) for dt in (torch.float32, torch.float16)
                                          for fn in (check_sample_mask, check_sparse_conv, check_interp,
                                                     check_edge_shapes)]),
                ("bottleneck", lambda: [check_bottleneck(K, g, dt, not (host or args.no_graphs))
                                        for dt in (torch.float32, torch.float16)]),
                ("fused block checks", lambda: [check_block(KB, g, dt, args.small)
                                                for dt in (torch.float32, torch.float16)])]
    host = args.cpu_dry_run or args.emulated is not None
    if args.timing_only:
        sections = []
    elif args.block_only:
        sections = [s for s in sections if s[0] == "fused block checks"]
    elif not (host or args.no_graphs):
        sections += [("fused block chain in a CUDA graph", lambda: [check_block_graph(K, g, dt)
                                                                    for dt in (torch.float32, torch.float16)])]
    if not (args.checks_only or host):
        sections += [("fused block timing", lambda: run_block_timing(K, args.block_reps, args.block_budget)),
                     ("fused block kernel breakdown", lambda: run_block_breakdown(K)),
                     ("per-op breakdown", lambda: breakdown(K, g)),
                     ("timing", lambda: run_timing(K, g, args.reps, sets=3))]
    for name, fn in sections:
        log(f"== {name}")
        ts = time.time()
        try:
            fn()
        except Exception as e:  # keep going: later sections still report
            traceback.print_exc()
            RESULTS["failures"].append({"kind": name, "name": "exception", "error": f"{type(e).__name__}: {e}"})
            if context_lost(e):
                break  # the context is gone
        RESULTS.setdefault("section_seconds", {})[name] = time.time() - ts
        RESULTS["seconds"] = time.time() - t0
        save_results(args.out)  # after every section
    if RESULTS.get("block", {}).get("timing"):
        try:
            RESULTS["block"]["plot"] = block_plot(args.out / "block_latency.png")
        except Exception as e:  # noqa: BLE001  (a plot is no check)
            RESULTS["block"]["plot"] = f"no plot: {type(e).__name__}: {e}"
        save_results(args.out)

    RESULTS["seconds"] = time.time() - t0
    save_results(args.out)
    checks = RESULTS["checks"]
    log("")
    what = "timing only (no checks)" if args.timing_only else f"checks: {sum(c['ok'] for c in checks)}/{len(checks)} passed"
    log(f"{what}, {len(RESULTS['failures'])} failure(s); {RESULTS['seconds']:.0f} s; json: {args.out / 'gpu_check.json'}")
    for f in RESULTS["failures"][:10]:
        log(f"  FAIL {f.get('kind')} {f.get('name')} {f.get('rel_err', f.get('error', ''))}")
    if RESULTS["timing"]:
        log(f"{'stage':7} {'density':>7} {'m2':>6} {'dense ms':>9} {'SSI ms':>8} {'speedup':>7}")
        for r in RESULTS["timing"]:
            log(f"{r['stage']:7} {r['density']:7.2f} {r['density_m2']:6.3f} {r['dense_ms']:9.3f} {r['ssi_ms']:8.3f} "
                f"{r['speedup']:7.2f}")
    block_table()
    if RESULTS.get("block", {}).get("plot"):
        log(f"plot: {RESULTS['block']['plot']}")
    return 1 if RESULTS["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
