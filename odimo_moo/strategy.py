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
    """One mapped, trained network: a point for the accuracy-vs-cost front.

    Its compute is what the point cost after the shared lambda-free warmup (reported apart, once per
    setup): ``train_epochs`` epochs of training, its share of the one-shot mapping search
    (``oneshot_evaluations`` mappings scored and ``oneshot_images`` images forwarded, BatchNorm
    recalibration included), and ``wall_time_s`` / ``cpu_time_s`` (``time.process_time``) seconds of
    those epochs and that search (per phase: ``phase_wall_s``, ``phase_cpu_s``). The search's share is an equal split among the points it
    fine-tuned, so a method's outcomes add up to its total. ``selected_epoch`` is the fine-tune epoch
    whose weights (the best validation accuracy) were tested (0: none, no fine-tune epoch);
    ``seed`` is the setup's seed (``None`` in files written before seeds were recorded).
    Every field after ``channel_split`` has a default, so result files of older versions still load.
    """

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
    train_epochs: int = 0
    oneshot_evaluations: float = 0.0
    oneshot_images: float = 0.0
    cpu_time_s: float = 0.0
    phase_wall_s: dict[str, float] = field(default_factory=dict)
    selected_epoch: int = 0
    seed: int | None = None
    phase_cpu_s: dict[str, float] = field(default_factory=dict)

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
