"""``ssi-deploy profile``: latency, throughput, measured densities, GMACs, speed-up vs dense."""

from __future__ import annotations

from pathlib import Path

import click



@click.command("profile")
@click.argument("onnx_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--arch", default=None, help="Profile a registry model instead of an ONNX file.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Weights (with --arch), or the checkpoint an ONNX file was exported from: "
                   "needed only by --backend torch, --density, --compare-dense and files "
                   "without mask outputs.")
@click.option("--no-fpn", is_flag=True, help="With --arch: the backbone alone (outputs c2..c5).")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime", "tensorrt"]),
              default=None, help="[default: torch; tensorrt for an engine, which runs on no "
                                 "other backend]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="onnxruntime: CUDA provider when available (auto).")
@click.option("--input-shape", default=None,
              help="NxCxHxW or HxW [default: the ONNX static shape, else 1x3x512x512].")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Time on a photograph (normalised like validate) instead of smooth noise.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise input.")
@click.option("--density", type=float, default=None,
              help="Force every sampling layer to keep this share of positions (0 < D <= 1).")
@click.option("--compare-dense", is_flag=True,
              help="Also time the dense network with the same weights; report speedup_vs_dense.")
@click.option("--dense-engine", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A prebuilt dense TensorRT engine of the same model and precision (`ssi-deploy "
                   "build --dense`): timed on the same input instead of the dense twin.")
@click.option("--per-layer", is_flag=True,
              help="tensorrt: per-layer times (IProfiler), SSI plugin layers marked.")
@click.option("--top-layers", type=click.IntRange(min=0), default=10, show_default=True,
              help="With --per-layer: slowest layers shown in the table (all in the JSON).")
@click.option("--warmup-ms", type=float, default=200.0, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Timed runs per model [default: 20].")
@click.option("--duration-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time each model for this long instead of a number of runs.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Write the profile as JSON (checked before timing; written atomically).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def profile(onnx_file, arch, checkpoint, no_fpn, backend, device, input_shape, image, seed,
            density, compare_dense, dense_engine, per_layer, top_layers, warmup_ms, iterations,
            duration_s, threads, report, quiet):
    """Time ONNX_FILE (or --arch) on a backend: latency min/mean/median/p90/p95/p99/max,
    throughput, per-layer densities and backbone GMACs; --compare-dense adds the dense twin.

    A file is timed as it is; its densities come from its mask outputs. --checkpoint is
    needed only by what rebuilds the PyTorch model (--backend torch, --density, the dense twin
    of --compare-dense, densities of a file without mask outputs) when the file was exported
    from a checkpoint.

    ONNX_FILE may be a TensorRT engine (.plan, with the .plan.json `ssi-deploy build` writes):
    it runs on the tensorrt backend; its manifest comes from that sidecar. --dense-engine
    D.plan compares with a prebuilt dense engine instead of the dense twin."""
    from ..input_shape import parse_input_shape
    from ..profiling import ProfileConfig, format_report, profile as run_profile

    cfg = ProfileConfig(onnx=onnx_file, arch=arch, checkpoint=checkpoint, with_fpn=not no_fpn,
                        backend=backend,
                        input_shape=parse_input_shape(input_shape) if input_shape else None,
                        image=image, seed=seed, density=density, compare_dense=compare_dense,
                        warmup_ms=warmup_ms, iterations=iterations, duration_s=duration_s,
                        device=device, threads=threads, progress=not quiet,
                        dense_engine=dense_engine, per_layer=per_layer, report=report)
    r = run_profile(cfg)  # checks everything (--report included) before timing
    click.echo(format_report(r, top_layers=top_layers))
    if report is not None:
        click.echo(f"report: {report}")
