"""odimo-moo: map DNNs onto heterogeneous multi-accelerator SoCs at training time."""

from .errors import OdimoError, PluginError, RunFailure, UsageError
from .hookspecs import hookimpl
from .layer_spec import LayerSpec, LayerTable, OpKind, parse_layer_spec
from .soc import ComputeUnit, FormulaUnit, SoC

__version__ = "0.1.0"

__all__ = [
    "ComputeUnit", "FormulaUnit", "LayerSpec", "LayerTable", "OdimoError", "OpKind", "PluginError",
    "RunFailure", "SoC", "UsageError", "hookimpl", "parse_layer_spec",
]
