"""Detection I/O: preprocessing equal to the official mmdet 0.6 test pipeline, image lists,
COCO conversion/evaluation on a synthetic set, and drawing."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from ssi_deploy.detection import coco as C
from ssi_deploy.detection import images as D
from ssi_deploy.detection.draw import draw_detections
from ssi_deploy.errors import SSIError
from ssi_deploy.validation.inputs import load_image

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def _png(path, h=37, w=53, seed=3):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return path


def official(path, scale=(1667, 1000)):
    """mmdet 0.6 ImageTransform written out by hand, in its own BGR order."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    sf = min(max(scale) / max(h, w), min(scale) / min(h, w))
    nw, nh = int(w * sf + 0.5), int(h * sf + 0.5)
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = (img - MEAN) / STD
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    out = np.zeros((ph, pw, 3), np.float32)
    out[:nh, :nw] = img
    return out.transpose(2, 0, 1), (nh, nw), sf


# --- rescale and preprocessing ---------------------------------------------------------

@pytest.mark.parametrize("h,w,scale", [(480, 640, (1667, 1000)), (640, 480, (1000, 1667)),
                                       (37, 53, (1333, 800)), (1000, 3000, (1667, 1000))])
def test_rescaled_size_formula(h, w, scale):
    sf = min(max(scale) / max(h, w), min(scale) / min(h, w))
    assert D.rescaled_size(h, w, scale) == (int(h * sf + 0.5), int(w * sf + 0.5), sf)


def test_rescaled_size_half_rounds_up_not_to_even():
    # sf = min(20/5, 10/4) = 2.5: w = 12.5 -> 13 (round(12.5) would give 12), h = 10
    assert round(5 * 2.5) == 12
    assert D.rescaled_size(4, 5, (20, 10)) == (10, 13, 2.5)


def test_preprocess_matches_official_pipeline(tmp_path):
    path = _png(tmp_path / "a.png")
    for scale in [(1667, 1000), (100, 60), (50, 30)]:
        want, shape, sf = official(path, scale)
        got = D.preprocess(load_image(path), test_scale=scale)
        assert got.image.dtype == np.float32
        assert got.image.shape == want.shape
        assert np.array_equal(got.image, want)  # bit-exact
        assert got.img_shape == shape and got.scale_factor == sf
        assert got.original_hw == (37, 53) and got.padded_hw == want.shape[1:]
        assert got.padded_hw[0] % 32 == 0 and got.padded_hw[1] % 32 == 0


def test_preprocess_pads_with_zeros_after_normalising(tmp_path):
    got = D.preprocess(load_image(_png(tmp_path / "a.png")), test_scale=(100, 60))
    h, w = got.img_shape
    assert (h, w) == (60, 86)
    assert not got.image[:, h:, :].any() and not got.image[:, :, w:].any()


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_static_hw_fits_and_warns():
    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    logger, handler = logging.getLogger("ssi_deploy"), _Collect()
    logger.addHandler(handler)
    try:
        fits = D.preprocess(img, test_scale=(60, 40), static_hw=(64, 64))  # 40x60 fits
        assert not handler.records
        assert fits.padded_hw == (64, 64) and fits.img_shape == (40, 60)
        assert fits.scale_factor == 1.0
        small = D.preprocess(img, static_hw=(64, 96))  # official: 1000x1500 -> shrink
        assert handler.records and "does not fit" in handler.records[0].getMessage()
    finally:
        logger.removeHandler(handler)
    assert small.image.shape == (3, 64, 96)
    sf = min(64 / 40, 96 / 60)
    assert small.scale_factor == sf
    assert small.img_shape == (min(64, int(40 * sf + 0.5)), min(96, int(60 * sf + 0.5)))
    h, w = small.img_shape
    assert not small.image[:, h:, :].any() and not small.image[:, :, w:].any()


def test_make_batch_pads_and_reports_info():
    rng = np.random.default_rng(1)
    a = D.preprocess(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8), test_scale=(100, 60))
    b = D.preprocess(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8), test_scale=(100, 60))
    image, info = D.make_batch([a, b])
    assert image.shape == (2, 3, 128, 128) and image.dtype == np.float32
    assert np.array_equal(image[0, :, :a.padded_hw[0], :a.padded_hw[1]], a.image)
    assert not image[0, :, a.padded_hw[0]:].any() and not image[1, :, :, b.padded_hw[1]:].any()
    assert info.dtype == np.float32 and info.shape == (2, 3)
    np.testing.assert_array_equal(info[1], np.float32([b.img_shape[0], b.img_shape[1],
                                                        b.scale_factor]))
    image, _ = D.make_batch([a], static_hw=(160, 192))
    assert image.shape == (1, 3, 160, 192)
    with pytest.raises(ValueError):
        D.make_batch([a], static_hw=(32, 32))


def test_parse_test_scale():
    assert D.parse_test_scale("1667x1000") == (1667, 1000)
    assert D.parse_test_scale("1000X1667") == (1667, 1000)
    for bad in ["", "1667", "ax1000", "1667x0", "1x2x3", "-5x10"]:
        with pytest.raises(SSIError, match=r"--test-scale .*LONGxSHORT"):
            D.parse_test_scale(bad)


