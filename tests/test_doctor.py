"""`ssi-deploy doctor`: the workflow table (what this machine can run, and why) from probes."""

from __future__ import annotations

import json

import pytest

from ssi_deploy import doctor as doctor_mod
from ssi_deploy.cli.main import main as cli_main
from ssi_deploy.tensorrt import gpu as gpu_mod
from ssi_deploy.tensorrt import plugins as plugins_mod
from trt_fakes import fake_env, no_real_trt  # noqa: F401


@pytest.fixture
def cpu_machine(no_real_trt, monkeypatch, tmp_path):
    """No GPU, no TensorRT, no plugin library; a C++ compiler and cmake, no docker."""
    monkeypatch.setattr(gpu_mod, "_load_libcuda", lambda: None)
    monkeypatch.delenv(plugins_mod.ENV_VAR, raising=False)
    monkeypatch.setattr(plugins_mod, "PACKAGE_LIB_DIR", tmp_path / "none")
    monkeypatch.setattr(plugins_mod, "SOURCE_BUILD_DIR", tmp_path / "nobuild")
    monkeypatch.setattr(doctor_mod, "probe_compiler",
                        lambda: {"cxx": "/usr/bin/c++", "cmake": "/usr/bin/cmake", "built": None})
    monkeypatch.setattr(doctor_mod, "probe_docker",
                        lambda: {"docker": None, "in_container": False})


def _flows(capsys, *argv):
    rc = cli_main(["doctor", *argv])
    out = capsys.readouterr()
    return rc, out


def test_doctor_cpu_machine_workflows(cpu_machine, capsys):
    rc, out = _flows(capsys)
    assert rc == 1  # the gpu, tensorrt and plugin checks fail; workflows do not count
    rows = {}
    lines = out.out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("workflow"))
    assert lines[start].split() == ["workflow", "available", "why"]
    for ln in lines[start + 2:]:
        if not ln.strip():
            break
        name, rest = ln[:lines[start].index("available")].strip(), ln[lines[start].index("available"):]
        rows[name] = (rest.split()[0], rest.split(None, 1)[1])
    for flow in ("CPU export", "validate (onnxruntime)", "profile (torch, CPU)",
                 "native CPU kernels (CPU twins)"):
        assert rows[flow][0] == "yes", rows[flow]
    assert "CPU provider" in rows["validate (onnxruntime)"][1]
    assert "/usr/bin/c++ and /usr/bin/cmake: built on first use" in rows[
        "native CPU kernels (CPU twins)"][1]
    build = rows["TensorRT build"]
    assert build[0] == "no" and "TensorRT not installed" in build[1]
    assert "no GPU: no NVIDIA driver (libcuda.so.1 not found)" in build[1]
    assert "no SSI plugin library (make plugins)" in build[1]
    run = rows["engine run"]
    assert run[0] == "no" and "no TensorRT or lean runtime" in run[1] and "no GPU" in run[1]
    assert rows["Docker image"][0] == "no" and "docs/docker.md" in rows["Docker image"][1]
    assert out.err.strip() == "error: 3 of 7 checks failed: gpu, tensorrt, plugin library"


def test_doctor_json(cpu_machine, capsys):
    rc, out = _flows(capsys, "--json")
    assert rc == 1
    d = json.loads(out.out)
    assert [c["name"] for c in d["checks"]][:3] == ["python", "torch", "gpu"]
    assert d["failed"] == ["gpu", "tensorrt", "plugin library"]
    flows = {w["name"]: w for w in d["workflows"]}
    assert flows["CPU export"]["available"] is True
    assert flows["profile (torch, CPU)"]["available"] is True
    assert flows["TensorRT build"]["available"] is False
    assert "no GPU" in flows["TensorRT build"]["why"]


def test_doctor_no_compiler(cpu_machine, monkeypatch, capsys):
    monkeypatch.setattr(doctor_mod, "probe_compiler",
                        lambda: {"cxx": None, "cmake": "/usr/bin/cmake", "built": None})
    monkeypatch.setattr(doctor_mod, "probe_module",
                        lambda name: None if name == "onnx" else "1.0")
    rc, out = _flows(capsys, "--json")
    flows = {w["name"]: w for w in json.loads(out.out)["workflows"]}
    native = flows["native CPU kernels (CPU twins)"]
    assert native["available"] is False and "no C++ compiler" in native["why"]
    export = flows["CPU export"]
    assert export["available"] is False and "onnx not importable (pip install onnx)" in export["why"]


def test_doctor_gpu_machine_can_build_and_run(fake_env, monkeypatch, capsys):
    monkeypatch.setattr(doctor_mod, "probe_docker", lambda: {"docker": "/usr/bin/docker",
                                                            "in_container": False})
    rc, out = _flows(capsys, "--json")
    assert rc == 0, out.err
    flows = {w["name"]: w for w in json.loads(out.out)["workflows"]}
    assert flows["TensorRT build"]["available"] is True
    assert "full TensorRT 10.13.0" in flows["TensorRT build"]["why"]
    assert flows["engine run"]["available"] is True
    assert flows["Docker image"]["available"] is True
