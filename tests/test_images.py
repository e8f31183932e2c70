"""load_image: every image kind either converts exactly (as the official pipeline's
cv2.imread reads it) or is refused with one line naming the file."""

from __future__ import annotations

import cv2  # a dependency: load_image reads with OpenCV, as the official pipeline does
import numpy as np
import pytest

from ssi_deploy.errors import SSIError
from ssi_deploy.validation import inputs as I

Image = pytest.importorskip("PIL.Image")  # writes most test files (dev extra)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (6, 10), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (6, 10), dtype=np.uint8)
BITS = RNG.random((6, 10)) > 0.5
G16 = RNG.integers(0, 65536, (6, 10), dtype=np.uint16)
RGB16 = RNG.integers(0, 65536, (6, 10, 3), dtype=np.uint16)
A16 = RNG.integers(0, 65536, (6, 10), dtype=np.uint16)
PALETTE = np.array([[10, 20, 30], [200, 100, 50], [0, 255, 7]], np.uint8)
INDEX = RNG.integers(0, 3, (6, 10), dtype=np.uint8)
CONVERT = "convert it to 8-bit RGB (PNG/JPEG)"


def official(path) -> np.ndarray:
    """The official mmdet 0.6 reading: mmcv.imread = cv2.imread(IMREAD_COLOR), BGR -> RGB."""
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def _gray3(g):
    return np.repeat(g[:, :, None], 3, axis=2)


def _palette_image():
    im = Image.new("P", (10, 6))
    im.putpalette(PALETTE.ravel().tolist() + [0] * (768 - PALETTE.size))
    im.putdata(INDEX.ravel().tolist())
    return im


def _write(kind, path):
    """Write one kind of 8-bit/1-bit file; return the RGB image load_image must give."""
    if kind == "gray":
        Image.fromarray(GRAY).save(path)
        return _gray3(GRAY)
    if kind == "rgb":
        Image.fromarray(RGB).save(path)
        return RGB
    if kind == "rgba":  # alpha dropped, not composited
        Image.fromarray(np.dstack([RGB, ALPHA])).save(path)
        return RGB
    if kind == "gray_alpha":
        Image.fromarray(np.dstack([GRAY, ALPHA])).save(path)
        return _gray3(GRAY)
    if kind == "palette":
        _palette_image().save(path)
        return PALETTE[INDEX]
    if kind == "palette_transparent":
        _palette_image().save(path, transparency=0)
        return PALETTE[INDEX]
    if kind in ("1bit", "1bit_tiff", "1bit_bmp"):
        Image.fromarray(BITS).save(path)
        assert Image.open(path).mode == "1"
        return _gray3(np.where(BITS, 255, 0).astype(np.uint8))
    if kind == "bmp":
        Image.fromarray(RGB).save(path)
        return RGB
    raise AssertionError(kind)


EIGHT_BIT = {"gray": "png", "rgb": "png", "rgba": "png", "gray_alpha": "png", "palette": "png",
             "palette_transparent": "png", "1bit": "png", "1bit_tiff": "tif", "1bit_bmp": "bmp",
             "bmp": "bmp"}


@pytest.mark.parametrize("kind", list(EIGHT_BIT))
def test_8bit_and_1bit_kinds_convert_exactly(kind, tmp_path):
    path = tmp_path / f"{kind}.{EIGHT_BIT[kind]}"
    expected = _write(kind, path)
    img = I.load_image(path)
    assert img.dtype == np.uint8 and img.shape == (6, 10, 3) and img.flags.c_contiguous
    np.testing.assert_array_equal(img, expected)
    np.testing.assert_array_equal(img, official(path))


def _write_16bit(kind, path):
    if kind == "gray_png_pil":
        Image.fromarray(G16).save(path)
        assert Image.open(path).mode.startswith("I")
        return _gray3(G16)
    if kind == "gray_png":
        cv2.imwrite(str(path), G16)
        return _gray3(G16)
    if kind == "rgb_png":
        cv2.imwrite(str(path), RGB16[:, :, ::-1])  # OpenCV writes BGR
        return RGB16
    if kind == "rgba_png":
        cv2.imwrite(str(path), np.dstack([RGB16[:, :, ::-1], A16]))
        return RGB16
    if kind == "gray_tiff":
        cv2.imwrite(str(path), G16)
        return _gray3(G16)
    if kind == "rgb_tiff":
        cv2.imwrite(str(path), RGB16[:, :, ::-1])
        return RGB16
    raise AssertionError(kind)


