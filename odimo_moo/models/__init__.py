"""Model registry entries and the lookup that builds a registered model by name.

Plugins return :class:`ModelEntry` objects from the ``odimo_register_models`` hook; the built-in
ones live in :mod:`odimo_moo.models.builtin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from ..registry import Registered, pick


@dataclass(frozen=True)
class ModelEntry:
    """A named model builder.

    ``build(num_classes, in_channels, input_size)`` returns a fresh, torch.fx-traceable
    ``nn.Module`` mapping ``[B, in_channels, H, W]`` inputs (``input_size == (H, W)``) to
    ``[B, num_classes]`` logits.
    """

    name: str
    build: Callable[..., nn.Module]
    description: str


def build_model(registry_models: Mapping[str, Any], name: str, num_classes: int, in_channels: int,
                input_size: tuple[int, int]) -> nn.Module:
    """Build model ``name`` from ``registry_models`` (``PluginRegistry.models()`` or name -> ModelEntry).

    Raises :class:`~odimo_moo.errors.UsageError` listing the known names if ``name`` is unknown.
    """
    registered = {key: value if isinstance(value, Registered) else Registered(key, value, "", "")
                  for key, value in registry_models.items()}
    entry: ModelEntry = pick(registered, name, "model")
    return entry.build(num_classes=num_classes, in_channels=in_channels, input_size=tuple(input_size))


__all__ = ["ModelEntry", "build_model"]
