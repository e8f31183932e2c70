"""``ssi-deploy serve REPO``: a CPU repository on the bundled Triton server until Ctrl-C or
SIGTERM; a GPU repository gets the container command printed instead."""

from __future__ import annotations

import json
import shlex
import signal
import threading
import time
from pathlib import Path

from ..errors import SSIError
from .repository import MODELS_DIR, REPO_META


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM (SIGINT raises KeyboardInterrupt)."""


def inspect_repository(repo: Path) -> tuple[str, Path, list[str], list[str]]:
    """(flavour, model repository folder, model names, launch command) of REPO: a folder
    written by ``ssi-deploy triton-repo``, or a plain Triton model repository."""
    repo = Path(repo)
    if not repo.is_dir():
        raise SSIError(f"{repo}: no such folder; write one with `ssi-deploy triton-repo`")
    meta_path = repo / REPO_META
    launch: list[str] = []
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            raise SSIError(f"{meta_path} is not valid JSON: write the repository again with "
                           "`ssi-deploy triton-repo --force`") from None
        models_dir = repo / str(meta.get("model_repository", MODELS_DIR))
        launch = list(meta.get("launch") or [])
    else:
        models_dir = repo
    configs = sorted(models_dir.glob("*/config.pbtxt")) if models_dir.is_dir() else []
    if not configs:
        raise SSIError(f"{repo} holds no model (no */config.pbtxt under {models_dir}): write a "
                       "repository with `ssi-deploy triton-repo`")
    gpu = False
    for c in configs:
        text = c.read_text(errors="replace")
        if '"tensorrt_plan"' in text or 'backend: "tensorrt"' in text or "KIND_GPU" in text:
            gpu = True
    names = [c.parent.name for c in configs]
    if gpu and not launch:
        launch = ["docker", "run", "--rm", "--gpus=all", "-p", "8000:8000", "-p", "8001:8001",
                  "-p", "8002:8002", "-v", f"{models_dir.resolve()}:/models:ro",
                  "nvcr.io/nvidia/tritonserver:<release>-py3", "tritonserver",
                  "--model-repository=/models"]
    return ("gpu" if gpu else "cpu"), models_dir, names, launch


def serve_repository(repo, http_port: int = 8000, grpc_port: int = 8001,
                     metrics_port: int = 8002, timeout_s: float = 300, verbose: bool = False,
                     echo=print) -> int:
    flavour, models_dir, names, launch = inspect_repository(Path(repo))
    if flavour == "gpu":
        echo(f"{repo} is a GPU repository ({', '.join(names)}: TensorRT engine); the Triton "
             "server of the serve extra has no TensorRT backend and runs nothing of it here. "
             "Serve it with NVIDIA's container on a machine with the GPU:")
        echo(shlex.join(launch))
        return 0
    from .server import TritonServer

    server = TritonServer(models_dir, http_port or None, grpc_port or None, metrics_port or None,
                          log_verbose=1 if verbose else 0)
    stop = threading.Event()
    previous = {}

    def on_term(signum, frame):
        if not stop.is_set():
            stop.set()
            raise _Stop()

    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
    try:
        echo(f"starting Triton Inference Server (nvidia-pytriton {server.install.version}) for "
             f"{', '.join(names)} ...")
        server.start(timeout_s)
        echo(f"serving {', '.join(server.models)} from {models_dir}")
        echo(f"  HTTP     http://{server.http_url}")
        echo(f"  gRPC     {server.grpc_url}")
        echo(f"  metrics  {server.metrics_url}")
        echo(f"  server pid {server.pid}, {len(server.stubs())} python-backend stub(s); "
             "Ctrl-C or SIGTERM stops it")
        while True:
            time.sleep(0.25)
            if not server.alive():
                code = server.proc.returncode
                tail = server.log_tail()
                raise SSIError(f"tritonserver exited on its own (code {code}):\n{tail}")
    except (KeyboardInterrupt, _Stop):
        echo("stopping ...")
        left = _shutdown(server)
        echo("stopped" + (f" (left behind: {left})" if left else ": no process or shared memory "
                          "left"))
        return 0 if not left else 1
    finally:
        if server.workdir is not None:  # not stopped above (an error): stop it now
            _shutdown(server)
        signal.signal(signal.SIGTERM, previous[signal.SIGTERM])


def _shutdown(server) -> dict:
    server.stop()
    left = server.leftovers()
    return {k: v for k, v in left.items() if v}
