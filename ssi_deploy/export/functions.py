"""Model-local ONNX functions: a body of standard ONNX ops for every SSI op type.

ONNX Runtime and ``onnx.reference`` inline model-local functions, so an exported file with
these bodies runs without any SSI kernel; TensorRT uses the plugins instead (the node carries
``plugin_namespace``). The bodies compute the contract's semantics (spec sections 3-5):

- SampleMask: threshold / stochastic / official, the counter-based hash of
  ``ops/sampling.py`` (32-bit mix with 16-bit-split multiplies, held in int64), grid prior.
- SparseConv2d: dense convolution, then ReLU and zero where mask == 0 (the dense-masked
  reference path). Stride, padding and dilation are int attributes and ONNX functions can
  only forward whole attributes, so the plain case is Pad (pads as a tensor) + a stride-1
  Conv with a zero-dilated kernel + a strided Slice. With an offset input the body does
  deformable v1 by explicit bilinear gathers (GatherND) and a MatMul.
- GaussianInterp: the exact 7x7 formula, float32 arithmetic whatever the I/O dtype.
- SSIBottleneck: the block's chain of building blocks (two SampleMask, conv1,
  interpolation, [offset conv] + conv2, conv3, interpolation + shortcut) in one body, with
  the helpers of the three bodies above; the forced density is a TopK shift of the logits.
  All 15 inputs are always present; an absent part's weights (offset conv, downsample) are
  empty [0] tensors, read only inside the If branch that the dcn / downsample flag selects.

Every body casts its inputs to float32 and its output back to the input's dtype (CastLike),
so fp16 models run too. Attribute-dependent choices are made with ``Constant(value_int=@attr)``
and ``Where``/``If``; optional inputs are detected with ``OptionalHasElement`` (opset >= 18)
and read inside the taken branch through ``LayerNormalization``'s optional bias (the only
way to name an absent optional input inside a subgraph without making it invalid).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..ops import contract as C
from ..ops.sampling import MASK32, MIX_MUL1, MIX_MUL2, UNIFORM_SCALE, UNIFORM_SHIFT

MIN_OPSET = 18  # BitwiseXor/BitwiseAnd and OptionalHasElement on plain tensors
MAX_OPSET = 25
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class _Builder:
    """Collects the nodes of one graph (function body or If branch) with unique names."""

    def __init__(self, prefix: str, counter: list[int] | None = None):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self._counter = counter if counter is not None else [0]

    def _name(self, hint: str) -> str:
        self._counter[0] += 1
        return f"{self.prefix}_{hint}_{self._counter[0]}"

    def sub(self) -> _Builder:
        return _Builder(self.prefix, self._counter)

    def op(self, op_type: str, *inputs: str, n_out: int = 1, **attrs):
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def op_attrs(self, op_type: str, inputs: list[str], attributes: list[onnx.AttributeProto]):
        out = self._name(op_type.lower())
        node = helper.make_node(op_type, inputs, [out])
        node.attribute.extend(attributes)
        self.nodes.append(node)
        return out

    def const(self, value, dtype=np.float32) -> str:
        arr = np.asarray(value, dtype=dtype)
        return self.op("Constant", value=numpy_helper.from_array(arr, self._name("c")))

    def i64(self, value) -> str:
        return self.const(value, np.int64)

    def f32(self, value) -> str:
        return self.const(value, np.float32)

    def attr(self, name: str, kind: str) -> str:
        """Scalar tensor holding the value of the function attribute ``name``."""
        a = onnx.AttributeProto()
        a.name = "value_int" if kind == "int" else "value_float"
        a.ref_attr_name = name
        a.type = onnx.AttributeProto.INT if kind == "int" else onnx.AttributeProto.FLOAT
        return self.op_attrs("Constant", [], [a])

    def flag(self, name: str) -> str:
        """Boolean scalar: attribute ``name`` != 0."""
        return self.op("Not", self.op("Equal", self.attr(name, "int"), self.i64(0)))

    def graph(self, name: str, output: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(output, FLOAT, None)
        return helper.make_graph(self.nodes, name, [], [out])

    def if_(self, cond: str, then_b: _Builder, then_out: str, else_b: _Builder, else_out: str,
            name: str) -> str:
        return self.op("If", cond, then_branch=then_b.graph(f"{name}_then", then_out),
                       else_branch=else_b.graph(f"{name}_else", else_out))

    def optional_or_zeros(self, optional_input: str, shape: str, dtype_like: str) -> str:
        """``optional_input`` when present, else zeros of ``shape`` (dtype of ``dtype_like``).

        LayerNormalization over all axes of a zero tensor yields exactly its bias B (0 * scale
        + B); B is an optional input, so an absent input (empty name) is legal here.
        """
        zeros = self.op("Expand", self.op("CastLike", self.f32(0.0), dtype_like), shape)
        one = self.op("CastLike", self.f32(1.0), dtype_like)
        return self.op("LayerNormalization", zeros, one, optional_input, axis=0)


# --------------------------------------------------------------------------------------------
# SampleMask


def _mul32(b: _Builder, a: str, const: int) -> str:
    lo = b.op("Mul", a, b.i64(const & 0xFFFF))
    hi = b.op("Mul", b.op("BitwiseAnd", b.op("Mul", a, b.i64(const >> 16)), b.i64(0xFFFF)),
              b.i64(1 << 16))
    return b.op("BitwiseAnd", b.op("Add", lo, hi), b.i64(MASK32))


def _shr(b: _Builder, a: str, bits: int) -> str:
    return b.op("Div", a, b.i64(1 << bits))  # exact for the non-negative values used here


def _mix32(b: _Builder, h: str) -> str:
    h = b.op("BitwiseAnd", h, b.i64(MASK32))
    h = b.op("BitwiseXor", h, _shr(b, h, 16))
    h = _mul32(b, h, MIX_MUL1)
    h = b.op("BitwiseXor", h, _shr(b, h, 15))
    h = _mul32(b, h, MIX_MUL2)
    return b.op("BitwiseXor", h, _shr(b, h, 16))


def _sample_mask(b: _Builder, l32: str, mode: str, g: str, seed: str, layer: str) -> str:
    """The float32 mask of float32 logits ``l32``; ``mode``, ``g`` (grid interval), ``seed``
    and ``layer`` are int64 scalar tensors (SampleMask's attributes, or the block's)."""
    shape = b.op("Shape", l32)
    dim = lambda i: b.op("Gather", shape, b.i64(i), axis=0)  # noqa: E731
    n_, h_, w_ = dim(0), dim(2), dim(3)
    one, zero = b.f32(1.0), b.f32(0.0)

    # threshold
    m_thr = b.op("Cast", b.op("GreaterOrEqual", l32, zero), to=FLOAT)

    # the counter-based uniform u[n, 0, y, x]
    key = _mix32(b, b.op("BitwiseXor", _mix32(b, seed),
                         b.op("BitwiseAnd", layer, b.i64(MASK32))))
    rng = lambda d, axes: b.op("Unsqueeze", b.op("Range", b.i64(0), d, b.i64(1)),  # noqa: E731
                               b.i64(axes))
    n = rng(n_, [1, 2, 3])
    y = rng(h_, [0, 1, 3])
    x = rng(w_, [0, 1, 2])
    h = _mix32(b, b.op("BitwiseXor", key, n))
    h = _mix32(b, b.op("BitwiseXor", h, y))
    h = _mix32(b, b.op("BitwiseXor", h, x))
    # u = ((h >> 9) + 0.5) * 2**-23, every step exact in float32: u in [2**-24, 1 - 2**-24]
    # (sampling.py's docstring)
    u = b.op("Mul", b.op("Add", b.op("Cast", _shr(b, h, UNIFORM_SHIFT), to=FLOAT), b.f32(0.5)),
             b.f32(UNIFORM_SCALE))

    # stochastic
    m_sto = b.op("Cast", b.op("Less", u, b.op("Sigmoid", l32)), to=FLOAT)
    # official
    gumbel = b.op("Sub", b.op("Log", u), b.op("Log", b.op("Sub", one, u)))
    v = b.op("Sigmoid", b.op("Div", b.op("Add", l32, gumbel), b.f32(C.OFFICIAL_TEMPERATURE)))
    m_off = b.op("Where", b.op("GreaterOrEqual", v, b.f32(0.5)), v, zero)

    m = b.op("Where", b.op("Equal", mode, b.i64(C.MODE_THRESHOLD)), m_thr,
             b.op("Where", b.op("Equal", mode, b.i64(C.MODE_STOCHASTIC)), m_sto, m_off))

    # grid prior: y % g == 0 and x % g == 0 (g > 0)
    g_safe = b.op("Max", g, b.i64(1))
    on_y = b.op("Equal", b.op("Mod", y, g_safe), b.i64(0))
    on_x = b.op("Equal", b.op("Mod", x, g_safe), b.i64(0))
    grid = b.op("And", b.op("And", on_y, on_x), b.op("Greater", g, b.i64(0)))
    return b.op("Where", grid, one, m)


def _sample_mask_body(b: _Builder, logits: str) -> str:
    m = _sample_mask(b, b.op("Cast", logits, to=FLOAT), b.attr("mode", "int"),
                     b.attr("grid_interval", "int"), b.attr("seed", "int"),
                     b.attr("layer", "int"))
    return b.op("CastLike", m, logits)


# --------------------------------------------------------------------------------------------
# SparseConv2d


def _vec(b: _Builder, *scalars: str) -> str:
    """1-D int64 tensor from int64 scalars."""
    return b.op("Concat", *[b.op("Reshape", s, b.i64([1])) for s in scalars], axis=0)


def _dense_conv(b: _Builder, x32: str, w32: str, b32: str) -> str:
    sh, sw = b.attr("stride_h", "int"), b.attr("stride_w", "int")
    ph, pw = b.attr("pad_h", "int"), b.attr("pad_w", "int")
    dh, dw = b.attr("dilation_h", "int"), b.attr("dilation_w", "int")
    zero = b.i64(0)
    xp = b.op("Pad", x32, _vec(b, zero, zero, ph, pw, zero, zero, ph, pw))
    # zero-dilated kernel [O, I, (kh-1)*dh+1, (kw-1)*dw+1]
    wshape = b.op("Shape", w32)
    kh = b.op("Gather", wshape, b.i64(2), axis=0)
    kw = b.op("Gather", wshape, b.i64(3), axis=0)
    w6 = b.op("Unsqueeze", w32, b.i64([3, 5]))  # [O, I, kh, 1, kw, 1]
    one = b.i64(1)
    w6 = b.op("Pad", w6, _vec(b, zero, zero, zero, zero, zero, zero,
                              zero, zero, zero, b.op("Sub", dh, one), zero, b.op("Sub", dw, one)))
    oi = b.op("Slice", wshape, b.i64([0]), b.i64([2]))
    wd = b.op("Reshape", w6, b.op("Concat", oi, _vec(b, b.op("Mul", kh, dh), b.op("Mul", kw, dw)),
                                  axis=0))
    ext_h = b.op("Add", b.op("Mul", b.op("Sub", kh, one), dh), one)
    ext_w = b.op("Add", b.op("Mul", b.op("Sub", kw, one), dw), one)
    wd = b.op("Slice", wd, b.i64([0, 0]), _vec(b, ext_h, ext_w), b.i64([2, 3]))
    group = onnx.AttributeProto()
    group.name, group.ref_attr_name, group.type = "group", "groups", onnx.AttributeProto.INT
    y = b.op_attrs("Conv", [xp, wd, b32], [group])
    big = np.iinfo(np.int64).max
    return b.op("Slice", y, b.i64([0, 0]), b.i64([big, big]), b.i64([2, 3]), _vec(b, sh, sw))


def _deform_conv(b: _Builder, x32: str, w32: str, b32: str, off32: str, mask: str) -> str:
    """Deformable conv v1 with SparseConv2d's geometry attributes."""
    return _deform_conv_geom(b, x32, w32, b32, off32, mask,
                             b.attr("stride_h", "int"), b.attr("stride_w", "int"),
                             b.attr("pad_h", "int"), b.attr("pad_w", "int"),
                             b.attr("dilation_h", "int"), b.attr("dilation_w", "int"),
                             b.attr("groups", "int"))


