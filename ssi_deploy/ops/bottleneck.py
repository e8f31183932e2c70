"""SSIBottleneck: one SSI bottleneck as one op (spec section 2, the sparse order).

    l1 = conv1_mask(x), l2 = conv2_mask(x)            3x3, one GEMM over x's rows (+ shifts)
    m1, m2 = SampleMask(l1), SampleMask(l2)           (forced density: logits shifted per image)
    C1, C2 = compact(m1), compact(m2)                 one stable partition per mask
    r1 = relu(x[C1] W1 + b1)                          rows [count1, p]
    Y1 = interp(r1, m1, sigma1)                       dense rows [N*H*W, p]
    r2 = relu(patches3x3(Y1 or deformable)[C2] W2 + b2)   rows [count2, p]
    r3 = r2 W3                                        rows [count2, 4p], BN3's scale folded
    y  = relu(interp(r3, m2, sigma2) + b3 + shortcut(x))  one fused pass

Data stay compact channels-last rows between the steps (``block_kernels``); conv1, conv2, the
DCN offsets and conv3 are computed only at sampled positions. The op equals the three-op
chain (SampleMask, SparseConv2d, GaussianInterp) within float32 rounding.

``BlockWeights`` holds the weights as the GEMMs want them, prepared once per model
(``SSIBottleneck.fold_bn``); ``run_block`` is the forward, used by the eager model and by the
custom op ``torch.ops.ssi.ssi_bottleneck`` (which takes the contract's 15 tensors).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import contract as C
from .block_kernels import (Compaction, compact, interp_rows, interp_rows_and_taps, mask_taps,
                            native_kernels, onednn_linear, patches3x3, sum_taps, tap_matrix)


@dataclass
class BlockWeights:
    """One block's folded weights, laid out for row GEMMs (float32, [K_out, K_in]: a 1x1 conv
    weight's layout, see ``row_gemm``)."""

    cin: int
    planes: int
    mask_taps_w: torch.Tensor  # [18, Cin]: tap_matrix of conv1_mask, conv2_mask (one GEMM)
    mask_bias: torch.Tensor  # [2]
    w1: torch.Tensor  # [p, Cin]
    b1: torch.Tensor
    w_off: torch.Tensor | None  # [18, 9 Cin] tap-major (DCN)
    b_off: torch.Tensor | None
    w2: torch.Tensor  # [p, 9 p] tap-major
    b2: torch.Tensor
    w3: torch.Tensor  # [4p, p]
    b3: torch.Tensor
    w_ds: torch.Tensor | None  # [4p, Cin]
    b_ds: torch.Tensor | None

    @classmethod
    def prepare(cls, mask1_weight, mask1_bias, mask2_weight, mask2_bias, conv1_weight, conv1_bias,
                offset_weight, offset_bias, conv2_weight, conv2_bias, conv3_weight, conv3_bias,
                downsample_weight, downsample_bias, stride: int = 1, dcn: int = 0,
                downsample: int = 0) -> BlockWeights:
        f = lambda t: t.detach().float()  # noqa: E731
        p, cin = conv1_weight.shape[0], conv1_weight.shape[1]
        tap_major = lambda w: f(w).permute(0, 2, 3, 1).reshape(w.shape[0], -1).contiguous()  # noqa: E731
        return cls(
            cin=cin, planes=p,
            mask_taps_w=tap_matrix(torch.cat([f(mask1_weight), f(mask2_weight)])),
            mask_bias=torch.cat([f(mask1_bias).reshape(1), f(mask2_bias).reshape(1)]),
            w1=f(conv1_weight).reshape(p, cin).contiguous(), b1=f(conv1_bias),
            w_off=tap_major(offset_weight) if dcn else None,
            b_off=f(offset_bias) if dcn else None,
            w2=tap_major(conv2_weight), b2=f(conv2_bias),
            w3=f(conv3_weight).reshape(conv3_weight.shape[0], p).contiguous(),
            b3=f(conv3_bias),
            w_ds=f(downsample_weight).reshape(downsample_weight.shape[0], cin).contiguous()
            if downsample else None,
            b_ds=f(downsample_bias) if downsample else None)


