"""SparseConv2d: a convolution evaluated only at the output positions where mask > 0.

The work is gather -> matrix multiply -> scatter over the P sampled positions, so it costs
P / (N*Ho*Wo) of the dense convolution. Tensors are handled channels-last internally (a row
per position), which makes gathers and scatters contiguous; the output is returned as a
channels-last NCHW tensor (zeros at unsampled positions).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def rows_nhwc(t: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] -> [N*H*W, C] (a view when ``t`` is channels-last)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


class Positions(NamedTuple):
    """Sampled positions of a mask [N,1,H,W]: flat indices over N*H*W and their (n, y, x).

    The compact representation of a sparse map is (Positions, rows [P, C]); the dense one is
    [N, C, H, W] with zeros elsewhere. Chains of SSI ops in eager mode pass compact rows.
    """

    lin: torch.Tensor
    n: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor


def sampled_positions(mask: torch.Tensor) -> Positions:
    _, _, h, w = mask.shape
    lin = torch.nonzero(mask.reshape(-1) > 0).squeeze(1)
    n = lin // (h * w)
    rem = lin - n * (h * w)
    y = rem // w
    return Positions(lin, n, y, rem - y * w)


def _gather_rows(x_rows, rows, ok=None):
    """x_rows[rows] as float32 [P, K, Cin]; rows where ``ok`` is False read zeros."""
    p, k = rows.shape
    out = x_rows[rows.reshape(-1)].float().reshape(p, k, -1)
    if ok is not None:
        bad = torch.nonzero(~ok.reshape(-1)).squeeze(1)
        if bad.numel():  # zero only the out-of-map taps, not a pass over everything
            out.view(p * k, -1).index_fill_(0, bad, 0.0)
    return out


def _gather_taps(x, x_rows, n, yo, xo, h, w, kh, kw, sh, sw, ph, pw, dh, dw, offset_rows):
    """Patches [P, kh*kw, Cin] (float32) at the sampled output positions."""
    iy = torch.arange(kh, device=n.device).repeat_interleave(kw) * dh  # [K] tap rows
    ix = torch.arange(kw, device=n.device).repeat(kh) * dw
    base_y = (yo * sh - ph).unsqueeze(1) + iy  # [P, K]
    base_x = (xo * sw - pw).unsqueeze(1) + ix
    nb = (n * h).unsqueeze(1)
    if offset_rows is None:
        ok = (base_y >= 0) & (base_y < h) & (base_x >= 0) & (base_x < w)
        rows = (nb + base_y.clamp(0, h - 1)) * w + base_x.clamp(0, w - 1)
        return _gather_rows(x_rows, rows, ok)
    # Deformable v1 (mmdet 0.6): bilinear sample at base + (dy, dx); corners outside the map
    # read 0, so a sample counts only if -1 < y < H and -1 < x < W. That is exactly
    # grid_sample's bilinear "zeros" padding (with align_corners=False, pixel i sits at
    # (2i + 1)/W - 1, for any W including 1), which does the four gathers and the weighting
    # in one pass.
    off = offset_rows.float().reshape(offset_rows.shape[0], -1, 2)
    py = base_y.float() + off[..., 0]
    px = base_x.float() + off[..., 1]
    grid = torch.stack(((2.0 * px + 1.0) / w - 1.0, (2.0 * py + 1.0) / h - 1.0), -1)
    k = base_y.shape[1]
    counts = torch.bincount(n, minlength=x.shape[0]).tolist()  # positions are sorted by image
    parts = []
    for i, (g, cnt) in enumerate(zip(grid.split(counts), counts)):
        if cnt:
            s = F.grid_sample(x[i:i + 1].float(), g.reshape(1, 1, -1, 2), mode="bilinear",
                              padding_mode="zeros", align_corners=False)  # [1, C, 1, cnt*K]
            parts.append(s.reshape(x.shape[1], cnt * k).t())
    return torch.cat(parts).reshape(len(n), k, -1)


def check_conv_shapes(x, weight, mask_shape, offset, stride_h, stride_w, pad_h, pad_w,
                      dilation_h, dilation_w, groups) -> tuple[int, int]:
    """Validate SparseConv2d's inputs; returns (Ho, Wo)."""
    n_, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride_h, pad_h, dilation_h)
    wo = conv_output_size(w, kw, stride_w, pad_w, dilation_w)
    if cin != cin_g * groups or cout % groups:
        raise ValueError(f"SparseConv2d: weight {tuple(weight.shape)} does not fit {cin} input "
                         f"channels in {groups} groups")
    if tuple(mask_shape) != (n_, 1, ho, wo):
        raise ValueError(f"SparseConv2d: mask must be {(n_, 1, ho, wo)}, got {tuple(mask_shape)}")
    if offset is not None and tuple(offset.shape) != (n_, 2 * kh * kw, ho, wo):
        raise ValueError(f"SparseConv2d: offset must be {(n_, 2 * kh * kw, ho, wo)}, "
                         f"got {tuple(offset.shape)}")
    return ho, wo