def _deform_conv_geom(b: _Builder, x32: str, w32: str, b32: str, off32: str, mask: str,
                      sh: str, sw: str, ph: str, pw: str, dh: str, dw: str, groups: str) -> str:
    """Deformable conv v1 (mmdet 0.6), float32, by bilinear gathers; groups supported.

    The output size is ``mask``'s (only its shape is read); the geometry (strides, pads,
    dilations, groups) comes as int64 scalar tensors."""
    xs = b.op("Shape", x32)
    ws = b.op("Shape", w32)
    ms = b.op("Shape", mask)
    g = lambda s, i: b.op("Gather", s, b.i64(i), axis=0)  # noqa: E731
    n_, cin, h_, w_ = g(xs, 0), g(xs, 1), g(xs, 2), g(xs, 3)
    cout, cin_g, kh, kw = g(ws, 0), g(ws, 1), g(ws, 2), g(ws, 3)
    ho, wo = g(ms, 2), g(ms, 3)
    k = b.op("Mul", kh, kw)
    zero, one = b.i64(0), b.i64(1)
    # tap offsets iy[k] = (k // kw) * dh, ix[k] = (k % kw) * dw, as [1, K, 1, 1]
    kr = b.op("Range", zero, k, one)
    iy = b.op("Mul", b.op("Div", kr, kw), dh)
    ix = b.op("Mul", b.op("Mod", kr, kw), dw)
    iy = b.op("Unsqueeze", iy, b.i64([0, 2, 3]))
    ix = b.op("Unsqueeze", ix, b.i64([0, 2, 3]))
    oy = b.op("Unsqueeze", b.op("Sub", b.op("Mul", b.op("Range", zero, ho, one), sh), ph),
              b.i64([0, 1, 3]))
    ox = b.op("Unsqueeze", b.op("Sub", b.op("Mul", b.op("Range", zero, wo, one), sw), pw),
              b.i64([0, 1, 2]))
    base_y = b.op("Cast", b.op("Add", oy, iy), to=FLOAT)  # [1, K, Ho, 1]
    base_x = b.op("Cast", b.op("Add", ox, ix), to=FLOAT)  # [1, K, 1, Wo]
    off = b.op("Reshape", off32, _vec(b, n_, k, b.i64(2), ho, wo))
    dy = b.op("Squeeze", b.op("Slice", off, b.i64([0]), b.i64([1]), b.i64([2])), b.i64([2]))
    dx = b.op("Squeeze", b.op("Slice", off, b.i64([1]), b.i64([2]), b.i64([2])), b.i64([2]))
    py = b.op("Add", base_y, dy)  # [N, K, Ho, Wo]
    px = b.op("Add", base_x, dx)
    hf, wf = b.op("Cast", h_, to=FLOAT), b.op("Cast", w_, to=FLOAT)
    m1 = b.f32(-1.0)
    inside = b.op("And", b.op("And", b.op("Greater", py, m1), b.op("Less", py, hf)),
                  b.op("And", b.op("Greater", px, m1), b.op("Less", px, wf)))
    y0f, x0f = b.op("Floor", py), b.op("Floor", px)
    ly, lx = b.op("Sub", py, y0f), b.op("Sub", px, x0f)
    onef = b.f32(1.0)
    hy, hx = b.op("Sub", onef, ly), b.op("Sub", onef, lx)
    y0, x0 = b.op("Cast", y0f, to=INT64), b.op("Cast", x0f, to=INT64)
    y1, x1 = b.op("Add", y0, one), b.op("Add", x0, one)
    hm1, wm1 = b.op("Sub", h_, one), b.op("Sub", w_, one)
    # x as rows [N, H*W, Cin]
    x_rows = b.op("Transpose", b.op("Reshape", x32, _vec(b, n_, cin, b.op("Mul", h_, w_))),
                  perm=[0, 2, 1])
    cols = None
    for cy, cx, wgt in ((y0, x0, b.op("Mul", hy, hx)), (y0, x1, b.op("Mul", hy, lx)),
                        (y1, x0, b.op("Mul", ly, hx)), (y1, x1, b.op("Mul", ly, lx))):
        ok = b.op("And", inside, b.op("And",
                  b.op("And", b.op("GreaterOrEqual", cy, zero), b.op("LessOrEqual", cy, hm1)),
                  b.op("And", b.op("GreaterOrEqual", cx, zero), b.op("LessOrEqual", cx, wm1))))
        idx = b.op("Add", b.op("Mul", b.op("Clip", cy, zero, hm1), w_), b.op("Clip", cx, zero, wm1))
        idx = b.op("Reshape", idx, _vec(b, n_, b.i64(-1), one))  # [N, K*Ho*Wo, 1]
        vals = b.op("GatherND", x_rows, idx, batch_dims=1)  # [N, K*Ho*Wo, Cin]
        wk = b.op("Reshape", b.op("Mul", wgt, b.op("Cast", ok, to=FLOAT)),
                  _vec(b, n_, b.i64(-1), one))
        term = b.op("Mul", vals, wk)
        cols = term if cols is None else b.op("Add", cols, term)
    # cols [N, K, P, G, Cg] -> [N, G, P, K*Cg]
    p = b.op("Mul", ho, wo)
    og = b.op("Div", cout, groups)
    cols = b.op("Reshape", cols, _vec(b, n_, k, p, groups, cin_g))
    cols = b.op("Transpose", cols, perm=[0, 3, 2, 1, 4])
    cols = b.op("Reshape", cols, _vec(b, n_, groups, p, b.op("Mul", k, cin_g)))
    # weight [O, Cg, kh, kw] -> [G, K*Cg, Og]
    wm = b.op("Reshape", w32, _vec(b, groups, og, cin_g, k))
    wm = b.op("Transpose", wm, perm=[0, 3, 2, 1])
    wm = b.op("Reshape", wm, _vec(b, groups, b.op("Mul", k, cin_g), og))
    y = b.op("MatMul", cols, wm)  # [N, G, P, Og]
    y = b.op("Transpose", y, perm=[0, 1, 3, 2])  # [N, G, Og, P]
    y = b.op("Reshape", y, _vec(b, n_, cout, ho, wo))
    return b.op("Add", y, b.op("Reshape", b32, b.i64([1, -1, 1, 1])))