@dataclass(frozen=True)
class BlockAttrs:
    """The op's attributes (contract ``SSI_BOTTLENECK``)."""

    stride: int = 1
    dcn: int = 0
    downsample: int = 0
    sigma1: float = C.SIGMA_INIT
    sigma2: float = C.SIGMA_INIT
    mode: int = C.MODE_THRESHOLD
    grid_interval: int = C.GRID_PRIOR_INTERVAL
    seed: int = 0
    layer1: int = 0
    layer2: int = 1
    density: float = 0.0


def shift_to_density(logits: torch.Tensor, density: float) -> torch.Tensor:
    """Forced density: shift each image's logits so that exactly its k largest are >= 0
    (k = contract.forced_count(density, H*W); ties at the k-th value are all kept)."""
    flat = logits.flatten(1)
    k = C.forced_count(density, flat.shape[1])
    lib = native_kernels() if flat.device.type == "cpu" and flat.dtype == torch.float32 else None
    if lib is not None:  # a selection, not a sort (the same value)
        kth = lib.kth_largest(flat, k)
    else:
        kth = torch.topk(flat, k, dim=1).values[:, -1]
    return logits - kth.view(-1, 1, 1, 1)


def block_masks(logits1: torch.Tensor, logits2: torch.Tensor, a: BlockAttrs):
    """(m1, m2, the logits the decisions were taken on) from the raw mask logits."""
    mode = a.mode
    if a.density > 0:
        logits1, logits2 = shift_to_density(logits1, a.density), shift_to_density(logits2, a.density)
        mode = C.MODE_THRESHOLD
    kw = dict(mode=mode, grid_interval=a.grid_interval, seed=a.seed)
    from . import select_ops  # the SampleMask custom op while tracing (the ops-form export)

    sample = select_ops().sample_mask
    return (sample(logits1, layer=a.layer1, **kw), sample(logits2, layer=a.layer2, **kw),
            (logits1, logits2))


def native_threshold_masks(taps: torch.Tensor, shape: tuple[int, int, int], bias: torch.Tensor,
                           a: BlockAttrs, scratch=None, keep_logits: bool = True):
    """(logits1, logits2, m1, m2, compaction 1, compaction 2) of a block whose masks are
    thresholded (threshold mode or a forced density) from its mask taps, in one native call:
    the same float32 steps as ``sum_taps``, ``block_masks`` and ``compact`` (bit-identical).
    None where those run instead (another sampling mode, no native library). ``scratch`` and
    ``keep_logits``: see ``NativeBlock.threshold_masks`` (the compactions, and the logits
    unless kept, in the caller's reusable buffers)."""
    lib = native_kernels() if taps.device.type == "cpu" else None
    if lib is None or not (a.density > 0 or a.mode == C.MODE_THRESHOLD):
        return None
    n_, h, w = shape
    ho, wo = output_size(h, a.stride), output_size(w, a.stride)
    k1 = C.forced_count(a.density, h * w) if a.density > 0 else 0
    k2 = C.forced_count(a.density, ho * wo) if a.density > 0 else 0
    b = bias.reshape(-1).tolist()
    l1, l2, m1, m2, p1, p2 = lib.threshold_masks(taps, shape, a.stride, b[0], b[1], k1, k2,
                                                 a.grid_interval, scratch, keep_logits)
    if scratch is None:
        return l1, l2, m1, m2, Compaction(*p1), Compaction(*p2)
    # the sampled heads as the scratch's own (kept) views of the same buffers
    return (l1, l2, m1, m2, Compaction(*p1, scratch("perm1", p1[1], torch.int64)),
            Compaction(*p2, scratch("perm2", p2[1], torch.int64)))


_MAX_VIEWS = 1024