def sparse_conv2d_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       pos: Positions, offset_rows: torch.Tensor | None = None,
                       stride_h: int = 1, stride_w: int = 1, pad_h: int = 0, pad_w: int = 0,
                       dilation_h: int = 1, dilation_w: int = 1, groups: int = 1,
                       relu: int = 0) -> torch.Tensor:
    """The convolution at ``pos`` only: float32 rows [P, Cout] (gather, GEMM, epilogue).

    ``offset_rows``: deformable offsets at those positions, [P, 2*kh*kw].
    """
    n_, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    if pos.lin.numel() == 0:
        return x.new_zeros((0, cout), dtype=torch.float32)
    x_rows = rows_nhwc(x)
    if offset_rows is None and kh == kw == 1 and pad_h == pad_w == 0:
        patches = x_rows[(pos.n * h + pos.y * stride_h) * w + pos.x * stride_w].float().unsqueeze(1)
    else:
        patches = _gather_taps(x, x_rows, pos.n, pos.y, pos.x, h, w, kh, kw, stride_h, stride_w,
                               pad_h, pad_w, dilation_h, dilation_w, offset_rows)
    return conv_rows_gemm(patches, weight, bias, groups, relu)


def conv_rows_gemm(patches: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   groups: int = 1, relu: int = 0) -> torch.Tensor:
    """act(patches [P, K, Cin] x weight + bias) -> [P, Cout] float32."""
    cout, cin_g, kh, kw = weight.shape
    p, k = patches.shape[0], kh * kw
    wmat = weight.float().permute(0, 2, 3, 1)  # [Cout, kh, kw, Cin/g]: tap-major like patches
    if groups == 1:
        res = torch.addmm(bias.float(), patches.reshape(p, -1), wmat.reshape(cout, -1).t())
    else:
        pg = patches.reshape(p, k, groups, cin_g).permute(2, 0, 1, 3).reshape(groups, p, -1)
        wg = wmat.reshape(groups, cout // groups, k * cin_g)
        res = torch.bmm(pg, wg.transpose(1, 2)).permute(1, 0, 2).reshape(p, cout) + bias.float()
    return res.relu_() if relu else res


def scatter_rows(rows: torch.Tensor, pos: Positions, shape: tuple[int, int, int, int],
                 dtype: torch.dtype) -> torch.Tensor:
    """Compact rows -> dense channels-last [N, C, H, W], zeros elsewhere."""
    n_, c, h, w = shape
    out = rows.new_zeros((n_, h, w, c), dtype=dtype)
    if rows.shape[0]:
        out.view(-1, c).index_copy_(0, pos.lin, rows.to(dtype))
    return out.permute(0, 3, 1, 2)


def sparse_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor,
                  offset: torch.Tensor | None = None, stride_h: int = 1, stride_w: int = 1,
                  pad_h: int = 0, pad_w: int = 0, dilation_h: int = 1, dilation_w: int = 1,
                  groups: int = 1, relu: int = 0) -> torch.Tensor:
    """The SparseConv2d op (dense in, dense out): y = act(conv(x) + bias) where mask > 0, else 0."""
    ho, wo = check_conv_shapes(x, weight, mask.shape, offset, stride_h, stride_w, pad_h, pad_w,
                               dilation_h, dilation_w, groups)
    pos = sampled_positions(mask)
    off_rows = None if offset is None else rows_nhwc(offset)[pos.lin]
    rows = sparse_conv2d_rows(x, weight, bias, pos, off_rows, stride_h, stride_w, pad_h, pad_w,
                              dilation_h, dilation_w, groups, relu)
    return scatter_rows(rows, pos, (x.shape[0], weight.shape[0], ho, wo), x.dtype)
