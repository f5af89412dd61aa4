"""System-on-chip model: compute units, their cost formulas, data formats and alternatives.

A :class:`ComputeUnit` says which layers it can run, what op it runs for a searched layer (its
:class:`~odimo_moo.alternative_factories.AlternativeFactory`), its data format, its power, and a
differentiable latency model ``cycles(layers, n)`` over a :class:`LayerTable`. A :class:`SoC`
groups units with a clock and an energy model; the default energy model is active + idle power.
Defining a SoC does not import torch (``odimo plugins`` lists SoCs without it); costing one does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from .alternative_factories import AlternativeFactory, SameOp
from .cost_primitives import active_idle_energy
from .data_formats import FLOAT, DataFormat
from .errors import UsageError
from .layer_spec import LayerSpec, LayerTable

if TYPE_CHECKING:
    import torch

CycleFormula = Callable[[LayerTable, "torch.Tensor"], "torch.Tensor"]
SupportTest = Callable[[LayerSpec], bool]


class ComputeUnit(ABC):
    """One compute unit of a SoC."""

    name: str
    active_power_mw: float
    idle_power_mw: float
    data_format: DataFormat

    @abstractmethod
    def supports(self, spec: LayerSpec) -> bool:
        """Whether this unit can produce output channels of ``spec`` (as itself or via its alternative)."""

    @abstractmethod
    def raw_cycles(self, layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
        """Cycles to produce ``n`` output channels of each layer (``n`` has shape ``[L]``)."""

    def alternative(self, spec: LayerSpec) -> AlternativeFactory:
        """The op this unit runs for a searched layer; default: the same op in its data format."""
        return SameOp()

    def cycles(self, layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
        """Gated latency: exactly 0 when ``n == 0``, whatever the formula gives there (constant terms,
        or a division that is infinite at 0)."""
        import torch

        raw = self.raw_cycles(layers, n)
        return torch.where(n > 0, raw, torch.zeros_like(raw))


@dataclass(eq=False)
class FormulaUnit(ComputeUnit):
    """A compute unit defined by plain callables (what most plugins need)."""

    name: str
    formula: CycleFormula
    support: SupportTest
    active_power_mw: float
    idle_power_mw: float = 0.0
    data_format: DataFormat = FLOAT
    alternative_for: Callable[[LayerSpec], AlternativeFactory] | None = None

    def supports(self, spec: LayerSpec) -> bool:
        return bool(self.support(spec))

    def raw_cycles(self, layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
        return self.formula(layers, n)

    def alternative(self, spec: LayerSpec) -> AlternativeFactory:
        if self.alternative_for is None:
            return SameOp()
        return self.alternative_for(spec)


class SoC:
    """A heterogeneous SoC: ordered compute units, a clock and an energy model.

    ``default_unit`` runs the layers that are not searched (when it supports them; otherwise the
    first unit that does).
    """

    def __init__(self, name: str, units: Sequence[ComputeUnit], frequency_hz: float,
                 default_unit: str | None = None, description: str = "") -> None:
        if len(units) < 1:
            raise UsageError(f"SoC {name!r} has no compute units")
        names = [u.name for u in units]
        if len(set(names)) != len(names):
            raise UsageError(f"SoC {name!r} has duplicate unit names: {names}")
        if frequency_hz <= 0:
            raise UsageError(f"SoC {name!r}: frequency must be positive, got {frequency_hz}")
        self.name = name
        self.units = tuple(units)
        self.frequency_hz = float(frequency_hz)
        self.default_unit = default_unit or names[0]
        if self.default_unit not in names:
            raise UsageError(f"SoC {name!r}: default unit {self.default_unit!r} is not one of {names}")
        self.description = description

    @property
    def unit_names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.units)

    def unit(self, name: str) -> ComputeUnit:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise UsageError(f"SoC {self.name!r} has no unit {name!r}; its units are {', '.join(self.unit_names)}")

    def unit_index(self, name: str) -> int:
        return self.unit_names.index(self.unit(name).name)

    def supporting_units(self, spec: LayerSpec) -> tuple[int, ...]:
        """Indices of the units that can run (part of) ``spec``."""
        return tuple(i for i, u in enumerate(self.units) if u.supports(spec))

    def fixed_unit(self, spec: LayerSpec) -> int:
        """Index of the unit that runs a layer that is not searched."""
        default = self.unit_names.index(self.default_unit)
        if self.units[default].supports(spec):
            return default
        supporting = self.supporting_units(spec)
        if not supporting:
            raise UsageError(f"SoC {self.name!r}: no unit can run layer '{spec.describe()}'")
        return supporting[0]

    def unit_cycles(self, layers: LayerTable, counts: torch.Tensor) -> torch.Tensor:
        """Per-unit cycles ``[K, L]`` for channel counts ``counts[k, l]``."""
        import torch

        return torch.stack([unit.cycles(layers, counts[k]) for k, unit in enumerate(self.units)])

    def check_cycles(self, layers: LayerTable, counts: torch.Tensor, cycles: torch.Tensor,
                     used: torch.Tensor) -> None:
        """Refuse cycle counts that are not finite and >= 0 where ``used`` (``[K, N]``, like
        ``cycles`` and ``counts``; column ``j`` is layer ``layers[j]``): a formula's error names the SoC,
        the unit, the layer, the channel count and the value, instead of becoming a result."""
        import torch

        bad = used & ~(torch.isfinite(cycles) & (cycles >= 0))
        if not bool(bad.any()):
            return
        unit, column = (int(i) for i in torch.nonzero(bad)[0])
        raise UsageError(f"SoC {self.name!r}: unit {self.units[unit].name!r} gives {float(cycles[unit, column]):g} "
                         f"cycles for {int(counts[unit, column])} output channels of '{layers.describe(column)}'; "
                         f"a cycle formula must give a finite number >= 0 for every layer the unit supports")

    def energy(self, unit_cycles: torch.Tensor, latency: torch.Tensor) -> torch.Tensor:
        """Energy in mW x cycles of layers whose units ran ``unit_cycles`` and that took ``latency``.

        Default: each unit draws its active power while it runs and its idle power until the layer ends.
        SoCs whose power is not additive per unit (DIANA) override this.
        """
        import torch

        active = torch.tensor([u.active_power_mw for u in self.units], dtype=unit_cycles.dtype,
                              device=unit_cycles.device)
        idle = torch.tensor([u.idle_power_mw for u in self.units], dtype=unit_cycles.dtype,
                            device=unit_cycles.device)
        return active_idle_energy(unit_cycles, latency, active, idle)

    def layer_costs(self, unit_cycles: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latency (cycles: the slowest unit, units running in parallel) and energy (microjoules) of
        layers whose units ran ``unit_cycles`` (``[K, ...]``)."""
        latency = unit_cycles.max(dim=0).values
        return {"latency": latency, "energy": self.to_microjoules(self.energy(unit_cycles, latency))}

    def to_microjoules(self, mw_cycles: torch.Tensor) -> torch.Tensor:
        """Convert mW x cycles to microjoules at this SoC's clock."""
        return mw_cycles / self.frequency_hz * 1e3

    def __repr__(self) -> str:
        return f"SoC({self.name!r}, units={list(self.unit_names)}, frequency_hz={self.frequency_hz:g})"
