"""``ssi-deploy triton-repo``: a Triton model repository from an engine or an ONNX export.

Layout (the model repository is ``models/``, which is what ``--model-repository`` names;
everything else sits beside it, since Triton takes each folder of the model repository for a
model)::

    REPO/
      ssi-repo.json            what was written: flavour (gpu | cpu), model, launch command
      README.md                the repository, the launch command, the rules it follows
      launch.sh                the launch command (gpu: docker run NVIDIA's tritonserver
                               image; cpu: ssi-deploy serve)
      models/NAME/config.pbtxt
      models/NAME/1/model.plan                   engine (tensorrt_plan platform)
      models/NAME/1/model.py, model.onnx [, checkpoint.pth]   ONNX (python backend, CPU)
      plugins/libssi_trt_plugins.so, libssi_trt_autoregister.so   engine with SSI plugins

Engines: Triton's TensorRT backend loads ``--backend-config=tensorrt,plugins=LIB`` by dlopen
alone, so LIB is the companion ``libssi_trt_autoregister.so`` (it registers the creators of
``libssi_trt_plugins.so`` beside it on load). A version-compatible plan with the plugins
embedded needs ``--backend-config=tensorrt,version-compatible=true`` instead.

The repository is written in a temporary folder beside ``--output`` and renamed into place at
the end: a failure or Ctrl-C leaves nothing behind, and ``--force`` replaces an earlier
repository only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import SSIError
from . import config_pbtxt as cp

REPO_META = "ssi-repo.json"
MODELS_DIR = "models"
PLUGINS_DIR = "plugins"
COMPANION_NAME = "libssi_trt_autoregister.so"
# NVIDIA's Triton image of the same release as the project's TensorRT image (Dockerfile:
# nvcr.io/nvidia/tensorrt:25.11-py3): the same TensorRT, so its engines deserialize there
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.11-py3"
TRITON_IMAGE_TENSORRT = "10.14"
CPU_DEFAULT_MAX_BATCH = 8
RUNTIMES = ("auto", "onnxruntime", "torch")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass
class RepoOptions:
    output: Path
    engine: Path | None = None
    onnx: Path | None = None
    name: str | None = None
    max_batch_size: int | None = None
    instances: int = 1
    runtime: str = "auto"  # ONNX: onnxruntime, torch, or auto (the faster here)
    checkpoint: Path | None = None  # ONNX + torch runtime: the checkpoint it was exported from
    threads: int | None = None  # ONNX: threads per instance
    plugins: Path | None = None  # engine: the plugin library (default: the sidecar's, found)
    image: str = TRITON_IMAGE
    cuda_graphs: bool = False
    max_queue_delay_us: int = 100
    force: bool = False


@dataclass
class RepoReport:
    output: Path
    flavour: str  # gpu | cpu
    name: str
    config: cp.ModelConfig
    runtime: str | None = None
    runtime_reason: str | None = None
    launch: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self) -> list[tuple[str, str]]:
        c = self.config
        rows = [("repository", str(self.output)), ("flavour", self.flavour),
                ("model", f"{self.name} ({c.platform or c.backend})"),
                ("max_batch_size", f"{c.max_batch_size}"
                 + (f" (dynamic batching, {c.max_queue_delay_us} us queue delay)"
                    if c.dynamic_batching else "")),
                ("instances", f"{c.instance_count} x {c.instance_kind}"
                 + (" per GPU" if c.instance_kind == "KIND_GPU" else ""))]
        if self.runtime:
            rows.append(("runtime", f"{self.runtime} ({self.runtime_reason})"))
        if c.cuda_graphs:
            rows.append(("cuda graphs", ", ".join(f"batch {g.batch_size}" for g in c.graph_specs)))
        for t in c.inputs:
            rows.append(("input", f"{t.name} {t.data_type} {list(t.dims)}"))
        for t in c.outputs[:6]:
            rows.append(("output", f"{t.name} {t.data_type} {list(t.dims)}"))
        if len(c.outputs) > 6:
            rows.append(("output", f"... and {len(c.outputs) - 6} more"))
        rows.append(("launch", shlex.join(self.launch)))
        for w in self.warnings:
            rows.append(("warning", w))
        return rows

    def to_dict(self) -> dict:
        c = self.config
        return {"output": str(self.output), "flavour": self.flavour, "name": self.name,
                "platform": c.platform, "backend": c.backend,
                "max_batch_size": c.max_batch_size, "dynamic_batching": c.dynamic_batching,
                "instances": c.instance_count, "instance_kind": c.instance_kind,
                "runtime": self.runtime, "runtime_reason": self.runtime_reason,
                "cuda_graphs": [g.batch_size for g in c.graph_specs] if c.cuda_graphs else [],
                "inputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)}
                           for t in c.inputs],
                "outputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)}
                            for t in c.outputs],
                "launch": self.launch, "files": self.files, "warnings": self.warnings,
                "seconds": round(self.seconds, 2)}


def _echo(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Checks of what was given (before any long work)

def _check_common(opts: RepoOptions) -> str:
    if (opts.engine is None) == (opts.onnx is None):
        raise SSIError("give one of --engine M.plan or --onnx M.onnx")
    src = Path(opts.engine or opts.onnx)
    if not src.is_file():
        raise SSIError(f"{'--engine' if opts.engine else '--onnx'} {src}: no such file")
    name = opts.name or re.sub(r"[^A-Za-z0-9_.-]", "_", src.stem).lstrip(".") or "model"
    if not _NAME_RE.match(name):
        raise SSIError(f"--name {name!r}: a model name is 1-128 letters, digits, '_', '.' or "
                       "'-', not starting with '.' or '-'")
    if opts.max_batch_size is not None and opts.max_batch_size < 0:
        raise SSIError(f"--max-batch-size must be >= 0, not {opts.max_batch_size}")
    if opts.instances < 1:
        raise SSIError(f"--instances must be >= 1, not {opts.instances}")
    if opts.max_queue_delay_us < 0:
        raise SSIError(f"--max-queue-delay-us must be >= 0, not {opts.max_queue_delay_us}")
    if opts.threads is not None and opts.threads < 1:
        raise SSIError(f"--threads must be >= 1, not {opts.threads}")
    if opts.runtime not in RUNTIMES:
        raise SSIError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {opts.runtime!r}")
    if opts.engine is not None:
        if opts.runtime != "auto" or opts.checkpoint is not None or opts.threads is not None:
            raise SSIError("--runtime, --checkpoint and --threads are for --onnx (CPU); an engine "
                           "runs on TensorRT")
    else:
        if opts.plugins is not None or opts.cuda_graphs:
            raise SSIError("--plugins and --cuda-graphs are for --engine (TensorRT); an ONNX "
                           "file is served on CPUs by the python backend")
    _check_output(Path(opts.output), opts.force)
    return name


def _check_output(out: Path, force: bool) -> None:
    if not str(out).strip():
        raise SSIError("--output is empty; give a folder for the repository")
    if out.exists():
        if not out.is_dir():
            raise SSIError(f"--output {out} is a file; give a folder for the repository")
        if any(out.iterdir()):
            if not (out / REPO_META).is_file():
                raise SSIError(f"--output {out} exists and is not a repository written by "
                               "ssi-deploy: choose a new folder")
            if not force:
                raise SSIError(f"--output {out} already holds a repository: pass --force to "
                               "replace it, or choose another folder")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise SSIError(f"--output {out}: the folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise SSIError(f"--output {out}: cannot write into {parent}; choose a writable folder")


# --------------------------------------------------------------------------------------------
# Engines

def _fixed_batch(manifest, max_batch_size: int | None, what: str) -> int:
    """max_batch_size of an export without a dynamic batch: 0 (full dims), the only value
    Triton accepts for it."""
    mbs = 0 if max_batch_size is None else int(max_batch_size)
    if mbs > 0:
        raise SSIError(f"--max-batch-size {mbs}: {what} has a fixed batch of "
                       f"{manifest.input.shape[0]} (exported without a dynamic batch); use "
                       "--max-batch-size 0 or re-export with `--dynamic batch`")
    return mbs


def engine_config(sidecar: dict, manifest, name: str, max_batch_size: int | None,
                  instances: int, cuda_graphs: bool = False,
                  max_queue_delay_us: int = 100, source: str = "engine") -> cp.ModelConfig:
    """The ``tensorrt_plan`` config of an engine from its sidecar and manifest."""
    profiles = sidecar.get("profiles") or {}
    missing = [t.name for t in manifest.inputs if t.name not in profiles]
    if missing:
        raise SSIError(f"{source}: the sidecar has no optimization profile for input(s) "
                       f"{', '.join(missing)}; rebuild the engine with `ssi-deploy build`")
    for t in manifest.inputs:
        p = profiles[t.name]
        if not all(isinstance(p.get(k), list) and len(p[k]) == len(t.shape)
                   for k in ("min", "opt", "max")):
            raise SSIError(f"{source}: the profile of {t.name} ({p}) does not match its shape "
                           f"{list(t.shape)}; rebuild the engine with `ssi-deploy build`")
    batched = isinstance(manifest.input.shape[0], str)
    if batched:
        largest = min(int(profiles[t.name]["max"][0]) for t in manifest.inputs)
        smallest = max(int(profiles[t.name]["min"][0]) for t in manifest.inputs)
        shown = ", ".join(f"{t.name} max {'x'.join(map(str, profiles[t.name]['max']))}"
                          for t in manifest.inputs)
        mbs = largest if max_batch_size is None else int(max_batch_size)
        if mbs > largest:
            raise SSIError(f"--max-batch-size {mbs} exceeds the largest batch of the engine's "
                           f"optimization profile ({largest}: {shown}); Triton would refuse the "
                           f"model: lower it, or rebuild with a larger batch in `ssi-deploy build "
                           f"--shapes`")
        if mbs > 0 and smallest > 1:
            raise SSIError(f"the engine's optimization profile starts at batch {smallest}, but a "
                           "single request is batch 1: rebuild it with a min batch of 1 "
                           "(`ssi-deploy build --shapes`), or pass --max-batch-size 0")
    else:
        mbs = _fixed_batch(manifest, max_batch_size, "the engine")
    cut = mbs > 0
    graphs = []
    if cuda_graphs:
        sizes = sorted({1, mbs}) if cut else [0]
        for b in sizes:
            graphs.append(cp.GraphSpec(b, {
                t.name: [int(x) for x in profiles[t.name]["opt"][1 if cut else 0:]]
                for t in manifest.inputs}))
    return cp.ModelConfig(
        name=name, max_batch_size=mbs, platform="tensorrt_plan",
        inputs=cp.tensor_configs(manifest.inputs, cut),
        outputs=cp.tensor_configs(manifest.outputs, cut),
        instance_kind="KIND_GPU", instance_count=instances,
        dynamic_batching=mbs > 1, max_queue_delay_us=max_queue_delay_us,
        cuda_graphs=cuda_graphs, graph_specs=graphs, default_model_filename="model.plan")


def _engine_plugins(opts: RepoOptions, sidecar: dict) -> list[Path]:
    """[plugin library, companion] the engine needs through the plugins flag, or []."""
    from ..tensorrt.plugins import BUILD_HINT, find_plugin_library

    if sidecar.get("dense") or sidecar.get("plugins_embedded") or not (
            sidecar.get("ssi_nodes") or sidecar.get("plugin_library")):
        return []
    recorded = sidecar.get("plugin_library")
    if opts.plugins is not None:
        lib = find_plugin_library(opts.plugins)
    elif recorded and Path(recorded).is_file():
        lib = Path(recorded).resolve()
    else:
        lib = find_plugin_library(None)
    companion = lib.parent / COMPANION_NAME
    if not companion.is_file():
        raise SSIError(f"{COMPANION_NAME} is not beside the plugin library {lib}: Triton loads "
                       f"plugin libraries by dlopen alone and needs it to register the SSI "
                       f"plugins; {BUILD_HINT} (it is built with the plugin library)")
    return [lib, companion]


def engine_launch(repo: Path, image: str, plugin_files: list[Path], version_compatible: bool,
                  mount: str = "/repo") -> list[str]:
    """The docker command that serves ``repo`` with NVIDIA's tritonserver image."""
    flags = []
    if plugin_files:
        flags.append(f"--backend-config=tensorrt,plugins={mount}/{PLUGINS_DIR}/{COMPANION_NAME}")
    if version_compatible:
        flags.append("--backend-config=tensorrt,version-compatible=true")
    return ["docker", "run", "--rm", "--gpus=all", "--shm-size=1g",
            "-p", "8000:8000", "-p", "8001:8001", "-p", "8002:8002",
            "-v", f"{repo}:{mount}:ro", image,
            "tritonserver", f"--model-repository={mount}/{MODELS_DIR}", *flags]