def _sparse_conv2d_body(b: _Builder, x: str, weight: str, bias: str, mask: str,
                        offset: str) -> str:
    x32 = b.op("Cast", x, to=FLOAT)
    w32 = b.op("Cast", weight, to=FLOAT)
    b32 = b.op("Cast", bias, to=FLOAT)
    m32 = b.op("Cast", mask, to=FLOAT)
    has_offset = b.op("OptionalHasElement", offset)
    then_b = b.sub()
    ms, ws = then_b.op("Shape", mask), then_b.op("Shape", weight)
    taps2 = then_b.op("Mul", then_b.op("ReduceProd", then_b.op("Slice", ws, then_b.i64([2]),
                                                               then_b.i64([4])), keepdims=1),
                      then_b.i64([2]))
    off_shape = then_b.op("Concat", then_b.op("Slice", ms, then_b.i64([0]), then_b.i64([1])),
                          taps2, then_b.op("Slice", ms, then_b.i64([2]), then_b.i64([4])), axis=0)
    off32 = then_b.op("Cast", then_b.optional_or_zeros(offset, off_shape, x), to=FLOAT)
    y_def = _deform_conv(then_b, x32, w32, b32, off32, mask)
    else_b = b.sub()
    y_dense = _dense_conv(else_b, x32, w32, b32)
    y = b.if_(has_offset, then_b, y_def, else_b, y_dense, "sparse_conv2d_offset")
    y = b.op("Where", b.flag("relu"), b.op("Relu", y), y)
    y = b.op("Where", b.op("Greater", m32, b.f32(0.0)), y, b.f32(0.0))
    return b.op("CastLike", y, x)


