"""The interface every backend implements (modelled on Polygraphy's runners).

A backend loads a model, runs named inputs to named outputs (numpy arrays in, numpy arrays
out) and times itself. Comparison of outputs lives apart from the backends
(``ssi_deploy.validation``), so a new backend only has to implement this class.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timing:
    """Latencies in milliseconds of the timed iterations (after warm-up)."""

    latencies_ms: list[float] = field(default_factory=list)


class Backend(abc.ABC):
    name: str = "backend"

    @property
    @abc.abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abc.abstractmethod
    def output_names(self) -> list[str]: ...

    @property
    def input_shapes(self) -> dict[str, tuple | None]:
        """Expected shape per input (ints are fixed sizes; str/None are free); None: unknown.

        Optional extension (default: unknown shapes); used to check user inputs early.
        """
        return {n: None for n in self.input_names}

    def describe(self) -> dict:
        """What runs the model (backend name, device, providers, ...), for reports."""
        return {"backend": self.name}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns every output by name, as host numpy arrays."""

    def prepare(self, feeds: dict[str, np.ndarray]) -> None:
        """Stage inputs for repeated timed runs (device copies, shape setup); default: nothing."""
        self._staged = feeds

    def run_staged(self) -> None:
        """One timed iteration on the staged inputs; results may stay on the device."""
        self.run(self._staged)

    def time(self, feeds: dict[str, np.ndarray], warmup_ms: float = 200.0,
             iterations: int | None = None, duration_s: float | None = None,
             progress=None) -> Timing:
        """Warm up for ``warmup_ms``, then time ``iterations`` runs or for ``duration_s``."""
        self.prepare(feeds)
        start = time.perf_counter()
        self.run_staged()
        while (time.perf_counter() - start) * 1000.0 < warmup_ms:
            self.run_staged()
        out = Timing()
        if iterations is None and duration_s is None:
            iterations = 20
        t_end = None if duration_s is None else time.perf_counter() + duration_s
        while True:
            t0 = time.perf_counter()
            self.run_staged()
            out.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
            if progress is not None:
                progress(len(out.latencies_ms))
            if iterations is not None and len(out.latencies_ms) >= iterations:
                break
            if t_end is not None and time.perf_counter() >= t_end:
                break
        return out

    def close(self) -> None:
        """Release resources (engines, sessions, device buffers)."""
