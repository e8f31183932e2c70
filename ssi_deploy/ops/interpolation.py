"""GaussianInterp: rebuild a dense map from values at sampled positions (spec section 4).

    W(d)  = s^2/(2 pi) * exp(-s^2 |d|^2 / 2)            d in {-3..3}^2, s = sigma
    D(q)  = sum_d W(d) m(q+d) + 1e-5
    R(q)  = sum_d W(d) m(q+d) f(q+d) / D(q)
    out(q)= act(m(q) f(q) + (1 - m(q)) R(q) + bias [+ residual])

Cost is proportional to what is needed, as the official cost model assumes: R only at
positions with m < 1, each from its sampled neighbours (a sparse matrix of
unsampled x sampled positions times the compact sampled rows); f only where m > 0.
Arithmetic in float32 whatever the I/O dtype (the weights underflow in fp16).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from . import contract as C
from .sparse_conv import rows_nhwc

RADIUS = C.INTERP_WINDOW // 2


def gaussian_window(sigma: float | torch.Tensor, device=None) -> torch.Tensor:
    """[7, 7] float32 kernel W(d); differentiable when ``sigma`` is a tensor.

    Float32 steps (mirrored by the kernels): k = s*s; a = k / float(2 pi); w = a * exp((-k/2) * |d|^2).
    """
    s = sigma if torch.is_tensor(sigma) else torch.tensor(float(sigma), device=device)
    s = s.to(torch.float32)
    r = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float32, device=s.device)
    d2 = r.view(-1, 1) ** 2 + r.view(1, -1) ** 2
    k = s * s
    return (k / (2.0 * math.pi)) * torch.exp((-k * 0.5) * d2)


def normaliser(mask32: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """D = W * m + eps, [N,1,H,W] float32 (a one-channel convolution: cheap)."""
    return F.conv2d(mask32, window.view(1, 1, C.INTERP_WINDOW, C.INTERP_WINDOW),
                    padding=RADIUS) + C.INTERP_EPS


def _neighbour_matrix(m: torch.Tensor, window: torch.Tensor, d: torch.Tensor,
                      u_lin: torch.Tensor):
    """Sparse CSR [NHW, NHW] with, in the rows of unsampled positions q (m < 1), the
    entries W(d) m(q+d) / D(q) for sampled neighbours q+d (m > 0); other rows are empty.

    Multiplied by the dense value rows it gives R at every position with no scatter: the
    empty rows cost nothing and columns of unsampled positions never appear.
    """
    n_, _, h, w = m.shape
    hw = h * w
    m_flat = m.reshape(-1)
    un = u_lin // hw
    rem = u_lin - un * hw
    uy = rem // w
    ux = rem - uy * w
    r = torch.arange(-RADIUS, RADIUS + 1, device=m.device)
    yy = uy.unsqueeze(1) + r.repeat_interleave(C.INTERP_WINDOW)  # [Pu, 49]
    xx = ux.unsqueeze(1) + r.repeat(C.INTERP_WINDOW)
    inb = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    nb = (un * hw).unsqueeze(1) + yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)
    weight = window.reshape(1, -1) * m_flat[nb] * inb  # zero unless an in-map sample
    row, tap = torch.nonzero(weight).unbind(1)  # row-major: rows come sorted
    vals = weight[row, tap] / d.reshape(-1)[u_lin[row]]
    counts = torch.zeros(n_ * hw, dtype=torch.int64, device=m.device)
    counts[u_lin] = torch.bincount(row, minlength=u_lin.numel())
    crow = torch.zeros(n_ * hw + 1, dtype=torch.int64, device=m.device)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():  # "CSR support is in beta" is noise here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, nb[row, tap], vals, (n_ * hw, n_ * hw),
                                       check_invariants=False)


def gaussian_interp(values: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor,
                    residual: torch.Tensor | None = None, sigma: float = C.SIGMA_INIT,
                    relu: int = 0) -> torch.Tensor:
    n_, c, h, w = values.shape
    if tuple(mask.shape) != (n_, 1, h, w):
        raise ValueError(f"GaussianInterp: mask must be {(n_, 1, h, w)}, got {tuple(mask.shape)}")
    if bias.numel() != c:
        raise ValueError(f"GaussianInterp: bias must have {c} values, got {bias.numel()}")
    if residual is not None and residual.shape != values.shape:
        raise ValueError(f"GaussianInterp: residual must be {tuple(values.shape)}, "
                         f"got {tuple(residual.shape)}")
    m = mask.to(torch.float32)
    m_col = m.reshape(-1, 1)
    sampled = m_col > 0
    # Values are only read where m > 0 (elsewhere they may be anything, even NaN).
    f = torch.where(sampled, rows_nhwc(values).float(), 0.0)
    u_lin = torch.nonzero(m_col.squeeze(1) < 1).squeeze(1)
    if u_lin.numel() and bool(sampled.any()):
        window = gaussian_window(sigma, values.device)
        a = _neighbour_matrix(m, window, normaliser(m, window), u_lin)
        out = torch.sparse.mm(a, f).mul_(1.0 - m_col)  # (1 - m) R; rows with m = 1 are 0
        out.addcmul_(f, m_col)
    else:  # no unsampled position, or no sample at all (then R = 0 / eps = 0)
        out = f * m_col
    out += bias.float()
    if residual is not None:
        out += rows_nhwc(residual)
    if relu:
        out.relu_()
    return out.to(values.dtype).reshape(n_, h, w, c).permute(0, 3, 1, 2)
