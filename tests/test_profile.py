"""`ssi-deploy profile`: plan (every check before timing), manifest-driven densities, files
from a checkpoint without --checkpoint, unwritable reports, huge shapes, the verdict."""

from __future__ import annotations

import errno
import json
import time
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from ssi_deploy.cli.main import main
from ssi_deploy.errors import SSIError
from trt_fakes import fake_env, fake_gpu_env, no_real_trt, write_fake_plan  # noqa: F401

SHAPE = (1, 3, 64, 64)
HUGE = "1x3x100000x100000"


def invoke(*argv):
    """The CLI entry point (one-line error policy included) under click's CliRunner."""
    with CliRunner().isolation() as (out, err, _):
        rc = main([str(a) for a in argv])
        return rc, out.getvalue().decode(), err.getvalue().decode()


def one_line_error(rc, out, err) -> str:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def from_checkpoint(tmp_path_factory):
    """sparse_resnet50 + FPN exported from a checkpoint file (masks exposed by default)."""
    import torch

    from ssi_deploy.export import export_onnx
    from ssi_deploy.models import create_model

    d = tmp_path_factory.mktemp("ckpt")
    ckpt = d / "sr50.pth"
    torch.save({"state_dict": create_model("sparse_resnet50", with_fpn=True,
                                           init_seed=7).state_dict()}, ckpt)
    model = create_model("sparse_resnet50", with_fpn=True, checkpoint=ckpt)
    path = d / "ssi.onnx"
    export_onnx(model, path, input_shape=SHAPE, dynamic=None)
    return path, ckpt


@pytest.fixture
def no_model_build(monkeypatch):
    """Building, loading or exporting a model fails the test (the plan must refuse first)."""
    import ssi_deploy.backends.registry as registry
    import ssi_deploy.backends.torch_backend as tb
    import ssi_deploy.export as export

    def boom(*a, **k):
        raise AssertionError("a model was built before the checks")

    for mod, name in ((tb, "build_model"), (registry, "create_backend"), (export, "export_onnx")):
        monkeypatch.setattr(mod, name, boom)


def _rewrite_manifest(src: Path, dst: Path, edit) -> Path:
    """A copy of ``src`` whose graph and manifest were changed by ``edit(model, manifest)``."""
    from ssi_deploy.manifest import manifest_from_model_proto, write_into_model_proto

    model = onnx.load(str(src))
    manifest = edit(model, manifest_from_model_proto(model, str(src)))
    write_into_model_proto(model, manifest)
    onnx.save(model, str(dst))
    return dst


# ---------------------------------------------------------------------------------------------
# 3. a file from a checkpoint is profiled without --checkpoint; what needs weights says so


def test_profile_file_from_checkpoint_needs_no_checkpoint(from_checkpoint, tmp_path,
                                                          monkeypatch):
    import ssi_deploy.backends.torch_backend as tb

    path, _ = from_checkpoint
    monkeypatch.setattr(tb, "build_model", lambda *a, **k: pytest.fail("no reference needed"))
    rep = tmp_path / "p.json"
    rc, out, err = invoke("profile", path, "--backend", "onnxruntime", "--report", rep,
                          "--iterations", "2", "--warmup-ms", "0", "-q")
    assert rc == 0, err
    r = json.loads(rep.read_text())
    assert r["profiled"]["source"] == "file" and r["density_source"] == "backend mask outputs"
    assert len(r["density"]) == 32 and all(0 < d <= 1 for d in r["density"].values())
    assert list(r["density"])[:2] == ["layer1.0.mask1", "layer1.0.mask2"]
    assert set(r["density_per_stage"]) == {"layer1", "layer2", "layer3", "layer4"}
    assert f"report: {rep}" in out and "backend mask outputs" in out


@pytest.mark.parametrize("extra, needs", [
    (("--compare-dense",), "--compare-dense (the dense twin has the same weights)"),
    (("--density", "0.3"), "--density (the model is re-exported with forced masks)"),
    ((), "--backend torch (it times the PyTorch model"),
])
def test_profile_what_needs_the_checkpoint_says_so(from_checkpoint, no_model_build, extra, needs):
    path, _ = from_checkpoint
    backend = () if not extra else ("--backend", "onnxruntime")
    e = one_line_error(*invoke("profile", path, *backend, *extra))
    assert needs in e and e.endswith("pass --checkpoint PATH")
    assert "was exported from checkpoint sha256:" in e


