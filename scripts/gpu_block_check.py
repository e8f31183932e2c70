"""The fused SSIBottleneck kernels (plugins/src/cuda/ssi_bottleneck.cu) against the PyTorch op.

Used by scripts/gpu_check.py on a GPU (libssi_cuda.so) and by tests/test_cuda_emulation.py on
the host emulation (libssi_cuda_emu.so). ``BlockKernels.run`` calls ``launchSSIBottleneck``
once and returns its outputs and the intermediates it left in the workspace (the layout comes
from the library), so every stage can be checked:

- logits: the kernels' own, for the caller's bound (gpu_check.py: the exact mask convolutions');
- masks: exactly SampleMask of the kernels' own logits (forced density: shifted by their k-th
  largest), so a decision can only differ from the torch op's where the logit is within that
  rounding of the threshold;
- the partitions: exactly the CPU twin's stable partition (perm, index, count) of those masks;
- features: the torch op run with the kernels' masks (``run_block(masks=...)``); in float32 the
  interpolations equal the native CPU block (``ssi_cpu_block_interp_rows``) bit for bit given
  the same rows (the GEMMs sum in another order, so rows agree to rounding).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from ssi_deploy.ops import contract as C
from ssi_deploy.ops.bottleneck import BlockAttrs

DT = {torch.float32: 0, torch.float16: 1}
LAYOUT_FIELDS = ("x_rows", "taps", "tap_weights", "logits1", "logits2", "kth", "tile_counts1", "tile_counts2",
                 "perm1", "perm2", "index1", "index2", "count1", "count2", "rows1", "y1", "offsets", "rows2",
                 "rows3", "shortcut", "split_partial", "split_counters", "packed_weights", "out", "total")


def output_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


@dataclass
class BlockRun:
    y: torch.Tensor
    mask1: torch.Tensor
    mask2: torch.Tensor
    ws: dict  # name -> tensor view of the workspace (counts as ints)


class BlockKernels:
    """ctypes over ssi_cuda_bottleneck / ssi_cuda_bottleneck_layout of a kernel library."""

    def __init__(self, lib: ctypes.CDLL, device: torch.device, stream=None):
        p, i32, u64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint64
        lib.ssi_cuda_bottleneck_layout.argtypes = [ctypes.POINTER(i32), ctypes.POINTER(ctypes.c_float), i32,
                                                   ctypes.POINTER(ctypes.c_int64)]
        lib.ssi_cuda_bottleneck_layout.restype = i32
        lib.ssi_cuda_bottleneck.argtypes = [ctypes.POINTER(p), i32, ctypes.POINTER(i32),
                                            ctypes.POINTER(ctypes.c_float), p, u64]
        lib.ssi_cuda_bottleneck.restype = i32
        self.lib, self.device = lib, torch.device(device)
        self.stream = stream or (lambda: 0)

    @staticmethod
    def params(x_shape, planes: int, cout: int, a: BlockAttrs, channels_last: bool):
        n, cin, h, w = x_shape
        ints = (ctypes.c_int32 * 15)(n, cin, h, w, planes, cout, a.stride, a.dcn, a.downsample, a.mode,
                                     a.grid_interval, a.seed, a.layer1, a.layer2, int(channels_last))
        floats = (ctypes.c_float * 3)(a.sigma1, a.sigma2, a.density)
        return ints, floats

    def layout(self, x_shape, planes, cout, a: BlockAttrs, dtype, channels_last: bool) -> dict:
        ints, floats = self.params(x_shape, planes, cout, a, channels_last)
        out = (ctypes.c_int64 * len(LAYOUT_FIELDS))()
        rc = self.lib.ssi_cuda_bottleneck_layout(ints, floats, DT[dtype], out)
        if rc != 0:
            raise ValueError(f"SSIBottleneck: invalid parameters {list(ints)} {list(floats)}")
        return dict(zip(LAYOUT_FIELDS, list(out)))

    def run(self, x: torch.Tensor, inputs, a: BlockAttrs, channels_last: bool = False, poison: bool = True,
            workspace: torch.Tensor | None = None, outputs=None) -> BlockRun:
        """One launch. ``inputs``: the contract's 14 weight tensors (empty tensors for absent
        parts). Outputs (and the workspace) are poisoned with NaN first unless given."""
        n, cin, h, w = x.shape
        planes, cout = inputs[4].shape[0], inputs[10].shape[0]
        ho, wo = output_size(h, a.stride), output_size(w, a.stride)
        L = self.layout(x.shape, planes, cout, a, x.dtype, channels_last)
        dev, dt = self.device, x.dtype
        if workspace is None:
            workspace = torch.empty(max(L["total"], 256), dtype=torch.uint8, device=dev)
            if poison:
                workspace.fill_(0xFF)  # NaN in fp32 and fp16, -1 in int32
        elif workspace.numel() < L["total"]:  # the kernels would write past it
            raise ValueError(f"SSIBottleneck: a workspace of {workspace.numel()} bytes, {L['total']} needed")
        if outputs is None:
            y = torch.full((n, cout, ho, wo), float("nan"), dtype=dt, device=dev)
            if channels_last:
                y = y.contiguous(memory_format=torch.channels_last)
            m1 = torch.full((n, 1, h, w), float("nan"), dtype=dt, device=dev)
            m2 = torch.full((n, 1, ho, wo), float("nan"), dtype=dt, device=dev)
        else:
            y, m1, m2 = outputs
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        tensors = [xin] + [t.contiguous() for t in inputs]
        ptrs = [ctypes.c_void_p(t.data_ptr()) if t.numel() else None for t in tensors]
        ptrs += [ctypes.c_void_p(y.data_ptr()), ctypes.c_void_p(m1.data_ptr()), ctypes.c_void_p(m2.data_ptr())]
        arr = (ctypes.c_void_p * 18)(*ptrs)
        ints, floats = self.params(x.shape, planes, cout, a, channels_last)
        rc = self.lib.ssi_cuda_bottleneck(arr, DT[dt], ints, floats, ctypes.c_void_p(workspace.data_ptr()),
                                          self.stream())
        if rc != 0:
            raise RuntimeError(f"launchSSIBottleneck returned {rc}")
        self._keep = (tensors, workspace)  # alive until the launch completes (GPU streams)
        return BlockRun(y, m1, m2, self.views(workspace, L, x.shape, planes, cout, a, dt))

    @staticmethod
    def views(ws: torch.Tensor, L: dict, x_shape, planes: int, cout: int, a: BlockAttrs, dt) -> dict:
        n, cin, h, w = x_shape
        ho, wo = output_size(h, a.stride), output_size(w, a.stride)
        p1, p2 = n * h * w, n * ho * wo

        def view(name, numel, dtype):
            off = L[name]
            if off < 0:
                return None
            size = torch.empty((), dtype=dtype).element_size()
            return ws[off:off + numel * size].view(dtype)

        return {
            "logits1": view("logits1", p1, torch.float32), "logits2": view("logits2", p2, torch.float32),
            "perm1": view("perm1", p1, torch.int32), "perm2": view("perm2", p2, torch.int32),
            "index1": view("index1", p1, torch.int32), "index2": view("index2", p2, torch.int32),
            "count1": view("count1", 1, torch.int32), "count2": view("count2", 1, torch.int32),
            "rows1": view("rows1", p1 * planes, dt), "y1": view("y1", p1 * planes, dt),
            "offsets": view("offsets", p2 * 18, torch.float32), "rows2": view("rows2", p2 * planes, dt),
            "rows3": view("rows3", p2 * cout, dt), "shortcut": view("shortcut", p2 * cout, dt),
            "kth": view("kth", 2 * n, torch.float32),
        }


def reference_masks(logits1, logits2, a: BlockAttrs, twins: bool = True):
    """SampleMask of the kernels' own logits (the op's rule, forced density included). With
    ``twins`` the decisions come from the CPU twin (same math.h and, under the emulation, the
    same libm: exact); otherwise from torch.ops.ssi (its expf/logf may differ by ulps, so modes
    1 and 2 can differ in the last bit of a soft value or at the threshold)."""
    from ssi_deploy.ops.bottleneck import block_masks, shift_to_density

    if not twins:
        m1, m2, _ = block_masks(logits1, logits2, a)
        return m1, m2
    from ssi_deploy.native import cpu_twins

    mode = a.mode
    if a.density > 0:
        logits1, logits2 = shift_to_density(logits1, a.density), shift_to_density(logits2, a.density)
        mode = C.MODE_THRESHOLD
    kw = dict(mode=mode, grid_interval=a.grid_interval, seed=a.seed)
    return (cpu_twins.sample_mask(logits1, layer=a.layer1, **kw),
            cpu_twins.sample_mask(logits2, layer=a.layer2, **kw))


def partition(mask: torch.Tensor):
    """(perm int64, index int32, count) of a mask: the stable partition, computed directly."""
    keep = mask.reshape(-1).float() > 0
    sampled = torch.nonzero(keep).squeeze(1)
    rest = torch.nonzero(~keep).squeeze(1)
    index = torch.full((keep.numel(),), -1, dtype=torch.int32)
    index[sampled] = torch.arange(sampled.numel(), dtype=torch.int32)
    return torch.cat([sampled, rest]), index, int(sampled.numel())


def stage_checks(run: BlockRun, x: torch.Tensor, inputs, a: BlockAttrs, twins: bool = True) -> dict:
    """Exact checks of the kernels' masks and partitions, and the torch op's output with the
    kernels' masks (for the caller's tolerance). Returns a dict of findings and tensors
    (everything on the CPU)."""
    from ssi_deploy.ops.bottleneck import BlockWeights, run_block

    n, cin, h, w = x.shape
    ho, wo = output_size(h, a.stride), output_size(w, a.stride)
    ws = {k: (v.cpu() if v is not None else None) for k, v in run.ws.items()}
    dt = x.dtype
    l1 = ws["logits1"].view(n, 1, h, w).to(dt)
    l2 = ws["logits2"].view(n, 1, ho, wo).to(dt)
    r1, r2 = reference_masks(l1, l2, a, twins)
    m1, m2 = run.mask1.cpu(), run.mask2.cpu()
    found = {"masks_equal": bool(torch.equal(m1, r1) and torch.equal(m2, r2))}
    parts_ok = True
    for k, m in (("1", m1), ("2", m2)):
        perm, index, count = partition(m)
        parts_ok &= int(ws["count" + k][0]) == count
        parts_ok &= bool(torch.equal(ws["perm" + k].long(), perm)) and bool(torch.equal(ws["index" + k], index))
    found["partitions_equal"] = parts_ok
    if a.density > 0:  # the k-th largest of each image's own logits, exactly (a radix selection on keys)
        kth = [torch.topk(ws[f"logits{k}"].view(n, -1), C.forced_count(a.density, hw), dim=1).values[:, -1]
               for k, hw in (("1", h * w), ("2", ho * wo))]
        found["kth_equal"] = bool(torch.equal(ws["kth"].view(2, n), torch.stack(kth)))
    xc = x.cpu().float()
    wts = BlockWeights.prepare(*[t.cpu() for t in inputs], stride=a.stride, dcn=a.dcn, downsample=a.downsample)
    found["logits1"], found["logits2"] = l1.float(), l2.float()
    y_ref, _, _ = run_block(xc, wts, a, masks=(m1.float(), m2.float()))
    found["y_ref"] = y_ref.float()
    found["y"] = run.y.cpu().float()
    found["ws"] = ws
    return found


def interp_bit_checks(found: dict, x: torch.Tensor, inputs, a: BlockAttrs, m1, m2) -> dict:
    """float32: the kernels' interpolations equal the native CPU block's on the same rows."""
    from ssi_deploy.native import block as native_block

    lib = native_block.available()
    if lib is None:
        return {}
    ws = found["ws"]
    n, cin, h, w = x.shape
    ho, wo = output_size(h, a.stride), output_size(w, a.stride)
    planes, cout = inputs[4].shape[0], inputs[10].shape[0]
    c1, c2 = int(ws["count1"][0]), int(ws["count2"][0])
    rows1 = ws["rows1"].view(-1, planes)[:c1].contiguous()
    y1 = lib.interp_rows(rows1, ws["index1"], m1.float(), a.sigma1, None, None, False, None)
    out = {"y1_bits": bool(torch.equal(y1, ws["y1"].view(-1, planes)))}
    rows3 = ws["rows3"].view(-1, cout)[:c2].contiguous()
    if a.downsample:
        short = ws["shortcut"].view(-1, cout)
    else:
        short = x.float().permute(0, 2, 3, 1).reshape(-1, cin).contiguous()
    y = lib.interp_rows(rows3, ws["index2"], m2.float(), a.sigma2, inputs[11].float(), short, True, None)
    y = y.view(n, ho, wo, cout).permute(0, 3, 1, 2)
    out["y_bits"] = bool(torch.equal(y, found["y"]))
    return out


def random_block(gen: torch.Generator, cin: int, planes: int, stride: int, dcn: bool, downsample: bool,
                 dtype=torch.float32, device="cpu", mask_bias=(0.3, -0.2)):
    """The contract's 14 weight tensors of a random folded block (empty tensors for absent parts)."""
    def r(*shape, scale=0.4):
        return (torch.randn(*shape, generator=gen) * scale)

    cout = 4 * planes
    empty = torch.empty(0)
    ws = [r(1, cin, 3, 3, scale=0.3), torch.tensor([mask_bias[0]]), r(1, cin, 3, 3, scale=0.3),
          torch.tensor([mask_bias[1]]), r(planes, cin, 1, 1), r(planes, scale=0.2),
          r(18, cin, 3, 3, scale=0.2) if dcn else empty, r(18, scale=0.5) if dcn else empty,
          r(planes, planes, 3, 3, scale=0.3), r(planes, scale=0.2), r(cout, planes, 1, 1, scale=0.3),
          r(cout, scale=0.2), r(cout, cin, 1, 1, scale=0.3) if downsample else empty,
          r(cout, scale=0.2) if downsample else empty]
    return [t.to(dtype=dtype, device=device) for t in ws]


def attrs_for(stride, dcn, downsample, mode=C.MODE_THRESHOLD, density=0.0, grid=C.GRID_PRIOR_INTERVAL,
              seed=7, sigma1=2.5, sigma2=1.5) -> BlockAttrs:
    return BlockAttrs(stride=stride, dcn=int(dcn), downsample=int(downsample), sigma1=sigma1, sigma2=sigma2,
                      mode=mode, grid_interval=grid, seed=seed, layer1=4, layer2=5, density=density)