class _Workspace(threading.local):
    """Grow-only buffers for a block's temporaries (gathered rows, GEMM results, the
    interpolated Y1, conv2's patches, the compactions), reused by every block a thread runs: a
    fresh tensor of several MB costs page faults on every call, more than the copy itself on
    small machines. The views handed out are kept as well, per shape: the blocks of a network
    ask for the same shapes on every forward, and a tensor object costs microseconds once the
    big kernels have pushed PyTorch's own data out of the caches (measured here: ~5 us per
    small tensor inside a forward, ~0.7 us in a loop of its own). Nothing a block returns
    lives here (its output and masks are new tensors)."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}
        self.views: dict[tuple, torch.Tensor] = {}

    def take(self, name: str, rows: int, cols: int | None, device,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A [rows, cols] view of buffer ``name`` ([rows] where ``cols`` is None)."""
        # a buffer made under torch.inference_mode cannot be written outside it (and the
        # other way round): one set of buffers per mode
        mode = torch.is_inference_mode_enabled()
        view = self.views.get((name, rows, cols, device, dtype, mode))
        if view is not None:
            return view
        key = (name, torch.device(device), dtype, mode)
        buf = self.buffers.get(key)
        numel = rows * (1 if cols is None else cols)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(max(numel, 1), dtype=dtype, device=device)
            self.buffers[key] = buf
            # views of the old buffer would keep it alive (and stop being this name's memory)
            self.views = {k: v for k, v in self.views.items() if k[0] != name or k[4] != dtype
                          or k[5] != mode or v.device != buf.device}
        view = buf[:numel] if cols is None else buf[:numel].view(rows, cols)
        if len(self.views) >= _MAX_VIEWS:  # counts that change every call (threshold mode)
            self.views.clear()
        self.views[(name, rows, cols, device, dtype, mode)] = view
        return view


_WS = _Workspace()


# Row GEMMs of at least this many rows run as a 1x1 convolution (oneDNN) on the CPU when
# oneDNN's matmul op is missing: about 2x MKL sgemm's rate here (AMD EPYC, 2 threads), as
# fast as the dense network's own convolutions; below it sgemm is faster than the convolution.
ONEDNN_MIN_ROWS = 256


_LINEAR = onednn_linear()
_PACK = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None) if _LINEAR is not None else None
# id(weight) -> (weakref to it, {inference mode: (version, packed)}): a plain dict lookup per
# GEMM (a WeakIdKeyDictionary makes a reference object on every get)
_PACKED: dict[int, tuple[weakref.ref, dict]] = {}
_PACK_LOCK = threading.Lock()


def _version_of(t: torch.Tensor) -> int | None:
    """``t``'s in-place version counter; None for an inference tensor (it has none, and is
    changed only under inference mode)."""
    try:
        return t._version
    except RuntimeError:
        return None


def _packed_weight(w: torch.Tensor, rows: int) -> torch.Tensor:
    """``w`` [N, K] in oneDNN's blocked layout for its matmul, reordered once per weight (per
    inference-mode state and in-place version) instead of inside every call: measured here
    6-8 % of the whole backbone's time at density 0.5, for a second copy of the block weights
    (~180 MB for R-101). ``w`` itself where this PyTorch has no such reorder or it refuses.
    The blocked layout changes where the products are summed, not what is summed (the matmul's
    bound holds either way); ``rows`` is only oneDNN's hint for the layout."""
    global _PACK
    if _PACK is None:
        return w
    mode = torch.is_inference_mode_enabled()
    version = _version_of(w)
    entry = _PACKED.get(id(w))
    hit = entry[1].get(mode) if entry is not None and entry[0]() is w else None
    if hit is not None and hit[0] == version:
        return hit[1]
    try:
        packed = _PACK(w, max(int(rows), 1))
    except RuntimeError:
        _PACK = None
        return w
    with _PACK_LOCK:
        entry = _PACKED.get(id(w))
        if entry is None or entry[0]() is not w:  # new, or an id reused after a weight died
            entry = _PACKED[id(w)] = (weakref.ref(w, _forget_packed(id(w))), {})
        entry[1][mode] = (version, packed)
    return packed


def packed_weight_cached(w: torch.Tensor) -> torch.Tensor | None:
    """The blocked copy of ``w`` kept for the current inference mode, or None (for tests)."""
    entry = _PACKED.get(id(w))
    if entry is None or entry[0]() is not w:
        return None
    hit = entry[1].get(torch.is_inference_mode_enabled())
    return None if hit is None else hit[1]


def _forget_packed(key: int):
    def drop(ref):  # the weight died: its blocked copy goes with it (no lock: a callback
        entry = _PACKED.get(key)  # may run inside a GC pass while this thread holds it)
        if entry is not None and entry[0] is ref:
            _PACKED.pop(key, None)
    return drop


