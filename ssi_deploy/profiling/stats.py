"""Latency statistics, progress lines and the state of the machine during timing."""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from ..errors import SSIError

CV_WARN = 0.10  # coefficient of variation above which the latencies are called noisy
MIN_RUNS = 3  # fewer timed runs than this: no verdict on the speed-up
LATENCY_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max")


def latency_stats(latencies_ms) -> dict:
    """min/mean/median/p90/p95/p99/max (numpy linear percentiles), std and CV, in ms."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        raise SSIError("no timed iterations")
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"min": float(a.min()), "mean": mean, "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "std": std,
            "cv": std / mean if mean > 0 else 0.0, "iterations": int(a.size)}


def public_latency(stats: dict) -> dict:
    """The latency keys of the report (ms)."""
    return {k: stats[k] for k in LATENCY_KEYS}


def throughput(stats: dict, batch: int) -> float:
    """Images per second at the mean latency."""
    return batch * 1000.0 / stats["mean"] if stats["mean"] > 0 else math.inf


class Progress:
    """Periodic progress lines on stderr (every ``every_s`` seconds) during timing."""

    def __init__(self, label: str, total: int | None, duration_s: float | None,
                 enabled: bool = True, every_s: float = 2.0, stream=None):
        self.label, self.total, self.duration_s = label, total, duration_s
        self.enabled, self.every_s = enabled, every_s
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.last = self.t0

    def __call__(self, count: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        done = self.total is not None and count >= self.total
        if now - self.last >= self.every_s or done:
            self.last = now
            goal = f"/{self.total}" if self.total else ""
            span = f" of {self.duration_s:g} s" if self.duration_s and not self.total else ""
            print(f"  {self.label}: {count}{goal} runs, {now - self.t0:.1f} s{span}",
                  file=self.stream, flush=True)


def machine_state() -> dict:
    """CPU count, load average (1, 5, 15 min; this process included) and the runnable tasks
    of other processes right now (Linux ``/proc/stat`` procs_running minus this process's
    running threads)."""
    state: dict = {"cpu_count": os.cpu_count() or 1}
    try:
        state["load_avg"] = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover - not on every platform
        state["load_avg"] = None
    state["other_running"] = _other_running()
    return state


def _other_running() -> int | None:
    """Runnable tasks on the machine (``procs_running``) minus this process's own."""
    try:
        with open("/proc/stat") as f:
            total = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
        return max(0, total - _own_running())
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _own_running() -> int:
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return max(n, 1)  # the reader itself runs
