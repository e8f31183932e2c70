"""ResNet bottlenecks: the dense one and the SSI one (spec sections 1-3).

Parameter names follow the official checkpoints (mmdet 0.6 ``SparseResNet``), so a state dict
loads as it is. Three forward paths:

- training: the official order with soft Gumbel masks, differentiable (mask convs, sigmas);
- eval, ``execution="sparse"`` (default): the sparse order of the spec, computing conv1,
  conv2 and conv3 only at sampled positions, BN folded. Two forms with the same arithmetic:
  ``forward_sparse`` through the SSI ops (what torch.export traces: one node per op, dense
  tensors between them, DCN offsets by SparseConv2d) and, in eager mode,
  ``forward_sparse_rows``, which keeps sampled features as compact rows and computes the mask
  logits and DCN offsets in one dense pass over x (faster on the CPU);
- eval, ``execution="official"``: the official dense-masked order with the same masks (the
  reference that the sparse order must match within float32 rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import contract as C
from ..ops import select_ops
from ..ops.interpolation import gaussian_interp_rows, gaussian_window
from ..ops.sampling import decision_margin
from ..ops.sparse_conv import conv_rows_gemm, rows_nhwc, sampled_positions, sparse_conv2d_rows
from .folding import fold_conv_bn
from .gumbel import GumbelSigmoid


def deform_conv2d(x, weight, offset, stride: int, padding: int, dilation: int = 1):
    """Dense deformable conv v1: SparseConv2d with a full mask (one SSI node in an export;
    differentiable in eager mode)."""
    ones = torch.ones_like(offset[:, :1])
    bias = weight.new_zeros(weight.shape[0])
    kw = dict(stride_h=stride, stride_w=stride, pad_h=padding, pad_w=padding,
              dilation_h=dilation, dilation_w=dilation)
    return select_ops().sparse_conv2d(x, weight, bias, ones, offset, **kw)


def interp_official(feature: torch.Tensor, mask: torch.Tensor, sigma) -> torch.Tensor:
    """The official ``reconstruct_feature`` (dense depthwise convolutions), differentiable.

    Always float32 inside (the window's outer weights underflow in fp16), result in the
    feature's dtype."""
    c = feature.shape[1]
    f32, m32 = feature.float(), mask.float()
    w = gaussian_window(sigma).view(1, 1, C.INTERP_WINDOW, C.INTERP_WINDOW)
    pad = C.INTERP_WINDOW // 2
    norm = F.conv2d(m32, w, padding=pad) + C.INTERP_EPS
    rec = F.conv2d(f32 * m32, w.expand(c, 1, -1, -1), padding=pad, groups=c) / norm
    return (m32 * f32 + (1.0 - m32) * rec).to(feature.dtype)


def _as_float(v) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def grid_prior_(mask: torch.Tensor, interval: int) -> torch.Tensor:
    if interval > 0:
        mask = mask.clone()
        mask[:, :, ::interval, ::interval] = 1.0
    return mask


def conv3x3_few_outputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """3x3 conv, stride 1, padding 1, for a few output channels (masks, DCN offsets).

    One GEMM gives every tap's partial map at once ([9 Co, Cin] x [Cin, NHW], tap-major and
    channel-first so each map is contiguous), then the nine maps are added with their shifts:
    on the CPU 1.2-1.7x faster than a direct convolution with so few outputs, same arithmetic.
    """
    n_, cin, h, w = x.shape
    co = weight.shape[0]
    rows = x.permute(0, 2, 3, 1).reshape(-1, cin)
    taps = torch.mm(weight.permute(2, 3, 0, 1).reshape(9 * co, cin), rows.t()).view(9, co, n_, h, w)
    out = bias.view(co, 1, 1, 1).expand(co, n_, h, w).clone()
    for t in range(9):
        dy, dx = t // 3 - 1, t % 3 - 1  # the tap reads x[y + dy, x + dx]; outside is padding
        y0, y1, x0, x1 = max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)
        out[:, :, y0:y1, x0:x1] += taps[t, :, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return out.permute(1, 0, 2, 3)


class Bottleneck(nn.Module):
    """Dense ResNet bottleneck ("pytorch" style: the 3x3 conv carries the stride)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dcn: bool = False):
        super().__init__()
        self.inplanes, self.planes, self.stride, self.with_dcn = inplanes, planes, stride, dcn
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        if dcn:
            self.conv2_offset = nn.Conv2d(inplanes, 18, 3, stride, 1)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample
        self.fused: dict | None = None

    def _conv2(self, y, x):
        if self.with_dcn:
            return deform_conv2d(y, self.conv2.weight, self.conv2_offset(x), self.stride, 1)
        return self.conv2(y)

    def shortcut(self, x):
        if self.downsample is None:
            return x
        if self.fused is not None:
            w, b = self.fused["downsample"]
            return F.conv2d(x, w, b, self.downsample[0].stride)
        return self.downsample(x)

    def forward(self, x):
        if self.fused is not None:
            f = self.fused
            y = F.relu(F.conv2d(x, *f["conv1"]))
            if self.with_dcn:
                z = deform_conv2d(y, f["conv2"][0], self.conv2_offset(x), self.stride, 1)
                y = F.relu(z + f["conv2"][1].view(1, -1, 1, 1))
            else:
                y = F.relu(F.conv2d(y, *f["conv2"], stride=self.stride, padding=1))
            y = F.conv2d(y, *f["conv3"])
        else:
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self._conv2(y, x)))
            y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))

    def fold_bn(self) -> dict:
        f = {name: fold_conv_bn(getattr(self, name).weight, getattr(self, "bn" + name[-1]))
             for name in ("conv1", "conv2", "conv3")}
        if self.downsample is not None:
            f["downsample"] = fold_conv_bn(self.downsample[0].weight, self.downsample[1])
        return f


class SSIBottleneck(Bottleneck):
    """Bottleneck whose residual branch is computed at sampled positions (spec section 2)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dcn: bool = False, index: int = 0,
                 grid_interval: int = C.GRID_PRIOR_INTERVAL, gumbel_max_t: float = 1.0,
                 gumbel_decay: float = 0.99998):
        super().__init__(inplanes, planes, stride, downsample, dcn)
        self.index = index  # block index in the network; sampling layers 2*index, 2*index+1
        self.grid_interval = grid_interval
        self.conv1_mask = nn.Conv2d(inplanes, 1, 3, 1, 1, bias=True)
        self.conv2_mask = nn.Conv2d(inplanes, 1, 3, stride, 1, bias=True)
        nn.init.zeros_(self.conv1_mask.weight)
        nn.init.constant_(self.conv1_mask.bias, 3.0)
        nn.init.zeros_(self.conv2_mask.weight)
        nn.init.constant_(self.conv2_mask.bias, 3.0)
        self.conv1_sigma = nn.Parameter(torch.tensor(C.SIGMA_INIT))
        self.conv2_sigma = nn.Parameter(torch.tensor(C.SIGMA_INIT))
        self.conv1_gumbel = GumbelSigmoid(gumbel_max_t, gumbel_decay)
        self.conv2_gumbel = GumbelSigmoid(gumbel_max_t, gumbel_decay)
        self.execution = "sparse"
        self.sampling_mode = C.MODE_THRESHOLD
        self.seed = 0
        self.forced_density: float | None = None
        self.sparsity_loss: torch.Tensor | None = None
        self.override_masks: tuple[torch.Tensor, torch.Tensor] | None = None
        self.record_decisions = False
        self.decisions: tuple[dict, dict] | None = None

    @property
    def layer_ids(self) -> tuple[int, int]:
        return 2 * self.index, 2 * self.index + 1

    # -- masks ------------------------------------------------------------------------------
    def _shift_to_density(self, logits: torch.Tensor) -> torch.Tensor:
        if self.forced_density is None:
            return logits
        # Keep the top share of positions: shift the logits so that exactly the k largest are
        # >= 0 (threshold mode then keeps them; the grid prior still adds its points).
        flat = logits.flatten(1)
        k = max(1, min(flat.shape[1], int(round(self.forced_density * flat.shape[1]))))
        kth = torch.topk(flat, k, dim=1).values[:, -1:]
        return logits - kth.view(-1, 1, 1, 1)

    def masks(self, x: torch.Tensor, logits=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference masks (m1 at the input resolution, m2 at the output resolution).

        With ``override_masks`` (another backend's masks) those are returned; with
        ``record_decisions`` as well, the block still takes its own decisions and keeps them in
        ``decisions`` (validation tells near-threshold flips from real ones with them)."""
        if self.override_masks is not None and not self.record_decisions:
            return self.override_masks
        l1, l2 = logits if logits is not None else (self.conv1_mask(x), self.conv2_mask(x))
        mode = C.MODE_THRESHOLD if self.forced_density is not None else self.sampling_mode
        kw = dict(mode=mode, grid_interval=self.grid_interval, seed=self.seed)
        sample_mask = select_ops().sample_mask
        s1, s2 = self._shift_to_density(l1), self._shift_to_density(l2)
        own = (sample_mask(s1, layer=self.layer_ids[0], **kw),
               sample_mask(s2, layer=self.layer_ids[1], **kw))
        if self.record_decisions:
            self.decisions = tuple(
                self._decision(x, z, m, conv, stride, layer, kw)
                for z, m, conv, stride, layer in ((s1, own[0], self.conv1_mask, 1, self.layer_ids[0]),
                                                  (s2, own[1], self.conv2_mask, self.stride,
                                                   self.layer_ids[1])))
        return self.override_masks if self.override_masks is not None else own

    @staticmethod
    def _decision(x, logits, mask, conv: nn.Conv2d, stride: int, layer: int, kw) -> dict:
        """This layer's own decision, its margin z, and what bounds the logit's error: a
        change of x by at most ``a + r|x|`` per element moves the logit by at most
        ``r * (|W| * |x|) + a * sum|W|`` (``reach`` and ``w_l1``)."""
        w = conv.weight.detach().to(torch.float64)
        xa = x.detach().to(torch.float64).abs()
        return {"mask": mask.detach(),
                "z": decision_margin(logits.detach(), layer=layer, **kw),
                "reach": F.conv2d(xa, w.abs(), None, stride, 1),
                "w_l1": float(w.abs().sum()),
                "x_absmax": xa.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)}

    def _merged_x_convs(self, x, f):
        """(logits1, logits2, dense offsets or None) from the fewest passes over x.

        The two mask convs and the DCN offset conv all read x with 3x3 kernels; on the CPU one
        dense conv with 2 (+18) output channels costs about what one of them does alone, far
        less than gathering 3x3 patches of x for a sparse offset conv. Exported graphs keep
        the spec's form instead (separate mask convs, offsets by SparseConv2d at sampled
        positions), which is what the GPU plugins want.
        """
        w, b = f["x_conv"]
        if self.stride == 1:
            out = conv3x3_few_outputs(x, w, b)
            return out[:, :1], out[:, 1:2], (out[:, 2:] if self.with_dcn else None)
        out = F.conv2d(x, w[1:], b[1:], stride=self.stride, padding=1)
        return self.conv1_mask(x), out[:, :1], (out[:, 1:] if self.with_dcn else None)

    # -- forward paths ------------------------------------------------------------------------
    def forward(self, x):  # returns (out, m1, m2); masks are None in training
        if self.training:
            return self.forward_train(x), None, None
        if self.execution == "official":
            m1, m2 = self.masks(x)
            return self.forward_official(x, m1, m2), m1, m2
        f = self.fused if self.fused is not None else self.fold_bn()
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            m1, m2 = self.masks(x)
            return self.forward_sparse(x, m1, m2, f), m1, m2
        l1, l2, offset = self._merged_x_convs(x, f)
        m1, m2 = self.masks(x, (l1, l2))
        return self.forward_sparse_rows(x, m1, m2, f, offset), m1, m2

    def forward_train(self, x):
        p1 = torch.sigmoid(self.conv1_mask(x))
        p2 = torch.sigmoid(self.conv2_mask(x))
        m1 = grid_prior_(self.conv1_gumbel(p1), self.grid_interval)
        m2 = grid_prior_(self.conv2_gumbel(p2), self.grid_interval)
        self.sparsity_loss = 0.25 * p1.mean() + 0.75 * p2.mean()
        return self._official_order(x, m1, m2)

    def forward_official(self, x, m1, m2):
        return self._official_order(x, m1.to(x.dtype), m2.to(x.dtype))

    def _official_order(self, x, m1, m2):
        y = F.relu(self.bn1(self.conv1(x)))
        y = interp_official(y, m1, self.conv1_sigma)
        y = F.relu(self.bn2(self._conv2(y, x)))
        y = interp_official(y, m2, self.conv2_sigma)
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))

    def forward_sparse(self, x, m1, m2, f):
        """The spec's sparse order through the SSI ops (the form an export holds)."""
        ops = select_ops()
        sparse_conv2d, gaussian_interp = ops.sparse_conv2d, ops.gaussian_interp
        s = self.stride
        y1 = sparse_conv2d(x, *f["conv1"], m1, relu=1)
        zeros_p = f["conv1"][1].new_zeros(self.planes)
        y1 = gaussian_interp(y1, m1, zeros_p, sigma=f["sigma1"])
        conv = dict(stride_h=s, stride_w=s, pad_h=1, pad_w=1)
        offset = sparse_conv2d(x, *f["offset"], m2, **conv) if self.with_dcn else None
        y2 = sparse_conv2d(y1, *f["conv2"], m2, offset, relu=1, **conv)
        z = sparse_conv2d(y2, f["conv3"][0], f["conv3"][1].new_zeros(self.planes * 4), m2)
        return gaussian_interp(z, m2, f["conv3"][1], self.shortcut(x),
                               sigma=f["sigma2"], relu=1)

    def forward_sparse_rows(self, x, m1, m2, f, offset=None):
        """Eager form of :meth:`forward_sparse`: the same arithmetic, but sampled features stay
        compact rows [P, C] between the ops (no zero-filled dense intermediates, and conv3
        reads conv2's rows directly instead of gathering them again). ``offset``: dense DCN
        offsets when already computed (else they are computed at the sampled positions)."""
        s, zeros = self.stride, f["conv1"][1].new_zeros
        pos1, pos2 = sampled_positions(m1), sampled_positions(m2)
        y1 = sparse_conv2d_rows(x, *f["conv1"], pos1, relu=1)
        y1 = gaussian_interp_rows(y1, pos1, m1, zeros(self.planes), sigma=f["sigma1"],
                                  dtype=x.dtype)
        conv = dict(stride_h=s, stride_w=s, pad_h=1, pad_w=1)
        off_rows = None
        if self.with_dcn:
            off_rows = (rows_nhwc(offset)[pos2.lin] if offset is not None else
                        sparse_conv2d_rows(x, *f["offset"], pos2, **conv))
        y2 = sparse_conv2d_rows(y1, *f["conv2"], pos2, off_rows, relu=1, **conv)
        z = conv_rows_gemm(y2.unsqueeze(1), f["conv3"][0], zeros(self.planes * 4))
        return gaussian_interp_rows(z, pos2, m2, f["conv3"][1], self.shortcut(x),
                                    sigma=f["sigma2"], relu=1, dtype=x.dtype)

    def fold_bn(self) -> dict:
        f = super().fold_bn()
        # Sigmas become Python floats: op attributes, constants in an exported graph. The
        # Gaussian depends on s^2 only, so |s| is the same op and meets the contract (s > 0).
        f["sigma1"], f["sigma2"] = (abs(_as_float(self.conv1_sigma)),
                                    abs(_as_float(self.conv2_sigma)))
        convs = [self.conv1_mask, self.conv2_mask] + ([self.conv2_offset] if self.with_dcn else [])
        f["x_conv"] = (torch.cat([c.weight.detach() for c in convs]).contiguous(
                           memory_format=torch.channels_last),
                       torch.cat([c.bias.detach() for c in convs]))
        if self.with_dcn:
            f["offset"] = (self.conv2_offset.weight.detach().contiguous(
                               memory_format=torch.channels_last),
                           self.conv2_offset.bias.detach().clone())
        return f