def row_gemm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None,
             out: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """Rows ``x`` [M, K] times ``w`` [N, K] (a 1x1 conv weight's layout) plus ``bias``, then
    the ReLU if ``relu``: [M, N] float32. On the CPU (float32, no autograd) oneDNN's matmul
    with the ReLU fused; without it, from ONEDNN_MIN_ROWS rows a 1x1 convolution over the rows
    viewed as a channels-last [1, K, M, 1] map (no copy either way); otherwise (a)ddmm into
    ``out`` (then the ReLU in place)."""
    m, k = x.shape
    n = w.shape[0]
    cpu_f32 = (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
               and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)))
    if cpu_f32 and _LINEAR is not None:
        return _LINEAR(x, _packed_weight(w, m), bias, "relu" if relu else "none", [], "")
    if cpu_f32 and m >= ONEDNN_MIN_ROWS and x.is_contiguous() and torch.backends.mkldnn.is_available():
        y = F.conv2d(x.view(1, m, 1, k).permute(0, 3, 1, 2), w.view(n, k, 1, 1), bias)
        y = y.permute(0, 2, 3, 1).reshape(m, n)
    elif bias is None:
        y = torch.mm(x, w.t(), out=out) if out is not None else torch.mm(x, w.t())
    else:
        y = torch.addmm(bias, x, w.t(), out=out) if out is not None else torch.addmm(bias, x, w.t())
    return y.relu_() if relu else y


