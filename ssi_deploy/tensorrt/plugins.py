"""Finding the SSI plugin library and loading it into a TensorRT plugin registry.

Search order: the ``--plugins`` option, the environment variable ``SSI_PLUGIN_LIBRARY``, the
library installed with the package (``ssi_deploy/lib/libssi_trt_plugins.so``), then the CMake
build folder of a source checkout (``build/plugins/``). After loading, every op of the contract
must have a creator with the contract's plugin version and namespace, or the library is
rejected as incompatible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SSIError
from ..ops import contract

LIBRARY_NAME = "libssi_trt_plugins.so"
ENV_VAR = "SSI_PLUGIN_LIBRARY"
PACKAGE_LIB_DIR = Path(__file__).resolve().parents[1] / "lib"
SOURCE_BUILD_DIR = Path(__file__).resolve().parents[2] / "build" / "plugins"
BUILD_HINT = ("build it with `make plugins` (or `cmake -S plugins -B build/plugins && cmake --build "
              "build/plugins`) and pass --plugins, set SSI_PLUGIN_LIBRARY, or use the Docker image")


@dataclass(frozen=True)
class PluginCreatorInfo:
    name: str
    version: str
    namespace: str


def candidate_paths() -> list[Path]:
    """Where a plugin library is looked for when none is named (existing or not)."""
    out = [PACKAGE_LIB_DIR / LIBRARY_NAME]
    if SOURCE_BUILD_DIR.is_dir():
        out += sorted(SOURCE_BUILD_DIR.rglob(LIBRARY_NAME))
    else:
        out.append(SOURCE_BUILD_DIR / LIBRARY_NAME)
    return out


def find_plugin_library(option: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """The plugin library to use: option, then $SSI_PLUGIN_LIBRARY, then the installed one."""
    if option:
        p = Path(option)
        if not p.is_file():
            raise SSIError(f"plugin library {p} (--plugins) does not exist; {BUILD_HINT}")
        return p.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env)
        if not p.is_file():
            raise SSIError(f"plugin library {p} (from ${ENV_VAR}) does not exist; "
                           f"fix or unset ${ENV_VAR}")
        return p.resolve()
    for p in candidate_paths():
        if p.is_file():
            return p.resolve()
    if required:
        raise SSIError(f"the SSI plugin library {LIBRARY_NAME} was not found (looked in "
                       f"{', '.join(str(p) for p in candidate_paths())}); {BUILD_HINT}")
    return None


def list_creators(registry) -> list[PluginCreatorInfo]:
    """Every creator a TensorRT plugin registry holds."""
    out = []
    for c in registry.all_creators:
        out.append(PluginCreatorInfo(str(c.name), str(c.plugin_version), str(c.plugin_namespace)))
    return out


def ssi_creators(creators: list[PluginCreatorInfo]) -> list[PluginCreatorInfo]:
    return [c for c in creators if c.name in contract.OPS and c.namespace == contract.PLUGIN_NAMESPACE]


def check_creators(registry, path: Path | str) -> list[PluginCreatorInfo]:
    """Every contract op with a plugin (``contract.PLUGIN_OPS``: the three building blocks and
    SSIBottleneck) must have a creator of the contract's version and namespace."""
    missing = []
    for op in contract.PLUGIN_OPS.values():
        if registry.get_creator(op.name, contract.PLUGIN_VERSION, contract.PLUGIN_NAMESPACE) is None:
            missing.append(op.name)
    if missing:
        found = ssi_creators(list_creators(registry)) or [
            c for c in list_creators(registry) if c.name in contract.OPS]
        have = ", ".join(f"{c.name} v{c.version} ns {c.namespace!r}" for c in found) or "none"
        raise SSIError(
            f"plugin library {path} is incompatible: it registers no creator for "
            f"{', '.join(missing)} (version {contract.PLUGIN_VERSION}, namespace "
            f"{contract.PLUGIN_NAMESPACE!r}; SSI creators found: {have}); rebuild it from this "
            f"checkout's plugins/ ({BUILD_HINT.split(';')[0]})")
    return ssi_creators(list_creators(registry))


def load_plugin_library(registry, path: Path | str) -> tuple[object, list[PluginCreatorInfo]]:
    """Load ``path`` into ``registry`` (builder's or runtime's) and check its creators.

    Returns the library handle and the SSI creators. A library whose creators are already
    registered (loaded earlier in this process) is accepted as it is.
    """
    path = str(path)
    if registry.get_creator(next(iter(contract.PLUGIN_OPS)), contract.PLUGIN_VERSION,
                            contract.PLUGIN_NAMESPACE) is not None:
        # already registered (TensorRT refuses to load the same creators twice)
        return None, check_creators(registry, path)
    try:
        handle = registry.load_library(path)
    except Exception as e:  # pybind raises on some versions instead of returning None
        raise SSIError(f"plugin library {path} could not be loaded by TensorRT ({_one_line(e)}); "
                       f"it must export getCreators/setLoggerFinder and match this TensorRT "
                       f"major version; {BUILD_HINT}") from None
    if handle is None:
        raise SSIError(f"plugin library {path} could not be loaded by TensorRT (not a TensorRT "
                       f"plugin library, built against another TensorRT major version, or a "
                       f"missing dependency: see the TensorRT messages above); {BUILD_HINT}")
    return handle, check_creators(registry, path)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
