"""ResNet bottlenecks: the dense one and the SSI one (spec sections 1-3).

Parameter names follow the official checkpoints (mmdet 0.6 ``SparseResNet``), so a state dict
loads as it is. Forward paths of the SSI block:

- training: the official order with soft Gumbel masks, differentiable (mask convs, sigmas);
- eval, ``execution="sparse"`` (default): the SSIBottleneck op (``ssi_deploy.ops.bottleneck``),
  the one inference path: conv1, conv2 and conv3 only at sampled positions, compact rows
  inside, BN folded. Under torch.export it is one ``ssi::SSIBottleneck`` node; with
  ``granularity="ops"`` the export holds the three-op chain instead (SampleMask,
  SparseConv2d, GaussianInterp: the building blocks, ``forward_ops``), same arithmetic;
- eval, ``execution="official"``: the official dense-masked order with the same masks (the
  reference that the sparse order must match within float32 rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import contract as C
from ..ops import select_ops
from ..ops.bottleneck import BlockAttrs, BlockWeights, TapsHandoff, block_masks, run_block
from ..ops.interpolation import gaussian_window
from ..ops.sampling import decision_margin
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
        self.granularity = "block"  # export form: "block" (one SSIBottleneck node) or "ops"

    @property
    def layer_ids(self) -> tuple[int, int]:
        return 2 * self.index, 2 * self.index + 1

    # -- masks ------------------------------------------------------------------------------
    def masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference masks (m1 at the input resolution, m2 at the output resolution), as the
        op samples them (``ops.bottleneck.block_masks``).

        With ``override_masks`` (another backend's masks) those are returned; with
        ``record_decisions`` as well, the block still takes its own decisions and keeps them in
        ``decisions`` (validation tells near-threshold flips from real ones with them)."""
        if self.override_masks is not None and not self.record_decisions:
            return self.override_masks
        own1, own2, (s1, s2) = block_masks(self.conv1_mask(x), self.conv2_mask(x),
                                           self.block_attrs())
        self._record(x, s1, s2, own1, own2)
        return self.override_masks if self.override_masks is not None else (own1, own2)

    def _record(self, x, s1, s2, own1, own2) -> None:
        if not self.record_decisions:
            return
        a = self.block_attrs()
        kw = dict(mode=C.MODE_THRESHOLD if a.density > 0 else a.mode,
                  grid_interval=a.grid_interval, seed=a.seed)
        self.decisions = tuple(
            self._decision(x, z, m, conv, stride, layer, kw)
            for z, m, conv, stride, layer in ((s1, own1, self.conv1_mask, 1, a.layer1),
                                              (s2, own2, self.conv2_mask, self.stride, a.layer2)))

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

    # -- forward paths ------------------------------------------------------------------------
    def forward(self, x, handoff: TapsHandoff | None = None):
        """(out, m1, m2); masks are None in training. ``handoff``: mask taps passed along a
        chain of blocks (``ops.bottleneck.TapsHandoff``; the inference path only)."""
        if self.training:
            return self.forward_train(x), None, None
        if self.execution == "official":
            m1, m2 = self.masks(x)
            return self.forward_official(x, m1, m2), m1, m2
        f = self.fused if self.fused is not None else self.fold_bn()
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            if self.granularity == "ops":
                m1, m2 = self.masks(x)
                return self.forward_ops(x, m1, m2, f), m1, m2
            return select_ops().ssi_bottleneck(x, *f["inputs"], **vars(self.block_attrs(f)))
        keep = {} if self.record_decisions else None
        y, m1, m2 = run_block(x, f["block"], self.block_attrs(f), self.override_masks, keep,
                              handoff)
        if keep is not None:
            self._record(x, keep["logits1"], keep["logits2"], keep["mask1"], keep["mask2"])
        return y, m1, m2

    def chained_tap_weights(self) -> torch.Tensor | None:
        """The tap matrix of this block's mask convs when its next forward samples its own
        masks on the eager inference path with folded weights (what a previous block in a
        chain may compute the taps for), else None."""
        if (self.training or self.execution != "sparse" or self.fused is None
                or (self.override_masks is not None and not self.record_decisions)):
            return None
        return self.fused["block"].mask_taps_w

    def block_attrs(self, f: dict | None = None) -> BlockAttrs:
        """The SSIBottleneck attributes of this block (sigmas from the folded weights)."""
        if f is None:
            f = {"sigma1": abs(_as_float(self.conv1_sigma)), "sigma2": abs(_as_float(self.conv2_sigma))}
        return BlockAttrs(
            stride=self.stride, dcn=int(self.with_dcn), downsample=int(self.downsample is not None),
            sigma1=f["sigma1"], sigma2=f["sigma2"], mode=int(self.sampling_mode),
            grid_interval=self.grid_interval, seed=int(self.seed), layer1=self.layer_ids[0],
            layer2=self.layer_ids[1],
            density=0.0 if self.forced_density is None else float(self.forced_density))

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

    def forward_ops(self, x, m1, m2, f):
        """The spec's sparse order through the three building-block ops (the form of an
        ``--granularity ops`` export, and the chain the block op is tested against)."""
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

    def fold_bn(self) -> dict:
        f = super().fold_bn()
        # Sigmas become Python floats: op attributes, constants in an exported graph. The
        # Gaussian depends on s^2 only, so |s| is the same op and meets the contract (s > 0).
        f["sigma1"], f["sigma2"] = (abs(_as_float(self.conv1_sigma)),
                                    abs(_as_float(self.conv2_sigma)))
        if self.with_dcn:
            f["offset"] = (self.conv2_offset.weight.detach().contiguous(
                               memory_format=torch.channels_last),
                           self.conv2_offset.bias.detach().clone())
        f["inputs"] = self.block_inputs(f)
        a = self.block_attrs(f)
        f["block"] = BlockWeights.prepare(*f["inputs"], a.stride, a.dcn, a.downsample)
        return f

    def block_inputs(self, f: dict) -> tuple[torch.Tensor, ...]:
        """The 15 tensors of the SSIBottleneck op, in contract order (a missing part, DCN
        offsets or downsample, is an empty tensor)."""
        empty = self.conv1.weight.new_zeros(0)
        d = lambda t: t.detach().clone()  # noqa: E731
        off = f.get("offset", (empty, empty))
        ds = f.get("downsample", (empty, empty))
        return (d(self.conv1_mask.weight), d(self.conv1_mask.bias),
                d(self.conv2_mask.weight), d(self.conv2_mask.bias),
                *f["conv1"], *off, *f["conv2"], *f["conv3"], *ds)
