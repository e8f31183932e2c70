"""The Triton companion ``libssi_trt_autoregister.so`` against TensorRT's real plugin registry.

Triton's TensorRT backend dlopens plugin libraries and nothing more; the companion registers
the creators of ``libssi_trt_plugins.so`` beside it on load (plugins/src/tensorrt/triton/).
Here it is loaded, by dlopen alone, into a Python process that imported the lean runtime from
PyPI (``pip install -e '.[tensorrt]'``: libnvinfer_lean is a dependency of the bindings,
loaded ``RTLD_LOCAL``, as libnvinfer is under Triton's backend), and the real registry must
then hold a creator for every contract op that has a plugin; loaded before TensorRT it must
register nothing and say why. Each case runs in a fresh interpreter (the process-wide registry
of this one stays as it was). Skips, with the reason, without the lean runtime or the built
libraries; CTest's ``ctest -R autoregister`` covers the same logic with a fake registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ssi_deploy.ops import contract
from ssi_deploy.serving.repository import COMPANION_NAME
from ssi_deploy.tensorrt import plugins as plugins_mod
from ssi_deploy.tensorrt import trt as trt_mod


@pytest.fixture(scope="module")
def companion():
    if trt_mod.find_tensorrt(allow_lean=True) is None:
        pytest.skip("no TensorRT Python module (install the lean runtime: pip install -e '.[tensorrt]')")
    lib = plugins_mod.find_plugin_library(required=False)
    if lib is None:
        pytest.skip(f"{plugins_mod.LIBRARY_NAME} not built (needs the TensorRT headers: make plugins) "
                    f"and ${plugins_mod.ENV_VAR} unset")
    comp = lib.parent / COMPANION_NAME
    if not comp.is_file():
        pytest.skip(f"{COMPANION_NAME} is not beside {lib} (built with it by make plugins)")
    return comp


# Runs in a fresh interpreter: optionally import TensorRT first, dlopen the companion
# (RTLD_LOCAL, as Triton does), print what the registry holds as JSON on the last line.
_PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    trt = None
    if sys.argv[2] == "trt-first":
        from ssi_deploy.tensorrt import trt as trt_mod
        trt = trt_mod.find_tensorrt(allow_lean=True).module
    lib = ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL)
    count = lib.ssiAutoRegisterCount()
    found = {}
    if trt is not None:
        reg = trt.get_plugin_registry()
        for name in json.loads(sys.argv[3]):
            c = reg.get_creator(name, "1", "ssi")
            found[name] = c is not None and c.name == name
    print(json.dumps({"count": count, "found": found}))
""")


def _probe(companion, order):
    names = [op.name for op in contract.OPS.values() if op.has_plugin]
    env = dict(os.environ)
    env.pop("SSI_PLUGIN_LIBRARY", None)  # the companion must find the library beside itself
    r = subprocess.run([sys.executable, "-c", _PROBE, str(companion), order, json.dumps(names)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return names, json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def test_companion_registers_every_plugin_with_the_real_registry(companion):
    names, got, log = _probe(companion, "trt-first")
    assert names and got["count"] == len(names), log
    assert got["found"] == {n: True for n in names}, log
    line = [ln for ln in log.splitlines() if ln.startswith("[ssi_trt_autoregister]")]
    assert len(line) == 1 and f"registered {len(names)} SSI plugin creator(s)" in line[0], log
    assert "libnvinfer" in line[0] and str(companion.parent) in line[0], line


def test_companion_loaded_before_tensorrt_registers_nothing_and_says_why(companion):
    _, got, log = _probe(companion, "companion-first")
    assert got["count"] == -1, log
    assert "no TensorRT plugin registry in this process" in log and "libnvinfer is not loaded" in log
