"""A regular (non-editable) install works: the wheel carries the model zoo and the CLI runs
from it, away from the source tree (what the Dockerfile's `pip install .` gives)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# builds and installs a wheel (~20 s); `make test` runs slow tests too
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ZOO_SRC = ROOT / "ssi_deploy" / "zoo"
RELEASED = ("faster_rcnn_r101_dcn_fpn_1x_dense", "faster_rcnn_ssi_r101_dcn_fpn_1x_w0_02",
            "faster_rcnn_ssi_r101_dcn_fpn_1x_w0_05", "faster_rcnn_ssi_r101_dcn_fpn_1x_w0_1",
            "faster_rcnn_ssi_r101_dcn_fpn_1x_w0_2")


def _pip(*args, cwd):
    p = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input",
                        *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, target): a wheel built from a copy of the sources, installed with --target."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("packaging")
    # Build from a copy: an in-tree build would write build/ and *.egg-info into the checkout
    # (and a stale build/lib could leak removed files into the wheel).
    src = tmp / "src"
    shutil.copytree(ROOT / "ssi_deploy", src / "ssi_deploy",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    # the plugin library `make plugins` / the Dockerfile install into the package
    (src / "ssi_deploy" / "lib").mkdir(exist_ok=True)
    (src / "ssi_deploy" / "lib" / "libssi_trt_plugins.so").write_bytes(b"\x7fELF stand-in")
    dist = tmp / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", dist, src, cwd=tmp)
    (wheel,) = dist.glob("ssi_deploy-*.whl")
    target = tmp / "target"
    _pip("install", "--no-deps", "--no-compile", "--target", target, wheel, cwd=tmp)
    return wheel, target


def _run_installed(target: Path, *args, **extra_env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SSI_ZOO_DIR", "PYTHONPATH")}
    env.update(extra_env, PYTHONPATH=str(target))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=target.parent, timeout=300)


def test_wheel_contents(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    zoo = sorted(ZOO_SRC.glob("*.toml"))
    assert [p.stem for p in zoo] == list(RELEASED)
    for p in zoo:
        assert f"ssi_deploy/zoo/{p.name}" in names
    assert "ssi_deploy/lib/libssi_trt_plugins.so" in names
    assert "ssi_deploy/cli/main.py" in names and "ssi_deploy/zoo.py" in names
    dist_info = wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info/"
    junk = [n for n in names if not (n.startswith("ssi_deploy/") or n.startswith(dist_info))
            or "__pycache__" in n or n.endswith((".pyc", ".onnx", ".plan", ".pth", ".pt"))
            or n.startswith(("ssi_deploy/tests/", "ssi_deploy/build/"))
            or ".egg-info" in n]
    assert junk == []
    entry_points = zipfile.ZipFile(wheel).read(dist_info + "entry_points.txt").decode()
    assert "ssi-deploy = ssi_deploy.cli.main:main" in entry_points


def test_installed_cli_zoo_flops_help(installed):
    _, target = installed
    script = target / "bin" / "ssi-deploy"  # the console script pip wrote
    assert script.is_file()
    p = _run_installed(target, "-c", "import ssi_deploy, ssi_deploy.zoo as z; "
                       "print(ssi_deploy.__file__); print(z.ZOO_DIR)")
    assert p.returncode == 0, p.stderr
    mod_file, zoo_dir = p.stdout.split()
    assert Path(mod_file).is_relative_to(target) and Path(zoo_dir).is_relative_to(target)

    p = _run_installed(target, script, "zoo", "--json")
    assert p.returncode == 0, p.stderr
    assert sorted(e["name"] for e in json.loads(p.stdout)["zoo"]) == list(RELEASED)
    p = _run_installed(target, script, "zoo")
    assert p.returncode == 0, p.stderr
    assert all(name in p.stdout for name in RELEASED) and "94.4" in p.stdout

    p = _run_installed(target, "-m", "ssi_deploy.cli.main", "flops", "--arch", "resnet101_dcn",
                       "--input-shape", "1x3x992x1664", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["backbone_gmacs"] == pytest.approx(289.47, abs=0.005)

    p = _run_installed(target, script, "--help")
    assert p.returncode == 0 and "zoo" in p.stdout and "validate" in p.stdout


def test_installed_zoo_honours_ssi_zoo_dir(installed, tmp_path):
    _, target = installed
    script = target / "bin" / "ssi-deploy"
    own = tmp_path / "my_zoo"
    own.mkdir()
    shutil.copy2(ZOO_SRC / f"{RELEASED[2]}.toml", own)
    p = _run_installed(target, script, "zoo", "--json", SSI_ZOO_DIR=str(own))
    assert p.returncode == 0, p.stderr
    assert [e["name"] for e in json.loads(p.stdout)["zoo"]] == [RELEASED[2]]
    p = _run_installed(target, script, "zoo", SSI_ZOO_DIR=str(tmp_path / "nope"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == (f"error: model-zoo folder {tmp_path / 'nope'} not found; set "
                                "SSI_ZOO_DIR to a folder of entries (*.toml) or unset it for "
                                "the installed ones")
