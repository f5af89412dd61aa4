"""One study trial: run the study's strategy at one point of the search space and turn its outcome
into objective values and the user attributes every report reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..commands.common import apply_threads
from ..errors import RunFailure
from ..registry import PluginRegistry, pick
from ..strategy import Outcome, Strategy
from ..workbench import Workbench
from .schema import StudyConfig


@dataclass(frozen=True)
class TrialRecord:
    """Objective values (validation accuracy, then each study metric) and the attributes to store."""

    values: list[float]
    attrs: dict[str, Any]


def objective_values(outcome: Outcome, metrics: tuple[str, ...]) -> list[float]:
    """What the outer loop optimises: validation accuracy (the sampler never sees the test split)
    and the cost of every study metric."""
    return [outcome.val_accuracy] + [outcome.cost(m) for m in metrics]


def outcome_attrs(outcome: Outcome, params: Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """The user attributes of a finished trial (all JSON values): the outcome's fields (``accuracy``
    is test accuracy, also stored as ``test_accuracy`` so that it reads as such next to the
    ``val_accuracy`` objective), the trial's own ``params`` and its ``work_dir``."""
    return {**outcome.to_dict(), "test_accuracy": outcome.accuracy, "params": dict(params), "work_dir": workdir}


class TrialRunner:
    """Owns the study's :class:`Workbench` (one warmup cache, ``<out>/warmup-cache``, for all trials)
    and sets the process's PyTorch CPU threads to the study's ``threads``."""

    def __init__(self, config: StudyConfig, progress: bool = True) -> None:
        self.config = config
        if config.threads is not None:
            apply_threads(config.threads)
        self.registry = PluginRegistry.load(config.plugins)
        self.bench = Workbench(config.setup(progress), registry=self.registry,
                               on_epoch_end=self._phase_end, cache_dir=config.out / "warmup-cache",
                               keep_checkpoints=False)
        self.strategy: Strategy = pick(self.registry.strategies(), config.strategy, "strategy")

    def _phase_end(self, phase: str, epoch: int, metrics: dict[str, Any]) -> None:
        self.registry.notify("odimo_phase_end", phase=phase, epoch=epoch, metrics=metrics)

    def workdir(self, work: int) -> Path:
        """The work folder of the slot whose first trial is number ``work``."""
        return self.config.out / "trials" / str(work)

    def run(self, params: Mapping[str, Any], work: int) -> TrialRecord:
        """Train at ``params`` (over the study's fixed training parameters) in ``trials/<work>/``."""
        workdir = self.workdir(work)
        outcomes = self.strategy.run(self.bench, {**self.config.training, **params}, workdir)
        if not outcomes:
            raise RunFailure(f"strategy {self.config.strategy!r} returned no outcome for {dict(params)}")
        outcome = outcomes[0]
        attrs = outcome_attrs(outcome, params, str(workdir))
        if len(outcomes) > 1:
            attrs["other_outcomes"] = [o.to_dict() for o in outcomes[1:]]
        return TrialRecord(objective_values(outcome, self.config.metrics), attrs)

    def notify(self, study_name: str, trial_number: int, result: Mapping[str, Any]) -> None:
        """Call the ``odimo_trial_end`` observer hook of every plugin."""
        self.registry.notify("odimo_trial_end", study_name=study_name, trial_number=trial_number,
                             result=dict(result))
