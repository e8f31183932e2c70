"""Comparator maths on crafted arrays (exact expected numbers), tolerances, input handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssi_deploy.errors import SSIError
from ssi_deploy.validation import inputs as I
from ssi_deploy.validation.compare import (REL_FLOOR, ComparisonReport, Tolerance, Tolerances, compare_mask,
                                           compare_output, compare_outputs, error_stats,
                                           format_table, parse_tolerance_specs)


def test_error_stats_exact():
    ref = np.array([1.0, -2.0, 0.0, 4.0], np.float32)
    test = np.array([1.5, -2.0, 0.1, 3.0], np.float32)
    st = error_stats(ref, test)
    # err = [0.5, 0, 0.1, 1] (float32 inputs: 0.1 is 0.1f)
    e01 = float(np.float32(0.1))
    assert st["max_abs"] == 1.0
    assert st["mean_abs"] == pytest.approx((0.5 + e01 + 1.0) / 4, abs=1e-15)
    assert st["median_abs"] == pytest.approx((e01 + 0.5) / 2, abs=1e-15)
    # numpy linear percentile over sorted [0, 0.1, 0.5, 1]: rank 0.99 * 3 = 2.97
    assert st["p99_abs"] == pytest.approx(0.5 + 0.97 * 0.5, abs=1e-12)
    # |ref| = 0 at index 2 -> floor 1e-6
    assert st["max_rel"] == pytest.approx(e01 / REL_FLOOR, rel=1e-12)
    dot = 1.0 * 1.5 + 4.0 + 0.0 + 12.0
    nt2 = 1.5 ** 2 + 4.0 + e01 ** 2 + 9.0
    assert st["cosine"] == pytest.approx(dot / math.sqrt(21.0 * nt2), abs=1e-12)
    assert (st["nan_ref"], st["inf_ref"], st["nan_test"], st["inf_test"]) == (0, 0, 0, 0)


def test_tolerance_rule_counts_violations():
    ref = np.array([1.0, -2.0, 0.0, 4.0])
    test = np.array([1.5, -2.0, 0.1, 3.0])
    # thresholds atol + rtol*|ref| = [0.3, 0.4, 0.2, 0.6]; err = [0.5, 0, 0.1, 1]
    c = compare_output("c2", ref, test, Tolerance(atol=0.2, rtol=0.1))
    assert c.violations == 2 and not c.passed
    c = compare_output("c2", ref, test, Tolerance(atol=0.6, rtol=0.1))  # [0.7, 0.8, 0.6, 1.0]
    assert c.violations == 0 and c.passed


def test_nan_inf_counted_and_fail():
    ref = np.array([1.0, np.nan, np.inf, 2.0])
    test = np.array([1.0, np.nan, 1.0, np.inf])
    c = compare_output("p2", ref, test, Tolerance(1e-3, 1e-3))
    assert (c.nan_ref, c.inf_ref, c.nan_test, c.inf_test) == (1, 1, 1, 1)
    assert c.max_abs == 0.0  # only index 0 is finite in both
    assert c.violations == 3 and not c.passed  # inf vs 1, 2 vs inf, and the NaN pair


def test_all_nan_on_both_sides_fails_with_its_own_line():
    # the bug: NaN == NaN (equal_nan) and an atol from an all-NaN reference made this a PASS
    ref = np.full((1, 4, 3, 3), np.nan, np.float32)
    c = compare_output("p2", ref, ref.copy(), Tolerances.for_dtype("fp32").default)
    assert not c.passed and c.violations == ref.size
    rep = ComparisonReport([c], [], [], [])
    assert not rep.passed
    lines = rep.failures()
    assert any("non-finite values" in ln and "36 NaN" in ln and "reference" in ln for ln in lines)
    assert "FAIL" in format_table(rep) and "PASS" not in format_table(rep).splitlines()[-1]


def test_nonfinite_in_backend_only_fails():
    ref = np.ones((2, 3), np.float32)
    test = ref.copy()
    test[1, 2] = np.inf
    rep = ComparisonReport([compare_output("c5", ref, test, Tolerances.for_dtype("fp32").default)],
                           [], [], [])
    assert not rep.passed
    assert rep.failures() == ["c5: non-finite values: 0 NaN and 1 Inf in the backend's output"]


def test_nan_mask_fails():
    ref = np.ones((1, 1, 4, 4), np.float32)
    test = ref.copy()
    test[0, 0, 1, 1] = np.nan
    m = compare_mask("mask_layer1_0_mask1", ref, test, 0.999, 2)
    assert not m.passed and m.nan_test == 1


def test_identical_and_zero_vectors():
    z = np.zeros(5)
    assert error_stats(z, z)["cosine"] == 1.0
    assert error_stats(z, np.ones(5))["cosine"] == 0.0
    c = compare_output("c3", np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(2, 3),
                       Tolerance(0, 0))
    assert c.passed and c.max_abs == 0 and c.cosine == pytest.approx(1.0)


def test_shape_mismatch_fails():
    c = compare_output("c4", np.zeros((1, 2)), np.zeros((2, 1)), Tolerance(1, 1))
    assert not c.passed and c.shape == [2, 1] and c.ref_shape == [1, 2]


def test_mask_agreement_exact():
    ref = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], np.float32)
    test = np.array([[1, 1, 1, 0], [0, 0, 1, 0]], np.float32)
    m = compare_mask("mask_layer1_0_mask1", ref, test, min_agreement=0.8)
    assert m.differing == 2 and m.positions == 8
    assert m.agreement == 0.75 and not m.passed
    assert (m.sampled_ref, m.sampled_test, m.count_diff) == (4, 4, 0)
    assert m.density_ref == 0.5 and m.density_test == 0.5
    assert m.allowed_flips == 1  # floor((1 - 0.8) * 8)
    # a handful of flips always passes (tiny maps of small inputs): max_flips
    m = compare_mask("mask_layer1_0_mask1", ref, test, min_agreement=1.0, max_flips=2)
    assert m.allowed_flips == 2 and m.passed
    m = compare_mask("mask_layer1_0_mask1", ref, test, min_agreement=1.0, max_flips=1)
    assert not m.passed
    soft_r = np.array([0.0, 0.99, 1.0, 0.6])
    soft_t = np.array([0.7, 0.98, 1.0, 0.0])
    m = compare_mask("mask_x", soft_r, soft_t, min_agreement=0.5)
    assert m.differing == 2 and m.agreement == 0.5 and m.passed
    assert m.count_diff == 0 and m.max_abs_value == pytest.approx(0.01)


def test_compare_outputs_splits_masks_and_reports_missing():
    ref = {"c2": np.ones(3), "mask_layer1_0_mask1": np.array([1.0, 0.0]), "c3": np.ones(2)}
    test = {"c2": np.ones(3), "mask_layer1_0_mask1": np.array([1.0, 1.0]), "extra": np.ones(1)}
    rep = compare_outputs(ref, test, Tolerances.for_dtype("fp32"))
    assert [o.name for o in rep.outputs] == ["c2"]
    assert [m.name for m in rep.masks] == ["mask_layer1_0_mask1"]
    assert rep.missing == ["c3"] and rep.extra == ["extra"]
    assert not rep.passed
    d = rep.to_dict()
    assert d["passed"] is False and "missing output c3" in d["failures"]
    assert d["masks"]["mask_layer1_0_mask1"]["agreement"] == 0.5
    table = format_table(rep)
    assert "FAIL" in table and "mask_layer1_0_mask1" in table


def test_tolerance_specs():
    assert parse_tolerance_specs("atol", ["c5=1e-2", "1e-3"]) == {None: 1e-3, "c5": 1e-2}
    tol = Tolerances.from_specs("fp32", atol=["c5=1e-2", "2e-4"], rtol=["5e-3"],
                                output_names=["c2", "c5"])
    assert (tol.for_output("c2").atol, tol.for_output("c2").rtol) == (2e-4, 5e-3)
    assert (tol.for_output("c5").atol, tol.for_output("c5").rtol) == (1e-2, 5e-3)
    fp16 = Tolerances.for_dtype("float16")
    fp32 = Tolerances.for_dtype("fp32")
    assert fp16.default.atol_scale > fp32.default.atol_scale and fp16.default.rtol > fp32.default.rtol
    # default atol scales with the output: 2e-5 * max|ref| for fp32
    ref = np.array([0.0, -100.0, 50.0])
    assert fp32.default.effective_atol(ref) == pytest.approx(2e-3)
    c = compare_output("p2", ref, ref + np.array([1.9e-3, 0.0, 0.0]), fp32.default)
    assert c.passed and c.atol == pytest.approx(2e-3) and c.atol_rule == "2e-05 x max|ref|"
    c = compare_output("p2", ref, ref + np.array([2.1e-3, 0.0, 0.0]), fp32.default)
    assert c.violations == 1
    with pytest.raises(SSIError, match="no output named 'p9'"):
        Tolerances.from_specs("fp32", atol=["p9=1"], output_names=["c2"])
    with pytest.raises(SSIError, match="expected VALUE or NAME=VALUE"):
        parse_tolerance_specs("rtol", ["c2=abc"])
    with pytest.raises(SSIError):
        Tolerances.for_dtype("int8")


def test_preprocess_image_resize_pad_normalise():
    img = np.full((40, 60, 3), 100, np.uint8)
    mean, std = (100.0, 50.0, 0.0), (1.0, 2.0, 4.0)
    x, info = I.preprocess_image(img, mean, std, short_side=50)
    # short side 40 -> 50 (scale 1.25), long 60 -> 75; padded to multiples of 32
    assert info["resized_hw"] == [50, 75] and info["padded_hw"] == [64, 96]
    assert x.shape == (1, 3, 64, 96) and x.dtype == np.float32
    assert np.all(x[0, 0, :50, :75] == 0.0) and np.all(x[0, 1, :50, :75] == 25.0)
    assert np.all(x[0, 2, :50, :75] == 25.0)
    assert np.all(x[0, :, 50:, :] == 0) and np.all(x[0, :, :, 75:] == 0)
    x, info = I.preprocess_image(img, mean, std, static_hw=(64, 64))
    assert x.shape == (1, 3, 64, 64) and info["resized_hw"] == [43, 64]


def test_npz_errors(tmp_path):
    specs = {"image": (1, 3, 64, 64)}
    with pytest.raises(SSIError, match="inputs file not found"):
        I.load_npz(tmp_path / "nope.npz", specs)
    np.savez(tmp_path / "wrong_name.npz", input=np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(SSIError, match="'input' is not an input of the model; expected 'image'"):
        I.load_npz(tmp_path / "wrong_name.npz", specs)
    np.savez(tmp_path / "wrong_shape.npz", image=np.zeros((1, 3, 32, 64), np.float32))
    with pytest.raises(SSIError, match=r"shape \[1, 3, 32, 64\], the model expects \[1, 3, 64, 64\]"):
        I.load_npz(tmp_path / "wrong_shape.npz", specs)
    np.savez(tmp_path / "ok.npz", image=np.ones((1, 3, 64, 64), np.float32))
    assert I.load_npz(tmp_path / "ok.npz", {"image": (None, 3, "h", "w")})["image"].shape == (1, 3, 64, 64)


def test_parse_shape():
    assert I.parse_shape("64x96") == (1, 3, 64, 96)
    assert I.parse_shape("2x3x64x64") == (2, 3, 64, 64)
    with pytest.raises(SSIError):
        I.parse_shape("64xabc")
