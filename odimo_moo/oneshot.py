"""One-shot mapping search on the warmed-up supernet, shared by the evolutionary and random strategies.

A candidate mapping (a genome, see :mod:`odimo_moo.genome`) is scored without training: it
is forced onto the supernet after the shared lambda-free warmup, whose random-split training makes
it a one-shot accuracy proxy for any mapping (docs/DESIGN.md 2.3), and scored by its validation accuracy and
the network cost of the setup's metric. BatchNorm's running statistics were averaged over random
splits during the warmup, so they do not fit any one mapping: before scoring, they are re-estimated
under the forced mapping on a few fixed training batches (:func:`recalibrate_batchnorm`) and put
back afterwards, so every mapping is scored from the same supernet.

:class:`OneShotSearch` scores under a budget (candidates and wall time) and keeps every scored
mapping; :func:`finetune_front` trains points spread along the archive's Pareto front with the same
recipe and epochs as every other strategy's points.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from . import phases
from .batchnorm import CALIBRATION_BATCHES, preserved_batchnorm, recalibrate_batchnorm
from .checkpoint import atomic_write_json
from .errors import UsageError
from .genome import GenomeLayout, genome_to_counts
from .pareto import ReferencePoint, Scored, hypervolume_trace, pareto_mask
from .recipe import Recipe
from .searchable import ODiMO
from .strategy import COST_FIELDS, Outcome
from .workbench import Workbench

#: Search settings shared by the one-shot strategies (everything else of their params is the recipe).
SEARCH_DEFAULTS: dict[str, Any] = {"evaluations": 200, "max_seconds": 0.0, "clock": "wall", "finetune_top": 3,
                                   "recalibration_batches": CALIBRATION_BATCHES}
#: What ``max_seconds`` counts: elapsed time, or this process's CPU time (steady on a shared CPU
#: machine, where other processes stretch the wall time; meaningless for GPU work).
CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class SearchBudget:
    """How much one-shot search a strategy may do: candidates scored (0: no limit) and seconds on
    ``clock`` (0: no limit; at least one of the two is set), how many archive points it trains
    afterwards, and how many training batches BatchNorm is recalibrated on before each score (0: none)."""

    evaluations: int
    max_seconds: float
    finetune_top: int
    recalibration_batches: int = SEARCH_DEFAULTS["recalibration_batches"]
    clock: str = SEARCH_DEFAULTS["clock"]

    @classmethod
    def pop_from(cls, values: dict[str, Any]) -> "SearchBudget":
        """Take the search settings out of a strategy's params (the rest is the training recipe)."""
        try:
            budget = cls(int(values.pop("evaluations")), float(values.pop("max_seconds")),
                         int(values.pop("finetune_top")),
                         int(values.pop("recalibration_batches", SEARCH_DEFAULTS["recalibration_batches"])),
                         str(values.pop("clock", SEARCH_DEFAULTS["clock"])))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"search settings must be numbers: {exc}") from exc
        if budget.clock not in CLOCKS:
            raise UsageError(f"clock must be one of {', '.join(CLOCKS)} (what max_seconds counts), got {budget.clock!r}")
        if budget.evaluations < 0:
            raise UsageError(f"evaluations must be >= 0 (0: no limit, with max_seconds), got {budget.evaluations}")
        if budget.max_seconds < 0 or not math.isfinite(budget.max_seconds):
            raise UsageError(f"max_seconds must be >= 0 (0: no limit), got {budget.max_seconds}")
        if budget.evaluations == 0 and budget.max_seconds == 0:
            raise UsageError("evaluations=0 (no limit) needs a time budget: set max_seconds > 0")
        if budget.finetune_top < 1:
            raise UsageError(f"finetune_top must be >= 1, got {budget.finetune_top}")
        if budget.recalibration_batches < 0:
            raise UsageError(f"recalibration_batches must be >= 0 (0: no recalibration), "
                             f"got {budget.recalibration_batches}")
        return budget