# --------------------------------------------------------------------------------------------
# GaussianInterp


def _interp32(b: _Builder, v32: str, m32: str, b32: str | None, s: str) -> str:
    """m*f + (1-m)*N/D (+ bias), all float32; ``s`` is the float32 scalar sigma tensor and
    ``b32`` the [C] bias (None: no bias)."""
    r = C.INTERP_WINDOW // 2
    # window, with the float32 steps of ops.interpolation.gaussian_window
    k = b.op("Mul", s, s)
    a = b.op("Div", k, b.f32(2.0 * math.pi))
    d = np.arange(-r, r + 1, dtype=np.float32)
    d2 = (d.reshape(-1, 1) ** 2 + d.reshape(1, -1) ** 2).astype(np.float32)
    wnd = b.op("Mul", a, b.op("Exp", b.op("Mul", b.op("Mul", b.op("Neg", k), b.f32(0.5)),
                                          b.f32(d2))))
    wnd = b.op("Reshape", wnd, b.i64([1, 1, C.INTERP_WINDOW, C.INTERP_WINDOW]))
    pads = [r, r, r, r]
    den = b.op("Add", b.op("Conv", m32, wnd, pads=pads), b.f32(C.INTERP_EPS))
    zero = b.f32(0.0)
    f = b.op("Where", b.op("Greater", m32, zero), v32, zero)  # unsampled values are never read
    fm = b.op("Mul", f, m32)
    shape = b.op("Shape", v32)
    hw = b.op("Slice", shape, b.i64([2]), b.i64([4]))
    fm1 = b.op("Reshape", fm, b.op("Concat", b.i64([-1, 1]), hw, axis=0))
    num = b.op("Reshape", b.op("Conv", fm1, wnd, pads=pads), shape)
    out = b.op("Add", b.op("Mul", m32, f),
               b.op("Mul", b.op("Sub", b.f32(1.0), m32), b.op("Div", num, den)))
    if b32 is not None:
        out = b.op("Add", out, b.op("Reshape", b32, b.i64([1, -1, 1, 1])))
    return out


