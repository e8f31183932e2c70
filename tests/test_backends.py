"""The Backend interface on PyTorch and ONNX Runtime (CPU; small shapes)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ssi_deploy.backends.base import Backend
from ssi_deploy.backends.onnxruntime_backend import OnnxRuntimeBackend, choose_providers
from ssi_deploy.backends.registry import create_backend
from ssi_deploy.backends.torch_backend import TorchBackend, check_weights_match
from ssi_deploy.manifest import Weights
from ssi_deploy.errors import SSIError


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """y = relu(x) + b, z = x * 2: two named outputs, a static and a dynamic dim."""
    path = tmp_path_factory.mktemp("ort") / "tiny.onnx"
    b = helper.make_tensor("b", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "b"], ["y"]),
         helper.make_node("Mul", ["x", "two"], ["z"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4])], [b, two])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, path)
    return path


def test_onnxruntime_backend_interface(tiny_onnx):
    with OnnxRuntimeBackend(tiny_onnx, device="cpu") as be:
        assert isinstance(be, Backend) and be.name == "onnxruntime"
        assert be.input_names == ["x"] and be.output_names == ["y", "z"]
        assert be.input_shapes == {"x": ("n", 4)}
        assert be.describe()["providers"] == ["CPUExecutionProvider"]
        x = np.array([[-1.0, 0.5, -2.0, 3.0]], np.float32)
        out = be.run({"x": x})
        np.testing.assert_array_equal(out["y"], [[1.0, 2.5, 3.0, 7.0]])
        np.testing.assert_array_equal(out["z"], 2 * x)
        # float64 feeds are cast to the model's dtype
        assert be.run({"x": x.astype(np.float64)})["y"].dtype == np.float32
        t = be.time({"x": x}, warmup_ms=1, iterations=7)
        assert len(t.latencies_ms) == 7 and all(v > 0 for v in t.latencies_ms)
        t = be.time({"x": x}, warmup_ms=0, duration_s=0.05)
        assert len(t.latencies_ms) >= 1
        with pytest.raises(SSIError, match=r"do not match the model's inputs \['x'\]"):
            be.run({"input": x})


def test_onnxruntime_errors(tmp_path):
    with pytest.raises(SSIError, match="ONNX file not found"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(SSIError, match="onnxruntime cannot load"):
        OnnxRuntimeBackend(bad)
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(SSIError, match="unknown backend"):
        create_backend("nope", bad)
    with pytest.raises(SSIError, match="file not found"):
        create_backend("onnxruntime", tmp_path / "missing.onnx")


@pytest.fixture(scope="module")
def torch_backend():
    return TorchBackend.from_arch("sparse_resnet50", with_fpn=False, expose_masks=True)


def test_torch_backend_interface(torch_backend):
    be = torch_backend
    assert isinstance(be, Backend) and be.name == "torch"
    assert be.input_names == ["image"]
    names = be.output_names
    assert names[:4] == ["c2", "c3", "c4", "c5"]
    masks = [n for n in names if n.startswith("mask_")]
    assert len(masks) == 2 * (3 + 4 + 6 + 3) and masks[0] == "mask_layer1_0_mask1"
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    out = be.run({"image": x})
    assert list(out) == names
    assert out["c2"].shape == (1, 256, 16, 16) and out["c5"].shape == (1, 2048, 2, 2)
    assert out["mask_layer1_0_mask1"].shape == (1, 1, 16, 16)
    assert out["mask_layer2_0_mask2"].shape == (1, 1, 8, 8)  # strided block: output resolution
    dens = be.measured_densities()
    assert len(dens) == len(masks)
    np.testing.assert_allclose(dens["layer1.0.mask1"], (out["mask_layer1_0_mask1"] > 0).mean())
    # deterministic threshold mode: a second run gives the same outputs
    again = be.run({"image": x})
    for n in names:
        np.testing.assert_array_equal(out[n], again[n])
    t = be.time({"image": x}, warmup_ms=0, iterations=2)
    assert len(t.latencies_ms) == 2
    with pytest.raises(SSIError, match="do not match the model's inputs"):
        be.run({"x": x})
    assert be.describe()["model"]["arch"] == "sparse_resnet50"


class _M:  # the part of a Manifest that check_weights_match reads
    def __init__(self, weights):
        self.weights = weights


def test_checkpoint_matching(tmp_path):
    ck = tmp_path / "w.pth"
    ck.write_bytes(b"weights")
    import hashlib
    sha = hashlib.sha256(b"weights").hexdigest()
    from_ck, from_seed = _M(Weights("checkpoint", sha256=sha)), _M(Weights("random", seed=3))
    assert check_weights_match(from_ck, ck) is None
    assert check_weights_match(from_seed, None) == 3
    with pytest.raises(SSIError, match="checkpoint mismatch: .* random weights"):
        check_weights_match(from_seed, ck)
    with pytest.raises(SSIError, match="pass it with --checkpoint"):
        check_weights_match(from_ck, None)
    other = tmp_path / "other.pth"
    other.write_bytes(b"other weights")
    with pytest.raises(SSIError, match="checkpoint mismatch"):
        check_weights_match(from_ck, other)
    with pytest.raises(SSIError, match="checkpoint not found"):
        check_weights_match(from_ck, tmp_path / "nope.pth")
