"""The SSI ops as torch.library custom ops (``torch.ops.ssi.*``), registered on import.

Signatures come from :mod:`ssi_deploy.ops.contract`; the implementations live in
``sampling``, ``sparse_conv`` and ``interpolation``. ``register_fake`` gives shapes for
torch.export (symbolic sizes included).
"""

from __future__ import annotations

import torch

from . import contract
from .contract import GAUSSIAN_INTERP, OPS, SAMPLE_MASK, SPARSE_CONV2D
from .interpolation import gaussian_interp as _gaussian_interp
from .sampling import sample_mask as _sample_mask
from .sparse_conv import conv_output_size
from .sparse_conv import sparse_conv2d as _sparse_conv2d

__all__ = ["contract", "OPS", "sample_mask", "sparse_conv2d", "gaussian_interp", "select_ops"]


def _define(op, impl):
    qualname = f"{contract.TORCH_NAMESPACE}::{op.torch_name}"
    return torch.library.custom_op(qualname, impl, mutates_args=(),
                                   schema=contract.torch_schema(op))


sample_mask = _define(SAMPLE_MASK, _sample_mask)
sparse_conv2d = _define(SPARSE_CONV2D, _sparse_conv2d)
gaussian_interp = _define(GAUSSIAN_INTERP, _gaussian_interp)


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


class _EagerOps:
    """The implementations themselves: what the custom ops run, without the dispatcher."""

    sample_mask = staticmethod(_sample_mask)
    sparse_conv2d = staticmethod(_sparse_conv2d)
    gaussian_interp = staticmethod(_gaussian_interp)


class _TracedOps:
    """The registered custom ops: one graph node each under torch.export / torch.compile."""

    sample_mask = sample_mask
    sparse_conv2d = sparse_conv2d
    gaussian_interp = gaussian_interp


def select_ops():
    """Custom ops while tracing (so exports hold SSI nodes), plain functions in eager mode.

    A custom-op call costs about 0.1 ms of dispatch on the CPU and an SSI ResNet-101-DCN holds
    261 SSI ops, so eager models call the same implementations directly (and stay
    differentiable).
    """
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return _TracedOps
    return _EagerOps