def test_list_images(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ["b.PNG", "a.jpg", "c.webp", "notes.txt", "sub/d.png"]:
        (folder / name).write_bytes(b"x")
    single = tmp_path / "x.jpeg"
    single.write_bytes(b"x")
    got = D.list_images([single, str(folder), folder / "a.jpg"])
    assert got == [single, folder / "a.jpg", folder / "b.PNG", folder / "c.webp"]
    with pytest.raises(SSIError, match="nope.jpg"):
        D.list_images([tmp_path / "nope.jpg"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_bytes(b"x")
    with pytest.raises(SSIError, match="empty has no images"):
        D.list_images([single, empty])
    with pytest.raises(SSIError):
        D.list_images([])


# --- COCO ------------------------------------------------------------------------------

def test_class_tables():
    assert len(C.COCO_CLASSES) == len(C.COCO_CATEGORY_IDS) == 80
    assert C.COCO_CLASSES[0] == "person" and C.COCO_CLASSES[-1] == "toothbrush"
    assert C.COCO_CLASSES[C.COCO_CATEGORY_IDS.index(67)] == "dining table"
    assert list(C.COCO_CATEGORY_IDS) == sorted(set(C.COCO_CATEGORY_IDS))
    assert C.COCO_CATEGORY_IDS[-1] == 90


def test_to_coco_results_legacy_box():
    out = C.to_coco_results(7, [{"box": [10.0, 20.0, 19.0, 24.5], "score": np.float32(0.5),
                                  "label": 2, "extra": 1}])
    assert out == [{"image_id": 7, "bbox": [10.0, 20.0, 10.0, 5.5], "score": 0.5,
                    "category_id": 3}]


def _gt_detections(coco, img_id, shift=0.0):
    dets = []
    for a in coco.imgToAnns[img_id]:
        x, y, w, h = a["bbox"]
        dets.append({"box": [x + shift, y + shift, x + w - 1 + shift, y + h - 1 + shift],
                     "score": 1.0, "label": C.COCO_CATEGORY_IDS.index(a["category_id"])})
    return dets


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco")
    js = C.make_synthetic_coco(folder, n_images=3, seed=0)
    return folder, js, C.load_coco(js)


def test_synthetic_set(synthetic):
    folder, js, coco = synthetic
    pairs = C.coco_images(coco, folder / "images")
    assert [i for i, _ in pairs] == [1, 2, 3]
    img = load_image(pairs[0][1])
    assert img.shape == (96, 128, 3)
    assert len(coco.dataset["categories"]) == 80 and coco.dataset["annotations"]
    assert C.coco_images(coco, folder / "images", limit=2) == pairs[:2]
    assert not list(folder.rglob("*.tmp"))


def test_evaluate_gt_is_perfect_and_shift_is_worse(synthetic, capsys):
    _, _, coco = synthetic
    ids = sorted(coco.getImgIds())
    perfect = [r for i in ids for r in C.to_coco_results(i, _gt_detections(coco, i))]
    m = C.evaluate(coco, perfect, ids)
    assert m["mAP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert "Average Precision" in m["summary"]
    shifted = [r for i in ids for r in C.to_coco_results(i, _gt_detections(coco, i, 5.0))]
    worse = C.evaluate(coco, shifted, ids)
    assert worse["mAP"] < 0.9
    only_first = C.evaluate(coco, perfect, ids[:1])
    assert only_first["mAP"] == pytest.approx(1.0)
    assert capsys.readouterr().out == ""  # pycocotools' printing was captured


def test_evaluate_empty_results_is_zero(synthetic):
    _, _, coco = synthetic
    m = C.evaluate(coco, [], sorted(coco.getImgIds()))
    assert {k: m[k] for k in C.METRICS} == dict.fromkeys(C.METRICS, 0.0)


def test_coco_images_missing_file(synthetic, tmp_path):
    folder, _, coco = synthetic
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / coco.imgs[1]["file_name"]).write_bytes((folder / "images" /
                                                        coco.imgs[1]["file_name"]).read_bytes())
    with pytest.raises(SSIError, match=r"2 of 3 .*synthetic_000002\.png"):
        C.coco_images(coco, partial)
    with pytest.raises(SSIError, match="not found"):
        C.coco_images(coco, tmp_path / "nowhere")


def test_load_coco_errors(tmp_path):
    with pytest.raises(SSIError, match="not found"):
        C.load_coco(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SSIError, match="JSON"):
        C.load_coco(bad)
    bad.write_text('{"images": [], "categories": []}')
    with pytest.raises(SSIError, match="annotations"):
        C.load_coco(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(SSIError, match="not a COCO instances file"):
        C.load_coco(bad)


# --- drawing ---------------------------------------------------------------------------

def test_draw_detections(tmp_path):
    img = np.full((80, 120, 3), 40, np.uint8)
    dets = [{"box": [10, 20, 60, 70], "score": 0.9, "label": 0},
            {"box": [70, 5, 110, 40], "score": 0.1, "label": 2}]
    out = draw_detections(img, dets, tmp_path / "d.png")
    back = cv2.imread(str(out))
    assert back.shape == img.shape
    assert (back != 40).any(axis=2).sum() > 100
    assert (back[45, 10] != 40).any()           # the left edge of the shown box
    assert (back[25, 90] == 40).all()           # the low-score box is not drawn
    low = draw_detections(img, dets[1:], tmp_path / "low.jpg")  # only low scores: top one drawn
    assert (cv2.imread(str(low)).astype(int) - 40 > 30).any()
    none = draw_detections(img, [], tmp_path / "none.png")
    assert (cv2.imread(str(none)) == 40).all()
    assert not list(tmp_path.glob(".*"))


def test_draw_detections_refuses_and_writes_nothing(tmp_path):
    img = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(SSIError, match=r"\.gif.*\.png or \.jpg"):
        draw_detections(img, [], tmp_path / "x.gif")
    with pytest.raises(SSIError, match="does not exist"):
        draw_detections(img, [], tmp_path / "no" / "x.png")
    with pytest.raises((KeyError, ValueError)):
        draw_detections(img, [{"box": [1, 2, 3, 4], "label": 0}], tmp_path / "y.png")
    assert list(tmp_path.iterdir()) == []
