"""A TensorRT logger that echoes warnings and errors and remembers the errors for messages."""

from __future__ import annotations

import sys


def make_logger(trt, verbose: bool = False, echo=None):
    """An ``ILogger`` for module ``trt``; ``.errors`` holds every error message it received."""
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    sev = trt.ILogger.Severity

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.messages: list[str] = []

        def log(self, severity, msg):
            msg = str(msg)
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(msg)
                self.messages.append(msg)
                echo(f"[TensorRT] error: {msg}")
            elif severity == sev.WARNING:
                self.messages.append(msg)
                echo(f"[TensorRT] warning: {msg}")
            elif verbose:
                echo(f"[TensorRT] {msg}")

        def last_error(self, default: str = "no message from TensorRT") -> str:
            return " ".join(self.errors[-1].split()) if self.errors else default

    return _Logger()
