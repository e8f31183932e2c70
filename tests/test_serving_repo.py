"""`ssi-deploy triton-repo` and the serving library without a server: config.pbtxt writers
(parsed with tritonclient's model_config_pb2, what Triton reads), engine sidecar -> config
(profile vs max_batch_size, plugins, version compatibility, CUDA graphs), detector exports
(two inputs, int64 outputs, the [batch] output), the CPU repository of an ONNX export, the
python model's request batching, `serve` of a GPU repository, and the CLI's one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssi_deploy.cli.main import main
from ssi_deploy.errors import SSIError
from ssi_deploy.export import export_onnx
from ssi_deploy.manifest import Manifest, read_manifest
from ssi_deploy.serving import config_pbtxt as cp
from ssi_deploy.serving import python_model
from trt_fakes import fake_env, no_real_trt  # noqa: F401 (fixtures)
from ssi_deploy.serving.repository import (COMPANION_NAME, REPO_META, RepoOptions, engine_config,
                                           write_repository)

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                          reason="tritonclient is not installed: pip install -e '.[serve]'")


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, match):
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]


def parse(path: Path):
    return cp.parse(Path(path).read_text())


# --------------------------------------------------------------------------------------------
# Manifests and sidecars

def backbone_manifest(dynamic=True, dtype="fp32") -> Manifest:
    b = "batch" if dynamic else 2
    return Manifest.from_dict({
        "schema": 1, "arch": "sparse_resnet50", "with_fpn": False, "sparse": True,
        "weights": {"kind": "random", "seed": 0},
        "sampling": {"mode": "threshold", "seed": 0, "forced_density": None},
        "precision": dtype,
        "inputs": [{"name": "image", "kind": "image", "dtype": dtype,
                    "shape": [b, 3, "height", "width"]}],
        "outputs": [{"name": "c5", "kind": "feature", "dtype": dtype,
                     "shape": [b, 2048, "h32", "w32"]},
                    {"name": "mask_layer1_0_mask1", "kind": "mask", "dtype": dtype,
                     "shape": [b, 1, "h4", "w4"], "layer": "layer1.0.mask1"}],
        "preprocessing": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
        "example_shape": [1 if dynamic else 2, 3, 64, 64],
        "dynamic": ["batch", "height", "width"] if dynamic else ["height", "width"]})


def detector_manifest() -> Manifest:
    return Manifest.from_dict({
        "schema": 1, "arch": "faster_rcnn_sparse_resnet50", "with_fpn": True, "sparse": True,
        "weights": {"kind": "random", "seed": 0},
        "sampling": {"mode": "threshold", "seed": 0, "forced_density": None},
        "precision": "fp32",
        "inputs": [{"name": "image", "kind": "image", "dtype": "fp32",
                    "shape": ["batch", 3, "height", "width"]},
                   {"name": "image_info", "kind": "image_info", "dtype": "fp32",
                    "shape": ["batch", 3]}],
        "outputs": [{"name": "boxes", "kind": "detections", "dtype": "fp32",
                     "shape": ["batch", 100, 4], "role": "boxes"},
                    {"name": "scores", "kind": "detections", "dtype": "fp32",
                     "shape": ["batch", 100], "role": "scores"},
                    {"name": "labels", "kind": "detections", "dtype": "int64",
                     "shape": ["batch", 100], "role": "labels"},
                    {"name": "num_detections", "kind": "detections", "dtype": "int64",
                     "shape": ["batch"], "role": "count"}],
        "preprocessing": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
        "example_shape": [1, 3, 96, 128], "dynamic": ["batch", "height", "width"],
        "detector": {"score_thr": 0.05, "max_per_img": 100}})


def sidecar(manifest: Manifest, max_batch=8, min_batch=1, **kw) -> dict:
    profiles = {}
    for t in manifest.inputs:
        if t.kind == "image":
            profiles[t.name] = {"min": [min_batch, 3, 64, 64], "opt": [max_batch, 3, 512, 512],
                                "max": [max_batch, 3, 1024, 1024]}
        else:
            profiles[t.name] = {"min": [min_batch, 3], "opt": [max_batch, 3], "max": [max_batch, 3]}
    d = {"onnx": "/x/model.onnx", "manifest": manifest.to_dict(), "tensorrt": "10.14.1",
         "precision": manifest.precision, "profiles": profiles, "plugin_library": None,
         "plugins_embedded": False, "version_compatible": False, "dense": True, "ssi_nodes": {},
         "plugin_layers": {}}
    d.update(kw)
    return d


def write_engine(tmp_path: Path, side: dict, name="m.plan") -> Path:
    plan = tmp_path / name
    plan.write_bytes(b"not really an engine")
    (tmp_path / (name + ".json")).write_text(json.dumps(side))
    return plan


# --------------------------------------------------------------------------------------------
# config.pbtxt

def test_engine_config_from_sidecar_parses_with_model_config_pb2():
    m = backbone_manifest()
    cfg = engine_config(sidecar(m, max_batch=4), m, "bb", None, instances=2)
    msg = cp.parse(cp.render(cfg))
    assert msg.name == "bb" and msg.platform == "tensorrt_plan"
    assert msg.max_batch_size == 4  # the profile's largest batch
    assert [(i.name, i.data_type, list(i.dims)) for i in msg.input] == [
        ("image", pb2.TYPE_FP32, [3, -1, -1])]
    assert [(o.name, list(o.dims)) for o in msg.output] == [
        ("c5", [2048, -1, -1]), ("mask_layer1_0_mask1", [1, -1, -1])]
    assert msg.HasField("dynamic_batching")
    assert msg.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.kind, g.count) for g in msg.instance_group] == [(pb2.ModelInstanceGroup.KIND_GPU, 2)]
    assert msg.default_model_filename == "model.plan"
    assert not msg.optimization.cuda.graphs


def test_engine_max_batch_size_may_not_exceed_the_profile():
    m = backbone_manifest()
    assert cp.parse(cp.render(engine_config(sidecar(m, 8), m, "bb", 3, 1))).max_batch_size == 3
    with pytest.raises(SSIError, match=r"--max-batch-size 9 exceeds the largest batch of the "
                                       r"engine's optimization profile \(8: image max 8x3x1024x1024\)"):
        engine_config(sidecar(m, 8), m, "bb", 9, 1)
    with pytest.raises(SSIError, match="starts at batch 2, but a single request is batch 1"):
        engine_config(sidecar(m, 8, min_batch=2), m, "bb", None, 1)
    # no batching asked for: the profile's batch range is the client's business
    assert cp.parse(cp.render(engine_config(sidecar(m, 8, min_batch=2), m, "bb", 0, 1))
                    ).max_batch_size == 0


def test_engine_of_a_fixed_batch_has_full_dims_and_no_batching():
    m = backbone_manifest(dynamic=False)
    msg = cp.parse(cp.render(engine_config(sidecar(m, 2, min_batch=2), m, "bb", None, 1)))
    assert msg.max_batch_size == 0 and not msg.HasField("dynamic_batching")
    assert list(msg.input[0].dims) == [2, 3, -1, -1]
    with pytest.raises(SSIError, match="fixed batch of 2"):
        engine_config(sidecar(m, 2, min_batch=2), m, "bb", 4, 1)


def test_detector_engine_two_inputs_int64_outputs_and_the_batch_only_output():
    m = detector_manifest()
    msg = cp.parse(cp.render(engine_config(sidecar(m, 4), m, "det", None, 1)))
    assert [(i.name, list(i.dims)) for i in msg.input] == [("image", [3, -1, -1]),
                                                           ("image_info", [3])]
    types = {o.name: o.data_type for o in msg.output}
    assert types == {"boxes": pb2.TYPE_FP32, "scores": pb2.TYPE_FP32, "labels": pb2.TYPE_INT64,
                     "num_detections": pb2.TYPE_INT64}
    count = next(o for o in msg.output if o.name == "num_detections")
    assert list(count.dims) == [1] and count.HasField("reshape") and list(count.reshape.shape) == []
    assert [list(o.dims) for o in msg.output if o.name != "num_detections"] == [[100, 4], [100], [100]]


def test_fp16_engine_types_and_cuda_graph_specs():
    m = backbone_manifest(dtype="fp16")
    cfg = engine_config(sidecar(m, 4), m, "bb", None, 1, cuda_graphs=True)
    msg = cp.parse(cp.render(cfg))
    assert msg.input[0].data_type == pb2.TYPE_FP16
    cuda = msg.optimization.cuda
    assert cuda.graphs
    assert [(g.batch_size, {k: list(v.dim) for k, v in g.input.items()}) for g in cuda.graph_spec] == [
        (1, {"image": [3, 512, 512]}), (4, {"image": [3, 512, 512]})]


def test_python_config_parameters_parse():
    from ssi_deploy.serving.repository import onnx_config

    cfg = onnx_config(detector_manifest(), "det", None, 2, "onnxruntime", "asked for", 3, None)
    msg = cp.parse(cp.render(cfg))
    assert msg.backend == "python" and msg.max_batch_size == 8
    assert [(g.kind, g.count) for g in msg.instance_group] == [(pb2.ModelInstanceGroup.KIND_CPU, 2)]
    params = {k: v.string_value for k, v in msg.parameters.items()}
    assert params["runtime"] == "onnxruntime" and params["threads"] == "3"
    assert params["model_file"] == "model.onnx" and params["runtime_reason"] == "asked for"


def test_render_quotes_names_and_parse_rejects_garbage():
    cfg = cp.ModelConfig(name='we"ird', max_batch_size=0, inputs=[
        cp.TensorConfig('in "x"', "TYPE_FP32", (1, 2))], outputs=[
        cp.TensorConfig("y\\z", "TYPE_INT64", (3,))])
    msg = cp.parse(cp.render(cfg))
    assert msg.name == 'we"ird' and msg.input[0].name == 'in "x"' and msg.output[0].name == "y\\z"
    with pytest.raises(SSIError, match="does not parse as a Triton ModelConfig"):
        cp.parse("name: 'a'\nmax_batch_size: many\n")


# --------------------------------------------------------------------------------------------
# Engine repositories (files, plugins, launch command)

@pytest.fixture
def fake_plugins(tmp_path):
    d = tmp_path / "lib"
    d.mkdir()
    (d / "libssi_trt_plugins.so").write_bytes(b"main")
    (d / COMPANION_NAME).write_bytes(b"companion")
    return d


def test_engine_repository_with_plugins(tmp_path, fake_plugins, capsys):
    m = backbone_manifest()
    plan = write_engine(tmp_path, sidecar(m, 8, dense=False, ssi_nodes={"n0": "SSIBottleneck"},
                                          plugin_library="/gone/libssi_trt_plugins.so"))
    out = tmp_path / "repo"
    rc, stdout, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", out,
                              "--plugins", fake_plugins / "libssi_trt_plugins.so", "--instances",
                              "2", "--json")
    assert rc == 0, err
    rep = json.loads(stdout)
    assert rep["flavour"] == "gpu" and rep["max_batch_size"] == 8 and rep["instances"] == 2
    assert (out / "models" / "m" / "1" / "model.plan").read_bytes() == b"not really an engine"
    assert (out / "plugins" / "libssi_trt_plugins.so").read_bytes() == b"main"
    assert (out / "plugins" / COMPANION_NAME).read_bytes() == b"companion"
    msg = parse(out / "models" / "m" / "config.pbtxt")
    assert msg.platform == "tensorrt_plan" and msg.max_batch_size == 8
    launch = rep["launch"]
    assert launch[:2] == ["docker", "run"] and "--gpus=all" in launch
    assert f"{out.resolve()}:/repo:ro" in launch
    assert "tritonserver" in launch and "--model-repository=/repo/models" in launch
    assert f"--backend-config=tensorrt,plugins=/repo/plugins/{COMPANION_NAME}" in launch
    readme = (out / "README.md").read_text()
    assert " ".join(launch[:4]) in readme and COMPANION_NAME in readme
    script = (out / "launch.sh").read_text()
    assert 'IMAGE="${TRITON_IMAGE:-nvcr.io/nvidia/tritonserver:25.11-py3}"' in script
    assert f'"$REPO":/repo:ro' in script and "plugins=/repo/plugins/" in script
    meta = json.loads((out / REPO_META).read_text())
    assert meta["flavour"] == "gpu" and meta["launch"] == launch
    # nothing but the repository was written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib", "m.plan", "m.plan.json", "repo"]
    # serve prints the container command instead of pretending
    rc, stdout, err = run_cli(capsys, "serve", out)
    assert rc == 0, err
    assert "GPU repository" in stdout and "docker run" in stdout and COMPANION_NAME in stdout


def test_engine_repository_needs_the_companion(tmp_path, fake_plugins, capsys):
    m = backbone_manifest()
    (fake_plugins / COMPANION_NAME).unlink()
    plan = write_engine(tmp_path, sidecar(m, dense=False, ssi_nodes={"n0": "SSIBottleneck"},
                                          plugin_library=str(fake_plugins / "libssi_trt_plugins.so")))
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", tmp_path / "r")
    one_line_error(rc, err, f"{COMPANION_NAME} is not beside the plugin library")
    assert not (tmp_path / "r").exists()


def test_version_compatible_engine_with_embedded_plugins(tmp_path, capsys):
    m = backbone_manifest()
    plan = write_engine(tmp_path, sidecar(m, dense=False, ssi_nodes={"n0": "SSIBottleneck"},
                                          plugins_embedded=True, version_compatible=True,
                                          tensorrt="10.9.0"))
    rep = write_repository(RepoOptions(output=tmp_path / "r", engine=plan), echo=lambda m: None)
    assert "--backend-config=tensorrt,version-compatible=true" in rep.launch
    assert not any("plugins=" in a for a in rep.launch) and not (tmp_path / "r" / "plugins").exists()
    assert rep.warnings == []  # a version-compatible 10.9 plan runs on the image's 10.14


def test_engine_of_another_tensorrt_warns(tmp_path):
    m = backbone_manifest()
    plan = write_engine(tmp_path, sidecar(m, tensorrt="11.4.0"))
    rep = write_repository(RepoOptions(output=tmp_path / "r", engine=plan), echo=lambda m: None)
    assert len(rep.warnings) == 1 and "TensorRT 11.4.0" in rep.warnings[0]
    assert not any("plugins=" in a for a in rep.launch)  # dense: no plugins


def test_engine_cli_errors_are_one_line(tmp_path, capsys):
    m = backbone_manifest()
    plan = write_engine(tmp_path, sidecar(m, 8))
    out = tmp_path / "r"
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", out,
                         "--max-batch-size", "16")
    one_line_error(rc, err, "--max-batch-size 16 exceeds the largest batch of the engine's "
                            "optimization profile (8")
    assert not out.exists()
    bare = tmp_path / "bare.plan"
    bare.write_bytes(b"x")
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", bare, "--output", out)
    one_line_error(rc, err, "no readable sidecar bare.plan.json")
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--onnx", plan, "--output", out)
    one_line_error(rc, err, "give one of --engine M.plan or --onnx M.onnx")
    rc, _, err = run_cli(capsys, "triton-repo", "--output", out)
    one_line_error(rc, err, "give one of --engine")
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", tmp_path / "no.plan", "--output", out)
    one_line_error(rc, err, "no such file")
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", out, "--name", ".x")
    one_line_error(rc, err, "--name '.x'")
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", out, "--runtime", "torch")
    one_line_error(rc, err, "are for --onnx (CPU)")
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", out, "--instances", "0")
    one_line_error(rc, err, "--instances must be >= 1")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", tmp_path / "taken")
    one_line_error(rc, err, "is not a repository written by ssi-deploy")
    assert (tmp_path / "taken" / "x").read_text() == "mine"
    assert not out.exists()


def test_force_replaces_a_repository_only_when_the_new_one_is_complete(tmp_path, monkeypatch, capsys):
    m = backbone_manifest()
    plan = write_engine(tmp_path, sidecar(m, 8))
    out = tmp_path / "r"
    assert run_cli(capsys, "triton-repo", "--engine", plan, "--output", out)[0] == 0
    before = (out / "models" / "m" / "config.pbtxt").read_text()
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", out)
    one_line_error(rc, err, "already holds a repository: pass --force")

    import ssi_deploy.serving.repository as repo_mod

    def boom(src, dest):
        raise SSIError("disk on fire")

    monkeypatch.setattr(repo_mod, "_copy", lambda src, dest, echo: boom(src, dest))
    rc, _, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", out, "--force",
                         "--max-batch-size", "2")
    one_line_error(rc, err, "disk on fire")
    assert (out / "models" / "m" / "config.pbtxt").read_text() == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan", "m.plan.json", "r"]  # no temp
    monkeypatch.undo()
    assert run_cli(capsys, "triton-repo", "--engine", plan, "--output", out, "--force",
                   "--max-batch-size", "2")[0] == 0
    assert parse(out / "models" / "m" / "config.pbtxt").max_batch_size == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan", "m.plan.json", "r"]


# --------------------------------------------------------------------------------------------
# CPU repositories of ONNX exports

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A tiny untracked backbone export (seconds), built once for the module."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_detector_e2e import TinyBackbone

    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(TinyBackbone().eval(), path, input_shape=(1, 3, 64, 64),
                dynamic=("batch", "height", "width"))
    return path


def test_onnx_repository_is_a_python_model_that_runs_onnxruntime(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "cpu"
    rc, stdout, err = run_cli(capsys, "triton-repo", "--onnx", tiny_onnx, "--output", out,
                              "--name", "tiny", "--instances", "2", "--threads", "1")
    assert rc == 0, err
    assert "runtime" in stdout and "onnxruntime" in stdout and "ssi-deploy serve" in stdout
    vdir = out / "models" / "tiny" / "1"
    assert (vdir / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert (vdir / "model.py").read_text() == Path(python_model.__file__).read_text()
    msg = parse(out / "models" / "tiny" / "config.pbtxt")
    m = read_manifest(tiny_onnx)
    assert msg.backend == "python" and msg.max_batch_size == 8
    assert [i.name for i in msg.input] == [t.name for t in m.inputs]
    assert [o.name for o in msg.output] == m.output_names
    params = {k: v.string_value for k, v in msg.parameters.items()}
    # auto: the tiny module is not a registry architecture, so only ONNX Runtime can run it
    assert params["runtime"] == "onnxruntime"
    assert params["runtime_reason"].startswith("auto: PyTorch sparse path unavailable")
    assert params["threads"] == "1"
    meta = json.loads((out / REPO_META).read_text())
    assert meta["flavour"] == "cpu" and meta["launch"] == ["ssi-deploy", "serve", str(out.resolve())]


def test_onnx_repository_errors(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "r"
    rc, _, err = run_cli(capsys, "triton-repo", "--onnx", tiny_onnx, "--output", out,
                         "--runtime", "torch")
    one_line_error(rc, err, "--runtime torch: the export's architecture 'tiny_backbone' is not "
                            "in the registry")
    rc, _, err = run_cli(capsys, "triton-repo", "--onnx", tiny_onnx, "--output", out,
                         "--cuda-graphs")
    one_line_error(rc, err, "are for --engine (TensorRT)")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    rc, _, err = run_cli(capsys, "triton-repo", "--onnx", bad, "--output", out)
    one_line_error(rc, err, "not a readable ONNX file")
    fixed = tmp_path / "fixed.onnx"
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_detector_e2e import TinyBackbone

    export_onnx(TinyBackbone().eval(), fixed, input_shape=(1, 3, 64, 64), dynamic=None)
    rc, _, err = run_cli(capsys, "triton-repo", "--onnx", fixed, "--output", out,
                         "--max-batch-size", "4")
    one_line_error(rc, err, "has a fixed batch of 1")
    rc, _, err = run_cli(capsys, "triton-repo", "--onnx", fixed, "--output", out, "--json")
    assert rc == 0, err
    assert parse(out / "models" / "fixed" / "config.pbtxt").max_batch_size == 0


def test_serve_cli_errors(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "serve", tmp_path / "nothing")
    one_line_error(rc, err, "no such folder")
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(capsys, "serve", tmp_path / "empty")
    one_line_error(rc, err, "holds no model")
    rc, _, err = run_cli(capsys, "serve", tmp_path / "empty", "--http-port", "70000")
    one_line_error(rc, err, "--http-port")


# --------------------------------------------------------------------------------------------
# The python model's batching (no server: its logic with a recording runner)

class Recorder:
    def __init__(self):
        self.calls = []

    def run(self, names, feeds):
        x = feeds["image"]
        self.calls.append(x.shape)
        if x.shape[-1] == 13:
            raise ValueError("bad width")
        return {"y": x.sum(axis=(1, 2, 3)), "z": x[:, :1] * 2}


def test_python_model_batches_requests_of_equal_shapes():
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.standard_normal(s).astype(np.float32)} for s in
             [(1, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 16), (1, 3, 8, 8), (1, 3, 8, 13)]]
    rec = Recorder()
    res = python_model.run_grouped(rec, ["image"], ["y", "z"], feeds, batched=True)
    assert sorted(rec.calls) == sorted([(4, 3, 8, 8), (1, 3, 8, 16), (1, 3, 8, 13)])
    for f, r in zip(feeds[:4], res[:4]):
        assert np.array_equal(r["y"], f["image"].sum(axis=(1, 2, 3)))
        assert np.array_equal(r["z"], f["image"][:, :1] * 2)
    assert isinstance(res[4], ValueError)  # only the failing request gets the error
    rec = Recorder()
    res = python_model.run_grouped(rec, ["image"], ["y", "z"], feeds[:2], batched=False)
    assert rec.calls == [(1, 3, 8, 8), (2, 3, 8, 8)]



def test_engine_built_by_ssi_deploy_build_becomes_a_repository(tiny_onnx, fake_env, capsys):
    """The chain as a user runs it: `ssi-deploy build` (TensorRT faked, tests/trt_fakes.py;
    a dense engine: the fakes know one hand-made SSI graph only) writes the engine and its
    sidecar, `triton-repo --engine` reads them: names, dims, the profile's largest batch as
    max_batch_size, the plan copied, no plugins for a dense engine."""
    plan = fake_env.tmp / "tiny.plan"
    rc, out, err = run_cli(capsys, "build", tiny_onnx, "--engine", plan, "--dense", "--shapes",
                           "image:1x3x64x64,2x3x64x64,4x3x96x96")
    assert rc == 0, err
    repo = fake_env.tmp / "repo"
    rc, out, err = run_cli(capsys, "triton-repo", "--engine", plan, "--output", repo, "--json")
    assert rc == 0, err
    report = json.loads(out)
    cfg = parse(repo / "models" / "tiny" / "config.pbtxt")
    manifest = read_manifest(tiny_onnx)
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4
    assert [i.name for i in cfg.input] == ["image"] and list(cfg.input[0].dims) == [3, -1, -1]
    assert [o.name for o in cfg.output] == [o.name for o in manifest.outputs]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert (repo / "models" / "tiny" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert not (repo / "plugins").exists()
    assert not any("plugins=" in a for a in report["launch"])
