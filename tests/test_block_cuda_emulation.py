"""The fused SSIBottleneck CUDA kernels (plugins/src/cuda/ssi_bottleneck.cu, portable path),
compiled with the host compiler against the fiber emulation, against the PyTorch op.

Per case, one launch of ``launchSSIBottleneck`` (outputs and workspace poisoned with NaN), then:
- the logits in the workspace are the mask convolutions' within float32 rounding (a bound
  derived from the sums, plus one rounding to fp16 for fp16);
- the masks are exactly SampleMask of those logits (forced density: after the shift by their
  own k-th largest), and the partitions exactly the stable partition of the masks;
- the output is the spec's sparse order (float64 oracle) with those masks, within the bound of
  tests/test_block_op.py (plus one fp16 rounding per stored stage in fp16);
- in float32 the two interpolations equal the native CPU block's on the same rows, bit for bit.
Shapes: batch 1 and 3, odd sizes, stride 1 and 2, with and without DCN and downsample, all
three sampling modes, forced density, empty and full masks, x and y NCHW or channels-last.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import sys
import types
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fp_bounds import gamma
from test_block_op import feature_bound, make_block, oracle
from test_cuda_emulation import kernels  # noqa: F401  (the module fixture that builds the emulation)
from test_cuda_emulation import thread_order
from ssi_deploy.ops import contract as C

REPO = Path(__file__).resolve().parents[1]
U16 = 2.0 ** -11  # fp16 unit roundoff


@pytest.fixture(scope="module")
def block_kernels(kernels):  # noqa: F811
    spec = importlib.util.spec_from_file_location("gpu_block_check", REPO / "scripts" / "gpu_block_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_block_check"] = mod
    spec.loader.exec_module(mod)
    _, K = kernels
    return mod, mod.BlockKernels(K.lib, torch.device("cpu"))


CASES = [
    # cin, planes, stride, dcn, downsample, batch, h, w, mode, density, masks, channels_last
    (16, 4, 1, False, False, 1, 13, 11, C.MODE_THRESHOLD, 0.0, "mixed", False),
    (16, 4, 1, True, False, 3, 9, 15, C.MODE_STOCHASTIC, 0.0, "mixed", True),
    (8, 4, 2, False, True, 3, 13, 11, C.MODE_OFFICIAL, 0.0, "mixed", False),
    (8, 4, 2, True, True, 1, 15, 9, C.MODE_THRESHOLD, 0.0, "mixed", True),
    (16, 4, 1, False, False, 3, 12, 12, C.MODE_THRESHOLD, 0.3, "mixed", False),
    (8, 4, 2, True, True, 3, 11, 13, C.MODE_STOCHASTIC, 0.1, "mixed", False),
    (16, 4, 1, True, False, 3, 9, 9, C.MODE_THRESHOLD, 0.0, "empty", False),
    (8, 4, 2, False, True, 3, 9, 10, C.MODE_OFFICIAL, 0.0, "full", True),
    (32, 8, 2, True, True, 1, 1, 1, C.MODE_THRESHOLD, 0.0, "mixed", False),
    # wide enough for the tensor-core path in fp16 (Cin, p >= 16) and a K of several chunks
    (64, 16, 1, True, False, 2, 10, 9, C.MODE_THRESHOLD, 0.5, "mixed", True),
    (48, 16, 2, False, True, 1, 35, 37, C.MODE_THRESHOLD, 0.26, "mixed", False),
    # channels-last interpolation: several 16-channel chunks per block and per image, the last
    # one partial (Y1: 20 channels, y: 80), tiles cut by the map's edges
    (80, 20, 1, False, False, 2, 7, 18, C.MODE_THRESHOLD, 0.0, "mixed", True),
    # 20 channels: fp16 stages the residual element by element (20 % 8 != 0), fp32 as one
    # 16-byte piece in the partial last chunk
    (20, 5, 1, False, False, 2, 9, 13, C.MODE_THRESHOLD, 0.3, "mixed", True),
    (48, 12, 2, True, True, 1, 35, 37, C.MODE_STOCHASTIC, 0.26, "mixed", True),
    # split-K: 36 K steps of 32 in the DCN offsets and in conv2 (2 splits each on these few tiles;
    # without DCN, so that conv2's error is not hidden under the bound's DCN term)
    (128, 128, 1, True, True, 2, 9, 11, C.MODE_THRESHOLD, 0.5, "mixed", True),
    (128, 128, 2, False, True, 1, 12, 7, C.MODE_OFFICIAL, 0.0, "mixed", False),
    # 10 splits in conv2 (162 K steps on 9 tiles): the fixup adds them 8 loads at a time
    (64, 576, 1, False, True, 1, 5, 6, C.MODE_THRESHOLD, 0.5, "mixed", True),
    # a 97 x 95 map (9,215 positions per image): the k-th largest's passes take 9 values per thread
    (8, 4, 2, False, True, 1, 97, 95, C.MODE_THRESHOLD, 0.3, "mixed", True),
    # Cin % 4 != 0 with DCN: the packed offset weights (9 x 18 x 21 halves) end off a 16-byte
    # boundary, while conv2's (p % 8 == 0) are read as 16-byte vectors
    (21, 16, 1, True, True, 2, 9, 11, C.MODE_THRESHOLD, 0.4, "mixed", True),
    # the paired launches with split K: the DCN offsets (18 splits) beside conv1 (2 splits: its
    # partial sums and counters after the offsets'), the downsample (2 splits) beside conv3
    (1024, 16, 2, True, True, 2, 8, 5, C.MODE_THRESHOLD, 0.5, "mixed", True),
    # the mask taps split 4 ways (64 K steps on one tile): the splits' sums added in split order by
    # the mask kernel that reads them (no forced density: sampleKernel, not tapSumKernel)
    (2048, 16, 1, False, True, 1, 6, 7, C.MODE_THRESHOLD, 0.0, "mixed", True),
]


def _ids(case):
    cin, p, s, dcn, ds, n, h, w, mode, dens, masks, cl = case
    return (f"c{cin}p{p}-s{s}{'-dcn' if dcn else ''}{'-ds' if ds else ''}-n{n}-{h}x{w}-mode{mode}"
            f"{f'-d{dens}' if dens else ''}-{masks}{'-nhwc' if cl else ''}")


def _logit_bound(conv, x, stride, dtype, exact):
    e = gamma(9 * x.shape[1] + 1) * F.conv2d(x.double().abs(), conv.weight.double().abs(),
                                             conv.bias.double().abs(), stride, 1)
    if dtype == torch.float16:  # the kernels' and the reference's roundings to fp16
        e = e + 2 * U16 * (exact.abs() + e) + 2 ** -24
    return e


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_emulated_block_equals_op(block_kernels, case, dtype):
    mod, BK = block_kernels
    cin, p, s, dcn, ds, n, h, w, mode, density, kind, channels_last = case
    gen = torch.Generator().manual_seed(zlib.crc32(_ids(case).encode()))  # (str hash() differs per process)
    bias = {"mixed": (0.3, -0.2), "empty": (-30.0, -30.0), "full": (30.0, 30.0)}[kind]
    block = make_block(cin, p, s, dcn, ds, gen, bias, grid=0 if kind == "empty" else 11)
    block.sampling_mode, block.seed, block.forced_density = mode, 7, density
    x = torch.randn(n, cin, h, w, generator=gen)
    with torch.no_grad():
        f = block.fold_bn()
        a = block.block_attrs(f)
        inputs = [t.to(dtype) for t in f["inputs"]]
        xd = x.to(dtype)
        run = BK.run(xd, inputs, a, channels_last=channels_last)
        found = mod.stage_checks(run, xd, inputs, a)
        assert found["masks_equal"], "masks differ from SampleMask of the kernels' own logits"
        assert found["partitions_equal"], "perm/index/count differ from the stable partition"
        assert found.get("kth_equal", not density), "the k-th largest logits differ from topk's"

        # the logits: the mask convolutions of the op's own (fp16: rounded) inputs
        xq = xd.float()
        for key, conv, stride in (("logits1", block.conv1_mask, 1), ("logits2", block.conv2_mask, s)):
            cq = torch.nn.Conv2d(cin, 1, 3, stride, 1)
            cq.weight.copy_(conv.weight.to(dtype).float())
            cq.bias.copy_(conv.bias.to(dtype).float())
            exact = F.conv2d(xq.double(), cq.weight.double(), cq.bias.double(), stride, 1)
            err = (found[key].double() - exact).abs()
            assert bool((err <= _logit_bound(cq, xq, stride, dtype, exact)).all()), key

        if dcn:  # the offset rows: the offset conv at m2's samples (its own bound, far below the
            # DCN term of the feature bound, which would hide a wrong offset)
            count = int(found["ws"]["count2"][0])
            rows = found["ws"]["offsets"].view(-1, 18)[:count].double()
            wq, bq = (t.to(dtype).float() for t in f["offset"])
            ref = F.conv2d(xq.double(), wq.double(), bq.double(), s, 1).permute(0, 2, 3, 1).reshape(-1, 18)
            mag = F.conv2d(xq.double().abs(), wq.double().abs(), bq.double().abs(), s, 1)
            bound = gamma(9 * cin + 1) * mag.permute(0, 2, 3, 1).reshape(-1, 18)
            at = found["ws"]["perm2"][:count].long()
            assert bool(((rows - ref[at]).abs() <= bound[at]).all()), "DCN offset rows"

        # conv2's rows: relu(patches3x3(Y1, the kernels' offsets) W2 + b2) at m2's samples, with the
        # native CPU block's patches (math.h's taps and blends: the same values; rounded to fp16
        # where the kernels round them, on tensor cores: fp16 with p >= 16) and a float64 GEMM:
        # any summation order is within gamma(9p + 1)
        from ssi_deploy.native import block as native

        nb = native.available()
        assert nb is not None, "the native CPU block is not available"
        ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
        count2 = int(found["ws"]["count2"][0])
        at2 = found["ws"]["perm2"][:count2].long()
        y1rows = found["ws"]["y1"].view(n * h * w, p).float()
        offs = found["ws"]["offsets"].view(-1, 18)[:count2].float() if dcn else None
        patches = nb.patches3x3(y1rows, (n, h, w), at2, (ho, wo), s, offs)
        if dtype == torch.float16 and p >= 16:
            patches = patches.half()
        patches = patches.double()
        w2, b2 = (t.to(dtype).double() for t in f["conv2"])
        w2r = w2.permute(0, 2, 3, 1).reshape(p, 9 * p)  # tap-major K, as the patches
        ref2 = torch.relu(patches @ w2r.T + b2)
        bound2 = gamma(9 * p + 1) * (patches.abs() @ w2r.abs().T + b2.abs())
        if dtype == torch.float16:  # rows2 stored in fp16
            bound2 = bound2 + U16 * (ref2 + bound2) + 2 ** -24
        rows2 = found["ws"]["rows2"].view(-1, p)[:count2].double()
        assert bool(((rows2 - ref2).abs() <= bound2).all()), "conv2 rows"

        m1, m2 = run.mask1.float(), run.mask2.float()
        if kind == "empty":
            assert not m1.any() and not m2.any()
        if kind == "full":
            assert bool((m1 > 0).all()) and bool((m2 > 0).all())
        if density:
            share = float((m2 > 0).float().mean())
            assert density - 0.01 <= share <= density + 0.2

        y = run.y.float()
        assert y.shape == (n, 4 * p, (h - 1) // s + 1, (w - 1) // s + 1)
        assert not torch.isnan(y).any()
        if channels_last:
            assert run.y.is_contiguous(memory_format=torch.channels_last)
        # features against the float64 oracle with the kernels' masks (on the op's inputs)
        fq = {k: (tuple(t.to(dtype).float() for t in v) if isinstance(v, tuple) else v) for k, v in f.items()
              if k in ("conv1", "conv2", "conv3", "offset", "downsample", "sigma1", "sigma2")}
        exact, _ = oracle(block, fq, xq, m1, m2)
        bound = feature_bound(block, fq, xq, m1, m2)
        if dtype == torch.float16:  # rows1, Y1, rows2, rows3, shortcut and y stored in fp16
            mag, _ = oracle(block, fq, xq, m1, m2, absolute=True)
            bound = bound + 8 * U16 * (mag + bound)
        err = (y.double() - exact).abs()
        assert bool((err <= bound).all()), f"error {float(err.max()):.3g} over the bound " \
                                           f"({float((err / bound.clamp_min(1e-300)).max()):.2f} of it)"
        if dtype == torch.float32:
            bits = mod.interp_bit_checks(found, xd, inputs, a, m1, m2)
            assert bits, "the native CPU block is not available"
            assert bits["y1_bits"], "Y1 differs from the native CPU block's interpolation of the same rows"
            assert bits["y_bits"], "y differs from the native CPU block's final interpolation of the same rows"


def test_emulated_block_graph_reuse_and_unsampled_rows_never_read(block_kernels):
    # The same workspace and outputs reused by a second launch (as inside a CUDA graph) give the
    # same bits; rows past the counts are never read (the workspace starts poisoned with NaN).
    # Also with split-K GEMMs (cin = p = 128: 36 K steps), whose tile counters must be back at zero.
    mod, BK = block_kernels
    gen = torch.Generator().manual_seed(5)
    for cin, p, n, h, w in ((16, 4, 3, 11, 9), (128, 128, 2, 9, 7)):
        block = make_block(cin, p, 2, True, True, gen)
        x = torch.randn(n, cin, h, w, generator=gen)
        with torch.no_grad():
            f = block.fold_bn()
            a = block.block_attrs(f)
            first = BK.run(x, f["inputs"], a)
            y1 = first.y.clone()
            ws = BK._keep[1]  # the first launch's workspace, reused as a CUDA graph reuses it
            again = BK.run(x, f["inputs"], a, workspace=ws)
            fresh = BK.run(x, f["inputs"], a)
        assert torch.equal(y1, again.y) and torch.equal(first.mask2, again.mask2)
        assert torch.equal(y1, fresh.y)
        assert not torch.isnan(y1).any()


# fp16 cases whose row GEMMs run on tensor cores with 16-byte rows (Cin % 8 == 0): the mask taps,
# conv1, conv3, the downsample, regular 3x3 taps and the DCN offsets (B padded to 24 columns) take
# the cp.async pipeline by default; the DCN taps and rows of 20 channels keep the register path
PIPELINE_CASES = [
    (48, 16, 2, False, True, 1, 35, 37, C.MODE_THRESHOLD, 0.26, "mixed", False),
    (128, 128, 1, True, True, 2, 9, 11, C.MODE_THRESHOLD, 0.5, "mixed", True),  # split K
    (64, 576, 1, False, True, 1, 5, 6, C.MODE_THRESHOLD, 0.5, "mixed", True),  # 10 splits
    (1024, 16, 2, True, True, 2, 8, 5, C.MODE_THRESHOLD, 0.5, "mixed", True),  # paired launches
    (2048, 16, 1, False, True, 1, 6, 7, C.MODE_THRESHOLD, 0.0, "mixed", True),  # the taps split 4 ways
    (80, 20, 1, False, False, 2, 7, 18, C.MODE_THRESHOLD, 0.0, "mixed", True),
    (64, 16, 1, False, False, 3, 9, 7, C.MODE_OFFICIAL, 0.0, "full", False),  # identity shortcut
]


@pytest.mark.parametrize("case", PIPELINE_CASES, ids=[_ids(c) for c in PIPELINE_CASES])
def test_emulated_gemm_pipeline_equals_register_path(block_kernels, case, monkeypatch):
    # The row GEMMs' cp.async pipeline (the default) and their register path (SSI_BLOCK_GEMM=regs,
    # kept so that a GPU run can time the pipeline) put the same halves in the same places: the
    # output, the masks and every byte of the workspace (rows, split-K sums, counters) are the same.
    mod, BK = block_kernels
    cin, p, s, dcn, ds, n, h, w, mode, density, kind, channels_last = case
    gen = torch.Generator().manual_seed(zlib.crc32(_ids(case).encode()))
    bias = {"mixed": (0.3, -0.2), "full": (30.0, 30.0)}[kind]
    block = make_block(cin, p, s, dcn, ds, gen, bias, grid=11)
    block.sampling_mode, block.seed, block.forced_density = mode, 7, density
    x = torch.randn(n, cin, h, w, generator=gen).half()
    lib = BK.lib
    lib.ssi_cuda_emu_async_copies.restype = ctypes.c_int64
    lib.ssi_cuda_bottleneck_gemm_path.restype = ctypes.c_int32
    with torch.no_grad():
        f = block.fold_bn()
        a = block.block_attrs(f)
        inputs = [t.half() for t in f["inputs"]]
        L = BK.layout(x.shape, p, 4 * p, a, torch.float16, channels_last)
        runs = {}
        for path in ("pipeline", "regs"):
            if path == "regs":
                monkeypatch.setenv("SSI_BLOCK_GEMM", "regs")
            else:
                monkeypatch.delenv("SSI_BLOCK_GEMM", raising=False)
            assert lib.ssi_cuda_bottleneck_gemm_path() == (2 if path == "regs" else 0)
            ws = torch.full((max(L["total"], 256),), 0xFF, dtype=torch.uint8)
            copies = lib.ssi_cuda_emu_async_copies()
            run = BK.run(x, inputs, a, channels_last=channels_last, workspace=ws)
            runs[path] = (run, ws, lib.ssi_cuda_emu_async_copies() - copies)
    (pipe, ws_pipe, copies_pipe), (regs, ws_regs, copies_regs) = runs["pipeline"], runs["regs"]
    assert copies_pipe > copies_regs, "the default launch did not take the GEMMs' cp.async pipeline"
    assert not torch.isnan(pipe.y).any()
    for u, v in ((pipe.y, regs.y), (pipe.mask1, regs.mask1), (pipe.mask2, regs.mask2)):
        assert torch.equal(u.view(torch.int16), v.view(torch.int16))
    assert torch.equal(ws_pipe, ws_regs), "the workspaces differ"


# One case for each of the block's kernels and paths: SIMT tiles with DCN taps (fp32; fp16 with
# p < 16), the tensor-core deformable GEMM and a forced density (tap sums, k-th largest), the
# cp.async pipeline with regular taps and the 32x32 NCHW interpolation, the NHWC interpolation's
# chunks, split K with its counters, the paired launches, the taps' split sums, a partition of
# several tiles (cases of CASES, by their ids)
ORDER_CASES = [c for c in CASES if _ids(c) in {
    "c16p4-s1-dcn-n3-9x15-mode1-mixed-nhwc",
    "c64p16-s1-dcn-n2-10x9-mode0-d0.5-mixed-nhwc",
    "c48p16-s2-ds-n1-35x37-mode0-d0.26-mixed",
    "c80p20-s1-n2-7x18-mode0-mixed-nhwc",
    "c128p128-s1-dcn-ds-n2-9x11-mode0-d0.5-mixed-nhwc",
    "c1024p16-s2-dcn-ds-n2-8x5-mode0-d0.5-mixed-nhwc",
    "c2048p16-s1-ds-n1-6x7-mode0-mixed-nhwc",
    "c8p4-s2-ds-n1-97x95-mode0-d0.3-mixed-nhwc",
}]
assert len(ORDER_CASES) == 8, "an ORDER_CASES id no longer names a case of CASES"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", ORDER_CASES, ids=[_ids(c) for c in ORDER_CASES])
def test_emulated_block_is_independent_of_thread_order(block_kernels, case, dtype):
    # A GPU runs a block's threads in any order between two barriers. The emulation runs them in
    # ascending order unless told otherwise, so a thread there sees what lower threads wrote before
    # a barrier that is missing. Descending and shuffled orders make such a read see the old bytes
    # instead: a kernel that reads shared memory another thread writes in the same barrier interval
    # changes some bit of the output, the masks or the workspace (rows, sums, counters, taps).
    mod, BK = block_kernels
    cin, p, s, dcn, ds, n, h, w, mode, density, kind, channels_last = case
    gen = torch.Generator().manual_seed(zlib.crc32(_ids(case).encode()))
    block = make_block(cin, p, s, dcn, ds, gen, (0.3, -0.2), grid=11)
    block.sampling_mode, block.seed, block.forced_density = mode, 7, density
    x = torch.randn(n, cin, h, w, generator=gen).to(dtype)
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    with torch.no_grad():
        f = block.fold_bn()
        a = block.block_attrs(f)
        inputs = [t.to(dtype) for t in f["inputs"]]
        L = BK.layout(x.shape, p, 4 * p, a, dtype, channels_last)
        runs = []
        for order in (0, 1, 2):
            ws = torch.full((max(L["total"], 256),), 0xFF, dtype=torch.uint8)
            with thread_order(BK.lib, order):
                runs.append((BK.run(x, inputs, a, channels_last=channels_last, workspace=ws), ws))
    (first, ws0), rest = runs[0], runs[1:]
    assert not torch.isnan(first.y).any()
    for order, (run, ws) in zip(("descending", "shuffled"), rest):
        for name in ("y", "mask1", "mask2"):
            u, v = getattr(first, name), getattr(run, name)
            assert torch.equal(u.contiguous().view(bits), v.contiguous().view(bits)), f"{name}: {order}"
        assert torch.equal(ws0, ws), f"the workspaces differ: {order}"


def test_emulated_block_rejects_bad_parameters(block_kernels):
    mod, BK = block_kernels
    gen = torch.Generator().manual_seed(6)
    inputs = mod.random_block(gen, 8, 4, 1, False, False)
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(ValueError, match="invalid parameters"):  # identity shortcut needs Cin = 4p
        BK.run(x, inputs, mod.attrs_for(1, False, False))
    inputs = mod.random_block(gen, 16, 4, 1, False, False)
    x = torch.randn(1, 16, 5, 5)
    with pytest.raises(ValueError, match="invalid parameters"):  # an identity shortcut at stride 2
        BK.run(x, inputs, mod.attrs_for(2, False, False))
    with pytest.raises(ValueError, match="invalid parameters"):
        BK.run(x, inputs, mod.attrs_for(1, False, False, mode=9))
    # null weights where the block needs them: an error code, not a crash
    ints, floats = BK.params(x.shape, 4, 16, mod.attrs_for(1, False, False), False)
    arr = (ctypes.c_void_p * 18)()
    assert BK.lib.ssi_cuda_bottleneck(arr, 0, ints, floats, None, 0) != 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_gpu_check_block_cases(kernels, dtype):  # noqa: F811
    # scripts/gpu_check.py's check_block (the GPU check's fused-block cases, small shapes) on the
    # emulation: every case runs and passes (exact masks against the CPU twins here); in fp16 each
    # case also on the regs path, bit for bit the portable path's.
    gc, K = kernels
    gc.RESULTS["checks"].clear()
    gc.RESULTS["failures"].clear()
    gc.check_block(K, torch.Generator().manual_seed(17), dtype, True)
    ran = [c for c in gc.RESULTS["checks"] if c["kind"] == "SSIBottleneck"]
    portable = [c for c in ran if " portable " in c["name"]]
    regs = [c for c in ran if " regs " in c["name"]]
    assert len(portable) == len(gc.BLOCK_CASES) and len(ran) == len(portable) + len(regs), "a case did not run"
    assert len(regs) == (len(gc.BLOCK_CASES) if dtype == torch.float16 else 0)
    assert all(c["masks_equal"] and c["partitions_equal"] for c in portable)
    assert all(c["ok"] and c["equals_portable"] for c in regs)
    assert not gc.RESULTS["failures"], gc.RESULTS["failures"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_check_logit_bound_is_the_arithmetics(kernels, block_kernels, dtype):  # noqa: F811
    # The GPU check's logits test: element by element within the sums' rounding bound of the exact
    # logits. Logits that cancel to near zero on a small map passed no relative tolerance (a flaky
    # failure of gpu_check --small: fp32, a 2x1 map, 1.05e-4 of the 1e-5 allowed); here a 1x1 map
    # whose biases cancel the sums: the float32 logits pass the bound, one logit off by half a
    # product fails it.
    gc, _ = kernels
    mod, _ = block_kernels
    gen = torch.Generator().manual_seed(8)
    cin = 32
    inputs = mod.random_block(gen, cin, 8, 2, False, True, dtype=dtype)
    x = torch.randn(1, cin, 1, 1, generator=gen).to(dtype)
    for wi, bi, s in ((0, 1, 1), (2, 3, 2)):
        exact = F.conv2d(x.double(), inputs[wi].double(), None, s, 1)
        inputs[bi].copy_(-exact.flatten()[0].to(dtype))
    found, exacts = {}, {}
    for key, wi, bi, s in (("logits1", 0, 1, 1), ("logits2", 2, 3, 2)):
        got = F.conv2d(x.float(), inputs[wi].float(), inputs[bi].float(), s, 1)  # float32 sums
        found[key] = got.to(dtype).float()
        exacts[key] = F.conv2d(x.double(), inputs[wi].double(), inputs[bi].double(), s, 1)
    if dtype == torch.float32:  # correct logits that the old relative tolerance (1e-5) failed
        assert max(float((found[k].double() - e).abs().max() / e.abs().max()) for k, e in exacts.items()) > 1e-5
    assert gc.logits_findings(found, x, inputs, 2)["logits_err_over_bound"] <= 1.0
    xq = x.double()
    wrong = dict(found)
    tap = (xq[0, :, 0, 0] * inputs[0].double()[0, :, 1, 1]).abs().max()  # one product's size
    wrong["logits1"] = found["logits1"].clone()
    wrong["logits1"][0, 0, 0, 0] += float(tap) * 0.5
    assert gc.logits_findings(wrong, x, inputs, 2)["logits_err_over_bound"] > 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mode", [C.MODE_STOCHASTIC, C.MODE_OFFICIAL])
def test_gpu_check_mask_findings_on_a_gpu_allow_only_the_band(kernels, block_kernels, mode, dtype):  # noqa: F811
    # On a GPU, modes 1 and 2 compare the kernels' masks with torch.ops.ssi's (CUDA's expf/logf
    # against the host's: check_block's exact=False), a branch the emulation (exact, against the
    # CPU twins) never takes: here on an emulated launch, the masks pass; a decision flipped
    # outside the rounding band fails them.
    gc, _ = kernels
    mod, BK = block_kernels
    gen = torch.Generator().manual_seed(23 + mode)
    a = mod.attrs_for(1, True, False, mode, 0.0, C.GRID_PRIOR_INTERVAL, 91)
    inputs = mod.random_block(gen, 16, 4, 1, True, False, dtype=dtype)
    x = torch.randn(2, 16, 9, 13, generator=gen).to(dtype)
    run = BK.run(x, inputs, a)
    found = mod.stage_checks(run, x, inputs, a, twins=True)
    info = gc.block_mask_findings(found, run, a, dtype, exact=False)
    assert info["masks_ok"] and info["mask_flips"] <= 1, info
    m1 = run.mask1.clone()
    logits = found["logits1"].to(dtype)
    _, band = gc.fp_bounds().sample_mask_bound(logits, a.mode, a.grid_interval, a.seed, a.layer1)
    kept = ((m1 > 0) & ~band).nonzero()
    assert len(kept), "no kept position outside the band"
    m1[tuple(kept[0])] = 0
    wrong = gc.block_mask_findings(found, dataclasses.replace(run, mask1=m1), a, dtype, exact=False)
    assert not wrong["masks_ok"] and wrong["mask_flips"] >= 1, wrong


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_check_block_graph_chain_logic_on_the_emulation(kernels, monkeypatch, dtype):  # noqa: F811
    # gpu_check's chain of fused blocks in a CUDA graph (check_block_graph) runs only on a GPU, and
    # a GPU is lent rarely and for minutes: its logic runs here on a small chain (a strided first
    # block with downsample, two identity blocks, DCN, official sampling), a "graph" being its
    # captured function run again at each replay. Every path passes; a replay that runs nothing
    # leaves the poison in the outputs and fails every path.
    gc, K = kernels
    monkeypatch.setattr(gc, "RESULTS", {"checks": [], "failures": []})
    monkeypatch.setattr(gc, "CHAIN_SPECS", [(16, 4, 2, True, True)] + [(16, 4, 1, True, False)] * 2)
    monkeypatch.setattr(gc, "CHAIN_INPUT", (2, 9, 11))
    monkeypatch.setattr(gc, "capture", lambda fn: types.SimpleNamespace(replay=fn))
    gc.check_block_graph(K, torch.Generator().manual_seed(5), dtype)
    rows = list(gc.block_results()["graph_chain"])
    assert [r["name"].split()[1] for r in rows] == gc.block_paths(K, dtype)
    for r in rows:
        assert r["ok"] and not r["nan"] and r["graph_equals_eager"] and r["graph_equals_eager_new_input"], r
        assert r["new_input_changes_output"] and len(r["block_rel_errs"]) == 3, r
    assert all(c["ok"] for c in gc.RESULTS["checks"]) and not gc.RESULTS["failures"]
    monkeypatch.setattr(gc, "capture", lambda fn: types.SimpleNamespace(replay=lambda: None))
    gc.check_block_graph(K, torch.Generator().manual_seed(5), torch.float32)
    idle = gc.block_results()["graph_chain"][len(rows):]
    assert idle and all(not r["ok"] and not r["graph_equals_eager"] for r in idle), idle


# (cin, planes, stride, dcn, downsample, n, h, w, mode, forced density, channels-last), dtype -> launches
F32, F16 = torch.float32, torch.float16
LAUNCHES = [
    ((16, 4, 1, False, False, 1, 9, 11, C.MODE_THRESHOLD, 0.0, True), F32, 8),  # a chained stage-1 block
    # a chained stage-2-4 block: the DCN offsets in conv1's launch
    ((16, 4, 1, True, False, 1, 9, 11, C.MODE_THRESHOLD, 0.0, True), F32, 8),
    ((64, 16, 1, True, False, 1, 9, 11, C.MODE_THRESHOLD, 0.0, True), F16, 8),  # on tensor cores
    ((16, 4, 1, True, False, 1, 9, 11, C.MODE_THRESHOLD, 0.0, True), F16, 9),  # fp16 on SIMT: two launches
    ((16, 4, 1, True, False, 2, 9, 11, C.MODE_STOCHASTIC, 0.0, True), F32, 8),
    ((16, 4, 1, True, False, 1, 9, 11, C.MODE_OFFICIAL, 0.0, True), F32, 8),
    ((16, 4, 1, True, False, 1, 9, 11, C.MODE_THRESHOLD, 0.3, True), F32, 10),  # + tap sums, k-th largest
    ((16, 4, 1, True, False, 1, 9, 11, C.MODE_THRESHOLD, 0.0, False), F32, 9),  # + x to rows
    ((8, 4, 2, True, True, 1, 9, 11, C.MODE_THRESHOLD, 0.0, True), F32, 8),  # the downsample in conv3's launch
    ((16, 16, 2, False, True, 1, 9, 11, C.MODE_THRESHOLD, 0.0, True), F16, 8),  # (a stage-1 first block)
    ((16, 4, 1, False, False, 2, 50, 50, C.MODE_THRESHOLD, 0.0, True), F32, 9),  # + the scan: 5 tiles > 4
]


@pytest.mark.parametrize("case,dtype,launches", LAUNCHES,
                         ids=[f"{_ids(c[:10] + ('mixed',) + c[10:])}-{str(d)[6:]}" for c, d, _ in LAUNCHES])
def test_block_launch_count(block_kernels, case, dtype, launches):
    # Each launch of a chained block costs a few microseconds on a GPU even inside a CUDA graph,
    # and at batch 1 stages 3-4 are bound by them (plugins/NOTES.md): the launch sequence is
    # pinned here, as the emulation counts it (ssi_cuda_launch_count).
    mod, BK = block_kernels
    cin, p, s, dcn, ds, n, h, w, mode, density, channels_last = case
    gen = torch.Generator().manual_seed(3)
    block = make_block(cin, p, s, dcn, ds, gen, (0.3, -0.2), grid=11)
    block.sampling_mode, block.seed, block.forced_density = mode, 7, density
    x = torch.randn(n, cin, h, w, generator=gen)
    lib = BK.lib
    lib.ssi_cuda_launch_count.restype = ctypes.c_int64
    with torch.no_grad():
        f = block.fold_bn()
        a = block.block_attrs(f)
        before = lib.ssi_cuda_launch_count()
        BK.run(x.to(dtype), [t.to(dtype) for t in f["inputs"]], a, channels_last=channels_last)
        assert lib.ssi_cuda_launch_count() - before == launches
