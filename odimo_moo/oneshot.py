"""One-shot mapping search on the warmed-up supernet, shared by the evolutionary and random strategies.

A candidate mapping (a genome, see :mod:`odimo_moo.mapping_search`) is scored without training: it
is forced onto the supernet after the shared lambda-free warmup, whose random-split training makes
it a one-shot accuracy proxy for any mapping (DESIGN 2.3), and scored by its validation accuracy and
the network cost of the setup's metric. :class:`OneShotSearch` does this under a budget (candidates
and wall time) and keeps every scored mapping; :func:`finetune_front` fine-tunes points spread along
the archive's Pareto front with the same recipe as every other strategy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .checkpoint import atomic_write_json
from .errors import UsageError
from .mapping_search import GenomeLayout, genome_to_counts
from .pareto import pareto_mask
from .recipe import Recipe
from .searchable import ODiMO
from .strategy import COST_FIELDS, Outcome
from .workbench import Workbench

#: Recipe fields only the gradient search reads; strategies that never search with lambda leave them out.
LAMBDA_SEARCH_FIELDS = ("search_epochs", "nas_lr", "cost_weight", "lambda_ramp", "temperature", "temperature_decay",
                        "gumbel")


def finetune_recipe_defaults() -> dict[str, Any]:
    """The recipe fields of a strategy that fine-tunes fixed mappings from the shared warmup."""
    return {k: v for k, v in Recipe().as_dict().items() if k not in LAMBDA_SEARCH_FIELDS}


#: Search settings shared by the one-shot strategies (everything else of their params is the recipe).
SEARCH_DEFAULTS: dict[str, Any] = {"evaluations": 200, "max_seconds": 0.0, "finetune_top": 3}


@dataclass(frozen=True)
class SearchBudget:
    """How much one-shot search a strategy may do: candidates scored and wall time (0: no time limit),
    and how many front points it fine-tunes afterwards."""

    evaluations: int
    max_seconds: float
    finetune_top: int

    @classmethod
    def pop_from(cls, values: dict[str, Any]) -> "SearchBudget":
        """Take the search settings out of a strategy's params (the rest is the training recipe)."""
        try:
            budget = cls(int(values.pop("evaluations")), float(values.pop("max_seconds")),
                         int(values.pop("finetune_top")))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"search settings must be numbers: {exc}") from exc
        if budget.evaluations < 1:
            raise UsageError(f"evaluations must be >= 1, got {budget.evaluations}")
        if budget.max_seconds < 0 or not math.isfinite(budget.max_seconds):
            raise UsageError(f"max_seconds must be >= 0 (0: no limit), got {budget.max_seconds}")
        if budget.finetune_top < 1:
            raise UsageError(f"finetune_top must be >= 1, got {budget.finetune_top}")
        return budget


@dataclass(frozen=True)
class Scored:
    """One mapping scored on the one-shot supernet."""

    genome: tuple[int, ...]
    val_accuracy: float
    cost: float