def _gaussian_interp_body(b: _Builder, values: str, mask: str, bias: str, residual: str) -> str:
    v32 = b.op("Cast", values, to=FLOAT)
    m32 = b.op("Cast", mask, to=FLOAT)
    b32 = b.op("Cast", bias, to=FLOAT)
    out = _interp32(b, v32, m32, b32, b.attr("sigma", "float"))
    has_res = b.op("OptionalHasElement", residual)
    then_b = b.sub()
    with_res = then_b.op("Add", out, then_b.op("Cast", then_b.optional_or_zeros(residual, then_b.op("Shape", values), values),
                                               to=FLOAT))
    else_b = b.sub()
    without = else_b.op("Identity", out)
    out = b.if_(has_res, then_b, with_res, else_b, without, "gaussian_interp_residual")
    out = b.op("Where", b.flag("relu"), b.op("Relu", out), out)
    return b.op("CastLike", out, values)


# --------------------------------------------------------------------------------------------
# SSIBottleneck: the block's three-op chain (spec section 2, sparse order) in one body


def _strided(b: _Builder, y: str, s: str) -> str:
    """Every ``s``-th row and column of ``y`` from the first: a stride-1 convolution sliced
    like this is the stride-s one when (k - 1) = 2 * pad (3x3 pad 1, 1x1 pad 0)."""
    big = np.iinfo(np.int64).max
    return b.op("Slice", y, b.i64([0, 0]), b.i64([big, big]), b.i64([2, 3]), _vec(b, s, s))


