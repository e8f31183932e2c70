"""The Faster R-CNN detector without export: registry, checkpoints, the official and the deploy
post-processing, the deploy ops against ONNX Runtime's operators and the mapping of the legacy
(mmdet 0.6) conventions onto them (``../shared/docs/detector-spec.md``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from ssi_deploy.detection import deploy_ops, deployed, legacy
from ssi_deploy.errors import SSIError
from ssi_deploy.models import (build_network, create_model, detect_arch, get_arch, list_models,
                               load_checkpoint, read_checkpoint)
from ssi_deploy.models.checkpoint import SSI_ONLY
from ssi_deploy.models import faster_rcnn
from ssi_deploy.models.faster_rcnn import FasterRCNN
from ssi_deploy.models.init import _smooth_image
from ssi_deploy.validation.detections import DetectionTolerance, compare_detections

ARCH = "faster_rcnn_sparse_resnet50"
BACKBONES = ("resnet50", "resnet101", "resnet101_dcn", "sparse_resnet50", "sparse_resnet101",
             "sparse_resnet101_dcn")
PREFIXES = {"backbone", "neck", "rpn_head", "bbox_head"}
# detector-spec.md, "Checkpoint keys of the heads" (each with .weight and .bias)
HEAD_SHAPES = {
    "rpn_head.rpn_conv": (256, 256, 3, 3),
    "rpn_head.rpn_cls": (3, 256, 1, 1),
    "rpn_head.rpn_reg": (12, 256, 1, 1),
    "bbox_head.shared_fcs.0": (1024, 12544),
    "bbox_head.shared_fcs.1": (1024, 1024),
    "bbox_head.fc_cls": (81, 1024),
    "bbox_head.fc_reg": (324, 1024),
}
IMAGE_SHAPE = (2, 3, 96, 128)
INFO = torch.tensor([[96.0, 128.0, 1.0], [80.0, 100.0, 0.8]])
NAMES = {"boxes": "boxes", "scores": "scores", "labels": "labels", "count": "num_detections"}
ORT_OPTIONS = ort.SessionOptions()
ORT_OPTIONS.intra_op_num_threads = 1
ORT_OPTIONS.inter_op_num_threads = 1


def as_outputs(dets) -> dict[str, np.ndarray]:
    return {n: t.detach().cpu().numpy() for n, t in zip(NAMES.values(), dets[:4])}


def head_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.startswith(("rpn_head.", "bbox_head."))}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads oversubscribe (the legacy
    RoIAlign of the official path runs ~20x slower then)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def detector():
    return create_model(ARCH, init_seed=0)


@pytest.fixture(scope="module")
def image():
    return _smooth_image(torch.Generator().manual_seed(3), IMAGE_SHAPE)


# name -> (image_info, fc_cls weight scales): 100 detections per image; fewer, different per
# image (class scores near the 0.05 cut); tiny resized images far inside the padded input
# (proposals clamped onto the border: degenerate boxes, IoU ties) and a scale factor > 1
SCENARIOS = {
    "saturated": (INFO, (1.0,)),
    # the count rises steeply with the scale (seed 0: 0/24, 12/67, 39/100 per image at 0.3,
    # 0.35, 0.4) and float rounding of the random model moves it: the first scale whose deploy
    # detections take the padding path (0 < count < 100, different per image) is used
    "sparse": (INFO, (0.35, 0.4, 0.3, 0.45, 0.25)),
    "clamped": (torch.tensor([[40.0, 50.0, 0.4], [1.0, 1.0, 2.5]]), (1.0,)),
}


def _pads(dets) -> bool:
    count = dets[3]
    return bool((count > 0).all() and (count < 100).all() and count[0] != count[1])


@pytest.fixture(scope="module")
def both_paths(detector, image):
    """Per scenario, the official and the deploy (eager) detections of the same two images."""
    out = {}
    w = detector.bbox_head.fc_cls.weight
    saved = w.detach().clone()
    try:
        for scenario, (info, cls_scales) in SCENARIOS.items():
            with torch.no_grad():
                for scale in cls_scales:
                    w.copy_(saved * scale)
                    deploy = detector.set_postprocess("deploy")(image, info)
                    if scenario != "sparse" or _pads(deploy):
                        break
                official = detector.set_postprocess("official")(image, info)
            out[scenario] = (official, deploy)
    finally:
        with torch.no_grad():
            w.copy_(saved)
        detector.set_postprocess("official")
    return out


@pytest.fixture(scope="module")
def official_ckpt(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "faster_rcnn.pth"
    sd = {k: v.clone() for k, v in detector.state_dict().items()}
    torch.save({"state_dict": sd, "meta": {"epoch": 12, "mmdet_version": "0.6.0"}}, path)
    return path, sd


# --------------------------------------------------------------------------------------------
# registry


def test_every_detector_arch_is_listed():
    archs = set(list_models())
    assert {f"faster_rcnn_{b}" for b in BACKBONES} <= archs
    for b in BACKBONES:
        spec = get_arch(f"faster_rcnn_{b}")
        assert spec.detector and spec.backbone_name == b
        assert not get_arch(b).detector
        assert spec.dense_name == "faster_rcnn_" + b.removeprefix("sparse_")
        assert get_arch(spec.dense_name).detector
    assert {a for a in archs if a.startswith("faster_rcnn_")} == {f"faster_rcnn_{b}"
                                                                   for b in BACKBONES}


@pytest.mark.parametrize("with_fpn", [False, True])
def test_detector_always_has_its_fpn(with_fpn):
    model = build_network(get_arch(ARCH), with_fpn=with_fpn)
    assert isinstance(model, FasterRCNN) and model.neck is not None and model.is_detector
    assert model.input_names == ["image", "image_info"]
    assert model.feature_names == ["boxes", "scores", "labels", "num_detections"]
    sd = model.state_dict()
    assert {k.split(".")[0] for k in sd} == PREFIXES
    heads = {k: tuple(v.shape) for k, v in sd.items() if k.startswith(("rpn_head.", "bbox_head."))}
    want = {f"{k}.weight": s for k, s in HEAD_SHAPES.items()}
    want.update({f"{k}.bias": (s[0],) for k, s in HEAD_SHAPES.items()})
    assert heads == want


def test_backbone_arch_cannot_be_a_detector():
    with pytest.raises(SSIError, match="faster_rcnn_sparse_resnet50"):
        FasterRCNN(get_arch("sparse_resnet50"))


# --------------------------------------------------------------------------------------------
# checkpoints


def test_official_checkpoint_loads_whole_and_detects_the_same(detector, official_ckpt, image,
                                                              both_paths):
    path, sd = official_ckpt
    loaded = create_model(ARCH, checkpoint=path)
    report = loaded.load_report
    assert report.format == "official"
    assert report.initialised == [] and report.ignored == ["meta"]
    for k, v in head_state(loaded).items():
        assert torch.equal(v, sd[k]), k
    with torch.no_grad():
        again = loaded(image, INFO)
    for a, b in zip(both_paths["saturated"][0], again):
        assert torch.equal(a, b)


def _one_line_error(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("key", ["rpn_head.rpn_cls.bias", "bbox_head.fc_cls.weight"])
def test_missing_head_key_is_one_line(official_ckpt, tmp_path, key):
    _, sd = official_ckpt
    bad = {k: v for k, v in sd.items() if k != key}
    path = tmp_path / "missing.pth"
    torch.save({"state_dict": bad}, path)
    model = build_network(get_arch(ARCH))
    with pytest.raises(SSIError) as exc:
        load_checkpoint(model, path)
    msg = _one_line_error(exc)
    assert "missing 1 keys" in msg and key in msg


@pytest.mark.parametrize("key,shape", [("rpn_head.rpn_reg.weight", (24, 256, 1, 1)),
                                       ("bbox_head.fc_reg.weight", (320, 1024))])
def test_misshaped_head_key_is_one_line(official_ckpt, tmp_path, key, shape):
    _, sd = official_ckpt
    bad = dict(sd)
    bad[key] = torch.zeros(shape)
    path = tmp_path / "misshaped.pth"
    torch.save({"state_dict": bad}, path)
    model = build_network(get_arch(ARCH))
    with pytest.raises(SSIError) as exc:
        load_checkpoint(model, path)
    msg = _one_line_error(exc)
    assert "mis-shaped" in msg and key in msg and str(list(shape)) in msg


def test_detector_checkpoint_as_backbone_ignores_the_heads(official_ckpt):
    path, sd = official_ckpt
    for with_fpn in (False, True):
        model = build_network(get_arch("sparse_resnet50"), with_fpn=with_fpn)
        report = load_checkpoint(model, path)
        heads = sorted(k for k in sd if k.startswith(("rpn_head.", "bbox_head.")))
        assert len(heads) == 2 * len(HEAD_SHAPES)
        assert set(heads) <= set(report.ignored)
        necks = {k for k in sd if k.startswith("neck.")}
        assert (necks <= set(report.ignored)) == (not with_fpn)
        assert "ignored" in report.summary()


def test_detect_arch_names_the_detector(official_ckpt, tmp_path):
    path, sd = official_ckpt
    assert detect_arch(read_checkpoint(path)) == (ARCH, True)
    # without the heads it is the backbone with FPN
    noheads = {k: v for k, v in sd.items() if not k.startswith(("rpn_head.", "bbox_head."))}
    torch.save({"state_dict": noheads}, tmp_path / "bb.pth")
    assert detect_arch(read_checkpoint(tmp_path / "bb.pth")) == ("sparse_resnet50", True)


def test_torchvision_checkpoint_initialises_the_heads_seeded(official_ckpt, tmp_path):
    _, sd = official_ckpt
    tv = {k.removeprefix("backbone."): v for k, v in sd.items()
          if k.startswith("backbone.") and not any(s in k for s in SSI_ONLY)}
    tv["fc.weight"] = torch.zeros(1000, 2048)
    tv["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(tv, path)
    assert read_checkpoint(path).format == "torchvision"
    a = build_network(get_arch(ARCH))
    b = build_network(get_arch(ARCH))
    ra, rb = load_checkpoint(a, path), load_checkpoint(b, path)
    assert ra.format == "torchvision" and "fc.weight" in ra.ignored
    heads = {f"{k}.{p}" for k in HEAD_SHAPES for p in ("weight", "bias")}
    assert heads <= set(ra.initialised)
    ha, hb = head_state(a), head_state(b)
    assert set(ha) == heads
    for k in heads:
        assert torch.equal(ha[k], hb[k]), k
    assert float(ha["bbox_head.fc_cls.weight"].std()) > 0  # seeded random, not zeros
    # the backbone weights are the checkpoint's
    assert torch.equal(a.state_dict()["backbone.layer1.0.conv1.weight"],
                       sd["backbone.layer1.0.conv1.weight"])


# --------------------------------------------------------------------------------------------
# official vs deploy (eager)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_official_and_deploy_give_the_same_detections(both_paths, scenario):
    official, deploy = both_paths[scenario]
    for dets in (official, deploy):
        assert [tuple(t.shape) for t in dets] == [(2, 100, 4), (2, 100), (2, 100), (2,)]
        assert dets[2].dtype == torch.int64 and dets[3].dtype == torch.int64
    assert torch.equal(official[3], deploy[3])
    assert int(official[3].min()) > 0
    if scenario == "sparse":  # the padding path: fewer than max_per_img, per image
        assert int(official[3].max()) < 100 and official[3][0] != official[3][1]
    c = compare_detections(as_outputs(official), as_outputs(deploy), NAMES, DetectionTolerance())
    assert c.passed, c.failure()
    assert c.recall_50 == 1.0 and c.recall_90 == 1.0 and c.precision_50 == 1.0
    assert c.max_score_diff < 1e-5


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("path", ["official", "deploy"])
def test_detections_are_well_formed(both_paths, path, scenario):
    boxes, scores, labels, count = both_paths[scenario][0 if path == "official" else 1]
    for i, (h, w, sf) in enumerate(SCENARIOS[scenario][0].tolist()):
        k = int(count[i])
        assert 0 < k <= 100
        lab, sc, bx = labels[i], scores[i], boxes[i]
        assert bool(((lab[:k] >= 0) & (lab[:k] <= 79)).all())
        assert bool((lab[k:] == -1).all())
        assert bool((sc[:k] > 0.05).all()) and bool((sc[:k] <= 1.0).all())
        assert bool((sc[:k][1:] <= sc[:k][:-1]).all()), "scores must descend"
        assert bool((sc[k:] == 0).all()) and bool((bx[k:] == 0).all())
        v = bx[:k]
        assert bool((v >= 0).all())
        # clamped to the resized image (x <= w - 1, y <= h - 1), then divided by the scale
        assert float(v[:, [0, 2]].max()) <= (w - 1) / sf + 1e-4
        assert float(v[:, [1, 3]].max()) <= (h - 1) / sf + 1e-4
        # legacy inclusive boxes: x2 - x1 + 1 > 0 in resized pixels
        assert bool(((v[:, 2] - v[:, 0]) * sf > -1).all())
        assert bool(((v[:, 3] - v[:, 1]) * sf > -1).all())


def test_set_postprocess_rejects_unknown_modes(detector):
    with pytest.raises(SSIError, match="official"):
        detector.set_postprocess("fast")
    assert detector.postprocess == "official"


# --------------------------------------------------------------------------------------------
# the deploy ops against ONNX Runtime's operators


def _ort_session(node, inputs, outputs, opset=18):
    graph = helper.make_graph([node], "one", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), ORT_OPTIONS,
                                providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def ort_nms():
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "thr"],
                            ["sel"], center_point_box=0)
    ins = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", "m", 4]),
           helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", "c", "m"]),
           helper.make_tensor_value_info("max", TensorProto.INT64, [1]),
           helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
           helper.make_tensor_value_info("thr", TensorProto.FLOAT, [1])]
    outs = [helper.make_tensor_value_info("sel", TensorProto.INT64, ["k", 3])]
    return _ort_session(node, ins, outs)


def _random_nms_case(g: np.random.Generator, kind: str):
    n, c, m = int(g.integers(1, 4)), int(g.integers(1, 4)), int(g.integers(1, 60))
    if kind == "integer":  # small integer boxes: exact IoU ties, IoU exactly at thresholds
        lo = g.integers(0, 8, (n, m, 2))
        size = g.integers(0, 6, (n, m, 2))  # zero-size boxes too
        boxes = np.concatenate([lo, lo + size], -1).astype(np.float32)
    else:
        lo = g.uniform(0, 50, (n, m, 2))
        boxes = np.concatenate([lo, lo + g.uniform(0.01, 30, (n, m, 2))], -1).astype(np.float32)
    flip = g.random((n, m)) < 0.3  # corners in either order
    boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    if kind == "integer":
        scores = g.integers(0, 6, (n, c, m)).astype(np.float32) / 5  # many ties, some 0
    else:
        scores = g.random((n, c, m)).astype(np.float32)
        scores[g.random((n, c, m)) < 0.2] = 0.5  # ties
    return boxes, scores


@pytest.mark.parametrize("kind", ["integer", "float"])
def test_nms_eager_equals_onnxruntime(ort_nms, kind):
    g = np.random.default_rng(11 if kind == "integer" else 12)
    for trial in range(60):
        boxes, scores = _random_nms_case(g, kind)
        max_out = int(g.choice([0, 1, 3, 1000]))
        iou = float(g.choice([0.0, 0.3, 0.5, 0.7, 1.0 / 3.0]))
        thr = float(g.choice([-1.0, 0.0, 0.05, 0.4]))
        want = ort_nms.run(None, {"boxes": boxes, "scores": scores,
                                  "max": np.array([max_out], np.int64),
                                  "iou": np.array([iou], np.float32),
                                  "thr": np.array([thr], np.float32)})[0]
        got = deploy_ops._nms_eager(torch.from_numpy(boxes), torch.from_numpy(scores), max_out,
                                    iou, thr)
        assert got.dtype == torch.int64
        np.testing.assert_array_equal(got.numpy().reshape(-1, 3), want.reshape(-1, 3),
                                      err_msg=f"trial {trial}: max {max_out} iou {iou} thr {thr}")


def test_nms_eager_known_case():
    # (y1, x1, y2, x2): IoU(0, 1) = 0.5 exactly (not > 0.5), IoU(0, 2) = 0.6; a tie of scores
    boxes = torch.tensor([[[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 6], [20, 20, 30, 30]]],
                         dtype=torch.float32)
    scores = torch.tensor([[[0.9, 0.8, 0.8, 0.8]]])
    sel = deploy_ops._nms_eager(boxes, scores, 10, 0.5, 0.05)
    assert sel[:, 2].tolist() == [0, 1, 3]


@pytest.fixture(scope="module")
def ort_roi_align():
    def make(oh, ow, ratio, scale):
        node = helper.make_node("RoiAlign", ["x", "rois", "bi"], ["y"],
                                coordinate_transformation_mode="half_pixel", mode="avg",
                                output_height=oh, output_width=ow, sampling_ratio=ratio,
                                spatial_scale=scale)
        ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"]),
               helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["r", 4]),
               helper.make_tensor_value_info("bi", TensorProto.INT64, ["r"])]
        outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["r", "c", oh, ow])]
        return _ort_session(node, ins, outs)
    return make


def _random_rois(g: np.random.Generator, r: int, w_img: float, h_img: float) -> np.ndarray:
    """(x1, y1, x2, y2) image-pixel RoIs: ordinary, tiny (< 1 feature pixel, zero size),
    across the border and entirely outside the map."""
    x1 = g.uniform(-0.2 * w_img, w_img, r)
    y1 = g.uniform(-0.2 * h_img, h_img, r)
    w = g.uniform(0, 0.7 * w_img, r)
    h = g.uniform(0, 0.7 * h_img, r)
    kind = g.integers(0, 4, r)
    w = np.where(kind == 1, g.uniform(0, 2, r), w)  # tiny
    h = np.where(kind == 1, g.uniform(0, 2, r), h)
    w[:2] = 0.0  # zero size
    outside = kind == 3
    x1 = np.where(outside, 1.1 * w_img + 40 + g.uniform(0, 40, r), x1)  # past the right border
    y1 = np.where(outside & (g.random(r) < 0.5), -h - g.uniform(3, 40, r), y1)  # or above it
    return np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)


@pytest.mark.parametrize("stride,oh,ow", [(4, 7, 7), (16, 7, 7), (32, 3, 5)])
def test_roi_align_eager_equals_onnxruntime(ort_roi_align, stride, oh, ow):
    g = np.random.default_rng(stride)
    sess = ort_roi_align(oh, ow, 2, 1.0 / stride)
    n, c, hf, wf = 3, 5, 96 // stride + 3, 128 // stride + 2
    x = g.standard_normal((n, c, hf, wf)).astype(np.float32)
    rois = _random_rois(g, 80, wf * stride, hf * stride)
    bi = g.integers(0, n, rois.shape[0]).astype(np.int64)
    bi[:3] = n - 1  # batch index > 0
    want = sess.run(None, {"x": x, "rois": rois, "bi": bi})[0]
    got = deploy_ops._roi_align_eager(torch.from_numpy(x), torch.from_numpy(rois),
                                      torch.from_numpy(bi), oh, ow, 2, 1.0 / stride)
    assert tuple(got.shape) == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5)
    outside = rois[:, 0] / stride - 0.5 > wf  # every sample right of x = W: zeros
    assert outside.any() and np.all(want[outside] == 0)


def test_roi_align_eager_one_pixel_map(ort_roi_align):
    """A 1x1 (and 1xW) map: grid_sample's normalisation degenerates there."""
    sess = ort_roi_align(7, 7, 2, 0.25)
    g = np.random.default_rng(5)
    for shape in ((1, 2, 1, 1), (1, 2, 1, 6), (2, 2, 5, 1)):
        x = g.standard_normal(shape).astype(np.float32)
        rois = _random_rois(g, 20, shape[3] * 4, shape[2] * 4)
        bi = g.integers(0, shape[0], 20).astype(np.int64)
        want = sess.run(None, {"x": x, "rois": rois, "bi": bi})[0]
        got = deploy_ops._roi_align_eager(torch.from_numpy(x), torch.from_numpy(rois),
                                          torch.from_numpy(bi), 7, 7, 2, 0.25)
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5, err_msg=str(shape))


