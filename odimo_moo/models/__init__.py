"""Model registry entries and the lookup that builds a registered model by name.

Plugins return :class:`ModelEntry` objects from the ``odimo_register_models`` hook; the built-in
ones live in :mod:`odimo_moo.models.builtin` and name their builders with :class:`LazyBuilder`, so
that registering them (``odimo plugins``) does not import torch.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import UsageError
from ..registry import Registered, pick

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """A named model builder.

    ``build(num_classes, in_channels, input_size)`` returns a fresh, torch.fx-traceable
    ``nn.Module`` mapping ``[B, in_channels, H, W]`` inputs (``input_size == (H, W)``) to
    ``[B, num_classes]`` logits. Builders may take further keyword options (e.g. the MobileNetV1
    builders' ``stem_stride``), passed through :func:`build_model`'s ``options``.
    """

    name: str
    build: Callable[..., nn.Module]
    description: str


@dataclass(frozen=True)
class LazyBuilder:
    """The builder ``function`` of ``module`` (with keyword options ``preset``), imported on first use.

    It is called, and :func:`inspect.signature` reads it, like the function itself (with ``preset``
    applied as by :func:`functools.partial`), so :func:`build_model` checks options against it.
    """

    module: str
    function: str
    preset: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def resolve(self) -> Callable[..., nn.Module]:
        """The builder itself (importing ``module``)."""
        builder = getattr(importlib.import_module(self.module), self.function)
        return functools.partial(builder, **self.preset) if self.preset else builder

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.resolve())

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        return self.resolve()(*args, **kwargs)


def build_model(registry_models: Mapping[str, Any], name: str, num_classes: int, in_channels: int,
                input_size: tuple[int, int], options: Mapping[str, Any] | None = None) -> nn.Module:
    """Build model ``name`` from ``registry_models`` (``PluginRegistry.models()`` or name -> ModelEntry).

    ``options`` are extra keyword arguments of the builder (e.g. ``{"stem_stride": 1}``); a builder
    that does not take one raises :class:`~odimo_moo.errors.UsageError`.

    Raises :class:`~odimo_moo.errors.UsageError` listing the known names if ``name`` is unknown.
    """
    registered = {key: value if isinstance(value, Registered) else Registered(key, value, "", "")
                  for key, value in registry_models.items()}
    entry: ModelEntry = pick(registered, name, "model")
    options = dict(options or {})
    reserved = sorted({"num_classes", "in_channels", "input_size"} & set(options))
    if reserved:
        raise UsageError(f"model option(s) {', '.join(reserved)} are set by the data set, not by options")
    try:
        signature = inspect.signature(entry.build)
    except (TypeError, ValueError):  # builtins and some callables have no signature: let the call check
        signature = None
    if signature is not None and options:
        try:
            signature.bind(num_classes=num_classes, in_channels=in_channels, input_size=tuple(input_size),
                           **options)
        except TypeError as exc:
            raise UsageError(f"model {name!r} does not take option(s) {', '.join(sorted(options))}: {exc}") from exc
    return entry.build(num_classes=num_classes, in_channels=in_channels, input_size=tuple(input_size), **options)


__all__ = ["LazyBuilder", "ModelEntry", "build_model"]