def _conv_s(b: _Builder, x32: str, w32: str, b32: str | None, pad: int, s: str) -> str:
    """Convolution, groups 1, zero padding ``pad``, stride the int64 scalar ``s``."""
    ins = [x32, w32] + ([b32] if b32 is not None else [])
    return _strided(b, b.op("Conv", *ins, pads=[pad] * 4), s)


def _as_conv_weight(b: _Builder, w: str, like: str, k: int) -> str:
    """``w`` as float32 [-1, C, k, k] with C = channels of ``like``: the identity on the real
    weights, and it hides an absent part's static [0] shape from shape inference. Only the
    taken If branch runs, but ONNX Runtime infers both at session creation and rejects a Conv
    whose weight is the rank-1 [0] initializer ("Number of spatial dimensions in the weight
    tensor (0) does not match ..."); onnx.checker and onnx.reference accept either form."""
    c = b.op("Slice", b.op("Shape", like), b.i64([1]), b.i64([2]))
    shape = b.op("Concat", b.i64([-1]), c, b.i64([k, k]), axis=0)
    return b.op("Reshape", b.op("Cast", w, to=FLOAT), shape)


def _density_shift(b: _Builder, l32: str, density: str, forced: str) -> str:
    """The forced-density shift: with density > 0, the logits minus their k-th largest
    value per image, k = contract.forced_count(density, H*W) (float32 density times H*W in
    float64, round half to even, clamped to 1..H*W); else the logits unchanged."""
    flat = b.op("Flatten", l32, axis=1)  # [N, H*W]
    hw = b.op("Slice", b.op("Shape", flat), b.i64([1]), b.i64([2]))  # [1]
    dens = b.op("Cast", density, to=TensorProto.DOUBLE)
    k = b.op("Cast", b.op("Round", b.op("Mul", dens, b.op("Cast", hw, to=TensorProto.DOUBLE))),
             to=INT64)
    k = b.op("Min", b.op("Max", k, b.i64([1])), hw)
    top = b.op("TopK", flat, k, axis=1, largest=1, sorted=1, n_out=2)[0]  # [N, k]
    kth = b.op("Gather", top, b.op("Sub", k, b.i64([1])), axis=1)  # [N, 1]
    shifted = b.op("Sub", l32, b.op("Reshape", kth, b.i64([-1, 1, 1, 1])))
    return b.op("Where", forced, shifted, l32)


