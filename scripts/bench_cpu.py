#!/usr/bin/env python3
"""CPU benchmark: SSI backbones (the SSIBottleneck op) against dense, measured in one run.

Whole backbones at 1x3x512x512 by default: SparseResNet-101 (dense side: oneDNN convolutions)
and SparseResNet-101-DCN (dense side: the deformable conv of the same package, see below),
each against its dense twin with the same weights, at forced densities. Sparse and dense runs
alternate so that machine noise hits both alike; medians. Prints a table, writes JSON
(--json) and a latency-against-density picture (--plot). Not a test: speed claims come from
here.

The dense twin of a DCN backbone runs its deformable convs through ssi-deploy's own
SparseConv2d with a full mask (grid_sample gathers): there is no oneDNN deformable conv, so
its ratio says less than the one without DCN.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssi_deploy.cost_model import backbone_gmacs  # noqa: E402
from ssi_deploy.errors import SSIError  # noqa: E402
from ssi_deploy.models import create_model, dense_twin  # noqa: E402
from ssi_deploy.outputs import atomic_output, check_output_path, write_text_atomic  # noqa: E402
from ssi_deploy.profiling.allocator import keep_freed_memory  # noqa: E402


def timed_pair(run_a, run_b, repeats: int, warmup: int = 1):
    """Median ms of a and b, alternating a, b, a, b, ... after ``warmup`` rounds."""
    for _ in range(warmup):
        run_a(), run_b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def native_state() -> str:
    from ssi_deploy.native import block

    return "native (libssi_cpu, OpenMP)" if block.available() is not None else "PyTorch kernels"


def bench_arch(arch: str, side: int, densities: list[float], repeats: int) -> list[dict]:
    model = create_model(arch, init_seed=0).fuse_for_inference()
    twin = dense_twin(model).fuse_for_inference()
    model = model.to(memory_format=torch.channels_last).eval()
    twin = twin.to(memory_format=torch.channels_last).eval()
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    shape = tuple(x.shape)
    g_d = backbone_gmacs(twin.arch, shape)
    rows = []
    for d in densities:
        model.set_forced_density(d)
        ts, td = timed_pair(lambda: model(x), lambda: twin(x), repeats)
        dens = model.measured_densities()
        g_s = backbone_gmacs(model.arch, shape, dens)
        r = {"arch": arch, "input": f"1x3x{side}x{side}", "density": d,
             "measured_density": sum(dens.values()) / len(dens), "sparse_ms": ts, "dense_ms": td,
             "speedup": td / ts, "gmacs_sparse": g_s, "gmacs_dense": g_d, "gmac_ratio": g_d / g_s}
        rows.append(r)
        print(f"{arch:22} d={d:<5} sparse {ts:8.1f} ms  dense {td:8.1f} ms  x{td / ts:.2f}"
              f"  (cost model allows x{g_d / g_s:.2f})", flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'architecture':22} {'density':>7} {'measured':>8} {'sparse ms':>10} {'dense ms':>9} "
            f"{'speed-up':>8} {'MAC ratio':>9}")
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['arch']:22} {r['density']:7.2f} {r['measured_density']:8.3f} "
              f"{r['sparse_ms']:10.1f} {r['dense_ms']:9.1f} {r['speedup']:7.2f}x "
              f"{r['gmac_ratio']:8.2f}x")


def plot_latency(rows: list[dict], path: Path, threads: int, kernels: str) -> None:
    """Latency against density, sparse and dense, per architecture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = plt.subplots(1, len(archs), figsize=(5.5 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        rs = [r for r in rows if r["arch"] == arch]
        d = [r["density"] for r in rs]
        ax.plot(d, [r["sparse_ms"] for r in rs], "o-", label="SSI (SSIBottleneck op)")
        ax.plot(d, [r["dense_ms"] for r in rs], "s--", label="dense, same weights")
        ax.plot(d, [r["dense_ms"] / r["gmac_ratio"] for r in rs], ":", color="grey",
                label="dense / MAC ratio (ideal)")
        for r in rs:
            ax.annotate(f"x{r['speedup']:.2f}", (r["density"], r["sparse_ms"]),
                        textcoords="offset points", xytext=(4, -12), fontsize=8)
        ax.set_xlabel("forced density (share of sampled positions, every mask)")
        ax.set_ylabel("latency, ms (median)")
        ax.set_title(f"{arch} {rs[0]['input']}, CPU, {threads} threads", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle(f"kernels: {kernels}", fontsize=8)
    fig.tight_layout()
    with atomic_output(path, "--plot") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="sparse_resnet101,sparse_resnet101_dcn")
    ap.add_argument("--densities", default="0.1,0.26,0.5,0.75")
    ap.add_argument("--input", type=int, default=512, help="square input side")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="PNG of latency against density")
    args = ap.parse_args()
    try:  # before minutes of timing: the report files can be written
        for opt, path, suffix in (("--json", args.json, ".json"), ("--plot", args.plot, ".png")):
            if path is not None:
                check_output_path(path, opt, suffix)
    except SSIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    allocator = keep_freed_memory()  # both sides alike; see profiling/allocator.py
    densities = [float(d) for d in args.densities.split(",")]
    kernels = native_state()
    print(f"torch {torch.__version__}, {args.threads} threads, SSI kernels: {kernels}, "
          f"SSI_NATIVE_BLOCK={os.environ.get('SSI_NATIVE_BLOCK', 'unset')}, {allocator}", flush=True)
    rows = []
    with torch.no_grad():
        for arch in args.archs.split(","):
            rows += bench_arch(arch.strip(), args.input, densities, args.repeats)
    print_table(rows)
    if args.json:
        write_text_atomic(args.json, json.dumps({"threads": args.threads, "torch": torch.__version__,
                                                 "kernels": kernels, "allocator": allocator,
                                                 "rows": rows}, indent=2),
                          "--json")
        print(f"wrote {args.json}")
    if args.plot:
        plot_latency(rows, args.plot, args.threads, kernels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
