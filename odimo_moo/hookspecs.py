"""The pluggy hooks odimo-moo calls. Plugins implement them with ``@odimo_moo.hookimpl``.

Built-in SoCs and strategies are ordinary plugins registered through the ``odimo_moo``
entry-point group, exactly like third-party ones.

Each registration hook returns a list of named objects of one kind; what such an object must offer
is its contract below (:class:`SocContract`, ...), checked by the registry for every object a plugin
returns. The registry reads these contracts and never imports the kinds themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import pluggy

PROJECT = "odimo_moo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@runtime_checkable
class SocContract(Protocol):
    """What ``odimo_register_socs`` returns: an :class:`odimo_moo.soc.SoC`."""

    name: str
    units: Sequence[Any]
    frequency_hz: float
    default_unit: str

    def supporting_units(self, spec: Any) -> tuple[int, ...]: ...

    def unit_cycles(self, layers: Any, counts: Any) -> Any: ...

    def layer_costs(self, unit_cycles: Any) -> dict[str, Any]: ...


@runtime_checkable
class StrategyContract(Protocol):
    """What ``odimo_register_strategies`` returns: an :class:`odimo_moo.strategy.Strategy`."""

    name: str

    def defaults(self) -> dict[str, Any]: ...

    def run(self, bench: Any, params: Mapping[str, Any], workdir: Any) -> list: ...


@runtime_checkable
class ModelContract(Protocol):
    """What ``odimo_register_models`` returns: an :class:`odimo_moo.models.ModelEntry`."""

    name: str
    build: Callable[..., Any]
    description: str


@runtime_checkable
class HeuristicContract(Protocol):
    """What ``odimo_register_heuristics`` returns: an :class:`odimo_moo.manual_mapping.ManualMapping`."""

    name: str
    soc: str
    description: str
    rule: Callable[..., Any]


@dataclass(frozen=True)
class Registration:
    """A registration hook: its name, the contract of what it returns, and how errors name that
    (``kind``: the class, ``what``: one object)."""

    hook: str
    contract: type
    kind: str
    what: str


SOCS = Registration("odimo_register_socs", SocContract, "SoC", "SoC")
STRATEGIES = Registration("odimo_register_strategies", StrategyContract, "Strategy", "strategy")
MODELS = Registration("odimo_register_models", ModelContract, "ModelEntry", "model")
HEURISTICS = Registration("odimo_register_heuristics", HeuristicContract, "ManualMapping", "heuristic mapping")


@hookspec
def odimo_register_socs() -> list:
    """Return a list of :class:`odimo_moo.soc.SoC` objects this plugin provides."""


@hookspec
def odimo_register_strategies() -> list:
    """Return a list of :class:`odimo_moo.strategy.Strategy` objects this plugin provides."""


@hookspec
def odimo_register_models() -> list:
    """Return a list of :class:`odimo_moo.models.ModelEntry` (name + builder) this plugin provides."""


@hookspec
def odimo_phase_end(phase: str, epoch: int, metrics: Mapping[str, Any]) -> None:
    """Observer: called after each training epoch of a phase (warmup, search, finetune)."""


@hookspec
def odimo_trial_end(study_name: str, trial_number: int, result: Mapping[str, Any]) -> None:
    """Observer: called when a study trial finishes, with its recorded result."""


@hookspec
def odimo_register_heuristics() -> list:
    """Return a list of :class:`odimo_moo.manual_mapping.ManualMapping`: hand-written mappings tied to a
    SoC by name (e.g. the heuristic baselines of its paper), run by the ``heuristic`` strategy."""