def _ssi_bottleneck_body(b: _Builder, x: str, mask1_weight: str, mask1_bias: str,
                         mask2_weight: str, mask2_bias: str, conv1_weight: str, conv1_bias: str,
                         offset_weight: str, offset_bias: str, conv2_weight: str,
                         conv2_bias: str, conv3_weight: str, conv3_bias: str,
                         downsample_weight: str, downsample_bias: str) -> tuple[str, str, str]:
    """The block's building-block chain: SampleMask x2, SparseConv2d (conv1), GaussianInterp
    (sigma1), [SparseConv2d (offsets)], SparseConv2d (conv2), SparseConv2d (conv3),
    GaussianInterp (sigma2, conv3_bias, shortcut, ReLU); dense-masked, float32 inside.

    offset_* and downsample_* are read only inside the If branch their flag selects (they
    are empty [0] tensors when the block has no such part)."""
    f32 = lambda t: b.op("Cast", t, to=FLOAT)  # noqa: E731
    x32 = f32(x)
    s = b.attr("stride", "int")
    zero = b.f32(0.0)

    # masks (SampleMask, with the block's forced density)
    density = b.attr("density", "float")
    forced = b.op("Greater", density, zero)
    mode = b.op("Where", forced, b.i64(C.MODE_THRESHOLD), b.attr("mode", "int"))
    grid, seed = b.attr("grid_interval", "int"), b.attr("seed", "int")
    l1 = b.op("Conv", x32, f32(mask1_weight), f32(mask1_bias), pads=[1, 1, 1, 1])
    l2 = _conv_s(b, x32, f32(mask2_weight), f32(mask2_bias), 1, s)
    masks = []
    for logits, layer in ((l1, "layer1"), (l2, "layer2")):
        m = _sample_mask(b, _density_shift(b, logits, density, forced), mode, grid, seed,
                         b.attr(layer, "int"))
        # the chain passes SampleMask's output (in the I/O dtype) on: use the same values
        m_io = b.op("CastLike", m, x)
        masks.append((m_io, f32(m_io)))
    (m1_io, m1), (m2_io, m2) = masks
    on1, on2 = b.op("Greater", m1, zero), b.op("Greater", m2, zero)

    # conv1 at m1 (ReLU), interpolation (sigma1, no bias)
    y1 = b.op("Relu", b.op("Conv", x32, f32(conv1_weight), f32(conv1_bias)))
    y1 = b.op("Where", on1, y1, zero)
    y1 = _interp32(b, y1, m1, None, b.attr("sigma1", "float"))

    # conv2 at m2: deformable v1 with offsets from x, or regular; ReLU
    w2, b2 = f32(conv2_weight), f32(conv2_bias)
    dcn_b = b.sub()
    one = dcn_b.i64(1)
    off = _conv_s(dcn_b, x32, _as_conv_weight(dcn_b, offset_weight, x32, 3),
                  dcn_b.op("Cast", offset_bias, to=FLOAT), 1, s)
    y2_dcn = _deform_conv_geom(dcn_b, y1, w2, b2, off, m2, s, s, one, one, one, one, one)
    reg_b = b.sub()
    y2_reg = _conv_s(reg_b, y1, w2, b2, 1, s)
    y2 = b.if_(b.flag("dcn"), dcn_b, y2_dcn, reg_b, y2_reg, "ssi_bottleneck_dcn")
    y2 = b.op("Where", on2, b.op("Relu", y2), zero)

    # conv3 at m2 (BN3's scale only), interpolation (sigma2) + conv3_bias
    z = b.op("Where", on2, b.op("Conv", y2, f32(conv3_weight)), zero)
    out = _interp32(b, z, m2, f32(conv3_bias), b.attr("sigma2", "float"))

    # shortcut: the downsample conv (1x1, stride s) or identity; residual add, ReLU
    ds_b = b.sub()
    short_ds = _conv_s(ds_b, x32, _as_conv_weight(ds_b, downsample_weight, x32, 1),
                       ds_b.op("Cast", downsample_bias, to=FLOAT), 0, s)
    id_b = b.sub()
    short_id = id_b.op("Identity", x32)
    short = b.if_(b.flag("downsample"), ds_b, short_ds, id_b, short_id,
                  "ssi_bottleneck_downsample")
    out = b.op("Relu", b.op("Add", out, short))
    return b.op("CastLike", out, x), m1_io, m2_io