SIXTEEN_BIT = {"gray_png_pil": "png", "gray_png": "png", "rgb_png": "png", "rgba_png": "png",
               "gray_tiff": "tif", "rgb_tiff": "tif"}


@pytest.mark.parametrize("kind", list(SIXTEEN_BIT))
def test_16bit_scales_by_high_byte(kind, tmp_path):
    """16-bit samples -> value >> 8 (what cv2.imread(IMREAD_COLOR) gives), not clipped to white."""
    path = tmp_path / f"{kind}.{SIXTEEN_BIT[kind]}"
    v16 = _write_16bit(kind, path)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really 16-bit
    img = I.load_image(path)
    assert img.dtype == np.uint8 and img.shape == (6, 10, 3)
    np.testing.assert_array_equal(img, (v16 >> 8).astype(np.uint8))
    if kind == "rgb_tiff":
        # OpenCV's colour-TIFF path (libtiff RGBA) rounds, round(v / 257): at most 1 level apart
        np.testing.assert_array_equal(official(path), np.round(v16 / 257).astype(np.uint8))
        assert np.abs(img.astype(int) - official(path)).max() <= 1
    else:
        np.testing.assert_array_equal(img, official(path))
    assert (img == 255).mean() < 0.1  # the old PIL path gave an all-white image


@pytest.mark.parametrize("channels", ["gray", "rgb"])
def test_validate_input_from_16bit_png_is_the_8bit_one(channels, tmp_path):
    """What `validate --image` feeds (load_image, then preprocess_image): a 16-bit PNG gives
    the network input of its 8-bit (v >> 8) twin, not that of a white image."""
    img16 = np.kron(G16 if channels == "gray" else RGB16,
                    np.ones((8, 8) if channels == "gray" else (8, 8, 1), np.uint16))  # 48x80
    cv2.imwrite(str(tmp_path / "p16.png"), img16 if channels == "gray" else img16[:, :, ::-1])
    Image.fromarray((img16 >> 8).astype(np.uint8)).save(tmp_path / "p8.png")
    x16, info = I.preprocess_image(I.load_image(tmp_path / "p16.png"), static_hw=(64, 64))
    x8, _ = I.preprocess_image(I.load_image(tmp_path / "p8.png"), static_hw=(64, 64))
    assert info["resized_hw"] == [38, 64]
    np.testing.assert_array_equal(x16, x8)
    white = (255 - np.asarray(I.DEFAULT_MEAN, np.float32)) / np.asarray(I.DEFAULT_STD, np.float32)
    assert not np.allclose(x16[0, :, :38, :64], white[:, None, None], atol=0.5)


