"""Checkpoints: official layout round trip, torchvision initialisation, every error case."""

import pytest
import torch

from ssi_deploy.errors import SSIError
from ssi_deploy.models import create_model, detect_arch, read_checkpoint


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory):
    """An official-layout file: state_dict with backbone./neck./heads, plus meta and optimizer."""
    model = create_model("sparse_resnet50", with_fpn=True, init_seed=3)
    sd = dict(model.state_dict())
    sd["rpn_head.rpn_conv.weight"] = torch.randn(256, 256, 3, 3)
    sd["bbox_head.fc_cls.weight"] = torch.randn(81, 1024)
    path = tmp_path_factory.mktemp("ckpt") / "ssi_r50.pth"
    torch.save({"meta": {"epoch": 12, "config": "x"}, "state_dict": sd,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return path, model


def test_official_round_trip(official_ckpt):
    path, src = official_ckpt
    model = create_model("sparse_resnet50", with_fpn=True, checkpoint=path)
    rep = model.load_report
    assert rep.format == "official"
    assert "rpn_head.rpn_conv.weight" in rep.ignored and "meta" in rep.ignored
    assert "optimizer" in rep.ignored
    assert model.init_info.startswith("checkpoint sha256:") and len(rep.sha256) == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), src(x)):
            assert torch.equal(a, b)


def test_backbone_only_model_ignores_neck(official_ckpt):
    path, _ = official_ckpt
    model = create_model("sparse_resnet50", checkpoint=path)
    assert any(k.startswith("neck.") for k in model.load_report.ignored)


def test_detect_arch(official_ckpt, tmp_path):
    path, _ = official_ckpt
    # head keys make it a detector checkpoint; without them, a backbone + FPN
    assert detect_arch(read_checkpoint(path)) == ("faster_rcnn_sparse_resnet50", True)
    sd = torch.load(path, weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in sd.items() if "_head." not in k}},
               tmp_path / "bb.pth")
    assert detect_arch(read_checkpoint(tmp_path / "bb.pth")) == ("sparse_resnet50", True)


def test_wrong_arch_names_first_keys_and_hint(official_ckpt):
    path, _ = official_ckpt
    with pytest.raises(SSIError) as e:
        create_model("sparse_resnet101_dcn", checkpoint=path)
    msg = str(e.value)
    assert "missing" in msg and "backbone.layer" in msg and "--arch faster_rcnn_sparse_resnet50" in msg
    assert "--with-fpn" not in msg  # a detector always has its FPN
    assert "\n" not in msg


def test_unexpected_and_misshaped_keys(official_ckpt, tmp_path):
    path, _ = official_ckpt
    ckpt = torch.load(path, weights_only=True)
    sd = ckpt["state_dict"]
    sd["backbone.layer1.0.extra.weight"] = torch.zeros(3)
    sd["backbone.layer2.0.conv1.weight"] = torch.zeros(5, 5, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(ckpt, bad)
    with pytest.raises(SSIError, match=r"unexpected 1 keys \(backbone.layer1.0.extra.weight\).*mis-shaped 1 "
                                       r"\(backbone.layer2.0.conv1.weight \[5, 5, 1, 1\] vs model \[128, 256, 1, 1\]\)"):
        create_model("sparse_resnet50", with_fpn=True, checkpoint=bad)


def test_missing_keys(official_ckpt, tmp_path):
    path, _ = official_ckpt
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"]["backbone.layer3.2.conv1_sigma"]
    bad = tmp_path / "missing.pth"
    torch.save(ckpt, bad)
    with pytest.raises(SSIError, match=r"missing 1 keys \(backbone.layer3.2.conv1_sigma\)"):
        create_model("sparse_resnet50", with_fpn=True, checkpoint=bad)


def test_torchvision_checkpoint_initialises_ssi_backbone(tmp_path):
    dense = create_model("resnet101", init_seed=4)
    tv = {k.removeprefix("backbone."): v for k, v in dense.state_dict().items()}
    tv["fc.weight"], tv["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    path = tmp_path / "resnet101-tv.pth"
    torch.save(tv, path)
    model = create_model("sparse_resnet101_dcn", checkpoint=path)
    rep = model.load_report
    assert rep.format == "torchvision" and "fc.weight" in rep.ignored
    assert any("conv1_mask" in k for k in rep.initialised)
    for b in model.ssi_blocks:
        assert (b.conv1_mask.weight == 0).all() and (b.conv2_mask.bias == 3.0).all()
        assert b.conv1_sigma.item() == 3.0 and b.conv2_sigma.item() == 3.0
        if b.with_dcn:
            assert (b.conv2_offset.weight == 0).all()
    assert torch.equal(model.state_dict()["backbone.layer2.1.conv2.weight"], tv["layer2.1.conv2.weight"])


def test_not_found_and_corrupt_and_unsafe_files(tmp_path):
    with pytest.raises(SSIError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(SSIError, match="cannot read checkpoint"):
        read_checkpoint(junk)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}, "cfg": Custom()}, unsafe)
    with pytest.raises(SSIError, match="weights_only=True"):
        read_checkpoint(unsafe)
    empty = tmp_path / "empty.pth"
    torch.save({"hello": 1}, empty)
    with pytest.raises(SSIError, match="holds no state dict"):
        read_checkpoint(empty)


class Custom:  # an arbitrary pickled object: weights_only loading must refuse it
    pass


def test_torchvision_checkpoint_with_fpn_is_reproducible(tmp_path):
    dense = create_model("resnet50", init_seed=4)
    tv = {k.removeprefix("backbone."): v for k, v in dense.state_dict().items()}
    path = tmp_path / "resnet50-tv.pth"
    torch.save(tv, path)
    a = create_model("sparse_resnet50", with_fpn=True, checkpoint=path)
    b = create_model("sparse_resnet50", with_fpn=True, checkpoint=path)
    assert any(k.startswith("neck.") for k in a.load_report.initialised)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the FPN's init is seeded


def test_text_file_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "hello.pth"
    bad.write_text("hello\n")
    with pytest.raises(SSIError, match="not a torch.save file"):
        read_checkpoint(bad)
