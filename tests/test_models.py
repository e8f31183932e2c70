"""Models: sparse order == official dense-masked order, folding, shapes, training mode."""

import pytest
import torch
from torch import nn

from ssi_deploy.models import create_model, dense_twin, list_models
from ssi_deploy.models.blocks import SSIBottleneck
from ssi_deploy.ops import contract as C


def randomise_bn(module, gen):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.normal_(generator=gen)
            m.bias.data.normal_(generator=gen)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dcn", [False, True])
@pytest.mark.parametrize("mode", ["threshold", "stochastic", "official"])
def test_sparse_block_equals_official_order(stride, dcn, mode, rng):
    ds = nn.Sequential(nn.Conv2d(32, 64, 1, stride, bias=False), nn.BatchNorm2d(64)) if stride == 2 else None
    inplanes = 32 if stride == 2 else 64
    if ds is None:
        inplanes = 64
    block = SSIBottleneck(inplanes, 16, stride, ds, dcn, index=3).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3, generator=rng)
        randomise_bn(block, rng)
        block.conv1_sigma.fill_(2.5)
        block.conv2_sigma.fill_(1.7)
    block.sampling_mode = C.SAMPLING_MODES[mode]
    block.seed = 9
    x = torch.randn(2, inplanes, 15, 17, generator=rng)
    with torch.no_grad():
        out, m1, m2 = block(x)
        block.execution = "official"
        _, r1, r2 = block(x)  # masks from the mask conv modules (the eager path merges them)
        block.override_masks = (m1, m2)  # same masks: compare the computations alone
        ref, _, _ = block(x)
    assert torch.equal(m1 > 0, r1 > 0) and torch.equal(m2 > 0, r2 > 0)
    torch.testing.assert_close(m1, r1, atol=1e-3, rtol=0)  # soft values: logits differ by rounding
    assert 0 < (m1 > 0).float().mean() < 1 and 0 < (m2 > 0).float().mean() < 1
    assert m2.shape[-2:] == out.shape[-2:]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    if mode == "official":
        assert ((m1 > 0) & (m1 < 1)).any()  # soft values exercised


@pytest.mark.parametrize("arch", ["sparse_resnet50", "sparse_resnet101_dcn"])
def test_network_sparse_equals_official(arch):
    model = create_model(arch, init_seed=1)
    model.expose_masks = True
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        sparse = model(x)
        n = len(model.feature_names)
        model.set_execution("official").set_mask_override(list(sparse[n:]))
        official = model(x)
    for a, b in zip(sparse[:n], official[:n]):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    # Without the override the masks agree too on this input (no near-threshold logits).
    model.set_mask_override(None)
    with torch.no_grad():
        again = model(x)
    assert all(torch.equal(a, b) for a, b in zip(sparse[n:], again[n:]))


def test_fused_equals_unfused():
    model = create_model("sparse_resnet101_dcn", with_fpn=True, init_seed=2)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a = model(x)
        model.fuse_for_inference()
        b = model(x)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=1e-4 * v.abs().max().item(), rtol=1e-4)
    model.train()
    assert model.backbone.blocks[0].fused is None  # training invalidates folded weights


@pytest.mark.parametrize("arch", [a for a in list_models() if not a.startswith("faster_rcnn_")])
def test_every_arch_builds_and_runs(arch):
    model = create_model(arch, with_fpn=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = model(x)
    assert model.output_names == ["p2", "p3", "p4", "p5", "p6"]
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]
    assert all(o.shape[1] == 256 for o in outs)
    model.neck = None
    with torch.no_grad():
        outs = model(x)
    assert [o.shape[1] for o in outs] == [256, 512, 1024, 2048]
    assert len(model.sampling_layers) == (2 * (16 if "50" in arch else 33) if arch.startswith("sparse") else 0)


def test_random_init_is_seeded_and_densities_realistic():
    a = create_model("sparse_resnet50", init_seed=5)
    b = create_model("sparse_resnet50", init_seed=5)
    c = create_model("sparse_resnet50", init_seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["backbone.layer1.0.conv1.weight"], sc["backbone.layer1.0.conv1.weight"])
    assert a.init_info == "random seed 5"
    from ssi_deploy.models.init import CALIBRATION_SHAPE, _smooth_image
    with torch.no_grad():
        a(_smooth_image(torch.Generator().manual_seed(5), CALIBRATION_SHAPE))
    dens = list(a.measured_densities().values())
    assert 0.15 <= sum(dens) / len(dens) <= 0.5


