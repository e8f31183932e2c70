#!/usr/bin/env python3
"""CPU benchmark: SSI (sparse) against dense, measured in the same run.

One SSI bottleneck (ResNet-101 stage-2 shapes: 512 -> 128 -> 512 channels at 64x64) and the
whole backbone (SparseResNet-101-DCN against ResNet-101-DCN with the same weights), at forced
densities. Sparse and dense runs alternate so that machine noise hits both alike; medians.
Prints a table, writes JSON (--json) and a latency-against-density picture (--plot). Not a
test: speed claims come from here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssi_deploy.cost_model import backbone_gmacs  # noqa: E402
from ssi_deploy.models import create_model, dense_twin  # noqa: E402
from ssi_deploy.models.blocks import Bottleneck, SSIBottleneck  # noqa: E402


def timed_pair(run_a, run_b, repeats: int, warmup: int = 1):
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


def block_pair(density: float, hw: int, inplanes: int = 512, planes: int = 128, dcn: bool = True):
    gen = torch.Generator().manual_seed(0)
    sparse = SSIBottleneck(inplanes, planes, 1, None, dcn).eval()
    with torch.no_grad():
        for p in sparse.parameters():
            p.normal_(0, 0.05, generator=gen)
    dense = Bottleneck(inplanes, planes, 1, None, dcn).eval()
    dense.load_state_dict({k: v for k, v in sparse.state_dict().items() if k in dense.state_dict()})
    sparse.forced_density = density
    sparse.fused, dense.fused = sparse.fold_bn(), dense.fold_bn()
    x = torch.randn(1, inplanes, hw, hw, generator=gen).contiguous(memory_format=torch.channels_last)
    return sparse, dense, x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--densities", default="0.1,0.26,0.5")
    ap.add_argument("--input", type=int, default=512, help="square input side for the backbone")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-backbone", action="store_true")
    ap.add_argument("--plot", type=Path, help="PNG of backbone latency against density")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    densities = [float(d) for d in args.densities.split(",")]
    rows = []
    with torch.no_grad():
        for d in densities:
            s, dn, x = block_pair(d, 64)
            ts, td = timed_pair(lambda: s(x), lambda: dn(x), args.repeats * 2)
            rows.append({"what": "block stage2 64x64 dcn", "density": d, "sparse_ms": ts, "dense_ms": td,
                         "speedup": td / ts})
            print(f"block    d={d:<5} sparse {ts:8.1f} ms  dense {td:8.1f} ms  x{td / ts:.2f}", flush=True)
        if not args.skip_backbone:
            model = create_model("sparse_resnet101_dcn", init_seed=0).fuse_for_inference()
            twin = dense_twin(model).fuse_for_inference()
            model = model.to(memory_format=torch.channels_last)
            twin = twin.to(memory_format=torch.channels_last)
            x = torch.randn(1, 3, args.input, args.input).contiguous(memory_format=torch.channels_last)
            shape = tuple(x.shape)
            for d in densities:
                model.set_forced_density(d)
                ts, td = timed_pair(lambda: model(x), lambda: twin(x), args.repeats)
                dens = model.measured_densities()
                g_s = backbone_gmacs(model.arch, shape, dens)
                g_d = backbone_gmacs(twin.arch, shape)
                rows.append({"what": f"backbone sparse_resnet101_dcn {args.input}x{args.input}", "density": d,
                             "measured_density": sum(dens.values()) / len(dens), "sparse_ms": ts,
                             "dense_ms": td, "speedup": td / ts, "gmacs_sparse": g_s, "gmacs_dense": g_d,
                             "gmac_ratio": g_d / g_s})
                print(f"backbone d={d:<5} sparse {ts:8.1f} ms  dense {td:8.1f} ms  x{td / ts:.2f}"
                      f"  (cost model allows x{g_d / g_s:.2f})", flush=True)
    print()
    print(f"{'what':44} {'density':>7} {'sparse ms':>10} {'dense ms':>10} {'speedup':>8}")
    for r in rows:
        print(f"{r['what']:44} {r['density']:7.2f} {r['sparse_ms']:10.1f} {r['dense_ms']:10.1f} {r['speedup']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=2))
    if args.plot:
        plot_latency(rows, args.plot, args.threads)
    return 0


def plot_latency(rows, path: Path, threads: int) -> None:
    """Backbone latency against density, sparse and dense, with the cost model's ceiling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bb = [r for r in rows if r["what"].startswith("backbone")]
    if not bb:
        return
    d = [r["density"] for r in bb]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(d, [r["sparse_ms"] for r in bb], "o-", label="SSI (sparse ops)")
    ax.plot(d, [r["dense_ms"] for r in bb], "s--", label="dense, same weights")
    ax.plot(d, [r["dense_ms"] / r["gmac_ratio"] for r in bb], ":", color="grey",
            label="dense / cost-model ratio (ideal)")
    for r in bb:
        ax.annotate(f"x{r['speedup']:.2f}", (r["density"], r["sparse_ms"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
    ax.set_xlabel("density (share of sampled positions, every mask)")
    ax.set_ylabel("latency, ms (median)")
    ax.set_title(f"{bb[0]['what']}, CPU, {threads} threads", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