# --------------------------------------------------------------------------------------------
# ONNX files (CPU)

def example_feeds(manifest, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the export's example shape: a normal image, a detector's image_info."""
    n, c, h, w = manifest.example_shape
    rng = np.random.default_rng(seed)
    img = manifest.input
    feeds = {img.name: rng.standard_normal((batch, c, h, w)).astype(
        cp.DATA_TYPES[img.dtype][2])}
    for t in manifest.inputs[1:]:  # image_info: (resized h, resized w, scale factor)
        feeds[t.name] = np.tile(np.array([[h, w, 1.0]], cp.DATA_TYPES[t.dtype][2]), (batch, 1))
    return feeds


def _torch_possible(manifest, checkpoint) -> str | None:
    """None when the PyTorch sparse path can be rebuilt for this export, else why not."""
    from ..models import get_arch

    try:
        get_arch(manifest.arch)
    except SSIError:
        return f"the export's architecture {manifest.arch!r} is not in the registry"
    w = manifest.weights
    if w.kind == "untracked":
        return "the export's weights are untracked (not from create_model)"
    if w.kind == "checkpoint" and checkpoint is None:
        return "the export came from a checkpoint: pass it with --checkpoint"
    return None


def _median_ms(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def choose_runtime(onnx_path: Path, manifest, runtime: str, checkpoint, threads: int,
                   echo=_echo) -> tuple[str, str]:
    """(runtime, why) for the python model: as asked, or ``auto``: the faster of ONNX Runtime
    and the PyTorch sparse path on this machine at the export's example shape."""
    why_not = _torch_possible(manifest, checkpoint)
    if runtime == "torch" and why_not:
        raise SSIError(f"--runtime torch: {why_not}")
    if checkpoint is not None:
        from ..backends.torch_backend import check_weights_match
        check_weights_match(manifest, checkpoint, onnx_path)
    if runtime == "onnxruntime":
        return runtime, "asked for"
    if runtime == "torch":
        return runtime, "asked for"
    if why_not:
        return "onnxruntime", f"auto: PyTorch sparse path unavailable ({why_not})"
    feeds = example_feeds(manifest)
    shape = "x".join(map(str, manifest.example_shape))
    echo(f"timing ONNX Runtime and the PyTorch sparse path at {shape} ({threads} thread(s)) ...")
    import onnxruntime as ort
    import torch

    from ..backends.torch_backend import TorchBackend

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    t_ort = _median_ms(lambda: sess.run(None, feeds))
    del sess
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        tb = TorchBackend.from_onnx(onnx_path, checkpoint=checkpoint)
        t_torch = _median_ms(lambda: tb.run(feeds))
    finally:
        torch.set_num_threads(before)
    pick = "torch" if t_torch < t_ort else "onnxruntime"
    return pick, (f"auto: onnxruntime {t_ort:.1f} ms, torch sparse path {t_torch:.1f} ms "
                  f"at {shape}, {threads} thread(s)")


def onnx_config(manifest, name: str, max_batch_size: int | None, instances: int, runtime: str,
                reason: str, threads: int, checkpoint_file: str | None,
                max_queue_delay_us: int = 100, source: str = "onnx") -> cp.ModelConfig:
    batched = isinstance(manifest.input.shape[0], str)
    if batched:
        mbs = CPU_DEFAULT_MAX_BATCH if max_batch_size is None else int(max_batch_size)
    else:
        mbs = _fixed_batch(manifest, max_batch_size, source)
    params = {"runtime": runtime, "runtime_reason": reason, "threads": str(threads),
              "model_file": "model.onnx", "ssi_arch": manifest.arch}
    if checkpoint_file:
        params["checkpoint"] = checkpoint_file
    return cp.ModelConfig(
        name=name, max_batch_size=mbs, backend="python",
        inputs=cp.tensor_configs(manifest.inputs, mbs > 0),
        outputs=cp.tensor_configs(manifest.outputs, mbs > 0),
        instance_kind="KIND_CPU", instance_count=instances,
        dynamic_batching=mbs > 1, max_queue_delay_us=max_queue_delay_us, parameters=params)


# --------------------------------------------------------------------------------------------
# Writing

def _copy(src: Path, dest: Path, echo) -> None:
    size = src.stat().st_size
    if size > 50 * 2**20:
        echo(f"copying {src.name} ({size / 2**20:.0f} MiB) ...")
    shutil.copyfile(src, dest)


def write_repository(opts: RepoOptions, echo=_echo) -> RepoReport:
    t0 = time.perf_counter()
    name = _check_common(opts)
    out = Path(opts.output)
    final = out.resolve()
    if opts.engine is not None:
        from ..manifest import engine_manifest
        from ..tensorrt.builder import read_sidecar, sidecar_path

        engine = Path(opts.engine)
        sidecar = read_sidecar(engine)
        if sidecar is None:
            raise SSIError(f"--engine {engine}: no readable sidecar {sidecar_path(engine).name} "
                           "beside it (profiles, names, types): rebuild it with `ssi-deploy build`")
        manifest = engine_manifest(sidecar, str(sidecar_path(engine)))
        config = engine_config(sidecar, manifest, name, opts.max_batch_size, opts.instances,
                               opts.cuda_graphs, opts.max_queue_delay_us, str(engine))
        plugin_files = _engine_plugins(opts, sidecar)
        vc = bool(sidecar.get("version_compatible"))
        launch = engine_launch(final, opts.image, plugin_files, vc)
        report = RepoReport(final, "gpu", name, config, launch=launch)
        trt = str(sidecar.get("tensorrt") or "?")
        if opts.image == TRITON_IMAGE and not trt.startswith(TRITON_IMAGE_TENSORRT + ".") and not (
                vc and trt.split(".")[0] == TRITON_IMAGE_TENSORRT.split(".")[0]):
            report.warnings.append(
                f"the engine was built with TensorRT {trt}, {TRITON_IMAGE} carries TensorRT "
                f"{TRITON_IMAGE_TENSORRT}: pass --image with the tritonserver release of that "
                "TensorRT (a plan deserializes only on the TensorRT it was built with, unless "
                "version-compatible)")
    else:
        from ..manifest import read_manifest

        onnx_path = Path(opts.onnx)
        manifest = read_manifest(onnx_path)
        threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.instances)
        # the batch rule first (cheap), then the runtime (may time both)
        onnx_config(manifest, name, opts.max_batch_size, opts.instances, "onnxruntime", "",
                    threads, None, opts.max_queue_delay_us, str(onnx_path))
        runtime, reason = choose_runtime(onnx_path, manifest, opts.runtime, opts.checkpoint,
                                         threads, echo)
        ckpt_file = "checkpoint.pth" if runtime == "torch" and opts.checkpoint else None
        config = onnx_config(manifest, name, opts.max_batch_size, opts.instances, runtime,
                             reason, threads, ckpt_file, opts.max_queue_delay_us, str(onnx_path))
        launch = ["ssi-deploy", "serve", str(final)]
        report = RepoReport(final, "cpu", name, config, runtime, reason, launch=launch)
        plugin_files = []
    text = cp.render(config)
    try:
        cp.parse(text)  # what Triton reads; tritonclient comes with the serve extra
    except SSIError as e:
        if "needs tritonclient" not in str(e):
            raise

    parent = final.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    try:
        model_dir = tmp / MODELS_DIR / name
        version_dir = model_dir / "1"
        version_dir.mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(text)
        if opts.engine is not None:
            _copy(Path(opts.engine), version_dir / "model.plan", echo)
            if plugin_files:
                (tmp / PLUGINS_DIR).mkdir()
                for f in plugin_files:
                    shutil.copyfile(f, tmp / PLUGINS_DIR / f.name)
        else:
            from . import python_model
            _copy(Path(opts.onnx), version_dir / "model.onnx", echo)
            shutil.copyfile(python_model.__file__, version_dir / "model.py")
            if ckpt_file:
                _copy(Path(opts.checkpoint), version_dir / ckpt_file, echo)
        (tmp / "README.md").write_text(_readme(report, opts, plugin_files))
        launch_sh = tmp / "launch.sh"
        launch_sh.write_text(_launch_script(report))
        launch_sh.chmod(0o755)
        report.files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        (tmp / REPO_META).write_text(json.dumps({
            "schema": 1, "flavour": report.flavour, "model": name,
            "source": str(Path(opts.engine or opts.onnx).resolve()),
            "model_repository": MODELS_DIR, "launch": report.launch,
            "runtime": report.runtime, "tool_version": __version__}, indent=1) + "\n")
        report.files.append(REPO_META)
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=parent))
            os.rename(final, old / "repo")
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.files.sort()
    report.seconds = time.perf_counter() - t0
    return report


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _launch_script(report: RepoReport) -> str:
    if report.flavour == "gpu":
        argv = report.launch
        image_at = argv.index("tritonserver") - 1
        mount_at = argv.index("-v") + 1
        mount = argv[mount_at].split(":", 1)[1]  # /repo:ro
        words = ['"$IMAGE"' if i == image_at else f'"$REPO":{shlex.quote(mount)}' if i == mount_at
                 else shlex.quote(a) for i, a in enumerate(argv)]
        return ("#!/bin/sh\n# Serve this repository with NVIDIA's Triton container (GPU); written "
                "by ssi-deploy triton-repo.\nset -e\n"
                'REPO="$(cd "$(dirname "$0")" && pwd)"\n'
                f'IMAGE="${{TRITON_IMAGE:-{argv[image_at]}}}"\n'
                f"exec {' '.join(words)}\n")
    return ("#!/bin/sh\n# Serve this repository on this machine's CPUs with the Triton server of "
            "the serve extra (pip install -e '.[serve]').\nset -e\n"
            'REPO="$(cd "$(dirname "$0")" && pwd)"\n'
            'exec ssi-deploy serve "$REPO" "$@"\n')