def test_random_init_does_not_depend_on_the_thread_count():
    """validate rebuilds a random-weight export's reference from its seed, maybe under another
    thread count (BLAS summation order) than the export was made with: the calibration must
    give the same weights up to float32 rounding. With the mask thresholds at a k-th logit
    itself, that decision flipped with the last bit and moved every BatchNorm statistic after
    it by ~1e-3; with decisions fixed, the statistics (means and variances over >= 256
    positions, other summation orders) differ by some hundred ulps at most: 1e-4 of the
    tensor's scale."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = create_model("sparse_resnet50", init_seed=3).state_dict()
        torch.set_num_threads(max(2, before))
        many = create_model("sparse_resnet50", init_seed=3).state_dict()
    finally:
        torch.set_num_threads(before)
    for k, v in many.items():
        if v.dtype.is_floating_point:
            bound = 1e-4 * (float(v.abs().max()) + 1.0)
            assert float((one[k] - v).abs().max()) <= bound, k


def test_forced_density():
    model = create_model("sparse_resnet50")
    model.set_forced_density(0.26)
    with torch.no_grad():
        model(torch.randn(1, 3, 128, 128))
    for name, d in model.measured_densities().items():
        assert 0.24 <= d <= 0.26 + 0.07, name  # top share (rounded) plus the grid points (4x4 maps)


def test_dense_twin_shares_weights():
    model = create_model("sparse_resnet101_dcn", with_fpn=True)
    twin = dense_twin(model)
    assert twin.arch == "resnet101_dcn"
    assert torch.equal(twin.state_dict()["backbone.layer3.5.conv2.weight"],
                       model.state_dict()["backbone.layer3.5.conv2.weight"])
    with torch.no_grad():
        model.set_forced_density(1.0)
        full = model(torch.ones(1, 3, 64, 64))
        dense = twin(torch.ones(1, 3, 64, 64))
    for a, b in zip(full, dense):  # full masks: SSI equals dense up to rounding
        torch.testing.assert_close(a, b, atol=1e-3 * b.abs().max().item(), rtol=1e-4)


def test_training_mode_gradients_and_temperature():
    model = create_model("sparse_resnet50", with_fpn=True)
    model.train()
    block = model.ssi_blocks[2]
    t0 = float(block.conv1_gumbel.cur_T)
    x = torch.randn(2, 3, 64, 64)
    outs = model(x)
    loss = sum(o.float().pow(2).mean() for o in outs) + model.sparsity_loss(0.1)
    loss.backward()
    for b in model.ssi_blocks:
        for p in (b.conv1_mask.weight, b.conv2_mask.weight, b.conv1_sigma, b.conv2_sigma):
            assert p.grad is not None and torch.isfinite(p.grad).all()
    assert any(b.conv2_mask.weight.grad.abs().sum() > 0 for b in model.ssi_blocks)
    assert any(b.conv1_sigma.grad.abs() > 0 for b in model.ssi_blocks)
    assert float(block.conv1_gumbel.cur_T) == pytest.approx(t0 * 0.99998)
    # official sparsity loss: weight * mean over blocks of 0.25 mean(p1) + 0.75 mean(p2)
    per_block = torch.stack([b.sparsity_loss for b in model.ssi_blocks])
    assert model.sparsity_loss(0.1).item() == pytest.approx(0.1 * per_block.mean().item())


def test_training_dcn_gradients_reach_offsets():
    model = create_model("sparse_resnet101_dcn")
    model.train()
    outs = model(torch.randn(1, 3, 64, 64))
    outs[-1].sum().backward()
    b = model.backbone.layer3[0]
    assert b.conv2_offset.weight.grad is not None and b.conv2_offset.weight.grad.abs().sum() > 0


def test_mask_override_validates_count():
    from ssi_deploy.errors import SSIError
    model = create_model("sparse_resnet50")
    with pytest.raises(SSIError, match="32 sampling layers"):
        model.set_mask_override([torch.ones(1, 1, 4, 4)])


def test_folded_weights_follow_dtype_changes():
    model = create_model("sparse_resnet50")  # returned folded
    assert model.backbone.blocks[0].fused is not None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model.double()
        assert model.backbone.blocks[0].fused["conv1"][0].dtype == torch.float64
        out = model(x.double())
    assert all(o.dtype == torch.float64 for o in out)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.float(), b, atol=1e-4 * b.abs().max().item(), rtol=1e-4)


def test_fpn_input_must_be_a_multiple_of_32():
    from ssi_deploy.errors import SSIError
    model = create_model("sparse_resnet50", with_fpn=True)
    with pytest.raises(SSIError, match="multiples of 32"):
        model(torch.randn(1, 3, 100, 96))


def test_official_interpolation_is_float32_inside():
    from ssi_deploy.models.blocks import interp_official
    f = torch.randn(1, 2, 9, 9)
    m = torch.zeros(1, 1, 9, 9)
    m[0, 0, 0, 0] = 1  # the far corner of the window only reaches (3, 3): weight ~1e-35 at s=3
    out = interp_official(f.half(), m.half(), torch.tensor(3.0))
    ref = interp_official(f, m, torch.tensor(3.0))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref, atol=2e-3, rtol=2e-3)


# -- training policy of the official backbone config: norm_eval=True, frozen_stages=0 -------

def _bns(model):
    return [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]


def _stem_params(model):
    return [model.backbone.conv1.weight, model.backbone.bn1.weight, model.backbone.bn1.bias]


@pytest.mark.parametrize("arch", ["sparse_resnet50", "resnet50"])
def test_train_keeps_backbone_batchnorm_in_eval(arch):
    model = create_model(arch, with_fpn=True)
    model.train()
    assert model.backbone.blocks[0].fused is None and not model.is_fused  # still unfolded
    assert model.training and model.backbone.training
    assert all(b.training for b in model.backbone.blocks)  # SSI blocks take the training path
    bns = _bns(model)
    assert bns and not any(bn.training for bn in bns)
    stats = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
             for bn in bns]
    model(torch.randn(2, 3, 64, 64))
    for bn, (mean, var, count) in zip(bns, stats):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
        assert torch.equal(bn.num_batches_tracked, count)


def test_train_freezes_the_stem_and_trains_the_rest():
    model = create_model("sparse_resnet50", with_fpn=True)
    bb = model.backbone
    assert bb.norm_eval is True and bb.frozen_stages == 0
    for _ in range(2):  # requires_grad=False survives train() / eval() cycles
        model.train()
        assert not any(p.requires_grad for p in _stem_params(model))
        model.eval()
        assert not any(p.requires_grad for p in _stem_params(model))
    model.train()
    torch.manual_seed(0)
    outs = model(torch.randn(2, 3, 64, 64))
    (sum(o.pow(2).mean() for o in outs) + model.sparsity_loss(0.1)).backward()
    assert all(p.grad is None for p in _stem_params(model))
    others = [bn for bn in _bns(model) if bn is not bb.bn1]
    for bn in others:  # frozen statistics, but the affine parameters are trained
        assert bn.weight.requires_grad and bn.weight.grad is not None and bn.bias.grad is not None
    assert all(bn.bias.grad.abs().sum() > 0 for bn in others)
    for b in model.ssi_blocks:
        for p in (b.conv1_mask.weight, b.conv2_mask.bias, b.conv1_sigma, b.conv2_sigma):
            assert p.grad is not None and torch.isfinite(p.grad).all()
    assert any(b.conv2_mask.weight.grad.abs().sum() > 0 for b in model.ssi_blocks)
    assert any(b.conv2_sigma.grad.abs() > 0 for b in model.ssi_blocks)


def test_train_dcn_offsets_get_gradients_with_frozen_stem():
    model = create_model("sparse_resnet101_dcn")
    model.train()
    assert not any(bn.training for bn in _bns(model))
    model(torch.randn(1, 3, 64, 64))[-1].sum().backward()
    assert model.backbone.conv1.weight.grad is None
    b = model.backbone.layer3[0]
    assert b.conv2_offset.weight.grad is not None and b.conv2_offset.weight.grad.abs().sum() > 0


def test_train_forward_and_sparsity_loss_equal_a_bn_eval_reference():
    """Default training forward == the training forward with every BN put in eval by hand."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    model = create_model("sparse_resnet50", with_fpn=True, init_seed=4).train()
    ref = create_model("sparse_resnet50", with_fpn=True, init_seed=4,
                       norm_eval=False, frozen_stages=-1).train()
    old = create_model("sparse_resnet50", with_fpn=True, init_seed=4,
                       norm_eval=False, frozen_stages=-1).train()
    for bn in _bns(ref):
        bn.eval()
    runs = []
    for m in (model, ref, old):
        torch.manual_seed(11)  # the same Gumbel noise in every run
        runs.append((m(x), m.sparsity_loss(0.1)))
    (out, loss), (out_ref, loss_ref), (out_old, loss_old) = runs
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-5)
    torch.testing.assert_close(loss, loss_ref, atol=1e-7, rtol=1e-6)
    # batch statistics (the old behaviour) give a different forward and loss
    assert not torch.allclose(out[0], out_old[0], rtol=1e-2, atol=1e-2 * out[0].abs().max().item())
    assert abs(loss.item() - loss_old.item()) > 1e-4 * loss.item()