# --------------------------------------------------------------------------------------------
# the legacy conventions mapped onto the ONNX ops


def _legacy_boxes(g: torch.Generator, n: int, integer: bool) -> torch.Tensor:
    if integer:
        lo = torch.randint(0, 12, (n, 2), generator=g).float()
        size = torch.randint(-1, 8, (n, 2), generator=g).float()  # x2 = x1 - 1 .. x1 + 7
        return torch.cat([lo, lo + size], 1)
    lo = torch.rand(n, 2, generator=g) * 60
    size = torch.rand(n, 2, generator=g) * 25
    thin = torch.rand(n, 2, generator=g) < 0.3  # x2 < x1 + 1: legacy width in (0, 2)
    size = torch.where(thin, torch.rand(n, 2, generator=g) * 2 - 1, size)  # x2 - x1 in (-1, 1)
    return torch.cat([lo, lo + size], 1)


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("thr", [0.5, 0.7])
def test_nms_mapping_keeps_the_legacy_set(integer, thr):
    g = torch.Generator().manual_seed(int(integer) * 10 + int(thr * 10))
    for trial in range(40):
        n = int(torch.randint(1, 120, (1,), generator=g))
        boxes = _legacy_boxes(g, n, integer)
        scores = torch.rand(n, generator=g)
        if integer:
            scores = (scores * 4).floor() / 4 + 0.1  # ties
        _, keep = legacy.nms(torch.cat([boxes, scores[:, None]], 1), thr)
        sel = deploy_ops._nms_eager(deployed._nms_boxes(boxes)[None], scores[None, None], n,
                                    thr, deployed.PAD_THRESHOLD)
        assert sorted(sel[:, 2].tolist()) == keep.tolist(), f"trial {trial}"