def test_profile_checkpoint_is_checked_in_the_plan(from_checkpoint, tmp_path, no_model_build):
    import torch

    path, _ = from_checkpoint
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    e = one_line_error(*invoke("profile", path, "--checkpoint", other))
    assert "checkpoint mismatch" in e
    e = one_line_error(*invoke("profile", path, "--checkpoint", tmp_path / "none.pth"))
    assert "checkpoint not found" in e


def test_profile_file_without_masks_needs_weights_for_densities(from_checkpoint, tmp_path,
                                                                no_model_build):
    path, _ = from_checkpoint

    def drop_masks(model, m):
        names = {o.name for o in m.outputs_of_kind("mask")}
        keep = [o for o in model.graph.output if o.name not in names]
        del model.graph.output[:]
        model.graph.output.extend(keep)
        return m.with_outputs(m.outputs_of_kind("feature"))

    bare = _rewrite_manifest(path, tmp_path / "bare.onnx", drop_masks)
    e = one_line_error(*invoke("profile", bare, "--backend", "onnxruntime"))
    assert "measuring its densities (the file has no mask outputs) needs those weights" in e


# ---------------------------------------------------------------------------------------------
# 1. outputs are classified by the manifest's kind, not by their names


def test_profile_densities_follow_manifest_kind_not_names(from_checkpoint, tmp_path, monkeypatch):
    import ssi_deploy.backends.torch_backend as tb
    from ssi_deploy.profiling import ProfileConfig, plan_profile, profile

    path, _ = from_checkpoint

    def rename(model, m):
        new = {o.name: f"sampled_{i}" for i, o in enumerate(m.outputs_of_kind("mask"))}
        for node in model.graph.node:
            node.output[:] = [new.get(n, n) for n in node.output]
            node.input[:] = [new.get(n, n) for n in node.input]
        for o in list(model.graph.output) + list(model.graph.value_info):
            o.name = new.get(o.name, o.name)
        return m.with_outputs([replace(o, name=new.get(o.name, o.name)) for o in m.outputs])

    renamed = _rewrite_manifest(path, tmp_path / "renamed.onnx", rename)
    cfg = ProfileConfig(onnx=renamed, backend="onnxruntime", iterations=1, warmup_ms=0,
                        device="cpu", progress=False)
    plan = plan_profile(cfg)
    assert plan.density_from == "outputs" and not plan.needs_reference
    assert [t.name for t in plan.masks][:2] == ["sampled_0", "sampled_1"]
    assert plan.masks[0].layer == "layer1.0.mask1"
    monkeypatch.setattr(tb, "build_model", lambda *a, **k: pytest.fail("no reference needed"))
    r = profile(cfg)
    assert len(r["density"]) == 32 and list(r["density"])[0] == "layer1.0.mask1"


# ---------------------------------------------------------------------------------------------
# 4. --report is checked before timing; a failed write leaves nothing behind


@pytest.mark.parametrize("where, words", [
    ("missing/p.json", "does not exist; create it first"),
    (".", "is a directory"),
    ("a_file/p.json", "is not a directory"),
    ("/proc/p.json", "cannot write into /proc"),
])
def test_profile_unwritable_report_fails_before_timing(tmp_path, no_model_build, where, words):
    (tmp_path / "a_file").write_text("x")
    report = where if where.startswith("/") else tmp_path / where
    t0 = time.perf_counter()
    e = one_line_error(*invoke("profile", "--arch", "sparse_resnet50", "--input-shape", "64x64",
                               "--iterations", "1", "--report", report))
    assert time.perf_counter() - t0 < 10
    assert e.startswith("error: --report ") and words in e


def test_profile_unwritable_report_with_a_file(from_checkpoint, tmp_path, no_model_build):
    path, _ = from_checkpoint
    e = one_line_error(*invoke("profile", path, "--backend", "onnxruntime", "--report",
                               tmp_path / "nodir" / "p.json"))
    assert "does not exist; create it first" in e


