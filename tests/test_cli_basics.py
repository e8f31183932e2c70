"""CLI: zoo, flops, inspect-checkpoint, and the one-line error policy."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_help_lists_commands():
    rc, out, _ = run_cli("--help")
    assert rc == 0
    for cmd in ("zoo", "flops", "inspect-checkpoint"):
        assert cmd in out


def test_zoo_lists_registry_and_entries():
    rc, out, _ = run_cli("zoo", "--json")
    assert rc == 0
    data = json.loads(out)
    backbones = {"resnet50", "resnet101", "resnet101_dcn", "sparse_resnet50", "sparse_resnet101",
                 "sparse_resnet101_dcn"}
    assert {a["arch"] for a in data["architectures"]} == \
        backbones | {f"faster_rcnn_{b}" for b in backbones}
    maps = sorted(e["map"] for e in data["zoo"])
    assert maps == [40.7, 41.9, 42.7, 43.3, 43.4]
    rc, out, _ = run_cli("zoo")
    assert rc == 0 and "sparse_resnet101_dcn" in out and "94.4" in out


def test_flops_json_and_text():
    rc, out, _ = run_cli("flops", "--arch", "resnet101_dcn", "--input-shape", "1x3x992x1664", "--json")
    assert rc == 0 and json.loads(out)["backbone_gmacs"] == pytest.approx(289.47, abs=0.005)
    rc, out, _ = run_cli("flops", "--arch", "sparse_resnet101_dcn", "--density", "0.26")
    assert rc == 0 and "95.55 GMACs" in out


@pytest.mark.parametrize("args,needle", [
    (("flops", "--arch", "resnet999"), "unknown architecture 'resnet999'"),
    (("flops", "--arch", "resnet50", "--input-shape", "1x3xbig"), "bad --input-shape"),
    (("flops", "--arch", "resnet50", "--density", "0.5"), "is dense"),
    (("flops", "--arch", "sparse_resnet50", "--density", "1.5"), "between 0 and 1"),
    (("inspect-checkpoint", "/nonexistent/model.pth"), "checkpoint not found"),
])
def test_user_mistakes_give_one_line_and_exit_2(args, needle):
    rc, out, err = run_cli(*args)
    assert rc == 2
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_inspect_checkpoint(tmp_path):
    from ssi_deploy.models import create_model
    model = create_model("sparse_resnet50", init_seed=1)
    sd = dict(model.state_dict())
    sd["bbox_head.fc_cls.weight"] = torch.zeros(81, 1024)
    path = tmp_path / "ck.pth"
    torch.save({"state_dict": sd, "meta": {}}, path)
    rc, out, err = run_cli("inspect-checkpoint", str(path), "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["arch"] == "sparse_resnet50" and info["format"] == "official" and info["fits"]
    assert len(info["blocks"]) == 16 and info["blocks"][0]["sigma1"] == 3.0
    assert "bbox_head.fc_cls.weight" in info["ignored_keys"]
    rc, out, _ = run_cli("inspect-checkpoint", str(path))
    assert rc == 0 and "sparse_resnet50" in out and "layer4.2" in out


def test_flops_rejects_bad_measured_densities(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"density": [5.0] * 32}))
    rc, _, err = run_cli("flops", "--arch", "sparse_resnet50", "--densities-json", str(path))
    assert rc == 2 and "between 0 and 1" in err and "Traceback" not in err
    path.write_text(json.dumps(["a"] * 32))
    rc, _, err = run_cli("flops", "--arch", "sparse_resnet50", "--densities-json", str(path))
    assert rc == 2 and "Traceback" not in err


def test_text_file_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("hello\n")
    rc, _, err = run_cli("inspect-checkpoint", str(bad))
    assert rc == 2 and "not a torch.save file" in err and len(err.strip().splitlines()) == 1


def test_flops_non_utf8_densities_is_one_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    rc, _, err = run_cli("flops", "--arch", "sparse_resnet50", "--densities-json", str(path))
    assert rc == 2 and "not a text (UTF-8 JSON) file" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_flops_huge_shape_is_one_line():
    rc, _, err = run_cli("flops", "--arch", "resnet50", "--input-shape", "1x3x100000x100000")
    assert rc == 2 and "over the limit" in err and len(err.strip().splitlines()) == 1


def test_inspect_checkpoint_reports_nonfinite_weights(tmp_path):
    """One NaN in one weight: inspect-checkpoint names it and exits 1 (export refuses it)."""
    from ssi_deploy.models import create_model
    model = create_model("sparse_resnet50", init_seed=1)
    sd = dict(model.state_dict())
    sd["backbone.layer2.1.conv2.weight"] = sd["backbone.layer2.1.conv2.weight"].clone()
    sd["backbone.layer2.1.conv2.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save({"state_dict": sd, "meta": {}}, path)
    rc, out, err = run_cli("inspect-checkpoint", str(path))
    assert rc == 1, err
    assert "DAMAGED" in out and "backbone.layer2.1.conv2.weight (1 NaN, 0 Inf)" in out
    rc, out, _ = run_cli("inspect-checkpoint", str(path), "--json")
    assert rc == 1 and json.loads(out)["nonfinite"] == [
        {"key": "backbone.layer2.1.conv2.weight", "nan": 1, "inf": 0}]
    rc, _, err = run_cli("export", "--arch", "sparse_resnet50", "--checkpoint", str(path),
                         "--input-shape", "1x3x64x64", "--output", str(tmp_path / "m.onnx"))
    assert rc == 2 and "non-finite values" in err and "layer2.1.conv2.weight" in err
    assert not (tmp_path / "m.onnx").exists()
