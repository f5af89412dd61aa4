"""A non-local move after ODiMO's gradient search: each searched layer tried entirely on each unit.

The search's cost gradient is the exact difference between neighbouring splits
(:mod:`odimo_moo.discrete_cost`), so it cannot see past a layer whose cost is not convex in its split.
On DIANA, ResNet-20's first layer costs 0.399 uJ all-digital, 0.539 uJ all-analog and 0.66-0.75 uJ
at every split in between (the analog array's time does not depend on how many channels it holds):
an energy search that ends with it all-analog never sees the cheaper all-digital end.

:func:`polish_mapping` takes the search's hard mapping and, greedily, in one pass over the searched
layers in network order, tries each layer entirely on each of its units, the other layers as they
stand. A move is kept only if it lowers the search's own objective, task loss +
``lambda * ln(cost / reference)`` (:attr:`odimo_moo.searchable.ODiMO.cost`), the loss measured on
fixed training batches with BatchNorm re-estimated under the candidate mapping (as one-shot scoring
does, :mod:`odimo_moo.oneshot`). Only candidates that lower the cost are scored: the polish makes the
cost moves the gradient cannot see, and a costlier mapping could only win on a loss measured with
weights never trained under it. Every layer's cost depends on its own split alone, so a second pass
would only re-score candidates whose loss moved with other layers' moves.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .batchnorm import preserved_batchnorm, recalibrate_batchnorm
from .searchable import ODiMO
from .split_layer import SplitLayer

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Score:
    """Task loss, network cost (the model's metric) and the search's objective of one mapping."""

    loss: float
    cost: float
    objective: float


@dataclass(frozen=True)
class Candidate:
    """One layer tried entirely on one unit: its network cost and, if that cost was lower, its score."""

    layer: str
    unit: str
    cost: float
    score: Score | None
    taken: bool


@dataclass(frozen=True)
class Move:
    """A kept move: the layer's split before (channels per unit name), its new unit, both scores."""

    layer: str
    before: dict[str, int]
    unit: str
    objective_before: float
    objective_after: float
    cost_before: float
    cost_after: float
    loss_before: float
    loss_after: float


@dataclass
class PolishReport:
    """What :func:`polish_mapping` did: the objective's lambda, the cost metric and reference, the images
    each loss evaluation uses, the start and end, every candidate and the moves kept."""

    lambda_: float
    metric: str
    reference_cost: float
    images: int
    start_cost: float
    end_cost: float
    start: Score | None = None
    end: Score | None = None
    loss_evaluations: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``lambda`` for ``lambda_``, as records spell it)."""
        data = asdict(self)
        data["lambda"] = data.pop("lambda_")
        return data


def fixed_batches(dataset: Dataset, count: int, batch_size: int, seed: int) -> list[Batch]:
    """``count`` batches of ``batch_size`` labelled examples (fewer if ``dataset`` is smaller), drawn
    once, for every candidate mapping, in an order fixed by ``seed``; a training split's random
    augmentation draws from ``seed`` too, and the global random streams are left as they were."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        return [(inputs, targets) for inputs, targets in itertools.islice(loader, count)]


@torch.no_grad()
def task_loss(model: ODiMO, batches: Sequence[Batch], device: torch.device) -> float:
    """Mean cross-entropy over ``batches`` under the model's current mapping, with BatchNorm statistics
    re-estimated on the batches' inputs and put back afterwards. Leaves the model in eval mode."""
    model.eval()
    with preserved_batchnorm(model):
        recalibrate_batchnorm(model, [inputs for inputs, _ in batches], device)
        total, count = 0.0, 0
        for inputs, targets in batches:
            logits = model(inputs.to(device))
            total += float(F.cross_entropy(logits, targets.to(device), reduction="sum"))
            count += int(targets.numel())
    return total / count


@torch.no_grad()
def network_cost(model: ODiMO) -> float:
    """The whole network's cost of the model's metric under its current mapping (cycles or uJ)."""
    return float(model.cost_of())


@dataclass
class _Polisher:
    """The state of one pass: the current mapping's cost, and its loss once one was needed."""

    model: ODiMO
    batches: Sequence[Batch]
    device: torch.device
    report: PolishReport
    current: Score | None = None

    def score(self, cost: float) -> Score:
        """The current mapping's score at network cost ``cost`` (one loss evaluation)."""
        self.report.loss_evaluations += 1
        loss = task_loss(self.model, self.batches, self.device)
        return Score(loss, cost, loss + self.report.lambda_ * math.log(cost / self.report.reference_cost))

    def try_layer(self, name: str, layer: SplitLayer) -> None:
        """Try ``layer`` entirely on each of its other units; keep the best candidate that lowers the
        objective, else put the layer's mapping back."""
        names = [self.model.soc.units[u].name for u in layer.unit_indices.tolist()]
        kept = layer.fixed_units.clone()
        before = {unit: int((kept == k).sum()) for k, unit in enumerate(names)}
        cost = network_cost(self.model)
        tried: list[tuple[int, float, Score | None]] = []
        for local in range(layer.num_units):
            if bool((kept == local).all()):
                continue
            layer.fix(torch.full_like(kept, local))
            candidate_cost = network_cost(self.model)
            # only a cheaper candidate is scored (never one of infinite or NaN cost)
            tried.append((local, candidate_cost, self.score(candidate_cost) if candidate_cost < cost else None))
            layer.fix(kept)
        scored = [(score, local) for local, _, score in tried if score is not None]
        move = self.improvement(min(scored, key=lambda pair: pair[0].objective, default=None), cost)
        self.report.candidates += [Candidate(name, names[local], candidate_cost, score,
                                             move is not None and local == move[2])
                                   for local, candidate_cost, score in tried]
        if move is None:
            return
        start, score, local = move
        layer.fix(torch.full_like(kept, local))
        self.report.moves.append(Move(name, before, names[local], start.objective, score.objective,
                                      start.cost, score.cost, start.loss, score.loss))
        self.current = score

    def improvement(self, best: tuple[Score, int] | None, cost: float) -> tuple[Score, Score, int] | None:
        """(current score, candidate score, candidate unit) when the best scored candidate lowers the
        objective; the current mapping (of network cost ``cost``) is scored the first time it is needed."""
        if best is None:
            return None
        if self.current is None:
            self.current = self.report.start = self.score(cost)
        return (self.current, *best) if best[0].objective < self.current.objective else None


def polish_mapping(model: ODiMO, batches: Sequence[Batch], lambda_: float,
                   device: torch.device | str = "cpu") -> PolishReport:
    """Freeze ``model``'s mapping at its hard assignment, then move whole layers onto one unit where
    that lowers ``task loss + lambda_ * ln(cost / model.reference_cost())`` on ``batches`` (see the
    module's description). The model keeps the polished mapping, frozen, its weights and BatchNorm
    statistics unchanged and its training mode as it was; returns what was tried and moved."""
    device = torch.device(device)
    model.freeze_mapping()
    start_cost = network_cost(model)
    report = PolishReport(lambda_, model.metric, model.reference_cost(), sum(int(t.numel()) for _, t in batches),
                          start_cost, start_cost)
    polisher = _Polisher(model, batches, device, report)
    was_training = model.training
    try:
        for name, layer in model.split_layers():
            polisher.try_layer(name, layer)
    finally:
        model.train(was_training)
    report.end = polisher.current
    report.end_cost = network_cost(model)
    return report
