"""The CUDA kernel sources (plugins/src/cuda/*.cu), compiled with the host compiler against the
fiber emulation of plugins/src/cuda/emulation/emulation.h, against torch.ops.ssi.

This runs the kernels' real indexing, shared-memory tiling, barriers, compaction and WMMA tile
layout without a GPU (scripts/gpu_check.py's checks, small shapes). It needs the CUDA headers
and cudart_static (not nvcc); it is skipped where the CUDA toolkit is absent.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cuda_emu"


@pytest.fixture(scope="module")
def kernels():
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / ".build.lock", "w") as lock:  # one build at a time (pytest -n)
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run([cmake, "-S", str(REPO / "plugins"), "-B", str(BUILD), "-DSSI_BUILD_CUDA=OFF",
                            "-DSSI_BUILD_CUDA_EMULATION=ON", "-DSSI_BUILD_TENSORRT=OFF",
                            "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True)
        if r.returncode != 0:
            if "CUDA" in r.stderr:
                pytest.skip("CUDA toolkit headers not found: the kernel emulation is not built")
            pytest.fail(f"cmake configure failed: {r.stderr.strip().splitlines()[-1:]}")
        r = subprocess.run([cmake, "--build", str(BUILD), "--target", "ssi_cuda_emu", "-j2"], capture_output=True,
                           text=True)
        assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gc
    spec.loader.exec_module(gc)
    return gc, gc.CudaKernels(BUILD / "lib" / "libssi_cuda_emu.so", emulated=True)


def _run(gc, fn, K, dtype, seed):
    gc.RESULTS["checks"].clear()
    gc.RESULTS["failures"].clear()
    fn(K, torch.Generator().manual_seed(seed), dtype, True)
    assert gc.RESULTS["checks"], "no check ran"
    assert not gc.RESULTS["failures"], gc.RESULTS["failures"]


def test_emulated_async_copies_land_at_their_wait(kernels):
    # cp.async copies land when their thread waits for their group (the latest a GPU allows), so a
    # GEMM stage read before its wait or its barrier sees old bytes here and fails the block tests
    lib = ctypes.CDLL(str(BUILD / "lib" / "libssi_cuda_emu.so"))
    assert lib.ssi_cuda_emu_async_copy_probe() == 0


@contextlib.contextmanager
def thread_order(lib, order: int):
    """Inside the `with`, each CUDA block's threads take their turns in `order` (0 ascending, 1
    descending, 2 a new shuffle each pass: emulation.h) and its shared memory starts poisoned
    (not only each launch's first block); the settings before are restored after."""
    before = lib.ssi_cuda_emu_set_thread_order(order)
    assert before >= 0, f"thread order {order} refused"
    poison = lib.ssi_cuda_emu_set_poison_every_block(1)  # a stale flag shows only with fresh poison
    try:
        yield
    finally:
        lib.ssi_cuda_emu_set_thread_order(before)
        lib.ssi_cuda_emu_set_poison_every_block(poison)


def test_emulated_thread_orders_and_warp_votes(kernels):
    # The probe races on purpose: each of 64 threads writes slot t, then reads slot t + 1 before a
    # barrier. Ascending, each read comes before its slot's write; descending, after it (except
    # thread 63's read of slot 0); shuffled, some of each. That is what lets the other orders catch
    # a kernel that reads shared memory another thread writes in the same barrier interval.
    lib = ctypes.CDLL(str(BUILD / "lib" / "libssi_cuda_emu.so"))
    seen = {}
    for order in (0, 1, 2):
        with thread_order(lib, order):
            got = (ctypes.c_int32 * 64)()
            assert lib.ssi_cuda_emu_thread_order_probe(got) == 0
            seen[order] = list(got)
    assert seen[0] == [0] * 63 + [1]
    assert seen[1] == list(range(2, 65)) + [0]
    fresh = [t for t in range(63) if seen[2][t] == t + 2]
    stale = [t for t in range(63) if seen[2][t] == 0]
    assert fresh and stale and len(fresh) + len(stale) == 63, seen[2]
    with thread_order(lib, 1):
        assert lib.ssi_cuda_emu_set_thread_order(3) == -1  # refused, the order kept
        assert lib.ssi_cuda_emu_set_thread_order(1) == 1
    # a warp vote waits for its own warp only: descending, warp 1 passes its vote and sets the
    # flag before warp 0 reads it; ascending, warp 0 reads first (ballots right in both)
    for order, flag in ((0, 0), (1, 1)):
        with thread_order(lib, order):
            got = (ctypes.c_int32 * 64)()
            assert lib.ssi_cuda_emu_warp_vote_probe(got) == 0
            assert list(got) == [flag] * 32 + [-1] * 32, (order, list(got))


def test_emulated_shared_memory_starts_poisoned(kernels):
    # Each block's shared memory starts poisoned, as a GPU gives a block whatever was there: 0xFF
    # bytes (NaN, -1, true) and zeros (false) in turns, so that a kernel reading a tile it did not
    # fill, or a flag nobody published yet, fails in some block instead of finding the last block's
    # values. The poisoned section must hold the kernels' arrays (shared.ld gathers them, ~1 MB),
    # and the probe's unwritten words read as both patterns and never as the block before's.
    lib = ctypes.CDLL(str(BUILD / "lib" / "libssi_cuda_emu.so"))
    lib.ssi_cuda_emu_shared_bytes.restype = ctypes.c_int64
    assert lib.ssi_cuda_emu_shared_bytes() > 100_000
    before = lib.ssi_cuda_emu_set_poison_every_block(1)
    try:
        assert lib.ssi_cuda_emu_shared_poison_probe() == 3  # both patterns, no leftovers
        lib.ssi_cuda_emu_set_poison_every_block(0)  # the default: each launch's first block only
        assert lib.ssi_cuda_emu_shared_poison_probe() == 7  # later blocks see their predecessor's
    finally:
        lib.ssi_cuda_emu_set_poison_every_block(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_sample_mask(kernels, dtype):
    gc, K = kernels
    _run(gc, gc.check_sample_mask, K, dtype, 11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_sparse_conv2d(kernels, dtype):
    gc, K = kernels
    _run(gc, gc.check_sparse_conv, K, dtype, 12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_gaussian_interp(kernels, dtype):
    gc, K = kernels
    _run(gc, gc.check_interp, K, dtype, 13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_edge_shapes(kernels, dtype):
    gc, K = kernels
    _run(gc, gc.check_edge_shapes, K, dtype, 15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_bottleneck(kernels, dtype):
    gc, K = kernels
    gc.RESULTS["checks"].clear()
    gc.RESULTS["failures"].clear()
    gc.check_bottleneck(K, torch.Generator().manual_seed(14), dtype, graphs=False)
    assert gc.RESULTS["checks"] and not gc.RESULTS["failures"], gc.RESULTS["failures"]


def test_emulated_bottleneck_graph_logic(kernels, monkeypatch):
    # the ops-form bottleneck's CUDA-graph check (a GPU's only) on the emulation, a "graph" being
    # the captured function run again at each replay: new masks through the same buffers pass; a
    # replay that runs nothing leaves the NaN poison in the output and fails.
    gc, K = kernels
    monkeypatch.setattr(gc, "RESULTS", {"checks": [], "bottleneck": [], "failures": []})
    monkeypatch.setattr(gc, "capture", lambda fn: types.SimpleNamespace(replay=fn))
    gc.check_bottleneck(K, torch.Generator().manual_seed(14), torch.float32, graphs=True)
    (row,) = gc.RESULTS["bottleneck"]
    assert row["ok"] and row["graph_equals_eager"] and row["graph_new_density1"] > row["density1"], row
    assert not gc.RESULTS["failures"], gc.RESULTS["failures"]
    monkeypatch.setattr(gc, "capture", lambda fn: types.SimpleNamespace(replay=lambda: None))
    gc.check_bottleneck(K, torch.Generator().manual_seed(14), torch.float32, graphs=True)
    row = gc.RESULTS["bottleneck"][-1]
    assert not row["ok"] and not row["graph_equals_eager"] and gc.RESULTS["failures"], row


def test_emulated_sample_mask_largest_draw_is_below_one(kernels):
    # seed 0, layer 3, (n, y, x) = (0, 705, 257): h >> 9 = 2**23 - 1, the largest draw
    # u = 1 - 2**-24 (semantics version 1 rounded it to 1.0: kept in official mode whatever
    # the logit, never kept in stochastic mode).
    gc, K = kernels
    logits = torch.full((1, 1, 706, 258), -100.0)
    out = torch.full_like(logits, float("nan"))
    K.sample_mask(logits, out, 2, 0, 0, 3)  # official
    assert torch.equal(out, torch.zeros_like(out))
    K.sample_mask(-0.3 * logits, out, 1, 0, 0, 3)  # stochastic, sigmoid(30) = 1.0f > every u
    assert torch.equal(out, torch.ones_like(out))


def test_emulated_launch_rejects_bad_parameters(kernels):
    gc, K = kernels
    x = torch.randn(1, 4, 8, 8)
    w = torch.randn(4, 4, 3, 3)
    a = dict(stride_h=1, stride_w=1, pad_h=1, pad_w=1, dilation_h=1, dilation_w=1, groups=3, relu=0)
    with pytest.raises(RuntimeError, match="launchSparseConv2d returned"):
        K.sparse_conv2d(x, w, torch.zeros(4), torch.ones(1, 1, 8, 8), None, torch.empty(1, 4, 8, 8), a,
                        torch.empty(4096, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="launchSampleMask returned"):
        K.sample_mask(torch.zeros(1, 1, 4, 4), torch.empty(1, 1, 4, 4), 9, 11, 0, 0)


@pytest.mark.parametrize("order", [0, 1, 2], ids=["ascending", "descending", "shuffled"])
@pytest.mark.parametrize("deform", [False, True])
def test_emulated_kernels_equal_cpu_twins_bitwise(kernels, deform, order):
    # Same math.h, same summation order, same host compiler (no FMA contraction): the CUDA
    # kernel sources and the CPU twins must agree to the bit in float32, in every thread order.
    from ssi_deploy.native import cpu_twins as T
    _, K = kernels
    with thread_order(K.lib, order):
        _kernels_equal_cpu_twins(K, T, deform)


def _kernels_equal_cpu_twins(K, T, deform):
    g = torch.Generator().manual_seed(21 + deform)
    for mode in (0, 1, 2):
        logits = torch.randn(2, 1, 23, 31, generator=g) * 3
        got = torch.empty_like(logits)
        K.sample_mask(logits, got, mode, 11, 5, 2)
        assert torch.equal(got, T.sample_mask(logits, mode, 11, 5, 2))
    x = torch.randn(2, 40, 19, 23, generator=g)
    w = torch.randn(70, 40, 3, 3, generator=g)
    b = torch.randn(70, generator=g)
    m = (torch.rand(2, 1, 10, 12, generator=g) < 0.5).float()
    off = torch.randn(2, 18, 10, 12, generator=g) if deform else None
    a = dict(stride_h=2, stride_w=2, pad_h=1, pad_w=1, dilation_h=1, dilation_w=1, groups=1, relu=1)
    y = torch.full((2, 70, 10, 12), float("nan"))
    K.sparse_conv2d(x, w, b, m, off, y, a, torch.empty(4096, dtype=torch.uint8))
    assert torch.equal(y, T.sparse_conv2d(x, w, b, m, off, **a))
    vals = torch.randn(2, 5, 37, 41, generator=g)
    mi = torch.rand(2, 1, 37, 41, generator=g)
    mi[mi < 0.7] = 0
    res = torch.randn(2, 5, 37, 41, generator=g)
    out = torch.full_like(vals, float("nan"))
    K.gaussian_interp(vals, mi, b[:5], res, out, 2.0, 1)
    assert torch.equal(out, T.gaussian_interp(vals, mi, b[:5], res, 2.0, 1))


def test_gpu_check_kernel_breakdown_aggregation(kernels):
    # scripts/gpu_check.py's per-kernel breakdown of the fused block (its profiler part needs a
    # GPU): names shortened, calls and times per block launch, shares of the total.
    gc, _ = kernels
    assert gc.kernel_short_name("void ssi::(anonymous namespace)::rowGemmKernel<__half, float, false, true>"
                                "(__half const*, ssi::GemmArgs)") == "rowGemmKernel"
    assert gc.kernel_short_name("tapsPrepKernel") == "tapsPrepKernel"
    events = [("void ssi::tapsPrepKernel<float, false>(float const*, ssi::PrepArgs<float>)", 2.0),
              ("void ssi::rowGemmKernel<float, float, false, false>(float const*)", 10.0),
              ("void ssi::rowGemmKernel<float, float, true, false>(float const*)", 6.0)] * 2
    rows = gc.aggregate_kernels(events, launches=2)
    assert [r["kernel"] for r in rows] == ["tapsPrepKernel", "rowGemmKernel"]
    assert rows[0]["calls_per_block"] == 1 and rows[1]["calls_per_block"] == 2
    assert rows[0]["us_per_block"] == 2.0 and rows[1]["us_per_block"] == 16.0
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-12 and abs(rows[0]["share"] - 2 / 18) < 1e-12


def test_gpu_check_block_timing_logic_on_the_emulation(kernels, monkeypatch, tmp_path):
    # The fused block's timing and kernel breakdown run only on a GPU; a GPU is lent rarely and for
    # minutes, so their logic runs here on the emulation, on small stages (graph replays timed as
    # eager calls, the profiler's kernel records made from the emulation's launch count): every
    # configuration timed, the threshold variant at about the forced density, the regs path (the
    # GEMMs without their cp.async pipeline) at 0.26 and the pipeline's gains, the backbone sums,
    # the breakdown's launch counts, the table and the plot.
    gc, K = kernels
    monkeypatch.setattr(gc, "RESULTS", {"checks": [], "bottleneck": [], "timing": [], "failures": []})
    # (s2 wide enough for tensor cores in fp16: its DCN offsets in conv1's launch, its first block's
    # downsample in conv3's; the narrower stages launch them apart)
    monkeypatch.setattr(gc, "R101_STAGES", [("s1", 4, False, 4, 3), ("s2", 16, True, 8, 4), ("s3", 8, True, 16, 23),
                                            ("s4", 8, True, 32, 3)])
    monkeypatch.setattr(gc, "BLOCK_RESOLUTIONS", [(96, 128)])
    monkeypatch.setattr(gc, "BLOCK_BATCHES", [1])
    monkeypatch.setattr(gc, "BLOCK_DENSITIES", [0.1, 0.26, 0.75])
    monkeypatch.setattr(gc, "GRAPH_TARGET_ELEMENTS", 1)
    monkeypatch.setattr(gc, "BREAKDOWN_CONFIG", dict(res=(96, 128), batch=1, density=0.26, launches=2))

    def graph_ms(fn, launches, reps):
        t = time.perf_counter()
        fn()
        t = (time.perf_counter() - t) * 1e3 / launches
        return t, t, t

    monkeypatch.setattr(gc, "graph_ms", graph_ms)
    monkeypatch.setattr(gc, "kernel_floor_us", lambda: 2.0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    count = K.lib.ssi_cuda_launch_count
    count.restype = ctypes.c_int64

    class Profile:  # one CUDA kernel record of 1 us per emulated launch
        def __init__(self, activities):
            pass

        def __enter__(self):
            self.start = count()
            return self

        def __exit__(self, *exc):
            self.n = count() - self.start

        def events(self):
            rng = types.SimpleNamespace(elapsed_us=lambda: 1.0)
            return [types.SimpleNamespace(name="void ssi::kernel<__half>()", device_type="DeviceType.CUDA",
                                          time_range=rng)] * self.n

    monkeypatch.setattr(torch.profiler, "profile", Profile)
    gc.run_block_timing(K, 1, 600.0)
    gc.run_block_breakdown(K)
    res = gc.block_results()
    assert not gc.RESULTS["failures"], gc.RESULTS["failures"]
    rows = {(r["stage"], r["block"], r["path"], r["density"]): r for r in res["timing"]}
    for stage in ("s1", "s2", "s3", "s4"):
        for block in ("first", "non-first"):
            for d in gc.BACKBONE_DENSITIES:
                forced, thr = rows[(stage, block, "portable", d)], rows[(stage, block, "portable-thr", d)]
                assert forced["mode"] == "forced density" and thr["mode"] == "threshold"
                if stage == "s1":  # 24 x 32 positions: about the forced density
                    assert abs(thr["density_m1"] - forced["density_m1"]) < 0.05, (forced, thr)
        assert (stage, "non-first", "portable", 0.1) in rows and (stage, "non-first", "portable-thr", 0.1) not in rows
        for block in ("first", "non-first"):  # regs: forced, at REGS_DENSITIES only
            assert {d for (st, blk, pth, d) in rows if (st, blk, pth) == (stage, block, "regs")} == {0.26}
        assert not any(pth == "regs-thr" for (_, _, pth, _) in rows)
    # two passes: every configuration at the backbone densities first (a budget that runs out costs
    # the sweep), the sweep against the first pass's dense baselines (one per configuration)
    order = [r["density"] in gc.BACKBONE_DENSITIES for r in res["timing"]]
    assert order == sorted(order, reverse=True) and not order[-1], order
    assert sorted((r["stage"], r["block"]) for r in res["dense"]) == sorted(
        (st, blk) for st in ("s1", "s2", "s3", "s4") for blk in ("first", "non-first"))
    assert {(b["path"], b["density"]) for b in res["backbone"]} == {
        (pth, d) for pth in ("portable", "portable-thr") for d in gc.BACKBONE_DENSITIES} | {("regs", 0.26)}
    gains = {(g["stage"], g["block"]): g for g in res["pipeline"]}
    assert set(gains) == {(st, blk) for st in ("s1", "s2", "s3", "s4") for blk in ("first", "non-first")} | {
        ("backbone", "sum")}
    g = gains[("s2", "non-first")]
    assert g["gain"] == rows[("s2", "non-first", "regs", 0.26)]["fused_ms"] / rows[("s2", "non-first", "portable",
                                                                                      0.26)]["fused_ms"]
    launches = {(b["stage"], b["path"]): b["launches"] for b in res["breakdown"]["blocks"]}
    expected = {("s1", "portable"): 10, ("s1", "portable-thr"): 8, ("s2", "portable"): 10, ("s2", "portable-thr"): 8}
    expected.update({(st, pth): n for st in ("s3", "s4") for pth, n in (("portable", 11), ("portable-thr", 9))})
    expected.update({(st, "regs"): expected[(st, "portable")] for st in ("s1", "s2", "s3", "s4")})
    assert launches == expected
    b = res["breakdown"]["blocks"][0]
    assert b["launch_floor_us"] == 2.0 * b["launches"] and b["graph_us"] == rows[("s1", "non-first", "portable",
                                                                                   0.26)]["fused_ms"] * 1e3
    gc.block_table()
    plot = gc.block_plot(tmp_path / "block_latency.png")
    assert plot == str(tmp_path / "block_latency.png") or plot.startswith("no plot: matplotlib unavailable")


class _HostEvent:
    """torch.cuda.Event's timing interface on the host clock (the emulation has no CUDA)."""

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


def test_gpu_check_ops_timing_logic_on_the_emulation(kernels, monkeypatch):
    # The ops-form sections of the GPU run (run_timing: dense cuDNN against the three-op chain in
    # graphs, per density; breakdown: per-op times and GB/s) on the emulation, on one small stage:
    # a "graph" reruns its function, CUDA events read the host clock, the copy bandwidth is given.
    gc, K = kernels
    monkeypatch.setattr(gc, "RESULTS", {"checks": [], "bottleneck": [], "timing": [], "failures": []})
    monkeypatch.setattr(gc, "STAGES", [("layer2", 32, 8, 12, 14)])
    monkeypatch.setattr(gc, "DENSITIES", [0.2, 1.0])
    monkeypatch.setattr(gc, "capture", lambda fn: types.SimpleNamespace(replay=fn))
    monkeypatch.setattr(gc, "copy_bandwidth", lambda: 3.0)
    monkeypatch.setattr(torch.cuda, "Event", _HostEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    gc.run_timing(K, torch.Generator().manual_seed(3), reps=2, sets=2)
    rows = gc.RESULTS["timing"]
    assert [(r["stage"], r["density"]) for r in rows] == [("layer2", 0.2), ("layer2", 1.0)]
    for r in rows:
        assert r["dense_ms"] > 0 and r["ssi_ms"] > 0 and r["speedup"] == r["dense_ms"] / r["ssi_ms"], r
        assert r["ssi_ms_p10"] <= r["ssi_ms"] <= r["ssi_ms_p90"] and r["ssi_bytes_floor_ms"] > 0, r
    assert rows[1]["density_m2"] == 1.0 and 0 < rows[0]["density_m2"] < 1, rows
    gc.breakdown(K, torch.Generator().manual_seed(3))
    (b,) = gc.RESULTS["breakdown_density_0.2"]
    steps = set(b["GBps"])
    assert len(steps) == 7 and all(b[k] > 0 and b["GBps"][k] > 0 for k in steps), b
    assert not gc.RESULTS["failures"], gc.RESULTS["failures"]


def test_gpu_check_sh_leaves_seven_files_in_out():
    # A lent GPU machine returns at most 8 files from $OUT (and folders 2 deep). gpu_check.sh
    # leaves 7 there whatever the options: 4 logs (the build's with the resource usage, every
    # sanitizer pass in one), the checks' and the timing's JSON, the plot; the sanitized runs'
    # own JSON goes to the build folder.
    code = "\n".join(line for line in (REPO / "scripts" / "gpu_check.sh").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    named = set(re.findall(r'"\$OUT/([^"]*)"', code))
    assert named == {"build.log", "sanitizer.log", "checks.log", "gpu_check.log", "checks"}, named
    outs = set(re.findall(r'--out "([^"]*)"', code))
    assert {o for o in outs if o.startswith("$OUT")} == {"$OUT", "$OUT/checks"}, outs
    assert all(o.startswith(("$OUT", "$BUILD/")) for o in outs), outs
    # each --out run writes gpu_check.json; the timing's (into $OUT) also block_latency.png
    files = (named - {"checks"}) | {"checks/gpu_check.json", "gpu_check.json", "block_latency.png"}
    assert len(files) == 7


FAKE_GPU_TOOLS = {  # stand-ins for what gpu_check.sh calls on a GPU machine (the shell's plumbing only)
    "nvidia-smi": 'case "$*" in *compute_cap*) echo 9.0 ;; *) echo "name, driver_version"; echo "H100, 580" ;; esac',
    "cmake": 'for a; do [ "$prev" = -B ] && mkdir -p "$a/lib"; prev=$a; done; echo "cmake $*"',
    "cuobjdump": 'echo "Function ssi_kernel: REG:64 STACK:0 SHARED:0"',
    "compute-sanitizer": 'echo "========= ERROR SUMMARY: 0 errors"',
    "python": """import json, pathlib, sys
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "gpu_check.json").write_text(json.dumps({"argv": sys.argv[1:]}))
if "--timing-only" in sys.argv:
    (out / "block_latency.png").write_bytes(b"png")
print("checks: 1/1 passed")""",
}


def test_gpu_check_sh_runs_its_steps_on_stand_in_tools(tmp_path):
    # gpu_check.sh from the build to the timing, with stand-ins for nvidia-smi, cmake, cuobjdump,
    # compute-sanitizer and python (SSI_RACECHECK=1: all three sanitizer passes): rc 0, both
    # gpu_check.py processes run with their --out, and $OUT holds exactly its 7 files.
    bin_dir = tmp_path / "cuda" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in FAKE_GPU_TOOLS.items():
        tool = bin_dir / name
        tool.write_text(("#!" + sys.executable + "\n" if name == "python" else "#!/bin/sh\n") + body + "\n")
        tool.chmod(0o755)
    out, build = tmp_path / "out", tmp_path / "build"
    env = dict(os.environ, CUDA_HOME=str(tmp_path / "cuda"), PYTHON=str(bin_dir / "python"), OUT=str(out),
               SSI_GPU_BUILD_DIR=str(build), SSI_RACECHECK="1")
    r = subprocess.run(["bash", "scripts/gpu_check.sh", "--small"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exit status checks 0, timing 0" in r.stdout and "== build for sm_90" in r.stdout, r.stdout
    got = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert got == sorted(["build.log", "sanitizer.log", "checks.log", "checks/gpu_check.json", "gpu_check.log",
                          "gpu_check.json", "block_latency.png"]), got
    log = (out / "sanitizer.log").read_text()
    assert all(f"== {t} (exit status 0)" in log for t in ("memcheck", "racecheck", "synccheck")), log
    assert "REG:64" in (out / "build.log").read_text()
    checks = json.loads((out / "checks" / "gpu_check.json").read_text())["argv"]
    assert "--checks-only" in checks and "--small" in checks
    assert "--timing-only" in json.loads((out / "gpu_check.json").read_text())["argv"]
    # no sanitizer pass: the same 7 files, the log says why it is empty
    out2 = tmp_path / "out2"
    r = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=dict(env, OUT=str(out2), SSI_SANITIZE="0", SSI_RACECHECK="0"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(str(f.relative_to(out2)) for f in out2.rglob("*") if f.is_file()) == got
    assert "no compute-sanitizer pass ran" in (out2 / "sanitizer.log").read_text()


def test_gpu_check_runs_timing_in_its_own_process(kernels, tmp_path):
    # gpu_check.sh runs the checks and the timing as two processes (a kernel fault in one cannot
    # take the other's figures with it): --timing-only skips the checks and still writes its json;
    # with --checks-only the two flags are refused in one line before any work.
    gc, K = kernels
    assert gc.context_lost(RuntimeError("no GPU here")) is False
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--checks-only", "--timing-only"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "exclude each other" in r.stdout and len(r.stdout.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--emulated", str(BUILD / "lib" / "libssi_cuda_emu.so"), "--timing-only",
                        "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "timing only (no checks)" in r.stdout
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["checks"] == [] and data["failures"] == []
    script = (REPO / "scripts" / "gpu_check.sh").read_text()
    assert '--out "$OUT/checks" --checks-only' in script and '--out "$OUT" --timing-only' in script
    # a caller's --out would send both processes to one folder: refused in one line, before the build
    r = subprocess.run(["bash", "scripts/gpu_check.sh", "--small", "--out", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "OUT=DIR" in r.stdout and len(r.stdout.strip().splitlines()) == 1
    # the racecheck/synccheck passes' selection: the fused block's checks alone
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--block-only"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "--checks-only" in r.stdout
    out = tmp_path / "block"
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--emulated", str(BUILD / "lib" / "libssi_cuda_emu.so"),
                        "--checks-only", "--block-only", "--small", "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert set(data["section_seconds"]) == {"fused block checks"} and data["checks"] and not data["failures"]


def test_gpu_check_launch_paths_set_the_launcher_environment(kernels, monkeypatch):
    # gpu_check times and checks each launch path by the launcher's environment (read at each
    # launch); "pdl" chains the portable kernels (programmatic dependent launch, compute capability
    # >= 9.0), so the library answers 0 here whatever the environment says; "regs" keeps the GEMMs
    # off their cp.async pipeline, which the emulation has.
    gc, K = kernels
    monkeypatch.setenv("SSI_BLOCK_GEMM", "caller")
    monkeypatch.delenv("SSI_BLOCK_PDL", raising=False)
    seen = {}
    for path in ("portable", "pdl", "sm90", "regs"):
        with gc.block_gemm(path):
            seen[path] = (os.environ.get("SSI_BLOCK_GEMM"), os.environ.get("SSI_BLOCK_PDL"))
    assert seen == {"portable": (None, None), "pdl": (None, "1"), "sm90": ("sm90", None), "regs": ("regs", None)}
    assert os.environ["SSI_BLOCK_GEMM"] == "caller" and "SSI_BLOCK_PDL" not in os.environ
    assert gc.pdl_status(K) is False and gc.block_results()["pdl"] == {"available": False, "pdl_set": 0,
                                                                      "pdl_unset": 0}
    assert gc.block_paths(K, torch.float16) == ["portable", "regs"] and gc.block_paths(K, torch.float32) == ["portable"]
    assert gc.block_results()["regs"] == {"available": True, "gemm_path_regs": 2, "pipelined": True}


def test_gpu_check_output_is_checked_first_and_written_atomically(kernels, tmp_path):
    # an output folder that cannot be written is refused in one line before any work; the json
    # is written by a rename, and no temporary file is left behind, also when writing fails
    gc, _ = kernels
    blocked = tmp_path / "file"
    blocked.write_text("")
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--cpu-dry-run", "--out", str(blocked / "out")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "cannot write into" in r.stdout and len(r.stdout.strip().splitlines()) == 1
    target = tmp_path / "r.json"
    gc.write_atomic(target, lambda t: t.write_text("{}"))
    assert target.read_text() == "{}"

    def fail(t):
        t.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        gc.write_atomic(target, fail)
    assert target.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["file", "r.json"]
