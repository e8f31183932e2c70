"""The engine inspector check of `ssi-deploy build`: reformat layers next to SSI plugin layers
(channels-last fp16 should flow from one SSIBottleneck plugin to the next without a copy)."""

from __future__ import annotations

import json

from ssi_deploy.tensorrt.inspect import check_reformats

HWC8 = "Channel major FP16 format where channel % 8 == 0"
LINEAR = "Row major linear FP16 format"


def _layer(name, ltype, ins, outs, fmt=HWC8):
    return {"Name": name, "LayerType": ltype,
            "Inputs": [{"Name": t, "Format/Datatype": fmt} for t in ins],
            "Outputs": [{"Name": t, "Format/Datatype": fmt} for t in outs]}


def test_no_reformat_between_blocks():
    j = {"Layers": [_layer("stem", "CaskConvolution", ["image"], ["s"]),
                    _layer("/layer1.0/SSIBottleneck", "PluginV3", ["s"], ["b0", "m0", "n0"]),
                    _layer("/layer1.1/SSIBottleneck", "PluginV3", ["b0"], ["b1", "m1", "n1"])],
         "Bindings": ["image"]}
    res = check_reformats(json.dumps(j))
    assert res.ok and res.plugin_layers == 2 and res.formats == {HWC8: 2}
    assert "no reformat layer next to the 2 SSI plugin layer(s)" in res.line()


def test_reformat_between_blocks_is_reported_with_both_ends():
    j = {"Layers": [_layer("/layer1.0/SSIBottleneck", "PluginV3", ["s"], ["b0"], LINEAR),
                    _layer("Reformatting CopyNode for Input Tensor 0 to /layer1.1/SSIBottleneck",
                           "Reformat", ["b0"], ["b0_r"]),
                    _layer("/layer1.1/SSIBottleneck", "PluginV3", ["b0_r"], ["b1"]),
                    _layer("head reformat", "Reformat", ["other"], ["other_r"]),  # not next to a plugin
                    _layer("/layer1.1/SSIBottleneck [profile 1]", "Reformat", ["b0"], ["x"])],
         "Bindings": []}
    res = check_reformats(j)
    assert not res.ok and len(res.reformats) == 1
    assert "/layer1.0/SSIBottleneck -> /layer1.1/SSIBottleneck" in res.reformats[0]
    assert res.line().startswith("warning: 1 reformat layer(s) next to SSI plugin layers")
    assert res.formats == {LINEAR: 1, HWC8: 1}
