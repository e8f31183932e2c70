"""`ssi-deploy build`: a TensorRT engine from an exported SSI ONNX model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("build")
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--engine", "engine_path", required=True, type=click.Path(path_type=Path),
              help="Where to write the engine (e.g. model.plan).")
@click.option("--plugins", type=click.Path(path_type=Path), default=None,
              help="SSI plugin library (default: $SSI_PLUGIN_LIBRARY, else the one installed "
                   "with the package).")
@click.option("--shapes", multiple=True, metavar="NAME:MIN,OPT,MAX",
              help="Optimization profile of an input, shapes like 1x3x512x512; repeat per "
                   "input. NAME:SHAPE alone is a fixed shape.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default=None,
              help="fp16: builder flag on TensorRT 10; TensorRT 11 needs an fp16 ONNX export. "
                   "Default: the ONNX model's input dtype.")
@click.option("--workspace", "workspace_mib", type=int, default=None, metavar="MiB",
              help="Builder workspace limit in MiB (default: TensorRT's).")
@click.option("--timing-cache", type=click.Path(path_type=Path), default=None,
              help="Timing cache file: read if present, written after the build.")
@click.option("--version-compatible", is_flag=True,
              help="Version-compatible plan with the plugin library embedded (loads with newer "
                   "TensorRT and the lean runtime).")
@click.option("--dense", is_flag=True,
              help="The model has no SSI nodes: a dense baseline for `ssi-deploy profile "
                   "SPARSE.plan --dense-engine THIS.plan` (build both with the same precision).")
@click.option("--verbose", is_flag=True, help="Show TensorRT's info messages.")
def build(onnx_path, engine_path, plugins, shapes, precision, workspace_mib, timing_cache,
          version_compatible, dense, verbose):
    """Build a TensorRT engine from MODEL.onnx with every SSI node as a plugin layer.

    The engine is written only when the engine inspector shows one plugin layer per SSI node.
    """
    from ..tensorrt.builder import BuildOptions, build_engine

    report = build_engine(BuildOptions(
        onnx_path=onnx_path, engine_path=engine_path, plugins=str(plugins) if plugins else None,
        shapes=tuple(shapes), precision=precision, workspace_mib=workspace_mib,
        timing_cache=timing_cache, version_compatible=version_compatible, dense=dense,
        verbose=verbose))
    for line in report.lines():
        click.echo(line)
