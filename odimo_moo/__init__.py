"""odimo-moo: map DNNs onto heterogeneous multi-accelerator SoCs at training time.

The SoC and layer classes are imported on first use (PEP 562): they need torch, which takes seconds
to import, and ``odimo --help`` or a plugin importing :data:`hookimpl` should not pay for it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import OdimoError, PluginError, RunFailure, UsageError
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .layer_spec import LayerSpec, LayerTable, OpKind, parse_layer_spec
    from .soc import ComputeUnit, FormulaUnit, SoC

#: The distribution this package is installed from (``pip install odimo-moo``).
DISTRIBUTION = "odimo-moo"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

#: Public names imported on first access, with the module that defines them.
_LAZY = {
    "LayerSpec": "layer_spec", "LayerTable": "layer_spec", "OpKind": "layer_spec", "parse_layer_spec": "layer_spec",
    "ComputeUnit": "soc", "FormulaUnit": "soc", "SoC": "soc",
}

__all__ = [
    "ComputeUnit", "FormulaUnit", "LayerSpec", "LayerTable", "OdimoError", "OpKind", "PluginError",
    "RunFailure", "SoC", "UsageError", "hookimpl", "parse_layer_spec",
]


def __getattr__(name: str) -> Any:
    """Import a torch-dependent public name (``SoC``, ``LayerSpec``...) when it is first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
