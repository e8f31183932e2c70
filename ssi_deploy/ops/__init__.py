"""The SSI ops as torch.library custom ops (``torch.ops.ssi.*``), registered on import.

Signatures come from :mod:`ssi_deploy.ops.contract`; the implementations live in
``sampling``, ``sparse_conv``, ``interpolation`` and ``bottleneck`` (the block op). ``register_fake`` gives shapes for
torch.export (symbolic sizes included).
"""

from __future__ import annotations

import torch

from . import contract
from .bottleneck import output_size
from .bottleneck import ssi_bottleneck as _ssi_bottleneck
from .contract import GAUSSIAN_INTERP, OPS, SAMPLE_MASK, SPARSE_CONV2D, SSI_BOTTLENECK
from .interpolation import gaussian_interp as _gaussian_interp
from .sampling import sample_mask as _sample_mask
from .sparse_conv import conv_output_size
from .sparse_conv import sparse_conv2d as _sparse_conv2d

__all__ = ["contract", "OPS", "sample_mask", "sparse_conv2d", "gaussian_interp", "ssi_bottleneck",
           "select_ops"]


def _define(op, impl):
    qualname = f"{contract.TORCH_NAMESPACE}::{op.torch_name}"
    return torch.library.custom_op(qualname, impl, mutates_args=(),
                                   schema=contract.torch_schema(op))


sample_mask = _define(SAMPLE_MASK, _sample_mask)
sparse_conv2d = _define(SPARSE_CONV2D, _sparse_conv2d)
gaussian_interp = _define(GAUSSIAN_INTERP, _gaussian_interp)
ssi_bottleneck = _define(SSI_BOTTLENECK, _ssi_bottleneck)


@sample_mask.register_fake
def _(logits, mode=0, grid_interval=11, seed=0, layer=0):
    return torch.empty_like(logits)


@sparse_conv2d.register_fake
def _(x, weight, bias, mask, offset=None, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
      dilation_h=1, dilation_w=1, groups=1, relu=0):
    n_, _, h, w = x.shape
    cout, _, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride_h, pad_h, dilation_h)
    wo = conv_output_size(w, kw, stride_w, pad_w, dilation_w)
    # The eager ops return channels-last tensors (a row per position); the fake ones match.
    return x.new_empty((n_, cout, ho, wo)).contiguous(memory_format=torch.channels_last)


@gaussian_interp.register_fake
def _(values, mask, bias, residual=None, sigma=3.0, relu=0):
    return torch.empty_like(values, memory_format=torch.channels_last)


@ssi_bottleneck.register_fake
def _(x, mask1_weight, mask1_bias, mask2_weight, mask2_bias, conv1_weight, conv1_bias,
      offset_weight, offset_bias, conv2_weight, conv2_bias, conv3_weight, conv3_bias,
      downsample_weight, downsample_bias, stride=1, dcn=0, downsample=0, sigma1=3.0, sigma2=3.0,
      mode=0, grid_interval=11, seed=0, layer1=0, layer2=1, density=0.0):
    n_, _, h, w = x.shape
    ho, wo = output_size(h, stride), output_size(w, stride)
    y = x.new_empty((n_, conv3_weight.shape[0], ho, wo)).contiguous(memory_format=torch.channels_last)
    return y, x.new_empty((n_, 1, h, w)), x.new_empty((n_, 1, ho, wo))


class _EagerOps:
    """The implementations themselves: what the custom ops run, without the dispatcher."""

    sample_mask = staticmethod(_sample_mask)
    sparse_conv2d = staticmethod(_sparse_conv2d)
    gaussian_interp = staticmethod(_gaussian_interp)
    ssi_bottleneck = staticmethod(_ssi_bottleneck)


class _TracedOps:
    """The registered custom ops: one graph node each under torch.export / torch.compile."""

    sample_mask = sample_mask
    sparse_conv2d = sparse_conv2d
    gaussian_interp = gaussian_interp
    ssi_bottleneck = ssi_bottleneck


def select_ops():
    """Custom ops while tracing (so exports hold SSI nodes), plain functions in eager mode.

    A custom-op call costs about 0.1 ms of dispatch on the CPU and an SSI ResNet-101-DCN holds
    261 SSI ops, so eager models call the same implementations directly (and stay
    differentiable).
    """
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return _TracedOps
    return _EagerOps
