"""The kernels of the SSIBottleneck op on compact rows, in PyTorch, with native twins.

Data between the steps of a block are channels-last rows: a dense map [N, C, H, W] is
[N*H*W, C] (row q = (n*H + y)*W + x) and a sparse one is compact rows [count, C] at the sampled
positions of a mask, in raster order (``Compaction``). Each function here has a PyTorch form
(this file; any device, the reference) and, on the CPU, a native form in ``libssi_cpu.so``
(``ssi_deploy.native.block``: OpenMP, the per-element arithmetic of ``plugins/include/ssi/math.h``)
used when that library is available. Both compute the same float32 steps; only the order of
the sums inside the interpolation may differ (within float32 rounding).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import contract as C
from .interpolation import gaussian_window, interp_matrix
from .sparse_conv import _gather_taps


class Compaction(NamedTuple):
    """One mask's stable partition of the positions [N*H*W] (raster order, images in turn).

    ``perm``: int64 [N*H*W], the sampled positions (mask > 0) first, then the others, each
    group in raster order; ``count``: how many are sampled; ``index``: int32 [N*H*W], the row
    of a sampled position in the compact rows (its place in ``perm``), -1 elsewhere. Every conv
    of that mask reads the same compaction. ``head``: ``perm[:count]`` where the maker already
    has that view (a block's reused buffers), else None.
    """

    perm: torch.Tensor
    count: int
    index: torch.Tensor
    head: torch.Tensor | None = None

    @property
    def sampled(self) -> torch.Tensor:
        return self.head if self.head is not None else self.perm[:self.count]


def compact(mask: torch.Tensor) -> Compaction:
    """The compaction of a mask [N, 1, H, W] (positions with mask > 0 are sampled)."""
    lib = native_kernels() if mask.device.type == "cpu" else None
    if lib is not None:
        return Compaction(*lib.compact(mask))
    keep = mask.reshape(-1) > 0
    sampled = torch.nonzero(keep).squeeze(1)
    rest = torch.nonzero(~keep).squeeze(1)
    count = int(sampled.numel())
    index = torch.full((keep.numel(),), -1, dtype=torch.int32, device=mask.device)
    index[sampled] = torch.arange(count, dtype=torch.int32, device=mask.device)
    return Compaction(torch.cat([sampled, rest]), count, index)


_native_block = None


def native_kernels():
    global _native_block
    if _native_block is None:  # imported on first use (not at import time: no cycle)
        from ..native import block as native_block

        _native_block = native_block
    return _native_block.available()


def interp_rows(rows: torch.Tensor, comp: Compaction, mask: torch.Tensor, sigma: float,
                bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                relu: bool = False, out: torch.Tensor | None = None,
                read_by: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
    """GaussianInterp of compact rows [count, C] into dense rows [N*H*W, C] float32:
    act(m f + (1 - m) N / D + bias [+ residual]) (spec section 4), ``residual`` dense rows.

    ``read_by`` = (mask2, stride): the result is the input of a 3x3 convolution (padding 1)
    at that stride computed at mask2's sampled outputs (conv2 of the block), and only the
    positions their patches read need be right; the native kernel computes just those (no
    bias, residual or ReLU with it), the others hold anything. The PyTorch form computes all."""
    n_, _, h, w = mask.shape
    c = rows.shape[1]
    lib = native_kernels() if rows.device.type == "cpu" else None
    if lib is not None:
        if read_by is not None and bias is None and residual is None and not relu:
            return lib.interp_rows_for_conv(rows, comp.index, mask, sigma, read_by[0], read_by[1], out)
        return lib.interp_rows(rows, comp.index, mask, sigma, bias, residual, relu, out)
    m = mask.to(torch.float32)
    if residual is None:
        res = (bias.float() if bias is not None else rows.new_zeros(c)).expand(n_ * h * w, c).clone()
    else:
        res = residual.float() + (bias.float() if bias is not None else 0.0)
    if comp.count:
        a = interp_matrix(m, gaussian_window(sigma, rows.device), (comp.index.long(), comp.count))
        res.addmm_(a, rows.float())
    if relu:
        res.relu_()
    if out is not None:
        out.copy_(res)
        return out
    return res


def patches3x3(src: torch.Tensor, shape: tuple[int, int, int], positions: torch.Tensor,
               out_hw: tuple[int, int], stride: int,
               offsets: torch.Tensor | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """3x3 patches (padding 1, zeros outside the map) of dense rows ``src`` [N*H*W, C] at the
    output positions ``positions`` (int64 flat indices over N*Ho*Wo): float32 [P, 9*C],
    tap-major (tap t = 3 i + j, then channel). ``offsets`` [P, 18] (dy, dx per tap):
    deformable v1 bilinear sampling (mmdet 0.6, corners outside the map read 0). ``out``: a
    buffer [P, 9*C] the result may be written into (the returned tensor is the result)."""
    n_, h, w = shape
    ho, wo = out_hw
    c = src.shape[1]
    p = positions.numel()
    if p == 0:
        return src.new_zeros((0, 9 * c), dtype=torch.float32)
    lib = native_kernels() if src.device.type == "cpu" else None
    if lib is not None:
        return lib.patches3x3(src, shape, positions, out_hw, stride, offsets, out)
    nb = positions // (ho * wo)
    rem = positions - nb * (ho * wo)
    yo = rem // wo
    xo = rem - yo * wo
    x_nchw = src.view(n_, h, w, c).permute(0, 3, 1, 2) if offsets is not None else None
    taps = _gather_taps(x_nchw, src, nb, yo, xo, h, w, 3, 3, stride, stride, 1, 1, 1, 1,
                        offsets)
    return taps.reshape(p, 9 * c)


def tap_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weights [K, Cin, 3, 3] of 3x3 convolutions with few outputs as the [9 K, Cin]
    matrix :func:`mask_taps` multiplies (row t K + k: tap t = 3 i + j of output k)."""
    k, cin = weight.shape[:2]
    return weight.float().permute(2, 3, 0, 1).reshape(9 * k, cin).contiguous()


def onednn_linear():
    """oneDNN's fused matmul (``torch.ops.mkldnn._linear_pointwise``, what Inductor's CPU
    backend calls: ``(x [M, K], w [N, K], bias or None, "none" | "relu", [], "")``) or None
    where this PyTorch build lacks it. Measured here (AMD EPYC, 2 threads) at 1.1-2.2x MKL
    sgemm for every row count of the block, stage 4's few rows included, and as fast as a
    1x1 convolution from 256 rows on; the ReLU runs in its epilogue. Float32, no backward."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def mask_taps(x_rows: torch.Tensor, w_t: torch.Tensor,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Every tap's partial products of 3x3 convolutions with a few outputs K (the mask convs)
    of dense rows ``x_rows`` [N*H*W, Cin], ``w_t`` = :func:`tap_matrix` of their weights:
    [N*H*W, 9 K] float32, column t K + k for tap t = 3 i + j of output k, from one GEMM
    [N*H*W, Cin] x [Cin, 9 K] (on the CPU far faster than a convolution with so few
    outputs). The native GEMM on the CPU (as fast as oneDNN's matmul here from 256 rows, MKL's
    sgemm is slow with so few columns): its order of sums is the one of the taps that
    :func:`interp_rows_and_taps` computes, so a block's taps are the same bits whichever
    computed them."""
    if x_rows.device.type == "cpu":
        lib = native_kernels()
        if lib is not None:
            return lib.small_gemm(x_rows, w_t, out)
    return torch.mm(x_rows.float(), w_t.t(), out=out) if out is not None else \
        torch.mm(x_rows.float(), w_t.t())


def interp_rows_and_taps(rows: torch.Tensor, comp: Compaction, mask: torch.Tensor, sigma: float,
                         bias: torch.Tensor | None, residual: torch.Tensor | None, relu: bool,
                         taps_w: torch.Tensor, out: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`interp_rows`, :func:`mask_taps` of its result by ``taps_w``): on the CPU one
    native pass that multiplies each output row while it is still in cache, instead of a GEMM
    that reads the whole map again (the next block's mask taps from this block's last kernel,
    design C of gpu-block-design.md); the same bits as the two calls. ``out``: as in
    :func:`interp_rows` (it may be ``residual`` itself)."""
    lib = native_kernels() if rows.device.type == "cpu" else None
    if lib is not None:
        return lib.interp_rows_taps(rows, comp.index, mask, sigma, bias, residual, relu, out,
                                    taps_w=taps_w)
    y = interp_rows(rows, comp, mask, sigma, bias, residual, relu, out)
    return y, mask_taps(y, taps_w)


def sum_taps(taps: torch.Tensor, k: int, shape: tuple[int, int, int], bias: torch.Tensor,
             stride: int) -> torch.Tensor:
    """Output ``k`` of the convolution (padding 1) at ``stride`` from :func:`mask_taps`:
    [N, 1, Ho, Wo] float32 = bias + the nine shifted taps, added in tap order (taps outside
    the map skipped: zero padding)."""
    n_, h, w = shape
    lib = native_kernels() if taps.device.type == "cpu" else None
    if lib is not None:
        return lib.sum_taps(taps, k, shape, float(bias.reshape(-1)[0]), stride)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    maps = taps.view(n_, h, w, 9, -1)[..., k]  # [N, H, W, 9]
    out = bias.float().reshape(1)[0].expand(n_, ho, wo).clone()
    for t in range(9):
        dy, dx = t // 3 - 1, t % 3 - 1  # output (yo, xo) reads (yo*s + dy, xo*s + dx)
        y0, x0 = (1 if dy < 0 else 0), (1 if dx < 0 else 0)
        y1, x1 = min(ho, (h - 1 - dy) // stride + 1), min(wo, (w - 1 - dx) // stride + 1)
        if y1 > y0 and x1 > x0:
            out[:, y0:y1, x0:x1] += maps[:, y0 * stride + dy:(y1 - 1) * stride + dy + 1:stride,
                                         x0 * stride + dx:(x1 - 1) * stride + dx + 1:stride, t]
    return out.unsqueeze(1)

