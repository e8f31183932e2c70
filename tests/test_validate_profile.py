"""`ssi-deploy validate` and `ssi-deploy profile` end to end (CPU, small shapes)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ssi_deploy.cli.main import main

SHAPE = (1, 3, 64, 64)
LATENCY_KEYS = {"min", "mean", "median", "p90", "p95", "p99", "max"}


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """sparse_resnet50 + FPN, seeded random weights, static 64x64, masks exposed."""
    from ssi_deploy.export import export_onnx
    from ssi_deploy.models import create_model

    path = tmp_path_factory.mktemp("export") / "sr50.onnx"
    model = create_model("sparse_resnet50", with_fpn=True, init_seed=0)
    model.fuse_for_inference()
    model.expose_masks = True
    export_onnx(model, path, input_shape=SHAPE, dynamic=None, dtype="fp32", expose_masks=True)
    return path


@pytest.fixture(scope="module")
def altered(exported, tmp_path_factory):
    """The same file with one conv weight of the FPN scaled by 1.5."""
    m = onnx.load(str(exported))
    inits = sorted(m.graph.initializer, key=lambda t: -int(np.prod(t.dims)) if len(t.dims) == 4 else 0)
    t = inits[0]
    arr = numpy_helper.to_array(t).copy() * 1.5
    t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
    path = tmp_path_factory.mktemp("altered") / "sr50_altered.onnx"
    onnx.save(m, str(path))
    return path


def test_validate_pass_with_report(exported, tmp_path, capsys):
    report = tmp_path / "val.json"
    rc, out, err = run_cli(capsys, "validate", exported, "--random", "--seed", "1", "--report", report)
    assert rc == 0, out + err
    assert "PASS" in out and "p2" in out and "mask_layer1_0_mask1" in out
    r = json.loads(report.read_text())
    assert r["passed"] is True and set(r["outputs"]) == {"p2", "p3", "p4", "p5", "p6"}
    assert len(r["masks"]) == 32
    for o in r["outputs"].values():
        assert o["cosine"] > 0.99999 and o["nan_test"] == 0 and o["violations"] == 0
    # threshold masks agree (a near-zero logit may flip one position on another CPU)
    assert all(m["passed"] and m["differing"] <= m["allowed_flips"] for m in r["masks"].values())
    assert sum(m["differing"] for m in r["masks"].values()) <= 2
    assert r["inputs"]["shape"] == list(SHAPE)


def test_validate_image(exported, tmp_path, capsys):
    from PIL import Image
    img = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.png")
    rc, out, err = run_cli(capsys, "validate", exported, "--image", tmp_path / "photo.png",
                           "--report", tmp_path / "r.json")
    assert rc == 0, out + err
    info = json.loads((tmp_path / "r.json").read_text())["inputs"]
    assert info["source"] == "image" and info["padded_hw"] == [64, 64]
    assert info["resized_hw"] == [38, 64]


def test_validate_fails_on_altered_weights(altered, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "validate", altered, "--random", "--report", tmp_path / "f.json")
    assert rc == 1
    assert "Traceback" not in err and last_line(err).startswith("error: onnxruntime differs")
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1
    r = json.loads((tmp_path / "f.json").read_text())
    assert r["passed"] is False and r["failures"]


def _mask_names(path):
    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output
            if o.name.startswith("mask_")]


def test_validate_per_output_tolerance(exported, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "validate", exported, "--atol", "q7=0.5")
    assert rc == 2 and err.strip() == ("error: --atol 'q7=0.5': no output named 'q7'; outputs: "
                                       + ", ".join(["p2", "p3", "p4", "p5", "p6"] +
                                                   [n for n in _mask_names(exported)]))
    rc, out, err = run_cli(capsys, "validate", exported, "--atol", "p2=0.5", "--rtol", "1e-2",
                           "--quiet", "--report", tmp_path / "t.json")
    assert rc == 0 and out.strip() == "PASS"
    r = json.loads((tmp_path / "t.json").read_text())["outputs"]
    assert (r["p2"]["atol"], r["p2"]["rtol"], r["p2"]["atol_rule"]) == (0.5, 1e-2, "given")
    assert r["p3"]["rtol"] == 1e-2 and r["p3"]["atol_rule"] == "2e-05 x max|ref|"


def test_validate_user_errors(exported, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "validate", tmp_path / "missing.onnx")
    assert rc == 2 and err.strip() == (f"error: {tmp_path / 'missing.onnx'}: no such ONNX file; "
                                       "give the path written by `ssi-deploy export`")
    name = onnx.load(str(exported), load_external_data=False).graph.input[0].name
    np.savez(tmp_path / "wrong_name.npz", not_the_input=np.zeros(SHAPE, np.float32))
    rc, out, err = run_cli(capsys, "validate", exported, "--inputs", tmp_path / "wrong_name.npz")
    assert rc == 2 and "'not_the_input' is not an input of the model" in err and name in err
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    np.savez(tmp_path / "wrong_shape.npz", **{name: np.zeros((1, 3, 32, 64), np.float32)})
    rc, out, err = run_cli(capsys, "validate", exported, "--inputs", tmp_path / "wrong_shape.npz")
    assert rc == 2 and "has shape [1, 3, 32, 64], the model expects [1, 3, 64, 64]" in err
    rc, out, err = run_cli(capsys, "validate", exported, "--inputs", tmp_path / "none.npz")
    assert rc == 2 and "inputs file not found" in err
    ck = tmp_path / "w.pth"
    ck.write_bytes(b"x")
    rc, out, err = run_cli(capsys, "validate", exported, "--checkpoint", ck)
    assert rc == 2 and "checkpoint mismatch" in err and "random weights" in err
    np.savez(tmp_path / "ok.npz", **{name: np.zeros(SHAPE, np.float32)})
    rc, out, err = run_cli(capsys, "validate", exported, "--inputs", tmp_path / "ok.npz", "-q")
    assert rc == 0, err


def _check_profile(r, dense: bool):
    assert set(r["latency_ms"]) == LATENCY_KEYS
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["max"] and lat["min"] <= lat["mean"] <= lat["max"]
    assert lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert r["throughput_per_s"] == pytest.approx(1000.0 / lat["mean"])
    assert len(r["density"]) == 32 and all(0 < d <= 1 for d in r["density"].values())
    assert r["backbone_gmacs"] > 0
    if dense:
        assert set(r["dense"]["latency_ms"]) == LATENCY_KEYS
        assert r["dense"]["arch"] == "resnet50"
        assert r["dense"]["backbone_gmacs"] > r["backbone_gmacs"]
        assert r["speedup_vs_dense"] == pytest.approx(
            r["dense"]["latency_ms"]["median"] / lat["median"])


def test_profile_torch_arch_compare_dense(tmp_path, capsys):
    rep = tmp_path / "p.json"
    rc, out, err = run_cli(capsys, "profile", "--arch", "sparse_resnet50", "--input-shape", "64x64",
                           "--iterations", "3", "--warmup-ms", "0", "--compare-dense",
                           "--density", "0.3", "--report", rep)
    assert rc == 0, err
    r = json.loads(rep.read_text())
    _check_profile(r, dense=True)
    assert "timing sparse_resnet50" in err and "3/3 runs" in err  # progress on stderr
    assert "speedup vs dense" in out and "resnet50" in out
    # forced density: every layer keeps about 0.3 (plus the grid prior's points)
    assert all(0.25 <= d <= 0.5 for d in r["density"].values())
    from ssi_deploy.cost_model import backbone_gmacs
    assert r["backbone_gmacs"] == pytest.approx(
        backbone_gmacs("sparse_resnet50", (1, 3, 64, 64), r["density"]))


def test_profile_onnxruntime_file(exported, tmp_path, capsys):
    rep = tmp_path / "p.json"
    rc, out, err = run_cli(capsys, "profile", exported, "--backend", "onnxruntime",
                           "--iterations", "2", "--warmup-ms", "0", "--report", rep)
    assert rc == 0, err
    r = json.loads(rep.read_text())
    _check_profile(r, dense=False)
    assert r["backend"]["backend"] == "onnxruntime" and r["input_shape"] == list(SHAPE)


def test_profile_user_errors(exported, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "profile", tmp_path / "missing.onnx")
    assert rc == 2 and "ONNX file not found" in err
    rc, out, err = run_cli(capsys, "profile", "--arch", "resnet99")
    assert rc == 2 and "unknown architecture" in err
    rc, out, err = run_cli(capsys, "profile", exported, "--input-shape", "1x3x96x96")
    assert rc == 2 and "does not fit the ONNX input" in err
    rc, out, err = run_cli(capsys, "profile", "--arch", "sparse_resnet50", "--density", "1.5")
    assert rc == 2 and "--density must be in (0, 1]" in err


def test_validate_mask_flip_far_from_threshold_fails_and_is_attributed(exported, monkeypatch,
                                                                          tmp_path):
    """A backend that flips one decision far from its threshold (and whose features follow
    its masks): features are judged under its masks (identical), the cascade is attributed
    to the first flip, and the flip itself fails: no rounding can move a logit that far."""
    import torch

    import ssi_deploy.backends.registry as registry
    from ssi_deploy.backends.torch_backend import TorchBackend
    from ssi_deploy.validation.runner import InputSpec, validate

    x = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    flipped = TorchBackend.from_onnx(exported)
    masks = flipped.run({"image": x})
    names = flipped.model.mask_names
    override = [torch.from_numpy(masks[n].copy()) for n in names]
    flipped.model.set_mask_override(override, record_decisions=True)
    flipped.run({"image": x})
    z = flipped.model.decision_records()[names[0]]["z"].abs()
    z[torch.isinf(z)] = 0  # grid-prior positions are always kept
    far = np.unravel_index(int(z.argmax()), tuple(z.shape))  # the surest decision of layer1.0.mask1
    m = override[0]
    m[far] = 1.0 - m[far]
    flipped.model.set_mask_override(override)
    monkeypatch.setattr(registry, "create_backend", lambda *a, **k: flipped)
    res = validate(exported, backend="torch", inputs=InputSpec(npz=tmp_path / "in.npz"),
                   raise_on_fail=False)
    assert not res.passed
    rep = res.comparison
    assert rep.first_flip == "mask_layer1_0_mask1"
    judged = rep.masks[0]  # (later layers: this fake backend's masks are stale after the flip)
    assert judged.name == "mask_layer1_0_mask1" and judged.differing == 1
    assert judged.near_threshold == 0
    assert judged.worst_margin > 1
    assert any("far from the threshold" in f for f in rep.failures())
    assert rep.free_running is not None  # features were re-judged under the backend's masks
    assert all(o.max_abs == 0.0 for o in rep.outputs)  # same masks, same code: identical
    assert max(o.max_abs for o in rep.free_running) > 0.0  # the flip propagates downstream
    assert res.to_dict()["feature_reference"] == "PyTorch re-run with the backend's masks"


# ---------------------------------------------------------------------------------------------
# TensorRT engines (.plan) through the fake `tensorrt` module of trt_fakes (CPU): the real
# validate/profile/backend code runs; the fake engine's outputs are 2 x its input.

from trt_fakes import fake_env, fake_gpu_env, no_real_trt, write_fake_plan  # noqa: E402,F401

ENGINE_IO = {"image": [list(SHAPE)] * 3}


def _with_manifest(plan, manifest):
    """The sidecar `ssi-deploy build` writes carries the manifest of the file it was built
    from (key "manifest"); the fake plan's sidecar gets it here."""
    side = plan.with_name(plan.name + ".json")
    d = json.loads(side.read_text())
    d["manifest"] = manifest.to_dict()
    side.write_text(json.dumps(d))
    return plan


