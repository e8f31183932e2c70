"""The Faster R-CNN detector end to end: one ONNX export (random faster_rcnn_sparse_resnet50,
1x3x96x128, dynamic batch/height/width), its graph and manifest, ONNX Runtime against the
official PyTorch path, ``validate``, and the ``detect`` / ``eval`` commands (in process)."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ssi_deploy.cli.main import main
from ssi_deploy.detection.coco import COCO_CLASSES, METRICS, make_synthetic_coco
from ssi_deploy.export import export_onnx
from ssi_deploy.manifest import read_manifest
from ssi_deploy.models import create_model
from ssi_deploy.models.init import _smooth_image
from ssi_deploy.validation.detections import DetectionTolerance, compare_detections
from ssi_deploy.validation.runner import failure_message, validate

ARCH = "faster_rcnn_sparse_resnet50"
EXPORT_SHAPE = (1, 3, 96, 128)
NAMES = {"boxes": "boxes", "scores": "scores", "labels": "labels", "count": "num_detections"}
SCALE = "160x96"  # keeps the 96x128 synthetic images at scale 1


def run_main(*argv) -> tuple[int, str, str]:
    """``ssi-deploy ARGV`` in process (usable from module fixtures, without capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads oversubscribe (the legacy
    RoIAlign of the official path runs ~20x slower then)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(the PyTorch model, the ONNX file): exported once for the whole module."""
    model = create_model(ARCH, init_seed=0)
    path = tmp_path_factory.mktemp("det") / "frcnn_sr50.onnx"
    export_onnx(model, path, input_shape=EXPORT_SHAPE)
    return model, path


@pytest.fixture(scope="module")
def proto(exported):
    return onnx.load(str(exported[1]))


class TinyBackbone(nn.Module):
    """A two-level feature extractor without detection outputs (exports in seconds; the
    detect command must refuse any backbone export, whatever its size)."""

    output_names = ["c2", "c3"]

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w2 = nn.Parameter(torch.randn(8, 3, 3, 3, generator=g) * 0.3)
        self.w3 = nn.Parameter(torch.randn(8, 8, 3, 3, generator=g) * 0.2)

    def describe(self):
        return {"arch": "tiny_backbone", "with_fpn": False, "sparse": False,
                "sampling": "threshold", "seed": 0,
                "normalisation": {"mean": [123.675, 116.28, 103.53],
                                  "std": [58.395, 57.12, 57.375]},
                "init": "random seed 0"}

    def fuse_for_inference(self):
        return self

    def forward(self, x):
        c2 = F.relu(F.conv2d(x, self.w2, stride=4, padding=1))
        return c2, F.relu(F.conv2d(c2, self.w3, stride=2, padding=1))


@pytest.fixture(scope="module")
def backbone_onnx(tmp_path_factory):
    """A backbone-only export (no detection outputs)."""
    path = tmp_path_factory.mktemp("bb") / "tiny_backbone.onnx"
    export_onnx(TinyBackbone().eval(), path, input_shape=(1, 3, 64, 64), dynamic=None)
    assert not read_manifest(path).is_detector
    return path


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A synthetic COCO set: 3 images of 96x128 and their instances JSON."""
    ann = make_synthetic_coco(tmp_path_factory.mktemp("coco"), 3, seed=0, size=(96, 128))
    return ann, ann.parent / "images"


@pytest.fixture(scope="module")
def detect_runs(exported, coco, tmp_path_factory):
    """``detect`` on the image folder with the ONNX file (drawing too) and with --arch."""
    _, path = exported
    d = tmp_path_factory.mktemp("detect")
    runs = {}
    for name, source in (("onnx", ["--onnx", path]), ("arch", ["--arch", ARCH])):
        extra = ["--draw", d / "drawn"] if name == "onnx" else []
        rc, out, err = run_main("detect", coco[1], *source, "--test-scale", SCALE,
                                "--json", d / f"{name}.json", *extra)
        doc = json.loads((d / f"{name}.json").read_text()) if rc == 0 else None
        runs[name] = (rc, out, err, doc)
    runs["drawn"] = d / "drawn"
    return runs


# --------------------------------------------------------------------------------------------
# the file


def test_graph_has_the_standard_detection_ops(proto):
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["NonMaxSuppression"] == 2  # RPN and multiclass NMS
    assert ops["RoiAlign"] == 4  # P2..P5
    assert ops["TopK"] >= 2
    assert ops["SSIBottleneck"] == 16
    domains = {n.domain for n in proto.graph.node}
    domains |= {n.domain for f in proto.functions for n in f.node}
    domains |= {o.domain for o in proto.opset_import}
    assert "ssi_detect" not in domains
    for n in proto.graph.node:
        if n.op_type == "RoiAlign":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["coordinate_transformation_mode"] == b"half_pixel"
            assert attrs["mode"] == b"avg" and attrs["sampling_ratio"] == 2
            assert (attrs["output_height"], attrs["output_width"]) == (7, 7)
        if n.op_type == "NonMaxSuppression":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs.get("center_point_box", 0) == 0
    outs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert outs["labels"] == onnx.TensorProto.INT64
    assert outs["num_detections"] == onnx.TensorProto.INT64
    assert outs["boxes"] == outs["scores"] == onnx.TensorProto.FLOAT
    ins = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    assert ins == {"image": onnx.TensorProto.FLOAT, "image_info": onnx.TensorProto.FLOAT}


def test_manifest_describes_the_detector(exported):
    m = read_manifest(exported[1])
    assert m.arch == ARCH and m.with_fpn and m.sparse and m.is_detector
    assert m.weights.kind == "random" and m.weights.seed == 0
    assert [(i.name, i.kind, i.dtype) for i in m.inputs] == [("image", "image", "fp32"),
                                                           ("image_info", "image_info", "fp32")]
    assert tuple(m.inputs[1].shape) == ("batch", 3)
    dets = m.outputs_of_kind("detections")
    assert [(o.name, o.role, o.dtype) for o in dets] == [
        ("boxes", "boxes", "fp32"), ("scores", "scores", "fp32"), ("labels", "labels", "int64"),
        ("num_detections", "count", "int64")]
    assert tuple(dets[0].shape) == ("batch", 100, 4)
    assert m.detection_outputs == NAMES
    assert m.preprocessing.test_scale == (1667, 1000)
    assert m.preprocessing.channel_order == "RGB" and m.preprocessing.pad_multiple == 32
    assert m.detector["score_thr"] == 0.05
    assert m.detector["max_per_img"] == 100 and m.detector["nms_iou"] == 0.5
    assert set(m.dynamic) == {"batch", "height", "width"}
    assert tuple(m.example_shape) == EXPORT_SHAPE


# --------------------------------------------------------------------------------------------
# ONNX Runtime against the official PyTorch path


def test_onnxruntime_matches_the_official_path_at_another_shape(exported):
    model, path = exported
    x = _smooth_image(torch.Generator().manual_seed(7), (2, 3, 128, 160))
    info = torch.tensor([[128.0, 160.0, 1.0], [100.0, 150.0, 0.75]])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = sess.run(list(NAMES.values()), {"image": x.numpy(), "image_info": info.numpy()})
    del sess
    assert model.postprocess == "official"
    with torch.no_grad():
        ref = model(x, info)
    ref = {n: t.numpy() for n, t in zip(NAMES.values(), ref[:4])}
    test = dict(zip(NAMES.values(), got))
    assert test["boxes"].shape == (2, 100, 4) and test["labels"].dtype == np.int64
    assert int(ref["num_detections"].min()) > 0
    c = compare_detections(ref, test, NAMES, DetectionTolerance())
    assert c.passed, c.failure()
    assert c.recall_90 == 1.0, c.failure() or c.to_dict()
    # the second image's boxes are in its original pixels: clamped to 149 x 99, / 0.75
    k = int(test["num_detections"][1])
    assert test["boxes"][1, :k, [0, 2]].max() <= 149 / 0.75 + 1e-3
    assert test["boxes"][1, :k, [1, 3]].max() <= 99 / 0.75 + 1e-3


def test_validate_passes_with_a_detection_comparison(exported):
    result = validate(exported[1], raise_on_fail=False, device="cpu")
    assert result.passed, failure_message(result)
    dets = result.comparison.detections
    assert len(dets) == 1 and dets[0].passed and dets[0].ref_count > 0
    assert dets[0].recall_50 >= 0.98
    d = result.to_dict()
    assert d["detections"] and d["passed"] is True


def _fc_cls_initializer(model: onnx.ModelProto) -> onnx.TensorProto:
    """The fc_cls weight: the Gemm (or MatMul) whose output feeds the Softmax, else by shape."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        src = producers.get(node.input[0])
        while src is not None and src.op_type not in ("Gemm", "MatMul", "Add"):
            src = producers.get(src.input[0])
        if src is not None and src.op_type == "Add":  # MatMul + Add
            src = producers.get(src.input[0])
        if src is not None:
            for name in src.input[1:]:
                if name in inits and len(inits[name].dims) == 2:
                    return inits[name]
    shaped = [t for t in model.graph.initializer if tuple(t.dims) in ((81, 1024), (1024, 81))]
    assert len(shaped) == 1
    return shaped[0]


def test_validate_fails_after_altering_a_head_weight(exported, tmp_path):
    model = onnx.load(str(exported[1]))
    t = _fc_cls_initializer(model)
    assert sorted(t.dims) == [81, 1024]
    arr = numpy_helper.to_array(t).copy() * 1.5
    t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
    altered = tmp_path / "altered.onnx"
    onnx.save(model, str(altered))
    del model
    assert read_manifest(altered).weights.seed == 0  # the reference is the same random model
    result = validate(altered, raise_on_fail=False, device="cpu")
    assert not result.passed
    msg = failure_message(result)
    assert "\n" not in msg
    assert "recall" in msg or "score" in msg, msg
    assert not all(d.passed for d in result.comparison.detections)


# --------------------------------------------------------------------------------------------
# detect


def _as_outputs(doc: dict) -> dict[str, np.ndarray]:
    """The JSON of ``detect`` -> the fixed-size outputs of compare_detections."""
    n = len(doc["images"])
    k = max([len(i["detections"]) for i in doc["images"]] + [1])
    boxes, scores = np.zeros((n, k, 4)), np.zeros((n, k))
    labels, count = np.full((n, k), -1, np.int64), np.zeros(n, np.int64)
    for i, img in enumerate(doc["images"]):
        for j, d in enumerate(img["detections"]):
            boxes[i, j], scores[i, j], labels[i, j] = d["box"], d["score"], d["label"]
        count[i] = len(img["detections"])
    return {"boxes": boxes, "scores": scores, "labels": labels, "num_detections": count}


@pytest.mark.parametrize("source", ["onnx", "arch"])
def test_detect_writes_one_entry_per_image(detect_runs, coco, source):
    rc, out, err, doc = detect_runs[source]
    assert rc == 0, out + err
    images = sorted(p.name for p in coco[1].iterdir())
    assert [Path(i["image"]).name for i in doc["images"]] == images
    assert doc["test_scale"] == [160, 96]
    total = 0
    for entry in doc["images"]:
        assert (entry["height"], entry["width"]) == (96, 128) and entry["scale_factor"] == 1.0
        assert 0 < entry["mean_density"] < 1
        scores = [d["score"] for d in entry["detections"]]
        assert scores == sorted(scores, reverse=True)
        for d in entry["detections"]:
            assert len(d["box"]) == 4 and all(isinstance(v, float) for v in d["box"])
            assert isinstance(d["score"], float) and 0.05 < d["score"] <= 1
            assert isinstance(d["label"], int) and 0 <= d["label"] <= 79
            assert d["name"] == COCO_CLASSES[d["label"]]
            x1, y1, x2, y2 = d["box"]
            assert 0 <= min(x1, x2) and max(x1, x2) <= 127 and 0 <= min(y1, y2) and max(y1, y2) <= 95
        total += len(entry["detections"])
    assert total > 0
    assert "detections:" in out


def test_detect_sources_agree(detect_runs):
    a, b = detect_runs["arch"][3], detect_runs["onnx"][3]
    assert a is not None and b is not None
    c = compare_detections(_as_outputs(a), _as_outputs(b), NAMES, DetectionTolerance())
    assert c.passed, c.failure()
    assert c.recall_50 >= 0.98 and c.ref_count > 0


def test_detect_draws_one_png_per_image(detect_runs, coco):
    assert detect_runs["onnx"][0] == 0
    drawn = sorted(detect_runs["drawn"].iterdir())
    assert [p.name for p in drawn] == sorted(p.stem + ".png" for p in coco[1].iterdir())
    for p in drawn:
        img = cv2.imread(str(p))
        assert img is not None and img.shape == (96, 128, 3)


# --------------------------------------------------------------------------------------------
# user mistakes: one line, exit code 2, nothing written

def _assert_one_line_error(rc, out, err, needle, *unwritten):
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err + out
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    for p in unwritten:
        assert not Path(p).exists(), p


@pytest.fixture
def one_image(coco):
    return sorted(coco[1].iterdir())[0]


@pytest.mark.parametrize("args,needle", [
    ([], "give exactly one model"),
    (["--arch", ARCH, "--onnx", "{onnx}"], "give exactly one model"),
    (["--checkpoint", "{ckpt}"], "give exactly one model"),
    (["--checkpoint", "{ckpt}", "--onnx", "{onnx}"], "--checkpoint goes with --arch"),
    (["--arch", "sparse_resnet50"], "is a backbone"),
    (["--arch", "faster_rcnn_resnet999"], "unknown architecture"),
    (["--onnx", "{backbone}"], "backbone export without detection outputs"),
    (["--onnx", "{missing}"], "missing.onnx"),
    (["--arch", ARCH, "--test-scale", "big"], "--test-scale"),
    (["--arch", ARCH, "--test-scale", "0x96"], "--test-scale"),
    (["--arch", ARCH, "--draw", "{tmp}/out.txt"], "--draw"),
    (["--onnx", "{onnx}", "--sampling", "official"], "--sampling"),
    (["--arch", ARCH, "--engine", "{missing}"], "give exactly one model"),
])
def test_detect_user_mistakes(capsys, tmp_path, exported, backbone_onnx, one_image, args,
                              needle):
    ckpt = tmp_path / "ck.pth"
    ckpt.write_bytes(b"not used")
    fill = {"onnx": exported[1], "ckpt": ckpt, "backbone": backbone_onnx,
            "missing": tmp_path / "missing.onnx", "tmp": tmp_path}
    argv = [str(a).format(**fill) for a in args]
    out_json = tmp_path / "dets.json"
    rc, out, err = run_cli(capsys, "detect", one_image, *argv, "--json", out_json)
    _assert_one_line_error(rc, out, err, needle, out_json, tmp_path / "out.txt")


def test_detect_bad_json_suffix(capsys, tmp_path, one_image):
    rc, out, err = run_cli(capsys, "detect", one_image, "--arch", ARCH, "--json",
                           tmp_path / "dets.txt")
    _assert_one_line_error(rc, out, err, "must end in .json", tmp_path / "dets.txt")


def test_detect_usage_error_creates_no_draw_folder(capsys, tmp_path, coco):
    target = tmp_path / "drawn"
    rc, out, err = run_cli(capsys, "detect", coco[1], "--json", tmp_path / "dets.json",
                           "--draw", target)
    _assert_one_line_error(rc, out, err, "give exactly one model", tmp_path / "dets.json")
    assert not target.exists()


def test_detect_unreadable_image_in_a_folder_writes_nothing(capsys, tmp_path, coco):
    folder = tmp_path / "imgs"
    folder.mkdir()
    first = sorted(coco[1].iterdir())[0]
    (folder / first.name).write_bytes(first.read_bytes())
    (folder / "zz_broken.png").write_bytes(b"garbage, not a PNG")
    out_json, drawn = tmp_path / "dets.json", tmp_path / "drawn"
    rc, out, err = run_cli(capsys, "detect", folder, "--arch", ARCH, "--test-scale", SCALE,
                           "--json", out_json, "--draw", drawn)
    err = "\n".join(ln for ln in err.splitlines() if ln.strip() != "detecting")
    _assert_one_line_error(rc, out, err, "zz_broken.png", out_json)
    assert not drawn.exists() or list(drawn.iterdir()) == []


def _bad_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    garbage = folder / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    text = folder / "notes.png"
    text.write_bytes(b"this is not an image at all\n" * 10)
    floating = folder / "depth.tiff"  # one channel, 32-bit float
    assert cv2.imwrite(str(floating), np.random.default_rng(0).random((24, 32), np.float32))
    return {"garbage": garbage, "text": text, "float": floating}


@pytest.mark.parametrize("kind,needle", [("missing", "image or folder not found"),
                                         ("garbage", "garbage.png"),
                                         ("text", "notes.png"),
                                         ("float", "float")])
def test_detect_unreadable_images(capsys, tmp_path, kind, needle):
    bad = _bad_images(tmp_path / "bad")
    image = tmp_path / "nope.png" if kind == "missing" else bad[kind]
    out_json = tmp_path / "dets.json"
    rc, out, err = run_cli(capsys, "detect", image, "--arch", ARCH, "--test-scale", SCALE,
                           "--json", out_json, "--draw", tmp_path / "d.png")
    # the progress bar's label may precede the error on a non-terminal stderr
    err = "\n".join(ln for ln in err.splitlines() if ln.strip() != "detecting")
    _assert_one_line_error(rc, out, err, needle, out_json, tmp_path / "d.png")
    if kind != "missing":
        assert str(image) in err


# --------------------------------------------------------------------------------------------
# eval


def test_eval_reports_metrics_and_density(exported, coco, tmp_path):
    ann, images = coco
    report = tmp_path / "r.json"
    rc, out, err = run_main("eval", "--coco-annotations", ann, "--images", images, "--onnx",
                            exported[1], "--report", report, "--test-scale", SCALE)
    assert rc == 0, out + err
    doc = json.loads(report.read_text())
    assert doc["images"] == 3 and doc["test_scale"] == [160, 96]
    assert set(METRICS) <= set(doc["metrics"])
    for k in METRICS:
        v = doc["metrics"][k]
        assert isinstance(v, float) and (0.0 <= v <= 1.0 or v == -1.0), (k, v)
    assert 0 < doc["mean_density"] < 1
    assert {d["image_id"] for d in doc["detections"]} <= {1, 2, 3}
    assert "mAP" in out and "density" in out


def test_eval_limit(coco, tmp_path):
    ann, images = coco
    report = tmp_path / "r.json"
    rc, out, err = run_main("eval", "--coco-annotations", ann, "--images", images, "--arch", ARCH,
                            "--report", report, "--test-scale", SCALE, "--limit", "2")
    assert rc == 0, out + err
    doc = json.loads(report.read_text())
    assert doc["images"] == 2
    assert {d["image_id"] for d in doc["detections"]} <= {1, 2}
    for k in METRICS:
        v = doc["metrics"][k]
        assert 0.0 <= v <= 1.0 or v == -1.0


def _eval_case(tmp_path: Path, coco, kind: str) -> tuple[Path, Path]:
    ann, images = coco
    if kind == "missing_annotations":
        return tmp_path / "none.json", images
    if kind == "invalid_json":
        p = tmp_path / "bad.json"
        p.write_text('{"images": [1, 2,')
        return p, images
    if kind == "not_coco":
        p = tmp_path / "list.json"
        p.write_text("[1, 2, 3]")
        return p, images
    if kind == "missing_images":
        return ann, tmp_path / "no_such_folder"
    if kind == "missing_file":
        data = json.loads(ann.read_text())
        data["images"].append({"id": 99, "file_name": "ghost_000099.png", "height": 96,
                               "width": 128})
        p = tmp_path / "ghost.json"
        p.write_text(json.dumps(data))
        return p, images
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,needle", [
    ("missing_annotations", "annotation file not found"),
    ("invalid_json", "as JSON"),
    ("not_coco", "not a COCO instances file"),
    ("missing_images", "images folder not found"),
    ("missing_file", "ghost_000099.png"),
])
def test_eval_user_mistakes(capsys, tmp_path, coco, kind, needle):
    ann, images = _eval_case(tmp_path, coco, kind)
    report = tmp_path / "r.json"
    rc, out, err = run_cli(capsys, "eval", "--coco-annotations", ann, "--images", images,
                           "--arch", ARCH, "--report", report)
    _assert_one_line_error(rc, out, err, needle, report)


@pytest.mark.parametrize("args,report_name,needle", [
    (["--arch", ARCH], "r.txt", "must end in .json"),
    ([], "r.json", "give exactly one model"),
    (["--arch", "resnet50"], "r.json", "is a backbone"),
])
def test_eval_option_mistakes(capsys, tmp_path, coco, args, report_name, needle):
    ann, images = coco
    report = tmp_path / report_name
    rc, out, err = run_cli(capsys, "eval", "--coco-annotations", ann, "--images", images, *args,
                           "--report", report)
    _assert_one_line_error(rc, out, err, needle, report)
