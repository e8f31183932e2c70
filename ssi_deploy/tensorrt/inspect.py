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


@dataclass
class ReformatCheck:
    """Reformat layers next to SSI plugin layers (each costs a read and a write of the tensor:
    more than the block saves, so channels-last fp16 should flow from block to block)."""

    reformats: list[str]  # "layer: producer -> consumer" for each one touching a plugin layer
    plugin_layers: int
    formats: dict[str, int]  # format of the plugin layers' first input -> how many layers

    @property
    def ok(self) -> bool:
        return not self.reformats

    def line(self) -> str:
        fmt = ", ".join(f"{k} x{v}" for k, v in sorted(self.formats.items())) or "unknown"
        if self.ok:
            return (f"formats: no reformat layer next to the {self.plugin_layers} SSI plugin "
                    f"layer(s) (their input formats: {fmt})")
        shown = "; ".join(self.reformats[:3]) + (f"; and {len(self.reformats) - 3} more"
                                                 if len(self.reformats) > 3 else "")
        return (f"warning: {len(self.reformats)} reformat layer(s) next to SSI plugin layers "
                f"({shown}): each one copies a whole activation; input formats: {fmt}")


def _tensors(raw: dict, key: str) -> list[dict]:
    items = raw.get(key) or []
    return [t for t in items if isinstance(t, dict)]


def check_reformats(engine_json: str | dict) -> ReformatCheck:
    """Reformat layers whose input comes from, or whose output goes to, a plugin layer (the
    inspector's detailed JSON: ``Inputs``/``Outputs`` with ``Name`` and ``Format/Datatype``)."""
    data = json.loads(engine_json) if isinstance(engine_json, str) else engine_json
    layers = [raw for raw in (data.get("Layers") or []) if isinstance(raw, dict)
              and not _PROFILE.search(str(raw.get("Name", "")))]
    plugins = [raw for raw in layers if "plugin" in str(raw.get("LayerType", "")).lower()]
    produced = {t.get("Name"): str(raw.get("Name", "")) for raw in plugins for t in _tensors(raw, "Outputs")}
    consumed = {t.get("Name"): str(raw.get("Name", "")) for raw in plugins for t in _tensors(raw, "Inputs")}
    formats: dict[str, int] = {}
    for raw in plugins:
        ins = _tensors(raw, "Inputs")
        if ins:
            f = str(ins[0].get("Format/Datatype", "unknown"))
            formats[f] = formats.get(f, 0) + 1
    found = []
    for raw in layers:
        if "reformat" not in str(raw.get("LayerType", "")).lower():
            continue
        src = [produced[t.get("Name")] for t in _tensors(raw, "Inputs") if t.get("Name") in produced]
        dst = [consumed[t.get("Name")] for t in _tensors(raw, "Outputs") if t.get("Name") in consumed]
        if src or dst:
            found.append(f"{raw.get('Name', '?')}: {', '.join(src) or 'TensorRT'} -> "
                         f"{', '.join(dst) or 'TensorRT'}")
    return ReformatCheck(found, len(plugins), formats)
