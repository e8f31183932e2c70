"""validate never passes a broken model nor fails an honest one (sparse_resnet50, 64x64, CPU).

Honest differences are made by editing a mask conv's bias in the exported file by just enough
to flip the one decision nearest its threshold: ONNX Runtime then takes one different sampling
decision, which cascades through every later block, exactly as a rounding difference between
two runtimes does. Defects are edits a user or a bug could make: a weight, a sigma, a sampling
attribute, a NaN.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ssi_deploy.backends.torch_backend import TorchBackend
from ssi_deploy.cli.main import main as cli_main
from ssi_deploy.errors import SSIError, ValidationFailed
from ssi_deploy.export import export_onnx
from ssi_deploy.models import create_model
from ssi_deploy.validation import inputs as I
from ssi_deploy.validation.compare import Tolerances, decision_band
from ssi_deploy.validation.runner import validate

SHAPE = (1, 3, 64, 64)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("trust")
    model = create_model("sparse_resnet50")
    return {"masks": export_onnx(model, d / "s50.onnx", input_shape=SHAPE, dynamic=("batch",)),
            "no_masks": export_onnx(model, d / "s50_nomask.onnx", input_shape=SHAPE,
                                    dynamic=("batch",), expose_masks=False),
            "ops": export_onnx(model, d / "s50_ops.onnx", input_shape=SHAPE, dynamic=("batch",),
                               granularity="ops")}


def _edit(src, dst, change):
    model = onnx.load(str(src))
    change(model)
    onnx.save(model, str(dst))
    return dst


def _edit_manifest(src, dst, edit):
    """A copy of ``src`` whose manifest (JSON) went through ``edit(dict)``."""
    def change(m):
        for p in m.metadata_props:
            if p.key == "ssi.manifest":
                d = json.loads(p.value)
                edit(d)
                p.value = json.dumps(d)
    return _edit(src, dst, change)


def _set_initializer(model, name, fn):
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            new = numpy_helper.from_array(fn(numpy_helper.to_array(t).copy()), name)
            model.graph.initializer[i].CopyFrom(new)
            return
    raise KeyError(name)


def _set_attribute(model, op_type, index, name, value):
    nodes = [n for n in model.graph.node if n.op_type == op_type]
    for a in nodes[index].attribute:
        if a.name == name:
            if a.type == onnx.AttributeProto.FLOAT:
                a.f = value
            else:
                a.i = value
            return
    raise KeyError(name)


@pytest.fixture(scope="module")
def nearest_decision(exports):
    """(mask output, sampling layer, z) of an early decision nearest its threshold: the
    smallest |z| of its layer, well inside the error band, and the only one so near."""
    ref = TorchBackend.from_onnx(exports["masks"])
    x = I.random_input(SHAPE, 0)  # validate's default input for this file
    own = ref.run({"image": x})
    import torch
    names = ref.model.mask_names
    ref.model.set_mask_override([torch.from_numpy(own[n]) for n in names], record_decisions=True)
    ref.run({"image": x})
    records = ref.model.decision_records()
    tol = Tolerances.for_dtype("fp32").default
    for name, layer in zip(names, ref.model.sampling_layers):
        r = records[name]
        z = r["z"].numpy().ravel()
        band = np.broadcast_to(decision_band(r, tol), r["z"].shape).ravel()
        order = np.argsort(np.abs(z))
        first, second = order[0], order[1]
        if abs(z[first]) < 0.5 * band[first] and abs(z[second]) > 3 * abs(z[first]) > 0:
            return name, layer, float(z[first])
    pytest.skip("no isolated near-threshold decision in this model")


def _flip(src, dst, layer, shift):
    block, conv = layer.rsplit(".", 1)

    def change(m):
        names = {t.name for t in m.graph.initializer}
        bias = f"backbone.{block}.mask{conv[-1]}_bias"  # block form: the SSIBottleneck's input
        if bias not in names:  # ops form: the mask conv's parameter
            bias = f"backbone.{block}.conv{conv[-1]}_mask.bias"
        _set_initializer(m, bias, lambda b: b + np.float32(shift))
    return _edit(src, dst, change)


@pytest.mark.parametrize("which", ["masks", "no_masks", "ops"])
def test_one_honest_flip_passes_and_is_attributed(exports, nearest_decision, tmp_path, which):
    name, layer, z = nearest_decision
    path = _flip(exports[which], tmp_path / "flip.onnx", layer, -1.5 * z)  # just past 0
    r = validate(path, raise_on_fail=False)
    cmp = r.comparison
    assert r.passed, cmp.failures()
    assert cmp.free_running_masks is not None and cmp.first_flip == name
    judged = {m.name: m for m in cmp.masks}
    assert judged[name].differing == 1 and judged[name].near_threshold == 1
    assert sum(m.differing for m in cmp.masks) == 1  # the rest followed from it
    assert r.to_dict()["first_flip"] == name


def test_far_decisions_fail(exports, nearest_decision, tmp_path):
    _, layer, _ = nearest_decision
    path = _flip(exports["masks"], tmp_path / "far.onnx", layer, -3.0)
    r = validate(path, raise_on_fail=False)
    assert not r.passed
    assert any("far from the threshold" in f for f in r.comparison.failures())


def _block_conv2_weight(m, index):
    """The conv2 weight initializer of SSI block ``index`` (either form)."""
    blocks = [n for n in m.graph.node if n.op_type == "SSIBottleneck"]
    if blocks:
        return blocks[index].input[9]  # contract input conv2_weight
    return [n for n in m.graph.node if n.op_type == "SparseConv2d"][3 * index + 1].input[1]


@pytest.mark.parametrize("form", ["masks", "ops"])
@pytest.mark.parametrize("defect", ["weight", "sigma", "grid_interval"])
def test_real_defects_fail(exports, tmp_path, defect, form):
    def change(m):
        block = form == "masks"
        if defect == "weight":  # an altered conv2 weight of one block (1 %)
            _set_initializer(m, _block_conv2_weight(m, 4), lambda w: w * np.float32(1.01))
        elif defect == "sigma":
            _set_attribute(m, *(("SSIBottleneck", 4, "sigma2") if block else
                                ("GaussianInterp", 9, "sigma")), 3.3)
        else:  # (a mode or seed edit contradicts the manifest: refused before running)
            _set_attribute(m, *(("SSIBottleneck", 3, "grid_interval") if block else
                                ("SampleMask", 6, "grid_interval")), 0)
    path = _edit(exports[form], tmp_path / f"{defect}.onnx", change)
    r = validate(path, raise_on_fail=False)
    assert not r.passed, defect
    with pytest.raises(ValidationFailed):
        validate(path)


@pytest.mark.parametrize("form", ["masks", "ops"])
def test_nan_weight_fails_with_its_own_line(exports, tmp_path, capsys, form):
    def change(m):
        def nan(w):
            w.ravel()[0] = np.nan
            return w
        _set_initializer(m, _block_conv2_weight(m, 4), nan)
    path = _edit(exports[form], tmp_path / "nan.onnx", change)
    report = tmp_path / "v.json"
    rc = cli_main(["validate", str(path), "--report", str(report)])
    out = capsys.readouterr()
    assert rc == 1
    assert "non-finite values" in out.err and "NaN" in out.err
    data = json.loads(report.read_text())
    assert data["passed"] is False
    assert any("non-finite values" in f for f in data["failures"])


def test_bad_report_path_fails_before_work(exports, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    import ssi_deploy.backends.torch_backend as tb

    def no_build(*a, **k):
        raise AssertionError("the reference was built before the report path was checked")
    monkeypatch.setattr(tb.TorchBackend, "from_onnx", no_build)
    for bad in (tmp_path / "file" / "v.json", tmp_path, tmp_path / "missing" / "v.json"):
        rc = cli_main(["validate", str(exports["masks"]), "--report", str(bad)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error: --report"), err


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["sampling"].update(mode="fancy"), "sampling.mode"),
    (lambda d: d.update(precision="fp64"), "precision"),
    (lambda d: d["weights"].update(kind="checkpoint", sha256="xyz"), "weights.sha256"),
    (lambda d: d["preprocessing"].update(std=[1, 0, 1]), "preprocessing.std"),
    (lambda d: d.pop("outputs"), "outputs"),
    (lambda d: d["outputs"][0].update(kind="logits"), "outputs[0].kind"),
])
def test_edited_manifest_gives_one_line(exports, tmp_path, capsys, edit, field):
    path = _edit_manifest(exports["masks"], tmp_path / "edited.onnx", edit)
    rc = cli_main(["validate", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"manifest field {field}" in err[0], err


def test_manifest_that_is_not_json(exports, tmp_path):
    def change(m):
        for p in m.metadata_props:
            if p.key == "ssi.manifest":
                p.value = "{not json"
    path = _edit(exports["masks"], tmp_path / "junk.onnx", change)
    with pytest.raises(SSIError, match="not valid JSON"):
        validate(path)


@pytest.mark.slow
def test_fp16_export_with_fpn_passes(tmp_path):
    """The issue's second honest case: fp16 SparseResNet-50 + FPN at 64x64 failed on flips."""
    model = create_model("sparse_resnet50", with_fpn=True)
    path = export_onnx(model, tmp_path / "h.onnx", input_shape=SHAPE, dtype="fp16")
    r = validate(path, raise_on_fail=False)
    assert r.passed, r.comparison.failures()