_BODIES = {
    C.SAMPLE_MASK.name: _sample_mask_body,
    C.SPARSE_CONV2D.name: _sparse_conv2d_body,
    C.GAUSSIAN_INTERP.name: _gaussian_interp_body,
    C.SSI_BOTTLENECK.name: _ssi_bottleneck_body,
}


def build_function(op: C.OpDef, opset: int) -> onnx.FunctionProto:
    """The model-local function of ``op`` for a model whose default-domain opset is ``opset``."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"SSI function bodies need ONNX opset {MIN_OPSET}..{MAX_OPSET}, got {opset}")
    b = _Builder(op.torch_name)
    inputs = [i.name for i in op.inputs]
    results = _BODIES[op.name](b, *inputs)
    results = (results,) if isinstance(results, str) else tuple(results)
    if len(results) != len(op.outputs):
        raise AssertionError(f"the body of {op.name} has {len(results)} outputs, "
                             f"the contract {len(op.outputs)}")
    for result, out_name in zip(results, op.outputs):
        b.nodes.append(helper.make_node("Identity", [result], [out_name]))
    attr_protos = [helper.make_attribute(a.name, int(a.default) if a.type == "int"
                                         else float(a.default)) for a in op.attributes]
    return helper.make_function(C.DOMAIN, op.name, inputs, list(op.outputs), b.nodes,
                                [helper.make_opsetid("", opset)], attribute_protos=attr_protos,
                                doc_string=f"Reference body of ssi::{op.name}: {op.doc}")


def build_functions(opset: int) -> list[onnx.FunctionProto]:
    return [build_function(op, opset) for op in C.OPS.values()]
