"""Search strategies: the interface every strategy plugin implements, and what a run returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .front_point import COST_FIELDS, FrontPoint

if TYPE_CHECKING:
    from .workbench import Workbench

__all__ = ["COST_FIELDS", "FrontPoint", "Outcome", "Strategy"]


@dataclass(frozen=True)
class Outcome(FrontPoint):
    """What a strategy returns per trained network: its :class:`~odimo_moo.front_point.FrontPoint`
    (accuracies, costs, mapping, compute) and how it was trained.

    ``trainings`` is how many networks were trained for it; ``phase_wall_s`` / ``phase_cpu_s`` split
    its wall and CPU seconds (``time.process_time``) per phase; ``selected_epoch`` is the fine-tune
    epoch whose weights (the best validation accuracy) were tested (0: none, no fine-tune epoch). The
    search's share of the compute is an equal split among the points it fine-tuned, so a method's
    outcomes add up to its total. Every field after ``energy_uj`` has a default, so result files of
    older versions still load (:meth:`~odimo_moo.front_point.FrontPoint.from_dict`).
    """

    trainings: int = 1
    phase_wall_s: dict[str, float] = field(default_factory=dict)
    selected_epoch: int = 0
    phase_cpu_s: dict[str, float] = field(default_factory=dict)


class Strategy(ABC):
    """A way of choosing per-layer channel splits (gradient search, evolution, heuristics...)."""

    name: str = ""
    description: str = ""
    #: Whether the strategy's choices depend on the setup's cost metric. False (fixed mappings chosen
    #: without it): its outcomes are the same for every metric, and ``odimo compare`` keys its finished
    #: units without the metric, so a latency run's units serve an energy run.
    uses_metric: bool = True

    def defaults(self) -> dict[str, Any]:
        """Default hyperparameters; a study's search space and ``--set`` override them."""
        return {}

    @abstractmethod
    def run(self, bench: "Workbench", params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        """Map, train and evaluate; write artifacts under ``workdir``; return one or more outcomes."""
