"""Reading the engine inspector's JSON and checking that every SSI node became a plugin layer.

Format (``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` of an engine
built with ``ProfilingVerbosity.DETAILED``)::

    {"Layers": [{"Name": "...", "LayerType": "PluginV3", "Metadata": "[ONNX Layer: node]", ...}, ...],
     "Bindings": ["input", ...]}

With a lower verbosity ``Layers`` is a list of names only. Layers of the second and later
optimization profiles carry a ``[profile N]`` suffix; only the first profile's layers are
checked. ``Metadata`` lists the ONNX nodes a layer came from, separated by ``\\x1e``/``\\x1f``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..errors import SSIError

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_PROFILE = re.compile(r"\[profile +[0-9]+\]")


@dataclass
class LayerInfo:
    name: str
    layer_type: str
    onnx_nodes: list[str] = field(default_factory=list)

    @property
    def is_plugin(self) -> bool:
        return "plugin" in self.layer_type.lower()


def parse_engine_json(text: str | dict) -> list[LayerInfo]:
    """The layers of the first optimization profile; SSIError when the JSON is not detailed."""
    data = json.loads(text) if isinstance(text, str) else text
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise SSIError("the engine inspector returned no layer list; cannot check the plugin layers")
    out = []
    for raw in layers:
        if not isinstance(raw, dict):
            raise SSIError("the engine holds no detailed layer information (built without "
                           "ProfilingVerbosity.DETAILED): rebuild it with `ssi-deploy build`")
        name = str(raw.get("Name", ""))
        if _PROFILE.search(name):
            continue
        ltype = str(raw.get("LayerType", ""))
        meta = str(raw.get("Metadata", ""))
        nodes = [m.group(1) for part in re.split(r"[\x1e\x1f]", meta) for m in _ONNX_LAYER.finditer(part)]
        out.append(LayerInfo(name, ltype, nodes))
    return out


@dataclass
class PluginCheck:
    matched: dict[str, str]  # SSI node name -> plugin layer name
    missing: list[str]  # SSI nodes without a plugin layer
    plugin_layers: int
    total_layers: int

    @property
    def ok(self) -> bool:
        return not self.missing


def check_plugin_layers(engine_json: str | dict, ssi_node_names: list[str]) -> PluginCheck:
    """Match each SSI node to a plugin layer (by ONNX metadata, else by layer name)."""
    layers = parse_engine_json(engine_json)
    plugins = [lay for lay in layers if lay.is_plugin]
    matched: dict[str, str] = {}
    missing: list[str] = []
    used: set[int] = set()
    for node in ssi_node_names:
        for i, lay in enumerate(plugins):
            if i in used:
                continue
            if node in lay.onnx_nodes or (not lay.onnx_nodes and lay.name == node):
                matched[node] = lay.name
                used.add(i)
                break
        else:
            missing.append(node)
    return PluginCheck(matched, missing, len(plugins), len(layers))


def require_plugin_layers(engine_json: str | dict, ssi_node_names: list[str]) -> PluginCheck:
    """SSIError unless the engine holds one plugin layer per SSI node."""
    res = check_plugin_layers(engine_json, ssi_node_names)
    if not res.ok:
        shown = ", ".join(res.missing[:5]) + (f" and {len(res.missing) - 5} more" if len(res.missing) > 5 else "")
        raise SSIError(
            f"the engine has no plugin layer for {len(res.missing)} of {len(ssi_node_names)} SSI "
            f"node(s) ({shown}): TensorRT used the dense reference body instead of the SSI "
            f"plugin; the engine was not written as a success. Check the plugin library "
            f"(`ssi-deploy doctor`) and the TensorRT version")
    return res