def _manifest(path):
    from ssi_deploy.manifest import read_manifest
    return read_manifest(path)


def _dense_manifest(exported):
    """The manifest of resnet50 exported like ``exported`` (the dense engine's source)."""
    from dataclasses import replace
    m = _manifest(exported)
    return replace(m, arch="resnet50", sparse=False, outputs=tuple(m.outputs_of_kind("feature")))


def _engines(exported, tmp_path, dense_precision="fp32"):
    sparse = _with_manifest(write_fake_plan(tmp_path / "sparse.plan", exported, ENGINE_IO, ["p2"]),
                            _manifest(exported))
    dense = write_fake_plan(tmp_path / "dense.plan", None, ENGINE_IO, ["p2"],
                            precision=dense_precision, dense=True,
                            layers=[{"Name": "conv1 + relu", "LayerType": "CaskConvolution"}])
    return sparse, _with_manifest(dense, _dense_manifest(exported))


def test_profile_engine_dense_engine_and_per_layer(exported, fake_gpu_env, tmp_path, capsys):
    sparse, dense = _engines(exported, tmp_path)
    rep = tmp_path / "p.json"
    rc, out, err = run_cli(capsys, "profile", sparse, "--dense-engine", dense, "--per-layer",
                           "--top-layers", "1", "--iterations", "3", "--warmup-ms", "0",
                           "--report", rep)
    assert rc == 0, err
    r = json.loads(rep.read_text())
    _check_profile(r, dense=False)  # densities from the reference rebuilt from exported
    assert r["backend"]["backend"] == "tensorrt" and r["backend"]["engine"] == str(sparse)
    assert r["profiled"]["source"] == "engine" and r["profiled"]["precision"] == "fp32"
    assert r["arch"] == "sparse_resnet50" and r["input_shape"] == list(SHAPE)
    d = r["dense"]
    assert d["source"] == "engine" and d["engine"] == str(dense) and d["arch"] == "resnet50"
    assert set(d["latency_ms"]) == LATENCY_KEYS and d["iterations"] == 3
    assert r["speedup_vs_dense"] == pytest.approx(d["latency_ms"]["median"]
                                                  / r["latency_ms"]["median"])
    # per-layer times (the fake IProfiler reports two layers per run), slowest first
    assert [(x["name"], x["ms"], x["plugin"], x["ssi_op"]) for x in r["layers"]] == [
        ("/layer1/Relu", 0.5, False, None), ("/layer1/SampleMask", 0.25, True, "SampleMask")]
    s = r["layers_summary"]
    assert s["total_ms"] == 0.75 and s["ssi_plugin_ms"] == 0.25 and s["iterations"] == 3
    assert "0.500 ms  66.7 %  /layer1/Relu" in out and "1 more (all under 'layers'" in out
    assert "sparse_resnet50 (engine)" in out and "resnet50 (engine)" in out
    assert "speedup vs dense" in out


