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
                      u_lin: torch.Tensor, s_lin: torch.Tensor):
    """Sparse CSR [Pu, Ps]: entry W(d) m(q+d) / D(q) for unsampled q and sampled q+d."""
    n_, _, h, w = m.shape
    hw = h * w
    compact = torch.full((n_ * hw,), -1, dtype=torch.int64, device=m.device)
    compact[s_lin] = torch.arange(s_lin.numel(), device=m.device)
    un = u_lin // hw
    rem = u_lin - un * hw
    uy = rem // w
    ux = rem - uy * w
    r = torch.arange(-RADIUS, RADIUS + 1, device=m.device)
    dy = r.repeat_interleave(C.INTERP_WINDOW)
    dx = r.repeat(C.INTERP_WINDOW)
    yy = uy.unsqueeze(1) + dy
    xx = ux.unsqueeze(1) + dx
    inb = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    nb = (un * hw).unsqueeze(1) + yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)
    col = compact[nb]
    valid = inb & (col >= 0)
    row, tap = valid.nonzero(as_tuple=True)  # row-major: rows come sorted
    src = nb[row, tap]
    m_flat = m.reshape(-1)
    vals = window.reshape(-1)[tap] * m_flat[src] / d.reshape(-1)[u_lin[row]]
    crow = torch.zeros(u_lin.numel() + 1, dtype=torch.int64, device=m.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=u_lin.numel()), 0)
    with warnings.catch_warnings():  # "CSR support is in beta" is noise here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col[row, tap], vals, (u_lin.numel(), s_lin.numel()),
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
    m_flat = m.reshape(-1)
    if residual is None:
        out = bias.float().expand(n_ * h * w, c).clone()
    else:
        out = rows_nhwc(residual).float() + bias.float()
    s_lin = torch.nonzero(m_flat > 0).squeeze(1)
    if s_lin.numel():
        f_s = rows_nhwc(values)[s_lin].float()
        out.index_add_(0, s_lin, f_s * m_flat[s_lin].unsqueeze(1))
        u_lin = torch.nonzero(m_flat < 1).squeeze(1)
        if u_lin.numel():
            window = gaussian_window(sigma, values.device)
            a = _neighbour_matrix(m, window, normaliser(m, window), u_lin, s_lin)
            r = torch.sparse.mm(a, f_s)
            out.index_add_(0, u_lin, r * (1.0 - m_flat[u_lin]).unsqueeze(1))
    # With no sample at all, R = 0/eps = 0 everywhere: out is bias (+ residual).
    if relu:
        out = torch.relu_(out)
    return out.to(values.dtype).reshape(n_, h, w, c).permute(0, 3, 1, 2)