def test_cmyk_jpeg_converts(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(path, quality=100)  # pure red
    assert Image.open(path).mode == "CMYK"
    img = I.load_image(path)
    assert img.shape == (8, 16, 3)
    np.testing.assert_array_equal(img, official(path))
    assert np.abs(img.astype(int) - [255, 0, 0]).max() <= 3


def test_exif_orientation_is_applied_as_the_official_pipeline_does(tmp_path):
    """cv2.imread(IMREAD_COLOR) (mmcv.imread) applies EXIF orientation; so does load_image."""
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # left half red, right half black
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    img = I.load_image(path)
    assert img.shape == (40, 20, 3)  # displayed upright: portrait
    assert img[:18, :, 0].min() > 240 and img[22:, :, 0].max() < 15  # left half -> top half
    np.testing.assert_array_equal(img, official(path))


def _one_line(err: SSIError, path) -> str:
    msg = str(err)
    assert str(path) in msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("kind,depth", [
    ("float32_gray_tiff", "32-bit float"), ("float32_rgb_tiff", "32-bit float"),
    ("float64_tiff", "64-bit float"), ("hdr", "32-bit float"),
    ("int32_tiff", "32-bit signed integer"),
])
def test_unusual_depths_are_refused(kind, depth, tmp_path):
    path = tmp_path / f"{kind}.{'hdr' if kind == 'hdr' else 'tif'}"
    f = RNG.random((6, 10)).astype(np.float32)
    if kind == "float32_gray_tiff":
        cv2.imwrite(str(path), f)
    elif kind == "float32_rgb_tiff":
        cv2.imwrite(str(path), np.dstack([f, f, f]))
    elif kind == "float64_tiff":
        tifffile = pytest.importorskip("tifffile")
        tifffile.imwrite(path, f.astype(np.float64))
    elif kind == "hdr":
        cv2.imwrite(str(path), np.dstack([f, f, f]))
    else:
        Image.fromarray((f * 1e6).astype(np.int32)).save(path)
    with pytest.raises(SSIError) as e:
        I.load_image(path)
    assert _one_line(e.value, path) == f"cannot use {path}: {depth} image; {CONVERT}"


def test_exr_is_refused(tmp_path):
    path = tmp_path / "render.exr"
    path.write_bytes(b"v/1\x01\x02\x00\x00\x00channels\x00chlist\x00" + bytes(64))
    with pytest.raises(SSIError) as e:
        I.load_image(path)
    assert _one_line(e.value, path) == f"cannot use {path}: OpenEXR floating-point image; {CONVERT}"


def _bad_file(kind, tmp_path):
    if kind == "directory":
        (tmp_path / "photos.png").mkdir()
        return tmp_path / "photos.png", "is a directory"
    if kind == "missing":
        return tmp_path / "nope.png", "image not found"
    if kind == "empty":
        (tmp_path / "empty.png").write_bytes(b"")
        return tmp_path / "empty.png", "the file is empty"
    if kind == "text":
        (tmp_path / "notes.jpg").write_text("not a picture\n")
        return tmp_path / "notes.jpg", "not an image file"
    big = np.kron(RGB, np.ones((8, 8, 1), np.uint8))
    if kind == "truncated_jpeg":
        Image.fromarray(big).save(tmp_path / "full.jpg", quality=90)
        data = (tmp_path / "full.jpg").read_bytes()
        (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
        return tmp_path / "cut.jpg", "JPEG data is truncated"
    if kind == "truncated_png":
        Image.fromarray(big).save(tmp_path / "full.png")
        data = (tmp_path / "full.png").read_bytes()
        (tmp_path / "cut.png").write_bytes(data[: len(data) * 2 // 3])
        return tmp_path / "cut.png", "truncated, corrupt or an unsupported kind of PNG"
    if kind == "corrupt_png":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
        return tmp_path / "bad.png", "truncated, corrupt or an unsupported kind of PNG"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["directory", "missing", "empty", "text", "truncated_jpeg",
                                  "truncated_png", "corrupt_png"])
def test_bad_files_give_one_line_naming_the_file(kind, tmp_path, capfd):
    path, needle = _bad_file(kind, tmp_path)
    with pytest.raises(SSIError) as e:
        I.load_image(path)
    assert needle in _one_line(e.value, path)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no decoder warnings on the terminal (one-line policy)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real export (dense resnet50, seeded random weights, static 64x64)."""
    from ssi_deploy.export import export_onnx
    from ssi_deploy.models import create_model

    path = tmp_path_factory.mktemp("export") / "r50.onnx"
    model = create_model("resnet50", with_fpn=False, init_seed=0)
    model.fuse_for_inference()
    export_onnx(model, path, input_shape=(1, 3, 64, 64), dynamic=None, dtype="fp32")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["float", "truncated_jpeg"])
def test_cli_refuses_bad_image_in_one_line(kind, exported, tmp_path, capfd):
    """`ssi-deploy validate --image ...`: exit 2 and the one line, before any backend loads."""
    from ssi_deploy.cli.main import main

    if kind == "float":
        image = tmp_path / "depth.tif"
        cv2.imwrite(str(image), RNG.random((48, 80)).astype(np.float32))
        expected = f"error: cannot use {image}: 32-bit float image; {CONVERT}"
    else:
        image, _ = _bad_file("truncated_jpeg", tmp_path)
        expected = (f"error: cannot read image {image}: the JPEG data is truncated (premature "
                    "end); re-save or re-download the file")
    capfd.readouterr()
    rc = main(["validate", str(exported), "--image", str(image)])
    out, err = capfd.readouterr()
    assert rc == 2, out + err
    lines = err.strip().splitlines()
    assert lines[-1] == expected and sum(line.startswith("error:") for line in lines) == 1
    assert "Traceback" not in err and "WARN" not in err and "Premature end of JPEG" not in err
