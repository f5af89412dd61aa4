"""One point of an accuracy-vs-cost front: the record every report reads.

A :class:`FrontPoint` is one mapped, trained network: which method found it, its accuracies and
costs, the parameters and mapping behind it and what it took to train. Study reports, ``odimo
compare`` and the plots read points as this one type; a strategy's
:class:`~odimo_moo.strategy.Outcome` is a FrontPoint with the record of its training added. Its
JSON form (:meth:`FrontPoint.to_dict`) is what ``result.json``, ``results.json`` and
``baselines.json`` hold; :meth:`FrontPoint.from_dict` reads those files of every version.
Torch-free and cheap to import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from .errors import UsageError


@dataclass(frozen=True)
class CostMetric:
    """A cost a point is measured in: ``attribute``, the :class:`FrontPoint` field that holds it (its
    unit in its name), ``label`` for axes and table headers, ``cell`` the format spec of a table's value."""

    attribute: str
    label: str
    cell: str


#: The cost metrics, declared once: every list of metric names is derived from this one.
COST_METRICS = {"latency": CostMetric("latency_cycles", "latency [cycles]", ",.0f"),
                "energy": CostMetric("energy_uj", "energy [uJ]", ".4g")}
#: Per cost metric, the :class:`FrontPoint` field that holds it.
COST_FIELDS = {name: metric.attribute for name, metric in COST_METRICS.items()}

#: The fields a JSON record must have to be read as a point (older files lack ``val_accuracy``).
REQUIRED_FIELDS = ("strategy", "accuracy", *COST_FIELDS.values())

Point = TypeVar("Point", bound="FrontPoint")


@dataclass(frozen=True)
class FrontPoint:
    """One mapped, trained network on an accuracy-vs-cost front.

    ``strategy`` is the method that produced it and ``label`` its name among that method's points
    (e.g. a heuristic's mapping); ``seed`` is the setup's seed (``None`` in files written before seeds
    were recorded). ``accuracy`` is test accuracy, ``val_accuracy`` validation accuracy; one cost per
    metric (:data:`COST_FIELDS`). ``channel_split`` is the mapping (per layer, channels per unit) and
    ``artifacts`` the files written for it (``mapping``: ``mapping.json``). Its compute is what the
    point cost after the shared warmup: ``train_epochs`` epochs of training, its share of a one-shot
    search (``oneshot_evaluations`` mappings scored, ``oneshot_images`` images forwarded),
    ``wall_time_s`` and ``cpu_time_s`` seconds.
    """

    strategy: str
    accuracy: float
    val_accuracy: float
    latency_cycles: float
    energy_uj: float
    channel_split: dict[str, dict[str, int]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    label: str = ""
    train_epochs: int = 0
    oneshot_evaluations: float = 0.0
    oneshot_images: float = 0.0
    cpu_time_s: float = 0.0
    seed: int | None = None

    @property
    def name(self) -> str:
        """How reports name the point: its label, else its strategy."""
        return self.label or self.strategy

    def cost(self, metric: str) -> float:
        """The point's cost of ``metric`` (latency in cycles or energy in microjoules)."""
        if metric not in COST_FIELDS:
            raise UsageError(f"unknown metric {metric!r}; choose one of {', '.join(COST_FIELDS)}")
        return float(getattr(self, COST_FIELDS[metric]))

    def brief(self, metric: str) -> dict[str, Any]:
        """The point as a report lists it: label, test accuracy and the cost of ``metric``."""
        return {"label": self.label, "accuracy": self.accuracy, COST_FIELDS[metric]: self.cost(metric)}

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of the point (every field)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[Point], data: Mapping[str, Any]) -> Point:
        """The point of a JSON record: its fields are read, other keys ignored, and a missing
        ``val_accuracy`` is the test accuracy (files of older versions); ``TypeError`` when one of
        :data:`REQUIRED_FIELDS` is missing."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {key: value for key, value in data.items() if key in names}
        if "accuracy" in known:
            known.setdefault("val_accuracy", known["accuracy"])
        return cls(**known)
