"""Layer specifications: the shape facts a cost model needs, for one layer or a table of layers.

A :class:`LayerSpec` describes one Conv2d or Linear layer with PyTorch's attribute names. A
:class:`LayerTable` stacks many specs into tensors so that cost formulas, written with torch
operations, evaluate every layer of a network in one vectorized call. Importing this module does not
import torch (SoC plugins build specs and formulas while ``odimo plugins`` lists them); a table does.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Sequence

from .errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn


class OpKind(enum.Enum):
    """The operation a layer performs."""

    CONV2D = "conv2d"
    LINEAR = "linear"


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = tuple(value)
    return (int(first), int(second))


# Cost formulas compute in float64, which holds every integer up to 2**53 exactly.
MAX_DIMENSION = 2 ** 53


@dataclass(frozen=True)
class LayerSpec:
    """Shape of one layer. Linear layers are 1x1 convolutions on a 1x1 output."""

    op: OpKind
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    groups: int = 1
    output_size: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
                raise UsageError(f"layer spec: {name} must be a positive integer (at most 2**53), got {value!r}")
        for name in ("kernel_size", "stride", "output_size"):
            value = getattr(self, name)
            if len(value) != 2 or any((not isinstance(v, int)) or not 1 <= v <= MAX_DIMENSION for v in value):
                raise UsageError(f"layer spec: {name} must be two positive integers (at most 2**53), got {value!r}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise UsageError(
                f"layer spec: groups={self.groups} must divide in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )

    @property
    def is_depthwise(self) -> bool:
        return self.op is OpKind.CONV2D and self.groups == self.in_channels == self.out_channels > 1

    @property
    def macs(self) -> int:
        kh, kw = self.kernel_size
        ho, wo = self.output_size
        return self.out_channels * (self.in_channels // self.groups) * kh * kw * ho * wo

    @classmethod
    def from_module(cls, module: nn.Module, output_size: tuple[int, int] = (1, 1)) -> "LayerSpec":
        """Spec of a ``nn.Conv2d`` or ``nn.Linear`` whose output has spatial size ``output_size``."""
        from torch import nn

        if isinstance(module, nn.Conv2d):
            return cls(OpKind.CONV2D, module.in_channels, module.out_channels, _pair(module.kernel_size),
                       _pair(module.stride), module.groups, _pair(output_size))
        if isinstance(module, nn.Linear):
            return cls(OpKind.LINEAR, module.in_features, module.out_features)
        raise UsageError(f"no layer spec for {type(module).__name__}: only Conv2d and Linear are costed")

    def describe(self) -> str:
        """The spec in the CLI's ``--layer`` syntax (round-trips through :func:`parse_layer_spec`)."""
        if self.op is OpKind.LINEAR:
            return f"linear in_features={self.in_channels} out_features={self.out_channels}"
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ho, wo = self.output_size
        return (f"conv2d in_channels={self.in_channels} out_channels={self.out_channels} "
                f"kernel_size={kh}x{kw} output_size={ho}x{wo} stride={sh}x{sw} groups={self.groups}")


_CONV_KEYS = {"in_channels", "out_channels", "kernel_size", "output_size", "stride", "groups"}
_CONV_REQUIRED = {"in_channels", "out_channels", "kernel_size", "output_size"}
_LINEAR_KEYS = {"in_features", "out_features"}
_INT = re.compile(r"^[0-9]+$")
_PAIR = re.compile(r"^([0-9]+)x([0-9]+)$")


def _parse_int(key: str, text: str) -> int:
    if not _INT.match(text):
        raise UsageError(f"layer spec: {key}={text!r} is not a positive integer")
    return int(text)


def _parse_pair(key: str, text: str) -> tuple[int, int]:
    match = _PAIR.match(text)
    if match:
        return (int(match.group(1)), int(match.group(2)))
    value = _parse_int(key, text)
    return (value, value)


def parse_layer_spec(text: str) -> LayerSpec:
    """Parse ``"conv2d in_channels=.. out_channels=.. kernel_size=3 output_size=8x8 [stride=1] [groups=1]"``
    or ``"linear in_features=.. out_features=.."``."""
    words = text.split()
    if not words:
        raise UsageError("layer spec is empty: expected e.g. 'conv2d in_channels=16 out_channels=16 "
                         "kernel_size=3 output_size=8x8'")
    op_name, pairs = words[0].lower(), words[1:]
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"layer spec: {pair!r} is not key=value")
        if key in values:
            raise UsageError(f"layer spec: {key} given twice")
        values[key] = value
    if op_name == OpKind.CONV2D.value:
        allowed, required = _CONV_KEYS, _CONV_REQUIRED
    elif op_name == OpKind.LINEAR.value:
        allowed, required = _LINEAR_KEYS, _LINEAR_KEYS
    else:
        raise UsageError(f"layer spec: unknown layer type {words[0]!r}; use 'conv2d' or 'linear'")
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UsageError(f"layer spec: unknown key(s) {', '.join(unknown)} for {op_name}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(values))
    if missing:
        raise UsageError(f"layer spec: missing {', '.join(missing)} for {op_name}")
    if op_name == OpKind.LINEAR.value:
        return LayerSpec(OpKind.LINEAR, _parse_int("in_features", values["in_features"]),
                         _parse_int("out_features", values["out_features"]))
    return LayerSpec(
        OpKind.CONV2D,
        _parse_int("in_channels", values["in_channels"]),
        _parse_int("out_channels", values["out_channels"]),
        _parse_pair("kernel_size", values["kernel_size"]),
        _parse_pair("stride", values.get("stride", "1")),
        _parse_int("groups", values.get("groups", "1")),
        _parse_pair("output_size", values["output_size"]),
    )


@dataclass(frozen=True)
class LayerTable:
    """Many layer specs as float64 tensors of shape ``[L]`` (one entry per layer).

    Cost formulas read these fields exactly like a :class:`LayerSpec`'s scalar fields, so one formula
    serves a single layer and a whole network.
    """

    in_channels: torch.Tensor
    out_channels: torch.Tensor
    kh: torch.Tensor
    kw: torch.Tensor
    sh: torch.Tensor
    sw: torch.Tensor
    groups: torch.Tensor
    ho: torch.Tensor
    wo: torch.Tensor

    @classmethod
    def from_specs(cls, specs: Sequence[LayerSpec], device: torch.device | str | None = None) -> "LayerTable":
        import torch

        def column(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64, device=device)

        return cls(
            in_channels=column([s.in_channels for s in specs]),
            out_channels=column([s.out_channels for s in specs]),
            kh=column([s.kernel_size[0] for s in specs]),
            kw=column([s.kernel_size[1] for s in specs]),
            sh=column([s.stride[0] for s in specs]),
            sw=column([s.stride[1] for s in specs]),
            groups=column([s.groups for s in specs]),
            ho=column([s.output_size[0] for s in specs]),
            wo=column([s.output_size[1] for s in specs]),
        )

    def __len__(self) -> int:
        return int(self.in_channels.shape[0])

    def describe(self, row: int) -> str:
        """Layer ``row`` in the CLI's ``--layer`` syntax (a linear layer reads as a 1x1 conv)."""
        def value(name: str) -> int:
            return int(getattr(self, name)[row])

        return (f"conv2d in_channels={value('in_channels')} out_channels={value('out_channels')} "
                f"kernel_size={value('kh')}x{value('kw')} output_size={value('ho')}x{value('wo')} "
                f"stride={value('sh')}x{value('sw')} groups={value('groups')}")

    def to(self, device: torch.device | str) -> "LayerTable":
        return LayerTable(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