class TapsHandoff:
    """The next block's mask taps, computed by this block's final interpolation.

    A chain of blocks (``ResNet.forward``) passes one handoff through its blocks and sets
    ``next_w`` before each to the tap matrix of the block after it (``BlockWeights.mask_taps_w``,
    or None: that block samples no masks of its own, or there is none). ``run_block`` then
    multiplies each output row by it while the row is in cache and leaves the result here; the
    next block takes it instead of reading its whole input again for its mask convs (design C
    of ../shared/docs/gpu-block-design.md, on the CPU). The same bits as the block's own
    ``mask_taps``; taken only by the block whose weights they were made for, on the very tensor
    they were made from, unchanged since (any other input computes its own).

    ``reuse_input``, also set by the chain before each block, says that nothing but the chain
    keeps that block's input (not a stage's feature, no hook saw it): a block whose input is
    the previous block's output (its taps were taken from here) and whose shortcut is that
    input then writes its output over it, in place (no fresh map to fault in and fill, the
    residual's cache lines written where they are read)."""

    __slots__ = ("next_w", "reuse_input", "_w", "_y", "_version", "_taps")

    def __init__(self):
        self.next_w: torch.Tensor | None = None
        self.reuse_input = False
        self._w = self._y = self._version = self._taps = None

    def put(self, y: torch.Tensor, w: torch.Tensor, taps: torch.Tensor) -> None:
        self._y, self._w, self._taps, self._version = y, w, taps, _version_of(y)

    def take(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        """The taps of ``x`` by ``w`` if they are here (and forgets them either way)."""
        taps = self._taps if (self._y is x and self._w is w
                              and self._version == _version_of(x)) else None
        self._w = self._y = self._version = self._taps = None
        return taps


def output_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3, padding 1


def run_block(x: torch.Tensor, wts: BlockWeights, a: BlockAttrs,
              masks: tuple[torch.Tensor, torch.Tensor] | None = None,
              keep_logits: dict | None = None, handoff: TapsHandoff | None = None):
    """The block's forward: (y [N, 4p, Ho, Wo] channels-last, m1, m2), y in x's dtype.

    ``masks`` replaces the block's own sampling (validation replays another backend's masks);
    ``keep_logits``, a dict, receives the block's own decisions ("mask1", "mask2") and the
    logits they were taken on ("logits1", "logits2", after any forced-density shift);
    ``handoff`` passes mask taps from a block to the next in a chain (``TapsHandoff``)."""
    n_, cin, h, w = x.shape
    if cin != wts.cin:
        raise ValueError(f"SSIBottleneck: x has {cin} channels, the weights expect {wts.cin}")
    s = a.stride
    ho, wo = output_size(h, s), output_size(w, s)
    xf = x.float().contiguous(memory_format=torch.channels_last)
    x_rows = xf.permute(0, 2, 3, 1).reshape(-1, cin)  # a view: x is channels-last

    ws = lambda name, r, c_: _WS.take(name, r, c_, x.device)  # noqa: E731
    # oneDNN's matmul makes its own outputs: GEMM buffers only where sgemm writes into them
    no_buffer = lambda name, r, c_: None  # noqa: E731
    gemm_out = no_buffer if _LINEAR is not None and x.device.type == "cpu" else ws

    # 1. masks: the two 3x3 mask convs of x from one GEMM (every tap's partial map), then
    #    the shifted sums at stride 1 (m1) and at the block's stride (m2)
    comps, chained = None, False
    if masks is None or keep_logits is not None:
        taps = handoff.take(x, wts.mask_taps_w) if handoff is not None else None
        chained = taps is not None
        if taps is None:
            taps = mask_taps(x_rows, wts.mask_taps_w, out=ws("taps", x_rows.shape[0], 18))
        scratch = lambda name, k, dtype: _WS.take(name, k, None, x.device, dtype)  # noqa: E731
        own = native_threshold_masks(taps, (n_, h, w), wts.mask_bias, a, scratch,
                                     keep_logits is not None) if x.dtype == torch.float32 else None
        if own is not None:
            s1, s2, m1, m2, *comps = own
        else:
            l1 = sum_taps(taps, 0, (n_, h, w), wts.mask_bias[0:1], 1)
            l2 = sum_taps(taps, 1, (n_, h, w), wts.mask_bias[1:2], s)
            m1, m2, (s1, s2) = block_masks(l1.to(x.dtype), l2.to(x.dtype), a)
        if keep_logits is not None:
            keep_logits.update(logits1=s1, logits2=s2, mask1=m1, mask2=m2)
    if masks is not None:
        m1, m2 = masks
        comps = None
    c1, c2 = comps if comps is not None else (compact(m1), compact(m2))
    p, p4 = wts.planes, wts.w3.shape[0]

    # 2. conv1 at m1, interpolation to dense rows
    xg = torch.index_select(x_rows, 0, c1.sampled, out=ws("x1", c1.count, cin))
    rows1 = row_gemm(xg, wts.w1, wts.b1, out=gemm_out("rows1", c1.count, p), relu=True)
    # a regular conv2 reads Y1 only in the 3x3 windows of m2's positions (a deformable one
    # anywhere): only those are interpolated
    y1 = interp_rows(rows1, c1, m1, a.sigma1, out=ws("y1", x_rows.shape[0], p),
                     read_by=None if a.dcn else (m2, s))

    # 3. conv2 (and the DCN offsets) at m2
    pos2 = c2.sampled
    offsets = None
    if a.dcn:
        xp = patches3x3(x_rows, (n_, h, w), pos2, (ho, wo), s, out=ws("xp", c2.count, 9 * cin))
        offsets = row_gemm(xp, wts.w_off, wts.b_off, out=gemm_out("off", c2.count, 18))
    patches = patches3x3(y1, (n_, h, w), pos2, (ho, wo), s, offsets,
                         out=ws("patches", c2.count, 9 * p))
    rows2 = row_gemm(patches, wts.w2, wts.b2, out=gemm_out("rows2", c2.count, p), relu=True)
    # 4. conv3: a plain GEMM on rows (BN3's bias comes after the interpolation)
    rows3 = row_gemm(rows2, wts.w3, None, out=gemm_out("rows3", c2.count, p4))

    # 5. shortcut, then the final interpolation fused with b3, the residual and the ReLU
    own_short = False  # short is a tensor of this call's own (not x, not a workspace buffer)
    if a.downsample:
        src = x_rows
        if s != 1:  # the rows of x[::s, ::s], gathered: the row GEMM (packed weights) beats
            # oneDNN's strided 1x1 convolution by more than the copy costs (measured here:
            # 2.5-2.6 ms against 2.6-3.2 ms for R-101's three strided shortcuts, each)
            src = ws("xs", n_ * ho * wo, cin)
            src.view(n_, ho, wo, cin).copy_(x_rows.view(n_, h, w, cin)[:, ::s, ::s])
        buf = gemm_out("short", n_ * ho * wo, p4)
        short = row_gemm(src, wts.w_ds, wts.b_ds, out=buf)
        own_short = buf is None or short.data_ptr() != buf.data_ptr()
    else:
        if s != 1 or cin != p4:
            raise ValueError("SSIBottleneck: an identity shortcut needs stride 1 and Cin = 4p "
                             f"(got stride {s}, Cin {cin}, 4p {p4})")
        short = x_rows
    next_w = handoff.next_w if handoff is not None and x.dtype == torch.float32 else None
    # y over x itself where the chain keeps no other reference to x (TapsHandoff.reuse_input;
    # the taps taken from the handoff prove x is the previous block's output) and x is the
    # shortcut (read before written, element by element); never where x's values are still
    # wanted (recorded decisions) or autograd could see x
    in_place = (chained and handoff.reuse_input and keep_logits is None and short is x_rows
                and xf is x and not (torch.is_grad_enabled() and x.requires_grad))
    # a downsample's result of this call's own: y over it as well
    if own_short and short.is_contiguous() and not (torch.is_grad_enabled() and short.requires_grad):
        in_place = True
    buf = short if in_place else None
    if next_w is None:
        out = interp_rows(rows3, c2, m2, a.sigma2, wts.b3, short, relu=True, out=buf)
    else:  # the next block's input is y itself (float32): its mask taps while y is hot
        out, next_taps = interp_rows_and_taps(rows3, c2, m2, a.sigma2, wts.b3, short, True,
                                              next_w, out=buf)
    y = out.view(n_, ho, wo, -1).permute(0, 3, 1, 2)
    if next_w is not None:
        handoff.put(y, next_w, next_taps)
    return y.to(x.dtype), m1, m2


def ssi_bottleneck(x, mask1_weight, mask1_bias, mask2_weight, mask2_bias, conv1_weight,
                   conv1_bias, offset_weight, offset_bias, conv2_weight, conv2_bias, conv3_weight,
                   conv3_bias, downsample_weight, downsample_bias, stride: int = 1, dcn: int = 0,
                   downsample: int = 0, sigma1: float = C.SIGMA_INIT,
                   sigma2: float = C.SIGMA_INIT, mode: int = C.MODE_THRESHOLD,
                   grid_interval: int = C.GRID_PRIOR_INTERVAL, seed: int = 0, layer1: int = 0,
                   layer2: int = 1, density: float = 0.0):
    """The SSIBottleneck op on the contract's 15 tensors: (y, mask1, mask2)."""
    check_inputs(x, conv1_weight, conv3_weight, offset_weight, downsample_weight, dcn,
                 downsample)
    wts = BlockWeights.prepare(mask1_weight, mask1_bias, mask2_weight, mask2_bias, conv1_weight,
                               conv1_bias, offset_weight, offset_bias, conv2_weight, conv2_bias,
                               conv3_weight, conv3_bias, downsample_weight, downsample_bias,
                               stride, dcn, downsample)
    a = BlockAttrs(stride, dcn, downsample, sigma1, sigma2, mode, grid_interval, seed, layer1,
                   layer2, density)
    y, m1, m2 = run_block(x, wts, a)
    return y.contiguous(memory_format=torch.channels_last), m1, m2


def check_inputs(x, conv1_weight, conv3_weight, offset_weight, downsample_weight, dcn,
                 downsample) -> None:
    """Shapes the op's attributes promise (a part that is off is an empty tensor)."""
    if x.dim() != 4:
        raise ValueError(f"SSIBottleneck: x must be [N,Cin,H,W], got {tuple(x.shape)}")
    cin, p = x.shape[1], conv1_weight.shape[0]
    if tuple(conv1_weight.shape) != (p, cin, 1, 1):
        raise ValueError(f"SSIBottleneck: conv1_weight must be [p,{cin},1,1], "
                         f"got {tuple(conv1_weight.shape)}")
    if dcn and tuple(offset_weight.shape) != (18, cin, 3, 3):
        raise ValueError(f"SSIBottleneck: dcn=1 needs offset_weight [18,{cin},3,3], "
                         f"got {tuple(offset_weight.shape)}")
    if downsample and tuple(downsample_weight.shape) != (conv3_weight.shape[0], cin, 1, 1):
        raise ValueError(f"SSIBottleneck: downsample=1 needs downsample_weight "
                         f"[{conv3_weight.shape[0]},{cin},1,1], got {tuple(downsample_weight.shape)}")