@pytest.mark.parametrize("edit,words", [
    (lambda d: d.update(precision="fp16"), "precision fp16, the graph's input 'image' is fp32"),
    (lambda d: d.update(sparse=False),
     "sparse=false, the graph has 16 SampleMask or SSIBottleneck nodes"),
    (lambda d: d.update(semantics_version=1), "semantics v1"),
    (lambda d: d["sampling"].update(mode="stochastic"), "SSIBottleneck mode=0 but the manifest"),
    (lambda d: d["sampling"].update(seed=5), "SSIBottleneck seed=0 but the manifest"),
    (lambda d: d["sampling"].update(forced_density=0.5), "SSIBottleneck density=0.0 but the "
     "manifest samples with forced density 0.5"),
    (lambda d: d.update(granularity="ops"), "granularity ops, the graph is in block form"),
])
def test_manifest_contradicting_the_graph_is_refused(exports, tmp_path, capsys, edit, words):
    """A relabelled precision would loosen the tolerances tenfold; each contradiction between
    the manifest and the graph is one line before any work."""
    path = _edit_manifest(exports["masks"], tmp_path / "relabelled.onnx", edit)
    rc = cli_main(["validate", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "the manifest does not describe this graph" in err[0]
    assert words in err[0], err[0]


@pytest.mark.parametrize("form,op", [("masks", "SSIBottleneck"), ("ops", "SampleMask")])
def test_sampling_attribute_edited_on_one_node_is_refused(exports, tmp_path, capsys, form, op):
    path = _edit(exports[form], tmp_path / "mode.onnx",
                 lambda m: _set_attribute(m, op, 0, "mode", 1))
    rc = cli_main(["validate", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{op} mode=1 but the manifest" in err[0]


@pytest.mark.parametrize("args,words", [
    (["--short-side", "96"], "--short-side resizes an --image"),
    (["--image", "x.png", "--short-side", "-5"], "--short-side"),
    (["--image", "x.png", "--short-side", "0"], "--short-side"),
])
def test_short_side_mistakes(exports, capsys, args, words):
    rc = cli_main(["validate", str(exports["masks"]), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err
