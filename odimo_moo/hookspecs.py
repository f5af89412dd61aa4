"""The pluggy hooks odimo-moo calls. Plugins implement them with ``@odimo_moo.hookimpl``.

Built-in SoCs and strategies are ordinary plugins registered through the ``odimo_moo``
entry-point group, exactly like third-party ones.
"""

from __future__ import annotations

from typing import Any, Mapping

import pluggy

PROJECT = "odimo_moo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


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
