"""`ssi-deploy serve`: the Triton server of the serve extra on 127.0.0.1, for a CPU repository
written by `ssi-deploy triton-repo --onnx` (docs/serving.md)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("serve")
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
@click.option("--http-port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="HTTP/REST port (0: a free one).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="gRPC port (0: a free one).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=8002, show_default=True,
              help="Prometheus metrics port (0: a free one).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=300,
              show_default=True, help="Seconds to wait for the models to be ready.")
@click.option("--verbose", is_flag=True, help="Triton's verbose log.")
def serve(repo, http_port, grpc_port, metrics_port, timeout_s, verbose):
    """Serve REPO with Triton Inference Server on 127.0.0.1 until Ctrl-C or SIGTERM.

    A CPU repository starts the server bundled with nvidia-pytriton (pip install -e
    '.[serve]'), waits until every model is ready and prints where it listens; on Ctrl-C or
    SIGTERM it stops the server and its python-backend stubs by PID and removes their shared
    memory. A GPU repository (TensorRT engine) is not run here: the command prints the
    tritonserver container command that serves it.
    """
    from ..serving.serve import serve_repository

    return serve_repository(repo, http_port, grpc_port, metrics_port, timeout_s, verbose,
                            echo=click.echo)