@dataclass
class OneShotSearch:
    """Scores genomes on the warmed-up ``model`` until the budget is spent, keeping an archive.

    ``proposed`` counts every candidate a search asked to score (the budget); a genome seen before is
    answered from the archive without another forward pass, so ``len(archive)`` counts the distinct
    mappings actually evaluated.
    """

    bench: Workbench
    model: ODiMO
    budget: SearchBudget
    started: float = field(default_factory=time.time)
    proposed: int = 0
    archive: list[Scored] = field(default_factory=list)
    _seen: dict[tuple[int, ...], Scored] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.layout = GenomeLayout.from_model(self.model)
        self.cost_field = COST_FIELDS[self.model.metric]

    @property
    def elapsed(self) -> float:
        return time.time() - self.started

    @property
    def exhausted(self) -> bool:
        """Whether the candidate budget is spent, or the time budget (after at least one candidate)."""
        out_of_time = self.budget.max_seconds > 0 and self.elapsed >= self.budget.max_seconds and self.proposed > 0
        return self.proposed >= self.budget.evaluations or out_of_time

    def score(self, genomes: torch.Tensor | np.ndarray) -> list[Scored]:
        """Score valid genomes ``[N, layout.size]`` in order until the budget runs out; returns the
        scores of the first ``len(result) <= N`` of them."""
        results = []
        for row in np.asarray(genomes, dtype=np.int64):
            if self.exhausted:
                break
            self.proposed += 1
            key = tuple(int(g) for g in row)
            if key not in self._seen:
                self.model.force_counts(genome_to_counts(self.model, row))
                accuracy = self.bench.evaluate(self.model, "val")
                self._seen[key] = Scored(key, accuracy, float(self.model.cost_report()[self.cost_field]))
                self.archive.append(self._seen[key])
            results.append(self._seen[key])
        return results

    def front(self) -> list[Scored]:
        """The archive's non-dominated mappings (max one-shot accuracy, min cost), by increasing cost."""
        mask = pareto_mask([s.val_accuracy for s in self.archive], [s.cost for s in self.archive])
        return sorted((s for s, keep in zip(self.archive, mask) if keep), key=lambda s: s.cost)

    def summary(self) -> dict[str, Any]:
        """What ``search.json`` records: budget, counts, time and every scored mapping."""
        front = {s.genome for s in self.front()}
        return {"metric": self.model.metric, "budget": vars(self.budget), "proposed": self.proposed,
                "evaluated": len(self.archive), "wall_time_s": self.elapsed,
                "layers": list(self.layout.names), "units": list(self.layout.unit_names),
                "points": [{"counts": genome_to_counts(self.model, s.genome), "val_accuracy": s.val_accuracy,
                            self.cost_field: s.cost, "front": s.genome in front} for s in self.archive]}


def spread_along_front(points: Sequence[Scored], count: int) -> list[Scored]:
    """At most ``count`` points spread along a front: the most accurate, the cheapest, then repeatedly
    the point farthest (in cost and accuracy normalised to [0, 1]) from those already chosen.
    Returned by increasing cost."""
    if len(points) <= count:
        return sorted(points, key=lambda s: s.cost)
    coords = torch.tensor([[s.cost, s.val_accuracy] for s in points], dtype=torch.float64)
    span = (coords.max(dim=0).values - coords.min(dim=0).values).clamp_min(1e-12)
    coords = (coords - coords.min(dim=0).values) / span
    chosen = [int(coords[:, 1].argmax()), int(coords[:, 0].argmin())]
    chosen = list(dict.fromkeys(chosen))[:count]
    while len(chosen) < count:
        distance = torch.cdist(coords, coords[chosen]).min(dim=1).values
        distance[chosen] = -1.0
        chosen.append(int(distance.argmax()))
    return sorted((points[i] for i in chosen), key=lambda s: s.cost)


def finetune_front(bench: Workbench, recipe: Recipe, search: OneShotSearch, workdir: Path, strategy: str,
                   params: Mapping[str, Any]) -> list[Outcome]:
    """Write ``search.json`` and fine-tune up to ``finetune_top`` front points, each from a fresh copy
    of the warmed-up supernet with the same recipe as every strategy.

    Each outcome's ``wall_time_s`` is its own fine-tune plus an equal share of the search, so the
    outcomes of one run add up to the run's wall time; ``trainings`` is 1 (one fine-tune), and the
    budget and the one-shot work are in ``params`` (``evaluations``, ``max_seconds``, ``finetune_top``,
    ``one_shot_proposed``, ``one_shot_evaluated``, ``search_wall_s``).
    """
    chosen = spread_along_front(search.front(), search.budget.finetune_top)
    search_time = search.elapsed
    atomic_write_json(workdir / "search.json", {**search.summary(), "finetuned": [
        genome_to_counts(search.model, s.genome) for s in chosen]})
    share = search_time / len(chosen)
    record = {**params, **vars(search.budget), "one_shot_proposed": search.proposed,
              "one_shot_evaluated": len(search.archive), "search_wall_s": search_time}
    outcomes = []
    for index, point in enumerate(chosen):
        started = time.time() - share
        model, history = bench.warm_supernet(recipe)
        model.force_counts(genome_to_counts(model, point.genome))
        label = f"front {index + 1}/{len(chosen)} (one-shot val acc {point.val_accuracy:.3f})"
        outcomes.append(bench.finetune_and_report(
            model, recipe, workdir / f"point-{index:02d}", strategy,
            {**record, "one_shot_val_accuracy": point.val_accuracy}, history, label=label, started=started,
            trainings=1))
    return outcomes
