"""The demo's summary says what a user can trust: densities, the MAC ratio, each side's CV,
the machine's load and threads, and the profile's verdict (no bare speed-up)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from ssi_deploy import demo
from ssi_deploy.profiling import speedup_verdict


def _prof(cv_sparse, load):
    lat = {k: 11350.0 for k in ("min", "mean", "median", "p90", "p95", "p99", "max")}
    r = {"backend": {"backend": "torch"}, "arch": "sparse_resnet101_dcn",
         "latency_ms": lat, "latency_cv": cv_sparse, "iterations": 3,
         "density": {"layer1.0.mask1": 0.3, "layer2.0.mask1": 0.4},
         "density_mean": 0.35, "density_per_stage": {"layer1": 0.3, "layer2": 0.4},
         "backbone_gmacs": 60.0, "gmacs_ratio_vs_dense": 2.9, "speedup_vs_dense": 0.87,
         "machine": {"cpu_count": 2, "threads": 2, "load_avg_before": [load, 1, 1],
                     "load_avg_after": [load, 1, 1], "other_running_before": 1},
         "dense": {"arch": "resnet101_dcn", "backbone_gmacs": 174.0, "latency_cv": 0.05,
                   "iterations": 3, "latency_ms": {"median": 9833.0}}}
    r["speedup_verdict"] = speedup_verdict(r)
    return r


def _vres():
    out = SimpleNamespace(max_abs=1e-4, cosine=0.9999999)
    return SimpleNamespace(passed=True, comparison=SimpleNamespace(outputs=[out], masks=[]))


def test_demo_summary_reports_noise_and_mac_ratio(capsys, tmp_path):
    args = argparse.Namespace(image="coffee", short_side=512)
    s = demo._summary(args, (1, 3, 512, 768), tmp_path / "m.onnx", _vres(),
                      _prof(cv_sparse=0.25, load=3.4), None, {}, 60.0)
    demo._print_summary(args, s, tmp_path, None)
    out = capsys.readouterr().out
    assert "density          mean 0.350 over 2 sampling layers; per stage layer1 0.300, " \
           "layer2 0.400" in out
    assert "sparse 60.0 vs dense 174.0 at these densities: MAC ratio 2.90x" in out
    assert "sparse 11350 ms (CV 25 %) vs dense 9833 ms (CV 5 %), median of 3 runs: 0.87x" in out
    assert "2 threads on 2 cores, load average 3.4" in out
    assert "verdict          noisy: CV sparse 25 %, dense 5 % (over 10 %)" in out
    assert "the 0.87x ratio is not reliable on this run" in out


def test_demo_summary_reliable_run(capsys, tmp_path):
    args = argparse.Namespace(image="coffee", short_side=512)
    s = demo._summary(args, (1, 3, 512, 768), tmp_path / "m.onnx", _vres(),
                      _prof(cv_sparse=0.03, load=1.0), None, {}, 60.0)
    demo._print_summary(args, s, tmp_path, None)
    out = capsys.readouterr().out
    assert "verdict          speed-up 0.87x of the 2.90x the MAC ratio allows (30 %" in out
    assert s["speedup_verdict"]["reliable"] is True
