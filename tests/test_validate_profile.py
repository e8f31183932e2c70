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
    assert rc == 2 and err.strip() == f"error: ONNX file not found: {tmp_path / 'missing.onnx'}"
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


def test_validate_mask_flip_judges_features_with_backend_masks(exported, monkeypatch, tmp_path):
    """A backend whose masks differ at a few positions (and whose features follow its masks)
    passes: masks are reported apart, features are compared under the backend's masks."""
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
    m = override[0]
    m[0, 0, 5, 6] = 1.0 - m[0, 0, 5, 6]  # one flip off the grid prior, layer1.0.mask1
    flipped.model.set_mask_override(override)
    monkeypatch.setattr(registry, "create_backend", lambda *a, **k: flipped)
    res = validate(exported, backend="torch", inputs=InputSpec(npz=tmp_path / "in.npz"),
                   raise_on_fail=False)
    assert res.passed
    rep = res.comparison
    assert sum(mc.differing for mc in rep.masks) == 1
    assert rep.masks[0].name == "mask_layer1_0_mask1" and rep.masks[0].differing == 1
    assert rep.free_running is not None  # features were re-judged under the backend's masks
    assert all(o.max_abs == 0.0 for o in rep.outputs)  # same masks, same code: identical
    assert max(o.max_abs for o in rep.free_running) > 0.0  # the flip propagates downstream
    assert res.to_dict()["feature_reference"] == "PyTorch re-run with the backend's masks"
