#!/usr/bin/env python3
"""Serving benchmark: the CPU Triton server (the serve extra) at concurrency 1, 4 and 8.

Exports a backbone (sparse_resnet50 by default, seeded random weights, dynamic batch/height/
width) unless --onnx is given, writes its CPU repository with `ssi-deploy triton-repo`,
starts the bundled tritonserver on free loopback ports, and at each concurrency sends
--requests requests of one input shape (after --warmup), over HTTP or gRPC, recording every
latency. Prints throughput and p50/p90/p99 as a table, or JSON with --json. Not a test: the
serving figures come from here. Every process it starts is ended by PID at the end.

    .venv/bin/python scripts/bench_serving.py                         # 1x3x224x224, HTTP
    .venv/bin/python scripts/bench_serving.py --protocol grpc --input-shape 1x3x64x64 --json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssi_deploy.errors import SSIError  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", type=Path, default=None, help="an export to serve (default: export one)")
    ap.add_argument("--arch", default="sparse_resnet50", help="architecture to export [%(default)s]")
    ap.add_argument("--input-shape", default="1x3x224x224", help="NxCxHxW of each request [%(default)s]")
    ap.add_argument("--concurrency", default="1,4,8", help="levels [%(default)s]")
    ap.add_argument("--requests", type=int, default=100, help="requests per level [%(default)s]")
    ap.add_argument("--warmup", type=int, default=8, help="untimed requests per level [%(default)s]")
    ap.add_argument("--protocol", choices=["http", "grpc"], default="http")
    ap.add_argument("--instances", type=int, default=None,
                    help="model instances [default: CPUs / threads]")
    ap.add_argument("--threads", type=int, default=1, help="threads per instance [%(default)s]")
    ap.add_argument("--max-batch-size", type=int, default=8, help="[%(default)s]")
    ap.add_argument("--runtime", choices=["auto", "onnxruntime", "torch"], default="onnxruntime")
    ap.add_argument("--json", dest="as_json", action="store_true", help="print JSON")
    a = ap.parse_args(argv)
    try:
        return run(a)
    except SSIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(a) -> int:
    from ssi_deploy.cli.main import main as cli
    from ssi_deploy.input_shape import parse_input_shape
    from ssi_deploy.serving.client import run_load
    from ssi_deploy.serving.server import TritonServer

    levels = [int(c) for c in a.concurrency.split(",")]
    if any(c < 1 for c in levels) or a.requests < 1:
        raise SSIError("--concurrency levels and --requests must be >= 1")
    shape = tuple(parse_input_shape(a.input_shape))
    instances = a.instances or max(1, (os.cpu_count() or 1) // a.threads)
    log = (lambda m: None) if a.as_json else (lambda m: print(m, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="ssi-bench-serving-") as tmp:
        tmp = Path(tmp)
        onnx = a.onnx
        if onnx is None:
            from ssi_deploy.export import export_onnx
            from ssi_deploy.models import create_model

            log(f"exporting {a.arch} (example 1x3x64x64, dynamic batch/height/width) ...")
            onnx = export_onnx(create_model(a.arch, init_seed=0), tmp / f"{a.arch}.onnx",
                               input_shape=(1, 3, 64, 64), dynamic=("batch", "height", "width"))
        with contextlib.redirect_stdout(io.StringIO()):  # its JSON report is not ours
            rc = cli(["triton-repo", "--onnx", str(onnx), "--output", str(tmp / "repo"),
                      "--name", "model", "--instances", str(instances), "--threads",
                      str(a.threads), "--max-batch-size", str(a.max_batch_size), "--runtime",
                      a.runtime, "--json"])
        if rc != 0:
            return rc
        cfg = (tmp / "repo" / "models" / "model" / "config.pbtxt").read_text()
        runtime = [ln for ln in cfg.splitlines() if "string_value" in ln]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        rows = []
        with TritonServer(tmp / "repo" / "models", exit_timeout_s=5) as server:
            url = server.http_url if a.protocol == "http" else server.grpc_url
            log(f"tritonserver pid {server.pid} on {url} ({a.protocol}), {instances} instance(s) "
                f"x {a.threads} thread(s), max_batch_size {a.max_batch_size}")
            for c in levels:
                run_load(url, a.protocol, "model", lambda i: {"image": x}, a.warmup, c)
                res = run_load(url, a.protocol, "model", lambda i: {"image": x}, a.requests, c)
                rows.append(res.summary())
                log(f"concurrency {c}: {res.throughput:.1f} req/s")
        report = {"input_shape": list(shape), "protocol": a.protocol, "instances": instances,
                  "threads": a.threads, "max_batch_size": a.max_batch_size,
                  "cpus": os.cpu_count(), "onnx": str(a.onnx or a.arch),
                  "runtime": runtime[0].split('"')[1] if runtime else a.runtime, "levels": rows}
    if a.as_json:
        print(json.dumps(report, indent=2))
    else:
        from ssi_deploy.cli.table import format_table

        print(f"{report['onnx']} {a.input_shape}, {a.protocol}, {instances} instance(s) x "
              f"{a.threads} thread(s), max_batch_size {a.max_batch_size}, {report['cpus']} CPUs")
        print(format_table(["concurrency", "requests", "errors", "req/s", "p50 ms", "p90 ms",
                            "p99 ms"],
                           [[r["concurrency"], r["requests"], r["errors"], r["throughput_per_s"],
                             r["p50_ms"], r["p90_ms"], r["p99_ms"]] for r in rows]))
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
