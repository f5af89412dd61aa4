"""Pareto fronts of (accuracy, cost) points and their hypervolume, also as a search went.

Accuracy is maximised, cost (latency cycles or energy) minimised. The hypervolume is computed by
``moocore`` (a pymoo dependency) on (error, cost) with an explicit reference point, so numbers from
different methods are comparable whenever they share the reference point. Torch-free: the one-shot
search and the comparison report both trace their archives' hypervolume here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import moocore
import numpy as np

from .errors import UsageError

if TYPE_CHECKING:
    from .front_point import FrontPoint


@dataclass(frozen=True)
class ReferencePoint:
    """Worst corner of the hypervolume box: ``accuracy`` (floor) and ``cost`` (ceiling)."""

    accuracy: float
    cost: float

    def describe(self, cost_name: str) -> str:
        return f"accuracy={self.accuracy:g}, {cost_name}={self.cost:g}"


@dataclass(frozen=True)
class Scored:
    """One mapping scored during a search (on the one-shot supernet): ``evaluation`` is how many
    candidates the search had proposed when it was scored, ``seconds`` the search's wall time then;
    ``genome`` is empty where only the scores were recorded."""

    genome: tuple[int, ...]
    val_accuracy: float
    cost: float
    evaluation: int = 0
    seconds: float = field(default=0.0, compare=False)


def pareto_mask(accuracy: Sequence[float], cost: Sequence[float]) -> np.ndarray:
    """Boolean mask of the non-dominated points (max accuracy, min cost); duplicates keep the first."""
    acc = np.asarray(accuracy, dtype=float)
    cst = np.asarray(cost, dtype=float)
    if acc.shape != cst.shape:
        raise UsageError(f"accuracy and cost must have the same length ({acc.size} vs {cst.size})")
    keep = np.ones(acc.size, dtype=bool)
    for i in range(acc.size):
        no_worse = (acc >= acc[i]) & (cst <= cst[i])
        better = (acc > acc[i]) | (cst < cst[i])
        dominated = no_worse & better
        duplicate_before = (acc == acc[i]) & (cst == cst[i]) & (np.arange(acc.size) < i)
        keep[i] = not (dominated.any() or duplicate_before.any())
    return keep


def front_indices(points: Sequence[FrontPoint], metric: str) -> list[int]:
    """Indices of the non-dominated ``points`` (max test accuracy, min cost of ``metric``; of equal
    points the first), by increasing cost."""
    costs = [point.cost(metric) for point in points]
    mask = pareto_mask([point.accuracy for point in points], costs)
    return sorted((i for i in range(len(points)) if mask[i]), key=lambda i: costs[i])


def points_hypervolume(points: Sequence[FrontPoint], metric: str, reference: ReferencePoint) -> float:
    """:func:`hypervolume` of ``points`` on test accuracy and the cost of ``metric``."""
    return hypervolume([point.accuracy for point in points], [point.cost(metric) for point in points], reference)


def hypervolume(accuracy: Sequence[float], cost: Sequence[float], reference: ReferencePoint) -> float:
    """Area dominated by the points inside the box [reference.accuracy, 1] x [0, reference.cost]."""
    acc = np.asarray(accuracy, dtype=float)
    cst = np.asarray(cost, dtype=float)
    inside = (acc > reference.accuracy) & (cst < reference.cost)
    if not inside.any():
        return 0.0
    points = np.stack([-acc[inside], cst[inside]], axis=1)
    return float(moocore.hypervolume(points, ref=np.array([-reference.accuracy, reference.cost])))


def default_reference(costs: Sequence[float], margin: float = 1.1) -> ReferencePoint:
    """Accuracy 0 and ``margin`` times the largest cost seen: a box every point of every method fits."""
    if len(costs) == 0:
        raise UsageError("no points to build a hypervolume reference point from")
    return ReferencePoint(accuracy=0.0, cost=float(np.max(np.asarray(costs, dtype=float))) * margin)


def hypervolume_trace(points: Sequence[Scored], reference: ReferencePoint) -> list[list[float]]:
    """An archive's hypervolume (validation accuracy, cost) as the search went: ``[evaluation,
    seconds, hypervolume]`` at every point that enlarged it, and at the last point (``points`` in the
    order they were scored)."""
    trace: list[list[float]] = []
    front: list[Scored] = []
    volume = 0.0
    for point in points:
        dominated = any(p.val_accuracy >= point.val_accuracy and p.cost <= point.cost for p in front)
        if not dominated:
            front = [p for p in front if not (point.val_accuracy >= p.val_accuracy and point.cost <= p.cost)]
            front.append(point)
            enlarged = hypervolume([p.val_accuracy for p in front], [p.cost for p in front], reference)
            if enlarged > volume or not trace:
                volume = enlarged
                trace.append([point.evaluation, point.seconds, volume])
    if points and (not trace or trace[-1][0] != points[-1].evaluation):
        trace.append([points[-1].evaluation, points[-1].seconds, volume])
    return trace