def test_norm_eval_false_frozen_stages_minus_one_is_the_old_behaviour():
    model = create_model("sparse_resnet50", norm_eval=False, frozen_stages=-1)
    bb = model.backbone
    model.train()
    assert all(bn.training for bn in _bns(model))
    assert all(p.requires_grad for p in model.parameters())
    mean = bb.layer2[0].bn2.running_mean.clone()
    outs = model(torch.randn(2, 3, 64, 64))
    assert not torch.equal(bb.layer2[0].bn2.running_mean, mean)  # statistics updated
    outs[-1].sum().backward()
    assert bb.conv1.weight.grad is not None and bb.bn1.weight.grad is not None
    model.eval()
    assert not any(bn.training for bn in _bns(model))


def test_frozen_stages_freeze_layers_and_can_be_changed():
    model = create_model("sparse_resnet50", frozen_stages=1)
    bb = model.backbone
    model.train()
    assert not any(b.training for b in bb.layer1) and all(b.training for b in bb.layer2)
    assert not any(p.requires_grad for p in bb.layer1.parameters())
    assert all(p.requires_grad for p in bb.layer2.parameters())
    x = torch.randn(1, 3, 64, 64)
    for _ in range(2):  # no stale loss graph from the previous step
        outs = model(x)
        loss = model.sparsity_loss(0.1)
        assert len([b for b in model.ssi_blocks if b.sparsity_loss is not None]) == 16
        (outs[-1].mean() + loss).backward()
    assert all(p.grad is None for p in bb.layer1.parameters())
    assert bb.layer2[0].conv1_mask.weight.grad is not None
    bb.set_training_options(frozen_stages=-1)  # unfreezes, keeps the current (train) mode
    assert bb.frozen_stages == -1 and all(p.requires_grad for p in model.parameters())
    assert all(b.training for b in bb.blocks) and not any(bn.training for bn in _bns(model))
    bb.set_training_options(norm_eval=False)
    assert all(bn.training for bn in _bns(model))


