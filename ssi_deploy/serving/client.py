"""Requests to a Triton server with ``tritonclient`` (HTTP or gRPC), and latency statistics.

Used by the serving tests and ``scripts/bench_serving.py``; a client of your own needs only
``tritonclient`` and the names, types and shapes of the model's ``config.pbtxt``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import SSIError
from .config_pbtxt import DATA_TYPES

PROTOCOLS = ("http", "grpc")


def _module(protocol: str):
    try:
        if protocol == "http":
            import tritonclient.http as mod
        elif protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            raise SSIError(f"protocol must be http or grpc, not {protocol!r}")
    except ImportError as e:
        raise SSIError(f"tritonclient is not installed ({e}): pip install -e '.[serve]'") from None
    return mod


def triton_datatype(array: np.ndarray) -> str:
    for _, (_, dt, np_name) in DATA_TYPES.items():
        if array.dtype == np.dtype(np_name):
            return dt
    raise SSIError(f"no Triton datatype for numpy {array.dtype}")


class Client:
    """One connection (tritonclient clients are not shared between threads: make one each)."""

    def __init__(self, url: str, protocol: str = "http", timeout_s: float = 60.0):
        self.protocol = protocol
        self.mod = _module(protocol)
        if protocol == "http":
            self.client = self.mod.InferenceServerClient(url, connection_timeout=timeout_s,
                                                         network_timeout=timeout_s)
        else:
            self.client = self.mod.InferenceServerClient(url)
        self.timeout_s = timeout_s

    def infer(self, model: str, feeds: dict[str, np.ndarray],
              outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        inputs = []
        for name, arr in feeds.items():
            arr = np.ascontiguousarray(arr)
            i = self.mod.InferInput(name, list(arr.shape), triton_datatype(arr))
            if self.protocol == "http":
                i.set_data_from_numpy(arr, binary_data=True)
            else:
                i.set_data_from_numpy(arr)
            inputs.append(i)
        req_out = None
        if outputs is not None:
            req_out = [self.mod.InferRequestedOutput(n, binary_data=True) if self.protocol == "http"
                       else self.mod.InferRequestedOutput(n) for n in outputs]
        kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        result = self.client.infer(model, inputs, outputs=req_out, **kw)
        names = outputs or [o["name"] for o in (result.get_response()["outputs"]
                                                if self.protocol == "http" else
                                                result.get_response(as_json=True)["outputs"])]
        return {n: result.as_numpy(n) for n in names}

    def close(self) -> None:
        self.client.close()


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)  # successful requests
    errors: list[str] = field(default_factory=list)
    results: list = field(default_factory=list)  # (request index, outputs or None)
    seconds: float = 0.0
    concurrency: int = 1

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        return {"concurrency": self.concurrency, "requests": self.ok + len(self.errors),
                "ok": self.ok, "errors": len(self.errors), "seconds": round(self.seconds, 3),
                "throughput_per_s": round(self.throughput, 2),
                "p50_ms": round(self.percentile(50), 2), "p90_ms": round(self.percentile(90), 2),
                "p99_ms": round(self.percentile(99), 2)}


def run_load(url: str, protocol: str, model: str, feeds_for, n_requests: int,
             concurrency: int, keep_outputs: bool = False, outputs: list[str] | None = None,
             stop: threading.Event | None = None, timeout_s: float = 60.0,
             backoff_s: float = 0.0, into: LoadResult | None = None) -> LoadResult:
    """``n_requests`` requests, ``concurrency`` at a time (one client per worker);
    ``feeds_for(i)`` gives request i's inputs. Failures are counted, never raised; a worker
    waits ``backoff_s`` after one. ``into``: a LoadResult filled as the requests finish (to
    watch a run from another thread)."""
    res = into if into is not None else LoadResult()
    res.concurrency = concurrency
    lock = threading.Lock()
    counter = iter(range(n_requests))

    def worker():
        try:
            client = Client(url, protocol, timeout_s)
        except Exception as e:  # noqa: BLE001 - a failed connection is an error of each request
            with lock:
                for i in counter:
                    res.errors.append(f"#{i}: {type(e).__name__}: {e}")
            return
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None or (stop is not None and stop.is_set()):
                    return
                feeds = feeds_for(i)
                t0 = time.perf_counter()
                try:
                    out = client.infer(model, feeds, outputs)
                except Exception as e:  # noqa: BLE001 - counted as a failure
                    with lock:
                        res.errors.append(f"#{i}: {type(e).__name__}: {str(e)[:200]}")
                        res.results.append((i, None))
                    if backoff_s:
                        time.sleep(backoff_s)
                    continue
                ms = (time.perf_counter() - t0) * 1e3
                with lock:
                    res.latencies_ms.append(ms)
                    res.results.append((i, out if keep_outputs else True))
        finally:
            client.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    res.seconds = time.perf_counter() - t0
    return res


def wait_until_ready(url: str, protocol: str, model: str, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            c = Client(url, protocol, timeout_s=5)
            try:
                if c.client.is_server_ready() and c.client.is_model_ready(model):
                    return True
            finally:
                c.close()
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    return False