def _readme(report: RepoReport, opts: RepoOptions, plugin_files: list[Path]) -> str:
    c = report.config
    src = Path(opts.engine or opts.onnx).resolve()
    lines = [f"# Triton model repository: {report.name}", "",
             f"Written by ssi-deploy {__version__} (`ssi-deploy triton-repo`) from `{src}`.", "",
             "```", f"{MODELS_DIR}/{report.name}/config.pbtxt"]
    if report.flavour == "gpu":
        lines += [f"{MODELS_DIR}/{report.name}/1/model.plan"]
        lines += [f"{PLUGINS_DIR}/{f.name}" for f in plugin_files]
    else:
        lines += [f"{MODELS_DIR}/{report.name}/1/model.py", f"{MODELS_DIR}/{report.name}/1/model.onnx"]
        if c.parameters.get("checkpoint"):
            lines += [f"{MODELS_DIR}/{report.name}/1/{c.parameters['checkpoint']}"]
    lines += ["launch.sh", "```", ""]
    if report.flavour == "gpu":
        lines += ["Serve it with NVIDIA's Triton container (`./launch.sh` runs the same; "
                  "`TRITON_IMAGE=...` picks another image):", "", "```",
                  shlex.join(report.launch), "```", ""]
        if plugin_files:
            lines += [f"`--backend-config=tensorrt,plugins={'/repo/' + PLUGINS_DIR + '/' + COMPANION_NAME}`: "
                      "Triton's TensorRT backend dlopens that library and nothing more; "
                      f"`{COMPANION_NAME}` registers the creators of `libssi_trt_plugins.so` beside it "
                      "when it is loaded (one `[ssi_trt_autoregister]` line in the server log says "
                      "what it registered). Without it the engine does not deserialize.", ""]
        lines += [f"- `max_batch_size: {c.max_batch_size}`: at most the largest batch of the "
                  "engine's optimization profile; `dims` leave the batch out; names and types "
                  "are the engine's (from its `.plan.json` sidecar).",
                  f"- `instance_group {{ kind: KIND_GPU count: {c.instance_count} }}`: that many "
                  "execution contexts on every GPU the container sees (`--gpus=all`; "
                  "`--gpus '\"device=0\"'` for one server per GPU).",
                  "- The image must carry the TensorRT the plan was built with "
                  f"({TRITON_IMAGE} has TensorRT {TRITON_IMAGE_TENSORRT}, like the project's "
                  "Docker image)."]
        lines += [f"- warning: {w}" for w in report.warnings]
    else:
        lines += ["Serve it on this machine (Triton of the serve extra, 127.0.0.1):", "", "```",
                  shlex.join(report.launch), "```", "",
                  f"The python backend runs `model.py`: runtime `{report.runtime}` "
                  f"({report.runtime_reason}), {c.parameters.get('threads')} thread(s) per "
                  f"instance, {c.instance_count} instance(s); `max_batch_size: {c.max_batch_size}` "
                  "(requests of equal shapes run as one batch).",
                  "In NVIDIA's container it needs `numpy` and `onnxruntime` in the container's "
                  "Python (and `ssi-deploy` for runtime torch)."]
    lines += ["", "See docs/serving.md of ssi-deploy.", ""]
    return "\n".join(lines)
