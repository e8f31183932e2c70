"""`ssi-deploy triton-repo`: a Triton Inference Server model repository from an engine or an
ONNX export (docs/serving.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..serving.repository import RUNTIMES, TRITON_IMAGE


@click.command("triton-repo")
@click.option("--engine", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A TensorRT engine (.plan, with the .plan.json `ssi-deploy build` writes): "
                   "a tensorrt_plan model for NVIDIA's tritonserver container (GPU).")
@click.option("--onnx", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An ONNX export: a python-backend model running it on CPUs (`ssi-deploy serve`).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the repository (written whole, or not at all).")
@click.option("--name", default=None, help="Model name [default: the file's stem].")
@click.option("--max-batch-size", type=int, default=None,
              help="Largest batch Triton forms [default: the engine profile's largest batch; "
                   "8 for a dynamic-batch ONNX file; 0 for a fixed batch].")
@click.option("--instances", type=int, default=1, show_default=True,
              help="Model instances (per GPU for an engine).")
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True,
              help="How long the dynamic batcher waits to fill a batch.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
              help="ONNX: what model.py runs: ONNX Runtime, the PyTorch sparse path, or auto "
                   "(the faster of the two here, timed at the export's example shape).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX: the checkpoint the file was exported from (the torch runtime "
                   "rebuilds the model from it; copied into the repository).")
@click.option("--threads", type=int, default=None,
              help="ONNX: threads per instance [default: CPUs / instances].")
@click.option("--plugins", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Engine: libssi_trt_plugins.so (its companion libssi_trt_autoregister.so "
                   "beside it) [default: the sidecar's, else the installed one].")
@click.option("--cuda-graphs", is_flag=True,
              help="Engine: CUDA graphs in the TensorRT backend, one graph_spec per batch size "
                   "(1 and max) at the profile's opt shape.")
@click.option("--image", default=TRITON_IMAGE, show_default=True,
              help="Engine: NVIDIA's tritonserver image of the launch command (its TensorRT "
                   "must be the engine's).")
@click.option("--force", is_flag=True, help="Replace a repository written here before.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def triton_repo(engine, onnx, output, name, max_batch_size, instances, max_queue_delay_us,
                runtime, checkpoint, threads, plugins, cuda_graphs, image, force, as_json):
    """Write a Triton model repository for an engine (--engine, GPU) or an ONNX file (--onnx,
    CPU): config.pbtxt from the export's manifest (and the engine's profile), the model files,
    the plugin libraries an engine needs, a README and launch.sh with the launch command."""
    from ..serving.repository import RepoOptions, write_repository
    from .table import format_table

    report = write_repository(RepoOptions(
        output=output, engine=engine, onnx=onnx, name=name, max_batch_size=max_batch_size,
        instances=instances, runtime=runtime, checkpoint=checkpoint, threads=threads,
        plugins=plugins, image=image, cuda_graphs=cuda_graphs,
        max_queue_delay_us=max_queue_delay_us, force=force),
        echo=(lambda m: None) if as_json else (lambda m: click.echo(m, err=True)))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_table(["", ""], report.rows()).split("\n", 2)[2])