def test_nms_mapping_plus_one_areas():
    # [0, 0, 9, 9] and [5, 0, 14, 9]: legacy IoU 50 / 150 = 1/3; without +1 it would be
    # 36 / 126; with [0,0,9,9] vs [0,0,9,4]: legacy IoU 0.5 (kept at 0.5), 0.444 without +1
    boxes = torch.tensor([[0, 0, 9, 9], [0, 0, 9, 4], [0, 0, 9, 5]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = legacy.nms(torch.cat([boxes, scores[:, None]], 1), 0.5)
    sel = deploy_ops._nms_eager(deployed._nms_boxes(boxes)[None], scores[None, None], 10, 0.5,
                                -0.5)
    assert keep.tolist() == [0, 1] and sorted(sel[:, 2].tolist()) == [0, 1]


def _smooth_feats(g: torch.Generator, b: int, c: int, h: int, w: int) -> list[torch.Tensor]:
    out = []
    for k in range(4):
        hh, ww = h // (4 << k), w // (4 << k)
        coarse = torch.randn(b, c, max(2, hh // 2), max(2, ww // 2), generator=g)
        f = F.interpolate(coarse, size=(hh, ww), mode="bilinear", align_corners=False)
        out.append(f + 0.1 * torch.randn(b, c, hh, ww, generator=g))
    return out


def test_multi_level_roi_align_mapping_equals_legacy():
    g = torch.Generator().manual_seed(21)
    b, c, h, w = 2, 6, 256, 320
    feats = _smooth_feats(g, b, c, h, w)
    rng = np.random.default_rng(21)
    rois, sides = [], [(2, 40), (60, 111), (112, 223), (224, 447), (448, 700)]
    for lo, hi in sides:  # every level, boxes inside, across the border and outside
        r = 40
        side = rng.uniform(lo, hi, r)
        aspect = rng.uniform(0.5, 2.0, r)
        bw, bh = side * np.sqrt(aspect), side / np.sqrt(aspect)
        x1 = rng.uniform(-0.3 * bw, w - 0.5 * bw, r)
        y1 = rng.uniform(-0.3 * bh, h - 0.5 * bh, r)
        rois.append(np.stack([x1, y1, x1 + bw - 1, y1 + bh - 1], 1))
    tiny = rng.uniform(0, 50, (20, 2))
    rois.append(np.concatenate([tiny, tiny + rng.uniform(-0.9, 1.0, (20, 2))], 1))  # tiny
    edge = np.array([[0, 0, w - 1, h - 1], [w - 1, h - 1, w - 1, h - 1], [0, 0, 0, 0],
                     [-5, -5, 3, 3], [w - 4, h - 4, w + 10, h + 10]], np.float64)
    rois.append(edge)
    rois = torch.from_numpy(np.concatenate(rois).astype(np.float32))
    batch = torch.from_numpy(rng.integers(0, b, rois.shape[0]))
    rois5 = torch.cat([batch[:, None].float(), rois], 1)
    levels = legacy.map_roi_levels(rois5)
    assert set(levels.tolist()) == {0, 1, 2, 3}
    want = legacy.multi_level_roi_align(feats, rois5)
    model = SimpleNamespace(cfg=faster_rcnn.TestConfig())
    got = deployed.multi_level_roi_align(model, feats, rois, batch)
    assert got.shape == want.shape
    err = (got - want).abs().amax(dim=(1, 2, 3))
    assert float(err.max()) < 1e-5, f"worst RoI {rois[int(err.argmax())].tolist()}"


def _level_value(rois: torch.Tensor) -> torch.Tensor:
    """scale / 56 + 1e-6 in float32, the value both level rules read."""
    scale = torch.sqrt((rois[:, 2] - rois[:, 0] + 1) * (rois[:, 3] - rois[:, 1] + 1))
    return scale / 56 + 1e-6


# the one float32 value below 8 whose float32 log2 rounds up to exactly 3.0
JUST_BELOW_8 = float(np.nextafter(np.float32(8.0), np.float32(0.0)))


def test_roi_levels_equal_legacy_at_the_boundaries():
    scales = []
    for s in (56.0, 112.0, 224.0, 448.0):
        centre = np.float32(s * (1 - 1e-6))  # scale / 56 + 1e-6 crosses the level boundary here
        for c in (np.float32(s), centre):
            around = [c]
            up, down = c, c
            for _ in range(40):
                up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(0))
                around += [up, down]
            scales += around
        scales += list(np.linspace(s - 2, s + 2, 41, dtype=np.float32))
    scales = np.asarray(scales, np.float32)
    # square RoIs of side = scale: sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) ~ scale, and some
    # non-square ones of about the same area
    x1 = np.float32(3.0)
    rois = [[x1, x1, x1 + s - 1, x1 + s - 1] for s in scales]
    rois += [[0, 0, 2 * s - 1, s / 2 - 1] for s in scales]
    rois = torch.tensor(np.asarray(rois, np.float32))
    # (v = nextafter(8, 0), where float32 log2 rounds up to 3: test_roi_level_just_below_8)
    rois5 = torch.cat([torch.zeros(rois.shape[0], 1), rois], 1)
    want = legacy.map_roi_levels(rois5)
    got = deployed.roi_levels(rois, 56)
    bad = torch.nonzero(got != want).flatten()
    assert bad.numel() == 0, [(rois[i].tolist(), int(want[i]), int(got[i])) for i in bad[:5]]
    assert set(want.tolist()) == {0, 1, 2, 3}
    # and on random RoIs of every size
    g = torch.Generator().manual_seed(4)
    lo = torch.rand(4000, 2, generator=g) * 500
    rnd = torch.cat([lo, lo + torch.rand(4000, 2, generator=g) ** 2 * 900 - 0.9], 1)
    rnd5 = torch.cat([torch.zeros(4000, 1), rnd], 1)
    assert torch.equal(deployed.roi_levels(rnd, 56), legacy.map_roi_levels(rnd5))


def test_roi_level_just_below_8():
    roi = torch.tensor([[3.0, 3.0, 449.9999084472656, 449.9999084472656]])  # side 447.99991
    assert float(_level_value(roi)[0]) == JUST_BELOW_8
    want = legacy.map_roi_levels(torch.cat([torch.zeros(1, 1), roi], 1))
    assert int(want[0]) == 3  # floor(log2(7.9999995f)) = floor(3.0f)
    assert int(deployed.roi_levels(roi, 56)[0]) == int(want[0])