def test_profile_report_write_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    import ssi_deploy.profiling as profiling

    monkeypatch.setattr(profiling, "run_profile", lambda plan: None)
    monkeypatch.setattr(profiling, "build_report", lambda plan, m: {"latency_ms": list(range(99))})
    real_write = Path.write_text

    def disk_full(self, text, *a, **k):
        real_write(self, text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    rep = tmp_path / "p.json"
    e = one_line_error(*invoke("profile", "--arch", "sparse_resnet50", "--input-shape", "64x64",
                               "--report", rep))
    assert "disk filled up" in e and "nothing was written" in e
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 5. huge shapes: one line, on every path a shape can come from


def test_profile_huge_input_shape_one_line(no_model_build):
    e = one_line_error(*invoke("profile", "--arch", "sparse_resnet50", "--input-shape", HUGE))
    assert "over the limit" in e
    from ssi_deploy.profiling import ProfileConfig, plan_profile
    with pytest.raises(SSIError, match="over the limit"):
        plan_profile(ProfileConfig(arch="sparse_resnet50", input_shape=(1, 3, 100000, 100000)))
    with pytest.raises(SSIError, match="3-channel"):
        plan_profile(ProfileConfig(arch="sparse_resnet50", input_shape=(1, 4, 64, 64)))


def test_profile_huge_static_onnx_shape_one_line(from_checkpoint, tmp_path, no_model_build):
    path, _ = from_checkpoint

    def huge(model, m):
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value = dims[3].dim_value = 100000
        return replace(m, inputs=(replace(m.input, shape=(1, 3, 100000, 100000)),))

    big = _rewrite_manifest(path, tmp_path / "big.onnx", huge)
    e = one_line_error(*invoke("profile", big, "--backend", "onnxruntime"))
    assert "the ONNX input 'image'" in e and "over the limit" in e


def test_profile_huge_engine_profile_shape_one_line(from_checkpoint, fake_gpu_env, tmp_path,
                                                    no_model_build):
    from ssi_deploy.manifest import read_manifest

    path, _ = from_checkpoint
    io = {"image": [[1, 3, 64, 64], [1, 3, 100000, 100000], [1, 3, 100000, 100000]]}
    plan = write_fake_plan(tmp_path / "big.plan", path, io, ["p2"])
    side = plan.with_name("big.plan.json")
    d = json.loads(side.read_text())
    d["manifest"] = read_manifest(path).to_dict()
    side.write_text(json.dumps(d))
    e = one_line_error(*invoke("profile", plan))
    assert "profile opt shape" in e and "over the limit" in e


# ---------------------------------------------------------------------------------------------
# 2. plan / run / report: the JSON and the table from one dict; the verdict


def _report(cv_sparse=0.02, cv_dense=0.03, iterations=10, load=0.5, backend="torch"):
    lat = {k: 10.0 for k in ("min", "mean", "median", "p90", "p95", "p99", "max")}
    dlat = {k: 16.0 for k in lat}
    return {"backend": {"backend": backend, "device": "cpu"}, "arch": "sparse_resnet50",
            "input_shape": [1, 3, 64, 64], "profiled": {"source": "file"},
            "latency_ms": lat, "latency_cv": cv_sparse, "iterations": iterations,
            "throughput_per_s": 100.0, "backbone_gmacs": 1.0,
            "density": {"layer1.0.mask1": 0.2, "layer2.0.mask1": 0.4},
            "density_per_stage": {"layer1": 0.2, "layer2": 0.4},
            "density_source": "backend mask outputs",
            "machine": {"cpu_count": 2, "threads": 2, "load_avg_before": [load, 0, 0],
                        "load_avg_after": [load, 0, 0], "other_running_before": 0},
            "dense": {"arch": "resnet50", "latency_ms": dlat, "latency_cv": cv_dense,
                      "iterations": iterations, "throughput_per_s": 62.5, "backbone_gmacs": 2.9},
            "speedup_vs_dense": 1.6, "gmacs_ratio_vs_dense": 2.9, "notes": [], "warnings": []}


def test_speedup_verdict_says_what_to_trust():
    from ssi_deploy.profiling import format_report, speedup_verdict

    v = speedup_verdict(_report())
    assert v["reliable"] and v["text"].startswith("speed-up 1.60x of the 2.90x the MAC ratio "
                                                  "allows (55 %")
    v = speedup_verdict(_report(cv_sparse=0.25))
    assert not v["reliable"]
    assert v["text"].startswith("noisy: CV sparse 25 %, dense 3 % (over 10 %)")
    assert "not reliable on this run; rerun on an idle machine or with more iterations" in v["text"]
    assert "2 timed runs per side" in speedup_verdict(_report(iterations=2))["text"]
    assert "load average 3.5 on 2 cores" in speedup_verdict(_report(load=3.5))["text"]
    assert "no speed-up is expected" in speedup_verdict(_report(backend="onnxruntime"))["text"]
    fast = _report()
    fast["speedup_vs_dense"] = 5.4
    assert "above the 2.90x the MAC ratio allows: the dense kernels run less efficiently" in \
        speedup_verdict(fast)["text"]
    fast["latency_cv"] = 0.5
    assert speedup_verdict(fast)["text"].endswith("(it is also above the 2.90x MAC ratio, which "
                                                  "no sparse kernel can beat)")
    r = _report()
    r["speedup_verdict"] = speedup_verdict(r)
    table = format_report(r)
    assert "verdict: speed-up 1.60x of the 2.90x" in table
    assert "per stage: layer1 0.200, layer2 0.400" in table
    assert "timing: 2 threads, 2 cores, load average 0.5 before timing" in table


def test_plan_decides_before_running(from_checkpoint, tmp_path, no_model_build):
    from ssi_deploy.profiling import ProfileConfig, plan_profile

    path, ckpt = from_checkpoint
    plan = plan_profile(ProfileConfig(onnx=path, backend="onnxruntime", compare_dense=True,
                                      checkpoint=ckpt, report=tmp_path / "p.json"))
    assert plan.subject.source == "file" and plan.subject.path == path
    assert plan.dense == "twin" and plan.dense_arch == "resnet50" and plan.needs_reference
    assert plan.shape == SHAPE and plan.report_path == tmp_path / "p.json"
    assert any("onnxruntime runs the SSI nodes' ONNX function bodies" in n for n in plan.notes)
    plan = plan_profile(ProfileConfig(arch="sparse_resnet50", input_shape=(1, 3, 64, 64)))
    assert plan.subject.source == "pytorch model" and plan.density_from == "reference"
    with pytest.raises(SSIError, match="does not fit the FPN"):
        plan_profile(ProfileConfig(arch="sparse_resnet50", input_shape=(1, 3, 65, 64)))
    with pytest.raises(SSIError, match="not both"):
        plan_profile(ProfileConfig(arch="sparse_resnet50", compare_dense=True,
                                   dense_engine=tmp_path / "d.plan"))


def test_profile_torch_with_checkpoint_json_and_table_agree(from_checkpoint, tmp_path):
    from ssi_deploy.profiling import ProfileConfig, format_report, profile

    path, ckpt = from_checkpoint
    rep = tmp_path / "p.json"
    r = profile(ProfileConfig(onnx=path, checkpoint=ckpt, compare_dense=True, iterations=2,
                              warmup_ms=0, progress=False, report=rep))
    assert json.loads(rep.read_text()) == json.loads(json.dumps(r))
    assert r["profiled"]["source"] == "pytorch model (rebuilt from the file's manifest)"
    assert r["density_source"] == "pytorch model" and len(r["density"]) == 32
    v = r["speedup_verdict"]
    assert not v["reliable"] and "2 timed runs per side" in v["text"]
    table = format_report(r)
    assert f"verdict: {v['text']}" in table and "resnet50" in table


def test_profile_runs_both_export_forms(tmp_path):
    """profile of a file in either form: ONNX Runtime runs its function bodies, densities come
    from its mask outputs, and the two forms of the same model give the same densities."""
    from ssi_deploy.export import export_onnx
    from ssi_deploy.models import create_model

    model = create_model("sparse_resnet50", init_seed=3)
    densities = {}
    for granularity in ("block", "ops"):
        path = export_onnx(model, tmp_path / f"{granularity}.onnx", input_shape=SHAPE,
                           dynamic=None, granularity=granularity)
        rep = tmp_path / f"{granularity}.json"
        rc, out, err = invoke("profile", path, "--backend", "onnxruntime", "--report", rep,
                              "--iterations", "2", "--warmup-ms", "0", "-q")
        assert rc == 0, err
        r = json.loads(rep.read_text())
        assert r["density_source"] == "backend mask outputs" and len(r["density"]) == 32
        densities[granularity] = r["density"]
    # the same masks up to a rare near-threshold flip between the two bodies' convolutions
    assert densities["block"].keys() == densities["ops"].keys()
    assert max(abs(densities["block"][k] - densities["ops"][k]) for k in densities["ops"]) < 0.01
