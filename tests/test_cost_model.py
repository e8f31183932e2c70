"""The official cost model: the paper's figures and the density scaling."""

import pytest

from ssi_deploy.cost_model import backbone_gmacs, layer_costs

CANVAS = (1, 3, 992, 1664)


def test_dense_resnet101_dcn_is_289_47():
    assert round(backbone_gmacs("resnet101_dcn", CANVAS), 2) == 289.47


@pytest.mark.parametrize("density,reported", [(0.51, 164.8), (0.35, 120.3), (0.26, 94.4), (0.175, 71.4)])
def test_released_models_at_their_equivalent_densities(density, reported):
    # The spec gives "about" these uniform densities for the released models.
    assert backbone_gmacs("sparse_resnet101_dcn", CANVAS, density) == pytest.approx(reported, rel=0.015)


def test_density_scaling_matches_hand_count():
    # One block by hand: layer1.0 of a sparse ResNet-50 at 64x64 input (stage 1 at 16x16).
    h = w = 64
    d1, d2 = 0.3, 0.6
    costs = {c.name: c.macs for c in layer_costs("sparse_resnet50", h, w)}
    assert costs["layer1.0.conv1"] == 64 * 64 * 16 * 16
    assert costs["layer1.0.conv2"] == 9 * 64 * 64 * 16 * 16
    assert costs["layer1.0.conv1_interpolate"] == 49 * 64 * 16 * 16
    assert costs["layer1.0.conv3_interpolate"] == 49 * 256 * 16 * 16
    dens = [1.0] * 32
    dens[0], dens[1] = d1, d2
    full = backbone_gmacs("sparse_resnet50", (1, 3, h, w), [1.0] * 32)
    part = backbone_gmacs("sparse_resnet50", (1, 3, h, w), dens)
    expected_drop = (costs["layer1.0.conv1"] * (1 - d1) + (costs["layer1.0.conv2"] + costs["layer1.0.conv3"]) * (1 - d2)
                     - costs["layer1.0.conv1_interpolate"] * d1 * (1 - d1)
                     - costs["layer1.0.conv3_interpolate"] * d2 * (1 - d2)) / 1e9
    assert full - part == pytest.approx(expected_drop, rel=1e-9)


def test_batch_scales_and_dict_densities():
    one = backbone_gmacs("sparse_resnet50", (1, 3, 128, 128), 0.3)
    assert backbone_gmacs("sparse_resnet50", (2, 3, 128, 128), 0.3) == pytest.approx(2 * one)
    as_dict = {f"l{i}": 0.3 for i in range(32)}
    assert backbone_gmacs("sparse_resnet50", (1, 3, 128, 128), as_dict) == pytest.approx(one)
    with pytest.raises(ValueError, match="32 sampling layers"):
        backbone_gmacs("sparse_resnet50", (1, 3, 128, 128), [0.3] * 3)


def test_measured_densities_feed_the_counter():
    import torch

    from ssi_deploy.models import create_model
    model = create_model("sparse_resnet50")
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    g = backbone_gmacs("sparse_resnet50", (1, 3, 64, 64), model.measured_densities())
    assert backbone_gmacs("sparse_resnet50", (1, 3, 64, 64), 0.0) < g < backbone_gmacs("sparse_resnet50", (1, 3, 64, 64), 1.0)
