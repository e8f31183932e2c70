"""TensorRT layer on CPU: argument and shape parsing, ONNX preparation, the plugin-layer check on
inspector JSON, every error message, the lean runtime's plugin registry (real package), and
the build/run code driven end to end through a fake ``tensorrt`` module.

The fake module stands in for the library only (builder, parser, runtime, registry, CUDA
driver); the code under test is the real ``ssi_deploy.tensorrt`` / backend code: the fake is
installed as ``sys.modules["tensorrt"]`` and found by the same import path users take. The
fakes and their fixtures live in ``trt_fakes.py`` (shared with test_validate_profile.py).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ssi_deploy.cli.main import main as cli_main
from ssi_deploy.errors import SSIError
from ssi_deploy.ops import contract
from ssi_deploy.tensorrt import gpu as gpu_mod
from ssi_deploy.tensorrt import plugins as plugins_mod
from ssi_deploy.tensorrt import trt as trt_mod
from ssi_deploy.tensorrt.inspect import check_plugin_layers, parse_engine_json, require_plugin_layers
from ssi_deploy.tensorrt.onnx_prep import model_precision, prepare_for_tensorrt, ssi_nodes
from ssi_deploy.tensorrt.shapes import (ProfileShape, check_within, parse_profile, parse_profiles,
                                        parse_shape, resolve_profiles)
from trt_fakes import (NODES, _engine_json, _FakeLibcuda, _HostDevice, _layer,  # noqa: F401
                       fake_env, make_fake_trt, no_real_trt)

# ---------------------------------------------------------------------------------------------
# Models: the exporter's layout (custom-domain node + model-local reference function)


def _ssi_model(dtype=TensorProto.FLOAT, with_functions=True, names=True, dynamic=True) -> onnx.ModelProto:
    dims = ["batch", 1, "height", "width"] if dynamic else [1, 1, 64, 64]
    x = helper.make_tensor_value_info("logits", dtype, dims)
    y = helper.make_tensor_value_info("dense", dtype, dims)
    w = helper.make_tensor("w", dtype, [1, 1, 3, 3], np.ones(9, np.float32).tolist())
    b = helper.make_tensor("b", dtype, [1], [0.0])
    nodes = [
        helper.make_node("SampleMask", ["logits"], ["mask"], domain=contract.DOMAIN,
                         name="/layer1/SampleMask" if names else "", mode=0, grid_interval=11,
                         plugin_version=contract.PLUGIN_VERSION,
                         plugin_namespace=contract.PLUGIN_NAMESPACE),
        helper.make_node("SparseConv2d", ["logits", "w", "b", "mask"], ["y"], domain=contract.DOMAIN,
                         name="/layer1/SparseConv2d" if names else "", pad_h=1, pad_w=1),
        helper.make_node("GaussianInterp", ["y", "mask", "b"], ["interp"], domain=contract.DOMAIN,
                         name="/layer1/GaussianInterp" if names else ""),
        helper.make_node("Relu", ["interp"], ["dense"], name="/layer1/Relu"),
    ]
    graph = helper.make_graph(nodes, "ssi", [x], [y], initializer=[w, b])
    funcs = []
    if with_functions:
        # reference bodies (here trivial; the exporter's are the dense oracles)
        funcs = [
            helper.make_function(contract.DOMAIN, "SampleMask", ["logits"], ["mask"],
                                 [helper.make_node("Sigmoid", ["logits"], ["mask"])],
                                 [helper.make_opsetid("", 17)], ["mode", "grid_interval"]),
            helper.make_function(contract.DOMAIN, "SparseConv2d", ["x", "weight", "bias", "mask"], ["y"],
                                 [helper.make_node("Conv", ["x", "weight", "bias"], ["c"], pads=[1, 1, 1, 1]),
                                  helper.make_node("Mul", ["c", "mask"], ["y"])],
                                 [helper.make_opsetid("", 17)], ["pad_h", "pad_w"]),
            helper.make_function(contract.DOMAIN, "GaussianInterp", ["values", "mask", "bias"], ["dense"],
                                 [helper.make_node("Identity", ["values"], ["dense"])],
                                 [helper.make_opsetid("", 17)], []),
        ]
    return helper.make_model(graph, functions=funcs,
                             opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid(contract.DOMAIN, contract.OPSET_VERSION)])


def _dense_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "dense", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def ssi_onnx(tmp_path) -> Path:
    p = tmp_path / "model.onnx"
    onnx.save(_ssi_model(), p)
    return p


# ---------------------------------------------------------------------------------------------
# Shape profiles and arguments


def test_parse_shape_and_profile():
    assert parse_shape("1x3x512x512") == (1, 3, 512, 512)
    p = parse_profile("input:1x3x256x256,2x3x512x512,4x3x1024x1024")
    assert p == ProfileShape("input", (1, 3, 256, 256), (2, 3, 512, 512), (4, 3, 1024, 1024))
    assert str(p) == "input:1x3x256x256,2x3x512x512,4x3x1024x1024"
    fixed = parse_profile("x:1x3x64x64")
    assert fixed.min == fixed.opt == fixed.max == (1, 3, 64, 64)
    # names may contain ':' (ONNX allows it): the last ':' separates the shapes
    assert parse_profile("a:b:1x2,1x2,1x2").name == "a:b"
    assert p.contains((3, 3, 600, 700)) and not p.contains((8, 3, 600, 700))


@pytest.mark.parametrize("spec, words", [
    ("input", "expected NAME:MIN,OPT,MAX"),
    ("input:1x3,1x3", "give one shape or three"),
    ("input:1x3x-2x4", "joined by 'x'"),
    ("input:1xAx4", "joined by 'x'"),
    ("input:1x3x4,1x3,1x3x4", "same rank"),
    ("input:1x3x8,1x3x4,1x3x16", "min <= opt <= max"),
    ("input:1x3x8x99999", "over the limit"),
])
def test_parse_profile_errors(spec, words):
    with pytest.raises(SSIError, match=words.replace("(", r"\(").replace("'", ".")):
        parse_profile(spec)


def test_parse_profiles_rejects_duplicates():
    with pytest.raises(SSIError, match="given twice"):
        parse_profiles(["x:1x2", "x:1x3"])


def test_resolve_profiles():
    inputs = {"logits": (-1, 1, -1, -1), "fixed": (1, 8)}
    given = parse_profiles(["logits:1x1x64x64,1x1x128x128,2x1x256x256"])
    out = resolve_profiles(inputs, given)
    assert out["logits"].max == (2, 1, 256, 256)
    assert out["fixed"].min == out["fixed"].max == (1, 8)
    with pytest.raises(SSIError, match=r"input 'logits' has dynamic dimensions \(\?x1x\?x\?\): give "
                                       r"--shapes logits:MIN,OPT,MAX, e.g. logits:1x1x256x256"):
        resolve_profiles(inputs, {})
    with pytest.raises(SSIError, match="unknown input.*nope.*inputs are logits, fixed"):
        resolve_profiles(inputs, parse_profiles(["nope:1x2"]))
    with pytest.raises(SSIError, match="has rank 4, not 3"):
        resolve_profiles(inputs, parse_profiles(["logits:1x1x64"]))
    with pytest.raises(SSIError, match="dimension 1 of input 'logits' is fixed to 1"):
        resolve_profiles(inputs, parse_profiles(["logits:1x3x64x64"]))


def test_check_within_profile():
    check_within("x", (2, 3, 64, 64), (1, 3, 32, 32), (4, 3, 128, 128))
    with pytest.raises(SSIError, match=r"input 'x' has shape 1x3x256x64, outside the engine's profile "
                                       r"\(min 1x3x32x32, max 4x3x128x128\); rebuild the engine with --shapes"):
        check_within("x", (1, 3, 256, 64), (1, 3, 32, 32), (4, 3, 128, 128))
    with pytest.raises(SSIError, match="outside the engine's profile"):
        check_within("x", (3, 64, 64), (1, 3, 32, 32), (4, 3, 128, 128))


# ---------------------------------------------------------------------------------------------
# ONNX preparation


def test_prepare_strips_ssi_functions_only():
    m = _ssi_model()
    other = helper.make_function("custom", "Keep", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])],
                                 [helper.make_opsetid("", 17)], [])
    m.functions.append(other)
    prepared, nodes, removed = prepare_for_tensorrt(m)
    assert sorted(removed) == ["ssi.GaussianInterp", "ssi.SampleMask", "ssi.SparseConv2d"]
    assert [(f.domain, f.name) for f in prepared.functions] == [("custom", "Keep")]
    assert len(m.functions) == 4  # the input model is left as it was
    assert [n.op_type for n in nodes] == ["SampleMask", "SparseConv2d", "GaussianInterp"]
    for node in prepared.graph.node[:3]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_version"] == contract.PLUGIN_VERSION.encode()
        assert attrs["plugin_namespace"] == contract.PLUGIN_NAMESPACE.encode()
    assert all(n.plugin_namespace == contract.PLUGIN_NAMESPACE for n in nodes)


def test_prepare_names_unnamed_nodes_uniquely():
    prepared, nodes, _ = prepare_for_tensorrt(_ssi_model(names=False))
    names = [n.name for n in nodes]
    assert all(names) and len(set(names)) == 3
    assert names == [n.name for n in prepared.graph.node[:3]]


def test_model_precision_from_inputs():
    assert model_precision(_ssi_model()) == "fp32"
    assert model_precision(_ssi_model(dtype=TensorProto.FLOAT16)) == "fp16"
    assert ssi_nodes(_dense_model()) == []


# ---------------------------------------------------------------------------------------------
# Inspector JSON (format of IEngineInspector.get_engine_information(JSON), DETAILED verbosity)
# (SEP, _layer, _engine_json, NODES live in trt_fakes, shared with the validate/profile tests)


def test_plugin_check_accepts_one_plugin_layer_per_node():
    res = require_plugin_layers(_engine_json(second_profile=True), NODES)
    assert res.ok and res.plugin_layers == 3 and res.total_layers == 4
    assert res.matched == {n: n for n in NODES}


def test_plugin_check_rejects_inlined_reference_bodies():
    res = check_plugin_layers(_engine_json(ssi_as_plugins=False), NODES)
    assert not res.ok and res.missing == NODES and res.plugin_layers == 0
    with pytest.raises(SSIError, match=r"no plugin layer for 3 of 3 SSI node\(s\) \(/layer1/SampleMask, "
                                       r".*dense reference body"):
        require_plugin_layers(_engine_json(ssi_as_plugins=False), NODES)


def test_plugin_check_one_layer_cannot_serve_two_nodes_and_name_fallback():
    # a plugin layer without metadata is matched by its name
    j = {"Layers": [{"Name": "/layer1/SampleMask", "LayerType": "PluginV2"}], "Bindings": []}
    res = check_plugin_layers(j, ["/layer1/SampleMask", "/layer1/SampleMask"])
    assert res.missing == ["/layer1/SampleMask"]


def test_plugin_check_needs_detailed_verbosity():
    with pytest.raises(SSIError, match="no detailed layer information.*DETAILED"):
        parse_engine_json(json.dumps({"Layers": ["/layer1/SampleMask"], "Bindings": []}))
    with pytest.raises(SSIError, match="no layer list"):
        parse_engine_json("{}")


def test_metadata_with_fused_nodes():
    j = {"Layers": [_layer("fused", "PluginV3", ["/a", "/layer1/SampleMask"])]}
    assert parse_engine_json(j)[0].onnx_nodes == ["/a", "/layer1/SampleMask"]
    assert check_plugin_layers(j, ["/layer1/SampleMask"]).ok


def _build(args, capsys):
    rc = cli_main(["build", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------------------------------------
# build: success paths


def test_build_success_strips_functions_and_checks_plugins(fake_env, ssi_onnx, capsys):
    engine = fake_env.tmp / "out" / "model.plan"
    cache = fake_env.tmp / "timing.cache"
    rc, out, err = _build([str(ssi_onnx), "--engine", str(engine), "--shapes",
                           "logits:1x1x64x64,1x1x128x128,2x1x256x256", "--workspace", "512",
                           "--timing-cache", str(cache)], capsys)
    assert rc == 0, err
    assert engine.read_bytes().startswith(b"PLAN")
    calls = fake_env.trt.calls
    assert calls["parsed_model"].functions == []  # reference bodies removed before parsing
    cfg = calls["config"]
    assert cfg.profiling_verbosity == fake_env.trt.ProfilingVerbosity.DETAILED
    assert cfg.pools[fake_env.trt.MemoryPoolType.WORKSPACE] == 512 << 20
    assert cfg.profiles[0].shapes["logits"] == ((1, 1, 64, 64), (1, 1, 128, 128), (2, 1, 256, 256))
    assert fake_env.trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE in calls["parser_flags"]
    assert calls["network_flags"] == 1 << int(fake_env.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert cache.read_bytes() == b"CACHE"
    assert "SSI layers  3 SSI node(s) -> plugin layers" in out
    assert "Building engine (2 steps)" in err and "Tactic selection (3 steps)" in err  # progress
    assert "Building engine done" in err
    from ssi_deploy.backends.tensorrt_backend import engine_metadata
    meta = engine_metadata(engine)
    assert meta["onnx"] == str(ssi_onnx.resolve()) and meta["precision"] == "fp32"
    assert meta["profiles"]["logits"]["max"] == [2, 1, 256, 256]
    assert meta["plugin_layers"] == {n: n for n in NODES} and meta["dense"] is False
    assert engine_metadata(fake_env.tmp / "other.plan") is None


def test_build_fp16_on_tensorrt10_sets_builder_flag(fake_env, ssi_onnx, capsys):
    engine = fake_env.tmp / "m.plan"
    rc, out, err = _build([str(ssi_onnx), "--engine", str(engine), "--precision", "fp16",
                           "--shapes", "logits:1x1x64x64"], capsys)
    assert rc == 0, err
    cfg = fake_env.trt.calls["config"]
    assert fake_env.trt.BuilderFlag.FP16 in cfg.flags
    assert fake_env.trt.calls["network_flags"] == 0  # weakly typed, so the flag is allowed
    assert "fp16" in out


def test_build_fp16_onnx_on_tensorrt10_is_strongly_typed(fake_env, capsys):
    fp16 = fake_env.tmp / "fp16.onnx"
    onnx.save(_ssi_model(dtype=TensorProto.FLOAT16), fp16)
    rc, out, err = _build([str(fp16), "--engine", str(fake_env.tmp / "h.plan"),
                           "--shapes", "logits:1x1x64x64"], capsys)
    assert rc == 0, err
    assert "fp16" in out  # precision follows the model's dtype
    calls = fake_env.trt.calls
    assert calls["network_flags"] == 1 << int(fake_env.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert fake_env.trt.BuilderFlag.FP16 not in calls["config"].flags


def test_build_version_compatible_embeds_plugins(fake_env, ssi_onnx, capsys):
    engine = fake_env.tmp / "vc.plan"
    rc, out, err = _build([str(ssi_onnx), "--engine", str(engine), "--version-compatible",
                           "--shapes", "logits:1x1x64x64"], capsys)
    assert rc == 0, err
    cfg = fake_env.trt.calls["config"]
    assert fake_env.trt.BuilderFlag.VERSION_COMPATIBLE in cfg.flags
    assert cfg.plugins_to_serialize == [str(fake_env.lib.resolve())]
    assert fake_env.trt.calls["host_code_allowed"] is True
    assert "version-compatible plan" in out


def test_build_progress_heartbeat_without_progress_monitor(monkeypatch, fake_env, ssi_onnx, capsys):
    """TensorRT versions without IProgressMonitor get periodic 'building ...' lines."""
    import time as _t

    from ssi_deploy.tensorrt import builder as builder_mod
    old = make_fake_trt()
    del old.IProgressMonitor
    slow = old.Builder.build_serialized_network
    old.Builder.build_serialized_network = lambda self, n, c: (_t.sleep(0.3), slow(self, n, c))[1]
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    monkeypatch.setattr(builder_mod, "HEARTBEAT_S", 0.05)
    rc, out, err = _build([str(ssi_onnx), "--engine", str(fake_env.tmp / "m.plan"),
                           "--shapes", "logits:1x1x64x64"], capsys)
    assert rc == 0, err
    assert err.count("building ... ") >= 2


def test_build_dense_baseline(fake_env, capsys):
    p = fake_env.tmp / "dense.onnx"
    onnx.save(_dense_model(), p)
    rc, out, err = _build([str(p), "--engine", str(fake_env.tmp / "d.plan"), "--dense"], capsys)
    assert rc == 0, err
    assert "SSI layers" not in out


def test_build_finds_plugin_library_installed_with_package(fake_env, ssi_onnx, capsys, monkeypatch):
    monkeypatch.delenv(plugins_mod.ENV_VAR)
    libdir = fake_env.tmp / "pkglib"
    libdir.mkdir()
    shutil.copy(fake_env.lib, libdir / plugins_mod.LIBRARY_NAME)
    monkeypatch.setattr(plugins_mod, "PACKAGE_LIB_DIR", libdir)
    monkeypatch.setattr(plugins_mod, "SOURCE_BUILD_DIR", fake_env.tmp / "nobuild")
    assert plugins_mod.find_plugin_library() == (libdir / plugins_mod.LIBRARY_NAME).resolve()
    rc, out, err = _build([str(ssi_onnx), "--engine", str(fake_env.tmp / "m.plan"),
                           "--shapes", "logits:1x1x64x64"], capsys)
    assert rc == 0, err
    assert str(libdir / plugins_mod.LIBRARY_NAME) in out


# ---------------------------------------------------------------------------------------------
# build: every error is one line, exit code 2, no engine written


def _assert_error(rc, err, *fragments):
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[-1], (f, lines[-1])


def test_build_without_tensorrt(no_real_trt, ssi_onnx, tmp_path, capsys):
    rc, out, err = _build([str(ssi_onnx), "--engine", str(tmp_path / "m.plan")], capsys)
    _assert_error(rc, err, "needs TensorRT", "not installed", "Docker image", "docs/docker.md")


def test_build_with_a_tensorrt_that_does_not_import(no_real_trt, monkeypatch, ssi_onnx, tmp_path, capsys):
    """A `tensorrt` package whose libraries are missing: say so, not just 'not installed'."""
    class _Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorrt":
                import importlib.machinery
                return importlib.machinery.ModuleSpec(name, self)
            return None

        def create_module(self, spec):
            raise OSError("libnvinfer.so.10: cannot open shared object file: No such file or directory")

        def exec_module(self, module):
            pass

    monkeypatch.delitem(sys.modules, "tensorrt")
    monkeypatch.setattr(sys, "meta_path", [_Finder(), *sys.meta_path])
    rc, out, err = _build([str(ssi_onnx), "--engine", str(tmp_path / "m.plan")], capsys)
    _assert_error(rc, err, "`tensorrt` is installed but does not import (libnvinfer.so.10: cannot open",
                  "Docker image")


def test_build_with_only_the_lean_runtime(no_real_trt, monkeypatch, ssi_onnx, tmp_path, capsys):
    lean = make_fake_trt("11.4.0")
    del lean.Builder, lean.OnnxParser
    monkeypatch.setitem(sys.modules, "tensorrt_lean", lean)
    rc, out, err = _build([str(ssi_onnx), "--engine", str(tmp_path / "m.plan")], capsys)
    _assert_error(rc, err, "needs the full TensorRT library", "only the lean runtime 11.4.0",
                  "Docker image")


def test_build_without_gpu(fake_env, monkeypatch, ssi_onnx, capsys):
    monkeypatch.setattr(gpu_mod, "_load_libcuda", lambda: None)
    rc, out, err = _build([str(ssi_onnx), "--engine", str(fake_env.tmp / "m.plan"),
                           "--shapes", "logits:1x1x64x64"], capsys)
    _assert_error(rc, err, "needs an NVIDIA GPU", "no NVIDIA driver", "Docker image")
    assert not (fake_env.tmp / "m.plan").exists()


def test_build_onnx_without_ssi_nodes(fake_env, capsys):
    p = fake_env.tmp / "dense.onnx"
    onnx.save(_dense_model(), p)
    rc, out, err = _build([str(p), "--engine", str(fake_env.tmp / "m.plan")], capsys)
    _assert_error(rc, err, "has no SSI nodes", "ssi-deploy export", "--dense")


def test_build_missing_onnx_and_bad_onnx(fake_env, capsys):
    rc, out, err = _build([str(fake_env.tmp / "nope.onnx"), "--engine", "x.plan"], capsys)
    _assert_error(rc, err, "nope.onnx does not exist")
    bad = fake_env.tmp / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    rc, out, err = _build([str(bad), "--engine", "x.plan"], capsys)
    _assert_error(rc, err, "is not a readable ONNX model")


def test_build_missing_plugin_library(fake_env, ssi_onnx, capsys, monkeypatch):
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan", "--plugins", "/no/such/lib.so"], capsys)
    _assert_error(rc, err, "plugin library /no/such/lib.so (--plugins) does not exist", "make plugins")
    monkeypatch.setenv(plugins_mod.ENV_VAR, "/no/env/lib.so")
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan"], capsys)
    _assert_error(rc, err, "from $SSI_PLUGIN_LIBRARY) does not exist")
    monkeypatch.delenv(plugins_mod.ENV_VAR)
    monkeypatch.setattr(plugins_mod, "PACKAGE_LIB_DIR", fake_env.tmp / "none")
    monkeypatch.setattr(plugins_mod, "SOURCE_BUILD_DIR", fake_env.tmp / "nobuild")
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan"], capsys)
    _assert_error(rc, err, "libssi_trt_plugins.so was not found", "make plugins")


def test_build_plugin_library_that_is_not_a_plugin_library(fake_env, ssi_onnx, capsys):
    junk = fake_env.tmp / "libjunk.so"
    junk.write_bytes(b"ELF not a plugin library")
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan", "--plugins", str(junk)], capsys)
    _assert_error(rc, err, "could not be loaded by TensorRT", "another TensorRT major version")


def test_build_plugin_library_of_another_version(fake_env, ssi_onnx, capsys):
    old = fake_env.tmp / "libold.so"
    old.write_bytes(b"OLD plugin library")
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan", "--plugins", str(old)], capsys)
    _assert_error(rc, err, "is incompatible", "SampleMask, SparseConv2d, GaussianInterp",
                  "SampleMask v0 ns 'ssi'")


def test_build_refuses_engine_without_plugin_layers(monkeypatch, fake_env, ssi_onnx, capsys):
    broken = make_fake_trt(inline_functions=True)
    monkeypatch.setitem(sys.modules, "tensorrt", broken)
    engine = fake_env.tmp / "m.plan"
    rc, out, err = _build([str(ssi_onnx), "--engine", str(engine), "--shapes", "logits:1x1x64x64"], capsys)
    _assert_error(rc, err, "no plugin layer for 3 of 3 SSI node(s)", "dense reference body")
    assert not engine.exists()


def test_build_failure_reports_tensorrt_error(monkeypatch, fake_env, ssi_onnx, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(build_fails=True))
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan", "--shapes", "logits:1x1x64x64"], capsys)
    _assert_error(rc, err, "could not build the engine", "could not find any implementation")


def test_build_parser_failure_names_the_node(fake_env, capsys):
    m = _ssi_model()
    m.graph.node[3].op_type = "Unsupported"
    p = fake_env.tmp / "bad_op.onnx"
    onnx.save(m, p)
    rc, out, err = _build([str(p), "--engine", "x.plan", "--shapes", "logits:1x1x64x64"], capsys)
    _assert_error(rc, err, "TensorRT could not parse", "node /layer1/Relu (Unknown): No importer "
                  "registered for op: Unsupported")


def test_build_dynamic_input_without_shapes(fake_env, ssi_onnx, capsys):
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan"], capsys)
    _assert_error(rc, err, "input 'logits' has dynamic dimensions", "--shapes logits:MIN,OPT,MAX")


def test_build_fp16_on_tensorrt11_needs_fp16_onnx(monkeypatch, fake_env, ssi_onnx, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("11.4.0"))
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan", "--precision", "fp16",
                           "--shapes", "logits:1x1x64x64"], capsys)
    _assert_error(rc, err, "TensorRT 11+ needs an fp16 ONNX model", "strongly typed")
    fp16 = fake_env.tmp / "fp16.onnx"
    onnx.save(_ssi_model(dtype=TensorProto.FLOAT16), fp16)
    engine = fake_env.tmp / "fp16.plan"
    rc, out, err = _build([str(fp16), "--engine", str(engine), "--precision", "fp16",
                           "--shapes", "logits:1x1x64x64"], capsys)
    assert rc == 0, err
    assert "fp16" in out
    trt11 = sys.modules["tensorrt"]
    assert trt11.calls["network_flags"] == 0  # TensorRT 11: always strongly typed, no flag
    assert trt11.calls["config"].flags == set()  # and no FP16 builder flag (it does not exist)
    rc, out, err = _build([str(fp16), "--engine", "x.plan", "--precision", "fp32"], capsys)
    _assert_error(rc, err, "--precision fp32 but the ONNX model's inputs are float16")


def test_build_bad_arguments(fake_env, ssi_onnx, capsys):
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan", "--shapes", "logits"], capsys)
    _assert_error(rc, err, "expected NAME:MIN,OPT,MAX")
    rc, out, err = _build([str(ssi_onnx), "--engine", "x.plan", "--workspace", "0"], capsys)
    _assert_error(rc, err, "--workspace must be a positive number of MiB")


def test_build_node_asks_for_other_plugin_version(fake_env, capsys):
    m = _ssi_model()
    for a in m.graph.node[0].attribute:
        if a.name == "plugin_version":
            a.s = b"7"
    p = fake_env.tmp / "v7.onnx"
    onnx.save(m, p)
    rc, out, err = _build([str(p), "--engine", "x.plan", "--shapes", "logits:1x1x64x64"], capsys)
    _assert_error(rc, err, "node /layer1/SampleMask asks for plugin SampleMask version 7")


# ---------------------------------------------------------------------------------------------
# TensorRT backend (engine load, I/O, profile, timing, layers) through the fake library


def _plan(tmp_path, body: bytes = b"PLAN") -> Path:
    p = tmp_path / "m.plan"
    p.write_bytes(body + _engine_json().encode() if body == b"PLAN" else body)
    return p


def test_backend_runs_times_and_profiles(fake_env):
    from ssi_deploy.backends.tensorrt_backend import TensorRTBackend, is_engine_path
    assert is_engine_path("a/m.plan") and is_engine_path("m.engine") and not is_engine_path("m.onnx")
    dev = _HostDevice()
    be = TensorRTBackend(_plan(fake_env.tmp), device=dev)
    assert be.input_names == ["logits"] and be.output_names == ["dense"]
    assert be.input_shapes == {"logits": (None, 1, None, None)}
    x = np.arange(1 * 1 * 32 * 32, dtype=np.float32).reshape(1, 1, 32, 32)
    out = be.run({"logits": x})
    np.testing.assert_array_equal(out["dense"], 2 * x)
    # a second shape within the profile re-allocates
    x2 = np.ones((2, 1, 16, 64), np.float32)
    np.testing.assert_array_equal(be.run({"logits": x2})["dense"], 2 * x2)
    timing = be.time({"logits": x}, warmup_ms=0, iterations=5)
    assert len(timing.latencies_ms) == 5 and all(t >= 0 for t in timing.latencies_ms)
    assert dev.captured and be.info()["cuda_graph"] is True
    times = be.layer_times({"logits": x}, iterations=3)
    assert times == {"/layer1/SampleMask": 0.25, "/layer1/Relu": 0.5}
    layers = be.layers()
    assert [lay.name for lay in layers if lay.is_plugin] == NODES
    assert be.describe()["backend"] == "tensorrt"
    be.close()


def test_engine_for_onnx_builds_once_and_maps_back(fake_env, ssi_onnx, capsys):
    from ssi_deploy.backends.tensorrt_backend import engine_for_onnx, onnx_for_engine
    plan = engine_for_onnx(ssi_onnx, input_shape=(1, 1, 64, 64))
    assert plan == ssi_onnx.with_suffix(".plan") and plan.is_file()
    stamp = plan.stat().st_mtime_ns
    assert engine_for_onnx(ssi_onnx, input_shape=(1, 1, 64, 64)) == plan
    assert plan.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert onnx_for_engine(plan) == ssi_onnx.resolve()
    engine_for_onnx(ssi_onnx, input_shape=(1, 1, 96, 96))  # outside the fixed profile: rebuilt
    cfg = fake_env.trt.calls["config"]
    assert cfg.profiles[0].shapes["logits"][2] == (1, 1, 96, 96)
    dense = fake_env.tmp / "dense.onnx"
    onnx.save(_dense_model(), dense)
    assert engine_for_onnx(dense).is_file()  # no SSI nodes: built as a dense baseline
    with pytest.raises(SSIError, match=r"cannot tell which ONNX file.*no x.plan.json beside it"):
        onnx_for_engine(fake_env.tmp / "x.plan")


def test_backend_shape_outside_profile_and_wrong_inputs(fake_env):
    from ssi_deploy.backends.tensorrt_backend import TensorRTBackend
    be = TensorRTBackend(_plan(fake_env.tmp), device=_HostDevice())
    with pytest.raises(SSIError, match=r"input 'logits' has shape 1x1x128x128, outside the engine's "
                                       r"profile \(min 1x1x16x16, max 2x1x64x64\)"):
        be.run({"logits": np.zeros((1, 1, 128, 128), np.float32)})
    with pytest.raises(SSIError, match=r"takes inputs logits; missing \['logits'\], unknown \['x'\]"):
        be.run({"x": np.zeros((1, 1, 32, 32), np.float32)})


def test_backend_engine_of_another_version(fake_env):
    from ssi_deploy.backends.tensorrt_backend import TensorRTBackend
    with pytest.raises(SSIError, match="built with another TensorRT version.*TensorRT 10.13.0.*"
                                       "rebuild it here with `ssi-deploy build`"):
        TensorRTBackend(_plan(fake_env.tmp, b"PLANv9 old"), device=_HostDevice())


def test_backend_engine_needing_missing_plugin(fake_env, monkeypatch):
    from ssi_deploy.backends.tensorrt_backend import TensorRTBackend
    monkeypatch.delenv(plugins_mod.ENV_VAR)
    monkeypatch.setattr(plugins_mod, "PACKAGE_LIB_DIR", fake_env.tmp / "none")
    monkeypatch.setattr(plugins_mod, "SOURCE_BUILD_DIR", fake_env.tmp / "nobuild")
    with pytest.raises(SSIError, match="needs a plugin TensorRT cannot find.*no SSI plugin library "
                                       "was loaded.*--plugins"):
        TensorRTBackend(_plan(fake_env.tmp, b"PLANplugin"), device=_HostDevice())


def test_backend_errors_without_tensorrt_gpu_or_file(no_real_trt, monkeypatch, tmp_path):
    from ssi_deploy.backends.tensorrt_backend import TensorRTBackend
    plan = _plan(tmp_path)
    with pytest.raises(SSIError, match="engine file .*nope.plan does not exist"):
        TensorRTBackend(tmp_path / "nope.plan")
    with pytest.raises(SSIError, match="running a TensorRT engine needs TensorRT.*Docker image"):
        TensorRTBackend(plan)
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt())
    monkeypatch.setattr(gpu_mod, "_load_libcuda", lambda: None)
    with pytest.raises(SSIError, match="running a TensorRT engine needs an NVIDIA GPU"):
        TensorRTBackend(plan)


def test_lean_runtime_deserialize_hint():
    from ssi_deploy.backends.tensorrt_backend import explain_deserialize_failure
    e = explain_deserialize_failure(["The engine plan file is not compatible with this version of "
                                     "TensorRT, expecting library version 11.4.0.106 got 10.13.0.35, "
                                     "please rebuild."], "m.plan", None, "11.4.0.106", "lean")
    assert "lean runtime only loads version-compatible plans" in str(e)
    e = explain_deserialize_failure([], "m.plan", None, "10.13", "full")
    assert str(e) == "TensorRT could not load engine m.plan: no message from TensorRT"


# ---------------------------------------------------------------------------------------------
# GPU probe and doctor


def test_probe_gpu_reads_the_driver():
    info = gpu_mod.probe_gpu(lambda: _FakeLibcuda())
    assert info.available and info.name == "NVIDIA H100 80GB HBM3"
    assert info.driver_version == "13.0" and info.compute_capability == "9.0"
    assert not gpu_mod.probe_gpu(lambda: _FakeLibcuda(gpus=0)).available
    assert "libcuda.so.1 not found" in gpu_mod.probe_gpu(lambda: None).reason


def test_doctor_lines(fake_env, capsys):
    rc = cli_main(["doctor"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    lines = {line.split()[1]: line for line in out.out.splitlines() if line[:4] in ("ok  ", "warn", "FAIL")}
    assert lines["gpu"].startswith("ok") and "NVIDIA H100" in lines["gpu"] and "CUDA 13.0" in lines["gpu"]
    assert lines["tensorrt"].startswith("ok") and "full 10.13.0" in lines["tensorrt"]
    assert "CPUExecutionProvider" in lines["onnxruntime"]
    plugin_lines = [ln for ln in out.out.splitlines() if "plugin" in ln]
    assert any(str(fake_env.lib.resolve()) in ln for ln in plugin_lines)
    assert any("SampleMask v1" in ln and "GaussianInterp v1" in ln for ln in plugin_lines)


def test_doctor_failures_say_what_to_do(no_real_trt, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_mod, "_load_libcuda", lambda: None)
    monkeypatch.delenv(plugins_mod.ENV_VAR, raising=False)
    monkeypatch.setattr(plugins_mod, "PACKAGE_LIB_DIR", tmp_path / "none")
    monkeypatch.setattr(plugins_mod, "SOURCE_BUILD_DIR", tmp_path / "nobuild")
    rc = cli_main(["doctor"])
    out = capsys.readouterr()
    assert rc == 1
    fails = [ln for ln in out.out.splitlines() if ln.startswith("FAIL")]
    assert {ln.split()[1] for ln in fails} == {"gpu", "tensorrt", "plugin"}
    assert all(" -> " in ln for ln in fails)
    assert out.err.strip() == "error: 3 of 7 checks failed: gpu, tensorrt, plugin library"


# ---------------------------------------------------------------------------------------------
# The real lean runtime (pip: tensorrt-lean-cu13-bindings / -libs): its plugin registry works
# without a GPU.


def _lean():
    found = trt_mod.find_tensorrt()
    if found is None or found.flavour != "lean":
        pytest.skip("TensorRT lean runtime not installed (pip install 'ssi-deploy[tensorrt]')")
    return found


def test_lean_runtime_is_found_and_cannot_build():
    found = _lean()
    assert found.major >= 10
    assert trt_mod.require_runtime().flavour == "lean"
    with pytest.raises(SSIError, match="only the lean runtime"):
        trt_mod.require_builder()


def test_lean_registry_rejects_a_library_that_is_not_a_plugin_library(tmp_path):
    found = _lean()
    registry = found.module.get_plugin_registry()
    assert plugins_mod.list_creators(registry)  # TensorRT's own creators
    libm = next((p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                             "/lib64/libm.so.6") if Path(p).exists()), None)
    if libm is None:
        pytest.skip("no libm.so.6 to use as a non-plugin shared library")
    with pytest.raises(SSIError, match="could not be loaded by TensorRT"):
        plugins_mod.load_plugin_library(registry, libm)


def test_lean_registry_loads_the_ssi_plugin_library():
    found = _lean()
    lib = plugins_mod.find_plugin_library(required=False)
    if lib is None:
        pytest.skip("SSI plugin library not built (make plugins) and SSI_PLUGIN_LIBRARY unset")
    registry = found.module.get_plugin_registry()
    _, creators = plugins_mod.load_plugin_library(registry, lib)
    assert sorted(c.name for c in creators) == sorted(contract.PLUGIN_OPS)
    assert all(c.version == contract.PLUGIN_VERSION for c in creators)
    # loading twice in one process is accepted (creators already registered)
    _, again = plugins_mod.load_plugin_library(registry, lib)
    assert sorted(c.name for c in again) == sorted(contract.PLUGIN_OPS)
    # a creator builds a plugin from the contract's default fields
    trt = found.module
    creator = registry.get_creator("SampleMask", contract.PLUGIN_VERSION, contract.PLUGIN_NAMESPACE)
    fields = [trt.PluginField(a.name, np.array([a.default], np.int32 if a.type == "int" else np.float32),
                              trt.PluginFieldType.INT32 if a.type == "int" else trt.PluginFieldType.FLOAT32)
              for a in contract.SAMPLE_MASK.attributes]
    plugin = creator.create_plugin("m", trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD)
    assert plugin is not None


@pytest.fixture(scope="module")
def block_onnx(tmp_path_factory) -> Path:
    """A block-form export (module scope: made before the fake TensorRT is installed)."""
    from ssi_deploy.export import export_onnx
    from ssi_deploy.models import create_model

    return export_onnx(create_model("sparse_resnet50"), tmp_path_factory.mktemp("block") /
                       "block.onnx", input_shape=(1, 3, 64, 64), dynamic=None)


def test_build_accepts_the_block_form(block_onnx, fake_env, tmp_path, capsys):
    """The default export (one SSIBottleneck node per block) builds: every SSIBottleneck node
    finds its creator and becomes one plugin layer, and the sidecar says so."""
    engine = tmp_path / "m.plan"
    rc, out, err = _build([str(block_onnx), "--engine", str(engine)], capsys)
    assert rc == 0, err
    assert engine.read_bytes().startswith(b"PLAN")
    assert "SSI layers  16 SSI node(s) -> plugin layers" in out
    parsed = fake_env.trt.calls["parsed_model"]
    assert {n.op_type for n in parsed.graph.node if n.domain == contract.DOMAIN} == {"SSIBottleneck"}
    assert not [f for f in parsed.functions if f.domain == contract.DOMAIN]  # bodies stripped
    meta = json.loads((tmp_path / "m.plan.json").read_text())
    assert sorted(set(meta["ssi_nodes"].values())) == ["SSIBottleneck"]
    assert len(meta["ssi_nodes"]) == 16 and meta["plugin_layers"].keys() == meta["ssi_nodes"].keys()


def test_build_refuses_an_op_without_plugin_before_any_work(fake_env, ssi_onnx, tmp_path,
                                                            monkeypatch, capsys):
    """A contract op marked has_plugin=False (none today) is refused in one line before
    TensorRT is touched: no engine and no sidecar written."""
    import dataclasses

    ops = dict(contract.OPS)
    ops["SparseConv2d"] = dataclasses.replace(ops["SparseConv2d"], has_plugin=False)
    monkeypatch.setattr(contract, "OPS", ops)
    engine = tmp_path / "m.plan"
    rc, _, err = _build([str(ssi_onnx), "--engine", str(engine), "--shapes", "logits:1x1x64x64"],
                        capsys)
    _assert_error(rc, err, "1 SparseConv2d", "no TensorRT plugin")
    assert len(err.strip().splitlines()) == 1
    assert "parsed_model" not in fake_env.trt.calls
    assert not engine.exists() and not (tmp_path / "m.plan.json").exists()