# ----------------------------------------------------------------------------- search
@dataclass
class OneShotSearch:
    """Scores genomes on the warmed-up ``model`` until the budget is spent, keeping an archive.

    ``proposed`` counts every candidate a search asked to score (the budget); a genome seen before is
    answered from the archive without another forward pass, so ``len(archive)`` counts the distinct
    mappings actually evaluated and ``images`` the images they forwarded (BatchNorm recalibration on
    ``budget.recalibration_batches`` batches of ``batch_size`` training images, then the validation
    split).
    """

    bench: Workbench
    model: ODiMO
    budget: SearchBudget
    batch_size: int = 64
    started: float = field(default_factory=time.time)
    cpu_started: float = field(default_factory=time.process_time)
    proposed: int = 0
    images: int = 0
    archive: list[Scored] = field(default_factory=list)
    _seen: dict[tuple[int, ...], Scored] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.layout = GenomeLayout.from_model(self.model)
        self.cost_field = COST_FIELDS[self.model.metric]
        self.calibration = self.bench.calibration_batches(self.budget.recalibration_batches, self.batch_size)

    @property
    def elapsed(self) -> float:
        return time.time() - self.started

    @property
    def cpu_elapsed(self) -> float:
        return time.process_time() - self.cpu_started

    @property
    def exhausted(self) -> bool:
        """Whether the candidate budget is spent, or the time budget (after at least one candidate)."""
        spent = self.cpu_elapsed if self.budget.clock == "cpu" else self.elapsed
        out_of_time = self.budget.max_seconds > 0 and spent >= self.budget.max_seconds and self.proposed > 0
        return (self.budget.evaluations > 0 and self.proposed >= self.budget.evaluations) or out_of_time

    def evaluate(self, counts: Mapping[str, Sequence[int]]) -> float:
        """Validation accuracy of the supernet with ``counts`` forced and BatchNorm recalibrated under
        them; the supernet's BatchNorm statistics are as before afterwards."""
        self.model.force_counts(counts)
        with preserved_batchnorm(self.model):
            self.images += recalibrate_batchnorm(self.model, self.calibration, self.bench.device)
            accuracy = self.bench.evaluate(self.model, "val")
        self.images += len(self.bench.data.val)
        return accuracy

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
                accuracy = self.evaluate(genome_to_counts(self.model, row))
                self._seen[key] = Scored(key, accuracy, float(self.model.cost_report()[self.cost_field]),
                                         self.proposed, self.elapsed)
                self.archive.append(self._seen[key])
            results.append(self._seen[key])
        return results

    def front(self) -> list[Scored]:
        """The archive's non-dominated mappings (max one-shot accuracy, min cost), by increasing cost."""
        mask = pareto_mask([s.val_accuracy for s in self.archive], [s.cost for s in self.archive])
        return sorted((s for s, keep in zip(self.archive, mask) if keep), key=lambda s: s.cost)

    def summary(self) -> dict[str, Any]:
        """What ``search.json`` records: budget, counts, time, every scored mapping (with the candidate
        count and seconds when it was scored) and the archive's hypervolume against evaluations
        (reference point: accuracy 0 and 1.1 x the largest cost scored)."""
        front = {s.genome for s in self.front()}
        reference = ReferencePoint(0.0, 1.1 * max((s.cost for s in self.archive), default=0.0))
        return {"metric": self.model.metric, "budget": vars(self.budget), "proposed": self.proposed,
                "evaluated": len(self.archive), "images": self.images, "wall_time_s": self.elapsed,
                "cpu_time_s": self.cpu_elapsed, "layers": list(self.layout.names),
                "units": list(self.layout.unit_names),
                "hypervolume_trace": {"reference": {"accuracy": reference.accuracy, self.cost_field: reference.cost},
                                      "columns": ["evaluations", "seconds", "hypervolume"],
                                      "trace": hypervolume_trace(self.archive, reference)},
                "points": [{"counts": genome_to_counts(self.model, s.genome), "val_accuracy": s.val_accuracy,
                            self.cost_field: s.cost, "evaluation": s.evaluation, "seconds": s.seconds,
                            "front": s.genome in front} for s in self.archive]}


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


def choose_points(archive: Sequence[Scored], count: int) -> list[Scored]:
    """``count`` scored mappings to train (all of them if fewer): spread along the archive's Pareto
    front (:func:`spread_along_front`), then, while the front has fewer, along the front of the rest
    (the next non-dominated rank), and so on. Returned by increasing cost."""
    chosen: list[Scored] = []
    rest = list(archive)
    while rest and len(chosen) < count:
        mask = pareto_mask([s.val_accuracy for s in rest], [s.cost for s in rest])
        front = [s for s, keep in zip(rest, mask) if keep]
        chosen += spread_along_front(front, count - len(chosen))
        rest = [s for s, keep in zip(rest, mask) if not keep]
    return sorted(chosen, key=lambda s: s.cost)


def finetune_front(bench: Workbench, recipe: Recipe, search: OneShotSearch, workdir: Path, strategy: str,
                   params: Mapping[str, Any]) -> list[Outcome]:
    """Write ``search.json`` and train ``finetune_top`` points of the archive (:func:`choose_points`:
    spread along its front, then the next fronts if the front has fewer), each from a fresh copy of
    the warmed-up supernet, for ``search_epochs + finetune_epochs`` epochs with the same recipe as
    every strategy (:func:`odimo_moo.phases.train_mapping`).

    Each outcome carries an equal share of the search (mappings scored, images, wall and CPU
    seconds), so the outcomes of one run add up to the run's totals; the budget and the whole
    search's counts are in ``params`` (``evaluations``, ``max_seconds``, ``finetune_top``,
    ``recalibration_batches``, ``one_shot_proposed``, ``one_shot_evaluated``, ``search_wall_s``).
    """
    chosen = choose_points(search.archive, search.budget.finetune_top)
    atomic_write_json(workdir / "search.json", {
        **search.summary(), "strategy": strategy, "seed": bench.setup.seed,
        "finetuned": [genome_to_counts(search.model, s.genome) for s in chosen]})
    share = {"evaluations": len(search.archive) / len(chosen), "images": search.images / len(chosen),
             "wall_s": search.elapsed / len(chosen), "cpu_s": search.cpu_elapsed / len(chosen)}
    record = {**params, **vars(search.budget), "one_shot_proposed": search.proposed,
              "one_shot_evaluated": len(search.archive), "search_wall_s": search.elapsed}
    outcomes = []
    for index, point in enumerate(chosen):
        model, history = phases.warmup(bench, recipe)
        model.force_counts(genome_to_counts(model, point.genome))
        label = f"point {index + 1}/{len(chosen)} (one-shot val acc {point.val_accuracy:.3f})"
        folder = workdir / f"point-{index:02d}"
        history, selected = phases.train_mapping(bench, model, recipe, folder, history)
        outcomes.append(bench.report(model, folder, strategy, {**record, "one_shot_val_accuracy": point.val_accuracy},
                                     history, label, share, selected))
    return outcomes