def test_profile_engine_refusals(exported, fake_gpu_env, tmp_path, capsys):
    sparse, dense = _engines(exported, tmp_path, dense_precision="fp16")

    def one_line_error(*argv):
        rc, out, err = run_cli(capsys, "profile", *argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
        return err.strip()

    e = one_line_error(sparse, "--dense-engine", dense, "--iterations", "1")
    assert e == (f"error: --dense-engine {dense} is fp16 but the sparse engine {sparse} is fp32: "
                 "compare engines built with the same precision")
    e = one_line_error(sparse, "--backend", "onnxruntime")
    assert e.startswith(f"error: {sparse} is a TensorRT engine: it runs with --backend tensorrt")
    e = one_line_error(exported, "--backend", "onnxruntime", "--dense-engine", dense)
    assert e.startswith("error: --dense-engine compares TensorRT engines")
    e = one_line_error("--arch", "sparse_resnet50", "--dense-engine", dense)
    assert "--dense-engine compares TensorRT engines" in e and "not --backend torch" in e
    e = one_line_error(exported, "--per-layer")
    assert e == "error: --per-layer needs the tensorrt backend (TensorRT's IProfiler), not torch"
    e = one_line_error(sparse, "--density", "0.3")
    assert e.startswith("error: --density cannot change a built engine")
    e = one_line_error(sparse, "--dense-engine", sparse)
    assert "holds SSI plugin layers: it is not a dense engine" in e
    other = _with_manifest(write_fake_plan(tmp_path / "other.plan", exported, ENGINE_IO, ["p2"],
                                           dense=True,
                                           layers=[{"Name": "conv", "LayerType": "CaskConvolution"}]),
                           _manifest(exported))
    e = one_line_error(sparse, "--dense-engine", other)
    assert e == (f"error: --dense-engine {other} was built from sparse_resnet50, not resnet50 "
                 "(the dense counterpart of sparse_resnet50)")
    (tmp_path / "dense.plan.json").unlink()
    e = one_line_error(sparse, "--dense-engine", dense)
    assert "no dense.plan.json beside it, so its precision is unknown" in e
    (tmp_path / "sparse.plan.json").unlink()
    e = one_line_error(sparse)
    assert "cannot tell which ONNX file engine" in e


def test_engine_without_tensorrt_or_gpu(exported, no_real_trt, monkeypatch, tmp_path, capsys):
    from ssi_deploy.tensorrt import gpu as gpu_mod
    from trt_fakes import make_fake_trt
    sparse, _ = _engines(exported, tmp_path)
    for cmd in ("profile", "validate"):
        rc, out, err = run_cli(capsys, cmd, sparse)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "TensorRT" in err, err
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", make_fake_trt())
    monkeypatch.setattr(gpu_mod, "_load_libcuda", lambda: None)
    for cmd in ("profile", "validate"):
        rc, out, err = run_cli(capsys, cmd, sparse)
        assert rc == 2 and "running a TensorRT engine needs an NVIDIA GPU" in err, err
        assert len(err.strip().splitlines()) == 1


def test_validate_engine_runs_tensorrt_against_reference(exported, fake_gpu_env, tmp_path, capsys):
    sparse, _ = _engines(exported, tmp_path)
    rc, out, err = run_cli(capsys, "validate", sparse, "--backend", "torch")
    assert rc == 2 and err.strip().startswith(f"error: {sparse} is a TensorRT engine: it runs "
                                              "with --backend tensorrt, not --backend torch")
    # the fake engine's p2 is 2 x the input: it must fail against the PyTorch reference
    rep = tmp_path / "v.json"
    rc, out, err = run_cli(capsys, "validate", sparse, "--report", rep)
    assert rc == 1 and last_line(err).startswith("error: tensorrt differs from the PyTorch reference")
    r = json.loads(rep.read_text())
    assert r["backend"]["backend"] == "tensorrt" and r["backend"]["engine"] == str(sparse)
    assert r["onnx"] == str(exported) and r["inputs"]["shape"] == list(SHAPE)
    assert r["passed"] is False and "p2" in r["outputs"]


def test_validate_engine_from_another_export_is_refused(exported, fake_gpu_env, tmp_path, capsys):
    """The engine's sidecar manifest must be the ONNX file's: a file re-exported since the
    build (here: another sampling seed) would validate the wrong model."""
    from dataclasses import replace
    m = _manifest(exported)
    plan = _with_manifest(write_fake_plan(tmp_path / "old.plan", exported, ENGINE_IO, ["p2"]),
                          replace(m, sampling=replace(m.sampling, seed=m.sampling.seed + 1)))
    rc, _, err = run_cli(capsys, "validate", plan)
    assert rc == 2 and "is not the export engine" in err and "rebuild the engine" in err
    assert len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def exported_fp16(tmp_path_factory):
    from ssi_deploy.export import export_onnx
    from ssi_deploy.models import create_model

    path = tmp_path_factory.mktemp("export16") / "sr50_fp16.onnx"
    model = create_model("sparse_resnet50", with_fpn=True, init_seed=0)
    export_onnx(model, path, input_shape=SHAPE, dynamic=None, dtype="fp16")
    return path


def test_profile_fp16_file_reexports_and_dense_twin_in_fp16(exported_fp16, tmp_path):
    from onnx import TensorProto

    from ssi_deploy.profiling import ProfileConfig, format_report, profile

    work = tmp_path / "work"
    work.mkdir()
    r = profile(ProfileConfig(onnx=exported_fp16, backend="onnxruntime", density=0.3,
                              compare_dense=True, iterations=1, warmup_ms=0, device="cpu",
                              progress=False, work_dir=work))

    def input_type(p):
        return onnx.load(str(p), load_external_data=False).graph.input[0].type.tensor_type.elem_type

    # the timed files are fp16 like the given one (the dense twin too), and the report says
    # that a re-export, not the given file, was timed
    assert input_type(work / "sparse.onnx") == TensorProto.FLOAT16
    assert input_type(work / "dense.onnx") == TensorProto.FLOAT16
    assert r["profiled"] == {"given": str(exported_fp16), "reexported": True, "source": "re-export",
                             "path": str(work / "sparse.onnx"), "dtype": "fp16"}
    assert r["dense"]["dtype"] == "fp16" and r["dense"]["source"] == "dense twin export"
    assert any("re-export of sr50_fp16.onnx" in n and "not the file as given" in n
               for n in r["notes"])
    table = format_report(r)
    assert "sparse_resnet50 (re-export)" in table
    assert f"profiled: a re-export (fp16, static), not {exported_fp16}" in table
    # without --density the given file itself is timed
    r = profile(ProfileConfig(onnx=exported_fp16, backend="onnxruntime", iterations=1,
                              warmup_ms=0, device="cpu", progress=False, work_dir=work))
    assert r["profiled"]["source"] == "file" and r["profiled"]["reexported"] is False


def test_profile_engine_compare_dense_builds_twin_engine_in_its_precision(exported, fake_gpu_env,
                                                                          tmp_path):
    """An fp16 engine built from an fp32 file (builder flag, TensorRT 10): the dense twin is
    exported from the engine's source ONNX and built (by the real builder code, fake library)
    in fp16 too, then timed on the same feeds."""
    from ssi_deploy.backends.tensorrt_backend import engine_metadata
    from ssi_deploy.profiling import ProfileConfig, profile

    sparse = _with_manifest(write_fake_plan(tmp_path / "sparse.plan", exported, ENGINE_IO, ["p2"],
                                            precision="fp16"), _manifest(exported))
    work = tmp_path / "work"
    work.mkdir()
    r = profile(ProfileConfig(onnx=sparse, compare_dense=True, iterations=2, warmup_ms=0,
                              progress=False, work_dir=work))
    assert r["backend"]["backend"] == "tensorrt" and r["profiled"]["precision"] == "fp16"
    d = r["dense"]
    assert d["arch"] == "resnet50" and d["source"] == "dense twin export"
    assert d["engine"] == str(work / "dense.plan") and d["precision"] == "fp16"
    meta = engine_metadata(work / "dense.plan")
    assert meta["precision"] == "fp16" and meta["dense"] is True
    assert meta["onnx"] == str((work / "dense.onnx").resolve())
    assert meta["profiles"]["image"]["min"] == list(SHAPE)
    trt = fake_gpu_env.trt
    assert trt.BuilderFlag.FP16 in trt.calls["config"].flags
    assert r["speedup_vs_dense"] == pytest.approx(d["latency_ms"]["median"]
                                                  / r["latency_ms"]["median"])
