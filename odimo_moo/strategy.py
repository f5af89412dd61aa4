"""Search strategies: the interface every strategy plugin implements, and what a run returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .workbench import Workbench

#: The :class:`Outcome` field that holds each cost metric.
COST_FIELDS = {"latency": "latency_cycles", "energy": "energy_uj"}


@dataclass
class Outcome:
    """One mapped, trained network: a point for the accuracy-vs-cost front."""

    strategy: str
    accuracy: float
    val_accuracy: float
    latency_cycles: float
    energy_uj: float
    channel_split: dict[str, dict[str, int]]
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    trainings: int = 1
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Outcome":
        return cls(**dict(data))


class Strategy(ABC):
    """A way of choosing per-layer channel splits (gradient search, evolution, heuristics...)."""

    name: str = ""
    description: str = ""

    def defaults(self) -> dict[str, Any]:
        """Default hyperparameters; a study's search space and ``--set`` override them."""
        return {}

    @abstractmethod
    def run(self, bench: "Workbench", params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        """Map, train and evaluate; write artifacts under ``workdir``; return one or more outcomes."""