def test_training_options_leave_eval_results_unchanged():
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    a = create_model("sparse_resnet50", with_fpn=True, init_seed=1)
    b = create_model("sparse_resnet50", with_fpn=True, init_seed=1, norm_eval=False,
                     frozen_stages=-1)
    c = create_model("sparse_resnet50", with_fpn=True, init_seed=1, frozen_stages=4)
    with torch.no_grad():
        ref = a(x)
        for m in (b, c):
            assert all(torch.equal(u, v) for u, v in zip(ref, m(x)))
        a.train()
        a.eval()
        assert all(not m.training for m in a.modules())
        again = a(x)
        a.fuse_for_inference()
        folded = a(x)
    for u, v, w in zip(ref, again, folded):
        torch.testing.assert_close(v, u, atol=1e-4 * u.abs().max().item(), rtol=1e-4)
        assert torch.equal(w, u)


@pytest.mark.parametrize("kwargs", [dict(frozen_stages=5), dict(frozen_stages=-2),
                                    dict(frozen_stages=1.0), dict(frozen_stages=True),
                                    dict(norm_eval="no")])
def test_bad_training_options_raise(kwargs):
    from ssi_deploy.errors import SSIError
    with pytest.raises(SSIError, match="frozen_stages|norm_eval") as err:
        create_model("sparse_resnet50", **kwargs)
    assert "\n" not in str(err.value)
    model = create_model("resnet50")
    with pytest.raises(SSIError):
        model.backbone.set_training_options(**kwargs)
    assert model.backbone.frozen_stages == 0 and model.backbone.norm_eval is True
