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


def interp_matrix(m: torch.Tensor, window: torch.Tensor,
                  compact: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
    """Sparse CSR [NHW, NHW] such that ``interp_matrix @ f`` = m f + (1 - m) N / D.

    With ``compact`` = (index, P), where index maps a dense position to its row in a compact
    [P, C] value matrix (``block_kernels.Compaction.index``), the matrix is [NHW, P] and
    multiplies the compact rows instead.

    Row q holds (1 - m(q)) W(d) m(q+d) / D(q) at column q+d for the sampled neighbours of an
    unsampled (or soft) q, plus m(q) on its diagonal: the interpolation is then one sparse
    product over the dense value rows that reads only sampled rows and writes every row, with
    no gather, scatter or mask pass. The 7x7 neighbourhoods are an ``unfold`` view of the
    one-channel mask (cheap next to the C-channel product).
    """
    n_, _, h, w = m.shape
    hw, k = h * w, C.INTERP_WINDOW
    padded = F.pad(m, (RADIUS,) * 4)  # zero outside the map
    taps = padded.unfold(2, k, 1).unfold(3, k, 1)  # [N, 1, H, W, 7, 7] view: m(q + d)
    weight = (taps * window).reshape(n_ * hw, k * k)  # W(d) m(q+d)
    m_row = m.reshape(-1, 1)
    weight *= (1.0 - m_row) / (weight.sum(1, keepdim=True) + C.INTERP_EPS)
    weight[:, (k * k) // 2] += m_row.squeeze(1)  # the centre tap carries m(q) f(q)
    row, tap = torch.nonzero(weight > 0).unbind(1)  # row-major: rows come sorted
    r = torch.arange(-RADIUS, RADIUS + 1, device=m.device)
    shift = (r.view(-1, 1) * w + r.view(1, -1)).reshape(-1)  # column offset of each tap
    crow = torch.zeros(n_ * hw + 1, dtype=torch.int64, device=m.device)
    torch.cumsum(torch.bincount(row, minlength=n_ * hw), 0, out=crow[1:])
    cols, n_cols = row + shift[tap], n_ * hw
    if compact is not None:
        cols, n_cols = compact[0][cols], compact[1]
    with warnings.catch_warnings():  # "CSR support is in beta" is noise here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, weight[row, tap], (n_ * hw, n_cols),
                                       check_invariants=False)


def _check(shape, mask, bias, residual):
    n_, c, h, w = shape
    if tuple(mask.shape) != (n_, 1, h, w):
        raise ValueError(f"GaussianInterp: mask must be {(n_, 1, h, w)}, got {tuple(mask.shape)}")
    if bias.numel() != c:
        raise ValueError(f"GaussianInterp: bias must have {c} values, got {bias.numel()}")
    if residual is not None and tuple(residual.shape) != tuple(shape):
        raise ValueError(f"GaussianInterp: residual must be {tuple(shape)}, "
                         f"got {tuple(residual.shape)}")


def _interp(src_rows, shape, mask, bias, residual, sigma, relu, dtype, compact=None):
    n_, c, h, w = shape
    m = mask.to(torch.float32)
    # bias (+ residual) is the addend of one sparse matrix product: out = base + A @ f.
    if residual is None:
        out = bias.float().expand(n_ * h * w, c).clone()
    else:
        out = rows_nhwc(residual).float() + bias.float()
    if src_rows.shape[0]:
        # A reads only rows with m > 0, so unsampled values are never read (NaN is fine there).
        a = interp_matrix(m, gaussian_window(sigma, src_rows.device), compact)
        out.addmm_(a, src_rows.float())
    # (no sample at all: R = 0 / eps = 0 everywhere, out is bias [+ residual])
    if relu:
        out.relu_()
    return out.to(dtype).reshape(n_, h, w, c).permute(0, 3, 1, 2)


def gaussian_interp(values: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor,
                    residual: torch.Tensor | None = None, sigma: float = C.SIGMA_INIT,
                    relu: int = 0) -> torch.Tensor:
    """The GaussianInterp op: dense values in (read only where mask > 0), dense map out."""
    _check(values.shape, mask, bias, residual)
    return _interp(rows_nhwc(values), values.shape, mask, bias, residual, sigma, relu,
                   values.dtype)

