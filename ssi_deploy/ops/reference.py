"""Dense oracles of the SSI ops, written the official way (compute densely, then mask).

For tests only: they are slow on purpose and share no code with the sparse ops except the
Gaussian window and the sampling function, which are part of the contract.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import contract as C
from .interpolation import gaussian_window


def deform_conv2d_dense(x, weight, offset, stride, pad, dilation):
    """Deformable conv v1 (mmdet 0.6 semantics), dense, by explicit bilinear sampling."""
    n_, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    ho, wo = offset.shape[2], offset.shape[3]
    oy = torch.arange(ho, dtype=torch.float64).view(1, -1, 1) * stride[0] - pad[0]
    ox = torch.arange(wo, dtype=torch.float64).view(1, 1, -1) * stride[1] - pad[1]
    cols = []
    xd = x.double()
    for i in range(kh):
        for j in range(kw):
            t = i * kw + j
            py = oy + i * dilation[0] + offset[:, 2 * t].double()
            px = ox + j * dilation[1] + offset[:, 2 * t + 1].double()
            inside = (py > -1) & (py < h) & (px > -1) & (px < w)
            y0, x0 = torch.floor(py), torch.floor(px)
            acc = torch.zeros(n_, cin, ho, wo, dtype=torch.float64)
            for cy, cx, wy, wx in ((y0, x0, y0 + 1 - py, x0 + 1 - px), (y0, x0 + 1, y0 + 1 - py, px - x0),
                                   (y0 + 1, x0, py - y0, x0 + 1 - px), (y0 + 1, x0 + 1, py - y0, px - x0)):
                ok = inside & (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
                idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long().view(n_, 1, -1)
                v = torch.gather(xd.view(n_, cin, -1), 2, idx.expand(-1, cin, -1)).view(n_, cin, ho, wo)
                acc += v * (wy * wx * ok).unsqueeze(1)
            cols.append(acc)
    col = torch.stack(cols, 2)  # [N, Cin, K, Ho, Wo]
    return torch.einsum("nckhw,ock->nohw", col, weight.double().reshape(cout, cin, kh * kw))


def sparse_conv2d_oracle(x, weight, bias, mask, offset=None, stride_h=1, stride_w=1, pad_h=0,
                         pad_w=0, dilation_h=1, dilation_w=1, groups=1, relu=0):
    """Dense convolution (float64), then zero where mask == 0."""
    if offset is None:
        y = F.conv2d(x.double(), weight.double(), bias.double(), (stride_h, stride_w),
                     (pad_h, pad_w), (dilation_h, dilation_w), groups)
    else:
        assert groups == 1
        y = deform_conv2d_dense(x, weight, offset, (stride_h, stride_w), (pad_h, pad_w),
                                (dilation_h, dilation_w)) + bias.double().view(1, -1, 1, 1)
    if relu:
        y = torch.relu(y)
    return y * (mask.double() > 0)


def gaussian_interp_oracle(values, mask, bias, residual=None, sigma=C.SIGMA_INIT, relu=0):
    """The official reconstruct_feature (float64): dense depthwise 7x7 convolutions."""
    c = values.shape[1]
    wnd = gaussian_window(sigma).double().view(1, 1, C.INTERP_WINDOW, C.INTERP_WINDOW)
    m = mask.double()
    f = values.double() * (m > 0)  # unsampled values are never read
    d = F.conv2d(m, wnd, padding=C.INTERP_WINDOW // 2) + C.INTERP_EPS
    num = F.conv2d(f * m, wnd.repeat(c, 1, 1, 1), padding=C.INTERP_WINDOW // 2, groups=c)
    out = m * f + (1.0 - m) * num / d + bias.double().view(1, -1, 1, 1)
    if residual is not None:
        out = out + residual.double()
    return torch.relu(out) if relu else out
